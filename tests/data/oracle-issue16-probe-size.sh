#!/bin/bash
D=/root/oracle-relay
cd $D
QUEUE_INTERVAL= bash run-oracle.sh >/dev/null 2>&1 || { echo start failed; exit 1; }
T="python3 $D/smtp-transcript.py"
for m in '<probe@client.example.test> SIZE=-1' '<probe@client.example.test> SIZE=99999999999999999999999'; do
  for src in 127.0.0.9 127.0.0.1; do
    echo "--- MAIL FROM:$m  (from $src)"
    $T -s $src 127.0.0.1 2526 "EHLO client.example.test" "MAIL FROM:$m" QUIT | grep -A1 '^C: MAIL'
  done
done
bash stop-oracle.sh >/dev/null 2>&1

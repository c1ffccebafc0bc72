set -x
cd /root/oracle-defaults
QUEUE_INTERVAL= bash run-oracle.sh >run-start.log 2>&1 || { cat run-start.log; exit 1; }
T="python3 smtp-transcript.py"
$T 127.0.0.1 2526 'MAIL FROM:<a@client.example.test>' 'HELO client.example.test' 'EXPN root' 'VRFY root' 'ETRN client.example.test' 'EHLO client.example.test' QUIT
$T 127.0.0.1 2526 'EHLO client.example.test' 'AUTH PLAIN AGJvZ3VzAHdyb25n' 'AUTH PLAIN AGJvZ3VzAHdyb25n' 'AUTH LOGIN' 'Ym9ndXM=' 'd3Jvbmc=' QUIT
H120=$(python3 -c "print(open('hops120.txt').read().replace(chr(10),'\\\\n'))")
$T 127.0.0.1 2526 'EHLO client.example.test' 'MAIL FROM:<a@client.example.test>' 'RCPT TO:<alice@oracle.example.test>' "DATA:$H120" QUIT
H25=$(python3 -c "print(open('hops25.txt').read().replace(chr(10),'\\\\n'))")
$T 127.0.0.1 2526 'EHLO client.example.test' 'MAIL FROM:<a@client.example.test>' 'RCPT TO:<alice@oracle.example.test>' "DATA:$H25" QUIT
H26=$(python3 -c "print(open('hops26.txt').read().replace(chr(10),'\\\\n'))")
$T 127.0.0.1 2526 'EHLO client.example.test' 'MAIL FROM:<a@client.example.test>' 'RCPT TO:<alice@oracle.example.test>' "DATA:$H26" QUIT
sleep 3
source oracle-env.sh
# restrictqrun as nobody
chmod 755 /root /root/oracle-defaults /root/oracle-defaults/run || true
su nobody -s /bin/sh -c "cd /; $SM -C $CF -q -v" ; echo "rc=$?"
su nobody -s /bin/sh -c "cd /; $SM -C $CF -q -O PrivacyOptions=public -v" ; echo "rc=$?"
# command-line -f by untrusted user
echo "Subject: f test" | su nobody -s /bin/sh -c "$SM -C $CF -f forged@client.example.test alice"; echo "rc=$?"
sleep 3
bash stop-oracle.sh
echo ==== maillog; cat run/maillog
echo ==== mailboxes; for f in run/mail/*; do echo "== $f"; cat $f; done

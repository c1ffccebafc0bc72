#!/bin/bash
# Local delivery with and without the root agent (RunAsUser): N messages are queued first
# (DeliveryMode=queueonly), then one daemon started with -q1s delivers them all to a file
# alias; prints the seconds from its start until every `to=` line says Sent.
# Usage (as root): bash bench/local_agent.sh N [extra sendmail args, e.g. -O RunAsUser=nobody]
set -e
N=${1:-1000}; shift || true
B=${SENDMAIL:-$(dirname "$0")/../target/debug/sendmail}
B=$(realpath "$B")
D=$(mktemp -d); chmod 755 "$D"
trap 'rm -rf "$D"' EXIT
printf 'Djmta.example.test\nCwmta.example.test\nO DaemonPortOptions=Name=MTA-v4, Family=inet, Port=0, Addr=127.0.0.1\n' > "$D/cf"
mkdir -m 777 "$D/out"
echo "archive: $D/out/archive.mbox" > "$D/aliases"
"$B" -bi -O AliasFile="$D/aliases" >/dev/null
COMMON=(-C "$D/cf" -O PidFile="$D/pid" -O QueueDirectory="$D/mqueue" -O AliasFile="$D/aliases" -O LogLevel=9)
"$B" -bD "${COMMON[@]}" -O LogFile="$D/log1" -O DeliveryMode=queueonly 2>/dev/null &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$D/log1" 2>/dev/null && break; sleep 0.1; done
PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$D/log1" | cut -d: -f2)
python3 - "$PORT" "$N" <<'PY'
import smtplib, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = smtplib.SMTP('127.0.0.1', port, timeout=30)
s.ehlo('bench.example.test')
body = b'Subject: bench\r\n\r\n' + b'x' * 4000 + b'\r\n'
for _ in range(n):
    s.sendmail('b@bench.example.test', ['archive@mta.example.test'], body)
s.quit()
PY
kill $PID; wait $PID 2>/dev/null || true
T0=$(date +%s.%N)
"$B" -bD "${COMMON[@]}" -O LogFile="$D/log" -q1s "$@" 2>/dev/null &
PID=$!
c=0
for _ in $(seq 2400); do   # at most 120 s
    c=$(grep -c "stat=Sent" "$D/log" 2>/dev/null || true); c=${c:-0}
    [ "$c" -ge "$N" ] && break
    sleep 0.05
done
T1=$(date +%s.%N)
kill $PID; wait $PID 2>/dev/null || true
echo "queued=$N sent=$c drain_s=$(echo "$T1 - $T0" | bc) $*"

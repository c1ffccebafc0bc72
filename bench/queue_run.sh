#!/bin/bash
# bench/queue_run.sh -- how fast `sendmail -q` empties a queue-only daemon's queue into
# Postfix's smtp-sink over loopback.
#
#   bash bench/queue_run.sh [N_MESSAGES] [RCPTS_PER_MESSAGE]   (defaults 1000, 1)
#
# A sendmail-rs daemon (DeliveryMode=queueonly, [::1]:ephemeral) is fed N messages over one
# SMTP connection (python3 smtplib), then `sendmail -q` is timed until it returns (the
# daemon's answer: the run is over). Remote mail goes by address literal to smtp-sink on
# 127.0.0.2. Every wait is bounded; everything started here is stopped by PID.
set -euo pipefail
N=${1:-1000}
R=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release/sendmail}
W=$(mktemp -d)
trap 'kill $SINK $DAEMON 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.2",0)); print(s.getsockname()[1])')
smtp-sink -u nobody -c 127.0.0.2:$PORT 1000 > "$W/sink.out" 2>&1 &
SINK=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.2/$PORT) 2>/dev/null && break; sleep 0.1; done
cat > "$W/sendmail.cf" <<CF
Djmta.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=0, Addr=::1
Mesmtp, P=[IPC], F=mDFMuXa8, E=\r\n, L=990, T=DNS/RFC822/SMTP, A=TCP \$h $PORT
CF
ARGS=(-C "$W/sendmail.cf" -O QueueDirectory="$W/mqueue" -O LogFile="$W/maillog"
      -O PidFile="$W/pid" -O LogLevel=9)
"$BIN" -bD "${ARGS[@]}" -O DeliveryMode=queueonly 2>"$W/daemon.err" &
DAEMON=$!
for _ in $(seq 300); do grep -q "listening on" "$W/maillog" 2>/dev/null && break; sleep 0.1; done
ADDR=$(grep -o 'listening on \[::1\]:[0-9]*' "$W/maillog" | head -1 | sed 's/.*\]://')
python3 - "$ADDR" "$N" "$R" <<'PY'
import smtplib, sys
port, n, r = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = smtplib.SMTP("::1", port, timeout=60)
s.ehlo("bench.example.test")
body = "Subject: queue run bench\r\n\r\n" + ("x" * 70 + "\r\n") * 30
for i in range(n):
    rcpts = [f"u{i}.{j}@[127.0.0.2]" for j in range(r)]
    s.sendmail("bench@client.example.test", rcpts, body)
s.quit()
PY
queued=$("$BIN" -bp "${ARGS[@]}" | grep -c '^[0-9A-Za-z]\{14\}' || true)
start=$(date +%s.%N)
timeout 600 "$BIN" -q "${ARGS[@]}"
end=$(date +%s.%N)
left=$("$BIN" -bp "${ARGS[@]}" | grep -c '^[0-9A-Za-z]\{14\}' || true)
sent=$(grep -c 'stat=Sent' "$W/maillog" || true)
secs=$(echo "$end - $start" | bc)
echo "queued=$queued rcpts_per_msg=$R sendmail_-q_seconds=$secs to_lines_sent=$sent left_in_queue=$left msgs_per_s=$(echo "scale=1; $queued / $secs" | bc)"

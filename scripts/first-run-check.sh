#!/usr/bin/env bash
# first-run-check.sh -- the README's first command, as a newcomer without root runs it:
# `sendmail -bD --unprivileged` on the embedded default, as `nobody`, in a private network
# namespace (loopback only, so ports 2525/2587 collide with nothing). Checks that it answers
# EHLO on [::1]:2525 and 127.0.0.1:2587, takes a message, and writes its log where the
# README says (~/.local/state/sendmail-rs/maillog). `-odq` is the one addition: the message
# stays queued instead of going to this machine's /var/mail. Needs root (unshare, setpriv).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/sendmail}
[ "$(id -u)" = 0 ] || { echo "first-run-check.sh: run as root" >&2; exit 2; }
H=$(mktemp -d /tmp/first-run.XXXXXX)
trap 'rm -rf "$H"' EXIT
cp "$BIN" "$H/sendmail"
chown -R 65534:65534 "$H"
unshare --net -- bash -c '
set -euo pipefail
H=$1
ip link set lo up
setpriv --reuid=65534 --regid=65534 --clear-groups -- env -i HOME="$H" PATH=/usr/bin:/bin \
    "$H/sendmail" -bD --unprivileged -odq 2>"$H/stderr" &
pid=$!
trap "kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true" EXIT
python3 - <<PY
import smtplib, time
deadline = time.time() + 30
while True:
    try:
        s = smtplib.SMTP("::1", 2525, timeout=5); break
    except OSError:
        if time.time() > deadline: raise
        time.sleep(0.1)
code, _ = s.ehlo(); assert code == 250, code
s.sendmail("", ["nobody@localhost"], "Subject: first run\n\nhello\n")
s.quit()
m = smtplib.SMTP("127.0.0.1", 2587, timeout=5); code, _ = m.ehlo(); assert code == 250, code; m.quit()
print("first run: EHLO on [::1]:2525 and 127.0.0.1:2587, one message accepted")
PY
grep -q "from=<>" "$H/.local/state/sendmail-rs/maillog"
grep -q -- "--unprivileged: listening on" "$H/stderr"
echo "first run: log in ~/.local/state/sendmail-rs/maillog"
' bash "$H"

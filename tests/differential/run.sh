#!/bin/bash
# run.sh -- the differential harness, as CI runs it (root: namespaces).
#
#   tests/differential/run.sh [-v] [SCENARIO...]
#
# Fetches the real sendmail (setup-oracle.sh, once, into target/differential/oracle-root;
# ORACLE_DEBS=DIR takes the .debs from DIR), links each target's sendmail, mailq, newaliases
# and makemap into target/differential/bin-{oracle,ours} (ours: SENDMAIL, default
# target/debug/sendmail) and runs run.py. Needs m4, sendmail-cf, busybox, iproute2, python3,
# fail2ban, sasl2-bin + libsasl2-modules (AUTH) and s-nail (mail -s) (the .ci/run package list).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T="$ROOT/target/differential"
ours="${SENDMAIL:-$ROOT/target/debug/sendmail}"
[ -x "$ours" ] || (cd "$ROOT" && cargo build -q --bin sendmail)
ours="$(cd "$(dirname "$ours")" && pwd)/$(basename "$ours")"
"$HERE/setup-oracle.sh" "$T/oracle-root"
P="$T/oracle-root/pkg/usr/libexec/sendmail"
mkdir -p "$T/bin-oracle" "$T/bin-ours"
for n in sendmail mailq newaliases; do
    ln -sfn "$P/sendmail" "$T/bin-oracle/$n"
    ln -sfn "$ours" "$T/bin-ours/$n"
done
ln -sfn "$P/makemap" "$T/bin-oracle/makemap"
ln -sfn "$ours" "$T/bin-ours/makemap"
exec python3 "$HERE/run.py" "$@"

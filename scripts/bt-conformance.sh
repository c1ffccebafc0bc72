#!/bin/bash
# bt-conformance.sh -- run the recorded -bt corpus (tests/data/conformance/bt) against our
# address test mode and print the pass count per config.
#
#   scripts/bt-conformance.sh [BINARY]      (needs root: bt-env.sh uses namespaces)
#
# BINARY defaults to target/debug/examples/bt (built here; it goes through cli::parse and
# rules::bt::run exactly as `sendmail -bt` will); any binary that takes `-C cf -bt` works,
# e.g. target/debug/sendmail. When BINARY is our sendmail, `prepare` builds the maps with it,
# as `makemap` (a symlink named makemap) and `-bi`, so the -bt sessions read the built maps;
# any other binary cannot build maps, so /bin/true stands in for both and the maps are read
# from their text sources.
# Exit statuses are compared too (--exit). Extra bt-check.py options (e.g. -v) can be
# given in BTCHECK_OPTS. Needs root (bt-env.sh uses unshare).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF="$ROOT/tests/data/conformance"
BIN="${1:-}"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build -q --example bt)
    BIN="$ROOT/target/debug/examples/bt"
fi
D="$ROOT/target/bt-env"
mkdir -p "$D"
SM=/bin/true MM=/bin/true
if [ "$(basename "$BIN")" = sendmail ]; then
    mkdir -p "$D/bin"
    SM="$(cd "$(dirname "$BIN")" && pwd)/sendmail"
    ln -sf "$SM" "$D/bin/makemap"
    MM="$D/bin/makemap"
    rm -f "$D/run/access.db" "$D/run/aliases.db"
fi
"$CONF/bt-env.sh" prepare "$D" "$SM" "$MM" 2>"$D/prepare.log" || {
    echo "bt-env.sh prepare failed:" >&2; cat "$D/prepare.log" >&2; exit 1; }
for cfg in oracle debian; do
    python3 "$CONF/bt-check.py" ${BTCHECK_OPTS:-} --exit --subst @ORACLE@="$D" \
        --cmd "$CONF/bt-env.sh $cfg $D $BIN -bt" "$CONF/bt/$cfg/cases.txt" \
        > "$D/$cfg.result" || true
    echo "$cfg: $(tail -1 "$D/$cfg.result")   (details: $D/$cfg.result)"
done

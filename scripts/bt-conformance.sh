#!/bin/bash
# bt-conformance.sh -- run the recorded -bt corpus (../shared/conformance/bt) against our
# address test mode and print the pass count per config.
#
#   scripts/bt-conformance.sh [BINARY]      (needs root: bt-env.sh uses namespaces)
#
# BINARY defaults to target/debug/examples/bt (built here; it goes through cli::parse and
# rules::bt::run exactly as `sendmail -bt` will); any binary that takes `-C cf -bt` works,
# e.g. target/debug/sendmail once -bt is wired. Maps are read from their text sources, so
# `prepare` needs no makemap/newaliases: /bin/true stands in for both.
# Exit statuses are compared too (--exit). Extra bt-check.py options (e.g. -v) can be
# given in BTCHECK_OPTS. Needs root (bt-env.sh uses unshare).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONF="${CONFORMANCE:-}"
if [ -z "$CONF" ]; then
    for c in "$ROOT/../shared/conformance" "$ROOT/../../shared/conformance" /work/shared/conformance; do
        if [ -d "$c" ]; then CONF="$(cd "$c" && pwd)"; break; fi
    done
fi
BIN="${1:-}"
if [ -z "$BIN" ]; then
    (cd "$ROOT" && cargo build -q --example bt)
    BIN="$ROOT/target/debug/examples/bt"
fi
D="$ROOT/target/bt-env"
mkdir -p "$D"
"$CONF/bt-env.sh" prepare "$D" /bin/true /bin/true 2>/dev/null
for cfg in oracle debian; do
    python3 "$CONF/bt-check.py" ${BTCHECK_OPTS:-} --exit --subst @ORACLE@="$D" \
        --cmd "$CONF/bt-env.sh $cfg $D $BIN -bt" "$CONF/bt/$cfg/cases.txt" \
        > "$D/$cfg.result" || true
    echo "$cfg: $(tail -1 "$D/$cfg.result")   (details: $D/$cfg.result)"
done

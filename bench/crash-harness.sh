#!/usr/bin/env bash
# The crash harness (issue 6 item 1): thousands of messages from concurrent clients while
# the daemon is SIGKILLed and restarted; reports acknowledged / delivered / lost /
# duplicated and fails when anything acknowledged is lost. See bench/crash_harness.py.
#
#   bash bench/crash-harness.sh            # full run: release build, 5000 messages, 15 kills
#   bash bench/crash-harness.sh --smoke    # CI: debug build, 300 messages, 6 kills (4 tears), < 60 s
#   bash bench/crash-harness.sh --messages 20000 --kills 30 --seed 7   # any option of the .py
# Two builds compared seed by seed (one seed alone spreads 0.1-2.7 duplicates per kill):
#   python3 bench/crash_ab.py --a BUILD_A --b BUILD_B --seeds 601-620 -- --local program
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --smoke "* ]]; then
    cargo build --quiet --bin sendmail
    exec python3 bench/crash_harness.py --binary target/debug/sendmail "$@"
fi
cargo build --quiet --release --bin sendmail
exec python3 bench/crash_harness.py --binary target/release/sendmail "$@"

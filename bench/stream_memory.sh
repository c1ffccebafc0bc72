#!/usr/bin/env bash
# stream_memory.sh -- peak memory of the daemon per receiving session against message size
# (issue 16 item 3: past its first 64 KiB a message streams to a spool file, so a session
# holds a bounded part of it, whatever its size).
#
#   bash bench/stream_memory.sh                 # 30 sessions x 1, 10, 50 MB
#   SIZES="1 10" SESSIONS=10 bash bench/stream_memory.sh
#   CARGO_PROFILE=" " bash bench/stream_memory.sh    # the debug build (memory is the same)
#
# For each size it runs tests/streaming.rs's concurrent test against the real daemon (release
# build, on ::1 and 127.0.0.1, DeliveryMode=queue, queue under the test's temp dir, deleted
# afterwards): SESSIONS clients send one message of that size each at the same time; every
# message must be acknowledged and read back intact from the queue, and the daemon's VmHWM
# (/proc/PID/status) must stay under MAX_MB (300, the issue's bound). Prints one line per
# size: the peak, the peak at start, and (peak - start) / sessions. Disk: about twice
# SESSIONS x size while a size runs (spool + journal). Run it at nice 19 on a shared machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=${SIZES:-"1 10 50"}
SESSIONS=${SESSIONS:-30}
MAX_MB=${MAX_MB:-300}
printf '%-8s %-9s %-12s %-14s %-20s %s\n' size sessions "VmHWM MB" "at start MB" "per session KiB" "wall s"
for mb in $SIZES; do
    line=$(STREAM_MB=$mb STREAM_SESSIONS=$SESSIONS STREAM_MAX_MB=$MAX_MB \
        timeout 1800 cargo test -q ${CARGO_PROFILE:---release} --test streaming thirty -- --nocapture 2>&1 |
        grep -E '^[0-9]+ x [0-9]+ MB: VmHWM' || true)
    if [[ -z $line ]]; then
        echo "size $mb MB: the test failed (run it by hand to see why)" >&2
        exit 1
    fi
    # "30 x 50 MB: VmHWM 41 MB (at start 16 MB), 63.2 s; 870 KiB per session"
    read -r hwm base wall per <<<"$(sed -E 's/.*VmHWM ([0-9]+) MB \(at start ([0-9]+) MB\), ([0-9.]+) s; ([0-9]+) KiB.*/\1 \2 \3 \4/' <<<"$line")"
    printf '%-8s %-9s %-12s %-14s %-20s %s\n' "$mb MB" "$SESSIONS" "$hwm" "$base" "$per" "$wall"
done

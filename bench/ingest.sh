#!/usr/bin/env bash
# ingest.sh -- how fast sendmail-rs accepts mail into its durable queue, beside Postfix.
#
#   bash bench/ingest.sh              # full run (~10 min on 2 cores): table -> bench/RESULTS.md
#   SMOKE=1 bash bench/ingest.sh      # ~10 s subset: one cell, one run; nothing written
#
# One run, as root, on loopback only:
#  1. installs what is missing (postfix with debconf "No configuration" -- it gives
#     smtp-source --, hyperfine, python3), non-interactively;
#  2. builds sendmail-rs (cargo build --release) and starts it with -bD on a tiny private
#     cf (bench/run/sendmail/): [::1]:SM_PORT and 127.0.0.1:SM_PORT, LogLevel=9, queue,
#     pid, log and status files under the scratch dir. sendmail-rs does not deliver yet,
#     so its queue only grows: it is compared with Postfix in "hold" mode;
#  3. starts a private Postfix 3 instance (bench/run/postfix/, the system's /etc/postfix
#     is not touched) on [::1]:PF_PORT and 127.0.0.1:PF_PORT in hold mode: cleanup writes
#     and fsyncs the queue file, smtpd answers 250, the message waits in the hold queue;
#  4. measures the disk's fsync ceiling (fsync_probe.c, a few seconds) before the servers
#     start and again after the last cell (the shared disk drifts 3x within minutes);
#  5. for each cell (sessions x messages per connection, 5 KiB bodies) and each server:
#     empties the server's queue (stop, delete, start), then runs Postfix's smtp-source
#     under hyperfine (RUNS counted runs after WARMUP, each bounded by `timeout`), and
#     checks that the queue holds every message sent;
#  6. latency from the final "." to the "250" at 20 sessions (latency.py) and memory
#     with IDLE_CONNS idle connections (idle.py), for both servers;
#  7. prints one table (cell, sendmail-rs msg/s, Postfix msg/s, ratio) and, unless SMOKE,
#     appends it with the date and machine to bench/RESULTS.md.
# Everything started here is stopped by PID on exit (trap), whatever happens.
#
# Environment: RUNS (3), WARMUP (1), SMOKE (0), SM_PORT (10040), PF_PORT (10041),
# SRC_TIMEOUT (120 s per smtp-source run), LATENCY (1), IDLE_CONNS (1000; 0 = skip),
# NO_BUILD (0: use the existing target/release/sendmail), RESULTS_FILE, SM_CF_EXTRA (lines
# appended to sendmail-rs's cf, for experiments: e.g. "O MaxMessageSize=1000").
# Exit status: 0 when sendmail-rs accepted every message of every cell; 1 otherwise
# (in particular when it accepted nothing); 2 on a setup problem.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
RUN="$BENCH/run"
SMOKE=${SMOKE:-0}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SM_PORT=${SM_PORT:-10040}
PF_PORT=${PF_PORT:-10041}
SRC_TIMEOUT=${SRC_TIMEOUT:-120}
LATENCY=${LATENCY:-1}
IDLE_CONNS=${IDLE_CONNS:-1000}
RESULTS_FILE=${RESULTS_FILE:-$BENCH/RESULTS.md}
MSG_LEN=5120
FROM=a@example.com
TO=b@example.com
if [ "$SMOKE" = 1 ]; then RUNS=1; WARMUP=0; LATENCY=0; IDLE_CONNS=0; fi

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

case "$RUNS$WARMUP$SM_PORT$PF_PORT$SRC_TIMEOUT$IDLE_CONNS" in
    *[!0-9]*) die "RUNS, WARMUP, SM_PORT, PF_PORT, SRC_TIMEOUT, IDLE_CONNS must be numbers" ;;
esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || die "RUNS must be 1..50"
[ "$WARMUP" -le 5 ] || die "WARMUP must be 0..5"
[ "$IDLE_CONNS" -le 5000 ] || die "IDLE_CONNS must be 0..5000"
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts a private Postfix)"

# --- 1. what it needs --------------------------------------------------------------------
install_missing() {
    local p missing=()
    for p in postfix hyperfine python3; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing: ${missing[*]}"
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
}
install_missing
for c in smtp-source hyperfine cc cargo python3 timeout; do
    command -v "$c" >/dev/null || die "$c not found"
done

# --- process bookkeeping: everything we start is stopped by PID ---------------------------
SM_PID=""
PF_CONF="$RUN/postfix/etc"
PF_SPOOL="$RUN/postfix/spool"

listening() {   # port -> true when both [::1]:port and 127.0.0.1:port are in LISTEN
    local hex
    hex=$(printf '%04X' "$1")
    grep -q "^ *[0-9]*: 00000000000000000000000001000000:$hex 00000000000000000000000000000000:0000 0A" /proc/net/tcp6 &&
        grep -q "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp
}
port_free() {
    local hex
    hex=$(printf '%04X' "$1")
    ! grep -q ":$hex [0-9A-F:]* 0A" /proc/net/tcp6 /proc/net/tcp
}
wait_listening() {   # port what
    for _ in $(seq 150); do listening "$1" && return 0; sleep 0.1; done
    die "$2 does not listen on [::1]:$1 and 127.0.0.1:$1 after 15 s"
}

sm_start() {
    mkdir -p "$RUN/sendmail/queue"
    # room for the idle-connection test (sendmail-rs does not raise its own limit)
    (ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
     exec "$SM_BIN" -bD -C "$RUN/sendmail/bench.cf" </dev/null >>"$RUN/sendmail/stderr.log" 2>&1) &
    SM_PID=$!
    wait_listening "$SM_PORT" "sendmail-rs (pid $SM_PID, see $RUN/sendmail/stderr.log)"
}
sm_stop() {
    [ -n "$SM_PID" ] || return 0
    if kill -0 "$SM_PID" 2>/dev/null; then
        kill -TERM "$SM_PID" 2>/dev/null || true
        for _ in $(seq 400); do kill -0 "$SM_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$SM_PID" 2>/dev/null; then
            log "sendmail-rs pid $SM_PID still running 40 s after SIGTERM: SIGKILL"
            kill -KILL "$SM_PID" 2>/dev/null || true
        fi
    fi
    wait "$SM_PID" 2>/dev/null || true
    SM_PID=""
}
sm_reset() {   # an empty queue for the next cell
    sm_stop
    rm -rf "$RUN/sendmail/queue"
    sm_start
}
sm_cpu_ticks() {   # user + system clock ticks of the sendmail-rs process so far
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$SM_PID/stat"
}
sm_count() {   # messages in sendmail-rs's queue (mailq's own count)
    "$SM_BIN" -bp -C "$RUN/sendmail/bench.cf" 2>/dev/null |
        awk '/Total requests:/ {n = $NF} END {print n + 0}'
}

pf_master_pid() { tr -d ' ' < "$PF_SPOOL/pid/master.pid" 2>/dev/null || true; }
pf_start() {
    postfix -c "$PF_CONF" start >>"$RUN/postfix/start.log" 2>&1 || die "postfix start failed (see $RUN/postfix/start.log and postfix.log)"
    wait_listening "$PF_PORT" "postfix"
}
pf_stop() {
    local pid
    pid=$(pf_master_pid)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    postfix -c "$PF_CONF" stop >>"$RUN/postfix/start.log" 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "postfix master pid $pid still running 10 s after stop: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}
pf_reset() {
    pf_stop
    rm -rf "${PF_SPOOL:?}/hold" "$PF_SPOOL/incoming" "$PF_SPOOL/active" "$PF_SPOOL/deferred"
    pf_start
}
pf_count() { find "$PF_SPOOL/hold" "$PF_SPOOL/incoming" "$PF_SPOOL/active" -type f 2>/dev/null | wc -l; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    sm_stop
    pf_stop
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 2. the disk (before any server runs, and again at the end: it drifts) -----------------
fsync_probe() {   # -> the probe's three lines
    if [ "$SMOKE" = 1 ]; then timeout 30 "$RUN/fsync_probe" "$RUN/fsync" 200 1
    else timeout 60 "$RUN/fsync_probe" "$RUN/fsync" 2000 5; fi
}

# --- 3. sendmail-rs ------------------------------------------------------------------------
port_free "$SM_PORT" || die "port $SM_PORT is already in use (set SM_PORT)"
port_free "$PF_PORT" || die "port $PF_PORT is already in use (set PF_PORT)"
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
rm -rf "$RUN"
mkdir -p "$RUN/sendmail" "$RUN/postfix"
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
SM_BIN="$REPO/target/release/sendmail"
[ -x "$SM_BIN" ] || die "$SM_BIN missing"

# A tiny cf: no rulesets, so the built-in policy applies (loopback clients may relay).
# Listen=1024: sendmail's default backlog of 10 drops SYNs with 100 parallel connects
# (1-7 s client retransmits); the Postfix and sendmail peers were measured with >= 1024.
cat > "$RUN/sendmail/bench.cf" <<EOF
V10/Berkeley
Djbench.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=$SM_PORT, Addr=::1, Listen=1024
O DaemonPortOptions=Name=MTA-v4, Family=inet, Port=$SM_PORT, Addr=127.0.0.1, Listen=1024
O QueueDirectory=$RUN/sendmail/queue
O PidFile=$RUN/sendmail/sendmail.pid
O LogFile=$RUN/sendmail/maillog
O StatusFile=$RUN/sendmail/sendmail.st
O LogLevel=9
# "hold", as the Postfix peer: accept into the durable queue, no delivery attempts.
O DeliveryMode=queueonly
${SM_CF_EXTRA:-}
EOF
: > "$RUN/sendmail/sendmail.st"
cc -O2 -o "$RUN/fsync_probe" "$BENCH/fsync_probe.c" || die "cannot compile fsync_probe.c"
mkdir -p "$RUN/fsync"
FSYNC=$(fsync_probe)
log "fsync ceiling (one writer, 4 KiB):"; printf '%s\n' "$FSYNC" >&2
FSTYPE=$(awk -v d="$RUN" '$2 != "" && index(d, $2) == 1 && length($2) >= l {l = length($2); t = $3 " " $4} END {print t}' /proc/mounts)

sm_start
log "sendmail-rs pid $SM_PID on [::1]:$SM_PORT, 127.0.0.1:$SM_PORT"

# --- 4. Postfix, hold mode ------------------------------------------------------------------
mkdir -p "$PF_CONF" "$PF_SPOOL" "$RUN/postfix/data"
chown postfix:postfix "$RUN/postfix/data"
# Debian's stock master.cf with chroot off and "smtp inet" moved to our port (process
# limit 1200, enough for the idle-connection test).
sed -e 's/^\([a-z]*[ ]*\(unix\|inet\|unix-dgram\)[ ]*[-ny][ ]*[-ny][ ]*\)y/\1n/' \
    -e "s/^smtp      inet  n       -       n       -       -       smtpd/$PF_PORT     inet  n       -       n       -       1200    smtpd/" \
    /usr/share/postfix/master.cf.dist > "$PF_CONF/master.cf"
grep -q "^$PF_PORT " "$PF_CONF/master.cf" || die "could not edit Postfix's master.cf.dist"
cat > "$PF_CONF/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF_SPOOL
data_directory = $RUN/postfix/data
daemon_directory = /usr/lib/postfix/sbin
command_directory = /usr/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
myhostname = bench.example.test
mydomain = example.test
myorigin = example.test
mydestination =
inet_interfaces = 127.0.0.1, [::1]
inet_protocols = all
mynetworks = 127.0.0.0/8, [::1]/128
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
default_transport = discard:bench
relay_transport = discard:bench
maillog_file = $RUN/postfix/postfix.log
maillog_file_prefixes = $RUN
default_process_limit = 250
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
biff = no
smtpd_data_restrictions = check_client_access static:HOLD
EOF
postfix -c "$PF_CONF" check >>"$RUN/postfix/start.log" 2>&1 || die "postfix check failed (see $RUN/postfix/start.log)"
pf_start
PF_VERSION=$(postconf -c "$PF_CONF" -h mail_version)
log "postfix $PF_VERSION master pid $(pf_master_pid) on [::1]:$PF_PORT, 127.0.0.1:$PF_PORT (hold)"

# --- 5. the cells ------------------------------------------------------------------------------
# label sessions messages persistent(1 = -d: msgs/conn = messages/sessions) target-family
if [ "$SMOKE" = 1 ]; then
    CELLS=("s=20, 10/conn|20|200|1|6")
else
    CELLS=(
        "s=1, 1/conn|1|500|0|6"
        "s=20, 1/conn|20|2000|0|6"
        "s=100, 1/conn|100|4000|0|6"
        "s=1, 100/conn|1|100|1|6"
        "s=20, 100/conn|20|2000|1|6"
        "s=100, 100/conn|100|10000|1|6"
        "s=20, 100/conn, IPv4|20|2000|1|4"
    )
fi

ROWS=()      # "label|sm msg/s|pf msg/s|ratio|sm cpu us/msg|sm detail|pf detail|load"
SM_CPU_US="-"
SM_TOTAL=0; SM_SHORT=0; FAILED_CELLS=0

# Runs in this shell (not a subshell: it restarts the servers, whose PIDs we keep), and
# leaves "MSGS_PER_S MIN MED MAX ACCEPTED EXPECTED STATUS" in $MEASURED (and for
# sendmail-rs its own CPU time per accepted message, in microseconds, in $SM_CPU_US).
MEASURED=""
measure() {   # server label s m p fam
    local server=$1 label=$2 s=$3 m=$4 p=$5 fam=$6 host port d="" csv status=ok
    local cpu0=0
    if [ "$server" = sm ]; then port=$SM_PORT; sm_reset; cpu0=$(sm_cpu_ticks); else port=$PF_PORT; pf_reset; fi
    if [ "$fam" = 4 ]; then host=127.0.0.1; else host='[::1]'; fi
    [ "$p" = 1 ] && d="-d"
    csv="$RUN/cell-$server-s$s-m$m-p$p-v$fam.csv"
    if ! hyperfine --style none --runs "$RUNS" --warmup "$WARMUP" --export-csv "$csv" \
        "timeout $SRC_TIMEOUT smtp-source $d -s $s -m $m -l $MSG_LEN -f $FROM -t $TO $host:$port" \
        >"$csv.out" 2>&1; then
        status=FAILED
    fi
    # the message files may still be renamed into place for a moment after the last 250
    local accepted expected=$(( (RUNS + WARMUP) * m ))
    for _ in $(seq 20); do
        if [ "$server" = sm ]; then accepted=$(sm_count); else accepted=$(pf_count); fi
        [ "$accepted" -ge "$expected" ] && break
        sleep 0.25
    done
    if [ "$server" = sm ]; then
        SM_CPU_US=$(awk -v t="$(( $(sm_cpu_ticks) - cpu0 ))" -v hz="$(getconf CLK_TCK)" -v n="$accepted" \
            'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }')
    fi
    if [ "$status" = ok ] && [ -s "$csv" ]; then
        MEASURED=$(awk -F, -v m="$m" -v acc="$accepted" -v want="$expected" 'NR == 2 {
            printf "%.0f %.3f %.3f %.3f %d %d %s\n", m / $4, $7, $4, $8, acc, want, (acc == want ? "ok" : "SHORT") }' "$csv")
    else
        MEASURED="0 0 0 0 $accepted $expected FAILED"
    fi
}

for cell in "${CELLS[@]}"; do
    IFS='|' read -r label s m p fam <<<"$cell"
    log "cell $label: $m msgs x $((RUNS + WARMUP)) runs, sendmail-rs then Postfix"
    measure sm "$label" "$s" "$m" "$p" "$fam"
    read -r sm_rate sm_min sm_med sm_max sm_acc sm_exp sm_st <<<"$MEASURED"
    measure pf "$label" "$s" "$m" "$p" "$fam"
    read -r pf_rate pf_min pf_med pf_max pf_acc pf_exp pf_st <<<"$MEASURED"
    SM_TOTAL=$((SM_TOTAL + sm_acc))
    [ "$sm_st" = ok ] || { SM_SHORT=1; FAILED_CELLS=$((FAILED_CELLS + 1)); }
    if [ "$pf_rate" -gt 0 ]; then ratio=$(awk -v a="$sm_rate" -v b="$pf_rate" 'BEGIN {printf "%.2f", a / b}'); else ratio="-"; fi
    load=$(cut -d' ' -f1 /proc/loadavg)
    ROWS+=("$label|$sm_rate|$pf_rate|$ratio|$SM_CPU_US|${sm_min}/${sm_med}/${sm_max}s, $sm_acc/$sm_exp queued, $sm_st|${pf_min}/${pf_med}/${pf_max}s, $pf_acc/$pf_exp queued, $pf_st|$load")
    log "  sendmail-rs $sm_rate msg/s ($sm_st, $sm_acc/$sm_exp queued, ${SM_CPU_US} us CPU/msg)  Postfix $pf_rate msg/s ($pf_st, $pf_acc/$pf_exp)  ratio $ratio  load $load"
    [ "$sm_st" = FAILED ] && sed 's/^/    sm: /' "$RUN/cell-sm-s$s-m$m-p$p-v$fam.csv.out" | tail -5 >&2
done

# --- 6. latency and idle memory -------------------------------------------------------------
LAT_SM="" LAT_PF="" IDLE_SM="" IDLE_PF=""
if [ "$LATENCY" = 1 ]; then
    log "latency: 20 sessions x 50 msgs, final '.' -> 250"
    sm_reset; LAT_SM=$(timeout 330 python3 "$BENCH/latency.py" ::1 "$SM_PORT" -s 20 -m 50 -l "$MSG_LEN" || true)
    pf_reset; LAT_PF=$(timeout 330 python3 "$BENCH/latency.py" ::1 "$PF_PORT" -s 20 -m 50 -l "$MSG_LEN" || true)
    log "  sendmail-rs: $LAT_SM"; log "  Postfix:     $LAT_PF"
fi
if [ "$IDLE_CONNS" -gt 0 ]; then
    log "memory with $IDLE_CONNS idle connections (banner + EHLO)"
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    sm_reset; sleep 1
    IDLE_SM=$(timeout 240 python3 "$BENCH/idle.py" ::1 "$SM_PORT" "$SM_PID" -n "$IDLE_CONNS" || true)
    pf_reset; sleep 1
    IDLE_PF=$(timeout 240 python3 "$BENCH/idle.py" ::1 "$PF_PORT" "$(pf_master_pid)" -n "$IDLE_CONNS" || true)
    log "  sendmail-rs: $IDLE_SM"; log "  Postfix:     $IDLE_PF"
fi

# --- 7. the table ------------------------------------------------------------------------------
sm_stop
pf_stop
FSYNC_END=$(fsync_probe)
SMLOG="$RUN/sendmail/maillog"
LOG_SUMMARY=$( {
    echo "lines: $(wc -l < "$SMLOG" 2>/dev/null || echo 0), from=: $(grep -c ' from=' "$SMLOG" 2>/dev/null || true)"
    # every other kind of line, with numbers and queue ids folded, most frequent first
    grep -v -e ' from=' -e 'starting daemon' "$SMLOG" 2>/dev/null |
        sed -E 's/^[A-Z][a-z]{2} +[0-9]+ [0-9:]+ [^ ]+ //; s/\[[0-9]+\]//; s/[0-9A-Za-z]{14}: //; s/[0-9]+/N/g' |
        sort | uniq -c | sort -rn | head -8
} )
STDERR_LINES=$(wc -l < "$RUN/sendmail/stderr.log")

MACHINE="nproc $(nproc), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo), load average $START_LOAD at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end, fs ${FSTYPE:-?}"
REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
TABLE=$( {
    echo "| cell | sendmail-rs msg/s | Postfix hold msg/s | ratio | sendmail-rs CPU µs/msg | sendmail-rs wall min/med/max | Postfix wall min/med/max | load |"
    echo "|---|---:|---:|---:|---:|---|---|---:|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c d e f g h <<<"$r"
        echo "| $a | $b | $c | $d | $e | $f | $g | $h |"
    done
} )
REPORT=$(cat <<EOF
## $(date -u '+%F %H:%M UTC') — ingest, sendmail-rs $REV vs Postfix $PF_VERSION hold$([ "$SMOKE" = 1 ] && echo " (SMOKE)")

Machine: $MACHINE.
Command: \`$([ "$SMOKE" = 1 ] && echo "SMOKE=1 ")RUNS=$RUNS bash bench/ingest.sh\` — $MSG_LEN-byte bodies, smtp-source, median of $RUNS runs after $WARMUP warm-up, each cell starting from an empty queue; msg/s = messages / median wall time. sendmail-rs: \`-bD\`, LogLevel=9, Listen=1024, fdatasync group commit before 250. Postfix: private instance, hold mode (cleanup fsyncs the queue file before 250, no delivery).

$TABLE

Disk fsync ceiling, one writer, 4 KiB (\`fsync_probe\`), before the servers started and after the last cell:
\`\`\`
$FSYNC
--
$FSYNC_END
\`\`\`
EOF
)
if [ -n "$LAT_SM$LAT_PF" ]; then
    REPORT+=$'\n\n'"Latency, final \".\" to 250, 20 sessions x 50 messages (\`latency.py\`):"$'\n```\n'"sendmail-rs $LAT_SM"$'\n'"Postfix     $LAT_PF"$'\n```'
fi
if [ -n "$IDLE_SM$IDLE_PF" ]; then
    REPORT+=$'\n\n'"Memory holding $IDLE_CONNS idle connections (banner + EHLO; process tree from /proc/PID/smaps_rollup, \`idle.py\`):"$'\n```\n'"sendmail-rs $IDLE_SM"$'\n'"Postfix     $IDLE_PF"$'\n```'
fi
REPORT+=$'\n\n'"sendmail-rs LogFile over the whole run (other lines folded, numbers as N), stderr lines: $STDERR_LINES:"$'\n```\n'"$LOG_SUMMARY"$'\n```\n'

echo
echo "$REPORT"
if [ "$SMOKE" != 1 ]; then
    [ -f "$RESULTS_FILE" ] || printf '# Ingest benchmark results (bench/ingest.sh)\n\nNewest last. The machine is shared: expect ±15 %%.\n' > "$RESULTS_FILE"
    printf '\n%s\n' "$REPORT" >> "$RESULTS_FILE"
    log "appended to $RESULTS_FILE"
fi

if [ "$SM_TOTAL" -eq 0 ]; then
    log "FAIL: sendmail-rs accepted no message"
    exit 1
fi
if [ "$SM_SHORT" = 1 ]; then
    log "FAIL: $FAILED_CELLS cell(s) where sendmail-rs failed or queued fewer messages than were sent"
    exit 1
fi
exit 0

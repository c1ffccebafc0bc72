#!/usr/bin/env bash
# ingest.sh -- the benchmark suite: sendmail-rs beside Postfix and the real sendmail 8.17.
#
#   bash bench/ingest.sh              # full run (~30 min on 2 cores): table -> bench/RESULTS.md
#   SMOKE=1 bash bench/ingest.sh      # ~10 s subset: one cell, one run; nothing written
#
# Parts (each a few rows of the one table; all from the same run, so the ratios compare
# like with like on this noisy shared machine):
#   ingest  accepted into the durable queue, no delivery: sendmail-rs queueonly, Postfix hold,
#           sendmail DeliveryMode=queue (SuperSafe); 5 KiB and 100 KiB bodies;
#   relay   accept, queue, deliver over SMTP to Postfix's smtp-sink (sendmail-rs: smart host
#           DSrelay:[127.0.0.1] with A=TCP $h SINK_PORT; Postfix relayhost; sendmail
#           SMART_HOST): msg/s until the queue is empty again, CPU per message; beside
#           it smtp-sink's own accept rate (smtp-source straight at it, 20 persistent
#           sessions as the relay's, SINK_MSGS a run, median of RUNS runs alternating
#           with sendmail-rs's relay runs and RUNS just after them): the ceiling of any
#           relay through it, and the denominator of "relay / smtp-sink alone";
#   local   delivering through aliases into an mbox file and a Maildir in the scratch dir
#           (never /var/mail): sendmail-rs; Postfix's local(8) through the instance's own
#           aliases file (hash, postalias); the real sendmail's *file* mailer for the mbox
#           (it has no Maildir delivery: "-");
#   latency final "." to 250 at 20 sessions (latency.py), all three servers;
#   idle    KiB per idle session (banner + EHLO) at IDLE_CONNS (sendmail-rs) and
#           IDLE_PEER_CONNS (the forking peers: one process per session) (idle.py).
# The real sendmail runs through bench/peers/bench-sendmail.sh (copied into the scratch
# dir: it keeps its state beside itself; its package from /root/oracle/pkg when present, else
# apt-get download).
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
#     appends it with the date and machine to bench/RESULTS.md and draws it beside it as
#     bench/ingest.svg (bench/chart.py: msg/s against sessions, KiB per idle session).
# Everything started here is stopped by PID on exit (trap), whatever happens.
#
# Environment: RUNS (3), WARMUP (1), SMOKE (0), SM_PORT (10040), PF_PORT (10041),
# SX_PORT (10042, the real sendmail), SINK_PORT (10043, smtp-sink for sendmail-rs and
# Postfix), SX_SINK_PORT (10044), PEER (1: include the real sendmail), RELAY (1), LOCAL (1),
# BIG (1: the 100 KiB cells), RELAY_MSGS (2000 per run, 20 sessions), SINK_MSGS (5 x
# RELAY_MSGS: messages per run of the smtp-sink-alone ceiling),
# SRC_TIMEOUT (120 s per smtp-source run), LATENCY (1), IDLE_CONNS ("1000 10000"; 0 = skip),
# IDLE_PEER_CONNS (1000),
# QUICK (0; 1 = every part once with a fifth of the messages: a reduced run, for when the
# full one does not fit), MAX_CELLS (only the first N ingest cells), NO_BUILD (0: use the existing target/release/sendmail), RESULTS_FILE, SM_CF_EXTRA (lines
# appended to sendmail-rs's cf, for experiments: e.g. "O MaxMessageSize=1000").
# Exit status: 0 when sendmail-rs accepted every message of every cell; 1 otherwise
# (in particular when it accepted nothing); 2 on a setup problem.
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
RUN="$BENCH/run"
# The local cells' mailboxes: a directory of this run's own (see local_fresh), removed at exit.
LOCAL_DIR="$RUN/local/run.$(date +%s).$$"
SMOKE=${SMOKE:-0}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-1}
SM_PORT=${SM_PORT:-10040}
PF_PORT=${PF_PORT:-10041}
SRC_TIMEOUT=${SRC_TIMEOUT:-120}
LATENCY=${LATENCY:-1}
IDLE_CONNS=${IDLE_CONNS:-1000 10000}
IDLE_PEER_CONNS=${IDLE_PEER_CONNS:-1000}
SX_PORT=${SX_PORT:-10042}
SINK_PORT=${SINK_PORT:-10043}
SX_SINK_PORT=${SX_SINK_PORT:-10044}
PEER=${PEER:-1}
RELAY=${RELAY:-1}
LOCAL=${LOCAL:-1}
BIG=${BIG:-1}
RELAY_MSGS=${RELAY_MSGS:-2000}
SINK_MSGS=${SINK_MSGS:-}
PEERS=$BENCH/peers
RESULTS_FILE=${RESULTS_FILE:-$BENCH/RESULTS.md}
MSG_LEN=5120
FROM=a@example.com
TO=b@example.com
DIV=1
if [ "${QUICK:-0}" = 1 ]; then   # every part, one run, a fifth of the messages
    RUNS=1; WARMUP=0; DIV=5; RELAY_MSGS=$(( RELAY_MSGS / 5 ))
fi
if [ "$SMOKE" = 1 ]; then
    RUNS=1; WARMUP=0; LATENCY=0; IDLE_CONNS=0; IDLE_PEER_CONNS=0; PEER=0; LOCAL=0; BIG=0
    RELAY=${SMOKE_RELAY:-1}; RELAY_MSGS=200
fi
SINK_MSGS=${SINK_MSGS:-$(( RELAY_MSGS * 5 ))}

log() { printf '%s %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

case "$RUNS$WARMUP$SM_PORT$PF_PORT$SX_PORT$SINK_PORT$SX_SINK_PORT$SRC_TIMEOUT$RELAY_MSGS$SINK_MSGS$IDLE_PEER_CONNS${IDLE_CONNS// /}" in
    *[!0-9]*) die "RUNS, WARMUP, the ports, SRC_TIMEOUT, RELAY_MSGS, IDLE_CONNS must be numbers" ;;
esac
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 50 ] || die "RUNS must be 1..50"
[ "$WARMUP" -le 5 ] || die "WARMUP must be 0..5"
for n in $IDLE_CONNS $IDLE_PEER_CONNS; do [ "$n" -le 10000 ] || die "IDLE_CONNS must be 0..10000"; done
[ "$RELAY_MSGS" -le 100000 ] || die "RELAY_MSGS must be <= 100000"
[ "$SINK_MSGS" -ge 1 ] && [ "$SINK_MSGS" -le 500000 ] || die "SINK_MSGS must be 1..500000"
[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts a private Postfix)"

# --- 1. what it needs --------------------------------------------------------------------
install_missing() {
    local p missing=()
    for p in postfix hyperfine python3 m4 busybox; do
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
SM_CF="$RUN/sendmail/bench.cf"   # the cf of the running sendmail-rs (ingest, relay or local)
SINK_PID=""
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
     exec "$SM_BIN" -bD -C "$SM_CF" </dev/null >>"$RUN/sendmail/stderr.log" 2>&1) &
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
    "$SM_BIN" -bp -C "$SM_CF" 2>/dev/null |
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
pf_queued() { find "$PF_SPOOL/incoming" "$PF_SPOOL/active" "$PF_SPOOL/deferred" "$PF_SPOOL/maildrop" -type f 2>/dev/null | wc -l; }
pf_mode() {   # hold | relay | local: the private instance's delivery side (takes effect on start)
    local dest="mydestination =" aliases="alias_maps =" rcpts="local_recipient_maps ="
    case "$1" in
    hold)
        postconf -c "$PF_CONF" -e "smtpd_data_restrictions = check_client_access static:HOLD" \
            "default_transport = discard:bench" "relay_transport = discard:bench" "relayhost =" \
            "$dest" "$aliases" "$rcpts" ;;
    relay)
        postconf -c "$PF_CONF" -e "smtpd_data_restrictions =" "default_transport = smtp" \
            "relay_transport = smtp" "relayhost = [127.0.0.1]:$SINK_PORT" \
            "$dest" "$aliases" "$rcpts" ;;
    local)
        # local(8) through the instance's own aliases file (root's: it delivers to files
        # as default_privs, nobody; allow_mail_to_files permits aliases by default)
        postconf -c "$PF_CONF" -e "smtpd_data_restrictions =" \
            "default_transport = discard:bench" "relay_transport = discard:bench" "relayhost =" \
            "mydestination = bench.example.test" "alias_maps = hash:$RUN/postfix/aliases" \
            "local_recipient_maps = \$alias_maps" ;;
    esac
}

# The real sendmail, through a scratch copy of bench/peers' scripts (they keep their state
# beside themselves).
SX_DIR="$RUN/sendmail-real"
SX_Q="$SX_DIR/run/sendmail/mqueue"
SX_UP=0
sx() { SM_PORT=$SX_PORT SM_SINK_PORT=$SX_SINK_PORT bash "$SX_DIR/bench-sendmail.sh" "$@" >>"$SX_DIR/script.log" 2>&1; }
sx_setup() {
    mkdir -p "$SX_DIR/run"
    cp "$PEERS/lib.sh" "$PEERS/bench-sendmail.sh" "$PEERS/sendmail-bench.mc" "$SX_DIR/"
    [ -x /root/oracle/pkg/usr/libexec/sendmail/sendmail ] && ln -sfn /root/oracle/pkg "$SX_DIR/run/sm-pkg"
    sx setup || { log "real sendmail setup failed (see $SX_DIR/script.log): no column"; PEER=0; }
}
sx_pid() { head -1 "$SX_DIR/run/sendmail/sendmail.pid" 2>/dev/null || true; }
sx_start() { SX_UP=1; sx start "$1" || die "real sendmail did not start (see $SX_DIR/script.log)"; }
sx_stop() { [ "$SX_UP" = 1 ] || return 0; sx stop || true; SX_UP=0; }
sx_reset() {   # queue | relay
    sx_stop
    find "$SX_Q" -type f -delete 2>/dev/null || true
    sx_start "$1"
}
sx_count() { find "$SX_Q" -name 'qf*' 2>/dev/null | wc -l; }
sx_queued() { find "$SX_Q" -type f 2>/dev/null | wc -l; }

sink_start() {   # smtp-sink on 127.0.0.1:SINK_PORT, the relay cells' next hop
    [ -n "$SINK_PID" ] && return 0
    timeout 3600 smtp-sink -u nobody -m 1024 "127.0.0.1:$SINK_PORT" 1024 </dev/null >>"$RUN/sink.log" 2>&1 &
    SINK_PID=$!
    for _ in $(seq 100); do grep -q "0100007F:$(printf '%04X' "$SINK_PORT") 00000000:0000 0A" /proc/net/tcp && return 0; sleep 0.1; done
    die "smtp-sink does not listen on 127.0.0.1:$SINK_PORT"
}
sink_stop() { [ -n "$SINK_PID" ] || return 0; kill -TERM "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=""; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    sm_stop
    pf_stop
    sx_stop
    sink_stop
    rm -rf "$LOCAL_DIR"   # see local_fresh
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
for p in "$SX_PORT" "$SINK_PORT" "$SX_SINK_PORT"; do port_free "$p" || die "port $p is already in use (set SX_PORT, SINK_PORT, SX_SINK_PORT)"; done
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
# relay: the same, delivering at once (background) to smtp-sink through a smart host
sed 's/^O DeliveryMode=queueonly$/O DeliveryMode=background/' "$RUN/sendmail/bench.cf" > "$RUN/sendmail/relay.cf"
cat >> "$RUN/sendmail/relay.cf" <<EOF
DSrelay:[127.0.0.1]
Mrelay, P=[IPC], F=mDFMuXa8, E=\r\n, L=2040, T=DNS/RFC822/SMTP, A=TCP \$h $SINK_PORT
EOF
# local: bench.example.test is local; two aliases, one to an mbox file, one to a Maildir
mkdir -p "$RUN/local"; chattr +T "$RUN/local" 2>/dev/null || true   # see local_fresh
sed 's/^O DeliveryMode=queueonly$/O DeliveryMode=background/' "$RUN/sendmail/bench.cf" > "$RUN/sendmail/local.cf"
cat >> "$RUN/sendmail/local.cf" <<EOF
Cwbench.example.test
O AliasFile=$RUN/local/aliases
EOF
printf 'mbox: %s\nmaildir: %s/\n' "$LOCAL_DIR/sm/mbox" "$LOCAL_DIR/sm/Maildir" > "$RUN/local/aliases"
"$SM_BIN" -bi -C "$RUN/sendmail/local.cf" >"$RUN/local/newaliases.log" 2>&1 || die "newaliases failed (see $RUN/local/newaliases.log)"
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
EOF
pf_mode hold
postfix -c "$PF_CONF" check >>"$RUN/postfix/start.log" 2>&1 || die "postfix check failed (see $RUN/postfix/start.log)"
pf_start
PF_VERSION=$(postconf -c "$PF_CONF" -h mail_version)
log "postfix $PF_VERSION master pid $(pf_master_pid) on [::1]:$PF_PORT, 127.0.0.1:$PF_PORT (hold)"
SX_VERSION="-"
if [ "$PEER" = 1 ]; then
    sx_setup
    [ "$PEER" = 1 ] && SX_VERSION=$(timeout 10 "$SX_DIR/run/sm-pkg/usr/libexec/sendmail/sendmail" -C "$SX_DIR/run/sendmail/bench.cf" -d0.1 -bt </dev/null 2>/dev/null | awk '/^Version/ {print $2; exit}' || true)
    log "real sendmail ${SX_VERSION:-?} on [::1]:$SX_PORT (column: $([ "$PEER" = 1 ] && echo yes || echo no))"
fi

# --- 5. the ingest cells -------------------------------------------------------------------------
# label|sessions|messages|persistent(1 = -d: msgs/conn = messages/sessions)|family|body bytes
if [ "$SMOKE" = 1 ]; then
    CELLS=("s=20, 10/conn|20|200|1|6|$MSG_LEN")
else
    CELLS=(
        "s=1, 1/conn|1|500|0|6|$MSG_LEN"
        "s=20, 1/conn|20|2000|0|6|$MSG_LEN"
        "s=100, 1/conn|100|4000|0|6|$MSG_LEN"
        "s=1, 100/conn|1|100|1|6|$MSG_LEN"
        "s=20, 100/conn|20|2000|1|6|$MSG_LEN"
        "s=100, 100/conn|100|10000|1|6|$MSG_LEN"
        "s=20, 100/conn, IPv4|20|2000|1|4|$MSG_LEN"
    )
    [ "$BIG" = 1 ] && CELLS+=(
        "s=1, 1/conn, 100 KiB|1|200|0|6|102400"
        "s=20, 50/conn, 100 KiB|20|1000|1|6|102400"
    )
fi

[ -n "${MAX_CELLS:-}" ] && CELLS=("${CELLS[@]:0:$MAX_CELLS}")   # for trying the suite out

# One table row per measurement: "part|cell|unit|sendmail-rs|Postfix|sendmail|sm CPU µs/msg|details"
# (unit msg/s: more is better; KiB or ms: less is better; "-" = not measured).
ROWS=()
SM_CPU_US="-"
SM_TOTAL=0; SM_SHORT=0; FAILED_CELLS=0

# Runs in this shell (not a subshell: it restarts the servers, whose PIDs we keep), and
# leaves "MSGS_PER_S MIN MED MAX ACCEPTED EXPECTED STATUS" in $MEASURED (and for
# sendmail-rs its own CPU time per accepted message, in microseconds, in $SM_CPU_US).
MEASURED=""
measure() {   # server(sm|pf|sx) label s m p fam len
    local server=$1 label=$2 s=$3 m=$4 p=$5 fam=$6 len=$7 host port d="" csv status=ok
    local cpu0=0
    case "$server" in
        sm) port=$SM_PORT; sm_reset; cpu0=$(sm_cpu_ticks) ;;
        pf) port=$PF_PORT; pf_reset ;;
        sx) port=$SX_PORT; sx_reset queue ;;
    esac
    # Dirty pages of the cells before (hundreds of MB) make the kernel write back during
    # the next server's runs (its fdatasyncs then wait for it): start every server clean.
    sync
    if [ "$fam" = 4 ]; then host=127.0.0.1; else host='[::1]'; fi
    [ "$p" = 1 ] && d="-d"
    csv="$RUN/cell-$server-s$s-m$m-p$p-v$fam-l$len.csv"
    if ! hyperfine --style none --runs "$RUNS" --warmup "$WARMUP" --export-csv "$csv" \
        "timeout $SRC_TIMEOUT smtp-source $d -s $s -m $m -l $len -f $FROM -t $TO $host:$port" \
        >"$csv.out" 2>&1; then
        status=FAILED
    fi
    # the message files may still be renamed into place for a moment after the last 250
    local accepted expected=$(( (RUNS + WARMUP) * m ))
    for _ in $(seq 20); do
        case "$server" in sm) accepted=$(sm_count) ;; pf) accepted=$(pf_count) ;; sx) accepted=$(sx_count) ;; esac
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
    IFS='|' read -r label s m p fam len <<<"$cell"
    m=$(( m / DIV ))
    [ "$DIV" = 1 ] || label="$label, msgs ÷$DIV"   # QUICK: "N/conn" reads N/DIV
    log "ingest $label: $m msgs x $((RUNS + WARMUP)) runs, sendmail-rs, Postfix$([ "$PEER" = 1 ] && echo ", sendmail")"
    measure sm "$label" "$s" "$m" "$p" "$fam" "$len"
    read -r sm_rate sm_min sm_med sm_max sm_acc sm_exp sm_st <<<"$MEASURED"
    measure pf "$label" "$s" "$m" "$p" "$fam" "$len"
    read -r pf_rate pf_min pf_med pf_max pf_acc pf_exp pf_st <<<"$MEASURED"
    sx_rate="-" sx_detail=""
    if [ "$PEER" = 1 ]; then
        measure sx "$label" "$s" "$m" "$p" "$fam" "$len"
        read -r sx_rate sx_min sx_med sx_max sx_acc sx_exp sx_st <<<"$MEASURED"
        sx_detail="; sendmail ${sx_min}/${sx_med}/${sx_max}s, $sx_acc/$sx_exp, $sx_st"
    fi
    SM_TOTAL=$((SM_TOTAL + sm_acc))
    [ "$sm_st" = ok ] || { SM_SHORT=1; FAILED_CELLS=$((FAILED_CELLS + 1)); }
    ROWS+=("ingest|$label|msg/s|$sm_rate|$pf_rate|$sx_rate|$SM_CPU_US|wall min/med/max: sendmail-rs ${sm_min}/${sm_med}/${sm_max}s, $sm_acc/$sm_exp queued, $sm_st; Postfix ${pf_min}/${pf_med}/${pf_max}s, $pf_acc/$pf_exp, $pf_st$sx_detail; load $(cut -d' ' -f1 /proc/loadavg)")
    log "  sendmail-rs $sm_rate msg/s ($sm_st, $sm_acc/$sm_exp, ${SM_CPU_US} us CPU/msg)  Postfix $pf_rate ($pf_st)  sendmail $sx_rate"
    [ "$sm_st" = FAILED ] && sed 's/^/    sm: /' "$RUN/cell-sm-s$s-m$m-p$p-v$fam-l$len.csv.out" | tail -5 >&2
done

# --- 6. relay and local: accept, queue, deliver; time until the queue is empty ---------------
# ratio = how many times better sendmail-rs is (msg/s: ours / theirs; KiB, ms: theirs / ours)
ratio() {   # unit ours theirs
    awk -v u="$1" -v a="$2" -v b="$3" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || a + 0 == 0 || b + 0 == 0) { print "-"; exit }
        printf "%.2f", (u == "msg/s" ? a / b : b / a) }'
}
cpu_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }   # all CPUs, jiffies
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
queued() {   # server -> messages (files, for the peers) still in its queue
    case "$1" in sm) sm_count ;; pf) pf_queued ;; sx) sx_queued ;; esac
}
# E2E="MSGS_PER_S ACCEPT_S(median) TOTAL_S(median) DAEMON_CPU_US MACHINE_CPU_US STATUS" over RUNS
# runs of `smtp-source -d -s 20 -m RELAY_MSGS -t RCPT`, each from an empty queue, each
# waiting (at most 300 s) until the queue is empty again.
E2E=""
e2e_measure() {   # server rcpt
    local server=$1 rcpt=$2 port r t0 t1 t2 c0 c1 d0=0 d1=0 status=ok totals="" accepts="" cpu=0 dcpu=0
    case "$server" in sm) port=$SM_PORT ;; pf) port=$PF_PORT ;; sx) port=$SX_PORT ;; esac
    for r in $(seq "$RUNS"); do
        for _ in $(seq 1500); do [ "$(queued "$server")" -eq 0 ] && break; sleep 0.2; done
        # sendmail-rs's relay runs alternate with smtp-sink-alone runs (its ceiling)
        [ "$server" = sm ] && [ "${SINK_BESIDE:-0}" = 1 ] && sink_runs 1 0
        sync   # as in measure(): no writeback left over from before
        c0=$(cpu_busy); [ "$server" = sm ] && d0=$(sm_cpu_ticks); t0=$(now_ms)
        timeout "$SRC_TIMEOUT" smtp-source -d -s 20 -m "$RELAY_MSGS" -l "$MSG_LEN" -f "$FROM" -t "$rcpt" "[::1]:$port" \
            >>"$RUN/e2e-$server.out" 2>&1 || status=FAILED
        t1=$(now_ms)
        # polled every 20 ms (plus the count's own time: mailq ~50 ms) for at most 300 s: a
        # coarser step would weigh on a relay run that lasts a third of a second
        local left=1 until=$(( $(now_ms) + 300000 ))
        while :; do left=$(queued "$server"); [ "$left" -eq 0 ] || [ "$(now_ms)" -ge "$until" ] && break; sleep 0.02; done
        [ "$left" -eq 0 ] || status="STUCK($left)"
        t2=$(now_ms); c1=$(cpu_busy); [ "$server" = sm ] && d1=$(sm_cpu_ticks)
        accepts+="$(( t1 - t0 )) "; totals+="$(( t2 - t0 )) "
        cpu=$(( cpu + c1 - c0 )); dcpu=$(( dcpu + d1 - d0 ))
    done
    E2E=$(awk -v a="$accepts" -v t="$totals" -v n="$RELAY_MSGS" -v runs="$RUNS" -v cpu="$cpu" -v dcpu="$dcpu" \
        -v hz="$(getconf CLK_TCK)" -v sm="$([ "$server" = sm ] && echo 1 || echo 0)" -v st="$status" '
        function med(s,   v, k, i, j, x) { k = split(s, v, " ")
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 < v[i] + 0) { x = v[i]; v[i] = v[j]; v[j] = x }
            return v[int((k + 1) / 2)] / 1000 }
        BEGIN { printf "%.0f %.3f %.3f %s %.0f %s\n", n / med(t), med(a), med(t),
            (sm ? sprintf("%.0f", dcpu / hz * 1e6 / (n * runs)) : "-"), cpu / hz * 1e6 / (n * runs), st }')
}
relay_row() {   # label sm-E2E pf-E2E sx-E2E
    local label=$1 sm=$2 pf=$3 sx=$4 a b c
    read -r a _ _ _ _ _ <<<"$sm"; read -r b _ _ _ _ _ <<<"$pf"; c="-"; [ -n "$sx" ] && read -r c _ _ _ _ _ <<<"$sx"
    local smcpu; read -r _ _ _ smcpu _ _ <<<"$sm"
    ROWS+=("${5:-relay}|$label|msg/s|$a|${b:--}|$c|$smcpu|accept_s/until_empty_s(median)/daemon µs/all-CPU µs per msg/status: sendmail-rs ${sm// //}${pf:+; Postfix ${pf// //}}${sx:+; sendmail ${sx// //}}; load $(cut -d' ' -f1 /proc/loadavg)")
    log "  $label: sendmail-rs [$sm]  Postfix [$pf]  sendmail [$sx]"
}
# smtp-sink's own accept rate: smtp-source straight at it, as the relay cells' sessions (20
# sessions, persistent) but SINK_MSGS messages a run (default 5 x RELAY_MSGS: 2,000 take
# ~0.12 s there, too short to time steadily), after one warm-up run: one run just before
# each of sendmail-rs's RUNS relay runs (alternating with them on this shared machine) and
# RUNS just after them -- the ceiling of any relay through it. Leaves the wall times (ms)
# in SINK_WALLS; sink_summary gives "MSGS_PER_S(median) MIN MAX RUNS".
SINK_WALLS=""
sink_runs() {   # runs warmup
    local r t0 t1
    for r in $(seq $(( $1 + $2 ))); do
        t0=$(now_ms)
        timeout "$SRC_TIMEOUT" smtp-source -d -s 20 -m "$SINK_MSGS" -l "$MSG_LEN" -f "$FROM" -t "$TO" \
            "127.0.0.1:$SINK_PORT" >>"$RUN/e2e-sink.out" 2>&1 || { SINK_WALLS+="FAILED "; continue; }
        t1=$(now_ms)
        [ "$r" -gt "$2" ] && SINK_WALLS+="$(( t1 - t0 )) "
    done
    return 0
}
sink_summary() {
    case "$SINK_WALLS" in *FAILED*|"") echo "- - - 0"; return ;; esac
    awk -v w="$SINK_WALLS" -v n="$SINK_MSGS" 'BEGIN { k = split(w, v, " ")
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] + 0 < v[i] + 0) { x = v[i]; v[i] = v[j]; v[j] = x }
        # median (the mean of the middle two for an even count), slowest, fastest
        m = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
        printf "%.0f %.0f %.0f %d\n", n / (m / 1000), n / (v[k] / 1000), n / (v[1] / 1000), k }'
}
if [ "$RELAY" = 1 ]; then
    log "relay: 20 sessions x $RELAY_MSGS msgs x $RUNS runs -> smtp-sink 127.0.0.1:$SINK_PORT"
    sink_start
    sink_runs 0 1   # warm-up
    SM_CF="$RUN/sendmail/relay.cf"; sm_reset
    SINK_BESIDE=1 e2e_measure sm "$TO"; E_SM=$E2E
    sm_stop; SM_CF="$RUN/sendmail/bench.cf"
    sink_runs "$RUNS" 0
    read -r SINK_RATE sink_min sink_max sink_n <<<"$(sink_summary)"
    log "  smtp-sink alone (smtp-source straight at it, $SINK_MSGS msgs x $sink_n runs): $SINK_RATE msg/s (slowest $sink_min, fastest $sink_max)"
    pf_stop; pf_mode relay; pf_reset
    e2e_measure pf "$TO"; E_PF=$E2E
    pf_stop; pf_mode hold
    E_SX=""
    if [ "$PEER" = 1 ]; then
        sx_reset relay
        e2e_measure sx "$TO"; E_SX=$E2E
        sx_stop
    fi
    relay_row "s=20, $((RELAY_MSGS / 20))/conn, smtp-sink" "$E_SM" "$E_PF" "$E_SX"
    read -r sm_relay _ <<<"$E_SM"
    ROWS+=("relay|smtp-source straight into smtp-sink (no MTA): the ceiling|msg/s|$SINK_RATE|-|-|-|sendmail-rs relay / smtp-sink alone = $(ratio msg/s "$sm_relay" "$SINK_RATE"); smtp-sink alone: s=20, $SINK_MSGS msgs a run, median of $sink_n runs (half alternating with sendmail-rs's relay runs, half after them), slowest $sink_min, fastest $sink_max msg/s; load $(cut -d' ' -f1 /proc/loadavg)")
    log "  sendmail-rs relay / smtp-sink alone: $(ratio msg/s "$sm_relay" "$SINK_RATE")"
    case "$E_SM" in *" ok") ;; *) SM_SHORT=1; FAILED_CELLS=$((FAILED_CELLS + 1)) ;; esac
fi
# Local delivery targets: DIR/mbox (an mbox file) and DIR/Maildir/ for each server.
# The targets of each run live in a directory of its own (LOCAL_DIR, below a directory
# with chattr +T, where it can be set, so the file system places it as a top-level one:
# in a block group chosen from its unique name, not beside the last run's), and are
# deleted only when the run ends. On ext4 without a journal (this machine's root) the
# inode allocator skips every inode of the block group freed in the last 60 s (300 s
# while its inode-table block is dirty), looking each one up, for every new file:
# deleting the last run's thousands of Maildir files a minute before the cells (rm -rf
# "$RUN" at the start) and recreating the same directories beside them made every new
# file of the Maildir cell pay that scan (perf: 38 % of sendmail-rs's CPU in
# find_inode_bit/recently_deleted; daemon 870-1,005 us per message against 405-510
# without, mbox 455-640) -- a cost of the benchmark's own cleanup, charged to whichever
# server's directory shares a block group with the deleted files. Within a run only the
# mbox cell's target (one file, empty Maildir directories) is removed.
local_fresh() {   # dir owner: empty targets, the directory owned by the delivering user
    rm -rf "$1"; mkdir -p "$1/Maildir/tmp" "$1/Maildir/new" "$1/Maildir/cur"; : > "$1/mbox"
    chown -R "$2" "$1"
}
local_check() {   # dir target: E2E gets SHORT(got/want) unless every message arrived
    local got want=$(( RUNS * RELAY_MSGS ))
    if [ "$2" = mbox ]; then got=$(grep -c '^From ' "$1/mbox" || true)
    else got=$(find "$1/Maildir/new" -type f | wc -l); fi
    [ "$got" -eq "$want" ] || E2E="${E2E% *} SHORT($got/$want)"
}
if [ "$LOCAL" = 1 ]; then
    log "local: 20 sessions x $RELAY_MSGS msgs x $RUNS runs -> aliases -> mbox, Maildir"
    printf 'mbox: %s\nmaildir: %s/\n' "$LOCAL_DIR/pf/mbox" "$LOCAL_DIR/pf/Maildir" > "$RUN/postfix/aliases"
    postalias -c "$PF_CONF" "hash:$RUN/postfix/aliases" || die "postalias failed"
    SX_FILE_OWNER=${SX_FILE_OWNER:-1:0}   # its DefaultUser: its log says ctladdr=<mbox@...> (1/0)
    if [ "$PEER" = 1 ]; then
        # sx start runs -bi on this file
        if [ -f "$SX_DIR/run/sendmail/aliases" ]; then sed -i '/^mbox:/d' "$SX_DIR/run/sendmail/aliases"; fi
        printf 'mbox: %s\n' "$LOCAL_DIR/sx/mbox" >> "$SX_DIR/run/sendmail/aliases"
    fi
    for target in mbox maildir; do
        SM_CF="$RUN/sendmail/local.cf"
        # sendmail-rs writes an alias's /file as DefaultUser (mailnull, else 1:1), as
        # sendmail's mailfile() does
        local_fresh "$LOCAL_DIR/sm" "${SM_FILE_OWNER:-$(id -u mailnull 2>/dev/null || echo 1):$(id -g mailnull 2>/dev/null || echo 1)}"
        sm_reset
        e2e_measure sm "$target@bench.example.test"; local_check "$LOCAL_DIR/sm" "$target"; E_SM=$E2E
        sm_stop; SM_CF="$RUN/sendmail/bench.cf"
        local_fresh "$LOCAL_DIR/pf" nobody
        pf_stop; pf_mode local; pf_reset
        e2e_measure pf "$target@bench.example.test"; local_check "$LOCAL_DIR/pf" "$target"; E_PF=$E2E
        pf_stop; pf_mode hold
        E_SX=""
        if [ "$PEER" = 1 ] && [ "$target" = mbox ]; then
            # the real sendmail's *file* mailer (it has no Maildir delivery of its own);
            # for an alias in root's aliases file it writes as DefaultUser
            local_fresh "$LOCAL_DIR/sx" "$SX_FILE_OWNER"
            sx_reset relay
            e2e_measure sx "$target@bench.example.test"; local_check "$LOCAL_DIR/sx" "$target"; E_SX=$E2E
            sx_stop
        fi
        relay_row "s=20, $((RELAY_MSGS / 20))/conn, $target" "$E_SM" "$E_PF" "$E_SX" local
        case "$E_SM" in *" ok") ;; *) SM_SHORT=1; FAILED_CELLS=$((FAILED_CELLS + 1)) ;; esac
    done
fi

# --- 7. latency and idle memory -------------------------------------------------------------
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$2"; }   # key line -> value
LAT_SM="" LAT_PF="" LAT_SX="" IDLE_LINES=""
if [ "$LATENCY" = 1 ]; then
    log "latency: 20 sessions x 50 msgs, final '.' -> 250"
    sm_reset; LAT_SM=$(timeout 330 python3 "$BENCH/latency.py" ::1 "$SM_PORT" -s 20 -m 50 -l "$MSG_LEN" || true)
    pf_reset; LAT_PF=$(timeout 330 python3 "$BENCH/latency.py" ::1 "$PF_PORT" -s 20 -m 50 -l "$MSG_LEN" || true)
    if [ "$PEER" = 1 ]; then sx_reset queue; LAT_SX=$(timeout 330 python3 "$BENCH/latency.py" ::1 "$SX_PORT" -s 20 -m 50 -l "$MSG_LEN" || true); sx_stop; fi
    for q in p50 p99; do
        ROWS+=("latency|s=20, 50/conn, '.' -> 250, $q|ms|$(field ${q}_ms "$LAT_SM")|$(field ${q}_ms "$LAT_PF")|$(field ${q}_ms "$LAT_SX" | grep . || echo -)|-|latency.py")
    done
    log "  sendmail-rs: $LAT_SM"; log "  Postfix:     $LAT_PF"; log "  sendmail:    $LAT_SX"
fi
idle_row() {   # n sm-line pf-line sx-line
    local pf="-" sx="-"
    [ -n "$3" ] && pf=$(field per_conn_pss_kib "$3")
    [ -n "$4" ] && sx=$(field per_conn_pss_kib "$4")
    ROWS+=("idle|$1 sessions (banner + EHLO), PSS per session|KiB|$(field per_conn_pss_kib "$2")|${pf:--}|${sx:--}|-|idle.py: sendmail-rs up=$(field up "$2"), procs $(sed -n 's/.* procs=\([0-9>-]*\).*/\1/p' <<<"$2")")
    IDLE_LINES+="sendmail-rs $2"$'\n'"${3:+Postfix     $3$'\n'}${4:+sendmail    $4$'\n'}"
}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for n in $IDLE_CONNS; do
    [ "$n" -gt 0 ] || continue
    log "memory with $n idle connections (banner + EHLO)"
    sm_reset; sleep 1
    i_sm=$(timeout 600 python3 "$BENCH/idle.py" ::1 "$SM_PORT" "$SM_PID" -n "$n" || true)
    i_pf="" i_sx=""
    # the peers fork one process per session: measured at IDLE_PEER_CONNS only
    if [ "$n" -le "$IDLE_PEER_CONNS" ]; then
        pf_reset; sleep 1
        i_pf=$(timeout 600 python3 "$BENCH/idle.py" ::1 "$PF_PORT" "$(pf_master_pid)" -n "$n" || true)
        if [ "$PEER" = 1 ]; then
            sx_reset queue; sleep 1
            i_sx=$(timeout 600 python3 "$BENCH/idle.py" ::1 "$SX_PORT" "$(sx_pid)" -n "$n" || true)
            sx_stop
        fi
    fi
    idle_row "$n" "$i_sm" "$i_pf" "$i_sx"
    log "  sendmail-rs: $i_sm"; log "  Postfix:     $i_pf"; log "  sendmail:    $i_sx"
done

# --- 8. the table ------------------------------------------------------------------------------
sm_stop
pf_stop
sx_stop
sink_stop
FSYNC_END=$(fsync_probe)
SMLOG="$RUN/sendmail/maillog"
LOG_SUMMARY=$( {
    echo "lines: $(wc -l < "$SMLOG" 2>/dev/null || echo 0), from=: $(grep -c ' from=' "$SMLOG" 2>/dev/null || true)"
    # every other kind of line, with numbers and queue ids folded, most frequent first
    grep -v -e ' from=' -e 'starting daemon' "$SMLOG" 2>/dev/null |
        sed -E 's/^[A-Z][a-z]{2} +[0-9]+ [0-9:]+ [^ ]+ //; s/\[[0-9]+\]//; s/[0-9A-Za-z]{14,}: //; s/[0-9]+/N/g' |
        sort | uniq -c | sort -rn | head -8
} )
STDERR_LINES=$(wc -l < "$RUN/sendmail/stderr.log")

MACHINE="nproc $(nproc), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo), load average $START_LOAD at the start and $(cut -d' ' -f1-3 /proc/loadavg) at the end, fs ${FSTYPE:-?}"
REV=$(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
TABLE=$( {
    echo "| part | cell | unit | sendmail-rs | Postfix | sendmail 8.17 | × Postfix | × sendmail | sendmail-rs CPU µs/msg | details |"
    echo "|---|---|---|---:|---:|---:|---:|---:|---:|---|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r part cell unit a b c cpu det <<<"$r"
        echo "| $part | $cell | $unit | $a | $b | $c | $(ratio "$unit" "$a" "$b") | $(ratio "$unit" "$a" "$c") | $cpu | $det |"
    done
} )
REPORT=$(cat <<EOF
## $(date -u '+%F %H:%M UTC') — suite, sendmail-rs $REV vs Postfix $PF_VERSION and sendmail ${SX_VERSION:--}$([ "$SMOKE" = 1 ] && echo " (SMOKE)")

Machine: $MACHINE.
Command: \`$([ "$SMOKE" = 1 ] && echo "SMOKE=1 ")$([ "${QUICK:-0}" = 1 ] && echo "QUICK=1 (reduced: one run, a fifth of the messages) ")RUNS=$RUNS bash bench/ingest.sh\` — smtp-source over [::1] (one IPv4 cell), $MSG_LEN-byte bodies unless the cell says 100 KiB, median of $RUNS runs (ingest: after $WARMUP warm-up), each cell starting from an empty queue; msg/s = messages / median wall time. Ratios "× Postfix" / "× sendmail" = how many times better sendmail-rs is in the same run (msg/s: ours/theirs; KiB and ms: theirs/ours). **ingest**: sendmail-rs \`-bD\` queueonly, LogLevel=9, Listen=1024, fdatasync group commit before 250; Postfix private instance in hold mode (cleanup fsyncs the queue file before 250, no delivery); sendmail 8.17 DeliveryMode=queue, SuperSafe (bench/peers/bench-sendmail.sh). **relay**: 20 sessions × $RELAY_MSGS messages per run, delivered over SMTP to smtp-sink; msg/s = messages / time until the queue is empty again; sendmail-rs DeliveryMode=background with smart host \`DSrelay:[127.0.0.1]\`, Postfix relayhost, sendmail SMART_HOST; "daemon µs" = utime+stime of the sendmail-rs process per message (/proc), "all-CPU µs" = every CPU's busy time per message, client and sink included. **local**: 20 sessions × $RELAY_MSGS messages per run to an alias for an mbox file / a Maildir, msg/s until the queue is empty; sendmail-rs DeliveryMode=background; Postfix local(8) (mydestination, alias_maps hash:, writing as default_privs); sendmail's *file* mailer as its DefaultUser (no Maildir delivery of its own: "-"). **idle**: PSS per idle session of the server's process tree.

$TABLE

Disk fsync ceiling, one writer, 4 KiB (\`fsync_probe\`), before the servers started and after the last cell:
\`\`\`
$FSYNC
--
$FSYNC_END
\`\`\`
EOF
)
if [ -n "$LAT_SM$LAT_PF$LAT_SX" ]; then
    REPORT+=$'\n\n'"Latency, final \".\" to 250, 20 sessions x 50 messages (\`latency.py\`):"$'\n```\n'"sendmail-rs $LAT_SM"$'\n'"Postfix     $LAT_PF"$'\n'"sendmail    $LAT_SX"$'\n```'
fi
if [ -n "$IDLE_LINES" ]; then
    REPORT+=$'\n\n'"Memory holding idle connections (banner + EHLO; process tree from /proc/PID/smaps_rollup, \`idle.py\`):"$'\n```\n'"${IDLE_LINES%$'\n'}"$'\n```'
fi
REPORT+=$'\n\n'"sendmail-rs LogFile over the whole run (other lines folded, numbers as N), stderr lines: $STDERR_LINES:"$'\n```\n'"$LOG_SUMMARY"$'\n```\n'

echo
echo "$REPORT"
if [ "$SMOKE" != 1 ]; then
    [ -f "$RESULTS_FILE" ] || printf '# Ingest benchmark results (bench/ingest.sh)\n\nNewest last. The machine is shared: expect ±15 %%.\n' > "$RESULTS_FILE"
    printf '\n%s\n' "$REPORT" >> "$RESULTS_FILE"
    log "appended to $RESULTS_FILE"
    # The newest table as a picture beside it (msg/s against sessions; KiB per idle session).
    python3 "$BENCH/chart.py" "$RESULTS_FILE" "$(dirname "$RESULTS_FILE")/ingest.svg" >&2 \
        || log "chart.py could not draw $RESULTS_FILE"
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

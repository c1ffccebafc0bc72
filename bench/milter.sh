#!/usr/bin/env bash
# milter.sh -- ingest with a mail filter: sendmail-rs and Postfix, each in front of the same
# opendkim (signing every message), in the same run, beside the same two without a filter, and
# the filter's own ceiling: the same opendkim fed by our milter client alone.
#
#   nice -n 19 bash bench/milter.sh          # ~5-8 min on 2 cores: a table on stdout,
#                                            # appended to bench/RESULTS.md
#   SMOKE=1 bash bench/milter.sh             # one short run of each cell; nothing written
#
# What runs, all on loopback, everything stopped by PID on exit:
#  * two opendkim (Debian's), Mode s, on inet:ODK_PORT@127.0.0.1 (a fresh 2048-bit RSA key)
#    and inet:ODK_ED_PORT@127.0.0.1 (an ed25519 key: the same filter and the same exchange
#    per message, without the RSA signature that is most of opendkim's CPU);
#  * sendmail-rs (cargo build --release) -bD, DeliveryMode=queueonly, LogLevel=9, on
#    [::1]:SM_PORT, with `Xdkim, S=inet:PORT@127.0.0.1, F=T` / `InputMailFilters=dkim`
#    (one cf per filter) or none;
#  * a private Postfix instance (bench/run/milter/postfix; the system's /etc/postfix is not
#    touched) in hold mode (cleanup fsyncs the queue file before 250, no delivery) on
#    [::1]:PF_PORT, with `smtpd_milters = inet:127.0.0.1:PORT` (milter_protocol 6,
#    milter_default_action tempfail) or none;
#  * the ceiling: examples/milter_feed (our milter::engine with no SMTP and no queue) feeding
#    the same opendkim with as many sessions at once and as many messages per session as the
#    cell: the rate the filter itself sustains on this machine. No MTA in front of this filter
#    can pass more; ceiling / Postfix-with-the-filter is the best ratio any MTA could show.
# Two kinds of cell, each with every filter: smtp-source -d -s SESSIONS -m MSGS (sessions
# kept: each of the SESSIONS connections sends messages until MSGS are sent, MSGS/SESSIONS per
# connection; smtp-source has no per-connection count) and smtp-source -s SESSIONS -m MSGS
# without -d (one message per connection, as most inbound mail comes; Postfix opens and
# negotiates a filter connection per SMTP session, sendmail-rs keeps them).
# From writer@example.test, 5 KiB bodies, from an empty queue; RUNS runs, the median wall time;
# every message must be queued, and a queued message of each filtered cell must carry a
# DKIM-Signature, else the cell is marked FAILED/UNSIGNED. "CPU us/msg": the sendmail-rs
# daemon's and the filter's utime+stime (/proc) per message in the sendmail-rs cell.
#
# Environment: RUNS (3), MSGS (2000), SESSIONS (20), SM_PORT (10050), PF_PORT (10051),
# ODK_PORT (10052), ODK_ED_PORT (10053), SRC_TIMEOUT (300 s per smtp-source run),
# NO_BUILD (0), SMOKE (0).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH/.." && pwd)
RUN="$BENCH/run/milter"
SMOKE=${SMOKE:-0}
RUNS=${RUNS:-3}
MSGS=${MSGS:-2000}
SESSIONS=${SESSIONS:-20}
SM_PORT=${SM_PORT:-10050}
PF_PORT=${PF_PORT:-10051}
ODK_PORT=${ODK_PORT:-10052}
ODK_ED_PORT=${ODK_ED_PORT:-10053}
SRC_TIMEOUT=${SRC_TIMEOUT:-300}
MSG_LEN=5120
FROM=writer@example.test
TO=reader@remote.example.test
if [ "$SMOKE" = 1 ]; then RUNS=1; MSGS=200; fi

log() { printf '%s milter.sh: %s\n' "$(date +%T)" "$*" >&2; }
die() { log "$*"; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (it starts a private Postfix)"
[ "$RUNS" -ge 1 ] && [ "$RUNS" -le 9 ] || die "RUNS must be 1..9"
[ "$MSGS" -le 20000 ] || die "MSGS must be <= 20000"
for c in opendkim opendkim-genkey openssl postfix postconf smtp-source cargo timeout; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install opendkim opendkim-tools postfix)"
done

SM_PID=""; ODK_PID=""; ODK_ED_PID=""
PF_CONF="$RUN/postfix/etc"; PF_SPOOL="$RUN/postfix/spool"
pf_master_pid() { { tr -d ' ' < "$PF_SPOOL/pid/master.pid"; } 2>/dev/null || true; }
listening() { ss -Hltn "sport = :$1" | grep -q LISTEN; }
wait_listening() { for _ in $(seq 150); do listening "$1" && return 0; sleep 0.1; done; die "$2 does not listen on port $1"; }

sm_stop() {
    [ -n "$SM_PID" ] || return 0
    kill -TERM "$SM_PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$SM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SM_PID" 2>/dev/null && kill -KILL "$SM_PID" 2>/dev/null || true
    wait "$SM_PID" 2>/dev/null || true
    SM_PID=""
}
sm_start() {   # cf
    rm -rf "$RUN/sendmail/queue"; mkdir -p "$RUN/sendmail/queue"
    "$SM_BIN" -bD -C "$1" </dev/null >>"$RUN/sendmail/stderr.log" 2>&1 &
    SM_PID=$!
    wait_listening "$SM_PORT" "sendmail-rs"
}
sm_count() { "$SM_BIN" -bp -C "$RUN/sendmail/plain.cf" 2>/dev/null | awk '/Total requests:/ {n = $NF} END {print n + 0}'; }
sm_signed() { grep -rlq "DKIM-Signature:" "$RUN/sendmail/queue"; }

pf_stop() {
    local pid; pid=$(pf_master_pid)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    postfix -c "$PF_CONF" stop >>"$RUN/postfix/start.log" 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}
pf_start() {   # milters: "" or the smtpd_milters value
    rm -rf "${PF_SPOOL:?}/hold" "$PF_SPOOL/incoming" "$PF_SPOOL/active" "$PF_SPOOL/deferred"
    postconf -c "$PF_CONF" -e "smtpd_milters = $1"
    postfix -c "$PF_CONF" start >>"$RUN/postfix/start.log" 2>&1 || die "postfix start failed (see $RUN/postfix/start.log)"
    wait_listening "$PF_PORT" "postfix"
}
pf_count() { find "$PF_SPOOL/hold" "$PF_SPOOL/incoming" "$PF_SPOOL/active" -type f 2>/dev/null | wc -l; }
pf_signed() {
    local f; f=$(find "$PF_SPOOL/hold" -type f 2>/dev/null | head -1)
    # grep reads to the end: with -q it may exit first, postcat then dies of SIGPIPE and
    # pipefail calls a signed message UNSIGNED.
    [ -n "$f" ] && postcat -c "$PF_CONF" -q "$(basename "$f")" 2>/dev/null | grep "DKIM-Signature:" >/dev/null
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    sm_stop; pf_stop
    local p
    for p in "$ODK_PID" "$ODK_ED_PID"; do
        [ -n "$p" ] && { kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; }
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in "$SM_PORT" "$PF_PORT" "$ODK_PORT" "$ODK_ED_PORT"; do listening "$p" && die "port $p is in use"; done
rm -rf "$RUN"; mkdir -p "$RUN/sendmail" "$RUN/postfix" "$RUN/odk"
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet --bin sendmail --example milter_feed) || die "cargo build --release failed"
fi
SM_BIN="$REPO/target/release/sendmail"
FEED_BIN="$REPO/target/release/examples/milter_feed"
[ -x "$FEED_BIN" ] || die "$FEED_BIN not built (cargo build --release --example milter_feed)"

# --- opendkim: RSA-2048 and ed25519 -----------------------------------------------------------
opendkim-genkey -D "$RUN/odk" -d example.test -s bench
openssl genpkey -algorithm ed25519 -out "$RUN/odk/ed.private" 2>/dev/null
odk_start() {   # name port keyfile [extra line]; the PID in $ODK_STARTED
    cat > "$RUN/odk/$1.conf" <<EOF
Syslog no
Domain example.test
Selector bench
KeyFile $3
Socket inet:$2@127.0.0.1
Mode s
Canonicalization relaxed/simple
InternalHosts 127.0.0.1,::1
RequireSafeKeys false
UserID root
PidFile $RUN/odk/$1.pid
${4:-}
EOF
    opendkim -f -x "$RUN/odk/$1.conf" </dev/null >"$RUN/odk/$1.stderr.log" 2>&1 &
    ODK_STARTED=$!
    for _ in $(seq 100); do listening "$2" && return 0; sleep 0.1; done
    die "opendkim ($1) does not listen (see $RUN/odk/$1.stderr.log)"
}
odk_start rsa "$ODK_PORT" "$RUN/odk/bench.private"; ODK_PID=$ODK_STARTED
odk_start ed "$ODK_ED_PORT" "$RUN/odk/ed.private" "SignatureAlgorithm ed25519-sha256"; ODK_ED_PID=$ODK_STARTED

# --- sendmail-rs: the same cf with and without the filter -----------------------------------
cat > "$RUN/sendmail/plain.cf" <<EOF
V10/Berkeley
Djbench.example.test
O DaemonPortOptions=Name=MTA-v6, Family=inet6, Port=$SM_PORT, Addr=::1, Listen=1024
O QueueDirectory=$RUN/sendmail/queue
O PidFile=$RUN/sendmail/sendmail.pid
O LogFile=$RUN/sendmail/maillog
O LogLevel=9
O DeliveryMode=queueonly
EOF
for f in rsa:$ODK_PORT ed:$ODK_ED_PORT; do
    cp "$RUN/sendmail/plain.cf" "$RUN/sendmail/${f%%:*}.cf"
    cat >> "$RUN/sendmail/${f%%:*}.cf" <<EOF
O InputMailFilters=dkim
O Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}
O Milter.macros.envfrom=i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}
Xdkim, S=inet:${f#*:}@127.0.0.1, F=T, T=S:4m;R:4m;E:10m
EOF
done

# --- Postfix, hold mode ---------------------------------------------------------------------
mkdir -p "$PF_CONF" "$PF_SPOOL" "$RUN/postfix/data"
chown postfix:postfix "$RUN/postfix/data"
sed -e 's/^\([a-z]*[ ]*\(unix\|inet\|unix-dgram\)[ ]*[-ny][ ]*[-ny][ ]*\)y/\1n/' \
    -e "s/^smtp      inet  n       -       n       -       -       smtpd/$PF_PORT     inet  n       -       n       -       250     smtpd/" \
    /usr/share/postfix/master.cf.dist > "$PF_CONF/master.cf"
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
syslog_name = postfix-milter-bench
myhostname = bench.example.test
mydomain = example.test
myorigin = example.test
mydestination =
inet_interfaces = [::1]
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
smtpd_data_restrictions = check_client_access static:HOLD
maillog_file = $RUN/postfix/postfix.log
maillog_file_prefixes = $RUN
default_process_limit = 250
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
milter_protocol = 6
milter_default_action = tempfail
biff = no
EOF
postfix -c "$PF_CONF" check >>"$RUN/postfix/start.log" 2>&1 || die "postfix check failed (see $RUN/postfix/start.log)"

# --- the cells ------------------------------------------------------------------------------
filter_port() { case $1 in rsa) echo "$ODK_PORT" ;; ed) echo "$ODK_ED_PORT" ;; esac; }
filter_pid() { case $1 in rsa) echo "$ODK_PID" ;; ed) echo "$ODK_ED_PID" ;; esac; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# Runs in this shell (it starts and stops the servers, whose PIDs it keeps) and leaves
# "msg/s accepted/expected status sm_cpu_us filter_cpu_us load" in $MEASURED.
MEASURED=""
measure() {   # server(sm|pf) filter(none|rsa|ed) keep(1: -d, 0: a message per connection)
    local server=$1 filter=$2 keep=$3 times=() status=ok accepted expected=$MSGS
    local r t0 t1 c0 c1 f0 f1 smcpu=0 fcpu=0 fpid="" dflag=""
    [ "$keep" = 1 ] && dflag=-d
    [ "$filter" != none ] && fpid=$(filter_pid "$filter")
    local hz; hz=$(getconf CLK_TCK)
    for r in $(seq "$RUNS"); do
        if [ "$server" = sm ]; then
            sm_stop
            if [ "$filter" = none ]; then sm_start "$RUN/sendmail/plain.cf"; else sm_start "$RUN/sendmail/$filter.cf"; fi
        else
            pf_stop
            if [ "$filter" = none ]; then pf_start ""; else pf_start "inet:127.0.0.1:$(filter_port "$filter")"; fi
        fi
        sync
        local port=$SM_PORT; [ "$server" = pf ] && port=$PF_PORT
        c0=0; [ "$server" = sm ] && c0=$(cpu_ticks "$SM_PID")
        f0=0; [ -n "$fpid" ] && f0=$(cpu_ticks "$fpid")
        t0=$(date +%s.%N)
        # shellcheck disable=SC2086  # dflag is empty or -d
        timeout "$SRC_TIMEOUT" smtp-source $dflag -s "$SESSIONS" -m "$MSGS" -l "$MSG_LEN" \
            -f "$FROM" -t "$TO" "[::1]:$port" >>"$RUN/source.log" 2>&1 || status=FAILED
        t1=$(date +%s.%N)
        c1=0; [ "$server" = sm ] && c1=$(cpu_ticks "$SM_PID")
        f1=0; [ -n "$fpid" ] && f1=$(cpu_ticks "$fpid")
        smcpu=$(( (c1 - c0) * 1000000 / hz / MSGS )); fcpu=$(( (f1 - f0) * 1000000 / hz / MSGS ))
        times+=("$(echo "$t1 - $t0" | bc -l)")
        for _ in $(seq 50); do
            if [ "$server" = sm ]; then accepted=$(sm_count); else accepted=$(pf_count); fi
            [ "$accepted" -ge "$expected" ] && break
            sleep 0.1
        done
        [ "$accepted" -ge "$expected" ] || status=FAILED
        if [ "$filter" != none ]; then
            if [ "$server" = sm ]; then sm_signed || status=UNSIGNED; else pf_signed || status=UNSIGNED; fi
        fi
    done
    local med
    med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    MEASURED=$(printf '%.0f %s/%s %s %s %s %s' "$(echo "$MSGS / $med" | bc -l)" "$accepted" "$expected" "$status" "$smcpu" "$fcpu" "$(load1)")
}
# The filter alone: milter_feed with the cell's sessions and messages per session; leaves
# "msg/s status filter_cpu_us feed_cpu_us" in $MEASURED (median of RUNS).
measure_feed() {   # filter per_session
    local filter=$1 per=$2 rates=() status=ok out f0 f1 fcpu=0 feedcpu=0 fpid hz
    fpid=$(filter_pid "$filter"); hz=$(getconf CLK_TCK)
    for _ in $(seq "$RUNS"); do
        f0=$(cpu_ticks "$fpid")
        if out=$(timeout "$SRC_TIMEOUT" "$FEED_BIN" "inet:$(filter_port "$filter")@127.0.0.1" \
            "$SESSIONS" "$MSGS" "$per" "$MSG_LEN" 2>>"$RUN/feed.log"); then
            read -r _ _ rate feedcpu accepted signed <<<"$out"
            [ "$accepted" = "$MSGS" ] && [ "$signed" = "$MSGS" ] || status=UNSIGNED
            rates+=("$rate")
        else
            status=FAILED; rates+=(0)
        fi
        f1=$(cpu_ticks "$fpid"); fcpu=$(( (f1 - f0) * 1000000 / hz / MSGS ))
    done
    MEASURED="$(printf '%s\n' "${rates[@]}" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}') $status $fcpu $feedcpu"
}

ratio() { echo "scale=2; $1 / $2" | bc -l; }
log "sendmail-rs $(cd "$REPO" && git rev-parse --short HEAD), postfix $(postconf -c "$PF_CONF" -h mail_version), opendkim $(opendkim -V 2>&1 | awk 'NR == 1 {print $NF}')"
log "each cell: $RUNS run(s) of smtp-source [-d] -s $SESSIONS -m $MSGS, $MSG_LEN-byte bodies"
ROWS=()
ALL_OK=1
for keep in 1 0; do
    if [ "$keep" = 1 ]; then per=$(( (MSGS + SESSIONS - 1) / SESSIONS )); kind="-d: $per per connection"
    else per=1; kind="1 per connection"; fi
    measure sm none "$keep"; read -r SMN _ SMNS SMNC _ LD <<<"$MEASURED"
    log "[$kind] sendmail-rs, no filter: $SMN msg/s ($SMNS, ${SMNC} us/msg CPU, load $LD)"
    measure pf none "$keep"; read -r PFN _ PFNS _ _ LD2 <<<"$MEASURED"
    log "[$kind] Postfix, no filter: $PFN msg/s ($PFNS, load $LD2)"
    [ "$SMNS" = ok ] && [ "$PFNS" = ok ] || ALL_OK=0
    plain=$(ratio "$SMN" "$PFN")
    ROWS+=("| $kind | no filter | $SMN ($SMNS) | $PFN ($PFNS) | **$plain** | - | - | $SMNC / - | $LD, $LD2 |")
    for filter in rsa ed; do
        name="opendkim RSA-2048"; [ "$filter" = ed ] && name="opendkim ed25519"
        measure sm "$filter" "$keep"; read -r SMF _ SMFS SMFC SMFF LD <<<"$MEASURED"
        log "[$kind] sendmail-rs + $name: $SMF msg/s ($SMFS, ${SMFC}/${SMFF} us/msg CPU ours/filter, load $LD)"
        measure pf "$filter" "$keep"; read -r PFF _ PFFS _ PFFF LD2 <<<"$MEASURED"
        log "[$kind] Postfix + $name: $PFF msg/s ($PFFS, filter ${PFFF} us/msg CPU, load $LD2)"
        measure_feed "$filter" "$per"; read -r CEIL CEILS CEILF CEILC <<<"$MEASURED"
        log "[$kind] $name alone (milter_feed, $SESSIONS sessions, $per per session): $CEIL msg/s ($CEILS, filter ${CEILF} us/msg, feed ${CEILC} us/msg)"
        [ "$SMFS" = ok ] && [ "$PFFS" = ok ] && [ "$CEILS" = ok ] || ALL_OK=0
        ROWS+=("| $kind | $name | $SMF ($SMFS) | $PFF ($PFFS) | **$(ratio "$SMF" "$PFF")** (no filter: $plain) | $CEIL ($CEILS) | $(ratio "$CEIL" "$PFF") | $SMFC / $SMFF | $LD, $LD2, $(load1) |")
    done
done
sm_stop; pf_stop

TABLE=$(
    echo "| s=$SESSIONS, -m $MSGS, 5 KiB | filter | sendmail-rs msg/s | Postfix msg/s | × Postfix | filter alone (ceiling) msg/s | ceiling / Postfix: the best any MTA could show | CPU µs/msg: sendmail-rs / filter | load (sm, pf, ceiling) |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
)
echo "$TABLE"
if [ "$SMOKE" != 1 ]; then
    {
        echo
        echo "## milter ingest ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
        echo
        echo "Command: \`RUNS=$RUNS MSGS=$MSGS nice -n 19 bash bench/milter.sh\` — median of $RUNS runs per cell, each from an empty queue; the same opendkim (Mode s; RSA-2048, or ed25519: the same exchange without the RSA cost) behind both servers in the same run; sendmail-rs queueonly, Postfix hold. The ceiling: examples/milter_feed feeding that opendkim alone (no SMTP, no queue) with the cell's sessions and messages per session. When ceiling / Postfix is below the unfiltered ratio, no MTA in front of that filter could keep the unfiltered lead on this machine."
        echo
        echo "$TABLE"
    } >> "$BENCH/RESULTS.md"
fi
[ "$ALL_OK" = 1 ] || exit 1

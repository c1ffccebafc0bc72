#!/usr/bin/env bash
# milter.sh -- ingest with a mail filter: sendmail-rs and Postfix, each in front of the same
# opendkim (signing every message), in the same run, beside the same two without a filter.
#
#   nice -n 10 bash bench/milter.sh          # ~3-6 min on 2 cores: a table on stdout,
#                                            # appended to bench/RESULTS.md
#   SMOKE=1 bash bench/milter.sh             # one short run of each cell; nothing written
#
# What runs, all on loopback, everything stopped by PID on exit:
#  * one opendkim (Debian's), Mode s, on inet:ODK_PORT@127.0.0.1, a fresh 2048-bit key for
#    example.test: both servers sign through it;
#  * sendmail-rs (cargo build --release) -bD, DeliveryMode=queueonly, LogLevel=9, on
#    [::1]:SM_PORT, with `Xdkim, S=inet:ODK_PORT@127.0.0.1, F=T` / `InputMailFilters=dkim`
#    in one instance and none in the other;
#  * a private Postfix instance (bench/run/milter/postfix; the system's /etc/postfix is not
#    touched) in hold mode (cleanup fsyncs the queue file before 250, no delivery) on
#    [::1]:PF_PORT, with `smtpd_milters = inet:127.0.0.1:ODK_PORT` (milter_protocol 6,
#    milter_default_action tempfail) in one configuration and none in the other.
# Each cell: smtp-source -d -s SESSIONS -m MSGS (10 messages per connection), From
# writer@example.test, 5 KiB bodies, from an empty queue; RUNS runs, the median wall time;
# every message must be queued, and a queued message of each filtered cell must carry a
# DKIM-Signature, else the cell is marked FAILED.
#
# Environment: RUNS (3), MSGS (2000), SESSIONS (20), SM_PORT (10050), PF_PORT (10051),
# ODK_PORT (10052), SRC_TIMEOUT (300 s per smtp-source run), NO_BUILD (0), SMOKE (0).
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
for c in opendkim opendkim-genkey postfix postconf smtp-source cargo timeout; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install opendkim opendkim-tools postfix)"
done

SM_PID=""; ODK_PID=""
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
    [ -n "$ODK_PID" ] && { kill -TERM "$ODK_PID" 2>/dev/null || true; wait "$ODK_PID" 2>/dev/null || true; }
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for p in "$SM_PORT" "$PF_PORT" "$ODK_PORT"; do listening "$p" && die "port $p is in use"; done
rm -rf "$RUN"; mkdir -p "$RUN/sendmail" "$RUN/postfix" "$RUN/odk"
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi
SM_BIN="$REPO/target/release/sendmail"

# --- opendkim -------------------------------------------------------------------------------
opendkim-genkey -D "$RUN/odk" -d example.test -s bench
cat > "$RUN/odk/opendkim.conf" <<EOF
Syslog no
Domain example.test
Selector bench
KeyFile $RUN/odk/bench.private
Socket inet:$ODK_PORT@127.0.0.1
Mode s
Canonicalization relaxed/simple
InternalHosts 127.0.0.1,::1
RequireSafeKeys false
UserID root
PidFile $RUN/odk/opendkim.pid
EOF
opendkim -f -x "$RUN/odk/opendkim.conf" </dev/null >"$RUN/odk/stderr.log" 2>&1 &
ODK_PID=$!
for _ in $(seq 100); do ss -Hltn "sport = :$ODK_PORT" | grep -q LISTEN && break; sleep 0.1; done
ss -Hltn "sport = :$ODK_PORT" | grep -q LISTEN || die "opendkim does not listen (see $RUN/odk/stderr.log)"

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
cp "$RUN/sendmail/plain.cf" "$RUN/sendmail/dkim.cf"
cat >> "$RUN/sendmail/dkim.cf" <<EOF
O InputMailFilters=dkim
O Milter.macros.connect=j, _, {daemon_name}, {if_name}, {if_addr}
O Milter.macros.envfrom=i, {auth_type}, {auth_authen}, {auth_ssf}, {auth_author}, {mail_mailer}, {mail_host}, {mail_addr}
Xdkim, S=inet:$ODK_PORT@127.0.0.1, F=T, T=S:4m;R:4m;E:10m
EOF

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
per_conn=$(( MSGS / SESSIONS < 10 ? MSGS / SESSIONS : 10 ))
# Runs in this shell (it starts and stops the servers, whose PIDs it keeps) and leaves
# "msg/s accepted/expected status" in $MEASURED.
MEASURED=""
measure() {   # server(sm|pf) filtered(0|1)
    local server=$1 filtered=$2 times=() status=ok accepted expected=$MSGS
    local r t0 t1
    for r in $(seq "$RUNS"); do
        if [ "$server" = sm ]; then
            sm_stop
            if [ "$filtered" = 1 ]; then sm_start "$RUN/sendmail/dkim.cf"; else sm_start "$RUN/sendmail/plain.cf"; fi
        else
            pf_stop
            if [ "$filtered" = 1 ]; then pf_start "inet:127.0.0.1:$ODK_PORT"; else pf_start ""; fi
        fi
        sync
        local port=$SM_PORT; [ "$server" = pf ] && port=$PF_PORT
        t0=$(date +%s.%N)
        timeout "$SRC_TIMEOUT" smtp-source -d -s "$SESSIONS" -m "$MSGS" -l "$MSG_LEN" \
            -f "$FROM" -t "$TO" "[::1]:$port" >>"$RUN/source.log" 2>&1 || status=FAILED
        t1=$(date +%s.%N)
        times+=("$(echo "$t1 - $t0" | bc -l)")
        for _ in $(seq 50); do
            if [ "$server" = sm ]; then accepted=$(sm_count); else accepted=$(pf_count); fi
            [ "$accepted" -ge "$expected" ] && break
            sleep 0.1
        done
        [ "$accepted" -ge "$expected" ] || status=FAILED
        if [ "$filtered" = 1 ]; then
            if [ "$server" = sm ]; then sm_signed || status=UNSIGNED; else pf_signed || status=UNSIGNED; fi
        fi
    done
    local med
    med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    MEASURED=$(printf '%.0f %s/%s %s' "$(echo "$MSGS / $med" | bc -l)" "$accepted" "$expected" "$status")
}

log "sendmail-rs $(cd "$REPO" && git rev-parse --short HEAD), postfix $(postconf -c "$PF_CONF" -h mail_version), opendkim $(opendkim -V 2>&1 | awk 'NR == 1 {print $NF}')"
log "each cell: $RUNS run(s) of smtp-source -d -s $SESSIONS -m $MSGS ($per_conn+ per connection), $MSG_LEN-byte bodies"
measure sm 0; read -r SM_PLAIN SM_PLAIN_N SM_PLAIN_S <<<"$MEASURED"; log "sendmail-rs, no filter: $SM_PLAIN msg/s ($SM_PLAIN_S)"
measure pf 0; read -r PF_PLAIN PF_PLAIN_N PF_PLAIN_S <<<"$MEASURED"; log "Postfix, no filter: $PF_PLAIN msg/s ($PF_PLAIN_S)"
measure sm 1; read -r SM_DKIM SM_DKIM_N SM_DKIM_S <<<"$MEASURED"; log "sendmail-rs + opendkim: $SM_DKIM msg/s ($SM_DKIM_S)"
measure pf 1; read -r PF_DKIM PF_DKIM_N PF_DKIM_S <<<"$MEASURED"; log "Postfix + opendkim: $PF_DKIM msg/s ($PF_DKIM_S)"
sm_stop; pf_stop

ratio() { echo "scale=2; $1 / $2" | bc -l; }
TABLE=$(cat <<EOF
| ingest, s=$SESSIONS, -m $MSGS, 5 KiB | sendmail-rs msg/s | Postfix msg/s | × Postfix |
|---|---|---|---|
| no filter | $SM_PLAIN ($SM_PLAIN_S) | $PF_PLAIN ($PF_PLAIN_S) | $(ratio "$SM_PLAIN" "$PF_PLAIN") |
| opendkim signing | $SM_DKIM ($SM_DKIM_S) | $PF_DKIM ($PF_DKIM_S) | $(ratio "$SM_DKIM" "$PF_DKIM") |
EOF
)
echo "$TABLE"
if [ "$SMOKE" != 1 ]; then
    {
        echo
        echo "## milter ingest ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
        echo
        echo "Command: \`RUNS=$RUNS MSGS=$MSGS nice -n 10 bash bench/milter.sh\` — median of $RUNS runs per cell, each from an empty queue; the same opendkim (Mode s, 2048-bit RSA) behind both servers in the same run; sendmail-rs queueonly, Postfix hold."
        echo
        echo "$TABLE"
    } >> "$BENCH/RESULTS.md"
fi
for s in "$SM_PLAIN_S" "$PF_PLAIN_S" "$SM_DKIM_S" "$PF_DKIM_S"; do [ "$s" = ok ] || exit 1; done

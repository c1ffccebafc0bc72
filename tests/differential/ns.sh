#!/bin/bash
# ns.sh -- one target (the real sendmail or sendmail-rs) installed as Debian installs sendmail,
# in private namespaces, with its daemon running; then CMD runs beside it.
#
#   ns.sh NAME BINDIR WORK CMD...        (root: unshare)
#
# BINDIR holds the target's `sendmail` and `makemap` (and `mailq`, `newaliases` links to
# sendmail); WORK is a scratch directory (wiped) whose `maillog` receives the mail log.
# Inside new mount, network and UTS namespaces:
#   * `lo` up; 198.51.100.0/24, 203.0.113.0/24 and 192.0.2.0/24 are local there too (the
#     harness's "outside" clients bind to them); the hostname is oracle.example.test;
#   * /etc is the machine's with env/etc laid over it (hosts, passwd, group, nsswitch.conf,
#     resolv.conf and /etc/mail: Debian's stock access, aliases, local-host-names, helpfile,
#     service.switch and the mc files), writable in WORK/upper;
#   * /var/spool, /var/lib and /run are private tmpfs with Debian's directories in them;
#   * /dev is a private tmpfs with the usual nodes, so busybox syslogd may create /dev/log
#     there (the same trick as /root/private-devlog.sh) and write WORK/maillog;
#   * saslauthd -a sasldb runs over /etc/sasldb2 (users bob and alice) for SMTP AUTH, with
#     /etc/sasl2/Sendmail.conf and sasl.m4 as a Debian site has them;
#   * sendmail.cf and submit.cf are compiled by m4 from Debian's stock sendmail.mc and
#     submit.mc, and admin.cf from admin.mc (stock + the FEATUREs an admin commonly adds);
#     the maps are built with the target's own makemap and `newaliases`;
#   * the daemon is started as Debian's init script does (`sendmail -bd`), plus `-odq` so
#     that nothing is delivered while the scenarios run (no local mailer is installed), and
#     `-O RefuseLA=10000` so that the load of a busy machine never changes an answer.
# CMD then runs with PATH starting with BINDIR; when it exits the daemon and syslogd are
# stopped by pid.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,24p' "$0" >&2; exit 2; }
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
name=$1 bindir=$2 work=$3; shift 3
mkdir -p "$work"
work="$(cd "$work" && pwd)"
bindir="$(cd "$bindir" && pwd)"
rm -rf "$work/upper" "$work/ovl" "$work/maillog"
mkdir -p "$work/upper" "$work/ovl"
cp -r "$HERE/env/etc/." "$work/upper/"
cp "$HERE/env/mc/"*.mc "$work/upper/mail/"
chmod -R u+w,go-w "$work/upper"
chmod 644 "$work/upper/passwd" "$work/upper/group"
: > "$work/maillog"

exec unshare --mount --net --uts --propagation private -- bash -c '
set -euo pipefail
name=$1 bindir=$2 work=$3; shift 3
ip link set lo up
for net in 198.51.100.0/24 203.0.113.0/24 192.0.2.0/24; do ip route add local "$net" dev lo; done
hostname oracle.example.test

mount -t tmpfs -o mode=755 tmpfs /run
old=$(mktemp -d /run/olddev.XXXXXX)
mount --rbind /dev "$old"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero random urandom tty full; do touch /dev/$n; mount --bind "$old/$n" /dev/$n; done
mkdir -p /dev/pts /dev/shm; mount --rbind "$old/pts" /dev/pts; mount --rbind "$old/shm" /dev/shm
ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr

mount -t overlay overlay -o "lowerdir=/etc,upperdir=$work/upper,workdir=$work/ovl" /etc
mount -t tmpfs -o mode=755 tmpfs /var/spool
mount -t tmpfs -o mode=755 tmpfs /var/lib
mkdir -p /var/spool/mqueue /var/spool/mqueue-client /var/lib/sendmail/host_status \
    /run/sendmail/mta /run/sendmail/msp /var/mail
chmod 700 /var/spool/mqueue
chown smmsp:smmsp /var/spool/mqueue-client /run/sendmail/msp; chmod 770 /var/spool/mqueue-client
chmod 3775 /var/mail; chown root:mail /var/mail
touch /var/lib/sendmail/sendmail.st

cd /etc/mail
for mc in sendmail submit admin; do
    [ -f $mc.mc ] && m4 $mc.mc > $mc.cf
done
busybox syslogd -n -O "$work/maillog" </dev/null >/dev/null 2>&1 &
syslogd=$!
for _ in $(seq 100); do [ -S /dev/log ] && break; sleep 0.05; done
# SMTP AUTH as a Debian site sets it up: Cyrus saslauthd (sasl2-bin) checking the users of
# /etc/sasldb2 (made here with saslpasswd2, realm = the host name, sendmail'"'"'s default
# AuthRealm), /etc/sasl2/Sendmail.conf (pwcheck_method: saslauthd, mech_list: PLAIN LOGIN)
# and sasl.m4 included by sendmail.mc (AuthMechanisms, TRUST_AUTH_MECH).
mkdir -p /run/saslauthd
for u in bob:secret alice:wonderland; do
    printf %s "${u#*:}" | saslpasswd2 -p -c -u oracle.example.test "${u%%:*}"
done
chmod 640 /etc/sasldb2
setsid saslauthd -a sasldb -m /run/saslauthd -n 0 -d </dev/null >"$work/saslauthd.log" 2>&1 &
saslauthd=$!  # its own session: on SIGTERM saslauthd signals its whole process group
for _ in $(seq 100); do [ -S /run/saslauthd/mux ] && break; sleep 0.05; done
export PATH="$bindir:$PATH"
for m in access mailertable virtusertable genericstable; do
    [ -f /etc/mail/$m ] && makemap hash /etc/mail/$m < /etc/mail/$m
done
newaliases >/dev/null
"$bindir/sendmail" -bd -odq -O RefuseLA=10000
for _ in $(seq 200); do
    [ -s /run/sendmail/mta/sendmail.pid ] && ss -ltn | grep -q "127.0.0.1:25 " && break
    sleep 0.05
done
daemon=$(head -1 /run/sendmail/mta/sendmail.pid 2>/dev/null || true)
[ -n "$daemon" ] || { echo "$name: the daemon did not start" >&2; cat "$work/maillog" >&2; }
export DIFF_TARGET=$name DIFF_WORK=$work DIFF_DAEMON_PID=$daemon
set +e
"$@"
rc=$?
[ -n "$daemon" ] && kill -TERM "$daemon" 2>/dev/null
for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.05; done
sleep 0.2
kill -TERM $saslauthd 2>/dev/null
kill -TERM $syslogd 2>/dev/null
wait $syslogd 2>/dev/null
exit $rc
' ns "$name" "$bindir" "$work" "$@"

#!/usr/bin/env bash
# test-deb.sh DEB -- installs the package into a throwaway root and checks it, as root.
#
# The root is made from this machine's own files (no debootstrap): /usr and /etc are overlays
# of the machine's (writes go to a scratch upper layer), /var starts empty with a fresh dpkg
# database, /dev holds only null, zero, random and urandom (never a /dev/log), all inside
# private mount, PID and network namespaces (unshare), so nothing outside changes. dpkg runs
# the package's real maintainer scripts there (--force-depends: the fresh database does not
# know the machine's libc6 and passwd). Checked: files, modes and the statoverride, the
# alternatives and their priority, the users and groups, /etc/mail seeded (and an existing
# sendmail.cf left alone), the queue's modes; `nobody` sends through the installed
# /usr/sbin/sendmail to the installed daemon (`sendmail-mta -bd -q10m`, as the unit runs it)
# and the message reaches root's mailbox; `mailq` as nobody; purge removes what was made.
set -euo pipefail

if [ "${1:-}" != --inside ]; then
    DEB=$(readlink -f "${1:?usage: test-deb.sh DEB}")
    [ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root" >&2; exit 2; }
    W=$(mktemp -d /var/tmp/sendmail-rs-deb.XXXXXX)
    trap 'rm -rf "$W"' EXIT
    unshare --mount --pid --net --fork -- bash "$0" --inside "$W" "$DEB"
    exit $?
fi
W=$2 DEB=$3
R=$W/root
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
fail() { echo "test-deb.sh: FAIL: $*" >&2; exit 1; }
check() { local what=$1; shift; "$@" || fail "$what"; echo "ok   $what"; }
in_root() { chroot "$R" "$@"; }
as_nobody() { chroot "$R" setpriv --reuid=65534 --regid=65534 --clear-groups -- env -i \
    PATH=/usr/bin:/bin HOME=/tmp USER=nobody LOGNAME=nobody "$@"; }
eq() { [ "$1" = "$2" ] || { echo "    got '$1', expected '$2'" >&2; return 1; }; }

mount --make-rprivate /
ip link set lo up
mkdir -p "$R"/{usr,etc,var,dev,proc,tmp,run,root}
for d in usr etc; do
    mkdir -p "$W/$d-up" "$W/$d-work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/$d-up,workdir=$W/$d-work" "$R/$d"
done
for l in bin sbin lib lib64; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$R/$l"; fi
done
mount -t tmpfs -o mode=755 tmpfs "$R/dev"
for n in null zero random urandom; do touch "$R/dev/$n"; mount --bind "/dev/$n" "$R/dev/$n"; done
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mkdir -p "$R"/var/lib/dpkg/{info,updates,alternatives,triggers} "$R"/var/{spool,log,cache,tmp}
touch "$R/var/lib/dpkg/status" "$R/var/lib/dpkg/available"
install -d -m 2775 -g mail "$R/var/mail"
# A clean slate for what the package makes: no /etc/mail, no smmta/smmsp users or groups,
# none of the names another MTA on this machine (e.g. the benchmark's Postfix) installed.
rm -rf "$R/etc/mail"
rm -f "$R"/usr/sbin/{sendmail,sendmail-mta,makemap,mailstats} "$R"/usr/lib/sendmail \
    "$R"/usr/bin/{mailq,newaliases}
for u in smmta smmsp; do in_root userdel "$u" 2>/dev/null || true; done
for g in smmta smmsp; do in_root groupdel "$g" 2>/dev/null || true; done
cp "$DEB" "$R/tmp/sendmail-rs.deb"

echo "--- install"
in_root dpkg --force-depends -i /tmp/sendmail-rs.deb 2>&1 | grep -v "^dpkg: warning\|depends on\|Package .* is not installed" || true
st() { in_root stat -c "$1" "$2"; }
LIB=/usr/libexec/sendmail-rs
check "package installed" in_root dpkg-query -W -f='${Status}' sendmail-rs
check "Provides mail-transport-agent" eq "$(in_root dpkg-query -W -f='${Provides}|${Conflicts}|${Replaces}' sendmail-rs)" \
    "mail-transport-agent|mail-transport-agent|mail-transport-agent"
check "binary root:smmsp 2755" eq "$(st '%U:%G %a' $LIB/sendmail)" "root:smmsp 2755"
check "statoverride recorded" eq "$(in_root dpkg-statoverride --list $LIB/sendmail)" "root smmsp 2755 $LIB/sendmail"
for pair in /usr/sbin/sendmail:sendmail /usr/lib/sendmail:sendmail /usr/sbin/sendmail-mta:sendmail-mta \
            /usr/bin/mailq:mailq /usr/bin/newaliases:newaliases /usr/sbin/makemap:makemap \
            /usr/sbin/mailstats:mailstats; do
    link=${pair%%:*} target=${pair#*:}
    check "$link -> $LIB/$target" eq "$(in_root readlink "/etc/alternatives/$(basename "$(in_root readlink "$link")")")" "$LIB/$target"
done
check "alternative priority 30 (Debian's sendmail: 25)" \
    bash -c "chroot '$R' update-alternatives --query sendmail-mta | grep -qx 'Priority: 30'"
for u in smmta smmsp; do
    check "user $u" bash -c "chroot '$R' getent passwd $u >/dev/null"
    check "group $u" bash -c "chroot '$R' getent group $u >/dev/null"
done
check "/etc/mail/sendmail.cf seeded from the embedded default" \
    cmp "$R/etc/mail/sendmail.cf" "$R/usr/share/sendmail-rs/sendmail.cf"
check "/etc/mail/aliases.db built" test -s "$R/etc/mail/aliases.db"
check "queue root:smmsp 2750" eq "$(st '%U:%G %a' /var/spool/mqueue)" "root:smmsp 2750"
check "maildrop root:smmsp 1730" eq "$(st '%U:%G %a' /var/spool/mqueue/maildrop)" "root:smmsp 1730"
check "unit installed" test -f "$R/lib/systemd/system/sendmail-rs.service"
for m in man8/sendmail.8 man1/mailq.1 man1/newaliases.1 man8/makemap.8; do
    check "man page $m" test -s "$R/usr/share/man/$m.gz"
done

echo "--- mail from nobody through the installed daemon"
in_root /usr/sbin/sendmail-mta -bd -q10m 2>"$W/daemon.err" || { cat "$W/daemon.err" >&2; fail "sendmail-mta -bd -q10m"; }
for _ in $(seq 100); do [ -s "$R/run/sendmail.pid" ] && break; sleep 0.1; done
check "daemon's pid file" test -s "$R/run/sendmail.pid"
printf 'To: root\nSubject: sent by nobody through the package\n\nhello\n' | as_nobody /usr/sbin/sendmail -t
for _ in $(seq 600); do
    grep -q "Subject: sent by nobody through the package" "$R/var/mail/root" 2>/dev/null && break
    sleep 0.1
done
check "delivered to root's mailbox" grep -q "Subject: sent by nobody through the package" "$R/var/mail/root"
check "mailq as nobody" as_nobody /usr/bin/mailq
kill -TERM "$(head -1 "$R/run/sendmail.pid")"
for _ in $(seq 100); do [ -e "$R/run/sendmail.pid" ] || break; sleep 0.1; done

echo "--- purge"
in_root dpkg --purge sendmail-rs >/dev/null
check "binary gone" test ! -e "$R$LIB/sendmail"
check "/usr/sbin/sendmail gone" test ! -e "$R/usr/sbin/sendmail" -a ! -L "$R/usr/sbin/sendmail"
check "alternatives gone" bash -c "! chroot '$R' update-alternatives --query sendmail-mta >/dev/null 2>&1"
check "statoverride gone" bash -c "! chroot '$R' dpkg-statoverride --list $LIB/sendmail >/dev/null"
check "/etc/mail gone" test ! -e "$R/etc/mail"
check "queue gone" test ! -e "$R/var/spool/mqueue"
check "state gone" test ! -e "$R/var/lib/sendmail-rs"

echo "--- an existing sendmail.cf is kept"
mkdir -p "$R/etc/mail"
printf '# the site'"'"'s own\nO QueueDirectory=/var/spool/mqueue\n' > "$R/etc/mail/sendmail.cf"
cp "$R/etc/mail/sendmail.cf" "$W/site.cf"
in_root dpkg --force-depends -i /tmp/sendmail-rs.deb >/dev/null 2>&1
check "site's sendmail.cf untouched by install" cmp "$R/etc/mail/sendmail.cf" "$W/site.cf"
in_root dpkg --purge sendmail-rs >/dev/null
check "site's sendmail.cf untouched by purge" cmp "$R/etc/mail/sendmail.cf" "$W/site.cf"
echo "test-deb.sh: all checks passed"

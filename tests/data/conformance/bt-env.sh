#!/bin/bash
# bt-env.sh -- run any sendmail-compatible binary in the environment the bt corpus was
# recorded in, so that its address-test-mode output can be compared byte for byte.
#
#   bt-env.sh prepare DIR SENDMAIL MAKEMAP
#       Build DIR (created if missing, must be absolute or is made so):
#         DIR/cf/oracle.cf      env/oracle/oracle.cf with @ORACLE@ replaced by DIR
#         DIR/run/access        + its map, built by `MAKEMAP -C DIR/cf/oracle.cf hash DIR/run/access`
#         DIR/run/aliases       + its map, built by `SENDMAIL -C DIR/cf/oracle.cf -bi`
#         DIR/run/etc/          hosts, nsswitch.conf, resolv.conf, service.switch
#         DIR/pkg/etc/mail/helpfile, DIR/run/mqueue
#         DIR/debian/etc/       the /etc overlay of the "debian" config (Debian 12's default
#                               sendmail.cf, stock access, aliases, local-host-names, ...),
#                               its maps built by MAKEMAP and `SENDMAIL -bi` inside the overlay
#   bt-env.sh oracle DIR SENDMAIL ARGS...   run `SENDMAIL -C DIR/cf/oracle.cf ARGS...`
#   bt-env.sh debian DIR SENDMAIL ARGS...   run `SENDMAIL -C /etc/mail/sendmail.cf ARGS...`
#                                           with DIR/debian/etc laid over /etc
#
# Both run inside private mount, UTS and network namespaces: hostname oracle.example.test,
# /etc/hosts and nsswitch.conf from env/ (files only, no DNS), and a network with only `lo`
# up, so $=w holds oracle, localhost, oracle.example.test and [127.0.0.1] as in the corpus.
# Needs root (unshare). SENDMAIL and MAKEMAP are whatever binaries are under test; for the
# real sendmail they are pkg/usr/libexec/sendmail/{sendmail,makemap} of ../oracle/setup.sh.
#
# Example, from the project root:
#   D=$(mktemp -d)
#   tests/data/conformance/bt-env.sh prepare "$D" "$PWD/target/release/sendmail" "$PWD/target/release/makemap"
#   python3 tests/data/conformance/bt-check.py --subst @ORACLE@="$D" \
#       --cmd "tests/data/conformance/bt-env.sh oracle $D $PWD/target/release/sendmail -bt" \
#       tests/data/conformance/bt/oracle/cases.txt
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENV="$HERE/env"
HOST=oracle.example.test

usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" >&2; exit 2; }
[ $# -ge 3 ] || usage
mode=$1 dir=$2 sm=$3; shift 3
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
case "$sm" in */*) sm="$(cd "$(dirname "$sm")" && pwd)/$(basename "$sm")" ;; esac

ns() {   # kind cmd...   (kind: oracle | debian | debian-rw)
    local kind=$1; shift
    unshare --mount --uts --net --propagation private -- /bin/sh -c '
        kind=$1; dir=$2; host=$3; shift 3
        ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null || exit 71
        if [ "$kind" = oracle ]; then
            for f in hosts nsswitch.conf resolv.conf; do
                mount --bind "$dir/run/etc/$f" "/etc/$f" || exit 71
            done
        else
            mount -t overlay overlay -o "lowerdir=$dir/debian/etc:/etc" /etc || exit 71
            if [ "$kind" = debian-rw ]; then mount --bind "$dir/debian/etc/mail" /etc/mail || exit 71; fi
        fi
        hostname "$host" || exit 71
        exec "$@"' bt-env "$kind" "$dir" "$HOST" "$@"
}

prepare() {
    local mm=$1
    case "$mm" in */*) mm="$(cd "$(dirname "$mm")" && pwd)/$(basename "$mm")" ;; esac
    mkdir -p "$dir/cf" "$dir/run/etc" "$dir/run/mqueue" "$dir/pkg/etc/mail" "$dir/debian"
    chmod 700 "$dir/run/mqueue"
    sed "s|@ORACLE@|$dir|g" "$ENV/oracle/oracle.cf" > "$dir/cf/oracle.cf"
    cp "$ENV/etc/hosts" "$ENV/etc/nsswitch.conf" "$ENV/etc/resolv.conf" "$ENV/etc/service.switch" "$dir/run/etc/"
    cp "$ENV/oracle/access" "$ENV/oracle/aliases" "$dir/run/"
    cp "$ENV/debian/etc/mail/helpfile" "$dir/pkg/etc/mail/helpfile"
    "$mm" -C "$dir/cf/oracle.cf" hash "$dir/run/access" < "$dir/run/access"
    ns oracle "$sm" -C "$dir/cf/oracle.cf" -bi > /dev/null

    rm -rf "$dir/debian/etc" "$dir/debian/mqueue"
    cp -r "$ENV/debian/etc" "$dir/debian/etc"; chmod -R u+w "$dir/debian/etc"   # makemap writes access.db there
    mkdir -p "$dir/debian/mqueue"; chmod 700 "$dir/debian/mqueue"
    ns debian-rw "$mm" -C /etc/mail/sendmail.cf hash /etc/mail/access < "$dir/debian/etc/mail/access"
    # -bi wants a queue directory; Debian's /var/spool/mqueue need not exist here
    ns debian-rw "$sm" -C /etc/mail/sendmail.cf -O QueueDirectory="$dir/debian/mqueue" \
        -O HostStatusDirectory= -bi > /dev/null
    echo "bt environment ready in $dir" >&2
}

case "$mode" in
    prepare) [ $# -eq 1 ] || usage; prepare "$1" ;;
    oracle)  [ -f "$dir/cf/oracle.cf" ] || { echo "bt-env.sh: run 'prepare $dir ...' first" >&2; exit 2; }
             ns oracle "$sm" -C "$dir/cf/oracle.cf" "$@" ;;
    debian)  [ -d "$dir/debian/etc/mail" ] || { echo "bt-env.sh: run 'prepare $dir ...' first" >&2; exit 2; }
             ns debian "$sm" -C /etc/mail/sendmail.cf "$@" ;;
    *) usage ;;
esac

#!/bin/bash
# setup-oracle.sh -- the real sendmail for the differential harness: Debian 12's own
# sendmail-bin (and sendmail-base, for helpfile and friends) fetched with `apt-get download`
# and unpacked with `dpkg -x` into a private root; nothing is installed, no maintainer script
# runs, no daemon starts. The binaries are never committed.
#
#   setup-oracle.sh DEST        -> DEST/pkg/usr/libexec/sendmail/{sendmail,makemap}
#
# Re-runnable; does nothing when DEST/pkg already holds the binary. ORACLE_DEBS=DIR takes the
# .deb files from DIR instead of downloading them. Needs the shared libraries sendmail links
# against (installed here with apt-get: they start no daemon).
set -euo pipefail
dest=${1:?usage: setup-oracle.sh DEST}
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
sm="$dest/pkg/usr/libexec/sendmail/sendmail"
[ -x "$sm" ] && exit 0
libs=(libdb5.3 libldap-2.5-0 liblockfile1 libnsl2 libsasl2-2 libsasl2-modules libssl3 libwrap0
      busybox)
missing=()
for p in "${libs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
debs="$dest/debs"
rm -rf "$dest/pkg" "$debs"
mkdir -p "$debs" "$dest/pkg"
if [ -n "${ORACLE_DEBS:-}" ]; then
    cp "$ORACLE_DEBS"/sendmail-bin_*.deb "$ORACLE_DEBS"/sendmail-base_*.deb "$debs/"
else
    (cd "$debs" && apt-get download sendmail-bin sendmail-base 2>&1 |
        grep -v '^W: Download is performed unsandboxed' || true)
fi
for d in "$debs"/*.deb; do dpkg -x "$d" "$dest/pkg"; done
if ldd "$sm" | grep -q 'not found'; then
    echo "setup-oracle.sh: $sm lacks libraries:" >&2
    ldd "$sm" | grep 'not found' >&2
    exit 1
fi
echo "oracle: $sm ($(for d in "$debs"/*.deb; do dpkg-deb -f "$d" Package Version | paste -sd' '; done | paste -sd','))"

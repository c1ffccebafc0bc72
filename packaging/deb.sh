#!/usr/bin/env bash
# deb.sh -- builds the Debian package: target/debian/sendmail-rs_<version>_<arch>.deb
#
#   bash packaging/deb.sh            # cargo build --release, then dpkg-deb; lintian if present
#   NO_BUILD=1 bash packaging/deb.sh # package the existing target/release/sendmail
#   NO_BUILD=1 SENDMAIL_BIN=target/debug/sendmail bash packaging/deb.sh   # a quick check
#
# What the package holds (and what its maintainer scripts in packaging/debian/ do):
#   /usr/libexec/sendmail-rs/sendmail        the one multi-call binary; postinst makes it
#                                            root:smmsp 2755 (dpkg-statoverride), so any
#                                            local user can submit through the maildrop;
#   /usr/libexec/sendmail-rs/{mailq,newaliases,makemap,mailstats,sendmail-mta}
#                                            the names it answers to (symlinks to it);
#   update-alternatives "sendmail-mta" (priority 30, above Debian's sendmail at 25):
#     /usr/sbin/sendmail-mta, with slaves /usr/sbin/sendmail, /usr/lib/sendmail,
#     /usr/bin/mailq, /usr/bin/newaliases, /usr/sbin/makemap, /usr/sbin/mailstats;
#   /usr/share/sendmail-rs/sendmail.cf       the embedded default, seeded to
#                                            /etc/mail/sendmail.cf when there is none;
#   /lib/systemd/system/sendmail-rs.service  the unit (packaging/sendmail-rs.service);
#   /usr/share/man/man{1,8}/                 sendmail(8), mailq(1), newaliases(1), makemap(8)
#                                            from man/ (generated from src/cli/manual.rs);
#   users and groups smmta and smmsp; /var/spool/mqueue root:smmsp 2750 with its maildrop
#   root:smmsp 1730; purge removes what postinst made (users and groups stay, as Debian's
#   policy asks: files may still belong to them).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
cd "$REPO"

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
OUT="$REPO/target/debian"
STAGE="$OUT/stage"
DEB="$OUT/sendmail-rs_${VERSION}_${ARCH}.deb"

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --bin sendmail
fi
BIN=${SENDMAIL_BIN:-$REPO/target/release/sendmail}   # SENDMAIL_BIN: another build (e.g. debug, for a quick check)
[ -x "$BIN" ] || { echo "deb.sh: $BIN is missing (cargo build --release)" >&2; exit 2; }

rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/usr/libexec/sendmail-rs" "$STAGE/usr/share/sendmail-rs" \
    "$STAGE/usr/share/doc/sendmail-rs" "$STAGE/lib/systemd/system"
install -m 0755 "$BIN" "$STAGE/usr/libexec/sendmail-rs/sendmail"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
    "$STAGE/usr/libexec/sendmail-rs/sendmail"
for name in mailq newaliases makemap mailstats sendmail-mta; do
    ln -s sendmail "$STAGE/usr/libexec/sendmail-rs/$name"
done
install -m 0644 src/config/default.cf "$STAGE/usr/share/sendmail-rs/sendmail.cf"
install -m 0644 packaging/sendmail-rs.service "$STAGE/lib/systemd/system/sendmail-rs.service"
install -m 0644 packaging/debian/copyright "$STAGE/usr/share/doc/sendmail-rs/copyright"
# The man pages, generated from src/cli/manual.rs (tests/man_pages.rs keeps man/ current).
for page in man/*.[18]; do
    sec=${page##*.}
    mkdir -p "$STAGE/usr/share/man/man$sec"
    gzip -9n < "$page" > "$STAGE/usr/share/man/man$sec/$(basename "$page").gz"
done
{
    printf 'sendmail-rs (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from the repository by packaging/deb.sh.\n\n'
    printf ' -- sendmail-rs developers <maintainers@sendmail-rs.example.org>  %s\n' \
        "$(date -R -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)")"
} | gzip -9n > "$STAGE/usr/share/doc/sendmail-rs/changelog.gz"
for s in postinst prerm postrm; do
    install -m 0755 "packaging/debian/$s" "$STAGE/DEBIAN/$s"
done
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
DEPENDS=$(dpkg-query -W -f='libc6 (>= ${Version})' libc6 | sed 's/-[^-)]*)$/)/; s/+[^)]*)$/)/')
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" \
    -e "s/@DEPENDS@/$DEPENDS/" packaging/debian/control.in > "$STAGE/DEBIAN/control"
( cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort \
    | xargs md5sum ) > "$STAGE/DEBIAN/md5sums"
mkdir -p "$OUT"
fakeroot dpkg-deb --build -Zxz "$STAGE" "$DEB" >/dev/null
echo "$DEB"
if command -v lintian >/dev/null; then
    # A tag we accept, for a reason: maintainer-script-calls-systemctl (postinst enables the
    # unit only when systemd runs, without debhelper's deb-systemd-helper: this package is
    # built without debhelper). lintian's findings are printed; an error fails the build.
    lintian --suppress-tags maintainer-script-calls-systemctl --fail-on error "$DEB"
fi

#!/usr/bin/env bash
# make deb: a .deb of socktap built from this tree with dpkg-deb (no debian/ directory, no
# debhelper: one binary package whose contents are exactly `cmake --install` with prefix /usr).
#
#   scripts/make-deb.sh [OUTDIR]      (default: build-deb/; prints the .deb's path last)
#
# Depends: computed from what the installed programs link: each shared library they name
# (NEEDED) is mapped, where ldd finds it, to its Debian package (dpkg -S) and required at the
# version installed here or later, so the package installs on a machine with this release's
# libraries. Rejected: dpkg-shlibdeps (it wants a debian/ source tree and control file).
# /etc/socktap/socktap.yaml is a conffile (an admin's edits survive upgrades); the systemd unit is
# installed, not enabled (`systemctl enable --now socktap`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$(mkdir -p "${1:-$ROOT/build-deb}" && cd "${1:-$ROOT/build-deb}" && pwd)
BUILD=$OUT/build
STAGE=$OUT/stage
rm -rf "$STAGE"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DSOCKTAP_WIRESHARK_EXTCAP_DIR=lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null ||
    gcc -print-multiarch)/wireshark/extcap >/dev/null
cmake --build "$BUILD" -j "$(nproc)" >/dev/null
DESTDIR=$STAGE cmake --install "$BUILD" >/dev/null
[[ -f $STAGE/usr/share/man/man1/socktap.1 ]] || { echo "make-deb: no man pages (help2man missing?)" >&2; exit 1; }
gzip -9n "$STAGE"/usr/share/man/man1/*.1
install -D -m 0644 "$ROOT/packaging/socktap.yaml" "$STAGE/etc/socktap/socktap.yaml"
install -D -m 0644 "$ROOT/README.md" "$STAGE/usr/share/doc/socktap/README.md"
for d in "$ROOT"/docs/*.md; do install -m 0644 "$d" "$STAGE/usr/share/doc/socktap/"; done
find "$STAGE" -type d -exec chmod 0755 {} +

version=$(sed -n 's/^project(socktap VERSION \([0-9.]*\).*/\1/p' "$ROOT/CMakeLists.txt")
arch=$(dpkg --print-architecture)
deps=$(
  # the libraries each program names itself (NEEDED), where ldd finds them; theirs are theirs
  for f in "$STAGE"/usr/bin/* "$STAGE"/usr/lib/*/wireshark/extcap/*; do
    needed=$(objdump -p "$f" | awk '/NEEDED/ {print $2}')
    ldd "$f" | awk -v need="$needed" 'BEGIN {n = split(need, a, "\n"); for (i = 1; i <= n; i++) want[a[i]] = 1}
      /=> \// && ($1 in want) {print $3}'
  done | sort -u |
    while read -r lib; do
      real=$(readlink -f "$lib")
      pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
      pkg=${pkg%%:*}
      [[ -n $pkg ]] || { echo "make-deb: no package owns $lib" >&2; exit 1; }
      echo "$pkg (>= $(dpkg-query -W -f='${Version}' "$pkg"))"
    done | sort -u | paste -sd, | sed 's/,/, /g'
)
size=$(du -sk "$STAGE" | cut -f1)
mkdir -p "$STAGE/DEBIAN"
cat >"$STAGE/DEBIAN/control" <<EOF
Package: socktap
Version: $version
Architecture: $arch
Maintainer: socktap developers <socktap@localhost>
Installed-Size: $size
Depends: $deps
Suggests: tshark | wireshark
Section: net
Priority: optional
Homepage: https://github.com/socktap/socktap
Description: L4 proxy (TCP, TLS) with Envoy-format traffic capture
 socktap proxies TCP and TLS connections from an Envoy bootstrap YAML, and its capture/tap
 transport sockets record what each connection carries (the plaintext, above TLS) into
 Envoy tap trace files, streamed to disk at flat memory. capture2pcap turns traces into
 pcap/pcapng for Wireshark and tshark (also live, --follow); socktap-extcap makes a running
 socktap's capture sockets Wireshark interfaces.
EOF
echo /etc/socktap/socktap.yaml >"$STAGE/DEBIAN/conffiles"
deb=$OUT/socktap_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$deb" >/dev/null
echo "$deb"

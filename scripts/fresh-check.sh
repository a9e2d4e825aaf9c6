#!/usr/bin/env bash
# make fresh-check: the README's two commands on a truly fresh Debian 12 machine.
#
# Why a chroot from mmdebstrap, not the development machine: packages installed by hand or pulled
# in as a Recommends on this machine hid a missing dependency from `make test` once
# (libprotobuf-dev, which protobuf-compiler only recommends). A root made from Debian's minimal
# variant plus `make` (the one tool you need to type the two commands) has nothing else, so every
# package the build, the tests or the demo use must come from scripts/deps.sh. Rejected: a
# container (no daemon here, and CI runs as root on the machine itself) and `mmdebstrap
# --variant=important` (it has more than a fresh machine is promised to have, which is what hid
# the bug).
#
# What runs inside: a clean clone of HEAD (committed work only, like CI) with a copy of ../shared
# beside it, then `make demo` and `make test`. /proc, /dev and /dev/shm are mounted; loopback works
# as is. Every mount is undone and the root removed on exit, also on failure or Ctrl-C.
#
# Env: FRESH_REV (commit to check, default HEAD; FRESH_REV=<old> shows a past failure),
# FRESH_SUITE (bookworm), FRESH_KEEP=1 keeps the root for a look afterwards, FRESH_TMP
# (parent of the temporary root, default /var/tmp: /tmp may be a small tmpfs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUITE=${FRESH_SUITE:-bookworm}
PARENT=${FRESH_TMP:-/var/tmp}

if [[ $(id -u) -ne 0 ]]; then
  echo "fresh-check: needs root (mmdebstrap root mode, chroot and mounts)" >&2
  exit 2
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "fresh-check: installing mmdebstrap"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap
fi

work=$(mktemp -d "$PARENT/socktap-fresh.XXXXXX")
chroot_dir=$work/root
mounts=()

cleanup() {
  local rc=$? m i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[i]}
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  if [[ ${FRESH_KEEP:-0} == 1 ]]; then
    echo "fresh-check: root kept at $chroot_dir"
  elif findmnt -rn -o TARGET | grep -q "^$work"; then
    # never rm -rf through a live bind mount of /dev
    echo "fresh-check: mounts still present under $work; not removing it" >&2
  else
    rm -rf --one-file-system "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The machine's own sources (deb822 file or sources.list), so the root sees the same archive.
sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list

t0=$(date +%s)
echo "fresh-check: minimal $SUITE root in $chroot_dir"
mmdebstrap --quiet --variant=minbase --include=make --skip=cleanup/apt/lists "$SUITE" "$chroot_dir" "$sources"
t_root=$(date +%s)

# apt inside the chroot needs a resolver; the host's apt.conf.d knobs (for example no
# Valid-Until check on a snapshot mirror) are the machine's, not a package's, so copy them too.
cp -L /etc/resolv.conf "$chroot_dir/etc/resolv.conf"
cp -a /etc/apt/apt.conf.d/. "$chroot_dir/etc/apt/apt.conf.d/" 2>/dev/null || true
# Every installed machine has /etc/hosts naming localhost (the installer, cloud-init or the
# container runtime writes it); a bootstrapped root has none, and tests resolve "localhost".
[[ -s $chroot_dir/etc/hosts ]] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$chroot_dir/etc/hosts"

mkdir -p "$chroot_dir/work"
rev=$(git -C "$ROOT" rev-parse "${FRESH_REV:-HEAD}")
git clone -q --no-hardlinks "$ROOT" "$chroot_dir/work/main"
git -C "$chroot_dir/work/main" checkout -q --detach "$rev"
echo "fresh-check: clean clone at $(git -C "$chroot_dir/work/main" log -1 --format='%h %s')"
if [[ -d $ROOT/../shared ]]; then
  cp -a "$ROOT/../shared" "$chroot_dir/work/shared"
  chmod -R a-w "$chroot_dir/work/shared" # as CI lays it: without write bits
fi

# A machine's root is a mount point; a bootstrapped directory is not, and in a chroot of it
# `unshare -m` cannot make "/" private ("cannot change root filesystem propagation"), which the
# tests that bind-mount inside their own mount namespace need (test_dns_refresh.py). A private
# bind mount of the root onto itself makes it one, and keeps their mounts from propagating out.
mount --bind "$chroot_dir" "$chroot_dir" && mounts+=("$chroot_dir")
mount --make-private "$chroot_dir"
mount -t proc proc "$chroot_dir/proc" && mounts+=("$chroot_dir/proc")
mount --bind /dev "$chroot_dir/dev" && mounts+=("$chroot_dir/dev")
mkdir -p "$chroot_dir/dev/shm"
mount -t tmpfs -o mode=1777 shm "$chroot_dir/dev/shm" && mounts+=("$chroot_dir/dev/shm")
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$chroot_dir/dev/pts" 2>/dev/null && mounts+=("$chroot_dir/dev/pts") || true

run_in_root() {
  chroot "$chroot_dir" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 CI="${CI:-}" bash -c "cd /work/main && $1"
}

echo "fresh-check: make demo"
run_in_root "make demo"
t_demo=$(date +%s)
echo "fresh-check: make test"
run_in_root "make test"
t_test=$(date +%s)
# the package: built here, installed with dpkg in this root, a request through it
echo "fresh-check: .deb install and smoke"
run_in_root "./scripts/deb-smoke.sh"
t_deb=$(date +%s)

echo "fresh-check: passed (root $((t_root - t0)) s, make demo $((t_demo - t_root)) s, make test $((t_test - t_demo)) s, deb $((t_deb - t_test)) s, total $((t_deb - t0)) s)"

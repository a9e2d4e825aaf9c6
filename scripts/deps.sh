#!/usr/bin/env bash
# Installs the Debian packages socktap needs to build, test, demo and bench, skipping
# what is already installed (idempotent; apt-get update only when something is missing).
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format cppcheck
  libevent-dev libssl-dev openssl libyaml-dev libpcap-dev libcmocka-dev
  protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev
  python3 curl nghttp2-client nghttp2-server iperf3 tshark wireshark-common tcpdump
  haproxy socat nginx libnginx-mod-stream wrk iproute2 procps
  libzstd-dev liblz4-dev zstd lz4 # capture compression (socktap_compression); tests decode with the CLIs
  git time # lint lists sources with git ls-files; tests measure peak RSS with /usr/bin/time
  python3-prometheus-client # test_admin reads /stats/prometheus with the real parser
  help2man groff-base # man pages from --help; the install test renders them
  iptables # test_original_dst: an iptables REDIRECT inside a network namespace the test creates
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=
[[ $(id -u) -eq 0 ]] || SUDO=sudo
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"

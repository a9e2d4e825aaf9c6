#!/usr/bin/env bash
# bench/run.sh BUILD_DIR: socktap against the direct path, haproxy (mode tcp), nginx stream and
# socat on loopback, interleaved, with ../shared/bench/proxy-bench.sh; then capture-on and TLS
# rows, bulk capture into tmpfs, the capture table of issue 14 with its dd floors
# (bench/capture-rows.sh), capture compression rows (bench/compress-bench.sh), capture2pcap
# conversion, live capture latency. Prints median tables with ratios.
# Knobs: REPS, DUR_A, DUR_B, DUR_C, SCENARIOS, SKIP_TLS, SKIP_TMPFS, SKIP_EXT4J, EXT4J_IMG_DIR,
#   SKIP_CONVERT, SKIP_COMPRESS, SKIP_LATENCY, LATENCY_N,
#   ONLY_SOCKTAP=1 (no haproxy/nginx/socat rows: quick capture iterations, e.g.
#   `ONLY_SOCKTAP=1 SKIP_CONVERT=1 REPS=1 DUR_A=3 DUR_B=3 DUR_C=3 bench/run.sh build`),
#   SOCKTAP_THREADS (socktap --concurrency, default 1), TMPFS_DIR (default /dev/shm).
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${PROXY_BENCH:-$ROOT/../shared/bench/proxy-bench.sh}
[[ -x $HARNESS || -f $HARNESS ]] || { echo "bench: $HARNESS not found (set PROXY_BENCH)" >&2; exit 1; }
BENCHDIR=$(dirname "$HARNESS")
OUT=${OUT:-/tmp/socktap-bench}
mkdir -p "$OUT"
export REPS=${REPS:-3} DUR_A=${DUR_A:-5} DUR_B=${DUR_B:-5} DUR_C=${DUR_C:-5}
export WORKDIR=${WORKDIR:-/tmp/proxy-bench}
S=$ROOT/bench/socktap-start.sh
T=${SOCKTAP_THREADS:-1}
others=()
[[ -n ${ONLY_SOCKTAP:-} ]] || others=(
  -p haproxy-tcp "bash $BENCHDIR/proxies/start.sh haproxy-tcp {LISTEN} {UPSTREAM} {WORKDIR}"
  -p nginx-stream "bash $BENCHDIR/proxies/start.sh nginx-stream {LISTEN} {UPSTREAM} {WORKDIR}"
  -p socat "bash $BENCHDIR/proxies/start.sh socat {LISTEN} {UPSTREAM} {WORKDIR}")
plain=$OUT/plain-$(date +%s).tsv
bash "$HARNESS" -o "$plain" -S "${SCENARIOS:-A1,A4,B,C}" \
  -d direct \
  -p socktap "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} plain $T" \
  -p socktap-capture "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} capture $T" \
  "${others[@]}"
echo; echo "== plain TCP (ratios vs direct)"
bash "$HARNESS" --summary "$plain"
tls=-
if [[ -z ${SKIP_TLS:-} ]]; then
  tls=$OUT/tls-$(date +%s).tsv
  [[ -n ${ONLY_SOCKTAP:-} ]] || others=(
    -p haproxy-tls-term "bash $BENCHDIR/proxies/start.sh haproxy-tls-term {LISTEN} {UP_HTTP} {WORKDIR}")
  CERT_DIR=$WORKDIR/certs bash "$HARNESS" --tls -o "$tls" -S B,C \
    -d direct-tls \
    -p socktap-tls "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term $T" \
    -p socktap-tls-capture "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term-capture $T" \
    "${others[@]}"
  echo; echo "== TLS terminated at the proxy (ratios vs ${ONLY_SOCKTAP:+direct-tls}${ONLY_SOCKTAP:-haproxy-tls-term})"
  bash "$HARNESS" --summary "$tls" --ref "${ONLY_SOCKTAP:+direct-tls}${ONLY_SOCKTAP:-haproxy-tls-term}"
fi
# Bulk capture into tmpfs: the harness's CAPDIR lives in its WORKDIR, so a WORKDIR on tmpfs.
tmpfs=-
tmpwork=${TMPFS_DIR:-/dev/shm}/socktap-bench-work
if [[ -z ${SKIP_TMPFS:-} ]]; then
  tmpfs=$OUT/tmpfs-$(date +%s).tsv
  WORKDIR=$tmpwork bash "$HARNESS" -o "$tmpfs" -S A1,A4,C \
    -d direct \
    -p socktap "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} plain $T" \
    -p socktap-capture "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} capture $T"
  echo; echo "== bulk, capture directory on tmpfs (ratios vs direct)"
  bash "$HARNESS" --summary "$tmpfs"
fi
# New TLS connections with capture into tmpfs: the TLS row of the disk without its filesystem.
tmpfs_tls=-
if [[ -z ${SKIP_TMPFS:-} && -z ${SKIP_TLS:-} ]]; then
  tmpfs_tls=$OUT/tmpfs-tls-$(date +%s).tsv
  CERT_DIR=$WORKDIR/certs WORKDIR=$tmpwork bash "$HARNESS" --tls -o "$tmpfs_tls" -S C \
    -d direct-tls \
    -p socktap-tls "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term $T" \
    -p socktap-tls-capture "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term-capture $T"
fi
# New connections with capture into a journaled ext4, the kind production disks run (mkfs.ext4's
# default): a loop-mounted image made here. This machine's own root is ext4 *without* a
# journal, where each file create scans past every inode freed in the last 60 s, so after a
# run's captures were removed a create costs 100-300 us instead of ~30 (docs/capture.md).
# Needs root, a loop device and mkfs.ext4; skipped with the reason otherwise (SKIP_EXT4J=1
# skips it). The sparse image (4 GiB at most) goes to EXT4J_IMG_DIR (default /var/tmp).
ext4j=- ext4j_tls=- ext4j_dir=-
if [[ -z ${SKIP_EXT4J:-} ]]; then
  img=${EXT4J_IMG_DIR:-/var/tmp}/socktap-bench-ext4j.img mnt=$OUT/ext4j-mnt why=""
  mkdir -p "$mnt"
  if ! command -v mkfs.ext4 >/dev/null; then why="no mkfs.ext4 (e2fsprogs)"
  elif ! truncate -s 4G "$img" 2>/dev/null; then why="cannot make $img"
  elif ! mkfs.ext4 -q -F "$img" >/dev/null 2>&1; then why="mkfs.ext4 failed"
  elif ! mount -o loop "$img" "$mnt" 2>/dev/null; then why="cannot loop-mount (root and a loop device needed)"
  fi
  if [[ -n $why ]]; then
    echo; echo "== journaled ext4 rows skipped: $why"
  else
    ext4j_dir=$mnt/work
    ext4j=$OUT/ext4j-$(date +%s).tsv
    WORKDIR=$ext4j_dir bash "$HARNESS" -o "$ext4j" -S C -d direct \
      -p socktap "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} plain $T" \
      -p socktap-capture "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} capture $T" || ext4j=-
    if [[ -z ${SKIP_TLS:-} ]]; then
      ext4j_tls=$OUT/ext4j-tls-$(date +%s).tsv
      CERT_DIR=$WORKDIR/certs WORKDIR=$ext4j_dir bash "$HARNESS" --tls -o "$ext4j_tls" -S C \
        -d direct-tls \
        -p socktap-tls "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term $T" \
        -p socktap-tls-capture "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term-capture $T" ||
        ext4j_tls=-
    fi
  fi
fi
mkdir -p "$WORKDIR/cap" "$tmpwork"
[[ $ext4j_dir == - ]] || mkdir -p "$ext4j_dir/cap"
CAP_TMPFS_TLS=$tmpfs_tls CAP_EXT4J=$ext4j CAP_EXT4J_TLS=$ext4j_tls CAP_EXT4J_DIR=$ext4j_dir \
  bash "$ROOT/bench/capture-rows.sh" "$plain" "$tls" "$tmpfs" "$WORKDIR/cap" "$tmpwork"
rm -rf "$tmpwork"
if [[ $ext4j_dir != - ]]; then
  { umount "$mnt" && rm -f "$img"; } || echo "bench: could not unmount $mnt (image $img left)" >&2
fi
if [[ -z ${SKIP_CONVERT:-} ]]; then
  echo; echo "== capture2pcap conversion (1 GiB trace) beside Envoy's od | text2pcap way"
  OUT= bash "$ROOT/bench/convert-bench.sh" "$BUILD"
fi
if [[ -z ${SKIP_COMPRESS:-} ]]; then
  echo; echo "== capture compression (socktap_compression): none / raw / zstd / lz4, random and JSON"
  bash "$ROOT/bench/compress-bench.sh" "$BUILD"
fi
if [[ -z ${SKIP_LATENCY:-} ]]; then
  echo; echo "== live capture latency: a byte through the proxy -> its packet out of a live viewer"
  python3 "$ROOT/bench/live-latency.py" "$BUILD" "${LATENCY_N:-300}"
fi

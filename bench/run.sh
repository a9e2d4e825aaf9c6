#!/usr/bin/env bash
# bench/run.sh BUILD_DIR: socktap against the direct path, haproxy (mode tcp), nginx stream and
# socat on loopback, interleaved, with ../shared/bench/proxy-bench.sh; then capture-on and TLS
# rows, capture compression rows (bench/compress-bench.sh), capture2pcap conversion, live capture
# latency. Prints median tables with ratios. Knobs: REPS, DUR_A, DUR_B, DUR_C, SCENARIOS,
# SKIP_TLS, SKIP_COMPRESS, LATENCY_N.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=${PROXY_BENCH:-$ROOT/../shared/bench/proxy-bench.sh}
[[ -x $HARNESS || -f $HARNESS ]] || { echo "bench: $HARNESS not found (set PROXY_BENCH)" >&2; exit 1; }
BENCHDIR=$(dirname "$HARNESS")
OUT=${OUT:-/tmp/socktap-bench}
mkdir -p "$OUT"
export REPS=${REPS:-3} DUR_A=${DUR_A:-5} DUR_B=${DUR_B:-5} DUR_C=${DUR_C:-5}
S=$ROOT/bench/socktap-start.sh
plain=$OUT/plain-$(date +%s).tsv
bash "$HARNESS" -o "$plain" -S "${SCENARIOS:-A1,A4,B,C}" \
  -d direct \
  -p socktap "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} plain 1" \
  -p socktap-capture "$S $BUILD {LISTEN} {UPSTREAM} {CAPDIR} capture 1" \
  -p haproxy-tcp "bash $BENCHDIR/proxies/start.sh haproxy-tcp {LISTEN} {UPSTREAM} {WORKDIR}" \
  -p nginx-stream "bash $BENCHDIR/proxies/start.sh nginx-stream {LISTEN} {UPSTREAM} {WORKDIR}" \
  -p socat "bash $BENCHDIR/proxies/start.sh socat {LISTEN} {UPSTREAM} {WORKDIR}"
echo; echo "== plain TCP (ratios vs direct)"
bash "$HARNESS" --summary "$plain"
if [[ -z ${SKIP_TLS:-} ]]; then
  tls=$OUT/tls-$(date +%s).tsv
  bash "$HARNESS" --tls -o "$tls" -S B,C \
    -d direct-tls \
    -p socktap-tls "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term 1" \
    -p socktap-tls-capture "$S $BUILD {LISTEN} {UP_HTTP} {CAPDIR} tls-term-capture 1" \
    -p haproxy-tls-term "bash $BENCHDIR/proxies/start.sh haproxy-tls-term {LISTEN} {UP_HTTP} {WORKDIR}"
  echo; echo "== TLS terminated at the proxy (ratios vs haproxy-tls-term)"
  bash "$HARNESS" --summary "$tls" --ref haproxy-tls-term
fi
if [[ -z ${SKIP_COMPRESS:-} ]]; then
  echo; echo "== capture compression (socktap_compression): none / raw / zstd / lz4, random and JSON"
  bash "$ROOT/bench/compress-bench.sh" "$BUILD"
fi
echo; echo "== capture2pcap conversion (1 GiB trace) beside Envoy's od | text2pcap way"
OUT= bash "$ROOT/bench/convert-bench.sh" "$BUILD"
echo; echo "== live capture latency: a byte through the proxy -> its packet out of a live viewer"
python3 "$ROOT/bench/live-latency.py" "$BUILD" "${LATENCY_N:-300}"

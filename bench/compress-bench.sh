#!/usr/bin/env bash
# bench/compress-bench.sh [BUILD_DIR]: what capture compression (socktap extension
# socktap_compression) buys, in one run: socktap with no capture, capture raw, capture zstd and
# capture lz4, each on
#   random  iperf3 through the proxy as proxy-bench.sh's A1, sending RANDOM_MIB MiB of random
#           bytes from a file (-F; iperf3's default payload repeats one buffer, compressible);
#   json    HTTP/1 JSON responses (nginx serving a JSON_MIB MiB JSON document, wrk -c CONNS);
# printing per row: throughput (Gbit/s of proxied bytes), throughput including the final
# fsync of the trace files (`sync FILE...`: what the disk really absorbed), socktap's CPU seconds
# per GB proxied (utime+stime from /proc/PID/stat), bytes on disk per GB proxied and the
# compression ratio; then `dd conv=fdatasync` of the raw JSON capture's size into the same
# directory: the disk's own write rate, to read "compressed capture beats the disk" off.
# Knobs: DUR (s per row, default 8), CAPDIR (default /var/tmp/socktap-compress-bench, on the
# real disk, not a tmpfs), JSON_MIB (4), RANDOM_MIB (4096: iperf3 -F stops at the file's end, so
# a row may end before DUR on a fast box; the rate is over the time it ran), CONNS (4), MODES,
# WORKLOADS.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DUR=${DUR:-8}
CAPDIR=${CAPDIR:-/var/tmp/socktap-compress-bench}
JSON_MIB=${JSON_MIB:-4}
RANDOM_MIB=${RANDOM_MIB:-4096}
CONNS=${CONNS:-4}
MODES=${MODES:-plain capture capture-zstd capture-lz4}
WORKLOADS=${WORKLOADS:-random json}
for b in iperf3 wrk nginx python3 dd sync; do
  command -v $b >/dev/null || { echo "compress-bench: missing $b" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/socktap-compress-bench.XXXXXX)
chmod 0755 "$WORK" # nginx's workers (not root) read the document
mkdir -p "$CAPDIR"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK" "$CAPDIR/run" "$CAPDIR/dd.tmp"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_listen() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "compress-bench: nothing listens on $1" >&2
  return 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)

# upstreams: iperf3 -s, and nginx serving the JSON document (sendfile: it is not the bottleneck)
UP_IPERF=$(port) UP_HTTP=$(port)
mkdir -p "$WORK/www" "$WORK/nginx"
python3 - "$WORK/www/data.json" "$JSON_MIB" "$ROOT/tests/e2e" <<'PY'
import sys
sys.path.insert(0, sys.argv[3])
from test_compression import json_document
open(sys.argv[1], "wb").write(json_document(int(sys.argv[2]) << 20))
PY
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 10000000;
    default_type application/json;
    server { listen 127.0.0.1:$UP_HTTP; root $WORK/www; }
}
EOF
nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" </dev/null >/dev/null 2>&1 &
PIDS+=($!)
iperf3 -s -B 127.0.0.1 -p "$UP_IPERF" </dev/null >/dev/null 2>&1 &
PIDS+=($!)
wait_listen "$UP_HTTP"
wait_listen "$UP_IPERF"
# iperf3's own payload is one random buffer sent again and again, which zstd's window finds:
# the random workload sends a file of random bytes instead (iperf3 -F), truly incompressible.
head -c "$((RANDOM_MIB << 20))" /dev/urandom >"$WORK/random.bin"

load() { # load WORKLOAD PORT -> "bytes seconds"
  if [[ $1 == random ]]; then
    iperf3 -c 127.0.0.1 -p "$2" -t "$DUR" -F "$WORK/random.bin" -J | python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]["sum_received"]
print(int(e["bytes"]), e["seconds"])'
  else
    wrk -t 2 -c "$CONNS" -d "${DUR}s" "http://127.0.0.1:$2/data.json" | python3 -c '
import re, sys
t = sys.stdin.read()
m = re.search(r"requests in ([\d.]+)(ms|s|m), ([\d.]+)(B|KB|MB|GB|TB) read", t)
if not m or "Non-2xx" in t:
    sys.exit("wrk: " + t)
secs = float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60}[m.group(2)]
mult = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[m.group(4)]
print(int(float(m.group(3)) * mult), secs)'
  fi
}

RAW_JSON_DISK=0
printf '\n== capture compression: %s s per row, capture directory %s (%s)\n' "$DUR" "$CAPDIR" \
  "$(df -h --output=source,fstype "$CAPDIR" | tail -1 | tr -s ' ')"
printf '%-7s %-13s %9s %16s %10s %14s %8s %8s\n' workload mode Gbit/s "Gbit/s+sync" cpu-s/GB \
  "disk MB/GB" ratio "vs none"
for wl in $WORKLOADS; do
  base=""
  for mode in $MODES; do
    rm -rf "$CAPDIR/run"
    mkdir -p -m 0700 "$CAPDIR/run"
    listen=$(port)
    bash "$ROOT/bench/socktap-start.sh" "$BUILD" "$listen" \
      "$([[ $wl == random ]] && echo "$UP_IPERF" || echo "$UP_HTTP")" "$CAPDIR/run/cap" "$mode" 1 \
      >"$WORK/socktap.log" 2>&1 &
    pid=$!
    wait_listen "$listen"
    c0=$(cpu_ticks "$pid")
    read -r bytes secs < <(load "$wl" "$listen")
    c1=$(cpu_ticks "$pid")
    kill -TERM "$pid"
    wait "$pid" || true
    # fsync of our trace files only (sync -f would flush the other writers of the filesystem)
    s0=$(date +%s.%N)
    find "$CAPDIR/run" -type f -name 'trace_*' -exec sync {} +
    s1=$(date +%s.%N)
    disk=$(find "$CAPDIR/run" -type f -name 'trace_*' -printf '%s\n' | awk '{s += $1} END {printf "%.0f\n", s}')
    [[ $wl == json && $mode == capture ]] && RAW_JSON_DISK=$disk
    python3 - "$wl" "$mode" "$bytes" "$secs" "$c0" "$c1" "$TCK" "$disk" "$s0" "$s1" "${base:-0}" <<'PY'
import sys
wl, mode = sys.argv[1], sys.argv[2]
b, secs, c0, c1, tck, disk, s0, s1, base = (float(x) for x in sys.argv[3:])
gbit = b * 8 / secs / 1e9
gbit_sync = b * 8 / (secs + s1 - s0) / 1e9
cpu = (c1 - c0) / tck / (b / 1e9)
per_gb = disk / (b / 1e9) / 1e6
ratio = "%.1fx" % (b / disk) if disk else "-"
vs = "%.2f" % (gbit / base) if base else "1.00"
print("%-7s %-13s %9.2f %16.2f %10.2f %14.0f %8s %8s" % (wl, mode, gbit, gbit_sync, cpu, per_gb, ratio, vs))
PY
    [[ -n $base ]] || base=$(python3 -c "print($bytes * 8 / $secs / 1e9)")
    rm -rf "$CAPDIR/run"
  done
done
# The disk's own write rate for the raw JSON capture's size (at least 1 GiB).
mib=$(((RAW_JSON_DISK >> 20) > 1024 ? (RAW_JSON_DISK >> 20) : 1024))
rate=$(dd if=/dev/zero of="$CAPDIR/dd.tmp" bs=1M count="$mib" conv=fdatasync 2>&1 | tail -1)
rm -f "$CAPDIR/dd.tmp"
printf 'disk: dd bs=1M count=%s conv=fdatasync into %s: %s\n' "$mib" "$CAPDIR" "${rate##*, }"
echo "(Gbit/s: proxied bytes over the load's duration; +sync adds the final fsync of the trace"
echo " files; cpu-s/GB: socktap's utime+stime per GB proxied; disk MB/GB: trace bytes on disk per"
echo " GB proxied; ratio: proxied / on disk; vs none: Gbit/s against the row without capture)"

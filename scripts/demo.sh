#!/usr/bin/env bash
# demo.sh BUILD_DIR: the whole socktap flow on loopback.
#   nghttpd (HTTP/2, no TLS) upstream  <-  socktap (capturing listener 127.0.0.1:10000)  <-  curl
# then the trace files, one dumped as text, converted to pcap and read by tshark as HTTP/2.
# Everything started here is stopped by PID; the work dir is removed at the end.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/socktap-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # a probe connection; used only on the upstream and admin ports
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: nothing listening on port $1" >&2; return 1
}
wait_log() {
  for _ in $(seq 100); do grep -q "$2" "$1" && return 0; sleep 0.1; done
  echo "demo: socktap did not start:" >&2; cat "$1" >&2; return 1
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if (echo >/dev/tcp/127.0.0.1/10000) 2>/dev/null; then
  echo "demo: 127.0.0.1:10000 is in use; stop what listens there first" >&2; exit 1
fi
UP=$(free_port); ADMIN=$(free_port)
mkdir -p "$WORK/www" "$WORK/capture"
chmod 0700 "$WORK/capture"
for i in 1 2 3; do echo "<html><body>page $i, served over HTTP/2 through socktap</body></html>" > "$WORK/www/page$i.html"; done
nghttpd --no-tls -d "$WORK/www" "$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
sed -e "s/UPSTREAM_PORT/$UP/" -e "s/ADMIN_PORT/$ADMIN/" -e "s|CAPTURE_DIR|$WORK/capture|" \
  "$ROOT/examples/demo.yaml" > "$WORK/demo.yaml"

step "socktap --mode validate -c examples/demo.yaml"
"$BUILD/socktap" --mode validate -c "$WORK/demo.yaml"
"$BUILD/socktap" -c "$WORK/demo.yaml" --concurrency 2 >"$WORK/socktap.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"; wait_log "$WORK/socktap.log" "listening on 127.0.0.1:10000"; wait_port "$ADMIN"

step "curl --http2-prior-knowledge through socktap (127.0.0.1:10000 -> nghttpd on 127.0.0.1:$UP)"
for i in 1 2 3; do
  curl -sS --http2-prior-knowledge -o - -w '   -> HTTP/%{http_version} %{http_code}, %{size_download} bytes\n' \
    "http://127.0.0.1:10000/page$i.html" | sed 's/^/   /'
done

step "admin /stats (non-zero)"
curl -sS "http://127.0.0.1:$ADMIN/stats" | grep -v ': 0$' | sed 's/^/   /'
kill "${PIDS[1]}"; wait "${PIDS[1]}" || true   # SIGTERM: drain, flush the traces, exit

step "trace files (one per downstream connection, mode 0600)"
ls -l "$WORK/capture" | sed 's/^/   /'
first=$(ls "$WORK/capture"/ingress_*.pb | head -1)

step "socktap-trace dump $(basename "$first") (first 40 lines)"
"$BUILD/socktap-trace" dump "$first" | head -40 | sed 's/^/   /'

step "capture2pcap $(basename "$first") demo.pcap"
"$BUILD/capture2pcap" "$first" "$WORK/demo.pcap"

step "tshark -r demo.pcap -d \"tcp.port==10000,http2\" -P"
tshark -r "$WORK/demo.pcap" -d "tcp.port==10000,http2" -P 2>/dev/null | sed 's/^/   /'
echo
echo "demo OK"

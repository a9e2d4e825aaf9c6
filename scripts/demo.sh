#!/usr/bin/env bash
# demo.sh BUILD_DIR: socktap in front of a small HTTP upstream on loopback, a few requests
# through it with curl, then the admin stats. Everything started here is stopped by PID.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SOCKTAP=$BUILD/socktap
WORK=$(mktemp -d /tmp/socktap-demo.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "demo: nothing listening on port $1" >&2; return 1
}

UP=$(free_port); ADMIN=$(free_port)
mkdir -p "$WORK/www"
echo "hello from the upstream, through socktap" > "$WORK/www/index.html"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
sed -e "s/UPSTREAM_PORT/$UP/" -e "s/ADMIN_PORT/$ADMIN/" "$ROOT/examples/demo.yaml" > "$WORK/demo.yaml"
echo "== socktap --mode validate"
"$SOCKTAP" --mode validate -c "$WORK/demo.yaml"
"$SOCKTAP" -c "$WORK/demo.yaml" --concurrency 2 >"$WORK/socktap.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"; wait_port 10000; wait_port "$ADMIN"

echo "== three requests through socktap (127.0.0.1:10000 -> 127.0.0.1:$UP)"
for i in 1 2 3; do
  curl -sS -D - "http://127.0.0.1:10000/index.html?req=$i" | sed 's/^/   /'
done
echo "== admin /stats (non-zero)"
curl -sS "http://127.0.0.1:$ADMIN/stats" | grep -v ': 0$' | sed 's/^/   /'
echo "== socktap log"
sed 's/^/   /' "$WORK/socktap.log"
rm -rf "$WORK"

#!/usr/bin/env bash
# capture_off.sh SRC_DIR: builds socktap with -DSOCKTAP_CAPTURE=OFF and checks that capture is
# really gone (no capture code in the binary) and that a config asking for it gets a clear error.
set -euo pipefail
src=$1
work=$(mktemp -d /tmp/socktap-capture-off.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake -S "$src" -B "$work/build" -DSOCKTAP_CAPTURE=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/build" --target socktap -j2 >/dev/null
bin=$work/build/socktap
if nm "$bin" | grep -q -E 'capture_socket_factory|capture_wfile_new'; then
  echo "FAIL: capture symbols present in a -DSOCKTAP_CAPTURE=OFF build"; exit 1
fi
cat > "$work/cap.yaml" <<YAML
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config: {stat_prefix: t, cluster: c}
      transport_socket:
        name: envoy.transport_sockets.capture
        config:
          file_sink: {path_prefix: /tmp/x}
          transport_socket: {name: raw_buffer}
  clusters:
  - name: c
    hosts: [{socket_address: {address: 127.0.0.1, port_value: 10001}}]
YAML
set +e
out=$("$bin" --mode validate -c "$work/cap.yaml" 2>&1)
rc=$?
set -e
echo "$out"
[[ $rc -eq 1 ]] || { echo "FAIL: exit $rc, expected 1"; exit 1; }
grep -q "cap.yaml:9:15: static_resources.listeners\[0\].filter_chains\[0\].transport_socket.name" <<<"$out" ||
  { echo "FAIL: message lacks file:line:col and key path"; exit 1; }
grep -q "SOCKTAP_CAPTURE=OFF" <<<"$out" || { echo "FAIL: message does not say capture was compiled out"; exit 1; }
echo "PASS: capture compiled out and refused clearly"

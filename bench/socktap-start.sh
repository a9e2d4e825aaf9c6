#!/usr/bin/env bash
# socktap-start.sh BUILD LISTEN UPSTREAM CAPDIR MODE [CONCURRENCY]
# Writes a socktap config for the bench harness and exec()s socktap in the foreground.
# MODE: plain | capture (capture on the listener, PROTO_BINARY into CAPDIR)
#       | capture-zstd | capture-lz4 (the same, socktap_compression: zstd / lz4)
#       | tls-term (TLS on the listener, certs from $CERT_DIR) | tls-term-capture
set -euo pipefail
build=$1 listen=$2 upstream=$3 capdir=$4 mode=$5 conc=${6:-${SOCKTAP_THREADS:-1}}
cfg=$capdir/../socktap-$listen-$mode.yaml
# The harness's CAPDIR is world-writable (0777); socktap refuses to put traces there (anyone
# could swap them), so they go to a private directory inside it.
mkdir -p -m 0700 "$capdir/traces"
capdir=$capdir/traces
certs=${CERT_DIR:-${WORKDIR:-/tmp/proxy-bench}/certs}
ts=""
tls_inner="name: envoy.transport_sockets.tls
          typed_config:
            \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
            common_tls_context:
              tls_certificates:
              - certificate_chain: {filename: $certs/server.crt}
                private_key: {filename: $certs/server.key}"
case $mode in
  plain) ;;
  capture | capture-zstd | capture-lz4)
    ts="      transport_socket:
        name: envoy.transport_sockets.capture
        config:
          file_sink: {path_prefix: $capdir/trace, format: PROTO_BINARY}
          transport_socket: {name: raw_buffer}"
    [[ $mode == capture ]] || ts+="
          socktap_compression: ${mode#capture-}" ;;
  tls-term)
    ts="      transport_socket:
        $(sed 's/^          /        /' <<<"$tls_inner")" ;;
  tls-term-capture)
    ts="      transport_socket:
        name: envoy.transport_sockets.capture
        config:
          file_sink: {path_prefix: $capdir/trace, format: PROTO_BINARY}
          transport_socket:
            $(sed 's/^          /            /' <<<"$tls_inner")" ;;
  *) echo "socktap-start.sh: unknown mode $mode" >&2; exit 2 ;;
esac
cat > "$cfg" <<YAML
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: $listen}}
    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config: {stat_prefix: bench, cluster: up}
$ts
  clusters:
  - name: up
    connect_timeout: 5s
    hosts: [{socket_address: {address: 127.0.0.1, port_value: $upstream}}]
YAML
exec "$build/socktap" -c "$cfg" --concurrency "$conc" -l warning

#!/bin/sh
# valgrind.sh [BUILD]: memcheck over a representative subset, on a normal (non-sanitizer) build.
#   1. every unit test binary and every fuzz corpus replay (the same commands CTest runs)
#   2. socktap-trace dump/cat/convert and capture2pcap on the Envoy fixtures
#   3. socktap itself under valgrind through chosen relay, capture and TLS end-to-end tests:
#      SOCKTAP_BUILD points at a directory of wrappers that exec valgrind on the real binaries
# Forked children are silent (--child-silent-after-fork: tests fork to exec helpers).
# Each valgrind run writes its own log; the verdict is read from the logs ("ERROR SUMMARY: 0"
# with definite/indirect leaks counted as errors), so a test harness that ignores exit codes
# cannot hide a report. Exit 0 only if every log is clean and every command passed.
set -u
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
LOGS="$WORK/logs"
mkdir -p "$LOGS" "$WORK/bin"
VG="valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect --error-exitcode=99 --track-fds=no --child-silent-after-fork=yes --num-callers=30 --log-file=$LOGS/vg.%p.log"
fail=0
ran=0

run() { # label cmd...
    label=$1
    shift
    ran=$((ran + 1))
    if "$@" >"$WORK/out" 2>&1; then
        echo "valgrind: ok   $label"
    else
        echo "valgrind: FAIL $label (exit $?)"
        tail -n 20 "$WORK/out"
        fail=1
    fi
}

# 1. unit tests and corpus replays, straight from CTest's list.
cd "$BUILD"
ctest --show-only=json-v1 | python3 -c '
import json, sys
for t in json.load(sys.stdin)["tests"]:
    n, c = t["name"], t["command"]
    if n.startswith(("unit_", "config_", "fuzz_replay_")):
        print(n + "\t" + "\t".join(c))
' >"$WORK/unit.txt"
while IFS='	' read -r name cmd; do
    # shellcheck disable=SC2086
    run "$name" $VG $(echo "$cmd" | tr '\t' ' ')
done <"$WORK/unit.txt"

# 2. the tools on the fixtures.
for f in "$ROOT"/tests/data/envoy/*.pb_text; do
    b=$(basename "$f")
    run "socktap-trace dump $b" $VG "$BUILD/socktap-trace" dump "$f"
    run "socktap-trace cat $b" $VG "$BUILD/socktap-trace" cat --direction read "$f"
    run "socktap-trace convert $b" $VG "$BUILD/socktap-trace" convert --to v3-json "$f"
    run "capture2pcap $b" $VG "$BUILD/capture2pcap" "$f" "$WORK/$b.pcap"
done

# 3. socktap under valgrind through end-to-end tests (ones that assert no timing or RSS; a
#    slow, memcheck-instrumented proxy must still pass them).
for t in socktap socktap-trace capture2pcap; do
    printf '#!/bin/sh\nexec %s %s "$@"\n' "$VG" "$BUILD/$t" >"$WORK/bin/$t"
    chmod +x "$WORK/bin/$t"
done
cd "$ROOT/tests/e2e"
for spec in \
    "test_relay RelayTest.test_ipv6 RelayTest.test_half_close RelayTest.test_upstream_refused RelayTest.test_sigterm_drain RelayTest.test_validate_mode" \
    "test_capture CaptureTest.test_listener_and_cluster_v2_binary CaptureTest.test_curl_text_format CaptureTest.test_tap_streaming_and_buffered CaptureTest.test_unwritable_prefix_keeps_traffic CaptureTest.test_existing_file_and_symlink_untouched" \
    "test_tls TlsTest.test_curl_https_listener_with_capture TlsTest.test_upstream_s_server_sni_san TlsTest.test_http2_alpn_end_to_end TlsTest.test_mtls_refuses_client_without_certificate TlsTest.test_garbage_handshakes"; do
    set -- $spec
    mod=$1
    shift
    for c in "$@"; do
        run "e2e $mod.$c" env SOCKTAP_BUILD="$WORK/bin" python3 -m unittest "$mod.$c"
    done
done

# Verdict from the logs: one per valgrind process (tools, socktap instances, unit tests).
nlogs=0
bad=0
for l in "$LOGS"/vg.*.log; do
    [ -e "$l" ] || continue
    nlogs=$((nlogs + 1))
    if ! grep -q "ERROR SUMMARY: 0 errors" "$l"; then
        bad=$((bad + 1))
        echo "valgrind: report in $(head -n 8 "$l" | grep -o 'Command: .*')" >&2
        grep -A 25 -m 2 -E "Invalid|uninitialised|definitely lost|indirectly lost|Mismatched|overlap" "$l" >&2
    fi
done
echo "valgrind: $ran commands, $nlogs valgrind processes, $bad with errors"
[ "$bad" -eq 0 ] && [ "$nlogs" -gt 0 ] || fail=1
exit $fail

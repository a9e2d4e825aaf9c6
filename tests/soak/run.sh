#!/bin/sh
# Soak test (not part of `make test`): tests/soak/run.sh [BUILD]
#   BUILD / $SOAK_BUILD   build dir whose socktap and socktap-trace run (default build-asan:
#                         sanitizer reports are part of the verdict)
#   $SOAK_SECONDS         load duration, default 600
#   $SOAK_BULK_MB         size of each bulk stream per direction, default 4
# Loopback only. Prints a summary table; exit 0 only if every check passed (see soak.py).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${1:-${SOAK_BUILD:-build-asan}}
[ -x "$BUILD/socktap" ] || { echo "soak: $BUILD/socktap not built" >&2; exit 2; }
# traces are checked with the normal build's socktap-trace when there is one (fast)
TRACE_BUILD=${SOAK_TRACE_BUILD:-build}
[ -x "$TRACE_BUILD/socktap-trace" ] || TRACE_BUILD=$BUILD
exec python3 "$HERE/soak.py" --build "$BUILD" --trace-build "$TRACE_BUILD" \
    --seconds "${SOAK_SECONDS:-600}" --bulk-mb "${SOAK_BULK_MB:-4}"

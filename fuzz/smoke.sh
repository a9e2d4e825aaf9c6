#!/bin/sh
# Runs every libFuzzer target in BUILD (default build-fuzz) for a bounded time over its
# checked-in corpus fuzz/corpus/<target>/ (read-only: new inputs go to a scratch dir).
# Usage: fuzz/smoke.sh [BUILD] [SECONDS per target, default 30]
# Exit status: non-zero if any target crashed, hung, leaked or was missing.
set -u
BUILD=${1:-build-fuzz}
SECS=${2:-30}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT INT TERM
fail=0
n=0
for dir in "$HERE"/corpus/*/; do
    name=$(basename "$dir")
    bin="$BUILD/$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz-smoke: $name: not built ($bin)" >&2
        fail=1
        continue
    fi
    mkdir -p "$SCRATCH/$name" "$SCRATCH/$name.art"
    log="$SCRATCH/$name.log"
    # -timeout: one input taking >10 s is a hang; -rss_limit_mb: the readers are bounded.
    if "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=512 -max_len=65536 \
        -artifact_prefix="$SCRATCH/$name.art/" -print_final_stats=1 \
        "$SCRATCH/$name" "$dir" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        echo "fuzz-smoke: $name: ok (${runs:-?} runs in ${SECS}s)"
    else
        echo "fuzz-smoke: $name: FAILED; last lines of its log:" >&2
        tail -n 30 "$log" >&2
        for a in "$SCRATCH/$name.art"/*; do
            [ -e "$a" ] && cp "$a" "./$(basename "$a")" && echo "fuzz-smoke: kept ./$(basename "$a")" >&2
        done
        fail=1
    fi
    n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "fuzz-smoke: no corpus dirs under $HERE/corpus" >&2; exit 1; }
exit $fail

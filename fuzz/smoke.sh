#!/bin/sh
# Runs every libFuzzer target in BUILD (default build-fuzz) for a bounded time over its
# checked-in corpus fuzz/corpus/<target>/ (read-only: new inputs go to a scratch dir).
# Usage: fuzz/smoke.sh [BUILD] [SECONDS per target, default 20]   (env FUZZ_JOBS, default 2)
# 12 targets x 20 s, two at a time, keeps `make test`'s share around two minutes.
# Exit status: non-zero if any target crashed, hung, leaked or was missing; a crashing input
# is copied to the current directory (add it to fuzz/corpus/<target>/ once fixed).
set -u
BUILD=${1:-build-fuzz}
SECS=${2:-20}
JOBS=${FUZZ_JOBS:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT INT TERM

run_one() {
    name=$1
    dir=$2
    bin="$BUILD/$name"
    if [ ! -x "$bin" ]; then
        echo "fuzz-smoke: $name: not built ($bin)" >&2
        echo 1 >"$SCRATCH/$name.rc"
        return
    fi
    mkdir -p "$SCRATCH/$name" "$SCRATCH/$name.art"
    log="$SCRATCH/$name.log"
    # -timeout: one input taking >10 s is a hang; -rss_limit_mb: the parsers are bounded.
    if "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=512 -max_len=65536 \
        -artifact_prefix="$SCRATCH/$name.art/" -print_final_stats=1 \
        "$SCRATCH/$name" "$dir" >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        echo "fuzz-smoke: $name: ok (${runs:-?} runs in ${SECS}s)"
        echo 0 >"$SCRATCH/$name.rc"
    else
        echo "fuzz-smoke: $name: FAILED; last lines of its log:" >&2
        tail -n 30 "$log" >&2
        for a in "$SCRATCH/$name.art"/*; do
            [ -e "$a" ] && cp "$a" "./$(basename "$a")" && echo "fuzz-smoke: kept ./$(basename "$a")" >&2
        done
        echo 1 >"$SCRATCH/$name.rc"
    fi
}

n=0
running=0
for dir in "$HERE"/corpus/*/; do
    name=$(basename "$dir")
    run_one "$name" "$dir" &
    n=$((n + 1))
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait
        running=0
    fi
done
wait
[ "$n" -gt 0 ] || { echo "fuzz-smoke: no corpus dirs under $HERE/corpus" >&2; exit 1; }
fail=0
for rc in "$SCRATCH"/*.rc; do
    [ "$(cat "$rc")" = 0 ] || fail=1
done
[ "$(ls "$SCRATCH"/*.rc | wc -l)" -eq "$n" ] || fail=1
echo "fuzz-smoke: $n targets, $( [ $fail = 0 ] && echo all ok || echo FAILURES)"
exit $fail

#!/usr/bin/env bash
# run-tests.sh BUILD_DIR... : runs the CTest suite in each build dir; fails if any fails.
# Ends with one summary line over all builds: "tests: N passed, N failed".
set -uo pipefail
rc=0 passed=0 failed=0
for b in "$@"; do
  echo "=== ctest in $b ==="
  log=$(mktemp)
  (cd "$b" && ctest --output-on-failure --timeout 900 -j "${CTEST_JOBS:-2}") 2>&1 | tee "$log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || rc=1
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -1)
  if [[ -z $line ]]; then
    echo "run-tests: no CTest summary in $b"; rc=1
  else
    f=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\1/' <<<"$line")
    t=$(sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+).*/\2/' <<<"$line")
    passed=$((passed + t - f)); failed=$((failed + f))
  fi
  rm -f "$log"
done
((passed > 0)) || rc=1
echo "tests: $passed passed, $failed failed"
exit $rc

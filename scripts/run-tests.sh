#!/usr/bin/env bash
# run-tests.sh BUILD_DIR... : runs the CTest suite in each build dir; fails if any fails.
set -uo pipefail
rc=0
for b in "$@"; do
  echo "=== ctest in $b ==="
  (cd "$b" && ctest --output-on-failure --timeout 900 -j "${CTEST_JOBS:-2}") || rc=1
done
exit $rc

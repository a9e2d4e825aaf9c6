#!/usr/bin/env bash
# clang-format check over tracked C sources, then cppcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
clang-format --dry-run -Werror $files
cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
  --suppress=missingIncludeSystem -I src $files
echo "lint: OK"

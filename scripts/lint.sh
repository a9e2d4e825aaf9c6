#!/usr/bin/env bash
# clang-format check over tracked C sources, cppcheck, then the module layering (check_layers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
clang-format --dry-run -Werror $files
cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
  --suppress=missingIncludeSystem -I src $files
./scripts/check_layers.sh
echo "lint: OK"

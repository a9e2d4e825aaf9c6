#!/usr/bin/env bash
# clang-format check over tracked C sources, cppcheck (warnings, then unused functions), then the module layering (check_layers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h')
clang-format --dry-run -Werror $files
cppcheck --quiet --error-exitcode=1 --enable=warning,portability --inline-suppr \
  --suppress=missingIncludeSystem -I src $files
# Dead code: a function no program, fuzzer or test calls (a whole-program check, so it runs over
# every caller at once; cppcheck cannot combine it with -j).
cppcheck --quiet --error-exitcode=1 --enable=unusedFunction --inline-suppr \
  --suppress=missingIncludeSystem -I src $(git ls-files 'src/*.c' 'fuzz/*.c' 'tests/unit/*.c')
./scripts/check_layers.sh
echo "lint: OK"

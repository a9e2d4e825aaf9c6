#!/usr/bin/env bash
# check_layers.sh: every `#include "dir/..."` in src/ must follow an edge of the module graph
# below (the same graph the top-level CMakeLists.txt links with socktap_module()), only the
# listed modules may include <event2/...>, and the directory-level include graph must be
# acyclic. Run by scripts/lint.sh (`make lint`, CTest `lint`).
set -euo pipefail
cd "$(dirname "$0")/.."

# module -> modules it may include (besides itself). A new directory under src/ must be added
# here; CMake links outside this table fail below.
declare -A allowed=(
  [core]=""
  [cfgtree]="core"
  [trace]="core"
  [pcap]="trace core"
  [transport]="cfgtree trace core"
  [config]="transport cfgtree core"
  [admin]="config transport pcap trace cfgtree core"
  [net]="admin config transport cfgtree trace core"
  [cmd]="net admin config transport cfgtree trace core"
  [extcap]=""
)
# Modules that may use libevent. The tools (trace, pcap) and the parsers never do.
libevent_ok=" transport admin net cmd "

fail=0
edges=$(mktemp)
trap 'rm -f "$edges"' EXIT
for dir in src/*/; do
  from=$(basename "$dir")
  if [[ ! -v allowed[$from] ]]; then
    echo "layers: src/$from/ is not in scripts/check_layers.sh's module table"
    fail=1
    continue
  fi
  while IFS=: read -r file line text; do
    if [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<event2/ ]]; then
      if [[ $libevent_ok != *" $from "* ]]; then
        echo "layers: $file:$line: $from/ may not use libevent: $text"
        fail=1
      fi
      continue
    fi
    [[ $text =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([a-z0-9_]+)/ ]] || continue
    to=${BASH_REMATCH[1]}
    [[ -d src/$to ]] || continue # generated protobuf headers (envoy/..., socktap/...)
    [[ $to == "$from" ]] && continue
    echo "$from $to" >>"$edges"
    if [[ " ${allowed[$from]} " != *" $to "* ]]; then
      echo "layers: $file:$line: $from/ may not include $to/ (allowed: ${allowed[$from]:-none}): $text"
      fail=1
    fi
  done < <(grep -Hn '^[[:space:]]*#[[:space:]]*include' "$dir"*.[ch] || true)
done
if ! sort -u "$edges" | tsort >/dev/null 2>"$edges.err"; then
  echo "layers: directory-level include cycle in src/:"
  cat "$edges.err"
  fail=1
fi
rm -f "$edges.err"
# The link graph must not outgrow the table: every st_<module> a module (or the socktap binary,
# module cmd) links directly in CMake must be an allowed edge here, so the two cannot drift apart
# silently. (Header-only leaves such as core/hexdigit.h need no link, hence only this direction.)
while read -r from to; do
  if [[ ! -v allowed[$from] ]]; then
    echo "layers: CMake module $from is not in scripts/check_layers.sh's module table"
    fail=1
  elif [[ " ${allowed[$from]} " != *" $to "* ]]; then
    echo "layers: CMake links st_$to into $from, which the table does not allow (allowed: ${allowed[$from]:-none})"
    fail=1
  fi
done < <(python3 - CMakeLists.txt src/*/CMakeLists.txt <<'PY'
import re, sys
for path in sys.argv[1:]:
    text = re.sub(r"#[^\n]*", "", open(path).read())
    for m in re.finditer(r"socktap_module\(\s*(\w+)([^)]*)\)", text):
        for dep in re.findall(r"\bst_(\w+)", m.group(2)):
            print(m.group(1), dep)
    for m in re.finditer(r"target_link_libraries\(\s*socktap\s([^)]*)\)", text):
        for dep in re.findall(r"\bst_(\w+)", m.group(1)):
            print("cmd", dep)
PY
)
[[ $fail -eq 0 ]] || exit 1
echo "layers: OK"

#!/usr/bin/env bash
# bench/convert-bench.sh [BUILD_DIR]: capture2pcap conversion speed (MB/s of trace) and peak RSS
# on a generated v2 binary trace of MIB MiB (default 1024), beside Envoy's way of converting
# (its capture2pcap.py: decode events, one `od -Ax -tx1 -v` per event, all piped into
# Wireshark's text2pcap) on a prefix of the same trace (ENVOY_MIB, default 64: Envoy's way
# spawns one od per event, so a full GiB takes many minutes; MB/s is comparable either way).
# Output goes to /dev/null (two extra rows write a file in $OUT, page cache included); REPS runs, median printed.
# Each classic pcap row has its pcapng twin (--pcapng / a .pcapng name): the goal is pcapng
# within 20% of pcap.
# Knobs: MIB, ENVOY_MIB, EVENT_KIB (payload per event, default 16: text2pcap's packets must
# stay under 64 KiB), REPS (default 3), KEEP=1 keeps the trace in $OUT.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C2P=$BUILD/capture2pcap
MIB=${MIB:-1024}
ENVOY_MIB=${ENVOY_MIB:-64}
EVENT_KIB=${EVENT_KIB:-16}
REPS=${REPS:-3}
OUT=${OUT:-$(mktemp -d /tmp/socktap-convert-bench.XXXXXX)}
[[ -x $C2P ]] || { echo "convert-bench: $C2P not built" >&2; exit 1; }
command -v text2pcap >/dev/null || { echo "convert-bench: text2pcap (wireshark-common) missing" >&2; exit 1; }
mkdir -p "$OUT"
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$OUT"' EXIT

gen() { # gen MIB PATH: a v2alpha binary Trace, alternating read/write events of EVENT_KIB
    python3 - "$1" "$2" "$EVENT_KIB" "$ROOT/tests/e2e" <<'PY'
import sys
sys.path.insert(0, sys.argv[4])
from test_capture2pcap import payload, write_v2_trace
mib, path, kib = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
chunk = payload(kib << 10, 5)
n = (mib << 20) // len(chunk)
write_v2_trace(path, ("127.0.0.1", 10000), ("127.0.0.1", 50000),
               ((1700000000 + i // 1000, i % 1000 * 1000, "read" if i % 2 else "write", chunk)
                for i in range(n)))
PY
}

# Envoy's capture2pcap.py, same pipeline, streaming into text2pcap (kinder on memory than
# the original, which joins every dump in memory first). Decodes with a tiny wire-format
# reader instead of the protobuf package (not needed for this shape of trace).
envoy_way() { # envoy_way TRACE OUTPUT
    python3 - "$1" "$2" <<'PY'
import datetime, subprocess as sp, sys, time
path, out = sys.argv[1], sys.argv[2]
def varint(b, i):
    s = n = 0
    while True:
        c = b[i]; i += 1; n |= (c & 0x7F) << s; s += 7
        if c < 0x80: return n, i
def fields(b):
    i = 0
    while i < len(b):
        k, i = varint(b, i)
        if k & 7 == 0:
            v, i = varint(b, i)
        else:
            ln, i = varint(b, i); v = b[i:i + ln]; i += ln
        yield k >> 3, v
t2p = sp.Popen(["text2pcap", "-q", "-D", "-t", "%Y-%m-%d %H:%M:%S.", "-4", "127.0.0.1,127.0.0.1",
                "-T", "50000,10000", "-", out], stdin=sp.PIPE)
with open(path, "rb") as f:
    data = f.read()  # Envoy's script loads the whole trace too
for num, ev in fields(data):
    if num != 2: continue
    sec = nsec = 0; direction = None; payload = b""
    for n, v in fields(ev):
        if n == 1:
            for tn, tv in fields(v):
                if tn == 1: sec = tv
                elif tn == 2: nsec = tv
        elif n in (2, 3):
            direction = "I" if n == 2 else "O"
            payload = dict(fields(v)).get(1, b"")
    ts = datetime.datetime.utcfromtimestamp(sec) + datetime.timedelta(microseconds=nsec // 1000)
    od = sp.run(["od", "-Ax", "-tx1", "-v"], input=payload, stdout=sp.PIPE).stdout
    t2p.stdin.write(("%s\n%s\n" % (direction, ts)).encode() + od)
t2p.stdin.close()
sys.exit(t2p.wait())
PY
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run() { # run LABEL MIB CMD...: prints "LABEL MB/s peakRSS_KiB"
    local label=$1 mib=$2 s r
    shift 2
    local speeds=() rss=()
    for ((r = 0; r < REPS; r++)); do
        /usr/bin/time -o "$OUT/time" -f '%e %M' "$@" >/dev/null 2>"$OUT/stderr" ||
            { echo "convert-bench: $label failed:" >&2; cat "$OUT/stderr" >&2; exit 1; }
        s=$(tail -n1 "$OUT/time")
        speeds+=("$(awk -v m="$mib" -v t="${s% *}" 'BEGIN {printf "%.1f", m * 1.048576 / (t > 0 ? t : 0.001)}')")
        rss+=("${s#* }")
    done
    printf '%-34s %10s MB/s %10s KiB peak RSS\n' "$label" \
        "$(printf '%s\n' "${speeds[@]}" | median)" "$(printf '%s\n' "${rss[@]}" | median)"
}

echo "convert-bench: generating a ${MIB} MiB trace (${EVENT_KIB} KiB events) in $OUT" >&2
gen "$MIB" "$OUT/big.pb"
gen "$ENVOY_MIB" "$OUT/small.pb"
export -f envoy_way
printf 'capture2pcap conversion, %s runs each, median (MB = 10^6 bytes of trace)\n' "$REPS"
run "capture2pcap ${MIB} MiB" "$MIB" "$C2P" -q "$OUT/big.pb" /dev/null
run "capture2pcap --pcapng ${MIB} MiB" "$MIB" "$C2P" -q --pcapng "$OUT/big.pb" /dev/null
run "capture2pcap --tcp-handshake --mss 1460" "$MIB" "$C2P" -q --tcp-handshake --mss 1460 "$OUT/big.pb" /dev/null
run "  the same, --pcapng" "$MIB" "$C2P" -q --pcapng --tcp-handshake --mss 1460 "$OUT/big.pb" /dev/null
run "capture2pcap ${MIB} MiB to a file" "$MIB" "$C2P" -q --force "$OUT/big.pb" "$OUT/out.pcap"
rm -f "$OUT/out.pcap"
run "capture2pcap ${MIB} MiB to a .pcapng file" "$MIB" "$C2P" -q --force "$OUT/big.pb" "$OUT/out.pcapng"
rm -f "$OUT/out.pcapng"
run "capture2pcap ${ENVOY_MIB} MiB" "$ENVOY_MIB" "$C2P" -q "$OUT/small.pb" /dev/null
run "envoy way (od|text2pcap) ${ENVOY_MIB} MiB" "$ENVOY_MIB" bash -c 'envoy_way "$0" /dev/null' "$OUT/small.pb"

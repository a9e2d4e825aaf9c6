#!/usr/bin/env bash
# deb-smoke.sh: builds the .deb (scripts/make-deb.sh), installs it with dpkg on THIS machine and
# proxies a real request through the installed socktap with the packaged example configuration
# (ports and trace directory moved to free/temporary ones), then converts the trace with the
# installed capture2pcap. make fresh-check runs it inside its throwaway Debian root; it is not for
# a developer's machine (it installs a package system-wide).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
deb=$("$ROOT/scripts/make-deb.sh" "$ROOT/build-deb" | tail -1)
dpkg -i "$deb"
dpkg -s socktap | grep -q '^Status: install ok installed'
for p in socktap capture2pcap socktap-trace; do "/usr/bin/$p" --version; done
[[ -s /usr/share/man/man1/socktap.1.gz && -s /lib/systemd/system/socktap.service ]]
[[ -f /etc/socktap/socktap.yaml ]]
/usr/bin/socktap --mode validate -c /etc/socktap/socktap.yaml

work=$(mktemp -d)
pids=()
cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
lp=$(free_port) up=$(free_port) ap=$(free_port)
mkdir -m 0700 "$work/traces"
echo "through the packaged socktap" >"$work/hello.txt"
sed -e "s/port_value: 10000/port_value: $lp/; s/port_value: 8080/port_value: $up/" \
  -e "s/port_value: 9901/port_value: $ap/; s|/var/lib/socktap/ingress|$work/traces/ingress|" \
  /usr/share/socktap/examples/socktap.yaml >"$work/socktap.yaml"
python3 -m http.server --bind 127.0.0.1 --directory "$work" "$up" >/dev/null 2>&1 &
pids+=($!)
/usr/bin/socktap -c "$work/socktap.yaml" 2>"$work/socktap.log" &
pids+=($!)
for _ in $(seq 100); do
  curl -s "http://127.0.0.1:$ap/ready" >/dev/null 2>&1 && curl -s "http://127.0.0.1:$up/" >/dev/null 2>&1 && break
  sleep 0.1
done
got=$(curl -sS --max-time 20 "http://127.0.0.1:$lp/hello.txt")
[[ $got == "through the packaged socktap" ]] || { echo "deb-smoke: got '$got'"; cat "$work/socktap.log"; exit 1; }
kill -TERM "${pids[1]}"
wait "${pids[1]}"
trace=$(ls "$work"/traces/ingress_*)
/usr/bin/capture2pcap -q $trace "$work/out.pcapng"
[[ -s $work/out.pcapng ]]
echo "deb-smoke: installed $(basename "$deb"), proxied and captured a request, converted $(basename "$trace")"

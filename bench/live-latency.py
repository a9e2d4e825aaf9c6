#!/usr/bin/env python3
"""bench/live-latency.py BUILD [N]: how long a byte takes from crossing socktap to showing up in a
live viewer of GET /capture/live.pcapng (docs/capture.md, "Live capture"). Prints median, p90,
p99 and max per path; not a pass/fail test.

Method: one client connection through a capturing listener to an echo upstream. For each of N
messages the client takes t0 = perf_counter_ns() right before send() of a unique marker
(`LATMARK000042;`), waits for the echo, then pauses 20 ms so every marker is an isolated event
(no batching with its neighbours). A reader thread in the same process reads each viewer's output
and takes t1 = perf_counter_ns() when a marker first appears (the client's bytes as the proxy read
them; the echo's copy comes later and is ignored). Latency = t1 - t0: it includes the proxy's
read, the hub, the admin's pcapng chunk, the viewer's own decoding and output, so it is what a
user watching tshark sees, and both clocks are one clock. Paths, one after the other:
  stream         the admin's chunked pcapng read by this script (socktap's share alone)
  tshark -i -    curl -sN URL | tshark -l -i - -T fields -e tcp.payload (via dumpcap)
  tshark -r -    curl -sN URL | tshark -l -r - ... (no dumpcap)
  extcap         tshark -l -i socktap.listener.bench (socktap-extcap in a personal extcap dir)
  pcap-over-ip   tshark -l -i TCP@127.0.0.1:PORT (admin.socktap_pcap_over_ip)
Each path first sends warm-up markers until the viewer shows one (tshark takes seconds to start).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
os.environ["SOCKTAP_BUILD"] = BUILD
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402
from harness import Procs, Socktap, free_port, proxy_config, wait_port  # noqa: E402
from test_capture import capture_ts  # noqa: E402

ECHO = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = c.recv(65536)
        if not b:
            return
        c.sendall(b)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""
TAG = b"LATMARK"


class Seen:
    """First time each marker number showed up in a viewer's output."""

    def __init__(self):
        self.t = {}
        self.cv = threading.Condition()

    def scan(self, data, now):
        i = data.find(TAG)
        while i >= 0:
            end = data.find(b";", i)
            if end < 0:
                break
            num = data[i + len(TAG):end]
            if num.isdigit():
                with self.cv:
                    self.t.setdefault(int(num), now)
                    self.cv.notify_all()
            i = data.find(TAG, end)

    def wait(self, n, timeout):
        with self.cv:
            return self.cv.wait_for(lambda: n in self.t, timeout)


def read_stream(sock, seen):
    tail = b""
    while True:
        try:
            b = sock.recv(65536)
        except OSError:
            return
        if not b:
            return
        now = time.perf_counter_ns()
        data = tail + b
        seen.scan(data, now)
        tail = data[-32:]


def read_tshark(f, seen):
    for line in f:
        now = time.perf_counter_ns()
        for h in line.split(b","):
            try:
                seen.scan(bytes.fromhex(h.decode().strip()), now)
            except ValueError:
                pass


def run(name, client, seen, first):
    """Warm-up from FIRST until the viewer shows a marker, then N measured ones."""
    k = first
    deadline = time.time() + 120
    while time.time() < deadline:
        client.send(k)
        if seen.wait(k, 0.5):
            break
        k += 1
    else:
        print("%-12s viewer never showed a marker" % name)
        return k
    start = k + 1
    t0 = {}
    for k in range(start, start + N):
        t0[k] = client.send(k)
        time.sleep(0.02)
    seen.wait(start + N - 1, 10)
    time.sleep(0.5)
    lat = sorted((seen.t[k] - t0[k]) / 1e6 for k in t0 if k in seen.t)
    if not lat:
        print("%-12s nothing seen" % name)
        return start + N
    q = statistics.quantiles(lat, n=100, method="inclusive")
    print("%-12s n=%d/%d  median %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms" % (
        name, len(lat), N, statistics.median(lat), q[89], q[98], lat[-1]))
    return start + N


class Client:
    def __init__(self, port):
        import socket
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, k):
        msg = TAG + b"%06d;" % k
        t = time.perf_counter_ns()
        self.s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += self.s.recv(len(msg) - len(got))
        return t


def main():
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="socktap-latency-")
    try:
        up, lp, ap, pp = free_port(), free_port(), free_port(), free_port()
        echo = procs.start([sys.executable, "-c", ECHO, str(up)])
        wait_port(up, proc=echo)
        cfg = proxy_config(lp, up, admin_port=ap, listener_ts=capture_ts(os.path.join(tmp, "t")))
        cfg = cfg.replace("name: ingress", "name: bench")
        cfg += ("  socktap_pcap_over_ip:\n  - {address: {socket_address: {address: 127.0.0.1, port_value: %d}},"
                " listener: bench}\n" % pp)
        Socktap(procs, tmp, cfg, admin_port=ap)
        url = "http://127.0.0.1:%d/capture/live.pcapng?listener=bench" % ap
        client = Client(lp)
        print("live capture latency, %d isolated markers per path, client send -> viewer output" % N)
        print("(%s; machine load now: %s)" % (os.path.basename(BUILD), open("/proc/loadavg").read().split()[0]))
        k = 0
        # The stream alone.
        import socket
        s = socket.create_connection(("127.0.0.1", ap))
        s.sendall(b"GET /capture/live.pcapng?listener=bench HTTP/1.1\r\nHost: x\r\n\r\n")
        seen = Seen()
        threading.Thread(target=read_stream, args=(s, seen), daemon=True).start()
        k = run("stream", client, seen, k)
        s.shutdown(socket.SHUT_RDWR)
        s.close()
        fields = "-n -o tcp.desegment_tcp_streams:FALSE -T fields -e tcp.payload -Y 'tcp.len>0'"
        home = os.path.join(tmp, "home")
        os.makedirs(os.path.join(home, ".config", "wireshark", "extcap"))
        os.symlink(harness.tool("socktap-extcap"), os.path.join(home, ".config", "wireshark", "extcap", "socktap-extcap"))
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   SOCKTAP_ADMIN="127.0.0.1:%d" % ap)
        for name, sh in (("tshark -i -", "curl -sN '%s' | tshark -l -i - %s" % (url, fields)),
                         ("tshark -r -", "curl -sN '%s' | tshark -l -r - %s" % (url, fields)),
                         ("extcap", "exec tshark -l -i socktap.listener.bench %s" % fields),
                         ("pcap-over-ip", "exec tshark -l -i TCP@127.0.0.1:%d %s" % (pp, fields))):
            p = procs.start(["sh", "-c", sh], stdout=subprocess.PIPE, env=env)
            seen = Seen()
            threading.Thread(target=read_tshark, args=(p.stdout, seen), daemon=True).start()
            k = run(name, client, seen, k)
            os.killpg(p.pid, 15)
            p.wait(30)
    finally:
        procs.close()


if __name__ == "__main__":
    main()

"""Live capture from the proxy (socktap extension): GET /capture/live lists the capture sockets,
GET /capture/live.pcapng?listener=NAME streams their connections as pcapng while they happen.
Real curl viewers and a live `tshark -i -`; a viewer that stops reading must cost the proxied
traffic nothing and lose packets visibly (counted, commented, sequence gaps)."""
import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config, vm_status  # noqa: E402
from test_capture import capture_ts  # noqa: E402


def parse_pcapng(data):
    """(blocks, rest): every whole block as (type, body); REST the bytes of a cut last block."""
    blocks, off = [], 0
    while off + 12 <= len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        if blen < 12 or off + blen > len(data):
            break
        blocks.append((btype, data[off + 8:off + blen - 4]))
        off += blen
    return blocks, data[off:]


def epb_payloads(blocks):
    """TCP payloads of the Enhanced Packet Blocks (Ethernet + IPv4/IPv6 + TCP frames)."""
    out = []
    for btype, body in blocks:
        if btype != 6:
            continue
        caplen = struct.unpack_from("<I", body, 12)[0]
        frame = body[20:20 + caplen]
        eth = struct.unpack_from("!H", frame, 12)[0]
        if eth == 0x0800:
            ihl = (frame[14] & 15) * 4
            tcp = frame[14 + ihl:]
        else:
            tcp = frame[14 + 40:]
        out.append(tcp[(tcp[12] >> 4) * 4:])
    return out


class Viewer:
    """`curl -sN [ARGS] URL`: the stream read by a thread as it arrives (test_admin_tap.py's
    POST /tap clients too)."""

    def __init__(self, procs, url, args=()):
        self.proc = procs.start(["curl", "-sSN", *args, url], stdout=subprocess.PIPE)
        self.data = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while True:
            b = os.read(self.proc.stdout.fileno(), 65536)
            if not b:
                self.proc.stdout.close()
                return
            with self.lock:
                self.data += b

    def payload(self):
        with self.lock:
            blocks, _ = parse_pcapng(bytes(self.data))
        return b"".join(epb_payloads(blocks)), blocks

    def wait_for(self, needle, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.payload()[0]:
                return True
            time.sleep(0.05)
        return False


class LiveTest(E2ETest):
    def start(self, listener_ts=None, cluster_ts="", upstream_port=None, env=None):
        self.lp, self.ap = free_port(), free_port()
        if upstream_port is None:
            upstream_port, _ = self.start_http_upstream()
        self.prefix = os.path.join(self.tmp, "cap")
        if listener_ts is None:
            listener_ts = capture_ts(self.prefix)
        cfg = proxy_config(self.lp, upstream_port, admin_port=self.ap, listener_ts=listener_ts,
                           cluster_ts=cluster_ts)
        self.st = self.socktap(cfg, admin_port=self.ap, env=env)
        return self.st

    def url(self, query):
        return "http://127.0.0.1:%d/capture/live%s" % (self.ap, query)

    def get(self, query):
        try:
            with urllib.request.urlopen(self.url(query), timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def curl_proxy(self, path):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "http://127.0.0.1:%d%s" % (self.lp, path)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def wait_stat(self, name, pred, timeout=20):
        return self.st.wait_stat(name, pred, timeout)

    def test_list_and_errors(self):
        self.start(cluster_ts=capture_ts(os.path.join(self.tmp, "up"), indent=4))
        self.assertEqual(self.get(""), (200, "listener ingress\ncluster backend\n"))
        for q, code, msg in [(".pcapng", 400, "exactly one of"),
                             (".pcapng?listener=ingress&cluster=backend", 400, "exactly one of"),
                             (".pcapng?listener=nope", 404, "no listener named 'nope'"),
                             (".pcapng?cluster=nope", 404, "no cluster named 'nope'"),
                             (".pcapng?listener=ingress&wire=1", 404, "socktap_wire_capture"),
                             (".pcapng?listener=ingress&wire=yes", 400, "wire must be 0 or 1"),
                             (".pcapng?listener=ingress&max_bytes=12", 400, "max_bytes"),
                             (".pcapng?listener=ingress&max_bytes=1x", 400, "max_bytes")]:
            code_got, body = self.get(q)
            self.assertEqual(code_got, code, q)
            self.assertIn(msg, body, q)

    def test_no_capture_socket_is_named(self):
        self.start(listener_ts="")
        self.assertEqual(self.get(""), (200, ""))
        code, body = self.get(".pcapng?listener=ingress")
        self.assertEqual(code, 404)
        self.assertIn("listener 'ingress' has no capture or tap transport socket", body)

    def test_two_viewers_see_requests_as_they_happen(self):
        with open(os.path.join(self.tmp, "a.txt"), "wb") as f:
            f.write(b"first body\n")
        with open(os.path.join(self.tmp, "b.txt"), "wb") as f:
            f.write(b"second body\n")
        self.start()
        v1 = Viewer(self.procs, self.url(".pcapng?listener=ingress"))
        v2 = Viewer(self.procs, self.url(".pcapng?listener=ingress&max_bytes=65536"))
        self.wait_stat("admin.live.viewers", lambda v: v == 2)
        self.assertEqual(self.curl_proxy("/a.txt"), b"first body\n")
        # While the viewers stay connected (nothing has ended their streams): the request, the
        # response, both viewers.
        for v in (v1, v2):
            self.assertTrue(v.wait_for(b"GET /a.txt"), v.data[:200])
            self.assertTrue(v.wait_for(b"first body\n"))
        # A connection opened later, on a kept-open stream.
        self.assertEqual(self.curl_proxy("/b.txt"), b"second body\n")
        self.assertTrue(v1.wait_for(b"second body\n"))
        self.assertIsNone(v1.proc.poll())
        # The pcapng is what tshark reads: one interface named after the listener, direction
        # flags, a comment naming the connection, and both HTTP exchanges.
        self.procs.stop(v1.proc)
        v1.thread.join(10)
        path = os.path.join(self.tmp, "v1.pcapng")
        _, cut = parse_pcapng(bytes(v1.data))
        with open(path, "wb") as f:
            f.write(bytes(v1.data[:len(v1.data) - len(cut)]))  # whole blocks only
        # Decode-as on the listener port: an ephemeral client port can be a registered one
        # (48898 is Beckhoff ADS), and then tshark's port table wins over the HTTP heuristic.
        r = subprocess.run(["tshark", "-r", path, "-d", "tcp.port==%d,http" % self.lp, "-T", "fields", "-e", "frame.interface_name",
                            "-e", "frame.packet_flags_direction", "-e", "frame.comment", "-e", "http.request.uri"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("malformed", r.stdout + r.stderr)
        self.assertIn("downstream:ingress", r.stdout)
        self.assertIn("/a.txt", r.stdout)
        self.assertIn("/b.txt", r.stdout)
        self.assertIn("socktap connection", r.stdout)
        dirs = {int(line.split("\t")[1], 16) & 3 for line in r.stdout.splitlines() if line.count("\t") >= 1}
        self.assertEqual(dirs, {1, 2})  # inbound and outbound, every packet flagged
        # The viewer that left is gone from the count; the other stays.
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        self.assertEqual(self.curl_proxy("/a.txt"), b"first body\n")

    def test_live_tshark_reads_the_stream(self):
        with open(os.path.join(self.tmp, "t.txt"), "wb") as f:
            f.write(b"for tshark\n")
        self.start()
        sh = "curl -sSN '%s' | tshark -l -n -i - -d tcp.port==%d,http -Y http.request -T fields -e http.request.uri" % (
            self.url(".pcapng?listener=ingress"), self.lp)
        p = self.procs.start(["sh", "-c", sh], stdout=subprocess.PIPE)
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        got = []

        def reader():
            for line in p.stdout:
                got.append(line.decode().strip())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        # tshark (through dumpcap) takes a moment to start reading: requests go on until three
        # distinct ones came out of it, while the stream stays open.
        sent, deadline = [], time.time() + 60
        while time.time() < deadline and len(set(got)) < 3:
            sent.append("/t.txt?%d" % len(sent))
            self.assertEqual(self.curl_proxy(sent[-1]), b"for tshark\n")
            time.sleep(0.2)
        self.assertIsNone(p.poll())
        os.killpg(p.pid, 15)
        self.assertGreaterEqual(len(set(got)), 3, got)
        self.assertTrue(set(got) <= set(sent), got)
        self.assertEqual(len(got), len(set(got)), got)  # each request once
        self.assertEqual(got, sorted(got, key=sent.index))  # in order

    def test_slow_viewer_costs_the_traffic_nothing_and_loses_visibly(self):
        bulk = os.path.join(self.tmp, "bulk.bin")
        with open(bulk, "wb") as f:
            for i in range(64):
                f.write(hashlib.sha256(b"%d" % i).digest() * 65536)  # 2 MiB each, 128 MiB
        with open(bulk, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        # ASan's quarantine keeps freed memory resident (256 MB by default): bound it, as the
        # flat-memory capture test does, so VmHWM measures what socktap holds.
        self.start(env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"})
        # A viewer that connects and then does not read at all.
        slow = socket.create_connection(("127.0.0.1", self.ap))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        slow.sendall(b"GET /capture/live.pcapng?listener=ingress&max_bytes=1048576 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        hwm0 = vm_status(self.st.pid, "VmHWM")
        r = subprocess.run(["curl", "-sS", "--max-time", "120", "http://127.0.0.1:%d/bulk.bin" % self.lp],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(hashlib.sha256(r.stdout).hexdigest(), want)
        lost = self.wait_stat("admin.live.lost_events", lambda v: v > 0)
        lost_bytes = self.st.stats()["admin.live.lost_bytes"]
        hwm = vm_status(self.st.pid, "VmHWM")
        print("\nslow viewer: %d events / %d bytes lost; VmHWM %d -> %d kB" % (lost, lost_bytes, hwm0, hwm))
        self.assertGreater(lost_bytes, 64 << 20)
        # Bounded: the viewer's queue (1 MiB), its output bound (1 MiB) and the trace backlog,
        # not the 128 MiB that crossed.
        self.assertLess(hwm - hwm0, 64 * 1024)
        # Now it reads: what it gets is valid pcapng that says what it lost.
        slow.settimeout(2)
        data = bytearray()
        t_end = time.time() + 5
        while time.time() < t_end:
            try:
                b = slow.recv(1 << 20)
            except socket.timeout:
                break
            if not b:
                break
            data += b
        slow.close()
        body = bytes(data).split(b"\r\n\r\n", 1)[1]
        # de-chunk
        out, off = bytearray(), 0
        while True:
            nl = body.find(b"\r\n", off)
            if nl < 0:
                break
            n = int(body[off:nl].split(b";")[0], 16)
            if n == 0 or nl + 2 + n > len(body):
                out += body[nl + 2:nl + 2 + n] if n else b""
                break
            out += body[nl + 2:nl + 2 + n]
            off = nl + 2 + n + 2
        blocks, _ = parse_pcapng(bytes(out))
        path = os.path.join(self.tmp, "slow.pcapng")
        with open(path, "wb") as f:
            f.write(b"".join(struct.pack("<II", t, len(b) + 12) + b + struct.pack("<I", len(b) + 12)
                             for t, b in blocks))
        r = subprocess.run(["tshark", "-r", path, "-Y", "frame.comment contains \"lost\" || tcp.analysis.lost_segment",
                            "-T", "fields", "-e", "frame.comment", "-e", "tcp.analysis.lost_segment"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("lost (viewer too slow)", r.stdout)
        self.wait_stat("admin.live.viewers", lambda v: v == 0)
        # And the proxy is still fine.
        self.assertIn(b"bulk.bin", self.curl_proxy("/"))

    def test_viewer_gone_mid_stream_costs_nothing(self):
        with open(os.path.join(self.tmp, "x.txt"), "wb") as f:
            f.write(b"x" * 100000)
        self.start()
        for _ in range(5):
            v = Viewer(self.procs, self.url(".pcapng?listener=ingress"))
            self.wait_stat("admin.live.viewers", lambda n: n == 1)
            self.assertEqual(len(self.curl_proxy("/x.txt")), 100000)
            self.procs.stop(v.proc, sig=9)
            self.wait_stat("admin.live.viewers", lambda n: n == 0)
        self.assertEqual(len(self.curl_proxy("/x.txt")), 100000)
        self.assertEqual(self.st.stop(), 0)

    def test_wire_capture_streams_tls_records(self):
        import test_tls as T
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", T.GEN, pki], check=True)
        wire = os.path.join(self.tmp, "wire")
        ts = T.listener_tls(pki, extra="socktap_wire_capture: {path_prefix: %s}, " % wire)
        self.start(listener_ts=ts)
        self.assertEqual(self.get(""), (200, "listener ingress wire\n"))
        v = Viewer(self.procs, self.url(".pcapng?listener=ingress&wire=1"))
        self.wait_stat("admin.live.viewers", lambda n: n == 1)
        r = subprocess.run(["curl", "-sS", "--cacert", os.path.join(pki, "ca.pem"), "--resolve",
                            "server.test:%d:127.0.0.1" % self.lp, "https://server.test:%d/" % self.lp],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        # The first bytes the proxy read on the wire: a TLS handshake record (ClientHello).
        deadline = time.time() + 20
        while time.time() < deadline:
            payloads = [p for p in epb_payloads(v.payload()[1]) if p]
            if payloads and payloads[0][:1] == b"\x16" and len(payloads) > 3:
                break
            time.sleep(0.05)
        self.assertEqual(payloads[0][:2], b"\x16\x03")
        self.assertEqual(payloads[0][5], 1)  # handshake type ClientHello
        self.assertFalse(any(b"HTTP/1." in p for p in payloads))  # encrypted


if __name__ == "__main__":
    harness.main()

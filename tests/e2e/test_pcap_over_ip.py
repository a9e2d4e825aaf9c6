"""PCAP-over-IP (admin.socktap_pcap_over_ip, socktap extension): a TCP port that streams one
capture socket live as classic pcap to every client, as PolarProxy does; read by tshark 4.0's
`-i TCP@HOST:PORT` and by plain sockets. Config errors carry file:line:col."""
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config  # noqa: E402
from test_capture import capture_ts  # noqa: E402


def pcap_records(data):
    """(linktype, [(ts_sec, frame)], rest): a classic little-endian pcap stream parsed; REST
    the bytes of a record not complete yet."""
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    assert magic == 0xA1B2C3D4, hex(magic)
    out, off = [], 24
    while off + 16 <= len(data):
        sec, _, caplen, _ = struct.unpack_from("<IIII", data, off)
        if off + 16 + caplen > len(data):
            break
        out.append((sec, data[off + 16:off + 16 + caplen]))
        off += 16 + caplen
    return linktype, out, data[off:]


class Client:
    """A plain TCP client of the port, read by a thread."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.data = bytearray()
        self.eof = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while True:
            try:
                b = self.s.recv(65536)
            except OSError:
                b = b""
            if not b:
                self.eof.set()
                return
            self.data += b

    def wait_for(self, needle, timeout=30):
        deadline = time.time() + timeout
        while needle not in bytes(self.data) and time.time() < deadline:
            time.sleep(0.05)
        return needle in bytes(self.data)


class PcapOverIpTest(E2ETest):
    def config(self, entries, listener_ts=None, admin_port=None, lp=None, up=None):
        self.lp = lp or free_port()
        self.ap = admin_port or free_port()
        if listener_ts is None:
            listener_ts = capture_ts(os.path.join(self.tmp, "cap"))
        cfg = proxy_config(self.lp, up or free_port(), admin_port=self.ap, listener_ts=listener_ts)
        return cfg + "  socktap_pcap_over_ip:\n" + "".join("  - %s\n" % e for e in entries)

    def entry(self, port, what="listener: ingress"):
        return "{address: {socket_address: {address: 127.0.0.1, port_value: %d}}, %s}" % (port, what)

    def start(self, nports=1):
        up, _ = self.start_http_upstream()
        self.ports = [free_port() for _ in range(nports)]
        self.st = self.socktap(self.config([self.entry(p) for p in self.ports], up=up), admin_port=self.ap)

    def curl(self, path):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "http://127.0.0.1:%d%s" % (self.lp, path)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_tshark_reads_tcp_at(self):
        for n in ("a", "b"):
            with open(os.path.join(self.tmp, n + ".txt"), "w") as f:
                f.write(n * 50)
        self.start()
        out = os.path.join(self.tmp, "poi.pcapng")
        p = self.procs.start(["tshark", "-i", "TCP@127.0.0.1:%d" % self.ports[0], "-a", "duration:10", "-w", out])
        self.st.wait_stat("admin.live.viewers", lambda v: v == 1, timeout=60)
        uris = ["/a.txt", "/b.txt?q=1"]
        for u in uris:
            self.curl(u)
        self.assertEqual(p.wait(120), 0)
        r = subprocess.run(["tshark", "-r", out, "-n", "-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request",
                            "-T", "fields", "-e", "http.request.uri"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), uris)
        r = subprocess.run(["tshark", "-r", out, "-Y", "_ws.malformed || _ws.expert.severity >= 0x00800000"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.stdout, "")
        self.st.wait_stat("admin.live.viewers", lambda v: v == 0)

    def test_clients_come_and_go(self):
        with open(os.path.join(self.tmp, "x.txt"), "w") as f:
            f.write("x" * 1000)
        self.start(nports=2)
        c1, c2, c3 = Client(self.ports[0]), Client(self.ports[0]), Client(self.ports[1])
        self.st.wait_stat("admin.live.viewers", lambda v: v == 3)
        self.curl("/x.txt?first")
        for c in (c1, c2, c3):
            self.assertTrue(c.wait_for(b"GET /x.txt?first"))
            self.assertTrue(c.wait_for(b"x" * 1000))
        linktype, recs, _ = pcap_records(bytes(c1.data))
        self.assertEqual(linktype, 1)  # Ethernet
        self.assertTrue(all(f[12:14] == b"\x08\x00" for _, f in recs))  # IPv4 frames
        # The SYN socktap adds before a connection's first packet (as capture2pcap
        # --tcp-handshake): TCP flags byte 0x02.
        self.assertEqual(recs[0][1][14 + 20 + 13], 0x02)
        # One leaves (the client closes): the others go on, socktap forgets it.
        c2.s.shutdown(socket.SHUT_RDWR)  # (a close() alone waits for the reader thread's recv)
        c2.s.close()
        self.st.wait_stat("admin.live.viewers", lambda v: v == 2)
        self.curl("/x.txt?second")
        self.assertTrue(c1.wait_for(b"GET /x.txt?second"))
        self.assertTrue(c3.wait_for(b"GET /x.txt?second"))
        # What a client sends is ignored, not a reason to drop it.
        c1.s.sendall(b"hello\n" * 1000)
        self.curl("/x.txt?third")
        self.assertTrue(c1.wait_for(b"GET /x.txt?third"))
        # socktap stopping ends the streams on a record boundary, and exits cleanly (ASan: no leak).
        self.assertEqual(self.st.stop(), 0)
        for c in (c1, c3):
            self.assertTrue(c.eof.wait(20))
            _, recs, rest = pcap_records(bytes(c.data))
            self.assertEqual(rest, b"")
            self.assertGreater(len(recs), 10)
            c.s.close()

    def test_config_errors(self):
        pki_ts = capture_ts(os.path.join(self.tmp, "cap"))
        port = free_port()
        cases = [
            ([self.entry(port, "listener: nope")], None, "listener: no listener named 'nope'"),
            ([self.entry(port, "cluster: nope")], None, "cluster: no cluster named 'nope'"),
            ([self.entry(port, "listener: ingress, cluster: backend")], None,
             "give exactly one of 'listener: NAME' or 'cluster: NAME'"),
            ([self.entry(port, "cluster: backend")], None, "cluster 'backend' has no capture or tap transport socket"),
            ([self.entry(port, "listener: ingress")], "", "listener 'ingress' has no capture or tap transport socket"),
            ([self.entry(port, "listener: ingress, wire: true")], None,
             "listener 'ingress' has no TLS socket with socktap_wire_capture"),
            ([self.entry(port, "listener: ingress, wire: maybe")], None, "wire"),
            ([self.entry(port, "listener: ingress, colour: red")], None, "colour"),
            ([self.entry(port), self.entry(port)], None,
             "address 127.0.0.1:%d is already another socktap_pcap_over_ip's address" % port),
        ]
        for entries, ts, msg in cases:
            cfg = self.config(entries, listener_ts=pki_ts if ts is None else ts)
            path = os.path.join(self.tmp, "v-%d.yaml" % time.time_ns())
            with open(path, "w") as f:
                f.write(cfg)
            r = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", path], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1, (entries, r.stdout + r.stderr))
            self.assertRegex(r.stderr, r"%s:\d+:\d+: admin\.socktap_pcap_over_ip\[\d\]" % path)
            self.assertIn(msg, r.stderr)
        # The admin's own port, a listener's port.
        ap = free_port()
        for entry, msg in ((self.entry(ap), "the admin's address"), (None, "a listener's address")):
            lp = free_port()
            cfg = self.config([entry or self.entry(lp)], listener_ts=pki_ts, admin_port=ap, lp=lp)
            path = os.path.join(self.tmp, "v-%d.yaml" % time.time_ns())
            with open(path, "w") as f:
                f.write(cfg)
            r = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", path], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(msg, r.stderr)

    def test_port_in_use_fails_start(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = self.config([self.entry(port)])
        path = os.path.join(self.tmp, "busy.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        r = subprocess.run([harness.SOCKTAP, "-c", path], capture_output=True, text=True, timeout=60)
        busy.close()
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("cannot listen on 127.0.0.1:%d (socktap_pcap_over_ip of downstream:ingress)" % port,
                      r.stdout + r.stderr)


if __name__ == "__main__":
    harness.main()

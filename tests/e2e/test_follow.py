"""capture2pcap --follow: socktap captures a listener into a directory while `capture2pcap
--follow DIR -` streams pcap/pcapng into a live tshark; each curl request must show up while the
stream stays open (traces created after the follow started are picked up), a long-lived
connection's packets as its trace grows, a finished connection's FIN once its trace is closed.
SIGINT ends with exit 0 and a stream capinfos/tshark read cleanly; memory stays flat however
many connections pass; a corrupt trace is reported with its offset and makes the exit status
non-zero without stopping the others."""
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config, varint, vm_status, wait_port  # noqa: E402
from test_capture import capture_ts, tap_ts, FULL  # noqa: E402
from test_listen import echo_server  # noqa: E402
from test_live import epb_payloads, parse_pcapng  # noqa: E402

C2P = harness.tool("capture2pcap")


def run(argv):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, (argv, r.stderr)
    return r.stdout


class Follow:
    """`capture2pcap --follow ARGS -`, its stdout kept in memory (and optionally copied into a
    live tshark through a FIFO), its stderr in a file."""

    def __init__(self, test, args, tshark_args=None):
        self.errpath = os.path.join(test.tmp, "follow-%d.err" % time.time_ns())
        self.err = open(self.errpath, "wb")
        test.addCleanup(self.err.close)
        self.proc = test.procs.start([C2P, "--follow", *args, "-"], stdout=subprocess.PIPE, stderr=self.err)
        self.data = bytearray()
        self.lock = threading.Lock()
        self.lines = []
        self.tshark = None
        self.fifo = None
        if tshark_args is not None:
            fifo = os.path.join(test.tmp, "fifo-%d" % time.time_ns())
            os.mkfifo(fifo)
            sh = "exec tshark -l -n -i - %s < %s" % (" ".join(shlex.quote(a) for a in tshark_args), shlex.quote(fifo))
            self.tshark = test.procs.start(["sh", "-c", sh], stdout=subprocess.PIPE)
            self.fifo = open(fifo, "wb", buffering=0)
            threading.Thread(target=self.read_tshark, daemon=True).start()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while True:
            b = os.read(self.proc.stdout.fileno(), 65536)
            if not b:
                break
            with self.lock:
                self.data += b
            if self.fifo:
                try:
                    self.fifo.write(b)
                except OSError:
                    self.fifo = None
        if self.fifo:
            self.fifo.close()

    def read_tshark(self):
        for line in self.tshark.stdout:
            with self.lock:
                self.lines.append(line.decode().strip())

    def wait(self, pred, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if pred(self):
                    return True
            time.sleep(0.05)
        return False

    def stderr(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGINT):
        self.proc.send_signal(sig)
        rc = self.proc.wait(60)
        self.thread.join(30)
        return rc


class FollowTest(E2ETest):
    def start(self, upstream_port=None, fmt="PROTO_BINARY", ts=None):
        self.lp = free_port()
        if upstream_port is None:
            upstream_port, _ = self.start_http_upstream()
        self.caps = os.path.join(self.tmp, "caps")
        os.makedirs(self.caps, exist_ok=True)
        listener_ts = ts if ts is not None else capture_ts(os.path.join(self.caps, "ingress"), fmt=fmt)
        self.st = self.socktap(proxy_config(self.lp, upstream_port, listener_ts=listener_ts))
        return self.st

    def curl(self, path, *extra):
        r = subprocess.run(["curl", "-sS", "--max-time", "30", *extra, "http://127.0.0.1:%d%s" % (self.lp, path)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def save(self, f, name):
        path = os.path.join(self.tmp, name)
        with f.lock:
            data = bytes(f.data)
        with open(path, "wb") as out:
            out.write(data)
        return path

    def assert_clean(self, path, kind):
        info = run(["capinfos", "-t", "-c", path])
        self.assertIn(kind, info)
        self.assertEqual(run(["tshark", "-r", path, "-Y", "_ws.malformed"]), "")
        st = set(run(["tshark", "-r", path, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                      "-T", "fields", "-e", "tcp.checksum.status"]).split())
        self.assertEqual(st, {"1"})
        # editcap rewrites it record by record: every record is whole
        out = path + ".edit"
        run(["editcap", path, out])
        self.assertEqual(run(["capinfos", "-c", "-M", out]).split()[-1], run(["capinfos", "-c", "-M", path]).split()[-1])

    def live_requests(self, fmt_args, kind):
        for name, body in (("old.txt", b"before the follow\n"), ("a.txt", b"first\n"), ("b.txt", b"second\n"),
                           ("c.txt", b"third\n")):
            with open(os.path.join(self.tmp, name), "wb") as f:
                f.write(body)
        self.start()
        self.assertEqual(self.curl("/old.txt"), b"before the follow\n")  # a trace that exists already
        f = Follow(self, [*fmt_args, self.caps],
                   tshark_args=["-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request", "-T", "fields",
                                "-e", "http.request.uri"])
        self.assertTrue(f.wait(lambda s: "/old.txt" in s.lines), (f.lines, f.stderr()))
        for path in ("/a.txt", "/b.txt", "/c.txt"):  # one after another, each a new trace file
            self.curl(path)
            self.assertTrue(f.wait(lambda s: path in s.lines), (path, f.lines, f.stderr()))
            self.assertIsNone(f.proc.poll())  # while the stream stays open
        self.assertEqual(f.lines, ["/old.txt", "/a.txt", "/b.txt", "/c.txt"])
        self.assertEqual(f.stop(), 0, f.stderr())
        err = f.stderr()
        self.assertIn("followed 4 trace(s) (4 finished, 0 waited for a descriptor, 0 skipped for errors)", err)
        saved = self.save(f, "live" + (".pcapng" if "--pcapng" in fmt_args else ".pcap"))
        self.assert_clean(saved, kind)
        uris = run(["tshark", "-r", saved, "-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request", "-T", "fields",
                    "-e", "http.request.uri"]).split()
        self.assertEqual(uris, ["/old.txt", "/a.txt", "/b.txt", "/c.txt"])
        fins = run(["tshark", "-r", saved, "-Y", "tcp.flags.fin==1", "-T", "fields", "-e", "tcp.stream"]).split()
        self.assertEqual(sorted(set(fins)), ["0", "1", "2", "3"])
        self.assertEqual(len(fins), 8)  # two per connection
        return saved

    def test_live_requests_pcap(self):
        self.live_requests([], "pcap")

    def test_live_requests_pcapng(self):
        saved = self.live_requests(["--pcapng"], "pcapng")
        rows = run(["tshark", "-r", saved, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.comment"])
        self.assertIn("caps/ingress", rows)
        self.assertEqual(rows.count("socktap connection"), 4)

    def test_long_lived_connection_grows(self):
        # an echo upstream: the client's bytes come back, so every step is a read and a write
        srv = echo_server()
        self.addCleanup(srv.close)
        self.start(upstream_port=srv.getsockname()[1])
        f = Follow(self, ["--pcapng", self.caps])
        cli = socket.create_connection(("127.0.0.1", self.lp))
        self.addCleanup(cli.close)
        for i in range(5):
            chunk = b"chunk %d of a long-lived connection\n" % i
            cli.sendall(chunk)
            got = b""
            while len(got) < len(chunk):
                got += cli.recv(65536)
            self.assertEqual(got, chunk)

            def seen(s, chunk=chunk):
                return b"".join(epb_payloads(parse_pcapng(bytes(s.data))[0])).count(chunk) == 2
            # the same trace file, appended to: the follower shows each step while it is open
            self.assertTrue(f.wait(seen), (i, f.stderr()))
            self.assertEqual(os.listdir(self.caps), ["ingress_0.pb"])

        def fins(s):
            n = 0
            for btype, body in parse_pcapng(bytes(s.data))[0]:
                if btype == 6:
                    frame = body[20:]
                    ihl = (frame[14] & 15) * 4
                    n += frame[14 + ihl + 13] & 1
            return n
        self.assertEqual(fins(f), 0)  # open: no FIN yet
        cli.close()
        self.assertTrue(f.wait(lambda s: fins(s) == 2), f.stderr())  # closed: its FINs
        self.assertEqual(f.stop(signal.SIGTERM), 0, f.stderr())
        self.assertIn("1 finished", f.stderr())

    def test_flat_memory(self):
        with open(os.path.join(self.tmp, "m.txt"), "wb") as fobj:
            fobj.write(b"m" * 2000)
        self.start()
        out = os.path.join(self.tmp, "flat.pcap")  # a named output: written in place as it goes
        err = open(os.path.join(self.tmp, "flat.err"), "wb")
        # ASan's quarantine keeps freed memory resident (256 MB by default): bound it, as the
        # admin live test does, so VmHWM measures what the follower holds
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=1")
        p = self.procs.start([C2P, "--follow", self.caps, out], stderr=err, env=env)

        def burst(n):
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", self.lp))
                s.sendall(b"GET /m.txt HTTP/1.0\r\nHost: x\r\n\r\n")
                while s.recv(65536):
                    pass
                s.close()

        def converted(n):
            deadline = time.time() + 120
            while time.time() < deadline:
                with open(out, "rb") as fobj:
                    if fobj.read().count(b"GET /m.txt") >= n:
                        return True
                time.sleep(0.1)
            return False
        n = 40
        burst(n)
        self.assertTrue(converted(n))
        time.sleep(0.5)
        hwm1 = vm_status(p.pid, "VmHWM")
        burst(9 * n)
        self.assertTrue(converted(10 * n))
        time.sleep(0.5)
        hwm2 = vm_status(p.pid, "VmHWM")
        fds = len(os.listdir("/proc/%d/fd" % p.pid))
        sys.stderr.write("follow VmHWM after %d connections: %d kB, after %d: %d kB; %d fds open\n"
                         % (n, hwm1, 10 * n, hwm2, fds))
        # finished traces are forgotten: ten times the connections, (almost) no more memory
        self.assertLess(hwm2 - hwm1, 2048)
        self.assertLess(fds, 16)
        self.assertEqual(self.procs.stop(p, signal.SIGINT), 0)
        err.close()
        with open(os.path.join(self.tmp, "flat.err")) as e:
            m = re.search(r"followed (\d+) trace\(s\) \((\d+) finished", e.read())
        # every trace finished and forgotten (a stray connection from elsewhere on this shared
        # machine may add a trace: counted, not asserted away)
        self.assertTrue(m and int(m.group(1)) == int(m.group(2)) >= 10 * n, m and m.group(0))
        uris = run(["tshark", "-r", out, "-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request", "-T", "fields",
                    "-e", "http.request.uri"]).split()
        self.assertEqual(uris.count("/m.txt"), 10 * n)

    def test_open_connections_cost_little(self):
        # an echo upstream that keeps every connection open
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(512)
        self.addCleanup(srv.close)
        conns = []

        def accept():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                conns.append(c)
                threading.Thread(target=lambda c=c: [c.sendall(b) for b in iter(lambda: c.recv(65536), b"")],
                                 daemon=True).start()
        threading.Thread(target=accept, daemon=True).start()
        self.start(upstream_port=srv.getsockname()[1])
        out = os.path.join(self.tmp, "open.pcap")
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:quarantine_size_mb=1")
        p = self.procs.start([C2P, "--follow", self.caps, out], env=env)
        clients = []

        def open_n(n):
            for i in range(n):
                c = socket.create_connection(("127.0.0.1", self.lp))
                c.sendall(b"hello %d\n" % len(clients))
                self.assertEqual(c.recv(100), b"hello %d\n" % len(clients))
                clients.append(c)
            deadline = time.time() + 60  # every trace open in the follower
            while time.time() < deadline and len(os.listdir("/proc/%d/fd" % p.pid)) < len(clients) + 5:
                time.sleep(0.1)
            time.sleep(0.5)
        open_n(20)
        hwm1 = vm_status(p.pid, "VmHWM")
        open_n(200)
        hwm2 = vm_status(p.pid, "VmHWM")
        sys.stderr.write("follow VmHWM with 20 open connections: %d kB, with 220: %d kB (%.1f kB each)\n"
                         % (hwm1, hwm2, (hwm2 - hwm1) / 200.0))
        # an idle followed trace keeps no read buffer: a few kB each, not the 64 KiB read block
        self.assertLess(hwm2 - hwm1, 200 * 24)
        for c in clients:
            c.close()
        self.assertEqual(self.procs.stop(p, signal.SIGINT), 0)

    def test_corrupt_trace_among_good_ones(self):
        with open(os.path.join(self.tmp, "g.txt"), "wb") as fobj:
            fobj.write(b"good\n")
        self.start()
        f = Follow(self, [self.caps], tshark_args=["-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request",
                                                   "-T", "fields", "-e", "http.request.uri"])
        self.curl("/g.txt")
        self.assertTrue(f.wait(lambda s: "/g.txt" in s.lines), f.stderr())
        # a trace whose second field has a bad key (wire type 7) at offset 2
        with open(os.path.join(self.caps, "other_9.pb"), "wb") as bad:
            bad.write(b"\x0a\x00" + b"\x17" * 64)
        self.assertTrue(f.wait(lambda s: "other_9.pb: corrupt at offset 2" in s.stderr()), f.stderr())
        self.curl("/g.txt?again")  # the others are still converted
        self.assertTrue(f.wait(lambda s: "/g.txt?again" in s.lines), f.stderr())
        self.assertEqual(f.stop(), 1, f.stderr())  # something was skipped: said at the end
        self.assertIn("1 skipped for errors", f.stderr())

    def test_h2c_v3_length_delimited_glob(self):
        # socktap's tap socket, v3 streamed length-delimited; curl h2c to nghttpd; a quoted glob
        with open(os.path.join(self.tmp, "h2.txt"), "wb") as fobj:
            fobj.write(b"over http2\n")
        up = free_port()
        ng = self.procs.start(["nghttpd", "--no-tls", "-d", self.tmp, "-a", "127.0.0.1", str(up)])
        wait_port(up, proc=ng)
        caps = os.path.join(self.tmp, "caps")
        os.makedirs(caps)
        self.start(upstream_port=up, ts=tap_ts(os.path.join(caps, "h2"), "PROTO_BINARY_LENGTH_DELIMITED", True, rx=FULL, tx=FULL))
        with open(os.path.join(caps, "unrelated.pb"), "wb"):
            pass  # not matched by the glob: never read
        f = Follow(self, [os.path.join(caps, "h2_*")],
                   tshark_args=["-d", "tcp.port==%d,http2" % self.lp, "-Y", "http2.header.name == \":path\"",
                                "-T", "fields", "-e", "http2.headers.path"])
        for i in range(2):
            self.curl("/h2.txt", "--http2-prior-knowledge")
            self.assertTrue(f.wait(lambda s: s.lines.count("/h2.txt") == i + 1), (f.lines, f.stderr()))
        self.assertEqual(f.stop(signal.SIGTERM), 0, f.stderr())
        self.assertIn("followed 2 trace(s) (2 finished", f.stderr())

    def test_max_open_waits_and_loses_nothing(self):
        with open(os.path.join(self.tmp, "w.txt"), "wb") as fobj:
            fobj.write(b"waited\n")
        self.start()
        f = Follow(self, ["--max-open", "1", self.caps],
                   tshark_args=["-d", "tcp.port==%d,http" % self.lp, "-Y", "http.request", "-T", "fields",
                                "-e", "http.request.uri"])
        hold = socket.create_connection(("127.0.0.1", self.lp))  # an open connection takes the one slot
        self.addCleanup(hold.close)
        deadline = time.time() + 20
        while not os.listdir(self.caps) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        self.curl("/w.txt")
        self.assertTrue(f.wait(lambda s: "and later ones wait until one finishes" in s.stderr()), f.stderr())
        self.assertNotIn("/w.txt", f.lines)
        hold.close()  # its trace finishes: the waiting one is read, nothing lost
        self.assertTrue(f.wait(lambda s: "/w.txt" in s.lines), (f.lines, f.stderr()))
        self.assertEqual(f.stop(), 0, f.stderr())
        self.assertIn("followed 2 trace(s) (2 finished, 1 waited for a descriptor", f.stderr())

    def test_unknown_fields_rule(self):
        # a v2 Trace with one read event and a top-level field 15 the schema lacks, value 5
        data = b"\x0a\x02\x08\x07"  # connection {id: 7}
        ev = b"\x0a\x02\x08\x01" + b"\x12" + varint(len(b"\x0a\x05hello")) + b"\x0a\x05hello"
        data += b"\x12" + varint(len(ev)) + ev + b"\x78\x05"
        for allow, rc, word in ((False, 1, "error"), (True, 0, "warning")):
            with self.subTest(allow=allow):
                d = os.path.join(self.tmp, "u%d" % allow)
                os.makedirs(d)
                f = Follow(self, (["--allow-unknown"] if allow else []) + ["--pcapng", d])
                with open(os.path.join(d, "x_7.pb"), "wb") as t:  # appears after the start, then closed
                    t.write(data)
                self.assertTrue(f.wait(lambda s: "skipped 1 unknown field(s) with data" in s.stderr()), f.stderr())
                self.assertTrue(f.wait(lambda s: b"hello" in b"".join(epb_payloads(parse_pcapng(bytes(s.data))[0]))))
                self.assertEqual(f.stop(), rc, f.stderr())
                self.assertIn("capture2pcap: %s: %s/x_7.pb: skipped 1 unknown field(s) with data" % (word, d),
                              f.stderr())

    def test_tls_wire_decrypts_live(self):
        # curl over TLS (OpenSSL on both ends) to socktap's TLS listener with a wire capture: the
        # follower embeds each connection's key log as it grows, and a live tshark decrypts with
        # no key-log preference
        import test_tls as T
        from test_tls_wire import wire
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", T.GEN, pki], check=True, capture_output=True)
        with open(os.path.join(self.tmp, "s.txt"), "wb") as fobj:
            fobj.write(b"secret body\n")
        caps = os.path.join(self.tmp, "caps")
        os.makedirs(caps)
        self.start(ts=T.listener_tls(pki, extra=wire(os.path.join(caps, "wire"))))
        time.sleep(0.3)
        f = Follow(self, ["--pcapng", caps],
                   tshark_args=["-d", "tcp.port==%d,tls" % self.lp, "-Y", "http.request", "-T", "fields",
                                "-e", "http.request.uri"])
        for i, v in enumerate(("--tlsv1.3", "--tls-max")):
            args = [v] if v == "--tlsv1.3" else ["--tls-max", "1.2"]
            r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", os.path.join(pki, "ca.pem"),
                                "--resolve", "server.test:%d:127.0.0.1" % self.lp, *args,
                                "https://server.test:%d/s.txt" % self.lp], capture_output=True)
            self.assertEqual(r.stdout, b"secret body\n", r.stderr)
            self.assertTrue(f.wait(lambda s: s.lines.count("/s.txt") == i + 1), (v, f.lines, f.stderr()))
        self.assertEqual(f.stop(), 0, f.stderr())
        saved = self.save(f, "tls.pcapng")
        self.assert_clean(saved, "pcapng")
        with open(saved, "rb") as fobj:
            dsbs = [body for btype, body in parse_pcapng(fobj.read())[0] if btype == 0x0A]
        self.assertGreaterEqual(len(dsbs), 2)  # at least one per connection, before its packets
        self.assertTrue(all(b"CLIENT_" in d or b"SERVER_" in d for d in dsbs))
        uris = run(["tshark", "-r", saved, "-d", "tcp.port==%d,tls" % self.lp, "-Y", "http.request", "-T", "fields",
                    "-e", "http.request.uri"]).split()
        self.assertEqual(uris, ["/s.txt", "/s.txt"])

    def test_reader_gone_and_usage(self):
        self.start()
        # the viewer quits: capture2pcap ends quietly (EPIPE), no crash
        p = self.procs.start(["bash", "-o", "pipefail", "-c",
                              "'%s' --follow '%s' - | head -c 10 >/dev/null" % (C2P, self.caps)])
        self.curl("/")
        self.assertEqual(p.wait(30), 0)
        r = subprocess.run([C2P, "--follow", "-", "-"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"stdin cannot be followed", r.stderr)
        r = subprocess.run([C2P, "--max-open", "3", self.caps, "-"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--max-open goes with --follow", r.stderr)
        self.assertIn("--follow", subprocess.run([C2P, "--help"], capture_output=True, text=True).stdout)
        r = subprocess.run([C2P, "--follow", "--keylog", missing_kl := os.path.join(self.tmp, "k.log"), self.caps, "-"],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn(b"--keylog needs pcapng output", r.stderr)
        self.assertFalse(os.path.exists(missing_kl))
        missing = os.path.join(self.tmp, "nope.pb")
        r = subprocess.run([C2P, "--follow", missing, "-"], capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(("capture2pcap: error: %s: No such file or directory" % missing).encode(), r.stderr)
        # an output named like a trace inside the followed directory is never read back
        own = os.path.join(self.caps, "self_1.pb")
        err = open(os.path.join(self.tmp, "own.err"), "wb")
        self.addCleanup(err.close)
        p = self.procs.start([C2P, "--follow", self.caps, own], stderr=err)
        time.sleep(0.5)
        self.curl("/")
        time.sleep(1.5)
        self.assertEqual(self.procs.stop(p, signal.SIGINT), 0)
        with open(os.path.join(self.tmp, "own.err")) as e:
            text = e.read()
        self.assertNotIn("self_1.pb", text)
        self.assertIn("0 skipped for errors", text)


if __name__ == "__main__":
    harness.main()

"""Limits end to end: descriptor exhaustion, circuit breakers, safe defaults.

Descriptor exhaustion runs socktap at RLIMIT_NOFILE 256 (set on the running process with
prlimit) and throws 1,000 connections at it: what it can serve is served, the rest waits in the
kernel's backlog and is served once descriptors free up, and while exhausted the process must
not spin (CPU time over the exhausted period well below wall time: a behaviour check with a wide
margin, not a benchmark).
"""
import os
import resource
import selectors
import socket
import stat
import subprocess
import threading
import time
import urllib.request

import harness
from harness import E2ETest, free_port, proxy_config
from test_faults import ASAN_ENV, listen, recv_until_closed, wait_until

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of PID (all threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class EchoUpstream:
    """A selector-driven echo server for many concurrent connections, in one thread."""

    def __init__(self, test):
        self.sock = listen()
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        while not self.stop.is_set():
            for key, _ in sel.select(0.1):
                if key.fileobj is self.sock:
                    try:
                        conn, _ = self.sock.accept()
                    except BlockingIOError:
                        continue
                    self.accepted += 1
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    b = key.fileobj.recv(4096)
                except (BlockingIOError, ConnectionResetError):
                    b = None if key.fileobj.fileno() >= 0 else b""
                if b:
                    key.fileobj.send(b)
                elif b == b"":
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def close(self):
        self.stop.set()
        self.thread.join(5)


class LimitsTest(E2ETest):
    def setUp(self):
        super().setUp()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))

    def start(self, upstream_port, listener_extra="", cluster_extra="", filters_before="", args=(), **kw):
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, upstream_port, self.admin, listener_extra=listener_extra,
                           cluster_extra=cluster_extra, **kw)
        if filters_before:
            cfg = cfg.replace("      - name: envoy.tcp_proxy\n", filters_before + "      - name: envoy.tcp_proxy\n")
        self.st = self.socktap(cfg, admin_port=self.admin, env=ASAN_ENV, args=("-l", "debug") + tuple(args))
        return self.st

    # --- descriptor exhaustion ---------------------------------------------------------------

    def test_fd_exhaustion_1000_attempts(self):
        up = EchoUpstream(self)
        st = self.start(up.port, args=("--concurrency", "2"))
        self.assertEqual(recv_once(self.port, b"warm"), b"warm")
        resource.prlimit(st.pid, resource.RLIMIT_NOFILE, (256, 256))
        n = 1000
        sel = selectors.DefaultSelector()
        clients = []
        for i in range(n):  # the kernel completes the handshakes: they queue in the backlog
            c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            c.setblocking(False)
            c.send(b"%04d" % i)
            clients.append(c)
            sel.register(c, selectors.EVENT_READ, i)
        served, dropped, held = set(), set(), {}

        def pump(timeout, release):
            """Reads echoes; RELEASE closes a served connection (frees its descriptors)."""
            for key, _ in sel.select(timeout):
                c, i = key.fileobj, key.data
                try:
                    b = c.recv(16)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionResetError:
                    b = b""
                if b == b"%04d" % i:
                    served.add(i)
                    if release:
                        sel.unregister(c)
                        c.close()
                    else:
                        held[i] = c
                        sel.unregister(c)
                elif b == b"":
                    dropped.add(i)
                    sel.unregister(c)
                    c.close()

        # Phase 1: serve until descriptors run out, holding every served connection open.
        last_change, last = time.time(), -1
        while time.time() - last_change < 1.5:
            pump(0.2, release=False)
            if len(served) + len(dropped) != last:
                last, last_change = len(served) + len(dropped), time.time()
        in_phase1 = len(served)
        self.assertGreater(in_phase1, 50, "served only %d before exhaustion" % in_phase1)
        self.assertLess(in_phase1, n - 100, "the limit did not bite")
        # Exhausted: nothing to accept into. The process must wait, not spin, even with an admin
        # connection pending on the main thread's listener too.
        admin = socket.create_connection(("127.0.0.1", self.admin), timeout=10)
        self.addCleanup(admin.close)
        admin.sendall(b"GET /stats HTTP/1.0\r\n\r\n")
        cpu0, t0 = cpu_seconds(st.pid), time.time()
        time.sleep(3)
        cpu, wall = cpu_seconds(st.pid) - cpu0, time.time() - t0
        print("\nexhausted: %d served and held, %d dropped, %d waiting; CPU %.2fs over %.2fs wall"
              % (len(served), len(dropped), n - len(served) - len(dropped), cpu, wall))
        self.assertLess(cpu, 0.25 * wall, "socktap spins while out of descriptors")
        # Still serving what it holds.
        for i, c in list(held.items())[:10]:
            c.setblocking(True)
            c.settimeout(10)
            c.sendall(b"again")
            self.assertEqual(c.recv(16), b"again")
        self.assertIn("Too many open files; pausing accepts", st.logtext())
        # Phase 2: release the held connections; the backlog must be served as fds come back.
        for c in held.values():
            c.close()
        held.clear()
        deadline = time.time() + 60
        while len(served) + len(dropped) < n and time.time() < deadline:
            pump(0.5, release=True)
        print("recovered: %d served, %d dropped of %d attempts" % (len(served), len(dropped), n))
        self.assertEqual(len(served) + len(dropped), n, "connections left hanging")
        # Dropped: accepted with the last descriptor, then no descriptor for the upstream. Each
        # such drop pauses the listener, so they stay a small fraction.
        self.assertLess(len(dropped), n // 10)
        self.assertGreater(len(served), n - n // 10)
        self.assertEqual(recv_once(self.port, b"after"), b"after")
        # the admin request made while exhausted is answered once descriptors are back
        self.assertIn("pausing admin accepts", st.logtext())
        self.assertTrue(recv_until_closed(admin)[0].startswith(b"HTTP/1.0 200"))
        stats = wait_until(lambda: self.settled_stats(), what="connections closed")
        self.assertEqual(stats["cluster.backend.upstream_cx_connect_fail"], len(dropped))
        self.assertIsNone(st.proc.poll())

    def settled_stats(self):
        s = self.st.stats()
        return s if s["listener.127.0.0.1_%d.downstream_cx_active" % self.port] == 0 else None

    # --- circuit breakers --------------------------------------------------------------------

    def hold(self, k):
        """Opens K proxied connections that stay open; returns them once each got its echo."""
        out = []
        for i in range(k):
            c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            c.sendall(b"hold")
            out.append(c)
        return out

    def test_cluster_max_connections(self):
        up = EchoUpstream(self)
        cb = ("    circuit_breakers:\n      thresholds: [{priority: DEFAULT, max_connections: 3}]\n")
        st = self.start(up.port, cluster_extra=cb, args=("--concurrency", "2"))
        held = self.hold(3)
        for c in held:
            self.assertEqual(c.recv(16), b"hold")
        # over the limit: closed at once, across both workers
        for _ in range(4):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
                self.assertEqual(recv_until_closed(c)[0], b"")
        s = st.stats()
        self.assertEqual(s["cluster.backend.upstream_cx_overflow"], 4)
        self.assertEqual(s["cluster.backend.upstream_cx_active"], 3)
        self.assertEqual(s["cluster.backend.upstream_cx_total"], 3)
        self.assertEqual(up.accepted, 3)
        self.assertIn("cluster backend overflow (max_connections 3)", st.logtext())
        # a slot frees: served again
        held.pop().close()
        wait_until(lambda: st.stats()["cluster.backend.upstream_cx_active"] == 2, what="a free slot")
        self.assertEqual(recv_once(self.port, b"room"), b"room")
        for c in held:
            c.close()

    def test_listener_connection_limit(self):
        up = EchoUpstream(self)
        flt = ("      - name: envoy.filters.network.connection_limit\n"
               "        typed_config:\n"
               "          \"@type\": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit\n"
               "          stat_prefix: lim\n"
               "          max_connections: 2\n")
        st = self.start(up.port, filters_before=flt, args=("--concurrency", "2"))
        held = self.hold(2)
        for c in held:
            self.assertEqual(c.recv(16), b"hold")
        for _ in range(5):
            c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            self.assertEqual(recv_until_closed(c)[0], b"")
            c.close()
        s = st.stats()
        lname = "listener.127.0.0.1_%d." % self.port
        self.assertEqual(s["connection_limit.lim.limited_connections"], 5)
        self.assertEqual(s["connection_limit.lim.active_connections"], 2)
        self.assertEqual(s[lname + "downstream_cx_overflow"], 5)
        self.assertEqual(s["cluster.backend.upstream_cx_total"], 2)  # refused before the upstream
        self.assertEqual(up.accepted, 2)
        self.assertIn("at its connection limit (2)", st.logtext())
        for c in held:
            c.close()
        wait_until(lambda: st.stats()["connection_limit.lim.active_connections"] == 0, what="slots freed")
        self.assertEqual(recv_once(self.port, b"free"), b"free")
        self.assertEqual(st.stats()["connection_limit.lim.limited_connections"], 5)

    # --- safe defaults -----------------------------------------------------------------------

    def capture_ts(self, prefix, indent="      "):
        return ("%stransport_socket:\n%s  name: envoy.transport_sockets.capture\n"
                "%s  config: {file_sink: {path_prefix: \"%s\", format: PROTO_BINARY}}\n") % (indent, indent, indent, prefix)

    def test_world_writable_capture_dir_refused(self):
        shared = os.path.join(self.tmp, "shared")
        os.mkdir(shared)
        os.chmod(shared, 0o777)  # world-writable, no sticky bit: others could swap our files
        cfg = os.path.join(self.tmp, "ww.yaml")
        with open(cfg, "w") as f:
            f.write(proxy_config(free_port(), free_port(), listener_ts=self.capture_ts(os.path.join(shared, "cap"))))
        out = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", cfg], capture_output=True, text=True)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("ww.yaml:", out.stderr)
        self.assertIn("transport_socket.config.file_sink.path_prefix", out.stderr)
        self.assertIn("world-writable", out.stderr)
        # with the sticky bit (as /tmp) it is accepted
        os.chmod(shared, 0o1777)
        out = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", cfg], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)

    def test_key_log_symlink_not_followed_and_0600(self):
        pki = os.path.join(self.tmp, "pki")
        os.mkdir(pki)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-keyout", os.path.join(pki, "k.pem"),
                        "-out", os.path.join(pki, "c.pem")], check=True, capture_output=True)
        victim = os.path.join(self.tmp, "victim")
        with open(victim, "w") as f:
            f.write("keep me\n")
        link = os.path.join(self.tmp, "keys.log")
        os.symlink(victim, link)
        tls = ("      transport_socket:\n"
               "        name: envoy.transport_sockets.tls\n"
               "        typed_config:\n"
               "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
               "          common_tls_context:\n"
               "            tls_certificates: [{certificate_chain: {filename: %s}, private_key: {filename: %s}}]\n"
               "            key_log: {path: %s}\n") % (os.path.join(pki, "c.pem"), os.path.join(pki, "k.pem"), "%s")
        cfg = os.path.join(self.tmp, "kl.yaml")
        with open(cfg, "w") as f:
            f.write(proxy_config(free_port(), free_port(), listener_ts=tls % link))
        out = subprocess.run([harness.SOCKTAP, "-c", cfg], capture_output=True, text=True, timeout=20)
        self.assertEqual(out.returncode, 1, out.stderr)
        self.assertIn("keys.log", out.stderr)
        with open(victim) as f:
            self.assertEqual(f.read(), "keep me\n")
        self.assertTrue(os.path.islink(link))
        # a plain path is created 0600, even under a permissive umask
        plain = os.path.join(self.tmp, "plain-keys.log")
        with open(cfg, "w") as f:
            f.write(proxy_config(free_port(), free_port(), listener_ts=tls % plain))
        old = os.umask(0)
        try:
            out = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", cfg], capture_output=True, text=True)
        finally:
            os.umask(old)
        self.assertEqual(out.returncode, 0, out.stderr)
        if os.path.exists(plain):
            self.assertEqual(stat.S_IMODE(os.stat(plain).st_mode), 0o600)

    def test_capture_file_mode_and_symlink(self):
        up = EchoUpstream(self)
        prefix = os.path.join(self.tmp, "cap")
        victim = os.path.join(self.tmp, "victim")
        with open(victim, "w") as f:
            f.write("keep me\n")
        for i in range(1, 5):
            os.symlink(victim, "%s_%d.pb" % (prefix, i))
        old = os.umask(0)  # the file must be 0600 whatever the umask
        try:
            st = self.start(up.port, listener_ts=self.capture_ts(prefix))
        finally:
            os.umask(old)
        self.assertEqual(recv_once(self.port, b"secret"), b"secret")
        self.assertEqual(st.stop(), 0)
        with open(victim) as f:
            self.assertEqual(f.read(), "keep me\n")
        files = [f for f in os.listdir(self.tmp) if f.startswith("cap_") and not os.path.islink(os.path.join(self.tmp, f))]
        self.assertEqual(len(files), 1, files)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.tmp, files[0])).st_mode), 0o600)

    def test_admin_not_loopback_warns(self):
        up = EchoUpstream(self)
        self.port = free_port()
        admin = free_port("0.0.0.0")
        cfg = proxy_config(self.port, up.port).replace(
            "admin:", "") + "admin:\n  address: {socket_address: {address: 0.0.0.0, port_value: %d}}\n" % admin
        st = self.socktap(cfg)
        st.wait_log("admin listening on")
        self.assertIn("NOT loopback", st.logtext())
        self.assertIn("[warning]", st.logtext().split("NOT loopback")[0].rsplit("\n", 1)[-1])
        # the loopback default stays quiet
        self.port = free_port()
        st2 = self.socktap(proxy_config(self.port, up.port, free_port()))
        st2.wait_log("admin listening on")
        self.assertNotIn("NOT loopback", st2.logtext())

    def test_admin_request_headers_bounded(self):
        """Endless request headers to /stats: refused past Envoy's 60 KiB (max_request_headers_kb
        default), RSS does not follow, and the admin keeps answering (124 MiB grew RSS 113 MB)."""
        up = EchoUpstream(self)
        self.port = free_port()
        admin = free_port()
        st = self.socktap(proxy_config(self.port, up.port, admin), admin_port=admin)
        rss0 = harness.vm_status(st.proc.pid, "VmRSS")
        sent, closed = 0, False
        line = b"X-Fill: " + b"a" * 1000 + b"\r\n"
        with socket.create_connection(("127.0.0.1", admin), timeout=10) as c:
            c.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\n")
            try:
                while sent < 64 << 20:
                    c.sendall(line * 64)
                    sent += len(line) * 64
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            if not closed:
                reply = c.recv(4096)
                closed = True
                self.assertFalse(reply.startswith(b"HTTP/1.1 200"), reply[:200])
        self.assertTrue(closed)
        # the peer stops reading once it refuses: far less than the 64 MiB we had to send
        self.assertLess(sent, 16 << 20, "admin kept reading %d bytes of headers" % sent)
        rss1 = harness.vm_status(st.proc.pid, "VmRSS")
        self.assertLess(rss1 - rss0, 16 << 10, "RSS %d kB -> %d kB" % (rss0, rss1))
        self.assertIn("downstream_cx_total", urllib_get(admin, "/stats"))
        self.assertEqual(st.stop(), 0)


def recv_once(port, payload):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        return recv_until_closed(c)[0]


def urllib_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return r.read().decode()


if __name__ == "__main__":
    harness.main()

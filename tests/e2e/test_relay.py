"""Proxy core end to end: real clients and upstreams on loopback through build/socktap."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import E2ETest, free_port, proxy_config, sha256, wait_port


def serve_once(listener, handler):
    """Accepts one connection on LISTENER in a thread and runs HANDLER(conn)."""
    result = {}

    def run():
        conn, _ = listener.accept()
        try:
            result["value"] = handler(conn)
        except Exception as e:  # reported by the test through result
            result["error"] = e
        finally:
            conn.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def listen(host="127.0.0.1"):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(4096)
    return s


class RelayTest(E2ETest):
    def listen(self, host="127.0.0.1"):
        s = listen(host)
        self.addCleanup(s.close)
        return s

    def start_proxy(self, upstream_port, host="127.0.0.1", **kw):
        self.port = free_port(host)
        self.admin = free_port()
        cfg = proxy_config(self.port, upstream_port, self.admin, host=host, upstream_host=host, **kw)
        args = kw.pop("args", ())
        return self.socktap(cfg, wait_ports=(), admin_port=self.admin, args=args)

    def test_curl_http_server(self):
        with open(os.path.join(self.tmp, "hello.txt"), "wb") as f:
            f.write(b"hello through socktap\n" * 1000)
        up, _ = self.start_http_upstream()
        st = self.start_proxy(up)
        out = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}",
                              "http://127.0.0.1:%d/hello.txt" % self.port],
                             capture_output=True, timeout=30)
        body, _, code = out.stdout.rpartition(b"\n")
        self.assertEqual(code, b"200")
        self.assertEqual(body, b"hello through socktap\n" * 1000)
        # the worker counts a write after the kernel took it, so the client may be faster: poll
        deadline = time.time() + 10
        while time.time() < deadline:
            stats = st.stats()
            if stats["tcp.ingress_tcp.downstream_cx_tx_bytes_total"] > 22000:
                break
            time.sleep(0.05)
        self.assertGreaterEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % self.port], 1)
        self.assertGreaterEqual(stats["cluster.backend.upstream_cx_total"], 1)
        self.assertGreater(stats["tcp.ingress_tcp.downstream_cx_tx_bytes_total"], 22000)
        self.assertGreater(stats["cluster.backend.upstream_cx_rx_bytes_total"], 22000)

    def test_ipv6(self):
        up_sock = self.listen("::1")
        st = self.start_proxy(up_sock.getsockname()[1], host="::1")
        t, res = serve_once(up_sock, lambda c: c.sendall(c.recv(100).upper()))
        c = socket.create_connection(("::1", self.port))
        c.sendall(b"ping over v6")
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(c.recv(100), b"PING OVER V6")
        c.close()
        t.join(10)

    def test_bulk_both_directions_sha256(self):
        size = int(os.environ.get("SOCKTAP_BULK_BYTES", 256 << 20))
        up_sock = self.listen()
        st = self.start_proxy(up_sock.getsockname()[1])
        down_data = os.urandom(1 << 20)
        up_data = os.urandom(1 << 20)

        def upstream(conn):
            # echo-free: upstream sends its own stream while hashing what it receives
            h = __import__("hashlib").sha256()
            sender = threading.Thread(target=lambda: [conn.sendall(up_data) for _ in range(size >> 20)]
                                      or conn.shutdown(socket.SHUT_WR))
            sender.start()
            n = 0
            while True:
                b = conn.recv(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
            sender.join()
            return n, h.hexdigest()

        t, res = serve_once(up_sock, upstream)
        c = socket.create_connection(("127.0.0.1", self.port))
        rh = __import__("hashlib").sha256()
        got = [0]

        def reader():
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                rh.update(b)
                got[0] += len(b)

        rt = threading.Thread(target=reader)
        rt.start()
        for _ in range(size >> 20):
            c.sendall(down_data)
        c.shutdown(socket.SHUT_WR)
        rt.join(300)
        t.join(300)
        c.close()
        expect_down = __import__("hashlib").sha256(down_data * (size >> 20)).hexdigest() if size <= (64 << 20) else None
        n, h = res["value"]
        self.assertEqual(n, size)
        self.assertEqual(got[0], size)
        exp_d = __import__("hashlib").sha256()
        exp_u = __import__("hashlib").sha256()
        for _ in range(size >> 20):
            exp_d.update(down_data)
            exp_u.update(up_data)
        self.assertEqual(h, exp_d.hexdigest())
        self.assertEqual(rh.hexdigest(), exp_u.hexdigest())
        del expect_down

    def test_half_close(self):
        up_sock = self.listen()
        st = self.start_proxy(up_sock.getsockname()[1])

        def upstream(conn):
            data = b""
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                data += b
            # reply only after EOF: the client's half-close must have travelled
            conn.sendall(b"saw %d bytes: " % len(data) + data[::-1] * 100)
            return data

        t, res = serve_once(up_sock, upstream)
        c = socket.create_connection(("127.0.0.1", self.port))
        c.sendall(b"request-body")
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            b = c.recv(65536)
            if not b:
                break
            reply += b
        t.join(10)
        self.assertEqual(res["value"], b"request-body")
        self.assertEqual(reply, b"saw 12 bytes: " + b"ydob-tseuqer" * 100)

    def test_slow_reader_memory_bounded(self):
        """Upstream sends fast, the client reads slowly: backpressure must hold socktap's memory
        to a few buffer limits, whatever the transfer size."""
        size = int(os.environ.get("SOCKTAP_SLOW_BYTES", 1 << 30))
        limit = 256 * 1024
        up_sock = self.listen()
        self.port = free_port()
        self.admin = free_port()
        extra = "    per_connection_buffer_limit_bytes: %d\n" % limit
        cfg = proxy_config(self.port, up_sock.getsockname()[1], self.admin,
                           listener_extra=extra, cluster_extra=extra)
        # ASan's quarantine would otherwise keep freed buffers resident and hide the real bound
        st = self.socktap(cfg, admin_port=self.admin,
                          env={"ASAN_OPTIONS": "quarantine_size_mb=1:detect_leaks=1"})
        chunk = os.urandom(1 << 20)

        def upstream(conn):
            for _ in range(size >> 20):
                conn.sendall(chunk)
            return True

        t, res = serve_once(up_sock, upstream)
        c = socket.create_connection(("127.0.0.1", self.port))
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        baseline = harness.vm_status(st.pid, "VmRSS")
        h = __import__("hashlib").sha256()
        got = 0
        while got < size:
            b = c.recv(256 * 1024)
            if not b:
                break
            h.update(b)
            got += len(b)
            if got % (8 << 20) < len(b):
                time.sleep(0.02)  # a slow reader: the proxy must stop reading upstream, not buffer
        hwm = harness.vm_status(st.pid, "VmHWM")
        c.close()
        t.join(60)
        exp = __import__("hashlib").sha256()
        for _ in range(size >> 20):
            exp.update(chunk)
        self.assertEqual(got, size)
        self.assertEqual(h.hexdigest(), exp.hexdigest())
        print("slow reader: %d MiB relayed, baseline RSS %.1f MiB, VmHWM %.1f MiB, limit %d KiB"
              % (size >> 20, baseline / 1024, hwm / 1024, limit >> 10))
        self.assertLess(hwm - baseline, 16 * limit // 1024,
                        "socktap grew by %d kB for a %d kB buffer limit" % (hwm - baseline, limit >> 10))

    def test_upstream_refused(self):
        dead = free_port()  # nothing listens there
        st = self.start_proxy(dead)
        c = socket.create_connection(("127.0.0.1", self.port))
        c.settimeout(10)
        try:
            self.assertEqual(c.recv(10), b"")  # closed promptly
        except ConnectionResetError:
            pass
        c.close()
        deadline = time.time() + 5
        while time.time() < deadline and st.stats().get("cluster.backend.upstream_cx_connect_fail", 0) < 1:
            time.sleep(0.05)
        self.assertEqual(st.stats()["cluster.backend.upstream_cx_connect_fail"], 1)

    def test_upstream_connect_timeout(self):
        # a listener with backlog 0 whose queue we fill: further SYNs are dropped, never answered
        blk = socket.socket()
        blk.bind(("127.0.0.1", 0))
        blk.listen(0)
        port = blk.getsockname()[1]
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(f)
        time.sleep(0.2)
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, port, self.admin).replace("connect_timeout: 1s", "connect_timeout: 0.3s")
        st = self.socktap(cfg, admin_port=self.admin)
        c = socket.create_connection(("127.0.0.1", self.port))
        c.settimeout(10)
        t0 = time.time()
        try:
            self.assertEqual(c.recv(10), b"")
        except ConnectionResetError:
            pass
        c.close()
        self.assertEqual(st.stats()["cluster.backend.upstream_cx_connect_timeout"], 1)
        for f in fillers:
            f.close()
        blk.close()

    def test_idle_timeout(self):
        up_sock = self.listen()
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, up_sock.getsockname()[1], self.admin,
                           proxy_extra="          idle_timeout: 0.5s\n")
        st = self.socktap(cfg, admin_port=self.admin)
        t, res = serve_once(up_sock, lambda conn: conn.recv(10))
        c = socket.create_connection(("127.0.0.1", self.port))
        c.settimeout(10)
        self.assertEqual(c.recv(10), b"")  # socktap closed the idle connection
        c.close()
        t.join(10)
        self.assertEqual(st.stats()["tcp.ingress_tcp.idle_timeout"], 1)

    def test_sigterm_drain(self):
        up_sock = self.listen()
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, up_sock.getsockname()[1], self.admin)
        st = self.socktap(cfg, admin_port=self.admin, args=("--drain-time-s", "10"))

        def upstream(conn):
            req = conn.recv(100)
            time.sleep(1.0)  # reply after the SIGTERM: the open connection must be allowed to finish
            conn.sendall(b"late reply to " + req)
            return req

        t, res = serve_once(up_sock, upstream)
        c = socket.create_connection(("127.0.0.1", self.port))
        c.sendall(b"drain-me")
        time.sleep(0.3)
        os.kill(st.pid, signal.SIGTERM)
        time.sleep(0.2)
        # new connections are refused while draining
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=2).recv(1)
        c.settimeout(10)
        self.assertEqual(c.recv(100), b"late reply to drain-me")
        c.close()
        t.join(10)
        self.assertEqual(st.proc.wait(15), 0)

    def test_drain_time_limit_closes(self):
        up_sock = self.listen()
        self.port = free_port()
        cfg = proxy_config(self.port, up_sock.getsockname()[1])
        st = self.socktap(cfg, args=("--drain-time-s", "1"))
        t, res = serve_once(up_sock, lambda conn: conn.recv(10))
        c = socket.create_connection(("127.0.0.1", self.port))
        time.sleep(0.2)
        os.kill(st.pid, signal.SIGTERM)
        self.assertEqual(st.proc.wait(10), 0)  # exits after 1 s even with a live connection
        c.close()

    def test_validate_mode(self):
        good = os.path.join(self.tmp, "good.yaml")
        with open(good, "w") as f:
            f.write(proxy_config(free_port(), free_port()))
        out = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", good], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), "configuration '%s' OK" % good)
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write(proxy_config(free_port(), free_port()).replace("port_value: %d}}\n    filter" % 0, "x"))
            f.write("\n")
        with open(bad, "w") as f:
            f.write("static_resources:\n  listeners:\n  - address: {socket_address: {address: 127.0.0.1, port_value: http}}\n")
        out = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", bad], capture_output=True, text=True)
        self.assertEqual(out.returncode, 1)
        self.assertIn("bad.yaml:3:", out.stderr)
        self.assertIn("static_resources.listeners[0].address.socket_address.port_value", out.stderr)
        self.assertIn('got "http"', out.stderr)

    def test_log_lines_name_time_level_worker_connection(self):
        up_sock = self.listen()
        self.port = free_port()
        st = self.socktap(proxy_config(self.port, up_sock.getsockname()[1]), args=("-l", "debug"))
        t, res = serve_once(up_sock, lambda conn: conn.recv(10))
        c = socket.create_connection(("127.0.0.1", self.port))
        c.sendall(b"x")
        t.join(10)
        c.close()
        deadline = time.time() + 10
        pat = (r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z\]\[debug\]\[W\d+\]\[C0\] "
               r"new connection from 127\.0\.0\.1 on 127\.0\.0\.1:%d$" % self.port)
        while time.time() < deadline and not re.search(pat, st.logtext(), re.M):
            time.sleep(0.05)
        self.assertRegex(st.logtext(), re.compile(pat, re.M))
        self.assertRegex(st.logtext(), re.compile(r"^\[[^]]+\]\[info\]\[main\] listening on ", re.M))

    def test_command_line(self):
        run = lambda *a: subprocess.run([harness.SOCKTAP, *a], capture_output=True, text=True)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^socktap version \d+\.\d+\.\d+")
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--drain-time-s", r.stdout)
        r = run("-c", "x.yaml", "--concurrency", "zero")
        self.assertEqual(r.returncode, 2)
        self.assertIn('--concurrency: expected 1..1024, got "zero"', r.stderr)
        r = run("-c", "x.yaml", "-l", "loud")
        self.assertEqual(r.returncode, 2)
        self.assertIn('got "loud"', r.stderr)
        r = run("--mode", "validate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing -c FILE", r.stderr)
        r = run("--mode", "validate", "-c", os.path.join(self.tmp, "nope.yaml"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.yaml", r.stderr)

    def test_many_concurrent_connections(self):
        n = 2000
        up_sock = self.listen()
        st = self.start_proxy(up_sock.getsockname()[1])
        stop = threading.Event()

        def upstream_loop():
            import selectors
            sel = selectors.DefaultSelector()
            up_sock.setblocking(False)
            sel.register(up_sock, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in sel.select(0.1):
                    if key.fileobj is up_sock:
                        try:
                            conn, _ = up_sock.accept()
                        except BlockingIOError:
                            continue
                        conn.setblocking(False)
                        sel.register(conn, selectors.EVENT_READ)
                    else:
                        try:
                            b = key.fileobj.recv(100)
                        except (BlockingIOError, ConnectionResetError):
                            b = None
                        if b:
                            key.fileobj.send(b"ok:" + b)
                        elif b == b"":
                            sel.unregister(key.fileobj)
                            key.fileobj.close()

        ut = threading.Thread(target=upstream_loop, daemon=True)
        ut.start()
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 16384), hard))
        clients = []
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            clients.append(c)
        for i, c in enumerate(clients):
            c.sendall(b"%d" % i)
        served = 0
        for i, c in enumerate(clients):
            expect = b"ok:%d" % i
            got = b""
            while len(got) < len(expect):
                b = c.recv(100)
                if not b:
                    break
                got += b
            served += got == expect
        stats = st.stats()
        self.assertEqual(served, n)
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_active" % self.port], n)
        rss_kb = harness.vm_status(st.pid, "VmRSS")
        print("RSS with %d open connections: %.1f MiB" % (n, rss_kb / 1024))
        for c in clients:
            c.close()
        stop.set()
        ut.join(5)


if __name__ == "__main__":
    harness.main()

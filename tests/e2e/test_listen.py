"""Listener start-up (issue 9, section 4): a taken port, a second socktap on the same port,
port_value 0, and no listener at all.

Each checks the exit status and the log, and that a sanitizer build said nothing: before the
fix, a listener 0 that could not bind was freed twice (ASan: double free), zero listeners leaked,
a second socktap silently shared the port through SO_REUSEPORT, and port 0 gave every worker a
port of its own while `:0` was logged.
"""
import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import E2ETest, free_port, proxy_config


def echo_server(tag=b"", handler=None, bind=("127.0.0.1", 0)):
    """A threaded echo upstream; returns its listening socket. TAG (test_reload: which upstream
    served a connection) is sent before each echoed chunk. HANDLER(conn), when given, serves each
    connection instead of the echo (it owns and closes the connection). BIND: where it listens."""
    srv = socket.socket()
    srv.bind(bind)
    srv.listen(128)

    def serve(c):
        with c:
            while True:
                b = c.recv(65536)
                if not b:
                    return
                c.sendall(tag + b)

    def loop():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handler or serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv


def roundtrip(port, payload, source=None):
    """PAYLOAD to 127.0.0.1:PORT (from SOURCE's address when given), half-close, all the answer."""
    src = (source, 0) if source else None
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=src) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = c.recv(65536)
            if not b:
                return out
            out += b


SANITIZER_WORDS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "double-free")


class ListenTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.up = echo_server()
        self.addCleanup(self.up.close)
        self.up_port = self.up.getsockname()[1]

    def run_to_exit(self, cfg, *args, timeout=30):
        """Runs socktap on CFG to its exit: returns (status, log)."""
        path = os.path.join(self.tmp, "cfg-%d.yaml" % time.time_ns())
        with open(path, "w") as f:
            f.write(cfg)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        p = subprocess.run([harness.SOCKTAP, "-c", path, *args], capture_output=True,
                           timeout=timeout, env=env)
        return p.returncode, (p.stdout + p.stderr).decode(errors="replace")

    def assert_sanitizers_silent(self, log):
        for w in SANITIZER_WORDS:
            self.assertNotIn(w, log)

    def test_taken_port_exits_1_naming_the_listener(self):
        """Listener 0's port is held by a plain socket: exit 1, the listener named, no double free
        (ASan reported one here before) and no leak."""
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        port = holder.getsockname()[1]
        for workers in ("1", "3"):
            rc, log = self.run_to_exit(proxy_config(port, self.up_port), "--concurrency", workers)
            self.assertEqual(rc, 1, log)
            self.assertIn("listener ingress cannot listen on 127.0.0.1:%d: Address already in use"
                          % port, log)
            self.assertEqual(log.count("cannot listen"), 1, log)
            self.assert_sanitizers_silent(log)

    def test_second_listener_taken_exits_1(self):
        """The second of two listeners cannot bind: the first one's sockets are closed again
        and nothing leaks."""
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        self.addCleanup(holder.close)
        taken, free = holder.getsockname()[1], free_port()
        cfg = proxy_config(free, self.up_port)
        second = ("  - name: second\n    address: {socket_address: {address: \"127.0.0.1\", "
                  "port_value: %d}}\n    filter_chains:\n    - filters:\n      - name: envoy.tcp_proxy\n"
                  "        config: {stat_prefix: second_tcp, cluster: backend}\n" % taken)
        cfg = cfg.replace("  clusters:\n", second + "  clusters:\n")
        rc, log = self.run_to_exit(cfg, "--concurrency", "2")
        self.assertEqual(rc, 1, log)
        self.assertIn("listener second cannot listen on 127.0.0.1:%d: Address already in use"
                      % taken, log)
        self.assert_sanitizers_silent(log)

    def test_second_socktap_on_same_port_refused(self):
        """Workers of one process share a port; another process gets "address in use", though
        both use SO_REUSEPORT (before: the second silently took a share of the connections)."""
        port, admin = free_port(), free_port()
        first = self.socktap(proxy_config(port, self.up_port, admin), admin_port=admin,
                             args=("--concurrency", "2"))
        rc, log = self.run_to_exit(proxy_config(port, self.up_port, free_port()),
                                   "--concurrency", "2")
        self.assertEqual(rc, 1, log)
        self.assertIn("listener ingress cannot listen on 127.0.0.1:%d: Address already in use"
                      % port, log)
        self.assert_sanitizers_silent(log)
        # the first one serves every connection
        n = 40
        for i in range(n):
            self.assertEqual(roundtrip(port, b"hello %d" % i), b"hello %d" % i)
        s = first.stats()
        self.assertEqual(s["listener.127.0.0.1_%d.downstream_cx_total" % port], n)
        self.assertEqual(first.stop(), 0)

    def test_port_zero_bound_once_and_logged(self):
        """port_value 0: one kernel-chosen port shared by all workers, and that port logged."""
        admin = free_port()
        st = self.socktap(proxy_config(0, self.up_port, admin), admin_port=admin,
                          args=("--concurrency", "3", "-l", "debug"))
        # the admin port answers before the workers have logged their listeners: wait for the line
        st.wait_log("(3 workers)")
        m = re.search(r"listening on 127\.0\.0\.1:(\d+) \(3 workers\)", st.logtext())
        self.assertIsNotNone(m, st.logtext())
        port = int(m.group(1))
        self.assertNotEqual(port, 0)
        n = 60
        for i in range(n):
            self.assertEqual(roundtrip(port, b"zero %d" % i), b"zero %d" % i)
        log = st.logtext()
        # every worker listens on that port: each took some of the connections
        for w in range(3):
            self.assertRegex(log, r"\[W%d\]\[C\d+\] new connection from 127\.0\.0\.1 on "
                             r"127\.0\.0\.1:%d" % (w, port))
        # stats keep the configured name, as the config says it
        self.assertEqual(st.stats()["listener.127.0.0.1_0.downstream_cx_total"], n)
        self.assertEqual(st.stop(), 0)

    def test_no_listener_runs_and_stops_clean(self):
        """Zero listeners: says so, stops on SIGTERM with status 0, nothing leaked."""
        cfg = ("static_resources:\n  clusters:\n  - name: backend\n    connect_timeout: 1s\n"
               "    hosts: [{socket_address: {address: 127.0.0.1, port_value: %d}}]\n" % self.up_port)
        path = os.path.join(self.tmp, "none.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        log = os.path.join(self.tmp, "none.log")
        p = self.procs.start([harness.SOCKTAP, "-c", path, "--concurrency", "2"], log=log,
                             env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"))

        def text():
            with open(log) as f:
                return f.read()
        deadline = time.time() + 15
        while time.time() < deadline and "no listeners configured" not in text():
            self.assertIsNone(p.poll(), text())
            time.sleep(0.05)
        self.assertIn("no listeners configured: serving nothing (2 workers)", text())
        self.assertEqual(self.procs.stop(p, signal.SIGTERM), 0, text())
        self.assert_sanitizers_silent(text())


if __name__ == "__main__":
    harness.main()

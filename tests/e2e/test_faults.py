"""Relay faults end to end: peers that reset, close early or vanish, hosts that refuse.

Each test checks what the other side sees (a reset stays a reset, a close stays a close), the
Envoy-named counters, the debug log, and that socktap is back to its baseline afterwards: same
descriptor count, RSS within a tolerance, no active connection left in the gauges.
"""
import os
import socket
import struct
import threading
import time

import harness
from harness import E2ETest, free_port, proxy_config


def sanitized():
    """ASan keeps freed memory in quarantine and shadow: RSS bounds only mean much without it."""
    with open(harness.SOCKTAP, "rb") as f:
        return b"__asan_init" in f.read()


ASAN_ENV = {"ASAN_OPTIONS": "quarantine_size_mb=1:detect_leaks=1"}


def listen(host="127.0.0.1"):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(128)
    return s


def reset_close(sock):
    """Closes SOCK with an RST (SO_LINGER 0), as a crashing peer or a middlebox would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_until_closed(sock, timeout=10):
    """Reads SOCK to its end: returns (data, 'close' | 'reset')."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return bytes(data), "close"
            data.extend(b)
    except ConnectionResetError:
        return bytes(data), "reset"


def wait_until(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))


class FaultTest(E2ETest):
    """Starts socktap (one worker, debug log) and checks its descriptors, RSS and gauges against
    a baseline taken after one warm-up connection."""

    RSS_TOLERANCE_KB = 8 * 1024

    def start(self, upstream_ports, attempts=None, extra_cluster="", concurrency=1):
        self.port = free_port()
        self.admin = free_port()
        proxy_extra = "          max_connect_attempts: %d\n" % attempts if attempts else ""
        cfg = proxy_config(self.port, upstream_ports[0], self.admin, proxy_extra=proxy_extra,
                           cluster_extra=extra_cluster)
        hosts = ", ".join("{socket_address: {address: 127.0.0.1, port_value: %d}}" % p for p in upstream_ports)
        cfg = cfg.replace("hosts: [{socket_address: {address: \"127.0.0.1\", port_value: %d}}]" % upstream_ports[0],
                          "hosts: [%s]" % hosts)
        self.st = self.socktap(cfg, admin_port=self.admin, env=ASAN_ENV,
                               args=("--concurrency", str(concurrency), "-l", "debug"))
        return self.st

    def stat(self, name):
        return self.st.stats().get(name, 0)

    def warm_up(self, up_sock):
        """One full connection through UP_SOCK, then the baseline."""
        t = threading.Thread(target=lambda: self._echo_once(up_sock), daemon=True)
        t.start()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
            c.sendall(b"warm")
            c.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_until_closed(c), (b"warm", "close"))
        t.join(10)
        self.settled(1)
        self.base_fds = harness.fd_count(self.st.pid)
        self.base_rss = harness.vm_status(self.st.pid, "VmRSS")

    @staticmethod
    def _echo_once(up_sock):
        conn, _ = up_sock.accept()
        with conn:
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                conn.sendall(b)

    def settled(self, destroyed):
        """Waits until DESTROYED downstream connections are gone and none is active."""
        lname = "listener.127.0.0.1_%d." % self.port
        wait_until(lambda: self.stat(lname + "downstream_cx_destroy") >= destroyed,
                   what="%d destroyed downstream connections" % destroyed)
        s = self.st.stats()
        self.assertEqual(s[lname + "downstream_cx_active"], 0)
        self.assertEqual(s["cluster.backend.upstream_cx_active"], 0)
        return s

    def assert_back_to_baseline(self):
        # fds close synchronously with the session; the wait covers the admin request itself
        wait_until(lambda: harness.fd_count(self.st.pid) <= self.base_fds, timeout=5,
                   what="descriptors back to %d (now %d)" % (self.base_fds, harness.fd_count(self.st.pid)))
        rss = harness.vm_status(self.st.pid, "VmRSS")
        print("fds %d (baseline %d), RSS %d kB (baseline %d kB)"
              % (harness.fd_count(self.st.pid), self.base_fds, rss, self.base_rss))
        self.assertLess(rss - self.base_rss, self.RSS_TOLERANCE_KB * (4 if sanitized() else 1))

    # --- upstream faults ---------------------------------------------------------------------

    def test_upstream_reset_mid_stream(self):
        up = listen()
        self.addCleanup(up.close)
        self.start([up.getsockname()[1]])
        self.warm_up(up)
        sent = os.urandom(256 * 1024)

        def upstream():
            conn, _ = up.accept()
            conn.recv(100)
            conn.sendall(sent)
            conn.recv(100)  # the client's "got it": everything before the RST was delivered
            reset_close(conn)

        t = threading.Thread(target=upstream, daemon=True)
        t.start()
        c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        c.sendall(b"req")
        got = bytearray()
        while len(got) < len(sent):
            got.extend(c.recv(65536))
        c.sendall(b"got it")
        rest, how = recv_until_closed(c)
        c.close()
        t.join(10)
        self.assertEqual(bytes(got), sent)
        self.assertEqual(rest, b"")
        self.assertEqual(how, "reset", "an upstream reset must reach the client as a reset")
        s = self.settled(2)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy_remote"], 1)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy_local"], 1)  # the warm-up
        self.assertEqual(s["cluster.backend.upstream_cx_destroy"], 2)
        self.assertIn("upstream reset by peer", self.st.logtext())
        self.assert_back_to_baseline()

    def test_upstream_closes_before_replying(self):
        up = listen()
        self.addCleanup(up.close)
        self.start([up.getsockname()[1]])
        self.warm_up(up)

        def upstream():
            conn, _ = up.accept()
            got = b""
            while len(got) < 7:
                got += conn.recv(100)
            conn.close()  # everything read: a FIN, no reply

        t = threading.Thread(target=upstream, daemon=True)
        t.start()
        c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        c.sendall(b"request")
        data, how = recv_until_closed(c)
        t.join(10)
        self.assertEqual((data, how), (b"", "close"), "an upstream close must reach the client as a close")
        c.close()
        s = self.settled(2)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy_remote"], 1)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy"], 2)
        self.assert_back_to_baseline()

    def test_client_vanishes_mid_transfer(self):
        up = listen()
        self.addCleanup(up.close)
        self.start([up.getsockname()[1]])
        self.warm_up(up)
        outcome = {}

        def upstream():
            conn, _ = up.accept()
            conn.settimeout(20)
            chunk = os.urandom(64 * 1024)
            n = 0
            try:
                while n < (2 << 30):  # far more than the client will read
                    conn.sendall(chunk)
                    n += len(chunk)
                outcome["end"] = "never closed"
            except (BrokenPipeError, ConnectionResetError):
                outcome["end"] = "closed"
            except socket.timeout:
                outcome["end"] = "stalled"
            outcome["sent"] = n
            conn.close()

        t = threading.Thread(target=upstream, daemon=True)
        t.start()
        c = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        got = 0
        while got < (1 << 20):
            got += len(c.recv(65536))
        reset_close(c)  # the client process dies mid-transfer
        t.join(30)
        self.assertEqual(outcome.get("end"), "closed", "upstream must see its connection go away")
        s = self.settled(2)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy_local"], 2)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy_remote"], 0)
        self.assertIn("downstream reset by peer", self.st.logtext())
        self.assert_back_to_baseline()

    # --- hosts that refuse -------------------------------------------------------------------

    def serve_echo(self, up, stop):
        """Echoes every connection on UP until STOP is set; counts them."""
        count = [0]

        def loop():
            up.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = up.accept()
                except socket.timeout:
                    continue
                count[0] += 1
                threading.Thread(target=self._echo_conn, args=(conn,), daemon=True).start()

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        self.addCleanup(stop.set)
        return count

    @staticmethod
    def _echo_conn(conn):
        with conn:
            while True:
                try:
                    b = conn.recv(65536)
                except OSError:
                    return
                if not b:
                    return
                conn.sendall(b)

    def ask(self, payload):
        """One request through socktap; returns (reply, how it ended)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
            try:
                c.sendall(payload)
                c.shutdown(socket.SHUT_WR)
            except OSError:  # EPIPE, ECONNRESET, ENOTCONN: socktap already gave up on it
                return b"", "reset"
            return recv_until_closed(c)

    def test_some_hosts_refuse_one_attempt(self):
        """Envoy's default (max_connect_attempts 1): a connection sent to a refusing host fails
        and says so; the others are served."""
        up = listen()
        self.addCleanup(up.close)
        dead1, dead2 = free_port(), free_port()
        live = up.getsockname()[1]
        self.start([dead1, live, dead2])
        served = self.serve_echo(up, threading.Event())
        results = [self.ask(b"msg %d" % i) for i in range(6)]
        ok = [r for i, r in enumerate(results) if r == (b"msg %d" % i, "close")]
        failed = [r for r in results if r[0] == b""]
        self.assertEqual(len(ok), 2, results)  # round robin over 3 hosts, one of them live
        self.assertEqual(len(failed), 4, results)
        s = self.settled(6)
        self.assertEqual(s["cluster.backend.upstream_cx_connect_fail"], 4)
        self.assertEqual(s["cluster.backend.upstream_cx_connect_attempts_exceeded"], 4)
        self.assertEqual(s["cluster.backend.upstream_cx_total"], 6)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy"], 2)
        self.assertEqual(served[0], 2)
        log = self.st.logtext()
        for p in (dead1, dead2):
            self.assertIn("upstream connect to 127.0.0.1:%d failed: Connection refused" % p, log)
        self.assertIn("no upstream connection after 1 attempt(s)", log)
        self.base_fds = harness.fd_count(self.st.pid)
        self.base_rss = harness.vm_status(self.st.pid, "VmRSS")
        for i in range(20):
            self.ask(b"x")
        self.settled(26)
        self.assert_back_to_baseline()

    def test_max_connect_attempts_tries_next_host(self):
        up = listen()
        self.addCleanup(up.close)
        dead1, dead2 = free_port(), free_port()
        self.start([dead1, up.getsockname()[1], dead2], attempts=3)
        served = self.serve_echo(up, threading.Event())
        self.warm_up_fds()
        n = 9
        for i in range(n):
            # the payload is sent at once: it waits in socktap while hosts are tried
            self.assertEqual(self.ask(b"hello %d" % i), (b"hello %d" % i, "close"))
        s = self.settled(n)
        fails = s["cluster.backend.upstream_cx_connect_fail"]
        self.assertGreaterEqual(fails, n // 3 * 2)  # each round of 3 meets both dead hosts
        self.assertEqual(s["cluster.backend.upstream_cx_connect_attempts_exceeded"], 0)
        self.assertEqual(s["cluster.backend.upstream_cx_total"], n + fails)  # every attempt counts
        self.assertEqual(s["cluster.backend.upstream_cx_destroy"], n)
        self.assertEqual(served[0], n)
        self.assertIn("(attempt 2 of 3)", self.st.logtext())
        self.assert_back_to_baseline()

    def test_max_connect_attempts_all_refuse(self):
        dead = [free_port() for _ in range(3)]
        self.start(dead, attempts=3)
        self.warm_up_fds()
        for _ in range(4):
            self.assertEqual(self.ask(b"anyone?")[0], b"")
        s = self.settled(4)
        self.assertEqual(s["cluster.backend.upstream_cx_connect_fail"], 12)
        self.assertEqual(s["cluster.backend.upstream_cx_connect_attempts_exceeded"], 4)
        self.assertEqual(s["cluster.backend.upstream_cx_destroy"], 0)  # none ever connected
        log = self.st.logtext()
        self.assertEqual(log.count("no upstream connection after 3 attempt(s)"), 4)
        for p in dead:
            self.assertIn("127.0.0.1:%d failed: Connection refused" % p, log)
        self.assert_back_to_baseline()

    def warm_up_fds(self):
        self.st.stats()  # the admin connection's first use
        self.base_fds = harness.fd_count(self.st.pid)
        self.base_rss = harness.vm_status(self.st.pid, "VmRSS")


if __name__ == "__main__":
    harness.main()

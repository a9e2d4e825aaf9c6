"""Hot reload (issue 12, "Hot reload"): SIGHUP and admin POST /reload re-read the config file.
Listeners added start accepting, removed ones stop and drain, changed clusters and capture
settings apply to new connections while open ones keep theirs, a bad config is refused with its
file:line:col and the running config stays, and under load (a reload every second for 20 s)
no client connection fails and every capture file stays complete.
"""
import glob
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import E2ETest, free_port
from test_faults import sanitized, wait_until
from test_listen import SANITIZER_WORDS, echo_server, roundtrip
from test_tls import GEN, listener_tls


def capture_block(prefix, fmt="PROTO_BINARY", limits=""):
    """A capture transport_socket; LIMITS: the inside of a socktap_limits map, if any."""
    return ("      transport_socket:\n"
            "        name: envoy.transport_sockets.capture\n"
            "        config:\n"
            "          file_sink: {path_prefix: \"%s\", format: %s}\n"
            "          transport_socket: {name: raw_buffer}\n%s"
            % (prefix, fmt, "          socktap_limits: {%s}\n" % limits if limits else ""))


def config(listeners, clusters, admin_port):
    """LISTENERS: (name, port, cluster, transport_socket YAML or ""); CLUSTERS: (name, port)."""
    out = "static_resources:\n  listeners:\n"
    for name, port, cluster, ts in listeners:
        out += ("  - name: %s\n"
                "    address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n"
                "    filter_chains:\n"
                "    - filters:\n"
                "      - name: envoy.tcp_proxy\n"
                "        config: {stat_prefix: %s_tcp, cluster: %s}\n%s"
                % (name, port, name, cluster, ts))
    out += "  clusters:\n"
    for name, port in clusters:
        out += ("  - name: %s\n"
                "    connect_timeout: 1s\n"
                "    type: STATIC\n"
                "    lb_policy: ROUND_ROBIN\n"
                "    hosts: [{socket_address: {address: 127.0.0.1, port_value: %d}}]\n"
                % (name, port))
    out += "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % admin_port
    return out


def connect_refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


class Conn:
    """A client connection kept open across reloads: each ask() sends a line and reads the
    reply of the same length plus LEN(tag)."""

    def __init__(self, port, tag_len=0):
        self.c = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.tag_len = tag_len

    def ask(self, data):
        self.c.sendall(data)
        want, out = len(data) + self.tag_len, b""
        while len(out) < want:
            b = self.c.recv(65536)
            if not b:
                raise AssertionError("connection closed after %r" % out)
            out += b
        return out

    def close(self):
        self.c.shutdown(socket.SHUT_WR)
        while self.c.recv(65536):
            pass
        self.c.close()


class ReloadTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.admin = free_port()

    def start(self, cfg, **kw):
        st = self.socktap(cfg, admin_port=self.admin, **kw)
        self.addCleanup(self.check_clean, st)
        return st

    def check_clean(self, st):
        if st.proc.poll() is None:
            self.assertEqual(st.stop(), 0)
        text = st.logtext()
        for w in SANITIZER_WORDS:
            self.assertNotIn(w, text)

    def rewrite(self, st, cfg):
        # a new inode, as editors and config managers write it: socktap re-reads by path
        tmp = st.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(cfg)
        os.replace(tmp, st.config_path)

    def post_reload(self, method="POST"):
        req = urllib.request.Request("http://127.0.0.1:%d/reload" % self.admin, data=b"",
                                     method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def sighup(self, st, n):
        """SIGHUP and wait for the outcome of reload number N (applied or failed)."""
        os.kill(st.pid, signal.SIGHUP)
        wait_until(lambda: len(re.findall(r"config reload \(SIGHUP\)", st.logtext())) >= n,
                   what="reload %d logged" % n)

    def server_info(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/server_info" % self.admin, timeout=5) as r:
            return json.loads(r.read())

    def test_add_listener(self):
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p1, p2 = free_port(), free_port()
        st = self.start(config([("one", p1, "backend", "")], [("backend", upp)], self.admin))
        self.assertTrue(connect_refused(p2))
        self.assertEqual(roundtrip(p1, b"before"), b"before")
        self.rewrite(st, config([("one", p1, "backend", ""), ("two", p2, "backend", "")],
                                [("backend", upp)], self.admin))
        self.sighup(st, 1)
        self.assertIn("config reload (SIGHUP): config generation 2: listeners +two (1 kept); "
                      "clusters (1 updated)", st.logtext())
        self.assertEqual(roundtrip(p2, b"via two"), b"via two")
        self.assertEqual(roundtrip(p1, b"via one"), b"via one")
        stats = st.stats()
        self.assertEqual(stats["server.reloads"], 1)
        self.assertEqual(stats["server.reload_failed"], 0)
        self.assertEqual(stats["server.config_generation"], 2)
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % p2], 1)
        # same names, same counters: the kept listener's and cluster's count on
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % p1], 2)
        self.assertEqual(stats["cluster.backend.upstream_cx_total"], 3)
        info = self.server_info()["socktap_config"]
        self.assertEqual(info["generation"], 2)
        self.assertEqual(info["last_reload_result"], "ok")

    def test_remove_listener_drains(self):
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p1, p2 = free_port(), free_port()
        st = self.start(config([("one", p1, "backend", ""), ("two", p2, "backend", "")],
                               [("backend", upp)], self.admin))
        held = Conn(p2)
        self.assertEqual(held.ask(b"before"), b"before")
        self.rewrite(st, config([("one", p1, "backend", "")], [("backend", upp)], self.admin))
        code, body = self.post_reload()
        self.assertEqual(code, 200, body)
        self.assertIn("listeners -two (1 kept)", body)
        wait_until(lambda: connect_refused(p2), what="listener two closed")
        self.assertEqual(held.ask(b"still here"), b"still here")  # keeps its old config
        self.assertEqual(roundtrip(p1, b"one"), b"one")
        stats = st.stats()
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_active" % p2], 1)
        # the old generation lives as long as its last connection
        self.assertEqual(stats["server.config_generations_active"], 2)
        held.close()
        st.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p2, lambda v: v == 0)
        st.wait_stat("server.config_generations_active", lambda v: v == 1)
        self.assertEqual(st.stats()["server.config_generation"], 2)

    def test_change_cluster_upstream(self):
        a, b = echo_server(b"A:"), echo_server(b"B:")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        p = free_port()
        st = self.start(config([("one", p, "backend", "")],
                               [("backend", a.getsockname()[1])], self.admin))
        old = Conn(p, tag_len=2)
        self.assertEqual(old.ask(b"x"), b"A:x")
        self.rewrite(st, config([("one", p, "backend", "")],
                                [("backend", b.getsockname()[1])], self.admin))
        self.sighup(st, 1)
        self.assertIn("generation 2", st.logtext())
        new = Conn(p, tag_len=2)
        self.assertEqual(new.ask(b"y"), b"B:y")
        with urllib.request.urlopen("http://127.0.0.1:%d/clusters" % self.admin, timeout=5) as r:
            clusters = r.read().decode()
        self.assertIn("backend::127.0.0.1:%d::health_flags" % b.getsockname()[1], clusters)
        self.assertNotIn("127.0.0.1:%d" % a.getsockname()[1], clusters)
        self.assertEqual(old.ask(b"z"), b"A:z")  # an open connection stays on the old upstream
        old.close()
        new.close()

    def test_change_capture_settings(self):
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p = free_port()
        da, db = os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")
        os.mkdir(da)
        os.mkdir(db)
        st = self.start(config([("one", p, "backend", capture_block(da + "/t"))],
                               [("backend", upp)], self.admin))
        old = Conn(p)
        self.assertEqual(old.ask(b"old-1 "), b"old-1 ")
        self.rewrite(st, config([("one", p, "backend", capture_block(db + "/t", "PROTO_TEXT"))],
                                [("backend", upp)], self.admin))
        code, body = self.post_reload()
        self.assertEqual(code, 200, body)
        self.assertEqual(roundtrip(p, b"new connection"), b"new connection")
        self.assertEqual(old.ask(b"old-2"), b"old-2")
        old.close()
        st.wait_stat("listener.127.0.0.1_%d.downstream_cx_active" % p, lambda v: v == 0)
        self.assertEqual(st.stop(), 0)
        fa, fb = glob.glob(da + "/t_*"), glob.glob(db + "/t_*")
        self.assertEqual(len(fa), 1, fa)
        self.assertEqual(len(fb), 1, fb)
        self.assertTrue(fb[0].endswith(".pb_text"), fb)
        trace = harness.tool("socktap-trace")
        for path, want in ((fa[0], b"old-1 old-2"), (fb[0], b"new connection")):
            r = subprocess.run([trace, "cat", "--direction", "read", path], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, want)

    def test_tls_listener_swapped_for_plain(self):
        """A TLS connection open across a reload that drops the listener's TLS keeps its TLS
        context (freed only when it ends); new connections get the new, plain listener."""
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", GEN, pki], check=True, capture_output=True)
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p = free_port()
        st = self.start(config([("one", p, "backend", listener_tls(pki))], [("backend", upp)],
                               self.admin))
        ctx = ssl.create_default_context(cafile=os.path.join(pki, "ca.pem"))
        raw = socket.create_connection(("127.0.0.1", p), timeout=10)
        tls = ctx.wrap_socket(raw, server_hostname="server.test")
        tls.sendall(b"over tls")
        self.assertEqual(tls.recv(100), b"over tls")
        self.rewrite(st, config([("one", p, "backend", "")], [("backend", upp)], self.admin))
        self.assertEqual(self.post_reload()[0], 200)
        self.assertEqual(roundtrip(p, b"plain now"), b"plain now")
        tls.sendall(b"still tls")
        self.assertEqual(tls.recv(100), b"still tls")
        self.assertEqual(st.stats()["server.config_generations_active"], 2)
        tls.close()
        st.wait_stat("server.config_generations_active", lambda v: v == 1)

    def test_config_freed_while_its_hooks_wait(self):
        """on_finished hooks still queued when the config that asked for them is replaced and
        freed run with what they were given (the hook runner owns copies; ASan: no use after
        free)."""
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p = free_port()
        cap = os.path.join(self.tmp, "cap")
        os.mkdir(cap, 0o700)
        gate, log = os.path.join(self.tmp, "gate"), os.path.join(self.tmp, "hooks.log")
        hook = os.path.join(self.tmp, "hook.sh")
        with open(hook, "w") as f:  # blocks until the test opens the gate
            f.write("#!/bin/sh\nwhile [ ! -e %s ]; do sleep 0.02; done\necho \"$1\" >> %s\n"
                    % (gate, log))
        os.chmod(hook, 0o700)
        with_hook = capture_block(cap + "/t", limits='on_finished: ["%s"]' % hook)
        st = self.start(config([("one", p, "backend", with_hook)], [("backend", upp)],
                               self.admin))
        n = 8  # twice the hooks that run at once: the other half waits in the runner's queue
        for i in range(n):
            self.assertEqual(roundtrip(p, b"conn %d" % i), b"conn %d" % i)
        self.rewrite(st, config([("one", p, "backend", capture_block(cap + "/t"))],
                                [("backend", upp)], self.admin))
        self.assertEqual(self.post_reload()[0], 200)
        st.wait_stat("server.config_generations_active", lambda v: v == 1)  # the old one is gone
        hook_ok = "listener.127.0.0.1_%d.capture.hook_ok" % p
        self.assertEqual(st.stats()[hook_ok], 0)  # every hook still waits
        open(gate, "w").close()
        st.wait_stat(hook_ok, lambda v: v == n)
        with open(log) as f:
            ran = sorted(f.read().split())
        self.assertEqual(ran, sorted(glob.glob(cap + "/t_*")))

    def test_bad_config_rejected(self):
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p, p2 = free_port(), free_port()
        good = config([("one", p, "backend", "")], [("backend", upp)], self.admin)
        st = self.start(good)
        name = os.path.basename(st.config_path)
        # syntax error: an unclosed flow mapping
        self.rewrite(st, good.replace("port_value: %d}}" % upp, "port_value: %d}" % upp))
        self.sighup(st, 1)
        self.assertRegex(st.logtext(), r"\[error\].*config reload \(SIGHUP\) failed, generation 1 "
                         r"stays: .*%s:\d+:\d+" % re.escape(name))
        code, body = self.post_reload()
        self.assertEqual(code, 400, body)
        self.assertRegex(body, r"%s:\d+:\d+" % re.escape(name))
        # semantic error: a listener routed to a cluster that does not exist (and one added:
        # it must not start listening)
        bad = config([("one", p, "backend", ""), ("two", p2, "nosuch", "")],
                     [("backend", upp)], self.admin)
        self.rewrite(st, bad)
        code, body = self.post_reload()
        self.assertEqual(code, 400, body)
        line = bad.splitlines().index("        config: {stat_prefix: two_tcp, cluster: nosuch}") + 1
        self.assertRegex(body, r"%s:%d:\d+: .*nosuch" % (re.escape(name), line))
        self.assertIn(body.strip(), st.logtext())
        self.assertTrue(connect_refused(p2))
        # the admin block cannot change
        self.rewrite(st, config([("one", p, "backend", "")], [("backend", upp)], free_port()))
        code, body = self.post_reload()
        self.assertEqual(code, 400, body)
        self.assertIn("admin block", body)
        # the running config stays in force
        self.assertEqual(roundtrip(p, b"still served"), b"still served")
        stats = st.stats()
        self.assertEqual(stats["server.reload_failed"], 4)
        self.assertEqual(stats["server.reloads"], 0)
        self.assertEqual(stats["server.config_generation"], 1)
        info = self.server_info()["socktap_config"]
        self.assertEqual(info["last_reload_result"], "failed")
        self.assertIn("admin block", info["last_reload_message"])
        # and a good file afterwards is taken
        self.rewrite(st, good)
        self.assertEqual(self.post_reload()[0], 200)

    def test_reload_endpoint_methods(self):
        up = echo_server()
        self.addCleanup(up.close)
        p = free_port()
        self.start(config([("one", p, "backend", "")], [("backend", up.getsockname()[1])],
                          self.admin))
        code, _ = self.post_reload(method="GET")
        self.assertEqual(code, 405)
        code, body = self.post_reload()
        self.assertEqual(code, 200, body)
        self.assertIn("config generation 2: listeners (1 kept)", body)

    def test_sighup_reopens_log_then_reloads(self):
        """logrotate's rename + SIGHUP: the log is re-opened first, so the reload's line is in
        the new file; the reload itself is what POST /reload does."""
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p1, p2 = free_port(), free_port()
        log = os.path.join(self.tmp, "socktap.log")
        cfg_path = os.path.join(self.tmp, "cfg.yaml")
        with open(cfg_path, "w") as f:
            f.write(config([("one", p1, "backend", "")], [("backend", upp)], self.admin))
        proc = self.procs.start([harness.SOCKTAP, "-c", cfg_path, "--log-path", log],
                                log=os.path.join(self.tmp, "stderr.txt"))
        wait_until(lambda: os.path.exists(log) and "listening on" in open(log).read(),
                   what="log file written")
        os.rename(log, log + ".1")
        with open(cfg_path + ".new", "w") as f:
            f.write(config([("one", p1, "backend", ""), ("two", p2, "backend", "")],
                           [("backend", upp)], self.admin))
        os.replace(cfg_path + ".new", cfg_path)
        os.kill(proc.pid, signal.SIGHUP)
        wait_until(lambda: os.path.exists(log) and "config reload (SIGHUP)" in open(log).read(),
                   what="reload logged in the new file")
        with open(log) as f:
            new = f.read()
        self.assertLess(new.index("caught SIGHUP: log file re-opened"),
                        new.index("config reload (SIGHUP): config generation 2: listeners +two"))
        with open(log + ".1") as f:
            self.assertNotIn("caught SIGHUP", f.read())
        self.assertEqual(roundtrip(p2, b"two"), b"two")
        self.assertEqual(self.procs.stop(proc), 0)
        with open(os.path.join(self.tmp, "stderr.txt")) as f:
            self.assertEqual(f.read(), "")  # everything went to the log; no sanitizer report

    def test_reload_under_load(self):
        """A reload every second for 20 s, alternating two configs (a second listener comes and
        goes, the capture format switches between binary and text) while clients make short
        connections and a few long ones stream through the listener that stays: no client
        error, every trace file complete, and sampled traces hold what the clients sent."""
        asan = sanitized()
        up = echo_server()
        self.addCleanup(up.close)
        upp = up.getsockname()[1]
        p, p2 = free_port(), free_port()
        cap = os.path.join(self.tmp, "cap")
        os.mkdir(cap)

        def variant(i):
            ls = [("main", p, "backend",
                   capture_block(cap + "/t", "PROTO_TEXT" if i % 2 else "PROTO_BINARY"))]
            if i % 2:
                ls.append(("extra", p2, "backend", ""))
            return config(ls, [("backend", upp)], self.admin)

        st = self.start(variant(0), args=("--concurrency", "2"))
        stop = threading.Event()
        errors, sent, lock = [], set(), threading.Lock()
        counts = {"short": 0, "long_chunks": 0}

        def short_client(seed):
            rnd = random.Random(seed)
            while not stop.is_set():
                payload = b"%d-%d-" % (seed, rnd.getrandbits(48)) + os.urandom(rnd.randrange(1, 3000))
                try:
                    got = roundtrip(p, payload)
                    if got != payload:
                        raise AssertionError("echo differs (%d of %d bytes)" % (len(got), len(payload)))
                except Exception as e:  # every client error counts
                    with lock:
                        errors.append("short: %r" % e)
                    continue
                with lock:
                    sent.add(payload)
                    counts["short"] += 1
                if asan:
                    time.sleep(0.01)

        def long_client():
            try:
                c = Conn(p)
                while not stop.is_set():
                    chunk = os.urandom(4096)
                    if c.ask(chunk) != chunk:
                        raise AssertionError("long connection echo differs")
                    with lock:
                        counts["long_chunks"] += 1
                    time.sleep(0.02)
                c.close()
            except Exception as e:
                with lock:
                    errors.append("long: %r" % e)

        threads = [threading.Thread(target=short_client, args=(i,)) for i in range(2 if asan else 4)]
        threads += [threading.Thread(target=long_client) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            for i in range(1, 21):
                time.sleep(1)
                self.rewrite(st, variant(i))
                self.sighup(st, i)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(errors, [])
        self.assertNotIn("config reload (SIGHUP) failed", st.logtext())
        stats = st.stats()
        self.assertEqual(stats["server.reloads"], 20)
        # every replaced generation was freed once its connections ended (the long ones ran
        # through all of them)
        st.wait_stat("server.config_generations_active", lambda v: v == 1)
        print("\n%d short connections, %d long-connection round trips, 20 reloads"
              % (counts["short"], counts["long_chunks"]))
        self.assertGreater(counts["short"], 100)
        self.assertGreater(counts["long_chunks"], 100)
        self.assertEqual(st.stop(), 0)
        files = sorted(glob.glob(cap + "/t_*"))
        # every connection made a trace: the short ones and the three long ones
        self.assertEqual(len(files), counts["short"] + 3)
        self.assertTrue(any(f.endswith(".pb_text") for f in files))
        self.assertTrue(any(f.endswith(".pb") for f in files))
        trace = harness.tool("socktap-trace")
        for f in files:
            r = subprocess.run([trace, "dump", f], capture_output=True)
            self.assertEqual(r.returncode, 0, (f, r.stderr))
        for f in random.Random(1).sample(files, 30):
            r = subprocess.run([trace, "cat", "--direction", "read", f], capture_output=True)
            self.assertEqual(r.returncode, 0, (f, r.stderr))
            w = subprocess.run([trace, "cat", "--direction", "write", f], capture_output=True)
            self.assertEqual(r.stdout, w.stdout, f)  # an echo: what was read was written back
            if len(r.stdout) % 4096:  # a short connection (a long one sends 4 KiB chunks)
                self.assertIn(r.stdout, sent, f)


if __name__ == "__main__":
    harness.main()

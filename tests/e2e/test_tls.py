"""TLS transport socket end to end: real curl, openssl s_server, nghttpd, tcpdump/tshark on
loopback, with a throwaway PKI made by tests/unit/tls/gen_certs.sh."""
import glob
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config, wait_port  # noqa: E402

def sanitized():
    """ASan keeps freed memory in quarantine: RSS bounds only mean something without it."""
    with open(harness.SOCKTAP, "rb") as f:
        return b"__asan_init" in f.read()


GEN = os.path.join(harness.ROOT, "tests", "unit", "tls", "gen_certs.sh")

# A TLS upstream for bulk transfers: GET /N streams N deterministic bytes, POST answers with the
# SHA-256 of the body. Threaded, so the test can run both directions at once.
UPSTREAM = r'''
import hashlib, http.server, socketserver, ssl, sys
BLOCK = bytes(range(256)) * 4096
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        n = int(self.path.strip("/"))
        self.send_response(200); self.send_header("Content-Length", str(n)); self.end_headers()
        while n:
            k = min(n, len(BLOCK)); self.wfile.write(BLOCK[:k]); n -= k
    def do_POST(self):
        n = int(self.headers["Content-Length"]); h = hashlib.sha256()
        while n:
            b = self.rfile.read(min(n, 1 << 20)); h.update(b); n -= len(b)
        body = h.hexdigest().encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[2], sys.argv[3])
s = S(("127.0.0.1", int(sys.argv[1])), H); s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
'''


def certs_yaml(pki, ec=True):
    items = ["{certificate_chain: {filename: %s/server.pem}, private_key: {filename: %s/server.key}}" % (pki, pki)]
    if ec:
        items.append("{certificate_chain: {filename: %s/server-ec.pem}, private_key: {filename: %s/server-ec.key}}"
                     % (pki, pki))
    return "[" + ", ".join(items) + "]"


def listener_tls(pki, extra_common="", extra="", capture_prefix=None, capture_format="PROTO_TEXT"):
    tls = ("{name: tls, config: {%scommon_tls_context: {tls_certificates: %s%s}}}"
           % (extra, certs_yaml(pki), extra_common))
    if capture_prefix:
        return ("      transport_socket:\n        name: envoy.transport_sockets.capture\n        config:\n"
                "          file_sink: {path_prefix: %s, format: %s}\n"
                "          transport_socket: %s\n" % (capture_prefix, capture_format, tls))
    return "      transport_socket: %s\n" % tls


def cluster_tls(pki, sni="server.test", san="server.test", ca="ca.pem", alpn=None):
    common = "validation_context: {trusted_ca: {filename: %s/%s}, match_subject_alt_names: [{exact: %s}]}" % (
        pki, ca, san)
    if alpn:
        common += ", alpn_protocols: [%s]" % alpn
    return "    transport_socket: {name: envoy.transport_sockets.tls, config: {sni: %s, common_tls_context: {%s}}}\n" % (
        sni, common)


class TlsBase(E2ETest):
    """A throwaway PKI per test and the clients/servers the TLS tests share (no tests here:
    test_tls_wire.py builds on it too)."""

    def setUp(self):
        super().setUp()
        self.pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", GEN, self.pki], check=True)

    def curl(self, port, path="/", *args, check=True):
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", os.path.join(self.pki, "ca.pem"),
                            "--resolve", "server.test:%d:127.0.0.1" % port, *args,
                            "https://server.test:%d%s" % (port, path)], capture_output=True)
        if check:
            self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def start(self, listener_ts="", cluster_ts="", upstream_port=None, env=None):
        lp, ap = free_port(), free_port()
        if upstream_port is None:
            upstream_port, _ = self.start_http_upstream()
        cfg = proxy_config(lp, upstream_port, admin_port=ap, listener_ts=listener_ts, cluster_ts=cluster_ts)
        # Not wait_ports: a probe connection would count as a failed handshake (and connect
        # upstream); the log line says when the listener is up.
        st = self.socktap(cfg, admin_port=ap, env=env)
        deadline = time.time() + 10
        while ("listening on 127.0.0.1:%d" % lp) not in st.logtext():
            self.assertIsNone(st.proc.poll(), st.logtext())
            self.assertLess(time.time(), deadline, st.logtext())
            time.sleep(0.05)
        return st, lp

    def wait_stat(self, st, name, value, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if st.stats().get(name) == value:
                return
            time.sleep(0.1)
        self.assertEqual(st.stats().get(name), value, name)

    def s_server(self, cert="server", extra=()):
        port = free_port()
        p = self.procs.start(["openssl", "s_server", "-accept", "127.0.0.1:%d" % port, "-www", "-quiet",
                              "-cert", os.path.join(self.pki, cert + ".pem"),
                              "-key", os.path.join(self.pki, cert + ".key"), *extra],
                             log=os.path.join(self.tmp, "s_server-%d.log" % port))
        wait_port(port, proc=p)
        return port

    def plain_get(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            out = b""
            while True:
                try:
                    b = s.recv(65536)
                except ConnectionResetError:
                    # a failed upstream ends the client's connection; when the request was
                    # still unread in the kernel at close, TCP says so with a reset
                    return out
                if not b:
                    return out
                out += b


    def validate(self, listener_ts):
        path = os.path.join(self.tmp, "v-%d.yaml" % time.time_ns())
        with open(path, "w") as f:
            f.write(proxy_config(free_port(), free_port(), listener_ts=listener_ts))
        r = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", path], capture_output=True,
                           text=True, timeout=30)
        return r.returncode, r.stdout + r.stderr


class TlsTest(TlsBase):
    def test_curl_https_listener_with_capture(self):
        with open(os.path.join(self.tmp, "index.html"), "wb") as f:
            f.write(b"hello through tls\n" * 100)
        prefix = os.path.join(self.tmp, "cap", "ds")
        os.makedirs(os.path.dirname(prefix))
        st, lp = self.start(listener_tls(self.pki, capture_prefix=prefix))
        for _ in range(3):
            r = self.curl(lp, "/index.html")
            self.assertEqual(r.stdout, b"hello through tls\n" * 100)
        self.assertEqual(st.stats()["listener.127.0.0.1_%d.ssl.handshake" % lp], 3)
        st.stop()
        traces = sorted(glob.glob(prefix + "*"))
        self.assertEqual(len(traces), 3, traces)
        for t in traces:
            self.assertEqual(os.stat(t).st_mode & 0o777, 0o600)
            data = open(t, "rb").read()
            self.assertIn(b"GET /index.html HTTP/1.1", data)
            self.assertIn(b"hello through tls", data)
            self.assertNotIn(b"\\026\\003\\001", data)  # no ClientHello record: plaintext only

    def test_request_read_with_the_handshake_is_relayed(self):
        """A loaded proxy (late accept, late sends: slow_net.c) finds the client's Finished and its
        request in the socket when its first handshake step asks for more: the handshake ends
        inside that call with the request already in OpenSSL's buffer, where no fd event will
        announce it. It must be relayed at once (it waited for the client's FIN: CI, ASan)."""
        with open(os.path.join(self.tmp, "index.html"), "wb") as f:
            f.write(b"read with the handshake\n" * 50)
        shim = harness.tool("libslownet.so")
        self.assertTrue(os.path.exists(shim), shim)
        env = {"LD_PRELOAD": shim, "SLOW_ACCEPT_US": "150000", "SLOW_SEND_US": "150000",
               "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"}
        for capture in (None, os.path.join(self.tmp, "cap")):
            st, lp = self.start(listener_tls(self.pki, capture_prefix=capture), env=env)
            for version in ("--tlsv1.3", "--tlsv1.2"):
                t0 = time.time()
                r = self.curl(lp, "/index.html", version, "--max-time", "8", check=False)
                self.assertEqual((r.returncode, r.stdout), (0, b"read with the handshake\n" * 50),
                                 "%s capture=%s: %s after %.1f s" % (version, bool(capture), r.stderr,
                                                                     time.time() - t0))
            st.stop()

    def test_upstream_s_server_sni_san(self):
        up = self.s_server()
        st, lp = self.start(cluster_ts=cluster_tls(self.pki), upstream_port=up)
        out = self.plain_get(lp)
        self.assertIn(b"HTTP/1.0 200 ok", out)
        # Envoy's upstream default maximum is TLSv1_2 (tls/v3/common.proto), TLSv1_3 when asked
        self.assertIn(b"Protocol  : TLSv1.2", out)
        self.assertEqual(st.stats()["cluster.backend.ssl.handshake"], 1)
        st.stop()
        up13 = cluster_tls(self.pki).replace(
            "common_tls_context: {", "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}, ")
        st, lp = self.start(cluster_ts=up13, upstream_port=up)
        self.assertIn(b"Protocol  : TLSv1.3", self.plain_get(lp))
        st.stop()

        # wrong SAN, then an untrusted CA: the connection fails and is counted
        st, lp = self.start(cluster_ts=cluster_tls(self.pki, san="other.test"), upstream_port=up)
        self.assertNotIn(b"200 ok", self.plain_get(lp))
        self.wait_stat(st, "cluster.backend.ssl.fail_verify_san", 1)
        self.assertEqual(st.stats()["cluster.backend.ssl.connection_error"], 1)
        self.assertEqual(st.stats()["cluster.backend.ssl.handshake"], 0)
        self.assertIn("subject alt names", st.logtext())
        st.stop()
        st, lp = self.start(cluster_ts=cluster_tls(self.pki, ca="other-ca.pem"), upstream_port=up)
        self.assertNotIn(b"200 ok", self.plain_get(lp))
        self.wait_stat(st, "cluster.backend.ssl.fail_verify_error", 1)
        self.assertEqual(st.stats()["cluster.backend.ssl.connection_error"], 1)

    def test_old_tls_clients_get_protocol_version_alert(self):
        """TLS 1.0/1.1 clients: refused with alert 70 (protocol_version), as Envoy does; without
        tls_params OpenSSL's TLS 1.0 minimum let them in and failed them with alert 80."""
        st, lp = self.start(listener_tls(self.pki))
        for flag in ("-tls1", "-tls1_1"):
            r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % lp, flag,
                                "-cipher", "DEFAULT@SECLEVEL=0"], input=b"", capture_output=True,
                               timeout=20)
            err = r.stderr.decode(errors="replace")
            self.assertNotEqual(r.returncode, 0, err)
            self.assertIn("alert number 70", err, flag)
        self.assertEqual(self.curl(lp).returncode, 0)  # modern clients unaffected
        st.stop()

    def test_tls10_minimum_warns_at_validate(self):
        """A TLSv1_0/1_1 minimum validates (Envoy accepts it) with a warning at its line that it
        cannot work with OpenSSL 3's default security level."""
        for v in ("TLSv1_0", "TLSv1_1"):
            rc, out = self.validate(listener_tls(
                self.pki, extra_common=", tls_params: {tls_minimum_protocol_version: %s}" % v))
            self.assertEqual(rc, 0, out)
            self.assertRegex(out, r"\[warning\].*\.yaml:\d+:\d+: .*tls_minimum_protocol_version: "
                             r"%s is accepted but cannot work" % v)
        rc, out = self.validate(listener_tls(self.pki))
        self.assertEqual(rc, 0, out)
        self.assertNotIn("cannot work", out)

    def test_key_path_directory_named(self):
        """A private_key filename that is a directory: said so, not an OpenSSL DECODER error."""
        lts = listener_tls(self.pki).replace("%s/server.key" % self.pki, self.pki, 1)
        rc, out = self.validate(lts)
        self.assertEqual(rc, 1, out)
        self.assertIn('private_key.filename: "%s" is a directory, expected a PEM file' % self.pki, out)
        self.assertNotIn("DECODER", out)

    def test_handshake_timeout_and_no_upstream_before_it(self):
        """Clients that never finish a TLS handshake: no upstream connection is made for them
        (Envoy connects upstream once the downstream transport is up), each is closed after
        transport_socket_connect_timeout and counted; a real client still gets through. Before,
        2,000 such clients held 2,000 upstream connections and trace files indefinitely."""
        accepted = []
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(64)
        self.addCleanup(lsock.close)

        def serve():
            while True:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    return
                accepted.append(c)
                c.sendall(b"HTTP/1.0 200 ok\r\n\r\nhi")
                c.shutdown(socket.SHUT_WR)
        threading.Thread(target=serve, daemon=True).start()
        lts = listener_tls(self.pki, capture_prefix=os.path.join(self.tmp, "cap", "ds"))
        os.mkdir(os.path.join(self.tmp, "cap"), 0o700)
        st, lp = self.start(lts.replace("      transport_socket:\n",
                                           "      transport_socket_connect_timeout: 1s\n"
                                           "      transport_socket:\n", 1),
                            upstream_port=lsock.getsockname()[1])
        n = 40
        idle = []
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", lp), timeout=30)
            if i % 2:
                c.sendall(b"\x16\x03\x01\x00")  # the first bytes of a ClientHello, then nothing
            idle.append(c)
        name = "listener.127.0.0.1_%d.downstream_cx_transport_socket_connect_timeout" % lp
        self.wait_stat(st, name, n)
        for c in idle:
            self.assertEqual(c.recv(100), b"")  # closed by socktap
            c.close()
        self.assertEqual(len(accepted), 0, "upstream connections made for unfinished handshakes")
        self.assertEqual(st.stats()["cluster.backend.upstream_cx_total"], 0)
        self.assertEqual(self.curl(lp, "/", "--http1.0").returncode, 0)
        self.assertEqual(len(accepted), 1)
        self.assertEqual(st.stats()[name], n)
        st.stop()

    def test_upstream_sni_is_sent(self):
        # s_server answers SNI "server.test" with the ECDSA certificate, anything else with RSA
        up = self.s_server(extra=["-servername", "server.test",
                                  "-cert2", os.path.join(self.pki, "server-ec.pem"),
                                  "-key2", os.path.join(self.pki, "server-ec.key")])
        st, lp = self.start(cluster_ts=cluster_tls(self.pki), upstream_port=up)
        out = self.plain_get(lp)
        self.assertIn(b"HTTP/1.0 200 ok", out)
        self.assertIn(b"ECDSA", out)  # the cipher/sigalg lines name the ECDSA key

    def test_http2_alpn_end_to_end(self):
        with open(os.path.join(self.tmp, "h2.txt"), "wb") as f:
            f.write(b"over h2\n")
        up = free_port()
        p = self.procs.start(["nghttpd", "-d", self.tmp, "-a", "127.0.0.1", str(up),
                              os.path.join(self.pki, "server.key"), os.path.join(self.pki, "server.pem")])
        wait_port(up, proc=p)
        cap = os.path.join(self.tmp, "h2cap")
        st, lp = self.start(listener_tls(self.pki, extra_common=", alpn_protocols: [h2, http/1.1]",
                                         capture_prefix=cap),
                            cluster_tls(self.pki, alpn="h2"), upstream_port=up)
        r = self.curl(lp, "/h2.txt", "--http2", "-w", "\n%{http_version}")
        self.assertEqual(r.stdout, b"over h2\n\n2")
        # The listener's capture is plaintext HTTP/2: converted to pcap, tshark dissects it
        # without any key.
        self.assertEqual(st.stop(), 0)
        traces = glob.glob(cap + "_*.pb_text")
        self.assertEqual(len(traces), 1, traces)
        pcap = os.path.join(self.tmp, "h2.pcap")
        subprocess.run([harness.tool("capture2pcap"), "-q", traces[0], pcap], check=True)
        with open(traces[0], "rb") as f:
            port = int(re.search(rb"port_value: (\d+)", f.read()).group(1))
        out = subprocess.run(["tshark", "-r", pcap, "-d", "tcp.port==%d,http2" % port, "-P"],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn("Magic", out)
        self.assertIn("HEADERS[1]: GET /h2.txt", out)
        self.assertIn("HEADERS[1]: 200 OK", out)
        self.assertNotIn("TLS", out)

    def test_mtls_refuses_client_without_certificate(self):
        lts = listener_tls(self.pki, extra="require_client_certificate: true, ",
                           extra_common=", validation_context: {trusted_ca: {filename: %s/ca.pem}}" % self.pki)
        st, lp = self.start(lts)
        r = self.curl(lp, "/", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.wait_stat(st, "listener.127.0.0.1_%d.ssl.fail_verify_no_cert" % lp, 1)
        self.assertEqual(st.stats()["listener.127.0.0.1_%d.ssl.handshake_error" % lp], 1)
        r = self.curl(lp, "/", "--cert", os.path.join(self.pki, "client.pem"),
                      "--key", os.path.join(self.pki, "client.key"))
        self.assertEqual(r.returncode, 0)
        self.assertEqual(st.stats()["listener.127.0.0.1_%d.ssl.handshake" % lp], 1)

    def test_bulk_256mib_both_legs(self):
        n = 256 << 20
        up = free_port()
        script = os.path.join(self.tmp, "up.py")
        with open(script, "w") as f:
            f.write(UPSTREAM)
        p = self.procs.start([sys.executable, script, str(up), os.path.join(self.pki, "server.pem"),
                              os.path.join(self.pki, "server.key")])
        wait_port(up, proc=p)
        # capture on both legs: the traces must hold the plaintext, all of it
        down_cap = os.path.join(self.tmp, "down")
        up_cap = os.path.join(self.tmp, "up")
        up_ts = cluster_tls(self.pki).replace("    transport_socket: ", "", 1).strip()
        cluster_ts = ("    transport_socket:\n      name: envoy.transport_sockets.capture\n      config:\n"
                      "        file_sink: {path_prefix: %s, format: PROTO_BINARY}\n"
                      "        transport_socket: %s\n" % (up_cap, up_ts))
        st, lp = self.start(listener_tls(self.pki, capture_prefix=down_cap, capture_format="PROTO_BINARY"),
                            cluster_ts, upstream_port=up)
        base = harness.vm_status(st.pid, "VmRSS")
        block = bytes(range(256)) * 4096
        want = hashlib.sha256()
        for _ in range(n // len(block)):
            want.update(block)
        # download
        dl = subprocess.Popen(["curl", "-sS", "--max-time", "300", "--cacert", os.path.join(self.pki, "ca.pem"),
                               "--resolve", "server.test:%d:127.0.0.1" % lp, "https://server.test:%d/%d" % (lp, n)],
                              stdout=subprocess.PIPE)
        got = hashlib.sha256()
        total = 0
        while True:
            b = dl.stdout.read(1 << 20)
            if not b:
                break
            got.update(b)
            total += len(b)
        self.assertEqual(dl.wait(), 0)
        self.assertEqual(total, n)
        self.assertEqual(got.hexdigest(), want.hexdigest())
        # upload (from a generator through curl's stdin)
        ul = subprocess.Popen(["curl", "-sS", "--max-time", "300", "--cacert", os.path.join(self.pki, "ca.pem"),
                               "--resolve", "server.test:%d:127.0.0.1" % lp, "-H", "Content-Length: %d" % n,
                               "-H", "Expect:", "--data-binary", "@-", "https://server.test:%d/" % lp],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(n // len(block)):
            ul.stdin.write(block)
        ul.stdin.close()
        self.assertEqual(ul.stdout.read().decode(), want.hexdigest())
        self.assertEqual(ul.wait(), 0)
        hwm = harness.vm_status(st.pid, "VmHWM")
        # bounded by buffer limits and capture backlogs, not by the 256 MiB that went through
        if not sanitized():
            self.assertLess(hwm - base, 96 * 1024, "VmHWM grew by %d kB" % (hwm - base))
        self.assertEqual(st.stop(), 0)
        # Each leg's trace holds exactly the plaintext bodies: download = response body written
        # downstream / read from upstream; upload = request body read downstream / written upstream.
        bodies = []
        for prefix, dirs in ((down_cap, ("write", "read")), (up_cap, ("read", "write"))):
            files = sorted(glob.glob(prefix + "_*.pb"))
            self.assertEqual(len(files), 2, files)
            for path, direction in zip(files, dirs):
                bodies.append(self.trace_body_hash(path, direction))
        self.assertEqual(bodies, [(n, want.hexdigest())] * 4)

    def trace_body_hash(self, path, direction):
        """(length, sha256) of the HTTP body in one direction of a trace (after the headers)."""
        p = subprocess.Popen([harness.tool("socktap-trace"), "cat", "--direction", direction, path],
                             stdout=subprocess.PIPE)
        head = b""
        while b"\r\n\r\n" not in head:
            b = p.stdout.read(4096)
            self.assertTrue(b, "no HTTP header in %s (%s)" % (path, direction))
            head += b
        h = hashlib.sha256()
        rest = head.split(b"\r\n\r\n", 1)[1]
        h.update(rest)
        total = len(rest)
        while True:
            b = p.stdout.read(1 << 20)
            if not b:
                break
            h.update(b)
            total += len(b)
        self.assertEqual(p.wait(), 0)
        return total, h.hexdigest()
        print("bulk: baseline RSS %d kB, HWM %d kB" % (base, hwm), file=sys.stderr)

    def test_garbage_handshakes(self):
        total = int(os.environ.get("SOCKTAP_TLS_GARBAGE", "10000"))
        st, lp = self.start(listener_tls(self.pki))
        self.curl(lp, "/")  # warm up: baseline after one real connection
        base = harness.vm_status(st.pid, "VmRSS")
        rnd = os.urandom(4096)
        t0 = time.time()
        for i in range(total):
            with socket.create_connection(("127.0.0.1", lp), timeout=10) as s:
                if i % 2:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                else:
                    off = (i * 37) % 3000
                    s.sendall(rnd[off:off + 200])
        name = "listener.127.0.0.1_%d.ssl.handshake_error" % lp
        self.wait_stat(st, name, total, timeout=120)
        elapsed = time.time() - t0
        self.assertIsNone(st.proc.poll())
        self.curl(lp, "/")  # still serving
        stats = st.stats()
        self.assertEqual(stats["listener.127.0.0.1_%d.ssl.handshake" % lp], 2)
        rss = harness.vm_status(st.pid, "VmRSS")
        print("garbage: %d connections in %.1fs, RSS %d -> %d kB" % (total, elapsed, base, rss), file=sys.stderr)
        if not sanitized():
            self.assertLess(rss - base, 32 * 1024)

    def test_key_log_decrypts_tcpdump(self):
        if not shutil.which("tcpdump") or not shutil.which("tshark"):
            self.skipTest("tcpdump/tshark missing")
        with open(os.path.join(self.tmp, "secret.html"), "wb") as f:
            f.write(b"decrypted by tshark\n")
        klog = os.path.join(self.tmp, "keys.log")
        st, lp = self.start(listener_tls(self.pki, extra="key_log: {path: %s}, " % klog))
        pcap = os.path.join(self.tmp, "tls.pcap")
        td = self.procs.start(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-w", pcap, "tcp port %d" % lp],
                              log=os.path.join(self.tmp, "tcpdump.log"))
        deadline = time.time() + 10
        while time.time() < deadline and b"listening" not in open(td.log_path, "rb").read():
            if td.poll() is not None:
                self.skipTest("tcpdump cannot capture on lo")
            time.sleep(0.1)
        self.curl(lp, "/secret.html")
        time.sleep(1.5)  # packets sit in the capture ring until tcpdump reads them
        self.procs.stop(td, sig=2)
        self.assertEqual(os.stat(klog).st_mode & 0o777, 0o600)
        with open(klog, "rb") as f:
            self.assertIn(b"CLIENT_HANDSHAKE_TRAFFIC_SECRET", f.read())
        r = subprocess.run(["tshark", "-r", pcap, "-d", "tcp.port==%d,tls" % lp, "-o", "tls.keylog_file:" + klog, "-Y", "http",
                            "-T", "fields", "-e", "http.request.uri", "-e", "http.file_data"],
                           capture_output=True, timeout=60)
        self.assertIn(b"/secret.html", r.stdout, r.stderr)
        r = subprocess.run(["tshark", "-r", pcap, "-d", "tcp.port==%d,tls" % lp, "-Y", "http"], capture_output=True, timeout=60)
        self.assertNotIn(b"secret.html", r.stdout)  # without the key log: nothing readable


if __name__ == "__main__":
    harness.main()

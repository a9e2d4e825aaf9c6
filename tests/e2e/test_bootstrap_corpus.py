"""The bootstrap corpus (tests/data/bootstraps, its README): complete Envoy bootstraps around the
capture/tap sockets, from Envoy's documentation and tests. Each must pass `socktap --mode
validate`, then serve one exchange on loopback and leave the traces its header announces, each
decoding with socktap-trace; socktap exits 0."""
import glob
import os
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request

import harness
from harness import E2ETest, free_port, wait_port
from test_listen import echo_server
from test_faults import wait_until

CORPUS = os.path.join(harness.ROOT, "tests", "data", "bootstraps")
GEN = os.path.join(harness.ROOT, "tests", "unit", "tls", "gen_certs.sh")


def header(text):
    """The `# corpus: k=v ...` settings of a corpus file."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"#\s*corpus:\s*(.*)", line)
        if m:
            for kv in m.group(1).split():
                k, _, v = kv.partition("=")
                out[k] = v
    return out


class BootstrapCorpusTest(E2ETest):
    def corpus(self):
        files = sorted(glob.glob(os.path.join(CORPUS, "*.yaml")))
        self.assertGreaterEqual(len(files), 9, files)
        return files

    def render(self, path, ports, d, pki):
        with open(path) as f:
            text = f.read()
        for k, v in (("@LISTEN@", ports["listen"]), ("@UPSTREAM@", ports["upstream"]),
                     ("@DEAD@", ports["dead"]), ("@ADMIN@", ports["admin"]), ("@UDP@", ports["udp"]),
                     ("@DIR@", d), ("@PKI@", pki)):
            text = text.replace(k, str(v))
        self.assertNotIn("@", re.sub(r'"@type"', "", text), "unknown placeholder in " + path)
        out = os.path.join(d, os.path.basename(path))
        with open(out, "w") as f:
            f.write(text)
        return out, header(text)

    def test_every_bootstrap_validates_and_serves(self):
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", GEN, pki], check=True, capture_output=True)
        for path in self.corpus():
            name = os.path.basename(path)
            with self.subTest(name):
                d = os.path.join(self.tmp, name[:-5])
                os.mkdir(d, 0o700)
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind(("127.0.0.1", 0))
                udp.settimeout(10)
                self.addCleanup(udp.close)
                up = echo_server()
                self.addCleanup(up.close)
                ports = {"listen": free_port(), "upstream": up.getsockname()[1], "dead": free_port(),
                         "admin": free_port(), "udp": udp.getsockname()[1]}
                cfg, want = self.render(path, ports, d, pki)
                v = subprocess.run([harness.SOCKTAP, "--mode", "validate", "-c", cfg],
                                   capture_output=True, timeout=60)
                self.assertEqual(v.returncode, 0, v.stderr.decode(errors="replace"))
                with open(cfg) as f:
                    text = f.read()
                st = self.socktap(text,  # ready from its log: a probe would be a connection
                                  admin_port=ports["admin"] if "admin:" in text else None)
                if "dead" in want:
                    with socket.create_connection(("127.0.0.1", ports["listen"]), timeout=10) as c:
                        c.settimeout(10)
                        self.assertEqual(c.recv(10), b"")  # no upstream: closed
                else:
                    c = socket.create_connection(("127.0.0.1", ports["listen"]), timeout=10)
                    if "tls" in want:
                        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                        ctx.check_hostname = False
                        ctx.verify_mode = ssl.CERT_NONE
                        c = ctx.wrap_socket(c)
                    with c:
                        c.sendall(b"corpus question")
                        got = b""
                        while len(got) < len(b"corpus question"):
                            b = c.recv(65536)
                            self.assertTrue(b, got)
                            got += b
                    self.assertEqual(got, b"corpus question")  # echoed through the proxy
                if "udp" in want:
                    data, _ = udp.recvfrom(65536)  # the first message: the connection segment
                    self.assertIn(b"socket_streamed_trace_segment", data)
                for pattern in filter(None, want.get("traces", "").split(",")):
                    n = int(want.get("traces_count", "1"))
                    files = wait_until(lambda: len(glob.glob(os.path.join(d, pattern))) >= n and
                                       glob.glob(os.path.join(d, pattern)), timeout=20,
                                       what="%s traces in %s" % (pattern, name))
                    self.assertEqual(len(files), n, files)
                if "admin_tap" in want:
                    # records nothing until POST /tap: no file anywhere
                    self.assertEqual([f for f in os.listdir(d) if f != os.path.basename(cfg)], [])
                    req = urllib.request.Request("http://127.0.0.1:%d/tap" % ports["admin"],
                                                 data=b'{"config_id": "unknown"}', method="POST")
                    with self.assertRaises(urllib.error.HTTPError) as e:
                        urllib.request.urlopen(req, timeout=10)
                    self.assertEqual(e.exception.code, 400)
                self.assertEqual(st.stop(), 0, st.logtext()[-3000:])
                for pattern in filter(None, want.get("traces", "").split(",")):
                    for f in glob.glob(os.path.join(d, pattern)):
                        r = subprocess.run([harness.tool("socktap-trace"), "dump", f],
                                           capture_output=True, timeout=60)
                        self.assertEqual(r.returncode, 0, (f, r.stderr))
                if "access_log" in want:  # one line for the exchange, naming the upstream
                    with open(os.path.join(d, want["access_log"])) as f:
                        lines = f.read().splitlines()
                    self.assertEqual(len(lines), 1, lines)
                    self.assertIn("-> 127.0.0.1:%d " % ports["upstream"], lines[0])
                if "ignored" in name:
                    self.assertIn("accepted and ignored", st.logtext())


if __name__ == "__main__":
    harness.main()

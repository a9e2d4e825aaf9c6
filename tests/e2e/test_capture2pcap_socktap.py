"""capture2pcap on traces socktap itself recorded from real sessions: curl over HTTP/1.1
(IPv4 and IPv6, listener and cluster traces merged), curl h2c to nghttpd, and curl over TLS
terminated by socktap (the capture holds plaintext). tshark must see the real conversation."""
import glob
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, proxy_config, wait_port  # noqa: E402
from test_capture import capture_ts  # noqa: E402
from test_capture2pcap import tshark  # noqa: E402
from test_tls import GEN, listener_tls  # noqa: E402

C2P = harness.tool("capture2pcap")
BODY = b"".join(b"line %05d of the captured body\n" % i for i in range(3000))


class Capture2PcapSocktapTest(harness.E2ETest):
    def proxy(self, up_port, host, listener_ts="", cluster_ts=""):
        lp, ap = free_port(host), free_port()
        cfg = proxy_config(lp, up_port, admin_port=ap, host=host, upstream_host=host,
                           listener_ts=listener_ts, cluster_ts=cluster_ts)
        return self.socktap(cfg, admin_port=ap), lp

    def convert(self, inputs, *extra):
        out = os.path.join(self.tmp, "out-%d.pcap" % len(os.listdir(self.tmp)))
        r = subprocess.run([C2P, *extra, *inputs, out], capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return out

    def assert_valid_checksums(self, pcap):
        st = set(tshark(pcap, "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-e",
                        "tcp.checksum.status").split())
        self.assertEqual(st, {"1"})
        self.assertEqual(tshark(pcap, "-Y", "_ws.malformed"), "")

    def test_http1_listener_and_cluster_v4_v6(self):
        with open(os.path.join(self.tmp, "body.txt"), "wb") as f:
            f.write(BODY)
        for host in ("127.0.0.1", "::1"):
            with self.subTest(host=host):
                up, _ = self.start_http_upstream(host=host)
                caps = os.path.join(self.tmp, "cap-%s" % host.replace(":", "_"))
                os.makedirs(caps)
                st, lp = self.proxy(up, host, listener_ts=capture_ts(os.path.join(caps, "down")),
                                    cluster_ts=capture_ts(os.path.join(caps, "up"), indent=4))
                url_host = "[%s]" % host if ":" in host else host
                r = subprocess.run(["curl", "-sS", "--max-time", "20",
                                    "http://%s:%d/body.txt" % (url_host, lp)], capture_output=True)
                self.assertEqual(r.stdout, BODY, r.stderr)
                st.stop()
                traces = sorted(glob.glob(os.path.join(caps, "*")))
                self.assertEqual(len(traces), 2, traces)
                out = self.convert(traces, "--tcp-handshake", "--mss", "1460")
                self.assert_valid_checksums(out)
                decode = ["-d", "tcp.port==%d,http" % lp, "-d", "tcp.port==%d,http" % up]
                uris = tshark(out, *decode, "-Y", "http.request", "-T", "fields", "-e",
                              "http.request.uri").split()
                self.assertEqual(uris, ["/body.txt", "/body.txt"])  # client leg, then upstream leg
                codes = tshark(out, *decode, "-Y", "http.response", "-T", "fields", "-e",
                               "http.response.code").split()
                self.assertEqual(codes, ["200", "200"])
                ips = set(tshark(out, "-T", "fields", "-e", "ipv6.src" if ":" in host else "ip.src").split())
                self.assertEqual(ips, {host})
                follow = tshark(out, "-q", "-z", "follow,tcp,raw,0")
                # which side sent the SYN is a guess when both ports are ephemeral: take either
                sides = [bytes.fromhex("".join(l.strip() for l in follow.splitlines()
                                               if l.startswith("\t") == indented and l.strip()
                                               and not l.startswith(("=", "Follow", "Filter", "Node"))))
                         for indented in (False, True)]
                self.assertTrue(any(s.endswith(BODY) for s in sides))

    def test_h2c_to_nghttpd(self):
        with open(os.path.join(self.tmp, "h2.txt"), "wb") as f:
            f.write(BODY)
        up = free_port()
        p = self.procs.start(["nghttpd", "--no-tls", "-d", self.tmp, "-a", "127.0.0.1", str(up)])
        wait_port(up, proc=p)
        caps = os.path.join(self.tmp, "cap")
        os.makedirs(caps)
        st, lp = self.proxy(up, "127.0.0.1", listener_ts=capture_ts(os.path.join(caps, "down"), fmt="PROTO_TEXT"))
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--http2-prior-knowledge",
                            "http://127.0.0.1:%d/h2.txt" % lp], capture_output=True)
        self.assertEqual(r.stdout, BODY, r.stderr)
        st.stop()
        traces = glob.glob(os.path.join(caps, "*"))
        self.assertEqual(len(traces), 1, traces)
        out = self.convert(traces)
        self.assert_valid_checksums(out)
        rows = tshark(out, "-d", "tcp.port==%d,http2" % lp, "-Y", "http2.header.name == \":path\"",
                      "-T", "fields", "-e", "http2.headers.path").split()
        self.assertIn("/h2.txt", rows)
        status = tshark(out, "-d", "tcp.port==%d,http2" % lp, "-T", "fields", "-e", "http2.headers.status").split()
        self.assertIn("200", status)

    def test_tls_terminated_capture_is_plaintext(self):
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", GEN, pki], check=True, capture_output=True)
        with open(os.path.join(self.tmp, "index.html"), "wb") as f:
            f.write(BODY)
        up, _ = self.start_http_upstream()
        prefix = os.path.join(self.tmp, "cap", "ds")
        os.makedirs(os.path.dirname(prefix))
        lp, ap = free_port(), free_port()
        cfg = proxy_config(lp, up, admin_port=ap, listener_ts=listener_tls(pki, capture_prefix=prefix))
        st = self.socktap(cfg, admin_port=ap)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--cacert", os.path.join(pki, "ca.pem"),
                            "--resolve", "server.test:%d:127.0.0.1" % lp,
                            "https://server.test:%d/index.html" % lp], capture_output=True)
        self.assertEqual(r.stdout, BODY, r.stderr)
        st.stop()
        traces = glob.glob(prefix + "*")
        self.assertEqual(len(traces), 1, traces)
        out = self.convert(traces, "--nanosecond", "--tcp-handshake")
        self.assert_valid_checksums(out)
        uris = tshark(out, "-d", "tcp.port==%d,http" % lp, "-Y", "http.request", "-T", "fields",
                      "-e", "http.request.uri").split()
        self.assertEqual(uris, ["/index.html"])
        self.assertEqual(tshark(out, "-Y", "tls"), "")  # decrypted: no TLS records in the pcap


if __name__ == "__main__":
    harness.main()

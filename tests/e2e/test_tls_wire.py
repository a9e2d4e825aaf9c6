"""TLS wire capture (socktap extension `socktap_wire_capture` on the TLS transport socket): the
TLS records exactly as they crossed the socket, in a streamed v3 trace, and the connection's NSS
key log beside it. Checked with real curl, nghttpd, openssl s_server, and tshark decrypting the
converted capture with that key log only."""
import glob
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_tls as T  # noqa: E402
from harness import free_port, wait_port  # noqa: E402


def wire(prefix, fmt=None, comp=None, backlog=None):
    return "socktap_wire_capture: {path_prefix: %s%s%s%s}, " % (
        prefix, ", format: %s" % fmt if fmt else "", ", socktap_compression: %s" % comp if comp else "",
        ", socktap_max_backlog_bytes: %d" % backlog if backlog else "")


class TlsWireTest(T.TlsBase):
    def one_trace(self, prefix, keys_expected=True):
        files = [f for f in glob.glob(prefix + "_*") if not f.endswith(".keylog")]
        self.assertEqual(len(files), 1, files)
        path = files[0]
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        keys = path + ".keylog"
        if not keys_expected:
            # A TLS 1.2 handshake refused before the key exchange has no secret to log.
            return path, keys if os.path.exists(keys) else None
        self.assertTrue(os.path.exists(keys), "no key log beside %s" % path)
        self.assertEqual(os.stat(keys).st_mode & 0o777, 0o600)
        # The trace itself is an ordinary Envoy trace: socktap-trace reads it without complaint.
        r = subprocess.run([harness.tool("socktap-trace"), "dump", path], capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return path, keys

    def tshark(self, trace, port, keys=None, *args, ext=".pcap", c2p=()):
        """tshark over TRACE converted to EXT (.pcap, or .pcapng with the key log embedded);
        KEYS: a key log file for tshark itself."""
        pcap = trace + ext
        if not os.path.exists(pcap):
            subprocess.run([harness.tool("capture2pcap"), "-q", *c2p, trace, pcap], check=True)
        argv = ["tshark", "-r", pcap, "-d", "tcp.port==%d,tls" % port]
        if keys:
            argv += ["-o", "tls.keylog_file:" + keys]
        r = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def h2_exchange(self, curl_args, cap, comp=None):
        with open(os.path.join(self.tmp, "h2.txt"), "wb") as f:
            f.write(b"over h2 inside TLS\n")
        up = free_port()
        p = self.procs.start(["nghttpd", "-d", self.tmp, "-a", "127.0.0.1", str(up),
                              os.path.join(self.pki, "server.key"), os.path.join(self.pki, "server.pem")])
        wait_port(up, proc=p)
        st, lp = self.start(T.listener_tls(self.pki, extra=wire(cap, comp=comp),
                                           extra_common=", alpn_protocols: [h2, http/1.1]"),
                            T.cluster_tls(self.pki, alpn="h2"), upstream_port=up)
        r = self.curl(lp, "/h2.txt", "--http2", "-w", "\n%{http_version}", *curl_args)
        self.assertEqual(r.stdout, b"over h2 inside TLS\n\n2")
        self.assertEqual(st.stop(), 0)
        return lp

    def check_h2_decrypts(self, version_args, version_name):
        cap = os.path.join(self.tmp, "wire")
        lp = self.h2_exchange(version_args, cap)
        trace, keys = self.one_trace(cap)
        # Without keys: TLS records with the version negotiated, and nothing of HTTP/2.
        plain = self.tshark(trace, lp, None, "-T", "fields", "-e", "tls.record.version", "-e", "tls.handshake.type")
        self.assertIn("1", plain)  # handshake type 1: the ClientHello, as the client sent it
        out = self.tshark(trace, lp, None)
        self.assertNotIn("HEADERS", out)
        self.assertIn(version_name, out)
        # With the connection's own key log: every HTTP/2 frame of the exchange.
        out = self.tshark(trace, lp, keys, "-Y", "http2", "-T", "fields", "-e", "http2.header.value")
        self.assertIn("/h2.txt", out)
        self.assertIn("200", out)
        # pcapng: the key log travels inside (a Decryption Secrets Block), tshark needs no key
        # file; --no-secrets leaves it out for sharing.
        out = self.tshark(trace, lp, None, "-Y", "http2", "-T", "fields", "-e", "http2.header.value",
                          ext=".pcapng")
        self.assertIn("/h2.txt", out)
        self.assertIn("200", out)
        r = subprocess.run(["capinfos", trace + ".pcapng"], capture_output=True, text=True)
        self.assertIn("pcapng", r.stdout)
        out = self.tshark(trace, lp, None, "-Y", "http2", ext=".bare.pcapng", c2p=("--pcapng", "--no-secrets"))
        self.assertEqual(out.strip(), "")
        # The secrets can be stripped again with Wireshark's own tool.
        bare = trace + ".stripped.pcapng"
        subprocess.run(["editcap", "--discard-all-secrets", trace + ".pcapng", bare], check=True,
                       capture_output=True)
        r = subprocess.run(["tshark", "-r", bare, "-d", "tcp.port==%d,tls" % lp, "-Y", "http2"],
                           capture_output=True, text=True)
        self.assertEqual(r.stdout.strip(), "")
        return trace, keys, lp

    def test_h2_over_tls13_decrypts_with_the_connection_key_log(self):
        trace, keys, _ = self.check_h2_decrypts(["--tlsv1.3"], "TLSv1.3")
        with open(keys) as f:
            lines = f.read().splitlines()
        labels = {ln.split()[0] for ln in lines}
        self.assertTrue({"CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET",
                         "CLIENT_TRAFFIC_SECRET_0", "SERVER_TRAFFIC_SECRET_0"} <= labels, labels)
        self.assertEqual(len({ln.split()[1] for ln in lines}), 1, "one connection, one client random")

    def test_h2_over_tls12_decrypts_with_the_connection_key_log(self):
        _, keys, _ = self.check_h2_decrypts(["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2")
        with open(keys) as f:
            self.assertTrue(f.read().startswith("CLIENT_RANDOM "))

    def test_zstd_wire_capture_decrypts_from_the_compressed_trace(self):
        """socktap_compression on the wire capture: a .pb_length_delimited.zst whose `zstd -d`
        is the ordinary wire trace; the key log beside it stays plain text; capture2pcap reads
        the compressed trace and embeds its key log: tshark decrypts the HTTP/2 exchange."""
        cap = os.path.join(self.tmp, "wire")
        lp = self.h2_exchange(["--tlsv1.3"], cap, comp="zstd")
        trace, keys = self.one_trace(cap)
        self.assertTrue(trace.endswith(".pb_length_delimited.zst"), trace)
        with open(keys) as f:
            self.assertIn("CLIENT_TRAFFIC_SECRET_0", f.read())
        plain = os.path.join(self.tmp, "decoded.pb_length_delimited")
        subprocess.run(["zstd", "-q", "-d", trace, "-o", plain], check=True)
        a = subprocess.run([harness.tool("socktap-trace"), "cat", "--direction", "read", trace], capture_output=True)
        b = subprocess.run([harness.tool("socktap-trace"), "cat", "--direction", "read", plain], capture_output=True)
        self.assertEqual((a.returncode, b.returncode), (0, 0), a.stderr + b.stderr)
        self.assertEqual(a.stdout, b.stdout)
        self.assertEqual(a.stdout[0], 0x16)  # a TLS handshake record: the ClientHello
        out = self.tshark(trace, lp, None, "-Y", "http2", "-T", "fields", "-e", "http2.header.value",
                          ext=".pcapng")
        self.assertIn("/h2.txt", out)
        self.assertIn("200", out)

    def test_every_byte_on_the_wire_is_in_the_trace(self):
        """The trace's bytes are the TCP payload itself: tshark's reassembly of the pcap sees
        only whole, well-formed TLS records, the client's first bytes are a ClientHello record,
        and the close_notify alerts at the end are there too (written after the relay closed)."""
        cap = os.path.join(self.tmp, "wire")
        with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
            f.write(os.urandom(3 << 20))
        st, lp = self.start(T.listener_tls(self.pki, extra=wire(cap, "PROTO_BINARY")))
        r = self.curl(lp, "/big.bin", "-o", os.path.join(self.tmp, "got.bin"))
        self.assertEqual(r.returncode, 0)
        self.assertEqual(st.stop(), 0)
        trace, keys = self.one_trace(cap)
        self.assertTrue(trace.endswith(".pb"), trace)
        out = self.tshark(trace, lp, keys, "-Y", "_ws.malformed || tls.record.content_type == 21",
                          "-T", "fields", "-e", "tls.alert_message.desc", "-e", "_ws.malformed")
        # Two close_notify alerts (0), one each way; nothing malformed.
        self.assertEqual(sorted(out.split()), ["0", "0"], out)
        out = self.tshark(trace, lp, keys, "-Y", "http.response", "-T", "fields", "-e", "http.content_length")
        self.assertIn(str(3 << 20), out)
        with open(os.path.join(self.tmp, "got.bin"), "rb") as a, open(os.path.join(self.tmp, "big.bin"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_small_wire_backlog_holds_instead_of_stopping(self):
        """A wire trace whose backlog is small holds the connection back instead of giving up:
        one relay write of many TLS records used to record them all at once, past the bound, and
        the trace stopped ("the disk cannot keep up"). With a 256 KiB backlog and an 8 MiB
        download, the trace is whole: every record well-formed, both close_notify alerts, the
        whole response, nothing truncated."""
        cap = os.path.join(self.tmp, "wire")
        with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
            f.write(os.urandom(8 << 20))
        st, lp = self.start(T.listener_tls(self.pki, extra=wire(cap, "PROTO_BINARY", backlog=262144)))
        r = self.curl(lp, "/big.bin", "-o", os.path.join(self.tmp, "got.bin"))
        self.assertEqual(r.returncode, 0)
        stats = st.stats()
        truncated = [v for k, v in stats.items() if k.endswith("tls_wire.truncated")]
        self.assertEqual(truncated, [0], {k: v for k, v in stats.items() if "tls_wire" in k})
        self.assertEqual(st.stop(), 0)
        trace, keys = self.one_trace(cap)
        out = self.tshark(trace, lp, keys, "-Y", "_ws.malformed || tls.record.content_type == 21",
                          "-T", "fields", "-e", "tls.alert_message.desc", "-e", "_ws.malformed")
        self.assertEqual(sorted(out.split()), ["0", "0"], out)
        out = self.tshark(trace, lp, keys, "-Y", "http.response", "-T", "fields", "-e", "http.content_length")
        self.assertIn(str(8 << 20), out)

    def refused_upstream(self, san="server.test", ca="ca.pem", cert="other", tls13=False):
        up = self.s_server(cert=cert)
        cap = os.path.join(self.tmp, "upwire")
        ts = T.cluster_tls(self.pki, san=san, ca=ca)
        ts = ts.replace("config: {sni:", "config: {%ssni:" % wire(cap))
        if tls13:
            ts = ts.replace("common_tls_context: {", "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}, ")
        st, lp = self.start(cluster_ts=ts, upstream_port=up)
        self.assertNotIn(b"200 ok", self.plain_get(lp))
        self.wait_stat(st, "cluster.backend.ssl.connection_error", 1)
        self.assertEqual(st.stop(), 0)
        return up, cap

    def check_refused(self, up, cap, alert, version):
        trace, keys = self.one_trace(cap, keys_expected=version != "TLSv1.2")
        out = self.tshark(trace, up, keys, "-T", "fields", "-e", "tls.handshake.type",
                          "-e", "x509sat.printableString", "-e", "x509sat.uTF8String", "-e", "tls.alert_message.desc",
                          "-e", "tls.record.version")
        # 11 = Certificate: the chain the upstream presented, with its issuer; then our alert.
        self.assertRegex(out, r"(^|\D)11(\D|$)", out)
        self.assertIn("unrelated CA", out)
        self.assertIn(str(alert), out.split())
        summary = self.tshark(trace, up, keys)
        self.assertIn(version, summary)
        self.assertIn("Alert", summary)
        # The same from the pcapng alone (its key log embedded when there is one).
        out = self.tshark(trace, up, None, "-T", "fields", "-e", "tls.handshake.type", "-e", "x509sat.printableString",
                          "-e", "x509sat.uTF8String", "-e", "tls.alert_message.desc", ext=".pcapng")
        self.assertIn("unrelated CA", out)
        self.assertIn(str(alert), out.split())

    def test_unknown_ca_upstream_shows_certificate_and_alert_tls12(self):
        up, cap = self.refused_upstream(cert="other")
        self.check_refused(up, cap, 48, "TLSv1.2")  # 48 = unknown_ca

    def test_unknown_ca_upstream_shows_certificate_and_alert_tls13(self):
        up, cap = self.refused_upstream(cert="other", tls13=True)
        self.check_refused(up, cap, 48, "TLSv1.3")  # the Certificate is encrypted: the key log shows it

    def test_san_mismatch_upstream_shows_certificate_and_alert(self):
        up, cap = self.refused_upstream(cert="server", san="other.test")
        trace, keys = self.one_trace(cap, keys_expected=False)
        out = self.tshark(trace, up, keys, "-T", "fields", "-e", "tls.handshake.type", "-e", "tls.alert_message.desc")
        self.assertRegex(out, r"(^|\D)11(\D|$)", out)
        self.assertIn("Alert", self.tshark(trace, up, keys))

    def test_config_errors_name_the_key(self):
        cap = os.path.join(self.tmp, "w")
        for bad, msg in [("socktap_wire_capture: {path_prefix: %s, colour: red}, " % cap, r"socktap_wire_capture.*colour"),
                         ("socktap_wire_capture: {format: PROTO_TEXT}, ", r"socktap_wire_capture\.path_prefix.*required"),
                         ("socktap_wire_capture: {path_prefix: %s, format: PCAP}, " % cap, r"socktap_wire_capture\.format"),
                         ("socktap_wire_capture: [%s], " % cap, r"socktap_wire_capture")]:
            rc, out = self.validate(T.listener_tls(self.pki, extra=bad))
            self.assertNotEqual(rc, 0, bad)
            self.assertRegex(out, r":\d+:\d+: .*" + msg)

    def test_keylog_file_in_the_way_is_never_touched(self):
        """A file (or symlink) already at `<trace>.keylog` is left alone; the trace is still
        written, the failure is counted and logged."""
        cap = os.path.join(self.tmp, "wire")
        victim = os.path.join(self.tmp, "victim")
        with open(victim, "w") as f:
            f.write("untouched")
        # Made after start-up (files there at start-up move the ids past them): the first
        # connection is _1 in a fresh directory.
        st, lp = self.start(T.listener_tls(self.pki, extra=wire(cap)))
        os.symlink(victim, cap + "_0.pb_length_delimited.keylog")
        self.curl(lp, "/")
        self.assertEqual(st.stop(), 0)
        with open(victim) as f:
            self.assertEqual(f.read(), "untouched")
        self.assertTrue(os.path.getsize(cap + "_0.pb_length_delimited") > 0)
        self.assertIn("cannot write the key log", st.logtext())



class KeylogOptionTest(T.TlsBase):
    def test_keylog_option_and_classic_pcap_warning(self):
        """--keylog FILE embeds any NSS key log (e.g. the TLS socket's key_log) in pcapng; a
        classic pcap output says the secrets it cannot hold; a missing --keylog file fails."""
        cap = os.path.join(self.tmp, "w")
        klog = os.path.join(self.tmp, "all-keys.log")
        st, lp = self.start(T.listener_tls(self.pki, extra=wire(cap) + "key_log: {path: %s}, " % klog))
        self.curl(lp, "/")
        self.assertEqual(st.stop(), 0)
        trace = [f for f in glob.glob(cap + "_*") if not f.endswith(".keylog")][0]
        c2p = harness.tool("capture2pcap")
        out = os.path.join(self.tmp, "k.pcapng")
        subprocess.run([c2p, "-q", "--no-secrets", "--keylog", klog, trace, out], check=True)
        r = subprocess.run(["tshark", "-r", out, "-d", "tcp.port==%d,tls" % lp, "-Y", "http.request"],
                           capture_output=True, text=True)
        self.assertIn("GET /", r.stdout)
        r = subprocess.run([c2p, "-q", trace, os.path.join(self.tmp, "k.pcap")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("classic pcap cannot hold", r.stderr)
        r = subprocess.run([c2p, "-q", "--keylog", os.path.join(self.tmp, "nope.log"), trace,
                            os.path.join(self.tmp, "n.pcapng")], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope.log", r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "n.pcapng")))
        r = subprocess.run([c2p, "-q", "--keylog", klog, trace, os.path.join(self.tmp, "n.pcap")],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("--keylog needs pcapng", r.stderr)


if __name__ == "__main__":
    harness.main()

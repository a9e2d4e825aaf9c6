"""Filter chains and the tls_inspector listener filter (issue 11 section 4), end to end: curl
--resolve to several SNI names through one TLS listener, plain and TLS clients on one port,
clients bound to addresses of 127.0.0.0/8, a tap on one chain only, the default chain, no
match, and a client that sends nothing to the inspector.

Envoy is the reference: source/common/listener_manager/filter_chain_manager_impl.cc (the
selection order), source/extensions/filters/listener/tls_inspector/tls_inspector.cc and the
protos (config/listener/v3/listener_components.proto FilterChainMatch, listener.proto
default_filter_chain, listener_filters_timeout, continue_on_listener_filters_timeout).
Each chain routes to its own upstream, whose answer names it: which chain a connection took is
read from the body the client gets back."""
import glob
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port  # noqa: E402

GEN = os.path.join(harness.ROOT, "tests", "unit", "tls", "gen_certs.sh")
INSPECTOR = "    listener_filters: [{name: envoy.filters.listener.tls_inspector}]\n"


def get_who(s):
    """GET /who over the connected plain socket S; the whole answer (until the upstream's EOF)."""
    s.sendall(b"GET /who HTTP/1.0\r\n\r\n")
    out = b""
    while True:
        b = s.recv(65536)
        if not b:
            return out
        out += b


class FilterChains(E2ETest):
    def setUp(self):
        super().setUp()
        self.pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", GEN, self.pki], check=True)

    def upstream(self, name):
        """An HTTP upstream whose GET /who answers NAME."""
        d = os.path.join(self.tmp, "up-" + name)
        os.mkdir(d)
        with open(os.path.join(d, "who"), "w") as f:
            f.write(name)
        port, _ = self.start_http_upstream(directory=d)
        return port

    def tls(self):
        return ("{name: tls, config: {common_tls_context: {tls_certificates: [{certificate_chain: "
                "{filename: %s/server.pem}, private_key: {filename: %s/server.key}}]}}}" % (self.pki, self.pki))

    def tap_tls(self, prefix):
        return ("{name: envoy.transport_sockets.tap, typed_config: {\"@type\": "
                "type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap, common_config: "
                "{static_config: {match: {any_match: true}, output_config: {sinks: [{format: PROTO_BINARY, "
                "file_per_tap: {path_prefix: \"%s\"}}]}}}, transport_socket: %s}}" % (prefix, self.tls()))

    def chain(self, name, match=None, ts=None, default=False):
        """One filter chain (YAML, indented for filter_chains) routing to cluster NAME."""
        head = "    default_filter_chain:\n      " if default else "    - "
        out = head + "filters: [{name: envoy.tcp_proxy, config: {stat_prefix: %s, cluster: %s}}]\n" % (name, name)
        if match:
            out += "      filter_chain_match: %s\n" % match
        if ts:
            out += "      transport_socket: %s\n" % ts
        return out

    def config(self, chains, default="", listener_extra="", host="127.0.0.1", upstreams=None):
        names = list(chains) + ([default[0]] if default else [])
        clusters = "".join(
            "  - name: %s\n    connect_timeout: 1s\n    hosts: [{socket_address: {address: 127.0.0.1, port_value: %d}}]\n"
            % (n, upstreams[n]) for n in names)
        return ("static_resources:\n  listeners:\n  - name: ingress\n"
                "    address: {socket_address: {address: \"%s\", port_value: %d}}\n%s"
                "    filter_chains:\n%s%s  clusters:\n%s"
                "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n"
                % (host, self.lp, listener_extra, "".join(chains.values()), default[1] if default else "",
                   clusters, self.ap))

    def start(self, chains, default="", listener_extra="", host="127.0.0.1", port=None, args=()):
        """socktap with one listener of CHAINS (name -> YAML from chain()) and DEFAULT, and one
        cluster per chain name with its own upstream."""
        self.lp, self.ap = port or free_port(), free_port()
        names = list(chains) + ([default[0]] if default else [])
        self.upstreams = {n: self.upstream(n) for n in names}
        cfg = self.config(chains, default, listener_extra, host, self.upstreams)
        self.st = self.socktap(cfg, admin_port=self.ap, args=args)
        return self.st

    def https(self, name, *args):
        """GET /who over TLS with SNI NAME (curl --resolve); returns the body."""
        r = subprocess.run(["curl", "-sS", "-k", "--max-time", "20", *args, "--resolve",
                            "%s:%d:127.0.0.1" % (name, self.lp), "https://%s:%d/who" % (name, self.lp)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr + self.st.logtext().encode())
        return r.stdout.decode()

    def plain(self, source="127.0.0.1"):
        """GET /who in clear text from SOURCE; returns the body, or None when the proxy closed."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(20)
            s.bind((source, 0))
            s.connect(("127.0.0.1", self.lp))
            try:
                out = get_who(s)
            except (ConnectionResetError, BrokenPipeError):
                return None
        if not out:
            return None
        return out.split(b"\r\n\r\n", 1)[1].decode()

    def assertClosed(self, s):
        """The proxy closed S without a byte: EOF, or a reset when it closed with the client's
        unread bytes in its receive queue (the kernel then resets)."""
        try:
            self.assertEqual(s.recv(10), b"")
        except ConnectionResetError:
            pass

    def test_server_names_exact_wildcard_default_and_tap_on_one_chain(self):
        taps = os.path.join(self.tmp, "taps")
        os.mkdir(taps)
        self.start({
            "exact": self.chain("exact", "{server_names: [api.example.com]}",
                                self.tap_tls(os.path.join(taps, "api"))),
            "deep": self.chain("deep", "{server_names: [\"*.eu.example.com\"]}", self.tls()),
            "wild": self.chain("wild", "{server_names: [\"*.example.com\"]}", self.tls()),
        }, default=("fallback", self.chain("fallback", ts=self.tls(), default=True)), listener_extra=INSPECTOR)
        self.assertEqual(self.https("api.example.com"), "exact")
        self.assertEqual(self.https("www.example.com"), "wild")
        self.assertEqual(self.https("a.b.example.com"), "wild")
        # the longest wildcard suffix wins (Envoy's findFilterChainForServerName)
        self.assertEqual(self.https("x.eu.example.com"), "deep")
        # "*.example.com" does not match example.com itself: the default chain
        self.assertEqual(self.https("example.com"), "fallback")
        self.assertEqual(self.https("other.test"), "fallback")
        s = self.st.wait_stat("tcp.exact.downstream_cx_total", lambda v: v == 1)
        self.assertEqual(s, 1)
        self.st.wait_stat("tcp.fallback.downstream_cx_total", lambda v: v == 2)
        stats = self.st.stats()
        self.assertEqual(stats["tcp.wild.downstream_cx_total"], 2)
        self.assertEqual(stats["tcp.deep.downstream_cx_total"], 1)
        self.assertEqual(stats["tls_inspector.tls_found"], 6)
        self.assertEqual(stats["tls_inspector.sni_found"], 6)
        self.assertEqual(stats["listener.127.0.0.1_%d.no_filter_chain_match" % self.lp], 0)
        self.st.stop()
        # only the tapped chain's one connection left a trace
        files = glob.glob(os.path.join(taps, "api*"))
        self.assertEqual(len(files), 1, files)
        with open(files[0], "rb") as f:
            self.assertIn(b"GET /who", f.read())
        self.assertEqual(glob.glob(os.path.join(taps, "*")), files)

    def test_plain_and_tls_on_one_port_by_transport_protocol(self):
        self.start({
            "tls": self.chain("tls", "{transport_protocol: tls}", self.tls()),
            "raw": self.chain("raw", "{transport_protocol: raw_buffer}"),
        }, listener_extra=INSPECTOR)
        self.assertEqual(self.https("server.test"), "tls")
        self.assertEqual(self.plain(), "raw")
        stats = self.st.stats()
        self.assertEqual(stats["tls_inspector.tls_found"], 1)
        self.assertEqual(stats["tls_inspector.tls_not_found"], 1)

    def test_application_protocols(self):
        self.start({
            "h2": self.chain("h2", "{application_protocols: [h2]}", self.tls()),
        }, default=("h1", self.chain("h1", ts=self.tls(), default=True)), listener_extra=INSPECTOR)
        # curl offers "h2,http/1.1" with --http2 and only "http/1.1" with --http1.1; the
        # listener's TLS socket has no ALPN list, so both then speak HTTP/1.1 to the upstream
        self.assertEqual(self.https("server.test", "--http2"), "h2")
        self.assertEqual(self.https("server.test", "--http1.1"), "h1")
        self.assertEqual(self.st.stats()["tls_inspector.alpn_found"], 2)

    def test_source_prefix_ranges_source_type_and_no_match(self):
        # no listener filter: Envoy's order still applies to addresses and ports
        self.start({
            "one": self.chain("one", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, prefix_len: 32}]}"),
            "net": self.chain("net", "{source_prefix_ranges: [{address_prefix: 127.0.0.0, prefix_len: 29}]}"),
            "port": self.chain("port", "{destination_port: %d, source_prefix_ranges: "
                               "[{address_prefix: 127.0.0.16, prefix_len: 28}]}" % 1),
        })
        self.assertEqual(self.plain("127.0.0.2"), "one")  # longest prefix
        self.assertEqual(self.plain("127.0.0.3"), "net")
        # 127.0.0.20 is in no range of a chain without destination_port, and the chain with
        # one is for another port: no match, no default chain: closed and counted
        self.assertIsNone(self.plain("127.0.0.20"))
        self.assertIsNone(self.plain("127.0.0.21"))
        name = "listener.127.0.0.1_%d.no_filter_chain_match" % self.lp
        self.assertEqual(self.st.wait_stat(name, lambda v: v == 2), 2)
        stats = self.st.stats()
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % self.lp], 2)
        self.assertEqual(self.st.logtext().count("matched no filter chain"), 1)  # logged once

    def test_destination_port_wins_before_source(self):
        """Envoy never goes back up a level: a chain for the listener's port takes every
        connection to it, even one whose source a port-less chain names more precisely."""
        lp = free_port()
        self.start({
            "dport": self.chain("dport", "{destination_port: %d}" % lp),
            "src": self.chain("src", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, prefix_len: 32}]}"),
        }, port=lp)
        self.assertEqual(self.plain("127.0.0.2"), "dport")

    def test_server_names_without_inspector_warn_and_never_match(self):
        self.start({"api": self.chain("api", "{server_names: [api.example.com]}", self.tls())},
                   default=("rest", self.chain("rest", ts=self.tls(), default=True)))
        self.assertIn("no envoy.filters.listener.tls_inspector in listener_filters", self.st.logtext())
        self.assertEqual(self.https("api.example.com"), "rest")

    def test_source_type(self):
        self.start({
            "local": self.chain("local", "{source_type: SAME_IP_OR_LOOPBACK}"),
            "external": self.chain("external", "{source_type: EXTERNAL}"),
        })
        self.assertEqual(self.plain("127.0.0.5"), "local")

    def test_inspector_timeout_closes(self):
        self.start({"raw": self.chain("raw")},
                   listener_extra=INSPECTOR + "    listener_filters_timeout: 0.3s\n")
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            self.assertClosed(s)
        stats = self.st.stats()
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % self.lp], 1)
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_cx_total" % self.lp], 0)
        self.assertEqual(stats["tcp.raw.downstream_cx_total"], 0)

    def test_inspector_timeout_continues(self):
        self.start({"tls": self.chain("tls", "{transport_protocol: tls}", self.tls()),
                    "raw": self.chain("raw", "{transport_protocol: raw_buffer}")},
                   listener_extra=INSPECTOR + "    listener_filters_timeout: 0.3s\n"
                   "    continue_on_listener_filters_timeout: true\n")
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            # a server-first protocol: the client waits; after the timeout the connection goes
            # on as raw_buffer without SNI
            self.st.wait_stat("listener.127.0.0.1_%d.downstream_pre_cx_timeout" % self.lp, lambda v: v == 1)
            self.st.wait_stat("tcp.raw.downstream_cx_total", lambda v: v == 1)
            out = get_who(s)
        self.assertTrue(out.endswith(b"\r\n\r\nraw"), out)

    def test_client_hello_too_large(self):
        self.start({"tls": self.chain("tls", "{server_names: [server.test]}", self.tls())},
                   listener_extra="    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n"
                   "      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.filters."
                   "listener.tls_inspector.v3.TlsInspector\n        max_client_hello_size: 512\n")
        # a record header announcing a 4 KiB ClientHello: more than the bound
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            s.sendall(b"\x16\x03\x01\x10\x00\x01\x00\x0f\xfc")
            self.assertClosed(s)
        self.assertEqual(self.st.wait_stat("tls_inspector.client_hello_too_large", lambda v: v == 1), 1)
        # a real ClientHello (curl) fits in 512 bytes and still gets its chain
        self.assertEqual(self.https("server.test", "--tls-max", "1.2"), "tls")


    def test_client_hello_in_pieces_and_half_close(self):
        """The inspector waits for the rest of a ClientHello sent in pieces (each wakeup asks
        the socket for what the hello still needs), consumes nothing (the TLS socket behind
        it handshakes with the same bytes), and a client that half-closes in the middle of its
        hello is closed at once rather than at the timeout."""
        self.start({"api": self.chain("api", "{server_names: [api.example.com]}", self.tls())},
                   default=("other", self.chain("other", ts=self.tls(), default=True)),
                   listener_extra=INSPECTOR)
        pre = "listener.127.0.0.1_%d.downstream_pre_cx_active" % self.lp
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="api.example.com")
        with self.assertRaises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = out.read()
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            s.sendall(hello[:3])  # not even a record header
            self.st.wait_stat(pre, lambda v: v == 1)
            s.sendall(hello[3:40])
            # the proxy still waits: nothing chosen yet
            self.assertEqual(self.st.stats()["tls_inspector.tls_found"], 0)
            s.sendall(hello[40:])
            s.settimeout(20)
            while True:  # finish the handshake through the proxy, then ask
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    s.sendall(out.read())
                    data = s.recv(65536)
                    self.assertTrue(data, self.st.logtext())
                    inc.write(data)
            s.sendall(out.read())
            tls.write(b"GET /who HTTP/1.0\r\n\r\n")
            s.sendall(out.read())
            body = b""
            while True:
                try:
                    chunk = tls.read(65536)
                    if not chunk:
                        break
                    body += chunk
                except ssl.SSLWantReadError:
                    data = s.recv(65536)
                    if not data:
                        break
                    inc.write(data)
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    break
        self.assertTrue(body.endswith(b"\r\n\r\napi"), body)
        self.assertEqual(self.st.stats()["tls_inspector.sni_found"], 1)
        # half a hello, then FIN: closed and counted, no chain, no timeout
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            s.sendall(hello[:40])
            s.shutdown(socket.SHUT_WR)
            self.assertClosed(s)
        self.st.wait_stat("listener.127.0.0.1_%d.downstream_listener_filter_remote_close" % self.lp,
                          lambda v: v == 1)
        stats = self.st.stats()
        self.assertEqual(stats[pre], 0)
        self.assertEqual(stats["listener.127.0.0.1_%d.downstream_pre_cx_timeout" % self.lp], 0)
        self.assertEqual(stats["tcp.other.downstream_cx_total"], 0)


    def test_reload_swaps_the_chain_table(self):
        """The chain table lives in the config generation: after a reload new connections take
        the new chains (the listener, same name and address, keeps its socket)."""
        self.start({"one": self.chain("one", "{source_prefix_ranges: [{address_prefix: 127.0.0.2}]}")},
                   default=("rest", self.chain("rest", default=True)))
        self.assertEqual(self.plain("127.0.0.2"), "one")
        self.assertEqual(self.plain("127.0.0.3"), "rest")
        self.upstreams["three"] = self.upstream("three")
        cfg = self.config({"three": self.chain("three", "{source_prefix_ranges: [{address_prefix: 127.0.0.3}]}"),
                           "one": self.chain("one", "{source_prefix_ranges: [{address_prefix: 127.0.0.2}]}")},
                          upstreams=self.upstreams)
        tmp = self.st.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(cfg)
        os.replace(tmp, self.st.config_path)
        os.kill(self.st.pid, signal.SIGHUP)
        self.st.wait_log("config generation 2")
        self.assertRegex(self.st.logtext(), r"config generation 2: listeners .*\(1 kept\)")
        self.assertEqual(self.plain("127.0.0.3"), "three")
        self.assertEqual(self.plain("127.0.0.2"), "one")
        self.assertIsNone(self.plain("127.0.0.4"))  # the new table has no default chain
        self.st.wait_stat("listener.127.0.0.1_%d.no_filter_chain_match" % self.lp, lambda v: v == 1)


    def test_stop_while_inspecting(self):
        """A client still in the inspector's hands at the end of the drain is closed with the
        others (its peek events go first), and socktap exits cleanly (ASan: nothing leaked)."""
        self.start({"raw": self.chain("raw")}, listener_extra=INSPECTOR, args=("--drain-time-s", "1"))
        with socket.create_connection(("127.0.0.1", self.lp), timeout=20) as s:
            s.sendall(b"\x16\x03")  # the start of a record, then nothing
            self.st.wait_stat("listener.127.0.0.1_%d.downstream_pre_cx_active" % self.lp, lambda v: v == 1)
            self.assertEqual(self.st.stop(), 0)
            self.assertClosed(s)


if __name__ == "__main__":
    harness.main()

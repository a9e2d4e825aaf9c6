"""capture2pcap pcapng output end to end, checked with Wireshark's own tools.

Format choice (.pcapng name, --pcapng, --pcap, '-'), the same packets as the classic pcap path
for every reader format and option (read back with a small independent pcapng parser here and
with capinfos/tshark/editcap), one interface per trace path prefix, direction flags, one comment
per connection, socktap traces of real curl traffic, and a Decryption Secrets Block that lets
tshark decrypt a real TLS 1.2 and 1.3 exchange with no key-log preference.
"""
import glob
import os
import shutil
import ssl
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import free_port, proxy_config, varint  # noqa: E402
from test_capture import capture_ts  # noqa: E402
from test_capture2pcap import (DATA, payload, protoc_encode, v2_connection, v2_event,  # noqa: E402
                               v3_connection, v3_event, v3_segment, write_v2_trace)
from test_tls import GEN  # noqa: E402

C2P = harness.tool("capture2pcap")
INJECT = harness.tool("pcapng_inject")
SCHEMA = os.path.join(harness.ROOT, "tests", "data", "envoy-schema")
ROOT_NOTE = 'Running as user "root"'  # tshark's note when run as root: not a warning about the file

# --- independent readers (the format, straight from the pcapng spec / pcap-savefile(5)) -------


def _opts(b):
    out, i = [], 0
    while i + 4 <= len(b):
        code, ln = struct.unpack_from("<HH", b, i)
        if code == 0:
            break
        out.append((code, b[i + 4:i + 4 + ln]))
        i += 4 + ln + (-ln % 4)
    return out


def read_pcapng(path):
    """-> dict of lists: shb (options), idb (linktype, snaplen, options), epb (ifid, ts_ns, data,
    origlen, options), dsb (type, data), order (block types in file order)."""
    with open(path, "rb") as f:
        data = f.read()
    r = {"shb": [], "idb": [], "epb": [], "dsb": [], "order": []}
    off = 0
    while off < len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        assert blen % 4 == 0 and blen >= 12, (off, blen)
        assert struct.unpack_from("<I", data, off + blen - 4)[0] == blen, off
        body = data[off + 8:off + blen - 4]
        r["order"].append(btype)
        if btype == 0x0A0D0D0A:
            assert struct.unpack_from("<I", body, 0)[0] == 0x1A2B3C4D
            r["shb"].append(_opts(body[16:]))
        elif btype == 1:
            lt, _, snap = struct.unpack_from("<HHI", body, 0)
            r["idb"].append((lt, snap, _opts(body[8:])))
        elif btype == 6:
            ifid, hi, lo, cap, orig = struct.unpack_from("<IIIII", body, 0)
            r["epb"].append((ifid, hi << 32 | lo, body[20:20 + cap], orig, _opts(body[20 + cap + (-cap % 4):])))
        elif btype == 10:
            st, sl = struct.unpack_from("<II", body, 0)
            assert all(x == 0 for x in body[8 + sl:]), "DSB padding"
            r["dsb"].append((st, body[8:8 + sl]))
        off += blen
    return r


def read_pcap(path):
    """Classic pcap -> (linktype, [(ts_ns, data, origlen)])."""
    with open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack_from("<I", data, 0)
    scale = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}[magic]
    lt, = struct.unpack_from("<I", data, 20)
    pk, off = [], 24
    while off < len(data):
        s, frac, cap, orig = struct.unpack_from("<IIII", data, off)
        pk.append((s * 10**9 + frac * scale, data[off + 16:off + 16 + cap], orig))
        off += 16 + cap
    return lt, pk


def run(argv, clean_stderr=True):
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    err = "\n".join(l for l in r.stderr.decode(errors="replace").splitlines() if ROOT_NOTE not in l)
    if r.returncode != 0 or (clean_stderr and err):
        raise AssertionError("%s: rc %d, stderr: %s" % (argv[0], r.returncode, err))
    return r.stdout.decode(errors="replace")


def tshark(path, *args):
    """tshark -r with nothing on stderr (no warning about the file)."""
    return run(["tshark", "-r", path, *args])


def capinfos(path):
    out = run(["capinfos", "-t", "-c", "-E", "-I", path])
    info = {}
    for line in out.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            info.setdefault(k.strip(), v.strip())
    return info


class PcapngTest(harness.E2ETest):
    def setUp(self):
        super().setUp()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def p(self, name):
        return os.path.join(self.tmp, name)

    def c2p(self, *args, input_bytes=None):
        r = subprocess.run([C2P, *args], input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=600)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")

    def convert_ok(self, *args):
        rc, out, err = self.c2p(*args)
        self.assertEqual(rc, 0, err)
        return out, err

    def assert_wireshark_clean(self, ng, checksums=True):
        """capinfos says pcapng; tshark reads it with no stderr, no malformed packet and, for
        whole frames, verified IP and TCP checksums."""
        self.assertIn("pcapng", capinfos(ng)["File type"])
        self.assertEqual(tshark(ng, "-Y", "_ws.malformed"), "")
        if checksums:
            st = set(tshark(ng, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-T", "fields",
                            "-e", "tcp.checksum.status").split())
            self.assertEqual(st, {"1"})

    def assert_same_packets(self, ng, pcap):
        """The pcapng holds exactly the classic pcap's frames (bytes, lengths, times)."""
        r = read_pcapng(ng)
        lt, pk = read_pcap(pcap)
        self.assertEqual({i[0] for i in r["idb"]}, {lt})
        self.assertEqual([(e[1], e[2], e[3]) for e in r["epb"]], pk)
        self.assertEqual(int(capinfos(ng)["Number of packets"]), len(pk))
        self.assertEqual(int(capinfos(pcap)["Number of packets"]), len(pk))

    def assert_editcap_round_trip(self, ng):
        """pcapng -> nanosecond pcap -> pcapng with editcap keeps every packet and time."""
        a, b = ng + ".rt.pcap", ng + ".rt.pcapng"
        run(["editcap", "-F", "nsecpcap", ng, a])
        run(["editcap", "-F", "pcapng", a, b])
        orig = [(e[1], e[2], e[3]) for e in read_pcapng(ng)["epb"]]
        self.assertEqual(read_pcap(a)[1], orig)
        self.assertEqual([(e[1], e[2], e[3]) for e in read_pcapng(b)["epb"]], orig)
        os.unlink(a)
        os.unlink(b)

    # --- format choice ------------------------------------------------------------------

    def test_format_by_name_and_flags(self):
        src = os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text")
        magic = {b"\x0a\x0d\x0d\x0a": "pcapng", b"\xd4\xc3\xb2\xa1": "pcap", b"\x4d\x3c\xb2\xa1": "pcap"}
        cases = [([], "o.pcapng", "pcapng"), ([], "o.pcap", "pcap"), ([], "o.cap", "pcap"),
                 (["--pcap"], "p.pcapng", "pcap"), (["--pcapng"], "n.pcap", "pcapng"),
                 (["--pcapng", "--nanosecond"], "n2.out", "pcapng"), (["--pcap", "--nanosecond"], "x.pcapng", "pcap")]
        for extra, name, want in cases:
            with self.subTest(extra=extra, name=name):
                _, err = self.convert_ok(*extra, src, self.p(name))
                with open(self.p(name), "rb") as f:
                    self.assertEqual(magic[f.read(4)], want)
                self.assertIn("(%s)" % want, err)
                self.assertEqual(os.stat(self.p(name)).st_mode & 0o777, 0o600)
                self.assertIn(want, capinfos(self.p(name))["File type"])
        # stdout: classic unless --pcapng
        for extra, want in (([], b"\xd4\xc3\xb2\xa1"), (["--pcapng"], b"\x0a\x0d\x0d\x0a")):
            rc, out, err = self.c2p(*extra, src, "-")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out[:4], want)
        rc, _, err = self.c2p("--pcap", "--pcapng", src, self.p("both.pcapng"))
        self.assertEqual(rc, 2)
        self.assertIn("exclude", err)
        self.assertFalse(os.path.exists(self.p("both.pcapng")))
        # existing output and failed runs: the same rules as classic pcap
        rc, _, err = self.c2p(src, self.p("o.pcapng"))
        self.assertEqual(rc, 1)
        self.assertIn("--force", err)
        bad = self.p("bad.pb")
        with open(bad, "wb") as f:
            f.write(v2_connection(("127.0.0.1", 1), ("127.0.0.1", 2)) + b"\x12\x7f\x01")
        rc, _, err = self.c2p(bad, self.p("bad.pcapng"))
        self.assertEqual(rc, 1)
        self.assertFalse(os.path.exists(self.p("bad.pcapng")))
        rc, _, err = self.c2p(bad, src)  # an input as output: refused, input untouched
        self.assertNotEqual(rc, 0)
        out = run([C2P, "--help"])
        self.assertIn("--pcapng", out)
        self.assertIn(".pcapng", out)

    # --- every reader format -------------------------------------------------------------

    def fixture_inputs(self):
        """(name, path) for the Envoy fixtures in text, their binary encodings and JSON."""
        ins = [(n, os.path.join(DATA, n)) for n in ("capture2pcap_h2_ipv4.pb_text", "tap2pcap_h2_ipv4.pb_text",
                                                   "tap2pcap_h2_ipv4.2019-socket_buffered_trace-raw-bytes.pb_text")]
        with open(os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text"), "rb") as f:
            v2 = protoc_encode("envoy.data.tap.v2alpha.Trace", f.read())
        with open(os.path.join(DATA, "tap2pcap_h2_ipv4.pb_text"), "rb") as f:
            v3 = protoc_encode("envoy.data.tap.v3.TraceWrapper", f.read())
        for name, data in (("t_1.pb", v2), ("w_2.pb", v3), ("w_3.pb_length_delimited", varint(len(v3)) + v3)):
            with open(self.p(name), "wb") as f:
                f.write(data)
            ins.append((name, self.p(name)))
        ins.append(("streamed_socket_events.json", os.path.join(SCHEMA, "streamed_socket_events.json")))
        ins.append(("streamed_socket_events.txtpb", os.path.join(SCHEMA, "streamed_socket_events.txtpb")))
        return ins

    def test_every_reader_format_same_packets_as_pcap(self):
        for name, src in self.fixture_inputs():
            with self.subTest(name=name):
                fmt = ["--format", "v3-text"] if name.endswith(".txtpb") else []
                ng, pc = self.p(name + ".pcapng"), self.p(name + ".pcap")
                self.convert_ok(*fmt, src, ng)
                self.convert_ok(*fmt, "--nanosecond", src, pc)
                self.assert_wireshark_clean(ng)
                self.assert_same_packets(ng, pc)
                # tshark decodes both the same way (summary lines, HTTP/2 on the Envoy fixtures)
                dec = ["-d", "tcp.port==10000,http2", "-P"]
                self.assertEqual(tshark(ng, *dec), tshark(pc, *dec))
                self.assert_editcap_round_trip(ng)
                comments = tshark(ng, "-Y", "frame.comment", "-T", "fields", "-e", "frame.comment").splitlines()
                self.assertGreaterEqual(len(comments), 1)
                self.assertTrue(all(c.startswith("socktap connection ") and src in c for c in comments), comments)

    def test_golden_fixture_nanosecond_times(self):
        ng = self.p("g.pcapng")
        self.convert_ok(os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text"), ng)
        times = tshark(ng, "-T", "fields", "-e", "frame.time_epoch").split()
        self.assertEqual(times[0], "1525207293.216737962")  # pcapng: nanoseconds by default
        r = read_pcapng(ng)
        self.assertEqual([o for o in r["idb"][0][2] if o[0] == 9], [(9, b"\x09")])  # if_tsresol 9
        self.assertIn((4, ("socktap " + run([C2P, "--version"]).split()[1]).encode()), r["shb"][0])

    # --- options --------------------------------------------------------------------------

    def test_options_in_both_formats(self):
        for ip in ("127.0.0.1", "::1"):
            src = self.p("opt_%s_9.pb" % ip.replace(":", "_"))
            evs = [(1700000000, 1000 * i + 7, "read" if i % 2 else "write", payload(1 + 1777 * i, i)) for i in range(10)]
            evs.append((1700000001, 0, "write", payload(100000, 99), True))
            write_v2_trace(src, (ip, 8443), (ip, 40000), evs)
            for extra in ([], ["--tcp-handshake", "--mss", "1460"], ["--no-ethernet"], ["--snaplen", "100"],
                          ["--tcp-handshake", "--no-ethernet", "--mss", "536", "--snaplen", "1000"]):
                with self.subTest(ip=ip, extra=extra):
                    ng, pc = self.p("o.pcapng"), self.p("o.pcap")
                    self.convert_ok("--force", *extra, src, ng)
                    self.convert_ok("--force", "--nanosecond", *extra, src, pc)
                    self.assert_same_packets(ng, pc)
                    self.assert_wireshark_clean(ng, checksums="--snaplen" not in extra)
                    r = read_pcapng(ng)
                    lt, snap, _ = r["idb"][0]
                    self.assertEqual(lt, 101 if "--no-ethernet" in extra else 1)
                    if "--snaplen" in extra:
                        self.assertEqual(snap, int(extra[extra.index("--snaplen") + 1]))
                        self.assertTrue(all(len(e[2]) <= snap for e in r["epb"]))
                    self.assertIn("Raw IP" if "--no-ethernet" in extra else "Ethernet",
                                  capinfos(ng)["File encapsulation"])
                    # direction: the local port (8443) receives what the proxy read
                    rows = [l.split("\t") for l in tshark(ng, "-T", "fields", "-e", "frame.packet_flags_direction",
                                                          "-e", "tcp.dstport").splitlines()]
                    self.assertTrue(rows)
                    for d, dport in rows:
                        self.assertEqual(int(d, 16), 1 if dport == "8443" else 2, rows)
                    if "--tcp-handshake" in extra:
                        syn = tshark(ng, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0", "-T", "fields", "-e",
                                     "frame.packet_flags_direction", "-e", "frame.comment").split("\t")
                        self.assertEqual(int(syn[0], 16), 1)  # the client (port 40000) dialled in
                        self.assertIn("socktap connection 1", syn[1])  # the comment is on the SYN
                    self.assert_editcap_round_trip(ng)

    # --- interfaces and comments -------------------------------------------------------------

    def test_interface_per_prefix_and_comment_per_connection(self):
        d1, d2 = self.p("a"), self.p("b")
        os.makedirs(d1)
        os.makedirs(d2)
        traces = {}
        # two connections of "ingress" (one a collision name), one of "backend", one v3 file with two
        for i, (path, local, remote) in enumerate(
                ((os.path.join(d1, "ingress_5.pb"), ("127.0.0.1", 10000), ("127.0.0.1", 50005)),
                 (os.path.join(d1, "ingress_6.1.pb"), ("127.0.0.1", 10000), ("127.0.0.1", 50006)),
                 (os.path.join(d2, "backend_7.pb"), ("::1", 40007), ("::1", 8080)))):
            with open(path, "wb") as f:
                f.write(v2_connection(local, remote, conn_id=5 + i))
                for k in range(3):
                    f.write(v2_event(100 + i, k * 10, "read" if k % 2 else "write", b"x%d-%d" % (i, k)))
            traces[path] = (5 + i, local, remote)
        v3 = os.path.join(d2, "tap_30.pb")
        with open(v3, "wb") as f:
            for tid, port in ((30, 51000), (31, 51001)):
                f.write(v3_segment(tid, conn=v3_connection(("127.0.0.1", 9000), ("127.0.0.1", port))))
                f.write(v3_segment(tid, event=v3_event(103, tid, "read", b"q%d" % tid)))
                f.write(v3_segment(tid, event=v3_event(103, 100 + tid, "write", b"r%d" % tid)))
                f.write(v3_segment(tid, event=v3_event(103, 200 + tid, "closed")))
        ng = self.p("m.pcapng")
        _, err = self.convert_ok("--tcp-handshake", *traces, v3, ng)
        self.assertIn("5 connection(s)", err)
        self.assert_wireshark_clean(ng)
        r = read_pcapng(ng)
        names = [dict(i[2])[2].decode() for i in r["idb"]]
        descs = [dict(i[2])[3].decode() for i in r["idb"]]
        self.assertEqual(names, ["ingress", "backend", "tap"])
        self.assertEqual(descs, ["socktap capture, trace prefix " + p for p in
                                 (os.path.join(d1, "ingress"), os.path.join(d2, "backend"), os.path.join(d2, "tap"))])
        self.assertEqual(r["order"][:4], [0x0A0D0D0A, 1, 1, 1])  # interfaces before any packet
        info = capinfos(ng)
        self.assertEqual(info["Number of interfaces in file"], "3")
        rows = [l.split("\t") for l in tshark(ng, "-T", "fields", "-e", "tcp.stream", "-e", "frame.interface_name",
                                              "-e", "frame.comment", "-e", "tcp.srcport", "-e", "tcp.dstport",
                                              "-E", "occurrence=f").splitlines()]
        streams = {}
        for stream, ifname, comment, sp, dp in rows:
            streams.setdefault(stream, []).append((ifname, comment, {sp, dp}))
        self.assertEqual(len(streams), 5)
        seen = set()
        for pkts in streams.values():
            self.assertEqual(len({p[0] for p in pkts}), 1)  # one interface per connection
            self.assertTrue(pkts[0][1], pkts[0])  # the first packet has the comment ...
            self.assertTrue(all(not p[1] for p in pkts[1:]))  # ... and no other
            seen.add((pkts[0][0], pkts[0][1]))
        for path, (cid, local, remote) in traces.items():
            name = "backend" if "backend" in path else "ingress"
            fmt = lambda a: ("[%s]:%d" if ":" in a[0] else "%s:%d") % a  # noqa: E731
            want = "socktap connection %d; trace %s; local %s; remote %s" % (cid, path, fmt(local), fmt(remote))
            self.assertIn((name, want), seen)
        for tid, port in ((30, 51000), (31, 51001)):
            want = "socktap connection %d; trace %s; local 127.0.0.1:9000; remote 127.0.0.1:%d" % (tid, v3, port)
            self.assertIn(("tap", want), seen)
        # tshark's own comment filter finds exactly one packet per connection
        self.assertEqual(len(tshark(ng, "-Y", "frame.comment").splitlines()), 5)
        self.assert_editcap_round_trip(ng)
        # stdin is an interface of its own
        with open(next(iter(traces)), "rb") as f:
            rc, out, err = self.c2p("--pcapng", "-", "-", input_bytes=f.read())
        self.assertEqual(rc, 0, err)
        with open(self.p("s.pcapng"), "wb") as f:
            f.write(out)
        r = read_pcapng(self.p("s.pcapng"))
        self.assertEqual(dict(r["idb"][0][2])[2], b"stdin")
        self.assertIn(b"trace (stdin)", r["epb"][0][4][0][1])

    # --- real socktap traces ---------------------------------------------------------------

    def test_socktap_curl_listener_and_cluster(self):
        body = b"".join(b"row %05d of a body through socktap\n" % i for i in range(4000))
        with open(self.p("body.txt"), "wb") as f:
            f.write(body)
        for host in ("127.0.0.1", "::1"):
            with self.subTest(host=host):
                up, _ = self.start_http_upstream(host=host)
                caps = self.p("cap-" + host.replace(":", "_"))
                os.makedirs(caps)
                lp, ap = free_port(host), free_port()
                cfg = proxy_config(lp, up, admin_port=ap, host=host, upstream_host=host,
                                   listener_ts=capture_ts(os.path.join(caps, "ingress")),
                                   cluster_ts=capture_ts(os.path.join(caps, "backend"), fmt="PROTO_TEXT", indent=4))
                st = self.socktap(cfg, admin_port=ap)
                url = "http://%s:%d/body.txt" % ("[%s]" % host if ":" in host else host, lp)
                for _ in range(2):
                    r = subprocess.run(["curl", "-sS", "--max-time", "20", url], capture_output=True)
                    self.assertEqual(r.stdout, body, r.stderr)
                st.stop()
                traces = sorted(glob.glob(os.path.join(caps, "*")))
                self.assertEqual(len(traces), 4, traces)
                ng, pc = os.path.join(caps, "all.pcapng"), os.path.join(caps, "all.pcap")
                self.convert_ok("--tcp-handshake", "--mss", "1460", *traces, ng)
                self.convert_ok("--tcp-handshake", "--mss", "1460", "--nanosecond", *traces, pc)
                self.assert_wireshark_clean(ng)
                self.assert_same_packets(ng, pc)
                self.assert_editcap_round_trip(ng)
                dec = ["-d", "tcp.port==%d,http" % lp, "-d", "tcp.port==%d,http" % up]
                req = [l.split("\t") for l in tshark(ng, *dec, "-Y", "http.request", "-T", "fields", "-e",
                                                     "frame.interface_name", "-e",
                                                     "frame.packet_flags_direction").splitlines()]
                # the client's request is read on the listener (inbound), written to the backend
                self.assertEqual(sorted((n, int(d, 16)) for n, d in req),
                                 [("backend", 2), ("backend", 2), ("ingress", 1), ("ingress", 1)])
                resp = [l.split("\t") for l in tshark(ng, *dec, "-Y", "http.response.code == 200", "-T", "fields",
                                                      "-e", "frame.interface_name", "-e",
                                                      "frame.packet_flags_direction").splitlines()]
                self.assertEqual(sorted((n, int(d, 16)) for n, d in resp),
                                 [("backend", 1), ("backend", 1), ("ingress", 2), ("ingress", 2)])
                comments = tshark(ng, "-Y", "frame.comment", "-T", "fields", "-e", "frame.comment").splitlines()
                self.assertEqual(len(comments), 4)
                for t in traces:
                    cid = int(os.path.basename(t).split("_")[1].split(".")[0])
                    self.assertEqual(sum(c.startswith("socktap connection %d; trace %s; local " % (cid, t))
                                         for c in comments), 1, comments)
                self.assertEqual(len(read_pcapng(ng)["idb"]), 2)

    # --- Decryption Secrets Block ------------------------------------------------------------

    def tls_exchange(self, pki, version, keylog):
        """A real TLS exchange between two Python ssl objects over memory BIOs: returns the
        server-side trace events (read = client records, write = server records)."""
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(os.path.join(pki, "server.pem"), os.path.join(pki, "server.key"))
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.load_verify_locations(os.path.join(pki, "ca.pem"))
        cctx.keylog_filename = keylog
        for c in (sctx, cctx):
            c.minimum_version = c.maximum_version = version
        cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
        cli = cctx.wrap_bio(cin, cout, server_hostname="server.test")
        srv = sctx.wrap_bio(sin, sout, server_side=True)
        evs, t = [], [0]

        def pump():
            moved = False
            for src, dst, kind in ((cout, sin, "read"), (sout, cin, "write")):
                data = src.read()
                if data:
                    t[0] += 1000
                    evs.append((1700000000, t[0], kind, data))
                    dst.write(data)
                    moved = True
            return moved

        def step(fn):
            try:
                fn()
                return True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False

        done = [False, False]
        for _ in range(50):
            done[0] = done[0] or step(cli.do_handshake)
            done[1] = done[1] or step(srv.do_handshake)
            if not pump() and all(done):
                break
        cli.write(b"GET /secret-path.txt HTTP/1.1\r\nHost: server.test\r\n\r\n")
        pump()
        self.assertIn(b"secret-path", srv.read(4096))
        srv.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        pump()
        self.assertEqual(cli.read(4096).split(b"\r\n\r\n")[1], b"secret")
        return evs

    def test_dsb_lets_tshark_decrypt_tls12_and_tls13(self):
        pki = self.p("pki")
        subprocess.run(["sh", GEN, pki], check=True, capture_output=True)
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(version=version.name):
                keylog, src = self.p("keys-%s.txt" % version.name), self.p("tls-%s_1.pb" % version.name)
                evs = self.tls_exchange(pki, version, keylog)
                write_v2_trace(src, ("127.0.0.1", 8443), ("127.0.0.1", 40001), evs)
                pc, ng = self.p("tls-%s.pcap" % version.name), self.p("tls-%s.pcapng" % version.name)
                self.convert_ok("--tcp-handshake", "--nanosecond", src, pc)
                run([INJECT, keylog, pc, ng])
                with open(keylog, "rb") as f:
                    keys = f.read()
                r = read_pcapng(ng)
                self.assertEqual(r["dsb"], [(0x544C534B, keys)])
                self.assertEqual(r["order"][:3], [0x0A0D0D0A, 1, 10])  # the DSB before the packets
                # the same block editcap --inject-secrets writes
                ref = self.p("ref-%s.pcapng" % version.name)
                run(["editcap", "--inject-secrets", "tls," + keylog, pc, ref])
                self.assertEqual(read_pcapng(ref)["dsb"], r["dsb"])
                dec = ["-o", "tls.keylog_file:", "-d", "tcp.port==8443,tls"]
                self.assertIn("pcapng", capinfos(ng)["File type"])
                self.assertEqual(tshark(ng, *dec, "-Y", "_ws.malformed"), "")
                uri = tshark(ng, *dec, "-Y", "http.request", "-T", "fields", "-e", "http.request.uri").split()
                self.assertEqual(uri, ["/secret-path.txt"])
                # control: without the block nothing decrypts
                self.assertEqual(tshark(pc, *dec, "-Y", "http.request"), "")
                ver = tshark(ng, *dec, "-Y", "tls.handshake.type == 2", "-T", "fields", "-e",
                             "tls.handshake.extensions.supported_version", "-e", "tls.handshake.version")
                self.assertIn("0x0304" if version == ssl.TLSVersion.TLSv1_3 else "0x0303", ver)


if __name__ == "__main__":
    harness.main()

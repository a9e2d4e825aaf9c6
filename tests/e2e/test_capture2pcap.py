"""capture2pcap end to end: traces in every format -> pcap -> this machine's tshark.

Golden output for the Envoy fixtures, checksums with validation on (IPv4 and IPv6), stream
reassembly with --tcp-handshake --mss, merge order, stdin/stdout, truncated and corrupt inputs
with their exact errors, usage errors, file mode, and constant memory on a large trace.
Binary traces are built here with a tiny protobuf encoder, so the tests do not depend on the
project's own encoders (which have their own tests).
"""
import os
import random
import resource
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import varint  # noqa: E402

C2P = harness.tool("capture2pcap")
DATA = os.path.join(harness.ROOT, "tests", "data", "envoy")
GOLDEN_6DIGIT = os.path.join(DATA, "tap2pcap_h2_ipv4.tshark-6digit.txt")
PROTO = os.path.join(harness.ROOT, "src", "trace", "proto")

# --- a minimal protobuf encoder (wire format only) -------------------------------------------


def f_len(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def f_int(num, v):
    return varint(num << 3) + varint(v)


def address(ip, port):
    # Address{socket_address=1{address=2, port_value=3}}
    return f_len(1, f_len(2, ip.encode()) + f_int(3, port))


def v2_connection(local, remote, conn_id=1):
    return f_len(1, f_int(1, conn_id) + f_len(2, address(*local)) + f_len(3, address(*remote)))


def v2_event(sec, nsec, kind, data, end_stream=False):
    """One Trace.events field. KIND: 'read' or 'write'."""
    ts = f_int(1, sec) + (f_int(2, nsec) if nsec else b"")
    body = f_len(1, data)
    if kind == "write" and end_stream:
        body += f_int(2, 1)
    return f_len(2, f_len(1, ts) + f_len(2 if kind == "read" else 3, body))


def v3_connection(local, remote, old=False):
    a, b = (2, 3) if old else (1, 2)
    return f_len(a, address(*local)) + f_len(b, address(*remote))


def v3_segment(trace_id, conn=None, event=None):
    """TraceWrapper{socket_streamed_trace_segment=4{trace_id=1, connection=2 | event=3}}."""
    inner = f_int(1, trace_id)
    if conn is not None:
        inner += f_len(2, conn)
    if event is not None:
        inner += f_len(3, event)
    return f_len(4, inner)


def v3_event(sec, nsec, kind, data=b"", end_stream=False):
    ts = f_int(1, sec) + (f_int(2, nsec) if nsec else b"")
    if kind == "closed":
        return f_len(1, ts) + f_len(4, b"")
    body = f_len(1, f_len(1, data))  # Read/Write.data = Body{as_bytes}
    if kind == "write" and end_stream:
        body += f_int(2, 1)
    return f_len(1, ts) + f_len(2 if kind == "read" else 3, body)


def protoc_encode(msg, text):
    return subprocess.run(["protoc", "-I", PROTO, "-I", "/usr/include", "--encode=" + msg,
                           "envoy/data/tap/v2alpha/capture.proto", "envoy/data/tap/v3/wrapper.proto"],
                          input=text, stdout=subprocess.PIPE, check=True).stdout


def write_v2_trace(path, local, remote, events):
    """EVENTS: iterable of (sec, nsec, kind, data[, end_stream]). Streams to PATH."""
    with open(path, "wb") as f:
        f.write(v2_connection(local, remote))
        for e in events:
            f.write(v2_event(*e))


def payload(n, seed):
    block = bytes((i * 7 + seed * 13 + (i >> 8)) & 0xFF for i in range(4096))
    return (block * (n // len(block) + 1))[:n]


def tshark(pcap, *args, check=True):
    r = subprocess.run(["tshark", "-r", pcap, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    if check and r.returncode != 0:
        raise AssertionError("tshark failed: %s" % r.stderr.decode(errors="replace"))
    return r.stdout.decode()


def follow_raw(pcap):
    """`tshark -z follow,tcp,raw,0` -> (bytes from the first sender, bytes from the other)."""
    out = tshark(pcap, "-q", "-z", "follow,tcp,raw,0")
    a, b = bytearray(), bytearray()
    started = False
    for line in out.splitlines():
        if line.startswith("Node 1:"):
            started = True
            continue
        if not started or line.startswith("====="):
            continue
        if line.startswith("\t"):
            b += bytes.fromhex(line.strip())
        elif line.strip():
            a += bytes.fromhex(line.strip())
    return bytes(a), bytes(b)


def golden():
    with open(GOLDEN_6DIGIT) as f:
        return f.read().splitlines()


class Capture2PcapTest(harness.E2ETest):
    def setUp(self):
        super().setUp()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def c2p(self, *args, stdin=None, input_bytes=None):
        r = subprocess.run([C2P, *args], input=input_bytes, stdin=stdin if input_bytes is None else None,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")

    def p(self, name):
        return os.path.join(self.tmp, name)

    def convert_ok(self, *args):
        rc, out, err = self.c2p(*args)
        self.assertEqual(rc, 0, err)
        return out, err

    def assert_golden(self, pcap):
        lines = tshark(pcap, "-d", "tcp.port==10000,http2", "-P").splitlines()
        self.assertEqual(lines, golden())

    # --- golden tshark output -----------------------------------------------------------

    def test_golden_v2_text_fixture(self):
        out = self.p("v2.pcap")
        self.convert_ok(os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text"), out)
        self.assert_golden(out)
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)  # decrypted payloads: owner only

    def test_golden_v3_text_fixtures(self):
        for name in ("tap2pcap_h2_ipv4.pb_text", "tap2pcap_h2_ipv4.2019-socket_buffered_trace-raw-bytes.pb_text"):
            with self.subTest(name=name):
                out = self.p(name + ".pcap")
                self.convert_ok(os.path.join(DATA, name), out)
                self.assert_golden(out)

    def test_golden_binary_forms_and_stdout(self):
        with open(os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text"), "rb") as f:
            v2 = protoc_encode("envoy.data.tap.v2alpha.Trace", f.read())
        with open(os.path.join(DATA, "tap2pcap_h2_ipv4.pb_text"), "rb") as f:
            v3 = protoc_encode("envoy.data.tap.v3.TraceWrapper", f.read())
        for name, data in (("t.pb", v2), ("w.pb", v3), ("w.pb_length_delimited", varint(len(v3)) + v3)):
            with self.subTest(name=name):
                src = self.p(name)
                with open(src, "wb") as f:
                    f.write(data)
                # "-" output: the pcap goes to stdout, as for `| tshark -r -`
                rc, pcap, err = self.c2p(src, "-")
                self.assertEqual(rc, 0, err)
                out = self.p(name + ".pcap")
                with open(out, "wb") as f:
                    f.write(pcap)
                self.assert_golden(out)

    def test_stdin_input_and_nanosecond(self):
        with open(os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text"), "rb") as f:
            text = f.read()
        rc, pcap, err = self.c2p("--nanosecond", "--format", "v2-text", "-", "-", input_bytes=text)
        self.assertEqual(rc, 0, err)
        out = self.p("ns.pcap")
        with open(out, "wb") as f:
            f.write(pcap)
        times = tshark(out, "-T", "fields", "-e", "frame.time_epoch").split()
        # nanoseconds straight from the trace, no time zone or float rounding
        self.assertEqual(times[0], "1525207293.216737962")
        rel = tshark(out, "-T", "fields", "-e", "frame.time_relative").split()
        self.assertEqual(rel[1], "0.013712695")

    # --- packets ----------------------------------------------------------------------------

    def checksum_statuses(self, pcap, field):
        return set(tshark(pcap, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                          "-T", "fields", "-e", field).split())

    def test_ipv6_and_ipv4_checksums_valid(self):
        for ip, name in (("::1", "v6"), ("2001:db8::7", "v6g"), ("127.0.0.1", "v4")):
            with self.subTest(ip=ip):
                src = self.p(name + ".pb")
                evs = [(1700000000, 1000 * i, "read" if i % 2 else "write", payload(1 + 977 * i, i))
                       for i in range(12)]
                evs.append((1700000001, 0, "write", payload(100000, 99)))  # split: > one IP packet
                write_v2_trace(src, (ip, 8443), (ip, 40000), evs)
                for extra in ([], ["--tcp-handshake", "--mss", "1460"], ["--no-ethernet"]):
                    out = self.p(name + "".join(extra) + ".pcap")
                    self.convert_ok(src, out, *extra)
                    self.assertEqual(self.checksum_statuses(out, "tcp.checksum.status"), {"1"})
                    if ":" not in ip:
                        self.assertEqual(self.checksum_statuses(out, "ip.checksum.status"), {"1"})
                    bad = tshark(out, "-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE",
                                 "-Y", "_ws.malformed || _ws.expert.severity >= error")
                    self.assertEqual(bad, "")
                    fam = tshark(out, "-T", "fields", "-e", "ipv6.src" if ":" in ip else "ip.src").split()
                    self.assertIn(ip, fam)

    def test_follow_stream_exact_bytes_with_handshake_and_mss(self):
        for ip in ("127.0.0.1", "::1"):
            with self.subTest(ip=ip):
                src = self.p("follow.pb")
                evs, reads, writes = [], b"", b""
                for i in range(20):
                    kind = "read" if i % 3 else "write"
                    data = payload(3000 + 5111 * i, i)
                    evs.append((1700000000 + i, 17, kind, data, kind == "write" and i == 18))
                    if kind == "read":
                        reads += data
                    else:
                        writes += data
                write_v2_trace(src, (ip, 10000), (ip, 50000), evs)
                out = self.p("follow.pcap")
                self.convert_ok("--force", "--tcp-handshake", "--mss", "1460", src, out)
                flags = [r.split("\t") for r in tshark(out, "-T", "fields", "-e", "tcp.flags.syn", "-e",
                                                        "tcp.flags.fin").splitlines()]
                self.assertEqual(flags[0], ["1", "0"])
                self.assertEqual(flags[1], ["1", "0"])
                self.assertEqual(sum(f[1] == "1" for f in flags), 2)
                lens = [int(x) for x in tshark(out, "-T", "fields", "-e", "tcp.len").split()]
                self.assertLessEqual(max(lens), 1460)
                client, server = follow_raw(out)  # the remote (port 50000) opened it
                self.assertEqual(client, reads)
                self.assertEqual(server, writes)
                analysis = tshark(out, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update")
                self.assertEqual(analysis, "")

    def test_merge_inputs_by_timestamp(self):
        a, b = self.p("listener.pb"), self.p("cluster.pb")
        write_v2_trace(a, ("127.0.0.1", 10000), ("127.0.0.1", 50001),
                       [(100, 0, "read", b"a1"), (100, 300, "write", b"a2"), (102, 0, "read", b"a3")])
        write_v2_trace(b, ("127.0.0.1", 50002), ("127.0.0.1", 8080),
                       [(100, 100, "write", b"b1"), (100, 300, "read", b"b2"), (101, 0, "write", b"b3")])
        out = self.p("merged.pcap")
        _, err = self.convert_ok(a, b, out)
        self.assertIn("2 connection(s), 6 event(s)", err)
        rows = [r.split("\t") for r in tshark(out, "-T", "fields", "-e", "frame.time_epoch", "-e",
                                                "tcp.payload").splitlines()]
        got = [bytes.fromhex(p) for _, p in rows]
        # by time; the tie at 100.000000300 keeps input order (a before b)
        self.assertEqual(got, [b"a1", b"b1", b"a2", b"b2", b"b3", b"a3"])

    def nofile_limit(self, n):
        def pre():
            resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
        return pre

    def test_5000_traces_under_ulimit_256(self):
        """5,000 traces, given out of time order, merge under `ulimit -n 256` (soft = hard, so
        raising cannot help): inputs are opened when the merge reaches them and closed when
        done. Every input opened at once failed past ~1,000 traces and left an empty output."""
        n = 5000
        order = list(range(n))
        random.Random(7).shuffle(order)
        paths = []
        for i in order:
            path = self.p("t_%d.pb" % i)
            # 10 ms apart; every 100th trace spans the next 50 (50 open at once there)
            end = 500 if i % 100 == 0 else 5
            write_v2_trace(path, ("127.0.0.1", 10000), ("127.0.0.1", 20000 + i),
                           [(1000 + i // 100, (i % 100) * 10000000, "read", b"q%d" % i),
                            (1000 + i // 100, (i % 100) * 10000000 + end * 1000000, "write",
                             b"r%d" % i)])
            paths.append(path)
        out = self.p("all.pcap")
        r = subprocess.run([C2P, *paths, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=600, preexec_fn=self.nofile_limit(256))
        err = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, err[-2000:])
        self.assertIn("%d connection(s), %d event(s)" % (n, 2 * n), err)
        rows = tshark(out, "-T", "fields", "-e", "frame.time_epoch", "-e", "tcp.payload").splitlines()
        self.assertEqual(len(rows), 2 * n)
        times = [float(x.split("\t")[0]) for x in rows]
        self.assertEqual(times, sorted(times))
        got = [bytes.fromhex(x.split("\t")[1]) for x in rows]
        self.assertEqual(sorted(got), sorted([b"q%d" % i for i in range(n)] + [b"r%d" % i for i in range(n)]))
        self.assertEqual(got[:3], [b"q0", b"q1", b"r1"])

    def test_too_many_overlapping_traces_named(self):
        """More traces open at one moment than the descriptor limit allows: an error that says
        so and names the limit, non-zero exit, no output."""
        paths = []
        for i in range(300):
            path = self.p("o_%d.pb" % i)
            write_v2_trace(path, ("127.0.0.1", 10000), ("127.0.0.1", 20000 + i),
                           [(1000, i, "read", b"q"), (2000, i, "write", b"r")])
            paths.append(path)
        out = self.p("o.pcap")
        r = subprocess.run([C2P, *paths, out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=600, preexec_fn=self.nofile_limit(256))
        err = r.stderr.decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("Too many open files", err)
        self.assertIn("ulimit -n", err)
        self.assertFalse(os.path.exists(out))

    def test_v3_streamed_several_connections_and_close(self):
        conn = v3_connection(("::1", 9000), ("::1", 41000))
        src = self.p("s.pb_length_delimited")
        segs = []
        for seg in (v3_segment(5, conn=conn), v3_segment(5, event=v3_event(10, 0, "read", b"hello")),
                    v3_segment(6, conn=v3_connection(("127.0.0.1", 9001), ("127.0.0.1", 41001))),
                    v3_segment(6, event=v3_event(10, 5, "write", b"other")),
                    v3_segment(5, event=v3_event(11, 0, "write", b"world", end_stream=True)),
                    v3_segment(5, event=v3_event(12, 0, "closed"))):
            segs.append(varint(len(seg)) + seg)
        with open(src, "wb") as f:
            f.write(b"".join(segs))
        out = self.p("s.pcap")
        _, err = self.convert_ok("--tcp-handshake", src, out)
        self.assertIn("2 connection(s)", err)
        rows = tshark(out, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.flags.fin", "-e",
                      "tcp.payload").splitlines()
        payloads = [bytes.fromhex(r.split("\t")[2]) for r in rows if r.split("\t")[2]]
        self.assertEqual(payloads, [b"hello", b"other", b"world"])
        fins = [r.split("\t")[0] for r in rows if r.split("\t")[1] == "1"]
        self.assertEqual(sorted(fins), ["41000", "41001", "9000", "9001"])

    def test_half_close_over_partial_writes_one_fin_after_the_data(self):
        """Envoy marks end_stream on every write of a half-close that took several partial
        writes (tap.cc passes doWrite's end_stream to each): one FIN, after the last of them,
        no data after a FIN."""
        conn = v3_connection(("127.0.0.1", 9000), ("127.0.0.1", 41000))
        src = self.p("h.pb_length_delimited")
        segs = []
        for seg in (v3_segment(7, conn=conn), v3_segment(7, event=v3_event(10, 0, "read", b"req")),
                    v3_segment(7, event=v3_event(11, 0, "write", b"part1", end_stream=True)),
                    v3_segment(7, event=v3_event(11, 5, "write", b"part2", end_stream=True)),
                    v3_segment(7, event=v3_event(12, 0, "closed"))):
            segs.append(varint(len(seg)) + seg)
        with open(src, "wb") as f:
            f.write(b"".join(segs))
        out = self.p("h.pcap")
        self.convert_ok("--tcp-handshake", src, out)
        rows = [r.split("\t") for r in tshark(out, "-T", "fields", "-e", "tcp.srcport", "-e",
                                               "tcp.flags.fin", "-e", "tcp.payload").splitlines()]
        local = [r for r in rows if r[0] == "9000"]
        self.assertEqual([bytes.fromhex(r[2]) for r in local if r[2]], [b"part1", b"part2"])
        fins = [i for i, r in enumerate(local) if r[1] == "1"]
        self.assertEqual(len(fins), 1, local)
        self.assertGreater(fins[0], max(i for i, r in enumerate(local) if r[2]))

    def test_v3_old_connection_numbering(self):
        for old, force in ((True, []), (False, []), (True, ["--connection-fields", "old"])):
            with self.subTest(old=old, force=force):
                src = self.p("c.pb")
                with open(src, "wb") as f:
                    f.write(v3_segment(1, conn=v3_connection(("10.0.0.1", 443), ("10.0.0.2", 55555), old=old)))
                    f.write(v3_segment(1, event=v3_event(5, 0, "read", b"x")))
                out = self.p("c.pcap")
                self.convert_ok("--force", *force, "--format", "v3-binary", src, out)
                row = tshark(out, "-T", "fields", "-e", "ip.src", "-e", "tcp.srcport", "-e", "ip.dst",
                             "-e", "tcp.dstport").split()
                self.assertEqual(row, ["10.0.0.2", "55555", "10.0.0.1", "443"])  # read: remote -> local

    # --- bad inputs -----------------------------------------------------------------------

    def test_truncated_binary(self):
        src = self.p("cut.pb")
        full = v2_connection(("127.0.0.1", 10000), ("127.0.0.1", 50000))
        e1 = v2_event(1, 0, "read", b"complete one")
        e2 = v2_event(2, 0, "write", b"this event is cut in the middle")
        with open(src, "wb") as f:
            f.write(full + e1 + e2[:-7])
        cut_at = len(full) + len(e1)
        out = self.p("cut.pcap")
        rc, _, err = self.c2p(src, out)
        self.assertEqual(rc, 1, err)
        self.assertIn(src, err)
        self.assertIn("truncated", err)
        self.assertIn("offset", err)
        self.assertRegex(err, r"offset (%d|%d)\b" % (cut_at, len(full + e1 + e2) - 7))
        # a failed run leaves no output (issue 9 §3); --allow-truncated keeps the prefix
        self.assertIn("not written", err)
        self.assertFalse(os.path.exists(out))
        rc, _, err = self.c2p("--allow-truncated", src, out)
        self.assertEqual(rc, 0, err)
        self.assertIn("warning", err)
        self.assertEqual(tshark(out, "-T", "fields", "-e", "tcp.payload").split(), [b"complete one".hex()])

    def test_corrupt_binary_names_offset(self):
        src = self.p("bad.pb")
        head = v2_connection(("127.0.0.1", 10000), ("127.0.0.1", 50000)) + v2_event(1, 0, "read", b"ok")
        with open(src, "wb") as f:
            f.write(head + b"\x17garbage-after-an-invalid-wire-type")  # field 2, wire type 7
        out = self.p("bad.pcap")
        rc, _, err = self.c2p(src, out)
        self.assertEqual(rc, 1, err)
        self.assertIn(src, err)
        self.assertRegex(err, r"offset %d\b" % len(head))
        self.assertFalse(os.path.exists(out))  # a failed run leaves no output (issue 9 §3)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["bad.pb"])  # nor a temporary file

    def test_corrupt_text_names_line(self):
        src = self.p("bad.pb_text")
        with open(src, "w") as f:
            f.write('connection {\n  id: 1\n}\nevents {\n  timestamp { seconds: 1 }\n  read { data: "x" }\n}\n'
                    'events {\n  "not a field name"\n}\n')  # (an unknown field is skipped: test_envoy_schema)
        rc, _, err = self.c2p(src, self.p("t.pcap"))
        self.assertEqual(rc, 1, err)
        self.assertIn(src, err)
        self.assertRegex(err, r"(line )?9:3")

    def test_usage_and_missing_input(self):
        self.assertEqual(self.c2p()[0], 2)
        self.assertEqual(self.c2p(self.p("only-one-arg"))[0], 2)
        self.assertEqual(self.c2p("--mss", "0", "a", "b")[0], 2)
        self.assertEqual(self.c2p("--bogus", "a", "b")[0], 2)
        self.assertEqual(self.c2p("--format", "nope", "a", "b")[0], 2)
        self.assertEqual(self.c2p("-", "-", "-")[0], 2)
        rc, _, err = self.c2p(self.p("does-not-exist.pb"), self.p("x.pcap"))
        self.assertEqual(rc, 1)
        self.assertIn("does-not-exist.pb", err)
        rc, out, _ = self.c2p("--help")
        self.assertEqual(rc, 0)
        self.assertIn(b"usage", out)

    # --- scale ------------------------------------------------------------------------------

    def test_constant_memory_large_trace(self):
        mib = int(os.environ.get("C2P_LARGE_MIB", "256"))
        src = self.p("large.pb")
        chunk = payload(1 << 16, 3)
        n = (mib << 20) // len(chunk)
        write_v2_trace(src, ("127.0.0.1", 10000), ("127.0.0.1", 50000),
                       ((1700000000 + i // 1000, i % 1000 * 1000, "read" if i % 2 else "write", chunk)
                        for i in range(n)))
        # GNU time's own fork is tiny; a fork of this Python process would carry the
        # generator's RSS into the child's ru_maxrss (Linux keeps it across exec).
        tfile = self.p("large.time")
        r = subprocess.run(["/usr/bin/time", "-o", tfile, "-f", "%M", C2P, src, "/dev/null"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
        err = r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, err)
        self.assertIn("%d payload bytes" % (n * len(chunk)), err)
        with open(tfile) as f:
            rss_kib = int(f.read().split()[-1])
        sanitized = "asan" in os.environ.get("SOCKTAP_BUILD", "")
        if not sanitized:  # ASan's shadow memory is not ours to count
            self.assertLess(rss_kib, 16 * 1024, "peak RSS %d KiB on a %d MiB trace" % (rss_kib, mib))
        os.unlink(src)


if __name__ == "__main__":
    harness.main()

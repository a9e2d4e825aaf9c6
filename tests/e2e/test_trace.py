"""socktap-trace against protoc and the Envoy fixtures: dump equals protoc --decode, every format
round-trips, truncated/corrupt inputs give exact offsets, memory stays bounded on a big trace."""
import os
import resource
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = harness.ROOT
PROTO = os.path.join(ROOT, "src", "trace", "proto")
DATA = os.path.join(ROOT, "tests", "data", "envoy")
V2 = os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text")
V3 = os.path.join(DATA, "tap2pcap_h2_ipv4.pb_text")
V3_2019 = os.path.join(DATA, "tap2pcap_h2_ipv4.2019-socket_buffered_trace-raw-bytes.pb_text")
TOOL = harness.tool("socktap-trace")
FORMATS = ["v2-binary", "v2-text", "v3-binary", "v3-length-delimited", "v3-text", "v3-json"]


def protoc(mode, msg, data):
    proto = ("envoy/data/tap/v2alpha/capture.proto" if "v2alpha" in msg
             else "envoy/data/tap/v3/wrapper.proto")
    return subprocess.run(["protoc", "-I" + PROTO, "-I/usr/include", "--%s=%s" % (mode, msg), proto],
                          input=data, stdout=subprocess.PIPE, check=True).stdout


def run(*args, data=None):
    return subprocess.run([TOOL] + list(args), input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([(n & 0x7f) | 0x80])
        n >>= 7
    return out + bytes([n])


class TraceTool(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name, data):
        p = os.path.join(self.tmp.name, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def test_fixtures_read_correctly(self):
        for f in (V2, V3, V3_2019):
            r = run("dump", f)
            self.assertEqual(r.returncode, 0, r.stderr)
            reads = run("cat", "--direction", "read", f).stdout
            writes = run("cat", "--direction", "write", f).stdout
            self.assertEqual(len(reads), 103 + 9)
            self.assertEqual(len(writes), 37 + 5532 + 7519 + 3098)
            self.assertTrue(reads.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        self.assertIn(b'address: "127.0.0.1"\n      port_value: 10000', run("dump", V2).stdout)
        self.assertIn(b"port_value: 53288", run("dump", V3).stdout)

    def test_dump_equals_protoc_decode(self):
        text = slurp(V2)
        binary = protoc("encode", "envoy.data.tap.v2alpha.Trace", text)
        p = self.path("t.pb", binary)
        ours = run("dump", p).stdout
        self.assertEqual(ours, protoc("decode", "envoy.data.tap.v2alpha.Trace", binary))
        self.assertEqual(ours, text)
        v3 = protoc("encode", "envoy.data.tap.v3.TraceWrapper", slurp(V3))
        ours3 = run("dump", self.path("t3.pb", v3)).stdout
        self.assertEqual(ours3, protoc("decode", "envoy.data.tap.v3.TraceWrapper", v3))

    def test_protoc_encode_equals_our_encoder(self):
        text = slurp(V2)
        ref = protoc("encode", "envoy.data.tap.v2alpha.Trace", text)
        ours = run("convert", "--to", "v2-binary", V2).stdout
        self.assertEqual(ours, ref)
        ours3 = run("convert", "--to", "v3-binary", "--buffered", V2).stdout
        ref3 = protoc("encode", "envoy.data.tap.v3.TraceWrapper",
                      run("convert", "--to", "v3-text", "--buffered", V2).stdout)
        self.assertEqual(ours3, ref3)

    def test_every_prefix_at_event_boundary_decodes(self):
        binary = run("convert", "--to", "v2-binary", V2).stdout
        # walk the top-level fields: every boundary is a valid Trace for protoc and for us
        off, bounds = 0, []
        while off < len(binary):
            off += 1
            n, shift = 0, 0
            while True:
                b = binary[off]
                off += 1
                n |= (b & 0x7f) << shift
                shift += 7
                if not b & 0x80:
                    break
            off += n
            bounds.append(off)
        self.assertEqual(len(bounds), 7)
        for i, end in enumerate(bounds):
            prefix = binary[:end]
            protoc("decode", "envoy.data.tap.v2alpha.Trace", prefix)  # check=True: must decode
            r = run("dump", self.path("p.pb", prefix))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.count(b"\nevents {"), i)

    def test_round_trip_every_format(self):
        want_r = run("cat", "--direction", "read", V2).stdout
        want_w = run("cat", "--direction", "write", V2).stdout
        for fmt in FORMATS:
            for extra in ([], ["--buffered"]):
                if fmt.startswith("v2") and extra:
                    continue
                out = run("convert", "--to", fmt, *extra, V2)
                self.assertEqual(out.returncode, 0, out.stderr)
                p = self.path("rt", out.stdout)
                self.assertEqual(run("cat", "--direction", "read", p).stdout, want_r, fmt)
                self.assertEqual(run("cat", "--direction", "write", p).stdout, want_w, fmt)
                # and again through stdin, with the format forced
                again = run("convert", "--to", fmt, *extra, "--format", fmt, "-", data=out.stdout)
                self.assertEqual(again.stdout, out.stdout, fmt)

    def test_truncated_binary_reports_offset(self):
        binary = protoc("encode", "envoy.data.tap.v2alpha.Trace", slurp(V2))
        r = run("dump", self.path("t.pb", binary[:1000]))
        self.assertEqual(r.returncode, 1)
        # the 4th event (5532 bytes of data) starts at offset 245: all before it is whole
        self.assertIn(b"truncated at offset 245", r.stderr)
        self.assertEqual(r.stdout.count(b"\nevents {"), 3)

    def test_corrupt_binary_reports_offset(self):
        binary = bytearray(protoc("encode", "envoy.data.tap.v2alpha.Trace", slurp(V2)))
        # byte 80 is the tag of the first event's field: make it an invalid wire type
        first_event = 2 + binary[1]
        binary[first_event] = 0x17
        r = run("dump", self.path("c.pb", bytes(binary)))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"corrupt at offset %d" % first_event, r.stderr)

    def test_corrupt_text_reports_line_col(self):
        text = slurp(V2).replace(b"port_value: 53288", b"port_value: x53288")
        r = run("dump", self.path("c.pb_text", text))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"c.pb_text:11:19:", r.stderr)
        cut = slurp(V2)[:500]
        r = run("dump", self.path("t.pb_text", cut))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"truncated", r.stderr)

    def test_usage(self):
        self.assertEqual(run().returncode, 2)
        self.assertEqual(run("cat", V2).returncode, 2)
        self.assertEqual(run("dump", "--format", "nope", V2).returncode, 2)

    def test_old_v3_connection_numbering(self):
        # TraceWrapper{socket_buffered_trace{trace_id 9, connection{2: local, 3: remote}}}
        def addr(ip, port):
            sa = b"\x12" + varint(len(ip)) + ip + b"\x18" + varint(port)
            return b"\x0a" + varint(len(sa)) + sa
        la, ra = addr(b"10.0.0.1", 80), addr(b"10.0.0.2", 4242)
        conn = b"\x12" + varint(len(la)) + la + b"\x1a" + varint(len(ra)) + ra
        body = b"\x08\x09" + b"\x12" + varint(len(conn)) + conn
        wrapper = b"\x1a" + varint(len(body)) + body
        out = run("dump", self.path("old.pb", wrapper)).stdout
        self.assertIn(b"local_address {\n      socket_address {\n        address: \"10.0.0.1\"", out)
        self.assertIn(b"port_value: 4242", out)

    def test_memory_bounded_on_large_trace(self):
        # 256 MiB v2 trace of 64 KiB events: the reader must not hold the trace
        p = os.path.join(self.tmp.name, "big.pb")
        payload = bytes(range(256)) * 256
        rd = b"\x0a" + varint(len(payload)) + payload
        ev = b"\x0a\x06\x08\x01\x10\x02\x00\x00"[:0] + b"\x0a\x00" + b"\x12" + varint(len(rd)) + rd
        rec = b"\x12" + varint(len(ev)) + ev
        with open(p, "wb") as f:
            f.write(b"\x0a\x00")
            for _ in range(4096):
                f.write(rec)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with open(os.devnull, "wb") as null:
            # a sanitizer build's quarantine would otherwise keep freed event buffers resident
            env = dict(os.environ, ASAN_OPTIONS="quarantine_size_mb=1:thread_local_quarantine_size_kb=64")
            r = subprocess.run([TOOL, "cat", "--direction", "read", p], stdout=null, env=env)
        self.assertEqual(r.returncode, 0)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        print("socktap-trace cat: 256 MiB trace, peak RSS %d kB" % peak_kb, file=sys.stderr)
        self.assertLess(peak_kb, 32 * 1024, (before, peak_kb))


if __name__ == "__main__":
    unittest.main()

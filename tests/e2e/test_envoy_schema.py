"""Envoy's current trace schema, read without loss (issue 9 §2).

Every binary trace here is made by `protoc --encode` over Envoy's own .proto files
(tests/data/envoy-proto, copied verbatim from data-plane-api, cncf/xds and protoc-gen-validate;
see its README), from the hand-written text traces in tests/data/envoy-schema: what socktap's
readers are checked against is Envoy's schema, not socktap's copy of it. The same text files are
read as Envoy's PROTO_TEXT output, and the .json files as Envoy's JSON output. Each case is one
that was read wrongly with exit status 0 before: SocketEvents in streamed segments (zero events,
an empty pcap), as_string bodies cut at the first NUL, network_namespace_filepath and per-event
connection/seq_num refused, truncation flags dropped by convert, unknown fields skipped silently.
"""
import os
import shutil
import subprocess
import unittest

import harness
from harness import E2ETest, varint

DATA = os.path.join(harness.ROOT, "tests", "data")
PROTO = os.path.join(DATA, "envoy-proto")
CASES = os.path.join(DATA, "envoy-schema")
WRAPPER = {"envoy.data.tap.v3.TraceWrapper": "envoy/data/tap/v3/wrapper.proto",
           "envoy.data.tap.v2alpha.TraceWrapper": "envoy/data/tap/v2alpha/wrapper.proto"}

TRACE = harness.tool("socktap-trace")
C2P = harness.tool("capture2pcap")

# What the streamed_socket_events cases carry, per direction (both the .txtpb and the .json).
STREAMED_READ = b"GET /seg HTTP/1.1\r\nHost: x\r\n\r\n"
STREAMED_WRITE = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
H2_BODY = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100,
                                                       0, 4, 0, 0, 0x7f, 0x7f]) + b"tail after NULs")


def encode(case):
    """The messages of CASE (a .txtpb name) encoded by protoc over Envoy's schema."""
    text = open(os.path.join(CASES, case)).read()
    mtype = [ln.split()[2] for ln in text.splitlines() if ln.startswith("# message:")][0]
    out = []
    for part in text.split("\n# ---\n"):
        r = subprocess.run(["protoc", "-I", PROTO, "--encode=" + mtype, WRAPPER[mtype]],
                           input=part.encode(), capture_output=True)
        if r.returncode != 0:
            raise AssertionError("protoc --encode %s: %s" % (case, r.stderr.decode()))
        out.append(r.stdout)
    return out


class EnvoySchemaTest(E2ETest):
    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def length_delimited(self, case):
        return self.write(case + ".pbld", b"".join(varint(len(m)) + m for m in encode(case)))

    def run_tool(self, argv, rc=0):
        r = subprocess.run(argv, capture_output=True)
        self.assertEqual(r.returncode, rc, "%s: %s" % (argv, r.stderr.decode(errors="replace")))
        return r

    def cat(self, path, direction, *extra, rc=0):
        return self.run_tool([TRACE, "cat", "--direction", direction, *extra, path], rc=rc).stdout

    def pcap_payload(self, path, *extra):
        """capture2pcap PATH, then every TCP payload byte in the pcap, per direction (by port
        order of the first packet: client port first)."""
        out = os.path.join(self.tmp, os.path.basename(path) + ".pcap")
        self.run_tool([C2P, "-q", *extra, path, out])
        r = self.run_tool(["tshark", "-r", out, "-T", "fields", "-e", "tcp.srcport", "-e", "tcp.payload"])
        rows = [ln.split("\t") for ln in r.stdout.decode().splitlines() if ln.strip()]
        self.assertTrue(rows, "empty pcap from %s" % path)
        by_port = {}
        for port, payload in rows:
            by_port.setdefault(port, bytearray()).extend(bytes.fromhex(payload.replace(":", "")))
        return {p: bytes(v) for p, v in by_port.items()}

    def test_streamed_socket_events_every_format(self):
        """SocketStreamedTraceSegment.events (SocketEvents) in v3 length-delimited, text and
        JSON: every event is read, and capture2pcap carries all its bytes."""
        inputs = [self.length_delimited("streamed_socket_events.txtpb"),
                  os.path.join(CASES, "streamed_socket_events.txtpb")]
        for path in inputs:
            self.assertEqual(self.cat(path, "read"), STREAMED_READ, path)
            self.assertEqual(self.cat(path, "write"), STREAMED_WRITE, path)
            payload = self.pcap_payload(path)
            self.assertEqual(payload.get("45678"), STREAMED_READ, path)
            self.assertEqual(payload.get("10000"), STREAMED_WRITE, path)
        # one segment alone, as a v3 binary TraceWrapper (PROTO_BINARY)
        seg = self.write("one_segment.pb", encode("streamed_socket_events.txtpb")[1])
        self.assertEqual(self.cat(seg, "read"), STREAMED_READ)
        self.assertEqual(self.cat(seg, "write"), b"HTTP/1.1 200 OK\r\n")
        # the dump shows Envoy's fields as protoc names them
        dump = self.run_tool([TRACE, "dump", inputs[0]]).stdout.decode()
        self.assertIn("seq_num: 5", dump)
        self.assertEqual(dump.count("closed {"), 1)
        js = os.path.join(CASES, "streamed_socket_events.json")
        self.assertEqual(self.cat(js, "read"), b"hello \x00")
        self.assertEqual(self.cat(js, "write"), b"world")

    def test_as_string_keeps_nuls(self):
        """JSON as_string with \\u0000: the whole body, not the bytes before the first NUL; the
        same trace in binary (protoc) and JSON gives the same bytes and the same pcap."""
        js = os.path.join(CASES, "as_string_nul.json")
        self.assertEqual(self.cat(js, "read"), H2_BODY)
        self.assertEqual(self.cat(js, "write"), bytes([0, 0, 0, 4, 1, 0, 0, 0, 0]))
        payload = self.pcap_payload(js)
        self.assertEqual(payload["45000"], H2_BODY)
        # socktap's own JSON_BODY_AS_STRING output of it reads back whole too
        out = os.path.join(self.tmp, "rt.json")
        self.run_tool([TRACE, "convert", "--to", "v3-json-string", "--buffered", "-o", out, js])
        self.assertEqual(self.cat(out, "read"), H2_BODY)
        # with proto field names, as Envoy writes JSON (preserve_proto_field_names in
        # MessageUtil::getJsonStringFromMessage, source/common/protobuf/utility.cc), while the
        # input above spelled them in lowerCamelCase: readers take both
        with open(out) as f:
            text = f.read()
        for key in ("socket_buffered_trace", "trace_id", "as_string", "remote_address",
                    "socket_address", "port_value"):
            self.assertIn('"%s"' % key, text)
        for key in ("socketBufferedTrace", "traceId", "asString", "remoteAddress", "portValue"):
            self.assertNotIn(key, text)

    def test_per_event_connection_netns_and_truncation(self):
        """Per-event connection and seq_num, a network namespace path, and the truncation flags,
        in binary and text; convert keeps the flags where the output format can hold them and
        says so where it cannot."""
        binary = self.write("pec.pb", encode("per_event_connection.txtpb")[0])
        text = os.path.join(CASES, "per_event_connection.txtpb")
        for path in (binary, text):
            self.assertEqual(self.cat(path, "read"), b"ping\x00with a NUL", path)
            self.assertEqual(self.cat(path, "write"), b"pong", path)
            dump = self.run_tool([TRACE, "dump", path]).stdout.decode()
            self.assertIn('network_namespace_filepath: "/var/run/netns/blue"', dump)
            self.assertIn("seq_num: 1", dump)
            self.assertIn("read_truncated: true", dump)
            self.assertIn("write_truncated: true", dump)
        for fmt in ("v3-text", "v3-binary", "v3-json"):
            out = os.path.join(self.tmp, "pec-" + fmt)
            r = self.run_tool([TRACE, "convert", "--to", fmt, "--buffered", "-o", out, binary])
            self.assertNotIn(b"warning", r.stderr)
            dump = self.run_tool([TRACE, "dump", out]).stdout.decode()
            self.assertIn("read_truncated: true", dump, fmt)
            self.assertIn("write_truncated: true", dump, fmt)
        # a streamed or v2 output has no place for the flags: converted, with a warning
        r = self.run_tool([TRACE, "convert", "--to", "v3-length-delimited", "-o",
                           os.path.join(self.tmp, "pec.ld"), binary])
        self.assertIn(b"read and write truncated", r.stderr)
        # and the pcap: IPv6 flow with both directions
        payload = self.pcap_payload(binary)
        self.assertEqual(payload["40001"], b"ping\x00with a NUL")

    def test_internal_address_and_pipe_mode(self):
        """Address.envoy_internal_address and Pipe.mode (v3 and v2): read, and capture2pcap
        says which connection it gave stand-in IP addresses."""
        for case in ("internal_and_pipe.txtpb", "v2_pipe_mode.txtpb"):
            binary = self.write(case + ".pb", encode(case)[0])
            for path in (binary, os.path.join(CASES, case)):
                got = self.cat(path, "read") + self.cat(path, "write")
                self.assertIn(got, (b"internal bytes", b"v2 bytes"), path)
                out = os.path.join(self.tmp, os.path.basename(path) + ".pcap")
                r = self.run_tool([C2P, path, out])
                self.assertIn(b"has no IP address/port; using 127.0.0.1 (local) and 127.0.0.2", r.stderr)
        dump = self.run_tool([TRACE, "dump", os.path.join(self.tmp, "internal_and_pipe.txtpb.pb")]).stdout
        self.assertIn(b'server_listener_name: "internal_listener"', dump)
        self.assertIn(b"mode: 384", dump)

    def test_unknown_fields_fail_unless_allowed(self):
        """A field Envoy may add tomorrow: skipped and counted in every format; with data the
        tools fail (exit 1) naming it, --allow-unknown makes it a warning; an empty one is
        only counted."""
        good = encode("per_event_connection.txtpb")[0]
        # TraceWrapper field 99, length-delimited, 5 bytes of data: appended to the message
        binary = self.write("unknown.pb", good + varint(99 << 3 | 2) + varint(5) + b"later")
        text_src = open(os.path.join(CASES, "per_event_connection.txtpb")).read()
        text = self.write("unknown.txtpb", text_src.replace(
            "    seq_num: 1\n", '    seq_num: 1\n    future_field: "later"\n').encode())
        js_src = open(os.path.join(CASES, "as_string_nul.json")).read()
        js = self.write("unknown.json", js_src.replace('"seqNum": "1"', '"seqNum": "1", "futureField": "later"').encode())
        self.assertNotEqual(text_src, open(text).read())
        self.assertNotEqual(js_src, open(js).read())
        for path, where in ((binary, b"envoy.data.tap.v3.TraceWrapper field 99"),
                            (text, b"future_field"), (js, b"futureField")):
            r = self.run_tool([TRACE, "cat", "--direction", "write", path], rc=1)
            self.assertIn(b"unknown field", r.stderr, path)
            self.assertIn(where, r.stderr, path)
            out = os.path.join(self.tmp, os.path.basename(path) + ".pcap")
            r = self.run_tool([C2P, "-q", path, out], rc=1)
            self.assertIn(where, r.stderr, path)
            self.assertFalse(os.path.exists(out), "a failed run left %s" % out)
            # allowed: the same bytes as without the field, and a warning that names it
            r = self.run_tool([TRACE, "cat", "--direction", "write", "--allow-unknown", path])
            self.assertIn(b"warning", r.stderr)
            self.assertIn(where, r.stderr)
            self.assertIn(r.stdout, (b"pong", bytes([0, 0, 0, 4, 1, 0, 0, 0, 0])), path)
            self.run_tool([C2P, "-q", "--allow-unknown", path, out])
            self.assertTrue(os.path.exists(out))
        # an unknown field without data (an empty string): counted, not fatal
        empty = self.write("unknown-empty.pb", good + varint(99 << 3 | 2) + varint(0))
        r = self.run_tool([TRACE, "cat", "--direction", "read", empty])
        self.assertEqual(r.stdout, b"ping\x00with a NUL")

    def test_protoc_decodes_what_socktap_writes(self):
        """The other direction: socktap's v3 binary output decodes with Envoy's own schema (protoc
        --decode) to the same text socktap's dump prints."""
        src = self.length_delimited("streamed_socket_events.txtpb")
        out = os.path.join(self.tmp, "buffered.pb")
        self.run_tool([TRACE, "convert", "--to", "v3-binary", "--buffered", "-o", out, src])
        with open(out, "rb") as f:
            r = subprocess.run(["protoc", "-I", PROTO, "--decode=envoy.data.tap.v3.TraceWrapper",
                                WRAPPER["envoy.data.tap.v3.TraceWrapper"]], stdin=f, capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        ours = self.run_tool([TRACE, "dump", out]).stdout
        self.assertEqual(r.stdout.decode(), ours.decode())
        self.assertIn(b"GET /seg", r.stdout)


if __name__ == "__main__":
    if not shutil.which("protoc"):
        raise SystemExit("protoc is missing: scripts/deps.sh installs protobuf-compiler")
    harness.main()

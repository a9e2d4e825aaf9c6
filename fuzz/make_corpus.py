#!/usr/bin/env python3
"""Regenerates the small seed corpus under fuzz/corpus/<target>/ (checked in; run by hand).

Seeds: tiny hand-written traces in every format (text written here, binary encoded from the
text with protoc and the project's .proto files), and the Envoy fixtures from tests/data/envoy;
fuzz_trace_compressed gets the auto seeds as zstd/lz4 frame streams (needs the zstd and lz4
CLIs).
"""
import base64
import json
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROTO = os.path.join(ROOT, "src", "trace", "proto")
FIX = os.path.join(ROOT, "tests", "data", "envoy")

ADDR = ('local_address { socket_address { address: "%s" port_value: %d } } '
        'remote_address { socket_address { address: "%s" port_value: %d } }')
V2_TINY = ('connection { id: 7 ' + ADDR % ("::1", 8443, "::1", 40000) + ' }\n'
           'events { timestamp { seconds: 1700000000 nanos: 5 } '
           'read { data: "GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n" } }\n'
           'events { timestamp { seconds: 1700000000 nanos: 900 } '
           'write { data: "HTTP/1.1 200 OK\\r\\n\\r\\n" end_stream: true } }\n')
V3_BUF = ('socket_buffered_trace { trace_id: 9 connection { ' + ADDR % ("10.0.0.1", 80, "10.0.0.2", 5555)
          + ' } events { timestamp { seconds: 1 nanos: 2 } read { data { as_string: "ping" } } } '
          'events { timestamp { seconds: 1 nanos: 3 } write { data { as_bytes: "pong" truncated: true } '
          'end_stream: true } } read_truncated: true }\n')
V3_SEGS = [
    'socket_streamed_trace_segment { trace_id: 3 connection { ' + ADDR % ("127.0.0.1", 10000, "127.0.0.1", 50000) + ' } }',
    'socket_streamed_trace_segment { trace_id: 3 event { timestamp { seconds: 2 } read { data { as_bytes: "abc" } } } }',
    'socket_streamed_trace_segment { trace_id: 4 event { timestamp { seconds: 3 } write { data { as_bytes: "xyz" } } } }',
    'socket_streamed_trace_segment { trace_id: 3 event { timestamp { seconds: 4 } closed { } } }',
]
V3_JSON = [
    {"socketStreamedTraceSegment": {"traceId": "3", "connection": {
        "localAddress": {"socketAddress": {"address": "127.0.0.1", "portValue": 10000}},
        "remoteAddress": {"socketAddress": {"address": "127.0.0.1", "portValue": 50000}}}}},
    {"socketStreamedTraceSegment": {"traceId": "3", "event": {
        "timestamp": "2023-11-14T22:13:20.000000005Z",
        "read": {"data": {"asBytes": base64.b64encode(b"GET / HTTP/1.1\r\n\r\n").decode()}}}}},
    {"socketStreamedTraceSegment": {"traceId": "3", "event": {
        "timestamp": "2023-11-14T22:13:20.5Z", "write": {"data": {"asString": "HTTP/1.1 200 OK\r\n\r\n"},
                                                          "endStream": True}}}},
    {"socketStreamedTraceSegment": {"traceId": "3", "event": {"timestamp": "2023-11-14T22:13:21Z",
                                                               "closed": {}}}},
]


def encode(msg_type, text):
    return subprocess.run(
        ["protoc", "-I", PROTO, "-I", "/usr/include", "--encode=" + msg_type,
         "envoy/data/tap/v2alpha/capture.proto", "envoy/data/tap/v3/wrapper.proto"],
        input=text.encode(), stdout=subprocess.PIPE, check=True).stdout


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def compressed_seeds(plain):
    """The auto seeds as zstd and lz4 frame streams (the CLIs' defaults: checksummed frames),
    two frames each (as the capture writer makes them, one per handed-over buffer), one cut
    inside its last frame, and one behind a zstd skippable frame."""
    out = {}
    for name, data in plain.items():
        half = len(data) // 2
        for alg, ext in (("zstd", ".zst"), ("lz4", ".lz4")):
            frames = b"".join(subprocess.run([alg, "-c", "-q"], input=part, capture_output=True, check=True).stdout
                              for part in (data[:half], data[half:]))
            out[name + ext] = frames
            out[name + ".cut" + ext] = frames[:len(frames) - 5]
        out[name + ".skippable.zst"] = (bytes([0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0]) + b"abc"
                                        + out[name + ".zst"])
    return out


def main():
    fix = {n: open(os.path.join(FIX, n), "rb").read().decode() for n in
           ("capture2pcap_h2_ipv4.pb_text", "tap2pcap_h2_ipv4.pb_text")}
    v2_fix = fix["capture2pcap_h2_ipv4.pb_text"]
    v3_fix = fix["tap2pcap_h2_ipv4.pb_text"]
    segs = [encode("envoy.data.tap.v3.TraceWrapper", s) for s in V3_SEGS]
    seeds = {
        "v2_text": {"tiny.pb_text": V2_TINY.encode(), "envoy_h2.pb_text": v2_fix.encode()},
        "v2_binary": {"tiny.pb": encode("envoy.data.tap.v2alpha.Trace", V2_TINY),
                      "envoy_h2.pb": encode("envoy.data.tap.v2alpha.Trace", v2_fix)},
        "v3_text": {"buffered.pb_text": V3_BUF.encode(), "streamed.pb_text": "\n".join(V3_SEGS).encode(),
                    "envoy_h2.pb_text": v3_fix.encode()},
        "v3_binary": {"buffered.pb": encode("envoy.data.tap.v3.TraceWrapper", V3_BUF),
                      "streamed.pb": b"".join(segs),
                      "envoy_h2.pb": encode("envoy.data.tap.v3.TraceWrapper", v3_fix)},
        "v3_length_delimited": {"streamed.pb_length_delimited": b"".join(varint(len(s)) + s for s in segs)},
        "v3_json": {"streamed.json": "\n".join(json.dumps(o) for o in V3_JSON).encode(),
                    "one.json": json.dumps(V3_JSON[1], indent=2).encode()},
    }
    seeds["auto"] = {k + "_" + n: v for k, d in seeds.items() for n, v in d.items() if "envoy" not in n}
    seeds["compressed"] = compressed_seeds(seeds["auto"])
    for fmt, files in seeds.items():
        d = os.path.join(HERE, "corpus", "fuzz_trace_" + fmt)
        # seeds are regenerated; regress_* inputs (crashes once found) stay
        os.makedirs(d, exist_ok=True)
        for n in os.listdir(d):
            if not n.startswith("regress_"):
                os.unlink(os.path.join(d, n))
        for n, data in files.items():
            with open(os.path.join(d, n), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()

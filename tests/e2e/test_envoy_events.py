"""The same events as Envoy (issue 11 §1), field by field: one scripted exchange through socktap
with a streamed JSON tap on both legs into one prefix, and the expected traces derived here from
Envoy's rules, not from socktap's output:

  - source/extensions/transport_sockets/tap/tap.cc: doRead/doWrite tap only I/O that moved
    bytes (`bytes_processed_ > 0`); a write carries doWrite's end_stream;
  - tap_config_impl.cc PerSocketTapperImpl: a streamed trace starts with a connection segment
    when the socket is created (an upstream one has no local address yet), each read/write body
    is cut at max_buffered_rx/tx_bytes with Body.truncated (Utility::addBufferToProtoBytes), and
    closeSocket adds a `closed` event;
  - source/common/protobuf/utility.cc getJsonStringFromMessage: proto field names
    (preserve_proto_field_names), pretty printed, primitives always printed;
  - source/common/network/connection_impl.cc: every connection (upstream too) takes its own id
    from one process-wide counter starting at 0.

Envoy's own tap integration test (test/extensions/transport_sockets/tap/tap_integration_test.cc)
cuts at a few bytes the same way: its traces hold "GET " and "HTTP/"."""
import glob
import os

import harness
from harness import E2ETest, free_port, proxy_config
from test_capture import Upstream, exchange
from test_compression import json_objects as objects

REQUEST = b"GET /envoy HTTP/1.1\r\nHost: x\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"


def tap(prefix, indent, rx, tx):
    pad = " " * indent
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.tap\n%s  typed_config:\n"
            "%s    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap\n"
            "%s    common_config:\n%s      static_config:\n%s        match: {any_match: true}\n"
            "%s        output_config:\n"
            "%s          sinks: [{format: JSON_BODY_AS_STRING, file_per_tap: {path_prefix: \"%s\"}}]\n"
            "%s          streaming: true\n"
            "%s          max_buffered_rx_bytes: %d\n%s          max_buffered_tx_bytes: %d\n"
            "%s    transport_socket: {name: raw_buffer}\n"
            % ((pad,) * 9 + (prefix,) + (pad, pad, rx, pad, tx, pad)))


def expected_events(stream_in, stream_out, rx, tx):
    """Envoy's cut of each event's body, given what crossed: the first read holds the first
    min(len, rx) bytes of what was read, truncated when cut; likewise writes with tx."""
    return stream_in[:rx], len(stream_in) > rx, stream_out[:tx], len(stream_out) > tx


class EnvoyEventsTest(E2ETest):
    def test_streamed_json_tap_both_legs_as_envoy_writes_them(self):
        rx, tx = 4, 5
        up = Upstream(RESPONSE)
        prefix = os.path.join(self.tmp, "both")
        port, admin = free_port(), free_port()
        cfg = proxy_config(port, up.port, admin, listener_ts=tap(prefix, 6, rx, tx),
                           cluster_ts=tap(prefix, 4, rx, tx))
        st = self.socktap(cfg, admin_port=admin)
        client, got = exchange(port, REQUEST)
        up.join()
        self.assertEqual(got, RESPONSE)
        self.assertEqual(bytes(up.data), REQUEST)
        self.assertEqual(st.stop(), 0)

        files = sorted(glob.glob(prefix + "_*.json"))
        self.assertEqual(len(files), 2, files)  # one id each: no `both_<id>.1.json`
        traces = {}
        for path in files:
            with open(path) as f:
                text = f.read()
            for key in ("socketStreamedTraceSegment", "traceId", "asString", "asBytes"):
                self.assertNotIn(key, text)  # proto names, as Envoy
            objs = objects(text)
            seg = [o["socket_streamed_trace_segment"] for o in objs]
            ids = {s["trace_id"] for s in seg}
            self.assertEqual(len(ids), 1, ids)
            self.assertEqual(path, "%s_%s.json" % (prefix, ids.pop()))
            traces[path] = seg
        # which is which: the downstream one's connection has the listener as local address
        down = [p for p, s in traces.items() if "local_address" in s[0]["connection"]]
        self.assertEqual(len(down), 1, traces)
        upf = [p for p in traces if p not in down][0]
        dseg, useg = traces[down[0]], traces[upf]
        self.assertNotEqual(dseg[0]["trace_id"], useg[0]["trace_id"])

        # first segment: the connection. Downstream: local = listener, remote = client.
        # Upstream: created before its connect completes: remote = the host, no local address.
        dconn, uconn = dseg[0]["connection"], useg[0]["connection"]
        self.assertEqual(dconn["local_address"]["socket_address"]["port_value"], port)
        self.assertEqual(dconn["remote_address"]["socket_address"]["port_value"], client[1])
        self.assertNotIn("local_address", uconn)
        self.assertEqual(uconn["remote_address"]["socket_address"]["port_value"], up.port)

        for seg, read_stream, write_stream in ((dseg, REQUEST, RESPONSE), (useg, RESPONSE, REQUEST)):
            events = [s["event"] for s in seg[1:]]
            self.assertTrue(all("connection" not in s for s in seg[1:]))  # no per-event connection
            # closed last, once
            self.assertEqual([("closed" in e) for e in events].count(True), 1)
            self.assertIn("closed", events[-1])
            rw = events[:-1]
            for e in rw:
                kind = "read" if "read" in e else "write"
                body = e[kind]["data"]
                text = body["as_string"].encode("latin-1")
                cap = rx if kind == "read" else tx
                # only I/O that moved bytes, cut at the cap, truncated exactly when cut
                self.assertGreater(len(text), 0, e)
                self.assertLessEqual(len(text), cap, e)
                self.assertIn("truncated", body)  # a primitive: always printed, as Envoy's JSON
                if body["truncated"]:
                    self.assertEqual(len(text), cap, e)
                self.assertRegex(e["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
            reads = [e["read"]["data"] for e in rw if "read" in e]
            writes = [e["write"]["data"] for e in rw if "write" in e]
            want_r, want_rt, want_w, want_wt = expected_events(read_stream, write_stream, rx, tx)
            # the first read/write of each leg: Envoy's "GET " / "HTTP/" (one small message each)
            self.assertEqual(reads[0]["as_string"].encode("latin-1"), want_r)
            self.assertEqual(reads[0]["truncated"], want_rt)
            self.assertEqual(writes[0]["as_string"].encode("latin-1"), want_w)
            self.assertEqual(writes[0]["truncated"], want_wt)
        # the literal strings of Envoy's integration test
        self.assertEqual(dseg[1 if "read" in dseg[1]["event"] else 2]["event"]["read"]["data"]["as_string"],
                         "GET ")
        dwrites = [s["event"]["write"] for s in dseg[1:] if "write" in s["event"]]
        self.assertEqual(dwrites[0]["data"]["as_string"], "HTTP/")


if __name__ == "__main__":
    harness.main()

#!/usr/bin/env python3
"""Today's tap features end to end (issue 11 section 2): socket_tap_config (per-event connection,
Envoy's transport.tap.<stats_prefix>.* counters), min_streamed_sent_bytes (SocketEvents
batches), seq_num, tap_enabled sampling, match trees, and the UDP sink (contrib
envoy.tap_sinks.udp_sink) read by a Python receiver.

Expected traces are derived here from Envoy's rules, cited per test, and from what the client
and the upstream exchanged, never from socktap's own output: the protobuf is parsed with the
field numbers of envoy/data/tap/v3/{wrapper,transport,common}.proto."""
import base64
import glob
import hashlib
import json
import os
import socket
import subprocess
import sys

import harness
from harness import E2ETest, free_port, proxy_config
from test_capture import FULL, Upstream, exchange, fields, parse_addr, send_bulk
from test_faults import wait_until

MAX_U64 = (1 << 64) - 1


# ---- Envoy's v3 messages by field number ---------------------------------------------------


def parse_conn(buf):
    """envoy.data.tap.v3.Connection: local_address = 1, remote_address = 2."""
    out = {}
    for num, _, val in fields(buf):
        if num in (1, 2):
            out["local" if num == 1 else "remote"] = parse_addr(val)
    return out


def parse_body(buf):
    """Body: as_bytes = 1, as_string = 2, truncated = 3."""
    data, trunc = b"", False
    for num, _, val in fields(buf):
        if num in (1, 2):
            data = val
        elif num == 3:
            trunc = bool(val)
    return data, trunc


def parse_event(buf):
    """SocketEvent: timestamp 1, read 2, write 3, closed 4, connection 5, seq_num 6."""
    ev = {"dir": None, "data": b"", "end_stream": False, "conn": None, "seq": 0}
    for num, _, val in fields(buf):
        if num in (2, 3):
            ev["dir"] = "read" if num == 2 else "write"
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    ev["data"], ev["truncated"] = parse_body(v2)
                elif n2 == 2 and num == 3:
                    ev["end_stream"] = bool(v2)
        elif num == 4:
            ev["dir"] = "closed"
        elif num == 5:
            ev["conn"] = parse_conn(val)
        elif num == 6:
            ev["seq"] = val
    return ev


def parse_wrapper(buf):
    """TraceWrapper -> ("buffered"|"segment", trace_id, conn or None, [events], batched)."""
    for num, _, val in fields(buf):
        if num not in (3, 4):
            continue
        tid, conn, events, batched = 0, None, [], False
        for n2, _, v2 in fields(val):
            if n2 == 1:
                tid = v2
            elif n2 == 2:
                conn = parse_conn(v2)
            elif n2 == 3:
                events.append(parse_event(v2))
            elif n2 == 4 and num == 4:  # SocketStreamedTraceSegment.events: SocketEvents
                batched = True
                events += [parse_event(v3) for n3, _, v3 in fields(v2) if n3 == 1]
        return ("buffered" if num == 3 else "segment"), tid, conn, events, batched
    raise AssertionError("no socket trace in %r" % buf[:40])


def split_concatenated(buf):
    """PROTO_BINARY streamed file: TraceWrapper messages one after the other, each a single
    field 4 (socket_streamed_trace_segment), so the field boundaries are the messages'."""
    return [buf[s:e] for s, e in field_spans(buf)]


def field_spans(buf):
    from test_capture import varint
    pos, out = 0, []
    while pos < len(buf):
        start = pos
        key, pos = varint(buf, pos)
        n, pos = varint(buf, pos)
        pos += n
        out.append((start, pos))
    return out


def json_objects(text):
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return out
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)


def draw(conn_id):
    """socktap's sampling draw (tap_feat.c tap_feat_draw: splitmix64's finalizer)."""
    m = (1 << 64) - 1
    z = (conn_id + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def tap(indent, sink, output_extra="", static_extra="", outer_extra="", match="{any_match: true}",
        streaming=True):
    pad = " " * indent
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.tap\n%s  typed_config:\n"
            "%s    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap\n"
            "%s    common_config:\n%s      static_config:\n%s        match: %s\n%s"
            "%s        output_config:\n%s          sinks: [%s]\n%s          streaming: %s\n%s"
            "%s    transport_socket: {name: raw_buffer}\n%s"
            % (pad, pad, pad, pad, pad, pad, pad, match,
               "".join("%s        %s\n" % (pad, l) for l in static_extra.splitlines()),
               pad, pad, sink, pad, "true" if streaming else "false",
               "".join("%s          %s\n" % (pad, l) for l in output_extra.splitlines()),
               pad, "".join("%s    %s\n" % (pad, l) for l in outer_extra.splitlines())))


def file_sink(prefix, fmt):
    return "{format: %s, file_per_tap: {path_prefix: \"%s\"}}" % (fmt, prefix)


def udp_sink(port, fmt, extra=""):
    return ("{format: %s, custom_sink: {name: envoy.tap_sinks.udp_sink, typed_config: "
            "{\"@type\": type.googleapis.com/envoy.extensions.tap_sinks.udp_sink.v3alpha.UdpSink, "
            "udp_address: {protocol: UDP, address: 127.0.0.1, port_value: %d}%s}}}" % (fmt, port, extra))


class TapFeatureTest(E2ETest):
    def start(self, upstream_port, listener_ts, **kw):
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, upstream_port, self.admin, listener_ts=listener_ts)
        return self.socktap(cfg, admin_port=self.admin, **kw)

    def one_trace(self, prefix):
        files = wait_until(lambda: glob.glob(prefix + "_*"), what="a trace under " + prefix)
        self.assertEqual(len(files), 1, files)
        return files[0]

    def assert_cat(self, path, direction, want):
        """socktap's own reader (socktap-trace cat) gives back WANT for DIRECTION of PATH."""
        r = subprocess.run([harness.tool("socktap-trace"), "cat", "--direction", direction, path],
                           capture_output=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout), (0, want), r.stderr)

    def start_batched(self, name, fmt, response, request):
        """A listener tap writing FMT with min_streamed_sent_bytes 100, one exchange through it:
        the trace's path."""
        up = Upstream(response)
        prefix = os.path.join(self.tmp, name)
        ts = tap(6, file_sink(prefix, fmt), output_extra="min_streamed_sent_bytes: 100")
        self.st = self.start(up.port, ts)
        exchange(self.port, request)
        return self.one_trace(prefix)

    def streamed_messages(self, path):
        """The streamed file's TraceWrapper messages once its closed event is in (Envoy writes
        one at close in streaming mode: tap_config_impl.cc closeSocket)."""
        def done():
            with open(path, "rb") as f:
                msgs = [parse_wrapper(m) for m in split_concatenated(f.read())]
            return msgs if msgs and any(e["dir"] == "closed" for e in msgs[-1][3]) else None
        return wait_until(done, what="the closed event in " + path)

    def check_seq(self, events):
        """seq_num (envoy#42641): 1 for the first event, then as TCP's, the bytes before it;
        the final closed event carries the maximum uint64."""
        want = 1
        for e in events[:-1]:
            self.assertEqual(e["seq"], want, events)
            want += len(e["data"])
        self.assertEqual(events[-1]["dir"], "closed")
        self.assertEqual(events[-1]["seq"], MAX_U64)

    # ---- socket_tap_config + seq_num -------------------------------------------------------

    def test_connection_per_event_seq_num_and_envoy_stats(self):
        """set_connection_per_event repeats the segment's Connection in every streamed event
        (tap_config_impl.cc initStreamingEvent); Envoy's counters under
        transport.tap.<stats_prefix>. count each streamed read, write and close submitted
        (pegReadWriteSubmitCounter, pegCloseSubmitCounter); buffered ones stay 0."""
        up = Upstream(b"world")
        prefix = os.path.join(self.tmp, "pe")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"),
                 outer_extra="socket_tap_config: {set_connection_per_event: true, stats_prefix: ft}")
        st = self.start(up.port, ts)
        me, resp = exchange(self.port, b"hello")
        self.assertEqual(resp, b"world")
        msgs = self.streamed_messages(self.one_trace(prefix))
        kind, tid, conn, evs, batched = msgs[0]
        self.assertEqual((kind, batched, evs), ("segment", False, []))
        self.assertEqual(conn["remote"], (me[0], me[1]))
        events = []
        for kind, t, c, evs, batched in msgs[1:]:
            self.assertEqual((kind, t, c, batched, len(evs)), ("segment", tid, None, False, 1))
            events += evs
        for e in events:
            self.assertEqual(e["conn"], conn, "every event repeats the connection")
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "read"), b"hello")
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "write"), b"world")
        self.check_seq(events)
        want = {"streamed_read_submit": sum(e["dir"] == "read" for e in events),
                "streamed_write_submit": sum(e["dir"] == "write" for e in events),
                "streamed_close_submit": 1, "buffered_read_submit": 0,
                "buffered_write_submit": 0, "buffered_close_submit": 0}
        for name, v in want.items():
            st.wait_stat("transport.tap.ft." + name, lambda x, v=v: x == v)
        self.assertEqual(st.stop(), 0)

    def test_buffered_close_submit_and_no_seq(self):
        """A buffered trace is one submit at close (buffered_close_submit) and its events carry
        neither seq_num nor a connection (both are streamed-trace fields in transport.proto)."""
        up = Upstream(b"world")
        prefix = os.path.join(self.tmp, "bu")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"), streaming=False,
                 outer_extra="socket_tap_config: {set_connection_per_event: true, stats_prefix: fb}")
        st = self.start(up.port, ts)
        exchange(self.port, b"hello")
        st.wait_stat("transport.tap.fb.buffered_close_submit", lambda x: x == 1)
        with open(self.one_trace(prefix), "rb") as f:
            kind, _, conn, events, _ = parse_wrapper(f.read())
        self.assertEqual(kind, "buffered")
        self.assertTrue(events)
        self.assertEqual([(e["seq"], e["conn"]) for e in events], [(0, None)] * len(events))
        self.assertEqual(st.stats()["transport.tap.fb.streamed_read_submit"], 0)
        self.assertEqual(st.stop(), 0)

    def test_upstream_events_carry_the_local_address_once_connected(self):
        """A streamed upstream tap writes its connection segment before the connect, without a
        local address (tap_config_impl.cc, its TODO); fillConnectionInfo runs again for each
        event with set_connection_per_event, so the events carry the address the connect got."""
        up = Upstream(b"world")
        prefix = os.path.join(self.tmp, "up")
        self.port = free_port()
        cfg = proxy_config(self.port, up.port, listener_ts="", cluster_ts=tap(
            4, file_sink(prefix, "PROTO_BINARY"),
            outer_extra="socket_tap_config: {set_connection_per_event: true}"))
        st = self.socktap(cfg)
        exchange(self.port, b"hello")
        up.join()
        msgs = self.streamed_messages(self.one_trace(prefix))
        first = msgs[0][2]
        self.assertNotIn("local", first)
        self.assertEqual(first["remote"], ("127.0.0.1", up.port))
        events = [e for m in msgs[1:] for e in m[3]]
        self.assertTrue(events)
        for e in events:
            self.assertEqual(e["conn"], {"local": up.peer, "remote": ("127.0.0.1", up.port)})
        self.check_seq(events)
        self.assertEqual(st.stop(), 0)

    def test_seq_num_goes_on_across_rotated_pieces(self):
        """A rotated trace (socktap_limits.rotate_bytes, socktap extension) is one trace in
        pieces: seq_num goes on from piece to piece, the closed event in the last."""
        req = os.urandom(64 * 1024)
        up = Upstream(b"world")
        prefix = os.path.join(self.tmp, "rot")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"), output_extra="max_buffered_rx_bytes: %d" % FULL,
                 outer_extra="socktap_limits: {rotate_bytes: 4096}")
        st = self.start(up.port, ts)
        c = socket.create_connection(("127.0.0.1", self.port))
        for i in range(0, len(req), 2048):  # separate reads: events to rotate between
            c.sendall(req[i:i + 2048])
            wait_until(lambda: up.count >= i + 2048, what="the upstream's bytes")
        c.shutdown(socket.SHUT_WR)
        self.assertEqual(c.recv(100), b"world")
        c.close()
        st.wait_stat("listener.127.0.0.1_%d.tap.rotated" % self.port, lambda x: x >= 2)

        def pieces():
            files = sorted(glob.glob(prefix + "_*"), key=lambda f: (len(f), f))
            evs = []
            for f in files:
                with open(f, "rb") as fh:
                    evs += [e for m in split_concatenated(fh.read()) for e in parse_wrapper(m)[3]]
            return evs if evs and evs[-1]["dir"] == "closed" else None
        events = wait_until(pieces, what="the last piece's closed event")
        self.assertGreaterEqual(len(glob.glob(prefix + "_*")), 3)
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "read"), req)
        self.check_seq(events)
        self.assertEqual(st.stop(), 0)

    # ---- min_streamed_sent_bytes --------------------------------------------------------------

    def check_batches(self, segments, threshold):
        """common.proto min_streamed_sent_bytes: events are held and "sent once the threshold is
        reached": every batch but the last (sent at close) reached it with its last event and
        not before; the last holds the closed event."""
        for evs in segments[:-1]:
            bodies = [len(e["data"]) for e in evs]
            self.assertGreaterEqual(sum(bodies), threshold, evs)
            self.assertLess(sum(bodies[:-1]), threshold, evs)
        self.assertEqual(segments[-1][-1]["dir"], "closed")
        self.assertLess(sum(len(e["data"]) for e in segments[-1]), threshold, segments[-1])

    def test_min_streamed_sent_bytes_binary(self):
        up = Upstream(b"w" * 300)
        prefix = os.path.join(self.tmp, "mb")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"),
                 output_extra="max_buffered_rx_bytes: %d\nmax_buffered_tx_bytes: %d\n"
                              "min_streamed_sent_bytes: 1200" % (FULL, FULL))
        st = self.start(up.port, ts)
        req = bytes(range(256)) * 4
        _, resp = exchange(self.port, req)
        self.assertEqual(resp, b"w" * 300)
        path = self.one_trace(prefix)
        msgs = self.streamed_messages(path)
        self.assertEqual(msgs[0][3], [])  # the connection segment is not held
        self.assertTrue(all(m[4] for m in msgs[1:]), "events only in SocketEvents segments")
        segments = [m[3] for m in msgs[1:]]
        self.check_batches(segments, 1200)
        self.assertGreater(max(len(s) for s in segments), 1, "some events were held together")
        events = [e for s in segments for e in s]
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "read"), req)
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "write"), b"w" * 300)
        self.check_seq(events)
        # socktap's readers take the batched segments: socktap-trace and capture2pcap
        self.assert_cat(path, "read", req)
        pcap = os.path.join(self.tmp, "mb.pcap")
        r = subprocess.run([harness.tool("capture2pcap"), path, pcap], capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(os.path.getsize(pcap), len(req) + 300)
        self.assertEqual(st.stop(), 0)

    def test_min_streamed_sent_bytes_bulk_is_held_not_cut(self):
        """A batch is held in the encoder until min_streamed_sent_bytes, then handed over at
        once: the backlog bound must count it, or a bulk flow's batch lands past the bound and
        the trace stops ("the disk cannot keep up"). 16 MiB through 768 KiB batches and the
        default backlog: the trace is whole and nothing is truncated."""
        mb = 16
        up = Upstream(sink_hash=True)
        prefix = os.path.join(self.tmp, "mbulk")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"),
                 output_extra="max_buffered_rx_bytes: %d\nmax_buffered_tx_bytes: %d\n"
                              "min_streamed_sent_bytes: 786432" % (FULL, FULL))
        st = self.start(up.port, ts)
        sent, _ = send_bulk(self.port, mb, st.pid)
        up.join(120)
        self.assertEqual(up.hash.hexdigest(), sent.hexdigest())
        truncated = [v for k, v in st.stats().items() if k.endswith(".tap.truncated")]
        self.assertEqual(truncated, [0])
        # held batches cannot be written in place: this tap keeps the copying path
        in_place = [v for k, v in st.stats().items() if k.endswith(".tap.reads_in_place")]
        self.assertEqual(in_place, [0])
        path = self.one_trace(prefix)
        msgs = self.streamed_messages(path)
        got = hashlib.sha256()
        for m in msgs:
            for e in m[3]:
                if e["dir"] == "read":
                    got.update(e["data"])
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        self.assertEqual(st.stop(), 0)

    def test_min_streamed_sent_bytes_json(self):
        """The same batches in JSON: proto field names (preserve_proto_field_names), bodies
        base64, seq_num a string (64-bit), events under events.events."""
        path = self.start_batched("mj", "JSON_BODY_AS_BYTES", b"pong", b"ping")

        def objs():
            with open(path) as f:
                o = json_objects(f.read())
            last = o[-1]["socket_streamed_trace_segment"] if o else {}
            evs = last.get("events", {}).get("events", [])
            return o if evs and "closed" in evs[-1] else None
        o = wait_until(objs, what="the closed event")
        self.assertIn("connection", o[0]["socket_streamed_trace_segment"])
        segs = [x["socket_streamed_trace_segment"]["events"]["events"] for x in o[1:]]
        events = [{"dir": "read" if "read" in e else "write" if "write" in e else "closed",
                   "data": base64.b64decode(e.get("read", e.get("write", {})).get("data", {}).get("as_bytes", "")),
                   "seq": int(e["seq_num"])} for s in segs for e in s]
        segments, i = [], 0
        for s in segs:
            segments.append(events[i:i + len(s)])
            i += len(s)
        self.check_batches(segments, 100)
        self.assertEqual([len(x) for x in segments], [len(events)], "all held until the close")
        self.check_seq(events)
        self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "read"), b"ping")
        self.assert_cat(path, "write", b"pong")
        self.assertEqual(self.st.stop(), 0)

    def test_min_streamed_sent_bytes_text(self):
        """PROTO_TEXT batches: `events { events { ... } }` in one segment, read back whole."""
        path = self.start_batched("mt", "PROTO_TEXT", b"pong", b"ping")

        def closed():
            with open(path) as f:
                t = f.read()
            return t if "closed {" in t else None
        text = wait_until(closed, what="the closed event")
        self.assertEqual(text.count("socket_streamed_trace_segment {"), 2)  # connection, batch
        self.assertIn("  events {\n    events {\n", text)
        self.assertIn("seq_num: 18446744073709551615\n", text)
        self.assert_cat(path, "read", b"ping")
        self.assert_cat(path, "write", b"pong")
        self.assertEqual(self.st.stop(), 0)

    # ---- tap_enabled -----------------------------------------------------------------------------

    def test_tap_enabled_samples_connections(self):
        """tap_enabled (TapConfig field 3, RuntimeFractionalPercent): a connection is tapped when
        its draw falls under numerator/denominator; the rest are counted in tap.sampled_out."""
        n = 12
        up = Upstream(b"ok", conns=n)
        prefix = os.path.join(self.tmp, "sa")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"), streaming=False,
                 static_extra="tap_enabled: {default_value: {numerator: 50, denominator: HUNDRED}}")
        st = self.start(up.port, ts)
        for _ in range(n):
            self.assertEqual(exchange(self.port, b"x")[1], b"ok")
        name = "listener.127.0.0.1_%d.tap.sampled_out" % self.port

        def settled():
            files = glob.glob(prefix + "_*")
            return files if len(files) + st.stats()[name] == n else None
        files = wait_until(settled, what="every connection tapped or sampled out")
        ids = sorted(int(f.rsplit("_", 1)[1].split(".")[0]) for f in files)
        self.assertTrue(all(draw(i) % 100 < 50 for i in ids), ids)
        self.assertTrue(0 < len(ids) < n, ids)  # ids 0..23: draws under 50 for 13 of 24
        self.assertEqual(st.stop(), 0)

    def test_tap_enabled_zero_taps_nothing(self):
        up = Upstream(b"ok", conns=3)
        prefix = os.path.join(self.tmp, "z")
        ts = tap(6, file_sink(prefix, "PROTO_BINARY"),
                 static_extra="tap_enabled: {default_value: {numerator: 0}, runtime_key: tap.on}")
        st = self.start(up.port, ts)
        self.assertIn("socktap has no runtime: 'tap.on' is not read", st.logtext())
        for _ in range(3):
            self.assertEqual(exchange(self.port, b"x")[1], b"ok")
        st.wait_stat("listener.127.0.0.1_%d.tap.sampled_out" % self.port, lambda x: x == 3)
        self.assertEqual(glob.glob(prefix + "_*"), [])
        self.assertEqual(st.stop(), 0)

    # ---- matchers --------------------------------------------------------------------------------

    def test_match_trees(self):
        """MatchPredicate and/or/not over any_match (common.proto): a tree that is true taps,
        one that is never true taps nothing, said once at load and counted per connection."""
        for label, match, taps in (
                ("or", "{or_match: {rules: [{not_match: {any_match: true}}, {any_match: true}]}}", True),
                ("not_not", "{not_match: {not_match: {any_match: true}}}", True),
                ("and", "{and_match: {rules: [{any_match: true}, {not_match: {any_match: true}}]}}", False)):
            with self.subTest(label):
                up = Upstream(b"ok", conns=2)
                prefix = os.path.join(self.tmp, "m_" + label)
                st = self.start(up.port, tap(6, file_sink(prefix, "PROTO_BINARY"), match=match))
                for _ in range(2):
                    self.assertEqual(exchange(self.port, b"x")[1], b"ok")
                name = "listener.127.0.0.1_%d.tap.not_matched" % self.port
                if taps:
                    wait_until(lambda: len(glob.glob(prefix + "_*")) == 2, what="two traces")
                    self.assertEqual(st.stats()[name], 0)
                else:
                    st.wait_stat(name, lambda x: x == 2)
                    self.assertEqual(glob.glob(prefix + "_*"), [])
                    self.assertEqual(st.logtext().count("this match tree is never true"), 1)
                self.assertEqual(st.stop(), 0)

    def test_http_matcher_is_refused_by_name(self):
        """envoyproxy/envoy#13803: HTTP matchers never fire on a transport socket."""
        prefix = os.path.join(self.tmp, "h")
        cfg = proxy_config(free_port(), 9, listener_ts=tap(
            6, file_sink(prefix, "PROTO_BINARY"),
            match="{http_response_headers_match: {headers: [{name: x}]}}"))
        r = harness.validate(self.tmp, "h.yaml", cfg)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("static_config.match.http_response_headers_match: not supported", r.stderr)
        self.assertIn("envoyproxy/envoy#13803", r.stderr)

    # ---- UDP sink --------------------------------------------------------------------------------

    def receiver(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.05)
        self.addCleanup(s.close)
        return s

    def datagrams_until(self, sock, pred, what):
        got = []

        def step():
            try:
                while True:
                    got.append(sock.recv(65536))
            except socket.timeout:
                pass
            return got if got and pred(got) else None
        return wait_until(step, timeout=20, what=what)

    def test_udp_sink_streamed_json(self):
        """udp_sink_impl.cc doSubmitTrace: each trace message one datagram, JSON for the JSON
        formats (getJsonStringFromMessageOrError)."""
        rx = self.receiver()
        up = Upstream(b"world")
        ts = tap(6, udp_sink(rx.getsockname()[1], "JSON_BODY_AS_STRING"),
                 outer_extra="socket_tap_config: {set_connection_per_event: true}")
        st = self.start(up.port, ts)
        me, _ = exchange(self.port, b"hello")
        msgs = self.datagrams_until(
            rx, lambda g: b'"closed"' in g[-1], "the closed event's datagram")
        objs = [json.loads(m)["socket_streamed_trace_segment"] for m in msgs]
        conn = objs[0]["connection"]
        self.assertEqual(conn["remote_address"]["socket_address"]["port_value"], me[1])
        events = [o["event"] for o in objs[1:]]
        self.assertEqual("".join(e["read"]["data"]["as_string"] for e in events if "read" in e), "hello")
        self.assertEqual("".join(e["write"]["data"]["as_string"] for e in events if "write" in e), "world")
        self.assertTrue(all(e["connection"] == conn for e in events))
        self.assertEqual(int(events[-1]["seq_num"]), MAX_U64)
        self.assertEqual(int(events[0]["seq_num"]), 1)
        st.wait_stat("listener.127.0.0.1_%d.tap.udp_sent" % self.port, lambda x: x == len(msgs))
        self.assertEqual(glob.glob(os.path.join(self.tmp, "*.json")), [])  # no file anywhere
        self.assertEqual(st.stop(), 0)

    def test_udp_sink_buffered_binary_and_text(self):
        """A buffered trace is one message at close: one datagram (PROTO_BINARY: the serialized
        TraceWrapper; PROTO_TEXT: its text)."""
        for fmt in ("PROTO_BINARY", "PROTO_TEXT"):
            with self.subTest(fmt):
                rx = self.receiver()
                up = Upstream(b"world")
                st = self.start(up.port, tap(6, udp_sink(rx.getsockname()[1], fmt), streaming=False))
                exchange(self.port, b"hello")
                msgs = self.datagrams_until(rx, lambda g: True, "the buffered trace's datagram")
                self.assertEqual(len(msgs), 1)
                if fmt == "PROTO_BINARY":
                    kind, _, conn, events, _ = parse_wrapper(msgs[0])
                    self.assertEqual(kind, "buffered")
                    self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "read"), b"hello")
                    self.assertEqual(b"".join(e["data"] for e in events if e["dir"] == "write"), b"world")
                else:
                    text = msgs[0].decode()
                    self.assertTrue(text.startswith("socket_buffered_trace {\n"), text)
                    self.assertIn('as_bytes: "hello"', text)
                self.assertEqual(st.stop(), 0)

    def test_udp_sink_drops_too_large_and_counts(self):
        """A message over udp_max_send_msg_size_bytes is dropped and counted, logged once; the
        traffic and the other messages go on. (Envoy slices such an event's body instead:
        docs/envoy-compat.md.)"""
        rx = self.receiver()
        up = Upstream(b"world")
        ts = tap(6, udp_sink(rx.getsockname()[1], "PROTO_BINARY", ", udp_max_send_msg_size_bytes: 300"),
                 output_extra="max_buffered_rx_bytes: %d" % FULL)
        st = self.start(up.port, ts)
        self.assertEqual(exchange(self.port, b"r" * 2000)[1], b"world")
        msgs = self.datagrams_until(
            rx, lambda g: sum(any(e["dir"] == "closed" for e in parse_wrapper(m)[3]) for m in g) == 1,
            "a closed event")
        st.wait_stat("listener.127.0.0.1_%d.tap.udp_too_large" % self.port, lambda x: x >= 1)
        for m in msgs:
            self.assertLessEqual(len(m), 300)
        self.assertEqual(st.logtext().count("trace message was dropped"), 1)
        self.assertEqual(st.stop(), 0)


if __name__ == "__main__":
    harness.main()

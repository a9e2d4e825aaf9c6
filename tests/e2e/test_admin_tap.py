"""Runtime taps through the admin endpoint (issue 11 §3): a tap with
`common_config.admin_config.config_id` records nothing until a client POSTs Envoy's TapRequest to
/tap; the traces then stream to that response as Envoy's admin sink writes them
(source/extensions/common/tap/admin.cc: AttachedRequest::streamMsg, one pretty-printed JSON
TraceWrapper after another; buffered_admin ends the response at max_traces or at its timeout).
Envoy allows one attached /tap stream at a time ("An attached /tap admin stream already exists.
Detach it."), and so does socktap. Real curl traffic through the proxy, curl or raw-socket /tap
clients; the expected traces are derived from what crossed (the file served, curl's request),
never from socktap's output."""
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import E2ETest, free_port, http, proxy_config, tool  # noqa: E402
from test_capture import FULL  # noqa: E402
from test_compression import json_objects  # noqa: E402
from test_live import Viewer  # noqa: E402


def admin_tap_ts(config_id, indent=6):
    pad = " " * indent
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.tap\n%s  typed_config:\n"
            "%s    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap\n"
            "%s    common_config:\n%s      admin_config: {config_id: %s}\n"
            "%s    transport_socket: {name: raw_buffer}\n"
            % (pad, pad, pad, pad, pad, pad, config_id, pad))


def tap_request(config_id, sink, streaming, rx=FULL, tx=FULL):
    return json.dumps({"config_id": config_id,
                       "tap_config": {"match": {"any_match": True},
                                      "output_config": {"sinks": [sink], "streaming": streaming,
                                                        "max_buffered_rx_bytes": rx,
                                                        "max_buffered_tx_bytes": tx}}})


class TapClient(Viewer):
    """`curl -sN -X POST URL --data-binary BODY`: the response read by a thread as it arrives."""

    def __init__(self, procs, url, body):
        super().__init__(procs, url, ["-X", "POST", "-H", "Content-Type: application/json",
                                      "--data-binary", body])

    def traces(self):
        """The whole JSON objects so far (pretty-printed: each ends with a "}" line)."""
        with self.lock:
            text = bytes(self.data).decode()
        end = text.rfind("\n}")
        return json_objects(text[:end + 2]) if end >= 0 else []

    def wait_traces(self, pred, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.traces()
            if pred(t):
                return t
            time.sleep(0.05)
        raise AssertionError("traces so far: %r" % self.traces())

    def finish(self, timeout=60):
        """Waits for socktap to end the response; the whole body, split into traces."""
        self.proc.wait(timeout)
        self.thread.join(10)
        with self.lock:
            return json_objects(bytes(self.data).decode())


def streamed_by_conn(traces):
    """{trace_id: [segment...]} of socket_streamed_trace_segment traces, in order."""
    out = {}
    for t in traces:
        seg = t["socket_streamed_trace_segment"]
        out.setdefault(seg["trace_id"], []).append(seg)
    return out


def body_of(events, kind):
    return b"".join(base64.b64decode(e[kind]["data"]["as_bytes"]) for e in events if kind in e)


class AdminTapTest(E2ETest):
    def start(self, listener_id="lid", cluster_id=None):
        self.lp, self.ap = free_port(), free_port()
        self.up, _ = self.start_http_upstream()
        cfg = proxy_config(self.lp, self.up, admin_port=self.ap, listener_ts=admin_tap_ts(listener_id),
                           cluster_ts=admin_tap_ts(cluster_id, indent=4) if cluster_id else "")
        self.st = self.socktap(cfg, admin_port=self.ap)
        return self.st

    def url(self):
        return "http://127.0.0.1:%d/tap" % self.ap

    def post(self, body, method="POST"):
        return http(self.url(), body.encode() if body is not None else None, method)

    def curl_proxy(self, path):
        r = subprocess.run(["curl", "-sS", "--max-time", "120", "http://127.0.0.1:%d%s" % (self.lp, path)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def write_file(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        self.addCleanup(os.remove, path)  # the temp dir stays for debugging, not its bulk

    def attach(self, body):
        c = TapClient(self.procs, self.url(), body)
        self.st.wait_stat("admin.tap.clients", lambda v: v == 1)
        return c

    def test_errors(self):
        self.start()
        streaming = {"streaming_admin": {}}
        # Envoy's messages (admin.cc AdminHandler::handler)
        self.assertEqual(self.post(tap_request("nope", streaming, True)),
                         (400, "Unknown config id 'nope'. No extension has registered with this id."))
        self.assertEqual(self.post(""), (400, "/tap requires a JSON/YAML body"))
        code, body = self.post(None, method="GET")
        self.assertEqual(code, 405)
        # a bad tap_config: 400 naming the key, as a bad config file would
        for req, msg in [
                (tap_request("lid", {"file_per_tap": {"path_prefix": "/tmp/x"}}, True),
                 "tap_config.output_config.sinks[0].file_per_tap: not supported through /tap"),
                (tap_request("lid", {"buffered_admin": {}}, False),
                 "tap_config.output_config.sinks[0].buffered_admin.max_traces: max_traces is required"),
                (tap_request("lid", {"buffered_admin": {"max_traces": 0}}, False),
                 "tap_config.output_config.sinks[0].buffered_admin.max_traces"),
                (tap_request("lid", {"format": "PROTO_TEXT", "streaming_admin": {}}, True),
                 "tap_config.output_config.sinks[0].format: not supported by the admin sink"),
                (json.dumps({"config_id": "lid", "tap_config": {"match": {"http_request_headers_match": {}},
                                                                "output_config": {"sinks": [streaming]}}}),
                 "tap_config.match.http_request_headers_match: not supported"),
                (json.dumps({"config_id": "lid", "tap_config": {"match": {"any_match": True}}}),
                 "tap_config.output_config: output_config is required"),
                (json.dumps({"tap_config": {}}), "config_id: config_id is required"),
                ("config_id: lid\ntap_config: {match: {any_match: true}, output_config: {sinks: [{}]}}\n",
                 "/tap request:2:64: tap_config.output_config.sinks[0]: a sink type is required")]:
            code, body = self.post(req)
            self.assertEqual(code, 400, req)
            self.assertIn(msg, body, req)
        # no client was left attached by any of them
        self.assertEqual(self.st.stats()["admin.tap.clients"], 0)
        # one attached stream at a time, as Envoy; the next may attach once it is gone
        c = self.attach(tap_request("lid", streaming, True))
        self.assertEqual(self.post(tap_request("lid", streaming, True)),
                         (400, "An attached /tap admin stream already exists. Detach it."))
        self.procs.stop(c.proc)
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)
        c2 = self.attach(tap_request("lid", streaming, True))
        self.curl_proxy("/")
        c2.wait_traces(lambda t: any("closed" in x["socket_streamed_trace_segment"].get("event", {})
                                     for x in t))

    def test_streaming_both_legs_match_traffic(self):
        """One config_id on the listener and the cluster: one client gets both legs (Envoy's
        config_id_map holds every extension registered with the id)."""
        self.start(listener_id="both", cluster_id="both")
        data = os.urandom(200000)
        self.write_file("f.bin", data)
        self.assertEqual(self.curl_proxy("/f.bin"), data)  # before the POST: never traced
        c = self.attach(tap_request("both", {"streaming_admin": {}}, True))
        self.assertEqual(self.curl_proxy("/f.bin"), data)

        def done(traces):
            conns = streamed_by_conn(traces)
            return len(conns) == 2 and all("closed" in s[-1].get("event", {}) for s in conns.values())

        conns = streamed_by_conn(c.wait_traces(done))
        self.assertEqual(len(conns), 2)  # the first download is not in it
        legs = {}
        for tid, segs in conns.items():
            # Envoy's streamed order: the connection segment, the events, closed last
            self.assertIn("connection", segs[0])
            events = [s["event"] for s in segs[1:]]
            self.assertTrue(all("event" in s for s in segs[1:]))
            self.assertIn("closed", events[-1])
            conn = segs[0]["connection"]
            local = conn.get("local_address", {}).get("socket_address", {}).get("port_value")
            legs["down" if local == self.lp else "up"] = (conn, events)
        self.assertEqual(set(legs), {"down", "up"})
        down_conn, down = legs["down"]
        up_conn, up = legs["up"]
        self.assertEqual(up_conn["remote_address"]["socket_address"]["port_value"], self.up)
        # what crossed: curl's request read downstream and written upstream, the file at the
        # end of what the upstream sent and the proxy wrote back
        req = body_of(down, "read")
        self.assertTrue(req.startswith(b"GET /f.bin HTTP/1.1\r\n"), req[:40])
        self.assertEqual(body_of(up, "write"), req)
        resp = body_of(up, "read")
        self.assertTrue(resp.endswith(b"\r\n\r\n" + data))
        self.assertEqual(body_of(down, "write"), resp)
        self.assertTrue(all(not e[k]["data"]["truncated"] for e in down + up for k in ("read", "write")
                            if k in e))
        st = self.st.stats()
        self.assertEqual(st["admin.tap.events_dropped"], 0)
        self.assertEqual(st["admin.tap.traces"], sum(len(s) for s in conns.values()))

    def test_streaming_cut_at_max_buffered(self):
        """Streamed events are cut at max_buffered_rx/tx_bytes with Body.truncated, as the
        file sink's (Envoy's integration test expects "GET " and "HTTP/")."""
        self.start()
        c = self.attach(tap_request("lid", {"streaming_admin": {}}, True, rx=4, tx=5))
        self.curl_proxy("/")
        traces = c.wait_traces(lambda t: any("closed" in x["socket_streamed_trace_segment"].get("event", {})
                                             for x in t))
        events = [x["socket_streamed_trace_segment"]["event"] for x in traces[1:]]
        reads = [e["read"]["data"] for e in events if "read" in e]
        writes = [e["write"]["data"] for e in events if "write" in e]
        self.assertEqual(base64.b64decode(reads[0]["as_bytes"]), b"GET ")
        self.assertTrue(reads[0]["truncated"])
        self.assertEqual(base64.b64decode(writes[0]["as_bytes"]), b"HTTP/")

    def test_buffered_admin_max_traces(self):
        """buffered_admin with buffered traces: one socket_buffered_trace per connection, at
        its close; the response ends with the max_traces-th (Envoy: BufferedPerTapSinkHandle)."""
        self.start()
        self.write_file("a.txt", b"alpha\n")
        c = self.attach(tap_request("lid", {"buffered_admin": {"max_traces": 2}}, False))
        for _ in range(3):
            self.assertEqual(self.curl_proxy("/a.txt"), b"alpha\n")
        traces = c.finish()
        self.assertEqual(c.proc.returncode, 0)
        self.assertEqual(len(traces), 2)
        ids = []
        for t in traces:
            bt = t["socket_buffered_trace"]
            ids.append(int(bt["trace_id"]))
            self.assertFalse(bt["read_truncated"])
            self.assertFalse(bt["write_truncated"])
            self.assertEqual(bt["connection"]["local_address"]["socket_address"]["port_value"], self.lp)
            self.assertFalse(any("closed" in e for e in bt["events"]))  # never in a buffered trace
            self.assertTrue(body_of(bt["events"], "read").startswith(b"GET /a.txt HTTP/1.1\r\n"))
            self.assertTrue(body_of(bt["events"], "write").endswith(b"\r\n\r\nalpha\n"))
        self.assertEqual(len(set(ids)), 2)
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)  # detached: a new one may attach
        self.assertEqual(self.post(tap_request("nope", {"streaming_admin": {}}, True))[0], 400)

    def test_length_delimited(self):
        """format PROTO_BINARY_LENGTH_DELIMITED: varint-prefixed TraceWrapper messages, as Envoy's
        streamMsg writes them; socktap-trace reads the response as a v3 length-delimited trace."""
        self.start()
        data = os.urandom(30000)
        self.write_file("ld.bin", data)
        c = self.attach(tap_request("lid", {"format": "PROTO_BINARY_LENGTH_DELIMITED",
                                            "buffered_admin": {"max_traces": 1}}, False))
        self.assertEqual(self.curl_proxy("/ld.bin"), data)
        c.proc.wait(60)
        c.thread.join(10)
        path = os.path.join(self.tmp, "ld.trace")
        with open(path, "wb") as f:
            f.write(bytes(c.data))
        out = {}
        for d in ("read", "write"):
            r = subprocess.run([tool("socktap-trace"), "cat", "--direction", d, "--format",
                                "v3-length-delimited", path], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            out[d] = r.stdout
        self.assertTrue(out["read"].startswith(b"GET /ld.bin HTTP/1.1\r\n"))
        self.assertTrue(out["write"].endswith(b"\r\n\r\n" + data))

    def test_buffered_admin_timeout(self):
        """The timeout ends the response with what it has (Envoy: onTimeout flushes the buffer
        regardless of size), here one trace of max_traces 100."""
        self.start()
        self.write_file("a.txt", b"alpha\n")
        c = self.attach(tap_request("lid", {"buffered_admin": {"max_traces": 100, "timeout": "2s"}},
                                    False))
        self.assertEqual(self.curl_proxy("/a.txt"), b"alpha\n")
        traces = c.finish()
        self.assertEqual(c.proc.returncode, 0)
        self.assertEqual(len(traces), 1)
        self.assertTrue(body_of(traces[0]["socket_buffered_trace"]["events"], "write").endswith(b"alpha\n"))
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)

    def test_reload_ends_the_response(self):
        """A config reload (POST /reload) ends the attached response, as it ends live viewers
        (its queues belong to the replaced config); a new POST taps the new config."""
        self.start()
        c = self.attach(tap_request("lid", {"streaming_admin": {}}, True))
        self.curl_proxy("/")
        c.wait_traces(lambda t: any("closed" in x["socket_streamed_trace_segment"].get("event", {})
                                    for x in t))
        self.assertEqual(http("http://127.0.0.1:%d/reload" % self.ap, b"", "POST")[0], 200)
        traces = c.finish()
        self.assertEqual(c.proc.returncode, 0)  # a proper end of the chunked response
        self.assertIn("closed", traces[-1]["socket_streamed_trace_segment"]["event"])
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)
        c2 = self.attach(tap_request("lid", {"streaming_admin": {}}, True))
        self.curl_proxy("/")
        c2.wait_traces(lambda t: any("closed" in x["socket_streamed_trace_segment"].get("event", {})
                                     for x in t))

    def test_client_gone_mid_stream(self):
        """A client that disconnects while its traces stream costs nothing: the proxy goes on,
        the next client attaches and gets its traces; no leak (the ASan build checks at exit)."""
        self.start()
        data = os.urandom(4 << 20)
        self.write_file("big.bin", data)
        c = self.attach(tap_request("lid", {"streaming_admin": {}}, True))
        got = {}
        t = threading.Thread(target=lambda: got.update(body=self.curl_proxy("/big.bin")))
        t.start()
        c.wait_traces(lambda tr: len(tr) >= 3)  # mid-transfer: connection segment and events
        self.procs.stop(c.proc, timeout=10)
        t.join(120)
        self.assertEqual(hashlib.sha256(got["body"]).digest(), hashlib.sha256(data).digest())
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)
        c2 = self.attach(tap_request("lid", {"streaming_admin": {}}, True))
        self.assertEqual(self.curl_proxy("/big.bin"), data)
        c2.wait_traces(lambda tr: any("closed" in x["socket_streamed_trace_segment"].get("event", {})
                                      for x in tr))
        self.procs.stop(c2.proc)
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)
        self.assertEqual(self.st.stop(), 0)

    def test_slow_client_drops_counted(self):
        """A client that never reads: its queue drops events (counted, logged once), the
        proxied transfer is whole and never held back (no backpressure counted)."""
        self.start()
        data = os.urandom(48 << 20)
        self.write_file("big.bin", data)
        body = tap_request("lid", {"streaming_admin": {}}, True).encode()
        s = socket.create_connection(("127.0.0.1", self.ap))
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"POST /tap HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.st.wait_stat("admin.tap.clients", lambda v: v == 1)
        for _ in range(2):
            self.assertEqual(hashlib.sha256(self.curl_proxy("/big.bin")).digest(),
                             hashlib.sha256(data).digest())
        st = self.st.stats()
        self.assertGreater(st["admin.tap.events_dropped"], 0)
        self.assertGreater(st["admin.tap.bytes_dropped"], 0)
        self.assertEqual(st["listener.127.0.0.1_%d.tap.backpressure" % self.lp], 0)
        self.assertEqual(self.st.logtext().count("cannot keep up"), 1)
        s.close()
        self.st.wait_stat("admin.tap.clients", lambda v: v == 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)

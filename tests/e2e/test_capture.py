"""Capture/tap transport socket end to end: real clients and upstreams on loopback through
build/socktap, trace files checked by a minimal protobuf wire parser written here (independent
of socktap's own readers, so a bug there cannot hide one in the writer).

Env: SOCKTAP_CAPTURE_BIG_MB (default 512) sizes the bulk transfer; set 2048 for the 2 GiB run;
SOCKTAP_CAPTURE_BIG_DIR (default: the test's temp dir) is where that trace goes.
"""
import contextlib
import glob
import hashlib
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time

import harness
from harness import E2ETest, free_port, proxy_config, vm_status, wait_port
from test_faults import wait_until

# ---- minimal protobuf wire parsing -------------------------------------------------------


def varint(buf, pos):
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint at %d" % pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf):
    """Yields (field number, wire type, value) of a whole message; raises on any truncation."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, pos = varint(buf, pos)
        elif wt == 2:
            n, pos = varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field %d at %d" % (num, pos))
            val = buf[pos:pos + n]
            pos += n
        elif wt == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wt == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("bad wire type %d at %d" % (wt, pos))
        yield num, wt, val


def parse_addr(buf):
    """envoy.api.v2.core.Address / config.core.v3.Address -> (ip, port)."""
    for num, _, val in fields(buf):
        if num == 1:  # socket_address
            ip, port = None, 0
            for n2, _, v2 in fields(val):
                if n2 == 2:
                    ip = v2.decode()
                elif n2 == 3:
                    port = v2
            return ip, port
    return None


def parse_timestamp(buf):
    sec = nsec = 0
    for num, _, val in fields(buf):
        if num == 1:
            sec = val
        elif num == 2:
            nsec = val
    return sec, nsec


def parse_v2_event(buf, body_v3=False):
    """Event / SocketEvent -> dict(dir, data, end_stream, truncated, ts, seq)."""
    ev = {"dir": None, "data": b"", "end_stream": False, "truncated": False, "ts": None,
          "seq": None}
    for num, _, val in fields(buf):
        if num == 1:
            ev["ts"] = parse_timestamp(val)
        elif num in (2, 3):
            ev["dir"] = "read" if num == 2 else "write"
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    if body_v3:
                        for n3, _, v3 in fields(v2):
                            if n3 in (1, 2):
                                ev["data"] = bytes(v3)
                            elif n3 == 3:
                                ev["truncated"] = bool(v3)
                    else:
                        ev["data"] = bytes(v2)
                elif n2 == 2:
                    ev["end_stream"] = bool(v2)
        elif num == 4:
            ev["dir"] = "closed"
        elif num == 6 and body_v3:
            ev["seq"] = val  # SocketEvent.seq_num
    return ev


def parse_v2_trace(buf):
    """envoy.data.tap.v2alpha.Trace -> (conn dict, events)."""
    conn, events = {}, []
    for num, _, val in fields(buf):
        if num == 1:
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    conn["id"] = v2
                elif n2 == 2:
                    conn["local"] = parse_addr(v2)
                elif n2 == 3:
                    conn["remote"] = parse_addr(v2)
        elif num == 2:
            events.append(parse_v2_event(val))
    return conn, events


def parse_v3_conn(buf, conn):
    for num, _, val in fields(buf):
        if num in (1, 2):
            conn["local" if num == 1 else "remote"] = parse_addr(val)


def parse_v3_wrapper(buf):
    """TraceWrapper -> (kind, conn dict, events, read_truncated, write_truncated)."""
    conn, events, rt, wt = {}, [], False, False
    kind = None
    for num, _, val in fields(buf):
        if num in (3, 4):
            kind = "buffered" if num == 3 else "segment"
            for n2, _, v2 in fields(val):
                if n2 == 1:
                    conn["id"] = v2
                elif n2 == 2:
                    parse_v3_conn(v2, conn)
                elif n2 == 3:
                    events.append(parse_v2_event(v2, body_v3=True))
                elif n2 == 4 and kind == "buffered":
                    rt = bool(v2)
                elif n2 == 5 and kind == "buffered":
                    wt = bool(v2)
    return kind, conn, events, rt, wt


def parse_length_delimited(buf):
    pos, out = 0, []
    while pos < len(buf):
        n, pos = varint(buf, pos)
        if pos + n > len(buf):
            raise ValueError("truncated message at %d" % pos)
        out.append(buf[pos:pos + n])
        pos += n
    return out


def stream_v2_events(path, on_event):
    """Parses a v2 binary Trace file incrementally (bounded memory). Returns (bytes parsed,
    file size): a valid prefix parses to the end."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            head = f.read(16)
            if not head:
                break
            key, p = varint(head, 0)
            n, p = varint(head, p)
            if pos + p + n > size:
                return pos, size  # torn tail
            f.seek(pos + p)
            val = f.read(n)
            if key >> 3 == 2:
                on_event(parse_v2_event(val))
            pos += p + n
            f.seek(pos)
        return pos, size


def joined(events, direction):
    return b"".join(e["data"] for e in events if e["dir"] == direction)


# ---- peers -------------------------------------------------------------------------------


class Upstream:
    """A one-shot upstream: records its peer address and what it received (until EOF), then
    answers RESPONSE and closes."""

    def __init__(self, response=b"", sink_hash=False, conns=1):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.response, self.sink_hash, self.conns = response, sink_hash, conns
        self.peer, self.data, self.hash, self.count = None, bytearray(), hashlib.sha256(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        for _ in range(self.conns):  # one after the other
            conn, self.peer = self.sock.accept()
            with conn:
                while True:
                    chunk = conn.recv(1 << 20)
                    if not chunk:
                        break
                    self.count += len(chunk)
                    if self.sink_hash:
                        self.hash.update(chunk)
                    else:
                        self.data += chunk
                with contextlib.suppress(OSError):
                    conn.sendall(self.response)
        self.sock.close()

    def join(self, timeout=60):
        self.thread.join(timeout)


def exchange(port, request, chunk=1 << 20):
    """Client: sends REQUEST, half-closes, reads until EOF. Returns (client addr, response)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        me = c.getsockname()
        c.sendall(request)
        c.shutdown(socket.SHUT_WR)
        out = bytearray()
        while True:
            b = c.recv(chunk)
            if not b:
                break
            out += b
        return me, bytes(out)


def send_bulk(port, mb, pid=None, received=None, timeout=120):
    """Client: sends MB MiB of random bytes (each MiB numbered, so a dropped or repeated block
    changes the hash), half-closes, reads to EOF (into the hash RECEIVED, when given; a read
    that waits TIMEOUT s fails). Returns (sha256 of what was sent, socktap PID's VmHWM after
    16 MiB, or None)."""
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    hwm_start = None
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        for i in range(mb):
            piece = i.to_bytes(8, "little") + block[8:]
            sent.update(piece)
            c.sendall(piece)
            if i == 16 and pid:
                hwm_start = vm_status(pid, "VmHWM")
        c.shutdown(socket.SHUT_WR)
        while True:
            b = c.recv(1 << 20)
            if not b:
                break
            if received is not None:
                received.update(b)
    return sent, hwm_start


def capture_ts(prefix, fmt="PROTO_BINARY", indent=6, extra=""):
    pad = " " * indent
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.capture\n%s  config:\n"
            "%s    file_sink: {path_prefix: \"%s\", format: %s}\n%s    transport_socket: {name: raw_buffer}\n%s"
            % (pad, pad, pad, pad, prefix, fmt, pad, extra))


# max_buffered_rx/tx_bytes that keep whole bodies: a streamed tap cuts every event at them
# (Envoy's default 1024 each), as a buffered one cuts the whole trace
FULL = 4294967295


def tap_ts(prefix, fmt, streaming, indent=6, rx=None, tx=None):
    pad = " " * indent
    limits = ""
    if rx is not None:
        limits += "%s          max_buffered_rx_bytes: %d\n" % (pad, rx)
    if tx is not None:
        limits += "%s          max_buffered_tx_bytes: %d\n" % (pad, tx)
    return ("%stransport_socket:\n%s  name: envoy.transport_sockets.tap\n%s  typed_config:\n"
            "%s    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap\n"
            "%s    common_config:\n%s      static_config:\n%s        match: {any_match: true}\n"
            "%s        output_config:\n%s          sinks: [{format: %s, file_per_tap: {path_prefix: \"%s\"}}]\n"
            "%s          streaming: %s\n%s"
            "%s    transport_socket: {name: raw_buffer}\n"
            % (pad, pad, pad, pad, pad, pad, pad, pad, pad, fmt, prefix, pad,
               "true" if streaming else "false", limits, pad))


class CaptureBase(E2ETest):
    """A socktap with capture sockets and the stats a capture test reads (no tests of its own:
    test_compression.py builds on it)."""

    def start(self, upstream_port, listener_ts="", cluster_ts="", buffer_limit=None, **kw):
        self.port = free_port()
        self.admin = free_port()
        extra = "    per_connection_buffer_limit_bytes: %d\n" % buffer_limit if buffer_limit else ""
        cfg = proxy_config(self.port, upstream_port, self.admin, listener_ts=listener_ts,
                           cluster_ts=cluster_ts, listener_extra=extra, cluster_extra=extra)
        # Listeners are bound before the admin port opens; probing the listener itself would
        # make a connection (and a capture file) of its own.
        return self.socktap(cfg, admin_port=self.admin, **kw)

    def stat(self, st, name):
        for k, v in st.stats().items():
            if k.endswith(name):
                return v
        self.fail("no stat %s in %s" % (name, sorted(st.stats())))


class CaptureTest(CaptureBase):
    def one_file(self, pattern):
        files = glob.glob(pattern)
        self.assertEqual(len(files), 1, "files matching %s: %s" % (pattern, files))
        return files[0]

    def test_docs_list_every_capture_stat(self):
        """docs/capture.md's Stats list and /stats name the same counters (backpressure was missing)."""
        up = Upstream(b"")
        st = self.start(up.port, listener_ts=capture_ts(os.path.join(self.tmp, "d")),
                        cluster_ts=capture_ts(os.path.join(self.tmp, "u"), indent=4))
        shown = set()
        for k in st.stats():
            for kind in (".capture.", ".tap."):
                if kind in k and not k.startswith("admin."):  # admin.tap.*: the /tap clients'
                    shown.add(k.split(kind, 1)[1])
        self.assertTrue(shown, sorted(st.stats()))
        with open(os.path.join(harness.ROOT, "docs", "capture.md")) as f:
            doc = f.read()
        section = doc.split("## Stats", 1)[1].split("\n## ", 1)[0]
        listed = set(re.search(r"\{([^}]*)\}", section).group(1).replace("\n", " ").split(", "))
        listed = {x.strip() for x in listed}
        self.assertEqual(shown, listed, "stats shown by /stats vs listed in docs/capture.md")
        self.assertEqual(st.stop(), 0)

    def test_listener_and_cluster_v2_binary(self):
        request = b"GET /x HTTP/1.0\r\n\r\n" + os.urandom(100000)
        response = os.urandom(300000)
        up = Upstream(response)
        down_prefix = os.path.join(self.tmp, "down")
        up_prefix = os.path.join(self.tmp, "up")
        st = self.start(up.port, listener_ts=capture_ts(down_prefix),
                        cluster_ts=capture_ts(up_prefix, indent=4))
        client, got = exchange(self.port, request)
        up.join()
        self.assertEqual(got, response)
        self.assertEqual(bytes(up.data), request)
        self.assertEqual(st.stop(), 0)

        down = self.one_file(down_prefix + "_*.pb")
        upf = self.one_file(up_prefix + "_*.pb")
        for f in (down, upf):
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o600)
        with open(down, "rb") as f:
            dconn, dev = parse_v2_trace(f.read())
        with open(upf, "rb") as f:
            uconn, uev = parse_v2_trace(f.read())
        # Downstream: local = listener, remote = the client; reads = request, writes = response.
        self.assertEqual(dconn["local"], ("127.0.0.1", self.port))
        self.assertEqual(dconn["remote"], client)
        self.assertEqual(joined(dev, "read"), request)
        self.assertEqual(joined(dev, "write"), response)
        # Upstream: local = our source (what the upstream saw), remote = the upstream host.
        self.assertEqual(uconn["local"], up.peer)
        self.assertEqual(uconn["remote"], ("127.0.0.1", up.port))
        self.assertEqual(joined(uev, "write"), request)
        self.assertEqual(joined(uev, "read"), response)
        # File names carry the connection ids written inside.
        # (proto3 leaves an id of 0 out: the first connection's, as Envoy's first is 0)
        self.assertTrue(down.endswith("_%d.pb" % dconn.get("id", 0)))
        self.assertTrue(upf.endswith("_%d.pb" % uconn.get("id", 0)))
        # each leg its own id, from one counter, as Envoy: no `_<id>.1.pb` for the second
        self.assertNotEqual(dconn.get("id", 0), uconn.get("id", 0))
        # As Envoy: only writes that moved bytes are events (the client's half-close arrives
        # after its data was written, so no write carries it here).
        for evs in (dev, uev):
            self.assertTrue(all(e["data"] for e in evs), [e for e in evs if not e["data"]])
            ts = [e["ts"] for e in evs]
            self.assertEqual(ts, sorted(ts))
            self.assertLess(abs(ts[0][0] - time.time()), 120)

    def test_failed_upstream_connect_leaves_a_trace(self):
        """As Envoy's tapper, which exists from the socket's creation: a connect that fails
        leaves its trace. Derived from tap_config_impl.cc: streamed, the connection segment
        (no local address: not connected) then a closed event; buffered, and the 2018 capture,
        the connection alone (remote = the host tried), no events."""
        dead = free_port()
        cases = [("capture", capture_ts(os.path.join(self.tmp, "v2"), indent=4), "v2", ".pb"),
                 ("stream", tap_ts(os.path.join(self.tmp, "st"), "PROTO_BINARY_LENGTH_DELIMITED", True,
                                   indent=4), "st", ".pb_length_delimited"),
                 ("buffered", tap_ts(os.path.join(self.tmp, "bu"), "PROTO_BINARY", False, indent=4),
                  "bu", ".pb")]
        for name, ts, prefix, ext in cases:
            with self.subTest(name):
                st = self.start(dead, cluster_ts=ts)
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
                    c.settimeout(10)
                    self.assertEqual(c.recv(10), b"")  # closed: no upstream
                self.assertEqual(st.stop(), 0)
                with open(self.one_file(os.path.join(self.tmp, prefix) + "_*" + ext), "rb") as f:
                    data = f.read()
                if name == "capture":
                    conn, events = parse_v2_trace(data)
                elif name == "stream":
                    msgs = [parse_v3_wrapper(m) for m in parse_length_delimited(data)]
                    conn = msgs[0][1]
                    events = [e for m in msgs for e in m[2]]
                else:
                    _, conn, events, _, _ = parse_v3_wrapper(data)
                self.assertEqual(conn["remote"], ("127.0.0.1", dead))
                self.assertNotIn("local", conn)
                self.assertEqual([e["dir"] for e in events], ["closed"] if name == "stream" else [])

    def test_record_half_close_extension(self):
        """socktap_record_half_close (socktap extension): the half-close that no data write
        carried is recorded once, as a 0-byte write with end_stream, the last write of each
        side; capture2pcap --tcp-handshake puts each side's FIN there."""
        request, response = b"q" * 3000, b"r" * 5000
        up = Upstream(response)
        down_prefix = os.path.join(self.tmp, "down")
        up_prefix = os.path.join(self.tmp, "up")
        ext = "          socktap_record_half_close: true\n"
        st = self.start(up.port, listener_ts=capture_ts(down_prefix, extra=ext),
                        cluster_ts=capture_ts(up_prefix, indent=4, extra=ext[2:]))
        _, got = exchange(self.port, request)
        up.join()
        self.assertEqual(got, response)
        self.assertEqual(st.stop(), 0)
        for prefix in (down_prefix, up_prefix):
            with open(self.one_file(prefix + "_*.pb"), "rb") as f:
                _, evs = parse_v2_trace(f.read())
            ends = [e for e in evs if e["end_stream"]]
            self.assertEqual(len(ends), 1, evs)
            self.assertEqual(ends[0]["dir"], "write")
            self.assertIs([e for e in evs if e["dir"] == "write"][-1], ends[0])
            self.assertTrue(all(e["data"] or e["end_stream"] for e in evs))

    def test_curl_text_format(self):
        body = b"captured by socktap\n" * 5000
        with open(os.path.join(self.tmp, "f.txt"), "wb") as f:
            f.write(body)
        up, _ = self.start_http_upstream()
        prefix = os.path.join(self.tmp, "cap", "t")
        os.mkdir(os.path.dirname(prefix))
        st = self.start(up, listener_ts=capture_ts(prefix, "PROTO_TEXT"))
        out = subprocess.run(["curl", "-sS", "-o", "-", "http://127.0.0.1:%d/f.txt" % self.port],
                             capture_output=True, timeout=30)
        self.assertEqual(out.stdout, body)
        self.assertEqual(st.stop(), 0)
        path = self.one_file(prefix + "_*.pb_text")
        # protoc re-encodes the text trace with the project's .proto: a parse failure fails here.
        proto_dir = os.path.join(harness.ROOT, "src", "trace", "proto")
        protos = [os.path.relpath(p, proto_dir) for p in glob.glob(os.path.join(proto_dir, "**", "*.proto"), recursive=True)]
        with open(path, "rb") as f:
            enc = subprocess.run(["protoc", "-I", proto_dir, "--encode=envoy.data.tap.v2alpha.Trace", *protos],
                                 stdin=f, capture_output=True, timeout=60)
        self.assertEqual(enc.returncode, 0, enc.stderr.decode())
        _, events = parse_v2_trace(enc.stdout)
        self.assertTrue(joined(events, "read").startswith(b"GET /f.txt HTTP/1.1\r\n"))
        self.assertTrue(joined(events, "write").endswith(body))

    def test_tap_streaming_and_buffered(self):
        request, response = b"q" * 5000, b"r" * 7000
        cases = [("PROTO_BINARY_LENGTH_DELIMITED", True, FULL, FULL, ".pb_length_delimited"),
                 ("PROTO_BINARY_LENGTH_DELIMITED", True, None, None, ".pb_length_delimited"),
                 ("PROTO_BINARY", False, 100, 6000, ".pb")]
        for fmt, streaming, rx, tx, ext in cases:
            with self.subTest(fmt=fmt, streaming=streaming, rx=rx):
                up = Upstream(response)
                prefix = os.path.join(self.tmp, "tap%d%s" % (streaming, rx))
                st = self.start(up.port, listener_ts=tap_ts(prefix, fmt, streaming, rx=rx, tx=tx))
                client, got = exchange(self.port, request)
                up.join()
                self.assertEqual(got, response)
                self.assertEqual(st.stop(), 0)
                with open(self.one_file(prefix + "_*" + ext), "rb") as f:
                    data = f.read()
                if streaming:
                    msgs = [parse_v3_wrapper(m) for m in parse_length_delimited(data)]
                    self.assertTrue(all(m[0] == "segment" for m in msgs))
                    conn = msgs[0][1]
                    events = [e for m in msgs for e in m[2]]
                    if rx == FULL:
                        self.assertEqual(joined(events, "read"), request)
                        self.assertEqual(joined(events, "write"), response)
                        self.assertFalse(any(e["truncated"] for e in events))
                    else:
                        # Envoy's default: each streamed event's body is cut at 1024 bytes
                        # with Body.truncated (tap_config_impl.cc onRead/onWrite)
                        for e in events[:-1]:
                            self.assertLessEqual(len(e["data"]), 1024)
                            if e["truncated"]:
                                self.assertEqual(len(e["data"]), 1024, e)
                        self.assertTrue(any(e["truncated"] for e in events))
                        self.assertTrue(request.startswith(events[0]["data"]))
                    self.assertEqual(events[-1]["dir"], "closed")
                else:
                    kind, conn, events, rt, wt = parse_v3_wrapper(data)
                    self.assertEqual(kind, "buffered")
                    # 100 rx bytes kept of 5000, 6000 tx of 7000: both truncated, as Envoy.
                    self.assertTrue(rt)
                    self.assertTrue(wt)
                    self.assertEqual(joined(events, "read"), request[:100])
                    self.assertEqual(joined(events, "write"), response[:6000])
                    # no closed event: Envoy submits a buffered trace at close instead
                    self.assertNotIn("closed", [e["dir"] for e in events])
                self.assertEqual(conn["local"], ("127.0.0.1", self.port))
                self.assertEqual(conn["remote"], client)

    def test_bulk_transfer_constant_memory(self):
        mb = int(os.environ.get("SOCKTAP_CAPTURE_BIG_MB", "512"))
        up = Upstream(sink_hash=True)
        # SOCKTAP_CAPTURE_BIG_DIR puts the trace on a faster disk (e.g. a tmpfs) when the
        # question is the capture path, not this machine's disk.
        big_dir = os.environ.get("SOCKTAP_CAPTURE_BIG_DIR") or self.tmp
        prefix = os.path.join(big_dir, "big-%d" % os.getpid())
        self.addCleanup(lambda: [os.unlink(f) for f in glob.glob(prefix + "_*")])
        # A small ASan quarantine, so the sanitizer build measures socktap, not the quarantine.
        # The default 1 MiB backlog bounds memory; when the disk falls behind, the connection
        # is held back (backpressure), so the trace must be complete.
        st = self.start(up.port, listener_ts=capture_ts(prefix),
                        env={"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"})
        sent, hwm_start = send_bulk(self.port, mb, st.pid)
        up.join(300)
        self.assertEqual(up.count, mb << 20)
        self.assertEqual(up.hash.hexdigest(), sent.hexdigest())
        hwm = vm_status(st.pid, "VmHWM")
        dropped = self.stat(st, "capture.events_dropped")
        # a bulk upload into v2 PROTO_BINARY over raw takes the zero-copy read
        self.assertGreater(self.stat(st, "capture.reads_in_place"), 0)
        self.assertEqual(st.stop(), 0)
        print("\nbulk %d MiB: VmHWM after 16 MiB %d kB, at end %d kB; events_dropped %d"
              % (mb, hwm_start, hwm, dropped))
        # Flat: the peak does not grow with the traffic (backlog bound + slack).
        self.assertLess(hwm - hwm_start, 64 * 1024)
        got, count = hashlib.sha256(), [0]

        def on_event(e):
            if e["dir"] == "read":
                got.update(e["data"])
                count[0] += len(e["data"])

        parsed, size = stream_v2_events(self.one_file(prefix + "_*.pb"), on_event)
        self.assertEqual(parsed, size)
        self.assertEqual(dropped, 0)
        self.assertEqual(count[0], mb << 20)
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        print("trace: all %d MiB captured, hash equal" % mb)

    def test_held_connection_resumes_when_the_writer_makes_room(self):
        """A connection held back by a full capture backlog moves again when the writer has
        written some of it (the writer signals its worker), not on a timer: with the fallback
        timer at 10 minutes, a transfer through a 256 KiB backlog in both directions, captured
        on the listener and the cluster, must finish, and every byte must be in the traces."""
        up_mb, down_mb = 48, 16
        response = os.urandom(down_mb << 20)
        up = Upstream(response=response, sink_hash=True)
        extra = "%s  socktap_max_backlog_bytes: 262144\n"
        st = self.start(up.port,
                        listener_ts=capture_ts(os.path.join(self.tmp, "d"),
                                               extra=extra % (" " * 8)),
                        cluster_ts=capture_ts(os.path.join(self.tmp, "u"), indent=4,
                                              extra=extra % (" " * 6)),
                        env={"SOCKTAP_HELD_RETRY_MS": "600000"})
        got = hashlib.sha256()
        # a stall (a held connection nobody resumes) shows as the client's 30 s read timeout
        sent, _ = send_bulk(self.port, up_mb, received=got, timeout=30)
        up.join(60)
        self.assertEqual(up.count, up_mb << 20)
        self.assertEqual(up.hash.hexdigest(), sent.hexdigest())
        self.assertEqual(got.hexdigest(), hashlib.sha256(response).hexdigest())
        held = self.stat(st, "listener.127.0.0.1_%d.capture.backpressure" % self.port)
        self.assertGreater(held, 0, "the backlog never filled: nothing was held")
        self.assertEqual(st.stop(), 0)
        for prefix, rd, wr in (("d", sent, hashlib.sha256(response)),
                               ("u", hashlib.sha256(response), sent)):
            h = {"read": hashlib.sha256(), "write": hashlib.sha256()}

            def on_event(e, h=h):
                h[e["dir"]].update(e["data"])

            path = self.one_file(os.path.join(self.tmp, prefix + "_*.pb"))
            parsed, size = stream_v2_events(path, on_event)
            self.assertEqual(parsed, size)
            self.assertEqual(h["read"].hexdigest(), rd.hexdigest(), path)
            self.assertEqual(h["write"].hexdigest(), wr.hexdigest(), path)

    def test_tap_bulk_streamed_whole(self):
        """A bulk upload through a streamed v3 tap whose bodies are not cut (the zero-copy read
        path encodes these in place): the read events' bodies are the upload, byte for byte, in
        order, numbered by seq_num without a gap, and no event is cut."""
        mb = 24
        up = Upstream(sink_hash=True)
        prefix = os.path.join(self.tmp, "tapbulk")
        st = self.start(up.port, listener_ts=tap_ts(prefix, "PROTO_BINARY_LENGTH_DELIMITED", True,
                                                    rx=FULL, tx=FULL))
        sent, _ = send_bulk(self.port, mb, st.pid)
        up.join(120)
        self.assertEqual(up.hash.hexdigest(), sent.hexdigest())
        self.assertGreater(self.stat(st, "tap.reads_in_place"), 0)
        self.assertEqual(st.stop(), 0)
        with open(self.one_file(prefix + "_*.pb_length_delimited"), "rb") as f:
            msgs = [parse_v3_wrapper(m) for m in parse_length_delimited(f.read())]
        events = [e for m in msgs for e in m[2]]
        reads = [e for e in events if e["dir"] == "read"]
        self.assertGreater(len(reads), mb)  # many reads, not one
        got = hashlib.sha256()
        for e in reads:
            got.update(e["data"])
        self.assertEqual(got.hexdigest(), sent.hexdigest())
        self.assertEqual(sum(len(e["data"]) for e in reads), mb << 20)
        self.assertFalse(any(e["truncated"] for e in events))
        # seq_num counts bytes, as TCP's (trace_encode.c seq_assign): 1 + all moved before
        moved, want = 1, []
        for e in events:
            if e["dir"] in ("read", "write"):
                want.append(moved)
                moved += len(e["data"])
        self.assertEqual([e["seq"] for e in events if e["dir"] in ("read", "write")], want)

    def test_kill_9_leaves_valid_prefix(self):
        up = Upstream(sink_hash=True)
        prefix = os.path.join(self.tmp, "kill")
        st = self.start(up.port, listener_ts=capture_ts(prefix))
        stop = threading.Event()
        sent = bytearray()

        def pump():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
                i = 0
                while not stop.is_set():
                    piece = (b"%08d" % i) * 8192
                    c.sendall(piece)
                    sent.extend(piece[:16])
                    i += 1

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        deadline = time.time() + 30
        path = None
        while time.time() < deadline:
            files = glob.glob(prefix + "_*.pb")
            # The size seen may include an event still being copied in (up to 1 MiB), which
            # the kill can cut: wait for one more largest event than the prefix asserted.
            if files and os.path.getsize(files[0]) > (5 << 20) + 16:
                path = files[0]
                break
            time.sleep(0.05)
        self.assertIsNotNone(path, "trace did not grow")
        os.kill(st.pid, signal.SIGKILL)
        st.proc.wait(10)
        stop.set()
        t.join(10)
        reads = bytearray()
        parsed, size = stream_v2_events(path, lambda e: reads.extend(e["data"]) if e["dir"] == "read" else None)
        # Whole events are handed to write(2); the one exception is the write(2) the kill cuts
        # (the kernel stops copying between pages on a fatal signal). Parsing stops at the first
        # event that runs past EOF, so everything before is valid and the tail is that one
        # event, cut: shorter than the largest event (the relay reads at most 1 MiB at once).
        self.assertGreater(parsed, 4 << 20)
        self.assertLess(size - parsed, (1 << 20) + 16)
        print("\nkill -9: %d bytes of valid trace, %d bytes of a cut last event" % (parsed, size - parsed))
        n = len(reads) // 65536
        self.assertGreater(n, 10)
        for i in range(n):
            self.assertEqual(bytes(reads[i * 65536:i * 65536 + 8]), b"%08d" % i)

    def test_unwritable_prefix_keeps_traffic(self):
        """A path_prefix in a missing directory: a warning naming it at start-up, traffic
        untouched, every connection counted in files_failed, the error logged once (it was
        logged per connection), and a line when the directory appears and files work again."""
        n = 5
        up = Upstream(b"pong" * 1000, conns=n + 1)
        prefix = os.path.join(self.tmp, "missing-dir", "cap")
        st = self.start(up.port, listener_ts=capture_ts(prefix))
        self.assertRegex(st.logtext(), r"\[warning\].*:\d+:\d+: static_resources\.listeners"
                         r"\[0\].*path_prefix: capture directory '.*missing-dir' does not exist")
        for _ in range(n):
            _, got = exchange(self.port, b"ping" * 1000)
            self.assertEqual(got, b"pong" * 1000)
        # the writer thread creates the files (and counts): soon after the traffic, not before
        wait_until(lambda: self.stat(st, "capture.files_failed") == n, what="the failed creates")
        self.assertEqual(self.stat(st, "capture.files_failed"), n)
        self.assertEqual(self.stat(st, "capture.files_opened"), 0)
        self.assertEqual(st.logtext().count("cannot create a trace file"), 1, st.logtext())
        os.mkdir(os.path.dirname(prefix), 0o700)
        _, got = exchange(self.port, b"ping" * 1000)
        self.assertEqual(got, b"pong" * 1000)
        up.join()
        wait_until(lambda: self.stat(st, "capture.files_opened") == 1, what="the trace")
        self.assertEqual(self.stat(st, "capture.files_opened"), 1)
        self.assertEqual(st.stop(), 0)
        self.assertIn("can be created again", st.logtext())
        self.assertEqual(len(glob.glob(prefix + "_*.pb")), 1)

    def test_restart_continues_trace_names(self):
        """Each run numbered its traces from _1, so a restart collided with every old file (a
        warning each, and after 999 connections went uncaptured). Now a run continues after the
        highest id present, in Envoy's <prefix>_<id> shape, and the log ids match the names."""
        prefix = os.path.join(self.tmp, "cap")
        names = []
        for run in range(3):
            up = Upstream(b"r%d" % run, conns=3)
            st = self.start(up.port, listener_ts=capture_ts(prefix), args=("-l", "debug"))
            for _ in range(3):
                self.assertEqual(exchange(self.port, b"q")[1], b"r%d" % run)
            up.join()
            self.assertEqual(st.stop(), 0)
            self.assertNotIn("left untouched", st.logtext())
            if run:
                self.assertIn("connection ids continue at %d" % (max(names) + 1), st.logtext())
            new = sorted(int(re.search(r"_(\d+)\.pb$", f).group(1))
                         for f in glob.glob(prefix + "_*.pb")
                         if int(re.search(r"_(\d+)\.pb$", f).group(1)) not in names)
            self.assertEqual(len(new), 3, new)
            self.assertGreater(min(new), max(names, default=-1))
            for i in new:
                self.assertRegex(st.logtext(), r"\[C%d\] new connection" % i)
            names += new
        self.assertEqual(len(set(names)), 9)

    def test_full_filesystem_keeps_traffic(self):
        mnt = os.path.join(self.tmp, "tiny")
        os.mkdir(mnt)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt],
                          capture_output=True).returncode != 0:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", "-l", mnt])
        payload = os.urandom(4 << 20)
        up = Upstream(b"done")
        # 64 KiB events: the first buffer handed to the writer always fits the 1 MiB disk (with
        # 1 MiB reads it could be larger, and nothing of the trace would fit: 1 run in 5)
        st = self.start(up.port, listener_ts=capture_ts(os.path.join(mnt, "cap")),
                        buffer_limit=65536)
        _, got = exchange(self.port, payload)
        up.join()
        self.assertEqual(got, b"done")
        self.assertEqual(bytes(up.data), payload)
        # The writer reports the error asynchronously: wait for the counter, not for a time.
        deadline = time.time() + 20
        while time.time() < deadline and self.stat(st, "capture.write_errors") < 1:
            time.sleep(0.1)
        self.assertEqual(self.stat(st, "capture.write_errors"), 1)
        self.assertEqual(st.stop(), 0)
        self.assertEqual(st.logtext().count("capture stopped"), 1)
        # What did reach the disk is still a valid trace prefix.
        path = self.one_file(os.path.join(mnt, "cap_*.pb"))
        parsed, size = stream_v2_events(path, lambda e: None)
        self.assertGreater(parsed, 0)

    def test_existing_file_and_symlink_untouched(self):
        prefix = os.path.join(self.tmp, "pre")
        victim = os.path.join(self.tmp, "victim")
        with open(victim, "wb") as f:
            f.write(b"keep me")
        # Names taken after start-up (another writer in the directory, say): the ids socktap
        # will use next, as a regular file or a symlink at each name. Files present at start-up
        # are skipped over instead (test_restart_continues_trace_names).
        up = Upstream(b"answer")
        st = self.start(up.port, listener_ts=capture_ts(prefix))
        for i in range(0, 8):
            name = "%s_%d.pb" % (prefix, i)
            if i % 2:
                with open(name, "wb") as f:
                    f.write(b"old %d" % i)
            else:
                os.symlink(victim, name)
        _, got = exchange(self.port, b"question")
        up.join()
        self.assertEqual(got, b"answer")
        self.assertEqual(st.stop(), 0)
        with open(victim, "rb") as f:
            self.assertEqual(f.read(), b"keep me")
        for i in range(0, 8):
            name = "%s_%d.pb" % (prefix, i)
            if i % 2:
                with open(name, "rb") as f:
                    self.assertEqual(f.read(), b"old %d" % i)
            else:
                self.assertTrue(os.path.islink(name))
        new = self.one_file(prefix + "_*.1.pb")
        with open(new, "rb") as f:
            conn, events = parse_v2_trace(f.read())
        self.assertTrue(new.endswith("_%d.1.pb" % conn.get("id", 0)))
        self.assertEqual(joined(events, "read"), b"question")
        self.assertIn("left untouched", st.logtext())


if __name__ == "__main__":
    harness.main()

"""Compressed capture (socktap extension `socktap_compression: zstd | lz4`) end to end: real
curl/HTTP and bulk traffic through a capturing socktap; the trace files are standard zstd / lz4
frame streams that the CLIs (`zstd -d`, `lz4 -d`) turn back into the same Envoy trace an
uncompressed capture writes; socktap-trace and capture2pcap read them directly; kill -9, a full
disk and thousands of concurrent connections keep the usual guarantees.

Traces are checked with test_capture's own protobuf wire parser on the CLI-decoded bytes, so a
bug in socktap's compressed reader cannot hide one in the writer (and the other way round).
"""
import glob
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import harness
from harness import E2ETest, free_port, proxy_config, vm_status
from test_capture import (CaptureBase, Upstream, capture_ts, exchange, joined, parse_v2_trace, send_bulk,
                          stream_v2_events, tap_ts, FULL)
from test_capture_faults import Exchange, mount_tmpfs
from test_faults import listen

ASAN_SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"}
CLI = {"zstd": "zstd", "lz4": "lz4"}
SUFFIX = {"zstd": ".zst", "lz4": ".lz4"}


def with_compression(ts, comp, indent=6):
    """A capture_ts/tap_ts snippet plus `socktap_compression: COMP` beside its transport_socket."""
    return ts + "%s    socktap_compression: %s\n" % (" " * indent, comp)


def decompress(path, alg):
    """The CLI's decoding of PATH: (exit code, decoded bytes, stderr)."""
    r = subprocess.run([CLI[alg], "-d", "-c", path], capture_output=True, timeout=300)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def json_objects(text):
    dec, pos, out = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return out
        obj, pos = dec.raw_decode(text, pos)
        out.append(obj)


def trace_tool(*args):
    return subprocess.run([harness.tool("socktap-trace"), *args], capture_output=True, timeout=300)


def json_document(size):
    """A JSON document of about SIZE bytes, compressible as real API responses are (repeated
    keys, varying values)."""
    items, n = [], 0
    i = 0
    while n < size:
        item = {"id": i, "name": "user-%d" % i, "email": "user%d@example.com" % i,
                "active": i % 3 == 0, "score": (i * 7919) % 1000 / 10.0,
                "tags": ["alpha", "beta", "gamma"][: 1 + i % 3]}
        s = json.dumps(item)
        items.append(s)
        n += len(s) + 2
        i += 1
    return ("[\n" + ",\n".join(items) + "\n]\n").encode()


class CompressionTest(CaptureBase):
    def curl(self, path):
        r = subprocess.run(["curl", "-sS", "--fail", "-o", "-", "http://127.0.0.1:%d/%s" % (self.port, path)],
                           capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_http_json_v2_binary_zstd_and_lz4(self):
        """curl fetches a JSON file through a listener capture with zstd (then lz4) and an
        uncompressed cluster capture: the CLI decodes every listener trace completely into a
        v2 Trace whose events carry exactly the bytes of the uncompressed upstream-side trace
        and of what curl got; the files are much smaller than what they hold."""
        doc = json_document(2 << 20)
        with open(os.path.join(self.tmp, "data.json"), "wb") as f:
            f.write(doc)
        up_port, _ = self.start_http_upstream()
        for alg in ("zstd", "lz4"):
            d = os.path.join(self.tmp, "d-" + alg)
            u = os.path.join(self.tmp, "u-" + alg)
            st = self.start(up_port, listener_ts=with_compression(capture_ts(d), alg),
                            cluster_ts=capture_ts(u, indent=4), env=ASAN_SMALL_QUARANTINE)
            for _ in range(3):
                self.assertEqual(self.curl("data.json"), doc)
            self.assertEqual(st.stop(), 0)
            down = sorted(glob.glob(d + "_*.pb" + SUFFIX[alg]))
            upf = sorted(glob.glob(u + "_*.pb"))
            self.assertEqual((len(down), len(upf)), (3, 3), (down, upf))
            self.assertEqual(glob.glob(d + "_*.pb"), [])
            for zf, plain in zip(down, upf):
                rc, raw, err = decompress(zf, alg)
                self.assertEqual(rc, 0, err)
                conn, events = parse_v2_trace(raw)
                with open(plain, "rb") as f:
                    _, up_events = parse_v2_trace(f.read())
                resp = joined(events, "write")
                self.assertTrue(resp.startswith(b"HTTP/1.0 200") and resp.endswith(doc), resp[:200])
                self.assertEqual(resp, joined(up_events, "read"))
                self.assertEqual(joined(events, "read"), joined(up_events, "write"))
                self.assertEqual({e["dir"] for e in events}, {"read", "write"})
                ratio = len(raw) / os.path.getsize(zf)
                print("\n%s: %s %d bytes -> %d on disk (%.1fx)" % (alg, os.path.basename(zf), len(raw),
                                                                 os.path.getsize(zf), ratio))
                self.assertGreater(ratio, 3.0)
                # socktap's own reader on the compressed file: same bytes as on the decoded one
                plain_copy = os.path.join(self.tmp, "copy.pb")
                with open(plain_copy, "wb") as f:
                    f.write(raw)
                for direction in ("read", "write"):
                    a, b = trace_tool("cat", "--direction", direction, zf), trace_tool("cat", "--direction", direction, plain_copy)
                    self.assertEqual((a.returncode, b.returncode), (0, 0), a.stderr + b.stderr)
                    self.assertEqual(a.stdout, b.stdout)
                self.assertEqual(trace_tool("cat", "--direction", "write", zf).stdout, resp)
                a = trace_tool("convert", "--to", "v3-json", zf)
                b = trace_tool("convert", "--to", "v3-json", plain_copy)
                self.assertEqual(a.returncode, 0, a.stderr)
                self.assertEqual(a.stdout, b.stdout)
                os.unlink(plain_copy)

    def test_tap_json_streaming_zstd(self):
        """A v3 tap in JSON_BODY_AS_STRING, streamed, compressed: `zstd -d` gives a stream of
        TraceWrapper JSON objects; socktap-trace reads the .json.zst directly (format detected
        in the decoded bytes)."""
        doc = json_document(256 << 10)
        with open(os.path.join(self.tmp, "data.json"), "wb") as f:
            f.write(doc)
        up_port, _ = self.start_http_upstream()
        prefix = os.path.join(self.tmp, "tap")
        st = self.start(up_port, listener_ts=with_compression(tap_ts(prefix, "JSON_BODY_AS_STRING", True, rx=FULL, tx=FULL), "zstd"),
                        env=ASAN_SMALL_QUARANTINE)
        self.assertEqual(self.curl("data.json"), doc)
        self.assertEqual(st.stop(), 0)
        files = glob.glob(prefix + "_*.json.zst")
        self.assertEqual(len(files), 1, os.listdir(self.tmp))
        rc, raw, err = decompress(files[0], "zstd")
        self.assertEqual(rc, 0, err)
        objs = json_objects(raw.decode())
        self.assertGreater(len(objs), 2)
        self.assertTrue(all("socket_streamed_trace_segment" in o for o in objs), objs[0])
        out = trace_tool("cat", "--direction", "write", files[0])
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertTrue(out.stdout.endswith(doc))
        dump = trace_tool("dump", files[0])
        self.assertEqual(dump.returncode, 0, dump.stderr)

    def test_buffered_tap_file_decodes_while_open(self):
        """A buffered v3 tap writes nothing before the close; its compressed file still holds a
        valid (empty) zstd stream while the connection is open, then the whole trace."""
        prefix = os.path.join(self.tmp, "buf")
        up = listen()
        self.addCleanup(up.close)
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, up.getsockname()[1], self.admin,
                           listener_ts=with_compression(tap_ts(prefix, "PROTO_BINARY", False), "zstd"))
        st = self.socktap(cfg, admin_port=self.admin, env=ASAN_SMALL_QUARANTINE)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
            c.sendall(b"hello")
            u, _ = up.accept()
            with u:
                self.assertEqual(u.recv(5), b"hello")
                deadline = time.time() + 10
                while time.time() < deadline and not glob.glob(prefix + "_*.pb.zst"):
                    time.sleep(0.05)
                path = self.one(prefix + "_*.pb.zst")
                deadline = time.time() + 10
                while time.time() < deadline and os.path.getsize(path) == 0:
                    time.sleep(0.05)
                rc, raw, err = decompress(path, "zstd")
                self.assertEqual((rc, raw), (0, b""), err)
                u.sendall(b"world")
                self.assertEqual(c.recv(5), b"world")
        self.assertEqual(st.stop(), 0)
        rc, raw, err = decompress(path, "zstd")
        self.assertEqual(rc, 0, err)
        out = trace_tool("cat", "--direction", "write", path)
        self.assertEqual((out.returncode, out.stdout), (0, b"world"), out.stderr)

    def test_capture2pcap_reads_compressed(self):
        """capture2pcap converts a .pb.zst and a .pb.lz4 directly; tshark sees the HTTP
        exchange, and the pcapng interface is named after the capture prefix (not the file)."""
        doc = json_document(64 << 10)
        with open(os.path.join(self.tmp, "data.json"), "wb") as f:
            f.write(doc)
        up_port, _ = self.start_http_upstream()
        d = os.path.join(self.tmp, "ingress")
        u = os.path.join(self.tmp, "egress")
        st = self.start(up_port, listener_ts=with_compression(capture_ts(d), "zstd"),
                        cluster_ts=with_compression(capture_ts(u, indent=4), "{algorithm: lz4, level: 9}", indent=4),
                        env=ASAN_SMALL_QUARANTINE)
        self.assertEqual(self.curl("data.json"), doc)
        self.assertEqual(st.stop(), 0)
        traces = [self.one(d + "_*.pb.zst"), self.one(u + "_*.pb.lz4")]
        pcapng = os.path.join(self.tmp, "out.pcapng")
        r = subprocess.run([harness.tool("capture2pcap"), *traces, pcapng], capture_output=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        t = subprocess.run(["tshark", "-r", pcapng, "-d", "tcp.port==%d,http" % self.port, "-Y", "http.response",
                            "-T", "fields", "-e", "http.response.code", "-e", "frame.interface_name"],
                           capture_output=True, timeout=120)
        self.assertEqual(t.returncode, 0, t.stderr)
        lines = sorted(set(t.stdout.decode().split("\n")) - {""})
        self.assertEqual(lines, ["200\tegress", "200\tingress"], t.stdout)

    def one(self, pattern):
        files = glob.glob(pattern)
        self.assertEqual(len(files), 1, (pattern, files))
        return files[0]

    def test_kill_9_leaves_decodable_prefix(self):
        """kill -9 during a bulk transfer: the .pb.zst holds whole frames plus at most one torn
        last frame; `zstd -d` decodes everything before it into a valid trace prefix whose data
        is what was sent, in order; socktap-trace reads the same prefix and then reports a
        truncation naming the compressed offset (never corruption)."""
        up = Upstream(sink_hash=True)
        prefix = os.path.join(self.tmp, "kill")
        st = self.start(up.port, listener_ts=with_compression(capture_ts(prefix), "zstd"))
        stop = threading.Event()
        block = os.urandom(65536)

        def pump():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
                    i = 0
                    while not stop.is_set():
                        c.sendall(b"%08d" % i + block[8:])
                        i += 1
            except OSError:
                pass

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        deadline = time.time() + 60
        path = None
        while time.time() < deadline:
            files = glob.glob(prefix + "_*.pb.zst")
            if files and os.path.getsize(files[0]) > (6 << 20):
                path = files[0]
                break
            time.sleep(0.05)
        self.assertIsNotNone(path, "trace did not grow")
        os.kill(st.pid, signal.SIGKILL)
        st.proc.wait(10)
        stop.set()
        t.join(10)
        rc, raw, err = decompress(path, "zstd")
        if rc != 0:  # a torn last frame is the only acceptable failure
            self.assertRegex(err, r"(?i)truncated|premature|unexpected end", err)
        plain = os.path.join(self.tmp, "decoded.pb")
        with open(plain, "wb") as f:
            f.write(raw)
        reads = bytearray()
        parsed, size = stream_v2_events(plain, lambda e: reads.extend(e["data"]) if e["dir"] == "read" else None)
        # Whole frames hold whole events: a decoded prefix ends on an event boundary unless the
        # torn frame's complete blocks were decoded too (then its last event may be cut).
        self.assertGreater(parsed, 4 << 20)
        self.assertLess(size - parsed, (1 << 20) + 16)
        n = len(reads) // 65536
        self.assertGreater(n, 50)
        for i in range(n):
            self.assertEqual(bytes(reads[i * 65536:i * 65536 + 8]), b"%08d" % i)
            self.assertEqual(bytes(reads[i * 65536 + 8:i * 65536 + 64]), block[8:64])
        cat = trace_tool("cat", "--direction", "read", path)
        self.assertEqual(cat.stdout, bytes(reads[:len(cat.stdout)]))
        self.assertGreaterEqual(len(cat.stdout), (n - 16) * 65536)
        if cat.returncode != 0:
            self.assertRegex(cat.stderr.decode(), r"truncated at (compressed )?offset \d+", cat.stderr)
            self.assertNotIn(b"corrupt", cat.stderr)
        print("\nkill -9: %d bytes compressed, %d decoded, %d parsed; socktap-trace: %s"
              % (os.path.getsize(path), len(raw), parsed, cat.stderr.decode().strip()[-160:] or "clean end"))
        # capture2pcap: a cut trace converts with --allow-truncated
        out = os.path.join(self.tmp, "k.pcap")
        r = subprocess.run([harness.tool("capture2pcap"), "--allow-truncated", path, out], capture_output=True,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bulk_integrity_and_flat_memory(self):
        """64 MiB (SOCKTAP_CAPTURE_BIG_MB) of random bytes through zstd and then lz4 capture:
        traffic hashed end to end, the decoded trace holds every byte in order (hash equal),
        and memory stays flat (the writer's one compressor, not one per byte)."""
        mb = int(os.environ.get("SOCKTAP_CAPTURE_BIG_MB", "64"))
        for alg in ("zstd", "lz4"):
            up = Upstream(sink_hash=True)
            prefix = os.path.join(self.tmp, "big-" + alg)
            st = self.start(up.port, listener_ts=with_compression(capture_ts(prefix), alg),
                            env=ASAN_SMALL_QUARANTINE)
            sent, hwm_start = send_bulk(self.port, mb, st.pid)
            up.join(300)
            self.assertEqual(up.hash.hexdigest(), sent.hexdigest())
            hwm = vm_status(st.pid, "VmHWM")
            self.assertEqual(self.stat(st, "capture.events_dropped"), 0)
            self.assertEqual(st.stop(), 0)
            self.assertLess(hwm - hwm_start, 64 * 1024)
            path = self.one(prefix + "_*.pb" + SUFFIX[alg])
            plain = os.path.join(self.tmp, "big.pb")
            with open(plain, "wb") as f:
                r = subprocess.run([CLI[alg], "-d", "-c", path], stdout=f, stderr=subprocess.PIPE, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            got, count = hashlib.sha256(), [0]

            def on_event(e, got=got, count=count):
                if e["dir"] == "read":
                    got.update(e["data"])
                    count[0] += len(e["data"])

            parsed, size = stream_v2_events(plain, on_event)
            self.assertEqual(parsed, size)
            self.assertEqual(count[0], mb << 20)
            self.assertEqual(got.hexdigest(), sent.hexdigest())
            cat = subprocess.run([harness.tool("socktap-trace"), "cat", "--direction", "read", path],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
            self.assertEqual(cat.returncode, 0, cat.stderr)
            self.assertEqual(hashlib.sha256(cat.stdout).hexdigest(), sent.hexdigest())
            print("\n%s bulk %d MiB: VmHWM +%d kB after 16 MiB; %d bytes on disk for %d decoded"
                  % (alg, mb, hwm - hwm_start, os.path.getsize(path), size))
            os.unlink(plain)
            os.unlink(path)

    def test_disk_full_keeps_traffic_and_whole_frames(self):
        """The disk fills mid-trace (1 MiB tmpfs, incompressible traffic): traffic is
        untouched, the failed write is cut back so the file holds only whole frames (`zstd -t`
        passes) and decodes to a complete trace prefix."""
        mnt = os.path.join(self.tmp, "tiny")
        mount_tmpfs(self, mnt, "1m")
        up = listen()
        self.addCleanup(up.close)
        self.port = free_port()
        self.admin = free_port()
        # 64 KiB buffers on both sides: an event (a read, or a write of what the other side
        # read) is at most that, so the first frame fits the tmpfs whatever the flush timing
        # (with 1 MiB events the first frame was 1.2 MB, larger than the disk, and the file
        # ended empty: 1 run in 3, seen with strace)
        limit = "    per_connection_buffer_limit_bytes: 65536\n"
        cfg = proxy_config(self.port, up.getsockname()[1], self.admin, listener_extra=limit,
                           cluster_extra=limit,
                           listener_ts=with_compression(capture_ts(os.path.join(mnt, "cap")), "zstd"))
        st = self.socktap(cfg, admin_port=self.admin, env=ASAN_SMALL_QUARANTINE)
        x = Exchange(self.port, up, 4 << 20, 1 << 20)
        x.assert_intact(self)
        deadline = time.time() + 20
        while time.time() < deadline and self.stat(st, "capture.write_errors") < 1:
            time.sleep(0.1)
        self.assertEqual(self.stat(st, "capture.write_errors"), 1)
        self.assertEqual(st.stop(), 0)
        path = self.one(os.path.join(mnt, "cap_*.pb.zst"))
        t = subprocess.run(["zstd", "-t", path], capture_output=True)
        self.assertEqual(t.returncode, 0, (t.stderr, os.path.getsize(path)))
        rc, raw, err = decompress(path, "zstd")
        self.assertEqual(rc, 0, err)
        conn, events = parse_v2_trace(raw)  # raises on any torn field
        self.assertGreater(len(events), 0)
        self.assertEqual(joined(events, "read"), x.sent_up[:len(joined(events, "read"))])

    def test_many_concurrent_compressed_connections_flat_memory(self):
        """400 connections open at once, each with a compressed trace file open: the peak RSS
        grows by the connections' buffers only (a zstd context per file would add over a MiB
        each); every trace decodes with `zstd -d` to the exchange it carried."""
        n = int(os.environ.get("SOCKTAP_COMPRESS_CONNS", "400"))
        up = listen()
        self.addCleanup(up.close)
        prefix = os.path.join(self.tmp, "many")
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, up.getsockname()[1], self.admin,
                           listener_ts=with_compression(capture_ts(prefix), "zstd"))
        st = self.socktap(cfg, admin_port=self.admin, env=ASAN_SMALL_QUARANTINE)
        body = json_document(16 << 10)
        # warm-up: one connection through the whole path (writer thread, compressor)
        ups = []
        c0 = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        c0.sendall(body)
        ups.append(up.accept()[0])
        hwm0 = None
        clients = [c0]
        deadline = time.time() + 30
        while time.time() < deadline and not glob.glob(prefix + "_*.pb.zst"):
            time.sleep(0.05)
        time.sleep(0.2)
        hwm0 = vm_status(st.pid, "VmHWM")
        for i in range(1, n):
            c = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            c.sendall(body)
            clients.append(c)
            ups.append(up.accept()[0])
        got = 0
        for u in ups:
            u.settimeout(30)
            left = len(body)
            while left:
                b = u.recv(left)
                self.assertTrue(b)
                left -= len(b)
            u.sendall(b"ok")
        for c in clients:
            self.assertEqual(c.recv(2), b"ok")
            got += 1
        deadline = time.time() + 30
        while time.time() < deadline and self.stat(st, "capture.events") < 2 * n:
            time.sleep(0.1)
        # the writer thread creates the files after the workers counted the events: wait for it
        while time.time() < deadline and self.stat(st, "capture.files_opened") < n:
            time.sleep(0.1)
        hwm = vm_status(st.pid, "VmHWM")
        self.assertEqual(len(glob.glob(prefix + "_*.pb.zst")), n)
        for c in clients + ups:
            c.close()
        self.assertEqual(st.stop(), 0)
        per = (hwm - hwm0) / (n - 1)
        print("\n%d concurrent compressed connections: VmHWM %d kB -> %d kB, %.0f kB per connection"
              % (n, hwm0, hwm, per))
        self.assertLess(per, 256)
        for path in glob.glob(prefix + "_*.pb.zst"):
            rc, raw, err = decompress(path, "zstd")
            self.assertEqual(rc, 0, err)
            _, events = parse_v2_trace(raw)
            self.assertEqual(joined(events, "read"), body)
            self.assertEqual(joined(events, "write"), b"ok")

    def test_restart_continues_after_compressed_names(self):
        """The restart scan sees cap_<id>.pb.zst: a second run's ids continue after them."""
        prefix = os.path.join(self.tmp, "cap")
        names = []
        for run, alg in enumerate(("zstd", "lz4")):
            up = Upstream(b"r%d" % run, conns=2)
            st = self.start(up.port, listener_ts=with_compression(capture_ts(prefix), alg))
            for _ in range(2):
                self.assertEqual(exchange(self.port, b"q")[1], b"r%d" % run)
            up.join()
            self.assertEqual(st.stop(), 0)
            if run:
                self.assertIn("connection ids continue at %d" % (max(names) + 1), st.logtext())
            new = [int(re.search(r"_(\d+)\.pb\.", f).group(1)) for f in glob.glob(prefix + "_*.pb" + SUFFIX[alg])]
            self.assertEqual(len(new), 2)
            self.assertGreater(min(new), max(names, default=-1))
            names += new
        self.assertNotIn("left untouched", st.logtext())


if __name__ == "__main__":
    harness.main()

"""Capture budgets end to end (socktap_limits, docs/capture.md "Budgets and retention"):
max_trace_bytes (v2 whole events, v3 truncated body), max_total_bytes with stop_new and
delete_oldest, max_files, min_free_bytes on a small tmpfs, on_capture_failure proxy/reject,
GET /captures and POST /capture/{listener|cluster}/NAME.

Connections run one after the other and each waits until the writer has closed its trace
(GET /captures shows no open trace), so what the budget saw is known exactly: no timing in any
assertion. Volumes stay small (tens of KB per connection) for the sanitizer build.
"""
import glob
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import harness
from harness import tool
from test_capture_faults import mount_tmpfs
from test_capture import (CaptureBase, Upstream, capture_ts, exchange, parse_length_delimited,
                          parse_v3_wrapper, stream_v2_events, tap_ts)

PAYLOAD = bytes(range(256)) * 234  # 59904 bytes: one read event each, whatever the chunking


def limits(indent=6, **kv):
    """A socktap_limits block for capture_ts's EXTRA (at the config's level)."""
    body = ", ".join("%s: %s" % (k, v) for k, v in kv.items())
    return "%s    socktap_limits: {%s}\n" % (" " * indent, body)


class BudgetTest(CaptureBase):
    def captures(self, st):
        url = "http://127.0.0.1:%d/captures" % st.admin_port
        return json.loads(urllib.request.urlopen(url, timeout=5).read())

    def prefix_state(self, st, prefix):
        for p in self.captures(st)["prefixes"]:
            if p["path_prefix"] == prefix:
                return p
        self.fail("no account for %s in /captures" % prefix)

    def wait_closed(self, st, prefix, timeout=20.0):
        """Waits until the writer closed every trace of PREFIX (nothing open in /captures)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            p = self.prefix_state(st, prefix)
            if p["open_files"] == 0:
                return p
            time.sleep(0.02)
        self.fail("traces of %s still open: %s" % (prefix, self.prefix_state(st, prefix)))

    def post(self, st, path):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (st.admin_port, path), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def files(self, prefix):
        return sorted(glob.glob(prefix + "_*"), key=lambda f: int(f[len(prefix) + 1:].split(".")[0]))


class EchoUpstream:
    """Answers each of any number of connections (a thread each) with RESPONSE after EOF and
    records what each sent, in the order they ended."""

    def __init__(self, test, response=b"ok"):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.response = response
        self.received = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    def close(self):
        # Wake the blocked accept before closing: a thread left in accept(2) on a closed fd
        # would take the connections of the next socket that gets the same fd number.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(10)
        self.sock.close()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        with conn:
            data = bytearray()
            while True:
                try:
                    chunk = conn.recv(1 << 20)
                except OSError:
                    break
                if not chunk:
                    break
                data += chunk
            self.received.append(bytes(data))
            try:
                conn.sendall(self.response)
            except OSError:
                pass


class Budgets(BudgetTest):
    def setUp(self):
        super().setUp()
        self.up = EchoUpstream(self)

    def conn(self, st, prefix, payload=PAYLOAD):
        """One proxied connection through the listener: checks the traffic both ways, then waits
        until the writer has settled its trace (created, or skipped: each connection ends in
        exactly one of the counters below) and closed it."""
        n = len(self.up.received)
        before = set(glob.glob(prefix + "_*"))
        _, got = exchange(self.port, payload)
        self.assertEqual(got, b"ok")
        deadline = time.time() + 20
        while len(self.up.received) <= n and time.time() < deadline:
            time.sleep(0.01)
        self.assertEqual(self.up.received[n], payload)
        self.nconns += 1
        self.wait_settled(st, self.nconns)
        state = self.wait_closed(st, prefix)
        # the trace this connection made, if any (None: not captured), in connection order
        new = set(glob.glob(prefix + "_*")) - before
        self.created.append(new.pop() if new else None)
        return state

    def wait_settled(self, st, n, timeout=20.0):
        """Waits until N listener connections have a trace created or a counted skip."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            settled = sum(v for k, v in st.stats().items() if k.startswith("listener.") and
                          k.rsplit(".", 1)[1] in ("files_opened", "budget_skipped",
                                                  "disabled_skipped", "files_failed"))
            if settled >= n:
                return
            time.sleep(0.01)
        self.fail("%d connections not settled: %s" % (n, st.stats()))

    def go(self, ts, args=()):
        self.nconns = 0
        self.created = []
        return self.start(self.up.port, listener_ts=ts, args=args)

    def test_max_trace_bytes_v2_whole_events(self):
        prefix = os.path.join(self.tmp, "v2")
        st = self.go(capture_ts(prefix, extra=limits(max_trace_bytes=100000)))
        big = os.urandom(40000) * 8  # 320000 bytes: several read events whatever the chunking
        for _ in range(2):
            self.conn(st, prefix, big)
        self.assertEqual(self.stat(st, "capture.limit_trace_bytes"), 2)
        for path in self.files(prefix):
            events = []
            parsed, size = stream_v2_events(path, events.append)
            self.assertEqual(parsed, size, path)  # whole events only
            self.assertLessEqual(size, 100000)
            self.assertGreater(size, 0)
            data = b"".join(e["data"] for e in events if e["dir"] == "read")
            self.assertTrue(big.startswith(data))
        self.assertEqual(st.stop(), 0)
        self.assertEqual(st.logtext().count("reached max_trace_bytes"), 1)  # once per state

    def test_max_trace_bytes_tap_truncated(self):
        prefix = os.path.join(self.tmp, "tap")
        ts = tap_ts(prefix, "PROTO_BINARY_LENGTH_DELIMITED", True, rx=1 << 20, tx=1 << 20) + limits(max_trace_bytes=50000)
        st = self.go(ts)
        self.conn(st, prefix)
        # a short connection after the cut is captured whole: the next cut logs again
        self.conn(st, prefix, b"small")
        self.conn(st, prefix)
        self.assertEqual(self.stat(st, "tap.limit_trace_bytes"), 2)
        first, small, third = self.files(prefix)
        for path in (first, third):
            with open(path, "rb") as f:
                buf = f.read()
            self.assertLessEqual(len(buf), 50000)
            events = []
            for msg in parse_length_delimited(buf):
                events += parse_v3_wrapper(msg)[2]
            self.assertTrue(events[-1]["truncated"], events[-1])
            self.assertNotEqual(events[-1]["dir"], "closed")
            self.assertFalse(any(e["truncated"] for e in events[:-1]))
            data = b"".join(e["data"] for e in events if e["dir"] == "read")
            self.assertTrue(PAYLOAD.startswith(data))
            self.assertGreater(len(data), 40000)  # cut near the limit, not at the start
        with open(small, "rb") as f:
            events = []
            for msg in parse_length_delimited(f.read()):
                events += parse_v3_wrapper(msg)[2]
        self.assertEqual(events[-1]["dir"], "closed")
        self.assertEqual(st.stop(), 0)
        self.assertEqual(st.logtext().count("reached max_trace_bytes"), 2)

    def test_max_trace_bytes_tap_json(self):
        """JSON bodies grow past their length (base64): the cut still fits the limit."""
        prefix = os.path.join(self.tmp, "tj")
        ts = tap_ts(prefix, "JSON_BODY_AS_BYTES", True, rx=1 << 20, tx=1 << 20) + limits(max_trace_bytes=20000)
        st = self.go(ts)
        self.conn(st, prefix)
        self.assertEqual(st.stop(), 0)
        (path,) = self.files(prefix)
        with open(path) as f:
            text = f.read()
        self.assertLessEqual(len(text.encode()), 20000)
        objs, pos, dec = [], 0, json.JSONDecoder()
        while text[pos:].strip():
            obj, end = dec.raw_decode(text, pos + len(text[pos:]) - len(text[pos:].lstrip()))
            objs.append(obj)
            pos = end
        last = json.dumps(objs[-1])
        self.assertIn('"truncated": true', last)
        self.assertNotIn('"truncated": true', json.dumps(objs[:-1]))
        self.assertGreater(len(last), 10000)  # cut near the limit

    def test_stop_new_pauses_and_resumes(self):
        prefix = os.path.join(self.tmp, "sn")
        # three traces (~60 KB each) fit, the fourth crosses; 180 KB is over 90%: stays paused
        st = self.go(capture_ts(prefix, extra=limits(max_total_bytes=190000)))
        for _ in range(3):
            self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 3)
        # the 4th trace would cross the budget: stopped at its last whole event, capture paused
        self.conn(st, prefix)
        self.assertEqual(self.stat(st, "capture.budget_stopped"), 1)
        state = self.prefix_state(st, prefix)
        self.assertEqual(state["paused_by"], ["max_total_bytes"])
        self.assertLessEqual(state["total_bytes"], 190000)
        for _ in range(2):
            self.conn(st, prefix)  # proxied fine, not captured
        self.assertEqual(len(self.files(prefix)), 4)
        self.assertEqual(self.stat(st, "capture.budget_skipped"), 2)
        self.assertEqual(sum(os.path.getsize(f) for f in self.files(prefix)), state["total_bytes"])
        for path in self.files(prefix):
            parsed, size = stream_v2_events(path, lambda e: None)
            self.assertEqual(parsed, size)
        self.assertEqual(st.logtext().count("capture paused for prefix"), 1)
        # a shipper takes the files away: the reconcile notices, capture resumes by itself
        for path in self.files(prefix):
            os.unlink(path)
        st.wait_log("capture resumed for prefix")
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 1)
        self.assertEqual(st.stop(), 0)

    def test_delete_oldest_keeps_open_trace(self):
        prefix = os.path.join(self.tmp, "do")
        st = self.go(capture_ts(prefix, extra=limits(max_total_bytes=200000, policy="delete_oldest")))
        # a long-lived connection holds an open trace from the start
        hold = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        hold.sendall(b"held open" * 1000)
        deadline = time.time() + 20
        while self.prefix_state(st, prefix)["total_bytes"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        held_path = self.files(prefix)[0]
        created = []
        for _ in range(10):
            p = self.prefix_state(st, prefix)
            self.assertLessEqual(p["total_bytes"], 200000)
            self.assertEqual(sum(os.path.getsize(f) for f in self.files(prefix)), p["total_bytes"])
            n = len(self.up.received)
            before = set(glob.glob(prefix + "_*"))
            _, got = exchange(self.port, PAYLOAD)
            self.assertEqual(got, b"ok")
            while len(self.up.received) <= n:
                time.sleep(0.01)
            self.wait_settled(st, n + 2)  # the held connection and this one
            while self.prefix_state(st, prefix)["open_files"] > 1:
                time.sleep(0.02)
            created += list(set(glob.glob(prefix + "_*")) - before)
        names = self.files(prefix)
        self.assertIn(held_path, names)  # an open trace is never deleted
        self.assertGreaterEqual(self.stat(st, "capture.budget_deleted"), 6)
        total = sum(os.path.getsize(f) for f in names)
        self.assertLessEqual(total, 200000)
        # oldest first: what is left besides the held trace is the newest finished ones
        self.assertEqual(len(created), 10)
        left = [f for f in names if f != held_path]
        self.assertEqual(sorted(left), sorted(created[-len(left):]))
        hold.shutdown(socket.SHUT_WR)
        self.assertEqual(hold.recv(10), b"ok")
        hold.close()
        self.wait_closed(st, prefix)
        self.assertEqual(st.stop(), 0)
        for path in self.files(prefix):
            out = path + ".pcap"
            r = subprocess.run([tool("capture2pcap"), path, out], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = subprocess.run([tool("socktap-trace"), "dump", path], capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_max_files_stop_new_and_delete_oldest(self):
        for policy, kept, deleted, skipped in (("stop_new", slice(0, 3), 0, 2),
                                               ("delete_oldest", slice(2, 5), 2, 0)):
            prefix = os.path.join(self.tmp, policy)
            st = self.go(capture_ts(prefix, extra=limits(max_files=3, policy=policy)))
            for _ in range(5):
                self.conn(st, prefix)
            made = [f for f in self.created if f]
            self.assertEqual(len(made), 5 - skipped)
            self.assertEqual(self.files(prefix), made[kept], policy)
            self.assertEqual(self.stat(st, "capture.budget_deleted"), deleted)
            self.assertEqual(self.stat(st, "capture.budget_skipped"), skipped)
            self.assertEqual(st.stop(), 0)

    def test_finished_dir_files_stay_in_the_account(self):
        """Traces moved into finished_dir still count, are listed at their new path and are the
        ones delete_oldest removes."""
        done = os.path.join(self.tmp, "done")
        os.mkdir(done, 0o700)
        prefix = os.path.join(self.tmp, "fd")
        st = self.go(capture_ts(prefix, extra=limits(max_files=3, policy="delete_oldest",
                                                    finished_dir='"%s"' % done)))
        moved = []
        for i in range(5):
            self.conn(st, prefix)
            # the writer moves a file after its close: wait for it
            st.wait_stat("listener.127.0.0.1_%d.capture.finished_moved" % self.port,
                         lambda v, n=i + 1: v == n)
            moved.append((set(os.listdir(done)) - {os.path.basename(m) for m in moved}).pop())
            moved[-1] = os.path.join(done, moved[-1])
        self.assertEqual(glob.glob(prefix + "_*"), [])
        self.assertEqual(sorted(os.path.join(done, n) for n in os.listdir(done)), sorted(moved[2:]))
        self.assertEqual(self.stat(st, "capture.budget_deleted"), 2)
        p = self.prefix_state(st, prefix)
        self.assertEqual(p["files"], 3)
        self.assertEqual(sorted(t["path"] for t in p["traces"]), sorted(moved[2:]))
        self.assertEqual(st.stop(), 0)

    def test_existing_traces_count_at_startup(self):
        prefix = os.path.join(self.tmp, "old")
        for i, age in ((1, 300), (2, 200), (3, 100)):
            with open("%s_%d.pb" % (prefix, i), "wb") as f:
                f.write(b"\0" * 0)
            os.utime("%s_%d.pb" % (prefix, i), (time.time() - age, time.time() - age))
        os.symlink("/etc/passwd", prefix + "_9.pb")  # never counted, never deleted
        st = self.go(capture_ts(prefix, extra=limits(max_files=3, policy="delete_oldest")))
        self.assertEqual(self.prefix_state(st, prefix)["files"], 3)
        self.conn(st, prefix)
        self.assertFalse(os.path.exists(prefix + "_1.pb"))  # the oldest went first
        self.assertTrue(os.path.exists(prefix + "_2.pb"))
        self.assertTrue(os.path.islink(prefix + "_9.pb"))
        self.assertEqual(st.stop(), 0)

    def test_min_free_bytes_pause_resume(self):
        mnt = os.path.join(self.tmp, "small")
        mount_tmpfs(self, mnt, "4m")
        prefix = os.path.join(mnt, "mf")
        st = self.go(capture_ts(prefix, extra=limits(min_free_bytes=3 << 20)))
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 1)
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (2 << 20))
        st.wait_log("capture paused for prefix %s: min_free_bytes" % prefix)
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 1)
        self.assertEqual(self.stat(st, "capture.budget_skipped"), 1)
        os.unlink(filler)
        st.wait_log("capture resumed for prefix %s: under min_free_bytes" % prefix)
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 2)
        self.assertEqual(st.stop(), 0)
        self.assertEqual(st.logtext().count("capture paused for prefix"), 1)

    def test_admin_captures_and_switch(self):
        prefix = os.path.join(self.tmp, "adm")
        st = self.go(capture_ts(prefix))
        self.conn(st, prefix)
        hold = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        hold.sendall(b"x")
        self.nconns += 1  # settles like the others (wait_settled counts it)
        deadline = time.time() + 20
        while self.prefix_state(st, prefix)["open_files"] == 0 and time.time() < deadline:
            time.sleep(0.02)
        p = self.prefix_state(st, prefix)
        self.assertEqual(p["files"], 2)
        self.assertEqual(p["paused_by"], [])
        self.assertTrue(p["capturing"])
        states = sorted(t["state"] for t in p["traces"])
        self.assertEqual(states, ["finished", "open"])
        for t in p["traces"]:
            self.assertTrue(os.path.exists(t["path"]))
            self.assertEqual(t["owner"], "listener.127.0.0.1_%d" % self.port)
            self.assertEqual(t["kind"], "capture")
            self.assertTrue(t["path"].endswith("_%d.pb" % t["connection_id"]))
            self.assertGreaterEqual(t["age_seconds"], 0)
        fin = [t for t in p["traces"] if t["state"] == "finished"][0]
        self.assertEqual(fin["size"], os.path.getsize(fin["path"]))
        hold.shutdown(socket.SHUT_WR)
        hold.recv(10)
        hold.close()
        self.wait_closed(st, prefix)

        self.assertEqual(self.stat(st, "capture.enabled"), 1)
        url = "http://127.0.0.1:%d/capture/listener/ingress?enabled=0" % st.admin_port
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=5)  # GET
        self.assertEqual(e.exception.code, 405)
        self.assertEqual(self.post(st, "/capture/listener/ingress?enabled=2")[0], 400)
        self.assertEqual(self.post(st, "/capture/listener/ingress")[0], 400)
        code, body = self.post(st, "/capture/listener/nope?enabled=0")
        self.assertEqual((code, body), (404, "no listener named 'nope'\n"))
        code, body = self.post(st, "/capture/cluster/backend?enabled=0")
        self.assertEqual(code, 404)
        self.assertIn("no capture or tap transport socket", body)
        self.assertEqual(self.post(st, "/capture/listener/ingress?enabled=0")[0], 200)
        self.assertEqual(self.stat(st, "capture.enabled"), 0)
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 2)
        self.assertEqual(self.stat(st, "capture.disabled_skipped"), 1)
        # by the address as /stats names the listener
        code, _ = self.post(st, "/capture/listener/127.0.0.1_%d?enabled=1" % self.port)
        self.assertEqual(code, 200)
        self.assertEqual(self.stat(st, "capture.enabled"), 1)
        self.conn(st, prefix)
        self.assertEqual(len(self.files(prefix)), 3)
        self.assertEqual(st.stop(), 0)

    def test_captures_lists_newest_finished_only(self):
        prefix = os.path.join(self.tmp, "many")
        for i in range(1, 1101):
            with open("%s_%d.pb" % (prefix, i), "wb"):
                pass
            os.utime("%s_%d.pb" % (prefix, i), (1000000 + i, 1000000 + i))
        # with a budget every file counts (without one only the newest 1000 are kept)
        st = self.go(capture_ts(prefix, extra=limits(max_total_bytes=1 << 30)))
        p = self.prefix_state(st, prefix)
        self.assertEqual(p["files"], 1100)
        self.assertEqual(len(p["traces"]), 1000)
        self.assertEqual(p["finished_not_listed"], 100)
        self.assertEqual(p["traces"][0]["connection_id"], 1100)  # newest first
        self.assertEqual(st.stop(), 0)


class OnCaptureFailure(BudgetTest):
    def run_missing_dir(self, mode):
        prefix = os.path.join(self.tmp, "gone", "cap")  # the directory does not exist
        extra = limits(on_capture_failure=mode) if mode else ""
        up = Upstream(b"ok")
        st = self.start(up.port, listener_ts=capture_ts(prefix, extra=extra))
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
            try:
                c.sendall(b"hello")
                c.shutdown(socket.SHUT_WR)
                got = c.recv(100)
            except OSError:
                got = b""
        return st, up, got

    def test_proxy_default(self):
        st, up, got = self.run_missing_dir(None)
        up.join()
        self.assertEqual(got, b"ok")
        self.assertEqual(bytes(up.data), b"hello")
        # the writer counts the failed create asynchronously: wait for it
        st.wait_stat("listener.127.0.0.1_%d.capture.files_failed" % self.port, lambda v: v == 1)
        self.assertEqual(self.stat(st, "capture.rejected"), 0)
        self.assertEqual(st.stop(), 0)

    def test_reject_closes_without_relaying(self):
        st, up, got = self.run_missing_dir("reject")
        self.assertEqual(got, b"")
        st.wait_stat("listener.127.0.0.1_%d.capture.rejected" % self.port, lambda v: v == 1)
        self.assertEqual(self.stat(st, "capture.files_failed"), 1)
        # no byte reached the upstream (it may have seen a connection, never data)
        self.assertEqual(bytes(up.data), b"")
        self.assertEqual(st.stop(), 0)


if __name__ == "__main__":
    harness.main()

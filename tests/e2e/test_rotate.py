"""Trace rotation, finished_dir and on_finished (socktap extensions in `socktap_limits`) end to
end: real clients and upstreams on loopback through a capturing socktap; every piece is checked
alone with test_capture's own protobuf parser and with socktap-trace, the pieces together with
capture2pcap and this machine's tshark (one TCP stream, byte-exact), finished files with the
directory listings and a hook script that records what it was given.
"""
import glob
import hashlib
import os
import re
import socket
import stat
import subprocess
import sys
import time

import harness
from test_capture import (CaptureBase, Upstream, exchange, joined, parse_length_delimited,
                          parse_v2_trace, parse_v3_wrapper, tap_ts, capture_ts, FULL)
from test_capture2pcap import follow_raw, tshark
from test_compression import decompress
from test_faults import wait_until
import test_tls as T
from harness import free_port, wait_port
from test_follow import Follow
from test_listen import echo_server


def limits(indent=6, **kw):
    """A `socktap_limits:` block for capture_ts's EXTRA (keys at the config's level)."""
    pad = " " * (indent + 4)
    body = ", ".join("%s: %s" % (k, v) for k, v in kw.items())
    return "%ssocktap_limits: {%s}\n" % (pad, body)


def piece_no(path):
    """Piece number of a rotated trace's file: `<prefix>_<id><ext>` is 0, `.<n><ext>` is n."""
    m = re.search(r"_\d+(?:\.(\d+))?\.pb", os.path.basename(path))
    return int(m.group(1) or 0)


def pieces(pattern):
    return sorted(glob.glob(pattern), key=piece_no)


def pcap_fins(data):
    """FIN segments in classic pcap bytes DATA (Ethernet, IPv4), complete records only."""
    pos, n = 24, 0
    while pos + 16 <= len(data):
        incl = int.from_bytes(data[pos + 8:pos + 12], "little")
        frame = data[pos + 16:pos + 16 + incl]
        if len(frame) < incl:
            break
        ihl = (frame[14] & 15) * 4
        n += frame[14 + ihl + 13] & 1
        pos += 16 + incl
    return n


def trace_tool(*args):
    return subprocess.run([harness.tool("socktap-trace"), *args], capture_output=True, timeout=300)


class Chatty:
    """Client: sends REQUEST in CHUNK-byte writes (one event each, so a piece ends often),
    half-closes, reads to EOF."""

    def __init__(self, port, request, chunk=8192):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            self.me = c.getsockname()
            for i in range(0, len(request), chunk):
                c.sendall(request[i:i + chunk])
            c.shutdown(socket.SHUT_WR)
            got = bytearray()
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                got += b
        self.got = bytes(got)


class PingPong:
    """Client of an echo upstream: sends REQUEST CHUNK bytes at a time, each after the previous
    one came back, so every chunk is its own read and write event (a piece ends every few)."""

    def __init__(self, port, request, chunk=8192):
        got = bytearray()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
            self.me = c.getsockname()
            for i in range(0, len(request), chunk):
                c.sendall(request[i:i + chunk])
                want = len(got) + len(request[i:i + chunk])
                while len(got) < want:
                    b = c.recv(1 << 20)
                    if not b:
                        raise AssertionError("echo ended early")
                    got += b
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        self.got = bytes(got)


HOOK = r"""#!/usr/bin/env python3
import os, sys, time
path = sys.argv[-1]
fds = sorted(int(x) for x in os.listdir("/proc/self/fd"))
mode = os.environ.get("HOOK_MODE", "ok")
with open(os.environ["HOOK_LOG"], "a") as f:
    f.write("%s\t%s\t%d\t%d\t%d\n" % (path, ",".join(map(str, fds)), os.path.exists(path),
                                    os.getpgrp() == os.getpid(), os.getpid()))
if mode == "fail":
    sys.exit(3)
if mode == "hang":
    time.sleep(3600)
"""


class RotateTest(CaptureBase):
    def echo(self):
        srv = echo_server()
        self.addCleanup(srv.close)
        return srv.getsockname()[1]

    def hook(self, mode="ok"):
        """Writes the hook script; returns (its path, its log)."""
        path = os.path.join(self.tmp, "hook.py")
        with open(path, "w") as f:
            f.write(HOOK)
        os.chmod(path, 0o700)
        log = os.path.join(self.tmp, "hook.log")
        return path, log

    def hook_lines(self, log):
        if not os.path.exists(log):
            return []
        with open(log) as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]

    def test_rotate_bytes_bulk_pieces_merge_back(self):
        request = os.urandom(600 * 1024)
        response = os.urandom(200 * 1024)
        up = Upstream(response)
        prefix = os.path.join(self.tmp, "in")
        st = self.start(up.port, listener_ts=capture_ts(prefix, extra=limits(rotate_bytes=65536)))
        c = Chatty(self.port, request)
        up.join()
        self.assertEqual(c.got, response)
        self.assertEqual(bytes(up.data), request)
        # socktap reads what the socket holds (up to 1 MiB) as one event, so how many pieces
        # depends on the reads: at least request / (rotate_bytes + one event)
        wait_until(lambda: self.stat(st, "capture.rotated") >= 2, timeout=20)
        rotated = self.stat(st, "capture.rotated")
        self.assertEqual(st.stop(), 0)

        files = pieces(prefix + "_*.pb")
        self.assertGreaterEqual(len(files), 3, files)
        # a piece ended by rotation is followed by one only if another event came (the next
        # piece starts with it): the last rotation may have ended the trace's last piece
        self.assertIn(len(files), (rotated, rotated + 1), files)
        self.assertEqual([piece_no(f) for f in files], list(range(len(files))))
        reads, writes, conns = b"", b"", []
        for f in files:
            self.assertEqual(stat.S_IMODE(os.stat(f).st_mode), 0o600)
            with open(f, "rb") as fh:
                conn, events = parse_v2_trace(fh.read())
            self.assertTrue(events, f)
            conns.append(conn)
            reads += joined(events, "read")
            writes += joined(events, "write")
            # each piece alone is a whole trace for socktap's own reader too
            r = trace_tool("dump", f)
            self.assertEqual(r.returncode, 0, r.stderr)
            # a piece ends at rotate_bytes plus at most one event (a read of up to 1 MiB)
            self.assertLess(os.path.getsize(f), 65536 + (1 << 20) + 4096, f)
        self.assertEqual(reads, request)
        self.assertEqual(writes, response)
        r = trace_tool("cat", "--direction", "write", *reversed(files))
        self.assertEqual((r.returncode, r.stdout), (0, response), r.stderr)
        # convert over the pieces (any order): one whole trace of the connection
        whole = os.path.join(self.tmp, "whole.pb")
        r = trace_tool("convert", "--to", "v2-binary", "-o", whole, *reversed(files))
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(whole, "rb") as fh:
            wconn, wevents = parse_v2_trace(fh.read())
        self.assertEqual(wconn, conns[0])
        self.assertEqual((joined(wevents, "read"), joined(wevents, "write")), (request, response))
        self.assertTrue(all(x == conns[0] for x in conns), conns)
        self.assertTrue(files[0].endswith("_%d.pb" % conns[0].get("id", 0)))  # proto3 omits an id of 0
        self.assertEqual(conns[0]["remote"], c.me)

        # capture2pcap merges them back: one flow, one handshake, one FIN per side
        out = os.path.join(self.tmp, "all.pcap")
        r = subprocess.run([harness.tool("capture2pcap"), "--tcp-handshake", *reversed(files), out],
                           capture_output=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"1 connection", r.stdout + r.stderr)
        syns = tshark(out, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0").splitlines()
        self.assertEqual(len(syns), 1, syns)
        fins = tshark(out, "-Y", "tcp.flags.fin==1").splitlines()
        self.assertEqual(len(fins), 2, fins)
        streams = set(tshark(out, "-T", "fields", "-e", "tcp.stream").split())
        self.assertEqual(streams, {"0"})
        analysis = tshark(out, "-Y", "tcp.analysis.flags && !tcp.analysis.window_update")
        self.assertEqual(analysis.strip(), "", "tshark flags sequence problems")
        a, b = follow_raw(out)
        self.assertEqual(hashlib.sha256(a).hexdigest(), hashlib.sha256(request).hexdigest())
        self.assertEqual(hashlib.sha256(b).hexdigest(), hashlib.sha256(response).hexdigest())

        # pcapng: the pieces are one capture owner (interface "in"), also under the names a
        # first piece's collision gives them (in_1.3.pb, in_1.3.1.pb, ...)
        moved = os.path.join(self.tmp, "renamed")
        os.mkdir(moved)
        names = []
        for f in files:
            n = piece_no(f)
            names.append(os.path.join(moved, "in_%d.3%s.pb" % (conns[0].get("id", 0), ".%d" % n if n else "")))
            os.link(f, names[-1])
        out = os.path.join(self.tmp, "all.pcapng")
        r = subprocess.run([harness.tool("capture2pcap"), *names, out], capture_output=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(set(tshark(out, "-T", "fields", "-e", "frame.interface_name").split()), {"in"})
        self.assertEqual(set(tshark(out, "-T", "fields", "-e", "tcp.stream").split()), {"0"})
        self.assertEqual(len(tshark(out, "-Y", "frame.comment").splitlines()), 1)
        self.assertEqual(follow_raw(out), (request, response))

    def test_rotate_seconds_ends_an_idle_connections_piece(self):
        prefix = os.path.join(self.tmp, "idle")
        up = Upstream(b"bye")
        st = self.start(up.port, listener_ts=capture_ts(prefix, extra=limits(rotate_seconds=1)))
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as c:
            c.sendall(b"first")
            # the idle connection's piece ends on the per-worker timer, with no further event
            wait_until(lambda: self.stat(st, "capture.rotated") == 1, timeout=20)
            self.assertEqual(len(glob.glob(prefix + "_*.pb")), 1)
            c.sendall(b"second")
            wait_until(lambda: len(glob.glob(prefix + "_*.pb")) == 2, timeout=20)
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        up.join()
        self.assertEqual(st.stop(), 0)
        files = pieces(prefix + "_*.pb")
        got = []
        for f in files:
            with open(f, "rb") as fh:
                conn, events = parse_v2_trace(fh.read())
            got.append(joined(events, "read"))
        self.assertEqual(got[0], b"first")
        self.assertEqual(b"".join(got), b"firstsecond")

    def test_compressed_and_v3_tap_pieces(self):
        echo = self.echo()
        for comp in ("zstd", "lz4"):
            with self.subTest(comp=comp):
                request = os.urandom(128 * 1024)
                prefix = os.path.join(self.tmp, "z" + comp)
                ts = capture_ts(prefix, extra=limits(rotate_bytes=32768) +
                                " " * 10 + "socktap_compression: %s\n" % comp)
                st = self.start(echo, listener_ts=ts)
                self.assertEqual(PingPong(self.port, request).got, request)
                self.assertEqual(st.stop(), 0)
                suffix = {"zstd": ".zst", "lz4": ".lz4"}[comp]
                files = sorted(glob.glob(prefix + "_*.pb" + suffix), key=piece_no)
                self.assertGreaterEqual(len(files), 4, files)
                reads = writes = b""
                for f in files:
                    rc, data, err = decompress(f, comp)  # each piece is a whole stream
                    self.assertEqual(rc, 0, err)
                    conn, events = parse_v2_trace(data)
                    self.assertTrue(events and "remote" in conn, f)  # its own connection record
                    reads += joined(events, "read")
                    writes += joined(events, "write")
                self.assertEqual(reads, request)
                self.assertEqual(writes, request)
                out = os.path.join(self.tmp, comp + ".pcap")
                r = subprocess.run([harness.tool("capture2pcap"), "--tcp-handshake", *files, out],
                                   capture_output=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(follow_raw(out), (request, request))
        # v3 tap, streamed, length-delimited: each piece is TraceWrappers with the connection
        request = os.urandom(64 * 1024)
        prefix = os.path.join(self.tmp, "tap")
        ts = tap_ts(prefix, "PROTO_BINARY_LENGTH_DELIMITED", True, rx=FULL, tx=FULL) + limits(rotate_bytes=16384)
        st = self.start(echo, listener_ts=ts)
        self.assertEqual(PingPong(self.port, request).got, request)
        self.assertEqual(st.stop(), 0)
        files = sorted(glob.glob(prefix + "_*.pb_length_delimited"),
                       key=lambda p: piece_no(p.replace(".pb_length_delimited", ".pb")))
        self.assertGreaterEqual(len(files), 4, files)
        reads, closed = b"", 0
        for f in files:
            with open(f, "rb") as fh:
                wrappers = [parse_v3_wrapper(m) for m in parse_length_delimited(fh.read())]
            # the piece's first wrapper carries the connection (its addresses), as Envoy's first
            self.assertTrue(wrappers[0][1].get("local"), "piece %s starts without the connection" % f)
            for w in wrappers:
                for e in w[2]:
                    if e["dir"] == "read":
                        reads += e["data"]
                    closed += e["dir"] == "closed"
            r = trace_tool("dump", f)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(reads, request)
        self.assertEqual(closed, 1)  # the connection closed once, in the last piece
        # socktap-trace cat over the pieces, given in any order: one byte stream
        r = trace_tool("cat", "--direction", "read", *reversed(files))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, request)

    def test_finished_dir_and_on_finished(self):
        done = os.path.join(self.tmp, "done")
        os.mkdir(done, 0o700)
        hook, log = self.hook()
        prefix = os.path.join(self.tmp, "cap", "in")
        os.mkdir(os.path.dirname(prefix), 0o700)
        request = os.urandom(64 * 1024)
        echo = self.echo()
        ts = capture_ts(prefix, extra=limits(rotate_bytes=16384, finished_dir='"%s"' % done,
                                             on_finished='["%s"]' % hook))
        st = self.start(echo, listener_ts=ts, env={"HOOK_LOG": log})
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as c:
            for i in range(0, len(request), 4096):
                c.sendall(request[i:i + 4096])
                n = 0
                while n < 4096:
                    n += len(c.recv(4096 - n))
            # while the connection is open: its finished pieces are in done/, the open one not
            wait_until(lambda: self.stat(st, "capture.finished_moved") >= 3, timeout=20)
            # (at most one piece is open: the next one starts with the next event)
            # (listed in this order: a piece can move from the first listing to the second)
            moved = os.listdir(done)
            open_now = glob.glob(prefix + "_*")
            self.assertLessEqual(len(open_now), 1, open_now)
            self.assertTrue(moved)
            for name in moved:  # every file in done/ is a whole trace
                with open(os.path.join(done, name), "rb") as fh:
                    self.assertTrue(parse_v2_trace(fh.read())[1], name)
            self.assertFalse(set(map(os.path.basename, open_now)) & set(moved))
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):
                pass
        for _ in range(2):
            PingPong(self.port, b"small")
        wait_until(lambda: self.stat(st, "capture.hook_ok") == len(os.listdir(done)), timeout=20)
        self.assertEqual(glob.glob(prefix + "_*"), [])  # everything finished moved out
        finished = sorted(os.path.join(done, n) for n in os.listdir(done))
        self.assertEqual(self.stat(st, "capture.finished_moved"), len(finished))
        self.assertEqual(self.stat(st, "capture.hook_failed"), 0)
        self.assertEqual(st.stop(), 0)
        lines = self.hook_lines(log)
        self.assertEqual(sorted(l[0] for l in lines), finished)  # each file once, final path
        for path, fds, existed, own_group, _ in lines:
            self.assertEqual(existed, "1")
            self.assertEqual(fds, "0,1,2,3", "descriptors the hook got: " + fds)  # 3: listdir's
            self.assertEqual(own_group, "1")  # its own process group
        # the first connection's pieces, in order, hold the request
        ids = sorted({int(re.match(r"in_(\d+)", os.path.basename(f)).group(1)) for f in finished})
        first = sorted((f for f in finished if os.path.basename(f).startswith("in_%d." % ids[0])),
                       key=piece_no)
        self.assertGreaterEqual(len(first), 4, finished)
        reads = b""
        for f in first:
            with open(f, "rb") as fh:
                reads += joined(parse_v2_trace(fh.read())[1], "read")
        self.assertEqual(reads, request)
        # pieces of two connections are no one trace: convert says so and writes nothing
        other = [f for f in finished if os.path.basename(f).startswith("in_%d." % ids[1])]
        out = os.path.join(self.tmp, "mixed.pb")
        r = trace_tool("convert", "--to", "v2-binary", "-o", out, first[0], *other)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"takes the pieces of one rotated trace", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_restart_continues_ids_above_finished_dir(self):
        """Finished traces leave the prefix's directory: a restart must not reuse their ids
        (which would make every move a clash)."""
        done = os.path.join(self.tmp, "done")
        os.mkdir(done, 0o700)
        prefix = os.path.join(self.tmp, "r")
        runs = []
        for run, conns in ((1, 2), (2, 1)):
            up = Upstream(b"ok", conns=conns)
            st = self.start(up.port, listener_ts=capture_ts(prefix, extra=limits(
                finished_dir='"%s"' % done)))
            for _ in range(conns):
                Chatty(self.port, b"q")
            up.join()
            wait_until(lambda: self.stat(st, "capture.finished_moved") == conns, timeout=20)
            self.assertEqual(st.stop(), 0)
            self.assertNotIn("left untouched", st.logtext())
            runs.append(sorted(int(re.match(r"r_(\d+)\.pb$", n).group(1)) for n in os.listdir(done)
                               if not any(int(re.match(r"r_(\d+)", n).group(1)) in r for r in runs)))
        self.assertIn("connection ids continue above it", st.logtext())
        self.assertEqual([len(r) for r in runs], [2, 1], runs)
        self.assertGreater(runs[1][0], max(runs[0]))  # the second run's id is above the first's

    def test_failing_and_hanging_hooks_are_counted_and_killed(self):
        hook, log = self.hook()
        for mode in ("fail", "hang"):
            with self.subTest(mode=mode):
                prefix = os.path.join(self.tmp, mode)
                up = Upstream(b"ok", conns=2)
                ts = capture_ts(prefix, extra=limits(on_finished='["%s"]' % hook))
                # the hanging hook must have started (python, via pyenv's shim: up to seconds
                # on a loaded machine) and logged before it is killed; a failing one is given
                # the default 60 s (with 300 ms, both were killed before they ran, under load)
                env = {"HOOK_LOG": log, "HOOK_MODE": mode}
                if mode == "hang":
                    env["SOCKTAP_HOOK_TIMEOUT_MS"] = "5000"
                st = self.start(up.port, listener_ts=ts, env=env)
                Chatty(self.port, b"one")
                Chatty(self.port, b"two")
                up.join()
                counter = "capture.hook_failed" if mode == "fail" else "capture.hook_timeout"
                wait_until(lambda: self.stat(st, counter) == 2, timeout=90)
                self.assertEqual(self.stat(st, "capture.hook_ok"), 0)
                logtext = st.logtext()
                self.assertEqual(logtext.count("on_finished"), 1, logtext)  # once per state
                self.assertEqual(st.stop(), 0)
                lines = [l for l in self.hook_lines(log) if l[0].startswith(prefix)]
                self.assertEqual(len(lines), 2, lines)
                for line in lines:  # killed (hang) or ended (fail), and reaped either way
                    self.assertFalse(os.path.exists("/proc/%s" % line[4]), line)

    def test_shutdown_kills_running_hooks_and_skips_queued_ones(self):
        hook, log = self.hook()
        prefix = os.path.join(self.tmp, "sd")
        up = Upstream(b"ok", conns=6)
        ts = capture_ts(prefix, extra=limits(on_finished='["%s"]' % hook))
        st = self.start(up.port, listener_ts=ts, env={"HOOK_LOG": log, "HOOK_MODE": "hang"})
        for i in range(6):
            Chatty(self.port, b"x%d" % i)
        up.join()
        # 4 run at once (and hang), the other 2 wait in the queue
        wait_until(lambda: len(self.hook_lines(log)) == 4, timeout=20)
        self.assertEqual(st.stop(), 0)
        logtext = st.logtext()
        self.assertIn("2 queued on_finished hook(s) skipped", logtext)
        lines = self.hook_lines(log)
        self.assertEqual(len(lines), 4, lines)
        for line in lines:
            self.assertFalse(os.path.exists("/proc/%s" % line[4]), line)


    def test_follow_continues_a_connection_across_pieces(self):
        """Two followers: one running while the pieces appear (live), one started once they all
        exist (its first scan must take them in piece order: versionsort alone puts in_1.1.pb
        before in_1.pb)."""
        echo = self.echo()
        caps = os.path.join(self.tmp, "caps")
        os.mkdir(caps, 0o700)
        st = self.start(echo, listener_ts=capture_ts(os.path.join(caps, "in"),
                                                     extra=limits(rotate_bytes=16384)))
        live = Follow(self, [caps])
        request = os.urandom(64 * 1024)
        self.assertEqual(PingPong(self.port, request).got, request)
        wait_until(lambda: self.stat(st, "capture.files_opened") == len(os.listdir(caps)), timeout=20)
        late = Follow(self, [caps])
        for name, f in (("live", live), ("late", late)):
            with self.subTest(follower=name):
                # the last piece's end: its FINs (after the grace in which a next piece could
                # continue the flow)
                self.assertTrue(f.wait(lambda s: pcap_fins(bytes(s.data)) == 2), f.stderr())
                self.assertEqual(f.stop(), 0, f.stderr())
                out = os.path.join(self.tmp, name + ".pcap")
                with open(out, "wb") as fh:
                    fh.write(bytes(f.data))
                syns = tshark(out, "-Y", "tcp.flags.syn==1 && tcp.flags.ack==0").splitlines()
                self.assertEqual(len(syns), 1, syns)
                self.assertEqual(set(tshark(out, "-T", "fields", "-e", "tcp.stream").split()), {"0"})
                self.assertEqual(follow_raw(out), (request, request))
                self.assertIn("1 connection", f.stderr())
        self.assertEqual(st.stop(), 0)
        self.assertGreaterEqual(len(os.listdir(caps)), 4)


class RotateTlsWireTest(T.TlsBase):
    def test_wire_capture_pieces_decrypt_with_the_first_pieces_key_log(self):
        """A TLS wire capture rotated into pieces: the key log stays one file beside the first
        piece (the handshake is there, and without it no piece decrypts anyway); capture2pcap
        over all pieces embeds it and tshark decrypts the whole HTTP/2 exchange as one stream."""
        body = os.urandom(96 * 1024)
        with open(os.path.join(self.tmp, "big.bin"), "wb") as f:
            f.write(body)
        up = free_port()
        p = self.procs.start(["nghttpd", "-d", self.tmp, "-a", "127.0.0.1", str(up),
                              os.path.join(self.pki, "server.key"), os.path.join(self.pki, "server.pem")])
        wait_port(up, proc=p)
        cap = os.path.join(self.tmp, "wire")
        done = os.path.join(self.tmp, "done")
        os.mkdir(done, 0o700)
        extra = ("socktap_wire_capture: {path_prefix: %s, socktap_limits: {rotate_bytes: 16384, "
                 "finished_dir: %s}}, " % (cap, done))
        st, lp = self.start(T.listener_tls(self.pki, extra=extra,
                                           extra_common=", alpn_protocols: [h2, http/1.1]"),
                            T.cluster_tls(self.pki, alpn="h2"), upstream_port=up)
        r = self.curl(lp, "/big.bin", "--http2", "--tlsv1.3")
        self.assertEqual(r.stdout, body)
        wait_until(lambda: not glob.glob(cap + "_*"), timeout=20)  # all finished: moved
        self.assertEqual(st.stop(), 0)
        cap = os.path.join(done, "wire")  # the key log moved too, beside its first piece
        keys = glob.glob(cap + "_*.keylog")
        files = sorted((f for f in glob.glob(cap + "_*") if not f.endswith(".keylog")),
                       key=lambda p: piece_no(p.replace(".pb_length_delimited", ".pb")))
        self.assertGreaterEqual(len(files), 3, files)
        self.assertEqual(keys, [files[0] + ".keylog"])
        out = os.path.join(self.tmp, "wire.pcapng")
        r = subprocess.run([harness.tool("capture2pcap"), *reversed(files), out], capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(set(tshark(out, "-T", "fields", "-e", "tcp.stream").split()), {"0"})
        vals = tshark(out, "-d", "tcp.port==%d,tls" % lp, "-Y", "http2", "-T", "fields", "-e",
                      "http2.header.value")
        self.assertIn("/big.bin", vals)
        self.assertIn("200", vals)
        lens = tshark(out, "-d", "tcp.port==%d,tls" % lp, "-Y", "http2.type==0", "-T", "fields",
                      "-e", "http2.length").split()
        # every DATA frame of the response decrypted, pieces after the first included
        self.assertGreaterEqual(sum(int(v) for x in lens for v in x.split(",") if v), len(body))


if __name__ == "__main__":
    harness.main()

"""Capture faults end to end: the disk fills mid-trace, the capture directory vanishes or turns
read-only while socktap runs. In every case the traffic is untouched (bytes equal end to end,
hashed), the trace that exists is clean (socktap-trace reads it to the end, or reports only a
truncation at the very end), and /stats counts what was lost.
"""
import errno
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading

import harness
from harness import E2ETest, free_port, proxy_config
from test_faults import ASAN_ENV, listen, wait_until
from test_capture import capture_ts, tap_ts, FULL


def mount_tmpfs(test, path, size):
    os.makedirs(path, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0700" % size, "tmpfs", path],
                      capture_output=True).returncode != 0:
        test.skipTest("cannot mount a tmpfs here (needs root)")
    test.addCleanup(subprocess.run, ["umount", "-l", path], capture_output=True)


class Exchange:
    """One proxied connection: the client streams UP_BYTES to the upstream while the upstream
    streams DOWN_BYTES back; both sides hash what they receive."""

    def __init__(self, port, up_sock, up_bytes, down_bytes):
        self.sent_up = os.urandom(up_bytes)
        self.sent_down = os.urandom(down_bytes)
        self.got_up = hashlib.sha256()
        self.got_down = hashlib.sha256()
        self.n_up = self.n_down = 0
        t = threading.Thread(target=self.upstream, args=(up_sock,), daemon=True)
        t.start()
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        w = threading.Thread(target=self.send, args=(c,), daemon=True)
        w.start()
        while True:
            b = c.recv(1 << 16)
            if not b:
                break
            self.got_down.update(b)
            self.n_down += len(b)
        w.join(60)
        c.close()
        t.join(60)

    def send(self, c):
        c.sendall(self.sent_up)
        c.shutdown(socket.SHUT_WR)

    def upstream(self, up_sock):
        conn, _ = up_sock.accept()
        with conn:
            s = threading.Thread(target=lambda: (conn.sendall(self.sent_down), conn.shutdown(socket.SHUT_WR)),
                                 daemon=True)
            s.start()
            while True:
                b = conn.recv(1 << 16)
                if not b:
                    break
                self.got_up.update(b)
                self.n_up += len(b)
            s.join(60)

    def assert_intact(self, test):
        test.assertEqual(self.n_up, len(self.sent_up))
        test.assertEqual(self.n_down, len(self.sent_down))
        test.assertEqual(self.got_up.hexdigest(), hashlib.sha256(self.sent_up).hexdigest())
        test.assertEqual(self.got_down.hexdigest(), hashlib.sha256(self.sent_down).hexdigest())


class CaptureFaultTest(E2ETest):
    def start(self, listener_ts):
        self.up = listen()
        self.addCleanup(self.up.close)
        self.port = free_port()
        self.admin = free_port()
        cfg = proxy_config(self.port, self.up.getsockname()[1], self.admin, listener_ts=listener_ts)
        self.st = self.socktap(cfg, admin_port=self.admin, env=ASAN_ENV)
        return self.st

    def stat(self, name):
        return self.st.stats().get("listener.127.0.0.1_%d.capture.%s" % (self.port, name), 0)

    def exchange(self, up_bytes, down_bytes):
        x = Exchange(self.port, self.up, up_bytes, down_bytes)
        x.assert_intact(self)
        return x

    def assert_clean_trace(self, path, complete=True):
        """socktap-trace reads PATH whole (COMPLETE), or stops only at a truncation at its very
        end. Returns (bytes read from the client, bytes written to it) as the trace says."""
        out = subprocess.run([harness.tool("socktap-trace"), "dump", path], capture_output=True)
        if complete:
            # a failed write is cut back to the last whole event: nothing torn remains
            self.assertEqual(out.returncode, 0, out.stderr[-300:])
        elif out.returncode != 0:
            m = re.search(rb"truncated at offset (\d+)", out.stderr)
            self.assertIsNotNone(m, "trace %s is corrupt, not truncated: %r" % (path, out.stderr[-300:]))
            self.assertNotIn(b"corrupt", out.stderr)
        return tuple(subprocess.run([harness.tool("socktap-trace"), "cat", "--direction", d, path],
                                    capture_output=True).stdout for d in ("read", "write"))

    def test_disk_full_mid_trace(self):
        mnt = os.path.join(self.tmp, "small")
        mount_tmpfs(self, mnt, "2m")
        self.start(capture_ts(os.path.join(mnt, "cap")))
        x = self.exchange(6 << 20, 6 << 20)  # 12 MiB of traffic for a 2 MiB disk
        wait_until(lambda: self.stat("write_errors") >= 1, what="the write error counted")
        self.assertEqual(self.stat("write_errors"), 1)
        self.assertEqual(self.stat("files_opened"), 1)
        self.assertEqual(self.stat("truncated"), 1)
        files = [os.path.join(mnt, f) for f in os.listdir(mnt)]
        self.assertEqual(len(files), 1)
        size = os.path.getsize(files[0])
        self.assertGreater(size, 0)
        self.assertLessEqual(size, 2 << 20)
        read, written = self.assert_clean_trace(files[0])
        # the trace holds a true prefix of each direction
        self.assertGreater(len(read) + len(written), 1 << 20)
        self.assertEqual(read, x.sent_up[:len(read)])
        self.assertEqual(written, x.sent_down[:len(written)])
        print("\ndisk full: trace %d bytes; captured %d of %d bytes up, %d of %d down"
              % (size, len(read), len(x.sent_up), len(written), len(x.sent_down)))
        # the next connection hits the full disk at once: traffic still intact
        self.exchange(256 << 10, 256 << 10)
        self.assertIsNone(self.st.proc.poll())
        self.assertEqual(self.st.stop(), 0)
        log = self.st.logtext()
        self.assertIn("No space left on device", log)

    def test_disk_full_logged_once_per_failing_period(self):
        """A full disk fails every connection's trace: counted each time, logged once until a
        write succeeds again (then said once); the traffic is untouched throughout."""
        mnt = os.path.join(self.tmp, "small")
        mount_tmpfs(self, mnt, "1m")
        self.start(capture_ts(os.path.join(mnt, "cap")))
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb", buffering=0) as f:  # the disk full to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                self.assertEqual(e.errno, errno.ENOSPC)
        for _ in range(4):  # each trace fails its first write
            self.exchange(256 << 10, 256 << 10)
        wait_until(lambda: self.stat("write_errors") >= 4, what="four write errors counted")
        self.assertEqual(self.stat("write_errors"), 4)
        log = self.st.logtext()
        self.assertEqual(log.count("No space left on device"), 1, log[-2000:])
        self.assertNotIn("stopped at the last whole event", log)
        self.assertNotIn("works again", log)
        # room again: the next trace is written whole and the recovery is said once
        for f in os.listdir(mnt):
            os.unlink(os.path.join(mnt, f))
        # the four failed traces' writes are over (counted): only the next one's file remains
        x = self.exchange(64 << 10, 64 << 10)
        wait_until(lambda: "writing traces works again" in self.st.logtext(), what="the recovery")
        self.assertEqual(self.st.stop(), 0)
        files = [os.path.join(mnt, f) for f in os.listdir(mnt)]
        self.assertEqual(len(files), 1)
        read, written = self.assert_clean_trace(files[0])
        self.assertEqual((read, written), (x.sent_up, x.sent_down))
        log = self.st.logtext()
        self.assertEqual(log.count("No space left on device"), 1)
        self.assertEqual(log.count("writing traces works again"), 1)

    def test_threads_are_named(self):
        """top -H / ps -L / perf name socktap's threads: each worker and the capture writer."""
        d = os.path.join(self.tmp, "traces")
        os.mkdir(d, 0o700)
        self.start(capture_ts(os.path.join(d, "cap")))
        self.exchange(1024, 1024)  # the writer starts with the first capture
        wait_until(lambda: self.stat("files_opened") == 1, what="the first trace")
        task = "/proc/%d/task" % self.st.pid
        names = set()
        for t in os.listdir(task):
            with open(os.path.join(task, t, "comm")) as f:
                names.add(f.read().strip())
        self.assertIn("socktap-w0", names)
        self.assertIn("socktap-capture", names)
        self.assertEqual(self.st.stop(), 0)

    def test_disk_full_tap_length_delimited(self):
        mnt = os.path.join(self.tmp, "small")
        mount_tmpfs(self, mnt, "1m")
        self.start(tap_ts(os.path.join(mnt, "tap"), "PROTO_BINARY_LENGTH_DELIMITED", True, rx=FULL, tx=FULL))
        self.exchange(4 << 20, 1 << 20)
        name = "listener.127.0.0.1_%d.tap.write_errors" % self.port
        wait_until(lambda: self.st.stats().get(name, 0) >= 1, what="the tap write error counted")
        files = [os.path.join(mnt, f) for f in os.listdir(mnt)]
        self.assertEqual(len(files), 1)
        self.assert_clean_trace(files[0])

    def test_capture_dir_removed_while_running(self):
        d = os.path.join(self.tmp, "traces")
        os.mkdir(d, 0o700)
        self.start(capture_ts(os.path.join(d, "cap")))
        self.exchange(64 << 10, 64 << 10)
        wait_until(lambda: self.stat("files_opened") == 1, what="the first trace")
        shutil.rmtree(d)
        x = self.exchange(1 << 20, 1 << 20)  # traffic intact without a capture
        del x
        # the writer thread creates the files (and counts): soon after the traffic, not before
        wait_until(lambda: self.stat("files_failed") == 1, what="the failed create counted")
        self.assertEqual(self.stat("files_failed"), 1)
        self.assertEqual(self.stat("files_opened"), 1)
        self.assertIn("cannot create a trace file", self.st.logtext())
        # the directory comes back: capturing resumes, no restart needed
        os.mkdir(d, 0o700)
        self.exchange(32 << 10, 32 << 10)
        wait_until(lambda: self.stat("files_opened") == 2, what="the second trace")
        self.assertEqual(self.stat("files_opened"), 2)
        self.assertEqual(self.st.stop(), 0)
        files = os.listdir(d)
        self.assertEqual(len(files), 1)
        self.assert_clean_trace(os.path.join(d, files[0]))

    def test_capture_dir_removed_mid_connection(self):
        """A trace whose directory is removed under it: the open file lives on (unlinked), the
        connection carries on, nothing fails."""
        d = os.path.join(self.tmp, "traces")
        os.mkdir(d, 0o700)
        self.start(capture_ts(os.path.join(d, "cap")))
        holder = {}
        t = threading.Thread(target=lambda: holder.update(x=Exchange(self.port, self.up, 16 << 20, 16 << 20)))
        t.start()
        wait_until(lambda: os.path.isdir(d) and os.listdir(d), what="the trace file")
        shutil.rmtree(d)
        t.join(120)
        holder["x"].assert_intact(self)
        self.assertEqual(self.stat("write_errors"), 0)
        self.assertIsNone(self.st.proc.poll())

    def test_capture_dir_read_only(self):
        """New files in a read-only directory fail to be created; traffic carries on. As root a
        chmod does not stop creation, so the directory is a tmpfs remounted read-only."""
        d = os.path.join(self.tmp, "ro")
        if os.geteuid() == 0:
            mount_tmpfs(self, d, "1m")
            ro = lambda: subprocess.run(["mount", "-o", "remount,ro", d], check=True)
            rw = lambda: subprocess.run(["mount", "-o", "remount,rw", d], check=True)
        else:
            os.mkdir(d, 0o700)
            ro = lambda: os.chmod(d, 0o500)
            rw = lambda: os.chmod(d, 0o700)
        self.addCleanup(lambda: subprocess.run(["mount", "-o", "remount,rw", d], capture_output=True)
                        if os.geteuid() == 0 else os.chmod(d, 0o700))
        self.start(capture_ts(os.path.join(d, "cap")))
        ro()
        self.exchange(512 << 10, 512 << 10)
        wait_until(lambda: self.stat("files_failed") == 1, what="the failed create counted")
        self.assertEqual(self.stat("files_failed"), 1)
        self.assertEqual(self.stat("files_opened"), 0)
        self.assertRegex(self.st.logtext(), "cannot create a trace file .*(Read-only file system|Permission denied)")
        rw()
        x = self.exchange(64 << 10, 64 << 10)
        wait_until(lambda: self.stat("files_opened") == 1, what="the trace")
        self.assertEqual(self.stat("files_opened"), 1)
        self.assertEqual(self.st.stop(), 0)
        files = os.listdir(d)
        self.assertEqual(len(files), 1)
        self.assertEqual(self.assert_clean_trace(os.path.join(d, files[0])), (x.sent_up, x.sent_down))


if __name__ == "__main__":
    harness.main()

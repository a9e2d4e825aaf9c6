#!/usr/bin/env python3
"""Retention run (issue 12's "done when"; not part of `make test`): bulk capture for --seconds
under `socktap_limits: {max_total_bytes: BUDGET, policy: delete_oldest}` (plus rotation of a
long-lived connection), and proof that

  - the trace files of the prefix never exceed the budget on disk (sampled every 0.2 s by
    listing the directory ourselves, not from socktap's stats: a bug could agree with itself);
  - every finished trace was readable: an on_finished hook hard-links each finished file into a
    check directory before delete_oldest may remove it, and a verifier decodes it
    (`socktap-trace cat`) and, for hashed connections, compares its bytes per direction with
    what the client sent and received;
  - every proxied connection's bytes hash equal at both ends (soak.py's hash protocol);
  - socktap's RSS stays flat and it exits 0.

Usage: tests/soak/retention.py --build build [--seconds 600] [--budget-mb 1024]
Loopback only; every process started here is stopped by PID. Prints a summary; exit 0 only if
every check passed."""
import argparse
import collections
import concurrent.futures
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from soak import HDR, HashHandler, HashServer, Tally, recv_exact, stream  # noqa: E402,F401


def config(port, hash_port, cap, hook, admin, budget, rotate):
    limits = ("socktap_limits: {max_total_bytes: %d, policy: delete_oldest, rotate_bytes: %d, "
              "on_finished: [%s]}" % (budget, rotate, hook))
    ts = """      transport_socket:
        name: envoy.transport_sockets.capture
        config:
          file_sink: {path_prefix: %s/dn, format: PROTO_BINARY}
          %s
""" % (cap, limits)
    return harness.proxy_config(port, hash_port, admin_port=admin, listener_ts=ts)


def dir_bytes(d):
    total = n = 0
    with os.scandir(d) as it:
        for e in it:
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            total += st.st_size
            n += 1
    return total, n


class Verifier:
    """Decodes every file the hook linked into CHECK, then removes the link."""

    def __init__(self, st_trace, check, tally):
        self.st = st_trace
        self.check = check
        self.tally = tally
        self.counts = collections.Counter()
        self.samples = []
        self.stop = False
        self.pieces = collections.defaultdict(dict)  # conn file stem -> {piece: (read, write)}

    def one(self, path):
        rr = subprocess.run([self.st, "cat", "--direction", "read", path], capture_output=True)
        rw = subprocess.run([self.st, "cat", "--direction", "write", path], capture_output=True)
        if rr.returncode or rw.returncode:
            self.counts["undecodable"] += 1
            if len(self.samples) < 5:
                self.samples.append(path + ": " + (rr.stderr + rw.stderr).decode(errors="replace")[:300])
            return
        self.counts["decoded"] += 1
        self.counts["decoded_bytes"] += os.path.getsize(path)
        up, down = rr.stdout, rw.stdout
        tok = up[:16]
        want = self.tally.hashed.get(tok)
        if want is None:
            self.counts["not_hashed_or_piece"] += 1  # a rotated piece after the first, or the long stream
            return
        if (hashlib.sha256(up).hexdigest(), hashlib.sha256(down).hexdigest()) == want:
            self.counts["bytes_equal"] += 1
        else:
            self.counts["bytes_mismatch"] += 1
            if len(self.samples) < 5:
                self.samples.append("%s: trace bytes differ from what crossed" % path)

    def run(self):
        while True:
            names = sorted(os.listdir(self.check))
            if not names and self.stop:
                return
            for name in names:
                p = os.path.join(self.check, name)
                self.one(p)
                os.unlink(p)
            if not names:
                time.sleep(0.2)


def long_stream(port, deadline, tally):
    """One connection streaming for the whole run (rotated pieces), verified by hash at the end."""
    tok = b"long%012d" % 0
    h = hashlib.sha256()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        chunk = stream(tok, b"up", 1 << 20)
        # the hash server wants the length up front: announce a large upload, then stop early by
        # half-closing; it reports eof (counted as server_saw_*), and the client's own count is
        # what is compared with the trace pieces
        s.sendall(HDR.pack(tok, 1 << 50, 0))
        sent = 0
        while time.time() < deadline:
            s.sendall(chunk)
            h.update(chunk)
            sent += len(chunk)
            time.sleep(0.05)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
        tally.ok("long", sent)
        return sent
    except OSError as e:
        tally.err("long_" + type(e).__name__, str(e))
        return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--budget-mb", type=int, default=1024)
    ap.add_argument("--bulk-mb", type=int, default=16)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--rotate-mb", type=int, default=64)
    ap.add_argument("--dir", default="/var/tmp", help="where the captures go (a disk, not tmpfs)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    if 2 * a.bulk_mb + 1 >= a.rotate_mb:
        ap.error("--rotate-mb must exceed a hashed connection's trace (2 x --bulk-mb): the "
                 "verifier compares whole traces; only the long stream is rotated")
    build = os.path.abspath(a.build)
    harness.BUILD = build
    harness.SOCKTAP = os.path.join(build, "socktap")
    st_trace = os.path.join(build, "socktap-trace")
    budget = a.budget_mb << 20
    work = tempfile.mkdtemp(prefix="socktap-retention-", dir=a.dir)
    cap, check = os.path.join(work, "cap"), os.path.join(work, "check")
    os.mkdir(cap, 0o700)
    os.mkdir(check, 0o700)
    hook = os.path.join(work, "hook.sh")
    with open(hook, "w") as f:
        f.write('#!/bin/sh\nexec ln "$1" %s/\n' % check)
    os.chmod(hook, 0o755)

    procs = harness.Procs()
    tally = Tally()
    srv = HashServer(("127.0.0.1", 0), HashHandler)
    srv.tally = tally
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rc = 1
    try:
        port, admin = harness.free_port(), harness.free_port()
        st = harness.Socktap(procs, work, config(port, srv.server_address[1], cap, hook, admin, budget,
                                                 a.rotate_mb << 20),
                             args=("--concurrency", "2"), wait_ports=[port], admin_port=admin)
        ver = Verifier(st_trace, check, tally)
        vt = threading.Thread(target=ver.run, daemon=True)
        vt.start()
        deadline = time.time() + a.seconds
        peak = [0, 0]
        over = [0]
        samples = [0]
        rss = []

        def sampler():
            while time.time() < deadline + 5:
                b, n = dir_bytes(cap)
                if b > peak[0]:
                    peak[0] = b
                peak[1] = max(peak[1], n)
                if b > budget:
                    over[0] += 1
                samples[0] += 1
                if samples[0] % 50 == 0:
                    rss.append(harness.vm_status(st.pid, "VmRSS"))
                time.sleep(0.2)

        smp = threading.Thread(target=sampler, daemon=True)
        smp.start()

        class L:  # soak.Load's hashed() without its other kinds
            seq = 0
            lock = threading.Lock()

        def hashed_loop():
            n = a.bulk_mb << 20
            while time.time() < deadline:
                with L.lock:
                    L.seq += 1
                    tok = b"rtnt%012d" % L.seq
                up = stream(tok, b"up", n)
                down = stream(tok, b"down", n)
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                        s.sendall(HDR.pack(tok, n, n) + up)
                        got = recv_exact(s, n + 32)
                    if got[:n] != down or got[n:] != hashlib.sha256(up).digest():
                        tally.err("bulk_mismatch", tok.decode())
                        continue
                    with tally.lock:
                        tally.hashed[tok] = (hashlib.sha256(HDR.pack(tok, n, n) + up).hexdigest(),
                                             hashlib.sha256(got).hexdigest())
                    tally.ok("bulk", 2 * n)
                except (OSError, ConnectionError) as e:
                    tally.err("bulk_" + type(e).__name__, str(e))

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(a.clients + 1) as ex:
            futs = [ex.submit(hashed_loop) for _ in range(a.clients)]
            lf = ex.submit(long_stream, port, deadline, tally)
            for f in futs:
                f.result()
            long_sent = lf.result()
        elapsed = time.time() - t0
        time.sleep(3)  # the last hooks
        stats = st.stats()
        src = st.stop()
        ver.stop = True
        vt.join()
        smp.join()
        end_bytes, end_files = dir_bytes(cap)
        print("\n== retention run: %.0f s of bulk capture, budget %d MiB (delete_oldest), rotate %d MiB =="
              % (elapsed, a.budget_mb, a.rotate_mb))
        print("proxied: %d hashed connections verified both ends (%.1f GiB), long stream %.1f MiB"
              % (len(tally.hashed), tally.bytes["bulk"] / (1 << 30), long_sent / (1 << 20)))
        print("prefix dir on disk: peak %.1f MiB in %d files (budget %d MiB), samples over budget: %d of %d; "
              "at the end %.1f MiB in %d files" % (peak[0] / (1 << 20), peak[1], a.budget_mb, over[0],
                                                   samples[0], end_bytes / (1 << 20), end_files))
        print("finished files checked: %d decoded (%.1f GiB), %d byte-equal to the hashed traffic, %d "
              "rotated pieces / long stream, %d undecodable, %d mismatched"
              % (ver.counts["decoded"], ver.counts["decoded_bytes"] / (1 << 30), ver.counts["bytes_equal"],
                 ver.counts["not_hashed_or_piece"], ver.counts["undecodable"], ver.counts["bytes_mismatch"]))
        print("socktap RSS kB samples: %s" % rss)
        for k in sorted(stats):
            if ".capture." in k and stats[k]:
                print("  stat %s = %d" % (k, stats[k]))
        failures = collections.Counter()
        for k, v in tally.errors.items():
            if not k.startswith("server_saw_"):
                failures["client:" + k] += v
        if over[0]:
            failures["over_budget_samples"] += over[0]
        for k in ("undecodable", "bytes_mismatch"):
            if ver.counts[k]:
                failures[k] += ver.counts[k]
        if ver.counts["bytes_equal"] == 0:
            failures["nothing_verified"] += 1
        if src != 0:
            failures["socktap_exit_%s" % src] += 1
        for s in ver.samples:
            print("  sample: %s" % s)
        print("errors: %s" % (dict(failures) or "none"))
        rc = 1 if failures else 0
        print("retention: %s" % ("PASS" if rc == 0 else "FAIL"))
    finally:
        srv.shutdown()
        procs.close()
        if a.keep or rc:
            print("retention: work dir kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

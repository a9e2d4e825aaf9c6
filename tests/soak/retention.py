#!/usr/bin/env python3
"""Retention run (issue 12's "done when"; not part of `make test`): bulk capture for --seconds
under `socktap_limits: {max_total_bytes: BUDGET, policy: delete_oldest}` (plus rotation of a
long-lived connection), and proof that

  - the trace files of the prefix never exceed the budget on disk (sampled every 0.2 s by
    listing the directory ourselves, with socktap stopped for the moment (SIGSTOP) so the view is
    consistent; not from socktap's stats: a bug could agree with itself);
  - every finished trace was readable: the on_finished hook (HOOK below, one python process per
    file, run by socktap) opens the file at once, so delete_oldest cannot take it away, decodes
    both directions from that descriptor (`socktap-trace cat -`) and records their SHA-256;
    the run compares them, for hashed connections, with what the client sent and received.
    The check costs no disk (an earlier version hard-linked the files aside and filled it);
  - every proxied connection's bytes hash equal at both ends (soak.py's hash protocol);
  - socktap's RSS stays flat and it exits 0.

Usage: tests/soak/retention.py --build build [--seconds 600] [--budget-mb 1024]
Loopback only; every process started here is stopped by PID. Prints a summary; exit 0 only if
every check passed."""
import argparse
import collections
import concurrent.futures
import contextlib
import hashlib
import os
import shutil
import signal
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


HOOK = r"""#!/usr/bin/env python3
# on_finished hook of tests/soak/retention.py: decode the finished trace argv[-1] from one open
# descriptor, append "path status head16 sha_read sha_write size" to RESULTS
import hashlib, os, subprocess, sys
path = sys.argv[-1]
try:
    fd = os.open(path, os.O_RDONLY)
except OSError as e:
    line = "%s gone - - - 0" % path
else:
    out, ok = [], True
    for d in ("read", "write"):
        os.lseek(fd, 0, os.SEEK_SET)
        r = subprocess.run([ST, "cat", "--direction", d, "--format", "v2-binary", "-"], stdin=fd,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ok = ok and r.returncode == 0
        out.append(r.stdout)
    line = "%s %s %s %s %s %d" % (path, "ok" if ok else "bad", out[0][:16].hex() or "-",
                                  hashlib.sha256(out[0]).hexdigest(),
                                  hashlib.sha256(out[1]).hexdigest(), os.fstat(fd).st_size)
with open(RESULTS, "a") as f:
    f.write(line + "\n")
"""


def check_results(results, tally):
    """Counts of the hook's verdicts; hashed connections compared with what crossed."""
    counts, samples = collections.Counter(), []
    if not os.path.exists(results):
        return counts, samples
    with open(results) as f:
        for line in f:
            path, status, head, sr, sw, size = line.split()
            counts[status] += 1
            if status != "ok":
                if len(samples) < 5:
                    samples.append("%s: %s" % (path, status))
                continue
            counts["decoded_bytes"] += int(size)
            want = tally.hashed.get(bytes.fromhex(head)) if head != "-" else None
            if want is None:
                counts["not_hashed_or_piece"] += 1  # a rotated piece, or the long stream
            elif (sr, sw) == want:
                counts["bytes_equal"] += 1
            else:
                counts["bytes_mismatch"] += 1
                if len(samples) < 5:
                    samples.append("%s: trace bytes differ from what crossed" % path)
    return counts, samples


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
    budget = a.budget_mb << 20
    work = tempfile.mkdtemp(prefix="socktap-retention-", dir=a.dir)
    # private copies: a rebuild of BUILD during the run must not pull the binaries away (it
    # did: one hook found socktap-trace being relinked)
    for name in ("socktap", "socktap-trace"):
        shutil.copy2(os.path.join(build, name), os.path.join(work, name))
    harness.BUILD = work
    harness.SOCKTAP = os.path.join(work, "socktap")
    st_trace = os.path.join(work, "socktap-trace")
    cap, check = os.path.join(work, "cap"), os.path.join(work, "check")
    os.mkdir(cap, 0o700)
    os.mkdir(check, 0o700)
    hook = os.path.join(work, "hook.py")
    results = os.path.join(check, "results")
    with open(hook, "w") as f:
        f.write(HOOK.replace("ST, ", "%r, " % st_trace).replace("RESULTS", repr(results)))
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
        deadline = time.time() + a.seconds
        peak = [0, 0]
        over = [0]
        samples = [0]
        rss = []

        def stopped(pid):
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")

        def snapshot():
            """The prefix's files with socktap stopped (SIGSTOP): a consistent view. Listing
            a directory while its writer runs over-counts: a file deleted after it was listed
            and another grown before it was stat'ed (measured: +4 MiB under load)."""
            os.kill(st.pid, signal.SIGSTOP)
            try:
                while not stopped(st.pid):
                    time.sleep(0.0005)
                return dir_bytes(cap)
            finally:
                os.kill(st.pid, signal.SIGCONT)

        def sampler():
            while not done_sampling.is_set():
                b, n = snapshot()
                if b > peak[0]:
                    peak[0] = b
                peak[1] = max(peak[1], n)
                if b > budget:
                    over[0] += 1
                samples[0] += 1
                if samples[0] % 50 == 0:
                    with contextlib.suppress(FileNotFoundError):
                        rss.append(harness.vm_status(st.pid, "VmRSS"))
                time.sleep(0.2)

        done_sampling = threading.Event()
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
        # the last hooks
        harness_deadline = time.time() + 60
        while time.time() < harness_deadline:
            stats = st.stats()
            done = sum(v for k, v in stats.items() if k.endswith(("hook_ok", "hook_failed", "hook_timeout",
                                                                  "hook_skipped")))
            if done >= sum(v for k, v in stats.items() if k.endswith(".files_opened")):
                break
            time.sleep(0.5)
        done_sampling.set()
        smp.join()
        src = st.stop()
        counts, vsamples = check_results(results, tally)
        end_bytes, end_files = dir_bytes(cap)
        print("\n== retention run: %.0f s of bulk capture, budget %d MiB (delete_oldest), rotate %d MiB =="
              % (elapsed, a.budget_mb, a.rotate_mb))
        print("proxied: %d hashed connections verified both ends (%.1f GiB), long stream %.1f MiB"
              % (len(tally.hashed), tally.bytes["bulk"] / (1 << 30), long_sent / (1 << 20)))
        print("prefix dir on disk: peak %.1f MiB in %d files (budget %d MiB), samples over budget: %d of %d; "
              "at the end %.1f MiB in %d files" % (peak[0] / (1 << 20), peak[1], a.budget_mb, over[0],
                                                   samples[0], end_bytes / (1 << 20), end_files))
        print("finished files checked by the hook: %d decoded (%.1f GiB), %d byte-equal to the hashed traffic, "
              "%d rotated pieces / long stream, %d undecodable, %d mismatched, %d deleted before the hook "
              "opened them" % (counts["ok"], counts["decoded_bytes"] / (1 << 30), counts["bytes_equal"],
                               counts["not_hashed_or_piece"], counts["bad"], counts["bytes_mismatch"],
                               counts["gone"]))
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
        for k in ("bad", "bytes_mismatch", "gone"):
            if counts[k]:
                failures["trace_" + k] += counts[k]
        for k in ("hook_failed", "hook_timeout", "hook_skipped", "write_errors", "truncated"):
            n = sum(v for name, v in stats.items() if name.endswith("." + k))
            if n:
                failures[k] += n
        if counts["bytes_equal"] == 0:
            failures["nothing_verified"] += 1
        if src != 0:
            failures["socktap_exit_%s" % src] += 1
        for x in vsamples:
            print("  sample: %s" % x)
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

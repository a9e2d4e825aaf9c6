#!/usr/bin/env python3
"""Soak: mixed load through one socktap with capture on both legs, then proof that nothing was
lost or leaked. Loopback only; every process started here is stopped by PID.

Load (until --seconds elapse), spread over plain and TLS listeners:
  short   many short connections to our own hash server (a few KB each way)
  bulk    long streams (MBs each way)
  slow    a client that reads its download slowly (socktap's backpressure)
  reset   clients that vanish with SO_LINGER 0 mid-upload or mid-download
  h1      HTTP/1.1 (python http.client over plain, curl over TLS) to python http.server
  h2      HTTP/2 (h2load, h2c and TLS+ALPN) to nghttpd
The hash protocol makes every byte checkable: the client sends token(16) up_len(8) down_len(8)
and up_len bytes; the server hashes them, answers down_len bytes derived from the token, then
the SHA-256 of what it received, and closes. Both ends therefore verify both directions.

At the end: every hashed connection verified on both ends; every trace file decodes
(`socktap-trace dump`) and, for hashed connections, its bytes per direction (`socktap-trace
cat`) equal what crossed; socktap's descriptor count and RSS back to the baseline taken after
warm-up; socktap exits 0 on SIGTERM; zero sanitizer reports (log_path files). A summary table
goes to stdout. Exit status 0 only if all of that holds.

Rejected: verifying traces against socktap's own counters (a bug could agree with itself)."""
import argparse
import collections
import concurrent.futures
import glob
import hashlib
import http.client
import os
import random
import re
import shutil
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import harness  # noqa: E402

HDR = struct.Struct(">16sQQ")


def stream(token, tag, n):
    return random.Random(token + tag).randbytes(n)


class Tally:
    """Thread-safe counters: connections and bytes by kind, errors by kind."""

    def __init__(self):
        self.lock = threading.Lock()
        self.conns = collections.Counter()
        self.bytes = collections.Counter()
        self.errors = collections.Counter()
        self.samples = collections.defaultdict(list)
        self.hashed = {}  # token -> (sha up stream, sha down stream)

    def ok(self, kind, nbytes):
        with self.lock:
            self.conns[kind] += 1
            self.bytes[kind] += nbytes

    def err(self, kind, detail=""):
        with self.lock:
            self.errors[kind] += 1
            if detail and len(self.samples[kind]) < 3:
                self.samples[kind].append(detail)


class HashHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        tally = self.server.tally
        try:
            hdr = recv_exact(s, HDR.size)
            token, up_len, down_len = HDR.unpack(hdr)
            h = hashlib.sha256()
            left = up_len
            while left:
                b = s.recv(min(left, 65536))
                if not b:
                    raise ConnectionError("eof after %d of %d" % (up_len - left, up_len))
                h.update(b)
                left -= len(b)
            s.sendall(stream(token, b"down", down_len))
            s.sendall(h.digest())
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):  # until the client closes: no RST from unread data
                pass
        except (ConnectionError, OSError) as e:
            tally.err("server_saw_" + type(e).__name__)


class HashServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def recv_exact(s, n):
    out = bytearray()
    while len(out) < n:
        b = s.recv(min(n - len(out), 1 << 20))
        if not b:
            raise ConnectionError("eof after %d of %d bytes" % (len(out), n))
        out += b
    return bytes(out)


class Load:
    def __init__(self, args, ports, tally, client_ctx, docfile_sha, docname):
        self.args = args
        self.ports = ports
        self.tally = tally
        self.ctx = client_ctx
        self.doc_sha = docfile_sha
        self.docname = docname
        self.deadline = time.time() + args.seconds
        self.seq = 0
        self.seq_lock = threading.Lock()

    def token(self):
        with self.seq_lock:
            self.seq += 1
            return b"soak%012d" % self.seq

    def connect(self, tls):
        s = socket.create_connection(("127.0.0.1", self.ports["hash_tls" if tls else "hash"]), timeout=60)
        if tls:
            s = self.ctx.wrap_socket(s, server_hostname="server.test")
        return s

    def hashed(self, kind, tls, up_len, down_len, slow=False):
        tok = self.token()
        up = stream(tok, b"up", up_len)
        down = stream(tok, b"down", down_len)
        hdr = HDR.pack(tok, up_len, down_len)
        try:
            s = self.connect(tls)
            with s:
                s.sendall(hdr + up)
                got = bytearray()
                want = down_len + 32
                while len(got) < want:
                    b = s.recv(16384 if slow else 1 << 20)
                    if not b:
                        break
                    got += b
                    if slow:
                        time.sleep(0.002)
                if len(got) != want:
                    return self.tally.err(kind + "_short_read", "%d of %d" % (len(got), want))
                if bytes(got[:down_len]) != down:
                    return self.tally.err(kind + "_download_mismatch", tok.decode())
                if bytes(got[down_len:]) != hashlib.sha256(up).digest():
                    return self.tally.err(kind + "_upload_mismatch", tok.decode())
            with self.tally.lock:
                self.tally.hashed[tok] = (hashlib.sha256(hdr + up).hexdigest(),
                                          hashlib.sha256(bytes(got)).hexdigest())
            self.tally.ok(kind + ("_tls" if tls else ""), len(hdr) + up_len + want)
        except (OSError, ConnectionError) as e:
            self.tally.err(kind + "_" + type(e).__name__, str(e))

    def reset(self, tls, rng):
        tok = self.token()
        try:
            s = self.connect(tls)
            if rng.random() < 0.5:  # vanish mid-upload
                s.sendall(HDR.pack(tok, 1 << 20, 0) + stream(tok, b"up", rng.randrange(1, 256 << 10)))
            else:  # or mid-download
                s.sendall(HDR.pack(tok, 0, 1 << 20))
                recv_exact(s, rng.randrange(1, 65536))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST, even over TLS: no close_notify (a client that vanished)
            self.tally.ok("reset" + ("_tls" if tls else ""), 0)
        except (OSError, ConnectionError) as e:
            self.tally.err("reset_" + type(e).__name__, str(e))

    def h1_plain(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.ports["h1"], timeout=30)
            c.request("GET", "/" + self.docname, headers={"Connection": "close"})
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status != 200 or hashlib.sha256(body).hexdigest() != self.doc_sha:
                return self.tally.err("h1_mismatch", "status %d len %d" % (r.status, len(body)))
            self.tally.ok("h1", len(body))
        except (OSError, http.client.HTTPException) as e:
            self.tally.err("h1_" + type(e).__name__, str(e))

    def h1_tls_curl(self):
        r = subprocess.run(["curl", "-sk", "--http1.1", "--max-time", "30", "https://127.0.0.1:%d/%s"
                            % (self.ports["h1_tls"], self.docname)], capture_output=True)
        if r.returncode != 0 or hashlib.sha256(r.stdout).hexdigest() != self.doc_sha:
            return self.tally.err("h1_tls_curl", "rc %d len %d" % (r.returncode, len(r.stdout)))
        self.tally.ok("h1_tls", len(r.stdout))

    def h2load(self, tls):
        url = "%s://127.0.0.1:%d/%s" % ("https" if tls else "http",
                                         self.ports["h2_tls" if tls else "h2"], self.docname)
        r = subprocess.run(["h2load", "-n", "40", "-c", "4", "-m", "4", "-T", "30", url],
                           capture_output=True, text=True)
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      r.stdout)
        kind = "h2_tls" if tls else "h2"
        if r.returncode != 0 or not m or int(m.group(3)) != int(m.group(1)):
            return self.tally.err(kind + "_failed", (m.group(0) if m else r.stdout[-200:]))
        tb = re.search(r"traffic: .*?\((\d+)\) total", r.stdout)
        with self.tally.lock:
            self.tally.conns[kind] += 4
            self.tally.bytes[kind] += int(tb.group(1)) if tb else 0

    def worker(self, name, fn):
        rng = random.Random(name)
        while time.time() < self.deadline:
            fn(rng)

    def run(self):
        a = self.args
        jobs = {
            "short": lambda rng: self.hashed("short", rng.random() < 0.4, rng.randrange(0, 4096),
                                             rng.randrange(0, 16384)),
            "short2": lambda rng: self.hashed("short", rng.random() < 0.4, rng.randrange(0, 4096),
                                              rng.randrange(0, 16384)),
            # Paced: capture on both legs writes ~4x each bulk stream to disk.
            "bulk": lambda rng: (self.hashed("bulk", rng.random() < 0.5, a.bulk_mb << 20, a.bulk_mb << 20),
                                 time.sleep(0.2)),
            "slow": lambda rng: self.hashed("slow", rng.random() < 0.5, 4096, (a.bulk_mb << 20) // 4,
                                            slow=True),
            "reset": lambda rng: (self.reset(rng.random() < 0.5, rng), time.sleep(0.05)),
            "h1": lambda rng: (self.h1_plain(), self.h1_tls_curl()),
            "h2": lambda rng: (self.h2load(False), self.h2load(True), time.sleep(0.5)),
        }
        ts = [threading.Thread(target=self.worker, args=(n, f), name=n) for n, f in jobs.items()]
        for t in ts:
            t.start()
        for t in ts:
            t.join()


def config(ports, up, pki, cap, admin):
    certs = ("{tls_certificates: [{certificate_chain: {filename: %s/server.pem}, "
             "private_key: {filename: %s/server.key}}], alpn_protocols: [h2, http/1.1]}" % (pki, pki))

    def listener(name, port, cluster, tls, fmt):
        inner = ("{name: tls, config: {common_tls_context: %s}}" % certs) if tls else "{name: raw_buffer}"
        return ("  - name: %s\n    address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n"
                "    filter_chains:\n    - filters: [{name: envoy.tcp_proxy, config: {stat_prefix: %s, cluster: %s}}]\n"
                "      transport_socket:\n        name: envoy.transport_sockets.capture\n"
                "        config: {file_sink: {path_prefix: \"%s/dn_%s\", format: %s}, transport_socket: %s}\n"
                % (name, port, name, cluster, cap, name, fmt, inner))

    def cluster(name, port, fmt):
        return ("  - name: %s\n    connect_timeout: 5s\n    hosts: [{socket_address: {address: 127.0.0.1, port_value: %d}}]\n"
                "    transport_socket:\n      name: envoy.transport_sockets.tap\n      typed_config:\n"
                "        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap\n"
                "        common_config: {static_config: {match: {any_match: true}, output_config: "
                "{sinks: [{format: %s, file_per_tap: {path_prefix: \"%s/up_%s\"}}], streaming: true, "
                "max_buffered_rx_bytes: 4294967295, max_buffered_tx_bytes: 4294967295}}}\n"
                "        transport_socket: {name: raw_buffer}\n" % (name, port, fmt, cap, name))

    return ("static_resources:\n  listeners:\n"
            + listener("hash", ports["hash"], "hash", False, "PROTO_BINARY")
            + listener("hash_tls", ports["hash_tls"], "hash", True, "PROTO_BINARY")
            + listener("h1", ports["h1"], "http", False, "PROTO_TEXT")
            + listener("h1_tls", ports["h1_tls"], "http", True, "PROTO_BINARY")
            + listener("h2", ports["h2"], "h2", False, "PROTO_BINARY")
            + listener("h2_tls", ports["h2_tls"], "h2", True, "PROTO_BINARY")
            + "  clusters:\n"
            + cluster("hash", up["hash"], "PROTO_BINARY_LENGTH_DELIMITED")
            + cluster("http", up["http"], "JSON_BODY_AS_BYTES")
            + cluster("h2", up["h2"], "PROTO_BINARY_LENGTH_DELIMITED")
            + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % admin)


def verify_traces(build, cap, tally, jobs):
    """Returns (files, decoded, matched hashed legs, errors Counter, samples). BUILD's
    socktap-trace reads the traces: a normal build by default (the readers are fuzzed and run
    under the sanitizers elsewhere; an ASan reader per file made checking 100k traces take
    longer than the soak)."""
    st = harness.tool("socktap-trace") if build is None else os.path.join(build, "socktap-trace")
    files = sorted(glob.glob(os.path.join(cap, "*")))
    errors = collections.Counter()
    samples = []
    legs = collections.Counter()

    def one(path):
        base = os.path.basename(path)
        if not (base.startswith("dn_hash") or base.startswith("up_hash")):
            r = subprocess.run([st, "dump", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                return ("trace_undecodable", path + ": " + r.stderr.strip()[:200])
            return None
        # cat decodes the whole trace too: a failure is an undecodable trace
        rr = subprocess.run([st, "cat", "--direction", "read", path], capture_output=True)
        rw = subprocess.run([st, "cat", "--direction", "write", path], capture_output=True)
        for r in (rr, rw):
            if r.returncode != 0:
                return ("trace_undecodable", path + ": " + r.stderr.decode(errors="replace").strip()[:200])
        rd, wr = rr.stdout, rw.stdout
        up_stream, down_stream = (rd, wr) if base.startswith("dn_") else (wr, rd)
        tok = up_stream[:16]
        want = tally.hashed.get(tok)
        if want is None:
            return ("leg_unhashed", None)  # resets and failed connections: decodable is enough
        if (hashlib.sha256(up_stream).hexdigest(), hashlib.sha256(down_stream).hexdigest()) != want:
            return ("trace_bytes_mismatch", "%s (token %s): up %d down %d bytes" % (path, tok, len(up_stream), len(down_stream)))
        return ("leg_ok_" + base[:2], tok)

    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        for res in ex.map(one, files):
            if res is None:
                continue
            kind, detail = res
            if kind.startswith("leg_ok_"):
                legs[(detail, kind)] += 1
                errors["_legs_ok"] += 1
            elif kind == "leg_unhashed":
                errors["_legs_unhashed"] += 1
            else:
                errors[kind] += 1
                if len(samples) < 5:
                    samples.append(detail)
    # Both legs of every hashed connection must be there, exactly once each.
    for tok in tally.hashed:
        for leg in ("leg_ok_dn", "leg_ok_up"):
            if legs.get((tok, leg), 0) != 1:
                errors["trace_missing_" + leg[7:]] += 1
                if len(samples) < 5:
                    samples.append("%s: %s found %d times" % (tok, leg, legs.get((tok, leg), 0)))
    return files, errors, samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--trace-build", default=None,
                    help="build whose socktap-trace checks the traces (default: --build)")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--bulk-mb", type=int, default=4)
    ap.add_argument("--rss-slack-mb", type=int, default=64)
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    os.environ["SOCKTAP_BUILD"] = build
    harness.BUILD = build
    harness.SOCKTAP = os.path.join(build, "socktap")
    work = tempfile.mkdtemp(prefix="socktap-soak-")
    cap = os.path.join(work, "cap")
    os.mkdir(cap, 0o700)
    pki = os.path.join(work, "pki")
    subprocess.run(["sh", os.path.join(ROOT, "tests", "unit", "tls", "gen_certs.sh"), pki], check=True)
    doc = os.path.join(work, "doc")
    os.mkdir(doc)
    body = random.Random(1).randbytes(48 << 10)
    with open(os.path.join(doc, "f.bin"), "wb") as f:
        f.write(body)
    san_dir = os.path.join(work, "san")
    os.mkdir(san_dir)

    procs = harness.Procs()
    tally = Tally()
    srv = HashServer(("127.0.0.1", 0), HashHandler)
    srv.tally = tally
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    rc = 1
    try:
        up = {"hash": srv.server_address[1], "http": harness.free_port(), "h2": harness.free_port()}
        procs.start([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "-d", doc, str(up["http"])])
        procs.start(["nghttpd", "--no-tls", "-d", doc, str(up["h2"])])
        harness.wait_port(up["http"])
        harness.wait_port(up["h2"])
        ports = {k: harness.free_port() for k in ("hash", "hash_tls", "h1", "h1_tls", "h2", "h2_tls")}
        admin = harness.free_port()
        env = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16:log_path=%s/asan" % san_dir,
               "UBSAN_OPTIONS": "print_stacktrace=1:log_path=%s/ubsan" % san_dir}
        st = harness.Socktap(procs, work, config(ports, up, pki, cap, admin),
                             args=("--concurrency", "2", "--drain-time-s", "2"),
                             wait_ports=list(ports.values()), admin_port=admin, env=env)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        load = Load(a, ports, tally, ctx, hashlib.sha256(body).hexdigest(), "f.bin")
        # Warm-up: every path once, so lazily allocated state is in the baseline.
        rng = random.Random(0)
        for tls in (False, True):
            load.hashed("short", tls, 1000, 1000)
            load.hashed("bulk", tls, 1 << 20, 1 << 20)
            load.reset(tls, rng)
        load.h1_plain()
        load.h1_tls_curl()
        load.h2load(False)
        load.h2load(True)
        time.sleep(2)
        fd0, rss0 = harness.fd_count(st.pid), harness.vm_status(st.pid, "VmRSS")
        print("soak: baseline after warm-up: %d fds, RSS %d kB; running %d s" % (fd0, rss0, a.seconds), flush=True)
        load.deadline = time.time() + a.seconds
        t0 = time.time()
        load.run()
        elapsed = time.time() - t0
        # Back to baseline: connections close asynchronously; allow a few seconds.
        deadline = time.time() + 20
        while time.time() < deadline and harness.fd_count(st.pid) > fd0:
            time.sleep(0.2)
        fd1, rss1 = harness.fd_count(st.pid), harness.vm_status(st.pid, "VmRSS")
        hwm = harness.vm_status(st.pid, "VmHWM")
        stats = st.stats()
        src = st.stop()
        files, terr, tsamples = verify_traces(a.trace_build or build, cap, tally, 2)
        sanitizer = sorted(glob.glob(os.path.join(san_dir, "*")))

        # ---- summary ----
        print("\n== soak summary (%.0f s of load, build %s) ==" % (elapsed, build))
        print("%-14s %10s %14s" % ("kind", "conns", "bytes"))
        for k in sorted(tally.conns):
            print("%-14s %10d %14d" % (k, tally.conns[k], tally.bytes[k]))
        print("%-14s %10d %14d" % ("TOTAL", sum(tally.conns.values()), sum(tally.bytes.values())))
        print("hashed connections verified both ends: %d" % len(tally.hashed))
        print("trace files: %d (%.1f GiB); hashed legs byte-equal: %d; other legs of the hash listener "
              "(resets): %d" % (len(files), sum(os.path.getsize(f) for f in files) / (1 << 30),
                                terr.pop("_legs_ok", 0), terr.pop("_legs_unhashed", 0)))
        print("socktap fds: baseline %d, end %d; RSS kB: baseline %d, end %d, peak %d"
              % (fd0, fd1, rss0, rss1, hwm))
        keys = ("downstream_cx_total", "upstream_cx_total", "upstream_cx_connect_fail", "handshake_error",
                "connection_error", "write_errors", "dropped", "backpressure")
        for k in sorted(stats):
            if any(x in k for x in keys) and stats[k]:
                print("  stat %s = %d" % (k, stats[k]))
        failures = collections.Counter()
        benign = {k: v for k, v in tally.errors.items() if k.startswith("server_saw_")}
        for k, v in tally.errors.items():
            if k not in benign:
                failures["client:" + k] += v
        for k, v in terr.items():
            failures[k] += v
        if fd1 > fd0:
            failures["fd_leak"] += fd1 - fd0
        if rss1 > rss0 + a.rss_slack_mb * 1024:
            failures["rss_growth_kB"] += rss1 - rss0
        if src != 0:
            failures["socktap_exit_%s" % src] += 1
        if sanitizer:
            failures["sanitizer_reports"] += len(sanitizer)
        print("expected errors (server saw client resets): %s" % (dict(benign) or "none"))
        print("errors by kind: %s" % (dict(failures) or "none"))
        for k, v in tally.samples.items():
            if k not in benign:
                print("  sample %s: %s" % (k, v))
        for s in tsamples:
            print("  sample trace: %s" % s)
        for p in sanitizer[:3]:
            print("  sanitizer report %s:\n%s" % (p, open(p, errors="replace").read()[:3000]))
        rc = 1 if failures else 0
        print("soak: %s" % ("PASS" if rc == 0 else "FAIL"))
    finally:
        srv.shutdown()
        procs.close()
        if a.keep or rc:
            print("soak: work dir kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())

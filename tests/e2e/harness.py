"""End-to-end test harness: real processes on loopback, free ports, cleanup by PID.

Every test file is a unittest module run by CTest as `python3 test_x.py` with SOCKTAP_BUILD set
to the build directory. Processes started through Procs are killed (by PID, then their process
group) when the test ends, pass or fail.
"""
import contextlib
import hashlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("SOCKTAP_BUILD", os.path.join(ROOT, "build"))
SOCKTAP = os.path.join(BUILD, "socktap")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")


def tool(name):
    """Path of a built binary (socktap, capture2pcap, socktap-trace)."""
    return os.path.join(BUILD, name)


_given_ports = set()


def _unassigned_ports():
    """Ports outside the kernel's ephemeral range (ip_local_port_range): a port from that range,
    free when we looked, can be taken by any outgoing connect before the program we hand it to
    binds it (seen in CI with two suites at once: socktap's admin got "Address already in use")."""
    lo, hi = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    if lo - 1 >= 12000:
        return 10000, lo - 1
    return hi + 1, 65535


def free_port(host="127.0.0.1"):
    """A port nothing listens on now, outside the ephemeral range (_unassigned_ports), and that
    this process has not handed out before: two calls in a row could otherwise give the same
    port, and a listener and its admin then collide (seen in CI as "admin address ... is also
    listener 0's address"). Chosen at random, so test processes running at once rarely try the
    same one; each is bound once to make sure it is free."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    lo, hi = _unassigned_ports()
    for _ in range(1000):
        port = random.randint(lo, hi)
        if port in _given_ports:
            continue
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError("no free port in %d-%d after 1000 tries" % (lo, hi))


def wait_port(port, host="127.0.0.1", timeout=10.0, proc=None):
    deadline = time.time() + timeout
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before listening on %d" % (proc.returncode, port))
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            try:
                s.connect((host, port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError("nothing listening on %s:%d after %.1fs" % (host, port, timeout))


def validate(dirpath, name, text):
    """Writes config TEXT to DIRPATH/NAME and runs `socktap --mode validate` on it: the
    CompletedProcess (text output)."""
    path = os.path.join(dirpath, name)
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run([SOCKTAP, "--mode", "validate", "-c", path], capture_output=True,
                          text=True, timeout=30)


def http(url, data=None, method=None, timeout=10):
    """(status, body text) of one request; an HTTP error status is a result, not an exception."""
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def varint(n):
    """N as a protobuf base-128 varint (for traces built by hand in tests)."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def vm_status(pid, key):
    """VmRSS/VmHWM etc. of PID in kB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def _die_with_parent():
    """preexec_fn: the child gets SIGKILL when the test process dies, even if the test runner
    itself was killed (CTest timeout) and no cleanup code ran."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Procs:
    """Starts processes and kills every one of them, by PID, on close()."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log=None, **kw):
        out = open(log, "wb") if log else subprocess.DEVNULL
        kw.setdefault("preexec_fn", _die_with_parent)
        kw.setdefault("stdout", out)  # a caller may read it (subprocess.PIPE) instead
        kw.setdefault("stderr", subprocess.STDOUT if log else subprocess.DEVNULL)
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        if log:
            out.close()  # the child holds its own copy
        p.log_path = log
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=10):
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        return p.returncode

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)
        self.procs = []


class Socktap:
    """A running socktap with a generated config."""

    def __init__(self, procs, workdir, config, args=(), wait_ports=(), admin_port=None, env=None):
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "socktap-%d.yaml" % time.time_ns())
        with open(self.config_path, "w") as f:
            f.write(config)
        self.log = self.config_path + ".log"
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        if env:
            e.update(env)
        self.procs = procs
        self.proc = procs.start([SOCKTAP, "-c", self.config_path, *args], log=self.log, env=e)
        self.pid = self.proc.pid
        self.admin_port = admin_port
        # Readiness comes from the log, not from probing the proxy port: a probe is a real
        # connection (it would open an upstream connection and count in the stats).
        self.wait_log("listening on")
        for port in wait_ports:
            wait_port(port, proc=self.proc)
        if admin_port:
            wait_port(admin_port, proc=self.proc)

    def wait_log(self, text, timeout=15.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.logtext():
                return
            if self.proc.poll() is not None:
                raise RuntimeError("socktap exited with %s: %s" % (self.proc.returncode, self.logtext()))
            time.sleep(0.02)
        raise RuntimeError("socktap did not log %r within %.0fs: %s" % (text, timeout, self.logtext()))

    def stats(self):
        """Admin /stats as a dict name -> int."""
        body = urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.admin_port, timeout=5).read()
        out = {}
        for line in body.decode().splitlines():
            if ": " in line:
                k, v = line.rsplit(": ", 1)
                with contextlib.suppress(ValueError):
                    out[k] = int(v)
        return out

    def wait_stat(self, name, pred, timeout=20.0):
        """Polls /stats until PRED(value of NAME) holds; returns the value (AssertionError after
        TIMEOUT seconds)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.stats().get(name)
            if v is not None and pred(v):
                return v
            time.sleep(0.05)
        raise AssertionError("%s: %r" % (name, self.stats().get(name)))

    def stop(self, sig=signal.SIGTERM, timeout=20):
        rc = self.procs.stop(self.proc, sig, timeout)
        if rc not in (0, -signal.SIGKILL) and sig == signal.SIGTERM:
            # a sanitizer report or a fatal error: show it in the test output
            sys.stderr.write("socktap exited with %s; its log (%s):\n%s\n" % (rc, self.log, self.logtext()[-20000:]))
        return rc

    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")


def proxy_config(listen_port, upstream_port, admin_port=None, host="127.0.0.1", upstream_host="127.0.0.1",
                 listener_extra="", cluster_extra="", proxy_extra="", listener_ts="", cluster_ts=""):
    """A one-listener, one-cluster tcp_proxy config (v2 shapes). *_ts are YAML snippets for
    transport_socket, already indented for their place (6 spaces in the filter chain, 4 in cluster)."""
    admin = ""
    if admin_port:
        admin = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % admin_port
    return """static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: "%s", port_value: %d}}
%s    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config:
          stat_prefix: ingress_tcp
          cluster: backend
%s%s
  clusters:
  - name: backend
    connect_timeout: 1s
    type: STATIC
    lb_policy: ROUND_ROBIN
    hosts: [{socket_address: {address: "%s", port_value: %d}}]
%s%s
%s""" % (host, listen_port, listener_extra, proxy_extra, listener_ts, upstream_host, upstream_port,
         cluster_extra, cluster_ts, admin)


class E2ETest(unittest.TestCase):
    """Base class: a temp dir and a Procs per test, cleaned up whatever happens."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="socktap-e2e-")
        # the first cleanup runs last (after the processes are stopped and tmpfs unmounted)
        self.addCleanup(self._remove_tmp)
        self.procs = Procs()
        self.addCleanup(self.procs.close)

    def _remove_tmp(self):
        """Removes the temp dir of a test that passed (the suite wrote ~37 GB of them into /tmp
        over a day: some tests leave GiB-sized traces); a failed test's stays for debugging,
        its path in the output; SOCKTAP_KEEP_TMP=1 keeps every one."""
        outcome = getattr(self, "_outcome", None)
        result = getattr(outcome, "result", None)
        failed = (outcome is None or result is None or not outcome.success or
                  any(t is self or getattr(t, "test_case", None) is self
                      for t, _ in result.failures + result.errors))
        if os.environ.get("SOCKTAP_KEEP_TMP") or failed:
            sys.stderr.write("\n%s: temp dir kept: %s\n" % (self.id(), self.tmp))
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_http_upstream(self, directory=None, host="127.0.0.1"):
        port = free_port(host)
        d = directory or self.tmp
        p = self.procs.start([sys.executable, "-m", "http.server", "--bind", host, "--directory", d, str(port)])
        wait_port(port, host=host, proc=p)
        return port, p

    def socktap(self, config, **kw):
        return Socktap(self.procs, self.tmp, config, **kw)


def main():
    unittest.main(verbosity=2)

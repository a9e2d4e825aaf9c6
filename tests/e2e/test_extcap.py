"""socktap-extcap, the Wireshark extcap (socktap extension), driven by a real tshark.

tshark 4.0 (Debian bookworm) finds extcaps in its global directory and in the personal one,
$XDG_CONFIG_HOME/wireshark/extcap (else ~/.config/wireshark/extcap): verified with strace, and
WIRESHARK_EXTCAP_DIR is ignored when tshark runs as root (CI does), so each test gives tshark a
HOME and XDG_CONFIG_HOME of its own whose extcap directory holds a link to the built extcap.
Error paths are driven the way tshark drives them: a fifo whose reader is open, the same
arguments tshark passes (seen with a logging stub: --capture --extcap-interface IF --fifo PATH
--admin DEFAULT)."""
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config  # noqa: E402
from test_capture import capture_ts  # noqa: E402

EXTCAP = harness.tool("socktap-extcap")


def extcap_procs(path):
    """PIDs of live processes whose argv[0] is PATH (this test's link to the extcap)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv0 = f.read().split(b"\0")[0]
            with open("/proc/%s/stat" % pid) as f:
                zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            continue
        if argv0 == path.encode() and not zombie:
            out.append(int(pid))
    return out


class ExtcapTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.home = os.path.join(self.tmp, "home")
        d = os.path.join(self.home, ".config", "wireshark", "extcap")
        os.makedirs(d)
        self.link = os.path.join(d, "socktap-extcap")
        os.symlink(EXTCAP, self.link)

    def start(self, listener_ts=None, cluster_ts=""):
        self.lp, self.ap = free_port(), free_port()
        upstream_port, _ = self.start_http_upstream()
        if listener_ts is None:
            listener_ts = capture_ts(os.path.join(self.tmp, "cap"))
        cfg = proxy_config(self.lp, upstream_port, admin_port=self.ap, listener_ts=listener_ts,
                           cluster_ts=cluster_ts)
        self.st = self.socktap(cfg, admin_port=self.ap)
        self.admin = "127.0.0.1:%d" % self.ap
        return self.st

    def env(self, admin=None):
        e = dict(os.environ)
        e.update(HOME=self.home, XDG_CONFIG_HOME=os.path.join(self.home, ".config"))
        e.pop("SOCKTAP_ADMIN", None)
        if admin:
            e["SOCKTAP_ADMIN"] = admin
        return e

    def extcap(self, *args, admin=None, timeout=30):
        return subprocess.run([EXTCAP, *args], capture_output=True, text=True, timeout=timeout,
                              env=self.env(admin), stdin=subprocess.DEVNULL)

    def tshark_D(self):
        r = subprocess.run(["tshark", "-D"], capture_output=True, text=True, timeout=120,
                           env=self.env(self.admin))
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def wait_stat(self, name, pred, timeout=60):
        return self.st.wait_stat(name, pred, timeout)

    def curl(self, path, *extra, url=None):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", *extra, url or "http://127.0.0.1:%d%s" % (self.lp, path)],
                           capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def capture(self, iface, during, seconds=10):
        """tshark -i IFACE -a duration:SECONDS -w FILE; DURING() runs once the extcap's stream is
        open (the admin counts it). Returns (FILE, tshark's stderr)."""
        out = os.path.join(self.tmp, "%s-%d.pcapng" % (iface, time.time_ns()))
        p = self.procs.start(["tshark", "-i", iface, "-a", "duration:%d" % seconds, "-w", out],
                             env=self.env(self.admin), stderr=subprocess.PIPE)
        self.addCleanup(p.stderr.close)
        err = []
        t = threading.Thread(target=lambda: err.append(p.stderr.read().decode(errors="replace")), daemon=True)
        t.start()
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        self.assertEqual(len(extcap_procs(self.link)), 1)
        during()
        self.assertEqual(p.wait(120), 0, err)
        t.join(10)
        # The extcap ended with the capture, and its stream with it.
        deadline = time.time() + 20
        while extcap_procs(self.link) and time.time() < deadline:
            time.sleep(0.05)
        self.assertEqual(extcap_procs(self.link), [])
        self.wait_stat("admin.live.viewers", lambda v: v == 0)
        self.assertNotIn("extcap", err[0])  # "Error by extcap pipe: ..." is how tshark says it
        return out, err[0]

    def fields(self, path, *fields, dfilter=None, proto="http"):
        args = ["tshark", "-r", path, "-n", "-d", "tcp.port==%d,%s" % (self.lp, proto), "-T", "fields"]
        for f in fields:
            args += ["-e", f]
        if dfilter:
            args += ["-Y", dfilter]
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    # -- listing -----------------------------------------------------------------------------

    def test_interfaces_listed_by_tshark(self):
        self.start(cluster_ts=capture_ts(os.path.join(self.tmp, "up"), indent=4))
        r = self.extcap("--extcap-interfaces", "--extcap-version=4.0", admin=self.admin)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines(), [
            "extcap {version=0.1.0}{display=socktap live capture}",
            "interface {value=socktap.listener.ingress}{display=socktap listener ingress}",
            "interface {value=socktap.cluster.backend}{display=socktap cluster backend}"])
        self.assertEqual(r.stderr, "")
        listed = self.tshark_D()
        self.assertIn("socktap.listener.ingress (socktap listener ingress)", listed)
        self.assertIn("socktap.cluster.backend (socktap cluster backend)", listed)
        r = self.extcap("--extcap-dlts", "--extcap-interface", "socktap.cluster.backend")
        self.assertEqual((r.returncode, r.stdout), (0, "dlt {number=1}{name=EN10MB}{display=Ethernet}\n"))

    def test_no_socktap_lists_nothing_quietly(self):
        port = free_port()  # nothing listens there
        r = self.extcap("--extcap-interfaces", admin="127.0.0.1:%d" % port)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(r.stdout, "extcap {version=0.1.0}{display=socktap live capture}\n")
        self.assertEqual(r.stderr, "")  # tshark shows an extcap's stderr at every listing
        # An address that is no address is a misconfiguration: said.
        r = self.extcap("--extcap-interfaces", admin="127.0.0.1")
        self.assertEqual(r.returncode, 0)
        self.assertIn("bad admin address '127.0.0.1' (want HOST:PORT)", r.stderr)

    def test_wire_interface(self):
        import test_tls as T
        pki = os.path.join(self.tmp, "pki")
        subprocess.run(["sh", T.GEN, pki], check=True, capture_output=True)
        wire = os.path.join(self.tmp, "wire")
        self.start(listener_ts=T.listener_tls(pki, extra="socktap_wire_capture: {path_prefix: %s}, " % wire))
        self.assertIn("socktap.listener-wire.ingress (socktap listener ingress (TLS wire))", self.tshark_D())
        https = ["--cacert", os.path.join(pki, "ca.pem"), "--resolve", "server.test:%d:127.0.0.1" % self.lp]
        path, _ = self.capture("socktap.listener-wire.ingress", lambda: self.curl(
            None, *https, url="https://server.test:%d/" % self.lp))
        # What crossed the socket: TLS records, the ClientHello first; no plaintext HTTP.
        hs = self.fields(path, "tls.handshake.type", dfilter="tls.handshake", proto="tls")
        self.assertEqual(hs.split()[0], "1", hs)
        self.assertEqual(self.fields(path, "frame.number", dfilter="http", proto="tls"), "")

    # -- capturing ---------------------------------------------------------------------------

    def test_tshark_captures_requests_made_meanwhile(self):
        for n in ("one", "two", "three"):
            with open(os.path.join(self.tmp, n + ".txt"), "w") as f:
                f.write(n * 100)
        self.start()
        uris = ["/one.txt", "/two.txt?x=1", "/three.txt"]
        path, err = self.capture("socktap.listener.ingress", lambda: [self.curl(u) for u in uris])
        self.assertIn("Capturing on 'socktap listener ingress: socktap.listener.ingress'", err)
        got = self.fields(path, "http.request.uri", dfilter="http.request").split()
        self.assertEqual(got, uris)
        self.assertEqual(self.fields(path, "frame.number", dfilter="_ws.malformed || _ws.expert.severity >= 0x00800000"), "")
        # Responses too, and the interface socktap names in the stream.
        self.assertEqual(self.fields(path, "http.response.code", dfilter="http.response").split(), ["200"] * 3)
        self.assertEqual(set(self.fields(path, "frame.interface_name").split()), {"downstream:ingress"})

    def test_idle_capture_stops_cleanly(self):
        self.start()
        t0 = time.time()
        path, _ = self.capture("socktap.listener.ingress", lambda: None, seconds=3)
        self.assertLess(time.time() - t0, 100)  # bounded, whatever the load: it ended at all
        r = subprocess.run(["capinfos", "-c", "-M", path], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("Number of packets:   0", r.stdout)

    def fifo_capture(self, iface, *extra, admin=None):
        """The extcap started as tshark starts it: (process, reader thread's bytes)."""
        fifo = os.path.join(self.tmp, "fifo-%d" % time.time_ns())
        os.mkfifo(fifo)
        p = self.procs.start([EXTCAP, "--capture", "--extcap-interface", iface, "--fifo", fifo,
                              "--admin", admin or self.admin, *extra],
                             env=self.env(), stderr=subprocess.PIPE)
        self.addCleanup(p.stderr.close)
        fd = os.open(fifo, os.O_RDONLY)
        return p, fd

    def test_sigterm_or_reader_gone_ends_an_idle_capture(self):
        self.start()
        p, fd = self.fifo_capture("socktap.listener.ingress")
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        head = os.read(fd, 4)
        self.assertEqual(head, b"\x0a\x0d\x0d\x0a")  # pcapng section header block
        os.kill(p.pid, signal.SIGTERM)  # no traffic: the extcap is waiting on the stream
        self.assertEqual(p.wait(20), 0, p.stderr.read())
        self.assertEqual(p.stderr.read(), b"")
        os.close(fd)
        self.wait_stat("admin.live.viewers", lambda v: v == 0)
        # dumpcap closing the fifo (what tshark does first) is a stop as well.
        p, fd = self.fifo_capture("socktap.listener.ingress")
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        os.read(fd, 4)
        os.close(fd)
        self.assertEqual(p.wait(20), 0, p.stderr.read())
        self.assertEqual(p.stderr.read(), b"")
        self.wait_stat("admin.live.viewers", lambda v: v == 0)

    def test_errors_and_exit_codes(self):
        self.start()
        # A name socktap does not have (an interface that went away with a new config): the
        # admin's 404 text, exit 1.
        p, fd = self.fifo_capture("socktap.listener.nope")
        self.assertEqual(p.wait(30), 1)
        self.assertEqual(os.read(fd, 100), b"")  # the reader sees the end, no hang
        os.close(fd)
        self.assertEqual(p.stderr.read().decode(),
                         "socktap-extcap: GET /capture/live.pcapng?listener=nope from %s answered 404: "
                         "no listener named 'nope' (see /capture/live)\n" % self.admin)
        # No admin there: exit 1, said.
        dead = "127.0.0.1:%d" % free_port()
        p, fd = self.fifo_capture("socktap.listener.ingress", admin=dead)
        self.assertEqual(p.wait(30), 1)
        os.close(fd)
        self.assertEqual(p.stderr.read().decode(),
                         "socktap-extcap: cannot reach socktap's admin at %s: Connection refused\n" % dead)
        # Not an interface of ours: usage, exit 2.
        for iface in ("eth0", "socktap.x", "socktap.router.a", "socktap.listener."):
            r = self.extcap("--capture", "--extcap-interface", iface, "--fifo", os.path.join(self.tmp, "nofifo"))
            self.assertEqual(r.returncode, 2, iface)
            self.assertIn("unknown interface '%s'" % iface, r.stderr)
        r = self.extcap("--capture", "--extcap-interface", "socktap.listener.ingress")
        self.assertEqual((r.returncode, r.stderr), (2, "socktap-extcap: --capture needs --fifo\n"))
        r = self.extcap("--frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)
        # Capture filters: Wireshark's check gets a reason on stdout; a capture refuses one.
        r = self.extcap("--extcap-capture-filter", "tcp port 80", "--extcap-interface", "socktap.listener.ingress")
        self.assertEqual((r.returncode, r.stdout), (0, "socktap-extcap has no capture filters; use a display filter\n"))
        r = self.extcap("--extcap-capture-filter", "", "--extcap-interface", "socktap.listener.ingress")
        self.assertEqual((r.returncode, r.stdout), (0, ""))
        r = self.extcap("--capture", "--extcap-interface", "socktap.listener.ingress", "--fifo", "x",
                        "--extcap-capture-filter", "port 1")
        self.assertEqual(r.returncode, 2)
        self.assertIn("no capture filters", r.stderr)
        # socktap going away mid-capture ends it with exit 1 and says so (tshark shows it).
        p, fd = self.fifo_capture("socktap.listener.ingress")
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        self.assertEqual(self.st.stop(), 0)
        self.assertEqual(p.wait(30), 1)
        os.close(fd)
        self.assertEqual(p.stderr.read().decode(),
                         "socktap-extcap: socktap at %s ended the stream of socktap.listener.ingress\n" % self.admin)

    def test_config_and_admin_address(self):
        self.start()
        r = self.extcap("--extcap-config", "--extcap-interface", "socktap.listener.ingress", admin=self.admin)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("arg {number=0}{call=--admin}{display=socktap admin address}"
                                            "{type=string}{default=%s}" % self.admin), lines)
        self.assertTrue(lines[1].startswith("arg {number=1}{call=--max-bytes}"), lines)
        # Without $SOCKTAP_ADMIN: ~/.config/socktap/extcap.conf, else the default address.
        r = self.extcap("--extcap-config")
        self.assertIn("{default=127.0.0.1:9901}", r.stdout)
        conf = os.path.join(self.home, ".config", "socktap")
        os.makedirs(conf)
        with open(os.path.join(conf, "extcap.conf"), "w") as f:
            f.write("# the admin of the socktap on this box\n\nadmin = %s\n" % self.admin)
        r = self.extcap("--extcap-config")
        self.assertIn("{default=%s}" % self.admin, r.stdout)
        r = self.extcap("--extcap-interfaces")
        self.assertIn("{value=socktap.listener.ingress}", r.stdout)
        self.assertIn("socktap.listener.ingress", self.tshark_D())
        with open(os.path.join(conf, "extcap.conf"), "a") as f:
            f.write("adminn = 1.2.3.4:5\n")
        r = self.extcap("--extcap-interfaces")
        self.assertEqual(r.returncode, 2)
        self.assertIn("socktap/extcap.conf:4: want 'admin = HOST:PORT'", r.stderr)
        # --admin (what tshark passes from the config dialog) wins over the environment; a
        # viewer queue size goes to the admin as max_bytes (a bad one is socktap's 400).
        p, fd = self.fifo_capture("socktap.listener.ingress", "--max-bytes", "12", admin=self.admin)
        self.assertEqual(p.wait(30), 1)
        os.close(fd)
        self.assertIn("answered 400: max_bytes must be", p.stderr.read().decode())
        with open(os.path.join(self.tmp, "q.txt"), "w") as f:
            f.write("q")
        fifo = os.path.join(self.tmp, "fifo-admin")
        os.mkfifo(fifo)
        e = self.env("127.0.0.1:%d" % free_port())
        p = self.procs.start([EXTCAP, "--capture", "--extcap-interface", "socktap.listener.ingress", "--fifo", fifo,
                              "--admin", "localhost:%d" % self.ap, "--max-bytes", "65536"], env=e)
        fd = os.open(fifo, os.O_RDONLY)
        self.wait_stat("admin.live.viewers", lambda v: v == 1)
        self.curl("/q.txt?via-admin-option")
        data = b""
        deadline = time.time() + 30
        while b"via-admin-option" not in data and time.time() < deadline:
            data += os.read(fd, 65536)
        self.assertIn(b"GET /q.txt?via-admin-option", data)
        os.close(fd)
        self.assertEqual(p.wait(20), 0)


if __name__ == "__main__":
    harness.main()

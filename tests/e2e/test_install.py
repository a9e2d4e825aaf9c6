"""make install / cmake --install: the three programs in PREFIX/bin, socktap-extcap in Wireshark's
extcap directory (SOCKTAP_WIRESHARK_EXTCAP_DIR), all staged under DESTDIR, mode 0755 whatever
the umask, nothing else; the installed programs run and the installed extcap lists a running
socktap's capture sockets."""
import os
import re
import stat
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port, proxy_config  # noqa: E402
from test_capture import capture_ts  # noqa: E402


def cache_var(name):
    with open(os.path.join(harness.BUILD, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split("=", 1)[1].strip()
    raise KeyError(name)


class InstallTest(E2ETest):
    def installed(self, dest):
        out = {}
        for d, _, files in os.walk(dest):
            for f in files:
                p = os.path.join(d, f)
                out[os.path.relpath(p, dest)] = stat.S_IMODE(os.lstat(p).st_mode)
        return out

    def expected(self, prefix):
        extcap_dir = cache_var("SOCKTAP_WIRESHARK_EXTCAP_DIR")
        if not os.path.isabs(extcap_dir):
            extcap_dir = os.path.join(prefix, extcap_dir)
        want = {os.path.join(prefix, "bin", p).lstrip("/"): 0o755 for p in ("socktap", "capture2pcap", "socktap-trace")}
        want[os.path.join(extcap_dir, "socktap-extcap").lstrip("/")] = 0o755
        want[os.path.join(prefix, "share/socktap/examples/socktap.yaml").lstrip("/")] = 0o644
        want[os.path.join(prefix, "lib/systemd/system/socktap.service").lstrip("/")] = 0o644
        # man pages come with the normal build (help2man over each program's --help); the
        # sanitizer build installs none
        if cache_var("SOCKTAP_SANITIZE") in ("OFF", "FALSE", "0", ""):
            for p in ("socktap", "capture2pcap", "socktap-trace", "socktap-extcap"):
                want[os.path.join(prefix, "share/man/man1", p + ".1").lstrip("/")] = 0o644
        return want, extcap_dir

    def check_extras(self, dest, prefix):
        """The unit starts the installed socktap; the example validates; a man page names its
        program and its options."""
        root = os.path.join(dest, prefix.lstrip("/"))
        with open(os.path.join(root, "lib/systemd/system/socktap.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=%s/bin/socktap -c /etc/socktap/socktap.yaml\n" % prefix, unit)
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/socktap",
                     "Type=simple"):
            self.assertIn(line + "\n", unit)
        r = subprocess.run([os.path.join(root, "bin/socktap"), "--mode", "validate", "-c",
                            os.path.join(root, "share/socktap/examples/socktap.yaml")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        page = os.path.join(root, "share/man/man1/capture2pcap.1")
        if os.path.exists(page):
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", page], capture_output=True, text=True,
                               timeout=30, env=dict(os.environ, LC_ALL="C.UTF-8"))
            self.assertEqual(r.stderr, "")
            text = re.sub(".\b", "", r.stdout)  # grotty's overstrike bold
            self.assertIn("capture2pcap - convert socktap and Envoy tap traces", text)
            self.assertIn("--follow", text)

    def test_cmake_install_with_destdir(self):
        dest = os.path.join(self.tmp, "dest")
        prefix = "/opt/socktap-test"
        env = dict(os.environ, DESTDIR=dest)
        r = subprocess.run(["sh", "-c", 'umask 077 && exec cmake --install "$0" --prefix "$1"', harness.BUILD, prefix],
                           capture_output=True, text=True, env=env, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr)
        want, extcap_dir = self.expected(prefix)
        self.assertEqual(self.installed(dest), want)
        self.check_extras(dest, prefix)
        # The default is where this machine's Wireshark looks (tshark -G folders), unless the
        # build was configured with another directory or wireshark.pc says otherwise.
        folders = subprocess.run(["tshark", "-G", "folders"], capture_output=True, text=True, timeout=120).stdout
        m = re.search(r"^(?:Global )?Extcap path:\s*(\S.*)$", folders, re.M)
        pc = subprocess.run(["pkg-config", "--variable=extcap_dir", "wireshark"], capture_output=True, text=True)
        if m and pc.returncode != 0 and "SOCKTAP_WIRESHARK_EXTCAP_DIR" not in os.environ.get("CMAKE_ARGS", ""):
            self.assertEqual(extcap_dir, m.group(1).strip())
        # What was installed runs.
        for p in ("socktap", "capture2pcap", "socktap-trace"):
            r = subprocess.run([os.path.join(dest, prefix.lstrip("/"), "bin", p), "--version"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("0.1.0", r.stdout)
        # The installed extcap answers Wireshark's interface query against a running socktap.
        lp, ap = free_port(), free_port()
        upstream, _ = self.start_http_upstream()
        self.socktap(proxy_config(lp, upstream, admin_port=ap, listener_ts=capture_ts(os.path.join(self.tmp, "c"))),
                     admin_port=ap)
        extcap = os.path.join(dest, extcap_dir.lstrip("/"), "socktap-extcap")
        r = subprocess.run([extcap, "--extcap-interfaces", "--extcap-version=4.0"], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, SOCKTAP_ADMIN="127.0.0.1:%d" % ap))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.splitlines()[1:],
                         ["interface {value=socktap.listener.ingress}{display=socktap listener ingress}"])

    def test_make_install_prefix_destdir(self):
        dest = os.path.join(self.tmp, "dest")
        prefix = "/usr/local"
        r = subprocess.run(["make", "-s", "-C", harness.ROOT, "install", "BUILD=" + harness.BUILD, "PREFIX=" + prefix,
                            "DESTDIR=" + dest, "JOBS=2"], capture_output=True, text=True, timeout=1800)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        want, _ = self.expected(prefix)
        self.assertEqual(self.installed(dest), want)
        self.check_extras(dest, prefix)


if __name__ == "__main__":
    harness.main()

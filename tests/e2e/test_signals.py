"""SIGHUP and SIGUSR1 (issue 9, section 4): they used to kill socktap (default action, exit 129,
no log, no drain). SIGHUP now re-opens the --log-path file (logrotate's postrotate), then
reloads the config (test_reload.py); SIGUSR1 is logged and ignored. Traffic flows before and
after.
"""
import os
import signal
import time

import harness
from harness import E2ETest, free_port, proxy_config
from test_listen import echo_server, roundtrip


def wait_text(path, text, proc, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if text in f.read().decode(errors="replace"):
                    return
        if proc.poll() is not None:
            raise AssertionError("socktap exited with %s" % proc.returncode)
        time.sleep(0.02)
    raise AssertionError("%r not in %s" % (text, path))


class SignalTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.up = echo_server()
        self.addCleanup(self.up.close)
        self.port = free_port()

    def test_sighup_sigusr1_on_stderr_log(self):
        st = self.socktap(proxy_config(self.port, self.up.getsockname()[1]))
        self.assertEqual(roundtrip(self.port, b"before"), b"before")
        os.kill(st.pid, signal.SIGUSR1)
        st.wait_log("caught SIGUSR1: ignored")
        os.kill(st.pid, signal.SIGHUP)
        st.wait_log("caught SIGHUP: logging to stderr, nothing to re-open; reloading the config")
        st.wait_log("config reload (SIGHUP): config generation 2")
        self.assertIsNone(st.proc.poll())
        self.assertEqual(roundtrip(self.port, b"after"), b"after")
        self.assertEqual(st.stop(), 0)  # a normal drain still ends it

    def test_sighup_reopens_log_path(self):
        """logrotate's way: rename the file, SIGHUP, the new lines go to a new file."""
        log = os.path.join(self.tmp, "socktap.log")
        cfg_path = os.path.join(self.tmp, "cfg.yaml")
        with open(cfg_path, "w") as f:
            f.write(proxy_config(self.port, self.up.getsockname()[1]))
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        p = self.procs.start([harness.SOCKTAP, "-c", cfg_path, "--log-path", log],
                             log=os.path.join(self.tmp, "stderr.txt"), env=env)
        wait_text(log, "listening on", p)
        self.assertEqual(roundtrip(self.port, b"one"), b"one")
        os.rename(log, log + ".1")
        os.kill(p.pid, signal.SIGHUP)
        wait_text(log, "caught SIGHUP: log file re-opened", p)
        os.kill(p.pid, signal.SIGUSR1)
        wait_text(log, "caught SIGUSR1: ignored", p)
        self.assertEqual(roundtrip(self.port, b"two"), b"two")
        self.assertEqual(self.procs.stop(p, signal.SIGTERM), 0)
        with open(log) as f:
            new = f.read()
        with open(log + ".1") as f:
            old = f.read()
        self.assertIn("listening on", old)
        self.assertNotIn("caught SIGHUP", old)
        self.assertIn("stopped", new)
        with open(os.path.join(self.tmp, "stderr.txt")) as f:
            self.assertEqual(f.read(), "")  # everything went to the log file

    def test_log_path_unwritable_exits_1(self):
        cfg_path = os.path.join(self.tmp, "cfg.yaml")
        with open(cfg_path, "w") as f:
            f.write(proxy_config(self.port, self.up.getsockname()[1]))
        import subprocess
        r = subprocess.run([harness.SOCKTAP, "-c", cfg_path, "--log-path",
                            os.path.join(self.tmp, "no", "such", "dir.log")],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"--log-path: cannot open", r.stderr)
        self.assertIn(b"No such file or directory", r.stderr)


if __name__ == "__main__":
    harness.main()

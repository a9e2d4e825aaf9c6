"""The trace tools never destroy a capture (issue 9 §3).

capture2pcap and `socktap-trace convert -o` refuse an output that is one of the inputs (also
through a symlink or a hard link, even with --force), that holds a trace, or that exists at all
without --force; they write a 0600 temporary file beside the output and rename it at the end,
so a failed or killed run leaves neither a half file nor a touched old one. Usage errors say
what was wrong; socktap-trace has --version like the other two tools.
"""
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_capture2pcap import protoc_encode, v2_connection, v2_event  # noqa: E402

C2P = harness.tool("capture2pcap")
TRACE = harness.tool("socktap-trace")
DATA = os.path.join(harness.ROOT, "tests", "data", "envoy")
V2_TEXT = os.path.join(DATA, "capture2pcap_h2_ipv4.pb_text")
V3_TEXT = os.path.join(DATA, "tap2pcap_h2_ipv4.pb_text")
PCAP_MAGIC = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")


def slurp(path):
    with open(path, "rb") as f:
        return f.read()


def run(*argv, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    r = subprocess.run(list(argv), stderr=subprocess.PIPE, timeout=300, **kw)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


class ToolOutputTest(harness.E2ETest):
    def setUp(self):
        super().setUp()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def p(self, name):
        return os.path.join(self.tmp, name)

    def put(self, name, data):
        path = self.p(name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def v2_trace(self, name):
        with open(V2_TEXT, "rb") as f:
            return self.put(name, protoc_encode("envoy.data.tap.v2alpha.Trace", f.read()))

    def corrupt_trace(self, name):
        head = v2_connection(("127.0.0.1", 10000), ("127.0.0.1", 50000)) + v2_event(1, 0, "read", b"ok")
        return self.put(name, head + b"\x17garbage-after-an-invalid-wire-type")

    def assert_dir(self, names):
        """The directory holds exactly NAMES: no output, no temporary file left behind."""
        self.assertEqual(sorted(os.listdir(self.tmp)), sorted(names))

    # --- capture2pcap --------------------------------------------------------------------

    def test_c2p_forgotten_output_is_refused(self):
        """`capture2pcap t_*.pb` with OUTPUT forgotten: the last trace would be the output."""
        t1, t2 = self.v2_trace("t_1.pb"), self.v2_trace("t_2.pb")
        before = slurp(t2)
        rc, _, err = run(C2P, t1, t2)
        self.assertEqual(rc, 1, err)
        self.assertIn("capture2pcap: output %s already exists (a socktap/Envoy trace, v2-binary); "
                      "give --force to replace it" % t2, err)
        self.assertEqual(slurp(t2), before)
        self.assert_dir(["t_1.pb", "t_2.pb"])

    def test_c2p_output_holding_a_trace_in_any_format(self):
        t1 = self.v2_trace("t_1.pb")
        with open(V2_TEXT, "rb") as f:
            v2_text = f.read()
        with open(V3_TEXT, "rb") as f:
            v3_bin = protoc_encode("envoy.data.tap.v3.TraceWrapper", f.read())
        rc, v3_json, err = run(TRACE, "convert", "--to", "v3-json", "-", input=v3_bin)
        self.assertEqual(rc, 0, err)
        for name, data, fmt in (("a.pb_text", v2_text, "v2-text"), ("b.pb", v3_bin, "v3-binary"),
                                ("c.json", v3_json, "v3-json")):
            with self.subTest(fmt=fmt):
                out = self.put(name, data)
                rc, _, err = run(C2P, t1, out)
                self.assertEqual(rc, 1, err)
                self.assertIn("output %s already exists (a socktap/Envoy trace, %s)" % (out, fmt), err)
                self.assertEqual(slurp(out), data)

    def test_c2p_output_is_an_input(self):
        a = self.v2_trace("a.pb")
        os.symlink("a.pb", self.p("link.pb"))
        os.link(a, self.p("hard.pb"))
        before = slurp(a)
        for force in ([], ["--force"]):
            with self.subTest(force=force):
                rc, _, err = run(C2P, *force, a, a)
                self.assertEqual(rc, 1, err)
                self.assertIn("capture2pcap: output %s is one of the inputs; refusing to overwrite it"
                              % a, err)
                for other in ("link.pb", "hard.pb"):
                    rc, _, err = run(C2P, *force, a, self.p(other))
                    self.assertEqual(rc, 1, err)
                    self.assertIn("output %s is the input %s (same file)" % (self.p(other), a), err)
                self.assertEqual(slurp(a), before)
        self.assertTrue(os.path.islink(self.p("link.pb")))
        self.assert_dir(["a.pb", "link.pb", "hard.pb"])

    def test_c2p_existing_output_needs_force(self):
        t = self.v2_trace("t.pb")
        out = self.put("out.pcap", b"not a trace, not a pcap\n")
        os.chmod(out, 0o644)
        rc, _, err = run(C2P, t, out)
        self.assertEqual(rc, 1, err)
        self.assertIn("capture2pcap: output %s already exists; give --force to replace it" % out, err)
        self.assertEqual(slurp(out), b"not a trace, not a pcap\n")
        rc, _, err = run(C2P, "--force", t, out)
        self.assertEqual(rc, 0, err)
        self.assertIn(slurp(out)[:4], PCAP_MAGIC)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)
        # through a symlink the target is replaced and the link stays
        os.symlink("out.pcap", self.p("via.pcap"))
        rc, _, err = run(C2P, "--force", "--nanosecond", t, self.p("via.pcap"))
        self.assertEqual(rc, 0, err)
        self.assertTrue(os.path.islink(self.p("via.pcap")))
        self.assertEqual(slurp(out)[:4], b"\x4d\x3c\xb2\xa1")  # nanosecond magic, little endian
        self.assert_dir(["t.pb", "out.pcap", "via.pcap"])

    def test_c2p_output_mode_0600_whatever_the_umask(self):
        t = self.v2_trace("t.pb")
        out = self.p("new.pcap")
        rc, _, err = run(C2P, t, out, preexec_fn=lambda: os.umask(0))
        self.assertEqual(rc, 0, err)
        self.assertEqual(stat.S_IMODE(os.stat(out).st_mode), 0o600)

    def test_c2p_failed_run_leaves_nothing(self):
        good, bad = self.v2_trace("good.pb"), self.corrupt_trace("bad.pb")
        rc, _, err = run(C2P, good, bad, self.p("out.pcap"))
        self.assertEqual(rc, 1, err)
        self.assertIn("not written", err)
        self.assert_dir(["good.pb", "bad.pb"])
        # with --force over an existing file: the old file stays as it was
        old = self.put("old.pcap", b"previous result")
        rc, _, err = run(C2P, "--force", good, bad, old)
        self.assertEqual(rc, 1, err)
        self.assertEqual(slurp(old), b"previous result")
        self.assert_dir(["good.pb", "bad.pb", "old.pcap"])

    def test_c2p_killed_run_leaves_nothing(self):
        """SIGTERM while the temporary file exists (input is a pipe we hold open)."""
        out = self.p("out.pcap")
        proc = subprocess.Popen([C2P, "-", out], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(proc.wait)
        try:
            proc.stdin.write(v2_connection(("127.0.0.1", 1), ("127.0.0.1", 2)))
            proc.stdin.flush()
            deadline = time.monotonic() + 60
            while not [n for n in os.listdir(self.tmp) if n.startswith(".out.pcap.")]:
                self.assertLess(time.monotonic(), deadline, "no temporary file appeared")
                time.sleep(0.01)
            tmp = [n for n in os.listdir(self.tmp) if n.startswith(".out.pcap.")][0]
            self.assertEqual(stat.S_IMODE(os.stat(self.p(tmp)).st_mode), 0o600)
        finally:
            proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), -signal.SIGTERM)
        proc.stdin.close()
        proc.stderr.close()
        self.assert_dir([])

    def test_c2p_stdout_and_dev_null_stay(self):
        t = self.v2_trace("t.pb")
        rc, out, err = run(C2P, t, "-")
        self.assertEqual(rc, 0, err)
        self.assertIn(out[:4], PCAP_MAGIC)
        rc, _, err = run(C2P, t, "/dev/null")
        self.assertEqual(rc, 0, err)
        with open(t, "ab") as f:  # `capture2pcap t.pb - >> t.pb` would append to its input
            rc, _, err = run(C2P, t, "-", stdout=f)
        self.assertEqual(rc, 1, err)
        self.assertIn("stdout is the input %s" % t, err)

    # --- socktap-trace convert --------------------------------------------------------------

    def test_convert_refuses_inputs_and_existing_outputs(self):
        t1, t2 = self.v2_trace("t_1.pb"), self.v2_trace("t_2.pb")
        before = slurp(t2)
        rc, _, err = run(TRACE, "convert", "--to", "v3-json", "-o", t2, t1)
        self.assertEqual(rc, 1, err)
        self.assertIn("socktap-trace: output %s already exists (a socktap/Envoy trace, v2-binary); "
                      "give --force to replace it" % t2, err)
        self.assertEqual(slurp(t2), before)
        for force in ([], ["--force"]):
            rc, _, err = run(TRACE, "convert", "--to", "v3-json", *force, "-o", t1, t1)
            self.assertEqual(rc, 1, err)
            self.assertIn("socktap-trace: output %s is one of the inputs; refusing to overwrite it"
                          % t1, err)
        with open(t1, "ab") as f:
            rc, _, err = run(TRACE, "convert", "--to", "v3-json", t1, stdout=f)
        self.assertEqual(rc, 1, err)
        self.assertIn("stdout is the input %s" % t1, err)
        self.assertEqual(slurp(t1), before)
        other = self.put("x.json", b"keep me")
        rc, _, err = run(TRACE, "convert", "--to", "v3-json", "-o", other, t1)
        self.assertEqual(rc, 1, err)
        self.assertIn("output %s already exists; give --force" % other, err)
        self.assertEqual(slurp(other), b"keep me")
        rc, _, err = run(TRACE, "convert", "--to", "v3-json", "--force", "-o", other, t1,
                         preexec_fn=lambda: os.umask(0))
        self.assertEqual(rc, 0, err)
        rc, out, err = run(TRACE, "convert", "--to", "v3-json", t1)
        self.assertEqual(slurp(other), out)
        self.assertEqual(stat.S_IMODE(os.stat(other).st_mode), 0o600)
        self.assert_dir(["t_1.pb", "t_2.pb", "x.json"])

    def test_convert_failed_run_leaves_nothing(self):
        bad = self.corrupt_trace("bad.pb")
        rc, _, err = run(TRACE, "convert", "--to", "v3-json", "-o", self.p("out.json"), bad)
        self.assertEqual(rc, 1, err)
        self.assertIn("not written", err)
        self.assert_dir(["bad.pb"])
        old = self.put("old.json", b"previous")
        rc, _, err = run(TRACE, "convert", "--to", "v3-binary", "--force", "-o", old, bad)
        self.assertEqual(rc, 1, err)
        self.assertEqual(slurp(old), b"previous")
        self.assert_dir(["bad.pb", "old.json"])

    # --- usage and --version -----------------------------------------------------------------

    def test_usage_errors_say_what_was_wrong(self):
        t = self.v2_trace("t.pb")
        cases = [
            ((TRACE, "cat", "--direction", "both", t),
             "socktap-trace: --direction: expected read or write, got 'both'"),
            ((TRACE, "cat", t), "socktap-trace: cat: --direction read|write is required"),
            ((TRACE, "dump", "--connection-fields", "x", t),
             "socktap-trace: --connection-fields: expected auto, old or new, got 'x'"),
            ((TRACE, "dump", "--format", "x", t), "socktap-trace: --format: expected auto, "),
            ((TRACE, "convert", "--to", "pcap", t), "socktap-trace: --to: expected v2-binary, "),
            ((TRACE, "convert", t), "socktap-trace: convert: --to FORMAT is required"),
            ((TRACE, "frobnicate", t), "socktap-trace: unknown command 'frobnicate'"),
            ((TRACE,), "socktap-trace: missing command"),
            ((TRACE, "dump"), "socktap-trace: dump: missing FILE"),
            ((TRACE, "dump", t, t), "socktap-trace: dump: expected one FILE, got 2"),
            ((TRACE, "dump", "--bogus", t), "socktap-trace: --bogus: unknown option"),
            ((TRACE, "dump", "-o", "x", t), "socktap-trace: dump: --to, --output and --force belong to convert"),
            ((C2P, "--mss", "0", t, "o"), "capture2pcap: --mss: expected 1..65535, got '0'"),
            ((C2P, "--bogus", t, "o"), "capture2pcap: --bogus: unknown option"),
            ((C2P, "--format"), "capture2pcap: --format: unknown option or missing its argument"),
            ((TRACE, "cat", "--direction"),
             "socktap-trace: --direction: unknown option or missing its argument"),
            ((TRACE, "cat", "-d"), "socktap-trace: option -d needs an argument"),
            ((C2P, t), "capture2pcap: need at least one INPUT and an OUTPUT"),
        ]
        for argv, msg in cases:
            with self.subTest(argv=argv[1:]):
                rc, _, err = run(*argv)
                self.assertEqual(rc, 2, err)
                self.assertEqual(err.splitlines()[0][:len(msg)], msg, err)
                if argv[0] == TRACE:
                    self.assertIn("usage:", err)

    def test_socktap_trace_version(self):
        rc, out, err = run(TRACE, "--version")
        self.assertEqual(rc, 0, err)
        rc2, c2p_out, _ = run(C2P, "--version")
        self.assertEqual(rc2, 0)
        m = re.fullmatch(rb"capture2pcap (\S+)\n", c2p_out)
        self.assertTrue(m, c2p_out)
        self.assertEqual(out, b"socktap-trace " + m.group(1) + b"\n")
        rc, out, _ = run(TRACE, "--help")
        self.assertEqual(rc, 0)
        self.assertIn(b"--force", out)


if __name__ == "__main__":
    harness.main()

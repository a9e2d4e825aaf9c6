"""--log-format and --log-format-escaped (Envoy's flags, source/server/options_impl.cc; the pattern
flags are spdlog's with Envoy's %_ and %j): Envoy's own default pattern, a JSON-lines pattern whose
every line parses (a message holding quotes, a backslash and a newline among them), escaping, and
the error for an unknown flag. socktap's default layout is tested in test_relay.py."""
import json
import os
import re
import socket
import subprocess
import time

import harness
from harness import E2ETest, free_port, proxy_config
from test_capture import capture_ts
from test_listen import echo_server, roundtrip

ENVOY_DEFAULT = "[%Y-%m-%d %T.%e][%t][%l][%n] [%g:%#] %v"
# a capture directory that does not exist: its name is logged at start (a warning), with the
# characters a naive formatter breaks a line or a JSON string on
ODD_DIR = 'no "such" \\ dir\nhere'


class LogFormatTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.up = echo_server()
        self.addCleanup(self.up.close)
        self.port = free_port()

    def start(self, *args, odd=False):
        ts = ""
        if odd:
            prefix = os.path.join(self.tmp, ODD_DIR, "cap")
            ts = capture_ts(json.dumps(prefix)[1:-1])  # YAML double quotes escape as JSON does
        st = self.socktap(proxy_config(self.port, self.up.getsockname()[1], listener_ts=ts),
                          args=("-l", "debug") + args)
        self.assertEqual(roundtrip(self.port, b"ping"), b"ping")
        deadline = time.time() + 10
        while time.time() < deadline and "new connection" not in st.logtext():
            time.sleep(0.05)
        self.assertEqual(st.stop(), 0)
        return st.logtext()

    def test_envoy_default_pattern(self):
        text = self.start("--log-format", ENVOY_DEFAULT)
        lines = text.splitlines()
        self.assertTrue(lines)
        pat = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\]\[\d+\]\[(trace|debug|info|warning|error|"
                         r"critical)\]\[socktap\] \[src/[a-z_/]+\.c:\d+\] ")
        for line in lines:
            self.assertRegex(line, pat)
        self.assertTrue(any(re.search(r"\]\[info\]\[socktap\] \[src/net/[a-z_]+\.c:\d+\] listening on ", l)
                            for l in lines), text)
        # a connection's message starts "[C<id>] ", as Envoy's ENVOY_CONN_LOG
        self.assertTrue(any(re.search(r"\]\[debug\]\[socktap\] \[[^]]+\] \[C0\] new connection from "
                                      r"127\.0\.0\.1 on 127\.0\.0\.1:%d$" % self.port, l) for l in lines), text)
        # the main thread and the workers are different threads
        tids = {re.match(r"^\[[^]]+\]\[(\d+)\]", l).group(1) for l in lines}
        self.assertGreaterEqual(len(tids), 2, text)

    def test_json_lines(self):
        fmt = ('{"time":"%Y-%m-%dT%T.%fZ","epoch":%E,"level":"%l","L":"%L","worker":"%W","conn":"%C",'
               '"pid":%P,"src":"%s:%#","func":"%!","msg":"%j","pct":"%%"}')
        text = self.start("--log-format", fmt, odd=True)
        recs = [json.loads(l) for l in text.splitlines()]  # every line is one JSON object
        self.assertTrue(recs)
        for r in recs:
            self.assertRegex(r["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
            self.assertLess(abs(r["epoch"] - time.time()), 120)
            self.assertEqual(r["L"], r["level"][0].upper())
            self.assertEqual(r["pct"], "%")
            self.assertRegex(r["src"], r"^[a-z_]+\.c:\d+$")
            self.assertTrue(r["func"])
        self.assertEqual({r["pid"] for r in recs}, {recs[0]["pid"]})
        odd = [r for r in recs if "does not exist" in r["msg"]]
        self.assertEqual(len(odd), 1, text)
        self.assertIn(os.path.join(self.tmp, ODD_DIR), odd[0]["msg"])  # whole, newline and all
        self.assertEqual(odd[0]["level"], "warning")
        conn = [r for r in recs if "new connection" in r["msg"]]
        self.assertEqual(len(conn), 1)
        self.assertEqual(conn[0]["conn"], "0")  # the first connection is 0, as Envoy's
        self.assertTrue(conn[0]["msg"].startswith("[C0] "))
        self.assertRegex(conn[0]["worker"], r"^W\d+$")
        self.assertIn("main", {r["worker"] for r in recs})
        self.assertIn("", {r["conn"] for r in recs})

    def test_escaped_keeps_one_line_per_message(self):
        text = self.start("--log-format", "%l|%v", "--log-format-escaped", odd=True)
        odd = [l for l in text.splitlines() if "does not exist" in l]
        self.assertEqual(len(odd), 1, text)
        self.assertIn('no "such" \\ dir\\nhere', odd[0])
        self.assertTrue(odd[0].startswith("warning|"))
        # without the flag %_ escapes too, and %v does not
        text = self.start("--log-format", "%l|%_", odd=True)
        self.assertIn('no "such" \\ dir\\nhere', text)
        text = self.start("--log-format", "%l|%v", odd=True)
        self.assertIn('no "such" \\ dir\nhere', text)

    def test_application_log_config_and_bootstrap_fields(self):
        """Envoy's bootstrap way: application_log_config.log_format.json_format, one JSON object
        a line; beside --log-format it is refused with Envoy's words; the L4-irrelevant bootstrap
        fields are accepted with one warning each, naming file:line:col."""
        cfg = proxy_config(self.port, self.up.getsockname()[1]) + (
            "node: {id: edge-1, cluster: edge}\n"
            "layered_runtime: {layers: [{name: rt, static_layer: {}}]}\n"
            "application_log_config:\n"
            "  log_format:\n"
            "    json_format: {time: \"%Y-%m-%dT%T.%eZ\", level: \"%l\", msg: \"%j\", pid: \"%P\"}\n")
        st = self.socktap(cfg, args=("-l", "debug"))
        self.assertEqual(roundtrip(self.port, b"ping"), b"ping")
        st.wait_log("new connection")
        self.assertEqual(st.stop(), 0)
        recs = [json.loads(l) for l in st.logtext().splitlines()]
        self.assertEqual({r["pid"] for r in recs}, {str(st.pid)})
        warn = [r["msg"] for r in recs if r["level"] == "warning"]
        self.assertTrue(any(re.search(r"socktap-\d+\.yaml:\d+:7: node: accepted and ignored: it names an Envoy", m)
                            for m in warn), warn)
        self.assertTrue(any("layered_runtime: accepted and ignored: socktap has no runtime layers" in m
                            for m in warn), warn)
        self.assertTrue(any(r["msg"].startswith("[C0] new connection") for r in recs))
        path = os.path.join(self.tmp, "both.yaml")
        with open(path, "w") as f:
            f.write(cfg)
        r = subprocess.run([harness.SOCKTAP, "-c", path, "--log-format", "%v"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("Only one of ApplicationLogConfig.log_format or CLI option --log-format can be specified.",
                      r.stderr)
        with open(path, "w") as f:
            f.write(proxy_config(self.port, 1) + "dynamic_resources: {lds_config: {path: /x}}\n")
        r = subprocess.run([harness.SOCKTAP, "-c", path, "--mode", "validate"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("dynamic_resources: xDS is not supported: socktap reads static_resources only", r.stderr)

    def test_unknown_flag(self):
        for fmt, msg in (("%Q", "unknown flag '%Q' at offset 0"), ("ab%", "unknown flag '%' at offset 2")):
            r = subprocess.run([harness.SOCKTAP, "-c", "x.yaml", "--log-format", fmt], capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, 2)
            self.assertIn("socktap: --log-format: " + msg, r.stderr)


if __name__ == "__main__":
    harness.main()

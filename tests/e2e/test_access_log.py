"""tcp_proxy access_log and v3 admin.access_log (issue 11 §5): Envoy's file access logger
(api/envoy/extensions/access_loggers/file/v3/file.proto) with its format operators
(source/common/formatter/stream_info_formatter.cc) and Envoy's default format when none is
given (source/common/formatter/substitution_format_string.cc), written off the workers by the
access log writer, re-opened on SIGHUP. Expected lines are derived from Envoy's rules (a TCP
connection renders the HTTP operators of the default format as "- - -" and 0), not from
socktap's output."""
import json
import os
import signal
import socket
import time
import urllib.request

import harness
from harness import E2ETest, free_port, proxy_config
from test_listen import echo_server, roundtrip


def file_log(path, fmt=None, json_fmt=None, indent=10):
    """An access_log list (v3 typed_config) for tcp_proxy's config map at INDENT spaces."""
    pad = " " * indent
    out = pad + "access_log:\n" + pad + "- name: envoy.access_loggers.file\n"
    out += pad + "  typed_config:\n"
    out += pad + '    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
    out += pad + "    path: %s\n" % json.dumps(path)
    if fmt is not None:
        out += pad + "    log_format: {text_format: %s}\n" % json.dumps(fmt)
    if json_fmt is not None:
        out += pad + "    log_format: {json_format: %s}\n" % json.dumps(json_fmt)
    return out


def wait_lines(path, n, timeout=15.0):
    """The first N lines of PATH once it has them (the writer thread appends them)."""
    deadline = time.time() + timeout
    lines = []
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) >= n:
                return lines
        time.sleep(0.02)
    raise AssertionError("%s: %d line(s), expected %d: %r" % (path, len(lines), n, lines))


class AccessLogTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.up = echo_server()
        self.addCleanup(self.up.close)
        self.up_port = self.up.getsockname()[1]
        self.port = free_port()
        self.admin = free_port()
        self.log_path = os.path.join(self.tmp, "access.log")

    def start(self, proxy_extra, upstream_port=None, extra_admin=""):
        cfg = proxy_config(self.port, upstream_port or self.up_port, admin_port=self.admin,
                           proxy_extra=proxy_extra) + extra_admin
        return self.socktap(cfg, admin_port=self.admin)

    def test_default_format_is_envoys(self):
        st = self.start(file_log(self.log_path))
        self.assertEqual(roundtrip(self.port, b"ping"), b"ping")
        line = wait_lines(self.log_path, 1)[0]
        # [START_TIME] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
        # %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(...)% "XFF" "UA" "ID"
        # "AUTHORITY" "%UPSTREAM_HOST%"
        want = (r'^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "- - -" 0 - 4 4 \d+ - "-" "-" "-" "-" '
                r'"127\.0\.0\.1:%d"$' % self.up_port)
        self.assertRegex(line, want)
        self.assertEqual(st.stop(), 0)

    def test_operators_text_and_json(self):
        text = ("%CONNECTION_ID% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_LOCAL_ADDRESS% "
                "%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %BYTES_RECEIVED%/%BYTES_SENT% %RESPONSE_FLAGS% "
                "%UPSTREAM_TRANSPORT_FAILURE_REASON% %HOSTNAME% %START_TIME(%s)%\n")
        jpath = os.path.join(self.tmp, "access.json")
        extra = file_log(self.log_path, fmt=text) + file_log(jpath, json_fmt={
            "id": "%CONNECTION_ID%", "client": "%DOWNSTREAM_REMOTE_ADDRESS%", "rx": "%BYTES_RECEIVED%",
            "tx": "%BYTES_SENT%", "up": "%UPSTREAM_HOST%", "local": "%UPSTREAM_LOCAL_ADDRESS%",
            "reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "flags": "%RESPONSE_FLAGS%",
            "mixed": "c=%UPSTREAM_CLUSTER% \"q\"", "nested": {"d": "%DURATION%"}})[len("          access_log:\n"):]
        st = self.start(extra)
        with socket.create_connection(("127.0.0.1", self.port)) as c:
            client_port = c.getsockname()[1]
            c.sendall(b"hello world")
            got = b""
            while len(got) < 11:
                got += c.recv(100)
        line = wait_lines(self.log_path, 1)[0]
        f = line.split(" ")
        self.assertEqual(f[1:5], ["127.0.0.1", "127.0.0.1:%d" % self.port, "backend",
                                  "127.0.0.1:%d" % self.up_port])
        self.assertEqual(f[5:8], ["11/11", "-", "-"])
        self.assertEqual(f[8], socket.gethostname())
        self.assertLessEqual(abs(int(f[9]) - time.time()), 60)
        j = json.loads(wait_lines(jpath, 1)[0])
        self.assertEqual(j["id"], int(f[0]))  # a number in JSON, the same connection
        self.assertEqual(j["client"], "127.0.0.1:%d" % client_port)
        self.assertEqual((j["rx"], j["tx"]), (11, 11))
        self.assertEqual(j["up"], "127.0.0.1:%d" % self.up_port)
        self.assertRegex(j["local"], r"^127\.0\.0\.1:\d+$")
        self.assertIsNone(j["reason"])  # absent: null, not "-"
        self.assertEqual(j["flags"], "-")
        self.assertEqual(j["mixed"], 'c=backend "q"')
        self.assertIsInstance(j["nested"]["d"], int)
        self.assertEqual(st.stop(), 0)

    def test_dead_upstream_flags(self):
        dead = free_port()  # nothing listens: the connect is refused
        st = self.start(file_log(self.log_path, fmt="%RESPONSE_FLAGS% %UPSTREAM_HOST% "
                                                    "%UPSTREAM_TRANSPORT_FAILURE_REASON% %BYTES_SENT%\n"),
                        upstream_port=dead)
        with socket.create_connection(("127.0.0.1", self.port)) as c:
            c.settimeout(10)
            self.assertEqual(c.recv(10), b"")
        line = wait_lines(self.log_path, 1)[0]
        # Envoy's tcp_proxy: UF for the failed connect, URX once max_connect_attempts (1) are spent
        self.assertEqual(line, "UF,URX 127.0.0.1:%d Connection_refused 0" % dead)
        self.assertEqual(st.stop(), 0)

    def test_reopen_on_sighup(self):
        st = self.start(file_log(self.log_path, fmt="%BYTES_RECEIVED%\n"))
        self.assertEqual(roundtrip(self.port, b"one"), b"one")
        self.assertEqual(wait_lines(self.log_path, 1), ["3"])
        moved = self.log_path + ".1"
        os.rename(self.log_path, moved)  # logrotate
        st.proc.send_signal(signal.SIGHUP)
        st.wait_log("caught SIGHUP")
        self.assertEqual(roundtrip(self.port, b"second"), b"second")
        self.assertEqual(wait_lines(self.log_path, 1), ["6"])
        with open(moved) as f:
            self.assertEqual(f.read(), "3\n")
        self.assertEqual(st.stop(), 0)

    def test_admin_access_log(self):
        apath = os.path.join(self.tmp, "admin.log")
        admin_log = ("  access_log:\n  - name: envoy.access_loggers.file\n    typed_config:\n"
                     '      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n'
                     "      path: %s\n"
                     '      log_format: {text_format: "%%REQ(:METHOD)%% %%REQ(:PATH)%% %%RESPONSE_CODE%% '
                     '%%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%%\\n"}\n' % json.dumps(apath))
        cfg = proxy_config(self.port, self.up_port, admin_port=self.admin) + admin_log
        st = self.socktap(cfg, admin_port=self.admin)
        self.assertEqual(urllib.request.urlopen("http://127.0.0.1:%d/ready" % self.admin).status, 200)
        with self.assertRaises(urllib.error.HTTPError):
            urllib.request.urlopen("http://127.0.0.1:%d/nosuch" % self.admin)
        lines = wait_lines(apath, 2)
        self.assertEqual(lines[-2:], ["GET /ready 200 127.0.0.1", "GET /nosuch 404 127.0.0.1"])
        self.assertEqual(st.stop(), 0)

    def test_unknown_operator_is_a_config_error(self):
        cfg = proxy_config(self.port, self.up_port,
                           proxy_extra=file_log(self.log_path, fmt="%BYTES_RECIEVED%\n"))
        r = harness.validate(self.tmp, "bad.yaml", cfg)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr, r"bad\.yaml:\d+:\d+: static_resources\.listeners\[0\]\.filter_chains\[0\]"
                                   r"\.filters\[0\]\.config\.access_log\[0\]\.typed_config\.log_format"
                                   r"\.text_format: unsupported access log operator %BYTES_RECIEVED%")


if __name__ == "__main__":
    harness.main()

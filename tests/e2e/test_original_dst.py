"""ORIGINAL_DST clusters behind a use_original_dst listener (issue 11 §5): transparent capture
behind an iptables REDIRECT. Envoy reads SO_ORIGINAL_DST
(source/extensions/filters/listener/original_dst/original_dst.cc) and its ORIGINAL_DST cluster
connects to that address (source/extensions/clusters/original_dst/original_dst_cluster.cc).

The test runs inside a network namespace it creates (`unshare -n`, as root), with lo up and an
iptables nat OUTPUT rule that REDIRECTs what a client sends from 127.0.0.3 to two upstream ports
to socktap's listener; socktap's own upstream connections (from 127.0.0.1) are not redirected.
It is skipped only when iptables is missing (scripts/deps.sh installs it)."""
import os
import shutil
import socket
import subprocess
import sys
import unittest

import harness
from harness import E2ETest, free_port
from test_access_log import file_log, wait_lines
from test_listen import echo_server, roundtrip

INNER = "SOCKTAP_ORIGDST_INNER"


def config(port, admin, log):
    return """static_resources:
  listeners:
  - name: transparent
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: transparent
          cluster: original
%s
  clusters:
  - name: original
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
""" % (port, file_log(log, fmt="%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_HOST% %RESPONSE_FLAGS%\n"), admin)


def talk(dst_port, payload):
    """A client from 127.0.0.3 to 127.0.0.1:DST_PORT (REDIRECTed to socktap)."""
    return roundtrip(dst_port, payload, source="127.0.0.3")


@unittest.skipUnless(os.environ.get(INNER), "runs inside the namespace OriginalDstTest makes")
class InNamespace(E2ETest):
    def test_redirected_connections_reach_their_original_destination(self):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        a, b = echo_server(tag=b"A"), echo_server(tag=b"B")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        pa, pb = a.getsockname()[1], b.getsockname()[1]
        port, admin = free_port(), free_port()
        log = os.path.join(self.tmp, "access.log")
        st = self.socktap(config(port, admin, log), admin_port=admin)
        for up in (pa, pb):
            subprocess.run(["iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", "127.0.0.3",
                            "-d", "127.0.0.1", "--dport", str(up), "-j", "REDIRECT", "--to-ports",
                            str(port)], check=True)
        self.assertEqual(talk(pa, b"to-a"), b"Ato-a")
        self.assertEqual(talk(pb, b"to-b"), b"Bto-b")
        # through socktap (not straight to the upstream): its access log names each original
        # destination as the upstream host
        self.assertEqual(wait_lines(log, 2), ["127.0.0.3 127.0.0.1:%d -" % pa,
                                              "127.0.0.3 127.0.0.1:%d -" % pb])
        self.assertEqual(st.stats()["cluster.original.upstream_cx_total"], 2)
        # a client straight to the listener (no REDIRECT): no loop, a refused upstream
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            self.assertEqual(c.recv(10), b"")
        self.assertEqual(wait_lines(log, 3)[2], "127.0.0.1 127.0.0.1:%d UF,URX" % port)
        self.assertEqual(st.stop(), 0)


class OriginalDstTest(unittest.TestCase):
    @unittest.skipUnless(shutil.which("iptables"), "iptables is missing (scripts/deps.sh installs it)")
    def test_in_a_network_namespace(self):
        env = dict(os.environ, **{INNER: "1", "SOCKTAP_BUILD": harness.BUILD})
        r = subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__), "-v",
                            "InNamespace"], env=env, capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Ran 1 test", r.stderr)
        self.assertNotIn("skipped", r.stderr)


if __name__ == "__main__":
    harness.main()

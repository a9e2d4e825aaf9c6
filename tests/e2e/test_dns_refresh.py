"""dns_refresh_rate (issue 11 §5): a STRICT_DNS cluster's hosts are resolved again on a timer,
off the workers; a changed address set becomes a new config generation (open connections keep
theirs), counted in Envoy's cluster.X.membership_change / update_* stats
(api/envoy/config/cluster/v3/cluster.proto dns_refresh_rate, default 5 s).

The name's address changes through /etc/hosts inside a mount and network namespace the test
creates (`unshare -m -n`, as root): a private copy bind-mounted over /etc/hosts, rewritten in
place (glibc reads the file at every lookup), so the machine's /etc/hosts is never touched."""
import os
import socket
import subprocess
import sys
import unittest

import harness
from harness import E2ETest, free_port
from test_listen import echo_server, roundtrip
from test_tcp_proxy_opts import config as tcp_proxy_config

INNER = "SOCKTAP_DNS_INNER"


@unittest.skipUnless(os.environ.get(INNER), "runs inside the namespaces DnsRefreshTest makes")
class InNamespace(E2ETest):
    def write_hosts(self, addr):
        with open("/etc/hosts", "r+") as f:  # in place: the bind mount names this inode
            f.truncate(0)
            f.write("127.0.0.1 localhost\n%s upstream.socktap.test\n" % addr)

    def test_changed_address_reaches_new_connections(self):
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        up_port = free_port()
        a = echo_server(tag=b"A", bind=("127.0.0.1", up_port))
        b = echo_server(tag=b"B", bind=("127.0.0.2", up_port))
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.write_hosts("127.0.0.1")
        port, admin = free_port(), free_port()
        cfg = tcp_proxy_config(port, admin, "          cluster: backend\n", [("backend", up_port)])
        cfg = cfg.replace("type: STATIC", "type: STRICT_DNS\n    dns_refresh_rate: 0.1s")
        cfg = cfg.replace("address: 127.0.0.1, port_value: %d}" % up_port,
                          "address: upstream.socktap.test, port_value: %d}" % up_port)
        st = self.socktap(cfg, admin_port=admin)
        st.wait_stat("cluster.backend.update_success", lambda v: v >= 2)
        self.assertEqual(roundtrip(port, b"1"), b"A1")
        held = socket.create_connection(("127.0.0.1", port), timeout=10)  # across the change
        held.sendall(b"h")
        self.assertEqual(held.recv(10), b"Ah")
        self.write_hosts("127.0.0.2")
        st.wait_stat("cluster.backend.membership_change", lambda v: v == 1)
        st.wait_log("DNS refresh: cluster backend hosts changed: 127.0.0.2:%d" % up_port)
        st.wait_stat("server.config_generation", lambda v: v == 2)
        self.assertEqual(roundtrip(port, b"2"), b"B2")
        held.sendall(b"i")  # the open connection keeps its upstream
        self.assertEqual(held.recv(10), b"Ai")
        held.close()
        # unchanged since: no further generation however many refreshes ran
        n = st.stats()["cluster.backend.update_success"]
        st.wait_stat("cluster.backend.update_success", lambda v: v >= n + 2)
        s = st.stats()
        self.assertEqual((s["cluster.backend.membership_change"], s["server.config_generation"]), (1, 2))
        self.assertEqual(st.stop(), 0)


class DnsRefreshTest(unittest.TestCase):
    def test_in_namespaces(self):
        hosts = os.path.join(os.environ.get("TMPDIR", "/tmp"), "socktap-hosts-%d" % os.getpid())
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n")
        self.addCleanup(os.unlink, hosts)
        inner = ("mount --bind %s /etc/hosts && exec %s %s -v InNamespace" %
                 (hosts, sys.executable, os.path.abspath(__file__)))
        env = dict(os.environ, **{INNER: "1", "SOCKTAP_BUILD": harness.BUILD})
        r = subprocess.run(["unshare", "-m", "-n", "sh", "-c", inner], env=env, capture_output=True,
                           text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("Ran 1 test", r.stderr)
        self.assertNotIn("skipped", r.stderr)


if __name__ == "__main__":
    harness.main()

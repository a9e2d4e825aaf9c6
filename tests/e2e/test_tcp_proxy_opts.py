"""tcp_proxy max_downstream_connection_duration and weighted_clusters (issue 11 §5), as Envoy's
tcp_proxy (api/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto,
source/common/tcp_proxy/tcp_proxy.cc): a connection that outlives the duration is closed,
counted in tcp.X.max_downstream_connection_duration and logged with the DT flag; connections
spread over weighted clusters by weight."""
import os
import socket

import harness
from harness import E2ETest, free_port
from test_access_log import file_log, wait_lines
from test_listen import echo_server, roundtrip


def config(port, admin, proxy, clusters):
    """One tcp_proxy listener (PROXY: its settings below stat_prefix, 10 spaces in) and CLUSTERS:
    (name, port or list of ports, extra cluster YAML at 4 spaces)."""
    out = """static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config:
          stat_prefix: ingress_tcp
%s
  clusters:
""" % (port, proxy)
    for c in clusters:
        name, ports, extra = (c + ("",))[:3]
        ports = ports if isinstance(ports, list) else [ports]
        hosts = ", ".join("{socket_address: {address: 127.0.0.1, port_value: %d}}" % p for p in ports)
        out += ("  - name: %s\n    connect_timeout: 1s\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n"
                "    hosts: [%s]\n%s" % (name, hosts, extra))
    return out + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % admin


class TcpProxyOptsTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.admin = free_port()

    def test_max_downstream_connection_duration(self):
        up = echo_server()
        self.addCleanup(up.close)
        log = os.path.join(self.tmp, "access.log")
        proxy = ("          cluster: backend\n          max_downstream_connection_duration: 0.2s\n" +
                 file_log(log, fmt="%RESPONSE_FLAGS% %BYTES_RECEIVED%\n"))
        st = self.socktap(config(self.port, self.admin, proxy, [("backend", up.getsockname()[1])]),
                          admin_port=self.admin)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as c:
            c.sendall(b"hi")
            self.assertEqual(c.recv(10), b"hi")
            # the client stays idle (idle_timeout is an hour): only the duration ends it
            self.assertEqual(c.recv(10), b"")
        self.assertEqual(wait_lines(log, 1), ["DT 2"])
        self.assertEqual(st.stats()["tcp.ingress_tcp.max_downstream_connection_duration"], 1)
        self.assertEqual(st.stop(), 0)

    def test_weighted_clusters(self):
        a = echo_server(tag=b"A")
        b = echo_server(tag=b"B")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        proxy = ("          weighted_clusters:\n            clusters:\n"
                 "            - {name: one, weight: 1}\n            - {name: three, weight: 3}\n")
        st = self.socktap(config(self.port, self.admin, proxy,
                                 [("one", a.getsockname()[1]), ("three", b.getsockname()[1])]),
                          admin_port=self.admin)
        n = 120
        got = [roundtrip(self.port, b"x") for _ in range(n)]
        na, nb = got.count(b"Ax"), got.count(b"Bx")
        self.assertEqual(na + nb, n)
        # weights 1:3: expected 30 and 90; B below A has probability far under 1e-9
        self.assertGreater(na, 0)
        self.assertGreater(nb, na)
        s = st.stats()
        self.assertEqual((s["cluster.one.upstream_cx_total"], s["cluster.three.upstream_cx_total"]), (na, nb))
        self.assertEqual(st.stop(), 0)


if __name__ == "__main__":
    harness.main()

"""Cluster health_checks (issue 11 §5): Envoy's TCP health checker
(api/envoy/config/core/v3/health_check.proto, source/extensions/health_checkers/tcp/): a host
that fails its check leaves the load balancer, comes back after healthy_threshold passes,
/clusters shows Envoy's health_flags, and the stats are Envoy's cluster.X.health_check.*.
Real upstreams on loopback; every wait is for a condition (a stat, /clusters), never a sleep."""
import time
import urllib.request

import harness
from harness import E2ETest, free_port
from test_listen import echo_server, roundtrip
from test_tcp_proxy_opts import config as tcp_proxy_config


def hc_yaml(send=None, receive=None, unhealthy=1, healthy=1):
    tcp = "{}"
    if send or receive:
        parts = []
        if send:
            parts.append("send: {text: %s}" % send.hex())
        if receive:
            parts.append("receive: [{text: %s}]" % receive.hex())
        tcp = "{%s}" % ", ".join(parts)
    return ("    health_checks:\n"
            "    - timeout: 1s\n"
            "      interval: 0.1s\n"
            "      no_traffic_interval: 0.1s\n"
            "      unhealthy_threshold: %d\n"
            "      healthy_threshold: %d\n"
            "      tcp_health_check: %s\n" % (unhealthy, healthy, tcp))


def config(listen_port, admin_port, hosts, hc):
    return tcp_proxy_config(listen_port, admin_port, "          cluster: backend\n",
                            [("backend", hosts, hc)])


def answer_server(answer):
    """An upstream that reads 4 bytes and answers ANSWER (bytes, or a dict whose "answer" is read
    at each connection), then closes."""

    def serve(c):
        with c:
            try:
                c.settimeout(5)
                c.recv(4)
                c.sendall(answer["answer"] if isinstance(answer, dict) else answer)
            except OSError:
                pass

    return echo_server(handler=serve)


class HealthCheckTest(E2ETest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.admin = free_port()

    def clusters(self, st):
        return urllib.request.urlopen("http://127.0.0.1:%d/clusters" % self.admin, timeout=5).read().decode()

    def wait_clusters(self, st, text, timeout=20.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            body = self.clusters(st)
            if text in body:
                return body
            time.sleep(0.05)
        self.fail("/clusters never showed %r: %s" % (text, self.clusters(st)))

    def test_unhealthy_host_leaves_the_lb(self):
        up = echo_server(tag=b"A")
        self.addCleanup(up.close)
        live = up.getsockname()[1]
        dead = free_port()
        st = self.socktap(config(self.port, self.admin, [dead, live], hc_yaml()), admin_port=self.admin)
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1)
        body = self.wait_clusters(st, "backend::127.0.0.1:%d::health_flags::/failed_active_hc" % dead)
        self.assertIn("backend::127.0.0.1:%d::health_flags::healthy" % live, body)
        for i in range(6):  # round robin over two hosts would send three to the dead one
            self.assertEqual(roundtrip(self.port, b"x%d" % i), b"Ax%d" % i)
        s = st.stats()
        self.assertEqual(s["cluster.backend.upstream_cx_connect_fail"], 0)
        self.assertGreaterEqual(s["cluster.backend.health_check.network_failure"], 1)
        self.assertGreaterEqual(s["cluster.backend.health_check.success"], 1)
        self.assertGreater(s["cluster.backend.health_check.attempt"],
                           s["cluster.backend.health_check.success"])
        self.assertEqual(st.stop(), 0)

    def test_host_goes_down_and_comes_back(self):
        a = answer_server(b"PONGA")
        mode = {"answer": b"PONGB"}
        b = answer_server(mode)  # answers what MODE says at each connection
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        pb = b.getsockname()[1]
        st = self.socktap(config(self.port, self.admin, [a.getsockname()[1], pb],
                                 hc_yaml(send=b"PING", receive=b"PONG", unhealthy=2, healthy=2)),
                          admin_port=self.admin)
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 2)
        self.assertIn(roundtrip(self.port, b"PING"), (b"PONGA", b"PONGB"))  # traffic: `interval`
        mode["answer"] = b"NOPE"
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1)
        st.wait_log("host 127.0.0.1:%d is unhealthy" % pb)
        for _ in range(4):  # round robin over both would give B two of them
            self.assertEqual(roundtrip(self.port, b"PING"), b"PONGA")
        mode["answer"] = b"PONGB"
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 2)
        st.wait_log("host 127.0.0.1:%d is healthy" % pb)
        got = {roundtrip(self.port, b"PING") for _ in range(4)}
        self.assertEqual(got, {b"PONGA", b"PONGB"})
        # the verdict changed once each way: one log line each, not one per failed check
        self.assertEqual(st.logtext().count("host 127.0.0.1:%d is unhealthy" % pb), 1)
        self.assertGreaterEqual(st.stats()["cluster.backend.health_check.failure"], 2)
        self.assertEqual(st.stop(), 0)

    def test_send_and_receive_payloads(self):
        good = answer_server(b"PONG")
        bad = answer_server(b"NOPE")
        self.addCleanup(good.close)
        self.addCleanup(bad.close)
        pg, pb = good.getsockname()[1], bad.getsockname()[1]
        st = self.socktap(config(self.port, self.admin, [pg, pb], hc_yaml(send=b"PING", receive=b"PONG")),
                          admin_port=self.admin)
        self.wait_clusters(st, "backend::127.0.0.1:%d::health_flags::/failed_active_hc" % pb)
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1)
        self.assertIn("backend::127.0.0.1:%d::health_flags::healthy" % pg, self.clusters(st))
        # a wrong answer is a failure, not a network failure; the dead-air host is never picked
        s = st.stats()
        self.assertGreaterEqual(s["cluster.backend.health_check.failure"], 1)
        for _ in range(4):
            self.assertEqual(roundtrip(self.port, b"ABCD"), b"PONG")
        self.assertEqual(st.stop(), 0)

    def test_all_unhealthy_is_panic(self):
        up = echo_server()
        self.addCleanup(up.close)
        live = up.getsockname()[1]
        # the only host answers nothing the check expects: unhealthy, yet Envoy's panic mode
        # (under 50% healthy) still routes to it
        st = self.socktap(config(self.port, self.admin, [live], hc_yaml(send=b"PING", receive=b"NEVER")),
                          admin_port=self.admin)
        st.wait_stat("cluster.backend.health_check.failure", lambda v: v >= 1)
        self.assertEqual(roundtrip(self.port, b"p"), b"p")
        self.assertGreaterEqual(st.stats()["cluster.backend.lb_healthy_panic"], 1)
        self.assertEqual(st.stop(), 0)

    def test_reload_restarts_checks(self):
        """A reload stops the old generation's checks and starts the new one's: the gauge counts
        the new hosts only, /clusters shows them, and socktap exits cleanly (no event of a
        retired generation left on the main loop)."""
        a = echo_server(tag=b"A")
        b = echo_server(tag=b"B")
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        pa, pb = a.getsockname()[1], b.getsockname()[1]
        st = self.socktap(config(self.port, self.admin, [pa], hc_yaml()), admin_port=self.admin)
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1)
        with open(st.config_path, "w") as f:
            f.write(config(self.port, self.admin, [pb, free_port()], hc_yaml()))
        req = urllib.request.Request("http://127.0.0.1:%d/reload" % self.admin, data=b"", method="POST")
        self.assertEqual(urllib.request.urlopen(req, timeout=30).status, 200)
        body = self.wait_clusters(st, "backend::127.0.0.1:%d::health_flags::healthy" % pb)
        self.assertNotIn("127.0.0.1:%d" % pa, body)
        self.wait_clusters(st, "::health_flags::/failed_active_hc")
        # one healthy host of the new generation; the old generation's count was taken back
        st.wait_stat("cluster.backend.health_check.healthy", lambda v: v == 1)
        for _ in range(3):
            self.assertEqual(roundtrip(self.port, b"r"), b"Br")
        self.assertEqual(st.stop(), 0)


if __name__ == "__main__":
    harness.main()

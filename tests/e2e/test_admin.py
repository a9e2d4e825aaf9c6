"""Admin endpoint: /stats in Envoy's text, JSON and Prometheus forms (the Prometheus text read by
the real parser, python3-prometheus-client's text_string_to_metric_families), filter/type/usedonly,
/server_info, /clusters, /help, and the errors a wrong query gets. Two listeners and two clusters
with real curl traffic, so families interleave in name order and tag extraction has work to do."""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import E2ETest, free_port  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # Debian's python3-prometheus-client (scripts/deps.sh) is installed for the system python3;
    # CTest may run another 3.11 interpreter (pyenv): the pure-Python package serves it too.
    sys.path.append("/usr/lib/python3/dist-packages")
    from prometheus_client.parser import text_string_to_metric_families


def config(lp1, lp2, up, ap, prefix):
    listener = """  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.tcp_proxy
        config: {stat_prefix: %s, cluster: %s}
%s"""
    capture = """      transport_socket:
        name: envoy.transport_sockets.capture
        config:
          file_sink: {path_prefix: %s, format: PROTO_BINARY}
          transport_socket: {name: raw_buffer}
""" % prefix
    cluster = """  - name: %s
    connect_timeout: 1s
    hosts: [{socket_address: {address: 127.0.0.1, port_value: %d}}]
"""
    return ("static_resources:\n  listeners:\n" + listener % ("one", lp1, "one_tcp", "alpha", capture)
            + listener % ("two", lp2, "two_tcp", "beta", "") + "  clusters:\n"
            + cluster % ("alpha", up) + cluster % ("beta", up)
            + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n" % ap)


class AdminTest(E2ETest):
    def setUp(self):
        super().setUp()
        with open(os.path.join(self.tmp, "a.txt"), "wb") as f:
            f.write(b"hello\n")
        up, _ = self.start_http_upstream()
        self.lp1, self.lp2, self.ap = free_port(), free_port(), free_port()
        self.cfg_text = config(self.lp1, self.lp2, up, self.ap, os.path.join(self.tmp, "cap"))
        self.st = self.socktap(self.cfg_text, admin_port=self.ap, args=["--concurrency", "2"])
        for port, n in ((self.lp1, 3), (self.lp2, 2)):
            for _ in range(n):
                r = subprocess.run(["curl", "-sS", "--max-time", "30", "http://127.0.0.1:%d/a.txt" % port],
                                   capture_output=True)
                self.assertEqual(r.stdout, b"hello\n", r.stderr)
        # the proxy counts a connection's end when both sides are done: wait for all five
        self.wait(lambda s: s.get("cluster.alpha.upstream_cx_destroy") == 3
                  and s.get("cluster.beta.upstream_cx_destroy") == 2)

    def wait(self, pred, timeout=20):
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            if pred(self.st.stats()):
                return
            time.sleep(0.05)
        self.fail("stats never got there: %r" % self.st.stats())

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.ap, path), timeout=10) as r:
                return r.status, r.headers.get("Content-Type"), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type"), e.read().decode()

    def text_stats(self, query=""):
        code, _, body = self.get("/stats" + query)
        self.assertEqual(code, 200, body)
        return dict((k, int(v)) for k, v in (line.rsplit(": ", 1) for line in body.splitlines()))

    def test_json_is_the_text_form(self):
        text = self.text_stats()
        code, ctype, body = self.get("/stats?format=json")
        self.assertEqual((code, ctype), (200, "application/json"))
        doc = json.loads(body)
        self.assertEqual(list(doc), ["stats"])
        self.assertEqual({e["name"]: e["value"] for e in doc["stats"]}, text)
        self.assertEqual(text["cluster.alpha.upstream_cx_total"], 3)
        self.assertEqual(text["cluster.beta.upstream_cx_total"], 2)

    def test_filter_type_usedonly(self):
        all_ = self.text_stats()
        got = self.text_stats("?filter=%5Ecluster%5C.alpha%5C.")  # ^cluster\.alpha\.
        self.assertTrue(got)
        self.assertEqual(got, {k: v for k, v in all_.items() if k.startswith("cluster.alpha.")})
        got = self.text_stats("?filter=cx_total&usedonly")
        self.assertEqual(got, {k: v for k, v in all_.items() if "cx_total" in k and v != 0})
        gauges = self.text_stats("?type=Gauges")
        counters = self.text_stats("?type=Counters")
        self.assertIn("cluster.alpha.upstream_cx_active", gauges)
        self.assertIn("cluster.alpha.upstream_cx_total", counters)
        self.assertEqual(set(gauges) | set(counters), set(all_))
        self.assertFalse(set(gauges) & set(counters))
        for q, msg in [("?filter=(", "invalid regex '('"), ("?format=xml", "format must be"),
                       ("?type=Histograms", "type must be")]:
            code, _, body = self.get("/stats" + q)
            self.assertEqual(code, 400, q)
            self.assertIn(msg, body)

    def test_prometheus_parses_with_envoy_names_and_labels(self):
        text = self.text_stats()
        gauges = set(self.text_stats("?type=Gauges"))
        code, ctype, body = self.get("/stats/prometheus")
        self.assertEqual(code, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        self.assertEqual(self.get("/stats?format=prometheus")[2], body)
        fams = list(text_string_to_metric_families(body))
        names = [f.name for f in fams]
        self.assertEqual(len(names), len(set(names)), "a family split in two")
        samples = {}
        for f in fams:
            self.assertIn(f.type, ("counter", "gauge"))
            for s in f.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                self.assertNotIn(key, samples)
                samples[key] = (f.type, s.value)
        self.assertEqual(len(samples), len(text))  # every stat, once
        self.assertIn("# TYPE envoy_cluster_upstream_cx_total counter\n", body)
        lbl = lambda **kw: tuple(sorted(kw.items()))  # noqa: E731
        # the parser names every counter sample NAME_total (OpenMetrics); ours are Envoy's names
        samples.update({(n[:-len("_total")], l): v for (n, l), v in list(samples.items())
                        if v[0] == "counter" and n.endswith("_total")})
        self.assertEqual(samples[("envoy_cluster_upstream_cx_total", lbl(envoy_cluster_name="alpha"))],
                         ("counter", 3))
        self.assertEqual(samples[("envoy_cluster_upstream_cx_total", lbl(envoy_cluster_name="beta"))],
                         ("counter", 2))
        self.assertEqual(samples[("envoy_cluster_upstream_cx_active", lbl(envoy_cluster_name="beta"))],
                         ("gauge", 0))
        self.assertEqual(samples[("envoy_tcp_downstream_cx_total", lbl(envoy_tcp_prefix="one_tcp"))],
                         ("counter", 3))
        addr = "127.0.0.1_%d" % self.lp1
        self.assertEqual(samples[("envoy_listener_downstream_cx_total", lbl(envoy_listener_address=addr))],
                         ("counter", 3))
        # the capture socket's stats hang off its listener: same label
        files = samples[("envoy_listener_capture_files_opened", lbl(envoy_listener_address=addr))]
        self.assertEqual(files, ("counter", text["listener.%s.capture.files_opened" % addr]))
        self.assertGreaterEqual(files[1], 3)
        # and the kinds agree with /stats?type=
        n_gauge = sum(1 for (t, _) in samples.values() if t == "gauge")
        self.assertEqual(n_gauge, len(gauges))
        # filter applies to the Envoy stat name, as in Envoy
        fams = list(text_string_to_metric_families(self.get("/stats/prometheus?filter=%5Etcp%5C.")[2]))
        self.assertEqual({s.labels.get("envoy_tcp_prefix") for f in fams for s in f.samples}, {"one_tcp", "two_tcp"})

    def test_server_info_clusters_help(self):
        code, ctype, body = self.get("/server_info")
        self.assertEqual((code, ctype), (200, "application/json"))
        info = json.loads(body)
        self.assertEqual(info["state"], "LIVE")
        self.assertTrue(info["version"].startswith("socktap/"))
        self.assertRegex(info["uptime_current_epoch"], r"^\d+s$")
        self.assertEqual(info["command_line_options"]["concurrency"], 2)
        self.assertEqual(info["command_line_options"]["config_path"], self.st.config_path)
        code, _, body = self.get("/clusters")
        self.assertEqual(code, 200)
        lines = body.splitlines()
        for c, total in (("alpha", 3), ("beta", 2)):
            self.assertIn("%s::observability_name::%s" % (c, c), lines)
            self.assertIn("%s::upstream_cx_total::%d" % (c, total), lines)
            self.assertTrue(any(l.startswith(c + "::127.0.0.1:") and l.endswith("::health_flags::healthy")
                                for l in lines), lines)
        code, _, body = self.get("/help")
        self.assertEqual(code, 200)
        for p in ("/stats:", "/stats/prometheus:", "/server_info:", "/clusters:", "/ready:", "/capture/live:"):
            self.assertIn(p, body)
        code, _, body = self.get("/nope")
        self.assertEqual(code, 404)
        self.assertIn("/help", body)
        self.assertEqual(self.st.stop(), 0)


if __name__ == "__main__":
    harness.main()

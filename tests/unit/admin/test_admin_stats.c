/* admin/admin_stats: Envoy's default tag extraction on socktap's stat names (cases from the
 * comments of Envoy's source/common/config/well_known_names.cc), the Prometheus grouping of
 * interleaved families, JSON escaping, and the query parameters. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin/admin_stats.h"

static void expect_name(const char *name, const char *metric, const char *label, const char *value)
{
    char m[256];
    struct admin_stats_tag t;
    bool tagged = admin_stats_prometheus_name(name, m, sizeof(m), &t);
    assert_string_equal(m, metric);
    if (!label) {
        assert_false(tagged);
        assert_null(t.label);
        return;
    }
    assert_true(tagged);
    assert_string_equal(t.label, label);
    assert_int_equal(t.value_len, strlen(value));
    assert_memory_equal(t.value, value, strlen(value));
}

static void test_tag_extraction(void **state)
{
    (void)state;
    expect_name("cluster.backend.upstream_cx_total", "envoy_cluster_upstream_cx_total",
                "envoy_cluster_name", "backend");
    expect_name("cluster.b.ssl.handshake", "envoy_cluster_ssl_handshake", "envoy_cluster_name",
                "b");
    expect_name("listener.127.0.0.1_10000.downstream_cx_total",
                "envoy_listener_downstream_cx_total", "envoy_listener_address", "127.0.0.1_10000");
    expect_name("listener.127.0.0.1_10000.capture.files_opened",
                "envoy_listener_capture_files_opened", "envoy_listener_address", "127.0.0.1_10000");
    expect_name("listener.[::1]_443.ssl.handshake", "envoy_listener_ssl_handshake",
                "envoy_listener_address", "[::1]_443");
    expect_name("listener.[__1]_443.downstream_cx_active", "envoy_listener_downstream_cx_active",
                "envoy_listener_address", "[__1]_443");
    /* tcp.(<stat_prefix>.)<base_stat>: the prefix may hold dots, the base stat may not */
    expect_name("tcp.ingress_tcp.downstream_cx_total", "envoy_tcp_downstream_cx_total",
                "envoy_tcp_prefix", "ingress_tcp");
    expect_name("tcp.a.b.idle_timeout", "envoy_tcp_idle_timeout", "envoy_tcp_prefix", "a.b");
    expect_name("tcp.novalue", "envoy_tcp_novalue", NULL, NULL);
    /* no extractor: every character other than [a-zA-Z0-9_] becomes '_' */
    expect_name("connection_limit.cl-1.limited_connections",
                "envoy_connection_limit_cl_1_limited_connections", NULL, NULL);
    expect_name("admin.live.viewers", "envoy_admin_live_viewers", NULL, NULL);
    /* a listener named by something that is not an address keeps its name in the metric */
    expect_name("listener.admin.x", "envoy_listener_admin_x", NULL, NULL);
}

static char *render(const struct stat_sample *s, size_t n, enum admin_stats_format f,
                    const char *query)
{
    struct admin_stats_query q;
    char why[200];
    assert_int_equal(admin_stats_query_parse(query, f, &q, why, sizeof(why)), 0);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    assert_non_null(out);
    assert_int_equal(admin_stats_write(out, s, n, &q), 0);
    fclose(out);
    admin_stats_query_fini(&q);
    return text;
}

static const struct stat_sample samples[] = {
    {"cluster.a.upstream_cx_active", STAT_GAUGE, 1},
    {"cluster.a.upstream_cx_total", STAT_COUNTER, 5},
    {"cluster.b.upstream_cx_active", STAT_GAUGE, 0},
    {"cluster.b.upstream_cx_total", STAT_COUNTER, 7},
    {"cluster.q\"\\.upstream_cx_total", STAT_COUNTER, 2},
};

static void test_prometheus_groups_families(void **state)
{
    (void)state;
    char *t = render(samples, 5, ADMIN_STATS_PROMETHEUS, NULL);
    assert_string_equal(t, "# HELP envoy_cluster_upstream_cx_active socktap gauge (Envoy naming)\n"
                           "# TYPE envoy_cluster_upstream_cx_active gauge\n"
                           "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"a\"} 1\n"
                           "envoy_cluster_upstream_cx_active{envoy_cluster_name=\"b\"} 0\n"
                           "# HELP envoy_cluster_upstream_cx_total socktap counter (Envoy naming)\n"
                           "# TYPE envoy_cluster_upstream_cx_total counter\n"
                           "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"a\"} 5\n"
                           "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"b\"} 7\n"
                           "envoy_cluster_upstream_cx_total{envoy_cluster_name=\"q\\\"\\\\\"} 2\n");
    free(t);
}

static void test_text_json_and_queries(void **state)
{
    (void)state;
    char *t = render(samples, 5, ADMIN_STATS_JSON, "filter=total$&usedonly");
    assert_string_equal(t, "{\"stats\":[\n{\"name\":\"cluster.a.upstream_cx_total\",\"value\":5},\n"
                           "{\"name\":\"cluster.b.upstream_cx_total\",\"value\":7},\n"
                           "{\"name\":\"cluster.q\\\"\\\\.upstream_cx_total\",\"value\":2}\n]}\n");
    free(t);
    t = render(samples, 5, ADMIN_STATS_TEXT, "type=Gauges&usedonly");
    assert_string_equal(t, "cluster.a.upstream_cx_active: 1\n");
    free(t);
    t = render(samples, 5, ADMIN_STATS_TEXT, "format=json&type=counters&filter=%5Ecluster%5C.b");
    assert_string_equal(
        t, "{\"stats\":[\n{\"name\":\"cluster.b.upstream_cx_total\",\"value\":7}\n]}\n");
    free(t);
    t = render(samples, 0, ADMIN_STATS_JSON, NULL);
    assert_string_equal(t, "{\"stats\":[\n]}\n");
    free(t);

    struct admin_stats_query q;
    char why[200];
    assert_int_equal(admin_stats_query_parse("filter=(", ADMIN_STATS_TEXT, &q, why, sizeof(why)),
                     -EINVAL);
    assert_non_null(strstr(why, "invalid regex '('"));
    assert_int_equal(admin_stats_query_parse("format=yaml", ADMIN_STATS_TEXT, &q, why, sizeof(why)),
                     -EINVAL);
    assert_string_equal(why, "format must be text, json or prometheus, got 'yaml'");
    assert_int_equal(
        admin_stats_query_parse("type=Histograms", ADMIN_STATS_TEXT, &q, why, sizeof(why)),
        -EINVAL);
    assert_string_equal(why, "type must be All, Counters or Gauges, got 'Histograms'");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tag_extraction),
        cmocka_unit_test(test_prometheus_groups_families),
        cmocka_unit_test(test_text_json_and_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Config module: every accepted shape (v2 and v3), the getters, and the malformed-config table
 * (bad_configs.inc), each broken file checked against its exact message and -EINVAL. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config_load_ok.h"

#include "cfgtree/cfg_node.h"
#include "config/config.h"
#include "transport/raw.h"
#include "transport/ts_registry.h"

struct bad_config {
    const char *name, *yaml, *expect;
    bool prefix; /* the message ends with a list that grows as kinds register */
};

static const struct bad_config bad_configs[] = {
#include "bad_configs.inc"
};

static void expect_error(const char *name, const char *yaml, size_t len, const char *expect,
                         bool prefix)
{
    struct cfg_err err = {0};
    struct socktap_config *cfg = (struct socktap_config *)1;
    int rc = config_load_string("t.yaml", yaml, len, &cfg, &err);
    bool match = prefix ? !strncmp(err.msg, expect, strlen(expect)) : !strcmp(err.msg, expect);
    if (rc != -EINVAL || !match)
        print_error("case %s:\n  want: %s\n  got:  %s (rc %d)\n", name, expect, err.msg, rc);
    assert_int_equal(rc, -EINVAL);
    assert_null(cfg);
    assert_true(match);
}

static void test_bad_config_table(void **state)
{
    size_t n = sizeof(bad_configs) / sizeof(bad_configs[0]);
    assert_true(n >= 40);
    for (size_t i = 0; i < n; i++)
        expect_error(bad_configs[i].name, bad_configs[i].yaml, strlen(bad_configs[i].yaml),
                     bad_configs[i].expect, bad_configs[i].prefix);
}

static void test_huge_scalar(void **state)
{
    static const char head[] = "static_resources:\n  clusters:\n  - name: ";
    size_t n = 1024 * 1024 + 1, len = sizeof(head) - 1 + n + 1;
    char *yaml = malloc(len + 1);
    assert_non_null(yaml);
    memcpy(yaml, head, sizeof(head) - 1);
    memset(yaml + sizeof(head) - 1, 'a', n);
    yaml[len - 1] = '\n';
    yaml[len] = '\0';
    expect_error("huge_scalar", yaml, len,
                 "t.yaml:3:11: static_resources.clusters[0].name: scalar of 1048577 bytes exceeds "
                 "the 1 MiB limit",
                 false);
    free(yaml);
}

/* A scalar just under the limit is fine for the parser (the config then rejects the name). */
static void test_long_scalar_described_briefly(void **state)
{
    static const char head[] = "static_resources:\n  clusters:\n  - name: x\n    type: ";
    size_t n = 100000, len = sizeof(head) - 1 + n + 1;
    char *yaml = malloc(len + 1);
    struct cfg_err err = {0};
    struct socktap_config *cfg;
    assert_non_null(yaml);
    memcpy(yaml, head, sizeof(head) - 1);
    memset(yaml + sizeof(head) - 1, 'T', n);
    yaml[len - 1] = '\n';
    yaml[len] = '\0';
    assert_int_equal(config_load_string("t.yaml", yaml, len, &cfg, &err), -EINVAL);
    assert_true(strlen(err.msg) < 300);
    assert_non_null(strstr(err.msg, "TTTT...\""));
    free(yaml);
}

/* Aliases are expanded into copies, each counted against the node cap: 10^9 "lol"s stop at one
 * million nodes, at the alias that crossed it, in bounded time and memory. */
static void test_billion_laughs(void **state)
{
    static const char yaml[] = "static_resources:\n"
                               "  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                               "  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                               "  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                               "  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                               "  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                               "  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                               "  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
                               "  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n"
                               "  i: [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]\n";
    expect_error("billion_laughs", yaml, strlen(yaml),
                 "t.yaml:7:38: static_resources.f[7]: more than 1000000 YAML nodes once aliases "
                 "are expanded: too large for a socktap config",
                 false);
}

/* Enums by number, as protobuf's JSON parser (Envoy's YAML path) takes them: lb_policy 3 is
 * RANDOM, 1 LEAST_REQUEST (api/envoy/config/cluster/v3/cluster.proto); a quoted number is a
 * name, not a number. */
static void test_numeric_enums(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  clusters:\n"
        "  - {name: a, lb_policy: 3, type: 0, hosts: [{address: 127.0.0.1, "
        "port_value: 1, protocol: 0}]}\n"
        "  - {name: b, lb_policy: 1, dns_lookup_family: 1, hosts: [{address: "
        "127.0.0.1, port_value: 1}]}\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_int_equal(cfg->clusters[0].lb_policy, CFG_LB_RANDOM);
    assert_int_equal(cfg->clusters[0].type, CFG_CLUSTER_STATIC);
    assert_int_equal(cfg->clusters[1].lb_policy, CFG_LB_LEAST_REQUEST);
    config_free(cfg);
    static const char quoted[] = "static_resources:\n"
                                 "  clusters:\n"
                                 "  - {name: a, lb_policy: \"3\", hosts: [{address: 127.0.0.1, "
                                 "port_value: 1}]}\n";
    expect_error("quoted_number", quoted, strlen(quoted),
                 "t.yaml:3:26: static_resources.clusters[0].lb_policy: expected one of ROUND_ROBIN "
                 "(0), RANDOM (3), LEAST_REQUEST (1), CLUSTER_PROVIDED (6), got \"3\"",
                 false);
}

/* proto3 JSON names (lowerCamelCase), which Envoy's loader takes beside the proto names: the
 * same config, and a field written in both spellings is a duplicate. */
static void test_camel_case_names(void **state)
{
    static const char yaml[] =
        "staticResources:\n"
        "  listeners:\n"
        "  - address: {socketAddress: {address: 127.0.0.1, portValue: 0}}\n"
        "    perConnectionBufferLimitBytes: 65536\n"
        "    filterChains:\n"
        "    - filters:\n"
        "      - name: envoy.filters.network.tcp_proxy\n"
        "        typedConfig:\n"
        "          \"@type\": "
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
        "          statPrefix: p\n"
        "          cluster: c\n"
        "          idleTimeout: 7s\n"
        "  clusters:\n"
        "  - name: c\n"
        "    connectTimeout: 2s\n"
        "    lbPolicy: LEAST_REQUEST\n"
        "    loadAssignment:\n"
        "      clusterName: c\n"
        "      endpoints: [{lbEndpoints: [{endpoint: {address: {socketAddress: {address: "
        "127.0.0.1, "
        "portValue: 9}}}}]}]\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_int_equal(cfg->listeners[0].buffer_limit, 65536);
    assert_string_equal(cfg->listeners[0].chains[0].tcp_proxy.stat_prefix, "p");
    assert_int_equal(cfg->listeners[0].chains[0].tcp_proxy.idle_timeout_ms, 7000);
    assert_int_equal(cfg->clusters[0].connect_timeout_ms, 2000);
    assert_int_equal(cfg->clusters[0].lb_policy, CFG_LB_LEAST_REQUEST);
    assert_string_equal(cfg->clusters[0].hosts[0].text, "127.0.0.1:9");
    config_free(cfg);
    static const char dup[] = "static_resources:\n"
                              "  clusters:\n"
                              "  - name: c\n"
                              "    hosts: [{address: 127.0.0.1, port_value: 1, portValue: 2}]\n";
    expect_error("camel_dup", dup, strlen(dup),
                 "t.yaml:4:49: static_resources.clusters[0].hosts[0].portValue: duplicate key "
                 "'portValue': the same field as 'port_value' (4:34)",
                 false);
}

/* An Envoy bootstrap's other fields: the L4-irrelevant ones are accepted (and warned about, at
 * load), application_log_config becomes the log pattern (Envoy's json_format as one JSON object
 * per line, keys escaped, literals kept). */
static void test_bootstrap_fields(void **state)
{
    static const char yaml[] = "node: {id: a, cluster: b}\n"
                               "layered_runtime: {layers: [{name: static, static_layer: {}}]}\n"
                               "stats_sinks: [{name: envoy.stat_sinks.statsd}]\n"
                               "overload_manager: {refresh_interval: 0.25s}\n"
                               "cluster_manager: {local_cluster_name: x}\n"
                               "application_log_config:\n"
                               "  log_format:\n"
                               "    json_format: {Time: \"%Y-%m-%dT%T.%eZ\", \"a\\\"b\": \"%l\", "
                               "N: 1, On: true, Msg: \"%j\"}\n"
                               "static_resources: {}\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_string_equal(cfg->log_format, "{\"Time\":\"%Y-%m-%dT%T.%eZ\",\"a\\\"b\":\"%l\",\"N\":1,"
                                         "\"On\":true,\"Msg\":\"%j\"}");
    config_free(cfg);
    static const char text[] = "application_log_config: {log_format: {text_format: \"%l %v\"}}\n"
                               "static_resources: {}\n";
    cfg = load_ok(text);
    assert_string_equal(cfg->log_format, "%l %v");
    config_free(cfg);
}

/* Anchors, aliases and merge keys as YAML users write them to share settings (Envoy's loader
 * takes them): the config is the one with everything written out. */
static void test_anchors_and_merge_keys(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  listeners:\n"
        "  - address: {socket_address: &lo {address: 127.0.0.1, port_value: 0}}\n"
        "    filter_chains: &chains [{filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, "
        "cluster: b}}]}]\n"
        "  - address: {socket_address: *lo}\n"
        "    filter_chains: *chains\n"
        "  clusters:\n"
        "  - &base\n"
        "    name: a\n"
        "    connect_timeout: 2s\n"
        "    lb_policy: RANDOM\n"
        "    hosts: [{address: 127.0.0.1, port_value: 1}]\n"
        "  - <<: *base\n"
        "    name: b\n"
        "    hosts: [{address: 127.0.0.1, port_value: 2}]\n"
        "  - <<: [{name: c, connect_timeout: 3s}, *base]\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_int_equal(cfg->nlisteners, 2);
    assert_int_equal(cfg->nclusters, 3);
    assert_string_equal(cfg->listeners[1].addr.text, "127.0.0.1:0");
    assert_string_equal(cfg->listeners[1].chains[0].tcp_proxy.cluster_name, "b");
    assert_string_equal(cfg->clusters[1].name, "b"); /* explicit keys win */
    assert_int_equal(cfg->clusters[1].connect_timeout_ms, 2000);
    assert_int_equal(cfg->clusters[1].lb_policy, CFG_LB_RANDOM);
    assert_string_equal(cfg->clusters[1].hosts[0].text, "127.0.0.1:2");
    assert_string_equal(cfg->clusters[2].name, "c"); /* then the earlier mapping of the list */
    assert_int_equal(cfg->clusters[2].connect_timeout_ms, 3000);
    assert_int_equal(cfg->clusters[2].lb_policy, CFG_LB_RANDOM);
    assert_string_equal(cfg->clusters[2].hosts[0].text, "127.0.0.1:1");
    config_free(cfg);
}

static void test_missing_file(void **state)
{
    struct cfg_err err = {0};
    struct socktap_config *cfg;
    int rc = config_load("/nonexistent/socktap.yaml", &cfg, &err);
    assert_int_equal(rc, -ENOENT);
    assert_null(cfg);
    assert_string_equal(err.msg,
                        "/nonexistent/socktap.yaml: cannot open: No such file or directory");
}

static void test_file_name_in_message(void **state)
{
    static const char yaml[] = "static_resources:\n  clusters: 7\n";
    char path[] = "/tmp/socktap-cfg-XXXXXX", expect[128];
    struct cfg_err err = {0};
    struct socktap_config *cfg;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, sizeof(yaml) - 1), (ssize_t)(sizeof(yaml) - 1));
    close(fd);
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    snprintf(expect, sizeof(expect),
             "%s:2:13: static_resources.clusters: expected a sequence, got \"7\"", path);
    assert_string_equal(err.msg, expect);
    unlink(path);
}

/* A FIFO as -c hung forever in fopen (issue 9); now refused at once. alarm() turns a hang back
 * into a failure instead of a stuck suite. */
static void test_fifo_and_directory_refused(void **state)
{
    char dir[] = "/tmp/socktap-cfg-XXXXXX", path[64], expect[160];
    struct cfg_err err = {0};
    struct socktap_config *cfg = NULL;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/fifo.yaml", dir);
    assert_int_equal(mkfifo(path, 0600), 0);
    alarm(20);
    assert_int_equal(config_load(path, &cfg, &err), -EINVAL);
    alarm(0);
    assert_null(cfg);
    snprintf(expect, sizeof(expect), "%s: not a regular file (a FIFO); a config must be a file",
             path);
    assert_string_equal(err.msg, expect);
    memset(&err, 0, sizeof(err)); /* the first error set is the one kept */
    assert_int_equal(config_load(dir, &cfg, &err), -EINVAL);
    snprintf(expect, sizeof(expect),
             "%s: not a regular file (a directory); a config must be a file", dir);
    assert_string_equal(err.msg, expect);
    unlink(path);
    rmdir(dir);
}

/* 200k keys in one mapping: all distinct is accepted (the scan was quadratic, > 30 s), and one
 * repeated at the end is still found, naming both places. */
static void test_many_keys_duplicate_found(void **state)
{
    const size_t n = 200000;
    size_t cap = n * 24 + 64, len = 0;
    char *yaml = malloc(cap);
    struct cfg_err err = {0};
    struct cfg_doc *doc = NULL;
    assert_non_null(yaml);
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(yaml + len, cap - len, "k%zu: %zu\n", i, i);
    assert_int_equal(cfg_doc_load_string("t.yaml", yaml, len, &doc, &err), 0);
    assert_non_null(doc);
    cfg_doc_free(doc);
    doc = NULL;
    len += (size_t)snprintf(yaml + len, cap - len, "k123: again\n");
    assert_int_equal(cfg_doc_load_string("t.yaml", yaml, len, &doc, &err), -EINVAL);
    assert_null(doc);
    assert_string_equal(err.msg, "t.yaml:200001:1: k123: duplicate key 'k123' (first defined at "
                                 "124:1)");
    free(yaml);
}

/* A 20M-element sequence took 2.3 GB and was accepted; past the node cap it is refused where
 * the cap is crossed. */
static void test_node_cap(void **state)
{
    const size_t n = 1000001;
    size_t len = 0;
    char *yaml = malloc(n * 2 + 16);
    struct cfg_err err = {0};
    struct cfg_doc *doc = NULL;
    assert_non_null(yaml);
    yaml[len++] = '[';
    for (size_t i = 0; i < n; i++) {
        yaml[len++] = '1';
        yaml[len++] = i + 1 < n ? ',' : ']';
    }
    yaml[len++] = '\n';
    assert_int_equal(cfg_doc_load_string("t.yaml", yaml, len, &doc, &err), -EINVAL);
    assert_null(doc);
    assert_non_null(
        strstr(err.msg, "more than 1000000 YAML nodes: too large for a socktap config"));
    free(yaml);
}

static void test_v2_example(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  listeners:\n"
        "  - name: ingress\n"
        "    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
        "    per_connection_buffer_limit_bytes: 65536\n"
        "    filter_chains:\n"
        "    - filters:\n"
        "      - name: envoy.tcp_proxy\n"
        "        config:\n"
        "          stat_prefix: ingress_tcp\n"
        "          cluster: backend\n"
        "          idle_timeout: 300s\n"
        "      transport_socket: {name: raw_buffer}\n"
        "  clusters:\n"
        "  - name: backend\n"
        "    connect_timeout: 0.25s\n"
        "    type: STATIC\n"
        "    lb_policy: RANDOM\n"
        "    hosts: [{socket_address: {address: 127.0.0.1, port_value: 8080}},\n"
        "            {socket_address: {address: 127.0.0.2, port_value: 8081, protocol: TCP}}]\n"
        "    transport_socket: {name: envoy.transport_sockets.raw_buffer, config: {}}\n"
        "admin:\n"
        "  access_log_path: /dev/null\n"
        "  profile_path: /tmp/prof\n"
        "  address: {socket_address: {address: 127.0.0.1, port_value: 9901}}\n"
        "node: {id: a, cluster: b}\n";
    struct socktap_config *cfg = load_ok(yaml);
    const struct cfg_listener *l = &cfg->listeners[0];
    const struct cfg_cluster *c = &cfg->clusters[0];

    assert_int_equal(cfg->nlisteners, 1);
    assert_int_equal(cfg->nclusters, 1);
    assert_string_equal(l->name, "ingress");
    assert_string_equal(l->addr.text, "127.0.0.1:10000");
    assert_string_equal(l->addr.stat_name, "127.0.0.1_10000");
    assert_string_equal(l->owner_name, "listener.127.0.0.1_10000");
    assert_int_equal(l->addr.ss.ss_family, AF_INET);
    assert_int_equal(l->buffer_limit, 65536);
    assert_int_equal(l->max_connections, 0);
    assert_string_equal(l->chains[0].tcp_proxy.stat_prefix, "ingress_tcp");
    assert_string_equal(l->chains[0].tcp_proxy.cluster_name, "backend");
    assert_ptr_equal(l->chains[0].tcp_proxy.cluster, c);
    assert_int_equal(l->chains[0].tcp_proxy.idle_timeout_ms, 300000);
    assert_ptr_equal(l->chains[0].ts.factory, &raw_socket_factory);

    assert_string_equal(c->name, "backend");
    assert_string_equal(c->owner_name, "cluster.backend");
    assert_int_equal(c->connect_timeout_ms, 250);
    assert_int_equal(c->type, CFG_CLUSTER_STATIC);
    assert_int_equal(c->lb_policy, CFG_LB_RANDOM);
    assert_int_equal(c->nhosts, 2);
    assert_string_equal(c->hosts[0].text, "127.0.0.1:8080");
    assert_string_equal(c->hosts[1].text, "127.0.0.2:8081");
    assert_int_equal(c->buffer_limit, CFG_DEFAULT_BUFFER_LIMIT);
    assert_ptr_equal(c->ts.factory, &raw_socket_factory);

    assert_true(cfg->admin.enabled);
    assert_string_equal(cfg->admin.addr.text, "127.0.0.1:9901");
    config_free(cfg);
}

static void test_v3_typed_ipv6_load_assignment(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  listeners:\n"
        "  - address:\n"
        "      socket_address:\n"
        "        address: \"::1\"\n"
        "        port_value: 10000\n"
        "    filter_chains:\n"
        "    - name: main\n"
        "      transport_socket_connect_timeout: 2.5s\n"
        "      filters:\n"
        "      - name: envoy.filters.network.connection_limit\n"
        "        typed_config:\n"
        "          \"@type\": type.googleapis.com/"
        "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit\n"
        "          stat_prefix: limit\n"
        "          max_connections: 50\n"
        "      - name: envoy.filters.network.tcp_proxy\n"
        "        typed_config:\n"
        "          \"@type\": type.googleapis.com/"
        "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n"
        "          stat_prefix: v3\n"
        "          cluster: up\n"
        "          idle_timeout: 0s\n"
        "      transport_socket:\n"
        "        name: envoy.transport_sockets.raw_buffer\n"
        "        typed_config:\n"
        "          \"@type\": type.googleapis.com/"
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer\n"
        "  clusters:\n"
        "  - name: up\n"
        "    connect_timeout: {seconds: 2, nanos: 500000000}\n"
        "    lb_policy: LEAST_REQUEST\n"
        "    per_connection_buffer_limit_bytes: 32768\n"
        "    circuit_breakers:\n"
        "      thresholds:\n"
        "      - {priority: HIGH, max_connections: 7}\n"
        "      - {priority: DEFAULT, max_connections: 100, max_requests: 5}\n"
        "    load_assignment:\n"
        "      cluster_name: up\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        "        - endpoint: {address: {socket_address: {address: \"::1\", port_value: 8080}}}\n"
        "        - endpoint: {address: {socket_address: {address: 10.1.2.3, port_value: 80}}}\n"
        "      - lb_endpoints:\n"
        "        - endpoint: {address: {socket_address: {address: \"fe80::1\", port_value: 1}}}\n";
    struct socktap_config *cfg = load_ok(yaml);
    const struct cfg_listener *l = &cfg->listeners[0];
    const struct cfg_cluster *c = &cfg->clusters[0];

    assert_int_equal(l->addr.ss.ss_family, AF_INET6);
    assert_string_equal(l->addr.text, "[::1]:10000");
    assert_string_equal(l->addr.stat_name, "[::1]_10000");
    assert_string_equal(l->name, "[::1]:10000"); /* default name: the address */
    assert_int_equal(l->max_connections, 50);
    assert_int_equal(l->buffer_limit, CFG_DEFAULT_BUFFER_LIMIT);
    assert_string_equal(l->chains[0].tcp_proxy.stat_prefix, "v3");
    assert_int_equal(l->chains[0].tcp_proxy.idle_timeout_ms, 0);
    assert_int_equal(l->chains[0].transport_connect_timeout_ms, 2500);
    assert_ptr_equal(l->chains[0].tcp_proxy.cluster, c);
    assert_ptr_equal(l->chains[0].ts.factory, &raw_socket_factory);
    assert_int_equal(c->connect_timeout_ms, 2500);
    assert_int_equal(c->lb_policy, CFG_LB_LEAST_REQUEST);
    assert_int_equal(c->buffer_limit, 32768);
    assert_int_equal(c->max_connections, 100);
    assert_int_equal(c->nhosts, 3);
    assert_string_equal(c->hosts[0].text, "[::1]:8080");
    assert_string_equal(c->hosts[1].text, "10.1.2.3:80");
    assert_string_equal(c->hosts[2].text, "[fe80::1]:1");
    assert_false(cfg->admin.enabled);
    config_free(cfg);
}

static void test_defaults(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  listeners:\n"
        "  - address: {socket_address: {address: 0.0.0.0, port_value: 0}}\n"
        "    filter_chains: [{filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, "
        "cluster: c}}]}]\n"
        "  - address: {socket_address: {address: 0.0.0.0, port_value: 0}}\n"
        "    filter_chains: [{filters: [{name: envoy.tcp_proxy, config: {stat_prefix: q, "
        "cluster: c}}]}]\n"
        "  clusters:\n"
        "  - name: c\n"
        "    hosts: [{address: 127.0.0.1, port_value: 1}]\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_int_equal(cfg->nlisteners, 2); /* port 0 twice is not a duplicate: ephemeral */
    assert_int_equal(cfg->listeners[0].chains[0].tcp_proxy.idle_timeout_ms, 3600000);
    assert_int_equal(cfg->listeners[0].chains[0].transport_connect_timeout_ms,
                     10000); /* socktap's */
    assert_int_equal(cfg->clusters[0].connect_timeout_ms, 5000);
    assert_int_equal(cfg->clusters[0].type, CFG_CLUSTER_STATIC);
    assert_int_equal(cfg->clusters[0].lb_policy, CFG_LB_ROUND_ROBIN);
    assert_int_equal(cfg->clusters[0].max_connections, 0);
    assert_string_equal(cfg->clusters[0].hosts[0].text, "127.0.0.1:1");
    assert_ptr_equal(cfg->clusters[0].ts.factory, &raw_socket_factory);
    assert_null(cfg->clusters[0].ts.cfg);
    config_free(cfg);
}

/* An empty `config:` or `typed_config:` on a transport socket is no settings, the kind's
 * defaults, as in Envoy (translateOpaqueConfig in source/common/config/utility.cc). The filter
 * side is in bad_configs.inc (filter_config_empty). */
static void test_empty_extension_settings(void **state)
{
    static const char *const keys[] = {"config", "typed_config"};
    for (size_t i = 0; i < 2; i++) {
        char yaml[1024];
        snprintf(yaml, sizeof(yaml),
                 "static_resources:\n"
                 "  listeners:\n"
                 "  - address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"
                 "    filter_chains:\n"
                 "    - filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, cluster: c}}]\n"
                 "      transport_socket:\n"
                 "        name: raw_buffer\n"
                 "        %s:\n"
                 "  clusters:\n"
                 "  - name: c\n"
                 "    hosts: [{address: 127.0.0.1, port_value: 1}]\n"
                 "    transport_socket: {name: raw_buffer, %s: }\n",
                 keys[i], keys[i]);
        struct socktap_config *cfg = load_ok(yaml);
        assert_ptr_equal(cfg->listeners[0].chains[0].ts.factory, &raw_socket_factory);
        assert_ptr_equal(cfg->clusters[0].ts.factory, &raw_socket_factory);
        config_free(cfg);
    }
}

static void test_dns_clusters(void **state)
{
    static const char yaml[] =
        "static_resources:\n"
        "  clusters:\n"
        "  - name: strict\n"
        "    type: STRICT_DNS\n"
        "    hosts: [{socket_address: {address: localhost, port_value: 8080}}]\n"
        "  - name: logical\n"
        "    type: LOGICAL_DNS\n"
        "    dns_lookup_family: V4_ONLY\n"
        "    load_assignment:\n"
        "      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: "
        "{address: localhost, port_value: 9}}}}]}]\n";
    struct socktap_config *cfg = load_ok(yaml);
    assert_int_equal(cfg->nclusters, 2);
    assert_int_equal(cfg->clusters[0].type, CFG_CLUSTER_STRICT_DNS);
    assert_true(cfg->clusters[0].nhosts >= 1);
    /* IPv4 preferred, so a 127.0.0.1-bound upstream is reachable through "localhost". */
    assert_string_equal(cfg->clusters[0].hosts[0].text, "127.0.0.1:8080");
    assert_int_equal(cfg->clusters[1].type, CFG_CLUSTER_LOGICAL_DNS);
    assert_int_equal(cfg->clusters[1].nhosts, 1);
    assert_string_equal(cfg->clusters[1].hosts[0].text, "127.0.0.1:9");
    config_free(cfg);
}

static void test_empty_static_resources(void **state)
{
    struct socktap_config *cfg = load_ok("static_resources: {}\nnode: {id: x}\n");
    assert_int_equal(cfg->nlisteners, 0);
    assert_int_equal(cfg->nclusters, 0);
    config_free(cfg);
}

static void test_durations(void **state)
{
    static const struct {
        const char *yaml;
        uint64_t ms;
    } cases[] = {
        {"d: 1.5s", 1500},
        {"d: 250ms", 250},
        {"d: 0s", 0},
        {"d: 300s", 300000},
        {"d: \"10\"", 10000},
        {"d: 2m", 120000},
        {"d: 1h", 3600000},
        {"d: 1us", 1},
        {"d: 0.0001s", 1},
        {"d: 0.25s", 250},
        {"d: {seconds: 3}", 3000},
        {"d: {nanos: 1}", 1},
        {"d: {seconds: 1, nanos: 500000000}", 1500},
        {"d: 1500000ns", 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cfg_err err = {0};
        struct cfg_doc *doc;
        struct cfg_path p = CFG_PATH_KEY(NULL, "d");
        uint64_t ms = 12345;
        assert_int_equal(
            cfg_doc_load_string("d.yaml", cases[i].yaml, strlen(cases[i].yaml), &doc, &err), 0);
        int rc = cfg_get_duration_ms(&err, doc, cfg_map_get(doc->root, "d"), &p, &ms);
        if (rc || ms != cases[i].ms)
            print_error("%s -> %d %s ms=%llu\n", cases[i].yaml, rc, err.msg,
                        (unsigned long long)ms);
        assert_int_equal(rc, 0);
        assert_int_equal(ms, cases[i].ms);
        cfg_doc_free(doc);
    }
}

static void test_nodes_and_getters(void **state)
{
    static const char yaml[] = "a:\n"
                               "  - x: 'quoted'\n"
                               "    y: true\n"
                               "  - \"a\\nb\\\"c\"\n"
                               "b: ~\n"
                               "c: 18446744073709551615\n"
                               "d: 18446744073709551616\n";
    struct cfg_err err = {0};
    struct cfg_doc *doc;
    char buf[128];
    const char *s;
    bool b;
    uint64_t u;
    int idx;
    static const char *const names[] = {"quoted", "other", NULL};

    assert_int_equal(cfg_doc_load_string("n.yaml", yaml, strlen(yaml), &doc, &err), 0);
    const struct cfg_node *a = cfg_map_get(doc->root, "a");
    assert_non_null(a);
    assert_int_equal(a->type, CFG_SEQ);
    assert_int_equal(a->line, 2);
    assert_int_equal(a->col, 3);
    const struct cfg_node *x = cfg_map_get(a->items[0], "x");
    assert_int_equal(x->line, 2);
    assert_int_equal(x->col, 8);
    assert_true(x->quoted);

    struct cfg_path pa = CFG_PATH_KEY(NULL, "a"), p0 = CFG_PATH_INDEX(&pa, 0);
    struct cfg_path px = CFG_PATH_KEY(&p0, "x"), py = CFG_PATH_KEY(&p0, "y");
    assert_string_equal(cfg_path_format(&px, buf, sizeof(buf)), "a[0].x");
    assert_int_equal(cfg_get_string(&err, doc, x, &px, &s), 0);
    assert_string_equal(s, "quoted");
    assert_int_equal(cfg_get_enum(&err, doc, x, &px, names, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(cfg_get_bool(&err, doc, cfg_map_get(a->items[0], "y"), &py, &b), 0);
    assert_true(b);
    assert_string_equal(cfg_node_describe(a->items[1], buf, sizeof(buf)), "\"a\\nb\\\"c\"");
    assert_true(cfg_node_is_null(cfg_map_get(doc->root, "b")));
    assert_false(cfg_node_is_null(x));

    struct cfg_path pc = CFG_PATH_KEY(NULL, "c"), pd = CFG_PATH_KEY(NULL, "d");
    assert_int_equal(cfg_get_u64(&err, doc, cfg_map_get(doc->root, "c"), &pc, 0, UINT64_MAX, &u),
                     0);
    assert_true(u == UINT64_MAX);
    assert_false(err.set);
    assert_int_equal(cfg_get_u64(&err, doc, cfg_map_get(doc->root, "d"), &pd, 0, UINT64_MAX, &u),
                     -EINVAL);
    assert_string_equal(
        err.msg, "n.yaml:7:4: d: expected a non-negative integer, got \"18446744073709551616\"");
    /* First error wins. */
    assert_int_equal(cfg_get_bool(&err, doc, x, &px, &b), -EINVAL);
    assert_non_null(strstr(err.msg, "n.yaml:7:4"));

    static const char *const allowed[] = {"a", "b", "c", NULL};
    struct cfg_err err2 = {0};
    assert_int_equal(cfg_check_keys(&err2, doc, doc->root, NULL, allowed), -EINVAL);
    assert_string_equal(err2.msg, "n.yaml:7:1: d: unknown key 'd' (expected one of: a, b, c)");

    /* typed_config minus "@type": a view owned by the document. */
    const struct cfg_node *view = cfg_map_without(doc, a->items[0], "x");
    assert_non_null(view);
    assert_int_equal(view->n, 1);
    assert_null(cfg_map_get(view, "x"));
    assert_non_null(cfg_map_get(view, "y"));
    assert_ptr_equal(cfg_map_without(doc, a->items[0], "zzz"), a->items[0]);
    cfg_doc_free(doc);
}

static void test_address_parser(void **state)
{
    static const char yaml[] = "a: {socket_address: {address: 192.0.2.1, port_value: 443}}\n"
                               "b: {address: \"2001:db8::2\", port_value: 65535}\n";
    struct cfg_err err = {0};
    struct cfg_doc *doc;
    struct cfg_address addr;
    struct cfg_path pa = CFG_PATH_KEY(NULL, "a"), pb = CFG_PATH_KEY(NULL, "b");
    assert_int_equal(cfg_doc_load_string("a.yaml", yaml, strlen(yaml), &doc, &err), 0);
    assert_int_equal(cfg_parse_address(&err, doc, cfg_map_get(doc->root, "a"), &pa, &addr), 0);
    assert_string_equal(addr.text, "192.0.2.1:443");
    assert_int_equal(addr.len, sizeof(struct sockaddr_in));
    assert_int_equal(cfg_parse_address(&err, doc, cfg_map_get(doc->root, "b"), &pb, &addr), 0);
    assert_string_equal(addr.text, "[2001:db8::2]:65535");
    assert_string_equal(addr.stat_name, "[2001:db8::2]_65535");
    assert_int_equal(addr.len, sizeof(struct sockaddr_in6));
    cfg_doc_free(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_config_table),
        cmocka_unit_test(test_huge_scalar),
        cmocka_unit_test(test_long_scalar_described_briefly),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_anchors_and_merge_keys),
        cmocka_unit_test(test_numeric_enums),
        cmocka_unit_test(test_camel_case_names),
        cmocka_unit_test(test_bootstrap_fields),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_file_name_in_message),
        cmocka_unit_test(test_fifo_and_directory_refused),
        cmocka_unit_test(test_many_keys_duplicate_found),
        cmocka_unit_test(test_node_cap),
        cmocka_unit_test(test_v2_example),
        cmocka_unit_test(test_v3_typed_ipv6_load_assignment),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_extension_settings),
        cmocka_unit_test(test_dns_clusters),
        cmocka_unit_test(test_empty_static_resources),
        cmocka_unit_test(test_durations),
        cmocka_unit_test(test_nodes_and_getters),
        cmocka_unit_test(test_address_parser),
    };
    ts_registry_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* cfg_chain_select: Envoy's filter chain selection order
 * (source/common/listener_manager/filter_chain_manager_impl.cc, findFilterChain and its
 * per-level helpers) over configs loaded as a user writes them. Each case names the rule. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config_load_ok.h"

#include "config/config.h"
#include "transport/ts_registry.h"

#define HEAD                                                                                       \
    "static_resources:\n"                                                                          \
    "  clusters:\n"                                                                                \
    "  - name: b\n"                                                                                \
    "    hosts: [{socket_address: {address: 127.0.0.1, port_value: 9}}]\n"                         \
    "  listeners:\n"                                                                               \
    "  - address: {socket_address: {address: 0.0.0.0, port_value: 10000}}\n"                       \
    "    filter_chains:\n"
#define CHAIN(name, match)                                                                         \
    "    - name: " name "\n"                                                                       \
    "      filter_chain_match: " match "\n"                                                        \
    "      filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, cluster: b}}]\n"
#define DEFAULT                                                                                    \
    "    default_filter_chain:\n"                                                                  \
    "      name: default\n"                                                                        \
    "      filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, cluster: b}}]\n"

static void addr(struct sockaddr_in *sa, const char *ip, uint16_t port)
{
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &sa->sin_addr), 1);
}

/* The name of the chain for a connection from SRC:SPORT to DST:DPORT with SNI, or "none". */
static const char *pick(const struct socktap_config *cfg, const char *src, uint16_t sport,
                        const char *dst, uint16_t dport, const char *sni, const char *tp,
                        const char *alpn)
{
    struct sockaddr_in l, p;
    const char *protos[1] = {alpn};
    addr(&l, dst, dport);
    addr(&p, src, sport);
    struct cfg_chain_conn c = {.local = (struct sockaddr *)&l,
                               .peer = (struct sockaddr *)&p,
                               .server_name = sni,
                               .transport_protocol = tp,
                               .alpn = protos,
                               .nalpn = alpn ? 1 : 0};
    const struct cfg_filter_chain *fc = cfg_chain_select(&cfg->listeners[0], &c);
    return fc ? fc->name : "none";
}

static void test_server_names(void **state)
{
    (void)state;
    struct socktap_config *cfg =
        load_ok(HEAD CHAIN("exact", "{server_names: [www.example.com]}")
                    CHAIN("wild", "{server_names: ['*.example.com']}")
                        CHAIN("deeper", "{server_names: ['*.b.example.com']}")
                            CHAIN("any", "{transport_protocol: tls}"));
    assert_string_equal(pick(cfg, "10.0.0.1", 1, "10.0.0.2", 10000, "www.example.com", "tls", 0),
                        "exact");
    assert_string_equal(pick(cfg, "10.0.0.1", 1, "10.0.0.2", 10000, "x.example.com", "tls", 0),
                        "wild");
    assert_string_equal(pick(cfg, "10.0.0.1", 1, "10.0.0.2", 10000, "a.b.example.com", "tls", 0),
                        "deeper");
    /* a wildcard needs at least one label in front */
    assert_string_equal(pick(cfg, "10.0.0.1", 1, "10.0.0.2", 10000, "example.com", "tls", 0),
                        "any");
    /* the server-name level comes before transport: a chain without names takes the rest, and
     * a raw connection matches nothing */
    assert_string_equal(pick(cfg, "10.0.0.1", 1, "10.0.0.2", 10000, "", "raw_buffer", 0), "none");
    config_free(cfg);
}

static void test_no_backtracking_and_default(void **state)
{
    (void)state;
    struct socktap_config *cfg =
        load_ok(HEAD CHAIN("port", "{destination_port: 10000, source_ports: [5]}") CHAIN(
            "src", "{source_prefix_ranges: [{address_prefix: 10.1.0.0, prefix_len: 16}]}") DEFAULT);
    /* destination_port decides first: "src" is never considered for port 10000, and once the
     * port chain's source port does not match, the default chain takes it (Envoy: no match on
     * the narrowed set, then default_filter_chain) */
    assert_string_equal(pick(cfg, "10.1.2.3", 5, "10.0.0.2", 10000, "", "raw_buffer", 0), "port");
    assert_string_equal(pick(cfg, "10.1.2.3", 6, "10.0.0.2", 10000, "", "raw_buffer", 0),
                        "default");
    /* another local port (the listener's address is 0.0.0.0 with the same port in real life,
     * but the selection only looks at the local address) */
    assert_string_equal(pick(cfg, "10.1.2.3", 6, "10.0.0.2", 10001, "", "raw_buffer", 0), "src");
    assert_string_equal(pick(cfg, "10.2.2.3", 6, "10.0.0.2", 10001, "", "raw_buffer", 0),
                        "default");
    config_free(cfg);
}

static void test_prefixes_source_type_alpn(void **state)
{
    (void)state;
    struct socktap_config *cfg = load_ok(
        HEAD CHAIN("dst8", "{prefix_ranges: [{address_prefix: 10.0.0.0, prefix_len: 8}]}")
            CHAIN("dst24", "{prefix_ranges: [{address_prefix: 10.9.9.7, prefix_len: 24}]}") CHAIN(
                "dst24_local", "{prefix_ranges: [{address_prefix: 10.9.9.0, prefix_len: 24}], "
                               "source_type: SAME_IP_OR_LOOPBACK}")
                CHAIN("h2", "{prefix_ranges: [{address_prefix: 192.168.0.0, prefix_len: 16}], "
                            "application_protocols: [h2]}")
                    CHAIN("nh2", "{prefix_ranges: [{address_prefix: 192.168.0.0, "
                                 "prefix_len: 16}]}"));
    assert_string_equal(pick(cfg, "1.2.3.4", 1, "10.1.1.1", 1, "", "raw_buffer", 0), "dst8");
    /* longest destination prefix; host bits of 10.9.9.7/24 were cleared at load */
    assert_string_equal(pick(cfg, "1.2.3.4", 1, "10.9.9.1", 1, "", "raw_buffer", 0), "dst24");
    /* the same source IP as the local one is SAME_IP_OR_LOOPBACK, more specific than ANY */
    assert_string_equal(pick(cfg, "10.9.9.1", 1, "10.9.9.1", 1, "", "raw_buffer", 0),
                        "dst24_local");
    assert_string_equal(pick(cfg, "127.0.0.9", 1, "10.9.9.1", 1, "", "raw_buffer", 0),
                        "dst24_local");
    assert_string_equal(pick(cfg, "1.1.1.1", 1, "192.168.1.1", 1, "", "tls", "h2"), "h2");
    assert_string_equal(pick(cfg, "1.1.1.1", 1, "192.168.1.1", 1, "", "tls", "http/1.1"), "nh2");
    assert_string_equal(pick(cfg, "1.1.1.1", 1, "172.16.1.1", 1, "", "tls", 0), "none");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_names),
        cmocka_unit_test(test_no_backtracking_and_default),
        cmocka_unit_test(test_prefixes_source_type_alpn),
    };
    ts_registry_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

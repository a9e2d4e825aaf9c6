/* Envoy bootstrap (v2 and v3 shapes) -> struct socktap_config.
 *
 * Design: one pass per object over the node tree, strict about keys (an unknown key is a typo
 * the SRE wants to hear about, not a silently ignored setting), then cross checks (clusters
 * named by tcp_proxy exist, names and addresses unique) that report the position of the second
 * occurrence. Strings point into the kept document, so nothing is copied but owner names.
 *
 * Choices worth knowing:
 * - DNS clusters resolve once at load, IPv4 preferred with IPv6 as fallback (Envoy's
 *   V4_PREFERRED), unless dns_lookup_family says otherwise: "localhost" must reach a loopback
 *   upstream bound to 127.0.0.1, which Envoy's AUTO (IPv6 first) would miss.
 * - circuit_breakers default to no limit (Envoy defaults to 1024 connections): a capture proxy
 *   should not start refusing traffic nobody asked it to limit.
 * - HTTP-only circuit breaker thresholds (max_requests, ...) are accepted and ignored: they are
 *   common in Envoy files and meaningless for tcp_proxy. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/log.h"
#include "core/name_list.h"
#include "core/sockaddr_text.h"
#include "transport/ts_registry.h"

#define CFG_DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define CFG_DEFAULT_IDLE_TIMEOUT_MS    3600000u
#define CFG_DEFAULT_DNS_REFRESH_MS     5000u /* Cluster.dns_refresh_rate's default */
#define CFG_MAX_HOSTS                  1024u
/* socktap's default for FilterChain.transport_socket_connect_timeout, which Envoy leaves unset
 * (no limit): without one, 2,000 clients that never finish a TLS handshake held 2,000 sessions
 * and 112 MB. 10 s is far above any real handshake on a working network. `0s` restores Envoy's
 * no-limit behaviour ("if present and nonzero", config/listener/v3/listener_components.proto). */
#define CFG_DEFAULT_TRANSPORT_CONNECT_TIMEOUT_MS 10000u
/* Envoy's listener_filters_timeout default (listener.proto) and tls_inspector's
 * TLS_MAX_CLIENT_HELLO, the upper bound of max_client_hello_size (tls_inspector.proto) */
#define CFG_DEFAULT_LISTENER_FILTERS_TIMEOUT_MS 15000u
#define CFG_MAX_CLIENT_HELLO                    16384u

static const char *const tcp_proxy_names[] = {"envoy.filters.network.tcp_proxy", "envoy.tcp_proxy",
                                              NULL};
static const char *const tcp_proxy_urls[] = {
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "type.googleapis.com/envoy.config.filter.network.tcp_proxy.v2.TcpProxy", NULL};
static const char *const conn_limit_names[] = {"envoy.filters.network.connection_limit", NULL};
static const char *const conn_limit_urls[] = {
    "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
    NULL};

/* Positions kept while parsing, for the cross checks' messages. */
struct cfg_state {
    struct cfg_err *err;
    const struct cfg_doc *doc;
    struct socktap_config *cfg;
    const struct cfg_node **listener_addr; /* per listener: its address node */
    const struct cfg_node **listener_name; /* per listener: its name node, or NULL */
    const struct cfg_node **cluster_name;  /* per cluster: its name node */
};

static bool str_in(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

static void join_names(const char *const *list, char *buf, size_t size)
{
    struct name_list l;
    name_list_init(&l, buf, size);
    for (; *list; list++)
        name_list_add(&l, *list);
}

static int get_u32(struct cfg_state *st, const struct cfg_node *node, const struct cfg_path *path,
                   uint32_t min, uint32_t *out)
{
    uint64_t v;
    int rc = cfg_get_u64(st->err, st->doc, node, path, min, UINT32_MAX, &v);
    if (!rc)
        *out = (uint32_t)v;
    return rc;
}

/* Looks up a required key; the error names the map's position and the missing key. */
static int require(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                   const char *key, const struct cfg_node **out)
{
    *out = cfg_map_get(map, key);
    if (*out)
        return 0;
    return cfg_error(st->err, st->doc, map, path, "missing required key '%s'", key);
}

/* Optional keys: absent leaves *OUT (the default) untouched. */
static int opt_string(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                      const char *key, const char **out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    return n ? cfg_get_string(st->err, st->doc, n, &kp, out) : 0;
}

/* A proto enum KEY of MAP: a name of NAMES or its number in NUMBERS (NULL: the index). */
static int opt_enum(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                    const char *key, const char *const *names, const int *numbers, int *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    return n ? cfg_get_enum_num(st->err, st->doc, n, &kp, names, numbers, out) : 0;
}

static int opt_duration(struct cfg_state *st, const struct cfg_node *map,
                        const struct cfg_path *path, const char *key, uint64_t *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    return n ? cfg_get_duration_ms(st->err, st->doc, n, &kp, out) : 0;
}

static int opt_u32(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                   const char *key, uint32_t min, uint32_t *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    return n ? get_u32(st, n, &kp, min, out) : 0;
}

/* A required string; *NODE (may be NULL) receives its node for later messages. */
static int req_string(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                      const char *key, const char **out, const struct cfg_node **node)
{
    const struct cfg_node *n;
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    int rc = require(st, map, path, key, &n);
    if (rc)
        return rc;
    if (node)
        *node = n;
    return cfg_get_string(st->err, st->doc, n, &kp, out);
}

/* ---- addresses ---- */

static void address_format(struct cfg_address *a)
{
    sockaddr_text((const struct sockaddr *)&a->ss, a->len, ':', a->text, sizeof(a->text));
    sockaddr_text((const struct sockaddr *)&a->ss, a->len, '_', a->stat_name, sizeof(a->stat_name));
}

static void address_set(struct cfg_address *a, const struct sockaddr *sa, socklen_t len,
                        uint16_t port)
{
    memset(a, 0, sizeof(*a));
    memcpy(&a->ss, sa, len);
    a->len = len;
    if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
    address_format(a);
}

static bool address_literal(const char *text, uint16_t port, struct cfg_address *out)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
    if (inet_pton(AF_INET, text, &s4.sin_addr) == 1) {
        address_set(out, (struct sockaddr *)&s4, sizeof(s4), port);
        return true;
    }
    if (inet_pton(AF_INET6, text, &s6.sin6_addr) == 1) {
        address_set(out, (struct sockaddr *)&s6, sizeof(s6), port);
        return true;
    }
    return false;
}

static bool address_equal(const struct cfg_address *a, const struct cfg_address *b)
{
    return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

static uint16_t address_port(const struct cfg_address *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

/* The parts of a socket_address map. HOST_NODE/HOST are the `address:` value. */
struct sock_addr_parts {
    const struct cfg_node *host_node;
    const char *host;
    struct cfg_path host_path;
    uint16_t port;
};

/* Accepts {socket_address: {...}} or the bare socket_address map; PATH_BUF receives the
 * socket_address step so host errors carry the full path. */
static int parse_socket_address(struct cfg_err *err, const struct cfg_doc *doc,
                                const struct cfg_node *node, const struct cfg_path *path,
                                struct cfg_path *sa_path, struct sock_addr_parts *out)
{
    static const char *const outer_keys[] = {"socket_address", NULL};
    static const char *const keys[] = {"address", "port_value", "protocol", NULL};
    static const char *const protocols[] = {"TCP", NULL};
    const struct cfg_node *sa = node, *n;
    struct cfg_path pp;
    uint64_t port;
    int proto, rc;

    rc = cfg_expect_map(err, doc, node, path);
    if (rc)
        return rc;
    *sa_path = *path;
    if (!cfg_map_get(node, "address") && !cfg_map_get(node, "port_value")) {
        rc = cfg_check_keys(err, doc, node, path, outer_keys);
        if (rc)
            return rc;
        sa = cfg_map_get(node, "socket_address");
        if (!sa)
            return cfg_error(err, doc, node, path, "missing required key 'socket_address'");
        *sa_path = CFG_PATH_KEY(path, "socket_address");
    }
    rc = cfg_check_keys(err, doc, sa, sa_path, keys);
    if (rc)
        return rc;
    out->host_node = cfg_map_get(sa, "address");
    if (!out->host_node)
        return cfg_error(err, doc, sa, sa_path, "missing required key 'address'");
    out->host_path = CFG_PATH_KEY(sa_path, "address");
    rc = cfg_get_string(err, doc, out->host_node, &out->host_path, &out->host);
    if (rc)
        return rc;
    n = cfg_map_get(sa, "port_value");
    if (!n)
        return cfg_error(err, doc, sa, sa_path, "missing required key 'port_value'");
    pp = CFG_PATH_KEY(sa_path, "port_value");
    rc = cfg_get_u64(err, doc, n, &pp, 0, 65535, &port);
    if (rc)
        return rc;
    out->port = (uint16_t)port;
    n = cfg_map_get(sa, "protocol");
    if (n) {
        pp = CFG_PATH_KEY(sa_path, "protocol");
        rc = cfg_get_enum_num(err, doc, n, &pp, protocols, NULL, &proto);
        if (rc)
            return rc;
    }
    return 0;
}

int cfg_parse_address(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                      const struct cfg_path *path, struct cfg_address *out)
{
    struct sock_addr_parts parts;
    struct cfg_path sa_path;
    char got[128];
    int rc = parse_socket_address(err, doc, node, path, &sa_path, &parts);
    if (rc)
        return rc;
    if (!address_literal(parts.host, parts.port, out))
        return cfg_error(err, doc, parts.host_node, &parts.host_path,
                         "expected an IPv4 or IPv6 address, got %s",
                         cfg_node_describe(parts.host_node, got, sizeof(got)));
    return 0;
}

/* ---- transport sockets ---- */

/* The filter chain's or cluster's `transport_socket:` or v2 `tls_context:`; raw_buffer when
 * neither is given. */
static int parse_owner_ts(struct cfg_state *st, const struct cfg_node *owner,
                          const struct cfg_path *path, enum ts_side side, const char *owner_name,
                          struct ts_config *out)
{
    struct ts_parse_ctx ctx = {
        .err = st->err, .doc = st->doc, .side = side, .owner_name = owner_name};
    const struct cfg_node *ts = cfg_map_get(owner, "transport_socket");
    const struct cfg_node *tls = cfg_map_get(owner, "tls_context");
    struct cfg_path tsp = CFG_PATH_KEY(path, "transport_socket");
    struct cfg_path tlsp = CFG_PATH_KEY(path, "tls_context");
    const struct ts_factory *f;
    int rc;

    memset(out, 0, sizeof(*out));
    if (ts && tls)
        return cfg_error(st->err, st->doc, tls, &tlsp,
                         "give either 'transport_socket' or the v2 'tls_context', not both");
    if (ts)
        return ts_config_parse(&ctx, ts, &tsp, out);
    if (!tls) {
        ts_config_default(out);
        return 0;
    }
    f = ts_registry_find_legacy("tls_context");
    if (!f || !f->parse)
        return cfg_error(st->err, st->doc, tls, &tlsp,
                         "tls_context needs the TLS transport socket, which this build lacks");
    rc = cfg_expect_map(st->err, st->doc, tls, &tlsp);
    if (rc)
        return rc;
    rc = f->parse(&ctx, tls, &tlsp, &out->cfg);
    if (rc) {
        if (!st->err->set)
            cfg_error(st->err, st->doc, tls, &tlsp, "invalid tls_context (%d)", rc);
        return rc;
    }
    out->factory = f;
    return 0;
}

/* ---- listeners ---- */

/* A filter's settings: `config:` (v2) or `typed_config:` (v3, "@type" checked and removed). */
static int filter_settings(struct cfg_state *st, const struct cfg_node *filter,
                           const struct cfg_path *path, const char *const *urls,
                           const struct cfg_node **out, struct cfg_path *out_path)
{
    static const char *const keys[] = {"name", "config", "typed_config", NULL};
    int rc;

    rc = cfg_check_keys(st->err, st->doc, filter, path, keys);
    if (rc)
        return rc;
    rc = cfg_extension_settings(st->err, st->doc, filter, path, urls, NULL, out, out_path);
    if (rc)
        return rc;
    if (!*out)
        return cfg_error(st->err, st->doc, filter, path,
                         "missing required key 'typed_config' (or the v2 'config')");
    return 0;
}

/* Clusters are parsed before listeners, so the reference is checked here, with its path. */
static int resolve_cluster(struct cfg_state *st, const struct cfg_node *node,
                           const struct cfg_path *path, struct cfg_tcp_proxy *out)
{
    struct socktap_config *cfg = st->cfg;
    char list[512];
    size_t i;
    for (i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, out->cluster_name)) {
            out->cluster = &cfg->clusters[i];
            return 0;
        }
    struct name_list l;
    name_list_init(&l, list, sizeof(list));
    for (i = 0; i < cfg->nclusters; i++)
        name_list_add(&l, cfg->clusters[i].name);
    return cfg_error(st->err, st->doc, node, path, "unknown cluster '%s' (defined clusters: %s)",
                     out->cluster_name, cfg->nclusters ? list : "none");
}

/* weighted_clusters: {clusters: [{name, weight}]} (tcp_proxy.proto's WeightedCluster: at least
 * one cluster, weights >= 1). metadata_match needs subsets socktap has not: refused. */
static int parse_weighted(struct cfg_state *st, const struct cfg_node *wc,
                          const struct cfg_path *tp, struct cfg_tcp_proxy *out)
{
    static const char *const keys[] = {"clusters", NULL};
    static const char *const ckeys[] = {"name", "weight", "metadata_match", NULL};
    struct cfg_path path = CFG_PATH_KEY(tp, "weighted_clusters");
    struct cfg_path lp = CFG_PATH_KEY(&path, "clusters");
    const struct cfg_node *list;
    int rc;
    if ((rc = cfg_check_keys(st->err, st->doc, wc, &path, keys)) ||
        (rc = require(st, wc, &path, "clusters", &list)) ||
        (rc = cfg_expect_seq(st->err, st->doc, list, &lp)))
        return rc;
    if (!list->n)
        return cfg_error(st->err, st->doc, list, &lp, "expected at least one cluster");
    out->weighted = calloc(list->n, sizeof(*out->weighted));
    if (!out->weighted)
        return cfg_error(st->err, st->doc, list, &lp, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < list->n; i++) {
        const struct cfg_node *c = list->items[i], *name_node, *n;
        struct cfg_path ip = CFG_PATH_INDEX(&lp, i), np = CFG_PATH_KEY(&ip, "name");
        const char *name;
        if ((rc = cfg_expect_map(st->err, st->doc, c, &ip)) ||
            (rc = cfg_check_keys(st->err, st->doc, c, &ip, ckeys)))
            return rc;
        if ((n = cfg_map_get(c, "metadata_match")))
            return cfg_error(st->err, st->doc, n, &CFG_PATH_KEY(&ip, "metadata_match"),
                             "metadata_match is not supported (no subset load balancing)");
        if ((rc = req_string(st, c, &ip, "name", &name, &name_node)))
            return rc;
        out->cluster_name = (char *)name;
        if ((rc = resolve_cluster(st, name_node, &np, out)))
            return rc;
        out->weighted[i].cluster = out->cluster;
        if ((rc = require(st, c, &ip, "weight", &n)) ||
            (rc = get_u32(st, n, &CFG_PATH_KEY(&ip, "weight"), 1, &out->weighted[i].weight)))
            return rc;
        out->total_weight += out->weighted[i].weight;
        out->nweighted = i + 1;
    }
    out->cluster = out->weighted[0].cluster;
    out->cluster_name = out->cluster->name;
    return 0;
}

static int parse_tcp_proxy(struct cfg_state *st, const struct cfg_node *config,
                           const struct cfg_path *path, struct cfg_tcp_proxy *out)
{
    static const char *const keys[] = {"stat_prefix",
                                       "cluster",
                                       "weighted_clusters",
                                       "idle_timeout",
                                       "max_connect_attempts",
                                       "access_log",
                                       "max_downstream_connection_duration",
                                       NULL};
    struct cfg_path cp = CFG_PATH_KEY(path, "cluster");
    const struct cfg_node *cluster;
    const char *prefix, *name;
    int rc;

    const struct cfg_node *wc = cfg_map_get(config, "weighted_clusters");
    if ((rc = cfg_check_keys(st->err, st->doc, config, path, keys)) ||
        (rc = req_string(st, config, path, "stat_prefix", &prefix, NULL)))
        return rc;
    if (wc && cfg_map_get(config, "cluster"))
        return cfg_error(st->err, st->doc, wc, &CFG_PATH_KEY(path, "weighted_clusters"),
                         "give either cluster or weighted_clusters, not both");
    if (wc) {
        if ((rc = parse_weighted(st, wc, path, out)))
            return rc;
    } else {
        if ((rc = req_string(st, config, path, "cluster", &name, &cluster)))
            return rc;
        out->cluster_name = (char *)name;
        if ((rc = resolve_cluster(st, cluster, &cp, out)))
            return rc;
    }
    out->stat_prefix = (char *)prefix;
    out->idle_timeout_ms = CFG_DEFAULT_IDLE_TIMEOUT_MS;
    out->max_connect_attempts = 1;
    const struct cfg_node *md = cfg_map_get(config, "max_downstream_connection_duration");
    if (md) {
        struct cfg_path mp = CFG_PATH_KEY(path, "max_downstream_connection_duration");
        if ((rc = cfg_get_duration_ms(st->err, st->doc, md, &mp, &out->max_duration_ms)))
            return rc;
        if (!out->max_duration_ms) /* Envoy: gte 1ms (tcp_proxy.proto) */
            return cfg_error(st->err, st->doc, md, &mp, "expected a duration of at least 1ms");
    }
    if ((rc = opt_u32(st, config, path, "max_connect_attempts", 1, &out->max_connect_attempts)))
        return rc;
    const struct cfg_node *al = cfg_map_get(config, "access_log");
    struct cfg_path ap = CFG_PATH_KEY(path, "access_log");
    if (al && (rc = cfg_parse_access_logs(st->err, st->doc, al, &ap, &out->access_logs,
                                          &out->naccess_logs)))
        return rc;
    return opt_duration(st, config, path, "idle_timeout", &out->idle_timeout_ms);
}

static int parse_conn_limit(struct cfg_state *st, const struct cfg_node *config,
                            const struct cfg_path *path, struct cfg_listener *l)
{
    static const char *const keys[] = {"stat_prefix", "max_connections", NULL};
    const struct cfg_node *n;
    const char *prefix;
    int rc;
    if ((rc = cfg_check_keys(st->err, st->doc, config, path, keys)) ||
        (rc = req_string(st, config, path, "stat_prefix", &prefix, NULL)) ||
        (rc = require(st, config, path, "max_connections", &n)))
        return rc;
    l->conn_limit_stat_prefix = prefix;
    return opt_u32(st, config, path, "max_connections", 1, &l->max_connections);
}

/* filters: optional connection_limit filters, then exactly one tcp_proxy, last (Envoy requires
 * the terminal filter last). */
static int parse_filters(struct cfg_state *st, const struct cfg_node *filters,
                         const struct cfg_path *path, struct cfg_listener *l,
                         struct cfg_filter_chain *fc)
{
    static const char *const supported[] = {"envoy.filters.network.tcp_proxy", "envoy.tcp_proxy",
                                            "envoy.filters.network.connection_limit", NULL};
    char list[256];
    size_t i;
    int rc = cfg_expect_seq(st->err, st->doc, filters, path);
    if (rc)
        return rc;
    if (!filters->n)
        return cfg_error(st->err, st->doc, filters, path,
                         "expected a tcp_proxy filter, got an empty list");
    for (i = 0; i < filters->n; i++) {
        const struct cfg_node *f = filters->items[i], *name_node, *settings = NULL;
        struct cfg_path fp = CFG_PATH_INDEX(path, i), np = CFG_PATH_KEY(&fp, "name"), sp;
        const char *name;
        rc = cfg_expect_map(st->err, st->doc, f, &fp);
        if (rc)
            return rc;
        rc = require(st, f, &fp, "name", &name_node);
        if (rc)
            return rc;
        rc = cfg_get_string(st->err, st->doc, name_node, &np, &name);
        if (rc)
            return rc;
        if (str_in(name, tcp_proxy_names)) {
            if (i + 1 != filters->n)
                return cfg_error(st->err, st->doc, name_node, &np,
                                 "tcp_proxy must be the last filter of the chain");
            rc = filter_settings(st, f, &fp, tcp_proxy_urls, &settings, &sp);
            if (rc)
                return rc;
            return parse_tcp_proxy(st, settings, &sp, &fc->tcp_proxy);
        }
        if (str_in(name, conn_limit_names)) {
            rc = filter_settings(st, f, &fp, conn_limit_urls, &settings, &sp);
            if (rc)
                return rc;
            rc = parse_conn_limit(st, settings, &sp, l);
            if (rc)
                return rc;
            continue;
        }
        join_names(supported, list, sizeof(list));
        return cfg_error(st->err, st->doc, name_node, &np,
                         "unsupported network filter '%s' (supported: %s)", name, list);
    }
    return cfg_error(st->err, st->doc, filters, path,
                     "missing the tcp_proxy filter (envoy.filters.network.tcp_proxy)");
}

/* ---- filter chains (issue 11 section 4) ---- */

/* core.v3.CidrRange {address_prefix, prefix_len}: prefix_len defaults to the full length, as
 * Envoy's Network::Address::CidrRange::create; host bits are cleared (Envoy does the same). */
static int parse_cidr(struct cfg_state *st, const struct cfg_node *node,
                      const struct cfg_path *path, struct cfg_cidr *out)
{
    static const char *const keys[] = {"address_prefix", "prefix_len", NULL};
    const struct cfg_node *an;
    const char *text;
    uint32_t len;
    int rc;
    memset(out, 0, sizeof(*out));
    if ((rc = cfg_check_keys(st->err, st->doc, node, path, keys)) ||
        (rc = req_string(st, node, path, "address_prefix", &text, &an)))
        return rc;
    struct cfg_path ap = CFG_PATH_KEY(path, "address_prefix");
    if (inet_pton(AF_INET, text, out->addr) == 1)
        out->family = AF_INET;
    else if (inet_pton(AF_INET6, text, out->addr) == 1)
        out->family = AF_INET6;
    else
        return cfg_error(st->err, st->doc, an, &ap, "malformed IP address: %s", text);
    len = out->family == AF_INET ? 32 : 128;
    if ((rc = opt_u32(st, node, path, "prefix_len", 0, &len)))
        return rc;
    if (len > (out->family == AF_INET ? 32u : 128u)) {
        struct cfg_path lp = CFG_PATH_KEY(path, "prefix_len");
        return cfg_error(st->err, st->doc, cfg_map_get(node, "prefix_len"), &lp,
                         "prefix_len %u is too long for %s", len, text);
    }
    out->len = (uint8_t)len;
    for (unsigned i = len; i < (out->family == AF_INET ? 32u : 128u); i++)
        out->addr[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return 0;
}

typedef int list_item_fn(struct cfg_state *st, const struct cfg_node *node,
                         const struct cfg_path *path, void *out);

/* The optional sequence KEY of MAP into a new array (*OUT, owned by the caller, config_free) of
 * elements of SIZE bytes, each parsed by ITEM; *N counts those parsed (also on failure). */
static int parse_seq(struct cfg_state *st, const struct cfg_node *map, const struct cfg_path *path,
                     const char *key, size_t size, void **out, size_t *n, list_item_fn *item)
{
    const struct cfg_node *list = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    int rc;
    if (!list)
        return 0;
    if ((rc = cfg_expect_seq(st->err, st->doc, list, &kp)))
        return rc;
    *out = calloc(list->n ? list->n : 1, size);
    if (!*out)
        return cfg_error(st->err, st->doc, list, &kp, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < list->n; i++) {
        struct cfg_path ip = CFG_PATH_INDEX(&kp, i);
        if ((rc = item(st, list->items[i], &ip, (char *)*out + i * size)))
            return rc;
        (*n)++;
    }
    return 0;
}

static int cidr_item(struct cfg_state *st, const struct cfg_node *node, const struct cfg_path *path,
                     void *out)
{
    return parse_cidr(st, node, path, out);
}

static int string_item(struct cfg_state *st, const struct cfg_node *node,
                       const struct cfg_path *path, void *out)
{
    return cfg_get_string(st->err, st->doc, node, path, out);
}

static int port_item(struct cfg_state *st, const struct cfg_node *node, const struct cfg_path *path,
                     void *out)
{
    uint64_t v;
    int rc = cfg_get_u64(st->err, st->doc, node, path, 1, 65535, &v);
    if (!rc)
        *(uint32_t *)out = (uint32_t)v;
    return rc;
}

/* Envoy's check (filter_chain_manager_impl.cc, addFilterChains): only "*.suffix" wildcards. */
static int server_name_item(struct cfg_state *st, const struct cfg_node *node,
                            const struct cfg_path *path, void *out)
{
    int rc = cfg_get_string(st->err, st->doc, node, path, out);
    if (rc)
        return rc;
    const char *v = *(const char **)out;
    const char *star = strchr(v, '*');
    if (!*v)
        return cfg_error(st->err, st->doc, node, path, "empty server name");
    if (star && (star != v || v[1] != '.' || strchr(v + 1, '*') || !v[2]))
        return cfg_error(st->err, st->doc, node, path,
                         "partial wildcards are not supported in \"server_names\" ('%s'): use "
                         "'*.example.com'",
                         v);
    return 0;
}

static int parse_chain_match(struct cfg_state *st, const struct cfg_node *node,
                             const struct cfg_path *path, struct cfg_chain_match *m)
{
    static const char *const keys[] = {"destination_port",
                                       "prefix_ranges",
                                       "server_names",
                                       "transport_protocol",
                                       "application_protocols",
                                       "source_type",
                                       "source_prefix_ranges",
                                       "source_ports",
                                       "address_suffix",
                                       "suffix_len",
                                       "direct_source_prefix_ranges",
                                       NULL};
    static const char *const source_types[] = {"ANY", "SAME_IP_OR_LOOPBACK", "EXTERNAL", NULL};
    static const char *const unsupported[] = {"address_suffix", "suffix_len",
                                              "direct_source_prefix_ranges", NULL};
    const struct cfg_node *n;
    int type = 0, rc;
    if ((rc = cfg_check_keys(st->err, st->doc, node, path, keys)))
        return rc;
    for (const char *const *k = unsupported; *k; k++)
        if ((n = cfg_map_get(node, *k))) {
            struct cfg_path kp = CFG_PATH_KEY(path, *k);
            /* address_suffix/suffix_len are "not implemented" in Envoy too (the proto says so)
             * and direct_source_prefix_ranges differs from source_prefix_ranges only behind a
             * PROXY protocol filter, which socktap does not have */
            return cfg_error(st->err, st->doc, n, &kp, "'%s' is not supported", *k);
        }
    if ((rc = opt_u32(st, node, path, "destination_port", 1, &m->destination_port)))
        return rc;
    if (m->destination_port > 65535) {
        struct cfg_path kp = CFG_PATH_KEY(path, "destination_port");
        return cfg_error(st->err, st->doc, cfg_map_get(node, "destination_port"), &kp,
                         "expected a port 1..65535, got %u", m->destination_port);
    }
    if ((rc = parse_seq(st, node, path, "prefix_ranges", sizeof(*m->prefix_ranges),
                        (void **)&m->prefix_ranges, &m->nprefix_ranges, cidr_item)) ||
        (rc = parse_seq(st, node, path, "server_names", sizeof(*m->server_names),
                        (void **)&m->server_names, &m->nserver_names, server_name_item)) ||
        (rc = opt_string(st, node, path, "transport_protocol", &m->transport_protocol)) ||
        (rc = parse_seq(st, node, path, "application_protocols", sizeof(*m->application_protocols),
                        (void **)&m->application_protocols, &m->napplication_protocols,
                        string_item)) ||
        (rc = opt_enum(st, node, path, "source_type", source_types, NULL, &type)) ||
        (rc = parse_seq(st, node, path, "source_prefix_ranges", sizeof(*m->source_prefix_ranges),
                        (void **)&m->source_prefix_ranges, &m->nsource_prefix_ranges, cidr_item)) ||
        (rc = parse_seq(st, node, path, "source_ports", sizeof(*m->source_ports),
                        (void **)&m->source_ports, &m->nsource_ports, port_item)))
        return rc;
    if (m->transport_protocol && !*m->transport_protocol)
        m->transport_protocol = NULL; /* proto3: "" is unset */
    m->source_type = (enum cfg_source_type)type;
    return 0;
}

static void chain_match_free(struct cfg_chain_match *m)
{
    free(m->prefix_ranges);
    free(m->server_names);
    free(m->application_protocols);
    free(m->source_prefix_ranges);
    free(m->source_ports);
    memset(m, 0, sizeof(*m));
}

static int parse_filter_chain(struct cfg_state *st, const struct cfg_node *chain,
                              const struct cfg_path *path, struct cfg_listener *l,
                              struct cfg_filter_chain *fc, bool is_default)
{
    static const char *const keys[] = {
        "filters", "transport_socket",   "tls_context",
        "name",    "filter_chain_match", "transport_socket_connect_timeout",
        NULL};
    const struct cfg_node *n;
    struct cfg_path kp;
    int rc = cfg_check_keys(st->err, st->doc, chain, path, keys);
    if (rc)
        return rc;
    n = cfg_map_get(chain, "filter_chain_match");
    /* listener.proto: "The filter chain match is ignored in this field" (default chain) */
    if (n && !is_default) {
        kp = CFG_PATH_KEY(path, "filter_chain_match");
        if ((rc = parse_chain_match(st, n, &kp, &fc->match)))
            return rc;
    }
    rc = opt_string(st, chain, path, "name", &fc->name);
    if (rc)
        return rc;
    fc->transport_connect_timeout_ms = CFG_DEFAULT_TRANSPORT_CONNECT_TIMEOUT_MS;
    rc = opt_duration(st, chain, path, "transport_socket_connect_timeout",
                      &fc->transport_connect_timeout_ms);
    if (rc)
        return rc;
    rc = require(st, chain, path, "filters", &n);
    if (rc)
        return rc;
    kp = CFG_PATH_KEY(path, "filters");
    rc = parse_filters(st, n, &kp, l, fc);
    if (rc)
        return rc;
    return parse_owner_ts(st, chain, path, TS_SIDE_DOWNSTREAM, l->owner_name, &fc->ts);
}

/* Two matchers collide when every field's value sets share a value (an unset field is the one
 * value "any"): then some connection matches both with the same specificity at every step,
 * which Envoy refuses ("multiple filter chains with the same matching rules are defined"). */
static bool cidrs_meet(const struct cfg_cidr *a, size_t na, const struct cfg_cidr *b, size_t nb)
{
    if (!na || !nb)
        return !na && !nb;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i].family == b[j].family && a[i].len == b[j].len &&
                !memcmp(a[i].addr, b[j].addr, 16))
                return true;
    return false;
}

static bool strings_meet(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (!na || !nb)
        return !na && !nb;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (!strcmp(a[i], b[j]))
                return true;
    return false;
}

static bool ports_meet(const uint32_t *a, size_t na, const uint32_t *b, size_t nb)
{
    if (!na || !nb)
        return !na && !nb;
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            if (a[i] == b[j])
                return true;
    return false;
}

static bool matches_collide(const struct cfg_chain_match *a, const struct cfg_chain_match *b)
{
    const char *ta = a->transport_protocol ? a->transport_protocol : "";
    const char *tb = b->transport_protocol ? b->transport_protocol : "";
    return a->destination_port == b->destination_port &&
           cidrs_meet(a->prefix_ranges, a->nprefix_ranges, b->prefix_ranges, b->nprefix_ranges) &&
           strings_meet(a->server_names, a->nserver_names, b->server_names, b->nserver_names) &&
           !strcmp(ta, tb) &&
           strings_meet(a->application_protocols, a->napplication_protocols,
                        b->application_protocols, b->napplication_protocols) &&
           a->source_type == b->source_type &&
           cidrs_meet(a->source_prefix_ranges, a->nsource_prefix_ranges, b->source_prefix_ranges,
                      b->nsource_prefix_ranges) &&
           ports_meet(a->source_ports, a->nsource_ports, b->source_ports, b->nsource_ports);
}

/* listener_filters: envoy.filters.listener.tls_inspector only. */
static int parse_listener_filters(struct cfg_state *st, const struct cfg_node *list,
                                  const struct cfg_path *path, struct cfg_listener *l)
{
    static const char *const names[] = {"envoy.filters.listener.tls_inspector",
                                        "envoy.listener.tls_inspector", NULL};
    static const char *const urls[] = {
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        NULL};
    static const char *const keys[] = {
        "enable_ja3_fingerprinting", "enable_ja4_fingerprinting",
        "initial_read_buffer_size",  "close_connection_on_client_hello_parsing_errors",
        "max_client_hello_size",     NULL};
    int rc = cfg_expect_seq(st->err, st->doc, list, path);
    if (rc)
        return rc;
    for (size_t i = 0; i < list->n; i++) {
        const struct cfg_node *f = list->items[i], *nn, *settings = NULL;
        struct cfg_path fp = CFG_PATH_INDEX(path, i), np = CFG_PATH_KEY(&fp, "name"), sp;
        const char *name;
        if ((rc = cfg_expect_map(st->err, st->doc, f, &fp)) ||
            (rc = require(st, f, &fp, "name", &nn)) ||
            (rc = cfg_get_string(st->err, st->doc, nn, &np, &name)))
            return rc;
        if (!str_in(name, names))
            return cfg_error(st->err, st->doc, nn, &np,
                             "unsupported listener filter '%s' (supported: "
                             "envoy.filters.listener.tls_inspector)",
                             name);
        if (l->tls_inspector)
            return cfg_error(st->err, st->doc, nn, &np, "tls_inspector is given twice");
        static const char *const fkeys[] = {"name", "typed_config", "config", NULL};
        if ((rc = cfg_check_keys(st->err, st->doc, f, &fp, fkeys)) ||
            (rc = cfg_extension_settings(st->err, st->doc, f, &fp, urls, NULL, &settings, &sp)))
            return rc;
        l->tls_inspector = true;
        if (!settings)
            continue;
        if ((rc = cfg_check_keys(st->err, st->doc, settings, &sp, keys)))
            return rc;
        for (const char *const *k = keys; *k; k++) {
            const struct cfg_node *v = cfg_map_get(settings, *k);
            struct cfg_path kp = CFG_PATH_KEY(&sp, *k);
            bool b;
            if (!v)
                continue;
            if (!strcmp(*k, "max_client_hello_size")) {
                uint64_t sz;
                /* tls_inspector.proto: gt 255, lte 16384 */
                if ((rc = cfg_get_u64(st->err, st->doc, v, &kp, 256, 16384, &sz)))
                    return rc;
                l->max_client_hello_size = (uint32_t)sz;
            } else if (!strcmp(*k, "initial_read_buffer_size")) {
                uint64_t sz; /* accepted: socktap peeks what the kernel holds anyway */
                if ((rc = cfg_get_u64(st->err, st->doc, v, &kp, 256, 65536, &sz)))
                    return rc;
            } else {
                if ((rc = cfg_get_bool(st->err, st->doc, v, &kp, &b)))
                    return rc;
                if (b && strcmp(*k, "close_connection_on_client_hello_parsing_errors"))
                    return cfg_error(st->err, st->doc, v, &kp, "'%s' is not supported", *k);
            }
        }
    }
    return 0;
}

static int parse_listener_chains(struct cfg_state *st, const struct cfg_node *node,
                                 const struct cfg_path *path, struct cfg_listener *l)
{
    const struct cfg_node *chains = cfg_map_get(node, "filter_chains");
    const struct cfg_node *def = cfg_map_get(node, "default_filter_chain");
    struct cfg_path kp = CFG_PATH_KEY(path, "filter_chains");
    size_t n = 0, total;
    int rc;
    if (chains) {
        if ((rc = cfg_expect_seq(st->err, st->doc, chains, &kp)))
            return rc;
        n = chains->n;
    }
    if (!n && !def)
        return cfg_error(st->err, st->doc, chains ? chains : node, chains ? &kp : path,
                         "no filter chains specified (give filter_chains or "
                         "default_filter_chain)");
    total = n + (def ? 1 : 0);
    l->chains = calloc(total, sizeof(*l->chains));
    if (!l->chains)
        return cfg_error(st->err, st->doc, node, path, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct cfg_path cp = CFG_PATH_INDEX(&kp, i);
        l->chains[i].index = i;
        l->nchains = i + 1;
        if ((rc = parse_filter_chain(st, chains->items[i], &cp, l, &l->chains[i], false)))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (matches_collide(&l->chains[j].match, &l->chains[i].match)) {
                const struct cfg_node *mn = cfg_map_get(chains->items[i], "filter_chain_match");
                struct cfg_path mp = CFG_PATH_KEY(&cp, "filter_chain_match");
                const struct cfg_node *prev = chains->items[j];
                return cfg_error(st->err, st->doc, mn ? mn : chains->items[i], mn ? &mp : &cp,
                                 "multiple filter chains with the same matching rules are "
                                 "defined (filter_chains[%zu] at %u:%u)",
                                 j, prev->line, prev->col);
            }
    }
    if (def) {
        struct cfg_path dp = CFG_PATH_KEY(path, "default_filter_chain");
        l->chains[n].index = n;
        l->nchains = n + 1;
        l->has_default = true;
        if ((rc = cfg_expect_map(st->err, st->doc, def, &dp)) ||
            (rc = parse_filter_chain(st, def, &dp, l, &l->chains[n], true)))
            return rc;
    }
    if (l->max_connections && l->nchains > 1)
        return cfg_error(st->err, st->doc, chains ? chains : def, chains ? &kp : path,
                         "connection_limit is supported on a listener with one filter chain "
                         "only");
    return 0;
}

static int parse_listener(struct cfg_state *st, size_t idx, const struct cfg_node *node,
                          const struct cfg_path *path)
{
    static const char *const keys[] = {"name",
                                       "address",
                                       "per_connection_buffer_limit_bytes",
                                       "filter_chains",
                                       "default_filter_chain",
                                       "listener_filters",
                                       "listener_filters_timeout",
                                       "continue_on_listener_filters_timeout",
                                       "use_original_dst",
                                       NULL};
    struct cfg_listener *l = &st->cfg->listeners[idx];
    const struct cfg_node *n;
    struct cfg_path kp;
    size_t owner_len, i;
    int rc;

    rc = cfg_check_keys(st->err, st->doc, node, path, keys);
    if (rc)
        return rc;
    rc = require(st, node, path, "address", &n);
    if (rc)
        return rc;
    kp = CFG_PATH_KEY(path, "address");
    rc = cfg_parse_address(st->err, st->doc, n, &kp, &l->addr);
    if (rc)
        return rc;
    st->listener_addr[idx] = n;
    for (i = 0; i < idx; i++)
        if (address_port(&l->addr) && address_equal(&l->addr, &st->cfg->listeners[i].addr))
            return cfg_error(st->err, st->doc, n, &kp,
                             "duplicate listener address %s (first used at %u:%u)", l->addr.text,
                             st->listener_addr[i]->line, st->listener_addr[i]->col);
    owner_len = strlen("listener.") + strlen(l->addr.stat_name) + 1;
    l->owner_name = malloc(owner_len);
    if (!l->owner_name)
        return cfg_error(st->err, st->doc, node, path, "out of memory"), -ENOMEM;
    snprintf(l->owner_name, owner_len, "listener.%s", l->addr.stat_name);
    l->name = l->addr.text;
    n = cfg_map_get(node, "name");
    if (n) {
        const char *s;
        kp = CFG_PATH_KEY(path, "name");
        rc = cfg_get_string(st->err, st->doc, n, &kp, &s);
        if (rc)
            return rc;
        l->name = (char *)s;
        st->listener_name[idx] = n;
        for (i = 0; i < idx; i++)
            if (st->listener_name[i] && !strcmp(st->cfg->listeners[i].name, s))
                return cfg_error(st->err, st->doc, n, &kp,
                                 "duplicate listener name '%s' (first defined at %u:%u)", s,
                                 st->listener_name[i]->line, st->listener_name[i]->col);
    }
    l->buffer_limit = CFG_DEFAULT_BUFFER_LIMIT;
    rc = opt_u32(st, node, path, "per_connection_buffer_limit_bytes", 1, &l->buffer_limit);
    if (rc)
        return rc;
    if ((n = cfg_map_get(node, "use_original_dst"))) {
        kp = CFG_PATH_KEY(path, "use_original_dst");
        if ((rc = cfg_get_bool(st->err, st->doc, n, &kp, &l->use_original_dst)))
            return rc;
    }
    l->max_client_hello_size = CFG_MAX_CLIENT_HELLO;
    l->listener_filters_timeout_ms = CFG_DEFAULT_LISTENER_FILTERS_TIMEOUT_MS;
    n = cfg_map_get(node, "listener_filters");
    kp = CFG_PATH_KEY(path, "listener_filters");
    if (n && (rc = parse_listener_filters(st, n, &kp, l)))
        return rc;
    if ((rc = opt_duration(st, node, path, "listener_filters_timeout",
                           &l->listener_filters_timeout_ms)))
        return rc;
    n = cfg_map_get(node, "continue_on_listener_filters_timeout");
    kp = CFG_PATH_KEY(path, "continue_on_listener_filters_timeout");
    if (n &&
        (rc = cfg_get_bool(st->err, st->doc, n, &kp, &l->continue_on_listener_filters_timeout)))
        return rc;
    if ((rc = parse_listener_chains(st, node, path, l)))
        return rc;
    /* an ORIGINAL_DST cluster behind a listener that does not restore the original
     * destination would connect to the listener itself, in a loop */
    for (size_t c = 0; c < l->nchains; c++) {
        const struct cfg_tcp_proxy *tp = &l->chains[c].tcp_proxy;
        for (i = 0; i < (tp->nweighted ? tp->nweighted : 1); i++) {
            const struct cfg_cluster *cl = tp->nweighted ? tp->weighted[i].cluster : tp->cluster;
            if (cl && cl->type == CFG_CLUSTER_ORIGINAL_DST && !l->use_original_dst)
                return cfg_error(st->err, st->doc, node, path,
                                 "cluster '%s' is ORIGINAL_DST: its listener needs "
                                 "use_original_dst: true",
                                 cl->name);
        }
    }
    return 0;
}

/* ---- clusters ---- */

enum dns_family { DNS_V4_PREFERRED, DNS_AUTO, DNS_V4_ONLY, DNS_V6_ONLY, DNS_ALL };

/* Resolves one host of a DNS cluster, appending to C->hosts (capacity CAP). */
static int resolve_host(struct cfg_state *st, struct cfg_cluster *c, size_t *cap,
                        const struct sock_addr_parts *parts, enum dns_family family)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
    int pass, gai, rc = 0;
    size_t before = c->nhosts;

    hints.ai_family = family == DNS_V4_ONLY   ? AF_INET
                      : family == DNS_V6_ONLY ? AF_INET6
                                              : AF_UNSPEC;
    gai = getaddrinfo(parts->host, NULL, &hints, &res);
    if (gai)
        return cfg_error(st->err, st->doc, parts->host_node, &parts->host_path,
                         "cannot resolve \"%s\": %s", parts->host, gai_strerror(gai));
    /* Two passes give the preferred family first; LOGICAL_DNS and the *_PREFERRED/AUTO
     * families keep only the first family that answered. */
    for (pass = 0; pass < 2; pass++) {
        int want = (family == DNS_AUTO) == (pass == 0) ? AF_INET6 : AF_INET;
        if (family == DNS_V4_PREFERRED)
            want = pass == 0 ? AF_INET : AF_INET6;
        for (ai = res; ai; ai = ai->ai_next) {
            size_t i;
            struct cfg_address a;
            if (ai->ai_family != want || ai->ai_addrlen > sizeof(a.ss))
                continue;
            address_set(&a, ai->ai_addr, ai->ai_addrlen, parts->port);
            for (i = before; i < c->nhosts; i++)
                if (address_equal(&c->hosts[i], &a))
                    break;
            if (i < c->nhosts)
                continue;
            if (c->nhosts == CFG_MAX_HOSTS) {
                rc = cfg_error(st->err, st->doc, parts->host_node, &parts->host_path,
                               "more than %u hosts", CFG_MAX_HOSTS);
                goto free_res;
            }
            if (c->nhosts == *cap) {
                size_t ncap = *cap ? *cap * 2 : 4;
                struct cfg_address *h = realloc(c->hosts, ncap * sizeof(*h));
                if (!h) {
                    rc = -ENOMEM;
                    cfg_error(st->err, st->doc, parts->host_node, &parts->host_path,
                              "out of memory");
                    goto free_res;
                }
                c->hosts = h;
                *cap = ncap;
            }
            c->hosts[c->nhosts++] = a;
            if (c->type == CFG_CLUSTER_LOGICAL_DNS)
                goto free_res; /* done: one address */
        }
        if (c->nhosts > before && family != DNS_ALL)
            break;
    }
    if (c->nhosts == before)
        rc = cfg_error(st->err, st->doc, parts->host_node, &parts->host_path,
                       "\"%s\" has no address of the requested family", parts->host);
free_res:
    freeaddrinfo(res);
    return rc;
}

static int add_host(struct cfg_state *st, struct cfg_cluster *c, size_t *cap,
                    const struct cfg_node *node, const struct cfg_path *path,
                    enum dns_family family)
{
    struct sock_addr_parts parts;
    struct cfg_path sa_path;
    struct cfg_address a;
    char got[128];
    int rc = parse_socket_address(st->err, st->doc, node, path, &sa_path, &parts);
    if (rc)
        return rc;
    if (c->type != CFG_CLUSTER_STATIC)
        return resolve_host(st, c, cap, &parts, family);
    if (!address_literal(parts.host, parts.port, &a))
        return cfg_error(st->err, st->doc, parts.host_node, &parts.host_path,
                         "expected an IPv4 or IPv6 address (host names need type: STRICT_DNS), "
                         "got %s",
                         cfg_node_describe(parts.host_node, got, sizeof(got)));
    if (c->nhosts == CFG_MAX_HOSTS)
        return cfg_error(st->err, st->doc, node, path, "more than %u hosts", CFG_MAX_HOSTS);
    if (c->nhosts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        struct cfg_address *h = realloc(c->hosts, ncap * sizeof(*h));
        if (!h)
            return cfg_error(st->err, st->doc, node, path, "out of memory"), -ENOMEM;
        c->hosts = h;
        *cap = ncap;
    }
    c->hosts[c->nhosts++] = a;
    return 0;
}

static int parse_load_assignment(struct cfg_state *st, struct cfg_cluster *c, size_t *cap,
                                 const struct cfg_node *la, const struct cfg_path *path,
                                 enum dns_family family)
{
    static const char *const la_keys[] = {"cluster_name", "endpoints", NULL};
    static const char *const ep_keys[] = {"lb_endpoints", NULL};
    static const char *const lbe_keys[] = {"endpoint", NULL};
    static const char *const e_keys[] = {"address", NULL};
    const struct cfg_node *eps;
    struct cfg_path ep_path = CFG_PATH_KEY(path, "endpoints");
    size_t i, j;
    int rc = cfg_check_keys(st->err, st->doc, la, path, la_keys);
    if (rc)
        return rc;
    rc = opt_string(st, la, path, "cluster_name", &(const char *){NULL});
    if (rc)
        return rc;
    eps = cfg_map_get(la, "endpoints");
    if (!eps)
        return 0; /* "no hosts" is reported by the caller, at the cluster */
    rc = cfg_expect_seq(st->err, st->doc, eps, &ep_path);
    if (rc)
        return rc;
    for (i = 0; i < eps->n; i++) {
        const struct cfg_node *lbes;
        struct cfg_path ip = CFG_PATH_INDEX(&ep_path, i);
        struct cfg_path lp = CFG_PATH_KEY(&ip, "lb_endpoints");
        rc = cfg_check_keys(st->err, st->doc, eps->items[i], &ip, ep_keys);
        if (rc)
            return rc;
        lbes = cfg_map_get(eps->items[i], "lb_endpoints");
        if (!lbes)
            continue;
        rc = cfg_expect_seq(st->err, st->doc, lbes, &lp);
        if (rc)
            return rc;
        for (j = 0; j < lbes->n; j++) {
            const struct cfg_node *e, *addr;
            struct cfg_path jp = CFG_PATH_INDEX(&lp, j), epp = CFG_PATH_KEY(&jp, "endpoint");
            struct cfg_path ap = CFG_PATH_KEY(&epp, "address");
            rc = cfg_check_keys(st->err, st->doc, lbes->items[j], &jp, lbe_keys);
            if (rc)
                return rc;
            rc = require(st, lbes->items[j], &jp, "endpoint", &e);
            if (rc)
                return rc;
            rc = cfg_check_keys(st->err, st->doc, e, &epp, e_keys);
            if (rc)
                return rc;
            rc = require(st, e, &epp, "address", &addr);
            if (rc)
                return rc;
            rc = add_host(st, c, cap, addr, &ap, family);
            if (rc)
                return rc;
        }
    }
    return 0;
}

static int parse_circuit_breakers(struct cfg_state *st, const struct cfg_node *cb,
                                  const struct cfg_path *path, struct cfg_cluster *c)
{
    static const char *const keys[] = {"thresholds", NULL};
    static const char *const t_keys[] = {"priority",     "max_connections", "max_pending_requests",
                                         "max_requests", "max_retries",     NULL};
    static const char *const priorities[] = {"DEFAULT", "HIGH", NULL};
    struct cfg_path tp = CFG_PATH_KEY(path, "thresholds");
    const struct cfg_node *ts;
    size_t i;
    int rc = cfg_check_keys(st->err, st->doc, cb, path, keys);
    if (rc)
        return rc;
    ts = cfg_map_get(cb, "thresholds");
    if (!ts)
        return 0;
    rc = cfg_expect_seq(st->err, st->doc, ts, &tp);
    if (rc)
        return rc;
    for (i = 0; i < ts->n; i++) {
        const struct cfg_node *t = ts->items[i];
        struct cfg_path ip = CFG_PATH_INDEX(&tp, i);
        int prio = 0;
        uint32_t v;
        rc = cfg_check_keys(st->err, st->doc, t, &ip, t_keys);
        if (rc)
            return rc;
        rc = opt_enum(st, t, &ip, "priority", priorities, NULL, &prio);
        if (rc)
            return rc;
        for (const char *const *k = t_keys + 1; *k; k++) {
            v = 0;
            rc = opt_u32(st, t, &ip, *k, 0, &v);
            if (rc)
                return rc;
            /* Only DEFAULT applies: tcp_proxy has no notion of request priority. */
            if (prio == 0 && !strcmp(*k, "max_connections"))
                c->max_connections = v;
        }
    }
    return 0;
}

static int parse_cluster(struct cfg_state *st, size_t idx, const struct cfg_node *node,
                         const struct cfg_path *path)
{
    static const char *const keys[] = {"name",
                                       "connect_timeout",
                                       "type",
                                       "lb_policy",
                                       "hosts",
                                       "load_assignment",
                                       "per_connection_buffer_limit_bytes",
                                       "transport_socket",
                                       "tls_context",
                                       "circuit_breakers",
                                       "dns_lookup_family",
                                       "health_checks",
                                       "dns_refresh_rate",
                                       "respect_dns_ttl",
                                       NULL};
    /* proto numbers from envoy.config.cluster.v3.Cluster's DiscoveryType, LbPolicy and
     * DnsLookupFamily (api/envoy/config/cluster/v3/cluster.proto) */
    static const char *const types[] = {"STATIC", "STRICT_DNS", "LOGICAL_DNS", "ORIGINAL_DST",
                                        NULL};
    static const int type_numbers[] = {0, 1, 2, 4};
    static const char *const policies[] = {"ROUND_ROBIN", "RANDOM", "LEAST_REQUEST",
                                           "CLUSTER_PROVIDED", NULL};
    static const int policy_numbers[] = {0, 3, 1, 6};
    static const char *const families[] = {"V4_PREFERRED", "AUTO", "V4_ONLY",
                                           "V6_ONLY",      "ALL",  NULL};
    static const int family_numbers[] = {3, 0, 1, 2, 4};
    struct cfg_cluster *c = &st->cfg->clusters[idx];
    const struct cfg_node *n, *hosts, *la;
    struct cfg_path kp;
    size_t cap = 0, owner_len, i;
    const char *s;
    int rc, type = CFG_CLUSTER_STATIC, policy = CFG_LB_ROUND_ROBIN, family = DNS_V4_PREFERRED;

    rc = cfg_check_keys(st->err, st->doc, node, path, keys);
    if (rc)
        return rc;
    rc = req_string(st, node, path, "name", &s, &n);
    if (rc)
        return rc;
    kp = CFG_PATH_KEY(path, "name");
    c->name = (char *)s;
    st->cluster_name[idx] = n;
    for (i = 0; i < idx; i++)
        if (!strcmp(st->cfg->clusters[i].name, s))
            return cfg_error(st->err, st->doc, n, &kp,
                             "duplicate cluster name '%s' (first defined at %u:%u)", s,
                             st->cluster_name[i]->line, st->cluster_name[i]->col);
    owner_len = strlen("cluster.") + strlen(s) + 1;
    c->owner_name = malloc(owner_len);
    if (!c->owner_name)
        return cfg_error(st->err, st->doc, node, path, "out of memory"), -ENOMEM;
    snprintf(c->owner_name, owner_len, "cluster.%s", s);

    c->connect_timeout_ms = CFG_DEFAULT_CONNECT_TIMEOUT_MS;
    n = cfg_map_get(node, "connect_timeout");
    if (n) {
        char got[128];
        kp = CFG_PATH_KEY(path, "connect_timeout");
        rc = cfg_get_duration_ms(st->err, st->doc, n, &kp, &c->connect_timeout_ms);
        if (rc)
            return rc;
        if (!c->connect_timeout_ms)
            return cfg_error(st->err, st->doc, n, &kp, "expected a duration greater than 0, got %s",
                             cfg_node_describe(n, got, sizeof(got)));
    }
    n = cfg_map_get(node, "health_checks");
    kp = CFG_PATH_KEY(path, "health_checks");
    if (n && (rc = cfg_parse_health_checks(st->err, st->doc, n, &kp, &c->health_check)))
        return rc;
    c->buffer_limit = CFG_DEFAULT_BUFFER_LIMIT;
    if ((rc = opt_enum(st, node, path, "type", types, type_numbers, &type)) ||
        (rc = opt_enum(st, node, path, "lb_policy", policies, policy_numbers, &policy)) ||
        (rc = opt_enum(st, node, path, "dns_lookup_family", families, family_numbers, &family)) ||
        (rc = opt_u32(st, node, path, "per_connection_buffer_limit_bytes", 1, &c->buffer_limit)))
        return rc;
    c->type = (enum cfg_cluster_type)type;
    c->lb_policy = (enum cfg_lb_policy)policy;
    /* dns_refresh_rate (Envoy: > 1ms, default 5000 ms; meaningless and ignored for the other
     * types, as in Envoy); respect_dns_ttl is accepted and ignored: getaddrinfo gives no TTL */
    if (c->type == CFG_CLUSTER_STRICT_DNS || c->type == CFG_CLUSTER_LOGICAL_DNS)
        c->dns_refresh_ms = CFG_DEFAULT_DNS_REFRESH_MS;
    if ((n = cfg_map_get(node, "dns_refresh_rate"))) {
        uint64_t ms;
        kp = CFG_PATH_KEY(path, "dns_refresh_rate");
        if ((rc = cfg_get_duration_ms(st->err, st->doc, n, &kp, &ms)))
            return rc;
        if (ms < 1)
            return cfg_error(st->err, st->doc, n, &kp, "expected a duration of at least 1ms");
        if (c->dns_refresh_ms)
            c->dns_refresh_ms = ms;
    }
    if ((n = cfg_map_get(node, "respect_dns_ttl"))) {
        bool ttl;
        kp = CFG_PATH_KEY(path, "respect_dns_ttl");
        if ((rc = cfg_get_bool(st->err, st->doc, n, &kp, &ttl)))
            return rc;
    }

    hosts = cfg_map_get(node, "hosts");
    la = cfg_map_get(node, "load_assignment");
    /* ORIGINAL_DST and CLUSTER_PROVIDED go together, with no hosts and no health checks, as
     * Envoy's cluster factory checks (source/common/upstream/cluster_factory_impl.cc,
     * source/extensions/clusters/original_dst/original_dst_cluster.cc) */
    if ((c->type == CFG_CLUSTER_ORIGINAL_DST) != (c->lb_policy == CFG_LB_CLUSTER_PROVIDED)) {
        n = cfg_map_get(node, c->type == CFG_CLUSTER_ORIGINAL_DST ? "type" : "lb_policy");
        kp = CFG_PATH_KEY(path, c->type == CFG_CLUSTER_ORIGINAL_DST ? "type" : "lb_policy");
        return cfg_error(st->err, st->doc, n ? n : node, n ? &kp : path,
                         "ORIGINAL_DST clusters take lb_policy CLUSTER_PROVIDED, and only they do");
    }
    if (c->type == CFG_CLUSTER_ORIGINAL_DST) {
        if (hosts || la) {
            kp = CFG_PATH_KEY(path, hosts ? "hosts" : "load_assignment");
            return cfg_error(st->err, st->doc, hosts ? hosts : la, &kp,
                             "ORIGINAL_DST clusters have no configured hosts");
        }
        if (c->health_check.enabled) {
            kp = CFG_PATH_KEY(path, "health_checks");
            return cfg_error(st->err, st->doc, cfg_map_get(node, "health_checks"), &kp,
                             "ORIGINAL_DST clusters cannot be health checked (no hosts)");
        }
        n = cfg_map_get(node, "circuit_breakers");
        kp = CFG_PATH_KEY(path, "circuit_breakers");
        if (n && (rc = parse_circuit_breakers(st, n, &kp, c)))
            return rc;
        return parse_owner_ts(st, node, path, TS_SIDE_UPSTREAM, c->owner_name, &c->ts);
    }
    if (hosts && la) {
        kp = CFG_PATH_KEY(path, "load_assignment");
        return cfg_error(st->err, st->doc, la, &kp,
                         "give either 'hosts' (v2) or 'load_assignment' (v3), not both");
    }
    if (hosts) {
        kp = CFG_PATH_KEY(path, "hosts");
        rc = cfg_expect_seq(st->err, st->doc, hosts, &kp);
        if (rc)
            return rc;
        for (i = 0; i < hosts->n; i++) {
            struct cfg_path hp = CFG_PATH_INDEX(&kp, i);
            rc = add_host(st, c, &cap, hosts->items[i], &hp, (enum dns_family)family);
            if (rc)
                return rc;
        }
    } else if (la) {
        kp = CFG_PATH_KEY(path, "load_assignment");
        rc = cfg_expect_map(st->err, st->doc, la, &kp);
        if (rc)
            return rc;
        rc = parse_load_assignment(st, c, &cap, la, &kp, (enum dns_family)family);
        if (rc)
            return rc;
    }
    if (!c->nhosts)
        return cfg_error(st->err, st->doc, node, path,
                         "cluster '%s' has no hosts: give 'load_assignment' (v3) or 'hosts' (v2)",
                         c->name);
    if (c->type == CFG_CLUSTER_LOGICAL_DNS && c->nhosts > 1) {
        kp = CFG_PATH_KEY(path, hosts ? "hosts" : "load_assignment");
        return cfg_error(st->err, st->doc, hosts ? hosts : la, &kp,
                         "LOGICAL_DNS clusters take exactly one host");
    }
    n = cfg_map_get(node, "circuit_breakers");
    if (n) {
        kp = CFG_PATH_KEY(path, "circuit_breakers");
        rc = parse_circuit_breakers(st, n, &kp, c);
        if (rc)
            return rc;
    }
    return parse_owner_ts(st, node, path, TS_SIDE_UPSTREAM, c->owner_name, &c->ts);
}

/* ---- top level ---- */

static int parse_list(struct cfg_state *st, const struct cfg_node *list,
                      const struct cfg_path *path, size_t elem, void **arr, size_t *n,
                      int (*parse_one)(struct cfg_state *, size_t, const struct cfg_node *,
                                       const struct cfg_path *))
{
    size_t i;
    int rc = cfg_expect_seq(st->err, st->doc, list, path);
    if (rc)
        return rc;
    if (!list->n)
        return 0;
    *arr = calloc(list->n, elem);
    if (!*arr)
        return cfg_error(st->err, st->doc, list, path, "out of memory"), -ENOMEM;
    *n = list->n;
    for (i = 0; i < list->n; i++) {
        struct cfg_path ip = CFG_PATH_INDEX(path, i);
        rc = cfg_expect_map(st->err, st->doc, list->items[i], &ip);
        if (rc)
            return rc;
        rc = parse_one(st, i, list->items[i], &ip);
        if (rc)
            return rc;
    }
    return 0;
}

/* admin.socktap_pcap_over_ip[I] (socktap extension, see struct cfg_pcap_over_ip). The capture
 * socket must exist now, so a typo is a config error and not a port that streams nothing. */
static int parse_pcap_over_ip(struct cfg_state *st, size_t i, const struct cfg_node *node,
                              const struct cfg_path *path)
{
    static const char *const keys[] = {"address", "listener", "cluster", "wire", NULL};
    struct cfg_pcap_over_ip *p = &st->cfg->admin.pcap_over_ip[i];
    const struct socktap_config *cfg = st->cfg;
    const struct cfg_node *n;
    struct cfg_path kp = CFG_PATH_KEY(path, "address");
    int rc = cfg_check_keys(st->err, st->doc, node, path, keys);
    if (!rc)
        rc = require(st, node, path, "address", &n);
    if (!rc)
        rc = cfg_parse_address(st->err, st->doc, n, &kp, &p->addr);
    if (!rc)
        rc = opt_string(st, node, path, "listener", &p->listener);
    if (!rc)
        rc = opt_string(st, node, path, "cluster", &p->cluster);
    if (rc)
        return rc;
    if ((n = cfg_map_get(node, "wire"))) {
        struct cfg_path wp = CFG_PATH_KEY(path, "wire");
        if ((rc = cfg_get_bool(st->err, st->doc, n, &wp, &p->wire)))
            return rc;
    }
    for (size_t j = 0; j < cfg->nlisteners + i + 1; j++) {
        const struct cfg_address *other = j < cfg->nlisteners ? &cfg->listeners[j].addr
                                          : j < cfg->nlisteners + i
                                              ? &cfg->admin.pcap_over_ip[j - cfg->nlisteners].addr
                                              : &cfg->admin.addr;
        if (address_port(&p->addr) && address_equal(&p->addr, other))
            return cfg_error(st->err, st->doc, cfg_map_get(node, "address"), &kp,
                             "address %s is already %s address", p->addr.text,
                             j < cfg->nlisteners       ? "a listener's"
                             : j < cfg->nlisteners + i ? "another socktap_pcap_over_ip's"
                                                       : "the admin's");
    }
    if (!p->listener == !p->cluster)
        return cfg_error(st->err, st->doc, node, path,
                         "give exactly one of 'listener: NAME' or 'cluster: NAME'");
    const char *key = p->listener ? "listener" : "cluster";
    const char *name = p->listener ? p->listener : p->cluster;
    const struct ts_config *ts = NULL;
    for (size_t j = 0; p->listener && j < cfg->nlisteners; j++)
        if (!strcmp(cfg->listeners[j].name, name))
            ts = cfg_listener_ts(&cfg->listeners[j], p->wire);
    for (size_t j = 0; p->cluster && j < cfg->nclusters; j++)
        if (!strcmp(cfg->clusters[j].name, name))
            ts = &cfg->clusters[j].ts;
    n = cfg_map_get(node, key);
    kp = CFG_PATH_KEY(path, key);
    if (!ts)
        return cfg_error(st->err, st->doc, n, &kp, "no %s named '%s'", key, name);
    if (!ts_config_live(ts, p->wire))
        return cfg_error(st->err, st->doc, n, &kp,
                         p->wire ? "%s '%s' has no TLS socket with socktap_wire_capture"
                                 : "%s '%s' has no capture or tap transport socket",
                         key, name);
    return 0;
}

static int parse_admin(struct cfg_state *st, const struct cfg_node *admin,
                       const struct cfg_path *path)
{
    static const char *const keys[] = {"address",    "access_log_path",      "profile_path",
                                       "access_log", "socktap_pcap_over_ip", NULL};
    const struct cfg_node *n;
    struct cfg_path kp;
    const char *s = NULL;
    int rc = cfg_check_keys(st->err, st->doc, admin, path, keys);
    if (rc)
        return rc;
    /* profile_path is validated as a string and otherwise ignored: socktap has no profiler,
     * but Envoy files carry it. */
    if ((rc = opt_string(st, admin, path, "profile_path", &s)))
        return rc;
    s = NULL;
    if ((rc = opt_string(st, admin, path, "access_log_path", &s)))
        return rc;
    n = cfg_map_get(admin, "access_log");
    kp = CFG_PATH_KEY(path, "access_log");
    if (n && s)
        return cfg_error(st->err, st->doc, n, &kp,
                         "give either access_log or the v2 access_log_path, not both");
    if (n && (rc = cfg_parse_access_logs(st->err, st->doc, n, &kp, &st->cfg->admin.access_logs,
                                         &st->cfg->admin.naccess_logs)))
        return rc;
    /* "/dev/null", Envoy's usual value, means no log: nothing to hand the writer */
    if (s && *s && strcmp(s, "/dev/null")) {
        struct cfg_access_log *l = calloc(1, sizeof(*l));
        if (l) {
            st->cfg->admin.access_logs = l;
            st->cfg->admin.naccess_logs = 1;
        }
        if (!l || !(l->fmt = al_format_new()) ||
            al_format_add(l->fmt, al_default_format, AL_TEXT, (char[64]){0}, 64))
            return cfg_error(st->err, st->doc, admin, path, "out of memory"), -ENOMEM;
        l->path = s;
    }
    rc = require(st, admin, path, "address", &n);
    if (rc)
        return rc;
    kp = CFG_PATH_KEY(path, "address");
    rc = cfg_parse_address(st->err, st->doc, n, &kp, &st->cfg->admin.addr);
    if (rc)
        return rc;
    st->cfg->admin.enabled = true;
    for (size_t i = 0; i < st->cfg->nlisteners; i++)
        if (address_port(&st->cfg->admin.addr) &&
            address_equal(&st->cfg->admin.addr, &st->cfg->listeners[i].addr))
            return cfg_error(st->err, st->doc, n, &kp,
                             "admin address %s is also listener %zu's address",
                             st->cfg->admin.addr.text, i);
    n = cfg_map_get(admin, "socktap_pcap_over_ip");
    kp = CFG_PATH_KEY(path, "socktap_pcap_over_ip");
    if (n)
        return parse_list(st, n, &kp, sizeof(*st->cfg->admin.pcap_over_ip),
                          (void **)&st->cfg->admin.pcap_over_ip, &st->cfg->admin.npcap_over_ip,
                          parse_pcap_over_ip);
    return 0;
}

static int parse_static_resources(struct cfg_state *st, const struct cfg_node *sr,
                                  const struct cfg_path *path)
{
    static const char *const keys[] = {"listeners", "clusters", NULL};
    struct socktap_config *cfg = st->cfg;
    const struct cfg_node *listeners, *clusters;
    struct cfg_path lp = CFG_PATH_KEY(path, "listeners"), cp = CFG_PATH_KEY(path, "clusters");
    int rc = cfg_check_keys(st->err, st->doc, sr, path, keys);
    if (rc)
        return rc;
    listeners = cfg_map_get(sr, "listeners");
    clusters = cfg_map_get(sr, "clusters");
    if (clusters && !cfg_node_is_null(clusters)) {
        if (clusters->type == CFG_SEQ) {
            st->cluster_name = calloc(clusters->n + 1, sizeof(*st->cluster_name));
            if (!st->cluster_name)
                return cfg_error(st->err, st->doc, clusters, &cp, "out of memory"), -ENOMEM;
        }
        rc = parse_list(st, clusters, &cp, sizeof(*cfg->clusters), (void **)&cfg->clusters,
                        &cfg->nclusters, parse_cluster);
        if (rc)
            return rc;
    }
    if (listeners && !cfg_node_is_null(listeners)) {
        if (listeners->type == CFG_SEQ) {
            st->listener_addr = calloc(listeners->n + 1, sizeof(*st->listener_addr));
            st->listener_name = calloc(listeners->n + 1, sizeof(*st->listener_name));
            if (!st->listener_addr || !st->listener_name)
                return cfg_error(st->err, st->doc, listeners, &lp, "out of memory"), -ENOMEM;
        }
        rc = parse_list(st, listeners, &lp, sizeof(*cfg->listeners), (void **)&cfg->listeners,
                        &cfg->nlisteners, parse_listener);
        if (rc)
            return rc;
    }
    return 0;
}

/* Bootstrap fields that do not change what an L4 proxy does with its connections: accepted, and
 * named once in a warning, so an Envoy bootstrap runs as it is (docs/envoy-compat.md). */
static const struct {
    const char *key, *why;
} ignored_keys[] = {
    {"node", "it names an Envoy to its control plane; socktap has none"},
    {"layered_runtime", "socktap has no runtime layers"},
    {"stats_sinks", "socktap serves its stats on the admin (/stats, /stats/prometheus) only"},
    {"stats_config", "socktap's stat names and tags are fixed (Envoy's defaults)"},
    {"stats_flush_interval", "socktap has no stats sinks to flush"},
    {"stats_flush_on_admin", "socktap has no stats sinks to flush"},
    {"overload_manager",
     "socktap bounds memory by its own limits (buffer limits, capture backlog)"},
    {"cluster_manager", "its settings (local cluster, outlier and load stats) do not apply here"},
    {"watchdog", "socktap has no watchdog"},
    {"watchdogs", "socktap has no watchdog"},
    {"tracing", "tracing is HTTP's"},
    {"enable_dispatcher_stats", "socktap has no dispatcher histograms"},
    {"header_prefix", "headers are HTTP's"},
    {"inline_headers", "headers are HTTP's"},
    {"stats_server_version_override", "socktap has no server.version stat"},
    {"use_tcp_for_dns_lookups", "socktap resolves STRICT_DNS hosts with the system resolver"},
    {"dns_resolution_config", "socktap resolves STRICT_DNS hosts with the system resolver"},
    {"typed_dns_resolver_config", "socktap resolves STRICT_DNS hosts with the system resolver"},
    {"default_regex_engine", "socktap's regular expressions (admin filter) are POSIX"},
    {"fatal_actions", "socktap has no fatal-action extensions"},
    {"perf_tracing_file_path", "socktap has no perf tracing"},
    {"default_socket_interface", "socktap uses the kernel's sockets"},
    {"node_context_params", "socktap has no control plane"},
    {"memory_allocator_manager", "socktap uses the C library's allocator"},
    {"default_config_validators", "socktap has no xDS config to validate"},
};

/* Keys that would change behaviour socktap cannot give: refused with why. */
static const struct {
    const char *key, *why;
} refused_keys[] = {
    {"dynamic_resources", "xDS is not supported: socktap reads static_resources only"},
    {"hds_config", "health discovery (HDS) is not supported"},
    {"bootstrap_extensions", "bootstrap extensions are not supported"},
    {"flags_path", "flag files are not supported"},
};

/* application_log_config.log_format (envoy.config.bootstrap.v3.Bootstrap.ApplicationLogConfig):
 * text_format is a --log-format pattern; json_format a Struct whose string values are patterns,
 * written as one JSON object per line (Envoy's Logger::Registry::setJsonLogFormat: %v and %_ are
 * refused there, %j is the JSON-escaped message). */
static int json_pattern(struct cfg_state *st, const struct cfg_node *n, const struct cfg_path *path,
                        FILE *out)
{
    if (n->type == CFG_MAP) {
        fputc('{', out);
        for (size_t i = 0; i < n->n; i++) {
            struct cfg_path kp = CFG_PATH_KEY(path, n->entries[i].key->str);
            fputs(i ? ",\"" : "\"", out);
            for (const char *c = n->entries[i].key->str; *c; c++)
                fprintf(out, *c == '"' || *c == '\\' ? "\\%c" : *c == '%' ? "%%%%" : "%c", *c);
            fputs("\":", out);
            int rc = json_pattern(st, n->entries[i].value, &kp, out);
            if (rc)
                return rc;
        }
        fputc('}', out);
        return 0;
    }
    if (n->type == CFG_SEQ)
        return cfg_error(st->err, st->doc, n, path, "expected a string, number, bool or mapping");
    if (!n->quoted && (!strcmp(n->str, "true") || !strcmp(n->str, "false") ||
                       !strcmp(n->str, "null") || strspn(n->str, "0123456789.-eE") == n->len)) {
        fputs(n->str, out); /* a JSON literal as it is */
        return 0;
    }
    if (strstr(n->str, "%v") || strstr(n->str, "%_"))
        return cfg_error(st->err, st->doc, n, path,
                         "%%v and %%_ are not allowed in json_format (use %%j, the JSON-escaped "
                         "message), as in Envoy");
    fputc('"', out);
    for (const char *c = n->str; *c; c++)
        if (*c == '"' || *c == '\\')
            fprintf(out, "\\%c", *c);
        else
            fputc(*c, out);
    fputc('"', out);
    return 0;
}

static int parse_application_log(struct cfg_state *st, const struct cfg_node *node,
                                 const struct cfg_path *path)
{
    static const char *const keys[] = {"log_format", NULL};
    static const char *const fkeys[] = {"text_format", "json_format", NULL};
    int rc;
    if ((rc = cfg_check_keys(st->err, st->doc, node, path, keys)))
        return rc;
    const struct cfg_node *lf = cfg_map_get(node, "log_format");
    struct cfg_path lp = CFG_PATH_KEY(path, "log_format");
    if (!lf)
        return 0;
    if ((rc = cfg_check_keys(st->err, st->doc, lf, &lp, fkeys)))
        return rc;
    const struct cfg_node *text = cfg_map_get(lf, "text_format");
    const struct cfg_node *json = cfg_map_get(lf, "json_format");
    if (!text == !json)
        return cfg_error(st->err, st->doc, lf, &lp, "give one of text_format or json_format");
    struct cfg_path fp = CFG_PATH_KEY(&lp, text ? "text_format" : "json_format");
    char *pattern = NULL;
    size_t len = 0;
    if (text) {
        const char *s;
        if ((rc = cfg_get_string(st->err, st->doc, text, &fp, &s)))
            return rc;
        if (!(pattern = strdup(s)))
            return cfg_error(st->err, st->doc, text, &fp, "out of memory"), -ENOMEM;
    } else {
        if ((rc = cfg_expect_map(st->err, st->doc, json, &fp)))
            return rc;
        FILE *f = open_memstream(&pattern, &len);
        if (!f)
            return cfg_error(st->err, st->doc, json, &fp, "out of memory"), -ENOMEM;
        rc = json_pattern(st, json, &fp, f);
        fclose(f);
        if (rc) {
            free(pattern);
            return rc;
        }
    }
    char why[200];
    if (log_format_check(pattern, why, sizeof(why))) {
        free(pattern);
        return cfg_error(st->err, st->doc, text ? text : json, &fp, "%s", why);
    }
    st->cfg->log_format = pattern;
    return 0;
}

static int parse_bootstrap(struct cfg_state *st)
{
#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))
    const char *keys[3 + NKEYS(ignored_keys) + NKEYS(refused_keys) + 1] = {
        "static_resources", "admin", "application_log_config"};
    size_t nk = 3;
    for (size_t i = 0; i < NKEYS(ignored_keys); i++)
        keys[nk++] = ignored_keys[i].key;
    for (size_t i = 0; i < NKEYS(refused_keys); i++)
        keys[nk++] = refused_keys[i].key;
    keys[nk] = NULL;
    const struct cfg_node *root = st->doc->root, *n;
    struct cfg_path kp;
    int rc;

    if (!root)
        return cfg_error(st->err, st->doc, NULL, NULL, "the configuration is empty");
    rc = cfg_check_keys(st->err, st->doc, root, NULL, keys);
    if (rc)
        return rc;
    /* Both parsers start with cfg_check_keys, which also insists on a mapping. */
    n = cfg_map_get(root, "static_resources");
    kp = CFG_PATH_KEY(NULL, "static_resources");
    if (n && (rc = parse_static_resources(st, n, &kp)))
        return rc;
    n = cfg_map_get(root, "admin");
    kp = CFG_PATH_KEY(NULL, "admin");
    if (n && (rc = parse_admin(st, n, &kp)))
        return rc;
    n = cfg_map_get(root, "application_log_config");
    kp = CFG_PATH_KEY(NULL, "application_log_config");
    if (n && (rc = parse_application_log(st, n, &kp)))
        return rc;
    for (size_t i = 0; i < NKEYS(refused_keys); i++) {
        kp = CFG_PATH_KEY(NULL, refused_keys[i].key);
        if ((n = cfg_map_get(root, refused_keys[i].key)))
            return cfg_error(st->err, st->doc, n, &kp, "%s", refused_keys[i].why);
    }
    return 0;
#undef NKEYS
}

void config_warn_ignored(const struct socktap_config *cfg)
{
    const struct cfg_node *n;
    for (size_t i = 0; i < sizeof(ignored_keys) / sizeof(ignored_keys[0]); i++)
        if ((n = cfg_map_get(cfg->doc->root, ignored_keys[i].key)))
            LOGW(LOG_NO_CONN, "%s:%u:%u: %s: accepted and ignored: %s (docs/envoy-compat.md)",
                 cfg->doc->file, n->line, n->col, ignored_keys[i].key, ignored_keys[i].why);
    /* Envoy accepts these too (it stopped injecting tls_inspector by itself): worth a line */
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (!cfg->listeners[i].tls_inspector && cfg_listener_needs_inspector(&cfg->listeners[i]))
            LOGW(LOG_NO_CONN,
                 "listener %s: a filter_chain_match names server_names, application_protocols "
                 "or transport_protocol tls, but there is no "
                 "envoy.filters.listener.tls_inspector in listener_filters: such chains never "
                 "match (docs/envoy-compat.md)",
                 cfg->listeners[i].name);
}

void config_free(struct socktap_config *cfg)
{
    size_t i;
    if (!cfg)
        return;
    for (i = 0; i < cfg->nlisteners; i++) {
        for (size_t c = 0; cfg->listeners[i].chains && c < cfg->listeners[i].nchains; c++) {
            ts_config_free(&cfg->listeners[i].chains[c].ts);
            chain_match_free(&cfg->listeners[i].chains[c].match);
            cfg_access_logs_free(cfg->listeners[i].chains[c].tcp_proxy.access_logs,
                                 cfg->listeners[i].chains[c].tcp_proxy.naccess_logs);
            free(cfg->listeners[i].chains[c].tcp_proxy.weighted);
        }
        free(cfg->listeners[i].chains);
        free(cfg->listeners[i].owner_name);
    }
    free(cfg->listeners);
    for (i = 0; i < cfg->nclusters; i++) {
        ts_config_free(&cfg->clusters[i].ts);
        free(cfg->clusters[i].owner_name);
        free(cfg->clusters[i].hosts);
        cfg_health_check_free(&cfg->clusters[i].health_check);
    }
    free(cfg->clusters);
    free(cfg->admin.pcap_over_ip);
    cfg_access_logs_free(cfg->admin.access_logs, cfg->admin.naccess_logs);
    free(cfg->log_format);
    cfg_doc_free(cfg->doc);
    free(cfg);
}

static int config_from_doc(struct cfg_doc *doc, struct socktap_config **out, struct cfg_err *err)
{
    struct cfg_state st = {.err = err, .doc = doc};
    int rc;

    st.cfg = calloc(1, sizeof(*st.cfg));
    if (!st.cfg) {
        cfg_error(err, doc, NULL, NULL, "out of memory");
        cfg_doc_free(doc);
        return -ENOMEM;
    }
    st.cfg->doc = doc;
    rc = parse_bootstrap(&st);
    free(st.listener_addr);
    free(st.listener_name);
    free(st.cluster_name);
    if (rc) {
        if (!err->set)
            cfg_error(err, doc, NULL, NULL, "invalid configuration (%d)", rc);
        config_free(st.cfg);
        return rc;
    }
    *out = st.cfg;
    return 0;
}

int config_load_string(const char *name, const char *text, size_t len, struct socktap_config **out,
                       struct cfg_err *err)
{
    struct cfg_doc *doc;
    int rc;
    *out = NULL;
    rc = cfg_doc_load_string(name, text, len, &doc, err);
    if (rc)
        return rc;
    return config_from_doc(doc, out, err);
}

int config_load(const char *file, struct socktap_config **out, struct cfg_err *err)
{
    struct cfg_doc *doc;
    int rc;
    *out = NULL;
    rc = cfg_doc_load_file(file, &doc, err);
    if (rc)
        return rc;
    return config_from_doc(doc, out, err);
}

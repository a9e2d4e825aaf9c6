/* tap_feat: socket_tap_config, tap_enabled, the match tree and the UDP sink (see tap_feat.h).
 *
 * The match tree is evaluated at load: at L4 a tap socket sees no HTTP message, so the only
 * leaves that can decide are any_match (true) and the HTTP matchers, which never fire on a
 * transport socket in Envoy either (envoyproxy/envoy#13803) and are refused here by name, since a
 * tap that silently never matches is the surprise the operator does not want. and/or/not over
 * any_match are constants; a tree that is constantly false taps nothing, warned at load and
 * counted per connection (not_matched). Rejected: a per-connection matcher state vector as
 * Envoy's (createMatchStatusVector): nothing at L4 would ever change it.
 *
 * Sampling (tap_enabled) draws from a hash of the connection id (splitmix64), not from a
 * random generator: the same id gets the same answer, so a test (or an operator comparing two
 * runs) can predict which connections are tapped, and the worker needs no RNG state. Envoy
 * draws random() % denominator < numerator (Runtime::SnapshotImpl::featureEnabled); with
 * sequential ids the hash is as uniform for the counts that matter.
 *
 * The UDP sink uses one non-blocking datagram socket per config, shared by the workers: sendto
 * of one datagram is atomic, so no lock and no per-worker socket are needed. Envoy's sink
 * (contrib/tap_sinks/udp_sink/source/udp_sink_impl.cc) slices an event body larger than
 * udp_max_send_msg_size_bytes into several messages; socktap drops such a message and counts it
 * (udp_too_large): streamed bodies are cut at max_buffered_rx/tx_bytes (1 KiB by default)
 * anyway, so only a configuration that raises those meets the limit. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "trace/trace.h"
#include "trace/trace_encode.h"
#include "transport/tap_feat.h"
#include "transport/ts_registry.h"

#define UDP_DEFAULT_MAX_MSG 63488u /* udp_sink.proto: "default value is 63,488 bytes" */
#define UDP_MAX_DATAGRAM    65507u /* IPv4 UDP payload limit */

static const char *const udp_sink_urls[] = {
    "type.googleapis.com/envoy.extensions.tap_sinks.udp_sink.v3alpha.UdpSink", NULL};

int tap_feat_parse_socket_cfg(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                              const struct cfg_path *path, struct tap_feat *feat,
                              struct trace_enc_cfg *enc)
{
    static const char *const keys[] = {"set_connection_per_event", "stats_prefix", NULL};
    const struct cfg_node *n;
    const char *s;
    int rc;
    if (cfg_node_is_null(node))
        return 0;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    if ((n = cfg_map_get(node, "set_connection_per_event"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "set_connection_per_event");
        if ((rc = cfg_get_bool(ctx->err, ctx->doc, n, &p, &enc->conn_per_event)))
            return rc;
    }
    if ((n = cfg_map_get(node, "stats_prefix"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "stats_prefix");
        if ((rc = cfg_get_string(ctx->err, ctx->doc, n, &p, &s)))
            return rc;
        if (strchr(s, '\n') || strchr(s, ' '))
            return cfg_error(ctx->err, ctx->doc, n, &p, "expected a stats name, got spaces");
        free(feat->stats_prefix);
        if (*s && !(feat->stats_prefix = strdup(s)))
            return -ENOMEM;
    }
    return 0;
}

/* One MatchPredicate: *OUT is its constant value. DEPTH bounds the recursion (the YAML tree is
 * bounded too, at 64 levels). */
static int match_eval(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                      const struct cfg_path *path, int depth, bool *out);

/* and_match / or_match: MatchSet {rules: [>= 2 predicates]} (common.proto validate rules). */
static int match_set(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                     const struct cfg_path *path, int depth, bool is_and, bool *out)
{
    static const char *const keys[] = {"rules", NULL};
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    struct cfg_path rp = CFG_PATH_KEY(path, "rules");
    const struct cfg_node *rules = cfg_map_get(node, "rules");
    if (!rules)
        return cfg_error(ctx->err, ctx->doc, node, &rp, "rules is required");
    if ((rc = cfg_expect_seq(ctx->err, ctx->doc, rules, &rp)))
        return rc;
    if (rules->n < 2)
        return cfg_error(ctx->err, ctx->doc, rules, &rp,
                         "expected at least 2 rules (as Envoy's MatchSet), got %zu", rules->n);
    *out = is_and;
    for (size_t i = 0; i < rules->n; i++) {
        struct cfg_path ip = CFG_PATH_INDEX(&rp, i);
        bool v;
        if ((rc = match_eval(ctx, rules->items[i], &ip, depth + 1, &v)))
            return rc;
        *out = is_and ? *out && v : *out || v;
    }
    return 0;
}

static int match_eval(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                      const struct cfg_path *path, int depth, bool *out)
{
    static const char *const http[] = {"http_request_headers_match",
                                       "http_request_trailers_match",
                                       "http_response_headers_match",
                                       "http_response_trailers_match",
                                       "http_request_generic_body_match",
                                       "http_response_generic_body_match",
                                       NULL};
    int rc = cfg_expect_map(ctx->err, ctx->doc, node, path);
    if (rc)
        return rc;
    if (depth > 32)
        return cfg_error(ctx->err, ctx->doc, node, path, "match tree deeper than 32 levels");
    if (node->n != 1)
        return cfg_error(ctx->err, ctx->doc, node, path,
                         "expected exactly one of any_match, and_match, or_match, not_match "
                         "(a MatchPredicate is a oneof), got %zu keys",
                         node->n);
    const struct cfg_node *key = node->entries[0].key, *val = node->entries[0].value;
    struct cfg_path p = CFG_PATH_KEY(path, key->str);
    for (const char *const *h = http; *h; h++)
        if (!strcmp(key->str, *h))
            return cfg_error(ctx->err, ctx->doc, key, &p,
                             "not supported: %s is an HTTP matcher and never fires on a transport "
                             "socket, in Envoy either (envoyproxy/envoy#13803); tap the HTTP "
                             "filter instead, or use any_match",
                             key->str);
    if (!strcmp(key->str, "any_match")) {
        if ((rc = cfg_get_bool(ctx->err, ctx->doc, val, &p, out)))
            return rc;
        if (!*out) /* common.proto: bool any_match = 4 [(validate.rules).bool = {const: true}] */
            return cfg_error(ctx->err, ctx->doc, val, &p,
                             "must be true (Envoy's validation); `not_match: {any_match: true}` "
                             "is the tree that matches nothing");
        return 0;
    }
    if (!strcmp(key->str, "not_match")) {
        if ((rc = match_eval(ctx, val, &p, depth + 1, out)))
            return rc;
        *out = !*out;
        return 0;
    }
    if (!strcmp(key->str, "and_match") || !strcmp(key->str, "or_match")) {
        if ((rc = cfg_expect_map(ctx->err, ctx->doc, val, &p)))
            return rc;
        return match_set(ctx, val, &p, depth, key->str[0] == 'a', out);
    }
    return cfg_error(ctx->err, ctx->doc, key, &p,
                     "unknown matcher '%s' (expected one of: any_match, and_match, or_match, "
                     "not_match)",
                     key->str);
}

int tap_feat_parse_match(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                         const struct cfg_path *path, struct tap_feat *feat)
{
    bool v;
    int rc = match_eval(ctx, node, path, 0, &v);
    if (rc)
        return rc;
    feat->never = !v;
    if (feat->never) {
        char kp[512];
        LOGW(LOG_NO_CONN,
             "%s:%u:%u: %s: this match tree is never true: the tap records no connection "
             "(counted in tap.not_matched)",
             ctx->doc->file, node->line, node->col, cfg_path_format(path, kp, sizeof(kp)));
    }
    return 0;
}

/* FractionalPercent {numerator, denominator: HUNDRED | TEN_THOUSAND | MILLION}. */
static int parse_fraction(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                          const struct cfg_path *path, uint32_t *num, uint32_t *den)
{
    static const char *const keys[] = {"numerator", "denominator", NULL};
    static const char *const dens[] = {"HUNDRED", "TEN_THOUSAND", "MILLION", NULL};
    static const uint32_t den_values[] = {100, 10000, 1000000};
    const struct cfg_node *n;
    uint64_t v = 0;
    int rc, idx = 0;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    if ((n = cfg_map_get(node, "denominator"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "denominator");
        if ((rc = cfg_get_enum_num(ctx->err, ctx->doc, n, &p, dens, NULL, &idx)))
            return rc;
    }
    if ((n = cfg_map_get(node, "numerator"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "numerator");
        if ((rc = cfg_get_u64(ctx->err, ctx->doc, n, &p, 0, UINT32_MAX, &v)))
            return rc;
    }
    *den = den_values[idx];
    /* Envoy: a numerator above the denominator is clamped to 100% (ProtobufPercentHelper) */
    *num = v > *den ? *den : (uint32_t)v;
    return 0;
}

int tap_feat_parse_enabled(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                           const struct cfg_path *path, struct tap_feat *feat)
{
    static const char *const keys[] = {"default_value", "runtime_key", NULL};
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    struct cfg_path dp = CFG_PATH_KEY(path, "default_value");
    const struct cfg_node *dv = cfg_map_get(node, "default_value");
    if (!dv) /* base.proto: default_value is required */
        return cfg_error(ctx->err, ctx->doc, node, &dp, "default_value is required");
    if ((rc = parse_fraction(ctx, dv, &dp, &feat->sample_num, &feat->sample_den)))
        return rc;
    const struct cfg_node *rk = cfg_map_get(node, "runtime_key");
    if (rk) {
        struct cfg_path kp = CFG_PATH_KEY(path, "runtime_key");
        const char *s;
        char buf[512];
        if ((rc = cfg_get_string(ctx->err, ctx->doc, rk, &kp, &s)))
            return rc;
        /* socktap has no runtime layer: the key can never override, the default decides */
        LOGW(LOG_NO_CONN,
             "%s:%u:%u: %s: socktap has no runtime: '%s' is not read, default_value %" PRIu32
             "/%" PRIu32 " applies",
             ctx->doc->file, rk->line, rk->col, cfg_path_format(&kp, buf, sizeof(buf)), s,
             feat->sample_num, feat->sample_den);
    }
    feat->sampling = feat->sample_num < feat->sample_den;
    return 0;
}

/* udp_address: a SocketAddress {protocol: UDP, address: IP literal, port_value}. */
static int parse_udp_address(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                             const struct cfg_path *path, struct tap_udp *u)
{
    static const char *const keys[] = {"protocol", "address", "port_value", NULL};
    static const char *const protos[] = {"TCP", "UDP", NULL};
    const struct cfg_node *n;
    const char *host;
    uint64_t port;
    int rc, idx = 0;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    struct cfg_path pp = CFG_PATH_KEY(path, "protocol");
    if ((n = cfg_map_get(node, "protocol")) &&
        (rc = cfg_get_enum_num(ctx->err, ctx->doc, n, &pp, protos, NULL, &idx)))
        return rc;
    if (idx != 1) /* udp_sink_impl.cc: "Only suport UDP": Envoy would create no socket */
        return cfg_error(ctx->err, ctx->doc, n ? n : node, &pp,
                         "the UDP sink needs `protocol: UDP` (Envoy's sends nothing without it)");
    struct cfg_path ap = CFG_PATH_KEY(path, "address"), portp = CFG_PATH_KEY(path, "port_value");
    if (!(n = cfg_map_get(node, "address")))
        return cfg_error(ctx->err, ctx->doc, node, &ap, "address is required");
    if ((rc = cfg_get_string(ctx->err, ctx->doc, n, &ap, &host)))
        return rc;
    memset(&u->addr, 0, sizeof(u->addr));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&u->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&u->addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        u->addr_len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        u->addr_len = sizeof(*v6);
    } else {
        return cfg_error(ctx->err, ctx->doc, n, &ap, "expected an IPv4 or IPv6 address, got \"%s\"",
                         host);
    }
    if (!(n = cfg_map_get(node, "port_value")))
        return cfg_error(ctx->err, ctx->doc, node, &portp, "port_value is required");
    if ((rc = cfg_get_u64(ctx->err, ctx->doc, n, &portp, 1, 65535, &port)))
        return rc;
    if (u->addr.ss_family == AF_INET)
        v4->sin_port = htons((uint16_t)port);
    else
        v6->sin6_port = htons((uint16_t)port);
    return 0;
}

/* UdpSink.udp_sent_buffer_bytes / udp_max_send_msg_size_bytes: integers or {value: N}. */
static int parse_u32_value(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                           const struct cfg_path *path, uint64_t min, uint64_t max, uint64_t *out)
{
    if (node->type == CFG_MAP) {
        static const char *const keys[] = {"value", NULL};
        int rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys);
        if (rc)
            return rc;
        struct cfg_path p = CFG_PATH_KEY(path, "value");
        const struct cfg_node *v = cfg_map_get(node, "value");
        if (!v)
            return cfg_error(ctx->err, ctx->doc, node, &p, "value is required");
        return cfg_get_u64(ctx->err, ctx->doc, v, &p, min, max, out);
    }
    return cfg_get_u64(ctx->err, ctx->doc, node, path, min, max, out);
}

static int udp_open(struct tap_udp *u, uint64_t sndbuf)
{
    u->fd = socket(u->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (u->fd < 0)
        return -errno;
    if (sndbuf) {
        int v = (int)sndbuf;
        (void)setsockopt(u->fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v)); /* a hint, as Envoy's */
    }
    return 0;
}

int tap_feat_parse_custom_sink(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                               const struct cfg_path *path, struct tap_feat *feat)
{
    static const char *const keys[] = {"name", "typed_config", NULL};
    static const char *const udp_keys[] = {"udp_address", "udp_sent_buffer_bytes",
                                           "udp_max_send_msg_size_bytes", NULL};
    const struct cfg_node *n, *settings;
    struct cfg_path sp;
    const char *name = "";
    uint64_t sndbuf = 0, max_msg = UDP_DEFAULT_MAX_MSG;
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    struct cfg_path np = CFG_PATH_KEY(path, "name");
    if ((n = cfg_map_get(node, "name")) && (rc = cfg_get_string(ctx->err, ctx->doc, n, &np, &name)))
        return rc;
    if (strcmp(name, "envoy.tap_sinks.udp_sink") != 0)
        return cfg_error(ctx->err, ctx->doc, n ? n : node, &np,
                         "not supported: socktap's custom_sink is envoy.tap_sinks.udp_sink only");
    if ((rc = cfg_extension_settings(ctx->err, ctx->doc, node, path, udp_sink_urls,
                                     "tap sink 'envoy.tap_sinks.udp_sink'", &settings, &sp)))
        return rc;
    if (!settings)
        return cfg_error(ctx->err, ctx->doc, node, &sp, "the UDP sink needs a udp_address");
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, settings, &sp, udp_keys)))
        return rc;
    struct tap_udp *u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->fd = -1;
    struct cfg_path ap = CFG_PATH_KEY(&sp, "udp_address");
    if (!(n = cfg_map_get(settings, "udp_address"))) {
        rc = cfg_error(ctx->err, ctx->doc, settings, &ap, "udp_address is required");
        goto err_free;
    }
    if ((rc = parse_udp_address(ctx, n, &ap, u)))
        goto err_free;
    if ((n = cfg_map_get(settings, "udp_sent_buffer_bytes"))) {
        struct cfg_path p = CFG_PATH_KEY(&sp, "udp_sent_buffer_bytes");
        if ((rc = parse_u32_value(ctx, n, &p, 0, INT32_MAX / 2, &sndbuf)))
            goto err_free;
    }
    if ((n = cfg_map_get(settings, "udp_max_send_msg_size_bytes"))) {
        struct cfg_path p = CFG_PATH_KEY(&sp, "udp_max_send_msg_size_bytes");
        if ((rc = parse_u32_value(ctx, n, &p, 1, UDP_MAX_DATAGRAM, &max_msg)))
            goto err_free;
    }
    u->max_msg = (uint32_t)max_msg;
    if (!(u->drop_logged = calloc(1, sizeof(*u->drop_logged)))) {
        rc = -ENOMEM;
        goto err_free;
    }
    if ((rc = udp_open(u, sndbuf))) {
        rc = cfg_error(ctx->err, ctx->doc, node, path, "cannot open the UDP sink's socket: %s",
                       strerror(-rc));
        goto err_free;
    }
    feat->udp = u;
    return 0;

err_free:
    free(u->drop_logged);
    free(u);
    return rc;
}

void tap_feat_register_stats(struct tap_feat *feat, const char *owner)
{
    const char *o = owner ? owner : "socktap";
    const char *p = feat->stats_prefix ? feat->stats_prefix : "";
    const char *dot = *p ? "." : "";
    struct tap_feat_stats *s = &feat->stats;
    feat->registered = true;
    /* Envoy's scope "transport.tap.<stats_prefix>." (tap.proto SocketTapConfig.stats_prefix) */
    static const struct {
        const char *name;
        size_t off;
    } envoy[] = {
        {"streamed_read_submit", offsetof(struct tap_feat_stats, streamed_read)},
        {"streamed_write_submit", offsetof(struct tap_feat_stats, streamed_write)},
        {"streamed_close_submit", offsetof(struct tap_feat_stats, streamed_close)},
        {"buffered_read_submit", offsetof(struct tap_feat_stats, buffered_read)},
        {"buffered_write_submit", offsetof(struct tap_feat_stats, buffered_write)},
        {"buffered_close_submit", offsetof(struct tap_feat_stats, buffered_close)},
    };
    for (size_t i = 0; i < sizeof(envoy) / sizeof(envoy[0]); i++)
        *(stat_id *)((char *)s + envoy[i].off) =
            stats_registerf(STAT_COUNTER, "transport.tap.%s%s%s", p, dot, envoy[i].name);
    s->sampled_out = stats_registerf(STAT_COUNTER, "%s.tap.sampled_out", o);
    s->not_matched = stats_registerf(STAT_COUNTER, "%s.tap.not_matched", o);
    if (feat->udp) {
        s->udp_sent = stats_registerf(STAT_COUNTER, "%s.tap.udp_sent", o);
        s->udp_dropped = stats_registerf(STAT_COUNTER, "%s.tap.udp_dropped", o);
        s->udp_too_large = stats_registerf(STAT_COUNTER, "%s.tap.udp_too_large", o);
    }
}

void tap_feat_free(struct tap_feat *feat)
{
    free(feat->stats_prefix);
    feat->stats_prefix = NULL;
    if (feat->udp) {
        if (feat->udp->fd >= 0)
            close(feat->udp->fd);
        free(feat->udp->drop_logged);
        free(feat->udp);
        feat->udp = NULL;
    }
}

uint64_t tap_feat_draw(uint64_t conn_id)
{
    /* splitmix64's finalizer: every input bit moves every output bit */
    uint64_t z = conn_id + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool tap_feat_sampled(const struct tap_feat *feat, uint64_t conn_id)
{
    if (!feat->sampling)
        return true;
    return tap_feat_draw(conn_id) % feat->sample_den < feat->sample_num;
}

void tap_udp_send(const struct tap_feat *feat, uint64_t conn_id, const void *msg, size_t len)
{
    const struct tap_udp *u = feat->udp;
    const char *why = NULL;
    if (!u || !len)
        return;
    if (len > u->max_msg) {
        stats_inc(feat->stats.udp_too_large);
        why = "larger than udp_max_send_msg_size_bytes";
    } else if (sendto(u->fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL,
                      (const struct sockaddr *)&u->addr, u->addr_len) < 0) {
        stats_inc(feat->stats.udp_dropped);
        why =
            errno == EAGAIN || errno == EWOULDBLOCK ? "the socket buffer is full" : strerror(errno);
    } else {
        stats_inc(feat->stats.udp_sent);
        if (__atomic_load_n(u->drop_logged, __ATOMIC_RELAXED))
            __atomic_store_n(u->drop_logged, false, __ATOMIC_RELAXED);
        return;
    }
    if (!__atomic_exchange_n(u->drop_logged, true, __ATOMIC_RELAXED))
        LOGW(conn_id,
             "tap: UDP sink: a %zu-byte trace message was dropped (%s); further drops are "
             "counted in tap.udp_dropped / tap.udp_too_large, logged again after a datagram is "
             "sent",
             len, why);
}

/* Cluster health_checks (health_check_config.h).
 *
 * One TCP check per cluster: Envoy allows several, each with its own verdict; socktap runs one
 * and refuses a second rather than silently dropping it. HTTP, gRPC and custom checkers are
 * refused (no L7 here). Payloads: `text` (hex, Envoy's own form in YAML); `binary` (base64 in
 * YAML) is refused with a pointer to `text`. Jitter, edge intervals, event logs and
 * reuse_connection are accepted and ignored (listed in docs/envoy-compat.md): they change when a
 * check runs or what is logged, never the verdict; a TCP check with no receive payload closes
 * after connecting in Envoy too (TcpActiveHealthCheckSession::onEvent). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config/health_check_config.h"
#include "core/hexdigit.h"

#define HC_DEFAULT_NO_TRAFFIC_MS 60000u

static int parse_payload(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *n,
                         const struct cfg_path *path, struct cfg_hc_payload *out)
{
    static const char *const keys[] = {"text", "binary", NULL};
    int rc = cfg_check_keys(err, doc, n, path, keys);
    if (rc)
        return rc;
    const struct cfg_node *b = cfg_map_get(n, "binary");
    if (b) {
        struct cfg_path bp = CFG_PATH_KEY(path, "binary");
        return cfg_error(err, doc, b, &bp, "binary payloads are not supported: give 'text' (hex)");
    }
    const struct cfg_node *t = cfg_map_get(n, "text");
    struct cfg_path tp = CFG_PATH_KEY(path, "text");
    const char *s;
    if (!t)
        return cfg_error(err, doc, n, path, "missing required key 'text'");
    if ((rc = cfg_get_string(err, doc, t, &tp, &s)))
        return rc;
    size_t len = strlen(s);
    if (!len || len % 2)
        return cfg_error(err, doc, t, &tp, "expected an even number of hex digits, got %zu", len);
    out->bytes = malloc(len / 2);
    if (!out->bytes)
        return cfg_error(err, doc, t, &tp, "out of memory"), -ENOMEM;
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexdigit_value((unsigned char)s[i]), lo = hexdigit_value((unsigned char)s[i + 1]);
        if (hi < 0 || lo < 0)
            return cfg_error(err, doc, t, &tp, "'%c%c' is not a hex byte", s[i], s[i + 1]);
        out->bytes[out->len++] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int parse_tcp(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *n,
                     const struct cfg_path *path, struct cfg_health_check *out)
{
    static const char *const keys[] = {"send", "receive", "proxy_protocol_config", NULL};
    int rc = cfg_check_keys(err, doc, n, path, keys);
    if (rc)
        return rc;
    const struct cfg_node *v;
    struct cfg_path kp;
    if ((v = cfg_map_get(n, "proxy_protocol_config"))) {
        kp = CFG_PATH_KEY(path, "proxy_protocol_config");
        return cfg_error(err, doc, v, &kp, "PROXY protocol health checks are not supported");
    }
    if ((v = cfg_map_get(n, "send"))) {
        kp = CFG_PATH_KEY(path, "send");
        if ((rc = cfg_expect_map(err, doc, v, &kp)) ||
            (rc = parse_payload(err, doc, v, &kp, &out->send)))
            return rc;
    }
    if ((v = cfg_map_get(n, "receive"))) {
        kp = CFG_PATH_KEY(path, "receive");
        if ((rc = cfg_expect_seq(err, doc, v, &kp)))
            return rc;
        if (v->n) {
            out->receive = calloc(v->n, sizeof(*out->receive));
            if (!out->receive)
                return cfg_error(err, doc, v, &kp, "out of memory"), -ENOMEM;
        }
        for (size_t i = 0; i < v->n; i++) {
            struct cfg_path ip = CFG_PATH_INDEX(&kp, i);
            out->nreceive = i + 1;
            if ((rc = cfg_expect_map(err, doc, v->items[i], &ip)) ||
                (rc = parse_payload(err, doc, v->items[i], &ip, &out->receive[i])))
                return rc;
        }
    }
    return 0;
}

static int req_u32(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *map,
                   const struct cfg_path *path, const char *key, uint32_t *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    uint64_t v;
    if (!n)
        return cfg_error(err, doc, map, path, "missing required key '%s'", key);
    int rc = cfg_get_u64(err, doc, n, &kp, 1, UINT32_MAX, &v);
    if (!rc)
        *out = (uint32_t)v;
    return rc;
}

static int duration(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *map,
                    const struct cfg_path *path, const char *key, bool required, uint64_t *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    struct cfg_path kp = CFG_PATH_KEY(path, key);
    if (!n)
        return required ? cfg_error(err, doc, map, path, "missing required key '%s'", key) : 0;
    int rc = cfg_get_duration_ms(err, doc, n, &kp, out);
    if (!rc && !*out)
        return cfg_error(err, doc, n, &kp, "expected a duration greater than 0");
    return rc;
}

int cfg_parse_health_checks(struct cfg_err *err, const struct cfg_doc *doc,
                            const struct cfg_node *node, const struct cfg_path *path,
                            struct cfg_health_check *out)
{
    static const char *const keys[] = {
        "timeout", "interval", "unhealthy_threshold", "healthy_threshold", "tcp_health_check",
        "http_health_check", "grpc_health_check", "custom_health_check", "no_traffic_interval",
        /* accepted and ignored (see the top of the file) */
        "interval_jitter", "interval_jitter_percent", "initial_jitter", "unhealthy_interval",
        "unhealthy_edge_interval", "healthy_edge_interval", "no_traffic_healthy_interval",
        "event_log_path", "event_logger", "always_log_health_check_failures",
        "always_log_health_check_success", "reuse_connection", "alt_port", NULL};
    static const char *const refused[] = {"http_health_check", "grpc_health_check",
                                          "custom_health_check", "alt_port", NULL};
    memset(out, 0, sizeof(*out));
    int rc = cfg_expect_seq(err, doc, node, path);
    if (rc || !node->n)
        return rc;
    if (node->n > 1) {
        struct cfg_path ip = CFG_PATH_INDEX(path, 1);
        return cfg_error(err, doc, node->items[1], &ip,
                         "one health check per cluster is supported");
    }
    const struct cfg_node *hc = node->items[0], *n;
    struct cfg_path hp = CFG_PATH_INDEX(path, 0), kp;
    if ((rc = cfg_check_keys(err, doc, hc, &hp, keys)))
        return rc;
    for (const char *const *k = refused; *k; k++)
        if ((n = cfg_map_get(hc, *k))) {
            kp = CFG_PATH_KEY(&hp, *k);
            return cfg_error(err, doc, n, &kp,
                             "only tcp_health_check is supported (socktap is an L4 proxy)");
        }
    out->no_traffic_interval_ms = HC_DEFAULT_NO_TRAFFIC_MS;
    if ((rc = duration(err, doc, hc, &hp, "timeout", true, &out->timeout_ms)) ||
        (rc = duration(err, doc, hc, &hp, "interval", true, &out->interval_ms)) ||
        (rc = duration(err, doc, hc, &hp, "no_traffic_interval", false,
                       &out->no_traffic_interval_ms)) ||
        (rc = req_u32(err, doc, hc, &hp, "unhealthy_threshold", &out->unhealthy_threshold)) ||
        (rc = req_u32(err, doc, hc, &hp, "healthy_threshold", &out->healthy_threshold)))
        return rc;
    if (!(n = cfg_map_get(hc, "tcp_health_check")))
        return cfg_error(err, doc, hc, &hp, "missing required key 'tcp_health_check'");
    kp = CFG_PATH_KEY(&hp, "tcp_health_check");
    if (!cfg_node_is_null(n) && (rc = parse_tcp(err, doc, n, &kp, out)))
        return rc;
    out->enabled = true;
    return 0;
}

void cfg_health_check_free(struct cfg_health_check *hc)
{
    free(hc->send.bytes);
    for (size_t i = 0; i < hc->nreceive; i++)
        free(hc->receive[i].bytes);
    free(hc->receive);
    memset(hc, 0, sizeof(*hc));
}

/* GET /captures and POST /capture/{listener|cluster}/NAME (see admin_capture.h).
 *
 * The JSON is written by the capture kind itself (ts_registry_write_captures), so the admin
 * links no capture code; the switch goes through the transport registry for the same reason.
 * Rejected: a `GET ...?enabled=` form (a crawler or a browser prefetch must not turn capture
 * off; Envoy's mutating admin endpoints are POST too). */
#include "admin/admin_capture.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "transport/ts_registry.h"

int admin_capture_write(FILE *out, void *arg)
{
    (void)arg;
    int rc = ts_registry_write_captures(out, ADMIN_CAPTURES_MAX_FINISHED);
    if (rc == -ENOENT) { /* built without capture */
        fputs("{\"prefixes\": []}\n", out);
        rc = 0;
    }
    return rc;
}

/* The transport socket config of the listener or cluster NAME (KIND "listener"/"cluster"). */
static const struct ts_config *find_ts(const struct socktap_config *cfg, const char *kind,
                                       const char *name)
{
    if (!strcmp(kind, "listener")) {
        for (size_t i = 0; i < cfg->nlisteners; i++)
            if (!strcmp(cfg->listeners[i].name, name) ||
                !strcmp(cfg->listeners[i].addr.stat_name, name))
                return cfg_listener_ts(&cfg->listeners[i], false);
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, name))
            return &cfg->clusters[i].ts;
    return NULL;
}

/* POST /capture/KIND/NAME?enabled=0|1 (NAME decoded). */
static int switch_capture(const struct socktap_config *cfg, bool is_post, const char *kind,
                          const char *name, const char *query, char *msg, size_t n)
{
    struct evkeyvalq q = {0};
    const char *v = NULL;
    int code;
    if (!is_post) {
        snprintf(msg, n, "use POST /capture/%s/NAME?enabled=0|1\n", kind);
        return 405;
    }
    if (query && evhttp_parse_query_str(query, &q) == 0)
        v = evhttp_find_header(&q, "enabled");
    const struct ts_config *ts = find_ts(cfg, kind, name);
    if (!v || (strcmp(v, "0") && strcmp(v, "1"))) {
        code = 400;
        snprintf(msg, n, "expected enabled=0 or enabled=1\n");
    } else if (!ts) {
        code = 404;
        snprintf(msg, n, "no %s named '%s'\n", kind, name);
    } else if (ts_config_set_capture(ts, v[0] == '1')) {
        code = 404;
        snprintf(msg, n, "%s '%s' has no capture or tap transport socket\n", kind, name);
    } else {
        code = 200;
        snprintf(msg, n, "%s %s: capture %s for new connections\n", kind, name,
                 v[0] == '1' ? "enabled" : "disabled");
    }
    evhttp_clear_headers(&q);
    return code;
}

int admin_capture_switch(const struct socktap_config *cfg, bool is_post, const char *path,
                         const char *query, char *msg, size_t msg_size)
{
    static const char *const kinds[] = {"listener", "cluster"};
    if (!path || strncmp(path, "/capture/", 9))
        return 0;
    for (size_t i = 0; i < 2; i++) {
        size_t klen = strlen(kinds[i]);
        const char *rest = path + 9;
        if (strncmp(rest, kinds[i], klen) || rest[klen] != '/' || !rest[klen + 1])
            continue;
        char *name = evhttp_uridecode(rest + klen + 1, 0, NULL);
        if (!name) {
            snprintf(msg, msg_size, "out of memory\n");
            return 500;
        }
        int code = switch_capture(cfg, is_post, kinds[i], name, query, msg, msg_size);
        free(name);
        return code;
    }
    return 0;
}

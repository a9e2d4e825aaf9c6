/* GET /captures and POST /capture/{listener|cluster}/NAME (see admin_capture.h).
 *
 * The JSON is written by the capture kind itself (ts_registry_write_captures), so the admin
 * links no capture code and a build without capture answers 404. The switch goes through the
 * transport registry for the same reason. Rejected: a `GET ...?enabled=` form (a crawler or a
 * browser prefetch must not turn capture off; Envoy's mutating admin endpoints are POST too). */
#include "admin/admin_capture.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

#include "transport/ts_registry.h"

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply(struct evhttp_request *req, int code, const char *reason, const char *ctype,
                  const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void captures_cb(struct evhttp_request *req, void *arg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    int rc = ts_registry_write_captures(f, ADMIN_CAPTURES_MAX_FINISHED);
    if (fclose(f) != 0 && !rc)
        rc = -EIO;
    if (rc == -ENOENT)
        reply(req, 404, "Not Found", "text/plain",
              "this socktap was built without capture (-DSOCKTAP_CAPTURE=OFF)\n");
    else if (rc)
        evhttp_send_error(req, 500, NULL);
    else
        reply(req, 200, "OK", "application/json", "%.*s", (int)len, text);
    free(text);
}

void admin_capture_register(struct evhttp *http)
{
    evhttp_set_cb(http, "/captures", captures_cb, NULL);
}

/* The transport socket config of the listener or cluster NAME (KIND "listener"/"cluster"). */
static const struct ts_config *find_ts(const struct socktap_config *cfg, const char *kind,
                                       const char *name)
{
    if (!strcmp(kind, "listener")) {
        for (size_t i = 0; i < cfg->nlisteners; i++)
            if (!strcmp(cfg->listeners[i].name, name) ||
                !strcmp(cfg->listeners[i].addr.stat_name, name))
                return &cfg->listeners[i].ts;
        return NULL;
    }
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, name))
            return &cfg->clusters[i].ts;
    return NULL;
}

/* Answers POST /capture/KIND/NAME?enabled=0|1. */
static void switch_capture(struct evhttp_request *req, const struct socktap_config *cfg,
                           const char *kind, const char *name)
{
    struct evkeyvalq q = {0};
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply(req, 405, "Method Not Allowed", "text/plain",
              "use POST /capture/%s/NAME?enabled=0|1\n", kind);
        return;
    }
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    const char *v = NULL;
    if (query && evhttp_parse_query_str(query, &q) == 0)
        v = evhttp_find_header(&q, "enabled");
    if (!v || (strcmp(v, "0") && strcmp(v, "1"))) {
        reply(req, 400, "Bad Request", "text/plain", "expected enabled=0 or enabled=1\n");
        goto out;
    }
    const struct ts_config *ts = find_ts(cfg, kind, name);
    if (!ts) {
        reply(req, 404, "Not Found", "text/plain", "no %s named '%s'\n", kind, name);
        goto out;
    }
    bool on = v[0] == '1';
    if (ts_config_set_capture(ts, on)) {
        reply(req, 404, "Not Found", "text/plain",
              "%s '%s' has no capture or tap transport socket\n", kind, name);
        goto out;
    }
    reply(req, 200, "OK", "text/plain", "%s %s: capture %s for new connections\n", kind, name,
          on ? "enabled" : "disabled");
out:
    evhttp_clear_headers(&q);
}

bool admin_capture_route(struct evhttp_request *req, const struct socktap_config *cfg)
{
    static const char *const kinds[] = {"listener", "cluster"};
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || strncmp(path, "/capture/", 9))
        return false;
    for (size_t i = 0; i < 2; i++) {
        size_t klen = strlen(kinds[i]);
        const char *rest = path + 9;
        if (strncmp(rest, kinds[i], klen) || rest[klen] != '/' || !rest[klen + 1])
            continue;
        char *name = evhttp_uridecode(rest + klen + 1, 0, NULL);
        if (!name) {
            evhttp_send_error(req, 500, NULL);
            return true;
        }
        switch_capture(req, cfg, kinds[i], name);
        free(name);
        return true;
    }
    return false;
}

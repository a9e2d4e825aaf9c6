/* Envoy-compatible admin subset, plus socktap's /capture/live (admin_live.h). /stats in Envoy's
 * text, JSON and Prometheus forms (admin_stats.h), summed over workers at read time. evhttp's
 * listener has no accept-error handling of its own: on EMFILE a pending admin connection keeps the
 * listen socket readable and the main thread would spin, so accept errors pause the admin listener
 * for a moment, as the proxy listeners do. */
#include "admin/admin.h"

#include "admin/admin_capture.h"
#include "admin/admin_live.h"
#include "admin/admin_reply.h"
#include "admin/admin_stats.h"
#include "admin/admin_tap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "core/access_format.h"
#include "core/access_log.h"
#include "core/log.h"
#include "core/sockaddr_text.h"
#include "core/stats.h"

#define ADMIN_ACCEPT_BACKOFF_MS 100
/* evhttp has no header limit by default: 124 MiB of request headers grew RSS by 113 MB, never
 * returned. Envoy's admin is an HCM with max_request_headers_kb 60 (its default, in
 * api/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto);
 * we take the same. Only GET, HEAD, bodiless POSTs (the capture switch, /reload) and POST /tap
 * (a TapRequest: a few hundred bytes of JSON/YAML) are served: 16 KiB is room for any tap
 * request. A request must arrive within the timeout (a slow client holds one connection's
 * buffers, not the admin). */
#define ADMIN_MAX_HEADERS_BYTES (60 * 1024)
#define ADMIN_MAX_BODY_BYTES    (16 * 1024)
#define ADMIN_TIMEOUT_S         30

/* An endpoint's handler behind admin_route_cb, which logs its request (admin.access_log). */
struct admin_route {
    struct admin *a;
    void (*fn)(struct evhttp_request *req, void *arg);
};

#define ADMIN_ROUTES 9

struct admin {
    struct evhttp *http;
    struct admin_route routes[ADMIN_ROUTES];
    /* the request whose handler runs (handlers reply before they return): its start, for
     * %DURATION% and %START_TIME% when its reply completes */
    const struct evhttp_request *cur_req;
    struct timeval cur_start_wall;
    struct timespec cur_start_mono;
    struct evconnlistener *listener; /* evhttp's, not ours to free */
    struct event *accept_retry;
    struct admin_live *live;
    struct admin_tap *tap;
    const struct socktap_config *cfg;
    struct admin_info info;
    struct timespec started; /* CLOCK_MONOTONIC */
    bool draining;
};

static void admin_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    evconnlistener_enable(a->listener);
}

/* The error callback gets evhttp's argument, not ours: the one admin of the process is found
 * here (set by admin_start, cleared by admin_free; main thread only). */
static struct admin *g_admin;

static void admin_accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct admin *a = g_admin;
    if (!a)
        return;
    static time_t last_log;
    time_t now = time(NULL);
    if (now != last_log) {
        last_log = now;
        LOGW(LOG_NO_CONN, "admin: accept failed: %s; pausing admin accepts for %d ms",
             strerror(EVUTIL_SOCKET_ERROR()), ADMIN_ACCEPT_BACKOFF_MS);
    }
    evconnlistener_disable(lev);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ADMIN_ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(a->accept_retry, &tv);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body)
{
    admin_reply_textf(req, code, reason, "%s", body);
}

static void ready_cb(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    if (a->draining)
        reply_text(req, 503, "Service Unavailable", "DRAINING\n");
    else
        reply_text(req, 200, "OK", "LIVE\n");
}

/* Sends the text written by WRITE(f, arg) as a 200 reply of CONTENT_TYPE. */
static void reply_written(struct evhttp_request *req, const char *content_type,
                          int (*write)(FILE *f, void *arg), void *arg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    int rc = write(f, arg);
    struct evbuffer *b = fclose(f) == 0 && rc == 0 ? evbuffer_new() : NULL;
    if (b) {
        evbuffer_add(b, text, len);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
    } else {
        evhttp_send_error(req, 500, NULL);
    }
    free(text);
}

static int write_stats(FILE *f, void *arg)
{
    struct stat_sample *s;
    size_t n;
    int rc = stats_snapshot(&s, &n);
    if (rc)
        return rc;
    rc = admin_stats_write(f, s, n, arg);
    free(s);
    return rc;
}

static void stats_reply(struct evhttp_request *req, enum admin_stats_format format)
{
    struct admin_stats_query q;
    char why[300];
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (admin_stats_query_parse(query, format, &q, why, sizeof(why))) {
        strcat(why, "\n");
        reply_text(req, 400, "Bad Request", why);
        return;
    }
    /* Prometheus text exposition 0.0.4 (what Envoy's /stats/prometheus says it serves) */
    reply_written(req,
                  q.format == ADMIN_STATS_JSON         ? "application/json"
                  : q.format == ADMIN_STATS_PROMETHEUS ? "text/plain; version=0.0.4"
                                                       : "text/plain",
                  write_stats, &q);
    admin_stats_query_fini(&q);
}

static void stats_cb(struct evhttp_request *req, void *arg)
{
    stats_reply(req, ADMIN_STATS_TEXT);
}

static void prometheus_cb(struct evhttp_request *req, void *arg)
{
    stats_reply(req, ADMIN_STATS_PROMETHEUS);
}

/* Envoy's /server_info shape (envoy.admin.v3.ServerInfo: version, state, uptimes,
 * command_line_options), with what socktap has. */
static int write_server_info(FILE *f, void *arg)
{
    const struct admin *a = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long up = (long long)(now.tv_sec - a->started.tv_sec);
    fputs("{\n \"version\": ", f);
    admin_stats_json_string(f, "socktap/" SOCKTAP_VERSION);
    fprintf(f, ",\n \"state\": \"%s\",\n", a->draining ? "DRAINING" : "LIVE");
    fprintf(f, " \"uptime_current_epoch\": \"%llds\",\n \"uptime_all_epochs\": \"%llds\",\n", up,
            up);
    fprintf(f, " \"command_line_options\": {\n  \"concurrency\": %d,\n  \"config_path\": ",
            a->info.concurrency);
    admin_stats_json_string(f, a->info.config_path ? a->info.config_path : "");
    fputs(",\n  \"log_path\": ", f);
    admin_stats_json_string(f, a->info.log_path ? a->info.log_path : "");
    fputs(",\n  \"mode\": \"Serve\"\n }", f);
    const struct admin_reload_status *r = a->info.reload_status;
    if (r) {
        /* socktap extension: the config generation and the last reload */
        char when[40] = "";
        struct tm tm;
        if (r->last && gmtime_r(&r->last, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(f,
                ",\n \"socktap_config\": {\n  \"generation\": %llu,\n  \"reloads\": %llu,\n"
                "  \"reloads_failed\": %llu,\n  \"last_reload_time\": ",
                (unsigned long long)r->generation, (unsigned long long)r->ok,
                (unsigned long long)r->failed);
        admin_stats_json_string(f, when);
        fprintf(f, ",\n  \"last_reload_result\": \"%s\",\n  \"last_reload_message\": ",
                !r->last     ? ""
                : r->last_ok ? "ok"
                             : "failed");
        admin_stats_json_string(f, r->last_result);
        fputs("\n }", f);
    }
    fputs("\n}\n", f);
    return 0;
}

static void server_info_cb(struct evhttp_request *req, void *arg)
{
    reply_written(req, "application/json", write_server_info, arg);
}

static int64_t stat_value(const char *fmt, const char *name)
{
    char full[512];
    stat_id id;
    snprintf(full, sizeof(full), fmt, name);
    return stats_find(full, &id) ? stats_get(id) : 0;
}

/* Envoy's /clusters text form (source/server/admin/clusters_handler.cc): NAME::key::value for the
 * cluster, NAME::HOST::key::value per host; health_flags from the health checker (healthy, or
 * /failed_active_hc); its counters are the cluster's (per-host counts are not kept). */
static int write_clusters(FILE *f, void *arg)
{
    const struct admin *a = arg;
    for (size_t i = 0; i < a->cfg->nclusters; i++) {
        const struct cfg_cluster *c = &a->cfg->clusters[i];
        fprintf(f, "%s::observability_name::%s\n", c->name, c->name);
        if (c->max_connections)
            fprintf(f, "%s::default_priority::max_connections::%u\n", c->name, c->max_connections);
        fprintf(f, "%s::added_via_api::false\n", c->name);
        fprintf(f, "%s::upstream_cx_active::%lld\n", c->name,
                (long long)stat_value("cluster.%s.upstream_cx_active", c->name));
        fprintf(f, "%s::upstream_cx_total::%lld\n", c->name,
                (long long)stat_value("cluster.%s.upstream_cx_total", c->name));
        for (size_t h = 0; h < c->nhosts; h++) {
            const char *host = c->hosts[h].text;
            fprintf(f, "%s::%s::health_flags::%s\n", c->name, host,
                    a->info.host_health ? a->info.host_health(a->info.host_health_arg, i, h)
                                        : "healthy");
            fprintf(f, "%s::%s::weight::1\n", c->name, host);
            fprintf(f, "%s::%s::priority::0\n", c->name, host);
        }
    }
    return 0;
}

static void clusters_cb(struct evhttp_request *req, void *arg)
{
    reply_written(req, "text/plain", write_clusters, arg);
}

/* POST /reload (socktap extension; Envoy reloads through xDS, not its admin): re-reads the
 * config file as SIGHUP does. The reply says what changed, or the config error with its
 * file:line:col; a reload that fails leaves the running config in force. */
static void reload_cb(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_text(req, 405, "Method Not Allowed", "use POST /reload\n");
        return;
    }
    if (!a->info.reload) {
        reply_text(req, 501, "Not Implemented", "reload is not available\n");
        return;
    }
    char msg[1024];
    msg[0] = '\0';
    int rc = a->info.reload(a->info.reload_arg, msg, sizeof(msg) - 1);
    strcat(msg, "\n");
    if (rc == 0)
        reply_text(req, 200, "OK", msg);
    else if (rc == -EBUSY || rc == -ESHUTDOWN)
        reply_text(req, 503, "Service Unavailable", msg);
    else
        reply_text(req, 400, "Bad Request", msg);
}

static const char help_text[] =
    "admin commands are:\n"
    "  /capture/live: the capture sockets a live viewer can follow (socktap extension)\n"
    "  /capture/cluster/NAME: POST enabled=0|1: capture of that cluster's new connections on or "
    "off (socktap extension)\n"
    "  /capture/listener/NAME: POST enabled=0|1: likewise for a listener (socktap extension)\n"
    "  /capture/live.pcapng: live pcapng of one capture socket; listener=NAME or cluster=NAME, "
    "wire=1, max_bytes=N (socktap extension)\n"
    "  /captures: the traces on disk per path_prefix, open and finished, with budget state "
    "(socktap extension)\n"
    "  /clusters: upstream cluster status\n"
    "  /help: print out list of admin commands\n"
    "  /ready: print server state, return 200 if LIVE, otherwise return 503\n"
    "  /reload (POST): re-read the config file, as SIGHUP does (socktap extension)\n"
    "  /server_info: print server version/status information\n"
    "  /stats: print server stats; format=text|json|prometheus, filter=REGEX, type=All|Counters|"
    "Gauges, usedonly\n"
    "  /stats/prometheus: print server stats in prometheus format; filter=REGEX, usedonly\n"
    "  /tap: POST a TapRequest (config_id, tap_config): stream the traces of that admin_config "
    "tap\n";

static void help_cb(struct evhttp_request *req, void *arg)
{
    reply_text(req, 200, "OK", help_text);
}

static void captures_cb(struct evhttp_request *req, void *arg)
{
    reply_written(req, "application/json", admin_capture_write, NULL);
}

static const char *reason_of(int code)
{
    switch (code) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    default:
        return "Internal Server Error";
    }
}

static void generic_cb(struct evhttp_request *req, void *arg)
{
    const struct admin *a = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    char msg[512];
    int code =
        admin_capture_switch(a->cfg, evhttp_request_get_command(req) == EVHTTP_REQ_POST,
                             evhttp_uri_get_path(uri), evhttp_uri_get_query(uri), msg, sizeof(msg));
    if (code) {
        if (code == 405)
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        reply_text(req, code, reason_of(code), msg);
        return;
    }
    reply_text(req, 404, "Not Found", "unknown admin path; /help lists them\n");
}

static bool is_loopback(const struct cfg_address *addr)
{
    if (addr->ss.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&addr->ss;
        return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&addr->ss;
    return IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr);
}

/* A reply went out: one line per admin.access_log, handed to the access log writer. */
static void admin_request_done_cb(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const struct cfg_admin *ac = &a->cfg->admin;
    struct al_info info = {0};
    struct timespec now;
    char line[AL_LINE_MAX];
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (req == a->cur_req) {
        info.start = a->cur_start_wall;
        info.duration_ms = (uint64_t)(now.tv_sec - a->cur_start_mono.tv_sec) * 1000 +
                           (uint64_t)((now.tv_nsec - a->cur_start_mono.tv_nsec) / 1000000);
    } else {
        gettimeofday(&info.start, NULL);
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    const struct sockaddr *peer = conn ? evhttp_connection_get_addr(conn) : NULL;
    if (peer) {
        socklen_t len =
            peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
        memcpy(&info.down_remote, peer, len);
        info.down_remote_len = len;
    }
    memcpy(&info.down_local, &ac->addr.ss, ac->addr.len);
    info.down_local_len = ac->addr.len;
    static const struct {
        enum evhttp_cmd_type cmd;
        const char *name;
    } methods[] = {{EVHTTP_REQ_GET, "GET"}, {EVHTTP_REQ_HEAD, "HEAD"}, {EVHTTP_REQ_POST, "POST"}};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (evhttp_request_get_command(req) == methods[i].cmd)
            info.method = methods[i].name;
    info.path = evhttp_request_get_uri(req);
    info.response_code = evhttp_request_get_response_code(req);
    for (size_t i = 0; i < ac->naccess_logs; i++) {
        size_t len = al_format_render(ac->access_logs[i].fmt, &info, line, sizeof(line));
        access_log_write(ac->access_logs[i].path, line, len);
    }
}

/* Every admin endpoint but the live streams (admin_live.c) runs through here: its request is
 * logged when its reply completes (libevent's on_complete callback: the status is known). */
static void admin_route_cb(struct evhttp_request *req, void *arg)
{
    struct admin_route *r = arg;
    struct admin *a = r->a;
    if (a->cfg->admin.naccess_logs) {
        a->cur_req = req;
        gettimeofday(&a->cur_start_wall, NULL);
        clock_gettime(CLOCK_MONOTONIC, &a->cur_start_mono);
        evhttp_request_set_on_complete_cb(req, admin_request_done_cb, a);
    }
    r->fn(req, a);
    a->cur_req = NULL;
}

int admin_start(struct admin **out, struct event_base *base, const struct socktap_config *cfg,
                const struct admin_info *info)
{
    const struct cfg_address *addr = &cfg->admin.addr;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->cfg = cfg;
    a->info = *info;
    clock_gettime(CLOCK_MONOTONIC, &a->started);
    a->http = evhttp_new(base);
    if (!a->http)
        goto err_free_admin;
    /* POST for the capture switch (admin_capture.h) and /reload; the other endpoints read */
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS_BYTES);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY_BYTES);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    static const struct {
        const char *path;
        void (*fn)(struct evhttp_request *req, void *arg);
    } routes[ADMIN_ROUTES] = {
        {"/ready", ready_cb},
        {"/stats", stats_cb},
        {"/stats/prometheus", prometheus_cb},
        {"/server_info", server_info_cb},
        {"/clusters", clusters_cb},
        {"/help", help_cb},
        {"/captures", captures_cb},
        {"/reload", reload_cb},
        {NULL, generic_cb},
    };
    for (size_t i = 0; i < ADMIN_ROUTES; i++) {
        a->routes[i] = (struct admin_route){.a = a, .fn = routes[i].fn};
        if (routes[i].path)
            evhttp_set_cb(a->http, routes[i].path, admin_route_cb, &a->routes[i]);
        else
            evhttp_set_gencb(a->http, admin_route_cb, &a->routes[i]);
    }
    if (admin_live_new(a->http, base, cfg, &a->live) || admin_tap_new(a->http, base, cfg, &a->tap))
        goto err_free_http;
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    (void)sockaddr_ip_port((const struct sockaddr *)&addr->ss, addr->len, host, sizeof(host),
                           &port);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(a->http, host, port);
    if (!bound) {
        LOGE(LOG_NO_CONN, "admin: cannot listen on %s: %s", addr->text, strerror(errno));
        goto err_free_http;
    }
    a->listener = evhttp_bound_socket_get_listener(bound);
    a->accept_retry = evtimer_new(base, admin_accept_retry_cb, a);
    if (!a->accept_retry)
        goto err_free_http;
    g_admin = a;
    evconnlistener_set_error_cb(a->listener, admin_accept_error_cb);
    if (!is_loopback(addr))
        LOGW(LOG_NO_CONN,
             "admin listens on %s, which is NOT loopback: anyone who can reach it reads "
             "every stat; bind it to 127.0.0.1 unless you mean it",
             addr->text);
    LOGI(LOG_NO_CONN, "admin listening on %s", addr->text);
    *out = a;
    return 0;

err_free_http:
    admin_tap_free(a->tap);
    admin_live_free(a->live);
    evhttp_free(a->http);
err_free_admin:
    free(a);
    return -EADDRNOTAVAIL;
}

void admin_set_config(struct admin *a, const struct socktap_config *cfg)
{
    if (!a)
        return;
    a->cfg = cfg;
    admin_live_set_config(a->live, cfg);
    admin_tap_set_config(a->tap, cfg);
}

void admin_set_draining(struct admin *a)
{
    if (a)
        a->draining = true;
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    if (g_admin == a)
        g_admin = NULL;
    if (a->accept_retry)
        event_free(a->accept_retry);
    admin_tap_free(a->tap);   /* ends the /tap response while its connection still exists */
    admin_live_free(a->live); /* ends the live streams while their connections still exist */
    evhttp_free(a->http);
    free(a);
}

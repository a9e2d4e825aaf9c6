/* Envoy-compatible admin subset, plus socktap's /capture/live (admin_live.h). /stats is Envoy's
 * text form ("name: value" lines, sorted), summed over workers at read time (text only: a query
 * such as ?format=json is ignored). evhttp's listener has no accept-error handling of its own: on
 * EMFILE a pending admin connection keeps the listen socket readable and the main thread would
 * spin, so accept errors pause the admin listener for a moment, as the proxy listeners do. */
#include "admin/admin.h"

#include "admin/admin_live.h"

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

#include "core/log.h"
#include "core/sockaddr_text.h"
#include "core/stats.h"

#define ADMIN_ACCEPT_BACKOFF_MS 100
/* evhttp has no header limit by default: 124 MiB of request headers grew RSS by 113 MB, never
 * returned. Envoy's admin is an HCM with max_request_headers_kb 60 (its default, in
 * api/envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto);
 * we take the same. Only GET and HEAD are served, so a body is never needed: 4 KiB is room for a
 * client that sends a stray one. A request must arrive within the timeout (a slow client holds
 * one connection's buffers, not the admin). */
#define ADMIN_MAX_HEADERS_BYTES (60 * 1024)
#define ADMIN_MAX_BODY_BYTES    4096
#define ADMIN_TIMEOUT_S         30

struct admin {
    struct evhttp *http;
    struct evconnlistener *listener; /* evhttp's, not ours to free */
    struct event *accept_retry;
    struct admin_live *live;
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
        LOGW(0, "admin: accept failed: %s; pausing admin accepts for %d ms",
             strerror(EVUTIL_SOCKET_ERROR()), ADMIN_ACCEPT_BACKOFF_MS);
    }
    evconnlistener_disable(lev);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ADMIN_ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(a->accept_retry, &tv);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *body)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

static void ready_cb(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    if (a->draining)
        reply_text(req, 503, "Service Unavailable", "DRAINING\n");
    else
        reply_text(req, 200, "OK", "LIVE\n");
}

static void stats_cb(struct evhttp_request *req, void *arg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    stats_dump(f);
    fclose(f);
    struct evbuffer *b = evbuffer_new();
    if (b) {
        evbuffer_add(b, text, len);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
    } else {
        evhttp_send_error(req, 500, NULL);
    }
    free(text);
}

static void generic_cb(struct evhttp_request *req, void *arg)
{
    reply_text(req, 404, "Not Found", "unknown admin path; try /ready, /stats or /capture/live\n");
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

int admin_start(struct admin **out, struct event_base *base, const struct socktap_config *cfg)
{
    const struct cfg_address *addr = &cfg->admin.addr;
    struct admin *a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->http = evhttp_new(base);
    if (!a->http)
        goto err_free_admin;
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_max_headers_size(a->http, ADMIN_MAX_HEADERS_BYTES);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY_BYTES);
    evhttp_set_timeout(a->http, ADMIN_TIMEOUT_S);
    evhttp_set_cb(a->http, "/ready", ready_cb, a);
    evhttp_set_cb(a->http, "/stats", stats_cb, a);
    evhttp_set_gencb(a->http, generic_cb, a);
    if (admin_live_new(a->http, base, cfg, &a->live))
        goto err_free_http;
    char host[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    (void)sockaddr_ip_port((const struct sockaddr *)&addr->ss, addr->len, host, sizeof(host),
                           &port);
    struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(a->http, host, port);
    if (!bound) {
        LOGE(0, "admin: cannot listen on %s: %s", addr->text, strerror(errno));
        goto err_free_http;
    }
    a->listener = evhttp_bound_socket_get_listener(bound);
    a->accept_retry = evtimer_new(base, admin_accept_retry_cb, a);
    if (!a->accept_retry)
        goto err_free_http;
    g_admin = a;
    evconnlistener_set_error_cb(a->listener, admin_accept_error_cb);
    if (!is_loopback(addr))
        LOGW(0,
             "admin listens on %s, which is NOT loopback: anyone who can reach it reads "
             "every stat; bind it to 127.0.0.1 unless you mean it",
             addr->text);
    LOGI(0, "admin listening on %s", addr->text);
    *out = a;
    return 0;

err_free_http:
    admin_live_free(a->live);
    evhttp_free(a->http);
err_free_admin:
    free(a);
    return -EADDRNOTAVAIL;
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
    admin_live_free(a->live); /* ends the live streams while their connections still exist */
    evhttp_free(a->http);
    free(a);
}

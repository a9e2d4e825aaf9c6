/* admin_tap.c: see admin_tap.h.
 *
 * The workers do for an admin tap what they do for a live viewer: publish each event of a
 * tapped connection to the tap's hub (capture_rec.c, no file at all), where the client's
 * bounded queue keeps it or turns it into a gap record. The traces are built here, on the
 * admin thread, by the same encoders the files use (trace_encode.h: Envoy's JSON with
 * primitive fields and 1-space pretty printing, which is also what Envoy's streamMsg writes),
 * one encoder per followed connection (a buffered one holds at most max_buffered_rx/tx bytes,
 * and at most TAP_MAX_CONNS are followed). Rejected: encoding on the workers and queueing
 * the encoded traces (a second set of per-connection encoders there, and a tap request
 * would have to reach every worker's connections); a client per config_id (Envoy allows one
 * attached /tap stream in all: "An attached /tap admin stream already exists").
 *
 * As admin_live.c, a client whose socket still has TAP_MAX_OUTPUT unsent is not drained: its
 * queue fills and drops, the traffic does not notice. Only connections that start after the
 * POST are traced (ids from conn_id_peek() at the POST on: a connection is traced whole or not
 * at all, as Envoy creates a tapper at socket creation only). */
#include "admin/admin_tap.h"
#include "admin/admin_reply.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/conn_id.h"
#include "core/log.h"
#include "core/stats.h"
#include "trace/trace_encode.h"
#include "transport/live_hub.h"
#ifdef SOCKTAP_CAPTURE
#include "transport/capture.h"
#endif

#define TAP_QUEUE_BYTES (8u << 20) /* per hub: the events waiting for the admin thread */
#define TAP_MAX_OUTPUT  (1u << 20) /* unsent bytes in the client's socket buffer */
#define TAP_RETRY_MS    10
#define TAP_MAX_CONNS   65536 /* connections one client follows at once */
#define TAP_BUCKETS     1024

#ifdef SOCKTAP_CAPTURE
struct tap_conn {
    struct tap_conn *next;
    uint64_t id;
    struct trace_enc *enc;
};

struct tap_hub {
    struct tap_client *owner;
    struct live_sub *sub;
    struct event *ev;
};

struct tap_client {
    struct admin_tap *owner;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    char config_id[256];
    struct tap_admin_request rq;
    struct tap_hub *hubs;
    size_t nhubs;
    struct event *retry;   /* output was full: look again */
    struct event *timeout; /* buffered_admin timeout */
    struct evbuffer *out;  /* streaming: this batch; buffered_admin: every trace so far */
    struct tbuf tb;
    uint64_t first_id; /* connections from this id on are traced */
    uint64_t traces;
    struct tap_conn *buckets[TAP_BUCKETS];
    size_t nconns;
    bool lossy;    /* its loss was logged */
    bool attached; /* its response started (else a refused request: nothing to log) */
};
#endif

struct admin_tap {
    struct event_base *base;
    const struct socktap_config *cfg;
    struct tap_client *client; /* the one attached request, or NULL */
};

static stat_id st_clients, st_traces, st_events_dropped, st_bytes_dropped;

void admin_tap_register_stats(void)
{
    st_clients = stats_register("admin.tap.clients", STAT_GAUGE);
    st_traces = stats_register("admin.tap.traces", STAT_COUNTER);
    st_events_dropped = stats_register("admin.tap.events_dropped", STAT_COUNTER);
    st_bytes_dropped = stats_register("admin.tap.bytes_dropped", STAT_COUNTER);
}

#ifdef SOCKTAP_CAPTURE
/* Adds what C's queues dropped since the last look to admin.tap.*_dropped; logs C's first
 * loss (once per client: a state change, not per event). */
static void tap_sync_stats(struct tap_client *c)
{
    for (size_t i = 0; i < c->nhubs; i++) {
        struct tap_hub *h = &c->hubs[i];
        uint64_t ev, bytes;
        live_hub_take_dropped(h->sub, &ev, &bytes);
        stats_add(st_events_dropped, (int64_t)ev);
        stats_add(st_bytes_dropped, (int64_t)bytes);
        if (ev && !c->lossy) {
            c->lossy = true;
            LOGW(LOG_NO_CONN,
                 "admin: /tap client of config_id '%s' cannot keep up: events are dropped "
                 "(counted in admin.tap.events_dropped, its buffered traces say truncated)",
                 c->config_id);
        }
    }
}

static void tap_client_free(struct tap_client *c, bool end_reply)
{
    tap_sync_stats(c);
    for (size_t i = 0; i < c->nhubs; i++) {
        live_hub_unsubscribe(c->hubs[i].sub);
        if (c->hubs[i].ev)
            event_free(c->hubs[i].ev);
    }
    free(c->hubs);
    for (size_t i = 0; i < TAP_BUCKETS; i++)
        for (struct tap_conn *t = c->buckets[i], *n; t; t = n) {
            n = t->next;
            trace_enc_free(t->enc);
            free(t);
        }
    if (c->retry)
        event_free(c->retry);
    if (c->timeout)
        event_free(c->timeout);
    if (end_reply && c->req) {
        if (evbuffer_get_length(c->out))
            evhttp_send_reply_chunk(c->req, c->out);
        evhttp_send_reply_end(c->req);
    }
    if (c->evcon)
        evhttp_connection_set_closecb(c->evcon, NULL, NULL);
    evbuffer_free(c->out);
    tbuf_free(&c->tb);
    c->owner->client = NULL;
    stats_add(st_clients, -1);
    if (c->attached)
        LOGI(LOG_NO_CONN,
             "admin: /tap client of config_id '%s' detached after %" PRIu64 " trace(s)",
             c->config_id, c->traces);
    free(c);
}

/* One TraceWrapper the encoder just wrote into c->tb (none if it wrote nothing). Returns
 * true when it was the buffered_admin's last: the response is complete. */
static bool tap_emit(struct tap_client *c)
{
    if (!c->tb.len)
        return false;
    if (c->rq.buffered && c->traces >= c->rq.max_traces)
        return true;
    if (evbuffer_add(c->out, c->tb.data, c->tb.len)) {
        stats_inc(st_events_dropped);
        c->tb.len = 0;
        return false;
    }
    c->tb.len = 0;
    c->traces++;
    stats_inc(st_traces);
    return c->rq.buffered && c->traces >= c->rq.max_traces;
}

static struct tap_conn **tap_slot(struct tap_client *c, uint64_t id)
{
    struct tap_conn **pp = &c->buckets[id % TAP_BUCKETS];
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->next;
    return pp;
}

/* Ends the trace of *PP (its closing bytes: the whole trace when buffered) and forgets it. */
static bool tap_conn_end(struct tap_client *c, struct tap_conn **pp)
{
    struct tap_conn *t = *pp;
    c->tb.len = 0;
    bool done = trace_enc_end(t->enc, &c->tb) == 0 && tap_emit(c);
    *pp = t->next;
    trace_enc_free(t->enc);
    free(t);
    c->nconns--;
    return done;
}

/* Feeds E into its connection's trace. Returns true when the response is complete. */
static bool tap_event(struct tap_client *c, const struct live_ev *e)
{
    if (e->conn.id < c->first_id)
        return false; /* started before the POST: not traced (see the top) */
    struct tap_conn **pp = tap_slot(c, e->conn.id);
    if (e->dir == TRACE_EV_CLOSED && e->gap) /* the capture stopped: end what we have */
        return *pp ? tap_conn_end(c, pp) : false;
    if (!*pp) {
        struct tap_conn *t;
        if (c->nconns >= TAP_MAX_CONNS || !(t = calloc(1, sizeof(*t)))) {
            stats_inc(st_events_dropped);
            return false;
        }
        c->tb.len = 0;
        if (trace_enc_new(&c->rq.enc, &e->conn, &t->enc) || trace_enc_begin(t->enc, &c->tb)) {
            trace_enc_free(t->enc);
            free(t);
            stats_inc(st_events_dropped);
            return false;
        }
        t->id = e->conn.id;
        *pp = t;
        c->nconns++;
        if (tap_emit(c)) /* streaming: the connection segment */
            return true;
    }
    struct tap_conn *t = *pp;
    if (e->gap) { /* dropped in the queue (counted there): the trace says it is incomplete */
        (void)trace_enc_mark_truncated(t->enc, e->dir == TRACE_EV_READ, e->dir == TRACE_EV_WRITE);
        return false;
    }
    struct iovec iov;
    struct trace_event ev;
    live_ev_event(e, &iov, &ev);
    c->tb.len = 0;
    if (trace_enc_event(t->enc, &ev, &c->tb) == 0 && tap_emit(c))
        return true;
    return e->dir == TRACE_EV_CLOSED ? tap_conn_end(c, pp) : false;
}

/* Takes what C's queues hold into its traces and sends them. Returns false when C is gone (its
 * buffered_admin response completed). */
static bool tap_drain(struct tap_client *c)
{
    tap_sync_stats(c);
    if (admin_reply_unsent(c->evcon) > TAP_MAX_OUTPUT) {
        /* the client is behind: leave the queues to fill (the hub counts what it drops) and
         * stop listening to their eventfds, which stay readable, until the timer looks again */
        for (size_t i = 0; i < c->nhubs; i++)
            event_del(c->hubs[i].ev);
        static const struct timeval tv = {.tv_sec = 0, .tv_usec = TAP_RETRY_MS * 1000};
        evtimer_add(c->retry, &tv);
        return true;
    }
    bool done = false;
    for (size_t i = 0; i < c->nhubs; i++) {
        event_add(c->hubs[i].ev, NULL);
        uint64_t lost;
        struct live_ev *e = live_hub_take(c->hubs[i].sub, &lost); /* LOST: counted by the hub */
        while (e) {
            struct live_ev *next = e->next;
            if (!done)
                done = tap_event(c, e);
            free(e);
            e = next;
        }
    }
    if (done) { /* buffered_admin: max_traces reached, the last one ends the response */
        tap_client_free(c, true);
        return false;
    }
    if (!c->rq.buffered && evbuffer_get_length(c->out))
        evhttp_send_reply_chunk(c->req, c->out);
    return true;
}

static void tap_ready_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tap_hub *h = arg;
    (void)tap_drain(h->owner);
}

static void tap_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)tap_drain(arg);
}

/* buffered_admin timeout: what is buffered so far, then the end (Envoy: onTimeout). */
static void tap_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct tap_client *c = arg;
    if (tap_drain(c))
        tap_client_free(c, true);
}

static void tap_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct tap_client *c = arg;
    struct evhttp_request *req = c->req;
    c->evcon = NULL; /* being freed by evhttp */
    c->req = NULL;
    tap_client_free(c, false);
    admin_reply_closed(req);
}

/* The hubs of the taps whose admin_config.config_id is ID, subscribed for C. Returns the
 * number found (0: unknown id), or -ENOMEM / an eventfd -errno. */
static int tap_subscribe(struct tap_client *c, const char *id)
{
    const struct socktap_config *cfg = c->owner->cfg;
    size_t n = cfg->nclusters, found = 0;
    for (size_t l = 0; l < cfg->nlisteners; l++)
        n += cfg->listeners[l].nchains; /* every filter chain has its own transport socket */
    const struct ts_config **all = calloc(n ? n : 1, sizeof(*all));
    if (!all || !(c->hubs = calloc(n ? n : 1, sizeof(*c->hubs)))) {
        free(all);
        return -ENOMEM;
    }
    size_t k = 0;
    for (size_t l = 0; l < cfg->nlisteners; l++)
        for (size_t ch = 0; ch < cfg->listeners[l].nchains; ch++)
            all[k++] = &cfg->listeners[l].chains[ch].ts;
    for (size_t i = 0; i < cfg->nclusters; i++)
        all[k++] = &cfg->clusters[i].ts;
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const struct ts_config *ts = all[i];
        const char *aid = ts_config_admin_id(ts);
        struct live_hub *hub = ts_config_live(ts, false);
        if (!aid || strcmp(aid, id) || !hub)
            continue;
        struct tap_hub *h = &c->hubs[c->nhubs];
        h->owner = c;
        if ((rc = live_hub_subscribe(hub, TAP_QUEUE_BYTES, &h->sub)))
            break;
        c->nhubs++;
        h->ev =
            event_new(c->owner->base, live_sub_fd(h->sub), EV_READ | EV_PERSIST, tap_ready_cb, h);
        if (!h->ev || event_add(h->ev, NULL))
            rc = -ENOMEM;
        found++;
    }
    free(all);
    return rc ? rc : (int)found;
}

/* The request body's TapRequest (envoy/admin/v3/tap.proto) into C (config_id, tap_config), or
 * the 400 reply with why not (false). */
static bool tap_parse(struct tap_client *c, struct evhttp_request *req)
{
    static const char *const keys[] = {"config_id", "tap_config", NULL};
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (!len) {
        admin_reply_textf(req, 400, "Bad Request", "/tap requires a JSON/YAML body");
        return false;
    }
    const char *text = (const char *)evbuffer_pullup(in, -1);
    struct cfg_err err = {0};
    struct cfg_doc *doc = NULL;
    bool ok = false;
    if (!text || cfg_doc_load_string("/tap request", text, len, &doc, &err))
        goto out;
    struct ts_parse_ctx ctx = {.err = &err, .doc = doc};
    struct cfg_path root = {0}, idp = CFG_PATH_KEY(NULL, "config_id"),
                    tcp = CFG_PATH_KEY(NULL, "tap_config");
    const struct cfg_node *id = cfg_map_get(doc->root, "config_id");
    const struct cfg_node *tc = cfg_map_get(doc->root, "tap_config");
    const char *s;
    if (cfg_check_keys(&err, doc, doc->root, &root, keys))
        goto out;
    if (!id) {
        cfg_error(&err, doc, doc->root, &idp, "config_id is required");
        goto out;
    }
    if (cfg_get_string(&err, doc, id, &idp, &s))
        goto out;
    if (!*s || strlen(s) >= sizeof(c->config_id)) {
        cfg_error(&err, doc, id, &idp, "must be 1..%zu characters", sizeof(c->config_id) - 1);
        goto out;
    }
    snprintf(c->config_id, sizeof(c->config_id), "%s", s);
    if (!tc) {
        cfg_error(&err, doc, doc->root, &tcp, "tap_config is required");
        goto out;
    }
    ok = cfg_expect_map(&err, doc, tc, &tcp) == 0 &&
         tap_admin_request_parse(&ctx, tc, &tcp, &c->rq) == 0;
out:
    if (!ok)
        admin_reply_textf(req, 400, "Bad Request", "%s\n",
                          err.set ? err.msg : "cannot read the body");
    cfg_doc_free(doc);
    return ok;
}

static void tap_attach(struct admin_tap *t, struct evhttp_request *req)
{
    struct tap_client *c = calloc(1, sizeof(*c));
    if (!c || !(c->out = evbuffer_new())) {
        free(c);
        evhttp_send_error(req, 500, NULL);
        return;
    }
    c->owner = t;
    t->client = c;
    stats_add(st_clients, 1);
    if (!tap_parse(c, req))
        goto err_free;
    int found = tap_subscribe(c, c->config_id);
    if (found == 0) {
        admin_reply_textf(req, 400, "Bad Request",
                          "Unknown config id '%s'. No extension has registered with this id.",
                          c->config_id);
        goto err_free;
    }
    c->retry = evtimer_new(t->base, tap_retry_cb, c);
    if (c->rq.buffered && c->rq.timeout_ms)
        c->timeout = evtimer_new(t->base, tap_timeout_cb, c);
    if (found < 0 || !c->retry || (c->rq.buffered && c->rq.timeout_ms && !c->timeout)) {
        evhttp_send_error(req, 500, NULL);
        goto err_free;
    }
    c->first_id = conn_id_peek(); /* after subscribing: see the top */
    c->req = req;
    c->evcon = evhttp_request_get_connection(req);
    evhttp_connection_set_timeout(c->evcon, -1); /* as long as the client wants it */
    evhttp_connection_set_closecb(c->evcon, tap_closed_cb, c);
    if (c->timeout) {
        struct timeval tv = {.tv_sec = (time_t)(c->rq.timeout_ms / 1000),
                             .tv_usec = (suseconds_t)(c->rq.timeout_ms % 1000) * 1000};
        evtimer_add(c->timeout, &tv);
    }
    bool json = c->rq.enc.format == TRACE_FMT_JSON_BODY_AS_BYTES ||
                c->rq.enc.format == TRACE_FMT_JSON_BODY_AS_STRING;
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", json ? "application/json" : "application/octet-stream");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    c->attached = true;
    LOGI(LOG_NO_CONN, "admin: /tap client attached to config_id '%s' (%s, %s)", c->config_id,
         c->rq.buffered ? "buffered_admin" : "streaming_admin",
         c->rq.enc.streaming ? "streamed" : "buffered traces");
    return;

err_free:
    c->req = NULL; /* answered already */
    tap_client_free(c, false);
}
#endif

static void tap_request_cb(struct evhttp_request *req, void *arg)
{
    struct admin_tap *t = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        admin_reply_textf(req, 405, "Method Not Allowed", "/tap requires POST\n");
        return;
    }
    if (t->client) {
        /* Envoy's word for it (source/extensions/common/tap/admin.cc, AdminHandler::handler) */
        admin_reply_textf(req, 400, "Bad Request",
                          "An attached /tap admin stream already exists. "
                          "Detach it.");
        return;
    }
#ifdef SOCKTAP_CAPTURE
    tap_attach(t, req);
#else
    admin_reply_textf(req, 400, "Bad Request", "this socktap is built without the tap socket");
#endif
}

int admin_tap_new(struct evhttp *http, struct event_base *base, const struct socktap_config *cfg,
                  struct admin_tap **out)
{
    struct admin_tap *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->base = base;
    t->cfg = cfg;
    evhttp_set_cb(http, "/tap", tap_request_cb, t);
    *out = t;
    return 0;
}

void admin_tap_set_config(struct admin_tap *t, const struct socktap_config *cfg)
{
    if (!t)
        return;
#ifdef SOCKTAP_CAPTURE
    struct tap_client *c = t->client;
    if (c) {
        LOGI(LOG_NO_CONN,
             "admin: config reload: the /tap response of config_id '%s' ends (POST again to tap "
             "the new config)",
             c->config_id);
        if (tap_drain(c))
            tap_client_free(c, true);
    }
#endif
    t->cfg = cfg;
}

void admin_tap_free(struct admin_tap *t)
{
    if (!t)
        return;
#ifdef SOCKTAP_CAPTURE
    if (t->client)
        tap_client_free(t->client, true);
#endif
    free(t);
}

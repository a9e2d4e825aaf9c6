/* admin_live.c: see admin_live.h.
 *
 * Each viewer is one chunked HTTP response. Its hub queue (live_hub.h) is drained when the
 * hub's eventfd says there is something, the events go through one pcap_flow per connection
 * (the same TCP framing as capture2pcap --tcp-handshake: SYN/SYN-ACK/ACK before a connection's
 * first packet, FINs at its close) into a pcapng writer whose sink is an evbuffer, and that is
 * sent as one chunk per batch. While the client's socket has more than LIVE_MAX_OUTPUT unsent,
 * the queue is left alone (it fills, and the hub turns further events into gap records) and a
 * short timer looks again: so a slow viewer costs bounded memory and loses packets, and the
 * proxied traffic never notices. Rejected: draining regardless and letting evhttp buffer (its
 * output buffer has no bound).
 *
 * PCAP-over-IP (admin.socktap_pcap_over_ip) is the same viewer with a plain TCP connection for
 * output (a bufferevent instead of the HTTP reply) and classic pcap instead of pcapng: what
 * PolarProxy serves and `tshark -i TCP@HOST:PORT` reads. Its client sends nothing; what it
 * sends is discarded, its EOF ends the viewer. */
#include "admin/admin_live.h"
#include "admin/admin_reply.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "core/log.h"
#include "core/stats.h"
#include "pcap/pcap_flow.h"
#include "pcap/pcap_writer.h"
#include "transport/live_hub.h"

#define LIVE_DEFAULT_QUEUE (8u << 20)
#define LIVE_MIN_QUEUE     (64u << 10)
#define LIVE_MAX_QUEUE     (256u << 20)
#define LIVE_MAX_OUTPUT    (1u << 20) /* unsent bytes in the client's socket buffer */
#define LIVE_RETRY_MS      10
#define LIVE_MAX_FLOWS     65536 /* connections one viewer follows at once */
#define LIVE_BUCKETS       1024

struct live_flow {
    struct live_flow *next;
    uint64_t conn_id;
    struct pcap_flow flow;
};

struct live_view {
    struct admin_live *owner;
    struct live_view *prev, *next;
    struct evhttp_request *req;      /* HTTP viewer, else NULL */
    struct evhttp_connection *evcon; /* HTTP viewer, else NULL */
    struct bufferevent *bev;         /* PCAP-over-IP viewer, else NULL */
    struct live_sub *sub;
    struct event *ev;    /* the hub's eventfd */
    struct event *retry; /* output was full: look again */
    struct evbuffer *out;
    struct pcap_writer *w;
    uint32_t ifindex;
    char ifname[300];
    struct live_flow *buckets[LIVE_BUCKETS];
    size_t nflows;
    uint64_t lost_pending; /* events lost without a trace, to say on the next packet */
};

/* One admin.socktap_pcap_over_ip port. */
struct live_poi {
    struct admin_live *owner;
    const struct cfg_pcap_over_ip *cfg;
    struct live_hub *hub;
    struct evconnlistener *listener;
    struct event *accept_retry; /* accept failed (EMFILE): listen again a little later */
    char ifname[300];
};

struct admin_live {
    struct event_base *base;
    const struct socktap_config *cfg;
    struct live_view *views;
    struct live_poi *pois;
    size_t npois;
};

static stat_id st_viewers, st_packets, st_lost_events, st_lost_bytes;

void admin_live_register_stats(void)
{
    st_viewers = stats_register("admin.live.viewers", STAT_GAUGE);
    st_packets = stats_register("admin.live.packets", STAT_COUNTER);
    st_lost_events = stats_register("admin.live.lost_events", STAT_COUNTER);
    st_lost_bytes = stats_register("admin.live.lost_bytes", STAT_COUNTER);
}

static int live_sink(void *ctx, const void *buf, size_t len)
{
    return evbuffer_add(ctx, buf, len) == 0 ? 0 : -ENOMEM;
}

static struct live_flow **live_slot(struct live_view *v, uint64_t id)
{
    struct live_flow **pp = &v->buckets[id % LIVE_BUCKETS];
    while (*pp && (*pp)->conn_id != id)
        pp = &(*pp)->next;
    return pp;
}

static void live_flow_drop(struct live_view *v, struct live_flow **pp)
{
    struct live_flow *f = *pp;
    *pp = f->next;
    pcap_flow_release(&f->flow);
    free(f);
    v->nflows--;
}

/* The flow of E's connection, created (with its comment) on its first event; NULL when the
 * viewer follows too many connections already or memory is out. */
static struct live_flow *live_flow_get(struct live_view *v, const struct live_ev *e)
{
    struct live_flow **pp = live_slot(v, e->conn.id);
    struct live_flow *f = *pp;
    if (f || v->nflows >= LIVE_MAX_FLOWS)
        return f;
    if (!(f = calloc(1, sizeof(*f))))
        return NULL;
    struct pcap_flow_opts opts = {.handshake = true};
    (void)pcap_flow_init(&f->flow, &e->conn, &opts, NULL);
    char comment[512];
    snprintf(comment, sizeof(comment),
             "socktap connection %" PRIu64 " on %s: local %s:%u, remote %s:%u", e->conn.id,
             v->ifname, e->conn.local.present ? e->conn.local.address : "?", e->conn.local.port,
             e->conn.remote.present ? e->conn.remote.address : "?", e->conn.remote.port);
    if (pcap_flow_annotate(&f->flow, v->ifindex, comment)) {
        pcap_flow_release(&f->flow);
        free(f);
        return NULL;
    }
    f->conn_id = e->conn.id;
    *pp = f;
    v->nflows++;
    return f;
}

/* Writes E's packets. Returns 0 or the writer's -errno. */
static int live_event(struct live_view *v, const struct live_ev *e)
{
    struct live_flow **pp = live_slot(v, e->conn.id);
    if (e->dir == TRACE_EV_CLOSED && e->gap) { /* capture stopped: forget, show nothing */
        if (*pp)
            live_flow_drop(v, pp);
        return 0;
    }
    if (e->dir == TRACE_EV_CLOSED && !*pp)
        return 0; /* a connection this viewer never saw a byte of */
    struct live_flow *f = live_flow_get(v, e);
    if (!f) {
        v->lost_pending++;
        stats_inc(st_lost_events); /* the hub kept it; this viewer follows too many flows */
        stats_add(st_lost_bytes, (int64_t)e->len);
        return 0;
    }
    if (e->gap) {
        /* The bytes are gone, but their sequence space is kept: Wireshark then says "previous
         * segment not captured" exactly where they were. */
        enum pcap_flow_dir d = e->dir == TRACE_EV_READ ? PCAP_FLOW_IN : PCAP_FLOW_OUT;
        f->flow.seq[d] += (uint32_t)e->len;
        v->lost_pending++;
        return 0;
    }
    if (v->lost_pending) {
        char note[160];
        snprintf(note, sizeof(note),
                 "socktap: %" PRIu64 " event(s) before this packet were lost (viewer too slow)",
                 v->lost_pending);
        if (pcap_flow_annotate(&f->flow, v->ifindex, note) == 0)
            v->lost_pending = 0;
    }
    struct iovec iov;
    struct trace_event ev;
    live_ev_event(e, &iov, &ev);
    uint64_t before = pcap_writer_packets(v->w);
    int rc = pcap_flow_event(&f->flow, v->w, &ev);
    if (!rc && e->dir == TRACE_EV_CLOSED)
        rc = pcap_flow_finish(&f->flow, v->w);
    stats_add(st_packets, (int64_t)(pcap_writer_packets(v->w) - before));
    if (e->dir == TRACE_EV_CLOSED)
        live_flow_drop(v, live_slot(v, e->conn.id));
    return rc;
}

/* Adds what this viewer's queue dropped since the last look to admin.live.lost_*. */
static void live_sync_stats(struct live_view *v)
{
    uint64_t ev, bytes;
    live_hub_take_dropped(v->sub, &ev, &bytes);
    stats_add(st_lost_events, (int64_t)ev);
    stats_add(st_lost_bytes, (int64_t)bytes);
}

/* Hands what the writer produced to the viewer's connection. */
static void live_send(struct live_view *v)
{
    if (!evbuffer_get_length(v->out))
        return;
    if (v->bev)
        bufferevent_write_buffer(v->bev, v->out);
    else
        evhttp_send_reply_chunk(v->req, v->out);
}

static void live_view_free(struct live_view *v, bool end_reply)
{
    struct admin_live *l = v->owner;
    if (v->prev)
        v->prev->next = v->next;
    else
        l->views = v->next;
    if (v->next)
        v->next->prev = v->prev;
    live_sync_stats(v);
    live_hub_unsubscribe(v->sub);
    if (v->ev)
        event_free(v->ev);
    if (v->retry)
        event_free(v->retry);
    for (size_t i = 0; i < LIVE_BUCKETS; i++)
        while (v->buckets[i])
            live_flow_drop(v, &v->buckets[i]);
    if (end_reply && v->w) {
        int rc = pcap_writer_flush(v->w); /* what the sink took is sent, even after a failure */
        (void)rc;
        live_send(v);
        if (v->req)
            evhttp_send_reply_end(v->req);
        else /* no close handshake in plain pcap: what the socket takes now, then the FIN */
            (void)evbuffer_write(bufferevent_get_output(v->bev), bufferevent_getfd(v->bev));
    }
    if (v->bev)
        bufferevent_free(v->bev);
    if (v->evcon)
        evhttp_connection_set_closecb(v->evcon, NULL, NULL);
    (void)pcap_writer_close(v->w);
    if (v->out)
        evbuffer_free(v->out);
    stats_add(st_viewers, -1);
    free(v);
}

static size_t live_unsent(const struct live_view *v)
{
    return v->bev ? evbuffer_get_length(bufferevent_get_output(v->bev))
                  : admin_reply_unsent(v->evcon);
}

static void live_drain(struct live_view *v)
{
    live_sync_stats(v);
    if (live_unsent(v) > LIVE_MAX_OUTPUT) {
        /* The client is behind: leave the queue to fill (the hub counts what it drops) and
         * stop listening to the eventfd, which stays readable, until the timer looks again. */
        event_del(v->ev);
        static const struct timeval tv = {.tv_sec = 0, .tv_usec = LIVE_RETRY_MS * 1000};
        evtimer_add(v->retry, &tv);
        return;
    }
    event_add(v->ev, NULL);
    uint64_t lost = 0;
    struct live_ev *e = live_hub_take(v->sub, &lost);
    v->lost_pending += lost; /* counted by the hub already (live_sync_stats) */
    int rc = 0;
    while (e) {
        struct live_ev *next = e->next;
        if (!rc)
            rc = live_event(v, e);
        free(e);
        e = next;
    }
    if (!rc)
        rc = pcap_writer_flush(v->w);
    live_send(v);
    if (rc) {
        LOGW(LOG_NO_CONN, "admin: live stream of %s failed: %s; ending it", v->ifname,
             strerror(-rc));
        live_view_free(v, true);
    }
}

static void live_ready_cb(evutil_socket_t fd, short what, void *arg)
{
    live_drain(arg);
}

static void live_closed_cb(struct evhttp_connection *evcon, void *arg)
{
    struct live_view *v = arg;
    struct evhttp_request *req = v->req;
    v->evcon = NULL; /* being freed by evhttp */
    live_view_free(v, false);
    admin_reply_closed(req);
}

/* The transport socket config of listener LNAME or cluster CNAME (one is NULL), or NULL. */
static const struct ts_config *live_ts(const struct socktap_config *cfg, const char *lname,
                                       const char *cname, bool wire)
{
    for (size_t i = 0; lname && i < cfg->nlisteners; i++)
        if (!strcmp(cfg->listeners[i].name, lname))
            return cfg_listener_ts(&cfg->listeners[i], wire);
    for (size_t i = 0; cname && i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, cname))
            return &cfg->clusters[i].ts;
    return NULL;
}

static void live_ifname(char *ifname, size_t n, const char *lname, const char *cname, bool wire)
{
    snprintf(ifname, n, "%s:%s%s", lname ? "downstream" : "upstream", lname ? lname : cname,
             wire ? ":wire" : "");
}

/* The hub named by the query, or NULL after answering the request with why not. */
static struct live_hub *live_find(struct admin_live *l, struct evhttp_request *req,
                                  const struct evkeyvalq *q, bool wire, char *ifname, size_t n)
{
    const char *lname = evhttp_find_header(q, "listener");
    const char *cname = evhttp_find_header(q, "cluster");
    if (!lname == !cname) {
        admin_reply_textf(
            req, 400, "Bad Request",
            "give exactly one of listener=NAME or cluster=NAME (see /capture/live)\n");
        return NULL;
    }
    const struct ts_config *ts = live_ts(l->cfg, lname, cname, wire);
    const char *kind = lname ? "listener" : "cluster";
    const char *name = lname ? lname : cname;
    if (!ts) {
        admin_reply_textf(req, 404, "Not Found", "no %s named '%s' (see /capture/live)\n", kind,
                          name);
        return NULL;
    }
    struct live_hub *hub = ts_config_live(ts, wire);
    if (!hub) {
        admin_reply_textf(req, 404, "Not Found",
                          wire ? "%s '%s' has no TLS socket with socktap_wire_capture\n"
                               : "%s '%s' has no capture or tap transport socket\n",
                          kind, name);
        return NULL;
    }
    live_ifname(ifname, n, lname, cname, wire);
    return hub;
}

/* GET /capture/live: the capture sockets a viewer can follow, one per line
 * ("listener NAME", "cluster NAME", with " wire" for a TLS wire capture): what socktap-extcap
 * lists as interfaces. */
static void live_list_cb(struct evhttp_request *req, void *arg)
{
    struct admin_live *l = arg;
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    const struct socktap_config *cfg = l->cfg;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (ts_config_live(cfg_listener_ts(&cfg->listeners[i], false), false))
            evbuffer_add_printf(b, "listener %s\n", cfg->listeners[i].name);
        if (ts_config_live(cfg_listener_ts(&cfg->listeners[i], true), true))
            evbuffer_add_printf(b, "listener %s wire\n", cfg->listeners[i].name);
    }
    for (size_t i = 0; i < cfg->nclusters; i++) {
        if (ts_config_live(&cfg->clusters[i].ts, false))
            evbuffer_add_printf(b, "cluster %s\n", cfg->clusters[i].name);
        if (ts_config_live(&cfg->clusters[i].ts, true))
            evbuffer_add_printf(b, "cluster %s wire\n", cfg->clusters[i].name);
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

/* A new viewer of HUB as IFNAME (pcapng: its interface; else classic pcap) with a queue of
 * MAX_BYTES, linked into L and counted; its file header waits in v->out for live_send. The
 * caller sets its connection (req/evcon or bev) before returning to the loop. Returns 0 or
 * -ENOMEM (nothing left behind). */
static int live_view_new(struct admin_live *l, struct live_hub *hub, const char *ifname,
                         size_t max_bytes, bool pcapng, struct live_view **out)
{
    struct live_view *v = calloc(1, sizeof(*v));
    if (!v || !(v->out = evbuffer_new()))
        goto err_free;
    v->owner = l;
    snprintf(v->ifname, sizeof(v->ifname), "%s", ifname);
    struct pcap_writer_opts opts = {.pcapng = pcapng, .ethernet = true};
    if (pcap_writer_open_sink(live_sink, v->out, 64 * 1024, &opts, &v->w))
        goto err_free;
    char desc[400];
    snprintf(desc, sizeof(desc), "socktap live capture of %s", ifname);
    if (pcap_writer_add_interface(v->w, ifname, desc, &v->ifindex) || pcap_writer_flush(v->w))
        goto err_free;
    if (live_hub_subscribe(hub, max_bytes, &v->sub))
        goto err_free;
    v->ev = event_new(l->base, live_sub_fd(v->sub), EV_READ | EV_PERSIST, live_ready_cb, v);
    v->retry = evtimer_new(l->base, live_ready_cb, v);
    if (!v->ev || !v->retry || event_add(v->ev, NULL))
        goto err_free;
    v->next = l->views;
    if (l->views)
        l->views->prev = v;
    l->views = v;
    stats_add(st_viewers, 1);
    *out = v;
    return 0;

err_free:
    if (v) {
        live_hub_unsubscribe(v->sub);
        if (v->ev)
            event_free(v->ev);
        if (v->retry)
            event_free(v->retry);
        (void)pcap_writer_close(v->w);
        if (v->out)
            evbuffer_free(v->out);
        free(v);
    }
    return -ENOMEM;
}

static void live_stream_cb(struct evhttp_request *req, void *arg)
{
    struct admin_live *l = arg;
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    if (query && evhttp_parse_query_str(query, &q) != 0) {
        admin_reply_textf(req, 400, "Bad Request", "cannot parse the query\n");
        return;
    }
    struct live_view *v = NULL;
    const char *w = evhttp_find_header(&q, "wire");
    bool wire = w && !strcmp(w, "1");
    if (w && !wire && strcmp(w, "0")) {
        admin_reply_textf(req, 400, "Bad Request", "wire must be 0 or 1\n");
        goto out;
    }
    size_t max_bytes = LIVE_DEFAULT_QUEUE;
    const char *mb = evhttp_find_header(&q, "max_bytes");
    if (mb) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(mb, &end, 10);
        if (errno || *end || !*mb || x < LIVE_MIN_QUEUE || x > LIVE_MAX_QUEUE) {
            admin_reply_textf(req, 400, "Bad Request", "max_bytes must be %u..%u\n", LIVE_MIN_QUEUE,
                              LIVE_MAX_QUEUE);
            goto out;
        }
        max_bytes = (size_t)x;
    }
    char ifname[300];
    struct live_hub *hub = live_find(l, req, &q, wire, ifname, sizeof(ifname));
    if (!hub)
        goto out;
    if (live_view_new(l, hub, ifname, max_bytes, true, &v)) {
        evhttp_send_error(req, 500, NULL);
        goto out;
    }
    v->req = req;
    v->evcon = evhttp_request_get_connection(req);
    /* A stream lives as long as the viewer wants it: no idle timeout on this connection. */
    evhttp_connection_set_timeout(v->evcon, -1);
    evhttp_connection_set_closecb(v->evcon, live_closed_cb, v);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/x-pcapng");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_send_reply_start(req, 200, "OK");
    live_send(v); /* SHB + IDB: a viewer can start at once */
    LOGI(LOG_NO_CONN, "admin: live viewer of %s connected", ifname);
out:
    evhttp_clear_headers(&q);
}

/* ---- PCAP-over-IP (admin.socktap_pcap_over_ip) ---- */

static void poi_read_cb(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in)); /* the protocol has the client send nothing */
}

static void poi_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct live_view *v = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        LOGI(LOG_NO_CONN, "admin: PCAP-over-IP viewer of %s left", v->ifname);
        live_view_free(v, false);
    }
}

static void poi_accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                          int salen, void *arg)
{
    struct live_poi *p = arg;
    struct live_view *v;
    struct bufferevent *bev = bufferevent_socket_new(p->owner->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        evutil_closesocket(fd);
        return;
    }
    if (live_view_new(p->owner, p->hub, p->ifname, LIVE_DEFAULT_QUEUE, false, &v)) {
        LOGW(LOG_NO_CONN, "admin: PCAP-over-IP viewer of %s refused: out of memory", p->ifname);
        bufferevent_free(bev);
        return;
    }
    v->bev = bev;
    bufferevent_setcb(bev, poi_read_cb, NULL, poi_event_cb, v);
    bufferevent_enable(bev, EV_READ);
    live_send(v); /* the pcap file header: a reader can start at once */
    LOGI(LOG_NO_CONN, "admin: PCAP-over-IP viewer of %s connected on %s", p->ifname,
         p->cfg->addr.text);
}

static void poi_accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct live_poi *p = arg;
    evconnlistener_enable(p->listener);
}

/* accept() failed (EMFILE...): pause this port 100 ms rather than spin on a pending connection. */
static void poi_accept_error_cb(struct evconnlistener *lis, void *arg)
{
    struct live_poi *p = arg;
    static const struct timeval tv = {.tv_sec = 0, .tv_usec = 100 * 1000};
    LOGW(LOG_NO_CONN, "admin: PCAP-over-IP on %s: accept: %s", p->cfg->addr.text, strerror(errno));
    evconnlistener_disable(lis);
    evtimer_add(p->accept_retry, &tv);
}

static int poi_start(struct admin_live *l)
{
    const struct cfg_admin *a = &l->cfg->admin;
    if (!a->npcap_over_ip)
        return 0;
    l->pois = calloc(a->npcap_over_ip, sizeof(*l->pois));
    if (!l->pois)
        return -ENOMEM;
    l->npois = a->npcap_over_ip;
    for (size_t i = 0; i < l->npois; i++) {
        struct live_poi *p = &l->pois[i];
        const struct cfg_pcap_over_ip *c = &a->pcap_over_ip[i];
        p->owner = l;
        p->cfg = c;
        /* the config checked that this capture exists (config.c, parse_pcap_over_ip) */
        p->hub = ts_config_live(live_ts(l->cfg, c->listener, c->cluster, c->wire), c->wire);
        live_ifname(p->ifname, sizeof(p->ifname), c->listener, c->cluster, c->wire);
        p->accept_retry = evtimer_new(l->base, poi_accept_retry_cb, p);
        if (!p->hub || !p->accept_retry)
            return -ENOMEM;
        p->listener = evconnlistener_new_bind(
            l->base, poi_accept_cb, p,
            LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1,
            (const struct sockaddr *)&c->addr.ss, (int)c->addr.len);
        if (!p->listener) {
            int err = errno;
            LOGE(LOG_NO_CONN, "admin: cannot listen on %s (socktap_pcap_over_ip of %s): %s",
                 c->addr.text, p->ifname, strerror(err));
            return err ? -err : -EADDRNOTAVAIL;
        }
        evconnlistener_set_error_cb(p->listener, poi_accept_error_cb);
        LOGI(LOG_NO_CONN, "admin: PCAP-over-IP of %s on %s", p->ifname, c->addr.text);
    }
    return 0;
}

int admin_live_new(struct evhttp *http, struct event_base *base, const struct socktap_config *cfg,
                   struct admin_live **out)
{
    struct admin_live *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->base = base;
    l->cfg = cfg;
    int rc = poi_start(l);
    if (rc) {
        admin_live_free(l);
        return rc;
    }
    evhttp_set_cb(http, "/capture/live.pcapng", live_stream_cb, l);
    evhttp_set_cb(http, "/capture/live", live_list_cb, l);
    *out = l;
    return 0;
}

void admin_live_set_config(struct admin_live *l, const struct socktap_config *cfg)
{
    if (!l)
        return;
    /* the viewers' hubs belong to the old config, which goes once its connections end: each
     * stream gets a proper end now (a viewer reconnects to follow the new config's captures) */
    while (l->views)
        live_view_free(l->views, true);
    l->cfg = cfg;
    /* same admin block (a reload refuses to change it): same ports, same order */
    for (size_t i = 0; i < l->npois && i < cfg->admin.npcap_over_ip; i++) {
        struct live_poi *p = &l->pois[i];
        const struct cfg_pcap_over_ip *c = &cfg->admin.pcap_over_ip[i];
        p->cfg = c;
        p->hub = ts_config_live(live_ts(cfg, c->listener, c->cluster, c->wire), c->wire);
    }
}

void admin_live_free(struct admin_live *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->npois; i++) {
        if (l->pois[i].listener)
            evconnlistener_free(l->pois[i].listener);
        if (l->pois[i].accept_retry)
            event_free(l->pois[i].accept_retry);
    }
    free(l->pois);
    while (l->views)
        live_view_free(l->views, true);
    free(l);
}

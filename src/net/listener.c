/* Listeners: every worker's listen sockets, the accept loop, and the listener's bookkeeping
 * (connection_limit, stats).
 *
 * Listeners are bound on the main thread before the workers start, so a bad address fails the
 * start-up with a message instead of a dead worker. EMFILE/ENFILE on accept pause that listener
 * for ACCEPT_BACKOFF_MS instead of spinning on a readable listen socket; so does EMFILE on an
 * upstream socket (session.c): accepting more would only take the last descriptor and drop the
 * connection, emptying the backlog of clients that could be served a moment later.
 *
 * One port, one process: each worker keeps its own SO_REUSEPORT socket per listener (the kernel
 * spreads connections over them, no thundering herd, no accept lock), but the first of them is
 * bound and put to listening *without* SO_REUSEPORT, which fails with EADDRINUSE if any other
 * socket holds the address, with or without SO_REUSEPORT (another socktap, or anything else);
 * SO_REUSEPORT is set on it only once it listens, so the other workers' sockets can join it. Two
 * socktaps starting at the same moment cannot both pass: the second listen() without
 * SO_REUSEPORT fails against the first. Rejected: one listening socket shared by all workers
 * (every worker's epoll wakes for each connection, and the first awake takes most of them), and
 * a probe bind that is closed again before the real sockets bind (a window in which another
 * process can slip in). A listener on port 0 gets its port from that first bind, and every
 * other worker binds the same port, so the port logged is the one that serves.
 *
 * Accepts are bounded per wakeup (ACCEPT_BATCH): accepting a whole backlog in one callback
 * (evconnlistener does) runs every connection's set-up, trace file creation included (0.5-0.7
 * ms of open(2) each on ext4), before any timer or upstream connect completion of that worker is
 * looked at; a burst of 1,500 then timed out its own upstream connects. The listen socket is
 * level-triggered, so what is left in the backlog is taken at the next loop iteration, after the
 * other ready events.
 *
 * connection_limit (Envoy's filter) is a process-wide atomic count per listener taken with
 * add-then-check, so concurrent workers can never overshoot the limit; it is checked before any
 * transport work (no TLS handshake, no trace file for a connection we refuse). */
#include "net/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/sockaddr_text.h"

#define ACCEPT_BACKOFF_MS 100
#define ACCEPT_BATCH      32 /* connections set up per listener wakeup: a few ms at worst */
#define LISTEN_BACKLOG    4096

struct listener_ctx { /* argument of a worker's accept and accept-retry callbacks */
    struct worker *w;
    size_t li;
    listener_accept_fn *on_accept;
};

int listener_server_init(struct server *srv)
{
    struct socktap_config *cfg = srv->cfg;
    srv->lstats = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*srv->lstats));
    srv->listener_active = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(int32_t));
    if (!srv->lstats || !srv->listener_active)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const char *a = cfg->listeners[i].addr.stat_name;
        const char *p = cfg->listeners[i].tcp_proxy.stat_prefix;
        struct listener_stats *ls = &srv->lstats[i];
        ls->cx_total = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_total", a);
        ls->cx_active = stats_registerf(STAT_GAUGE, "listener.%s.downstream_cx_active", a);
        ls->cx_destroy = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_destroy", a);
        ls->cx_overflow = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_overflow", a);
        ls->cx_ts_connect_timeout = stats_registerf(
            STAT_COUNTER, "listener.%s.downstream_cx_transport_socket_connect_timeout", a);
        ls->tcp_cx_total = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_total", p);
        ls->tcp_rx_bytes = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_rx_bytes_total", p);
        ls->tcp_tx_bytes = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_tx_bytes_total", p);
        ls->tcp_idle_timeout = stats_registerf(STAT_COUNTER, "tcp.%s.idle_timeout", p);
        ls->tcp_no_route = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_no_route", p);
        const char *lp = cfg->listeners[i].conn_limit_stat_prefix;
        if (cfg->listeners[i].max_connections && lp) {
            ls->limit_limited =
                stats_registerf(STAT_COUNTER, "connection_limit.%s.limited_connections", lp);
            ls->limit_active =
                stats_registerf(STAT_GAUGE, "connection_limit.%s.active_connections", lp);
        }
    }
    return 0;
}

void listener_server_free(struct server *srv)
{
    free(srv->lstats);
    srv->lstats = NULL;
    free(srv->listener_active);
    srv->listener_active = NULL;
}

static bool accept_err_is_transient(int err)
{
    /* the peer gave up before we took it, or a signal: the next one may be fine */
    return err == ECONNABORTED || err == EINTR || err == EPROTO || err == EPERM;
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
    struct listener_ctx *lc = arg;
    struct worker *w = lc->w;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (accept_err_is_transient(err))
                continue;
            if (err != EAGAIN && err != EWOULDBLOCK)
                listener_pause_accepts(w, lc->li, err);
            return;
        }
        lc->on_accept(w, lc->li, fd, (struct sockaddr *)&peer, (int)len);
        /* a session out of descriptors for its upstream paused this listener */
        if (!w->accept_ev[lc->li] || evtimer_pending(w->accept_retry[lc->li], NULL))
            return;
    }
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener_ctx *lc = arg;
    if (!lc->w->draining && lc->w->accept_ev[lc->li])
        event_add(lc->w->accept_ev[lc->li], NULL);
}

void listener_pause_accepts(struct worker *w, size_t li, int err)
{
    static __thread time_t last_log;
    time_t now = time(NULL);
    if (!w->accept_ev[li] || evtimer_pending(w->accept_retry[li], NULL))
        return;
    if (now != last_log) {
        last_log = now;
        LOGW(LOG_NO_CONN, "accept on %s: %s; pausing accepts for %d ms",
             w->srv->cfg->listeners[li].addr.text, strerror(err), ACCEPT_BACKOFF_MS);
    }
    event_del(w->accept_ev[li]);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(w->accept_retry[li], &tv);
}

void listener_worker_close(struct worker *w)
{
    for (size_t i = 0; w->accept_ev && i < w->srv->cfg->nlisteners; i++) {
        if (w->accept_ev[i]) {
            close(event_get_fd(w->accept_ev[i]));
            event_free(w->accept_ev[i]);
            w->accept_ev[i] = NULL;
        }
        if (w->accept_retry && w->accept_retry[i])
            event_del(w->accept_retry[i]);
    }
}

/* Rewrites A's port (and text) to PORT: a port-0 listener learns the port the kernel chose. */
static void address_set_port(struct cfg_address *a, uint16_t port)
{
    if (a->ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
    /* the text only: stat_name keeps the configured "_0", as Envoy's listener stats do */
    sockaddr_text((const struct sockaddr *)&a->ss, a->len, ':', a->text, sizeof(a->text));
}

static uint16_t sockaddr_port(const struct sockaddr *sa, socklen_t len)
{
    char ip[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    (void)sockaddr_ip_port(sa, len, ip, sizeof(ip), &port);
    return port;
}

/* Returns a listening, non-blocking socket for L (the caller owns it), or -errno. FIRST: the
 * process's first socket for L, bound and listening without SO_REUSEPORT so that another
 * process's socket on the address makes it fail (see the top of the file); SO_REUSEPORT is set
 * afterwards for the other workers' sockets to join. A port-0 address is rewritten in place to
 * the port the kernel chose (L is the server's borrowed config). */
static int listener_socket(struct cfg_listener *l, bool first)
{
    int one = 1, err;
    int fd = socket(l->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* SO_REUSEADDR: a restart must not wait for the last run's TIME_WAIT connections */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        (!first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) ||
        bind(fd, (const struct sockaddr *)&l->addr.ss, l->addr.len) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0 ||
        (first && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0))
        goto err_close_fd;
    if (first && sockaddr_port((const struct sockaddr *)&l->addr.ss, l->addr.len) == 0) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            goto err_close_fd;
        address_set_port(&l->addr, sockaddr_port((const struct sockaddr *)&ss, len));
    }
    return fd;

err_close_fd:
    err = errno;
    close(fd);
    return -err;
}

int listener_worker_init(struct worker *w, listener_accept_fn *on_accept)
{
    struct socktap_config *cfg = w->srv->cfg;
    size_t nl = cfg->nlisteners ? cfg->nlisteners : 1;
    w->accept_ev = calloc(nl, sizeof(*w->accept_ev));
    w->accept_retry = calloc(nl, sizeof(*w->accept_retry));
    w->lctx = calloc(nl, sizeof(*w->lctx));
    if (!w->accept_ev || !w->accept_retry || !w->lctx)
        return -ENOMEM; /* everything allocated so far is freed by listener_worker_free */
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        w->lctx[i].w = w;
        w->lctx[i].li = i;
        w->lctx[i].on_accept = on_accept;
        w->accept_retry[i] = evtimer_new(w->base, accept_retry_cb, &w->lctx[i]);
        if (!w->accept_retry[i])
            return -ENOMEM;
        int fd = listener_socket(l, w->index == 0);
        if (fd < 0) {
            LOGE(LOG_NO_CONN, "listener %s cannot listen on %s: %s", l->name, l->addr.text,
                 strerror(-fd));
            return fd;
        }
        w->accept_ev[i] = event_new(w->base, fd, EV_READ | EV_PERSIST, accept_cb, &w->lctx[i]);
        if (!w->accept_ev[i]) {
            close(fd);
            return -ENOMEM;
        }
        event_add(w->accept_ev[i], NULL);
    }
    return 0;
}

void listener_worker_free(struct worker *w)
{
    listener_worker_close(w);
    for (size_t l = 0; w->accept_retry && l < w->srv->cfg->nlisteners; l++) {
        if (w->accept_retry[l])
            event_free(w->accept_retry[l]);
    }
    free(w->accept_ev);
    w->accept_ev = NULL;
    free(w->accept_retry);
    w->accept_retry = NULL;
    free(w->lctx);
    w->lctx = NULL;
}

void listener_conn_opened(struct worker *w, size_t li)
{
    const struct listener_stats *ls = &w->srv->lstats[li];
    stats_inc(ls->cx_total);
    stats_add(ls->cx_active, 1);
    stats_inc(ls->tcp_cx_total);
}

void listener_conn_closed(struct worker *w, size_t li)
{
    const struct listener_stats *ls = &w->srv->lstats[li];
    stats_add(ls->cx_active, -1);
    stats_inc(ls->cx_destroy);
}

int listener_admit(struct worker *w, size_t li, uint64_t id)
{
    struct server *srv = w->srv;
    const struct cfg_listener *l = &srv->cfg->listeners[li];
    if (!l->max_connections)
        return 0;
    if (__atomic_add_fetch(&srv->listener_active[li], 1, __ATOMIC_RELAXED) >
        (int32_t)l->max_connections) {
        __atomic_fetch_sub(&srv->listener_active[li], 1, __ATOMIC_RELAXED);
        stats_inc(srv->lstats[li].limit_limited);
        stats_inc(srv->lstats[li].cx_overflow);
        LOGD(id, "listener %s at its connection limit (%u): connection closed", l->addr.text,
             l->max_connections);
        return -EBUSY;
    }
    stats_add(srv->lstats[li].limit_active, 1);
    return 0;
}

void listener_release(struct worker *w, size_t li)
{
    struct server *srv = w->srv;
    if (!srv->cfg->listeners[li].max_connections)
        return;
    stats_add(srv->lstats[li].limit_active, -1);
    __atomic_fetch_sub(&srv->listener_active[li], 1, __ATOMIC_RELAXED);
}

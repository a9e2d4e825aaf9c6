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
 * A reload (reload.c) binds the new config's new listeners on the main thread too, before it
 * swaps, and a listener it keeps (same name and address) keeps its sockets: each worker moves
 * the kept socket to an accept event of the new generation in its own loop, so the kernel's
 * backlog is never closed and no connection is refused. A removed listener's socket is closed by
 * each worker after it accepted what the backlog already held (those connections are served
 * under the old config); connections still in the handshake then are reset, as on any close.
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

int listener_gen_init(struct gen *g)
{
    const struct socktap_config *cfg = g->cfg;
    size_t nl = cfg->nlisteners ? cfg->nlisteners : 1;
    g->lstats = calloc(nl, sizeof(*g->lstats));
    g->listener_active = calloc(nl, sizeof(int32_t));
    g->lfd = malloc(nl * (size_t)g->nworkers * sizeof(*g->lfd));
    g->lprev = malloc(nl * sizeof(*g->lprev));
    if (!g->lstats || !g->listener_active || !g->lfd || !g->lprev)
        return -ENOMEM;
    for (size_t i = 0; i < nl * (size_t)g->nworkers; i++)
        g->lfd[i] = -1;
    for (size_t i = 0; i < nl; i++)
        g->lprev[i] = -1;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const char *a = cfg->listeners[i].addr.stat_name;
        struct listener_stats *ls = &g->lstats[i];
        ls->cx_total = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_total", a);
        ls->cx_active = stats_registerf(STAT_GAUGE, "listener.%s.downstream_cx_active", a);
        ls->cx_destroy = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_destroy", a);
        ls->cx_overflow = stats_registerf(STAT_COUNTER, "listener.%s.downstream_cx_overflow", a);
        ls->cx_ts_connect_timeout = stats_registerf(
            STAT_COUNTER, "listener.%s.downstream_cx_transport_socket_connect_timeout", a);
        ls->no_chain_match = stats_registerf(STAT_COUNTER, "listener.%s.no_filter_chain_match", a);
        ls->pre_cx_timeout =
            stats_registerf(STAT_COUNTER, "listener.%s.downstream_pre_cx_timeout", a);
        ls->pre_cx_active = stats_registerf(STAT_GAUGE, "listener.%s.downstream_pre_cx_active", a);
        ls->lf_remote_close =
            stats_registerf(STAT_COUNTER, "listener.%s.downstream_listener_filter_remote_close", a);
        ls->ti_tls_found = stats_register("tls_inspector.tls_found", STAT_COUNTER);
        ls->ti_tls_not_found = stats_register("tls_inspector.tls_not_found", STAT_COUNTER);
        ls->ti_sni_found = stats_register("tls_inspector.sni_found", STAT_COUNTER);
        ls->ti_sni_not_found = stats_register("tls_inspector.sni_not_found", STAT_COUNTER);
        ls->ti_alpn_found = stats_register("tls_inspector.alpn_found", STAT_COUNTER);
        ls->ti_alpn_not_found = stats_register("tls_inspector.alpn_not_found", STAT_COUNTER);
        ls->ti_too_large = stats_register("tls_inspector.client_hello_too_large", STAT_COUNTER);
        ls->chains = calloc(cfg->listeners[i].nchains, sizeof(*ls->chains));
        if (!ls->chains)
            return -ENOMEM;
        for (size_t c = 0; c < cfg->listeners[i].nchains; c++) {
            const char *p = cfg->listeners[i].chains[c].tcp_proxy.stat_prefix;
            struct chain_stats *cs = &ls->chains[c];
            cs->tcp_cx_total = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_total", p);
            cs->tcp_rx_bytes =
                stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_rx_bytes_total", p);
            cs->tcp_tx_bytes =
                stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_tx_bytes_total", p);
            cs->tcp_idle_timeout = stats_registerf(STAT_COUNTER, "tcp.%s.idle_timeout", p);
            cs->tcp_no_route = stats_registerf(STAT_COUNTER, "tcp.%s.downstream_cx_no_route", p);
            cs->tcp_max_duration =
                stats_registerf(STAT_COUNTER, "tcp.%s.max_downstream_connection_duration", p);
        }
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

void listener_gen_free(struct gen *g)
{
    /* sockets bound for G and never handed to the workers (a reload that failed later) */
    for (size_t i = 0; !g->handed && g->lfd && g->lprev && g->cfg && i < g->cfg->nlisteners; i++) {
        if (g->lprev[i] >= 0)
            continue; /* the previous generation's: still serving */
        for (int w = 0; w < g->nworkers; w++)
            if (g->lfd[i * (size_t)g->nworkers + (size_t)w] >= 0)
                close(g->lfd[i * (size_t)g->nworkers + (size_t)w]);
    }
    for (size_t i = 0; g->lstats && g->cfg && i < g->cfg->nlisteners; i++)
        free(g->lstats[i].chains);
    free(g->lstats);
    g->lstats = NULL;
    free(g->listener_active);
    g->listener_active = NULL;
    free(g->lfd);
    g->lfd = NULL;
    free(g->lprev);
    g->lprev = NULL;
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
             w->gen->cfg->listeners[li].addr.text, strerror(err), ACCEPT_BACKOFF_MS);
    }
    event_del(w->accept_ev[li]);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(w->accept_retry[li], &tv);
}

void listener_worker_close(struct worker *w)
{
    for (size_t i = 0; w->accept_ev && i < w->nlisteners; i++) {
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

/* True when the listener configured at NOW serves what the one at WAS (running) serves: same
 * family, IP and port, where a port of 0 in NOW keeps the port WAS was given. */
static bool address_same(const struct cfg_address *now, const struct cfg_address *was)
{
    if (now->ss.ss_family != was->ss.ss_family)
        return false;
    uint16_t pnow = sockaddr_port((const struct sockaddr *)&now->ss, now->len);
    uint16_t pwas = sockaddr_port((const struct sockaddr *)&was->ss, was->len);
    if (pnow != 0 && pnow != pwas)
        return false;
    if (now->ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&now->ss;
        const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)&was->ss;
        return !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) &&
               a->sin6_scope_id == b->sin6_scope_id;
    }
    const struct sockaddr_in *a = (const struct sockaddr_in *)&now->ss;
    const struct sockaddr_in *b = (const struct sockaddr_in *)&was->ss;
    return a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* Pairs G's listeners with PREV's: by name and address first (Envoy's key is the name; an
 * unnamed listener is named by its address), then by address alone (a renamed listener keeps
 * its sockets rather than failing to bind its own address). */
static int listener_match(struct gen *g, const struct gen *prev)
{
    size_t nl = g->cfg->nlisteners, pnl = prev->cfg->nlisteners;
    bool *taken = calloc(pnl ? pnl : 1, sizeof(*taken));
    if (!taken)
        return -ENOMEM;
    for (int by_addr = 0; by_addr < 2; by_addr++) {
        for (size_t i = 0; i < nl; i++) {
            const struct cfg_listener *l = &g->cfg->listeners[i];
            for (size_t j = 0; g->lprev[i] < 0 && j < pnl; j++) {
                const struct cfg_listener *p = &prev->cfg->listeners[j];
                if (!taken[j] && (by_addr || !strcmp(l->name, p->name)) &&
                    address_same(&l->addr, &p->addr)) {
                    taken[j] = true;
                    g->lprev[i] = (ssize_t)j;
                }
            }
        }
    }
    free(taken);
    return 0;
}

int listener_gen_bind(struct gen *g, const struct gen *prev, char *why, size_t why_size)
{
    size_t nw = (size_t)g->nworkers;
    int rc = prev ? listener_match(g, prev) : 0;
    if (rc < 0) {
        snprintf(why, why_size, "out of memory");
        return rc;
    }
    for (size_t i = 0; i < g->cfg->nlisteners; i++) {
        struct cfg_listener *l = &g->cfg->listeners[i];
        if (g->lprev[i] >= 0) {
            size_t j = (size_t)g->lprev[i];
            const struct cfg_address *was = &prev->cfg->listeners[j].addr;
            /* a port-0 listener keeps the port it was given (the text only: stat_name keeps
             * the configured "_0", as at start-up) */
            l->addr.ss = was->ss;
            l->addr.len = was->len;
            memcpy(l->addr.text, was->text, sizeof(l->addr.text));
            memcpy(&g->lfd[i * nw], &prev->lfd[j * nw], nw * sizeof(*g->lfd));
            continue;
        }
        for (size_t w = 0; w < nw; w++) {
            int fd = listener_socket(l, w == 0);
            if (fd < 0) {
                snprintf(why, why_size, "listener %s cannot listen on %s: %s", l->name,
                         l->addr.text, strerror(-fd));
                return fd; /* the sockets made so far are G's: listener_gen_free closes them */
            }
            g->lfd[i * nw + w] = fd;
        }
    }
    return 0;
}

/* Makes W's accept arrays and events for generation G's listeners (G's sockets for W). A
 * listener whose event cannot be made is closed on W (logged): the other workers serve it. */
static int listener_worker_arm(struct worker *w, struct gen *g)
{
    size_t nl = g->cfg->nlisteners ? g->cfg->nlisteners : 1;
    struct event **ev = calloc(nl, sizeof(*ev));
    struct event **retry = calloc(nl, sizeof(*retry));
    struct listener_ctx *lctx = calloc(nl, sizeof(*lctx));
    if (!ev || !retry || !lctx) {
        free(ev);
        free(retry);
        free(lctx);
        return -ENOMEM;
    }
    for (size_t i = 0; i < g->cfg->nlisteners; i++) {
        int fd = g->lfd[i * (size_t)g->nworkers + (size_t)w->index];
        lctx[i] = (struct listener_ctx){.w = w, .li = i, .on_accept = w->on_accept};
        retry[i] = evtimer_new(w->base, accept_retry_cb, &lctx[i]);
        ev[i] = event_new(w->base, fd, EV_READ | EV_PERSIST, accept_cb, &lctx[i]);
        if (!retry[i] || !ev[i]) {
            LOGE(LOG_NO_CONN,
                 "listener %s: no memory for worker %d's accept event: not accepting there",
                 g->cfg->listeners[i].name, w->index);
            if (ev[i])
                event_free(ev[i]);
            ev[i] = NULL;
            close(fd);
            continue;
        }
        event_add(ev[i], NULL);
    }
    w->accept_ev = ev;
    w->accept_retry = retry;
    w->lctx = lctx;
    w->nlisteners = g->cfg->nlisteners;
    return 0;
}

int listener_worker_init(struct worker *w, listener_accept_fn *on_accept)
{
    w->on_accept = on_accept;
    return listener_worker_arm(w, w->gen);
}

/* Frees W's accept arrays and events; closes the sockets of the listeners KEEP does not hold
 * (KEEP NULL: all of them). */
static void listener_worker_disarm(struct worker *w, const bool *keep)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        if (w->accept_ev && w->accept_ev[i]) {
            if (!keep || !keep[i])
                close(event_get_fd(w->accept_ev[i]));
            event_free(w->accept_ev[i]);
        }
        if (w->accept_retry && w->accept_retry[i])
            event_free(w->accept_retry[i]);
    }
    free(w->accept_ev);
    w->accept_ev = NULL;
    free(w->accept_retry);
    w->accept_retry = NULL;
    free(w->lctx);
    w->lctx = NULL;
    w->nlisteners = 0;
}

/* Takes the connections the kernel already completed on W's listener LI before its socket
 * closes (they would be reset): they become sessions of the running generation. Bounded: a
 * flood cannot hold the worker. */
static void listener_worker_drain_backlog(struct worker *w, size_t li)
{
    int lfd = event_get_fd(w->accept_ev[li]);
    for (int i = 0; i < LISTEN_BACKLOG; i++) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        int fd = accept4(lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (accept_err_is_transient(errno))
                continue;
            return;
        }
        w->on_accept(w, li, fd, (struct sockaddr *)&peer, (int)len);
    }
}

int listener_worker_switch(struct worker *w, struct gen *next)
{
    size_t onl = w->nlisteners;
    bool *keep = calloc(onl ? onl : 1, sizeof(*keep));
    if (!keep)
        return -ENOMEM;
    for (size_t i = 0; i < next->cfg->nlisteners; i++)
        if (next->lprev[i] >= 0 && (size_t)next->lprev[i] < onl)
            keep[next->lprev[i]] = true;
    /* removed listeners: what is already in their backlog is served under the old config */
    for (size_t j = 0; !w->draining && j < onl; j++)
        if (!keep[j] && w->accept_ev[j])
            listener_worker_drain_backlog(w, j);
    struct event **oev = w->accept_ev, **oretry = w->accept_retry;
    struct listener_ctx *olctx = w->lctx;
    int rc = listener_worker_arm(w, next);
    if (rc < 0) {
        free(keep);
        return rc;
    }
    /* the old events go; a kept socket now belongs to its new event */
    struct worker old = {
        .accept_ev = oev, .accept_retry = oretry, .lctx = olctx, .nlisteners = onl};
    listener_worker_disarm(&old, keep);
    free(keep);
    return 0;
}

void listener_worker_free(struct worker *w)
{
    listener_worker_close(w);
    listener_worker_disarm(w, NULL);
}

void listener_conn_opened(const struct gen *g, size_t li, size_t fci)
{
    const struct listener_stats *ls = &g->lstats[li];
    stats_inc(ls->cx_total);
    stats_add(ls->cx_active, 1);
    stats_inc(ls->chains[fci].tcp_cx_total);
}

void listener_conn_closed(const struct gen *g, size_t li)
{
    const struct listener_stats *ls = &g->lstats[li];
    stats_add(ls->cx_active, -1);
    stats_inc(ls->cx_destroy);
}

int listener_admit(struct gen *g, size_t li, uint64_t id)
{
    const struct cfg_listener *l = &g->cfg->listeners[li];
    if (!l->max_connections)
        return 0;
    if (__atomic_add_fetch(&g->listener_active[li], 1, __ATOMIC_RELAXED) >
        (int32_t)l->max_connections) {
        __atomic_fetch_sub(&g->listener_active[li], 1, __ATOMIC_RELAXED);
        stats_inc(g->lstats[li].limit_limited);
        stats_inc(g->lstats[li].cx_overflow);
        LOGD(id, "listener %s at its connection limit (%u): connection closed", l->addr.text,
             l->max_connections);
        return -EBUSY;
    }
    stats_add(g->lstats[li].limit_active, 1);
    return 0;
}

void listener_release(struct gen *g, size_t li)
{
    if (!g->cfg->listeners[li].max_connections)
        return;
    stats_add(g->lstats[li].limit_active, -1);
    __atomic_fetch_sub(&g->listener_active[li], 1, __ATOMIC_RELAXED);
}

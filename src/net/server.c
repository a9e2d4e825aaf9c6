/* Workers, listeners, signals and the drain.
 *
 * Worker event bases are created without locks (EVENT_BASE_FLAG_NOLOCK): nothing but the
 * owning thread ever touches them. The main thread talks to workers through one eventfd each
 * (and they answer through the main thread's eventfd), so no libevent call crosses threads.
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
 * other ready events. */
#include "net/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin/admin.h"
#include "core/log.h"

#define ACCEPT_BACKOFF_MS 100
#define ACCEPT_BATCH      32 /* connections set up per listener wakeup: a few ms at worst */
#define LISTEN_BACKLOG    4096

struct listener_ctx { /* argument of a worker's accept and accept-retry callbacks */
    struct worker *w;
    size_t li;
};

static int g_main_efd = -1;

static void notify_fd(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n;
}

static void register_stats(struct server *srv)
{
    struct socktap_config *cfg = srv->cfg;
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
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const char *n = cfg->clusters[i].name;
        struct cluster_stats *cs = &srv->cstats[i];
        cs->cx_total = stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_total", n);
        cs->cx_active = stats_registerf(STAT_GAUGE, "cluster.%s.upstream_cx_active", n);
        cs->cx_connect_fail =
            stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_connect_fail", n);
        cs->cx_connect_timeout =
            stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_connect_timeout", n);
        cs->cx_tx_bytes = stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_tx_bytes_total", n);
        cs->cx_rx_bytes = stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_rx_bytes_total", n);
        cs->cx_overflow = stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_overflow", n);
        cs->cx_destroy = stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_destroy", n);
        cs->cx_connect_attempts_exceeded =
            stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_connect_attempts_exceeded", n);
        cs->cx_destroy_remote =
            stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_destroy_remote", n);
        cs->cx_destroy_local =
            stats_registerf(STAT_COUNTER, "cluster.%s.upstream_cx_destroy_local", n);
    }
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
                server_pause_accepts(w, lc->li, err);
            return;
        }
        session_accept(w, lc->li, fd, (struct sockaddr *)&peer, (int)len);
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

void server_pause_accepts(struct worker *w, size_t li, int err)
{
    static __thread time_t last_log;
    time_t now = time(NULL);
    if (!w->accept_ev[li] || evtimer_pending(w->accept_retry[li], NULL))
        return;
    if (now != last_log) {
        last_log = now;
        LOGW(0, "accept on %s: %s; pausing accepts for %d ms", w->srv->cfg->listeners[li].addr.text,
             strerror(err), ACCEPT_BACKOFF_MS);
    }
    event_del(w->accept_ev[li]);
    struct timeval tv = {.tv_sec = 0, .tv_usec = ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(w->accept_retry[li], &tv);
}

static void worker_close_listeners(struct worker *w)
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
    char ip[INET6_ADDRSTRLEN];
    if (a->ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&a->ss;
        s6->sin6_port = htons(port);
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(a->text, sizeof(a->text), "[%s]:%u", ip, port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&a->ss;
        s4->sin_port = htons(port);
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(a->text, sizeof(a->text), "%s:%u", ip, port);
    }
}

static uint16_t address_port(const struct cfg_address *a)
{
    return ntohs(a->ss.ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)&a->ss)->sin6_port
                                             : ((const struct sockaddr_in *)&a->ss)->sin_port);
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
    if (first && address_port(&l->addr) == 0) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
            goto err_close_fd;
        address_set_port(&l->addr,
                         ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                        : ((struct sockaddr_in *)&ss)->sin_port));
    }
    return fd;

err_close_fd:
    err = errno;
    close(fd);
    return -err;
}

static void worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
    if (__atomic_load_n(&w->srv->draining, __ATOMIC_ACQUIRE) && !w->draining) {
        w->draining = true;
        worker_close_listeners(w);
        LOGD(0, "draining %zu connections", w->nsessions);
    }
    if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE) && w->nsessions) {
        LOGI(0, "drain time over: closing %zu connections", w->nsessions);
        session_close_all(w);
    }
    if (w->draining && w->nsessions == 0)
        event_base_loopexit(w->base, NULL);
}

static int worker_init(struct server *srv, struct worker *w, int index)
{
    struct socktap_config *cfg = srv->cfg;
    w->index = index;
    w->srv = srv;
    w->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(index + 1) * 0xbf58476d1ce4e5b9ull);
    struct event_config *ec = event_config_new();
    if (!ec)
        return -ENOMEM;
    event_config_set_flag(ec, EVENT_BASE_FLAG_NOLOCK);
    /* coalesce epoll_ctl calls within a loop iteration (a connection's add/del churn); safe
     * because no fd we poll is ever dup()ed. Measured: 5 epoll_ctl per proxied connection
     * instead of 6, +1..5% connections/s */
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    w->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (!w->base)
        return -ENOMEM;
    size_t nl = cfg->nlisteners ? cfg->nlisteners : 1;
    w->accept_ev = calloc(nl, sizeof(*w->accept_ev));
    w->accept_retry = calloc(nl, sizeof(*w->accept_retry));
    w->lctx = calloc(nl, sizeof(*w->lctx));
    w->lb = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*w->lb));
    if (!w->accept_ev || !w->accept_retry || !w->lctx || !w->lb)
        return -ENOMEM; /* everything allocated so far is freed by server_free */
    for (size_t i = 0; i < cfg->nclusters; i++) {
        w->lb[i].rr_next = (size_t)index;
        w->lb[i].active =
            calloc(cfg->clusters[i].nhosts ? cfg->clusters[i].nhosts : 1, sizeof(uint32_t));
        if (!w->lb[i].active)
            return -ENOMEM;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        struct cfg_listener *l = &cfg->listeners[i];
        w->lctx[i].w = w;
        w->lctx[i].li = i;
        w->accept_retry[i] = evtimer_new(w->base, accept_retry_cb, &w->lctx[i]);
        if (!w->accept_retry[i])
            return -ENOMEM;
        int fd = listener_socket(l, index == 0);
        if (fd < 0) {
            LOGE(0, "listener %s cannot listen on %s: %s", l->name, l->addr.text, strerror(-fd));
            return fd;
        }
        w->accept_ev[i] = event_new(w->base, fd, EV_READ | EV_PERSIST, accept_cb, &w->lctx[i]);
        if (!w->accept_ev[i]) {
            close(fd);
            return -ENOMEM;
        }
        event_add(w->accept_ev[i], NULL);
    }
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
        return -errno;
    w->ctl_ev = event_new(w->base, efd, EV_READ | EV_PERSIST, worker_ctl_cb, w);
    if (!w->ctl_ev) {
        close(efd);
        return -ENOMEM;
    }
    event_add(w->ctl_ev, NULL);
    return 0;
}

int server_init(struct server *srv, struct socktap_config *cfg, int nworkers, unsigned drain_time_s)
{
    memset(srv, 0, sizeof(*srv));
    srv->cfg = cfg;
    srv->nworkers = nworkers;
    srv->drain_time_s = drain_time_s;
    srv->lstats = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*srv->lstats));
    srv->cstats = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*srv->cstats));
    srv->cluster_active = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(int32_t));
    srv->listener_active = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(int32_t));
    srv->workers = calloc((size_t)nworkers, sizeof(*srv->workers));
    if (!srv->lstats || !srv->cstats || !srv->cluster_active || !srv->listener_active ||
        !srv->workers)
        return -ENOMEM;
    register_stats(srv);
    int rc = admin_register_stats();
    if (rc < 0)
        return rc;
    rc = stats_freeze(nworkers);
    if (rc < 0)
        return rc;
    srv->main_base = event_base_new();
    if (!srv->main_base)
        return -ENOMEM;
    for (int i = 0; i < nworkers; i++) {
        rc = worker_init(srv, &srv->workers[i], i);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    log_set_thread_worker(w->index);
    stats_bind_thread(w->index);
    event_base_dispatch(w->base);
    notify_fd(g_main_efd);
    return NULL;
}

static void server_notify_workers(struct server *srv)
{
    for (int i = 0; i < srv->nworkers; i++)
        notify_fd(event_get_fd(srv->workers[i].ctl_ev));
}

static void drain_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    for (int i = 0; i < srv->nworkers; i++)
        __atomic_store_n(&srv->workers[i].stopping, true, __ATOMIC_RELEASE);
    server_notify_workers(srv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    if (srv->draining) {
        LOGI(0, "second signal: closing all connections now");
        drain_timer_cb(-1, 0, srv);
        return;
    }
    LOGI(0, "caught %s: draining (up to %u s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
         srv->drain_time_s);
    __atomic_store_n(&srv->draining, true, __ATOMIC_RELEASE);
    admin_set_draining(srv->admin);
    server_notify_workers(srv);
    struct timeval tv = {.tv_sec = (time_t)srv->drain_time_s};
    evtimer_add(srv->drain_timer, &tv);
}

/* SIGHUP and SIGUSR1 would kill a daemon by default (logrotate and shells send SIGHUP).
 * SIGHUP: re-open the log file (logrotate's postrotate); also what a config reload will hang
 * on, as for nginx and haproxy. SIGUSR1: nothing yet, said so. */
static void signal_other_cb(evutil_socket_t sig, short what, void *arg)
{
    if (sig != SIGHUP) {
        LOGI(0, "caught SIGUSR1: ignored (no meaning yet)");
        return;
    }
    int rc = log_reopen();
    if (rc < 0)
        LOGE(0, "caught SIGHUP: cannot re-open the log file: %s", strerror(-rc));
    else
        LOGI(0, "caught SIGHUP: %s (config reload is not supported yet)",
             rc > 0 ? "log file re-opened" : "logging to stderr, nothing to re-open");
}

static void worker_exit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    uint64_t v = 0;
    ssize_t n = read(fd, &v, sizeof(v));
    if (n == (ssize_t)sizeof(v))
        srv->workers_done += (int)v;
    if (srv->workers_done >= srv->nworkers)
        event_base_loopexit(srv->main_base, NULL);
}

int server_run(struct server *srv)
{
    int rc = 0;
    signal(SIGPIPE, SIG_IGN);
    g_main_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_main_efd < 0)
        return -errno;
    srv->worker_exit_ev =
        event_new(srv->main_base, g_main_efd, EV_READ | EV_PERSIST, worker_exit_cb, srv);
    srv->sigterm_ev = evsignal_new(srv->main_base, SIGTERM, signal_cb, srv);
    srv->sigint_ev = evsignal_new(srv->main_base, SIGINT, signal_cb, srv);
    srv->sighup_ev = evsignal_new(srv->main_base, SIGHUP, signal_other_cb, srv);
    srv->sigusr1_ev = evsignal_new(srv->main_base, SIGUSR1, signal_other_cb, srv);
    srv->drain_timer = evtimer_new(srv->main_base, drain_timer_cb, srv);
    if (!srv->worker_exit_ev || !srv->sigterm_ev || !srv->sigint_ev || !srv->sighup_ev ||
        !srv->sigusr1_ev || !srv->drain_timer)
        return -ENOMEM;
    event_add(srv->worker_exit_ev, NULL);
    event_add(srv->sigterm_ev, NULL);
    event_add(srv->sigint_ev, NULL);
    event_add(srv->sighup_ev, NULL);
    event_add(srv->sigusr1_ev, NULL);
    if (srv->cfg->admin.enabled) {
        rc = admin_start(&srv->admin, srv->main_base, &srv->cfg->admin.addr);
        if (rc < 0)
            return rc;
    }
    int started = 0;
    for (int i = 0; i < srv->nworkers; i++) {
        rc = -pthread_create(&srv->workers[i].thread, NULL, worker_main, &srv->workers[i]);
        if (rc < 0)
            break;
        started++;
    }
    if (rc == 0) {
        if (srv->cfg->nlisteners == 0)
            LOGW(0, "no listeners configured: serving nothing (%d workers)", srv->nworkers);
        for (size_t i = 0; i < srv->cfg->nlisteners; i++)
            LOGI(0, "listening on %s (%d workers)", srv->cfg->listeners[i].addr.text,
                 srv->nworkers);
        event_base_dispatch(srv->main_base);
    } else {
        __atomic_store_n(&srv->draining, true, __ATOMIC_RELEASE);
        drain_timer_cb(-1, 0, srv);
    }
    for (int i = 0; i < started; i++)
        pthread_join(srv->workers[i].thread, NULL);
    LOGI(0, "stopped");
    return rc;
}

void server_free(struct server *srv)
{
    for (int i = 0; srv->workers && i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (!w->base)
            continue;
        session_close_all(w);
        worker_close_listeners(w);
        for (size_t l = 0; w->accept_retry && l < srv->cfg->nlisteners; l++) {
            if (w->accept_retry[l])
                event_free(w->accept_retry[l]);
        }
        if (w->ctl_ev) {
            close(event_get_fd(w->ctl_ev));
            event_free(w->ctl_ev);
        }
        for (size_t c = 0; w->lb && c < srv->cfg->nclusters; c++)
            free(w->lb[c].active);
        free(w->lb);
        free(w->accept_ev);
        free(w->accept_retry);
        free(w->lctx);
        event_base_free(w->base);
    }
    admin_free(srv->admin);
    if (srv->worker_exit_ev)
        event_free(srv->worker_exit_ev);
    if (srv->sigterm_ev)
        event_free(srv->sigterm_ev);
    if (srv->sigint_ev)
        event_free(srv->sigint_ev);
    if (srv->sighup_ev)
        event_free(srv->sighup_ev);
    if (srv->sigusr1_ev)
        event_free(srv->sigusr1_ev);
    if (srv->drain_timer)
        event_free(srv->drain_timer);
    if (g_main_efd >= 0) {
        close(g_main_efd);
        g_main_efd = -1;
    }
    if (srv->main_base)
        event_base_free(srv->main_base);
    free(srv->workers);
    free(srv->lstats);
    free(srv->cstats);
    free(srv->cluster_active);
    free(srv->listener_active);
    stats_reset();
}

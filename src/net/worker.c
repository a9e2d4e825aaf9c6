/* Workers, signals and the drain. Listeners are in listener.c, the relay in session.c, host
 * selection and circuit breakers in cluster.c.
 *
 * Worker event bases are created without locks (EVENT_BASE_FLAG_NOLOCK): nothing but the
 * owning thread ever touches them. The main thread talks to workers through one eventfd each
 * (and they answer through the main thread's eventfd), so no libevent call crosses threads. */
#include "net/worker.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin/admin.h"
#include "admin/admin_live.h"
#include "admin/admin_tap.h"
#include "core/log.h"
#include "core/stats.h"
#include "net/cluster.h"
#include "net/listener.h"
#include "net/session.h"
#include "transport/ts_registry.h"

static int g_main_efd = -1;

static void notify_fd(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n;
}

static void worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
    if (__atomic_load_n(&w->srv->draining, __ATOMIC_ACQUIRE) && !w->draining) {
        w->draining = true;
        listener_worker_close(w);
        LOGD(LOG_NO_CONN, "draining %zu connections", w->nsessions);
    }
    if (__atomic_load_n(&w->stopping, __ATOMIC_ACQUIRE) && w->nsessions) {
        LOGI(LOG_NO_CONN, "drain time over: closing %zu connections", w->nsessions);
        session_close_all(w);
    }
    if (w->draining && w->nsessions == 0)
        event_base_loopexit(w->base, NULL);
}

static int worker_init(struct server *srv, struct worker *w, int index)
{
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
    int rc = cluster_worker_init(w);
    if (rc < 0)
        return rc; /* everything allocated so far is freed by server_free */
    rc = listener_worker_init(w, session_accept);
    if (rc < 0)
        return rc;
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
    srv->workers = calloc((size_t)nworkers, sizeof(*srv->workers));
    if (!srv->workers)
        return -ENOMEM;
    int rc = listener_server_init(srv);
    if (rc < 0)
        return rc;
    rc = cluster_server_init(srv);
    if (rc < 0)
        return rc;
    admin_live_register_stats();
    admin_tap_register_stats();
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
        LOGI(LOG_NO_CONN, "second signal: closing all connections now");
        drain_timer_cb(-1, 0, srv);
        return;
    }
    LOGI(LOG_NO_CONN, "caught %s: draining (up to %u s)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
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
        LOGI(LOG_NO_CONN, "caught SIGUSR1: ignored (no meaning yet)");
        return;
    }
    int rc = log_reopen();
    if (rc < 0)
        LOGE(LOG_NO_CONN, "caught SIGHUP: cannot re-open the log file: %s", strerror(-rc));
    else
        LOGI(LOG_NO_CONN, "caught SIGHUP: %s (config reload is not supported yet)",
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
    ts_registry_start(srv->main_base); /* the capture budget's timer */
    if (srv->cfg->admin.enabled) {
        struct admin_info info = {.concurrency = srv->nworkers,
                                  .config_path = srv->cfg->doc->file,
                                  .log_path = log_file_path()};
        rc = admin_start(&srv->admin, srv->main_base, srv->cfg, &info);
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
            LOGW(LOG_NO_CONN, "no listeners configured: serving nothing (%d workers)",
                 srv->nworkers);
        for (size_t i = 0; i < srv->cfg->nlisteners; i++)
            LOGI(LOG_NO_CONN, "listening on %s (%d workers)", srv->cfg->listeners[i].addr.text,
                 srv->nworkers);
        event_base_dispatch(srv->main_base);
    } else {
        __atomic_store_n(&srv->draining, true, __ATOMIC_RELEASE);
        drain_timer_cb(-1, 0, srv);
    }
    for (int i = 0; i < started; i++)
        pthread_join(srv->workers[i].thread, NULL);
    LOGI(LOG_NO_CONN, "stopped");
    return rc;
}

void server_free(struct server *srv)
{
    for (int i = 0; srv->workers && i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (!w->base)
            continue;
        session_close_all(w);
        listener_worker_free(w);
        if (w->ctl_ev) {
            close(event_get_fd(w->ctl_ev));
            event_free(w->ctl_ev);
        }
        cluster_worker_free(w);
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
    listener_server_free(srv);
    cluster_server_free(srv);
    stats_reset();
}

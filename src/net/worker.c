/* Workers, signals and the drain. Listeners are in listener.c, the relay in session.c, host
 * selection and circuit breakers in cluster.c, config generations in gen.c, reloads in
 * reload.c.
 *
 * Worker event bases are created without locks (EVENT_BASE_FLAG_NOLOCK): nothing but the
 * owning thread ever touches them. The main thread talks to workers through one eventfd each
 * (and they answer through the main thread's eventfds), so no libevent call crosses threads: a
 * reload hands a worker its new generation as an atomic pointer and a write to that eventfd;
 * the worker switches its accept events itself and answers on the main eventfd. */
#include "net/worker.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin/admin.h"
#include "admin/admin_live.h"
#include "admin/admin_tap.h"
#include "config/config.h"
#include "core/access_log.h"
#include "net/dns_refresh.h"
#include "net/health_check.h"
#include "core/log.h"
#include "core/stats.h"
#include "net/cluster.h"
#include "net/listener.h"
#include "net/session.h"
#include "transport/ts_registry.h"

static void notify_fd(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof(one));
    (void)n;
}

void server_gen_released(struct server *srv)
{
    notify_fd(srv->main_efd);
}

/* Closes W's sockets of NEXT's listeners that were bound for NEXT (not kept from W's
 * generation): W will not accept on them. */
static void worker_refuse_sockets(struct worker *w, struct gen *next)
{
    for (size_t i = 0; i < next->cfg->nlisteners; i++)
        if (next->lprev[i] < 0)
            close(next->lfd[i * (size_t)next->nworkers + (size_t)w->index]);
}

/* Moves W to NEXT (handed over with a reference for W): new connections start under it, its
 * listeners are accepted on; the old generation loses W's reference. A draining worker (a
 * SIGTERM raced the reload) has closed its listeners and stays as it is. */
static void worker_take_gen(struct worker *w, struct gen *next)
{
    struct gen *drop = next;
    if (w->draining) {
        worker_refuse_sockets(w, next);
    } else {
        int rc = listener_worker_switch(w, next);
        if (rc == 0) {
            drop = w->gen;
            w->gen = next;
        } else {
            LOGE(LOG_NO_CONN,
                 "worker %d cannot take config generation %llu: %s; it keeps serving the "
                 "previous one",
                 w->index, (unsigned long long)next->number, strerror(-rc));
            worker_refuse_sockets(w, next);
        }
    }
    if (gen_unref(drop))
        server_gen_released(w->srv);
    __atomic_add_fetch(&w->srv->reload_acks, 1, __ATOMIC_RELEASE);
    notify_fd(w->srv->main_efd);
}

static void worker_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
    struct gen *next = __atomic_exchange_n(&w->pending, NULL, __ATOMIC_ACQ_REL);
    if (next)
        worker_take_gen(w, next);
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

/* A helper thread (the capture writer) made room for sessions a transport layer holds. */
static void worker_room_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
    (void)what;
    session_resume_held(arg);
}

/* *OUT: a persistent READ event on a new eventfd of W's base, calling CB (freed, with its fd,
 * by server_free). */
static int worker_efd_event(struct worker *w, event_callback_fn cb, struct event **out)
{
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0)
        return -errno;
    *out = event_new(w->base, efd, EV_READ | EV_PERSIST, cb, w);
    if (!*out) {
        close(efd);
        return -ENOMEM;
    }
    event_add(*out, NULL);
    return 0;
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
    w->gen = srv->gen;
    gen_ref(w->gen); /* dropped by worker_take_gen or server_free */
    int rc = listener_worker_init(w, session_accept);
    if (rc < 0)
        return rc; /* everything allocated so far is freed by server_free */
    if ((rc = worker_efd_event(w, worker_ctl_cb, &w->ctl_ev)) < 0)
        return rc;
    return worker_efd_event(w, worker_room_cb, &w->room_ev);
}

int server_init(struct server *srv, struct socktap_config *cfg, int nworkers, unsigned drain_time_s)
{
    memset(srv, 0, sizeof(*srv));
    srv->main_efd = -1;
    srv->nworkers = nworkers;
    srv->drain_time_s = drain_time_s;
    srv->config_path = strdup(cfg->doc->file);
    srv->workers = calloc((size_t)nworkers, sizeof(*srv->workers));
    int rc = srv->config_path && srv->workers ? gen_new(cfg, 1, nworkers, &srv->gen) : -ENOMEM;
    if (rc < 0) {
        config_free(cfg); /* ours from the call on (the contract above) */
        return rc;
    }
    char why[300];
    rc = listener_gen_bind(srv->gen, NULL, why, sizeof(why));
    if (rc < 0) {
        LOGE(LOG_NO_CONN, "%s", why);
        return rc;
    }
    admin_live_register_stats();
    admin_tap_register_stats();
    srv->st_reloads = stats_register("server.reloads", STAT_COUNTER);
    srv->st_reload_failed = stats_register("server.reload_failed", STAT_COUNTER);
    srv->st_generation = stats_register("server.config_generation", STAT_GAUGE);
    srv->st_generations_active = stats_register("server.config_generations_active", STAT_GAUGE);
    rc = stats_freeze(nworkers);
    if (rc < 0)
        return rc;
    stats_add(srv->st_generation, 1);
    stats_add(srv->st_generations_active, 1);
    srv->reload_status.generation = 1;
    srv->main_base = event_base_new();
    if (!srv->main_base)
        return -ENOMEM;
    /* from here each worker's accept events own its sockets (a worker that fails to arm one
     * closes it) */
    srv->gen->handed = true;
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
    char name[16]; /* `top -H`, `ps -L`, perf: which worker is busy */
    snprintf(name, sizeof(name), "socktap-w%d", w->index);
    pthread_setname_np(pthread_self(), name);
    log_set_thread_worker(w->index);
    stats_bind_thread(w->index);
    ts_registry_set_waker(event_get_fd(w->room_ev));
    event_base_dispatch(w->base);
    ts_registry_set_waker(-1);
    __atomic_add_fetch(&w->srv->workers_done, 1, __ATOMIC_RELEASE);
    notify_fd(w->srv->main_efd);
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
 * SIGHUP: re-open the log file (logrotate's postrotate), first, so the reload's lines land in
 * the new file; then reload the config, as nginx and haproxy do. A SIGHUP while the workers are
 * still taking the previous reload is queued (one reload then, however many came). SIGUSR1:
 * nothing yet, said so. */
static void signal_other_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *srv = arg;
    if (sig != SIGHUP) {
        LOGI(LOG_NO_CONN, "caught SIGUSR1: ignored (no meaning yet)");
        return;
    }
    access_log_reopen(); /* its files too, by path, before their next line */
    int rc = log_reopen();
    if (rc < 0)
        LOGE(LOG_NO_CONN, "caught SIGHUP: cannot re-open the log file: %s", strerror(-rc));
    else
        LOGI(LOG_NO_CONN, "caught SIGHUP: %s; reloading the config",
             rc > 0 ? "log file re-opened" : "logging to stderr, nothing to re-open");
    if (srv->reload_in_flight && !srv->draining) {
        srv->reload_queued = true;
        LOGI(LOG_NO_CONN, "config reload queued: the workers are still taking the previous one");
        return;
    }
    char msg[1024];
    (void)server_reload(srv, "SIGHUP", msg, sizeof(msg));
}

/* Frees the retired generations nobody uses any more and whose captures the writer is through;
 * looks again shortly while one waits for the writer. */
static void server_retire_scan(struct server *srv)
{
    bool waiting = false;
    struct gen **pp = &srv->retired;
    while (*pp) {
        struct gen *g = *pp;
        if (gen_retired_ready(g)) {
            *pp = g->retired_next;
            LOGD(LOG_NO_CONN, "config generation %llu freed: no connection uses it any more",
                 (unsigned long long)g->number);
            gen_free(g);
            stats_add(srv->st_generations_active, -1);
            continue;
        }
        waiting |= g->fenced;
        pp = &g->retired_next;
    }
    static const struct timeval tv = {.tv_sec = 0, .tv_usec = 20 * 1000};
    if (waiting && !evtimer_pending(srv->retire_timer, NULL))
        evtimer_add(srv->retire_timer, &tv);
}

static void retire_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    server_retire_scan(arg);
}

/* The workers' one way to the main thread (one eventfd: what happened is in the counts they
 * update before writing it): a worker stopped, took a reloaded generation, or released the
 * last reference of a retired one. */
static void main_ctl_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    uint64_t v;
    ssize_t n = read(fd, &v, sizeof(v));
    (void)n;
    if (srv->reload_in_flight &&
        __atomic_load_n(&srv->reload_acks, __ATOMIC_ACQUIRE) >= srv->nworkers)
        server_reload_applied(srv);
    dns_refresh_poll(srv);
    server_retire_scan(srv);
    if (__atomic_load_n(&srv->workers_done, __ATOMIC_ACQUIRE) >= srv->nworkers)
        event_base_loopexit(srv->main_base, NULL);
}

/* The admin's /clusters health_flags: the running generation's, whose config the admin serves. */
static const char *server_host_health(void *arg, size_t ci, size_t h)
{
    const struct server *srv = arg;
    return health_check_flags(srv->gen, ci, h);
}

int server_run(struct server *srv)
{
    int rc = 0;
    signal(SIGPIPE, SIG_IGN);
    srv->main_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (srv->main_efd < 0)
        return -errno;
    srv->main_ctl_ev =
        event_new(srv->main_base, srv->main_efd, EV_READ | EV_PERSIST, main_ctl_cb, srv);
    srv->sigterm_ev = evsignal_new(srv->main_base, SIGTERM, signal_cb, srv);
    srv->sigint_ev = evsignal_new(srv->main_base, SIGINT, signal_cb, srv);
    srv->sighup_ev = evsignal_new(srv->main_base, SIGHUP, signal_other_cb, srv);
    srv->sigusr1_ev = evsignal_new(srv->main_base, SIGUSR1, signal_other_cb, srv);
    srv->drain_timer = evtimer_new(srv->main_base, drain_timer_cb, srv);
    srv->retire_timer = evtimer_new(srv->main_base, retire_timer_cb, srv);
    if (!srv->main_ctl_ev || !srv->sigterm_ev || !srv->sigint_ev || !srv->sighup_ev ||
        !srv->sigusr1_ev || !srv->drain_timer || !srv->retire_timer)
        return -ENOMEM;
    event_add(srv->main_ctl_ev, NULL);
    event_add(srv->sigterm_ev, NULL);
    event_add(srv->sigint_ev, NULL);
    event_add(srv->sighup_ev, NULL);
    event_add(srv->sigusr1_ev, NULL);
    ts_registry_start(srv->main_base); /* the capture budget's timer */
    rc = health_check_start(srv->gen, srv->main_base);
    if (rc < 0)
        return rc;
    dns_refresh_rearm(srv);
    /* always: a reload may add access logs; an idle writer is a thread asleep on a condvar */
    rc = access_log_start();
    if (rc < 0)
        LOGE(LOG_NO_CONN, "access log writer failed to start: %s (access log lines are dropped)",
             strerror(-rc));
    rc = 0;
    const struct socktap_config *cfg = srv->gen->cfg;
    if (cfg->admin.enabled) {
        struct admin_info info = {.concurrency = srv->nworkers,
                                  .config_path = srv->config_path,
                                  .log_path = log_file_path(),
                                  .reload = server_reload_admin,
                                  .reload_arg = srv,
                                  .reload_status = &srv->reload_status,
                                  .host_health = server_host_health,
                                  .host_health_arg = srv};
        rc = admin_start(&srv->admin, srv->main_base, cfg, &info);
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
        if (cfg->nlisteners == 0)
            LOGW(LOG_NO_CONN, "no listeners configured: serving nothing (%d workers)",
                 srv->nworkers);
        for (size_t i = 0; i < cfg->nlisteners; i++)
            LOGI(LOG_NO_CONN, "listening on %s (%d workers)", cfg->listeners[i].addr.text,
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
    /* first: its helper thread writes to main_efd, closed below */
    dns_refresh_stop(srv);
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
        /* after ts_registry_shutdown (main): no helper thread writes to it any more */
        if (w->room_ev) {
            close(event_get_fd(w->room_ev));
            event_free(w->room_ev);
        }
        event_base_free(w->base);
        /* a generation handed over and never taken (the worker stopped first); the
         * references need no dropping: every generation is freed below */
        struct gen *pending = __atomic_exchange_n(&w->pending, NULL, __ATOMIC_ACQ_REL);
        if (pending)
            worker_refuse_sockets(w, pending);
    }
    /* after the last session (each writes its access log line as it is freed) and before the
     * stats it counts into are freed */
    access_log_stop();
    admin_free(srv->admin);
    if (srv->main_ctl_ev)
        event_free(srv->main_ctl_ev);
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
    if (srv->retire_timer)
        event_free(srv->retire_timer);
    if (srv->main_efd >= 0) {
        close(srv->main_efd);
        srv->main_efd = -1;
    }
    if (srv->gen)
        health_check_stop(srv->gen); /* its events live on main_base */
    if (srv->main_base)
        event_base_free(srv->main_base);
    free(srv->workers);
    /* the sessions and workers are gone and the capture writer stopped (ts_registry_shutdown):
     * every generation goes, whatever its count says */
    while (srv->retired) {
        struct gen *g = srv->retired;
        srv->retired = g->retired_next;
        gen_free(g);
    }
    gen_free(srv->gen);
    srv->gen = NULL;
    free(srv->config_path);
    srv->config_path = NULL;
    stats_reset();
}

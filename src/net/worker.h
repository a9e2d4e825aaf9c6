/* The runtime: a main thread (signals, admin, drain timer) and N workers, each with its own
 * event_base, its own SO_REUSEPORT listener socket per configured listener (shared with the other
 * workers of this process only: see listener.c), and the sessions it accepted. Nothing is shared
 * between workers on the hot path except the connection-id counter (one atomic add per accepted
 * connection) and the per-cluster circuit-breaker gauge. */
#ifndef SOCKTAP_NET_WORKER_H
#define SOCKTAP_NET_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct event_base;
struct event;
struct session;
struct listener_ctx;
struct listener_stats;
struct cluster_stats;
struct lb_state;

/* One worker thread. Its parts are owned by the file that keeps them: the accept events by
 * listener.c (listener_worker_init/_free), the LB state by cluster.c (cluster_worker_init/_free),
 * the session list by session.c; worker.c owns the thread, the base and the control eventfd. */
struct worker {
    int index;
    pthread_t thread;
    struct server *srv;
    struct event_base *base;
    struct event **accept_ev;    /* one per cfg listener: READ on this worker's socket for it;
                                    NULL once closed (drain). The event owns nothing: the
                                    socket is closed by listener_worker_close */
    struct event **accept_retry; /* EMFILE back-off timers, one per listener */
    struct listener_ctx *lctx;   /* callback args of both, one per listener (owned) */
    struct event *ctl_ev;        /* wakes the worker for drain/stop commands */
    struct lb_state *lb;         /* one per cluster */
    struct session *sessions;    /* intrusive list of live sessions */
    size_t nsessions;
    bool draining, stopping;
    uint64_t rng;
};

/* The process's runtime. The per-listener arrays are owned by listener.c
 * (listener_server_init/_free), the per-cluster ones by cluster.c (cluster_server_init/_free). */
struct server {
    struct socktap_config *cfg;
    int nworkers;
    struct worker *workers;
    struct event_base *main_base;
    struct listener_stats *lstats; /* one per listener */
    struct cluster_stats *cstats;  /* one per cluster */
    int32_t *cluster_active;       /* circuit breakers: live upstream connections per cluster */
    int32_t *listener_active;      /* connection_limit: live downstream connections per listener */
    unsigned drain_time_s;
    int workers_done; /* main thread only */
    struct event *drain_timer, *sigterm_ev, *sigint_ev, *sighup_ev, *sigusr1_ev, *worker_exit_ev;
    struct admin *admin;
    bool draining;
};

/* Builds the runtime for CFG (borrowed: must outlive the server). Registers stats, binds every
 * listener in every worker (errors: -errno with a message logged naming the address). */
int server_init(struct server *srv, struct socktap_config *cfg, int nworkers,
                unsigned drain_time_s);
/* Runs until SIGTERM/SIGINT + drain. Returns 0 on a clean stop. SIGHUP re-opens the log file
 * (log_reopen) and is reserved for a config reload; SIGUSR1 is logged and ignored. */
int server_run(struct server *srv);
void server_free(struct server *srv);

#endif

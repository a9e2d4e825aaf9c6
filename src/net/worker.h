/* The runtime: a main thread (signals, admin, drain timer) and N workers, each with its own
 * event_base, its own SO_REUSEPORT listener socket per configured listener (shared with the other
 * workers of this process only: see worker.c), and the sessions it accepted. Nothing is shared
 * between workers on the hot path except the connection-id counter (one atomic add per accepted
 * connection) and the per-cluster circuit-breaker gauge. */
#ifndef SOCKTAP_NET_WORKER_H
#define SOCKTAP_NET_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/stats.h"

struct event_base;
struct event;
struct session;

struct listener_stats {
    stat_id cx_total, cx_active, cx_destroy, cx_overflow, cx_ts_connect_timeout;
    stat_id tcp_cx_total, tcp_rx_bytes, tcp_tx_bytes, tcp_idle_timeout, tcp_no_route;
    /* connection_limit.<stat_prefix>.*: registered only when the filter is configured */
    stat_id limit_limited, limit_active;
};

struct cluster_stats {
    stat_id cx_total, cx_active, cx_connect_fail, cx_connect_timeout, cx_tx_bytes, cx_rx_bytes,
        cx_overflow, cx_destroy, cx_destroy_remote, cx_destroy_local, cx_connect_attempts_exceeded;
};

/* Per-worker, per-cluster load-balancer state (no locks: owned by one worker). */
struct lb_state {
    size_t rr_next;
    uint32_t *active; /* active connections per host, this worker */
};

struct worker {
    int index;
    pthread_t thread;
    struct server *srv;
    struct event_base *base;
    struct event **accept_ev;    /* one per cfg listener: READ on this worker's socket for it;
                                    NULL once closed (drain). The event owns nothing: the
                                    socket is closed by worker_close_listeners */
    struct event **accept_retry; /* EMFILE back-off timers, one per listener */
    struct listener_ctx *lctx;   /* callback args of both, one per listener (owned) */
    struct event *ctl_ev;        /* wakes the worker for drain/stop commands */
    struct lb_state *lb;         /* one per cluster */
    struct session *sessions;    /* intrusive list of live sessions */
    size_t nsessions;
    bool draining, stopping;
    uint64_t rng;
};

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

/* Session entry point (session.c): takes ownership of FD accepted on listener LI. */
void session_accept(struct worker *w, size_t li, int fd, const struct sockaddr *peer, int peer_len);
/* Closes every session of W (forced stop at the end of the drain). */
void session_close_all(struct worker *w);

/* Stops accepting on W's listener LI for a short back-off (descriptors exhausted: ERR is the
 * errno, logged at most once a second per worker). No-op when already paused. */
void server_pause_accepts(struct worker *w, size_t li, int err);

/* Host selection (cluster.c): returns the host index for cluster CI on worker W. */
size_t cluster_pick_host(struct worker *w, size_t ci);

#endif

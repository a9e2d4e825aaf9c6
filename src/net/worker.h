/* The runtime: a main thread (signals, admin, drain timer, config reloads) and N workers, each
 * with its own event_base, its own SO_REUSEPORT listener socket per configured listener (shared
 * with the other workers of this process only: see listener.c), and the sessions it accepted.
 * Nothing is shared between workers on the hot path except the connection-id counter (one atomic
 * add per accepted connection), the per-cluster circuit-breaker gauge and the reference count of
 * the config generation (gen.h) a connection starts under. */
#ifndef SOCKTAP_NET_WORKER_H
#define SOCKTAP_NET_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "admin/admin.h"
#include "config/config.h"
#include "core/stats.h"
#include "net/gen.h"

struct event_base;
struct sockaddr;
struct event;
struct session;
struct listener_ctx;

/* One worker thread. Its parts are owned by the file that keeps them: the accept events by
 * listener.c (listener_worker_init/_switch/_free), the session list by session.c; worker.c owns
 * the thread, the base and the control eventfd. */
struct worker {
    int index;
    pthread_t thread;
    struct server *srv;
    struct event_base *base;
    /* the generation new connections start under (a reference; worker thread only once it
     * runs): its listeners are the ones accept_ev serves, its LB state row is this worker's */
    struct gen *gen;
    /* atomic: a newer generation the main thread handed over (with a reference for this
     * worker), taken by the control callback; NULL when none */
    struct gen *pending;
    struct event **accept_ev;    /* one per gen listener: READ on this worker's socket for it;
                                    NULL once closed (drain). The event owns nothing: the
                                    socket is closed by listener_worker_close */
    struct event **accept_retry; /* EMFILE back-off timers, one per listener */
    struct listener_ctx *lctx;   /* callback args of both, one per listener (owned) */
    size_t nlisteners;           /* of the three arrays */
    void (*on_accept)(struct worker *w, size_t li, int fd, const struct sockaddr *peer,
                      int peer_len); /* listener_accept_fn */
    struct event *ctl_ev;            /* wakes the worker for drain/stop/reload commands */
    struct session *sessions;        /* intrusive list of live sessions */
    struct session *held;            /* those a transport layer holds back (session.c) */
    struct event *room_ev; /* READ on an eventfd a layer's helper thread writes when a held
                              session may move again (ts_registry_set_waker) */
    size_t nsessions;
    bool draining, stopping;
    uint64_t rng;
};

/* The process's runtime. The per-listener and per-cluster state lives in the config generation
 * (gen.h); reloads are net/reload.c's. */
struct server {
    struct gen *gen;     /* the running generation (main thread; one reference) */
    struct gen *retired; /* replaced generations, freed once unused (main thread) */
    char *config_path;   /* owned: what a reload re-reads */
    int nworkers;
    struct worker *workers;
    struct event_base *main_base;
    int main_efd;               /* workers -> main: stopped, took a reload, released a generation */
    struct event *main_ctl_ev;  /* reads main_efd */
    struct event *retire_timer; /* a released generation waits for the capture writer */
    int reload_acks;            /* atomic: workers that took the generation handed last */
    bool reload_in_flight;      /* handed over, not yet taken by every worker */
    bool reload_queued;         /* a SIGHUP came meanwhile: reload once it is */
    struct admin_reload_status reload_status;
    /* server.reloads, server.reload_failed, server.config_generation (gauge: the running one's
     * number), server.config_generations_active (gauge: generations in memory, the running one
     * and the retired ones some connection still uses) */
    stat_id st_reloads, st_reload_failed, st_generation, st_generations_active;
    unsigned drain_time_s;
    int workers_done; /* atomic: workers whose loop ended */
    struct event *drain_timer, *sigterm_ev, *sigint_ev, *sighup_ev, *sigusr1_ev;
    struct admin *admin;
    bool draining;
    struct dns_refresh *dns; /* dns_refresh.c: STRICT_DNS re-resolution (main thread) */
};

/* Builds the runtime for CFG, loaded from CFG->doc->file (the file a reload re-reads). The
 * server owns CFG from this call on, even when it fails (server_free frees it). Registers stats,
 * binds every listener in every worker (errors: -errno with a message logged naming the
 * address). */
int server_init(struct server *srv, struct socktap_config *cfg, int nworkers,
                unsigned drain_time_s);
/* Runs until SIGTERM/SIGINT + drain. Returns 0 on a clean stop. SIGHUP re-opens the log file
 * (log_reopen), then reloads the config (server_reload); SIGUSR1 is logged and ignored. */
int server_run(struct server *srv);
/* After server_run and ts_registry_shutdown: frees everything, every config generation too. */
void server_free(struct server *srv);

/* A worker dropped the last reference of a generation: the main thread looks at the retired
 * ones. Any thread. */
void server_gen_released(struct server *srv);

/* The same with CFG (owned from this call on, freed on failure) instead of the file: a DNS
 * refresh's re-resolved copy of the running config (net/dns_refresh.c). */
int server_reload_config(struct server *srv, const char *origin, struct socktap_config *cfg,
                         char *msg, size_t msg_size);

/* net/reload.c. Re-reads the config file and, when it is valid and its listeners bind, makes it
 * the running config for new connections (open ones keep theirs). Main thread. ORIGIN ("SIGHUP",
 * "admin") is for the log. Returns 0 with a summary in MSG, or -errno with why in MSG (MSG_SIZE
 * bytes): -EINVAL a config error (file:line:col), -EBUSY the previous reload is still being
 * taken by the workers, -ESHUTDOWN draining. Counted and logged either way. */
int server_reload(struct server *srv, const char *origin, char *msg, size_t msg_size);
/* server_reload for the admin's POST /reload (admin_reload_fn; ARG is the server). */
int server_reload_admin(void *arg, char *msg, size_t msg_size);
/* The main thread's side of the hand-over: every worker took the last generation. */
void server_reload_applied(struct server *srv);

#endif

/* Config generations: one loaded config and everything the runtime derived from it (stats ids,
 * circuit-breaker and connection_limit counts, per-worker LB state, listen sockets), shared by
 * the workers and by every session started under it, freed once the last of them lets go. A
 * reload makes a new generation beside the running one and swaps (net/reload.c). */
#ifndef SOCKTAP_NET_GEN_H
#define SOCKTAP_NET_GEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config/config.h"
#include "transport/ts_registry.h"

struct listener_stats;
struct cluster_stats;
struct lb_state;

struct gen {
    struct socktap_config *cfg; /* owned: freed with the generation */
    uint64_t number;            /* 1: the config socktap started with; +1 per applied reload */
    int nworkers;
    /* atomic: the server's one while current, one per worker that runs it, one per session
     * started under it. Whoever drops the last hands it to the main thread (gen_unref). */
    int refs;
    struct listener_stats *lstats; /* per listener (listener.c) */
    int32_t *listener_active;      /* per listener: connection_limit count, process-wide */
    struct cluster_stats *cstats;  /* per cluster (cluster.c) */
    int32_t *cluster_active;       /* per cluster: circuit breaker count, process-wide */
    struct lb_state **lb;          /* [worker][cluster]: each row touched by its worker only */
    /* [cluster][host]: 1 healthy, 0 failed its active health check (atomic bytes: written by
     * the main thread's checker, read by the workers' LB); a row is NULL for a cluster without
     * health_checks (every host healthy) */
    uint8_t **healthy;
    struct hc_gen *hc; /* the checker's state (health_check.c), main thread only */
    /* [listener * nworkers + worker]: the listen sockets. Owned by the generation until the
     * workers take them (handed), then by each worker's accept event. */
    int *lfd;
    /* per listener: the index in the previous generation whose sockets it kept, or -1 (bound
     * anew). A worker closes the previous generation's listeners nobody kept. */
    ssize_t *lprev;
    bool handed;
    struct gen *retired_next; /* main thread: the list of generations waiting to be freed */
    struct ts_fence fence;    /* taken when refs reached 0 (see gen_retired_ready) */
    bool fenced;
};

/* Makes generation NUMBER of CFG for NWORKERS workers: registers its stats and allocates its
 * counts and LB state, with no listen sockets yet (listener_gen_bind). Main thread. On success
 * *OUT owns CFG and has one reference (the caller's); on failure CFG stays the caller's.
 * Returns 0 or -ENOMEM. */
int gen_new(struct socktap_config *cfg, uint64_t number, int nworkers, struct gen **out)
    __attribute__((warn_unused_result, nonnull));
/* Any thread. */
void gen_ref(struct gen *g);
/* Drops a reference; returns true when it was the last, and then the caller must tell the main
 * thread (server_gen_released) that a retired generation may be freed. Any thread. */
bool gen_unref(struct gen *g) __attribute__((warn_unused_result));
/* True once G (retired, refs 0) may be freed: the capture writer is through everything its
 * sockets queued. The first call takes the fence. Main thread. */
bool gen_retired_ready(struct gen *g);
/* Frees G, its config and the listen sockets it still owns (not handed over). G may be NULL. */
void gen_free(struct gen *g);

#endif

/* Clusters: per-worker load-balancer state and host selection, the circuit breaker
 * (max_connections, a process-wide count taken with add-then-check) and the cluster's stats. */
#ifndef SOCKTAP_NET_CLUSTER_H
#define SOCKTAP_NET_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/stats.h"
#include "net/gen.h"
#include "net/worker.h"

struct cluster_stats {
    stat_id cx_total, cx_active, cx_connect_fail, cx_connect_timeout, cx_tx_bytes, cx_rx_bytes,
        cx_overflow, cx_destroy, cx_destroy_remote, cx_destroy_local, cx_connect_attempts_exceeded,
        lb_healthy_panic;
};

/* Per-worker, per-cluster load-balancer state of one generation (no locks: one worker's). */
struct lb_state {
    size_t rr_next;
    uint32_t *active; /* active connections per host, this worker */
};

/* Allocates generation G's per-cluster stats, circuit-breaker counts and every worker's LB
 * state, and registers the stats. Main thread. Returns 0 or -ENOMEM; what was allocated is
 * freed by cluster_gen_free. */
int cluster_gen_init(struct gen *g);
void cluster_gen_free(struct gen *g);

/* Circuit breaker: takes one of G's cluster CI's max_connections for connection ID (logged
 * with it) and counts it in upstream_cx_active. Returns 0, or -EBUSY when the cluster is full
 * (counted as upstream_cx_overflow). After 0 the caller owes cluster_release with the same G. */
int cluster_admit(struct gen *g, size_t ci, uint64_t id);
void cluster_release(struct gen *g, size_t ci);

/* The cluster of G a new connection of tcp_proxy TP (its filter chain's) goes to: TP's cluster, or
 * one of its weighted_clusters drawn by weight. On W's thread. */
size_t cluster_route(struct worker *w, const struct gen *g, const struct cfg_tcp_proxy *tp);

/* Picks a host of G's cluster CI by its LB policy and counts it active in W's LB state of G
 * (LEAST_REQUEST reads these counts). On W's thread. Returns its index; the caller owes
 * cluster_host_release with the same W and G. */
size_t cluster_pick_host(struct worker *w, struct gen *g, size_t ci);
/* Releases LAST and picks another host than LAST when the cluster has one (a connect retry).
 * Returns the new host, counted as cluster_pick_host's. */
size_t cluster_repick_host(struct worker *w, struct gen *g, size_t ci, size_t last);
void cluster_host_release(struct worker *w, struct gen *g, size_t ci, size_t host);

static inline const struct cfg_cluster *cluster_config(const struct gen *g, size_t ci)
{
    return &g->cfg->clusters[ci];
}

static inline const struct cluster_stats *cluster_stats(const struct gen *g, size_t ci)
{
    return &g->cstats[ci];
}

/* The address of HOST of G's cluster CI (borrowed from G's config), and its text for logs. */
static inline const struct cfg_address *cluster_host_addr(const struct gen *g, size_t ci,
                                                          size_t host)
{
    return &g->cfg->clusters[ci].hosts[host];
}

static inline const char *cluster_host_name(const struct gen *g, size_t ci, size_t host)
{
    return cluster_host_addr(g, ci, host)->text;
}

#endif

/* Clusters: per-worker load-balancer state and host selection, the circuit breaker
 * (max_connections, a process-wide count taken with add-then-check) and the cluster's stats. */
#ifndef SOCKTAP_NET_CLUSTER_H
#define SOCKTAP_NET_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/stats.h"
#include "net/worker.h"

struct cluster_stats {
    stat_id cx_total, cx_active, cx_connect_fail, cx_connect_timeout, cx_tx_bytes, cx_rx_bytes,
        cx_overflow, cx_destroy, cx_destroy_remote, cx_destroy_local, cx_connect_attempts_exceeded;
};

/* Per-worker, per-cluster load-balancer state (no locks: owned by one worker). */
struct lb_state {
    size_t rr_next;
    uint32_t *active; /* active connections per host, this worker */
};

/* Allocates SRV's per-cluster stats and circuit-breaker counts and registers the stats (before
 * stats_freeze). Returns 0 or -ENOMEM; what was allocated is freed by cluster_server_free. */
int cluster_server_init(struct server *srv);
void cluster_server_free(struct server *srv);

/* Allocates W's LB state (w->lb). Returns 0 or -ENOMEM; freed by cluster_worker_free. */
int cluster_worker_init(struct worker *w);
void cluster_worker_free(struct worker *w);

/* Circuit breaker: takes one of cluster CI's max_connections for connection ID (logged with
 * it) and counts it in upstream_cx_active. Returns 0, or -EBUSY when the cluster is full
 * (counted as upstream_cx_overflow). After 0 the caller owes cluster_release. */
int cluster_admit(struct worker *w, size_t ci, uint64_t id);
void cluster_release(struct worker *w, size_t ci);

/* Picks a host of cluster CI by its LB policy and counts it active on W (LEAST_REQUEST reads
 * these counts). Returns its index; the caller owes cluster_host_release. */
size_t cluster_pick_host(struct worker *w, size_t ci);
/* Releases LAST and picks another host than LAST when the cluster has one (a connect retry).
 * Returns the new host, counted as cluster_pick_host's. */
size_t cluster_repick_host(struct worker *w, size_t ci, size_t last);
void cluster_host_release(struct worker *w, size_t ci, size_t host);

static inline const struct cfg_cluster *cluster_config(const struct worker *w, size_t ci)
{
    return &w->srv->cfg->clusters[ci];
}

static inline const struct cluster_stats *cluster_stats(const struct worker *w, size_t ci)
{
    return &w->srv->cstats[ci];
}

/* The address of HOST of cluster CI (borrowed from the config), and its text for logs. */
static inline const struct cfg_address *cluster_host_addr(const struct worker *w, size_t ci,
                                                          size_t host)
{
    return &w->srv->cfg->clusters[ci].hosts[host];
}

static inline const char *cluster_host_name(const struct worker *w, size_t ci, size_t host)
{
    return cluster_host_addr(w, ci, host)->text;
}

#endif

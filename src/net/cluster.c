/* Host selection. State is per worker (struct lb_state), so picking takes no lock:
 * ROUND_ROBIN walks the host list from a per-worker offset, RANDOM draws from a per-worker
 * xorshift, LEAST_REQUEST is Envoy's power-of-two-choices over this worker's active counts.
 *
 * The circuit breaker (max_connections) is the one count shared between workers: a process-wide
 * atomic taken with add-then-check, so concurrent workers can never overshoot the limit. */
#include "net/cluster.h"

#include <errno.h>
#include <stdlib.h>

#include "core/log.h"

int cluster_server_init(struct server *srv)
{
    struct socktap_config *cfg = srv->cfg;
    srv->cstats = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*srv->cstats));
    srv->cluster_active = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(int32_t));
    if (!srv->cstats || !srv->cluster_active)
        return -ENOMEM;
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
    return 0;
}

void cluster_server_free(struct server *srv)
{
    free(srv->cstats);
    srv->cstats = NULL;
    free(srv->cluster_active);
    srv->cluster_active = NULL;
}

int cluster_worker_init(struct worker *w)
{
    const struct socktap_config *cfg = w->srv->cfg;
    w->lb = calloc(cfg->nclusters ? cfg->nclusters : 1, sizeof(*w->lb));
    if (!w->lb)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        w->lb[i].rr_next = (size_t)w->index;
        w->lb[i].active =
            calloc(cfg->clusters[i].nhosts ? cfg->clusters[i].nhosts : 1, sizeof(uint32_t));
        if (!w->lb[i].active)
            return -ENOMEM;
    }
    return 0;
}

void cluster_worker_free(struct worker *w)
{
    for (size_t c = 0; w->lb && c < w->srv->cfg->nclusters; c++)
        free(w->lb[c].active);
    free(w->lb);
    w->lb = NULL;
}

int cluster_admit(struct worker *w, size_t ci, uint64_t id)
{
    struct server *srv = w->srv;
    const struct cfg_cluster *cl = &srv->cfg->clusters[ci];
    if (__atomic_add_fetch(&srv->cluster_active[ci], 1, __ATOMIC_RELAXED) >
            (int32_t)cl->max_connections &&
        cl->max_connections) {
        __atomic_fetch_sub(&srv->cluster_active[ci], 1, __ATOMIC_RELAXED);
        stats_inc(srv->cstats[ci].cx_overflow);
        LOGD(id, "cluster %s overflow (max_connections %u): connection closed", cl->name,
             cl->max_connections);
        return -EBUSY;
    }
    stats_add(srv->cstats[ci].cx_active, 1);
    return 0;
}

void cluster_release(struct worker *w, size_t ci)
{
    stats_add(w->srv->cstats[ci].cx_active, -1);
    __atomic_fetch_sub(&w->srv->cluster_active[ci], 1, __ATOMIC_RELAXED);
}

static uint64_t lb_rand(struct worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w->rng = x;
    return x;
}

static size_t lb_choose(struct worker *w, size_t ci)
{
    const struct cfg_cluster *cl = &w->srv->cfg->clusters[ci];
    struct lb_state *lb = &w->lb[ci];
    size_t n = cl->nhosts;
    if (n <= 1)
        return 0;
    switch (cl->lb_policy) {
    case CFG_LB_RANDOM:
        return (size_t)(lb_rand(w) % n);
    case CFG_LB_LEAST_REQUEST: {
        size_t a = (size_t)(lb_rand(w) % n);
        size_t b = (size_t)(lb_rand(w) % n);
        return lb->active[b] < lb->active[a] ? b : a;
    }
    case CFG_LB_ROUND_ROBIN:
    default:
        return lb->rr_next++ % n;
    }
}

size_t cluster_pick_host(struct worker *w, size_t ci)
{
    size_t host = lb_choose(w, ci);
    w->lb[ci].active[host]++;
    return host;
}

size_t cluster_repick_host(struct worker *w, size_t ci, size_t last)
{
    size_t n = w->srv->cfg->clusters[ci].nhosts;
    cluster_host_release(w, ci, last); /* before choosing: LEAST_REQUEST reads the counts */
    size_t host = lb_choose(w, ci);
    if (host == last && n > 1)
        host = (last + 1) % n;
    w->lb[ci].active[host]++;
    return host;
}

void cluster_host_release(struct worker *w, size_t ci, size_t host)
{
    w->lb[ci].active[host]--;
}

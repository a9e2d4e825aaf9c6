/* Host selection. State is per worker and per config generation (struct lb_state, in the
 * generation: a session started before a reload gives its host count back to the state it took
 * it from, whose host list it indexes), so picking takes no lock:
 * ROUND_ROBIN walks the host list from a per-worker offset, RANDOM draws from a per-worker
 * xorshift, LEAST_REQUEST is Envoy's power-of-two-choices over this worker's active counts.
 *
 * The circuit breaker (max_connections) is the one count shared between workers: a process-wide
 * atomic taken with add-then-check, so concurrent workers can never overshoot the limit. */
#include "net/cluster.h"

#include <errno.h>
#include <stdlib.h>

#include "core/log.h"

int cluster_gen_init(struct gen *g)
{
    const struct socktap_config *cfg = g->cfg;
    size_t nc = cfg->nclusters ? cfg->nclusters : 1;
    g->cstats = calloc(nc, sizeof(*g->cstats));
    g->cluster_active = calloc(nc, sizeof(int32_t));
    g->lb = calloc((size_t)g->nworkers, sizeof(*g->lb));
    if (!g->cstats || !g->cluster_active || !g->lb)
        return -ENOMEM;
    for (size_t i = 0; i < cfg->nclusters; i++) {
        const char *n = cfg->clusters[i].name;
        struct cluster_stats *cs = &g->cstats[i];
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
        cs->lb_healthy_panic = stats_registerf(STAT_COUNTER, "cluster.%s.lb_healthy_panic", n);
    }
    for (int w = 0; w < g->nworkers; w++) {
        g->lb[w] = calloc(nc, sizeof(*g->lb[w]));
        if (!g->lb[w])
            return -ENOMEM;
        for (size_t i = 0; i < cfg->nclusters; i++) {
            g->lb[w][i].rr_next = (size_t)w;
            g->lb[w][i].active =
                calloc(cfg->clusters[i].nhosts ? cfg->clusters[i].nhosts : 1, sizeof(uint32_t));
            if (!g->lb[w][i].active)
                return -ENOMEM;
        }
    }
    return 0;
}

void cluster_gen_free(struct gen *g)
{
    for (int w = 0; g->lb && w < g->nworkers; w++) {
        for (size_t c = 0; g->lb[w] && g->cfg && c < g->cfg->nclusters; c++)
            free(g->lb[w][c].active);
        free(g->lb[w]);
    }
    free(g->lb);
    g->lb = NULL;
    free(g->cstats);
    g->cstats = NULL;
    free(g->cluster_active);
    g->cluster_active = NULL;
}

int cluster_admit(struct gen *g, size_t ci, uint64_t id)
{
    const struct cfg_cluster *cl = &g->cfg->clusters[ci];
    if (__atomic_add_fetch(&g->cluster_active[ci], 1, __ATOMIC_RELAXED) >
            (int32_t)cl->max_connections &&
        cl->max_connections) {
        __atomic_fetch_sub(&g->cluster_active[ci], 1, __ATOMIC_RELAXED);
        stats_inc(g->cstats[ci].cx_overflow);
        LOGD(id, "cluster %s overflow (max_connections %u): connection closed", cl->name,
             cl->max_connections);
        return -EBUSY;
    }
    stats_add(g->cstats[ci].cx_active, 1);
    return 0;
}

void cluster_release(struct gen *g, size_t ci)
{
    stats_add(g->cstats[ci].cx_active, -1);
    __atomic_fetch_sub(&g->cluster_active[ci], 1, __ATOMIC_RELAXED);
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

/* The I-th usable host of cluster CI: the I-th healthy one, or the I-th of all (HEALTHY NULL). */
static size_t lb_nth(const uint8_t *healthy, size_t n, size_t i)
{
    if (!healthy)
        return i;
    for (size_t h = 0; h < n; h++)
        if (__atomic_load_n(&healthy[h], __ATOMIC_RELAXED) && i-- == 0)
            return h;
    return 0;
}

/* Chooses among the healthy hosts when the cluster is health checked. Envoy's panic mode
 * (healthy_panic_threshold, default 50%): below half healthy, every host is used, so a check
 * that fails everywhere (a firewall change) does not take the whole cluster down
 * (source/common/upstream/load_balancer_impl.cc), counted in lb_healthy_panic. */
static size_t lb_choose(struct worker *w, struct gen *g, size_t ci)
{
    const struct cfg_cluster *cl = &g->cfg->clusters[ci];
    struct lb_state *lb = &g->lb[w->index][ci];
    size_t n = cl->nhosts;
    const uint8_t *healthy = g->healthy ? g->healthy[ci] : NULL;
    if (healthy) {
        size_t nh = 0;
        for (size_t h = 0; h < n; h++)
            nh += __atomic_load_n(&healthy[h], __ATOMIC_RELAXED);
        if (nh * 2 < n) {
            stats_inc(g->cstats[ci].lb_healthy_panic);
            healthy = NULL;
        } else {
            n = nh;
        }
    }
    if (n <= 1)
        return lb_nth(healthy, cl->nhosts, 0);
    switch (cl->lb_policy) {
    case CFG_LB_RANDOM:
        return lb_nth(healthy, cl->nhosts, (size_t)(lb_rand(w) % n));
    case CFG_LB_LEAST_REQUEST: {
        size_t a = lb_nth(healthy, cl->nhosts, (size_t)(lb_rand(w) % n));
        size_t b = lb_nth(healthy, cl->nhosts, (size_t)(lb_rand(w) % n));
        return lb->active[b] < lb->active[a] ? b : a;
    }
    case CFG_LB_ROUND_ROBIN:
    default:
        return lb_nth(healthy, cl->nhosts, lb->rr_next++ % n);
    }
}

size_t cluster_route(struct worker *w, const struct gen *g, const struct cfg_tcp_proxy *tp)
{
    const struct cfg_cluster *pick = tp->cluster;
    if (tp->nweighted > 1) {
        /* Envoy's WeightedClusterUtil: a random point in the total weight, walked in order */
        uint64_t r = lb_rand(w) % tp->total_weight;
        for (size_t i = 0; i < tp->nweighted; i++) {
            if (r < tp->weighted[i].weight) {
                pick = tp->weighted[i].cluster;
                break;
            }
            r -= tp->weighted[i].weight;
        }
    }
    return (size_t)(pick - g->cfg->clusters);
}

size_t cluster_pick_host(struct worker *w, struct gen *g, size_t ci)
{
    size_t host = lb_choose(w, g, ci);
    g->lb[w->index][ci].active[host]++;
    return host;
}

size_t cluster_repick_host(struct worker *w, struct gen *g, size_t ci, size_t last)
{
    size_t n = g->cfg->clusters[ci].nhosts;
    cluster_host_release(w, g, ci, last); /* before choosing: LEAST_REQUEST reads the counts */
    size_t host = lb_choose(w, g, ci);
    if (host == last && n > 1)
        host = (last + 1) % n;
    g->lb[w->index][ci].active[host]++;
    return host;
}

void cluster_host_release(struct worker *w, struct gen *g, size_t ci, size_t host)
{
    g->lb[w->index][ci].active[host]--;
}

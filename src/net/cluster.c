/* Host selection. State is per worker (struct lb_state), so picking takes no lock:
 * ROUND_ROBIN walks the host list from a per-worker offset, RANDOM draws from a per-worker
 * xorshift, LEAST_REQUEST is Envoy's power-of-two-choices over this worker's active counts. */
#include "net/worker.h"

static uint64_t lb_rand(struct worker *w)
{
    uint64_t x = w->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w->rng = x;
    return x;
}

size_t cluster_pick_host(struct worker *w, size_t ci)
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

/* Config generations (gen.h).
 *
 * Design: a generation is immutable once handed to the workers and reference-counted with one
 * atomic per generation: sessions take a reference when they start (one atomic add per
 * connection, on a line no other hot data shares) and drop it when they are freed, after their
 * transport sockets are destroyed, so a session never sees its config change or go away. A
 * worker holds a reference on the generation it accepts for. The main thread keeps retired
 * generations on a list and frees each once its count is 0 and the capture writer has written
 * out what their sockets queued (gen_retired_ready): the writer reads a capture config (prefix,
 * extension, create-failure flag) when it creates a file, possibly after the connection ended.
 * Freeing always happens on the main thread, so a config (TLS contexts, live hubs, capture
 * configs) is never torn down from a worker.
 *
 * Rejected: a read-write lock or RCU over one global config (every access on the hot path would
 * pay for it, and a session that spans a reload would read two configs); copying the parts a
 * session needs into the session (the transport configs hold SSL_CTXs, live hubs and capture
 * state that are not copyable); per-generation counts carried over by name (the circuit breaker
 * and connection_limit count per generation: a session gives back the slot it took, in the
 * generation it took it from, and a reload resets the limits' counts for new connections — the
 * overlap is bounded by the old generation's open connections). */
#include "net/gen.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "net/cluster.h"
#include "net/health_check.h"
#include "net/listener.h"

int gen_new(struct socktap_config *cfg, uint64_t number, int nworkers, struct gen **out)
{
    struct gen *g = calloc(1, sizeof(*g));
    if (!g)
        return -ENOMEM;
    g->cfg = cfg;
    g->number = number;
    g->nworkers = nworkers;
    g->refs = 1;
    int rc = listener_gen_init(g);
    if (rc == 0)
        rc = cluster_gen_init(g);
    if (rc == 0)
        rc = health_check_gen_init(g);
    if (rc < 0) {
        health_check_gen_free(g); /* needs the config: before letting go of it */
        g->cfg = NULL;            /* stays the caller's */
        gen_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

void gen_ref(struct gen *g)
{
    __atomic_add_fetch(&g->refs, 1, __ATOMIC_RELAXED);
}

bool gen_unref(struct gen *g)
{
    /* release: everything this thread did with G happens before the main thread frees it */
    return __atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) == 0;
}

bool gen_retired_ready(struct gen *g)
{
    if (__atomic_load_n(&g->refs, __ATOMIC_ACQUIRE) != 0)
        return false;
    if (!g->fenced) {
        ts_registry_fence(&g->fence);
        g->fenced = true;
    }
    return ts_registry_fence_passed(&g->fence);
}

void gen_free(struct gen *g)
{
    if (!g)
        return;
    listener_gen_free(g);
    health_check_gen_free(g);
    cluster_gen_free(g);
    config_free(g->cfg);
    free(g);
}

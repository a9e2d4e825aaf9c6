/* Counters and gauges, one array per thread, summed on read: the hot path is a plain
 * (relaxed-atomic) add to thread-local memory, no lock, no shared cache line.
 *
 * Stats are registered on the main thread: at config load time before the workers start, and
 * again by a config reload while they run (new names get new ids, known names keep theirs, so
 * counting goes on across reloads). A new id reaches a worker only inside the new config
 * generation handed over through its control channel. Names are Envoy's
 * ("cluster.x.upstream_cx_total"). At most STATS_MAX names per process.
 */
#ifndef SOCKTAP_CORE_STATS_H
#define SOCKTAP_CORE_STATS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

typedef uint32_t stat_id;

/* Names a process can register, over all reloads (each thread's array reserves this many cells
 * of address space; only the pages of registered stats are ever touched). */
#define STATS_MAX (1u << 18)

enum stat_kind { STAT_COUNTER, STAT_GAUGE };

/* Registers (or finds, if already registered) the stat NAME. NAME is copied. Main thread only,
 * before or after stats_freeze(). Returns its id. Aborts on allocation failure or past
 * STATS_MAX names. */
stat_id stats_register(const char *name, enum stat_kind kind);
/* printf-style convenience over stats_register. */
stat_id stats_registerf(enum stat_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Allocates the per-thread arrays for NTHREADS threads (+1 for main): each reserves STATS_MAX
 * cells, so stats registered later (a reload) need no reallocation under running workers. */
int stats_freeze(int nthreads);
/* Binds the calling thread to slot SLOT (0..nthreads-1); main thread uses slot nthreads. */
void stats_bind_thread(int slot);
/* Binds a helper thread (the capture writer) to the main thread's slot. Only for stats the main
 * thread never updates itself (each cell must have one writing thread). No-op before freeze. */
void stats_bind_aux_thread(void);

extern __thread int64_t *stats_tls;

static inline void stats_add(stat_id id, int64_t delta)
{
    if (stats_tls)
        __atomic_store_n(&stats_tls[id], __atomic_load_n(&stats_tls[id], __ATOMIC_RELAXED) + delta,
                         __ATOMIC_RELAXED);
}
static inline void stats_inc(stat_id id)
{
    stats_add(id, 1);
}

/* Sum of stat ID over all threads. This and the look-ups below: main thread only (they read
 * the name registry, which a reload grows). */
int64_t stats_get(stat_id id);
/* Looks up a stat by name; returns false if unknown. */
bool stats_find(const char *name, stat_id *out);
/* One stat's name, kind and value (summed over threads) at the time of a snapshot. */
struct stat_sample {
    const char *name; /* borrowed from the registry: valid until stats_reset */
    enum stat_kind kind;
    int64_t value;
};
/* Every stat, sorted by name, into *OUT (owned by the caller: free()) and *N. Returns 0 or
 * -ENOMEM. */
int stats_snapshot(struct stat_sample **out, size_t *n) __attribute__((warn_unused_result));
/* Frees all (tests, shutdown). */
void stats_reset(void);

#endif

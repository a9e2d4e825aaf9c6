/* Registry is a flat array (names, kinds), grown on the main thread only; values live in one
 * int64 array per thread, so readers only ever load other threads' cells (relaxed).
 *
 * A reload registers new names while workers add to their arrays. Each thread's array is a
 * private anonymous mapping reserving STATS_MAX cells (MAP_NORESERVE: address space only; the
 * kernel supplies zeroed pages as the first stats in them are touched), so growing the registry
 * never moves an array a worker holds: a new id is just a cell nobody has written yet, already
 * zero. Rejected: realloc'ing the arrays and handing the new ones to workers RCU-style (a grace
 * period per reload, and every stats_add would have to re-read the pointer); a two-level
 * table of chunks (one more load on the hot path of every counter). Cost: 2 MiB of address space
 * per thread, of which a config with 200 listeners touches 20 KiB. */
#include "core/stats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/log.h"

#define STATS_SLOT_BYTES ((size_t)STATS_MAX * sizeof(int64_t))

struct stat_def {
    char *name;
    enum stat_kind kind;
};

static struct stat_def *g_defs;
static size_t g_ndefs, g_cap;
static int64_t **g_slots;
static int g_nslots;
static bool g_frozen;
__thread int64_t *stats_tls;

stat_id stats_register(const char *name, enum stat_kind kind)
{
    stat_id id;
    if (stats_find(name, &id))
        return id;
    if (g_ndefs == STATS_MAX) {
        log_msg(ST_LOG_CRITICAL, LOG_NO_CONN, "stats: more than %u names registered", STATS_MAX);
        abort();
    }
    if (g_ndefs == g_cap) {
        g_cap = g_cap ? g_cap * 2 : 64;
        g_defs = realloc(g_defs, g_cap * sizeof(*g_defs));
        if (!g_defs)
            abort();
    }
    g_defs[g_ndefs].name = strdup(name);
    if (!g_defs[g_ndefs].name)
        abort();
    g_defs[g_ndefs].kind = kind;
    return (stat_id)g_ndefs++;
}

stat_id stats_registerf(enum stat_kind kind, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof(name), fmt, ap);
    va_end(ap);
    return stats_register(name, kind);
}

int stats_freeze(int nthreads)
{
    g_nslots = nthreads + 1;
    g_slots = calloc((size_t)g_nslots, sizeof(*g_slots));
    if (!g_slots)
        return -ENOMEM;
    for (int i = 0; i < g_nslots; i++) {
        void *p = mmap(NULL, STATS_SLOT_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return -errno; /* the slots made so far are unmapped by stats_reset */
        g_slots[i] = p;
    }
    g_frozen = true;
    stats_bind_thread(nthreads);
    return 0;
}

void stats_bind_thread(int slot)
{
    stats_tls = (g_slots && slot >= 0 && slot < g_nslots) ? g_slots[slot] : NULL;
}

void stats_bind_aux_thread(void)
{
    stats_bind_thread(g_nslots - 1);
}

int64_t stats_get(stat_id id)
{
    int64_t sum = 0;
    if (!g_frozen || id >= g_ndefs)
        return 0;
    for (int i = 0; i < g_nslots; i++)
        sum += __atomic_load_n(&g_slots[i][id], __ATOMIC_RELAXED);
    return sum;
}

bool stats_find(const char *name, stat_id *out)
{
    for (size_t i = 0; i < g_ndefs; i++) {
        if (strcmp(g_defs[i].name, name) == 0) {
            *out = (stat_id)i;
            return true;
        }
    }
    return false;
}

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(((const struct stat_sample *)a)->name, ((const struct stat_sample *)b)->name);
}

int stats_snapshot(struct stat_sample **out, size_t *n)
{
    struct stat_sample *s = malloc((g_ndefs ? g_ndefs : 1) * sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < g_ndefs; i++)
        s[i] = (struct stat_sample){g_defs[i].name, g_defs[i].kind, stats_get((stat_id)i)};
    qsort(s, g_ndefs, sizeof(*s), cmp_by_name);
    *out = s;
    *n = g_ndefs;
    return 0;
}

void stats_reset(void)
{
    for (size_t i = 0; i < g_ndefs; i++)
        free(g_defs[i].name);
    free(g_defs);
    g_defs = NULL;
    g_ndefs = g_cap = 0;
    for (int i = 0; g_slots && i < g_nslots; i++)
        if (g_slots[i])
            munmap(g_slots[i], STATS_SLOT_BYTES);
    free(g_slots);
    g_slots = NULL;
    g_nslots = 0;
    g_frozen = false;
    stats_tls = NULL;
}

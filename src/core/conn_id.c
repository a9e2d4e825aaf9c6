/* See conn_id.h. */
#include "core/conn_id.h"

#include <stdbool.h>

static uint64_t g_conn_id; /* the next id to hand out */

uint64_t conn_id_next(void)
{
    return __atomic_fetch_add(&g_conn_id, 1, __ATOMIC_RELAXED);
}

uint64_t conn_id_peek(void)
{
    return __atomic_load_n(&g_conn_id, __ATOMIC_RELAXED);
}

void conn_id_reserve(uint64_t id)
{
    uint64_t cur = __atomic_load_n(&g_conn_id, __ATOMIC_RELAXED);
    while (cur <= id && !__atomic_compare_exchange_n(&g_conn_id, &cur, id + 1, false,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

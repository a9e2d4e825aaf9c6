/* Connection ids: one process-wide counter, the `[C<id>]` of every log line and the `<id>` of
 * Envoy's `<path_prefix>_<id>` trace names.
 *
 * The counter starts above every id a capture prefix already holds on disk (capture_config
 * reserves them when it parses a path_prefix), so a restarted socktap continues its trace names
 * instead of colliding with the last run's files from `_1` on. Rejected: a per-run token in the
 * name (breaks Envoy's `<prefix>_<id>` shape that tools and users glob for) and a per-prefix
 * counter (trace ids would no longer match the connection ids in the log). */
#ifndef SOCKTAP_CORE_CONN_ID_H
#define SOCKTAP_CORE_CONN_ID_H

#include <stdint.h>

/* The next connection id: 0 first, as Envoy's counter (source/common/network/connection_impl.cc
 * next_global_id_), or 1 above the highest reserved id. Every connection takes one, downstream
 * and upstream (each connect attempt) alike. Thread-safe. */
uint64_t conn_id_next(void);

/* The id the next conn_id_next() would return, without taking it (a later connection's id is
 * at least this). Thread-safe. */
uint64_t conn_id_peek(void);
/* Makes every later conn_id_next() return more than ID. Thread-safe; never lowers the counter. */
void conn_id_reserve(uint64_t id);

#endif

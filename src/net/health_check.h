/* Active TCP health checking of cluster hosts (Envoy's TcpHealthCheckerImpl,
 * source/extensions/health_checkers/tcp/health_checker_impl.cc). Runs on the main thread's
 * loop, never on a worker; workers read each host's verdict (one byte, atomic) in the LB. */
#ifndef SOCKTAP_NET_HEALTH_CHECK_H
#define SOCKTAP_NET_HEALTH_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include <event2/event.h>

#include "net/gen.h"

/* Allocates G's per-host verdicts (hosts of a checked cluster start failed, as Envoy's
 * FAILED_ACTIVE_HC until their first check) and registers the cluster.X.health_check.* stats.
 * Main thread. Returns 0 or -ENOMEM; health_check_gen_free frees what was allocated. */
int health_check_gen_init(struct gen *g) __attribute__((warn_unused_result));
void health_check_gen_free(struct gen *g);

/* Starts G's checks on BASE (the first round at once). Main thread. Returns 0 or -ENOMEM. */
int health_check_start(struct gen *g, struct event_base *base) __attribute__((warn_unused_result));
/* Stops G's checks (G replaced by a reload, or shutdown): their sockets and events are freed;
 * the verdicts stay for G's sessions. Main thread. */
void health_check_stop(struct gen *g);

/* Envoy's /clusters health_flags of host H of G's cluster CI: "healthy" or "/failed_active_hc".
 * Main thread. */
const char *health_check_flags(const struct gen *g, size_t ci, size_t h);

#endif

/* admin_capture: runtime view and control of the capture sockets (socktap extensions,
 * docs/capture.md "Budgets and retention"):
 *   GET  /captures: JSON of every path_prefix's account: totals, limits, state, the open traces
 *        and the newest finished ones (capped: the account may track 100000 files);
 *   POST /capture/listener/NAME?enabled=0|1, POST /capture/cluster/NAME?enabled=0|1: capture on
 *        or off for the new connections of that listener's / cluster's capture or tap socket
 *        (NAME: the config's name, or for a listener its address as /stats names it).
 * The logic only: admin.c routes the requests and sends the replies. Main thread; the workers
 * see the switch through an atomic flag. */
#ifndef SOCKTAP_ADMIN_ADMIN_CAPTURE_H
#define SOCKTAP_ADMIN_ADMIN_CAPTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"

/* Finished traces listed per prefix by GET /captures (the newest), the rest only counted. */
#define ADMIN_CAPTURES_MAX_FINISHED 1000

/* Writes GET /captures' JSON to OUT (ARG unused: the shape admin.c's reply_written takes). A
 * build without capture has no prefixes. Returns 0 or -errno. */
int admin_capture_write(FILE *out, void *arg);

/* The switch: when PATH (the request's, borrowed) is /capture/listener/NAME or
 * /capture/cluster/NAME, acts on CFG's listener or cluster (borrowed) as QUERY (may be NULL) and
 * IS_POST say and returns the HTTP status (200, 400, 404, 405) with its reply text in MSG
 * (MSG_SIZE bytes, caller's). Returns 0 for any other path (MSG untouched). */
int admin_capture_switch(const struct socktap_config *cfg, bool is_post, const char *path,
                         const char *query, char *msg, size_t msg_size)
    __attribute__((nonnull(1, 5)));

#endif

/* admin_capture: runtime view and control of the capture sockets (socktap extensions,
 * docs/capture.md "Budgets and retention"):
 *   GET  /captures: JSON of every path_prefix's account: totals, limits, state, the open traces
 *        and the newest finished ones (capped: the account may track 100000 files);
 *   POST /capture/listener/NAME?enabled=0|1, POST /capture/cluster/NAME?enabled=0|1: capture on
 *        or off for the new connections of that listener's / cluster's capture or tap socket
 *        (NAME: the config's name, or for a listener its address as /stats names it).
 * Main thread (the admin's evhttp); the workers see the switch through an atomic flag. */
#ifndef SOCKTAP_ADMIN_ADMIN_CAPTURE_H
#define SOCKTAP_ADMIN_ADMIN_CAPTURE_H

#include <stdbool.h>

#include <event2/http.h>

#include "config/config.h"

/* Finished traces listed per prefix by GET /captures (the newest), the rest only counted. */
#define ADMIN_CAPTURES_MAX_FINISHED 1000

/* Registers GET /captures on HTTP (borrowed). */
void admin_capture_register(struct evhttp *http) __attribute__((nonnull));

/* Answers REQ when its path is /capture/listener/NAME or /capture/cluster/NAME, with CFG's
 * listeners and clusters (borrowed). Returns false (REQ untouched) for any other path. */
bool admin_capture_route(struct evhttp_request *req, const struct socktap_config *cfg)
    __attribute__((nonnull));

#endif

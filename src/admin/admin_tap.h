/* admin_tap: Envoy's admin `POST /tap` for taps configured with
 * `common_config.admin_config.config_id` (source/extensions/common/tap/admin.cc). Such a tap
 * records nothing until a client posts `{config_id, tap_config}` (JSON or YAML); from then on
 * the connections that start are traced as tap_config says, and each trace (a
 * TraceWrapper: one per event when streaming, one per connection otherwise) is written to that
 * HTTP response in the sink's format (pretty JSON by default, as Envoy's streamMsg), until the
 * client goes away (streaming_admin) or max_traces / timeout end the response
 * (buffered_admin). One client at a time, as Envoy: a second POST gets Envoy's 400.
 *
 * Fed from the tap's live hub (live_hub.h), so the proxied traffic never waits for the
 * client: a client that reads too slowly loses events, counted in admin.tap.{events_dropped,
 * bytes_dropped} (a buffered trace that lost some is marked read/write_truncated) and logged
 * once per client. Stats: admin.tap.clients (gauge), admin.tap.traces (sent). Runs on the
 * admin (main) thread. */
#ifndef SOCKTAP_ADMIN_ADMIN_TAP_H
#define SOCKTAP_ADMIN_ADMIN_TAP_H

#include <event2/http.h>

#include "config/config.h"

struct admin_tap;

/* Registers admin.tap.* (before stats_freeze). */
void admin_tap_register_stats(void);

/* Registers POST /tap on HTTP (borrowed) for the taps of CFG (borrowed; must outlive the
 * result). On success *OUT is the caller's (admin_tap_free). Returns 0 or -ENOMEM. */
int admin_tap_new(struct evhttp *http, struct event_base *base, const struct socktap_config *cfg,
                  struct admin_tap **out) __attribute__((warn_unused_result, nonnull));

/* A config reload: from now on T serves CFG (borrowed; must outlive T or the next call). The
 * attached client's response gets what its queues hold and its end (its hubs are the old
 * config's, freed once the old config's connections are gone): it POSTs again to tap the new
 * config. T may be NULL. */
void admin_tap_set_config(struct admin_tap *t, const struct socktap_config *cfg);

/* Ends the attached client's response (what it holds is sent first) and frees T. T may be
 * NULL. Call before freeing the evhttp. */
void admin_tap_free(struct admin_tap *t);

#endif

/* admin_live: GET /capture/live.pcapng (socktap extension) — a live pcapng stream of the
 * connections one capture socket sees, for `curl -sN URL | tshark -i -` or Wireshark's
 * `socktap-extcap`. Query: listener=NAME or cluster=NAME (the config's name), wire=1 for the TLS
 * wire capture of that listener/cluster instead of the plaintext one, max_bytes=N for the
 * viewer's queue (default 8 MiB, 64 KiB..256 MiB).
 *
 * Fed from the same events the trace writer gets (live_hub.h), never slowing the traffic: a
 * viewer that reads too slowly loses packets; the loss shows in Wireshark as TCP "previous
 * segment not captured" (sequence numbers skip the lost bytes) and as a comment on the next
 * packet of the connection, and is counted in admin.live.{viewers,packets,lost_events,
 * lost_bytes}. Runs on the admin (main) thread.
 *
 * PCAP-over-IP (admin.socktap_pcap_over_ip, socktap extension): the same stream as classic
 * pcap on a plain TCP port, as PolarProxy serves it, for `tshark -i TCP@HOST:PORT`. */
#ifndef SOCKTAP_ADMIN_ADMIN_LIVE_H
#define SOCKTAP_ADMIN_ADMIN_LIVE_H

#include <event2/http.h>

#include "config/config.h"

struct admin_live;

/* Registers admin.live.* (before stats_freeze; the server does it with its own stats). */
void admin_live_register_stats(void);

/* Registers the route on HTTP (borrowed) for the listeners and clusters of CFG (borrowed;
 * must outlive the result), and listens on CFG's admin.socktap_pcap_over_ip ports (each
 * client gets that capture socket's stream as classic pcap). On success *OUT is the caller's
 * (admin_live_free). Returns 0, -ENOMEM, or a port's bind/listen -errno (logged). */
int admin_live_new(struct evhttp *http, struct event_base *base, const struct socktap_config *cfg,
                   struct admin_live **out) __attribute__((warn_unused_result, nonnull));

/* A config reload: from now on L serves CFG (borrowed; must outlive L or the next call), whose
 * admin block equals the old one. Every open stream is ended (its hub is the old config's,
 * freed once the old config's connections are gone); viewers reconnect to follow the new
 * captures. L may be NULL. */
void admin_live_set_config(struct admin_live *l, const struct socktap_config *cfg);

/* Ends every stream (each gets its last packets and a proper chunked end) and frees L.
 * L may be NULL. Call before freeing the evhttp. */
void admin_live_free(struct admin_live *l);

#endif

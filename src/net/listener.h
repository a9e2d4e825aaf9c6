/* Listeners: each worker's listen sockets and accept loop (pausing on EMFILE), Envoy's
 * connection_limit filter (admit/release against a process-wide count) and the listener's
 * stats. Accepted connections go to the handler the worker gives (session_accept), so this
 * file knows nothing of sessions: the session calls the verbs below, never the reverse. */
#ifndef SOCKTAP_NET_LISTENER_H
#define SOCKTAP_NET_LISTENER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"
#include "core/stats.h"
#include "net/worker.h"

struct listener_stats {
    stat_id cx_total, cx_active, cx_destroy, cx_overflow, cx_ts_connect_timeout;
    stat_id tcp_cx_total, tcp_rx_bytes, tcp_tx_bytes, tcp_idle_timeout, tcp_no_route;
    /* connection_limit.<stat_prefix>.*: registered only when the filter is configured */
    stat_id limit_limited, limit_active;
};

/* Allocates SRV's per-listener stats and connection_limit counts and registers the stats (before
 * stats_freeze). Returns 0 or -ENOMEM; what was allocated is freed by listener_server_free. */
int listener_server_init(struct server *srv);
void listener_server_free(struct server *srv);

/* Takes ownership of FD, accepted on W's listener LI from PEER (PEER_LEN bytes, valid for the
 * call only). */
typedef void listener_accept_fn(struct worker *w, size_t li, int fd, const struct sockaddr *peer,
                                int peer_len);

/* Binds W's socket for every configured listener and starts accepting on it, handing each
 * connection to ON_ACCEPT (the first worker's sockets are bound exclusively: see listener.c).
 * Returns 0 or -errno, a bind failure logged naming the address; what was made is freed by
 * listener_worker_free. */
int listener_worker_init(struct worker *w, listener_accept_fn *on_accept);
/* Stops accepting on W: closes its listen sockets (drain). Idempotent. */
void listener_worker_close(struct worker *w);
/* Closes and frees everything listener_worker_init made (W's sessions must be gone). */
void listener_worker_free(struct worker *w);

/* Stops accepting on W's listener LI for a short back-off (descriptors exhausted: ERR is the
 * errno, logged at most once a second per worker). No-op when already paused. */
void listener_pause_accepts(struct worker *w, size_t li, int err);

/* Counts a downstream connection accepted on LI as open (downstream_cx_total/_active,
 * tcp downstream_cx_total); listener_conn_closed counts it closed. */
void listener_conn_opened(struct worker *w, size_t li);
void listener_conn_closed(struct worker *w, size_t li);

/* connection_limit: takes a slot of LI's max_connections for connection ID (logged with it).
 * Returns 0 (also when LI has no limit), or -EBUSY at the limit (counted as
 * limited_connections and downstream_cx_overflow). After 0 the caller owes listener_release. */
int listener_admit(struct worker *w, size_t li, uint64_t id);
void listener_release(struct worker *w, size_t li);

static inline const struct cfg_listener *listener_config(const struct worker *w, size_t li)
{
    return &w->srv->cfg->listeners[li];
}

static inline const struct listener_stats *listener_stats(const struct worker *w, size_t li)
{
    return &w->srv->lstats[li];
}

/* Index of the cluster LI's tcp_proxy routes to. */
static inline size_t listener_cluster(const struct worker *w, size_t li)
{
    return (size_t)(w->srv->cfg->listeners[li].tcp_proxy.cluster - w->srv->cfg->clusters);
}

#endif

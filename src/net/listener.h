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
#include "net/gen.h"
#include "net/worker.h"

/* tcp.<stat_prefix>.*: one set per filter chain (each chain has its own tcp_proxy) */
struct chain_stats {
    stat_id tcp_cx_total, tcp_rx_bytes, tcp_tx_bytes, tcp_idle_timeout, tcp_no_route,
        tcp_max_duration;
};

struct listener_stats {
    stat_id cx_total, cx_active, cx_destroy, cx_overflow, cx_ts_connect_timeout;
    /* filter chains and listener filters (Envoy's names): no_filter_chain_match,
     * downstream_pre_cx_timeout, downstream_pre_cx_active, downstream_listener_filter_remote_close
     * and tls_inspector.* (Envoy's tls_inspector stats are not scoped by listener either) */
    stat_id no_chain_match, pre_cx_timeout, pre_cx_active, lf_remote_close;
    stat_id ti_tls_found, ti_tls_not_found, ti_sni_found, ti_sni_not_found, ti_alpn_found,
        ti_alpn_not_found, ti_too_large;
    struct chain_stats *chains; /* per cfg_listener.chains entry (owned, listener_gen_free) */
    /* connection_limit.<stat_prefix>.*: registered only when the filter is configured */
    stat_id limit_limited, limit_active;
    /* set by the first no_filter_chain_match / listener filter timeout of this generation: each
     * is logged once (atomic: workers share it) */
    int no_match_logged, timeout_logged;
};

/* Allocates generation G's per-listener stats, connection_limit counts and socket table (no
 * sockets yet) and registers the stats. Main thread. Returns 0 or -ENOMEM; what was allocated is
 * freed by listener_gen_free, which also closes the sockets G bound and never handed over. */
int listener_gen_init(struct gen *g);
void listener_gen_free(struct gen *g);

/* Gives every listener of G a listen socket per worker: a listener of PREV (the running
 * generation, NULL at start-up) with the same name and address, or else the same address,
 * keeps PREV's sockets (no accept gap); the others are bound now, on the main thread (the first
 * worker's socket exclusively: see listener.c). Returns 0 or -errno with WHY (WHY_SIZE bytes)
 * naming the listener and address. */
int listener_gen_bind(struct gen *g, const struct gen *prev, char *why, size_t why_size)
    __attribute__((warn_unused_result));

/* Takes ownership of FD, accepted on W's listener LI of w->gen from PEER (PEER_LEN bytes, valid for
 * the call only). */
typedef void listener_accept_fn(struct worker *w, size_t li, int fd, const struct sockaddr *peer,
                                int peer_len);

/* Starts accepting on W's sockets of w->gen's listeners (listener_gen_bind made them; W owns
 * them from now on), handing each connection to ON_ACCEPT. Returns 0 or -ENOMEM; what was made
 * is freed by listener_worker_free. */
int listener_worker_init(struct worker *w, listener_accept_fn *on_accept);
/* On W's thread, before W moves from w->gen to NEXT (the generation after it): accepts on
 * NEXT's listeners, moving the kept sockets to new events; the listeners NEXT dropped stop
 * accepting (what their backlog already holds is accepted under w->gen first, then the socket
 * is closed). Returns 0 or -ENOMEM (nothing changed; NEXT's new sockets are not W's). */
int listener_worker_switch(struct worker *w, struct gen *next);
/* Stops accepting on W: closes its listen sockets (drain). Idempotent. */
void listener_worker_close(struct worker *w);
/* Closes and frees everything listener_worker_init made (W's sessions must be gone). */
void listener_worker_free(struct worker *w);

/* Stops accepting on W's listener LI for a short back-off (descriptors exhausted: ERR is the
 * errno, logged at most once a second per worker). No-op when already paused. */
void listener_pause_accepts(struct worker *w, size_t li, int err);

/* Counts a downstream connection accepted on G's listener LI, filter chain FCI, as open
 * (downstream_cx_total/_active, tcp downstream_cx_total); listener_conn_closed counts it
 * closed. */
void listener_conn_opened(const struct gen *g, size_t li, size_t fci);
void listener_conn_closed(const struct gen *g, size_t li);

/* connection_limit: takes a slot of G's listener LI's max_connections for connection ID
 * (logged with it). Returns 0 (also when LI has no limit), or -EBUSY at the limit (counted as
 * limited_connections and downstream_cx_overflow). After 0 the caller owes listener_release
 * with the same G. */
int listener_admit(struct gen *g, size_t li, uint64_t id);
void listener_release(struct gen *g, size_t li);

static inline const struct cfg_listener *listener_config(const struct gen *g, size_t li)
{
    return &g->cfg->listeners[li];
}

static inline const struct listener_stats *listener_stats(const struct gen *g, size_t li)
{
    return &g->lstats[li];
}

/* Index in G of the cluster filter chain FC's tcp_proxy routes to. */
static inline size_t listener_cluster(const struct gen *g, const struct cfg_filter_chain *fc)
{
    return (size_t)(fc->tcp_proxy.cluster - g->cfg->clusters);
}

#endif

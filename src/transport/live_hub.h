/* live_hub: live viewers of one capture/tap config (the admin's GET /capture/live.pcapng,
 * a socktap extension). Workers publish every event the config's trace writers get; each
 * viewer has its own bounded queue, drained by the admin thread.
 *
 * The proxied traffic never waits for a viewer: publishing copies the event into the viewer's
 * queue, or, when the queue is at its byte bound, queues only a small gap record (connection,
 * direction, length) so the viewer can keep its TCP sequence numbers right and say what it
 * lost; when even gap records exceed their bound, the loss is only counted. With no viewer the
 * cost is one relaxed atomic load per event.
 *
 * Threading: publish from any worker (a mutex per hub, taken only while viewers exist); take
 * and the rest from the admin thread. The hub wakes its viewers through an eventfd each, written
 * only when a queue goes from empty to non-empty (one write per batch, not per event). */
#ifndef SOCKTAP_TRANSPORT_LIVE_HUB_H
#define SOCKTAP_TRANSPORT_LIVE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace/trace.h"

struct live_hub;
struct live_sub;

/* One queued event. GAP: the viewer's queue was full; LEN bytes of DIR were not kept (DATA is
 * empty). TRACE_EV_CLOSED: the connection ended (its trace was finished; with GAP: the capture
 * stopped, see live_hub_publish_end). */
struct live_ev {
    struct live_ev *next;
    struct trace_conn conn; /* id and addresses of the connection */
    int64_t sec;
    int32_t nsec;
    enum trace_dir dir;
    bool end_stream;
    bool gap;
    size_t len;
    unsigned char data[]; /* LEN bytes unless GAP */
};

/* A hub with no viewers. *OUT is the caller's (live_hub_free, after every viewer left).
 * Returns 0 or -ENOMEM. */
int live_hub_new(struct live_hub **out) __attribute__((warn_unused_result, nonnull));
/* H may be NULL. */
void live_hub_free(struct live_hub *h);

/* True while at least one viewer is subscribed (a hint: a viewer may come or go meanwhile). */
bool live_hub_wanted(const struct live_hub *h);

/* Queues EV of CONN (both read, not kept; EV->iov gathered into the copy) for every viewer. */
void live_hub_publish(struct live_hub *h, const struct trace_conn *conn,
                      const struct trace_event *ev) __attribute__((nonnull));

/* Queues the end of CONN's events: a TRACE_EV_CLOSED record, with GAP set when STOPPED (the
 * capture stopped mid-connection, so the viewer should forget it without showing a close). */
void live_hub_publish_end(struct live_hub *h, const struct trace_conn *conn, bool stopped)
    __attribute__((nonnull));

/* Subscribes a viewer whose queue holds at most MAX_BYTES of payload. *OUT is the caller's
 * (live_hub_unsubscribe). Returns 0, -ENOMEM or the -errno of eventfd(2). */
int live_hub_subscribe(struct live_hub *h, size_t max_bytes, struct live_sub **out)
    __attribute__((warn_unused_result, nonnull));
/* The viewer's wake-up fd (readable when events are queued; owned by the viewer). */
int live_sub_fd(const struct live_sub *s) __attribute__((nonnull));
/* Takes every queued event, oldest first (NULL if none); the caller frees each with free().
 * *LOST gets the events dropped without even a gap record since the last take. Clears the
 * wake-up fd. */
struct live_ev *live_hub_take(struct live_sub *s, uint64_t *lost) __attribute__((nonnull));
/* Events (and their payload bytes) the viewer's queue could not keep since the last call (since
 * it subscribed, the first time): counted when they happen, whether or not the viewer has taken
 * anything since, so a viewer's stats can follow its loss while it is not draining. */
void live_hub_take_dropped(struct live_sub *s, uint64_t *events, uint64_t *bytes)
    __attribute__((nonnull));
/* E as the trace_event it was published as (IOV: E's one body piece, the caller's storage;
 * both borrow E's data). A gap record's body is absent: len says how much was lost. */
void live_ev_event(const struct live_ev *e, struct iovec *iov, struct trace_event *out)
    __attribute__((nonnull));
/* Leaves the hub and frees S with what it still queued. S may be NULL. */
void live_hub_unsubscribe(struct live_sub *s);

#endif

/* capture_rec: one connection's trace being recorded — the trace file, its encoder, the buffer
 * of encoded events not yet handed to the writer thread, and the per-worker flush tick. The
 * capture/tap socket records what crosses it with one; the TLS socket's wire capture (socktap
 * extension socktap_wire_capture, capture_wire.c) records the TLS records with another. Both
 * get the same guarantees: a trace is always a valid prefix, memory is bounded by the config's
 * max_backlog, and a failing disk stops the capture (logged once, counted), never the traffic.
 *
 * Threading: a recorder belongs to its connection's worker thread; only capture_disk's writer
 * thread sees the bytes it hands over. */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_REC_H
#define SOCKTAP_TRANSPORT_CAPTURE_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

#include "trace/trace.h"
#include "transport/capture.h"
#include "transport/transport_socket.h"

struct evbuffer;
struct capture_rec;
struct capture_wfile;

/* A recorder for the connection INFO describes (addresses copied; INFO->fd borrowed, only for
 * getsockname at open), writing with CFG (borrowed; must outlive the recorder). No file yet.
 * On success *OUT is the caller's (capture_rec_free). Returns 0 or -ENOMEM. */
int capture_rec_new(const struct capture_cfg *cfg, const struct ts_conn_info *info,
                    struct capture_rec **out) __attribute__((warn_unused_result, nonnull));

/* Starts the trace, unless capture is disabled for the config (admin) or the prefix's budget
 * is paused (capture_store.h): then the connection goes on uncaptured, counted in
 * disabled_skipped / budget_skipped. Encodes its opening bytes and queues them with the file's
 * creation for the writer thread (capture_disk.h capture_wfile_open), at the next flush tick. A
 * failure to create the file is counted there (files_failed) and logged once per failing period,
 * and the recorder turns inactive when it sees it: the connection goes on uncaptured. Call once. */
void capture_rec_open(struct capture_rec *r) __attribute__((nonnull));

/* on_capture_failure (socktap_limits): 0 when the connection may move bytes; -EAGAIN while a
 * `reject` config waits for the writer to create the trace (hold the traffic: blocked); -EACCES
 * when the trace could not be created and the config says `reject` (counted in rejected; the
 * caller closes the connection). A connection not captured because of the budget or the admin
 * switch is never rejected: those follow the policy (docs/capture.md). */
int capture_rec_gate(struct capture_rec *r) __attribute__((nonnull, warn_unused_result));
/* True once capture_rec_gate refused the connection (or would: the trace could not start). */
bool capture_rec_rejected(const struct capture_rec *r) __attribute__((nonnull));
/* The connection never connected, or not yet (an upstream connect): the trace gets no local
 * address, as Envoy's (tap_config_impl.cc fillConnectionInfo). Call before capture_rec_open. */
void capture_rec_unconnected(struct capture_rec *r) __attribute__((nonnull));

/* The connection (opened unconnected: a streamed upstream tap) completed its connect: what is
 * still to be written carries its local address, as Envoy's fillConnectionInfo reads the
 * address at each event (set_connection_per_event). No-op when not recording. */
void capture_rec_connected(struct capture_rec *r) __attribute__((nonnull));

/* True once capture_rec_open was called. */
bool capture_rec_opened(const struct capture_rec *r) __attribute__((nonnull));
/* True while events are being recorded (file open, capture not stopped). */
bool capture_rec_active(const struct capture_rec *r) __attribute__((nonnull));
/* Returns the trace's file (NULL when inactive), borrowed: valid until the recorder stops or
 * finishes, with its create queued, so a file created beside it (capture_wfile_open_beside) is
 * created after it. The pending bytes are not handed over: jobs queued now for the file beside
 * (a key log) reach the disk before them. */
struct capture_wfile *capture_rec_handover(struct capture_rec *r) __attribute__((nonnull));

/* Records one event of LEN bytes gathered from IOV (read, not kept), stamped now. A no-op when
 * inactive. Past socktap_limits.max_trace_bytes (encoded bytes, v3 buffered traces excepted:
 * max_buffered_rx/tx bound them) the trace ends (see capture_rec.c capture_rec_limit). */
void capture_rec_event(struct capture_rec *r, enum trace_dir dir, const struct iovec *iov,
                       int iovcnt, size_t len, bool end_stream) __attribute__((nonnull(1)));
/* As capture_rec_event for LEN bytes of BUF (borrowed) from OFFSET, without copying them out. */
void capture_rec_event_range(struct capture_rec *r, enum trace_dir dir, struct evbuffer *buf,
                             size_t offset, size_t len, bool end_stream) __attribute__((nonnull));

/* Zero-copy bulk reads (capture.c). While R records a bulk flow into a binary streamed trace
 * (trace_enc_split_max; no max_trace_bytes), capture_rec_flat_begin gives *DST, where the
 * inner socket may read up to *ROOM (<= MAX) bytes, in a flat buffer of R's (capture_disk.h);
 * -ENOTSUP when the copying path must be used now. After the read, capture_rec_flat_end records
 * the N > 0 bytes at DST as a read event, encoded around them in place and handed to the writer
 * as they are, and appends them to INTO by reference (the relay sends them from there); if the
 * capture stopped meanwhile they are still appended. Returns 0, or -ENOMEM when they could not
 * be appended to INTO at all (the connection must close: the bytes were read). */
int capture_rec_flat_begin(struct capture_rec *r, size_t max, uint8_t **dst, size_t *room)
    __attribute__((nonnull));
int capture_rec_flat_end(struct capture_rec *r, uint8_t *dst, size_t n, struct evbuffer *into)
    __attribute__((nonnull));

/* Bytes the connection may still move before the backlog (queued for the disk plus encoded
 * here) reaches max_backlog, 0 while the writer is behind its global bound
 * (capture_writer_behind); SIZE_MAX when nothing is pending or the recorder is inactive (one
 * event larger than max_backlog still goes through, alone). */
size_t capture_rec_room(const struct capture_rec *r) __attribute__((nonnull));
/* capture_rec_room, for a caller about to hold its connection back when it is below NEED: the
 * calling thread's waker (capture_writer_set_waker) is then registered with the writer, which
 * wakes it once it wrote some of this trace's backlog, and the room is read again. */
size_t capture_rec_room_wait(struct capture_rec *r, size_t need) __attribute__((nonnull));

/* Stops the capture at the last whole event handed to the writer, for reason WHY (borrowed,
 * logged): counted in truncated and events_dropped; the recorder is inactive afterwards. */
void capture_rec_stop(struct capture_rec *r, const char *why) __attribute__((nonnull));

/* Ends the trace (v3: a closed event when CLOSED_EVENT; the encoder's closing bytes) and queues
 * the file's close. Idempotent; the recorder is inactive afterwards. */
void capture_rec_finish(struct capture_rec *r, bool closed_event) __attribute__((nonnull));

/* Finishes R if needed (without a closed event) and frees it. R may be NULL. */
void capture_rec_free(struct capture_rec *r);

#endif

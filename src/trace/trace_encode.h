/* Streaming trace encoders: turn a connection and its events into the bytes of a trace file,
 * piece by piece, so the capture socket can append each event to disk as it happens.
 *
 * Invariant (the point of socktap): for v2 PROTO_BINARY, begin() + event()* is at every step a
 * valid serialized envoy.data.tap.v2alpha.Trace, byte-identical to what Envoy serializes at close
 * for the same events (connection = field 1 first, then one `events` field 2 per event).
 * PROTO_TEXT streams the same way (a valid text Trace after every event). v3 streaming writes
 * one TraceWrapper{socket_streamed_trace_segment} per event (PROTO_BINARY_LENGTH_DELIMITED:
 * varint length prefix each; PROTO_BINARY: concatenated, as Envoy does; JSON: one object each).
 * v3 buffered mode keeps events in the encoder, bounded by max_buffered_rx/tx bytes (setting
 * read_truncated/write_truncated as Envoy does), and emits one TraceWrapper{socket_buffered_trace}
 * at end(). With min_streamed_sent, v3 streaming holds events and writes them as one
 * TraceWrapper{socket_streamed_trace_segment{events: SocketEvents}} per batch.
 * Every trace_enc_* call that appends anything appends exactly whole TraceWrapper messages (the
 * UDP sink sends each call's bytes as its datagram). */
#ifndef SOCKTAP_TRACE_TRACE_ENCODE_H
#define SOCKTAP_TRACE_TRACE_ENCODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "trace/tbuf.h"
#include "trace/trace.h"

struct trace_enc_cfg {
    enum trace_schema schema;
    enum trace_format format;
    bool streaming;           /* v3 only: streamed segments vs one buffered trace */
    uint32_t max_buffered_rx; /* v3 buffered: per trace; with cap_streamed, per streamed event */
    uint32_t max_buffered_tx; /* (Envoy's default 1024 each) */
    /* v3 streaming: each event's body is cut at max_buffered_rx/tx with Body.truncated, as
     * Envoy's tap socket does (tap_config_impl.cc onRead/onWrite); converters leave it off */
    bool cap_streamed;
    /* Tap SocketTapConfig.set_connection_per_event: each streamed event repeats the connection
     * (SocketEvent.connection = 5); Envoy ignores it in buffered traces (tap.proto) */
    bool conn_per_event;
    /* v3 streaming: SocketEvent.seq_num = 6 is numbered by the encoder (envoy#42641): see
     * trace_encode.c "seq_num"; without it an event's own seq_num (a converted trace's) is kept */
    bool seq_num;
    /* OutputConfig.min_streamed_sent_bytes (v3 streaming; 0: unset): events are held and written
     * as one segment of SocketEvents (field 4) once their bodies reach this many bytes, and at
     * end() */
    uint32_t min_streamed_sent;
};

struct trace_enc;

/* Creates an encoder for CONN (copied). *OUT is owned by the caller (trace_enc_free). */
int trace_enc_new(const struct trace_enc_cfg *cfg, const struct trace_conn *conn,
                  struct trace_enc **out);
/* Appends the file's opening bytes to OUT (may be none). Call once, first. */
int trace_enc_begin(struct trace_enc *enc, struct tbuf *out);
/* Appends one event (EV->iov is read, not kept). Returns 0 or -errno. */
int trace_enc_event(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out);
/* Zero-copy encoding (the capture socket's bulk reads, capture_rec.c): trace_enc_event for a
 * read or write event whose payload the caller places itself. Appends to OUT the event's bytes
 * without its payload (EV->iov is not read; EV->len is the payload's length) and sets
 * *PAYLOAD_AT to the offset in OUT where the payload belongs: the bytes before it are the
 * event's head, those after it its tail, and head + payload + tail is exactly what
 * trace_enc_event would have appended. OUT must have room for the event with its payload (the
 * sizes are reserved as usual). trace_enc_split_max says how long a payload of direction DIR
 * may be (0: ENC's format cannot; a streamed tap's max_buffered_rx/tx, past which bodies are
 * cut; else SIZE_MAX); a longer one, or none, is refused with -ENOTSUP. */
size_t trace_enc_split_max(const struct trace_enc *enc, enum trace_dir dir);
int trace_enc_event_split(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out,
                          size_t *payload_at);
/* Encoded bytes held for the next batch (min_streamed_sent): appended at once when the batch
 * is complete. 0 without batching. */
size_t trace_enc_held_bytes(const struct trace_enc *enc);
/* Marks the trace read/write truncated (flags only added, never cleared), e.g. when converting
 * a trace that already says so. Only a v3 buffered trace can carry them; returns whether ENC
 * does. Call before trace_enc_end. */
bool trace_enc_mark_truncated(struct trace_enc *enc, bool read, bool write);
/* The bytes the last trace_enc_event appended were thrown away and the next call re-encodes that
 * event (cut): it keeps the seq_num the thrown one had. Not for batched streaming
 * (min_streamed_sent), whose held events cannot be taken back. */
void trace_enc_forget_last(struct trace_enc *enc);
/* The connection's addresses changed (an upstream connect completed: its local address is known
 * now). What is still to be written uses CONN (copied): the per-event connection
 * (conn_per_event) and a buffered trace's connection; a segment already written stays. */
void trace_enc_set_conn(struct trace_enc *enc, const struct trace_conn *conn);
/* seq_num across the pieces of a rotated trace: the next one ENC would give, and setting it on
 * the next piece's encoder (before its first event), so numbering goes on as in one trace. */
uint64_t trace_enc_seq_next(const struct trace_enc *enc);
void trace_enc_set_seq_next(struct trace_enc *enc, uint64_t next);
/* Appends the closing bytes (v3 buffered: the whole trace; v3 batched streaming: the events
 * still held). Call once, last. */
int trace_enc_end(struct trace_enc *enc, struct tbuf *out);
void trace_enc_free(struct trace_enc *enc);

#endif

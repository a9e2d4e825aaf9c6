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
 * at end(). */
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
};

struct trace_enc;

/* Creates an encoder for CONN (copied). *OUT is owned by the caller (trace_enc_free). */
int trace_enc_new(const struct trace_enc_cfg *cfg, const struct trace_conn *conn,
                  struct trace_enc **out);
/* Appends the file's opening bytes to OUT (may be none). Call once, first. */
int trace_enc_begin(struct trace_enc *enc, struct tbuf *out);
/* Appends one event (EV->iov is read, not kept). Returns 0 or -errno. */
int trace_enc_event(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out);
/* Marks the trace read/write truncated (flags only added, never cleared), e.g. when converting
 * a trace that already says so. Only a v3 buffered trace can carry them; returns whether ENC
 * does. Call before trace_enc_end. */
bool trace_enc_mark_truncated(struct trace_enc *enc, bool read, bool write);
/* Appends the closing bytes (v3 buffered: the whole trace). Call once, last. */
int trace_enc_end(struct trace_enc *enc, struct tbuf *out);
void trace_enc_free(struct trace_enc *enc);

#endif

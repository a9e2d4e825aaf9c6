/* Streaming trace encoders (see trace_encode.h for the invariants).
 *
 * The binary encoders write protobuf wire format by hand straight from the payload iovecs:
 * sizes are computed arithmetically first (a protobuf length prefix precedes its message), so
 * one tbuf_reserve and one memcpy per iovec is all an event costs, with no allocation once the
 * caller's tbuf has grown to its flush size. Field order and presence follow protobuf's
 * serializer (fields by number; proto3 scalars omitted when zero; oneof members and set
 * submessages always written), which is what makes the output byte-identical to Envoy's.
 * Rejected: building protobuf-c messages and packing them (a copy of every payload, and a
 * malloc per event).
 *
 * Text and JSON are written by hand too, in protobuf's printers' layout (text: 2-space indent;
 * JSON: Envoy's pretty printing with primitive fields always printed, 1-space indent as
 * protobuf's C++ printer does). v3 buffered mode stores events compactly (header + payload,
 * capped by max_buffered_rx/tx like Envoy's addBufferToProtoBytes) and renders at end(). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trace/trace_encode.h"
#include "trace/pbfmt.h"
#include "trace/pbwire.h"

struct held_event {
    int64_t sec;
    int32_t nsec;
    uint8_t dir;
    uint8_t end_stream;
    uint8_t truncated;
    uint32_t len; /* payload bytes following the header in enc->held */
};

struct trace_enc {
    struct trace_enc_cfg cfg;
    struct trace_conn conn;
    bool v3_buffered;
    struct tbuf held; /* v3 buffered: held_event headers each followed by its payload */
    uint32_t rx_used, tx_used;
    bool read_truncated, write_truncated;
    /* v3 streaming */
    uint64_t seq_next;   /* seq_num of the next read/write (cfg.seq_num) */
    uint64_t seq_last;   /* the one the last read/write got (trace_enc_forget_last) */
    struct tbuf batch;   /* min_streamed_sent: the held events, each as the format writes an
                          * element of SocketEvents.events */
    uint64_t batch_body; /* body bytes held */
    size_t batch_n;      /* events held */
};

/* ---- sizes of wire-format pieces ------------------------------------------------------ */

static size_t ld_size(size_t body) /* tag + length + body of a length-delimited field */
{
    return 1 + pbwire_varint_len(body) + body;
}

static size_t ts_size(int64_t sec, int32_t nsec)
{
    return (sec ? 1 + pbwire_varint_len((uint64_t)sec) : 0) +
           (nsec ? 1 + pbwire_varint_len((uint64_t)(int64_t)nsec) : 0);
}

static size_t sockaddr_size(const struct trace_addr *a)
{
    size_t alen = strnlen(a->address, sizeof(a->address));
    return (alen ? ld_size(alen) : 0) + 1 + pbwire_varint_len(a->port);
}

static size_t addr_size(const struct trace_addr *a)
{
    return ld_size(sockaddr_size(a));
}

static size_t conn_size(const struct trace_conn *c, bool with_id)
{
    size_t n = with_id && c->id ? 1 + pbwire_varint_len(c->id) : 0;
    if (c->local.present)
        n += ld_size(addr_size(&c->local));
    if (c->remote.present)
        n += ld_size(addr_size(&c->remote));
    return n;
}

/* v2 Event.Read/Write or v3 SocketEvent.Read/Write contents */
static size_t rw_size(bool v3, size_t len, bool end_stream, bool truncated)
{
    size_t n;
    if (v3)
        n = ld_size(ld_size(len) + (truncated ? 2 : 0)); /* Body{as_bytes|as_string, truncated} */
    else
        n = len ? ld_size(len) : 0;
    return n + (end_stream ? 2 : 0);
}

/* The v3 SocketEvent fields after the event (connection = 5, seq_num = 6); CONN NULL: none. */
static size_t extra_size(bool v3, const struct trace_event *ev, const struct trace_conn *conn)
{
    if (!v3)
        return 0;
    return (conn ? ld_size(conn_size(conn, false)) : 0) +
           (ev->seq_num ? 1 + pbwire_varint_len(ev->seq_num) : 0);
}

static size_t event_size(bool v3, const struct trace_event *ev, const struct trace_conn *conn)
{
    size_t n = ld_size(ts_size(ev->sec, ev->nsec)) + extra_size(v3, ev, conn);
    if (ev->dir == TRACE_EV_CLOSED)
        return n + 2;
    return n + ld_size(rw_size(v3, ev->len, ev->dir == TRACE_EV_WRITE && ev->end_stream,
                               v3 && ev->truncated));
}

/* ---- wire writers (capacity reserved by the caller) ---------------------------------- */

static void put_tag_len(struct tbuf *b, uint8_t tag, size_t len)
{
    b->data[b->len++] = tag;
    b->len += pbwire_varint_put(b->data + b->len, len);
}

static void put_tag_varint(struct tbuf *b, uint8_t tag, uint64_t v)
{
    b->data[b->len++] = tag;
    b->len += pbwire_varint_put(b->data + b->len, v);
}

static void put_addr(struct tbuf *b, uint8_t tag, const struct trace_addr *a)
{
    size_t alen = strnlen(a->address, sizeof(a->address));
    size_t sa = sockaddr_size(a);
    put_tag_len(b, tag, ld_size(sa));
    put_tag_len(b, 0x0a, sa); /* Address.socket_address = 1 */
    if (alen) {
        put_tag_len(b, 0x12, alen); /* SocketAddress.address = 2 */
        tbuf_raw(b, a->address, alen);
    }
    put_tag_varint(b, 0x18, a->port); /* port_value = 3, a oneof member: always written */
}

static void put_conn(struct tbuf *b, const struct trace_conn *c, bool v2)
{
    if (v2 && c->id)
        put_tag_varint(b, 0x08, c->id);
    /* v2 Connection: local 2, remote 3; v3 (current numbering): local 1, remote 2 */
    if (c->local.present)
        put_addr(b, v2 ? 0x12 : 0x0a, &c->local);
    if (c->remote.present)
        put_addr(b, v2 ? 0x1a : 0x12, &c->remote);
}

static void put_iov(struct tbuf *b, const struct trace_event *ev)
{
    if (ev->payload_at) {
        *ev->payload_at = b->len;
        return;
    }
    for (int i = 0; i < ev->iovcnt; i++) {
        memcpy(b->data + b->len, ev->iov[i].iov_base, ev->iov[i].iov_len);
        b->len += ev->iov[i].iov_len;
    }
}

static void put_event_extra(struct tbuf *b, bool v3, const struct trace_event *ev,
                            const struct trace_conn *conn);

static void put_event(struct tbuf *b, bool v3, bool as_string, const struct trace_event *ev,
                      const struct trace_conn *conn)
{
    size_t ts = ts_size(ev->sec, ev->nsec);
    put_tag_len(b, 0x0a, ts);
    if (ev->sec)
        put_tag_varint(b, 0x08, (uint64_t)ev->sec);
    if (ev->nsec)
        put_tag_varint(b, 0x10, (uint64_t)(int64_t)ev->nsec);
    if (ev->dir == TRACE_EV_CLOSED) {
        put_tag_len(b, 0x22, 0);
        put_event_extra(b, v3, ev, conn);
        return;
    }
    bool end = ev->dir == TRACE_EV_WRITE && ev->end_stream;
    bool trunc = v3 && ev->truncated;
    put_tag_len(b, ev->dir == TRACE_EV_READ ? 0x12 : 0x1a, rw_size(v3, ev->len, end, trunc));
    if (v3) {
        put_tag_len(b, 0x0a, ld_size(ev->len) + (trunc ? 2 : 0));
        put_tag_len(b, as_string ? 0x12 : 0x0a, ev->len);
        put_iov(b, ev);
        if (trunc)
            put_tag_varint(b, 0x18, 1);
    } else if (ev->len) {
        put_tag_len(b, 0x0a, ev->len);
        put_iov(b, ev);
    }
    if (end)
        put_tag_varint(b, 0x10, 1);
    put_event_extra(b, v3, ev, conn);
}

/* EV as a length-delimited field TAG of B (a repeated `events`), room reserved here. */
static int put_event_field(struct tbuf *b, uint8_t tag, bool v3, const struct trace_event *ev,
                           const struct trace_conn *conn)
{
    size_t es = event_size(v3, ev, conn);
    int rc = tbuf_reserve(b, ld_size(es));
    if (rc)
        return rc;
    put_tag_len(b, tag, es);
    put_event(b, v3, false, ev, conn);
    return 0;
}

static void put_event_extra(struct tbuf *b, bool v3, const struct trace_event *ev,
                            const struct trace_conn *conn)
{
    if (!v3)
        return;
    if (conn) {
        put_tag_len(b, 0x2a, conn_size(conn, false)); /* SocketEvent.connection = 5 */
        put_conn(b, conn, false);
    }
    if (ev->seq_num)
        put_tag_varint(b, 0x30, ev->seq_num); /* SocketEvent.seq_num = 6 */
}

/* ---- protobuf text --------------------------------------------------------------------- */

static int txt_open(struct tbuf *b, int ind, const char *name)
{
    int rc = tbuf_indent(b, ind);
    rc = rc ?: tbuf_str(b, name);
    return rc ?: tbuf_str(b, " {\n");
}

static int txt_close(struct tbuf *b, int ind)
{
    int rc = tbuf_indent(b, ind);
    return rc ?: tbuf_str(b, "}\n");
}

static int txt_u64(struct tbuf *b, int ind, const char *name, uint64_t v)
{
    int rc = tbuf_indent(b, ind);
    rc = rc ?: tbuf_str(b, name);
    rc = rc ?: tbuf_str(b, ": ");
    rc = rc ?: tbuf_u64(b, v);
    return rc ?: tbuf_str(b, "\n");
}

static int txt_i64(struct tbuf *b, int ind, const char *name, int64_t v)
{
    int rc = tbuf_indent(b, ind);
    rc = rc ?: tbuf_str(b, name);
    rc = rc ?: tbuf_str(b, ": ");
    rc = rc ?: tbuf_i64(b, v);
    return rc ?: tbuf_str(b, "\n");
}

static int txt_addr(struct tbuf *b, int ind, const char *name, const struct trace_addr *a)
{
    size_t alen = strnlen(a->address, sizeof(a->address));
    int rc = txt_open(b, ind, name);
    rc = rc ?: txt_open(b, ind + 2, "socket_address");
    if (!rc && alen) {
        struct iovec v = {(void *)a->address, alen};
        rc = tbuf_indent(b, ind + 4);
        rc = rc ?: tbuf_str(b, "address: \"");
        rc = rc ?: pbfmt_cescape_iov(b, &v, 1);
        rc = rc ?: tbuf_str(b, "\"\n");
    }
    rc = rc ?: txt_u64(b, ind + 4, "port_value", a->port);
    rc = rc ?: txt_close(b, ind + 2);
    return rc ?: txt_close(b, ind);
}

static int txt_conn(struct tbuf *b, int ind, const struct trace_conn *c, bool v2)
{
    int rc = txt_open(b, ind, "connection");
    if (!rc && v2 && c->id)
        rc = txt_u64(b, ind + 2, "id", c->id);
    if (!rc && c->local.present)
        rc = txt_addr(b, ind + 2, "local_address", &c->local);
    if (!rc && c->remote.present)
        rc = txt_addr(b, ind + 2, "remote_address", &c->remote);
    return rc ?: txt_close(b, ind);
}

static int txt_event_extra(struct tbuf *b, int ind, bool v3, const struct trace_event *ev,
                           const struct trace_conn *conn)
{
    int rc = 0;
    if (v3 && conn)
        rc = txt_conn(b, ind + 2, conn, false);
    if (!rc && v3 && ev->seq_num)
        rc = txt_u64(b, ind + 2, "seq_num", ev->seq_num);
    return rc ?: txt_close(b, ind);
}

static int txt_event(struct tbuf *b, int ind, const char *name, bool v3,
                     const struct trace_event *ev, const struct trace_conn *conn)
{
    int rc = txt_open(b, ind, name);
    rc = rc ?: txt_open(b, ind + 2, "timestamp");
    if (!rc && ev->sec)
        rc = txt_i64(b, ind + 4, "seconds", ev->sec);
    if (!rc && ev->nsec)
        rc = txt_i64(b, ind + 4, "nanos", ev->nsec);
    rc = rc ?: txt_close(b, ind + 2);
    if (rc)
        return rc;
    if (ev->dir == TRACE_EV_CLOSED) {
        rc = txt_open(b, ind + 2, "closed");
        rc = rc ?: txt_close(b, ind + 2);
        return rc ?: txt_event_extra(b, ind, v3, ev, conn);
    }
    bool end = ev->dir == TRACE_EV_WRITE && ev->end_stream;
    rc = txt_open(b, ind + 2, ev->dir == TRACE_EV_READ ? "read" : "write");
    int dind = ind + 4;
    if (!rc && v3) {
        rc = txt_open(b, ind + 4, "data");
        dind = ind + 6;
    }
    if (!rc && (v3 || ev->len)) {
        rc = tbuf_indent(b, dind);
        rc = rc ?: tbuf_str(b, v3 ? "as_bytes: \"" : "data: \"");
        rc = rc ?: pbfmt_cescape_iov(b, ev->iov, ev->iovcnt);
        rc = rc ?: tbuf_str(b, "\"\n");
    }
    if (!rc && v3 && ev->truncated) {
        rc = tbuf_indent(b, dind);
        rc = rc ?: tbuf_str(b, "truncated: true\n");
    }
    if (!rc && v3)
        rc = txt_close(b, ind + 4);
    if (!rc && end) {
        rc = tbuf_indent(b, ind + 4);
        rc = rc ?: tbuf_str(b, "end_stream: true\n");
    }
    rc = rc ?: txt_close(b, ind + 2);
    return rc ?: txt_event_extra(b, ind, v3, ev, conn);
}

/* ---- JSON (protobuf's mapping with Envoy's options: pretty, primitives always printed, proto
 * field names: MessageUtil::getJsonStringFromMessage in source/common/protobuf/utility.cc sets
 * preserve_proto_field_names, so Envoy writes "as_bytes", not "asBytes") ---------------------- */

static int js_key(struct tbuf *b, int ind, const char *key)
{
    int rc = tbuf_indent(b, ind);
    rc = rc ?: tbuf_str(b, "\"");
    rc = rc ?: tbuf_str(b, key);
    return rc ?: tbuf_str(b, "\": ");
}

static int js_addr(struct tbuf *b, int ind, const char *key, const struct trace_addr *a, bool last)
{
    size_t alen = strnlen(a->address, sizeof(a->address));
    int rc = js_key(b, ind, key);
    rc = rc ?: tbuf_str(b, "{\n");
    rc = rc ?: js_key(b, ind + 1, "socket_address");
    rc = rc ?: tbuf_str(b, "{\n");
    rc = rc ?: js_key(b, ind + 2, "protocol");
    rc = rc ?: tbuf_str(b, "\"TCP\",\n");
    rc = rc ?: js_key(b, ind + 2, "address");
    rc = rc ?: tbuf_str(b, "\"");
    rc = rc ?: pbfmt_json_escape(b, (const uint8_t *)a->address, alen);
    rc = rc ?: tbuf_str(b, "\",\n");
    rc = rc ?: js_key(b, ind + 2, "port_value");
    rc = rc ?: tbuf_u64(b, a->port);
    rc = rc ?: tbuf_str(b, ",\n");
    rc = rc ?: js_key(b, ind + 2, "resolver_name");
    rc = rc ?: tbuf_str(b, "\"\",\n");
    rc = rc ?: js_key(b, ind + 2, "ipv4_compat");
    rc = rc ?: tbuf_str(b, "false\n");
    rc = rc ?: tbuf_indent(b, ind + 1);
    rc = rc ?: tbuf_str(b, "}\n");
    rc = rc ?: tbuf_indent(b, ind);
    return rc ?: tbuf_str(b, last ? "}\n" : "},\n");
}

static int js_conn(struct tbuf *b, int ind, const struct trace_conn *c, bool last)
{
    int rc = js_key(b, ind, "connection");
    rc = rc ?: tbuf_str(b, "{\n");
    if (!rc && c->local.present)
        rc = js_addr(b, ind + 1, "local_address", &c->local, !c->remote.present);
    if (!rc && c->remote.present)
        rc = js_addr(b, ind + 1, "remote_address", &c->remote, true);
    rc = rc ?: tbuf_indent(b, ind);
    return rc ?: tbuf_str(b, last ? "}\n" : "},\n");
}

/* One SocketEvent object; KEY NULL inside an array. CONN: SocketEvent.connection, or NULL.
 * seq_num is a proto3 scalar: printed always, as a string (64-bit), like every primitive. */
static int js_event(struct tbuf *b, int ind, const char *key, bool as_string,
                    const struct trace_event *ev, const struct trace_conn *conn, bool last)
{
    int rc = key ? js_key(b, ind, key) : tbuf_indent(b, ind);
    rc = rc ?: tbuf_str(b, "{\n");
    rc = rc ?: js_key(b, ind + 1, "timestamp");
    rc = rc ?: tbuf_str(b, "\"");
    rc = rc ?: pbfmt_rfc3339(b, ev->sec, ev->nsec);
    rc = rc ?: tbuf_str(b, "\",\n");
    if (rc)
        return rc;
    if (ev->dir == TRACE_EV_CLOSED) {
        rc = js_key(b, ind + 1, "closed");
        rc = rc ?: tbuf_str(b, "{},\n");
    } else {
        rc = js_key(b, ind + 1, ev->dir == TRACE_EV_READ ? "read" : "write");
        rc = rc ?: tbuf_str(b, "{\n");
        rc = rc ?: js_key(b, ind + 2, "data");
        rc = rc ?: tbuf_str(b, "{\n");
        rc = rc ?: js_key(b, ind + 3, as_string ? "as_string" : "as_bytes");
        rc = rc ?: tbuf_str(b, "\"");
        if (!rc)
            rc = as_string ? pbfmt_json_escape_iov(b, ev->iov, ev->iovcnt)
                           : pbfmt_base64_iov(b, ev->iov, ev->iovcnt);
        rc = rc ?: tbuf_str(b, "\",\n");
        rc = rc ?: js_key(b, ind + 3, "truncated");
        rc = rc ?: tbuf_str(b, ev->truncated ? "true\n" : "false\n");
        rc = rc ?: tbuf_indent(b, ind + 2);
        if (ev->dir == TRACE_EV_WRITE) {
            rc = rc ?: tbuf_str(b, "},\n");
            rc = rc ?: js_key(b, ind + 2, "end_stream");
            rc = rc ?: tbuf_str(b, ev->end_stream ? "true\n" : "false\n");
        } else {
            rc = rc ?: tbuf_str(b, "}\n");
        }
        rc = rc ?: tbuf_indent(b, ind + 1);
        rc = rc ?: tbuf_str(b, "},\n");
    }
    if (!rc && conn)
        rc = js_conn(b, ind + 1, conn, false);
    rc = rc ?: js_key(b, ind + 1, "seq_num");
    rc = rc ?: tbuf_str(b, "\"");
    rc = rc ?: tbuf_u64(b, ev->seq_num);
    rc = rc ?: tbuf_str(b, "\"\n");
    rc = rc ?: tbuf_indent(b, ind);
    return rc ?: tbuf_str(b, last ? "}\n" : "},\n");
}

/* ---- public API ------------------------------------------------------------------------- */

static bool is_v3(const struct trace_enc *enc)
{
    return enc->cfg.schema == TRACE_SCHEMA_V3_TAP;
}

static bool is_json(enum trace_format f)
{
    return f == TRACE_FMT_JSON_BODY_AS_BYTES || f == TRACE_FMT_JSON_BODY_AS_STRING;
}

int trace_enc_new(const struct trace_enc_cfg *cfg, const struct trace_conn *conn,
                  struct trace_enc **out)
{
    if (cfg->schema == TRACE_SCHEMA_V2_CAPTURE && cfg->format != TRACE_FMT_PROTO_BINARY &&
        cfg->format != TRACE_FMT_PROTO_TEXT)
        return -EINVAL;
    struct trace_enc *enc = calloc(1, sizeof(*enc));
    if (!enc)
        return -ENOMEM;
    enc->cfg = *cfg;
    if (conn)
        enc->conn = *conn;
    enc->v3_buffered = cfg->schema == TRACE_SCHEMA_V3_TAP && !cfg->streaming;
    enc->seq_next = 1;
    *out = enc;
    return 0;
}

void trace_enc_free(struct trace_enc *enc)
{
    if (!enc)
        return;
    tbuf_free(&enc->held);
    tbuf_free(&enc->batch);
    free(enc);
}

/* The connection a streamed event repeats (set_connection_per_event), or NULL. */
static const struct trace_conn *ev_conn(const struct trace_enc *enc)
{
    return enc->cfg.conn_per_event ? &enc->conn : NULL;
}

/* v3 streamed segment bodies: SocketStreamedTraceSegment{trace_id, connection | event} */
static size_t seg_size(const struct trace_enc *enc, size_t piece)
{
    return (enc->conn.id ? 1 + pbwire_varint_len(enc->conn.id) : 0) + ld_size(piece);
}

/* A binary TraceWrapper's head: its length prefix (PROTO_BINARY_LENGTH_DELIMITED), the trace
 * field TAG of BODY bytes, and the trace_id both trace kinds start with (field 1); room for the
 * whole message is reserved here. */
static int bin_wrapper_open(struct trace_enc *enc, struct tbuf *out, uint8_t tag, size_t body)
{
    size_t wrapper = ld_size(body);
    int rc = tbuf_reserve(out, wrapper + 10);
    if (rc)
        return rc;
    if (enc->cfg.format == TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED)
        out->len += pbwire_varint_put(out->data + out->len, wrapper);
    put_tag_len(out, tag, body);
    if (enc->conn.id)
        put_tag_varint(out, 0x08, enc->conn.id);
    return 0;
}

static int bin_segment(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    size_t piece = ev ? event_size(true, ev, ev_conn(enc)) : conn_size(&enc->conn, false);
    /* TraceWrapper.socket_streamed_trace_segment = 4 */
    int rc = bin_wrapper_open(enc, out, 0x22, seg_size(enc, piece));
    if (rc)
        return rc;
    if (ev) {
        put_tag_len(out, 0x1a, piece);
        put_event(out, true, false, ev, ev_conn(enc));
    } else {
        put_tag_len(out, 0x12, piece);
        put_conn(out, &enc->conn, false);
    }
    return 0;
}

static int txt_segment(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    int rc = txt_open(out, 0, "socket_streamed_trace_segment");
    if (!rc && enc->conn.id)
        rc = txt_u64(out, 2, "trace_id", enc->conn.id);
    if (!rc)
        rc = ev ? txt_event(out, 2, "event", true, ev, ev_conn(enc))
                : txt_conn(out, 2, &enc->conn, false);
    return rc ?: txt_close(out, 0);
}

/* A JSON streamed segment's opening, up to its trace_id (the piece follows). */
static int js_segment_open(struct tbuf *out, uint64_t id)
{
    int rc = tbuf_str(out, "{\n");
    rc = rc ?: js_key(out, 1, "socket_streamed_trace_segment");
    rc = rc ?: tbuf_str(out, "{\n");
    rc = rc ?: js_key(out, 2, "trace_id");
    rc = rc ?: tbuf_str(out, "\"");
    rc = rc ?: tbuf_u64(out, id);
    return rc ?: tbuf_str(out, "\",\n");
}

static int js_segment(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    bool as_string = enc->cfg.format == TRACE_FMT_JSON_BODY_AS_STRING;
    int rc = js_segment_open(out, enc->conn.id);
    if (!rc)
        rc = ev ? js_event(out, 2, "event", as_string, ev, ev_conn(enc), true)
                : js_conn(out, 2, &enc->conn, true);
    rc = rc ?: tbuf_str(out, " }\n}\n");
    return rc;
}

#define CAP_STACK_IOV 16

static int segment_write(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out);

/* Envoy's streamed event body: at most max_buffered_rx/tx bytes of the read or write, with
 * Body.truncated when cut (Utility::addBufferToProtoBytes). Fills *CUT (IOV, of N entries, for
 * its gather list) and returns it, or EV when nothing is cut. */
static const struct trace_event *cap_event(const struct trace_enc *enc,
                                           const struct trace_event *ev, struct trace_event *cut,
                                           struct iovec *iov, int n)
{
    if (!enc->cfg.cap_streamed || (ev->dir != TRACE_EV_READ && ev->dir != TRACE_EV_WRITE))
        return ev;
    size_t max = ev->dir == TRACE_EV_READ ? enc->cfg.max_buffered_rx : enc->cfg.max_buffered_tx;
    if (ev->len <= max)
        return ev;
    *cut = *ev;
    cut->len = max;
    cut->truncated = true;
    cut->iov = iov;
    cut->iovcnt = 0;
    for (size_t left = max; left && cut->iovcnt < ev->iovcnt && cut->iovcnt < n; cut->iovcnt++) {
        iov[cut->iovcnt] = ev->iov[cut->iovcnt];
        if (iov[cut->iovcnt].iov_len > left)
            iov[cut->iovcnt].iov_len = left;
        left -= iov[cut->iovcnt].iov_len;
    }
    return cut;
}

/* min_streamed_sent: appends EV to the batch as an element of SocketEvents.events, in the
 * format's form (binary: field 1 records; text: `events {}` blocks at the segment's depth;
 * JSON: array elements, the previous one given its comma). */
static int batch_add(struct trace_enc *enc, const struct trace_event *ev)
{
    struct tbuf *b = &enc->batch;
    const struct trace_conn *conn = ev_conn(enc);
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT)
        return txt_event(b, 4, "events", true, ev, conn);
    if (is_json(enc->cfg.format)) {
        int rc = 0;
        if (b->len) {
            b->len--; /* the previous element's "}\n" becomes "},\n" */
            rc = tbuf_str(b, ",\n");
        }
        return rc
                   ?: js_event(b, 4, NULL, enc->cfg.format == TRACE_FMT_JSON_BODY_AS_STRING, ev,
                               conn, true);
    }
    return put_event_field(b, 0x0a, true, ev, conn); /* SocketEvents.events = 1 */
}

/* Writes the held events as one TraceWrapper{socket_streamed_trace_segment{trace_id, events}}
 * and empties the batch. Nothing when none is held. */
static int batch_flush(struct trace_enc *enc, struct tbuf *out)
{
    struct tbuf *b = &enc->batch;
    const struct trace_conn *c = &enc->conn;
    int rc = 0;
    if (!enc->batch_n)
        return 0;
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT) {
        rc = txt_open(out, 0, "socket_streamed_trace_segment");
        if (!rc && c->id)
            rc = txt_u64(out, 2, "trace_id", c->id);
        rc = rc ?: txt_open(out, 2, "events");
        rc = rc ?: tbuf_append(out, b->data, b->len);
        rc = rc ?: txt_close(out, 2);
        rc = rc ?: txt_close(out, 0);
    } else if (is_json(enc->cfg.format)) {
        rc = js_segment_open(out, c->id);
        rc = rc ?: js_key(out, 2, "events");
        rc = rc ?: tbuf_str(out, "{\n");
        rc = rc ?: js_key(out, 3, "events");
        rc = rc ?: tbuf_str(out, "[\n");
        rc = rc ?: tbuf_append(out, b->data, b->len);
        rc = rc ?: tbuf_str(out, "   ]\n  }\n }\n}\n");
    } else {
        if ((rc = bin_wrapper_open(enc, out, 0x22, seg_size(enc, b->len))))
            return rc;
        put_tag_len(out, 0x22, b->len); /* SocketStreamedTraceSegment.events = 4 */
        tbuf_raw(out, b->data, b->len);
    }
    if (rc)
        return rc;
    b->len = 0;
    enc->batch_n = 0;
    enc->batch_body = 0;
    return 0;
}

/* seq_num (envoy#42641, data-plane-api ca21a210 "Data sequence number"): the PR says it "starts
 * at 1 for the first packet of a connection", works "similar to a TCP sequence number", and the
 * final event at close carries the maximum 64-bit value. Envoy's stored source predates the PR
 * (source/extensions/transport_sockets/tap/tap_config_impl.cc has no seq_num), so the step is
 * taken from the one Envoy code that advances it, contrib/tap_sinks/udp_sink/source/
 * udp_sink_impl.cc setStreamedTraceDataAndSubmit: a slice of an event gets `seq_num += bytes`,
 * i.e. the number counts bytes, as TCP's does. Here: an event's seq_num is 1 + the bytes the
 * connection moved (both directions, before max_buffered cuts) before it. Rejected: one per
 * event (slices of a big event sent by the UDP sink would then collide with the next event). */
static void seq_assign(struct trace_enc *enc, struct trace_event *ev)
{
    if (ev->dir == TRACE_EV_CLOSED) {
        ev->seq_num = UINT64_MAX;
        return;
    }
    ev->seq_num = enc->seq_last = enc->seq_next;
    enc->seq_next += ev->len;
}

uint64_t trace_enc_seq_next(const struct trace_enc *enc)
{
    return enc->seq_next;
}

void trace_enc_set_seq_next(struct trace_enc *enc, uint64_t next)
{
    enc->seq_next = next;
}

void trace_enc_set_conn(struct trace_enc *enc, const struct trace_conn *conn)
{
    enc->conn = *conn;
}

void trace_enc_forget_last(struct trace_enc *enc)
{
    if (enc->seq_last)
        enc->seq_next = enc->seq_last;
}

static int segment(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    struct trace_event numbered;
    if (ev && enc->cfg.seq_num) {
        numbered = *ev;
        seq_assign(enc, &numbered);
        ev = &numbered;
    }
    struct trace_event cut;
    struct iovec iov[CAP_STACK_IOV];
    int n = ev ? ev->iovcnt : 0;
    struct iovec *big = NULL;
    if (ev && enc->cfg.cap_streamed && n > CAP_STACK_IOV && !(big = malloc(n * sizeof(*big))))
        return -ENOMEM;
    if (ev)
        ev = cap_event(enc, ev, &cut, big ? big : iov, big ? n : CAP_STACK_IOV);
    int rc;
    if (ev && enc->cfg.min_streamed_sent) {
        rc = batch_add(enc, ev);
        if (!rc) {
            enc->batch_n++;
            enc->batch_body += ev->len;
            if (enc->batch_body >= enc->cfg.min_streamed_sent)
                rc = batch_flush(enc, out);
        }
    } else {
        rc = segment_write(enc, ev, out);
    }
    free(big);
    return rc;
}

static int segment_write(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT)
        return txt_segment(enc, ev, out);
    if (is_json(enc->cfg.format))
        return js_segment(enc, ev, out);
    return bin_segment(enc, ev, out);
}

int trace_enc_begin(struct trace_enc *enc, struct tbuf *out)
{
    if (is_v3(enc))
        return enc->v3_buffered ? 0 : segment(enc, NULL, out);
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT)
        return txt_conn(out, 0, &enc->conn, true);
    size_t cs = conn_size(&enc->conn, true);
    int rc = tbuf_reserve(out, ld_size(cs));
    if (rc)
        return rc;
    put_tag_len(out, 0x0a, cs); /* Trace.connection = 1, always set by Envoy */
    put_conn(out, &enc->conn, true);
    return 0;
}

/* Envoy's buffered mode: each direction keeps at most max_buffered bytes; the event that
 * crosses the limit is cut (Body.truncated) and marks the trace, later ones are dropped. */
static int hold_event(struct trace_enc *enc, const struct trace_event *ev)
{
    /* Envoy's buffered trace has no closed event: closeSocket submits the trace instead
     * (source/extensions/transport_sockets/tap/tap_config_impl.cc). */
    if (ev->dir == TRACE_EV_CLOSED)
        return 0;
    uint32_t *used = NULL, max = 0;
    bool *flag = NULL;
    if (ev->dir == TRACE_EV_READ)
        used = &enc->rx_used, max = enc->cfg.max_buffered_rx, flag = &enc->read_truncated;
    else if (ev->dir == TRACE_EV_WRITE)
        used = &enc->tx_used, max = enc->cfg.max_buffered_tx, flag = &enc->write_truncated;
    size_t keep = ev->len;
    bool cut = false;
    if (used) {
        if (*flag)
            return 0;
        if (keep > (size_t)(max - *used)) {
            keep = max - *used;
            cut = true;
        }
    }
    struct held_event h = {.sec = ev->sec,
                           .nsec = ev->nsec,
                           .dir = (uint8_t)ev->dir,
                           .end_stream = ev->end_stream,
                           .truncated = ev->truncated || cut,
                           .len = (uint32_t)keep};
    int rc = tbuf_reserve(&enc->held, sizeof(h) + keep);
    if (rc)
        return rc;
    tbuf_raw(&enc->held, &h, sizeof(h));
    size_t left = keep;
    for (int i = 0; i < ev->iovcnt && left; i++) {
        size_t n = ev->iov[i].iov_len < left ? ev->iov[i].iov_len : left;
        memcpy(enc->held.data + enc->held.len, ev->iov[i].iov_base, n);
        enc->held.len += n;
        left -= n;
    }
    if (used) {
        *used += (uint32_t)keep;
        if (cut)
            *flag = true;
    }
    return 0;
}

int trace_enc_event(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out)
{
    if (enc->v3_buffered)
        return hold_event(enc, ev);
    if (is_v3(enc))
        return segment(enc, ev, out);
    if (ev->dir == TRACE_EV_CLOSED)
        return 0; /* v2alpha has no close event */
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT)
        return txt_event(out, 0, "events", false, ev, NULL);
    return put_event_field(out, 0x12, false, ev, NULL); /* Trace.events = 2 */
}

size_t trace_enc_held_bytes(const struct trace_enc *enc)
{
    return enc->batch.len;
}

size_t trace_enc_split_max(const struct trace_enc *enc, enum trace_dir dir)
{
    if (enc->v3_buffered || enc->cfg.min_streamed_sent || dir == TRACE_EV_CLOSED)
        return 0;
    if (enc->cfg.format != TRACE_FMT_PROTO_BINARY &&
        !(is_v3(enc) && enc->cfg.format == TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED))
        return 0;
    if (!enc->cfg.cap_streamed)
        return SIZE_MAX;
    /* a longer body would be cut (cap_event): not written whole */
    return dir == TRACE_EV_READ ? enc->cfg.max_buffered_rx : enc->cfg.max_buffered_tx;
}

int trace_enc_event_split(struct trace_enc *enc, const struct trace_event *ev, struct tbuf *out,
                          size_t *payload_at)
{
    if (ev->len == 0 || ev->len > trace_enc_split_max(enc, ev->dir))
        return -ENOTSUP;
    struct trace_event e = *ev;
    size_t before = out->len;
    e.payload_at = payload_at;
    *payload_at = SIZE_MAX;
    int rc = trace_enc_event(enc, &e, out);
    if (!rc && (*payload_at == SIZE_MAX || *payload_at < before))
        rc = -EPROTO; /* cannot happen for the formats trace_enc_split_max accepts */
    return rc;
}

/* Walks the held events, calling FN with each as a trace_event. */
static int held_each(struct trace_enc *enc,
                     int (*fn)(struct trace_enc *, const struct trace_event *, bool last, void *),
                     void *arg)
{
    size_t off = 0;
    while (off < enc->held.len) {
        struct held_event h;
        memcpy(&h, enc->held.data + off, sizeof(h));
        off += sizeof(h);
        struct iovec v = {enc->held.data + off, h.len};
        struct trace_event ev = {.sec = h.sec,
                                 .nsec = h.nsec,
                                 .dir = (enum trace_dir)h.dir,
                                 .iov = &v,
                                 .iovcnt = 1,
                                 .len = h.len,
                                 .end_stream = h.end_stream,
                                 .truncated = h.truncated};
        off += h.len;
        int rc = fn(enc, &ev, off >= enc->held.len, arg);
        if (rc)
            return rc;
    }
    return 0;
}

static int held_size_cb(struct trace_enc *enc, const struct trace_event *ev, bool last, void *arg)
{
    *(size_t *)arg += ld_size(event_size(true, ev, NULL));
    return 0;
}

static int held_bin_cb(struct trace_enc *enc, const struct trace_event *ev, bool last, void *arg)
{
    struct tbuf *out = arg;
    put_tag_len(out, 0x1a, event_size(true, ev, NULL)); /* SocketBufferedTrace.events = 3 */
    put_event(out, true, false, ev, NULL);
    return 0;
}

static int held_txt_cb(struct trace_enc *enc, const struct trace_event *ev, bool last, void *arg)
{
    return txt_event(arg, 2, "events", true, ev, NULL);
}

static int held_js_cb(struct trace_enc *enc, const struct trace_event *ev, bool last, void *arg)
{
    return js_event(arg, 3, NULL, enc->cfg.format == TRACE_FMT_JSON_BODY_AS_STRING, ev, NULL, last);
}

static int end_buffered(struct trace_enc *enc, struct tbuf *out)
{
    const struct trace_conn *c = &enc->conn;
    int rc;
    if (enc->cfg.format == TRACE_FMT_PROTO_TEXT) {
        rc = txt_open(out, 0, "socket_buffered_trace");
        if (!rc && c->id)
            rc = txt_u64(out, 2, "trace_id", c->id);
        rc = rc ?: txt_conn(out, 2, c, false);
        rc = rc ?: held_each(enc, held_txt_cb, out);
        if (!rc && enc->read_truncated)
            rc = tbuf_str(out, "  read_truncated: true\n");
        if (!rc && enc->write_truncated)
            rc = tbuf_str(out, "  write_truncated: true\n");
        return rc ?: txt_close(out, 0);
    }
    if (is_json(enc->cfg.format)) {
        rc = tbuf_str(out, "{\n");
        rc = rc ?: js_key(out, 1, "socket_buffered_trace");
        rc = rc ?: tbuf_str(out, "{\n");
        rc = rc ?: js_key(out, 2, "trace_id");
        rc = rc ?: tbuf_str(out, "\"");
        rc = rc ?: tbuf_u64(out, c->id);
        rc = rc ?: tbuf_str(out, "\",\n");
        rc = rc ?: js_conn(out, 2, c, false);
        rc = rc ?: js_key(out, 2, "events");
        if (!rc && enc->held.len) {
            rc = tbuf_str(out, "[\n");
            rc = rc ?: held_each(enc, held_js_cb, out);
            rc = rc ?: tbuf_str(out, "  ],\n");
        } else if (!rc) {
            rc = tbuf_str(out, "[],\n");
        }
        rc = rc ?: js_key(out, 2, "read_truncated");
        rc = rc ?: tbuf_str(out, enc->read_truncated ? "true,\n" : "false,\n");
        rc = rc ?: js_key(out, 2, "write_truncated");
        rc = rc ?: tbuf_str(out, enc->write_truncated ? "true\n" : "false\n");
        return rc ?: tbuf_str(out, " }\n}\n");
    }
    size_t evs = 0;
    held_each(enc, held_size_cb, &evs);
    size_t cs = conn_size(c, false);
    size_t body = (c->id ? 1 + pbwire_varint_len(c->id) : 0) + ld_size(cs) + evs +
                  (enc->read_truncated ? 2 : 0) + (enc->write_truncated ? 2 : 0);
    if ((rc = bin_wrapper_open(enc, out, 0x1a, body))) /* TraceWrapper.socket_buffered_trace = 3 */
        return rc;
    put_tag_len(out, 0x12, cs);
    put_conn(out, c, false);
    held_each(enc, held_bin_cb, out);
    if (enc->read_truncated)
        put_tag_varint(out, 0x20, 1);
    if (enc->write_truncated)
        put_tag_varint(out, 0x28, 1);
    return 0;
}

bool trace_enc_mark_truncated(struct trace_enc *enc, bool read, bool write)
{
    enc->read_truncated |= read;
    enc->write_truncated |= write;
    return enc->v3_buffered;
}

int trace_enc_end(struct trace_enc *enc, struct tbuf *out)
{
    if (enc->v3_buffered)
        return end_buffered(enc, out);
    return is_v3(enc) ? batch_flush(enc, out) : 0;
}

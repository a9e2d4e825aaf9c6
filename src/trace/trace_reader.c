/* Incremental trace readers (see trace_reader.h).
 *
 * One engine for every format: a stack of frames, each a container message being streamed
 * field by field (v2 Trace, TraceWrapper, socket_buffered_trace, a streamed segment, a JSON
 * events array). Containers are never held in memory; only their leaf records (a Connection,
 * one event) are, one at a time, decoded into protobuf-c messages (binary: protobuf-c unpack;
 * text/JSON: the generic codecs in pbcodec.h) and converted to trace_event. The same dispatch
 * echoes protobuf text for `socktap-trace dump`.
 *
 * Binary input goes through one buffer that holds at most the current record (plus a read
 * block), so memory is bounded by max_event. A record that does not unpack is re-walked by a
 * descriptor-driven wire checker to name the exact byte offset of the fault. Rejected: reading
 * a whole Trace with protobuf_c_message_unpack (memory = trace size, no offsets).
 *
 * v3 events are decoded with the reader's own copy of the SocketEvent descriptors in which
 * Body.as_string is bytes: protobuf-c keeps a `string` as a NUL-terminated char *, which cuts
 * a body at its first NUL (an HTTP/2 trace lost all but 24 of 16,298 bytes); bytes keep their
 * length, and the wire, text and (with PBFIELD_FLAG_TEXT_BYTES) JSON forms are the same.
 *
 * Unknown fields are skipped and counted everywhere: top-level fields here, fields inside
 * records from protobuf-c's unknown_fields (binary) or by the text/JSON parsers.
 *
 * Follow mode is a rewind, not a resumable parser: every step of bin_next (one top-level or
 * container field: a key, its length and a whole record, or a scalar) has its side effects only
 * after all its bytes are in the buffer, so a step the input cuts short is simply parsed again
 * from its first byte (the mark) when more bytes exist. The cost is re-reading one field
 * header per wait. Rejected: a state machine per varint/record (every path of bin_next twice)
 * and fseek back to the mark (no pipes, no decompressed streams later). */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/data/tap/v2alpha/capture.pb-c.h"
#include "envoy/data/tap/v3/transport.pb-c.h"
#include "envoy/data/tap/v3/wrapper.pb-c.h"
#include "socktap/trace/legacy.pb-c.h"

#include "trace/pbcodec.h"
#include "trace/pbfmt.h"
#include "trace/pbwire.h"
#include "trace/trace_reader.h"
#include "trace/trace_zin.h"

enum frame_kind {
    FR_V2_TRACE,  /* envoy.data.tap.v2alpha.Trace */
    FR_WRAPPERS,  /* top of a v3 input: wrappers one after another (binary: their fields) */
    FR_LD,        /* top of a length-delimited input: varint length + TraceWrapper, repeated */
    FR_WRAPPER,   /* one TraceWrapper (LD element, or a JSON/text object) */
    FR_BUFFERED,  /* SocketBufferedTrace */
    FR_SEGMENT,   /* SocketStreamedTraceSegment */
    FR_EVENTS,    /* SocketEvents (SocketStreamedTraceSegment.events) */
    FR_JS_EVENTS, /* JSON array of SocketBufferedTrace.events / SocketEvents.events */
};

struct frame {
    enum frame_kind kind;
    uint64_t end; /* binary: offset where it ends (UINT64_MAX: end of input) */
    char close;   /* text/JSON: the closing punctuation */
    bool first;   /* JSON: no member seen yet */
    int indent;   /* echo indentation of its fields */
};

#define MAX_DEPTH  8
#define READ_BLOCK 65536

/* A connection as the reader keeps it: DELIVERED once an event of it was returned, after which
 * its addresses no longer change (capture2pcap keys flows on them). */
struct reader_conn {
    struct trace_conn c; /* first: the public pointer is this struct's */
    bool delivered;
};

/* The reader's copy of envoy.data.tap.v3.SocketEvent and the messages down to Body, with
 * Body.as_string retyped as bytes (see the top of the file). Sizes checked at open. */
#define SCHEMA_MAX_FIELDS 8
struct ev_schema {
    ProtobufCMessageDescriptor ev, rd, wr, body;
    ProtobufCFieldDescriptor ev_f[SCHEMA_MAX_FIELDS], rd_f[SCHEMA_MAX_FIELDS],
        wr_f[SCHEMA_MAX_FIELDS], body_f[SCHEMA_MAX_FIELDS];
};

struct trace_reader {
    FILE *f;   /* what the readers parse: the input, or zf over it */
    FILE *raw; /* the input */
    bool own_f;
    struct trace_zin *zin; /* compressed input: the decoder behind zf (owned by zf) */
    enum trace_zin_alg zalg;
    FILE *zf; /* owned */
    struct trace_reader_opts opts;
    enum trace_in_format fmt;
    bool started;
    int err;
    char errmsg[512];

    /* binary input window: buf[pos..end) is input at offset base + pos */
    uint8_t *buf;
    size_t cap, pos, end, consume;
    uint64_t base;
    bool eof;
    /* follow mode: offset where the field being parsed starts; bytes from there stay in buf,
     * and an input that ends before the field does rewinds pos to it (-EAGAIN) */
    uint64_t mark;
    bool followed; /* follow mode was on at some point: EOF is not sticky */

    struct frame st[MAX_DEPTH];
    int depth;

    struct trace_conn **conns;
    size_t nconns;
    struct trace_conn *cur;
    int cur_depth; /* frame depth that created CUR (a later trace_id relabels it) */
    enum trace_conn_fields conn_fields;

    ProtobufCMessage *msg; /* the record behind the last event, freed at the next call */
    struct iovec iov;
    bool have_event;
    struct trace_event ev;
    bool read_truncated, write_truncated;
    bool follow_text; /* follow mode met text/JSON: waits for the end */

    struct pblex lx;
    bool lx_on;

    FILE *echo;
    struct tbuf ebuf;

    struct trace_unknown_tally unknown;
    struct ev_schema schema;
};

/* ---- errors ------------------------------------------------------------------------------- */

static int __attribute__((format(printf, 4, 5)))
fail(struct trace_reader *r, int err, uint64_t off, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    const char *name = r->opts.name ? r->opts.name : "<input>";
    if (err == -ENODATA)
        snprintf(r->errmsg, sizeof(r->errmsg), "%s: truncated at offset %llu: %s", name,
                 (unsigned long long)off, what);
    else
        snprintf(r->errmsg, sizeof(r->errmsg), "%s: corrupt at offset %llu: %s", name,
                 (unsigned long long)off, what);
    r->err = err;
    return err;
}

/* Text/JSON errors carry line:col (and the offset). */
static int fail_lex(struct trace_reader *r, int rc)
{
    const char *name = r->opts.name ? r->opts.name : "<input>";
    if (rc == -ENOMEM)
        return r->err = rc;
    snprintf(r->errmsg, sizeof(r->errmsg), "%s:%u:%u: %s%s (offset %llu)", name, r->lx.err_line,
             r->lx.err_col, rc == -ENODATA ? "truncated: " : "", r->lx.err,
             (unsigned long long)r->lx.err_off);
    return r->err = rc;
}

/* ---- echo (dump) -------------------------------------------------------------------------- */

static void echo_flush(struct trace_reader *r)
{
    if (r->echo && r->ebuf.len) {
        fwrite(r->ebuf.data, 1, r->ebuf.len, r->echo);
        r->ebuf.len = 0;
    }
}

static void echo_line(struct trace_reader *r, int indent, const char *a, const char *b)
{
    if (!r->echo)
        return;
    int rc = tbuf_indent(&r->ebuf, indent);
    rc = rc ?: tbuf_str(&r->ebuf, a);
    rc = rc ?: tbuf_str(&r->ebuf, b);
    if (r->ebuf.len > READ_BLOCK)
        echo_flush(r);
}

static void echo_msg(struct trace_reader *r, int indent, const char *name,
                     const ProtobufCMessage *m)
{
    if (!r->echo)
        return;
    pbtext_print_named(&r->ebuf, name, m, indent);
    if (r->ebuf.len > READ_BLOCK)
        echo_flush(r);
}

static void echo_u64(struct trace_reader *r, int indent, const char *name, uint64_t v, bool b)
{
    if (!r->echo || !v)
        return;
    tbuf_indent(&r->ebuf, indent);
    tbuf_str(&r->ebuf, name);
    tbuf_str(&r->ebuf, ": ");
    if (b)
        tbuf_str(&r->ebuf, "true");
    else
        tbuf_u64(&r->ebuf, v);
    tbuf_str(&r->ebuf, "\n");
}

/* ---- frames and the schema ---------------------------------------------------------------- */

static const ProtobufCMessageDescriptor *frame_desc(enum frame_kind k)
{
    switch (k) {
    case FR_V2_TRACE:
        return &envoy__data__tap__v2alpha__trace__descriptor;
    case FR_BUFFERED:
        return &envoy__data__tap__v3__socket_buffered_trace__descriptor;
    case FR_SEGMENT:
        return &envoy__data__tap__v3__socket_streamed_trace_segment__descriptor;
    case FR_EVENTS:
        return &envoy__data__tap__v3__socket_events__descriptor;
    default:
        return &envoy__data__tap__v3__trace_wrapper__descriptor;
    }
}

static int push(struct trace_reader *r, enum frame_kind kind, uint64_t end, char close,
                const char *echo_name)
{
    if (r->depth >= MAX_DEPTH)
        return -EBADMSG;
    int indent = r->depth ? r->st[r->depth - 1].indent : 0;
    if (echo_name) {
        echo_line(r, indent, echo_name, " {\n");
        indent += 2;
    }
    r->st[r->depth++] =
        (struct frame){.kind = kind, .end = end, .close = close, .first = true, .indent = indent};
    if (kind == FR_BUFFERED || kind == FR_SEGMENT) {
        r->cur = NULL; /* a new trace (or segment): its trace_id picks the conn */
        r->cur_depth = r->depth;
    }
    return 0;
}

static void pop(struct trace_reader *r)
{
    struct frame *fr = &r->st[--r->depth];
    if (fr->kind == FR_BUFFERED || fr->kind == FR_SEGMENT || fr->kind == FR_EVENTS ||
        (fr->kind == FR_WRAPPER && fr->indent > 0))
        echo_line(r, r->depth ? r->st[r->depth - 1].indent : 0, "}", "\n");
}

static struct trace_conn *conn_for_id(struct trace_reader *r, uint64_t id)
{
    for (size_t i = r->nconns; i-- > 0;)
        if (r->conns[i]->id == id)
            return r->conns[i];
    struct trace_conn **a = realloc(r->conns, (r->nconns + 1) * sizeof(*a));
    if (!a)
        return NULL;
    r->conns = a;
    struct reader_conn *rc = calloc(1, sizeof(*rc));
    if (!rc)
        return NULL;
    rc->c.id = id;
    r->conns[r->nconns++] = &rc->c;
    return &rc->c;
}

static struct trace_conn *cur_conn(struct trace_reader *r)
{
    if (!r->cur)
        r->cur = conn_for_id(r, 0);
    return r->cur;
}

static void set_trace_id(struct trace_reader *r, uint64_t id)
{
    /* A connection seen before trace_id in this same frame (JSON key order) is relabelled. */
    if (r->cur && r->cur->id == 0 && r->cur_depth == r->depth) {
        for (size_t i = 0; i < r->nconns; i++)
            if (r->conns[i]->id == id && r->conns[i] != r->cur)
                goto lookup;
        r->cur->id = id;
        return;
    }
lookup:
    r->cur = conn_for_id(r, id);
}

/* Stores one socket address (ADDRESS NULL: empty; HAS_PORT false: port 0). */
static void take_sock(struct trace_addr *a, const char *address, bool has_port, uint32_t port)
{
    a->present = true;
    size_t n = address ? strlen(address) : 0;
    if (n >= sizeof(a->address))
        n = sizeof(a->address) - 1;
    memcpy(a->address, address ? address : "", n);
    a->address[n] = 0;
    a->port = has_port ? port : 0;
}

static void take_addr(struct trace_addr *a, const Envoy__Config__Core__V3__Address *ad)
{
    if (!ad || ad->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
        !ad->socket_address)
        return;
    const Envoy__Config__Core__V3__SocketAddress *sa = ad->socket_address;
    take_sock(a, sa->address,
              sa->port_specifier_case ==
                  ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE,
              sa->port_value);
}

/* v2 core's SocketAddress has no network_namespace_filepath, so its layout differs from v3's:
 * read through its own type, never a cast. */
static void take_addr_v2(struct trace_addr *a, const Envoy__Api__V2__Core__Address *ad)
{
    if (!ad || ad->address_case != ENVOY__API__V2__CORE__ADDRESS__ADDRESS_SOCKET_ADDRESS ||
        !ad->socket_address)
        return;
    const Envoy__Api__V2__Core__SocketAddress *sa = ad->socket_address;
    take_sock(a, sa->address,
              sa->port_specifier_case ==
                  ENVOY__API__V2__CORE__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE,
              sa->port_value);
}

static int on_conn(struct trace_reader *r, enum frame_kind k, ProtobufCMessage *m)
{
    const int ind = r->st[r->depth - 1].indent;
    echo_msg(r, ind, "connection", m);
    struct trace_conn *c;
    if (k == FR_V2_TRACE) {
        const Envoy__Data__Tap__V2alpha__Connection *v = (void *)m;
        c = conn_for_id(r, v->id);
        r->cur = c;
        if (c) {
            take_addr_v2(&c->local, v->local_address);
            take_addr_v2(&c->remote, v->remote_address);
        }
    } else {
        c = cur_conn(r);
        if (c && m->descriptor == &socktap__trace__legacy__connection_v3_old__descriptor) {
            const Socktap__Trace__Legacy__ConnectionV3Old *v = (void *)m;
            take_addr(&c->local, v->local_address);
            take_addr(&c->remote, v->remote_address);
        } else if (c) {
            const Envoy__Data__Tap__V3__Connection *v = (void *)m;
            take_addr(&c->local, v->local_address);
            take_addr(&c->remote, v->remote_address);
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return c ? 0 : -ENOMEM;
}

static void set_ts(struct trace_event *ev, const Google__Protobuf__Timestamp *ts)
{
    ev->sec = ts ? ts->seconds : 0;
    ev->nsec = ts ? ts->nanos : 0;
}

static void set_body(struct trace_reader *r, const Envoy__Data__Tap__V3__Body *b)
{
    r->iov.iov_base = NULL;
    r->iov.iov_len = 0;
    if (!b)
        return;
    /* as_string was decoded as bytes into the same union (struct ev_schema) */
    if (b->body_type_case == ENVOY__DATA__TAP__V3__BODY__BODY_TYPE_AS_BYTES ||
        b->body_type_case == ENVOY__DATA__TAP__V3__BODY__BODY_TYPE_AS_STRING) {
        r->iov.iov_base = b->as_bytes.data;
        r->iov.iov_len = b->as_bytes.len;
    }
    r->ev.truncated = b->truncated;
}

/* SocketEvent.connection (Envoy's set_connection_per_event): fills the addresses the
 * connection does not have yet, as long as none of its events was delivered. */
static void take_event_conn(struct trace_reader *r, const Envoy__Data__Tap__V3__Connection *ec)
{
    struct reader_conn *c = (struct reader_conn *)cur_conn(r);
    if (!ec || !c || c->delivered)
        return;
    if (!c->c.local.present)
        take_addr(&c->c.local, ec->local_address);
    if (!c->c.remote.present)
        take_addr(&c->c.remote, ec->remote_address);
}

/* Counts the unknown fields protobuf-c kept in M and its sub-messages (binary records). */
static void note_unknown_fields(struct trace_reader *r, const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < m->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &m->unknown_fields[i];
        /* u->data is the value after the key (a length-delimited one with its length): all
         * zero bytes means 0, or an empty string/message */
        bool data = false;
        for (size_t k = 0; k < u->len && !data; k++)
            data = u->data[k] != 0;
        char num[16];
        snprintf(num, sizeof(num), "%u", u->tag);
        pb_unknown_note(&r->unknown, d->name, num,
                        pbwire_varint_len((uint64_t)u->tag << 3) + u->len, data);
    }
    if (depth > PB_SKIP_MAX_DEPTH)
        return;
    const uint8_t *base = (const uint8_t *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        if (fd->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + fd->quantifier_offset);
            ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)(base + fd->offset);
            for (size_t k = 0; k < n; k++)
                note_unknown_fields(r, arr[k], depth + 1);
        } else if (pbfield_present(m, fd)) {
            note_unknown_fields(r, *(ProtobufCMessage *const *)(base + fd->offset), depth + 1);
        }
    }
}

/* Takes ownership of M; returns 1 when it produced an event. */
static int on_event(struct trace_reader *r, enum frame_kind k, ProtobufCMessage *m)
{
    const int ind = r->st[r->depth - 1].indent;
    echo_msg(r, ind, k == FR_V2_TRACE ? "events" : k == FR_SEGMENT ? "event" : "events", m);
    memset(&r->ev, 0, sizeof(r->ev));
    r->iov.iov_base = NULL;
    r->iov.iov_len = 0;
    bool ok = true;
    if (k == FR_V2_TRACE) {
        const Envoy__Data__Tap__V2alpha__Event *e = (void *)m;
        set_ts(&r->ev, e->timestamp);
        if (e->event_selector_case == ENVOY__DATA__TAP__V2ALPHA__EVENT__EVENT_SELECTOR_READ &&
            e->read) {
            r->ev.dir = TRACE_EV_READ;
            r->iov.iov_base = e->read->data.data;
            r->iov.iov_len = e->read->data.len;
        } else if (e->event_selector_case ==
                       ENVOY__DATA__TAP__V2ALPHA__EVENT__EVENT_SELECTOR_WRITE &&
                   e->write) {
            r->ev.dir = TRACE_EV_WRITE;
            r->iov.iov_base = e->write->data.data;
            r->iov.iov_len = e->write->data.len;
            r->ev.end_stream = e->write->end_stream;
        } else {
            ok = false;
        }
    } else {
        const Envoy__Data__Tap__V3__SocketEvent *e = (void *)m;
        set_ts(&r->ev, e->timestamp);
        take_event_conn(r, e->connection);
        r->ev.seq_num = e->seq_num;
        switch (e->event_selector_case) {
        case ENVOY__DATA__TAP__V3__SOCKET_EVENT__EVENT_SELECTOR_READ:
            r->ev.dir = TRACE_EV_READ;
            set_body(r, e->read ? e->read->data : NULL);
            break;
        case ENVOY__DATA__TAP__V3__SOCKET_EVENT__EVENT_SELECTOR_WRITE:
            r->ev.dir = TRACE_EV_WRITE;
            set_body(r, e->write ? e->write->data : NULL);
            r->ev.end_stream = e->write && e->write->end_stream;
            break;
        case ENVOY__DATA__TAP__V3__SOCKET_EVENT__EVENT_SELECTOR_CLOSED:
            r->ev.dir = TRACE_EV_CLOSED;
            break;
        default:
            ok = false;
        }
    }
    if (!ok) { /* an event with neither read nor write carries nothing to deliver */
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    r->ev.iov = &r->iov;
    r->ev.iovcnt = 1;
    r->ev.len = r->iov.iov_len;
    r->msg = m;
    return 1;
}

static void on_scalar(struct trace_reader *r, enum frame_kind k, uint32_t field, uint64_t v)
{
    const int ind = r->st[r->depth - 1].indent;
    if ((k == FR_BUFFERED || k == FR_SEGMENT) && field == 1) {
        echo_u64(r, ind, "trace_id", v, false);
        set_trace_id(r, v);
    } else if (k == FR_BUFFERED && field == 4) {
        echo_u64(r, ind, "read_truncated", v, true);
        r->read_truncated |= v != 0;
    } else if (k == FR_BUFFERED && field == 5) {
        echo_u64(r, ind, "write_truncated", v, true);
        r->write_truncated |= v != 0;
    } else if (k == FR_V2_TRACE || k == FR_BUFFERED || k == FR_SEGMENT) {
        /* unknown scalar: skipped like protobuf skips unknown fields */
    }
}

/* What field FIELD of a frame of kind K is. */
enum role { R_UNKNOWN, R_CONTAINER, R_CONN, R_EVENT, R_SCALAR, R_HTTP };

static enum role field_role(enum frame_kind k, uint32_t field)
{
    switch (k) {
    case FR_V2_TRACE:
        return field == 1 ? R_CONN : field == 2 ? R_EVENT : R_UNKNOWN;
    case FR_WRAPPERS:
    case FR_WRAPPER:
        return field == 3 || field == 4   ? R_CONTAINER
               : field == 1 || field == 2 ? R_HTTP
                                          : R_UNKNOWN;
    case FR_BUFFERED:
        return field == 1 || field == 4 || field == 5 ? R_SCALAR
               : field == 2                           ? R_CONN
               : field == 3                           ? R_EVENT
                                                      : R_UNKNOWN;
    case FR_SEGMENT:
        return field == 1   ? R_SCALAR
               : field == 2 ? R_CONN
               : field == 3 ? R_EVENT
               : field == 4 ? R_CONTAINER
                            : R_UNKNOWN;
    case FR_EVENTS:
        return field == 1 ? R_EVENT : R_UNKNOWN;
    default:
        return R_UNKNOWN;
    }
}

static const ProtobufCMessageDescriptor *record_desc(const struct trace_reader *r,
                                                     enum frame_kind k, enum role role)
{
    if (k == FR_V2_TRACE)
        return role == R_CONN ? &envoy__data__tap__v2alpha__connection__descriptor
                              : &envoy__data__tap__v2alpha__event__descriptor;
    return role == R_CONN ? &envoy__data__tap__v3__connection__descriptor : &r->schema.ev;
}

/* The frame a container field NUM of a PARENT frame opens. */
static enum frame_kind container_kind(enum frame_kind parent, uint64_t num)
{
    if (parent == FR_SEGMENT)
        return FR_EVENTS;
    return num == 3 ? FR_BUFFERED : FR_SEGMENT;
}

/* Copies DESC's descriptor and fields into D and F (room for SCHEMA_MAX_FIELDS). */
static void schema_copy(ProtobufCMessageDescriptor *d, ProtobufCFieldDescriptor *f,
                        const ProtobufCMessageDescriptor *desc)
{
    *d = *desc;
    memcpy(f, desc->fields, desc->n_fields * sizeof(*f));
    d->fields = f;
    /* the generated init would set the generated descriptor: protobuf-c and pbmsg_new init
     * generically instead, keeping this copy as the message's descriptor */
    d->message_init = NULL;
}

/* Points message field ID of D at SUB. */
static void schema_link(ProtobufCMessageDescriptor *d, ProtobufCFieldDescriptor *f, unsigned id,
                        const ProtobufCMessageDescriptor *sub)
{
    for (unsigned i = 0; i < d->n_fields; i++)
        if (f[i].id == id)
            f[i].descriptor = sub;
}

static int schema_init(struct ev_schema *s)
{
    const ProtobufCMessageDescriptor *ev = &envoy__data__tap__v3__socket_event__descriptor,
                                     *rd = &envoy__data__tap__v3__socket_event__read__descriptor,
                                     *wr = &envoy__data__tap__v3__socket_event__write__descriptor,
                                     *body = &envoy__data__tap__v3__body__descriptor;
    if (ev->n_fields > SCHEMA_MAX_FIELDS || rd->n_fields > SCHEMA_MAX_FIELDS ||
        wr->n_fields > SCHEMA_MAX_FIELDS || body->n_fields > SCHEMA_MAX_FIELDS)
        return -EINVAL;
    schema_copy(&s->body, s->body_f, body);
    for (unsigned i = 0; i < body->n_fields; i++) {
        if (s->body_f[i].id != 2) /* as_string */
            continue;
        /* same storage: as_bytes and as_string share the oneof's union, which is bytes-sized */
        s->body_f[i].type = PROTOBUF_C_TYPE_BYTES;
        s->body_f[i].offset = offsetof(Envoy__Data__Tap__V3__Body, as_bytes);
        s->body_f[i].default_value = NULL;
        s->body_f[i].flags |= PBFIELD_FLAG_TEXT_BYTES;
    }
    schema_copy(&s->rd, s->rd_f, rd);
    schema_link(&s->rd, s->rd_f, 1, &s->body);
    schema_copy(&s->wr, s->wr_f, wr);
    schema_link(&s->wr, s->wr_f, 1, &s->body);
    schema_copy(&s->ev, s->ev_f, ev);
    schema_link(&s->ev, s->ev_f, 2, &s->rd);
    schema_link(&s->ev, s->ev_f, 3, &s->wr);
    return 0;
}

/* ---- binary ------------------------------------------------------------------------------- */

static uint64_t boff(const struct trace_reader *r)
{
    return r->base + r->pos;
}

/* Makes N bytes available at buf[pos] if the input has them; returns how many are. */
static size_t bfill(struct trace_reader *r, size_t n)
{
    while (r->end - r->pos < n && !r->eof) {
        /* in follow mode the bytes from the mark on may be parsed again */
        size_t keep = r->opts.follow && r->mark >= r->base ? (size_t)(r->mark - r->base) : r->pos;
        if (keep > r->pos)
            keep = r->pos;
        if (keep > 0 && (r->cap - r->end < READ_BLOCK || r->cap - r->pos < n)) {
            memmove(r->buf, r->buf + keep, r->end - keep);
            r->base += keep;
            r->end -= keep;
            r->pos -= keep;
        }
        size_t want = n - (r->end - r->pos);
        if (want < READ_BLOCK)
            want = READ_BLOCK;
        if (r->cap - r->end < want) {
            size_t cap = r->end + want;
            uint8_t *p = realloc(r->buf, cap);
            if (!p)
                return (size_t)-1;
            r->buf = p;
            r->cap = cap;
        }
        size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->f);
        r->end += got;
        if (got == 0) {
            /* a non-blocking descriptor (pipe) with nothing yet is the end of "for now" */
            if (ferror(r->f) && r->opts.follow && (errno == EAGAIN || errno == EWOULDBLOCK))
                clearerr(r->f);
            else if (ferror(r->f))
                return (size_t)-2;
            r->eof = true;
        }
    }
    return r->end - r->pos;
}

/* Reads a varint at the cursor. Returns 0, -ENODATA (input ended), -EBADMSG (over 10 bytes). */
static int bvarint(struct trace_reader *r, uint64_t *v, const char *what)
{
    size_t avail = bfill(r, 10);
    if (avail == (size_t)-1)
        return -ENOMEM;
    if (avail == (size_t)-2)
        return fail(r, -EIO, boff(r), "read error");
    size_t used = pbwire_varint_get(r->buf + r->pos, avail, v);
    if (used) {
        r->pos += used;
        return 0;
    }
    if (avail < 10)
        return fail(r, -ENODATA, boff(r), "input ends inside the varint of %s", what);
    return fail(r, -EBADMSG, boff(r), "varint of %s longer than 10 bytes", what);
}

static int bskip(struct trace_reader *r, uint64_t n, uint64_t start, const char *what)
{
    while (n) {
        size_t avail = bfill(r, 1);
        if (avail == (size_t)-2 || avail == (size_t)-1)
            return avail == (size_t)-1 ? -ENOMEM : fail(r, -EIO, boff(r), "read error");
        if (!avail)
            return fail(r, -ENODATA, start, "input ends inside %s", what);
        size_t k = avail < n ? avail : (size_t)n;
        r->pos += k;
        n -= k;
    }
    return 0;
}

/* Walks wire-format P[0..N) against DESC; returns the offset of the first fault (or N if
 * none was found) and describes it in WHY. */
static size_t wire_check(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n,
                         char *why, size_t whylen, int depth)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        uint64_t key = 0, len = 0;
        size_t used = pbwire_varint_get(p + i, n - i, &key);
        if (!used) {
            snprintf(why, whylen, "bad field key in %s", desc->name);
            return start;
        }
        i += used;
        uint32_t wt = key & 7, num = (uint32_t)(key >> 3);
        const ProtobufCFieldDescriptor *fd =
            num ? protobuf_c_message_descriptor_get_field(desc, num) : NULL;
        if (!num || wt == 3 || wt == 4 || wt > 5) {
            snprintf(why, whylen, "bad field key 0x%llx in %s", (unsigned long long)key,
                     desc->name);
            return start;
        }
        bool want_ld =
            fd && (fd->type == PROTOBUF_C_TYPE_MESSAGE || fd->type == PROTOBUF_C_TYPE_STRING ||
                   fd->type == PROTOBUF_C_TYPE_BYTES);
        if (fd && (want_ld != (wt == 2)) && fd->label != PROTOBUF_C_LABEL_REPEATED) {
            snprintf(why, whylen, "field %s of %s has wire type %u", fd->name, desc->name, wt);
            return start;
        }
        if (wt == 0) {
            while (i < n && (p[i] & 0x80))
                i++;
            if (i++ >= n) {
                snprintf(why, whylen, "varint runs past the end of %s", desc->name);
                return start;
            }
        } else if (wt == 1 || wt == 5) {
            size_t w = wt == 1 ? 8 : 4;
            if (n - i < w) {
                snprintf(why, whylen, "fixed field runs past the end of %s", desc->name);
                return start;
            }
            i += w;
        } else {
            used = pbwire_varint_get(p + i, n - i, &len);
            if (!used) {
                snprintf(why, whylen, "bad length in %s", desc->name);
                return start;
            }
            i += used;
            if (len > n - i) {
                snprintf(why, whylen, "length %llu of field %u runs past the end of %s",
                         (unsigned long long)len, num, desc->name);
                return start;
            }
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE && depth < 32) {
                size_t bad = wire_check(fd->descriptor, p + i, (size_t)len, why, whylen, depth + 1);
                if (bad < len)
                    return i + bad;
            }
            i += len;
        }
    }
    snprintf(why, whylen, "%s does not decode", desc->name);
    return n;
}

/* Envoy's v3 Connection: which numbering does this record use? */
static const ProtobufCMessageDescriptor *v3_conn_desc(struct trace_reader *r, const uint8_t *p,
                                                      size_t n)
{
    if (r->opts.conn_fields == TRACE_CONN_FIELDS_OLD)
        return &socktap__trace__legacy__connection_v3_old__descriptor;
    if (r->opts.conn_fields == TRACE_CONN_FIELDS_NEW)
        return &envoy__data__tap__v3__connection__descriptor;
    bool has1 = false, has3 = false;
    for (size_t i = 0; i < n;) {
        uint8_t key = p[i++];
        if (key == 0x0a)
            has1 = true;
        else if (key == 0x1a)
            has3 = true;
        else if (key != 0x12)
            break;
        uint64_t len = 0;
        size_t used = pbwire_varint_get(p + i, n - i, &len);
        if (!used)
            break;
        i += used;
        if (len > n - i)
            break; /* a field running past the record (or a length that would wrap i) */
        i += len;
    }
    if (has3 && !has1)
        r->conn_fields = TRACE_CONN_FIELDS_OLD;
    else if (has1)
        r->conn_fields = TRACE_CONN_FIELDS_NEW;
    return r->conn_fields == TRACE_CONN_FIELDS_OLD
               ? &socktap__trace__legacy__connection_v3_old__descriptor
               : &envoy__data__tap__v3__connection__descriptor;
}

static int bin_record(struct trace_reader *r, enum frame_kind k, enum role role, uint64_t len,
                      uint64_t field_off)
{
    if (len > r->opts.max_event)
        return fail(r, -E2BIG, field_off, "record of %llu bytes exceeds the %zu-byte limit",
                    (unsigned long long)len, r->opts.max_event);
    uint64_t data_off = boff(r);
    size_t avail = bfill(r, (size_t)len);
    if (avail == (size_t)-1)
        return -ENOMEM;
    if (avail == (size_t)-2)
        return fail(r, -EIO, data_off, "read error");
    if (avail < len)
        return fail(r, -ENODATA, field_off,
                    "input ends at offset %llu inside a %s record of %llu bytes",
                    (unsigned long long)(data_off + avail), role == R_CONN ? "connection" : "event",
                    (unsigned long long)len);
    const uint8_t *p = r->buf + r->pos;
    const ProtobufCMessageDescriptor *d = record_desc(r, k, role);
    if (k != FR_V2_TRACE && role == R_CONN)
        d = v3_conn_desc(r, p, (size_t)len);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, (size_t)len, p);
    if (!m) {
        char why[200];
        size_t bad = wire_check(d, p, (size_t)len, why, sizeof(why), 0);
        return fail(r, -EBADMSG, data_off + bad, "%s", why);
    }
    /* The event's payload now lives in M: the window may be consumed. */
    r->pos += (size_t)len;
    note_unknown_fields(r, m, 0);
    return role == R_CONN ? on_conn(r, k, m) : on_event(r, k, m);
}

static const char *container_name(enum frame_kind parent, uint32_t field)
{
    if (parent == FR_SEGMENT)
        return "events";
    return field == 3 ? "socket_buffered_trace" : "socket_streamed_trace_segment";
}

static int bin_next(struct trace_reader *r)
{
    for (;;) {
        struct frame *fr = &r->st[r->depth - 1];
        uint64_t off = boff(r);
        if (fr->end != UINT64_MAX && off >= fr->end) {
            pop(r);
            continue;
        }
        r->mark = off;
        size_t avail = bfill(r, 1);
        if (avail == (size_t)-1)
            return -ENOMEM;
        if (avail == (size_t)-2)
            return fail(r, -EIO, off, "read error");
        if (!avail) {
            if (r->depth == 1)
                return 0;
            /* report the start of the outermost incomplete message: all before it is whole */
            return fail(r, -ENODATA, off, "input ends inside a message that should end at %llu",
                        (unsigned long long)fr->end);
        }
        if (fr->kind == FR_LD) {
            uint64_t len;
            int rc = bvarint(r, &len, "a wrapper length");
            if (rc)
                return rc;
            rc = push(r, FR_WRAPPER, boff(r) + len, 0, NULL);
            if (rc)
                return fail(r, rc, off, "nesting too deep");
            continue;
        }
        uint64_t key, v = 0;
        int rc = bvarint(r, &key, "a field key");
        if (rc)
            return rc;
        uint32_t wt = key & 7;
        uint64_t num = key >> 3;
        if (num == 0 || num > 536870911 || wt == 3 || wt == 4 || wt > 5)
            return fail(r, -EBADMSG, off, "bad field key 0x%llx in %s", (unsigned long long)key,
                        frame_desc(fr->kind)->name);
        enum role role = field_role(fr->kind, (uint32_t)num);
        if (role == R_HTTP)
            return fail(r, -EBADMSG, off, "HTTP tap traces are not supported");
        if (wt == 0) {
            rc = bvarint(r, &v, "a field value");
            if (rc)
                return rc;
        } else if (wt == 1 || wt == 5) {
            size_t w = wt == 1 ? 8 : 4;
            size_t got = bfill(r, w);
            if (got == (size_t)-1)
                return -ENOMEM;
            for (size_t i = 0; got != (size_t)-2 && i < w && i < got; i++)
                v |= r->buf[r->pos + i]; /* only whether it is zero matters */
            rc = bskip(r, w, off, "a fixed-size field");
            if (rc)
                return rc;
        } else {
            rc = bvarint(r, &v, "a length");
            if (rc)
                return rc;
        }
        uint64_t body = boff(r);
        if (wt == 2 && fr->end != UINT64_MAX && v > fr->end - body)
            return fail(r, -EBADMSG, off, "length %llu of field %llu runs past its message",
                        (unsigned long long)v, (unsigned long long)num);
        bool want_ld = role == R_CONTAINER || role == R_CONN || role == R_EVENT;
        if (role != R_UNKNOWN && want_ld != (wt == 2))
            return fail(r, -EBADMSG, off, "field %llu of %s has wire type %u",
                        (unsigned long long)num, frame_desc(fr->kind)->name, wt);
        switch (role) {
        case R_CONTAINER:
            rc = push(r, container_kind(fr->kind, num), body + v, 0,
                      container_name(fr->kind, (uint32_t)num));
            if (rc)
                return fail(r, rc, off, "nesting too deep");
            break;
        case R_CONN:
        case R_EVENT:
            rc = bin_record(r, fr->kind, role, v, off);
            if (rc != 0)
                return rc;
            break;
        case R_SCALAR:
            on_scalar(r, fr->kind, (uint32_t)num, v);
            break;
        default:
            if (wt == 2 && r->opts.follow && v > r->opts.max_event)
                return fail(r, -E2BIG, off,
                            "unknown field of %llu bytes exceeds the %zu-byte limit",
                            (unsigned long long)v, r->opts.max_event); /* kept whole: the mark */
            if (wt == 2) {
                rc = bskip(r, v, off, "an unknown field");
                if (rc)
                    return rc;
            }
            char fnum[24];
            snprintf(fnum, sizeof(fnum), "%llu", (unsigned long long)num);
            pb_unknown_note(&r->unknown, frame_desc(fr->kind)->name, fnum, boff(r) - off, v != 0);
        }
    }
}

/* ---- text and JSON ------------------------------------------------------------------------ */

static int lx_next(struct trace_reader *r)
{
    int rc = pblex_next(&r->lx);
    return rc ? fail_lex(r, rc) : 0;
}

static int lx_fail(struct trace_reader *r, const char *what)
{
    return fail_lex(r, pblex_fail(&r->lx, "%s", what));
}

static int text_next(struct trace_reader *r)
{
    struct pblex *lx = &r->lx;
    for (;;) {
        struct frame *fr = &r->st[r->depth - 1];
        if (r->depth > 1 && pblex_is(lx, fr->close)) {
            pop(r);
            int rc = lx_next(r);
            if (rc)
                return rc;
            continue;
        }
        if (lx->tok == PBLEX_EOF) {
            if (r->depth == 1)
                return 0;
            return lx_fail(r, "input ends inside a message");
        }
        if (lx->tok != PBLEX_IDENT)
            return lx_fail(r, "expected a field name");
        char name[96];
        size_t n = lx->text.len < sizeof(name) - 1 ? lx->text.len : sizeof(name) - 1;
        memcpy(name, lx->text.data, n);
        name[n] = 0;
        if (r->depth == 1 && r->fmt == TRACE_IN_AUTO) { /* v2 or v3: the first name decides */
            bool v2 = protobuf_c_message_descriptor_get_field_by_name(
                          &envoy__data__tap__v2alpha__trace__descriptor, name) != NULL;
            fr->kind = v2 ? FR_V2_TRACE : FR_WRAPPERS;
            r->fmt = v2 ? TRACE_IN_V2_TEXT : TRACE_IN_V3_TEXT;
        }
        const ProtobufCMessageDescriptor *d = frame_desc(fr->kind);
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(d, name);
        if (!fd) {
            int rc = pbtext_skip_unknown(lx, d, name);
            rc = rc ? fail_lex(r, rc) : lx_next(r);
            if (rc)
                return rc;
            continue;
        }
        enum role role = field_role(fr->kind, fd->id);
        int rc = lx_next(r);
        if (rc)
            return rc;
        bool colon = pblex_is(lx, ':');
        if (colon && (rc = lx_next(r)))
            return rc;
        if (role == R_SCALAR || fd->type != PROTOBUF_C_TYPE_MESSAGE) {
            if (!colon)
                return lx_fail(r, "expected ':'");
            uint64_t v = 0;
            rc = pbfield_set_scalar(lx, fd, &v);
            if (rc)
                return fail_lex(r, rc);
            if (fd->type == PROTOBUF_C_TYPE_BOOL)
                v = *(protobuf_c_boolean *)&v != 0;
            on_scalar(r, fr->kind, fd->id, v);
            if ((rc = lx_next(r)))
                return rc;
            continue;
        }
        char close = pblex_is(lx, '{') ? '}' : pblex_is(lx, '<') ? '>' : 0;
        if (!close)
            return lx_fail(r, "expected '{'");
        if ((rc = lx_next(r)))
            return rc;
        if (role == R_CONTAINER) {
            rc = push(r, container_kind(fr->kind, fd->id), UINT64_MAX, close, fd->name);
            if (rc)
                return lx_fail(r, "nesting too deep");
            continue;
        }
        ProtobufCMessage *m = NULL;
        const ProtobufCMessageDescriptor *rd =
            role == R_EVENT ? record_desc(r, fr->kind, role) : fd->descriptor;
        rc = pbtext_parse_body(lx, rd, close, &m);
        if (rc)
            return fail_lex(r, rc);
        rc = lx_next(r); /* past the closing brace, so errors point after the record */
        if (rc) {
            protobuf_c_message_free_unpacked(m, NULL);
            return rc;
        }
        if (role == R_CONN) {
            if ((rc = on_conn(r, fr->kind, m)))
                return rc;
        } else if (role == R_EVENT) {
            if (on_event(r, fr->kind, m))
                return 1;
        } else {
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
}

static int json_next(struct trace_reader *r)
{
    struct pblex *lx = &r->lx;
    for (;;) {
        struct frame *fr = &r->st[r->depth - 1];
        int rc;
        if (r->depth == 1) {
            if (lx->tok == PBLEX_EOF)
                return 0;
            if (!pblex_is(lx, '{'))
                return lx_fail(r, "expected '{' (a TraceWrapper object)");
            if ((rc = push(r, FR_WRAPPER, UINT64_MAX, '}', NULL)) || (rc = lx_next(r)))
                return rc;
            continue;
        }
        if (pblex_is(lx, fr->close)) {
            pop(r);
            if ((rc = lx_next(r)))
                return rc;
            continue;
        }
        if (lx->tok == PBLEX_EOF)
            return lx_fail(r, "input ends inside an object");
        if (!fr->first) {
            if (!pblex_is(lx, ','))
                return lx_fail(r, fr->close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
            if ((rc = lx_next(r)))
                return rc;
        }
        fr->first = false;
        if (fr->kind == FR_JS_EVENTS) {
            ProtobufCMessage *m = NULL;
            rc = pbjson_parse_object(lx, &r->schema.ev, &m);
            if (rc)
                return fail_lex(r, rc);
            if ((rc = lx_next(r))) {
                protobuf_c_message_free_unpacked(m, NULL);
                return rc;
            }
            r->depth--; /* the event belongs to the message around the array */
            rc = on_event(r, r->st[r->depth - 1].kind, m);
            r->depth++;
            if (rc)
                return 1;
            continue;
        }
        if (lx->tok != PBLEX_STRING)
            return lx_fail(r, "expected a key");
        const ProtobufCMessageDescriptor *d = frame_desc(fr->kind);
        const ProtobufCFieldDescriptor *fd =
            pbjson_field(d, (const char *)lx->text.data, lx->text.len);
        if (!fd) {
            rc = pbjson_skip_unknown(lx, d);
            rc = rc ? fail_lex(r, rc) : lx_next(r);
            if (rc)
                return rc;
            continue;
        }
        if ((rc = lx_next(r)))
            return rc;
        if (!pblex_is(lx, ':'))
            return lx_fail(r, "expected ':'");
        if ((rc = lx_next(r)))
            return rc;
        if (lx->tok == PBLEX_IDENT && lx->text.len == 4 && !memcmp(lx->text.data, "null", 4)) {
            if ((rc = lx_next(r)))
                return rc;
            continue;
        }
        enum role role = field_role(fr->kind, fd->id);
        if (role == R_CONTAINER) {
            if (!pblex_is(lx, '{'))
                return lx_fail(r, "expected '{'");
            if ((rc = push(r, container_kind(fr->kind, fd->id), UINT64_MAX, '}', fd->name)) ||
                (rc = lx_next(r)))
                return rc;
            continue;
        }
        if (role == R_EVENT && (fr->kind == FR_BUFFERED || fr->kind == FR_EVENTS)) {
            if (!pblex_is(lx, '['))
                return lx_fail(r, "expected '[' for events");
            if ((rc = push(r, FR_JS_EVENTS, UINT64_MAX, ']', NULL)) || (rc = lx_next(r)))
                return rc;
            r->st[r->depth - 1].indent = r->st[r->depth - 2].indent;
            continue;
        }
        if (role == R_CONN || role == R_EVENT) {
            ProtobufCMessage *m = NULL;
            rc = pbjson_parse_object(
                lx, role == R_EVENT ? record_desc(r, fr->kind, role) : fd->descriptor, &m);
            if (rc)
                return fail_lex(r, rc);
            if ((rc = lx_next(r))) {
                protobuf_c_message_free_unpacked(m, NULL);
                return rc;
            }
            if (role == R_CONN) {
                if ((rc = on_conn(r, fr->kind, m)))
                    return rc;
                continue;
            }
            if (on_event(r, fr->kind, m))
                return 1;
            continue;
        }
        if (fd->type == PROTOBUF_C_TYPE_MESSAGE || pblex_is(lx, '{') || pblex_is(lx, '['))
            return lx_fail(r, "unsupported value here");
        uint64_t v = 0;
        rc = pbfield_set_scalar(lx, fd, &v);
        if (rc)
            return fail_lex(r, rc);
        if (fd->type == PROTOBUF_C_TYPE_BOOL)
            v = *(protobuf_c_boolean *)&v != 0;
        on_scalar(r, fr->kind, fd->id, v);
        if ((rc = lx_next(r)))
            return rc;
    }
}

/* ---- detection and API -------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The name's extension hint, ignoring a compression suffix ("t_1.pb_length_delimited.zst"). */
static bool name_hints(const char *name, const char *ext)
{
    size_t a = strlen(name), b = strlen(ext);
    for (const char *const *z = (const char *const[]){".zst", ".lz4", NULL}; *z; z++)
        if (ends_with(name, *z) && a - strlen(*z) >= b &&
            !strncmp(name + a - strlen(*z) - b, ext, b))
            return true;
    return ends_with(name, ext);
}

/* The bytes format detection looks at: a fixed window, so a file read whole and one followed
 * as it grows (bytes arriving in any pieces) are told apart the same way (fuzz_trace_follow). */
#define DETECT_WINDOW 64

static enum trace_in_format detect(struct trace_reader *r)
{
    const uint8_t *p = r->buf + r->pos;
    size_t n = r->end - r->pos, i = 0;
    if (n > DETECT_WINDOW)
        n = DETECT_WINDOW;
    const char *name = r->opts.name ? r->opts.name : "";
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    if (i < n && p[i] == '{')
        return TRACE_IN_V3_JSON;
    if (i < n && (p[i] == '#' || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z')))
        return TRACE_IN_AUTO; /* text: v2 or v3 decided by its first field name */
    if (n == 0)
        return name_hints(name, ".pb_length_delimited") ? TRACE_IN_V3_LENGTH_DELIMITED
                                                        : TRACE_IN_V2_BINARY;
    if (name_hints(name, ".pb_length_delimited"))
        return TRACE_IN_V3_LENGTH_DELIMITED;
    if (p[0] == 0x1a || p[0] == 0x22)
        return TRACE_IN_V3_BINARY;
    /* a varint length followed by a TraceWrapper socket field */
    size_t k = 0;
    while (k < n && k < 10 && (p[k] & 0x80))
        k++;
    bool ld = k + 1 < n && (p[k + 1] == 0x1a || p[k + 1] == 0x22);
    if (p[0] == 0x0a || p[0] == 0x12) {
        /* v2: Connection's first key follows its length (0x08/0x12/0x1a) */
        bool v2 = k + 1 < n &&
                  (p[k + 1] == 0x08 || p[k + 1] == 0x12 || p[k + 1] == 0x0a || p[k + 1] == 0x1a);
        if (v2 || !ld)
            return TRACE_IN_V2_BINARY;
    }
    return ld ? TRACE_IN_V3_LENGTH_DELIMITED : TRACE_IN_V2_BINARY;
}

/* A zstd or lz4 input: the bytes read so far become the decoder's first input, and everything
 * from here on parses the decoded stream (format detection included). */
static int start_decompressing(struct trace_reader *r)
{
    if (r->zin)
        return 0; /* follow mode: start() again after a short detection window */
    enum trace_zin_alg alg = trace_zin_detect(r->buf + r->pos, r->end - r->pos);
    if (alg == TRACE_ZIN_NONE)
        return 0;
    int rc = trace_zin_open(r->raw, alg, r->buf + r->pos, r->end - r->pos, r->opts.name, &r->zin,
                            &r->zf);
    if (rc)
        return rc;
    r->zalg = alg;
    r->f = r->zf;
    r->pos = r->end = 0;
    r->base = 0;
    r->eof = false;
    size_t avail = bfill(r, 64);
    return avail == (size_t)-1 ? -ENOMEM : avail == (size_t)-2 ? -EIO : 0;
}

static int start(struct trace_reader *r)
{
    size_t avail = bfill(r, DETECT_WINDOW);
    if (avail == (size_t)-1)
        return -ENOMEM;
    if (avail == (size_t)-2)
        return fail(r, -EIO, 0, "read error");
    int rc = start_decompressing(r);
    if (rc == -EIO)
        return fail(r, -EIO, 0, "read error");
    if (rc)
        return rc;
    avail = r->end - r->pos; /* decompressing: what the decoder gave, not the raw bytes */
    /* Follow mode: the bytes stay in buf and detection waits for its whole window (a trace
     * shorter than that is detected once it is finished), as it would see reading it whole. */
    if (r->opts.follow && r->opts.format == TRACE_IN_AUTO && avail < DETECT_WINDOW)
        return -EAGAIN;
    enum trace_in_format f = r->opts.format;
    bool text = f == TRACE_IN_V2_TEXT || f == TRACE_IN_V3_TEXT;
    if (f == TRACE_IN_AUTO) {
        f = detect(r);
        text = f == TRACE_IN_AUTO;
    }
    if (r->opts.follow && (text || f == TRACE_IN_V3_JSON)) {
        r->follow_text = true; /* streamed only once whole: see trace_reader.h */
        return -EAGAIN;
    }
    r->started = true;
    r->fmt = f;
    enum frame_kind top = f == TRACE_IN_V2_BINARY || f == TRACE_IN_V2_TEXT ? FR_V2_TRACE
                          : f == TRACE_IN_V3_LENGTH_DELIMITED              ? FR_LD
                                                                           : FR_WRAPPERS;
    push(r, top, UINT64_MAX, 0, NULL);
    if (text || f == TRACE_IN_V3_JSON) {
        pblex_init(&r->lx, r->f, r->buf + r->pos, r->end - r->pos, f == TRACE_IN_V3_JSON,
                   r->opts.max_event);
        r->lx.unknown = &r->unknown;
        r->lx_on = true;
        return lx_next(r);
    }
    return 0;
}

/* At the end of a compressed input, or at an error, the compressed layer has the last word: a
 * read error there is its corrupt data (named with the compressed offset), and a decoded stream
 * that ended cleanly inside an unfinished frame is a cut file (-ENODATA, as a cut trace). Only
 * corrupt decoded bytes come first: they precede the decoder's error in the stream. */
static int zin_verdict(struct trace_reader *r, int rc)
{
    char msg[sizeof(r->errmsg)];
    int zrc = trace_zin_status(r->zin, msg, sizeof(msg));
    if (rc == -EBADMSG) {
        /* corrupt bytes the decoder did give come before its own error in the stream: that
         * error stands, however far ahead the decoder had read (a whole file is read ahead, a
         * followed one is not: fuzz_trace_follow found the two disagreeing) */
        size_t n = strlen(r->errmsg);
        snprintf(r->errmsg + n, sizeof(r->errmsg) - n, " (offset in the decoded %s stream)",
                 trace_zin_name(r->zalg));
        return rc;
    }
    if (!zrc || rc == -ENOMEM || rc == -E2BIG)
        return rc;
    if (zrc == -ENODATA && rc == -ENODATA) {
        /* the reader's own message says where the decoded stream is cut; add the frame */
        size_t n = strlen(r->errmsg);
        snprintf(r->errmsg + n, sizeof(r->errmsg) - n,
                 " (offset in the decoded %s stream; the compressed input ends inside a frame "
                 "at compressed offset %llu)",
                 trace_zin_name(r->zalg), (unsigned long long)trace_zin_offset(r->zin));
        return rc;
    }
    if (rc < 0 && zrc == -ENODATA)
        return rc; /* the decoded bytes were corrupt before the cut: that error stands */
    memcpy(r->errmsg, msg, sizeof(r->errmsg));
    return r->err = zrc;
}

/* Follow mode, waiting: keeps only the unfinished field's bytes, in a buffer of their size. A
 * follower holds one reader per open connection, most of them idle (a keep-alive, a slow
 * client), so the 64 KiB read block is not kept for each: an idle reader holds no buffer. */
static void follow_shrink(struct trace_reader *r)
{
    size_t keep = r->end - r->pos;
    if (r->cap <= keep + 4096)
        return;
    memmove(r->buf, r->buf + r->pos, keep);
    r->base += r->pos;
    r->end = keep;
    r->pos = 0;
    if (!keep) {
        free(r->buf);
        r->buf = NULL;
        r->cap = 0;
        return;
    }
    uint8_t *p = realloc(r->buf, keep);
    if (p) {
        r->buf = p;
        r->cap = keep;
    }
}

int trace_reader_next(struct trace_reader *r, struct trace_event *ev,
                      const struct trace_conn **conn)
{
    if (r->err)
        return r->err;
    if (r->msg) {
        protobuf_c_message_free_unpacked(r->msg, NULL);
        r->msg = NULL;
    }
    int rc = 0;
    if (r->followed) { /* the file may have grown since: EOF is not sticky (nor stdio's) */
        r->eof = false;
        clearerr(r->f);
    }
    if (!r->started)
        rc = start(r);
    if (!rc) {
        if (r->lx_on)
            rc = r->fmt == TRACE_IN_V3_JSON ? json_next(r) : text_next(r);
        else
            rc = bin_next(r);
    }
    if (r->opts.follow && !r->lx_on && (rc == 0 || rc == -ENODATA)) {
        /* not the end, only the end so far: rewind to the unfinished field */
        r->pos = (size_t)(r->mark - r->base);
        r->err = 0;
        r->errmsg[0] = 0;
        rc = -EAGAIN;
        follow_shrink(r);
    }
    if (rc == -EAGAIN)
        return rc;
    if (r->depth && r->fmt != TRACE_IN_V3_JSON && rc == 0 && r->lx_on && r->fmt == TRACE_IN_AUTO)
        r->fmt = TRACE_IN_V2_TEXT; /* empty text input */
    echo_flush(r);
    if (r->zin && rc <= 0)
        rc = zin_verdict(r, rc);
    if (rc < 0) {
        if (!r->err)
            r->err = rc;
        return rc;
    }
    if (rc == 1) {
        *ev = r->ev;
        struct trace_conn *c = cur_conn(r);
        if (!c)
            return r->err = -ENOMEM;
        ((struct reader_conn *)c)->delivered = true;
        if (conn)
            *conn = c;
    }
    return rc;
}

int trace_reader_open_file(FILE *f, const struct trace_reader_opts *opts, struct trace_reader **out)
{
    struct trace_reader *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->f = r->raw = f;
    if (opts)
        r->opts = *opts;
    if (!r->opts.max_event)
        r->opts.max_event = TRACE_READER_DEFAULT_MAX_EVENT;
    r->conn_fields = r->opts.conn_fields;
    r->followed = r->opts.follow;
    if (schema_init(&r->schema)) {
        free(r);
        return -EINVAL;
    }
    *out = r;
    return 0;
}

int trace_reader_open_path(const char *path, const struct trace_reader_opts *opts,
                           struct trace_reader **out)
{
    bool std_in = strcmp(path, "-") == 0;
    FILE *f = std_in ? stdin : fopen(path, "rb");
    if (!f)
        return -errno;
    struct trace_reader_opts o = opts ? *opts : (struct trace_reader_opts){0};
    if (!o.name)
        o.name = std_in ? "<stdin>" : path;
    int rc = trace_reader_open_file(f, &o, out);
    if (rc) {
        if (!std_in)
            fclose(f);
        return rc;
    }
    (*out)->own_f = !std_in;
    return 0;
}

void trace_reader_free(struct trace_reader *r)
{
    if (!r)
        return;
    echo_flush(r);
    if (r->msg)
        protobuf_c_message_free_unpacked(r->msg, NULL);
    if (r->lx_on)
        pblex_fini(&r->lx);
    for (size_t i = 0; i < r->nconns; i++)
        free(r->conns[i]);
    free(r->conns);
    free(r->buf);
    tbuf_free(&r->ebuf);
    if (r->zf)
        fclose(r->zf);
    if (r->own_f)
        fclose(r->raw);
    free(r);
}

const char *trace_reader_error(const struct trace_reader *r)
{
    if (r->err && !r->errmsg[0])
        return strerror(-r->err);
    return r->errmsg;
}

enum trace_in_format trace_reader_format(const struct trace_reader *r)
{
    return r->fmt;
}

bool trace_reader_report_unknown(const struct trace_reader *r, const char *prog, bool allow,
                                 FILE *err)
{
    const struct trace_unknown_tally *t = &r->unknown;
    const char *name = r->opts.name ? r->opts.name : "<input>";
    if (!t->fields)
        return false;
    if (!t->with_data) {
        fprintf(err, "%s: %s: note: skipped %llu empty unknown field(s)\n", prog, name,
                (unsigned long long)t->fields);
        return false;
    }
    fprintf(err, "%s: %s: %s: skipped %llu unknown field(s) with data (%llu bytes in all):", prog,
            allow ? "warning" : "error", name, (unsigned long long)t->with_data,
            (unsigned long long)t->bytes);
    uint64_t shown = 0;
    for (size_t i = 0; i < t->nkinds; i++) {
        const struct trace_unknown *k = &t->kinds[i];
        fprintf(err, "%s %s x%llu (%llu bytes)", i ? "," : "", k->where,
                (unsigned long long)k->count, (unsigned long long)k->bytes);
        shown += k->count;
    }
    if (shown < t->fields)
        fprintf(err, ", %llu more", (unsigned long long)(t->fields - shown));
    fprintf(err, allow ? " (accepted by --allow-unknown)\n"
                       : "; the schema does not know them: --allow-unknown converts anyway\n");
    return !allow;
}

void trace_reader_set_follow(struct trace_reader *r, bool follow)
{
    r->opts.follow = follow;
    r->followed |= follow;
}

bool trace_reader_follow_whole(const struct trace_reader *r)
{
    return r->follow_text;
}

bool trace_reader_read_truncated(const struct trace_reader *r)
{
    return r->read_truncated;
}

bool trace_reader_write_truncated(const struct trace_reader *r)
{
    return r->write_truncated;
}

void trace_reader_set_echo(struct trace_reader *r, FILE *out)
{
    r->echo = out;
}

static const char *const fmt_names[] = {
    [TRACE_IN_AUTO] = "auto",
    [TRACE_IN_V2_BINARY] = "v2-binary",
    [TRACE_IN_V2_TEXT] = "v2-text",
    [TRACE_IN_V3_BINARY] = "v3-binary",
    [TRACE_IN_V3_LENGTH_DELIMITED] = "v3-length-delimited",
    [TRACE_IN_V3_TEXT] = "v3-text",
    [TRACE_IN_V3_JSON] = "v3-json",
};

const char *trace_in_format_name(enum trace_in_format f)
{
    return (unsigned)f < sizeof(fmt_names) / sizeof(fmt_names[0]) ? fmt_names[f] : "?";
}

int trace_in_format_parse(const char *name, enum trace_in_format *out)
{
    for (unsigned i = 0; i < sizeof(fmt_names) / sizeof(fmt_names[0]); i++) {
        if (strcmp(name, fmt_names[i]) == 0) {
            *out = (enum trace_in_format)i;
            return 0;
        }
    }
    return -EINVAL;
}

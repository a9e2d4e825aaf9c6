/* The capture/tap socket: forwards every call to its inner socket and records what crossed.
 *
 * Reads: after the inner do_read, the bytes it appended are the last r.bytes of INTO; we peek
 * them in place (no copy besides the encoding itself). A bulk read over a raw inner socket
 * into a binary trace copies nothing: the inner socket reads into a flat buffer of the
 * recorder's, the event is encoded around the bytes where they lie and handed to the writer,
 * and INTO gets them by reference (capture_rec_flat_begin). Measured: docs/capture.md.
 * Writes: the bytes the inner socket consumes must be seen before they are drained and freed.
 * The inner socket writes from a scratch evbuffer that *references* FROM's chains
 * (evbuffer_add_buffer_reference: multicast chains, refcounted by libevent, so even an inner
 * layer that kept chains could not make us read freed memory); afterwards the first r.bytes of
 * FROM are exactly what was consumed: we encode them, then drain FROM ourselves. Rejected:
 * copying FROM's front before each write (a second copy of every byte), and passing FROM
 * itself with peeked iovecs (drained chains are freed before we could encode them).
 *
 * Recording (file, encoder, flush tick) is capture_rec.c, shared with the TLS wire capture.
 *
 * When the disk cannot keep up, this connection is slowed, not its capture cut: while the
 * file's backlog (queued + encoded, not yet written) is at its max_backlog, do_read and
 * do_write move nothing and answer `blocked`; the connection retries once the writer made room
 * (capture_writer_set_waker), or on a short timer.
 * So a trace is always complete and memory stays bounded by max_backlog per connection; only
 * the connection whose capture is behind waits. (Rejected: dropping events once the backlog is
 * full — a capture tool that silently loses the middle of a transfer is not one users can
 * trust; measured, loopback traffic outruns the writer by 10x on a 2-core box.)
 * Once a capture stopped (a write error: see capture_rec.c), calls pass straight through. */
#include "transport/capture.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <event2/buffer.h>

#include "transport/capture_disk.h"
#include "transport/capture_rec.h"
#include "transport/capture_store.h"
#include "transport/capture_wire.h"

#define CAPTURE_STACK_IOV 16
#define CAPTURE_MIN_STEP  (64u * 1024u) /* smaller reads are not worth a wake-up */
/* A read takes at most a quarter of the backlog, so the writer writes one piece while the worker
 * reads and encodes the next. Measured (iperf3 -t 4 through one capturing worker into /dev/shm,
 * 1 MiB backlog, 5 interleaved runs, medians): reads as large as the room (1 MiB events, each
 * followed by a hold: worker and writer took turns) 6971 Mbit/s, a half 7453, a quarter 7547. */
#define CAPTURE_READ_SHARE 4

struct capture_socket {
    struct transport_socket base;
    const struct capture_cfg *cfg;
    struct evbuffer *scratch; /* what the inner socket writes from */
    struct capture_rec *rec;
    bool write_ended;
    bool closed;
};

/* on_capture_failure: hold (blocked) or refuse (close) the traffic; see capture_rec_gate. */
static bool capture_gated(struct capture_socket *cs, struct ts_io_result *out)
{
    int rc = capture_rec_gate(cs->rec);
    if (rc == -EAGAIN)
        *out = (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
    else if (rc)
        *out = (struct ts_io_result){.action = TS_CLOSE, .err = rc};
    return rc != 0;
}

static struct ts_io_result capture_do_read(struct transport_socket *ts, struct evbuffer *into,
                                           size_t max)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    struct ts_io_result gate;
    if (capture_gated(cs, &gate))
        return gate;
    if (capture_rec_active(cs->rec)) {
        size_t need = max < CAPTURE_MIN_STEP ? max : CAPTURE_MIN_STEP;
        size_t room = capture_rec_room_wait(cs->rec, need);
        if (room < need) {
            stats_inc(cs->cfg->stats.backpressure);
            return (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
        }
        if (max > room)
            max = room;
        size_t step = cs->cfg->max_backlog / CAPTURE_READ_SHARE;
        if (step < CAPTURE_MIN_STEP)
            step = CAPTURE_MIN_STEP;
        if (max > step)
            max = step;
        uint8_t *dst;
        size_t room_flat;
        if (ts_can_read_flat(ts->inner) && max >= CAPTURE_MIN_STEP &&
            capture_rec_flat_begin(cs->rec, max, &dst, &room_flat) == 0) {
            struct ts_io_result r = ts_read_flat(ts->inner, dst, room_flat);
            if (r.bytes > 0 && capture_rec_flat_end(cs->rec, dst, r.bytes, into) != 0) {
                stats_inc(cs->cfg->stats.events_dropped);
                r = (struct ts_io_result){.action = TS_CLOSE, .err = -ENOMEM};
            }
            return r;
        }
    }
    struct ts_io_result r = ts_do_read(ts->inner, into, max);
    if (r.bytes > 0)
        capture_rec_event_range(cs->rec, TRACE_EV_READ, into, evbuffer_get_length(into) - r.bytes,
                                r.bytes, false);
    return r;
}

/* Fallback when FROM cannot be referenced (it already holds reference chains): the inner
 * socket writes from a copy of FROM's front. */
static int capture_copy_front(struct evbuffer *scratch, struct evbuffer *from, size_t max)
{
    struct evbuffer_iovec vec[CAPTURE_STACK_IOV];
    int n = evbuffer_peek(from, (ev_ssize_t)max, NULL, vec, CAPTURE_STACK_IOV);
    size_t copied = 0;
    for (int i = 0; i < n && i < CAPTURE_STACK_IOV && copied < max; i++) {
        size_t len = vec[i].iov_len < max - copied ? vec[i].iov_len : max - copied;
        if (evbuffer_add(scratch, vec[i].iov_base, len) != 0)
            return -ENOMEM;
        copied += len;
    }
    return 0;
}

static struct ts_io_result capture_do_write(struct transport_socket *ts, struct evbuffer *from,
                                            bool end_stream)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    struct ts_io_result gate;
    if (capture_gated(cs, &gate))
        return gate;
    if (!capture_rec_active(cs->rec))
        return ts_do_write(ts->inner, from, end_stream);

    size_t len = evbuffer_get_length(from);
    if (len > capture_rec_room_wait(cs->rec, len)) {
        stats_inc(cs->cfg->stats.backpressure);
        return (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
    }
    evbuffer_drain(cs->scratch, evbuffer_get_length(cs->scratch));
    if (len > 0 && evbuffer_add_buffer_reference(cs->scratch, from) != 0 &&
        capture_copy_front(cs->scratch, from, CAPTURE_CHUNK_BYTES) != 0) {
        stats_inc(cs->cfg->stats.events_dropped);
        capture_rec_stop(cs->rec, "out of memory");
        return ts_do_write(ts->inner, from, end_stream);
    }
    size_t offered = evbuffer_get_length(cs->scratch);
    bool ends = end_stream && offered == len; /* the inner may half-close only if it sees all */
    struct ts_io_result r = ts_do_write(ts->inner, cs->scratch, ends);
    size_t consumed = offered - evbuffer_get_length(cs->scratch);
    /* As Envoy's tap (source/extensions/transport_sockets/tap/tap.cc, doWrite): a write that
     * moved bytes is an event, with end_stream as the write was asked (so a half-close that
     * takes several partial writes marks each); a write that moved nothing is none. With
     * socktap_record_half_close, a half-close no data write carried is recorded once as a
     * 0-byte write with end_stream, when it completes (a TLS close_notify may take several
     * calls), so converters can place the FIN. */
    if (consumed > 0) {
        cs->write_ended |= end_stream;
        capture_rec_event_range(cs->rec, TRACE_EV_WRITE, from, 0, consumed, end_stream);
    } else if (cs->cfg->record_half_close && ends && consumed == offered &&
               r.action == TS_KEEP_OPEN && !cs->write_ended) {
        cs->write_ended = true;
        capture_rec_event_range(cs->rec, TRACE_EV_WRITE, from, 0, 0, true);
    }
    evbuffer_drain(from, consumed);
    evbuffer_drain(cs->scratch, evbuffer_get_length(cs->scratch));
    r.bytes = consumed;
    return r;
}

static bool capture_has_pending(const struct transport_socket *ts)
{
    return ts_has_pending(ts->inner);
}

static bool capture_wants_write(const struct transport_socket *ts)
{
    return ts_wants_write(ts->inner);
}

static bool capture_is_ready(const struct transport_socket *ts)
{
    return ts_is_ready(ts->inner);
}

static const char *capture_failure_reason(const struct transport_socket *ts)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    if (capture_rec_rejected(cs->rec))
        return "no trace file could be created (socktap_limits.on_capture_failure: reject)";
    return ts_failure_reason(ts->inner);
}

static int capture_on_connected(struct transport_socket *ts)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    int rc = ts_on_connected(ts->inner);
    if (rc == 0 && !cs->closed && !capture_rec_opened(cs->rec))
        capture_rec_open(cs->rec);
    else if (rc == 0 && !cs->closed)
        capture_rec_connected(cs->rec); /* a streamed tap opened before the connect */
    return rc;
}

static void capture_close(struct transport_socket *ts, enum ts_close_type how)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    ts_close(ts->inner, how);
    if (cs->closed)
        return;
    cs->closed = true;
    /* A connect that failed leaves its trace, as Envoy's tapper exists from the socket's
     * creation: the connection (remote address only) and, streamed, its closed event. */
    if (!capture_rec_opened(cs->rec)) {
        capture_rec_unconnected(cs->rec);
        capture_rec_open(cs->rec);
    }
    capture_rec_finish(cs->rec, true);
}

static void capture_destroy(struct transport_socket *ts)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    capture_close(ts, TS_CLOSE_NORMAL);
    ts_destroy(ts->inner);
    capture_rec_free(cs->rec);
    evbuffer_free(cs->scratch);
    free(cs);
}

static const struct transport_socket_ops capture_socket_ops = {
    .name = "capture",
    .on_connected = capture_on_connected,
    .do_read = capture_do_read,
    .do_write = capture_do_write,
    .has_pending = capture_has_pending,
    .wants_write = capture_wants_write,
    .is_ready = capture_is_ready,
    .failure_reason = capture_failure_reason,
    .close = capture_close,
    .destroy = capture_destroy,
};

static int capture_create(const void *p, const struct ts_conn_info *info,
                          struct transport_socket **out)
{
    const struct capture_cfg *cfg = p;
    struct capture_socket *cs = calloc(1, sizeof(*cs));
    if (!cs)
        return -ENOMEM;
    int rc = -ENOMEM;
    cs->scratch = evbuffer_new();
    if (!cs->scratch)
        goto err_free_cs;
    if ((rc = capture_rec_new(cfg, info, &cs->rec)))
        goto err_free_scratch;
    rc = ts_config_create(&cfg->inner, info, &cs->base.inner);
    if (rc)
        goto err_free_rec;
    cs->base.ops = &capture_socket_ops;
    cs->base.conn_id = info->conn_id;
    cs->cfg = cfg;
    /* Envoy's streamed tap writes the connection segment when the socket is created, before an
     * upstream connect completes: without a local address (tap_config_impl.cc, its TODO). The
     * other forms write it once connected (or at close), with both addresses. */
    if (info->connecting && cfg->enc.schema == TRACE_SCHEMA_V3_TAP && cfg->enc.streaming) {
        capture_rec_unconnected(cs->rec);
        capture_rec_open(cs->rec);
    }
    *out = &cs->base;
    return 0;

err_free_rec:
    capture_rec_free(cs->rec);
err_free_scratch:
    evbuffer_free(cs->scratch);
err_free_cs:
    free(cs);
    return rc;
}

static struct live_hub *capture_live_hub(const void *p, bool wire)
{
    const struct capture_cfg *cfg = p;
    return wire ? ts_config_live(&cfg->inner, true) : cfg->live;
}

/* Admin POST /capture/...?enabled= for a capture/tap config. */
static int capture_set_enabled(const void *p, bool enabled)
{
    capture_cfg_set_enabled((struct capture_cfg *)p, enabled);
    return 0;
}

/* The hooks both factories share: the registry calls a shared hook once. */
static void capture_start(struct event_base *main_base)
{
    capture_store_start(main_base);
}

static void capture_shutdown(void)
{
    capture_writer_shutdown();
    capture_store_stop();
}

static int capture_write_captures(FILE *out, size_t max_finished)
{
    return capture_store_write_json(out, max_finished);
}

static const char *capture_admin_id(const void *p)
{
    const struct capture_cfg *cfg = p;
    return cfg->admin_id;
}

static const char *const capture_names[] = {"envoy.transport_sockets.capture", "capture", NULL};
static const char *const capture_type_urls[] = {
    "type.googleapis.com/envoy.config.transport_socket.capture.v2alpha.Capture", NULL};
static const char *const tap_names[] = {"envoy.transport_sockets.tap", "tap", NULL};
static const char *const tap_type_urls[] = {
    "type.googleapis.com/envoy.extensions.transport_sockets.tap.v3.Tap",
    "type.googleapis.com/envoy.config.transport_socket.tap.v2alpha.Tap", NULL};

const struct ts_factory capture_socket_factory = {
    .names = capture_names,
    .type_urls = capture_type_urls,
    .parse = capture_cfg_parse,
    .create = capture_create,
    .free_cfg = capture_cfg_free,
    .shutdown = capture_shutdown,
    .fence = capture_writer_fence,
    .fence_passed = capture_writer_fence_passed,
    .live = capture_live_hub,
    .start = capture_start,
    .set_capture = capture_set_enabled,
    .write_captures = capture_write_captures,
    .set_waker = capture_writer_set_waker,
};

const struct ts_factory tap_socket_factory = {
    .names = tap_names,
    .type_urls = tap_type_urls,
    .parse = tap_cfg_parse,
    .create = capture_create,
    .free_cfg = capture_cfg_free,
    .shutdown = capture_shutdown,
    .fence = capture_writer_fence,
    .fence_passed = capture_writer_fence_passed,
    .live = capture_live_hub,
    .start = capture_start,
    .set_capture = capture_set_enabled,
    .write_captures = capture_write_captures,
    .admin_id = capture_admin_id,
    .set_waker = capture_writer_set_waker,
};

void capture_register_factories(void)
{
    ts_registry_add(&capture_socket_factory);
    ts_registry_add(&tap_socket_factory);
    tls_wire_register(&capture_wire_ops);
}

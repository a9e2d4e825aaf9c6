/* The capture/tap socket: forwards every call to its inner socket and records what crossed.
 *
 * Reads: after the inner do_read, the bytes it appended are the last r.bytes of INTO; we peek
 * them in place (no copy besides the encoding itself).
 * Writes: the bytes the inner socket consumes must be seen before they are drained and freed.
 * The inner socket writes from a scratch evbuffer that *references* FROM's chains
 * (evbuffer_add_buffer_reference: multicast chains, refcounted by libevent, so even an inner
 * layer that kept chains could not make us read freed memory); afterwards the first r.bytes of
 * FROM are exactly what was consumed: we encode them, then drain FROM ourselves. Rejected:
 * copying FROM's front before each write (a second copy of every byte), and passing FROM
 * itself with peeked iovecs (drained chains are freed before we could encode them).
 *
 * The trace file is created at on_connected (a failed upstream connect leaves no file); this
 * open(2) is the only disk call on a worker thread. Events are encoded into a per-connection
 * buffer handed to the writer thread (capture_disk.h) when it reaches CAPTURE_CHUNK_BYTES, and
 * otherwise by a per-worker tick CAPTURE_FLUSH_MS after the first unflushed event, which hands
 * over every pending buffer of that worker at once. So an event is on disk within a few ms,
 * bulk flows write in large pieces, and many small flows (HTTP keep-alive) cost one writer
 * wake-up per tick instead of one write(2) and one thread switch per event (measured: the
 * per-event flush spent ~28% of socktap's CPU in the writer on 64 keep-alive connections).
 *
 * When the disk cannot keep up, this connection is slowed, not its capture cut: while the
 * file's backlog (queued + encoded, not yet written) is at its max_backlog, do_read and
 * do_write move nothing and answer `blocked`, and the connection retries on a short timer.
 * So a trace is always complete and memory stays bounded by max_backlog per connection; only
 * the connection whose capture is behind waits. (Rejected: dropping events once the backlog is
 * full — a capture tool that silently loses the middle of a transfer is not one users can
 * trust; measured, loopback traffic outruns the writer by 10x on a 2-core box.)
 * A write error (missing dir, ENOSPC, EIO) stops this capture at the last whole event: logged
 * once, counted, never seen by the traffic. Once stopped, calls pass straight through. */
#include "transport/capture.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "core/log.h"
#include "core/sockaddr_text.h"
#include "transport/capture_disk.h"

#define CAPTURE_STACK_IOV   16
#define CAPTURE_FLUSH_MS    5
#define CAPTURE_EVENT_SLACK 4096          /* encoding overhead of one event, generously */
#define CAPTURE_MIN_STEP    (64u * 1024u) /* smaller reads are not worth a wake-up */

struct capture_socket {
    struct transport_socket base;
    const struct capture_cfg *cfg;
    struct trace_conn conn;
    int fd; /* not owned: only for getsockname when the local address is unknown */
    struct evbuffer *scratch; /* what the inner socket writes from */
    struct trace_enc *enc;
    struct tbuf buf;
    size_t buf_events; /* events in buf, counted as dropped if buf is refused */
    struct capture_wfile *file;
    char path[4096];
    struct event_base *loop;                      /* the worker's loop (flush tick) */
    struct capture_socket *tick_prev, *tick_next; /* on this worker's flush list */
    bool tick_queued;
    bool capturing; /* file open, capture not stopped */
    bool write_ended;
    bool closed;
};

static void capture_addr(const struct sockaddr_storage *ss, socklen_t len, struct trace_addr *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return;
    uint16_t port = 0;
    out->present = sockaddr_ip_port((const struct sockaddr *)ss, len, out->address,
                                    sizeof(out->address), &port) == 0;
    out->port = port;
}

/* Per worker thread: capture sockets holding unflushed events, and the timer that flushes
 * them. The timer exists while the thread has capture sockets (freed with the last one). */
struct capture_tick {
    struct event *ev;
    struct capture_socket *first;
    size_t sockets;
};
static __thread struct capture_tick t_tick;

static void capture_tick_unlink(struct capture_socket *cs)
{
    if (!cs->tick_queued)
        return;
    if (cs->tick_prev)
        cs->tick_prev->tick_next = cs->tick_next;
    else
        t_tick.first = cs->tick_next;
    if (cs->tick_next)
        cs->tick_next->tick_prev = cs->tick_prev;
    cs->tick_prev = cs->tick_next = NULL;
    cs->tick_queued = false;
}

static void capture_flush(struct capture_socket *cs);

static void capture_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    while (t_tick.first) {
        struct capture_socket *cs = t_tick.first;
        capture_tick_unlink(cs);
        capture_flush(cs);
    }
}

/* Makes sure CS's buffer is handed over within CAPTURE_FLUSH_MS. */
static void capture_tick_queue(struct capture_socket *cs)
{
    if (cs->tick_queued)
        return;
    if (!t_tick.ev && cs->loop)
        t_tick.ev = evtimer_new(cs->loop, capture_tick_cb, NULL);
    if (!t_tick.ev) {
        capture_flush(cs); /* no timer: flush now rather than hold events */
        return;
    }
    cs->tick_prev = NULL;
    cs->tick_next = t_tick.first;
    if (t_tick.first)
        t_tick.first->tick_prev = cs;
    t_tick.first = cs;
    cs->tick_queued = true;
    if (!evtimer_pending(t_tick.ev, NULL)) {
        static const struct timeval tv = {.tv_sec = 0, .tv_usec = CAPTURE_FLUSH_MS * 1000};
        evtimer_add(t_tick.ev, &tv);
    }
}

/* Ends the capture at the last whole event handed to the writer. */
static void capture_stop(struct capture_socket *cs, const char *why)
{
    const struct capture_stats *st = &cs->cfg->stats;
    LOGW(cs->base.conn_id, "%s: %s: capture of %s stopped at the last whole event", cs->cfg->kind,
         why, cs->path);
    stats_inc(st->truncated);
    stats_add(st->events_dropped, (int64_t)cs->buf_events);
    cs->buf_events = 0;
    cs->buf.len = 0;
    cs->capturing = false;
    capture_wfile_close(cs->file);
    cs->file = NULL;
}

/* Hands the encoded bytes to the writer (the buffer's memory moves with them). */
static void capture_flush(struct capture_socket *cs)
{
    capture_tick_unlink(cs);
    if (!cs->capturing || cs->buf.len == 0)
        return;
    size_t len = cs->buf.len;
    void *data = cs->buf.data;
    cs->buf = (struct tbuf){0};
    int rc = capture_wfile_submit(cs->file, data, len);
    if (rc == -ENOBUFS)
        capture_stop(cs, "the disk cannot keep up (backlog full)");
    else if (rc)
        capture_stop(cs, rc == -EIO ? "write error" : "out of memory");
    else
        cs->buf_events = 0;
}

static void capture_record(struct capture_socket *cs, enum trace_dir dir, const struct iovec *iov,
                           int iovcnt, size_t len, bool end_stream)
{
    const struct capture_stats *st = &cs->cfg->stats;
    if (capture_wfile_failed(cs->file)) {
        capture_stop(cs, "write error");
        stats_inc(st->events_dropped);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct trace_event ev = {
        .sec = ts.tv_sec,
        .nsec = (int32_t)ts.tv_nsec,
        .dir = dir,
        .iov = iov,
        .iovcnt = iovcnt,
        .len = len,
        .end_stream = end_stream,
    };
    if (tbuf_reserve(&cs->buf, len + 64) != 0 || trace_enc_event(cs->enc, &ev, &cs->buf) != 0) {
        stats_inc(st->events_dropped);
        capture_stop(cs, "out of memory");
        return;
    }
    stats_inc(st->events);
    cs->buf_events++;
    if (cs->buf.len >= CAPTURE_CHUNK_BYTES)
        capture_flush(cs);
    else
        capture_tick_queue(cs);
}

/* Bytes this connection may still move before its capture backlog (queued for the disk plus
 * encoded here) reaches max_backlog. With nothing pending anything fits, so one event larger
 * than max_backlog still goes through (alone). SIZE_MAX means "no limit now". */
static size_t capture_room(const struct capture_socket *cs)
{
    size_t pending = capture_wfile_backlog(cs->file) + cs->buf.len;
    if (pending == 0)
        return SIZE_MAX;
    size_t used = pending + CAPTURE_EVENT_SLACK;
    return used < cs->cfg->max_backlog ? cs->cfg->max_backlog - used : 0;
}

/* Records LEN bytes of BUF starting at OFFSET without copying them out. */
static void capture_record_range(struct capture_socket *cs, enum trace_dir dir,
                                 struct evbuffer *buf, size_t offset, size_t len, bool end_stream)
{
    struct iovec stack_iov[CAPTURE_STACK_IOV];
    struct iovec *iov = stack_iov;
    int n = 0;
    if (len > 0) {
        struct evbuffer_ptr pos;
        if (evbuffer_ptr_set(buf, &pos, offset, EVBUFFER_PTR_SET) != 0)
            return;
        n = evbuffer_peek(buf, (ev_ssize_t)len, &pos, NULL, 0);
        if (n > CAPTURE_STACK_IOV) {
            iov = malloc((size_t)n * sizeof(*iov));
            if (!iov) {
                stats_inc(cs->cfg->stats.events_dropped);
                capture_stop(cs, "out of memory");
                return;
            }
        }
        /* struct evbuffer_iovec has iovec's layout (documented by libevent). */
        n = evbuffer_peek(buf, (ev_ssize_t)len, &pos, (struct evbuffer_iovec *)iov, n);
        /* The last chain may extend past LEN; trim it so the event holds exactly LEN bytes. */
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            if (iov[i].iov_len > len - total)
                iov[i].iov_len = len - total;
            total += iov[i].iov_len;
        }
    }
    capture_record(cs, dir, n > 0 ? iov : NULL, n, len, end_stream);
    if (iov != stack_iov)
        free(iov);
}

static struct ts_io_result capture_do_read(struct transport_socket *ts, struct evbuffer *into,
                                           size_t max)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    if (cs->capturing) {
        size_t room = capture_room(cs);
        if (room < CAPTURE_MIN_STEP && room < max) {
            stats_inc(cs->cfg->stats.backpressure);
            return (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
        }
        if (max > room)
            max = room;
    }
    struct ts_io_result r = ts_do_read(ts->inner, into, max);
    if (cs->capturing && r.bytes > 0)
        capture_record_range(cs, TRACE_EV_READ, into, evbuffer_get_length(into) - r.bytes, r.bytes,
                             false);
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
    if (!cs->capturing)
        return ts_do_write(ts->inner, from, end_stream);

    size_t len = evbuffer_get_length(from);
    if (len > capture_room(cs)) {
        stats_inc(cs->cfg->stats.backpressure);
        return (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
    }
    evbuffer_drain(cs->scratch, evbuffer_get_length(cs->scratch));
    if (len > 0 && evbuffer_add_buffer_reference(cs->scratch, from) != 0 &&
        capture_copy_front(cs->scratch, from, CAPTURE_CHUNK_BYTES) != 0) {
        stats_inc(cs->cfg->stats.events_dropped);
        capture_stop(cs, "out of memory");
        return ts_do_write(ts->inner, from, end_stream);
    }
    size_t offered = evbuffer_get_length(cs->scratch);
    bool ends = end_stream && offered == len; /* the inner may half-close only if it sees all */
    struct ts_io_result r = ts_do_write(ts->inner, cs->scratch, ends);
    size_t consumed = offered - evbuffer_get_length(cs->scratch);
    /* Half-closed when everything was consumed with end_stream and the inner did not fail;
     * recorded once (a TLS close_notify may take several calls). */
    bool half_closed = ends && consumed == offered && r.action == TS_KEEP_OPEN && !cs->write_ended;
    if (consumed > 0 || half_closed) {
        cs->write_ended |= half_closed;
        capture_record_range(cs, TRACE_EV_WRITE, from, 0, consumed, half_closed);
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
    return ts_failure_reason(ts->inner);
}

static void capture_open(struct capture_socket *cs)
{
    const struct capture_cfg *cfg = cs->cfg;
    uint64_t id = cs->base.conn_id;
    if (!cs->conn.local.present && cs->fd >= 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(cs->fd, (struct sockaddr *)&ss, &sl) == 0)
            capture_addr(&ss, sl, &cs->conn.local);
    }
    int fd;
    bool renamed;
    int rc = capture_file_create(cfg->path_prefix, id, trace_format_extension(cfg->enc.format),
                                 cs->path, sizeof(cs->path), &fd, &renamed);
    if (rc) {
        stats_inc(cfg->stats.files_failed);
        if (!__atomic_exchange_n(cfg->create_failing, true, __ATOMIC_RELAXED))
            LOGE(id,
                 "%s: cannot create a trace file for prefix %s: %s; connection not captured "
                 "(until a file can be created again, further failures are only counted in "
                 "%s.files_failed)",
                 cfg->kind, cfg->path_prefix, strerror(-rc), cfg->kind);
        return;
    }
    if (__atomic_exchange_n(cfg->create_failing, false, __ATOMIC_RELAXED))
        LOGI(id, "%s: trace files for prefix %s can be created again", cfg->kind, cfg->path_prefix);
    if (renamed)
        LOGW(id, "%s: %s_%llu%s exists (file or symlink, left untouched); writing %s instead",
             cfg->kind, cfg->path_prefix, (unsigned long long)id,
             trace_format_extension(cfg->enc.format), cs->path);
    struct capture_wstats ws = {.has_stats = true,
                                .bytes_written = cfg->stats.bytes_written,
                                .write_errors = cfg->stats.write_errors};
    if ((rc = trace_enc_new(&cfg->enc, &cs->conn, &cs->enc)))
        goto err_close_fd;
    if ((rc = tbuf_reserve(&cs->buf, 256)) || (rc = trace_enc_begin(cs->enc, &cs->buf)))
        goto err_free_enc;
    if ((rc = capture_wfile_new(fd, cs->path, id, cfg->max_backlog, &ws, &cs->file)))
        goto err_free_enc;
    stats_inc(cfg->stats.files_opened);
    LOGD(id, "%s: writing %s", cfg->kind, cs->path);
    cs->capturing = true;
    capture_flush(cs);
    return;

err_free_enc:
    trace_enc_free(cs->enc);
    cs->enc = NULL;
    tbuf_free(&cs->buf);
err_close_fd:
    close(fd);
    LOGE(id, "%s: cannot start writing %s: %s; connection not captured", cfg->kind, cs->path,
         strerror(-rc));
    stats_inc(cfg->stats.files_failed);
}

static int capture_on_connected(struct transport_socket *ts)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    int rc = ts_on_connected(ts->inner);
    if (rc == 0 && !cs->closed && !cs->file && !cs->enc)
        capture_open(cs);
    return rc;
}

static void capture_close(struct transport_socket *ts, enum ts_close_type how)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    ts_close(ts->inner, how);
    if (cs->closed)
        return;
    cs->closed = true;
    if (!cs->capturing)
        return;
    if (cs->cfg->enc.schema == TRACE_SCHEMA_V3_TAP)
        capture_record(cs, TRACE_EV_CLOSED, NULL, 0, 0, false);
    /* Reserve first: a buffer just handed to the writer has no memory yet (data == NULL). */
    if (cs->capturing && (tbuf_reserve(&cs->buf, 64) != 0 || trace_enc_end(cs->enc, &cs->buf) != 0))
        capture_stop(cs, "out of memory");
    capture_flush(cs);
    if (cs->capturing) {
        capture_wfile_close(cs->file);
        cs->file = NULL;
        cs->capturing = false;
    }
}

static void capture_destroy(struct transport_socket *ts)
{
    struct capture_socket *cs = (struct capture_socket *)ts;
    capture_close(ts, TS_CLOSE_NORMAL);
    ts_destroy(ts->inner);
    trace_enc_free(cs->enc);
    tbuf_free(&cs->buf);
    evbuffer_free(cs->scratch);
    capture_tick_unlink(cs);
    if (--t_tick.sockets == 0 && t_tick.ev) {
        event_free(t_tick.ev);
        t_tick.ev = NULL;
    }
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
    rc = ts_config_create(&cfg->inner, info, &cs->base.inner);
    if (rc)
        goto err_free_scratch;
    cs->base.ops = &capture_socket_ops;
    cs->base.conn_id = info->conn_id;
    cs->cfg = cfg;
    cs->fd = info->fd;
    cs->loop = info->loop;
    t_tick.sockets++;
    cs->conn.id = info->conn_id;
    capture_addr(&info->local, info->local_len, &cs->conn.local);
    capture_addr(&info->remote, info->remote_len, &cs->conn.remote);
    *out = &cs->base;
    return 0;

err_free_scratch:
    evbuffer_free(cs->scratch);
err_free_cs:
    free(cs);
    return rc;
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
    .shutdown = capture_writer_shutdown,
};

const struct ts_factory tap_socket_factory = {
    .names = tap_names,
    .type_urls = tap_type_urls,
    .parse = tap_cfg_parse,
    .create = capture_create,
    .free_cfg = capture_cfg_free,
    .shutdown = capture_writer_shutdown,
};

void capture_register_factories(void)
{
    ts_registry_add(&capture_socket_factory);
    ts_registry_add(&tap_socket_factory);
}

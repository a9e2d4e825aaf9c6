/* capture_rec.c: the recording half of the capture socket, shared with the TLS wire capture.
 *
 * The trace is started at capture_rec_open (the capture socket calls it at on_connected, or
 * when a connection that never connected closes: capture.c); the writer thread creates the file
 * when it handles the first buffer, so no disk call is on a worker thread (measured with the
 * open(2) and the first write(2) on the worker: new conn/s with capture at 0.68x of without, 0.57x
 * with TLS; numbers after the move in the commit and docs/capture.md). A file the writer cannot
 * create fails like a write error, except that it counts in files_failed (by the writer) instead of
 * truncated. Events are encoded into a per-connection buffer handed to the writer thread
 * (capture_disk.h) when it reaches CAPTURE_CHUNK_BYTES, and otherwise by a per-worker tick
 * CAPTURE_FLUSH_MS after the first unflushed event, which hands over every pending buffer of
 * that worker at once. So an event is on disk within a few ms, bulk flows write in large
 * pieces, and many small flows (HTTP keep-alive) cost one writer wake-up per tick instead of one
 * write(2) and one thread switch per event (measured: the per-event flush spent ~28% of
 * socktap's CPU in the writer on 64 keep-alive connections).
 *
 * A write error (missing dir, ENOSPC, EIO) stops the capture at the last whole event: logged
 * once, counted, never seen by the traffic. Once stopped, events are ignored.
 *
 * Rotation (socktap_limits rotate_bytes / rotate_seconds, socktap extension): a piece ends at an
 * event boundary with the encoder's closing bytes, so it is a whole trace, and is closed (the
 * writer then moves it and runs on_finished, capture_finish.h). The next piece starts with the
 * next event: a fresh encoder, so its own connection record and opening bytes, and a new file
 * of the same chain (capture_disk.h names it). Starting it lazily means a connection never ends
 * with an empty piece, and an idle connection costs no file until it talks again. Ages are
 * checked at each event and by one per-worker timer every CAPTURE_ROTATE_CHECK_MS over that
 * worker's rotating recorders (an idle connection's piece ends on time, at most that much late);
 * rejected: a timer per connection (an event_add per piece and a struct event per connection
 * for what one walk of a list does). The backlog bound holds across a rotation: the chain counts
 * every piece's queued bytes (a closed piece may still be queued). v3 buffered traces do not
 * rotate: they are one message written at the close, bounded by max_buffered_rx/tx, and
 * rotating them would give each piece its own max_buffered budget, which is not what Envoy's
 * buffered mode means. Cost measured (256 MiB upload into /dev/shm, socktap cpu-s): 0.25 without
 * rotation, 0.24 with 64 MiB pieces, 0.33 with 1 MiB pieces (252 files). */
#include "transport/capture_rec.h"

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
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
#include "transport/capture_store.h"
#include "transport/live_hub.h"

#define CAPTURE_STACK_IOV       16
#define CAPTURE_FLUSH_MS        5
#define CAPTURE_EVENT_SLACK     4096 /* encoding overhead of one event, generously */
#define CAPTURE_ROTATE_CHECK_MS 250

/* A recorder's place on each of its worker's lists: the flush tick's and the rotation check's. */
enum capture_list { CAPTURE_LIST_TICK, CAPTURE_LIST_ROT, CAPTURE_LISTS };
struct capture_link {
    struct capture_rec *prev, *next;
    bool listed;
};

struct capture_rec {
    const struct capture_cfg *cfg;
    uint64_t conn_id;
    struct trace_conn conn;
    int fd;            /* not owned: only for getsockname when the local address is unknown */
    int conn_fd;       /* not owned: the connection's fd, for capture_rec_connected's getsockname */
    uint64_t seq_next; /* between two rotated pieces: the seq_num the next event gets */
    struct trace_enc *enc;
    struct tbuf buf;
    size_t buf_events; /* events in buf, counted as dropped if buf is refused */
    struct capture_wfile *file;
    struct event_base *loop;                  /* the worker's loop (flush tick) */
    struct capture_link links[CAPTURE_LISTS]; /* on this worker's lists */
    bool handed_over; /* the writer has a job for the file (it creates it) */
    bool bulk;        /* the last hand-over was large: encode into pool buffers */
    bool opened;
    bool capturing; /* capture not stopped (FILE NULL: between two rotated pieces) */
    /* rotation: NULL unless the config rotates this trace */
    struct capture_wchain *chain;
    uint64_t piece_bytes;    /* encoded bytes of the current piece */
    uint64_t piece_start_ms; /* CLOCK_MONOTONIC when the current piece started */
    size_t piece_events;
    /* socktap_limits: max_trace_bytes (all pieces) and on_capture_failure */
    uint64_t trace_bytes; /* encoded bytes of the trace so far */
    bool enc_buffered;    /* v3 buffered: bounded by max_buffered_rx/tx, not max_trace_bytes */
    bool await_create;    /* on_capture_failure reject: hold the traffic until the file exists */
    bool reject;          /* on_capture_failure reject and the trace could not be started */
    /* zero-copy bulk reads (capture_rec_flat_begin): the flat buffer payload is read into and
     * the bytes of it used so far; NULL when none */
    struct capture_flat *flat;
    size_t flat_used;
    bool udp;   /* the tap's UDP sink: each encoded message is sent, no file */
    bool admin; /* an admin_config tap: events go to the live hub only, no file */
};

/* Envoy's per-socket counters (tap_config_impl.cc pegReadWriteSubmitCounter and
 * pegCloseSubmitCounter): a streamed read, write or close event recorded, a buffered trace
 * submitted at close. buffered_{read,write}_submit stay 0, as in Envoy, where only the removed
 * SocketTapConfig.min_buffered_bytes path pegged them (it is not in the 2026 tap.proto). */
static void tap_submit_stat(const struct capture_rec *r, enum trace_dir dir)
{
    const struct tap_feat *f = &r->cfg->feat;
    if (!f->registered)
        return;
    if (!r->cfg->enc.streaming) {
        if (dir == TRACE_EV_CLOSED)
            stats_inc(f->stats.buffered_close);
        return;
    }
    stats_inc(dir == TRACE_EV_READ    ? f->stats.streamed_read
              : dir == TRACE_EV_WRITE ? f->stats.streamed_write
                                      : f->stats.streamed_close);
}

/* UDP sink: sends what the encoder appended to R's buffer (whole TraceWrapper messages, one
 * per call: trace_encode.h) as one datagram, and empties the buffer. */
static void udp_flush(struct capture_rec *r)
{
    tap_udp_send(&r->cfg->feat, r->conn_id, r->buf.data, r->buf.len);
    r->buf.len = 0;
}

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

/* Per worker thread: recorders holding unflushed events, and the timer that flushes them. The
 * timer exists while the thread has recorders (freed with the last one). */
struct capture_tick {
    struct event *ev;
    struct capture_rec *first;
    size_t recs;
};
static __thread struct capture_tick t_tick;

/* R onto / off list K starting at *FIRST. */
static void capture_list_add(struct capture_rec **first, struct capture_rec *r, enum capture_list k)
{
    r->links[k] = (struct capture_link){.next = *first, .listed = true};
    if (*first)
        (*first)->links[k].prev = r;
    *first = r;
}

static void capture_list_del(struct capture_rec **first, struct capture_rec *r, enum capture_list k)
{
    struct capture_link *l = &r->links[k];
    if (!l->listed)
        return;
    if (l->prev)
        l->prev->links[k].next = l->next;
    else
        *first = l->next;
    if (l->next)
        l->next->links[k].prev = l->prev;
    *l = (struct capture_link){0};
}

static void capture_tick_unlink(struct capture_rec *r)
{
    capture_list_del(&t_tick.first, r, CAPTURE_LIST_TICK);
}

static void capture_flush(struct capture_rec *r);

/* The tick hands every pending buffer over and wakes the writer once for all of them and for
 * the closes queued since the last tick (capture_writer_defer_wake). */
static void capture_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    capture_writer_defer_wake(true);
    while (t_tick.first) {
        struct capture_rec *r = t_tick.first;
        capture_tick_unlink(r);
        capture_flush(r);
    }
    capture_writer_defer_wake(false);
    capture_writer_wake();
}

static void capture_tick_arm(void)
{
    if (!evtimer_pending(t_tick.ev, NULL)) {
        static const struct timeval tv = {.tv_sec = 0, .tv_usec = CAPTURE_FLUSH_MS * 1000};
        evtimer_add(t_tick.ev, &tv);
    }
}

/* Makes sure R's buffer is handed over within CAPTURE_FLUSH_MS. */
static void capture_tick_queue(struct capture_rec *r)
{
    if (r->links[CAPTURE_LIST_TICK].listed)
        return;
    if (!t_tick.ev && r->loop)
        t_tick.ev = evtimer_new(r->loop, capture_tick_cb, NULL);
    if (!t_tick.ev) {
        capture_flush(r); /* no timer: flush now rather than hold events */
        return;
    }
    capture_list_add(&t_tick.first, r, CAPTURE_LIST_TICK);
    capture_tick_arm();
}

static uint64_t capture_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Per worker thread: the recorders whose pieces end by age, and the timer that checks them
 * (pending while the list is not empty; freed with the thread's last recorder). */
struct capture_rot {
    struct event *ev;
    struct capture_rec *first;
};
static __thread struct capture_rot t_rot;

static void capture_rot_unlink(struct capture_rec *r)
{
    if (!r->links[CAPTURE_LIST_ROT].listed)
        return;
    capture_list_del(&t_rot.first, r, CAPTURE_LIST_ROT);
    if (!t_rot.first && t_rot.ev)
        event_del(t_rot.ev);
}

static void capture_piece_end(struct capture_rec *r);
static int capture_piece_start(struct capture_rec *r);

static void capture_rot_cb(evutil_socket_t fd, short what, void *arg)
{
    uint64_t now = capture_now_ms();
    struct capture_rec *next;
    for (struct capture_rec *r = t_rot.first; r; r = next) {
        next = r->links[CAPTURE_LIST_ROT].next; /* R may leave the list (a stop) */
        if (r->file && r->piece_events && now - r->piece_start_ms >= r->cfg->limits.rotate_ms)
            capture_piece_end(r);
    }
}

static void capture_rot_link(struct capture_rec *r)
{
    if (r->links[CAPTURE_LIST_ROT].listed || !r->cfg->limits.rotate_ms || !r->loop)
        return;
    if (!t_rot.ev && !(t_rot.ev = event_new(r->loop, -1, EV_PERSIST, capture_rot_cb, NULL)))
        return; /* ages are still checked at each event */
    if (!t_rot.first) {
        static const struct timeval tv = {.tv_sec = 0, .tv_usec = CAPTURE_ROTATE_CHECK_MS * 1000};
        event_add(t_rot.ev, &tv);
    }
    capture_list_add(&t_rot.first, r, CAPTURE_LIST_ROT);
}

/* True when CFG's traces rotate (capture_rec.c's top says why v3 buffered ones do not). */
static bool capture_rotates(const struct capture_cfg *cfg)
{
    bool buffered = cfg->enc.schema == TRACE_SCHEMA_V3_TAP && !cfg->enc.streaming;
    return (cfg->limits.rotate_bytes || cfg->limits.rotate_ms) && !buffered;
}

/* Tells live viewers that R's events end here: closed (FIN-worthy) or STOPPED (the capture
 * stopped mid-connection: no more events, nothing to show). */
static void live_end(struct capture_rec *r, bool stopped)
{
    if (live_hub_wanted(r->cfg->live))
        live_hub_publish_end(r->cfg->live, &r->conn, stopped);
}

void capture_rec_stop(struct capture_rec *r, const char *why)
{
    if (!r->capturing)
        return;
    const struct capture_stats *st = &r->cfg->stats;
    stats_add(st->events_dropped, (int64_t)r->buf_events);
    /* a file the writer could not create, or the budget stopped, is no truncation (counted,
     * and logged once, there); a write error is, but the writer logged it (once per failing
     * period: a full disk must not log once per connection) */
    if (!r->file || !(capture_wfile_create_failed(r->file) || capture_wfile_budget(r->file))) {
        const char *path = r->file ? capture_wfile_path(r->file) : "";
        if (!r->file || !capture_wfile_failed(r->file))
            LOGW(r->conn_id, "%s: %s: capture of %s stopped at the last whole event", r->cfg->kind,
                 why, *path ? path : "its trace");
        stats_inc(st->truncated);
    }
    live_end(r, true);
    r->buf_events = 0;
    r->buf.len = 0;
    r->capturing = false;
    capture_wfile_close(r->file);
    r->file = NULL;
    capture_rot_unlink(r);
    capture_flat_unref(r->flat); /* the writer and the relay hold what they still use */
    r->flat = NULL;
}

/* Ends the trace: the closing bytes, the hand-over and the file's close. With a flush tick on
 * this thread, the writer is woken by the tick (within CAPTURE_FLUSH_MS), not once per closed
 * connection (measured: wrk Connection: close, 1 worker capturing into tmpfs, see the note in
 * capture_disk.h). */
static void capture_rec_end(struct capture_rec *r)
{
    bool defer = t_tick.ev != NULL;
    capture_writer_defer_wake(defer);
    /* Reserve first: a buffer just handed to the writer has no memory yet (data == NULL). */
    if (r->capturing && r->file &&
        (tbuf_reserve(&r->buf, 64) != 0 || trace_enc_end(r->enc, &r->buf) != 0))
        capture_rec_stop(r, "out of memory");
    capture_flush(r);
    if (r->capturing) {
        capture_wfile_close(r->file);
        r->file = NULL;
        r->capturing = false;
    }
    capture_writer_defer_wake(false);
    if (defer && capture_writer_unsignalled())
        capture_tick_arm();
    capture_rot_unlink(r);
    capture_flat_unref(r->flat);
    r->flat = NULL;
}

/* Encodes the first KEEP bytes of EV's body, Body.truncated set, into R's buffer. */
static int capture_encode_cut(struct capture_rec *r, const struct trace_event *ev, size_t keep)
{
    struct iovec stack[CAPTURE_STACK_IOV], *iov = stack;
    size_t left = keep;
    int n = 0, rc;
    if (ev->iovcnt > CAPTURE_STACK_IOV && !(iov = malloc((size_t)ev->iovcnt * sizeof(*iov))))
        return -ENOMEM;
    for (; n < ev->iovcnt && left; n++) {
        iov[n] = ev->iov[n];
        if (iov[n].iov_len > left)
            iov[n].iov_len = left;
        left -= iov[n].iov_len;
    }
    struct trace_event cut = *ev;
    cut.iov = iov;
    cut.iovcnt = n;
    cut.len = keep;
    cut.end_stream = false; /* the stream's end was not recorded */
    cut.truncated = true;
    rc = trace_enc_event(r->enc, &cut, &r->buf);
    if (iov != stack)
        free(iov);
    return rc;
}

/* EV, encoded as the last ENCODED bytes of the buffer (from BEFORE), would take the trace past
 * max_trace_bytes. v3 streamed: EV is encoded again with as much of its body as fits (a few
 * tries at most) and Body.truncated set; v2alpha (and a v3 event with no room for any body):
 * the trace ends at the previous whole event. Then the trace
 * ends and the connection goes on uncaptured; counted, logged once until a connection is
 * captured whole again. */
static void capture_rec_limit(struct capture_rec *r, const struct trace_event *ev, size_t encoded,
                              size_t before)
{
    const struct capture_cfg *cfg = r->cfg;
    uint64_t max = cfg->limits.max_trace_bytes;
    uint64_t room = max > r->trace_bytes ? max - r->trace_bytes : 0;
    bool fits = false;
    r->buf.len = before;
    /* a batched tap (min_streamed_sent_bytes) holds events it cannot take back: no cut there */
    if (cfg->enc.schema == TRACE_SCHEMA_V3_TAP && ev->len > 0 && room > 0 &&
        !cfg->enc.min_streamed_sent && (ev->dir == TRACE_EV_READ || ev->dir == TRACE_EV_WRITE)) {
        /* the body's share of the room: exact enough for binary, and JSON's base64 or escapes
         * grow with the body; a cut that still overflows shrinks by its excess, likewise */
        size_t keep = (size_t)((uint64_t)ev->len * room / encoded);
        for (int tries = 0; tries < 4 && keep > 0 && !fits; tries++) {
            r->buf.len = before;
            trace_enc_forget_last(r->enc); /* the cut event keeps its seq_num */
            if (capture_encode_cut(r, ev, keep))
                break;
            size_t got = r->buf.len - before, shrink;
            if (!(fits = got <= room)) {
                shrink = (size_t)((uint64_t)(got - room) * ev->len / encoded) + 1;
                keep = shrink < keep ? keep - shrink : 0;
            }
        }
        if (fits) {
            r->trace_bytes += r->buf.len - before;
            stats_inc(cfg->stats.events);
        } else {
            r->buf.len = before;
        }
    }
    stats_inc(cfg->stats.limit_trace_bytes);
    if (!__atomic_exchange_n(&cfg->rt->limit_logged, true, __ATOMIC_RELAXED))
        LOGW(r->conn_id,
             "%s: the trace reached max_trace_bytes (%" PRIu64 "): recording stops there, the "
             "connection goes on uncaptured (further cuts are counted in %s.%s.limit_trace_bytes, "
             "logged again after a connection is captured whole)",
             cfg->kind, max, cfg->owner, cfg->kind);
    live_end(r, true);
    capture_rec_end(r);
}

/* Hands the encoded bytes to the writer (the buffer's memory moves with them). */
static void capture_flush(struct capture_rec *r)
{
    capture_tick_unlink(r);
    /* The first hand-over goes even when empty: it creates the file. */
    if (!r->capturing || !r->file || (r->buf.len == 0 && r->handed_over))
        return;
    r->handed_over = true;
    r->bulk = r->buf.len >= CAPTURE_CHUNK_BYTES / 4;
    int rc = capture_wfile_submit_buf(r->file, &r->buf);
    if (rc == -ENOBUFS)
        capture_rec_stop(r, "the disk cannot keep up (backlog full)");
    else if (rc)
        capture_rec_stop(r, rc == -EIO ? "write error" : "out of memory");
    else
        r->buf_events = 0;
}

/* Room for N more bytes in R's buffer. A bulk flow encodes into pool buffers (capture_disk.h):
 * one that would overflow is handed over first, so pool buffers never grow (a realloc'd chunk
 * copied every byte once more). Small flows keep a small malloc'd buffer. */
static int capture_reserve(struct capture_rec *r, size_t n)
{
    if (r->buf.cap - r->buf.len >= n)
        return 0;
    if (r->buf.cap == CAPTURE_BUF_BYTES || (r->bulk && r->buf.len + n > CAPTURE_CHUNK_BYTES / 4)) {
        capture_flush(r);
        if (!r->capturing)
            return -EIO;
    }
    if (!r->buf.data && r->bulk && n <= CAPTURE_BUF_BYTES)
        return capture_buf_take(&r->buf);
    return tbuf_reserve(&r->buf, n);
}

/* EV's timestamp: CLOCK_REALTIME now, right after the I/O (as Envoy's initEvent). */
static void stamp_event(struct trace_event *ev)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ev->sec = ts.tv_sec;
    ev->nsec = (int32_t)ts.tv_nsec;
}

/* capture_rec_event for the UDP sink: encode, send, nothing kept (no backlog, no budget). */
static void udp_event(struct capture_rec *r, enum trace_dir dir, const struct iovec *iov,
                      int iovcnt, size_t len, bool end_stream)
{
    struct trace_event ev = {
        .dir = dir, .iov = iov, .iovcnt = iovcnt, .len = len, .end_stream = end_stream};
    stamp_event(&ev);
    if (live_hub_wanted(r->cfg->live))
        live_hub_publish(r->cfg->live, &r->conn, &ev);
    if (trace_enc_event(r->enc, &ev, &r->buf) != 0) {
        r->buf.len = 0;
        stats_inc(r->cfg->stats.events_dropped);
        return;
    }
    stats_inc(r->cfg->stats.events);
    tap_submit_stat(r, dir);
    udp_flush(r);
}

void capture_rec_event(struct capture_rec *r, enum trace_dir dir, const struct iovec *iov,
                       int iovcnt, size_t len, bool end_stream)
{
    if (!r->capturing)
        return;
    if (r->udp) {
        udp_event(r, dir, iov, iovcnt, len, end_stream);
        return;
    }
    const struct capture_stats *st = &r->cfg->stats;
    if (r->file && capture_wfile_failed(r->file)) {
        capture_rec_stop(r, "write error");
        stats_inc(st->events_dropped);
        return;
    }
    if (r->chain && r->file && r->piece_events && r->cfg->limits.rotate_ms &&
        capture_now_ms() - r->piece_start_ms >= r->cfg->limits.rotate_ms)
        capture_piece_end(r);
    if (r->capturing && !r->file && !r->admin && capture_piece_start(r) != 0) {
        stats_inc(st->events_dropped);
        capture_rec_stop(r, "out of memory");
        return;
    }
    struct trace_event ev = {
        .dir = dir,
        .iov = iov,
        .iovcnt = iovcnt,
        .len = len,
        .end_stream = end_stream,
    };
    stamp_event(&ev);
    if (live_hub_wanted(r->cfg->live))
        live_hub_publish(r->cfg->live, &r->conn, &ev);
    if (r->admin) {
        stats_inc(st->events);
        return;
    }
    size_t before;
    if (capture_reserve(r, len + 64) != 0)
        goto err_drop;
    before = r->buf.len; /* after the reserve, which may hand the buffer over */
    if (trace_enc_event(r->enc, &ev, &r->buf) != 0)
        goto err_drop;
    uint64_t max = r->cfg->limits.max_trace_bytes;
    if (max && r->trace_bytes + (r->buf.len - before) > max && !r->enc_buffered) {
        capture_rec_limit(r, &ev, r->buf.len - before, before);
        return;
    }
    r->trace_bytes += r->buf.len - before;
    stats_inc(st->events);
    tap_submit_stat(r, dir);
    r->buf_events++;
    r->piece_events++;
    r->piece_bytes += r->buf.len - before;
    if (r->chain && r->cfg->limits.rotate_bytes && r->piece_bytes >= r->cfg->limits.rotate_bytes)
        capture_piece_end(r); /* the next event starts the next piece */
    else if (r->buf.len >= CAPTURE_CHUNK_BYTES)
        capture_flush(r);
    else
        capture_tick_queue(r);
    return;

err_drop:
    stats_inc(st->events_dropped);
    capture_rec_stop(r, "out of memory");
}

/* Around each payload read into a flat buffer: room for the event's head before it and its tail
 * after it (a few dozen bytes; with the connection on every event, two addresses of at most 64
 * characters more), so head + payload + tail is contiguous and written as it lies. */
#define CAPTURE_FLAT_MARGIN 512u

int capture_rec_flat_begin(struct capture_rec *r, size_t max, uint8_t **dst, size_t *room)
{
    const struct capture_cfg *cfg = r->cfg;
    if (!r->capturing || !r->file || r->udp || r->admin || !r->bulk || !r->enc ||
        cfg->limits.max_trace_bytes || trace_enc_split_max(r->enc, TRACE_EV_READ) < max ||
        capture_wfile_failed(r->file) ||
        (r->chain && r->piece_events && cfg->limits.rotate_ms &&
         capture_now_ms() - r->piece_start_ms >= cfg->limits.rotate_ms))
        return -ENOTSUP; /* capture_rec_event handles these (and ends a piece by age) */
    /* a buffer too full for this read, or for a quarter chunk (a smaller read is taken) */
    size_t want = max < CAPTURE_CHUNK_BYTES / 4 ? max : CAPTURE_CHUNK_BYTES / 4;
    if (r->flat && CAPTURE_BUF_BYTES - r->flat_used < 2 * CAPTURE_FLAT_MARGIN + want) {
        capture_flat_unref(r->flat); /* the writer and the relay hold what they still use */
        r->flat = NULL;
    }
    if (!r->flat) {
        if (capture_flat_take(&r->flat))
            return -ENOTSUP;
        r->flat_used = 0;
    }
    size_t avail = CAPTURE_BUF_BYTES - r->flat_used - 2 * CAPTURE_FLAT_MARGIN;
    *dst = capture_flat_data(r->flat) + r->flat_used + CAPTURE_FLAT_MARGIN;
    *room = max < avail ? max : avail;
    return 0;
}

static void capture_flat_release(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    capture_flat_unref(arg);
}

/* The encoded event around the N bytes at DST (R's flat buffer), handed to the writer as it
 * lies. Returns 0 or -errno (R's capture is then stopped or was never eligible). */
static int capture_flat_record(struct capture_rec *r, uint8_t *dst, size_t n)
{
    const struct capture_cfg *cfg = r->cfg;
    /* what R's buffer holds goes first (the first hand-over also creates the file) */
    if (r->buf.len > 0 || !r->handed_over) {
        capture_flush(r);
        if (!r->capturing)
            return -EIO;
    }
    struct iovec iov = {.iov_base = dst, .iov_len = n};
    struct trace_event ev = {.dir = TRACE_EV_READ, .iov = &iov, .iovcnt = 1, .len = n};
    stamp_event(&ev);
    if (live_hub_wanted(cfg->live))
        live_hub_publish(cfg->live, &r->conn, &ev);
    /* the event's head and tail are encoded at the start of the margin below DST (the sizes
     * reserved include the payload: the view reaches past it), then moved beside the payload */
    uint8_t *at = dst - CAPTURE_FLAT_MARGIN;
    struct tbuf view = {.data = at, .len = 0, .cap = 2 * CAPTURE_FLAT_MARGIN + n};
    size_t head;
    int rc = trace_enc_event_split(r->enc, &ev, &view, &head);
    if (rc || view.data != at || view.len > CAPTURE_FLAT_MARGIN) {
        stats_inc(cfg->stats.events_dropped);
        capture_rec_stop(r, rc == -ENOMEM ? "out of memory" : "cannot encode in place");
        return rc ? rc : -EPROTO;
    }
    size_t tail = view.len - head;
    memcpy(dst + n, at + head, tail);
    memmove(dst - head, at, head);
    uint8_t *start = dst - head;
    size_t len = head + n + tail;
    rc = capture_wfile_submit_flat(r->file, r->flat, start, len);
    r->flat_used = (size_t)(dst + n + tail - capture_flat_data(r->flat));
    if (rc) {
        stats_inc(cfg->stats.events_dropped);
        capture_rec_stop(r, rc == -ENOBUFS ? "the disk cannot keep up (backlog full)"
                            : rc == -EIO   ? "write error"
                                           : "out of memory");
        return rc;
    }
    r->trace_bytes += len;
    stats_inc(cfg->stats.events);
    stats_inc(cfg->stats.reads_in_place);
    tap_submit_stat(r, TRACE_EV_READ);
    r->piece_events++;
    r->piece_bytes += len;
    /* a flow that turned chatty goes back to batching its events in R's buffer */
    r->bulk = n >= CAPTURE_CHUNK_BYTES / 16;
    if (r->chain && cfg->limits.rotate_bytes && r->piece_bytes >= cfg->limits.rotate_bytes)
        capture_piece_end(r); /* the next event starts the next piece */
    return 0;
}

int capture_rec_flat_end(struct capture_rec *r, uint8_t *dst, size_t n, struct evbuffer *into)
{
    struct capture_flat *flat = r->flat;
    capture_flat_ref(flat); /* for INTO, or until copied */
    capture_flat_record(r, dst, n);
    if (evbuffer_add_reference(into, dst, n, capture_flat_release, flat) == 0)
        return 0;
    int rc = evbuffer_add(into, dst, n) == 0 ? 0 : -ENOMEM;
    capture_flat_unref(flat);
    return rc;
}

size_t capture_rec_room(const struct capture_rec *r)
{
    if (!r->capturing || r->admin)
        return SIZE_MAX; /* an admin client never holds the traffic back (its queue drops) */
    if (r->await_create && r->file && !*capture_wfile_path(r->file) &&
        !capture_wfile_failed(r->file))
        return 0; /* on_capture_failure reject: nothing moves before the trace exists */
    size_t queued = r->chain  ? capture_wchain_backlog(r->chain)
                    : r->file ? capture_wfile_backlog(r->file)
                              : 0;
    /* a batch the encoder holds (min_streamed_sent) is handed over whole with the event that
     * completes it: counted now, so that hand-over stays within the bound */
    size_t pending = queued + r->buf.len + (r->enc ? trace_enc_held_bytes(r->enc) : 0);
    if (pending == 0)
        return SIZE_MAX;
    if (capture_writer_behind())
        return 0; /* the writer's global bound (capture_disk.h): wait for it */
    size_t used = pending + CAPTURE_EVENT_SLACK;
    return used < r->cfg->max_backlog ? r->cfg->max_backlog - used : 0;
}

size_t capture_rec_room_wait(struct capture_rec *r, size_t need)
{
    size_t room = capture_rec_room(r);
    if (room >= need)
        return room;
    if (r->chain)
        capture_wchain_want_room(r->chain);
    else if (r->file)
        capture_wfile_want_room(r->file);
    else
        return room;
    return capture_rec_room(r);
}

void capture_rec_event_range(struct capture_rec *r, enum trace_dir dir, struct evbuffer *buf,
                             size_t offset, size_t len, bool end_stream)
{
    if (!r->capturing)
        return;
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
                stats_inc(r->cfg->stats.events_dropped);
                capture_rec_stop(r, "out of memory");
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
    capture_rec_event(r, dir, n > 0 ? iov : NULL, n, len, end_stream);
    if (iov != stack_iov)
        free(iov);
}

/* The writer's arguments for CFG's files (the strings borrowed from CFG). */
static void capture_rec_wargs(const struct capture_cfg *cfg, struct capture_wcreate *wc,
                              struct capture_wstats *ws)
{
    *ws = (struct capture_wstats){.has_stats = true,
                                  .bytes_written = cfg->stats.bytes_written,
                                  .write_errors = cfg->stats.write_errors,
                                  .files_opened = cfg->stats.files_opened,
                                  .files_failed = cfg->stats.files_failed,
                                  .budget_skipped = cfg->stats.budget_skipped,
                                  .budget = {.has_stats = true,
                                             .budget_stopped = cfg->stats.budget_stopped,
                                             .budget_deleted = cfg->stats.budget_deleted}};
    *wc = (struct capture_wcreate){.path_prefix = cfg->path_prefix,
                                   .ext = cfg->ext,
                                   .kind = cfg->kind,
                                   .failing = cfg->create_failing,
                                   .write_failing = cfg->write_failing,
                                   .comp = &cfg->comp,
                                   .limits = &cfg->limits,
                                   .fstats = &cfg->fstats,
                                   .store = cfg->store,
                                   .owner = cfg->owner};
}

/* Ends R's current piece (rotation): closing bytes, hand-over, close. Counted in rotated. */
static void capture_piece_end(struct capture_rec *r)
{
    if (tbuf_reserve(&r->buf, 64) != 0 || trace_enc_end(r->enc, &r->buf) != 0) {
        capture_rec_stop(r, "out of memory");
        return;
    }
    capture_flush(r);
    if (!r->capturing)
        return;
    capture_wfile_close(r->file);
    r->file = NULL;
    r->seq_next = trace_enc_seq_next(r->enc);
    trace_enc_free(r->enc);
    r->enc = NULL;
    stats_inc(r->cfg->fstats.rotated);
}

/* Starts R's next piece: a fresh encoder's opening bytes for a new file of R's chain. Returns 0
 * or -ENOMEM (R unchanged but for its buffer). */
static int capture_piece_start(struct capture_rec *r)
{
    const struct capture_cfg *cfg = r->cfg;
    struct capture_wstats ws;
    struct capture_wcreate wc;
    size_t before = r->buf.len;
    capture_rec_wargs(cfg, &wc, &ws);
    int rc = trace_enc_new(&cfg->enc, &r->conn, &r->enc);
    if (rc)
        return rc;
    if (r->seq_next) /* one trace, numbered across its pieces */
        trace_enc_set_seq_next(r->enc, r->seq_next);
    if ((rc = tbuf_reserve(&r->buf, 256)) || (rc = trace_enc_begin(r->enc, &r->buf)) ||
        (rc = capture_wfile_open_piece(&wc, r->conn_id, cfg->max_backlog, &ws, r->chain,
                                       &r->file))) {
        trace_enc_free(r->enc);
        r->enc = NULL;
        r->buf.len = before;
        return rc;
    }
    r->handed_over = false;
    r->piece_events = 0;
    r->piece_bytes = r->buf.len - before;
    r->trace_bytes += r->piece_bytes; /* max_trace_bytes counts every piece */
    r->piece_start_ms = capture_now_ms();
    capture_tick_queue(r);
    return 0;
}

int capture_rec_gate(struct capture_rec *r)
{
    if (r->reject)
        return -EACCES;
    if (!r->await_create)
        return 0;
    if (r->capturing && r->file && !*capture_wfile_path(r->file) && !capture_wfile_failed(r->file))
        return -EAGAIN;
    r->await_create = false;
    if (!r->capturing || !r->file || !capture_wfile_create_failed(r->file) ||
        capture_wfile_budget(r->file))
        return 0; /* created; or a budget skip, which follows the policy */
    stats_inc(r->cfg->stats.rejected);
    capture_rec_stop(r, "no trace file");
    r->reject = true;
    return -EACCES;
}

bool capture_rec_rejected(const struct capture_rec *r)
{
    return r->reject;
}

/* Whether a new connection of R's config is captured: the admin switch and the prefix's budget
 * (capture_store.h) decide; a skip is counted, never logged (the state changes are). */
static bool capture_rec_admitted(const struct capture_rec *r)
{
    const struct capture_cfg *cfg = r->cfg;
    if (!__atomic_load_n(&cfg->rt->enabled, __ATOMIC_RELAXED)) {
        stats_inc(cfg->stats.disabled_skipped);
        return false;
    }
    if (cfg->feat.never) {
        stats_inc(cfg->feat.stats.not_matched);
        return false;
    }
    if (!tap_feat_sampled(&cfg->feat, r->conn_id)) {
        stats_inc(cfg->feat.stats.sampled_out);
        return false;
    }
    if (cfg->store && !capture_store_admit(cfg->store)) {
        stats_inc(cfg->stats.budget_skipped);
        return false;
    }
    return true;
}

/* capture_rec_open for the UDP sink: the opening message (streaming: the connection segment)
 * goes out at once; there is no file to create, so nothing can refuse the connection. */
static void udp_open_trace(struct capture_rec *r)
{
    int rc = trace_enc_new(&r->cfg->enc, &r->conn, &r->enc);
    if (!rc && !(rc = trace_enc_begin(r->enc, &r->buf))) {
        r->udp = true;
        r->capturing = true;
        udp_flush(r);
        return;
    }
    r->buf.len = 0;
    LOGE(r->conn_id, "%s: cannot start a trace: %s; connection not captured", r->cfg->kind,
         strerror(-rc));
}

void capture_rec_open(struct capture_rec *r)
{
    const struct capture_cfg *cfg = r->cfg;
    uint64_t id = r->conn_id;
    r->opened = true;
    if (!capture_rec_admitted(r))
        return;
    /* An admin tap records only while a client is attached, as Envoy's: a socket is tapped
     * when a tap config is attached at its creation (source/extensions/transport_sockets/tap/
     * tap.cc, TapSocket's constructor asks for a per-socket tapper then). */
    if (cfg->admin_id && !(r->admin = live_hub_wanted(cfg->live)))
        return;
    if (!r->conn.local.present && r->fd >= 0) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(r->fd, (struct sockaddr *)&ss, &sl) == 0)
            capture_addr(&ss, sl, &r->conn.local);
    }
    if (cfg->feat.udp) {
        udp_open_trace(r);
        return;
    }
    if (r->admin) { /* no file: the events go to the hub only (capture_rec_event) */
        r->capturing = true;
        return;
    }
    struct capture_wstats ws;
    struct capture_wcreate wc;
    capture_rec_wargs(cfg, &wc, &ws);
    int rc;
    if ((rc = trace_enc_new(&cfg->enc, &r->conn, &r->enc)))
        goto err;
    if ((rc = tbuf_reserve(&r->buf, 256)) || (rc = trace_enc_begin(r->enc, &r->buf)))
        goto err_free_enc;
    if (capture_rotates(cfg) && (rc = capture_wchain_new(&wc, &r->chain)))
        goto err_free_enc;
    rc = r->chain ? capture_wfile_open_piece(&wc, id, cfg->max_backlog, &ws, r->chain, &r->file)
                  : capture_wfile_open(&wc, id, cfg->max_backlog, &ws, &r->file);
    if (rc)
        goto err_release_chain;
    r->capturing = true;
    r->piece_bytes = r->buf.len;
    r->trace_bytes = r->buf.len;
    r->enc_buffered = cfg->enc.schema == TRACE_SCHEMA_V3_TAP && !cfg->enc.streaming;
    r->await_create = cfg->limits.on_failure == CAPTURE_ON_FAILURE_REJECT;
    r->piece_start_ms = capture_now_ms();
    if (r->chain)
        capture_rot_link(r);
    /* The file is created by the writer with this first buffer, at the next tick: handed over
     * even when empty (capture_flush), which also gives a compressed trace whose opening bytes
     * are none (v3 buffered) its first, empty frame, so the file decodes until the close. */
    capture_tick_queue(r);
    return;

err_release_chain:
    capture_wchain_release(r->chain);
    r->chain = NULL;
err_free_enc:
    trace_enc_free(r->enc);
    r->enc = NULL;
    tbuf_free(&r->buf);
err:
    LOGE(id, "%s: cannot start a trace for prefix %s: %s; connection not captured", cfg->kind,
         cfg->path_prefix, strerror(-rc));
    stats_inc(cfg->stats.files_failed);
    if (cfg->limits.on_failure == CAPTURE_ON_FAILURE_REJECT) {
        stats_inc(cfg->stats.rejected);
        r->reject = true;
    }
}

void capture_rec_unconnected(struct capture_rec *r)
{
    r->fd = -1;
}

void capture_rec_connected(struct capture_rec *r)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (!r->capturing || !r->enc || r->conn.local.present || r->conn_fd < 0 ||
        getsockname(r->conn_fd, (struct sockaddr *)&ss, &sl) != 0)
        return;
    capture_addr(&ss, sl, &r->conn.local);
    trace_enc_set_conn(r->enc, &r->conn);
}

bool capture_rec_opened(const struct capture_rec *r)
{
    return r->opened;
}

bool capture_rec_active(const struct capture_rec *r)
{
    return r->capturing;
}

struct capture_wfile *capture_rec_handover(struct capture_rec *r)
{
    /* Only the create must be queued first (a file beside this one is created after it): the
     * pending bytes stay. A TLS key logged now protects records read just before it, still in
     * the buffer, and a live follower (capture2pcap --follow) must meet the key first, or
     * Wireshark cannot decrypt them (measured: TLS 1.2 live decryption failed under load when
     * the buffer went first). */
    if (r->udp || r->admin)
        return NULL; /* no file for keys to go beside */
    if (r->capturing && !r->file && capture_piece_start(r) != 0)
        capture_rec_stop(r, "out of memory"); /* between two pieces: the keys go beside the next */
    if (r->capturing && !r->handed_over) {
        r->handed_over = true;
        if (capture_wfile_submit(r->file, NULL, 0) != 0)
            capture_rec_stop(r, "out of memory");
    }
    return r->capturing ? r->file : NULL;
}

void capture_rec_finish(struct capture_rec *r, bool closed_event)
{
    if (!r->capturing)
        return;
    if (!closed_event || r->cfg->enc.schema != TRACE_SCHEMA_V3_TAP)
        live_end(r, false); /* else the closed event below reaches the viewers itself */
    if (closed_event && r->cfg->enc.schema == TRACE_SCHEMA_V3_TAP)
        capture_rec_event(r, TRACE_EV_CLOSED, NULL, 0, 0, false);
    if (r->udp) {
        if (trace_enc_end(r->enc, &r->buf) == 0)
            udp_flush(r);
        r->buf.len = 0;
        r->capturing = false;
        return;
    }
    /* a trace captured whole under max_trace_bytes: the next cut is a new state, logged */
    if (r->capturing && r->cfg->limits.max_trace_bytes &&
        __atomic_load_n(&r->cfg->rt->limit_logged, __ATOMIC_RELAXED))
        __atomic_store_n(&r->cfg->rt->limit_logged, false, __ATOMIC_RELAXED);
    capture_rec_end(r);
}

int capture_rec_new(const struct capture_cfg *cfg, const struct ts_conn_info *info,
                    struct capture_rec **out)
{
    struct capture_rec *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->cfg = cfg;
    r->conn_id = info->conn_id;
    r->fd = info->fd;
    r->conn_fd = info->fd;
    r->loop = info->loop;
    r->conn.id = info->conn_id;
    capture_addr(&info->local, info->local_len, &r->conn.local);
    capture_addr(&info->remote, info->remote_len, &r->conn.remote);
    t_tick.recs++;
    *out = r;
    return 0;
}

void capture_rec_free(struct capture_rec *r)
{
    if (!r)
        return;
    capture_rec_finish(r, false);
    trace_enc_free(r->enc);
    tbuf_free(&r->buf);
    capture_flat_unref(r->flat);
    capture_tick_unlink(r);
    capture_rot_unlink(r);
    capture_wchain_release(r->chain);
    if (--t_tick.recs == 0 && t_tick.ev) {
        capture_writer_wake(); /* no tick left to do it */
        event_free(t_tick.ev);
        t_tick.ev = NULL;
    }
    if (t_tick.recs == 0 && t_rot.ev) {
        event_free(t_rot.ev);
        t_rot.ev = NULL;
    }
    free(r);
}

/* The transport-socket contract: what a connection asks of the layer that moves its bytes.
 *
 * A transport socket is a const ops table plus a per-instance context. Layers stack: capture
 * wraps tls or raw and forwards every call to its `inner`; only the bottom layer (raw, tls)
 * touches the fd, and it owns it (closes it in close()). The connection (net/session.c) never
 * reads or writes the fd itself and never inspects errno after a call: everything it needs is
 * in struct ts_io_result and failure_reason().
 *
 * Event model: the connection polls the fd level-triggered for EV_READ while it wants input and
 * for EV_WRITE while it has output pending or ts_wants_write() says the socket needs
 * writability to progress (a TLS handshake or a flush of buffered records). Because a layer may
 * hold bytes the fd will never announce again (TLS records already read), the connection
 * asks ts_has_pending() after every read and write and re-runs the read itself when it is true.
 *
 * Threading: an instance belongs to one worker thread; no call is thread-safe. */
#ifndef SOCKTAP_TRANSPORT_SOCKET_H
#define SOCKTAP_TRANSPORT_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct evbuffer;
struct event_base;
struct transport_socket;

enum ts_action {
    TS_KEEP_OPEN, /* progress made or "try again later" (bytes may be 0) */
    TS_CLOSE,     /* fatal: the connection must close; see err and failure_reason() */
};

struct ts_io_result {
    enum ts_action action;
    size_t bytes;    /* bytes appended (read) or consumed from the buffer (write) */
    bool end_stream; /* read: the peer ended its write half (EOF, TLS close_notify) */
    int err;         /* with TS_CLOSE: -errno; -ECONNRESET when the peer reset */
    bool blocked;    /* KEEP_OPEN, nothing moved, and the fd is not the reason: a layer is
                        holding this direction back (capture backlog full). The connection stops
                        polling that direction and retries when the layer's helper signals room
                        (ts_registry_set_waker), or on a short timer. */
};

enum ts_close_type {
    TS_CLOSE_NORMAL, /* orderly close: TLS may send close_notify; fd closed */
    TS_CLOSE_RESET,  /* abortive close: SO_LINGER 0 so the peer sees RST */
};

/* Which side of the proxy a socket sits on: listeners make server-side sockets (downstream),
 * clusters make client-side sockets (upstream). */
enum ts_side { TS_SIDE_DOWNSTREAM, TS_SIDE_UPSTREAM };

/* What a socket stack learns about its connection when it is created. Copied by the callee. */
struct ts_conn_info {
    uint64_t conn_id; /* process-wide unique; names capture files */
    int fd;           /* connected (or connecting) non-blocking socket; ownership passes to the
                         bottom layer on successful creation */
    /* remote: client (downstream) / upstream host (upstream). local is left empty
     * (local_len 0) by the relay: a layer that needs it calls getsockname(fd) once connected. */
    struct sockaddr_storage local;
    struct sockaddr_storage remote;
    socklen_t local_len, remote_len;
    struct event_base *loop; /* the worker's loop, for layers that need their own timers */
    bool connecting;         /* an upstream connect in progress: on_connected comes later, or
                                never (a failed connect closes the socket first) */
};

struct transport_socket_ops {
    const char *name;
    /* Called once the TCP connection is established (right after accept, or when a connect
     * completes). TLS starts its handshake here. Returns 0 or -errno (connection closes). */
    int (*on_connected)(struct transport_socket *ts);
    /* Reads at most MAX bytes into INTO (appended at the end). Reads until the fd would block,
     * MAX is reached, or EOF. */
    struct ts_io_result (*do_read)(struct transport_socket *ts, struct evbuffer *into, size_t max);
    /* Optional: do_read into caller memory, DST of MAX bytes, instead of an evbuffer (a layer
     * above that records the bytes reads them where its record will hold them: capture.c).
     * The same result and stopping rules as do_read. */
    struct ts_io_result (*read_flat)(struct transport_socket *ts, void *dst, size_t max);
    /* Writes from the front of FROM, draining what was written. When END_STREAM is true and
     * FROM has been fully written, ends the write half (shutdown(SHUT_WR), TLS close_notify);
     * bytes==0 with end_stream is a bare half-close. */
    struct ts_io_result (*do_write)(struct transport_socket *ts, struct evbuffer *from,
                                    bool end_stream);
    /* True if bytes are readable without the fd becoming readable (TLS decrypted records). */
    bool (*has_pending)(const struct transport_socket *ts);
    /* True if the socket cannot progress until the fd is writable (handshake, buffered
     * records), even when the connection has nothing to write. May be NULL (false). */
    bool (*wants_write)(const struct transport_socket *ts);
    /* True once the socket can carry application data (TLS: handshake done). May be NULL
     * (always true). */
    bool (*is_ready)(const struct transport_socket *ts);
    /* Human-readable reason of the last TS_CLOSE, or NULL. Valid until the next call. */
    const char *(*failure_reason)(const struct transport_socket *ts);
    /* Closes the fd (the bottom layer) and finishes side work (capture flushes its trace).
     * Idempotent. Does not free: destroy() does. */
    void (*close)(struct transport_socket *ts, enum ts_close_type how);
    /* Frees the instance and its inner sockets; closes first if close() was not called. */
    void (*destroy)(struct transport_socket *ts);
};

/* Every instance starts with this header; implementations embed it first and cast. */
struct transport_socket {
    const struct transport_socket_ops *ops;
    struct transport_socket *inner; /* the layer below, or NULL for a bottom layer */
    uint64_t conn_id;
};

/* Inline wrappers: callers go through these, never through ops directly. */
static inline int ts_on_connected(struct transport_socket *ts)
{
    return ts->ops->on_connected ? ts->ops->on_connected(ts) : 0;
}
static inline struct ts_io_result ts_do_read(struct transport_socket *ts, struct evbuffer *into,
                                             size_t max)
{
    return ts->ops->do_read(ts, into, max);
}
static inline bool ts_can_read_flat(const struct transport_socket *ts)
{
    return ts->ops->read_flat != NULL;
}
static inline struct ts_io_result ts_read_flat(struct transport_socket *ts, void *dst, size_t max)
{
    return ts->ops->read_flat(ts, dst, max);
}
static inline struct ts_io_result ts_do_write(struct transport_socket *ts, struct evbuffer *from,
                                              bool end_stream)
{
    return ts->ops->do_write(ts, from, end_stream);
}
static inline bool ts_has_pending(const struct transport_socket *ts)
{
    return ts->ops->has_pending && ts->ops->has_pending(ts);
}
static inline bool ts_wants_write(const struct transport_socket *ts)
{
    return ts->ops->wants_write && ts->ops->wants_write(ts);
}
static inline bool ts_is_ready(const struct transport_socket *ts)
{
    return !ts->ops->is_ready || ts->ops->is_ready(ts);
}
static inline const char *ts_failure_reason(const struct transport_socket *ts)
{
    return ts->ops->failure_reason ? ts->ops->failure_reason(ts) : NULL;
}
static inline void ts_close(struct transport_socket *ts, enum ts_close_type how)
{
    ts->ops->close(ts, how);
}
/* Frees TS (and its inner layers); TS may be NULL. */
static inline void ts_destroy(struct transport_socket *ts)
{
    if (ts)
        ts->ops->destroy(ts);
}

#endif

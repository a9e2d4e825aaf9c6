/* raw_buffer: the plain-TCP bottom layer. It owns the fd and is the only code that reads or
 * writes it. Reads go straight into evbuffer space reserved in place (one readv per call, no
 * bounce copy); writes use evbuffer_write_atmost (writev over the chains). A short read or
 * write means the socket is drained/full, so we stop without paying for an EAGAIN round trip:
 * the connection polls level-triggered and will be told again. */
#include "transport/raw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

/* Read size adapts to the flow: small requests reserve small chains (a 256 KiB chain per
 * 100-byte request would be malloc'd and freed, page faults included, every time), bulk flows
 * grow to RAW_READ_MAX after reads that filled what they were given. */
#define RAW_READ_MIN (16u * 1024u)
#define RAW_READ_MAX (256u * 1024u)

struct raw_socket {
    struct transport_socket base;
    int fd;
    uint32_t read_size; /* next read's reservation, RAW_READ_MIN..RAW_READ_MAX */
    int last_errno;
    char reason[96];
};

static struct ts_io_result raw_fail(struct raw_socket *rs, int err)
{
    rs->last_errno = err;
    snprintf(rs->reason, sizeof(rs->reason), "%s", strerror(err));
    return (struct ts_io_result){.action = TS_CLOSE, .err = -err};
}

/* After a read that returned < 0: true to retry it (EINTR); else *R is what to return: as it
 * is when the socket is drained, TS_CLOSE with the bytes read so far on an error. */
static bool raw_read_again(struct raw_socket *rs, struct ts_io_result *r)
{
    if (errno == EINTR)
        return true;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
        size_t bytes = r->bytes;
        *r = raw_fail(rs, errno);
        r->bytes = bytes;
    }
    return false;
}

static struct ts_io_result raw_do_read(struct transport_socket *ts, struct evbuffer *into,
                                       size_t max)
{
    struct raw_socket *rs = (struct raw_socket *)ts;
    struct ts_io_result r = {.action = TS_KEEP_OPEN};
    while (r.bytes < max) {
        size_t want = max - r.bytes;
        if (want > rs->read_size)
            want = rs->read_size;
        struct evbuffer_iovec vec[2];
        int n = evbuffer_reserve_space(into, (ev_ssize_t)want, vec, 2);
        if (n <= 0)
            return raw_fail(rs, ENOMEM);
        size_t room = 0;
        struct iovec iov[2];
        for (int i = 0; i < n; i++) {
            if (vec[i].iov_len > want - room)
                vec[i].iov_len = want - room;
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
            room += vec[i].iov_len;
        }
        ssize_t got = readv(rs->fd, iov, n);
        if (got < 0) {
            evbuffer_commit_space(into, vec, 0);
            if (raw_read_again(rs, &r))
                continue;
            return r;
        }
        if (got == 0) {
            evbuffer_commit_space(into, vec, 0);
            r.end_stream = true;
            return r;
        }
        size_t left = (size_t)got;
        for (int i = 0; i < n; i++) {
            if (vec[i].iov_len > left)
                vec[i].iov_len = left;
            left -= vec[i].iov_len;
        }
        evbuffer_commit_space(into, vec, n);
        r.bytes += (size_t)got;
        if ((size_t)got < room) {
            if ((size_t)got < rs->read_size / 4 && rs->read_size > RAW_READ_MIN)
                rs->read_size /= 2;
            break; /* drained the socket: the next readiness event brings more */
        }
        if (rs->read_size < RAW_READ_MAX)
            rs->read_size *= 2;
    }
    return r;
}

/* do_read into DST: read(2) until the socket is drained (a short read), MAX, or EOF. */
static struct ts_io_result raw_read_flat(struct transport_socket *ts, void *dst, size_t max)
{
    struct raw_socket *rs = (struct raw_socket *)ts;
    struct ts_io_result r = {.action = TS_KEEP_OPEN};
    while (r.bytes < max) {
        ssize_t got = read(rs->fd, (char *)dst + r.bytes, max - r.bytes);
        if (got < 0) {
            if (raw_read_again(rs, &r))
                continue;
            return r;
        }
        if (got == 0) {
            r.end_stream = true;
            return r;
        }
        size_t asked = max - r.bytes;
        r.bytes += (size_t)got;
        if ((size_t)got < asked)
            break; /* drained the socket: the next readiness event brings more */
    }
    return r;
}

static struct ts_io_result raw_do_write(struct transport_socket *ts, struct evbuffer *from,
                                        bool end_stream)
{
    struct raw_socket *rs = (struct raw_socket *)ts;
    struct ts_io_result r = {.action = TS_KEEP_OPEN};
    for (;;) {
        size_t pending = evbuffer_get_length(from);
        if (pending == 0)
            break;
        int n = evbuffer_write_atmost(from, rs->fd, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return r;
            struct ts_io_result f = raw_fail(rs, errno == EPIPE ? EPIPE : errno);
            f.bytes = r.bytes;
            return f;
        }
        r.bytes += (size_t)n;
        if ((size_t)n < pending)
            return r; /* socket buffer full */
    }
    if (end_stream && shutdown(rs->fd, SHUT_WR) < 0 && errno != ENOTCONN) {
        struct ts_io_result f = raw_fail(rs, errno);
        f.bytes = r.bytes;
        return f;
    }
    return r;
}

static const char *raw_failure_reason(const struct transport_socket *ts)
{
    const struct raw_socket *rs = (const struct raw_socket *)ts;
    return rs->last_errno ? rs->reason : NULL;
}

static void raw_close(struct transport_socket *ts, enum ts_close_type how)
{
    struct raw_socket *rs = (struct raw_socket *)ts;
    if (rs->fd < 0)
        return;
    raw_fd_close(rs->fd, how);
    rs->fd = -1;
}

void raw_fd_close(int fd, enum ts_close_type how)
{
    if (how == TS_CLOSE_RESET) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(fd);
}

static void raw_destroy(struct transport_socket *ts)
{
    raw_close(ts, TS_CLOSE_NORMAL);
    free(ts);
}

static const struct transport_socket_ops raw_socket_ops = {
    .name = "raw_buffer",
    .do_read = raw_do_read,
    .read_flat = raw_read_flat,
    .do_write = raw_do_write,
    .failure_reason = raw_failure_reason,
    .close = raw_close,
    .destroy = raw_destroy,
};

int raw_socket_create(const struct ts_conn_info *info, struct transport_socket **out)
{
    struct raw_socket *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return -ENOMEM;
    rs->base.ops = &raw_socket_ops;
    rs->base.conn_id = info->conn_id;
    rs->fd = info->fd;
    rs->read_size = RAW_READ_MIN;
    *out = &rs->base;
    return 0;
}

static int raw_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                     const struct cfg_path *path, void **out_cfg)
{
    static const char *const no_keys[] = {NULL};
    *out_cfg = NULL;
    if (config && config->type == CFG_MAP && config->n > 0)
        return cfg_check_keys(ctx->err, ctx->doc, config, path, no_keys);
    return 0;
}

static int raw_create(const void *cfg, const struct ts_conn_info *info,
                      struct transport_socket **out)
{
    return raw_socket_create(info, out);
}

static void raw_free_cfg(void *cfg)
{
}

static const char *const raw_names[] = {"raw_buffer", "envoy.transport_sockets.raw_buffer", NULL};
static const char *const raw_type_urls[] = {
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer",
    "type.googleapis.com/envoy.config.transport_socket.raw_buffer.v2.RawBuffer", NULL};

const struct ts_factory raw_socket_factory = {
    .names = raw_names,
    .type_urls = raw_type_urls,
    .parse = raw_parse,
    .create = raw_create,
    .free_cfg = raw_free_cfg,
};

/* capture_wire.c: tls_wire_ops over capture_rec, plus the per-connection key-log sidecar.
 *
 * The key lines go to their own file rather than into the trace: Envoy's trace schema has no
 * place for secrets, and an extra field would break Envoy's text/JSON readers; a sidecar keeps
 * the wire trace an ordinary Envoy trace and the keys in the format every TLS tool reads. They
 * are created and written by capture_disk's writer thread like the trace, right after it (no disk
 * call on the worker). */
#include "transport/capture_wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "transport/capture.h"
#include "transport/capture_disk.h"
#include "transport/capture_rec.h"

#define WIRE_KEYLOG_BACKLOG (64u * 1024u) /* a handshake logs about 1 KiB */

struct wire_rec {
    struct capture_rec *rec;
    const struct capture_cfg *cfg;
    uint64_t conn_id;
    struct capture_wfile *keys; /* NULL until the first line */
    bool keys_failed;           /* logged once; further lines are dropped */
};

static int wire_rec_new(const void *cfg, const struct ts_conn_info *info, void **out)
{
    struct wire_rec *w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->cfg = cfg;
    w->conn_id = info->conn_id;
    int rc = capture_rec_new(cfg, info, &w->rec);
    if (rc) {
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

static void wire_rec_open(void *p)
{
    struct wire_rec *w = p;
    if (!capture_rec_opened(w->rec))
        capture_rec_open(w->rec);
}

static void wire_rec_bytes(void *p, bool read, const void *buf, size_t len)
{
    struct wire_rec *w = p;
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    capture_rec_event(w->rec, read ? TRACE_EV_READ : TRACE_EV_WRITE, &iov, 1, len, false);
}

static int wire_keys_open(struct wire_rec *w)
{
    struct capture_wfile *trace = capture_rec_handover(w->rec);
    if (!trace)
        return -EIO;
    struct capture_wstats ws = {.has_stats = true,
                                .bytes_written = w->cfg->stats.bytes_written,
                                .write_errors = w->cfg->stats.write_errors};
    return capture_wfile_open_beside(trace, ".keylog", w->conn_id, WIRE_KEYLOG_BACKLOG, &ws,
                                     &w->keys);
}

static void wire_rec_keylog(void *p, const char *line)
{
    struct wire_rec *w = p;
    if (w->keys_failed || !capture_rec_active(w->rec))
        return;
    int rc = w->keys ? 0 : wire_keys_open(w);
    size_t n = strlen(line);
    char *data = rc ? NULL : malloc(n + 1);
    if (!rc && !data)
        rc = -ENOMEM;
    if (!rc) {
        memcpy(data, line, n);
        data[n] = '\n';
        rc = capture_wfile_submit(w->keys, data, n + 1); /* takes DATA in every case */
    }
    if (rc) {
        w->keys_failed = true;
        if (w->keys && capture_wfile_create_failed(w->keys))
            return; /* logged and counted by the writer, or the trace itself failed */
        stats_inc(w->cfg->stats.write_errors);
        LOGW(w->conn_id,
             "%s: cannot write the key log of connection %llu: %s; the wire trace has no keys",
             w->cfg->kind, (unsigned long long)w->conn_id, strerror(-rc));
    }
}

static size_t wire_rec_room(void *p, size_t need)
{
    return capture_rec_room_wait(((struct wire_rec *)p)->rec, need);
}

static void wire_rec_free(void *p)
{
    struct wire_rec *w = p;
    capture_rec_finish(w->rec, true);
    capture_rec_free(w->rec);
    capture_wfile_close(w->keys);
    free(w);
}

static struct live_hub *wire_live(const void *cfg)
{
    return ((const struct capture_cfg *)cfg)->live;
}

const struct tls_wire_ops capture_wire_ops = {
    .live = wire_live,
    .parse = capture_wire_cfg_parse,
    .free_cfg = capture_cfg_free,
    .rec_new = wire_rec_new,
    .rec_open = wire_rec_open,
    .rec_bytes = wire_rec_bytes,
    .rec_keylog = wire_rec_keylog,
    .rec_room = wire_rec_room,
    .rec_free = wire_rec_free,
};

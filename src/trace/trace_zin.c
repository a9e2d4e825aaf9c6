/* trace_zin.c: a fopencookie FILE whose read decodes the compressed input.
 *
 * Rejected: decompressing in the readers' refill (bfill) directly. The text and JSON readers
 * take their bytes from the FILE through the tokenizer (getc), so a FILE is the one interface
 * every format already shares; fopencookie costs one extra copy through stdio's buffer, small
 * next to the decoding itself. */
#include "trace/trace_zin.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <zstd.h>

#define ZIN_IN_CAP         (64u << 10)
#define ZIN_WINDOW_LOG_MAX 27 /* the zstd CLI's default limit: 128 MiB of window at most */

struct trace_zin {
    FILE *raw;
    enum trace_zin_alg alg;
    const char *name;
    ZSTD_DStream *zd;
    LZ4F_dctx *ld;
    uint8_t in[ZIN_IN_CAP];
    size_t in_pos, in_len;
    uint64_t in_base;     /* compressed offset of in[0] */
    uint64_t frame_start; /* compressed offset of the frame being decoded */
    bool in_frame;        /* inside a frame that has not ended */
    bool raw_eof;
    int err; /* 0, -EBADMSG, -EIO... (sticky) */
    char errmsg[160];
};

enum trace_zin_alg trace_zin_detect(const uint8_t *p, size_t n)
{
    if (n < 4)
        return TRACE_ZIN_NONE;
    uint32_t m = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    if (m == ZSTD_MAGICNUMBER || (m & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START)
        return TRACE_ZIN_ZSTD;
    if (m == LZ4F_MAGICNUMBER)
        return TRACE_ZIN_LZ4;
    return TRACE_ZIN_NONE;
}

const char *trace_zin_name(enum trace_zin_alg alg)
{
    return alg == TRACE_ZIN_ZSTD ? "zstd" : alg == TRACE_ZIN_LZ4 ? "lz4" : "none";
}

static uint64_t zin_off(const struct trace_zin *z)
{
    return z->in_base + z->in_pos;
}

static ssize_t zin_fail(struct trace_zin *z, int err, const char *what)
{
    z->err = err;
    snprintf(z->errmsg, sizeof(z->errmsg), "%s", what);
    errno = -err;
    return -1;
}

static ssize_t zin_refill(struct trace_zin *z)
{
    z->in_base += z->in_len;
    z->in_pos = z->in_len = 0;
    /* not sticky: a file that grows (the reader's follow mode) has more after an EOF */
    clearerr(z->raw);
    z->raw_eof = false;
    z->in_len = fread(z->in, 1, sizeof(z->in), z->raw);
    if (z->in_len == 0) {
        if (ferror(z->raw))
            return zin_fail(z, errno ? -errno : -EIO, strerror(errno ? errno : EIO));
        z->raw_eof = true;
    }
    return 0;
}

/* One decoding step into OUT (CAP bytes): returns the decoder's hint (0: a frame just ended),
 * or (size_t)-1 with the error recorded; *PRODUCED gets the bytes written. */
static size_t zin_step(struct trace_zin *z, char *out, size_t cap, size_t *produced)
{
    if (z->alg == TRACE_ZIN_ZSTD) {
        ZSTD_outBuffer ob = {out, cap, 0};
        ZSTD_inBuffer ib = {z->in, z->in_len, z->in_pos};
        /* A frame's first call gets its first bytes only. Given a whole small frame at once,
         * zstd decodes it in one pass (ZSTD_decompress_usingDDict), whose checks differ from
         * streaming on degenerate frames: the same bytes were refused at offset 0 read whole
         * and accepted when they came in pieces (capture2pcap --follow), and a bad checksum
         * would give nothing in one pass but the frame's data, then the error, streamed. With
         * the header split across two calls zstd always streams, so a trace decodes the same
         * however its bytes arrive (fuzz_trace_follow checks it). */
        if (!z->in_frame && ib.size - ib.pos > 4)
            ib.size = ib.pos + 4;
        size_t ret = ZSTD_decompressStream(z->zd, &ob, &ib);
        if (ZSTD_isError(ret)) {
            zin_fail(z, -EBADMSG, ZSTD_getErrorName(ret));
            return (size_t)-1;
        }
        z->in_pos = ib.pos;
        *produced = ob.pos;
        return ret;
    }
    size_t dst = cap, src = z->in_len - z->in_pos;
    size_t ret = LZ4F_decompress(z->ld, out, &dst, z->in + z->in_pos, &src, NULL);
    if (LZ4F_isError(ret)) {
        zin_fail(z, -EBADMSG, LZ4F_getErrorName(ret));
        return (size_t)-1;
    }
    z->in_pos += src;
    *produced = dst;
    return ret;
}

static ssize_t zin_read(void *cookie, char *buf, size_t size)
{
    struct trace_zin *z = cookie;
    bool retried = false;
    if (z->err) {
        errno = -z->err;
        return -1;
    }
    for (;;) {
        /* at an EOF seen before, once more per call: the file may have grown since */
        if (z->in_pos == z->in_len && (!z->raw_eof || !retried) && zin_refill(z) < 0)
            return -1;
        retried = true;
        size_t before = z->in_pos, produced = 0;
        size_t hint = zin_step(z, buf, size, &produced);
        if (hint == (size_t)-1)
            return -1;
        if (hint == 0) {
            z->in_frame = false;
            z->frame_start = zin_off(z);
        } else if (z->in_pos > before) {
            z->in_frame = true;
        }
        if (produced)
            return (ssize_t)produced;
        if (z->in_pos == z->in_len && z->raw_eof)
            return 0;
    }
}

static int zin_close(void *cookie)
{
    struct trace_zin *z = cookie;
    ZSTD_freeDStream(z->zd);
    LZ4F_freeDecompressionContext(z->ld);
    free(z);
    return 0;
}

int trace_zin_open(FILE *raw, enum trace_zin_alg alg, const uint8_t *pre, size_t pre_len,
                   const char *name, struct trace_zin **out_zin, FILE **out_file)
{
    if (alg == TRACE_ZIN_NONE || pre_len > ZIN_IN_CAP)
        return -EINVAL;
    struct trace_zin *z = calloc(1, sizeof(*z));
    if (!z)
        return -ENOMEM;
    z->raw = raw;
    z->alg = alg;
    z->name = name ? name : "<input>";
    if (pre_len)
        memcpy(z->in, pre, pre_len);
    z->in_len = pre_len;
    if (alg == TRACE_ZIN_ZSTD) {
        if (!(z->zd = ZSTD_createDStream()) ||
            ZSTD_isError(ZSTD_DCtx_setParameter(z->zd, ZSTD_d_windowLogMax, ZIN_WINDOW_LOG_MAX)))
            goto err_free;
    } else if (LZ4F_isError(LZ4F_createDecompressionContext(&z->ld, LZ4F_VERSION))) {
        goto err_free;
    }
    cookie_io_functions_t io = {.read = zin_read, .close = zin_close};
    FILE *f = fopencookie(z, "rb", io);
    if (!f)
        goto err_free;
    *out_zin = z;
    *out_file = f;
    return 0;

err_free:
    zin_close(z);
    return -ENOMEM;
}

int trace_zin_status(const struct trace_zin *z, char *msg, size_t size)
{
    const char *alg = trace_zin_name(z->alg);
    if (z->err) {
        /* the frame's offset, not how far the decoder had read: that depends on how the
         * bytes arrived (a followed file in pieces), the frame does not */
        snprintf(msg, size, "%s: corrupt %s data in the frame at compressed offset %llu: %s",
                 z->name, alg, (unsigned long long)z->frame_start, z->errmsg);
        if (z->err != -EBADMSG)
            snprintf(msg, size, "%s: reading at compressed offset %llu failed: %s", z->name,
                     (unsigned long long)zin_off(z), z->errmsg);
        return z->err;
    }
    if (z->in_frame && z->raw_eof && z->in_pos == z->in_len) {
        snprintf(msg, size,
                 "%s: truncated at compressed offset %llu: the %s frame at offset %llu "
                 "is not complete",
                 z->name, (unsigned long long)zin_off(z), alg, (unsigned long long)z->frame_start);
        return -ENODATA;
    }
    if (size)
        msg[0] = '\0';
    return 0;
}

uint64_t trace_zin_offset(const struct trace_zin *z)
{
    return zin_off(z);
}

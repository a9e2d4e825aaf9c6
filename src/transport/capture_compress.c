/* capture_compress.c: one frame per handed-over buffer, one compression context per writer.
 *
 * Choice: every buffer a worker hands to the writer (256 KiB in bulk flows, one 5 ms tick's
 * events otherwise) is compressed as a complete frame with the writer thread's single context.
 * A file holds no compression state between writes, so:
 *   - memory is one context and one output buffer for the whole process, whatever the number of
 *     open trace files (tens of thousands of connections cost nothing more);
 *   - every write(2) ends on a frame end: a kill -9, a full disk cut back to the last write
 *     (capture_disk.c), or reading a live file all see whole frames that decode to a valid
 *     trace prefix, exactly the guarantee of an uncompressed trace.
 * Rejected: a streaming context per open file with ZSTD_e_flush per buffer. Its history spans
 * buffers (better ratio on many small ticks), but at level 1 ZSTD_estimateCStreamSize() is
 * 1.3 MiB per context (0.95 MiB even with windowLog 17), i.e. gigabytes for a few thousand
 * connections, and a flushed-but-not-ended frame is what `zstd -d` calls truncated after a
 * kill -9. The one context here, sized by the pledged buffer size, is ~570 KiB at level 1.
 * What it costs, measured (libzstd 1.5.4, one core of this 2-core VM, CPU time) on 25 captured
 * curl fetches of a 4 MiB JSON document (100 MiB of PROTO_BINARY trace, the document of
 * bench/compress-bench.sh), the rejected design (one stream per file, ZSTD_e_flush per buffer)
 * against this one (one frame per buffer), zstd level 1 unless said:
 *   buffers of 256 KiB (bulk)     6.01 MB (17.5x), 800 MB/s   vs  6.48 MB (16.2x), 1005 MB/s
 *   buffers of 16 KiB             5.28 MB (19.9x), 760 MB/s   vs  8.16 MB (12.8x),  742 MB/s
 *   buffers of 4 KiB (tiny ticks) 5.01 MB (20.9x), 521 MB/s   vs 11.78 MB  (8.9x),  436 MB/s
 *   256 KiB at level 3            4.86 MB (21.6x), 540 MB/s   vs  6.44 MB (16.3x),  881 MB/s
 *   lz4 (liblz4 1.9.4), 256 KiB frames: 20.0 MB (5.2x)
 * So bulk flows lose ~8% of size and compress faster; a level above 1 buys nothing per frame
 * (its larger window spans more than one buffer); many tiny exchanges lose up to half the
 * ratio: the price of flat memory and of a file that is whole frames after every write.
 *
 * Frames carry their content size and a checksum (zstd: XXH64 low 32 bits; lz4: content
 * checksum), so a reader detects a damaged frame. The level is the config's (default zstd 1:
 * the writer is one thread, and the compressor's speed bounds the capture rate). */
#include "transport/capture_compress.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include <lz4frame.h>
#include <lz4hc.h>
#include <zstd.h>

const char *const capture_compress_names[] = {"none", "zstd", "lz4", NULL};

struct capture_compressor {
    ZSTD_CCtx *zstd;
    LZ4F_cctx *lz4;
    uint8_t *out;
    size_t cap;
};

const char *capture_compress_suffix(enum capture_compress_alg alg)
{
    return alg == CAPTURE_COMPRESS_ZSTD ? ".zst" : alg == CAPTURE_COMPRESS_LZ4 ? ".lz4" : "";
}

void capture_compress_levels(enum capture_compress_alg alg, int *min, int *max, int *def)
{
    *min = *max = *def = 0;
    if (alg == CAPTURE_COMPRESS_ZSTD) {
        /* ZSTD_minCLevel() is -131072: the useful fast levels stop long before. */
        *min = -7;
        *max = 19; /* 20..22 are --ultra: windows far beyond one buffer */
        *def = CAPTURE_ZSTD_DEFAULT_LEVEL;
    } else if (alg == CAPTURE_COMPRESS_LZ4) {
        *max = LZ4HC_CLEVEL_MAX;
        *def = CAPTURE_LZ4_DEFAULT_LEVEL;
    }
}

int capture_compressor_new(struct capture_compressor **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : -ENOMEM;
}

static int reserve(struct capture_compressor *c, size_t n)
{
    if (c->cap >= n)
        return 0;
    uint8_t *p = realloc(c->out, n);
    if (!p)
        return -ENOMEM;
    c->out = p;
    c->cap = n;
    return 0;
}

/* A compressBound-sized output always suffices; should the library ever want more, grow. */
static int zstd_room(struct capture_compressor *c, ZSTD_outBuffer *ob)
{
    if (ob->pos < ob->size)
        return 0;
    int rc = reserve(c, c->cap * 2);
    if (rc)
        return rc;
    ob->dst = c->out;
    ob->size = c->cap;
    return 0;
}

static int zstd_frame(struct capture_compressor *c, int level, const struct iovec *iov, int iovcnt,
                      size_t total, struct iovec *out)
{
    if (!c->zstd && !(c->zstd = ZSTD_createCCtx()))
        return -ENOMEM;
    ZSTD_CCtx *z = c->zstd;
    ZSTD_CCtx_reset(z, ZSTD_reset_session_only);
    /* The pledged size puts the content size in the frame header and sizes the window to the
     * buffer, not to the level's default (smaller context, same output). */
    if (ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, level)) ||
        ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1)) ||
        ZSTD_isError(ZSTD_CCtx_setPledgedSrcSize(z, total)))
        return -EINVAL;
    int rc = reserve(c, ZSTD_compressBound(total));
    if (rc)
        return rc;
    ZSTD_outBuffer ob = {c->out, c->cap, 0};
    for (int i = 0; i < iovcnt; i++) {
        ZSTD_inBuffer ib = {iov[i].iov_base, iov[i].iov_len, 0};
        while (ib.pos < ib.size) {
            if ((rc = zstd_room(c, &ob)))
                return rc;
            if (ZSTD_isError(ZSTD_compressStream2(z, &ob, &ib, ZSTD_e_continue)))
                return -EINVAL;
        }
    }
    ZSTD_inBuffer none = {NULL, 0, 0};
    size_t left;
    do {
        if ((rc = zstd_room(c, &ob)))
            return rc;
        left = ZSTD_compressStream2(z, &ob, &none, ZSTD_e_end);
        if (ZSTD_isError(left))
            return -EINVAL;
    } while (left);
    *out = (struct iovec){.iov_base = c->out, .iov_len = ob.pos};
    return 0;
}

static int lz4_frame(struct capture_compressor *c, int level, const struct iovec *iov, int iovcnt,
                     size_t total, struct iovec *out)
{
    if (!c->lz4 && LZ4F_isError(LZ4F_createCompressionContext(&c->lz4, LZ4F_VERSION)))
        return -ENOMEM;
    LZ4F_preferences_t prefs = {
        .frameInfo = {.blockSizeID = LZ4F_max256KB,
                      .blockMode = LZ4F_blockLinked,
                      .contentChecksumFlag = LZ4F_contentChecksumEnabled,
                      .contentSize = total},
        .compressionLevel = level,
    };
    /* LZ4F_compressBound holds for one call: make room before each. */
    int rc = reserve(c, LZ4F_HEADER_SIZE_MAX);
    if (rc)
        return rc;
    size_t n = LZ4F_compressBegin(c->lz4, c->out, c->cap, &prefs);
    if (LZ4F_isError(n))
        return -EINVAL;
    size_t pos = n;
    for (int i = 0; i < iovcnt; i++) {
        if ((rc = reserve(c, pos + LZ4F_compressBound(iov[i].iov_len, &prefs))))
            return rc;
        n = LZ4F_compressUpdate(c->lz4, c->out + pos, c->cap - pos, iov[i].iov_base, iov[i].iov_len,
                                NULL);
        if (LZ4F_isError(n))
            return -EINVAL;
        pos += n;
    }
    if ((rc = reserve(c, pos + LZ4F_compressBound(0, &prefs))))
        return rc;
    n = LZ4F_compressEnd(c->lz4, c->out + pos, c->cap - pos, NULL);
    if (LZ4F_isError(n))
        return -EINVAL;
    *out = (struct iovec){.iov_base = c->out, .iov_len = pos + n};
    return 0;
}

int capture_compress_frame(struct capture_compressor *c, const struct capture_compress_cfg *cfg,
                           const struct iovec *iov, int iovcnt, struct iovec *out)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (cfg->alg == CAPTURE_COMPRESS_ZSTD)
        return zstd_frame(c, cfg->level, iov, iovcnt, total, out);
    if (cfg->alg == CAPTURE_COMPRESS_LZ4)
        return lz4_frame(c, cfg->level, iov, iovcnt, total, out);
    return -EINVAL;
}

void capture_compressor_free(struct capture_compressor *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->zstd);
    LZ4F_freeCompressionContext(c->lz4);
    free(c->out);
    free(c);
}

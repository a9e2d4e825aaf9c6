/* capture_compress: the writer thread's compression of trace buffers (socktap extension
 * `socktap_compression`). Each buffer a worker hands over becomes one complete, independent
 * zstd frame (RFC 8878) or lz4 frame, so a trace file is a concatenation of frames: `zstd -d` /
 * `lz4 -d` give back the exact uncompressed trace, and after every write(2) the file decodes
 * to a valid trace prefix, as an uncompressed one is (a kill -9 leaves whole frames, or one
 * torn last frame the readers report as truncated).
 *
 * Threading: one compressor per writer thread (it holds the contexts and the output buffer);
 * the configs are read-only and shared. */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_COMPRESS_H
#define SOCKTAP_TRANSPORT_CAPTURE_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

enum capture_compress_alg {
    CAPTURE_COMPRESS_NONE = 0,
    CAPTURE_COMPRESS_ZSTD,
    CAPTURE_COMPRESS_LZ4,
};

/* What a capture config asks for: an algorithm and its level (zstd: its negative fast levels
 * up to 19; lz4: 0 = LZ4 fast, 3..12 = LZ4HC). */
struct capture_compress_cfg {
    enum capture_compress_alg alg;
    int level;
};

#define CAPTURE_ZSTD_DEFAULT_LEVEL 1
#define CAPTURE_LZ4_DEFAULT_LEVEL  0

/* The config names ("none", "zstd", "lz4"), indexed by alg, NULL-terminated. */
extern const char *const capture_compress_names[];

/* The file name suffix appended to the format's extension: "" / ".zst" / ".lz4". */
const char *capture_compress_suffix(enum capture_compress_alg alg);

/* The levels ALG accepts, and the one it uses when none is given. */
void capture_compress_levels(enum capture_compress_alg alg, int *min, int *max, int *def)
    __attribute__((nonnull));

/* A writer thread's compressor (opaque). */
struct capture_compressor;

/* Allocates an empty compressor (contexts are made at first use). *OUT is the caller's
 * (capture_compressor_free). Returns 0 or -ENOMEM. */
int capture_compressor_new(struct capture_compressor **out)
    __attribute__((warn_unused_result, nonnull));

/* Compresses the IOVCNT pieces of IOV (read, not kept) as ONE complete frame with CFG (alg not
 * NONE). On success *OUT points at the frame (owned by C, valid until the next call or free).
 * Returns 0, -ENOMEM, or -EINVAL (the library refused the parameters). */
int capture_compress_frame(struct capture_compressor *c, const struct capture_compress_cfg *cfg,
                           const struct iovec *iov, int iovcnt, struct iovec *out)
    __attribute__((warn_unused_result, nonnull(1, 2, 5)));

/* Frees C and its contexts. NULL allowed. */
void capture_compressor_free(struct capture_compressor *c);

#endif

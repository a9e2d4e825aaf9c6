/* trace_zin: transparent decompression of a compressed trace file for the readers (socktap
 * extension `socktap_compression`, docs/capture.md): zstd (RFC 8878) and lz4 frame streams,
 * concatenated and skippable frames included, decoded as a stream through a FILE, in memory
 * bounded by one frame's window (zstd: at most 2^27 bytes, the zstd CLI's default limit; socktap
 * writes frames of one 256 KiB buffer) whatever the file's size.
 *
 * The decoded bytes are what the readers parse; problems in the compressed layer are kept here
 * and described with the compressed byte offset (trace_zin_status), because the FILE interface
 * can only say "read error" or "end of file". */
#ifndef SOCKTAP_TRACE_TRACE_ZIN_H
#define SOCKTAP_TRACE_TRACE_ZIN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum trace_zin_alg {
    TRACE_ZIN_NONE = 0,
    TRACE_ZIN_ZSTD, /* magic 28 B5 2F FD, or a zstd skippable frame 5? 2A 4D 18 */
    TRACE_ZIN_LZ4,  /* magic 04 22 4D 18 */
};

/* What the first N bytes of P (4 needed) say the input is. Skippable frames (shared by both
 * formats' magic range 0x184D2A50..5F) count as zstd. */
enum trace_zin_alg trace_zin_detect(const uint8_t *p, size_t n);

/* "zstd" / "lz4" / "none". */
const char *trace_zin_name(enum trace_zin_alg alg);

struct trace_zin;

/* Opens a decompressing stream over RAW (borrowed: not closed, must outlive *OUT_FILE) whose
 * first PRE_LEN bytes were already read into PRE (copied). NAME (borrowed, for messages) must
 * outlive it. On success *OUT_FILE reads the decoded bytes and owns *OUT_ZIN: fclose(*OUT_FILE)
 * frees both. Returns 0, -ENOMEM or -EINVAL (ALG is NONE). */
int trace_zin_open(FILE *raw, enum trace_zin_alg alg, const uint8_t *pre, size_t pre_len,
                   const char *name, struct trace_zin **out_zin, FILE **out_file)
    __attribute__((warn_unused_result, nonnull(1, 6, 7)));

/* The compressed layer's state once the decoded stream ended or failed: 0 when every frame
 * read so far is complete; -ENODATA when the input ends inside a frame (a crash-cut file);
 * -EBADMSG for corrupt compressed data; -EIO (or the read's -errno) when reading failed.
 * MSG (SIZE bytes, caller's) gets "NAME: ... at compressed offset N ..." for a non-zero result
 * ("" for 0). */
int trace_zin_status(const struct trace_zin *z, char *msg, size_t size) __attribute__((nonnull));

/* Compressed bytes consumed so far. */
uint64_t trace_zin_offset(const struct trace_zin *z) __attribute__((nonnull));

#endif

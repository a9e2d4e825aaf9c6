/* Compressed trace input (trace_zin behind trace_reader): zstd and lz4 frame streams built here
 * with the libraries themselves, read back through the public reader API. Concatenated and
 * skippable frames, a cut file (every whole event, then -ENODATA naming the compressed offset),
 * corrupt data (-EBADMSG naming the frame's compressed offset), garbage after the last frame,
 * and the extension hint behind ".zst". */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lz4frame.h>
#include <zstd.h>

#include "trace/trace_encode.h"
#include "trace/trace_reader.h"
#include "trace/trace_zin.h"

#define NEVENTS 40
#define EV_LEN  3000

static const struct trace_conn conn = {.id = 9};

/* The trace of NEVENTS events, each EV_LEN bytes of "event <i>" repeated; OFFS[i] is where
 * event i ends in it (a buffer boundary the capture writer could hand over). */
static struct tbuf plain_trace(enum trace_schema schema, enum trace_format fmt, size_t *offs)
{
    struct trace_enc_cfg cfg = {.schema = schema, .format = fmt, .streaming = true};
    struct trace_enc *enc;
    struct tbuf out = {0};
    uint8_t data[EV_LEN];
    assert_int_equal(trace_enc_new(&cfg, &conn, &enc), 0);
    assert_int_equal(trace_enc_begin(enc, &out), 0);
    for (int i = 0; i < NEVENTS; i++) {
        for (size_t k = 0; k < EV_LEN; k++)
            data[k] = (uint8_t)("event "[k % 6] + (k % 6 == 5 ? i % 10 : 0));
        struct iovec iov = {data, EV_LEN};
        struct trace_event ev = {.sec = 1700000000 + i,
                                 .dir = i % 2 ? TRACE_EV_WRITE : TRACE_EV_READ,
                                 .iov = &iov,
                                 .iovcnt = 1,
                                 .len = EV_LEN};
        assert_int_equal(trace_enc_event(enc, &ev, &out), 0);
        offs[i] = out.len;
    }
    assert_int_equal(trace_enc_end(enc, &out), 0);
    trace_enc_free(enc);
    return out;
}

static void append(struct tbuf *b, const void *p, size_t n)
{
    assert_int_equal(tbuf_append(b, p, n), 0);
}

/* One frame per ten events, as the writer makes them (one per handed-over buffer); FRAME_ENDS
 * gets the compressed offset after each frame. */
static struct tbuf compress_frames(const struct tbuf *plain, const size_t *offs, bool lz4,
                                   size_t *frame_ends)
{
    struct tbuf out = {0};
    size_t from = 0;
    /* with checksums, as the capture writer makes them */
    LZ4F_preferences_t prefs = {.frameInfo = {.contentChecksumFlag = LZ4F_contentChecksumEnabled}};
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    assert_non_null(cctx);
    assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)));
    for (int f = 0; f < NEVENTS / 10; f++) {
        size_t to = f == NEVENTS / 10 - 1 ? plain->len : offs[f * 10 + 9];
        size_t cap =
            lz4 ? LZ4F_compressFrameBound(to - from, &prefs) : ZSTD_compressBound(to - from);
        uint8_t *tmp = malloc(cap);
        size_t n = lz4 ? LZ4F_compressFrame(tmp, cap, plain->data + from, to - from, &prefs)
                       : ZSTD_compress2(cctx, tmp, cap, plain->data + from, to - from);
        assert_false(lz4 ? LZ4F_isError(n) : ZSTD_isError(n));
        append(&out, tmp, n);
        free(tmp);
        frame_ends[f] = out.len;
        from = to;
    }
    ZSTD_freeCCtx(cctx);
    return out;
}

/* Reads DATA[0..N) named NAME; returns the reader's final result, counting events in *EVENTS
 * and copying the error message to ERR. */
static int read_all(const uint8_t *data, size_t n, const char *name, int *events, char *err,
                    size_t err_size)
{
    FILE *f = fmemopen((void *)data, n, "rb");
    assert_non_null(f);
    struct trace_reader_opts opts = {.name = name};
    struct trace_reader *r;
    assert_int_equal(trace_reader_open_file(f, &opts, &r), 0);
    struct trace_event ev;
    int rc;
    *events = 0;
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1) {
        assert_int_equal(ev.len, EV_LEN);
        assert_memory_equal(ev.iov->iov_base, "event ", 5);
        (*events)++;
    }
    snprintf(err, err_size, "%s", trace_reader_error(r));
    trace_reader_free(r);
    fclose(f);
    return rc;
}

static void test_zstd_frames_and_skippable(void **state)
{
    size_t offs[NEVENTS], ends[NEVENTS / 10];
    struct tbuf plain = plain_trace(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, offs);
    struct tbuf z = compress_frames(&plain, offs, false, ends);
    /* a skippable frame (magic 0x184D2A50, 4 bytes of content) between frames 1 and 2 */
    static const uint8_t skip[] = {0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 'n', 'o', 't', 'e'};
    struct tbuf zs = {0};
    append(&zs, z.data, ends[0]);
    append(&zs, skip, sizeof(skip));
    append(&zs, z.data + ends[0], z.len - ends[0]);
    int events;
    char err[600];
    assert_int_equal(read_all(zs.data, zs.len, "t_1.pb.zst", &events, err, sizeof(err)), 0);
    assert_int_equal(events, NEVENTS);
    /* starting with the skippable frame works too */
    struct tbuf sz = {0};
    append(&sz, skip, sizeof(skip));
    append(&sz, z.data, z.len);
    assert_int_equal(read_all(sz.data, sz.len, "t_1.pb.zst", &events, err, sizeof(err)), 0);
    assert_int_equal(events, NEVENTS);
    tbuf_free(&sz);
    tbuf_free(&zs);
    tbuf_free(&z);
    tbuf_free(&plain);
}

static void test_lz4_frames(void **state)
{
    size_t offs[NEVENTS], ends[NEVENTS / 10];
    struct tbuf plain = plain_trace(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_TEXT, offs);
    struct tbuf z = compress_frames(&plain, offs, true, ends);
    int events;
    char err[600];
    assert_int_equal(read_all(z.data, z.len, "t_1.pb_text.lz4", &events, err, sizeof(err)), 0);
    assert_int_equal(events, NEVENTS);
    tbuf_free(&z);
    tbuf_free(&plain);
}

/* Every cut of the compressed file: never corrupt, every whole frame's events delivered, and a
 * cut inside a frame is -ENODATA naming the compressed offset; a cut between frames is a
 * clean end (as an uncompressed trace cut on an event boundary). */
static void test_every_cut(void **state)
{
    for (int lz4 = 0; lz4 < 2; lz4++) {
        size_t offs[NEVENTS], ends[NEVENTS / 10];
        struct tbuf plain =
            plain_trace(TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED, offs);
        struct tbuf z = compress_frames(&plain, offs, lz4, ends);
        for (size_t cut = 4; cut < z.len; cut += 7) {
            int events, whole = 0;
            char err[600];
            bool on_boundary = false;
            for (int f = 0; f < NEVENTS / 10; f++) {
                if (ends[f] <= cut)
                    whole = (f + 1) * 10;
                on_boundary |= ends[f] == cut;
            }
            int rc = read_all(z.data, cut,
                              lz4 ? "t_2.pb_length_delimited.lz4" : "t_2.pb_length_delimited.zst",
                              &events, err, sizeof(err));
            assert_true(events >= whole);
            if (on_boundary) {
                assert_int_equal(rc, 0);
                continue;
            }
            assert_int_equal(rc, -ENODATA);
            assert_non_null(strstr(err, "compressed offset"));
            assert_null(strstr(err, "corrupt"));
        }
        tbuf_free(&z);
        tbuf_free(&plain);
    }
}

static void test_corrupt_and_trailing_garbage(void **state)
{
    size_t offs[NEVENTS], ends[NEVENTS / 10];
    struct tbuf plain = plain_trace(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, offs);
    struct tbuf z = compress_frames(&plain, offs, false, ends);
    int events;
    char err[600], want[64];
    /* a flipped byte inside frame 2: its checksum (or block decoding) fails */
    z.data[ends[1] + (ends[2] - ends[1]) / 2] ^= 0x5a;
    assert_int_equal(read_all(z.data, z.len, "c.pb.zst", &events, err, sizeof(err)), -EBADMSG);
    assert_true(events >= 20 && events < 30);
    snprintf(want, sizeof(want), "frame at compressed offset %zu", ends[1]);
    assert_non_null(strstr(err, want));
    assert_non_null(strstr(err, "c.pb.zst: corrupt zstd data"));
    z.data[ends[1] + (ends[2] - ends[1]) / 2] ^= 0x5a;
    /* bytes after the last frame that are no frame */
    append(&z, "garbage!", 8);
    assert_int_equal(read_all(z.data, z.len, "g.pb.zst", &events, err, sizeof(err)), -EBADMSG);
    assert_int_equal(events, NEVENTS);
    snprintf(want, sizeof(want), "frame at compressed offset %zu", ends[3]);
    assert_non_null(strstr(err, want));
    tbuf_free(&z);
    tbuf_free(&plain);
}

static void test_detect(void **state)
{
    static const uint8_t zst[] = {0x28, 0xb5, 0x2f, 0xfd}, lz[] = {0x04, 0x22, 0x4d, 0x18},
                         skip[] = {0x5f, 0x2a, 0x4d, 0x18}, pb[] = {0x0a, 0x02, 0x08, 0x01};
    assert_int_equal(trace_zin_detect(zst, 4), TRACE_ZIN_ZSTD);
    assert_int_equal(trace_zin_detect(lz, 4), TRACE_ZIN_LZ4);
    assert_int_equal(trace_zin_detect(skip, 4), TRACE_ZIN_ZSTD);
    assert_int_equal(trace_zin_detect(pb, 4), TRACE_ZIN_NONE);
    assert_int_equal(trace_zin_detect(zst, 3), TRACE_ZIN_NONE);
    /* an empty zstd frame is an empty trace */
    uint8_t buf[64];
    size_t n = ZSTD_compress(buf, sizeof(buf), "", 0, 1);
    int events;
    char err[600];
    assert_int_equal(read_all(buf, n, "e.pb.zst", &events, err, sizeof(err)), 0);
    assert_int_equal(events, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zstd_frames_and_skippable),
        cmocka_unit_test(test_lz4_frames),
        cmocka_unit_test(test_every_cut),
        cmocka_unit_test(test_corrupt_and_trailing_garbage),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

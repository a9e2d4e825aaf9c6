/* Follow mode of the trace readers: a trace that grows byte by byte (through a regular file
 * and through a non-blocking pipe) yields exactly the events of the whole trace, each whole
 * and once, with -EAGAIN while an event is incomplete, and the end is the end only after
 * trace_reader_set_follow(r, false). Traces come from the encoder, in every binary format. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "trace/trace_encode.h"
#include "trace/trace_reader.h"

#define NEV 5

static uint8_t payload[70000 + NEV]; /* one event larger than the reader's 64 KiB read block */
static const size_t lens[NEV] = {100, 0, 70000, 1, 3000};

static const struct trace_conn conn = {
    .id = 42,
    .local = {.present = true, .address = "127.0.0.1", .port = 10000},
    .remote = {.present = true, .address = "127.0.0.1", .port = 40000},
};

/* The trace of NEV events (plus a v3 closed event) in BUF; BOUNDS[i] = length after event i. */
static void encode(enum trace_schema schema, enum trace_format fmt, struct tbuf *buf)
{
    struct trace_enc_cfg cfg = {.schema = schema, .format = fmt, .streaming = true};
    struct trace_enc *enc;
    assert_int_equal(trace_enc_new(&cfg, &conn, &enc), 0);
    assert_int_equal(trace_enc_begin(enc, buf), 0);
    for (int i = 0; i < NEV; i++) {
        struct iovec iov = {payload + i, lens[i]};
        struct trace_event ev = {.sec = 1700000000 + i,
                                 .dir = i % 2 ? TRACE_EV_WRITE : TRACE_EV_READ,
                                 .iov = &iov,
                                 .iovcnt = 1,
                                 .len = lens[i]};
        assert_int_equal(trace_enc_event(enc, &ev, buf), 0);
    }
    if (schema == TRACE_SCHEMA_V3_TAP) {
        struct trace_event ev = {.sec = 1700000009, .dir = TRACE_EV_CLOSED};
        assert_int_equal(trace_enc_event(enc, &ev, buf), 0);
    }
    assert_int_equal(trace_enc_end(enc, buf), 0);
    trace_enc_free(enc);
}

/* Checks event I as read. */
static void check_event(int i, const struct trace_event *ev, const struct trace_conn *c)
{
    assert_int_equal(c->id, 42);
    assert_int_equal(c->remote.port, 40000);
    if (i == NEV) {
        assert_int_equal(ev->dir, TRACE_EV_CLOSED);
        return;
    }
    assert_int_equal(ev->sec, 1700000000 + i);
    assert_int_equal(ev->len, lens[i]);
    if (lens[i])
        assert_memory_equal(ev->iov[0].iov_base, payload + i, lens[i]);
}

/* Feeds BUF to a follow reader on RD through WR, STEP bytes at a time (1 = byte by byte
 * for the first 300 bytes and around each event end, then larger pieces to stay fast). */
static void feed(const struct tbuf *buf, FILE *rd, FILE *wr, bool pipe, size_t nev_want)
{
    struct trace_reader_opts o = {.follow = true, .name = "grow.pb"};
    struct trace_reader *r;
    struct trace_event ev;
    const struct trace_conn *c;
    size_t got = 0, off = 0, eagain = 0;
    assert_int_equal(trace_reader_open_file(rd, &o, &r), 0);
    while (off < buf->len) {
        size_t step = off < 300 || off % 997 < 3 ? 1 : 4096;
        if (step > buf->len - off)
            step = buf->len - off;
        assert_int_equal(fwrite(buf->data + off, 1, step, wr), step);
        assert_int_equal(fflush(wr), 0);
        off += step;
        int rc;
        while ((rc = trace_reader_next(r, &ev, &c)) == 1)
            check_event((int)got++, &ev, c);
        assert_int_equal(rc, -EAGAIN); /* never the end, never an error while following */
        eagain++;
        assert_string_equal(trace_reader_error(r), "");
    }
    assert_int_equal(got, nev_want);
    assert_true(eagain > 300);
    if (pipe)
        fclose(wr);
    trace_reader_set_follow(r, false);
    assert_int_equal(trace_reader_next(r, &ev, &c), 0);
    trace_reader_free(r);
}

static void run_format(enum trace_schema schema, enum trace_format fmt, size_t nev)
{
    struct tbuf buf = {0};
    encode(schema, fmt, &buf);
    /* regular file, appended by another FILE */
    char path[] = "/tmp/st_follow_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *wr = fdopen(fd, "wb");
    FILE *rd = fopen(path, "rb");
    assert_non_null(wr);
    assert_non_null(rd);
    feed(&buf, rd, wr, false, nev);
    fclose(wr);
    fclose(rd);
    unlink(path);
    /* non-blocking pipe: no fseek possible, EAGAIN from read(2) */
    int p[2];
    assert_int_equal(pipe2(p, O_NONBLOCK), 0);
    assert_int_equal(fcntl(p[1], F_SETPIPE_SZ, 1 << 20) > 0, 1);
    rd = fdopen(p[0], "rb");
    wr = fdopen(p[1], "wb");
    feed(&buf, rd, wr, true, nev);
    fclose(rd);
    tbuf_free(&buf);
}

static void test_v2_binary(void **state)
{
    (void)state;
    run_format(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, NEV);
}

static void test_v3_binary(void **state)
{
    (void)state;
    run_format(TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY, NEV + 1);
}

static void test_v3_length_delimited(void **state)
{
    (void)state;
    run_format(TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED, NEV + 1);
}

/* Text waits for the end: nothing while following, everything once the writer is done. */
static void test_text_waits_for_end(void **state)
{
    (void)state;
    struct tbuf buf = {0};
    encode(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_TEXT, &buf);
    FILE *f = fmemopen(buf.data, buf.len, "rb");
    struct trace_reader_opts o = {.follow = true};
    struct trace_reader *r;
    struct trace_event ev;
    const struct trace_conn *c;
    assert_int_equal(trace_reader_open_file(f, &o, &r), 0);
    assert_int_equal(trace_reader_next(r, &ev, &c), -EAGAIN);
    assert_true(trace_reader_follow_whole(r));
    trace_reader_set_follow(r, false);
    for (int i = 0; i < NEV; i++) {
        assert_int_equal(trace_reader_next(r, &ev, &c), 1);
        check_event(i, &ev, c);
    }
    assert_int_equal(trace_reader_next(r, &ev, &c), 0);
    trace_reader_free(r);
    fclose(f);
    tbuf_free(&buf);
}

/* A cut event is -EAGAIN while following and -ENODATA (with its offset) after the end. */
static void test_cut_after_end(void **state)
{
    (void)state;
    struct tbuf buf = {0};
    encode(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, &buf);
    FILE *f = fmemopen(buf.data, buf.len - 10, "rb");
    struct trace_reader_opts o = {.follow = true, .name = "cut.pb"};
    struct trace_reader *r;
    struct trace_event ev;
    const struct trace_conn *c;
    assert_int_equal(trace_reader_open_file(f, &o, &r), 0);
    for (int i = 0; i < NEV - 1; i++)
        assert_int_equal(trace_reader_next(r, &ev, &c), 1);
    assert_int_equal(trace_reader_next(r, &ev, &c), -EAGAIN);
    assert_int_equal(trace_reader_next(r, &ev, &c), -EAGAIN);
    trace_reader_set_follow(r, false);
    assert_int_equal(trace_reader_next(r, &ev, &c), -ENODATA);
    assert_non_null(strstr(trace_reader_error(r), "cut.pb: truncated at offset"));
    trace_reader_free(r);
    fclose(f);
    tbuf_free(&buf);
}

int main(void)
{
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 131 + (i >> 8));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_binary),           cmocka_unit_test(test_v3_binary),
        cmocka_unit_test(test_v3_length_delimited), cmocka_unit_test(test_text_waits_for_end),
        cmocka_unit_test(test_cut_after_end),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

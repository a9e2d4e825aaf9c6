/* Encoder tests: the streaming invariants checked against protoc itself (the reference
 * serializer), with the project's .proto files. */
#include <errno.h>
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

static char tmpdir[] = "/tmp/st_trace_enc_XXXXXX";

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    size_t k;
    while ((k = fread(buf + len, 1, cap - len, f)) > 0) {
        len += k;
        if (len == cap) {
            cap *= 2;
            uint8_t *grown = realloc(buf, cap);
            assert_non_null(grown);
            buf = grown;
        }
    }
    fclose(f);
    *n = len;
    return buf;
}

static int protoc(const char *mode, const char *msg, const char *in, const char *out)
{
    char cmd[1024];
    const char *proto = strstr(msg, "v2alpha") ? "envoy/data/tap/v2alpha/capture.proto"
                                               : "envoy/data/tap/v3/wrapper.proto";
    snprintf(cmd, sizeof(cmd), "%s -I%s -I/usr/include --%s=%s %s <%s >%s", ST_PROTOC, ST_PROTO_DIR,
             mode, msg, proto, in, out);
    return system(cmd);
}

/* Six events shaped like the Envoy fixture, payloads covering every byte value, split over
 * several iovecs. */
static uint8_t payload[5532];
static struct iovec iovs[3];

static struct trace_event make_event(int i)
{
    static const size_t lens[] = {103, 37, 9, 5532, 0, 256};
    size_t len = lens[i];
    iovs[0] = (struct iovec){payload, len / 3};
    iovs[1] = (struct iovec){payload + len / 3, len / 3};
    iovs[2] = (struct iovec){payload + 2 * (len / 3), len - 2 * (len / 3)};
    return (struct trace_event){.sec = 1525207293 + i,
                                .nsec = i == 2 ? 0 : 216737962 + i,
                                .dir = (i % 2) ? TRACE_EV_WRITE : TRACE_EV_READ,
                                .iov = iovs,
                                .iovcnt = 3,
                                .len = len,
                                .end_stream = i == 5 || i == 4};
}

static const struct trace_conn conn = {
    .id = 7,
    .local = {.present = true, .address = "127.0.0.1", .port = 10000},
    .remote = {.present = true, .address = "::1", .port = 53288},
};

static void encode_all(enum trace_schema schema, enum trace_format fmt, bool streaming,
                       struct tbuf *out, size_t *bounds)
{
    struct trace_enc_cfg cfg = {.schema = schema,
                                .format = fmt,
                                .streaming = streaming,
                                .max_buffered_rx = 1024,
                                .max_buffered_tx = 1024};
    struct trace_enc *enc;
    assert_int_equal(trace_enc_new(&cfg, &conn, &enc), 0);
    assert_int_equal(trace_enc_begin(enc, out), 0);
    if (bounds)
        bounds[0] = out->len;
    for (int i = 0; i < 6; i++) {
        struct trace_event ev = make_event(i);
        assert_int_equal(trace_enc_event(enc, &ev, out), 0);
        if (bounds)
            bounds[i + 1] = out->len;
    }
    assert_int_equal(trace_enc_end(enc, out), 0);
    trace_enc_free(enc);
}

/* protoc --encode of our text == our binary; protoc --decode of our binary == our text. */
static void check_against_protoc(enum trace_schema schema, bool streaming, const char *msg)
{
    struct tbuf bin = {0}, txt = {0};
    encode_all(schema, TRACE_FMT_PROTO_BINARY, streaming, &bin, NULL);
    encode_all(schema, TRACE_FMT_PROTO_TEXT, streaming, &txt, NULL);
    char pbin[256], ptxt[256], penc[256], pdec[256];
    snprintf(pbin, sizeof(pbin), "%s/t.pb", tmpdir);
    snprintf(ptxt, sizeof(ptxt), "%s/t.pb_text", tmpdir);
    snprintf(penc, sizeof(penc), "%s/enc.pb", tmpdir);
    snprintf(pdec, sizeof(pdec), "%s/dec.pb_text", tmpdir);
    write_file(pbin, bin.data, bin.len);
    write_file(ptxt, txt.data, txt.len);
    assert_int_equal(protoc("encode", msg, ptxt, penc), 0);
    assert_int_equal(protoc("decode", msg, pbin, pdec), 0);
    size_t n;
    uint8_t *enc = read_file(penc, &n);
    assert_int_equal(n, bin.len);
    assert_memory_equal(enc, bin.data, n);
    free(enc);
    uint8_t *dec = read_file(pdec, &n);
    assert_int_equal(n, txt.len);
    assert_memory_equal(dec, txt.data, n);
    free(dec);
    tbuf_free(&bin);
    tbuf_free(&txt);
}

static void test_v2_matches_protoc(void **state)
{
    check_against_protoc(TRACE_SCHEMA_V2_CAPTURE, false, "envoy.data.tap.v2alpha.Trace");
}

static void test_v3_buffered_matches_protoc(void **state)
{
    check_against_protoc(TRACE_SCHEMA_V3_TAP, false, "envoy.data.tap.v3.TraceWrapper");
}

/* Every prefix that ends at an event boundary is a complete Trace that protoc decodes into
 * exactly the text of the same prefix of events. */
static void test_v2_every_prefix_is_a_trace(void **state)
{
    struct tbuf bin = {0}, txt = {0};
    size_t bb[7], tb[7];
    encode_all(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, false, &bin, bb);
    encode_all(TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_TEXT, false, &txt, tb);
    char pbin[256], pdec[256];
    snprintf(pbin, sizeof(pbin), "%s/p.pb", tmpdir);
    snprintf(pdec, sizeof(pdec), "%s/p.pb_text", tmpdir);
    for (int i = 0; i < 7; i++) {
        write_file(pbin, bin.data, bb[i]);
        assert_int_equal(protoc("decode", "envoy.data.tap.v2alpha.Trace", pbin, pdec), 0);
        size_t n;
        uint8_t *dec = read_file(pdec, &n);
        assert_int_equal(n, tb[i]);
        assert_memory_equal(dec, txt.data, n);
        free(dec);
    }
    tbuf_free(&bin);
    tbuf_free(&txt);
}

/* Envoy's buffered limits: the event crossing max_buffered is cut and flagged, later events
 * of that direction are dropped, and the trace says so. */
static void test_v3_buffered_truncation(void **state)
{
    struct tbuf txt = {0};
    encode_all(TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_TEXT, false, &txt, NULL);
    assert_int_equal(tbuf_reserve(&txt, 1), 0);
    txt.data[txt.len] = 0;
    const char *s = (const char *)txt.data;
    assert_non_null(strstr(s, "write_truncated: true\n"));
    assert_null(strstr(s, "read_truncated: true\n")); /* reads: 103 + 9 + 0 + ... < 1024 */
    assert_non_null(strstr(s, "truncated: true\n"));
    tbuf_free(&txt);
}

/* A v3 streamed trace with today's extras (set_connection_per_event, seq_num, and, when MIN is
 * not 0, min_streamed_sent_bytes): begin, the six events, a closed event, end. BOUNDS[k] is
 * OUT's length after call k (9 calls). */
static void encode_streamed(enum trace_format fmt, uint32_t min, struct tbuf *out, size_t *bounds)
{
    struct trace_enc_cfg cfg = {.schema = TRACE_SCHEMA_V3_TAP,
                                .format = fmt,
                                .streaming = true,
                                .max_buffered_rx = 1024,
                                .max_buffered_tx = 1024,
                                .cap_streamed = true,
                                .conn_per_event = true,
                                .seq_num = true,
                                .min_streamed_sent = min};
    struct trace_enc *enc;
    assert_int_equal(trace_enc_new(&cfg, &conn, &enc), 0);
    assert_int_equal(trace_enc_begin(enc, out), 0);
    bounds[0] = out->len;
    for (int i = 0; i < 7; i++) {
        struct trace_event ev =
            i < 6 ? make_event(i) : (struct trace_event){.sec = 1525207300, .dir = TRACE_EV_CLOSED};
        assert_int_equal(trace_enc_event(enc, &ev, out), 0);
        bounds[i + 1] = out->len;
    }
    assert_int_equal(trace_enc_end(enc, out), 0);
    bounds[8] = out->len;
    trace_enc_free(enc);
}

/* Every message the streamed encoder emits (one per call that emits anything) is a
 * TraceWrapper that protoc, over Envoy's field numbers (SocketEvent.connection = 5, seq_num = 6,
 * SocketStreamedTraceSegment.events = 4), encodes from our text into our binary and decodes
 * back into our text. MIN 200: Envoy's rule "sent once the threshold is reached" (common.proto
 * min_streamed_sent_bytes) over the bodies as recorded (103, 37, 9, 1024 cut from 5532 | 0,
 * 256 | closed, sent at close) gives messages after the 4th and the 6th event and at end. */
static void check_streamed(uint32_t min, const bool *emits)
{
    struct tbuf bin = {0}, txt = {0};
    size_t bb[9], tb[9];
    encode_streamed(TRACE_FMT_PROTO_BINARY, min, &bin, bb);
    encode_streamed(TRACE_FMT_PROTO_TEXT, min, &txt, tb);
    char pbin[256], ptxt[256], penc[256], pdec[256];
    snprintf(pbin, sizeof(pbin), "%s/s.pb", tmpdir);
    snprintf(ptxt, sizeof(ptxt), "%s/s.pb_text", tmpdir);
    snprintf(penc, sizeof(penc), "%s/senc.pb", tmpdir);
    snprintf(pdec, sizeof(pdec), "%s/sdec.pb_text", tmpdir);
    for (int k = 0; k < 9; k++) {
        size_t b0 = k ? bb[k - 1] : 0, t0 = k ? tb[k - 1] : 0;
        assert_int_equal(bb[k] > b0, emits[k]);
        assert_int_equal(tb[k] > t0, emits[k]);
        if (!emits[k])
            continue;
        write_file(pbin, bin.data + b0, bb[k] - b0);
        write_file(ptxt, txt.data + t0, tb[k] - t0);
        assert_int_equal(protoc("encode", "envoy.data.tap.v3.TraceWrapper", ptxt, penc), 0);
        assert_int_equal(protoc("decode", "envoy.data.tap.v3.TraceWrapper", pbin, pdec), 0);
        size_t n;
        uint8_t *enc = read_file(penc, &n);
        assert_int_equal(n, bb[k] - b0);
        assert_memory_equal(enc, bin.data + b0, n);
        free(enc);
        uint8_t *dec = read_file(pdec, &n);
        assert_int_equal(n, tb[k] - t0);
        assert_memory_equal(dec, txt.data + t0, n);
        free(dec);
    }
    /* seq_num (envoy#42641): 1, then 1 + the bytes moved before (5532, not the 1024 kept);
     * the closed event: max uint64 */
    assert_int_equal(tbuf_reserve(&txt, 1), 0);
    txt.data[txt.len] = 0;
    const char *s = (const char *)txt.data;
    static const char *const seqs[] = {"seq_num: 1\n",    "seq_num: 104\n",
                                       "seq_num: 141\n",  "seq_num: 150\n",
                                       "seq_num: 5682\n", "seq_num: 18446744073709551615\n"};
    for (size_t i = 0; i < sizeof(seqs) / sizeof(seqs[0]); i++) {
        assert_non_null(strstr(s, seqs[i]));
        s = strstr(s, seqs[i]) + 1; /* in this order */
    }
    tbuf_free(&bin);
    tbuf_free(&txt);
}

static void test_v3_streamed_extras_match_protoc(void **state)
{
    static const bool every[9] = {true, true, true, true, true, true, true, true, false};
    check_streamed(0, every);
}

static void test_v3_streamed_batches_match_protoc(void **state)
{
    static const bool batched[9] = {true, false, false, false, true, false, true, false, true};
    check_streamed(200, batched);
}

/* The JSON batch is one object per message whose events array has the held events, commas
 * between them (the previous element's closing brace gets its comma when the next arrives). */
static void test_v3_json_batch_layout(void **state)
{
    struct tbuf js = {0};
    size_t b[9];
    encode_streamed(TRACE_FMT_JSON_BODY_AS_BYTES, 200, &js, b);
    assert_int_equal(tbuf_reserve(&js, 1), 0);
    js.data[js.len] = 0;
    const char *s = (const char *)js.data + b[0];
    assert_non_null(strstr(s, "  \"events\": {\n   \"events\": [\n    {\n"));
    assert_non_null(strstr(s, "    },\n    {\n"));
    assert_non_null(strstr(s, "\"seq_num\": \"18446744073709551615\"\n    }\n   ]\n  }\n }\n}\n"));
    assert_non_null(strstr(s, "     \"connection\": {\n"));
    tbuf_free(&js);
}

/* A streamed event re-encoded after trace_enc_forget_last (capture_rec.c cuts an event that
 * crosses max_trace_bytes) keeps its seq_num; the next one continues after the cut's bytes. */
static void test_v3_forget_last_keeps_seq(void **state)
{
    struct trace_enc_cfg cfg = {.schema = TRACE_SCHEMA_V3_TAP,
                                .format = TRACE_FMT_PROTO_TEXT,
                                .streaming = true,
                                .max_buffered_rx = 1024,
                                .max_buffered_tx = 1024,
                                .seq_num = true};
    struct trace_enc *enc;
    struct tbuf out = {0};
    assert_int_equal(trace_enc_new(&cfg, &conn, &enc), 0);
    struct trace_event ev = make_event(0); /* 103 bytes */
    assert_int_equal(trace_enc_event(enc, &ev, &out), 0);
    out.len = 0;
    trace_enc_forget_last(enc);
    ev.len = 50;
    ev.iovcnt = 1;
    iovs[0].iov_len = 50;
    assert_int_equal(trace_enc_event(enc, &ev, &out), 0);
    ev = make_event(1);
    assert_int_equal(trace_enc_event(enc, &ev, &out), 0);
    assert_int_equal(tbuf_reserve(&out, 1), 0);
    out.data[out.len] = 0;
    const char *s = strstr((const char *)out.data, "seq_num: 1\n");
    assert_non_null(s);
    assert_non_null(strstr(s, "seq_num: 51\n"));
    tbuf_free(&out);
    trace_enc_free(enc);
}

static void test_format_extension(void **state)
{
    assert_string_equal(trace_format_extension(TRACE_FMT_PROTO_BINARY), ".pb");
    assert_string_equal(trace_format_extension(TRACE_FMT_PROTO_TEXT), ".pb_text");
    assert_string_equal(trace_format_extension(TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED),
                        ".pb_length_delimited");
    assert_string_equal(trace_format_extension(TRACE_FMT_JSON_BODY_AS_STRING), ".json");
}

/* trace_enc_event_split: head + payload + tail is byte for byte what trace_enc_event appends,
 * for every format it accepts (with the v3 extras after the payload: the connection on every
 * event, seq_num, end_stream, and a streamed tap whose bodies are not cut), and what it cannot
 * split is refused (text, JSON, buffered, batched, a body a streamed tap cuts). */
static void test_split_equals_whole(void **state)
{
    (void)state;
    struct {
        enum trace_schema schema;
        enum trace_format fmt;
        bool per_event, seq;
    } cases[] = {
        {TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY, false, false},
        {TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY, false, false},
        {TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED, false, false},
        {TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED, true, true},
        {TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY, true, true},
    };
    uint32_t caps[] = {0, 0, 0, 0, 1u << 20}; /* the last: a streamed tap, bodies under its cap */
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct trace_enc_cfg cfg = {.schema = cases[c].schema,
                                    .format = cases[c].fmt,
                                    .streaming = true,
                                    .conn_per_event = cases[c].per_event,
                                    .seq_num = cases[c].seq,
                                    .cap_streamed = caps[c] != 0,
                                    .max_buffered_rx = caps[c],
                                    .max_buffered_tx = caps[c]};
        struct trace_enc *whole, *split;
        assert_int_equal(trace_enc_new(&cfg, &conn, &whole), 0);
        assert_int_equal(trace_enc_new(&cfg, &conn, &split), 0);
        assert_true(trace_enc_split_max(split, TRACE_EV_READ) >= sizeof(payload));
        for (int i = 0; i < 6; i++) {
            struct trace_event ev = make_event(i);
            if (ev.len == 0)
                continue;
            ev.end_stream = ev.dir == TRACE_EV_WRITE;
            struct tbuf a = {0}, b = {0};
            assert_int_equal(trace_enc_event(whole, &ev, &a), 0);
            size_t at;
            assert_int_equal(trace_enc_event_split(split, &ev, &b, &at), 0);
            assert_int_equal(b.len + ev.len, a.len);
            assert_true(at <= b.len);
            assert_memory_equal(a.data, b.data, at);
            assert_memory_equal(a.data + at, payload, ev.len);
            assert_memory_equal(a.data + at + ev.len, b.data + at, b.len - at);
            tbuf_free(&a);
            tbuf_free(&b);
        }
        trace_enc_free(whole);
        trace_enc_free(split);
    }
    struct trace_enc_cfg refused[] = {
        {.schema = TRACE_SCHEMA_V2_CAPTURE, .format = TRACE_FMT_PROTO_TEXT},
        {.schema = TRACE_SCHEMA_V3_TAP, .format = TRACE_FMT_JSON_BODY_AS_BYTES, .streaming = true},
        {.schema = TRACE_SCHEMA_V3_TAP, .format = TRACE_FMT_PROTO_BINARY, .streaming = false},
        {.schema = TRACE_SCHEMA_V3_TAP,
         .format = TRACE_FMT_PROTO_BINARY,
         .streaming = true,
         .min_streamed_sent = 100},
        {.schema = TRACE_SCHEMA_V3_TAP,
         .format = TRACE_FMT_PROTO_BINARY,
         .streaming = true,
         .cap_streamed = true,
         .max_buffered_rx = 10,
         .max_buffered_tx = 10},
    };
    for (size_t c = 0; c < sizeof(refused) / sizeof(refused[0]); c++) {
        struct trace_enc *enc;
        assert_int_equal(trace_enc_new(&refused[c], &conn, &enc), 0);
        struct trace_event ev = make_event(0);
        assert_true(trace_enc_split_max(enc, ev.dir) < ev.len);
        struct tbuf b = {0};
        size_t at;
        assert_int_equal(trace_enc_event_split(enc, &ev, &b, &at), -ENOTSUP);
        tbuf_free(&b);
        trace_enc_free(enc);
    }
}

static int setup(void **state)
{
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)(i * 7 + (i >> 8));
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_matches_protoc),
        cmocka_unit_test(test_v3_buffered_matches_protoc),
        cmocka_unit_test(test_v2_every_prefix_is_a_trace),
        cmocka_unit_test(test_v3_buffered_truncation),
        cmocka_unit_test(test_format_extension),
        cmocka_unit_test(test_v3_streamed_extras_match_protoc),
        cmocka_unit_test(test_v3_streamed_batches_match_protoc),
        cmocka_unit_test(test_v3_json_batch_layout),
        cmocka_unit_test(test_v3_forget_last_keeps_seq),
        cmocka_unit_test(test_split_equals_whole),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

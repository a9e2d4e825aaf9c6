/* Unit tests of the pcapng block writer: exact bytes of SHB, IDB, EPB and DSB (hand-assembled
 * from the pcapng spec, little-endian host), 32-bit padding for every length, options present
 * only when given, the sink contract (order, oversized blocks, sticky errors, flush), and a
 * whole flow through pcap_writer read back by libpcap's own pcapng reader. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cmocka.h>
#include <pcap/pcap.h>

#include "pcap/pcap_flow.h"
#include "pcap/pcap_writer.h"
#include "pcap/pcapng_writer.h"

struct mem_sink {
    uint8_t buf[1 << 16];
    size_t len;
    int calls;
    int fail; /* returned by every call once set */
};

static int mem_write(void *ctx, const void *p, size_t n)
{
    struct mem_sink *m = ctx;

    m->calls++;
    if (m->fail)
        return m->fail;
    assert_true(m->len + n <= sizeof(m->buf));
    memcpy(m->buf + m->len, p, n);
    m->len += n;
    return 0;
}

static uint32_t rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool little_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static const uint8_t shb_bytes[] = {
    0x0A, 0x0D, 0x0D, 0x0A, 0x30, 0x00, 0x00, 0x00, /* type, total 48 */
    0x4D, 0x3C, 0x2B, 0x1A, 0x01, 0x00, 0x00, 0x00, /* byte-order magic, version 1.0 */
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, /* section length: unknown */
    0x04, 0x00, 0x0B, 0x00, 's',  'o',  'c',  'k',  /* shb_userappl, 11 bytes */
    't',  'a',  'p',  ' ',  '1',  '.',  '2',  0x00, /* + 1 byte padding */
    0x00, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, /* opt_endofopt, total */
};

static struct pcapng_writer *new_writer(struct mem_sink *m, size_t bufsize)
{
    const struct pcapng_section sec = {.userappl = "socktap 1.2"};
    struct pcapng_writer *w = NULL;

    memset(m, 0, sizeof(*m));
    assert_int_equal(pcapng_writer_new(mem_write, m, bufsize, &sec, &w), 0);
    return w;
}

static void test_shb_bytes_and_flush(void **state)
{
    struct mem_sink m;
    struct pcapng_writer *w = new_writer(&m, 0);

    if (!little_endian())
        skip();
    assert_int_equal(m.len, 0); /* buffered until flush */
    assert_int_equal(pcapng_writer_flush(w), 0);
    assert_int_equal(m.len, sizeof(shb_bytes));
    assert_memory_equal(m.buf, shb_bytes, sizeof(shb_bytes));
    assert_int_equal(pcapng_writer_flush(w), 0); /* nothing queued: no empty sink call */
    assert_int_equal(m.calls, 1);
    pcapng_writer_free(w);
}

static void test_shb_without_options(void **state)
{
    const struct pcapng_section none = {0};
    struct mem_sink m = {0};
    struct pcapng_writer *w = NULL;

    if (!little_endian())
        skip();
    assert_int_equal(pcapng_writer_new(mem_write, &m, 0, &none, &w), 0);
    assert_int_equal(pcapng_writer_flush(w), 0);
    /* no option list at all, not even opt_endofopt */
    assert_int_equal(m.len, 28);
    assert_int_equal(rd32le(m.buf + 4), 28);
    assert_int_equal(rd32le(m.buf + 24), 28);
    pcapng_writer_free(w);
}

static void test_idb_epb_dsb_bytes(void **state)
{
    static const uint8_t idb[] = {
        0x01, 0x00, 0x00, 0x00, 0x34, 0x00, 0x00, 0x00, /* IDB, total 52 */
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, /* Ethernet, reserved, snaplen 262144 */
        0x02, 0x00, 0x07, 0x00, 'i',  'n',  'g',  'r',  /* if_name "ingress" */
        'e',  's',  's',  0x00, 0x03, 0x00, 0x01, 0x00, /* pad, if_description "d" */
        'd',  0x00, 0x00, 0x00, 0x09, 0x00, 0x01, 0x00, /* pad 3, if_tsresol */
        0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 9 (ns) + pad, opt_endofopt */
        0x34, 0x00, 0x00, 0x00,
    };
    static const uint8_t epb[] = {
        0x06, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, /* EPB, total 56 */
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* interface 1, ts high */
        0x02, 0xCA, 0x9A, 0x3B, 0x03, 0x00, 0x00, 0x00, /* ts low (1.000000002 s), caplen 3 */
        0x05, 0x00, 0x00, 0x00, 'a',  'b',  'c',  0x00, /* origlen 5, data + pad 1 */
        0x01, 0x00, 0x02, 0x00, 'h',  'i',  0x00, 0x00, /* opt_comment "hi" + pad 2 */
        0x02, 0x00, 0x04, 0x00, 0x02, 0x00, 0x00, 0x00, /* epb_flags: outbound */
        0x00, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, /* opt_endofopt, total */
    };
    static const uint8_t dsb[] = {
        0x0A, 0x00, 0x00, 0x00, 0x1C, 0x00, 0x00, 0x00, /* DSB, total 28 */
        0x4B, 0x53, 0x4C, 0x54, 0x05, 0x00, 0x00, 0x00, /* "TLSK", 5 bytes */
        'a',  'b',  '\n', 'c',  'd',  0x00, 0x00, 0x00, /* secrets + pad 3 */
        0x1C, 0x00, 0x00, 0x00,
    };
    const struct pcapng_interface i0 = {.linktype = PCAPNG_LINKTYPE_RAW, .name = "x"};
    const struct pcapng_interface i1 = {.linktype = PCAPNG_LINKTYPE_ETHERNET,
                                        .snaplen = 262144,
                                        .name = "ingress",
                                        .description = "d"};
    struct mem_sink m;
    struct pcapng_writer *w = new_writer(&m, 0);
    uint32_t idx = 99;
    size_t off;

    if (!little_endian())
        skip();
    assert_int_equal(pcapng_writer_add_interface(w, &i0, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(pcapng_writer_flush(w), 0);
    off = m.len;
    assert_int_equal(pcapng_writer_add_interface(w, &i1, &idx), 0);
    assert_int_equal(idx, 1);
    assert_int_equal(pcapng_writer_secrets(w, PCAPNG_SECRETS_TLS_KEYLOG, "ab\ncd", 5), 0);
    assert_int_equal(pcapng_writer_packet(w, 1, 1, 2, PCAPNG_DIR_OUT, "hi", "abcde", 3, 5), 0);
    assert_int_equal(pcapng_writer_flush(w), 0);
    assert_int_equal(m.len - off, sizeof(idb) + sizeof(dsb) + sizeof(epb));
    assert_memory_equal(m.buf + off, idb, sizeof(idb));
    assert_memory_equal(m.buf + off + sizeof(idb), dsb, sizeof(dsb));
    assert_memory_equal(m.buf + off + sizeof(idb) + sizeof(dsb), epb, sizeof(epb));
    assert_int_equal(pcapng_writer_packets(w), 1);
    pcapng_writer_free(w);
}

/* Every caplen 0..8 and secrets length 0..8: total is a multiple of 4, equal at both ends,
 * padding is zero, and a packet without direction or comment has no option list. */
static void test_padding_all_lengths(void **state)
{
    static const uint8_t data[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    const struct pcapng_interface ifc = {.linktype = PCAPNG_LINKTYPE_RAW};
    struct mem_sink m;
    uint32_t idx;

    if (!little_endian())
        skip();
    for (uint32_t n = 0; n <= 8; n++) {
        struct pcapng_writer *w = new_writer(&m, 0);
        assert_int_equal(pcapng_writer_add_interface(w, &ifc, &idx), 0);
        assert_int_equal(pcapng_writer_flush(w), 0);
        size_t off = m.len;
        assert_int_equal(pcapng_writer_packet(w, 0, 0, 0, PCAPNG_DIR_UNKNOWN, NULL, data, n, n), 0);
        assert_int_equal(pcapng_writer_flush(w), 0);
        uint32_t total = rd32le(m.buf + off + 4);
        assert_int_equal(total, 32 + (n + 3) / 4 * 4);
        assert_int_equal(m.len - off, total);
        assert_int_equal(rd32le(m.buf + off + total - 4), total);
        for (uint32_t i = n; i < (n + 3) / 4 * 4; i++)
            assert_int_equal(m.buf[off + 28 + i], 0);

        off = m.len;
        assert_int_equal(pcapng_writer_secrets(w, 7, data, n), 0);
        assert_int_equal(pcapng_writer_flush(w), 0);
        total = rd32le(m.buf + off + 4);
        assert_int_equal(total, 20 + (n + 3) / 4 * 4);
        assert_int_equal(rd32le(m.buf + off + 12), n);
        assert_int_equal(rd32le(m.buf + off + total - 4), total);
        pcapng_writer_free(w);
    }
}

static void test_invalid_arguments(void **state)
{
    const struct pcapng_interface ifc = {.linktype = PCAPNG_LINKTYPE_RAW};
    struct mem_sink m;
    struct pcapng_writer *w = new_writer(&m, 0);
    uint32_t idx;
    char *huge = malloc(70000);

    assert_non_null(huge);
    memset(huge, 'x', 69999);
    huge[69999] = '\0';
    /* no interface yet */
    assert_int_equal(pcapng_writer_packet(w, 0, 0, 0, PCAPNG_DIR_IN, NULL, "a", 1, 1), -EINVAL);
    assert_int_equal(pcapng_writer_add_interface(w, &ifc, &idx), 0);
    assert_int_equal(pcapng_writer_packet(w, 1, 0, 0, PCAPNG_DIR_IN, NULL, "a", 1, 1), -EINVAL);
    assert_int_equal(pcapng_writer_packet(w, 0, 0, 0, PCAPNG_DIR_IN, NULL, "ab", 2, 1), -EINVAL);
    /* an option is at most 65535 bytes: refused, never cut */
    assert_int_equal(pcapng_writer_packet(w, 0, 0, 0, PCAPNG_DIR_IN, huge, "a", 1, 1), -E2BIG);
    assert_int_equal(pcapng_writer_packets(w), 0);
    free(huge);
    pcapng_writer_free(w);
}

/* A block larger than the buffer goes to the sink directly, still in order and whole. */
static void test_small_buffer_order(void **state)
{
    static uint8_t big[3000];
    const struct pcapng_interface ifc = {.linktype = PCAPNG_LINKTYPE_RAW};
    struct mem_sink m;
    struct pcapng_writer *w = new_writer(&m, 300);
    uint32_t idx;

    if (!little_endian())
        skip();
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7);
    assert_int_equal(pcapng_writer_add_interface(w, &ifc, &idx), 0);
    for (uint32_t k = 1; k <= 12; k++) {
        uint32_t n = k * 250 % sizeof(big);
        assert_int_equal(pcapng_writer_packet(w, 0, k, 0, PCAPNG_DIR_IN, "c", big, n, n), 0);
    }
    assert_int_equal(pcapng_writer_flush(w), 0);
    assert_true(m.calls > 1);
    /* walk the blocks: SHB, IDB, then the 12 EPBs in order with their data */
    size_t off = rd32le(m.buf + 4);
    assert_int_equal(rd32le(m.buf + off), 1);
    off += rd32le(m.buf + off + 4);
    for (uint32_t k = 1; k <= 12; k++) {
        uint32_t n = k * 250 % sizeof(big);
        assert_int_equal(rd32le(m.buf + off), 6);
        uint64_t ts = (uint64_t)rd32le(m.buf + off + 12) << 32 | rd32le(m.buf + off + 16);
        assert_int_equal(ts, (uint64_t)k * 1000000000u);
        assert_int_equal(rd32le(m.buf + off + 20), n);
        assert_memory_equal(m.buf + off + 28, big, n);
        off += rd32le(m.buf + off + 4);
    }
    assert_int_equal(off, m.len);
    pcapng_writer_free(w);
}

static void test_sink_error_is_sticky(void **state)
{
    const struct pcapng_interface ifc = {.linktype = PCAPNG_LINKTYPE_RAW};
    struct mem_sink m;
    struct pcapng_writer *w = new_writer(&m, 0);
    uint32_t idx;

    m.fail = -ENOSPC;
    assert_int_equal(pcapng_writer_flush(w), -ENOSPC);
    assert_int_equal(m.calls, 1);
    assert_int_equal(pcapng_writer_add_interface(w, &ifc, &idx), -ENOSPC);
    assert_int_equal(pcapng_writer_packet(w, 0, 0, 0, PCAPNG_DIR_IN, NULL, "a", 1, 1), -ENOSPC);
    assert_int_equal(pcapng_writer_secrets(w, 1, "a", 1), -ENOSPC);
    assert_int_equal(pcapng_writer_flush(w), -ENOSPC);
    assert_int_equal(m.calls, 1); /* the sink is not called again after it failed */
    pcapng_writer_free(w);
}

/* A flow through pcap_writer's pcapng mode, read back by libpcap (which reads pcapng):
 * frames, nanosecond times, link type; the comment and direction bytes in the raw file. */
static void test_flow_through_pcap_writer(void **state)
{
    struct pcap_writer_opts wo = {.pcapng = true, .ethernet = true, .snaplen = 60};
    struct pcap_flow_opts fo = {.handshake = true};
    struct trace_conn c = {.id = 7};
    static uint8_t data[1000];
    struct iovec iov = {data, sizeof(data)};
    struct pcap_writer *w;
    struct pcap_flow f;
    uint32_t i0, i1;
    char path[64], eb[PCAP_ERRBUF_SIZE], err[128];

    snprintf(path, sizeof(path), "/tmp/test_pcapng_writer.%d.pcapng", (int)getpid());
    c.local.present = c.remote.present = true;
    snprintf(c.local.address, sizeof(c.local.address), "127.0.0.1");
    snprintf(c.remote.address, sizeof(c.remote.address), "127.0.0.1");
    c.local.port = 10000;
    c.remote.port = 50000;
    assert_int_equal(pcap_writer_open(path, &wo, &w, err, sizeof(err)), 0);
    assert_true(pcap_writer_is_pcapng(w));
    assert_int_equal(pcap_writer_add_interface(w, "a", "first", &i0), 0);
    assert_int_equal(pcap_writer_add_interface(w, "b", "second", &i1), 0);
    assert_int_equal(i1, 1);
    assert_int_equal(pcap_writer_secrets(w, PCAPNG_SECRETS_TLS_KEYLOG, "k\n", 2), 0);
    assert_int_equal(pcap_flow_init(&f, &c, &fo, NULL), 0);
    assert_int_equal(pcap_flow_annotate(&f, i1, "conn-7-note"), 0);
    struct trace_event ev = {.sec = 1700000000,
                             .nsec = 123456789,
                             .dir = TRACE_EV_READ,
                             .iov = &iov,
                             .iovcnt = 1,
                             .len = sizeof(data)};
    assert_int_equal(pcap_flow_event(&f, w, &ev), 0);
    assert_int_equal(pcap_flow_finish(&f, w), 0);
    pcap_flow_release(&f);
    assert_int_equal(pcap_writer_packets(w), 7); /* 3 handshake, data, FIN, FIN, ACK */
    assert_int_equal(pcap_writer_close(w), 0);

    pcap_t *p = pcap_open_offline_with_tstamp_precision(path, PCAP_TSTAMP_PRECISION_NANO, eb);
    assert_non_null(p);
    assert_int_equal(pcap_datalink(p), DLT_EN10MB);
    struct pcap_pkthdr *h;
    const u_char *d;
    int n = 0;
    while (pcap_next_ex(p, &h, &d) == 1) {
        assert_int_equal(h->ts.tv_sec, 1700000000);
        assert_int_equal(h->ts.tv_usec, 123456789); /* nanoseconds */
        if (n == 3) {
            assert_int_equal(h->len, 14 + 20 + 20 + sizeof(data));
            assert_int_equal(h->caplen, 60); /* snaplen */
        }
        n++;
    }
    assert_int_equal(n, 7);
    pcap_close(p);

    /* the comment is on the first packet only; a SYN from the remote (client) is inbound */
    FILE *fp = fopen(path, "rb");
    static uint8_t raw[1 << 14];
    size_t len = fread(raw, 1, sizeof(raw), fp);
    fclose(fp);
    unlink(path);
    int notes = 0;
    for (size_t i = 0; i + 11 <= len; i++)
        notes += memcmp(raw + i, "conn-7-note", 11) == 0;
    assert_int_equal(notes, 1);
}

static void test_classic_has_no_secrets(void **state)
{
    struct pcap_writer_opts wo = {.ethernet = true};
    struct pcap_writer *w;
    uint32_t idx = 5;
    char err[128];

    assert_int_equal(pcap_writer_open("/dev/null", &wo, &w, err, sizeof(err)), 0);
    assert_false(pcap_writer_is_pcapng(w));
    assert_int_equal(pcap_writer_add_interface(w, "x", NULL, &idx), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(pcap_writer_secrets(w, PCAPNG_SECRETS_TLS_KEYLOG, "k", 1), -EOPNOTSUPP);
    assert_int_equal(pcap_writer_close(w), 0);
}

/* Classic pcap and pcapng both reach a caller's sink (the live-stream shape). */
static void test_writer_to_sink_both_formats(void **state)
{
    for (int ng = 0; ng <= 1; ng++) {
        struct pcap_writer_opts wo = {.pcapng = ng, .ethernet = true};
        struct pcap_endpoint a, b;
        struct mem_sink *m = calloc(1, sizeof(*m));
        struct pcap_writer *w;
        uint32_t idx;

        assert_non_null(m);
        assert_int_equal(pcap_endpoint_parse(&a, "127.0.0.1", 1), 0);
        assert_int_equal(pcap_endpoint_parse(&b, "127.0.0.1", 2), 0);
        struct pcap_seg seg = {.src = &a, .dst = &b, .flags = PCAP_TCP_ACK};
        const struct pcap_pkt_meta meta = {.dir = PCAPNG_DIR_IN};
        assert_int_equal(pcap_writer_open_sink(mem_write, m, 4096, &wo, &w), 0);
        assert_int_equal(pcap_writer_add_interface(w, "live", NULL, &idx), 0);
        assert_int_equal(pcap_writer_write(w, 1, 0, &seg, &meta), 0);
        assert_int_equal(pcap_writer_flush(w), 0);
        size_t flushed = m->len;
        assert_true(flushed >= 24 + 16 + 54); /* a header and the packet, without close */
        assert_int_equal(rd32le(m->buf), ng ? 0x0A0D0D0Au : 0xA1B2C3D4u);
        assert_int_equal(pcap_writer_close(w), 0);
        assert_int_equal(m->len, flushed);
        free(m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shb_bytes_and_flush),
        cmocka_unit_test(test_shb_without_options),
        cmocka_unit_test(test_idb_epb_dsb_bytes),
        cmocka_unit_test(test_padding_all_lengths),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_small_buffer_order),
        cmocka_unit_test(test_sink_error_is_sticky),
        cmocka_unit_test(test_flow_through_pcap_writer),
        cmocka_unit_test(test_classic_has_no_secrets),
        cmocka_unit_test(test_writer_to_sink_both_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

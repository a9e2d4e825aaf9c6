/* Unit tests of the frame builder (headers, checksums against independent references) and of
 * the flow state (sequence numbers, handshake, FIN, MSS split), read back through libpcap. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <pcap/pcap.h>

#include "pcap/pcap_flow.h"
#include "pcap/pcap_frame.h"
#include "pcap/pcap_writer.h"

static uint16_t rd16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Straightforward big-endian RFC 1071 sum, independent of the optimized one. */
static uint32_t ref_sum(uint32_t s, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += rd16(p + i);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    return s;
}

static uint16_t ref_fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

static void test_csum_rfc1071_example(void **state)
{
    /* RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2. */
    const uint8_t b[] = {0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7};
    uint16_t s = pcap_csum_fold(pcap_csum_add(0, b, sizeof(b)));
    uint8_t net[2];

    memcpy(net, &s, 2);
    assert_int_equal(rd16(net), 0xddf2);
}

static void test_csum_matches_reference_all_lengths(void **state)
{
    uint8_t buf[300];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof(buf); n++) {
        uint16_t s = pcap_csum_fold(pcap_csum_add(0, buf, n));
        uint8_t net[2];
        memcpy(net, &s, 2);
        assert_int_equal(rd16(net), ref_fold(ref_sum(0, buf, n)));
    }
}

static void test_endpoint_parse(void **state)
{
    struct pcap_endpoint ep;

    assert_int_equal(pcap_endpoint_parse(&ep, "127.0.0.1", 10000), 0);
    assert_int_equal(ep.family, AF_INET);
    assert_int_equal(ep.port, 10000);
    assert_int_equal(pcap_endpoint_parse(&ep, "[::1]", 443), 0);
    assert_int_equal(ep.family, AF_INET6);
    assert_int_equal(ep.addr[15], 1);
    assert_int_equal(pcap_endpoint_parse(&ep, "pipe:/tmp/x", 1), -EINVAL);
    assert_int_equal(pcap_endpoint_parse(&ep, "1.2.3.4", 65536), -EINVAL);
    assert_int_equal(pcap_endpoint_parse(&ep, "", 1), -EINVAL);
}

static void test_frame_ipv4(void **state)
{
    static uint8_t out[PCAP_FRAME_MAX];
    struct pcap_endpoint a, b;
    const char payload[] = "hello, world!"; /* odd length: 13 */
    struct iovec iov[2] = {{(void *)payload, 5}, {(void *)(payload + 5), 8}};
    assert_int_equal(pcap_endpoint_parse(&a, "127.0.0.1", 10000), 0);
    assert_int_equal(pcap_endpoint_parse(&b, "10.1.2.3", 53288), 0);
    struct pcap_seg seg = {.src = &a,
                           .dst = &b,
                           .seq = 7,
                           .ack = 9,
                           .flags = PCAP_TCP_ACK,
                           .window = 65535,
                           .iov = iov,
                           .iovcnt = 2,
                           .off = 0,
                           .len = 13};
    size_t n = pcap_frame_build(out, true, &seg);

    assert_int_equal(n, 54 + 13);
    assert_int_equal(rd16(out + 12), 0x0800);
    const uint8_t *ip = out + 14, *tcp = ip + 20;
    assert_int_equal(ip[0], 0x45);
    assert_int_equal(rd16(ip + 2), 20 + 20 + 13);
    assert_int_equal(ip[9], 6);
    assert_int_equal(ref_fold(ref_sum(0, ip, 20)), 0xffff); /* header checksum verifies */
    assert_int_equal(rd16(tcp), 10000);
    assert_int_equal(rd16(tcp + 2), 53288);
    assert_int_equal(rd32(tcp + 4), 7);
    assert_int_equal(rd32(tcp + 8), 9);
    assert_int_equal(tcp[12], 0x50);
    assert_int_equal(tcp[13], PCAP_TCP_ACK);
    assert_memory_equal(tcp + 20, payload, 13);
    uint8_t ph[12];
    memcpy(ph, ip + 12, 8);
    ph[8] = 0;
    ph[9] = 6;
    ph[10] = 0;
    ph[11] = 33;
    assert_int_equal(ref_fold(ref_sum(ref_sum(0, ph, 12), tcp, 33)), 0xffff);

    /* Offset into the gather list, crossing the iov boundary. */
    seg.off = 3;
    seg.len = 4;
    n = pcap_frame_build(out, false, &seg);
    assert_int_equal(n, 40 + 4);
    assert_int_equal(out[0], 0x45);
    assert_memory_equal(out + 40, "lo, ", 4);
    /* Too short a gather list, too large a payload, mixed families: refused. */
    seg.len = 11;
    assert_int_equal(pcap_frame_build(out, false, &seg), 0);
    seg.len = 65496;
    assert_int_equal(pcap_frame_build(out, false, &seg), 0);
}

static void test_frame_ipv6(void **state)
{
    static uint8_t out[PCAP_FRAME_MAX];
    static uint8_t big[65515];
    struct pcap_endpoint a, b, c;
    struct iovec iov = {big, sizeof(big)};
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i ^ (i >> 8));
    assert_int_equal(pcap_endpoint_parse(&a, "::1", 8443), 0);
    assert_int_equal(pcap_endpoint_parse(&b, "2001:db8::42", 40000), 0);
    assert_int_equal(pcap_endpoint_parse(&c, "192.0.2.1", 1), 0);
    struct pcap_seg seg = {.src = &b,
                           .dst = &a,
                           .seq = 0xfffffff0u,
                           .ack = 1,
                           .flags = PCAP_TCP_ACK,
                           .iov = &iov,
                           .iovcnt = 1,
                           .len = sizeof(big)};
    size_t n = pcap_frame_build(out, true, &seg);

    assert_int_equal(n, 14 + 40 + 20 + sizeof(big));
    assert_int_equal(rd16(out + 12), 0x86dd);
    const uint8_t *ip = out + 14, *tcp = ip + 40;
    assert_int_equal(ip[0] >> 4, 6);
    assert_int_equal(rd16(ip + 4), 20 + sizeof(big));
    assert_int_equal(ip[6], 6);
    uint8_t ph[40] = {0};
    memcpy(ph, ip + 8, 32);
    uint32_t tl = 20 + sizeof(big);
    ph[34] = (uint8_t)(tl >> 8);
    ph[35] = (uint8_t)tl;
    ph[39] = 6;
    assert_int_equal(ref_fold(ref_sum(ref_sum(0, ph, 40), tcp, tl)), 0xffff);

    seg.dst = &c;
    assert_int_equal(pcap_frame_build(out, true, &seg), 0);
    pcap_endpoint_unify(&b, &c);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.addr[10], 0xff);
    assert_int_equal(c.addr[12], 192);
}

/* --- flows, through a real pcap file --- */

struct pkt {
    uint32_t seq, ack, len;
    uint8_t flags;
    uint16_t sport;
    long sec, frac;
};

static size_t read_back(const char *path, struct pkt *pk, size_t max, int *precision)
{
    char eb[PCAP_ERRBUF_SIZE];
    pcap_t *p = pcap_open_offline_with_tstamp_precision(path, PCAP_TSTAMP_PRECISION_NANO, eb);
    struct pcap_pkthdr *h;
    const u_char *d;
    size_t n = 0;

    assert_non_null(p);
    int lt = pcap_datalink(p);
    size_t l2 = lt == DLT_EN10MB ? 14 : 0;
    while (pcap_next_ex(p, &h, &d) == 1 && n < max) {
        const uint8_t *ip = d + l2;
        size_t iph = (ip[0] >> 4) == 6 ? 40 : 20;
        const uint8_t *tcp = ip + iph;
        pk[n].seq = rd32(tcp + 4);
        pk[n].ack = rd32(tcp + 8);
        pk[n].flags = tcp[13];
        pk[n].sport = rd16(tcp);
        pk[n].len = h->len - (uint32_t)(l2 + iph + 20);
        pk[n].sec = h->ts.tv_sec;
        pk[n].frac = h->ts.tv_usec;
        n++;
    }
    if (precision)
        *precision = lt;
    pcap_close(p);
    return n;
}

static void tmp_path(char *buf, size_t n)
{
    snprintf(buf, n, "/tmp/test_pcap_frame.%d.pcap", (int)getpid());
}

static struct trace_conn conn_v4(void)
{
    struct trace_conn c = {.id = 1};
    c.local.present = c.remote.present = true;
    snprintf(c.local.address, sizeof(c.local.address), "127.0.0.1");
    snprintf(c.remote.address, sizeof(c.remote.address), "127.0.0.1");
    c.local.port = 10000;
    c.remote.port = 53288;
    return c;
}

static struct trace_event ev_of(enum trace_dir dir, const struct iovec *iov, size_t len,
                                bool end_stream, int32_t nsec)
{
    struct trace_event ev = {.sec = 1525207293,
                             .nsec = nsec,
                             .dir = dir,
                             .iov = iov,
                             .iovcnt = iov ? 1 : 0,
                             .len = len,
                             .end_stream = end_stream};
    return ev;
}

static void test_flow_default_framing(void **state)
{
    char path[64];
    struct pcap_writer *w;
    struct pcap_writer_opts wo = {.ethernet = true};
    struct pcap_flow_opts fo = {0};
    struct pcap_flow f;
    struct trace_conn c = conn_v4();
    static uint8_t data[70000];
    struct iovec iov = {data, sizeof(data)};
    struct pkt pk[16];
    char err[128];
    struct stat sb;

    tmp_path(path, sizeof(path));
    assert_int_equal(pcap_writer_open(path, &wo, &w, err, sizeof(err)), 0);
    assert_int_equal(pcap_flow_init(&f, &c, &fo, NULL), 0);
    struct trace_event e1 = ev_of(TRACE_EV_READ, &iov, 103, false, 216737962);
    struct trace_event e2 = ev_of(TRACE_EV_WRITE, &iov, 37, true, 230450657);
    struct trace_event e3 = ev_of(TRACE_EV_READ, &iov, sizeof(data), false, 230558250);
    struct trace_event e4 = ev_of(TRACE_EV_READ, NULL, 0, true, 230558251);
    assert_int_equal(pcap_flow_event(&f, w, &e1), 0);
    assert_int_equal(pcap_flow_event(&f, w, &e2), 0);
    assert_int_equal(pcap_flow_event(&f, w, &e3), 0);
    assert_int_equal(pcap_flow_event(&f, w, &e4), 0); /* empty: no packet without handshake */
    assert_int_equal(pcap_flow_finish(&f, w), 0);
    assert_int_equal(pcap_writer_packets(w), 4);
    assert_int_equal(pcap_writer_close(w), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);

    int lt;
    assert_int_equal(read_back(path, pk, 16, &lt), 4);
    assert_int_equal(lt, DLT_EN10MB);
    /* read: remote -> local, seq 0, ack 0 */
    assert_int_equal(pk[0].sport, 53288);
    assert_int_equal(pk[0].seq, 0);
    assert_int_equal(pk[0].ack, 0);
    assert_int_equal(pk[0].len, 103);
    assert_int_equal(pk[0].flags, PCAP_TCP_ACK);
    assert_int_equal(pk[0].frac, 216737000); /* microsecond file: truncated, not rounded */
    /* write: local -> remote, acks the 103 bytes read */
    assert_int_equal(pk[1].sport, 10000);
    assert_int_equal(pk[1].seq, 0);
    assert_int_equal(pk[1].ack, 103);
    assert_int_equal(pk[1].flags, PCAP_TCP_ACK); /* no FIN without --tcp-handshake */
    /* 70000 bytes: split at 65495 (largest IPv4 payload) */
    assert_int_equal(pk[2].len, 65495);
    assert_int_equal(pk[2].seq, 103);
    assert_int_equal(pk[2].ack, 37);
    assert_int_equal(pk[3].len, 70000 - 65495);
    assert_int_equal(pk[3].seq, 103 + 65495);
    unlink(path);
}

static void test_flow_handshake_mss_fin(void **state)
{
    char path[64];
    struct pcap_writer *w;
    struct pcap_writer_opts wo = {.ethernet = false, .nanosecond = true};
    struct pcap_flow_opts fo = {.handshake = true, .mss = 1000};
    struct pcap_flow f;
    struct trace_conn c = conn_v4();
    static uint8_t data[2500];
    struct iovec iov = {data, sizeof(data)};
    struct pkt pk[32];
    char err[128];

    tmp_path(path, sizeof(path));
    assert_int_equal(pcap_writer_open(path, &wo, &w, err, sizeof(err)), 0);
    assert_int_equal(pcap_flow_init(&f, &c, &fo, NULL), 0);
    struct trace_event e1 = ev_of(TRACE_EV_READ, &iov, 100, false, 5);
    struct trace_event e2 = ev_of(TRACE_EV_WRITE, &iov, 2500, true, 6);
    assert_int_equal(pcap_flow_event(&f, w, &e1), 0);
    assert_int_equal(pcap_flow_event(&f, w, &e2), 0);
    assert_int_equal(pcap_flow_finish(&f, w), 0);
    assert_int_equal(pcap_flow_finish(&f, w), 0); /* idempotent */
    assert_int_equal(pcap_writer_close(w), 0);

    int lt;
    size_t n = read_back(path, pk, 32, &lt);
    assert_int_equal(lt, DLT_RAW);
    /* SYN (client = remote, higher port), SYN-ACK, ACK, read, 3 writes, FIN(w), FIN(r), ACK */
    assert_int_equal(n, 10);
    assert_int_equal(pk[0].flags, PCAP_TCP_SYN);
    assert_int_equal(pk[0].sport, 53288);
    assert_int_equal(pk[0].seq, 0);
    assert_int_equal(pk[1].flags, PCAP_TCP_SYN | PCAP_TCP_ACK);
    assert_int_equal(pk[1].seq, 0);
    assert_int_equal(pk[1].ack, 1);
    assert_int_equal(pk[2].flags, PCAP_TCP_ACK);
    assert_int_equal(pk[2].seq, 1);
    assert_int_equal(pk[2].ack, 1);
    assert_int_equal(pk[3].seq, 1);
    assert_int_equal(pk[3].len, 100);
    assert_int_equal(pk[3].frac, 5); /* nanosecond file keeps nanoseconds */
    assert_int_equal(pk[4].len, 1000);
    assert_int_equal(pk[4].seq, 1);
    assert_int_equal(pk[4].ack, 101);
    assert_int_equal(pk[5].seq, 1001);
    assert_int_equal(pk[6].len, 500);
    assert_int_equal(pk[6].seq, 2001);
    /* end_stream on the write: FIN from local, seq after the data */
    assert_int_equal(pk[7].flags, PCAP_TCP_FIN | PCAP_TCP_ACK);
    assert_int_equal(pk[7].sport, 10000);
    assert_int_equal(pk[7].seq, 2501);
    /* finish: the remote's FIN acks the local FIN (+1), then the last ACK */
    assert_int_equal(pk[8].flags, PCAP_TCP_FIN | PCAP_TCP_ACK);
    assert_int_equal(pk[8].sport, 53288);
    assert_int_equal(pk[8].seq, 101);
    assert_int_equal(pk[8].ack, 2502);
    assert_int_equal(pk[9].flags, PCAP_TCP_ACK);
    assert_int_equal(pk[9].sport, 10000);
    assert_int_equal(pk[9].seq, 2502);
    assert_int_equal(pk[9].ack, 102);
    unlink(path);
}

static void test_flow_cluster_side_client_is_local(void **state)
{
    char path[64];
    struct pcap_writer *w;
    struct pcap_writer_opts wo = {.ethernet = true};
    struct pcap_flow_opts fo = {.handshake = true};
    struct pcap_flow f;
    struct trace_conn c = conn_v4();
    struct pkt pk[8];
    char err[128];
    uint8_t b = 'x';
    struct iovec iov = {&b, 1};

    c.local.port = 41000;
    c.remote.port = 8080;
    tmp_path(path, sizeof(path));
    assert_int_equal(pcap_writer_open(path, &wo, &w, err, sizeof(err)), 0);
    assert_int_equal(pcap_flow_init(&f, &c, &fo, NULL), 0);
    struct trace_event e1 = ev_of(TRACE_EV_WRITE, &iov, 1, false, 0);
    struct trace_event e2 = ev_of(TRACE_EV_CLOSED, NULL, 0, false, 1);
    assert_int_equal(pcap_flow_event(&f, w, &e1), 0);
    assert_int_equal(pcap_flow_event(&f, w, &e2), 0);
    assert_int_equal(pcap_writer_close(w), 0);
    assert_int_equal(read_back(path, pk, 8, NULL), 7);
    assert_int_equal(pk[0].sport, 41000); /* local opened the connection */
    assert_int_equal(pk[0].flags, PCAP_TCP_SYN);
    assert_int_equal(pk[4].sport, 41000); /* ...and closes first */
    assert_int_equal(pk[4].flags, PCAP_TCP_FIN | PCAP_TCP_ACK);
    unlink(path);
}

static void test_flow_defaults_missing_addresses(void **state)
{
    struct pcap_flow f;
    struct pcap_flow_opts fo = {0};
    struct trace_conn c = {.id = 3};
    bool dflt = false;

    snprintf(c.remote.address, sizeof(c.remote.address), "::1");
    c.remote.present = true;
    c.remote.port = 5;
    assert_int_equal(pcap_flow_init(&f, &c, &fo, &dflt), 0);
    assert_true(dflt);
    assert_int_equal(f.remote.family, AF_INET6);
    assert_int_equal(f.local.family, AF_INET6); /* default 127.0.0.1 mapped to match */
}

static void test_writer_open_error(void **state)
{
    struct pcap_writer *w = NULL;
    struct pcap_writer_opts wo = {.ethernet = true};
    char err[256];

    assert_int_equal(pcap_writer_open("/nonexistent-dir/x.pcap", &wo, &w, err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent-dir/x.pcap"));
    assert_int_equal(pcap_writer_close(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csum_rfc1071_example),
        cmocka_unit_test(test_csum_matches_reference_all_lengths),
        cmocka_unit_test(test_endpoint_parse),
        cmocka_unit_test(test_frame_ipv4),
        cmocka_unit_test(test_frame_ipv6),
        cmocka_unit_test(test_flow_default_framing),
        cmocka_unit_test(test_flow_handshake_mss_fin),
        cmocka_unit_test(test_flow_cluster_side_client_is_local),
        cmocka_unit_test(test_flow_defaults_missing_addresses),
        cmocka_unit_test(test_writer_open_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Frame builder: Ethernet II / IPv4 / IPv6 / TCP headers and their checksums (RFC 791, 8200,
 * 9293, 1071). The checksum sums 32-bit native words into a 64-bit accumulator and folds once:
 * RFC 1071's byte-order independence lets us skip per-word byte swaps, which is what keeps
 * conversion near memory speed. MAC addresses are fixed, locally administered ones (text2pcap
 * style): the capture has no link layer, and stable values keep golden outputs stable. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "pcap/pcap_frame.h"

static const uint8_t pcap_mac_a[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
static const uint8_t pcap_mac_b[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};

int pcap_endpoint_parse(struct pcap_endpoint *ep, const char *addr, uint32_t port)
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(addr);
    struct pcap_endpoint tmp = {.port = (uint16_t)port};

    if (port > 65535 || n == 0 || n >= sizeof(buf))
        return -EINVAL;
    /* Envoy writes bare literals, but users pass bracketed ones on command lines. */
    if (addr[0] == '[' && addr[n - 1] == ']') {
        memcpy(buf, addr + 1, n - 2);
        buf[n - 2] = '\0';
    } else {
        memcpy(buf, addr, n + 1);
    }
    if (inet_pton(AF_INET, buf, tmp.addr) == 1)
        tmp.family = AF_INET;
    else if (inet_pton(AF_INET6, buf, tmp.addr) == 1)
        tmp.family = AF_INET6;
    else
        return -EINVAL;
    *ep = tmp;
    return 0;
}

static void pcap_endpoint_map6(struct pcap_endpoint *ep)
{
    uint8_t v4[4];

    memcpy(v4, ep->addr, 4);
    memset(ep->addr, 0, 10);
    ep->addr[10] = 0xff;
    ep->addr[11] = 0xff;
    memcpy(ep->addr + 12, v4, 4);
    ep->family = AF_INET6;
}

void pcap_endpoint_unify(struct pcap_endpoint *a, struct pcap_endpoint *b)
{
    if (a->family == AF_INET && b->family == AF_INET6)
        pcap_endpoint_map6(a);
    else if (b->family == AF_INET && a->family == AF_INET6)
        pcap_endpoint_map6(b);
}

size_t pcap_frame_max_payload(int family)
{
    if (family == AF_INET6)
        return 65535 - PCAP_TCP_HLEN;
    return 65535 - PCAP_IP4_HLEN - PCAP_TCP_HLEN;
}

uint32_t pcap_csum_add(uint32_t sum, const void *p, size_t n)
{
    const uint8_t *b = p;
    uint64_t acc = sum;
    uint32_t w;

    /* Unrolled so the adds of independent words overlap; 2^32 words cannot overflow. */
    while (n >= 16) {
        uint32_t w0, w1, w2, w3;
        memcpy(&w0, b, 4);
        memcpy(&w1, b + 4, 4);
        memcpy(&w2, b + 8, 4);
        memcpy(&w3, b + 12, 4);
        acc += (uint64_t)w0 + w1 + w2 + w3;
        b += 16;
        n -= 16;
    }
    while (n >= 4) {
        memcpy(&w, b, 4);
        acc += w;
        b += 4;
        n -= 4;
    }
    if (n >= 2) {
        uint16_t h;
        memcpy(&h, b, 2);
        acc += h;
        b += 2;
        n -= 2;
    }
    if (n) {
        /* A trailing odd byte is the high-order byte of a zero-padded word in network order. */
        uint8_t pad[2] = {b[0], 0};
        uint16_t h;
        memcpy(&h, pad, 2);
        acc += h;
    }
    while (acc >> 32)
        acc = (acc & 0xffffffffu) + (acc >> 32);
    return (uint32_t)acc;
}

uint16_t pcap_csum_fold(uint32_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static void pcap_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void pcap_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Copies LEN bytes starting OFF bytes into the gather list. Returns false if it is too short. */
static bool pcap_iov_copy(uint8_t *dst, const struct iovec *iov, int iovcnt, size_t off, size_t len)
{
    for (int i = 0; i < iovcnt && len > 0; i++) {
        size_t n = iov[i].iov_len;
        if (off >= n) {
            off -= n;
            continue;
        }
        n -= off;
        if (n > len)
            n = len;
        memcpy(dst, (const uint8_t *)iov[i].iov_base + off, n);
        dst += n;
        len -= n;
        off = 0;
    }
    return len == 0;
}

size_t pcap_frame_build(uint8_t *out, bool ethernet, const struct pcap_seg *seg)
{
    const struct pcap_endpoint *src = seg->src, *dst = seg->dst;
    bool v6 = src->family == AF_INET6;
    size_t iph = v6 ? PCAP_IP6_HLEN : PCAP_IP4_HLEN;
    size_t l2 = ethernet ? PCAP_ETH_HLEN : 0;
    size_t tcplen = PCAP_TCP_HLEN + seg->len;
    uint8_t *ip = out + l2, *tcp = ip + iph;
    uint8_t pseudo[40];
    size_t plen;
    uint32_t sum;
    uint16_t csum;

    if (src->family != dst->family || (src->family != AF_INET && src->family != AF_INET6) ||
        seg->len > pcap_frame_max_payload(src->family))
        return 0;
    if (seg->len && !pcap_iov_copy(tcp + PCAP_TCP_HLEN, seg->iov, seg->iovcnt, seg->off, seg->len))
        return 0;

    if (ethernet) {
        /* Direction shows in the MACs too (ordered by endpoint, so it is stable per flow and
         * needs no state), and Wireshark's Ethernet conversations match the TCP ones. */
        int c = memcmp(src->addr, dst->addr, sizeof(src->addr));
        bool lower = c < 0 || (c == 0 && src->port < dst->port);
        memcpy(out, lower ? pcap_mac_b : pcap_mac_a, 6);
        memcpy(out + 6, lower ? pcap_mac_a : pcap_mac_b, 6);
        pcap_put16(out + 12, v6 ? 0x86dd : 0x0800);
    }

    if (v6) {
        pcap_put32(ip, 0x60000000u);
        pcap_put16(ip + 4, (uint16_t)tcplen);
        ip[6] = IPPROTO_TCP;
        ip[7] = 64;
        memcpy(ip + 8, src->addr, 16);
        memcpy(ip + 24, dst->addr, 16);
        /* RFC 8200 8.1: src, dst, 32-bit upper-layer length, 3 zero bytes, next header. */
        memcpy(pseudo, src->addr, 16);
        memcpy(pseudo + 16, dst->addr, 16);
        pcap_put32(pseudo + 32, (uint32_t)tcplen);
        pcap_put32(pseudo + 36, IPPROTO_TCP);
        plen = 40;
    } else {
        ip[0] = 0x45;
        ip[1] = 0;
        pcap_put16(ip + 2, (uint16_t)(iph + tcplen));
        pcap_put16(ip + 4, 0);      /* id: DF set, never fragmented */
        pcap_put16(ip + 6, 0x4000); /* DF */
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        pcap_put16(ip + 10, 0);
        memcpy(ip + 12, src->addr, 4);
        memcpy(ip + 16, dst->addr, 4);
        csum = (uint16_t)~pcap_csum_fold(pcap_csum_add(0, ip, PCAP_IP4_HLEN));
        memcpy(ip + 10, &csum, 2);
        memcpy(pseudo, src->addr, 4);
        memcpy(pseudo + 4, dst->addr, 4);
        pseudo[8] = 0;
        pseudo[9] = IPPROTO_TCP;
        pcap_put16(pseudo + 10, (uint16_t)tcplen);
        plen = 12;
    }

    pcap_put16(tcp, src->port);
    pcap_put16(tcp + 2, dst->port);
    pcap_put32(tcp + 4, seg->seq);
    pcap_put32(tcp + 8, seg->ack);
    tcp[12] = (PCAP_TCP_HLEN / 4) << 4;
    tcp[13] = seg->flags;
    pcap_put16(tcp + 14, seg->window);
    pcap_put16(tcp + 16, 0);
    pcap_put16(tcp + 18, 0);
    sum = pcap_csum_add(0, pseudo, plen);
    sum = pcap_csum_add(sum, tcp, tcplen);
    csum = (uint16_t)~pcap_csum_fold(sum);
    memcpy(tcp + 16, &csum, 2);
    return l2 + iph + tcplen;
}

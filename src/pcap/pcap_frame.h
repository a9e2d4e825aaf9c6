/* Stateless frame builder: one TCP segment -> one Ethernet (or raw IP) frame with IPv4 or IPv6
 * and TCP headers without options, checksums filled in (IPv4 header; TCP over the IPv4 or IPv6
 * pseudo-header). Knows nothing of sequence numbers or flows: pcap_flow.h decides those.
 *
 * Design: the frame is built in one caller-owned buffer (payload copied in, then checksummed
 * in place) because libpcap's pcap_dump takes one contiguous packet anyway; a gather-write
 * variant would save one memcpy per packet but the copy is not the bottleneck (checksum is). */
#ifndef SOCKTAP_PCAP_PCAP_FRAME_H
#define SOCKTAP_PCAP_PCAP_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define PCAP_ETH_HLEN 14
#define PCAP_IP4_HLEN 20
#define PCAP_IP6_HLEN 40
#define PCAP_TCP_HLEN 20
/* Largest frame pcap_frame_build can produce (IPv6: payload length field is 16 bits). */
#define PCAP_FRAME_MAX (PCAP_ETH_HLEN + PCAP_IP6_HLEN + 65535)

#define PCAP_TCP_FIN 0x01
#define PCAP_TCP_SYN 0x02
#define PCAP_TCP_RST 0x04
#define PCAP_TCP_PSH 0x08
#define PCAP_TCP_ACK 0x10

/* One end of a connection. FAMILY is AF_INET (ADDR[0..3]) or AF_INET6 (ADDR[0..15]),
 * address bytes in network order. */
struct pcap_endpoint {
    int family;
    uint8_t addr[16];
    uint16_t port;
};

/* Parses textual ADDR ("127.0.0.1", "::1", "[::1]") into EP with PORT. ADDR must not be NULL.
 * Returns 0, or -EINVAL (EP untouched) if ADDR is not an IP literal or PORT > 65535. */
int pcap_endpoint_parse(struct pcap_endpoint *ep, const char *addr, uint32_t port)
    __attribute__((warn_unused_result, nonnull));

/* Makes A and B the same family: an IPv4 endpoint becomes IPv4-mapped IPv6 if the other is
 * IPv6 (a dual-stack listener can report one of each). */
void pcap_endpoint_unify(struct pcap_endpoint *a, struct pcap_endpoint *b) __attribute__((nonnull));

/* Largest TCP payload one IP packet of FAMILY can carry (total/payload length is 16 bits). */
size_t pcap_frame_max_payload(int family);

/* One segment to frame. SRC and DST must have the same family. The payload is LEN bytes of
 * the gather list IOV[0..IOVCNT) starting OFF bytes in (IOV may be NULL when LEN is 0); it is
 * read, never kept. */
struct pcap_seg {
    const struct pcap_endpoint *src, *dst;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t window;
    const struct iovec *iov;
    int iovcnt;
    size_t off, len;
};

/* Builds the frame for SEG into OUT, which the caller owns and must hold PCAP_FRAME_MAX bytes.
 * ETHERNET: prepend an Ethernet II header (LINKTYPE_ETHERNET), else start at the IP header
 * (LINKTYPE_RAW). Returns the frame length, or 0 if SEG is invalid (family mismatch, payload
 * larger than pcap_frame_max_payload, IOV shorter than OFF + LEN). */
size_t pcap_frame_build(uint8_t *out, bool ethernet, const struct pcap_seg *seg)
    __attribute__((warn_unused_result, nonnull));

/* Internet checksum helpers, exposed for tests: the folded one's complement sum of P[0..N),
 * added to SUM, in the byte order of the host (store the final ~sum with memcpy). */
uint32_t pcap_csum_add(uint32_t sum, const void *p, size_t n);
uint16_t pcap_csum_fold(uint32_t sum);

#endif

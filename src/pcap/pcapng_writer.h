/* A pcapng block writer (draft-ietf-opsawg-pcapng): Section Header, Interface Description,
 * Enhanced Packet and Decryption Secrets Blocks with their options, in host byte order (a
 * reader learns it from the SHB's byte-order magic). It knows nothing of TCP or traces: callers
 * hand it finished frames (pcap_writer.h does, from pcap_frame_build).
 *
 * Output goes to a caller-supplied sink through an internal buffer: a file descriptor for
 * capture2pcap, a connection's output buffer for a live stream. Blocks are only ever handed
 * to the sink whole or in order, never interleaved, so a sink that forwards each call gets a
 * valid pcapng stream at every flush point. */
#ifndef SOCKTAP_PCAP_PCAPNG_WRITER_H
#define SOCKTAP_PCAP_PCAPNG_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes LEN bytes of BUF (borrowed for the call) to wherever CTX says. Must write all of it
 * or fail: returns 0 or -errno. After a failure the writer calls the sink no more. */
typedef int (*pcapng_sink_fn)(void *ctx, const void *buf, size_t len);

#define PCAPNG_LINKTYPE_ETHERNET 1
#define PCAPNG_LINKTYPE_RAW      101 /* raw IPv4/IPv6 (LINKTYPE_RAW, not DLT_RAW's 12) */

#define PCAPNG_SECRETS_TLS_KEYLOG 0x544c534bu /* "TLSK": NSS key log text */

/* epb_flags inbound/outbound (bits 0-1). Inbound = bytes the proxy read from the peer. */
enum pcapng_dir { PCAPNG_DIR_UNKNOWN = 0, PCAPNG_DIR_IN = 1, PCAPNG_DIR_OUT = 2 };

/* Section header options; every string is borrowed for pcapng_writer_new only, NULL = absent. */
struct pcapng_section {
    const char *userappl; /* shb_userappl, e.g. "socktap 0.1.0" */
    const char *hardware; /* shb_hardware */
    const char *os;       /* shb_os */
    const char *comment;  /* opt_comment */
};

/* One interface (IDB). Timestamps are always nanoseconds (if_tsresol 9). Strings borrowed for
 * the call, NULL = absent. */
struct pcapng_interface {
    uint16_t linktype;       /* PCAPNG_LINKTYPE_* */
    uint32_t snaplen;        /* 0 = no limit */
    const char *name;        /* if_name */
    const char *description; /* if_description */
};

struct pcapng_writer;

/* Creates a writer that sends its bytes to SINK(CTX, ...) (CTX borrowed: must outlive the
 * writer) through a buffer of BUFSIZE bytes (0 = 1 MiB; a live stream wants small and
 * pcapng_writer_flush per packet), and queues the Section Header Block built from SECTION.
 * On success *OUT is the caller's, released with pcapng_writer_free. Returns 0 or -ENOMEM. */
int pcapng_writer_new(pcapng_sink_fn sink, void *ctx, size_t bufsize,
                      const struct pcapng_section *section, struct pcapng_writer **out)
    __attribute__((warn_unused_result, nonnull(1, 4, 5)));

/* Queues an Interface Description Block. Interfaces are numbered from 0 in the order added;
 * the new one's number goes to *INDEX. Packets may follow for it at once; adding interfaces
 * after packets is valid pcapng. Returns 0, -E2BIG (a string over 64 KiB) or the sticky
 * error of an earlier write. */
int pcapng_writer_add_interface(struct pcapng_writer *w, const struct pcapng_interface *ifc,
                                uint32_t *index) __attribute__((warn_unused_result, nonnull));

/* Queues an Enhanced Packet Block on interface IFINDEX: CAPLEN bytes of DATA (borrowed for
 * the call) of a packet that was ORIGLEN long, at SEC.NSEC (Unix time; negative clamps to 0),
 * with epb_flags DIR (PCAPNG_DIR_UNKNOWN: no flags option) and opt_comment COMMENT (NULL =
 * none). Returns 0, -EINVAL (IFINDEX not added, CAPLEN > ORIGLEN), -E2BIG or the sticky error. */
int pcapng_writer_packet(struct pcapng_writer *w, uint32_t ifindex, int64_t sec, int32_t nsec,
                         enum pcapng_dir dir, const char *comment, const void *data,
                         uint32_t caplen, uint32_t origlen)
    __attribute__((warn_unused_result, nonnull(1, 7)));

/* Queues a Decryption Secrets Block of TYPE (e.g. PCAPNG_SECRETS_TLS_KEYLOG with NSS key-log
 * lines) holding LEN bytes of DATA (borrowed for the call). Wireshark applies secrets to the
 * packets after the block, so write it before the first packet of the connection it decrypts.
 * Returns 0, -E2BIG or the sticky error. */
int pcapng_writer_secrets(struct pcapng_writer *w, uint32_t type, const void *data, size_t len)
    __attribute__((warn_unused_result, nonnull));

/* Hands everything queued to the sink. Returns 0 or the (sticky) sink error. */
int pcapng_writer_flush(struct pcapng_writer *w) __attribute__((warn_unused_result, nonnull));

/* Packets queued so far. */
uint64_t pcapng_writer_packets(const struct pcapng_writer *w) __attribute__((nonnull));

/* Frees W without flushing (NULL allowed); call pcapng_writer_flush first to keep the rest. */
void pcapng_writer_free(struct pcapng_writer *w);

#endif

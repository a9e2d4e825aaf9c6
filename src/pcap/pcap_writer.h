/* The capture file side of capture2pcap: frames segments (pcap_frame_build) and writes them as
 * classic pcap through libpcap's dumper, or as pcapng through pcapng_writer.h with interfaces,
 * direction flags, comments and decryption secrets. One writer type for both formats, so
 * pcap_flow and the merge produce segments without knowing the format; what classic pcap
 * cannot carry (interfaces, direction, comments, secrets) it drops, by design.
 * Microsecond or nanosecond timestamps, Ethernet or raw IP link type. Files are created 0600
 * because the frames carry decrypted payloads, and "-" is stdout so the output can be piped
 * into `tshark -r -` or `wireshark -k -i -`. */
#ifndef SOCKTAP_PCAP_PCAP_WRITER_H
#define SOCKTAP_PCAP_PCAP_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pcap/pcap_frame.h"
#include "pcap/pcapng_writer.h"

struct pcap_writer_opts {
    bool pcapng;      /* pcapng (SHB naming socktap, IDBs, EPBs), else classic pcap */
    bool ethernet;    /* LINKTYPE_ETHERNET, else LINKTYPE_RAW */
    bool nanosecond;  /* classic: nanosecond pcap (magic 0xa1b23c4d); pcapng always has ns */
    uint32_t snaplen; /* frames are cut to this many bytes; 0 = 262144 */
};

/* What a packet carries besides its frame; pcapng only, classic pcap ignores it. */
struct pcap_pkt_meta {
    uint32_t ifindex;    /* from pcap_writer_add_interface */
    enum pcapng_dir dir; /* epb_flags direction; PCAPNG_DIR_UNKNOWN: none */
    const char *comment; /* opt_comment, borrowed for the call; NULL = none */
};

struct pcap_writer;

/* Opens PATH ("-" = stdout; else created/truncated with mode 0600) and writes the file
 * header. On success *OUT is owned by the caller and released by pcap_writer_close. On failure
 * returns -errno and puts a message for the user into ERR (ERRLEN bytes, may be 0). */
int pcap_writer_open(const char *path, const struct pcap_writer_opts *opts,
                     struct pcap_writer **out, char *err, size_t errlen)
    __attribute__((warn_unused_result, nonnull(1, 2, 3)));

/* As pcap_writer_open, on a dup of FD (borrowed: the caller still closes FD, after
 * pcap_writer_close if it wants the data there first). NAME (borrowed, only for messages). */
int pcap_writer_open_fd(int fd, const char *name, const struct pcap_writer_opts *opts,
                        struct pcap_writer **out, char *err, size_t errlen)
    __attribute__((warn_unused_result, nonnull(2, 3, 4)));

/* As pcap_writer_open, writing through SINK(CTX, ...) (CTX borrowed: must outlive the writer)
 * with a buffer of BUFSIZE bytes (0 = 1 MiB), e.g. into a live stream's connection; call
 * pcap_writer_flush where the reader must see the packets. Returns 0 or -errno. */
int pcap_writer_open_sink(pcapng_sink_fn sink, void *ctx, size_t bufsize,
                          const struct pcap_writer_opts *opts, struct pcap_writer **out)
    __attribute__((warn_unused_result, nonnull(1, 4, 5)));

/* True if W writes pcapng, i.e. interfaces, directions, comments and secrets are kept. */
bool pcap_writer_is_pcapng(const struct pcap_writer *w) __attribute__((nonnull));

/* Declares an interface (pcapng IDB with the writer's link type and snaplen, nanosecond
 * timestamps; NAME and DESCRIPTION borrowed for the call, NULL allowed) and puts its number
 * into *INDEX for pcap_pkt_meta. Classic pcap: *INDEX = 0, nothing written. Returns 0 or
 * -errno. */
int pcap_writer_add_interface(struct pcap_writer *w, const char *name, const char *description,
                              uint32_t *index) __attribute__((warn_unused_result, nonnull(1, 4)));

/* Frames SEG (see pcap_frame_build) and appends it with timestamp SEC.NSEC (classic pcap
 * truncates to microseconds unless nanosecond) and META (may be NULL: interface 0, no
 * direction, no comment). Returns 0, -EINVAL for an unframeable SEG or an undeclared pcapng
 * interface, or once a write has failed -EIO (classic) or the write's -errno (pcapng). */
int pcap_writer_write(struct pcap_writer *w, int64_t sec, int32_t nsec, const struct pcap_seg *seg,
                      const struct pcap_pkt_meta *meta)
    __attribute__((warn_unused_result, nonnull(1, 4)));

/* Writes a pcapng Decryption Secrets Block of TYPE (PCAPNG_SECRETS_TLS_KEYLOG: NSS key-log
 * lines) with LEN bytes of DATA (borrowed for the call) at this point of the output: call it
 * before the first packet the secrets decrypt. Returns 0, -EOPNOTSUPP for classic pcap (which
 * has no place for secrets), or -errno. */
int pcap_writer_secrets(struct pcap_writer *w, uint32_t type, const void *data, size_t len)
    __attribute__((warn_unused_result, nonnull));

/* Hands everything written so far to the file or sink. Returns 0 or -EIO. */
int pcap_writer_flush(struct pcap_writer *w) __attribute__((warn_unused_result, nonnull));

/* Packets written so far. */
uint64_t pcap_writer_packets(const struct pcap_writer *w) __attribute__((nonnull));

/* Flushes and closes (stdout included) and frees W (NULL allowed: returns 0).
 * Returns 0, or -EIO if any write failed (disk full, closed pipe). */
int pcap_writer_close(struct pcap_writer *w);

#endif

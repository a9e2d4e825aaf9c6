/* The pcap file side of capture2pcap: libpcap's dumper (pcap_open_dead + pcap_dump_fopen) with
 * a large stdio buffer, microsecond or nanosecond timestamps, Ethernet or raw IP link type.
 * Files are created 0600 because the frames carry decrypted payloads, and "-" is stdout so the
 * output can be piped into `tshark -r -` or `wireshark -k -i -`. */
#ifndef SOCKTAP_PCAP_PCAP_WRITER_H
#define SOCKTAP_PCAP_PCAP_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pcap/pcap_frame.h"

struct pcap_writer_opts {
    bool ethernet;    /* LINKTYPE_ETHERNET, else LINKTYPE_RAW */
    bool nanosecond;  /* nanosecond-precision pcap (magic 0xa1b23c4d) */
    uint32_t snaplen; /* frames are cut to this many bytes; 0 = 262144 */
};

struct pcap_writer;

/* Opens PATH ("-" = stdout; else created/truncated with mode 0600) and writes the pcap file
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

/* Frames SEG (see pcap_frame_build) and appends it with timestamp SEC.NSEC (truncated to
 * microseconds unless nanosecond). Returns 0, -EINVAL for an unframeable SEG, or -EIO once a
 * write to the file has failed. */
int pcap_writer_write(struct pcap_writer *w, int64_t sec, int32_t nsec, const struct pcap_seg *seg)
    __attribute__((warn_unused_result, nonnull));

/* Packets written so far. */
uint64_t pcap_writer_packets(const struct pcap_writer *w) __attribute__((nonnull));

/* Flushes and closes (stdout included) and frees W (NULL allowed: returns 0).
 * Returns 0, or -EIO if any write failed (disk full, closed pipe). */
int pcap_writer_close(struct pcap_writer *w);

#endif

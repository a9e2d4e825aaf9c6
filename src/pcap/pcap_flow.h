/* Per-connection TCP state for capture2pcap: turns a trace's events into segments with
 * consistent sequence numbers. Each direction's sequence number starts at 0 and grows by its
 * payload; every segment acks the other direction's current number and carries ACK (Envoy's
 * converter framing). Reads travel remote -> local, writes local -> remote. Options add a
 * synthesized three-way handshake before the first event and FIN/ACK at end_stream or close,
 * and split payloads at an MSS (events larger than one IP packet are always split).
 *
 * Which side opened the connection is not in a trace; with --tcp-handshake we guess by port:
 * a port in the ephemeral range (>= 32768) against one below it is the client; below it both,
 * the higher port is the client; both ephemeral, the remote is (a listener's trace, the common
 * case). A wrong guess only flips who sends the SYN: sequence numbers and data stay exact.
 *
 * For pcapng a flow also carries its interface and a comment for its first packet
 * (pcap_flow_annotate); every segment is flagged inbound (remote -> local: what the proxy read)
 * or outbound (what it wrote). */
#ifndef SOCKTAP_PCAP_PCAP_FLOW_H
#define SOCKTAP_PCAP_PCAP_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pcap/pcap_frame.h"
#include "pcap/pcap_writer.h"
#include "trace/trace.h"

struct pcap_flow_opts {
    bool handshake; /* SYN, SYN-ACK, ACK first; FIN/ACK at end_stream and close */
    size_t mss;     /* max payload per segment; 0 = as much as one IP packet holds */
};

enum pcap_flow_dir { PCAP_FLOW_OUT = 0, PCAP_FLOW_IN = 1 }; /* local->remote, remote->local */

struct pcap_flow {
    struct pcap_endpoint local, remote;
    struct pcap_flow_opts opts;
    uint32_t seq[2]; /* next sequence number per pcap_flow_dir */
    bool opened;     /* handshake written (or not wanted and first segment written) */
    bool fin[2];     /* FIN sent per direction */
    /* a write ended with end_stream: its FIN goes out before the next event that is not more
     * data of the same half-close (Envoy marks every partial write of one) */
    bool fin_pending;
    bool closed; /* both FINs and the last ACK written */
    bool local_is_client;
    int64_t last_sec; /* timestamp of the latest event, for FINs at the end of input */
    int32_t last_nsec;
    uint32_t ifindex; /* pcap_writer interface of every segment */
    char *comment;    /* owned; goes on the first segment written, then freed */
};

/* Initializes F for CONN (read, not kept). Addresses that are absent or not IP literals
 * (pipes) become 127.0.0.1 (local) and 127.0.0.2 (remote) and *DEFAULTED (may be NULL) is set,
 * so the caller can warn once. Returns 0 (never fails today; the int keeps the contract). */
int pcap_flow_init(struct pcap_flow *f, const struct trace_conn *conn,
                   const struct pcap_flow_opts *opts, bool *defaulted)
    __attribute__((nonnull(1, 2, 3)));

/* Puts F's segments on interface IFINDEX (see pcap_writer_add_interface) and COMMENT (copied;
 * NULL = none) on its first segment. Call before the first event. Returns 0 or -ENOMEM. */
int pcap_flow_annotate(struct pcap_flow *f, uint32_t ifindex, const char *comment)
    __attribute__((warn_unused_result, nonnull(1)));

/* Frees what F holds (an unwritten comment); F may be re-initialized after. */
void pcap_flow_release(struct pcap_flow *f) __attribute__((nonnull));

/* Writes the segments for EV (a read, write or close) to W. EV->iov is read, not kept.
 * Returns 0 or the error of pcap_writer_write. */
int pcap_flow_event(struct pcap_flow *f, struct pcap_writer *w, const struct trace_event *ev)
    __attribute__((warn_unused_result, nonnull));

/* End of the flow's input: with handshake, FIN/ACK for each direction still open and the final
 * ACK, stamped with the last event's time; without, nothing. Idempotent. Returns 0 or the
 * error of pcap_writer_write. */
int pcap_flow_finish(struct pcap_flow *f, struct pcap_writer *w)
    __attribute__((warn_unused_result, nonnull));

#endif

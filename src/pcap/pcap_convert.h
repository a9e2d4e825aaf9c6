/* capture2pcap's engine: read the inputs with trace readers, merge their events by timestamp
 * (a binary heap over the open inputs, each holding exactly one pending event, so memory is one
 * event buffer per open input whatever the trace sizes), and feed each event to its
 * connection's pcap_flow. Inputs are opened when the merge reaches their first event and closed
 * when they end, so open files are bounded by the traces that overlap in time. With a pcapng
 * writer, each capture owner (trace path prefix) is an interface and each connection's first
 * packet names it in a comment. */
#ifndef SOCKTAP_PCAP_PCAP_CONVERT_H
#define SOCKTAP_PCAP_PCAP_CONVERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pcap/pcap_flow.h"
#include "pcap/pcap_writer.h"
#include "trace/trace_reader.h"

struct pcap_convert_opts {
    struct pcap_flow_opts flow;
    enum trace_in_format format;        /* forced for every input, or TRACE_IN_AUTO */
    enum trace_conn_fields conn_fields; /* forced for every input, or AUTO */
    bool allow_truncated;               /* a crash-cut input is a warning, not a failure */
    bool allow_unknown; /* skipped unknown fields with data are a warning, not a failure */
    /* pcapng: each input's `<input>.keylog` (the TLS wire capture's key log, docs/tls.md) is
     * embedded as a Decryption Secrets Block before the input's first packet, unless
     * no_secrets. KEYLOG (borrowed, NULL = none): an NSS key log embedded before every packet
     * (asked for explicitly, so no_secrets does not drop it). */
    bool no_secrets;
    const char *keylog;
};

struct pcap_convert_stats {
    uint64_t events, bytes, connections;
};

/* Converts the N inputs PATHS ("-" = stdin; borrowed) into W. Diagnostics go to ERR
 * (borrowed, e.g. stderr), one line each, prefixed "capture2pcap: " and naming the input and
 * the byte offset or line:col. A bad input stops that input only: everything it held before
 * the fault is still converted, and so are the other inputs. STATS may be NULL.
 * Returns 0 if everything converted, 1 if some input was missing, corrupt or truncated
 * (truncated is 0 with allow_truncated), or -errno if the output failed (-EIO) or memory ran
 * out. */
int pcap_convert(const char *const *paths, size_t n, struct pcap_writer *w,
                 const struct pcap_convert_opts *opts, FILE *err, struct pcap_convert_stats *stats)
    __attribute__((warn_unused_result, nonnull(1, 3, 4, 5)));

/* The capture owner of trace file PATH, i.e. its path_prefix: PATH without the extension
 * (.pb, .pb_text, .pb_length_delimited, .json, each maybe followed by .zst or .lz4),
 * socktap's collision suffix ".<n>" and the
 * "_<id>"; a name without "_<id>" is its own owner (PATH minus extension); "-" is "stdin".
 * Written into BUF (N bytes, truncated). Returns the owner's length, as snprintf. */
size_t pcap_convert_owner(const char *path, char *buf, size_t n) __attribute__((nonnull));

#endif

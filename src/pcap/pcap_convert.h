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
#include "pcap/pcap_input.h"
#include "pcap/pcap_writer.h"
#include "trace/trace_reader.h"

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

#endif

/* capture2pcap --follow: converts traces while they are being written, until interrupted.
 *
 * Inputs are files, directories (every trace file in them: .pb, .pb_text, .pb_length_delimited,
 * .json) and globs whose last path component has wildcards (e.g. "/var/tmp/socktap/ingress_*");
 * what exists is converted first, then events as they are appended and trace files as they
 * appear (inotify on each input's directory). A trace is forgotten (its reader, flows and
 * descriptor freed) once it is finished: its writer closed it (IN_CLOSE_WRITE), or its v3
 * `closed` event was read. Memory is therefore bounded by the traces open at the same time,
 * not by how long the follower runs.
 *
 * Events are written in arrival order, one connection's in trace order; across traces the
 * output may go slightly back in time (two connections appending in the same moment). Every
 * event's packets are flushed at once, so a Wireshark reading the pipe shows them at once. */
#ifndef SOCKTAP_PCAP_PCAP_FOLLOW_H
#define SOCKTAP_PCAP_PCAP_FOLLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pcap/pcap_input.h"
#include "pcap/pcap_writer.h"

struct pcap_follow_opts {
    struct pcap_convert_opts conv;
    /* traces followed at once (each holds a descriptor); more wait, in arrival order, for one
     * to finish (they are on disk: nothing is lost, only delayed; counted and reported).
     * 0 = the descriptor limit minus a reserve */
    size_t max_open;
    int out_fd; /* the output's descriptor, watched for a reader that went away; -1 = none */
    const char *out_name; /* for messages (borrowed; NULL = "output") */
};

struct pcap_follow_stats {
    uint64_t events, bytes, connections;
    uint64_t traces;   /* trace files opened */
    uint64_t finished; /* of those, finished and forgotten */
    uint64_t waited;   /* traces that had to wait for a descriptor (max_open reached) */
    uint64_t errors;   /* inputs skipped for an error (corrupt, vanished, unreadable...) */
    bool output_gone;  /* the output's reader went away (EPIPE): the run ended there */
};

/* Follows the N inputs SPECS (borrowed; "-" is refused: stdin cannot be followed) into W
 * until SIGINT, SIGTERM or SIGHUP (blocked for the duration and taken through a signalfd),
 * or until the output's reader goes away. Diagnostics go to ERR, one line each, naming the
 * file (and byte offset); a bad trace stops only itself. STATS (may be NULL) is filled.
 * Returns 0 (stopped, everything converted), 1 (some input was skipped: see ERR), -EPIPE (the
 * output's reader went away; STATS->errors says whether inputs were bad), or -errno (output
 * or memory failure, setup failure such as inotify being unavailable; -EINVAL for a usage
 * error), every failure but -EPIPE already reported on ERR. */
int pcap_follow(const char *const *specs, size_t n, struct pcap_writer *w,
                const struct pcap_follow_opts *opts, FILE *err, struct pcap_follow_stats *stats)
    __attribute__((warn_unused_result, nonnull(1, 3, 4, 5)));

#endif

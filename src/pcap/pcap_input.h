/* One trace input of capture2pcap and what it carries into the output: its reader, one
 * pcap_flow per connection in it (v3 streamed files can hold several trace_ids), its pcapng
 * interface (the capture owner: the trace's path prefix) and the TLS secrets beside it. Shared
 * by the merge of finished traces (pcap_convert.c) and the live follower (pcap_follow.c), so
 * a connection is framed and annotated the same way in both. */
#ifndef SOCKTAP_PCAP_PCAP_INPUT_H
#define SOCKTAP_PCAP_PCAP_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "pcap/pcap_flow.h"
#include "pcap/pcap_writer.h"
#include "trace/trace_reader.h"

#define PCAP_NOTE_MAX 8192

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

struct pcap_conn_flow {
    struct trace_conn conn;
    struct pcap_flow flow;
};

struct pcap_input {
    const char *path; /* borrowed from whoever owns the input list */
    size_t index;
    uint32_t ifindex;  /* pcapng interface of the input's capture owner */
    int64_t first_sec; /* first event's time, from the first pass */
    int32_t first_nsec;
    struct trace_reader *reader; /* NULL while closed */
    struct trace_event ev;
    struct pcap_conn_flow *cur; /* flow of the pending event */
    struct pcap_conn_flow *flows;
    size_t nflows, capflows;
    /* Rotated traces (socktap_limits rotate_bytes/rotate_seconds): the input holding the next
     * piece of this input's first connection (same id and addresses, same capture owner), or
     * NULL. At this input's end that connection's flow is passed on to it instead of being
     * finished, so the pieces make one TCP flow. Set by the merge (pcap_convert.c). */
    struct pcap_input *next_piece;
    struct trace_conn first_conn; /* valid when has_first_conn */
    bool has_first_conn;
};

/* The capture owners seen so far, one pcapng interface each. */
struct pcap_owner {
    char *prefix; /* owned */
    uint32_t ifindex;
};

struct pcap_owners {
    struct pcap_owner *v;
    size_t n, cap;
};

/* True when A and B are the same connection: id and both addresses. */
bool pcap_conn_same(const struct trace_conn *a, const struct trace_conn *b)
    __attribute__((nonnull));

/* Finds or creates the flow of CONN (NULL: a connection with nothing known) in IN; a new flow
 * gets IN's interface and, in pcapng, a comment naming the connection and IN's trace on its
 * first packet. A connection without addresses is reported on ERR. Returns the flow (owned by
 * IN, valid until the next call) or NULL when out of memory. */
struct pcap_conn_flow *pcap_input_flow(struct pcap_input *in, const struct trace_conn *conn,
                                       struct pcap_writer *w, const struct pcap_convert_opts *opts,
                                       FILE *err) __attribute__((nonnull(1, 3, 4, 5)));

/* The end of IN's reader: RC is what trace_reader_next returned last (0, or an error, reported
 * on ERR naming the file and offset, and setting *BAD unless opts accept it), unknown fields
 * are reported as the tools' rule says, and every flow is finished (FINs with handshake).
 * Returns 0 or the writer's -errno. */
int pcap_input_end(struct pcap_input *in, int rc, struct pcap_writer *w,
                   const struct pcap_convert_opts *opts, FILE *err, bool *bad)
    __attribute__((warn_unused_result, nonnull));

/* Frees IN's reader (closing its file); the flows stay. */
void pcap_input_close(struct pcap_input *in) __attribute__((nonnull));

/* Frees the reader and the flows; IN may be reused (zeroed) after. */
void pcap_input_free(struct pcap_input *in) __attribute__((nonnull));

bool pcap_is_stdin(const struct pcap_input *in) __attribute__((nonnull));

/* Embeds the NSS key log PATH as a Decryption Secrets Block. MISSING_OK: a missing file is
 * nothing to do. Returns 0, 1 (a file problem, reported to ERR) or -errno (output). */
int pcap_embed_keylog(const char *path, bool missing_ok, struct pcap_writer *w, FILE *err)
    __attribute__((nonnull));

/* The key log a TLS wire trace has beside it (`<path>.keylog`), embedded before IN's first
 * packet (pcapng; classic pcap warns once that it cannot). A bad key log sets *BAD. Returns 0
 * or -errno (output). */
int pcap_input_secrets(const struct pcap_input *in, struct pcap_writer *w,
                       const struct pcap_convert_opts *opts, FILE *err, bool *bad)
    __attribute__((nonnull));

/* The capture owner of trace file PATH, i.e. its path_prefix: PATH without the extension
 * (.pb, .pb_text, .pb_length_delimited, .json, each maybe followed by .zst or .lz4),
 * socktap's suffixes ".<n>" (collision, rotated piece; any number of them) and the
 * "_<id>"; a name without "_<id>" is its own owner (PATH minus extension); "-" is "stdin".
 * Written into BUF (N bytes, truncated). Returns the owner's length, as snprintf. */
size_t pcap_input_owner(const char *path, char *buf, size_t n) __attribute__((nonnull));

/* Sets IN's interface: the one of its owner in O, declared on W the first time it is seen.
 * Returns 0 or -errno. */
int pcap_input_interface(struct pcap_input *in, struct pcap_writer *w, struct pcap_owners *o)
    __attribute__((warn_unused_result, nonnull));

void pcap_owners_free(struct pcap_owners *o) __attribute__((nonnull));

#endif

/* Incremental trace readers: one struct trace_event at a time from any trace file socktap or
 * Envoy writes, in memory bounded by the largest single event (never the whole trace).
 *
 * Accepted inputs: v2alpha Trace (binary, text); v3 TraceWrapper buffered or streamed (binary
 * concatenated, length-delimited, text, JSON). The format is detected from the first bytes, the
 * file name's extension breaks ties, and opts.format forces it. A binary Trace/TraceWrapper is
 * streamed field by field at the top level (and inside socket_buffered_trace), so a 2 GiB trace
 * costs one event's buffer. Text and JSON are streamed the same way.
 *
 * Several readers may be open at once (capture2pcap merges inputs by timestamp): a reader has
 * no global state. Not thread-safe per reader.
 *
 * Errors: trace_reader_next() returns a negative errno and trace_reader_error() says where:
 *   -EBADMSG  corrupt input   ("corrupt at offset N: ..." for binary, "line L:C: ..." for text)
 *   -ENODATA  input ended in the middle of a message ("truncated at offset N"); every event
 *             before that point has been delivered, so callers may accept a crash-cut prefix
 *   -E2BIG    one event larger than opts.max_event
 *   -EIO etc. the read itself failed
 *   -EAGAIN   follow mode only (opts.follow): no whole event yet; not an error, see below
 * Once an error is returned the reader stays failed (next() returns the same error).
 *
 * Follow mode (capture2pcap --follow) reads a trace that is still being written: the end of
 * the bytes available so far, inside an event or between two, is -EAGAIN instead of the end
 * of input or -ENODATA, and the next call resumes at the start of the unfinished field once
 * more bytes exist. The bytes of that field stay in the reader's buffer (never fseek), so a
 * pipe or a non-blocking descriptor works as well as a file. Binary formats (v2 Trace, v3
 * concatenated and length-delimited) stream event by event; text and JSON cannot tell a
 * finished value from a growing one (a number, a string cut at a buffer end) and wait for
 * the end: trace_reader_follow_whole() says so, and their events come once
 * trace_reader_set_follow(r, false) says the writer is done.
 *
 * Unknown fields: a field the schema (Envoy's, see src/trace/proto) does not have is skipped, as
 * protobuf does, but also counted, in every format: a newer Envoy's data
 * is then never dropped without a word. Tools refuse a trace whose skipped fields carried data
 * unless told to accept it (trace_reader_report_unknown). */
#ifndef SOCKTAP_TRACE_TRACE_READER_H
#define SOCKTAP_TRACE_TRACE_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "trace/trace.h"

enum trace_in_format {
    TRACE_IN_AUTO = 0,
    TRACE_IN_V2_BINARY,           /* envoy.data.tap.v2alpha.Trace, .pb */
    TRACE_IN_V2_TEXT,             /* same, protobuf text, .pb_text */
    TRACE_IN_V3_BINARY,           /* concatenated TraceWrapper(s), .pb */
    TRACE_IN_V3_LENGTH_DELIMITED, /* varint-length-prefixed TraceWrappers, .pb_length_delimited */
    TRACE_IN_V3_TEXT,             /* TraceWrapper text (one or more), .pb_text */
    TRACE_IN_V3_JSON,             /* TraceWrapper JSON objects, .json */
};

/* Which field numbers envoy.data.tap.v3.Connection uses in a binary v3 trace. */
enum trace_conn_fields {
    TRACE_CONN_FIELDS_AUTO = 0, /* decide per Connection from the numbers present */
    TRACE_CONN_FIELDS_NEW,      /* local_address = 1, remote_address = 2 (Envoy since late 2023) */
    TRACE_CONN_FIELDS_OLD,      /* local_address = 2, remote_address = 3 (older Envoy) */
};

struct trace_reader_opts {
    enum trace_in_format format;        /* TRACE_IN_AUTO: detect */
    enum trace_conn_fields conn_fields; /* TRACE_CONN_FIELDS_AUTO: detect */
    size_t max_event;                   /* 0: TRACE_READER_DEFAULT_MAX_EVENT */
    /* Name used in error messages and as the extension hint; NULL allowed ("<input>").
     * Borrowed: must outlive the reader. */
    const char *name;
    /* Follow a growing input (see the top of the file). */
    bool follow;
};

#define TRACE_READER_DEFAULT_MAX_EVENT ((size_t)64 << 20)

/* One kind of unknown field a reader skipped (message and field name or number). */
struct trace_unknown {
    char where[112];    /* e.g. "envoy.data.tap.v3.SocketEvent field 9", "... field \"fooBar\"" */
    uint64_t count;     /* times seen */
    uint64_t with_data; /* of those, values that were not empty/zero */
    uint64_t bytes;     /* input bytes the skipped values took */
};

#define TRACE_UNKNOWN_KINDS 8

struct trace_unknown_tally {
    uint64_t fields, with_data, bytes; /* over all kinds, also those not kept below */
    size_t nkinds;                     /* the first TRACE_UNKNOWN_KINDS distinct kinds */
    struct trace_unknown kinds[TRACE_UNKNOWN_KINDS];
};

struct trace_reader;

/* Opens a reader on F (borrowed: not closed by trace_reader_free; F must outlive the reader
 * and nobody else may read from it meanwhile). OPTS may be NULL (all defaults). *OUT is owned
 * by the caller: trace_reader_free(). Returns 0, -ENOMEM or -EINVAL. Detection happens at the
 * first trace_reader_next(). */
int trace_reader_open_file(FILE *f, const struct trace_reader_opts *opts, struct trace_reader **out)
    __attribute__((warn_unused_result));

/* Opens PATH ("-" = stdin) and a reader on it; the reader owns and closes the file. If
 * opts->name is NULL the path is used as name. Returns 0 or -errno of fopen. */
int trace_reader_open_path(const char *path, const struct trace_reader_opts *opts,
                           struct trace_reader **out) __attribute__((warn_unused_result));

/* Reads the next event. Returns 1 with *EV filled (EV->iov points into the reader's buffer,
 * valid until the next call or free) and *CONN set to that event's connection (owned by the
 * reader, valid until trace_reader_free; a v3 input with several trace_ids yields a different
 * conn per trace, conn->id = trace_id); 0 at the clean end of input; a negative errno (see
 * above) on error. CONN may be NULL. An event seen before any connection gets a conn with
 * nothing present. */
int trace_reader_next(struct trace_reader *r, struct trace_event *ev,
                      const struct trace_conn **conn) __attribute__((warn_unused_result));

/* Ends (FOLLOW false) or resumes follow mode: once the writer has closed the input, its end
 * is the end again (0, or -ENODATA for a cut event). */
void trace_reader_set_follow(struct trace_reader *r, bool follow) __attribute__((nonnull));

/* Follow mode: true when R's format cannot be read before its writer is done (text, JSON), so
 * its events wait for trace_reader_set_follow(r, false). False until the format is known. */
bool trace_reader_follow_whole(const struct trace_reader *r) __attribute__((nonnull));

/* Human-readable description of the last error, naming the input, e.g.
 * "t.pb: corrupt at offset 1234: length 99999 beyond end of message". Never NULL; owned by
 * the reader. "" when there is no error. */
const char *trace_reader_error(const struct trace_reader *r);

/* The format in use (detected or forced); TRACE_IN_AUTO before the first next(). */
enum trace_in_format trace_reader_format(const struct trace_reader *r);

/* v3 buffered traces: whether Envoy marked reads/writes truncated (max_buffered_* reached). */
bool trace_reader_read_truncated(const struct trace_reader *r);
bool trace_reader_write_truncated(const struct trace_reader *r);

/* The tools' rule for unknown fields: if R skipped fields with data, writes to ERR one line
 * "PROG: error: NAME: skipped N unknown field(s) with data (B bytes): WHERE (xK), ..." (or
 * "warning" and "accepted by --allow-unknown" when ALLOW) and returns true when the caller
 * must fail (skipped data and !ALLOW). Unknown fields without data are mentioned only as a
 * count. PROG and ERR borrowed. */
bool trace_reader_report_unknown(const struct trace_reader *r, const char *prog, bool allow,
                                 FILE *err);

/* Makes the reader echo everything it parses to OUT as protobuf text (the same text protoc
 * --decode prints for the input's message), as it streams: socktap-trace dump. OUT borrowed;
 * NULL turns echo off. Call before the first next(). */
void trace_reader_set_echo(struct trace_reader *r, FILE *out);

/* Frees R and everything it owns (closes the file only if trace_reader_open_path opened it).
 * NULL allowed. */
void trace_reader_free(struct trace_reader *r);

/* Short name of a format ("v2-binary", "v3-text", ...), and the reverse for --format options
 * (also accepts "auto"). Returns -EINVAL for an unknown name. */
const char *trace_in_format_name(enum trace_in_format f);
int trace_in_format_parse(const char *name, enum trace_in_format *out);

#endif

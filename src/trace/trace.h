/* The neutral view of a trace that the capture socket, socktap-trace and capture2pcap share:
 * a connection (addresses as written in the file) and a sequence of events. Formats and
 * schemas (v2alpha Trace, v3 TraceWrapper; binary, length-delimited, text, JSON) are details
 * of trace_encode.h (writing) and trace_reader.h (reading). No libevent here: the tools link
 * this library without the proxy. */
#ifndef SOCKTAP_TRACE_TRACE_H
#define SOCKTAP_TRACE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum trace_schema {
    TRACE_SCHEMA_V2_CAPTURE, /* envoy.data.tap.v2alpha.Trace (envoy.transport_sockets.capture) */
    TRACE_SCHEMA_V3_TAP,     /* envoy.data.tap.v3.TraceWrapper (envoy.transport_sockets.tap) */
};

enum trace_format {
    TRACE_FMT_PROTO_BINARY,
    TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED,
    TRACE_FMT_PROTO_TEXT,
    TRACE_FMT_JSON_BODY_AS_BYTES,
    TRACE_FMT_JSON_BODY_AS_STRING,
};

enum trace_dir {
    TRACE_EV_READ,   /* bytes read from the peer (plaintext above TLS) */
    TRACE_EV_WRITE,  /* bytes written to the peer (before encryption) */
    TRACE_EV_CLOSED, /* v3 SocketEvent.closed */
};

struct trace_addr {
    bool present;
    char address[64]; /* textual IP as in the file: "127.0.0.1", "::1" */
    uint32_t port;
};

struct trace_conn {
    uint64_t id; /* v2 Connection.id / v3 trace_id */
    struct trace_addr local, remote;
};

struct trace_event {
    int64_t sec; /* wall clock, Unix epoch */
    int32_t nsec;
    enum trace_dir dir;
    /* Payload as a gather list (the capture socket points into evbuffer chains; readers give
     * one iov into their own buffer, valid until the next read call). */
    const struct iovec *iov;
    int iovcnt;
    size_t len; /* total bytes over iov */
    bool end_stream;
    bool truncated;   /* v3 Body.truncated */
    uint64_t seq_num; /* v3 SocketEvent.seq_num as read (Envoy's streamed traces); 0: none */
    /* trace_enc_event_split only (NULL elsewhere): the payload is not written; the encoder
     * stores here the offset in its output where the payload's bytes belong */
    size_t *payload_at;
};

/* The file extension Envoy uses for FORMAT (".pb", ".pb_text", ".pb_length_delimited", ".json").
 * V2 capture only knows PROTO_BINARY and PROTO_TEXT. */
const char *trace_format_extension(enum trace_format format);

#endif

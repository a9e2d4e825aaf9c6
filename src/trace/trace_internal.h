/* Internal helpers shared by the encoders, the generic text/JSON codecs and the readers:
 * protobuf varints, protobuf text escaping (C escapes + 3-digit octal, as protobuf's CEscape
 * and therefore Envoy), base64 and RFC 3339 timestamps. Not installed, not a contract. */
#ifndef SOCKTAP_TRACE_TRACE_INTERNAL_H
#define SOCKTAP_TRACE_TRACE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "trace/trace_encode.h"

static inline size_t tw_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes V at P (room for 10 bytes required); returns bytes written. */
static inline size_t tw_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Appends without checking capacity: callers reserve first. */
static inline void tw_raw(struct tbuf *b, const void *p, size_t n)
{
    if (n) {
        const uint8_t *s = p;
        for (size_t i = 0; i < n; i++)
            b->data[b->len + i] = s[i];
    }
    b->len += n;
}

/* Appends the protobuf text escaping of the bytes of IOV (no quotes). */
int tw_escape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Appends the JSON string body (no quotes) of raw bytes: ", \\ and controls escaped, other
 * bytes verbatim (round-trips non-UTF-8 data byte for byte). */
int tw_json_escape(struct tbuf *b, const uint8_t *p, size_t n);
int tw_json_escape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Appends the standard base64 (with padding) of the bytes of IOV. */
int tw_base64_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Decodes base64 (standard or URL-safe alphabet, padding optional) from S[0..N) into OUT
 * (room for 3*N/4+3). Returns decoded length or -1 when invalid; *BAD = index of first bad char. */
long tw_base64_decode(const char *s, size_t n, uint8_t *out, size_t *bad);
/* Appends a decimal number. */
int tw_u64(struct tbuf *b, uint64_t v);
int tw_i64(struct tbuf *b, int64_t v);
int tw_str(struct tbuf *b, const char *s);
int tw_indent(struct tbuf *b, int n);
/* Appends the RFC 3339 form protobuf's JSON mapping uses ("2018-05-01T20:41:33.216737962Z",
 * 0/3/6/9 fraction digits). */
int tw_rfc3339(struct tbuf *b, int64_t sec, int32_t nsec);
/* Parses the RFC 3339 form (any offset, any fraction digits up to 9). Returns 0 or -EINVAL. */
int tw_rfc3339_parse(const char *s, size_t n, int64_t *sec, int32_t *nsec);

#endif

/* pbfmt: the text forms protobuf's text format and JSON mapping give scalars, shared by the
 * encoders, the generic text/JSON codecs and the readers: text escaping (C escapes + 3-digit
 * octal, as protobuf's CEscape and therefore Envoy), JSON string escaping, base64 and RFC 3339
 * timestamps, each way. Internal to st_trace, not a contract. */
#ifndef SOCKTAP_TRACE_PBFMT_H
#define SOCKTAP_TRACE_PBFMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "trace/tbuf.h"

/* Appends the protobuf text escaping of the bytes of IOV (no quotes). */
int pbfmt_cescape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Appends the JSON string body (no quotes) of raw bytes: ", \\ and controls escaped, other
 * bytes verbatim (round-trips non-UTF-8 data byte for byte). */
int pbfmt_json_escape(struct tbuf *b, const uint8_t *p, size_t n);
int pbfmt_json_escape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Appends the standard base64 (with padding) of the bytes of IOV. */
int pbfmt_base64_iov(struct tbuf *b, const struct iovec *iov, int iovcnt);
/* Decodes base64 (standard or URL-safe alphabet, padding optional) from S[0..N) into OUT
 * (room for 3*N/4+3). Returns decoded length or -1 when invalid; *BAD = index of first bad char. */
long pbfmt_base64_decode(const char *s, size_t n, uint8_t *out, size_t *bad);
/* Appends the RFC 3339 form protobuf's JSON mapping uses ("2018-05-01T20:41:33.216737962Z",
 * 0/3/6/9 fraction digits). */
int pbfmt_rfc3339(struct tbuf *b, int64_t sec, int32_t nsec);
/* Parses the RFC 3339 form (any offset, any fraction digits up to 9). Returns 0 or -EINVAL. */
int pbfmt_rfc3339_parse(const char *s, size_t n, int64_t *sec, int32_t *nsec);

#endif

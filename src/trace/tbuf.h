/* tbuf: the growable byte buffer the encoders, codecs and readers append to, and the small
 * appenders (decimal numbers, strings, indentation) every text form needs. The caller owns the
 * buffer and drains it (len = 0) after each write to disk. */
#ifndef SOCKTAP_TRACE_TBUF_H
#define SOCKTAP_TRACE_TBUF_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer the encoders append to; the caller owns and drains it. */
struct tbuf {
    uint8_t *data;
    size_t len, cap;
};
/* Ensures room for N more bytes. Returns 0 or -ENOMEM. */
int tbuf_reserve(struct tbuf *b, size_t n);
int tbuf_append(struct tbuf *b, const void *p, size_t n);
void tbuf_free(struct tbuf *b);

/* Appends without checking capacity: callers reserve first. */
static inline void tbuf_raw(struct tbuf *b, const void *p, size_t n)
{
    if (n) {
        const uint8_t *s = p;
        for (size_t i = 0; i < n; i++)
            b->data[b->len + i] = s[i];
    }
    b->len += n;
}

/* Appends a decimal number. */
int tbuf_u64(struct tbuf *b, uint64_t v);
int tbuf_i64(struct tbuf *b, int64_t v);
int tbuf_str(struct tbuf *b, const char *s);
int tbuf_indent(struct tbuf *b, int n);
#endif

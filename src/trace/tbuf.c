/* tbuf: the encoders' append buffer. Grows geometrically so appending N events costs O(N)
 * amortized; the owner drains it (len = 0) after each write to disk, so it stays the size of
 * one flush, not of the trace. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trace/tbuf.h"

int tbuf_reserve(struct tbuf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    if (n > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int tbuf_append(struct tbuf *b, const void *p, size_t n)
{
    int rc = tbuf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void tbuf_free(struct tbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int tbuf_u64(struct tbuf *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int rc = tbuf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    while (n)
        b->data[b->len++] = (uint8_t)tmp[--n];
    return 0;
}

int tbuf_i64(struct tbuf *b, int64_t v)
{
    if (v < 0) {
        int rc = tbuf_append(b, "-", 1);
        if (rc)
            return rc;
        return tbuf_u64(b, (uint64_t)0 - (uint64_t)v);
    }
    return tbuf_u64(b, (uint64_t)v);
}

int tbuf_str(struct tbuf *b, const char *s)
{
    return tbuf_append(b, s, strlen(s));
}

int tbuf_indent(struct tbuf *b, int n)
{
    if (n <= 0)
        return 0;
    int rc = tbuf_reserve(b, (size_t)n);
    if (rc)
        return rc;
    memset(b->data + b->len, ' ', (size_t)n);
    b->len += (size_t)n;
    return 0;
}

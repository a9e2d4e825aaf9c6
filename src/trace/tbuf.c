/* tbuf: the encoders' append buffer. Grows geometrically so appending N events costs O(N)
 * amortized; the owner drains it (len = 0) after each write to disk, so it stays the size of
 * one flush, not of the trace. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trace/trace_encode.h"

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

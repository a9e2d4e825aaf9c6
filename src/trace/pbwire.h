/* pbwire: protobuf wire-format varints, for the encoders (length, put) and the readers (get).
 * Header-only: they sit in the innermost loops of both. */
#ifndef SOCKTAP_TRACE_PBWIRE_H
#define SOCKTAP_TRACE_PBWIRE_H

#include <stddef.h>
#include <stdint.h>

static inline size_t pbwire_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes V at P (room for 10 bytes required); returns bytes written. */
static inline size_t pbwire_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Reads a varint from P[0..N) into *V. Returns the bytes it took, or 0 when P ends inside it or
 * it is longer than 10 bytes (*V untouched then). */
static inline size_t pbwire_varint_get(const uint8_t *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    for (size_t i = 0; i < n && i < 10; i++) {
        x |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *v = x;
            return i + 1;
        }
    }
    return 0;
}

#endif

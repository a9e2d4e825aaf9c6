/* libFuzzer driver for the tls_inspector's ClientHello parser (src/core/tls_hello.c): the bytes
 * a client sends first, as the inspector peeks them.
 * Checks beyond sanitizers, the properties the inspector's wakeups rely on:
 * - NEED_MORE always asks for more than it got and never more than the bound (else a socket's
 *   SO_RCVLOWAT would never fire, or fire for nothing);
 * - when the whole input is a ClientHello (DONE), every prefix is NEED_MORE asking for no more
 *   than the input (the inspector never waits for bytes that a complete hello does not need)
 *   or already DONE, and the SNI/ALPN found are the same with any bytes appended after;
 * - strings come back NUL-terminated and within their arrays. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/tls_hello.h"

#define BOUND 16384

static void check(const uint8_t *data, size_t size, size_t max, struct tls_hello *h)
{
    tls_hello_parse(data, size, max, h);
    if (h->state == TLS_HELLO_NEED_MORE && (h->need <= size || h->need > max))
        abort();
    if (strnlen(h->sni, sizeof(h->sni)) == sizeof(h->sni) || h->nalpn > TLS_HELLO_MAX_ALPN)
        abort();
    for (size_t i = 0; i < h->nalpn; i++)
        if (!h->alpn[i][0] || strnlen(h->alpn[i], sizeof(h->alpn[i])) == sizeof(h->alpn[i]))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tls_hello full, part;
    if (size > 2 * BOUND)
        return 0;
    check(data, size, 256, &part);
    check(data, size, BOUND, &full);
    if (full.state != TLS_HELLO_DONE)
        return 0;
    size_t step = size / 64 + 1;
    for (size_t k = 0; k < size; k += step) {
        check(data, k, BOUND, &part);
        if (part.state == TLS_HELLO_DONE)
            continue;
        if (part.state != TLS_HELLO_NEED_MORE || part.need > size)
            abort();
    }
    uint8_t *more = malloc(size + 7);
    if (!more)
        return 0;
    memcpy(more, data, size);
    memcpy(more + size, "\x17\x03\x03\x00\x02hi", 7);
    check(more, size + 7, BOUND, &part);
    free(more);
    if (part.state != TLS_HELLO_DONE || strcmp(part.sni, full.sni) || part.nalpn != full.nalpn)
        abort();
    for (size_t i = 0; i < full.nalpn; i++)
        if (strcmp(part.alpn[i], full.alpn[i]))
            abort();
    return 0;
}

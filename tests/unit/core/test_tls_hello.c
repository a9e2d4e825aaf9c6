/* tls_hello_parse: a ClientHello built by hand (RFC 8446 4.1.2, RFC 6066 3, RFC 7301), whole,
 * cut, split over two records, too large, and bytes that are not TLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/tls_hello.h"

static size_t put16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return 2;
}

/* A handshake message (type 1 + 3-byte length + body) with SNI NAME and ALPN h2, http/1.1. */
static size_t hello_msg(uint8_t *m, const char *name)
{
    uint8_t *p = m + 4;
    p += put16(p, 0x0303);
    memset(p, 7, 32), p += 32; /* random */
    *p++ = 0;                  /* session id */
    p += put16(p, 2), p += put16(p, 0x1301);
    *p++ = 1, *p++ = 0; /* compression: null */
    uint8_t *ext_len = p;
    p += 2;
    size_t nl = strlen(name);
    p += put16(p, 0), p += put16(p, nl + 5), p += put16(p, nl + 3);
    *p++ = 0, p += put16(p, nl);
    memcpy(p, name, nl), p += nl;
    static const uint8_t alpn[] = {0, 16,  0,   14,  0,   12,  2,   'h', '2',
                                   8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    memcpy(p, alpn, sizeof(alpn)), p += sizeof(alpn);
    put16(ext_len, (size_t)(p - ext_len - 2));
    size_t body = (size_t)(p - m - 4);
    m[0] = 1, m[1] = 0, m[2] = (uint8_t)(body >> 8), m[3] = (uint8_t)body;
    return (size_t)(p - m);
}

static size_t record(uint8_t *r, const uint8_t *payload, size_t n)
{
    r[0] = 22, r[1] = 3, r[2] = 1;
    put16(r + 3, n);
    memcpy(r + 5, payload, n);
    return n + 5;
}

static void test_whole_and_prefixes(void **state)
{
    (void)state;
    uint8_t m[512], wire[600];
    struct tls_hello h;
    size_t n = record(wire, m, hello_msg(m, "api.example.com"));
    tls_hello_parse(wire, n, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_DONE);
    assert_string_equal(h.sni, "api.example.com");
    assert_int_equal(h.nalpn, 2);
    assert_string_equal(h.alpn[0], "h2");
    assert_string_equal(h.alpn[1], "http/1.1");
    /* a prefix asks for exactly what completes it: the record header, then the record */
    tls_hello_parse(wire, 3, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_NEED_MORE);
    assert_int_equal(h.need, 5);
    tls_hello_parse(wire, 20, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_NEED_MORE);
    assert_int_equal(h.need, n);
    /* the bound: a hello longer than it is too large, never "need more" */
    tls_hello_parse(wire, 20, n - 1, &h);
    assert_int_equal(h.state, TLS_HELLO_TOO_LARGE);
}

static void test_split_over_records(void **state)
{
    (void)state;
    uint8_t m[512], wire[600];
    struct tls_hello h;
    size_t mn = hello_msg(m, "b.example.com");
    size_t n = record(wire, m, 10);
    size_t first = n;
    n += record(wire + n, m + 10, mn - 10);
    tls_hello_parse(wire, first, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_NEED_MORE);
    assert_int_equal(h.need, first + 5);
    tls_hello_parse(wire, n, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_DONE);
    assert_string_equal(h.sni, "b.example.com");
}

static void test_not_tls(void **state)
{
    (void)state;
    struct tls_hello h;
    tls_hello_parse((const uint8_t *)"G", 1, 16384, &h); /* judged on the first byte */
    assert_int_equal(h.state, TLS_HELLO_NOT_TLS);
    tls_hello_parse((const uint8_t *)"\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_NOT_TLS); /* a ServerHello is not a client's */
    tls_hello_parse((const uint8_t *)"", 0, 16384, &h);
    assert_int_equal(h.state, TLS_HELLO_NEED_MORE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_and_prefixes),
        cmocka_unit_test(test_split_over_records),
        cmocka_unit_test(test_not_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

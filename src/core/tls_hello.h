/* A bounded, allocation-free parser of a TLS ClientHello as it arrives on a socket (peeked by
 * the tls_inspector listener filter): says whether the bytes are TLS, how many more it needs,
 * and gives the SNI host name and the ALPN protocols. Untrusted input: fuzz/fuzz_tls_hello.c. */
#ifndef SOCKTAP_CORE_TLS_HELLO_H
#define SOCKTAP_CORE_TLS_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_HELLO_MAX_SNI  255 /* a DNS name is at most 253 bytes; a longer HostName is ignored */
#define TLS_HELLO_MAX_ALPN 8   /* protocols kept; more are ignored (counted in nalpn_seen) */
#define TLS_HELLO_ALPN_LEN 32  /* bytes kept per protocol ("h2", "http/1.1"); longer skipped */

enum tls_hello_state {
    TLS_HELLO_NEED_MORE, /* a prefix of a ClientHello: peek again once `need` bytes are there */
    TLS_HELLO_DONE,      /* a whole ClientHello: sni/alpn are filled */
    TLS_HELLO_NOT_TLS,   /* the bytes are not a TLS handshake record with a ClientHello */
    TLS_HELLO_TOO_LARGE, /* the ClientHello needs more than the given bound */
};

struct tls_hello {
    enum tls_hello_state state;
    size_t need;                     /* NEED_MORE: total bytes wanted before parsing again */
    char sni[TLS_HELLO_MAX_SNI + 1]; /* "" when absent */
    char alpn[TLS_HELLO_MAX_ALPN][TLS_HELLO_ALPN_LEN + 1];
    size_t nalpn;
    bool has_alpn; /* the extension was present (Envoy's alpn_found) */
};

/* Parses the first LEN bytes a client sent (BUF, read only during the call) into *OUT, never
 * reading past LEN, and never asking for more than MAX bytes in total (TOO_LARGE instead).
 * Any byte sequence is safe. */
void tls_hello_parse(const uint8_t *buf, size_t len, size_t max, struct tls_hello *out);

#endif

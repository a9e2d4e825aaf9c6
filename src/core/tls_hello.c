/* ClientHello parser for the tls_inspector listener filter.
 *
 * Envoy's tls_inspector (source/extensions/filters/listener/tls_inspector/tls_inspector.cc)
 * feeds the peeked bytes to a BoringSSL SSL object and reads the SNI and ALPN in its
 * select_certificate callback. Rejected here: the same through OpenSSL's ClientHello callback
 * (SSL_CTX_set_client_hello_cb) over a memory BIO: it needs an SSL object, a context and a BIO per
 * inspected connection, copies the bytes into the BIO on every peek, and OpenSSL would also
 * answer (a ServerHello into the BIO) or fail the handshake on what it does not like, where the
 * inspector only wants to look. A ClientHello's framing is small and fixed (RFC 8446 section
 * 4.1.2, RFC 6066 section 3 for server_name, RFC 7301 for ALPN), so it is parsed here with
 * bounds checks on every length, reassembling the handshake message across records the way a
 * TLS stack does (a ClientHello with large key shares may span two records).
 *
 * Like Envoy, only the record and handshake framing decide "TLS or not": a first byte other than
 * a handshake record (22), a record version whose major is not 3, or a first handshake message
 * that is not a ClientHello is not TLS. */
#include "core/tls_hello.h"

#include <string.h>

#define REC_HDR         5
#define HS_HDR          4
#define CT_HANDSHAKE    22
#define HS_CLIENT_HELLO 1
#define EXT_SNI         0
#define EXT_ALPN        16
#define MAX_RECORD      (16384 + 2048) /* TLSPlaintext length bound plus slack, RFC 8446 5.1 */

struct rd {
    const uint8_t *p;
    size_t n;
};

static bool rd_u8(struct rd *r, unsigned *v)
{
    if (r->n < 1)
        return false;
    *v = r->p[0];
    r->p++, r->n--;
    return true;
}

static bool rd_u16(struct rd *r, unsigned *v)
{
    if (r->n < 2)
        return false;
    *v = (unsigned)r->p[0] << 8 | r->p[1];
    r->p += 2, r->n -= 2;
    return true;
}

/* A sub-reader of LEN bytes taken from R. */
static bool rd_sub(struct rd *r, size_t len, struct rd *sub)
{
    if (r->n < len)
        return false;
    sub->p = r->p;
    sub->n = len;
    r->p += len, r->n -= len;
    return true;
}

static bool rd_vec16(struct rd *r, struct rd *sub)
{
    unsigned len;
    return rd_u16(r, &len) && rd_sub(r, len, sub);
}

static void parse_sni(struct rd e, struct tls_hello *out)
{
    struct rd list;
    if (!rd_vec16(&e, &list))
        return;
    while (list.n) {
        unsigned type;
        struct rd name;
        if (!rd_u8(&list, &type) || !rd_vec16(&list, &name))
            return;
        if (type != 0 || !name.n || name.n > TLS_HELLO_MAX_SNI || out->sni[0])
            continue;
        if (memchr(name.p, 0, name.n))
            continue; /* a NUL in a host name: not one we could match */
        memcpy(out->sni, name.p, name.n);
        out->sni[name.n] = 0;
    }
}

static void parse_alpn(struct rd e, struct tls_hello *out)
{
    struct rd list;
    out->has_alpn = true;
    if (!rd_vec16(&e, &list))
        return;
    while (list.n) {
        unsigned len;
        struct rd proto;
        if (!rd_u8(&list, &len) || !rd_sub(&list, len, &proto))
            return;
        if (!len || len > TLS_HELLO_ALPN_LEN || out->nalpn == TLS_HELLO_MAX_ALPN ||
            memchr(proto.p, 0, len))
            continue;
        memcpy(out->alpn[out->nalpn], proto.p, len);
        out->alpn[out->nalpn++][len] = 0;
    }
}

/* BODY is a whole ClientHello body. Malformed inside: still TLS (the handshake framing said
 * so), with what could be read; the TLS stack behind will refuse it. */
static void parse_body(struct rd body, struct tls_hello *out)
{
    struct rd skip, exts;
    unsigned v;
    if (!rd_u16(&body, &v) || !rd_sub(&body, 32, &skip) || !rd_u8(&body, &v) ||
        !rd_sub(&body, v, &skip) || !rd_vec16(&body, &skip) || !rd_u8(&body, &v) ||
        !rd_sub(&body, v, &skip) || !rd_vec16(&body, &exts))
        return;
    while (exts.n) {
        unsigned type;
        struct rd e;
        if (!rd_u16(&exts, &type) || !rd_vec16(&exts, &e))
            return;
        if (type == EXT_SNI)
            parse_sni(e, out);
        else if (type == EXT_ALPN && !out->has_alpn)
            parse_alpn(e, out);
    }
}

void tls_hello_parse(const uint8_t *buf, size_t len, size_t max, struct tls_hello *out)
{
    /* the handshake message, reassembled from the records' payloads */
    uint8_t msg[MAX_RECORD];
    size_t mlen = 0, off = 0, want = 0;

    memset(out, 0, sizeof(*out));
    if (max > sizeof(msg))
        max = sizeof(msg);
    for (;;) {
        if (len - off < REC_HDR) {
            /* judge a short first record by what is there: a client that sends "G" of "GET"
             * and waits is not TLS, and need not wait for the timeout to say so */
            if (off == 0 && len >= 1 && buf[0] != CT_HANDSHAKE)
                goto not_tls;
            if (off == 0 && len >= 2 && buf[1] != 3)
                goto not_tls;
            out->need = off + REC_HDR;
            goto need_more;
        }
        const uint8_t *h = buf + off;
        size_t rlen = (size_t)h[3] << 8 | h[4];
        if (h[0] != CT_HANDSHAKE || h[1] != 3 || rlen == 0 || rlen > MAX_RECORD)
            goto not_tls;
        size_t before = mlen;
        size_t avail = len - off - REC_HDR < rlen ? len - off - REC_HDR : rlen;
        if (mlen + avail > sizeof(msg))
            goto too_large;
        memcpy(msg + mlen, h + REC_HDR, avail);
        mlen += avail;
        if (!want && mlen >= HS_HDR) {
            if (msg[0] != HS_CLIENT_HELLO)
                goto not_tls;
            want = HS_HDR + ((size_t)msg[1] << 16 | (size_t)msg[2] << 8 | msg[3]);
            if (REC_HDR + want > max)
                goto too_large;
        }
        if (want && mlen >= want) {
            struct rd body = {msg + HS_HDR, want - HS_HDR};
            out->state = TLS_HELLO_DONE;
            parse_body(body, out);
            return;
        }
        if (avail < rlen) {
            size_t missing = (want ? want : HS_HDR) - before;
            out->need = off + REC_HDR + (missing < rlen ? missing : rlen);
            goto need_more;
        }
        off += REC_HDR + rlen;
    }
need_more:
    if (out->need > max)
        goto too_large;
    out->state = TLS_HELLO_NEED_MORE;
    return;
too_large:
    out->state = TLS_HELLO_TOO_LARGE;
    return;
not_tls:
    out->state = TLS_HELLO_NOT_TLS;
}

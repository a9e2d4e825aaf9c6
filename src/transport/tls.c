/* tls.c: one SSL per connection, driven directly over the non-blocking fd.
 *
 * Design: the socket is a small state machine (handshaking -> open -> closed) whose every
 * entry point (do_read, do_write) first advances whatever is pending: the handshake, a blocked
 * record, a close_notify the relay asked for. OpenSSL decides what it needs next and we keep
 * that in want_write, so the connection polls EV_WRITE only when writability can unblock us.
 *
 * I/O goes through a BIO of our own rather than SSL_set_fd: it uses send(MSG_NOSIGNAL), so a
 * peer that resets mid-write costs an -EPIPE, never a SIGPIPE, and it remembers errno for us
 * (OpenSSL may clobber it while building its error queue). read_ahead is on: one recv(2)
 * brings whole records (without it every record costs a 5-byte header read and a body read),
 * and a short recv tells us the socket is drained, so do_read stops without the extra recv
 * that would only return EAGAIN (measured: -2 syscalls per small request and response).
 * With read_ahead, OpenSSL's buffer may hold a partial record, which SSL_has_pending()
 * reports too; has_pending() therefore says false after a read that ended wanting more bytes
 * (the fd announces them), so the relay never re-runs a read that cannot progress.
 *
 * A bare TCP FIN counts as end of stream (SSL_OP_IGNORE_UNEXPECTED_EOF): many HTTP peers close
 * without close_notify, and a proxy should relay the half-close rather than turn it into an
 * error. Truncation attacks are the application's concern, exactly as with raw TCP. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "transport/raw.h"
#include "transport/tls.h"

/* Records are at most 16 KiB of plaintext; writing one full record per SSL_write keeps the
 * record count (and the per-record overhead) minimal without copying more than a record. */
#define TLS_RECORD_MAX 16384

struct tls_socket {
    struct transport_socket base;
    const struct tls_config *cfg;
    SSL *ssl;
    int fd;
    int last_errno;       /* errno of the last failed send/recv, 0 if none */
    bool handshake_done;  /* application data may flow */
    bool want_write;      /* the last SSL call needs writability to progress */
    bool rx_drained;      /* the last recv(2) came back short: the socket had no more */
    bool rx_partial;      /* the last SSL_read wanted more bytes than OpenSSL had */
    bool shutdown_wanted; /* the relay ended our write half */
    bool shutdown_sent;   /* close_notify is on the wire (or failed: nothing more to send) */
    bool failed;          /* a fatal error happened; reason holds why */
    bool closed;          /* fd closed */
    bool read_eof;        /* close_notify (or FIN) seen: end of stream reported */
    int verify_fail;      /* enum tls_verify_fail: which check rejected the peer */
    int err;              /* -errno of the failure, 0 if none */
    char reason[256];
    void *wire; /* wire-capture recorder (tls_wire_get()), owned; NULL = none */
};

/* Below this much backlog room a read or write waits (blocked) rather than outrun the disk:
 * the same rule as the capture socket's, so a wire trace is never cut for speed. */
#define TLS_WIRE_MIN_ROOM (64u * 1024u)

static const struct tls_wire_ops *tls_wire;

void tls_wire_register(const struct tls_wire_ops *ops)
{
    tls_wire = ops;
}

const struct tls_wire_ops *tls_wire_get(void)
{
    return tls_wire;
}

static BIO_METHOD *tls_bio_method;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static int tls_ctx_idx = -1;
static int tls_ssl_idx = -1;

static int tls_bio_write(BIO *bio, const char *buf, int len)
{
    struct tls_socket *s = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do {
        n = send(s->fd, buf, (size_t)len, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
        if (s->wire && n > 0)
            tls_wire->rec_bytes(s->wire, false, buf, (size_t)n);
        return (int)n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_write(bio);
    else
        s->last_errno = errno;
    return -1;
}

static int tls_bio_read(BIO *bio, char *buf, int len)
{
    struct tls_socket *s = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    ssize_t n;
    do {
        n = recv(s->fd, buf, (size_t)len, 0);
    } while (n < 0 && errno == EINTR);
    if (n >= 0) {
        s->rx_drained = n < len;
        if (s->wire && n > 0)
            tls_wire->rec_bytes(s->wire, true, buf, (size_t)n);
        return (int)n;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        BIO_set_retry_read(bio);
    else
        s->last_errno = errno;
    return -1;
}

static long tls_bio_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    (void)bio;
    (void)num;
    (void)ptr;
    /* OpenSSL flushes after each flight; our writes are unbuffered, so flushing is a no-op. */
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int tls_bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

static void tls_init_once(void)
{
    tls_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "socktap");
    if (tls_bio_method) {
        BIO_meth_set_write(tls_bio_method, tls_bio_write);
        BIO_meth_set_read(tls_bio_method, tls_bio_read);
        BIO_meth_set_ctrl(tls_bio_method, tls_bio_ctrl);
        BIO_meth_set_create(tls_bio_method, tls_bio_create);
    }
    tls_ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    tls_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void tls_set_reason(struct tls_socket *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tls_set_reason(struct tls_socket *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->reason, sizeof(s->reason), fmt, ap);
    va_end(ap);
}

/* ---- verification ---- */

static bool tls_san_matches(const struct tls_san *m, const char *name, size_t len)
{
    size_t vlen = strlen(m->value);
    switch (m->how) {
    case TLS_SAN_EXACT:
        return len == vlen && memcmp(name, m->value, len) == 0;
    case TLS_SAN_PREFIX:
        return len >= vlen && memcmp(name, m->value, vlen) == 0;
    case TLS_SAN_SUFFIX:
        return len >= vlen && memcmp(name + len - vlen, m->value, vlen) == 0;
    case TLS_SAN_CONTAINS:
        return memmem(name, len, m->value, vlen) != NULL;
    }
    return false;
}

/* True if one of CERT's DNS/URI/email/IP subject alt names matches one of CFG's matchers.
 * IP addresses compare in their text form, as Envoy does. */
static bool tls_verify_san(const struct tls_config *cfg, X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool ok = false;
    for (int i = 0; names && !ok && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        char ipbuf[64];
        const char *str = NULL;
        size_t len = 0;
        if (gn->type == GEN_DNS || gn->type == GEN_URI || gn->type == GEN_EMAIL) {
            str = (const char *)ASN1_STRING_get0_data(gn->d.ia5);
            len = (size_t)ASN1_STRING_length(gn->d.ia5);
        } else if (gn->type == GEN_IPADD) {
            int iplen = ASN1_STRING_length(gn->d.ip);
            int af = iplen == 4 ? AF_INET : iplen == 16 ? AF_INET6 : AF_UNSPEC;
            if (af != AF_UNSPEC &&
                inet_ntop(af, ASN1_STRING_get0_data(gn->d.ip), ipbuf, sizeof(ipbuf))) {
                str = ipbuf;
                len = strlen(ipbuf);
            }
        }
        for (size_t j = 0; str && !ok && j < cfg->nsans; j++)
            ok = tls_san_matches(&cfg->sans[j], str, len);
    }
    GENERAL_NAMES_free(names);
    return ok;
}

/* Which check rejected the peer, so the failure is counted under the right stat once. */
enum tls_verify_fail { TLS_VF_NONE, TLS_VF_CHAIN, TLS_VF_SAN, TLS_VF_HASH };

static struct tls_socket *tls_socket_of(const SSL *ssl)
{
    return SSL_get_ex_data(ssl, tls_ssl_idx);
}

static struct tls_config *tls_config_of(const SSL *ssl)
{
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ctx_idx);
}

/* Chain errors fail only when a trusted CA was configured (Envoy: a validation context with
 * only pins checks the pins); SAN and hash pins are checked on the leaf. */
static int tls_verify_cb(int preverify_ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    const struct tls_config *cfg = ssl ? tls_config_of(ssl) : NULL;
    struct tls_socket *s = ssl ? tls_socket_of(ssl) : NULL;
    if (!cfg || !s)
        return preverify_ok;
    int depth = X509_STORE_CTX_get_error_depth(store);
    if (!preverify_ok) {
        int err = X509_STORE_CTX_get_error(store);
        if (cfg->has_ca) {
            s->verify_fail = TLS_VF_CHAIN;
            tls_set_reason(s, "certificate verify failed at depth %d: %s", depth,
                           X509_verify_cert_error_string(err));
            return 0;
        }
        X509_STORE_CTX_set_error(store, X509_V_OK);
    }
    if (depth > 0)
        return 1;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    if (!cert)
        return 0;
    if (cfg->nsans && !tls_verify_san(cfg, cert)) {
        s->verify_fail = TLS_VF_SAN;
        tls_set_reason(s, "peer certificate matches none of the %zu subject alt names", cfg->nsans);
        X509_STORE_CTX_set_error(store, X509_V_ERR_SUBJECT_ISSUER_MISMATCH);
        return 0;
    }
    if (cfg->nhashes) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0;
        bool ok = false;
        if (X509_digest(cert, EVP_sha256(), md, &mdlen) && mdlen == 32)
            for (size_t i = 0; !ok && i < cfg->nhashes; i++)
                ok = memcmp(md, cfg->hashes[i], 32) == 0;
        if (!ok) {
            s->verify_fail = TLS_VF_HASH;
            tls_set_reason(s, "peer certificate SHA-256 matches none of verify_certificate_hash");
            X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
            return 0;
        }
    }
    return 1;
}

static int tls_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                              const unsigned char *in, unsigned inlen, void *arg)
{
    const struct tls_config *cfg = arg;
    unsigned char *sel = NULL;
    (void)ssl;
    if (!cfg->alpn)
        return SSL_TLSEXT_ERR_NOACK;
    /* Server preference order, as Envoy; no overlap means no ALPN, not a failed handshake. */
    if (SSL_select_next_proto(&sel, outlen, cfg->alpn, (unsigned)cfg->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void tls_keylog_cb(const SSL *ssl, const char *line)
{
    const struct tls_config *cfg = tls_config_of(ssl);
    struct tls_socket *s = tls_socket_of(ssl);
    if (s && s->wire)
        tls_wire->rec_keylog(s->wire, line);
    char buf[1024];
    size_t n = strlen(line);
    if (!cfg || !cfg->keylog || n + 1 > sizeof(buf))
        return;
    memcpy(buf, line, n);
    buf[n++] = '\n';
    pthread_mutex_lock(&cfg->keylog->lock);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(cfg->keylog->fd, buf + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* a debugging aid: never let it hurt the connection */
        off += (size_t)w;
    }
    pthread_mutex_unlock(&cfg->keylog->lock);
}

/* Client side: keep the newest session of the cluster; every new connection offers it. */
static int tls_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tls_config *cfg = tls_config_of(ssl);
    if (!cfg)
        return 0;
    pthread_mutex_lock(&cfg->session_lock);
    SSL_SESSION *old = cfg->session;
    cfg->session = sess;
    pthread_mutex_unlock(&cfg->session_lock);
    SSL_SESSION_free(old);
    return 1; /* we keep the reference */
}

int tls_config_wrap(SSL_CTX *ssl_ctx, enum ts_side side, const char *owner, const char *sni,
                    struct tls_config **out)
{
    pthread_once(&tls_once, tls_init_once);
    if (!tls_bio_method || tls_ctx_idx < 0 || tls_ssl_idx < 0)
        goto err_free_ctx;
    struct tls_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        goto err_free_ctx;
    cfg->ssl_ctx = ssl_ctx;
    cfg->side = side;
    cfg->owner = strdup(owner ? owner : "tls");
    cfg->sni = sni ? strdup(sni) : NULL;
    if (!cfg->owner || (sni && !cfg->sni))
        goto err_free_cfg;
    pthread_mutex_init(&cfg->session_lock, NULL);
    SSL_CTX_set_ex_data(ssl_ctx, tls_ctx_idx, cfg);

    SSL_CTX_set_mode(ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF |
                                     SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_verify(ssl_ctx, SSL_CTX_get_verify_mode(ssl_ctx), tls_verify_cb);
    SSL_CTX_set_keylog_callback(ssl_ctx, tls_keylog_cb);
    if (side == TS_SIDE_UPSTREAM) {
        SSL_CTX_set_session_cache_mode(ssl_ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ssl_ctx, tls_new_session_cb);
    } else {
        static const unsigned char sid_ctx[] = "socktap";
        SSL_CTX_set_session_id_context(ssl_ctx, sid_ctx, sizeof(sid_ctx) - 1);
        SSL_CTX_set_alpn_select_cb(ssl_ctx, tls_alpn_select_cb, cfg);
    }

    const char *o = cfg->owner;
    cfg->st_handshake = stats_registerf(STAT_COUNTER, "%s.ssl.handshake", o);
    cfg->st_error =
        stats_registerf(STAT_COUNTER, "%s.ssl.%s", o,
                        side == TS_SIDE_DOWNSTREAM ? "handshake_error" : "connection_error");
    cfg->st_session_reused = stats_registerf(STAT_COUNTER, "%s.ssl.session_reused", o);
    cfg->st_fail_verify_san = stats_registerf(STAT_COUNTER, "%s.ssl.fail_verify_san", o);
    cfg->st_fail_verify_hash = stats_registerf(STAT_COUNTER, "%s.ssl.fail_verify_cert_hash", o);
    cfg->st_fail_verify_error = stats_registerf(STAT_COUNTER, "%s.ssl.fail_verify_error", o);
    cfg->st_fail_verify_no_cert = stats_registerf(STAT_COUNTER, "%s.ssl.fail_verify_no_cert", o);
    *out = cfg;
    return 0;

err_free_cfg:
    free(cfg->owner);
    free(cfg->sni);
    free(cfg);
err_free_ctx:
    SSL_CTX_free(ssl_ctx);
    return -ENOMEM;
}

int tls_config_set_keylog(struct tls_config *cfg, const char *path)
{
    struct tls_keylog *kl = calloc(1, sizeof(*kl));
    if (!kl)
        return -ENOMEM;
    /* Key material is as secret as the traffic: 0600 even if the file existed wider, and no
     * symlink games in shared directories. */
    kl->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (kl->fd < 0)
        goto err_free_keylog;
    if (fchmod(kl->fd, 0600) < 0)
        goto err_close_fd;
    pthread_mutex_init(&kl->lock, NULL);
    if (cfg->keylog) {
        close(cfg->keylog->fd);
        pthread_mutex_destroy(&cfg->keylog->lock);
        free(cfg->keylog);
    }
    cfg->keylog = kl;
    return 0;

err_close_fd : {
    int e = errno;
    close(kl->fd);
    errno = e;
}
err_free_keylog : {
    int e = errno;
    free(kl);
    return -e;
}
}

void tls_config_free(struct tls_config *cfg)
{
    if (!cfg)
        return;
    SSL_CTX_free(cfg->ssl_ctx);
    SSL_SESSION_free(cfg->session);
    pthread_mutex_destroy(&cfg->session_lock);
    if (cfg->keylog) {
        close(cfg->keylog->fd);
        pthread_mutex_destroy(&cfg->keylog->lock);
        free(cfg->keylog);
    }
    for (size_t i = 0; i < cfg->nsans; i++)
        free(cfg->sans[i].value);
    free(cfg->sans);
    free(cfg->hashes);
    free(cfg->alpn);
    free(cfg->sni);
    free(cfg->owner);
    if (cfg->wire_cfg && tls_wire)
        tls_wire->free_cfg(cfg->wire_cfg);
    free(cfg);
}

/* ---- the socket ---- */

static const char *tls_side_name(const struct tls_socket *s)
{
    return s->cfg->side == TS_SIDE_DOWNSTREAM ? "downstream" : "upstream";
}

/* Fills the reason (unless the verify callback already did) from OpenSSL's error queue or the
 * saved errno, counts the failure and returns the -errno for the result. */
static int tls_fail(struct tls_socket *s, int ssl_err, const char *op)
{
    int err = -EPROTO;
    bool counted = s->handshake_done;
    unsigned long e = ERR_peek_last_error();
    char ebuf[160] = "";
    if (e)
        ERR_error_string_n(e, ebuf, sizeof(ebuf));
    if (ssl_err == SSL_ERROR_SYSCALL && s->last_errno) {
        err = -s->last_errno;
        if (!s->reason[0])
            tls_set_reason(s, "%s: %s", op, strerror(s->last_errno));
    } else if (ssl_err == SSL_ERROR_ZERO_RETURN || ssl_err == SSL_ERROR_SYSCALL) {
        err = -ECONNABORTED;
        if (!s->reason[0])
            tls_set_reason(s, "%s: peer closed the connection", op);
    } else if (!s->reason[0]) {
        tls_set_reason(s, "%s: %s", op, ebuf[0] ? ebuf : "TLS protocol error");
    }
    if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        stats_inc(s->cfg->st_fail_verify_no_cert);
    switch (s->verify_fail) {
    case TLS_VF_CHAIN:
        stats_inc(s->cfg->st_fail_verify_error);
        break;
    case TLS_VF_SAN:
        stats_inc(s->cfg->st_fail_verify_san);
        break;
    case TLS_VF_HASH:
        stats_inc(s->cfg->st_fail_verify_hash);
        break;
    case TLS_VF_NONE:
        break;
    }
    /* A reset or an EOF after the handshake is the peer leaving, not a TLS failure. */
    if (!counted || ssl_err == SSL_ERROR_SSL)
        stats_inc(s->cfg->st_error);
    /* Listener failures are the clients' doing (scanners, plain HTTP): debug, counted;
     * cluster failures are ours to fix (CA, SAN): warn. */
    if (s->cfg->side == TS_SIDE_UPSTREAM)
        LOGW(s->base.conn_id, "tls %s: %s", tls_side_name(s), s->reason);
    else
        LOGD(s->base.conn_id, "tls %s: %s", tls_side_name(s), s->reason);
    s->failed = true;
    s->err = err;
    ERR_clear_error();
    return err;
}

/* True if E only means "try again": records whether writability (not input) unblocks us. */
static bool tls_would_block(struct tls_socket *s, int e)
{
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return false;
    s->want_write = e == SSL_ERROR_WANT_WRITE;
    return true;
}

static int tls_handshake(struct tls_socket *s)
{
    ERR_clear_error();
    s->last_errno = 0;
    int rc = SSL_do_handshake(s->ssl);
    if (rc == 1) {
        s->handshake_done = true;
        s->want_write = false;
        stats_inc(s->cfg->st_handshake);
        if (SSL_session_reused(s->ssl))
            stats_inc(s->cfg->st_session_reused);
        if (log_enabled(ST_LOG_DEBUG)) {
            const unsigned char *alpn = NULL;
            unsigned alpn_len = 0;
            SSL_get0_alpn_selected(s->ssl, &alpn, &alpn_len);
            LOGD(s->base.conn_id, "tls %s: handshake done: %s %s alpn=%.*s%s", tls_side_name(s),
                 SSL_get_version(s->ssl), SSL_get_cipher_name(s->ssl), (int)alpn_len,
                 alpn ? (const char *)alpn : "", SSL_session_reused(s->ssl) ? " resumed" : "");
        }
        return 0;
    }
    int e = SSL_get_error(s->ssl, rc);
    return tls_would_block(s, e) ? 0 : tls_fail(s, e, "handshake");
}

/* Sends close_notify once the relay ended our write half and everything before it is out;
 * then half-closes TCP too, for peers that read to EOF without looking at TLS alerts. */
static int tls_send_shutdown(struct tls_socket *s)
{
    if (s->shutdown_sent)
        return 0;
    ERR_clear_error();
    s->last_errno = 0;
    int rc = SSL_shutdown(s->ssl);
    if (rc >= 0) {
        s->shutdown_sent = true;
        s->want_write = false;
        (void)shutdown(s->fd, SHUT_WR);
        return 0;
    }
    int e = SSL_get_error(s->ssl, rc);
    return tls_would_block(s, e) ? 0 : tls_fail(s, e, "close_notify");
}

/* Advances what is pending regardless of the direction asked: handshake, then close_notify. */
static int tls_progress(struct tls_socket *s)
{
    if (!s->handshake_done) {
        int rc = tls_handshake(s);
        if (rc < 0 || !s->handshake_done)
            return rc;
    }
    if (s->shutdown_wanted && !s->shutdown_sent)
        return tls_send_shutdown(s);
    return 0;
}

static struct ts_io_result tls_result_close(struct tls_socket *s, size_t bytes)
{
    return (struct ts_io_result){
        .action = TS_CLOSE, .bytes = bytes, .err = s->err ? s->err : -EPIPE};
}

static int tls_on_connected(struct transport_socket *ts)
{
    struct tls_socket *s = (struct tls_socket *)ts;
    if (s->failed || s->closed)
        return s->err ? s->err : -EPIPE;
    if (s->wire)
        tls_wire->rec_open(s->wire);
    return tls_progress(s);
}

/* Common entry of do_read and do_write: advances what is pending (handshake, blocked record,
 * close_notify). Returns false when the caller must return *R as it is (closed, failed, or
 * still handshaking). */
static bool tls_enter(struct tls_socket *s, struct ts_io_result *r)
{
    if (s->failed || s->closed || tls_progress(s) < 0) {
        *r = tls_result_close(s, 0);
        return false;
    }
    return s->handshake_done;
}

/* True when the wire trace's backlog has less than TLS_WIRE_MIN_ROOM left (the calling
 * thread is then woken when the writer makes room). */
static bool tls_wire_low(const struct tls_socket *s)
{
    return s->wire && tls_wire->rec_room(s->wire, TLS_WIRE_MIN_ROOM) < TLS_WIRE_MIN_ROOM;
}

/* The wire trace's backlog is at its bound: wait (the relay retries) instead of moving bytes. */
static bool tls_wire_full(const struct tls_socket *s, struct ts_io_result *r)
{
    if (!tls_wire_low(s))
        return false;
    *r = (struct ts_io_result){.action = TS_KEEP_OPEN, .blocked = true};
    return true;
}

static struct ts_io_result tls_do_read(struct transport_socket *ts, struct evbuffer *into,
                                       size_t max)
{
    struct tls_socket *s = (struct tls_socket *)ts;
    struct ts_io_result r = {.action = TS_KEEP_OPEN};
    if (tls_wire_full(s, &r) || !tls_enter(s, &r))
        return r;
    if (s->read_eof) {
        r.end_stream = true;
        return r;
    }
    /* one record per turn, each recorded on the wire as it is read: stop while the wire trace
     * still has room for the next (a loop over a full socket would overrun its backlog bound,
     * and the trace would stop) */
    while (r.bytes < max && !(r.bytes > 0 && tls_wire_low(s))) {
        size_t want = max - r.bytes < TLS_RECORD_MAX ? max - r.bytes : TLS_RECORD_MAX;
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(into, (ev_ssize_t)want, &v, 1) < 1) {
            s->err = -ENOMEM;
            s->failed = true;
            tls_set_reason(s, "read: out of memory");
            return tls_result_close(s, r.bytes);
        }
        size_t n = 0;
        ERR_clear_error();
        s->last_errno = 0;
        s->rx_drained = false;
        s->rx_partial = false;
        int ok = SSL_read_ex(s->ssl, v.iov_base, v.iov_len < want ? v.iov_len : want, &n);
        v.iov_len = ok ? n : 0;
        evbuffer_commit_space(into, &v, 1);
        if (ok) {
            r.bytes += n;
            s->want_write = false;
            if (s->rx_drained && !SSL_has_pending(s->ssl))
                break; /* the socket is empty and so is OpenSSL: the fd will tell us */
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (tls_would_block(s, e)) {
            s->rx_partial = e == SSL_ERROR_WANT_READ;
            break;
        }
        if (e == SSL_ERROR_ZERO_RETURN) {
            s->read_eof = true;
            r.end_stream = true;
            break;
        }
        tls_fail(s, e, "read");
        return tls_result_close(s, r.bytes);
    }
    return r;
}

static struct ts_io_result tls_do_write(struct transport_socket *ts, struct evbuffer *from,
                                        bool end_stream)
{
    struct tls_socket *s = (struct tls_socket *)ts;
    struct ts_io_result r = {.action = TS_KEEP_OPEN};
    if (tls_wire_full(s, &r) || !tls_enter(s, &r))
        return r;
    size_t len;
    /* as in tls_do_read: no more records once the wire trace is low on room */
    while ((len = evbuffer_get_length(from)) > 0 && !(r.bytes > 0 && tls_wire_low(s))) {
        if (s->shutdown_sent) {
            s->failed = true;
            s->err = -EPIPE;
            tls_set_reason(s, "write after end of stream");
            return tls_result_close(s, r.bytes);
        }
        size_t n = len < TLS_RECORD_MAX ? len : TLS_RECORD_MAX;
        struct evbuffer_iovec v;
        if (evbuffer_peek(from, (ev_ssize_t)n, NULL, &v, 1) < 1)
            break;
        if (v.iov_len < n) {
            /* Small chains would become small records; one record's worth of copying is
             * cheaper than the per-record overhead on the wire and in the peer. */
            v.iov_base = evbuffer_pullup(from, (ev_ssize_t)n);
            if (!v.iov_base) {
                s->failed = true;
                s->err = -ENOMEM;
                tls_set_reason(s, "write: out of memory");
                return tls_result_close(s, r.bytes);
            }
        }
        size_t written = 0;
        ERR_clear_error();
        s->last_errno = 0;
        if (SSL_write_ex(s->ssl, v.iov_base, n, &written)) {
            evbuffer_drain(from, written);
            r.bytes += written;
            s->want_write = false;
            continue;
        }
        int e = SSL_get_error(s->ssl, 0);
        if (tls_would_block(s, e))
            break;
        tls_fail(s, e, "write");
        return tls_result_close(s, r.bytes);
    }
    if (end_stream && evbuffer_get_length(from) == 0) {
        s->shutdown_wanted = true;
        if (tls_send_shutdown(s) < 0)
            return tls_result_close(s, r.bytes);
    }
    return r;
}

static bool tls_has_pending(const struct transport_socket *ts)
{
    const struct tls_socket *s = (const struct tls_socket *)ts;
    return !s->failed && !s->closed && s->handshake_done && !s->read_eof && !s->rx_partial &&
           SSL_has_pending(s->ssl);
}

static bool tls_wants_write(const struct transport_socket *ts)
{
    const struct tls_socket *s = (const struct tls_socket *)ts;
    return !s->failed && !s->closed && s->want_write;
}

static bool tls_is_ready(const struct transport_socket *ts)
{
    return ((const struct tls_socket *)ts)->handshake_done;
}

static const char *tls_failure_reason(const struct transport_socket *ts)
{
    const struct tls_socket *s = (const struct tls_socket *)ts;
    return s->reason[0] ? s->reason : NULL;
}

static void tls_close(struct transport_socket *ts, enum ts_close_type how)
{
    struct tls_socket *s = (struct tls_socket *)ts;
    if (s->closed)
        return;
    s->closed = true;
    if (how != TS_CLOSE_RESET && s->handshake_done && !s->failed && !s->shutdown_sent) {
        /* Best effort, one try: a peer that cannot take one alert right now gets a FIN. */
        ERR_clear_error();
        (void)SSL_shutdown(s->ssl);
        ERR_clear_error();
    }
    raw_fd_close(s->fd, how);
    s->fd = -1;
}

static void tls_destroy(struct transport_socket *ts)
{
    struct tls_socket *s = (struct tls_socket *)ts;
    tls_close(ts, TS_CLOSE_NORMAL);
    if (s->wire)
        tls_wire->rec_free(s->wire); /* after the close: a close_notify is part of the wire */
    SSL_free(s->ssl);
    free(s);
}

static const struct transport_socket_ops tls_socket_ops = {
    .name = "tls",
    .on_connected = tls_on_connected,
    .do_read = tls_do_read,
    .do_write = tls_do_write,
    .has_pending = tls_has_pending,
    .wants_write = tls_wants_write,
    .is_ready = tls_is_ready,
    .failure_reason = tls_failure_reason,
    .close = tls_close,
    .destroy = tls_destroy,
};

int tls_socket_create(const struct tls_config *cfg, const struct ts_conn_info *info,
                      struct transport_socket **out)
{
    struct tls_socket *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->base.ops = &tls_socket_ops;
    s->base.conn_id = info->conn_id;
    s->cfg = cfg;
    s->fd = info->fd;
    s->ssl = SSL_new(cfg->ssl_ctx);
    if (s->ssl)
        SSL_set_read_ahead(s->ssl, 1);
    if (!s->ssl)
        goto err_free_socket;
    BIO *bio = BIO_new(tls_bio_method);
    if (!bio)
        goto err_free_ssl;
    BIO_set_data(bio, s);
    SSL_set_bio(s->ssl, bio, bio);
    SSL_set_ex_data(s->ssl, tls_ssl_idx, s);
    if (cfg->side == TS_SIDE_UPSTREAM) {
        SSL_set_connect_state(s->ssl);
        if (cfg->sni && !SSL_set_tlsext_host_name(s->ssl, cfg->sni))
            goto err_free_ssl;
        struct tls_config *mcfg = (struct tls_config *)cfg; /* only the session cache moves */
        pthread_mutex_lock(&mcfg->session_lock);
        if (mcfg->session && SSL_SESSION_is_resumable(mcfg->session))
            SSL_set_session(s->ssl, mcfg->session);
        pthread_mutex_unlock(&mcfg->session_lock);
    } else {
        SSL_set_accept_state(s->ssl);
    }
    if (cfg->wire_cfg && tls_wire && tls_wire->rec_new(cfg->wire_cfg, info, &s->wire))
        goto err_free_ssl;
    *out = &s->base;
    return 0;

err_free_ssl:
    SSL_free(s->ssl);
err_free_socket:
    free(s);
    ERR_clear_error();
    return -ENOMEM;
}

const char *tls_socket_alpn(const struct transport_socket *ts, size_t *len)
{
    const struct tls_socket *s = (const struct tls_socket *)ts;
    const unsigned char *p = NULL;
    unsigned n = 0;
    if (ts->ops != &tls_socket_ops)
        return NULL;
    SSL_get0_alpn_selected(s->ssl, &p, &n);
    *len = n;
    return n ? (const char *)p : NULL;
}

/* TLS socket unit tests: our socket on one end of a loopback TCP pair, a plain OpenSSL peer
 * (non-blocking, same thread) on the other, both pumped by one poll loop. Certificates are a
 * throwaway PKI made by gen_certs.sh in a temp dir. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "cfgtree/cfg_node.h"
#include "core/stats.h"
#include "transport/tls.h"

static char g_dir[256];

static const char *cert(const char *name)
{
    static char buf[8][512];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 512, "%s/%s", g_dir, name);
    return b;
}

static int setup_pki(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/socktap-tls-unit-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    snprintf(g_dir, sizeof(g_dir), "%s", tmpl);
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "sh %s %s", TLS_GEN_CERTS, g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown_pki(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void tcp_pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
    *a = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(*a, (struct sockaddr *)&sa, sizeof(sa)), 0);
    *b = accept(l, NULL, NULL);
    assert_true(*b >= 0);
    close(l);
    fcntl(*a, F_SETFL, O_NONBLOCK);
    fcntl(*b, F_SETFL, O_NONBLOCK);
}

/* Our side: a config made the way tls_config.c makes it, from YAML. */
static struct tls_config *parse_cfg(enum ts_side side, const char *yaml, struct cfg_err *err,
                                    int *rc)
{
    struct cfg_doc *doc = NULL;
    memset(err, 0, sizeof(*err));
    *rc = cfg_doc_load_string("tls.yaml", yaml, strlen(yaml), &doc, err);
    assert_int_equal(*rc, 0);
    struct ts_parse_ctx ctx = {.err = err, .doc = doc, .side = side, .owner_name = "t"};
    struct cfg_path root = CFG_PATH_KEY(NULL, "tls");
    void *out = NULL;
    *rc = tls_socket_factory.parse(&ctx, doc->root, &root, &out);
    cfg_doc_free(doc);
    return out;
}

static struct tls_config *must_parse(enum ts_side side, const char *fmt, ...)
{
    char yaml[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(yaml, sizeof(yaml), fmt, ap);
    va_end(ap);
    struct cfg_err err;
    int rc;
    struct tls_config *cfg = parse_cfg(side, yaml, &err, &rc);
    if (rc != 0)
        fail_msg("parse failed: %s", err.msg);
    return cfg;
}

static const char *parse_error(enum ts_side side, const char *fmt, ...)
{
    static struct cfg_err err;
    char yaml[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(yaml, sizeof(yaml), fmt, ap);
    va_end(ap);
    int rc;
    struct tls_config *cfg = parse_cfg(side, yaml, &err, &rc);
    assert_null(cfg);
    assert_int_equal(rc, -EINVAL);
    return err.msg;
}

static void freeze_stats(void)
{
    assert_int_equal(stats_freeze(0), 0);
}

static int64_t counter(const char *name)
{
    stat_id id;
    if (!stats_find(name, &id))
        fail_msg("no stat %s", name);
    return stats_get(id);
}

/* The peer: a plain OpenSSL endpoint. */
static SSL_CTX *peer_server_ctx(const char *crt, const char *key)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate_chain_file(c, crt), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM), 1);
    return c;
}

static SSL_CTX *peer_client_ctx(bool verify)
{
    SSL_CTX *c = SSL_CTX_new(TLS_client_method());
    if (verify) {
        assert_int_equal(SSL_CTX_load_verify_locations(c, cert("ca.pem"), NULL), 1);
        SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
    }
    return c;
}

struct rig {
    int ours_fd, peer_fd;
    struct transport_socket *ts;
    SSL *peer;
    bool peer_done;
    int peer_err; /* SSL_get_error of a failed peer handshake, 0 if none */
};

static void rig_start(struct rig *r, struct tls_config *cfg, SSL_CTX *peer_ctx)
{
    memset(r, 0, sizeof(*r));
    tcp_pair(&r->ours_fd, &r->peer_fd);
    struct ts_conn_info info = {.conn_id = 7, .fd = r->ours_fd};
    assert_int_equal(tls_socket_create(cfg, &info, &r->ts), 0);
    r->peer = SSL_new(peer_ctx);
    SSL_set_fd(r->peer, r->peer_fd);
    if (cfg->side == TS_SIDE_UPSTREAM)
        SSL_set_accept_state(r->peer);
    else
        SSL_set_connect_state(r->peer);
    assert_int_equal(ts_on_connected(r->ts), 0);
}

static void rig_wait(struct rig *r)
{
    struct pollfd p[2] = {{.fd = r->ours_fd, .events = POLLIN},
                          {.fd = r->peer_fd, .events = POLLIN}};
    if (ts_wants_write(r->ts))
        p[0].events |= POLLOUT;
    poll(p, 2, 20);
}

/* Runs both handshakes; returns the result of our last read (TS_CLOSE on failure). */
static struct ts_io_result rig_handshake(struct rig *r)
{
    struct evbuffer *buf = evbuffer_new();
    struct ts_io_result res = {0};
    for (int i = 0; i < 500; i++) {
        res = ts_do_read(r->ts, buf, 65536);
        if (!r->peer_done && !r->peer_err) {
            ERR_clear_error();
            int rc = SSL_do_handshake(r->peer);
            if (rc == 1)
                r->peer_done = true;
            else if (SSL_get_error(r->peer, rc) != SSL_ERROR_WANT_READ &&
                     SSL_get_error(r->peer, rc) != SSL_ERROR_WANT_WRITE)
                r->peer_err = SSL_get_error(r->peer, rc);
        }
        if (res.action == TS_CLOSE || (ts_is_ready(r->ts) && r->peer_done))
            break;
        if (r->peer_err && i > 20)
            break;
        rig_wait(r);
    }
    assert_int_equal(evbuffer_get_length(buf), 0);
    evbuffer_free(buf);
    return res;
}

static void rig_end(struct rig *r)
{
    ts_destroy(r->ts);
    SSL_free(r->peer);
    close(r->peer_fd);
}

/* Moves LEN bytes each way at once and checks them; exercises partial writes, WANT_WRITE
 * on both ends and has_pending. */
static void rig_exchange(struct rig *r, size_t len)
{
    unsigned char *up = malloc(len), *down = malloc(len), *got_peer = malloc(len);
    for (size_t i = 0; i < len; i++) {
        up[i] = (unsigned char)(i * 7 + 3);
        down[i] = (unsigned char)(i * 13 + 1);
    }
    struct evbuffer *out = evbuffer_new(), *in = evbuffer_new();
    evbuffer_add(out, up, len);
    size_t peer_sent = 0, peer_got = 0;
    for (int i = 0; i < 20000 && (evbuffer_get_length(in) < len || peer_got < len); i++) {
        struct ts_io_result w = ts_do_write(r->ts, out, false);
        assert_int_equal(w.action, TS_KEEP_OPEN);
        struct ts_io_result rd;
        do {
            rd = ts_do_read(r->ts, in, 65536);
            assert_int_equal(rd.action, TS_KEEP_OPEN);
        } while (ts_has_pending(r->ts));
        size_t n;
        while (peer_sent < len &&
               SSL_write_ex(r->peer, down + peer_sent,
                            len - peer_sent > 10000 ? 10000 : len - peer_sent, &n))
            peer_sent += n;
        while (peer_got < len && SSL_read_ex(r->peer, got_peer + peer_got, len - peer_got, &n))
            peer_got += n;
        struct pollfd p[2] = {{.fd = r->ours_fd, .events = POLLIN},
                              {.fd = r->peer_fd, .events = POLLIN}};
        if (evbuffer_get_length(out) || ts_wants_write(r->ts))
            p[0].events |= POLLOUT;
        if (peer_sent < len)
            p[1].events |= POLLOUT;
        poll(p, 2, 20);
    }
    assert_int_equal(evbuffer_get_length(in), len);
    assert_int_equal(peer_got, len);
    assert_memory_equal(evbuffer_pullup(in, -1), down, len);
    assert_memory_equal(got_peer, up, len);
    evbuffer_free(out);
    evbuffer_free(in);
    free(up);
    free(down);
    free(got_peer);
}

#define SERVER_YAML                                                                                \
    "common_tls_context:\n"                                                                        \
    "  tls_certificates:\n"                                                                        \
    "  - {certificate_chain: {filename: %s}, private_key: {filename: %s}}\n"                       \
    "  - {certificate_chain: {filename: %s}, private_key: {filename: %s}}\n"

static struct tls_config *server_cfg(void)
{
    return must_parse(TS_SIDE_DOWNSTREAM, SERVER_YAML, cert("server.pem"), cert("server.key"),
                      cert("server-ec.pem"), cert("server-ec.key"));
}

static void test_downstream_exchange(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *cfg = server_cfg();
    freeze_stats();
    SSL_CTX *pc = peer_client_ctx(true);
    struct rig r;
    rig_start(&r, cfg, pc);
    struct ts_io_result res = rig_handshake(&r);
    assert_int_equal(res.action, TS_KEEP_OPEN);
    assert_true(ts_is_ready(r.ts));
    assert_int_equal(X509_V_OK, SSL_get_verify_result(r.peer));
    rig_exchange(&r, 3u << 20);
    assert_int_equal(counter("t.ssl.handshake"), 1);
    assert_int_equal(counter("t.ssl.handshake_error"), 0);

    /* Peer's close_notify is our end of stream; we may still write (half-close). */
    ERR_clear_error();
    SSL_shutdown(r.peer);
    struct evbuffer *in = evbuffer_new();
    res.end_stream = false;
    for (int i = 0; i < 100 && !res.end_stream; i++) {
        res = ts_do_read(r.ts, in, 65536);
        assert_int_equal(res.action, TS_KEEP_OPEN);
        rig_wait(&r);
    }
    assert_true(res.end_stream);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, "late", 4);
    res = ts_do_write(r.ts, out, true);
    assert_int_equal(res.action, TS_KEEP_OPEN);
    assert_int_equal(res.bytes, 4);
    char got[8];
    size_t n = 0;
    int rc = 0;
    for (int i = 0; i < 100 && n == 0; i++) {
        rc = SSL_read_ex(r.peer, got, sizeof(got), &n);
        if (!rc && SSL_get_error(r.peer, rc) == SSL_ERROR_ZERO_RETURN)
            break;
        rig_wait(&r);
    }
    assert_int_equal(n, 4);
    assert_memory_equal(got, "late", 4);
    /* then our close_notify */
    for (int i = 0; i < 100; i++) {
        rc = SSL_read_ex(r.peer, got, sizeof(got), &n);
        if (!rc && SSL_get_error(r.peer, rc) != SSL_ERROR_WANT_READ)
            break;
        rig_wait(&r);
    }
    assert_int_equal(SSL_get_error(r.peer, rc), SSL_ERROR_ZERO_RETURN);
    evbuffer_free(in);
    evbuffer_free(out);
    rig_end(&r);
    SSL_CTX_free(pc);
    tls_config_free(cfg);
    stats_reset();
}

/* Each certificate type is served to a client that only accepts that type. */
static void test_downstream_rsa_and_ecdsa(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *cfg = server_cfg();
    freeze_stats();
    const char *sigalgs[] = {"ECDSA+SHA256", "RSA-PSS+SHA256:RSA+SHA256"};
    int want[] = {EVP_PKEY_EC, EVP_PKEY_RSA};
    for (int i = 0; i < 2; i++) {
        SSL_CTX *pc = peer_client_ctx(true);
        assert_int_equal(SSL_CTX_set1_sigalgs_list(pc, sigalgs[i]), 1);
        struct rig r;
        rig_start(&r, cfg, pc);
        assert_int_equal(rig_handshake(&r).action, TS_KEEP_OPEN);
        assert_true(r.peer_done);
        X509 *peer_cert = SSL_get1_peer_certificate(r.peer);
        assert_non_null(peer_cert);
        assert_int_equal(EVP_PKEY_get_base_id(X509_get0_pubkey(peer_cert)), want[i]);
        X509_free(peer_cert);
        rig_end(&r);
        SSL_CTX_free(pc);
    }
    assert_int_equal(counter("t.ssl.handshake"), 2);
    tls_config_free(cfg);
    stats_reset();
}

static void test_downstream_garbage(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *cfg = server_cfg();
    freeze_stats();
    int a, b;
    tcp_pair(&a, &b);
    struct ts_conn_info info = {.conn_id = 9, .fd = a};
    struct transport_socket *ts;
    assert_int_equal(tls_socket_create(cfg, &info, &ts), 0);
    assert_int_equal(ts_on_connected(ts), 0);
    const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(b, req, sizeof(req) - 1), (ssize_t)sizeof(req) - 1);
    struct evbuffer *in = evbuffer_new();
    struct ts_io_result res = {0};
    for (int i = 0; i < 100 && res.action != TS_CLOSE; i++) {
        res = ts_do_read(ts, in, 65536);
        struct pollfd p = {.fd = a, .events = POLLIN};
        poll(&p, 1, 20);
    }
    assert_int_equal(res.action, TS_CLOSE);
    assert_int_equal(res.err, -EPROTO);
    assert_int_equal(evbuffer_get_length(in), 0);
    assert_non_null(ts_failure_reason(ts));
    assert_non_null(strstr(ts_failure_reason(ts), "handshake"));
    assert_int_equal(counter("t.ssl.handshake_error"), 1);
    /* A second call after the failure stays closed. */
    assert_int_equal(ts_do_write(ts, in, false).action, TS_CLOSE);
    ts_close(ts, TS_CLOSE_RESET);
    ts_destroy(ts);
    close(b);
    evbuffer_free(in);
    tls_config_free(cfg);
    stats_reset();
}

static void test_upstream_verify(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *ok = must_parse(TS_SIDE_UPSTREAM,
                                       "sni: server.test\n"
                                       "common_tls_context:\n"
                                       "  validation_context:\n"
                                       "    trusted_ca: {filename: %s}\n"
                                       "    match_subject_alt_names: [{exact: server.test}]\n",
                                       cert("ca.pem"));
    struct tls_config *bad_san = must_parse(TS_SIDE_UPSTREAM,
                                            "common_tls_context:\n"
                                            "  validation_context:\n"
                                            "    trusted_ca: {filename: %s}\n"
                                            "    verify_subject_alt_name: [wrong.test]\n",
                                            cert("ca.pem"));
    freeze_stats();
    SSL_CTX *good = peer_server_ctx(cert("server.pem"), cert("server.key"));
    SSL_CTX *untrusted = peer_server_ctx(cert("other.pem"), cert("other.key"));

    struct rig r;
    rig_start(&r, ok, good);
    assert_int_equal(rig_handshake(&r).action, TS_KEEP_OPEN);
    assert_true(ts_is_ready(r.ts));
    assert_string_equal(SSL_get_servername(r.peer, TLSEXT_NAMETYPE_host_name), "server.test");
    rig_exchange(&r, 100000);
    rig_end(&r);
    assert_int_equal(counter("t.ssl.handshake"), 1);

    rig_start(&r, ok, untrusted);
    struct ts_io_result res = rig_handshake(&r);
    assert_int_equal(res.action, TS_CLOSE);
    assert_non_null(strstr(ts_failure_reason(r.ts), "certificate verify failed"));
    rig_end(&r);
    assert_int_equal(counter("t.ssl.connection_error"), 1);
    assert_int_equal(counter("t.ssl.fail_verify_error"), 1);

    rig_start(&r, bad_san, good);
    res = rig_handshake(&r);
    assert_int_equal(res.action, TS_CLOSE);
    assert_non_null(strstr(ts_failure_reason(r.ts), "subject alt"));
    rig_end(&r);
    assert_int_equal(counter("t.ssl.connection_error"), 2);
    assert_int_equal(counter("t.ssl.fail_verify_san"), 1);
    assert_int_equal(counter("t.ssl.handshake"), 1);

    SSL_CTX_free(good);
    SSL_CTX_free(untrusted);
    tls_config_free(ok);
    tls_config_free(bad_san);
    stats_reset();
}

static int peer_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                        const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char mine[] = "\x02h2";
    (void)ssl;
    (void)arg;
    unsigned char *sel;
    if (SSL_select_next_proto(&sel, outlen, mine, 3, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static void hex_sha256(const char *pem, char *out, size_t size)
{
    FILE *f = fopen(pem, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    unsigned char md[32];
    unsigned n = 0;
    assert_int_equal(X509_digest(x, EVP_sha256(), md, &n), 1);
    X509_free(x);
    size_t o = 0;
    for (unsigned i = 0; i < n && o + 4 < size; i++)
        o += (size_t)snprintf(out + o, size - o, i ? ":%02X" : "%02X", md[i]);
}

static void test_upstream_resumption_alpn_keylog_hash(void **state)
{
    (void)state;
    stats_reset();
    const char *klog = cert("keys.log");
    char hash[128];
    hex_sha256(cert("server.pem"), hash, sizeof(hash));
    struct tls_config *cfg = must_parse(TS_SIDE_UPSTREAM,
                                        "common_tls_context:\n"
                                        /* TLS 1.3 key log lines; Envoy's upstream default
                                         * maximum is TLS 1.2 */
                                        "  tls_params: {tls_maximum_protocol_version: TLSv1_3}\n"
                                        "  key_log: {path: %s}\n"
                                        "  alpn_protocols: [h2, http/1.1]\n"
                                        "  validation_context:\n"
                                        "    verify_certificate_hash: ['%s']\n",
                                        klog, hash);
    struct tls_config *wrong = must_parse(TS_SIDE_UPSTREAM,
                                          "common_tls_context:\n"
                                          "  validation_context:\n"
                                          "    verify_certificate_hash: ['%064d']\n",
                                          0);
    freeze_stats();
    SSL_CTX *srv = peer_server_ctx(cert("server.pem"), cert("server.key"));
    SSL_CTX_set_alpn_select_cb(srv, peer_alpn_cb, NULL);
    for (int i = 0; i < 2; i++) {
        struct rig r;
        rig_start(&r, cfg, srv);
        assert_int_equal(rig_handshake(&r).action, TS_KEEP_OPEN);
        size_t alen = 0;
        const char *alpn = tls_socket_alpn(r.ts, &alen);
        assert_int_equal(alen, 2);
        assert_memory_equal(alpn, "h2", 2);
        rig_exchange(&r, 5000); /* TLS 1.3 tickets arrive after the handshake */
        rig_end(&r);
    }
    assert_int_equal(counter("t.ssl.handshake"), 2);
    assert_int_equal(counter("t.ssl.session_reused"), 1);

    struct stat st;
    assert_int_equal(stat(klog, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    char buf[8192];
    FILE *f = fopen(klog, "r");
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "CLIENT_HANDSHAKE_TRAFFIC_SECRET "));
    assert_non_null(strstr(buf, "CLIENT_TRAFFIC_SECRET_0 "));

    struct rig r;
    rig_start(&r, wrong, srv);
    assert_int_equal(rig_handshake(&r).action, TS_CLOSE);
    rig_end(&r);
    assert_int_equal(counter("t.ssl.fail_verify_cert_hash"), 1);
    SSL_CTX_free(srv);
    tls_config_free(cfg);
    tls_config_free(wrong);
    stats_reset();
}

static void assert_contains(const char *msg, const char *part)
{
    if (!strstr(msg, part))
        fail_msg("\"%s\" lacks \"%s\"", msg, part);
}

static void test_config_errors(void **state)
{
    (void)state;
    stats_reset();
    const char *m;
    m = parse_error(TS_SIDE_DOWNSTREAM,
                    "common_tls_context:\n"
                    "  tls_certificates:\n"
                    "  - certificate_chain: {filename: /nonexistent/c.pem}\n"
                    "    private_key: {filename: %s}\n",
                    cert("server.key"));
    assert_contains(m, "tls.yaml:3:35: ");
    assert_contains(m, "tls.common_tls_context.tls_certificates[0].certificate_chain.filename");
    assert_contains(m, "No such file");

    m = parse_error(TS_SIDE_DOWNSTREAM,
                    "common_tls_context:\n"
                    "  tls_certificates:\n"
                    "  - certificate_chain: {filename: %s}\n"
                    "    private_key: {filename: %s}\n",
                    cert("server.pem"), cert("client.key"));
    assert_contains(m, "tls.yaml:4:");
    assert_contains(m, "private_key.filename: private key does not match");

    m = parse_error(TS_SIDE_DOWNSTREAM,
                    "common_tls_context:\n"
                    "  tls_certificates:\n"
                    "  - certificate_chain: {inline_string: \"-----BEGIN CERTIFICATE-----\\nxx\\n"
                    "-----END CERTIFICATE-----\\n\"}\n"
                    "    private_key: {filename: %s}\n",
                    cert("server.key"));
    assert_contains(m, "tls.yaml:3:");
    assert_contains(m, "certificate_chain.inline_string: expected a PEM certificate chain");

    m = parse_error(TS_SIDE_DOWNSTREAM, SERVER_YAML, cert("server.pem"), cert("server.key"),
                    cert("client.pem"), cert("client.key"));
    assert_contains(m, "tls_certificates[1]: a second RSA certificate");

    m = parse_error(TS_SIDE_UPSTREAM, "allow_renegotiation: true\n");
    assert_contains(m, "tls.yaml:1:22: tls.allow_renegotiation: renegotiation is not supported");

    m = parse_error(TS_SIDE_DOWNSTREAM, "common_tls_context: {}\n");
    assert_contains(m, "needs common_tls_context.tls_certificates");

    m = parse_error(TS_SIDE_UPSTREAM,
                    "common_tls_context:\n"
                    "  tls_params:\n"
                    "    cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256, NOPE-CIPHER]\n");
    assert_contains(m, "tls.common_tls_context.tls_params.cipher_suites[1]: unknown cipher suite "
                       "\"NOPE-CIPHER\"");

    m = parse_error(TS_SIDE_UPSTREAM, "common_tls_context:\n"
                                      "  tls_params: {tls_minimum_protocol_version: TLSv1_3,"
                                      " tls_maximum_protocol_version: TLSv1_2}\n");
    assert_contains(m, "tls_maximum_protocol_version: maximum below minimum");

    m = parse_error(TS_SIDE_UPSTREAM, "common_tls_context:\n"
                                      "  validation_context:\n"
                                      "    verify_certificate_hash: [abc]\n");
    assert_contains(m, "verify_certificate_hash[0]: expected a SHA-256");

    m = parse_error(TS_SIDE_DOWNSTREAM, SERVER_YAML "require_client_certificate: true\n",
                    cert("server.pem"), cert("server.key"), cert("server-ec.pem"),
                    cert("server-ec.key"));
    assert_contains(m, "require_client_certificate: needs");

    m = parse_error(TS_SIDE_UPSTREAM, "common_tls_context: {bogus: 1}\n");
    assert_contains(m, "bogus");

    m = parse_error(TS_SIDE_UPSTREAM, "key_log: {path: /nonexistent/dir/k.log}\n");
    assert_contains(m, "tls.key_log.path: cannot open key log");

    /* The accepted shapes: v2 string ALPN, v3 lists, params, SAN matchers. */
    struct tls_config *cfg =
        must_parse(TS_SIDE_UPSTREAM,
                   "'@type': type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                   "UpstreamTlsContext\n"
                   "sni: server.test\n"
                   "allow_renegotiation: false\n"
                   "common_tls_context:\n"
                   "  alpn_protocols: h2,http/1.1\n"
                   "  tls_params:\n"
                   "    tls_minimum_protocol_version: TLSv1_2\n"
                   "    tls_maximum_protocol_version: TLSv1_3\n"
                   "    cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256, TLS_AES_128_GCM_SHA256]\n"
                   "    ecdh_curves: [X25519, P-256]\n"
                   "  validation_context:\n"
                   "    trusted_ca: {filename: %s}\n"
                   "    match_subject_alt_names: [{suffix: .test}, {prefix: server}]\n",
                   cert("ca.pem"));
    assert_int_equal(cfg->alpn_len, 12);
    assert_int_equal(cfg->nsans, 2);
    assert_string_equal(cfg->sni, "server.test");
    tls_config_free(cfg);
    stats_reset();
}

static void test_mtls(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *cfg =
        must_parse(TS_SIDE_DOWNSTREAM,
                   "require_client_certificate: true\n"
                   "common_tls_context:\n"
                   "  tls_certificates:\n"
                   "  - {certificate_chain: {filename: %s}, private_key: {filename: %s}}\n"
                   "  validation_context: {trusted_ca: {filename: %s}}\n",
                   cert("server.pem"), cert("server.key"), cert("ca.pem"));
    freeze_stats();
    SSL_CTX *anon = peer_client_ctx(true);
    SSL_CTX *with = peer_client_ctx(true);
    assert_int_equal(SSL_CTX_use_certificate_chain_file(with, cert("client.pem")), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey_file(with, cert("client.key"), SSL_FILETYPE_PEM), 1);

    struct rig r;
    rig_start(&r, cfg, anon);
    assert_int_equal(rig_handshake(&r).action, TS_CLOSE);
    rig_end(&r);
    assert_int_equal(counter("t.ssl.handshake_error"), 1);
    assert_int_equal(counter("t.ssl.fail_verify_no_cert"), 1);

    rig_start(&r, cfg, with);
    assert_int_equal(rig_handshake(&r).action, TS_KEEP_OPEN);
    rig_exchange(&r, 1000);
    rig_end(&r);
    assert_int_equal(counter("t.ssl.handshake"), 1);
    SSL_CTX_free(anon);
    SSL_CTX_free(with);
    tls_config_free(cfg);
    stats_reset();
}

static void test_reset_is_econnreset(void **state)
{
    (void)state;
    stats_reset();
    struct tls_config *cfg = server_cfg();
    freeze_stats();
    SSL_CTX *pc = peer_client_ctx(true);
    struct rig r;
    rig_start(&r, cfg, pc);
    assert_int_equal(rig_handshake(&r).action, TS_KEEP_OPEN);
    struct linger lg = {1, 0};
    setsockopt(r.peer_fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(r.peer_fd);
    r.peer_fd = -1;
    struct evbuffer *in = evbuffer_new();
    struct ts_io_result res = {0};
    for (int i = 0; i < 100 && res.action != TS_CLOSE; i++) {
        res = ts_do_read(r.ts, in, 65536);
        rig_wait(&r);
    }
    assert_int_equal(res.action, TS_CLOSE);
    assert_int_equal(res.err, -ECONNRESET);
    evbuffer_free(in);
    rig_end(&r);
    SSL_CTX_free(pc);
    tls_config_free(cfg);
    stats_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_downstream_exchange),
        cmocka_unit_test(test_downstream_rsa_and_ecdsa),
        cmocka_unit_test(test_downstream_garbage),
        cmocka_unit_test(test_upstream_verify),
        cmocka_unit_test(test_mtls),
        cmocka_unit_test(test_reset_is_econnreset),
        cmocka_unit_test(test_upstream_resumption_alpn_keylog_hash),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}

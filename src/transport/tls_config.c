/* tls_config.c: Envoy's Downstream/UpstreamTlsContext (v2 `config:`/`tls_context:`, v3
 * `typed_config`) -> one SSL_CTX per listener or cluster, built and checked at load time.
 *
 * Everything that can be wrong with a certificate is found here, with the position of the node
 * that named it: a missing file, a PEM that does not parse, a key that does not match its
 * certificate, two certificates of one key type (OpenSSL keeps one per type; silently dropping
 * one would be worse than refusing). Rejected: reading files lazily at the first handshake (the
 * error would surface as a failed connection, long after the operator looked at the logs). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "core/hexdigit.h"
#include "core/log.h"
#include "transport/tls.h"

struct tls_parse {
    struct cfg_err *err;
    const struct cfg_doc *doc;
    struct tls_config *cfg;
    bool has_cert;
    int key_types[4]; /* EVP_PKEY base ids already configured */
    size_t nkey_types;
};

/* The last OpenSSL error as text, for "got" parts of messages; clears the queue. */
static const char *tls_ossl_error(char *buf, size_t size)
{
    unsigned long e = ERR_peek_last_error();
    if (e)
        ERR_error_string_n(e, buf, size);
    else
        snprintf(buf, size, "no PEM data found");
    ERR_clear_error();
    return buf;
}

/* Never prompt on a terminal for an encrypted key: refuse it instead. */
static int tls_no_password_cb(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Opens an Envoy DataSource {filename | inline_string} as a BIO. *WHERE gets the node that
 * named the data (for later errors) and *WHAT a short description. Caller frees the BIO. */
static int tls_open_source(struct tls_parse *p, const struct cfg_node *node,
                           const struct cfg_path *path, BIO **out, const struct cfg_node **where,
                           const struct cfg_path **where_path, struct cfg_path *scratch)
{
    static const char *const keys[] = {"filename", "inline_string", NULL};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    const struct cfg_node *fn = cfg_map_get(node, "filename");
    const struct cfg_node *is = cfg_map_get(node, "inline_string");
    if ((fn != NULL) == (is != NULL))
        return cfg_error(p->err, p->doc, node, path,
                         "expected exactly one of filename, inline_string");
    const char *s;
    if (fn) {
        *scratch = CFG_PATH_KEY(path, "filename");
        if (cfg_get_string(p->err, p->doc, fn, scratch, &s) < 0)
            return -EINVAL;
        /* fopen succeeds on a directory and the PEM decoder then reports a DECODER error
         * that does not say what is wrong; say it here. */
        struct stat st;
        if (stat(s, &st) == 0 && !S_ISREG(st.st_mode))
            return cfg_error(p->err, p->doc, fn, scratch, "\"%s\" is %s, expected a PEM file", s,
                             S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
        *out = BIO_new_file(s, "r");
        if (!*out) {
            int e = errno ? errno : ENOENT;
            ERR_clear_error();
            return cfg_error(p->err, p->doc, fn, scratch, "cannot open \"%s\": %s", s, strerror(e));
        }
        *where = fn;
    } else {
        *scratch = CFG_PATH_KEY(path, "inline_string");
        if (cfg_get_string(p->err, p->doc, is, scratch, &s) < 0)
            return -EINVAL;
        *out = BIO_new_mem_buf(is->str, (int)is->len);
        if (!*out)
            return -ENOMEM;
        *where = is;
    }
    *where_path = scratch;
    return 0;
}

static int tls_parse_certificate(struct tls_parse *p, const struct cfg_node *node,
                                 const struct cfg_path *path)
{
    static const char *const keys[] = {"certificate_chain", "private_key", "password", NULL};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    const struct cfg_node *chain = cfg_map_get(node, "certificate_chain");
    const struct cfg_node *key = cfg_map_get(node, "private_key");
    if (!chain || !key)
        return cfg_error(p->err, p->doc, node, path, "expected certificate_chain and private_key");
    if (cfg_map_get(node, "password")) {
        struct cfg_path pp = CFG_PATH_KEY(path, "password");
        return cfg_error(p->err, p->doc, cfg_map_get(node, "password"), &pp,
                         "encrypted private keys are not supported");
    }
    struct cfg_path chain_path = CFG_PATH_KEY(path, "certificate_chain");
    struct cfg_path key_path = CFG_PATH_KEY(path, "private_key");
    struct cfg_path chain_src, key_src;
    const struct cfg_node *chain_at, *key_at;
    const struct cfg_path *chain_at_path, *key_at_path;
    char ebuf[200];
    BIO *cbio = NULL, *kbio = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = tls_open_source(p, chain, &chain_path, &cbio, &chain_at, &chain_at_path, &chain_src);
    if (rc < 0)
        return rc;
    leaf = PEM_read_bio_X509_AUX(cbio, NULL, tls_no_password_cb, NULL);
    if (!leaf) {
        rc = cfg_error(p->err, p->doc, chain_at, chain_at_path,
                       "expected a PEM certificate chain, got %s",
                       tls_ossl_error(ebuf, sizeof(ebuf)));
        goto err_free_cbio;
    }
    rc = tls_open_source(p, key, &key_path, &kbio, &key_at, &key_at_path, &key_src);
    if (rc < 0)
        goto err_free_leaf;
    pkey = PEM_read_bio_PrivateKey(kbio, NULL, tls_no_password_cb, NULL);
    if (!pkey) {
        rc = cfg_error(p->err, p->doc, key_at, key_at_path,
                       "expected an unencrypted PEM private key, got %s",
                       tls_ossl_error(ebuf, sizeof(ebuf)));
        goto err_free_kbio;
    }
    if (!X509_check_private_key(leaf, pkey)) {
        ERR_clear_error();
        rc = cfg_error(p->err, p->doc, key_at, key_at_path,
                       "private key does not match the certificate chain's first certificate");
        goto err_free_pkey;
    }
    int type = EVP_PKEY_get_base_id(pkey);
    for (size_t i = 0; i < p->nkey_types; i++) {
        if (p->key_types[i] == type) {
            rc = cfg_error(p->err, p->doc, node, path,
                           "a second %s certificate: give at most one per key type",
                           type == EVP_PKEY_RSA  ? "RSA"
                           : type == EVP_PKEY_EC ? "ECDSA"
                                                 : OBJ_nid2sn(type));
            goto err_free_pkey;
        }
    }
    if (p->nkey_types == sizeof(p->key_types) / sizeof(p->key_types[0])) {
        rc = cfg_error(p->err, p->doc, node, path, "too many certificates");
        goto err_free_pkey;
    }
    p->key_types[p->nkey_types++] = type;
    if (!SSL_CTX_use_certificate(p->cfg->ssl_ctx, leaf) ||
        !SSL_CTX_use_PrivateKey(p->cfg->ssl_ctx, pkey)) {
        rc = cfg_error(p->err, p->doc, chain_at, chain_at_path, "certificate rejected: %s",
                       tls_ossl_error(ebuf, sizeof(ebuf)));
        goto err_free_pkey;
    }
    /* The rest of the chain goes with the certificate just set (OpenSSL's "current" one). */
    X509 *ca;
    while ((ca = PEM_read_bio_X509(cbio, NULL, tls_no_password_cb, NULL)) != NULL) {
        if (!SSL_CTX_add0_chain_cert(p->cfg->ssl_ctx, ca)) {
            X509_free(ca);
            rc = cfg_error(p->err, p->doc, chain_at, chain_at_path,
                           "intermediate certificate rejected: %s",
                           tls_ossl_error(ebuf, sizeof(ebuf)));
            goto err_free_pkey;
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
        rc = cfg_error(p->err, p->doc, chain_at, chain_at_path,
                       "unparsable certificate after the first one: %s",
                       tls_ossl_error(ebuf, sizeof(ebuf)));
        goto err_free_pkey;
    }
    ERR_clear_error();
    p->has_cert = true;
    rc = 0;

err_free_pkey:
    EVP_PKEY_free(pkey);
err_free_kbio:
    BIO_free(kbio);
err_free_leaf:
    X509_free(leaf);
err_free_cbio:
    BIO_free(cbio);
    return rc;
}

static int tls_parse_trusted_ca(struct tls_parse *p, const struct cfg_node *node,
                                const struct cfg_path *path)
{
    struct cfg_path src;
    const struct cfg_node *at;
    const struct cfg_path *at_path;
    BIO *bio = NULL;
    char ebuf[200];
    int rc = tls_open_source(p, node, path, &bio, &at, &at_path, &src);
    if (rc < 0)
        return rc;
    X509_STORE *store = SSL_CTX_get_cert_store(p->cfg->ssl_ctx);
    size_t n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, tls_no_password_cb, NULL)) != NULL) {
        n++;
        /* Listeners also tell clients which CAs they accept, so a client with several
         * certificates picks the right one. */
        if (!X509_STORE_add_cert(store, x) ||
            (p->cfg->side == TS_SIDE_DOWNSTREAM && !SSL_CTX_add_client_CA(p->cfg->ssl_ctx, x))) {
            X509_free(x);
            rc = cfg_error(p->err, p->doc, at, at_path, "CA certificate rejected: %s",
                           tls_ossl_error(ebuf, sizeof(ebuf)));
            goto err_free_bio;
        }
        X509_free(x);
    }
    unsigned long e = ERR_peek_last_error();
    if (n == 0 || (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)) {
        rc = cfg_error(p->err, p->doc, at, at_path, "expected PEM CA certificates, got %s",
                       tls_ossl_error(ebuf, sizeof(ebuf)));
        goto err_free_bio;
    }
    ERR_clear_error();
    p->cfg->has_ca = true;
    rc = 0;

err_free_bio:
    BIO_free(bio);
    return rc;
}

static int tls_add_san(struct tls_parse *p, enum tls_san_match how, const char *value)
{
    struct tls_san *n = realloc(p->cfg->sans, (p->cfg->nsans + 1) * sizeof(*n));
    if (!n)
        return -ENOMEM;
    p->cfg->sans = n;
    n[p->cfg->nsans].how = how;
    n[p->cfg->nsans].value = strdup(value);
    if (!n[p->cfg->nsans].value)
        return -ENOMEM;
    p->cfg->nsans++;
    return 0;
}

static int tls_add_hash(struct tls_parse *p, const struct cfg_node *node,
                        const struct cfg_path *path)
{
    const char *s;
    unsigned char md[32];
    size_t n = 0;
    if (cfg_get_string(p->err, p->doc, node, path, &s) < 0)
        return -EINVAL;
    for (; *s; s++) {
        if (*s == ':')
            continue;
        int hi = hexdigit_value((unsigned char)s[0]),
            lo = s[1] ? hexdigit_value((unsigned char)s[1]) : -1;
        if (hi < 0 || lo < 0 || n == sizeof(md))
            goto err_bad_hash;
        md[n++] = (unsigned char)(hi << 4 | lo);
        s++;
    }
    if (n != sizeof(md))
        goto err_bad_hash;
    unsigned char(*h)[32] = realloc(p->cfg->hashes, (p->cfg->nhashes + 1) * sizeof(*h));
    if (!h)
        return -ENOMEM;
    memcpy(h[p->cfg->nhashes], md, sizeof(md));
    p->cfg->hashes = h;
    p->cfg->nhashes++;
    return 0;

err_bad_hash:
    return cfg_error(p->err, p->doc, node, path,
                     "expected a SHA-256 as 64 hex digits (colons allowed), got \"%s\"", node->str);
}

static int tls_parse_validation(struct tls_parse *p, const struct cfg_node *node,
                                const struct cfg_path *path)
{
    static const char *const keys[] = {"trusted_ca", "verify_subject_alt_name",
                                       "match_subject_alt_names", "verify_certificate_hash", NULL};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    p->cfg->verify = true;
    const struct cfg_node *v;
    if ((v = cfg_map_get(node, "trusted_ca"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "trusted_ca");
        if (tls_parse_trusted_ca(p, v, &sub) < 0)
            return -EINVAL;
    }
    if ((v = cfg_map_get(node, "verify_subject_alt_name"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "verify_subject_alt_name");
        if (cfg_expect_seq(p->err, p->doc, v, &sub) < 0)
            return -EINVAL;
        for (size_t i = 0; i < v->n; i++) {
            struct cfg_path ip = CFG_PATH_INDEX(&sub, i);
            const char *s;
            if (cfg_get_string(p->err, p->doc, v->items[i], &ip, &s) < 0)
                return -EINVAL;
            if (tls_add_san(p, TLS_SAN_EXACT, s) < 0)
                return -ENOMEM;
        }
    }
    if ((v = cfg_map_get(node, "match_subject_alt_names"))) {
        static const char *const mkeys[] = {"exact", "prefix", "suffix", "contains", NULL};
        struct cfg_path sub = CFG_PATH_KEY(path, "match_subject_alt_names");
        if (cfg_expect_seq(p->err, p->doc, v, &sub) < 0)
            return -EINVAL;
        for (size_t i = 0; i < v->n; i++) {
            struct cfg_path ip = CFG_PATH_INDEX(&sub, i);
            const struct cfg_node *m = v->items[i];
            if (cfg_check_keys(p->err, p->doc, m, &ip, mkeys) < 0)
                return -EINVAL;
            if (m->n != 1)
                return cfg_error(p->err, p->doc, m, &ip,
                                 "expected exactly one of exact, prefix, suffix, contains");
            struct cfg_path kp = CFG_PATH_KEY(&ip, m->entries[0].key->str);
            const char *s;
            if (cfg_get_string(p->err, p->doc, m->entries[0].value, &kp, &s) < 0)
                return -EINVAL;
            int how = 0;
            while (strcmp(mkeys[how], m->entries[0].key->str) != 0)
                how++;
            if (tls_add_san(p, (enum tls_san_match)how, s) < 0)
                return -ENOMEM;
        }
    }
    if ((v = cfg_map_get(node, "verify_certificate_hash"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "verify_certificate_hash");
        if (cfg_expect_seq(p->err, p->doc, v, &sub) < 0)
            return -EINVAL;
        for (size_t i = 0; i < v->n; i++) {
            struct cfg_path ip = CFG_PATH_INDEX(&sub, i);
            int rc = tls_add_hash(p, v->items[i], &ip);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* A list of names as a sequence, or (v2 and shorthand) one comma-separated string. Calls
 * ADD with each name and its node; ADD reports its own errors. */
static int
tls_each_name(struct tls_parse *p, const struct cfg_node *node, const struct cfg_path *path,
              int (*add)(struct tls_parse *p, const char *name, size_t len,
                         const struct cfg_node *at, const struct cfg_path *at_path, void *arg),
              void *arg)
{
    if (node->type == CFG_SCALAR) {
        for (const char *s = node->str; *s;) {
            size_t len = strcspn(s, ",");
            int rc = add(p, s, len, node, path, arg);
            if (rc < 0)
                return rc;
            s += len;
            if (*s == ',')
                s++;
        }
        return 0;
    }
    if (cfg_expect_seq(p->err, p->doc, node, path) < 0)
        return -EINVAL;
    for (size_t i = 0; i < node->n; i++) {
        struct cfg_path ip = CFG_PATH_INDEX(path, i);
        const char *s;
        if (cfg_get_string(p->err, p->doc, node->items[i], &ip, &s) < 0)
            return -EINVAL;
        int rc = add(p, s, strlen(s), node->items[i], &ip, arg);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int tls_add_alpn(struct tls_parse *p, const char *name, size_t len,
                        const struct cfg_node *at, const struct cfg_path *at_path, void *arg)
{
    (void)arg;
    if (len == 0 || len > 255)
        return cfg_error(p->err, p->doc, at, at_path,
                         "expected ALPN protocol names of 1..255 bytes");
    unsigned char *a = realloc(p->cfg->alpn, p->cfg->alpn_len + 1 + len);
    if (!a)
        return -ENOMEM;
    a[p->cfg->alpn_len] = (unsigned char)len;
    memcpy(a + p->cfg->alpn_len + 1, name, len);
    p->cfg->alpn = a;
    p->cfg->alpn_len += 1 + len;
    return 0;
}

/* A ':'-joined list for OpenSSL, every entry checked on its own so the error names it. */
struct tls_list {
    char buf[2048];
    size_t len;
    int (*check)(SSL_CTX *ctx, const char *one);
    const char *what;
    bool tls13; /* cipher_suites: collect only TLS 1.3 (true) or only TLS 1.2 names */
};

static int tls_check_cipher12(SSL_CTX *ctx, const char *one)
{
    return SSL_CTX_set_cipher_list(ctx, one);
}
static int tls_check_cipher13(SSL_CTX *ctx, const char *one)
{
    return SSL_CTX_set_ciphersuites(ctx, one);
}
static int tls_check_group(SSL_CTX *ctx, const char *one)
{
    return SSL_CTX_set1_groups_list(ctx, one);
}

static int tls_add_list(struct tls_parse *p, const char *name, size_t len,
                        const struct cfg_node *at, const struct cfg_path *at_path, void *arg)
{
    struct tls_list *l = arg;
    char one[256];
    if (len == 0 || len >= sizeof(one) || l->len + len + 2 > sizeof(l->buf))
        return cfg_error(p->err, p->doc, at, at_path, "%s: name too long", l->what);
    memcpy(one, name, len);
    one[len] = '\0';
    if (l->check == tls_check_cipher12 || l->check == tls_check_cipher13) {
        bool is13 = strncmp(one, "TLS_", 4) == 0;
        if (is13 != l->tls13)
            return 0;
    }
    if (!l->check(p->cfg->ssl_ctx, one)) {
        ERR_clear_error();
        return cfg_error(p->err, p->doc, at, at_path, "unknown %s \"%s\"", l->what, one);
    }
    if (l->len)
        l->buf[l->len++] = ':';
    memcpy(l->buf + l->len, one, len + 1);
    l->len += len;
    return 0;
}

/* Envoy's TlsParameters defaults (api/envoy/extensions/transport_sockets/tls/v3/common.proto):
 * minimum TLSv1_2 for both sides, maximum TLSv1_3 for servers and TLSv1_2 for clients. Applied
 * without tls_params too: OpenSSL's own minimum is TLS 1.0, which its default security level then
 * fails in the middle of the handshake with alert 80 (internal_error) instead of refusing the
 * version with alert 70 (protocol_version). Values are indexes into the TlsProtocol enum. */
static int tls_default_max(enum ts_side side)
{
    return side == TS_SIDE_DOWNSTREAM ? 4 : 3;
}

static int tls_parse_params(struct tls_parse *p, const struct cfg_node *node,
                            const struct cfg_path *path)
{
    static const char *const keys[] = {"tls_minimum_protocol_version",
                                       "tls_maximum_protocol_version", "cipher_suites",
                                       "ecdh_curves", NULL};
    static const char *const versions[] = {"TLS_AUTO", "TLSv1_0", "TLSv1_1",
                                           "TLSv1_2",  "TLSv1_3", NULL};
    static const int proto[] = {0, TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    int vmin = 3, vmax = tls_default_max(p->cfg->side);
    const struct cfg_node *v;
    struct cfg_path minp = CFG_PATH_KEY(path, "tls_minimum_protocol_version");
    struct cfg_path maxp = CFG_PATH_KEY(path, "tls_maximum_protocol_version");
    if ((v = cfg_map_get(node, "tls_minimum_protocol_version"))) {
        if (cfg_get_enum_num(p->err, p->doc, v, &minp, versions, NULL, &vmin) < 0)
            return -EINVAL;
        if (vmin == 0)
            vmin = 3;
        if (vmin < 3) {
            char kp[512];
            LOGW(LOG_NO_CONN,
                 "%s:%u:%u: %s: %s is accepted but cannot work: OpenSSL 3 at its default "
                 "security level refuses TLS 1.0 and 1.1 handshakes (they need SHA-1 signatures), "
                 "and socktap does not lower it; clients limited to them fail",
                 p->doc->file, v->line, v->col, cfg_path_format(&minp, kp, sizeof(kp)),
                 versions[vmin]);
        }
    }
    if ((v = cfg_map_get(node, "tls_maximum_protocol_version"))) {
        if (cfg_get_enum_num(p->err, p->doc, v, &maxp, versions, NULL, &vmax) < 0)
            return -EINVAL;
        if (vmax == 0)
            vmax = tls_default_max(p->cfg->side);
        if (vmax < vmin)
            return cfg_error(p->err, p->doc, v, &maxp, "maximum below minimum %s", versions[vmin]);
    }
    if (!SSL_CTX_set_min_proto_version(p->cfg->ssl_ctx, proto[vmin]) ||
        !SSL_CTX_set_max_proto_version(p->cfg->ssl_ctx, proto[vmax])) {
        ERR_clear_error();
        return cfg_error(p->err, p->doc, node, path, "protocol versions rejected by OpenSSL");
    }
    if ((v = cfg_map_get(node, "cipher_suites"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "cipher_suites");
        for (int tls13 = 0; tls13 < 2; tls13++) {
            struct tls_list l = {.check = tls13 ? tls_check_cipher13 : tls_check_cipher12,
                                 .what = "cipher suite",
                                 .tls13 = tls13};
            if (tls_each_name(p, v, &sub, tls_add_list, &l) < 0)
                return -EINVAL;
            if (l.len && !l.check(p->cfg->ssl_ctx, l.buf))
                return cfg_error(p->err, p->doc, v, &sub, "cipher suites rejected by OpenSSL");
            if (!l.len) /* the per-name checks changed it: back to the defaults */
                (void)(tls13
                           ? SSL_CTX_set_ciphersuites(p->cfg->ssl_ctx, OSSL_default_ciphersuites())
                           : SSL_CTX_set_cipher_list(p->cfg->ssl_ctx, OSSL_default_cipher_list()));
        }
    }
    if ((v = cfg_map_get(node, "ecdh_curves"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "ecdh_curves");
        struct tls_list l = {.check = tls_check_group, .what = "ECDH curve"};
        if (tls_each_name(p, v, &sub, tls_add_list, &l) < 0)
            return -EINVAL;
        if (l.len && !l.check(p->cfg->ssl_ctx, l.buf))
            return cfg_error(p->err, p->doc, v, &sub, "curves rejected by OpenSSL");
    }
    ERR_clear_error();
    return 0;
}

static int tls_parse_keylog(struct tls_parse *p, const struct cfg_node *node,
                            const struct cfg_path *path)
{
    static const char *const keys[] = {"path", NULL};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    const struct cfg_node *v = cfg_map_get(node, "path");
    struct cfg_path sub = CFG_PATH_KEY(path, "path");
    const char *s;
    if (!v)
        return cfg_error(p->err, p->doc, node, path, "expected a path");
    if (cfg_get_string(p->err, p->doc, v, &sub, &s) < 0)
        return -EINVAL;
    int rc = tls_config_set_keylog(p->cfg, s);
    if (rc < 0)
        return cfg_error(p->err, p->doc, v, &sub, "cannot open key log \"%s\": %s", s,
                         strerror(-rc));
    return 0;
}

static int tls_parse_common(struct tls_parse *p, const struct cfg_node *node,
                            const struct cfg_path *path)
{
    static const char *const keys[] = {"tls_params",     "tls_certificates", "validation_context",
                                       "alpn_protocols", "key_log",          NULL};
    if (cfg_check_keys(p->err, p->doc, node, path, keys) < 0)
        return -EINVAL;
    const struct cfg_node *v;
    if ((v = cfg_map_get(node, "tls_params"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "tls_params");
        if (tls_parse_params(p, v, &sub) < 0)
            return -EINVAL;
    }
    if ((v = cfg_map_get(node, "tls_certificates"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "tls_certificates");
        if (cfg_expect_seq(p->err, p->doc, v, &sub) < 0)
            return -EINVAL;
        for (size_t i = 0; i < v->n; i++) {
            struct cfg_path ip = CFG_PATH_INDEX(&sub, i);
            if (tls_parse_certificate(p, v->items[i], &ip) < 0)
                return -EINVAL;
        }
    }
    if ((v = cfg_map_get(node, "validation_context"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "validation_context");
        if (tls_parse_validation(p, v, &sub) < 0)
            return -EINVAL;
    }
    if ((v = cfg_map_get(node, "alpn_protocols"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "alpn_protocols");
        if (tls_each_name(p, v, &sub, tls_add_alpn, NULL) < 0)
            return -EINVAL;
    }
    if ((v = cfg_map_get(node, "key_log"))) {
        struct cfg_path sub = CFG_PATH_KEY(path, "key_log");
        if (tls_parse_keylog(p, v, &sub) < 0)
            return -EINVAL;
    }
    return 0;
}

/* Parses the context into a fresh config for CTX->side. */
static int tls_parse_context(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                             const struct cfg_path *path, struct tls_config *cfg)
{
    static const char *const down_keys[] = {
        "@type",   "common_tls_context",   "require_client_certificate",
        "key_log", "socktap_wire_capture", NULL};
    static const char *const up_keys[] = {
        "@type",   "common_tls_context",   "sni", "allow_renegotiation", "max_session_keys",
        "key_log", "socktap_wire_capture", NULL};
    bool down = ctx->side == TS_SIDE_DOWNSTREAM;
    struct tls_parse p = {.err = ctx->err, .doc = ctx->doc, .cfg = cfg};
    bool require_client = false;
    const struct cfg_node *v;
    if (config) {
        if (cfg_check_keys(ctx->err, ctx->doc, config, path, down ? down_keys : up_keys) < 0)
            return -EINVAL;
        if ((v = cfg_map_get(config, "common_tls_context"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "common_tls_context");
            if (tls_parse_common(&p, v, &sub) < 0)
                return -EINVAL;
        }
        if ((v = cfg_map_get(config, "socktap_wire_capture"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "socktap_wire_capture");
            const struct tls_wire_ops *wire = tls_wire_get();
            if (!wire)
                return cfg_error(ctx->err, ctx->doc, v, &sub,
                                 "this socktap was built without capture (-DSOCKTAP_CAPTURE=OFF)");
            if (wire->parse(ctx, v, &sub, &cfg->wire_cfg) < 0)
                return -EINVAL;
        }
        /* Accepted beside common_tls_context too: the shorthand. */
        if ((v = cfg_map_get(config, "key_log"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "key_log");
            if (tls_parse_keylog(&p, v, &sub) < 0)
                return -EINVAL;
        }
        if ((v = cfg_map_get(config, "require_client_certificate"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "require_client_certificate");
            if (cfg_get_bool(ctx->err, ctx->doc, v, &sub, &require_client) < 0)
                return -EINVAL;
            if (require_client && !cfg->has_ca)
                return cfg_error(ctx->err, ctx->doc, v, &sub,
                                 "needs common_tls_context.validation_context.trusted_ca");
        }
        if ((v = cfg_map_get(config, "sni"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "sni");
            const char *s;
            if (cfg_get_string(ctx->err, ctx->doc, v, &sub, &s) < 0)
                return -EINVAL;
            free(cfg->sni);
            cfg->sni = strdup(s);
            if (!cfg->sni)
                return -ENOMEM;
        }
        if ((v = cfg_map_get(config, "allow_renegotiation"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "allow_renegotiation");
            bool b;
            if (cfg_get_bool(ctx->err, ctx->doc, v, &sub, &b) < 0)
                return -EINVAL;
            if (b)
                return cfg_error(ctx->err, ctx->doc, v, &sub,
                                 "renegotiation is not supported: only false is accepted");
        }
        if ((v = cfg_map_get(config, "max_session_keys"))) {
            struct cfg_path sub = CFG_PATH_KEY(path, "max_session_keys");
            uint64_t n;
            if (cfg_get_u64(ctx->err, ctx->doc, v, &sub, 0, UINT32_MAX, &n) < 0)
                return -EINVAL;
            if (n == 0) /* Envoy: 0 disables resumption */
                SSL_CTX_set_session_cache_mode(cfg->ssl_ctx, SSL_SESS_CACHE_OFF);
        }
    }
    if (down && !p.has_cert)
        return cfg_error(ctx->err, ctx->doc, config, path,
                         "a TLS listener needs common_tls_context.tls_certificates");
    int mode = SSL_VERIFY_NONE;
    if (cfg->verify)
        mode = SSL_VERIFY_PEER | (require_client ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
    SSL_CTX_set_verify(cfg->ssl_ctx, mode, SSL_CTX_get_verify_callback(cfg->ssl_ctx));
    if (!down && cfg->alpn &&
        SSL_CTX_set_alpn_protos(cfg->ssl_ctx, cfg->alpn, (unsigned)cfg->alpn_len) != 0)
        return -ENOMEM;
    return 0;
}

static int tls_factory_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                             const struct cfg_path *path, void **out_cfg)
{
    bool down = ctx->side == TS_SIDE_DOWNSTREAM;
    SSL_CTX *ssl_ctx = SSL_CTX_new(down ? TLS_server_method() : TLS_client_method());
    struct tls_config *cfg;
    if (!ssl_ctx)
        return cfg_error(ctx->err, ctx->doc, config, path, "cannot create an OpenSSL context");
    if (tls_config_wrap(ssl_ctx, ctx->side, ctx->owner_name, NULL, &cfg) < 0)
        return cfg_error(ctx->err, ctx->doc, config, path, "out of memory");
    if (!SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ssl_ctx, down ? TLS1_3_VERSION : TLS1_2_VERSION)) {
        tls_config_free(cfg);
        ERR_clear_error();
        return cfg_error(ctx->err, ctx->doc, config, path, "protocol versions rejected by OpenSSL");
    }
    int rc = tls_parse_context(ctx, config, path, cfg);
    if (rc < 0) {
        if (!ctx->err->set)
            cfg_error(ctx->err, ctx->doc, config, path, "%s", strerror(-rc));
        tls_config_free(cfg);
        ERR_clear_error();
        return rc;
    }
    *out_cfg = cfg;
    return 0;
}

static int tls_factory_create(const void *cfg, const struct ts_conn_info *info,
                              struct transport_socket **out)
{
    return tls_socket_create(cfg, info, out);
}

static void tls_factory_free(void *cfg)
{
    tls_config_free(cfg);
}

static const char *const tls_names[] = {"envoy.transport_sockets.tls", "tls", "ssl", NULL};
static const char *const tls_type_urls[] = {
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.DownstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.UpstreamTlsContext",
    NULL,
};

static struct live_hub *tls_factory_live(const void *p, bool wire)
{
    const struct tls_config *cfg = p;
    const struct tls_wire_ops *ops = tls_wire_get();
    return wire && cfg->wire_cfg && ops ? ops->live(cfg->wire_cfg) : NULL;
}

const struct ts_factory tls_socket_factory = {
    .names = tls_names,
    .type_urls = tls_type_urls,
    .legacy_key = "tls_context",
    .parse = tls_factory_parse,
    .create = tls_factory_create,
    .free_cfg = tls_factory_free,
    .live = tls_factory_live,
};

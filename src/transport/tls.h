/* tls: the TLS transport socket (OpenSSL 3), registered as "tls", "ssl" and
 * "envoy.transport_sockets.tls" with Envoy's Downstream/UpstreamTlsContext (v2 and v3).
 *
 * Two halves: tls_config.c turns the YAML node into one immutable SSL_CTX per listener or
 * cluster at config load (certificates, keys and CAs are checked there, so a bad PEM is a
 * config error, never a runtime surprise); tls.c drives one SSL per connection over the
 * non-blocking fd through a small BIO of our own (send with MSG_NOSIGNAL: a peer reset must
 * never raise SIGPIPE, whatever the process's signal setup). */
#ifndef SOCKTAP_TRANSPORT_TLS_H
#define SOCKTAP_TRANSPORT_TLS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "core/stats.h"
#include "transport/ts_registry.h"

extern const struct ts_factory tls_socket_factory;

/* A subject-alt-name matcher (Envoy's StringMatcher subset). */
enum tls_san_match { TLS_SAN_EXACT, TLS_SAN_PREFIX, TLS_SAN_SUFFIX, TLS_SAN_CONTAINS };
struct tls_san {
    enum tls_san_match how;
    char *value; /* owned */
};

/* NSS key log sink shared by every connection (and thread) of one config. */
struct tls_keylog {
    int fd;
    pthread_mutex_t lock; /* one line per write(2) already; the lock keeps lines whole on
                             filesystems that do not honour O_APPEND atomicity (NFS) */
};

/* Wire capture (socktap extension `socktap_wire_capture`): the TLS records exactly as they
 * crossed the socket, and the connection's NSS key-log lines, recorded from the BIO read/write
 * path, so TLS stays the bottom layer. The capture module provides the ops
 * (capture_register_factories -> tls_wire_register); a build without capture has none, and the
 * key is then refused at config load. All calls come from the connection's worker thread. */
struct tls_wire_ops {
    /* Parses the socktap_wire_capture map NODE at PATH; *OUT freed with free_cfg. */
    int (*parse)(struct ts_parse_ctx *ctx, const struct cfg_node *node, const struct cfg_path *path,
                 void **out);
    void (*free_cfg)(void *cfg);
    /* A recorder for the connection INFO (read, not kept) describes; no file yet. */
    int (*rec_new)(const void *cfg, const struct ts_conn_info *info, void **out);
    void (*rec_open)(void *rec); /* once, before any byte */
    void (*rec_bytes)(void *rec, bool read, const void *buf, size_t len);
    void (*rec_keylog)(void *rec, const char *line); /* NUL-terminated, no '\n' */
    /* bytes before the backlog bound (SIZE_MAX: none); below NEED, the calling thread is woken
     * when room is made (capture_rec_room_wait) */
    size_t (*rec_room)(void *rec, size_t need);
    void (*rec_free)(void *rec);               /* ends the trace (closed event) and frees */
    struct live_hub *(*live)(const void *cfg); /* the live-viewer hub of CFG */
};

/* Installs the wire-capture implementation (OPS: static, borrowed forever). */
void tls_wire_register(const struct tls_wire_ops *ops);
/* The installed implementation, or NULL (built without capture). */
const struct tls_wire_ops *tls_wire_get(void);

/* One listener's or cluster's TLS settings. Immutable after tls_config_wrap() except for the
 * upstream session cache, which has its own lock. Shared by all workers: SSL_new() on a
 * configured SSL_CTX is thread-safe. */
struct tls_config {
    SSL_CTX *ssl_ctx; /* owned */
    enum ts_side side;
    char *sni;   /* upstream SNI, owned, NULL = none */
    char *owner; /* stats prefix, owned */
    bool verify; /* a validation_context was given */
    bool has_ca; /* trusted_ca given: chain errors fail the handshake */
    struct tls_san *sans;
    size_t nsans;
    unsigned char (*hashes)[32]; /* verify_certificate_hash, raw SHA-256 */
    size_t nhashes;
    unsigned char *alpn; /* wire format (length-prefixed), owned; NULL = none */
    size_t alpn_len;
    struct tls_keylog *keylog; /* owned, NULL = no key log */
    void *wire_cfg;            /* socktap_wire_capture, owned (tls_wire_get()->free_cfg) */

    pthread_mutex_t session_lock; /* guards session */
    SSL_SESSION *session;         /* upstream: last session for resumption, owned ref */

    stat_id st_handshake;       /* <owner>.ssl.handshake */
    stat_id st_error;           /* <owner>.ssl.handshake_error / .ssl.connection_error */
    stat_id st_session_reused;  /* <owner>.ssl.session_reused */
    stat_id st_fail_verify_san; /* <owner>.ssl.fail_verify_san */
    stat_id st_fail_verify_hash;
    stat_id st_fail_verify_error;   /* chain did not verify */
    stat_id st_fail_verify_no_cert; /* mTLS: client sent none */
};

/* Takes ownership of SSL_CTX (configured by the caller: certificates, verify mode, ALPN) and
 * makes a config for SIDE whose stats are prefixed by OWNER (copied; registers the stats, so
 * call on the main thread: at start or in a reload). SNI (copied, NULL allowed) is sent by upstream
 * sockets. Installs the callbacks tls.c needs (verify, ALPN select, key log, session cache). On
 * success *OUT is owned by the caller (tls_config_free); on failure SSL_CTX is freed too. */
int tls_config_wrap(SSL_CTX *ssl_ctx, enum ts_side side, const char *owner, const char *sni,
                    struct tls_config **out) __attribute__((warn_unused_result));
/* Frees CFG (NULL allowed) and everything it owns; no socket made from it may remain. */
void tls_config_free(struct tls_config *cfg);

/* Opens (creating, mode 0600, O_APPEND, refusing symlinks) the NSS key log PATH for CFG.
 * Returns 0 or -errno. */
int tls_config_set_keylog(struct tls_config *cfg, const char *path)
    __attribute__((warn_unused_result));

/* Creates a TLS socket over INFO->fd. On success the socket owns the fd and *OUT is freed with
 * ts_destroy(); on failure the fd is untouched. CFG must outlive the socket. */
int tls_socket_create(const struct tls_config *cfg, const struct ts_conn_info *info,
                      struct transport_socket **out) __attribute__((warn_unused_result));

/* The negotiated ALPN protocol of TS (a tls socket), or NULL; *LEN gets its length. */
const char *tls_socket_alpn(const struct transport_socket *ts, size_t *len);

#endif

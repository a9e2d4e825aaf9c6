/* Transport sockets are found by name (Envoy's names) in a registry; each kind brings its own
 * config parser and its own constructor, so config/ knows nothing of TLS or capture and the
 * capture socket can wrap "any registered socket" by asking the registry for its inner one. */
#ifndef SOCKTAP_TRANSPORT_TS_REGISTRY_H
#define SOCKTAP_TRANSPORT_TS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cfgtree/cfg_node.h"
#include "transport/transport_socket.h"

struct ts_parse_ctx {
    struct cfg_err *err;
    const struct cfg_doc *doc;
    enum ts_side side; /* listener filter chain: DOWNSTREAM; cluster: UPSTREAM */
    const char
        *owner_name; /* owner's stats prefix: "listener.127.0.0.1_10000" or "cluster.backend" */
};

struct live_hub;
struct event_base;

struct ts_factory {
    const char *const *names;     /* NULL-terminated; first is the canonical one */
    const char *const *type_urls; /* accepted typed_config "@type" values; NULL-terminated */
    /* Optional: the v2 key of a filter chain or cluster that configures this kind directly,
     * without a `transport_socket:` ("tls_context" for TLS); its map goes to parse. */
    const char *legacy_key;
    /* Parses CONFIG: the `config:` map (v2) or the `typed_config:` map minus "@type" (v3);
     * NULL when neither was given. Registers the kind's stats. On success *OUT_CFG is owned by
     * the caller (freed with free_cfg). */
    int (*parse)(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                 const struct cfg_path *path, void **out_cfg);
    /* Builds a socket stack for one connection. On success the stack owns info->fd; on failure
     * the fd is untouched (the caller closes it). CFG outlives every socket made from it. */
    int (*create)(const void *cfg, const struct ts_conn_info *info, struct transport_socket **out);
    void (*free_cfg)(void *cfg);
    /* Optional: stops the kind's process-wide helpers (the capture writer thread), writing out
     * what they hold. Called once by ts_registry_shutdown(), after every socket is gone. */
    void (*shutdown)(void);
    /* Optional, with fence_passed: a mark of the work the kind's helper threads have queued
     * now, and whether they are through it. A config freed while the process runs (a reload)
     * waits for a fence taken after its last socket is gone: the helpers may still read it. */
    uint64_t (*fence)(void);
    bool (*fence_passed)(uint64_t mark);
    /* Optional: the live-viewer hub of CFG's capture (live_hub.h), or NULL. WIRE asks for
     * the TLS wire capture instead of the plaintext one; a wrapper looks through to its inner
     * socket when it has no such capture itself. */
    struct live_hub *(*live)(const void *cfg, bool wire);
    /* Optional: starts the kind's process-wide timers on the main loop, after the stats are
     * frozen (capture: the budget's statvfs/reconcile tick). Called by ts_registry_start. */
    void (*start)(struct event_base *main_base);
    /* Optional: turns the capture of CFG on or off for new connections (admin). 0 or -errno. */
    int (*set_capture)(const void *cfg, bool enabled);
    /* Optional, process-wide: writes the JSON of GET /captures (at most MAX_FINISHED finished
     * traces per prefix). 0 or -errno. Kinds sharing one hook are asked once. */
    int (*write_captures)(FILE *out, size_t max_finished);
    /* Optional: the `admin_config.config_id` of CFG (a tap that waits for the admin's POST
     * /tap), or NULL. Borrowed from CFG. */
    const char *(*admin_id)(const void *cfg);
    /* Optional, per thread: EFD (an eventfd of the calling worker, open until shutdown; -1:
     * none) is where the kind's helper threads signal that a socket of this thread which
     * answered `blocked` may move again (capture: the writer made room in its backlog). The
     * worker then retries its held connections at once, not on their timer. */
    void (*set_waker)(int efd);
};

#define TS_REGISTRY_MAX 16

/* The helper threads' queues at one moment (ts_registry_fence), one mark per kind. */
struct ts_fence {
    uint64_t mark[TS_REGISTRY_MAX];
};

/* A parsed `transport_socket:`: which factory and its parsed config. Zeroed = none given. */
struct ts_config {
    const struct ts_factory *factory;
    void *cfg;
};

/* Registers the built-in kinds (raw_buffer, tls, capture/tap when built). Idempotent. Called
 * once by main (and by tests and fuzz drivers) before any config is parsed. */
void ts_registry_init(void);
/* Runs every registered kind's shutdown hook. Called by main after the last socket is destroyed
 * and before the stats are freed (helper threads count into them). Idempotent. */
void ts_registry_shutdown(void);
/* Runs every registered kind's start hook (once per distinct hook) on BASE, the main loop.
 * Called by the server after stats_freeze. */
void ts_registry_start(struct event_base *base);
/* Gives every kind's set_waker hook (once per distinct hook) the calling thread's EFD. Called
 * by each worker at its start. */
void ts_registry_set_waker(int efd);
/* GET /captures: the first registered write_captures hook's output. -ENOENT when no kind has
 * one (capture compiled out). */
int ts_registry_write_captures(FILE *out, size_t max_finished);
/* Turns the capture of TS on or off for new connections: -ENOENT when TS's kind has none. */
int ts_config_set_capture(const struct ts_config *ts, bool enabled);
/* Marks in *OUT the work every kind's helper threads have queued now. Any thread. */
void ts_registry_fence(struct ts_fence *out) __attribute__((nonnull));
/* True once every kind's helpers are through the work F marked: a config whose sockets were
 * all destroyed before F was taken can be freed. Any thread. */
bool ts_registry_fence_passed(const struct ts_fence *f) __attribute__((nonnull));
/* F must outlive the process (static const). */
void ts_registry_add(const struct ts_factory *f);
const struct ts_factory *ts_registry_find(const char *name);
/* The kind that declared KEY as its legacy_key, or NULL. */
const struct ts_factory *ts_registry_find_legacy(const char *key);

/* Parses NODE, a `transport_socket:` map {name, config | typed_config}. A missing name is an
 * error; an unknown name lists the known ones; names of kinds compiled out say so. */
int ts_config_parse(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                    const struct cfg_path *path, struct ts_config *out);
/* The live-viewer hub of TS's capture (see ts_factory.live), or NULL when TS captures nothing
 * (or, with WIRE, has no TLS wire capture). Borrowed: lives as long as TS. */
struct live_hub *ts_config_live(const struct ts_config *ts, bool wire);

/* The admin_config config_id of TS's tap (see ts_factory.admin_id), or NULL. Borrowed: lives as
 * long as TS. */
const char *ts_config_admin_id(const struct ts_config *ts);

/* Fills OUT with raw_buffer (the default when no transport_socket is configured). */
void ts_config_default(struct ts_config *out);
/* Creates a socket stack for a connection from a parsed config; see ts_factory.create. */
int ts_config_create(const struct ts_config *cfg, const struct ts_conn_info *info,
                     struct transport_socket **out);
void ts_config_free(struct ts_config *cfg);

#endif

/* The capture and tap transport sockets: wrap any registered transport socket and record every
 * byte that crosses it into a trace file per connection, streamed to disk (docs/capture.md).
 *
 * Two factories share one implementation:
 *   capture (envoy.transport_sockets.capture, 2018): v2alpha Trace, PROTO_BINARY / PROTO_TEXT;
 *   tap (envoy.transport_sockets.tap, v3 typed_config Tap): TraceWrapper, all five formats,
 *        streaming or buffered (bounded by max_buffered_rx/tx_bytes).
 * Stats (registered at parse time, per owner, Envoy-style):
 *   <owner>.<capture|tap>.{files_opened, files_failed, events, events_dropped, backpressure,
 * bytes_written, write_errors, truncated, reads_in_place}, e.g.
 * listener.127.0.0.1_10000.capture.files_opened, and capture_finish.h's (rotation, finished_dir,
 * on_finished); socktap_limits' budgets and runtime control (capture_store.h, docs/capture.md):
 * limit_trace_bytes, budget_skipped, budget_stopped, budget_deleted, disabled_skipped, rejected,
 * and the gauge enabled. */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_H
#define SOCKTAP_TRANSPORT_CAPTURE_H

#include <stddef.h>

#include "transport/live_hub.h"

#include "core/stats.h"
#include "trace/trace_encode.h"
#include "transport/capture_compress.h"
#include "transport/capture_finish.h"
#include "transport/tap_feat.h"
#include "transport/ts_registry.h"

/* the default backlog: measured in docs/capture.md, "Backlog bound" */
#define CAPTURE_DEFAULT_MAX_BACKLOG (1024u * 1024u)
#define CAPTURE_CHUNK_BYTES         (256u * 1024u)

extern const struct ts_factory capture_socket_factory;
extern const struct ts_factory tap_socket_factory;

/* Registers both factories (the one line in ts_builtin.c). */
void capture_register_factories(void);

struct capture_stats {
    stat_id files_opened, files_failed, events, events_dropped, bytes_written, write_errors,
        truncated, backpressure;
    stat_id reads_in_place; /* events recorded by the zero-copy read (capture_rec_flat_begin) */
    stat_id limit_trace_bytes, budget_skipped, budget_stopped, budget_deleted, disabled_skipped,
        rejected;
    stat_id enabled; /* gauge, set on the main thread */
};

/* What changes at runtime in a config the workers otherwise only read (all atomic). */
struct capture_runtime {
    bool enabled;      /* admin POST /capture/...?enabled=: new connections are captured */
    bool limit_logged; /* a max_trace_bytes cut was logged; reset by a trace captured whole */
};
struct capture_store;

/* socktap extension `socktap_limits` (docs/capture.md "Budgets and retention", "Rotation and
 * finished files"): what bounds a capture config's disk use and what happens to finished files.
 * Every number 0 means "no limit"; a config without the block behaves as Envoy's (no limits). */
enum capture_policy { CAPTURE_POLICY_STOP_NEW, CAPTURE_POLICY_DELETE_OLDEST };
enum capture_on_failure { CAPTURE_ON_FAILURE_PROXY, CAPTURE_ON_FAILURE_REJECT };
struct capture_limits {
    uint64_t max_trace_bytes; /* per connection (per trace, all its rotated pieces) */
    uint64_t max_total_bytes; /* per path_prefix: the traces on disk (finished_dir's too) */
    uint64_t max_files;       /* per path_prefix, likewise */
    enum capture_policy policy;
    uint64_t min_free_bytes; /* free space floor of the prefix's filesystem (statvfs) */
    uint64_t rotate_bytes;   /* a trace piece's size that ends it: `<prefix>_<id>.<n><ext>` */
    uint64_t rotate_ms;      /* a trace piece's age that ends it (rotate_seconds) */
    char *finished_dir;      /* owned or NULL: finished traces are renamed into it */
    char **on_finished; /* owned or NULL: argv (NULL-terminated) run with the finished file's path
                           appended as its last argument */
    enum capture_on_failure on_failure; /* a trace that cannot be opened: relay or close */
};

/* A parsed capture/tap config; owned by the registry's ts_config, freed by free_cfg. */
struct capture_cfg {
    const char *kind;  /* "capture" or "tap": stats and log prefix */
    char *path_prefix; /* owned; NULL for a tap with the UDP sink (feat.udp), which has no file */
    struct trace_enc_cfg enc;
    size_t max_backlog; /* socktap extension `socktap_max_backlog_bytes`, default 1 MiB */
    struct capture_compress_cfg comp; /* socktap extension `socktap_compression`, default none */
    struct capture_limits limits;     /* socktap extension `socktap_limits`, default none */
    /* socktap extension `socktap_record_half_close`: a half-close that moved no bytes is
     * recorded as a 0-byte write with end_stream (Envoy records writes that moved bytes only) */
    bool record_half_close;
    char ext[40]; /* the trace files' extension: the format's, then ".zst"/".lz4" if compressed */
    struct ts_config inner;
    struct capture_stats stats;
    struct capture_finish_stats fstats; /* rotation, finished_dir, on_finished */
    /* owned, atomic, shared by the workers (the config itself is const to them): a create
     * failure was logged and no file opened since, so the next ones are only counted (a missing
     * directory must not log once per connection) */
    bool *create_failing;
    bool *write_failing;         /* the same for write errors (ENOSPC fails every open trace) */
    struct live_hub *live;       /* owned: live viewers (admin /capture/live.pcapng) */
    char *owner;                 /* owned: the stats prefix ("listener.127.0.0.1_10000") */
    struct capture_runtime *rt;  /* owned */
    struct capture_store *store; /* the prefix's account (capture_store_attach), a reference */
    struct tap_feat feat;        /* tap only: socket_tap_config, tap_enabled, match, UDP sink */
    /* owned or NULL: `common_config.admin_config.config_id`. Such a tap has no file sink: it
     * records nothing while no admin client is attached (POST /tap, admin_tap.h), and
     * otherwise only publishes to LIVE, from which the admin client builds its traces. */
    char *admin_id;
};

/* What a POST /tap request's `tap_config` asks for (envoy.config.tap.v3.TapConfig with one
 * streaming_admin or buffered_admin sink). */
struct tap_admin_request {
    struct trace_enc_cfg enc; /* v3 tap; format, streaming, max_buffered_rx/tx */
    bool buffered;            /* buffered_admin: max_traces then end; else streaming_admin */
    uint64_t max_traces;      /* buffered_admin: > 0 */
    uint64_t timeout_ms;      /* buffered_admin: 0 = none */
};

/* Parses TAP_CONFIG (a POST /tap body's `tap_config`, at PATH) into *OUT. Errors name the key,
 * as the config's do. Returns 0 or -EINVAL (CTX->err filled). */
int tap_admin_request_parse(struct ts_parse_ctx *ctx, const struct cfg_node *tap_config,
                            const struct cfg_path *path, struct tap_admin_request *out)
    __attribute__((warn_unused_result, nonnull));

/* Turns capture on or off for the new connections of the capture/tap config CFG (admin, main
 * thread): the workers read the flag at each connection's start; the `enabled` gauge follows. */
void capture_cfg_set_enabled(struct capture_cfg *cfg, bool enabled) __attribute__((nonnull));

/* Parsers, exposed for unit tests: CONFIG is the `config:` (capture) or `typed_config:` minus
 * "@type" (tap) map, PATH its key path. On success *OUT is the caller's (capture_cfg_free). */
int capture_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                      const struct cfg_path *path, void **out);
int tap_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                  const struct cfg_path *path, void **out);
/* The TLS socket's `socktap_wire_capture: {path_prefix, format, socktap_max_backlog_bytes}`
 * (socktap extension): a streamed v3 trace of the TLS records, kind "tls_wire" (stats
 * <owner>.tls_wire.*). Same contract as the parsers above. */
int capture_wire_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                           const struct cfg_path *path, void **out);
/* CFG may be NULL. */
void capture_cfg_free(void *cfg);

#endif

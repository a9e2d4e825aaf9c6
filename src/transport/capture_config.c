/* Config parsing for the capture (2018 `config:`) and tap (v3 `typed_config:`) forms. Both end
 * in one struct capture_cfg; everything the socket needs is validated here, with the key path of
 * the offending node, so the runtime never meets a bad value. Only what socktap implements is
 * accepted: other tap matchers and sinks fail with "not supported" rather than being ignored,
 * because a silently ignored matcher would capture traffic the operator meant to exclude. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/conn_id.h"
#include "core/log.h"
#include "transport/capture.h"
#include "transport/capture_disk.h"
#include "transport/capture_store.h"

static const char *const v2_format_names[] = {"PROTO_BINARY", "PROTO_TEXT", NULL};
static const enum trace_format v2_formats[] = {TRACE_FMT_PROTO_BINARY, TRACE_FMT_PROTO_TEXT};

/* Envoy's OutputSink.Format order (JSON_BODY_AS_BYTES = 0 is the proto default). */
static const char *const v3_format_names[] = {"JSON_BODY_AS_BYTES", "JSON_BODY_AS_STRING",
                                              "PROTO_BINARY",       "PROTO_BINARY_LENGTH_DELIMITED",
                                              "PROTO_TEXT",         NULL};
static const enum trace_format v3_formats[] = {
    TRACE_FMT_JSON_BODY_AS_BYTES, TRACE_FMT_JSON_BODY_AS_STRING, TRACE_FMT_PROTO_BINARY,
    TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED, TRACE_FMT_PROTO_TEXT};

void capture_cfg_free(void *p)
{
    struct capture_cfg *cfg = p;
    if (!cfg)
        return;
    capture_store_detach(cfg);
    ts_config_free(&cfg->inner);
    free(cfg->limits.finished_dir);
    if (cfg->limits.on_finished)
        for (char **a = cfg->limits.on_finished; *a; a++)
            free(*a);
    free(cfg->limits.on_finished);
    free(cfg->path_prefix);
    free(cfg->create_failing);
    free(cfg->write_failing);
    free(cfg->rt);
    free(cfg->owner);
    free(cfg->admin_id);
    live_hub_free(cfg->live);
    tap_feat_free(&cfg->feat);
    free(cfg);
}

static void capture_register_stats(struct capture_cfg *cfg, const char *owner)
{
    const char *o = owner ? owner : "socktap";
    struct capture_stats *s = &cfg->stats;
    s->files_opened = stats_registerf(STAT_COUNTER, "%s.%s.files_opened", o, cfg->kind);
    s->files_failed = stats_registerf(STAT_COUNTER, "%s.%s.files_failed", o, cfg->kind);
    s->events = stats_registerf(STAT_COUNTER, "%s.%s.events", o, cfg->kind);
    s->events_dropped = stats_registerf(STAT_COUNTER, "%s.%s.events_dropped", o, cfg->kind);
    s->bytes_written = stats_registerf(STAT_COUNTER, "%s.%s.bytes_written", o, cfg->kind);
    s->write_errors = stats_registerf(STAT_COUNTER, "%s.%s.write_errors", o, cfg->kind);
    s->truncated = stats_registerf(STAT_COUNTER, "%s.%s.truncated", o, cfg->kind);
    s->backpressure = stats_registerf(STAT_COUNTER, "%s.%s.backpressure", o, cfg->kind);
    s->reads_in_place = stats_registerf(STAT_COUNTER, "%s.%s.reads_in_place", o, cfg->kind);
    s->limit_trace_bytes = stats_registerf(STAT_COUNTER, "%s.%s.limit_trace_bytes", o, cfg->kind);
    s->budget_skipped = stats_registerf(STAT_COUNTER, "%s.%s.budget_skipped", o, cfg->kind);
    s->budget_stopped = stats_registerf(STAT_COUNTER, "%s.%s.budget_stopped", o, cfg->kind);
    s->budget_deleted = stats_registerf(STAT_COUNTER, "%s.%s.budget_deleted", o, cfg->kind);
    s->disabled_skipped = stats_registerf(STAT_COUNTER, "%s.%s.disabled_skipped", o, cfg->kind);
    s->rejected = stats_registerf(STAT_COUNTER, "%s.%s.rejected", o, cfg->kind);
    s->enabled = stats_registerf(STAT_GAUGE, "%s.%s.enabled", o, cfg->kind);
    capture_finish_register_stats(&cfg->fstats, owner, cfg->kind);
}

/* Traces hold decrypted traffic: a directory anyone may write to without the sticky bit lets
 * any local user rename, delete or replace them (O_EXCL|O_NOFOLLOW protect the create, not
 * what happens after it). A directory that does not exist yet is a warning here, not an error
 * (a capture target may be mounted later); connections then count files_failed, logged once. */
static int check_prefix_dir(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                            const struct cfg_path *path, const char *prefix)
{
    char dir[4096];
    struct stat st;
    if (capture_prefix_dir(prefix, dir, sizeof(dir)))
        return cfg_error(ctx->err, ctx->doc, node, path, "path prefix too long");
    if (stat(dir, &st) != 0) {
        char kp[512];
        LOGW(LOG_NO_CONN,
             "%s:%u:%u: %s: capture directory '%s' does not exist: connections are not "
             "captured until it does",
             ctx->doc->file, node->line, node->col, cfg_path_format(path, kp, sizeof(kp)), dir);
        return 0;
    }
    if (!S_ISDIR(st.st_mode))
        return cfg_error(ctx->err, ctx->doc, node, path, "'%s' is not a directory", dir);
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
        return cfg_error(
            ctx->err, ctx->doc, node, path,
            "directory '%s' is world-writable without the sticky bit: any local user "
            "could rename, delete or replace the traces; use a private directory (0700) or set "
            "the sticky bit (chmod +t)",
            dir);
    return 0;
}

static int parse_path_prefix(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                             const struct cfg_path *path, struct capture_cfg *cfg)
{
    const char *s;
    if (!node)
        return cfg_error(ctx->err, ctx->doc, NULL, path, "path_prefix is required");
    int rc = cfg_get_string(ctx->err, ctx->doc, node, path, &s);
    if (rc)
        return rc;
    if (!*s)
        return cfg_error(ctx->err, ctx->doc, node, path, "expected a non-empty path prefix");
    if ((rc = check_prefix_dir(ctx, node, path, s)))
        return rc;
    /* A restart continues after the last run's traces instead of colliding with them (see
     * core/conn_id.h); an unreadable directory leaves the collision handling of
     * capture_file_create as the fallback. */
    uint64_t next;
    if (!capture_next_free_id(s, &next) && next) {
        conn_id_reserve(next - 1);
        LOGI(LOG_NO_CONN,
             "capture: %s already holds traces up to _%" PRIu64
             "; connection ids continue at %" PRIu64,
             s, next - 1, next);
    }
    cfg->path_prefix = strdup(s);
    cfg->create_failing = calloc(1, sizeof(*cfg->create_failing));
    cfg->write_failing = calloc(1, sizeof(*cfg->write_failing));
    return cfg->path_prefix && cfg->create_failing && cfg->write_failing ? 0 : -ENOMEM;
}

/* socktap's backlog knob `socktap_max_backlog_bytes` in CONFIG, if given. */
static int parse_backlog(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                         const struct cfg_path *path, struct capture_cfg *cfg)
{
    const struct cfg_node *n = cfg_map_get(config, "socktap_max_backlog_bytes");
    if (!n)
        return 0;
    struct cfg_path p = CFG_PATH_KEY(path, "socktap_max_backlog_bytes");
    uint64_t v;
    int rc = cfg_get_u64(ctx->err, ctx->doc, n, &p, CAPTURE_CHUNK_BYTES, 1ull << 40, &v);
    if (rc)
        return rc;
    cfg->max_backlog = (size_t)v;
    return 0;
}

/* A level: an integer in ALG's range (zstd has negative fast levels, so not cfg_get_u64). */
static int parse_level(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                       const struct cfg_path *path, enum capture_compress_alg alg, int *out)
{
    int min, max, def;
    capture_compress_levels(alg, &min, &max, &def);
    char got[96];
    const char *s = node->type == CFG_SCALAR ? node->str : "";
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < min || v > max)
        return cfg_error(ctx->err, ctx->doc, node, path,
                         "expected an integer %d..%d for %s, got %s", min, max,
                         capture_compress_names[alg], cfg_node_describe(node, got, sizeof(got)));
    *out = (int)v;
    return 0;
}

/* socktap extension `socktap_compression` in CONFIG, if given: `zstd`, `lz4`, `none`, or
 * `{algorithm: zstd|lz4|none, level: N}`. */
static int parse_compression(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                             const struct cfg_path *path, struct capture_cfg *cfg)
{
    static const char *const keys[] = {"algorithm", "level", NULL};
    const struct cfg_node *n = cfg_map_get(config, "socktap_compression");
    if (!n)
        return 0;
    struct cfg_path p = CFG_PATH_KEY(path, "socktap_compression");
    const struct cfg_node *alg_node = n, *level_node = NULL;
    struct cfg_path alg_path = p, level_path = CFG_PATH_KEY(&p, "level");
    int rc, idx, min, max;
    if (n->type == CFG_MAP) {
        if ((rc = cfg_check_keys(ctx->err, ctx->doc, n, &p, keys)))
            return rc;
        alg_path = CFG_PATH_KEY(&p, "algorithm");
        if (!(alg_node = cfg_map_get(n, "algorithm")))
            return cfg_error(ctx->err, ctx->doc, n, &alg_path, "algorithm is required");
        level_node = cfg_map_get(n, "level");
    }
    if ((rc = cfg_get_enum(ctx->err, ctx->doc, alg_node, &alg_path, capture_compress_names, &idx)))
        return rc;
    cfg->comp.alg = (enum capture_compress_alg)idx;
    capture_compress_levels(cfg->comp.alg, &min, &max, &cfg->comp.level);
    if (level_node && cfg->comp.alg == CAPTURE_COMPRESS_NONE)
        return cfg_error(ctx->err, ctx->doc, level_node, &level_path,
                         "a level needs algorithm zstd or lz4");
    if (level_node)
        return parse_level(ctx, level_node, &level_path, cfg->comp.alg, &cfg->comp.level);
    return 0;
}

/* A byte count of socktap_limits: a plain integer, 0 meaning no limit. */
static int limit_u64(struct ts_parse_ctx *ctx, const struct cfg_node *map,
                     const struct cfg_path *path, const char *key, uint64_t min, uint64_t *out)
{
    const struct cfg_node *n = cfg_map_get(map, key);
    if (!n)
        return 0;
    struct cfg_path p = CFG_PATH_KEY(path, key);
    int rc = cfg_get_u64(ctx->err, ctx->doc, n, &p, 0, UINT64_MAX / 2, out);
    if (rc)
        return rc;
    if (*out && *out < min)
        return cfg_error(ctx->err, ctx->doc, n, &p,
                         "expected 0 (no limit) or at least %" PRIu64 ", got %" PRIu64, min, *out);
    return 0;
}

/* finished_dir: an existing private directory on the prefix's filesystem, so a finished trace
 * moves there with one atomic rename(2) (a copy across filesystems could be seen half-written,
 * which is what the directory exists to prevent). */
static int limits_finished_dir(struct ts_parse_ctx *ctx, const struct cfg_node *n,
                               const struct cfg_path *path, const struct capture_cfg *cfg,
                               char **out)
{
    const char *s;
    struct stat st, pst;
    char dir[4096];
    int rc = cfg_get_string(ctx->err, ctx->doc, n, path, &s);
    if (rc)
        return rc;
    if (!*s)
        return cfg_error(ctx->err, ctx->doc, n, path, "expected a directory");
    if (stat(s, &st) != 0)
        return cfg_error(ctx->err, ctx->doc, n, path, "cannot use '%s': %s", s, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cfg_error(ctx->err, ctx->doc, n, path, "'%s' is not a directory", s);
    if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
        return cfg_error(ctx->err, ctx->doc, n, path,
                         "directory '%s' is world-writable without the sticky bit: any local user "
                         "could rename, delete or replace the traces",
                         s);
    if (!capture_prefix_dir(cfg->path_prefix, dir, sizeof(dir)) && stat(dir, &pst) == 0 &&
        pst.st_dev != st.st_dev)
        return cfg_error(ctx->err, ctx->doc, n, path,
                         "'%s' is on another filesystem than the traces' directory '%s': finished "
                         "traces are moved with rename(2), which cannot cross filesystems",
                         s, dir);
    /* finished traces leave the prefix's directory: a restart continues after them too */
    char fprefix[4096];
    const char *slash = strrchr(cfg->path_prefix, '/');
    uint64_t next;
    int len = snprintf(fprefix, sizeof(fprefix), "%s/%s", s, slash ? slash + 1 : cfg->path_prefix);
    if (len > 0 && (size_t)len < sizeof(fprefix) && !capture_next_free_id(fprefix, &next) && next) {
        conn_id_reserve(next - 1);
        LOGI(LOG_NO_CONN,
             "capture: %s already holds finished traces up to _%" PRIu64
             "; connection ids continue above it",
             s, next - 1);
    }
    return (*out = strdup(s)) ? 0 : -ENOMEM;
}

/* on_finished: a program (run directly, no shell) or [program, args...]; the finished file's
 * path is appended as the last argument. */
static int limits_on_finished(struct ts_parse_ctx *ctx, const struct cfg_node *n,
                              const struct cfg_path *path, char ***out)
{
    size_t argc = n->type == CFG_SEQ ? n->n : 1;
    int rc = 0;
    if (n->type == CFG_SEQ && !argc)
        return cfg_error(ctx->err, ctx->doc, n, path, "expected a program and its arguments");
    char **argv = calloc(argc + 1, sizeof(*argv));
    if (!argv)
        return -ENOMEM;
    for (size_t i = 0; i < argc; i++) {
        const struct cfg_node *a = n->type == CFG_SEQ ? n->items[i] : n;
        struct cfg_path p = n->type == CFG_SEQ ? CFG_PATH_INDEX(path, i) : *path;
        const char *s;
        if ((rc = cfg_get_string(ctx->err, ctx->doc, a, &p, &s)))
            goto err_free;
        if (i == 0 && !*s) {
            rc = cfg_error(ctx->err, ctx->doc, a, &p, "expected a program");
            goto err_free;
        }
        if (i == 0 && strchr(s, '/') && access(s, X_OK) != 0) {
            rc = cfg_error(ctx->err, ctx->doc, a, &p, "cannot run '%s': %s", s, strerror(errno));
            goto err_free;
        }
        if (!(argv[i] = strdup(s))) {
            rc = -ENOMEM;
            goto err_free;
        }
    }
    *out = argv;
    return 0;

err_free:
    for (size_t i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
    return rc;
}

/* socktap extension `socktap_limits` in CONFIG, if given (after path_prefix is parsed). */
static int parse_limits(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                        const struct cfg_path *path, struct capture_cfg *cfg)
{
    static const char *const keys[] = {"max_trace_bytes",
                                       "max_total_bytes",
                                       "max_files",
                                       "policy",
                                       "min_free_bytes",
                                       "rotate_bytes",
                                       "rotate_seconds",
                                       "finished_dir",
                                       "on_finished",
                                       "on_capture_failure",
                                       NULL};
    static const char *const policies[] = {"stop_new", "delete_oldest", NULL};
    static const char *const failures[] = {"proxy", "reject", NULL};
    const struct cfg_node *m = cfg_map_get(config, "socktap_limits"), *n;
    if (!m || cfg_node_is_null(m))
        return 0;
    struct cfg_path p = CFG_PATH_KEY(path, "socktap_limits");
    struct capture_limits *l = &cfg->limits;
    uint64_t secs = 0;
    int rc, idx;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, m, &p, keys)) ||
        (rc = limit_u64(ctx, m, &p, "max_trace_bytes", 1, &l->max_trace_bytes)) ||
        (rc = limit_u64(ctx, m, &p, "max_total_bytes", 4096, &l->max_total_bytes)) ||
        (rc = limit_u64(ctx, m, &p, "max_files", 1, &l->max_files)) ||
        (rc = limit_u64(ctx, m, &p, "min_free_bytes", 1, &l->min_free_bytes)) ||
        (rc = limit_u64(ctx, m, &p, "rotate_bytes", 4096, &l->rotate_bytes)) ||
        (rc = limit_u64(ctx, m, &p, "rotate_seconds", 1, &secs)))
        return rc;
    if (secs > UINT64_MAX / 1000 / 2) {
        struct cfg_path kp = CFG_PATH_KEY(&p, "rotate_seconds");
        return cfg_error(ctx->err, ctx->doc, cfg_map_get(m, "rotate_seconds"), &kp, "too large");
    }
    l->rotate_ms = secs * 1000;
    if ((n = cfg_map_get(m, "policy"))) {
        struct cfg_path kp = CFG_PATH_KEY(&p, "policy");
        if ((rc = cfg_get_enum(ctx->err, ctx->doc, n, &kp, policies, &idx)))
            return rc;
        l->policy = (enum capture_policy)idx;
        if (l->policy == CAPTURE_POLICY_DELETE_OLDEST && !l->max_total_bytes && !l->max_files)
            return cfg_error(ctx->err, ctx->doc, n, &kp,
                             "delete_oldest needs max_total_bytes or max_files to act on");
    }
    if ((n = cfg_map_get(m, "on_capture_failure"))) {
        struct cfg_path kp = CFG_PATH_KEY(&p, "on_capture_failure");
        if ((rc = cfg_get_enum(ctx->err, ctx->doc, n, &kp, failures, &idx)))
            return rc;
        l->on_failure = (enum capture_on_failure)idx;
    }
    if ((n = cfg_map_get(m, "finished_dir"))) {
        struct cfg_path kp = CFG_PATH_KEY(&p, "finished_dir");
        if ((rc = limits_finished_dir(ctx, n, &kp, cfg, &l->finished_dir)))
            return rc;
    }
    if ((n = cfg_map_get(m, "on_finished"))) {
        struct cfg_path kp = CFG_PATH_KEY(&p, "on_finished");
        if ((rc = limits_on_finished(ctx, n, &kp, &l->on_finished)))
            return rc;
    }
    return 0;
}

/* The keys both forms share at their top level (the inner socket, socktap's backlog and
 * compression knobs),
 * then the stats: registered only for a config that parsed. */
/* The last step of every capture config: its stats, its files' extension, its runtime state
 * and its prefix's account. Returns 0 or -ENOMEM. */
static int capture_cfg_done(struct capture_cfg *cfg, const char *owner)
{
    /* A batched tap holds up to min_streamed_sent_bytes in its encoder, counted in the backlog
     * (capture_rec_room): the bound must leave room for a whole batch and a read beside it, or
     * a held batch alone would hold the connection for ever. */
    size_t batch_room = 2 * (size_t)cfg->enc.min_streamed_sent + CAPTURE_CHUNK_BYTES;
    if (cfg->enc.min_streamed_sent && cfg->max_backlog < batch_room)
        cfg->max_backlog = batch_room;
    snprintf(cfg->ext, sizeof(cfg->ext), "%s%s", trace_format_extension(cfg->enc.format),
             capture_compress_suffix(cfg->comp.alg));
    capture_register_stats(cfg, owner);
    if (cfg->enc.schema == TRACE_SCHEMA_V3_TAP && !strcmp(cfg->kind, "tap"))
        tap_feat_register_stats(&cfg->feat, owner);
    if (!(cfg->owner = strdup(owner ? owner : "socktap")) ||
        !(cfg->rt = calloc(1, sizeof(*cfg->rt))))
        return -ENOMEM;
    cfg->rt->enabled = true;
    if (cfg->admin_id) {
        stats_add(cfg->stats.enabled, 1); /* an admin tap writes no files: no prefix account */
        return 0;
    }
    return cfg->path_prefix ? capture_store_attach(cfg) : 0; /* a UDP sink has no files */
}

void capture_cfg_set_enabled(struct capture_cfg *cfg, bool enabled)
{
    if (__atomic_exchange_n(&cfg->rt->enabled, enabled, __ATOMIC_RELAXED) == enabled)
        return;
    stats_add(cfg->stats.enabled, enabled ? 1 : -1);
    LOGI(LOG_NO_CONN, "%s.%s: capture %s for new connections (admin)", cfg->owner, cfg->kind,
         enabled ? "enabled" : "disabled");
}

static int parse_common(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                        const struct cfg_path *path, struct capture_cfg *cfg)
{
    static const char *const file_keys[] = {"socktap_max_backlog_bytes", "socktap_compression",
                                            "socktap_limits", NULL};
    for (const char *const *k = file_keys; cfg->admin_id && *k; k++) {
        const struct cfg_node *n = cfg_map_get(config, *k);
        struct cfg_path p = CFG_PATH_KEY(path, *k);
        if (n) /* refused rather than ignored: it would bound nothing */
            return cfg_error(ctx->err, ctx->doc, n, &p,
                             "applies to trace files; an admin_config tap writes none");
    }
    int rc = parse_backlog(ctx, config, path, cfg);
    if (rc || (rc = parse_compression(ctx, config, path, cfg)) ||
        (rc = parse_limits(ctx, config, path, cfg)))
        return rc;
    const struct cfg_node *n = cfg_map_get(config, "socktap_record_half_close");
    if (n) {
        struct cfg_path p = CFG_PATH_KEY(path, "socktap_record_half_close");
        if ((rc = cfg_get_bool(ctx->err, ctx->doc, n, &p, &cfg->record_half_close)))
            return rc;
    }
    n = cfg_map_get(config, "transport_socket");
    if (n && !cfg_node_is_null(n)) {
        struct cfg_path p = CFG_PATH_KEY(path, "transport_socket");
        if ((rc = ts_config_parse(ctx, n, &p, &cfg->inner)))
            return rc;
    } else {
        ts_config_default(&cfg->inner);
    }
    return capture_cfg_done(cfg, ctx->owner_name);
}

static struct capture_cfg *capture_cfg_new(const char *kind, enum trace_schema schema)
{
    struct capture_cfg *cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return NULL;
    cfg->kind = kind;
    cfg->enc.schema = schema;
    cfg->enc.max_buffered_rx = 1024;
    cfg->enc.max_buffered_tx = 1024;
    cfg->max_backlog = CAPTURE_DEFAULT_MAX_BACKLOG;
    if (live_hub_new(&cfg->live)) {
        free(cfg);
        return NULL;
    }
    return cfg;
}

/* The child KEY of PARENT (at PARENT_PATH), which must be there, with the keys KEYS (NULL: not
 * checked here): *OUT, and its path in *OUT_PATH (pointing at PARENT_PATH: valid while it is). */
static int req_child(struct ts_parse_ctx *ctx, const struct cfg_node *parent,
                     const struct cfg_path *parent_path, const char *key, const char *const *keys,
                     const struct cfg_node **out, struct cfg_path *out_path)
{
    *out_path = CFG_PATH_KEY(parent_path, key);
    *out = cfg_map_get(parent, key);
    if (!*out)
        return cfg_error(ctx->err, ctx->doc, parent, out_path, "%s is required", key);
    return keys ? cfg_check_keys(ctx->err, ctx->doc, *out, out_path, keys) : 0;
}

/* MAP's `format`, when it has one: a name of NAMES (or its number, proto order), as FORMATS[i]. */
static int opt_format(struct ts_parse_ctx *ctx, const struct cfg_node *map,
                      const struct cfg_path *path, const char *const *names,
                      const enum trace_format *formats, enum trace_format *out)
{
    const struct cfg_node *fmt = cfg_map_get(map, "format");
    struct cfg_path p = CFG_PATH_KEY(path, "format");
    int idx, rc;
    if (!fmt)
        return 0;
    if ((rc = cfg_get_enum_num(ctx->err, ctx->doc, fmt, &p, names, NULL, &idx)))
        return rc;
    *out = formats[idx];
    return 0;
}

int capture_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                      const struct cfg_path *path, void **out)
{
    static const char *const keys[] = {"file_sink",
                                       "transport_socket",
                                       "socktap_max_backlog_bytes",
                                       "socktap_compression",
                                       "socktap_limits",
                                       "socktap_record_half_close",
                                       NULL};
    static const char *const sink_keys[] = {"path_prefix", "format", NULL};
    int rc;
    if (!config)
        return cfg_error(ctx->err, ctx->doc, NULL, path,
                         "the capture socket needs `config: {file_sink: {path_prefix: ...}}`");
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, config, path, keys)))
        return rc;
    struct capture_cfg *cfg = capture_cfg_new("capture", TRACE_SCHEMA_V2_CAPTURE);
    if (!cfg)
        return -ENOMEM;
    cfg->enc.format = TRACE_FMT_PROTO_BINARY;

    struct cfg_path sink_path;
    const struct cfg_node *sink;
    if ((rc = req_child(ctx, config, path, "file_sink", sink_keys, &sink, &sink_path)))
        goto err_free_cfg;
    struct cfg_path prefix_path = CFG_PATH_KEY(&sink_path, "path_prefix");
    if ((rc = parse_path_prefix(ctx, cfg_map_get(sink, "path_prefix"), &prefix_path, cfg)) ||
        (rc = opt_format(ctx, sink, &sink_path, v2_format_names, v2_formats, &cfg->enc.format)))
        goto err_free_cfg;
    if ((rc = parse_common(ctx, config, path, cfg)))
        goto err_free_cfg;
    *out = cfg;
    return 0;

err_free_cfg:
    capture_cfg_free(cfg);
    return rc;
}

/* max_buffered_*_bytes: a plain integer or the wrapper form {value: N}. */
static int parse_u32_wrapper(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                             const struct cfg_path *path, uint32_t *out)
{
    uint64_t v;
    int rc;
    if (node->type == CFG_MAP) {
        static const char *const keys[] = {"value", NULL};
        if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
            return rc;
        struct cfg_path p = CFG_PATH_KEY(path, "value");
        node = cfg_map_get(node, "value");
        if (!node)
            return cfg_error(ctx->err, ctx->doc, NULL, &p, "value is required");
        rc = cfg_get_u64(ctx->err, ctx->doc, node, &p, 0, UINT32_MAX, &v);
    } else {
        rc = cfg_get_u64(ctx->err, ctx->doc, node, path, 0, UINT32_MAX, &v);
    }
    if (rc)
        return rc;
    *out = (uint32_t)v;
    return 0;
}

static int parse_sink(struct ts_parse_ctx *ctx, const struct cfg_node *sink,
                      const struct cfg_path *path, struct capture_cfg *cfg)
{
    static const char *const keys[] = {"format",
                                       "file_per_tap",
                                       "streaming_admin",
                                       "streaming_grpc",
                                       "buffered_admin",
                                       "custom_sink",
                                       NULL};
    static const char *const fpt_keys[] = {"path_prefix", NULL};
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, sink, path, keys)))
        return rc;
    cfg->enc.format = TRACE_FMT_JSON_BODY_AS_BYTES;
    if ((rc = opt_format(ctx, sink, path, v3_format_names, v3_formats, &cfg->enc.format)))
        return rc;
    for (size_t i = 0; i < sink->n; i++) {
        const struct cfg_node *k = sink->entries[i].key;
        if (strcmp(k->str, "format") != 0 && strcmp(k->str, "file_per_tap") != 0 &&
            strcmp(k->str, "custom_sink") != 0) {
            struct cfg_path p = CFG_PATH_KEY(path, k->str);
            return cfg_error(ctx->err, ctx->doc, k, &p,
                             "not supported: socktap's tap writes `file_per_tap` and "
                             "`custom_sink` (envoy.tap_sinks.udp_sink) sinks only");
        }
    }
    const struct cfg_node *custom = cfg_map_get(sink, "custom_sink");
    if (custom) {
        struct cfg_path cp = CFG_PATH_KEY(path, "custom_sink");
        if (cfg_map_get(sink, "file_per_tap")) /* OutputSink.output_sink_type is a oneof */
            return cfg_error(ctx->err, ctx->doc, custom, &cp,
                             "a sink is file_per_tap or custom_sink, not both");
        /* udp_sink_impl.cc submitTrace: "Not support PROTO_BINARY_LENGTH_DELIMITED": Envoy's
         * sink sends nothing for it */
        if (cfg->enc.format == TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED) {
            struct cfg_path fp = CFG_PATH_KEY(path, "format");
            return cfg_error(ctx->err, ctx->doc, cfg_map_get(sink, "format"), &fp,
                             "the UDP sink does not take PROTO_BINARY_LENGTH_DELIMITED (Envoy's "
                             "sends nothing for it): a datagram already delimits its message");
        }
        return tap_feat_parse_custom_sink(ctx, custom, &cp, &cfg->feat);
    }
    struct cfg_path fpt_path;
    const struct cfg_node *fpt;
    if ((rc = req_child(ctx, sink, path, "file_per_tap", fpt_keys, &fpt, &fpt_path)))
        return rc;
    struct cfg_path prefix_path = CFG_PATH_KEY(&fpt_path, "path_prefix");
    return parse_path_prefix(ctx, cfg_map_get(fpt, "path_prefix"), &prefix_path, cfg);
}

/* An admin sink of a POST /tap tap_config: `streaming_admin: {}` or `buffered_admin:
 * {max_traces, timeout}` (envoy/config/tap/v3/common.proto), with the formats Envoy's admin
 * stream writes (source/extensions/common/tap/admin.cc, AttachedRequest::streamMsg: JSON, or
 * PROTO_BINARY_LENGTH_DELIMITED; PROTO_BINARY and PROTO_TEXT are "not implemented" there). */
static int parse_admin_sink(struct ts_parse_ctx *ctx, const struct cfg_node *sink,
                            const struct cfg_path *path, struct tap_admin_request *req)
{
    static const char *const keys[] = {"format",
                                       "file_per_tap",
                                       "streaming_admin",
                                       "streaming_grpc",
                                       "buffered_admin",
                                       "custom_sink",
                                       NULL};
    static const char *const buffered_keys[] = {"max_traces", "timeout", NULL};
    static const char *const no_keys[] = {NULL}; /* StreamingAdminSink has no fields */
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, sink, path, keys)))
        return rc;
    req->enc.format = TRACE_FMT_JSON_BODY_AS_BYTES;
    if ((rc = opt_format(ctx, sink, path, v3_format_names, v3_formats, &req->enc.format)))
        return rc;
    if (req->enc.format == TRACE_FMT_PROTO_BINARY || req->enc.format == TRACE_FMT_PROTO_TEXT) {
        struct cfg_path p = CFG_PATH_KEY(path, "format");
        return cfg_error(ctx->err, ctx->doc, cfg_map_get(sink, "format"), &p,
                         "not supported by the admin sink (as Envoy's): use JSON_BODY_AS_BYTES, "
                         "JSON_BODY_AS_STRING or PROTO_BINARY_LENGTH_DELIMITED");
    }
    const char *kind = NULL;
    for (size_t i = 0; i < sink->n; i++) {
        const struct cfg_node *k = sink->entries[i].key;
        if (!strcmp(k->str, "format"))
            continue;
        struct cfg_path p = CFG_PATH_KEY(path, k->str);
        if (strcmp(k->str, "streaming_admin") && strcmp(k->str, "buffered_admin"))
            return cfg_error(ctx->err, ctx->doc, k, &p,
                             "not supported through /tap: use streaming_admin or buffered_admin");
        if (kind)
            return cfg_error(ctx->err, ctx->doc, k, &p,
                             "only one sink type may be given (it is a oneof), got %s too", kind);
        kind = k->str;
    }
    if (!kind)
        return cfg_error(ctx->err, ctx->doc, sink, path,
                         "a sink type is required: streaming_admin or buffered_admin");
    struct cfg_path kp = CFG_PATH_KEY(path, kind);
    const struct cfg_node *v = cfg_map_get(sink, kind);
    if (!strcmp(kind, "streaming_admin"))
        return cfg_node_is_null(v) ? 0 : cfg_check_keys(ctx->err, ctx->doc, v, &kp, no_keys);
    req->buffered = true;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, v, &kp, buffered_keys)))
        return rc;
    struct cfg_path mp = CFG_PATH_KEY(&kp, "max_traces");
    const struct cfg_node *n = cfg_map_get(v, "max_traces");
    if (!n) /* validate.rules uint64 gt: 0 */
        return cfg_error(ctx->err, ctx->doc, v, &mp, "max_traces is required (> 0)");
    if ((rc = cfg_get_u64(ctx->err, ctx->doc, n, &mp, 1, UINT64_MAX, &req->max_traces)))
        return rc;
    if ((n = cfg_map_get(v, "timeout"))) {
        struct cfg_path tp = CFG_PATH_KEY(&kp, "timeout");
        if ((rc = cfg_get_duration_ms(ctx->err, ctx->doc, n, &tp, &req->timeout_ms)))
            return rc;
    }
    return 0;
}

/* output_config: the file sink into CFG (static_config), or an admin sink into ADMIN (a POST
 * /tap tap_config); the encoder's settings into ENC either way. */
static int parse_output(struct ts_parse_ctx *ctx, const struct cfg_node *out_node,
                        const struct cfg_path *path, struct capture_cfg *cfg,
                        struct tap_admin_request *admin, struct trace_enc_cfg *enc)
{
    static const char *const keys[] = {"sinks",
                                       "streaming",
                                       "max_buffered_rx_bytes",
                                       "max_buffered_tx_bytes",
                                       "min_streamed_sent_bytes",
                                       NULL};
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, out_node, path, keys)))
        return rc;
    struct cfg_path sinks_path;
    const struct cfg_node *sinks;
    if ((rc = req_child(ctx, out_node, path, "sinks", NULL, &sinks, &sinks_path)) ||
        (rc = cfg_expect_seq(ctx->err, ctx->doc, sinks, &sinks_path)))
        return rc;
    if (sinks->n != 1)
        return cfg_error(ctx->err, ctx->doc, sinks, &sinks_path,
                         "expected exactly one sink (as Envoy), got %zu", sinks->n);
    struct cfg_path sink_path = CFG_PATH_INDEX(&sinks_path, 0);
    rc = admin ? parse_admin_sink(ctx, sinks->items[0], &sink_path, admin)
               : parse_sink(ctx, sinks->items[0], &sink_path, cfg);
    if (rc)
        return rc;
    const struct cfg_node *n = cfg_map_get(out_node, "streaming");
    if (n) {
        struct cfg_path p = CFG_PATH_KEY(path, "streaming");
        if ((rc = cfg_get_bool(ctx->err, ctx->doc, n, &p, &enc->streaming)))
            return rc;
    }
    /* streamed events are cut at max_buffered_rx/tx_bytes too, as Envoy's, and numbered
     * (seq_num, envoy#42641) */
    enc->cap_streamed = true;
    enc->seq_num = enc->streaming;
    if ((n = cfg_map_get(out_node, "min_streamed_sent_bytes"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "min_streamed_sent_bytes");
        if ((rc = parse_u32_wrapper(ctx, n, &p, &enc->min_streamed_sent)))
            return rc;
    }
    if ((n = cfg_map_get(out_node, "max_buffered_rx_bytes"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "max_buffered_rx_bytes");
        if ((rc = parse_u32_wrapper(ctx, n, &p, &enc->max_buffered_rx)))
            return rc;
    }
    if ((n = cfg_map_get(out_node, "max_buffered_tx_bytes"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "max_buffered_tx_bytes");
        if ((rc = parse_u32_wrapper(ctx, n, &p, &enc->max_buffered_tx)))
            return rc;
    }
    return 0;
}

/* The tap's options of tap_feat.h: socket_tap_config (Tap field 3), tap_enabled (TapConfig
 * field 3 in STATIC at STATIC_PATH); a UDP sink has no files, so no file knobs. */
static int parse_tap_extras(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                            const struct cfg_path *path, const struct cfg_node *st,
                            const struct cfg_path *static_path, struct capture_cfg *cfg)
{
    static const char *const file_knobs[] = {"socktap_compression", "socktap_limits", NULL};
    const struct cfg_node *n;
    int rc;
    if ((n = cfg_map_get(config, "socket_tap_config"))) {
        struct cfg_path p = CFG_PATH_KEY(path, "socket_tap_config");
        if ((rc = tap_feat_parse_socket_cfg(ctx, n, &p, &cfg->feat, &cfg->enc)))
            return rc;
    }
    if ((n = cfg_map_get(st, "tap_enabled"))) {
        struct cfg_path p = CFG_PATH_KEY(static_path, "tap_enabled");
        if ((rc = tap_feat_parse_enabled(ctx, n, &p, &cfg->feat)))
            return rc;
    }
    for (const char *const *k = file_knobs; cfg->feat.udp && *k; k++)
        if ((n = cfg_map_get(config, *k))) {
            struct cfg_path p = CFG_PATH_KEY(path, *k);
            return cfg_error(ctx->err, ctx->doc, n, &p,
                             "applies to file_per_tap sinks; this tap sends to a UDP sink");
        }
    return 0;
}

/* `match` (or the deprecated `match_config`) of a static_config or a /tap tap_config, which
 * Envoy requires (tap_config_impl.cc: "match or match_config must be set"). */
static int parse_tap_match(struct ts_parse_ctx *ctx, const struct cfg_node *parent,
                           const struct cfg_path *parent_path, struct tap_feat *feat)
{
    const char *match_key = cfg_map_get(parent, "match") ? "match" : "match_config";
    struct cfg_path match_path = CFG_PATH_KEY(parent_path, match_key);
    const struct cfg_node *match = cfg_map_get(parent, match_key);
    if (!match)
        return cfg_error(ctx->err, ctx->doc, parent, &match_path,
                         "match is required (e.g. `match: {any_match: true}`)");
    return tap_feat_parse_match(ctx, match, &match_path, feat);
}

int tap_admin_request_parse(struct ts_parse_ctx *ctx, const struct cfg_node *tap_config,
                            const struct cfg_path *path, struct tap_admin_request *out)
{
    static const char *const keys[] = {"match", "match_config", "output_config", NULL};
    *out = (struct tap_admin_request){
        .enc = {.schema = TRACE_SCHEMA_V3_TAP, .max_buffered_rx = 1024, .max_buffered_tx = 1024}};
    struct cfg_path out_path;
    const struct cfg_node *out_node;
    int rc;
    struct tap_feat feat = {0}; /* the request's match tree, checked (an admin tap has no feat) */
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, tap_config, path, keys)) ||
        (rc = parse_tap_match(ctx, tap_config, path, &feat)) ||
        (rc = req_child(ctx, tap_config, path, "output_config", NULL, &out_node, &out_path))) {
        tap_feat_free(&feat);
        return rc;
    }
    tap_feat_free(&feat);
    return parse_output(ctx, out_node, &out_path, NULL, out, &out->enc);
}

/* `admin_config: {config_id}` (envoy/extensions/common/tap/v3/common.proto AdminConfig,
 * config_id min_len 1): the tap waits for POST /tap. */
static int parse_admin_config(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                              const struct cfg_path *path, struct capture_cfg *cfg)
{
    static const char *const keys[] = {"config_id", NULL};
    int rc;
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys)))
        return rc;
    struct cfg_path p = CFG_PATH_KEY(path, "config_id");
    const struct cfg_node *n = cfg_map_get(node, "config_id");
    const char *id;
    if (!n)
        return cfg_error(ctx->err, ctx->doc, node, &p, "config_id is required");
    if ((rc = cfg_get_string(ctx->err, ctx->doc, n, &p, &id)))
        return rc;
    if (!*id)
        return cfg_error(ctx->err, ctx->doc, n, &p, "must not be empty");
    if (!(cfg->admin_id = strdup(id)))
        return -ENOMEM;
    /* JSON until a client says otherwise: only the file extension of the unused sink */
    cfg->enc.format = TRACE_FMT_JSON_BODY_AS_BYTES;
    return 0;
}

int tap_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                  const struct cfg_path *path, void **out)
{
    static const char *const keys[] = {"common_config",
                                       "transport_socket",
                                       "socket_tap_config",
                                       "socktap_max_backlog_bytes",
                                       "socktap_compression",
                                       "socktap_limits",
                                       "socktap_record_half_close",
                                       NULL};
    static const char *const common_keys[] = {"static_config", "admin_config", NULL};
    static const char *const static_keys[] = {"match", "match_config", "output_config",
                                              "tap_enabled", NULL};
    int rc;
    if (!config)
        return cfg_error(ctx->err, ctx->doc, NULL, path,
                         "the tap socket needs `typed_config: {common_config: {static_config: "
                         "...}}`");
    if ((rc = cfg_check_keys(ctx->err, ctx->doc, config, path, keys)))
        return rc;
    struct capture_cfg *cfg = capture_cfg_new("tap", TRACE_SCHEMA_V3_TAP);
    if (!cfg)
        return -ENOMEM;

    struct cfg_path common_path, static_path, out_path;
    const struct cfg_node *common, *st, *out_node;
    if ((rc = req_child(ctx, config, path, "common_config", common_keys, &common, &common_path)))
        goto err_free_cfg;
    const struct cfg_node *admin = cfg_map_get(common, "admin_config");
    if (admin) {
        struct cfg_path p = CFG_PATH_KEY(&common_path, "admin_config");
        if (cfg_map_get(common, "static_config")) { /* a oneof in Envoy's proto */
            rc = cfg_error(ctx->err, ctx->doc, admin, &p,
                           "give admin_config or static_config, not both");
            goto err_free_cfg;
        }
        if ((rc = parse_admin_config(ctx, admin, &p, cfg)))
            goto err_free_cfg;
    } else {
        if ((rc = req_child(ctx, common, &common_path, "static_config", static_keys, &st,
                            &static_path)) ||
            (rc = parse_tap_match(ctx, st, &static_path, &cfg->feat)) ||
            (rc = req_child(ctx, st, &static_path, "output_config", NULL, &out_node, &out_path)) ||
            (rc = parse_output(ctx, out_node, &out_path, cfg, NULL, &cfg->enc)) ||
            (rc = parse_tap_extras(ctx, config, path, st, &static_path, cfg)))
            goto err_free_cfg;
    }
    if ((rc = parse_common(ctx, config, path, cfg)))
        goto err_free_cfg;
    *out = cfg;
    return 0;

err_free_cfg:
    capture_cfg_free(cfg);
    return rc;
}

int capture_wire_cfg_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                           const struct cfg_path *path, void **out)
{
    static const char *const keys[] = {
        "path_prefix",         "format",         "socktap_max_backlog_bytes",
        "socktap_compression", "socktap_limits", NULL};
    int rc;
    if ((rc = cfg_expect_map(ctx->err, ctx->doc, config, path)) ||
        (rc = cfg_check_keys(ctx->err, ctx->doc, config, path, keys)))
        return rc;
    struct capture_cfg *cfg = capture_cfg_new("tls_wire", TRACE_SCHEMA_V3_TAP);
    if (!cfg)
        return -ENOMEM;
    /* Streamed, so a wire trace is on disk as the records cross (a handshake that fails is
     * exactly what it is for), length-delimited unless asked otherwise: unambiguous to split. */
    cfg->enc.streaming = true;
    cfg->enc.format = TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED;
    struct cfg_path prefix_path;
    const struct cfg_node *prefix;
    if ((rc = req_child(ctx, config, path, "path_prefix", NULL, &prefix, &prefix_path)) ||
        (rc = parse_path_prefix(ctx, prefix, &prefix_path, cfg)) ||
        (rc = opt_format(ctx, config, path, v3_format_names, v3_formats, &cfg->enc.format)))
        goto err_free_cfg;
    if ((rc = parse_backlog(ctx, config, path, cfg)) ||
        (rc = parse_compression(ctx, config, path, cfg)) ||
        (rc = parse_limits(ctx, config, path, cfg)))
        goto err_free_cfg;
    ts_config_default(&cfg->inner);
    if ((rc = capture_cfg_done(cfg, ctx->owner_name)))
        goto err_free_cfg;
    *out = cfg;
    return 0;

err_free_cfg:
    capture_cfg_free(cfg);
    return rc;
}

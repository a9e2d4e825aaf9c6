/* access_log: lists (access_log_config.h).
 *
 * Which logger: by typed_config's "@type" when given (Envoy picks the factory by type URL),
 * else by name. The file logger's format comes from log_format (SubstitutionFormatString:
 * text_format, text_format_source.inline_string, json_format) or the deprecated v3/v2 `format`
 * / `json_format` fields; none gives Envoy's default format. A json_format is compiled into
 * one text template: its keys and punctuation become literals, its values operators
 * (access_format.h). Access log `filter`s are refused: socktap logs every connection, and a
 * filter silently ignored would log what the user meant to exclude. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/access_log_config.h"

static const char *const file_names[] = {"envoy.access_loggers.file", "envoy.file_access_log",
                                         NULL};
static const char *const file_urls[] = {
    "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
    "type.googleapis.com/envoy.config.accesslog.v2.FileAccessLog", NULL};
static const char *const stdout_names[] = {"envoy.access_loggers.stdout", NULL};
static const char *const stdout_urls[] = {
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", NULL};
static const char *const stderr_names[] = {"envoy.access_loggers.stderr", NULL};
static const char *const stderr_urls[] = {
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog", NULL};

struct al_parse {
    struct cfg_err *err;
    const struct cfg_doc *doc;
};

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

static int add_text(struct al_parse *ap, struct al_format *f, const struct cfg_node *n,
                    const struct cfg_path *path, enum al_mode mode)
{
    char why[256];
    const char *s;
    int rc = cfg_get_string(ap->err, ap->doc, n, path, &s);
    if (rc)
        return rc;
    rc = al_format_add(f, s, mode, why, sizeof(why));
    if (rc == -ENOMEM)
        return cfg_error(ap->err, ap->doc, n, path, "out of memory"), rc;
    if (rc)
        return cfg_error(ap->err, ap->doc, n, path, "%s", why);
    return 0;
}

static int add_lit(struct al_parse *ap, struct al_format *f, const struct cfg_node *n,
                   const struct cfg_path *path, const char *s)
{
    if (al_format_add_literal(f, s, strlen(s)))
        return cfg_error(ap->err, ap->doc, n, path, "out of memory"), -ENOMEM;
    return 0;
}

/* Envoy's default format (access_format.h). */
static int add_default(struct al_parse *ap, struct al_format *f, const struct cfg_node *n,
                       const struct cfg_path *path)
{
    char why[128];
    if (al_format_add(f, al_default_format, AL_TEXT, why, sizeof(why)))
        return cfg_error(ap->err, ap->doc, n, path, "out of memory"), -ENOMEM;
    return 0;
}

/* A json_format Struct N: keys as JSON literals, values as operators; nested maps nest. */
static int add_json(struct al_parse *ap, struct al_format *f, const struct cfg_node *n,
                    const struct cfg_path *path)
{
    int rc;
    if (n->type == CFG_SEQ)
        return cfg_error(ap->err, ap->doc, n, path,
                         "lists are not supported in an access log json_format");
    if (n->type != CFG_MAP) {
        bool literal = !n->quoted && (!strcmp(n->str, "true") || !strcmp(n->str, "false") ||
                                      !strcmp(n->str, "null") ||
                                      (n->len && strspn(n->str, "0123456789.-eE") == n->len));
        if (literal)
            return add_lit(ap, f, n, path, n->str);
        return add_text(ap, f, n, path, AL_JSON_VALUE);
    }
    if ((rc = add_lit(ap, f, n, path, "{")))
        return rc;
    for (size_t i = 0; i < n->n; i++) {
        const char *key = n->entries[i].key->str;
        struct cfg_path kp = CFG_PATH_KEY(path, key);
        if ((rc = add_lit(ap, f, n, path, i ? ",\"" : "\"")))
            return rc;
        for (const char *c = key; *c; c++) {
            char esc[3] = {'\\', *c, '\0'};
            if ((rc = add_lit(ap, f, n, path, (*c == '"' || *c == '\\') ? esc : esc + 1)))
                return rc;
        }
        if ((rc = add_lit(ap, f, n, path, "\":")) ||
            (rc = add_json(ap, f, n->entries[i].value, &kp)))
            return rc;
    }
    return add_lit(ap, f, n, path, "}");
}

/* SubstitutionFormatString (config/core/v3/substitution_format_string.proto). */
static int parse_log_format(struct al_parse *ap, const struct cfg_node *lf,
                            const struct cfg_path *path, struct al_format *f)
{
    static const char *const keys[] = {
        "text_format",  "json_format", "text_format_source",  "omit_empty_values",
        "content_type", "formatters",  "json_format_options", NULL};
    int rc = cfg_check_keys(ap->err, ap->doc, lf, path, keys);
    if (rc)
        return rc;
    const struct cfg_node *text = cfg_map_get(lf, "text_format");
    const struct cfg_node *json = cfg_map_get(lf, "json_format");
    const struct cfg_node *src = cfg_map_get(lf, "text_format_source");
    const struct cfg_node *n;
    struct cfg_path kp;
    if ((n = cfg_map_get(lf, "omit_empty_values"))) {
        bool omit;
        kp = CFG_PATH_KEY(path, "omit_empty_values");
        if ((rc = cfg_get_bool(ap->err, ap->doc, n, &kp, &omit)))
            return rc;
        if (omit)
            return cfg_error(ap->err, ap->doc, n, &kp,
                             "omit_empty_values is not supported (absent values print as \"-\", "
                             "null in JSON)");
    }
    if ((n = cfg_map_get(lf, "formatters"))) {
        kp = CFG_PATH_KEY(path, "formatters");
        return cfg_error(ap->err, ap->doc, n, &kp, "formatter extensions are not supported");
    }
    if ((n = cfg_map_get(lf, "json_format_options"))) {
        kp = CFG_PATH_KEY(path, "json_format_options");
        return cfg_error(ap->err, ap->doc, n, &kp, "json_format_options is not supported");
    }
    /* content_type is the HTTP response's (local replies): nothing at L4, accepted */
    if (!!text + !!json + !!src != 1)
        return cfg_error(ap->err, ap->doc, lf, path,
                         "give one of text_format, json_format or text_format_source");
    if (text) {
        kp = CFG_PATH_KEY(path, "text_format");
        return add_text(ap, f, text, &kp, AL_TEXT);
    }
    if (json) {
        kp = CFG_PATH_KEY(path, "json_format");
        if ((rc = cfg_expect_map(ap->err, ap->doc, json, &kp)) || (rc = add_json(ap, f, json, &kp)))
            return rc;
        return add_lit(ap, f, json, &kp, "\n");
    }
    static const char *const skeys[] = {"inline_string", "inline_bytes", "filename",
                                        "environment_variable", NULL};
    kp = CFG_PATH_KEY(path, "text_format_source");
    if ((rc = cfg_check_keys(ap->err, ap->doc, src, &kp, skeys)))
        return rc;
    if ((n = cfg_map_get(src, "inline_string"))) {
        struct cfg_path ip = CFG_PATH_KEY(&kp, "inline_string");
        return add_text(ap, f, n, &ip, AL_TEXT);
    }
    return cfg_error(ap->err, ap->doc, src, &kp,
                     "only inline_string is supported in text_format_source");
}

/* FileAccessLog (or the stream loggers' StdoutAccessLog/StderrAccessLog when STREAM is set:
 * they have log_format only). */
static int parse_file_logger(struct al_parse *ap, const struct cfg_node *s,
                             const struct cfg_path *path, const char *stream,
                             struct cfg_access_log *out)
{
    static const char *const keys[] = {"path",       "format", "json_format", "typed_json_format",
                                       "log_format", NULL};
    static const char *const stream_keys[] = {"log_format", NULL};
    const struct cfg_node *n;
    struct cfg_path kp;
    int rc;
    out->fmt = al_format_new();
    if (!out->fmt)
        return cfg_error(ap->err, ap->doc, s, path, "out of memory"), -ENOMEM;
    if (!s) {
        if (!stream)
            return cfg_error(ap->err, ap->doc, NULL, path,
                             "the file access logger needs its settings (path)");
        out->path = stream;
        return add_default(ap, out->fmt, s, path);
    }
    if ((rc = cfg_check_keys(ap->err, ap->doc, s, path, stream ? stream_keys : keys)))
        return rc;
    if (stream) {
        out->path = stream;
    } else {
        kp = CFG_PATH_KEY(path, "path");
        if (!(n = cfg_map_get(s, "path")))
            return cfg_error(ap->err, ap->doc, s, path, "missing required key 'path'");
        if ((rc = cfg_get_string(ap->err, ap->doc, n, &kp, &out->path)))
            return rc;
        if (!*out->path)
            return cfg_error(ap->err, ap->doc, n, &kp, "path must not be empty");
    }
    const struct cfg_node *lf = cfg_map_get(s, "log_format");
    const struct cfg_node *fmt = cfg_map_get(s, "format");
    const struct cfg_node *json = cfg_map_get(s, "json_format");
    const struct cfg_node *tjson = cfg_map_get(s, "typed_json_format");
    if (!!lf + !!fmt + !!json + !!tjson > 1)
        return cfg_error(ap->err, ap->doc, s, path,
                         "give one of log_format, format, json_format or typed_json_format");
    if (lf) {
        kp = CFG_PATH_KEY(path, "log_format");
        return parse_log_format(ap, lf, &kp, out->fmt);
    }
    if (fmt) {
        kp = CFG_PATH_KEY(path, "format");
        return add_text(ap, out->fmt, fmt, &kp, AL_TEXT);
    }
    if (json || tjson) {
        kp = CFG_PATH_KEY(path, json ? "json_format" : "typed_json_format");
        if ((rc = cfg_expect_map(ap->err, ap->doc, json ? json : tjson, &kp)) ||
            (rc = add_json(ap, out->fmt, json ? json : tjson, &kp)))
            return rc;
        return add_lit(ap, out->fmt, s, path, "\n");
    }
    return add_default(ap, out->fmt, s, path);
}

static int parse_one(struct al_parse *ap, const struct cfg_node *n, const struct cfg_path *path,
                     struct cfg_access_log *out)
{
    static const char *const keys[] = {"name", "filter", "config", "typed_config", NULL};
    const struct cfg_node *name_node = cfg_map_get(n, "name"), *settings = NULL, *f;
    struct cfg_path np = CFG_PATH_KEY(path, "name"), sp;
    const char *name = NULL, *url = NULL;
    int rc;
    if ((rc = cfg_check_keys(ap->err, ap->doc, n, path, keys)))
        return rc;
    if ((f = cfg_map_get(n, "filter"))) {
        struct cfg_path fp = CFG_PATH_KEY(path, "filter");
        return cfg_error(ap->err, ap->doc, f, &fp,
                         "access log filters are not supported: socktap logs every connection");
    }
    if (name_node && (rc = cfg_get_string(ap->err, ap->doc, name_node, &np, &name)))
        return rc;
    const struct cfg_node *tc = cfg_map_get(n, "typed_config");
    if (tc && tc->type == CFG_MAP) {
        const struct cfg_node *t = cfg_map_get(tc, "@type");
        if (t && t->type == CFG_SCALAR)
            url = t->str;
    }
    const char *const *urls;
    const char *stream = NULL;
    if ((url && in_list(url, file_urls)) || (!url && name && in_list(name, file_names))) {
        urls = file_urls;
    } else if ((url && in_list(url, stdout_urls)) ||
               (!url && name && in_list(name, stdout_names))) {
        urls = stdout_urls;
        stream = "/dev/stdout";
    } else if ((url && in_list(url, stderr_urls)) ||
               (!url && name && in_list(name, stderr_names))) {
        urls = stderr_urls;
        stream = "/dev/stderr";
    } else if (url) {
        struct cfg_path tp = CFG_PATH_KEY(path, "typed_config");
        return cfg_error(ap->err, ap->doc, tc, &tp,
                         "unsupported access logger type '%s' (supported: the file, stdout and "
                         "stderr loggers)",
                         url);
    } else {
        return cfg_error(ap->err, ap->doc, name_node ? name_node : n, name_node ? &np : path,
                         "unsupported access logger '%s' (supported: envoy.access_loggers.file, "
                         "envoy.access_loggers.stdout, envoy.access_loggers.stderr)",
                         name ? name : "");
    }
    if ((rc = cfg_extension_settings(ap->err, ap->doc, n, path, urls, "access logger", &settings,
                                     &sp)))
        return rc;
    return parse_file_logger(ap, settings, &sp, stream, out);
}

int cfg_parse_access_logs(struct cfg_err *err, const struct cfg_doc *doc,
                          const struct cfg_node *node, const struct cfg_path *path,
                          struct cfg_access_log **out, size_t *n)
{
    struct al_parse ap = {.err = err, .doc = doc};
    int rc = cfg_expect_seq(err, doc, node, path);
    *out = NULL;
    *n = 0;
    if (rc)
        return rc;
    if (!node->n)
        return 0;
    struct cfg_access_log *logs = calloc(node->n, sizeof(*logs));
    if (!logs)
        return cfg_error(err, doc, node, path, "out of memory"), -ENOMEM;
    *out = logs;
    for (size_t i = 0; i < node->n; i++) {
        struct cfg_path ip = CFG_PATH_INDEX(path, i);
        *n = i + 1;
        if ((rc = cfg_expect_map(err, doc, node->items[i], &ip)) ||
            (rc = parse_one(&ap, node->items[i], &ip, &logs[i])))
            return rc;
    }
    return 0;
}

void cfg_access_logs_free(struct cfg_access_log *logs, size_t n)
{
    for (size_t i = 0; logs && i < n; i++)
        al_format_free(logs[i].fmt);
    free(logs);
}

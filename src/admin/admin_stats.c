/* admin_stats.c: see admin_stats.h.
 *
 * Prometheus wants every sample of one metric family together under one # TYPE line, but the
 * registry's name order interleaves families once tags are extracted (cluster.a.x, cluster.a.y,
 * cluster.b.x): the selected samples are therefore re-sorted by (metric, label value) first.
 * Tag extraction is written out for the three Envoy extractors socktap's names can match instead
 * of running Envoy's regular expressions: they use lookahead and lazy quantifiers, which POSIX
 * regex lacks (and a regex engine of our own is not worth three fixed prefixes). */
#include "admin/admin_stats.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "core/json_out.h"

/* The index of V in the NULL-ended NAMES (case-insensitive: Envoy's type= takes any case), or
 * -1. NAMES are in the order of the enum they stand for. */
static int name_index(const char *const *names, const char *v)
{
    for (int i = 0; names[i]; i++)
        if (!strcasecmp(names[i], v))
            return i;
    return -1;
}

int admin_stats_query_parse(const char *query, enum admin_stats_format format,
                            struct admin_stats_query *q, char *why, size_t why_size)
{
    memset(q, 0, sizeof(*q));
    q->format = format;
    struct evkeyvalq kv;
    TAILQ_INIT(&kv);
    /* Envoy takes flags without a value (?usedonly); evhttp's parser refuses a key without '=':
     * give each one an empty value first. */
    size_t len = query ? strlen(query) : 0;
    char *norm = malloc(2 * len + 2);
    if (!norm)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0, tok = 0; i <= len; i++) {
        if (i < len && query[i] != '&')
            continue;
        if (i > tok) {
            memcpy(norm + o, query + tok, i - tok);
            o += i - tok;
            if (!memchr(query + tok, '=', i - tok))
                norm[o++] = '=';
        }
        if (i < len)
            norm[o++] = '&';
        tok = i + 1;
    }
    norm[o] = '\0';
    int rc = evhttp_parse_query_str(norm, &kv);
    free(norm);
    if (rc != 0) {
        snprintf(why, why_size, "cannot parse the query string");
        evhttp_clear_headers(&kv);
        return -EINVAL;
    }
    static const char *const formats[] = {"text", "json", "prometheus", NULL};
    static const char *const types[] = {"All", "Counters", "Gauges", NULL};
    const char *v;
    int idx;
    if ((v = evhttp_find_header(&kv, "format"))) {
        if ((idx = name_index(formats, v)) < 0) {
            snprintf(why, why_size, "format must be text, json or prometheus, got '%s'", v);
            rc = -EINVAL;
            goto out;
        }
        q->format = (enum admin_stats_format)idx;
    }
    if ((v = evhttp_find_header(&kv, "type"))) {
        if ((idx = name_index(types, v)) < 0) {
            snprintf(why, why_size, "type must be All, Counters or Gauges, got '%s'", v);
            rc = -EINVAL;
            goto out;
        }
        q->type = (enum admin_stats_type)idx;
    }
    q->used_only = evhttp_find_header(&kv, "usedonly") != NULL;
    if ((v = evhttp_find_header(&kv, "filter")) && *v) {
        int e = regcomp(&q->filter, v, REG_EXTENDED | REG_NOSUB);
        if (e) {
            char msg[128];
            regerror(e, &q->filter, msg, sizeof(msg));
            snprintf(why, why_size, "invalid regex '%s': %s", v, msg);
            rc = -EINVAL;
            goto out;
        }
        q->has_filter = true;
    }
out:
    evhttp_clear_headers(&kv);
    return rc;
}

void admin_stats_query_fini(struct admin_stats_query *q)
{
    if (q->has_filter)
        regfree(&q->filter);
    q->has_filter = false;
}

static bool selected(const struct stat_sample *s, const struct admin_stats_query *q)
{
    if (q->type == ADMIN_STATS_COUNTERS && s->kind != STAT_COUNTER)
        return false;
    if (q->type == ADMIN_STATS_GAUGES && s->kind != STAT_GAUGE)
        return false;
    if (q->used_only && s->value == 0)
        return false;
    return !q->has_filter || regexec(&q->filter, s->name, 0, NULL, 0) == 0;
}

/* The address part of "listener.<address>." as Envoy's LISTENER_ADDRESS extractor takes it: the
 * longest run of [_.0-9] (IPv4 "127.0.0.1_10000"), else of [_[]a-fA-F0-9] (IPv6, "[__1]_10000"
 * in Envoy, whose stat names turn ':' into '_'; socktap's keep it, "[::1]_10000", so ':' is
 * allowed here too), that a '.' follows. Returns its length, or -1. */
static long listener_address_len(const char *p)
{
    static const char *const alts[] = {"_.0123456789", "_[]:abcdefABCDEF0123456789"};
    for (size_t a = 0; a < 2; a++) {
        size_t run = strspn(p, alts[a]);
        for (size_t len = run + 1; len-- > 0;)
            if (p[len] == '.')
                return (long)len;
    }
    return -1;
}

bool admin_stats_prometheus_name(const char *name, char *metric, size_t metric_size,
                                 struct admin_stats_tag *tag)
{
    memset(tag, 0, sizeof(*tag));
    size_t skip_at = 0, skip_len = 0; /* the tag's part of NAME, with its trailing '.' */
    if (!strncmp(name, "cluster.", 8)) {
        /* cluster.(<cluster_name>.)* : the first segment */
        const char *dot = strchr(name + 8, '.');
        if (dot) {
            tag->label = "envoy_cluster_name";
            skip_at = 8;
            skip_len = (size_t)(dot - (name + 8)) + 1;
        }
    } else if (!strncmp(name, "tcp.", 4)) {
        /* tcp.(<stat_prefix>.)<base_stat>, base_stat one \w+ segment: up to the last '.' */
        const char *dot = strrchr(name + 4, '.');
        bool word = dot && dot[1];
        for (const char *c = dot ? dot + 1 : ""; word && *c; c++)
            word = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                   (*c >= '0' && *c <= '9') || *c == '_';
        if (word) {
            tag->label = "envoy_tcp_prefix";
            skip_at = 4;
            skip_len = (size_t)(dot - (name + 4)) + 1;
        }
    } else if (!strncmp(name, "listener.", 9)) {
        long len = listener_address_len(name + 9);
        if (len >= 0) {
            tag->label = "envoy_listener_address";
            skip_at = 9;
            skip_len = (size_t)len + 1;
        }
    }
    if (tag->label) {
        tag->value = name + skip_at;
        tag->value_len = skip_len - 1;
    }
    size_t o = 0;
    const char *prefix = "envoy_";
    for (const char *c = prefix; *c && o + 1 < metric_size; c++)
        metric[o++] = *c;
    for (size_t i = 0; name[i] && o + 1 < metric_size; i++) {
        if (tag->label && i >= skip_at && i < skip_at + skip_len)
            continue;
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        metric[o++] = ok ? c : '_';
    }
    if (metric_size)
        metric[o] = '\0';
    return tag->label != NULL;
}

void admin_stats_json_string(FILE *out, const char *s)
{
    json_out_string(out, s);
}

struct prom_row {
    char metric[256];
    struct admin_stats_tag tag;
    const struct stat_sample *s;
};

static int prom_cmp(const void *a, const void *b)
{
    const struct prom_row *x = a, *y = b;
    int c = strcmp(x->metric, y->metric);
    if (c)
        return c;
    size_t n = x->tag.value_len < y->tag.value_len ? x->tag.value_len : y->tag.value_len;
    c = n ? memcmp(x->tag.value, y->tag.value, n) : 0;
    if (c)
        return c;
    return x->tag.value_len < y->tag.value_len ? -1 : x->tag.value_len > y->tag.value_len;
}

static int write_prometheus(FILE *out, const struct stat_sample *s, size_t n,
                            const struct admin_stats_query *q)
{
    struct prom_row *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!rows)
        return -ENOMEM;
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        if (!selected(&s[i], q))
            continue;
        admin_stats_prometheus_name(s[i].name, rows[nr].metric, sizeof(rows[nr].metric),
                                    &rows[nr].tag);
        rows[nr++].s = &s[i];
    }
    qsort(rows, nr, sizeof(*rows), prom_cmp);
    for (size_t i = 0; i < nr; i++) {
        const struct prom_row *r = &rows[i];
        if (i == 0 || strcmp(r->metric, rows[i - 1].metric)) {
            const char *type = r->s->kind == STAT_COUNTER ? "counter" : "gauge";
            fprintf(out, "# HELP %s socktap %s (Envoy naming)\n# TYPE %s %s\n", r->metric, type,
                    r->metric, type);
        }
        fputs(r->metric, out);
        if (r->tag.label) {
            fprintf(out, "{%s=\"", r->tag.label);
            for (size_t k = 0; k < r->tag.value_len; k++) {
                char c = r->tag.value[k];
                if (c == '\\' || c == '"')
                    fprintf(out, "\\%c", c);
                else if (c == '\n')
                    fputs("\\n", out);
                else
                    fputc(c, out);
            }
            fputs("\"}", out);
        }
        fprintf(out, " %" PRId64 "\n", r->s->value);
    }
    free(rows);
    return 0;
}

int admin_stats_write(FILE *out, const struct stat_sample *s, size_t n,
                      const struct admin_stats_query *q)
{
    if (q->format == ADMIN_STATS_PROMETHEUS)
        return write_prometheus(out, s, n, q);
    bool json = q->format == ADMIN_STATS_JSON, first = true;
    if (json)
        fputs("{\"stats\":[", out);
    for (size_t i = 0; i < n; i++) {
        if (!selected(&s[i], q))
            continue;
        if (!json) {
            fprintf(out, "%s: %" PRId64 "\n", s[i].name, s[i].value);
            continue;
        }
        fputs(first ? "\n{\"name\":" : ",\n{\"name\":", out);
        admin_stats_json_string(out, s[i].name);
        fprintf(out, ",\"value\":%" PRId64 "}", s[i].value);
        first = false;
    }
    if (json)
        fputs("\n]}\n", out);
    return 0;
}

/* The forms of GET /stats and GET /stats/prometheus, over one snapshot of the stats (core/stats.h):
 * Envoy's text ("name: value"), Envoy's JSON ({"stats":[{"name":..,"value":..}]}) and the
 * Prometheus text exposition format 0.0.4 with Envoy's naming (envoy_ prefix, the default tag
 * extractors that apply to socktap's stat names turned into labels). Formatting into a FILE, no
 * event loop: the unit tests run it directly. */
#ifndef SOCKTAP_ADMIN_ADMIN_STATS_H
#define SOCKTAP_ADMIN_ADMIN_STATS_H

#include <regex.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/stats.h"

enum admin_stats_format { ADMIN_STATS_TEXT, ADMIN_STATS_JSON, ADMIN_STATS_PROMETHEUS };
enum admin_stats_type { ADMIN_STATS_ALL, ADMIN_STATS_COUNTERS, ADMIN_STATS_GAUGES };

/* Envoy's /stats query parameters (source/server/admin/stats_params.cc): format, filter (a
 * regular expression searched in the name; Envoy's is RE2, ours POSIX extended), usedonly (here:
 * a value other than 0, as socktap keeps no "ever written" flag), type. */
struct admin_stats_query {
    enum admin_stats_format format;
    enum admin_stats_type type;
    bool used_only;
    bool has_filter;
    regex_t filter; /* compiled when has_filter */
};

/* Parses QUERY (the URL's query string, NULL allowed) into *Q, starting from FORMAT. Returns 0,
 * or -EINVAL with a one-line reason for the client in WHY. On 0 the caller owes
 * admin_stats_query_fini(Q). */
int admin_stats_query_parse(const char *query, enum admin_stats_format format,
                            struct admin_stats_query *q, char *why, size_t why_size);
void admin_stats_query_fini(struct admin_stats_query *q);

/* Writes the N samples S (sorted by name, as stats_snapshot gives them) that Q selects to OUT in
 * Q's format. Returns 0 or -ENOMEM. */
int admin_stats_write(FILE *out, const struct stat_sample *s, size_t n,
                      const struct admin_stats_query *q);

/* Writes S as a JSON string (quotes, escapes) to OUT. */
void admin_stats_json_string(FILE *out, const char *s);

/* One Envoy tag: a label name ("envoy_cluster_name") and its value, borrowed from the stat's
 * name (VALUE_LEN bytes at VALUE). */
struct admin_stats_tag {
    const char *label;
    const char *value;
    size_t value_len;
};

/* Envoy's default tag extraction for NAME (source/common/config/well_known_names.cc: the
 * cluster.<cluster_name>., listener.<address>. and tcp.<stat_prefix>. extractors, the ones
 * socktap's names can match): writes the Prometheus metric name ("envoy_" + the name without the
 * tag's part, other than [a-zA-Z0-9_] as '_') into METRIC and fills *TAG. Returns whether NAME
 * had a tag; false leaves *TAG empty. METRIC is cut at METRIC_SIZE - 1. */
bool admin_stats_prometheus_name(const char *name, char *metric, size_t metric_size,
                                 struct admin_stats_tag *tag);

#endif

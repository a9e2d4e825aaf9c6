/* access_log: lists (tcp_proxy's, v3 admin's): Envoy's AccessLog messages
 * (api/envoy/config/accesslog/v3/accesslog.proto) with the file logger
 * (extensions/access_loggers/file/v3/file.proto) and the stdout/stderr loggers
 * (extensions/access_loggers/stream/v3/stream.proto), formats compiled at load. */
#ifndef SOCKTAP_CONFIG_ACCESS_LOG_CONFIG_H
#define SOCKTAP_CONFIG_ACCESS_LOG_CONFIG_H

#include <stddef.h>

#include "cfgtree/cfg_node.h"
#include "core/access_format.h"

struct cfg_access_log {
    const char *path;      /* points into the document ("/dev/stdout" for the stdout logger) */
    struct al_format *fmt; /* owned (cfg_access_logs_free) */
};

/* Parses the access_log list NODE at PATH into *OUT (owned by the caller: cfg_access_logs_free)
 * and *N. Returns 0, or -EINVAL/-ENOMEM with ERR set. */
int cfg_parse_access_logs(struct cfg_err *err, const struct cfg_doc *doc,
                          const struct cfg_node *node, const struct cfg_path *path,
                          struct cfg_access_log **out, size_t *n)
    __attribute__((warn_unused_result));
/* Frees LOGS (N of them; LOGS may be NULL). */
void cfg_access_logs_free(struct cfg_access_log *logs, size_t n);

#endif

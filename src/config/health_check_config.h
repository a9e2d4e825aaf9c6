/* Cluster health_checks (api/envoy/config/core/v3/health_check.proto): the TCP checker. */
#ifndef SOCKTAP_CONFIG_HEALTH_CHECK_CONFIG_H
#define SOCKTAP_CONFIG_HEALTH_CHECK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgtree/cfg_node.h"

struct cfg_hc_payload {
    uint8_t *bytes; /* owned (cfg_health_check_free) */
    size_t len;
};

struct cfg_health_check {
    bool enabled;
    uint64_t timeout_ms, interval_ms;
    uint64_t no_traffic_interval_ms; /* until the cluster had a connection; default 60 s (Envoy) */
    uint32_t unhealthy_threshold, healthy_threshold;
    struct cfg_hc_payload send;     /* tcp_health_check.send; len 0: connect only */
    struct cfg_hc_payload *receive; /* tcp_health_check.receive, matched in order; owned */
    size_t nreceive;
};

/* Parses the health_checks list NODE at PATH into *OUT (zeroed first; one check at most).
 * Returns 0 or -EINVAL/-ENOMEM with ERR set; *OUT then holds what was allocated
 * (cfg_health_check_free). */
int cfg_parse_health_checks(struct cfg_err *err, const struct cfg_doc *doc,
                            const struct cfg_node *node, const struct cfg_path *path,
                            struct cfg_health_check *out) __attribute__((warn_unused_result));
void cfg_health_check_free(struct cfg_health_check *hc);

#endif

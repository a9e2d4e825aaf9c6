/* tap_feat: the v3 tap socket's options beyond a file sink, as Envoy's today
 * (envoy/extensions/transport_sockets/tap/v3/tap.proto, envoy/config/tap/v3/common.proto):
 *   socket_tap_config {set_connection_per_event, stats_prefix} (Tap field 3), Envoy's counters
 *     transport.tap.<stats_prefix>.{streamed,buffered}_{read,write,close}_submit;
 *   tap_enabled (TapConfig field 3, a RuntimeFractionalPercent): per-connection sampling;
 *   match / match_config: any_match and and_match / or_match / not_match over it, evaluated
 *     once at load (nothing at L4 changes a tree of those per connection);
 *   custom_sink envoy.tap_sinks.udp_sink (contrib): each trace message one UDP datagram.
 * The parsers only fill struct tap_feat; capture_config.c calls them, capture_rec.c acts on it. */
#ifndef SOCKTAP_TRANSPORT_TAP_FEAT_H
#define SOCKTAP_TRANSPORT_TAP_FEAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cfgtree/cfg_node.h"
#include "core/stats.h"

struct ts_parse_ctx;
struct capture_cfg;
struct trace_enc_cfg;

/* Envoy's per-socket tap counters (tap_config_impl.cc pegReadWriteSubmitCounter,
 * pegCloseSubmitCounter) and socktap's two about connections the tap leaves out. */
struct tap_feat_stats {
    stat_id streamed_read, streamed_write, streamed_close;
    stat_id buffered_read, buffered_write, buffered_close;
    stat_id sampled_out; /* <owner>.tap.sampled_out: tap_enabled said no */
    stat_id not_matched; /* <owner>.tap.not_matched: the match tree is never true */
    /* UDP sink: <owner>.tap.udp_{sent,dropped,too_large} */
    stat_id udp_sent, udp_dropped, udp_too_large;
};

/* The UDP sink (contrib/envoy/extensions/tap_sinks/udp_sink/v3alpha/udp_sink.proto). */
struct tap_udp {
    int fd; /* owned: one non-blocking datagram socket per config, shared by the workers
             * (a sendto is atomic per datagram) */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    uint32_t max_msg;  /* udp_max_send_msg_size_bytes, default 63488 as Envoy's proto says */
    bool *drop_logged; /* owned, atomic: a drop was logged; reset by the next datagram sent */
};

struct tap_feat {
    char *stats_prefix;  /* owned or NULL: socket_tap_config.stats_prefix */
    bool sampling;       /* tap_enabled below 100% */
    uint32_t sample_num; /* tap_enabled: numerator / denominator */
    uint32_t sample_den;
    bool never;          /* the match tree can never be true: nothing is tapped */
    struct tap_udp *udp; /* owned or NULL: custom_sink envoy.tap_sinks.udp_sink */
    struct tap_feat_stats stats;
    bool registered; /* stats registered: a tap config (capture and tls_wire have none) */
};

/* `socket_tap_config` NODE at PATH: set_connection_per_event into ENC, stats_prefix into FEAT. */
int tap_feat_parse_socket_cfg(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                              const struct cfg_path *path, struct tap_feat *feat,
                              struct trace_enc_cfg *enc) __attribute__((nonnull(1, 2, 3, 4, 5)));
/* TapConfig.match (or match_config) NODE at PATH: a MatchPredicate tree; FEAT->never is set
 * when it is never true (warned). HTTP matchers are refused by name. */
int tap_feat_parse_match(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                         const struct cfg_path *path, struct tap_feat *feat)
    __attribute__((nonnull(1, 2, 3, 4)));
/* TapConfig.tap_enabled NODE at PATH. */
int tap_feat_parse_enabled(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                           const struct cfg_path *path, struct tap_feat *feat)
    __attribute__((nonnull(1, 2, 3, 4)));
/* OutputSink.custom_sink NODE at PATH: opens FEAT->udp (the socket). */
int tap_feat_parse_custom_sink(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                               const struct cfg_path *path, struct tap_feat *feat)
    __attribute__((nonnull(1, 2, 3, 4)));
/* Registers FEAT's stats for OWNER (NULL: "socktap"). */
void tap_feat_register_stats(struct tap_feat *feat, const char *owner) __attribute__((nonnull(1)));
/* Frees what FEAT owns (not FEAT). */
void tap_feat_free(struct tap_feat *feat) __attribute__((nonnull));

/* Whether connection CONN_ID is tapped under tap_enabled (always true without sampling). */
bool tap_feat_sampled(const struct tap_feat *feat, uint64_t conn_id) __attribute__((nonnull));
/* The sampling draw for CONN_ID, 0..2^64-1 (exposed for tests: a connection is sampled when
 * draw % sample_den < sample_num). */
uint64_t tap_feat_draw(uint64_t conn_id);

/* Sends LEN bytes of MSG (one whole trace message) as one datagram; never blocks. A datagram
 * over max_msg or refused by the kernel (EAGAIN: the socket buffer is full) is dropped and
 * counted, logged once until one is sent again. */
void tap_udp_send(const struct tap_feat *feat, uint64_t conn_id, const void *msg, size_t len)
    __attribute__((nonnull(1)));

#endif

/* socktap's typed configuration: the subset of Envoy's bootstrap (v2 and v3 shapes) that an L4
 * capturing proxy needs. config_load() does all validation; the runtime trusts these structs. */
#ifndef SOCKTAP_CONFIG_CONFIG_H
#define SOCKTAP_CONFIG_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cfgtree/cfg_node.h"
#include "config/access_log_config.h"
#include "config/health_check_config.h"
#include "transport/ts_registry.h"

#define CFG_DEFAULT_BUFFER_LIMIT (1024u * 1024u)

struct cfg_address {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64];      /* "127.0.0.1:10000" or "[::1]:10000" */
    char stat_name[64]; /* Envoy's stat form: "127.0.0.1_10000", "[::1]_10000" */
};

/* ORIGINAL_DST: no configured hosts; each connection goes to its downstream's original
 * destination (SO_ORIGINAL_DST, read when its listener has use_original_dst). */
enum cfg_cluster_type {
    CFG_CLUSTER_STATIC,
    CFG_CLUSTER_STRICT_DNS,
    CFG_CLUSTER_LOGICAL_DNS,
    CFG_CLUSTER_ORIGINAL_DST
};
enum cfg_lb_policy {
    CFG_LB_ROUND_ROBIN,
    CFG_LB_RANDOM,
    CFG_LB_LEAST_REQUEST,
    CFG_LB_CLUSTER_PROVIDED
};

struct cfg_cluster {
    char *name;
    uint64_t connect_timeout_ms; /* default 5000 (Envoy's default) */
    enum cfg_cluster_type type;
    enum cfg_lb_policy lb_policy;
    struct cfg_address *hosts; /* resolved at load time (DNS types: getaddrinfo once) */
    size_t nhosts;
    uint32_t buffer_limit;    /* per_connection_buffer_limit_bytes, default 1 MiB */
    uint32_t max_connections; /* circuit_breakers.thresholds[0].max_connections; 0 = none */
    struct ts_config ts;      /* transport_socket (or v2 tls_context); default raw_buffer */
    char *owner_name;         /* "cluster.<name>": the stats prefix (owned, freed by config_free) */
    struct cfg_health_check health_check; /* health_checks[0]; enabled false: none */
    /* STRICT_DNS/LOGICAL_DNS: dns_refresh_rate, how often the hosts are resolved again
     * (default 5 s, Envoy's); 0 for the other types */
    uint64_t dns_refresh_ms;
};

/* tcp_proxy weighted_clusters.clusters[i] */
struct cfg_weighted_cluster {
    struct cfg_cluster *cluster; /* resolved; points into socktap_config.clusters */
    uint32_t weight;             /* >= 1 */
};

struct cfg_tcp_proxy {
    char *stat_prefix;
    char *cluster_name;
    /* resolved; points into socktap_config.clusters. With weighted_clusters: the first of them
     * (stats, reload summaries); a connection's own is drawn by weight (cluster_route) */
    struct cfg_cluster *cluster;
    struct cfg_weighted_cluster *weighted; /* weighted_clusters (owned), or NULL */
    size_t nweighted;
    uint64_t total_weight;
    uint64_t max_duration_ms; /* max_downstream_connection_duration; 0 = none (Envoy's default) */
    uint64_t idle_timeout_ms; /* default 1 hour as Envoy; 0 disables */
    uint32_t max_connect_attempts; /* hosts tried per downstream connection; default 1 (Envoy) */
    struct cfg_access_log *access_logs; /* access_log: one line per connection (owned) */
    size_t naccess_logs;
};

/* core.v3.CidrRange: address_prefix/prefix_len, normalized (host bits cleared) at load. */
struct cfg_cidr {
    int family; /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    uint8_t len; /* prefix_len: 0..32 or 0..128 */
};

enum cfg_source_type { CFG_SOURCE_ANY, CFG_SOURCE_SAME_IP_OR_LOOPBACK, CFG_SOURCE_EXTERNAL };

/* FilterChainMatch (config/listener/v3/listener_components.proto). Empty lists and 0 mean
 * "not set" (matches anything, least specific). Strings point into the document. */
struct cfg_chain_match {
    uint32_t destination_port;      /* 0 = unset */
    struct cfg_cidr *prefix_ranges; /* owned (config_free) */
    size_t nprefix_ranges;
    const char **server_names; /* owned array; "*.example.com" is a wildcard */
    size_t nserver_names;
    const char *transport_protocol;     /* NULL = unset; "tls", "raw_buffer" */
    const char **application_protocols; /* owned array */
    size_t napplication_protocols;
    enum cfg_source_type source_type;
    struct cfg_cidr *source_prefix_ranges; /* owned */
    size_t nsource_prefix_ranges;
    uint32_t *source_ports; /* owned */
    size_t nsource_ports;
};

/* One filter chain: its match, its tcp_proxy and its transport socket (so a capture/tap socket
 * can sit on one chain only). */
struct cfg_filter_chain {
    const char *name; /* FilterChain.name, or NULL */
    size_t index;     /* in cfg_listener.chains (the default chain is last) */
    struct cfg_chain_match match;
    struct cfg_tcp_proxy tcp_proxy;
    struct ts_config ts; /* transport_socket (or tls_context); default raw */
    /* transport_socket_connect_timeout: time a connection gets to finish its transport
     * handshake (TLS) before it is closed; 0 = no limit. Default 10 s (socktap's; Envoy has
     * none). */
    uint64_t transport_connect_timeout_ms;
};

/* What the chain choice knows of a connection (tls_inspector fills sni/alpn/transport). */
struct cfg_chain_conn {
    const struct sockaddr *local, *peer; /* both required */
    const char *server_name;             /* "" when none */
    const char *transport_protocol;      /* "tls" or "raw_buffer" */
    const char *const *alpn;             /* client's ALPN list in its order, NALPN entries */
    size_t nalpn;
};

struct cfg_listener {
    char *name; /* defaults to the address text */
    struct cfg_address addr;
    uint32_t buffer_limit;    /* per_connection_buffer_limit_bytes, default 1 MiB */
    uint32_t max_connections; /* 0 = no limit; from an envoy.filters.network.connection_limit
                                 filter placed before tcp_proxy (Envoy's per-chain limit; socktap
                                 accepts it only on a listener with one filter chain) */
    const char *conn_limit_stat_prefix; /* that filter's stat_prefix (points into doc) */
    /* filter_chains then default_filter_chain (owned array, config_free); NCHAINS counts
     * both; HAS_DEFAULT says the last one is the default chain */
    struct cfg_filter_chain *chains;
    size_t nchains;
    bool has_default;
    /* listener_filters: envoy.filters.listener.tls_inspector */
    bool tls_inspector;
    uint32_t max_client_hello_size;       /* tls_inspector's bound (Envoy: 16 KiB max) */
    uint64_t listener_filters_timeout_ms; /* default 15 s (Envoy); 0 = none */
    bool continue_on_listener_filters_timeout;
    /* use_original_dst (or the envoy.filters.listener.original_dst listener filter): a
     * connection's local address is the one before an iptables REDIRECT (SO_ORIGINAL_DST) */
    bool use_original_dst;
    char *owner_name; /* "listener.<addr.stat_name>": stats prefix (owned, config_free) */
};

/* The filter chain for connection C on listener L with Envoy's selection order
 * (filter_chain_manager_impl.cc: destination port, destination IP, server name, transport
 * protocol, application protocols, source type, source IP, source port; at each step the most
 * specific match wins and there is no going back), else the default chain, else NULL (Envoy's
 * no_filter_chain_match). Pure: any thread. */
const struct cfg_filter_chain *cfg_chain_select(const struct cfg_listener *l,
                                                const struct cfg_chain_conn *c);
/* The transport socket config the admin's capture switch and live views mean by listener L: the
 * first chain whose socket is a capture/tap (live hub), else the first chain's. */
const struct ts_config *cfg_listener_ts(const struct cfg_listener *l, bool wire);
/* Whether some chain of L asks for what only tls_inspector can tell (server_names,
 * application_protocols, transport_protocol "tls"). */
bool cfg_listener_needs_inspector(const struct cfg_listener *l);

/* admin.socktap_pcap_over_ip[i] (socktap extension): a TCP port that streams one capture
 * socket live as classic pcap to every client that connects (PolarProxy's PCAP-over-IP). */
struct cfg_pcap_over_ip {
    struct cfg_address addr;
    const char *listener, *cluster; /* exactly one is set; strings point into the document */
    bool wire;                      /* the TLS socket's wire capture instead of the plaintext */
};

struct cfg_admin {
    bool enabled;
    struct cfg_address addr;
    struct cfg_pcap_over_ip *pcap_over_ip; /* owned (config_free) */
    size_t npcap_over_ip;
    /* v3 access_log (or v2 access_log_path, Envoy's default format): a line per request */
    struct cfg_access_log *access_logs; /* owned (config_free) */
    size_t naccess_logs;
};

struct socktap_config {
    struct cfg_doc *doc; /* kept: strings and ts configs may point into it */
    struct cfg_listener *listeners;
    size_t nlisteners;
    struct cfg_cluster *clusters;
    size_t nclusters;
    struct cfg_admin admin;
    /* application_log_config.log_format as a --log-format pattern (owned), or NULL */
    char *log_format;
};

/* Loads and validates FILE. On success *OUT is owned by the caller (config_free). On failure
 * returns -EINVAL (or -errno for I/O) and ERR holds the one-line message with file:line:col and
 * key path. The transport registry must be initialized (ts_registry_init(), main's job). */
int config_load(const char *file, struct socktap_config **out, struct cfg_err *err);
/* Same, from memory (tests, fuzzing); NAME appears in messages as the file name. */
int config_load_string(const char *name, const char *text, size_t len, struct socktap_config **out,
                       struct cfg_err *err);
void config_free(struct socktap_config *cfg);
/* Logs one warning per bootstrap field CFG has that socktap accepts and ignores (node,
 * layered_runtime, stats_sinks, ...: docs/envoy-compat.md). Main calls it once the log is set up
 * (--log-path, the log format), so the warnings land where the other lines do. */
void config_warn_ignored(const struct socktap_config *cfg);

/* Parses an Envoy address node {socket_address: {address, port_value, protocol?}} or a
 * bare socket_address map (used by TLS/capture parsers too). */
int cfg_parse_address(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                      const struct cfg_path *path, struct cfg_address *out);

#endif

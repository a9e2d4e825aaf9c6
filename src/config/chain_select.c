/* Filter chain selection: Envoy's FilterChainManagerImpl::findFilterChain
 * (source/common/listener_manager/filter_chain_manager_impl.cc) over socktap's chain table.
 *
 * Envoy builds nested maps (port -> IP trie -> server name -> transport -> ALPN -> source type
 * -> source IP trie -> source port) and walks them once: at each level it takes the most
 * specific entry that matches (exact port over unset, longest prefix, exact server name over
 * the longest wildcard suffix over unset, ...) and never goes back up when a deeper level has
 * no match. Here the same walk is a filter over the chain array: at each level the candidates
 * are ranked, only those with the best rank stay, and a level where nothing matches ends the
 * walk with no chain. The config's collision check guarantees at most one survivor.
 * Rejected: building Envoy's tries. A listener has a handful of chains; a linear pass per level
 * is a few hundred comparisons at most and has no state to keep across reloads. */
#include <arpa/inet.h>
#include <string.h>

#include "config/config.h"

#define CHAIN_MAX_RANK (1 << 20)
#define NO_MATCH       (-1)

static bool ip_of(const struct sockaddr *sa, int *family, const uint8_t **bytes, uint16_t *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        *family = AF_INET;
        *bytes = (const uint8_t *)&in->sin_addr;
        *port = ntohs(in->sin_port);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        *family = AF_INET6;
        *bytes = (const uint8_t *)&in6->sin6_addr;
        *port = ntohs(in6->sin6_port);
        return true;
    }
    return false;
}

static bool cidr_contains(const struct cfg_cidr *c, int family, const uint8_t *ip)
{
    if (c->family != family)
        return false;
    unsigned full = c->len / 8, rest = c->len % 8;
    if (memcmp(c->addr, ip, full))
        return false;
    return !rest || ((c->addr[full] ^ ip[full]) & (uint8_t)(0xffu << (8 - rest))) == 0;
}

/* Longest matching prefix + 1, 0 for no ranges (any), NO_MATCH. */
static int rank_cidr(const struct cfg_cidr *r, size_t n, int family, const uint8_t *ip)
{
    int best = NO_MATCH;
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (cidr_contains(&r[i], family, ip) && r[i].len + 1 > best)
            best = r[i].len + 1;
    return best;
}

/* Exact name first, then the wildcard with the longest suffix ("*.b.example.com" before
 * "*.example.com"), then no server_names. Envoy looks wildcards up by the name's suffixes after
 * each dot, so "*.example.com" matches "a.b.example.com" but not "example.com". */
static int rank_server_name(const struct cfg_chain_match *m, const char *sni)
{
    int best = NO_MATCH;
    size_t sl = strlen(sni);
    if (!m->nserver_names)
        return 0;
    for (size_t i = 0; i < m->nserver_names; i++) {
        const char *n = m->server_names[i];
        if (n[0] != '*') {
            if (sl && !strcmp(n, sni))
                return CHAIN_MAX_RANK;
            continue;
        }
        size_t suffix = strlen(n + 1); /* ".example.com" */
        if (sl > suffix && !strcmp(sni + sl - suffix, n + 1) && (int)suffix + 1 > best)
            best = (int)suffix + 1;
    }
    return best;
}

/* Envoy takes the first of the client's protocols any chain lists (findFilterChainForApplication
 * Protocols): rank by how early in the client's list the chain's protocol is. */
static int rank_alpn(const struct cfg_chain_match *m, const struct cfg_chain_conn *c)
{
    if (!m->napplication_protocols)
        return 0;
    for (size_t i = 0; i < c->nalpn; i++)
        for (size_t j = 0; j < m->napplication_protocols; j++)
            if (!strcmp(c->alpn[i], m->application_protocols[j]))
                return CHAIN_MAX_RANK - (int)i;
    return NO_MATCH;
}

static int rank_source_type(enum cfg_source_type t, bool local_source)
{
    if (t == CFG_SOURCE_ANY)
        return 0;
    return (t == CFG_SOURCE_SAME_IP_OR_LOOPBACK) == local_source ? 1 : NO_MATCH;
}

static int rank_port(const uint32_t *ports, size_t n, uint16_t port)
{
    if (!n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ports[i] == port)
            return 1;
    return NO_MATCH;
}

/* SAME_IP_OR_LOOPBACK: the source is a loopback address or the local address itself
 * (Envoy's isSameIpOrLoopback). */
static bool is_local_source(int lf, const uint8_t *lip, int pf, const uint8_t *pip)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    if (pf == AF_INET && pip[0] == 127)
        return true;
    if (pf == AF_INET6 && !memcmp(pip, v6_loopback, 16))
        return true;
    return lf == pf && !memcmp(lip, pip, pf == AF_INET ? 4 : 16);
}

const struct cfg_filter_chain *cfg_chain_select(const struct cfg_listener *l,
                                                const struct cfg_chain_conn *c)
{
    size_t n = l->nchains - (l->has_default ? 1 : 0);
    int lf, pf;
    const uint8_t *lip, *pip;
    uint16_t lport, pport;
    bool alive[n ? n : 1];
    const char *tp = c->transport_protocol ? c->transport_protocol : "raw_buffer";
    const char *sni = c->server_name ? c->server_name : "";

    if (!ip_of(c->local, &lf, &lip, &lport) || !ip_of(c->peer, &pf, &pip, &pport))
        goto no_match;
    bool local_source = is_local_source(lf, lip, pf, pip);
    for (size_t i = 0; i < n; i++)
        alive[i] = true;
    for (int level = 0; level < 8; level++) {
        int best = NO_MATCH, rank[n ? n : 1];
        for (size_t i = 0; i < n; i++) {
            const struct cfg_chain_match *m = &l->chains[i].match;
            if (!alive[i])
                continue;
            switch (level) {
            case 0:
                rank[i] = !m->destination_port ? 0 : m->destination_port == lport ? 1 : NO_MATCH;
                break;
            case 1:
                rank[i] = rank_cidr(m->prefix_ranges, m->nprefix_ranges, lf, lip);
                break;
            case 2:
                rank[i] = rank_server_name(m, sni);
                break;
            case 3:
                rank[i] = !m->transport_protocol               ? 0
                          : !strcmp(m->transport_protocol, tp) ? 1
                                                               : NO_MATCH;
                break;
            case 4:
                rank[i] = rank_alpn(m, c);
                break;
            case 5:
                rank[i] = rank_source_type(m->source_type, local_source);
                break;
            case 6:
                rank[i] = rank_cidr(m->source_prefix_ranges, m->nsource_prefix_ranges, pf, pip);
                break;
            default:
                rank[i] = rank_port(m->source_ports, m->nsource_ports, pport);
                break;
            }
            if (rank[i] > best)
                best = rank[i];
        }
        if (best == NO_MATCH)
            goto no_match;
        for (size_t i = 0; i < n; i++)
            if (alive[i] && rank[i] != best)
                alive[i] = false;
    }
    for (size_t i = 0; i < n; i++)
        if (alive[i])
            return &l->chains[i];
no_match:
    return l->has_default ? &l->chains[l->nchains - 1] : NULL;
}

const struct ts_config *cfg_listener_ts(const struct cfg_listener *l, bool wire)
{
    for (size_t i = 0; i < l->nchains; i++)
        if (ts_config_live(&l->chains[i].ts, wire))
            return &l->chains[i].ts;
    return &l->chains[0].ts;
}

bool cfg_listener_needs_inspector(const struct cfg_listener *l)
{
    for (size_t i = 0; i < l->nchains; i++) {
        const struct cfg_chain_match *m = &l->chains[i].match;
        if (m->nserver_names || m->napplication_protocols ||
            (m->transport_protocol && !strcmp(m->transport_protocol, "tls")))
            return true;
    }
    return false;
}

/* Active TCP health checks (health_check.h).
 *
 * Each checked host has one session at a time on the main loop: connect (non-blocking), then,
 * with a send payload, write it, and with receive payloads read until each appears in order in
 * what came back (Envoy's TcpHealthCheckMatcher::match searches the buffer the same way), all
 * within `timeout`. The verdict follows Envoy's thresholds: unhealthy_threshold failures in a
 * row make a healthy host unhealthy, healthy_threshold successes an unhealthy one healthy, and a
 * host's very first check decides at once (Envoy: a host starts FAILED_ACTIVE_HC and one pass
 * clears it). The next check comes `interval` later, or `no_traffic_interval` (default 60 s)
 * while the cluster has never had a connection, as Envoy. Every check opens its own connection
 * (Envoy closes after the connect too when no receive payload is expected).
 *
 * Verdicts are one byte per host in the generation, written here, read by the workers' LB with
 * relaxed atomics: a worker may pick a host a check just failed once more, as in Envoy, where
 * host sets reach workers asynchronously. A verdict changes logs one line (never per check).
 *
 * Rejected: checks on a worker (a worker's loop belongs to the relay; the checks are a few
 * connects a second and the main loop is idle); sharing a check socket across reloads (a reload
 * starts the new generation's checks afresh, Envoy does the same for a changed cluster). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/stats.h"
#include "net/cluster.h"
#include "net/health_check.h"

#define HC_RECV_MAX (64u * 1024u) /* bytes kept while looking for the receive payloads */

struct hc_stats {
    stat_id attempt, success, failure, network_failure, healthy, membership_healthy;
};

struct hc_host {
    struct hc_gen *hg;
    size_t ci, h;
    int fd;
    struct event *io;    /* the check under way: connect, then read */
    struct event *timer; /* the next check */
    struct timeval deadline;
    uint8_t *buf;
    size_t len;
    uint32_t successes, failures;
    bool first_done;
};

struct hc_gen {
    struct gen *g;
    struct event_base *base;
    struct hc_host **hosts; /* [cluster][host]; NULL rows for unchecked clusters */
    struct hc_stats *stats; /* per cluster */
    bool started;
};

static void hc_set_healthy(struct hc_host *hh, bool healthy, const char *why)
{
    struct gen *g = hh->hg->g;
    const struct cfg_cluster *cl = cluster_config(g, hh->ci);
    const struct hc_stats *st = &hh->hg->stats[hh->ci];
    uint8_t *cell = &g->healthy[hh->ci][hh->h];
    if (__atomic_load_n(cell, __ATOMIC_RELAXED) == healthy)
        return;
    __atomic_store_n(cell, healthy, __ATOMIC_RELAXED);
    stats_add(st->healthy, healthy ? 1 : -1);
    stats_add(st->membership_healthy, healthy ? 1 : -1);
    if (healthy)
        LOGI(LOG_NO_CONN, "health check: cluster %s host %s is healthy", cl->name,
             cl->hosts[hh->h].text);
    else
        LOGW(LOG_NO_CONN, "health check: cluster %s host %s is unhealthy: %s", cl->name,
             cl->hosts[hh->h].text, why);
}

static void hc_schedule(struct hc_host *hh)
{
    struct gen *g = hh->hg->g;
    const struct cfg_health_check *hc = &cluster_config(g, hh->ci)->health_check;
    bool traffic = stats_get(cluster_stats(g, hh->ci)->cx_total) > 0;
    uint64_t ms = traffic ? hc->interval_ms : hc->no_traffic_interval_ms;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(hh->timer, &tv);
}

/* Ends the check under way with OK (or the failure WHY, NETWORK: a connect/read error or a
 * timeout rather than a wrong answer) and schedules the next one. */
static void hc_finish(struct hc_host *hh, bool ok, bool network, const char *why)
{
    const struct cfg_health_check *hc = &cluster_config(hh->hg->g, hh->ci)->health_check;
    const struct hc_stats *st = &hh->hg->stats[hh->ci];
    if (hh->io) {
        event_free(hh->io);
        hh->io = NULL;
    }
    if (hh->fd >= 0) {
        close(hh->fd);
        hh->fd = -1;
    }
    free(hh->buf);
    hh->buf = NULL;
    hh->len = 0;
    bool first = !hh->first_done;
    hh->first_done = true;
    if (ok) {
        stats_inc(st->success);
        hh->failures = 0;
        hh->successes++;
        if (first || hh->successes >= hc->healthy_threshold)
            hc_set_healthy(hh, true, NULL);
    } else {
        stats_inc(st->failure);
        if (network)
            stats_inc(st->network_failure);
        hh->successes = 0;
        hh->failures++;
        if (first || hh->failures >= hc->unhealthy_threshold)
            hc_set_healthy(hh, false, why);
        LOGD(LOG_NO_CONN, "health check of %s failed: %s",
             cluster_host_name(hh->hg->g, hh->ci, hh->h), why);
    }
    hc_schedule(hh);
}

/* The time left until the check's deadline, for the next wait. */
static struct timeval hc_left(struct hc_host *hh)
{
    struct timeval now, left;
    evutil_gettimeofday(&now, NULL);
    timersub(&hh->deadline, &now, &left);
    if (left.tv_sec < 0)
        left = (struct timeval){0, 0};
    return left;
}

/* True when every receive payload appears in the buffer, in order. */
static bool hc_matched(const struct hc_host *hh, const struct cfg_health_check *hc)
{
    const uint8_t *p = hh->buf, *end = hh->buf + hh->len;
    for (size_t i = 0; i < hc->nreceive; i++) {
        const uint8_t *at = memmem(p, (size_t)(end - p), hc->receive[i].bytes, hc->receive[i].len);
        if (!at)
            return false;
        p = at + hc->receive[i].len;
    }
    return true;
}

static void hc_read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hc_host *hh = arg;
    const struct cfg_health_check *hc = &cluster_config(hh->hg->g, hh->ci)->health_check;
    if (what & EV_TIMEOUT) {
        hc_finish(hh, false, true, "timeout waiting for the receive payload");
        return;
    }
    if (!hh->buf && !(hh->buf = malloc(HC_RECV_MAX))) {
        hc_finish(hh, false, true, "out of memory");
        return;
    }
    ssize_t n = recv(fd, hh->buf + hh->len, HC_RECV_MAX - hh->len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        hc_finish(hh, false, n < 0, n < 0 ? strerror(errno) : "closed before the receive payload");
        return;
    }
    hh->len += (size_t)n;
    if (hc_matched(hh, hc)) {
        hc_finish(hh, true, false, NULL);
        return;
    }
    if (hh->len == HC_RECV_MAX)
        hc_finish(hh, false, false, "receive payload not found in the first 64 KiB");
}

static void hc_connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct hc_host *hh = arg;
    const struct cfg_health_check *hc = &cluster_config(hh->hg->g, hh->ci)->health_check;
    if (what & EV_TIMEOUT) {
        hc_finish(hh, false, true, "connect timeout");
        return;
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr) {
        hc_finish(hh, false, true, strerror(soerr));
        return;
    }
    if (hc->send.len) {
        /* a few bytes into an empty send buffer of a fresh connection: one call */
        ssize_t n = send(fd, hc->send.bytes, hc->send.len, MSG_NOSIGNAL);
        if (n != (ssize_t)hc->send.len) {
            hc_finish(hh, false, true, n < 0 ? strerror(errno) : "short write of the payload");
            return;
        }
    }
    if (!hc->nreceive) {
        hc_finish(hh, true, false, NULL);
        return;
    }
    event_free(hh->io);
    hh->io = event_new(hh->hg->base, fd, EV_READ | EV_PERSIST, hc_read_cb, hh);
    struct timeval left = hc_left(hh);
    if (!hh->io || event_add(hh->io, &left) < 0)
        hc_finish(hh, false, true, "out of memory");
}

static void hc_timer_cb(evutil_socket_t unused, short what, void *arg)
{
    struct hc_host *hh = arg;
    struct gen *g = hh->hg->g;
    const struct cfg_health_check *hc = &cluster_config(g, hh->ci)->health_check;
    const struct cfg_address *a = cluster_host_addr(g, hh->ci, hh->h);
    stats_inc(hh->hg->stats[hh->ci].attempt);
    struct timeval now, tmo = {.tv_sec = (time_t)(hc->timeout_ms / 1000),
                               .tv_usec = (suseconds_t)(hc->timeout_ms % 1000) * 1000};
    evutil_gettimeofday(&now, NULL);
    timeradd(&now, &tmo, &hh->deadline);
    hh->fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (hh->fd < 0) {
        hc_finish(hh, false, true, strerror(errno));
        return;
    }
    if (connect(hh->fd, (const struct sockaddr *)&a->ss, a->len) < 0 && errno != EINPROGRESS) {
        hc_finish(hh, false, true, strerror(errno));
        return;
    }
    hh->io = event_new(hh->hg->base, hh->fd, EV_WRITE, hc_connect_cb, hh);
    if (!hh->io || event_add(hh->io, &tmo) < 0)
        hc_finish(hh, false, true, "out of memory");
}

int health_check_gen_init(struct gen *g)
{
    const struct socktap_config *cfg = g->cfg;
    size_t nc = cfg->nclusters ? cfg->nclusters : 1;
    g->healthy = calloc(nc, sizeof(*g->healthy));
    g->hc = calloc(1, sizeof(*g->hc));
    if (!g->healthy || !g->hc)
        return -ENOMEM;
    g->hc->g = g;
    g->hc->stats = calloc(nc, sizeof(*g->hc->stats));
    g->hc->hosts = calloc(nc, sizeof(*g->hc->hosts));
    if (!g->hc->stats || !g->hc->hosts)
        return -ENOMEM;
    for (size_t ci = 0; ci < cfg->nclusters; ci++) {
        const struct cfg_cluster *cl = &cfg->clusters[ci];
        if (!cl->health_check.enabled)
            continue;
        struct hc_stats *st = &g->hc->stats[ci];
        const char *n = cl->name;
        st->attempt = stats_registerf(STAT_COUNTER, "cluster.%s.health_check.attempt", n);
        st->success = stats_registerf(STAT_COUNTER, "cluster.%s.health_check.success", n);
        st->failure = stats_registerf(STAT_COUNTER, "cluster.%s.health_check.failure", n);
        st->network_failure =
            stats_registerf(STAT_COUNTER, "cluster.%s.health_check.network_failure", n);
        st->healthy = stats_registerf(STAT_GAUGE, "cluster.%s.health_check.healthy", n);
        st->membership_healthy = stats_registerf(STAT_GAUGE, "cluster.%s.membership_healthy", n);
        g->healthy[ci] = calloc(cl->nhosts ? cl->nhosts : 1, 1); /* all failed until checked */
        g->hc->hosts[ci] = calloc(cl->nhosts ? cl->nhosts : 1, sizeof(struct hc_host));
        if (!g->healthy[ci] || !g->hc->hosts[ci])
            return -ENOMEM;
        for (size_t h = 0; h < cl->nhosts; h++)
            g->hc->hosts[ci][h] = (struct hc_host){.hg = g->hc, .ci = ci, .h = h, .fd = -1};
    }
    return 0;
}

int health_check_start(struct gen *g, struct event_base *base)
{
    struct hc_gen *hg = g->hc;
    hg->base = base;
    hg->started = true;
    for (size_t ci = 0; ci < g->cfg->nclusters; ci++) {
        if (!hg->hosts[ci])
            continue;
        for (size_t h = 0; h < g->cfg->clusters[ci].nhosts; h++) {
            struct hc_host *hh = &hg->hosts[ci][h];
            hh->timer = evtimer_new(base, hc_timer_cb, hh);
            if (!hh->timer)
                return -ENOMEM;
            event_active(hh->timer, EV_TIMEOUT, 0); /* the first round at once, as Envoy */
        }
    }
    return 0;
}

void health_check_stop(struct gen *g)
{
    struct hc_gen *hg = g->hc;
    if (!hg || !hg->started)
        return;
    hg->started = false;
    for (size_t ci = 0; ci < g->cfg->nclusters; ci++) {
        if (!hg->hosts[ci])
            continue;
        for (size_t h = 0; h < g->cfg->clusters[ci].nhosts; h++) {
            struct hc_host *hh = &hg->hosts[ci][h];
            if (hh->io)
                event_free(hh->io);
            if (hh->timer)
                event_free(hh->timer);
            if (hh->fd >= 0)
                close(hh->fd);
            free(hh->buf);
            hh->io = hh->timer = NULL;
            hh->buf = NULL;
            hh->fd = -1;
            /* the gauges count the running generation's healthy hosts: the next one recounts */
            if (g->healthy[ci][h]) {
                stats_add(hg->stats[ci].healthy, -1);
                stats_add(hg->stats[ci].membership_healthy, -1);
            }
        }
    }
}

void health_check_gen_free(struct gen *g)
{
    health_check_stop(g);
    for (size_t ci = 0; g->cfg && ci < g->cfg->nclusters; ci++) {
        if (g->healthy)
            free(g->healthy[ci]);
        if (g->hc && g->hc->hosts)
            free(g->hc->hosts[ci]);
    }
    free(g->healthy);
    g->healthy = NULL;
    if (g->hc) {
        free(g->hc->hosts);
        free(g->hc->stats);
        free(g->hc);
        g->hc = NULL;
    }
}

const char *health_check_flags(const struct gen *g, size_t ci, size_t h)
{
    if (!g->healthy || !g->healthy[ci] || __atomic_load_n(&g->healthy[ci][h], __ATOMIC_RELAXED))
        return "healthy";
    return "/failed_active_hc";
}

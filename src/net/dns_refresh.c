/* DNS refresh (dns_refresh.h).
 *
 * How: every dns_refresh_rate (the shortest of the running config's DNS clusters), a helper
 * thread loads the running config again from its own text (cfg_doc.text, never the file, which
 * may have changed: that is what a reload is for), which resolves every DNS cluster as a start
 * does. The main thread compares each DNS cluster's hosts with the running ones; when a set
 * changed (cluster.X.membership_change), the loaded config goes through the reload path
 * (server_reload_config): a new generation for new connections, open ones untouched, health
 * checks restarted, counters kept. A failed resolution keeps the hosts (Envoy keeps the last
 * good set) and is logged once until one succeeds again (cluster.X.update_failure).
 *
 * Rejected: resolving in place and swapping a host array under the workers (the per-worker LB
 * state is sized by the host count of its generation: the generation is the unit of change
 * already, with its lifetime rules); resolving on the main loop (getaddrinfo blocks for
 * seconds when a server is down, and the admin and signals would wait); one timer per cluster
 * (one load resolves every cluster; the shortest rate serves all, a longer rate just means
 * fresher hosts). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"
#include "core/stats.h"
#include "net/dns_refresh.h"
#include "net/worker.h"

struct dns_refresh {
    struct event *timer;
    pthread_t thread;
    bool running; /* a helper thread exists (joined in dns_refresh_poll/_stop) */
    int done;     /* atomic: the helper's result is ready */
    bool failing; /* the last resolution failed (logged once) */
    struct server *srv;
    /* the helper's job and result */
    char *name, *text;
    size_t len;
    struct socktap_config *cfg;
    struct cfg_err err;
    int rc;
};

static void *dns_refresh_main(void *arg)
{
    struct dns_refresh *d = arg;
    pthread_setname_np(pthread_self(), "socktap-dns");
    d->rc = config_load_string(d->name, d->text, d->len, &d->cfg, &d->err);
    __atomic_store_n(&d->done, 1, __ATOMIC_RELEASE);
    uint64_t one = 1;
    ssize_t n = write(d->srv->main_efd, &one, sizeof(one)); /* main_ctl_cb polls */
    (void)n;
    return NULL;
}

static void dns_stat(const char *cluster, const char *what)
{
    stats_inc(stats_registerf(STAT_COUNTER, "cluster.%s.%s", cluster, what));
}

static void dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;
    struct dns_refresh *d = srv->dns;
    const struct cfg_doc *doc = srv->gen->cfg->doc;
    if (d->running || srv->draining)
        return;
    free(d->name);
    free(d->text);
    d->name = strdup(doc->file);
    d->text = malloc(doc->text_len + 1);
    if (!d->name || !d->text) {
        LOGE(LOG_NO_CONN, "DNS refresh: out of memory");
        dns_refresh_rearm(srv);
        return;
    }
    memcpy(d->text, doc->text, doc->text_len + 1);
    d->len = doc->text_len;
    d->cfg = NULL;
    memset(&d->err, 0, sizeof(d->err));
    __atomic_store_n(&d->done, 0, __ATOMIC_RELAXED);
    for (size_t i = 0; i < srv->gen->cfg->nclusters; i++)
        if (srv->gen->cfg->clusters[i].dns_refresh_ms)
            dns_stat(srv->gen->cfg->clusters[i].name, "update_attempt");
    int rc = pthread_create(&d->thread, NULL, dns_refresh_main, d);
    if (rc) {
        LOGE(LOG_NO_CONN, "DNS refresh: cannot start its thread: %s", strerror(rc));
        dns_refresh_rearm(srv);
        return;
    }
    d->running = true;
}

static bool hosts_equal(const struct cfg_cluster *a, const struct cfg_cluster *b)
{
    if (a->nhosts != b->nhosts)
        return false;
    for (size_t i = 0; i < a->nhosts; i++)
        if (a->hosts[i].len != b->hosts[i].len ||
            memcmp(&a->hosts[i].ss, &b->hosts[i].ss, a->hosts[i].len))
            return false;
    return true;
}

void dns_refresh_poll(struct server *srv)
{
    struct dns_refresh *d = srv->dns;
    if (!d || !d->running || !__atomic_load_n(&d->done, __ATOMIC_ACQUIRE))
        return;
    pthread_join(d->thread, NULL);
    d->running = false;
    const struct socktap_config *cur = srv->gen->cfg;
    struct socktap_config *next = d->cfg;
    d->cfg = NULL;
    if (d->rc < 0) {
        for (size_t i = 0; i < cur->nclusters; i++)
            if (cur->clusters[i].dns_refresh_ms)
                dns_stat(cur->clusters[i].name, "update_failure");
        if (!d->failing)
            LOGW(LOG_NO_CONN, "DNS refresh failed, the hosts stay: %s",
                 d->err.set ? d->err.msg : strerror(-d->rc));
        d->failing = true;
        dns_refresh_rearm(srv);
        return;
    }
    if (d->failing)
        LOGI(LOG_NO_CONN, "DNS refresh: resolving again");
    d->failing = false;
    bool changed = false;
    /* the same text: the same clusters in the same order (a reload meanwhile changed the text:
     * then this result is stale, dropped) */
    bool same_config = next->nclusters == cur->nclusters && d->len == cur->doc->text_len &&
                       !memcmp(d->text, cur->doc->text, d->len);
    for (size_t i = 0; same_config && i < cur->nclusters; i++) {
        if (!cur->clusters[i].dns_refresh_ms)
            continue;
        dns_stat(cur->clusters[i].name, "update_success");
        if (hosts_equal(&cur->clusters[i], &next->clusters[i]))
            continue;
        changed = true;
        dns_stat(cur->clusters[i].name, "membership_change");
        char list[512] = "";
        size_t len = 0;
        for (size_t h = 0; h < next->clusters[i].nhosts && len < sizeof(list); h++)
            len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", h ? ", " : "",
                                    next->clusters[i].hosts[h].text);
        LOGI(LOG_NO_CONN, "DNS refresh: cluster %s hosts changed: %s", cur->clusters[i].name, list);
    }
    if (!changed) {
        config_free(next);
        dns_refresh_rearm(srv);
        return;
    }
    char msg[1024];
    /* a reload in flight refuses it (-EBUSY): the next tick tries again */
    (void)server_reload_config(srv, "DNS refresh", next, msg, sizeof(msg));
    dns_refresh_rearm(srv);
}

void dns_refresh_rearm(struct server *srv)
{
    uint64_t ms = 0;
    const struct socktap_config *cfg = srv->gen->cfg;
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (cfg->clusters[i].dns_refresh_ms && (!ms || cfg->clusters[i].dns_refresh_ms < ms))
            ms = cfg->clusters[i].dns_refresh_ms;
    if (!srv->dns) {
        if (!ms)
            return;
        srv->dns = calloc(1, sizeof(*srv->dns));
        if (srv->dns)
            srv->dns->timer = evtimer_new(srv->main_base, dns_timer_cb, srv);
        if (!srv->dns || !srv->dns->timer) {
            LOGE(LOG_NO_CONN, "DNS refresh: out of memory: hosts are not resolved again");
            free(srv->dns);
            srv->dns = NULL;
            return;
        }
        srv->dns->srv = srv;
    }
    if (srv->dns->running)
        return; /* dns_refresh_poll re-arms */
    if (!ms) {
        evtimer_del(srv->dns->timer);
        return;
    }
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(srv->dns->timer, &tv);
}

void dns_refresh_stop(struct server *srv)
{
    struct dns_refresh *d = srv->dns;
    if (!d)
        return;
    if (d->running)
        pthread_join(d->thread, NULL);
    config_free(d->cfg);
    event_free(d->timer);
    free(d->name);
    free(d->text);
    free(d);
    srv->dns = NULL;
}

/* Config reload (SIGHUP, admin POST /reload): the main thread loads and validates the file off
 * to the side (config_load), builds the new generation (gen.h: stats, counts, LB state) and binds
 * its new listeners, all before anything running changes; any failure there leaves the running
 * config in force and answers with the error (a config error carries its file:line:col). Then
 * it swaps: the new generation becomes the server's, each worker gets it through its control
 * eventfd and moves its accept events to it (listener_worker_switch), and the old generation is
 * retired, to be freed once its last connection ended (gen.c).
 *
 * Listeners are matched by name (Envoy's key; an unnamed one is named by its address), then by
 * address: a kept listener keeps its bound sockets, so a reload never refuses a connection on
 * it; a listener whose address changed is removed + added. New listeners are bound on the main
 * thread before the swap, so a bind error fails the reload, not a worker.
 *
 * What a reload cannot change: the admin block (address, socktap_pcap_over_ip) is the
 * endpoint the reload may be asked through, so a change is refused with the position of the
 * admin block (restart to move it); --concurrency is a flag, not config. The
 * application_log_config log format is applied at start only: a change is warned about and the
 * rest applied. Rejected: applying what can be applied and ignoring an admin change with a
 * warning (an operator who moved the admin port would find the old one still answering and
 * think the reload did nothing).
 *
 * Reloads are serialized: one is handed to the workers at a time (each worker moves from the
 * generation it runs to the next, never skipping one, so it knows which sockets it keeps). A
 * SIGHUP meanwhile is queued and run once every worker took the previous one (microseconds); a
 * POST /reload meanwhile answers 503. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "admin/admin.h"
#include "net/dns_refresh.h"
#include "net/health_check.h"
#include "config/config.h"
#include "core/log.h"
#include "core/stats.h"
#include "net/gen.h"
#include "net/listener.h"
#include "net/worker.h"

static bool address_equal(const struct cfg_address *a, const struct cfg_address *b)
{
    return a->len == b->len && !strcmp(a->text, b->text);
}

static bool str_equal(const char *a, const char *b)
{
    return a == b || (a && b && !strcmp(a, b));
}

/* True when the admin blocks of A and B are the same (see the top of the file). */
static bool admin_same(const struct cfg_admin *a, const struct cfg_admin *b)
{
    if (a->enabled != b->enabled || (a->enabled && !address_equal(&a->addr, &b->addr)) ||
        a->npcap_over_ip != b->npcap_over_ip)
        return false;
    for (size_t i = 0; i < a->npcap_over_ip; i++) {
        const struct cfg_pcap_over_ip *p = &a->pcap_over_ip[i], *q = &b->pcap_over_ip[i];
        if (!address_equal(&p->addr, &q->addr) || !str_equal(p->listener, q->listener) ||
            !str_equal(p->cluster, q->cluster) || p->wire != q->wire)
            return false;
    }
    return true;
}

/* Refuses NEXT when it changes what a reload cannot (see the top of the file): -EINVAL with the
 * message in ERR. */
static int reload_check_fixed(const struct socktap_config *cur, const struct socktap_config *next,
                              struct cfg_err *err)
{
    if (admin_same(&cur->admin, &next->admin))
        return 0;
    const struct cfg_path path = CFG_PATH_KEY(NULL, "admin");
    const struct cfg_node *node = cfg_map_get(next->doc->root, "admin");
    return cfg_error(err, next->doc, node, &path,
                     "the admin block (address, socktap_pcap_over_ip) cannot change on a reload; "
                     "restart socktap to apply it");
}

/* Appends to MSG (of SIZE bytes, holding *LEN) what printf makes of FMT; truncates quietly. */
static void msg_add(char *msg, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void msg_add(char *msg, size_t size, size_t *len, const char *fmt, ...)
{
    if (*len >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len = *len + (size_t)n < size ? *len + (size_t)n : size - 1;
}

static bool cluster_named(const struct socktap_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nclusters; i++)
        if (!strcmp(cfg->clusters[i].name, name))
            return true;
    return false;
}

/* The summary of going from CUR to NEXT: listeners added, removed, kept; clusters added,
 * removed, updated (a kept cluster takes the new settings for new connections, changed or not). */
static void reload_summary(const struct gen *cur, const struct gen *next, char *msg, size_t size)
{
    size_t len = 0, kept = 0;
    size_t ncur = cur->cfg->nlisteners, nnext = next->cfg->nlisteners;
    msg_add(msg, size, &len, "config generation %llu: listeners", (unsigned long long)next->number);
    for (size_t i = 0; i < nnext; i++) {
        if (next->lprev[i] >= 0)
            kept++;
        else
            msg_add(msg, size, &len, " +%s", next->cfg->listeners[i].name);
    }
    for (size_t j = 0; j < ncur; j++) {
        bool is_kept = false;
        for (size_t i = 0; i < nnext && !is_kept; i++)
            is_kept = next->lprev[i] == (ssize_t)j;
        if (!is_kept)
            msg_add(msg, size, &len, " -%s", cur->cfg->listeners[j].name);
    }
    msg_add(msg, size, &len, " (%zu kept); clusters", kept);
    size_t updated = 0;
    for (size_t i = 0; i < next->cfg->nclusters; i++) {
        if (cluster_named(cur->cfg, next->cfg->clusters[i].name))
            updated++;
        else
            msg_add(msg, size, &len, " +%s", next->cfg->clusters[i].name);
    }
    for (size_t j = 0; j < cur->cfg->nclusters; j++)
        if (!cluster_named(next->cfg, cur->cfg->clusters[j].name))
            msg_add(msg, size, &len, " -%s", cur->cfg->clusters[j].name);
    msg_add(msg, size, &len, " (%zu updated)", updated);
}

/* Everything up to the swap: 0 with *OUT the new generation (its new listeners bound) and the
 * summary in MSG, or -errno with why in MSG; nothing running has changed either way. */
static int reload_prepare(struct server *srv, struct socktap_config *loaded, struct gen **out,
                          char *msg, size_t msg_size)
{
    struct cfg_err err = {0};
    struct socktap_config *cfg = loaded;
    int rc = loaded ? 0 : config_load(srv->config_path, &cfg, &err);
    if (rc == 0)
        rc = reload_check_fixed(srv->gen->cfg, cfg, &err);
    if (rc < 0) {
        snprintf(msg, msg_size, "%s", err.set ? err.msg : strerror(-rc));
        config_free(cfg);
        return rc;
    }
    if (!str_equal(cfg->log_format, srv->gen->cfg->log_format))
        LOGW(LOG_NO_CONN,
             "config reload: application_log_config.log_format changed; it applies at start "
             "only (restart socktap to use it), the rest of the config is reloaded");
    if (!loaded) /* a DNS refresh's config is the running one's text: warned about already */
        config_warn_ignored(cfg);
    struct gen *g;
    rc = gen_new(cfg, srv->gen->number + 1, srv->nworkers, &g);
    if (rc < 0) {
        snprintf(msg, msg_size, "cannot build the new config: %s", strerror(-rc));
        config_free(cfg);
        return rc;
    }
    rc = listener_gen_bind(g, srv->gen, msg, msg_size);
    if (rc < 0) {
        gen_free(g);
        return rc;
    }
    reload_summary(srv->gen, g, msg, msg_size);
    *out = g;
    return 0;
}

/* Makes G the running generation and hands it to every worker. */
static void reload_swap(struct server *srv, struct gen *g)
{
    struct gen *old = srv->gen;
    srv->gen = g;
    /* the old generation's checks stop, the new one's start afresh: its verdicts are its own */
    health_check_stop(old);
    if (health_check_start(g, srv->main_base) < 0)
        LOGE(LOG_NO_CONN, "health checks of config generation %llu failed to start: out of memory",
             (unsigned long long)g->number);
    admin_set_config(srv->admin, g->cfg);
    g->handed = true; /* from here the workers close or keep every socket of it */
    __atomic_store_n(&srv->reload_acks, 0, __ATOMIC_RELAXED);
    srv->reload_in_flight = true;
    for (int i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        gen_ref(g); /* the worker's: worker_take_gen moves it to w->gen or drops it */
        __atomic_store_n(&w->pending, g, __ATOMIC_RELEASE);
        uint64_t one = 1;
        ssize_t n = write(event_get_fd(w->ctl_ev), &one, sizeof(one));
        (void)n;
    }
    old->retired_next = srv->retired;
    srv->retired = old;
    if (gen_unref(old)) /* the server's reference; the workers still hold theirs */
        server_gen_released(srv);
}

int server_reload(struct server *srv, const char *origin, char *msg, size_t msg_size)
{
    return server_reload_config(srv, origin, NULL, msg, msg_size);
}

int server_reload_config(struct server *srv, const char *origin, struct socktap_config *cfg,
                         char *msg, size_t msg_size)
{
    int rc;
    struct gen *g = NULL;
    if (__atomic_load_n(&srv->draining, __ATOMIC_ACQUIRE)) {
        snprintf(msg, msg_size, "draining: the config is not reloaded");
        rc = -ESHUTDOWN;
        config_free(cfg);
    } else if (srv->reload_in_flight) {
        snprintf(msg, msg_size, "the workers are still taking the previous reload; try again");
        rc = -EBUSY;
        config_free(cfg);
    } else {
        rc = reload_prepare(srv, cfg, &g, msg, msg_size);
    }
    struct admin_reload_status *st = &srv->reload_status;
    st->last = time(NULL);
    st->last_ok = rc == 0;
    snprintf(st->last_result, sizeof(st->last_result), "%s", msg);
    if (rc < 0) {
        st->failed++;
        stats_inc(srv->st_reload_failed);
        LOGE(LOG_NO_CONN, "config reload (%s) failed, generation %llu stays: %s", origin,
             (unsigned long long)srv->gen->number, msg);
        return rc;
    }
    reload_swap(srv, g);
    dns_refresh_rearm(srv); /* the new generation's clusters and rates */
    st->ok++;
    st->generation = g->number;
    stats_inc(srv->st_reloads);
    stats_add(srv->st_generation, 1);
    stats_add(srv->st_generations_active, 1);
    LOGI(LOG_NO_CONN, "config reload (%s): %s", origin, msg);
    return 0;
}

int server_reload_admin(void *arg, char *msg, size_t msg_size)
{
    return server_reload(arg, "admin", msg, msg_size);
}

void server_reload_applied(struct server *srv)
{
    srv->reload_in_flight = false;
    LOGD(LOG_NO_CONN, "config generation %llu taken by every worker",
         (unsigned long long)srv->gen->number);
    if (srv->reload_queued && !srv->draining) {
        srv->reload_queued = false;
        char msg[1024];
        (void)server_reload(srv, "SIGHUP", msg, sizeof(msg));
    }
}

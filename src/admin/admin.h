/* The admin endpoint (libevent evhttp on the main thread): GET /ready, /stats (text, json,
 * prometheus), /stats/prometheus, /server_info, /clusters, /help, POST /reload, Envoy's POST /tap
 * (admin_tap.h), and the live captures GET /capture/live[.pcapng] (admin_live.h). */
#ifndef SOCKTAP_ADMIN_ADMIN_H
#define SOCKTAP_ADMIN_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "config/config.h"

struct admin;
struct event_base;

/* The config reloads so far, kept by the server (net/reload.c), read by /server_info. */
struct admin_reload_status {
    uint64_t generation; /* of the running config: 1 at start, +1 per applied reload */
    uint64_t ok, failed; /* reloads applied, reloads refused */
    time_t last;         /* wall clock of the last attempt; 0: none yet */
    bool last_ok;
    char last_result[1024]; /* its summary, or its error (file:line:col) */
};

/* POST /reload: re-reads the config (ARG is admin_info.reload_arg). Returns 0 with a summary in
 * MSG (MSG_SIZE bytes), -EINVAL (or -errno of the file) with the config error in MSG, or another
 * -errno (-EBUSY: a reload is still being applied; -ESHUTDOWN: draining) with why in MSG. */
typedef int admin_reload_fn(void *arg, char *msg, size_t msg_size);

/* What /server_info reports of the command line, and the reload hook. Pointers borrowed: must
 * outlive the admin. */
struct admin_info {
    int concurrency;
    const char *config_path;
    const char *log_path;    /* NULL: stderr */
    admin_reload_fn *reload; /* NULL: POST /reload answers 501 */
    void *reload_arg;
    const struct admin_reload_status *reload_status; /* NULL: not reported */
    /* /clusters' health_flags of host H of cluster CI of the config the admin serves (a string
     * that outlives the call); NULL: every host "healthy". Main thread. */
    const char *(*host_health)(void *arg, size_t ci, size_t h);
    void *host_health_arg;
};

/* Binds CFG's admin address on BASE, serving CFG's listeners and clusters (CFG borrowed: must
 * outlive the admin; INFO copied). *OUT is owned by the caller (admin_free). Warns when the
 * address is not loopback: the stats name every listener and cluster. */
int admin_start(struct admin **out, struct event_base *base, const struct socktap_config *cfg,
                const struct admin_info *info);
/* A reload swapped the config: /clusters, /tap and the live captures serve CFG from now on
 * (borrowed: must outlive the admin or the next call). CFG's admin block equals the running one.
 * ADMIN may be NULL. */
void admin_set_config(struct admin *admin, const struct socktap_config *cfg);
/* /ready answers 503 DRAINING from now on. ADMIN may be NULL. */
void admin_set_draining(struct admin *admin);
/* ADMIN may be NULL. */
void admin_free(struct admin *admin);

#endif

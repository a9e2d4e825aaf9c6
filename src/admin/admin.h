/* The admin endpoint (libevent evhttp on the main thread): GET /ready, /stats (text, json,
 * prometheus), /stats/prometheus, /server_info, /clusters, /help, and the live captures
 * GET /capture/live[.pcapng] (admin_live.h). */
#ifndef SOCKTAP_ADMIN_ADMIN_H
#define SOCKTAP_ADMIN_ADMIN_H

#include "config/config.h"

struct admin;
struct event_base;

/* What /server_info reports of the command line. Strings borrowed: must outlive the admin. */
struct admin_info {
    int concurrency;
    const char *config_path;
    const char *log_path; /* NULL: stderr */
};

/* Binds CFG's admin address on BASE, serving CFG's listeners and clusters (CFG borrowed: must
 * outlive the admin; INFO copied). *OUT is owned by the caller (admin_free). Warns when the
 * address is not loopback: the stats name every listener and cluster. */
int admin_start(struct admin **out, struct event_base *base, const struct socktap_config *cfg,
                const struct admin_info *info);
/* /ready answers 503 DRAINING from now on. ADMIN may be NULL. */
void admin_set_draining(struct admin *admin);
/* ADMIN may be NULL. */
void admin_free(struct admin *admin);

#endif

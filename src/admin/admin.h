/* The admin endpoint (libevent evhttp on the main thread): GET /ready, GET /stats, and the
 * live captures GET /capture/live[.pcapng] (admin_live.h). */
#ifndef SOCKTAP_ADMIN_ADMIN_H
#define SOCKTAP_ADMIN_ADMIN_H

#include "config/config.h"

struct admin;
struct event_base;

/* Binds CFG's admin address on BASE, serving CFG's listeners and clusters (CFG borrowed: must
 * outlive the admin). *OUT is owned by the caller (admin_free). Warns when the address is not
 * loopback: the stats name every listener and cluster. */
int admin_start(struct admin **out, struct event_base *base, const struct socktap_config *cfg);
/* /ready answers 503 DRAINING from now on. ADMIN may be NULL. */
void admin_set_draining(struct admin *admin);
/* ADMIN may be NULL. */
void admin_free(struct admin *admin);

#endif

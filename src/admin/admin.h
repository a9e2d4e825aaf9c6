/* The admin endpoint (libevent evhttp on the main thread): GET /ready, GET /stats. */
#ifndef SOCKTAP_ADMIN_ADMIN_H
#define SOCKTAP_ADMIN_ADMIN_H

#include "config/config.h"

struct admin;
struct event_base;

/* Binds ADDR on BASE. *OUT is owned by the caller (admin_free). Warns when ADDR is not
 * loopback: the stats name every listener and cluster. */
int admin_start(struct admin **out, struct event_base *base, const struct cfg_address *addr);
/* /ready answers 503 DRAINING from now on. ADMIN may be NULL. */
void admin_set_draining(struct admin *admin);
/* ADMIN may be NULL. */
void admin_free(struct admin *admin);

#endif

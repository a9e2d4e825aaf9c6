/* dns_refresh_rate: STRICT_DNS and LOGICAL_DNS hosts resolved again on a timer, off the workers
 * and off the main loop (a helper thread runs getaddrinfo); a changed host set becomes a new
 * config generation, as a reload does (open connections keep theirs). */
#ifndef SOCKTAP_NET_DNS_REFRESH_H
#define SOCKTAP_NET_DNS_REFRESH_H

struct server;

/* Arms the refresh timer for the running generation's DNS clusters (the shortest
 * dns_refresh_rate among them; none: no timer). Main thread; after a reload swap too. Allocates
 * SRV->dns on first use; failures are logged (no refresh then). */
void dns_refresh_rearm(struct server *srv);
/* The helper thread finished: applies its result. Main thread (main_ctl_cb). */
void dns_refresh_poll(struct server *srv);
/* Waits for a running resolution and frees SRV->dns. Main thread, before main_base is freed. */
void dns_refresh_stop(struct server *srv);

#endif

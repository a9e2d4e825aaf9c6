/* tcp_proxy sessions: the relay between a downstream and an upstream connection (session.c). */
#ifndef SOCKTAP_NET_SESSION_H
#define SOCKTAP_NET_SESSION_H

#include <stddef.h>
#include <sys/socket.h>

struct worker;

/* Takes ownership of FD, accepted on W's listener LI from PEER (PEER_LEN bytes, copied): the
 * session lives on W's list until it ends; on any failure FD is closed. */
void session_accept(struct worker *w, size_t li, int fd, const struct sockaddr *peer, int peer_len);
/* Retries every session of W a transport layer holds back (a capture backlog was full): a
 * helper thread signalled that room was made (ts_registry_set_waker). Worker thread. */
void session_resume_held(struct worker *w);
/* Closes every session of W (forced stop at the end of the drain, and server_free). */
void session_close_all(struct worker *w);

#endif

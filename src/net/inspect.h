/* The tls_inspector listener filter's socket side: peeks what a client sent so far without
 * consuming it, and parses it as a TLS ClientHello (core/tls_hello.h). The session (session.c)
 * owns the events and the timeout; this file only looks at the socket. */
#ifndef SOCKTAP_NET_INSPECT_H
#define SOCKTAP_NET_INSPECT_H

#include <stdint.h>

#include "core/tls_hello.h"

/* Peeks FD (MSG_PEEK: every byte stays for the transport socket) and parses up to MAX bytes
 * into *HELLO. Returns 1 when the inspector is done (HELLO->state DONE or NOT_TLS), 0 when more
 * bytes are needed (FD's SO_RCVLOWAT is then set to the count wanted, so a level-triggered
 * EV_READ fires only once they are there: without it, peeked bytes keep the fd readable and the
 * worker would spin), -EMSGSIZE when the ClientHello is larger than MAX (Envoy's
 * client_hello_too_large), -ECONNRESET when the client closed or reset first, or another
 * -errno. */
int inspect_peek(int fd, uint32_t max, struct tls_hello *hello);
/* Puts FD's SO_RCVLOWAT back to 1 once the inspector is done (the relay reads any amount). */
void inspect_done(int fd);

#endif

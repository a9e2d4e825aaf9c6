/* raw_buffer: plain TCP, the bottom layer that reads and writes the fd. */
#ifndef SOCKTAP_TRANSPORT_RAW_H
#define SOCKTAP_TRANSPORT_RAW_H

#include "transport/ts_registry.h"

extern const struct ts_factory raw_socket_factory;

/* Creates a raw socket over INFO->fd (owned by the socket from now on). */
int raw_socket_create(const struct ts_conn_info *info, struct transport_socket **out);

/* Closes FD (the caller's, given up here) the way HOW says: TS_CLOSE_RESET sets SO_LINGER 0 so
 * the peer sees an RST instead of a FIN. For the bottom layers (raw, tls), which own their fd. */
void raw_fd_close(int fd, enum ts_close_type how);

#endif

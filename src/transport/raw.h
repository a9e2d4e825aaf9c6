/* raw_buffer: plain TCP, the bottom layer that reads and writes the fd. */
#ifndef SOCKTAP_TRANSPORT_RAW_H
#define SOCKTAP_TRANSPORT_RAW_H

#include "transport/ts_registry.h"

extern const struct ts_factory raw_socket_factory;

/* Creates a raw socket over INFO->fd (owned by the socket from now on). */
int raw_socket_create(const struct ts_conn_info *info, struct transport_socket **out);

#endif

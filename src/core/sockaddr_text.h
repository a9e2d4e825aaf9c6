/* sockaddr_text: the one place an IP socket address becomes text, for logs, stats names,
 * trace files and the admin bind. Rejected: inet_ntop at each call site (five copies, which
 * drifted: one forgot the brackets around IPv6, one the stats name). */
#ifndef SOCKTAP_CORE_SOCKADDR_TEXT_H
#define SOCKTAP_CORE_SOCKADDR_TEXT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for the longest text sockaddr_text writes: "[v6-address]:65535". */
#define SOCKADDR_TEXT_MAX (46 + 8)

/* Writes SA's address (no brackets) to IP (IPLEN bytes; INET6_ADDRSTRLEN suffices) and, if PORT
 * is not NULL, its port in host order. Returns 0, or -EAFNOSUPPORT for anything but AF_INET and
 * AF_INET6 (IP is then ""), -EINVAL if LEN is too short for SA's family. Borrows everything. */
int sockaddr_ip_port(const struct sockaddr *sa, socklen_t len, char *ip, size_t iplen,
                     uint16_t *port);

/* Writes "ip:port" (IPv4) or "[ip]:port" (IPv6) to BUF (LEN bytes; SOCKADDR_TEXT_MAX suffices),
 * or "?" for another family. SEP replaces the ':' before the port (stats names use '_'). */
void sockaddr_text(const struct sockaddr *sa, socklen_t salen, char sep, char *buf, size_t len);

#endif

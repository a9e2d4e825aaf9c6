#include "core/sockaddr_text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>

int sockaddr_ip_port(const struct sockaddr *sa, socklen_t len, char *ip, size_t iplen,
                     uint16_t *port)
{
    if (iplen)
        ip[0] = '\0';
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        if (len < sizeof(*s4))
            return -EINVAL;
        if (!inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen))
            return -errno;
        if (port)
            *port = ntohs(s4->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (len < sizeof(*s6))
            return -EINVAL;
        if (!inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen))
            return -errno;
        if (port)
            *port = ntohs(s6->sin6_port);
        return 0;
    }
    return -EAFNOSUPPORT;
}

void sockaddr_text(const struct sockaddr *sa, socklen_t salen, char sep, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];
    uint16_t port = 0;
    if (sockaddr_ip_port(sa, salen, ip, sizeof(ip), &port) != 0)
        snprintf(buf, len, "?");
    else if (sa->sa_family == AF_INET6)
        snprintf(buf, len, "[%s]%c%u", ip, sep, port);
    else
        snprintf(buf, len, "%s%c%u", ip, sep, port);
}

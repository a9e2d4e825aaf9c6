/* tls_inspector's peek (see inspect.h).
 *
 * Envoy's listener filters peek with MSG_PEEK into a buffer that grows up to the filter's
 * maxReadBytes (source/common/listener_manager/active_stream_listener_base.cc,
 * source/common/network/listener_filter_buffer_impl.cc) and are woken by edge-triggered events.
 * socktap's workers are level-triggered (architecture.md), where peeked bytes keep a socket
 * readable: the wakeup bound is the socket's SO_RCVLOWAT, set to the byte count the parser asks
 * for (Linux honours it for poll/epoll readiness on TCP; EOF and errors still wake, and the TCP
 * state tells a FIN from bytes still on their way). Rejected: an edge-triggered event for this
 * phase only (the same fd then changes event kinds when the relay takes it, and a missed edge
 * leaves a connection asleep until the timeout), and reading the hello into a buffer the transport
 * socket would be handed (every transport socket would need a "bytes already read" input). */
#include "net/inspect.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>

int inspect_peek(int fd, uint32_t max, struct tls_hello *hello)
{
    uint8_t buf[16384];
    size_t cap = max < sizeof(buf) ? max : sizeof(buf);
    ssize_t n;
    do
        n = recv(fd, buf, cap, MSG_PEEK);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n == 0)
        return -ECONNRESET; /* ended before a whole ClientHello: nothing to choose for */
    tls_hello_parse(buf, (size_t)n, cap, hello);
    switch (hello->state) {
    case TLS_HELLO_DONE:
    case TLS_HELLO_NOT_TLS:
        return 1;
    case TLS_HELLO_TOO_LARGE:
        return -EMSGSIZE;
    case TLS_HELLO_NEED_MORE:
        break;
    }
    /* A client that sent part of a hello and then its FIN keeps the socket readable with fewer
     * bytes than SO_RCVLOWAT asks for: the peek sees the bytes, not the EOF, and a level-
     * triggered event would fire again at once. The TCP state tells (CLOSE_WAIT: FIN
     * received). */
    struct tcp_info ti;
    socklen_t tl = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) == 0 &&
        (ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_CLOSE))
        return -ECONNRESET;
    int lowat = (int)hello->need;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) < 0)
        return -errno;
    return 0;
}

void inspect_done(int fd)
{
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

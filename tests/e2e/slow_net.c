/* LD_PRELOAD shim for tests: accept4(2) returns $SLOW_ACCEPT_US microseconds late and send(2)
 * $SLOW_SEND_US late (default 0 each), as on a loaded machine or under ASan, where the peer
 * has sent its next bytes before we look again. With both, a TLS client's Finished and its
 * first request are already in the socket when the server's handshake asks for them, so the
 * handshake completes inside the first transport call with application data left in OpenSSL's
 * buffer, a state a fast loopback run never reaches (CI saw it as a stalled curl). */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

static void slow_down(const char *var)
{
    const char *us = getenv(var);
    long n = us ? strtol(us, NULL, 10) : 0;
    if (n <= 0)
        return;
    struct timespec ts = {.tv_sec = n / 1000000, .tv_nsec = (n % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real)
        real = (int (*)(int, struct sockaddr *, socklen_t *, int))dlsym(RTLD_NEXT, "accept4");
    int rc = real(fd, addr, len, flags);
    if (rc >= 0)
        slow_down("SLOW_ACCEPT_US");
    return rc;
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    static ssize_t (*real)(int, const void *, size_t, int);
    if (!real)
        real = (ssize_t(*)(int, const void *, size_t, int))dlsym(RTLD_NEXT, "send");
    ssize_t rc = real(fd, buf, len, flags);
    if (rc > 0)
        slow_down("SLOW_SEND_US");
    return rc;
}

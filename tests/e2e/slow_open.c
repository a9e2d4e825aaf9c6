/* LD_PRELOAD shim for tests: open(2) with O_CREAT of a path under $SLOW_OPEN_PREFIX takes
 * $SLOW_OPEN_US microseconds longer (default 700), as a trace file creation measured on an ext4
 * disk (0.5-0.7 ms) where this test machine's takes 0.01 ms. Lets the accept-burst test put a
 * worker under the load that starved its loop, on any machine. Nothing else is changed. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void slow_down(const char *path, int flags)
{
    const char *prefix = getenv("SLOW_OPEN_PREFIX");
    if (!(flags & O_CREAT) || !prefix || strncmp(path, prefix, strlen(prefix)) != 0)
        return;
    const char *us = getenv("SLOW_OPEN_US");
    long n = us ? strtol(us, NULL, 10) : 700;
    struct timespec ts = {.tv_sec = n / 1000000, .tv_nsec = (n % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

#define SHIM(name)                                                                                 \
    int name(const char *path, int flags, ...)                                                     \
    {                                                                                              \
        static int (*real)(const char *, int, ...);                                                \
        mode_t mode = 0;                                                                           \
        if (flags & (O_CREAT | __O_TMPFILE)) {                                                     \
            va_list ap;                                                                            \
            va_start(ap, flags);                                                                   \
            mode = va_arg(ap, mode_t);                                                             \
            va_end(ap);                                                                            \
        }                                                                                          \
        if (!real)                                                                                 \
            real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name);                       \
        slow_down(path, flags);                                                                    \
        return real(path, flags, mode);                                                            \
    }

SHIM(open)
SHIM(open64)

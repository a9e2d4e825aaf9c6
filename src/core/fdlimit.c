/* See fdlimit.h. */
#include "core/fdlimit.h"

#include <errno.h>
#include <sys/resource.h>

int fd_limit_raise(uint64_t *was, uint64_t *now)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (was)
        *was = (uint64_t)rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return -errno;
    }
    if (now)
        *now = (uint64_t)rl.rlim_cur;
    return 0;
}

/* One formatted line per call, written with a single write(2) so lines from workers do not
 * interleave; no lock is taken. A log file (--log-path) is put on fd 2 with dup2(), so a re-open
 * swaps the file under concurrent writers atomically, and whatever else writes to stderr
 * (sanitizers, libraries) ends up in the same file. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum log_level g_level = ST_LOG_INFO;
static __thread int t_worker = -1;

static const char *const level_names[] = {"trace", "debug",    "info", "warning",
                                          "error", "critical", "off"};

int log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i <= ST_LOG_OFF; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    if (strcmp(name, "warn") == 0) {
        *out = ST_LOG_WARN;
        return 0;
    }
    return -EINVAL;
}

void log_set_level(enum log_level level)
{
    g_level = level;
}

bool log_enabled(enum log_level level)
{
    return level >= g_level && g_level != ST_LOG_OFF;
}

static char *g_log_path; /* set once by log_open, before threads start */

static int log_open_path(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return -errno;
    int rc = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
    close(fd);
    return rc;
}

const char *log_path(void)
{
    return g_log_path;
}

int log_open(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return -ENOMEM;
    int rc = log_open_path(copy);
    if (rc < 0) {
        free(copy);
        return rc;
    }
    free(g_log_path);
    g_log_path = copy;
    return 0;
}

int log_reopen(void)
{
    if (!g_log_path)
        return 0;
    int rc = log_open_path(g_log_path);
    return rc < 0 ? rc : 1;
}

void log_set_thread_worker(int worker)
{
    t_worker = worker;
}

void log_vmsg(enum log_level level, uint64_t conn_id, const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof(line), "[%Y-%m-%d %H:%M:%S", &tm);
    int k = snprintf(line + n, sizeof(line) - n, ".%03ldZ][%s]", ts.tv_nsec / 1000000,
                     level_names[level]);
    n += (size_t)k;
    if (t_worker >= 0)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "[W%d]", t_worker);
    else
        n += (size_t)snprintf(line + n, sizeof(line) - n, "[main]");
    if (conn_id)
        n += (size_t)snprintf(line + n, sizeof(line) - n, "[C%llu]", (unsigned long long)conn_id);
    line[n++] = ' ';
    k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    if (k < 0)
        k = 0;
    n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_msg(enum log_level level, uint64_t conn_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, conn_id, fmt, ap);
    va_end(ap);
}

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

const char *log_file_path(void)
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

/* The line of socktap's default format into LINE (size n), without its newline. */
static size_t default_line(char *line, size_t size, enum log_level level, uint64_t conn_id,
                           const struct timespec *ts, const struct tm *tm)
{
    size_t n = strftime(line, size, "[%Y-%m-%d %H:%M:%S", tm);
    n += (size_t)snprintf(line + n, size - n, ".%03ldZ][%s]", ts->tv_nsec / 1000000,
                          level_names[level]);
    if (t_worker >= 0)
        n += (size_t)snprintf(line + n, size - n, "[W%d]", t_worker);
    else
        n += (size_t)snprintf(line + n, size - n, "[main]");
    if (conn_id != LOG_NO_CONN)
        n += (size_t)snprintf(line + n, size - n, "[C%llu]", (unsigned long long)conn_id);
    line[n++] = ' ';
    return n;
}

static char *g_format; /* --log-format, NULL: default_line */
static bool g_escaped; /* --log-format-escaped */
static const char g_flags[] = "v_jlLtnPYymdHMSTDefFzEgs#!%WC";

int log_format_check(const char *fmt, char *why, size_t why_size)
{
    for (const char *p = fmt; *p; p++) {
        if (*p != '%')
            continue;
        if (!p[1] || !strchr(g_flags, p[1])) {
            snprintf(why, why_size, "unknown flag '%%%.1s' at offset %zu (socktap knows %s)",
                     p[1] ? p + 1 : "", (size_t)(p - fmt),
                     "%v %_ %j %l %L %t %n %P %Y %y %m %d %H %M %S %T %D %e %f %F %z %E %g %s %# "
                     "%! %W %C %%");
            return -EINVAL;
        }
        p++;
    }
    return 0;
}

bool log_format_set(void)
{
    return g_format != NULL;
}

int log_set_format(const char *fmt, char *why, size_t why_size)
{
    if (!fmt) {
        free(g_format);
        g_format = NULL;
        return 0;
    }
    int rc = log_format_check(fmt, why, why_size);
    if (rc)
        return rc;
    char *copy = strdup(fmt);
    if (!copy)
        return -ENOMEM;
    free(g_format);
    g_format = copy;
    return 0;
}

void log_set_format_escaped(bool on)
{
    g_escaped = on;
}

/* Appends S (LEN bytes) to LINE at *N, escaped as JSON (JSON) or with newlines and other control
 * characters as \n, \t, \xNN (ESCAPE), or as it is. Stops at SIZE. */
static void put_text(char *line, size_t size, size_t *n, const char *s, size_t len, bool json,
                     bool escape)
{
    for (size_t i = 0; i < len && *n + 7 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((json || escape) && (c < 0x20 || c == 0x7f)) {
            const char *e = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (e)
                *n += (size_t)snprintf(line + *n, size - *n, "%s", e);
            else
                *n += (size_t)snprintf(line + *n, size - *n, json ? "\\u%04x" : "\\x%02x", c);
        } else if (json && (c == '"' || c == '\\')) {
            line[(*n)++] = '\\';
            line[(*n)++] = (char)c;
        } else {
            line[(*n)++] = (char)c;
        }
    }
}

struct log_site {
    const char *file, *func;
    int line;
};

static size_t format_line(char *line, size_t size, enum log_level level, uint64_t conn_id,
                          const struct timespec *ts, const struct tm *tm, const char *msg,
                          size_t msg_len, const struct log_site *site)
{
    static const char letters[] = "TDIWECO";
    size_t n = 0;
    for (const char *p = g_format; *p && n + 64 < size; p++) {
        if (*p != '%') {
            line[n++] = *p;
            continue;
        }
        char tmp[64];
        const char *strf = NULL;
        tmp[0] = '\0';
        switch (*++p) {
        case 'v':
        case '_':
        case 'j':
            put_text(line, size, &n, msg, msg_len, *p == 'j', *p == '_' || g_escaped);
            continue;
        case 'l':
            snprintf(tmp, sizeof(tmp), "%s", level_names[level]);
            break;
        case 'L':
            snprintf(tmp, sizeof(tmp), "%c", letters[level]);
            break;
        case 't':
            snprintf(tmp, sizeof(tmp), "%ld", (long)gettid());
            break;
        case 'n':
            snprintf(tmp, sizeof(tmp), "socktap");
            break;
        case 'P':
            snprintf(tmp, sizeof(tmp), "%ld", (long)getpid());
            break;
        case 'Y':
            strf = "%Y";
            break;
        case 'y':
            strf = "%y";
            break;
        case 'm':
            strf = "%m";
            break;
        case 'd':
            strf = "%d";
            break;
        case 'H':
            strf = "%H";
            break;
        case 'M':
            strf = "%M";
            break;
        case 'S':
            strf = "%S";
            break;
        case 'T':
            strf = "%H:%M:%S";
            break;
        case 'D':
            strf = "%m/%d/%y";
            break;
        case 'z':
            strf = "+00:00";
            break;
        case 'e':
            snprintf(tmp, sizeof(tmp), "%03ld", ts->tv_nsec / 1000000);
            break;
        case 'f':
            snprintf(tmp, sizeof(tmp), "%06ld", ts->tv_nsec / 1000);
            break;
        case 'F':
            snprintf(tmp, sizeof(tmp), "%09ld", ts->tv_nsec);
            break;
        case 'E':
            snprintf(tmp, sizeof(tmp), "%lld", (long long)ts->tv_sec);
            break;
        case 'g':
        case 's': {
            const char *f = site && site->file ? site->file : "";
            const char *slash = *p == 's' ? strrchr(f, '/') : NULL;
            snprintf(tmp, sizeof(tmp), "%s", slash ? slash + 1 : f);
            break;
        }
        case '#':
            snprintf(tmp, sizeof(tmp), "%d", site ? site->line : 0);
            break;
        case '!':
            snprintf(tmp, sizeof(tmp), "%s", site && site->func ? site->func : "");
            break;
        case 'W':
            if (t_worker >= 0)
                snprintf(tmp, sizeof(tmp), "W%d", t_worker);
            else
                snprintf(tmp, sizeof(tmp), "main");
            break;
        case 'C':
            if (conn_id != LOG_NO_CONN)
                snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)conn_id);
            break;
        default:
            snprintf(tmp, sizeof(tmp), "%%");
            break; /* "%%" (validated at set) */
        }
        if (strf)
            strftime(tmp, sizeof(tmp), strf, tm);
        put_text(line, size, &n, tmp, strlen(tmp), false, false);
    }
    return n;
}

static void log_emit(enum log_level level, uint64_t conn_id, const struct log_site *site,
                     const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    char line[4096], msg[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n;
    if (!g_format) {
        n = default_line(line, sizeof(line) / 2, level, conn_id, &ts, &tm);
        int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
        if (k < 0)
            k = 0;
        n += (size_t)k < sizeof(line) - n - 1 ? (size_t)k : sizeof(line) - n - 2;
    } else {
        /* Envoy's ENVOY_CONN_LOG puts "[C<id>] " before a connection's message */
        int m = conn_id != LOG_NO_CONN
                    ? snprintf(msg, sizeof(msg), "[C%llu] ", (unsigned long long)conn_id)
                    : 0;
        int k = vsnprintf(msg + m, sizeof(msg) - (size_t)m, fmt, ap);
        size_t len = (size_t)m + (k < 0 ? 0 : (size_t)k);
        if (len > sizeof(msg) - 1)
            len = sizeof(msg) - 1;
        n = format_line(line, sizeof(line) - 1, level, conn_id, &ts, &tm, msg, len, site);
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

void log_msg(enum log_level level, uint64_t conn_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, conn_id, NULL, fmt, ap);
    va_end(ap);
}

void log_msg_at(enum log_level level, uint64_t conn_id, const char *file, int line,
                const char *func, const char *fmt, ...)
{
    struct log_site site = {file, func, line};
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, conn_id, &site, fmt, ap);
    va_end(ap);
}

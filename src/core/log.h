/* Logging to stderr: "<time> [<level>][W<worker>][C<conn>] message".
 * Why: operators grep by connection id; the capture file names carry the same id. */
#ifndef SOCKTAP_CORE_LOG_H
#define SOCKTAP_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum log_level {
    ST_LOG_TRACE,
    ST_LOG_DEBUG,
    ST_LOG_INFO,
    ST_LOG_WARN,
    ST_LOG_ERROR,
    ST_LOG_CRITICAL,
    ST_LOG_OFF
};

/* Parses Envoy's level names (trace, debug, info, warning/warn, error, critical, off).
 * Returns 0 and sets *out, or -EINVAL. */
int log_level_parse(const char *name, enum log_level *out);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

/* Sends the log (everything written to stderr, sanitizer reports included) to PATH, appended,
 * created 0644 if missing: Envoy's --log-path. PATH is copied. Call before threads start.
 * Returns 0 or -errno (stderr unchanged then). */
int log_open(const char *path) __attribute__((nonnull, warn_unused_result));
/* Re-opens the log_open() file by its path (after logrotate moved it): returns 1 when re-opened,
 * 0 when logging to the original stderr (nothing to do), -errno when the open failed (the old
 * file stays in use). Any thread; lines written meanwhile land in the old or the new file. */
int log_reopen(void);
/* The --log-path file, or NULL when logging to stderr. Borrowed (set before threads start). */
const char *log_path(void);

/* Worker index shown in log lines of the calling thread (-1: main thread). */
void log_set_thread_worker(int worker);

/* conn_id 0 means "no connection". Thread-safe: one write(2) per line. */
void log_msg(enum log_level level, uint64_t conn_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vmsg(enum log_level level, uint64_t conn_id, const char *fmt, va_list ap);

#define LOGT(cid, ...)                                                                             \
    do {                                                                                           \
        if (log_enabled(ST_LOG_TRACE))                                                             \
            log_msg(ST_LOG_TRACE, (cid), __VA_ARGS__);                                             \
    } while (0)
#define LOGD(cid, ...)                                                                             \
    do {                                                                                           \
        if (log_enabled(ST_LOG_DEBUG))                                                             \
            log_msg(ST_LOG_DEBUG, (cid), __VA_ARGS__);                                             \
    } while (0)
#define LOGI(cid, ...) log_msg(ST_LOG_INFO, (cid), __VA_ARGS__)
#define LOGW(cid, ...) log_msg(ST_LOG_WARN, (cid), __VA_ARGS__)
#define LOGE(cid, ...) log_msg(ST_LOG_ERROR, (cid), __VA_ARGS__)

#endif

/* Logging to stderr: "<time> [<level>][W<worker>][C<conn>] message".
 * Why: operators grep by connection id; the capture file names carry the same id. */
#ifndef SOCKTAP_CORE_LOG_H
#define SOCKTAP_CORE_LOG_H

#include <stdarg.h>
#include <stddef.h>
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
const char *log_file_path(void);

/* Envoy's --log-format: the line layout as spdlog pattern flags (Envoy's
 * source/common/common/logger.cc and spdlog's pattern_formatter): %v message, %_ message with
 * newlines escaped, %j message JSON-escaped, %l level, %L level letter, %t thread id, %n logger
 * name ("socktap"), %P pid, %Y %y %m %d %H %M %S %T %D %e %f %F %z %E time (UTC), %g %s source
 * file, %# line, %! function, %% a '%'. socktap extensions: %W worker ("W0", "main"), %C
 * connection id (empty when none). As in Envoy, %v of a connection's line starts "[C<id>] ".
 * NULL restores socktap's default ("[<time>Z][<level>][W<worker>][C<conn>] message"). FMT is
 * copied; call before threads start. Returns 0, or -EINVAL with WHY naming the flag. */
int log_set_format(const char *fmt, char *why, size_t why_size);
/* The check log_set_format makes, alone (config parsers): 0 or -EINVAL with WHY. */
int log_format_check(const char *fmt, char *why, size_t why_size);
/* Whether a format was set (--log-format): Envoy refuses it beside application_log_config. */
bool log_format_set(void);
/* Envoy's --log-format-escaped: %v escapes newlines and other control characters. */
void log_set_format_escaped(bool on);

/* Worker index shown in log lines of the calling thread (-1: main thread). */
void log_set_thread_worker(int worker);

/* A line about no connection. Not 0: connection ids start at 0, as Envoy's (core/conn_id.h). */
#define LOG_NO_CONN UINT64_MAX

/* CONN_ID is the connection's id, or LOG_NO_CONN. Thread-safe: one write(2) per line. */
void log_msg(enum log_level level, uint64_t conn_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with the source location (%g, %#, %!), as the LOG* macros call it. FILE and FUNC
 * borrowed (string literals). */
void log_msg_at(enum log_level level, uint64_t conn_id, const char *file, int line,
                const char *func, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

#define LOGT(cid, ...)                                                                             \
    do {                                                                                           \
        if (log_enabled(ST_LOG_TRACE))                                                             \
            log_msg_at(ST_LOG_TRACE, (cid), __FILE__, __LINE__, __func__, __VA_ARGS__);            \
    } while (0)
#define LOGD(cid, ...)                                                                             \
    do {                                                                                           \
        if (log_enabled(ST_LOG_DEBUG))                                                             \
            log_msg_at(ST_LOG_DEBUG, (cid), __FILE__, __LINE__, __func__, __VA_ARGS__);            \
    } while (0)
#define LOGI(cid, ...) log_msg_at(ST_LOG_INFO, (cid), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define LOGW(cid, ...) log_msg_at(ST_LOG_WARN, (cid), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define LOGE(cid, ...) log_msg_at(ST_LOG_ERROR, (cid), __FILE__, __LINE__, __func__, __VA_ARGS__)

#endif

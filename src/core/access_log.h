/* The access log writer: one thread that appends the lines workers (tcp_proxy access_log) and
 * the admin (admin.access_log) hand it to their files, so write(2) never runs on a worker or on
 * the main loop. Envoy's AccessLogManager does the same with a flush thread per file
 * (source/common/access_log/access_log_manager_impl.cc). */
#ifndef SOCKTAP_CORE_ACCESS_LOG_H
#define SOCKTAP_CORE_ACCESS_LOG_H

#include <stddef.h>

/* Lines held for the writer, over all files: past this, new lines are dropped and counted
 * (access_log_file.socktap_dropped), never waited for. */
#define ACCESS_LOG_QUEUE_MAX (4u * 1024u * 1024u)
/* Files open at once (distinct paths over every reload); a line for one more is dropped. */
#define ACCESS_LOG_FILES_MAX 64u

/* Registers the stats (access_log_file.*) and starts the writer thread. Main thread, once,
 * after stats_freeze. Returns 0 or -errno (then lines are dropped and counted). */
int access_log_start(void) __attribute__((warn_unused_result));
/* Writes out every queued line, stops the thread and closes the files. Main thread, after the
 * workers stopped and before the stats are freed. Lines handed over later are dropped. */
void access_log_stop(void);
/* SIGHUP (logrotate): every file is re-opened by its path before the next line is written to it.
 * Any thread. */
void access_log_reopen(void);
/* Hands LINE (LEN bytes, copied; the caller adds the newline) over for PATH (copied). Any
 * thread; never blocks on I/O (takes a mutex for a list append). */
void access_log_write(const char *path, const char *line, size_t len) __attribute__((nonnull));

#endif

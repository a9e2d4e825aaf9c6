/* capture_hook: runs socktap_limits.on_finished for finished trace files (socktap extension,
 * docs/capture.md "Rotation and finished files"), off every worker and off the writer.
 *
 * One small thread spawns the hooks (posix_spawn: argv as configured plus the file's path, no
 * shell) and waits for them through pidfds: at most CAPTURE_HOOK_MAX_RUNNING at once, the rest
 * queued up to CAPTURE_HOOK_MAX_QUEUED (beyond: skipped, counted hook_skipped, logged once per
 * skipping period). A hook running longer than CAPTURE_HOOK_TIMEOUT_MS gets SIGTERM, then
 * CAPTURE_HOOK_KILL_MS later SIGKILL (its whole process group: a script's children too), and
 * counts hook_timeout; exit status 0 counts hook_ok, anything else hook_failed (a failure is
 * logged once per failing period, with the status and the file). Children get stdin and stdout
 * on /dev/null, socktap's stderr as theirs, default signal dispositions, an empty signal mask,
 * their own process group, and no other descriptor of socktap's (closed at spawn, whatever
 * O_CLOEXEC says). */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_HOOK_H
#define SOCKTAP_TRANSPORT_CAPTURE_HOOK_H

#include <stdint.h>

#include "transport/capture_finish.h"

#define CAPTURE_HOOK_MAX_RUNNING 4
#define CAPTURE_HOOK_MAX_QUEUED  4096
#define CAPTURE_HOOK_TIMEOUT_MS  60000 /* SOCKTAP_HOOK_TIMEOUT_MS overrides it (tests) */
#define CAPTURE_HOOK_KILL_MS     2000  /* SIGTERM -> SIGKILL */
#define CAPTURE_HOOK_SHUTDOWN_MS 5000  /* at exit: running hooks get this long, then SIGTERM */

/* Queues ARGV (NULL-terminated) run with PATH appended. ARGV, PATH, ST and KIND are copied:
 * they need to live for the call only (a reload may free the config they come from while the
 * hook waits). Starts the hook thread on first
 * use. A full queue or no memory skips the hook (counted, logged once). Called by one thread
 * only (the capture writer): it counts hook_skipped in ST. */
void capture_hook_run(char *const *argv, const char *path, const struct capture_finish_stats *st,
                      const char *kind, uint64_t conn_id) __attribute__((nonnull(1, 2, 3, 4)));

/* Stops the hook thread: queued hooks are skipped (counted, one log line), running ones get
 * CAPTURE_HOOK_SHUTDOWN_MS to end, then SIGTERM and SIGKILL; all are reaped. Idempotent; called
 * by capture_writer_shutdown once the writer has stopped (nothing queues hooks after it). */
void capture_hook_shutdown(void);

#endif

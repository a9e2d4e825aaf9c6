/* capture_store: the disk budget of one path_prefix (socktap extension socktap_limits,
 * docs/capture.md "Budgets and retention"). Every capture config writing under a prefix shares
 * one account, found by the prefix string in a process-wide, refcounted registry, so a config
 * reloaded with the same prefix keeps the account (its files, totals and state).
 *
 * The account lists the trace files of the prefix on disk: the ones found at startup (oldest
 * first by mtime), then every file the writer thread creates, open until it is closed, then
 * finished (oldest first). The writer thread charges each buffer before write(2)
 * (capture_store_charge): that is where the budget holds, whatever the number of connections.
 *   stop_new:      at max_total_bytes / max_files, new connections are not captured
 *                  (capture_store_admit false) until the total is back under 90% of the budget
 *                  (files: under max_files), and an open trace whose next write would cross the
 *                  byte budget stops at its last whole event.
 *   delete_oldest: finished traces are unlinked oldest first to make room; an open trace is
 *                  never deleted. When only open traces are left, it behaves as stop_new.
 * min_free_bytes pauses new captures while statvfs says less is free; a 1 s timer on the main
 * loop (capture_store_start) checks it and reconciles the account with the disk (files removed
 * by someone else, e.g. a shipper, stop counting), so no disk call but the budget's own is on a
 * worker or per write.
 * Rejected: accounting on the workers (they never see the disk bytes of compressed traces, and a
 * worker cannot delete files without a disk call on the relay's thread); a directory rescan per
 * tick (cost grows with every file of the directory, not only ours).
 *
 * Threading: one mutex per account; workers only read an atomic "paused" word. */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_STORE_H
#define SOCKTAP_TRANSPORT_CAPTURE_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/stats.h"
#include "transport/capture.h"

struct capture_store;
struct capture_store_file;
struct event_base;

/* Why an account admits no new capture (bits of capture_store_paused). */
#define CAPTURE_PAUSE_TOTAL 1u /* max_total_bytes */
#define CAPTURE_PAUSE_FILES 2u /* max_files */
#define CAPTURE_PAUSE_FREE  4u /* min_free_bytes */

/* Attaches CFG (borrowed until capture_store_detach) to the account of CFG->path_prefix,
 * creating it (and counting the prefix's existing traces, and those of CFG's finished_dir) on
 * first use; CFG->store is set. The account's limits are the strictest of its configs' (the
 * smallest non-zero numbers; delete_oldest only when every config asks for it). Main thread.
 * Returns 0 or -ENOMEM. */
int capture_store_attach(struct capture_cfg *cfg) __attribute__((warn_unused_result, nonnull));
/* Detaches CFG; the account is freed with its last config. CFG->store may be NULL. */
void capture_store_detach(struct capture_cfg *cfg) __attribute__((nonnull));

/* Starts the 1 s statvfs/reconcile timer on BASE (the main loop; freed by capture_store_stop)
 * and sets every attached config's `enabled` gauge. Call after stats_freeze. Idempotent. */
void capture_store_start(struct event_base *base);
/* Stops the timer. Idempotent. */
void capture_store_stop(void);
/* One timer tick, exposed for tests: statvfs and a bounded reconcile of every account. */
void capture_store_tick(void);

/* True when S admits a new capture (no pause bit). Any thread, lock-free. */
bool capture_store_admit(const struct capture_store *s) __attribute__((nonnull));
/* The CAPTURE_PAUSE_* bits of S now. */
unsigned capture_store_paused(const struct capture_store *s) __attribute__((nonnull));

/* Writer thread. What the writer counts a file's budget events in (the config's stats). */
struct capture_store_stats {
    bool has_stats;
    stat_id budget_stopped, budget_deleted;
};
/* Makes room for one more file in S (delete_oldest may unlink finished traces). Returns 0, or
 * -EDQUOT when max_files is reached and nothing may be deleted (the file is not created). */
int capture_store_reserve(struct capture_store *s, const struct capture_store_stats *st)
    __attribute__((warn_unused_result, nonnull));
/* Enters the file just created at PATH (copied) for connection CONN_ID of OWNER/KIND (copied)
 * as open. *OUT is the writer's (capture_store_finished). Returns 0 or -ENOMEM (then the file is
 * simply not accounted; *OUT NULL). */
int capture_store_add(struct capture_store *s, const char *path, uint64_t conn_id,
                      const char *owner, const char *kind, struct capture_store_file **out)
    __attribute__((warn_unused_result, nonnull(1, 2, 4, 5, 6)));
/* Charges LEN more bytes to F before they are written. Returns 0, or -EDQUOT when they would
 * cross max_total_bytes and nothing may be deleted: the caller stops the file at its last whole
 * event (counted in budget_stopped here). F may be NULL (not accounted: always 0). */
int capture_store_charge(struct capture_store_file *f, uint64_t len,
                         const struct capture_store_stats *st)
    __attribute__((warn_unused_result, nonnull(3)));
/* Gives back LEN bytes charged but not written (a failed write cut back). F may be NULL. */
void capture_store_uncharge(struct capture_store_file *f, uint64_t len);
/* F is complete and now lives at PATH (NULL: where it was; a finished_dir rename passes the new
 * path): it becomes finished, the newest, and may be deleted by delete_oldest from now on. F is
 * the account's again after this call. F may be NULL. */
void capture_store_finished(struct capture_store_file *f, const char *path);

/* Writes GET /captures' JSON (docs/capture.md) for every account: totals, limits, state, the
 * open traces and the newest MAX_FINISHED finished ones (with a count of the rest). Main thread.
 * Returns 0 or -EIO. */
int capture_store_write_json(FILE *out, size_t max_finished) __attribute__((nonnull));

#endif

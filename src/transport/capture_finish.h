/* capture_finish: what happens to a trace file once it is complete (its connection closed, or a
 * rotated piece ended): socktap_limits.finished_dir moves it, socktap_limits.on_finished runs a
 * program on it (capture_hook.h). Socktap extension, docs/capture.md "Rotation and finished
 * files".
 *
 * Threading: capture_finish_file runs on the capture writer thread, after the file's close(2),
 * so a file in finished_dir is never one still being written. Stats: registered at config
 * time; `rotated` is counted by the workers, `finished_moved`/`finished_move_failed` by the
 * writer, the hook counters as capture_hook.h says. */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_FINISH_H
#define SOCKTAP_TRANSPORT_CAPTURE_FINISH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/stats.h"

struct capture_limits;

/* <owner>.<kind>.{rotated, finished_moved, finished_move_failed, hook_ok, hook_failed,
 * hook_timeout, hook_skipped} */
struct capture_finish_stats {
    bool has_stats; /* false: nothing counted (unit tests) */
    stat_id rotated, finished_moved, finished_move_failed, hook_ok, hook_failed, hook_timeout,
        hook_skipped;
};

/* Registers ST's stats under OWNER (NULL: "socktap") and KIND ("capture", "tap", "tls_wire"). */
void capture_finish_register_stats(struct capture_finish_stats *st, const char *owner,
                                   const char *kind) __attribute__((nonnull(1, 3)));

/* Adds one to ST's stat ID (nothing when ST has no stats) from a helper thread (the writer or
 * the hook runner, bound to the main thread's slot for stats only they update). */
void capture_finish_count(const struct capture_finish_stats *st, stat_id id)
    __attribute__((nonnull));

/* True when L asks for anything at a file's end (finished_dir or on_finished). L may be NULL. */
bool capture_finish_wanted(const struct capture_limits *l);

/* The file PATH (a complete trace or key log, closed) is finished: moved into L->finished_dir
 * if set (same filesystem: renameat2(RENAME_NOREPLACE), link+unlink where that is not
 * supported; never over an existing file: on a clash the next free name `<name>.<n><ext>` with
 * EXT (borrowed, may be "") the file's extension, logged), then L->on_finished queued with the
 * final path (capture_hook_run). A failed move is logged once per failing period, counted in
 * finished_move_failed, and the hook runs on the unmoved file. FINAL (FINAL_SIZE bytes, the
 * caller's) receives the moved file's path, "" when it was not moved (the budget's account
 * follows the file: capture_store_finished). All arguments are borrowed; L, ST and KIND must
 * outlive the writer thread (they are the config's). Writer thread only. */
void capture_finish_file(const struct capture_limits *l, const struct capture_finish_stats *st,
                         const char *kind, uint64_t conn_id, const char *path, const char *ext,
                         char *final, size_t final_size) __attribute__((nonnull(1, 2, 3, 5, 6, 7)));

/* Moves PATH into directory DIR under PATH's base name, or the next free name as above, never
 * replacing a file. FINAL (FINAL_SIZE bytes, caller's) receives the new path. *RENAMED says a
 * clash made it take another name. Returns 0 or -errno (-EEXIST when 999 names are taken).
 * Exposed for unit tests. */
int capture_finish_move(const char *path, const char *dir, const char *ext, char *final,
                        size_t final_size, bool *renamed)
    __attribute__((warn_unused_result, nonnull));

#endif

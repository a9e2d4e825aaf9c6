/* The capture socket's disk side: safe creation of trace files and one writer thread that
 * takes their bytes off the relay's hot path.
 *
 * A worker encodes events into a per-file buffer and hands whole buffers (each ends on an event
 * boundary) to the writer with capture_wfile_submit(); the writer does the open(2) (for files
 * made with capture_wfile_open), the write(2) and close(2) calls. Each
 * file's backlog (bytes handed over but not yet written) is bounded by its max_backlog; a submit
 * that would exceed it is refused, and the caller stops that capture there, so the file stays a
 * valid prefix and memory never grows with traffic. A write error stops the file the same way
 * (logged once with the connection id, counted); the proxied connection never sees it.
 *
 * Rejected: a writer per worker (more threads than cores on small boxes, and the disk is one
 * device anyway); writing from the worker with O_NONBLOCK (ignored for regular files). */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_DISK_H
#define SOCKTAP_TRANSPORT_CAPTURE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/stats.h"
#include "trace/tbuf.h"
#include "transport/capture.h"
#include "transport/capture_store.h"

/* Creates a new trace file `<PATH_PREFIX>_<CONN_ID><EXT>` with open(O_WRONLY | O_CREAT | O_EXCL
 * | O_NOFOLLOW | O_CLOEXEC, 0600). An existing file or symlink at that name is never opened,
 * followed or changed: the next free name `<prefix>_<id>.1<ext>`, `.2`, ... (up to 999) is
 * used instead. EXT includes its dot (".pb"). On success returns 0, *OUT_FD is owned by the
 * caller and PATH (of PATH_SIZE bytes, caller's) holds the name used; *OUT_RENAMED says a
 * suffix was needed. Returns -errno (-ENAMETOOLONG, -ENOENT, -EACCES, -ENOSPC, -EEXIST when
 * every name is taken). No argument may be NULL. */
int capture_file_create(const char *path_prefix, uint64_t conn_id, const char *ext, char *path,
                        size_t path_size, int *out_fd, bool *out_renamed)
    __attribute__((warn_unused_result, nonnull));

/* Writes the directory PATH_PREFIX's files go to ("." for a bare name, "/" for "/name") into
 * DIR (DIR_SIZE bytes, caller's). Returns 0 or -ENAMETOOLONG. */
int capture_prefix_dir(const char *path_prefix, char *dir, size_t dir_size)
    __attribute__((warn_unused_result, nonnull));

/* Sets *OUT to 1 + the highest <id> of the names `<basename>_<id>`, `<basename>_<id>.<anything>`
 * in PATH_PREFIX's directory (0 if none, ids starting at 0): the first id a new run may use.
 * Returns 0 or -errno (-ENOENT for a missing directory, with *OUT 0). */
int capture_next_free_id(const char *path_prefix, uint64_t *out)
    __attribute__((warn_unused_result, nonnull));

/* True when NAME (a directory entry) is a trace name of prefix basename BASE:
 * `<BASE>_<id>` or `<BASE>_<id>.<anything>`; *ID is then its id. */
bool capture_trace_name_id(const char *base, const char *name, uint64_t *id)
    __attribute__((nonnull));

/* Stats the writer thread updates for a file (ids registered at config time); a zeroed struct
 * with has_stats false counts nothing (unit tests). files_opened/files_failed count the files
 * the writer creates itself (capture_wfile_open). */
struct capture_wstats {
    bool has_stats;
    stat_id bytes_written, write_errors, files_opened, files_failed;
    stat_id budget_skipped;            /* a create the budget refused (max_files) */
    struct capture_store_stats budget; /* budget_stopped, budget_deleted */
};

/* How the writer names and creates a trace file for capture_wfile_open. The strings and
 * FAILING are borrowed: they must outlive the writer thread (they are the config's, freed after
 * capture_writer_shutdown). */
struct capture_wcreate {
    const char *path_prefix, *ext; /* capture_file_create's arguments (ext with ".zst"...) */
    const char *kind;              /* log prefix ("capture", "tap", "tls_wire") */
    /* NULL: written as given; else each submitted buffer is written as one compressed frame
     * (capture_compress.h) */
    const struct capture_compress_cfg *comp;
    /* atomic, shared by every file of the config: a create failure was logged and no file was
     * created since, so further failures are only counted */
    bool *failing;
    /* NULL (every write error logged) or atomic, shared likewise: a write error was logged and
     * no write has succeeded since, so further ones (a full disk fails every connection's
     * trace) are only counted in write_errors */
    bool *write_failing;
    /* NULL: no budget; else the prefix's account (capture_store.h), which the writer charges
     * before each write; OWNER ("listener.x") names the files' owner in GET /captures */
    struct capture_store *store;
    const char *owner;
    /* NULL or the config's socktap_limits and stats: after the close, a file is handed to
     * capture_finish_file (finished_dir, on_finished) when they ask for it */
    const struct capture_limits *limits;
    const struct capture_finish_stats *fstats;
};

/* A file being written: shared by one capture socket (until capture_wfile_close) and the
 * writer thread (which frees it after the close). */
struct capture_wfile;

/* Wraps FD (ownership passes to the writer on success; on failure FD is untouched). PATH is
 * copied (for messages); STATS is copied. MAX_BACKLOG bounds the bytes queued and not yet
 * written. Starts the writer thread on first use. Returns 0 or -errno. */
int capture_wfile_new(int fd, const char *path, uint64_t conn_id, size_t max_backlog,
                      const struct capture_wstats *stats, struct capture_wfile **out)
    __attribute__((warn_unused_result, nonnull));

/* A file the writer creates itself, with capture_file_create(C's prefix, CONN_ID, C's ext),
 * when it handles the file's first job: the open(2) stays off the worker's accept path, and a
 * connection whose trace is all small events costs one writer job. A failure to create is
 * counted (files_failed), logged once per failing period, and fails the file
 * (capture_wfile_create_failed); files_opened counts successes. Otherwise as capture_wfile_new. */
int capture_wfile_open(const struct capture_wcreate *c, uint64_t conn_id, size_t max_backlog,
                       const struct capture_wstats *stats, struct capture_wfile **out)
    __attribute__((warn_unused_result, nonnull));

/* A file the writer creates (O_EXCL, 0600) at BESIDE's path plus SUFFIX (borrowed, static) when
 * it handles this file's first job: BESIDE (a capture_wfile_open file) must have a job queued
 * before that one (its create runs first) and must not be closed before it. Fails quietly when
 * BESIDE could not be created; another failure is logged and counted in write_errors. */
int capture_wfile_open_beside(struct capture_wfile *beside, const char *suffix, uint64_t conn_id,
                              size_t max_backlog, const struct capture_wstats *stats,
                              struct capture_wfile **out)
    __attribute__((warn_unused_result, nonnull));

/* Rotated traces (socktap_limits rotate_bytes/rotate_seconds): a chain ties the pieces of one
 * connection's trace together. Its first file (capture_wfile_open_piece on a new chain) is
 * named as capture_wfile_open's; each later one `<stem>.<n><ext>`, <stem> being the first
 * piece's name without its extension (`<prefix>_<id>`, or `<prefix>_<id>.<k>` when the first
 * piece took a collision name) and n the previous piece's number plus one (the first piece is
 * 0; a taken name moves on to the next n, logged). The writer creates pieces in the order of
 * their first jobs, so they must be submitted to in piece order. When the first piece could not
 * be created, later ones fail quietly (capture_wfile_create_failed). */
struct capture_wchain;
/* A new chain for files named by WC (read, not kept); *OUT holds the caller's reference
 * (capture_wchain_release). Returns 0 or -ENOMEM. */
int capture_wchain_new(const struct capture_wcreate *wc, struct capture_wchain **out)
    __attribute__((warn_unused_result, nonnull));
/* Drops one reference (the writer drops each piece's when it frees it). C may be NULL. */
void capture_wchain_release(struct capture_wchain *c);
/* Bytes queued over all of C's pieces and not yet written: the connection's backlog across a
 * rotation (a piece just closed may still be queued). */
size_t capture_wchain_backlog(const struct capture_wchain *c) __attribute__((nonnull));
/* As capture_wfile_open, for the next piece of CHAIN (borrowed; the file takes a reference).
 * files_opened/files_failed count pieces too. */
int capture_wfile_open_piece(const struct capture_wcreate *c, uint64_t conn_id, size_t max_backlog,
                             const struct capture_wstats *stats, struct capture_wchain *chain,
                             struct capture_wfile **out)
    __attribute__((warn_unused_result, nonnull));

/* Hands DATA (LEN bytes, malloc'd; ownership passes to the writer in every case, it is freed
 * even on error) to the writer. Returns 0, -ENOBUFS when the backlog is not empty and would
 * exceed max_backlog (the data is dropped: the caller stops capturing; the capture socket
 * holds its connection back before that can happen), -EIO when the file already failed, or
 * -ENOMEM. Called by the owning socket's thread only. */
int capture_wfile_submit(struct capture_wfile *f, void *data, size_t len)
    __attribute__((warn_unused_result));

/* Buffers of CAPTURE_BUF_BYTES, for bulk flows to encode into: taken from a pool the writer
 * refills with the buffers it has written (at most CAPTURE_POOL_MAX kept, about 9 MiB, freed at
 * capture_writer_shutdown), so a bulk flow does not malloc, fault in, grow (realloc copies)
 * and free a fresh buffer per hand-over. Sized for one read of the default 1 MiB
 * per_connection_buffer_limit_bytes plus its framing (a bulk read is one event that large). */
#define CAPTURE_BUF_BYTES (1024u * 1024u + 64u * 1024u)
#define CAPTURE_POOL_MAX  8

/* Gives the empty B (data NULL) a pool buffer (cap CAPTURE_BUF_BYTES), owned by B's owner:
 * hand it over with capture_wfile_submit_buf (or tbuf_free it). Returns 0 or -ENOMEM. */
int capture_buf_take(struct tbuf *b) __attribute__((warn_unused_result, nonnull));

/* As capture_wfile_submit for B's bytes; B's memory goes with them (back to the pool once
 * written, when it is a pool buffer) and B is left empty (data NULL). */
int capture_wfile_submit_buf(struct capture_wfile *f, struct tbuf *b)
    __attribute__((warn_unused_result, nonnull));

/* Flat buffers: CAPTURE_BUF_BYTES of memory shared by reference count between a recorder that
 * has the inner socket read payload straight into it (capture_rec_flat_begin), the relay that
 * sends those bytes on to the peer from there (evbuffer references) and the writer (each event's
 * encoded range, capture_wfile_submit_flat), so no user-space copy is made of bulk payload. The
 * last reference dropped, on any thread, puts it back in a pool (at most CAPTURE_POOL_MAX kept,
 * freed at capture_writer_shutdown). */
struct capture_flat;
/* *OUT: a flat buffer with one reference, the caller's. 0 or -ENOMEM. */
int capture_flat_take(struct capture_flat **out) __attribute__((warn_unused_result, nonnull));
uint8_t *capture_flat_data(struct capture_flat *b) __attribute__((nonnull));
void capture_flat_ref(struct capture_flat *b) __attribute__((nonnull));
/* Drops a reference; B may be NULL. Any thread. */
void capture_flat_unref(struct capture_flat *b);
/* As capture_wfile_submit for LEN bytes at DATA inside B: the writer takes its own reference to
 * B (dropped once written, or at once on failure); the caller keeps its own. */
int capture_wfile_submit_flat(struct capture_wfile *f, struct capture_flat *b, const void *data,
                              size_t len) __attribute__((warn_unused_result, nonnull));

/* True once a write to F failed, or its creation (the writer logged and counted it). */
bool capture_wfile_failed(const struct capture_wfile *f);
/* True once the writer failed to create F (counted in files_failed, not a write error), or
 * did not create it because the budget said no (capture_wfile_budget). */
bool capture_wfile_create_failed(const struct capture_wfile *f);
/* True once the budget stopped F: its create was refused (max_files: counted in
 * budget_skipped) or a write would have crossed max_total_bytes (the file ends at its last whole
 * event: budget_stopped). Not an error: logged once per state change by the account. */
bool capture_wfile_budget(const struct capture_wfile *f);
/* F's path once the writer created it, else "". Valid until F is closed. */
const char *capture_wfile_path(const struct capture_wfile *f);
/* Bytes queued and not yet written (0: everything submitted was written or dropped). */
size_t capture_wfile_backlog(const struct capture_wfile *f);

/* Queues the end of F: the writer writes what is queued, closes the fd and frees F. The caller
 * must not use F afterwards. F may be NULL. */
void capture_wfile_close(struct capture_wfile *f);

/* The writer's global bounds: bytes held for it over all files (queued data, and the files of
 * closed connections not yet written and closed), and files waiting to be created. Creating
 * files on the writer lets a worker accept connections faster than the writer can create their
 * files (ext4: 100-300 us each): measured without a bound, 5 s of new connections with capture
 * grew socktap to 37 MB RSS (6.6 MB when the worker created them). Past a bound,
 * capture_rec_room holds capturing connections back (backpressure, as for a full per-connection
 * backlog) until the writer catches up. */
#define CAPTURE_WRITER_MAX_HELD    (32u * 1024u * 1024u)
#define CAPTURE_WRITER_MAX_CREATES 256u
/* True while the writer is past one of its global bounds. Any thread. */
bool capture_writer_behind(void);

/* Writer-driven resume of held connections. A worker registers an eventfd for its thread
 * (capture_writer_set_waker; -1 unregisters); a connection of that thread whose backlog is full
 * registers it on its file or chain (capture_wfile_want_room, capture_wchain_want_room, then
 * re-reads the backlog: the writer's decrement and its look at the waiter are ordered against
 * that store and re-read, so one of the two sees the other) and the writer writes 1 to the
 * eventfd once it wrote a buffer of that file: the worker retries its held connections then,
 * not on their timer. The eventfd must stay open until capture_writer_shutdown. Measured
 * (iperf3 through one capturing worker into tmpfs): with a 1 ms retry timer, a backlog small
 * enough for the writer's source to stay in cache idled the writer between retries. */
void capture_writer_set_waker(int efd);
void capture_wfile_want_room(struct capture_wfile *f) __attribute__((nonnull));
void capture_wchain_want_room(struct capture_wchain *c) __attribute__((nonnull));

/* Wake-up batching for the calling thread (a worker). Between capture_writer_defer_wake(true)
 * and (false), small jobs (a close, a flow's few events) are queued at once but do not wake the
 * writer; capture_writer_wake() then wakes it once if such a job is waiting, and returns whether
 * one was. capture_writer_unsignalled() says whether this thread has such a job. The caller
 * must make sure capture_writer_wake() follows soon (capture_rec.c: its flush tick). Measured
 * (wrk Connection: close through one capturing worker into tmpfs): a wake-up per close cost
 * the writer a futex wait and a context switch per connection. */
void capture_writer_defer_wake(bool on);
bool capture_writer_wake(void);
bool capture_writer_unsignalled(void);

/* Blocks until the writer has handled everything queued so far (tests, orderly shutdown). */
void capture_writer_sync(void);
/* A config reload frees a capture config only once no queued job still uses it (a file's
 * create reads the config's prefix and flags after its connection ended): capture_writer_fence
 * marks what is queued now, capture_writer_fence_passed says whether the writer has handled all
 * of it. Any thread; never blocks on the disk. */
uint64_t capture_writer_fence(void);
bool capture_writer_fence_passed(uint64_t mark);
/* Writes out everything queued, stops and joins the writer thread. Safe to call when it never
 * started. The capture factories' shutdown hook: main stops it through ts_registry_shutdown()
 * after the last socket is gone, so a normal exit and a drain lose no capture. */
void capture_writer_shutdown(void);

#endif

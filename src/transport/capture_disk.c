/* Trace file creation and the capture writer thread (see capture_disk.h for the contract).
 *
 * One process-wide writer thread drains one FIFO of jobs (a buffer for a file, or a file's
 * close). Per-file order is the FIFO order, so a file's close always comes after its data and
 * the writer can free it then. The per-file backlog is an atomic the worker checks without the
 * lock; only pushing a job takes the mutex (once per 256 KiB in bulk flows, or once per
 * connection with pending events on the worker's flush tick). Only whole submitted buffers
 * reach write(2), and every buffer ends on an event boundary, so a file is a valid trace prefix
 * after every write (a kill -9 inside a write(2) can still tear the last page-sized piece: the
 * kernel stops copying on a fatal signal; the readers report where the tail is cut).
 *
 * Bulk buffers come from a small pool (capture_buf_take): the writer hands written buffers back
 * instead of freeing them. Measured (iperf3 -n 1G through one capturing worker, socktap's
 * utime+stime per GiB): malloc'd buffers grown by doubling to a 1 MiB read each, freed after
 * the write, spent most of the capture in page faults, zeroing and the hypervisor's fault path
 * (130-170k minor faults per GiB): 4.1 cpu-s/GiB into tmpfs, 3.0-3.8 into ext4; with the pool
 * 0.9-1.06 and 0.8 (4-8k faults).
 * Rejected: posix_fadvise(DONTNEED) on what was written 4 MiB earlier, to spare the page cache
 * on long captures: 0.81 -> 1.03 cpu-s/GiB into ext4 and no faster. O_DIRECT: dd shows 0.25
 * instead of 0.47-1.36 cpu-s/GiB into this ext4, but a trace ends on event boundaries, not
 * blocks: the unaligned tail would have to be rewritten on every write, and after a kill -9
 * the file would not be a trace prefix; not done (tmpfs refuses O_DIRECT anyway).
 *
 * A compressed file (socktap_compression) gets each buffer as one complete frame, made on this
 * thread by writer_compress() just before the write (capture_compress.h): the same guarantees
 * hold frame by frame. */
#include "transport/capture_disk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "transport/capture_compress.h"
#include "transport/capture_finish.h"
#include "transport/capture_hook.h"

#define CAPTURE_MAX_SUFFIX 999

int capture_file_create(const char *path_prefix, uint64_t conn_id, const char *ext, char *path,
                        size_t path_size, int *out_fd, bool *out_renamed)
{
    for (int suffix = 0; suffix <= CAPTURE_MAX_SUFFIX; suffix++) {
        int n;
        if (suffix == 0)
            n = snprintf(path, path_size, "%s_%" PRIu64 "%s", path_prefix, conn_id, ext);
        else
            n = snprintf(path, path_size, "%s_%" PRIu64 ".%d%s", path_prefix, conn_id, suffix, ext);
        if (n < 0 || (size_t)n >= path_size)
            return -ENAMETOOLONG;
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
            *out_fd = fd;
            *out_renamed = suffix > 0;
            return 0;
        }
        /* O_EXCL refuses existing files and symlinks (dangling ones too) with EEXIST; ELOOP
         * is what some kernels report for a symlink under O_NOFOLLOW. Either way: next name. */
        if (errno != EEXIST && errno != ELOOP)
            return -errno;
    }
    return -EEXIST;
}

int capture_prefix_dir(const char *path_prefix, char *dir, size_t dir_size)
{
    const char *slash = strrchr(path_prefix, '/');
    size_t len = slash ? (size_t)(slash - path_prefix) : 0;
    int n;
    if (!slash)
        n = snprintf(dir, dir_size, ".");
    else if (!len)
        n = snprintf(dir, dir_size, "/");
    else
        n = snprintf(dir, dir_size, "%.*s", (int)len, path_prefix);
    return n < 0 || (size_t)n >= dir_size ? -ENAMETOOLONG : 0;
}

/* Parses "<digits>" at S up to the end or a '.', as in "<id>", "<id>.pb", "<id>.3.pb". */
static bool parse_trace_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (*s && *s != '.')
        return false;
    *out = v;
    return true;
}

bool capture_trace_name_id(const char *base, const char *name, uint64_t *id)
{
    size_t blen = strlen(base);
    return !strncmp(name, base, blen) && name[blen] == '_' && parse_trace_id(name + blen + 1, id);
}

int capture_next_free_id(const char *path_prefix, uint64_t *out)
{
    const char *slash = strrchr(path_prefix, '/');
    const char *base = slash ? slash + 1 : path_prefix;
    char dir[4096];
    struct dirent *de;
    DIR *d;
    int rc = 0;

    *out = 0;
    if ((rc = capture_prefix_dir(path_prefix, dir, sizeof(dir))))
        return rc;
    d = opendir(dir);
    if (!d)
        return -errno;
    errno = 0;
    while ((de = readdir(d))) {
        uint64_t id;
        if (capture_trace_name_id(base, de->d_name, &id) && id >= *out && id < UINT64_MAX)
            *out = id + 1;
    }
    if (errno)
        rc = -errno;
    closedir(d);
    return rc;
}

enum wjob_kind { WJOB_DATA, WJOB_CLOSE };

struct wjob {
    struct wjob *next;
    enum wjob_kind kind;
    struct capture_wfile *file;
    void *data;
    size_t len;
    bool pooled;               /* DATA is CAPTURE_BUF_BYTES long: back to the pool once written */
    struct capture_flat *flat; /* DATA lies in FLAT: a reference, dropped once written */
};

struct buf_pool {
    pthread_mutex_t lock;
    void *bufs[CAPTURE_POOL_MAX];
    int n;
    bool closed; /* drained at shutdown: buffers given back later are freed (a flat buffer the
                    relay still referenced), until a buffer is taken again */
};

/* Encode buffers (capture_buf_take) and flat buffers (capture_flat_take), each their own size. */
static struct buf_pool g_pool = {.lock = PTHREAD_MUTEX_INITIALIZER};
static struct buf_pool g_flat_pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* atomic: bytes held for the writer over all files (data queued, and each file's struct until
 * the writer frees it), for capture_writer_behind */
static size_t g_held;
/* atomic: files made with capture_wfile_open* that the writer has not created yet */
static size_t g_creates;

/* A buffer of POOL, or a new one of SIZE bytes; NULL: no memory. */
static void *pool_get(struct buf_pool *pool, size_t size)
{
    void *p = NULL;
    pthread_mutex_lock(&pool->lock);
    pool->closed = false;
    if (pool->n > 0)
        p = pool->bufs[--pool->n];
    pthread_mutex_unlock(&pool->lock);
    return p ? p : malloc(size);
}

static void pool_put(struct buf_pool *pool, void *p)
{
    pthread_mutex_lock(&pool->lock);
    if (!pool->closed && pool->n < CAPTURE_POOL_MAX) {
        pool->bufs[pool->n++] = p;
        p = NULL;
    }
    pthread_mutex_unlock(&pool->lock);
    free(p);
}

static void pool_drain(struct buf_pool *pool)
{
    pthread_mutex_lock(&pool->lock);
    while (pool->n > 0)
        free(pool->bufs[--pool->n]);
    pool->closed = true;
    pthread_mutex_unlock(&pool->lock);
}

int capture_buf_take(struct tbuf *b)
{
    void *p = pool_get(&g_pool, CAPTURE_BUF_BYTES);
    if (!p)
        return -ENOMEM;
    *b = (struct tbuf){.data = p, .cap = CAPTURE_BUF_BYTES};
    return 0;
}

struct capture_flat {
    int refs; /* atomic */
    uint8_t data[];
};

int capture_flat_take(struct capture_flat **out)
{
    struct capture_flat *b = pool_get(&g_flat_pool, sizeof(*b) + CAPTURE_BUF_BYTES);
    if (!b)
        return -ENOMEM;
    b->refs = 1;
    *out = b;
    return 0;
}

uint8_t *capture_flat_data(struct capture_flat *b)
{
    return b->data;
}

void capture_flat_ref(struct capture_flat *b)
{
    __atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
}

void capture_flat_unref(struct capture_flat *b)
{
    if (b && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0)
        pool_put(&g_flat_pool, b);
}

/* The pieces of one rotated trace (capture_wfile_open_piece): referenced by the recorder and
 * by each piece until the writer frees it. */
struct capture_wchain {
    int refs;         /* atomic */
    size_t backlog;   /* atomic: bytes queued over all pieces, not yet written */
    int waiter;       /* atomic: a held connection's eventfd (capture_wchain_want_room), or -1 */
    bool first_done;  /* writer only: the first piece's create ran */
    size_t stem_len;  /* writer only: the first piece's name minus its extension; 0: failed */
    unsigned last_no; /* writer only: the latest piece's number (the first piece: 0) */
    size_t stem_size;
    char stem[]; /* writer only */
};

struct capture_wfile {
    int fd;
    uint64_t conn_id;
    size_t max_backlog;
    size_t backlog;      /* atomic: bytes queued, not yet written */
    int waiter;          /* atomic: a held connection's eventfd (capture_wfile_want_room), or -1 */
    bool failed;         /* atomic: set by the writer */
    bool create_failed;  /* atomic: set by the writer (with failed) */
    bool created;        /* atomic: path is final (set by the writer once it is written) */
    bool budget;         /* atomic: set by the writer (with failed): the budget stopped F */
    bool pending_create; /* writer only after construction: create at the first job */
    off_t size;          /* writer only: bytes in the file, always on an event boundary */
    struct capture_wstats stats;
    struct capture_wcreate create;
    struct capture_wfile *beside;     /* open_beside: the file whose path ours extends */
    struct capture_store_file *entry; /* writer only: F in its prefix's account, or NULL */
    const char *suffix;
    struct capture_wchain *chain; /* a reference, or NULL: not a rotated trace */
    size_t path_size;
    char path[];
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* jobs queued or stop */
    pthread_cond_t idle; /* queue empty and no job in progress */
    struct wjob *head, *tail;
    bool busy;
    bool started, stop;
    uint64_t pushed; /* jobs ever queued (under the lock) */
    uint64_t done;   /* atomic: jobs ever finished; FIFO, so done >= n means job n is through */
    pthread_t thread;
    struct capture_compressor *comp; /* writer thread only: made at its start */
} g_writer = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .idle = PTHREAD_COND_INITIALIZER,
};

static void writer_count(const struct capture_wfile *f, stat_id id, int64_t n)
{
    if (!f->stats.has_stats)
        return;
    if (!stats_tls)
        stats_bind_aux_thread();
    stats_add(id, n);
}

/* Writes all of DATA or fails the file (logged once: later jobs for it are dropped unlogged).
 * A failed buffer is cut back off the file (ENOSPC usually lands mid-buffer): the file ends on
 * the last whole event, a complete trace rather than one with a torn tail. */
static void writer_write(struct capture_wfile *f, const uint8_t *data, size_t len)
{
    size_t off = 0;
    if (capture_store_charge(f->entry, len, &f->stats.budget)) {
        /* max_total_bytes: the file ends on its last whole event (counted and logged once by
         * the account); not an error */
        __atomic_store_n(&f->budget, true, __ATOMIC_RELAXED);
        __atomic_store_n(&f->failed, true, __ATOMIC_RELEASE);
        close(f->fd);
        f->fd = -1;
        return;
    }
    while (off < len) {
        ssize_t n = write(f->fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int err = n < 0 ? errno : ENOSPC;
            bool *failing = f->create.write_failing;
            if (!failing || !__atomic_exchange_n(failing, true, __ATOMIC_RELAXED))
                LOGE(f->conn_id,
                     "capture: writing %s failed: %s; capture stopped (%zu bytes lost)%s", f->path,
                     strerror(err), len - off,
                     failing ? "; until a write succeeds again, further write errors of this "
                               "capture config are only counted in write_errors"
                             : "");
            if (off > 0 && ftruncate(f->fd, f->size) != 0)
                LOGE(f->conn_id, "capture: cannot cut %s back to its last whole event: %s", f->path,
                     strerror(errno));
            writer_count(f, f->stats.write_errors, 1);
            capture_store_uncharge(f->entry, len);
            __atomic_store_n(&f->failed, true, __ATOMIC_RELEASE);
            close(f->fd);
            f->fd = -1;
            return;
        }
        off += (size_t)n;
        writer_count(f, f->stats.bytes_written, n);
    }
    f->size += (off_t)len;
    bool *failing = f->create.write_failing;
    if (failing && __atomic_load_n(failing, __ATOMIC_RELAXED) &&
        __atomic_exchange_n(failing, false, __ATOMIC_RELAXED))
        LOGI(f->conn_id, "capture: writing traces works again (%s)", f->path);
}

/* Turns the buffer OUT describes into one compressed frame when F is compressed (OUT then
 * points into the writer's compressor). A failure stops F like a write error. */
static int writer_compress(struct capture_wfile *f, struct iovec *out)
{
    if (!f->create.comp || f->create.comp->alg == CAPTURE_COMPRESS_NONE)
        return 0;
    struct iovec in = *out;
    int rc = g_writer.comp ? capture_compress_frame(g_writer.comp, f->create.comp, &in, 1, out)
                           : -ENOMEM;
    if (!rc)
        return 0;
    LOGE(f->conn_id, "capture: compressing for %s failed: %s; capture stopped (%zu bytes lost)",
         f->path, strerror(-rc), in.iov_len);
    writer_count(f, f->stats.write_errors, 1);
    __atomic_store_n(&f->failed, true, __ATOMIC_RELEASE);
    close(f->fd);
    f->fd = -1;
    return rc;
}

static void writer_fail_create(struct capture_wfile *f)
{
    f->path[0] = '\0';
    __atomic_store_n(&f->create_failed, true, __ATOMIC_RELAXED);
    __atomic_store_n(&f->failed, true, __ATOMIC_RELEASE);
}

/* Enters F, just created, in its prefix's account (a failure leaves it unaccounted: the
 * budget then undercounts one file, which is said). */
static void writer_account(struct capture_wfile *f)
{
    const struct capture_wcreate *c = &f->create;
    if (c->store && capture_store_add(c->store, f->path, f->conn_id, c->owner ? c->owner : "",
                                      c->kind, &f->entry))
        LOGW(f->conn_id, "%s: no memory to account %s in the budget of %s", c->kind, f->path,
             c->path_prefix);
}

static void writer_create_beside(struct capture_wfile *f)
{
    const char *why = NULL;
    if (!__atomic_load_n(&f->beside->created, __ATOMIC_ACQUIRE)) {
        writer_fail_create(f); /* the trace itself failed: counted and logged there */
        return;
    }
    int n = snprintf(f->path, f->path_size, "%s%s", f->beside->path, f->suffix);
    if (n < 0 || (size_t)n >= f->path_size)
        why = strerror(ENAMETOOLONG);
    else if ((f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600)) <
             0)
        why = strerror(errno);
    if (why) {
        LOGW(f->conn_id, "%s: cannot write the key log %s%s: %s; the wire trace has no keys",
             f->create.kind, f->beside->path, f->suffix, why);
        writer_count(f, f->stats.write_errors, 1);
        writer_fail_create(f);
        return;
    }
    writer_account(f);
    __atomic_store_n(&f->created, true, __ATOMIC_RELEASE);
}

/* Creates a later piece F `<stem>.<n><ext>` of its chain. Returns 0, 1 (the first piece was
 * never created: fail quietly) or -errno; *RENAMED says a piece number was taken. */
static int writer_create_piece(struct capture_wfile *f, bool *renamed)
{
    struct capture_wchain *ch = f->chain;
    if (!ch->stem_len)
        return 1;
    *renamed = false;
    for (unsigned n = ch->last_no + 1; n <= ch->last_no + CAPTURE_MAX_SUFFIX; n++) {
        int len = snprintf(f->path, f->path_size, "%s.%u%s", ch->stem, n, f->create.ext);
        if (len < 0 || (size_t)len >= f->path_size)
            return -ENAMETOOLONG;
        f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (f->fd >= 0) {
            *renamed = n > ch->last_no + 1;
            ch->last_no = n;
            return 0;
        }
        if (errno != EEXIST && errno != ELOOP)
            return -errno;
    }
    return -EEXIST;
}

/* Creates F's file (capture_wfile_open); the logging and counting capture_disk.h describes. */
static void writer_create(struct capture_wfile *f)
{
    const struct capture_wcreate *c = &f->create;
    bool renamed;
    int rc;
    f->pending_create = false;
    __atomic_sub_fetch(&g_creates, 1, __ATOMIC_RELAXED);
    if (f->beside) {
        writer_create_beside(f);
        return;
    }
    if (c->store && capture_store_reserve(c->store, &f->stats.budget)) {
        /* max_files and nothing to delete: not captured, as a paused account does (a rotated
         * piece likewise: the trace ends with its previous piece) */
        writer_count(f, f->stats.budget_skipped, 1);
        f->fd = -1;
        __atomic_store_n(&f->budget, true, __ATOMIC_RELAXED);
        writer_fail_create(f);
        return;
    }
    bool piece = f->chain && f->chain->first_done;
    if (piece) {
        rc = writer_create_piece(f, &renamed);
        if (rc == 1) {
            f->fd = -1;
            writer_fail_create(f); /* the trace itself failed: counted and logged there */
            return;
        }
    } else {
        rc = capture_file_create(c->path_prefix, f->conn_id, c->ext, f->path, f->path_size, &f->fd,
                                 &renamed);
        if (f->chain) {
            size_t len = rc ? 0 : strlen(f->path) - strlen(c->ext);
            f->chain->first_done = true;
            f->chain->stem_len = len < f->chain->stem_size ? len : 0;
            memcpy(f->chain->stem, f->path, f->chain->stem_len);
            f->chain->stem[f->chain->stem_len] = '\0';
        }
    }
    if (rc) {
        f->fd = -1;
        writer_count(f, f->stats.files_failed, 1);
        if (!__atomic_exchange_n(c->failing, true, __ATOMIC_RELAXED))
            LOGE(f->conn_id,
                 "%s: cannot create a trace file for prefix %s: %s; connection not captured "
                 "(until a file can be created again, further failures are only counted in "
                 "%s.files_failed)",
                 c->kind, c->path_prefix, strerror(-rc), c->kind);
        writer_fail_create(f);
        return;
    }
    if (__atomic_exchange_n(c->failing, false, __ATOMIC_RELAXED))
        LOGI(f->conn_id, "%s: trace files for prefix %s can be created again", c->kind,
             c->path_prefix);
    if (renamed && piece)
        LOGW(f->conn_id,
             "%s: the next piece's name exists (file or symlink, left untouched); "
             "writing %s instead",
             c->kind, f->path);
    else if (renamed)
        LOGW(f->conn_id,
             "%s: %s_%" PRIu64 "%s exists (file or symlink, left untouched); writing %s instead",
             c->kind, c->path_prefix, f->conn_id, c->ext, f->path);
    writer_count(f, f->stats.files_opened, 1);
    LOGD(f->conn_id, "%s: writing %s", c->kind, f->path);
    writer_account(f);
    __atomic_store_n(&f->created, true, __ATOMIC_RELEASE);
}

/* Room was made in a backlog a connection waits on: wake its worker (once per wait). */
static void writer_notify(int *waiter)
{
    if (__atomic_load_n(waiter, __ATOMIC_SEQ_CST) < 0)
        return;
    int efd = __atomic_exchange_n(waiter, -1, __ATOMIC_SEQ_CST);
    if (efd >= 0) {
        uint64_t one = 1;
        ssize_t n = write(efd, &one, sizeof(one)); /* EAGAIN: the count is full, it is awake */
        (void)n;
    }
}

static void writer_run_job(struct wjob *job)
{
    struct capture_wfile *f = job->file;
    if (f->pending_create)
        writer_create(f);
    if (job->kind == WJOB_CLOSE) {
        if (f->fd >= 0 && close(f->fd) != 0) {
            LOGE(f->conn_id, "capture: closing %s failed: %s", f->path, strerror(errno));
            writer_count(f, f->stats.write_errors, 1);
        }
        /* complete (or cut at its last whole event by a failed write, still a valid trace);
         * the account follows it into finished_dir */
        char moved[4096] = "";
        if (__atomic_load_n(&f->created, __ATOMIC_RELAXED) && f->path[0] &&
            capture_finish_wanted(f->create.limits) && f->create.fstats)
            capture_finish_file(f->create.limits, f->create.fstats, f->create.kind, f->conn_id,
                                f->path, f->suffix ? f->suffix : f->create.ext, moved,
                                sizeof(moved));
        capture_store_finished(f->entry, moved[0] ? moved : NULL);
        __atomic_sub_fetch(&g_held, sizeof(*f) + f->path_size, __ATOMIC_RELAXED);
        capture_wchain_release(f->chain);
        free(f);
    } else {
        if (!__atomic_load_n(&f->failed, __ATOMIC_ACQUIRE)) {
            struct iovec out = {.iov_base = job->data, .iov_len = job->len};
            if (!writer_compress(f, &out))
                writer_write(f, out.iov_base, out.iov_len);
        }
        /* sequentially consistent, as the waiter's store and re-check (capture_wfile_want_room):
         * either we see its eventfd or it sees the room we made */
        __atomic_sub_fetch(&f->backlog, job->len, __ATOMIC_SEQ_CST);
        if (f->chain)
            __atomic_sub_fetch(&f->chain->backlog, job->len, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&g_held, job->len, __ATOMIC_RELAXED);
        writer_notify(&f->waiter);
        if (f->chain)
            writer_notify(&f->chain->waiter);
        if (job->flat)
            capture_flat_unref(job->flat);
        else if (job->pooled)
            pool_put(&g_pool, job->data);
        else
            free(job->data);
    }
    free(job);
}

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "socktap-capture");
    log_set_thread_worker(-1);
    if (capture_compressor_new(&g_writer.comp))
        LOGE(LOG_NO_CONN, "capture: no memory for the compressor: compressed traces will fail");
    pthread_mutex_lock(&g_writer.lock);
    for (;;) {
        while (!g_writer.head && !g_writer.stop)
            pthread_cond_wait(&g_writer.wake, &g_writer.lock);
        struct wjob *job = g_writer.head;
        if (!job)
            break; /* stop requested and the queue is empty */
        g_writer.head = job->next;
        if (!g_writer.head)
            g_writer.tail = NULL;
        g_writer.busy = true;
        pthread_mutex_unlock(&g_writer.lock);
        writer_run_job(job);
        __atomic_add_fetch(&g_writer.done, 1, __ATOMIC_RELEASE);
        pthread_mutex_lock(&g_writer.lock);
        g_writer.busy = false;
        if (!g_writer.head)
            pthread_cond_broadcast(&g_writer.idle);
    }
    pthread_mutex_unlock(&g_writer.lock);
    capture_compressor_free(g_writer.comp);
    g_writer.comp = NULL;
    return NULL;
}

/* Called with the lock held. */
static int writer_start_locked(void)
{
    if (g_writer.started)
        return 0;
    g_writer.stop = false;
    int rc = pthread_create(&g_writer.thread, NULL, writer_main, NULL);
    if (rc != 0)
        return -rc;
    g_writer.started = true;
    return 0;
}

/* Per thread: pushes made under capture_writer_defer_wake(true) that signalled no one yet. */
static __thread bool t_defer_wake, t_unsignalled;
/* Per thread: the eventfd the writer wakes when room is made for this thread's held
 * connections (capture_writer_set_waker); -1: none, they wait for their retry timer. */
static __thread int t_waker = -1;

void capture_writer_set_waker(int efd)
{
    t_waker = efd;
}

void capture_wfile_want_room(struct capture_wfile *f)
{
    if (t_waker >= 0)
        __atomic_store_n(&f->waiter, t_waker, __ATOMIC_SEQ_CST);
}

void capture_wchain_want_room(struct capture_wchain *c)
{
    if (t_waker >= 0)
        __atomic_store_n(&c->waiter, t_waker, __ATOMIC_SEQ_CST);
}

/* Queues JOB. The writer is woken now unless this thread defers wake-ups and JOB is small (a
 * close, a flow's few events): bulk chunks still wake it at once, so the pipeline never waits
 * for a tick. The queue itself is never deferred, so capture_writer_fence stays exact. */
static void writer_push(struct wjob *job)
{
    bool wake = !t_defer_wake || job->len >= CAPTURE_CHUNK_BYTES / 4;
    pthread_mutex_lock(&g_writer.lock);
    job->next = NULL;
    if (g_writer.tail)
        g_writer.tail->next = job;
    else
        g_writer.head = job;
    g_writer.tail = job;
    g_writer.pushed++;
    pthread_mutex_unlock(&g_writer.lock);
    if (wake) {
        /* after the unlock: the job is visible to a writer checking the queue under the lock,
         * and a waiting one gets this signal, so no wake-up is lost */
        pthread_cond_signal(&g_writer.wake);
        t_unsignalled = false;
    } else {
        t_unsignalled = true;
    }
}

void capture_writer_defer_wake(bool on)
{
    t_defer_wake = on;
}

bool capture_writer_wake(void)
{
    if (!t_unsignalled)
        return false;
    t_unsignalled = false;
    pthread_cond_signal(&g_writer.wake);
    return true;
}

bool capture_writer_unsignalled(void)
{
    return t_unsignalled;
}

/* A file of PATH_SIZE bytes of path, the writer started. */
static int wfile_alloc(size_t path_size, uint64_t conn_id, size_t max_backlog,
                       const struct capture_wstats *stats, struct capture_wfile **out)
{
    struct capture_wfile *f = malloc(sizeof(*f) + path_size);
    if (!f)
        return -ENOMEM;
    pthread_mutex_lock(&g_writer.lock);
    int rc = writer_start_locked();
    pthread_mutex_unlock(&g_writer.lock);
    if (rc) {
        free(f);
        return rc;
    }
    *f = (struct capture_wfile){
        .fd = -1, .conn_id = conn_id, .max_backlog = max_backlog, .waiter = -1, .stats = *stats};
    f->path_size = path_size;
    __atomic_add_fetch(&g_held, sizeof(*f) + path_size, __ATOMIC_RELAXED);
    f->path[0] = '\0';
    *out = f;
    return 0;
}

int capture_wfile_new(int fd, const char *path, uint64_t conn_id, size_t max_backlog,
                      const struct capture_wstats *stats, struct capture_wfile **out)
{
    size_t plen = strlen(path) + 1;
    int rc = wfile_alloc(plen, conn_id, max_backlog, stats, out);
    if (rc)
        return rc;
    (*out)->fd = fd;
    (*out)->created = true;
    memcpy((*out)->path, path, plen);
    return 0;
}

int capture_wfile_open(const struct capture_wcreate *c, uint64_t conn_id, size_t max_backlog,
                       const struct capture_wstats *stats, struct capture_wfile **out)
{
    /* "<prefix>_<id>.<suffix><ext>", or a piece's "<prefix>_<id>.<suffix>.<n><ext>" */
    int rc =
        wfile_alloc(strlen(c->path_prefix) + strlen(c->ext) + 48, conn_id, max_backlog, stats, out);
    if (rc)
        return rc;
    (*out)->create = *c;
    (*out)->pending_create = true;
    __atomic_add_fetch(&g_creates, 1, __ATOMIC_RELAXED);
    return 0;
}

int capture_wchain_new(const struct capture_wcreate *wc, struct capture_wchain **out)
{
    size_t size = strlen(wc->path_prefix) + 32; /* "<prefix>_<id>.<k>" */
    struct capture_wchain *c = calloc(1, sizeof(*c) + size);
    if (!c)
        return -ENOMEM;
    c->refs = 1;
    c->waiter = -1;
    c->stem_size = size;
    *out = c;
    return 0;
}

void capture_wchain_release(struct capture_wchain *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) == 0)
        free(c);
}

size_t capture_wchain_backlog(const struct capture_wchain *c)
{
    return __atomic_load_n(&c->backlog, __ATOMIC_SEQ_CST);
}

int capture_wfile_open_piece(const struct capture_wcreate *c, uint64_t conn_id, size_t max_backlog,
                             const struct capture_wstats *stats, struct capture_wchain *chain,
                             struct capture_wfile **out)
{
    /* "<prefix>_<id>.<k>.<n><ext>" at most */
    int rc = capture_wfile_open(c, conn_id, max_backlog, stats, out);
    if (rc)
        return rc;
    (*out)->chain = chain;
    __atomic_add_fetch(&chain->refs, 1, __ATOMIC_RELAXED);
    return 0;
}

int capture_wfile_open_beside(struct capture_wfile *beside, const char *suffix, uint64_t conn_id,
                              size_t max_backlog, const struct capture_wstats *stats,
                              struct capture_wfile **out)
{
    int rc = wfile_alloc(beside->path_size + strlen(suffix), conn_id, max_backlog, stats, out);
    if (rc)
        return rc;
    (*out)->create = beside->create;
    (*out)->create.comp = NULL; /* a key log is plain NSS text, whatever its trace */
    (*out)->beside = beside;
    (*out)->suffix = suffix;
    (*out)->pending_create = true;
    __atomic_add_fetch(&g_creates, 1, __ATOMIC_RELAXED);
    return 0;
}

/* Queues LEN bytes at DATA for F. DATA is owned (freed, or back to the pool when POOLED),
 * or lies in FLAT, whose reference is the caller's to hand over. */
static int wfile_submit(struct capture_wfile *f, void *data, size_t len, bool pooled,
                        struct capture_flat *flat)
{
    int rc = 0;
    struct wjob *job = NULL;
    if (capture_wfile_failed(f)) {
        rc = -EIO;
        goto err_free;
    }
    /* Only this thread adds to the backlog, so check-then-add cannot overshoot. */
    size_t backlog = capture_wfile_backlog(f);
    if (backlog > 0 && backlog + len > f->max_backlog) {
        rc = -ENOBUFS;
        goto err_free;
    }
    if (!(job = malloc(sizeof(*job)))) {
        rc = -ENOMEM;
        goto err_free;
    }
    *job = (struct wjob){
        .kind = WJOB_DATA, .file = f, .data = data, .len = len, .pooled = pooled, .flat = flat};
    __atomic_add_fetch(&f->backlog, len, __ATOMIC_RELAXED);
    if (f->chain)
        __atomic_add_fetch(&f->chain->backlog, len, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_held, len, __ATOMIC_RELAXED);
    writer_push(job);
    return 0;

err_free:
    if (flat)
        capture_flat_unref(flat);
    else if (pooled)
        pool_put(&g_pool, data);
    else
        free(data);
    return rc;
}

int capture_wfile_submit(struct capture_wfile *f, void *data, size_t len)
{
    return wfile_submit(f, data, len, false, NULL);
}

int capture_wfile_submit_flat(struct capture_wfile *f, struct capture_flat *b, const void *data,
                              size_t len)
{
    capture_flat_ref(b);
    return wfile_submit(f, (void *)data, len, false, b);
}

int capture_wfile_submit_buf(struct capture_wfile *f, struct tbuf *b)
{
    bool pooled = b->cap == CAPTURE_BUF_BYTES;
    void *data = b->data;
    size_t len = b->len;
    *b = (struct tbuf){0};
    return wfile_submit(f, data, len, pooled, NULL);
}

bool capture_wfile_failed(const struct capture_wfile *f)
{
    return __atomic_load_n(&f->failed, __ATOMIC_ACQUIRE);
}

bool capture_writer_behind(void)
{
    return __atomic_load_n(&g_held, __ATOMIC_RELAXED) > CAPTURE_WRITER_MAX_HELD ||
           __atomic_load_n(&g_creates, __ATOMIC_RELAXED) > CAPTURE_WRITER_MAX_CREATES;
}

bool capture_wfile_budget(const struct capture_wfile *f)
{
    return __atomic_load_n(&f->budget, __ATOMIC_ACQUIRE);
}

bool capture_wfile_create_failed(const struct capture_wfile *f)
{
    return __atomic_load_n(&f->create_failed, __ATOMIC_ACQUIRE);
}

const char *capture_wfile_path(const struct capture_wfile *f)
{
    return __atomic_load_n(&f->created, __ATOMIC_ACQUIRE) ? f->path : "";
}

size_t capture_wfile_backlog(const struct capture_wfile *f)
{
    return __atomic_load_n(&f->backlog, __ATOMIC_SEQ_CST);
}

void capture_wfile_close(struct capture_wfile *f)
{
    if (!f)
        return;
    struct wjob *job = malloc(sizeof(*job));
    if (!job) {
        /* Cannot queue: wait for the writer to finish this file's jobs, then close here. */
        capture_writer_sync();
        if (f->fd >= 0)
            close(f->fd);
        capture_store_finished(f->entry, NULL);
        if (f->pending_create)
            __atomic_sub_fetch(&g_creates, 1, __ATOMIC_RELAXED);
        __atomic_sub_fetch(&g_held, sizeof(*f) + f->path_size, __ATOMIC_RELAXED);
        capture_wchain_release(f->chain);
        free(f);
        return;
    }
    *job = (struct wjob){.kind = WJOB_CLOSE, .file = f};
    writer_push(job);
}

void capture_writer_sync(void)
{
    capture_writer_wake();
    pthread_mutex_lock(&g_writer.lock);
    pthread_cond_signal(&g_writer.wake); /* another thread's deferred jobs: waited for too */
    while (g_writer.started && (g_writer.head || g_writer.busy))
        pthread_cond_wait(&g_writer.idle, &g_writer.lock);
    pthread_mutex_unlock(&g_writer.lock);
}

uint64_t capture_writer_fence(void)
{
    pthread_mutex_lock(&g_writer.lock);
    uint64_t mark = g_writer.pushed;
    pthread_mutex_unlock(&g_writer.lock);
    return mark;
}

bool capture_writer_fence_passed(uint64_t mark)
{
    return __atomic_load_n(&g_writer.done, __ATOMIC_ACQUIRE) >= mark;
}

void capture_writer_shutdown(void)
{
    pthread_mutex_lock(&g_writer.lock);
    if (!g_writer.started) {
        pthread_mutex_unlock(&g_writer.lock);
        return;
    }
    g_writer.stop = true;
    pthread_cond_signal(&g_writer.wake);
    pthread_mutex_unlock(&g_writer.lock);
    pthread_join(g_writer.thread, NULL);
    pthread_mutex_lock(&g_writer.lock);
    g_writer.started = false;
    g_writer.stop = false;
    pthread_mutex_unlock(&g_writer.lock);
    pool_drain(&g_pool);
    pool_drain(&g_flat_pool);
    capture_hook_shutdown(); /* nothing queues hooks once the writer is gone */
}

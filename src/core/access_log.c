/* The access log writer (access_log.h).
 *
 * Design: one queue (a list of lines, each one allocation holding its path and bytes) behind one
 * mutex, bounded in bytes, and one writer thread that takes the whole list at once and writes
 * each run of lines for one file with one writev. A worker's cost per connection is a render
 * into a stack buffer, one malloc and a list append under the mutex.
 *
 * Rejected: per-worker buffers flushed by each worker (the write(2) would still run on the
 * worker, and a slow disk would stall the relay: socktap's rule is that disk never runs on the
 * hot path); one writer thread per file as Envoy has (threads grow with the config; one thread
 * serves socktap's volumes: a line per connection, not per request).
 *
 * Nothing is lost silently: a full queue, an unwritable file or a path past ACCESS_LOG_FILES_MAX
 * drops lines, counts them, and logs once when the state starts and once when it ends. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/access_log.h"
#include "core/log.h"
#include "core/stats.h"

#define AL_IOV_MAX 64

struct al_line {
    struct al_line *next;
    const char *path; /* points into data, after the line */
    size_t len;
    char data[];
};

struct al_file {
    char *path;
    int fd; /* -1: to open before the next write */
    bool failing;
};

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool running, stopping, full, registered;
    struct al_line *head, **tail;
    size_t queued;
    uint64_t dropped_full; /* since the queue became full (under lock) */
    unsigned reopen_seq;   /* atomic */
    /* the writer thread's own */
    struct al_file files[ACCESS_LOG_FILES_MAX];
    size_t nfiles;
    unsigned seen_reopen;
    bool table_full_logged;
    stat_id st_buffered, st_completed, st_failed, st_reopen_failed, st_dropped;
} al = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

void access_log_reopen(void)
{
    __atomic_add_fetch(&al.reopen_seq, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&al.lock);
    pthread_cond_signal(&al.cond);
    pthread_mutex_unlock(&al.lock);
}

void access_log_write(const char *path, const char *line, size_t len)
{
    size_t plen = strlen(path);
    struct al_line *l = NULL;
    pthread_mutex_lock(&al.lock);
    if (!al.running || al.stopping) {
        pthread_mutex_unlock(&al.lock);
        if (al.registered) /* else its id is not a stat's */
            stats_inc(al.st_dropped);
        return;
    }
    if (al.queued + len > ACCESS_LOG_QUEUE_MAX) {
        bool first = !al.full;
        al.full = true;
        al.dropped_full++;
        pthread_mutex_unlock(&al.lock);
        stats_inc(al.st_dropped);
        if (first)
            LOGW(LOG_NO_CONN,
                 "access log: %u bytes wait for the disk: dropping lines until it catches up "
                 "(counted in access_log_file.socktap_dropped)",
                 ACCESS_LOG_QUEUE_MAX);
        return;
    }
    pthread_mutex_unlock(&al.lock);
    l = malloc(sizeof(*l) + len + plen + 1);
    if (!l) {
        stats_inc(al.st_dropped);
        return;
    }
    memcpy(l->data, line, len);
    memcpy(l->data + len, path, plen + 1);
    l->path = l->data + len;
    l->len = len;
    l->next = NULL;
    pthread_mutex_lock(&al.lock);
    *al.tail = l;
    al.tail = &l->next;
    al.queued += len;
    pthread_cond_signal(&al.cond);
    pthread_mutex_unlock(&al.lock);
    stats_inc(al.st_buffered);
}

/* The writer's file for PATH, opened if needed; NULL when it cannot be (logged on the change). */
static struct al_file *al_file_get(const char *path)
{
    struct al_file *f = NULL;
    for (size_t i = 0; i < al.nfiles; i++)
        if (!strcmp(al.files[i].path, path)) {
            f = &al.files[i];
            break;
        }
    if (!f) {
        if (al.nfiles == ACCESS_LOG_FILES_MAX) {
            if (!al.table_full_logged)
                LOGE(LOG_NO_CONN,
                     "access log: more than %u files: lines for %s and later ones are dropped",
                     ACCESS_LOG_FILES_MAX, path);
            al.table_full_logged = true;
            return NULL;
        }
        char *copy = strdup(path);
        if (!copy)
            return NULL;
        f = &al.files[al.nfiles++];
        *f = (struct al_file){.path = copy, .fd = -1};
    }
    if (f->fd < 0) {
        f->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (f->fd < 0) {
            int err = errno;
            stats_inc(al.st_reopen_failed);
            if (!f->failing)
                LOGE(LOG_NO_CONN, "access log: cannot open %s: %s (its lines are dropped)", path,
                     strerror(err));
            f->failing = true;
            return NULL;
        }
    }
    return f;
}

/* Writes the run of lines from *RUN for one file (at most AL_IOV_MAX); returns the next run. */
static struct al_line *al_write_run(struct al_line *run)
{
    struct iovec iov[AL_IOV_MAX];
    int n = 0;
    struct al_line *l = run;
    for (; l && n < AL_IOV_MAX && !strcmp(l->path, run->path); l = l->next) {
        iov[n].iov_base = l->data;
        iov[n].iov_len = l->len;
        n++;
    }
    struct al_file *f = al_file_get(run->path);
    if (!f) {
        stats_add(al.st_failed, n);
        return l;
    }
    int idx = 0;
    while (idx < n) {
        ssize_t w = writev(f->fd, iov + idx, n - idx);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int err = errno;
            stats_add(al.st_failed, n - idx);
            if (!f->failing)
                LOGE(LOG_NO_CONN, "access log: write to %s failed: %s (its lines are dropped)",
                     f->path, strerror(err));
            f->failing = true;
            return l;
        }
        while (idx < n && (size_t)w >= iov[idx].iov_len) {
            w -= (ssize_t)iov[idx].iov_len;
            idx++;
        }
        if (idx < n) {
            iov[idx].iov_base = (char *)iov[idx].iov_base + w;
            iov[idx].iov_len -= (size_t)w;
        }
    }
    stats_add(al.st_completed, n);
    if (f->failing)
        LOGI(LOG_NO_CONN, "access log: writing to %s again", f->path);
    f->failing = false;
    return l;
}

static void al_close_files(void)
{
    for (size_t i = 0; i < al.nfiles; i++)
        if (al.files[i].fd >= 0) {
            close(al.files[i].fd);
            al.files[i].fd = -1;
        }
}

static void *al_writer_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "socktap-acclog");
    stats_bind_aux_thread();
    pthread_mutex_lock(&al.lock);
    for (;;) {
        while (!al.head && !al.stopping &&
               __atomic_load_n(&al.reopen_seq, __ATOMIC_ACQUIRE) == al.seen_reopen)
            pthread_cond_wait(&al.cond, &al.lock);
        struct al_line *batch = al.head;
        al.head = NULL;
        al.tail = &al.head;
        al.queued = 0;
        bool stop = al.stopping && !batch;
        pthread_mutex_unlock(&al.lock);

        unsigned seq = __atomic_load_n(&al.reopen_seq, __ATOMIC_ACQUIRE);
        if (seq != al.seen_reopen) {
            al.seen_reopen = seq;
            al_close_files(); /* re-opened by path at their next line (logrotate moved them) */
        }
        for (struct al_line *run = batch; run;) {
            struct al_line *next = al_write_run(run);
            while (run != next) {
                struct al_line *done = run;
                run = run->next;
                free(done);
            }
        }
        pthread_mutex_lock(&al.lock);
        if (al.full && al.queued < ACCESS_LOG_QUEUE_MAX / 2) {
            LOGI(LOG_NO_CONN, "access log: caught up with the disk; %llu line(s) were dropped",
                 (unsigned long long)al.dropped_full);
            al.full = false;
            al.dropped_full = 0;
        }
        if (stop)
            break;
    }
    pthread_mutex_unlock(&al.lock);
    al_close_files();
    return NULL;
}

int access_log_start(void)
{
    al.st_buffered = stats_register("access_log_file.write_buffered", STAT_COUNTER);
    al.st_completed = stats_register("access_log_file.write_completed", STAT_COUNTER);
    al.st_failed = stats_register("access_log_file.write_failed", STAT_COUNTER);
    al.st_reopen_failed = stats_register("access_log_file.reopen_failed", STAT_COUNTER);
    al.st_dropped = stats_register("access_log_file.socktap_dropped", STAT_COUNTER);
    al.registered = true;
    al.head = NULL;
    al.tail = &al.head;
    al.stopping = false;
    int rc = -pthread_create(&al.thread, NULL, al_writer_main, NULL);
    if (rc == 0)
        al.running = true;
    return rc;
}

void access_log_stop(void)
{
    pthread_mutex_lock(&al.lock);
    bool running = al.running;
    al.stopping = true;
    pthread_cond_signal(&al.cond);
    pthread_mutex_unlock(&al.lock);
    if (running)
        pthread_join(al.thread, NULL);
    al.running = false;
    for (size_t i = 0; i < al.nfiles; i++) {
        free(al.files[i].path);
        al.files[i].path = NULL;
    }
    al.nfiles = 0;
}

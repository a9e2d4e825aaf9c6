/* The per-prefix disk budget (see capture_store.h for the contract and the design).
 *
 * An account is two lists under its mutex: open files (any order) and finished files, oldest
 * first, so delete_oldest unlinks from the head and a file that finishes goes to the tail (the
 * startup scan enters existing traces sorted by mtime). Totals are kept with the lists, so a
 * charge is O(1) unless it deletes. The pause word is recomputed after every change and logged
 * only when a bit flips; the workers read it without the lock.
 *
 * Lifetime: an account is referenced by each attached config and each open file (the writer may
 * still hold a file of a config a reload has freed); it is freed, finished entries and all, with
 * its last reference. Lock order: the registry's lock, then an account's. */
#include "transport/capture_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/json_out.h"
#include "core/log.h"
#include "transport/capture_disk.h"

/* Finished files stat'ed per account per tick to notice deletions by others: at most this many
 * fstatat(2) calls a second on the main thread (cached inodes: ~1 us each), so an account of
 * 100000 files is reconciled within ~7 minutes, one of 1000 within 2 s. */
#define STORE_RECONCILE_PER_TICK 256
#define STORE_TICK_MS            1000
/* Memory per tracked file: ~140 bytes (entry, path, owner; measured: 100000 files, RSS 19.3 MB
 * against 5.6 MB without them). An account without a byte or file
 * budget only lists files (GET /captures), so it keeps the newest STORE_KEEP_UNLIMITED finished
 * ones and forgets older ones (not deleted: just no longer counted); one with max_total_bytes
 * and no max_files gets STORE_MAX_TRACKED as its max_files (~140 MB at most), so memory is
 * bounded by the configuration, never by the number of connections. */
#define STORE_KEEP_UNLIMITED 1000
#define STORE_MAX_TRACKED    1000000

struct capture_store_file {
    struct capture_store_file *prev, *next;
    struct capture_store *store;
    char *path; /* owned */
    uint64_t size, conn_id;
    int64_t since; /* realtime seconds: opened (open) or finished/mtime (finished) */
    bool open;
    char *kind;   /* points into owner[] */
    char owner[]; /* "owner\0kind\0" */
};

struct capture_store {
    struct capture_store *next; /* registry */
    unsigned refs;              /* registry lock */
    char *prefix;               /* owned */
    char *dir;                  /* owned: the prefix's directory (statvfs) */
    struct capture_cfg **cfgs;  /* attached configs (registry lock) */
    size_t ncfgs, cfgs_cap;
    pthread_mutex_t lock;
    /* the strictest of the attached configs' limits (registry lock + account lock to change) */
    uint64_t max_total, max_files, min_free;
    bool delete_oldest;
    uint64_t total, files, open_bytes, open_files;
    struct capture_store_file *open_head;
    struct capture_store_file *fin_head, *fin_tail;
    struct capture_store_file *cursor; /* next finished file the reconcile looks at */
    uint64_t free_bytes;
    bool free_known;
    bool refused;       /* a charge or create was refused since the last state computation */
    bool unlink_logged; /* a failed unlink was logged (once per account) */
    unsigned paused;    /* atomic: CAPTURE_PAUSE_* */
};

static pthread_mutex_t g_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct capture_store *g_stores;
static struct event *g_timer; /* main thread */
static bool g_started;        /* main thread: gauges set, timer running */

static int64_t now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts.tv_sec;
}

static void list_unlink(struct capture_store_file **head, struct capture_store_file **tail,
                        struct capture_store_file *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        *head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else if (tail)
        *tail = f->prev;
    f->prev = f->next = NULL;
}

static void fin_append(struct capture_store *s, struct capture_store_file *f)
{
    f->prev = s->fin_tail;
    f->next = NULL;
    if (s->fin_tail)
        s->fin_tail->next = f;
    else
        s->fin_head = f;
    s->fin_tail = f;
}

static void file_free(struct capture_store_file *f)
{
    free(f->path);
    free(f);
}

/* Removes finished F from the account (deleted by us or by someone else). */
static void fin_remove_locked(struct capture_store *s, struct capture_store_file *f)
{
    if (s->cursor == f)
        s->cursor = f->next;
    list_unlink(&s->fin_head, &s->fin_tail, f);
    s->total -= f->size;
    s->files--;
    file_free(f);
}

static struct capture_store_file *file_new(const char *path, uint64_t conn_id, const char *owner,
                                           const char *kind)
{
    size_t olen = strlen(owner) + 1, klen = strlen(kind) + 1;
    struct capture_store_file *f = calloc(1, sizeof(*f) + olen + klen);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return NULL;
    }
    memcpy(f->owner, owner, olen);
    f->kind = f->owner + olen;
    memcpy(f->kind, kind, klen);
    f->conn_id = conn_id;
    return f;
}

/* An account without a budget forgets its oldest finished files past STORE_KEEP_UNLIMITED. */
static void forget_locked(struct capture_store *s)
{
    while (!s->max_total && !s->max_files && s->files - s->open_files > STORE_KEEP_UNLIMITED)
        fin_remove_locked(s, s->fin_head);
}

static const char *pause_names[] = {"max_total_bytes", "max_files", "min_free_bytes"};

/* Recomputes the pause word; logs each bit that flipped. Account lock held. */
static void state_locked(struct capture_store *s)
{
    unsigned old = __atomic_load_n(&s->paused, __ATOMIC_RELAXED), p = 0;
    if (s->max_total) {
        /* delete_oldest frees finished bytes on demand: only open ones can hold the budget */
        uint64_t held = s->delete_oldest ? s->open_bytes : s->total;
        /* resume under 90%: a budget hovering at its edge must not flap (and log) per file */
        if (s->refused || held >= s->max_total ||
            ((old & CAPTURE_PAUSE_TOTAL) && held >= s->max_total / 10 * 9))
            p |= CAPTURE_PAUSE_TOTAL;
    }
    if (s->max_files) {
        uint64_t held = s->delete_oldest ? s->open_files : s->files;
        if (held >= s->max_files)
            p |= CAPTURE_PAUSE_FILES;
    }
    if (s->min_free && s->free_known && s->free_bytes < s->min_free)
        p |= CAPTURE_PAUSE_FREE;
    s->refused = false;
    if (p == old)
        return;
    __atomic_store_n(&s->paused, p, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < 3; i++) {
        unsigned bit = 1u << i;
        if ((p & bit) && !(old & bit))
            LOGW(LOG_NO_CONN,
                 "capture paused for prefix %s: %s reached (%" PRIu64 " bytes in %" PRIu64
                 " files, %" PRIu64 " open; free %" PRIu64 "); new connections are proxied "
                 "uncaptured (counted in <owner>.<kind>.budget_skipped)",
                 s->prefix, pause_names[i], s->total, s->files, s->open_files, s->free_bytes);
        else if (!(p & bit) && (old & bit))
            LOGI(LOG_NO_CONN,
                 "capture resumed for prefix %s: under %s again (%" PRIu64 " bytes in %" PRIu64
                 " files; free %" PRIu64 ")",
                 s->prefix, pause_names[i], s->total, s->files, s->free_bytes);
    }
}

static void count(const struct capture_store_stats *st, stat_id id)
{
    if (!st->has_stats)
        return;
    if (!stats_tls)
        stats_bind_aux_thread();
    stats_inc(id);
}

/* delete_oldest: unlinks the oldest finished file. Returns false when there is none. */
static bool delete_oldest_locked(struct capture_store *s, const struct capture_store_stats *st)
{
    struct capture_store_file *f = s->fin_head;
    if (!f)
        return false;
    /* unlink(2) does not follow a symlink put in the file's place: it removes the link */
    if (unlink(f->path) != 0 && errno != ENOENT && !s->unlink_logged) {
        s->unlink_logged = true;
        LOGW(LOG_NO_CONN,
             "capture: delete_oldest cannot remove %s: %s; it no longer counts in the budget of "
             "%s (further failures are not logged)",
             f->path, strerror(errno), s->prefix);
    }
    LOGD(f->conn_id, "capture: delete_oldest removed %s (%" PRIu64 " bytes)", f->path, f->size);
    fin_remove_locked(s, f);
    count(st, st->budget_deleted);
    return true;
}

int capture_store_reserve(struct capture_store *s, const struct capture_store_stats *st)
{
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (s->max_files && s->files >= s->max_files && s->delete_oldest &&
           delete_oldest_locked(s, st))
        ;
    if (s->max_files && s->files >= s->max_files) {
        s->refused = true;
        rc = -EDQUOT;
    }
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static void store_ref(struct capture_store *s)
{
    pthread_mutex_lock(&g_reg_lock);
    s->refs++;
    pthread_mutex_unlock(&g_reg_lock);
}

static void store_free(struct capture_store *s)
{
    while (s->fin_head)
        fin_remove_locked(s, s->fin_head);
    pthread_mutex_destroy(&s->lock);
    free(s->cfgs);
    free(s->dir);
    free(s->prefix);
    free(s);
}

/* Drops a reference; the last one unlinks S from the registry and frees it. Registry lock held. */
static void store_unref_locked(struct capture_store *s)
{
    if (--s->refs)
        return;
    for (struct capture_store **pp = &g_stores; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    store_free(s);
}

int capture_store_add(struct capture_store *s, const char *path, uint64_t conn_id,
                      const char *owner, const char *kind, struct capture_store_file **out)
{
    struct capture_store_file *f = file_new(path, conn_id, owner, kind);
    *out = f;
    if (!f)
        return -ENOMEM;
    store_ref(s);
    f->store = s;
    f->open = true;
    f->since = now_sec();
    pthread_mutex_lock(&s->lock);
    f->next = s->open_head;
    if (s->open_head)
        s->open_head->prev = f;
    s->open_head = f;
    s->files++;
    s->open_files++;
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

int capture_store_charge(struct capture_store_file *f, uint64_t len,
                         const struct capture_store_stats *st)
{
    if (!f)
        return 0;
    struct capture_store *s = f->store;
    int rc = 0;
    pthread_mutex_lock(&s->lock);
    while (s->max_total && s->total + len > s->max_total && s->delete_oldest &&
           delete_oldest_locked(s, st))
        ;
    if (s->max_total && s->total + len > s->max_total) {
        s->refused = true;
        count(st, st->budget_stopped);
        rc = -EDQUOT;
    } else {
        s->total += len;
        s->open_bytes += len;
        f->size += len;
    }
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void capture_store_uncharge(struct capture_store_file *f, uint64_t len)
{
    if (!f)
        return;
    struct capture_store *s = f->store;
    pthread_mutex_lock(&s->lock);
    if (len > f->size)
        len = f->size;
    f->size -= len;
    s->total -= len;
    s->open_bytes -= len;
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
}

void capture_store_finished(struct capture_store_file *f, const char *path)
{
    if (!f)
        return;
    struct capture_store *s = f->store;
    char *moved = path ? strdup(path) : NULL;
    pthread_mutex_lock(&s->lock);
    list_unlink(&s->open_head, NULL, f);
    s->open_files--;
    s->open_bytes -= f->size;
    f->open = false;
    f->since = now_sec();
    if (moved) {
        free(f->path);
        f->path = moved;
    }
    fin_append(s, f);
    forget_locked(s);
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&g_reg_lock);
    store_unref_locked(s);
    pthread_mutex_unlock(&g_reg_lock);
}

bool capture_store_admit(const struct capture_store *s)
{
    return __atomic_load_n(&s->paused, __ATOMIC_RELAXED) == 0;
}

unsigned capture_store_paused(const struct capture_store *s)
{
    return __atomic_load_n(&s->paused, __ATOMIC_RELAXED);
}

static int by_since(const void *a, const void *b)
{
    const struct capture_store_file *x = *(struct capture_store_file *const *)a;
    const struct capture_store_file *y = *(struct capture_store_file *const *)b;
    return x->since < y->since ? -1 : x->since > y->since;
}

/* The existing traces of a new account, gathered from its directories before they are
 * entered oldest first: at most 2 * KEEP at a time (the newest KEEP are kept), so a huge
 * directory costs bounded memory. */
struct store_scan {
    struct capture_store_file **found;
    size_t n, cap, keep;
};

static void scan_keep_newest(struct store_scan *sc)
{
    if (sc->n > 1)
        qsort(sc->found, sc->n, sizeof(*sc->found), by_since);
    if (sc->n <= sc->keep)
        return;
    size_t drop = sc->n - sc->keep;
    for (size_t i = 0; i < drop; i++)
        file_free(sc->found[i]);
    memmove(sc->found, sc->found + drop, sc->keep * sizeof(*sc->found));
    sc->n = sc->keep;
}

/* Gathers the traces of S's basename in DIR (regular files only: a symlink or a directory of
 * that name is not ours to count or delete). Returns 0 or -errno (a missing DIR is 0). */
static int scan_dir(const struct capture_store *s, struct store_scan *sc, const char *dir)
{
    const char *slash = strrchr(s->prefix, '/');
    const char *base = slash ? slash + 1 : s->prefix;
    int rc = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        uint64_t id;
        struct stat st;
        char path[4096];
        if (!capture_trace_name_id(base, de->d_name, &id) ||
            fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            continue;
        int len = snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        if (len < 0 || (size_t)len >= sizeof(path))
            continue;
        if (sc->n == 2 * sc->keep)
            scan_keep_newest(sc);
        if (sc->n == sc->cap) {
            size_t ncap = sc->cap ? sc->cap * 2 : 64;
            void *p = realloc(sc->found, ncap * sizeof(*sc->found));
            if (!p) {
                rc = -ENOMEM;
                break;
            }
            sc->found = p;
            sc->cap = ncap;
        }
        struct capture_store_file *f = file_new(path, id, "", "");
        if (!f) {
            rc = -ENOMEM;
            break;
        }
        f->size = (uint64_t)st.st_size;
        f->since = (int64_t)st.st_mtime;
        sc->found[sc->n++] = f;
    }
    closedir(d);
    return rc;
}

/* Enters what SC gathered into the new account S, oldest first, and frees SC. */
static void scan_enter(struct capture_store *s, struct store_scan *sc)
{
    scan_keep_newest(sc);
    for (size_t i = 0; i < sc->n; i++) {
        sc->found[i]->store = s;
        fin_append(s, sc->found[i]);
        s->total += sc->found[i]->size;
        s->files++;
    }
    free(sc->found);
    if (sc->n)
        LOGI(LOG_NO_CONN,
             "capture: prefix %s: %zu existing traces (%" PRIu64 " bytes) count in its budget",
             s->prefix, sc->n, s->total);
}

static uint64_t min_nz(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* The strictest limits of S's configs. Registry lock held. */
static void store_limits(struct capture_store *s)
{
    uint64_t total = 0, files = 0, free_floor = 0;
    bool del = s->ncfgs > 0;
    for (size_t i = 0; i < s->ncfgs; i++) {
        const struct capture_limits *l = &s->cfgs[i]->limits;
        total = min_nz(total, l->max_total_bytes);
        files = min_nz(files, l->max_files);
        if (l->min_free_bytes > free_floor)
            free_floor = l->min_free_bytes;
        del &= l->policy == CAPTURE_POLICY_DELETE_OLDEST;
    }
    pthread_mutex_lock(&s->lock);
    s->max_total = total;
    s->max_files = files ? files : total ? STORE_MAX_TRACKED : 0;
    s->min_free = free_floor;
    s->delete_oldest = del;
    forget_locked(s);
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
}

/* statvfs of S's directory (the free space an unprivileged writer may use). */
static void store_statvfs(struct capture_store *s)
{
    struct statvfs v;
    bool ok = s->min_free && statvfs(s->dir, &v) == 0;
    pthread_mutex_lock(&s->lock);
    s->free_known = ok;
    if (ok)
        s->free_bytes = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
}

static void set_enabled_gauge(const struct capture_cfg *cfg)
{
    stats_add(cfg->stats.enabled, __atomic_load_n(&cfg->rt->enabled, __ATOMIC_RELAXED) ? 1 : 0);
}

int capture_store_attach(struct capture_cfg *cfg)
{
    struct capture_store *s;
    char dir[4096];
    int rc = -ENOMEM;
    pthread_mutex_lock(&g_reg_lock);
    for (s = g_stores; s && strcmp(s->prefix, cfg->path_prefix); s = s->next)
        ;
    if (!s) {
        if ((rc = capture_prefix_dir(cfg->path_prefix, dir, sizeof(dir))) ||
            !(s = calloc(1, sizeof(*s))))
            goto err_unlock;
        pthread_mutex_init(&s->lock, NULL);
        if (!(s->prefix = strdup(cfg->path_prefix)) || !(s->dir = strdup(dir))) {
            store_free(s);
            rc = -ENOMEM;
            goto err_unlock;
        }
        /* a directory we cannot read leaves its old traces uncounted: said, not fatal */
        const struct capture_limits *l = &cfg->limits;
        struct store_scan sc = {.keep = l->max_total_bytes || l->max_files ? STORE_MAX_TRACKED
                                                                           : STORE_KEEP_UNLIMITED};
        if ((rc = scan_dir(s, &sc, dir)) ||
            (l->finished_dir && (rc = scan_dir(s, &sc, l->finished_dir))))
            LOGW(LOG_NO_CONN, "capture: cannot count all the existing traces of %s: %s", s->prefix,
                 strerror(-rc));
        scan_enter(s, &sc);
        s->next = g_stores;
        g_stores = s;
    }
    if (s->ncfgs == s->cfgs_cap) {
        size_t ncap = s->cfgs_cap ? s->cfgs_cap * 2 : 4;
        void *p = realloc(s->cfgs, ncap * sizeof(*s->cfgs));
        if (!p) {
            rc = -ENOMEM;
            if (!s->refs) /* just made: nobody else knows it */
                store_unref_locked((s->refs = 1, s));
            goto err_unlock;
        }
        s->cfgs = p;
        s->cfgs_cap = ncap;
    }
    s->cfgs[s->ncfgs++] = cfg;
    s->refs++;
    cfg->store = s;
    store_limits(s);
    if (s->min_free)
        store_statvfs(s);
    if (g_started)
        set_enabled_gauge(cfg);
    pthread_mutex_unlock(&g_reg_lock);
    return 0;

err_unlock:
    pthread_mutex_unlock(&g_reg_lock);
    return rc;
}

void capture_store_detach(struct capture_cfg *cfg)
{
    struct capture_store *s = cfg->store;
    if (!s)
        return;
    pthread_mutex_lock(&g_reg_lock);
    for (size_t i = 0; i < s->ncfgs; i++)
        if (s->cfgs[i] == cfg) {
            s->cfgs[i] = s->cfgs[--s->ncfgs];
            break;
        }
    if (s->ncfgs)
        store_limits(s);
    /* a config replaced by a reload leaves the gauge to its successor (same stat name) */
    if (g_started && __atomic_load_n(&cfg->rt->enabled, __ATOMIC_RELAXED))
        stats_add(cfg->stats.enabled, -1);
    cfg->store = NULL;
    store_unref_locked(s);
    pthread_mutex_unlock(&g_reg_lock);
}

/* Forgets finished files of S that are gone (or no longer regular files): at most
 * STORE_RECONCILE_PER_TICK of them per call, from where the last call stopped. */
static void store_reconcile(struct capture_store *s)
{
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < STORE_RECONCILE_PER_TICK && s->fin_head; i++) {
        struct capture_store_file *f = s->cursor ? s->cursor : s->fin_head;
        struct stat st;
        s->cursor = f->next;
        if (fstatat(AT_FDCWD, f->path, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
            fin_remove_locked(s, f);
        if (!s->cursor)
            break; /* one pass per tick at most */
    }
    state_locked(s);
    pthread_mutex_unlock(&s->lock);
}

void capture_store_tick(void)
{
    pthread_mutex_lock(&g_reg_lock);
    for (struct capture_store *s = g_stores; s; s = s->next) {
        store_statvfs(s);
        store_reconcile(s);
    }
    pthread_mutex_unlock(&g_reg_lock);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    capture_store_tick();
}

void capture_store_start(struct event_base *base)
{
    if (g_started)
        return;
    g_started = true;
    pthread_mutex_lock(&g_reg_lock);
    for (struct capture_store *s = g_stores; s; s = s->next)
        for (size_t i = 0; i < s->ncfgs; i++)
            set_enabled_gauge(s->cfgs[i]);
    pthread_mutex_unlock(&g_reg_lock);
    static const struct timeval tv = {.tv_sec = STORE_TICK_MS / 1000};
    g_timer = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    if (!g_timer || event_add(g_timer, &tv) != 0)
        LOGE(LOG_NO_CONN,
             "capture: no timer for min_free_bytes and the budget's reconcile: out of memory");
}

void capture_store_stop(void)
{
    if (g_timer)
        event_free(g_timer);
    g_timer = NULL;
    g_started = false;
}

static void json_file(FILE *out, const struct capture_store_file *f, int64_t now, bool *first)
{
    fputs(*first ? "\n    " : ",\n    ", out);
    *first = false;
    fputs("{\"path\": ", out);
    json_out_string(out, f->path);
    fprintf(out, ", \"size\": %" PRIu64 ", \"connection_id\": %" PRIu64 ", \"state\": \"%s\"",
            f->size, f->conn_id, f->open ? "open" : "finished");
    fprintf(out, ", \"age_seconds\": %" PRId64, now > f->since ? now - f->since : 0);
    if (*f->owner) {
        fputs(", \"owner\": ", out);
        json_out_string(out, f->owner);
        fputs(", \"kind\": ", out);
        json_out_string(out, f->kind);
    }
    fputc('}', out);
}

static void json_store_locked(FILE *out, const struct capture_store *s, size_t max_finished)
{
    unsigned p = capture_store_paused(s);
    int64_t now = now_sec();
    fputs("  {\"path_prefix\": ", out);
    json_out_string(out, s->prefix);
    fprintf(out,
            ", \"total_bytes\": %" PRIu64 ", \"files\": %" PRIu64 ", \"open_files\": %" PRIu64
            ", \"max_total_bytes\": %" PRIu64 ", \"max_files\": %" PRIu64
            ", \"min_free_bytes\": %" PRIu64 ", \"policy\": \"%s\"",
            s->total, s->files, s->open_files, s->max_total, s->max_files, s->min_free,
            s->delete_oldest ? "delete_oldest" : "stop_new");
    if (s->free_known)
        fprintf(out, ", \"free_bytes\": %" PRIu64, s->free_bytes);
    fprintf(out, ", \"capturing\": %s, \"paused_by\": [", p ? "false" : "true");
    for (unsigned i = 0, n = 0; i < 3; i++)
        if (p & (1u << i))
            fprintf(out, "%s\"%s\"", n++ ? ", " : "", pause_names[i]);
    fputs("],\n   \"traces\": [", out);
    bool first = true;
    for (const struct capture_store_file *f = s->open_head; f; f = f->next)
        json_file(out, f, now, &first);
    size_t shown = 0;
    const struct capture_store_file *f = s->fin_tail;
    for (; f && shown < max_finished; f = f->prev, shown++)
        json_file(out, f, now, &first);
    uint64_t finished = s->files - s->open_files;
    fprintf(out, "],\n   \"finished_not_listed\": %" PRIu64 "}", finished - shown);
}

int capture_store_write_json(FILE *out, size_t max_finished)
{
    fputs("{\"prefixes\": [\n", out);
    pthread_mutex_lock(&g_reg_lock);
    for (struct capture_store *s = g_stores; s; s = s->next) {
        pthread_mutex_lock(&s->lock);
        json_store_locked(out, s, max_finished);
        pthread_mutex_unlock(&s->lock);
        fputs(s->next ? ",\n" : "\n", out);
    }
    pthread_mutex_unlock(&g_reg_lock);
    fputs("]}\n", out);
    return ferror(out) ? -EIO : 0;
}

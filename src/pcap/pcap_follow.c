/* The live follower (see pcap_follow.h).
 *
 * One thread, one poll(2) over an inotify descriptor, a signalfd and the output descriptor
 * (POLLERR: the pipe's reader is gone). Each input's directory is watched once with
 * IN_CREATE/IN_MOVED_TO (a new trace), IN_MODIFY (it grew) and IN_CLOSE_WRITE (its writer is
 * done: socktap and Envoy open a trace once and close it when the connection ends). Every
 * second every open trace is also re-read, for growth inotify cannot report (network file
 * systems) or did not (a full event queue); an idle trace costs one read(2) returning 0.
 *
 * A trace that existed before the follower started may be finished already, and its close
 * happened before we watched: a read lease (F_SETLEASE F_RDLCK) can only be taken on a file
 * nobody has open for writing, so taking and dropping one tells "still written" from "done"
 * exactly. Where leases are not permitted (another user's files without CAP_LEASE) the trace
 * is followed until its close or its v3 `closed` event, and a note says so. SIGIO (the lease
 * break signal) is ignored meanwhile: a writer opening the file during those microseconds
 * must not kill us. Rejected: scanning /proc/<pid>/fd of every process (slow, needs
 * privileges too) and "unchanged for N seconds" (an idle keep-alive connection is unchanged).
 *
 * Finished traces are forgotten, so a trace that is reported by inotify after it was forgotten
 * must not come back: only IN_CREATE/IN_MOVED_TO (and the initial scan) add traces; a close or
 * a change of an unknown file is ignored. After an inotify queue overflow a rescan adds the
 * traces still being written that we do not know; one that started and ended inside the
 * overflow is reported as possibly missed (and makes the exit status non-zero).
 *
 * Open traces are kept in a hash table by path (and a list for the poll re-read). Past
 * max_open, new traces wait in the same table without a reader, in arrival order, and are
 * opened as others finish: the data is on disk, so waiting delays it and never loses it.
 *
 * Rotated traces (socktap_limits rotate_bytes/rotate_seconds): a piece's end is no connection's
 * end, and nothing in a v2 trace tells the two apart (a v3 trace's `closed` event does). So the
 * flows of a trace that ends without a `closed` event are parked for FOLLOW_PIECE_GRACE_MS
 * before their FINs: a new trace whose connection (id, addresses, capture owner) is a parked
 * one continues that flow (no second handshake, continuous sequence numbers). socktap starts
 * the next piece with the connection's next event, so a bulk transfer's pieces continue; a
 * connection idle for longer than the grace gets its FINs and its next piece is a new flow.
 * The cost for every other connection: its FINs appear up to two poll rounds later. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pcap/pcap_follow.h"

#define FOLLOW_BUCKETS        4096
#define FOLLOW_POLL_MS        1000
#define FOLLOW_FD_RESERVE     32
#define FOLLOW_MAX_OPEN       65536
#define FOLLOW_INOTIFY_BUF    (64 * 1024)
#define FOLLOW_PIECE_GRACE_MS 1000
#define FOLLOW_WATCH_MASK                                                                          \
    (IN_CREATE | IN_MOVED_TO | IN_MODIFY | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF |        \
     IN_ONLYDIR)

enum follow_kind { FOLLOW_DIR, FOLLOW_FILE, FOLLOW_GLOB };

struct follow_spec {
    enum follow_kind kind;
    char *dir;  /* owned; the directory watched */
    char *name; /* owned; FILE: the base name, GLOB: the pattern, DIR: NULL */
    int wd;
};

#define FOLLOW_GONE 256

struct follow_file {
    struct follow_file *hnext;       /* hash chain */
    struct follow_file *prev, *next; /* open list, or wait queue */
    char *path;                      /* owned */
    dev_t dev;                       /* the file followed (a name may be reused) */
    ino_t ino;
    struct pcap_input in; /* in.path borrows path; in.reader NULL while waiting */
    bool open;            /* has a reader */
    bool live;            /* its writer may still append: reader in follow mode */
    bool closed_seen;     /* IN_CLOSE_WRITE arrived while it waited */
    bool ended;           /* v3 `closed` event read */
    bool whole_noted;     /* "text waits for the end" said */
    uint64_t keylog_off;  /* bytes of <path>.keylog embedded so far (pcapng) */
};

struct follow_list {
    struct follow_file *head, *tail;
    size_t n;
};

/* A flow whose trace ended without a `closed` event: maybe continued by a next piece. */
struct follow_parked {
    struct pcap_conn_flow cf;
    uint32_t ifindex;
    int64_t at_ms;
};

struct follow {
    struct pcap_writer *w;
    const struct pcap_follow_opts *opts;
    FILE *err;
    struct pcap_follow_stats st;
    bool bad;
    int ifd; /* inotify */
    struct follow_spec *specs;
    size_t nspecs;
    struct follow_file *buckets[FOLLOW_BUCKETS];
    /* the last files finished and forgotten: an IN_CREATE still queued for one (the scan at
     * start found it first, and it finished before the event was read) must not read it again
     * (seen under load: a rotated trace's first piece twice in the live pcap) */
    struct {
        dev_t dev;
        ino_t ino;
        struct timespec mtime; /* an inode reused by a new trace has another */
    } gone[FOLLOW_GONE];
    size_t ngone;
    struct follow_list open, waiting;
    struct pcap_owners owners;
    size_t max_open;
    size_t index; /* arrival number of the next trace */
    bool lease_noted, limit_noted, wait_noted;
    struct follow_parked *parked;
    size_t nparked, capparked;
    bool out_reg; /* the output is a regular file (out_dev, out_ino): never followed itself */
    dev_t out_dev;
    ino_t out_ino;
};

static void follow_list_add(struct follow_list *l, struct follow_file *f)
{
    f->next = NULL;
    f->prev = l->tail;
    if (l->tail)
        l->tail->next = f;
    else
        l->head = f;
    l->tail = f;
    l->n++;
}

static void follow_list_del(struct follow_list *l, struct follow_file *f)
{
    if (f->prev)
        f->prev->next = f->next;
    else
        l->head = f->next;
    if (f->next)
        f->next->prev = f->prev;
    else
        l->tail = f->prev;
    f->prev = f->next = NULL;
    l->n--;
}

static struct follow_file **follow_slot(struct follow *fl, const char *path)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = path; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    struct follow_file **pp = &fl->buckets[h % FOLLOW_BUCKETS];
    while (*pp && strcmp((*pp)->path, path) != 0)
        pp = &(*pp)->hnext;
    return pp;
}

/* The trace extensions socktap and Envoy write (trace_format_extension). */
static bool follow_is_trace_name(const char *name)
{
    static const char *const exts[] = {".pb", ".pb_text", ".pb_length_delimited", ".json"};
    size_t n = strlen(name);
    if (name[0] == '.')
        return false; /* hidden, and the tools' own temporary files */
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        size_t k = strlen(exts[i]);
        if (n > k && strcmp(name + n - k, exts[i]) == 0)
            return true;
    }
    return false;
}

static bool follow_spec_matches(const struct follow_spec *s, const char *name)
{
    switch (s->kind) {
    case FOLLOW_DIR:
        return follow_is_trace_name(name);
    case FOLLOW_FILE:
        return strcmp(s->name, name) == 0;
    default:
        return fnmatch(s->name, name, FNM_PERIOD) == 0;
    }
}

/* Whether PATH is open for writing by anyone: 1 yes, 0 no, -errno when leases cannot tell. */
static int follow_being_written(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    int ret = 0;
    if (fcntl(fd, F_SETLEASE, F_RDLCK) == 0)
        (void)fcntl(fd, F_SETLEASE, F_UNLCK);
    else
        ret = errno == EAGAIN ? 1 : -errno;
    close(fd);
    return ret;
}

static int follow_write_failed(struct follow *fl, int ret)
{
    struct pollfd p = {.fd = fl->opts->out_fd, .events = 0};
    if (fl->opts->out_fd >= 0 && poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP))) {
        fl->st.output_gone = true;
        return -EPIPE;
    }
    return ret;
}

/* Forgets F: reader, flows, descriptor, its place in the table (remembered in FL->gone). */
static void follow_forget(struct follow *fl, struct follow_file *f)
{
    struct stat st;
    if (stat(f->path, &st) == 0 && st.st_dev == f->dev && st.st_ino == f->ino) {
        fl->gone[fl->ngone % FOLLOW_GONE].dev = f->dev;
        fl->gone[fl->ngone % FOLLOW_GONE].ino = f->ino;
        fl->gone[fl->ngone % FOLLOW_GONE].mtime = st.st_mtim;
        fl->ngone++;
    }
    struct follow_file **pp = follow_slot(fl, f->path);
    *pp = f->hnext;
    follow_list_del(f->open ? &fl->open : &fl->waiting, f);
    pcap_input_free(&f->in);
    free(f->path);
    free(f);
}

static int64_t follow_now_ms(void);

/* F's trace ends without a `closed` event: its chainable flows (pcap_conn_chainable) wait in
 * FL->parked for a next piece instead of being finished now. */
static void follow_park(struct follow *fl, struct follow_file *f)
{
    struct pcap_input *in = &f->in;
    for (size_t i = 0; i < in->nflows;) {
        if (!pcap_conn_chainable(&in->flows[i].conn) || !in->flows[i].flow.opened) {
            i++;
            continue;
        }
        if (fl->nparked == fl->capparked) {
            size_t cap = fl->capparked ? 2 * fl->capparked : 8;
            struct follow_parked *p = realloc(fl->parked, cap * sizeof(*p));
            if (!p)
                return; /* finished now instead: nothing lost but the continuation */
            fl->parked = p;
            fl->capparked = cap;
        }
        fl->parked[fl->nparked++] = (struct follow_parked){
            .cf = in->flows[i], .ifindex = in->ifindex, .at_ms = follow_now_ms()};
        in->nflows--;
        memmove(in->flows + i, in->flows + i + 1, (in->nflows - i) * sizeof(*in->flows));
    }
    in->cur = NULL;
}

/* CF, just created in F for its first event, continues a parked flow of the same connection
 * and owner if there is one. Returns true if it did. */
static bool follow_unpark(struct follow *fl, struct follow_file *f, struct pcap_conn_flow *cf)
{
    for (size_t i = 0; i < fl->nparked; i++) {
        struct follow_parked *p = &fl->parked[i];
        if (p->ifindex != f->in.ifindex || !pcap_conn_same(&p->cf.conn, &cf->conn))
            continue;
        pcap_flow_release(&cf->flow);
        cf->flow = p->cf.flow;
        fl->parked[i] = fl->parked[--fl->nparked];
        return true;
    }
    return false;
}

/* FINs for the parked flows older than the grace (all of them with ALL). Returns 0 or the
 * writer's -errno. */
static int follow_expire_parked(struct follow *fl, bool all)
{
    int64_t now = follow_now_ms();
    bool wrote = false;
    int ret = 0;
    for (size_t i = 0; i < fl->nparked && !ret;) {
        struct follow_parked *p = &fl->parked[i];
        if (!all && now - p->at_ms < FOLLOW_PIECE_GRACE_MS) {
            i++;
            continue;
        }
        ret = pcap_flow_finish(&p->cf.flow, fl->w);
        pcap_flow_release(&p->cf.flow);
        fl->parked[i] = fl->parked[--fl->nparked];
        wrote = true;
    }
    return !ret && wrote ? pcap_writer_flush(fl->w) : ret;
}

/* The end of F's trace (RC: the reader's last result): reported, flows finished (FINs; parked
 * first unless it saw its `closed` event), forgotten. Returns 0 or the writer's -errno. */
static int follow_end(struct follow *fl, struct follow_file *f, int rc)
{
    bool bad = false;
    if (!f->ended)
        follow_park(fl, f);
    int ret = pcap_input_end(&f->in, rc, fl->w, &fl->opts->conv, fl->err, &bad);
    if (bad) {
        fl->bad = true;
        fl->st.errors++;
    }
    fl->st.finished++;
    follow_forget(fl, f);
    if (!ret)
        ret = pcap_writer_flush(fl->w);
    return ret;
}

#define FOLLOW_KEYLOG_STEP (1u << 20)

/* pcapng: a TLS wire trace's key log (`<trace>.keylog`) grows with its handshake, possibly
 * after the follower opened the trace. socktap hands a key-log line to its writer thread when
 * OpenSSL derives the secret, and the records it protects only later (the worker's 5 ms tick),
 * so once an event has been read from the trace, the key log already holds the keys for it:
 * looked at after every event read and before its packets, the whole lines it gained go out
 * as a Decryption Secrets Block ahead of those packets, where Wireshark needs them (it derives
 * a TLS session's keys at the handshake, not later). Rejected: looking before reading the
 * trace (a ServerHello read in the same pass went out before its keys; seen under ASan).
 * Returns 0 or -errno (output). */
static int follow_keylog(struct follow *fl, struct follow_file *f)
{
    char path[PATH_MAX];
    struct stat st;
    int ret = 0;

    if (!pcap_writer_is_pcapng(fl->w) || fl->opts->conv.no_secrets)
        return 0;
    int k = snprintf(path, sizeof(path), "%s.keylog", f->path);
    if (k < 0 || (size_t)k >= sizeof(path))
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* none (yet): a TLS handshake logs its first secret later */
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size <= f->keylog_off)
        goto out_close;
    uint64_t n = (uint64_t)st.st_size - f->keylog_off;
    size_t len = n < FOLLOW_KEYLOG_STEP ? (size_t)n : FOLLOW_KEYLOG_STEP;
    char *buf = malloc(len);
    if (!buf) {
        ret = -ENOMEM;
        goto out_close;
    }
    ssize_t got = pread(fd, buf, len, (off_t)f->keylog_off);
    while (got > 0 && buf[got - 1] != '\n')
        got--; /* a line being written: the rest comes next time */
    if (got > 0) {
        ret = pcap_writer_secrets(fl->w, PCAPNG_SECRETS_TLS_KEYLOG, buf, (size_t)got);
        f->keylog_off += (uint64_t)got;
    }
    free(buf);
out_close:
    close(fd);
    return ret;
}

/* Converts everything F's reader has now. Returns 0 (F may be forgotten) or -errno. */
static int follow_drain(struct follow *fl, struct follow_file *f)
{
    for (;;) {
        const struct trace_conn *conn = NULL;
        int rc = trace_reader_next(f->in.reader, &f->in.ev, &conn);
        if (rc == 1) {
            size_t before = f->in.nflows;
            f->in.cur = pcap_input_flow(&f->in, conn, fl->w, &fl->opts->conv, fl->err);
            if (!f->in.cur)
                return -ENOMEM;
            if (f->in.nflows > before && follow_unpark(fl, f, f->in.cur))
                before++; /* a rotated trace's next piece: the same connection */
            fl->st.connections += f->in.nflows - before;
            /* after the read: a key is on disk before the records it protects are */
            int ret = follow_keylog(fl, f);
            ret = ret ? ret : pcap_flow_event(&f->in.cur->flow, fl->w, &f->in.ev);
            ret = ret ? ret : pcap_writer_flush(fl->w);
            if (ret)
                return ret;
            fl->st.events++;
            fl->st.bytes += f->in.ev.len;
            f->ended |= f->in.ev.dir == TRACE_EV_CLOSED;
            continue;
        }
        if (rc == -EAGAIN) {
            if (trace_reader_follow_whole(f->in.reader) && !f->whole_noted) {
                f->whole_noted = true;
                fprintf(fl->err,
                        "capture2pcap: note: %s: text/JSON traces are converted when their "
                        "writer closes them (binary ones as they grow)\n",
                        f->path);
            }
            if (!f->ended)
                return 0;
            rc = 0; /* v3 `closed` read and nothing after it: the trace is done */
        }
        return follow_end(fl, f, rc);
    }
}

/* Opens the waiting trace F (descriptor permitting) and converts what it holds. Returns 0 or
 * -errno for output/memory failures. */
static int follow_open(struct follow *fl, struct follow_file *f)
{
    int w = f->closed_seen ? 0 : follow_being_written(f->path);
    if (w == -ENOENT) {
        fprintf(fl->err, "capture2pcap: error: %s: removed before it could be read\n", f->path);
        fl->bad = true;
        fl->st.errors++;
        follow_forget(fl, f);
        return 0;
    }
    if (w < 0 && w != -EMFILE && w != -ENFILE && !fl->lease_noted) {
        fl->lease_noted = true;
        fprintf(fl->err,
                "capture2pcap: note: %s: cannot tell whether its writer is done (file lease: "
                "%s); traces that existed at start are followed until their writer closes "
                "them\n",
                f->path, strerror(-w));
    }
    struct trace_reader_opts ro = {
        .format = fl->opts->conv.format,
        .conn_fields = fl->opts->conv.conn_fields,
        .name = f->path,
        .follow = w != 0,
    };
    int rc = w == -EMFILE || w == -ENFILE ? w : trace_reader_open_path(f->path, &ro, &f->in.reader);
    if (rc == -EMFILE || rc == -ENFILE) {
        if (!fl->limit_noted) {
            fl->limit_noted = true;
            fprintf(fl->err,
                    "capture2pcap: warning: %s with %zu traces open: later traces wait until "
                    "one finishes (raise ulimit -n)\n",
                    strerror(-rc), fl->open.n);
        }
        fl->max_open = fl->open.n ? fl->open.n : 1;
        fl->st.waited++;
        return 0; /* stays first in the wait queue */
    }
    if (rc) {
        fprintf(fl->err, "capture2pcap: error: %s: %s\n", f->path, strerror(-rc));
        fl->bad = true;
        fl->st.errors++;
        follow_forget(fl, f);
        return 0;
    }
    follow_list_del(&fl->waiting, f);
    follow_list_add(&fl->open, f);
    f->open = true;
    f->live = w != 0;
    fl->st.traces++;
    if (pcap_writer_is_pcapng(fl->w)) {
        rc = pcap_input_interface(&f->in, fl->w, &fl->owners);
        if (rc)
            return rc;
    }
    if (!pcap_writer_is_pcapng(fl->w)) {
        bool bad = false; /* classic pcap: says once that it cannot hold the key log */
        rc = pcap_input_secrets(&f->in, fl->w, &fl->opts->conv, fl->err, &bad);
        if (rc)
            return rc;
    }
    return follow_drain(fl, f); /* pcapng: the key log goes in there, as it grows */
}

/* Opens waiting traces while descriptors allow. */
static int follow_open_waiting(struct follow *fl)
{
    while (fl->waiting.head && fl->open.n < fl->max_open) {
        struct follow_file *f = fl->waiting.head;
        size_t waited = fl->st.waited;
        int ret = follow_open(fl, f);
        if (ret)
            return ret;
        if (fl->st.waited != waited)
            break; /* out of descriptors: wait for one to finish */
    }
    return 0;
}

/* A trace file appeared (or was found at start): queued, then opened if a descriptor is free.
 * ONLY_LIVE: skip it unless its writer still has it open (rescan after an overflow). */
static int follow_add(struct follow *fl, const char *path, bool only_live)
{
    struct follow_file **pp = follow_slot(fl, path);
    struct stat st;
    if (*pp)
        return 0;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
        return 0;
    if (fl->out_reg && st.st_dev == fl->out_dev && st.st_ino == fl->out_ino)
        return 0; /* our own output, named like a trace in a followed directory */
    if (only_live && follow_being_written(path) != 1)
        return 0;
    for (size_t i = 0; i < FOLLOW_GONE && i < fl->ngone; i++)
        if (fl->gone[i].dev == st.st_dev && fl->gone[i].ino == st.st_ino &&
            fl->gone[i].mtime.tv_sec == st.st_mtim.tv_sec &&
            fl->gone[i].mtime.tv_nsec == st.st_mtim.tv_nsec)
            return 0; /* read whole and finished already */
    struct follow_file *f = calloc(1, sizeof(*f));
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return -ENOMEM;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->in.path = f->path;
    f->in.index = fl->index++;
    *pp = f;
    follow_list_add(&fl->waiting, f);
    if (fl->open.n >= fl->max_open) {
        fl->st.waited++;
        if (!fl->wait_noted)
            fprintf(fl->err,
                    "capture2pcap: note: %zu traces followed at once (--max-open): %s and later "
                    "ones wait until one finishes (counted in the summary)\n",
                    fl->open.n, path);
        fl->wait_noted = true;
    }
    return follow_open_waiting(fl);
}

/* NAME's length without its extension: up to the first '.' after the last '_' that is not
 * followed by a digit ("in_1.2.pb.zst" -> "in_1.2"). */
static size_t follow_stem_len(const char *name)
{
    const char *u = strrchr(name, '_');
    for (const char *p = u ? u : name; *p; p++)
        if (*p == '.' && !(p[1] >= '0' && p[1] <= '9'))
            return (size_t)(p - name);
    return strlen(name);
}

/* Version order of the names without their extensions, so a rotated trace's pieces come in
 * order (ingress_1.pb, ingress_1.1.pb, ingress_1.2.pb: versionsort puts "ingress_1.1.pb" first,
 * '1' < 'p') and ingress_2 before ingress_10; then the whole names. */
static int follow_name_cmp(const struct dirent **a, const struct dirent **b)
{
    char x[sizeof((*a)->d_name)], y[sizeof((*b)->d_name)];
    snprintf(x, sizeof(x), "%.*s", (int)follow_stem_len((*a)->d_name), (*a)->d_name);
    snprintf(y, sizeof(y), "%.*s", (int)follow_stem_len((*b)->d_name), (*b)->d_name);
    int c = strverscmp(x, y);
    return c ? c : versionsort(a, b);
}

/* Adds every trace of spec S that exists now, in follow_name_cmp's order. */
static int follow_scan(struct follow *fl, const struct follow_spec *s, bool only_live)
{
    struct dirent **names;
    int n = scandir(s->dir, &names, NULL, follow_name_cmp);
    int ret = 0;
    if (n < 0) {
        fprintf(fl->err, "capture2pcap: error: %s: %s\n", s->dir, strerror(errno));
        fl->bad = true;
        fl->st.errors++;
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (!ret && follow_spec_matches(s, names[i]->d_name)) {
            char path[PATH_MAX];
            int k = snprintf(path, sizeof(path), "%s/%s", s->dir, names[i]->d_name);
            if (k > 0 && (size_t)k < sizeof(path))
                ret = follow_add(fl, path, only_live);
        }
        free(names[i]);
    }
    free(names);
    return ret;
}

/* Parses input SPEC into S: a directory, a file, or a glob in its last component. */
static int follow_spec_init(struct follow *fl, struct follow_spec *s, const char *spec)
{
    struct stat st;
    const char *slash = strrchr(spec, '/');
    const char *base = slash ? slash + 1 : spec;
    s->wd = -1;
    if (stat(spec, &st) == 0 && S_ISDIR(st.st_mode)) {
        s->kind = FOLLOW_DIR;
        s->dir = strdup(spec);
        size_t n = s->dir ? strlen(s->dir) : 0;
        while (n > 1 && s->dir[n - 1] == '/')
            s->dir[--n] = 0;
        return s->dir ? 0 : -ENOMEM;
    }
    if (strpbrk(spec, "*?[") && slash && memchr(spec, '*', (size_t)(slash - spec))) {
        fprintf(fl->err,
                "capture2pcap: %s: wildcards are supported in the last path component "
                "only\n",
                spec);
        return -EINVAL;
    }
    s->kind = strpbrk(base, "*?[") ? FOLLOW_GLOB : FOLLOW_FILE;
    if (s->kind == FOLLOW_FILE && stat(spec, &st) != 0) {
        int ret = -errno;
        fprintf(fl->err, "capture2pcap: error: %s: %s\n", spec, strerror(-ret));
        return ret;
    }
    s->dir = slash ? strndup(spec, (size_t)(slash - spec)) : strdup(".");
    if (s->dir && !s->dir[0]) {
        free(s->dir);
        s->dir = strdup("/");
    }
    s->name = strdup(base);
    return s->dir && s->name ? 0 : -ENOMEM;
}

static int follow_poll_all(struct follow *fl);

/* Handles one inotify event. Returns 0 or -errno (output/memory). */
static int follow_inotify_event(struct follow *fl, const struct inotify_event *e)
{
    if (e->mask & IN_Q_OVERFLOW) {
        fprintf(fl->err, "capture2pcap: error: the inotify event queue overflowed: traces that "
                         "started and ended meanwhile may be missing (raise "
                         "fs.inotify.max_queued_events); rescanning\n");
        fl->bad = true;
        fl->st.errors++;
        for (size_t i = 0; i < fl->nspecs; i++) {
            int ret = follow_scan(fl, &fl->specs[i], true);
            if (ret)
                return ret;
        }
        return follow_poll_all(fl); /* growth events may be lost too */
    }
    for (size_t i = 0; i < fl->nspecs; i++) {
        const struct follow_spec *s = &fl->specs[i];
        if (s->wd != e->wd)
            continue;
        if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
            fprintf(fl->err,
                    "capture2pcap: warning: %s was removed or moved: no new traces from it\n",
                    s->dir);
            return 0;
        }
        if (!e->len || !follow_spec_matches(s, e->name))
            continue;
        char path[PATH_MAX];
        int k = snprintf(path, sizeof(path), "%s/%s", s->dir, e->name);
        if (k < 0 || (size_t)k >= sizeof(path))
            return 0;
        if (e->mask & (IN_CREATE | IN_MOVED_TO))
            return follow_add(fl, path, false);
        struct follow_file *f = *follow_slot(fl, path);
        if (!f)
            return 0; /* not ours, or finished and forgotten */
        if (!f->open) {
            f->closed_seen |= (e->mask & IN_CLOSE_WRITE) != 0;
            return 0;
        }
        if (e->mask & IN_CLOSE_WRITE) {
            trace_reader_set_follow(f->in.reader, false);
            f->live = false;
        }
        int ret = follow_drain(fl, f);
        return ret ? ret : follow_open_waiting(fl);
    }
    return 0;
}

static int follow_read_inotify(struct follow *fl)
{
    char buf[FOLLOW_INOTIFY_BUF] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(fl->ifd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            int ret = follow_inotify_event(fl, e);
            if (ret)
                return ret;
            p += sizeof(*e) + e->len;
        }
    }
}

/* Re-reads every open trace (the poll fallback). */
static int follow_poll_all(struct follow *fl)
{
    struct follow_file *f = fl->open.head;
    while (f) {
        struct follow_file *next = f->next; /* F may be forgotten */
        int ret = follow_drain(fl, f);
        if (ret)
            return ret;
        f = next;
    }
    return follow_open_waiting(fl);
}

static int64_t follow_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t follow_default_max_open(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return FOLLOW_MAX_OPEN;
    if (rl.rlim_cur <= 2 * FOLLOW_FD_RESERVE)
        return rl.rlim_cur / 2;
    size_t n = (size_t)rl.rlim_cur - FOLLOW_FD_RESERVE;
    return n < FOLLOW_MAX_OPEN ? n : FOLLOW_MAX_OPEN;
}

static int follow_setup(struct follow *fl, const char *const *specs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(specs[i], "-") == 0) {
            fprintf(fl->err, "capture2pcap: --follow: stdin cannot be followed (give a file, a "
                             "directory or a glob)\n");
            return -EINVAL;
        }
    }
    fl->specs = calloc(n, sizeof(*fl->specs));
    if (!fl->specs)
        return -ENOMEM;
    fl->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fl->ifd < 0) {
        int ret = -errno;
        fprintf(fl->err, "capture2pcap: --follow: inotify: %s\n", strerror(-ret));
        return ret;
    }
    for (size_t i = 0; i < n; i++) {
        struct follow_spec *s = &fl->specs[fl->nspecs++];
        int ret = follow_spec_init(fl, s, specs[i]);
        if (ret)
            return ret;
        /* watched before the scan: a trace created in between is seen twice, never missed */
        s->wd = inotify_add_watch(fl->ifd, s->dir, FOLLOW_WATCH_MASK);
        if (s->wd < 0) {
            ret = -errno;
            fprintf(fl->err, "capture2pcap: --follow: %s: cannot watch: %s\n", s->dir,
                    strerror(-ret));
            return ret;
        }
    }
    return 0;
}

static void follow_cleanup(struct follow *fl)
{
    while (fl->open.head)
        follow_forget(fl, fl->open.head);
    while (fl->waiting.head)
        follow_forget(fl, fl->waiting.head);
    for (size_t i = 0; i < fl->nparked; i++)
        pcap_flow_release(&fl->parked[i].cf.flow);
    free(fl->parked);
    fl->parked = NULL;
    for (size_t i = 0; i < fl->nspecs; i++) {
        free(fl->specs[i].dir);
        free(fl->specs[i].name);
    }
    free(fl->specs);
    fl->specs = NULL;
    pcap_owners_free(&fl->owners);
    if (fl->ifd >= 0)
        close(fl->ifd);
}

int pcap_follow(const char *const *specs, size_t n, struct pcap_writer *w,
                const struct pcap_follow_opts *opts, FILE *err, struct pcap_follow_stats *stats)
{
    struct follow *fl = calloc(1, sizeof(*fl));
    sigset_t set, old;
    int sfd = -1, ret;
    bool said = false; /* the failure was reported already */

    if (!fl)
        return -ENOMEM;
    fl->w = w;
    fl->opts = opts;
    fl->err = err;
    fl->ifd = -1;
    fl->max_open = opts->max_open ? opts->max_open : follow_default_max_open();
    struct stat ost;
    if (opts->out_fd >= 0 && fstat(opts->out_fd, &ost) == 0 && S_ISREG(ost.st_mode)) {
        fl->out_reg = true;
        fl->out_dev = ost.st_dev;
        fl->out_ino = ost.st_ino;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, &old);
    signal(SIGPIPE, SIG_IGN); /* a reader that went away is EPIPE, seen below */
    signal(SIGIO, SIG_IGN);   /* lease breaks (follow_being_written) */
    sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0) {
        ret = -errno;
        fprintf(err, "capture2pcap: --follow: signalfd: %s\n", strerror(-ret));
        said = true;
        goto out;
    }
    ret = follow_setup(fl, specs, n);
    if (ret) {
        said = ret != -ENOMEM; /* follow_setup names what is wrong */
        goto out;
    }
    if (opts->conv.keylog && !pcap_writer_is_pcapng(w)) {
        fprintf(err, "capture2pcap: error: --keylog needs pcapng output (--pcapng or a .pcapng "
                     "name)\n");
        ret = -EINVAL;
        said = true;
        goto out;
    }
    if (opts->conv.keylog) {
        ret = pcap_embed_keylog(opts->conv.keylog, false, w, err);
        said = ret == 1;                /* a key log file problem, reported */
        ret = ret == 1 ? -ENOENT : ret; /* exit 1, as without --follow */
        if (ret)
            goto out;
    }
    for (size_t i = 0; i < fl->nspecs && !ret; i++)
        ret = follow_scan(fl, &fl->specs[i], false);
    ret = ret ? ret : pcap_writer_flush(w); /* the file header even before any packet */
    int64_t last_poll = follow_now_ms();
    while (!ret) {
        struct pollfd p[3] = {{.fd = fl->ifd, .events = POLLIN},
                              {.fd = sfd, .events = POLLIN},
                              {.fd = opts->out_fd, .events = 0}};
        int k = poll(p, opts->out_fd >= 0 ? 3 : 2, FOLLOW_POLL_MS);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            ret = -errno;
            break;
        }
        if (p[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            /* taken, so restoring the mask below does not deliver it */
            while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
                ;
            break; /* SIGINT/SIGTERM/SIGHUP: what was read is written and flushed */
        }
        if (opts->out_fd >= 0 && (p[2].revents & (POLLERR | POLLHUP))) {
            fl->st.output_gone = true;
            ret = -EPIPE;
            break;
        }
        ret = (p[0].revents & POLLIN) ? follow_read_inotify(fl) : 0;
        /* the re-read of every open trace, also while inotify keeps us busy with others */
        if (!ret && follow_now_ms() - last_poll >= FOLLOW_POLL_MS) {
            ret = follow_poll_all(fl);
            last_poll = follow_now_ms();
        }
        if (!ret && fl->nparked)
            ret = follow_expire_parked(fl, false);
    }
    if (!ret)
        ret = follow_expire_parked(fl, true); /* their traces are finished: FINs now */
    if (ret && ret != -EPIPE)
        ret = follow_write_failed(fl, ret);
    if (!ret)
        ret = pcap_writer_flush(w);
    if (ret && ret != -EPIPE)
        ret = follow_write_failed(fl, ret);
out:
    if (ret < 0 && ret != -EPIPE && !said)
        fprintf(err, "capture2pcap: error: %s: %s\n", opts->out_name ? opts->out_name : "output",
                strerror(-ret));
    if (sfd >= 0)
        close(sfd);
    follow_cleanup(fl);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (stats)
        *stats = fl->st;
    if (!ret && fl->bad)
        ret = 1;
    free(fl);
    return ret;
}

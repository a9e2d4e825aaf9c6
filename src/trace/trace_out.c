/* See trace_out.h. The checks run in the order of what they protect: identity with an input
 * first (never overridable), then existence (overridable with --force). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "trace/trace_out.h"
#include "trace/trace_reader.h"

/* The temporary file the signal handler removes; one output per process. */
static char *volatile trace_out_sig_tmp;

static void trace_out_sig_cb(int sig)
{
    char *tmp = trace_out_sig_tmp;
    if (tmp)
        unlink(tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static const int trace_out_sigs[] = {SIGINT, SIGTERM, SIGHUP};

/* Held across "create the temporary file, tell the handler" and "rename it, forget it": a
 * signal in between would otherwise kill us with the file left behind (CI saw it) or make the
 * handler unlink a name that is no longer ours. Pending signals arrive at the unblock. */
static void trace_out_sig_block(bool block, sigset_t *old)
{
    sigset_t set;

    if (!block) {
        sigprocmask(SIG_SETMASK, old, NULL);
        return;
    }
    sigemptyset(&set);
    for (size_t i = 0; i < sizeof(trace_out_sigs) / sizeof(trace_out_sigs[0]); i++)
        sigaddset(&set, trace_out_sigs[i]);
    sigprocmask(SIG_BLOCK, &set, old);
}

static void trace_out_sig_arm(char *tmp)
{
    const int *sigs = trace_out_sigs;
    struct sigaction sa = {.sa_handler = trace_out_sig_cb};

    trace_out_sig_tmp = tmp;
    if (!tmp)
        return;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(trace_out_sigs) / sizeof(trace_out_sigs[0]); i++)
        sigaction(sigs[i], &sa, NULL);
}

/* Whether ST is the file of one of the INPUTS; *WHICH is set to it. Inputs that cannot be
 * stat'ed are skipped: their reader reports them. */
static bool trace_out_is_input(const struct stat *st, const char *const *inputs, size_t n,
                               const char **which)
{
    struct stat in;

    for (size_t i = 0; i < n; i++) {
        int rc = strcmp(inputs[i], "-") == 0 ? fstat(STDIN_FILENO, &in) : stat(inputs[i], &in);
        if (rc == 0 && in.st_dev == st->st_dev && in.st_ino == st->st_ino) {
            *which = inputs[i];
            return true;
        }
    }
    return false;
}

/* Whether PATH holds a trace: the readers find at least one event in it. */
static bool trace_out_holds_trace(const char *path, enum trace_in_format *fmt)
{
    struct trace_reader *r;
    struct trace_event ev;
    bool yes;

    if (trace_reader_open_path(path, NULL, &r) != 0)
        return false;
    yes = trace_reader_next(r, &ev, NULL) == 1;
    *fmt = trace_reader_format(r);
    trace_reader_free(r);
    return yes;
}

/* Creates the temporary file beside DEST: "<dir>/.<base>.XXXXXX", 0600. */
static int trace_out_mktemp(struct trace_out *o)
{
    char *d = strdup(o->dest), *b = strdup(o->dest);
    int ret = 0;

    if (!d || !b) {
        ret = -ENOMEM;
        goto out_free;
    }
    if (asprintf(&o->tmp, "%s/.%s.XXXXXX", dirname(d), basename(b)) < 0) {
        o->tmp = NULL;
        ret = -ENOMEM;
        goto out_free;
    }
    o->fd = mkostemp(o->tmp, O_CLOEXEC);
    if (o->fd < 0) {
        ret = -errno;
        free(o->tmp);
        o->tmp = NULL;
        goto out_free;
    }
    /* mkostemp already creates 0600; say it, so no umask or libc can loosen it. */
    if (fchmod(o->fd, 0600) != 0) {
        ret = -errno;
        close(o->fd);
        o->fd = -1;
        unlink(o->tmp);
        free(o->tmp);
        o->tmp = NULL;
    }
out_free:
    free(b);
    free(d);
    return ret;
}

static int trace_out_open_mode(struct trace_out *o, const char *tool, const char *path,
                               const char *const *inputs, size_t n, bool force, bool direct,
                               char *err, size_t errlen)
{
    enum trace_in_format fmt = TRACE_IN_AUTO;
    struct stat lst, st;
    const char *which;
    sigset_t oldmask;
    int ret;

    *o = (struct trace_out){.fd = -1};
    if (strcmp(path, "-") == 0) {
        if (fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode) &&
            trace_out_is_input(&st, inputs, n, &which)) {
            snprintf(err, errlen, "%s: stdout is the input %s; refusing to write over it", tool,
                     which);
            return -EEXIST;
        }
        o->fd = STDOUT_FILENO;
        return 0;
    }
    errno = 0;
    if (lstat(path, &lst) != 0) {
        if (errno != ENOENT) {
            ret = -errno;
            snprintf(err, errlen, "%s: output %s: %s", tool, path, strerror(-ret));
            return ret;
        }
        o->dest = strdup(path);
    } else if (stat(path, &st) != 0) { /* a dangling symlink: replacing it replaces the link */
        if (!force) {
            snprintf(
                err, errlen,
                "%s: output %s already exists (a dangling symlink); give --force to replace it",
                tool, path);
            return -EEXIST;
        }
        o->dest = strdup(path);
    } else {
        if (trace_out_is_input(&st, inputs, n, &which)) {
            if (strcmp(which, path) == 0)
                snprintf(err, errlen,
                         "%s: output %s is one of the inputs; refusing to overwrite it", tool,
                         path);
            else
                snprintf(err, errlen,
                         "%s: output %s is the input %s (same file); refusing to overwrite it",
                         tool, path, which);
            return -EEXIST;
        }
        if (S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "%s: output %s is a directory", tool, path);
            return -EISDIR;
        }
        if (!S_ISREG(st.st_mode)) {
            /* /dev/null, a FIFO, a tty: nothing stored there to lose, nothing to rename over. */
            o->fd = open(path, O_WRONLY | O_CLOEXEC);
            if (o->fd < 0) {
                ret = -errno;
                snprintf(err, errlen, "%s: output %s: %s", tool, path, strerror(-ret));
                return ret;
            }
            return 0;
        }
        if (!force) {
            if (trace_out_holds_trace(path, &fmt))
                snprintf(err, errlen,
                         "%s: output %s already exists (a socktap/Envoy trace, %s); give --force "
                         "to replace it",
                         tool, path, trace_in_format_name(fmt));
            else
                snprintf(err, errlen, "%s: output %s already exists; give --force to replace it",
                         tool, path);
            return -EEXIST;
        }
        /* Through a symlink the target is replaced and the link kept, as open(O_TRUNC) did. */
        o->dest = S_ISLNK(lst.st_mode) ? realpath(path, NULL) : strdup(path);
    }
    if (!o->dest) {
        ret = errno ? -errno : -ENOMEM;
        snprintf(err, errlen, "%s: output %s: %s", tool, path, strerror(-ret));
        return ret;
    }
    if (direct) {
        /* O_EXCL: a file that appeared since the checks above is not ours to truncate */
        o->fd =
            open(o->dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (force ? 0 : O_EXCL), 0600);
        ret = o->fd < 0 ? -errno : 0;
        free(o->dest);
        o->dest = NULL;
        if (ret)
            snprintf(err, errlen, "%s: output %s: %s", tool, path, strerror(-ret));
        return ret;
    }
    trace_out_sig_block(true, &oldmask);
    ret = trace_out_mktemp(o);
    if (!ret)
        trace_out_sig_arm(o->tmp);
    trace_out_sig_block(false, &oldmask);
    if (ret) {
        snprintf(err, errlen, "%s: output %s: cannot create a temporary file beside it: %s", tool,
                 path, strerror(-ret));
        free(o->dest);
        *o = (struct trace_out){.fd = -1};
        return ret;
    }
    return 0;
}

int trace_out_open(struct trace_out *o, const char *tool, const char *path,
                   const char *const *inputs, size_t n, bool force, char *err, size_t errlen)
{
    return trace_out_open_mode(o, tool, path, inputs, n, force, false, err, errlen);
}

int trace_out_open_direct(struct trace_out *o, const char *tool, const char *path,
                          const char *const *inputs, size_t n, bool force, char *err, size_t errlen)
{
    return trace_out_open_mode(o, tool, path, inputs, n, force, true, err, errlen);
}

int trace_out_commit(struct trace_out *o, const char *tool, const char *path, char *err,
                     size_t errlen)
{
    int ret = 0, dfd;
    sigset_t oldmask;

    if (!o->tmp) {
        if (o->fd > STDERR_FILENO && close(o->fd) != 0)
            ret = -errno;
        o->fd = -1;
        if (ret)
            snprintf(err, errlen, "%s: output %s: %s", tool, path, strerror(-ret));
        return ret;
    }
    /* fsync before rename: otherwise a crash can leave the new name on an empty file. */
    if (fsync(o->fd) != 0 || close(o->fd) != 0) {
        ret = -errno;
        o->fd = -1;
        goto err_abort;
    }
    o->fd = -1;
    trace_out_sig_block(true, &oldmask);
    if (rename(o->tmp, o->dest) != 0) {
        ret = -errno;
        trace_out_sig_block(false, &oldmask);
        goto err_abort;
    }
    trace_out_sig_arm(NULL);
    trace_out_sig_block(false, &oldmask);
    /* The rename itself is durable once the directory is; a failure here loses nothing. */
    char *d = strdup(o->dest);
    if (d) {
        dfd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(d);
    }
    free(o->tmp);
    free(o->dest);
    *o = (struct trace_out){.fd = -1};
    return 0;

err_abort:
    snprintf(err, errlen, "%s: output %s: %s (nothing written)", tool, path, strerror(-ret));
    trace_out_abort(o);
    return ret;
}

void trace_out_abort(struct trace_out *o)
{
    if (!o)
        return;
    if (o->fd > STDERR_FILENO)
        close(o->fd);
    if (o->tmp) {
        trace_out_sig_arm(NULL);
        unlink(o->tmp);
    }
    free(o->tmp);
    free(o->dest);
    *o = (struct trace_out){.fd = -1};
}

/* capture_finish.c: finished trace files into finished_dir, then the on_finished hook.
 *
 * The move is a rename(2) within one filesystem (the config checked finished_dir is on the
 * prefix's), done by the writer thread right after close(2): whoever watches finished_dir (an
 * upload script, inotify IN_MOVED_TO) only ever sees complete files, and never a copy in
 * progress. renameat2(RENAME_NOREPLACE) keeps an existing file in finished_dir (a name taken by
 * an earlier run, or a foreign file) untouched; on filesystems without it (EINVAL) link(2) +
 * unlink(2) give the same guarantee. Rejected: plain rename(2), which silently replaces a
 * finished trace of the same name; copying, which is neither atomic nor cheap. */
#include "transport/capture_finish.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "transport/capture.h"
#include "transport/capture_hook.h"

#define FINISH_MAX_SUFFIX 999

void capture_finish_register_stats(struct capture_finish_stats *st, const char *owner,
                                   const char *kind)
{
    const char *o = owner ? owner : "socktap";
    st->has_stats = true;
    st->rotated = stats_registerf(STAT_COUNTER, "%s.%s.rotated", o, kind);
    st->finished_moved = stats_registerf(STAT_COUNTER, "%s.%s.finished_moved", o, kind);
    st->finished_move_failed = stats_registerf(STAT_COUNTER, "%s.%s.finished_move_failed", o, kind);
    st->hook_ok = stats_registerf(STAT_COUNTER, "%s.%s.hook_ok", o, kind);
    st->hook_failed = stats_registerf(STAT_COUNTER, "%s.%s.hook_failed", o, kind);
    st->hook_timeout = stats_registerf(STAT_COUNTER, "%s.%s.hook_timeout", o, kind);
    st->hook_skipped = stats_registerf(STAT_COUNTER, "%s.%s.hook_skipped", o, kind);
}

bool capture_finish_wanted(const struct capture_limits *l)
{
    return l && (l->finished_dir || l->on_finished);
}

/* Renames FROM to TO unless TO exists. Returns 0 or -errno (-EEXIST: TO exists). */
static int move_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    /* no RENAME_NOREPLACE here: link(2) refuses an existing TO just as well */
    if (link(from, to) != 0)
        return -errno;
    if (unlink(from) != 0) {
        int err = errno;
        unlink(to); /* keep one name: the file stays where it was */
        return -err;
    }
    return 0;
}

int capture_finish_move(const char *path, const char *dir, const char *ext, char *final,
                        size_t final_size, bool *renamed)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t blen = strlen(base), elen = strlen(ext);
    if (elen > blen || strcmp(base + blen - elen, ext) != 0)
        elen = 0; /* not the expected extension: the number goes at the end */
    *renamed = false;
    for (int n = 0; n <= FINISH_MAX_SUFFIX; n++) {
        int len;
        if (n == 0)
            len = snprintf(final, final_size, "%s/%s", dir, base);
        else
            len = snprintf(final, final_size, "%s/%.*s.%d%s", dir, (int)(blen - elen), base, n,
                           base + blen - elen);
        if (len < 0 || (size_t)len >= final_size)
            return -ENAMETOOLONG;
        int rc = move_noreplace(path, final);
        if (rc != -EEXIST) {
            *renamed = n > 0 && rc == 0;
            return rc;
        }
    }
    return -EEXIST;
}

void capture_finish_count(const struct capture_finish_stats *st, stat_id id)
{
    if (!st->has_stats)
        return;
    if (!stats_tls)
        stats_bind_aux_thread();
    stats_inc(id);
}

/* Writer thread only: a failing move was logged and none has succeeded since. */
static bool g_move_failing;

void capture_finish_file(const struct capture_limits *l, const struct capture_finish_stats *st,
                         const char *kind, uint64_t conn_id, const char *path, const char *ext,
                         char *final, size_t final_size)
{
    const char *at = path;
    final[0] = '\0';
    if (l->finished_dir) {
        bool renamed;
        int rc = capture_finish_move(path, l->finished_dir, ext, final, final_size, &renamed);
        if (rc) {
            final[0] = '\0';
            capture_finish_count(st, st->finished_move_failed);
            if (!g_move_failing)
                LOGE(conn_id,
                     "%s: cannot move %s into %s: %s; it stays where it is (until a move "
                     "succeeds again, further failures are only counted in "
                     "%s.finished_move_failed)",
                     kind, path, l->finished_dir, strerror(-rc), kind);
            g_move_failing = true;
        } else {
            if (g_move_failing)
                LOGI(conn_id, "%s: finished traces move into %s again", kind, l->finished_dir);
            g_move_failing = false;
            if (renamed)
                LOGW(conn_id, "%s: %s/%s exists (left untouched); %s moved to %s instead", kind,
                     l->finished_dir, strrchr(path, '/') ? strrchr(path, '/') + 1 : path, path,
                     final);
            capture_finish_count(st, st->finished_moved);
            at = final;
        }
    }
    if (l->on_finished)
        capture_hook_run(l->on_finished, at, st, kind, conn_id);
}

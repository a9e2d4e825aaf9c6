/* Unit tests for the capture disk side: safe file creation (O_EXCL, no symlink following, next
 * free name) and the writer thread (ordering, bounded backlog, write errors). A pipe stands in
 * for a disk that cannot keep up (the writer blocks on it until we read), /dev/full for a full
 * disk. The writer also creates files itself (capture_wfile_open) and recycles pool buffers.
 * Rotated pieces: the names the writer gives a chain's pieces (`<prefix>_<id><ext>`, then `.<n>`
 * before the extension, skipping taken names, after a first piece's collision name too), their
 * shared backlog; finished files: capture_finish_move's never-replace rule into finished_dir,
 * also through the writer's close with socktap_limits.finished_dir. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture_tmpdir.h"

#include "core/stats.h"
#include "transport/capture.h"
#include "transport/capture_disk.h"
#include "transport/capture_finish.h"

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_file_text(const char *path, const char *text)
{
    char buf[256] = {0};
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    assert_int_equal(n, strlen(text));
    assert_string_equal(buf, text);
}

static void test_create_names_and_mode(void **state)
{
    (void)state;
    char prefix[300], path[512], want[512];
    snprintf(prefix, sizeof(prefix), "%s/cap", g_dir);
    int fd = -1;
    bool renamed = true;
    mode_t old = umask(0);
    int rc = capture_file_create(prefix, 42, ".pb", path, sizeof(path), &fd, &renamed);
    umask(old);
    assert_int_equal(rc, 0);
    assert_false(renamed);
    snprintf(want, sizeof(want), "%s_42.pb", prefix);
    assert_string_equal(path, want);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600); /* even with umask 0 */
    assert_true(S_ISREG(st.st_mode));
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    close(fd);
}

static void test_existing_file_untouched(void **state)
{
    (void)state;
    char prefix[300], path[512], existing[512], want[512];
    snprintf(prefix, sizeof(prefix), "%s/exist", g_dir);
    snprintf(existing, sizeof(existing), "%s_7.pb_text", prefix);
    write_file(existing, "precious");
    int fd = -1;
    bool renamed = false;
    assert_int_equal(capture_file_create(prefix, 7, ".pb_text", path, sizeof(path), &fd, &renamed),
                     0);
    assert_true(renamed);
    snprintf(want, sizeof(want), "%s_7.1.pb_text", prefix);
    assert_string_equal(path, want);
    close(fd);
    assert_file_text(existing, "precious");
    /* And the next one skips both. */
    assert_int_equal(capture_file_create(prefix, 7, ".pb_text", path, sizeof(path), &fd, &renamed),
                     0);
    snprintf(want, sizeof(want), "%s_7.2.pb_text", prefix);
    assert_string_equal(path, want);
    close(fd);
}

static void test_symlink_not_followed(void **state)
{
    (void)state;
    char prefix[300], path[512], link_path[512], target[512], dangling[512], dtarget[512];
    snprintf(prefix, sizeof(prefix), "%s/link", g_dir);
    snprintf(target, sizeof(target), "%s/target", g_dir);
    snprintf(link_path, sizeof(link_path), "%s_9.pb", prefix);
    write_file(target, "victim");
    assert_int_equal(symlink(target, link_path), 0);
    /* A dangling symlink must not be followed either (it would create its target). */
    snprintf(dtarget, sizeof(dtarget), "%s/created-through-link", g_dir);
    snprintf(dangling, sizeof(dangling), "%s_9.1.pb", prefix);
    assert_int_equal(symlink(dtarget, dangling), 0);

    int fd = -1;
    bool renamed = false;
    assert_int_equal(capture_file_create(prefix, 9, ".pb", path, sizeof(path), &fd, &renamed), 0);
    assert_true(renamed);
    char want[512];
    snprintf(want, sizeof(want), "%s_9.2.pb", prefix);
    assert_string_equal(path, want);
    assert_int_equal(write(fd, "x", 1), 1);
    close(fd);
    assert_file_text(target, "victim");
    struct stat st;
    assert_int_equal(lstat(link_path, &st), 0);
    assert_true(S_ISLNK(st.st_mode));
    assert_int_equal(stat(dtarget, &st), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_create_errors(void **state)
{
    (void)state;
    char prefix[300], path[512];
    int fd = -1;
    bool renamed;
    snprintf(prefix, sizeof(prefix), "%s/no/such/dir/cap", g_dir);
    assert_int_equal(capture_file_create(prefix, 1, ".pb", path, sizeof(path), &fd, &renamed),
                     -ENOENT);
    char small[16];
    assert_int_equal(capture_file_create(prefix, 1, ".pb", small, sizeof(small), &fd, &renamed),
                     -ENAMETOOLONG);
    assert_int_equal(fd, -1);
}

static void *dup_text(const char *s)
{
    size_t n = strlen(s);
    void *p = malloc(n);
    assert_non_null(p);
    memcpy(p, s, n);
    return p;
}

static void test_writer_order_and_close(void **state)
{
    (void)state;
    char prefix[300], path[512];
    snprintf(prefix, sizeof(prefix), "%s/writer", g_dir);
    int fd;
    bool renamed;
    assert_int_equal(capture_file_create(prefix, 3, ".pb", path, sizeof(path), &fd, &renamed), 0);
    struct capture_wstats ws = {0};
    struct capture_wfile *f;
    assert_int_equal(capture_wfile_new(fd, path, 3, 1 << 20, &ws, &f), 0);
    const char *parts[] = {"alpha,", "beta,", "gamma,", "delta"};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(capture_wfile_submit(f, dup_text(parts[i]), strlen(parts[i])), 0);
    capture_writer_sync();
    assert_int_equal(capture_wfile_backlog(f), 0);
    assert_false(capture_wfile_failed(f));
    capture_wfile_close(f);
    capture_writer_sync();
    assert_file_text(path, "alpha,beta,gamma,delta");
}

/* The writer blocks on a full pipe: the backlog grows to its bound, then submits are refused
 * (the caller's cue to stop the capture) while the data already accepted arrives intact. */
static void test_writer_backlog_bound(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct capture_wstats ws = {0};
    struct capture_wfile *f;
    const size_t chunk = 128 * 1024, max = 512 * 1024;
    assert_int_equal(capture_wfile_new(p[1], "pipe", 5, max, &ws, &f), 0);
    size_t accepted = 0;
    int rc = 0;
    for (int i = 0; i < 16 && rc == 0; i++) {
        uint8_t *d = malloc(chunk);
        assert_non_null(d);
        memset(d, 'a' + i, chunk);
        rc = capture_wfile_submit(f, d, chunk);
        if (rc == 0)
            accepted += chunk;
    }
    assert_int_equal(rc, -ENOBUFS);
    assert_true(capture_wfile_backlog(f) <= max);
    assert_true(accepted >= max - chunk);
    /* Drain the pipe: everything accepted arrives, in order. */
    uint8_t *buf = malloc(64 * 1024);
    assert_non_null(buf);
    size_t got = 0;
    bool in_order = true;
    while (got < accepted) {
        ssize_t n = read(p[0], buf, 64 * 1024);
        assert_true(n > 0);
        for (ssize_t i = 0; i < n; i++)
            in_order &= buf[i] == 'a' + (int)((got + (size_t)i) / chunk);
        got += (size_t)n;
    }
    assert_true(in_order);
    capture_writer_sync();
    assert_int_equal(capture_wfile_backlog(f), 0);
    capture_wfile_close(f);
    capture_writer_sync();
    /* The writer closed the pipe's write end: EOF now. */
    assert_int_equal(read(p[0], buf, 1), 0);
    free(buf);
    close(p[0]);
}

/* The writer creates the file itself at the first job (capture_wfile_open), 0600, then a key log
 * beside it; a pool buffer's bytes arrive like malloc'd ones. */
static void test_writer_creates_files(void **state)
{
    (void)state;
    char prefix[300], path[600];
    snprintf(prefix, sizeof(prefix), "%s/made", g_dir);
    bool failing = false;
    struct capture_wcreate wc = {
        .path_prefix = prefix, .ext = ".pb", .kind = "capture", .failing = &failing};
    struct capture_wstats ws = {0};
    struct capture_wfile *f, *keys;
    assert_int_equal(capture_wfile_open(&wc, 12, 1 << 20, &ws, &f), 0);
    assert_string_equal(capture_wfile_path(f), ""); /* nothing queued yet: no file */
    struct tbuf b = {0};
    assert_int_equal(capture_buf_take(&b), 0);
    assert_int_equal(b.cap, CAPTURE_BUF_BYTES);
    assert_int_equal(tbuf_append(&b, "pooled,", 7), 0);
    assert_int_equal(capture_wfile_submit_buf(f, &b), 0);
    assert_null(b.data);
    assert_int_equal(capture_wfile_open_beside(f, ".keylog", 12, 1 << 16, &ws, &keys), 0);
    assert_int_equal(capture_wfile_submit(keys, dup_text("KEYS"), 4), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text("malloced"), 8), 0);
    capture_writer_sync();
    snprintf(path, sizeof(path), "%s_12.pb", prefix);
    assert_string_equal(capture_wfile_path(f), path);
    assert_false(capture_wfile_failed(f));
    capture_wfile_close(keys);
    capture_wfile_close(f);
    capture_writer_sync();
    assert_file_text(path, "pooled,malloced");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    snprintf(path, sizeof(path), "%s_12.pb.keylog", prefix);
    assert_file_text(path, "KEYS");
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_false(failing);
}

/* A create that fails (missing directory) fails the file, marks the prefix failing, and a key
 * log beside it fails quietly; submits are refused from then on. */
static void test_writer_create_fails(void **state)
{
    (void)state;
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "%s/missing/cap", g_dir);
    bool failing = false;
    struct capture_wcreate wc = {
        .path_prefix = prefix, .ext = ".pb", .kind = "capture", .failing = &failing};
    struct capture_wstats ws = {0};
    struct capture_wfile *f, *keys;
    assert_int_equal(capture_wfile_open(&wc, 13, 1 << 20, &ws, &f), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text("lost"), 4), 0);
    assert_int_equal(capture_wfile_open_beside(f, ".keylog", 13, 1 << 16, &ws, &keys), 0);
    assert_int_equal(capture_wfile_submit(keys, dup_text("KEYS"), 4), 0);
    capture_writer_sync();
    assert_true(capture_wfile_failed(f));
    assert_true(capture_wfile_create_failed(f));
    assert_true(capture_wfile_create_failed(keys));
    assert_true(failing);
    assert_string_equal(capture_wfile_path(f), "");
    assert_int_equal(capture_wfile_submit(f, dup_text("more"), 4), -EIO);
    capture_wfile_close(keys);
    capture_wfile_close(f);
    capture_writer_sync();
}

static void test_writer_full_disk(void **state)
{
    (void)state;
    int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        skip();
    struct capture_wstats ws = {.has_stats = true,
                                .bytes_written = stats_register("t.bytes_written", STAT_COUNTER),
                                .write_errors = stats_register("t.write_errors", STAT_COUNTER)};
    assert_int_equal(stats_freeze(1), 0);
    struct capture_wfile *f;
    assert_int_equal(capture_wfile_new(fd, "/dev/full", 6, 1 << 20, &ws, &f), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text("lost"), 4), 0);
    capture_writer_sync();
    assert_true(capture_wfile_failed(f));
    assert_int_equal(capture_wfile_submit(f, dup_text("more"), 4), -EIO);
    assert_int_equal(stats_get(ws.write_errors), 1);
    assert_int_equal(stats_get(ws.bytes_written), 0);
    capture_wfile_close(f);
    capture_writer_sync();
    stats_reset();
}

/* Writes TEXT as the next piece of CHAIN and closes it (the names are checked on disk). */
static void one_piece(const struct capture_wcreate *wc, struct capture_wchain *chain, uint64_t id,
                      const char *text, size_t *backlog_seen)
{
    struct capture_wstats ws = {0};
    struct capture_wfile *f;
    assert_int_equal(capture_wfile_open_piece(wc, id, 1 << 20, &ws, chain, &f), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text(text), strlen(text)), 0);
    if (backlog_seen)
        *backlog_seen = capture_wchain_backlog(chain);
    capture_wfile_close(f); /* closed while its bytes may still be queued */
}

/* The file PREFIX + TAIL holds TEXT. */
static void assert_named(const char *prefix, const char *tail, const char *text)
{
    char path[700];
    snprintf(path, sizeof(path), "%s%s", prefix, tail);
    assert_file_text(path, text);
}

static void test_piece_names(void **state)
{
    (void)state;
    char prefix[300], path[600];
    bool failing = false;
    snprintf(prefix, sizeof(prefix), "%s/rot", g_dir);
    struct capture_wcreate wc = {
        .path_prefix = prefix, .ext = ".pb", .kind = "capture", .failing = &failing};
    struct capture_wchain *chain;
    size_t seen;

    /* a foreign file where piece 2 would go: left alone, piece 2 becomes .3 */
    snprintf(path, sizeof(path), "%s_5.2.pb", prefix);
    write_file(path, "foreign");
    assert_int_equal(capture_wchain_new(&wc, &chain), 0);
    one_piece(&wc, chain, 5, "p0", &seen);
    assert_true(seen <= 2); /* the chain counts what is queued over its pieces */
    one_piece(&wc, chain, 5, "p1", NULL);
    one_piece(&wc, chain, 5, "p2", NULL);
    one_piece(&wc, chain, 5, "p3", NULL);
    capture_wchain_release(chain);
    capture_writer_sync();
    static const char *const want[][2] = {{"_5.pb", "p0"},
                                          {"_5.1.pb", "p1"},
                                          {"_5.2.pb", "foreign"},
                                          {"_5.3.pb", "p2"},
                                          {"_5.4.pb", "p3"}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_named(prefix, want[i][0], want[i][1]);

    /* the first piece took a collision name: its pieces extend that name */
    snprintf(path, sizeof(path), "%s_6.pb", prefix);
    write_file(path, "old run");
    assert_int_equal(capture_wchain_new(&wc, &chain), 0);
    one_piece(&wc, chain, 6, "q0", NULL);
    one_piece(&wc, chain, 6, "q1", NULL);
    capture_wchain_release(chain);
    capture_writer_sync();
    assert_named(prefix, "_6.pb", "old run");
    assert_named(prefix, "_6.1.pb", "q0");
    assert_named(prefix, "_6.1.1.pb", "q1");
}

/* A chain whose first piece cannot be created: later pieces fail quietly. */
static void test_pieces_after_a_failed_first(void **state)
{
    (void)state;
    char prefix[300];
    bool failing = false;
    snprintf(prefix, sizeof(prefix), "%s/missing/rot", g_dir);
    struct capture_wcreate wc = {
        .path_prefix = prefix, .ext = ".pb", .kind = "capture", .failing = &failing};
    struct capture_wstats ws = {0};
    struct capture_wchain *chain;
    struct capture_wfile *f, *g;
    assert_int_equal(capture_wchain_new(&wc, &chain), 0);
    assert_int_equal(capture_wfile_open_piece(&wc, 7, 1 << 20, &ws, chain, &f), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text("x"), 1), 0);
    capture_wfile_close(f);
    assert_int_equal(capture_wfile_open_piece(&wc, 7, 1 << 20, &ws, chain, &g), 0);
    assert_int_equal(capture_wfile_submit(g, dup_text("y"), 1), 0);
    capture_writer_sync();
    assert_true(capture_wfile_create_failed(g));
    assert_int_equal(capture_wchain_backlog(chain), 0);
    capture_wfile_close(g);
    capture_wchain_release(chain);
    capture_writer_sync();
    assert_true(failing);
}

static void test_move_never_replaces(void **state)
{
    (void)state;
    char done[300], src[600], dst[600], final[700];
    bool renamed;
    snprintf(done, sizeof(done), "%s/done", g_dir);
    assert_int_equal(mkdir(done, 0700), 0);

    snprintf(src, sizeof(src), "%s/in_9.pb", g_dir);
    write_file(src, "first");
    assert_int_equal(capture_finish_move(src, done, ".pb", final, sizeof(final), &renamed), 0);
    snprintf(dst, sizeof(dst), "%s/in_9.pb", done);
    assert_string_equal(final, dst);
    assert_false(renamed);
    assert_int_equal(access(src, F_OK), -1);
    assert_file_text(dst, "first");

    /* the same name again, and a symlink at the next one: both left alone */
    write_file(src, "second");
    snprintf(dst, sizeof(dst), "%s/in_9.1.pb", done);
    assert_int_equal(symlink("/nonexistent", dst), 0);
    assert_int_equal(capture_finish_move(src, done, ".pb", final, sizeof(final), &renamed), 0);
    snprintf(dst, sizeof(dst), "%s/in_9.2.pb", done);
    assert_string_equal(final, dst);
    assert_true(renamed);
    assert_file_text(dst, "second");
    snprintf(dst, sizeof(dst), "%s/in_9.pb", done);
    assert_file_text(dst, "first");

    /* a missing source is an error, nothing created */
    assert_int_equal(capture_finish_move(src, done, ".pb", final, sizeof(final), &renamed),
                     -ENOENT);
}

/* The writer's close moves a finished file into finished_dir, counted (no stats here). */
static void test_writer_moves_finished_files(void **state)
{
    (void)state;
    char prefix[300], done[300], path[600];
    bool failing = false;
    snprintf(prefix, sizeof(prefix), "%s/fin", g_dir);
    snprintf(done, sizeof(done), "%s/finished", g_dir);
    assert_int_equal(mkdir(done, 0700), 0);
    struct capture_limits lim = {.finished_dir = done};
    struct capture_finish_stats fst = {0};
    struct capture_wcreate wc = {.path_prefix = prefix,
                                 .ext = ".pb",
                                 .kind = "capture",
                                 .failing = &failing,
                                 .limits = &lim,
                                 .fstats = &fst};
    struct capture_wstats ws = {0};
    struct capture_wfile *f;
    assert_int_equal(capture_wfile_open(&wc, 3, 1 << 20, &ws, &f), 0);
    assert_int_equal(capture_wfile_submit(f, dup_text("done"), 4), 0);
    capture_writer_sync();
    snprintf(path, sizeof(path), "%s_3.pb", prefix);
    assert_file_text(path, "done"); /* open: still in the prefix's directory */
    capture_wfile_close(f);
    capture_writer_sync();
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/fin_3.pb", done);
    assert_file_text(path, "done");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_names_and_mode),
        cmocka_unit_test(test_existing_file_untouched),
        cmocka_unit_test(test_symlink_not_followed),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_writer_order_and_close),
        cmocka_unit_test(test_writer_backlog_bound),
        cmocka_unit_test(test_writer_creates_files),
        cmocka_unit_test(test_writer_create_fails),
        cmocka_unit_test(test_writer_full_disk),
        cmocka_unit_test(test_piece_names),
        cmocka_unit_test(test_pieces_after_a_failed_first),
        cmocka_unit_test(test_move_never_replaces),
        cmocka_unit_test(test_writer_moves_finished_files),
    };
    int rc = cmocka_run_group_tests(tests, setup_dir, teardown_dir);
    capture_writer_shutdown();
    return rc;
}

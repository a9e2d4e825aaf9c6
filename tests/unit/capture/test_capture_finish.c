/* Unit tests for rotated pieces and finished files: the names the writer gives a chain's pieces
 * (`<prefix>_<id><ext>`, then `.<n>` before the extension, skipping taken names, after a first
 * piece's collision name too), their shared backlog, and capture_finish_move's never-replace
 * rule into finished_dir (an existing file or symlink there is left alone, the next free name
 * is used), also through the writer's close with socktap_limits.finished_dir. */
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

#include "transport/capture.h"
#include "transport/capture_disk.h"
#include "transport/capture_finish.h"

static char g_dir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/socktap-finish-unit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

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
    buf[n] = '\0';
    assert_string_equal(buf, text);
}

static char *dup_text(const char *s)
{
    char *p = strdup(s);
    assert_non_null(p);
    return p;
}

/* Writes piece TEXT as the next piece of CHAIN and closes it; returns nothing: the names are
 * checked on disk. */
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
    snprintf(path, sizeof(path), "%s_5.pb", prefix);
    assert_file_text(path, "p0");
    snprintf(path, sizeof(path), "%s_5.1.pb", prefix);
    assert_file_text(path, "p1");
    snprintf(path, sizeof(path), "%s_5.2.pb", prefix);
    assert_file_text(path, "foreign");
    snprintf(path, sizeof(path), "%s_5.3.pb", prefix);
    assert_file_text(path, "p2");
    snprintf(path, sizeof(path), "%s_5.4.pb", prefix);
    assert_file_text(path, "p3");

    /* the first piece took a collision name: its pieces extend that name */
    snprintf(path, sizeof(path), "%s_6.pb", prefix);
    write_file(path, "old run");
    assert_int_equal(capture_wchain_new(&wc, &chain), 0);
    one_piece(&wc, chain, 6, "q0", NULL);
    one_piece(&wc, chain, 6, "q1", NULL);
    capture_wchain_release(chain);
    capture_writer_sync();
    assert_file_text(path, "old run");
    snprintf(path, sizeof(path), "%s_6.1.pb", prefix);
    assert_file_text(path, "q0");
    snprintf(path, sizeof(path), "%s_6.1.1.pb", prefix);
    assert_file_text(path, "q1");
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
        cmocka_unit_test(test_piece_names),
        cmocka_unit_test(test_pieces_after_a_failed_first),
        cmocka_unit_test(test_move_never_replaces),
        cmocka_unit_test(test_writer_moves_finished_files),
    };
    int rc = cmocka_run_group_tests(tests, setup_dir, teardown_dir);
    capture_writer_shutdown();
    return rc;
}

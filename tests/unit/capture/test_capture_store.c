/* Unit tests for the per-prefix budget account (capture_store.h): the startup scan (regular
 * trace files only, oldest first by mtime), delete_oldest order, an open file never deleted,
 * stop_new's refusal and resume, files removed by someone else, the strictest of two configs'
 * limits, and GET /captures' cap on finished entries. Real files in a temp directory. */
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
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "capture_tmpdir.h"

#include "transport/capture_store.h"

static const struct capture_store_stats no_stats = {0};

/* Makes NAME in the test directory, LEN bytes, modified AGE seconds ago; its path in PATH. */
static void make_file(const char *name, size_t len, int age, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < len; i++)
        fputc('x', f);
    fclose(f);
    struct timespec t[2] = {{.tv_sec = time(NULL) - age}, {.tv_sec = time(NULL) - age}};
    assert_int_equal(utimensat(AT_FDCWD, path, t, 0), 0);
}

/* Makes BASE_1.pb .. BASE_N.pb, each newer than the one before (BASE_i.pb is i bytes long when
 * SIZED, else empty); FIRST's path in FIRST. */
static void make_series(const char *base, int n, bool sized, char *first, size_t size)
{
    char path[512];
    for (int i = 1; i <= n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "%s_%d.pb", base, i);
        make_file(name, sized ? (size_t)i : 0, n + 10 - i, path, sizeof(path));
        if (i == 1)
            snprintf(first, size, "%s", path);
    }
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* A config of prefix "<dir>/NAME" with LIMITS, as the parser would leave it. */
static void cfg_init(struct capture_cfg *cfg, struct capture_runtime *rt, char *prefix, size_t n,
                     const char *name, struct capture_limits limits)
{
    snprintf(prefix, n, "%s/%s", g_dir, name);
    *cfg = (struct capture_cfg){.kind = "capture", .path_prefix = prefix, .limits = limits};
    *rt = (struct capture_runtime){.enabled = true};
    cfg->rt = rt;
}

static void test_scan_order_and_delete_oldest(void **state)
{
    (void)state;
    char p1[512], p2[512], p3[512], other[512], link[512], dir[512], prefix[300];
    make_file("a_1.pb", 10, 300, p1, sizeof(p1));
    make_file("a_2.pb", 20, 100, p2, sizeof(p2));
    make_file("a_3.1.pb", 30, 200, p3, sizeof(p3));      /* a renamed trace counts too */
    make_file("ab_4.pb", 40, 900, other, sizeof(other)); /* another prefix's */
    snprintf(link, sizeof(link), "%s/a_5.pb", g_dir);
    assert_int_equal(symlink(p1, link), 0); /* a symlink is never counted nor deleted */
    snprintf(dir, sizeof(dir), "%s/a_6", g_dir);
    assert_int_equal(mkdir(dir, 0700), 0);

    struct capture_cfg cfg;
    struct capture_runtime rt;
    cfg_init(&cfg, &rt, prefix, sizeof(prefix), "a",
             (struct capture_limits){.max_files = 3, .policy = CAPTURE_POLICY_DELETE_OLDEST});
    assert_int_equal(capture_store_attach(&cfg), 0);
    assert_non_null(cfg.store);
    /* delete_oldest: three finished files do not pause, they make room */
    assert_true(capture_store_admit(cfg.store));

    assert_int_equal(capture_store_reserve(cfg.store, &no_stats), 0);
    assert_false(exists(p1)); /* oldest by mtime */
    assert_true(exists(p2) && exists(p3) && exists(other) && exists(link));

    struct capture_store_file *f;
    char p7[512];
    make_file("a_7.pb", 0, 0, p7, sizeof(p7));
    assert_int_equal(capture_store_add(cfg.store, p7, 7, "listener.x", "capture", &f), 0);
    assert_int_equal(capture_store_reserve(cfg.store, &no_stats), 0);
    assert_false(exists(p3)); /* 200 s old: before the 100 s one */
    assert_true(exists(p2));
    capture_store_finished(f, NULL);
    capture_store_detach(&cfg);
    assert_null(cfg.store);
    unlink(p2);
    unlink(p7);
    unlink(other);
    unlink(link);
    rmdir(dir);
}

static void test_open_file_never_deleted(void **state)
{
    (void)state;
    char prefix[300], pa[512], pb[512];
    struct capture_cfg cfg;
    struct capture_runtime rt;
    cfg_init(
        &cfg, &rt, prefix, sizeof(prefix), "o",
        (struct capture_limits){.max_total_bytes = 1000, .policy = CAPTURE_POLICY_DELETE_OLDEST});
    assert_int_equal(capture_store_attach(&cfg), 0);
    struct capture_store_file *a, *b;
    make_file("o_1.pb", 0, 0, pa, sizeof(pa));
    make_file("o_2.pb", 0, 0, pb, sizeof(pb));
    assert_int_equal(capture_store_add(cfg.store, pa, 1, "l", "capture", &a), 0);
    assert_int_equal(capture_store_add(cfg.store, pb, 2, "l", "capture", &b), 0);
    assert_int_equal(capture_store_charge(a, 800, &no_stats), 0);
    /* only open files: the budget holds, nothing is deleted, new captures pause */
    assert_int_equal(capture_store_charge(b, 300, &no_stats), -EDQUOT);
    assert_true(exists(pa));
    assert_int_equal(capture_store_paused(cfg.store), CAPTURE_PAUSE_TOTAL);
    capture_store_finished(a, NULL); /* now deletable: open bytes are back under the budget */
    assert_true(capture_store_admit(cfg.store));
    assert_int_equal(capture_store_charge(b, 300, &no_stats), 0);
    assert_false(exists(pa));
    assert_true(exists(pb));
    capture_store_finished(b, NULL);
    capture_store_detach(&cfg);
    unlink(pb);
}

static void test_stop_new_and_reconcile(void **state)
{
    (void)state;
    char prefix[300], pa[512], pb[512];
    struct capture_cfg cfg, cfg2;
    struct capture_runtime rt, rt2;
    cfg_init(&cfg, &rt, prefix, sizeof(prefix), "s",
             (struct capture_limits){.max_total_bytes = 10000, .max_files = 5});
    /* a second config of the same prefix shares the account; the smaller budget holds */
    cfg_init(&cfg2, &rt2, prefix, sizeof(prefix), "s",
             (struct capture_limits){.max_total_bytes = 1000, .max_files = 9});
    assert_int_equal(capture_store_attach(&cfg), 0);
    assert_int_equal(capture_store_attach(&cfg2), 0);
    assert_ptr_equal(cfg.store, cfg2.store);
    struct capture_store_file *a, *b;
    make_file("s_1.pb", 950, 0, pa, sizeof(pa));
    assert_int_equal(capture_store_add(cfg.store, pa, 1, "l", "capture", &a), 0);
    assert_int_equal(capture_store_charge(a, 950, &no_stats), 0);
    capture_store_finished(a, NULL);
    assert_true(capture_store_admit(cfg.store)); /* 950 of 1000 */
    make_file("s_2.pb", 0, 0, pb, sizeof(pb));
    assert_int_equal(capture_store_add(cfg.store, pb, 2, "l", "capture", &b), 0);
    assert_int_equal(capture_store_charge(b, 100, &no_stats), -EDQUOT);
    assert_true(exists(pa)); /* stop_new deletes nothing */
    assert_false(capture_store_admit(cfg.store));
    capture_store_finished(b, NULL);
    assert_false(capture_store_admit(cfg.store)); /* 950: still over 90% */
    /* a shipper removes the big file: the tick notices and capture resumes */
    unlink(pa);
    capture_store_tick();
    assert_true(capture_store_admit(cfg.store));
    capture_store_detach(&cfg2);
    capture_store_detach(&cfg);
    unlink(pb);
}

/* GET /captures' JSON with at most MAX_FINISHED finished files per prefix (caller frees). */
static char *json_of(size_t max_finished)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(capture_store_write_json(f, max_finished), 0);
    fclose(f);
    return text;
}

/* make_series(BASE, N, SIZED), a budget-less config of prefix BASE attached (CFG, RT, PREFIX of
 * 300 bytes, FIRST of 512: the caller's), and its JSON listing MAX_FINISHED (caller frees). */
static char *series_json(const char *base, int n, bool sized, size_t max_finished,
                         struct capture_cfg *cfg, struct capture_runtime *rt, char *prefix,
                         char *first)
{
    make_series(base, n, sized, first, 512);
    cfg_init(cfg, rt, prefix, 300, base, (struct capture_limits){0});
    assert_int_equal(capture_store_attach(cfg), 0);
    return json_of(max_finished);
}

static void test_json_caps_finished(void **state)
{
    (void)state;
    char prefix[300], first[512];
    struct capture_cfg cfg;
    struct capture_runtime rt;
    char *text = series_json("j", 5, true, 2, &cfg, &rt, prefix, first);
    assert_non_null(strstr(text, "\"files\": 5"));
    assert_non_null(strstr(text, "\"finished_not_listed\": 3"));
    /* newest first: j_5 and j_4 listed, j_3 not */
    char *p5 = strstr(text, "j_5.pb"), *p4 = strstr(text, "j_4.pb");
    assert_non_null(p5);
    assert_non_null(p4);
    assert_true(p5 < p4);
    assert_null(strstr(text, "j_3.pb"));
    free(text);
    capture_store_detach(&cfg);
}

/* Without a budget an account only lists: it keeps the newest 1000 finished files (memory is
 * bounded by the configuration), forgetting older ones without deleting them. */
static void test_unlimited_keeps_newest(void **state)
{
    (void)state;
    char prefix[300], first[512];
    struct capture_cfg cfg;
    struct capture_runtime rt;
    char *text = series_json("u", 1003, false, 5000, &cfg, &rt, prefix, first);
    assert_non_null(strstr(text, "\"files\": 1000,"));
    assert_non_null(strstr(text, "u_4.pb\""));
    assert_null(strstr(text, "u_3.pb\""));
    assert_true(exists(first)); /* forgotten, not deleted */
    free(text);
    capture_store_detach(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scan_order_and_delete_oldest),
        cmocka_unit_test(test_open_file_never_deleted),
        cmocka_unit_test(test_stop_new_and_reconcile),
        cmocka_unit_test(test_json_caps_finished),
        cmocka_unit_test(test_unlimited_keeps_newest),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}

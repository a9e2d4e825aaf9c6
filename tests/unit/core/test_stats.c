/* core/stats: registration after stats_freeze (a config reload while workers count): known names
 * keep their ids and values, new names start at zero in every thread's array, and a thread
 * adding to its cells meanwhile never sees its array move. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "core/stats.h"

struct adder {
    stat_id id;
    int slot;
    int n;
};

static void *adder_main(void *arg)
{
    struct adder *a = arg;
    stats_bind_thread(a->slot);
    for (int i = 0; i < a->n; i++)
        stats_inc(a->id);
    return NULL;
}

static void test_register_after_freeze(void **state)
{
    (void)state;
    stat_id a = stats_register("cluster.a.upstream_cx_total", STAT_COUNTER);
    assert_int_equal(stats_freeze(2), 0);
    stats_add(a, 5); /* the main thread's slot */
    struct adder add = {.id = a, .slot = 0, .n = 200000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, adder_main, &add), 0);
    /* a reload registers while the worker counts */
    stat_id ids[5000];
    char name[64];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "listener.l%d.downstream_cx_total", i);
        ids[i] = stats_register(name, STAT_COUNTER);
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(stats_register("cluster.a.upstream_cx_total", STAT_COUNTER), a);
    assert_int_equal(stats_get(a), 5 + 200000);
    for (int i = 0; i < 5000; i++)
        assert_int_equal(stats_get(ids[i]), 0);
    stats_inc(ids[4999]);
    assert_int_equal(stats_get(ids[4999]), 1);
    stat_id found;
    assert_true(stats_find("listener.l4999.downstream_cx_total", &found));
    assert_int_equal(found, ids[4999]);
    stats_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_after_freeze),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

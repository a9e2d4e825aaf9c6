/* core/log: Envoy's level names, and the header's names next to <syslog.h>'s. Including
 * <syslog.h> first is the test: its LOG_INFO/LOG_DEBUG macros once broke core/log.h's enum. */
#include <syslog.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/log.h"

static void test_envoy_level_names(void **state)
{
    static const struct {
        const char *name;
        enum log_level level;
    } names[] = {{"trace", ST_LOG_TRACE},       {"debug", ST_LOG_DEBUG}, {"info", ST_LOG_INFO},
                 {"warning", ST_LOG_WARN},      {"warn", ST_LOG_WARN},   {"error", ST_LOG_ERROR},
                 {"critical", ST_LOG_CRITICAL}, {"off", ST_LOG_OFF}};
    (void)state;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        enum log_level got = ST_LOG_OFF;
        assert_int_equal(log_level_parse(names[i].name, &got), 0);
        assert_int_equal(got, names[i].level);
    }
    enum log_level untouched = ST_LOG_INFO;
    assert_int_equal(log_level_parse("verbose", &untouched), -EINVAL);
    assert_int_equal(log_level_parse("INFO", &untouched), -EINVAL);
    assert_int_equal(untouched, ST_LOG_INFO);
}

static void test_enabled_follows_level(void **state)
{
    (void)state;
    log_set_level(ST_LOG_WARN);
    assert_false(log_enabled(ST_LOG_INFO));
    assert_true(log_enabled(ST_LOG_WARN));
    assert_true(log_enabled(ST_LOG_CRITICAL));
    log_set_level(ST_LOG_OFF);
    assert_false(log_enabled(ST_LOG_CRITICAL));
    /* syslog's priorities are still there, untouched */
    assert_int_equal(LOG_INFO, 6);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envoy_level_names),
        cmocka_unit_test(test_enabled_follows_level),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

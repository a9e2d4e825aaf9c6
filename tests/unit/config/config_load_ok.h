/* A config the test expects to load: loaded from YAML (named "t.yaml"), or the test fails with
 * the loader's message. Shared by the config unit tests (cmocka: include after cmocka.h). */
#ifndef SOCKTAP_TESTS_CONFIG_LOAD_OK_H
#define SOCKTAP_TESTS_CONFIG_LOAD_OK_H

#include <string.h>

#include "config/config.h"

static inline struct socktap_config *load_ok(const char *yaml)
{
    struct cfg_err err = {0};
    struct socktap_config *cfg = NULL;
    int rc = config_load_string("t.yaml", yaml, strlen(yaml), &cfg, &err);
    if (rc)
        print_error("unexpected error: %s\n", err.msg);
    assert_int_equal(rc, 0);
    assert_non_null(cfg);
    return cfg;
}

#endif

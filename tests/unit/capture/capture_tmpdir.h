/* The capture unit tests' temporary directory: g_dir, made by setup_dir and removed with its
 * contents by teardown_dir (cmocka group setup/teardown). Included by one test file each. */
#ifndef SOCKTAP_TESTS_CAPTURE_TMPDIR_H
#define SOCKTAP_TESTS_CAPTURE_TMPDIR_H

#include <stdio.h>
#include <stdlib.h>

static char g_dir[256];

static int setup_dir(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/socktap-capture-unit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

#endif

/* The transport-socket registry, built here as if socktap had been configured with
 * -DSOCKTAP_CAPTURE=OFF: the registry is included (not linked) so this one test sees the
 * "compiled out" branch while the rest of the suite uses the normal build. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#undef SOCKTAP_CAPTURE
#include "transport/ts_registry.c"

static const struct cfg_node *fake_seen;
static int fake_parses, fake_frees;

static int fake_parse(struct ts_parse_ctx *ctx, const struct cfg_node *config,
                      const struct cfg_path *path, void **out_cfg)
{
    fake_seen = config;
    fake_parses++;
    *out_cfg = malloc(1);
    return *out_cfg ? 0 : -ENOMEM;
}

static void fake_free(void *cfg)
{
    fake_frees++;
    free(cfg);
}

static const char *const fake_names[] = {"fake", "envoy.transport_sockets.fake", NULL};
static const char *const fake_urls[] = {"type.googleapis.com/fake.v3.Fake",
                                        "type.googleapis.com/fake.v2.Fake", NULL};
static const struct ts_factory fake_factory = {
    .names = fake_names, .type_urls = fake_urls, .parse = fake_parse, .free_cfg = fake_free};

/* Parses the `ts:` value of YAML; returns the rc and leaves the message in *ERR. */
static int parse(const char *yaml, struct cfg_err *err, struct ts_config *out)
{
    struct cfg_doc *doc;
    struct cfg_path p = CFG_PATH_KEY(NULL, "ts");
    struct ts_parse_ctx ctx = {.side = TS_SIDE_UPSTREAM, .owner_name = "cluster.x"};
    int rc;
    memset(err, 0, sizeof(*err));
    assert_int_equal(cfg_doc_load_string("r.yaml", yaml, strlen(yaml), &doc, err), 0);
    ctx.err = err;
    ctx.doc = doc;
    fake_seen = NULL;
    rc = ts_config_parse(&ctx, cfg_map_get(doc->root, "ts"), &p, out);
    if (!rc && fake_seen) {
        /* The view must not contain "@type"; check before the document goes away. */
        assert_null(cfg_map_get(fake_seen, "@type"));
        assert_non_null(cfg_map_get(fake_seen, "x"));
    }
    cfg_doc_free(doc);
    return rc;
}

static void test_capture_compiled_out(void **state)
{
    struct cfg_err err;
    struct ts_config tc;
    ts_registry_add(&fake_factory);
    ts_registry_add(&fake_factory); /* idempotent */
    assert_int_equal(parse("ts: {name: capture}\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:12: ts.name: transport socket 'capture' is not "
                                 "available: socktap was built with -DSOCKTAP_CAPTURE=OFF");
    assert_int_equal(parse("ts:\n  name: envoy.transport_sockets.tap\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:2:9: ts.name: transport socket "
                                 "'envoy.transport_sockets.tap' is not available: socktap was "
                                 "built with -DSOCKTAP_CAPTURE=OFF");
}

static void test_unknown_lists_registered(void **state)
{
    struct cfg_err err;
    struct ts_config tc;
    ts_registry_add(&fake_factory);
    assert_int_equal(parse("ts: {name: nope}\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:12: ts.name: unknown transport socket 'nope' "
                                 "(registered: fake, envoy.transport_sockets.fake)");
    assert_int_equal(parse("ts: {config: {}}\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:5: ts: missing required key 'name'");
    assert_int_equal(parse("ts: {name: fake, typed_config: {x: 1}}\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:32: ts.typed_config: missing required key '@type'");
    assert_int_equal(parse("ts: {name: fake, typed_config: {\"@type\": a.b/C, x: 1}}\n", &err, &tc),
                     -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:42: ts.typed_config.@type: expected one of "
                                 "type.googleapis.com/fake.v3.Fake, "
                                 "type.googleapis.com/fake.v2.Fake for transport socket 'fake', "
                                 "got \"a.b/C\"");
    assert_int_equal(parse("ts: {name: fake, config: {}, typed_config: {}}\n", &err, &tc), -EINVAL);
    assert_string_equal(err.msg, "r.yaml:1:44: ts.typed_config: give either 'config' (v2) or "
                                 "'typed_config' (v3), not both");
}

static void test_parse_forms(void **state)
{
    struct cfg_err err;
    struct ts_config tc;
    ts_registry_add(&fake_factory);
    fake_parses = fake_frees = 0;
    assert_int_equal(parse("ts:\n  name: fake\n  typed_config:\n    \"@type\": "
                           "type.googleapis.com/fake.v2.Fake\n    x: 1\n",
                           &err, &tc),
                     0);
    assert_ptr_equal(tc.factory, &fake_factory);
    assert_non_null(tc.cfg);
    ts_config_free(&tc);
    assert_int_equal(fake_frees, 1);
    assert_null(tc.factory);
    assert_null(tc.cfg);
    assert_int_equal(parse("ts: {name: envoy.transport_sockets.fake, config: {x: 2}}\n", &err, &tc),
                     0);
    ts_config_free(&tc);
    assert_int_equal(parse("ts: {name: fake, config: }\n", &err, &tc), 0);
    assert_null(fake_seen); /* YAML null config = no config */
    ts_config_free(&tc);
    assert_int_equal(parse("ts: {name: fake}\n", &err, &tc), 0);
    assert_null(fake_seen);
    ts_config_free(&tc);
    assert_int_equal(fake_parses, 4);
    assert_int_equal(fake_frees, 4);
    ts_config_default(&tc);
    assert_ptr_equal(tc.factory, &raw_socket_factory);
    assert_null(tc.cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capture_compiled_out),
        cmocka_unit_test(test_unknown_lists_registered),
        cmocka_unit_test(test_parse_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

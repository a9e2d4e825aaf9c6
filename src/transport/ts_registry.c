/* The transport-socket registry: Envoy names -> factories, and the parser of a
 * `transport_socket:` map.
 *
 * Design: a small fixed array filled once on the main thread (ts_registry_init, before workers
 * start) and only read afterwards, so lookups need no lock. Kinds that can be compiled out
 * (capture/tap) are still known here by name so that a config using them gets "not available
 * in this build" instead of a misleading "unknown transport socket". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/name_list.h"
#include "transport/raw.h"
#include "transport/ts_registry.h"

static const struct ts_factory *ts_factories[TS_REGISTRY_MAX];
static size_t ts_nfactories;

void ts_registry_add(const struct ts_factory *f)
{
    size_t i;
    for (i = 0; i < ts_nfactories; i++)
        if (ts_factories[i] == f)
            return;
    if (ts_nfactories == TS_REGISTRY_MAX) {
        /* A programming error (too many built-in kinds), not a runtime condition. */
        log_msg(ST_LOG_CRITICAL, LOG_NO_CONN, "transport socket registry full (%d kinds)",
                TS_REGISTRY_MAX);
        abort();
    }
    ts_factories[ts_nfactories++] = f;
}

void ts_registry_shutdown(void)
{
    for (size_t i = 0; i < ts_nfactories; i++)
        if (ts_factories[i]->shutdown)
            ts_factories[i]->shutdown();
}

void ts_registry_start(struct event_base *base)
{
    for (size_t i = 0; i < ts_nfactories; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen |= ts_factories[j]->start == ts_factories[i]->start;
        if (ts_factories[i]->start && !seen)
            ts_factories[i]->start(base);
    }
}

/* As ts_registry_start: kinds sharing one hook (capture and tap) are called once. */
void ts_registry_set_waker(int efd)
{
    for (size_t i = 0; i < ts_nfactories; i++) {
        bool seen = false;
        for (size_t j = 0; j < i; j++)
            seen |= ts_factories[j]->set_waker == ts_factories[i]->set_waker;
        if (ts_factories[i]->set_waker && !seen)
            ts_factories[i]->set_waker(efd);
    }
}

int ts_registry_write_captures(FILE *out, size_t max_finished)
{
    for (size_t i = 0; i < ts_nfactories; i++)
        if (ts_factories[i]->write_captures)
            return ts_factories[i]->write_captures(out, max_finished);
    return -ENOENT;
}

int ts_config_set_capture(const struct ts_config *ts, bool enabled)
{
    if (!ts->factory || !ts->factory->set_capture)
        return -ENOENT;
    return ts->factory->set_capture(ts->cfg, enabled);
}

void ts_registry_fence(struct ts_fence *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < ts_nfactories; i++)
        if (ts_factories[i]->fence)
            out->mark[i] = ts_factories[i]->fence();
}

bool ts_registry_fence_passed(const struct ts_fence *f)
{
    for (size_t i = 0; i < ts_nfactories; i++)
        if (ts_factories[i]->fence_passed && !ts_factories[i]->fence_passed(f->mark[i]))
            return false;
    return true;
}

const struct ts_factory *ts_registry_find(const char *name)
{
    size_t i;
    if (!name)
        return NULL;
    for (i = 0; i < ts_nfactories; i++)
        for (const char *const *n = ts_factories[i]->names; n && *n; n++)
            if (!strcmp(*n, name))
                return ts_factories[i];
    return NULL;
}

const struct ts_factory *ts_registry_find_legacy(const char *key)
{
    for (size_t i = 0; i < ts_nfactories; i++)
        if (ts_factories[i]->legacy_key && !strcmp(ts_factories[i]->legacy_key, key))
            return ts_factories[i];
    return NULL;
}

#ifndef SOCKTAP_CAPTURE
static bool ts_name_is_capture(const char *name)
{
    static const char *const names[] = {"envoy.transport_sockets.capture",
                                        "envoy.transport_sockets.tap", "capture", "tap", NULL};
    for (const char *const *n = names; *n; n++)
        if (!strcmp(*n, name))
            return true;
    return false;
}
#endif

static void ts_list_names(char *buf, size_t size)
{
    struct name_list l;
    name_list_init(&l, buf, size);
    for (size_t i = 0; i < ts_nfactories; i++)
        for (const char *const *n = ts_factories[i]->names; n && *n; n++)
            name_list_add(&l, *n);
}

/* A kind without a parser takes no settings: an empty map is fine, anything else is a typo. */
static int ts_factory_parse(struct ts_parse_ctx *ctx, const struct ts_factory *f, const char *name,
                            const struct cfg_node *config, const struct cfg_path *path, void **out)
{
    *out = NULL;
    if (f->parse)
        return f->parse(ctx, config, path, out);
    if (config && config->n) {
        struct cfg_path kp = CFG_PATH_KEY(path, config->entries[0].key->str);
        return cfg_error(ctx->err, ctx->doc, config->entries[0].key, &kp,
                         "unknown key '%s' (transport socket '%s' takes no settings)",
                         config->entries[0].key->str, name);
    }
    return 0;
}

int ts_config_parse(struct ts_parse_ctx *ctx, const struct cfg_node *node,
                    const struct cfg_path *path, struct ts_config *out)
{
    static const char *const keys[] = {"name", "config", "typed_config", NULL};
    struct cfg_path name_path = CFG_PATH_KEY(path, "name");
    const struct cfg_node *name_node, *config;
    struct cfg_path config_path;
    const struct ts_factory *f;
    const char *name;
    char list[512], owner[160];
    void *parsed = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = cfg_check_keys(ctx->err, ctx->doc, node, path, keys);
    if (rc)
        return rc;
    name_node = cfg_map_get(node, "name");
    if (!name_node)
        return cfg_error(ctx->err, ctx->doc, node, path, "missing required key 'name'");
    rc = cfg_get_string(ctx->err, ctx->doc, name_node, &name_path, &name);
    if (rc)
        return rc;
    f = ts_registry_find(name);
    if (!f) {
#ifndef SOCKTAP_CAPTURE
        if (ts_name_is_capture(name))
            return cfg_error(ctx->err, ctx->doc, name_node, &name_path,
                             "transport socket '%s' is not available: socktap was built with "
                             "-DSOCKTAP_CAPTURE=OFF",
                             name);
#endif
        ts_list_names(list, sizeof(list));
        return cfg_error(ctx->err, ctx->doc, name_node, &name_path,
                         "unknown transport socket '%s' (registered: %s)", name, list);
    }

    snprintf(owner, sizeof(owner), "transport socket '%s'", name);
    rc = cfg_extension_settings(ctx->err, ctx->doc, node, path, f->type_urls, owner, &config,
                                &config_path);
    if (rc)
        return rc;
    rc = ts_factory_parse(ctx, f, name, config, &config_path, &parsed);
    if (rc) {
        /* A parser that failed without saying why would leave the user with nothing. */
        if (!ctx->err->set)
            cfg_error(ctx->err, ctx->doc, node, path, "invalid transport socket '%s' (%d)", name,
                      rc);
        return rc;
    }
    out->factory = f;
    out->cfg = parsed;
    return 0;
}

void ts_config_default(struct ts_config *out)
{
    out->factory = &raw_socket_factory;
    out->cfg = NULL;
}

int ts_config_create(const struct ts_config *cfg, const struct ts_conn_info *info,
                     struct transport_socket **out)
{
    const struct ts_factory *f = cfg && cfg->factory ? cfg->factory : &raw_socket_factory;
    return f->create(cfg ? cfg->cfg : NULL, info, out);
}

void ts_config_free(struct ts_config *cfg)
{
    if (!cfg)
        return;
    if (cfg->factory && cfg->factory->free_cfg && cfg->cfg)
        cfg->factory->free_cfg(cfg->cfg);
    cfg->factory = NULL;
    cfg->cfg = NULL;
}

struct live_hub *ts_config_live(const struct ts_config *ts, bool wire)
{
    return ts->factory && ts->factory->live ? ts->factory->live(ts->cfg, wire) : NULL;
}

const char *ts_config_admin_id(const struct ts_config *ts)
{
    return ts->factory && ts->factory->admin_id ? ts->factory->admin_id(ts->cfg) : NULL;
}

/* YAML text -> struct cfg_node tree with 1-based line:col, and the typed getters.
 *
 * Design: we drive libyaml's event parser ourselves instead of yaml_parser_load() because the
 * document API resolves aliases into shared nodes (an alias bomb costs nothing to write and
 * everything to walk) and cannot tell us about duplicate keys at the second key's position.
 * Building from events lets us reject tags, deep nesting, huge scalars and duplicate keys while
 * we still know the exact mark and the key path of the offending node.
 *
 * Anchors, aliases and merge keys (`<<: *base`, YAML 1.1's merge type, which Envoy's YAML loader
 * takes) are expanded into copies as they are read: every copied node counts against
 * CFG_MAX_NODES, so an alias bomb stops at that bound with an error at the alias, and the tree
 * stays a tree (one owner per node, duplicate keys found as before). A copy keeps the line:col of
 * what it copies, so an error in aliased text points where that text was written. Rejected:
 * sharing the anchored node (cheap, but then every walk and free must know about a DAG).
 *
 * The builder keeps an explicit stack (bounded by CFG_MAX_DEPTH), so hostile input cannot
 * exhaust the C stack; freeing and copying recurse, but only as deep as that bound.
 *
 * Rejected: keeping libyaml's document around (it owns strings we could point into, but its
 * nodes have no key paths and every getter would re-walk it). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "cfgtree/cfg_node.h"

#define CFG_MAX_DEPTH      64
#define CFG_MAX_SCALAR     (1024u * 1024u)
#define CFG_MAX_FILE       (64u * 1024u * 1024u)
#define CFG_MAX_NODES      1000000u /* per document; see builder_event */
#define CFG_PATH_MAX       512
#define CFG_DESCRIBE_MAX   64
#define CFG_MAX_DURATION_S 315576000000ull /* protobuf Duration's limit (10,000 years) */

/* ---- error formatting ---- */

static void err_vset(struct cfg_err *err, const char *file, unsigned line, unsigned col,
                     const char *path, const char *fmt, va_list ap)
{
    char msg[768];
    if (!err || err->set)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (line && path && *path)
        snprintf(err->msg, sizeof(err->msg), "%s:%u:%u: %s: %s", file, line, col, path, msg);
    else if (line)
        snprintf(err->msg, sizeof(err->msg), "%s:%u:%u: %s", file, line, col, msg);
    else if (path && *path)
        snprintf(err->msg, sizeof(err->msg), "%s: %s: %s", file, path, msg);
    else
        snprintf(err->msg, sizeof(err->msg), "%s: %s", file, msg);
    err->set = true;
}

static int __attribute__((format(printf, 6, 7)))
err_set(struct cfg_err *err, const char *file, unsigned line, unsigned col, const char *path,
        const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, file, line, col, path, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Appends up to N bytes of S at *POS in BUF, always NUL-terminating. */
static void buf_append(char *buf, size_t size, size_t *pos, const char *s, size_t n)
{
    if (*pos + 1 >= size)
        return;
    if (n > size - 1 - *pos)
        n = size - 1 - *pos;
    memcpy(buf + *pos, s, n);
    *pos += n;
    buf[*pos] = '\0';
}

char *cfg_path_format(const struct cfg_path *path, char *buf, size_t size)
{
    const struct cfg_path *steps[CFG_MAX_DEPTH * 2 + 8];
    size_t n = 0, pos = 0;
    if (!size)
        return buf;
    buf[0] = '\0';
    for (const struct cfg_path *p = path; p && n < sizeof(steps) / sizeof(steps[0]); p = p->parent)
        steps[n++] = p;
    while (n--) {
        const struct cfg_path *p = steps[n];
        if (p->key) {
            if (pos)
                buf_append(buf, size, &pos, ".", 1);
            buf_append(buf, size, &pos, p->key, strlen(p->key));
        } else {
            char idx[32];
            int len = snprintf(idx, sizeof(idx), "[%zu]", p->index);
            buf_append(buf, size, &pos, idx, (size_t)len);
        }
    }
    return buf;
}

int cfg_error(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
              const struct cfg_path *path, const char *fmt, ...)
{
    char pbuf[CFG_PATH_MAX];
    va_list ap;
    cfg_path_format(path, pbuf, sizeof(pbuf));
    va_start(ap, fmt);
    err_vset(err, doc && doc->file ? doc->file : "<config>", node ? node->line : 0,
             node ? node->col : 0, pbuf, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

bool cfg_node_is_null(const struct cfg_node *node)
{
    if (!node)
        return true;
    if (node->type != CFG_SCALAR || node->quoted)
        return false;
    return node->len == 0 || !strcmp(node->str, "~") || !strcmp(node->str, "null") ||
           !strcmp(node->str, "Null") || !strcmp(node->str, "NULL");
}

const char *cfg_node_describe(const struct cfg_node *node, char *buf, size_t size)
{
    size_t pos = 0, i, limit;
    if (!size)
        return buf;
    buf[0] = '\0';
    if (!node) {
        buf_append(buf, size, &pos, "nothing", 7);
        return buf;
    }
    if (node->type == CFG_MAP) {
        buf_append(buf, size, &pos, "a mapping", 9);
        return buf;
    }
    if (node->type == CFG_SEQ) {
        buf_append(buf, size, &pos, "a sequence", 10);
        return buf;
    }
    if (cfg_node_is_null(node)) {
        buf_append(buf, size, &pos, "null", 4);
        return buf;
    }
    /* Quote and escape so control bytes cannot forge a second log line; cut long values at a
     * UTF-8 character boundary so the message stays valid text. */
    limit = node->len;
    if (limit > CFG_DESCRIBE_MAX) {
        limit = CFG_DESCRIBE_MAX;
        while (limit > 0 && ((unsigned char)node->str[limit] & 0xC0) == 0x80)
            limit--;
    }
    buf_append(buf, size, &pos, "\"", 1);
    for (i = 0; i < limit; i++) {
        unsigned char c = (unsigned char)node->str[i];
        /* Keep room for the longest escape and the closing `..."`. */
        if (pos + 4 + 5 > size) {
            limit = i;
            while (limit > 0 && ((unsigned char)node->str[limit] & 0xC0) == 0x80)
                limit--;
            pos -= i - limit; /* drop a partial UTF-8 character already copied */
            buf[pos] = '\0';
            break;
        }
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            buf_append(buf, size, &pos, esc, 2);
        } else if (c == '\n') {
            buf_append(buf, size, &pos, "\\n", 2);
        } else if (c == '\t') {
            buf_append(buf, size, &pos, "\\t", 2);
        } else if (c < 0x20 || c == 0x7f) {
            int n = snprintf(esc, sizeof(esc), "\\x%02x", c);
            buf_append(buf, size, &pos, esc, (size_t)n);
        } else {
            buf_append(buf, size, &pos, (const char *)&node->str[i], 1);
        }
    }
    if (limit < node->len)
        buf_append(buf, size, &pos, "...", 3);
    buf_append(buf, size, &pos, "\"", 1);
    return buf;
}

/* ---- tree building ---- */

static void node_free(struct cfg_node *node)
{
    size_t i;
    if (!node)
        return;
    if (node->type == CFG_MAP) {
        for (i = 0; i < node->n; i++) {
            node_free(node->entries[i].key);
            node_free(node->entries[i].value);
        }
        free(node->entries);
    } else if (node->type == CFG_SEQ) {
        for (i = 0; i < node->n; i++)
            node_free(node->items[i]);
        free(node->items);
    }
    free(node->str);
    free(node);
}

void cfg_doc_free(struct cfg_doc *doc)
{
    size_t i;
    if (!doc)
        return;
    node_free(doc->root);
    for (i = 0; i < doc->nviews; i++) {
        /* Views share children with the tree: free only the wrapper and its array. */
        free(doc->views[i]->entries);
        free(doc->views[i]);
    }
    free(doc->views);
    free(doc->file);
    free(doc->text);
    free(doc);
}

/* Duplicate-key detection over every mapping of the document at once: an open-addressing set of
 * (mapping, key) pairs, so 200k keys cost 200k probes instead of the 2*10^10 comparisons of a
 * per-mapping scan (> 30 s before). Rejected: a set per mapping (one allocation per mapping for
 * the few-key mappings that make up nearly all of a config). Pointers stay valid because nodes
 * are only freed once the whole document is given up. */
struct key_slot {
    const struct cfg_node *map, *key;
};

struct key_set {
    struct key_slot *slots;
    size_t cap, n; /* cap a power of two, kept at most half full */
};

static size_t key_hash(const struct cfg_node *map, const struct cfg_node *key)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)map;
    for (size_t i = 0; i < key->len; i++)
        h = (h ^ (unsigned char)key->str[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

static bool key_equal(const struct cfg_node *a, const struct cfg_node *b)
{
    return a->len == b->len && !memcmp(a->str, b->str, a->len);
}

static int key_set_grow(struct key_set *ks)
{
    size_t cap = ks->cap ? ks->cap * 2 : 64, i, j;
    struct key_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (i = 0; i < ks->cap; i++) {
        if (!ks->slots[i].map)
            continue;
        for (j = key_hash(ks->slots[i].map, ks->slots[i].key) & (cap - 1); slots[j].map;
             j = (j + 1) & (cap - 1))
            ;
        slots[j] = ks->slots[i];
    }
    free(ks->slots);
    ks->slots = slots;
    ks->cap = cap;
    return 0;
}

/* Adds KEY of MAP; returns 0, -EEXIST with *PREV set to the earlier equal key, or -ENOMEM. */
static int key_set_add(struct key_set *ks, const struct cfg_node *map, const struct cfg_node *key,
                       const struct cfg_node **prev)
{
    size_t j;
    int rc;
    if ((ks->n + 1) * 2 > ks->cap && (rc = key_set_grow(ks)))
        return rc;
    for (j = key_hash(map, key) & (ks->cap - 1); ks->slots[j].map; j = (j + 1) & (ks->cap - 1)) {
        if (ks->slots[j].map == map && key_equal(ks->slots[j].key, key)) {
            *prev = ks->slots[j].key;
            return -EEXIST;
        }
    }
    ks->slots[j].map = map;
    ks->slots[j].key = key;
    ks->n++;
    return 0;
}

struct build_frame {
    struct cfg_node *node;
    struct cfg_node *key; /* maps: the key waiting for its value */
    size_t cap;
    struct cfg_node *merge; /* maps: the value of its `<<` key, applied at the map's end */
    yaml_mark_t merge_mark; /* where that value starts */
    size_t anchor;          /* containers: index + 1 of the anchor naming this node, or 0 */
};

struct anchor {
    char *name;
    struct cfg_node *node; /* NULL while the node is still being read (an alias to it loops) */
};

#define CFG_MAX_ANCHORS 10000u

struct builder {
    const char *file;
    struct cfg_err *err;
    const char *text;
    size_t len;
    struct build_frame stack[CFG_MAX_DEPTH + 1];
    size_t depth;
    struct cfg_node *root;
    unsigned docs;
    size_t nodes;
    struct key_set keys;
    struct anchor *anchors;
    size_t nanchors, anchors_cap;
    /* `<<` values, kept (not freed) until the end: an anchor may name a node inside one */
    struct cfg_node **merged;
    size_t nmerged, merged_cap;
};

/* The key path of the slot the next node goes into, built from the stack. */
static const char *builder_path(const struct builder *b, char *buf, size_t size, bool with_key)
{
    size_t pos = 0, i;
    buf[0] = '\0';
    for (i = 0; i < b->depth; i++) {
        const struct build_frame *f = &b->stack[i];
        if (f->node->type == CFG_MAP) {
            if (!f->key || (!with_key && i + 1 == b->depth))
                continue;
            if (pos)
                buf_append(buf, size, &pos, ".", 1);
            buf_append(buf, size, &pos, f->key->str, strlen(f->key->str));
        } else {
            char idx[32];
            int n = snprintf(idx, sizeof(idx), "[%zu]", f->node->n);
            buf_append(buf, size, &pos, idx, (size_t)n);
        }
    }
    return buf;
}

static int builder_fail(struct builder *b, yaml_mark_t mark, bool with_key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int builder_fail(struct builder *b, yaml_mark_t mark, bool with_key, const char *fmt, ...)
{
    char path[CFG_PATH_MAX];
    va_list ap;
    builder_path(b, path, sizeof(path), with_key);
    va_start(ap, fmt);
    err_vset(b->err, b->file, (unsigned)mark.line + 1, (unsigned)mark.column + 1, path, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
    size_t ncap;
    void *p;
    if (n < *cap)
        return 0;
    ncap = *cap ? *cap * 2 : 4;
    p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

static bool is_merge_key(const struct cfg_node *key)
{
    return key && !key->quoted && !strcmp(key->str, "<<");
}

/* Keeps NODE (a `<<` value) until the document is built. Takes ownership. */
static int builder_keep(struct builder *b, struct cfg_node *node)
{
    int rc = grow((void **)&b->merged, &b->merged_cap, b->nmerged, sizeof(*b->merged));
    if (rc) {
        node_free(node);
        return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
    }
    b->merged[b->nmerged++] = node;
    return 0;
}

/* Places NODE (already positioned) into the current container, or makes it the root. Takes
 * ownership of NODE whatever happens. */
static int builder_attach(struct builder *b, struct cfg_node *node, yaml_mark_t mark)
{
    struct build_frame *f;
    int rc;
    if (!b->depth) {
        b->root = node;
        return 0;
    }
    f = &b->stack[b->depth - 1];
    if (f->node->type == CFG_MAP && is_merge_key(f->key)) {
        /* `<<: *base` or `<<: [*a, *b]`: applied when the map ends, explicit keys winning. The
         * `<<` key is in the key set (a second one is a duplicate): kept until the end too. */
        struct cfg_node *merge_key = f->key;
        f->key = NULL;
        if ((rc = builder_keep(b, merge_key))) {
            node_free(node);
            return rc;
        }
        /* every item of a list must be a mapping, not just the last one (fuzz_config found
         * `<<: [[], {a: 1}]` read as a mapping) */
        bool ok = node->type == CFG_MAP || node->type == CFG_SEQ;
        for (size_t i = 0; node->type == CFG_SEQ && i < node->n; i++)
            ok = ok && node->items[i]->type == CFG_MAP;
        if (!ok || (node->type == CFG_SEQ && !node->n)) {
            yaml_mark_t at = {.line = node->line - 1, .column = node->col - 1};
            node_free(node);
            return builder_fail(b, at, false,
                                "a merge key (<<) takes a mapping or a sequence of mappings");
        }
        f->merge = node;
        f->merge_mark = mark;
        return builder_keep(b, node);
    }
    if (f->node->type == CFG_SEQ) {
        rc = grow((void **)&f->node->items, &f->cap, f->node->n, sizeof(*f->node->items));
        if (rc)
            goto err_free_node;
        f->node->items[f->node->n++] = node;
        return 0;
    }
    if (!f->key) {
        const struct cfg_node *prev = NULL;
        if (node->type != CFG_SCALAR) {
            rc = builder_fail(b, mark, true, "mapping keys must be scalars, got %s",
                              node->type == CFG_MAP ? "a mapping" : "a sequence");
            goto err_free_node;
        }
        rc = key_set_add(&b->keys, f->node, node, &prev);
        if (rc == -EEXIST) {
            f->key = node; /* so the path names the duplicate */
            rc = builder_fail(b, mark, true, "duplicate key '%s' (first defined at %u:%u)",
                              node->str, prev->line, prev->col);
            f->key = NULL;
            goto err_free_node;
        }
        if (rc) {
            err_set(b->err, b->file, 0, 0, NULL, "out of memory");
            goto err_free_node;
        }
        f->key = node;
        return 0;
    }
    rc = grow((void **)&f->node->entries, &f->cap, f->node->n, sizeof(*f->node->entries));
    if (rc)
        goto err_free_node;
    f->node->entries[f->node->n].key = f->key;
    f->node->entries[f->node->n].value = node;
    f->node->n++;
    f->key = NULL;
    return 0;

err_free_node:
    node_free(node);
    if (rc == -ENOMEM)
        return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
    return rc;
}

static struct cfg_node *node_new(enum cfg_node_type type, yaml_mark_t mark)
{
    struct cfg_node *node = calloc(1, sizeof(*node));
    if (!node)
        return NULL;
    node->type = type;
    node->line = (unsigned)mark.line + 1;
    node->col = (unsigned)mark.column + 1;
    return node;
}

/* libyaml's reader errors carry a byte offset, not a mark: turn it into line:col (columns in
 * characters, like libyaml's marks). */
static void offset_to_mark(const char *text, size_t len, size_t offset, unsigned *line,
                           unsigned *col)
{
    size_t i;
    *line = 1;
    *col = 1;
    if (offset > len)
        offset = len;
    for (i = 0; i < offset; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            (*line)++;
            *col = 1;
        } else if ((c & 0xC0) != 0x80) {
            (*col)++;
        }
    }
}

static int builder_yaml_error(struct builder *b, yaml_parser_t *parser)
{
    unsigned line, col;
    const char *problem = parser->problem ? parser->problem : "unknown error";
    if (parser->error == YAML_MEMORY_ERROR)
        return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
    if (parser->error == YAML_READER_ERROR) {
        offset_to_mark(b->text, b->len, parser->problem_offset, &line, &col);
        if (parser->problem_value != -1)
            return err_set(b->err, b->file, line, col, NULL, "invalid YAML: %s (byte 0x%02x)",
                           problem, (unsigned)parser->problem_value & 0xff);
        return err_set(b->err, b->file, line, col, NULL, "invalid YAML: %s", problem);
    }
    line = (unsigned)parser->problem_mark.line + 1;
    col = (unsigned)parser->problem_mark.column + 1;
    /* libyaml's wording for a tab ("cannot start any token") hides the usual culprit. */
    if (parser->problem_mark.index < b->len && b->text[parser->problem_mark.index] == '\t')
        return err_set(b->err, b->file, line, col, NULL,
                       "invalid YAML: tab character (YAML indentation must use spaces)");
    if (parser->context && (parser->context_mark.line != parser->problem_mark.line ||
                            parser->context_mark.column != parser->problem_mark.column))
        return err_set(b->err, b->file, line, col, NULL, "invalid YAML: %s %s (started at %u:%u)",
                       problem, parser->context, (unsigned)parser->context_mark.line + 1,
                       (unsigned)parser->context_mark.column + 1);
    if (parser->context)
        return err_set(b->err, b->file, line, col, NULL, "invalid YAML: %s %s", problem,
                       parser->context);
    return err_set(b->err, b->file, line, col, NULL, "invalid YAML: %s", problem);
}

/* A deep copy of SRC into *OUT, counted against CFG_MAX_NODES and CFG_MAX_DEPTH as if it had
 * been written at DEPTH. Returns 0, -EINVAL (a bound, ERR set at MARK) or -ENOMEM. */
static int node_copy(struct builder *b, const struct cfg_node *src, size_t depth, yaml_mark_t mark,
                     struct cfg_node **out)
{
    if (++b->nodes > CFG_MAX_NODES)
        return builder_fail(b, mark, true,
                            "more than %u YAML nodes once aliases are expanded: too large for a "
                            "socktap config",
                            CFG_MAX_NODES);
    if (src->type != CFG_SCALAR && depth >= CFG_MAX_DEPTH)
        return builder_fail(b, mark, true,
                            "nesting deeper than %d levels once aliases are expanded",
                            CFG_MAX_DEPTH);
    struct cfg_node *n = calloc(1, sizeof(*n));
    if (!n)
        goto err_oom;
    *n = *src;
    n->str = NULL;
    n->entries = NULL;
    n->items = NULL;
    n->n = 0;
    *out = n;
    if (src->type == CFG_SCALAR) {
        if (!(n->str = malloc(src->len + 1)))
            goto err_oom;
        memcpy(n->str, src->str, src->len + 1);
        return 0;
    }
    size_t cnt = src->n ? src->n : 1;
    if (src->type == CFG_MAP ? !(n->entries = calloc(cnt, sizeof(*n->entries)))
                             : !(n->items = calloc(cnt, sizeof(*n->items))))
        goto err_oom;
    for (size_t i = 0; i < src->n; i++) {
        int rc;
        if (src->type == CFG_MAP) {
            n->n = i; /* entries[i] may be half made: node_free sees the whole ones, then these */
            rc = node_copy(b, src->entries[i].key, depth + 1, mark, &n->entries[i].key);
            if (!rc)
                rc = node_copy(b, src->entries[i].value, depth + 1, mark, &n->entries[i].value);
            if (rc) {
                node_free(n->entries[i].key);
                node_free(n->entries[i].value);
                return rc;
            }
        } else if ((rc = node_copy(b, src->items[i], depth + 1, mark, &n->items[i]))) {
            node_free(n->items[i]); /* half made: not counted in n */
            n->n = i;
            return rc;
        }
    }
    n->n = src->n;
    return 0;

err_oom:
    return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
}

/* Appends to map F->node copies of the entries of F->merge's mapping(s) whose keys it lacks
 * (YAML's merge: explicit keys win, then earlier mappings of the list). */
static int builder_merge(struct builder *b, struct build_frame *f)
{
    const struct cfg_node *m = f->merge;
    size_t nsrc = m->type == CFG_SEQ ? m->n : 1;
    for (size_t s = 0; s < nsrc; s++) {
        const struct cfg_node *src = m->type == CFG_SEQ ? m->items[s] : m;
        for (size_t i = 0; i < src->n; i++) {
            /* the set keeps the source's key: it lives until the build ends, as the set does */
            const struct cfg_node *prev;
            int rc = key_set_add(&b->keys, f->node, src->entries[i].key, &prev);
            if (rc == -EEXIST)
                continue;
            if (!rc)
                rc = grow((void **)&f->node->entries, &f->cap, f->node->n,
                          sizeof(*f->node->entries));
            if (rc)
                return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
            struct cfg_map_entry *e = &f->node->entries[f->node->n];
            memset(e, 0, sizeof(*e));
            rc = node_copy(b, src->entries[i].key, b->depth, f->merge_mark, &e->key);
            if (!rc)
                rc = node_copy(b, src->entries[i].value, b->depth, f->merge_mark, &e->value);
            if (rc) {
                node_free(e->key);
                node_free(e->value);
                return rc;
            }
            f->node->n++;
        }
    }
    return 0;
}

/* Names NODE (NULL: still being read) ANCHOR; a later anchor of the same name wins, as in YAML.
 * Returns the anchor's index + 1, or 0 with ERR set. */
static size_t anchor_add(struct builder *b, const char *name, struct cfg_node *node,
                         yaml_mark_t mark)
{
    if (b->nanchors >= CFG_MAX_ANCHORS) {
        builder_fail(b, mark, true, "more than %u YAML anchors", CFG_MAX_ANCHORS);
        return 0;
    }
    if (grow((void **)&b->anchors, &b->anchors_cap, b->nanchors, sizeof(*b->anchors)) ||
        !(b->anchors[b->nanchors].name = strdup(name))) {
        err_set(b->err, b->file, 0, 0, NULL, "out of memory");
        return 0;
    }
    b->anchors[b->nanchors].node = node;
    return ++b->nanchors;
}

/* The alias *NAME: a copy of its anchored node, placed as any node read here would be. */
static int builder_alias(struct builder *b, const char *name, yaml_mark_t mark)
{
    const struct anchor *a = NULL;
    for (size_t i = b->nanchors; i-- > 0 && !a;)
        if (!strcmp(b->anchors[i].name, name))
            a = &b->anchors[i];
    if (!a)
        return builder_fail(b, mark, true, "alias *%s names no anchor before it", name);
    if (!a->node)
        return builder_fail(b, mark, true, "alias *%s is inside the node it names (a loop)", name);
    if (a->node->type != CFG_SCALAR && b->depth && b->stack[b->depth - 1].node->type == CFG_MAP &&
        !b->stack[b->depth - 1].key)
        return builder_fail(b, mark, true, "mapping keys must be scalars, got %s",
                            a->node->type == CFG_MAP ? "a mapping" : "a sequence");
    struct cfg_node *copy = NULL;
    int rc = node_copy(b, a->node, b->depth, mark, &copy);
    if (rc) {
        node_free(copy);
        return rc;
    }
    return builder_attach(b, copy, mark);
}

static int builder_event(struct builder *b, yaml_event_t *ev, bool *done)
{
    struct cfg_node *node;
    yaml_char_t *anchor = NULL, *tag = NULL;

    switch (ev->type) {
    case YAML_STREAM_END_EVENT:
        *done = true;
        return 0;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->docs > 1)
            return builder_fail(b, ev->start_mark, false,
                                "multiple YAML documents are not supported");
        return 0;
    case YAML_ALIAS_EVENT:
        return builder_alias(b, (const char *)ev->data.alias.anchor, ev->start_mark);
    case YAML_SCALAR_EVENT:
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
        break;
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT: {
        struct build_frame *f = &b->stack[b->depth - 1];
        int rc = f->merge ? builder_merge(b, f) : 0;
        if (rc)
            return rc;
        node = f->node;
        if (f->anchor)
            b->anchors[f->anchor - 1].node = node; /* complete: aliases may copy it now */
        b->depth--;
        f->node = NULL;
        f->merge = NULL;
        f->anchor = 0;
        return builder_attach(b, node, ev->start_mark);
    }
    default:
        return 0;
    }

    if (tag)
        return builder_fail(b, ev->start_mark, true, "YAML tags (%s) are not supported",
                            (char *)tag);
    /* A large Envoy config (thousands of clusters) is well under 100k nodes; a 20M-element
     * sequence took 2.3 GB before this cap. A node costs ~64 bytes plus its key-set slot, so
     * the cap bounds a parse at about 100 MB. */
    if (++b->nodes > CFG_MAX_NODES)
        return builder_fail(b, ev->start_mark, true,
                            "more than %u YAML nodes: too large for a socktap config",
                            CFG_MAX_NODES);

    if (ev->type == YAML_SCALAR_EVENT) {
        size_t len = ev->data.scalar.length;
        if (len > CFG_MAX_SCALAR)
            return builder_fail(b, ev->start_mark, true,
                                "scalar of %zu bytes exceeds the 1 MiB limit", len);
        node = node_new(CFG_SCALAR, ev->start_mark);
        if (!node || !(node->str = malloc(len + 1))) {
            free(node);
            return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
        }
        memcpy(node->str, ev->data.scalar.value, len);
        node->str[len] = '\0';
        node->len = len;
        node->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        /* named before it is attached: attach may keep it (a key) or free it (an error) */
        if (anchor && !anchor_add(b, (const char *)anchor, node, ev->start_mark)) {
            node_free(node);
            return -EINVAL;
        }
        int rc = builder_attach(b, node, ev->start_mark);
        if (rc && anchor)
            b->anchors[b->nanchors - 1].node = NULL; /* freed by attach */
        return rc;
    }

    /* A container: keys are only ever attached as scalars, so reject here before the stack. */
    if (b->depth && b->stack[b->depth - 1].node->type == CFG_MAP && !b->stack[b->depth - 1].key)
        return builder_fail(b, ev->start_mark, true, "mapping keys must be scalars, got %s",
                            ev->type == YAML_MAPPING_START_EVENT ? "a mapping" : "a sequence");
    if (b->depth >= CFG_MAX_DEPTH)
        return builder_fail(b, ev->start_mark, true, "nesting deeper than %d levels",
                            CFG_MAX_DEPTH);
    node = node_new(ev->type == YAML_MAPPING_START_EVENT ? CFG_MAP : CFG_SEQ, ev->start_mark);
    if (!node)
        return err_set(b->err, b->file, 0, 0, NULL, "out of memory"), -ENOMEM;
    b->stack[b->depth] = (struct build_frame){.node = node};
    b->depth++;
    if (anchor && !(b->stack[b->depth - 1].anchor =
                        anchor_add(b, (const char *)anchor, NULL, ev->start_mark)))
        return -EINVAL; /* the node is on the stack: builder_unwind frees it */
    return 0;
}

/* Frees what only the build needed (anchors, kept `<<` values). */
static void builder_fini(struct builder *b)
{
    for (size_t i = 0; i < b->nanchors; i++)
        free(b->anchors[i].name);
    free(b->anchors);
    for (size_t i = 0; i < b->nmerged; i++)
        node_free(b->merged[i]);
    free(b->merged);
    free(b->keys.slots);
}

static void builder_unwind(struct builder *b)
{
    while (b->depth) {
        struct build_frame *f = &b->stack[--b->depth];
        node_free(f->key);
        node_free(f->node);
    }
    node_free(b->root);
    b->root = NULL;
}

int cfg_doc_load_string(const char *name, const char *text, size_t len, struct cfg_doc **out,
                        struct cfg_err *err)
{
    struct builder b = {.file = name ? name : "<config>", .err = err, .text = text, .len = len};
    struct cfg_doc *doc;
    yaml_parser_t parser;
    bool done = false;
    int rc = 0;

    *out = NULL;
    doc = calloc(1, sizeof(*doc));
    if (doc && (doc->text = malloc(len + 1))) {
        memcpy(doc->text, text, len);
        doc->text[len] = '\0';
        doc->text_len = len;
    }
    if (!doc || !doc->text || !(doc->file = strdup(b.file))) {
        rc = -ENOMEM;
        err_set(err, b.file, 0, 0, NULL, "out of memory");
        goto err_free_doc;
    }
    if (!yaml_parser_initialize(&parser)) {
        rc = -ENOMEM;
        err_set(err, b.file, 0, 0, NULL, "out of memory");
        goto err_free_doc;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    while (!done) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            rc = builder_yaml_error(&b, &parser);
            goto err_unwind;
        }
        rc = builder_event(&b, &ev, &done);
        yaml_event_delete(&ev);
        if (rc)
            goto err_unwind;
    }
    yaml_parser_delete(&parser);
    builder_fini(&b);
    doc->root = b.root;
    *out = doc;
    return 0;

err_unwind:
    builder_unwind(&b);
    yaml_parser_delete(&parser);
    builder_fini(&b);
err_free_doc:
    cfg_doc_free(doc);
    return rc;
}

int cfg_doc_load_file(const char *file, struct cfg_doc **out, struct cfg_err *err)
{
    struct stat st;
    char *text;
    size_t got = 0;
    FILE *fp;
    int fd, rc;

    *out = NULL;
    /* O_NONBLOCK: opening a FIFO for reading blocks until a writer comes (socktap hung forever on
     * `-c fifo`); non-blocking, the open returns and the check below refuses it. */
    fd = open(file, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        err_set(err, file, 0, 0, NULL, "cannot open: %s", strerror(-rc));
        return rc;
    }
    fp = fdopen(fd, "rb");
    if (!fp) {
        rc = -errno;
        close(fd);
        err_set(err, file, 0, 0, NULL, "cannot open: %s", strerror(-rc));
        return rc;
    }
    if (fstat(fileno(fp), &st) < 0) {
        rc = -errno;
        err_set(err, file, 0, 0, NULL, "cannot stat: %s", strerror(-rc));
        goto err_close_file;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        err_set(err, file, 0, 0, NULL, "not a regular file (%s); a config must be a file",
                S_ISFIFO(st.st_mode)   ? "a FIFO"
                : S_ISDIR(st.st_mode)  ? "a directory"
                : S_ISCHR(st.st_mode)  ? "a character device"
                : S_ISSOCK(st.st_mode) ? "a socket"
                                       : "a block device");
        goto err_close_file;
    }
    /* A config is a few KiB; refuse absurd files before reading them into memory. */
    if ((uint64_t)st.st_size > CFG_MAX_FILE) {
        rc = -EFBIG;
        err_set(err, file, 0, 0, NULL, "file of %jd bytes exceeds the 64 MiB limit",
                (intmax_t)st.st_size);
        goto err_close_file;
    }
    text = malloc((size_t)st.st_size + 1);
    if (!text) {
        rc = -ENOMEM;
        err_set(err, file, 0, 0, NULL, "out of memory");
        goto err_close_file;
    }
    while (got < (size_t)st.st_size) {
        size_t n = fread(text + got, 1, (size_t)st.st_size - got, fp);
        if (!n)
            break;
        got += n;
    }
    if (ferror(fp)) {
        rc = -EIO;
        err_set(err, file, 0, 0, NULL, "read error");
        goto err_free_text;
    }
    text[got] = '\0';
    rc = cfg_doc_load_string(file, text, got, out, err);

err_free_text:
    free(text);
err_close_file:
    fclose(fp);
    return rc;
}

/* ---- lookups and getters ---- */

/* Whether KEY is field NAME, as written ("port_value") or as its proto3 JSON name
 * ("portValue": protobuf's ToJsonName drops each '_' and upper-cases the letter after it).
 * Envoy's YAML goes through protobuf's JSON parser, which takes both. */
static bool key_is(const struct cfg_node *key, const char *name)
{
    size_t n = strlen(name);
    if (key->len == n && !memcmp(key->str, name, n))
        return true;
    size_t k = 0;
    bool up = false;
    for (const char *c = name; *c; c++) {
        if (*c == '_') {
            up = true;
            continue;
        }
        char want = up && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        up = false;
        if (k >= key->len || key->str[k] != want)
            return false;
        k++;
    }
    return k == key->len;
}

const struct cfg_node *cfg_map_get(const struct cfg_node *node, const char *key)
{
    size_t i;
    if (!node || node->type != CFG_MAP || !key)
        return NULL;
    for (i = 0; i < node->n; i++)
        if (key_is(node->entries[i].key, key))
            return node->entries[i].value;
    return NULL;
}

const struct cfg_node *cfg_map_without(const struct cfg_doc *doc, const struct cfg_node *node,
                                       const char *key)
{
    struct cfg_doc *mdoc = (struct cfg_doc *)doc; /* only the views list changes */
    struct cfg_node *view, **views;
    size_t i;
    if (!node || node->type != CFG_MAP || !cfg_map_get(node, key))
        return node;
    views = realloc(mdoc->views, (mdoc->nviews + 1) * sizeof(*views));
    if (!views)
        return NULL;
    mdoc->views = views;
    view = calloc(1, sizeof(*view));
    if (!view)
        return NULL;
    *view = *node;
    view->n = 0;
    view->entries = calloc(node->n, sizeof(*view->entries));
    if (!view->entries) {
        free(view);
        return NULL;
    }
    for (i = 0; i < node->n; i++)
        if (strcmp(node->entries[i].key->str, key))
            view->entries[view->n++] = node->entries[i];
    mdoc->views[mdoc->nviews++] = view;
    return view;
}

static int expect_type(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                       const struct cfg_path *path, enum cfg_node_type type, const char *what)
{
    char got[CFG_DESCRIBE_MAX + 16];
    if (node && node->type == type)
        return 0;
    return cfg_error(err, doc, node, path, "expected %s, got %s", what,
                     cfg_node_describe(node, got, sizeof(got)));
}

int cfg_expect_map(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path)
{
    return expect_type(err, doc, node, path, CFG_MAP, "a mapping");
}

int cfg_expect_seq(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path)
{
    return expect_type(err, doc, node, path, CFG_SEQ, "a sequence");
}

int cfg_check_keys(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path, const char *const *allowed)
{
    size_t i;
    int rc = cfg_expect_map(err, doc, node, path);
    if (rc)
        return rc;
    for (i = 0; i < node->n; i++) {
        const struct cfg_node *key = node->entries[i].key;
        const char *const *a;
        char list[512];
        size_t pos = 0;
        for (a = allowed; *a; a++)
            if (key_is(key, *a))
                break;
        if (*a) {
            /* one field written twice, once per spelling ("port_value" and "portValue") */
            for (size_t j = 0; j < i; j++) {
                const struct cfg_node *other = node->entries[j].key;
                if (key_is(other, *a)) {
                    struct cfg_path kp = CFG_PATH_KEY(path, key->str);
                    return cfg_error(err, doc, key, &kp,
                                     "duplicate key '%s': the same field as '%s' (%u:%u)", key->str,
                                     other->str, other->line, other->col);
                }
            }
            continue;
        }
        struct cfg_path kp = CFG_PATH_KEY(path, key->str);
        if (!allowed[0])
            return cfg_error(err, doc, key, &kp, "unknown key '%s' (no settings are accepted here)",
                             key->str);
        list[0] = '\0';
        for (a = allowed; *a; a++) {
            if (pos)
                buf_append(list, sizeof(list), &pos, ", ", 2);
            buf_append(list, sizeof(list), &pos, *a, strlen(*a));
        }
        return cfg_error(err, doc, key, &kp, "unknown key '%s' (expected one of: %s)", key->str,
                         list);
    }
    return 0;
}

static bool scalar_ok(const struct cfg_node *node)
{
    return node && node->type == CFG_SCALAR && !cfg_node_is_null(node) &&
           strlen(node->str) == node->len;
}

int cfg_get_string(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path, const char **out)
{
    char got[CFG_DESCRIBE_MAX * 4 + 16];
    /* shown escaped: printed as a C string it would end at the NUL and hide what follows */
    if (node && node->type == CFG_SCALAR && strlen(node->str) != node->len)
        return cfg_error(err, doc, node, path, "expected a string without NUL characters, got %s",
                         cfg_node_describe(node, got, sizeof(got)));
    if (!scalar_ok(node))
        return cfg_error(err, doc, node, path, "expected a string, got %s",
                         cfg_node_describe(node, got, sizeof(got)));
    *out = node->str;
    return 0;
}

/* Strict decimal: digits only (an optional leading '+'), no spaces, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (*s == '+')
        s++;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - (uint64_t)(*s - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

int cfg_get_u64(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                const struct cfg_path *path, uint64_t min, uint64_t max, uint64_t *out)
{
    char got[CFG_DESCRIBE_MAX + 16], want[64];
    uint64_t v;
    if (max == UINT64_MAX && min == 0)
        snprintf(want, sizeof(want), "a non-negative integer");
    else if (max == UINT64_MAX)
        snprintf(want, sizeof(want), "an integer >= %" PRIu64, min);
    else
        snprintf(want, sizeof(want), "an integer %" PRIu64 "..%" PRIu64, min, max);
    /* Quoted digits are accepted: proto3 JSON writes 64-bit integers as strings. */
    if (!scalar_ok(node) || !parse_u64(node->str, &v) || v < min || v > max)
        return cfg_error(err, doc, node, path, "expected %s, got %s", want,
                         cfg_node_describe(node, got, sizeof(got)));
    *out = v;
    return 0;
}

int cfg_get_bool(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                 const struct cfg_path *path, bool *out)
{
    static const char *const yes[] = {"true", "True", "TRUE", NULL};
    static const char *const no[] = {"false", "False", "FALSE", NULL};
    char got[CFG_DESCRIBE_MAX + 16];
    if (scalar_ok(node)) {
        for (const char *const *p = yes; *p; p++)
            if (!strcmp(node->str, *p))
                return *out = true, 0;
        for (const char *const *p = no; *p; p++)
            if (!strcmp(node->str, *p))
                return *out = false, 0;
    }
    return cfg_error(err, doc, node, path, "expected true or false, got %s",
                     cfg_node_describe(node, got, sizeof(got)));
}

/* "1.5s", "250ms", "2m", "0s", "10" (seconds). Sub-millisecond remainders round up so a tiny
 * timeout never silently becomes 0 (which means "disabled"). */
static bool parse_duration_ms(const char *s, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ns;
    } units[] = {{"ns", 1ull},         {"us", 1000ull},       {"ms", 1000000ull},
                 {"s", 1000000000ull}, {"m", 60000000000ull}, {"h", 3600000000000ull},
                 {"", 1000000000ull}};
    uint64_t whole = 0, frac = 0, frac_scale = 1, unit_ns = 0;
    unsigned ndigits = 0, nfrac = 0;
    const char *p = s;
    size_t i;
    unsigned __int128 total;

    for (; *p >= '0' && *p <= '9'; p++, ndigits++) {
        if (whole > (UINT64_MAX - 9) / 10)
            return false;
        whole = whole * 10 + (uint64_t)(*p - '0');
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nfrac++) {
            if (nfrac < 18) {
                frac = frac * 10 + (uint64_t)(*p - '0');
                frac_scale *= 10;
            }
        }
        if (!nfrac)
            return false;
    }
    if (!ndigits && !nfrac)
        return false;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (!strcmp(p, units[i].suffix)) {
            unit_ns = units[i].ns;
            break;
        }
    if (!unit_ns)
        return false;
    total = (unsigned __int128)whole * unit_ns +
            ((unsigned __int128)frac * unit_ns + frac_scale - 1) / frac_scale;
    if (total > (unsigned __int128)CFG_MAX_DURATION_S * 1000000000ull)
        return false;
    *out = (uint64_t)((total + 999999) / 1000000);
    return true;
}

int cfg_get_duration_ms(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                        const struct cfg_path *path, uint64_t *out)
{
    static const char *const keys[] = {"seconds", "nanos", NULL};
    char got[CFG_DESCRIBE_MAX + 16];
    uint64_t seconds = 0, nanos = 0;
    int rc;

    if (node && node->type == CFG_MAP) {
        rc = cfg_check_keys(err, doc, node, path, keys);
        if (rc)
            return rc;
        const struct cfg_node *sn = cfg_map_get(node, "seconds");
        const struct cfg_node *nn = cfg_map_get(node, "nanos");
        struct cfg_path sp = CFG_PATH_KEY(path, "seconds"), np = CFG_PATH_KEY(path, "nanos");
        if (sn && (rc = cfg_get_u64(err, doc, sn, &sp, 0, CFG_MAX_DURATION_S, &seconds)))
            return rc;
        if (nn && (rc = cfg_get_u64(err, doc, nn, &np, 0, 999999999, &nanos)))
            return rc;
        *out = seconds * 1000 + (nanos + 999999) / 1000000;
        return 0;
    }
    if (!scalar_ok(node) || !parse_duration_ms(node->str, out))
        return cfg_error(err, doc, node, path,
                         "expected a duration such as \"1.5s\" or \"250ms\", got %s",
                         cfg_node_describe(node, got, sizeof(got)));
    return 0;
}

static int get_enum(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                    const struct cfg_path *path, const char *const *names, bool numeric,
                    const int *numbers, int *out)
{
    char got[CFG_DESCRIBE_MAX + 16], list[768];
    size_t pos = 0;
    int i;
    uint64_t v;
    if (scalar_ok(node))
        for (i = 0; names[i]; i++)
            if (!strcmp(node->str, names[i]))
                return *out = i, 0;
    /* protobuf's JSON mapping (which Envoy's YAML goes through) takes an enum's number too */
    if (numeric && scalar_ok(node) && !node->quoted && parse_u64(node->str, &v))
        for (i = 0; names[i]; i++)
            if ((uint64_t)(numbers ? numbers[i] : i) == v)
                return *out = i, 0;
    list[0] = '\0';
    for (i = 0; names[i]; i++) {
        char num[24];
        if (pos)
            buf_append(list, sizeof(list), &pos, ", ", 2);
        buf_append(list, sizeof(list), &pos, names[i], strlen(names[i]));
        if (numeric) {
            int n = snprintf(num, sizeof(num), " (%d)", numbers ? numbers[i] : i);
            buf_append(list, sizeof(list), &pos, num, (size_t)n);
        }
    }
    return cfg_error(err, doc, node, path, "expected one of %s, got %s", list,
                     cfg_node_describe(node, got, sizeof(got)));
}

int cfg_get_enum(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                 const struct cfg_path *path, const char *const *names, int *out)
{
    return get_enum(err, doc, node, path, names, false, NULL, out);
}

int cfg_get_enum_num(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                     const struct cfg_path *path, const char *const *names, const int *numbers,
                     int *out)
{
    return get_enum(err, doc, node, path, names, true, numbers, out);
}

static bool str_listed(const char *s, const char *const *list)
{
    for (; list && *list; list++)
        if (!strcmp(s, *list))
            return true;
    return false;
}

int cfg_extension_settings(struct cfg_err *err, const struct cfg_doc *doc,
                           const struct cfg_node *node, const struct cfg_path *path,
                           const char *const *urls, const char *url_owner,
                           const struct cfg_node **out, struct cfg_path *out_path)
{
    const struct cfg_node *config = cfg_map_get(node, "config");
    const struct cfg_node *typed = cfg_map_get(node, "typed_config");
    const struct cfg_node *url_node;
    char want[512], got[128];
    size_t pos = 0;
    const char *url;
    int rc;

    *out = NULL;
    *out_path = *path;
    if (config && typed) {
        *out_path = CFG_PATH_KEY(path, "typed_config");
        return cfg_error(err, doc, typed, out_path,
                         "give either 'config' (v2) or 'typed_config' (v3), not both");
    }
    if (config) {
        *out_path = CFG_PATH_KEY(path, "config");
        if (cfg_node_is_null(config))
            return 0;
        *out = config;
        return cfg_expect_map(err, doc, config, out_path);
    }
    if (!typed)
        return 0;
    *out_path = CFG_PATH_KEY(path, "typed_config");
    if (cfg_node_is_null(typed))
        return 0;
    rc = cfg_expect_map(err, doc, typed, out_path);
    if (rc)
        return rc;
    url_node = cfg_map_get(typed, "@type");
    if (!url_node)
        return cfg_error(err, doc, typed, out_path, "missing required key '@type'");
    struct cfg_path up = CFG_PATH_KEY(out_path, "@type");
    rc = cfg_get_string(err, doc, url_node, &up, &url);
    if (rc)
        return rc;
    if (!str_listed(url, urls)) {
        want[0] = '\0';
        for (const char *const *u = urls; u && *u; u++) {
            if (pos)
                buf_append(want, sizeof(want), &pos, ", ", 2);
            buf_append(want, sizeof(want), &pos, *u, strlen(*u));
        }
        return cfg_error(err, doc, url_node, &up, "expected %s%s%s%s, got %s",
                         urls && urls[0] && urls[1] ? "one of " : "", want,
                         url_owner ? " for " : "", url_owner ? url_owner : "",
                         cfg_node_describe(url_node, got, sizeof(got)));
    }
    *out = cfg_map_without(doc, typed, "@type");
    if (!*out)
        return cfg_error(err, doc, typed, out_path, "out of memory"), -ENOMEM;
    return 0;
}

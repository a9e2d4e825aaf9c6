/* A YAML document as a tree of nodes that remember where they came from (line:col), plus the
 * typed getters every config parser uses. All error messages have one shape:
 *
 *   FILE:LINE:COL: KEY.PATH: what was expected, got "what was there"
 *
 * e.g. `socktap.yaml:7:21: static_resources.listeners[0].address.socket_address.port_value:
 * expected an integer 0..65535, got "http"`.
 *
 * Paths are built on the stack as a linked list (struct cfg_path), so parsers pass the path of
 * the node they are looking at and never allocate for it. */
#ifndef SOCKTAP_CFGTREE_CFG_NODE_H
#define SOCKTAP_CFGTREE_CFG_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum cfg_node_type { CFG_SCALAR, CFG_MAP, CFG_SEQ };

struct cfg_node;

struct cfg_map_entry {
    struct cfg_node *key; /* always a scalar */
    struct cfg_node *value;
};

struct cfg_node {
    enum cfg_node_type type;
    unsigned line, col; /* 1-based position of the node's first character */
    /* CFG_SCALAR: NUL-terminated text (may contain NULs before len for binary-ish input). */
    char *str;
    size_t len;
    bool quoted; /* scalar was quoted ('x' or "x"): never null/bool/number by plain style */
    /* CFG_MAP: n entries; CFG_SEQ: n items. */
    size_t n;
    struct cfg_map_entry *entries;
    struct cfg_node **items;
};

/* A document: owns every node. */
struct cfg_doc {
    char *file; /* the name used in messages */
    /* the YAML text it was parsed from (a copy, NUL-terminated): a DNS refresh re-loads the
     * running config from it, never from a file that may have changed since */
    char *text;
    size_t text_len;
    struct cfg_node *root;
    /* Nodes derived after loading (cfg_map_without), freed with the document. */
    struct cfg_node **views;
    size_t nviews;
};

/* Error sink: the first error wins; later ones are ignored so the message names the root cause. */
struct cfg_err {
    char msg[1024];
    bool set;
};

/* One step of a key path: either a map key or a sequence index. */
struct cfg_path {
    const struct cfg_path *parent;
    const char *key; /* NULL for an index step */
    size_t index;
};

#define CFG_PATH_KEY(parent_, key_) ((struct cfg_path){.parent = (parent_), .key = (key_)})
#define CFG_PATH_INDEX(parent_, i_) ((struct cfg_path){.parent = (parent_), .index = (i_)})

/* Parses FILE (or, with cfg_doc_load_string, TEXT of LEN bytes named NAME) into *OUT.
 * On error returns -EINVAL (syntax, duplicate keys, aliases, too deep) or -errno (I/O) and fills
 * ERR. The caller owns *OUT and frees it with cfg_doc_free. Anchors/aliases are rejected
 * (alias bombs); nesting deeper than 64 levels and scalars over 1 MiB are rejected. */
int cfg_doc_load_file(const char *file, struct cfg_doc **out, struct cfg_err *err);
int cfg_doc_load_string(const char *name, const char *text, size_t len, struct cfg_doc **out,
                        struct cfg_err *err);
void cfg_doc_free(struct cfg_doc *doc);

/* Formats the path into BUF ("a.b[0].c"); returns BUF. */
char *cfg_path_format(const struct cfg_path *path, char *buf, size_t size);

/* Records an error at NODE (may be NULL: position unknown -> "FILE: path: msg"). Returns -EINVAL
 * so parsers can `return cfg_error(...)`. DOC supplies the file name. */
int cfg_error(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
              const struct cfg_path *path, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Short rendering of a node for "got ..." (scalar text in quotes, "a mapping", "a sequence"). */
const char *cfg_node_describe(const struct cfg_node *node, char *buf, size_t size);

/* Map lookup; NULL if NODE is not a map or has no such key. */
const struct cfg_node *cfg_map_get(const struct cfg_node *node, const char *key);

/* Fails (with the unknown key's own position and path) if NODE has a key not in ALLOWED
 * (NULL-terminated). Also fails if NODE is not a map. */
int cfg_check_keys(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path, const char *const *allowed)
    __attribute__((nonnull(5)));

/* Typed getters. Each takes the node itself (not the parent) and its path, checks the type and
 * range, and returns 0 or -EINVAL with ERR filled. Strings point into the document (valid while
 * it lives). */
int cfg_expect_map(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path);
int cfg_expect_seq(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path);
int cfg_get_string(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                   const struct cfg_path *path, const char **out);
int cfg_get_u64(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                const struct cfg_path *path, uint64_t min, uint64_t max, uint64_t *out);
int cfg_get_bool(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                 const struct cfg_path *path, bool *out);
/* Envoy durations: "1.5s", "250ms", "0s", also a bare number of seconds, and the proto3
 * JSON object form {seconds: N, nanos: N}. Result in milliseconds. */
int cfg_get_duration_ms(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                        const struct cfg_path *path, uint64_t *out);
/* True for a plain null scalar ("", "~", "null"): YAML's "no value". NODE may be NULL (true). */
bool cfg_node_is_null(const struct cfg_node *node);

/* A view of map NODE without KEY (e.g. typed_config minus "@type"), owned by DOC and valid while
 * it lives (DOC is logically const: only its list of views grows). Returns NODE itself when it
 * has no such key, NULL on allocation failure. */
const struct cfg_node *cfg_map_without(const struct cfg_doc *doc, const struct cfg_node *node,
                                       const char *key);

/* The settings of an Envoy extension (a network filter, a transport socket) NODE: its v2
 * `config:` map, or its v3 `typed_config:` map whose "@type" must be one of URLS
 * (NULL-terminated; NULL accepts none), given back without "@type" (a view owned by DOC).
 * *OUT_PATH is the path of the key given (PATH when neither). Neither key given, or one given empty
 * (YAML null), is no settings: *OUT = NULL, the kind's defaults, as Envoy's translateOpaqueConfig
 * (source/common/config/utility.cc) leaves the factory's empty config when config/typed_config
 * carry nothing. Both keys is an error. URL_OWNER, when not NULL, says whose "@type" it is in the
 * message ("transport socket 'tls'"). Does not check NODE's other keys. */
int cfg_extension_settings(struct cfg_err *err, const struct cfg_doc *doc,
                           const struct cfg_node *node, const struct cfg_path *path,
                           const char *const *urls, const char *url_owner,
                           const struct cfg_node **out, struct cfg_path *out_path);

/* One of NAMES (NULL-terminated); *OUT is the index. The message lists the accepted names. For
 * socktap's own enums (no proto numbers). */
int cfg_get_enum(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                 const struct cfg_path *path, const char *const *names, int *out);
/* A proto enum: one of NAMES, or (plain, unquoted) the number NUMBERS[i] of one (NULL: the
 * numbers are the indexes, NAMES being in proto order), as protobuf's JSON parser takes it.
 * *OUT is the index; the message lists names with their numbers. */
int cfg_get_enum_num(struct cfg_err *err, const struct cfg_doc *doc, const struct cfg_node *node,
                     const struct cfg_path *path, const char *const *names, const int *numbers,
                     int *out);

#endif

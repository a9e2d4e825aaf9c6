/* Protobuf JSON (proto3 mapping) over protobuf-c descriptors, using pbcodec's tokenizer.
 * Well-known type handled: google.protobuf.Timestamp (RFC 3339 string), the only one the
 * trace schemas use; others are treated as plain messages. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "trace/pbcodec.h"
#include "trace/pbfmt.h"

static bool is_timestamp(const ProtobufCMessageDescriptor *d)
{
    return strcmp(d->name, "google.protobuf.Timestamp") == 0;
}

/* lowerCamelCase of NAME equals KEY[0..LEN)? */
static bool camel_eq(const char *name, const char *key, size_t len)
{
    size_t k = 0;
    bool up = false;
    for (const char *p = name; *p; p++) {
        if (*p == '_') {
            up = true;
            continue;
        }
        char c = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 32) : *p;
        up = false;
        if (k >= len || key[k++] != c)
            return false;
    }
    return k == len;
}

const ProtobufCFieldDescriptor *pbjson_field(const ProtobufCMessageDescriptor *desc,
                                             const char *name, size_t len)
{
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const char *fn = desc->fields[i].name;
        if ((strlen(fn) == len && memcmp(fn, name, len) == 0) || camel_eq(fn, name, len))
            return &desc->fields[i];
    }
    return NULL;
}

static int json_skip_value(struct pblex *lx, bool *has_data, int depth)
{
    bool obj = pblex_is(lx, '{');
    if (!obj && !pblex_is(lx, '[')) {
        if (lx->tok != PBLEX_STRING && lx->tok != PBLEX_NUMBER && lx->tok != PBLEX_IDENT)
            return pblex_fail(lx, "expected a value");
        *has_data |= pblex_scalar_has_data(lx);
        return 0;
    }
    if (depth > PB_SKIP_MAX_DEPTH)
        return pblex_fail(lx, "unknown field nested too deep");
    char close = obj ? '}' : ']';
    int rc = pblex_next(lx);
    bool first = true;
    while (!rc && !pblex_is(lx, close)) {
        if (!first && !pblex_is(lx, ','))
            return pblex_fail(lx, "expected ',' or '%c'", close);
        if (!first && (rc = pblex_next(lx)))
            return rc;
        first = false;
        *has_data = true;
        if (obj) {
            if (lx->tok != PBLEX_STRING)
                return pblex_fail(lx, "expected a key string");
            rc = pblex_next(lx);
            if (!rc && !pblex_is(lx, ':'))
                return pblex_fail(lx, "expected ':'");
            rc = rc ?: pblex_next(lx);
        }
        rc = rc ?: json_skip_value(lx, has_data, depth + 1);
        rc = rc ?: pblex_next(lx);
    }
    return rc;
}

int pbjson_skip_unknown(struct pblex *lx, const ProtobufCMessageDescriptor *desc)
{
    char field[100];
    int n = lx->text.len > 64 ? 64 : (int)lx->text.len;
    snprintf(field, sizeof(field), "\"%.*s\"", n, (const char *)lx->text.data);
    uint64_t start = lx->tok_off;
    bool data = false;
    int rc = pblex_next(lx);
    if (!rc && !pblex_is(lx, ':'))
        return pblex_fail(lx, "expected ':'");
    rc = rc ?: pblex_next(lx);
    rc = rc ?: json_skip_value(lx, &data, 0);
    if (rc)
        return rc;
    pb_unknown_note(lx->unknown, desc->name, field, lx->off - start, data);
    return 0;
}

static int parse_value(struct pblex *lx, const ProtobufCFieldDescriptor *fd, ProtobufCMessage *m)
{
    void *slot;
    if (lx->tok == PBLEX_IDENT && lx->text.len == 4 && !memcmp(lx->text.data, "null", 4))
        return 0;
    int rc;
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *sub = fd->descriptor;
        ProtobufCMessage *v = NULL;
        if (is_timestamp(sub) && lx->tok == PBLEX_STRING) {
            int64_t sec;
            int32_t nsec;
            if (pbfmt_rfc3339_parse((const char *)lx->text.data, lx->text.len, &sec, &nsec))
                return pblex_fail(lx, "field %s: not an RFC 3339 timestamp", fd->name);
            v = pbmsg_new(sub);
            if (!v)
                return -ENOMEM;
            /* Timestamp{int64 seconds = 1; int32 nanos = 2} */
            *(int64_t *)((uint8_t *)v + sub->fields[0].offset) = sec;
            *(int32_t *)((uint8_t *)v + sub->fields[1].offset) = nsec;
            rc = 0;
        } else if (pblex_is(lx, '{')) {
            rc = pbjson_parse_object(lx, sub, &v);
            if (rc)
                return rc;
        } else {
            return pblex_fail(lx, "field %s expects an object", fd->name);
        }
        rc = pbfield_slot(m, fd, &slot);
        if (rc) {
            protobuf_c_message_free_unpacked(v, NULL);
            return rc == -EEXIST ? pblex_fail(lx, "field %s: its oneof is already set", fd->name)
                                 : rc;
        }
        if (fd->label != PROTOBUF_C_LABEL_REPEATED && *(ProtobufCMessage **)slot)
            protobuf_c_message_free_unpacked(*(ProtobufCMessage **)slot, NULL);
        *(ProtobufCMessage **)slot = v;
        return 0;
    }
    if (pblex_is(lx, '{') || pblex_is(lx, '['))
        return pblex_fail(lx, "field %s expects a scalar", fd->name);
    rc = pbfield_slot(m, fd, &slot);
    if (rc == -EEXIST)
        return pblex_fail(lx, "field %s: its oneof is already set", fd->name);
    return rc ?: pbfield_set_scalar(lx, fd, slot);
}

/* Before each element of a list closed by CLOSE: nothing before the first, a ',' (consumed)
 * before the others. Returns 0, or the lexer's error naming WHAT. */
static int list_sep(struct pblex *lx, bool *first, char close, const char *what)
{
    if (*first) {
        *first = false;
        return 0;
    }
    if (!pblex_is(lx, ','))
        return pblex_fail(lx, "expected ',' or '%c' in %s", close, what);
    return pblex_next(lx);
}

int pbjson_parse_object(struct pblex *lx, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out)
{
    if (!pblex_is(lx, '{'))
        return pblex_fail(lx, "expected '{' for %s", desc->name);
    ProtobufCMessage *m = pbmsg_new(desc);
    if (!m)
        return -ENOMEM;
    int rc = pblex_next(lx);
    bool first = true;
    while (!rc && !pblex_is(lx, '}')) {
        if ((rc = list_sep(lx, &first, '}', desc->name)))
            break;
        if (lx->tok != PBLEX_STRING) {
            rc = pblex_fail(lx, "expected a key string in %s", desc->name);
            break;
        }
        const ProtobufCFieldDescriptor *fd =
            pbjson_field(desc, (const char *)lx->text.data, lx->text.len);
        if (!fd && lx->unknown) {
            rc = pbjson_skip_unknown(lx, desc);
            rc = rc ?: pblex_next(lx);
            continue;
        }
        if (!fd) {
            rc = pblex_fail(lx, "%s has no field \"%.*s\"", desc->name, (int)lx->text.len,
                            (const char *)lx->text.data);
            break;
        }
        rc = pblex_next(lx);
        if (!rc && !pblex_is(lx, ':'))
            rc = pblex_fail(lx, "expected ':' after \"%s\"", fd->name);
        rc = rc ?: pblex_next(lx);
        if (rc)
            break;
        if (pblex_is(lx, '[')) {
            if (fd->label != PROTOBUF_C_LABEL_REPEATED) {
                rc = pblex_fail(lx, "field %s is not repeated", fd->name);
                break;
            }
            rc = pblex_next(lx);
            bool efirst = true;
            while (!rc && !pblex_is(lx, ']')) {
                if ((rc = list_sep(lx, &efirst, ']', fd->name)))
                    break;
                rc = parse_value(lx, fd, m);
                rc = rc ?: pblex_next(lx);
            }
        } else {
            rc = parse_value(lx, fd, m);
        }
        rc = rc ?: pblex_next(lx);
    }
    if (!rc && !pblex_is(lx, '}'))
        rc = pblex_fail(lx, "expected '}'");
    if (rc) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- printer ------------------------------------------------------------------------------ */

static int print_json_value(struct tbuf *out, const ProtobufCFieldDescriptor *fd, const void *v,
                            int depth, bool prim)
{
    int rc;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
        if (is_timestamp(sub->descriptor)) {
            const ProtobufCMessageDescriptor *d = sub->descriptor;
            rc = tbuf_str(out, "\"");
            rc = rc
                     ?: pbfmt_rfc3339(
                            out, *(const int64_t *)((const uint8_t *)sub + d->fields[0].offset),
                            *(const int32_t *)((const uint8_t *)sub + d->fields[1].offset));
            return rc ?: tbuf_str(out, "\"");
        }
        return pbjson_print(out, sub, depth, prim);
    }
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        rc = tbuf_str(out, "\"");
        rc = rc ?: tbuf_i64(out, *(const int64_t *)v);
        return rc ?: tbuf_str(out, "\"");
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = tbuf_str(out, "\"");
        rc = rc ?: tbuf_u64(out, *(const uint64_t *)v);
        return rc ?: tbuf_str(out, "\"");
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(fd->descriptor, *(const int32_t *)v);
        if (!ev)
            return tbuf_i64(out, *(const int32_t *)v);
        rc = tbuf_str(out, "\"");
        rc = rc ?: tbuf_str(out, ev->name);
        return rc ?: tbuf_str(out, "\"");
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        rc = tbuf_str(out, "\"");
        rc = rc ?: pbfmt_json_escape(out, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
        return rc ?: tbuf_str(out, "\"");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = v;
        struct iovec io = {bd->data, bd->len};
        rc = tbuf_str(out, "\"");
        if (fd->flags & PBFIELD_FLAG_TEXT_BYTES) /* a proto string kept with its length */
            rc = rc ?: pbfmt_json_escape(out, bd->data, bd->len);
        else
            rc = rc ?: pbfmt_base64_iov(out, &io, 1);
        return rc ?: tbuf_str(out, "\"");
    }
    case PROTOBUF_C_TYPE_BOOL:
        return tbuf_str(out, *(const protobuf_c_boolean *)v ? "true" : "false");
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return tbuf_i64(out, *(const int32_t *)v);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return tbuf_u64(out, *(const uint32_t *)v);
    default: {
        char tmp[40];
        double d =
            fd->type == PROTOBUF_C_TYPE_FLOAT ? (double)*(const float *)v : *(const double *)v;
        snprintf(tmp, sizeof(tmp), "%.17g", d);
        return tbuf_str(out, tmp);
    }
    }
}

int pbjson_print(struct tbuf *out, const ProtobufCMessage *m, int depth, bool prim)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const uint8_t *base = (const uint8_t *)m;
    int rc = tbuf_str(out, "{");
    bool any = false;
    for (unsigned i = 0; i < d->n_fields && !rc; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        bool rep = fd->label == PROTOBUF_C_LABEL_REPEATED;
        bool oneof = fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF;
        size_t n = rep ? *(const size_t *)(base + fd->quantifier_offset) : 0;
        bool show =
            rep ? (n || prim)
                : pbfield_present(m, fd) || (prim && !oneof && fd->type != PROTOBUF_C_TYPE_MESSAGE);
        if (!show)
            continue;
        rc = tbuf_str(out, any ? ",\n" : "\n");
        rc = rc ?: tbuf_indent(out, depth + 1);
        rc = rc ?: tbuf_str(out, "\"");
        rc = rc ?: tbuf_str(out, fd->name); /* proto field names, as Envoy prints them */
        rc = rc ?: tbuf_str(out, "\": ");
        any = true;
        if (rc)
            break;
        if (!rep) {
            rc = print_json_value(out, fd, base + fd->offset, depth + 1, prim);
            continue;
        }
        const uint8_t *arr = *(uint8_t *const *)(base + fd->offset);
        rc = tbuf_str(out, "[");
        for (size_t k = 0; k < n && !rc; k++) {
            rc = tbuf_str(out, k ? ",\n" : "\n");
            rc = rc ?: tbuf_indent(out, depth + 2);
            rc = rc
                     ?: print_json_value(out, fd, arr + k * pbfield_elem_size(fd->type), depth + 2,
                                         prim);
        }
        if (!rc && n) {
            rc = tbuf_str(out, "\n");
            rc = rc ?: tbuf_indent(out, depth + 1);
        }
        rc = rc ?: tbuf_str(out, "]");
    }
    if (!rc && any) {
        rc = tbuf_str(out, "\n");
        rc = rc ?: tbuf_indent(out, depth);
    }
    return rc ?: tbuf_str(out, "}");
}

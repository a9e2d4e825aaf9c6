/* Protobuf text format over protobuf-c descriptors, and the tokenizer shared with JSON.
 *
 * The tokenizer reads a byte at a time from a prefix buffer then a FILE (getc_unlocked): text
 * traces are parsed once, by tools, and the simplicity of one position counter (byte offset,
 * line, column) for exact error messages beats a faster block scanner. String literals are
 * decoded as they are read and bounded by max_token, so one huge literal cannot exhaust memory.
 * Parsed values are stored straight into protobuf-c message structs through the descriptors'
 * offsets, allocated as protobuf_c_message_unpack() would, so free_unpacked frees them. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/hexdigit.h"
#include "trace/pbcodec.h"
#include "trace/pbfmt.h"

/* ---- tokenizer ---------------------------------------------------------------------------- */

void pblex_init(struct pblex *lx, FILE *f, const uint8_t *pre, size_t pre_len, bool json,
                size_t max_token)
{
    memset(lx, 0, sizeof(*lx));
    lx->f = f;
    lx->pre = pre;
    lx->pre_len = pre_len;
    lx->json = json;
    lx->max_token = max_token;
    lx->line = lx->col = 1;
    lx->peeked = -2;
}

void pblex_fini(struct pblex *lx)
{
    tbuf_free(&lx->text);
}

static int lx_peek(struct pblex *lx)
{
    if (lx->peeked != -2)
        return lx->peeked;
    if (lx->pre_pos < lx->pre_len)
        lx->peeked = lx->pre[lx->pre_pos++];
    else
        lx->peeked = lx->f ? getc_unlocked(lx->f) : EOF;
    return lx->peeked;
}

static int lx_get(struct pblex *lx)
{
    int c = lx_peek(lx);
    if (c == EOF)
        return c;
    lx->peeked = -2;
    lx->off++;
    if (c == '\n') {
        lx->line++;
        lx->col = 1;
    } else {
        lx->col++;
    }
    return c;
}

static int lx_err_here(struct pblex *lx, bool eof, const char *fmt, va_list ap)
{
    vsnprintf(lx->err, sizeof(lx->err), fmt, ap);
    lx->err_eof = eof;
    return eof ? -ENODATA : -EBADMSG;
}

/* Error at the current input position (inside a token). */
static int __attribute__((format(printf, 3, 4)))
lx_fail_pos(struct pblex *lx, bool eof, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lx->err_off = lx->off;
    lx->err_line = lx->line;
    lx->err_col = lx->col;
    int rc = lx_err_here(lx, eof, fmt, ap);
    va_end(ap);
    return rc;
}

int pblex_fail(struct pblex *lx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    lx->err_off = lx->tok_off;
    lx->err_line = lx->tok_line;
    lx->err_col = lx->tok_col;
    int rc = lx_err_here(lx, lx->tok == PBLEX_EOF, fmt, ap);
    va_end(ap);
    return rc;
}

bool pblex_is(const struct pblex *lx, char punct)
{
    return lx->tok == PBLEX_PUNCT && lx->punct == punct;
}

static int text_push(struct pblex *lx, uint8_t c)
{
    if (lx->text.len >= lx->max_token)
        return lx_fail_pos(lx, false, "string longer than %zu bytes", lx->max_token);
    if (lx->text.len == lx->text.cap && tbuf_reserve(&lx->text, 1))
        return -ENOMEM;
    lx->text.data[lx->text.len++] = c;
    return 0;
}

static int put_utf8(struct pblex *lx, uint32_t cp)
{
    int rc = 0;
    if (cp < 0x80) {
        rc = text_push(lx, (uint8_t)cp);
    } else if (cp < 0x800) {
        rc = text_push(lx, (uint8_t)(0xc0 | (cp >> 6)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        rc = text_push(lx, (uint8_t)(0xe0 | (cp >> 12)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | (cp & 0x3f)));
    } else {
        rc = text_push(lx, (uint8_t)(0xf0 | (cp >> 18)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | ((cp >> 12) & 0x3f)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | ((cp >> 6) & 0x3f)));
        rc = rc ?: text_push(lx, (uint8_t)(0x80 | (cp & 0x3f)));
    }
    return rc;
}

static int read_hex_n(struct pblex *lx, int n, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int c = lx_peek(lx);
        if (c == EOF)
            return lx_fail_pos(lx, true, "input ends inside a string");
        int h = hexdigit_value(c);
        if (h < 0)
            return lx_fail_pos(lx, false, "bad hex digit in escape");
        lx_get(lx);
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return 0;
}

/* Reads one quoted literal (opening quote already consumed), appending to lx->text. */
static int lex_string(struct pblex *lx, int quote)
{
    for (;;) {
        int c = lx_get(lx);
        if (c == EOF)
            return lx_fail_pos(lx, true, "input ends inside a string");
        if (c == quote)
            return 0;
        if (c == '\n' && !lx->json)
            return lx_fail_pos(lx, false, "newline inside a string");
        if (lx->json && c < 0x20)
            return lx_fail_pos(lx, false, "control character inside a string");
        if (c != '\\') {
            int rc = text_push(lx, (uint8_t)c);
            if (rc)
                return rc;
            continue;
        }
        c = lx_get(lx);
        if (c == EOF)
            return lx_fail_pos(lx, true, "input ends inside a string");
        int rc = 0;
        uint32_t v;
        switch (c) {
        case 'n':
            rc = text_push(lx, '\n');
            break;
        case 'r':
            rc = text_push(lx, '\r');
            break;
        case 't':
            rc = text_push(lx, '\t');
            break;
        case 'b':
            rc = text_push(lx, '\b');
            break;
        case 'f':
            rc = text_push(lx, '\f');
            break;
        case 'a':
        case 'v':
        case '?':
        case '\'':
            if (lx->json && c != '/')
                return lx_fail_pos(lx, false, "bad escape \\%c", c);
            rc = text_push(lx, c == 'a' ? '\a' : c == 'v' ? '\v' : (uint8_t)c);
            break;
        case '"':
        case '\\':
        case '/':
            rc = text_push(lx, (uint8_t)c);
            break;
        case 'x':
        case 'X':
            if (lx->json)
                return lx_fail_pos(lx, false, "bad escape \\x");
            {
                int n = 0;
                v = 0;
                while (n < 2 && hexdigit_value(lx_peek(lx)) >= 0) {
                    v = v * 16 + (uint32_t)hexdigit_value(lx_get(lx));
                    n++;
                }
                if (!n)
                    return lx_fail_pos(lx, false, "\\x without hex digits");
                rc = text_push(lx, (uint8_t)v);
            }
            break;
        case 'u':
            rc = read_hex_n(lx, 4, &v);
            if (!rc && v >= 0xd800 && v < 0xdc00) {
                uint32_t lo;
                if (lx_get(lx) != '\\' || lx_get(lx) != 'u')
                    return lx_fail_pos(lx, false, "unpaired surrogate");
                rc = read_hex_n(lx, 4, &lo);
                if (!rc && (lo < 0xdc00 || lo > 0xdfff))
                    return lx_fail_pos(lx, false, "unpaired surrogate");
                v = 0x10000 + ((v - 0xd800) << 10) + (lo - 0xdc00);
            }
            rc = rc ?: put_utf8(lx, v);
            break;
        default:
            if (c >= '0' && c <= '7' && !lx->json) {
                v = (uint32_t)(c - '0');
                for (int n = 1; n < 3 && lx_peek(lx) >= '0' && lx_peek(lx) <= '7'; n++)
                    v = v * 8 + (uint32_t)(lx_get(lx) - '0');
                if (v > 255)
                    return lx_fail_pos(lx, false, "octal escape above \\377");
                rc = text_push(lx, (uint8_t)v);
            } else {
                return lx_fail_pos(lx, false, "bad escape \\%c", c);
            }
        }
        if (rc)
            return rc;
    }
}

static bool is_ident_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.';
}

static void skip_space(struct pblex *lx)
{
    for (;;) {
        int c = lx_peek(lx);
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            lx_get(lx);
        } else if (c == '#' && !lx->json) {
            while ((c = lx_peek(lx)) != EOF && c != '\n')
                lx_get(lx);
        } else {
            return;
        }
    }
}

int pblex_next(struct pblex *lx)
{
    skip_space(lx);
    lx->tok_off = lx->off;
    lx->tok_line = lx->line;
    lx->tok_col = lx->col;
    lx->text.len = 0;
    int c = lx_peek(lx);
    if (c == EOF) {
        lx->tok = PBLEX_EOF;
        return 0;
    }
    if (strchr(lx->json ? "{}[]:," : "{}[]<>:,;", c)) {
        lx_get(lx);
        lx->tok = PBLEX_PUNCT;
        lx->punct = (char)c;
        return 0;
    }
    if (c == '"' || (c == '\'' && !lx->json)) {
        lx->tok = PBLEX_STRING;
        do {
            lx_get(lx);
            int rc = lex_string(lx, c);
            if (rc)
                return rc;
            if (lx->json)
                break;
            skip_space(lx); /* adjacent literals concatenate in the text format */
            c = lx_peek(lx);
        } while (c == '"' || c == '\'');
        return 0;
    }
    if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
        lx->tok = PBLEX_NUMBER;
        do {
            int rc = text_push(lx, (uint8_t)lx_get(lx));
            if (rc)
                return rc;
            c = lx_peek(lx);
        } while (c != EOF && (is_ident_char(c) || c == '+' || c == '-'));
        return 0;
    }
    if (is_ident_char(c)) {
        lx->tok = PBLEX_IDENT;
        do {
            int rc = text_push(lx, (uint8_t)lx_get(lx));
            if (rc)
                return rc;
        } while (is_ident_char(lx_peek(lx)));
        return 0;
    }
    return lx_fail_pos(lx, false, "unexpected character '%c'", c >= 0x20 && c < 0x7f ? c : '?');
}

/* ---- field storage ------------------------------------------------------------------------ */

size_t pbfield_elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    default:
        return 4;
    }
}

ProtobufCMessage *pbmsg_new(const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (!m)
        return NULL;
    /* A reader's retyped copy of a descriptor (trace_reader.c: Body.as_string as bytes) has no
     * message_init, since the generated one would name the generated descriptor; protobuf-c's
     * unpack then inits generically, as here. Such copies have no non-zero defaults. */
    if (desc->message_init) {
        desc->message_init(m);
    } else {
        memset(m, 0, desc->sizeof_message);
        m->descriptor = desc;
    }
    return m;
}

int pbfield_slot(ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd, void **slot)
{
    uint8_t *base = (uint8_t *)m;
    if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t *n = (size_t *)(base + fd->quantifier_offset);
        void **arr = (void **)(base + fd->offset);
        size_t es = pbfield_elem_size(fd->type);
        if ((*n & (*n - 1)) == 0) { /* capacity is the next power of two: grow at powers */
            size_t cap = *n ? *n * 2 : 1;
            void *p = realloc(*arr, cap * es);
            if (!p)
                return -ENOMEM;
            *arr = p;
        }
        *slot = (uint8_t *)*arr + *n * es;
        memset(*slot, 0, es);
        (*n)++;
        return 0;
    }
    if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *cs = (uint32_t *)(base + fd->quantifier_offset);
        if (*cs && *cs != fd->id)
            return -EEXIST;
        *cs = fd->id;
    } else if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && fd->quantifier_offset) {
        *(protobuf_c_boolean *)(base + fd->quantifier_offset) = 1;
    }
    *slot = base + fd->offset;
    return 0;
}

static int parse_int(const char *s, bool is_signed, int64_t *si, uint64_t *ui)
{
    char *end;
    errno = 0;
    if (is_signed)
        *si = strtoll(s, &end, 0);
    else if (s[0] == '-')
        return -ERANGE;
    else
        *ui = strtoull(s, &end, 0);
    if (errno || end == s || *end)
        return -EINVAL;
    return 0;
}

int pbfield_set_scalar(struct pblex *lx, const ProtobufCFieldDescriptor *fd, void *slot)
{
    char num[80];
    bool quoted = lx->tok == PBLEX_STRING;
    if (lx->tok == PBLEX_STRING && (fd->type == PROTOBUF_C_TYPE_STRING)) {
        char *s = malloc(lx->text.len + 1);
        if (!s)
            return -ENOMEM;
        memcpy(s, lx->text.data, lx->text.len);
        s[lx->text.len] = 0;
        char **p = slot;
        if (*p && *p != fd->default_value)
            free(*p);
        *p = s;
        return 0;
    }
    if (lx->tok == PBLEX_STRING && fd->type == PROTOBUF_C_TYPE_BYTES) {
        ProtobufCBinaryData *bd = slot;
        free(bd->data);
        bd->data = NULL;
        bd->len = 0;
        if (lx->json && !(fd->flags & PBFIELD_FLAG_TEXT_BYTES)) {
            uint8_t *out = malloc(lx->text.len / 4 * 3 + 4);
            size_t bad = 0;
            if (!out)
                return -ENOMEM;
            long n = pbfmt_base64_decode((const char *)lx->text.data, lx->text.len, out, &bad);
            if (n < 0) {
                free(out);
                return pblex_fail(lx, "invalid base64 at character %zu of the string", bad);
            }
            bd->data = out;
            bd->len = (size_t)n;
            return 0;
        }
        bd->data = malloc(lx->text.len ? lx->text.len : 1);
        if (!bd->data)
            return -ENOMEM;
        memcpy(bd->data, lx->text.data, lx->text.len);
        bd->len = lx->text.len;
        return 0;
    }
    if (fd->type == PROTOBUF_C_TYPE_STRING || fd->type == PROTOBUF_C_TYPE_BYTES)
        return pblex_fail(lx, "field %s expects a string", fd->name);
    if (lx->tok != PBLEX_NUMBER && lx->tok != PBLEX_IDENT && !(quoted && lx->json))
        return pblex_fail(lx, "field %s expects a value", fd->name);
    if (lx->text.len >= sizeof(num))
        return pblex_fail(lx, "value too long for field %s", fd->name);
    memcpy(num, lx->text.data, lx->text.len);
    num[lx->text.len] = 0;
    int64_t si = 0;
    uint64_t ui = 0;
    switch (fd->type) {
    case PROTOBUF_C_TYPE_BOOL:
        if (!strcmp(num, "true") || (!lx->json && (!strcmp(num, "t") || !strcmp(num, "1"))))
            *(protobuf_c_boolean *)slot = 1;
        else if (!strcmp(num, "false") || (!lx->json && (!strcmp(num, "f") || !strcmp(num, "0"))))
            *(protobuf_c_boolean *)slot = 0;
        else
            return pblex_fail(lx, "field %s expects true or false", fd->name);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = fd->descriptor;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, num);
        if (ev) {
            *(int32_t *)slot = ev->value;
            return 0;
        }
        if (parse_int(num, true, &si, &ui) || si < INT32_MIN || si > INT32_MAX)
            return pblex_fail(lx, "unknown value '%s' for enum %s", num, ed->name);
        *(int32_t *)slot = (int32_t)si;
        return 0;
    }
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE: {
        char *end;
        double d = strtod(num, &end);
        if (end == num || (*end && !((*end == 'f' || *end == 'F') && !end[1])))
            return pblex_fail(lx, "field %s expects a number", fd->name);
        if (fd->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)slot = (float)d;
        else
            *(double *)slot = d;
        return 0;
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (parse_int(num, true, &si, &ui) || si < INT32_MIN || si > INT32_MAX)
            return pblex_fail(lx, "field %s expects a 32-bit integer", fd->name);
        *(int32_t *)slot = (int32_t)si;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (parse_int(num, false, &si, &ui) || ui > UINT32_MAX)
            return pblex_fail(lx, "field %s expects an unsigned 32-bit integer", fd->name);
        *(uint32_t *)slot = (uint32_t)ui;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (parse_int(num, true, &si, &ui))
            return pblex_fail(lx, "field %s expects a 64-bit integer", fd->name);
        *(int64_t *)slot = si;
        return 0;
    default:
        if (parse_int(num, false, &si, &ui))
            return pblex_fail(lx, "field %s expects an unsigned 64-bit integer", fd->name);
        *(uint64_t *)slot = ui;
        return 0;
    }
}

/* ---- unknown fields ----------------------------------------------------------------------- */

void pb_unknown_note(struct trace_unknown_tally *t, const char *msg, const char *field,
                     uint64_t bytes, bool has_data)
{
    char where[sizeof(t->kinds[0].where)];
    snprintf(where, sizeof(where), "%s field %s", msg, field);
    t->fields++;
    t->with_data += has_data;
    t->bytes += bytes;
    struct trace_unknown *k = NULL;
    for (size_t i = 0; i < t->nkinds && !k; i++)
        if (strcmp(t->kinds[i].where, where) == 0)
            k = &t->kinds[i];
    if (!k && t->nkinds < TRACE_UNKNOWN_KINDS) {
        k = &t->kinds[t->nkinds++];
        memcpy(k->where, where, sizeof(where));
    }
    if (k) {
        k->count++;
        k->with_data += has_data;
        k->bytes += bytes;
    }
}

/* A scalar token as a value: anything but "", 0 and false counts as data. An identifier is an
 * enum name or true/false: only "false" is known to be empty. */
bool pblex_scalar_has_data(const struct pblex *lx)
{
    if (lx->tok == PBLEX_STRING)
        return lx->text.len > 0;
    if (lx->tok == PBLEX_NUMBER) {
        char num[64];
        size_t n = lx->text.len < sizeof(num) - 1 ? lx->text.len : sizeof(num) - 1;
        memcpy(num, lx->text.data, n);
        num[n] = 0;
        return strtod(num, NULL) != 0 || strspn(num, "+-0.xXeE") != n;
    }
    return !(lx->text.len == 5 && memcmp(lx->text.data, "false", 5) == 0) &&
           !(lx->text.len == 4 && memcmp(lx->text.data, "null", 4) == 0);
}

static int text_skip_value(struct pblex *lx, bool *has_data, int depth);

/* Skips "{ fields }" or "< fields >"; the current token is the opening one. */
static int text_skip_braced(struct pblex *lx, bool *has_data, int depth)
{
    char close = pblex_is(lx, '{') ? '}' : '>';
    if (depth > PB_SKIP_MAX_DEPTH)
        return pblex_fail(lx, "unknown field nested too deep");
    int rc = pblex_next(lx);
    while (!rc && !pblex_is(lx, close)) {
        if (lx->tok != PBLEX_IDENT)
            return pblex_fail(lx, "expected a field name inside an unknown field");
        *has_data = true;
        rc = pblex_next(lx);
        if (!rc && pblex_is(lx, ':'))
            rc = pblex_next(lx);
        rc = rc ?: text_skip_value(lx, has_data, depth + 1);
        rc = rc ?: pblex_next(lx);
        if (!rc && (pblex_is(lx, ',') || pblex_is(lx, ';')))
            rc = pblex_next(lx);
    }
    return rc;
}

/* Skips a value (the ':' already consumed if there was one). */
static int text_skip_value(struct pblex *lx, bool *has_data, int depth)
{
    /* lists nest too (`[[[...`): bounded like braces (fuzz_trace_compressed: stack overflow) */
    if (depth > PB_SKIP_MAX_DEPTH)
        return pblex_fail(lx, "unknown field nested too deep");
    if (pblex_is(lx, '{') || pblex_is(lx, '<'))
        return text_skip_braced(lx, has_data, depth);
    if (pblex_is(lx, '[')) {
        int rc = pblex_next(lx);
        while (!rc && !pblex_is(lx, ']')) {
            rc = text_skip_value(lx, has_data, depth + 1);
            rc = rc ?: pblex_next(lx);
            if (!rc && pblex_is(lx, ','))
                rc = pblex_next(lx);
            else if (!rc && !pblex_is(lx, ']'))
                rc = pblex_fail(lx, "expected ',' or ']' in an unknown field's list");
        }
        return rc;
    }
    if (lx->tok == PBLEX_STRING || lx->tok == PBLEX_NUMBER || lx->tok == PBLEX_IDENT) {
        *has_data |= pblex_scalar_has_data(lx);
        return 0;
    }
    return pblex_fail(lx, "expected a value for an unknown field");
}

static int text_skip_field(struct pblex *lx, bool *has_data)
{
    *has_data = false;
    int rc = pblex_next(lx);
    if (!rc && pblex_is(lx, ':'))
        rc = pblex_next(lx);
    return rc ?: text_skip_value(lx, has_data, 0);
}

int pbtext_skip_unknown(struct pblex *lx, const ProtobufCMessageDescriptor *desc, const char *name)
{
    uint64_t start = lx->tok_off;
    bool data;
    int rc = text_skip_field(lx, &data);
    if (rc)
        return rc;
    char field[100];
    snprintf(field, sizeof(field), "\"%s\"", name);
    pb_unknown_note(lx->unknown, desc->name, field, lx->off - start, data);
    return 0;
}

/* ---- text parser -------------------------------------------------------------------------- */

static int text_set_value(struct pblex *lx, const ProtobufCFieldDescriptor *fd,
                          ProtobufCMessage *msg)
{
    void *slot;
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *sub = fd->descriptor;
        char close;
        if (pblex_is(lx, '{'))
            close = '}';
        else if (pblex_is(lx, '<'))
            close = '>';
        else if (lx->tok == PBLEX_STRING && sub->n_fields &&
                 sub->fields[0].type == PROTOBUF_C_TYPE_BYTES)
            close = 0; /* 2019 tap traces: raw bytes where a Body now goes (its field 1) */
        else
            return pblex_fail(lx, "expected '{' for message field %s", fd->name);
        /* A oneof member shares its storage with the other members, so "already set" is
         * its case naming this field (found by fuzz_pbtext: the old value leaked). */
        bool set = (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
                       ? *(uint32_t *)((uint8_t *)msg + fd->quantifier_offset) == fd->id
                       : *(void **)((uint8_t *)msg + fd->offset) != NULL;
        if (fd->label != PROTOBUF_C_LABEL_REPEATED && set)
            return pblex_fail(lx, "non-repeated field %s specified twice", fd->name);
        int rc = pbfield_slot(msg, fd, &slot);
        if (rc == -EEXIST)
            return pblex_fail(lx, "field %s: another member of its oneof is already set", fd->name);
        if (rc)
            return rc;
        ProtobufCMessage *m = NULL;
        if (close) {
            rc = pblex_next(lx);
            rc = rc ?: pbtext_parse_body(lx, sub, close, &m);
        } else {
            void *inner;
            m = pbmsg_new(sub);
            rc = m ? pbfield_slot(m, &sub->fields[0], &inner) : -ENOMEM;
            rc = rc ?: pbfield_set_scalar(lx, &sub->fields[0], inner);
        }
        *(ProtobufCMessage **)slot = m; /* set even on error, so free_unpacked frees it */
        return rc;
    }
    int rc = pbfield_slot(msg, fd, &slot);
    if (rc == -EEXIST)
        return pblex_fail(lx, "field %s: another member of its oneof is already set", fd->name);
    return rc ?: pbfield_set_scalar(lx, fd, slot);
}

int pbtext_parse_field(struct pblex *lx, const ProtobufCFieldDescriptor *fd, ProtobufCMessage *msg)
{
    int rc = pblex_next(lx);
    if (rc)
        return rc;
    if (pblex_is(lx, ':')) {
        rc = pblex_next(lx);
        if (rc)
            return rc;
    } else if (fd->type != PROTOBUF_C_TYPE_MESSAGE) {
        return pblex_fail(lx, "expected ':' after %s", fd->name);
    }
    if (pblex_is(lx, '[') && fd->label == PROTOBUF_C_LABEL_REPEATED) {
        rc = pblex_next(lx);
        while (!rc && !pblex_is(lx, ']')) {
            rc = text_set_value(lx, fd, msg);
            rc = rc ?: pblex_next(lx);
            if (!rc && pblex_is(lx, ','))
                rc = pblex_next(lx);
            else if (!rc && !pblex_is(lx, ']'))
                rc = pblex_fail(lx, "expected ',' or ']' in list of %s", fd->name);
        }
        return rc;
    }
    return text_set_value(lx, fd, msg);
}

int pbtext_parse_body(struct pblex *lx, const ProtobufCMessageDescriptor *desc, char close,
                      ProtobufCMessage **out)
{
    ProtobufCMessage *m = pbmsg_new(desc);
    int rc = 0;
    if (!m)
        return -ENOMEM;
    for (;;) {
        if (close && pblex_is(lx, close))
            break;
        if (lx->tok == PBLEX_EOF) {
            if (!close)
                break;
            rc = pblex_fail(lx, "input ends inside %s (expected '%c')", desc->name, close);
            goto err_free_msg;
        }
        if (lx->tok != PBLEX_IDENT) {
            rc = pblex_fail(lx, "expected a field name of %s", desc->name);
            goto err_free_msg;
        }
        char name[128];
        size_t n = lx->text.len < sizeof(name) - 1 ? lx->text.len : sizeof(name) - 1;
        memcpy(name, lx->text.data, n);
        name[n] = 0;
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field_by_name(desc, name);
        if (!fd && !lx->unknown) {
            rc = pblex_fail(lx, "%s has no field named \"%s\"", desc->name, name);
            goto err_free_msg;
        }
        rc = fd ? pbtext_parse_field(lx, fd, m) : pbtext_skip_unknown(lx, desc, name);
        rc = rc ?: pblex_next(lx);
        if (!rc && (pblex_is(lx, ',') || pblex_is(lx, ';')))
            rc = pblex_next(lx);
        if (rc)
            goto err_free_msg;
    }
    *out = m;
    return 0;
err_free_msg:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* ---- text printer ------------------------------------------------------------------------- */

static int print_scalar(struct tbuf *out, const ProtobufCFieldDescriptor *fd, const void *v)
{
    char tmp[64];
    switch (fd->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return tbuf_i64(out, *(const int32_t *)v);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return tbuf_u64(out, *(const uint32_t *)v);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return tbuf_i64(out, *(const int64_t *)v);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return tbuf_u64(out, *(const uint64_t *)v);
    case PROTOBUF_C_TYPE_BOOL:
        return tbuf_str(out, *(const protobuf_c_boolean *)v ? "true" : "false");
    case PROTOBUF_C_TYPE_FLOAT:
        snprintf(tmp, sizeof(tmp), "%.9g", (double)*(const float *)v);
        return tbuf_str(out, tmp);
    case PROTOBUF_C_TYPE_DOUBLE:
        snprintf(tmp, sizeof(tmp), "%.17g", *(const double *)v);
        return tbuf_str(out, tmp);
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value(fd->descriptor, *(const int32_t *)v);
        return ev ? tbuf_str(out, ev->name) : tbuf_i64(out, *(const int32_t *)v);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        struct iovec io = {(void *)(s ? s : ""), s ? strlen(s) : 0};
        int rc = tbuf_str(out, "\"");
        rc = rc ?: pbfmt_cescape_iov(out, &io, 1);
        return rc ?: tbuf_str(out, "\"");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = v;
        struct iovec io = {bd->data, bd->len};
        int rc = tbuf_str(out, "\"");
        rc = rc ?: pbfmt_cescape_iov(out, &io, 1);
        return rc ?: tbuf_str(out, "\"");
    }
    default:
        return -EINVAL;
    }
}

/* proto3 presence: a singular scalar outside a oneof is printed only when non-zero. */
static bool scalar_is_default(const ProtobufCFieldDescriptor *fd, const void *v)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)v;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)v)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(void *const *)v == NULL;
    default: {
        static const uint8_t zero[8];
        return memcmp(v, zero, pbfield_elem_size(fd->type)) == 0;
    }
    }
}

bool pbfield_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd)
{
    const uint8_t *base = (const uint8_t *)m;
    if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        return *(const uint32_t *)(base + fd->quantifier_offset) == fd->id;
    if (fd->label == PROTOBUF_C_LABEL_OPTIONAL && fd->quantifier_offset &&
        fd->type != PROTOBUF_C_TYPE_MESSAGE && fd->type != PROTOBUF_C_TYPE_STRING)
        return *(const protobuf_c_boolean *)(base + fd->quantifier_offset);
    return !scalar_is_default(fd, base + fd->offset);
}

static int print_value(struct tbuf *out, const ProtobufCFieldDescriptor *fd, const void *v,
                       int indent)
{
    int rc = tbuf_indent(out, indent);
    rc = rc ?: tbuf_str(out, fd->name);
    if (rc)
        return rc;
    if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
        rc = tbuf_str(out, " {\n");
        rc = rc ?: pbtext_print(out, *(ProtobufCMessage *const *)v, indent + 2);
        rc = rc ?: tbuf_indent(out, indent);
        return rc ?: tbuf_str(out, "}\n");
    }
    rc = tbuf_str(out, ": ");
    rc = rc ?: print_scalar(out, fd, v);
    return rc ?: tbuf_str(out, "\n");
}

int pbtext_print(struct tbuf *out, const ProtobufCMessage *m, int indent)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const uint8_t *base = (const uint8_t *)m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        int rc = 0;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + fd->quantifier_offset);
            const uint8_t *arr = *(uint8_t *const *)(base + fd->offset);
            for (size_t k = 0; k < n && !rc; k++)
                rc = print_value(out, fd, arr + k * pbfield_elem_size(fd->type), indent);
        } else if (pbfield_present(m, fd)) {
            rc = print_value(out, fd, base + fd->offset, indent);
        }
        if (rc)
            return rc;
    }
    return 0;
}

int pbtext_print_named(struct tbuf *out, const char *name, const ProtobufCMessage *m, int indent)
{
    int rc = tbuf_indent(out, indent);
    rc = rc ?: tbuf_str(out, name);
    rc = rc ?: tbuf_str(out, " {\n");
    rc = rc ?: pbtext_print(out, m, indent + 2);
    rc = rc ?: tbuf_indent(out, indent);
    return rc ?: tbuf_str(out, "}\n");
}

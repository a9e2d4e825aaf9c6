/* Generic protobuf text format and JSON codecs over protobuf-c descriptors (protobuf-c ships
 * neither), plus the tokenizer the trace readers use to stream a text or JSON trace at its top
 * level while handing each event to the generic parser.
 *
 * Text follows protobuf's TextFormat printer (2-space indent, fields in number order, proto3
 * scalars only when non-zero, strings and bytes C-escaped with 3-digit octal, as Envoy writes
 * them). JSON follows the proto3 JSON mapping (lowerCamelCase keys, int64/uint64 as strings,
 * bytes base64, enums by name, google.protobuf.Timestamp as RFC 3339); the parser accepts
 * lowerCamelCase and original field names, numbers or strings for integers, standard or URL
 * base64.
 *
 * Messages produced by the parsers are allocated the way protobuf_c_message_unpack() allocates
 * (malloc through the default allocator), so the caller frees them with
 * protobuf_c_message_free_unpacked(msg, NULL). */
#ifndef SOCKTAP_TRACE_PBCODEC_H
#define SOCKTAP_TRACE_PBCODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "trace/trace_encode.h"
#include "trace/trace_reader.h"

/* A field flag of socktap's own, beyond protobuf-c's: a BYTES field that stands for a proto
 * `string` (the reader retypes Body.as_string so its length survives embedded NULs, which a
 * protobuf-c `char *` cannot carry). JSON reads it as text, not base64. */
#define PBFIELD_FLAG_TEXT_BYTES (1u << 24)

/* ---- tokenizer ---------------------------------------------------------------------------- */

enum pblex_tok {
    PBLEX_EOF,
    PBLEX_IDENT,  /* text: identifiers, true/false, inf; JSON: true/false/null */
    PBLEX_STRING, /* decoded bytes in lx->text (adjacent text strings concatenated) */
    PBLEX_NUMBER, /* the literal as written, in lx->text */
    PBLEX_PUNCT,  /* lx->punct: one of { } [ ] < > : , ; */
};

/* A byte source with position tracking: first the PRE bytes (already read during format
 * detection), then F. Borrowed buffers; the lexer owns only TEXT. */
struct pblex {
    FILE *f;
    const uint8_t *pre;
    size_t pre_len, pre_pos;
    bool json;
    size_t max_token; /* longest string literal accepted (-E2BIG beyond) */
    /* position of the next byte */
    uint64_t off;
    uint32_t line, col;
    int peeked; /* -2: none */
    /* the current token */
    enum pblex_tok tok;
    char punct;
    struct tbuf text;
    uint64_t tok_off;
    uint32_t tok_line, tok_col;
    /* the error, if any: message, where, and whether the input just ended */
    char err[256];
    uint64_t err_off;
    uint32_t err_line, err_col;
    bool err_eof;
    /* Where unknown fields go: NULL makes an unknown field an error; otherwise the parsers skip
     * it and count it there (borrowed). */
    struct trace_unknown_tally *unknown;
};

/* Initializes LX over PRE then F (either may be empty/NULL). */
void pblex_init(struct pblex *lx, FILE *f, const uint8_t *pre, size_t pre_len, bool json,
                size_t max_token);
void pblex_fini(struct pblex *lx);
/* Advances to the next token. Returns 0, -EBADMSG (bad token), -ENODATA (input ended inside
 * a token) or -E2BIG; lx->err says why and where. */
int pblex_next(struct pblex *lx);
/* Records an error at the current token; returns -EBADMSG, or -ENODATA when the current token
 * is EOF (the input ended where more was required). printf-style. */
int pblex_fail(struct pblex *lx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool pblex_is(const struct pblex *lx, char punct);

/* Counts one skipped field of message MSG named or numbered FIELD (FIELD is copied): BYTES of
 * input, HAS_DATA when its value was not empty/zero. */
void pb_unknown_note(struct trace_unknown_tally *t, const char *msg, const char *field,
                     uint64_t bytes, bool has_data);
/* Whether the current scalar token holds data: anything but "", 0, false and null. */
bool pblex_scalar_has_data(const struct pblex *lx);
/* How deep the skippers follow an unknown value before giving up (-EBADMSG). */
#define PB_SKIP_MAX_DEPTH 64

/* ---- field storage shared by the parsers ------------------------------------------------ */

/* Returns in *SLOT where the next value of FD goes in M: the field itself, or a new element
 * of a repeated field (array grown, count bumped); sets oneof case / has_ flags. -EEXIST when
 * another member of FD's oneof is already set, -ENOMEM. */
int pbfield_slot(ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd, void **slot);
/* Allocates and initializes an empty message of type DESC (free_unpacked frees it). */
ProtobufCMessage *pbmsg_new(const ProtobufCMessageDescriptor *desc);
/* Stores a scalar from the current token (number, identifier, string) into SLOT for FD;
 * JSON rules when lx->json (base64 bytes, quoted integers, RFC 3339 handled by the caller). */
int pbfield_set_scalar(struct pblex *lx, const ProtobufCFieldDescriptor *fd, void *slot);

/* Whether FD has a value in M under proto3 rules (oneof case, has_ flag, or non-zero). */
bool pbfield_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd);
size_t pbfield_elem_size(ProtobufCType t);

/* ---- text format -------------------------------------------------------------------------- */

/* Parses the body of a message of type DESC from the token after its opening brace through
 * the closing CLOSE ('}' or '>'; 0 = until EOF, for a whole top-level message). On success the
 * current token is the closing one (not consumed). *OUT: caller frees. */
int pbtext_parse_body(struct pblex *lx, const ProtobufCMessageDescriptor *desc, char close,
                      ProtobufCMessage **out);
/* Parses one field value after the field name: for a message type, the optional ':' and a
 * braced body, with *MSG allocated; for a scalar, ':' and the value, stored into the field of
 * *MSG (which must exist). Consumes through the value's last token. */
int pbtext_parse_field(struct pblex *lx, const ProtobufCFieldDescriptor *fd, ProtobufCMessage *msg);

/* Skips the field NAME of DESC that DESC does not have (its name is the current token): the
 * optional ':' and a scalar, a braced message or a [list], counted in lx->unknown (must be
 * set). On success the current token is the value's last one. */
int pbtext_skip_unknown(struct pblex *lx, const ProtobufCMessageDescriptor *desc, const char *name);

/* Appends the fields of M (not enclosing braces) at INDENT spaces. */
int pbtext_print(struct tbuf *out, const ProtobufCMessage *m, int indent);
/* Appends "NAME {\n" + fields of M + "}\n" at INDENT. */
int pbtext_print_named(struct tbuf *out, const char *name, const ProtobufCMessage *m, int indent);

/* ---- JSON --------------------------------------------------------------------------------- */

/* Parses a JSON object of type DESC; the current token must be its '{'. On success the
 * current token is the closing '}' (not consumed). *OUT: caller frees. */
int pbjson_parse_object(struct pblex *lx, const ProtobufCMessageDescriptor *desc,
                        ProtobufCMessage **out);
/* Skips the member of DESC whose key (not a field of DESC) is the current token: ':' and any
 * value, counted in lx->unknown (must be set) with data unless null/false/0/""/{}/[]. On
 * success the current token is the value's last one ('}', ']' or the scalar). */
int pbjson_skip_unknown(struct pblex *lx, const ProtobufCMessageDescriptor *desc);
/* Finds a field by its JSON (lowerCamelCase) or original name; NULL if none. */
const ProtobufCFieldDescriptor *pbjson_field(const ProtobufCMessageDescriptor *desc,
                                             const char *name, size_t len);

/* Appends M as a JSON object (pretty, INDENT spaces per level, starting at DEPTH).
 * ALWAYS_PRIMITIVES prints zero-valued scalars too (Envoy's setting). */
int pbjson_print(struct tbuf *out, const ProtobufCMessage *m, int depth, bool always_primitives);

#endif

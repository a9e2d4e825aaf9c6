/* Access log formats (access_format.h).
 *
 * A format is compiled once into a list of parts (a literal, or an operator with its argument
 * and how it is placed), so rendering a line is a walk over the parts into one stack buffer:
 * no parsing, no allocation per connection. The parser follows Envoy's
 * (source/common/formatter/substitution_format_utility.cc and its parser): a '%' starts
 * %NAME%, %NAME(ARG)% or %NAME(ARG):LEN%; a '%' that starts none of these is a config error,
 * as is an unknown NAME (Envoy: "Not supported field in StreamInfo"), so a typo fails at load,
 * not as a column of "-" in production.
 *
 * JSON (json_format): a value that is one operator and nothing else keeps its type (Envoy's
 * typed JSON formatter: numbers stay numbers, an absent value is null); any other value is a
 * string in which each operator's text is JSON-escaped.
 *
 * Rejected: rendering with snprintf into a growing heap string (one allocation per part per
 * connection); a per-format precomputed size (values such as a failure reason have no bound
 * but the line's). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/access_format.h"
#include "core/sockaddr_text.h"

const char al_default_format[] =
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

enum al_op {
    OP_LITERAL,
    OP_START_TIME,
    OP_DURATION,
    OP_BYTES_RECEIVED,
    OP_BYTES_SENT,
    OP_DOWN_REMOTE,
    OP_DOWN_REMOTE_NOPORT,
    OP_DOWN_REMOTE_PORT,
    OP_DOWN_LOCAL,
    OP_DOWN_LOCAL_NOPORT,
    OP_DOWN_LOCAL_PORT,
    OP_UP_HOST,
    OP_UP_LOCAL,
    OP_UP_CLUSTER,
    OP_CONNECTION_ID,
    OP_RESPONSE_FLAGS,
    OP_UP_FAILURE,
    OP_TERMINATION,
    OP_HOSTNAME,
    OP_REQ,           /* %REQ(H)%: the admin's :METHOD and :PATH, else absent */
    OP_HTTP_ABSENT,   /* %RESP(H)%, %TRAILER(H)%, %PROTOCOL%: no HTTP at L4 */
    OP_RESPONSE_CODE, /* 0 at L4 (Envoy's), the admin's status code */
};

static const struct {
    const char *name;
    enum al_op op;
    bool arg; /* takes (ARG) */
} al_ops[] = {
    {"START_TIME", OP_START_TIME, true},
    {"DURATION", OP_DURATION, false},
    {"BYTES_RECEIVED", OP_BYTES_RECEIVED, false},
    {"BYTES_SENT", OP_BYTES_SENT, false},
    {"DOWNSTREAM_REMOTE_ADDRESS", OP_DOWN_REMOTE, false},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWN_REMOTE_NOPORT, false},
    {"DOWNSTREAM_REMOTE_PORT", OP_DOWN_REMOTE_PORT, false},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", OP_DOWN_REMOTE, false},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", OP_DOWN_REMOTE_NOPORT, false},
    {"DOWNSTREAM_LOCAL_ADDRESS", OP_DOWN_LOCAL, false},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", OP_DOWN_LOCAL_NOPORT, false},
    {"DOWNSTREAM_LOCAL_PORT", OP_DOWN_LOCAL_PORT, false},
    {"UPSTREAM_HOST", OP_UP_HOST, false},
    {"UPSTREAM_REMOTE_ADDRESS", OP_UP_HOST, false},
    {"UPSTREAM_LOCAL_ADDRESS", OP_UP_LOCAL, false},
    {"UPSTREAM_CLUSTER", OP_UP_CLUSTER, false},
    {"CONNECTION_ID", OP_CONNECTION_ID, false},
    {"RESPONSE_FLAGS", OP_RESPONSE_FLAGS, false},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", OP_UP_FAILURE, false},
    {"CONNECTION_TERMINATION_DETAILS", OP_TERMINATION, false},
    {"HOSTNAME", OP_HOSTNAME, false},
    {"REQ", OP_REQ, true},
    {"RESP", OP_HTTP_ABSENT, true},
    {"TRAILER", OP_HTTP_ABSENT, true},
    {"PROTOCOL", OP_HTTP_ABSENT, false},
    {"RESPONSE_CODE", OP_RESPONSE_CODE, false},
};

struct al_part {
    enum al_op op;
    enum al_mode mode;
    char *text; /* the literal, or the operator's argument (NULL: none) */
    size_t len;
    size_t max_len; /* :LEN, 0 = whole */
};

struct al_format {
    struct al_part *parts;
    size_t n, cap;
};

/* The flags in Envoy's printing order (ResponseFlagUtils: UH before UF before UO ... DC, URX,
 * SI ... DT). */
static const struct {
    unsigned flag;
    const char *text;
} al_flag_names[] = {
    {AL_FLAG_UH, "UH"},   {AL_FLAG_UF, "UF"}, {AL_FLAG_UO, "UO"}, {AL_FLAG_DC, "DC"},
    {AL_FLAG_URX, "URX"}, {AL_FLAG_SI, "SI"}, {AL_FLAG_DT, "DT"},
};

struct al_format *al_format_new(void)
{
    return calloc(1, sizeof(struct al_format));
}

void al_format_free(struct al_format *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        free(f->parts[i].text);
    free(f->parts);
    free(f);
}

static int al_push(struct al_format *f, enum al_op op, enum al_mode mode, const char *text,
                   size_t len, size_t max_len)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct al_part *p = realloc(f->parts, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        f->parts = p;
        f->cap = cap;
    }
    char *copy = NULL;
    if (text) {
        copy = strndup(text, len);
        if (!copy)
            return -ENOMEM;
    }
    f->parts[f->n++] =
        (struct al_part){.op = op, .mode = mode, .text = copy, .len = len, .max_len = max_len};
    return 0;
}

int al_format_add_literal(struct al_format *f, const char *literal, size_t len)
{
    return al_push(f, OP_LITERAL, AL_TEXT, literal, len, 0);
}

/* Parses the operator at S (S[0] == '%'): sets *OP, *ARG and *ARG_LEN (NULL: none), *MAX_LEN and
 * *END (past the closing '%'). Returns 0 or -EINVAL with WHY. */
static int al_parse_op(const char *s, enum al_op *op, const char **arg, size_t *arg_len,
                       size_t *max_len, const char **end, char *why, size_t why_size)
{
    const char *p = s + 1, *name = p;
    while ((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_')
        p++;
    size_t name_len = (size_t)(p - name);
    *arg = NULL;
    *arg_len = 0;
    *max_len = 0;
    if (*p == '(') {
        const char *close = strchr(p, ')');
        if (!close) {
            snprintf(why, why_size, "'%%%.*s(' has no closing ')'", (int)name_len, name);
            return -EINVAL;
        }
        *arg = p + 1;
        *arg_len = (size_t)(close - p - 1);
        p = close + 1;
        if (*p == ':') {
            char *e;
            unsigned long v = strtoul(p + 1, &e, 10);
            if (e == p + 1) {
                snprintf(why, why_size, "'%%%.*s(...):' needs a length", (int)name_len, name);
                return -EINVAL;
            }
            *max_len = v;
            p = e;
        }
    }
    if (!name_len || *p != '%') {
        snprintf(why, why_size,
                 "a '%%' that starts no operator at \"%.20s\" (operators are %%NAME%% or "
                 "%%NAME(ARG)%%, as in Envoy)",
                 s);
        return -EINVAL;
    }
    for (size_t i = 0; i < sizeof(al_ops) / sizeof(al_ops[0]); i++) {
        if (strlen(al_ops[i].name) != name_len || strncmp(al_ops[i].name, name, name_len))
            continue;
        if (*arg && !al_ops[i].arg) {
            snprintf(why, why_size, "%%%s%% takes no argument", al_ops[i].name);
            return -EINVAL;
        }
        if (!*arg && al_ops[i].op != OP_START_TIME && al_ops[i].arg) {
            snprintf(why, why_size, "%%%s(...)%% needs its argument", al_ops[i].name);
            return -EINVAL;
        }
        *op = al_ops[i].op;
        *end = p + 1;
        return 0;
    }
    snprintf(why, why_size,
             "unsupported access log operator %%%.*s%% (Envoy's \"Not supported field in "
             "StreamInfo\"; socktap has the L4 ones: docs/envoy-compat.md)",
             (int)name_len, name);
    return -EINVAL;
}

int al_format_add(struct al_format *f, const char *text, enum al_mode mode, char *why,
                  size_t why_size)
{
    const char *p = text;
    size_t first = f->n;
    int rc;
    while (*p) {
        const char *pct = strchr(p, '%');
        size_t lit = pct ? (size_t)(pct - p) : strlen(p);
        if (lit && (rc = al_push(f, OP_LITERAL, mode, p, lit, 0)))
            return rc;
        if (!pct)
            break;
        enum al_op op;
        const char *arg, *end;
        size_t arg_len, max_len;
        if ((rc = al_parse_op(pct, &op, &arg, &arg_len, &max_len, &end, why, why_size)))
            return rc;
        if ((rc = al_push(f, op, mode, arg, arg_len, max_len)))
            return rc;
        p = end;
    }
    if (mode == AL_JSON_VALUE && !(f->n == first + 1 && f->parts[first].op != OP_LITERAL)) {
        /* not a lone operator: a JSON string of everything it holds */
        for (size_t i = first; i < f->n; i++)
            f->parts[i].mode = AL_JSON_STRING;
        if ((rc = al_push(f, OP_LITERAL, AL_TEXT, "\"", 1, 0)))
            return rc;
        struct al_part q = f->parts[f->n - 1];
        memmove(&f->parts[first + 1], &f->parts[first], (f->n - 1 - first) * sizeof(q));
        f->parts[first] = q;
        if ((rc = al_push(f, OP_LITERAL, AL_TEXT, "\"", 1, 0)))
            return rc;
    }
    return 0;
}

/* ---- rendering ---- */

struct al_out {
    char *buf;
    size_t size, len;
};

static void out_raw(struct al_out *o, const char *s, size_t n)
{
    size_t room = o->size - 1 - o->len;
    if (n > room)
        n = room;
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

/* S (N bytes) as MODE places it: JSON-escaped inside a JSON string. */
static void out_text(struct al_out *o, enum al_mode mode, const char *s, size_t n)
{
    if (mode == AL_TEXT) {
        out_raw(o, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            out_raw(o, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            out_raw(o, esc, 6);
        } else {
            out_raw(o, (const char *)&c, 1);
        }
    }
}

/* A value of operator part P: a string (quoted in a JSON value), a number, or absent. */
static void out_string(struct al_out *o, const struct al_part *p, const char *s)
{
    if (!s || !*s) {
        if (p->mode == AL_JSON_VALUE)
            out_raw(o, "null", 4);
        else
            out_text(o, p->mode, "-", 1);
        return;
    }
    size_t n = strlen(s);
    if (p->max_len && n > p->max_len)
        n = p->max_len;
    if (p->mode == AL_JSON_VALUE) {
        out_raw(o, "\"", 1);
        out_text(o, AL_JSON_STRING, s, n);
        out_raw(o, "\"", 1);
    } else {
        out_text(o, p->mode, s, n);
    }
}

static void out_number(struct al_out *o, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof(num), "%" PRIu64, v);
    out_raw(o, num, (size_t)n);
}

static void out_address(struct al_out *o, const struct al_part *p,
                        const struct sockaddr_storage *ss, socklen_t len, enum al_op which)
{
    char text[SOCKADDR_TEXT_MAX];
    uint16_t port;
    if (!len) {
        out_string(o, p, NULL);
        return;
    }
    if (which == OP_DOWN_REMOTE_NOPORT || which == OP_DOWN_LOCAL_NOPORT) {
        if (sockaddr_ip_port((const struct sockaddr *)ss, len, text, sizeof(text), NULL))
            text[0] = '\0';
    } else if (which == OP_DOWN_REMOTE_PORT || which == OP_DOWN_LOCAL_PORT) {
        if (sockaddr_ip_port((const struct sockaddr *)ss, len, text, sizeof(text), &port) == 0) {
            out_number(o, port);
            return;
        }
        text[0] = '\0';
    } else {
        sockaddr_text((const struct sockaddr *)ss, len, ':', text, sizeof(text));
    }
    out_string(o, p, text);
}

/* %START_TIME(FMT)%: strftime in UTC plus Envoy's sub-second specifiers (%f, %1f..%9f,
 * %E3S-like %E<n>S) and %s (source/common/common/utility.cc DateFormatter). */
static void out_time(struct al_out *o, const struct al_part *p, const struct timeval *tv)
{
    const char *fmt = p->text && *p->text ? p->text : "%Y-%m-%dT%H:%M:%E3SZ";
    char res[256];
    size_t rlen = 0;
    struct tm tm;
    time_t secs = tv->tv_sec;
    gmtime_r(&secs, &tm);
    for (const char *f = fmt; *f && rlen < sizeof(res) - 32; f++) {
        if (*f != '%' || !f[1]) {
            res[rlen++] = *f;
            continue;
        }
        const char *spec = f + 1;
        unsigned digits = 0;
        bool seconds = false;
        if (spec[0] == 'E' && spec[1] >= '1' && spec[1] <= '9' && spec[2] == 'S') {
            digits = (unsigned)(spec[1] - '0');
            seconds = true;
            f += 3;
        } else if (spec[0] >= '1' && spec[0] <= '9' && spec[1] == 'f') {
            digits = (unsigned)(spec[0] - '0');
            f += 2;
        } else if (spec[0] == 'f') {
            digits = 9;
            f += 1;
        } else if (spec[0] == 's') {
            rlen += (size_t)snprintf(res + rlen, sizeof(res) - rlen, "%lld", (long long)secs);
            f += 1;
            continue;
        } else {
            char one[3] = {'%', spec[0], '\0'};
            rlen += strftime(res + rlen, sizeof(res) - rlen, one, &tm);
            f += 1;
            continue;
        }
        if (seconds)
            rlen += (size_t)snprintf(res + rlen, sizeof(res) - rlen, "%02d.", tm.tm_sec);
        char frac[16];
        snprintf(frac, sizeof(frac), "%06ld000", (long)tv->tv_usec);
        memcpy(res + rlen, frac, digits);
        rlen += digits;
    }
    res[rlen] = '\0';
    out_string(o, p, res);
}

static const char *al_hostname(void)
{
    static char name[256];
    static int done;
    if (!__atomic_load_n(&done, __ATOMIC_ACQUIRE)) {
        char tmp[256];
        if (gethostname(tmp, sizeof(tmp)) != 0)
            tmp[0] = '\0';
        tmp[sizeof(tmp) - 1] = '\0';
        /* racing threads write the same bytes; the flag publishes them */
        memcpy(name, tmp, sizeof(name));
        __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    }
    return name;
}

size_t al_format_render(const struct al_format *f, const struct al_info *in, char *buf, size_t size)
{
    struct al_out o = {.buf = buf, .size = size, .len = 0};
    if (!size)
        return 0;
    for (size_t i = 0; i < f->n; i++) {
        const struct al_part *p = &f->parts[i];
        switch (p->op) {
        case OP_LITERAL:
            out_text(&o, p->mode, p->text, p->len);
            break;
        case OP_START_TIME:
            out_time(&o, p, &in->start);
            break;
        case OP_DURATION:
        case OP_BYTES_RECEIVED:
        case OP_BYTES_SENT:
        case OP_CONNECTION_ID:
        case OP_RESPONSE_CODE: {
            uint64_t v = p->op == OP_DURATION         ? in->duration_ms
                         : p->op == OP_BYTES_RECEIVED ? in->bytes_received
                         : p->op == OP_BYTES_SENT     ? in->bytes_sent
                         : p->op == OP_CONNECTION_ID  ? in->conn_id
                                                      : (uint64_t)in->response_code;
            out_number(&o, v);
            break;
        }
        case OP_DOWN_REMOTE:
        case OP_DOWN_REMOTE_NOPORT:
        case OP_DOWN_REMOTE_PORT:
            out_address(&o, p, &in->down_remote, in->down_remote_len, p->op);
            break;
        case OP_DOWN_LOCAL:
        case OP_DOWN_LOCAL_NOPORT:
        case OP_DOWN_LOCAL_PORT:
            out_address(&o, p, &in->down_local, in->down_local_len, p->op);
            break;
        case OP_UP_HOST:
            out_address(&o, p, &in->up_host, in->up_host_len, p->op);
            break;
        case OP_UP_LOCAL:
            out_address(&o, p, &in->up_local, in->up_local_len, p->op);
            break;
        case OP_UP_CLUSTER:
            out_string(&o, p, in->cluster);
            break;
        case OP_RESPONSE_FLAGS: {
            char flags[64];
            size_t n = 0;
            for (size_t k = 0; k < sizeof(al_flag_names) / sizeof(al_flag_names[0]); k++)
                if (in->flags & al_flag_names[k].flag)
                    n += (size_t)snprintf(flags + n, sizeof(flags) - n, "%s%s", n ? "," : "",
                                          al_flag_names[k].text);
            flags[n] = '\0';
            /* Envoy prints "-" for no flag, in JSON too (a string, not null) */
            out_string(&o, p, n ? flags : "-");
            break;
        }
        case OP_UP_FAILURE:
            out_string(&o, p, in->up_failure);
            break;
        case OP_TERMINATION:
            out_string(&o, p, in->termination);
            break;
        case OP_HOSTNAME:
            out_string(&o, p, al_hostname());
            break;
        case OP_REQ: {
            const char *v = NULL;
            if (p->text && (!strcasecmp(p->text, ":METHOD")))
                v = in->method;
            else if (p->text && (!strcasecmp(p->text, ":PATH") ||
                                 !strcasecmp(p->text, "X-ENVOY-ORIGINAL-PATH?:PATH")))
                v = in->path;
            out_string(&o, p, v);
            break;
        }
        case OP_HTTP_ABSENT:
            out_string(&o, p, NULL);
            break;
        }
    }
    buf[o.len] = '\0';
    return o.len;
}

/* socktap-trace: print (and thereby validate) any trace, or extract one direction's bytes,
 * or re-encode it. Thin: argument parsing over trace_reader.h and trace_encode.h; convert's
 * output goes through trace_out.h (never over an input, never over an existing file without
 * --force, nothing left behind on failure). Exit 0 ok, 1 bad input or output, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "trace/trace_encode.h"
#include "trace/trace_out.h"
#include "trace/trace_reader.h"

#define TO_NAMES                                                                                   \
    "v2-binary, v2-text, v3-binary, v3-length-delimited, v3-text, v3-json or v3-json-string"

static void usage_text(FILE *f)
{
    fputs("usage: socktap-trace dump [--format F] [--connection-fields auto|old|new] FILE\n"
          "       socktap-trace cat --direction read|write [--format F] FILE...\n"
          "       socktap-trace convert --to v2-binary|v2-text|v3-binary|v3-length-delimited|\n"
          "                             v3-text|v3-json|v3-json-string [--buffered]\n"
          "                             [-o OUTPUT [--force]] FILE...\n"
          "       socktap-trace --version | --help\n"
          "Every command takes [--allow-unknown]. FILE '-' reads stdin. Formats: auto v2-binary\n"
          "v2-text v3-binary v3-length-delimited v3-text v3-json\n"
          "--allow-unknown: fields the schema does not know are skipped with a warning\n"
          "(without it, skipped fields with data fail with exit 1)\n"
          "cat and convert over several FILEs (the pieces of a rotated trace) take them in the\n"
          "order of their first events, whatever the order given; convert makes them one trace.\n"
          "convert writes stdout, or OUTPUT ('-' = stdout): OUTPUT must not exist (--force\n"
          "replaces it) and is never FILE; it appears, mode 0600, only when the run succeeds.\n"
          "Exit: 0 ok, 1 bad input or output error, 2 usage.\n",
          f);
}

/* A usage error: says what was wrong, then the usage text. Returns the usage exit status. */
static int __attribute__((format(printf, 1, 2))) usage(const char *fmt, ...)
{
    va_list ap;

    fputs("socktap-trace: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    usage_text(stderr);
    return 2;
}

static int parse_to(const char *to, struct trace_enc_cfg *c)
{
    static const struct {
        const char *name;
        enum trace_schema schema;
        enum trace_format format;
    } tab[] = {
        {"v2-binary", TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_BINARY},
        {"v2-text", TRACE_SCHEMA_V2_CAPTURE, TRACE_FMT_PROTO_TEXT},
        {"v3-binary", TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY},
        {"v3-length-delimited", TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED},
        {"v3-text", TRACE_SCHEMA_V3_TAP, TRACE_FMT_PROTO_TEXT},
        {"v3-json", TRACE_SCHEMA_V3_TAP, TRACE_FMT_JSON_BODY_AS_BYTES},
        {"v3-json-string", TRACE_SCHEMA_V3_TAP, TRACE_FMT_JSON_BODY_AS_STRING},
    };
    for (size_t i = 0; to && i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcmp(to, tab[i].name) == 0) {
            c->schema = tab[i].schema;
            c->format = tab[i].format;
            return 0;
        }
    }
    return -EINVAL;
}

/* A conversion: one encoder fed by one trace, or by the pieces of a rotated one in order. */
struct convert {
    const struct trace_enc_cfg *cfg;
    FILE *out_f; /* borrowed */
    struct trace_enc *enc;
    struct tbuf out;
    struct trace_conn conn; /* the first event's connection */
    bool rt, wt;            /* an input said read/write truncated */
};

static bool conn_same(const struct trace_conn *a, const struct trace_conn *b)
{
    return a->id == b->id && a->local.present == b->local.present &&
           a->remote.present == b->remote.present && a->local.port == b->local.port &&
           a->remote.port == b->remote.port && !strcmp(a->local.address, b->local.address) &&
           !strcmp(a->remote.address, b->remote.address);
}

/* Re-encodes every event of R (one connection: the first one seen) into CV. With PIECE (R's
 * name), R continues CV's trace and must hold the same connection: else reported, and 1.
 * Returns 0, 1 or -errno (R's error or -EIO). */
static int convert_feed(struct convert *cv, struct trace_reader *r, const char *piece)
{
    static const struct trace_conn none;
    struct trace_event ev;
    const struct trace_conn *conn;
    bool first = true;
    int rc;
    while ((rc = trace_reader_next(r, &ev, &conn)) == 1) {
        if (!conn)
            conn = &none;
        if (!cv->enc) {
            cv->conn = *conn;
            rc = trace_enc_new(cv->cfg, conn, &cv->enc);
            rc = rc ?: trace_enc_begin(cv->enc, &cv->out);
            if (rc)
                break;
        } else if (piece && first && !conn_same(conn, &cv->conn)) {
            fprintf(stderr,
                    "socktap-trace: %s: connection %llu is not the first FILE's (%llu): convert "
                    "over several FILEs takes the pieces of one rotated trace\n",
                    piece, (unsigned long long)conn->id, (unsigned long long)cv->conn.id);
            return 1;
        }
        first = false;
        rc = trace_enc_event(cv->enc, &ev, &cv->out);
        if (rc)
            break;
        if (cv->out.len > 65536) {
            if (fwrite(cv->out.data, 1, cv->out.len, cv->out_f) != cv->out.len) {
                rc = -EIO;
                break;
            }
            cv->out.len = 0;
        }
    }
    cv->rt |= trace_reader_read_truncated(r);
    cv->wt |= trace_reader_write_truncated(r);
    return rc;
}

/* The end of CV's trace (RC: the feeding's result) written out; CV freed. Returns RC or the
 * first failure. Buffered v3 output holds the whole trace: a tool for tests and small traces. */
static int convert_end(struct convert *cv, int rc)
{
    if (rc == 0 && !cv->enc) {
        struct trace_conn none = {0};
        rc = trace_enc_new(cv->cfg, &none, &cv->enc);
        rc = rc ?: trace_enc_begin(cv->enc, &cv->out);
    }
    bool rt = cv->rt, wt = cv->wt;
    if (rc == 0 && !trace_enc_mark_truncated(cv->enc, rt, wt) && (rt || wt))
        fprintf(stderr,
                "socktap-trace: warning: the input is %s truncated; only --to v3-* "
                "--buffered output can say so\n",
                rt && wt ? "read and write"
                : rt     ? "read"
                         : "write");
    if (rc == 0)
        rc = trace_enc_end(cv->enc, &cv->out);
    if (rc == 0 && fwrite(cv->out.data, 1, cv->out.len, cv->out_f) != cv->out.len)
        rc = -EIO;
    trace_enc_free(cv->enc);
    cv->enc = NULL;
    tbuf_free(&cv->out);
    return rc;
}

/* Opens convert's output (see trace_out.h) as a FILE. Returns 0 or 1 (message printed). */
static int open_output(struct trace_out *o, FILE **f, const char *opath, const char *const *ins,
                       size_t nin, bool force)
{
    char err[512];

    if (trace_out_open(o, "socktap-trace", opath, ins, nin, force, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (o->fd == STDOUT_FILENO) {
        *f = stdout;
        return 0;
    }
    int fd = dup(o->fd);
    *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!*f) {
        fprintf(stderr, "socktap-trace: output %s: %s\n", opath, strerror(errno));
        if (fd >= 0)
            close(fd);
        trace_out_abort(o);
        return 1;
    }
    return 0;
}

/* Makes convert's output final on success (RC 0), else discards it. Returns the exit status. */
static int close_output(struct trace_out *o, FILE *f, const char *opath, int rc)
{
    char err[512];
    int status = rc < 0;

    if (f != stdout && fclose(f) != 0 && !status) {
        fprintf(stderr, "socktap-trace: output %s: %s\n", opath, strerror(errno));
        status = 1;
    }
    if (status) {
        if (o->tmp)
            fprintf(stderr, "socktap-trace: %s not written\n", opath);
        trace_out_abort(o);
        return status;
    }
    if (trace_out_commit(o, "socktap-trace", opath, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    return 0;
}

/* The end of a run over R: RC (the last result) and unknown fields reported, R freed. Returns
 * the exit status (0 or 1). */
static int reader_done(struct trace_reader *r, int rc, bool allow_unknown)
{
    int status = 0;
    if (rc < 0) {
        fprintf(stderr, "socktap-trace: %s\n", rc == -EIO ? strerror(EIO) : trace_reader_error(r));
        status = 1;
    }
    if (trace_reader_report_unknown(r, "socktap-trace", allow_unknown, stderr))
        status = 1;
    trace_reader_free(r);
    return status;
}

/* cat of one trace: DIR's bytes to stdout. Returns the exit status (0 or 1, reported). */
static int cat_one(const char *path, const struct trace_reader_opts *opts, int dir,
                   bool allow_unknown)
{
    struct trace_reader *r;
    struct trace_event ev;
    int rc = trace_reader_open_path(path, opts, &r);
    if (rc) {
        fprintf(stderr, "socktap-trace: %s: %s\n", path, strerror(-rc));
        return 1;
    }
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1) {
        if ((int)ev.dir == dir && ev.len &&
            fwrite(ev.iov[0].iov_base, 1, ev.len, stdout) != ev.len) {
            rc = -EIO;
            break;
        }
    }
    return reader_done(r, rc, allow_unknown);
}

struct piece {
    const char *path;
    int64_t sec; /* first event's time; a trace without events sorts first */
    int32_t nsec;
    int index;
};

static int piece_cmp(const void *pa, const void *pb)
{
    const struct piece *a = pa, *b = pb;
    if (a->sec != b->sec)
        return a->sec < b->sec ? -1 : 1;
    if (a->nsec != b->nsec)
        return a->nsec < b->nsec ? -1 : 1;
    return a->index - b->index;
}

/* The N traces PATHS (socktap_limits rotation pieces, socktap extension) in the order of their
 * first events (a first pass reads each one's), so a shell glob's order (`in_1.1.pb` before
 * `in_1.pb`) does not matter: into *OUT (the caller's: free), PATHS borrowed. Returns the exit
 * status: 0, 1 (an input failed, reported) or 2 (stdin among them, reported). */
static int pieces_order(const char *cmd, char *const *paths, int n,
                        const struct trace_reader_opts *opts, struct piece **out)
{
    struct piece *v = calloc((size_t)n, sizeof(*v));
    int status = 0;
    if (!v) {
        fprintf(stderr, "socktap-trace: %s\n", strerror(ENOMEM));
        return 1;
    }
    for (int i = 0; i < n && !status; i++) {
        struct trace_reader *r;
        struct trace_event ev;
        v[i] = (struct piece){.path = paths[i], .index = i, .sec = INT64_MIN};
        if (strcmp(paths[i], "-") == 0) {
            fprintf(stderr, "socktap-trace: %s: stdin ('-') cannot be one of several FILEs\n", cmd);
            status = 2;
            break;
        }
        int rc = trace_reader_open_path(paths[i], opts, &r);
        if (rc) {
            fprintf(stderr, "socktap-trace: %s: %s\n", paths[i], strerror(-rc));
            status = 1;
            break;
        }
        if (trace_reader_next(r, &ev, NULL) == 1) {
            v[i].sec = ev.sec;
            v[i].nsec = ev.nsec;
        }
        trace_reader_free(r);
    }
    if (status) {
        free(v);
        return status;
    }
    qsort(v, (size_t)n, sizeof(*v), piece_cmp);
    *out = v;
    return 0;
}

/* cat over the N traces PATHS, in pieces_order. Stops at the first failing input. Returns the
 * exit status. */
static int cat_pieces(char *const *paths, int n, const struct trace_reader_opts *opts, int dir,
                      bool allow_unknown)
{
    struct piece *v;
    int status = pieces_order("cat", paths, n, opts, &v);
    if (status)
        return status;
    for (int i = 0; i < n && !status; i++)
        status = cat_one(v[i].path, opts, dir, allow_unknown);
    free(v);
    return status;
}

/* convert of the N pieces PATHS of one rotated trace, in pieces_order, into one trace at OPATH.
 * Returns the exit status. */
static int convert_pieces(char *const *paths, int n, const struct trace_reader_opts *opts,
                          const struct trace_enc_cfg *cfg, const char *opath, bool force,
                          bool allow_unknown)
{
    struct piece *v;
    struct trace_out out;
    struct convert cv = {.cfg = cfg};
    int status = pieces_order("convert", paths, n, opts, &v);
    if (status)
        return status;
    if (open_output(&out, &cv.out_f, opath, (const char *const *)paths, (size_t)n, force)) {
        free(v);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        struct trace_reader *r;
        rc = trace_reader_open_path(v[i].path, opts, &r);
        if (rc) {
            fprintf(stderr, "socktap-trace: %s: %s\n", v[i].path, strerror(-rc));
            break;
        }
        rc = convert_feed(&cv, r, i ? v[i].path : NULL);
        if (rc == 1) {
            trace_reader_free(r);
            break;
        }
        if (reader_done(r, rc, allow_unknown))
            rc = 1;
    }
    rc = convert_end(&cv, rc);
    free(v);
    return close_output(&out, cv.out_f, opath, rc ? -EIO : 0);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage("missing command: dump, cat or convert");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0) {
        printf("socktap-trace %s\n", SOCKTAP_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage_text(stdout);
        return 0;
    }
    bool dump = strcmp(cmd, "dump") == 0;
    bool convert = strcmp(cmd, "convert") == 0;
    if (!dump && !convert && strcmp(cmd, "cat") != 0)
        return usage("unknown command '%s': expected dump, cat or convert", cmd);
    struct trace_enc_cfg ecfg = {.streaming = true};
    const char *to = NULL, *opath = NULL;
    struct trace_reader_opts opts = {0};
    bool force = false;
    int dir = -1;
    bool allow_unknown = false;
    static const struct option lopts[] = {{"format", required_argument, NULL, 'f'},
                                          {"direction", required_argument, NULL, 'd'},
                                          {"connection-fields", required_argument, NULL, 'c'},
                                          {"to", required_argument, NULL, 't'},
                                          {"buffered", no_argument, NULL, 'b'},
                                          {"output", required_argument, NULL, 'o'},
                                          {"force", no_argument, NULL, 'F'},
                                          {"allow-unknown", no_argument, NULL, 'u'},
                                          {NULL, 0, NULL, 0}};
    int c;
    optind = 2;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "f:d:c:t:bo:", lopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (trace_in_format_parse(optarg, &opts.format))
                return usage("--format: expected auto, v2-binary, v2-text, v3-binary, "
                             "v3-length-delimited, v3-text or v3-json, got '%s'",
                             optarg);
            break;
        case 'd':
            if (strcmp(optarg, "read") == 0)
                dir = TRACE_EV_READ;
            else if (strcmp(optarg, "write") == 0)
                dir = TRACE_EV_WRITE;
            else
                return usage("--direction: expected read or write, got '%s'", optarg);
            break;
        case 'c':
            if (strcmp(optarg, "auto") == 0)
                opts.conn_fields = TRACE_CONN_FIELDS_AUTO;
            else if (strcmp(optarg, "old") == 0)
                opts.conn_fields = TRACE_CONN_FIELDS_OLD;
            else if (strcmp(optarg, "new") == 0)
                opts.conn_fields = TRACE_CONN_FIELDS_NEW;
            else
                return usage("--connection-fields: expected auto, old or new, got '%s'", optarg);
            break;
        case 't':
            to = optarg;
            break;
        case 'u':
            allow_unknown = true;
            break;
        case 'b':
            ecfg.streaming = false;
            ecfg.max_buffered_rx = ecfg.max_buffered_tx = UINT32_MAX;
            break;
        case 'o':
            opath = optarg;
            break;
        case 'F':
            force = true;
            break;
        default:
            /* getopt sets optopt to a long option's value too: name it as the user wrote it. */
            if (strncmp(argv[optind - 1], "--", 2) == 0 || !optopt)
                return usage("%s: unknown option or missing its argument", argv[optind - 1]);
            if (strchr("fdcto", optopt))
                return usage("option -%c needs an argument", optopt);
            return usage("unknown option -%c", optopt);
        }
    }
    if (optind >= argc)
        return usage("%s: missing FILE", cmd);
    if (optind != argc - 1 && dump)
        return usage("%s: expected one FILE, got %d (first extra: '%s')", cmd, argc - optind,
                     argv[optind + 1]);
    if (!dump && !convert && dir < 0)
        return usage("cat: --direction read|write is required");

    if (convert && !to)
        return usage("convert: --to FORMAT is required (" TO_NAMES ")");
    if (convert && parse_to(to, &ecfg))
        return usage("--to: expected " TO_NAMES ", got '%s'", to);
    if (!convert && (opath || force || to))
        return usage("%s: --to, --output and --force belong to convert", cmd);
    if (convert && argc - optind > 1) {
        int status = convert_pieces(argv + optind, argc - optind, &opts, &ecfg, opath ? opath : "-",
                                    force, allow_unknown);
        return fflush(stdout) != 0 ? 1 : status;
    }
    if (!dump && !convert) {
        int status = argc - optind == 1
                         ? cat_one(argv[optind], &opts, dir, allow_unknown)
                         : cat_pieces(argv + optind, argc - optind, &opts, dir, allow_unknown);
        return fflush(stdout) != 0 ? 1 : status;
    }
    if (!opath)
        opath = "-";
    const char *path = argv[optind];
    struct trace_out out;
    FILE *out_f = stdout;
    if (convert && open_output(&out, &out_f, opath, &path, 1, force))
        return 1;
    struct trace_reader *r;
    int rc = trace_reader_open_path(path, &opts, &r);
    if (rc) {
        fprintf(stderr, "socktap-trace: %s: %s\n", path, strerror(-rc));
        if (convert)
            close_output(&out, out_f, opath, rc);
        return 1;
    }
    if (dump)
        trace_reader_set_echo(r, stdout);
    struct trace_event ev;
    if (convert) {
        struct convert cv = {.cfg = &ecfg, .out_f = out_f};
        rc = convert_end(&cv, convert_feed(&cv, r, NULL));
        goto done;
    }
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1)
        ; /* dump: the reader echoes each event */
done:;
    int status = reader_done(r, rc, allow_unknown);
    if (convert && close_output(&out, out_f, opath, status ? -EIO : 0))
        status = 1;
    if (fflush(stdout) != 0)
        status = 1;
    return status;
}

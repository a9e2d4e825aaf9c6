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
          "                             [-o OUTPUT [--force]] FILE\n"
          "       socktap-trace --version | --help\n"
          "Every command takes [--allow-unknown]. FILE '-' reads stdin. Formats: auto v2-binary\n"
          "v2-text v3-binary v3-length-delimited v3-text v3-json\n"
          "--allow-unknown: fields the schema does not know are skipped with a warning\n"
          "(without it, skipped fields with data fail with exit 1)\n"
          "cat over several FILEs (the pieces of a rotated trace) takes them in the order of\n"
          "their first events, whatever the order given.\n"
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

/* Re-encodes every event of R (one connection: the first one seen) to OUT (borrowed).
 * Buffered v3 output holds the whole trace: a tool for tests and small traces. */
static int convert_all(struct trace_reader *r, const struct trace_enc_cfg *cfg, FILE *out_f)
{
    struct trace_enc *enc = NULL;
    struct tbuf out = {0};
    struct trace_event ev;
    const struct trace_conn *conn;
    int rc;
    while ((rc = trace_reader_next(r, &ev, &conn)) == 1) {
        if (!enc) {
            rc = trace_enc_new(cfg, conn, &enc);
            rc = rc ?: trace_enc_begin(enc, &out);
            if (rc)
                break;
        }
        rc = trace_enc_event(enc, &ev, &out);
        if (rc)
            break;
        if (out.len > 65536) {
            if (fwrite(out.data, 1, out.len, out_f) != out.len) {
                rc = -EIO;
                break;
            }
            out.len = 0;
        }
    }
    if (rc == 0 && !enc) {
        struct trace_conn none = {0};
        rc = trace_enc_new(cfg, &none, &enc);
        rc = rc ?: trace_enc_begin(enc, &out);
    }
    bool rt = trace_reader_read_truncated(r), wt = trace_reader_write_truncated(r);
    if (rc == 0 && !trace_enc_mark_truncated(enc, rt, wt) && (rt || wt))
        fprintf(stderr,
                "socktap-trace: warning: the input is %s truncated; only --to v3-* "
                "--buffered output can say so\n",
                rt && wt ? "read and write"
                : rt     ? "read"
                         : "write");
    if (rc == 0)
        rc = trace_enc_end(enc, &out);
    if (rc == 0 && fwrite(out.data, 1, out.len, out_f) != out.len)
        rc = -EIO;
    trace_enc_free(enc);
    tbuf_free(&out);
    return rc;
}

/* Opens convert's output (see trace_out.h) as a FILE. Returns 0 or 1 (message printed). */
static int open_output(struct trace_out *o, FILE **f, const char *opath, const char *in, bool force)
{
    char err[512];

    if (trace_out_open(o, "socktap-trace", opath, &in, 1, force, err, sizeof(err)) != 0) {
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

struct cat_piece {
    const char *path;
    int64_t sec; /* first event's time; a trace without events sorts first */
    int32_t nsec;
    int index;
};

static int cat_piece_cmp(const void *pa, const void *pb)
{
    const struct cat_piece *a = pa, *b = pb;
    if (a->sec != b->sec)
        return a->sec < b->sec ? -1 : 1;
    if (a->nsec != b->nsec)
        return a->nsec < b->nsec ? -1 : 1;
    return a->index - b->index;
}

/* cat over the N traces PATHS (socktap_limits rotation pieces, socktap extension): a first pass
 * reads each one's first event, then they are cat in that order, so a shell glob's order
 * (`in_1.1.pb` before `in_1.pb`) does not matter. Stops at the first failing input. Returns the
 * exit status. */
static int cat_pieces(char *const *paths, int n, const struct trace_reader_opts *opts, int dir,
                      bool allow_unknown)
{
    struct cat_piece *v = calloc((size_t)n, sizeof(*v));
    int status = 0;
    if (!v) {
        fprintf(stderr, "socktap-trace: %s\n", strerror(ENOMEM));
        return 1;
    }
    for (int i = 0; i < n; i++) {
        struct trace_reader *r;
        struct trace_event ev;
        v[i] = (struct cat_piece){.path = paths[i], .index = i, .sec = INT64_MIN};
        if (strcmp(paths[i], "-") == 0) {
            fprintf(stderr, "socktap-trace: cat: stdin ('-') cannot be one of several FILEs\n");
            status = 2;
            goto out_free;
        }
        int rc = trace_reader_open_path(paths[i], opts, &r);
        if (rc) {
            fprintf(stderr, "socktap-trace: %s: %s\n", paths[i], strerror(-rc));
            status = 1;
            goto out_free;
        }
        if (trace_reader_next(r, &ev, NULL) == 1) {
            v[i].sec = ev.sec;
            v[i].nsec = ev.nsec;
        }
        trace_reader_free(r);
    }
    qsort(v, (size_t)n, sizeof(*v), cat_piece_cmp);
    for (int i = 0; i < n && !status; i++)
        status = cat_one(v[i].path, opts, dir, allow_unknown);
out_free:
    free(v);
    return status;
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
    if (optind != argc - 1 && (dump || convert))
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
    if (convert && open_output(&out, &out_f, opath, path, force))
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
        rc = convert_all(r, &ecfg, out_f);
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

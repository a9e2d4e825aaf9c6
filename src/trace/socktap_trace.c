/* socktap-trace: print (and thereby validate) any trace, or extract one direction's bytes.
 * Thin: argument parsing over trace_reader.h. Exit 0 ok, 1 bad input, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "trace/trace_encode.h"
#include "trace/trace_reader.h"

static int usage(void)
{
    fputs("usage: socktap-trace dump [--format F] [--connection-fields old|new] FILE\n"
          "       socktap-trace cat --direction read|write [--format F] FILE\n"
          "       socktap-trace convert --to v2-binary|v2-text|v3-binary|v3-length-delimited|\n"
          "                             v3-text|v3-json|v3-json-string [--buffered] FILE\n"
          "FILE '-' reads stdin. Formats: auto v2-binary v2-text v3-binary\n"
          "v3-length-delimited v3-text v3-json\n"
          "--allow-unknown: fields the schema does not know are skipped with a warning\n"
          "(without it, skipped fields with data fail with exit 1)\n",
          stderr);
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

/* Re-encodes every event of R (one connection: the first one seen) to stdout. Buffered v3
 * output holds the whole trace: a tool for tests and small traces. */
static int convert_all(struct trace_reader *r, const struct trace_enc_cfg *cfg)
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
            if (fwrite(out.data, 1, out.len, stdout) != out.len) {
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
    if (rc == 0 && fwrite(out.data, 1, out.len, stdout) != out.len)
        rc = -EIO;
    trace_enc_free(enc);
    tbuf_free(&out);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    bool dump = strcmp(cmd, "dump") == 0;
    bool convert = strcmp(cmd, "convert") == 0;
    if (!dump && !convert && strcmp(cmd, "cat") != 0)
        return usage();
    struct trace_enc_cfg ecfg = {.streaming = true};
    const char *to = NULL;
    struct trace_reader_opts opts = {0};
    int dir = -1;
    bool allow_unknown = false;
    static const struct option lopts[] = {{"format", required_argument, NULL, 'f'},
                                          {"direction", required_argument, NULL, 'd'},
                                          {"connection-fields", required_argument, NULL, 'c'},
                                          {"to", required_argument, NULL, 't'},
                                          {"buffered", no_argument, NULL, 'b'},
                                          {"allow-unknown", no_argument, NULL, 'u'},
                                          {NULL, 0, NULL, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "f:d:c:t:b", lopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            if (trace_in_format_parse(optarg, &opts.format)) {
                fprintf(stderr, "socktap-trace: unknown format '%s'\n", optarg);
                return 2;
            }
            break;
        case 'd':
            if (strcmp(optarg, "read") == 0)
                dir = TRACE_EV_READ;
            else if (strcmp(optarg, "write") == 0)
                dir = TRACE_EV_WRITE;
            else
                return usage();
            break;
        case 'c':
            if (strcmp(optarg, "old") == 0)
                opts.conn_fields = TRACE_CONN_FIELDS_OLD;
            else if (strcmp(optarg, "new") == 0)
                opts.conn_fields = TRACE_CONN_FIELDS_NEW;
            else
                return usage();
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
        default:
            return usage();
        }
    }
    if (optind != argc - 1 || (!dump && !convert && dir < 0) || (convert && parse_to(to, &ecfg)))
        return usage();
    const char *path = argv[optind];
    struct trace_reader *r;
    int rc = trace_reader_open_path(path, &opts, &r);
    if (rc) {
        fprintf(stderr, "socktap-trace: %s: %s\n", path, strerror(-rc));
        return 1;
    }
    if (dump)
        trace_reader_set_echo(r, stdout);
    struct trace_event ev;
    if (convert) {
        rc = convert_all(r, &ecfg);
        goto done;
    }
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1) {
        if (!dump && (int)ev.dir == dir && ev.len &&
            fwrite(ev.iov[0].iov_base, 1, ev.len, stdout) != ev.len) {
            rc = -EIO;
            break;
        }
    }
done:;
    int status = 0;
    if (rc < 0) {
        fprintf(stderr, "socktap-trace: %s\n", rc == -EIO ? strerror(EIO) : trace_reader_error(r));
        status = 1;
    }
    if (trace_reader_report_unknown(r, "socktap-trace", allow_unknown, stderr))
        status = 1;
    trace_reader_free(r);
    if (fflush(stdout) != 0)
        status = 1;
    return status;
}

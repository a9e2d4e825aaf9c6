/* socktap-trace: print (and thereby validate) any trace, or extract one direction's bytes.
 * Thin: argument parsing over trace_reader.h. Exit 0 ok, 1 bad input, 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "trace/trace_reader.h"

static int usage(void)
{
    fputs("usage: socktap-trace dump [--format F] [--connection-fields old|new] FILE\n"
          "       socktap-trace cat --direction read|write [--format F] FILE\n"
          "FILE '-' reads stdin. Formats: auto v2-binary v2-text v3-binary\n"
          "v3-length-delimited v3-text v3-json\n",
          stderr);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *cmd = argv[1];
    bool dump = strcmp(cmd, "dump") == 0;
    if (!dump && strcmp(cmd, "cat") != 0)
        return usage();
    struct trace_reader_opts opts = {0};
    int dir = -1;
    static const struct option lopts[] = {{"format", required_argument, NULL, 'f'},
                                          {"direction", required_argument, NULL, 'd'},
                                          {"connection-fields", required_argument, NULL, 'c'},
                                          {NULL, 0, NULL, 0}};
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "f:d:c:", lopts, NULL)) != -1) {
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
        default:
            return usage();
        }
    }
    if (optind != argc - 1 || (!dump && dir < 0))
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
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1) {
        if (!dump && (int)ev.dir == dir && ev.len &&
            fwrite(ev.iov[0].iov_base, 1, ev.len, stdout) != ev.len) {
            rc = -EIO;
            break;
        }
    }
    int status = 0;
    if (rc < 0) {
        fprintf(stderr, "socktap-trace: %s\n", rc == -EIO ? strerror(EIO) : trace_reader_error(r));
        status = 1;
    }
    trace_reader_free(r);
    if (fflush(stdout) != 0)
        status = 1;
    return status;
}

/* capture2pcap: trace files (any format socktap or Envoy writes) -> one pcap or pcapng.
 * Argument parsing only; the work is in pcap_convert.c (merge, flows) and pcap_frame.c (packets).
 * Exit codes: 0 ok, 1 bad input (or output failure), 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fdlimit.h"
#include "pcap/pcap_convert.h"
#include "pcap/pcap_follow.h"
#include "trace/trace_out.h"

#define C2P_EXIT_OK    0
#define C2P_EXIT_INPUT 1
#define C2P_EXIT_USAGE 2

static void c2p_usage(FILE *f)
{
    fputs("usage: capture2pcap [options] INPUT... OUTPUT.pcap|OUTPUT.pcapng\n"
          "Converts socktap/Envoy trace files (v2alpha Trace, v3 TraceWrapper; binary,\n"
          "length-delimited, text, JSON) into one pcap or pcapng, merging inputs by timestamp.\n"
          "INPUT '-' reads stdin; OUTPUT '-' writes stdout (e.g. | tshark -r -).\n"
          "An OUTPUT ending in .pcapng is pcapng, anything else (and '-') classic pcap.\n"
          "pcapng adds one interface per capture (the trace path prefix, e.g. 'ingress' for\n"
          "ingress_42.pb), inbound/outbound flags (inbound = bytes the proxy read), a comment\n"
          "on each connection's first packet (id, trace file, addresses), nanosecond times.\n"
          "OUTPUT must not exist (--force replaces it) and is never one of the INPUTs; it\n"
          "appears, mode 0600, only when the run succeeds (nothing is left on failure).\n"
          "\n"
          "  --follow                 keep converting as traces grow and appear, until\n"
          "                           interrupted (SIGINT/SIGTERM): INPUTs are files,\n"
          "                           directories (every trace in them, now and later) or\n"
          "                           quoted globs ('/var/tmp/socktap/ingress_*'); each\n"
          "                           packet is flushed at once, e.g.\n"
          "                             capture2pcap --follow DIR - | wireshark -k -i -\n"
          "                           implies --tcp-handshake; binary traces stream as they\n"
          "                           grow, text/JSON ones when their writer closes them;\n"
          "                           a named OUTPUT is written in place as it goes\n"
          "  --max-open N             --follow: traces followed at once (default: the\n"
          "                           descriptor limit); later ones wait, nothing is lost\n"
          "  --force                  replace an existing OUTPUT (never an INPUT)\n"
          "  --pcapng                 write pcapng whatever OUTPUT's name\n"
          "  --pcap                   write classic pcap whatever OUTPUT's name\n"
          "  --keylog FILE            embed the NSS key log FILE (pcapng: Decryption Secrets\n"
          "                           Block before the first packet)\n"
          "  --no-secrets             leave TLS secrets out: without it, each INPUT's\n"
          "                           INPUT.keylog (a TLS wire capture's) is embedded in\n"
          "                           pcapng, so Wireshark decrypts with no key file\n"
          "                           (--keylog files are still embedded)\n"
          "  --format FMT             force the input format (auto, v2-binary, v2-text,\n"
          "                           v3-binary, v3-length-delimited, v3-text, v3-json)\n"
          "  --connection-fields F    v3 binary Connection numbering: auto, new (1/2), old (2/3)\n"
          "  --nanosecond             nanosecond pcap timestamps (default microsecond;\n"
          "                           pcapng always has nanoseconds)\n"
          "  --mss N                  at most N payload bytes per TCP segment\n"
          "  --tcp-handshake          synthesize SYN/SYN-ACK/ACK and FIN/ACK\n"
          "  --snaplen N              cut frames to N bytes (default 262144)\n"
          "  --no-ethernet            raw IP frames (LINKTYPE_RAW)\n"
          "  --allow-truncated        a crash-cut trace is a warning, exit 0\n"
          "  --allow-unknown          fields the schema does not know (skipped) are a\n"
          "                           warning, exit 0; without it they fail the run\n"
          "  -q, --quiet              no summary on stderr\n"
          "  -h, --help               this text\n"
          "  --version                print the version\n"
          "Exit: 0 ok, 1 bad input or output error, 2 usage. --follow: 0 when stopped\n"
          "(signal, or the output's reader went away) with every trace converted, 1 when\n"
          "a trace was skipped (its error names the file and offset) or the output failed.\n",
          f);
}

/* Parses a decimal in [MIN, MAX]. Returns 0 or -EINVAL. */
static int c2p_parse_u32(const char *s, unsigned long min, unsigned long max, uint32_t *out)
{
    char *end;
    unsigned long v;

    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -EINVAL;
    *out = (uint32_t)v;
    return 0;
}

enum {
    C2P_OPT_FORMAT = 256,
    C2P_OPT_CONN_FIELDS,
    C2P_OPT_NANO,
    C2P_OPT_MSS,
    C2P_OPT_HANDSHAKE,
    C2P_OPT_SNAPLEN,
    C2P_OPT_NO_ETH,
    C2P_OPT_ALLOW_TRUNC,
    C2P_OPT_ALLOW_UNKNOWN,
    C2P_OPT_VERSION,
    C2P_OPT_FORCE,
    C2P_OPT_PCAPNG,
    C2P_OPT_PCAP,
    C2P_OPT_NO_SECRETS,
    C2P_OPT_KEYLOG,
    C2P_OPT_FOLLOW,
    C2P_OPT_MAX_OPEN,
};

enum c2p_format { C2P_FMT_BY_NAME, C2P_FMT_PCAP, C2P_FMT_PCAPNG };

/* pcapng when asked, or by an OUTPUT name ending in ".pcapng"; classic pcap otherwise. */
static bool c2p_want_pcapng(enum c2p_format fmt, const char *opath)
{
    size_t n = strlen(opath);

    if (fmt != C2P_FMT_BY_NAME)
        return fmt == C2P_FMT_PCAPNG;
    return n > 7 && strcmp(opath + n - 7, ".pcapng") == 0;
}

/* --follow (pcap_follow.h): runs until interrupted; a named OUTPUT is written in place (it never
 * "ends", and a reader may watch it grow), so it keeps what was written when stopped. The exit
 * status is 0 when stopped by a signal or by the output's reader going away with every input
 * converted, 1 when some input was skipped (its error is on stderr) or the output failed. */
static int c2p_follow(const char *const *inputs, size_t nin, const char *opath, bool force,
                      bool quiet, const struct pcap_convert_opts *copts,
                      const struct pcap_writer_opts *wopts, uint32_t max_open)
{
    struct pcap_follow_opts fo = {.conv = *copts, .max_open = max_open};
    struct pcap_follow_stats st = {0};
    struct pcap_writer *w;
    struct trace_out out;
    char err[512];
    int ret;

    fo.conv.flow.handshake = true; /* finished connections end with their FINs */
    ret = trace_out_open_direct(&out, "capture2pcap", opath, inputs, nin, force, err, sizeof(err));
    if (ret) {
        fprintf(stderr, "%s\n", err);
        return C2P_EXIT_INPUT;
    }
    fo.out_fd = out.fd;
    fo.out_name = opath;
    ret = pcap_writer_open_fd(out.fd, opath, wopts, &w, err, sizeof(err));
    if (ret) {
        fprintf(stderr, "capture2pcap: error: %s\n", err);
        trace_out_abort(&out);
        return C2P_EXIT_INPUT;
    }
    ret = pcap_follow(inputs, nin, w, &fo, stderr, &st);
    uint64_t packets = pcap_writer_packets(w);
    int wret = pcap_writer_close(w);
    if (wret && ret >= 0) /* pcap_follow reported its own failures */
        fprintf(stderr, "capture2pcap: error: %s: write failed\n", opath);
    if (trace_out_commit(&out, "capture2pcap", opath, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        ret = ret ? ret : -EIO;
    }
    if (!quiet && (ret >= 0 || ret == -EPIPE))
        fprintf(stderr,
                "capture2pcap: followed %llu trace(s) (%llu finished, %llu waited for a "
                "descriptor, %llu skipped for errors): %llu connection(s), %llu event(s), %llu "
                "payload bytes -> %llu packet(s) (%s)%s\n",
                (unsigned long long)st.traces, (unsigned long long)st.finished,
                (unsigned long long)st.waited, (unsigned long long)st.errors,
                (unsigned long long)st.connections, (unsigned long long)st.events,
                (unsigned long long)st.bytes, (unsigned long long)packets,
                wopts->pcapng ? "pcapng" : "pcap", st.output_gone ? "; output closed" : "");
    if (ret == -EPIPE)
        return st.errors ? C2P_EXIT_INPUT : C2P_EXIT_OK; /* the viewer quit: a normal end */
    if (ret == -EINVAL)
        return C2P_EXIT_USAGE;
    return ret || (wret && !st.output_gone) ? C2P_EXIT_INPUT : C2P_EXIT_OK;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, C2P_OPT_FORMAT},
        {"connection-fields", required_argument, NULL, C2P_OPT_CONN_FIELDS},
        {"nanosecond", no_argument, NULL, C2P_OPT_NANO},
        {"mss", required_argument, NULL, C2P_OPT_MSS},
        {"tcp-handshake", no_argument, NULL, C2P_OPT_HANDSHAKE},
        {"snaplen", required_argument, NULL, C2P_OPT_SNAPLEN},
        {"no-ethernet", no_argument, NULL, C2P_OPT_NO_ETH},
        {"allow-truncated", no_argument, NULL, C2P_OPT_ALLOW_TRUNC},
        {"allow-unknown", no_argument, NULL, C2P_OPT_ALLOW_UNKNOWN},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, C2P_OPT_VERSION},
        {"force", no_argument, NULL, C2P_OPT_FORCE},
        {"pcapng", no_argument, NULL, C2P_OPT_PCAPNG},
        {"pcap", no_argument, NULL, C2P_OPT_PCAP},
        {"no-secrets", no_argument, NULL, C2P_OPT_NO_SECRETS},
        {"keylog", required_argument, NULL, C2P_OPT_KEYLOG},
        {"follow", no_argument, NULL, C2P_OPT_FOLLOW},
        {"max-open", required_argument, NULL, C2P_OPT_MAX_OPEN},
        {NULL, 0, NULL, 0},
    };
    struct pcap_convert_opts copts = {0};
    struct pcap_writer_opts wopts = {.ethernet = true};
    struct pcap_convert_stats st;
    struct pcap_writer *w;
    struct trace_out out;
    enum c2p_format fmt = C2P_FMT_BY_NAME;
    bool quiet = false, force = false, follow = false;
    uint32_t max_open = 0;
    char err[512];
    uint32_t v;
    int c, ret, nin, stdin_uses = 0;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        switch (c) {
        case C2P_OPT_FORMAT:
            if (trace_in_format_parse(optarg, &copts.format) != 0) {
                fprintf(stderr, "capture2pcap: --format: unknown format '%s'\n", optarg);
                return C2P_EXIT_USAGE;
            }
            break;
        case C2P_OPT_CONN_FIELDS:
            if (strcmp(optarg, "auto") == 0)
                copts.conn_fields = TRACE_CONN_FIELDS_AUTO;
            else if (strcmp(optarg, "new") == 0)
                copts.conn_fields = TRACE_CONN_FIELDS_NEW;
            else if (strcmp(optarg, "old") == 0)
                copts.conn_fields = TRACE_CONN_FIELDS_OLD;
            else {
                fprintf(stderr,
                        "capture2pcap: --connection-fields: expected auto, new or old, "
                        "got '%s'\n",
                        optarg);
                return C2P_EXIT_USAGE;
            }
            break;
        case C2P_OPT_NANO:
            wopts.nanosecond = true;
            break;
        case C2P_OPT_MSS:
            if (c2p_parse_u32(optarg, 1, 65535, &v) != 0) {
                fprintf(stderr, "capture2pcap: --mss: expected 1..65535, got '%s'\n", optarg);
                return C2P_EXIT_USAGE;
            }
            copts.flow.mss = v;
            break;
        case C2P_OPT_HANDSHAKE:
            copts.flow.handshake = true;
            break;
        case C2P_OPT_SNAPLEN:
            if (c2p_parse_u32(optarg, 1, 262144, &v) != 0) {
                fprintf(stderr, "capture2pcap: --snaplen: expected 1..262144, got '%s'\n", optarg);
                return C2P_EXIT_USAGE;
            }
            wopts.snaplen = v;
            break;
        case C2P_OPT_NO_ETH:
            wopts.ethernet = false;
            break;
        case C2P_OPT_ALLOW_TRUNC:
            copts.allow_truncated = true;
            break;
        case C2P_OPT_FORCE:
            force = true;
            break;
        case C2P_OPT_PCAPNG:
        case C2P_OPT_PCAP:
            if (fmt != C2P_FMT_BY_NAME &&
                fmt != (c == C2P_OPT_PCAP ? C2P_FMT_PCAP : C2P_FMT_PCAPNG)) {
                fprintf(stderr, "capture2pcap: --pcap and --pcapng exclude each other\n");
                return C2P_EXIT_USAGE;
            }
            fmt = c == C2P_OPT_PCAP ? C2P_FMT_PCAP : C2P_FMT_PCAPNG;
            break;
        case C2P_OPT_ALLOW_UNKNOWN:
            copts.allow_unknown = true;
            break;
        case C2P_OPT_NO_SECRETS:
            copts.no_secrets = true;
            break;
        case C2P_OPT_KEYLOG:
            copts.keylog = optarg;
            break;
        case C2P_OPT_FOLLOW:
            follow = true;
            break;
        case C2P_OPT_MAX_OPEN:
            if (c2p_parse_u32(optarg, 1, 1u << 20, &max_open) != 0) {
                fprintf(stderr, "capture2pcap: --max-open: expected 1..1048576, got '%s'\n",
                        optarg);
                return C2P_EXIT_USAGE;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            c2p_usage(stdout);
            return C2P_EXIT_OK;
        case C2P_OPT_VERSION:
            printf("capture2pcap %s\n", SOCKTAP_VERSION);
            return C2P_EXIT_OK;
        default:
            /* A long option's optopt is its value (>= 256 here), not a printable letter. */
            if (optopt > 0 && optopt < 256)
                fprintf(stderr, "capture2pcap: option -%c: unknown or missing its argument\n",
                        optopt);
            else
                fprintf(stderr, "capture2pcap: %s: unknown option or missing its argument\n",
                        argv[optind - 1]);
            c2p_usage(stderr);
            return C2P_EXIT_USAGE;
        }
    }
    nin = argc - optind - 1;
    if (nin < 1) {
        fprintf(stderr, "capture2pcap: need at least one INPUT and an OUTPUT\n");
        c2p_usage(stderr);
        return C2P_EXIT_USAGE;
    }
    for (int i = optind; i < argc - 1; i++)
        stdin_uses += strcmp(argv[i], "-") == 0;
    if (stdin_uses > 1) {
        fprintf(stderr, "capture2pcap: '-' (stdin) may be given only once as INPUT\n");
        return C2P_EXIT_USAGE;
    }

    /* one descriptor per trace that overlaps others in time (see pcap_convert.c): take what the
     * operator's hard limit allows */
    (void)fd_limit_raise(NULL, NULL);
    const char *opath = argv[argc - 1];
    wopts.pcapng = c2p_want_pcapng(fmt, opath);
    if (follow)
        return c2p_follow((const char *const *)&argv[optind], (size_t)nin, opath, force, quiet,
                          &copts, &wopts, max_open);
    if (max_open) {
        fprintf(stderr, "capture2pcap: --max-open goes with --follow\n");
        return C2P_EXIT_USAGE;
    }
    ret = trace_out_open(&out, "capture2pcap", opath, (const char *const *)&argv[optind],
                         (size_t)nin, force, err, sizeof(err));
    if (ret) {
        fprintf(stderr, "%s\n", err);
        return C2P_EXIT_INPUT;
    }
    ret = pcap_writer_open_fd(out.fd, opath, &wopts, &w, err, sizeof(err));
    if (ret) {
        fprintf(stderr, "capture2pcap: error: %s\n", err);
        trace_out_abort(&out);
        return C2P_EXIT_INPUT;
    }
    ret = pcap_convert((const char *const *)&argv[optind], (size_t)nin, w, &copts, stderr, &st);
    if (ret < 0) {
        fprintf(stderr, "capture2pcap: error: %s: %s\n", opath, strerror(-ret));
        pcap_writer_close(w);
        goto err_abort;
    }
    uint64_t packets = pcap_writer_packets(w);
    if (pcap_writer_close(w) != 0) {
        fprintf(stderr, "capture2pcap: error: %s: write failed\n", opath);
        goto err_abort;
    }
    /* A run with bad inputs leaves no output: a pcap silently missing connections would pass
     * for a whole capture. --allow-truncated makes a crash-cut input acceptable (ret 0). */
    if (ret != 0) {
        if (strcmp(opath, "-") != 0)
            fprintf(stderr, "capture2pcap: %s not written (input errors above)\n", opath);
        goto err_abort;
    }
    if (trace_out_commit(&out, "capture2pcap", opath, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return C2P_EXIT_INPUT;
    }
    if (!quiet)
        fprintf(stderr,
                "capture2pcap: %llu connection(s), %llu event(s), %llu payload bytes -> %llu "
                "packet(s) (%s)\n",
                (unsigned long long)st.connections, (unsigned long long)st.events,
                (unsigned long long)st.bytes, (unsigned long long)packets,
                wopts.pcapng ? "pcapng" : "pcap");
    return C2P_EXIT_OK;

err_abort:
    trace_out_abort(&out);
    return C2P_EXIT_INPUT;
}

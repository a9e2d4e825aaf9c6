/* socktap: argument parsing and wiring only. Flags are Envoy's, so its users' habits work. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "core/fdlimit.h"
#include "core/log.h"
#include "net/worker.h"
#include "transport/ts_registry.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: socktap -c FILE [--concurrency N] [-l LEVEL] [--log-path FILE]\n"
        "               [--log-format FMT] [--log-format-escaped]\n"
        "               [--mode serve|validate] [--drain-time-s N] [--version] [--help]\n"
        "\n"
        "  -c, --config-path FILE   Envoy-style YAML config (static_resources, admin)\n"
        "      --concurrency N      worker threads (default: number of cores)\n"
        "  -l, --log-level LEVEL    trace|debug|info|warning|error|critical|off (default info)\n"
        "      --log-path FILE      log to FILE (appended; re-opened on SIGHUP) instead of "
        "stderr\n"
        "      --log-format FMT     log line layout, Envoy's flags (%%Y-%%m-%%d %%T.%%e, %%l, %%t, "
        "%%v, %%j...)\n"
        "      --log-format-escaped escape newlines and control characters in messages\n"
        "      --mode MODE          serve (default) or validate: check the config and exit\n"
        "      --drain-time-s N     on SIGTERM/SIGINT, let connections finish for N s "
        "(default 5)\n"
        "      --version            print the version\n");
}

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

/* A proxy holds two sockets and up to two trace files per connection: the usual soft limit of
 * 1024 descriptors would cap it near 250 connections. The hard limit is the operator's. */
static void raise_fd_limit(void)
{
    uint64_t was, now;
    if (fd_limit_raise(&was, &now) == 0 && now != was)
        LOGD(LOG_NO_CONN, "descriptor limit raised from %llu to %llu", (unsigned long long)was,
             (unsigned long long)now);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"concurrency", required_argument, NULL, 'C'},
        {"log-level", required_argument, NULL, 'l'},
        {"log-path", required_argument, NULL, 'L'},
        {"log-format", required_argument, NULL, 'F'},
        {"log-format-escaped", no_argument, NULL, 'E'},
        {"mode", required_argument, NULL, 'm'},
        {"drain-time-s", required_argument, NULL, 'd'},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *log_path = NULL;
    unsigned long concurrency = 0, drain = 5;
    bool validate = false;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:l:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            if (parse_uint(optarg, 1024, &concurrency) < 0 || concurrency == 0) {
                fprintf(stderr, "socktap: --concurrency: expected 1..1024, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'l': {
            enum log_level lvl;
            if (log_level_parse(optarg, &lvl) < 0) {
                fprintf(stderr,
                        "socktap: --log-level: expected trace, debug, info, warning, error, "
                        "critical or off, got \"%s\"\n",
                        optarg);
                return 2;
            }
            log_set_level(lvl);
            break;
        }
        case 'L':
            log_path = optarg;
            break;
        case 'F': {
            char why[200];
            if (log_set_format(optarg, why, sizeof(why)) < 0) {
                fprintf(stderr, "socktap: --log-format: %s\n", why);
                return 2;
            }
            break;
        }
        case 'E':
            log_set_format_escaped(true);
            break;
        case 'm':
            if (strcmp(optarg, "validate") == 0) {
                validate = true;
            } else if (strcmp(optarg, "serve") != 0) {
                fprintf(stderr, "socktap: --mode: expected serve or validate, got \"%s\"\n",
                        optarg);
                return 2;
            }
            break;
        case 'd':
            if (parse_uint(optarg, 86400, &drain) < 0) {
                fprintf(stderr, "socktap: --drain-time-s: expected 0..86400, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'v':
            printf("socktap version %s\n", SOCKTAP_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path || optind != argc) {
        fprintf(stderr, "socktap: %s\n", !config_path ? "missing -c FILE" : "unexpected argument");
        usage(stderr);
        return 2;
    }
    /* until the server's handlers are in place, SIGHUP (logrotate, a closing shell) and SIGUSR1
     * must not kill a starting daemon (their default action) */
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    struct cfg_err err = {0};
    struct socktap_config *cfg = NULL;
    /* main owns the registry: started before any config names a kind, stopped below */
    ts_registry_init();
    if (config_load(config_path, &cfg, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    if (cfg->log_format) {
        /* Envoy's rule and words (source/server/utils.cc, assertExclusiveLogFormatMethod) */
        char why[200];
        if (log_format_set()) {
            fprintf(stderr,
                    "%s: Only one of ApplicationLogConfig.log_format or CLI option "
                    "--log-format can be specified.\n",
                    config_path);
            config_free(cfg);
            return 1;
        }
        (void)log_set_format(cfg->log_format, why, sizeof(why)); /* checked at load */
    }
    if (validate) {
        config_warn_ignored(cfg);
        printf("configuration '%s' OK\n", config_path);
        config_free(cfg);
        return 0;
    }
    /* after the config: its errors are for the terminal that started us */
    if (log_path) {
        int lrc = log_open(log_path);
        if (lrc < 0) {
            fprintf(stderr, "socktap: --log-path: cannot open \"%s\": %s\n", log_path,
                    strerror(-lrc));
            config_free(cfg);
            return 1;
        }
    }
    config_warn_ignored(cfg);
    raise_fd_limit();
    if (!concurrency) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        concurrency = n > 0 ? (unsigned long)n : 1;
    }
    struct server srv;
    /* the server owns CFG from here: a reload replaces it */
    int rc = server_init(&srv, cfg, (int)concurrency, (unsigned)drain);
    if (rc == 0)
        rc = server_run(&srv);
    else if (rc != -EADDRINUSE && rc != -EACCES && rc != -EADDRNOTAVAIL)
        LOGE(LOG_NO_CONN, "startup failed: %s", strerror(-rc));
    /* every socket is gone once server_run returned (workers stop at zero sessions), and the
     * kinds' helper threads (the capture writer) count into stats that server_free frees:
     * write out what they hold in between */
    ts_registry_shutdown();
    server_free(&srv);
    return rc == 0 ? 0 : 1;
}

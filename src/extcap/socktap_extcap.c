/* socktap-extcap: a Wireshark extcap (doc/extcap.adoc and the developer guide's "Adding Capture
 * Interfaces And Log Sources Using Extcap" in Wireshark's tree) that shows a running socktap's
 * capture sockets as capture interfaces and streams the chosen one from the admin's
 * GET /capture/live.pcapng (docs/capture.md, "Live capture"). Socktap extension.
 *
 * What Wireshark/tshark 4.0 calls, as observed with a logging stub in the extcap directory:
 *   --extcap-interfaces --extcap-version=4.0       "extcap {version=..}" and one "interface"
 *                                                  line per line of GET /capture/live:
 *                                                  socktap.listener.NAME, socktap.cluster.NAME,
 *                                                  socktap.listener-wire.NAME, ...-wire.NAME
 *   --extcap-config --extcap-interface IF          one option: --admin (default: the address
 *                                                  resolved below), one: --max-bytes
 *   --extcap-dlts --extcap-interface IF            Ethernet (what the live stream carries)
 *   --extcap-capture-filter F --extcap-interface IF  filter check: empty stdout = valid
 *   --capture --extcap-interface IF --fifo PATH --admin A --max-bytes N
 *                                                  stream pcapng into PATH until stopped
 * tshark stops a capture by closing the fifo's read end (dumpcap exits) and then sending SIGTERM
 * to the extcap; both end the capture with exit 0, whichever comes first. Waits are ppoll()s
 * with SIGTERM/SIGINT/SIGHUP unblocked only inside them, and a fifo whose reader left reports
 * POLLERR there, so neither a stop signal nor a gone reader can be missed while the stream is
 * idle (the first version retried read() on EINTR and hung until the next packet).
 *
 * The admin address: Wireshark lists interfaces with no argument of ours, so it is resolved as
 * --admin, else $SOCKTAP_ADMIN, else `admin = HOST:PORT` in
 * ${XDG_CONFIG_HOME:-$HOME/.config}/socktap/extcap.conf (for a Wireshark started from a desktop
 * menu, where an environment variable is awkward), else 127.0.0.1:9901. --extcap-config offers
 * that address as the default of its --admin option, which tshark passes back at capture.
 *
 * Exit: 0 ok (a capture stopped by Wireshark counts as ok; no socktap running lists no
 * interfaces, said on stderr only to a terminal), 1 the admin is unreachable, answered an error
 * (e.g. 404 for an interface socktap does not have, its text on stderr) or ended the stream, 2
 * usage (malformed interface name, bad option, capture filter given, bad extcap.conf line).
 *
 * Plain sockets and a minimal HTTP/1.1 client (no libcurl, no Python): one small binary that
 * links nothing of socktap's and runs wherever Wireshark does. Rejected: a shell or Python
 * script around curl, which cannot tell Wireshark's stop from the admin's errors and adds a
 * runtime dependency to the machine running Wireshark.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXTCAP_DEFAULT_ADMIN "127.0.0.1:9901"
#define EXTCAP_TIMEOUT_MS    5000      /* connect; and a whole listing exchange */
#define EXTCAP_MAX_LIST      (1 << 20) /* GET /capture/live body */
#define EXTCAP_MAX_LINE      16384

enum { EXTCAP_OK = 0, EXTCAP_FAIL = 1, EXTCAP_USAGE = 2 };

static volatile sig_atomic_t stopping;
static sigset_t wait_mask; /* the signal mask inside ppoll: the stop signals deliverable */

static void on_stop_cb(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Blocks the stop signals outside extcap_wait() (see the file comment). */
static void stop_signals_init(void)
{
    static const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
    sigset_t block;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        sigaddset(&block, sigs[i]);
    sigprocmask(SIG_BLOCK, &block, &wait_mask);
    struct sigaction sa = {.sa_handler = on_stop_cb};
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
        sigdelset(&wait_mask, sigs[i]);
        sigaction(sigs[i], &sa, NULL);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until FD is ready for EVENTS (FD < 0: just sleeps until DEADLINE). WATCH_FD >= 0 is the
 * fifo: its reader leaving ends the wait. DEADLINE is a now_ms() value, or -1 for none.
 * Returns 0 ready, -ECANCELED stopped (signal or reader gone), -ETIMEDOUT. */
static int extcap_wait(int fd, short events, int watch_fd, int64_t deadline)
{
    for (;;) {
        if (stopping)
            return -ECANCELED;
        struct pollfd p[2] = {{.fd = fd, .events = events}, {.fd = watch_fd, .events = 0}};
        struct timespec ts, *tp = NULL;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0)
                return -ETIMEDOUT;
            ts = (struct timespec){.tv_sec = left / 1000, .tv_nsec = (left % 1000) * 1000000};
            tp = &ts;
        }
        int n = ppoll(p, 2, tp, &wait_mask);
        if (n < 0 && errno != EINTR)
            return -errno;
        if (n <= 0)
            continue; /* a signal (checked above) or the deadline (checked above) */
        if (p[1].revents & (POLLERR | POLLHUP | POLLNVAL))
            return -ECANCELED;
        if (p[0].revents)
            return 0;
    }
}

/* Where a response body goes: a non-blocking fd (the fifo), or memory up to MAX bytes. */
struct extcap_sink {
    int fd;
    bool fifo; /* FD is Wireshark's fifo: EPIPE there is a stop, not an error */
    char *mem; /* owned; freed by the caller */
    size_t len, max;
};

static int sink_put(struct extcap_sink *s, const char *buf, size_t len)
{
    if (s->fd < 0) {
        if (s->len + len > s->max)
            return -EFBIG;
        char *m = realloc(s->mem, s->len + len + 1);
        if (!m)
            return -ENOMEM;
        memcpy(m + s->len, buf, len);
        s->mem = m;
        s->len += len;
        m[s->len] = '\0';
        return 0;
    }
    while (len) {
        ssize_t w = write(s->fd, buf, len);
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EPIPE && s->fifo)
            return -ECANCELED; /* the reader (dumpcap) closed the fifo: Wireshark stopped */
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = extcap_wait(s->fd, POLLOUT, -1, -1);
        if (rc)
            return rc;
    }
    return 0;
}

/* A response being read: the socket, bytes read past what was consumed. */
struct extcap_http {
    int fd;
    int watch_fd;     /* the fifo while capturing, else -1 */
    int64_t deadline; /* -1 while streaming */
    char buf[65536];
    size_t start, end;
};

/* Makes at least one more byte available. Returns 1, 0 at EOF, or -errno (-ECANCELED). */
static int http_fill(struct extcap_http *h)
{
    if (h->start == h->end)
        h->start = h->end = 0;
    if (h->end == sizeof(h->buf)) {
        memmove(h->buf, h->buf + h->start, h->end - h->start);
        h->end -= h->start;
        h->start = 0;
    }
    for (;;) {
        ssize_t r = read(h->fd, h->buf + h->end, sizeof(h->buf) - h->end);
        if (r > 0) {
            h->end += (size_t)r;
            return 1;
        }
        if (r == 0)
            return 0;
        if (errno != EAGAIN && errno != EINTR)
            return -errno;
        int rc = extcap_wait(h->fd, POLLIN, h->watch_fd, h->deadline);
        if (rc)
            return rc;
    }
}

/* Reads one line (without its CRLF) into LINE. Returns 1, 0 at EOF, -EMSGSIZE or -errno. */
static int http_line(struct extcap_http *h, char *line, size_t size)
{
    size_t n = 0;
    for (;;) {
        while (h->start < h->end) {
            char c = h->buf[h->start++];
            if (c == '\n') {
                if (n && line[n - 1] == '\r')
                    n--;
                line[n] = '\0';
                return 1;
            }
            if (n + 1 >= size)
                return -EMSGSIZE;
            line[n++] = c;
        }
        int rc = http_fill(h);
        if (rc <= 0)
            return rc;
    }
}

/* Copies LEN body bytes (LEN < 0: until EOF) to S. Returns 1, 0 at an early EOF, or -errno. */
static int http_copy(struct extcap_http *h, long long len, struct extcap_sink *s)
{
    while (len != 0) {
        if (h->start == h->end) {
            int rc = http_fill(h);
            if (rc <= 0)
                return len < 0 && rc == 0 ? 1 : rc;
        }
        size_t n = h->end - h->start;
        if (len > 0 && (long long)n > len)
            n = (size_t)len;
        int rc = sink_put(s, h->buf + h->start, n);
        if (rc)
            return rc;
        h->start += n;
        if (len > 0)
            len -= (long long)n;
    }
    return 1;
}

/* Connects to ADMIN ("HOST:PORT", "[V6]:PORT"; a name is resolved). Returns a non-blocking
 * socket the caller closes, or -1 with the reason on stderr (none for a refused connection when
 * QUIET_REFUSED). */
static int extcap_connect(const char *admin, bool quiet_refused)
{
    char host[256];
    const char *colon = strrchr(admin, ':');
    size_t hl = colon ? (size_t)(colon - admin) : 0;
    if (!colon || !hl || hl >= sizeof(host) || !colon[1]) {
        fprintf(stderr, "socktap-extcap: bad admin address '%s' (want HOST:PORT)\n", admin);
        return -1;
    }
    memcpy(host, admin, hl);
    host[hl] = '\0';
    if (host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    int gai = getaddrinfo(host, colon + 1, &hints, &ai);
    if (gai) {
        fprintf(stderr, "socktap-extcap: admin address '%s': %s\n", admin, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    int64_t deadline = now_ms() + EXTCAP_TIMEOUT_MS;
    for (struct addrinfo *a = ai; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen) ? -errno : 0;
        if (rc == -EINPROGRESS) {
            rc = extcap_wait(fd, POLLOUT, -1, deadline);
            socklen_t el = sizeof(err);
            if (!rc && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err)
                rc = -err;
        }
        if (rc) {
            err = -rc;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(ai);
    if (fd < 0 && err != ECANCELED && !(err == ECONNREFUSED && quiet_refused))
        fprintf(stderr, "socktap-extcap: cannot reach socktap's admin at %s: %s\n", admin,
                strerror(err));
    return fd;
}

/* GET PATH from ADMIN, the body (de-chunked) into OUT. WATCH_FD: see extcap_wait;
 * QUIET_REFUSED: see extcap_connect. Returns 0 (the whole body, or a stream that ended),
 * -ECANCELED when stopped, or -EIO with the reason on stderr (an error answer's text included). */
static int extcap_get(const char *admin, const char *path, int watch_fd, int64_t deadline,
                      bool quiet_refused, struct extcap_sink *out)
{
    struct extcap_http *h = calloc(1, sizeof(*h));
    if (!h)
        return -ENOMEM;
    h->watch_fd = watch_fd;
    h->deadline = deadline;
    h->fd = extcap_connect(admin, quiet_refused);
    int ret = -EIO, rc = 0;
    if (h->fd < 0)
        goto out_free;
    char line[EXTCAP_MAX_LINE];
    int n = snprintf(line, sizeof(line), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, admin);
    struct extcap_sink req = {.fd = h->fd};
    int status = 0;
    bool chunked = false;
    long long clen = -1;
    if (n < 0 || (size_t)n >= sizeof(line))
        goto out_close;
    rc = sink_put(&req, line, (size_t)n);
    if (!rc)
        rc = http_line(h, line, sizeof(line));
    if (rc == 1 && sscanf(line, "HTTP/1.%*d %d", &status) != 1)
        rc = -EPROTO;
    while (rc == 1 && (rc = http_line(h, line, sizeof(line))) == 1 && line[0]) {
        if (!strncasecmp(line, "Transfer-Encoding:", 18) && strcasestr(line + 18, "chunked"))
            chunked = true;
        if (!strncasecmp(line, "Content-Length:", 15))
            clen = strtoll(line + 15, NULL, 10);
    }
    if (rc != 1) {
        if (rc != -ECANCELED)
            fprintf(stderr, "socktap-extcap: GET %s from %s: no HTTP answer (%s)\n", path, admin,
                    rc ? strerror(-rc) : "connection closed");
        goto out_close;
    }
    struct extcap_sink errtext = {.fd = -1, .max = 4096};
    struct extcap_sink *body = status == 200 ? out : &errtext;
    if (!chunked) {
        rc = http_copy(h, clen, body);
    } else {
        for (;;) {
            rc = http_line(h, line, sizeof(line));
            if (rc != 1)
                break;
            char *end;
            long long size = strtoll(line, &end, 16);
            if (end == line || size < 0 || (*end && *end != ';')) {
                rc = -EPROTO;
                break;
            }
            if (size == 0)
                break;
            rc = http_copy(h, size, body);
            if (rc == 1)
                rc = http_line(h, line, sizeof(line));
            if (rc != 1)
                break;
        }
    }
    if (status != 200) {
        fprintf(stderr, "socktap-extcap: GET %s from %s answered %d: %s%s", path, admin, status,
                errtext.mem ? errtext.mem : "",
                errtext.len && errtext.mem[errtext.len - 1] == '\n' ? "" : "\n");
        free(errtext.mem);
        goto out_close;
    }
    if (rc == -ECANCELED) {
        ret = rc;
    } else if (rc < 0 && rc != -EFBIG) {
        fprintf(stderr, "socktap-extcap: GET %s from %s: %s\n", path, admin, strerror(-rc));
    } else if (rc == -EFBIG) {
        fprintf(stderr, "socktap-extcap: GET %s from %s: answer over %zu bytes\n", path, admin,
                out->max);
    } else {
        ret = 0; /* the end of the body; for a stream, socktap ended it */
    }
out_close:
    close(h->fd);
out_free:
    free(h);
    return ret;
}

/* Appends S percent-encoded (RFC 3986 unreserved kept) to OUT. */
static void url_encode(const char *s, char *out, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._~", c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
}

/* A name that can stand inside an extcap sentence's {...}. */
static bool extcap_name_ok(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '{' || *s == '}' || *s == 0x7f)
            return false;
    return true;
}

/* Lists the interfaces: one per line "KIND NAME[ wire]" of /capture/live. No socktap running
 * (connection refused) is an empty list, said on stderr only to a terminal: Wireshark and
 * tshark list every extcap's interfaces at each start and each `tshark -i eth0`, and would show
 * the note every time. */
static int extcap_interfaces(const char *admin)
{
    printf("extcap {version=%s}{display=socktap live capture}\n", SOCKTAP_VERSION);
    fflush(stdout);
    struct extcap_sink list = {.fd = -1, .max = EXTCAP_MAX_LIST};
    if (extcap_get(admin, "/capture/live", -1, now_ms() + EXTCAP_TIMEOUT_MS, !isatty(STDERR_FILENO),
                   &list) == 0) {
        char *save = NULL;
        for (char *line = strtok_r(list.mem, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
            char kind[16], name[512], wire[8] = "";
            if (sscanf(line, "%15s %511s %7s", kind, name, wire) < 2)
                continue;
            if (!extcap_name_ok(name)) {
                fprintf(stderr, "socktap-extcap: %s '%s': name not usable in Wireshark\n", kind,
                        name);
                continue;
            }
            bool w = !strcmp(wire, "wire");
            printf("interface {value=socktap.%s%s.%s}{display=socktap %s %s%s}\n", kind,
                   w ? "-wire" : "", name, kind, name, w ? " (TLS wire)" : "");
        }
    }
    free(list.mem);
    return EXTCAP_OK; /* no socktap is an empty list, not an error for Wireshark */
}

/* Splits IFACE ("socktap.KIND[-wire].NAME") into KIND and NAME. Returns false (with a message)
 * for anything else. */
static bool extcap_iface(const char *iface, char *kind, size_t ksize, const char **name, bool *wire)
{
    const char *dot = iface && !strncmp(iface, "socktap.", 8) ? strchr(iface + 8, '.') : NULL;
    size_t kl = dot ? (size_t)(dot - iface - 8) : 0;
    if (dot && kl < ksize && dot[1]) {
        memcpy(kind, iface + 8, kl);
        kind[kl] = '\0';
        *wire = kl > 5 && !strcmp(kind + kl - 5, "-wire");
        if (*wire)
            kind[kl - 5] = '\0';
        *name = dot + 1;
        if (!strcmp(kind, "listener") || !strcmp(kind, "cluster"))
            return true;
    }
    fprintf(stderr,
            "socktap-extcap: unknown interface '%s' (want socktap.listener.NAME, "
            "socktap.cluster.NAME or their -wire variants; see --extcap-interfaces)\n",
            iface ? iface : "");
    return false;
}

/* Opens FIFO for writing once its reader is there. Returns the fd, -ECANCELED, or -errno. */
static int fifo_open(const char *fifo)
{
    for (;;) {
        int fd = open(fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno != ENXIO && errno != EINTR)
            return -errno;
        int rc = extcap_wait(-1, 0, -1, now_ms() + 10); /* no reader yet */
        if (rc != -ETIMEDOUT)
            return rc;
    }
}

/* Streams interface IFACE into FIFO until stopped. */
static int extcap_capture(const char *admin, const char *iface, const char *fifo,
                          const char *max_bytes)
{
    char kind[32], enc[1600], path[2048];
    const char *name;
    bool wire;
    if (!extcap_iface(iface, kind, sizeof(kind), &name, &wire))
        return EXTCAP_USAGE;
    url_encode(name, enc, sizeof(enc));
    int n =
        snprintf(path, sizeof(path), "/capture/live.pcapng?%s=%s%s%s%s", kind, enc,
                 wire ? "&wire=1" : "", max_bytes ? "&max_bytes=" : "", max_bytes ? max_bytes : "");
    if (n < 0 || (size_t)n >= sizeof(path)) {
        fprintf(stderr, "socktap-extcap: interface name too long\n");
        return EXTCAP_USAGE;
    }
    /* The fifo first: its reader (dumpcap) waits for it, and must see an end if the admin
     * then fails. */
    int fd = fifo_open(fifo);
    if (fd == -ECANCELED)
        return EXTCAP_OK;
    if (fd < 0) {
        fprintf(stderr, "socktap-extcap: cannot open %s: %s\n", fifo, strerror(-fd));
        return EXTCAP_FAIL;
    }
    struct extcap_sink out = {.fd = fd, .fifo = true};
    int rc = extcap_get(admin, path, fd, -1, false, &out);
    close(fd);
    if (rc == -ECANCELED)
        return EXTCAP_OK;
    if (rc == 0)
        fprintf(stderr, "socktap-extcap: socktap at %s ended the stream of %s\n", admin, iface);
    return EXTCAP_FAIL;
}

/* Reads `admin = HOST:PORT` from ~/.config/socktap/extcap.conf into OUT. Returns 0 (OUT
 * unchanged when there is no such file or key), or -EINVAL with FILE:LINE on stderr. */
static int extcap_conf(char *out, size_t size)
{
    char path[4096];
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(path, sizeof(path), "%s/socktap/extcap.conf", xdg);
    else if (home && *home)
        snprintf(path, sizeof(path), "%s/.config/socktap/extcap.conf", home);
    else
        return 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    char line[1024];
    int ret = 0;
    for (unsigned lineno = 1; fgets(line, sizeof(line), f); lineno++) {
        char key[32], val[512], extra;
        int got = sscanf(line, " %31[^= \t\n] = %511s %c", key, val, &extra);
        if (got <= 0 || key[0] == '#')
            continue;
        if (got != 2 || strcmp(key, "admin")) {
            fprintf(stderr, "%s:%u: want 'admin = HOST:PORT' (or a # comment)\n", path, lineno);
            ret = -EINVAL;
            break;
        }
        snprintf(out, size, "%s", val);
    }
    fclose(f);
    return ret;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: socktap-extcap --extcap-interfaces\n"
               "       socktap-extcap --extcap-interface IF --extcap-dlts | --extcap-config\n"
               "       socktap-extcap --capture --extcap-interface IF --fifo PATH\n"
               "                      [--admin HOST:PORT] [--max-bytes N]\n"
               "A Wireshark extcap: install it in Wireshark's extcap directory. The admin is\n"
               "--admin, else $SOCKTAP_ADMIN, else 'admin = HOST:PORT' in\n"
               "~/.config/socktap/extcap.conf, else " EXTCAP_DEFAULT_ADMIN ".\n");
}

int main(int argc, char **argv)
{
    enum {
        O_IFACES = 256,
        O_DLTS,
        O_CONFIG,
        O_CAPTURE,
        O_IFACE,
        O_FIFO,
        O_FILTER,
        O_ADMIN,
        O_MAX_BYTES,
        O_IGNORE,
        O_VERSION,
        O_HELP
    };
    static const struct option opts[] = {
        {"extcap-interfaces", no_argument, NULL, O_IFACES},
        {"extcap-dlts", no_argument, NULL, O_DLTS},
        {"extcap-config", no_argument, NULL, O_CONFIG},
        {"capture", no_argument, NULL, O_CAPTURE},
        {"extcap-interface", required_argument, NULL, O_IFACE},
        {"fifo", required_argument, NULL, O_FIFO},
        {"extcap-capture-filter", required_argument, NULL, O_FILTER},
        {"admin", required_argument, NULL, O_ADMIN},
        {"max-bytes", required_argument, NULL, O_MAX_BYTES},
        {"extcap-version", optional_argument, NULL, O_IGNORE},
        {"extcap-control-in", required_argument, NULL, O_IGNORE},
        {"extcap-control-out", required_argument, NULL, O_IGNORE},
        {"extcap-reload-option", required_argument, NULL, O_IGNORE},
        {"debug", no_argument, NULL, O_IGNORE},
        {"debug-file", required_argument, NULL, O_IGNORE},
        {"version", no_argument, NULL, O_VERSION},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    signal(SIGPIPE, SIG_IGN); /* a peer that left is a write error (EPIPE), not a death */
    int mode = 0, c;
    const char *iface = NULL, *fifo = NULL, *filter = NULL, *admin = NULL, *max_bytes = NULL;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_IFACES:
        case O_DLTS:
        case O_CONFIG:
        case O_CAPTURE:
            mode = c;
            break;
        case O_IFACE:
            iface = optarg;
            break;
        case O_FIFO:
            fifo = optarg;
            break;
        case O_FILTER:
            filter = optarg;
            break;
        case O_ADMIN:
            admin = optarg;
            break;
        case O_MAX_BYTES:
            max_bytes = optarg;
            break;
        case O_IGNORE:
            break;
        case O_VERSION:
            printf("socktap-extcap %s\n", SOCKTAP_VERSION);
            return EXTCAP_OK;
        case O_HELP:
            usage(stdout);
            return EXTCAP_OK;
        default:
            usage(stderr);
            return EXTCAP_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "socktap-extcap: unexpected argument '%s'\n", argv[optind]);
        return EXTCAP_USAGE;
    }
    char conf_admin[512] = EXTCAP_DEFAULT_ADMIN;
    if (!admin && getenv("SOCKTAP_ADMIN") && *getenv("SOCKTAP_ADMIN"))
        admin = getenv("SOCKTAP_ADMIN");
    if (!admin) {
        if (extcap_conf(conf_admin, sizeof(conf_admin)))
            return EXTCAP_USAGE;
        admin = conf_admin;
    }
    if (max_bytes && (!*max_bytes || strspn(max_bytes, "0123456789") != strlen(max_bytes))) {
        fprintf(stderr, "socktap-extcap: --max-bytes wants a number of bytes\n");
        return EXTCAP_USAGE;
    }
    char kind[32];
    const char *name;
    bool wire;
    if (mode != O_IFACES && mode != O_CAPTURE && iface &&
        !extcap_iface(iface, kind, sizeof(kind), &name, &wire))
        return EXTCAP_USAGE;
    switch (mode) {
    case O_IFACES:
        return extcap_interfaces(admin);
    case O_DLTS:
        printf("dlt {number=1}{name=EN10MB}{display=Ethernet}\n");
        return EXTCAP_OK;
    case O_CONFIG:
        printf("arg {number=0}{call=--admin}{display=socktap admin address}{type=string}"
               "{default=%s}{tooltip=HOST:PORT of the running socktap's admin endpoint}"
               "{required=true}\n",
               admin);
        printf("arg {number=1}{call=--max-bytes}{display=Viewer queue (bytes)}{type=unsigned}"
               "{range=65536,268435456}{default=8388608}{tooltip=Events queued for this "
               "capture in socktap before they are dropped (and counted) for it}\n");
        return EXTCAP_OK;
    case O_CAPTURE:
        if (!fifo) {
            fprintf(stderr, "socktap-extcap: --capture needs --fifo\n");
            return EXTCAP_USAGE;
        }
        if (filter && *filter) {
            fprintf(stderr,
                    "socktap-extcap: no capture filters (got '%s'); use a display "
                    "filter instead\n",
                    filter);
            return EXTCAP_USAGE;
        }
        stop_signals_init();
        return extcap_capture(admin, iface, fifo, max_bytes);
    default:
        if (filter) { /* Wireshark checking a capture filter: any output says it is invalid */
            if (*filter)
                printf("socktap-extcap has no capture filters; use a display filter\n");
            return EXTCAP_OK;
        }
        fprintf(stderr, "socktap-extcap: nothing to do\n");
        usage(stderr);
        return EXTCAP_USAGE;
    }
}

/* socktap-extcap: a Wireshark extcap
 * (https://www.wireshark.org/docs/wsdg_html_chunked/ChCaptureExtcap.html) that shows a running
 * socktap's capture sockets as capture interfaces and streams the one chosen from the admin's GET
 * /capture/live.pcapng (docs/capture.md, "Live capture").
 *
 *   --extcap-interfaces             one interface per line of GET /capture/live:
 *                                   socktap.listener.NAME, socktap.cluster.NAME, and
 *                                   socktap.listener-wire.NAME / socktap.cluster-wire.NAME
 *   --extcap-dlts                   Ethernet (what the live stream carries)
 *   --extcap-config                 the admin address (--admin HOST:PORT)
 *   --capture --fifo PATH           streams pcapng into PATH until Wireshark stops it
 *
 * Wireshark asks for the interfaces without any argument of ours, so the admin address there
 * comes from $SOCKTAP_ADMIN (default 127.0.0.1:9901); --admin overrides it for a capture.
 * Written in C with plain sockets (no libcurl, no Python): one small static-free binary that
 * runs wherever Wireshark does. Only numeric IPv4/IPv6 addresses: the admin listens on loopback.
 * Exit: 0 ok (stopped by Wireshark counts as ok), 1 the admin refused or is unreachable, 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <unistd.h>

#define EXTCAP_DEFAULT_ADMIN "127.0.0.1:9901"
#define EXTCAP_MAX_HEAD      16384

/* Parses "HOST:PORT" or "[V6]:PORT" into SS. Returns 0 or -EINVAL. */
static int extcap_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text || (size_t)(colon - text) >= sizeof(host))
        return -EINVAL;
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return -EINVAL;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -EINVAL;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*s6);
        return 0;
    }
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -EINVAL;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *len = sizeof(*s4);
    return 0;
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        len -= (size_t)w;
    }
    return true;
}

/* A response being read: the socket, and bytes read past what was consumed. */
struct extcap_http {
    int fd;
    char buf[65536];
    size_t start, end;
};

/* Makes at least one more byte available. Returns false at EOF or on error. */
static bool http_fill(struct extcap_http *h)
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
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        h->end += (size_t)r;
        return true;
    }
}

/* Reads one CRLF-terminated line (without it) into LINE. Returns false at EOF or overlong. */
static bool http_line(struct extcap_http *h, char *line, size_t size)
{
    size_t n = 0;
    for (;;) {
        while (h->start < h->end) {
            char c = h->buf[h->start++];
            if (c == '\n') {
                if (n && line[n - 1] == '\r')
                    n--;
                line[n] = '\0';
                return true;
            }
            if (n + 1 >= size)
                return false;
            line[n++] = c;
        }
        if (!http_fill(h))
            return false;
    }
}

/* Copies LEN body bytes (or, with LEN < 0, everything until EOF) to OUT_FD. */
static bool http_copy(struct extcap_http *h, long long len, int out_fd)
{
    while (len != 0) {
        if (h->start == h->end && !http_fill(h))
            return len < 0;
        size_t n = h->end - h->start;
        if (len > 0 && (long long)n > len)
            n = (size_t)len;
        if (!write_all(out_fd, h->buf + h->start, n))
            return false;
        h->start += n;
        if (len > 0)
            len -= (long long)n;
    }
    return true;
}

/* GET PATH from ADMIN, body to OUT_FD (de-chunked). Returns 0, or 1 with a message on stderr. */
static int extcap_get(const char *admin, const char *path, int out_fd)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (extcap_addr(admin, &ss, &sl)) {
        fprintf(stderr, "socktap-extcap: bad admin address '%s' (want IP:PORT)\n", admin);
        return 1;
    }
    struct extcap_http h = {.fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)};
    if (h.fd < 0 || connect(h.fd, (struct sockaddr *)&ss, sl) != 0) {
        fprintf(stderr, "socktap-extcap: cannot reach socktap's admin at %s: %s\n", admin,
                strerror(errno));
        if (h.fd >= 0)
            close(h.fd);
        return 1;
    }
    char req[2048];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     path, admin);
    char line[EXTCAP_MAX_HEAD];
    int status = 0, ret = 1;
    bool chunked = false;
    long long clen = -1;
    if (n < 0 || (size_t)n >= sizeof(req) || !write_all(h.fd, req, (size_t)n) ||
        !http_line(&h, line, sizeof(line)) || sscanf(line, "HTTP/%*s %d", &status) != 1) {
        fprintf(stderr, "socktap-extcap: %s: no HTTP answer from %s\n", path, admin);
        goto out;
    }
    while (http_line(&h, line, sizeof(line)) && line[0]) {
        if (!strncasecmp(line, "Transfer-Encoding:", 18) && strstr(line + 18, "chunked"))
            chunked = true;
        if (!strncasecmp(line, "Content-Length:", 15))
            clen = strtoll(line + 15, NULL, 10);
    }
    int body_fd = status == 200 ? out_fd : STDERR_FILENO;
    if (status != 200)
        fprintf(stderr, "socktap-extcap: %s at %s answered %d: ", path, admin, status);
    if (!chunked) {
        ret = http_copy(&h, clen, body_fd) && status == 200 ? 0 : 1;
        goto out;
    }
    for (;;) {
        if (!http_line(&h, line, sizeof(line)))
            break; /* the stream ended (socktap stopped): what came is valid pcapng */
        long long size = strtoll(line, NULL, 16);
        if (size <= 0 || !http_copy(&h, size, body_fd) || !http_line(&h, line, sizeof(line)))
            break;
    }
    ret = status == 200 ? 0 : 1;
out:
    close(h.fd);
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

/* Lists the interfaces: one per line "KIND NAME[ wire]" of /capture/live. */
static int extcap_interfaces(const char *admin)
{
    printf(
        "extcap {version=%s}{help=https://github.com/socktap/socktap/blob/main/docs/capture.md}\n",
        SOCKTAP_VERSION);
    fflush(stdout);
    /* The list is small: fetched into an anonymous memory file, then read back. */
    char *text = NULL;
    int fd = memfd_create("socktap-extcap-list", MFD_CLOEXEC);
    if (fd >= 0 && extcap_get(admin, "/capture/live", fd) == 0) {
        off_t len = lseek(fd, 0, SEEK_END);
        text = len >= 0 ? calloc(1, (size_t)len + 1) : NULL;
        if (text && pread(fd, text, (size_t)len, 0) != len) {
            free(text);
            text = NULL;
        }
    }
    if (fd >= 0)
        close(fd);
    for (char *line = strtok(text ? text : "", "\n"); line; line = strtok(NULL, "\n")) {
        char kind[16], name[512], wire[8] = "";
        if (sscanf(line, "%15s %511s %7s", kind, name, wire) < 2)
            continue;
        bool w = !strcmp(wire, "wire");
        printf("interface {value=socktap.%s%s.%s}{display=socktap %s %s%s (live capture)}\n", kind,
               w ? "-wire" : "", name, kind, name, w ? ", TLS wire" : "");
    }
    free(text);
    return 0; /* no socktap running is an empty list, not an error for Wireshark */
}

static volatile sig_atomic_t stopping;
static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

/* Streams interface IFACE ("socktap.KIND[-wire].NAME") into FIFO. */
static int extcap_capture(const char *admin, const char *iface, const char *fifo)
{
    char kind[32], name[512], enc[1600], path[2048];
    const char *dot = iface && !strncmp(iface, "socktap.", 8) ? strchr(iface + 8, '.') : NULL;
    if (!dot || (size_t)(dot - iface - 8) >= sizeof(kind) || !dot[1]) {
        fprintf(stderr, "socktap-extcap: unknown interface '%s'\n", iface ? iface : "");
        return 2;
    }
    memcpy(kind, iface + 8, (size_t)(dot - iface - 8));
    kind[dot - iface - 8] = '\0';
    snprintf(name, sizeof(name), "%s", dot + 1);
    bool wire = false;
    char *dash = strstr(kind, "-wire");
    if (dash && !dash[5]) {
        *dash = '\0';
        wire = true;
    }
    if (strcmp(kind, "listener") && strcmp(kind, "cluster")) {
        fprintf(stderr, "socktap-extcap: unknown interface '%s'\n", iface);
        return 2;
    }
    url_encode(name, enc, sizeof(enc));
    snprintf(path, sizeof(path), "/capture/live.pcapng?%s=%s%s", kind, enc, wire ? "&wire=1" : "");
    int fd = open(fifo, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "socktap-extcap: cannot open %s: %s\n", fifo, strerror(errno));
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = extcap_get(admin, path, fd);
    close(fd);
    return stopping ? 0 : rc;
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
        O_ADMIN,
        O_IGNORE,
        O_VERSION
    };
    static const struct option opts[] = {
        {"extcap-interfaces", no_argument, NULL, O_IFACES},
        {"extcap-dlts", no_argument, NULL, O_DLTS},
        {"extcap-config", no_argument, NULL, O_CONFIG},
        {"capture", no_argument, NULL, O_CAPTURE},
        {"extcap-interface", required_argument, NULL, O_IFACE},
        {"fifo", required_argument, NULL, O_FIFO},
        {"admin", required_argument, NULL, O_ADMIN},
        {"extcap-version", optional_argument, NULL, O_IGNORE},
        {"extcap-capture-filter", required_argument, NULL, O_IGNORE},
        {"extcap-control-in", required_argument, NULL, O_IGNORE},
        {"extcap-control-out", required_argument, NULL, O_IGNORE},
        {"debug", no_argument, NULL, O_IGNORE},
        {"debug-file", required_argument, NULL, O_IGNORE},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    int mode = 0, c;
    const char *iface = NULL, *fifo = NULL;
    const char *admin = getenv("SOCKTAP_ADMIN");
    if (!admin || !*admin)
        admin = EXTCAP_DEFAULT_ADMIN;
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
        case O_ADMIN:
            admin = optarg;
            break;
        case O_IGNORE:
            break;
        case O_VERSION:
            printf("socktap-extcap %s\n", SOCKTAP_VERSION);
            return 0;
        default:
            fprintf(stderr, "usage: socktap-extcap --extcap-interfaces | --extcap-dlts | "
                            "--extcap-config | --capture --extcap-interface IF --fifo PATH "
                            "[--admin IP:PORT]\n");
            return 2;
        }
    }
    switch (mode) {
    case O_IFACES:
        return extcap_interfaces(admin);
    case O_DLTS:
        printf("dlt {number=1}{name=EN10MB}{display=Ethernet}\n");
        return 0;
    case O_CONFIG:
        printf("arg {number=0}{call=--admin}{display=socktap admin address}{type=string}"
               "{default=%s}{tooltip=IP:PORT of the running socktap's admin endpoint}\n",
               admin);
        return 0;
    case O_CAPTURE:
        if (!fifo) {
            fprintf(stderr, "socktap-extcap: --capture needs --fifo\n");
            return 2;
        }
        return extcap_capture(admin, iface, fifo);
    default:
        fprintf(stderr, "socktap-extcap: nothing to do (try --extcap-interfaces)\n");
        return 2;
    }
}

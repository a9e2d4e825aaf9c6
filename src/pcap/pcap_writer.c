/* pcap dumper wrapper. We open the file ourselves (0600, O_CLOEXEC) and hand libpcap a FILE via
 * pcap_dump_fopen, rather than pcap_dump_open(path), so the mode is never 0666 & umask and so
 * the stdio buffer can be sized: 1 MiB turns ~100k packets/s of small fwrites into few large
 * write(2)s. Rejected: writing the classic pcap format by hand (libpcap owns the magic numbers
 * and the link-type table). pcapng, which libpcap 1.10 cannot write, goes through our own
 * block writer (pcapng_writer.c says why) straight to the descriptor or the caller's sink;
 * classic pcap reaches a caller's sink through fopencookie, so both formats take both kinds of
 * output. Rejected: two writer types behind an ops table (the flow code would call through it
 * per packet for a choice made once, and the framing would be duplicated). */
#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pcap/pcap_writer.h"

#define PCAP_WRITER_BUF             (1u << 20)
#define PCAP_WRITER_DEFAULT_SNAPLEN 262144u

struct pcap_writer {
    bool pcapng, ethernet, nanosecond;
    uint32_t snaplen;
    uint64_t packets;
    /* classic pcap */
    pcap_t *dead;
    pcap_dumper_t *dumper;
    FILE *file;
    char *iobuf;
    pcapng_sink_fn sink; /* classic through a caller's sink: what the cookie FILE calls */
    void *sink_ctx;
    /* pcapng */
    struct pcapng_writer *ng;
    int fd; /* pcapng to a descriptor: our dup, closed by pcap_writer_close; else -1 */
    uint8_t frame[PCAP_FRAME_MAX];
};

static void pcap_writer_msg(char *err, size_t errlen, const char *name, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: %s", name, msg);
}

int pcap_writer_open(const char *path, const struct pcap_writer_opts *opts,
                     struct pcap_writer **out, char *err, size_t errlen)
{
    bool std_out = strcmp(path, "-") == 0;
    int fd, ret;

    fd = std_out ? STDOUT_FILENO : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        pcap_writer_msg(err, errlen, path, strerror(-ret));
        return ret;
    }
    ret = pcap_writer_open_fd(fd, path, opts, out, err, errlen);
    if (!std_out)
        close(fd);
    return ret;
}

static struct pcap_writer *pcap_writer_alloc(const struct pcap_writer_opts *opts)
{
    struct pcap_writer *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->pcapng = opts->pcapng;
    w->ethernet = opts->ethernet;
    w->nanosecond = opts->nanosecond;
    w->snaplen = opts->snaplen ? opts->snaplen : PCAP_WRITER_DEFAULT_SNAPLEN;
    w->fd = -1;
    return w;
}

/* Starts the classic dumper on FILE (taken: closed on failure too). */
static int pcap_writer_start_classic(struct pcap_writer *w, FILE *file, const char *name, char *err,
                                     size_t errlen)
{
    bool have_msg = false;
    int ret;

    w->file = file;
    w->iobuf = malloc(PCAP_WRITER_BUF);
    if (!w->iobuf) {
        ret = -ENOMEM;
        goto err_close_file;
    }
    setvbuf(w->file, w->iobuf, _IOFBF, PCAP_WRITER_BUF);
    w->dead = pcap_open_dead_with_tstamp_precision(
        w->ethernet ? DLT_EN10MB : DLT_RAW, (int)w->snaplen,
        w->nanosecond ? PCAP_TSTAMP_PRECISION_NANO : PCAP_TSTAMP_PRECISION_MICRO);
    if (!w->dead) {
        ret = -ENOMEM;
        goto err_close_file;
    }
    w->dumper = pcap_dump_fopen(w->dead, w->file);
    if (!w->dumper) {
        pcap_writer_msg(err, errlen, name, pcap_geterr(w->dead));
        have_msg = true;
        ret = -EIO;
        goto err_close_dead;
    }
    return 0;

err_close_dead:
    pcap_close(w->dead);
err_close_file:
    fclose(w->file); /* before the buffer it may still use */
    free(w->iobuf);
    w->iobuf = NULL;
    if (!have_msg)
        pcap_writer_msg(err, errlen, name, strerror(-ret));
    return ret;
}

static int pcap_writer_start_pcapng(struct pcap_writer *w, pcapng_sink_fn sink, void *ctx,
                                    size_t bufsize)
{
    const struct pcapng_section sec = {.userappl = "socktap " SOCKTAP_VERSION};

    return pcapng_writer_new(sink, ctx, bufsize, &sec, &w->ng);
}

static int pcap_writer_fd_sink(void *ctx, const void *buf, size_t len)
{
    const struct pcap_writer *w = ctx;
    const char *p = buf;

    while (len) {
        ssize_t n = write(w->fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int pcap_writer_open_fd(int fd, const char *name, const struct pcap_writer_opts *opts,
                        struct pcap_writer **out, char *err, size_t errlen)
{
    struct pcap_writer *w;
    FILE *file;
    int ret;

    w = pcap_writer_alloc(opts);
    if (!w) {
        pcap_writer_msg(err, errlen, name, strerror(ENOMEM));
        return -ENOMEM;
    }
    fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        goto err_free_w;
    }
    if (w->pcapng) {
        w->fd = fd;
        ret = pcap_writer_start_pcapng(w, pcap_writer_fd_sink, w, 0);
        if (ret)
            goto err_close_fd;
        *out = w;
        return 0;
    }
    file = fdopen(fd, "wb");
    if (!file) {
        ret = -errno;
        goto err_close_fd;
    }
    ret = pcap_writer_start_classic(w, file, name, err, errlen);
    if (ret) {
        free(w);
        return ret;
    }
    *out = w;
    return 0;

err_close_fd:
    close(fd);
err_free_w:
    free(w);
    pcap_writer_msg(err, errlen, name, strerror(-ret));
    return ret;
}

static ssize_t pcap_writer_cookie_write(void *ctx, const char *buf, size_t len)
{
    const struct pcap_writer *w = ctx;
    int r = w->sink(w->sink_ctx, buf, len);

    if (r) {
        errno = -r;
        return -1;
    }
    return (ssize_t)len;
}

int pcap_writer_open_sink(pcapng_sink_fn sink, void *ctx, size_t bufsize,
                          const struct pcap_writer_opts *opts, struct pcap_writer **out)
{
    static const cookie_io_functions_t io = {.write = pcap_writer_cookie_write};
    struct pcap_writer *w;
    FILE *file;
    int ret;

    w = pcap_writer_alloc(opts);
    if (!w)
        return -ENOMEM;
    if (w->pcapng) {
        ret = pcap_writer_start_pcapng(w, sink, ctx, bufsize);
    } else {
        w->sink = sink;
        w->sink_ctx = ctx;
        file = fopencookie(w, "wb", io);
        ret = file ? pcap_writer_start_classic(w, file, "sink", NULL, 0) : -ENOMEM;
    }
    if (ret) {
        free(w);
        return ret;
    }
    *out = w;
    return 0;
}

bool pcap_writer_is_pcapng(const struct pcap_writer *w)
{
    return w->pcapng;
}

int pcap_writer_add_interface(struct pcap_writer *w, const char *name, const char *description,
                              uint32_t *index)
{
    const struct pcapng_interface ifc = {
        .linktype = w->ethernet ? PCAPNG_LINKTYPE_ETHERNET : PCAPNG_LINKTYPE_RAW,
        .snaplen = w->snaplen,
        .name = name,
        .description = description,
    };

    *index = 0;
    return w->pcapng ? pcapng_writer_add_interface(w->ng, &ifc, index) : 0;
}

int pcap_writer_write(struct pcap_writer *w, int64_t sec, int32_t nsec, const struct pcap_seg *seg,
                      const struct pcap_pkt_meta *meta)
{
    static const struct pcap_pkt_meta none;
    struct pcap_pkthdr h;
    size_t len = pcap_frame_build(w->frame, w->ethernet, seg);
    uint32_t caplen = (uint32_t)(len < w->snaplen ? len : w->snaplen);
    int ret;

    if (len == 0)
        return -EINVAL;
    if (nsec < 0)
        nsec = 0;
    if (nsec > 999999999)
        nsec = 999999999;
    if (w->pcapng) {
        if (!meta)
            meta = &none;
        ret = pcapng_writer_packet(w->ng, meta->ifindex, sec, nsec, meta->dir, meta->comment,
                                   w->frame, caplen, (uint32_t)len);
        if (ret == 0)
            w->packets++;
        return ret;
    }
    h.ts.tv_sec = (time_t)sec;
    /* A nanosecond dumper stores tv_usec as nanoseconds (libpcap's convention). Microseconds
     * truncate, as Envoy's converter and tshark's own display do. */
    h.ts.tv_usec = w->nanosecond ? nsec : nsec / 1000;
    h.len = (bpf_u_int32)len;
    h.caplen = caplen;
    pcap_dump((u_char *)w->dumper, &h, w->frame);
    w->packets++;
    /* Cheap (a flag test); catches a full disk long before close. */
    if (ferror(w->file))
        return -EIO;
    return 0;
}

int pcap_writer_secrets(struct pcap_writer *w, uint32_t type, const void *data, size_t len)
{
    if (!w->pcapng)
        return -EOPNOTSUPP;
    return pcapng_writer_secrets(w->ng, type, data, len);
}

int pcap_writer_flush(struct pcap_writer *w)
{
    if (w->pcapng)
        return pcapng_writer_flush(w->ng) ? -EIO : 0;
    return pcap_dump_flush(w->dumper) != 0 || ferror(w->file) ? -EIO : 0;
}

uint64_t pcap_writer_packets(const struct pcap_writer *w)
{
    return w->packets;
}

int pcap_writer_close(struct pcap_writer *w)
{
    int ret;

    if (!w)
        return 0;
    ret = pcap_writer_flush(w);
    if (w->pcapng) {
        pcapng_writer_free(w->ng);
        w->ng = NULL;
        if (w->fd >= 0 && close(w->fd) != 0 && ret == 0)
            ret = -EIO;
    } else {
        /* pcap_dump_close fcloses our FILE; the buffer must outlive it. */
        pcap_dump_close(w->dumper);
        pcap_close(w->dead);
        free(w->iobuf);
        w->iobuf = NULL;
    }
    free(w);
    return ret;
}

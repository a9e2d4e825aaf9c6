/* pcap dumper wrapper. We open the file ourselves (0600, O_CLOEXEC) and hand libpcap a FILE via
 * pcap_dump_fopen, rather than pcap_dump_open(path), so the mode is never 0666 & umask and so
 * the stdio buffer can be sized: 1 MiB turns ~100k packets/s of small fwrites into few large
 * write(2)s. Rejected: writing the pcap format by hand (libpcap owns the magic numbers and the
 * link-type table). */
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
    pcap_t *dead;
    pcap_dumper_t *dumper;
    FILE *file;
    char *iobuf;
    bool ethernet, nanosecond;
    uint32_t snaplen;
    uint64_t packets;
    uint8_t frame[PCAP_FRAME_MAX];
};

int pcap_writer_open(const char *path, const struct pcap_writer_opts *opts,
                     struct pcap_writer **out, char *err, size_t errlen)
{
    bool std_out = strcmp(path, "-") == 0;
    int fd, ret;

    fd = std_out ? STDOUT_FILENO : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        ret = -errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(-ret));
        return ret;
    }
    ret = pcap_writer_open_fd(fd, path, opts, out, err, errlen);
    if (!std_out)
        close(fd);
    return ret;
}

int pcap_writer_open_fd(int fd, const char *name, const struct pcap_writer_opts *opts,
                        struct pcap_writer **out, char *err, size_t errlen)
{
    struct pcap_writer *w;
    bool have_msg = false;
    int ret;

    w = calloc(1, sizeof(*w));
    if (!w) {
        ret = -ENOMEM;
        goto err_msg;
    }
    w->ethernet = opts->ethernet;
    w->nanosecond = opts->nanosecond;
    w->snaplen = opts->snaplen ? opts->snaplen : PCAP_WRITER_DEFAULT_SNAPLEN;
    w->iobuf = malloc(PCAP_WRITER_BUF);
    if (!w->iobuf) {
        ret = -ENOMEM;
        goto err_free_w;
    }
    fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
        goto err_free_buf;
    }
    w->file = fdopen(fd, "wb");
    if (!w->file) {
        ret = -errno;
        close(fd);
        goto err_free_buf;
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
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", name, pcap_geterr(w->dead));
        have_msg = true;
        ret = -EIO;
        goto err_close_dead;
    }
    *out = w;
    return 0;

err_close_dead:
    pcap_close(w->dead);
err_close_file:
    fclose(w->file);
err_free_buf:
    free(w->iobuf);
err_free_w:
    free(w);
err_msg:
    if (err && errlen && !have_msg)
        snprintf(err, errlen, "%s: %s", name, strerror(-ret));
    return ret;
}

int pcap_writer_write(struct pcap_writer *w, int64_t sec, int32_t nsec, const struct pcap_seg *seg)
{
    struct pcap_pkthdr h;
    size_t len = pcap_frame_build(w->frame, w->ethernet, seg);

    if (len == 0)
        return -EINVAL;
    if (nsec < 0)
        nsec = 0;
    if (nsec > 999999999)
        nsec = 999999999;
    h.ts.tv_sec = (time_t)sec;
    /* A nanosecond dumper stores tv_usec as nanoseconds (libpcap's convention). Microseconds
     * truncate, as Envoy's converter and tshark's own display do. */
    h.ts.tv_usec = w->nanosecond ? nsec : nsec / 1000;
    h.len = (bpf_u_int32)len;
    h.caplen = (bpf_u_int32)(len < w->snaplen ? len : w->snaplen);
    pcap_dump((u_char *)w->dumper, &h, w->frame);
    w->packets++;
    /* Cheap (a flag test); catches a full disk long before close. */
    if (ferror(w->file))
        return -EIO;
    return 0;
}

uint64_t pcap_writer_packets(const struct pcap_writer *w)
{
    return w->packets;
}

int pcap_writer_close(struct pcap_writer *w)
{
    int ret = 0;

    if (!w)
        return 0;
    if (pcap_dump_flush(w->dumper) != 0 || ferror(w->file))
        ret = -EIO;
    /* pcap_dump_close fcloses our FILE; the buffer must outlive it. */
    pcap_dump_close(w->dumper);
    pcap_close(w->dead);
    free(w->iobuf);
    w->iobuf = NULL;
    free(w);
    return ret;
}

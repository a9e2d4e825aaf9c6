/* pcapng blocks by hand. Chosen over Wireshark's libwiretap (Debian libwiretap-dev 4.0):
 * wiretap is Wireshark's internal library, not a stable API (its soname moves with every
 * release line, libwiretap13 in Debian 12, and wtap_dump_params/wtap_block_* have changed
 * shape across 3.x and 4.x), it needs GLib (GArray/GString options, g_free ownership) and
 * wtap_init's plugin and file-type tables in a tool that otherwise links only libpcap, and it
 * writes through its own file handle, so the proxy's live stream to a socket would need a pipe
 * and a thread. The blocks socktap needs are four fixed layouts with a TLV option list: about
 * 200 lines, checked byte for byte by the unit test and read back by tshark, capinfos and
 * editcap in the end-to-end test. Speed: a block is one header copy plus the payload copy
 * into a 1 MiB buffer and no allocation, what libpcap's pcap_dump costs for classic pcap
 * (bench/convert-bench.sh measures both).
 *
 * Byte order: the host's. pcapng allows either: readers learn it from the SHB's byte-order
 * magic, written in the same order. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pcap/pcapng_writer.h"

#define NG_BT_SHB 0x0A0D0D0Au
#define NG_BT_IDB 0x00000001u
#define NG_BT_EPB 0x00000006u
#define NG_BT_DSB 0x0000000Au

#define NG_OPT_END      0
#define NG_OPT_COMMENT  1
#define NG_SHB_HARDWARE 2
#define NG_SHB_OS       3
#define NG_SHB_USERAPPL 4
#define NG_IF_NAME      2
#define NG_IF_DESC      3
#define NG_IF_TSRESOL   9
#define NG_EPB_FLAGS    2

#define NG_OPT_MAX     0xFFFFu
#define NG_DEFAULT_BUF (1u << 20)
#define NG_MAX_BLOCK   (1u << 30) /* far above any frame; keeps the u32 length sane */
#define NG_MIN_BUF     256u

struct pcapng_writer {
    pcapng_sink_fn sink;
    void *ctx;
    int err; /* first failure, returned by every later call */
    uint32_t ninterfaces;
    uint64_t packets;
    size_t len, cap;
    uint8_t *buf;
};

static const uint8_t ng_zeros[4];

static size_t ng_pad(size_t n)
{
    return (4 - (n & 3)) & 3;
}

static size_t ng_opt_size(size_t len)
{
    return 4 + len + ng_pad(len);
}

static int ng_drain(struct pcapng_writer *w)
{
    if (w->err)
        return w->err;
    if (w->len) {
        int r = w->sink(w->ctx, w->buf, w->len);
        w->len = 0;
        if (r)
            w->err = r < 0 ? r : -EIO;
    }
    return w->err;
}

/* Appends N bytes of P; what does not fit in the buffer goes straight to the sink, in order. */
static int ng_put(struct pcapng_writer *w, const void *p, size_t n)
{
    if (w->err)
        return w->err;
    if (n > w->cap - w->len) {
        if (ng_drain(w))
            return w->err;
        if (n >= w->cap) {
            int r = w->sink(w->ctx, p, n);
            if (r)
                w->err = r < 0 ? r : -EIO;
            return w->err;
        }
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

static int ng_put32(struct pcapng_writer *w, uint32_t v)
{
    return ng_put(w, &v, sizeof(v));
}

static int ng_put_opt(struct pcapng_writer *w, uint16_t code, const void *val, size_t len)
{
    uint16_t h[2] = {code, (uint16_t)len};

    ng_put(w, h, sizeof(h));
    if (len)
        ng_put(w, val, len);
    return ng_put(w, ng_zeros, ng_pad(len));
}

/* Size of string option S (0 when absent); -E2BIG through *BAD when too long. */
static size_t ng_str_size(const char *s, bool *bad)
{
    size_t n;

    if (!s)
        return 0;
    n = strlen(s);
    if (n > NG_OPT_MAX) {
        *bad = true;
        return 0;
    }
    return ng_opt_size(n);
}

static int ng_put_str(struct pcapng_writer *w, uint16_t code, const char *s)
{
    return s ? ng_put_opt(w, code, s, strlen(s)) : 0;
}

/* Closes an option list: opt_endofopt if any option was written, then the trailing length. */
static int ng_end_block(struct pcapng_writer *w, size_t opts, uint32_t total)
{
    if (opts)
        ng_put_opt(w, NG_OPT_END, NULL, 0);
    return ng_put32(w, total);
}

int pcapng_writer_new(pcapng_sink_fn sink, void *ctx, size_t bufsize,
                      const struct pcapng_section *section, struct pcapng_writer **out)
{
    struct pcapng_writer *w;
    size_t opts;
    bool bad = false;
    int ret;

    w = calloc(1, sizeof(*w));
    if (!w)
        return -ENOMEM;
    w->sink = sink;
    w->ctx = ctx;
    w->cap = bufsize ? (bufsize < NG_MIN_BUF ? NG_MIN_BUF : bufsize) : NG_DEFAULT_BUF;
    w->buf = malloc(w->cap);
    if (!w->buf) {
        ret = -ENOMEM;
        goto err_free_w;
    }
    opts = ng_str_size(section->comment, &bad) + ng_str_size(section->hardware, &bad) +
           ng_str_size(section->os, &bad) + ng_str_size(section->userappl, &bad);
    if (bad) {
        ret = -E2BIG;
        goto err_free_buf;
    }
    opts += opts ? 4 : 0;
    uint32_t total = (uint32_t)(28 + opts);
    /* block type, length, byte-order magic, version 1.0, section length unknown (-1) */
    uint32_t hdr[7] = {NG_BT_SHB, total, 0x1A2B3C4Du, 1u | 0u << 16, 0xFFFFFFFFu, 0xFFFFFFFFu, 0};
    ng_put(w, hdr, 24);
    ng_put_str(w, NG_OPT_COMMENT, section->comment);
    ng_put_str(w, NG_SHB_HARDWARE, section->hardware);
    ng_put_str(w, NG_SHB_OS, section->os);
    ng_put_str(w, NG_SHB_USERAPPL, section->userappl);
    ng_end_block(w, opts, total);
    *out = w;
    return 0;

err_free_buf:
    free(w->buf);
err_free_w:
    free(w);
    return ret;
}

int pcapng_writer_add_interface(struct pcapng_writer *w, const struct pcapng_interface *ifc,
                                uint32_t *index)
{
    static const uint8_t tsresol = 9; /* 10^-9 s */
    bool bad = false;
    size_t opts;

    if (w->err)
        return w->err;
    opts = ng_str_size(ifc->name, &bad) + ng_str_size(ifc->description, &bad) + ng_opt_size(1) + 4;
    if (bad)
        return -E2BIG;
    uint32_t total = (uint32_t)(20 + opts);
    uint32_t hdr[4] = {NG_BT_IDB, total, ifc->linktype, ifc->snaplen};
    ng_put(w, hdr, sizeof(hdr));
    ng_put_str(w, NG_IF_NAME, ifc->name);
    ng_put_str(w, NG_IF_DESC, ifc->description);
    ng_put_opt(w, NG_IF_TSRESOL, &tsresol, 1);
    if (ng_end_block(w, opts, total))
        return w->err;
    *index = w->ninterfaces++;
    return 0;
}

int pcapng_writer_packet(struct pcapng_writer *w, uint32_t ifindex, int64_t sec, int32_t nsec,
                         enum pcapng_dir dir, const char *comment, const void *data,
                         uint32_t caplen, uint32_t origlen)
{
    bool bad = false;
    size_t opts;
    uint64_t ts;

    if (w->err)
        return w->err;
    if (ifindex >= w->ninterfaces || caplen > origlen)
        return -EINVAL;
    opts = ng_str_size(comment, &bad) + (dir != PCAPNG_DIR_UNKNOWN ? ng_opt_size(4) : 0);
    if (bad || caplen > NG_MAX_BLOCK)
        return -E2BIG;
    opts += opts ? 4 : 0;
    if (sec < 0)
        sec = 0;
    if (nsec < 0)
        nsec = 0;
    if (nsec > 999999999)
        nsec = 999999999;
    ts = (uint64_t)sec * 1000000000u + (uint64_t)nsec;
    uint32_t total = (uint32_t)(32 + caplen + ng_pad(caplen) + opts);
    uint32_t hdr[7] = {NG_BT_EPB,    total,  ifindex, (uint32_t)(ts >> 32),
                       (uint32_t)ts, caplen, origlen};
    ng_put(w, hdr, sizeof(hdr));
    ng_put(w, data, caplen);
    ng_put(w, ng_zeros, ng_pad(caplen));
    ng_put_str(w, NG_OPT_COMMENT, comment);
    if (dir != PCAPNG_DIR_UNKNOWN) {
        uint32_t flags = (uint32_t)dir; /* bits 0-1: 01 inbound, 10 outbound */
        ng_put_opt(w, NG_EPB_FLAGS, &flags, sizeof(flags));
    }
    if (ng_end_block(w, opts, total))
        return w->err;
    w->packets++;
    return 0;
}

int pcapng_writer_secrets(struct pcapng_writer *w, uint32_t type, const void *data, size_t len)
{
    if (w->err)
        return w->err;
    if (len > NG_MAX_BLOCK)
        return -E2BIG;
    uint32_t total = (uint32_t)(20 + len + ng_pad(len));
    uint32_t hdr[4] = {NG_BT_DSB, total, type, (uint32_t)len};
    ng_put(w, hdr, sizeof(hdr));
    ng_put(w, data, len);
    ng_put(w, ng_zeros, ng_pad(len));
    return ng_put32(w, total);
}

int pcapng_writer_flush(struct pcapng_writer *w)
{
    return ng_drain(w);
}

uint64_t pcapng_writer_packets(const struct pcapng_writer *w)
{
    return w->packets;
}

void pcapng_writer_free(struct pcapng_writer *w)
{
    if (!w)
        return;
    free(w->buf);
    w->buf = NULL;
    free(w);
}

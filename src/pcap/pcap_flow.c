/* Flow state: sequence numbers, handshake and FINs. A FIN consumes one sequence number, as in
 * real TCP, so Wireshark's analysis sees no gaps; the SYN does too, which is why the first data
 * byte is relative sequence 1 with --tcp-handshake and 0 without (Envoy's framing). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "pcap/pcap_flow.h"

#define PCAP_FLOW_WINDOW 65535

static bool pcap_flow_endpoint(struct pcap_endpoint *ep, const struct trace_addr *a,
                               const char *fallback)
{
    if (a->present && pcap_endpoint_parse(ep, a->address, a->port) == 0)
        return false;
    /* The literal is ours and always valid, so the parse cannot fail here. */
    if (pcap_endpoint_parse(ep, fallback, a->present && a->port <= 65535 ? a->port : 0) != 0)
        ep->family = AF_INET;
    return true;
}

/* Linux's default ephemeral range starts at 32768: a port there is almost surely a client's. */
static bool pcap_flow_local_is_client(uint16_t local, uint16_t remote)
{
    bool le = local >= 32768, re = remote >= 32768;

    if (le != re)
        return le;
    if (!le)
        return local > remote;
    return false; /* both ephemeral: a listener's trace (remote client) is the common case */
}

int pcap_flow_init(struct pcap_flow *f, const struct trace_conn *conn,
                   const struct pcap_flow_opts *opts, bool *defaulted)
{
    bool dflt;

    memset(f, 0, sizeof(*f));
    f->opts = *opts;
    dflt = pcap_flow_endpoint(&f->local, &conn->local, "127.0.0.1");
    dflt |= pcap_flow_endpoint(&f->remote, &conn->remote, "127.0.0.2");
    pcap_endpoint_unify(&f->local, &f->remote);
    f->local_is_client = pcap_flow_local_is_client(f->local.port, f->remote.port);
    if (defaulted)
        *defaulted = dflt;
    return 0;
}

int pcap_flow_annotate(struct pcap_flow *f, uint32_t ifindex, const char *comment)
{
    char *c = NULL;

    if (comment) {
        c = strdup(comment);
        if (!c)
            return -ENOMEM;
    }
    free(f->comment);
    f->comment = c;
    f->ifindex = ifindex;
    return 0;
}

void pcap_flow_release(struct pcap_flow *f)
{
    free(f->comment);
    f->comment = NULL;
}

static int pcap_flow_seg(struct pcap_flow *f, struct pcap_writer *w, enum pcap_flow_dir d,
                         uint8_t flags, const struct trace_event *ev, size_t off, size_t len)
{
    struct pcap_seg seg = {
        .src = d == PCAP_FLOW_OUT ? &f->local : &f->remote,
        .dst = d == PCAP_FLOW_OUT ? &f->remote : &f->local,
        .seq = f->seq[d],
        .ack = f->seq[!d],
        .flags = flags,
        .window = PCAP_FLOW_WINDOW,
        .iov = ev ? ev->iov : NULL,
        .iovcnt = ev ? ev->iovcnt : 0,
        .off = off,
        .len = len,
    };

    const struct pcap_pkt_meta meta = {
        .ifindex = f->ifindex,
        .dir = d == PCAP_FLOW_IN ? PCAPNG_DIR_IN : PCAPNG_DIR_OUT,
        .comment = f->comment,
    };
    int ret;

    f->seq[d] += (uint32_t)len + ((flags & (PCAP_TCP_SYN | PCAP_TCP_FIN)) ? 1 : 0);
    ret = pcap_writer_write(w, f->last_sec, f->last_nsec, &seg, &meta);
    if (ret == 0 && f->comment)
        pcap_flow_release(f);
    return ret;
}

static int pcap_flow_open(struct pcap_flow *f, struct pcap_writer *w)
{
    enum pcap_flow_dir c = f->local_is_client ? PCAP_FLOW_OUT : PCAP_FLOW_IN;
    int ret;

    f->opened = true;
    if (!f->opts.handshake)
        return 0;
    /* The SYN's ack field is not yet meaningful (no ACK flag); zero, as stacks send it. */
    ret = pcap_flow_seg(f, w, c, PCAP_TCP_SYN, NULL, 0, 0);
    if (ret == 0)
        ret = pcap_flow_seg(f, w, !c, PCAP_TCP_SYN | PCAP_TCP_ACK, NULL, 0, 0);
    if (ret == 0)
        ret = pcap_flow_seg(f, w, c, PCAP_TCP_ACK, NULL, 0, 0);
    return ret;
}

static int pcap_flow_fin(struct pcap_flow *f, struct pcap_writer *w, enum pcap_flow_dir d)
{
    int ret;

    if (f->fin[d])
        return 0;
    f->fin[d] = true;
    ret = pcap_flow_seg(f, w, d, PCAP_TCP_FIN | PCAP_TCP_ACK, NULL, 0, 0);
    /* The second FIN's sender has nothing left to ack with data: the peer's last ACK closes. */
    if (ret == 0 && f->fin[!d] && !f->closed) {
        f->closed = true;
        ret = pcap_flow_seg(f, w, !d, PCAP_TCP_ACK, NULL, 0, 0);
    }
    return ret;
}

int pcap_flow_event(struct pcap_flow *f, struct pcap_writer *w, const struct trace_event *ev)
{
    enum pcap_flow_dir d = ev->dir == TRACE_EV_WRITE ? PCAP_FLOW_OUT : PCAP_FLOW_IN;
    size_t max = pcap_frame_max_payload(f->local.family);
    size_t off;
    int ret;

    f->last_sec = ev->sec;
    f->last_nsec = ev->nsec;
    if (!f->opened) {
        ret = pcap_flow_open(f, w);
        if (ret)
            return ret;
    }
    if (f->fin_pending && !(ev->dir == TRACE_EV_WRITE && ev->len > 0)) {
        f->fin_pending = false;
        if ((ret = pcap_flow_fin(f, w, PCAP_FLOW_OUT)))
            return ret;
    }
    if (ev->dir == TRACE_EV_CLOSED)
        return pcap_flow_finish(f, w);
    if (f->opts.mss && f->opts.mss < max)
        max = f->opts.mss;
    for (off = 0; off < ev->len; off += max) {
        size_t n = ev->len - off < max ? ev->len - off : max;
        ret = pcap_flow_seg(f, w, d, PCAP_TCP_ACK, ev, off, n);
        if (ret)
            return ret;
    }
    /* Envoy marks end_stream on every write of a half-close that took several (partial)
     * writes: the FIN waits until the next event shows the data has ended. */
    if (ev->end_stream && f->opts.handshake && d == PCAP_FLOW_OUT && !f->fin[d])
        f->fin_pending = true;
    return 0;
}

int pcap_flow_finish(struct pcap_flow *f, struct pcap_writer *w)
{
    int ret;

    if (!f->opts.handshake || !f->opened || f->closed)
        return 0;
    if (f->fin_pending) {
        f->fin_pending = false;
        if ((ret = pcap_flow_fin(f, w, PCAP_FLOW_OUT)))
            return ret;
    }
    /* The client closes first unless one side already half-closed. */
    enum pcap_flow_dir first = f->local_is_client ? PCAP_FLOW_OUT : PCAP_FLOW_IN;
    if (f->fin[!first])
        first = !first;
    ret = pcap_flow_fin(f, w, first);
    if (ret == 0)
        ret = pcap_flow_fin(f, w, !first);
    return ret;
}

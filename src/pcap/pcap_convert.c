/* Merge by timestamp. Each input keeps one pending event (its iov points into that reader's
 * buffer, valid until the reader is advanced, which only happens after the event is written).
 * Ties keep input order, so a listener trace and its cluster trace given in that order
 * interleave deterministically. Connections inside one input (v3 streamed files can hold
 * several trace_ids) get a flow each, found by linear search with move-to-front: inputs
 * carry one connection almost always, and the table grows only with connections, never with
 * events or bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pcap/pcap_convert.h"

struct pcap_conn_flow {
    struct trace_conn conn;
    struct pcap_flow flow;
};

struct pcap_input {
    const char *path;
    size_t index;
    struct trace_reader *reader;
    struct trace_event ev;
    struct pcap_conn_flow *cur; /* flow of the pending event */
    struct pcap_conn_flow *flows;
    size_t nflows, capflows;
};

static bool pcap_input_before(const struct pcap_input *a, const struct pcap_input *b)
{
    if (a->ev.sec != b->ev.sec)
        return a->ev.sec < b->ev.sec;
    if (a->ev.nsec != b->ev.nsec)
        return a->ev.nsec < b->ev.nsec;
    return a->index < b->index;
}

static void pcap_heap_down(struct pcap_input **h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && pcap_input_before(h[l], h[m]))
            m = l;
        if (r < n && pcap_input_before(h[r], h[m]))
            m = r;
        if (m == i)
            return;
        struct pcap_input *t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

static bool pcap_conn_same(const struct trace_conn *a, const struct trace_conn *b)
{
    return a->id == b->id && a->local.present == b->local.present &&
           a->remote.present == b->remote.present && a->local.port == b->local.port &&
           a->remote.port == b->remote.port && strcmp(a->local.address, b->local.address) == 0 &&
           strcmp(a->remote.address, b->remote.address) == 0;
}

/* Finds or creates the flow of CONN in IN. Returns it, or NULL when out of memory. */
static struct pcap_conn_flow *pcap_input_flow(struct pcap_input *in, const struct trace_conn *conn,
                                              const struct pcap_convert_opts *opts, FILE *err)
{
    static const struct trace_conn none;
    struct pcap_conn_flow tmp;
    bool defaulted;

    if (!conn)
        conn = &none;
    for (size_t i = 0; i < in->nflows; i++) {
        if (!pcap_conn_same(&in->flows[i].conn, conn))
            continue;
        if (i) {
            tmp = in->flows[i];
            memmove(in->flows + 1, in->flows, i * sizeof(*in->flows));
            in->flows[0] = tmp;
        }
        return &in->flows[0];
    }
    if (in->nflows == in->capflows) {
        size_t cap = in->capflows ? 2 * in->capflows : 2;
        struct pcap_conn_flow *p = realloc(in->flows, cap * sizeof(*p));
        if (!p)
            return NULL;
        in->flows = p;
        in->capflows = cap;
    }
    memmove(in->flows + 1, in->flows, in->nflows * sizeof(*in->flows));
    in->nflows++;
    in->flows[0].conn = *conn;
    pcap_flow_init(&in->flows[0].flow, conn, &opts->flow, &defaulted);
    if (defaulted)
        fprintf(err,
                "capture2pcap: %s: connection %llu has no IP address/port; using 127.0.0.1 "
                "(local) and 127.0.0.2 (remote)\n",
                in->path, (unsigned long long)conn->id);
    return &in->flows[0];
}

/* Finishes every flow of IN (FINs with --tcp-handshake). */
static int pcap_input_finish(struct pcap_input *in, struct pcap_writer *w)
{
    for (size_t i = 0; i < in->nflows; i++) {
        int ret = pcap_flow_finish(&in->flows[i].flow, w);
        if (ret)
            return ret;
    }
    return 0;
}

/* Advances IN to its next event. Returns 1 (pending event set), 0 (input done: finished, or
 * failed with the failure reported and *BAD set), or -errno for output/memory failures. */
static int pcap_input_advance(struct pcap_input *in, struct pcap_writer *w,
                              const struct pcap_convert_opts *opts, FILE *err, bool *bad)
{
    const struct trace_conn *conn = NULL;
    int ret = trace_reader_next(in->reader, &in->ev, &conn);

    if (ret == 1) {
        in->cur = pcap_input_flow(in, conn, opts, err);
        return in->cur ? 1 : -ENOMEM;
    }
    if (ret == -ENODATA) {
        fprintf(err, "capture2pcap: %s: %s%s\n", opts->allow_truncated ? "warning" : "error",
                trace_reader_error(in->reader),
                opts->allow_truncated ? " (converted up to there)"
                                      : " (converted up to there; --allow-truncated accepts it)");
        if (!opts->allow_truncated)
            *bad = true;
    } else if (ret < 0) {
        fprintf(err, "capture2pcap: error: %s\n", trace_reader_error(in->reader));
        *bad = true;
    }
    if (trace_reader_report_unknown(in->reader, "capture2pcap", opts->allow_unknown, err))
        *bad = true;
    ret = pcap_input_finish(in, w);
    return ret ? ret : 0;
}

static void pcap_input_free(struct pcap_input *in)
{
    trace_reader_free(in->reader);
    in->reader = NULL;
    free(in->flows);
    in->flows = NULL;
}

int pcap_convert(const char *const *paths, size_t n, struct pcap_writer *w,
                 const struct pcap_convert_opts *opts, FILE *err, struct pcap_convert_stats *stats)
{
    struct pcap_convert_stats st = {0};
    struct pcap_input *ins, **heap;
    size_t nheap = 0;
    bool bad = false;
    int ret = 0;

    ins = calloc(n ? n : 1, sizeof(*ins));
    heap = calloc(n ? n : 1, sizeof(*heap));
    if (!ins || !heap) {
        ret = -ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < n; i++) {
        struct trace_reader_opts ro = {
            .format = opts->format,
            .conn_fields = opts->conn_fields,
            .name = paths[i],
        };
        ins[i].path = paths[i];
        ins[i].index = i;
        int r = trace_reader_open_path(paths[i], &ro, &ins[i].reader);
        if (r) {
            fprintf(err, "capture2pcap: error: %s: %s\n", paths[i], strerror(-r));
            bad = true;
            continue;
        }
        r = pcap_input_advance(&ins[i], w, opts, err, &bad);
        if (r < 0) {
            ret = r;
            goto out_free;
        }
        if (r == 1)
            heap[nheap++] = &ins[i];
    }
    for (size_t i = nheap / 2; i-- > 0;)
        pcap_heap_down(heap, nheap, i);

    while (nheap) {
        struct pcap_input *in = heap[0];
        ret = pcap_flow_event(&in->cur->flow, w, &in->ev);
        if (ret)
            goto out_free;
        st.events++;
        st.bytes += in->ev.len;
        ret = pcap_input_advance(in, w, opts, err, &bad);
        if (ret < 0)
            goto out_free;
        if (ret == 0)
            heap[0] = heap[--nheap];
        pcap_heap_down(heap, nheap, 0);
        ret = 0;
    }
    for (size_t i = 0; i < n; i++)
        st.connections += ins[i].nflows;
    ret = bad ? 1 : 0;

out_free:
    for (size_t i = 0; ins && i < n; i++)
        pcap_input_free(&ins[i]);
    free(heap);
    heap = NULL;
    free(ins);
    ins = NULL;
    if (stats)
        *stats = st;
    return ret;
}

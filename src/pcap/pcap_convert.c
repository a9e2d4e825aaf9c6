/* Merge by timestamp. Each input keeps one pending event (its iov points into that reader's
 * buffer, valid until the reader is advanced, which only happens after the event is written).
 * Ties keep input order, so a listener trace and its cluster trace given in that order
 * interleave deterministically. Connections inside one input (v3 streamed files can hold
 * several trace_ids) get a flow each, found by linear search with move-to-front: inputs
 * carry one connection almost always, and the table grows only with connections, never with
 * events or bytes.
 *
 * Open files are bounded by how many traces overlap in time, not by how many there are (every
 * input opened at once failed past ~1,000 traces, the default `ulimit -n`, and left an empty
 * output). A first pass reads each input's first event and closes it again; the merge then
 * opens inputs in order of that first timestamp, only when the merge reaches it, and closes
 * each one when it ends. An unopened input cannot hold an event earlier than its first one
 * (events in a trace are in time order, which the merge assumes anyway), so the output is the
 * same as merging all at once. Rejected: seeking closed inputs back to an offset (every
 * reader format would need resumable state, for the rare case of thousands of connections
 * open at the same moment; that case gets a clear error naming the limit instead). stdin
 * cannot be reopened and stays open.
 *
 * pcapng: a trace carries addresses, not who captured it, so the capture owner comes from the
 * file name: Envoy and socktap name traces <path_prefix>_<id><ext>, and each distinct prefix
 * (one per capture socket, e.g. /var/trace/ingress) becomes one interface, declared in input
 * order before the first packet. Each connection's first packet carries a comment with its id,
 * trace file and addresses. TLS secrets (a wire trace's `<trace>.keylog`, or --keylog) go into
 * Decryption Secrets Blocks, each written before the first packet it decrypts: an input's when
 * the merge opens it, which is before its first event is written.
 *
 * Rotated traces (socktap_limits rotate_bytes/rotate_seconds) are pieces `<prefix>_<id><ext>`,
 * `<prefix>_<id>.1<ext>`, ... of one connection, each a whole trace with the same connection
 * record. Pieces are recognized by what they hold, not by their names (a collision or a move
 * into finished_dir can rename them): inputs whose first connection has the same id and
 * addresses and the same capture owner are chained in order of their first event, and at a
 * piece's end its flow passes to the next piece (pcap_input.h next_piece), so the connection
 * is one TCP flow (one handshake, continuous sequence numbers, FINs after the last piece)
 * whatever order the pieces were given in. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pcap/pcap_convert.h"

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

static int pcap_input_advance(struct pcap_input *in, struct pcap_writer *w,
                              const struct pcap_convert_opts *opts, FILE *err, bool *bad)
{
    const struct trace_conn *conn = NULL;
    int ret = trace_reader_next(in->reader, &in->ev, &conn);

    if (ret == 1) {
        in->cur = pcap_input_flow(in, conn, w, opts, err);
        return in->cur ? 1 : -ENOMEM;
    }
    ret = pcap_input_end(in, ret, w, opts, err, bad);
    return ret ? ret : 0;
}

/* Opens IN and reads its first event. Returns 1 (pending event), 0 (nothing to merge: empty,
 * or failed with the failure reported and *BAD set) or -errno (output/memory). */
static int pcap_input_open(struct pcap_input *in, struct pcap_writer *w,
                           const struct pcap_convert_opts *opts, FILE *err, bool *bad, size_t nopen)
{
    struct trace_reader_opts ro = {
        .format = opts->format,
        .conn_fields = opts->conn_fields,
        .name = in->path,
    };
    int r = trace_reader_open_path(in->path, &ro, &in->reader);
    if (r == -EMFILE || r == -ENFILE) {
        fprintf(err,
                "capture2pcap: error: %s: %s with %zu traces open: that many connections overlap "
                "in time here; raise the descriptor limit (ulimit -n) or convert fewer traces at "
                "once\n",
                in->path, strerror(-r), nopen);
        *bad = true;
        return 0;
    }
    if (r) {
        fprintf(err, "capture2pcap: error: %s: %s\n", in->path, strerror(-r));
        *bad = true;
        return 0;
    }
    r = pcap_input_advance(in, w, opts, err, bad);
    if (r <= 0)
        pcap_input_close(in);
    return r;
}

/* Order of the first pass: first event time, then input order. */
static int pcap_first_cmp(const void *pa, const void *pb)
{
    const struct pcap_input *a = *(struct pcap_input *const *)pa;
    const struct pcap_input *b = *(struct pcap_input *const *)pb;
    if (a->first_sec != b->first_sec)
        return a->first_sec < b->first_sec ? -1 : 1;
    if (a->first_nsec != b->first_nsec)
        return a->first_nsec < b->first_nsec ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* True if unopened input U's first event goes before open input T's pending one. */
static bool pcap_first_before(const struct pcap_input *u, const struct pcap_input *t)
{
    if (u->first_sec != t->ev.sec)
        return u->first_sec < t->ev.sec;
    if (u->first_nsec != t->ev.nsec)
        return u->first_nsec < t->ev.nsec;
    return u->index < t->index;
}

/* Order of the piece chaining: connection (id, addresses, capture owner), nothing else. */
static int pcap_piece_key_cmp(const struct pcap_input *a, const struct pcap_input *b)
{
    const struct trace_conn *x = &a->first_conn, *y = &b->first_conn;
    int c;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    if (a->ifindex != b->ifindex)
        return a->ifindex < b->ifindex ? -1 : 1;
    if ((c = strcmp(x->local.address, y->local.address)) ||
        (c = strcmp(x->remote.address, y->remote.address)))
        return c;
    if (x->local.port != y->local.port)
        return x->local.port < y->local.port ? -1 : 1;
    if (x->remote.port != y->remote.port)
        return x->remote.port < y->remote.port ? -1 : 1;
    if (x->local.present != y->local.present)
        return x->local.present ? 1 : -1;
    if (x->remote.present != y->remote.present)
        return x->remote.present ? 1 : -1;
    return 0;
}

/* The connection, then the first event's time. */
static int pcap_piece_cmp(const void *pa, const void *pb)
{
    int c = pcap_piece_key_cmp(*(struct pcap_input *const *)pa, *(struct pcap_input *const *)pb);
    return c ? c : pcap_first_cmp(pa, pb);
}

/* Chains the pieces of each rotated connection among the N inputs of ORDER (sorted here; the
 * caller sorts it again for the merge). A connection without an id (0) is never chained: ids
 * are what socktap writes, and two id-less traces with the same addresses are not one. */
static void pcap_chain_pieces(struct pcap_input **order, size_t n)
{
    qsort(order, n, sizeof(*order), pcap_piece_cmp);
    for (size_t i = 1; i < n; i++) {
        struct pcap_input *a = order[i - 1], *b = order[i];
        if (a->first_conn.id && !pcap_piece_key_cmp(a, b) && !pcap_is_stdin(a))
            a->next_piece = b;
    }
}

int pcap_convert(const char *const *paths, size_t n, struct pcap_writer *w,
                 const struct pcap_convert_opts *opts, FILE *err, struct pcap_convert_stats *stats)
{
    struct pcap_convert_stats st = {0};
    struct pcap_input *ins, **heap, **order;
    struct pcap_owners owners = {0};
    size_t nheap = 0, norder = 0, next = 0;
    bool bad = false;
    int ret = 0;

    ins = calloc(n ? n : 1, sizeof(*ins));
    heap = calloc(n ? n : 1, sizeof(*heap));
    order = calloc(n ? n : 1, sizeof(*order));
    if (!ins || !heap || !order) {
        ret = -ENOMEM;
        goto out_free;
    }
    if (opts->keylog) {
        if (!pcap_writer_is_pcapng(w)) {
            fprintf(err, "capture2pcap: error: --keylog needs pcapng output (--pcapng or a "
                         ".pcapng name)\n");
            ret = 1;
            goto out_free;
        }
        int r = pcap_embed_keylog(opts->keylog, false, w, err);
        if (r) {
            ret = r;
            goto out_free;
        }
    }
    /* first pass: each input's first event time; closed again, except stdin */
    for (size_t i = 0; i < n; i++) {
        ins[i].path = paths[i];
        ins[i].index = i;
        if (pcap_writer_is_pcapng(w)) {
            ret = pcap_input_interface(&ins[i], w, &owners);
            if (ret)
                goto out_free;
        }
        int r = pcap_input_open(&ins[i], w, opts, err, &bad, 1);
        if (r < 0) {
            ret = r;
            goto out_free;
        }
        if (r == 0)
            continue;
        ins[i].first_sec = ins[i].ev.sec;
        ins[i].first_nsec = ins[i].ev.nsec;
        ins[i].first_conn = ins[i].cur->conn;
        ins[i].has_first_conn = true;
        order[norder++] = &ins[i];
        if (!pcap_is_stdin(&ins[i]))
            pcap_input_close(&ins[i]);
    }
    pcap_chain_pieces(order, norder);
    qsort(order, norder, sizeof(*order), pcap_first_cmp);

    for (;;) {
        /* open the inputs whose first event comes before the next one to write */
        while (next < norder && (!nheap || pcap_first_before(order[next], heap[0]))) {
            struct pcap_input *in = order[next++];
            int r = pcap_input_secrets(in, w, opts, err, &bad);
            if (r < 0) {
                ret = r;
                goto out_free;
            }
            r = in->reader ? 1 : pcap_input_open(in, w, opts, err, &bad, nheap);
            if (r < 0) {
                ret = r;
                goto out_free;
            }
            if (r == 0)
                continue;
            /* sift up */
            size_t k = nheap++;
            heap[k] = in;
            while (k && pcap_input_before(heap[k], heap[(k - 1) / 2])) {
                struct pcap_input *t = heap[k];
                heap[k] = heap[(k - 1) / 2];
                heap[(k - 1) / 2] = t;
                k = (k - 1) / 2;
            }
        }
        if (!nheap)
            break;
        struct pcap_input *in = heap[0];
        ret = pcap_flow_event(&in->cur->flow, w, &in->ev);
        if (ret)
            goto out_free;
        st.events++;
        st.bytes += in->ev.len;
        ret = pcap_input_advance(in, w, opts, err, &bad);
        if (ret < 0)
            goto out_free;
        if (ret == 0) {
            pcap_input_close(in); /* done: its descriptor is free for the next input */
            heap[0] = heap[--nheap];
        }
        pcap_heap_down(heap, nheap, 0);
        ret = 0;
    }
    for (size_t i = 0; i < n; i++)
        st.connections += ins[i].nflows;
    ret = bad ? 1 : 0;

out_free:
    for (size_t i = 0; ins && i < n; i++)
        pcap_input_free(&ins[i]);
    pcap_owners_free(&owners);
    free(order);
    free(heap);
    heap = NULL;
    free(ins);
    ins = NULL;
    if (stats)
        *stats = st;
    return ret;
}

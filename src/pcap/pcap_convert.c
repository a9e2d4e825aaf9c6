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
 * the merge opens it, which is before its first event is written. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdint.h>
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
    uint32_t ifindex;  /* pcapng interface of the input's capture owner */
    int64_t first_sec; /* first event's time, from the first pass */
    int32_t first_nsec;
    struct trace_reader *reader; /* NULL while closed */
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

#define PCAP_NOTE_MAX 8192

static void pcap_addr_text(char *buf, size_t n, const struct trace_addr *a)
{
    if (!a->present)
        snprintf(buf, n, "(none)");
    else if (strchr(a->address, ':') && a->address[0] != '[')
        snprintf(buf, n, "[%s]:%u", a->address, a->port);
    else
        snprintf(buf, n, "%s:%u", a->address, a->port);
}

/* The first packet's comment: what an SRE needs to find the connection again (the id is the
 * one in socktap's log lines, [C42]). Later fields (SNI, ALPN, peer certificate) append here
 * once traces carry them. */
static void pcap_conn_note(char *buf, size_t n, const char *path, const struct trace_conn *c)
{
    char local[80], remote[80];

    pcap_addr_text(local, sizeof(local), &c->local);
    pcap_addr_text(remote, sizeof(remote), &c->remote);
    snprintf(buf, n, "socktap connection %llu; trace %s; local %s; remote %s",
             (unsigned long long)c->id, strcmp(path, "-") ? path : "(stdin)", local, remote);
}

/* Finds or creates the flow of CONN in IN. Returns it, or NULL when out of memory. */
static struct pcap_conn_flow *pcap_input_flow(struct pcap_input *in, const struct trace_conn *conn,
                                              struct pcap_writer *w,
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
    if (pcap_writer_is_pcapng(w)) {
        char note[PCAP_NOTE_MAX];
        pcap_conn_note(note, sizeof(note), in->path, conn);
        if (pcap_flow_annotate(&in->flows[0].flow, in->ifindex, note) != 0) {
            in->nflows--;
            memmove(in->flows, in->flows + 1, in->nflows * sizeof(*in->flows));
            return NULL;
        }
    }
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
        in->cur = pcap_input_flow(in, conn, w, opts, err);
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

static void pcap_input_close(struct pcap_input *in)
{
    trace_reader_free(in->reader);
    in->reader = NULL;
}

static void pcap_input_free(struct pcap_input *in)
{
    pcap_input_close(in);
    for (size_t i = 0; i < in->nflows; i++)
        pcap_flow_release(&in->flows[i].flow);
    free(in->flows);
    in->flows = NULL;
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

static bool pcap_is_stdin(const struct pcap_input *in)
{
    return !strcmp(in->path, "-");
}

#define PCAP_MAX_KEYLOG (64u << 20) /* a key log is ~1 KiB per connection */

/* Embeds the NSS key log PATH as a Decryption Secrets Block. MISSING_OK: a missing file is
 * nothing to do. Returns 0, 1 (a file problem, reported to ERR) or -errno (output). */
static int pcap_embed_keylog(const char *path, bool missing_ok, struct pcap_writer *w, FILE *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (missing_ok && errno == ENOENT)
            return 0;
        fprintf(err, "capture2pcap: error: key log %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int ret = buf ? 0 : -ENOMEM;
    while (!ret) {
        if (len == cap) {
            char *p = cap < PCAP_MAX_KEYLOG ? realloc(buf, cap * 2) : NULL;
            if (!p) {
                fprintf(err, "capture2pcap: error: key log %s: larger than %u MiB\n", path,
                        PCAP_MAX_KEYLOG >> 20);
                ret = 1;
                break;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(err, "capture2pcap: error: key log %s: %s\n", path, strerror(errno));
            ret = 1;
        }
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (!ret && len)
        ret = pcap_writer_secrets(w, PCAPNG_SECRETS_TLS_KEYLOG, buf, len);
    free(buf);
    return ret;
}

/* The key log a TLS wire trace has beside it, embedded before IN's first packet. */
static int pcap_input_secrets(const struct pcap_input *in, struct pcap_writer *w,
                              const struct pcap_convert_opts *opts, FILE *err, bool *bad)
{
    static bool warned;
    char path[4200];
    if (opts->no_secrets || pcap_is_stdin(in))
        return 0;
    int n = snprintf(path, sizeof(path), "%s.keylog", in->path);
    if (n < 0 || (size_t)n >= sizeof(path))
        return 0;
    if (!pcap_writer_is_pcapng(w)) {
        if (!warned && access(path, F_OK) == 0) {
            warned = true;
            fprintf(err,
                    "capture2pcap: warning: %s has TLS secrets, which classic pcap cannot hold: "
                    "write .pcapng to embed them (or pass it to tshark -o tls.keylog_file:)\n",
                    path);
        }
        return 0;
    }
    int r = pcap_embed_keylog(path, true, w, err);
    if (r == 1)
        *bad = true;
    return r < 0 ? r : 0;
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

size_t pcap_convert_owner(const char *path, char *buf, size_t n)
{
    const char *base = strrchr(path, '/');
    size_t len = strlen(path), end, i;

    base = base ? base + 1 : path;
    if (strcmp(path, "-") == 0)
        return (size_t)snprintf(buf, n, "stdin");
    /* a compressed trace's suffix (socktap_compression: "ingress_42.pb.zst") */
    if (len - (size_t)(base - path) > 4 &&
        (!strcmp(path + len - 4, ".zst") || !strcmp(path + len - 4, ".lz4")))
        len -= 4;
    end = len;
    /* extension: ".pb", ".pb_text", ".pb_length_delimited", ".json" (letters and '_') */
    for (i = len;
         i > (size_t)(base - path) && (isalpha((unsigned char)path[i - 1]) || path[i - 1] == '_');
         i--)
        ;
    if (i < len && i > (size_t)(base - path) && path[i - 1] == '.')
        end = i - 1;
    size_t noext = end;
    /* socktap's collision suffix ".<n>" (see docs/capture.md), then the id "_<id>" */
    for (i = end; i > (size_t)(base - path) && isdigit((unsigned char)path[i - 1]); i--)
        ;
    if (i < end && i > (size_t)(base - path) && path[i - 1] == '.')
        end = i - 1;
    for (i = end; i > (size_t)(base - path) && isdigit((unsigned char)path[i - 1]); i--)
        ;
    if (i < end && i > (size_t)(base - path) && path[i - 1] == '_')
        end = i - 1;
    else
        end = noext; /* not <prefix>_<id>: the whole name is the owner */
    return (size_t)snprintf(buf, n, "%.*s", (int)end, path);
}

struct pcap_owner {
    char *prefix; /* owned */
    uint32_t ifindex;
};

struct pcap_owners {
    struct pcap_owner *v;
    size_t n, cap;
};

static void pcap_owners_free(struct pcap_owners *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->v[i].prefix);
    free(o->v);
    o->v = NULL;
}

/* Sets IN's interface: the one of its owner, declared on W the first time it is seen. */
static int pcap_input_interface(struct pcap_input *in, struct pcap_writer *w, struct pcap_owners *o)
{
    char prefix[PCAP_NOTE_MAX], desc[PCAP_NOTE_MAX + 64];
    const char *name;
    int ret;

    pcap_convert_owner(in->path, prefix, sizeof(prefix));
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->v[i].prefix, prefix) == 0) {
            in->ifindex = o->v[i].ifindex;
            return 0;
        }
    }
    if (o->n == o->cap) {
        size_t cap = o->cap ? 2 * o->cap : 4;
        struct pcap_owner *p = realloc(o->v, cap * sizeof(*p));
        if (!p)
            return -ENOMEM;
        o->v = p;
        o->cap = cap;
    }
    name = strrchr(prefix, '/');
    name = name && name[1] ? name + 1 : prefix;
    snprintf(desc, sizeof(desc), "socktap capture, trace prefix %s", prefix);
    ret = pcap_writer_add_interface(w, name, desc, &in->ifindex);
    if (ret)
        return ret;
    o->v[o->n].prefix = strdup(prefix);
    if (!o->v[o->n].prefix)
        return -ENOMEM;
    o->v[o->n++].ifindex = in->ifindex;
    return 0;
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
        order[norder++] = &ins[i];
        if (!pcap_is_stdin(&ins[i]))
            pcap_input_close(&ins[i]);
    }
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

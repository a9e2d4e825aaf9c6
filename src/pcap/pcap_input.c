/* Per-input state shared by the merge (pcap_convert.c) and the live follower
 * (pcap_follow.c); see pcap_input.h. Moved out of pcap_convert.c unchanged so both framings
 * stay one code path. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pcap/pcap_input.h"

bool pcap_conn_same(const struct trace_conn *a, const struct trace_conn *b)
{
    return a->id == b->id && a->local.present == b->local.present &&
           a->remote.present == b->remote.present && a->local.port == b->local.port &&
           a->remote.port == b->remote.port && strcmp(a->local.address, b->local.address) == 0 &&
           strcmp(a->remote.address, b->remote.address) == 0;
}

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
struct pcap_conn_flow *pcap_input_flow(struct pcap_input *in, const struct trace_conn *conn,
                                       struct pcap_writer *w, const struct pcap_convert_opts *opts,
                                       FILE *err)
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

/* IN ends: its first connection's flow continues in IN's next piece (sequence numbers,
 * handshake and comment already written), unless that piece has already written packets of its
 * own (pieces overlapping in time: not socktap's, which end before the next begins). */
static void pcap_input_pass_on(struct pcap_input *in)
{
    struct pcap_input *next = in->next_piece;
    for (size_t i = 0; i < in->nflows; i++) {
        if (!pcap_conn_same(&in->flows[i].conn, &next->first_conn))
            continue;
        for (size_t j = 0; j < next->nflows; j++) {
            struct pcap_conn_flow *nf = &next->flows[j];
            if (!pcap_conn_same(&nf->conn, &next->first_conn) || nf->flow.opened)
                continue;
            pcap_flow_release(&nf->flow);
            nf->flow = in->flows[i].flow; /* moved, with whatever it owns */
            in->nflows--;
            memmove(in->flows + i, in->flows + i + 1, (in->nflows - i) * sizeof(*in->flows));
            if (in->cur == &in->flows[i])
                in->cur = NULL;
            return;
        }
        return;
    }
}

/* Finishes every flow of IN (FINs with --tcp-handshake). */
int pcap_input_finish(struct pcap_input *in, struct pcap_writer *w)
{
    if (in->next_piece)
        pcap_input_pass_on(in);
    for (size_t i = 0; i < in->nflows; i++) {
        int ret = pcap_flow_finish(&in->flows[i].flow, w);
        if (ret)
            return ret;
    }
    return 0;
}

int pcap_input_end(struct pcap_input *in, int rc, struct pcap_writer *w,
                   const struct pcap_convert_opts *opts, FILE *err, bool *bad)
{
    if (rc == -ENODATA) {
        fprintf(err, "capture2pcap: %s: %s%s\n", opts->allow_truncated ? "warning" : "error",
                trace_reader_error(in->reader),
                opts->allow_truncated ? " (converted up to there)"
                                      : " (converted up to there; --allow-truncated accepts it)");
        if (!opts->allow_truncated)
            *bad = true;
    } else if (rc < 0) {
        fprintf(err, "capture2pcap: error: %s\n", trace_reader_error(in->reader));
        *bad = true;
    }
    if (trace_reader_report_unknown(in->reader, "capture2pcap", opts->allow_unknown, err))
        *bad = true;
    return pcap_input_finish(in, w);
}

void pcap_input_close(struct pcap_input *in)
{
    trace_reader_free(in->reader);
    in->reader = NULL;
}

void pcap_input_free(struct pcap_input *in)
{
    pcap_input_close(in);
    for (size_t i = 0; i < in->nflows; i++)
        pcap_flow_release(&in->flows[i].flow);
    free(in->flows);
    in->flows = NULL;
}

bool pcap_is_stdin(const struct pcap_input *in)
{
    return !strcmp(in->path, "-");
}

#define PCAP_MAX_KEYLOG (64u << 20) /* a key log is ~1 KiB per connection */

/* Embeds the NSS key log PATH as a Decryption Secrets Block. MISSING_OK: a missing file is
 * nothing to do. Returns 0, 1 (a file problem, reported to ERR) or -errno (output). */
int pcap_embed_keylog(const char *path, bool missing_ok, struct pcap_writer *w, FILE *err)
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
int pcap_input_secrets(const struct pcap_input *in, struct pcap_writer *w,
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

size_t pcap_input_owner(const char *path, char *buf, size_t n)
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
    /* socktap's suffixes ".<n>" (see docs/capture.md: a collision, a rotated trace's piece,
     * a clash in finished_dir, in any number), then the id "_<id>" */
    for (;;) {
        for (i = end; i > (size_t)(base - path) && isdigit((unsigned char)path[i - 1]); i--)
            ;
        if (!(i < end && i > (size_t)(base - path) && path[i - 1] == '.'))
            break;
        end = i - 1;
    }
    for (i = end; i > (size_t)(base - path) && isdigit((unsigned char)path[i - 1]); i--)
        ;
    if (i < end && i > (size_t)(base - path) && path[i - 1] == '_')
        end = i - 1;
    else
        end = noext; /* not <prefix>_<id>: the whole name is the owner */
    return (size_t)snprintf(buf, n, "%.*s", (int)end, path);
}

void pcap_owners_free(struct pcap_owners *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->v[i].prefix);
    free(o->v);
    o->v = NULL;
}

/* Sets IN's interface: the one of its owner, declared on W the first time it is seen. */
int pcap_input_interface(struct pcap_input *in, struct pcap_writer *w, struct pcap_owners *o)
{
    char prefix[PCAP_NOTE_MAX], desc[PCAP_NOTE_MAX + 64];
    const char *name;
    int ret;

    pcap_input_owner(in->path, prefix, sizeof(prefix));
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

/* libFuzzer driver for the readers' follow mode (capture2pcap --follow): the input is a trace
 * (format detected) fed to a follow reader in pseudo-random pieces through a memfd, as a
 * writer appending to it would, with the reader polled after every piece; then the writer is
 * "done" (trace_reader_set_follow false) and the rest is read. The events and the final result
 * must be exactly those of reading the whole input at once: same count, directions, lengths,
 * payload bytes, and the same return code and error message; on a corrupt compressed input, the
 * events both decoded (decoder_error). The piece sizes come from a generator seeded by the
 * input, so a crash replays exactly.
 * Bugs found: crashes, hangs, leaks, and any divergence between follow and whole reads. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "trace/trace_reader.h"

#define FUZZ_MAX_EVENT (1u << 20)

#define FUZZ_PREFIXES 4096

struct fuzz_sum {
    uint64_t events, bytes, hash;
    uint64_t prefix[FUZZ_PREFIXES]; /* hash after each of the first events */
    int rc;
    char err[512];
};

static void fuzz_add(struct fuzz_sum *s, const struct trace_event *ev)
{
    s->events++;
    s->bytes += ev->len;
    s->hash = s->hash * 31 + (uint64_t)ev->dir * 7 + (uint64_t)ev->sec + ev->end_stream;
    for (int i = 0; i < ev->iovcnt; i++) {
        const uint8_t *p = ev->iov[i].iov_base;
        for (size_t k = 0; k < ev->iov[i].iov_len; k++)
            s->hash = (s->hash ^ p[k]) * 1099511628211ull;
    }
    if (s->events <= FUZZ_PREFIXES)
        s->prefix[s->events - 1] = s->hash;
}

/* A corrupt compressed input (the decoder's error on either side). zstd's streaming API returns
 * an error without the bytes it decoded in the same call, and which checks fire depends on how
 * much input and output room each call had, so where a corrupt zstd stream stops (and why) can
 * differ between reading it whole and in pieces; what both decoded must still be equal. */
static bool decoder_error(const struct fuzz_sum *s)
{
    return s->rc == -EBADMSG &&
           (strstr(s->err, "corrupt zstd data") || strstr(s->err, "corrupt lz4 data"));
}

static void fuzz_end(struct fuzz_sum *s, const struct trace_reader *r, int rc)
{
    s->rc = rc;
    snprintf(s->err, sizeof(s->err), "%s", trace_reader_error(r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace_reader_opts opts = {.max_event = FUZZ_MAX_EVENT, .name = "fuzz.pb"};
    struct fuzz_sum whole = {0}, fol = {0};
    struct trace_reader *r;
    struct trace_event ev;
    int rc;

    /* whole */
    FILE *f = size ? fmemopen((void *)data, size, "rb") : fopen("/dev/null", "rb");
    if (!f)
        return 0;
    if (trace_reader_open_file(f, &opts, &r) != 0)
        abort();
    while ((rc = trace_reader_next(r, &ev, NULL)) == 1)
        fuzz_add(&whole, &ev);
    fuzz_end(&whole, r, rc);
    trace_reader_free(r);
    fclose(f);

    /* followed: a memfd written through one descriptor, read through another */
    int wfd = memfd_create("follow", MFD_CLOEXEC);
    if (wfd < 0)
        return 0;
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", wfd);
    f = fopen(path, "rb");
    if (!f) {
        close(wfd);
        return 0;
    }
    opts.follow = true;
    if (trace_reader_open_file(f, &opts, &r) != 0)
        abort();
    uint64_t seed = size * 2654435761u + (size ? data[0] : 0);
    size_t off = 0;
    rc = -EAGAIN;
    while (off < size && rc == -EAGAIN) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t step = 1 + (size_t)((seed >> 33) % ((seed >> 20) & 1 ? 7 : 5000));
        if (step > size - off)
            step = size - off;
        if (write(wfd, data + off, step) != (ssize_t)step)
            abort();
        off += step;
        while ((rc = trace_reader_next(r, &ev, NULL)) == 1)
            fuzz_add(&fol, &ev);
        if (rc == -EAGAIN && trace_reader_error(r)[0])
            abort(); /* waiting is not an error */
    }
    if (rc == -EAGAIN) {
        trace_reader_set_follow(r, false);
        while ((rc = trace_reader_next(r, &ev, NULL)) == 1)
            fuzz_add(&fol, &ev);
    }
    fuzz_end(&fol, r, rc);
    trace_reader_free(r);
    fclose(f);
    close(wfd);
    /* E2BIG: follow mode refuses an unknown field it would have to hold whole; else equal */
    if (fol.rc == -E2BIG && whole.rc != -E2BIG)
        return 0;
    if (whole.rc == fol.rc && (decoder_error(&whole) || decoder_error(&fol))) {
        uint64_t n = whole.events < fol.events ? whole.events : fol.events;
        if (n && n <= FUZZ_PREFIXES && whole.prefix[n - 1] != fol.prefix[n - 1]) {
            fprintf(stderr, "follow diverges before a decoder error: event %llu differs\n",
                    (unsigned long long)n);
            abort();
        }
        return 0;
    }
    if (whole.events != fol.events || whole.bytes != fol.bytes || whole.hash != fol.hash ||
        whole.rc != fol.rc || strcmp(whole.err, fol.err) != 0) {
        fprintf(stderr, "follow diverges: whole %llu ev rc %d '%s', followed %llu ev rc %d '%s'\n",
                (unsigned long long)whole.events, whole.rc, whole.err,
                (unsigned long long)fol.events, fol.rc, fol.err);
        abort();
    }
    return 0;
}

/* libFuzzer driver for the trace readers (untrusted input: trace files come from disks, other
 * hosts, crashed writers). One source, built once per format: FUZZ_FORMAT is a
 * TRACE_IN_* value (TRACE_IN_AUTO exercises detection). Every event read is also pushed
 * through capture2pcap's flow state and frame builder into /dev/null, with --tcp-handshake and
 * a small MSS so splitting and FIN paths run too, and the reader's echo (socktap-trace dump)
 * is on: that covers the whole path from untrusted bytes to packets.
 * Bugs found: crashes, hangs (libFuzzer -timeout), leaks (LeakSanitizer at exit of each run). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "pcap/pcap_flow.h"
#include "pcap/pcap_writer.h"
#include "trace/trace_reader.h"

#ifndef FUZZ_FORMAT
#define FUZZ_FORMAT TRACE_IN_AUTO
#endif

/* Small enough that a length field cannot make one event cost the fuzzer's RSS budget. */
#define FUZZ_MAX_EVENT (1u << 20)
#define FUZZ_MAX_FLOWS 8

static FILE *fuzz_devnull;
static struct pcap_writer *fuzz_writer;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct pcap_writer_opts wo = {.ethernet = true};

    fuzz_devnull = fopen("/dev/null", "w");
    if (!fuzz_devnull || pcap_writer_open("/dev/null", &wo, &fuzz_writer, NULL, 0) != 0)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct trace_reader_opts opts = {
        .format = FUZZ_FORMAT, .max_event = FUZZ_MAX_EVENT, .name = "fuzz"};
    struct pcap_flow_opts fo = {.handshake = true, .mss = 536};
    const struct trace_conn *flow_conn[FUZZ_MAX_FLOWS];
    struct pcap_flow flows[FUZZ_MAX_FLOWS];
    size_t nflows = 0;
    struct trace_reader *r;
    struct trace_event ev;
    const struct trace_conn *conn;
    FILE *f;
    int ret;

    /* fmemopen rejects size 0 on some libcs; an empty file is still worth reading. */
    f = size ? fmemopen((void *)data, size, "rb") : fopen("/dev/null", "rb");
    if (!f)
        return 0;
    if (trace_reader_open_file(f, &opts, &r) != 0)
        goto out_close_file;
    trace_reader_set_echo(r, fuzz_devnull);
    while ((ret = trace_reader_next(r, &ev, &conn)) == 1) {
        size_t i;
        if (ev.len > FUZZ_MAX_EVENT || (ev.len && !ev.iov))
            abort(); /* the reader broke its own contract */
        for (i = 0; i < nflows && flow_conn[i] != conn; i++)
            ;
        if (i == nflows) {
            if (nflows == FUZZ_MAX_FLOWS || !conn)
                continue;
            pcap_flow_init(&flows[i], conn, &fo, NULL);
            flow_conn[nflows++] = conn;
        }
        if (pcap_flow_event(&flows[i], fuzz_writer, &ev) != 0)
            abort(); /* any event must be frameable */
    }
    for (size_t i = 0; i < nflows; i++)
        if (pcap_flow_finish(&flows[i], fuzz_writer) != 0)
            abort();
    if (ret < 0 && trace_reader_error(r)[0] == '\0')
        abort(); /* every error must say where */
    trace_reader_free(r);
out_close_file:
    fclose(f);
    return 0;
}

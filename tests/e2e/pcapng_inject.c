/* pcapng_inject KEYLOG IN.pcap OUT.pcapng: test driver for pcapng_writer's Decryption Secrets
 * Block. Copies IN's packets (classic pcap, read with libpcap) into a pcapng with one
 * interface and, before the first packet, a DSB holding KEYLOG's NSS key-log lines, so the
 * end-to-end test can check that tshark decrypts with our DSB and no key-log preference.
 * capture2pcap does not call the DSB API yet (TLS wire traces will). */
#include <errno.h>
#include <fcntl.h>
#include <pcap/pcap.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pcap/pcapng_writer.h"

static int inject_fd_sink(void *ctx, const void *buf, size_t len)
{
    return fwrite(buf, 1, len, ctx) == len ? 0 : -EIO;
}

int main(int argc, char **argv)
{
    static char keys[1 << 20];
    const struct pcapng_section sec = {.userappl = "socktap pcapng_inject"};
    struct pcapng_writer *w;
    struct pcap_pkthdr *h;
    const u_char *d;
    char eb[PCAP_ERRBUF_SIZE];
    uint32_t idx;
    size_t nkeys;
    FILE *kf, *out;
    pcap_t *in;

    if (argc != 4) {
        fprintf(stderr, "usage: pcapng_inject KEYLOG IN.pcap OUT.pcapng\n");
        return 2;
    }
    kf = fopen(argv[1], "rb");
    if (!kf)
        return perror(argv[1]), 1;
    nkeys = fread(keys, 1, sizeof(keys), kf);
    fclose(kf);
    in = pcap_open_offline_with_tstamp_precision(argv[2], PCAP_TSTAMP_PRECISION_NANO, eb);
    if (!in)
        return fprintf(stderr, "%s\n", eb), 1;
    out = fopen(argv[3], "wbx");
    if (!out)
        return perror(argv[3]), 1;
    const struct pcapng_interface ifc = {
        .linktype =
            pcap_datalink(in) == DLT_EN10MB ? PCAPNG_LINKTYPE_ETHERNET : PCAPNG_LINKTYPE_RAW,
        .snaplen = (uint32_t)pcap_snapshot(in),
        .name = "inject",
    };
    if (pcapng_writer_new(inject_fd_sink, out, 0, &sec, &w) != 0 ||
        pcapng_writer_add_interface(w, &ifc, &idx) != 0 ||
        pcapng_writer_secrets(w, PCAPNG_SECRETS_TLS_KEYLOG, keys, nkeys) != 0)
        return fprintf(stderr, "pcapng_inject: write failed\n"), 1;
    while (pcap_next_ex(in, &h, &d) == 1)
        if (pcapng_writer_packet(w, idx, h->ts.tv_sec, (int32_t)h->ts.tv_usec, PCAPNG_DIR_UNKNOWN,
                                 NULL, d, h->caplen, h->len) != 0)
            return fprintf(stderr, "pcapng_inject: write failed\n"), 1;
    if (pcapng_writer_flush(w) != 0 || fclose(out) != 0)
        return fprintf(stderr, "pcapng_inject: write failed\n"), 1;
    pcapng_writer_free(w);
    pcap_close(in);
    return 0;
}

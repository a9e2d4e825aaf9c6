/* libFuzzer driver for the TLS listener fed arbitrary bytes as a client: the listener's TLS
 * transport socket is built exactly as a worker builds it (config_load_string of a listener
 * with an inline certificate and ALPN, then ts_config_create on an accepted fd), here over one
 * end of a socketpair whose other end writes the input and half-closes. So the bytes run
 * through socktap's BIO, handshake driver, ALPN/SNI callbacks and error mapping, not only
 * OpenSSL's record layer.
 * Checks beyond sanitizers: the socket finishes (TS_CLOSE or end of stream) within a bounded
 * number of calls on input that has ended (no spin), and a TS_CLOSE carries a -errno.
 * Rejected: memory BIOs around a bare SSL_CTX (would skip tls.c, the code we own). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "config/config.h"
#include "transport/transport_socket.h"
#include "transport/ts_registry.h"

/* A throwaway self-signed P-256 certificate for CN=fuzz.test: test data, trusted by nothing. */
static const char fuzz_yaml[] =
    "static_resources:\n"
    "  clusters:\n"
    "  - name: backend\n"
    "    hosts: [{socket_address: {address: 127.0.0.1, port_value: 9}}]\n"
    "  listeners:\n"
    "  - address: {socket_address: {address: 127.0.0.1, port_value: 10000}}\n"
    "    filter_chains:\n"
    "    - filters: [{name: envoy.tcp_proxy, config: {stat_prefix: p, cluster: backend}}]\n"
    "      transport_socket:\n"
    "        name: envoy.transport_sockets.tls\n"
    "        config:\n"
    "          common_tls_context:\n"
    "            alpn_protocols: [h2, http/1.1]\n"
    "            tls_certificates:\n"
    "            - certificate_chain:\n"
    "                inline_string: |\n"
    "                  -----BEGIN CERTIFICATE-----\n"
    "                  MIIBfjCCASWgAwIBAgIUdyx8Lfq7lheaKficveH4TAOHrJ0wCgYIKoZIzj0EAwIw\n"
    "                  FDESMBAGA1UEAwwJZnV6ei50ZXN0MCAXDTI2MTEyNzAxMDMwNFoYDzIxMjYxMTAz\n"
    "                  MDEwMzA0WjAUMRIwEAYDVQQDDAlmdXp6LnRlc3QwWTATBgcqhkjOPQIBBggqhkjO\n"
    "                  PQMBBwNCAAT9Q/IjN0mwbOpS3QkT0QM/BnZ3SseDI/Mfd019T3QLmPtvcrOvGkFF\n"
    "                  edd+zBUDiAKlcQEo3OzRfNgZibEKFdExo1MwUTAdBgNVHQ4EFgQUT6EctvP8ay/T\n"
    "                  YLPle4i/91RDI4gwHwYDVR0jBBgwFoAUT6EctvP8ay/TYLPle4i/91RDI4gwDwYD\n"
    "                  VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNHADBEAiAG1iE1WWKx64/4+B6LOIb8\n"
    "                  4WHMTfMa6QL64ZL+oiYruQIgR1fb/cYlTsFWG9En4QeNwvk1Y2vSoel7THxmC3B9\n"
    "                  3i0=\n"
    "                  -----END CERTIFICATE-----\n"
    "              private_key:\n"
    "                inline_string: |\n"
    "                  -----BEGIN PRIVATE KEY-----\n"
    "                  MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg5tG9MeJsPMTQxwkw\n"
    "                  8Rzr/eRvuzsWA9wls7dZr3RPWCmhRANCAAT9Q/IjN0mwbOpS3QkT0QM/BnZ3SseD\n"
    "                  I/Mfd019T3QLmPtvcrOvGkFFedd+zBUDiAKlcQEo3OzRfNgZibEKFdEx\n"
    "                  -----END PRIVATE KEY-----\n";

/* Calls per input: each read drains what the socketpair holds, so a healthy socket finishes
 * in a handful; hitting the cap means it neither progressed nor gave up. */
#define FUZZ_MAX_CALLS 64

static struct socktap_config *fuzz_cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cfg_err err = {0};

    ts_registry_init();
    if (config_load_string("fuzz-tls.yaml", fuzz_yaml, sizeof(fuzz_yaml) - 1, &fuzz_cfg, &err)) {
        fprintf(stderr, "fuzz_tls_listener: %s\n", err.msg);
        abort();
    }
    return 0;
}

/* Writes as much of DATA as the pair takes; the rest is dropped (a client that gave up). */
static void fuzz_feed(int fd, const uint8_t *data, size_t size)
{
    while (size) {
        ssize_t n = send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0)
            break;
        data += n;
        size -= (size_t)n;
    }
    shutdown(fd, SHUT_WR);
}

/* Reads and discards what the server sent (ServerHello, alerts) so its writes never block. */
static void fuzz_drain(int fd)
{
    char sink[16384];
    while (recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ts_conn_info info = {.conn_id = 1};
    struct transport_socket *ts = NULL;
    struct evbuffer *in, *out;
    int sv[2], calls;
    bool done = false;

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        abort();
    if (fcntl(sv[0], F_SETFL, O_NONBLOCK) != 0)
        abort();
    in = evbuffer_new();
    out = evbuffer_new();
    if (!in || !out)
        abort();
    info.fd = sv[0];
    if (ts_config_create(&fuzz_cfg->listeners[0].chains[0].ts, &info, &ts) != 0)
        abort();
    fuzz_feed(sv[1], data, size);
    if (ts_on_connected(ts) != 0)
        done = true;
    for (calls = 0; !done && calls < FUZZ_MAX_CALLS; calls++) {
        struct ts_io_result r = ts_do_read(ts, in, 65536);
        fuzz_drain(sv[1]);
        if (r.action == TS_CLOSE) {
            if (r.err >= 0)
                abort(); /* a close must say why */
            break;
        }
        if (r.end_stream)
            break;
        /* Once the handshake is through, answer so the write path runs over the same SSL. */
        if (evbuffer_get_length(in) && ts_is_ready(ts)) {
            evbuffer_add_buffer(out, in);
            r = ts_do_write(ts, out, false);
            fuzz_drain(sv[1]);
            if (r.action == TS_CLOSE)
                break;
        }
    }
    if (calls == FUZZ_MAX_CALLS)
        abort(); /* input ended long ago: the socket should have finished */
    ts_close(ts, TS_CLOSE_NORMAL);
    ts_destroy(ts);
    evbuffer_free(in);
    evbuffer_free(out);
    close(sv[1]);
    return 0;
}

/* capture_wire: the TLS socket's wire capture (socktap extension `socktap_wire_capture`): the
 * TLS records exactly as they crossed the socket, as a streamed v3 trace `<prefix>_<id><ext>`,
 * and the connection's NSS key-log lines in `<trace file>.keylog` beside it (0600, created with
 * the first line), which capture2pcap --pcapng embeds as a Decryption Secrets Block so Wireshark
 * decrypts the records with no key file. Recording is capture_rec's, so the guarantees are the
 * capture socket's (valid prefix, bounded backlog, the connection waits rather than the trace
 * losing bytes). */
#ifndef SOCKTAP_TRANSPORT_CAPTURE_WIRE_H
#define SOCKTAP_TRANSPORT_CAPTURE_WIRE_H

#include "transport/tls.h"

/* The implementation capture_register_factories installs with tls_wire_register. */
extern const struct tls_wire_ops capture_wire_ops;

#endif

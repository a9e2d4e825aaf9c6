/* libFuzzer driver for the generic protobuf text-format and JSON parsers (pbcodec.h) on their
 * own, outside the trace readers' streaming front end: a whole top-level message of one of the
 * trace types, chosen by the first input byte, parsed by pbtext_parse_body (FUZZ_JSON unset) or
 * pbjson_parse_object (FUZZ_JSON=1).
 * Checks beyond sanitizers: an error always has a message; whatever parses is printed back and
 * must re-parse to the same message (compared by packed bytes), which catches printers that
 * escape, quote or base64-encode something the parser reads differently. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/data/tap/v2alpha/capture.pb-c.h"
#include "envoy/data/tap/v3/transport.pb-c.h"
#include "envoy/data/tap/v3/wrapper.pb-c.h"
#include "trace/pbcodec.h"

#ifndef FUZZ_JSON
#define FUZZ_JSON 0
#endif
#define FUZZ_MAX_TOKEN (1u << 20)

static const ProtobufCMessageDescriptor *fuzz_desc(uint8_t sel)
{
    switch (sel & 3) {
    case 0:
        return &envoy__data__tap__v2alpha__trace__descriptor;
    case 1:
        return &envoy__data__tap__v3__trace_wrapper__descriptor;
    case 2:
        return &envoy__data__tap__v3__socket_event__descriptor;
    default:
        return &envoy__data__tap__v3__connection__descriptor;
    }
}

/* Parses LEN bytes at P as one DESC message. Returns 0 with *OUT (caller frees) or -errno. */
static int fuzz_parse(const uint8_t *p, size_t len, const ProtobufCMessageDescriptor *desc,
                      ProtobufCMessage **out)
{
    struct pblex lx;
    int rc;

    *out = NULL;
    pblex_init(&lx, NULL, p, len, FUZZ_JSON, FUZZ_MAX_TOKEN);
    if ((rc = pblex_next(&lx)))
        goto out_fini;
    if (FUZZ_JSON) {
        if (!pblex_is(&lx, '{')) {
            rc = pblex_fail(&lx, "expected '{'");
            goto out_fini;
        }
        if ((rc = pbjson_parse_object(&lx, desc, out)))
            goto out_fini;
        if ((rc = pblex_next(&lx)) == 0 && lx.tok != PBLEX_EOF)
            rc = pblex_fail(&lx, "trailing data");
    } else {
        rc = pbtext_parse_body(&lx, desc, 0, out);
    }
    if (rc) {
        protobuf_c_message_free_unpacked(*out, NULL);
        *out = NULL;
    }
out_fini:
    if (rc && lx.err[0] == '\0')
        abort(); /* every error must say what and where */
    pblex_fini(&lx);
    return rc;
}

static uint8_t *fuzz_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    if (!b)
        abort();
    if (protobuf_c_message_pack(m, b) != *len)
        abort();
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *m = NULL, *again = NULL;
    struct tbuf out = {0};
    uint8_t *a, *b;
    size_t alen, blen;

    if (size < 1)
        return 0;
    desc = fuzz_desc(data[0]);
    if (fuzz_parse(data + 1, size - 1, desc, &m) != 0)
        return 0;
    if ((FUZZ_JSON ? pbjson_print(&out, m, 0, true) : pbtext_print(&out, m, 0)) != 0)
        abort();
    if (fuzz_parse(out.data, out.len, desc, &again) != 0)
        abort(); /* the printer wrote something its own parser rejects */
    a = fuzz_pack(m, &alen);
    b = fuzz_pack(again, &blen);
    if (alen != blen || memcmp(a, b, alen) != 0)
        abort(); /* print + parse changed the message */
    free(a);
    free(b);
    protobuf_c_message_free_unpacked(again, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    tbuf_free(&out);
    return 0;
}

/* libFuzzer driver for the admin's POST /tap body (admin_tap.c): the bytes through libyaml and
 * the node tree into tap_admin_request_parse, as the admin reads a TapRequest's tap_config. The
 * body comes over the network (the admin is loopback by default, but any local user can reach
 * it), so it is untrusted input.
 * Checks beyond sanitizers: a refused request always says why; an accepted one is an admin sink
 * the admin can serve (a format it writes, max_traces > 0 when buffered).
 * Rejected: driving the whole HTTP handler (an event loop per input for the same parser). */
#include <stdint.h>
#include <stdlib.h>

#include "cfgtree/cfg_node.h"
#include "core/stats.h"
#include "transport/ts_registry.h"
#ifdef SOCKTAP_CAPTURE
#include "transport/capture.h"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef SOCKTAP_CAPTURE
    struct cfg_err err = {0};
    struct cfg_doc *doc = NULL;
    if (cfg_doc_load_string("/tap request", (const char *)data, size, &doc, &err) == 0) {
        struct ts_parse_ctx ctx = {.err = &err, .doc = doc};
        struct cfg_path p = CFG_PATH_KEY(NULL, "tap_config");
        const struct cfg_node *tc = cfg_map_get(doc->root, "tap_config");
        struct tap_admin_request rq;
        if (tc && cfg_expect_map(&err, doc, tc, &p) == 0 &&
            tap_admin_request_parse(&ctx, tc, &p, &rq) == 0) {
            if (rq.enc.format == TRACE_FMT_PROTO_BINARY || rq.enc.format == TRACE_FMT_PROTO_TEXT ||
                (rq.buffered && rq.max_traces == 0))
                abort();
        } else if (tc && (!err.set || !err.msg[0])) {
            abort(); /* every rejection must say why */
        }
    }
    cfg_doc_free(doc);
    stats_reset();
#else
    (void)data;
    (void)size;
#endif
    return 0;
}

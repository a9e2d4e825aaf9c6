/* The built-in transport sockets. Each kind adds its one line here (strong references, so the
 * static library keeps every factory). */
#include "transport/raw.h"
#include "transport/tls.h"
#include "transport/ts_registry.h"
#ifdef SOCKTAP_CAPTURE
#include "transport/capture.h"
#endif

void ts_registry_init(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    ts_registry_add(&raw_socket_factory);
    ts_registry_add(&tls_socket_factory);
#ifdef SOCKTAP_CAPTURE
    capture_register_factories();
#endif
}

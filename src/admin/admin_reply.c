/* admin_reply.c: see admin_reply.h. */
#include "admin/admin_reply.h"

#include <stdarg.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

void admin_reply_textf(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...)
{
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(b, fmt, ap);
    va_end(ap);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply(req, code, reason, b);
    evbuffer_free(b);
}

size_t admin_reply_unsent(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

void admin_reply_closed(struct evhttp_request *req)
{
    /* libevent 2.1 http.c, evhttp_connection_incoming_fail: a reply not finished by the user
     * ("!req->userdone") is detached ("req->evcon = NULL") and left to us */
    if (!evhttp_request_get_connection(req))
        evhttp_send_reply_end(req);
}

/* admin_reply: the reply helpers the admin's endpoints share: a short text reply, and the two
 * facts a streamed reply (live pcapng, /tap) needs about its client's connection. Main thread
 * only, as evhttp. */
#ifndef SOCKTAP_ADMIN_ADMIN_REPLY_H
#define SOCKTAP_ADMIN_ADMIN_REPLY_H

#include <stddef.h>

#include <event2/http.h>

/* Answers REQ (borrowed; evhttp frees it after the reply) with CODE, REASON (static) and the
 * formatted text/plain body; a 500 when memory is out. */
void admin_reply_textf(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5), nonnull(1, 3, 4)));

/* Bytes of a streamed reply that EVCON (borrowed; may be NULL: 0) has not sent yet: what a slow
 * client leaves in socktap's memory, to be kept bounded by not producing more. */
size_t admin_reply_unsent(struct evhttp_connection *evcon);

/* From a connection's close callback: ends REQ, a reply in progress, if evhttp detached it from
 * the closing connection (then it is ours, and ending it frees it); one still attached is freed
 * with the connection. REQ must not be used afterwards. */
void admin_reply_closed(struct evhttp_request *req) __attribute__((nonnull));

#endif

/* Access log formats: Envoy's substitution format strings (%START_TIME%, %BYTES_RECEIVED%, ...:
 * source/common/formatter/substitution_formatter.cc and stream_info_formatter.cc) compiled once at
 * config load and rendered per connection into one line, as text or as one JSON object. Only the
 * operators that mean something at L4; the HTTP ones of Envoy's default format (%REQ(...)%,
 * %PROTOCOL%, ...) render as Envoy renders them for a TCP connection ("-", 0). */
#ifndef SOCKTAP_CORE_ACCESS_FORMAT_H
#define SOCKTAP_CORE_ACCESS_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/time.h>

/* Envoy's response flags a tcp_proxy connection can carry (StreamInfo::CoreResponseFlag; the
 * short strings of source/common/stream_info/utility.cc, printed in this order, ","-separated). */
enum al_flag {
    AL_FLAG_UH = 1u << 0,  /* NoHealthyUpstream */
    AL_FLAG_UF = 1u << 1,  /* UpstreamConnectionFailure */
    AL_FLAG_UO = 1u << 2,  /* UpstreamOverflow (circuit breaker) */
    AL_FLAG_DC = 1u << 3,  /* DownstreamConnectionTermination (before an upstream answered) */
    AL_FLAG_URX = 1u << 4, /* UpstreamRetryLimitExceeded (max_connect_attempts) */
    AL_FLAG_SI = 1u << 5,  /* StreamIdleTimeout (idle_timeout) */
    AL_FLAG_DT = 1u << 6,  /* DurationTimeout (max_downstream_connection_duration) */
};

/* What one connection's line can show; every pointer borrowed for the al_format_render call.
 * An address with len 0, a NULL string: absent ("-" in text, null in JSON). */
struct al_info {
    struct timeval start; /* wall clock at accept */
    uint64_t duration_ms;
    uint64_t bytes_received, bytes_sent; /* downstream: from the client, to the client */
    uint64_t conn_id;                    /* the downstream connection's id */
    struct sockaddr_storage down_remote, down_local, up_host, up_local;
    socklen_t down_remote_len, down_local_len, up_host_len, up_local_len;
    const char *cluster;
    const char *up_failure;  /* %UPSTREAM_TRANSPORT_FAILURE_REASON% */
    const char *termination; /* %CONNECTION_TERMINATION_DETAILS% */
    unsigned flags;          /* enum al_flag */
    /* the admin's request (v3 admin.access_log): %REQ(:METHOD)%, %REQ(:PATH)%, %RESPONSE_CODE% */
    const char *method, *path;
    int response_code;
};

struct al_format;

/* Envoy's default format (source/common/formatter/substitution_format_string.cc, used when a
 * file logger gives no log_format), newline included. */
extern const char al_default_format[];

/* An empty format (owned by the caller: al_format_free), to fill with the adders below. Returns
 * NULL when out of memory. */
struct al_format *al_format_new(void);
void al_format_free(struct al_format *f);

/* How al_format_add's text is placed. */
enum al_mode {
    AL_TEXT,        /* a text_format: as it renders */
    AL_JSON_STRING, /* part of a JSON string value: JSON-escaped (the caller adds the quotes) */
    AL_JSON_VALUE,  /* a whole json_format value: a lone operator keeps its type (a number, null
                       when absent), anything else becomes a JSON string */
};

/* Appends TEXT (copied), parsing its %OPERATORS%. Returns 0, -ENOMEM, or -EINVAL with WHY (a
 * sentence naming the operator, for the config error). */
int al_format_add(struct al_format *f, const char *text, enum al_mode mode, char *why,
                  size_t why_size) __attribute__((warn_unused_result, nonnull));
/* Appends LITERAL as it is (JSON punctuation). Returns 0 or -ENOMEM. */
int al_format_add_literal(struct al_format *f, const char *literal, size_t len)
    __attribute__((warn_unused_result, nonnull));

/* Renders F for INFO into BUF (SIZE bytes, NUL-terminated). Returns the length written; a line
 * longer than SIZE - 1 is cut there (the caller sizes BUF: AL_LINE_MAX). */
#define AL_LINE_MAX 8192
size_t al_format_render(const struct al_format *f, const struct al_info *info, char *buf,
                        size_t size) __attribute__((nonnull));

#endif

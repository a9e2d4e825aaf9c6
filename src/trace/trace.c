/* Format-independent helpers of trace.h. */
#include "trace/trace.h"

const char *trace_format_extension(enum trace_format format)
{
    switch (format) {
    case TRACE_FMT_PROTO_BINARY:
        return ".pb";
    case TRACE_FMT_PROTO_BINARY_LENGTH_DELIMITED:
        return ".pb_length_delimited";
    case TRACE_FMT_PROTO_TEXT:
        return ".pb_text";
    case TRACE_FMT_JSON_BODY_AS_BYTES:
    case TRACE_FMT_JSON_BODY_AS_STRING:
        return ".json";
    }
    return ".pb";
}

/* json_out: the one JSON string writer of the admin's outputs (/stats?format=json,
 * /server_info, /captures), so the modules that write them (admin, transport) escape alike. */
#ifndef SOCKTAP_CORE_JSON_OUT_H
#define SOCKTAP_CORE_JSON_OUT_H

#include <stdio.h>

/* Writes S (NUL-terminated, borrowed) to OUT as a JSON string: quotes, `"` and `\` escaped,
 * control characters as \u00XX; other bytes verbatim. */
void json_out_string(FILE *out, const char *s) __attribute__((nonnull));

#endif

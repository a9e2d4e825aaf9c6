/* JSON string output (see json_out.h). Bytes >= 0x80 pass verbatim: the names written here
 * (stats, paths, config names) are the config's and the file system's, UTF-8 in practice. */
#include "core/json_out.h"

void json_out_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* name_list: "a, b, c" lists of names for error messages ("supported: ...", "defined clusters:
 * ..."). Header-only: a leaf any module may include. A list that does not fit stops at the last
 * whole name that did, so a message is never cut mid-name. */
#ifndef SOCKTAP_CORE_NAME_LIST_H
#define SOCKTAP_CORE_NAME_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct name_list {
    char *buf; /* borrowed, SIZE bytes, always NUL-terminated */
    size_t size, pos;
    bool full; /* a name did not fit: later names are ignored too */
};

/* Starts an empty list in BUF (SIZE > 0 bytes, borrowed for the list's life). */
static inline void name_list_init(struct name_list *l, char *buf, size_t size)
{
    l->buf = buf;
    l->size = size;
    l->pos = 0;
    l->full = false;
    buf[0] = '\0';
}

/* Appends NAME (copied), separated by ", ". */
static inline void name_list_add(struct name_list *l, const char *name)
{
    if (l->full)
        return;
    int w = snprintf(l->buf + l->pos, l->size - l->pos, "%s%s", l->pos ? ", " : "", name);
    if (w < 0 || (size_t)w >= l->size - l->pos) {
        l->buf[l->pos] = '\0';
        l->full = true;
        return;
    }
    l->pos += (size_t)w;
}

#endif

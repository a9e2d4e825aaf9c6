/* hexdigit: the value of one hexadecimal digit, for every parser that reads hex (protobuf text
 * escapes, TLS certificate hashes). Header-only: a leaf any module may include. */
#ifndef SOCKTAP_CORE_HEXDIGIT_H
#define SOCKTAP_CORE_HEXDIGIT_H

/* 0..15 for [0-9a-fA-F], -1 for anything else (EOF included). */
static inline int hexdigit_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif

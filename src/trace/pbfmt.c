/* Text helpers of trace_internal.h. Escaping is table-free and byte-at-a-time: the text and
 * JSON formats are for humans and tools, the binary format is the fast one. */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "trace/pbfmt.h"

int pbfmt_cescape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t n = iov[i].iov_len;
        if (n > SIZE_MAX / 4)
            return -ENOMEM;
        int rc = tbuf_reserve(b, 4 * n);
        if (rc)
            return rc;
        uint8_t *o = b->data + b->len;
        for (size_t k = 0; k < n; k++) {
            uint8_t c = p[k];
            switch (c) {
            case '\n':
                *o++ = '\\', *o++ = 'n';
                break;
            case '\r':
                *o++ = '\\', *o++ = 'r';
                break;
            case '\t':
                *o++ = '\\', *o++ = 't';
                break;
            case '"':
                *o++ = '\\', *o++ = '"';
                break;
            case '\'':
                *o++ = '\\', *o++ = '\'';
                break;
            case '\\':
                *o++ = '\\', *o++ = '\\';
                break;
            default:
                if (c < 0x20 || c >= 0x7f) {
                    *o++ = '\\';
                    *o++ = (uint8_t)('0' + (c >> 6));
                    *o++ = (uint8_t)('0' + ((c >> 3) & 7));
                    *o++ = (uint8_t)('0' + (c & 7));
                } else {
                    *o++ = c;
                }
            }
        }
        b->len = (size_t)(o - b->data);
    }
    return 0;
}

int pbfmt_json_escape(struct tbuf *b, const uint8_t *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (n > SIZE_MAX / 6)
        return -ENOMEM;
    int rc = tbuf_reserve(b, 6 * n);
    if (rc)
        return rc;
    uint8_t *o = b->data + b->len;
    for (size_t k = 0; k < n; k++) {
        uint8_t c = p[k];
        if (c == '"' || c == '\\') {
            *o++ = '\\', *o++ = c;
        } else if (c == '\n') {
            *o++ = '\\', *o++ = 'n';
        } else if (c == '\r') {
            *o++ = '\\', *o++ = 'r';
        } else if (c == '\t') {
            *o++ = '\\', *o++ = 't';
        } else if (c < 0x20 || c == 0x7f) {
            *o++ = '\\', *o++ = 'u', *o++ = '0', *o++ = '0';
            *o++ = (uint8_t)hex[c >> 4], *o++ = (uint8_t)hex[c & 15];
        } else {
            *o++ = c;
        }
    }
    b->len = (size_t)(o - b->data);
    return 0;
}

int pbfmt_json_escape_iov(struct tbuf *b, const struct iovec *iov, int iovcnt)
{
    for (int i = 0; i < iovcnt; i++) {
        int rc = pbfmt_json_escape(b, iov[i].iov_base, iov[i].iov_len);
        if (rc)
            return rc;
    }
    return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int pbfmt_base64_iov(struct tbuf *b, const struct iovec *iov, int iovcnt)
{
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    int rc = tbuf_reserve(b, (total + 2) / 3 * 4 + 4);
    if (rc)
        return rc;
    uint8_t *o = b->data + b->len;
    uint32_t acc = 0;
    int have = 0; /* bytes in ACC: a group of 3 may straddle iovecs */
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        for (size_t k = 0; k < iov[i].iov_len; k++) {
            acc = (acc << 8) | p[k];
            if (++have == 3) {
                *o++ = (uint8_t)b64[(acc >> 18) & 63];
                *o++ = (uint8_t)b64[(acc >> 12) & 63];
                *o++ = (uint8_t)b64[(acc >> 6) & 63];
                *o++ = (uint8_t)b64[acc & 63];
                acc = 0;
                have = 0;
            }
        }
    }
    if (have == 1) {
        acc <<= 16;
        *o++ = (uint8_t)b64[(acc >> 18) & 63];
        *o++ = (uint8_t)b64[(acc >> 12) & 63];
        *o++ = '=', *o++ = '=';
    } else if (have == 2) {
        acc <<= 8;
        *o++ = (uint8_t)b64[(acc >> 18) & 63];
        *o++ = (uint8_t)b64[(acc >> 12) & 63];
        *o++ = (uint8_t)b64[(acc >> 6) & 63];
        *o++ = '=';
    }
    b->len = (size_t)(o - b->data);
    return 0;
}

static int b64_val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

long pbfmt_base64_decode(const char *s, size_t n, uint8_t *out, size_t *bad)
{
    uint32_t acc = 0;
    int have = 0;
    size_t o = 0, i = 0;
    for (; i < n && s[i] != '='; i++) {
        int v = b64_val(s[i]);
        if (v < 0) {
            *bad = i;
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        if (++have == 4) {
            out[o++] = (uint8_t)(acc >> 16);
            out[o++] = (uint8_t)(acc >> 8);
            out[o++] = (uint8_t)acc;
            acc = 0;
            have = 0;
        }
    }
    for (size_t k = i; k < n; k++) {
        if (s[k] != '=') {
            *bad = k;
            return -1;
        }
    }
    if (have == 1) {
        *bad = i ? i - 1 : 0;
        return -1;
    }
    if (have == 2) {
        out[o++] = (uint8_t)(acc >> 4);
    } else if (have == 3) {
        out[o++] = (uint8_t)(acc >> 10);
        out[o++] = (uint8_t)(acc >> 2);
    }
    return (long)o;
}

static int put_digits(struct tbuf *b, unsigned v, int width)
{
    char tmp[12];
    for (int i = width - 1; i >= 0; i--) {
        tmp[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return tbuf_append(b, tmp, (size_t)width);
}

int pbfmt_rfc3339(struct tbuf *b, int64_t sec, int32_t nsec)
{
    time_t t = (time_t)sec;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return -EINVAL;
    int rc = put_digits(b, (unsigned)(tm.tm_year + 1900), 4);
    rc = rc ?: tbuf_append(b, "-", 1);
    rc = rc ?: put_digits(b, (unsigned)tm.tm_mon + 1, 2);
    rc = rc ?: tbuf_append(b, "-", 1);
    rc = rc ?: put_digits(b, (unsigned)tm.tm_mday, 2);
    rc = rc ?: tbuf_append(b, "T", 1);
    rc = rc ?: put_digits(b, (unsigned)tm.tm_hour, 2);
    rc = rc ?: tbuf_append(b, ":", 1);
    rc = rc ?: put_digits(b, (unsigned)tm.tm_min, 2);
    rc = rc ?: tbuf_append(b, ":", 1);
    rc = rc ?: put_digits(b, (unsigned)tm.tm_sec, 2);
    if (!rc && nsec > 0) {
        rc = tbuf_append(b, ".", 1);
        if (nsec % 1000000 == 0)
            rc = rc ?: put_digits(b, (unsigned)nsec / 1000000, 3);
        else if (nsec % 1000 == 0)
            rc = rc ?: put_digits(b, (unsigned)nsec / 1000, 6);
        else
            rc = rc ?: put_digits(b, (unsigned)nsec, 9);
    }
    return rc ?: tbuf_append(b, "Z", 1);
}

static bool digits(const char *s, size_t n, size_t at, int count, int *out)
{
    int v = 0;
    if (at + (size_t)count > n)
        return false;
    for (int i = 0; i < count; i++) {
        char c = s[at + (size_t)i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return true;
}

int pbfmt_rfc3339_parse(const char *s, size_t n, int64_t *sec, int32_t *nsec)
{
    int y, mo, d, h, mi, se;
    if (!digits(s, n, 0, 4, &y) || n < 20 || s[4] != '-' || !digits(s, n, 5, 2, &mo) ||
        s[7] != '-' || !digits(s, n, 8, 2, &d) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s, n, 11, 2, &h) || s[13] != ':' || !digits(s, n, 14, 2, &mi) || s[16] != ':' ||
        !digits(s, n, 17, 2, &se))
        return -EINVAL;
    size_t i = 19;
    int32_t frac = 0;
    if (i < n && s[i] == '.') {
        int nd = 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++, nd++) {
            if (nd >= 9)
                return -EINVAL;
            frac = frac * 10 + (s[i] - '0');
        }
        if (nd == 0)
            return -EINVAL;
        for (; nd < 9; nd++)
            frac *= 10;
    }
    int64_t off = 0;
    if (i < n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i < n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (!digits(s, n, i + 1, 2, &oh) || i + 3 >= n || s[i + 3] != ':' ||
            !digits(s, n, i + 4, 2, &om))
            return -EINVAL;
        off = (int64_t)(oh * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
        i += 6;
    } else {
        return -EINVAL;
    }
    if (i != n || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -EINVAL;
    /* days from civil (proleptic Gregorian), independent of the local time zone */
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    *sec = days * 86400 + h * 3600 + mi * 60 + se - off;
    *nsec = frac;
    return 0;
}

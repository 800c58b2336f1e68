/* http1_int — what the three files of the HTTP/1 parsers share (http1.c the head
 * machinery, http1_connect.c CONNECT heads, http1_chunked.c the chunked decoder).
 * Only src/net/http1*.c include it.
 */
#ifndef VEIL_NET_HTTP1_INT_H
#define VEIL_NET_HTTP1_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/buf.h"
#include "net/http1.h"

/* ---- character classes (RFC 9110 §5.6.2, §5.5) ---- */

static inline bool http1i_is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline bool http1i_is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static inline bool http1i_is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return http1i_is_alpha(c) || http1i_is_digit(c) || (c != '\0' && strchr(extra, c) != NULL);
}

static inline bool http1i_is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar / SP / HTAB / obs-text: everything but CTLs and DEL */
static inline bool http1i_is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline unsigned char http1i_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* ---- the head: a bounded cursor over the bytes that may still belong to it ---- */

typedef struct http1i_head {
    const uint8_t *start;
    cursor c;       /* unread part of buf[0 .. min(len, limit)) */
    bool at_limit;  /* len >= limit: no terminator can arrive inside the limit any more */
} http1i_head;

static inline size_t http1i_head_consumed(const http1i_head *h)
{
    return (size_t)(h->c.p - h->start);
}

/* The header fields after the start line, up to the empty line. */
int http1i_parse_headers(http1i_head *h, http1_headers *hs);

typedef struct http1i_request_line {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *version;
    size_t version_len;
} http1i_request_line;

/* The start of a request head: the first line, read and split. */
int http1i_start_request(const void *buf, size_t len, size_t max_head, http1i_head *h,
                         http1i_request_line *rl);
/* "HTTP/1.x": *minor = x. */
int http1i_parse_version(const char *s, size_t n, int *minor);
/* 1*DIGIT of at most max_digits (<= 18), in [min, max]: no sign, no list, no whitespace. */
int http1i_parse_digits(const char *s, size_t n, size_t max_digits, long min, long max, long *out);

#endif

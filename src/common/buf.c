#include "common/buf.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"

/* The capacity that holds extra more bytes (and vbuf_cstr's NUL): b->cap when
 * it already does, 0 on overflow. */
static size_t cap_for(const vbuf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return 0;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return b->cap;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    return cap;
}

int vbuf_reserve(vbuf *b, size_t extra)
{
    size_t cap = cap_for(b, extra);
    if (cap == 0)
        return -1;
    if (cap == b->cap)
        return 0;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

/* realloc may move the bytes and free the old block as it is; a secret must
 * not stay behind in freed memory, so move it ourselves and wipe the old block. */
int vbuf_reserve_secure(vbuf *b, size_t extra)
{
    size_t cap = cap_for(b, extra);
    if (cap == 0)
        return -1;
    if (cap == b->cap)
        return 0;
    uint8_t *p = malloc(cap);
    if (!p)
        return -1;
    if (b->data) {
        memcpy(p, b->data, b->len);
        OPENSSL_cleanse(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int vbuf_append(vbuf *b, const void *p, size_t n)
{
    if (vbuf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int vbuf_append_secure(vbuf *b, const void *p, size_t n)
{
    if (vbuf_reserve_secure(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int vbuf_append_str(vbuf *b, const char *s)
{
    return vbuf_append(b, s, strlen(s));
}

int vbuf_printf(vbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || vbuf_reserve(b, (size_t)n) < 0)
        return -1;
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int vbuf_append_hex(vbuf *b, const uint8_t *p, size_t n)
{
    if (n > (SIZE_MAX - 1) / 2 || vbuf_reserve(b, 2 * n) < 0)
        return -1;
    hex_encode(p, n, (char *)b->data + b->len);
    b->len += 2 * n;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        len = 2, cp = p[0] & 0x1Fu;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        len = 3, cp = p[0] & 0x0Fu;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        len = 4, cp = p[0] & 0x07u;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

/* The escaped form of byte c, or NULL when it is copied as is. */
static const char *json_escape(uint8_t c, char tmp[7])
{
    switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default:
        if (c >= 0x20)
            return NULL;
        snprintf(tmp, 7, "\\u%04x", c);
        return tmp;
    }
}

int vbuf_append_json_string(vbuf *b, const char *s)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t n = strlen(s), out = 2;
    char tmp[7];
    /* measure first: one secure growth at most, and nothing appended on error */
    for (size_t i = 0, k; i < n; i += k) {
        if (!(k = utf8_seq(p + i, n - i)))
            return -1;
        const char *e = json_escape(p[i], tmp);
        out += e ? strlen(e) : k;
    }
    if (vbuf_reserve_secure(b, out) < 0)
        return -1;
    uint8_t *w = b->data + b->len;
    *w++ = '"';
    for (size_t i = 0; i < n; i++) {
        const char *e = json_escape(p[i], tmp);
        size_t k = e ? strlen(e) : 1;
        memcpy(w, e ? (const uint8_t *)e : p + i, k);
        w += k;
    }
    *w++ = '"';
    b->len += out;
    return 0;
}

void vbuf_consume(vbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void vbuf_reset(vbuf *b)
{
    b->len = 0;
}

void vbuf_free(vbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void vbuf_free_secure(vbuf *b)
{
    if (b->data)
        OPENSSL_cleanse(b->data, b->cap);
    vbuf_free(b);
}

char *vbuf_cstr(vbuf *b)
{
    if (vbuf_reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = '\0';
    return (char *)b->data;
}

bool cursor_read_span(cursor *c, size_t n, const uint8_t **out)
{
    if (n > c->left)
        return false;
    *out = c->p;
    c->p += n;
    c->left -= n;
    return true;
}

bool cursor_skip(cursor *c, size_t n)
{
    const uint8_t *unused;
    return cursor_read_span(c, n, &unused);
}

bool cursor_read_u8(cursor *c, uint8_t *v)
{
    const uint8_t *p;
    if (!cursor_read_span(c, 1, &p))
        return false;
    *v = p[0];
    return true;
}

bool cursor_read_be16(cursor *c, uint16_t *v)
{
    const uint8_t *p;
    if (!cursor_read_span(c, 2, &p))
        return false;
    *v = (uint16_t)(p[0] << 8 | p[1]);
    return true;
}

bool cursor_read_be32(cursor *c, uint32_t *v)
{
    const uint8_t *p;
    if (!cursor_read_span(c, 4, &p))
        return false;
    *v = get_be32(p);
    return true;
}

bool cursor_read_be64(cursor *c, uint64_t *v)
{
    const uint8_t *p;
    if (!cursor_read_span(c, 8, &p))
        return false;
    *v = (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
    return true;
}

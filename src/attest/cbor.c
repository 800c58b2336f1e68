/* cbor — the strict CBOR subset. See cbor.h. */
#include "attest/cbor.h"

bool acbor_read_head(cursor *c, acbor_head *h)
{
    uint8_t ib;
    if (!cursor_read_u8(c, &ib))
        return false;
    uint8_t major = ib >> 5, ai = ib & 31;
    uint64_t v = 0;
    h->major = major;
    h->is_float = false;
    if (ai < 24) {
        v = ai;
    } else if (ai <= 27) {
        size_t n = (size_t)1 << (ai - 24); /* 1, 2, 4 or 8 bytes */
        const uint8_t *p;
        if (!cursor_read_span(c, n, &p))
            return false;
        for (size_t i = 0; i < n; i++)
            v = v << 8 | p[i];
        if (major == ACBOR_SIMPLE && ai > 24) {
            h->is_float = true; /* half, single or double: the bits, no "shortest" rule */
        } else {
            /* preferred serialisation: the shortest head that holds v. For simple
             * values a 1-byte extension below 32 is not even well-formed. */
            uint64_t floor = ai == 24 ? (major == ACBOR_SIMPLE ? 32 : 24)
                           : ai == 25 ? 0x100
                           : ai == 26 ? 0x10000
                                      : 0x100000000ull;
            if (v < floor)
                return false;
        }
    } else {
        return false; /* 28..30 reserved; 31 indefinite length or break */
    }
    h->arg = v;
    return true;
}

bool acbor_read_span(cursor *c, const acbor_head *h, const uint8_t **p, size_t *n)
{
    if (h->arg > c->left)
        return false;
    *n = (size_t)h->arg;
    return cursor_read_span(c, *n, p);
}

int acbor_put_head(vbuf *b, uint8_t major, uint64_t arg)
{
    uint8_t h[9];
    size_t n;
    uint8_t ib = (uint8_t)(major << 5);
    if (arg < 24) {
        h[0] = ib | (uint8_t)arg;
        n = 1;
    } else if (arg <= 0xff) {
        h[0] = ib | 24;
        n = 2;
    } else if (arg <= 0xffff) {
        h[0] = ib | 25;
        n = 3;
    } else if (arg <= 0xffffffffull) {
        h[0] = ib | 26;
        n = 5;
    } else {
        h[0] = ib | 27;
        n = 9;
    }
    for (size_t i = 1; i < n; i++)
        h[i] = (uint8_t)(arg >> (8 * (n - 1 - i)));
    return vbuf_append(b, h, n);
}

int acbor_put_bytes(vbuf *b, const uint8_t *p, size_t n)
{
    if (acbor_put_head(b, ACBOR_BYTES, n) != 0)
        return -1;
    return n ? vbuf_append(b, p, n) : 0;
}

int acbor_put_text(vbuf *b, const char *s, size_t n)
{
    if (acbor_put_head(b, ACBOR_TEXT, n) != 0)
        return -1;
    return n ? vbuf_append(b, s, n) : 0;
}

int acbor_put_null(vbuf *b)
{
    return acbor_put_head(b, ACBOR_SIMPLE, ACBOR_SIMPLE_NULL);
}

int acbor_put_bytes_or_null(vbuf *b, const uint8_t *p, size_t n)
{
    return p ? acbor_put_bytes(b, p, n) : acbor_put_null(b);
}

#include "common/base64.h"

#include <limits.h>

static const char *const ALPHABETS[] = {
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
};

static int value_of(b64_alphabet a, unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)ALPHABETS[a][62])
        return 62;
    if (c == (unsigned char)ALPHABETS[a][63])
        return 63;
    return -1;
}

long base64_decode(b64_alphabet a, const char *in, size_t len, uint8_t *out, size_t cap)
{
    size_t n = len, need;
    if (!in)
        return -1;
    if (a == B64_STD) {
        if (len == 0 || len % 4 != 0)
            return -1;
        size_t pad = in[len - 1] == '=' ? (in[len - 2] == '=' ? 2 : 1) : 0;
        n = len - pad;
        need = len / 4 * 3 - pad;
    } else {
        if (len % 4 == 1)
            return -1;
        need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    }
    if (need > cap || need > (size_t)LONG_MAX)
        return -1;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = value_of(a, (unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* non-zero unused bits would be a second spelling of the same bytes */
    return acc == 0 && o == need ? (long)o : -1;
}

size_t base64_encoded_len(b64_alphabet a, size_t len)
{
    if (a == B64_STD)
        return (len + 2) / 3 * 4;
    return len / 3 * 4 + (len % 3 ? len % 3 + 1 : 0);
}

void base64_encode(b64_alphabet a, const uint8_t *in, size_t len, char *out)
{
    const char *A = ALPHABETS[a];
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = A[v >> 18];
        out[o++] = A[(v >> 12) & 63];
        if (i + 1 < len)
            out[o++] = A[(v >> 6) & 63];
        else if (a == B64_STD)
            out[o++] = '=';
        if (i + 2 < len)
            out[o++] = A[v & 63];
        else if (a == B64_STD)
            out[o++] = '=';
    }
    out[o] = '\0';
}

#include "common/hex.h"

static const char HEX_DIGITS[] = "0123456789abcdef";

int hex_digit_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void hex_encode(const uint8_t *in, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = HEX_DIGITS[in[i] >> 4];
        out[2 * i + 1] = HEX_DIGITS[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

bool hex_is_valid(const char *s, size_t len)
{
    if (len % 2 != 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (hex_digit_value((unsigned char)s[i]) < 0)
            return false;
    return true;
}

long hex_decode(const char *in, size_t hexlen, uint8_t *out, size_t out_cap)
{
    if (hexlen % 2 != 0 || hexlen / 2 > out_cap || !hex_is_valid(in, hexlen))
        return -1;
    for (size_t i = 0; i < hexlen / 2; i++)
        out[i] = (uint8_t)(hex_digit_value((unsigned char)in[2 * i]) << 4 |
                           hex_digit_value((unsigned char)in[2 * i + 1]));
    return (long)(hexlen / 2);
}

int hex_decode_exact(const char *in, size_t hexlen, uint8_t *out, size_t out_len)
{
    if (hexlen != 2 * out_len)
        return -1;
    return hex_decode(in, hexlen, out, out_len) < 0 ? -1 : 0;
}

/* base64 — RFC 4648 base64 in its two spellings, strictly:
 *   B64_STD: the standard alphabet (+ /), padded with '=' to a multiple of 4;
 *   B64_URL: the URL-safe alphabet (- _), unpadded (JWS, JWK).
 * Decoding refuses whitespace, a wrong alphabet, a bad length and non-zero unused
 * bits, so each value has exactly one accepted spelling. Pure, no allocation.
 */
#ifndef VEIL_BASE64_H
#define VEIL_BASE64_H

#include <stddef.h>
#include <stdint.h>

typedef enum b64_alphabet { B64_STD = 0, B64_URL } b64_alphabet;

/* Writes at most cap bytes; returns the decoded length or -1. */
long base64_decode(b64_alphabet a, const char *in, size_t len, uint8_t *out, size_t cap);
/* Characters of the encoding of len bytes (without the NUL). */
size_t base64_encoded_len(b64_alphabet a, size_t len);
/* out holds base64_encoded_len(a, len) + 1 bytes; NUL-terminated. */
void base64_encode(b64_alphabet a, const uint8_t *in, size_t len, char *out);

#endif

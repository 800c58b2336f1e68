/* hex — lowercase hex encoding and strict decoding.
 *
 * Encoding always emits lowercase. Decoding accepts [0-9a-fA-F] only, in pairs:
 * no whitespace, no "0x" prefix, no odd length (the original accepted embedded
 * whitespace through bytes.fromhex, defect §10.25). Upper case is accepted on
 * input because the original API normalised it to lower case; we do the same.
 * Pure functions over caller-owned buffers; nothing is allocated.
 */
#ifndef VEIL_HEX_H
#define VEIL_HEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Writes 2*len hex chars and a NUL to out (out must hold 2*len+1). */
void hex_encode(const uint8_t *in, size_t len, char *out);

/* Decodes exactly 2*out_len chars from in. Returns 0, or -1 if hexlen != 2*out_len
 * or a char is not a hex digit. out is untouched on error. */
int hex_decode_exact(const char *in, size_t hexlen, uint8_t *out, size_t out_len);

/* Decodes a hex string of any even length into out (capacity out_cap).
 * Returns the number of bytes written, or -1 (odd length, bad digit, too long). */
long hex_decode(const char *in, size_t hexlen, uint8_t *out, size_t out_cap);

/* The value of one hex digit (either case), or -1. */
int hex_digit_value(unsigned char c);

/* True iff s[0..len) is all hex digits and len is even. */
bool hex_is_valid(const char *s, size_t len);

#endif

/* secret — a small heap buffer for key material and plaintext that wipes itself.
 *
 * secret_free() cleanses the bytes (OPENSSL_cleanse) before releasing them, so a
 * key or a decrypted message never lingers in freed memory.
 */
#ifndef VEIL_SECRET_H
#define VEIL_SECRET_H

#include <stddef.h>
#include <stdint.h>

typedef struct secret {
    uint8_t *data;
    size_t len;
} secret;

/* Allocates len bytes (len may be 0: data is then a valid 1-byte allocation). */
int secret_alloc(secret *s, size_t len);
void secret_free(secret *s);
/* Wipes a caller-owned buffer (a stack key, say). */
void secure_wipe(void *p, size_t n);
/* Wipes a whole malloc'd block, whatever was asked for it, then frees it: for
 * allocators that free without a size (jansson's json_set_alloc_funcs). */
void secret_free_block(void *p);

#endif

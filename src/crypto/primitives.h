/* primitives — X25519, HKDF-SHA512 and AES-256-GCM (16-byte IV) on OpenSSL 3.
 *
 * The exact primitives of the wire protocol (spec §1.1). The HKDF and cipher
 * implementations are fetched once per process, not per call. Callers own every
 * buffer; functions write fixed-size outputs and wipe their own intermediates.
 */
#ifndef VEIL_CRYPTO_PRIMITIVES_H
#define VEIL_CRYPTO_PRIMITIVES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define X25519_KEY_LEN 32
#define AES256_KEY_LEN 32
#define GCM_IV_LEN 16  /* not 96 bits: J0 comes from GHASH (SP 800-38D) */
#define GCM_TAG_LEN 16
#define HKDF_SALT_LEN 32

/* A private key held for repeated agreements. OpenSSL computes the public half
 * when a key is made or imported, so do that once: each x25519_key_shared is
 * then one scalar multiplication (a seal costs two, an open with a held key one). */
typedef struct x25519_key x25519_key;

x25519_key *x25519_key_new(const uint8_t priv[X25519_KEY_LEN]);
/* A fresh random key; pub receives its public key. NULL on failure. */
x25519_key *x25519_key_generate(uint8_t pub[X25519_KEY_LEN]);
/* -1 on OpenSSL failure, -2 if the shared secret is all zero (low-order point). */
int x25519_key_shared(const x25519_key *k, const uint8_t peer[X25519_KEY_LEN], uint8_t out[X25519_KEY_LEN]);
void x25519_key_free(x25519_key *k); /* OpenSSL wipes the key material */

/* True unless pub is one of the encodings of a point of small order (0, 1, the two
 * points of order 8, p-1, p, p+1; bit 255 ignored, as X25519 ignores it). Every
 * agreement with such a key is all zero, so a seal to it fails: refuse it where a
 * key enters (a request field, an uploaded key) rather than midway through a reply. */
bool x25519_public_key_ok(const uint8_t pub[X25519_KEY_LEN]);

/* 0 on success, -1 on failure. */
int x25519_keygen(uint8_t priv[X25519_KEY_LEN], uint8_t pub[X25519_KEY_LEN]);
int x25519_public(const uint8_t priv[X25519_KEY_LEN], uint8_t pub[X25519_KEY_LEN]);
/* One-off agreement from a raw private key (two scalar multiplications: hold an
 * x25519_key for repeated use). -1 on OpenSSL failure, -2 on an all-zero secret. */
int x25519_shared(const uint8_t priv[X25519_KEY_LEN], const uint8_t peer[X25519_KEY_LEN],
                  uint8_t out[X25519_KEY_LEN]);

int hkdf_sha512(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* ct has room for len bytes (ciphertext length = plaintext length). aad may be NULL. */
int aesgcm_encrypt(const uint8_t key[AES256_KEY_LEN], const uint8_t iv[GCM_IV_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len,
                   uint8_t *ct, uint8_t tag[GCM_TAG_LEN]);
/* 0 if the tag verifies, -1 otherwise (pt contents are then wiped). */
int aesgcm_decrypt(const uint8_t key[AES256_KEY_LEN], const uint8_t iv[GCM_IV_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                   const uint8_t tag[GCM_TAG_LEN], uint8_t *pt);

int random_bytes(uint8_t *out, size_t n);

/* Constant-time equality of two n-byte buffers. */
int ct_equal(const void *a, const void *b, size_t n);

#endif

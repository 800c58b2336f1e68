/* keywrap — client key material (spec §1.4): a private key wrapped under a
 * passcode or a recovery code with Argon2id + AES-256-GCM, and recovery codes.
 *
 * The Argon2id parameters travel with the blob, so a later change of defaults
 * never strands an old key. Derived keys and unwrapped private keys are wiped
 * before return; the caller wipes what it receives.
 */
#ifndef VEIL_CRYPTO_KEYWRAP_H
#define VEIL_CRYPTO_KEYWRAP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/primitives.h"

#define KW_SALT_LEN 32
#define KW_KEY_LEN 32
#define KW_ARGON2_VERSION 0x13 /* Argon2 v1.3 */
#define KW_MIN_PASSCODE 6      /* the original frontend's rule */

#define KW_RECOVERY_DIGITS 20
#define KW_RECOVERY_FORMATTED 24 /* 1234-5678-9012-3456-7890 */

typedef struct kw_params {
    uint32_t t_cost;      /* iterations */
    uint32_t m_cost_kib;  /* memory in KiB */
    uint32_t parallelism; /* lanes and threads */
} kw_params;

/* The original's parameters: t=4, m=128 MiB, p=2. */
#define KW_PARAMS_DEFAULT ((kw_params){4, 131072, 2})

/* A wrapped 32-byte private key. */
typedef struct kw_blob {
    uint8_t salt[KW_SALT_LEN];
    uint8_t iv[GCM_IV_LEN];
    uint8_t tag[GCM_TAG_LEN];
    uint8_t ct[X25519_KEY_LEN];
    kw_params params;
} kw_blob;

typedef enum kw_err {
    KW_OK = 0,
    KW_ERR_PASSCODE, /* empty passcode */
    KW_ERR_PARAMS,   /* Argon2 parameters out of the accepted range */
    KW_ERR_KDF,      /* Argon2 failed (memory) */
    KW_ERR_CRYPTO,
    KW_ERR_AUTH,     /* wrong passcode / recovery code, or a tampered blob */
    KW_ERR_FORMAT,   /* bad JSON blob or bad recovery code */
} kw_err;

const char *kw_strerror(kw_err e);

/* Bounds accepted when parsing a blob: keeps a hostile blob from asking for
 * unbounded memory or time. */
int kw_params_valid(const kw_params *p);

kw_err kw_derive(const char *passcode, size_t len, const uint8_t salt[KW_SALT_LEN],
                 const kw_params *p, uint8_t key[KW_KEY_LEN]);
kw_err kw_wrap(const uint8_t priv[X25519_KEY_LEN], const char *passcode, const kw_params *p,
               kw_blob *out);
kw_err kw_unwrap(const kw_blob *blob, const char *passcode, uint8_t priv[X25519_KEY_LEN]);

/* {"encrypted_private_key","iv","tag","salt","kdf":{"algorithm":"argon2id","version":19,
 *  "time_cost","memory_cost","parallelism"}} — the field names of the original's API. */
json_t *kw_blob_to_json(const kw_blob *b);
/* A missing "kdf" means the original's defaults. */
kw_err kw_blob_from_json(const json_t *obj, kw_blob *out);

/* 20 uniform decimal digits (rejection sampling: no modulo bias, defect §10.26). */
int kw_recovery_generate(char out[KW_RECOVERY_DIGITS + 1]);
/* 1234-5678-9012-3456-7890 */
void kw_recovery_format(const char digits[KW_RECOVERY_DIGITS + 1], char out[KW_RECOVERY_FORMATTED + 1]);
/* Drops dashes and spaces; requires exactly 20 digits. */
kw_err kw_recovery_normalize(const char *in, char out[KW_RECOVERY_DIGITS + 1]);

#endif

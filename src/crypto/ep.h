/* ep — the EncryptedPayload envelope (spec §1.2) and its context strings (§1.3).
 *
 * seal: ephemeral X25519 -> HKDF-SHA512 (random 32-byte salt, info = context,
 * 32-byte key) -> AES-256-GCM (random 16-byte IV, 16-byte tag, no AAD).
 * An ep owns its ciphertext (ep_clear frees it). Plaintext from ep_open lands in
 * a secret, which wipes itself. Nothing here logs.
 */
#ifndef VEIL_CRYPTO_EP_H
#define VEIL_CRYPTO_EP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/secret.h"
#include "crypto/primitives.h"

/* HKDF info strings: byte for byte those of the original (spec §1.3) */
#define EP_CTX_CLIENT_TO_ENCLAVE "client-to-enclave-transport"
#define EP_CTX_ENCLAVE_TO_CLIENT "enclave-to-client-transport"
#define EP_CTX_USER_STORAGE "user-message-storage"
#define EP_CTX_ASSISTANT_STORAGE "assistant-message-storage"
#define EP_CTX_ORG_KEY_DISTRIBUTION "org-key-distribution"
#define EP_CTX_RECOVERY_KEY "recovery-key-encryption" /* defined by the original, unused */
#define EP_CTX_TEST "test-context"                     /* vectors and self-tests only */

#define EP_CONTEXT_MAX 255
#define EP_MAX_PLAINTEXT (64u << 20) /* refuse envelopes above 64 MiB */

/* JSON field names, in the original's serialisation order */
#define EP_F_EPK "ephemeral_public_key"
#define EP_F_IV "iv"
#define EP_F_CT "ciphertext"
#define EP_F_TAG "auth_tag"
#define EP_F_SALT "hkdf_salt"

/* The five fields as a table, in that order (EP_FIELDS[EP_FIELD_IV].name == EP_F_IV):
 * each is lowercase hex on the wire, of exactly hex_len characters, or (hex_len 0, the
 * ciphertext) of at least hex_min. hex_min is the API's rule, one byte of ciphertext;
 * ep_from_json itself accepts an empty one. */
typedef enum ep_field_id {
    EP_FIELD_EPK,
    EP_FIELD_IV,
    EP_FIELD_CT,
    EP_FIELD_TAG,
    EP_FIELD_SALT,
    EP_N_FIELDS
} ep_field_id;

typedef struct ep_field {
    const char *name;
    size_t hex_len; /* exact length in hex characters; 0: variable */
    size_t hex_min; /* shortest accepted, in hex characters */
} ep_field;

extern const ep_field EP_FIELDS[EP_N_FIELDS];

typedef struct ep {
    uint8_t epk[X25519_KEY_LEN];
    uint8_t iv[GCM_IV_LEN];
    uint8_t tag[GCM_TAG_LEN];
    uint8_t salt[HKDF_SALT_LEN];
    uint8_t *ct; /* owned; may be NULL when ct_len == 0 */
    size_t ct_len;
} ep;

typedef enum ep_err {
    EP_OK = 0,
    EP_ERR_NOMEM,
    EP_ERR_CRYPTO,    /* an OpenSSL call failed */
    EP_ERR_CONTEXT,   /* context string empty, too long or not printable ASCII */
    EP_ERR_KEY,       /* low-order public key: all-zero shared secret */
    EP_ERR_AUTH,      /* tag mismatch: wrong key, wrong context or tampered data */
    EP_ERR_JSON,      /* not a JSON object */
    EP_ERR_MISSING,   /* a field is absent */
    EP_ERR_TYPE,      /* a field is not a string */
    EP_ERR_HEX,       /* a field is not hex of even length */
    EP_ERR_EPK_LEN,   /* ephemeral_public_key is not 32 bytes */
    EP_ERR_IV_LEN,    /* iv is not 16 bytes */
    EP_ERR_TAG_LEN,   /* auth_tag is not 16 bytes */
    EP_ERR_SALT_LEN,  /* hkdf_salt is not 32 bytes */
    EP_ERR_TOO_LARGE, /* ciphertext above EP_MAX_PLAINTEXT */
} ep_err;

const char *ep_strerror(ep_err e);

/* True for the six context strings of §1.3 and test-context. */
bool ep_context_is_known(const char *context);
/* The contexts above, NULL-terminated. */
extern const char *const EP_KNOWN_CONTEXTS[];

ep_err ep_seal(const uint8_t recipient_pub[X25519_KEY_LEN], const uint8_t *pt, size_t len,
               const char *context, ep *out);
/* On success *pt holds the plaintext (pt->len may be 0; callers decide). */
ep_err ep_open(const uint8_t priv[X25519_KEY_LEN], const ep *in, const char *context, secret *pt);
/* The same with a held key (one scalar multiplication instead of two). */
ep_err ep_open_key(const x25519_key *k, const ep *in, const char *context, secret *pt);
void ep_clear(ep *e);

/* The 32-byte AES key both sides derive: X25519(priv, pub) then HKDF-SHA512. */
ep_err ep_derive_key(const uint8_t priv[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN],
                     const uint8_t salt[HKDF_SALT_LEN], const char *context,
                     uint8_t key[AES256_KEY_LEN]);

/* Strict decode of a JSON object. Extra keys are ignored. On error, *field (if
 * not NULL) names the offending field or is NULL. */
ep_err ep_from_json(const json_t *obj, ep *out, const char **field);
ep_err ep_parse(const char *json, size_t len, ep *out, const char **field);
/* Appends the compact JSON object, fields in the original's order, lowercase hex. */
int ep_write_json(const ep *e, vbuf *out);
json_t *ep_to_json(const ep *e); /* new reference, or NULL */

#endif

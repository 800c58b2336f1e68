/* jwks — the issuer's signing keys: JWKS parsing into OpenSSL 3 EVP_PKEYs, and the
 * export of a public key as a JWKS (veil dev-token, tests). Pure: no I/O.
 * Memory: a jwks_set owns its keys; jwks_set_find lends one. Never logs keys.
 * The cache that fetches and refreshes a JWKS is veild's (server/jwks_cache.h).
 */
#ifndef VEIL_AUTH_JWKS_H
#define VEIL_AUTH_JWKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "auth/jwt.h"

#define JWKS_MAX_BODY (1024 * 1024) /* a JWKS document or file, at most */
#define JWKS_MAX_KEYS 64
#define JWKS_KID_MAX 256
#define JWKS_THUMBPRINT_LEN 43 /* base64url of a SHA-256 digest, without the NUL */

typedef enum jwks_err {
    JWKS_OK = 0,
    JWKS_ERR_NOMEM,
    JWKS_ERR_JSON,          /* not a JSON object with a "keys" array, or over the limits */
    JWKS_ERR_NO_KEYS,       /* not one usable RSA signing key in the set */
    /* why one key was skipped */
    JWKS_ERR_KEY_TYPE,      /* kty is not "RSA" */
    JWKS_ERR_KEY_USE,       /* use present and not "sig", or alg present and not "RS256" */
    JWKS_ERR_KEY_FIELD,     /* kid/n/e missing, not strings, or not strict base64url */
    JWKS_ERR_KEY_SIZE,      /* modulus outside 2048..16384 bits, or even; bad exponent */
    JWKS_ERR_KEY_DUPLICATE, /* a kid seen earlier in the same set */
} jwks_err;

const char *jwks_strerror(jwks_err e);

/* ---- parsing --------------------------------------------------------------------- */

typedef struct jwks_set jwks_set;

/* Parses a JWKS document. Keys that are not RSA are skipped silently; RSA keys with
 * a bad field are skipped and counted (the reason of the first one in err). A set
 * without any usable key is an error (JWKS_ERR_NO_KEYS). */
jwks_err jwks_parse(const char *json, size_t len, jwks_set **out, char *err, size_t errlen);
size_t jwks_set_count(const jwks_set *s);
size_t jwks_set_skipped(const jwks_set *s); /* RSA keys refused (not other kty) */
const char *jwks_set_kid(const jwks_set *s, size_t i);
EVP_PKEY *jwks_set_find(const jwks_set *s, const char *kid); /* borrowed, or NULL */
void jwks_set_free(jwks_set *s);

/* Parses one JWK object (JSON text). On JWKS_OK *out is the caller's and kid holds
 * the key's kid. */
jwks_err jwks_parse_key(const char *json, size_t len, char kid[JWKS_KID_MAX + 1], EVP_PKEY **out);

/* ---- export (veil dev-token, tests) ---------------------------------------------- */

/* RFC 7638 JWK thumbprint of an RSA key: base64url(SHA-256({"e":..,"kty":"RSA","n":..})).
 * out holds JWKS_THUMBPRINT_LEN + 1 bytes. 0 or -1. */
int jwks_rsa_thumbprint(EVP_PKEY *key, char out[JWKS_THUMBPRINT_LEN + 1]);
/* {"keys":[{"kty":"RSA","use":"sig","alg":"RS256","kid":kid,"n":..,"e":..}]} for the
 * public half of key; malloc'd, the caller's. NULL on error. */
char *jwks_rsa_public_json(EVP_PKEY *key, const char *kid);

#endif

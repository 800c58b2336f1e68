/* jwt — Clerk session tokens: compact JWS, RS256 only, verified with our own code on
 * OpenSSL 3 (libjwt 1.10 accepts alg-confused tokens, design.md).
 *
 * The algorithm is pinned: a header must say "alg":"RS256", carry a "kid", and carry
 * no key of its own (jwk/jku/x5u/x5c). Claims are trusted only after the
 * signature checked out. Output is a fixed-size jwt_auth (no heap): the caller owns it.
 * A parsed jwt_token is heap memory owned by the caller (jwt_token_free).
 * Nothing here logs, and no error text ever contains the token or a claim value.
 */
#ifndef VEIL_SERVER_JWT_H
#define VEIL_SERVER_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define JWT_MAX_TOKEN_LEN (16 * 1024) /* Clerk tokens are ~1-2 KB; longer is refused */
#define JWT_DEFAULT_LEEWAY_S 30       /* clock skew allowed on exp/nbf/iat (the original: 0, §10.20) */
#define JWT_MAX_LEEWAY_S 300
#define JWT_MIN_RSA_BITS 2048
#define JWT_MAX_RSA_BITS 16384

/* One enum for every outcome of authenticating a bearer token. jwt_detail() gives
 * the original's client-facing text, jwt_http_status() its status. */
typedef enum jwt_err {
    JWT_OK = 0,
    /* 403, from the Authorization header (FastAPI HTTPBearer, spec §4.0) */
    JWT_ERR_NO_CREDENTIALS,  /* header missing, or no credentials after the scheme */
    JWT_ERR_NOT_BEARER,      /* a scheme other than Bearer */
    /* 401 "Could not validate credentials" */
    JWT_ERR_MALFORMED,       /* not three base64url segments, bad JSON, too long */
    JWT_ERR_SIGNATURE,       /* signature does not verify */
    JWT_ERR_KEY,             /* the key is not an RSA key of 2048..16384 bits */
    JWT_ERR_SUBJECT,         /* sub missing, empty or not a string */
    JWT_ERR_TOO_LARGE,       /* a claim value does not fit jwt_auth */
    JWT_ERR_NOMEM,
    /* 401 "Invalid token headers" */
    JWT_ERR_ALG,             /* alg is not exactly RS256 (none, HS256, RS512, ...) */
    JWT_ERR_KID,             /* kid missing, empty or not a string */
    JWT_ERR_HEADER,          /* the header embeds or points at a key (jwk/jku/x5u/x5c), or has crit */
    JWT_ERR_UNKNOWN_KID,     /* no key with this kid in the JWKS (reported by jwks) */
    /* 401 "Token expired" */
    JWT_ERR_EXPIRED,         /* now >= exp + leeway */
    /* 401 "Invalid claims" */
    JWT_ERR_CLAIMS,          /* exp missing; exp/nbf/iat not numbers; o not an object; ... */
    JWT_ERR_NOT_YET_VALID,   /* now < nbf - leeway */
    JWT_ERR_ISSUED_IN_FUTURE,/* now < iat - leeway */
    JWT_ERR_ISSUER,          /* iss missing or not exactly the configured issuer */
    JWT_ERR_AUDIENCE,        /* aud rules (see jwt_config) */
    JWT_ERR_AZP,             /* azp missing or not in the allowed list */
    /* 503 "Authentication service unavailable" (reported by jwks) */
    JWT_ERR_UNAVAILABLE,     /* no usable JWKS: never fetched, or stale beyond stale_max */
} jwt_err;

/* A precise, fixed English description for logs (never NULL, never a claim value). */
const char *jwt_strerror(jwt_err e);
/* The original's `detail` text for the client: "Token expired", "Invalid claims",
 * "Invalid token headers", "Could not validate credentials", "Authentication service
 * unavailable", "Not authenticated", "Invalid authentication credentials". */
const char *jwt_detail(jwt_err e);
/* 200 for JWT_OK, else 401, 403 or 503. */
int jwt_http_status(jwt_err e);

/* What verification checks besides the signature. Strings are borrowed: they must
 * outlive every call that uses the config (process configuration, normally). */
typedef struct jwt_config {
    const char *issuer;   /* required: iss must equal it byte for byte */
    /* NULL: a token carrying aud is rejected (python-jose with audience=None).
     * Set: the token's aud (a string, or an array of strings) must contain it;
     * a token without aud is rejected too (stricter than python-jose). */
    const char *audience;
    /* Authorized parties (Clerk's azp, the browser origin). n_azp == 0: not checked
     * (as the original); else azp is required and must equal one entry (§10.20). */
    const char *const *azp;
    size_t n_azp;
    long leeway_s;        /* 0..JWT_MAX_LEEWAY_S; larger values are clamped */
} jwt_config;

/* Checks a config once at start: issuer set, leeway in range. 0 or -1 + err. */
int jwt_config_check(const jwt_config *cfg, char *err, size_t errlen);

/* The caller's identity, from a verified token (Clerk v2 claims; the original's
 * AuthContext). Empty strings when absent. v1 claims (org_id, org_role) are ignored,
 * as the original did. */
#define JWT_ID_MAX 256
#define JWT_ROLE_MAX 128
#define JWT_MAX_PERMISSIONS 64
#define JWT_PERMISSIONS_MAX 1024 /* o.per's items, joined: one block (a held SSE stream keeps it) */
typedef struct jwt_auth {
    char user_id[JWT_ID_MAX];  /* sub */
    char org_id[JWT_ID_MAX];   /* o.id; "" in personal context */
    char org_role[JWT_ROLE_MAX]; /* "org:" + o.rol, or "" */
    char org_slug[JWT_ID_MAX]; /* o.slg */
    size_t n_permissions;      /* o.per's items (empty ones dropped) */
    char permissions[JWT_PERMISSIONS_MAX]; /* those items joined by ',' */
    int64_t exp;               /* seconds since the epoch */
} jwt_auth;

#define JWT_ROLE_ORG_ADMIN "org:admin"

/* The token names an active organization (else: personal context). */
static inline bool jwt_auth_is_org(const jwt_auth *a) { return a->org_id[0] != '\0'; }
/* The token's o.per holds exactly the permission p. */
bool jwt_auth_has_permission(const jwt_auth *a, const char *p);
/* The token's role in its organization is admin (the JWT's word, not the database's). */
static inline bool jwt_auth_is_org_admin(const jwt_auth *a)
{
    return strcmp(a->org_role, JWT_ROLE_ORG_ADMIN) == 0;
}

/* ---- base64url (RFC 4648 §5), as JWS uses it ---------------------------------- */

/* Strict: alphabet [A-Za-z0-9_-] only, no padding, no whitespace, length % 4 != 1,
 * and the unused low bits of the last char must be zero (one encoding per value).
 * Writes at most out_cap bytes; returns the decoded length or -1. */
long jwt_b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_cap);
/* Unpadded. out must hold jwt_b64url_len(len) + 1 bytes (NUL-terminated). */
size_t jwt_b64url_len(size_t len);
void jwt_b64url_encode(const uint8_t *in, size_t len, char *out);

/* ---- the Authorization header ---------------------------------------------------- */

/* FastAPI HTTPBearer: the scheme is split off at the first space and compared
 * case-insensitively with "Bearer". header may be NULL (missing). On JWT_OK,
 * *token points into header (the rest after the space). */
jwt_err jwt_bearer_token(const char *header, const char **token, size_t *token_len);

/* ---- parse, then verify once the key is known ----------------------------------- */

typedef struct jwt_token jwt_token;

/* Splits and decodes the token and checks its header (alg, kid, no embedded keys).
 * Claims are parsed as JSON but not trusted yet. On success *out is the caller's. */
jwt_err jwt_parse(const char *token, size_t len, jwt_token **out);
/* The header's kid (valid while tok lives). */
const char *jwt_token_kid(const jwt_token *tok);
void jwt_token_free(jwt_token *tok);

/* Verifies the RS256 signature with key (an RSA public key), then the claims at
 * time now, and fills *auth (zeroed first; untouched claims stay empty). */
jwt_err jwt_verify_parsed(const jwt_token *tok, EVP_PKEY *key, const jwt_config *cfg, time_t now,
                          jwt_auth *auth);

/* The whole check when the key is at hand: the key finder returns a borrowed key for
 * a kid, or NULL (-> JWT_ERR_UNKNOWN_KID). */
typedef EVP_PKEY *(*jwt_key_fn)(void *ud, const char *kid);
jwt_err jwt_verify(const char *token, size_t len, jwt_key_fn find_key, void *ud,
                   const jwt_config *cfg, time_t now, jwt_auth *auth);

/* ---- signing (dev-token verb and tests) --------------------------------------- */

/* token = b64url(header_json) "." b64url(claims_json) "." b64url(RS256 signature).
 * The JSON texts are used as given (tests craft odd headers with it). *out is
 * malloc'd, NUL-terminated and the caller's. */
jwt_err jwt_sign_rs256(EVP_PKEY *priv, const char *header_json, const char *claims_json, char **out);

#endif

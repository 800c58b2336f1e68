/* jwks — JWKS parsing and export. See jwks.h. */
#include "auth/jwks.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>

#include "common/buf.h"
#include "common/log.h"

#define MAX_E_BITS 64 /* public exponents in use are 3..65537; more is not an RSA key we trust */

const char *jwks_strerror(jwks_err e)
{
    switch (e) {
    case JWKS_OK: return "ok";
    case JWKS_ERR_NOMEM: return "out of memory";
    case JWKS_ERR_JSON: return "not a JWKS document (a JSON object with a keys array)";
    case JWKS_ERR_NO_KEYS: return "no usable RSA signing key in the JWKS";
    case JWKS_ERR_KEY_TYPE: return "key type is not RSA";
    case JWKS_ERR_KEY_USE: return "key is not for RS256 signatures (use/alg)";
    case JWKS_ERR_KEY_FIELD: return "key field kid/n/e missing or not base64url";
    case JWKS_ERR_KEY_SIZE: return "RSA modulus below 2048 bits (or otherwise unusable)";
    case JWKS_ERR_KEY_DUPLICATE: return "duplicate kid";
    }
    return "unknown error";
}

/* ---- one key ------------------------------------------------------------------- */

/* Decodes a base64url member into a fresh BIGNUM. */
static jwks_err member_bn(const json_t *jwk, const char *name, BIGNUM **out)
{
    json_t *v = json_object_get(jwk, name);
    if (!json_is_string(v) || json_string_length(v) == 0)
        return JWKS_ERR_KEY_FIELD;
    size_t len = json_string_length(v), cap = len / 4 * 3 + 3;
    if (cap > JWT_MAX_RSA_BITS / 8 + 8)
        return JWKS_ERR_KEY_SIZE;
    uint8_t *raw = malloc(cap);
    if (!raw)
        return JWKS_ERR_NOMEM;
    long n = jwt_b64url_decode(json_string_value(v), len, raw, cap);
    if (n <= 0) {
        free(raw);
        return JWKS_ERR_KEY_FIELD;
    }
    *out = BN_bin2bn(raw, (int)n, NULL);
    free(raw);
    return *out ? JWKS_OK : JWKS_ERR_NOMEM;
}

static jwks_err rsa_from_ne(const BIGNUM *n, const BIGNUM *e, EVP_PKEY **out)
{
    int nbits = BN_num_bits(n), ebits = BN_num_bits(e);
    /* e = 1 would make every message its own signature; an even n is not a modulus */
    if (nbits < JWT_MIN_RSA_BITS || nbits > JWT_MAX_RSA_BITS || !BN_is_odd(n) || ebits < 2 ||
        ebits > MAX_E_BITS || !BN_is_odd(e))
        return JWKS_ERR_KEY_SIZE;
    jwks_err rc = JWKS_ERR_NOMEM;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    if (!bld || OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) != 1 ||
        !(params = OSSL_PARAM_BLD_to_param(bld)) ||
        !(ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL)))
        goto out;
    *out = NULL;
    if (EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        rc = JWKS_ERR_KEY_SIZE;
        goto out;
    }
    rc = JWKS_OK;
out:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    ERR_clear_error();
    return rc;
}

static jwks_err key_from_json(const json_t *jwk, char kid[JWKS_KID_MAX + 1], EVP_PKEY **out)
{
    if (!json_is_object(jwk))
        return JWKS_ERR_KEY_FIELD;
    json_t *kty = json_object_get(jwk, "kty");
    if (!json_is_string(kty) || strcmp(json_string_value(kty), "RSA") != 0)
        return JWKS_ERR_KEY_TYPE;
    json_t *use = json_object_get(jwk, "use"), *alg = json_object_get(jwk, "alg");
    if ((use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0)) ||
        (alg && (!json_is_string(alg) || strcmp(json_string_value(alg), "RS256") != 0)))
        return JWKS_ERR_KEY_USE;
    json_t *k = json_object_get(jwk, "kid");
    if (!json_is_string(k) || json_string_length(k) == 0 || json_string_length(k) > JWKS_KID_MAX)
        return JWKS_ERR_KEY_FIELD;
    BIGNUM *n = NULL, *e = NULL;
    jwks_err rc = member_bn(jwk, "n", &n);
    if (rc == JWKS_OK)
        rc = member_bn(jwk, "e", &e);
    if (rc == JWKS_OK)
        rc = rsa_from_ne(n, e, out);
    if (rc == JWKS_OK)
        memcpy(kid, json_string_value(k), json_string_length(k) + 1);
    BN_free(n);
    BN_free(e);
    return rc;
}

jwks_err jwks_parse_key(const char *json, size_t len, char kid[JWKS_KID_MAX + 1], EVP_PKEY **out)
{
    *out = NULL;
    if (!json || len > JWKS_MAX_BODY)
        return JWKS_ERR_JSON;
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        return JWKS_ERR_JSON;
    jwks_err rc = key_from_json(j, kid, out);
    json_decref(j);
    return rc;
}

/* ---- a set ----------------------------------------------------------------------- */

typedef struct jwks_entry {
    char kid[JWKS_KID_MAX + 1];
    EVP_PKEY *key;
} jwks_entry;

struct jwks_set {
    size_t n, skipped;
    jwks_entry e[JWKS_MAX_KEYS];
};

size_t jwks_set_count(const jwks_set *s) { return s ? s->n : 0; }
size_t jwks_set_skipped(const jwks_set *s) { return s ? s->skipped : 0; }

const char *jwks_set_kid(const jwks_set *s, size_t i)
{
    return s && i < s->n ? s->e[i].kid : NULL;
}

EVP_PKEY *jwks_set_find(const jwks_set *s, const char *kid)
{
    if (!s || !kid)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->e[i].kid, kid) == 0)
            return s->e[i].key;
    return NULL;
}

void jwks_set_free(jwks_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        EVP_PKEY_free(s->e[i].key);
    free(s);
}

jwks_err jwks_parse(const char *json, size_t len, jwks_set **out, char *err, size_t errlen)
{
    *out = NULL;
    if (errlen)
        err[0] = '\0';
    if (!json || len > JWKS_MAX_BODY) {
        snprintf(err, errlen, "JWKS document too large");
        return JWKS_ERR_JSON;
    }
    json_t *j = json_loadb(json, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *keys = json_object_get(j, "keys");
    if (!json_is_object(j) || !json_is_array(keys)) {
        json_decref(j);
        snprintf(err, errlen, "%s", jwks_strerror(JWKS_ERR_JSON));
        return JWKS_ERR_JSON;
    }
    jwks_set *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(j);
        return JWKS_ERR_NOMEM;
    }
    size_t i;
    json_t *jwk;
    json_array_foreach(keys, i, jwk) {
        if (s->n == JWKS_MAX_KEYS)
            break;
        jwks_entry *en = &s->e[s->n];
        jwks_err rc = key_from_json(jwk, en->kid, &en->key);
        if (rc == JWKS_OK && jwks_set_find(s, en->kid)) {
            EVP_PKEY_free(en->key);
            en->key = NULL;
            rc = JWKS_ERR_KEY_DUPLICATE; /* keep the first: a kid must name one key */
        }
        if (rc == JWKS_ERR_NOMEM) {
            json_decref(j);
            jwks_set_free(s);
            return rc;
        }
        if (rc == JWKS_OK) {
            s->n++;
        } else if (rc != JWKS_ERR_KEY_TYPE) { /* EC/oct keys are someone else's business */
            if (s->skipped++ == 0)
                snprintf(err, errlen, "key %zu skipped: %s", i, jwks_strerror(rc));
        }
    }
    json_decref(j);
    if (s->n == 0) {
        jwks_set_free(s);
        if (errlen && !err[0])
            snprintf(err, errlen, "%s", jwks_strerror(JWKS_ERR_NO_KEYS));
        return JWKS_ERR_NO_KEYS;
    }
    *out = s;
    return JWKS_OK;
}

/* ---- export ---------------------------------------------------------------------- */

/* base64url of a big-endian BIGNUM parameter, malloc'd. */
static char *param_b64(EVP_PKEY *key, const char *name)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
        return NULL;
    int n = BN_num_bytes(bn);
    uint8_t *raw = malloc((size_t)n + 1);
    char *s = malloc(jwt_b64url_len((size_t)n) + 1);
    if (raw && s) {
        BN_bn2bin(bn, raw);
        jwt_b64url_encode(raw, (size_t)n, s);
    } else {
        free(s);
        s = NULL;
    }
    free(raw);
    BN_free(bn);
    return s;
}

int jwks_rsa_thumbprint(EVP_PKEY *key, char out[JWKS_THUMBPRINT_LEN + 1])
{
    if (!key || !EVP_PKEY_is_a(key, "RSA"))
        return -1;
    char *n = param_b64(key, OSSL_PKEY_PARAM_RSA_N), *e = param_b64(key, OSSL_PKEY_PARAM_RSA_E);
    vbuf b = VBUF_INIT;
    int rc = -1;
    /* RFC 7638 §3.2: required members only, lexicographic order, no whitespace */
    if (n && e && vbuf_printf(&b, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, n) == 0) {
        uint8_t d[SHA256_DIGEST_LENGTH];
        SHA256(b.data, b.len, d);
        jwt_b64url_encode(d, sizeof d, out);
        rc = 0;
    }
    vbuf_free(&b);
    free(n);
    free(e);
    ERR_clear_error();
    return rc;
}

char *jwks_rsa_public_json(EVP_PKEY *key, const char *kid)
{
    if (!key || !kid || !EVP_PKEY_is_a(key, "RSA"))
        return NULL;
    char *n = param_b64(key, OSSL_PKEY_PARAM_RSA_N), *e = param_b64(key, OSSL_PKEY_PARAM_RSA_E);
    char *out = NULL;
    if (n && e) {
        json_t *j = json_pack("{s:[{s:s,s:s,s:s,s:s,s:s,s:s}]}", "keys", "kty", "RSA", "use", "sig",
                              "alg", "RS256", "kid", kid, "n", n, "e", e);
        if (j)
            out = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(j);
    }
    free(n);
    free(e);
    ERR_clear_error();
    return out;
}

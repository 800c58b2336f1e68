/* jwt — compact JWS, RS256 pinned, Clerk v2 claims. See jwt.h. */
#include "auth/jwt.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rsa.h>

#include "common/base64.h"

#define MAX_SIG_LEN (JWT_MAX_RSA_BITS / 8)
/* Header members that carry or point at a key: a verifier that honoured them would
 * let the token choose its own key (RFC 8725 §3.10). */
static const char *const FORBIDDEN_HEADER_MEMBERS[] = {"jwk", "jku", "x5u", "x5c", "crit", NULL};

struct jwt_token {
    json_t *header;
    json_t *claims;
    char *signing_input; /* "b64(header).b64(payload)", NUL-terminated */
    size_t signing_len;
    uint8_t *sig;
    size_t sig_len;
    const char *kid; /* borrowed from header */
};

/* ---- errors ------------------------------------------------------------------- */

const char *jwt_strerror(jwt_err e)
{
    switch (e) {
    case JWT_OK: return "ok";
    case JWT_ERR_NO_CREDENTIALS: return "no bearer credentials";
    case JWT_ERR_NOT_BEARER: return "authorization scheme is not Bearer";
    case JWT_ERR_MALFORMED: return "malformed token";
    case JWT_ERR_SIGNATURE: return "signature does not verify";
    case JWT_ERR_KEY: return "verification key is not a usable RSA key";
    case JWT_ERR_SUBJECT: return "sub claim missing or invalid";
    case JWT_ERR_TOO_LARGE: return "a claim value is too long";
    case JWT_ERR_NOMEM: return "out of memory";
    case JWT_ERR_ALG: return "alg is not RS256";
    case JWT_ERR_KID: return "kid missing or invalid";
    case JWT_ERR_HEADER: return "header carries a key reference or crit";
    case JWT_ERR_UNKNOWN_KID: return "no JWKS key with this kid";
    case JWT_ERR_EXPIRED: return "token expired";
    case JWT_ERR_CLAIMS: return "a registered claim has the wrong type or is missing";
    case JWT_ERR_NOT_YET_VALID: return "token not yet valid (nbf)";
    case JWT_ERR_ISSUED_IN_FUTURE: return "token issued in the future (iat)";
    case JWT_ERR_ISSUER: return "issuer mismatch";
    case JWT_ERR_AUDIENCE: return "audience mismatch";
    case JWT_ERR_AZP: return "authorized party not allowed";
    case JWT_ERR_UNAVAILABLE: return "JWKS unavailable";
    }
    return "unknown error";
}

const char *jwt_detail(jwt_err e)
{
    switch (e) {
    case JWT_OK: return "OK";
    case JWT_ERR_NO_CREDENTIALS: return "Not authenticated";
    case JWT_ERR_NOT_BEARER: return "Invalid authentication credentials";
    case JWT_ERR_ALG:
    case JWT_ERR_KID:
    case JWT_ERR_HEADER:
    case JWT_ERR_UNKNOWN_KID: return "Invalid token headers";
    case JWT_ERR_EXPIRED: return "Token expired";
    case JWT_ERR_CLAIMS:
    case JWT_ERR_NOT_YET_VALID:
    case JWT_ERR_ISSUED_IN_FUTURE:
    case JWT_ERR_ISSUER:
    case JWT_ERR_AUDIENCE:
    case JWT_ERR_AZP: return "Invalid claims";
    case JWT_ERR_UNAVAILABLE: return "Authentication service unavailable";
    case JWT_ERR_MALFORMED:
    case JWT_ERR_SIGNATURE:
    case JWT_ERR_KEY:
    case JWT_ERR_SUBJECT:
    case JWT_ERR_TOO_LARGE:
    case JWT_ERR_NOMEM: break;
    }
    return "Could not validate credentials";
}

int jwt_http_status(jwt_err e)
{
    switch (e) {
    case JWT_OK: return 200;
    case JWT_ERR_NO_CREDENTIALS:
    case JWT_ERR_NOT_BEARER: return 403;
    case JWT_ERR_UNAVAILABLE: return 503;
    default: return 401;
    }
}

int jwt_config_check(const jwt_config *cfg, char *err, size_t errlen)
{
    if (!cfg || !cfg->issuer || !cfg->issuer[0]) {
        snprintf(err, errlen, "the JWT issuer (CLERK_ISSUER) is not set");
        return -1;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > JWT_MAX_LEEWAY_S) {
        snprintf(err, errlen, "the JWT leeway must be 0..%d seconds", JWT_MAX_LEEWAY_S);
        return -1;
    }
    if (cfg->audience && !cfg->audience[0]) {
        snprintf(err, errlen, "the JWT audience is empty");
        return -1;
    }
    for (size_t i = 0; i < cfg->n_azp; i++)
        if (!cfg->azp || !cfg->azp[i] || !cfg->azp[i][0]) {
            snprintf(err, errlen, "an authorized party (azp) entry is empty");
            return -1;
        }
    return 0;
}

/* ---- base64url ------------------------------------------------------------------ */

long jwt_b64url_decode(const char *in, size_t len, uint8_t *out, size_t out_cap)
{
    return base64_decode(B64_URL, in, len, out, out_cap);
}

size_t jwt_b64url_len(size_t len)
{
    return base64_encoded_len(B64_URL, len);
}

void jwt_b64url_encode(const uint8_t *in, size_t len, char *out)
{
    base64_encode(B64_URL, in, len, out);
}

/* ---- Authorization header ------------------------------------------------------- */

jwt_err jwt_bearer_token(const char *header, const char **token, size_t *token_len)
{
    if (!header)
        return JWT_ERR_NO_CREDENTIALS;
    const char *sp = strchr(header, ' ');
    size_t scheme_len = sp ? (size_t)(sp - header) : strlen(header);
    const char *cred = sp ? sp + 1 : "";
    /* HTTPBearer: an empty scheme or empty credentials is "Not authenticated" */
    if (scheme_len == 0 || !cred[0])
        return JWT_ERR_NO_CREDENTIALS;
    if (scheme_len != 6 || strncasecmp(header, "bearer", 6) != 0)
        return JWT_ERR_NOT_BEARER;
    *token = cred;
    *token_len = strlen(cred);
    return JWT_OK;
}

/* ---- parsing -------------------------------------------------------------------- */

void jwt_token_free(jwt_token *tok)
{
    if (!tok)
        return;
    json_decref(tok->header);
    json_decref(tok->claims);
    free(tok->signing_input);
    free(tok->sig);
    free(tok);
}

const char *jwt_token_kid(const jwt_token *tok)
{
    return tok ? tok->kid : NULL;
}

/* Decodes one base64url segment holding a JSON object. */
static jwt_err decode_json_segment(const char *seg, size_t len, json_t **out)
{
    size_t cap = len / 4 * 3 + 3;
    uint8_t *raw = malloc(cap);
    if (!raw)
        return JWT_ERR_NOMEM;
    long n = jwt_b64url_decode(seg, len, raw, cap);
    if (n <= 0) {
        free(raw);
        return JWT_ERR_MALFORMED;
    }
    /* duplicate members are refused: two parsers must never read two different tokens */
    json_t *j = json_loadb((const char *)raw, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json_is_object(j)) {
        json_decref(j);
        return JWT_ERR_MALFORMED;
    }
    *out = j;
    return JWT_OK;
}

static jwt_err check_header(jwt_token *t)
{
    const char *alg = json_string_value(json_object_get(t->header, "alg"));
    if (!alg || strcmp(alg, "RS256") != 0) /* pinned: none, HS256, RS512, PS256... all refused */
        return JWT_ERR_ALG;
    json_t *kid = json_object_get(t->header, "kid");
    if (!json_is_string(kid) || json_string_length(kid) == 0 || json_string_length(kid) > 256)
        return JWT_ERR_KID;
    for (size_t i = 0; FORBIDDEN_HEADER_MEMBERS[i]; i++)
        if (json_object_get(t->header, FORBIDDEN_HEADER_MEMBERS[i]))
            return JWT_ERR_HEADER;
    t->kid = json_string_value(kid);
    return JWT_OK;
}

jwt_err jwt_parse(const char *token, size_t len, jwt_token **out)
{
    *out = NULL;
    if (!token || len == 0 || len > JWT_MAX_TOKEN_LEN)
        return JWT_ERR_MALFORMED;
    const char *d1 = memchr(token, '.', len);
    if (!d1)
        return JWT_ERR_MALFORMED;
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token));
    if (!d2)
        return JWT_ERR_MALFORMED;
    const char *end = token + len;
    if (memchr(d2 + 1, '.', (size_t)(end - d2 - 1))) /* JWE (5 segments) or junk */
        return JWT_ERR_MALFORMED;
    size_t hlen = (size_t)(d1 - token), plen = (size_t)(d2 - d1 - 1), slen = (size_t)(end - d2 - 1);
    if (hlen == 0 || plen == 0 || slen == 0)
        return JWT_ERR_MALFORMED;

    jwt_token *t = calloc(1, sizeof *t);
    if (!t)
        return JWT_ERR_NOMEM;
    jwt_err e = decode_json_segment(token, hlen, &t->header);
    if (e != JWT_OK)
        goto fail;
    if ((e = check_header(t)) != JWT_OK)
        goto fail;
    if ((e = decode_json_segment(d1 + 1, plen, &t->claims)) != JWT_OK)
        goto fail;
    e = JWT_ERR_NOMEM;
    t->sig = malloc(MAX_SIG_LEN);
    t->signing_len = (size_t)(d2 - token);
    t->signing_input = malloc(t->signing_len + 1);
    if (!t->sig || !t->signing_input)
        goto fail;
    memcpy(t->signing_input, token, t->signing_len);
    t->signing_input[t->signing_len] = '\0';
    long n = jwt_b64url_decode(d2 + 1, slen, t->sig, MAX_SIG_LEN);
    if (n <= 0) {
        e = JWT_ERR_MALFORMED;
        goto fail;
    }
    t->sig_len = (size_t)n;
    *out = t;
    return JWT_OK;
fail:
    jwt_token_free(t);
    return e;
}

/* ---- signature ------------------------------------------------------------------ */

static jwt_err check_key(EVP_PKEY *key)
{
    /* EVP_PKEY_is_a(..., "RSA") is false for RSA-PSS keys: PKCS#1 v1.5 only */
    if (!key || !EVP_PKEY_is_a(key, "RSA"))
        return JWT_ERR_KEY;
    int bits = EVP_PKEY_get_bits(key);
    if (bits < JWT_MIN_RSA_BITS || bits > JWT_MAX_RSA_BITS)
        return JWT_ERR_KEY;
    return JWT_OK;
}

static jwt_err verify_rs256(EVP_PKEY *key, const char *input, size_t len, const uint8_t *sig,
                            size_t sig_len)
{
    jwt_err e = check_key(key);
    if (e != JWT_OK)
        return e;
    if (sig_len != (size_t)EVP_PKEY_get_size(key))
        return JWT_ERR_SIGNATURE;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return JWT_ERR_NOMEM;
    EVP_PKEY_CTX *pctx = NULL;
    e = JWT_ERR_SIGNATURE;
    if (EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", NULL, NULL, key, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1)
        goto out;
    if (EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input, len) == 1)
        e = JWT_OK;
out:
    EVP_MD_CTX_free(md);
    ERR_clear_error(); /* a failed verify leaves errors other OpenSSL users would see */
    return e;
}

/* ---- claims --------------------------------------------------------------------- */

/* A NumericDate as int64 (reals floor, as python's int() does for positive values). */
static int numeric_date(const json_t *v, int64_t *out)
{
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (!isfinite(d))
            return -1;
        if (d >= 9.0e18)
            *out = INT64_MAX;
        else if (d <= -9.0e18)
            *out = INT64_MIN;
        else {
            int64_t t = (int64_t)d; /* floor without libm */
            *out = (double)t > d ? t - 1 : t;
        }
        return 0;
    }
    return -1;
}

static bool str_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, json_string_length(v)) == 0;
}

static jwt_err check_times(const json_t *claims, int64_t now, int64_t leeway, int64_t *exp_out)
{
    int64_t t;
    json_t *v;
    /* python-jose's order: iat, nbf, exp (it matters for which text a client sees) */
    if ((v = json_object_get(claims, "iat"))) {
        if (numeric_date(v, &t) < 0)
            return JWT_ERR_CLAIMS;
        if (t > now + leeway)
            return JWT_ERR_ISSUED_IN_FUTURE;
    }
    if ((v = json_object_get(claims, "nbf"))) {
        if (numeric_date(v, &t) < 0)
            return JWT_ERR_CLAIMS;
        if (t > now + leeway)
            return JWT_ERR_NOT_YET_VALID;
    }
    v = json_object_get(claims, "exp");
    if (!v || numeric_date(v, &t) < 0) /* required: a token without exp never dies */
        return JWT_ERR_CLAIMS;
    if (now - leeway >= t)
        return JWT_ERR_EXPIRED;
    *exp_out = t;
    return JWT_OK;
}

static jwt_err check_audience(const json_t *claims, const char *audience)
{
    json_t *aud = json_object_get(claims, "aud");
    if (!audience)
        return aud ? JWT_ERR_AUDIENCE : JWT_OK;
    if (json_is_string(aud))
        return str_is(aud, audience) ? JWT_OK : JWT_ERR_AUDIENCE;
    if (!json_is_array(aud))
        return JWT_ERR_AUDIENCE;
    bool found = false;
    size_t i;
    json_t *it;
    json_array_foreach(aud, i, it) {
        if (!json_is_string(it))
            return JWT_ERR_AUDIENCE;
        if (str_is(it, audience))
            found = true;
    }
    return found ? JWT_OK : JWT_ERR_AUDIENCE;
}

static jwt_err check_azp(const json_t *claims, const jwt_config *cfg)
{
    if (cfg->n_azp == 0)
        return JWT_OK;
    json_t *azp = json_object_get(claims, "azp");
    if (!json_is_string(azp))
        return JWT_ERR_AZP;
    for (size_t i = 0; i < cfg->n_azp; i++)
        if (str_is(azp, cfg->azp[i]))
            return JWT_OK;
    return JWT_ERR_AZP;
}

/* Copies an optional string member; absent or null leaves dst empty. */
static jwt_err copy_opt(const json_t *obj, const char *name, const char *prefix, char *dst,
                        size_t cap)
{
    json_t *v = json_object_get(obj, name);
    if (!v || json_is_null(v))
        return JWT_OK;
    if (!json_is_string(v))
        return JWT_ERR_CLAIMS;
    size_t plen = strlen(prefix), n = json_string_length(v);
    if (n == 0)
        return JWT_OK;
    if (plen + n >= cap)
        return JWT_ERR_TOO_LARGE;
    memcpy(dst, prefix, plen);
    memcpy(dst + plen, json_string_value(v), n);
    dst[plen + n] = '\0';
    return JWT_OK;
}

static jwt_err split_permissions(const json_t *per, jwt_auth *a)
{
    if (!per || json_is_null(per))
        return JWT_OK;
    if (!json_is_string(per))
        return JWT_ERR_CLAIMS;
    const char *s = json_string_value(per), *end = s + json_string_length(per);
    size_t used = 0;
    while (s < end) {
        const char *c = memchr(s, ',', (size_t)(end - s));
        size_t n = c ? (size_t)(c - s) : (size_t)(end - s);
        if (n > 0) {
            size_t sep = used ? 1 : 0;
            if (a->n_permissions == JWT_MAX_PERMISSIONS || used + sep + n >= JWT_PERMISSIONS_MAX ||
                memchr(s, '\0', n))
                return JWT_ERR_TOO_LARGE;
            if (sep)
                a->permissions[used++] = ',';
            memcpy(a->permissions + used, s, n);
            used += n;
            a->permissions[used] = '\0';
            a->n_permissions++;
        }
        s += n + 1;
    }
    return JWT_OK;
}

bool jwt_auth_has_permission(const jwt_auth *a, const char *p)
{
    size_t n = strlen(p);
    for (const char *s = a->permissions; n && *s;) {
        const char *c = strchr(s, ',');
        size_t len = c ? (size_t)(c - s) : strlen(s);
        if (len == n && memcmp(s, p, n) == 0)
            return true;
        s += len + (c ? 1 : 0);
    }
    return false;
}

/* Clerk v2 compact organisation claim: o = {id, rol, slg, per, ...} */
static jwt_err map_org(const json_t *claims, jwt_auth *a)
{
    json_t *o = json_object_get(claims, "o");
    if (!o || json_is_null(o))
        return JWT_OK;
    if (!json_is_object(o))
        return JWT_ERR_CLAIMS;
    jwt_err e;
    if ((e = copy_opt(o, "id", "", a->org_id, sizeof a->org_id)) != JWT_OK ||
        (e = copy_opt(o, "rol", "org:", a->org_role, sizeof a->org_role)) != JWT_OK ||
        (e = copy_opt(o, "slg", "", a->org_slug, sizeof a->org_slug)) != JWT_OK)
        return e;
    return split_permissions(json_object_get(o, "per"), a);
}

static jwt_err check_claims(const json_t *claims, const jwt_config *cfg, time_t now, jwt_auth *a)
{
    int64_t leeway = cfg->leeway_s < 0 ? 0 : cfg->leeway_s > JWT_MAX_LEEWAY_S ? JWT_MAX_LEEWAY_S
                                                                             : cfg->leeway_s;
    jwt_err e = check_times(claims, (int64_t)now, leeway, &a->exp);
    if (e != JWT_OK)
        return e;
    if ((e = check_audience(claims, cfg->audience)) != JWT_OK)
        return e;
    if (!cfg->issuer || !str_is(json_object_get(claims, "iss"), cfg->issuer))
        return JWT_ERR_ISSUER;
    if ((e = check_azp(claims, cfg)) != JWT_OK)
        return e;
    json_t *sub = json_object_get(claims, "sub");
    if (!json_is_string(sub) || json_string_length(sub) == 0)
        return JWT_ERR_SUBJECT;
    if ((e = copy_opt(claims, "sub", "", a->user_id, sizeof a->user_id)) != JWT_OK)
        return e;
    return map_org(claims, a);
}

jwt_err jwt_verify_parsed(const jwt_token *tok, EVP_PKEY *key, const jwt_config *cfg, time_t now,
                          jwt_auth *auth)
{
    memset(auth, 0, sizeof *auth);
    if (!tok || !cfg)
        return JWT_ERR_MALFORMED;
    /* nothing in the claims is looked at before the signature checks out */
    jwt_err e = verify_rs256(key, tok->signing_input, tok->signing_len, tok->sig, tok->sig_len);
    if (e == JWT_OK)
        e = check_claims(tok->claims, cfg, now, auth);
    if (e != JWT_OK)
        memset(auth, 0, sizeof *auth);
    return e;
}

jwt_err jwt_verify(const char *token, size_t len, jwt_key_fn find_key, void *ud,
                   const jwt_config *cfg, time_t now, jwt_auth *auth)
{
    memset(auth, 0, sizeof *auth);
    jwt_token *t = NULL;
    jwt_err e = jwt_parse(token, len, &t);
    if (e != JWT_OK)
        return e;
    EVP_PKEY *key = find_key ? find_key(ud, t->kid) : NULL;
    e = key ? jwt_verify_parsed(t, key, cfg, now, auth) : JWT_ERR_UNKNOWN_KID;
    jwt_token_free(t);
    return e;
}

/* ---- signing -------------------------------------------------------------------- */

jwt_err jwt_sign_rs256(EVP_PKEY *priv, const char *header_json, const char *claims_json, char **out)
{
    *out = NULL;
    jwt_err e = check_key(priv);
    if (e != JWT_OK)
        return e;
    if (!header_json || !claims_json)
        return JWT_ERR_MALFORMED;
    size_t hl = strlen(header_json), cl = strlen(claims_json);
    if (hl > JWT_MAX_TOKEN_LEN || cl > JWT_MAX_TOKEN_LEN)
        return JWT_ERR_TOO_LARGE;
    size_t sig_cap = (size_t)EVP_PKEY_get_size(priv);
    size_t total = jwt_b64url_len(hl) + 1 + jwt_b64url_len(cl) + 1 + jwt_b64url_len(sig_cap) + 1;
    char *tok = malloc(total);
    uint8_t *sig = malloc(sig_cap);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    e = JWT_ERR_NOMEM;
    if (!tok || !sig || !md)
        goto out;
    jwt_b64url_encode((const uint8_t *)header_json, hl, tok);
    size_t o = strlen(tok);
    tok[o++] = '.';
    jwt_b64url_encode((const uint8_t *)claims_json, cl, tok + o);
    size_t signing_len = o + strlen(tok + o);
    EVP_PKEY_CTX *pctx = NULL;
    size_t sig_len = sig_cap;
    e = JWT_ERR_KEY;
    if (EVP_DigestSignInit_ex(md, &pctx, "SHA256", NULL, NULL, priv, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1 ||
        EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)tok, signing_len) != 1)
        goto out;
    tok[signing_len] = '.';
    jwt_b64url_encode(sig, sig_len, tok + signing_len + 1);
    *out = tok;
    tok = NULL;
    e = JWT_OK;
out:
    EVP_MD_CTX_free(md);
    free(sig);
    free(tok);
    ERR_clear_error();
    return e;
}

/* libFuzzer target for server/jwt (token parse + RS256 verify + claims), server/jwks
 * (JWKS documents, single JWKs) and base64url.
 *
 * The first input byte picks the mode, byte % 4 (style.md, aws-c-http's
 * fuzz_*_correct/_random; the seeds in fuzz/seeds/fuzz_jwt/ start with '0'..'3'):
 *   0: the rest is fed as is to the token parser/verifier, the JWKS parser, the
 *      bearer-header splitter and the base64url decoder (random input);
 *   1: a valid token (template picked by the second byte), signed at start-up with a
 *      fixed key, is mutated by the remaining bytes, 3 at a time: op, position, value;
 *   2: the rest is the claims' JSON, signed with that key (only when it is a JSON
 *      object: signing costs ~0.3 ms) so the claim rules behind the signature are fuzzed;
 *   3: the rest is the header's JSON, in a token with a fixed payload and signature.
 * Contracts checked (trap on violation), besides "no crash":
 *   - a decoded base64url string re-encodes to exactly the input (one spelling per value);
 *   - a token that verifies is byte-for-byte the token that was signed: no mutation of a
 *     signed token may pass (the signature covers header and claims; alg is pinned);
 *   - a successful verification fills a non-empty user_id; a failure leaves it empty;
 *   - every error maps to a 401/403/503 detail text;
 *   - verified claims are what the token says: user_id is sub, exp is in the future
 *     (leeway allowed), the audience and azp rules of each config hold, the org role
 *     is "org:" + o.rol, the permissions are o.per's non-empty items;
 *   - a header that parses says alg RS256, has a kid, and embeds or points at no key.
 * Every input is copied into an exactly-sized heap buffer so ASan sees any over-read.
 *
 * Built and run by `make fuzz` (fuzz/fuzz.cmake).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/rsa.h>

#include "auth/jwks.h"
#include "auth/jwt.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define NOW ((time_t)1700000000)
#define ISS "https://clerk.example.com"
#define MAX_MUTATED_LEN (JWT_MAX_TOKEN_LEN + 64)

static const char *const CLAIM_TEMPLATES[] = {
    "{\"sub\":\"user_1\",\"iss\":\"" ISS "\",\"iat\":1699999990,\"nbf\":1699999990,"
    "\"exp\":1700000060}",
    "{\"sub\":\"user_2abc\",\"iss\":\"" ISS "\",\"exp\":1700000600,\"azp\":\"http://localhost:3000\","
    "\"v\":2,\"o\":{\"id\":\"org_2\",\"rol\":\"admin\",\"slg\":\"acme\",\"per\":\"a,b,,c\"}}",
    "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600.5,\"aud\":[\"api\",\"x\"]}",
    "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600,\"o\":{\"id\":\"org_3\",\"rol\":\"member\"}}",
};
#define N_TEMPLATES (sizeof CLAIM_TEMPLATES / sizeof CLAIM_TEMPLATES[0])

static EVP_PKEY *key;
static char *tokens[N_TEMPLATES];
static const char *const AZP[] = {"http://localhost:3000"};

static void init(void)
{
    if (key)
        return;
    key = EVP_RSA_gen(2048);
    CHECK(key);
    for (size_t i = 0; i < N_TEMPLATES; i++)
        CHECK(jwt_sign_rs256(key, "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
                             CLAIM_TEMPLATES[i], &tokens[i]) == JWT_OK);
}

static EVP_PKEY *find_key(void *ud, const char *kid)
{
    (void)ud;
    return strcmp(kid, "k1") == 0 ? key : NULL;
}

static void check_outcome(jwt_err e, const jwt_auth *a)
{
    CHECK(jwt_strerror(e) != NULL && jwt_detail(e) != NULL);
    int st = jwt_http_status(e);
    if (e == JWT_OK) {
        CHECK(st == 200 && a->user_id[0] != '\0');
        CHECK(a->n_permissions <= JWT_MAX_PERMISSIONS);
    } else {
        CHECK(st == 401 || st == 403 || st == 503);
        CHECK(a->user_id[0] == '\0');
    }
}

/* Verifies with two configs (plain; audience + azp). Returns true if either passed. */
static bool verify_all(const char *tok, size_t len)
{
    jwt_config plain = {.issuer = ISS, .leeway_s = 30};
    jwt_config strict = {.issuer = ISS, .audience = "api", .azp = AZP, .n_azp = 1, .leeway_s = 0};
    jwt_auth a;
    jwt_err e1 = jwt_verify(tok, len, find_key, NULL, &plain, NOW, &a);
    check_outcome(e1, &a);
    jwt_err e2 = jwt_verify(tok, len, find_key, NULL, &strict, NOW, &a);
    check_outcome(e2, &a);
    jwt_token *t = NULL;
    jwt_err pe = jwt_parse(tok, len, &t);
    CHECK((pe == JWT_OK) == (t != NULL));
    if (t) {
        CHECK(jwt_token_kid(t) && jwt_token_kid(t)[0]);
        jwt_token_free(t);
    }
    return e1 == JWT_OK || e2 == JWT_OK;
}

static void fuzz_random(const uint8_t *data, size_t len)
{
    char *s = malloc(len + 1);
    CHECK(s);
    memcpy(s, data, len);
    s[len] = '\0';

    verify_all(s, len);

    /* base64url: decode, then the re-encoding must be the input itself */
    uint8_t *raw = malloc(len + 1);
    CHECK(raw);
    long n = jwt_b64url_decode(s, len, raw, len + 1);
    if (n >= 0) {
        char *enc = malloc(jwt_b64url_len((size_t)n) + 1);
        CHECK(enc);
        jwt_b64url_encode(raw, (size_t)n, enc);
        CHECK(strlen(enc) == len && memcmp(enc, s, len) == 0);
        free(enc);
    }
    free(raw);

    /* the Authorization header (a C string: cut at the first NUL) */
    const char *t = NULL;
    size_t tl = 0;
    jwt_err be = jwt_bearer_token(s, &t, &tl);
    if (be == JWT_OK)
        CHECK(t >= s && t + tl <= s + strlen(s) && tl > 0);

    /* JWKS documents and single keys */
    jwks_set *set = NULL;
    char err[200];
    jwks_err je = jwks_parse(s, len, &set, err, sizeof err);
    CHECK((je == JWKS_OK) == (set != NULL));
    if (set) {
        CHECK(jwks_set_count(set) > 0 && jwks_set_count(set) <= JWKS_MAX_KEYS);
        for (size_t i = 0; i < jwks_set_count(set); i++) {
            EVP_PKEY *k = jwks_set_find(set, jwks_set_kid(set, i));
            CHECK(k && EVP_PKEY_get_bits(k) >= JWT_MIN_RSA_BITS);
        }
        jwks_set_free(set);
    }
    char kid[JWKS_KID_MAX + 1];
    EVP_PKEY *k = NULL;
    if (jwks_parse_key(s, len, kid, &k) == JWKS_OK) {
        CHECK(k && kid[0]);
        char tp[JWKS_THUMBPRINT_LEN + 1];
        CHECK(jwks_rsa_thumbprint(k, tp) == 0 && strlen(tp) == JWKS_THUMBPRINT_LEN);
        EVP_PKEY_free(k);
    }
    free(s);
}

static void fuzz_mutated(const uint8_t *data, size_t len)
{
    if (len < 1)
        return;
    const char *orig = tokens[data[0] % N_TEMPLATES];
    size_t olen = strlen(orig);
    char *buf = malloc(MAX_MUTATED_LEN);
    CHECK(buf);
    memcpy(buf, orig, olen);
    size_t n = olen;
    for (size_t i = 1; i + 2 < len; i += 3) {
        uint8_t op = data[i], v = data[i + 2];
        size_t pos = n ? data[i + 1] * 131u % n : 0;
        switch (op % 4) {
        case 0: /* overwrite */
            if (n)
                buf[pos] = (char)v;
            break;
        case 1: /* insert */
            if (n < MAX_MUTATED_LEN) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = (char)v;
                n++;
            }
            break;
        case 2: /* delete */
            if (n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
            break;
        default: /* flip one bit */
            if (n)
                buf[pos] ^= (char)(1u << (v % 8));
            break;
        }
    }
    char *tok = malloc(n + 1); /* exactly sized */
    CHECK(tok);
    memcpy(tok, buf, n);
    tok[n] = '\0';
    free(buf);
    bool ok = verify_all(tok, n);
    /* only the signed bytes themselves may pass */
    if (ok)
        CHECK(n == olen && memcmp(tok, orig, n) == 0);
    free(tok);
}

static bool str_is(const json_t *v, const char *want)
{
    return json_is_string(v) && json_string_length(v) == strlen(want) &&
           memcmp(json_string_value(v), want, json_string_length(v)) == 0;
}

/* A verified token's identity, checked against the claims read independently. */
static void check_claims(const json_t *c, const jwt_config *cfg, const jwt_auth *a)
{
    const json_t *sub = json_object_get(c, "sub"), *o = json_object_get(c, "o");
    CHECK(str_is(sub, a->user_id) && str_is(json_object_get(c, "iss"), ISS));
    CHECK(a->exp > NOW - cfg->leeway_s);
    const json_t *aud = json_object_get(c, "aud");
    if (!cfg->audience) {
        CHECK(aud == NULL);
    } else if (!str_is(aud, cfg->audience)) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(aud); i++)
            found |= str_is(json_array_get(aud, i), cfg->audience);
        CHECK(found);
    }
    CHECK(cfg->n_azp == 0 || str_is(json_object_get(c, "azp"), cfg->azp[0]));
    const char *rol = json_string_value(json_object_get(o, "rol"));
    CHECK(rol && rol[0] ? strncmp(a->org_role, "org:", 4) == 0 && strcmp(a->org_role + 4, rol) == 0
                        : a->org_role[0] == '\0');
    const char *id = json_string_value(json_object_get(o, "id"));
    CHECK(strcmp(a->org_id, id ? id : "") == 0);
    /* the permissions: o.per's items without the empty ones, each one found */
    const char *per = json_string_value(json_object_get(o, "per"));
    size_t items = 0;
    for (const char *p = per; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n) {
            char item[JWT_PERMISSIONS_MAX];
            CHECK(n < sizeof item);
            memcpy(item, p, n);
            item[n] = '\0';
            CHECK(jwt_auth_has_permission(a, item));
            items++;
        }
        p += n + (p[n] == ',');
    }
    CHECK(items == a->n_permissions && items <= JWT_MAX_PERMISSIONS);
    CHECK(strlen(a->permissions) < JWT_PERMISSIONS_MAX);
}

static void fuzz_claims(const uint8_t *data, size_t len)
{
    json_t *claims = json_loadb((const char *)data, len, 0, NULL);
    if (!json_is_object(claims)) { /* the parser refuses it before any key is used */
        json_decref(claims);
        return;
    }
    char *text = malloc(len + 1);
    CHECK(text);
    memcpy(text, data, len);
    text[len] = '\0';
    char *tok = NULL;
    if (memchr(text, '\0', len) == NULL &&
        jwt_sign_rs256(key, "{\"alg\":\"RS256\",\"kid\":\"k1\"}", text, &tok) == JWT_OK) {
        jwt_config plain = {.issuer = ISS, .leeway_s = 30};
        jwt_config strict = {.issuer = ISS, .audience = "api", .azp = AZP, .n_azp = 1, .leeway_s = 0};
        jwt_auth a;
        jwt_err e = jwt_verify(tok, strlen(tok), find_key, NULL, &plain, NOW, &a);
        check_outcome(e, &a);
        if (e == JWT_OK)
            check_claims(claims, &plain, &a);
        e = jwt_verify(tok, strlen(tok), find_key, NULL, &strict, NOW, &a);
        check_outcome(e, &a);
        if (e == JWT_OK)
            check_claims(claims, &strict, &a);
    }
    free(tok);
    free(text);
    json_decref(claims);
}

static void fuzz_header(const uint8_t *data, size_t len)
{
    static const char rest[] = ".eyJzdWIiOiJ1In0.c2ln"; /* {"sub":"u"}, "sig" */
    char *tok = malloc(jwt_b64url_len(len) + sizeof rest);
    CHECK(tok);
    jwt_b64url_encode(data, len, tok);
    strcat(tok, rest);
    jwt_token *t = NULL;
    jwt_err e = jwt_parse(tok, strlen(tok), &t);
    CHECK((e == JWT_OK) == (t != NULL));
    if (t) {
        json_t *h = json_loadb((const char *)data, len, 0, NULL);
        CHECK(str_is(json_object_get(h, "alg"), "RS256"));
        CHECK(str_is(json_object_get(h, "kid"), jwt_token_kid(t)) && jwt_token_kid(t)[0]);
        static const char *const KEYS[] = {"jwk", "jku", "x5u", "x5c", "crit"};
        for (size_t i = 0; i < sizeof KEYS / sizeof KEYS[0]; i++)
            CHECK(json_object_get(h, KEYS[i]) == NULL);
        json_decref(h);
        jwt_token_free(t);
    }
    jwt_auth a;
    check_outcome(jwt_verify(tok, strlen(tok), find_key, NULL, &(jwt_config){.issuer = ISS}, NOW, &a), &a);
    free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    init();
    if (len == 0)
        return 0;
    switch (data[0] % 4) {
    case 0: fuzz_random(data + 1, len - 1); break;
    case 1: fuzz_mutated(data + 1, len - 1); break;
    case 2: fuzz_claims(data + 1, len - 1); break;
    default: fuzz_header(data + 1, len - 1); break;
    }
    return 0;
}

/* auth/jwks: JWKS parsing (each key rule, sets that skip bad keys), the export
 * back to a JWKS that verifies tokens, and the RFC 7638 thumbprint vector. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "auth/jwks.h"
#include "auth/jwt.h"

#define NOW ((time_t)1700000000)
#define ISS "https://clerk.example.com"

static EVP_PKEY *key1, *key_short;

static int group_setup(void **state)
{
    (void)state;
    key1 = EVP_RSA_gen(2048);
    key_short = EVP_RSA_gen(1024);
    return key1 && key_short ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key_short);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* noinline: inlined at -O2, gcc 12 mistakes the returned token for a pointer to
 * this function's local and reports false dangling pointers in the callers */
__attribute__((noinline)) static char *sign_with(EVP_PKEY *k, const char *header, const char *claims)
{
    char *t = NULL;
    assert_int_equal(jwt_sign_rs256(k, header, claims, &t), JWT_OK);
    assert_non_null(t);
    return t;
}

#define HDR_K1 "{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}"

/* Standard claims around NOW plus extra members (a JSON fragment, may be ""). */
static char *claims(const char *extra)
{
    char *s = malloc(2048);
    assert_non_null(s);
    snprintf(s, 2048, "{\"sub\":\"user_2abc\",\"iss\":\"" ISS "\",\"iat\":%lld,\"nbf\":%lld,"
                      "\"exp\":%lld%s%s}",
             (long long)NOW - 10, (long long)NOW - 10, (long long)NOW + 60, extra[0] ? "," : "",
             extra);
    return s;
}

/* Raw claims JSON, signed by key1 as kid k1. */
static char *tok_raw(const char *claims_json)
{
    return sign_with(key1, HDR_K1, claims_json);
}

static char *tok(const char *extra)
{
    char *c = claims(extra);
    char *t = tok_raw(c);
    free(c);
    return t;
}

static jwt_config base_cfg(void)
{
    jwt_config c = {.issuer = ISS, .leeway_s = JWT_DEFAULT_LEEWAY_S};
    return c;
}

static char *jwk_json(EVP_PKEY *k, const char *kid)
{
    char *set = jwks_rsa_public_json(k, kid);
    assert_non_null(set);
    return set;
}

static void test_jwks_roundtrip_and_verify(void **state)
{
    (void)state;
    char *json = jwk_json(key1, "k1");
    jwks_set *s = NULL;
    char err[200];
    assert_int_equal(jwks_parse(json, strlen(json), &s, err, sizeof err), JWKS_OK);
    assert_int_equal(jwks_set_count(s), 1);
    assert_string_equal(jwks_set_kid(s, 0), "k1");
    EVP_PKEY *pub = jwks_set_find(s, "k1");
    assert_non_null(pub);
    assert_null(jwks_set_find(s, "k2"));
    assert_int_equal(EVP_PKEY_eq(pub, key1), 1);
    char *t = tok("");
    jwt_token *pt = NULL;
    assert_int_equal(jwt_parse(t, strlen(t), &pt), JWT_OK);
    jwt_config cfg = base_cfg();
    jwt_auth a;
    assert_int_equal(jwt_verify_parsed(pt, pub, &cfg, NOW, &a), JWT_OK);
    jwt_token_free(pt);
    free(t);
    jwks_set_free(s);
    free(json);
}

/* A JWKS with the given keys array members (JSON text). */
static jwks_err parse_keys(const char *members, jwks_set **s, char *err, size_t errlen)
{
    char doc[8192];
    snprintf(doc, sizeof doc, "{\"keys\":[%s]}", members);
    return jwks_parse(doc, strlen(doc), s, err, errlen);
}

/* The "n" and "e" of a key, from its exported JWKS. */
static void get_ne(EVP_PKEY *k, char *n, size_t ncap, char *e, size_t ecap)
{
    char *json = jwk_json(k, "x");
    const char *pn = strstr(json, "\"n\": \"") + 6, *pe = strstr(json, "\"e\": \"") + 6;
    snprintf(n, ncap, "%.*s", (int)(strchr(pn, '"') - pn), pn);
    snprintf(e, ecap, "%.*s", (int)(strchr(pe, '"') - pe), pe);
    free(json);
}

static void test_jwks_key_rules(void **state)
{
    (void)state;
    char n[1024], e[16], ns[512], es[16];
    get_ne(key1, n, sizeof n, e, sizeof e);
    get_ne(key_short, ns, sizeof ns, es, sizeof es);
    char kid[JWKS_KID_MAX + 1];
    EVP_PKEY *k = NULL;
    char buf[2048];
#define ONE(fmt, ...)                                                                              \
    (snprintf(buf, sizeof buf, fmt, __VA_ARGS__), jwks_parse_key(buf, strlen(buf), kid, &k))

    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"%s\"}", n, e),
                     JWKS_OK);
    assert_string_equal(kid, "a");
    EVP_PKEY_free(k);
    assert_int_equal(ONE("{\"kty\":\"EC\",\"kid\":\"a\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"}",
                         e, e),
                     JWKS_ERR_KEY_TYPE);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"use\":\"enc\",\"n\":\"%s\",\"e\":\"%s\"}",
                         n, e),
                     JWKS_ERR_KEY_USE);
    assert_int_equal(
        ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"alg\":\"RS512\",\"n\":\"%s\",\"e\":\"%s\"}", n, e),
        JWKS_ERR_KEY_USE);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"}", n, e), JWKS_ERR_KEY_FIELD);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\"}", n), JWKS_ERR_KEY_FIELD);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s=\",\"e\":\"%s\"}", n, e),
                     JWKS_ERR_KEY_FIELD);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"AQ+B\"}", n),
                     JWKS_ERR_KEY_FIELD);
    /* 1024-bit modulus, e = 1, an even modulus */
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"%s\"}", ns, es),
                     JWKS_ERR_KEY_SIZE);
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"AQ\"}", n),
                     JWKS_ERR_KEY_SIZE);
    char neven[1024];
    snprintf(neven, sizeof neven, "%s", n);
    neven[strlen(neven) - 1] = 'A'; /* last 6 bits 0: the modulus becomes even */
    assert_int_equal(ONE("{\"kty\":\"RSA\",\"kid\":\"a\",\"n\":\"%s\",\"e\":\"%s\"}", neven, e),
                     JWKS_ERR_KEY_SIZE);
#undef ONE

    /* sets: other key types skipped silently, bad RSA keys skipped and counted */
    jwks_set *s = NULL;
    char err[200], members[6000];
    snprintf(members, sizeof members,
             "{\"kty\":\"EC\",\"kid\":\"ec\"},{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"%s\","
             "\"e\":\"%s\"},{\"kty\":\"RSA\",\"kid\":\"good\",\"use\":\"sig\",\"alg\":\"RS256\","
             "\"n\":\"%s\",\"e\":\"%s\"},{\"kty\":\"RSA\",\"kid\":\"good\",\"n\":\"%s\",\"e\":\"%s\"}",
             ns, es, n, e, ns, es);
    assert_int_equal(parse_keys(members, &s, err, sizeof err), JWKS_OK);
    assert_int_equal(jwks_set_count(s), 1);
    assert_int_equal(jwks_set_skipped(s), 2);
    assert_non_null(strstr(err, "2048"));
    assert_non_null(jwks_set_find(s, "good"));
    assert_null(jwks_set_find(s, "short"));
    jwks_set_free(s);

    snprintf(members, sizeof members, "{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"%s\",\"e\":\"%s\"}",
             ns, es);
    assert_int_equal(parse_keys(members, &s, err, sizeof err), JWKS_ERR_NO_KEYS);
    assert_null(s);
    assert_int_equal(parse_keys("", &s, err, sizeof err), JWKS_ERR_NO_KEYS);
    const char *docs[] = {"", "[]", "{}", "{\"keys\":{}}", "{\"keys\":[]", "null"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        assert_int_equal(jwks_parse(docs[i], strlen(docs[i]), &s, err, sizeof err), JWKS_ERR_JSON);
}

/* RFC 7638 §3.1: the example key and its thumbprint. */
static void test_jwks_thumbprint_rfc7638(void **state)
{
    (void)state;
    const char *jwk =
        "{\"kty\":\"RSA\",\"kid\":\"2011-04-29\",\"e\":\"AQAB\",\"n\":\"0vx7agoebGcQSuuPiLJXZptN9nndrQmbX"
        "Eps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-"
        "5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZ"
        "Hzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0"
        "Ls1jF44-csFCur-kEgU8awapJzKnqDKgw\"}";
    char kid[JWKS_KID_MAX + 1];
    EVP_PKEY *k = NULL;
    assert_int_equal(jwks_parse_key(jwk, strlen(jwk), kid, &k), JWKS_OK);
    char tp[JWKS_THUMBPRINT_LEN + 1];
    assert_int_equal(jwks_rsa_thumbprint(k, tp), 0);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    EVP_PKEY_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jwks_roundtrip_and_verify),
        cmocka_unit_test(test_jwks_key_rules),
        cmocka_unit_test(test_jwks_thumbprint_rfc7638),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

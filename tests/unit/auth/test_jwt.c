/* auth/jwt: RS256 verification with the algorithm pinned (none / HS256 key
 * confusion / RS512 refused), header and claim rules with their 401 texts, Clerk v2
 * org claims and strict base64url. Keys are generated here with OpenSSL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth/jwt.h"

#define NOW ((time_t)1700000000)
#define ISS "https://clerk.example.com"

static EVP_PKEY *key1, *key2, *key_short;

static int group_setup(void **state)
{
    (void)state;
    key1 = EVP_RSA_gen(2048);
    key2 = EVP_RSA_gen(2048);
    key_short = EVP_RSA_gen(1024);
    return key1 && key2 && key_short ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
    EVP_PKEY_free(key_short);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

static EVP_PKEY *find_k1(void *ud, const char *kid)
{
    (void)ud;
    return strcmp(kid, "k1") == 0 ? key1 : NULL;
}

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

static jwt_err check_cfg(const char *t, const jwt_config *cfg, jwt_auth *a)
{
    return jwt_verify(t, strlen(t), find_k1, NULL, cfg, NOW, a);
}

static jwt_err check(const char *t)
{
    jwt_config cfg = base_cfg();
    jwt_auth a;
    return check_cfg(t, &cfg, &a);
}

/* b64url(header) "." b64url(claims) "." sig_b64 */
static char *assemble(const char *header, const char *claims_json, const char *sig_b64)
{
    size_t hl = strlen(header), cl = strlen(claims_json);
    char *s = malloc(jwt_b64url_len(hl) + jwt_b64url_len(cl) + strlen(sig_b64) + 4);
    assert_non_null(s);
    jwt_b64url_encode((const uint8_t *)header, hl, s);
    strcat(s, ".");
    jwt_b64url_encode((const uint8_t *)claims_json, cl, s + strlen(s));
    strcat(s, ".");
    strcat(s, sig_b64);
    return s;
}

/* ---- accepted tokens --------------------------------------------------------------- */

static void test_valid_org_context(void **state)
{
    (void)state;
    char *t = tok("\"azp\":\"http://localhost:3000\",\"v\":2,\"org_id\":\"org_v1_ignored\","
                  "\"org_role\":\"admin\",\"o\":{\"id\":\"org_2xyz\",\"rol\":\"admin\","
                  "\"slg\":\"acme\",\"per\":\"org:sys_memberships:read,,org:keys:manage\","
                  "\"fpm\":\"3\"}");
    jwt_config cfg = base_cfg();
    jwt_auth a;
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_OK);
    assert_string_equal(a.user_id, "user_2abc");
    assert_string_equal(a.org_id, "org_2xyz");
    assert_string_equal(a.org_role, "org:admin");
    assert_string_equal(a.org_slug, "acme");
    assert_int_equal(a.n_permissions, 2);
    assert_string_equal(a.permissions, "org:sys_memberships:read,org:keys:manage");
    assert_true(jwt_auth_has_permission(&a, "org:sys_memberships:read"));
    assert_true(jwt_auth_has_permission(&a, "org:keys:manage"));
    assert_false(jwt_auth_has_permission(&a, "org:keys")); /* whole items only */
    assert_false(jwt_auth_has_permission(&a, "manage"));
    assert_false(jwt_auth_has_permission(&a, ""));
    assert_int_equal(a.exp, (int64_t)NOW + 60);
    assert_true(jwt_auth_is_org(&a));
    assert_true(jwt_auth_is_org_admin(&a));
    free(t);
}

static void test_valid_personal_context(void **state)
{
    (void)state;
    /* v1 claims alone give no org (the original ignored them too) */
    char *t = tok("\"org_id\":\"org_v1\",\"org_role\":\"org:admin\",\"o\":null");
    jwt_config cfg = base_cfg();
    jwt_auth a;
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_OK);
    assert_string_equal(a.user_id, "user_2abc");
    assert_string_equal(a.org_id, "");
    assert_string_equal(a.org_role, "");
    assert_int_equal(a.n_permissions, 0);
    assert_false(jwt_auth_is_org(&a));
    assert_false(jwt_auth_is_org_admin(&a)); /* the v1 org_role claim grants nothing */
    free(t);
    /* member role, no slug */
    t = tok("\"o\":{\"id\":\"org_1\",\"rol\":\"member\"}");
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_OK);
    assert_string_equal(a.org_role, "org:member");
    assert_string_equal(a.org_slug, "");
    assert_true(jwt_auth_is_org(&a));
    assert_false(jwt_auth_is_org_admin(&a));
    free(t);
    /* a role that only starts like admin is not admin */
    t = tok("\"o\":{\"id\":\"org_1\",\"rol\":\"admins\"}");
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_OK);
    assert_false(jwt_auth_is_org_admin(&a));
    free(t);
}

static void test_parse_then_verify(void **state)
{
    (void)state;
    char *t = tok("");
    jwt_token *pt = NULL;
    assert_int_equal(jwt_parse(t, strlen(t), &pt), JWT_OK);
    assert_string_equal(jwt_token_kid(pt), "k1");
    jwt_config cfg = base_cfg();
    jwt_auth a;
    assert_int_equal(jwt_verify_parsed(pt, key1, &cfg, NOW, &a), JWT_OK);
    assert_int_equal(jwt_verify_parsed(pt, key2, &cfg, NOW, &a), JWT_ERR_SIGNATURE);
    assert_string_equal(a.user_id, ""); /* nothing leaks out of a failed verification */
    assert_int_equal(jwt_verify_parsed(pt, key_short, &cfg, NOW, &a), JWT_ERR_KEY);
    assert_int_equal(jwt_verify_parsed(pt, NULL, &cfg, NOW, &a), JWT_ERR_KEY);
    jwt_token_free(pt);
    free(t);
}

/* ---- the algorithm is pinned --------------------------------------------------------- */

static void test_alg_none(void **state)
{
    (void)state;
    char *c = claims("");
    char *t = assemble("{\"alg\":\"none\",\"kid\":\"k1\"}", c, "");
    assert_int_equal(check(t), JWT_ERR_MALFORMED); /* empty signature segment */
    free(t);
    t = assemble("{\"alg\":\"none\",\"kid\":\"k1\"}", c, "AAAA");
    assert_int_equal(check(t), JWT_ERR_ALG);
    assert_string_equal(jwt_detail(JWT_ERR_ALG), "Invalid token headers");
    free(t);
    t = assemble("{\"kid\":\"k1\"}", c, "AAAA"); /* no alg at all */
    assert_int_equal(check(t), JWT_ERR_ALG);
    free(t);
    free(c);
}

/* The classic confusion: HS256 with the RSA public key's PEM text as the HMAC secret.
 * A verifier that lets the header choose the algorithm accepts it. */
static void test_alg_hs256_key_confusion(void **state)
{
    (void)state;
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(PEM_write_bio_PUBKEY(bio, key1), 1);
    char *pem = NULL;
    long pem_len = BIO_get_mem_data(bio, &pem);
    assert_true(pem_len > 0);

    char *c = claims("");
    const char *headers[] = {"{\"alg\":\"HS256\",\"kid\":\"k1\",\"typ\":\"JWT\"}",
                             HDR_K1 /* RS256 label, HMAC signature */};
    jwt_err want[] = {JWT_ERR_ALG, JWT_ERR_SIGNATURE};
    for (int i = 0; i < 2; i++) {
        char *unsigned_tok = assemble(headers[i], c, "");
        size_t slen = strlen(unsigned_tok) - 1; /* without the trailing '.' */
        uint8_t mac[32];
        unsigned mac_len = 0;
        assert_non_null(HMAC(EVP_sha256(), pem, (int)pem_len, (const uint8_t *)unsigned_tok, slen,
                             mac, &mac_len));
        char sig[64];
        jwt_b64url_encode(mac, mac_len, sig);
        char *t = malloc(slen + 1 + sizeof sig);
        assert_non_null(t);
        snprintf(t, slen + 1 + sizeof sig, "%.*s.%s", (int)slen, unsigned_tok, sig);
        assert_int_equal(check(t), want[i]);
        free(t);
        free(unsigned_tok);
    }
    free(c);
    BIO_free(bio);
}

static void test_alg_others(void **state)
{
    (void)state;
    const char *algs[] = {"RS512", "RS384", "PS256", "ES256", "rs256", "RS256 ", "HS512", ""};
    char *c = claims("");
    for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++) {
        char h[128];
        snprintf(h, sizeof h, "{\"alg\":\"%s\",\"kid\":\"k1\"}", algs[i]);
        char *t = sign_with(key1, h, c); /* a valid RS256 signature does not help */
        assert_int_equal(check(t), JWT_ERR_ALG);
        free(t);
    }
    char *t = sign_with(key1, "{\"alg\":[\"RS256\"],\"kid\":\"k1\"}", c);
    assert_int_equal(check(t), JWT_ERR_ALG);
    free(t);
    free(c);
}

/* ---- header rules ------------------------------------------------------------------- */

static void test_kid_rules(void **state)
{
    (void)state;
    char *c = claims("");
    const char *bad[] = {"{\"alg\":\"RS256\"}", "{\"alg\":\"RS256\",\"kid\":\"\"}",
                         "{\"alg\":\"RS256\",\"kid\":7}", "{\"alg\":\"RS256\",\"kid\":null}"};
    for (size_t i = 0; i < 4; i++) {
        char *t = sign_with(key1, bad[i], c);
        assert_int_equal(check(t), JWT_ERR_KID);
        free(t);
    }
    char *t = sign_with(key1, "{\"alg\":\"RS256\",\"kid\":\"k9\"}", c);
    assert_int_equal(check(t), JWT_ERR_UNKNOWN_KID);
    assert_string_equal(jwt_detail(JWT_ERR_UNKNOWN_KID), "Invalid token headers");
    assert_int_equal(jwt_http_status(JWT_ERR_UNKNOWN_KID), 401);
    free(t);
    free(c);
}

static void test_embedded_keys_refused(void **state)
{
    (void)state;
    char *c = claims("");
    const char *members[] = {
        "\"jwk\":{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}",
        "\"jku\":\"https://evil.example/jwks.json\"",
        "\"x5u\":\"https://evil.example/cert.pem\"",
        "\"x5c\":[\"MIIB\"]",
        "\"crit\":[\"exp\"]",
    };
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        char h[256];
        snprintf(h, sizeof h, "{\"alg\":\"RS256\",\"kid\":\"k1\",%s}", members[i]);
        char *t = sign_with(key1, h, c);
        assert_int_equal(check(t), JWT_ERR_HEADER);
        free(t);
    }
    free(c);
}

/* ---- signatures ---------------------------------------------------------------------- */

static void test_bad_signature(void **state)
{
    (void)state;
    char *c = claims("");
    char *t = sign_with(key2, HDR_K1, c); /* right shape, wrong key */
    assert_int_equal(check(t), JWT_ERR_SIGNATURE);
    assert_string_equal(jwt_detail(JWT_ERR_SIGNATURE), "Could not validate credentials");
    free(t);
    t = tok("");
    char *sig = strrchr(t, '.') + 1;
    sig[10] = sig[10] == 'A' ? 'B' : 'A'; /* one flipped signature char */
    assert_int_equal(check(t), JWT_ERR_SIGNATURE);
    free(t);
    t = tok("");
    sig = strrchr(t, '.') + 1;
    uint8_t raw[512];
    long n = jwt_b64url_decode(sig, strlen(sig), raw, sizeof raw);
    assert_int_equal(n, 256);
    jwt_b64url_encode(raw + 1, 255, sig); /* a well-encoded signature one byte short */
    assert_int_equal(check(t), JWT_ERR_SIGNATURE);
    free(t);
    free(c);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    char *t = tok("\"o\":{\"id\":\"org_1\",\"rol\":\"member\"}");
    char *c = claims("\"o\":{\"id\":\"org_1\",\"rol\":\"admin\"}");
    char *forged = tok_raw(c); /* only its payload segment is used */
    /* offsets rather than pointers: gcc 12 mistakes the latter for dangling ones */
    size_t h_end = strcspn(t, "."), s_start = h_end + 1 + strcspn(t + h_end + 1, ".");
    size_t f_start = strcspn(forged, "."), f_end = f_start + 1 + strcspn(forged + f_start + 1, ".");
    char buf[4096];
    snprintf(buf, sizeof buf, "%.*s%.*s%s", (int)h_end, t, (int)(f_end - f_start), forged + f_start,
             t + s_start);
    assert_int_equal(check(buf), JWT_ERR_SIGNATURE);
    free(t);
    free(forged);
    free(c);
}

/* ---- time claims ----------------------------------------------------------------------- */

static char *tok_times(long long iat, long long nbf, long long exp)
{
    char c[512];
    snprintf(c, sizeof c,
             "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"iat\":%lld,\"nbf\":%lld,\"exp\":%lld}", iat,
             nbf, exp);
    return tok_raw(c);
}

static void test_expiry_and_leeway(void **state)
{
    (void)state;
    long long n = (long long)NOW;
    char *t = tok_times(n - 100, n - 100, n - 31);
    assert_int_equal(check(t), JWT_ERR_EXPIRED);
    assert_string_equal(jwt_detail(JWT_ERR_EXPIRED), "Token expired");
    free(t);
    t = tok_times(n - 100, n - 100, n - 10); /* expired, but within the 30 s leeway */
    assert_int_equal(check(t), JWT_OK);
    jwt_config cfg = base_cfg();
    jwt_auth a;
    cfg.leeway_s = 0;
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_ERR_EXPIRED);
    free(t);
    t = tok_times(n - 100, n - 100, n); /* exp == now: expired (RFC 7519 "before") */
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_ERR_EXPIRED);
    free(t);
    /* leeway above the maximum is clamped to 300 s */
    cfg.leeway_s = 100000;
    t = tok_times(n - 1000, n - 1000, n - 301);
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_ERR_EXPIRED);
    free(t);
    t = tok_times(n - 1000, n - 1000, n - 299);
    assert_int_equal(check_cfg(t, &cfg, &a), JWT_OK);
    free(t);
}

static void test_nbf_iat(void **state)
{
    (void)state;
    long long n = (long long)NOW;
    char *t = tok_times(n, n + 60, n + 600);
    assert_int_equal(check(t), JWT_ERR_NOT_YET_VALID);
    assert_string_equal(jwt_detail(JWT_ERR_NOT_YET_VALID), "Invalid claims");
    free(t);
    t = tok_times(n, n + 20, n + 600); /* clock skew within leeway */
    assert_int_equal(check(t), JWT_OK);
    free(t);
    t = tok_times(n + 60, n, n + 600);
    assert_int_equal(check(t), JWT_ERR_ISSUED_IN_FUTURE);
    free(t);
    /* optional, but typed when present; exp required */
    t = tok_raw("{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600}");
    assert_int_equal(check(t), JWT_OK);
    free(t);
    t = tok_raw("{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600.5,\"iat\":1699999999.9}");
    assert_int_equal(check(t), JWT_OK);
    free(t);
    const char *bad[] = {
        "{\"sub\":\"u\",\"iss\":\"" ISS "\"}",
        "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":\"1700000600\"}",
        "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":true}",
        "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600,\"nbf\":\"0\"}",
        "{\"sub\":\"u\",\"iss\":\"" ISS "\",\"exp\":1700000600,\"iat\":null}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = tok_raw(bad[i]);
        assert_int_equal(check(t), JWT_ERR_CLAIMS);
        free(t);
    }
}

/* ---- iss, azp, aud, sub -------------------------------------------------------------------- */

static void test_issuer(void **state)
{
    (void)state;
    const char *c[] = {
        "{\"sub\":\"u\",\"iss\":\"https://evil.example.com\",\"exp\":1700000600}",
        "{\"sub\":\"u\",\"iss\":\"" ISS "/\",\"exp\":1700000600}",
        "{\"sub\":\"u\",\"iss\":\"HTTPS://clerk.example.com\",\"exp\":1700000600}",
        "{\"sub\":\"u\",\"exp\":1700000600}",
        "{\"sub\":\"u\",\"iss\":[\"" ISS "\"],\"exp\":1700000600}",
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *t = tok_raw(c[i]);
        assert_int_equal(check(t), JWT_ERR_ISSUER);
        free(t);
    }
    assert_string_equal(jwt_detail(JWT_ERR_ISSUER), "Invalid claims");
}

static void test_azp(void **state)
{
    (void)state;
    const char *allowed[] = {"http://localhost:3000", "https://app.example.com"};
    jwt_config cfg = base_cfg();
    jwt_auth a;
    char *good = tok("\"azp\":\"https://app.example.com\"");
    char *evil = tok("\"azp\":\"https://evil.example.com\"");
    char *none = tok("");
    /* no list configured: not checked (as the original) */
    assert_int_equal(check_cfg(evil, &cfg, &a), JWT_OK);
    assert_int_equal(check_cfg(none, &cfg, &a), JWT_OK);
    cfg.azp = allowed;
    cfg.n_azp = 2;
    assert_int_equal(check_cfg(good, &cfg, &a), JWT_OK);
    assert_int_equal(check_cfg(evil, &cfg, &a), JWT_ERR_AZP);
    assert_int_equal(check_cfg(none, &cfg, &a), JWT_ERR_AZP);
    assert_string_equal(jwt_detail(JWT_ERR_AZP), "Invalid claims");
    free(good);
    free(evil);
    free(none);
}

static void test_audience(void **state)
{
    (void)state;
    jwt_config cfg = base_cfg();
    jwt_auth a;
    char *s = tok("\"aud\":\"api\"");
    char *arr = tok("\"aud\":[\"other\",\"api\"]");
    char *other = tok("\"aud\":[\"other\"]");
    char *badtype = tok("\"aud\":[\"api\",1]");
    char *none = tok("");
    /* no audience configured: a token that carries aud is refused (python-jose) */
    assert_int_equal(check_cfg(s, &cfg, &a), JWT_ERR_AUDIENCE);
    assert_int_equal(check_cfg(arr, &cfg, &a), JWT_ERR_AUDIENCE);
    assert_int_equal(check_cfg(none, &cfg, &a), JWT_OK);
    cfg.audience = "api";
    assert_int_equal(check_cfg(s, &cfg, &a), JWT_OK);
    assert_int_equal(check_cfg(arr, &cfg, &a), JWT_OK);
    assert_int_equal(check_cfg(other, &cfg, &a), JWT_ERR_AUDIENCE);
    assert_int_equal(check_cfg(badtype, &cfg, &a), JWT_ERR_AUDIENCE);
    assert_int_equal(check_cfg(none, &cfg, &a), JWT_ERR_AUDIENCE);
    free(s);
    free(arr);
    free(other);
    free(badtype);
    free(none);
}

static void test_subject(void **state)
{
    (void)state;
    const char *c[] = {
        "{\"iss\":\"" ISS "\",\"exp\":1700000600}",
        "{\"sub\":\"\",\"iss\":\"" ISS "\",\"exp\":1700000600}",
        "{\"sub\":42,\"iss\":\"" ISS "\",\"exp\":1700000600}",
        "{\"sub\":null,\"iss\":\"" ISS "\",\"exp\":1700000600}",
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *t = tok_raw(c[i]);
        assert_int_equal(check(t), JWT_ERR_SUBJECT);
        free(t);
    }
    assert_string_equal(jwt_detail(JWT_ERR_SUBJECT), "Could not validate credentials");
    char big[600];
    memset(big, 'a', 300);
    big[300] = '\0';
    char c2[800];
    snprintf(c2, sizeof c2, "{\"sub\":\"%s\",\"iss\":\"" ISS "\",\"exp\":1700000600}", big);
    char *t = tok_raw(c2);
    assert_int_equal(check(t), JWT_ERR_TOO_LARGE);
    free(t);
}

static void test_org_claim_shapes(void **state)
{
    (void)state;
    const char *bad[] = {"\"o\":\"org_1\"", "\"o\":[1]", "\"o\":{\"id\":5}",
                         "\"o\":{\"id\":\"org_1\",\"rol\":true}", "\"o\":{\"per\":[\"a\"]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *t = tok(bad[i]);
        assert_int_equal(check(t), JWT_ERR_CLAIMS);
        free(t);
    }
    /* more permissions than jwt_auth holds */
    char per[4096] = "";
    for (int i = 0; i < JWT_MAX_PERMISSIONS + 1; i++)
        snprintf(per + strlen(per), sizeof per - strlen(per), "%sorg:p%d", i ? "," : "", i);
    char extra[4200];
    snprintf(extra, sizeof extra, "\"o\":{\"id\":\"org_1\",\"per\":\"%s\"}", per);
    char *t = tok(extra);
    assert_int_equal(check(t), JWT_ERR_TOO_LARGE);
    free(t);
    /* few permissions, but more bytes than the joined block holds */
    char longp[1200];
    memset(longp, 'p', 600);
    memcpy(longp + 600, ",", 1);
    memset(longp + 601, 'q', 500);
    longp[1101] = '\0';
    snprintf(extra, sizeof extra, "\"o\":{\"id\":\"org_1\",\"per\":\"%s\"}", longp);
    t = tok(extra);
    assert_int_equal(check(t), JWT_ERR_TOO_LARGE);
    free(t);
    /* exactly the most it holds is accepted */
    per[0] = '\0';
    for (int i = 0; i < JWT_MAX_PERMISSIONS; i++)
        snprintf(per + strlen(per), sizeof per - strlen(per), "%sorg:p%d", i ? "," : "", i);
    snprintf(extra, sizeof extra, "\"o\":{\"id\":\"org_1\",\"per\":\"%s\"}", per);
    t = tok(extra);
    assert_int_equal(check(t), JWT_OK);
    free(t);
}

/* ---- malformed input ------------------------------------------------------------------- */

static void test_malformed(void **state)
{
    (void)state;
    char *good = tok("");
    char *d1 = strchr(good, '.'), *d2 = strchr(d1 + 1, '.');
    char buf[4096];
    const char *fixed[] = {"", ".", "..", "...", "abc", "a.b", "a.b.c.d", "a..c", ".b.c", "a.b.",
                           "e30.e30.AAAA" /* {} header: no alg -> ALG, see below */};
    for (size_t i = 0; i + 1 < sizeof fixed / sizeof fixed[0]; i++)
        assert_int_equal(check(fixed[i]), JWT_ERR_MALFORMED);
    assert_int_equal(check(fixed[10]), JWT_ERR_ALG);

    /* a character outside base64url in each segment */
    for (int seg = 0; seg < 3; seg++) {
        snprintf(buf, sizeof buf, "%s", good);
        char *p = seg == 0 ? buf + 2 : seg == 1 ? buf + (d1 - good) + 3 : buf + (d2 - good) + 3;
        const char *bad_chars = "+/=* \n";
        for (const char *b = bad_chars; *b; b++) {
            char saved = *p;
            *p = *b;
            assert_int_equal(check(buf), JWT_ERR_MALFORMED);
            *p = saved;
        }
    }
    /* padding is not base64url */
    snprintf(buf, sizeof buf, "%.*s=%s", (int)(d1 - good), good, d1);
    assert_int_equal(check(buf), JWT_ERR_MALFORMED);

    /* segments that decode but are not JSON objects */
    const char *hdrs[] = {"[\"RS256\"]", "\"RS256\"", "{\"alg\":\"RS256\",", "",
                          "{\"alg\":\"RS256\",\"kid\":\"k1\",\"alg\":\"none\"}"};
    char *c = claims("");
    for (size_t i = 0; i < sizeof hdrs / sizeof hdrs[0]; i++) {
        char *t = assemble(hdrs[i], c, "AAAA");
        assert_int_equal(check(t), JWT_ERR_MALFORMED);
        free(t);
    }
    char *t = sign_with(key1, HDR_K1, "[1,2]");
    assert_int_equal(check(t), JWT_ERR_MALFORMED);
    free(t);
    t = sign_with(key1, HDR_K1, "{\"sub\":\"u\",\"sub\":\"admin\"}"); /* duplicate members */
    assert_int_equal(check(t), JWT_ERR_MALFORMED);
    free(t);

    /* over the length limit */
    char *huge = malloc(JWT_MAX_TOKEN_LEN + 2);
    assert_non_null(huge);
    memset(huge, 'A', JWT_MAX_TOKEN_LEN + 1);
    huge[JWT_MAX_TOKEN_LEN + 1] = '\0';
    memcpy(huge, good, strlen(good));
    assert_int_equal(check(huge), JWT_ERR_MALFORMED);
    free(huge);
    free(c);
    free(good);
}

/* ---- base64url, bearer, texts ------------------------------------------------------------- */

static void test_b64url(void **state)
{
    (void)state;
    uint8_t in[64], out[64];
    char enc[100];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)(i * 37 + 250);
    for (size_t n = 0; n <= sizeof in; n++) {
        jwt_b64url_encode(in, n, enc);
        assert_int_equal(strlen(enc), jwt_b64url_len(n));
        assert_int_equal(jwt_b64url_decode(enc, strlen(enc), out, sizeof out), (long)n);
        assert_memory_equal(in, out, n);
    }
    assert_int_equal(jwt_b64url_decode("_-8", 3, out, sizeof out), 2);
    assert_int_equal(out[0], 0xff);
    assert_int_equal(out[1], 0xef);
    assert_int_equal(jwt_b64url_decode("QQ", 2, out, sizeof out), 1);
    assert_int_equal(jwt_b64url_decode("QR", 2, out, sizeof out), -1);   /* unused bits set */
    assert_int_equal(jwt_b64url_decode("QQ==", 4, out, sizeof out), -1); /* padding */
    assert_int_equal(jwt_b64url_decode("Q", 1, out, sizeof out), -1);    /* impossible length */
    assert_int_equal(jwt_b64url_decode("QU+B", 4, out, sizeof out), -1);
    assert_int_equal(jwt_b64url_decode("QUFB", 4, out, 2), -1); /* does not fit */
}

static void test_bearer(void **state)
{
    (void)state;
    const char *t;
    size_t n;
    assert_int_equal(jwt_bearer_token(NULL, &t, &n), JWT_ERR_NO_CREDENTIALS);
    assert_int_equal(jwt_bearer_token("", &t, &n), JWT_ERR_NO_CREDENTIALS);
    assert_int_equal(jwt_bearer_token("Bearer", &t, &n), JWT_ERR_NO_CREDENTIALS);
    assert_int_equal(jwt_bearer_token("Bearer ", &t, &n), JWT_ERR_NO_CREDENTIALS);
    assert_int_equal(jwt_bearer_token("Basic dXNlcjpwYXNz", &t, &n), JWT_ERR_NOT_BEARER);
    assert_int_equal(jwt_bearer_token("Bearerx abc", &t, &n), JWT_ERR_NOT_BEARER);
    assert_int_equal(jwt_bearer_token("bEaReR abc.def.ghi", &t, &n), JWT_OK);
    assert_int_equal(n, 11);
    assert_memory_equal(t, "abc.def.ghi", 11);
    assert_int_equal(jwt_http_status(JWT_ERR_NO_CREDENTIALS), 403);
    assert_string_equal(jwt_detail(JWT_ERR_NO_CREDENTIALS), "Not authenticated");
    assert_string_equal(jwt_detail(JWT_ERR_NOT_BEARER), "Invalid authentication credentials");
}

static void test_texts_and_config(void **state)
{
    (void)state;
    for (int e = JWT_OK; e <= JWT_ERR_UNAVAILABLE; e++) {
        assert_non_null(jwt_strerror((jwt_err)e));
        assert_non_null(jwt_detail((jwt_err)e));
    }
    assert_string_equal(jwt_detail(JWT_ERR_MALFORMED), "Could not validate credentials");
    assert_string_equal(jwt_detail(JWT_ERR_CLAIMS), "Invalid claims");
    assert_string_equal(jwt_detail(JWT_ERR_UNAVAILABLE), "Authentication service unavailable");
    assert_int_equal(jwt_http_status(JWT_ERR_UNAVAILABLE), 503);
    assert_int_equal(jwt_http_status(JWT_ERR_EXPIRED), 401);
    char err[128];
    jwt_config cfg = base_cfg();
    assert_int_equal(jwt_config_check(&cfg, err, sizeof err), 0);
    cfg.leeway_s = 301;
    assert_int_equal(jwt_config_check(&cfg, err, sizeof err), -1);
    cfg = base_cfg();
    cfg.issuer = "";
    assert_int_equal(jwt_config_check(&cfg, err, sizeof err), -1);
    const char *azp[] = {""};
    cfg = base_cfg();
    cfg.azp = azp;
    cfg.n_azp = 1;
    assert_int_equal(jwt_config_check(&cfg, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_org_context),
        cmocka_unit_test(test_valid_personal_context),
        cmocka_unit_test(test_parse_then_verify),
        cmocka_unit_test(test_alg_none),
        cmocka_unit_test(test_alg_hs256_key_confusion),
        cmocka_unit_test(test_alg_others),
        cmocka_unit_test(test_kid_rules),
        cmocka_unit_test(test_embedded_keys_refused),
        cmocka_unit_test(test_bad_signature),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_expiry_and_leeway),
        cmocka_unit_test(test_nbf_iat),
        cmocka_unit_test(test_issuer),
        cmocka_unit_test(test_azp),
        cmocka_unit_test(test_audience),
        cmocka_unit_test(test_subject),
        cmocka_unit_test(test_org_claim_shapes),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_bearer),
        cmocka_unit_test(test_texts_and_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

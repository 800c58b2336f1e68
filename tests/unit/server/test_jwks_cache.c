/* server/jwks_cache: the file-backed key cache (lookups answered at once, rotation,
 * a broken file fails closed with 503 and recovers) and the source's configuration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "server/jwks_cache.h"

#define ISS "https://clerk.example.com"

static EVP_PKEY *key1, *key2;

static int group_setup(void **state)
{
    (void)state;
    key1 = EVP_RSA_gen(2048);
    key2 = EVP_RSA_gen(2048);
    return key1 && key2 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(key1);
    EVP_PKEY_free(key2);
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

/* Raw claims JSON, signed by key1 as kid k1. */
static char *tok_raw(const char *claims_json)
{
    return sign_with(key1, HDR_K1, claims_json);
}

static char *jwk_json(EVP_PKEY *k, const char *kid)
{
    char *set = jwks_rsa_public_json(k, kid);
    assert_non_null(set);
    return set;
}

/* ---- the cache, file source (synchronous) -------------------------------------------------- */

typedef struct lk {
    int calls;
    jwks_status st;
    EVP_PKEY *key;
} lk;

static void on_key(void *ud, jwks_status st, EVP_PKEY *key)
{
    lk *l = ud;
    l->calls++;
    l->st = st;
    l->key = key;
}

typedef struct vr {
    int calls;
    jwt_err e;
    char user[JWT_ID_MAX];
} vr;

static void on_verify(void *ud, jwt_err e, const jwt_auth *a)
{
    vr *v = ud;
    v->calls++;
    v->e = e;
    snprintf(v->user, sizeof v->user, "%s", a->user_id);
}

static void write_text(const char *path, const char *text)
{
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

static void test_cache_file_source(void **state)
{
    (void)state;
    char dir[] = "/tmp/veil-jwks-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[200];
    snprintf(path, sizeof path, "%s/jwks.json", dir);
    char *j1 = jwk_json(key1, "k1");
    write_text(path, j1);

    char err[200];
    jwks_cache_config cfg = {.file = path};
    jwks_cache *c = jwks_cache_new(NULL, &cfg, err, sizeof err);
    assert_non_null(c);
    lk l = {0};
    assert_null(jwks_lookup(c, "k1", on_key, &l)); /* answered synchronously */
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.st, JWKS_FOUND);
    assert_int_equal(EVP_PKEY_eq(l.key, key1), 1);
    memset(&l, 0, sizeof l);
    assert_null(jwks_lookup(c, "k2", on_key, &l));
    assert_int_equal(l.calls, 1);
    assert_int_equal(l.st, JWKS_UNKNOWN_KID);

    /* verify through the cache */
    jwt_config jc = {.issuer = ISS, .leeway_s = 30};
    char cl[256];
    snprintf(cl, sizeof cl, "{\"sub\":\"user_f\",\"iss\":\"" ISS "\",\"exp\":%lld}",
             (long long)time(NULL) + 600);
    char *t = tok_raw(cl);
    vr v = {0};
    assert_null(jwks_verify(c, t, strlen(t), &jc, on_verify, &v));
    assert_int_equal(v.calls, 1);
    assert_int_equal(v.e, JWT_OK);
    assert_string_equal(v.user, "user_f");
    memset(&v, 0, sizeof v);
    assert_null(jwks_verify(c, "garbage", 7, &jc, on_verify, &v));
    assert_int_equal(v.calls, 1);
    assert_int_equal(v.e, JWT_ERR_MALFORMED);

    /* rotation: the file now holds k2 only; k1 tokens stop working */
    char *j2 = jwk_json(key2, "k2");
    write_text(path, j2);
    memset(&v, 0, sizeof v);
    assert_null(jwks_verify(c, t, strlen(t), &jc, on_verify, &v));
    assert_int_equal(v.e, JWT_ERR_UNKNOWN_KID);
    memset(&l, 0, sizeof l);
    jwks_lookup(c, "k2", on_key, &l);
    assert_int_equal(l.st, JWKS_FOUND);
    assert_int_equal(EVP_PKEY_eq(l.key, key2), 1);

    /* a broken file fails closed (503), and recovers once fixed */
    write_text(path, "{\"keys\": [");
    memset(&v, 0, sizeof v);
    jwks_verify(c, t, strlen(t), &jc, on_verify, &v);
    assert_int_equal(v.e, JWT_ERR_UNAVAILABLE);
    assert_int_equal(jwt_http_status(v.e), 503);
    write_text(path, j1);
    memset(&v, 0, sizeof v);
    jwks_verify(c, t, strlen(t), &jc, on_verify, &v);
    assert_int_equal(v.e, JWT_OK);
    jwks_stats st;
    jwks_cache_stats(c, &st);
    assert_int_equal(st.n_keys, 1);
    assert_true(st.usable);
    unlink(path);
    memset(&l, 0, sizeof l);
    jwks_lookup(c, "k1", on_key, &l);
    assert_int_equal(l.st, JWKS_UNAVAILABLE);

    jwks_cache_free(c);
    free(t);
    free(j1);
    free(j2);
    rmdir(dir);
}

static void test_cache_config(void **state)
{
    (void)state;
    char err[200], url[128];
    jwks_cache_config cfg = {0};
    assert_null(jwks_cache_new(NULL, &cfg, err, sizeof err));
    cfg.url = "https://clerk.example.com/.well-known/jwks.json";
    assert_null(jwks_cache_new(NULL, &cfg, err, sizeof err)); /* a URL needs a loop */
    assert_int_equal(jwks_default_url("https://clerk.example.com/", url, sizeof url), 0);
    assert_string_equal(url, "https://clerk.example.com/.well-known/jwks.json");
    assert_int_equal(jwks_default_url("https://veil.dev.local", url, sizeof url), 0);
    assert_string_equal(url, "https://veil.dev.local/.well-known/jwks.json");
    assert_int_equal(jwks_default_url("", url, sizeof url), -1);

    struct event_base *base = event_base_new();
    assert_non_null(base);
    const char *good[] = {"https://clerk.example.com/.well-known/jwks.json", "http://127.0.0.1:8080",
                          "HTTPS://[::1]:8443/jwks?x=1", "http://localhost/jwks"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cfg.url = good[i];
        jwks_cache *c = jwks_cache_new(base, &cfg, err, sizeof err);
        assert_non_null(c);
        jwks_cache_free(c);
    }
    const char *bad[] = {"ftp://x/jwks", "clerk.example.com/jwks", "https://", "https:///jwks",
                         "https://user@h/jwks", "https://h:0/", "https://h:65536/", "https://h:/x",
                         "https://h:80x/", "https://h/jwks#frag", "https://h/a b", "https://[::1/x",
                         "https://[::1]x/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cfg.url = bad[i];
        assert_null(jwks_cache_new(base, &cfg, err, sizeof err));
        assert_true(strlen(err) > 0);
    }
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_file_source),
        cmocka_unit_test(test_cache_config),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

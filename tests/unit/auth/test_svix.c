/* svix: the published Svix example delivery, sign -> verify round trips, and every
 * way a delivery is refused (missing headers 400, signature/timestamp 401). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/svix.h"

/* docs.svix.com "Verifying Webhooks Manually" / the Svix libraries' example */
#define V_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define V_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define V_TS "1614265330"
#define V_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#define V_BODY "{\"test\": 2432232314}"
#define V_NOW ((time_t)1614265330)

static secret vkey(void)
{
    secret k;
    assert_int_equal(svix_key_parse(V_SECRET, &k), SVIX_OK);
    return k;
}

static svix_err verify(const secret *k, const char *id, const char *ts, const char *sig,
                       const char *body, time_t now)
{
    return svix_verify(k, id, ts, sig, body, body ? strlen(body) : 0, now);
}

static void test_published_vector(void **state)
{
    (void)state;
    secret k = vkey();
    assert_int_equal(k.len, 24);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW), SVIX_OK);
    char sig[SVIX_SIGNATURE_LEN + 1];
    assert_int_equal(svix_sign(&k, V_ID, V_TS, V_BODY, strlen(V_BODY), sig), 0);
    assert_string_equal(sig, V_SIG);
    /* the prefix is optional, as in the Svix libraries */
    secret k2;
    assert_int_equal(svix_key_parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &k2), SVIX_OK);
    assert_int_equal(verify(&k2, V_ID, V_TS, V_SIG, V_BODY, V_NOW), SVIX_OK);
    secret_free(&k2);
    secret_free(&k);
}

static void test_round_trips(void **state)
{
    (void)state;
    /* a 32-byte key (padded base64), bodies of several sizes including empty */
    secret k;
    assert_int_equal(svix_key_parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", &k),
                     SVIX_OK);
    assert_int_equal(k.len, 32);
    char *body = malloc(70000);
    assert_non_null(body);
    for (size_t i = 0; i < 70000; i++)
        body[i] = (char)('a' + i % 26);
    size_t sizes[] = {0, 1, 57, 69999};
    for (size_t i = 0; i < 4; i++) {
        char sig[SVIX_SIGNATURE_LEN + 1];
        assert_int_equal(svix_sign(&k, "msg_1", "1700000000", body, sizes[i], sig), 0);
        assert_int_equal(strlen(sig), SVIX_SIGNATURE_LEN);
        assert_int_equal(svix_verify(&k, "msg_1", "1700000000", sig, body, sizes[i], 1700000100),
                         SVIX_OK);
        assert_int_equal(svix_verify(&k, "msg_2", "1700000000", sig, body, sizes[i], 1700000100),
                         SVIX_ERR_SIGNATURE);
    }
    free(body);
    secret_free(&k);
}

static void test_missing_headers(void **state)
{
    (void)state;
    secret k = vkey();
    assert_int_equal(verify(&k, NULL, V_TS, V_SIG, V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(verify(&k, V_ID, NULL, V_SIG, V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(verify(&k, V_ID, V_TS, NULL, V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(verify(&k, "", V_TS, V_SIG, V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(verify(&k, V_ID, "", V_SIG, V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(verify(&k, V_ID, V_TS, "", V_BODY, V_NOW), SVIX_ERR_MISSING_HEADERS);
    assert_int_equal(svix_http_status(SVIX_ERR_MISSING_HEADERS), 400);
    assert_string_equal(svix_detail(SVIX_ERR_MISSING_HEADERS),
                        "Missing svix headers for webhook verification");
    secret_free(&k);
}

static void test_bad_secrets(void **state)
{
    (void)state;
    const char *bad[] = {NULL, "", "whsec_", "whsec_!!!!", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
                         "whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa=w",
                         "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", /* unpadded */
                         "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=", /* unused bits */
                         "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        secret k = {(uint8_t *)"x", 1};
        assert_int_equal(svix_key_parse(bad[i], &k), SVIX_ERR_BAD_SECRET);
        assert_null(k.data);
    }
    /* no key at all is a configuration error, never "unverified" (§10.19) */
    assert_int_equal(verify(NULL, V_ID, V_TS, V_SIG, V_BODY, V_NOW), SVIX_ERR_BAD_SECRET);
    secret empty = {0};
    assert_int_equal(verify(&empty, V_ID, V_TS, V_SIG, V_BODY, V_NOW), SVIX_ERR_BAD_SECRET);
    assert_int_equal(svix_http_status(SVIX_ERR_BAD_SECRET), 500);
}

static void test_signature_header_forms(void **state)
{
    (void)state;
    secret k = vkey();
    const char *wrong = "v1,Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHE=";
    /* one of several entries valid, in any position */
    const char *ok[] = {
        "v1,Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHE= " V_SIG,
        V_SIG " v1,Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHE=",
        "v2,abc " V_SIG,
        "v1a,xyz nonsense " V_SIG,
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(verify(&k, V_ID, V_TS, ok[i], V_BODY, V_NOW), SVIX_OK);
    assert_int_equal(verify(&k, V_ID, V_TS, wrong, V_BODY, V_NOW), SVIX_ERR_SIGNATURE);
    assert_string_equal(svix_detail(SVIX_ERR_SIGNATURE), "Invalid webhook signature");
    assert_int_equal(svix_http_status(SVIX_ERR_SIGNATURE), 401);
    /* only another version: the right MAC under "v2," does not count */
    assert_int_equal(verify(&k, V_ID, V_TS, "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
                            V_BODY, V_NOW),
                     SVIX_ERR_NO_SIGNATURE);
    assert_int_equal(svix_http_status(SVIX_ERR_NO_SIGNATURE), 401);
    /* near misses */
    const char *bad[] = {
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",   /* truncated */
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==", /* extended */
        "v1,G0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",  /* one char */
        "v1, g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", /* space inside */
        "v1,",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(verify(&k, V_ID, V_TS, bad[i], V_BODY, V_NOW), SVIX_OK);
    /* a header over the limit is refused without looking further */
    char *huge = malloc(SVIX_MAX_SIGNATURE_HEADER + 100);
    assert_non_null(huge);
    memset(huge, 'x', SVIX_MAX_SIGNATURE_HEADER + 50);
    snprintf(huge + SVIX_MAX_SIGNATURE_HEADER + 50, 50, " %s", V_SIG);
    assert_int_not_equal(verify(&k, V_ID, V_TS, huge, V_BODY, V_NOW), SVIX_OK);
    free(huge);
    secret_free(&k);
}

static void test_timestamps(void **state)
{
    (void)state;
    secret k = vkey();
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW + 300), SVIX_OK);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW - 300), SVIX_OK);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW + 301), SVIX_ERR_TIMESTAMP_TOO_OLD);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW - 301), SVIX_ERR_TIMESTAMP_TOO_NEW);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY, V_NOW + 86400), SVIX_ERR_TIMESTAMP_TOO_OLD);
    assert_int_equal(svix_http_status(SVIX_ERR_TIMESTAMP_TOO_OLD), 401);
    assert_string_equal(svix_detail(SVIX_ERR_TIMESTAMP_TOO_NEW), "Invalid webhook signature");
    const char *bad[] = {"-1614265330", "+1614265330", " 1614265330", "1614265330 ",
                         "16142653.30", "0x603822f2", "1614265330000000000000", "abc"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(verify(&k, V_ID, bad[i], V_SIG, V_BODY, V_NOW), SVIX_ERR_BAD_TIMESTAMP);
    /* the timestamp is signed: a fresh timestamp on an old signature fails */
    assert_int_equal(verify(&k, V_ID, "1614265331", V_SIG, V_BODY, V_NOW), SVIX_ERR_SIGNATURE);
    secret_free(&k);
}

static void test_tampered_body(void **state)
{
    (void)state;
    secret k = vkey();
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, "{\"test\": 2432232315}", V_NOW),
                     SVIX_ERR_SIGNATURE);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, "{\"test\":2432232314}", V_NOW),
                     SVIX_ERR_SIGNATURE); /* re-serialised JSON is a different body */
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, V_BODY "\n", V_NOW), SVIX_ERR_SIGNATURE);
    assert_int_equal(verify(&k, V_ID, V_TS, V_SIG, "", V_NOW), SVIX_ERR_SIGNATURE);
    /* a different key */
    secret k2;
    assert_int_equal(svix_key_parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", &k2),
                     SVIX_OK);
    assert_int_equal(verify(&k2, V_ID, V_TS, V_SIG, V_BODY, V_NOW), SVIX_ERR_SIGNATURE);
    secret_free(&k2);
    secret_free(&k);
}

static void test_texts(void **state)
{
    (void)state;
    for (int e = SVIX_OK; e <= SVIX_ERR_NOMEM; e++) {
        assert_non_null(svix_strerror((svix_err)e));
        assert_non_null(svix_detail((svix_err)e));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_published_vector),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_missing_headers),
        cmocka_unit_test(test_bad_secrets),
        cmocka_unit_test(test_signature_header_forms),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_tampered_body),
        cmocka_unit_test(test_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

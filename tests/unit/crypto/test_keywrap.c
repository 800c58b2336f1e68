/* Client key material: the Argon2id vectors, passcode wrap/unwrap, the blob's
 * JSON form and recovery codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/hex.h"
#include "crypto/keywrap.h"

static void test_argon2_vectors(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *all = json_load_file(VEIL_FIXTURES "/crypto_test_vectors.json", 0, &jerr);
    assert_non_null(all);
    json_t *arr = json_object_get(all, "passcode_derivation");
    assert_int_equal(json_array_size(arr), 3);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *pass = json_string_value(json_object_get(v, "passcode"));
        const char *salt_hex = json_string_value(json_object_get(v, "salt_hex"));
        const char *want_hex = json_string_value(json_object_get(v, "expected_key_hex"));
        kw_params p = {
            (uint32_t)json_integer_value(json_object_get(v, "time_cost")),
            (uint32_t)json_integer_value(json_object_get(v, "memory_cost")),
            (uint32_t)json_integer_value(json_object_get(v, "parallelism")),
        };
        uint8_t salt[32], want[32], got[32];
        assert_int_equal(hex_decode_exact(salt_hex, strlen(salt_hex), salt, 32), 0);
        assert_int_equal(hex_decode_exact(want_hex, strlen(want_hex), want, 32), 0);
        assert_int_equal(kw_derive(pass, strlen(pass), salt, &p, got), KW_OK);
        assert_memory_equal(got, want, 32);
    }
    json_decref(all);
}

static void test_derive_rejects(void **state)
{
    (void)state;
    uint8_t salt[32] = {1}, key[32];
    kw_params p = {1, 1024, 1};
    assert_int_equal(kw_derive("", 0, salt, &p, key), KW_ERR_PASSCODE);
    kw_params bad = {0, 1024, 1};
    assert_int_equal(kw_derive("123456", 6, salt, &bad, key), KW_ERR_PARAMS);
    kw_params huge = {1, 8u << 20, 1};
    assert_int_equal(kw_derive("123456", 6, salt, &huge, key), KW_ERR_PARAMS);
}

/* The real parameters (t=4, m=128 MiB, p=2), once. */
static void test_wrap_unwrap_default_params(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32], back[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    kw_blob blob;
    assert_int_equal(kw_wrap(priv, "correct horse", &KW_PARAMS_DEFAULT, &blob), KW_OK);
    assert_int_equal(blob.params.t_cost, 4);
    assert_int_equal(blob.params.m_cost_kib, 131072);
    assert_int_equal(blob.params.parallelism, 2);
    assert_int_equal(kw_unwrap(&blob, "correct horse", back), KW_OK);
    assert_memory_equal(back, priv, 32);
}

static void test_wrong_passcode_and_tamper(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32], back[32];
    kw_params fast = {1, 1024, 1};
    assert_int_equal(x25519_keygen(priv, pub), 0);
    kw_blob blob;
    assert_int_equal(kw_wrap(priv, "123456", &fast, &blob), KW_OK);
    assert_int_equal(kw_unwrap(&blob, "123457", back), KW_ERR_AUTH);
    assert_int_equal(kw_unwrap(&blob, "", back), KW_ERR_PASSCODE);
    kw_blob t = blob;
    t.ct[5] ^= 1;
    assert_int_equal(kw_unwrap(&t, "123456", back), KW_ERR_AUTH);
    t = blob;
    t.salt[0] ^= 1;
    assert_int_equal(kw_unwrap(&t, "123456", back), KW_ERR_AUTH);
    t = blob;
    t.params.t_cost = 2; /* parameters are bound to the key: changing them fails */
    assert_int_equal(kw_unwrap(&t, "123456", back), KW_ERR_AUTH);
    assert_int_equal(kw_unwrap(&blob, "123456", back), KW_OK);
    assert_memory_equal(back, priv, 32);
}

static void test_blob_json(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32], back[32];
    kw_params fast = {2, 2048, 1};
    assert_int_equal(x25519_keygen(priv, pub), 0);
    kw_blob blob, parsed;
    assert_int_equal(kw_wrap(priv, "passcode", &fast, &blob), KW_OK);
    json_t *j = kw_blob_to_json(&blob);
    assert_non_null(j);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "encrypted_private_key"))), 64);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "iv"))), 32);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "tag"))), 32);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "salt"))), 64);
    assert_int_equal(kw_blob_from_json(j, &parsed), KW_OK);
    assert_int_equal(parsed.params.t_cost, 2);
    assert_int_equal(parsed.params.m_cost_kib, 2048);
    assert_int_equal(kw_unwrap(&parsed, "passcode", back), KW_OK);
    assert_memory_equal(back, priv, 32);

    /* without "kdf" the original's defaults apply */
    json_object_del(j, "kdf");
    assert_int_equal(kw_blob_from_json(j, &parsed), KW_OK);
    assert_int_equal(parsed.params.m_cost_kib, 131072);

    /* hostile parameters are refused before any work */
    json_object_set_new(j, "kdf", json_pack("{s:s,s:i,s:i,s:i}", "algorithm", "argon2id",
                                            "time_cost", 1, "memory_cost", 1 << 30, "parallelism", 1));
    assert_int_equal(kw_blob_from_json(j, &parsed), KW_ERR_PARAMS);
    json_object_set_new(j, "kdf", json_pack("{s:s,s:i,s:i,s:i}", "algorithm", "scrypt",
                                            "time_cost", 1, "memory_cost", 1024, "parallelism", 1));
    assert_int_equal(kw_blob_from_json(j, &parsed), KW_ERR_FORMAT);
    json_object_set_new(j, "iv", json_string("abcd"));
    assert_int_equal(kw_blob_from_json(j, &parsed), KW_ERR_FORMAT);
    json_decref(j);
}

static void test_recovery_codes(void **state)
{
    (void)state;
    char code[21], pretty[25], norm[21];
    long counts[10] = {0};
    const int n = 10000;
    for (int i = 0; i < n; i++) {
        assert_int_equal(kw_recovery_generate(code), 0);
        assert_int_equal(strlen(code), 20);
        for (int k = 0; k < 20; k++) {
            assert_true(code[k] >= '0' && code[k] <= '9');
            counts[code[k] - '0']++;
        }
    }
    /* 200,000 digits, 20,000 expected each, sd ~134: +-1,500 is > 11 sd */
    for (int d = 0; d < 10; d++)
        assert_true(counts[d] > 18500 && counts[d] < 21500);

    kw_recovery_format("12345678901234567890", pretty);
    assert_string_equal(pretty, "1234-5678-9012-3456-7890");
    assert_int_equal(kw_recovery_normalize(pretty, norm), KW_OK);
    assert_string_equal(norm, "12345678901234567890");
    assert_int_equal(kw_recovery_normalize("1234 5678 9012 3456 7890", norm), KW_OK);
    assert_int_equal(kw_recovery_normalize("1234-5678-9012-3456-789", norm), KW_ERR_FORMAT);
    assert_int_equal(kw_recovery_normalize("1234-5678-9012-3456-78901", norm), KW_ERR_FORMAT);
    assert_int_equal(kw_recovery_normalize("1234-5678-9012-3456-789a", norm), KW_ERR_FORMAT);

    /* a recovery copy opens with the code as typed with dashes stripped */
    uint8_t priv[32], pub[32], back[32];
    kw_params fast = {1, 1024, 1};
    kw_blob blob;
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(kw_wrap(priv, "12345678901234567890", &fast, &blob), KW_OK);
    assert_int_equal(kw_recovery_normalize("1234-5678-9012-3456-7890", norm), KW_OK);
    assert_int_equal(kw_unwrap(&blob, norm, back), KW_OK);
    assert_memory_equal(back, priv, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argon2_vectors),
        cmocka_unit_test(test_derive_rejects),
        cmocka_unit_test(test_wrap_unwrap_default_params),
        cmocka_unit_test(test_wrong_passcode_and_tamper),
        cmocka_unit_test(test_blob_json),
        cmocka_unit_test(test_recovery_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

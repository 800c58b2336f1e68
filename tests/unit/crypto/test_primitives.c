/* crypto/primitives: X25519 (RFC 7748, the low-order keys refused at the edge) and
 * AES-256-GCM with its 16-byte IV (the shared vectors). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "common/hex.h"
#include "crypto/primitives.h"

static json_t *load_vectors(void)
{
    json_error_t err;
    json_t *v = json_load_file(VEIL_FIXTURES "/crypto_test_vectors.json", 0, &err);
    assert_non_null(v);
    return v;
}

static void unhex(const char *s, uint8_t *out, size_t n)
{
    assert_int_equal(hex_decode_exact(s, strlen(s), out, n), 0);
}

static size_t unhex_var(const char *s, uint8_t *out, size_t cap)
{
    long n = hex_decode(s, strlen(s), out, cap);
    assert_true(n >= 0);
    return (size_t)n;
}

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_aes_gcm_vectors(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *arr = json_object_get(all, "aes_gcm");
    assert_int_equal(json_array_size(arr), 3);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        uint8_t key[32], iv[16], tag[16], got_tag[16], pt[256], ct[256], out[256], aad[64];
        unhex(jstr(v, "key_hex"), key, 32);
        unhex(jstr(v, "iv_hex"), iv, 16);
        unhex(jstr(v, "auth_tag_hex"), tag, 16);
        size_t n = unhex_var(jstr(v, "plaintext_hex"), pt, sizeof pt);
        assert_int_equal(unhex_var(jstr(v, "ciphertext_hex"), ct, sizeof ct), n);
        size_t aad_len = 0;
        if (json_object_get(v, "aad_hex"))
            aad_len = unhex_var(jstr(v, "aad_hex"), aad, sizeof aad);
        assert_int_equal(aesgcm_encrypt(key, iv, aad, aad_len, pt, n, out, got_tag), 0);
        assert_memory_equal(out, ct, n);
        assert_memory_equal(got_tag, tag, 16);
        assert_int_equal(aesgcm_decrypt(key, iv, aad, aad_len, ct, n, tag, out), 0);
        assert_memory_equal(out, pt, n);
        tag[0] ^= 1;
        assert_int_equal(aesgcm_decrypt(key, iv, aad, aad_len, ct, n, tag, out), -1);
    }
    json_decref(all);
}

/* RFC 7748 §6.1: Alice's public key and the shared secret */
static void test_x25519_rfc7748(void **state)
{
    (void)state;
    uint8_t a_priv[32], a_pub[32], b_pub[32], want_pub[32], want_ss[32], ss[32];
    unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a_priv, 32);
    unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", want_pub, 32);
    unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", b_pub, 32);
    unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742", want_ss, 32);
    assert_int_equal(x25519_public(a_priv, a_pub), 0);
    assert_memory_equal(a_pub, want_pub, 32);
    assert_int_equal(x25519_shared(a_priv, b_pub, ss), 0);
    assert_memory_equal(ss, want_ss, 32);
}

/* The edge check (x25519_public_key_ok) must refuse exactly the keys whose every
 * agreement is zero: each listed encoding, with bit 255 clear or set, makes OpenSSL's
 * X25519 fail for a random private key, and random keys pass. */
static void test_small_order_keys_refused_at_the_edge(void **state)
{
    (void)state;
    static const char *const SMALL[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    };
    uint8_t priv[32], pub[32], ss[32], k[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_true(x25519_public_key_ok(pub));
    for (size_t i = 0; i < sizeof SMALL / sizeof SMALL[0]; i++) {
        assert_int_equal(hex_decode_exact(SMALL[i], 64, k, 32), 0);
        for (int high = 0; high < 2; high++) {
            k[31] = (uint8_t)(high ? k[31] | 0x80 : k[31] & 0x7f);
            assert_false(x25519_public_key_ok(k));
            assert_int_equal(x25519_shared(priv, k, ss), -2);
        }
    }
    for (int i = 0; i < 64; i++) {
        assert_int_equal(x25519_keygen(priv, pub), 0);
        assert_true(x25519_public_key_ok(pub));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aes_gcm_vectors),
        cmocka_unit_test(test_x25519_rfc7748),
        cmocka_unit_test(test_small_order_keys_refused_at_the_edge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

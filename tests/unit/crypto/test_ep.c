/* crypto/ep, the EncryptedPayload: the shared ECDH+HKDF vectors, round trips for
 * every context, and a negative test for every tampered or malformed field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/hex.h"
#include "crypto/ep.h"

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

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

static void test_ecdh_vectors(void **state)
{
    (void)state;
    json_t *all = load_vectors();
    json_t *arr = json_object_get(all, "ecdh_derivation");
    assert_int_equal(json_array_size(arr), 4);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        uint8_t priv[32], pub[32], salt[32], want[32], got[32];
        unhex(jstr(v, "private_key_hex"), priv, 32);
        unhex(jstr(v, "public_key_hex"), pub, 32);
        unhex(jstr(v, "salt_hex"), salt, 32);
        unhex(jstr(v, "expected_key_hex"), want, 32);
        assert_int_equal(ep_derive_key(priv, pub, salt, jstr(v, "context"), got), EP_OK);
        assert_memory_equal(got, want, 32);
    }
    json_decref(all);
}

static void test_low_order_point_rejected(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32], zero[32] = {0}, ss[32];
    ep e;
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(x25519_shared(priv, zero, ss), -2);
    assert_int_equal(ep_seal(zero, (const uint8_t *)"x", 1, EP_CTX_TEST, &e), EP_ERR_KEY);
}

static void test_roundtrip_every_context(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    const char *msg = "the quick brown fox \xe2\x9c\x93";
    for (size_t i = 0; EP_KNOWN_CONTEXTS[i]; i++) {
        ep e;
        secret pt;
        assert_int_equal(ep_seal(pub, (const uint8_t *)msg, strlen(msg), EP_KNOWN_CONTEXTS[i], &e), EP_OK);
        assert_int_equal(e.ct_len, strlen(msg));
        /* through JSON and back */
        vbuf j = VBUF_INIT;
        assert_int_equal(ep_write_json(&e, &j), 0);
        ep back;
        assert_int_equal(ep_parse((const char *)j.data, j.len, &back, NULL), EP_OK);
        assert_int_equal(ep_open(priv, &back, EP_KNOWN_CONTEXTS[i], &pt), EP_OK);
        assert_int_equal(pt.len, strlen(msg));
        assert_memory_equal(pt.data, msg, pt.len);
        secret_free(&pt);
        /* every other context fails */
        for (size_t k = 0; EP_KNOWN_CONTEXTS[k]; k++) {
            if (k == i)
                continue;
            assert_int_equal(ep_open(priv, &back, EP_KNOWN_CONTEXTS[k], &pt), EP_ERR_AUTH);
            assert_null(pt.data);
        }
        vbuf_free(&j);
        ep_clear(&e);
        ep_clear(&back);
    }
}

static void test_fresh_randomness(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    ep a, b;
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(ep_seal(pub, (const uint8_t *)"same", 4, EP_CTX_TEST, &a), EP_OK);
    assert_int_equal(ep_seal(pub, (const uint8_t *)"same", 4, EP_CTX_TEST, &b), EP_OK);
    assert_memory_not_equal(a.epk, b.epk, 32);
    assert_memory_not_equal(a.salt, b.salt, 32);
    assert_memory_not_equal(a.iv, b.iv, 16);
    ep_clear(&a);
    ep_clear(&b);
}

static void test_empty_and_large(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    ep e;
    secret pt;
    assert_int_equal(ep_seal(pub, NULL, 0, EP_CTX_USER_STORAGE, &e), EP_OK);
    assert_int_equal(e.ct_len, 0);
    assert_int_equal(ep_open(priv, &e, EP_CTX_USER_STORAGE, &pt), EP_OK);
    assert_int_equal(pt.len, 0);
    secret_free(&pt);
    ep_clear(&e);

    size_t big = 1u << 20;
    uint8_t *m = malloc(big);
    for (size_t i = 0; i < big; i++)
        m[i] = (uint8_t)(i * 31);
    assert_int_equal(ep_seal(pub, m, big, EP_CTX_ASSISTANT_STORAGE, &e), EP_OK);
    assert_int_equal(ep_open(priv, &e, EP_CTX_ASSISTANT_STORAGE, &pt), EP_OK);
    assert_int_equal(pt.len, big);
    assert_memory_equal(pt.data, m, big);
    secret_free(&pt);
    ep_clear(&e);
    free(m);
}

static void test_wrong_key(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32], priv2[32], pub2[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(x25519_keygen(priv2, pub2), 0);
    ep e;
    secret pt;
    assert_int_equal(ep_seal(pub, (const uint8_t *)"hi", 2, EP_CTX_TEST, &e), EP_OK);
    assert_int_equal(ep_open(priv2, &e, EP_CTX_TEST, &pt), EP_ERR_AUTH);
    ep_clear(&e);
}

/* flipping any bit of any byte-field makes opening fail */
static void test_tamper_every_field(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    ep e;
    secret pt;
    assert_int_equal(ep_seal(pub, (const uint8_t *)"tamper me", 9, EP_CTX_TEST, &e), EP_OK);
    struct { uint8_t *p; size_t n; } fields[] = {
        {e.epk, 32}, {e.iv, 16}, {e.tag, 16}, {e.salt, 32}, {e.ct, e.ct_len},
    };
    for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        for (size_t i = 0; i < fields[f].n; i += 3) {
            fields[f].p[i] ^= 0x01;
            ep_err r = ep_open(priv, &e, EP_CTX_TEST, &pt);
            /* a flipped epk may land on a low-order point; either way it must fail */
            assert_true(r == EP_ERR_AUTH || (f == 0 && r == EP_ERR_KEY));
            fields[f].p[i] ^= 0x01;
        }
    }
    assert_int_equal(ep_open(priv, &e, EP_CTX_TEST, &pt), EP_OK);
    secret_free(&pt);
    /* truncated ciphertext */
    e.ct_len--;
    assert_int_equal(ep_open(priv, &e, EP_CTX_TEST, &pt), EP_ERR_AUTH);
    ep_clear(&e);
}

static void test_bad_context(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    ep e;
    assert_int_equal(ep_seal(pub, (const uint8_t *)"x", 1, "", &e), EP_ERR_CONTEXT);
    assert_int_equal(ep_seal(pub, (const uint8_t *)"x", 1, "bad\ncontext", &e), EP_ERR_CONTEXT);
    assert_true(ep_context_is_known("client-to-enclave-transport"));
    assert_true(ep_context_is_known("org-key-distribution"));
    assert_false(ep_context_is_known("Client-To-Enclave-Transport"));
    assert_false(ep_context_is_known("client-to-enclave-transport "));
}

/* Build an EP JSON with one field replaced. */
static ep_err parse_with(const char *field, const char *value, const char **bad)
{
    const char *names[] = {EP_F_EPK, EP_F_IV, EP_F_CT, EP_F_TAG, EP_F_SALT};
    const char *good[] = {
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "11111111111111111111111111111111", "9b2ee55288f111f35e648a71bb",
        "b60febd361c3d05ee4ac80ec98dc5232",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    };
    json_t *o = json_object();
    for (int i = 0; i < 5; i++) {
        if (strcmp(names[i], field) != 0)
            json_object_set_new(o, names[i], json_string(good[i]));
        else if (value)
            json_object_set_new(o, names[i], json_string(value));
    }
    ep e;
    ep_err r = ep_from_json(o, &e, bad);
    ep_clear(&e);
    json_decref(o);
    return r;
}

static void test_json_strictness(void **state)
{
    (void)state;
    const char *bad;
    assert_int_equal(parse_with("none", NULL, &bad), EP_OK);
    assert_int_equal(parse_with(EP_F_EPK, NULL, &bad), EP_ERR_MISSING);
    assert_string_equal(bad, EP_F_EPK);
    assert_int_equal(parse_with(EP_F_CT, NULL, &bad), EP_ERR_MISSING);
    assert_string_equal(bad, EP_F_CT);
    assert_int_equal(parse_with(EP_F_EPK, "abcd", &bad), EP_ERR_EPK_LEN);
    assert_int_equal(parse_with(EP_F_IV, "1111111111111111111111111111111111", &bad), EP_ERR_IV_LEN);
    assert_int_equal(parse_with(EP_F_TAG, "b60febd361c3d05ee4ac80ec98dc52", &bad), EP_ERR_TAG_LEN);
    assert_int_equal(parse_with(EP_F_SALT, "bbbb", &bad), EP_ERR_SALT_LEN);
    assert_string_equal(bad, EP_F_SALT);
    /* odd length, whitespace, prefix, non-hex: all rejected (defect §10.25) */
    assert_int_equal(parse_with(EP_F_CT, "9b2ee55288f111f35e648a71b", &bad), EP_ERR_HEX);
    assert_int_equal(parse_with(EP_F_CT, "9b2e e552", &bad), EP_ERR_HEX);
    assert_int_equal(parse_with(EP_F_CT, "0x9b2e", &bad), EP_ERR_HEX);
    assert_int_equal(parse_with(EP_F_IV, "1111111111111111111111111111111g", &bad), EP_ERR_HEX);
    /* upper case is accepted and normalised (the original lowercased) */
    assert_int_equal(parse_with(EP_F_TAG, "B60FEBD361C3D05EE4AC80EC98DC5232", &bad), EP_OK);
    /* empty ciphertext is allowed by the envelope */
    assert_int_equal(parse_with(EP_F_CT, "", &bad), EP_OK);
    /* wrong types */
    json_t *o = json_pack("{s:i}", EP_F_EPK, 5);
    ep e;
    assert_int_equal(ep_from_json(o, &e, &bad), EP_ERR_TYPE);
    json_decref(o);
    assert_int_equal(ep_parse("[1,2]", 5, &e, NULL), EP_ERR_JSON);
    assert_int_equal(ep_parse("{", 1, &e, NULL), EP_ERR_JSON);
}

static void test_json_output_shape(void **state)
{
    (void)state;
    ep e = {0};
    memset(e.epk, 0xAB, 32);
    memset(e.iv, 0x01, 16);
    memset(e.tag, 0xFF, 16);
    memset(e.salt, 0x10, 32);
    uint8_t ct[2] = {0xDE, 0xAD};
    e.ct = ct;
    e.ct_len = 2;
    vbuf j = VBUF_INIT;
    assert_int_equal(ep_write_json(&e, &j), 0);
    const char *want =
        "{\"ephemeral_public_key\":\"abababababababababababababababababababababababababababababababab\","
        "\"iv\":\"01010101010101010101010101010101\",\"ciphertext\":\"dead\","
        "\"auth_tag\":\"ffffffffffffffffffffffffffffffff\","
        "\"hkdf_salt\":\"1010101010101010101010101010101010101010101010101010101010101010\"}";
    assert_string_equal(vbuf_cstr(&j), want);
    vbuf_free(&j);
}

/* EP_FIELDS, the table the API's validators walk, is the envelope itself: the wire
 * order of ep_write_json and the lengths ep_from_json enforces. */
static void test_field_table(void **state)
{
    (void)state;
    ep e = {0};
    uint8_t ct[1] = {0x5A};
    e.ct = ct;
    e.ct_len = 1;
    vbuf j = VBUF_INIT;
    assert_int_equal(ep_write_json(&e, &j), 0);
    json_t *o = json_loadb((const char *)j.data, j.len, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_object_size(o), EP_N_FIELDS);
    const char *key;
    json_t *v;
    size_t i = 0, pos = 0;
    json_object_foreach(o, key, v) {
        assert_string_equal(key, EP_FIELDS[i].name);
        /* in order in the text too (jansson keeps insertion order) */
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\":", key);
        const char *at = strstr(vbuf_cstr(&j), quoted);
        assert_non_null(at);
        assert_true((size_t)(at - vbuf_cstr(&j)) >= pos);
        pos = (size_t)(at - vbuf_cstr(&j));
        size_t n = json_string_length(v);
        if (EP_FIELDS[i].hex_len)
            assert_int_equal(n, EP_FIELDS[i].hex_len);
        assert_true(n >= EP_FIELDS[i].hex_min); /* one byte of ciphertext is the API minimum */
        i++;
    }
    assert_int_equal(i, EP_N_FIELDS);
    assert_string_equal(EP_FIELDS[EP_FIELD_EPK].name, EP_F_EPK);
    assert_string_equal(EP_FIELDS[EP_FIELD_IV].name, EP_F_IV);
    assert_string_equal(EP_FIELDS[EP_FIELD_CT].name, EP_F_CT);
    assert_string_equal(EP_FIELDS[EP_FIELD_TAG].name, EP_F_TAG);
    assert_string_equal(EP_FIELDS[EP_FIELD_SALT].name, EP_F_SALT);
    assert_int_equal(EP_FIELDS[EP_FIELD_CT].hex_len, 0);
    assert_int_equal(EP_FIELDS[EP_FIELD_CT].hex_min, 2);
    /* a fixed field one byte short is refused by the envelope too */
    for (i = 0; i < EP_N_FIELDS; i++) {
        if (!EP_FIELDS[i].hex_len)
            continue;
        json_t *c = json_deep_copy(o);
        char *shorter = strndup(json_string_value(json_object_get(c, EP_FIELDS[i].name)),
                                EP_FIELDS[i].hex_len - 2);
        json_object_set_new(c, EP_FIELDS[i].name, json_string(shorter));
        ep d;
        const char *bad;
        assert_int_not_equal(ep_from_json(c, &d, &bad), EP_OK);
        assert_string_equal(bad, EP_FIELDS[i].name);
        free(shorter);
        json_decref(c);
    }
    json_decref(o);
    vbuf_free(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ecdh_vectors),
        cmocka_unit_test(test_low_order_point_rejected),
        cmocka_unit_test(test_roundtrip_every_context),
        cmocka_unit_test(test_fresh_randomness),
        cmocka_unit_test(test_empty_and_large),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_tamper_every_field),
        cmocka_unit_test(test_bad_context),
        cmocka_unit_test(test_json_strictness),
        cmocka_unit_test(test_json_output_shape),
        cmocka_unit_test(test_field_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

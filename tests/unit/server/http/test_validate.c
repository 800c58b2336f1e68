/* server/http/validate: the request-body checks, at any body location, and the exact
 * 422 each failure answers (the original's pydantic shapes: type, loc, msg, input);
 * hex that is strict (no whitespace, defect §10.25) and lower-cased in place, and
 * X25519 keys that nobody can seal to refused up front (F0). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "crypto/primitives.h"
#include "server/http/validate.h"

#include "api_capture.h"

#define HEX64 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define HEX32 "00112233445566778899aabbccddeeff"

static json_t *J(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!j)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

static void test_object(void **state)
{
    (void)state;
    static const char *const not_objects[] = {"[1,2]", "\"x\"", "null", "3", "true"};
    for (size_t i = 0; i < sizeof not_objects / sizeof not_objects[0]; i++) {
        api_req *r = cap_req();
        json_t *b = J(not_objects[i]);
        assert_false(v_object(r, b));
        assert_422("model_attributes_type", "[\"body\"]",
                   "Input should be a valid dictionary or object to extract fields from", not_objects[i]);
        json_decref(b);
        cap_done(r);
    }
    api_req *r = cap_req();
    json_t *b = J("{}");
    assert_true(v_object(r, b));
    assert_int_equal(cap.n, 0);
    json_decref(b);
    cap_done(r);
}

/* one v_hex call on {"k": <value>} with exact/min; returns the verdict */
static bool hex_of(api_req *r, const char *value_json, size_t exact, size_t min, json_t **obj)
{
    char doc[9000];
    if (value_json)
        snprintf(doc, sizeof doc, "{\"k\":%s}", value_json);
    else
        snprintf(doc, sizeof doc, "{}");
    *obj = J(doc);
    return v_hex(r, *obj, NULL, NULL, "k", exact, min);
}

static void test_hex_exact(void **state)
{
    (void)state;
    static const struct {
        const char *value, *type, *msg;
    } BAD[] = {
        {NULL, "missing", "Field required"},
        {"5", "string_type", "Input should be a valid string"},
        {"null", "string_type", "Input should be a valid string"},
        {"\"\"", "string_too_short", "String should have at least 64 characters"},
        {"\"" HEX32 "\"", "string_too_short", "String should have at least 64 characters"},
        {"\"" HEX64 "0\"", "string_too_long", "String should have at most 64 characters"},
        {"\"" HEX32 "00112233445566778899aabbccddeefg\"", "value_error", "Value error, Invalid hex string"},
        /* whitespace is not hex, even where a lenient decoder would skip it (§10.25) */
        {"\" " HEX32 "00112233445566778899aabbccddeef\"", "value_error", "Value error, Invalid hex string"},
        {"\"" HEX32 "00112233445566778899aabbccddee\\nf\"", "value_error", "Value error, Invalid hex string"},
        {"\"0x" HEX32 "112233445566778899aabbccddeeff\"", "value_error", "Value error, Invalid hex string"},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        api_req *r = cap_req();
        json_t *o;
        assert_false(hex_of(r, BAD[i].value, 64, 0, &o));
        assert_422(BAD[i].type, "[\"body\",\"k\"]", BAD[i].msg, BAD[i].value ? BAD[i].value : "null");
        json_decref(o);
        cap_done(r);
    }
    /* accepted, and lower-cased in place */
    api_req *r = cap_req();
    json_t *o;
    assert_true(hex_of(r, "\"00112233445566778899AABBCCDDEEFF00112233445566778899aAbBcCdDeEfF\"", 64, 0, &o));
    assert_int_equal(cap.n, 0);
    assert_string_equal(json_string_value(json_object_get(o, "k")), HEX64);
    json_decref(o);
    cap_done(r);
}

static void test_hex_minimum(void **state)
{
    (void)state;
    api_req *r = cap_req();
    json_t *o;
    assert_false(hex_of(r, "\"a\"", 0, 2, &o));
    assert_422("string_too_short", "[\"body\",\"k\"]", "String should have at least 2 characters", "\"a\"");
    json_decref(o);
    cap_done(r);

    r = cap_req(); /* the singular */
    assert_false(hex_of(r, "\"\"", 0, 1, &o));
    assert_422("string_too_short", "[\"body\",\"k\"]", "String should have at least 1 character", "\"\"");
    json_decref(o);
    cap_done(r);

    r = cap_req(); /* an odd length is no byte string */
    assert_false(hex_of(r, "\"ABC\"", 0, 2, &o));
    assert_422("value_error", "[\"body\",\"k\"]", "Value error, Invalid hex string", "\"ABC\"");
    json_decref(o);
    cap_done(r);

    r = cap_req();
    assert_true(hex_of(r, "\"ABCD\"", 0, 2, &o));
    assert_string_equal(json_string_value(json_object_get(o, "k")), "abcd");
    json_decref(o);
    cap_done(r);

    /* no maximum without exact; a long value is lower-cased whole (past the 8 KiB stack copy) */
    char *big = malloc(20000);
    assert_non_null(big);
    memset(big, 'A', 20000);
    r = cap_req();
    json_t *obj = json_object();
    json_object_set_new(obj, "k", json_stringn(big, 20000));
    assert_true(v_hex(r, obj, NULL, NULL, "k", 0, 2));
    assert_int_equal(cap.n, 0);
    const char *s = json_string_value(json_object_get(obj, "k"));
    assert_int_equal(strlen(s), 20000);
    assert_int_equal(strspn(s, "a"), 20000);
    json_decref(obj);
    cap_done(r);
    free(big);
}

static void test_hex_locations(void **state)
{
    (void)state;
    json_t *o = J("{}");
    api_req *r = cap_req();
    assert_false(v_hex(r, o, "outer", NULL, "k", 64, 0));
    assert_422("missing", "[\"body\",\"outer\",\"k\"]", "Field required", "null");
    cap_done(r);
    r = cap_req();
    assert_false(v_hex(r, o, "outer", "inner", "k", 64, 0));
    assert_422("missing", "[\"body\",\"outer\",\"inner\",\"k\"]", "Field required", "null");
    cap_done(r);
    json_decref(o);
}

static void test_x25519_key(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    char hex[65], doc[200];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    hex_encode(pub, 32, hex);
    for (char *p = hex; *p; p++) /* upper case on the wire: accepted, stored lower */
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
    snprintf(doc, sizeof doc, "{\"public_key\":\"%s\"}", hex);
    json_t *o = J(doc);
    api_req *r = cap_req();
    assert_true(v_x25519_key(r, o, NULL, "public_key"));
    assert_int_equal(cap.n, 0);
    hex_encode(pub, 32, hex);
    assert_string_equal(json_string_value(json_object_get(o, "public_key")), hex);
    json_decref(o);
    cap_done(r);

    /* low-order points: well-formed hex, but every agreement with them is zero */
    static const char *const LOW[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    };
    for (size_t i = 0; i < sizeof LOW / sizeof LOW[0]; i++) {
        char echo[80];
        snprintf(doc, sizeof doc, "{\"public_key\":\"%s\"}", LOW[i]);
        snprintf(echo, sizeof echo, "\"%s\"", LOW[i]);
        o = J(doc);
        r = cap_req();
        assert_false(v_x25519_key(r, o, NULL, "public_key"));
        assert_422("value_error", "[\"body\",\"public_key\"]",
                   "Value error, not a valid X25519 public key (a low-order point)", echo);
        cap_done(r);
        r = cap_req(); /* under a parent */
        assert_false(v_x25519_key(r, o, "org", "public_key"));
        assert_422("value_error", "[\"body\",\"org\",\"public_key\"]",
                   "Value error, not a valid X25519 public key (a low-order point)", echo);
        cap_done(r);
        json_decref(o);
    }
    /* the hex rules come first */
    o = J("{\"public_key\":\"abc\"}");
    r = cap_req();
    assert_false(v_x25519_key(r, o, NULL, "public_key"));
    assert_422("string_too_short", "[\"body\",\"public_key\"]", "String should have at least 64 characters",
               "\"abc\"");
    json_decref(o);
    cap_done(r);
}

static void test_string(void **state)
{
    (void)state;
    static const struct {
        const char *doc, *type, *msg, *input;
    } BAD[] = {
        {"{}", "missing", "Field required", "null"},
        {"{\"name\":[]}", "string_type", "Input should be a valid string", "[]"},
        {"{\"name\":\"\"}", "string_too_short", "String should have at least 1 character", "\"\""},
        {"{\"name\":\"abcdef\"}", "string_too_long", "String should have at most 5 characters",
         "\"abcdef\""},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        json_t *o = J(BAD[i].doc);
        api_req *r = cap_req();
        assert_false(v_string(r, o, NULL, "name", 5));
        assert_422(BAD[i].type, "[\"body\",\"name\"]", BAD[i].msg, BAD[i].input);
        cap_done(r);
        r = cap_req();
        assert_false(v_string(r, o, "org", "name", 5));
        assert_422(BAD[i].type, "[\"body\",\"org\",\"name\"]", BAD[i].msg, BAD[i].input);
        cap_done(r);
        json_decref(o);
    }
    json_t *o = J("{\"name\":\"abcde\"}");
    api_req *r = cap_req();
    assert_true(v_string(r, o, NULL, "name", 5));
    assert_int_equal(cap.n, 0);
    json_decref(o);
    cap_done(r);
}

#define EP_OK_FIELDS                                                                              \
    "\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"ABCD\","      \
    "\"auth_tag\":\"" HEX32 "\",\"hkdf_salt\":\"" HEX64 "\""

static void test_ep(void **state)
{
    (void)state;
    json_t *o = J("{\"m\":{" EP_OK_FIELDS "}}");
    api_req *r = cap_req();
    assert_true(v_ep(r, o, NULL, "m"));
    assert_int_equal(cap.n, 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(o, "m"), "ciphertext")), "abcd");
    json_decref(o);
    cap_done(r);

    o = J("{}");
    r = cap_req();
    assert_false(v_ep(r, o, NULL, "m"));
    assert_422("missing", "[\"body\",\"m\"]", "Field required", "null");
    json_decref(o);
    cap_done(r);

    o = J("{\"m\":\"sealed\"}");
    r = cap_req();
    assert_false(v_ep(r, o, "outer", "m"));
    assert_422("model_attributes_type", "[\"body\",\"outer\",\"m\"]",
               "Input should be a valid dictionary or object to extract fields from", "\"sealed\"");
    json_decref(o);
    cap_done(r);

    /* each field's rule, named at its own location; the first bad field answers */
    static const struct {
        const char *fields, *loc, *type, *msg, *input;
    } BAD[] = {
        {"\"iv\":\"" HEX32 "\"", "[\"body\",\"m\",\"ephemeral_public_key\"]", "missing", "Field required",
         "null"},
        {"\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX64 "\"", "[\"body\",\"m\",\"iv\"]",
         "string_too_long", "String should have at most 32 characters", "\"" HEX64 "\""},
        {"\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"a\"",
         "[\"body\",\"m\",\"ciphertext\"]", "string_too_short", "String should have at least 2 characters",
         "\"a\""},
        {"\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"ab\",\"auth_tag\":1",
         "[\"body\",\"m\",\"auth_tag\"]", "string_type", "Input should be a valid string", "1"},
        {"\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"ab\",\"auth_tag\":\"" HEX32
         "\",\"hkdf_salt\":\"" HEX32 "00112233445566778899aabbccddeefz\"",
         "[\"body\",\"m\",\"hkdf_salt\"]", "value_error", "Value error, Invalid hex string",
         "\"" HEX32 "00112233445566778899aabbccddeefz\""},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char doc[1024];
        snprintf(doc, sizeof doc, "{\"m\":{%s}}", BAD[i].fields);
        o = J(doc);
        r = cap_req();
        assert_false(v_ep(r, o, NULL, "m"));
        assert_422(BAD[i].type, BAD[i].loc, BAD[i].msg, BAD[i].input);
        json_decref(o);
        cap_done(r);
    }
}

static void test_ep_item(void **state)
{
    (void)state;
    json_t *item = J("{" EP_OK_FIELDS "}");
    api_req *r = cap_req();
    assert_true(v_ep_item(r, item, NULL, "history", 3));
    assert_int_equal(cap.n, 0);
    json_decref(item);
    cap_done(r);

    /* the index is an integer in loc, as pydantic writes list positions */
    item = J("[]");
    r = cap_req();
    assert_false(v_ep_item(r, item, NULL, "history", 3));
    assert_422("model_attributes_type", "[\"body\",\"history\",3]",
               "Input should be a valid dictionary or object to extract fields from", "[]");
    json_decref(item);
    cap_done(r);

    item = J("{\"ephemeral_public_key\":\"" HEX64 "\"}");
    r = cap_req();
    assert_false(v_ep_item(r, item, NULL, "history", 0));
    assert_422("missing", "[\"body\",\"history\",0,\"iv\"]", "Field required", "null");
    json_decref(item);
    cap_done(r);
}

#define EP_AT_FIELDS                                                                                 \
    "\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"ABCD\","      \
    "\"auth_tag\":\"" HEX32 "\",\"hkdf_salt\":\"" HEX64 "\""

/* an EncryptedPayload at any depth: each rule named at its own location */
static void test_ep_at(void **state)
{
    (void)state;
    v_loc loc = {{"distributions", "0", "encrypted_org_key"}, 3};
    json_t *ep = J("{" EP_AT_FIELDS "}");
    api_req *r = cap_req();
    assert_true(v_ep_at(r, ep, loc));
    assert_int_equal(cap.n, 0);
    assert_string_equal(json_string_value(json_object_get(ep, "ciphertext")), "abcd");
    json_decref(ep);
    cap_done(r);

    r = cap_req();
    assert_false(v_ep_at(r, NULL, loc));
    assert_422("missing", "[\"body\",\"distributions\",0,\"encrypted_org_key\"]", "Field required", "null");
    cap_done(r);

    ep = J("[1]");
    r = cap_req();
    assert_false(v_ep_at(r, ep, loc));
    assert_422("model_attributes_type", "[\"body\",\"distributions\",0,\"encrypted_org_key\"]",
               "Input should be a valid dictionary or object to extract fields from", "[1]");
    json_decref(ep);
    cap_done(r);

    static const struct {
        const char *doc, *field, *type, *msg, *input;
    } BAD[] = {
        {"{\"iv\":\"" HEX32 "\"}", "ephemeral_public_key", "missing", "Field required", "null"},
        {"{\"ephemeral_public_key\":7}", "ephemeral_public_key", "string_type",
         "Input should be a valid string", "7"},
        {"{\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX64 "\"}", "iv", "string_too_long",
         "String should have at most 32 characters", "\"" HEX64 "\""},
        {"{\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"a\"}", "ciphertext",
         "string_too_short", "String should have at least 2 characters", "\"a\""},
        {"{\"ephemeral_public_key\":\"" HEX64 "\",\"iv\":\"" HEX32 "\",\"ciphertext\":\"ab\",\"auth_tag\":\"" HEX32
         "\",\"hkdf_salt\":\"" HEX32 " 0112233445566778899aabbccddeeff\"}",
         "hkdf_salt", "value_error", "Value error, Invalid hex string",
         "\"" HEX32 " 0112233445566778899aabbccddeeff\""},
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        char want_loc[200];
        snprintf(want_loc, sizeof want_loc, "[\"body\",\"distributions\",0,\"encrypted_org_key\",\"%s\"]",
                 BAD[i].field);
        ep = J(BAD[i].doc);
        r = cap_req();
        assert_false(v_ep_at(r, ep, loc));
        assert_422(BAD[i].type, want_loc, BAD[i].msg, BAD[i].input);
        json_decref(ep);
        cap_done(r);
    }

    /* a location already V_LOC_MAX deep is never written past its end */
    v_loc deep = {{"a", "b", "c", "d", "e", "f"}, V_LOC_MAX};
    ep = J("{}");
    r = cap_req();
    assert_false(v_ep_at(r, ep, deep));
    assert_422("missing", "[\"body\",\"a\",\"b\",\"c\",\"d\",\"e\",\"f\"]", "Field required", "null");
    json_decref(ep);
    cap_done(r);
}

static void test_str_at(void **state)
{
    (void)state;
    v_loc loc = {{"members", "2", "user_id"}, 3};
    json_t *v = json_string("user_2");
    api_req *r = cap_req();
    assert_true(v_str_at(r, v, loc, 32));
    assert_int_equal(cap.n, 0);
    json_decref(v);
    cap_done(r);

    r = cap_req();
    assert_false(v_str_at(r, NULL, loc, 32));
    assert_422("missing", "[\"body\",\"members\",2,\"user_id\"]", "Field required", "null");
    cap_done(r);
    v = json_integer(5);
    r = cap_req();
    assert_false(v_str_at(r, v, loc, 32));
    assert_422("string_type", "[\"body\",\"members\",2,\"user_id\"]", "Input should be a valid string", "5");
    json_decref(v);
    cap_done(r);
    v = json_string("");
    r = cap_req();
    assert_false(v_str_at(r, v, loc, 32));
    assert_422("string_too_short", "[\"body\",\"members\",2,\"user_id\"]",
               "String should have at least 1 character", "\"\"");
    json_decref(v);
    cap_done(r);
    v = json_string("user_123456789012345678901234567890");
    r = cap_req();
    assert_false(v_str_at(r, v, loc, 32));
    assert_422("string_too_long", "[\"body\",\"members\",2,\"user_id\"]",
               "String should have at most 32 characters", "\"user_123456789012345678901234567890\"");
    json_decref(v);
    cap_done(r);
}

static void test_lower(void **state)
{
    (void)state;
    json_t *s = json_string("AbC-XyZ 09");
    v_lower(s);
    assert_string_equal(json_string_value(s), "abc-xyz 09");
    json_decref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object),
        cmocka_unit_test(test_hex_exact),
        cmocka_unit_test(test_hex_minimum),
        cmocka_unit_test(test_hex_locations),
        cmocka_unit_test(test_x25519_key),
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_ep),
        cmocka_unit_test(test_ep_item),
        cmocka_unit_test(test_ep_at),
        cmocka_unit_test(test_str_at),
        cmocka_unit_test(test_lower),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* src/enclave/protocol.c: the enclave protocol as one typed contract. Every
 * command name and error code round-trips; a chat request parses into its typed
 * struct and each malformed field gets its own message (the original's wording);
 * every encoder's output parses back into the event it encodes, in both stream
 * formats; a final event is recognised before anything else it carries; veild's
 * SSE relay and the client's SSE parser agree on every event. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "common/hex.h"
#include "crypto/ep.h"
#include "enclave/protocol.h"

static char KEY_HEX[65], KEY2_HEX[65];
static json_t *EP_JSON;

static int setup(void **state)
{
    (void)state;
    uint8_t priv[32], pub[32];
    if (x25519_keygen(priv, pub) < 0)
        return -1;
    hex_encode(pub, 32, KEY_HEX);
    if (x25519_keygen(priv, pub) < 0)
        return -1;
    hex_encode(pub, 32, KEY2_HEX);
    ep e;
    if (ep_seal(pub, (const uint8_t *)"hello", 5, EP_CTX_CLIENT_TO_ENCLAVE, &e) != EP_OK)
        return -1;
    EP_JSON = ep_to_json(&e);
    ep_clear(&e);
    return EP_JSON ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    json_decref(EP_JSON);
    return 0;
}

static void test_commands(void **state)
{
    (void)state;
    for (int c = PROTO_CMD_GET_PUBLIC_KEY; c <= PROTO_CMD_GET_ATTESTATION; c++) {
        const char *name = proto_cmd_name((proto_cmd)c);
        assert_int_equal(proto_cmd_parse(name), c);
        char lower[32];
        size_t i = 0;
        for (; name[i]; i++)
            lower[i] = (char)tolower((unsigned char)name[i]);
        lower[i] = '\0';
        assert_int_equal(proto_cmd_parse(lower), c); /* the original upper-cases */
    }
    assert_int_equal(proto_cmd_parse("PING"), PROTO_CMD_UNKNOWN);
    assert_int_equal(proto_cmd_parse(NULL), PROTO_CMD_UNKNOWN);
    json_t *u = proto_unknown_command_reply("PING");
    assert_string_equal(json_string_value(json_object_get(u, PF_ERROR)), "Unknown command: PING");
    const json_t *avail = json_object_get(u, PF_AVAILABLE_COMMANDS);
    assert_int_equal(json_array_size(avail), PROTO_N_COMMANDS);
    assert_string_equal(json_string_value(json_array_get(avail, 0)), "GET_PUBLIC_KEY");
    assert_string_equal(json_string_value(json_array_get(avail, 5)), "CHAT_STREAM");
    assert_string_equal(json_string_value(json_array_get(avail, 6)), "GET_ATTESTATION");
    assert_string_equal(json_string_value(json_object_get(u, PF_SOURCE)), PROTO_SOURCE);
    json_decref(u);
}

/* A reply that echoes the request cut inside a UTF-8 character still exists: jansson
 * refuses such a string, and the enclave used to send nothing (its parent then took
 * the next request's answer for this one). Found by fuzz_enclave_request. */
static void test_replies_to_cut_characters(void **state)
{
    (void)state;
    json_error_t jerr;
    static const char bad_escape[] = "{\"a\":\"\\u00\xc3\xa9\"}"; /* jansson quotes "\u00" + 0xc3 */
    assert_null(json_loadb(bad_escape, sizeof bad_escape - 1, 0, &jerr));
    char msg[300];
    snprintf(msg, sizeof msg, "Invalid JSON: %s", jerr.text);
    json_t *r = proto_error_reply(PROTO_CMD_UNKNOWN, ENCLAVE_OK, msg);
    assert_non_null(r);
    const char *e = json_string_value(json_object_get(r, PF_ERROR));
    assert_true(strncmp(e, "Invalid JSON: ", 14) == 0);
    for (const char *p = e; *p; p++)
        assert_true((unsigned char)*p < 0x80);
    json_decref(r);

    r = proto_error_reply(PROTO_CMD_CHAT, ENCLAVE_ERR_BAD_REQUEST, "cut \xc3");
    assert_string_equal(json_string_value(json_object_get(r, PF_ERROR)), "cut ?");
    assert_string_equal(json_string_value(json_object_get(r, PF_ERROR_CODE)), "bad_request");
    json_decref(r);
    r = proto_error_reply(PROTO_CMD_CHAT, ENCLAVE_OK, "whole \xc3\xa9"); /* UTF-8 stays */
    assert_string_equal(json_string_value(json_object_get(r, PF_ERROR)), "whole \xc3\xa9");
    json_decref(r);

    /* the enclave echoes an unknown name cut to 63 bytes: here after 31 of 32 "\xc3\xa9" */
    char name[64];
    for (int i = 0; i < 31; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[62] = '\xc3';
    name[63] = '\0';
    r = proto_unknown_command_reply(name);
    assert_non_null(r);
    char want[100] = "Unknown command: ";
    memset(want + 17, '?', 63);
    want[80] = '\0';
    assert_string_equal(json_string_value(json_object_get(r, PF_ERROR)), want);
    assert_int_equal(json_array_size(json_object_get(r, PF_AVAILABLE_COMMANDS)), PROTO_N_COMMANDS);
    json_decref(r);
}

static void test_error_codes(void **state)
{
    (void)state;
    for (int e = ENCLAVE_ERR_BAD_REQUEST; e < ENCLAVE_ERR_UNKNOWN; e++) {
        assert_int_equal(enclave_err_parse(enclave_err_name((enclave_err)e)), e);
        const char *msg = enclave_err_client_message((enclave_err)e, "detail from the enclave");
        assert_non_null(msg);
        assert_true(strlen(msg) > 0);
        /* only BAD_REQUEST passes the enclave's own text on */
        assert_true((strcmp(msg, "detail from the enclave") == 0) == (e == ENCLAVE_ERR_BAD_REQUEST));
    }
    assert_int_equal(enclave_err_parse("no_such_code"), ENCLAVE_ERR_UNKNOWN);
    assert_int_equal(enclave_err_parse(NULL), ENCLAVE_ERR_UNKNOWN);
    assert_string_equal(enclave_err_client_message(ENCLAVE_ERR_UPSTREAM_THROTTLED, "raw"),
                        "The model is busy, please retry shortly");
    assert_string_equal(enclave_err_client_message(ENCLAVE_ERR_BAD_REQUEST, ""), "Invalid request");
    assert_string_equal(enclave_err_name(ENCLAVE_ERR_DECRYPT_FAILED), "decrypt_failed");
}

static json_t *stream_req(void)
{
    json_t *h = json_pack("[o, o]", json_deep_copy(EP_JSON), json_deep_copy(EP_JSON));
    json_object_set_new(json_array_get(h, 1), PF_ROLE, json_string("assistant"));
    json_t *r = proto_chat_stream_request(EP_JSON, h, KEY_HEX, KEY2_HEX, "model-x", "sess-1");
    json_decref(h);
    return r;
}

static void test_chat_stream_request_roundtrip(void **state)
{
    (void)state;
    json_t *req = stream_req();
    assert_string_equal(json_string_value(json_object_get(req, PF_COMMAND)), "CHAT_STREAM");
    proto_chat_request r;
    proto_error err;
    assert_int_equal(proto_parse_chat_request(req, true, &r, &err), 0);
    assert_true(r.stream);
    assert_int_equal(r.format, 1);
    assert_null(json_object_get(req, PF_STREAM_FORMAT)); /* format 1 is the default and is not sent */
    assert_string_equal(r.model, "model-x");
    assert_string_equal(r.session_id, "sess-1");
    char hex[65];
    hex_encode(r.reply_pub, 32, hex);
    assert_string_equal(hex, KEY_HEX);
    hex_encode(r.storage_pub, 32, hex);
    assert_string_equal(hex, KEY2_HEX);
    assert_int_equal(r.n_history, 2);
    assert_int_equal(r.history[0].role, -1); /* by position */
    assert_int_equal(r.history[1].role, 1);
    assert_ptr_equal(r.message, json_object_get(req, PF_ENCRYPTED_MESSAGE));
    proto_chat_request_free(&r);
    /* format 1 asked for by name: the same */
    json_object_set_new(req, PF_STREAM_FORMAT, json_integer(1));
    assert_int_equal(proto_parse_chat_request(req, true, &r, &err), 0);
    assert_int_equal(r.format, 1);
    proto_chat_request_free(&r);
    json_decref(req);
}

/* Each broken field of a request gets its own message. */
static void test_chat_request_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *field;
        const char *json; /* NULL: remove the field */
        const char *msg;
    } CASES[] = {
        {PF_ENCRYPTED_MESSAGE, NULL, "Missing field: 'encrypted_message'"},
        {PF_MODEL_ID, NULL, "Missing field: 'model_id'"},
        {PF_MODEL_ID, "\"\"", "Invalid field: 'model_id'"},
        {PF_MODEL_ID, "7", "Invalid field: 'model_id'"},
        {PF_CLIENT_PUBLIC_KEY, NULL, "Missing field: 'client_public_key'"},
        {PF_CLIENT_PUBLIC_KEY, "\"abc\"", "Invalid field: 'client_public_key' must be 64 hex characters"},
        {PF_CLIENT_PUBLIC_KEY, "\"0000000000000000000000000000000000000000000000000000000000000000\"",
         "Invalid field: 'client_public_key' is not a valid X25519 public key (low order)"},
        {PF_STORAGE_PUBLIC_KEY, "\"0100000000000000000000000000000000000000000000000000000000000000\"",
         "Invalid field: 'storage_public_key' is not a valid X25519 public key (low order)"},
        {PF_STREAM_FORMAT, "4", "Unsupported stream_format (1 or 3)"},
        {PF_STREAM_FORMAT, "2", "Unsupported stream_format (1 or 3)"}, /* format 3 replaced it */
        {PF_STREAM_FORMAT, "\"3\"", "Unsupported stream_format (1 or 3)"},
        {PF_ENCRYPTED_HISTORY, "{}", "Invalid field: 'encrypted_history'"},
        {PF_ENCRYPTED_HISTORY, "[{\"role\": \"system\"}]", "Invalid role in history entry 0"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        json_t *req = stream_req();
        if (CASES[i].json)
            json_object_set_new(req, CASES[i].field, json_loads(CASES[i].json, JSON_DECODE_ANY, NULL));
        else
            json_object_del(req, CASES[i].field);
        proto_chat_request r;
        proto_error err;
        assert_int_equal(proto_parse_chat_request(req, true, &r, &err), -1);
        assert_int_equal(err.code, ENCLAVE_ERR_BAD_REQUEST);
        assert_string_equal(err.message, CASES[i].msg);
        json_decref(req);
    }
    /* a history over the bound */
    json_t *req = stream_req();
    json_t *h = json_array();
    for (int i = 0; i <= PROTO_MAX_HISTORY; i++)
        json_array_append(h, EP_JSON);
    json_object_set_new(req, PF_ENCRYPTED_HISTORY, h);
    proto_chat_request r;
    proto_error err;
    assert_int_equal(proto_parse_chat_request(req, true, &r, &err), -1);
    assert_string_equal(err.message, "Invalid field: 'encrypted_history'");
    json_decref(req);
}

static void test_chat_request_plain(void **state)
{
    (void)state;
    json_t *req = json_pack("{s:s, s:O, s:s, s:s, s:s, s:[{s:s, s:s}, {s:s}]}", PF_COMMAND, "CHAT",
                            PF_ENCRYPTED_MESSAGE, EP_JSON, PF_USER_PUBLIC_KEY, KEY_HEX, PF_MODEL_ID, "m",
                            PF_SYSTEM_PROMPT, "be brief", PF_HISTORY, PF_ROLE, "user", PF_CONTENT, "hi", PF_ROLE,
                            "assistant");
    proto_chat_request r;
    proto_error err;
    assert_int_equal(proto_parse_chat_request(req, false, &r, &err), -1);
    assert_string_equal(err.message, "Missing field: 'content' in history entry 1");
    json_object_set_new(json_array_get(json_object_get(req, PF_HISTORY), 1), PF_CONTENT, json_string("hello"));
    assert_int_equal(proto_parse_chat_request(req, false, &r, &err), 0);
    assert_false(r.stream);
    assert_string_equal(r.system_prompt, "be brief");
    assert_int_equal(r.n_history, 2);
    assert_int_equal(r.history[1].text_len, 5);
    assert_memory_equal(r.history[1].text, "hello", 5);
    proto_chat_request_free(&r);
    json_object_set_new(req, PF_MODEL_ID, json_string(""));
    assert_int_equal(proto_parse_chat_request(req, false, &r, &err), -1);
    assert_string_equal(err.message, "model_id is required"); /* the original's wording for CHAT */
    json_decref(req);
}

static void test_stream_format_rule(void **state)
{
    (void)state;
    json_t *v;
    assert_int_equal(proto_stream_format(NULL), 1);
    assert_int_equal(proto_stream_format(v = json_null()), 1);
    json_decref(v);
    assert_int_equal(proto_stream_format(v = json_integer(3)), 3);
    json_decref(v);
    assert_int_equal(proto_stream_format(v = json_integer(2)), -1); /* removed: format 3 replaced it */
    json_decref(v);
    assert_int_equal(proto_stream_format(v = json_integer(0)), -1);
    json_decref(v);
    assert_int_equal(proto_stream_format(v = json_real(1.0)), -1);
    json_decref(v);
}

static json_t *parse_line(const vbuf *b)
{
    json_t *j = json_loadb((const char *)b->data, b->len, 0, NULL);
    assert_non_null(j);
    return j;
}

static void test_events_roundtrip(void **state)
{
    (void)state;
    proto_event ev;
    /* format 1 chunk and thinking */
    ep e;
    assert_int_equal(ep_from_json(EP_JSON, &e, NULL), EP_OK);
    for (int thinking = 0; thinking < 2; thinking++) {
        vbuf b = VBUF_INIT;
        assert_int_equal(proto_write_chunk_v1(&b, thinking, &e), 0);
        json_t *j = parse_line(&b);
        assert_int_equal(proto_parse_event(j, &ev), thinking ? PROTO_EV_THINKING : PROTO_EV_CHUNK);
        assert_true(json_equal(ev.ep, EP_JSON));
        json_t *sse = proto_sse_relay(&ev);
        proto_sse_event se;
        assert_int_equal(proto_parse_sse(sse, &se), thinking ? PROTO_SSE_EV_THINKING : PROTO_SSE_EV_CHUNK);
        assert_true(json_equal(se.ep, EP_JSON));
        json_decref(sse);
        json_decref(j);
        vbuf_free(&b);
    }
    ep_clear(&e);
    /* format 3: key, chunk, thinking */
    uint8_t epk[32], salt[32], ct[5] = {1, 2, 3, 4, 5}, tag[16];
    memset(epk, 0xab, sizeof epk);
    memset(salt, 0xcd, sizeof salt);
    memset(tag, 0xef, sizeof tag);
    vbuf b = VBUF_INIT;
    assert_int_equal(proto_write_stream_key(&b, epk, salt), 0);
    json_t *j = parse_line(&b);
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_STREAM_KEY);
    assert_int_equal(ev.format, 3);
    assert_memory_equal(ev.epk, epk, 32);
    assert_memory_equal(ev.salt, salt, 32);
    json_t *sse = proto_sse_relay(&ev);
    proto_sse_event se;
    assert_int_equal(proto_parse_sse(sse, &se), PROTO_SSE_EV_STREAM_KEY);
    assert_int_equal(se.format, 3);
    assert_memory_equal(se.epk, epk, 32);
    assert_memory_equal(se.salt, salt, 32);
    json_decref(sse);
    /* another format's key (format 2 was removed) is no event of this protocol */
    json_object_set_new(j, PF_STREAM_FORMAT, json_integer(2));
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_INVALID);
    json_decref(j);
    for (int thinking = 0; thinking < 2; thinking++) {
        vbuf_reset(&b);
        assert_int_equal(proto_write_element(&b, thinking, 7, ct, sizeof ct, tag), 0);
        j = parse_line(&b);
        assert_int_equal(proto_parse_event(j, &ev), thinking ? PROTO_EV_THINKING_V3 : PROTO_EV_CHUNK_V3);
        assert_int_equal(json_integer_value(json_object_get(ev.elem, "seq")), 7);
        assert_string_equal(json_string_value(json_object_get(ev.elem, "ciphertext")), "0102030405");
        sse = proto_sse_relay(&ev);
        assert_int_equal(proto_parse_sse(sse, &se), thinking ? PROTO_SSE_EV_THINKING_V3 : PROTO_SSE_EV_CHUNK_V3);
        assert_int_equal(json_integer_value(json_object_get(se.elem, "seq")), 7);
        json_decref(sse);
        json_decref(j);
    }
    vbuf_free(&b);
}

static void test_final_and_errors(void **state)
{
    (void)state;
    proto_final f = {.stored_user = EP_JSON, .stored_assistant = EP_JSON, .model_used = "m", .input_tokens = 3,
                     .output_tokens = 4, .has_end = true, .end_seq = 9};
    memset(f.end_tag, 0x11, sizeof f.end_tag);
    json_t *j = proto_final_event(&f);
    proto_event ev;
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_FINAL);
    assert_true(json_equal(ev.final.stored_user, EP_JSON));
    assert_string_equal(ev.final.model_used, "m");
    assert_int_equal(ev.final.input_tokens, 3);
    assert_int_equal(ev.final.output_tokens, 4);
    assert_int_equal(json_integer_value(json_object_get(ev.stream_end, "seq")), 9);
    /* the final event is recognised first, whatever else it carries (F: it used to
     * be relayed as a chunk and the stream hung) */
    json_object_set(j, PF_ENCRYPTED_CONTENT, EP_JSON);
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_FINAL);
    json_t *stored = proto_sse_stored("m", 3, 4, ev.stream_end, "u1", "a1");
    proto_sse_event se;
    assert_int_equal(proto_parse_sse(stored, &se), PROTO_SSE_EV_STORED);
    assert_int_equal(se.output_tokens, 4);
    assert_true(json_equal(se.stream_end, ev.stream_end));
    json_decref(stored);
    /* a final event without its stored messages is not the protocol */
    json_object_del(j, "stored_user_message");
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_INVALID);
    json_decref(j);
    /* errors */
    j = proto_stream_error(ENCLAVE_ERR_UPSTREAM_THROTTLED, "Bedrock is throttling");
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_ERROR);
    assert_int_equal(ev.err, ENCLAVE_ERR_UPSTREAM_THROTTLED);
    assert_string_equal(ev.err_msg, "Bedrock is throttling");
    json_decref(j);
    j = json_pack("{s:s, s:b}", PF_ERROR, "", "is_final", 1); /* the original's empty str(InvalidTag()) */
    assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_ERROR);
    assert_int_equal(ev.err, ENCLAVE_ERR_UNKNOWN);
    json_decref(j);
    j = proto_chat_reply(&f);
    assert_string_equal(json_string_value(json_object_get(j, PF_STATUS)), "success");
    assert_true(json_equal(json_object_get(j, "encrypted_response"), EP_JSON));
    json_decref(j);
    j = proto_error_reply(PROTO_CMD_CHAT, ENCLAVE_ERR_NO_CREDENTIALS, "No AWS credentials");
    assert_string_equal(json_string_value(json_object_get(j, PF_COMMAND)), "CHAT");
    assert_string_equal(json_string_value(json_object_get(j, PF_ERROR_CODE)), "no_credentials");
    json_decref(j);
    /* anything else is not an event */
    const char *bad[] = {"{}", "[]", "{\"encrypted_content\": 5}", "{\"stream_key\": {\"hkdf_salt\": \"00\"}}",
                         "{\"unknown\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_int_equal(proto_parse_event(j, &ev), PROTO_EV_INVALID);
        json_decref(j);
    }
}

static void test_sse_client_side(void **state)
{
    (void)state;
    proto_sse_event se;
    json_t *j = proto_sse_session("abc");
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_EV_SESSION);
    assert_string_equal(se.session_id, "abc");
    json_decref(j);
    j = proto_sse_done();
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_EV_DONE);
    json_decref(j);
    j = proto_sse_error("The model is busy");
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_EV_ERROR);
    assert_string_equal(se.message, "The model is busy");
    json_decref(j);
    j = json_pack("{s:s}", "type", "a_future_event");
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_EV_OTHER); /* ignored, not an error */
    json_decref(j);
    j = json_pack("{s:s}", "type", "encrypted_chunk"); /* without its envelope */
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_INVALID);
    json_decref(j);
    j = json_pack("{s:i}", "type", 3);
    assert_int_equal(proto_parse_sse(j, &se), PROTO_SSE_INVALID);
    json_decref(j);
}

static void test_set_credentials_writer(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    assert_int_equal(proto_write_set_credentials(&b, "AKID", "se\"cr\\et", "tok\n", "2026-01-01T00:00:00Z"), 0);
    assert_int_equal(b.data[b.len - 1], '\n');
    json_t *j = json_loadb((const char *)b.data, b.len - 1, 0, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, PF_COMMAND)), "SET_CREDENTIALS");
    const json_t *c = json_object_get(j, PF_CREDENTIALS);
    assert_string_equal(json_string_value(json_object_get(c, PF_SECRET_ACCESS_KEY)), "se\"cr\\et");
    assert_string_equal(json_string_value(json_object_get(c, PF_SESSION_TOKEN)), "tok\n");
    assert_string_equal(json_string_value(json_object_get(c, PF_EXPIRATION)), "2026-01-01T00:00:00Z");
    json_decref(j);
    vbuf_reset(&b);
    assert_int_equal(proto_write_set_credentials(&b, "A", "S", "T", NULL), 0);
    j = json_loadb((const char *)b.data, b.len - 1, 0, NULL);
    assert_null(json_object_get(json_object_get(j, PF_CREDENTIALS), PF_EXPIRATION));
    json_decref(j);
    vbuf_reset(&b);
    assert_int_equal(proto_write_set_credentials(&b, "A", "\xff\xfe", "T", NULL), -1); /* not UTF-8 */
    vbuf_free_secure(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_replies_to_cut_characters),
        cmocka_unit_test(test_error_codes),
        cmocka_unit_test(test_chat_stream_request_roundtrip),
        cmocka_unit_test(test_chat_request_refusals),
        cmocka_unit_test(test_chat_request_plain),
        cmocka_unit_test(test_stream_format_rule),
        cmocka_unit_test(test_events_roundtrip),
        cmocka_unit_test(test_final_and_errors),
        cmocka_unit_test(test_sse_client_side),
        cmocka_unit_test(test_set_credentials_writer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

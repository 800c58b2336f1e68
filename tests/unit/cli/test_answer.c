/* src/cli/answer.c: a format 3 answer as the CLI checks it, fed the SSE events veild
 * makes (the enclave's encoders, parsed and relayed as veild does). An honest answer
 * opens whole and its end names the stored messages; each attack fails with its own
 * reason and no text after the point of failure reaches the caller: a format-1 chunk
 * (a downgrade), a stream key of format 2 (which veil no longer speaks; a hostile
 * server can still send one), a format-2 element in place of one, an element before the
 * key, a second key, a stream key the server made itself, an altered, dropped,
 * repeated or relabelled element, an end that is missing, cut or forged, a stored
 * event without the message ids, a missing done, another session, and stored
 * messages other than the ones the end element names. The server's error event is
 * its own state, never an answer. The CLI is a program: its modules are compiled in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cli/answer.c"
#include "cli/cli_util.c"
#include "cli/term.c"

#define SID "0b9c6c3e-1d1f-4c59-9c1e-5c0a7c0f1e2d"

typedef struct wire {
    x25519_key *enclave, *client;
    uint8_t enclave_pub[32], client_pub[32], request_hash[SV3_HASH_LEN];
    sv3 tx;
    json_t *events; /* the SSE events, in order */
    ep user_msg, assistant_msg;
    vbuf text; /* what the answer handed over */
} wire;

static json_t *relay(vbuf *line)
{
    json_t *j = json_loadb((const char *)line->data, line->len, 0, NULL);
    proto_event ev;
    assert_int_not_equal(proto_parse_event(j, &ev), PROTO_EV_INVALID);
    json_t *sse = proto_sse_relay(&ev);
    assert_non_null(sse);
    json_decref(j);
    vbuf_free(line);
    return sse;
}

static void add_key(wire *w, const x25519_key *enclave)
{
    uint8_t epk[32], salt[32];
    vbuf line = VBUF_INIT;
    assert_int_equal(sv3_init_sender(&w->tx, enclave, w->client_pub, w->request_hash, epk, salt), 0);
    assert_int_equal(proto_write_stream_key(&line, epk, salt), 0);
    json_array_append_new(w->events, relay(&line));
}

/* An element sealed at the sender's next index, as kind. */
static void add_element(wire *w, sv3_kind kind, const char *text)
{
    uint8_t ct[64], tag[16];
    vbuf line = VBUF_INIT;
    uint64_t seq = w->tx.seq;
    assert_int_equal(sv3_seal(&w->tx, kind, (const uint8_t *)text, strlen(text), ct, tag), 0);
    assert_int_equal(proto_write_element(&line, kind == SV3_THINKING, seq, ct, strlen(text), tag), 0);
    json_array_append_new(w->events, relay(&line));
}

static void add_text(wire *w, const char *text)
{
    add_element(w, SV3_TEXT, text);
}

/* A hostile server's own SSE event, written by hand (veil's encoders no longer make
 * format 2's): its fields are a real format-3 key's or element's. */
static void add_format2_key(wire *w)
{
    uint8_t epk[32], salt[32];
    char e[65], sl[65];
    assert_int_equal(sv3_init_sender(&w->tx, w->enclave, w->client_pub, w->request_hash, epk, salt), 0);
    hex_encode(epk, 32, e);
    hex_encode(salt, 32, sl);
    json_array_append_new(w->events, json_pack("{s:s, s:i, s:s, s:s}", "type", "stream_key", "stream_format", 2,
                                               "ephemeral_public_key", e, "hkdf_salt", sl));
}

static void add_format2_element(wire *w, const char *text)
{
    uint8_t ct[64], tag[16];
    char c[129], t[33];
    uint64_t seq = w->tx.seq;
    assert_int_equal(sv3_seal(&w->tx, SV3_TEXT, (const uint8_t *)text, strlen(text), ct, tag), 0);
    hex_encode(ct, strlen(text), c);
    hex_encode(tag, 16, t);
    json_array_append_new(w->events, json_pack("{s:s, s:I, s:s, s:s}", "type", "encrypted_chunk_v2", "seq",
                                               (json_int_t)seq, "ciphertext", c, "auth_tag", t));
}

/* The final event: the stored pair, the end element over their hashes, the ids. */
static json_t *stored_event(wire *w, bool with_end, const char *uid, const char *aid)
{
    proto_final f = {0};
    uint8_t h[SV3_END_LEN];
    json_t *su = ep_to_json(&w->user_msg), *sa = ep_to_json(&w->assistant_msg);
    sv3_ep_hash(&w->user_msg, h);
    sv3_ep_hash(&w->assistant_msg, h + SV3_HASH_LEN);
    f.stored_user = su;
    f.stored_assistant = sa;
    f.model_used = "model-x";
    f.input_tokens = 3;
    f.output_tokens = 5;
    f.has_end = with_end;
    f.end_seq = w->tx.seq;
    f.end_ct_len = SV3_END_LEN;
    assert_int_equal(sv3_seal(&w->tx, SV3_END, h, sizeof h, f.end_ct, f.end_tag), 0);
    json_t *fin = proto_final_event(&f);
    proto_event ev;
    assert_int_equal(proto_parse_event(fin, &ev), PROTO_EV_FINAL);
    json_t *sse = proto_sse_stored("model-x", 3, 5, with_end ? ev.stream_end : NULL, uid, aid);
    json_decref(fin);
    json_decref(su);
    json_decref(sa);
    return sse;
}

static void add_stored(wire *w)
{
    json_array_append_new(w->events, stored_event(w, true, "u-1", "a-1"));
}

static void add_done(wire *w)
{
    json_array_append_new(w->events, proto_sse_done());
}

static void setup(wire *w)
{
    memset(w, 0, sizeof *w);
    assert_non_null(w->enclave = x25519_key_generate(w->enclave_pub));
    assert_non_null(w->client = x25519_key_generate(w->client_pub));
    assert_int_equal(random_bytes(w->request_hash, sizeof w->request_hash), 0);
    assert_int_equal(ep_seal(w->client_pub, (const uint8_t *)"q", 1, EP_CTX_USER_STORAGE, &w->user_msg), EP_OK);
    assert_int_equal(ep_seal(w->client_pub, (const uint8_t *)"a", 1, EP_CTX_ASSISTANT_STORAGE, &w->assistant_msg),
                     EP_OK);
    w->events = json_array();
    json_array_append_new(w->events, proto_sse_session(SID));
}

static void teardown(wire *w)
{
    x25519_key_free(w->enclave);
    x25519_key_free(w->client);
    sv3_wipe(&w->tx);
    json_decref(w->events);
    ep_clear(&w->user_msg);
    ep_clear(&w->assistant_msg);
    vbuf_free(&w->text);
}

static void collect(void *ud, const uint8_t *text, size_t len)
{
    vbuf_append(&((wire *)ud)->text, text, len);
}

/* Feeds every event (as the CLI would until told to stop); the final verdict. */
static int play(wire *w, answer *a)
{
    answer_init(a, w->client, w->enclave_pub, w->request_hash, SID);
    size_t i;
    json_t *ev;
    json_array_foreach(w->events, i, ev)
        if (answer_feed(a, ev, collect, w))
            break;
    int rc = answer_finish(a);
    answer_wipe(a);
    return rc;
}

static void expect_failure(wire *w, const char *reason, const char *text_before)
{
    answer a;
    assert_int_equal(play(w, &a), -1);
    assert_int_equal(a.state, ANSWER_FAILED);
    assert_string_equal(a.error, reason);
    vbuf_append(&w->text, "", 1);
    assert_string_equal((const char *)w->text.data, text_before);
}

static void honest(wire *w)
{
    add_key(w, w->enclave);
    add_text(w, "Echo: hi");
    add_element(w, SV3_THINKING, "hmm");
    add_text(w, " chunk 1");
}

static void test_honest_answer(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    honest(&w);
    add_stored(&w);
    add_done(&w);
    answer a;
    assert_int_equal(play(&w, &a), 0);
    assert_int_equal(a.state, ANSWER_DONE);
    assert_int_equal(a.text_elements, 2);
    assert_memory_equal(w.text.data, "Echo: hi chunk 1", w.text.len);
    assert_string_equal(a.user_id, "u-1");
    assert_string_equal(a.assistant_id, "a-1");
    assert_string_equal(a.model, "model-x");
    assert_int_equal(a.out_tokens, 5);
    /* the stored messages the end names pass; any other pair, or the two swapped, fails */
    assert_int_equal(answer_check_stored(&a, &w.user_msg, &w.assistant_msg), 0);
    assert_int_equal(answer_check_stored(&a, &w.assistant_msg, &w.user_msg), -1);
    assert_string_equal(a.error, "the stored messages are not the ones the enclave stored for this answer");
    ep other;
    assert_int_equal(ep_seal(w.client_pub, (const uint8_t *)"a", 1, EP_CTX_ASSISTANT_STORAGE, &other), EP_OK);
    a.state = ANSWER_DONE;
    assert_int_equal(answer_check_stored(&a, &w.user_msg, &other), -1);
    ep_clear(&other);
    teardown(&w);
}

/* The downgrade: the server answers in format 1, sealed to the client's transport key. */
static void test_format1_chunk_refused(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    ep e;
    assert_int_equal(ep_seal(w.client_pub, (const uint8_t *)"forged", 6, EP_CTX_ENCLAVE_TO_CLIENT, &e), EP_OK);
    json_t *ej = ep_to_json(&e);
    json_array_append_new(w.events, json_pack("{s:s, s:o}", "type", PROTO_SSE_CHUNK, PF_ENCRYPTED_CONTENT, ej));
    ep_clear(&e);
    add_stored(&w);
    add_done(&w);
    expect_failure(&w, "the server sent a stream format 1 chunk, not the format 3 this client asked for", "");
    teardown(&w);
}

/* A format-1 chunk slipped in between genuine elements is refused too. */
static void test_format1_chunk_inserted(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    add_key(&w, w.enclave);
    add_text(&w, "Echo: hi");
    ep e;
    assert_int_equal(ep_seal(w.client_pub, (const uint8_t *)" forged", 7, EP_CTX_ENCLAVE_TO_CLIENT, &e), EP_OK);
    json_array_append_new(w.events, json_pack("{s:s, s:o}", "type", PROTO_SSE_CHUNK, PF_ENCRYPTED_CONTENT, ep_to_json(&e)));
    ep_clear(&e);
    add_text(&w, " chunk 1");
    expect_failure(&w, "the server sent a stream format 1 chunk, not the format 3 this client asked for", "Echo: hi");
    teardown(&w);
}

static void test_format2_refused(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    add_format2_key(&w);
    expect_failure(&w, "the server answered in stream format 2, not the format 3 this client asked for", "");
    teardown(&w);
    /* an element relabelled as format 2's: an event type this client does not know,
     * ignored, so the answer has a hole and never completes */
    setup(&w);
    add_key(&w, w.enclave);
    add_text(&w, "Echo: hi");
    add_format2_element(&w, " v2");
    add_stored(&w);
    add_done(&w);
    expect_failure(&w, "the end element does not verify at index 1 (an element was dropped, or the end forged)",
                   "Echo: hi");
    teardown(&w);
}

static void test_key_missing_or_twice(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    add_key(&w, w.enclave);
    json_t *key = json_incref(json_array_get(w.events, 1));
    json_array_remove(w.events, 1); /* the elements stay, the key goes */
    add_text(&w, "Echo: hi");
    expect_failure(&w, "an element arrived before the stream key", "");
    teardown(&w);
    setup(&w);
    json_array_append(w.events, key);
    json_array_append(w.events, key);
    expect_failure(&w, "a second stream key in one answer", "");
    json_decref(key);
    teardown(&w);
    setup(&w);
    add_done(&w);
    expect_failure(&w, "the stream ended before the answer's end element (it may be cut off)", "");
    teardown(&w);
    setup(&w);
    answer a;
    assert_int_equal(play(&w, &a), -1);
    assert_string_equal(a.error, "the stream ended without a stream key");
    teardown(&w);
}

/* A stream key the server made itself: without the enclave's private key it can
 * derive no K the client derives, so its first element fails. */
static void test_forged_stream_key(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    uint8_t pub[32];
    x25519_key *mine = x25519_key_generate(pub);
    add_key(&w, mine); /* the server's own key in the enclave's place */
    add_text(&w, "Echo: forged");
    add_stored(&w);
    add_done(&w);
    expect_failure(&w, "element 0 does not verify (forged, dropped, reordered or altered in transit)", "");
    x25519_key_free(mine);
    teardown(&w);
}

static void test_altered_element(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    honest(&w);
    json_t *el = json_array_get(w.events, 3); /* the thinking element */
    char ct[7];
    snprintf(ct, sizeof ct, "%s", json_string_value(json_object_get(el, "ciphertext")));
    ct[0] = ct[0] == '0' ? '1' : '0';
    json_object_set_new(el, "ciphertext", json_string(ct));
    add_stored(&w);
    add_done(&w);
    expect_failure(&w, "element 1 does not verify (forged, dropped, reordered or altered in transit)", "Echo: hi");
    teardown(&w);
}

static void test_dropped_repeated_relabelled(void **state)
{
    (void)state;
    wire w;
    /* the last element dropped: the end is at another index */
    setup(&w);
    honest(&w);
    add_stored(&w);
    add_done(&w);
    json_array_remove(w.events, 4);
    expect_failure(&w, "the end element does not verify at index 2 (an element was dropped, or the end forged)",
                   "Echo: hi");
    teardown(&w);
    /* a middle element dropped */
    setup(&w);
    honest(&w);
    json_array_remove(w.events, 3);
    expect_failure(&w, "element 1 does not verify (forged, dropped, reordered or altered in transit)", "Echo: hi");
    teardown(&w);
    /* an element repeated */
    setup(&w);
    honest(&w);
    json_array_insert(w.events, 3, json_array_get(w.events, 2));
    expect_failure(&w, "element 1 does not verify (forged, dropped, reordered or altered in transit)", "Echo: hi");
    teardown(&w);
    /* thinking relabelled as text: the kind is in the AAD */
    setup(&w);
    honest(&w);
    json_object_set_new(json_array_get(w.events, 3), "type", json_string(PROTO_SSE_CHUNK_V3));
    expect_failure(&w, "element 1 does not verify (forged, dropped, reordered or altered in transit)", "Echo: hi");
    teardown(&w);
}

static void test_end_missing_cut_or_incomplete(void **state)
{
    (void)state;
    wire w;
    /* the stored event dropped */
    setup(&w);
    honest(&w);
    add_done(&w);
    expect_failure(&w, "the stream ended before the answer's end element (it may be cut off)", "Echo: hi chunk 1");
    teardown(&w);
    /* the stream cut after the elements */
    setup(&w);
    honest(&w);
    expect_failure(&w, "the stream ended before the answer's end element (it may be cut off)", "Echo: hi chunk 1");
    teardown(&w);
    /* stored without its end element */
    setup(&w);
    honest(&w);
    json_array_append_new(w.events, stored_event(&w, false, "u-1", "a-1"));
    add_done(&w);
    expect_failure(&w, "the stored event carries no end element (the answer may be cut off)", "Echo: hi chunk 1");
    teardown(&w);
    /* stored without the message ids, or ids unfit for a path */
    setup(&w);
    honest(&w);
    json_array_append_new(w.events, stored_event(&w, true, NULL, "a-1"));
    add_done(&w);
    expect_failure(&w, "the stored event does not name the two stored messages", "Echo: hi chunk 1");
    teardown(&w);
    setup(&w);
    honest(&w);
    json_array_append_new(w.events, stored_event(&w, true, "u-1", "../../users/me"));
    add_done(&w);
    expect_failure(&w, "the stored event does not name the two stored messages", "Echo: hi chunk 1");
    teardown(&w);
    /* the done event dropped */
    setup(&w);
    honest(&w);
    add_stored(&w);
    expect_failure(&w, "the stream ended before its done event (it may be cut off)", "Echo: hi chunk 1");
    teardown(&w);
    /* an end element forged: other bytes under no key the client has */
    setup(&w);
    honest(&w);
    add_stored(&w);
    json_t *end = json_object_get(json_array_get(w.events, 5), "stream_end");
    json_object_set_new(end, "auth_tag", json_string("00000000000000000000000000000000"));
    add_done(&w);
    expect_failure(&w, "the end element does not verify at index 3 (an element was dropped, or the end forged)",
                   "Echo: hi chunk 1");
    teardown(&w);
}

static void test_other_session_and_server_error(void **state)
{
    (void)state;
    wire w;
    setup(&w);
    json_array_set_new(w.events, 0, proto_sse_session("another-session"));
    honest(&w);
    expect_failure(&w, "the server named another session than the request's", "");
    teardown(&w);
    setup(&w);
    add_key(&w, w.enclave);
    add_text(&w, "Echo: hi");
    json_array_append_new(w.events, proto_sse_error("The model service failed, please retry"));
    add_text(&w, " after the error");
    answer a;
    assert_int_equal(play(&w, &a), -1);
    assert_int_equal(a.state, ANSWER_SERVER_ERROR);
    assert_string_equal(a.error, "The model service failed, please retry");
    assert_memory_equal(w.text.data, "Echo: hi", w.text.len);
    teardown(&w);
    /* malformed JSON shapes */
    setup(&w);
    json_array_append_new(w.events, json_pack("{s:i}", "type", 7));
    expect_failure(&w, "a malformed event", "");
    teardown(&w);
}

int main(void)
{
    json_set_alloc_funcs(malloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_honest_answer),
        cmocka_unit_test(test_format1_chunk_refused),
        cmocka_unit_test(test_format1_chunk_inserted),
        cmocka_unit_test(test_format2_refused),
        cmocka_unit_test(test_key_missing_or_twice),
        cmocka_unit_test(test_forged_stream_key),
        cmocka_unit_test(test_altered_element),
        cmocka_unit_test(test_dropped_repeated_relabelled),
        cmocka_unit_test(test_end_missing_cut_or_incomplete),
        cmocka_unit_test(test_other_session_and_server_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

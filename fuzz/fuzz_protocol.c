/* libFuzzer target for the typed enclave protocol: proto_parse_chat_request (both
 * commands), proto_parse_event, proto_parse_sse, format 3's sealed request
 * (proto_parse_bound_request, proto_check_binding) and a command as the enclave
 * dispatches it (proto_cmd_parse, GET_ATTESTATION's nonce), on any JSON value.
 *
 * The first byte picks what the rest is fed to (byte % 6; the seeds in
 * fuzz/seeds/fuzz_protocol/ start with '0'..'5'). Checks: no crash or leak; a parsed
 * request has a model within its bound, 32-byte keys that are not low-order
 * points, a format of 1 or 3, a history within PROTO_MAX_HISTORY with roles -1/0/1
 * (and an EP object or a text per turn); a refused one says why with a code; an
 * event that parses as FINAL carries both stored messages; a relayed SSE event
 * parses back on the client side as the same kind; a parsed sealed request binds
 * an outer request made of its own fields and refuses one that differs in a key;
 * a command name parses back from its own name; a nonce is 1..PROTO_NONCE_MAX bytes.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "enclave/protocol.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_request(const json_t *j, bool stream)
{
    proto_chat_request r;
    proto_error err;
    if (proto_parse_chat_request(j, stream, &r, &err) < 0) {
        CHECK(err.code != ENCLAVE_OK && err.message[0]);
        return;
    }
    CHECK(r.stream == stream);
    CHECK(r.model[0] && strlen(r.model) <= PROTO_MODEL_MAX);
    CHECK(r.format == 1 || r.format == 3);
    CHECK(r.format == 3 ? r.request != NULL : r.message != NULL);
    CHECK(x25519_public_key_ok(r.reply_pub));
    CHECK(!stream || x25519_public_key_ok(r.storage_pub));
    CHECK(r.n_history <= PROTO_MAX_HISTORY);
    for (size_t i = 0; i < r.n_history; i++) {
        CHECK(r.history[i].role >= -1 && r.history[i].role <= 1);
        CHECK(stream ? r.history[i].ep != NULL : r.history[i].text != NULL);
    }
    proto_chat_request_free(&r);
}

static void check_event(const json_t *j)
{
    proto_event ev;
    proto_event_kind k = proto_parse_event(j, &ev);
    CHECK(k == ev.kind);
    if (k == PROTO_EV_FINAL)
        CHECK(json_is_object(ev.final.stored_user) && json_is_object(ev.final.stored_assistant));
    json_t *sse = proto_sse_relay(&ev);
    if (!sse)
        return;
    proto_sse_event se;
    proto_sse_kind sk = proto_parse_sse(sse, &se);
    static const proto_sse_kind SAME[] = {
        [PROTO_EV_STREAM_KEY] = PROTO_SSE_EV_STREAM_KEY, [PROTO_EV_CHUNK] = PROTO_SSE_EV_CHUNK,
        [PROTO_EV_THINKING] = PROTO_SSE_EV_THINKING,     [PROTO_EV_CHUNK_V3] = PROTO_SSE_EV_CHUNK_V3,
        [PROTO_EV_THINKING_V3] = PROTO_SSE_EV_THINKING_V3,
    };
    CHECK((size_t)k < sizeof SAME / sizeof SAME[0] && sk == SAME[k]);
    json_decref(sse);
}

static void check_bound(const json_t *j)
{
    proto_bound b;
    proto_error err;
    if (proto_parse_bound_request(j, &b, &err) < 0) {
        CHECK(err.code == ENCLAVE_ERR_BAD_REQUEST && err.message[0]);
        CHECK(b.history == NULL && b.n_history == 0);
        return;
    }
    CHECK(err.code == ENCLAVE_OK && b.message && b.session_id && b.session_id[0]);
    CHECK(b.model[0] && strlen(b.model) <= PROTO_MODEL_MAX);
    CHECK(x25519_public_key_ok(b.client_pub) && x25519_public_key_ok(b.storage_pub));
    CHECK(b.n_history <= PROTO_MAX_HISTORY);
    for (size_t i = 0; i < b.n_history; i++)
        CHECK((b.history[i].role == 0 || b.history[i].role == 1) && b.history[i].text);
    /* the outer request a client sends beside it binds; one changed key does not */
    proto_chat_request outer;
    memset(&outer, 0, sizeof outer);
    outer.stream = true;
    outer.format = 3;
    memcpy(outer.reply_pub, b.client_pub, X25519_KEY_LEN);
    memcpy(outer.storage_pub, b.storage_pub, X25519_KEY_LEN);
    memcpy(outer.model, b.model, sizeof outer.model);
    outer.session_id = b.session_id;
    CHECK(proto_check_binding(&outer, &b, &err) == 0);
    outer.storage_pub[0] ^= 1;
    CHECK(proto_check_binding(&outer, &b, &err) < 0 && err.code == ENCLAVE_ERR_BINDING_MISMATCH);
    CHECK(strstr(err.message, PF_STORAGE_PUBLIC_KEY) != NULL);
    proto_bound_free(&b);
}

/* A request as veil-enclave's dispatcher meets it: the command, then its parser. */
static void check_command(const json_t *j)
{
    const char *name = json_string_value(json_object_get(j, PF_COMMAND));
    proto_cmd cmd = proto_cmd_parse(name);
    CHECK(cmd == PROTO_CMD_UNKNOWN || (name && strcasecmp(name, proto_cmd_name(cmd)) == 0));
    CHECK(proto_cmd_parse(proto_cmd_name(cmd)) == cmd);
    switch (cmd) {
    case PROTO_CMD_GET_ATTESTATION: {
        static uint8_t nonce[PROTO_NONCE_MAX];
        proto_error err;
        long n = proto_parse_attestation_request(j, nonce, &err);
        CHECK(n < 0 ? err.code == ENCLAVE_ERR_BAD_REQUEST && err.message[0]
                    : err.code == ENCLAVE_OK && n >= 1 && n <= PROTO_NONCE_MAX);
        break;
    }
    case PROTO_CMD_CHAT_STREAM: check_request(j, true); break;
    case PROTO_CMD_CHAT: check_request(j, false); break;
    case PROTO_CMD_UNKNOWN: {
        json_t *r = proto_unknown_command_reply(name ? name : "");
        CHECK(r && json_array_size(json_object_get(r, PF_AVAILABLE_COMMANDS)) == PROTO_N_COMMANDS);
        json_decref(r);
        break;
    }
    default: break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    switch (data[0] % 6) {
    case 0: check_request(j, true); break;
    case 1: check_request(j, false); break;
    case 2: check_event(j); break;
    case 3: {
        proto_sse_event se;
        proto_sse_kind k = proto_parse_sse(j, &se);
        CHECK(k == se.kind);
        break;
    }
    case 4: check_bound(j); break;
    default: check_command(j); break;
    }
    json_decref(j);
    return 0;
}

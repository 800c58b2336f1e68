/* libFuzzer target for the typed enclave protocol: proto_parse_chat_request (both
 * commands), proto_parse_event and proto_parse_sse on any JSON value.
 *
 * The first byte picks what the rest is fed to. Checks: no crash or leak; a parsed
 * request has a model within its bound, 32-byte keys that are not low-order
 * points, a format of 1 or 2, a history within PROTO_MAX_HISTORY with roles -1/0/1
 * (and an EP object or a text per turn); a refused one says why with a code; an
 * event that parses as FINAL carries both stored messages; a relayed SSE event
 * parses back on the client side as the same kind.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_DECODE_ANY, NULL);
    if (!j)
        return 0;
    switch (data[0] % 4) {
    case 0: check_request(j, true); break;
    case 1: check_request(j, false); break;
    case 2: check_event(j); break;
    case 3: {
        proto_sse_event se;
        proto_sse_kind k = proto_parse_sse(j, &se);
        CHECK(k == se.kind);
        break;
    }
    }
    json_decref(j);
    return 0;
}

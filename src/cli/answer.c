/* answer — a format 3 answer, checked event by event (see answer.h). */
#include "cli/answer.h"

#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "enclave/protocol.h"

static int refuse(answer *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int refuse(answer *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof a->error, fmt, ap);
    va_end(ap);
    a->state = ANSWER_FAILED;
    sv3_wipe(&a->sv);
    return 1;
}

void answer_init(answer *a, const x25519_key *transport, const uint8_t enclave_pub[X25519_KEY_LEN],
                 const uint8_t request_hash[SV3_HASH_LEN], const char *session_id)
{
    memset(a, 0, sizeof *a);
    a->transport = transport;
    memcpy(a->enclave_pub, enclave_pub, X25519_KEY_LEN);
    memcpy(a->request_hash, request_hash, SV3_HASH_LEN);
    snprintf(a->session_id, sizeof a->session_id, "%s", session_id);
}

static int on_stream_key(answer *a, const proto_sse_event *ev)
{
    if (a->state != ANSWER_WAIT_KEY)
        return refuse(a, "a second stream key in one answer");
    if (ev->format != 3)
        return refuse(a, "the server answered in stream format %d, not the format 3 this client asked for", ev->format);
    /* K mixes the attested key's agreement and this request's hash: only that
     * enclave, answering this request, can make elements that open */
    if (sv3_init_receiver(&a->sv, a->transport, a->enclave_pub, ev->epk, ev->salt, a->request_hash) < 0)
        return refuse(a, "the stream key is unusable");
    a->state = ANSWER_STREAMING;
    return 0;
}

static int on_element(answer *a, const proto_sse_event *ev, answer_text_fn on_text, void *ud)
{
    if (a->state == ANSWER_WAIT_KEY)
        return refuse(a, "an element arrived before the stream key");
    if (a->state != ANSWER_STREAMING)
        return refuse(a, "an element arrived after the answer's end");
    bool text = ev->kind == PROTO_SSE_EV_CHUNK_V3;
    uint64_t seq = a->sv.seq;
    uint8_t *pt;
    size_t n;
    if (sv3_open_json(&a->sv, text ? SV3_TEXT : SV3_THINKING, ev->elem, &pt, &n) < 0)
        return refuse(a, "element %llu does not verify (forged, dropped, reordered or altered in transit)",
                    (unsigned long long)seq);
    if (text) {
        a->text_elements++;
        on_text(ud, pt, n);
    }
    OPENSSL_cleanse(pt, n);
    free(pt);
    return 0;
}

static bool copy_id(char *out, const char *id)
{
    if (!cli_id_ok(id))
        return false;
    snprintf(out, CLI_ID_MAX, "%s", id);
    return true;
}

static int on_stored(answer *a, const proto_sse_event *ev)
{
    if (a->state == ANSWER_WAIT_KEY)
        return refuse(a, "the answer was stored without a stream key");
    if (a->state != ANSWER_STREAMING)
        return refuse(a, "a second stored event");
    if (!json_is_object(ev->stream_end))
        return refuse(a, "the stored event carries no end element (the answer may be cut off)");
    uint8_t *pt;
    size_t n;
    if (sv3_open_json(&a->sv, SV3_END, ev->stream_end, &pt, &n) < 0)
        return refuse(a, "the end element does not verify at index %llu (an element was dropped, or the end forged)",
                    (unsigned long long)a->sv.seq);
    bool ok = n == SV3_END_LEN;
    if (ok)
        memcpy(a->end, pt, SV3_END_LEN);
    free(pt);
    if (!ok)
        return refuse(a, "the end element is not the stored messages' two hashes");
    if (!copy_id(a->user_id, ev->user_message_id) || !copy_id(a->assistant_id, ev->assistant_message_id))
        return refuse(a, "the stored event does not name the two stored messages");
    snprintf(a->model, sizeof a->model, "%s", ev->model_used ? ev->model_used : "");
    a->in_tokens = ev->input_tokens;
    a->out_tokens = ev->output_tokens;
    a->state = ANSWER_STORED;
    sv3_wipe(&a->sv); /* nothing follows the end element */
    return 0;
}

int answer_feed(answer *a, const json_t *event, answer_text_fn on_text, void *ud)
{
    proto_sse_event ev;
    if (a->state == ANSWER_FAILED || a->state == ANSWER_SERVER_ERROR)
        return 1;
    switch (proto_parse_sse(event, &ev)) {
    case PROTO_SSE_INVALID:
        return refuse(a, "a malformed event");
    case PROTO_SSE_EV_SESSION:
        if (a->state != ANSWER_WAIT_KEY || strcmp(ev.session_id, a->session_id) != 0)
            return refuse(a, "the server named another session than the request's");
        return 0;
    case PROTO_SSE_EV_STREAM_KEY:
        return on_stream_key(a, &ev);
    case PROTO_SSE_EV_CHUNK_V3:
    case PROTO_SSE_EV_THINKING_V3:
        return on_element(a, &ev, on_text, ud);
    case PROTO_SSE_EV_CHUNK:
    case PROTO_SSE_EV_THINKING:
        return refuse(a, "the server sent a stream format 1 chunk, not the format 3 this client asked for");
    case PROTO_SSE_EV_STORED:
        return on_stored(a, &ev);
    case PROTO_SSE_EV_DONE:
        if (a->state != ANSWER_STORED)
            return refuse(a, "the stream ended before the answer's end element (it may be cut off)");
        a->state = ANSWER_DONE;
        return 0;
    case PROTO_SSE_EV_ERROR:
        /* the server's own word: shown as its error, never as an answer */
        snprintf(a->error, sizeof a->error, "%s", ev.message);
        a->state = ANSWER_SERVER_ERROR;
        sv3_wipe(&a->sv);
        return 1;
    case PROTO_SSE_EV_OTHER:
        return 0;
    }
    return 0;
}

int answer_finish(answer *a)
{
    switch (a->state) {
    case ANSWER_DONE:
        return 0;
    case ANSWER_FAILED:
    case ANSWER_SERVER_ERROR:
        return -1;
    case ANSWER_WAIT_KEY:
        refuse(a, "the stream ended without a stream key");
        return -1;
    case ANSWER_STREAMING:
        refuse(a, "the stream ended before the answer's end element (it may be cut off)");
        return -1;
    case ANSWER_STORED:
        refuse(a, "the stream ended before its done event (it may be cut off)");
        return -1;
    }
    return -1;
}

int answer_check_stored(answer *a, const ep *user_msg, const ep *assistant_msg)
{
    uint8_t h[SV3_END_LEN];
    if (a->state != ANSWER_DONE) {
        if (a->state != ANSWER_FAILED)
            refuse(a, "the answer is not complete");
        return -1;
    }
    sv3_ep_hash(user_msg, h);
    sv3_ep_hash(assistant_msg, h + SV3_HASH_LEN);
    if (CRYPTO_memcmp(h, a->end, SV3_END_LEN) != 0) {
        refuse(a, "the stored messages are not the ones the enclave stored for this answer");
        return -1;
    }
    return 0;
}

void answer_wipe(answer *a)
{
    sv3_wipe(&a->sv);
}

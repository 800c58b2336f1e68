/* request_open — see request_open.h. */
#include "enclave/request_open.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/secret.h"
#include "crypto/ep.h"

static bool utf8_ok(const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    bool ok = s != NULL;
    json_decref(s);
    return ok;
}

/* Decrypts one transport EP and appends its text to out. ENCLAVE_OK, or the code
 * with msg filled: BAD_REQUEST for a malformed envelope or text, DECRYPT_FAILED
 * when it was sealed to another key (the client has a stale enclave key). */
static enclave_err open_transport(const x25519_key *key, const json_t *v, const char *what, vbuf *out, proto_error *err)
{
    ep e;
    ep_err er = ep_from_json(v, &e, NULL);
    err->code = ENCLAVE_ERR_BAD_REQUEST;
    if (er != EP_OK) {
        snprintf(err->message, sizeof err->message, "Invalid %s: %s", what, ep_strerror(er));
        return err->code;
    }
    secret pt;
    er = ep_open_key(key, &e, EP_CTX_CLIENT_TO_ENCLAVE, &pt);
    ep_clear(&e);
    if (er != EP_OK) {
        snprintf(err->message, sizeof err->message, "Could not decrypt %s", what);
        return err->code = ENCLAVE_ERR_DECRYPT_FAILED;
    }
    err->code = ENCLAVE_OK;
    if (!utf8_ok(pt.data, pt.len)) {
        snprintf(err->message, sizeof err->message, "The %s is not valid UTF-8", what);
        err->code = ENCLAVE_ERR_BAD_REQUEST;
    } else if (vbuf_append_secure(out, pt.data, pt.len) < 0) {
        snprintf(err->message, sizeof err->message, "Out of memory");
        err->code = ENCLAVE_ERR_INTERNAL;
    }
    secret_free(&pt);
    return err->code;
}

static enclave_err oom(proto_error *err)
{
    snprintf(err->message, sizeof err->message, "Out of memory");
    return err->code = ENCLAVE_ERR_INTERNAL;
}

/* The new user message closes the conversation. */
static enclave_err close_history(const vbuf *user_text, history *h, proto_error *err)
{
    err->code = ENCLAVE_ERR_BAD_REQUEST;
    if (user_text->len == 0) {
        snprintf(err->message, sizeof err->message, "The message is empty");
        return err->code;
    }
    if (history_add(h, ROLE_USER, (const char *)user_text->data, user_text->len) < 0)
        return oom(err);
    const char *herr = history_check(h);
    if (herr) {
        snprintf(err->message, sizeof err->message, "Invalid history: %s", herr);
        return err->code;
    }
    return err->code = ENCLAVE_OK;
}

/* Format 1 and CHAT: the history turns (sealed one by one for a stream, plaintext
 * for CHAT), then the sealed message. */
static enclave_err build_history(const x25519_key *key, const proto_chat_request *pr, history *h, vbuf *user_text,
                                 proto_error *err)
{
    for (size_t i = 0; i < pr->n_history; i++) {
        const proto_turn *t = &pr->history[i];
        turn_role role = t->role >= 0 ? (turn_role)t->role : (turn_role)(i % 2); /* the original: position */
        vbuf text = VBUF_INIT;
        char what[48];
        snprintf(what, sizeof what, "history entry %zu", i);
        enclave_err e = ENCLAVE_OK;
        if (pr->stream)
            e = open_transport(key, t->ep, what, &text, err);
        else if (vbuf_append_secure(&text, t->text, t->text_len) < 0)
            e = oom(err);
        if (e == ENCLAVE_OK && history_add(h, role, (const char *)text.data, text.len) < 0)
            e = oom(err);
        vbuf_free_secure(&text);
        if (e != ENCLAVE_OK)
            return err->code = e;
    }
    enclave_err e = open_transport(key, pr->message, "message", user_text, err);
    return e != ENCLAVE_OK ? e : close_history(user_text, h, err);
}

/* The checks of a bound request after it is open, in the order the wire fixes:
 * its shape, the binding of the outer fields, issued_at, then request_id, which
 * is recorded only once the others passed (a broken copy cannot burn an honest
 * request's id). */
static enclave_err check_bound(replay_cache *replay, const proto_chat_request *pr, const json_t *inner,
                               proto_bound *b, proto_error *err)
{
    if (proto_parse_bound_request(inner, b, err) < 0 || proto_check_binding(pr, b, err) < 0)
        return err->code;
    time_t now = time(NULL);
    if (b->issued_at < (long long)now - PROTO_ISSUED_WINDOW_S || b->issued_at > (long long)now + PROTO_ISSUED_WINDOW_S) {
        snprintf(err->message, sizeof err->message, "The request was issued %lld s from the enclave's clock",
                 b->issued_at - (long long)now);
        return err->code = ENCLAVE_ERR_STALE_REQUEST;
    }
    switch (replay_check_and_record(replay, b->request_id, b->issued_at, now)) {
    case REPLAY_NEW: return err->code = ENCLAVE_OK;
    case REPLAY_SEEN:
        snprintf(err->message, sizeof err->message, "The request id was used before");
        return err->code = ENCLAVE_ERR_REPLAYED_REQUEST;
    case REPLAY_FULL: break;
    }
    snprintf(err->message, sizeof err->message, "Enclave busy, please retry");
    return err->code = ENCLAVE_ERR_BUSY;
}

/* Format 3: the whole request is one envelope to the attested key under its own
 * context; inside, the message and the history as plain turns. */
static enclave_err open_bound(const x25519_key *key, replay_cache *replay, const proto_chat_request *pr,
                              history *h, vbuf *user_text, uint8_t request_hash[SV3_HASH_LEN], proto_error *err)
{
    ep e;
    ep_err er = ep_from_json(pr->request, &e, NULL);
    err->code = ENCLAVE_ERR_BAD_REQUEST;
    if (er != EP_OK) {
        snprintf(err->message, sizeof err->message, "Invalid encrypted_request: %s", ep_strerror(er));
        return err->code;
    }
    secret pt;
    er = ep_open_key(key, &e, SV3_REQUEST_CONTEXT, &pt);
    sv3_ep_hash(&e, request_hash);
    ep_clear(&e);
    if (er != EP_OK) {
        snprintf(err->message, sizeof err->message, "Could not decrypt the request");
        return err->code = ENCLAVE_ERR_DECRYPT_FAILED;
    }
    json_error_t jerr;
    json_t *inner = json_loadb((const char *)pt.data, pt.len, 0, &jerr);
    secret_free(&pt);
    proto_bound b;
    memset(&b, 0, sizeof b);
    enclave_err rc = inner ? check_bound(replay, pr, inner, &b, err) : ENCLAVE_ERR_BAD_REQUEST;
    if (!inner)
        snprintf(err->message, sizeof err->message, "The sealed request is not JSON");
    for (size_t i = 0; rc == ENCLAVE_OK && i < b.n_history; i++)
        if (history_add(h, (turn_role)b.history[i].role, b.history[i].text, b.history[i].text_len) < 0)
            rc = oom(err);
    if (rc == ENCLAVE_OK && vbuf_append_secure(user_text, b.message, b.message_len) < 0)
        rc = oom(err);
    proto_bound_free(&b);
    json_decref(inner); /* the wiping JSON allocator clears the plaintext */
    return rc != ENCLAVE_OK ? (err->code = rc) : close_history(user_text, h, err);
}

enclave_err request_open(const x25519_key *key, replay_cache *replay, const proto_chat_request *pr, history *h,
                         vbuf *user_text, uint8_t request_hash[SV3_HASH_LEN], proto_error *err)
{
    if (pr->format == 3)
        return open_bound(key, replay, pr, h, user_text, request_hash, err);
    return build_history(key, pr, h, user_text, err);
}

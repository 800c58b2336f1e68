/* convo — a conversation in stream format 3 (see convo.h). */
#include "cli/convo.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cli/tagrec.h"
#include "cli/userkeys.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/stream_v3.h"
#include "enclave/protocol.h"

#define STREAM_PATH "/api/v1/chat/encrypted/stream"
#define F_TRANSPORT_KEY "client_transport_public_key" /* the stream route's body (routes_stream.c) */
#define F_MODEL "model"
#define UNVERIFIED "the answer could not be verified: "

void convo_init(convo *cv, vclient *c, cli_trust *trust, const char *model)
{
    memset(cv, 0, sizeof *cv);
    cv->c = c;
    cv->trust = trust;
    cv->out = stdout;
    snprintf(cv->model, sizeof cv->model, "%s", model);
}

void convo_free(convo *cv)
{
    for (size_t i = 0; i < cv->n; i++)
        vbuf_free_secure(&cv->turns[i].text);
    free(cv->turns);
    cv->turns = NULL;
    cv->n = cv->cap = 0;
    OPENSSL_cleanse(cv->storage_priv, sizeof cv->storage_priv);
    OPENSSL_cleanse(cv->tag_key, sizeof cv->tag_key);
}

static int convo_add(convo *cv, const char *role, const uint8_t *text, size_t len)
{
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 16;
        convo_turn *t = realloc(cv->turns, cap * sizeof *t);
        if (!t)
            return -1;
        cv->turns = t;
        cv->cap = cap;
    }
    convo_turn *t = &cv->turns[cv->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->role, sizeof t->role, "%s", role);
    return vbuf_append_secure(&t->text, text, len);
}

/* Every key the client seals to passes through here: attested unless --no-attestation
 * (trust.h), the first one and each new one after the enclave restarted. */
int convo_attest(convo *cv, char *err, size_t errlen)
{
    if (cli_trust_enclave_key(cv->trust, cv->c, cv->enclave_pub, err, errlen) < 0)
        return -1;
    cv->have_key = true;
    return 0;
}

/* The storage key pair and the chain's key, from the user's private key (the cache or
 * the passcode) and, in an org context, the org key opened from the membership copy. */
int convo_open_storage(convo *cv, const char *pfile, char *err, size_t errlen)
{
    uint8_t upriv[32], pub[32];
    char org[256];
    if (userkeys_private(cv->c, pfile, upriv, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (userkeys_current_org(cv->c, org, sizeof org, err, errlen) < 0 ||
        userkeys_storage(cv->c, org, upriv, cv->storage_priv, err, errlen) < 0)
        goto out;
    if (x25519_public(cv->storage_priv, pub) < 0 || history_tag_key(cv->storage_priv, cv->tag_key) < 0) {
        snprintf(err, errlen, "key derivation failed");
        goto out;
    }
    hex_encode(pub, 32, cv->storage_pub);
    rc = 0;
out:
    OPENSSL_cleanse(upriv, sizeof upriv);
    return rc;
}

/* ---- a session's stored history, with its chain checked ---- */

void convo_history_free(convo_history *h)
{
    for (size_t i = 0; h->texts && i < h->s.n; i++)
        secret_free(&h->texts[i]);
    free(h->texts);
    chain_report_free(&h->rep);
    stored_free(&h->s);
}

/* Fetches, checks the chain (with this machine's record) and opens the session's messages. */
int convo_history_load(convo *cv, const char *session, convo_history *h, char *err, size_t errlen)
{
    uint8_t rec[HISTORY_TAG_LEN];
    memset(h, 0, sizeof *h);
    if (stored_fetch(cv->c, session, &h->s, err, errlen) < 0)
        return -1;
    int has_rec = tagrec_get(session, rec, err, errlen);
    if (has_rec < 0)
        goto fail;
    if (chain_check(cv->tag_key, session, h->s.msgs, h->s.n, has_rec == 0 ? rec : NULL, &h->rep) < 0 ||
        !(h->texts = calloc(h->s.n ? h->s.n : 1, sizeof *h->texts))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < h->s.n; i++) {
        const char *ctx = h->s.msgs[i].assistant ? EP_CTX_ASSISTANT_STORAGE : EP_CTX_USER_STORAGE;
        ep_err er = ep_open(cv->storage_priv, &h->s.eps[i], ctx, &h->texts[i]);
        if (er != EP_OK) {
            snprintf(err, errlen, "message %zu does not decrypt with your storage key: %s", i + 1, ep_strerror(er));
            goto fail;
        }
    }
    return 0;
fail:
    convo_history_free(h);
    return -1;
}

/* "2 forged, 1 out of order, the last exchange missing" */
void convo_describe_breaks(const chain_report *r, char *out, size_t n)
{
    snprintf(out, n, "%zu forged, %zu out of order%s", r->forged, r->reordered,
             r->record_missing ? ", the last exchange missing" : "");
}

/* --session: the stored history joins the conversation, only if its chain holds. */
int convo_load_session(convo *cv, const char *session, char *err, size_t errlen)
{
    convo_history h;
    char what[160];
    if (convo_history_load(cv, session, &h, err, errlen) < 0)
        return -1;
    int rc = -1;
    if (chain_broken(&h.rep)) {
        convo_describe_breaks(&h.rep, what, sizeof what);
        snprintf(err, errlen, "the stored history of session %s does not verify (%s): see `veil history %s`",
                 session, what, session);
        goto out;
    }
    for (size_t i = 0; i < h.s.n; i++)
        if (convo_add(cv, h.s.msgs[i].assistant ? "assistant" : "user", h.texts[i].data, h.texts[i].len) < 0) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    snprintf(cv->session_id, sizeof cv->session_id, "%s", session);
    if ((cv->has_last = h.rep.has_last))
        memcpy(cv->last_tag, h.rep.last, HISTORY_TAG_LEN);
    rc = 0;
out:
    convo_history_free(&h);
    return rc;
}

/* ---- one bound request and its answer ---- */

/* The sealed request (format 3): message, plain history, both keys, model, session,
 * a fresh request id and the time, as one envelope under SV3_REQUEST_CONTEXT. */
static json_t *seal_request(convo *cv, const char *prompt, const char *tpub_hex, uint8_t request_hash[SV3_HASH_LEN],
                            char *err, size_t errlen)
{
    uint8_t rid[PROTO_REQUEST_ID_LEN];
    char rid_hex[2 * PROTO_REQUEST_ID_LEN + 1];
    json_t *hist = json_array(), *inner = NULL, *sealed = NULL;
    char *text = NULL;
    for (size_t i = 0; hist && i < cv->n; i++) {
        const convo_turn *t = &cv->turns[i];
        json_t *o = json_pack("{s:s, s:s%}", PF_ROLE, t->role, PF_CONTENT, t->text.data ? (const char *)t->text.data : "",
                              t->text.len);
        if (!o || json_array_append_new(hist, o) < 0) {
            snprintf(err, errlen, "turn %zu of the conversation is not UTF-8 text", i + 1);
            goto out;
        }
    }
    if (random_bytes(rid, sizeof rid) < 0) {
        snprintf(err, errlen, "no randomness for the request id");
        goto out;
    }
    hex_encode(rid, sizeof rid, rid_hex);
    inner = proto_bound_request_json(prompt, hist, tpub_hex, cv->storage_pub, cv->model, cv->session_id, rid_hex,
                                     (long long)time(NULL));
    if (!inner || !(text = json_dumps(inner, JSON_COMPACT))) {
        snprintf(err, errlen, "the message is not UTF-8 text");
        goto out;
    }
    ep e;
    if (ep_seal(cv->enclave_pub, (const uint8_t *)text, strlen(text), SV3_REQUEST_CONTEXT, &e) != EP_OK) {
        snprintf(err, errlen, "sealing the request failed");
        goto out;
    }
    sv3_ep_hash(&e, request_hash);
    sealed = ep_to_json(&e);
    ep_clear(&e);
    if (!sealed)
        snprintf(err, errlen, "out of memory");
out:
    if (text) {
        OPENSSL_cleanse(text, strlen(text));
        free(text);
    }
    json_decref(inner); /* jansson's blocks are wiped as they are freed (veil_main.c) */
    json_decref(hist);
    return sealed;
}

static void show(void *ud, const uint8_t *text, size_t len)
{
    convo_reply *rp = ud;
    vbuf_append_secure(&rp->answer, text, len);
    if (rp->cv->live && len) { /* the model's text may carry escape sequences */
        term_fwrite(rp->cv->out, &rp->tf, text, len);
        fflush(rp->cv->out);
        rp->shown = true;
    }
}

static int on_event(void *ud, const json_t *ev)
{
    convo_reply *rp = ud;
    return answer_feed(&rp->ans, ev, show, rp);
}

static void unverified(const convo_reply *rp, const char *why, char *err, size_t errlen)
{
    snprintf(err, errlen, UNVERIFIED "%.2048s%s", why, rp->shown ? "; the text shown above is not an authentic answer" : "");
}

/* The stored pair the end element names, from the server's list, then its history
 * tag (chained to the session's last) stored there and recorded here. */
static int check_stored(convo *cv, convo_reply *rp, char *err, size_t errlen)
{
    stored_msgs s;
    char why[1024];
    if (stored_fetch(cv->c, cv->session_id, &s, why, sizeof why) < 0) {
        char msg[sizeof why + 64];
        snprintf(msg, sizeof msg, "the stored messages cannot be read back (%s)", why);
        unverified(rp, msg, err, errlen);
        return -1;
    }
    long u = stored_find(&s, rp->ans.user_id), a = stored_find(&s, rp->ans.assistant_id);
    int rc = -1;
    if (u < 0 || a < 0) {
        unverified(rp, "the session does not hold the stored messages the answer names", err, errlen);
        goto out;
    }
    if (answer_check_stored(&rp->ans, &s.eps[u], &s.eps[a]) < 0) {
        unverified(rp, rp->ans.error, err, errlen);
        goto out;
    }
    uint8_t tag[HISTORY_TAG_LEN];
    if (history_tag(cv->tag_key, cv->session_id, cv->has_last ? cv->last_tag : NULL, &s.eps[u], &s.eps[a], tag) < 0) {
        snprintf(err, errlen, "computing the history tag failed");
        goto out;
    }
    /* the answer is verified: a tag that cannot be kept is a warning, and the next
     * exchange still chains to it (veil history then reports the gap) */
    if (stored_put_tag(cv->c, cv->session_id, rp->ans.assistant_id, tag, why, sizeof why) < 0)
        snprintf(rp->warning, sizeof rp->warning, "the history tag was not stored on the server (%s): `veil history` "
                 "will report this exchange", why);
    else if (tagrec_put(cv->session_id, tag, why, sizeof why) < 0)
        snprintf(rp->warning, sizeof rp->warning, "the history tag was not recorded here (%s)", why);
    memcpy(cv->last_tag, tag, HISTORY_TAG_LEN);
    cv->has_last = true;
    rc = 0;
out:
    stored_free(&s);
    return rc;
}

/* SENT_RETRY: the enclave could not open the request (it restarted with a new key);
 * SENT_OTHER_KEY: veild answered 409, its enclave has another key (another instance
 * behind a load balancer), and what it offers verified. Both: attest afresh, reseal. */
enum { SENT_OK = 0, SENT_FAILED = -1, SENT_RETRY = 1, SENT_OTHER_KEY = 2 };

/* A new chat's session that no request was accepted into stays empty: removed. */
static void forget_created(convo *cv, bool created)
{
    if (!created)
        return;
    stored_delete_session(cv->c, cv->session_id);
    cv->session_id[0] = '\0';
}

/* One bound request: its sealing, its stream, its answer's checks. */
static int send_once(convo *cv, const char *prompt, convo_reply *rp, bool created, char *err, size_t errlen)
{
    uint8_t tpub[32], rh[SV3_HASH_LEN];
    char tpub_hex[65], epub_hex[65], buf[CLI_ERR_MAX];
    x25519_key *tk = x25519_key_generate(tpub); /* this request's key: the answer is bound to it */
    if (!tk) {
        snprintf(err, errlen, "key generation failed");
        return SENT_FAILED;
    }
    hex_encode(tpub, 32, tpub_hex);
    hex_encode(cv->enclave_pub, 32, epub_hex);
    json_t *sealed = seal_request(cv, prompt, tpub_hex, rh, err, errlen);
    if (!sealed) {
        x25519_key_free(tk);
        return SENT_FAILED;
    }
    /* the key it is sealed to, in the clear too: an instance whose enclave has another
     * answers 409 at once instead of asking its enclave */
    json_t *body = json_pack("{s:i, s:o, s:s, s:s, s:s, s:s}", PF_STREAM_FORMAT, 3, PF_ENCRYPTED_REQUEST, sealed,
                             F_TRANSPORT_KEY, tpub_hex, F_MODEL, cv->model, PF_SESSION_ID, cv->session_id,
                             PF_ENCLAVE_PUBLIC_KEY, epub_hex);
    answer_init(&rp->ans, tk, cv->enclave_pub, rh, cv->session_id);
    int status = 0;
    json_t *r = NULL;
    int rc = body ? vclient_stream(cv->c, STREAM_PATH, body, on_event, rp, &status, &r, err, errlen) : -1;
    json_decref(body);
    if (cv->live)
        term_fwrite_end(cv->out, &rp->tf);
    x25519_key_free(tk);
    rp->ans.transport = NULL;
    int out = SENT_FAILED;
    if (rc < 0) {
        if (rp->shown) { /* the connection broke mid-answer */
            snprintf(buf, sizeof buf, "the stream broke off (%.1024s)", err);
            unverified(rp, buf, err, errlen);
        }
    } else if (status == 409 && json_object_get(r, PF_ENCLAVE_PUBLIC_KEY)) {
        if (cli_trust_check_offered(cv->trust, r, err, errlen) == 0)
            out = SENT_OTHER_KEY;
        else
            forget_created(cv, created);
    } else if (status != 200) {
        const char *d = json_string_value(json_object_get(r, "detail"));
        bool no_keys = d && strcmp(d, "User has not set up encryption keys") == 0;
        snprintf(err, errlen, "%s%s", api_detail(r, status, buf, sizeof buf),
                 no_keys ? ": run `veil keys init` first" : "");
        forget_created(cv, created); /* refused before anything started: the new session stays empty */
    } else if (answer_finish(&rp->ans) == 0) {
        out = check_stored(cv, rp, err, errlen) == 0 ? SENT_OK : SENT_FAILED;
    } else if (rp->ans.state == ANSWER_FAILED) {
        unverified(rp, rp->ans.error, err, errlen);
    } else if (strcmp(rp->ans.error, enclave_err_client_message(ENCLAVE_ERR_DECRYPT_FAILED, NULL)) == 0 &&
               !rp->ans.text_elements) {
        out = SENT_RETRY; /* sealed to a key the enclave no longer has: it restarted */
    } else {
        snprintf(err, errlen, "%s", rp->ans.error); /* the server's error event */
    }
    json_decref(r);
    answer_wipe(&rp->ans);
    return out;
}

/* One prompt's exchange, from the seal to the tag, on one kept-alive connection: a
 * load balancer that routes by connection sends the retry after a 409, and the fresh
 * attestation before it, to the instance that answered the 409. */
static int send_exchange(convo *cv, const char *prompt, convo_reply *rp, char *err, size_t errlen)
{
    bool created = false;
    int last = SENT_OK;
    for (int attempt = 0; attempt < 2; attempt++) {
        vbuf_free_secure(&rp->answer);
        memset(rp, 0, sizeof *rp);
        rp->cv = cv;
        if (!cv->have_key && convo_attest(cv, err, errlen) < 0) {
            forget_created(cv, created);
            return -1;
        }
        if (!cv->session_id[0]) { /* the request names its session: it must exist first */
            if (stored_create_session(cv->c, cv->session_id, err, errlen) < 0)
                return -1;
            created = true;
        }
        last = send_once(cv, prompt, rp, created, err, errlen);
        if (last == SENT_RETRY || last == SENT_OTHER_KEY) {
            /* a restarted enclave, or another instance's: learn (and verify, with a
             * fresh nonce) the key of the enclave that will get the retry; once */
            cv->have_key = false;
            continue;
        }
        if (last < 0)
            return -1;
        if (convo_add(cv, "user", (const uint8_t *)prompt, strlen(prompt)) < 0 ||
            convo_add(cv, "assistant", rp->answer.data, rp->answer.len) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        return 0;
    }
    forget_created(cv, created);
    if (last == SENT_OTHER_KEY)
        snprintf(err, errlen, "the enclave key changed again during the retry (another instance answered it): "
                              "nothing was sealed to an unverified key; send again");
    else
        snprintf(err, errlen, "the enclave key keeps changing");
    return -1;
}

/* Sends one prompt; on success the turn pair joins the conversation. */
int convo_send(convo *cv, const char *prompt, convo_reply *rp, char *err, size_t errlen)
{
    if (vclient_pin(cv->c, err, errlen) < 0)
        return -1;
    int rc = send_exchange(cv, prompt, rp, err, errlen);
    vclient_unpin(cv->c);
    return rc;
}

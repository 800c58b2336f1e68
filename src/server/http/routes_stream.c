/* routes_stream — POST /api/v1/chat/encrypted/stream (spec §4.3): checks the body
 * and the caller's right to send, takes one of the user's stream slots, asks the
 * enclave and relays its events as SSE, with heartbeats and backpressure both ways;
 * the final event stores both messages (and the session's first row), or nothing.
 *
 * In steps, each on its own side of the loop: the body and the slot on the loop;
 * the store's checks (the right to send, the session's owner, a new session's row)
 * as a DB job (stream_prepare); the enclave stream on the loop, every chunk relayed
 * without the database; the final event's write as a DB job (stream_commit); then
 * `stored` and `done` from the loop (stream_stored). */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "server/http/models.h"
#include "server/http/routes_util.h"
#include "server/http/validate.h"

#define P "/api/v1/chat"
#define HEARTBEAT_S 15
#define STREAM_RETRY_AFTER "5" /* seconds: streams last seconds to minutes */

typedef struct stream_st {
    api_req *r;
    server *srv;      /* outlives r, which api_sse_end frees */
    ec_op *op;
    struct event *heartbeat;
    char session_id[64];
    bool new_session;
    bool holds_slot;  /* counts against the user's concurrent streams */
    bool paused;      /* the client reads slower than the answer comes */
    char user_id[256];
    char model[128];
    unsigned chunks;
    /* handed between the loop and a DB job: only one side uses them at a time */
    json_t *body;                   /* the request (stream_prepare reads it) */
    size_t max_request;             /* the enclave's request limit, read on the loop */
    json_t *req;                    /* stream_prepare's CHAT_STREAM request */
    json_t *stored_user, *stored_assistant, *stream_end; /* the final event's, copied */
    char *model_used;
    long input_tokens, output_tokens;
    store_rc commit_rc;
    char user_message_id[64], assistant_message_id[64];
} stream_st;

static void stream_free(stream_st *st)
{
    if (st->heartbeat)
        event_free(st->heartbeat);
    if (st->holds_slot)
        ul_stream_release(st->srv->limits, st->user_id);
    json_decref(st->body);
    json_decref(st->req);
    json_decref(st->stored_user);
    json_decref(st->stored_assistant);
    json_decref(st->stream_end);
    free(st->model_used);
    free(st);
}

static void sse_json(api_req *r, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (s) {
        api_sse_event(r, s, strlen(s));
        free(s);
    }
}

/* An event for the client; when its output backs up, stop taking the answer from
 * the enclave until it drains (a client that never reads is cut off by httpd after
 * VEIL_SSE_STALL_SECONDS, and its stream is cancelled then). */
static void stream_send(stream_st *st, json_t *o)
{
    sse_json(st->r, o);
    if (!st->paused && st->op && api_sse_congested(st->r)) {
        st->paused = true;
        log_debug(st->r->rid, "event=stream_paused chunks=%u", st->chunks);
        ec_op_pause(st->op, true);
    }
}

static void on_stream_drain(api_req *r)
{
    stream_st *st = r->state;
    if (st->paused && st->op) {
        st->paused = false;
        log_debug(r->rid, "event=stream_resumed chunks=%u", st->chunks);
        ec_op_pause(st->op, false);
    }
}

static void stream_end(stream_st *st)
{
    api_req *r = st->r;
    api_sse_end(r);
    stream_free(st);
}

static void stream_fail(stream_st *st, const char *msg)
{
    sse_json(st->r, proto_sse_error(msg));
    stream_end(st);
}

/* Fills a message row from an EncryptedPayload the enclave returned; false if
 * it does not satisfy the API's rules (non-empty ciphertext, exact lengths). */
static bool ep_row(const json_t *ep, message_row *m)
{
    static const struct {
        const char *name;
        size_t exact;
    } F[] = {{"ephemeral_public_key", 64}, {"iv", 32}, {"ciphertext", 0}, {"auth_tag", 32}, {"hkdf_salt", 64}};
    char **dst[] = {&m->ephemeral_public_key, &m->iv, &m->ciphertext, &m->auth_tag, &m->hkdf_salt};
    for (size_t i = 0; i < 5; i++) {
        const json_t *v = json_object_get(ep, F[i].name);
        size_t n = json_string_length(v);
        if (!json_is_string(v) || !hex_is_valid(json_string_value(v), n) || n == 0 ||
            (F[i].exact && n != F[i].exact))
            return false;
        *dst[i] = (char *)json_string_value(v); /* borrowed for the commit */
    }
    return true;
}

/* On a DB worker: both messages in one transaction, only now that the enclave
 * finished. The outcome waits in st for stream_stored. */
static void stream_commit(api_req *r)
{
    stream_st *st = r->state;
    message_row um, am;
    memset(&um, 0, sizeof um);
    memset(&am, 0, sizeof am);
    ep_row(st->stored_user, &um); /* checked on the loop already */
    ep_row(st->stored_assistant, &am);
    um.role = (char *)"user";
    um.model_used = st->model;
    um.input_tokens = um.output_tokens = -1;
    am.role = (char *)"assistant";
    am.model_used = st->model_used;
    am.input_tokens = st->input_tokens;
    am.output_tokens = st->output_tokens;
    st->commit_rc = store_chat_commit(r->db, NULL, st->session_id, &um, &am);
    /* the commit filled ids/timestamps it allocated (freed below); the EPs are borrowed */
    if (st->commit_rc == STORE_OK) {
        log_info(r->rid, "event=stream_stored chunks=%u in_tokens=%ld out_tokens=%ld", st->chunks,
                 st->input_tokens, st->output_tokens);
        snprintf(st->user_message_id, sizeof st->user_message_id, "%s", um.id);
        snprintf(st->assistant_message_id, sizeof st->assistant_message_id, "%s", am.id);
    } else {
        log_error(r->rid, "event=store_error op=chat_commit detail=\"%s\"", store_last_error(r->db));
    }
    free(um.id);
    free(um.created_at);
    free(um.session_id);
    free(am.id);
    free(am.created_at);
    free(am.session_id);
}

/* On the loop, after stream_commit (or when it could not be queued: not stored). */
static void stream_stored(api_req *r)
{
    stream_st *st = r->state;
    if (r->closed) { /* the client left while the messages were written */
        stream_free(st);
        return;
    }
    if (st->commit_rc != STORE_OK) {
        stream_fail(st, "Failed to store the messages");
        return;
    }
    sse_json(r, proto_sse_stored(st->model_used, st->input_tokens, st->output_tokens, st->stream_end,
                                 st->user_message_id, st->assistant_message_id));
    sse_json(r, proto_sse_done());
    stream_end(st);
}

static void on_final(stream_st *st, const proto_event *ev)
{
    api_req *r = st->r;
    const proto_final *f = &ev->final;
    message_row um, am;
    memset(&um, 0, sizeof um);
    memset(&am, 0, sizeof am);
    if (!ep_row(f->stored_user, &um) || !ep_row(f->stored_assistant, &am)) {
        log_warn(r->rid, "event=stream_bad_final");
        stream_fail(st, enclave_err_client_message(ENCLAVE_ERR_PROTOCOL, NULL));
        return;
    }
    /* copies for the DB job: the event is freed when this returns */
    st->stored_user = json_deep_copy(f->stored_user);
    st->stored_assistant = json_deep_copy(f->stored_assistant);
    st->stream_end = ev->stream_end ? json_deep_copy(ev->stream_end) : NULL;
    st->model_used = strdup(f->model_used ? f->model_used : st->model);
    st->input_tokens = f->input_tokens;
    st->output_tokens = f->output_tokens;
    st->commit_rc = STORE_ERR;
    if (!st->stored_user || !st->stored_assistant || !st->model_used || (ev->stream_end && !st->stream_end)) {
        stream_fail(st, "Failed to store the messages");
        return;
    }
    /* admitted past the queue's bound: open streams are bounded already, and the
     * answer has been read by the user */
    api_db_job(r, stream_commit, stream_stored, API_DB_ADMIT);
}

static void on_stream_event(void *ud, const proto_event *ev)
{
    stream_st *st = ud;
    if (ev->kind == PROTO_EV_FINAL) { /* parsed first: whatever else it carries, it ends the stream */
        st->op = NULL; /* the enclave client finishes the op after this returns */
        on_final(st, ev);
        return;
    }
    if (ev->kind == PROTO_EV_CHUNK || ev->kind == PROTO_EV_CHUNK_V3)
        st->chunks++;
    json_t *o = proto_sse_relay(ev); /* forwarded as it arrives: nothing waits for the whole answer */
    if (o)
        stream_send(st, o);
}

static void on_stream_end(void *ud, enclave_err err, const char *msg)
{
    if (err == ENCLAVE_OK) /* success: on_final already answered and freed the state (ud) */
        return;
    stream_st *st = ud;
    st->op = NULL;
    log_info(st->r->rid, "event=stream_failed code=%s chunks=%u", enclave_err_name(err), st->chunks);
    stream_fail(st, enclave_err_client_message(err, msg));
}

static void on_stream_close(api_req *r)
{
    stream_st *st = r->state;
    log_info(r->rid, "event=stream_client_gone chunks=%u", st->chunks);
    if (st->op)
        ec_op_cancel(st->op); /* closes the enclave connection: upstream is cancelled */
    stream_free(st);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stream_st *st = arg;
    api_sse_comment(st->r, "keep-alive");
}

/* Format 3 (a bound request): the whole request is one envelope, and it names the
 * session, which must exist already (create it with POST /sessions): no per-turn
 * envelopes beside it. */
static bool check_bound_body(api_req *r, json_t *body)
{
    if (!v_ep(r, body, NULL, PF_ENCRYPTED_REQUEST))
        return false;
    const json_t *sid = json_object_get(body, "session_id");
    if (!json_is_string(sid) || json_string_length(sid) == 0) {
        const char *loc[] = {"body", "session_id"};
        api_reply_422(r, "missing", loc, 2, "Field required: stream format 3 names an existing session", sid);
        return false;
    }
    static const char *const UNBOUND[] = {"encrypted_message", PF_ENCRYPTED_HISTORY};
    for (size_t i = 0; i < 2; i++) {
        const json_t *v = json_object_get(body, UNBOUND[i]);
        if (v && !json_is_null(v)) {
            const char *loc[] = {"body", UNBOUND[i]};
            api_reply_422(r, "extra_forbidden", loc, 2, "Stream format 3 seals everything in encrypted_request", NULL);
            return false;
        }
    }
    return true;
}

static bool check_stream_body(api_req *r, json_t *body)
{
    if (!v_object(r, body) || !v_string(r, body, NULL, "model", 256) ||
        !v_x25519_key(r, body, NULL, "client_transport_public_key"))
        return false;
    const json_t *fmt = json_object_get(body, PF_STREAM_FORMAT);
    if (proto_stream_format(fmt) < 0) {
        const char *loc[] = {"body", PF_STREAM_FORMAT};
        api_reply_422(r, "literal_error", loc, 2, "Input should be " PROTO_STREAM_FORMATS, fmt);
        return false;
    }
    if (proto_stream_format(fmt) == 3)
        return check_bound_body(r, body);
    if (!v_ep(r, body, NULL, "encrypted_message"))
        return false;
    json_t *h = json_object_get(body, PF_ENCRYPTED_HISTORY);
    if (h && !json_is_null(h)) {
        if (!json_is_array(h) || json_array_size(h) > PROTO_MAX_HISTORY) {
            const char *loc[] = {"body", PF_ENCRYPTED_HISTORY};
            api_reply_422(r, "list_type", loc, 2, "Input should be a valid list", h);
            return false;
        }
        size_t i;
        json_t *item;
        json_array_foreach(h, i, item) {
            if (!v_ep_item(r, item, NULL, PF_ENCRYPTED_HISTORY, (int)i))
                return false;
            const json_t *role = json_object_get(item, "role");
            if (role && !json_is_null(role) &&
                (!json_is_string(role) || (strcmp(json_string_value(role), "user") != 0 &&
                                           strcmp(json_string_value(role), "assistant") != 0))) {
                char idx[24];
                snprintf(idx, sizeof idx, "%zu", i);
                const char *loc[] = {"body", PF_ENCRYPTED_HISTORY, idx, "role"};
                api_reply_422(r, "literal_error", loc, 4, "Input should be 'user' or 'assistant'", role);
                return false;
            }
        }
    }
    const json_t *sid = json_object_get(body, "session_id");
    const json_t *facts = json_object_get(body, "facts_context");
    if ((sid && !json_is_null(sid) && !json_is_string(sid)) ||
        (facts && !json_is_null(facts) && !json_is_string(facts))) {
        const char *loc[] = {"body", sid && !json_is_null(sid) && !json_is_string(sid) ? "session_id" : "facts_context"};
        api_reply_422(r, "string_type", loc, 2, "Input should be a valid string", NULL);
        return false;
    }
    return true;
}

static void invalid_model(api_req *r)
{
    /* a stable, readable list (defect §10.9: the original printed a Python set) */
    vbuf b = VBUF_INIT;
    vbuf_append_str(&b, "Invalid model. Available models: [");
    for (size_t i = 0; i < N_MODELS; i++)
        vbuf_printf(&b, "%s'%s'", i ? ", " : "", MODELS[i].id);
    vbuf_append_str(&b, "]");
    api_reply_detail(r, 400, vbuf_cstr(&b));
    vbuf_free(&b);
}

/* 429 when the user already holds VEIL_USER_MAX_STREAMS streams: one token must
 * not take every enclave slot (or the Bedrock quota) from everyone else. */
static bool take_stream_slot(api_req *r, stream_st *st)
{
    if (ul_stream_acquire(r->srv->limits, r->auth.user_id)) {
        st->holds_slot = true;
        snprintf(st->user_id, sizeof st->user_id, "%s", r->auth.user_id);
        return true;
    }
    char msg[128];
    snprintf(msg, sizeof msg, "Too many chats in progress (at most %ld at a time), retry when one ends",
             r->srv->cfg.user_max_streams);
    api_add_header(r, "Retry-After", STREAM_RETRY_AFTER);
    log_info(r->rid, "event=stream_refused reason=user_streams limit=%ld", r->srv->cfg.user_max_streams);
    api_reply_detail(r, 429, msg);
    return false;
}

/* The CHAT_STREAM request for the enclave, or NULL (then a reply was sent). */
static json_t *enclave_request(api_req *r, json_t *body, const char *model, const char *storage_key,
                               const char *session_id, size_t max)
{
    json_t *hist = json_object_get(body, PF_ENCRYPTED_HISTORY);
    const char *client_key = json_string_value(json_object_get(body, "client_transport_public_key"));
    int format = proto_stream_format(json_object_get(body, PF_STREAM_FORMAT));
    json_t *req;
    if (format == 3) { /* the enclave checks these against the sealed ones */
        req = proto_bound_stream_request(json_object_get(body, PF_ENCRYPTED_REQUEST), client_key, storage_key, model,
                                         session_id);
    } else {
        json_t *empty = json_array();
        req = proto_chat_stream_request(json_object_get(body, "encrypted_message"), json_is_array(hist) ? hist : empty,
                                        client_key, storage_key, model, session_id);
        json_decref(empty);
    }
    char *line = req ? json_dumps(req, JSON_COMPACT) : NULL;
    size_t len = line ? strlen(line) + 1 : 0;
    free(line);
    if (!req || !line) {
        json_decref(req);
        api_reply_detail(r, 503, "Service busy, please retry");
        return NULL;
    }
    if (len > max) { /* the enclave would refuse it: say so clearly, before anything starts */
        char msg[200];
        snprintf(msg, sizeof msg,
                 "Request too large: the conversation is %zu bytes, the enclave accepts at most %zu; "
                 "start a new chat or send less history", len, max);
        json_decref(req);
        api_reply_detail(r, 413, msg);
        return NULL;
    }
    return req;
}

/* Gives up a session row that no client was told of (a failed start): a job of
 * its own, best effort (the sweep of empty sessions takes what this misses). */
static void forget_work(void *conn, void *arg)
{
    if (store_session_delete(conn, arg) != STORE_OK)
        log_warn(NULL, "event=store_error op=session_delete detail=\"%s\"", store_last_error(conn));
}

static void forget_done(void *arg, dbp_status st)
{
    (void)st;
    free(arg);
}

static void forget_session(stream_st *st)
{
    char *id = strdup(st->session_id);
    if (id && dbp_submit(st->srv->pool, forget_work, forget_done, id, true) == DBP_OK)
        return;
    free(id);
}

/* On a DB worker: the caller's right to send, the session (the caller's own, or a
 * new row) and the enclave's request; a refusal is recorded as the reply. */
static void stream_prepare(api_req *r)
{
    stream_st *st = r->state;
    char storage_key[65] = "";
    store_rc err;
    const char *why = ru_can_send(r, storage_key, &err);
    if (err != STORE_OK) {
        api_store_error(r, "can_send");
        return;
    }
    if (why) {
        api_reply_detail(r, 400, why);
        return;
    }
    const json_t *sid = json_object_get(st->body, "session_id");
    if (json_is_string(sid) && json_string_length(sid)) {
        session_row s;
        if (!ru_session_or_reply(r, json_string_value(sid), &s))
            return;
        snprintf(st->session_id, sizeof st->session_id, "%s", s.id);
        session_row_free(&s);
    } else {
        store_uuid(st->session_id);
        st->new_session = true;
    }
    if (!(st->req = enclave_request(r, st->body, st->model, storage_key, st->session_id, st->max_request)))
        return;
    if (st->new_session) {
        /* the row exists from the first event on, as in the original: the client lists
         * it and may retry in it; its messages are stored only when a stream completes */
        session_row s;
        if (store_session_create(r->db, st->session_id, r->auth.user_id, ru_ctx_org(r), "New Chat", &s) !=
            STORE_OK) {
            st->new_session = false; /* nothing to forget */
            api_store_error(r, "session_create");
            return;
        }
        session_row_free(&s);
    }
}

/* On the loop, after stream_prepare: the enclave stream, relayed as SSE. */
static void stream_begin(api_req *r)
{
    stream_st *st = r->state;
    if (r->closed || api_reply_pending(r)) {
        if (r->closed && st->new_session && st->req) /* created, then nobody to tell */
            forget_session(st);
        stream_free(st);
        return;
    }
    static const ec_stream_callbacks cb = {on_stream_event, on_stream_end};
    st->op = ec_chat_stream(r->srv->ec, st->req, &cb, st);
    json_decref(st->req);
    st->req = NULL;
    json_decref(st->body);
    st->body = NULL;
    if (!st->op) {
        if (st->new_session) /* never announced: nobody can retry in it */
            forget_session(st);
        r->on_close = NULL;
        stream_free(st);
        api_reply_detail(r, 503, "Service temporarily unavailable");
        return;
    }
    api_sse_on_drain(r, on_stream_drain);
    api_sse_start(r);
    sse_json(r, proto_sse_session(st->session_id));
    st->heartbeat = event_new(r->srv->base, -1, EV_PERSIST, on_heartbeat, st);
    struct timeval tv = {HEARTBEAT_S, 0};
    if (st->heartbeat)
        event_add(st->heartbeat, &tv);
    log_info(r->rid, "event=stream_start model=%s new_session=%d", st->model, st->new_session);
}

static void post_stream(api_req *r)
{
    json_t *body = api_body_json(r);
    stream_st *st = NULL;
    if (!body)
        return;
    if (!check_stream_body(r, body))
        goto out;
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model_known(model)) {
        invalid_model(r);
        goto out;
    }
    st = calloc(1, sizeof *st);
    if (!st) {
        api_reply_detail(r, 503, "Service busy, please retry");
        goto out;
    }
    st->r = r;
    st->srv = r->srv;
    snprintf(st->model, sizeof st->model, "%s", model);
    if (!take_stream_slot(r, st))
        goto out;
    st->body = body;
    st->max_request = ec_max_request(r->srv->ec);
    api_req_hold(r, on_stream_close, st);
    api_db_job(r, stream_prepare, stream_begin, 0); /* st is the request's now */
    return;
out:
    if (st)
        stream_free(st);
    json_decref(body);
}

const route ROUTES_STREAM[] = {
    {EVHTTP_REQ_POST, P "/encrypted/stream", post_stream, ROUTE_AUTH},
};
const size_t N_ROUTES_STREAM = sizeof ROUTES_STREAM / sizeof ROUTES_STREAM[0];

/* routes_chat — /api/v1/chat: models, sessions, messages, the encrypted SSE
 * stream, enclave info and health, encryption status (spec §4.2, §4.3). */
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/hex.h"
#include "server/http/models.h"
#include "server/server_int.h"
#include "server/http/validate.h"

#define P "/api/v1/chat"
#define HEARTBEAT_S 15
#define NOT_FOUND_SESSION "Session not found or access denied"
#define STREAM_RETRY_AFTER "5" /* seconds: streams last seconds to minutes */

/* ---- shapes ---- */

static json_t *jstr_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

static json_t *session_json(const session_row *s)
{
    return json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "id", s->id, "user_id", s->user_id, "org_id",
                     jstr_or_null(s->org_id), "name", s->name ? s->name : "New Chat", "created_at",
                     s->created_at ? s->created_at : "", "updated_at", s->updated_at ? s->updated_at : "");
}

static json_t *message_json(const message_row *m)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:s, s:{s:s, s:s, s:s, s:s, s:s}}", "id", m->id, "session_id",
                     m->session_id, "role", m->role, PF_MODEL_USED, jstr_or_null(m->model_used),
                     "created_at", m->created_at ? m->created_at : "", PF_ENCRYPTED_CONTENT,
                     "ephemeral_public_key", m->ephemeral_public_key, "iv", m->iv, "ciphertext",
                     m->ciphertext, "auth_tag", m->auth_tag, "hkdf_salt", m->hkdf_salt);
    /* veil's: the client's tag over the exchange, on its assistant message (original
     * clients ignore the field) */
    if (o && m->history_tag)
        json_object_set_new(o, PF_HISTORY_TAG, json_string(m->history_tag));
    return o;
}

static const char *ctx_org(const api_req *r)
{
    return jwt_auth_is_org(&r->auth) ? r->auth.org_id : NULL;
}

/* The session, if it belongs to the caller and to the caller's current context. */
static store_rc own_session(api_req *r, const char *id, session_row *out)
{
    store_rc rc = store_session_get(r->srv->db, id, out);
    if (rc != STORE_OK)
        return rc;
    const char *org = ctx_org(r);
    bool same_ctx = org ? (out->org_id && strcmp(out->org_id, org) == 0) : out->org_id == NULL;
    if (strcmp(out->user_id, r->auth.user_id) != 0 || !same_ctx) {
        session_row_free(out);
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

/* own_session, answering 404 or 500 itself when there is no such session. */
static bool session_or_reply(api_req *r, const char *id, session_row *out)
{
    store_rc rc = own_session(r, id, out);
    if (rc == STORE_NOT_FOUND)
        api_reply_detail(r, 404, NOT_FOUND_SESSION);
    else if (rc != STORE_OK)
        api_store_error(r, "session_get");
    return rc == STORE_OK;
}

/* verify_can_send_encrypted (spec §6.2): NULL when allowed, else the 400 text.
 * storage_key receives the key messages are stored under (user's or org's). */
static const char *can_send(api_req *r, char storage_key[65], store_rc *err)
{
    store *db = r->srv->db;
    user_row u;
    *err = STORE_OK;
    store_rc rc = store_user_get(db, r->auth.user_id, &u);
    if (rc == STORE_NOT_FOUND)
        return "User not found";
    if (rc != STORE_OK) {
        *err = rc;
        return NULL;
    }
    bool has_keys = u.has_encryption_keys && u.keys.public_key;
    if (has_keys && !jwt_auth_is_org(&r->auth))
        snprintf(storage_key, 65, "%s", u.keys.public_key);
    user_row_free(&u);
    if (!has_keys)
        return "User has not set up encryption keys";
    if (!jwt_auth_is_org(&r->auth))
        return NULL;
    org_row o;
    rc = store_org_get(db, r->auth.org_id, &o);
    if (rc == STORE_NOT_FOUND)
        return "Organization not found";
    if (rc != STORE_OK) {
        *err = rc;
        return NULL;
    }
    bool org_keys = o.has_encryption_keys && o.org_public_key;
    if (org_keys)
        snprintf(storage_key, 65, "%s", o.org_public_key);
    org_row_free(&o);
    if (!org_keys)
        return "Organization encryption not set up";
    membership_row m;
    rc = store_membership_get(db, r->auth.user_id, r->auth.org_id, &m);
    if (rc == STORE_NOT_FOUND)
        return "User is not a member of this organization";
    if (rc != STORE_OK) {
        *err = rc;
        return NULL;
    }
    bool has_org_key = m.has_org_key;
    membership_row_free(&m);
    return has_org_key ? NULL : "User does not have the organization key distributed";
}

/* ---- simple routes ---- */

static void get_models(api_req *r)
{
    json_t *a = json_array();
    for (size_t i = 0; i < N_MODELS; i++)
        json_array_append_new(a, json_pack("{s:s, s:s}", "id", MODELS[i].id, "name", MODELS[i].name));
    api_reply_json(r, 200, a);
}

/* GET /enclave/info: the key and, beside it (H), an attestation document that binds
 * it: with ?nonce=<hex> a fresh one for that nonce (bounded per user and in total),
 * without one a document at most EC_ATTEST_CACHE_S old (the original's clients and
 * monitoring stay cheap). "attestation" is null when the enclave has no NSM. */
static void info_close(api_req *r)
{
    ec_op_cancel(r->state);
}

static void on_info_attestation(void *ud, enclave_err err, const char *doc, const char *pub, const char *nsm_name)
{
    api_req *r = ud;
    (void)nsm_name;
    bool fresh = api_query(r, "nonce") != NULL;
    if (err == ENCLAVE_OK) {
        api_reply_json(r, 200, json_pack("{s:s, s:s}", "enclave_public_key", pub, PF_ATTESTATION, doc));
        return;
    }
    const char *pk = ec_public_key(r->srv->ec);
    if (err == ENCLAVE_ERR_NO_ATTESTATION && !fresh && pk) { /* the original's shape */
        api_reply_json(r, 200, json_pack("{s:s, s:n}", "enclave_public_key", pk, PF_ATTESTATION));
        return;
    }
    log_info(r->rid, "event=attestation_unavailable code=%s", enclave_err_name(err));
    api_reply_detail(r, 503, err == ENCLAVE_ERR_NO_ATTESTATION ? "The enclave cannot attest its key (no NSM)"
                                                                : "Enclave not available");
}

static bool attest_rate_ok(api_req *r)
{
    unsigned wait = ul_take_request(r->srv->attest_user, r->auth.user_id);
    if (wait == 0)
        wait = ul_take_request(r->srv->attest_all, "*");
    if (wait == 0)
        return true;
    char secs[16];
    snprintf(secs, sizeof secs, "%u", wait);
    api_add_header(r, "Retry-After", secs);
    api_reply_detail(r, 429, "Too many attestation requests, please retry shortly");
    return false;
}

static void get_enclave_info(api_req *r)
{
    enclave_client *ec = r->srv->ec;
    const char *nonce_hex = api_query(r, "nonce");
    ec_op *op = NULL;
    if (nonce_hex) {
        uint8_t nonce[PROTO_NONCE_MAX];
        size_t n = strlen(nonce_hex);
        if (n == 0 || n % 2 || n / 2 > PROTO_NONCE_MAX || hex_decode_exact(nonce_hex, n, nonce, n / 2) < 0) {
            const char *loc[] = {"query", "nonce"};
            api_reply_422(r, "value_error", loc, 2, "Value error, the nonce must be 1 to 1024 bytes of hex", NULL);
            return;
        }
        if (!attest_rate_ok(r))
            return;
        op = ec_get_attestation(ec, nonce, n / 2, on_info_attestation, r);
    } else {
        if (!ec_public_key(ec)) {
            api_reply_detail(r, 503, "Enclave not available");
            return;
        }
        op = ec_cached_attestation(ec, on_info_attestation, r);
        if (r->replied) /* from the cache, already answered */
            return;
    }
    if (!op) {
        api_reply_detail(r, 503, "Enclave not available");
        return;
    }
    api_req_hold(r, info_close, op);
}

static void health_close(api_req *r)
{
    ec_op_cancel(r->state);
}

static void on_health(void *ud, const ec_health_result *h)
{
    api_req *r = ud;
    enclave_client *ec = r->srv->ec;
    bool nitro = strcmp(ec_mode_name(ec), "nitro") == 0;
    json_t *o;
    if (h->ok) {
        o = json_pack("{s:s, s:s}", "status", "healthy", "mode", ec_mode_name(ec));
        if (nitro) {
            json_object_set_new(o, "enclave_cid", json_integer(ec_cid(ec)));
            json_object_set_new(o, "has_credentials", json_boolean(h->has_credentials));
            json_object_set_new(o, "region", json_string(h->region));
        } else {
            char prefix[24];
            const char *pk = ec_public_key(ec);
            snprintf(prefix, sizeof prefix, "%.16s...", pk ? pk : "");
            json_object_set_new(o, "public_key", json_string(prefix));
        }
    } else {
        o = json_pack("{s:s, s:s, s:s}", "status", "unhealthy", "mode", ec_mode_name(ec), "error", h->error);
        if (nitro)
            json_object_set_new(o, "enclave_cid", json_integer(ec_cid(ec)));
    }
    /* 503 when unhealthy, so load balancers act on it (defect §10.15) */
    api_reply_json(r, h->ok ? 200 : 503, o);
}

static void get_enclave_health(api_req *r)
{
    ec_op *op = ec_health(r->srv->ec, on_health, r);
    if (!op) {
        api_reply_detail(r, 503, "Enclave not available");
        return;
    }
    api_req_hold(r, health_close, op); /* never blocks the loop (defect §10.15) */
}

static void get_encryption_status(api_req *r)
{
    char key[65];
    store_rc err;
    const char *why = can_send(r, key, &err);
    if (err != STORE_OK) {
        api_store_error(r, "encryption_status");
        return;
    }
    api_reply_json(r, 200, json_pack("{s:b, s:o, s:s, s:o}", "can_send_encrypted", why == NULL, "error",
                                     jstr_or_null(why), "context",
                                     jwt_auth_is_org(&r->auth) ? "organization" : "personal", "org_id",
                                     jstr_or_null(ctx_org(r))));
}

static void create_session(api_req *r)
{
    json_t *body = api_body_json(r);
    if (!body)
        return;
    if (!v_object(r, body))
        goto out;
    const json_t *jn = json_object_get(body, "name"), *jo = json_object_get(body, "org_id");
    if ((jn && !json_is_null(jn) && !json_is_string(jn)) || (jo && !json_is_null(jo) && !json_is_string(jo))) {
        static const char *const loc[] = {"body"};
        api_reply_422(r, "string_type", loc, 1, "Input should be a valid string", body);
        goto out;
    }
    const char *name = json_is_string(jn) ? json_string_value(jn) : "New Chat";
    const char *org = json_is_string(jo) && json_string_length(jo) ? json_string_value(jo) : ctx_org(r);
    store *db = r->srv->db;
    user_row u;
    store_rc rc = store_user_get(db, r->auth.user_id, &u);
    char msg[600];
    if (rc == STORE_NOT_FOUND) {
        snprintf(msg, sizeof msg, "User %s not found", r->auth.user_id);
        api_reply_detail(r, 400, msg);
        goto out;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "user_get");
        goto out;
    }
    user_row_free(&u);
    if (org) {
        membership_row m;
        rc = store_membership_get(db, r->auth.user_id, org, &m);
        if (rc == STORE_NOT_FOUND) {
            snprintf(msg, sizeof msg, "User %s is not a member of org %s", r->auth.user_id, org);
            api_reply_detail(r, 400, msg);
            goto out;
        }
        if (rc != STORE_OK) {
            api_store_error(r, "membership_get");
            goto out;
        }
        membership_row_free(&m);
    }
    char id[37];
    store_uuid(id);
    session_row s;
    rc = store_session_create(db, id, r->auth.user_id, org, name, &s);
    if (rc != STORE_OK) {
        api_store_error(r, "session_create");
        goto out;
    }
    api_reply_json(r, 200, session_json(&s));
    session_row_free(&s);
out:
    json_decref(body);
}

static bool query_int(api_req *r, const char *name, long def, long min, long max, long *out)
{
    const char *v = api_query(r, name);
    *out = def;
    if (!v)
        return true;
    if (parse_long(v, LONG_MIN, LONG_MAX, out) < 0) {
        const char *loc[] = {"query", name};
        api_reply_422(r, "int_parsing", loc, 2,
                      "Input should be a valid integer, unable to parse string as an integer", NULL);
        return false;
    }
    if (*out < min || *out > max) {
        char msg[80];
        const char *loc[] = {"query", name};
        if (*out < min)
            snprintf(msg, sizeof msg, "Input should be greater than or equal to %ld", min);
        else
            snprintf(msg, sizeof msg, "Input should be less than or equal to %ld", max);
        api_reply_422(r, *out < min ? "greater_than_equal" : "less_than_equal", loc, 2, msg, NULL);
        return false;
    }
    return true;
}

static void list_sessions(api_req *r)
{
    long limit, offset, total = 0;
    if (!query_int(r, "limit", 50, 1, 100, &limit) || !query_int(r, "offset", 0, 0, INT_MAX, &offset))
        return;
    session_row *rows = NULL;
    size_t n = 0;
    if (store_sessions_list(r->srv->db, r->auth.user_id, ctx_org(r), (int)limit, (int)offset, &rows, &n,
                            &total) != STORE_OK) {
        api_store_error(r, "sessions_list");
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, session_json(&rows[i]));
    session_list_free(rows, n);
    api_reply_json(r, 200, json_pack("{s:o, s:I, s:I, s:I}", "sessions", a, "total", (json_int_t)total,
                                     "limit", (json_int_t)limit, "offset", (json_int_t)offset));
}

static void get_messages(api_req *r)
{
    session_row s;
    if (!session_or_reply(r, r->params[0], &s))
        return;
    message_row *rows = NULL;
    size_t n = 0;
    if (store_messages_list(r->srv->db, s.id, &rows, &n) != STORE_OK) {
        session_row_free(&s);
        api_store_error(r, "messages_list");
        return;
    }
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, message_json(&rows[i]));
    message_list_free(rows, n);
    api_reply_json(r, 200, json_pack("{s:s, s:o}", "session_id", s.id, "messages", a));
    session_row_free(&s);
}

/* PUT .../sessions/{id}/messages/{message_id}/history-tag {"history_tag": 64 hex}:
 * a format-3 client's tag over a stored exchange (set once; veild only keeps it). */
static void put_history_tag(api_req *r)
{
    json_t *body = api_body_json(r);
    if (!body)
        return;
    session_row s;
    if (!v_object(r, body) || !v_hex(r, body, NULL, NULL, PF_HISTORY_TAG, 64, 0) ||
        !session_or_reply(r, r->params[0], &s))
        goto out;
    store_rc rc = store_message_set_tag(r->srv->db, s.id, r->params[1],
                                        json_string_value(json_object_get(body, PF_HISTORY_TAG)));
    session_row_free(&s);
    if (rc == STORE_NOT_FOUND)
        api_reply_detail(r, 404, "Message not found in this session");
    else if (rc == STORE_CONFLICT)
        api_reply_detail(r, 409, "The message has its history tag already");
    else if (rc != STORE_OK)
        api_store_error(r, "message_set_tag");
    else
        api_reply_json(r, 200, json_pack("{s:s}", "status", "tagged"));
out:
    json_decref(body);
}

static void delete_session(api_req *r)
{
    session_row s;
    if (!session_or_reply(r, r->params[0], &s))
        return;
    store *db = r->srv->db;
    json_t *data = json_pack("{s:s}", "session_id", s.id);
    store_rc rc = store_begin(db);
    if (rc == STORE_OK)
        rc = store_audit(db, "session_deleted", r->auth.user_id, NULL, s.org_id, data);
    if (rc == STORE_OK)
        rc = store_session_delete(db, s.id);
    rc = rc == STORE_OK ? store_commit(db) : (store_rollback(db), rc);
    json_decref(data);
    session_row_free(&s);
    if (rc != STORE_OK) {
        api_store_error(r, "session_delete");
        return;
    }
    api_reply_empty(r, 204);
}

static void delete_all_sessions(api_req *r)
{
    store *db = r->srv->db;
    char **ids = NULL;
    size_t n = 0;
    store_rc rc = store_begin(db);
    if (rc == STORE_OK)
        rc = store_sessions_delete_all(db, r->auth.user_id, ctx_org(r), 10000, &ids, &n);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        json_t *data = json_pack("{s:s}", "session_id", ids[i]);
        rc = store_audit(db, "session_deleted", r->auth.user_id, NULL, ctx_org(r), data);
        json_decref(data);
    }
    rc = rc == STORE_OK ? store_commit(db) : (store_rollback(db), rc);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    if (rc != STORE_OK) {
        api_store_error(r, "sessions_delete_all");
        return;
    }
    api_reply_json(r, 200, json_pack("{s:I}", "deleted_count", (json_int_t)n));
}

/* ---- POST /encrypted/stream ---- */

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
} stream_st;

static void stream_free(stream_st *st)
{
    if (st->heartbeat)
        event_free(st->heartbeat);
    if (st->holds_slot)
        ul_stream_release(st->srv->limits, st->user_id);
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
    um.role = (char *)"user";
    um.model_used = st->model;
    um.input_tokens = um.output_tokens = -1;
    am.role = (char *)"assistant";
    am.model_used = (char *)(f->model_used ? f->model_used : st->model);
    am.input_tokens = f->input_tokens;
    am.output_tokens = f->output_tokens;
    /* both messages in one transaction, only now that the enclave finished */
    store_rc rc = store_chat_commit(r->srv->db, NULL, st->session_id, &um, &am);
    /* the commit filled ids/timestamps it allocated (freed below); the EPs are borrowed */
    if (rc == STORE_OK) {
        log_info(r->rid, "event=stream_stored chunks=%u in_tokens=%ld out_tokens=%ld", st->chunks,
                 f->input_tokens, f->output_tokens);
        sse_json(r, proto_sse_stored(am.model_used, f->input_tokens, f->output_tokens, ev->stream_end, um.id, am.id));
    }
    free(um.id);
    free(um.created_at);
    free(um.session_id);
    free(am.id);
    free(am.created_at);
    free(am.session_id);
    if (rc != STORE_OK) {
        log_error(r->rid, "event=store_error op=chat_commit detail=\"%s\"", store_last_error(r->srv->db));
        stream_fail(st, "Failed to store the messages");
        return;
    }
    sse_json(r, proto_sse_done());
    stream_end(st);
}

static void on_stream_event(void *ud, const proto_event *ev)
{
    stream_st *st = ud;
    if (ev->kind == PROTO_EV_FINAL) { /* parsed first: whatever else it carries, it ends the stream */
        st->op = NULL; /* the enclave client finishes the op after this returns */
        on_final(st, ev);
        return;
    }
    if (ev->kind == PROTO_EV_CHUNK || ev->kind == PROTO_EV_CHUNK_V2)
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
                               const char *session_id)
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
                                        client_key, storage_key, model, session_id, format);
        json_decref(empty);
    }
    char *line = req ? json_dumps(req, JSON_COMPACT) : NULL;
    size_t len = line ? strlen(line) + 1 : 0, max = ec_max_request(r->srv->ec);
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

static void post_stream(api_req *r)
{
    json_t *body = api_body_json(r);
    stream_st *st = NULL;
    json_t *req = NULL;
    if (!body)
        return;
    if (!check_stream_body(r, body))
        goto out;
    const char *model = json_string_value(json_object_get(body, "model"));
    if (!model_known(model)) {
        invalid_model(r);
        goto out;
    }
    char storage_key[65] = "";
    store_rc err;
    const char *why = can_send(r, storage_key, &err);
    if (err != STORE_OK) {
        api_store_error(r, "can_send");
        goto out;
    }
    if (why) {
        api_reply_detail(r, 400, why);
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
    const json_t *sid = json_object_get(body, "session_id");
    if (json_is_string(sid) && json_string_length(sid)) {
        session_row s;
        if (!session_or_reply(r, json_string_value(sid), &s))
            goto out;
        snprintf(st->session_id, sizeof st->session_id, "%s", s.id);
        session_row_free(&s);
    } else {
        store_uuid(st->session_id);
        st->new_session = true;
    }
    if (!(req = enclave_request(r, body, model, storage_key, st->session_id)))
        goto out;
    if (st->new_session) {
        /* the row exists from the first event on, as in the original: the client lists
         * it and may retry in it; its messages are stored only when a stream completes */
        session_row s;
        if (store_session_create(r->srv->db, st->session_id, r->auth.user_id, ctx_org(r), "New Chat", &s) !=
            STORE_OK) {
            api_store_error(r, "session_create");
            goto out;
        }
        session_row_free(&s);
    }
    static const ec_stream_callbacks cb = {on_stream_event, on_stream_end};
    st->op = ec_chat_stream(r->srv->ec, req, &cb, st);
    if (!st->op) {
        if (st->new_session) /* never announced: nobody can retry in it */
            store_session_delete(r->srv->db, st->session_id);
        api_reply_detail(r, 503, "Service temporarily unavailable");
        goto out;
    }
    api_req_hold(r, on_stream_close, st);
    api_sse_on_drain(r, on_stream_drain);
    api_sse_start(r);
    sse_json(r, proto_sse_session(st->session_id));
    st->heartbeat = event_new(r->srv->base, -1, EV_PERSIST, on_heartbeat, st);
    struct timeval tv = {HEARTBEAT_S, 0};
    if (st->heartbeat)
        event_add(st->heartbeat, &tv);
    log_info(r->rid, "event=stream_start model=%s new_session=%d", model, st->new_session);
    st = NULL; /* owned by the held request now */
out:
    if (st)
        stream_free(st);
    json_decref(req);
    json_decref(body);
}

const route ROUTES_CHAT[] = {
    {EVHTTP_REQ_GET, P "/models", get_models, 0},
    {EVHTTP_REQ_GET, P "/enclave/info", get_enclave_info, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/enclave/health", get_enclave_health, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/encryption-status", get_encryption_status, ROUTE_AUTH},
    {EVHTTP_REQ_POST, P "/sessions", create_session, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/sessions", list_sessions, ROUTE_AUTH},
    {EVHTTP_REQ_DELETE, P "/sessions", delete_all_sessions, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/sessions/{}/messages", get_messages, ROUTE_AUTH},
    {EVHTTP_REQ_PUT, P "/sessions/{}/messages/{}/history-tag", put_history_tag, ROUTE_AUTH},
    {EVHTTP_REQ_DELETE, P "/sessions/{}", delete_session, ROUTE_AUTH},
    {EVHTTP_REQ_POST, P "/encrypted/stream", post_stream, ROUTE_AUTH},
};
const size_t N_ROUTES_CHAT = sizeof ROUTES_CHAT / sizeof ROUTES_CHAT[0];

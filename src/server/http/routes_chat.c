/* routes_chat — /api/v1/chat: models, sessions, messages and their history tags,
 * enclave info and health, encryption status (spec §4.2, §4.3). The encrypted SSE
 * stream is routes_stream.c's. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/hex.h"
#include "server/http/models.h"
#include "server/http/routes_util.h"
#include "server/http/validate.h"

#define P "/api/v1/chat"

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
    const char *why = ru_can_send(r, key, &err);
    if (err != STORE_OK) {
        api_store_error(r, "encryption_status");
        return;
    }
    api_reply_json(r, 200, json_pack("{s:b, s:o, s:s, s:o}", "can_send_encrypted", why == NULL, "error",
                                     jstr_or_null(why), "context",
                                     jwt_auth_is_org(&r->auth) ? "organization" : "personal", "org_id",
                                     jstr_or_null(ru_ctx_org(r))));
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
    const char *org = json_is_string(jo) && json_string_length(jo) ? json_string_value(jo) : ru_ctx_org(r);
    store *db = r->db;
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
    if (store_sessions_list(r->db, r->auth.user_id, ru_ctx_org(r), (int)limit, (int)offset, &rows, &n,
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
    if (!ru_session_or_reply(r, r->params[0], &s))
        return;
    message_row *rows = NULL;
    size_t n = 0;
    if (store_messages_list(r->db, s.id, &rows, &n) != STORE_OK) {
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
        !ru_session_or_reply(r, r->params[0], &s))
        goto out;
    store_rc rc = store_message_set_tag(r->db, s.id, r->params[1],
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
    if (!ru_session_or_reply(r, r->params[0], &s))
        return;
    store *db = r->db;
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
    store *db = r->db;
    char **ids = NULL;
    size_t n = 0;
    store_rc rc = store_begin(db);
    if (rc == STORE_OK)
        rc = store_sessions_delete_all(db, r->auth.user_id, ru_ctx_org(r), 10000, &ids, &n);
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        json_t *data = json_pack("{s:s}", "session_id", ids[i]);
        rc = store_audit(db, "session_deleted", r->auth.user_id, NULL, ru_ctx_org(r), data);
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


const route ROUTES_CHAT[] = {
    {EVHTTP_REQ_GET, P "/models", get_models, 0},
    {EVHTTP_REQ_GET, P "/enclave/info", get_enclave_info, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/enclave/health", get_enclave_health, ROUTE_AUTH},
    {EVHTTP_REQ_GET, P "/encryption-status", get_encryption_status, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/sessions", create_session, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/sessions", list_sessions, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_DELETE, P "/sessions", delete_all_sessions, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/sessions/{}/messages", get_messages, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_PUT, P "/sessions/{}/messages/{}/history-tag", put_history_tag, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_DELETE, P "/sessions/{}", delete_session, ROUTE_AUTH | ROUTE_DB},
};
const size_t N_ROUTES_CHAT = sizeof ROUTES_CHAT / sizeof ROUTES_CHAT[0];

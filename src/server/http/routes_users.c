/* routes_users — /api/v1/users (spec §4.4): user sync, the personal key
 * material (stored wrapped, never opened here), public keys and memberships.
 * Every key write and every recovery fetch leaves an audit row.
 */
#include <strings.h>

#include "server/http/routes_util.h"
#include "server/http/validate.h"

#define P "/api/v1/users"

/* CreateUserKeysRequest: lengths of the hex fields (all lower-cased) */
static const ru_hex_field USER_KEY_FIELDS[] = {
    {"public_key", 64, 0},
    {"encrypted_private_key", 0, 1},
    {"iv", 32, 0},
    {"tag", 32, 0},
    {"salt", 64, 0},
    {"recovery_encrypted_private_key", 0, 1},
    {"recovery_iv", 32, 0},
    {"recovery_tag", 32, 0},
    {"recovery_salt", 64, 0},
};

static void post_sync(api_req *r)
{
    store_rc rc = store_user_create(r->db, r->auth.user_id);
    if (rc != STORE_OK && rc != STORE_CONFLICT) {
        api_store_error(r, "user_create");
        return;
    }
    ru_reply(r, 200, json_pack("{s:s, s:s}", "status", rc == STORE_OK ? "created" : "exists", "user_id",
                               r->auth.user_id));
}

static void get_encryption_status(api_req *r)
{
    user_row u = {0};
    store_rc rc = store_user_get(r->db, r->auth.user_id, &u);
    if (rc == STORE_NOT_FOUND) {
        ru_reply(r, 200, json_pack("{s:b, s:n, s:n}", "has_encryption_keys", 0, "public_key",
                                   "encryption_created_at"));
        return;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "user_get");
        return;
    }
    ru_reply(r, 200, json_pack("{s:b, s:s?, s:s?}", "has_encryption_keys", u.has_encryption_keys, "public_key",
                               u.keys.public_key, "encryption_created_at", u.encryption_created_at));
    user_row_free(&u);
}

static const char *str_of(const json_t *body, const char *name)
{
    return json_string_value(json_object_get(body, name));
}

static bool valid_keys_request(api_req *r, json_t *body)
{
    /* a low-order public key was accepted (201), and every later chat of that user
     * ended in "Internal error": nothing can be sealed to it (F0) */
    return v_object(r, body) &&
           ru_hex_fields(r, body, USER_KEY_FIELDS, sizeof USER_KEY_FIELDS / sizeof USER_KEY_FIELDS[0]) &&
           v_x25519_key(r, body, NULL, "public_key");
}

/* The request's fields, borrowed from body. */
static user_keys keys_of(const json_t *body)
{
    return (user_keys){
        .public_key = (char *)str_of(body, "public_key"),
        .encrypted_private_key = (char *)str_of(body, "encrypted_private_key"),
        .iv = (char *)str_of(body, "iv"),
        .tag = (char *)str_of(body, "tag"),
        .salt = (char *)str_of(body, "salt"),
        .recovery_encrypted_private_key = (char *)str_of(body, "recovery_encrypted_private_key"),
        .recovery_iv = (char *)str_of(body, "recovery_iv"),
        .recovery_tag = (char *)str_of(body, "recovery_tag"),
        .recovery_salt = (char *)str_of(body, "recovery_salt"),
    };
}

/* POST and PUT /users/me/keys: the body, validated, its fields in *k (borrowed from
 * it) and a transaction begun; NULL after a reply. */
static json_t *begin_keys_request(api_req *r, user_keys *k)
{
    json_t *body = api_body_json(r);
    if (body && valid_keys_request(r, body) && ru_begin(r)) {
        *k = keys_of(body);
        return body;
    }
    json_decref(body);
    return NULL;
}

static void post_keys(api_req *r)
{
    user_keys k;
    json_t *body = begin_keys_request(r, &k);
    if (!body)
        return;
    const char *uid = r->auth.user_id;
    /* keys are created once; a passcode change or a recovery replaces them with PUT */
    store_rc rc = store_user_set_keys(r->db, uid, &k, false);
    if (rc == STORE_NOT_FOUND) {
        ru_abort(r, 400, "User %s not found", uid);
        goto out;
    }
    if (rc == STORE_CONFLICT) {
        ru_abort(r, 409, "User already has encryption keys");
        goto out;
    }
    if (rc != STORE_OK) {
        ru_fail(r, "user_set_keys");
        goto out;
    }
    if (ru_audit_commit(r, "user_keys_created", uid, uid, NULL, NULL))
        ru_reply(r, 201, json_pack("{s:s, s:s}", "status", "created", "public_key", k.public_key));
out:
    json_decref(body);
}

/* Why a replace matched no row: 400 unknown user, 404 no keys, 409 another key pair. */
static void replace_refused(api_req *r, const char *public_key)
{
    user_row u = {0};
    store_rc rc = store_user_get(r->db, r->auth.user_id, &u);
    if (rc == STORE_NOT_FOUND)
        ru_detailf(r, 400, "User %s not found", r->auth.user_id);
    else if (rc != STORE_OK)
        api_store_error(r, "user_get");
    else if (!u.has_encryption_keys || !u.keys.public_key)
        api_reply_detail(r, 404, "User has no encryption keys");
    else if (strcasecmp(u.keys.public_key, public_key) != 0)
        /* another pair would leave every stored conversation unreadable */
        api_reply_detail(r, 409, "Public key does not match the stored key");
    else /* the row changed between the write and this read: the client retries */
        api_reply_detail(r, 409, "The keys changed during the request; try again");
    if (rc == STORE_OK)
        user_row_free(&u);
}

/* Replaces both wrapped copies of the same key pair at once. The original had
 * no such route, so its clients changed a passcode with DELETE then POST and
 * lost the key pair (and every conversation) when the POST failed. */
static void put_keys(api_req *r)
{
    user_keys k;
    json_t *body = begin_keys_request(r, &k);
    if (!body)
        return;
    const char *uid = r->auth.user_id;
    store_rc rc = store_user_replace_keys(r->db, uid, &k);
    if (rc == STORE_NOT_FOUND) {
        if (store_rollback(r->db) != STORE_OK) {
            api_store_error(r, "rollback");
            goto out;
        }
        replace_refused(r, k.public_key);
        goto out;
    }
    if (rc != STORE_OK) {
        ru_fail(r, "user_replace_keys");
        goto out;
    }
    if (ru_audit_commit(r, "user_keys_recovered", uid, uid, NULL, NULL))
        ru_reply(r, 200, json_pack("{s:s, s:s}", "status", "replaced", "public_key", k.public_key));
out:
    json_decref(body);
}

/* The caller's row with keys, or a reply: 400 unknown user, 404 no keys. */
static bool load_keys(api_req *r, user_row *u)
{
    store_rc rc = store_user_get(r->db, r->auth.user_id, u);
    if (rc == STORE_NOT_FOUND) {
        ru_detailf(r, 400, "User %s not found", r->auth.user_id);
        return false;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "user_get");
        return false;
    }
    if (!u->has_encryption_keys || !u->keys.public_key) {
        user_row_free(u);
        api_reply_detail(r, 404, "User has no encryption keys");
        return false;
    }
    return true;
}

static void get_keys(api_req *r)
{
    user_row u = {0};
    if (!load_keys(r, &u))
        return;
    const user_keys *k = &u.keys;
    ru_reply(r, 200, ru_user_keys_json(k->public_key, k->encrypted_private_key, k->iv, k->tag, k->salt));
    user_row_free(&u);
}

static void get_recovery_keys(api_req *r)
{
    user_row u = {0};
    if (!load_keys(r, &u))
        return;
    const user_keys *k = &u.keys;
    if (!k->recovery_encrypted_private_key) {
        api_reply_detail(r, 404, "User has no recovery keys");
        goto out;
    }
    /* the fetch is audited before the material leaves: no audit row, no keys */
    if (store_audit(r->db, "recovery_keys_fetched", r->auth.user_id, r->auth.user_id, NULL, NULL) !=
        STORE_OK) {
        api_store_error(r, "audit");
        goto out;
    }
    /* the primary fields carry the recovery material (the original's shape) */
    ru_reply(r, 200, ru_user_keys_json(k->public_key, k->recovery_encrypted_private_key, k->recovery_iv,
                                       k->recovery_tag, k->recovery_salt));
out:
    user_row_free(&u);
}

static void delete_keys(api_req *r)
{
    user_row u = {0};
    const char *uid = r->auth.user_id;
    store_rc rc = store_user_get(r->db, uid, &u);
    if (rc == STORE_NOT_FOUND) {
        api_reply_empty(r, 204);
        return;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "user_get");
        return;
    }
    bool had = u.has_encryption_keys;
    user_row_free(&u);
    if (!had) {
        api_reply_empty(r, 204);
        return;
    }
    if (!ru_begin(r))
        return;
    if (store_user_clear_keys(r->db, uid) != STORE_OK) {
        ru_fail(r, "user_clear_keys");
        return;
    }
    if (ru_audit_commit(r, "user_keys_deleted", uid, uid, NULL, NULL))
        api_reply_empty(r, 204);
}

static void get_public_key(api_req *r)
{
    const char *uid = r->params[0];
    user_row u = {0};
    store_rc rc = store_user_get(r->db, uid, &u);
    if (rc != STORE_OK && rc != STORE_NOT_FOUND) {
        api_store_error(r, "user_get");
        return;
    }
    if (rc == STORE_NOT_FOUND || !u.has_encryption_keys || !u.keys.public_key)
        api_reply_detail(r, 404, "User has no public key");
    else
        ru_reply(r, 200, json_pack("{s:s, s:s}", "user_id", uid, "public_key", u.keys.public_key));
    if (rc == STORE_OK)
        user_row_free(&u);
}

static void get_memberships(api_req *r)
{
    json_t *arr = ru_memberships(r, r->auth.user_id, NULL, ru_membership_json);
    if (arr)
        ru_reply(r, 200, json_pack("{s:o}", "memberships", arr));
}

const route ROUTES_USERS[] = {
    {EVHTTP_REQ_POST, P "/sync", post_sync, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/me/encryption-status", get_encryption_status, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/me/keys", post_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_PUT, P "/me/keys", put_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/me/keys", get_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_DELETE, P "/me/keys", delete_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/me/keys/recovery", get_recovery_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/me/memberships", get_memberships, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/public-key", get_public_key, ROUTE_AUTH | ROUTE_DB},
};
const size_t N_ROUTES_USERS = sizeof ROUTES_USERS / sizeof ROUTES_USERS[0];

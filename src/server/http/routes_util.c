#include "server/http/routes_util.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "crypto/ep.h"
#include "server/http/validate.h"

/* ---- replies ---- */

void ru_reply(api_req *r, int status, json_t *body)
{
    if (!body) {
        log_error(r->rid, "event=reply_build_failed path=%s", r->path);
        api_reply_detail(r, 500, "Internal server error");
        return;
    }
    api_reply_json(r, status, body);
}

static void detail_v(api_req *r, int status, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
static void detail_v(api_req *r, int status, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    api_reply_detail(r, status, buf);
}

void ru_detailf(api_req *r, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    detail_v(r, status, fmt, ap);
    va_end(ap);
}

/* ---- JSON views of rows ---- */

json_t *ru_str(const char *s)
{
    return s ? json_string(s) : json_null();
}

json_t *ru_ep_json(const org_key_ep *k)
{
    if (!k->ciphertext)
        return json_null();
    const char *col[EP_N_FIELDS] = {
        [EP_FIELD_EPK] = k->ephemeral_public_key, [EP_FIELD_IV] = k->iv, [EP_FIELD_CT] = k->ciphertext,
        [EP_FIELD_TAG] = k->auth_tag,             [EP_FIELD_SALT] = k->hkdf_salt,
    };
    json_t *j = json_object();
    for (size_t i = 0; j && i < EP_N_FIELDS; i++)
        if (json_object_set_new(j, EP_FIELDS[i].name, ru_str(col[i])) < 0) {
            json_decref(j);
            j = NULL;
        }
    return j;
}

void ru_ep_borrow(const json_t *payload, org_key_ep *out)
{
    char **col[EP_N_FIELDS] = {
        [EP_FIELD_EPK] = &out->ephemeral_public_key, [EP_FIELD_IV] = &out->iv,
        [EP_FIELD_CT] = &out->ciphertext,           [EP_FIELD_TAG] = &out->auth_tag,
        [EP_FIELD_SALT] = &out->hkdf_salt,
    };
    /* the casts only drop const: the strings stay owned by payload */
    for (size_t i = 0; i < EP_N_FIELDS; i++)
        *col[i] = (char *)json_string_value(json_object_get(payload, EP_FIELDS[i].name));
}

json_t *ru_membership_json(const membership_row *m)
{
    return json_pack("{s:s, s:s, s:s?, s:s, s:b, s:s?, s:s?}", "id", m->id, "org_id", m->org_id, "org_name",
                     m->org_name, "role", m->role, "has_org_key", m->has_org_key, "key_distributed_at",
                     m->key_distributed_at, "joined_at", m->joined_at);
}

json_t *ru_user_keys_json(const char *public_key, const char *enc_priv, const char *iv, const char *tag,
                          const char *salt)
{
    return json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:n, s:n, s:n, s:n}", "public_key", public_key,
                     "encrypted_private_key", enc_priv, "iv", iv, "tag", tag, "salt", salt,
                     "recovery_encrypted_private_key", "recovery_iv", "recovery_tag", "recovery_salt");
}

json_t *ru_memberships(api_req *r, const char *user_id, const char *org_id,
                       json_t *(*fn)(const membership_row *m))
{
    membership_row *list = NULL;
    size_t n = 0;
    store_rc rc = user_id ? store_memberships_for_user(r->db, user_id, &list, &n)
                          : store_memberships_for_org(r->db, org_id, &list, &n);
    if (rc != STORE_OK) {
        api_store_error(r, user_id ? "memberships_for_user" : "memberships_for_org");
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, fn(&list[i]));
    membership_list_free(list, n);
    return arr;
}

/* ---- authorization ---- */

bool ru_require_db_admin(api_req *r, const char *org_id, membership_row *out)
{
    membership_row m = {0};
    store_rc rc = store_membership_get(r->db, r->auth.user_id, org_id, &m);
    if (rc == STORE_NOT_FOUND) {
        ru_detailf(r, 404, "User %s is not a member of org %s", r->auth.user_id, org_id);
        return false;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "membership_get");
        return false;
    }
    if (strcmp(m.role, ROLE_ADMIN) != 0) {
        membership_row_free(&m);
        ru_detailf(r, 403, "User %s is not an admin of org %s", r->auth.user_id, org_id);
        return false;
    }
    if (out)
        *out = m;
    else
        membership_row_free(&m);
    return true;
}

/* ---- transactions ---- */

bool ru_begin(api_req *r)
{
    if (store_begin(r->db) == STORE_OK)
        return true;
    api_store_error(r, "begin");
    return false;
}

void ru_fail(api_req *r, const char *op)
{
    api_store_error(r, op); /* first: it logs the store's reason, which rollback may replace */
    store_rollback(r->db);
}

void ru_abort(api_req *r, int status, const char *fmt, ...)
{
    if (store_rollback(r->db) != STORE_OK)
        log_warn(r->rid, "event=rollback_failed detail=\"%s\"", store_last_error(r->db));
    va_list ap;
    va_start(ap, fmt);
    detail_v(r, status, fmt, ap);
    va_end(ap);
}

bool ru_commit(api_req *r)
{
    if (store_commit(r->db) == STORE_OK)
        return true;
    ru_fail(r, "commit");
    return false;
}

bool ru_audit_commit(api_req *r, const char *event_type, const char *actor, const char *target,
                     const char *org_id, const json_t *data)
{
    if (store_audit(r->db, event_type, actor, target, org_id, data) != STORE_OK) {
        ru_fail(r, "audit");
        return false;
    }
    return ru_commit(r);
}

/* ---- validation ---- */

bool ru_hex_fields(api_req *r, json_t *body, const ru_hex_field *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!v_hex(r, body, NULL, NULL, f[i].name, f[i].exact, f[i].min))
            return false;
    return true;
}

bool ru_opt_str(api_req *r, const json_t *body, const char *name)
{
    const json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v) || json_is_string(v))
        return true;
    v_loc loc = {{name}, 1};
    return v_str_at(r, v, loc, SIZE_MAX); /* not a string: 422 string_type */
}

static bool context_body(api_req *r, json_t *body, json_t **data)
{
    if (!v_object(r, body))
        return false;
    json_t *d = json_object_get(body, "context_data");
    v_loc loc = {{"context_data"}, 1};
    if (!d) {
        v_reply_at(r, "missing", loc, "Field required", NULL);
        return false;
    }
    if (!json_is_object(d)) {
        v_reply_at(r, "dict_type", loc, "Input should be a valid dictionary", d);
        return false;
    }
    *data = d;
    return true;
}

/* ---- context documents ---- */

static void context_reply(api_req *r, const char *owner_type, json_t *data, bool with_owner)
{
    json_t *j = json_object();
    if (with_owner)
        json_object_set_new(j, "owner_type", json_string(owner_type));
    json_object_set_new(j, "context_data", data ? data : json_null());
    ru_reply(r, 200, j);
}

void ru_context_get(api_req *r, const char *owner_type, const char *owner_id, bool with_owner)
{
    json_t *data = NULL;
    if (store_context_get(r->db, owner_type, owner_id, &data) != STORE_OK) {
        api_store_error(r, "context_get");
        return;
    }
    context_reply(r, owner_type, data, with_owner);
}

void ru_context_put(api_req *r, const char *owner_type, const char *owner_id, bool with_owner)
{
    json_t *body = api_body_json(r), *data;
    if (!body)
        return;
    if (context_body(r, body, &data)) {
        if (store_context_put(r->db, owner_type, owner_id, data) != STORE_OK)
            api_store_error(r, "context_put");
        else
            context_reply(r, owner_type, json_incref(data), with_owner);
    }
    json_decref(body);
}

/* ---- sessions and the right to send ---- */

const char *ru_ctx_org(const api_req *r)
{
    return jwt_auth_is_org(&r->auth) ? r->auth.org_id : NULL;
}

/* The session, if it belongs to the caller and to the caller's current context. */
store_rc ru_own_session(api_req *r, const char *id, session_row *out)
{
    store_rc rc = store_session_get(r->db, id, out);
    if (rc != STORE_OK)
        return rc;
    const char *org = ru_ctx_org(r);
    bool same_ctx = org ? (out->org_id && strcmp(out->org_id, org) == 0) : out->org_id == NULL;
    if (strcmp(out->user_id, r->auth.user_id) != 0 || !same_ctx) {
        session_row_free(out);
        return STORE_NOT_FOUND;
    }
    return STORE_OK;
}

/* own_session, answering 404 or 500 itself when there is no such session. */
bool ru_session_or_reply(api_req *r, const char *id, session_row *out)
{
    store_rc rc = ru_own_session(r, id, out);
    if (rc == STORE_NOT_FOUND)
        api_reply_detail(r, 404, RU_NOT_FOUND_SESSION);
    else if (rc != STORE_OK)
        api_store_error(r, "session_get");
    return rc == STORE_OK;
}

/* verify_can_send_encrypted (spec §6.2): NULL when allowed, else the 400 text.
 * storage_key receives the key messages are stored under (user's or org's). */
const char *ru_can_send(api_req *r, char storage_key[65], store_rc *err)
{
    store *db = r->db;
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

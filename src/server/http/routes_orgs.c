/* routes_orgs — /api/v1/organizations (spec §4.5): org sync and listing, the org
 * context store, and the org key lifecycle: creation (with the admin's own member
 * copy in the same transaction), distribution to members (one or in bulk, one
 * transaction), revocation. The /{org_id}/ admin routes need the stored admin
 * role and, from a token in that org's context, the JWT's admin role too (a
 * demotion the webhook has not applied yet); /context and /current go by the
 * JWT. Key writes are audited.
 * The server only stores wrapped keys and EncryptedPayloads, never opens them.
 */
#include <stdint.h>

#include "server/http/routes_util.h"
#include "server/http/validate.h"

#define P "/api/v1/organizations"
#define MAX_ID_LEN 255

static const ru_hex_field ORG_KEY_FIELDS[] = {
    {"org_public_key", 64, 0}, {"admin_encrypted_private_key", 0, 1}, {"admin_iv", 32, 0},
    {"admin_tag", 32, 0},      {"admin_salt", 64, 0},
};

static const char *str_of(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

/* The organization, or a reply: 400 unknown org (the service's generic error). */
static bool load_org(api_req *r, const char *org_id, org_row *o)
{
    store_rc rc = store_org_get(r->db, org_id, o);
    if (rc == STORE_NOT_FOUND)
        ru_detailf(r, 400, "Organization %s not found", org_id);
    else if (rc != STORE_OK)
        api_store_error(r, "org_get");
    return rc == STORE_OK;
}

/* The organization with its keys, or a reply: as load_org, and 404 without keys. */
static bool load_org_keys(api_req *r, const char *org_id, org_row *o)
{
    if (!load_org(r, org_id, o))
        return false;
    if (!o->has_encryption_keys) {
        org_row_free(o);
        ru_detailf(r, 404, "Organization %s has no encryption keys", org_id);
        return false;
    }
    return true;
}

/* The caller's own membership of org_id, or a reply: `status` (404 or 403) `Not a
 * member of this organization` (the texts of the routes that check this themselves). */
static bool own_membership(api_req *r, const char *org_id, int status, membership_row *m)
{
    store_rc rc = store_membership_get(r->db, r->auth.user_id, org_id, m);
    if (rc == STORE_NOT_FOUND)
        api_reply_detail(r, status, "Not a member of this organization");
    else if (rc != STORE_OK)
        api_store_error(r, "membership_get");
    return rc == STORE_OK;
}

/* ---- sync, current, list ---- */

/* The JWT's role as a membership role, or NULL when the token carries none.
 * Defect §10.12: the original answered 500 for a role it did not know (a custom
 * Clerk role such as "org:billing"); such a role grants nothing beyond
 * membership here, so it is stored as org:member. */
static const char *jwt_member_role(const jwt_auth *a)
{
    if (!a->org_role[0])
        return NULL;
    return strcmp(a->org_role, ROLE_ADMIN) == 0 ? ROLE_ADMIN : ROLE_MEMBER;
}

static void post_sync(api_req *r)
{
    json_t *body = api_body_json(r);
    if (!body)
        return;
    if (!v_object(r, body) || !v_string(r, body, NULL, "org_id", MAX_ID_LEN) ||
        !v_string(r, body, NULL, "name", 1024) || !ru_opt_str(r, body, "slug"))
        goto out;
    const char *org_id = str_of(body, "org_id"), *name = str_of(body, "name"), *slug = str_of(body, "slug");
    const jwt_auth *a = &r->auth;
    store *db = r->db;
    membership_row m = {0};
    store_rc mrc = store_membership_get(db, a->user_id, org_id, &m);
    if (mrc != STORE_OK && mrc != STORE_NOT_FOUND) {
        api_store_error(r, "membership_get");
        goto out;
    }
    bool db_admin = mrc == STORE_OK && strcmp(m.role, ROLE_ADMIN) == 0;
    if (mrc == STORE_OK)
        membership_row_free(&m);
    if (jwt_auth_is_org(a) && strcmp(a->org_id, org_id) != 0) {
        api_reply_detail(r, 403, "Cannot sync org you're not a member of");
        goto out;
    }
    if (!jwt_auth_is_org(a) && mrc == STORE_NOT_FOUND) {
        api_reply_detail(r, 403, "Not a member of this organization");
        goto out;
    }
    const char *role = jwt_member_role(a);
    /* The web client syncs for every member: anyone may create the missing row,
     * only an admin (by the token in this org's context, else the stored role)
     * may rename or re-slug it. */
    bool admin = jwt_auth_is_org(a) ? jwt_auth_is_org_admin(a) : db_admin;
    if (!ru_begin(r))
        goto out;
    bool created = false, mem_created = false;
    store_rc rc = admin ? store_org_upsert(db, org_id, name, slug, &created)
                        : store_org_create(db, org_id, name, slug, &created);
    if (rc == STORE_CONFLICT) {
        ru_abort(r, 409, "Organization slug already in use");
        goto out;
    }
    if (rc != STORE_OK) {
        ru_fail(r, "org_upsert");
        goto out;
    }
    /* the membership needs the user row; /users/sync may not have run yet */
    rc = store_user_create(db, a->user_id);
    if (rc != STORE_OK && rc != STORE_CONFLICT) {
        ru_fail(r, "user_create");
        goto out;
    }
    /* the role is updated only when the JWT carries one; a new row defaults to member */
    if (role || mrc == STORE_NOT_FOUND) {
        char id[600];
        snprintf(id, sizeof id, "mem_%s_%s", a->user_id, org_id);
        rc = store_membership_upsert(db, id, a->user_id, org_id, role ? role : ROLE_MEMBER, &mem_created, NULL);
        if (rc != STORE_OK) {
            ru_fail(r, "membership_upsert");
            goto out;
        }
    }
    if (ru_commit(r))
        ru_reply(r, 200, json_pack("{s:s, s:s}", "status", created ? "created" : "updated", "org_id", org_id));
out:
    json_decref(body);
}

static void get_current(api_req *r)
{
    const jwt_auth *a = &r->auth;
    if (!jwt_auth_is_org(a)) {
        ru_reply(r, 200, json_pack("{s:n, s:n, s:n, s:n, s:b, s:b}", "org_id", "org_name", "org_slug", "org_role",
                                   "is_personal_context", 1, "is_org_admin", 0));
        return;
    }
    org_row o = {0};
    store_rc rc = store_org_get(r->db, a->org_id, &o);
    if (rc != STORE_OK && rc != STORE_NOT_FOUND) {
        api_store_error(r, "org_get");
        return;
    }
    ru_reply(r, 200, json_pack("{s:s, s:s?, s:s?, s:s?, s:b, s:b}", "org_id", a->org_id, "org_name", o.name,
                               "org_slug", a->org_slug[0] ? a->org_slug : NULL, "org_role",
                               a->org_role[0] ? a->org_role : NULL, "is_personal_context", 0, "is_org_admin",
                               jwt_auth_is_org_admin(a)));
    if (rc == STORE_OK)
        org_row_free(&o);
}

static json_t *org_list_item(const membership_row *m)
{
    return json_pack("{s:s, s:s?, s:s?, s:s}", "id", m->org_id, "name", m->org_name, "slug", m->org_slug, "role",
                     m->role);
}

static void get_list(api_req *r)
{
    json_t *arr = ru_memberships(r, r->auth.user_id, NULL, org_list_item);
    if (arr)
        ru_reply(r, 200, json_pack("{s:o}", "organizations", arr));
}

/* ---- the org context (JWT-checked) ---- */

static void get_context(api_req *r)
{
    if (!jwt_auth_is_org(&r->auth)) {
        api_reply_detail(r, 403, "This action requires an active organization context");
        return;
    }
    ru_context_get(r, "org", r->auth.org_id, false);
}

static void put_context(api_req *r)
{
    if (!jwt_auth_is_org(&r->auth) || !jwt_auth_is_org_admin(&r->auth)) {
        api_reply_detail(r, 403, "This action requires organization admin privileges");
        return;
    }
    ru_context_put(r, "org", r->auth.org_id, false);
}

/* ---- org keys (admin-checked) ---- */

/* A token in org_id's own context that does not say admin: Clerk has demoted the
 * caller (or never promoted them), whatever the stored role still says. Tokens in
 * personal or another org's context say nothing about this org. */
static bool jwt_not_admin_here(const jwt_auth *a, const char *org_id)
{
    return jwt_auth_is_org(a) && strcmp(a->org_id, org_id) == 0 && !jwt_auth_is_org_admin(a);
}

/* ru_require_db_admin, then the JWT's word for its own org: 403 with the same text. */
static bool require_admin(api_req *r, const char *org_id, membership_row *out)
{
    if (!ru_require_db_admin(r, org_id, out))
        return false;
    if (!jwt_not_admin_here(&r->auth, org_id))
        return true;
    if (out)
        membership_row_free(out);
    ru_detailf(r, 403, "User %s is not an admin of org %s", r->auth.user_id, org_id);
    return false;
}

/* Members only (the original answered anyone about any org); a non-member hears
 * the same whether the org exists or not. */
static void get_encryption_status(api_req *r)
{
    const char *org_id = r->params[0];
    membership_row m = {0};
    if (!own_membership(r, org_id, 403, &m))
        return;
    membership_row_free(&m);
    org_row o = {0};
    if (!load_org(r, org_id, &o))
        return;
    ru_reply(r, 200, json_pack("{s:b, s:s?, s:s?, s:s?}", "has_encryption_keys", o.has_encryption_keys,
                               "org_public_key", o.org_public_key, "encryption_created_at",
                               o.encryption_created_at, "encryption_created_by", o.encryption_created_by));
    org_row_free(&o);
}

static void post_keys(api_req *r)
{
    const char *org_id = r->params[0], *uid = r->auth.user_id;
    json_t *body = api_body_json(r);
    if (!body)
        return;
    membership_row m = {0};
    bool have_m = false;
    if (!v_object(r, body) ||
        !ru_hex_fields(r, body, ORG_KEY_FIELDS, sizeof ORG_KEY_FIELDS / sizeof ORG_KEY_FIELDS[0]) ||
        !v_x25519_key(r, body, NULL, "org_public_key") || /* every org chat is stored to it */
        !v_ep(r, body, NULL, "admin_member_encrypted_key"))
        goto out;
    if (!(have_m = require_admin(r, org_id, &m)))
        goto out;
    org_key_ep key;
    ru_ep_borrow(json_object_get(body, "admin_member_encrypted_key"), &key);
    if (!ru_begin(r))
        goto out;
    store_rc rc = store_org_set_keys(r->db, org_id, str_of(body, "org_public_key"),
                                     str_of(body, "admin_encrypted_private_key"), str_of(body, "admin_iv"),
                                     str_of(body, "admin_tag"), str_of(body, "admin_salt"), uid);
    if (rc == STORE_CONFLICT) {
        ru_abort(r, 409, "Organization %s already has encryption keys", org_id);
        goto out;
    }
    if (rc == STORE_NOT_FOUND) {
        ru_abort(r, 400, "Organization %s not found", org_id);
        goto out;
    }
    if (rc != STORE_OK) {
        ru_fail(r, "org_set_keys");
        goto out;
    }
    /* the admin's own copy lands with the keys or not at all */
    if (store_membership_set_org_key(r->db, m.id, &key, uid) != STORE_OK) {
        ru_fail(r, "membership_set_org_key");
        goto out;
    }
    if (ru_audit_commit(r, "org_keys_created", uid, NULL, org_id, NULL))
        ru_reply(r, 201, json_pack("{s:s, s:s}", "status", "created", "org_public_key",
                                   str_of(body, "org_public_key")));
out:
    if (have_m)
        membership_row_free(&m);
    json_decref(body);
}

static void get_pending(api_req *r)
{
    const char *org_id = r->params[0];
    org_row o = {0};
    if (!require_admin(r, org_id, NULL) || !load_org_keys(r, org_id, &o))
        return;
    org_row_free(&o);
    membership_row *list = NULL;
    size_t n = 0;
    if (store_memberships_for_org(r->db, org_id, &list, &n) != STORE_OK) {
        api_store_error(r, "memberships_for_org");
        return;
    }
    json_t *ready = json_array(), *setup = json_array();
    for (size_t i = 0; i < n; i++) {
        const membership_row *m = &list[i];
        if (m->has_org_key)
            continue;
        if (m->user_has_keys && m->user_public_key)
            json_array_append_new(ready, json_pack("{s:s, s:s, s:s, s:s, s:s?}", "membership_id", m->id, "user_id",
                                                   m->user_id, "user_public_key", m->user_public_key, "role",
                                                   m->role, "joined_at", m->joined_at));
        else
            json_array_append_new(setup, json_pack("{s:s, s:s, s:s, s:s?}", "membership_id", m->id, "user_id",
                                                   m->user_id, "role", m->role, "joined_at", m->joined_at));
    }
    membership_list_free(list, n);
    size_t nr = json_array_size(ready), ns = json_array_size(setup);
    ru_reply(r, 200, json_pack("{s:s, s:o, s:o, s:I, s:I}", "org_id", org_id, "ready_for_distribution", ready,
                               "needs_personal_setup", setup, "ready_count", (json_int_t)nr,
                               "needs_setup_count", (json_int_t)ns));
}

/* The outcome of one distribution: error NULL on success, else its text and
 * the status the single-item route answers with. */
typedef struct dist_outcome {
    int status;
    const char *error;
    char user_id[256]; /* "" when the membership is unknown or another org's */
} dist_outcome;

/* Stores one member's copy of the org key inside the caller's transaction.
 * STORE_ERR only for a store failure; refusals are in *out. */
static store_rc distribute_one(api_req *r, const char *org_id, const char *membership_id, const json_t *ep_json,
                               dist_outcome *out)
{
    store *db = r->db;
    membership_row m = {0};
    user_row u = {0};
    *out = (dist_outcome){0, NULL, ""};
    store_rc rc = store_membership_get_by_id(db, membership_id, &m);
    if (rc == STORE_NOT_FOUND) {
        *out = (dist_outcome){404, "Membership not found", ""};
        return STORE_OK;
    }
    if (rc != STORE_OK)
        return STORE_ERR;
    /* another org's membership: refused without naming its user */
    if (strcmp(m.org_id, org_id) != 0) {
        *out = (dist_outcome){400, "Membership does not belong to this organization", ""};
        goto out;
    }
    snprintf(out->user_id, sizeof out->user_id, "%s", m.user_id);
    if (m.has_org_key) {
        out->status = 400, out->error = "Member already has org key";
        goto out;
    }
    rc = store_user_get(db, m.user_id, &u);
    if (rc != STORE_OK && rc != STORE_NOT_FOUND)
        goto out;
    bool ready = rc == STORE_OK && u.has_encryption_keys;
    if (rc == STORE_OK)
        user_row_free(&u);
    rc = STORE_OK;
    if (!ready) {
        out->status = 400, out->error = "Member has not set up personal encryption keys";
        goto out;
    }
    org_key_ep key;
    ru_ep_borrow(ep_json, &key);
    rc = store_membership_set_org_key(db, m.id, &key, r->auth.user_id);
    if (rc == STORE_OK)
        rc = store_audit(db, "org_key_distributed", r->auth.user_id, m.user_id, org_id, NULL);
out:
    membership_row_free(&m);
    return rc == STORE_OK ? STORE_OK : STORE_ERR;
}

static void post_distribute(api_req *r)
{
    const char *org_id = r->params[0];
    json_t *body = api_body_json(r);
    if (!body)
        return;
    org_row o = {0};
    if (!v_object(r, body) || !v_string(r, body, NULL, "membership_id", MAX_ID_LEN) ||
        !v_ep(r, body, NULL, "encrypted_org_key"))
        goto out;
    if (!require_admin(r, org_id, NULL) || !load_org_keys(r, org_id, &o))
        goto out;
    org_row_free(&o);
    const char *mid = str_of(body, "membership_id");
    dist_outcome res;
    if (!ru_begin(r))
        goto out;
    if (distribute_one(r, org_id, mid, json_object_get(body, "encrypted_org_key"), &res) != STORE_OK) {
        ru_fail(r, "distribute");
        goto out;
    }
    if (res.error) {
        ru_abort(r, res.status, "%s", res.error);
        goto out;
    }
    if (ru_commit(r))
        ru_reply(r, 200, json_pack("{s:s, s:s}", "status", "distributed", "membership_id", mid));
out:
    json_decref(body);
}

/* {"distributions":[{"membership_id":s,"encrypted_org_key":EP}, ...]} (at least one) */
static bool valid_bulk(api_req *r, json_t *body)
{
    if (!v_object(r, body))
        return false;
    json_t *d = json_object_get(body, "distributions");
    static const char *const loc[] = {"body", "distributions"};
    if (!d) {
        api_reply_422(r, "missing", loc, 2, "Field required", NULL);
        return false;
    }
    if (!json_is_array(d)) {
        api_reply_422(r, "list_type", loc, 2, "Input should be a valid list", d);
        return false;
    }
    if (json_array_size(d) == 0) {
        api_reply_422(r, "too_short", loc, 2, "List should have at least 1 item after validation, not 0", d);
        return false;
    }
    size_t i;
    json_t *item;
    json_array_foreach(d, i, item) {
        char idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        if (!json_is_object(item)) {
            const char *l[] = {"body", "distributions", idx};
            api_reply_422(r, "model_attributes_type", l, 3,
                          "Input should be a valid dictionary or object to extract fields from", item);
            return false;
        }
        v_loc mid = {{"distributions", idx, "membership_id"}, 3};
        v_loc eloc = {{"distributions", idx, "encrypted_org_key"}, 3};
        if (!v_str_at(r, json_object_get(item, "membership_id"), mid, SIZE_MAX) ||
            !v_ep_at(r, json_object_get(item, "encrypted_org_key"), eloc))
            return false;
    }
    return true;
}

static void post_distribute_bulk(api_req *r)
{
    const char *org_id = r->params[0];
    json_t *body = api_body_json(r), *results = NULL;
    if (!body)
        return;
    org_row o = {0};
    if (!valid_bulk(r, body))
        goto out;
    if (!require_admin(r, org_id, NULL) || !load_org_keys(r, org_id, &o))
        goto out;
    org_row_free(&o);
    if (!ru_begin(r))
        goto out;
    results = json_array();
    json_int_t ok = 0, failed = 0;
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(body, "distributions"), i, item) {
        const char *mid = str_of(item, "membership_id");
        dist_outcome res;
        if (distribute_one(r, org_id, mid, json_object_get(item, "encrypted_org_key"), &res) != STORE_OK) {
            ru_fail(r, "distribute");
            goto out;
        }
        if (res.error)
            failed++;
        else
            ok++;
        json_array_append_new(results, json_pack("{s:s, s:s?, s:b, s:s?}", "membership_id", mid, "user_id",
                                                 res.user_id[0] ? res.user_id : NULL, "success", !res.error,
                                                 "error", res.error));
    }
    /* one commit for the batch: the successful items land together */
    if (ru_commit(r)) {
        ru_reply(r, 200, json_pack("{s:s, s:O, s:I, s:I}", "org_id", org_id, "results", results, "success_count",
                                   ok, "failure_count", failed));
    }
out:
    json_decref(results);
    json_decref(body);
}

static void get_membership(api_req *r)
{
    membership_row m = {0};
    if (!own_membership(r, r->params[0], 404, &m))
        return;
    json_t *j = ru_membership_json(&m);
    if (j) {
        json_object_set_new(j, "org_name", json_null()); /* the original never fills it here */
        json_object_set_new(j, "created_at", ru_str(m.created_at));
        json_object_set_new(j, "encrypted_org_key", ru_ep_json(&m.org_key));
    }
    membership_row_free(&m);
    ru_reply(r, 200, j);
}

static void post_revoke(api_req *r)
{
    const char *org_id = r->params[0], *member = r->params[1], *reason = api_query(r, "reason");
    if (!require_admin(r, org_id, NULL))
        return;
    membership_row m = {0};
    store_rc rc = store_membership_get(r->db, member, org_id, &m);
    if (rc == STORE_NOT_FOUND) {
        ru_detailf(r, 404, "User %s is not a member of org %s", member, org_id);
        return;
    }
    if (rc != STORE_OK) {
        api_store_error(r, "membership_get");
        return;
    }
    json_t *data = json_pack("{s:s?}", "reason", reason);
    bool had = false;
    if (!ru_begin(r))
        goto out;
    if (store_membership_clear_org_key(r->db, m.id, &had) != STORE_OK) {
        ru_fail(r, "membership_clear_org_key");
        goto out;
    }
    /* no key, nothing revoked: a no-op without an audit row */
    if (had ? ru_audit_commit(r, "org_key_revoked", r->auth.user_id, member, org_id, data) : ru_commit(r))
        api_reply_empty(r, 204);
out:
    json_decref(data);
    membership_row_free(&m);
}

static void get_admin_recovery_key(api_req *r)
{
    const char *org_id = r->params[0];
    org_row o = {0};
    if (!require_admin(r, org_id, NULL) || !load_org_keys(r, org_id, &o))
        return;
    ru_reply(r, 200, json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?}", "org_public_key", o.org_public_key,
                               "admin_encrypted_private_key", o.admin_encrypted_private_key, "iv", o.admin_iv,
                               "tag", o.admin_tag, "salt", o.admin_salt));
    org_row_free(&o);
}

static json_t *member_item(const membership_row *m)
{
    return json_pack("{s:s, s:s, s:s, s:b, s:b, s:s?, s:s?}", "membership_id", m->id, "user_id", m->user_id,
                     "role", m->role, "has_personal_keys", m->user_has_keys, "has_org_key", m->has_org_key,
                     "key_distributed_at", m->key_distributed_at, "joined_at", m->joined_at);
}

static void get_members(api_req *r)
{
    const char *org_id = r->params[0];
    membership_row me = {0};
    /* this route has its own texts (the original checked here, not in the service) */
    if (!own_membership(r, org_id, 404, &me))
        return;
    bool admin = strcmp(me.role, ROLE_ADMIN) == 0 && !jwt_not_admin_here(&r->auth, org_id);
    membership_row_free(&me);
    if (!admin) {
        api_reply_detail(r, 403, "Admin access required");
        return;
    }
    json_t *arr = ru_memberships(r, NULL, org_id, member_item);
    if (arr)
        ru_reply(r, 200, json_pack("{s:s, s:o, s:I}", "org_id", org_id, "members", arr, "total_count",
                                   (json_int_t)json_array_size(arr)));
}

const route ROUTES_ORGS[] = {
    {EVHTTP_REQ_POST, P "/sync", post_sync, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/current", get_current, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/", get_list, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/context", get_context, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_PUT, P "/context", put_context, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/encryption-status", get_encryption_status, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/{}/keys", post_keys, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/pending-distributions", get_pending, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/{}/distribute-key", post_distribute, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/{}/distribute-keys-bulk", post_distribute_bulk, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/membership", get_membership, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_POST, P "/{}/revoke-key/{}", post_revoke, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/admin-recovery-key", get_admin_recovery_key, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_GET, P "/{}/members", get_members, ROUTE_AUTH | ROUTE_DB},
};
const size_t N_ROUTES_ORGS = sizeof ROUTES_ORGS / sizeof ROUTES_ORGS[0];

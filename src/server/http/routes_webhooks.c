/* routes_webhooks — POST /api/v1/webhooks/clerk (spec §4.7, §6.5): Clerk's user,
 * organization and membership events, mirrored into the store.
 *
 * Every delivery is Svix-verified; without CLERK_WEBHOOK_SECRET the route refuses
 * everything (503) instead of trusting the body (defect §10.19). Once verified,
 * each event is handled in one transaction: 200 (processed, ignored, or error for
 * an event that can never apply), or 500 with nothing written when the store
 * fails, so that Svix retries (the original answered 200 and a demoted admin kept
 * admin rights). The transaction also records the svix-id: a delivery applied
 * less than CLERK_WEBHOOK_DEDUP_SECONDS ago is answered "duplicate" and changes
 * nothing (a replay), by every veild sharing the database; a delivery that
 * failed left no record, so its retry applies. System actions are audited with
 * a NULL actor, never a fake user id, so they commit (defect §10.10); audit rows
 * outlive the users and organizations they mention (defect §10.11). Bodies are
 * never logged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "server/http/routes_util.h"
#include "auth/svix.h"

#define UNKNOWN_ORG_NAME "Unknown Organization"

typedef enum wh_result {
    WH_PROCESSED,
    WH_IGNORED,
    WH_ERROR,       /* the event's data cannot apply: 200, a retry would fail the same way */
    WH_STORE_ERROR, /* 500: rolled back, Svix retries */
    WH_DUPLICATE,   /* this svix-id was applied within the window: nothing done */
} wh_result;

typedef struct wh_event {
    api_req *r;
    store *db;
    const char *delivery_id; /* the verified svix-id */
    const json_t *data; /* the event's "data" object ({} when absent) */
    char error[160];    /* for WH_ERROR: the text of the reply's "error" */
} wh_event;

static const char *data_str(const json_t *obj, const char *name)
{
    return json_string_value(json_object_get(obj, name));
}

static wh_result fail(wh_event *ev, const char *msg)
{
    snprintf(ev->error, sizeof ev->error, "%s", msg);
    return WH_ERROR;
}

/* a store failure: its reason goes to the log, a fixed 500 to Svix */
static wh_result store_fail(wh_event *ev, const char *op)
{
    log_error(ev->r->rid, "event=webhook_store_error op=%s detail=\"%s\"", op, store_last_error(ev->db));
    return WH_STORE_ERROR;
}

/* data.id, or NULL after recording the error */
static const char *required_id(wh_event *ev, const char *error)
{
    const char *id = data_str(ev->data, "id");
    if (id && *id)
        return id;
    fail(ev, error);
    return NULL;
}

static store_rc audit_reason(wh_event *ev, const char *type, const char *target, const char *org_id,
                             const char *reason)
{
    json_t *data = json_pack("{s:s}", "reason", reason);
    store_rc rc = store_audit(ev->db, type, NULL, target, org_id, data);
    json_decref(data);
    return rc;
}

/* ---- users ---- */

static wh_result user_upsert(wh_event *ev)
{
    const char *id = required_id(ev, "Missing user id");
    if (!id)
        return WH_ERROR;
    store_rc rc = store_user_create(ev->db, id);
    return rc == STORE_OK || rc == STORE_CONFLICT ? WH_PROCESSED : store_fail(ev, "user_create");
}

static wh_result user_deleted(wh_event *ev)
{
    const char *id = required_id(ev, "Missing user id");
    if (!id)
        return WH_ERROR;
    user_row u = {0};
    store_rc rc = store_user_get(ev->db, id, &u);
    if (rc == STORE_NOT_FOUND)
        return WH_PROCESSED;
    if (rc != STORE_OK)
        return store_fail(ev, "user_get");
    bool had_keys = u.has_encryption_keys;
    user_row_free(&u);
    if (had_keys && audit_reason(ev, "user_keys_deleted", id, NULL, "user_deleted_from_clerk") != STORE_OK)
        return store_fail(ev, "audit");
    /* memberships (with their org-key copies), sessions and messages go with the row */
    if (store_user_delete(ev->db, id) != STORE_OK)
        return store_fail(ev, "user_delete");
    return WH_PROCESSED;
}

/* ---- organizations ---- */

static wh_result org_upsert_from(wh_event *ev, const json_t *org)
{
    const char *id = data_str(org, "id"), *name = data_str(org, "name"), *slug = data_str(org, "slug");
    bool created;
    store_rc rc = store_org_upsert(ev->db, id, name && *name ? name : UNKNOWN_ORG_NAME, slug, &created);
    if (rc == STORE_CONFLICT)
        return fail(ev, "Organization slug already in use");
    return rc == STORE_OK ? WH_PROCESSED : store_fail(ev, "org_upsert");
}

static wh_result org_upsert(wh_event *ev)
{
    const char *id = required_id(ev, "Missing organization id");
    if (!id)
        return WH_ERROR;
    return org_upsert_from(ev, ev->data);
}

static wh_result org_deleted(wh_event *ev)
{
    const char *id = required_id(ev, "Missing organization id");
    if (!id)
        return WH_ERROR;
    org_row o = {0};
    store_rc rc = store_org_get(ev->db, id, &o);
    if (rc == STORE_NOT_FOUND)
        return WH_PROCESSED;
    if (rc != STORE_OK)
        return store_fail(ev, "org_get");
    bool had_keys = o.has_encryption_keys;
    org_row_free(&o);
    /* §5 has no "organization deleted" event: like the original, the end of the
     * org's keys is recorded as org_keys_rotated, and only when there were keys.
     * Unlike the original, the row (and the org's whole trail) survives the delete. */
    if (had_keys && audit_reason(ev, "org_keys_rotated", NULL, id, "organization_deleted_from_clerk") != STORE_OK)
        return store_fail(ev, "audit");
    if (store_org_delete(ev->db, id) != STORE_OK)
        return store_fail(ev, "org_delete");
    return WH_PROCESSED;
}

/* ---- memberships ---- */

typedef struct wh_membership {
    const char *id, *user_id, *org_id;
    const json_t *org;
} wh_membership;

static void membership_fields(const json_t *data, wh_membership *m)
{
    m->id = data_str(data, "id");
    m->user_id = data_str(json_object_get(data, "public_user_data"), "user_id");
    m->org = json_object_get(data, "organization");
    m->org_id = data_str(m->org, "id");
}

static wh_result membership_upsert(wh_event *ev)
{
    wh_membership f;
    membership_fields(ev->data, &f);
    if (!f.id || !*f.id || !f.user_id || !*f.user_id || !f.org_id || !*f.org_id)
        return fail(ev, "Missing membership fields: id, public_user_data.user_id, organization.id");
    const char *raw_role = data_str(ev->data, "role");
    /* org:admin or org:member; anything else (a custom role) is a plain member */
    const char *role = raw_role && strcmp(raw_role, ROLE_ADMIN) == 0 ? ROLE_ADMIN : ROLE_MEMBER;

    /* the org and user rows may not have arrived yet: create them */
    org_row o = {0};
    store_rc rc = store_org_get(ev->db, f.org_id, &o);
    if (rc == STORE_OK)
        org_row_free(&o);
    else if (rc == STORE_NOT_FOUND) {
        wh_result res = org_upsert_from(ev, f.org);
        if (res != WH_PROCESSED)
            return res;
    } else
        return store_fail(ev, "org_get");
    rc = store_user_create(ev->db, f.user_id);
    if (rc != STORE_OK && rc != STORE_CONFLICT)
        return store_fail(ev, "user_create");

    bool created = false;
    char *old_role = NULL;
    rc = store_membership_upsert(ev->db, f.id, f.user_id, f.org_id, role, &created, &old_role);
    if (rc != STORE_OK) {
        free(old_role);
        return store_fail(ev, "membership_upsert");
    }
    json_t *data = NULL;
    const char *type = NULL;
    if (created) {
        type = "member_joined";
        data = json_pack("{s:s}", "role", raw_role ? raw_role : role);
    } else if (old_role && strcmp(old_role, role) != 0) {
        type = "member_role_changed";
        data = json_pack("{s:s, s:s}", "old_role", old_role, "new_role", role);
    }
    free(old_role);
    rc = type ? store_audit(ev->db, type, NULL, f.user_id, f.org_id, data) : STORE_OK;
    json_decref(data);
    return rc == STORE_OK ? WH_PROCESSED : store_fail(ev, "audit");
}

static wh_result membership_deleted(wh_event *ev)
{
    wh_membership f;
    membership_fields(ev->data, &f);
    membership_row m = {0};
    store_rc rc = STORE_NOT_FOUND;
    /* by Clerk's id, else by (user, org): /organizations/sync rows carry our own id */
    if (f.id && *f.id)
        rc = store_membership_get_by_id(ev->db, f.id, &m);
    if (rc == STORE_NOT_FOUND && f.user_id && f.org_id)
        rc = store_membership_get(ev->db, f.user_id, f.org_id, &m);
    if (rc == STORE_NOT_FOUND)
        return WH_PROCESSED;
    if (rc != STORE_OK)
        return store_fail(ev, "membership_get");
    bool had_key = false;
    wh_result res = WH_PROCESSED;
    if (store_membership_clear_org_key(ev->db, m.id, &had_key) != STORE_OK)
        res = store_fail(ev, "membership_clear_org_key");
    else if (had_key &&
             audit_reason(ev, "org_key_revoked", m.user_id, m.org_id, "membership_deleted_from_clerk") != STORE_OK)
        res = store_fail(ev, "audit");
    else if (audit_reason(ev, "member_left", m.user_id, m.org_id, "removed_via_clerk_webhook") != STORE_OK)
        res = store_fail(ev, "audit");
    else if (store_membership_delete(ev->db, m.id) != STORE_OK)
        res = store_fail(ev, "membership_delete");
    membership_row_free(&m);
    return res;
}

/* ---- dispatch ---- */

typedef wh_result (*wh_handler)(wh_event *ev);

static const struct {
    const char *type;
    wh_handler fn;
} HANDLERS[] = {
    {"user.created", user_upsert},
    {"user.updated", user_upsert},
    {"user.deleted", user_deleted},
    {"organization.created", org_upsert},
    {"organization.updated", org_upsert},
    {"organization.deleted", org_deleted},
    {"organizationMembership.created", membership_upsert},
    {"organizationMembership.updated", membership_upsert},
    {"organizationMembership.deleted", membership_deleted},
};

static wh_handler handler_for(const char *type)
{
    for (size_t i = 0; type && i < sizeof HANDLERS / sizeof HANDLERS[0]; i++)
        if (strcmp(HANDLERS[i].type, type) == 0)
            return HANDLERS[i].fn;
    return NULL;
}

/* Runs the handler of type and records the delivery in one transaction: all of
 * an event or none of it, and once. */
static wh_result handle(wh_event *ev, const char *type)
{
    wh_handler fn = handler_for(type);
    if (!fn)
        return WH_IGNORED; /* nothing to apply twice: not recorded */
    long window = ev->r->srv->cfg.webhook_dedup_seconds;
    if (store_begin(ev->db) != STORE_OK)
        return store_fail(ev, "begin");
    /* claimed first: a veild handling the same id waits here until this one ends */
    store_rc rc = store_webhook_claim(ev->db, ev->delivery_id, window);
    wh_result res;
    if (rc == STORE_CONFLICT)
        res = WH_DUPLICATE;
    else if (rc != STORE_OK)
        res = store_fail(ev, "webhook_claim");
    else
        res = fn(ev);
    if (res != WH_PROCESSED) {
        store_rollback(ev->db);
        return res;
    }
    if (store_commit(ev->db) != STORE_OK) /* a failed commit has rolled back */
        return store_fail(ev, "commit");
    /* after the commit: a failed prune costs space, not the event */
    if (store_webhook_prune(ev->db, window) != STORE_OK)
        log_warn(ev->r->rid, "event=webhook_prune_failed detail=\"%s\"", store_last_error(ev->db));
    return WH_PROCESSED;
}

/* Svix verification; false means a reply has been sent. */
static bool verified(api_req *r, const char *body, size_t len)
{
    const char *whsec = r->srv->cfg.clerk_webhook_secret;
    if (!whsec[0]) {
        log_warn(r->rid, "event=webhook_refused reason=no_secret_configured");
        api_reply_detail(r, 503, "Webhook verification not configured");
        return false;
    }
    secret key = {0};
    svix_err e = svix_key_parse(whsec, &key);
    if (e == SVIX_OK) {
        e = svix_verify(&key, api_header(r, "svix-id"), api_header(r, "svix-timestamp"),
                        api_header(r, "svix-signature"), body, len, time(NULL));
        secret_free(&key);
    }
    if (e == SVIX_OK)
        return true;
    log_warn(r->rid, "event=webhook_rejected reason=\"%s\"", svix_strerror(e));
    api_reply_detail(r, svix_http_status(e), svix_detail(e));
    return false;
}

static void post_clerk(api_req *r)
{
    size_t len;
    const char *raw = api_body_raw(r, &len);
    if (!verified(r, raw, len))
        return;
    json_error_t jerr;
    json_t *payload = json_loadb(raw, len, 0, &jerr);
    if (!json_is_object(payload)) {
        /* signed but not a JSON object: the sender's fault, not ours (defect §10.19) */
        json_decref(payload);
        api_reply_detail(r, 400, "Invalid JSON payload");
        return;
    }
    const char *type = data_str(payload, "type");
    json_t *empty = json_object();
    const json_t *data = json_object_get(payload, "data");
    wh_event ev = {.r = r, .db = r->db, .delivery_id = api_header(r, "svix-id"),
                   .data = json_is_object(data) ? data : empty};
    wh_result res = handle(&ev, type);
    static const char *const NAMES[] = {"processed", "ignored", "error", "store_error", "duplicate"};
    log_info(r->rid, "event=webhook type=%s result=%s", type ? type : "-", NAMES[res]);
    bool failed = res == WH_ERROR || res == WH_STORE_ERROR;
    if (failed && type && strncmp(type, "organizationMembership.", 23) == 0)
        log_error(r->rid, "event=SECURITY_ALERT detail=\"membership sync failed: access may be stale\" type=%s",
                  type);
    if (res == WH_STORE_ERROR) {
        api_reply_detail(r, 500, "Database operation failed");
    } else {
        json_t *reply = json_pack("{s:s, s:s?}", "status", NAMES[res], "event", type);
        if (reply && res == WH_ERROR)
            json_object_set_new(reply, "error", json_string(ev.error));
        ru_reply(r, 200, reply);
    }
    json_decref(empty);
    json_decref(payload);
}

const route ROUTES_WEBHOOKS[] = {
    {EVHTTP_REQ_POST, "/api/v1/webhooks/clerk", post_clerk, ROUTE_DB},
};
const size_t N_ROUTES_WEBHOOKS = sizeof ROUTES_WEBHOOKS / sizeof ROUTES_WEBHOOKS[0];

/* store_context_audit — the context_stores and audit_logs tables (store.h
 * "context", "audit"). Both hold JSON as text: the caller keeps its json_t, a
 * json_t read back is a new reference the caller (or audit_list_free) releases.
 * Audit rows have no foreign key, so they outlive the users and organizations
 * they name (defect §10.11); a system action has a NULL actor.
 */
#include "server/store/store_int.h"

#include <stdio.h>
#include <string.h>

/* ---- context ---- */

static bool valid_owner(const char *t) { return strcmp(t, "user") == 0 || strcmp(t, "org") == 0; }

store_rc store_context_get(store *s, const char *owner_type, const char *owner_id, json_t **data)
{
    *data = NULL;
    NEED(owner_type);
    NEED(owner_id);
    db_param p[] = {db_text(owner_type), db_text(owner_id)};
    db_result r = DB_RESULT_INIT;
    store_rc rc =
        st_run(s, "SELECT context_data FROM context_stores WHERE owner_type = $1 AND owner_id = $2", p, NP(p), &r);
    const char *text = db_cell(&r, 0, 0);
    if (rc == STORE_OK && text) {
        json_error_t je;
        *data = json_loads(text, JSON_DECODE_ANY, &je);
        if (!*data)
            rc = st_fail(s, "context_data is not valid JSON (line %d)", je.line);
    }
    db_result_free(&r);
    return rc;
}

store_rc store_context_put(store *s, const char *owner_type, const char *owner_id, const json_t *data)
{
    NEED(owner_type);
    NEED(owner_id);
    if (!valid_owner(owner_type))
        return st_fail(s, "invalid owner_type (expected user or org)");
    char *json = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (data && !json)
        return st_fail(s, "context_data cannot be serialized");
    size_t idlen = strlen("ctx__") + strlen(owner_type) + strlen(owner_id) + 1;
    char *id = malloc(idlen);
    if (!id) {
        free(json);
        return st_fail(s, "out of memory");
    }
    snprintf(id, idlen, "ctx_%s_%s", owner_type, owner_id);
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(owner_type), db_text(owner_id), db_text(json), db_text(now)};
    store_rc rc =
        st_write(s,
                 "INSERT INTO context_stores (id, owner_type, owner_id, context_data, created_at, updated_at) "
                 "VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (owner_type, owner_id) DO UPDATE SET "
                 "context_data = excluded.context_data, updated_at = excluded.updated_at",
                 p, NP(p), NULL);
    free(id);
    free(json);
    return rc;
}

/* ---- audit ---- */

store_rc store_audit(store *s, const char *event_type, const char *actor, const char *target, const char *org_id,
                     const json_t *data)
{
    NEED(event_type);
    char *json = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (data && !json)
        return st_fail(s, "event_data cannot be serialized");
    char id[37], now[32];
    store_uuid(id);
    st_stamp(s, now);
    db_param p[] = {db_text(id),     db_text(event_type), db_text(actor), db_text(target),
                    db_text(org_id), db_text(json),       db_text(now)};
    store_rc rc =
        st_write(s,
                 "INSERT INTO audit_logs (id, event_type, actor_user_id, target_user_id, org_id, event_data, "
                 "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                 p, NP(p), NULL);
    free(json);
    return rc;
}

void audit_list_free(audit_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        audit_row *a = &list[i];
        free(a->id);
        free(a->event_type);
        free(a->actor_user_id);
        free(a->target_user_id);
        free(a->org_id);
        free(a->created_at);
        json_decref(a->event_data);
    }
    free(list);
}

store_rc store_audit_list(store *s, const char *org_id, size_t limit, audit_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    int64_t lim = limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
    db_result r = DB_RESULT_INIT;
    store_rc rc;
#define AUDIT_COLS "id, event_type, actor_user_id, target_user_id, org_id, event_data, created_at"
    if (org_id) {
        db_param p[] = {db_text(org_id), db_int(lim)};
        rc = st_run(s,
                    "SELECT " AUDIT_COLS " FROM audit_logs WHERE org_id = $1 "
                    "ORDER BY created_at DESC, id DESC LIMIT $2",
                    p, NP(p), &r);
    } else {
        db_param p[] = {db_int(lim)};
        rc = st_run(s, "SELECT " AUDIT_COLS " FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT $1", p, NP(p),
                    &r);
    }
    if (rc == STORE_OK)
        ALLOC_ROWS(s, rc, *out, r.nrows);
    for (size_t i = 0; rc == STORE_OK && i < r.nrows; i++) {
        audit_row *a = &(*out)[i];
        a->id = db_take(&r, i, 0);
        a->event_type = db_take(&r, i, 1);
        a->actor_user_id = db_take(&r, i, 2);
        a->target_user_id = db_take(&r, i, 3);
        a->org_id = db_take(&r, i, 4);
        const char *ev = db_cell(&r, i, 5);
        a->event_data = ev ? json_loads(ev, JSON_DECODE_ANY, NULL) : NULL;
        a->created_at = db_take(&r, i, 6);
    }
    if (rc == STORE_OK)
        *n = r.nrows;
    db_result_free(&r);
    return rc;
}

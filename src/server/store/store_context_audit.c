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

static const st_col audit_col[] = {
    ST_TEXT_COL(audit_row, id, "id"),
    ST_TEXT_COL(audit_row, event_type, "event_type"),
    ST_TEXT_COL(audit_row, actor_user_id, "actor_user_id"),
    ST_TEXT_COL(audit_row, target_user_id, "target_user_id"),
    ST_TEXT_COL(audit_row, org_id, "org_id"),
    ST_JSON_COL(audit_row, event_data, "event_data"),
    ST_TEXT_COL(audit_row, created_at, "created_at"),
};
static const st_cols audit_cols = ST_COLS(NULL, audit_col);

void audit_list_free(audit_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        st_clear(&audit_cols, &list[i]);
    free(list);
}

store_rc store_audit_list(store *s, const char *org_id, size_t limit, audit_row **out, size_t *n)
{
    int64_t lim = limit > (size_t)INT64_MAX ? INT64_MAX : (int64_t)limit;
    void *rows;
    store_rc rc;
    if (org_id) {
        db_param p[] = {db_text(org_id), db_int(lim)};
        rc = st_select_list(s, &audit_cols,
                            "FROM audit_logs WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2", p, NP(p),
                            sizeof **out, &rows, n);
    } else {
        db_param p[] = {db_int(lim)};
        rc = st_select_list(s, &audit_cols, "FROM audit_logs ORDER BY created_at DESC, id DESC LIMIT $1", p, NP(p),
                            sizeof **out, &rows, n);
    }
    *out = rows;
    return rc;
}

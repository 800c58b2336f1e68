/* store_sessions — the sessions and messages tables (store.h "sessions and
 * messages"), and the one transaction that ends a chat (store_chat_commit). A
 * session_row's or message_row's strings are its own, freed by session_row_free /
 * message_row_free; lists are arrays of rows freed by the *_list_free functions.
 * Deleting a session cascades to its messages. Messages hold ciphertext only.
 */
#include "server/store/store_int.h"

#include <stdio.h>
#include <string.h>

#define DEFAULT_SESSION_NAME "New Chat"

/* ---- sessions ---- */

static const st_col session_col[] = {
    ST_TEXT_COL(session_row, id, "id"),
    ST_TEXT_COL(session_row, user_id, "user_id"),
    ST_TEXT_COL(session_row, org_id, "org_id"),
    ST_TEXT_COL(session_row, name, "name"),
    ST_TEXT_COL(session_row, created_at, "created_at"),
    ST_TEXT_COL(session_row, updated_at, "updated_at"),
};
static const st_cols session_cols = ST_COLS(NULL, session_col);

void session_row_free(session_row *r)
{
    if (!r)
        return;
    st_clear(&session_cols, r);
    memset(r, 0, sizeof *r);
}

void session_list_free(session_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        session_row_free(&list[i]);
    free(list);
}

/* The INSERT of store_session_create and store_chat_commit, returning the new row. */
static store_rc session_insert_sql(store *s, char sql[ST_SQL_MAX])
{
    return st_sql(s, sql,
                  "INSERT INTO sessions (id, user_id, org_id, name, created_at, updated_at) "
                  "VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                  &session_cols, "");
}

store_rc store_session_create(store *s, const char *id, const char *user_id, const char *org_id,
                              const char *name, session_row *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    NEED(id);
    NEED(user_id);
    char now[32], sql[ST_SQL_MAX];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(user_id), db_text(org_id), db_text(name ? name : DEFAULT_SESSION_NAME),
                    db_text(now)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = session_insert_sql(s, sql);
    if (rc == STORE_OK)
        rc = st_write(s, sql, p, NP(p), &r);
    if (rc == STORE_OK && out)
        st_fill(&r, 0, &session_cols, out);
    db_result_free(&r);
    return rc;
}

store_rc store_session_get(store *s, const char *id, session_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    return st_select_one(s, &session_cols, "FROM sessions WHERE id = $1", p, NP(p), out);
}

store_rc store_sessions_list(store *s, const char *user_id, const char *org_id, int limit, int offset,
                             session_row **out, size_t *n, long *total)
{
    *out = NULL;
    *n = 0;
    if (total)
        *total = 0;
    NEED(user_id);
    int64_t lim = limit < 0 ? INT64_MAX : limit, off = offset < 0 ? 0 : offset;
    db_result c = DB_RESULT_INIT;
    void *rows = NULL;
    store_rc rc;
    /* personal context: org_id IS NULL, never "any org" */
    if (org_id) {
        db_param p[] = {db_text(user_id), db_text(org_id), db_int(lim), db_int(off)};
        rc = st_run(s, "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND org_id = $2", p, 2, &c);
        if (rc == STORE_OK)
            rc = st_select_list(s, &session_cols,
                                "FROM sessions WHERE user_id = $1 AND org_id = $2 "
                                "ORDER BY updated_at DESC, id DESC LIMIT $3 OFFSET $4",
                                p, NP(p), sizeof **out, &rows, n);
    } else {
        db_param p[] = {db_text(user_id), db_int(lim), db_int(off)};
        rc = st_run(s, "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND org_id IS NULL", p, 1, &c);
        if (rc == STORE_OK)
            rc = st_select_list(s, &session_cols,
                                "FROM sessions WHERE user_id = $1 AND org_id IS NULL "
                                "ORDER BY updated_at DESC, id DESC LIMIT $2 OFFSET $3",
                                p, NP(p), sizeof **out, &rows, n);
    }
    *out = rows;
    if (rc == STORE_OK && total)
        *total = (long)db_cell_int(&c, 0, 0, 0);
    db_result_free(&c);
    return rc;
}

store_rc store_session_delete(store *s, const char *id)
{
    NEED(id);
    db_param p[] = {db_text(id)};
    return st_write_row(s, "DELETE FROM sessions WHERE id = $1", p, NP(p)); /* messages cascade */
}

store_rc store_sessions_delete_all(store *s, const char *user_id, const char *org_id, size_t max, char ***ids,
                                   size_t *n)
{
    *ids = NULL;
    *n = 0;
    NEED(user_id);
    int64_t lim = max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max;
    db_result r = DB_RESULT_INIT;
    store_rc rc;
    if (org_id) {
        db_param p[] = {db_text(user_id), db_text(org_id), db_int(lim)};
        rc = st_write(s,
                      "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE user_id = $1 AND org_id = $2 "
                      "ORDER BY updated_at DESC, id DESC LIMIT $3) RETURNING id",
                      p, NP(p), &r);
    } else {
        db_param p[] = {db_text(user_id), db_int(lim)};
        rc = st_write(
            s,
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE user_id = $1 AND org_id IS NULL "
            "ORDER BY updated_at DESC, id DESC LIMIT $2) RETURNING id",
            p, NP(p), &r);
    }
    if (rc == STORE_OK && r.nrows && !(*ids = calloc(r.nrows, sizeof **ids)))
        rc = st_fail(s, "out of memory");
    if (rc == STORE_OK) {
        for (size_t i = 0; i < r.nrows; i++)
            (*ids)[i] = db_take(&r, i, 0);
        *n = r.nrows;
    }
    db_result_free(&r);
    return rc;
}

store_rc store_sessions_delete_empty(store *s, long older_than_seconds, size_t max, size_t *n)
{
    *n = 0;
    char cutoff[32];
    st_ts_ago(older_than_seconds, cutoff);
    int64_t lim = max > (size_t)INT64_MAX ? INT64_MAX : (int64_t)max;
    db_param p[] = {db_text(cutoff), db_int(lim)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_write(s,
                           "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE created_at < $1 "
                           "AND NOT EXISTS (SELECT 1 FROM messages WHERE messages.session_id = sessions.id) "
                           "ORDER BY created_at LIMIT $2) RETURNING id",
                           p, NP(p), &r);
    if (rc == STORE_OK)
        *n = r.nrows;
    db_result_free(&r);
    return rc;
}

/* ---- messages ---- */

static const st_col message_col[] = {
    ST_TEXT_COL(message_row, id, "id"),
    ST_TEXT_COL(message_row, session_id, "session_id"),
    ST_TEXT_COL(message_row, role, "role"),
    ST_TEXT_COL(message_row, ephemeral_public_key, "ephemeral_public_key"),
    ST_TEXT_COL(message_row, iv, "iv"),
    ST_TEXT_COL(message_row, ciphertext, "ciphertext"),
    ST_TEXT_COL(message_row, auth_tag, "auth_tag"),
    ST_TEXT_COL(message_row, hkdf_salt, "hkdf_salt"),
    ST_TEXT_COL(message_row, model_used, "model_used"),
    ST_LONG_COL(message_row, input_tokens, "input_tokens"),
    ST_LONG_COL(message_row, output_tokens, "output_tokens"),
    ST_TEXT_COL(message_row, created_at, "created_at"),
    ST_TEXT_COL(message_row, history_tag, "history_tag"),
};
static const st_cols message_cols = ST_COLS(NULL, message_col);

void message_row_free(message_row *m)
{
    if (!m)
        return;
    st_clear(&message_cols, m);
    memset(m, 0, sizeof *m);
}

void message_list_free(message_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        message_row_free(&list[i]);
    free(list);
}

store_rc store_messages_list(store *s, const char *session_id, message_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    NEED(session_id);
    db_param p[] = {db_text(session_id)};
    void *rows;
    store_rc rc = st_select_list(s, &message_cols, "FROM messages WHERE session_id = $1 ORDER BY created_at, id", p,
                                 NP(p), sizeof **out, &rows, n);
    *out = rows;
    return rc;
}

store_rc store_message_set_tag(store *s, const char *session_id, const char *message_id, const char *tag)
{
    NEED(session_id);
    NEED(message_id);
    NEED(tag);
    db_param p[] = {db_text(session_id), db_text(message_id), db_text(tag)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_write(s,
                           "UPDATE messages SET history_tag = lower($3) WHERE session_id = $1 AND id = $2 "
                           "AND role = 'assistant' AND history_tag IS NULL RETURNING id",
                           p, NP(p), &r);
    bool set = rc == STORE_OK && r.nrows == 1;
    db_result_free(&r);
    if (rc != STORE_OK || set)
        return rc;
    /* nothing changed: no such message, or it has its tag already */
    db_param q[] = {db_text(session_id), db_text(message_id)};
    db_result e = DB_RESULT_INIT;
    rc = st_run(s, "SELECT history_tag FROM messages WHERE session_id = $1 AND id = $2 AND role = 'assistant'", q,
                NP(q), &e);
    if (rc == STORE_OK)
        rc = e.nrows ? STORE_CONFLICT : STORE_NOT_FOUND;
    db_result_free(&e);
    return rc;
}

static db_param tokens(long v) { return v < 0 ? db_null() : db_int(v); }

static store_rc insert_message(store *s, const char *id, const char *session_id, const char *role,
                               const message_row *m, const char *created_at)
{
    db_param p[] = {db_text(id),
                    db_text(session_id),
                    db_text(role),
                    db_text(m->ephemeral_public_key),
                    db_text(m->iv),
                    db_text(m->ciphertext),
                    db_text(m->auth_tag),
                    db_text(m->hkdf_salt),
                    db_text(m->model_used),
                    tokens(m->input_tokens),
                    tokens(m->output_tokens),
                    db_text(created_at)};
    return st_run(s,
                  "INSERT INTO messages (id, session_id, role, ephemeral_public_key, iv, ciphertext, auth_tag, "
                  "hkdf_salt, model_used, input_tokens, output_tokens, created_at) VALUES ($1, $2, $3, lower($4), "
                  "lower($5), lower($6), lower($7), lower($8), $9, $10, $11, $12)",
                  p, NP(p), NULL);
}

store_rc store_chat_commit(store *s, const session_row *new_session, const char *session_id,
                           message_row *user_msg, message_row *assistant_msg)
{
    if (!session_id && new_session)
        session_id = new_session->id;
    NEED(session_id);
    NEED(user_msg);
    NEED(assistant_msg);
    if (new_session && (!new_session->id || strcmp(new_session->id, session_id) != 0))
        return st_fail(s, "store_chat_commit: new_session->id differs from session_id");
    if (new_session && !new_session->user_id)
        return st_fail(s, "store_chat_commit: new_session->user_id is required");

    /* everything the caller gets back is allocated first: after the commit nothing can fail */
    char uid[37], aid[37], t_sess[32], t_user[32], t_asst[32];
    store_uuid(uid);
    store_uuid(aid);
    st_stamp(s, t_sess);
    /* st_stamp() strictly increases: the assistant's created_at is after the user's */
    st_stamp(s, t_user);
    st_stamp(s, t_asst);
    char *ret[4] = {strdup(uid), strdup(t_user), strdup(aid), strdup(t_asst)};
    store_rc rc = ret[0] && ret[1] && ret[2] && ret[3] ? st_tx_open(s) : st_fail(s, "out of memory");
    if (rc != STORE_OK)
        goto done;
    if (new_session) {
        db_param p[] = {db_text(session_id), db_text(new_session->user_id), db_text(new_session->org_id),
                        db_text(new_session->name ? new_session->name : DEFAULT_SESSION_NAME), db_text(t_sess)};
        char sql[ST_SQL_MAX];
        rc = session_insert_sql(s, sql);
        if (rc == STORE_OK)
            rc = st_run(s, sql, p, NP(p), NULL);
    }
    if (rc == STORE_OK)
        rc = insert_message(s, uid, session_id, "user", user_msg, t_user);
    if (rc == STORE_OK)
        rc = insert_message(s, aid, session_id, "assistant", assistant_msg, t_asst);
    if (rc == STORE_OK) {
        db_param p[] = {db_text(session_id), db_text(t_asst)};
        db_result r = DB_RESULT_INIT;
        rc = st_run(s, "UPDATE sessions SET updated_at = $2 WHERE id = $1", p, NP(p), &r);
        if (rc == STORE_OK && r.changes == 0) {
            st_fail(s, "the session does not exist");
            rc = STORE_NOT_FOUND;
        }
        db_result_free(&r);
    }
    rc = st_tx_close(s, rc);
    if (rc == STORE_OK) {
        char **slots[4] = {&user_msg->id, &user_msg->created_at, &assistant_msg->id, &assistant_msg->created_at};
        for (int i = 0; i < 4; i++) {
            free(*slots[i]);
            *slots[i] = ret[i];
            ret[i] = NULL;
        }
    }
done:
    for (int i = 0; i < 4; i++)
        free(ret[i]);
    return rc;
}

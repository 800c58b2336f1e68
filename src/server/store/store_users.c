/* store_users — the users table (store.h "users"): get, create, the key pair
 * columns, delete. A user_row's strings are its own, freed by user_row_free.
 * Deleting a user cascades to memberships, sessions and messages; audit rows stay.
 */
#include "server/store/store_int.h"

#include <string.h>

static const st_col user_col[] = {
    ST_TEXT_COL(user_row, id, "id"),
    ST_TEXT_COL(user_row, keys.public_key, "public_key"),
    ST_TEXT_COL(user_row, keys.encrypted_private_key, "encrypted_private_key"),
    ST_TEXT_COL(user_row, keys.iv, "encrypted_private_key_iv"),
    ST_TEXT_COL(user_row, keys.tag, "encrypted_private_key_tag"),
    ST_TEXT_COL(user_row, keys.salt, "key_salt"),
    ST_TEXT_COL(user_row, keys.recovery_encrypted_private_key, "recovery_encrypted_private_key"),
    ST_TEXT_COL(user_row, keys.recovery_iv, "recovery_iv"),
    ST_TEXT_COL(user_row, keys.recovery_tag, "recovery_tag"),
    ST_TEXT_COL(user_row, keys.recovery_salt, "recovery_salt"),
    ST_BOOL_COL(user_row, has_encryption_keys, "has_encryption_keys"),
    ST_TEXT_COL(user_row, encryption_created_at, "encryption_created_at"),
    ST_TEXT_COL(user_row, created_at, "created_at"),
};
static const st_cols user_cols = ST_COLS(NULL, user_col);

void user_row_free(user_row *u)
{
    if (!u)
        return;
    st_clear(&user_cols, u);
    memset(u, 0, sizeof *u);
}

store_rc store_user_get(store *s, const char *id, user_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    return st_select_one(s, &user_cols, "FROM users WHERE id = $1", p, NP(p), out);
}

store_rc store_user_create(store *s, const char *id)
{
    NEED(id);
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(now)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_write(s,
                           "INSERT INTO users (id, has_encryption_keys, created_at, updated_at) "
                           "VALUES ($1, FALSE, $2, $2) ON CONFLICT (id) DO NOTHING",
                           p, NP(p), &r);
    if (rc == STORE_OK && r.changes == 0)
        rc = STORE_CONFLICT;
    db_result_free(&r);
    return rc;
}

/* $1 the user, $2..$10 the key pair's columns in the table's order, $11 the time */
#define KEY_PARAMS 11
static void key_params(db_param p[KEY_PARAMS], const char *id, const user_keys *k, const char *now)
{
    const char *v[KEY_PARAMS] = {id, k->public_key, k->encrypted_private_key, k->iv, k->tag, k->salt,
                                 k->recovery_encrypted_private_key, k->recovery_iv, k->recovery_tag,
                                 k->recovery_salt, now};
    for (size_t i = 0; i < KEY_PARAMS; i++)
        p[i] = db_text(v[i]);
}

store_rc store_user_set_keys(store *s, const char *id, const user_keys *k, bool overwrite)
{
    NEED(id);
    NEED(k);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    bool has = false;
    rc = st_read_flag(s, "SELECT has_encryption_keys FROM users WHERE id = $1", id, &has);
    if (rc == STORE_OK && has && !overwrite) {
        st_fail(s, "the user already has encryption keys");
        rc = STORE_CONFLICT;
    }
    if (rc == STORE_OK) {
        char now[32];
        st_stamp(s, now);
        /* hex columns hold lower-case hex whatever the caller passed */
        db_param p[KEY_PARAMS];
        key_params(p, id, k, now);
        rc = st_run(s,
                    "UPDATE users SET public_key = lower($2), encrypted_private_key = lower($3), "
                    "encrypted_private_key_iv = lower($4), encrypted_private_key_tag = lower($5), "
                    "key_salt = lower($6), recovery_encrypted_private_key = lower($7), "
                    "recovery_iv = lower($8), recovery_tag = lower($9), recovery_salt = lower($10), "
                    "has_encryption_keys = TRUE, encryption_created_at = $11, updated_at = $11 WHERE id = $1",
                    p, KEY_PARAMS, NULL);
    }
    return st_tx_close(s, rc);
}

store_rc store_user_replace_keys(store *s, const char *id, const user_keys *k)
{
    NEED(id);
    NEED(k);
    char now[32];
    st_stamp(s, now);
    db_param p[KEY_PARAMS];
    key_params(p, id, k, now);
    /* one conditional UPDATE: a concurrent delete or a new key pair between the
     * caller's check and this write cannot be overwritten with the old pair */
    return st_write_row(s,
                        "UPDATE users SET encrypted_private_key = lower($3), encrypted_private_key_iv = lower($4), "
                        "encrypted_private_key_tag = lower($5), key_salt = lower($6), "
                        "recovery_encrypted_private_key = lower($7), recovery_iv = lower($8), "
                        "recovery_tag = lower($9), recovery_salt = lower($10), updated_at = $11 "
                        "WHERE id = $1 AND has_encryption_keys = TRUE AND public_key = lower($2)",
                        p, KEY_PARAMS);
}

store_rc store_user_clear_keys(store *s, const char *id)
{
    NEED(id);
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(now)};
    return st_write_row(s,
                        "UPDATE users SET public_key = NULL, encrypted_private_key = NULL, "
                        "encrypted_private_key_iv = NULL, encrypted_private_key_tag = NULL, key_salt = NULL, "
                        "recovery_encrypted_private_key = NULL, recovery_iv = NULL, recovery_tag = NULL, "
                        "recovery_salt = NULL, has_encryption_keys = FALSE, encryption_created_at = NULL, "
                        "updated_at = $2 WHERE id = $1",
                        p, NP(p));
}

store_rc store_user_delete(store *s, const char *id)
{
    NEED(id);
    db_param p[] = {db_text(id)};
    /* memberships and sessions (then messages) go by ON DELETE CASCADE; audit_logs
     * has no foreign key, so its rows stay (defect §10.11) */
    return st_write_row(s, "DELETE FROM users WHERE id = $1", p, NP(p));
}

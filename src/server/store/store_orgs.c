/* store_orgs — the organizations and organization_memberships tables (store.h
 * "organizations", "memberships"). An org_row's or membership_row's strings are
 * its own, freed by org_row_free / membership_row_free; a list is an array of
 * rows freed by membership_list_free. Deleting an organization cascades to its
 * memberships and sessions; audit rows stay. Roles are stored as the API values.
 */
#include "server/store/store_int.h"

#include <stdio.h>
#include <string.h>

static const st_col org_col[] = {
    ST_TEXT_COL(org_row, id, "id"),
    ST_TEXT_COL(org_row, name, "name"),
    ST_TEXT_COL(org_row, slug, "slug"),
    ST_BOOL_COL(org_row, has_encryption_keys, "has_encryption_keys"),
    ST_TEXT_COL(org_row, org_public_key, "org_public_key"),
    ST_TEXT_COL(org_row, admin_encrypted_private_key, "admin_encrypted_private_key"),
    ST_TEXT_COL(org_row, admin_iv, "admin_encrypted_private_key_iv"),
    ST_TEXT_COL(org_row, admin_tag, "admin_encrypted_private_key_tag"),
    ST_TEXT_COL(org_row, admin_salt, "admin_key_salt"),
    ST_TEXT_COL(org_row, encryption_created_at, "encryption_created_at"),
    ST_TEXT_COL(org_row, encryption_created_by, "encryption_created_by"),
    ST_TEXT_COL(org_row, created_at, "created_at"),
    ST_TEXT_COL(org_row, updated_at, "updated_at"),
};
static const st_cols org_cols = ST_COLS(NULL, org_col);

void org_row_free(org_row *o)
{
    if (!o)
        return;
    st_clear(&org_cols, o);
    memset(o, 0, sizeof *o);
}

store_rc store_org_get(store *s, const char *id, org_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    return st_select_one(s, &org_cols, "FROM organizations WHERE id = $1", p, NP(p), out);
}

store_rc store_org_upsert(store *s, const char *id, const char *name, const char *slug, bool *created)
{
    NEED(id);
    NEED(name);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(name), db_text(slug), db_text(now)};
    db_result r = DB_RESULT_INIT;
    rc = st_run(s, "SELECT 1 FROM organizations WHERE id = $1", p, 1, &r);
    bool exists = r.nrows > 0;
    db_result_free(&r);
    if (rc == STORE_OK && exists)
        rc = st_run(s, "UPDATE organizations SET name = $2, slug = COALESCE($3, slug), updated_at = $4 WHERE id = $1",
                    p, NP(p), NULL);
    else if (rc == STORE_OK)
        rc = st_run(s,
                    "INSERT INTO organizations (id, name, slug, has_encryption_keys, created_at, updated_at) "
                    "VALUES ($1, $2, $3, FALSE, $4, $4)",
                    p, NP(p), NULL);
    rc = st_tx_close(s, rc);
    if (rc == STORE_OK && created)
        *created = !exists;
    return rc;
}

store_rc store_org_create(store *s, const char *id, const char *name, const char *slug, bool *created)
{
    NEED(id);
    NEED(name);
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(id), db_text(name), db_text(slug), db_text(now)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_write(s,
                           "INSERT INTO organizations (id, name, slug, has_encryption_keys, created_at, updated_at) "
                           "VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (id) DO NOTHING",
                           p, NP(p), &r);
    if (rc == STORE_OK && created)
        *created = r.changes > 0;
    db_result_free(&r);
    return rc;
}

store_rc store_org_set_keys(store *s, const char *id, const char *public_key, const char *enc_priv,
                            const char *iv, const char *tag, const char *salt, const char *created_by)
{
    NEED(id);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    bool has = false;
    rc = st_read_flag(s, "SELECT has_encryption_keys FROM organizations WHERE id = $1", id, &has);
    if (rc == STORE_OK && has) {
        st_fail(s, "the organization already has encryption keys");
        rc = STORE_CONFLICT;
    }
    if (rc == STORE_OK) {
        char now[32];
        st_stamp(s, now);
        db_param p[] = {db_text(id),  db_text(public_key), db_text(enc_priv),   db_text(iv),
                        db_text(tag), db_text(salt),       db_text(created_by), db_text(now)};
        rc = st_run(s,
                    "UPDATE organizations SET org_public_key = lower($2), admin_encrypted_private_key = lower($3), "
                    "admin_encrypted_private_key_iv = lower($4), admin_encrypted_private_key_tag = lower($5), "
                    "admin_key_salt = lower($6), has_encryption_keys = TRUE, encryption_created_at = $8, "
                    "encryption_created_by = $7, updated_at = $8 WHERE id = $1",
                    p, NP(p), NULL);
    }
    return st_tx_close(s, rc);
}

store_rc store_org_delete(store *s, const char *id)
{
    NEED(id);
    db_param p[] = {db_text(id)};
    /* memberships and sessions (then messages) go by ON DELETE CASCADE; audit_logs
     * has no foreign key, so the org's audit trail stays (defect §10.11) */
    return st_write_row(s, "DELETE FROM organizations WHERE id = $1", p, NP(p));
}

/* ---- memberships ---- */

static const st_col membership_col[] = {
    ST_TEXT_COL(membership_row, id, "m.id"),
    ST_TEXT_COL(membership_row, user_id, "m.user_id"),
    ST_TEXT_COL(membership_row, org_id, "m.org_id"),
    ST_TEXT_COL(membership_row, role, "m.role"),
    ST_BOOL_COL(membership_row, has_org_key, "m.has_org_key"),
    ST_TEXT_COL(membership_row, org_key.ephemeral_public_key, "m.encrypted_org_key_ephemeral"),
    ST_TEXT_COL(membership_row, org_key.iv, "m.encrypted_org_key_iv"),
    ST_TEXT_COL(membership_row, org_key.ciphertext, "m.encrypted_org_key_ciphertext"),
    ST_TEXT_COL(membership_row, org_key.auth_tag, "m.encrypted_org_key_tag"),
    ST_TEXT_COL(membership_row, org_key.hkdf_salt, "m.encrypted_org_key_hkdf_salt"),
    ST_TEXT_COL(membership_row, key_distributed_at, "m.key_distributed_at"),
    ST_TEXT_COL(membership_row, key_distributed_by, "m.key_distributed_by"),
    ST_TEXT_COL(membership_row, joined_at, "m.joined_at"),
    ST_TEXT_COL(membership_row, created_at, "m.created_at"),
    ST_TEXT_COL(membership_row, updated_at, "m.updated_at"),
};
static const st_cols membership_cols = ST_COLS(NULL, membership_col);

/* the joined columns of store_memberships_for_user and _for_org */
static const st_col with_org_col[] = {
    ST_TEXT_COL(membership_row, org_name, "o.name"),
    ST_TEXT_COL(membership_row, org_slug, "o.slug"),
};
static const st_cols membership_with_org_cols = ST_COLS(&membership_cols, with_org_col);
static const st_col with_user_col[] = {
    ST_BOOL_COL(membership_row, user_has_keys, "u.has_encryption_keys"),
    ST_TEXT_COL(membership_row, user_public_key, "u.public_key"),
};
static const st_cols membership_with_user_cols = ST_COLS(&membership_cols, with_user_col);

void membership_row_free(membership_row *m)
{
    if (!m)
        return;
    /* st_clear leaves the fields NULL, so the shared base columns are freed once */
    st_clear(&membership_with_org_cols, m);
    st_clear(&membership_with_user_cols, m);
    memset(m, 0, sizeof *m);
}

void membership_list_free(membership_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        membership_row_free(&list[i]);
    free(list);
}

store_rc store_membership_get(store *s, const char *user_id, const char *org_id, membership_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(user_id);
    NEED(org_id);
    db_param p[] = {db_text(user_id), db_text(org_id)};
    return st_select_one(s, &membership_cols,
                         "FROM organization_memberships m WHERE m.user_id = $1 AND m.org_id = $2", p, NP(p), out);
}

store_rc store_membership_get_by_id(store *s, const char *id, membership_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    return st_select_one(s, &membership_cols, "FROM organization_memberships m WHERE m.id = $1", p, NP(p), out);
}

static bool valid_role(const char *role) { return strcmp(role, ROLE_ADMIN) == 0 || strcmp(role, ROLE_MEMBER) == 0; }

store_rc store_membership_upsert(store *s, const char *id, const char *user_id, const char *org_id,
                                 const char *role, bool *created, char **old_role)
{
    if (old_role)
        *old_role = NULL;
    NEED(id);
    NEED(user_id);
    NEED(org_id);
    /* only the API values are stored, never enum names (defect §10.12) */
    if (role && !valid_role(role))
        return st_fail(s, "invalid membership role (expected %s or %s)", ROLE_ADMIN, ROLE_MEMBER);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    char now[32];
    st_stamp(s, now);
    db_param key[] = {db_text(user_id), db_text(org_id)};
    db_result r = DB_RESULT_INIT;
    rc = st_run(s, "SELECT role FROM organization_memberships WHERE user_id = $1 AND org_id = $2", key, NP(key), &r);
    bool exists = rc == STORE_OK && r.nrows > 0;
    char *prev = exists ? db_take(&r, 0, 0) : NULL;
    db_result_free(&r);
    if (rc == STORE_OK && exists && role) {
        db_param p[] = {db_text(user_id), db_text(org_id), db_text(role), db_text(now)};
        rc = st_run(s,
                    "UPDATE organization_memberships SET role = $3, updated_at = $4 "
                    "WHERE user_id = $1 AND org_id = $2",
                    p, NP(p), NULL);
    } else if (rc == STORE_OK && !exists) {
        db_param p[] = {db_text(id), db_text(user_id), db_text(org_id), db_text(role ? role : ROLE_MEMBER),
                        db_text(now)};
        rc = st_run(s,
                    "INSERT INTO organization_memberships (id, user_id, org_id, role, has_org_key, joined_at, "
                    "created_at, updated_at) VALUES ($1, $2, $3, $4, FALSE, $5, $5, $5)",
                    p, NP(p), NULL);
        if (rc == STORE_NOT_FOUND)
            snprintf(s->err, sizeof s->err, "the user or the organization does not exist");
    }
    rc = st_tx_close(s, rc);
    if (rc == STORE_OK) {
        if (created)
            *created = !exists;
        if (old_role) {
            *old_role = prev;
            prev = NULL;
        }
    }
    free(prev);
    return rc;
}

store_rc store_membership_set_org_key(store *s, const char *membership_id, const org_key_ep *k,
                                      const char *distributed_by)
{
    NEED(membership_id);
    NEED(k);
    char now[32];
    st_stamp(s, now);
    db_param p[] = {db_text(membership_id), db_text(k->ephemeral_public_key), db_text(k->iv),
                    db_text(k->ciphertext),  db_text(k->auth_tag),            db_text(k->hkdf_salt),
                    db_text(distributed_by), db_text(now)};
    return st_write_row(s,
                        "UPDATE organization_memberships SET encrypted_org_key_ephemeral = lower($2), "
                        "encrypted_org_key_iv = lower($3), encrypted_org_key_ciphertext = lower($4), "
                        "encrypted_org_key_tag = lower($5), encrypted_org_key_hkdf_salt = lower($6), "
                        "has_org_key = TRUE, key_distributed_at = $8, key_distributed_by = $7, updated_at = $8 "
                        "WHERE id = $1",
                        p, NP(p));
}

store_rc store_membership_clear_org_key(store *s, const char *membership_id, bool *had_key)
{
    NEED(membership_id);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    bool had = false;
    rc = st_read_flag(s, "SELECT has_org_key FROM organization_memberships WHERE id = $1", membership_id, &had);
    if (rc == STORE_OK) {
        char now[32];
        st_stamp(s, now);
        db_param p[] = {db_text(membership_id), db_text(now)};
        rc = st_run(s,
                    "UPDATE organization_memberships SET encrypted_org_key_ephemeral = NULL, "
                    "encrypted_org_key_iv = NULL, encrypted_org_key_ciphertext = NULL, encrypted_org_key_tag = NULL, "
                    "encrypted_org_key_hkdf_salt = NULL, has_org_key = FALSE, key_distributed_at = NULL, "
                    "key_distributed_by = NULL, updated_at = $2 WHERE id = $1",
                    p, NP(p), NULL);
    }
    rc = st_tx_close(s, rc);
    if (rc == STORE_OK && had_key)
        *had_key = had;
    return rc;
}

store_rc store_membership_delete(store *s, const char *membership_id)
{
    NEED(membership_id);
    db_param p[] = {db_text(membership_id)};
    return st_write_row(s, "DELETE FROM organization_memberships WHERE id = $1", p, NP(p));
}

static store_rc membership_list(store *s, const st_cols *t, const char *from, const char *id, membership_row **out,
                                size_t *n)
{
    db_param p[] = {db_text(id)};
    void *rows;
    store_rc rc = st_select_list(s, t, from, p, NP(p), sizeof **out, &rows, n);
    *out = rows;
    return rc;
}

store_rc store_memberships_for_user(store *s, const char *user_id, membership_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    NEED(user_id);
    return membership_list(s, &membership_with_org_cols,
                           "FROM organization_memberships m JOIN organizations o ON o.id = m.org_id "
                           "WHERE m.user_id = $1 ORDER BY m.joined_at, m.id",
                           user_id, out, n);
}

store_rc store_memberships_for_org(store *s, const char *org_id, membership_row **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    NEED(org_id);
    return membership_list(s, &membership_with_user_cols,
                           "FROM organization_memberships m JOIN users u ON u.id = m.user_id "
                           "WHERE m.org_id = $1 ORDER BY m.joined_at, m.id",
                           org_id, out, n);
}

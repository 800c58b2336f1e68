/* store_orgs — the organizations and organization_memberships tables (store.h
 * "organizations", "memberships"). An org_row's or membership_row's strings are
 * its own, freed by org_row_free / membership_row_free; a list is an array of
 * rows freed by membership_list_free. Deleting an organization cascades to its
 * memberships and sessions; audit rows stay. Roles are stored as the API values.
 */
#include "server/store/store_int.h"

#include <stdio.h>
#include <string.h>

#define ORG_COLS                                                                                   \
    "id, name, slug, has_encryption_keys, org_public_key, admin_encrypted_private_key, "           \
    "admin_encrypted_private_key_iv, admin_encrypted_private_key_tag, admin_key_salt, "            \
    "encryption_created_at, encryption_created_by, created_at, updated_at"

void org_row_free(org_row *o)
{
    if (!o)
        return;
    free(o->id);
    free(o->name);
    free(o->slug);
    free(o->org_public_key);
    free(o->admin_encrypted_private_key);
    free(o->admin_iv);
    free(o->admin_tag);
    free(o->admin_salt);
    free(o->encryption_created_at);
    free(o->encryption_created_by);
    free(o->created_at);
    free(o->updated_at);
    memset(o, 0, sizeof *o);
}

store_rc store_org_get(store *s, const char *id, org_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_run(s, "SELECT " ORG_COLS " FROM organizations WHERE id = $1", p, NP(p), &r);
    if (rc == STORE_OK && r.nrows == 0)
        rc = STORE_NOT_FOUND;
    if (rc == STORE_OK) {
        out->id = db_take(&r, 0, 0);
        out->name = db_take(&r, 0, 1);
        out->slug = db_take(&r, 0, 2);
        out->has_encryption_keys = db_cell_bool(&r, 0, 3);
        out->org_public_key = db_take(&r, 0, 4);
        out->admin_encrypted_private_key = db_take(&r, 0, 5);
        out->admin_iv = db_take(&r, 0, 6);
        out->admin_tag = db_take(&r, 0, 7);
        out->admin_salt = db_take(&r, 0, 8);
        out->encryption_created_at = db_take(&r, 0, 9);
        out->encryption_created_by = db_take(&r, 0, 10);
        out->created_at = db_take(&r, 0, 11);
        out->updated_at = db_take(&r, 0, 12);
    }
    db_result_free(&r);
    return rc;
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

#define MEM_COLS                                                                                   \
    "m.id, m.user_id, m.org_id, m.role, m.has_org_key, m.encrypted_org_key_ephemeral, "            \
    "m.encrypted_org_key_iv, m.encrypted_org_key_ciphertext, m.encrypted_org_key_tag, "            \
    "m.encrypted_org_key_hkdf_salt, m.key_distributed_at, m.key_distributed_by, m.joined_at, "     \
    "m.created_at, m.updated_at"
#define MEM_NCOLS 15

static void fill_membership(db_result *r, size_t i, membership_row *m)
{
    memset(m, 0, sizeof *m);
    m->id = db_take(r, i, 0);
    m->user_id = db_take(r, i, 1);
    m->org_id = db_take(r, i, 2);
    m->role = db_take(r, i, 3);
    m->has_org_key = db_cell_bool(r, i, 4);
    m->org_key.ephemeral_public_key = db_take(r, i, 5);
    m->org_key.iv = db_take(r, i, 6);
    m->org_key.ciphertext = db_take(r, i, 7);
    m->org_key.auth_tag = db_take(r, i, 8);
    m->org_key.hkdf_salt = db_take(r, i, 9);
    m->key_distributed_at = db_take(r, i, 10);
    m->key_distributed_by = db_take(r, i, 11);
    m->joined_at = db_take(r, i, 12);
    m->created_at = db_take(r, i, 13);
    m->updated_at = db_take(r, i, 14);
}

void membership_row_free(membership_row *m)
{
    if (!m)
        return;
    free(m->id);
    free(m->user_id);
    free(m->org_id);
    free(m->role);
    free(m->org_key.ephemeral_public_key);
    free(m->org_key.iv);
    free(m->org_key.ciphertext);
    free(m->org_key.auth_tag);
    free(m->org_key.hkdf_salt);
    free(m->key_distributed_at);
    free(m->key_distributed_by);
    free(m->joined_at);
    free(m->created_at);
    free(m->updated_at);
    free(m->org_name);
    free(m->org_slug);
    free(m->user_public_key);
    memset(m, 0, sizeof *m);
}

void membership_list_free(membership_row *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        membership_row_free(&list[i]);
    free(list);
}

static store_rc membership_one(store *s, const char *sql, const db_param *p, size_t n, membership_row *out)
{
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_run(s, sql, p, n, &r);
    if (rc == STORE_OK && r.nrows == 0)
        rc = STORE_NOT_FOUND;
    if (rc == STORE_OK)
        fill_membership(&r, 0, out);
    db_result_free(&r);
    return rc;
}

store_rc store_membership_get(store *s, const char *user_id, const char *org_id, membership_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(user_id);
    NEED(org_id);
    db_param p[] = {db_text(user_id), db_text(org_id)};
    return membership_one(s,
                          "SELECT " MEM_COLS " FROM organization_memberships m "
                          "WHERE m.user_id = $1 AND m.org_id = $2",
                          p, NP(p), out);
}

store_rc store_membership_get_by_id(store *s, const char *id, membership_row *out)
{
    memset(out, 0, sizeof *out);
    NEED(id);
    db_param p[] = {db_text(id)};
    return membership_one(s, "SELECT " MEM_COLS " FROM organization_memberships m WHERE m.id = $1", p, NP(p), out);
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

/* for_user: extra columns org name, slug; else user has-keys, public key */
static store_rc membership_list(store *s, const char *sql, const char *id, bool for_user, membership_row **out,
                                size_t *n)
{
    *out = NULL;
    *n = 0;
    db_param p[] = {db_text(id)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_run(s, sql, p, NP(p), &r);
    if (rc == STORE_OK)
        ALLOC_ROWS(s, rc, *out, r.nrows);
    for (size_t i = 0; rc == STORE_OK && i < r.nrows; i++) {
        membership_row *m = &(*out)[i];
        fill_membership(&r, i, m);
        if (for_user) {
            m->org_name = db_take(&r, i, MEM_NCOLS);
            m->org_slug = db_take(&r, i, MEM_NCOLS + 1);
        } else {
            m->user_has_keys = db_cell_bool(&r, i, MEM_NCOLS);
            m->user_public_key = db_take(&r, i, MEM_NCOLS + 1);
        }
    }
    if (rc == STORE_OK)
        *n = r.nrows;
    db_result_free(&r);
    return rc;
}

store_rc store_memberships_for_user(store *s, const char *user_id, membership_row **out, size_t *n)
{
    NEED(user_id);
    return membership_list(s,
                           "SELECT " MEM_COLS ", o.name, o.slug FROM organization_memberships m "
                           "JOIN organizations o ON o.id = m.org_id WHERE m.user_id = $1 "
                           "ORDER BY m.joined_at, m.id",
                           user_id, true, out, n);
}

store_rc store_memberships_for_org(store *s, const char *org_id, membership_row **out, size_t *n)
{
    NEED(org_id);
    return membership_list(s,
                           "SELECT " MEM_COLS ", u.has_encryption_keys, u.public_key FROM organization_memberships m "
                           "JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 "
                           "ORDER BY m.joined_at, m.id",
                           org_id, false, out, n);
}

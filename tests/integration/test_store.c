/* store: one suite, run against both backends — SQLite in a temp file, then a
 * real throwaway PostgreSQL server (pg_harness). Every test makes its own ids,
 * so the tests share one database per backend without seeing each other.
 * Then the db layer's cases (tests/unit/server/store/db_cases.h, run on SQLite
 * by test_db) on a PostgreSQL server of their own.
 * Stays whole: one suite for the store, run once per backend.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "pg_harness.h"
#include "server/store/db.h"
#include "server/store/store.h"

#include "../unit/server/store/db_cases.h"

#define PASSWORD "Sup3rS3cretPw"

typedef struct fx {
    const char *backend;
    char url[600];
    store *s;
    pg_server pg;
} fx;

static fx g_sqlite = {.backend = "sqlite"};
static fx g_pg = {.backend = "postgresql"};

/* ---- helpers ---- */

/* A fresh id "<prefix>_<uuid>" in one of 16 rotating slots. */
static const char *new_id(const char *prefix)
{
    static char slots[16][80];
    static int next;
    char *s = slots[next++ % 16];
    char u[37];
    store_uuid(u);
    snprintf(s, sizeof slots[0], "%s_%s", prefix, u);
    return s;
}

/* n hex chars of c (upper case when c is a letter in upper case). */
static const char *hexs(size_t n, char c)
{
    static char slots[16][300];
    static int next;
    char *s = slots[next++ % 16];
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* The store's timestamp format: YYYY-MM-DDTHH:MM:SS.ffffff */
static bool is_ts(const char *t)
{
    const char *shape = "dddd-dd-ddTdd:dd:dd.dddddd";
    if (!t || strlen(t) != strlen(shape))
        return false;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !(t[i] >= '0' && t[i] <= '9') : t[i] != shape[i])
            return false;
    return true;
}

static fx *F(void **state)
{
    fx *f = *state;
    assert_non_null(f);
    assert_non_null(f->s);
    return f;
}

static void mk_user(store *s, const char *id) { assert_int_equal(store_user_create(s, id), STORE_OK); }

static void mk_org(store *s, const char *id, const char *name)
{
    bool created = false;
    assert_int_equal(store_org_upsert(s, id, name, NULL, &created), STORE_OK);
    assert_true(created);
}

static void set_user_keys(store *s, const char *id, char c)
{
    user_keys k = {.public_key = (char *)hexs(64, c), .encrypted_private_key = (char *)hexs(96, c),
                   .iv = (char *)hexs(32, c), .tag = (char *)hexs(32, c), .salt = (char *)hexs(64, c)};
    assert_int_equal(store_user_set_keys(s, id, &k, false), STORE_OK);
}

/* An EncryptedPayload-shaped message with every hex field made of c. */
static message_row msg(char c, const char *model, long in, long out)
{
    message_row m = {0};
    m.ephemeral_public_key = (char *)hexs(64, c);
    m.iv = (char *)hexs(32, c);
    m.ciphertext = (char *)hexs(40, c);
    m.auth_tag = (char *)hexs(32, c);
    m.hkdf_salt = (char *)hexs(64, c);
    m.model_used = (char *)model;
    m.input_tokens = in;
    m.output_tokens = out;
    return m;
}

/* The strings the store filled in (id, created_at); the rest are borrowed. */
static void msg_release(message_row *m)
{
    free(m->id);
    free(m->created_at);
    m->id = m->created_at = NULL;
}

static void commit_chat(store *s, const session_row *ns, const char *sid)
{
    message_row u = msg('a', "m1", -1, -1), a = msg('b', "m1", 10, 20);
    assert_int_equal(store_chat_commit(s, ns, sid, &u, &a), STORE_OK);
    msg_release(&u);
    msg_release(&a);
}

static size_t count_messages(store *s, const char *sid)
{
    message_row *m;
    size_t n;
    assert_int_equal(store_messages_list(s, sid, &m, &n), STORE_OK);
    message_list_free(m, n);
    return n;
}

static size_t count_audit(store *s, const char *org_id)
{
    audit_row *a;
    size_t n;
    assert_int_equal(store_audit_list(s, org_id, 1000, &a, &n), STORE_OK);
    audit_list_free(a, n);
    return n;
}

/* ---- migrations, ping, transactions ---- */

static void test_migrations_idempotent(void **state)
{
    fx *f = F(state);
    assert_string_equal(store_backend(f->s), f->backend);
    assert_int_equal(store_schema_version(f->s), 3);
    const char *uid = new_id("user");
    mk_user(f->s, uid);

    /* reopening runs the migrations again: nothing is re-applied, nothing is lost */
    char err[512];
    store *again = store_open(f->url, err, sizeof err);
    assert_non_null(again);
    assert_int_equal(store_schema_version(again), 3);
    user_row u;
    assert_int_equal(store_user_get(again, uid, &u), STORE_OK);
    user_row_free(&u);
    store_close(again);

    db *d = db_open(f->url, err, sizeof err);
    assert_non_null(d);
    db_result r = DB_RESULT_INIT;
    assert_int_equal(db_exec(d, "SELECT COUNT(*), MIN(version) FROM schema_migrations", NULL, 0, &r), DB_OK);
    assert_int_equal(db_cell_int(&r, 0, 0, -1), 3);
    assert_int_equal(db_cell_int(&r, 0, 1, -1), 1);
    db_result_free(&r);
    db_close(d);
}

static void test_ping_and_time(void **state)
{
    fx *f = F(state);
    assert_int_equal(store_ping(f->s), STORE_OK);
    char t[32], u1[37], u2[37];
    store_now(t);
    assert_true(is_ts(t));
    store_uuid(u1);
    store_uuid(u2);
    assert_int_equal(strlen(u1), 36);
    assert_true(u1[14] == '4');                                   /* version 4 */
    assert_non_null(strchr("89ab", u1[19]));                      /* RFC 4122 variant */
    assert_string_not_equal(u1, u2);
}

static void test_transactions(void **state)
{
    store *s = F(state)->s;
    const char *a = new_id("user"), *b = new_id("user"), *c = new_id("user");
    user_row u;

    assert_false(store_in_transaction(s));
    assert_int_equal(store_begin(s), STORE_OK);
    assert_true(store_in_transaction(s));
    assert_int_equal(store_begin(s), STORE_ERR); /* no nesting */
    mk_user(s, a);
    assert_int_equal(store_rollback(s), STORE_OK);
    assert_false(store_in_transaction(s));
    assert_int_equal(store_user_get(s, a, &u), STORE_NOT_FOUND);

    assert_int_equal(store_begin(s), STORE_OK);
    mk_user(s, b);
    /* a failing operation inside the transaction leaves it usable (a savepoint) */
    assert_int_equal(store_session_create(s, new_id("sess"), "no-such-user", NULL, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_user_create(s, b), STORE_CONFLICT);
    mk_user(s, c);
    assert_int_equal(store_commit(s), STORE_OK);
    assert_int_equal(store_user_get(s, b, &u), STORE_OK);
    user_row_free(&u);
    assert_int_equal(store_user_get(s, c, &u), STORE_OK);
    user_row_free(&u);

    assert_int_equal(store_commit(s), STORE_ERR);
    assert_true(strlen(store_last_error(s)) > 0);
    assert_int_equal(store_rollback(s), STORE_ERR);

    /* a whole chat inside a rolled-back transaction leaves nothing */
    const char *sid = new_id("sess");
    session_row ns = {.id = (char *)sid, .user_id = (char *)b};
    assert_int_equal(store_begin(s), STORE_OK);
    commit_chat(s, &ns, sid);
    assert_int_equal(count_messages(s, sid), 2);
    assert_int_equal(store_rollback(s), STORE_OK);
    session_row sr;
    assert_int_equal(store_session_get(s, sid, &sr), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, sid), 0);
}

/* Terminates the store's server connections and waits until they are gone. */
static void drop_store_connections(const char *url)
{
    char err[512];
    db *d = db_open(url, err, sizeof err);
    assert_non_null(d);
    db_result r = DB_RESULT_INIT;
    assert_int_equal(db_exec(d,
                             "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE application_name = 'veild' AND pid <> pg_backend_pid()",
                             NULL, 0, &r),
                     DB_OK);
    assert_true(r.nrows >= 1);
    db_result_free(&r);
    /* pg_terminate_backend only signals: wait until the backends are gone */
    for (int i = 0; i < 500; i++) {
        assert_int_equal(db_exec(d,
                                 "SELECT COUNT(*) FROM pg_stat_activity "
                                 "WHERE application_name = 'veild' AND pid <> pg_backend_pid()",
                                 NULL, 0, &r),
                         DB_OK);
        int64_t left = db_cell_int(&r, 0, 0, -1);
        db_result_free(&r);
        if (left == 0)
            break;
        usleep(10000);
    }
    db_close(d);
}

/* PostgreSQL only: after the server drops the connection, a read reconnects
 * and succeeds (prepared statements are made again); a write that finds the
 * connection gone fails (its outcome is unknown in general), and the next call
 * reconnects. */
static void test_reconnect(void **state)
{
    fx *f = F(state);
    if (strcmp(f->backend, "postgresql") != 0)
        return;
    const char *uid = new_id("user");
    mk_user(f->s, uid);

    drop_store_connections(f->url);
    assert_int_equal(store_ping(f->s), STORE_OK);
    user_row u;
    assert_int_equal(store_user_get(f->s, uid, &u), STORE_OK);
    user_row_free(&u);

    drop_store_connections(f->url);
    const char *uid2 = new_id("user");
    assert_int_equal(store_user_create(f->s, uid2), STORE_ERR);
    assert_int_equal(store_user_create(f->s, uid2), STORE_OK);
}

/* ---- users ---- */

static void test_users(void **state)
{
    store *s = F(state)->s;
    const char *id = new_id("user");
    user_row u;

    assert_int_equal(store_user_get(s, id, &u), STORE_NOT_FOUND);
    assert_int_equal(store_user_create(s, id), STORE_OK);
    assert_int_equal(store_user_create(s, id), STORE_CONFLICT);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_string_equal(u.id, id);
    assert_false(u.has_encryption_keys);
    assert_null(u.keys.public_key);
    assert_null(u.encryption_created_at);
    assert_true(is_ts(u.created_at));
    user_row_free(&u);

    /* keys: upper case in, lower case stored; recovery fields optional */
    user_keys k = {.public_key = (char *)hexs(64, 'A'), .encrypted_private_key = (char *)hexs(100, 'B'),
                   .iv = (char *)hexs(32, 'c'), .tag = (char *)hexs(32, 'D'), .salt = (char *)hexs(64, 'e'),
                   .recovery_encrypted_private_key = (char *)hexs(80, 'F'), .recovery_iv = (char *)hexs(32, '1'),
                   .recovery_tag = (char *)hexs(32, '2'), .recovery_salt = (char *)hexs(64, '3')};
    assert_int_equal(store_user_set_keys(s, id, &k, false), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_true(u.has_encryption_keys);
    assert_string_equal(u.keys.public_key, hexs(64, 'a'));
    assert_string_equal(u.keys.encrypted_private_key, hexs(100, 'b'));
    assert_string_equal(u.keys.iv, hexs(32, 'c'));
    assert_string_equal(u.keys.tag, hexs(32, 'd'));
    assert_string_equal(u.keys.salt, hexs(64, 'e'));
    assert_string_equal(u.keys.recovery_encrypted_private_key, hexs(80, 'f'));
    assert_string_equal(u.keys.recovery_iv, hexs(32, '1'));
    assert_string_equal(u.keys.recovery_tag, hexs(32, '2'));
    assert_string_equal(u.keys.recovery_salt, hexs(64, '3'));
    assert_true(is_ts(u.encryption_created_at));
    user_row_free(&u);

    /* keys exist: CONFLICT without overwrite, replaced with it */
    user_keys k2 = {.public_key = (char *)hexs(64, '9'), .encrypted_private_key = (char *)hexs(10, '9'),
                    .iv = (char *)hexs(32, '9'), .tag = (char *)hexs(32, '9'), .salt = (char *)hexs(64, '9')};
    assert_int_equal(store_user_set_keys(s, id, &k2, false), STORE_CONFLICT);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_string_equal(u.keys.public_key, hexs(64, 'a'));
    user_row_free(&u);
    assert_int_equal(store_user_set_keys(s, id, &k2, true), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_string_equal(u.keys.public_key, hexs(64, '9'));
    assert_null(u.keys.recovery_encrypted_private_key);
    user_row_free(&u);

    assert_int_equal(store_user_clear_keys(s, id), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_false(u.has_encryption_keys);
    assert_null(u.keys.public_key);
    assert_null(u.keys.encrypted_private_key);
    assert_null(u.keys.salt);
    assert_null(u.encryption_created_at);
    user_row_free(&u);

    const char *ghost = new_id("user");
    assert_int_equal(store_user_set_keys(s, ghost, &k, false), STORE_NOT_FOUND);
    assert_int_equal(store_user_clear_keys(s, ghost), STORE_NOT_FOUND);
    assert_int_equal(store_user_delete(s, ghost), STORE_NOT_FOUND);
}

/* A user_keys whose fields are runs of one character each, in buffers it owns. */
typedef struct keys_buf {
    char pub[65], ct[65], iv[33], tag[33], salt[65], rct[65], riv[33], rtag[33], rsalt[65];
    user_keys k;
} keys_buf;

static user_keys *fill_keys(keys_buf *b, char pub, char rest)
{
    char *f[] = {b->pub, b->ct, b->iv, b->tag, b->salt, b->rct, b->riv, b->rtag, b->rsalt};
    size_t n[] = {64, 64, 32, 32, 64, 64, 32, 32, 64};
    for (size_t i = 0; i < 9; i++) {
        memset(f[i], i ? rest : pub, n[i]);
        f[i][n[i]] = '\0';
    }
    b->k = (user_keys){b->pub, b->ct, b->iv, b->tag, b->salt, b->rct, b->riv, b->rtag, b->rsalt};
    return &b->k;
}

/* A replace changes both wrapped copies of the same pair in one statement, and
 * never writes over a missing pair or a different one. */
static void test_user_replace_keys(void **state)
{
    store *s = F(state)->s;
    const char *id = new_id("user");
    user_row u;
    keys_buf first, second, other;
    fill_keys(&first, 'a', 'b');
    fill_keys(&second, 'A', 'C'); /* the same pair in upper case, new wrapped copies */
    fill_keys(&other, '0', 'D');

    assert_int_equal(store_user_replace_keys(s, id, &first.k), STORE_NOT_FOUND); /* no user */
    assert_int_equal(store_user_create(s, id), STORE_OK);
    assert_int_equal(store_user_replace_keys(s, id, &first.k), STORE_NOT_FOUND); /* no keys */
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_false(u.has_encryption_keys);
    user_row_free(&u);
    assert_int_equal(store_user_set_keys(s, id, &first.k, false), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    char *created = strdup(u.encryption_created_at);
    user_row_free(&u);

    assert_int_equal(store_user_replace_keys(s, id, &other.k), STORE_NOT_FOUND); /* another pair */
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_string_equal(u.keys.public_key, first.pub);
    assert_string_equal(u.keys.encrypted_private_key, first.ct);
    user_row_free(&u);

    assert_int_equal(store_user_replace_keys(s, id, &second.k), STORE_OK);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_true(u.has_encryption_keys);
    assert_string_equal(u.keys.public_key, first.pub);
    assert_string_equal(u.keys.encrypted_private_key, hexs(64, 'c'));
    assert_string_equal(u.keys.iv, hexs(32, 'c'));
    assert_string_equal(u.keys.tag, hexs(32, 'c'));
    assert_string_equal(u.keys.salt, hexs(64, 'c'));
    assert_string_equal(u.keys.recovery_encrypted_private_key, hexs(64, 'c'));
    assert_string_equal(u.keys.recovery_iv, hexs(32, 'c'));
    assert_string_equal(u.keys.recovery_tag, hexs(32, 'c'));
    assert_string_equal(u.keys.recovery_salt, hexs(64, 'c'));
    assert_string_equal(u.encryption_created_at, created); /* the pair is the same */
    user_row_free(&u);
    free(created);

    assert_int_equal(store_user_clear_keys(s, id), STORE_OK);
    assert_int_equal(store_user_replace_keys(s, id, &second.k), STORE_NOT_FOUND);
    assert_int_equal(store_user_get(s, id, &u), STORE_OK);
    assert_false(u.has_encryption_keys);
    assert_null(u.keys.encrypted_private_key);
    user_row_free(&u);
}

/* ---- organizations ---- */

static void test_orgs(void **state)
{
    store *s = F(state)->s;
    const char *id = new_id("org"), *other = new_id("org");
    char slug[100], slug2[100];
    snprintf(slug, sizeof slug, "slug-%s", id);
    snprintf(slug2, sizeof slug2, "slug-%s", other);
    bool created = false;
    org_row o;

    assert_int_equal(store_org_get(s, id, &o), STORE_NOT_FOUND);
    assert_int_equal(store_org_upsert(s, id, "Acme", slug, &created), STORE_OK);
    assert_true(created);
    assert_int_equal(store_org_upsert(s, id, "Acme Corp", NULL, &created), STORE_OK);
    assert_false(created);
    assert_int_equal(store_org_get(s, id, &o), STORE_OK);
    assert_string_equal(o.name, "Acme Corp");
    assert_string_equal(o.slug, slug); /* a NULL slug keeps the old one */
    assert_false(o.has_encryption_keys);
    assert_null(o.org_public_key);
    assert_true(is_ts(o.created_at));
    assert_true(strcmp(o.updated_at, o.created_at) > 0);
    org_row_free(&o);

    /* slugs are unique across organizations */
    assert_int_equal(store_org_upsert(s, other, "Other", slug2, &created), STORE_OK);
    assert_int_equal(store_org_upsert(s, other, "Renamed", slug, &created), STORE_CONFLICT);
    assert_int_equal(store_org_get(s, other, &o), STORE_OK);
    assert_string_equal(o.name, "Other"); /* the failed upsert changed nothing */
    assert_string_equal(o.slug, slug2);
    org_row_free(&o);
    assert_int_equal(store_org_upsert(s, new_id("org"), "Third", slug, &created), STORE_CONFLICT);

    /* create-only (a member's sync): a new org is made, an existing one left as it is */
    const char *fresh = new_id("org");
    assert_int_equal(store_org_create(s, fresh, "Fresh", NULL, &created), STORE_OK);
    assert_true(created);
    assert_int_equal(store_org_create(s, fresh, "Renamed", slug2, &created), STORE_OK);
    assert_false(created);
    assert_int_equal(store_org_create(s, other, "Renamed", slug2, &created), STORE_OK); /* its own slug */
    assert_false(created);
    assert_int_equal(store_org_get(s, other, &o), STORE_OK);
    assert_string_equal(o.name, "Other");
    org_row_free(&o);
    assert_int_equal(store_org_get(s, fresh, &o), STORE_OK);
    assert_string_equal(o.name, "Fresh");
    assert_null(o.slug);
    org_row_free(&o);
    assert_int_equal(store_org_create(s, new_id("org"), "Fourth", slug, &created), STORE_CONFLICT);

    /* keys are set once */
    const char *admin = new_id("user");
    assert_int_equal(store_org_set_keys(s, id, hexs(64, 'A'), hexs(90, 'B'), hexs(32, 'C'), hexs(32, 'D'),
                                        hexs(64, 'E'), admin),
                     STORE_OK);
    assert_int_equal(store_org_set_keys(s, id, hexs(64, '1'), hexs(90, '1'), hexs(32, '1'), hexs(32, '1'),
                                        hexs(64, '1'), admin),
                     STORE_CONFLICT);
    assert_int_equal(store_org_get(s, id, &o), STORE_OK);
    assert_true(o.has_encryption_keys);
    assert_string_equal(o.org_public_key, hexs(64, 'a'));
    assert_string_equal(o.admin_encrypted_private_key, hexs(90, 'b'));
    assert_string_equal(o.admin_iv, hexs(32, 'c'));
    assert_string_equal(o.admin_tag, hexs(32, 'd'));
    assert_string_equal(o.admin_salt, hexs(64, 'e'));
    assert_string_equal(o.encryption_created_by, admin);
    assert_true(is_ts(o.encryption_created_at));
    org_row_free(&o);
    assert_int_equal(store_org_set_keys(s, new_id("org"), hexs(64, '1'), hexs(90, '1'), hexs(32, '1'),
                                        hexs(32, '1'), hexs(64, '1'), admin),
                     STORE_NOT_FOUND);
}

/* ---- memberships ---- */

static void test_memberships(void **state)
{
    store *s = F(state)->s;
    const char *org = new_id("org"), *ua = new_id("user"), *ub = new_id("user");
    const char *ma = new_id("mem"), *mb = new_id("mem");
    mk_org(s, org, "Org M");
    mk_user(s, ua);
    mk_user(s, ub);
    set_user_keys(s, ub, 'f');

    bool created = false;
    char *old = (char *)"sentinel";
    assert_int_equal(store_membership_upsert(s, ma, ua, org, ROLE_MEMBER, &created, &old), STORE_OK);
    assert_true(created);
    assert_null(old);
    assert_int_equal(store_membership_upsert(s, mb, ub, org, NULL, &created, NULL), STORE_OK); /* default member */
    assert_true(created);

    /* role change reports the old role; the id of an existing pair is kept */
    assert_int_equal(store_membership_upsert(s, "ignored", ua, org, ROLE_ADMIN, &created, &old), STORE_OK);
    assert_false(created);
    assert_string_equal(old, ROLE_MEMBER);
    free(old);
    assert_int_equal(store_membership_upsert(s, "ignored", ua, org, NULL, &created, &old), STORE_OK);
    assert_false(created);
    assert_string_equal(old, ROLE_ADMIN);
    free(old);

    membership_row m;
    assert_int_equal(store_membership_get(s, ua, org, &m), STORE_OK);
    assert_string_equal(m.id, ma);
    assert_string_equal(m.role, ROLE_ADMIN); /* the API value, not an enum name */
    assert_false(m.has_org_key);
    assert_null(m.org_key.ciphertext);
    assert_true(is_ts(m.joined_at));
    membership_row_free(&m);

    /* unknown role: refused with a reason; missing user or org: NOT_FOUND */
    assert_int_equal(store_membership_upsert(s, new_id("mem"), ua, org, "org:owner", &created, NULL), STORE_ERR);
    assert_non_null(strstr(store_last_error(s), "role"));
    assert_int_equal(store_membership_upsert(s, new_id("mem"), new_id("user"), org, ROLE_MEMBER, &created, NULL),
                     STORE_NOT_FOUND);
    assert_int_equal(store_membership_upsert(s, new_id("mem"), ua, new_id("org"), ROLE_MEMBER, &created, NULL),
                     STORE_NOT_FOUND);

    /* the member's copy of the org key */
    org_key_ep k = {.ephemeral_public_key = (char *)hexs(64, 'A'), .iv = (char *)hexs(32, 'B'),
                    .ciphertext = (char *)hexs(64, 'C'), .auth_tag = (char *)hexs(32, 'D'),
                    .hkdf_salt = (char *)hexs(64, 'E')};
    assert_int_equal(store_membership_set_org_key(s, mb, &k, ua), STORE_OK);
    assert_int_equal(store_membership_get_by_id(s, mb, &m), STORE_OK);
    assert_string_equal(m.user_id, ub);
    assert_string_equal(m.org_id, org);
    assert_string_equal(m.role, ROLE_MEMBER);
    assert_true(m.has_org_key);
    assert_string_equal(m.org_key.ephemeral_public_key, hexs(64, 'a'));
    assert_string_equal(m.org_key.iv, hexs(32, 'b'));
    assert_string_equal(m.org_key.ciphertext, hexs(64, 'c'));
    assert_string_equal(m.org_key.auth_tag, hexs(32, 'd'));
    assert_string_equal(m.org_key.hkdf_salt, hexs(64, 'e'));
    assert_string_equal(m.key_distributed_by, ua);
    assert_true(is_ts(m.key_distributed_at));
    membership_row_free(&m);
    assert_int_equal(store_membership_set_org_key(s, new_id("mem"), &k, ua), STORE_NOT_FOUND);

    /* lists with their joined columns, in joined_at order */
    membership_row *list;
    size_t n;
    assert_int_equal(store_memberships_for_org(s, org, &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].user_id, ua);
    assert_false(list[0].user_has_keys);
    assert_null(list[0].user_public_key);
    assert_string_equal(list[1].user_id, ub);
    assert_true(list[1].user_has_keys);
    assert_string_equal(list[1].user_public_key, hexs(64, 'f'));
    assert_true(list[1].has_org_key);
    membership_list_free(list, n);

    const char *org2 = new_id("org");
    bool c2;
    assert_int_equal(store_org_upsert(s, org2, "Org N", "slug-n-unique-for-memberships", &c2), STORE_OK);
    assert_int_equal(store_membership_upsert(s, new_id("mem"), ub, org2, ROLE_ADMIN, &created, NULL), STORE_OK);
    assert_int_equal(store_memberships_for_user(s, ub, &list, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].org_id, org);
    assert_string_equal(list[0].org_name, "Org M");
    assert_null(list[0].org_slug);
    assert_string_equal(list[1].org_id, org2);
    assert_string_equal(list[1].org_name, "Org N");
    assert_string_equal(list[1].org_slug, "slug-n-unique-for-memberships");
    assert_string_equal(list[1].role, ROLE_ADMIN);
    membership_list_free(list, n);
    assert_int_equal(store_memberships_for_user(s, new_id("user"), &list, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(list);

    /* clearing the key tells whether there was one */
    bool had = false;
    assert_int_equal(store_membership_clear_org_key(s, mb, &had), STORE_OK);
    assert_true(had);
    assert_int_equal(store_membership_get_by_id(s, mb, &m), STORE_OK);
    assert_false(m.has_org_key);
    assert_null(m.org_key.ephemeral_public_key);
    assert_null(m.org_key.ciphertext);
    assert_null(m.key_distributed_at);
    assert_null(m.key_distributed_by);
    membership_row_free(&m);
    assert_int_equal(store_membership_clear_org_key(s, mb, &had), STORE_OK);
    assert_false(had);
    assert_int_equal(store_membership_clear_org_key(s, new_id("mem"), &had), STORE_NOT_FOUND);

    assert_int_equal(store_membership_delete(s, mb), STORE_OK);
    assert_int_equal(store_membership_get_by_id(s, mb, &m), STORE_NOT_FOUND);
    assert_int_equal(store_membership_delete(s, mb), STORE_NOT_FOUND);
}

/* ---- sessions ---- */

static void test_session_create_get(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *org = new_id("org"), *sid = new_id("sess");
    mk_user(s, uid);
    mk_org(s, org, "Org S");

    session_row r;
    assert_int_equal(store_session_create(s, sid, uid, NULL, NULL, &r), STORE_OK);
    assert_string_equal(r.id, sid);
    assert_string_equal(r.user_id, uid);
    assert_null(r.org_id);
    assert_string_equal(r.name, "New Chat");
    assert_true(is_ts(r.created_at));
    assert_string_equal(r.created_at, r.updated_at);
    session_row_free(&r);

    const char *sid2 = new_id("sess");
    assert_int_equal(store_session_create(s, sid2, uid, org, "Plans", NULL), STORE_OK);
    assert_int_equal(store_session_get(s, sid2, &r), STORE_OK);
    assert_string_equal(r.org_id, org);
    assert_string_equal(r.name, "Plans");
    session_row_free(&r);

    assert_int_equal(store_session_create(s, sid, uid, NULL, NULL, NULL), STORE_CONFLICT);
    assert_int_equal(store_session_create(s, new_id("sess"), new_id("user"), NULL, NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_create(s, new_id("sess"), uid, new_id("org"), NULL, NULL), STORE_NOT_FOUND);
    assert_int_equal(store_session_get(s, new_id("sess"), &r), STORE_NOT_FOUND);
}

static void test_sessions_list_context(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *other = new_id("user"), *org = new_id("org"), *org2 = new_id("org");
    mk_user(s, uid);
    mk_user(s, other);
    mk_org(s, org, "Org L");
    mk_org(s, org2, "Org L2");
    char p1[80], p2[80], o1[80];
    snprintf(p1, sizeof p1, "%s", new_id("sess"));
    snprintf(p2, sizeof p2, "%s", new_id("sess"));
    snprintf(o1, sizeof o1, "%s", new_id("sess"));
    assert_int_equal(store_session_create(s, p1, uid, NULL, "p1", NULL), STORE_OK);
    assert_int_equal(store_session_create(s, o1, uid, org, "o1", NULL), STORE_OK);
    assert_int_equal(store_session_create(s, p2, uid, NULL, "p2", NULL), STORE_OK);
    assert_int_equal(store_session_create(s, new_id("sess"), uid, org2, "other org", NULL), STORE_OK);
    assert_int_equal(store_session_create(s, new_id("sess"), other, NULL, "other user", NULL), STORE_OK);
    assert_int_equal(store_session_create(s, new_id("sess"), other, org, "other user, same org", NULL), STORE_OK);

    session_row *l;
    size_t n;
    long total = -1;
    /* personal context: org_id IS NULL only, newest first */
    assert_int_equal(store_sessions_list(s, uid, NULL, 50, 0, &l, &n, &total), STORE_OK);
    assert_int_equal(n, 2);
    assert_int_equal(total, 2);
    assert_string_equal(l[0].id, p2);
    assert_string_equal(l[1].id, p1);
    session_list_free(l, n);

    assert_int_equal(store_sessions_list(s, uid, org, 50, 0, &l, &n, &total), STORE_OK);
    assert_int_equal(n, 1);
    assert_int_equal(total, 1);
    assert_string_equal(l[0].id, o1);
    assert_string_equal(l[0].org_id, org);
    session_list_free(l, n);

    assert_int_equal(store_sessions_list(s, new_id("user"), NULL, 50, 0, &l, &n, &total), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(total, 0);
}

static void test_sessions_order_and_paging(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user");
    mk_user(s, uid);
    char ids[5][80];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof ids[i], "%s", new_id("sess"));
        assert_int_equal(store_session_create(s, ids[i], uid, NULL, NULL, NULL), STORE_OK);
    }
    /* a chat in the oldest session makes it the most recently updated */
    commit_chat(s, NULL, ids[0]);

    const char *expect[5] = {ids[0], ids[4], ids[3], ids[2], ids[1]};
    session_row *l;
    size_t n;
    long total;
    for (int off = 0; off < 6; off += 2) {
        assert_int_equal(store_sessions_list(s, uid, NULL, 2, off, &l, &n, &total), STORE_OK);
        assert_int_equal(total, 5);
        assert_int_equal(n, off == 4 ? 1 : 2);
        for (size_t i = 0; i < n; i++)
            assert_string_equal(l[i].id, expect[off + (int)i]);
        session_list_free(l, n);
    }
    assert_int_equal(store_sessions_list(s, uid, NULL, 10, 10, &l, &n, &total), STORE_OK);
    assert_int_equal(n, 0);
    assert_int_equal(total, 5);
}

static void test_session_delete_cascades(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *sid = new_id("sess");
    mk_user(s, uid);
    session_row ns = {.id = (char *)sid, .user_id = (char *)uid};
    commit_chat(s, &ns, sid);
    commit_chat(s, NULL, sid);
    assert_int_equal(count_messages(s, sid), 4);
    assert_int_equal(store_session_delete(s, sid), STORE_OK);
    assert_int_equal(count_messages(s, sid), 0);
    session_row r;
    assert_int_equal(store_session_get(s, sid, &r), STORE_NOT_FOUND);
    assert_int_equal(store_session_delete(s, sid), STORE_NOT_FOUND);
}

static void test_sessions_delete_all(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *org = new_id("org");
    mk_user(s, uid);
    mk_org(s, org, "Org D");
    char personal[3][80];
    for (int i = 0; i < 3; i++) {
        snprintf(personal[i], sizeof personal[i], "%s", new_id("sess"));
        assert_int_equal(store_session_create(s, personal[i], uid, NULL, NULL, NULL), STORE_OK);
    }
    const char *osid = new_id("sess");
    assert_int_equal(store_session_create(s, osid, uid, org, NULL, NULL), STORE_OK);
    commit_chat(s, NULL, personal[1]);

    char **ids;
    size_t n;
    assert_int_equal(store_sessions_delete_all(s, uid, NULL, 2, &ids, &n), STORE_OK); /* at most max */
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    assert_int_equal(count_messages(s, personal[1]), 0); /* the newest went first, with its messages */

    assert_int_equal(store_sessions_delete_all(s, uid, NULL, 10000, &ids, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], personal[0]);
    free(ids[0]);
    free(ids);

    session_row r;
    assert_int_equal(store_session_get(s, osid, &r), STORE_OK); /* the org context is untouched */
    session_row_free(&r);
    assert_int_equal(store_sessions_delete_all(s, uid, org, 10000, &ids, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], osid);
    free(ids[0]);
    free(ids);
    assert_int_equal(store_sessions_delete_all(s, uid, NULL, 10000, &ids, &n), STORE_OK);
    assert_int_equal(n, 0);
    assert_null(ids);
}

/* ---- chat commit and messages ---- */

static void test_chat_commit_new_session(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *org = new_id("org"), *sid = new_id("sess");
    mk_user(s, uid);
    mk_org(s, org, "Org C");

    session_row ns = {.id = (char *)sid, .user_id = (char *)uid, .org_id = (char *)org};
    message_row u = msg('A', "model-x", -1, -1), a = msg('B', "model-y", 123, 456);
    assert_int_equal(store_chat_commit(s, &ns, sid, &u, &a), STORE_OK);
    assert_non_null(u.id);
    assert_non_null(a.id);
    assert_string_not_equal(u.id, a.id);
    assert_true(is_ts(u.created_at));
    assert_true(strcmp(a.created_at, u.created_at) > 0); /* strictly after */

    session_row r;
    assert_int_equal(store_session_get(s, sid, &r), STORE_OK);
    assert_string_equal(r.user_id, uid);
    assert_string_equal(r.org_id, org);
    assert_string_equal(r.name, "New Chat");
    assert_string_equal(r.updated_at, a.created_at);
    session_row_free(&r);

    message_row *l;
    size_t n;
    assert_int_equal(store_messages_list(s, sid, &l, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].id, u.id);
    assert_string_equal(l[0].role, "user");
    assert_string_equal(l[0].session_id, sid);
    assert_string_equal(l[0].ephemeral_public_key, hexs(64, 'a'));
    assert_string_equal(l[0].iv, hexs(32, 'a'));
    assert_string_equal(l[0].ciphertext, hexs(40, 'a'));
    assert_string_equal(l[0].auth_tag, hexs(32, 'a'));
    assert_string_equal(l[0].hkdf_salt, hexs(64, 'a'));
    assert_string_equal(l[0].model_used, "model-x");
    assert_int_equal(l[0].input_tokens, -1);
    assert_int_equal(l[0].output_tokens, -1);
    assert_string_equal(l[0].created_at, u.created_at);
    assert_string_equal(l[1].id, a.id);
    assert_string_equal(l[1].role, "assistant");
    assert_string_equal(l[1].ciphertext, hexs(40, 'b'));
    assert_string_equal(l[1].model_used, "model-y");
    assert_int_equal(l[1].input_tokens, 123);
    assert_int_equal(l[1].output_tokens, 456);
    message_list_free(l, n);
    msg_release(&u);
    msg_release(&a);
}

static void test_chat_commit_existing_session_and_order(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *sid = new_id("sess");
    mk_user(s, uid);
    session_row r;
    assert_int_equal(store_session_create(s, sid, uid, NULL, "Kept name", &r), STORE_OK);
    char created[32];
    snprintf(created, sizeof created, "%s", r.updated_at);
    session_row_free(&r);

    for (int i = 0; i < 3; i++)
        commit_chat(s, NULL, sid);
    assert_int_equal(store_session_get(s, sid, &r), STORE_OK);
    assert_true(strcmp(r.updated_at, created) > 0);
    assert_string_equal(r.name, "Kept name"); /* never renamed by a chat */
    session_row_free(&r);

    message_row *l;
    size_t n;
    assert_int_equal(store_messages_list(s, sid, &l, &n), STORE_OK);
    assert_int_equal(n, 6);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(l[i].role, i % 2 ? "assistant" : "user"); /* oldest first */
        if (i)
            assert_true(strcmp(l[i].created_at, l[i - 1].created_at) > 0);
    }
    message_list_free(l, n);
}

static void test_chat_commit_all_or_nothing(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *existing = new_id("sess");
    mk_user(s, uid);
    assert_int_equal(store_session_create(s, existing, uid, NULL, NULL, NULL), STORE_OK);
    message_row u = msg('a', "m", -1, -1), a = msg('b', "m", 1, 2);
    session_row r;

    /* a new session whose id exists: CONFLICT, and no message lands in the old one */
    session_row dup = {.id = (char *)existing, .user_id = (char *)uid};
    assert_int_equal(store_chat_commit(s, &dup, existing, &u, &a), STORE_CONFLICT);
    assert_int_equal(count_messages(s, existing), 0);

    /* a new session for a user that does not exist: NOT_FOUND, nothing written */
    const char *sid = new_id("sess");
    session_row ghost = {.id = (char *)sid, .user_id = (char *)new_id("user")};
    assert_int_equal(store_chat_commit(s, &ghost, sid, &u, &a), STORE_NOT_FOUND);
    assert_int_equal(store_session_get(s, sid, &r), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, sid), 0);

    /* no such session: the messages' foreign key fails */
    assert_int_equal(store_chat_commit(s, NULL, sid, &u, &a), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, sid), 0);

    /* the last insert fails (the assistant has no ciphertext): the session and the
     * user message written before it in the same transaction are gone too */
    session_row ns = {.id = (char *)sid, .user_id = (char *)uid};
    a.ciphertext = NULL;
    assert_int_equal(store_chat_commit(s, &ns, sid, &u, &a), STORE_ERR);
    assert_true(strlen(store_last_error(s)) > 0);
    assert_int_equal(store_session_get(s, sid, &r), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, sid), 0);
    assert_null(u.id); /* nothing filled in on failure */

    long total;
    session_row *l;
    size_t n;
    assert_int_equal(store_sessions_list(s, uid, NULL, 50, 0, &l, &n, &total), STORE_OK);
    assert_int_equal(total, 1); /* only the session created up front */
    session_list_free(l, n);
}

/* ---- context ---- */

static void test_context(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *org = new_id("org");
    json_t *d = (json_t *)1;
    assert_int_equal(store_context_get(s, "user", uid, &d), STORE_OK);
    assert_null(d);

    json_t *v1 = json_pack("{s:i, s:[i,i], s:s}", "a", 1, "b", 1, 2, "name", "Zoë");
    assert_int_equal(store_context_put(s, "user", uid, v1), STORE_OK);
    assert_int_equal(store_context_get(s, "user", uid, &d), STORE_OK);
    assert_true(json_equal(d, v1));
    json_decref(d);

    /* full replace: no key of the old value survives */
    json_t *v2 = json_pack("{s:b}", "c", 1);
    assert_int_equal(store_context_put(s, "user", uid, v2), STORE_OK);
    assert_int_equal(store_context_get(s, "user", uid, &d), STORE_OK);
    assert_true(json_equal(d, v2));
    json_decref(d);

    /* the org row is separate */
    assert_int_equal(store_context_get(s, "org", uid, &d), STORE_OK);
    assert_null(d);
    assert_int_equal(store_context_put(s, "org", org, v1), STORE_OK);
    assert_int_equal(store_context_get(s, "org", org, &d), STORE_OK);
    assert_true(json_equal(d, v1));
    json_decref(d);
    assert_int_equal(store_context_get(s, "user", uid, &d), STORE_OK);
    assert_true(json_equal(d, v2));
    json_decref(d);

    assert_int_equal(store_context_put(s, "team", org, v1), STORE_ERR);
    json_decref(v1);
    json_decref(v2);
}

/* ---- audit ---- */

static void test_audit_system_actor(void **state)
{
    store *s = F(state)->s;
    const char *org = new_id("org"), *target = new_id("user");
    json_t *data = json_pack("{s:s, s:s}", "old_role", ROLE_MEMBER, "new_role", ROLE_ADMIN);
    /* a system action has a NULL actor, and nothing needs to exist (no foreign keys) */
    assert_int_equal(store_audit(s, "member_role_changed", NULL, target, org, data), STORE_OK);
    assert_int_equal(store_audit(s, "org_key_revoked", NULL, target, org, NULL), STORE_OK);

    audit_row *l;
    size_t n;
    assert_int_equal(store_audit_list(s, org, 10, &l, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].event_type, "org_key_revoked"); /* newest first */
    assert_null(l[0].event_data);
    assert_string_equal(l[1].event_type, "member_role_changed");
    assert_null(l[1].actor_user_id);
    assert_string_equal(l[1].target_user_id, target);
    assert_string_equal(l[1].org_id, org);
    assert_true(json_equal(l[1].event_data, data));
    assert_true(is_ts(l[1].created_at));
    assert_true(strcmp(l[0].created_at, l[1].created_at) > 0);
    audit_list_free(l, n);

    assert_int_equal(store_audit_list(s, org, 1, &l, &n), STORE_OK);
    assert_int_equal(n, 1);
    audit_list_free(l, n);
    assert_int_equal(store_audit_list(s, NULL, 1, &l, &n), STORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].event_type, "org_key_revoked");
    audit_list_free(l, n);
    json_decref(data);
}

static void test_user_delete_cascades_audit_stays(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *keep = new_id("user"), *org = new_id("org");
    mk_user(s, uid);
    mk_user(s, keep);
    mk_org(s, org, "Org U");
    const char *mem = new_id("mem"), *mem_keep = new_id("mem");
    assert_int_equal(store_membership_upsert(s, mem, uid, org, ROLE_ADMIN, NULL, NULL), STORE_OK);
    assert_int_equal(store_membership_upsert(s, mem_keep, keep, org, ROLE_MEMBER, NULL, NULL), STORE_OK);
    const char *ps = new_id("sess"), *os = new_id("sess"), *ks = new_id("sess");
    session_row n1 = {.id = (char *)ps, .user_id = (char *)uid};
    session_row n2 = {.id = (char *)os, .user_id = (char *)uid, .org_id = (char *)org};
    session_row n3 = {.id = (char *)ks, .user_id = (char *)keep};
    commit_chat(s, &n1, ps);
    commit_chat(s, &n2, os);
    commit_chat(s, &n3, ks);
    assert_int_equal(store_audit(s, "member_joined", uid, uid, org, NULL), STORE_OK);
    assert_int_equal(store_audit(s, "org_key_distributed", uid, keep, org, NULL), STORE_OK);

    assert_int_equal(store_user_delete(s, uid), STORE_OK);
    user_row u;
    assert_int_equal(store_user_get(s, uid, &u), STORE_NOT_FOUND);
    membership_row m;
    assert_int_equal(store_membership_get_by_id(s, mem, &m), STORE_NOT_FOUND);
    session_row r;
    assert_int_equal(store_session_get(s, ps, &r), STORE_NOT_FOUND);
    assert_int_equal(store_session_get(s, os, &r), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, ps), 0);
    assert_int_equal(count_messages(s, os), 0);

    /* the other user's rows are untouched; the audit rows naming the deleted user stay */
    assert_int_equal(store_membership_get_by_id(s, mem_keep, &m), STORE_OK);
    membership_row_free(&m);
    assert_int_equal(count_messages(s, ks), 2);
    audit_row *l;
    size_t n;
    assert_int_equal(store_audit_list(s, org, 10, &l, &n), STORE_OK);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].actor_user_id, uid);
    assert_string_equal(l[1].target_user_id, uid);
    audit_list_free(l, n);
}

static void test_org_delete_cascades_audit_stays(void **state)
{
    store *s = F(state)->s;
    const char *uid = new_id("user"), *org = new_id("org");
    mk_user(s, uid);
    mk_org(s, org, "Org X");
    const char *mem = new_id("mem");
    assert_int_equal(store_membership_upsert(s, mem, uid, org, ROLE_ADMIN, NULL, NULL), STORE_OK);
    const char *os = new_id("sess"), *ps = new_id("sess");
    session_row n1 = {.id = (char *)os, .user_id = (char *)uid, .org_id = (char *)org};
    session_row n2 = {.id = (char *)ps, .user_id = (char *)uid};
    commit_chat(s, &n1, os);
    commit_chat(s, &n2, ps);
    assert_int_equal(store_audit(s, "org_keys_created", uid, NULL, org, NULL), STORE_OK);
    assert_int_equal(store_audit(s, "member_left", NULL, uid, org, NULL), STORE_OK);
    assert_int_equal(count_audit(s, org), 2);

    assert_int_equal(store_org_delete(s, org), STORE_OK);
    org_row o;
    assert_int_equal(store_org_get(s, org, &o), STORE_NOT_FOUND);
    membership_row m;
    assert_int_equal(store_membership_get_by_id(s, mem, &m), STORE_NOT_FOUND);
    session_row r;
    assert_int_equal(store_session_get(s, os, &r), STORE_NOT_FOUND);
    assert_int_equal(count_messages(s, os), 0);
    /* the user and the personal session stay; so does the org's audit trail (§10.11) */
    user_row u;
    assert_int_equal(store_user_get(s, uid, &u), STORE_OK);
    user_row_free(&u);
    assert_int_equal(count_messages(s, ps), 2);
    assert_int_equal(count_audit(s, org), 2);
    assert_int_equal(store_org_delete(s, org), STORE_NOT_FOUND);

    /* an audit row may still name the deleted org */
    assert_int_equal(store_audit(s, "org_keys_rotated", NULL, NULL, org, NULL), STORE_OK);
    assert_int_equal(count_audit(s, org), 3);
}

/* ---- errors ---- */

static void expect_open_fails(const char *url, const char *must_contain)
{
    char err[512];
    memset(err, 0, sizeof err);
    store *s = store_open(url, err, sizeof err);
    assert_null(s);
    assert_true(strlen(err) > 0);
    if (strstr(err, PASSWORD))
        fail_msg("the error shows the password: %s", err);
    if (must_contain && !strstr(err, must_contain))
        fail_msg("expected '%s' in: %s", must_contain, err);
}

static void test_errors(void **state)
{
    fx *f = F(state);
    /* nothing listens on port 1: connection refused */
    expect_open_fails("postgresql://veil:" PASSWORD "@127.0.0.1:1/veil?connect_timeout=3", "postgresql");
    expect_open_fails("postgres://veil@127.0.0.1:1/veil?password=" PASSWORD "&connect_timeout=3", NULL);
    expect_open_fails("postgresql://veil:p%40ss" PASSWORD "@127.0.0.1:1/veil?connect_timeout=3", NULL);
    expect_open_fails("postgresql://veil:" PASSWORD "@127.0.0.1:1/veil?no_such_option=1", NULL);
    /* libpq quotes the whole URI in this message: the password must still not show */
    expect_open_fails("postgresql://veil:" PASSWORD "@[::1/veil", NULL);
    expect_open_fails("mysql://veil:" PASSWORD "@localhost/veil", "unsupported");
    expect_open_fails("sqlite:/nonexistent-veil-dir/sub/veil.db", "/nonexistent-veil-dir/sub");
    expect_open_fails("/nonexistent-veil-dir/veil.db", "nonexistent-veil-dir");
    expect_open_fails("", NULL);
    if (f->pg.port) {
        /* a real server, a database that does not exist */
        char url[300];
        snprintf(url, sizeof url, "postgresql://veil:%s@127.0.0.1:%d/no_such_db", PASSWORD, f->pg.port);
        expect_open_fails(url, "no_such_db");
    }

    /* operation errors come back as STORE_ERR with a reason */
    store *s = f->s;
    assert_int_equal(store_user_create(s, NULL), STORE_ERR);
    assert_true(strlen(store_last_error(s)) > 0);
    assert_int_equal(store_audit(s, NULL, NULL, NULL, NULL, NULL), STORE_ERR);
    assert_int_equal(store_ping(s), STORE_OK);
}

/* ---- webhook deliveries ---- */

#define WINDOW 600L

/* Runs one statement on a connection of its own (outside the store under test). */
static void side_exec(const char *url, const char *sql, const char *a)
{
    char err[512];
    db *d = db_open(url, err, sizeof err);
    assert_non_null(d);
    db_param p[] = {db_text(a)};
    assert_int_equal(db_exec(d, sql, p, 1, NULL), DB_OK);
    db_close(d);
}

static int64_t side_count(const char *url, const char *sql, const char *a)
{
    char err[512];
    db *d = db_open(url, err, sizeof err);
    assert_non_null(d);
    db_param p[] = {db_text(a)};
    db_result r = DB_RESULT_INIT;
    assert_int_equal(db_exec(d, sql, p, a ? 1 : 0, &r), DB_OK);
    int64_t n = db_cell_int(&r, 0, 0, -1);
    db_result_free(&r);
    db_close(d);
    return n;
}

#define BACKDATE "UPDATE webhook_deliveries SET processed_at = '2000-01-01T00:00:00.000000' WHERE id = $1"
#define COUNT_ID "SELECT COUNT(*) FROM webhook_deliveries WHERE id = $1"

static void test_webhook_deliveries(void **state)
{
    fx *f = F(state);
    store *s = f->s;
    const char *a = new_id("msg"), *b = new_id("msg"), *c = new_id("msg"), *d = new_id("msg");

    /* a delivery id counts once within the window */
    assert_int_equal(store_webhook_claim(s, a, WINDOW), STORE_OK);
    assert_int_equal(store_webhook_claim(s, a, WINDOW), STORE_CONFLICT);

    /* a claim rolled back with its event's effects does not count: the retry is processed */
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_webhook_claim(s, b, WINDOW), STORE_OK);
    assert_int_equal(store_rollback(s), STORE_OK);
    assert_int_equal(store_webhook_claim(s, b, WINDOW), STORE_OK);

    /* a duplicate inside a transaction leaves it usable */
    const char *uid = new_id("user");
    assert_int_equal(store_begin(s), STORE_OK);
    assert_int_equal(store_webhook_claim(s, a, WINDOW), STORE_CONFLICT);
    mk_user(s, uid);
    assert_int_equal(store_commit(s), STORE_OK);
    user_row u;
    assert_int_equal(store_user_get(s, uid, &u), STORE_OK);
    user_row_free(&u);

    /* past the window the id is new again (and renewed) */
    side_exec(f->url, BACKDATE, a);
    assert_int_equal(store_webhook_claim(s, a, WINDOW), STORE_OK);
    assert_int_equal(store_webhook_claim(s, a, WINDOW), STORE_CONFLICT);

    /* pruning removes what is older than the window, and only that */
    assert_int_equal(store_webhook_claim(s, c, WINDOW), STORE_OK);
    assert_int_equal(store_webhook_claim(s, d, WINDOW), STORE_OK);
    side_exec(f->url, BACKDATE, c);
    assert_int_equal(store_webhook_prune(s, WINDOW), STORE_OK);
    assert_int_equal(side_count(f->url, COUNT_ID, c), 0);
    assert_int_equal(side_count(f->url, COUNT_ID, d), 1);
    assert_int_equal(side_count(f->url, COUNT_ID, a), 1);
    assert_int_equal(store_webhook_claim(s, d, WINDOW), STORE_CONFLICT);

    assert_int_equal(store_webhook_claim(s, NULL, WINDOW), STORE_ERR);
}

typedef struct claim_job {
    const char *url, *id;
    store_rc rc;
} claim_job;

static void *claim_in_thread(void *arg)
{
    claim_job *j = arg;
    char err[512];
    store *other = store_open(j->url, err, sizeof err);
    j->rc = other ? store_webhook_claim(other, j->id, WINDOW) : STORE_ERR;
    store_close(other);
    return NULL;
}

/* Waits until a veild connection waits on a row lock (the second claim). */
static void wait_for_lock_waiter(const char *url)
{
    for (int i = 0; i < 3000; i++) {
        if (side_count(url,
                       "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'veild' "
                       "AND wait_event_type = 'Lock'",
                       NULL) > 0)
            return;
        usleep(10000);
    }
    fail_msg("the second claim never waited on the first");
}

/* PostgreSQL only: two veilds sharing one database get the same delivery at
 * once; the second claim waits for the first one's transaction. If it commits,
 * the second is a duplicate; if it rolls back, the second processes it. */
static void test_webhook_claim_across_instances(void **state)
{
    fx *f = F(state);
    if (strcmp(f->backend, "postgresql") != 0)
        return;
    store *s = f->s;
    for (int commit = 1; commit >= 0; commit--) {
        claim_job j = {.url = f->url, .id = new_id("msg"), .rc = STORE_ERR};
        assert_int_equal(store_begin(s), STORE_OK);
        assert_int_equal(store_webhook_claim(s, j.id, WINDOW), STORE_OK);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, claim_in_thread, &j), 0);
        wait_for_lock_waiter(f->url);
        assert_int_equal(commit ? store_commit(s) : store_rollback(s), STORE_OK);
        assert_int_equal(pthread_join(t, NULL), 0);
        assert_int_equal(j.rc, commit ? STORE_CONFLICT : STORE_OK);
    }
}

/* ---- timeouts (PostgreSQL) ---- */

static int64_t backend_pid(db *d)
{
    db_result r = DB_RESULT_INIT;
    assert_int_equal(db_exec(d, "SELECT pg_backend_pid()", NULL, 0, &r), DB_OK);
    int64_t pid = db_cell_int(&r, 0, 0, -1);
    db_result_free(&r);
    assert_true(pid > 0);
    return pid;
}

/* PostgreSQL only: a statement that runs past the timeout is cancelled by the
 * server (statement_timeout), reported as timed out, and the connection stays. */
static void test_statement_timeout(void **state)
{
    fx *f = F(state);
    if (strcmp(f->backend, "postgresql") != 0)
        return;
    char err[512];
    db *d = db_open(f->url, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(db_set_timeout(d, 200), DB_OK);
    int64_t pid = backend_pid(d);
    assert_int_equal(db_exec(d, "SELECT pg_sleep(30)", NULL, 0, NULL), DB_ERR);
    assert_true(db_timed_out(d));
    dc_assert_err(d, "statement timeout");
    assert_int_equal(backend_pid(d), pid); /* the same connection */
    assert_false(db_timed_out(d));
    db_close(d);

    /* through the store: a claim that waits on another's row lock past the timeout */
    store *other = store_connect(f->url, err, sizeof err);
    assert_non_null(other);
    assert_int_equal(store_set_timeout(other, 200), STORE_OK);
    const char *id = new_id("msg");
    assert_int_equal(store_begin(f->s), STORE_OK);
    assert_int_equal(store_webhook_claim(f->s, id, WINDOW), STORE_OK);
    assert_int_equal(store_webhook_claim(other, id, WINDOW), STORE_ERR);
    if (!store_timed_out(other))
        fail_msg("not a timeout: %s", store_last_error(other));
    assert_int_equal(store_rollback(f->s), STORE_OK);
    assert_int_equal(store_webhook_claim(other, id, WINDOW), STORE_OK);
    store_close(other);
}

/* PostgreSQL only: a server that stops answering altogether (its backend stopped,
 * which is what a frozen network looks like from here) holds the caller for the
 * timeout and the grace, no longer; the connection is dropped, the transaction it
 * held is rolled back by the server, and the next call connects again. */
static void test_unresponsive_server(void **state)
{
    fx *f = F(state);
    if (strcmp(f->backend, "postgresql") != 0)
        return;
    char err[512];
    db *d = db_open(f->url, err, sizeof err);
    assert_non_null(d);
    assert_int_equal(db_set_timeout(d, 200), DB_OK);
    int64_t pid = backend_pid(d);
    const char *uid = new_id("user");
    assert_int_equal(db_begin(d), DB_OK);
    db_param p[] = {db_text(uid), db_text("2026-01-01T00:00:00.000000")};
    assert_int_equal(db_exec(d, "INSERT INTO users (id, created_at, updated_at) VALUES ($1, $2, $2)", p, 2, NULL), DB_OK);

    assert_int_equal(kill((pid_t)pid, SIGSTOP), 0);
    assert_int_equal(db_exec(d, "SELECT 1", NULL, 0, NULL), DB_ERR);
    assert_true(db_timed_out(d));
    dc_assert_err(d, "no answer within 1200 ms");
    /* still inside the transaction: no silent reconnect, the caller rolls back */
    assert_int_equal(db_exec(d, "SELECT 1", NULL, 0, NULL), DB_ERR);
    dc_assert_err(d, "inside a transaction");
    assert_int_equal(db_rollback(d), DB_ERR);
    assert_false(db_in_transaction(d));
    assert_int_equal(kill((pid_t)pid, SIGCONT), 0);

    assert_int_equal(db_exec(d, "SELECT 1", NULL, 0, NULL), DB_OK);
    assert_true(backend_pid(d) != pid); /* a new connection */
    /* the old backend saw its socket closed and ended, rolling the insert back */
    char old[24];
    snprintf(old, sizeof old, "%lld", (long long)pid);
    const char *alive = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1::int";
    for (int i = 0; i < 1000 && side_count(f->url, alive, old) > 0; i++)
        usleep(10000);
    assert_int_equal(side_count(f->url, alive, old), 0);
    assert_int_equal(side_count(f->url, "SELECT COUNT(*) FROM users WHERE id = $1", uid), 0);
    db_close(d);
}

/* ---- groups ---- */

static int open_store(fx *f)
{
    char err[512];
    f->s = store_open(f->url, err, sizeof err);
    if (!f->s) {
        fprintf(stderr, "[%s] store_open failed: %s\n", f->backend, err);
        return -1;
    }
    return 0;
}

static int setup_sqlite(void **state)
{
    snprintf(g_sqlite.url, sizeof g_sqlite.url, "sqlite:%s", h_path("store", ".db"));
    *state = &g_sqlite;
    return open_store(&g_sqlite);
}

static int setup_pg(void **state)
{
    char err[2048];
    *state = &g_pg;
    if (pg_start(&g_pg.pg, "veil_store_test", err, sizeof err) < 0) {
        fprintf(stderr, "[postgresql] cannot start a PostgreSQL server for the store tests: %s\n", err);
        return -1;
    }
    snprintf(g_pg.url, sizeof g_pg.url, "%s", g_pg.pg.url);
    return open_store(&g_pg);
}

static int teardown(void **state)
{
    fx *f = *state;
    store_close(f->s);
    f->s = NULL;
    if (f->pg.pid)
        pg_stop(&f->pg);
    return 0;
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_migrations_idempotent),
    cmocka_unit_test(test_ping_and_time),
    cmocka_unit_test(test_transactions),
    cmocka_unit_test(test_reconnect),
    cmocka_unit_test(test_users),
    cmocka_unit_test(test_user_replace_keys),
    cmocka_unit_test(test_orgs),
    cmocka_unit_test(test_memberships),
    cmocka_unit_test(test_session_create_get),
    cmocka_unit_test(test_sessions_list_context),
    cmocka_unit_test(test_sessions_order_and_paging),
    cmocka_unit_test(test_session_delete_cascades),
    cmocka_unit_test(test_sessions_delete_all),
    cmocka_unit_test(test_chat_commit_new_session),
    cmocka_unit_test(test_chat_commit_existing_session_and_order),
    cmocka_unit_test(test_chat_commit_all_or_nothing),
    cmocka_unit_test(test_context),
    cmocka_unit_test(test_audit_system_actor),
    cmocka_unit_test(test_user_delete_cascades_audit_stays),
    cmocka_unit_test(test_org_delete_cascades_audit_stays),
    cmocka_unit_test(test_webhook_deliveries),
    cmocka_unit_test(test_webhook_claim_across_instances),
    cmocka_unit_test(test_statement_timeout),
    cmocka_unit_test(test_unresponsive_server),
    cmocka_unit_test(test_errors),
};

/* ---- the db layer on PostgreSQL ---- */

static db_fx g_db_pg = {.kind = DB_PG};
static pg_server g_db_server;

static int setup_db_pg(void **state)
{
    char err[2048];
    *state = &g_db_pg;
    if (pg_start(&g_db_server, "veil_db_test", err, sizeof err) < 0) {
        fprintf(stderr, "[postgresql] cannot start a PostgreSQL server for the db cases: %s\n", err);
        return -1;
    }
    snprintf(g_db_pg.url, sizeof g_db_pg.url, "%s", g_db_server.url);
    return 0;
}

static int teardown_db_pg(void **state)
{
    (void)state;
    if (g_db_server.pid)
        pg_stop(&g_db_server);
    return 0;
}

int main(void)
{
    h_tmpdir();
    int failed = cmocka_run_group_tests_name("store/sqlite", tests, setup_sqlite, teardown);
    failed += cmocka_run_group_tests_name("store/postgresql", tests, setup_pg, teardown);
    failed += cmocka_run_group_tests_name("db/postgresql", db_cases, setup_db_pg, teardown_db_pg);
    return failed ? 1 : 0;
}

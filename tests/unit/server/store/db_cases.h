/* db_cases — the db layer's cases (server/store/db.h), written once against a
 * db_fx and run on SQLite by tests/unit/server/store/test_db.c and on a real
 * PostgreSQL by tests/integration/test_store.c: every parameter type, NULLs,
 * result sets, RETURNING, constraint violations and their db_rc, statement
 * errors, transactions (a failed COMMIT included) and scripts.
 *
 * The includer provides the group: a db_fx with url and kind set, passed as the
 * group state; each case opens its own connection and makes fresh tables
 * (dbt_parent, dbt_child) in db_case_setup, dropped again in db_case_teardown.
 */
#ifndef VEIL_TEST_DB_CASES_H
#define VEIL_TEST_DB_CASES_H

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/store/db.h"

typedef struct db_fx {
    char url[600];
    db_kind kind;
    db *d; /* the case's connection */
} db_fx;

#define DB_TABLES                                                                                  \
    "CREATE TABLE dbt_parent (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE);"                    \
    "CREATE TABLE dbt_child (id TEXT PRIMARY KEY, parent TEXT REFERENCES dbt_parent (id), "        \
    "late TEXT REFERENCES dbt_parent (id) DEFERRABLE INITIALLY DEFERRED, "                         \
    "s TEXT, i BIGINT, b BOOLEAN, n TEXT);"
#define DB_DROP "DROP TABLE IF EXISTS dbt_child; DROP TABLE IF EXISTS dbt_parent; DROP TABLE IF EXISTS dbt_script;"

static db_fx *DBF(void **state)
{
    db_fx *f = *state;
    assert_non_null(f);
    assert_non_null(f->d);
    return f;
}

static int db_case_setup(void **state)
{
    db_fx *f = *state;
    char err[512];
    f->d = db_open(f->url, err, sizeof err);
    if (!f->d) {
        fprintf(stderr, "db_open %s: %s\n", f->url, err);
        return -1;
    }
    if (db_script(f->d, DB_DROP) != DB_OK || db_script(f->d, DB_TABLES) != DB_OK) {
        fprintf(stderr, "tables: %s\n", db_errmsg(f->d));
        return -1;
    }
    return 0;
}

static int db_case_teardown(void **state)
{
    db_fx *f = *state;
    if (!f->d)
        return 0;
    if (db_in_transaction(f->d))
        db_rollback(f->d);
    int rc = db_script(f->d, DB_DROP) == DB_OK ? 0 : -1;
    db_close(f->d);
    f->d = NULL;
    return rc;
}

/* ---- helpers ---- */

static bool dc_has_ci(const char *s, const char *needle)
{
    size_t n = strlen(needle);
    for (; s && *s; s++) {
        size_t i = 0;
        while (i < n && s[i] && tolower((unsigned char)s[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* The error is there, on one line (db_set_err folds libpq's multi-line text). */
static void dc_assert_err(db *d, const char *must_contain)
{
    const char *e = db_errmsg(d);
    assert_true(strlen(e) > 0);
    assert_null(strchr(e, '\n'));
    if (must_contain && !dc_has_ci(e, must_contain))
        fail_msg("expected '%s' in the error: %s", must_contain, e);
}

static void dc_ok(db *d, const char *sql, const db_param *p, size_t n, db_result *r)
{
    db_rc rc = db_exec(d, sql, p, n, r);
    if (rc != DB_OK)
        fail_msg("%s: rc %d: %s", sql, rc, db_errmsg(d));
}

static int64_t dc_count(db *d, const char *sql)
{
    db_result r = DB_RESULT_INIT;
    dc_ok(d, sql, NULL, 0, &r);
    int64_t n = db_cell_int(&r, 0, 0, -1);
    db_result_free(&r);
    return n;
}

static void dc_add_parent(db *d, const char *id, const char *name)
{
    db_param p[] = {db_text(id), db_text(name)};
    dc_ok(d, "INSERT INTO dbt_parent (id, name) VALUES ($1, $2)", p, 2, NULL);
}

/* ---- cases ---- */

#define NASTY "it's \"quoted\"; DROP TABLE dbt_child; -- \xc3\xbc" "n\xc3\xaf" "c\xc3\xb6" "de $1 ?"

/* Every parameter type goes in and comes back as it was: text (quotes, UTF-8 and
 * placeholder-like characters stay data), the int64 extremes, both booleans,
 * NULL from db_null and from db_text(NULL), and an empty string that is not NULL. */
static void case_params_every_type(void **state)
{
    db *d = DBF(state)->d;
    db_result r = DB_RESULT_INIT;
    db_param a[] = {db_text("c1"), db_text(NASTY), db_int(INT64_MAX), db_bool(true), db_null()};
    dc_ok(d, "INSERT INTO dbt_child (id, s, i, b, n) VALUES ($1, $2, $3, $4, $5)", a, 5, &r);
    assert_int_equal(r.changes, 1);
    assert_int_equal(r.nrows, 0);
    db_result_free(&r);
    db_param b[] = {db_text("c2"), db_text(NULL), db_int(INT64_MIN), db_bool(false), db_text("")};
    dc_ok(d, "INSERT INTO dbt_child (id, s, i, b, n) VALUES ($1, $2, $3, $4, $5)", b, 5, NULL);
    db_param c[] = {db_text("c3"), db_text(""), db_int(-1), db_null(), db_text("x")};
    dc_ok(d, "INSERT INTO dbt_child (id, s, i, b, n) VALUES ($1, $2, $3, $4, $5)", c, 5, NULL);

    dc_ok(d, "SELECT id, s, i, b, n FROM dbt_child ORDER BY id", NULL, 0, &r);
    assert_int_equal(r.nrows, 3);
    assert_int_equal(r.ncols, 5);
    assert_string_equal(db_cell(&r, 0, 1), NASTY);
    assert_true(db_cell_int(&r, 0, 2, 0) == INT64_MAX);
    assert_true(db_cell_bool(&r, 0, 3));
    assert_null(db_cell(&r, 0, 4));

    assert_null(db_cell(&r, 1, 1)); /* db_text(NULL) is SQL NULL */
    assert_true(db_cell_int(&r, 1, 2, 0) == INT64_MIN);
    assert_false(db_cell_bool(&r, 1, 3));
    assert_non_null(db_cell(&r, 1, 3)); /* false, not NULL */
    assert_string_equal(db_cell(&r, 1, 4), "");

    assert_string_equal(db_cell(&r, 2, 1), "");
    assert_int_equal(db_cell_int(&r, 2, 2, 0), -1);
    assert_null(db_cell(&r, 2, 3));
    assert_false(db_cell_bool(&r, 2, 3));
    db_result_free(&r);

    /* NULL as a parameter matches nothing with "=", and IS NULL finds it */
    db_param nul[] = {db_null()};
    dc_ok(d, "SELECT id FROM dbt_child WHERE n = $1", nul, 1, &r);
    assert_int_equal(r.nrows, 0);
    db_result_free(&r);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_child WHERE n IS NULL"), 1);
}

/* $n binds by number, not by order of appearance, and one parameter may appear
 * twice (SQLite numbers "?NNN" by first appearance unless bound by name). */
static void case_params_by_number(void **state)
{
    db *d = DBF(state)->d;
    db_param p[] = {db_text("c9"), db_text("twice")};
    dc_ok(d, "INSERT INTO dbt_child (n, id, s) VALUES ($2, $1, $2)", p, 2, NULL);
    db_result r = DB_RESULT_INIT;
    db_param q[] = {db_text("twice"), db_text("c9")};
    dc_ok(d, "SELECT id, s, n FROM dbt_child WHERE id = $2 AND s = $1 AND n = $1", q, 2, &r);
    assert_int_equal(r.nrows, 1);
    assert_string_equal(db_cell(&r, 0, 0), "c9");
    assert_string_equal(db_cell(&r, 0, 1), "twice");
    assert_string_equal(db_cell(&r, 0, 2), "twice");
    db_result_free(&r);

    /* a placeholder without its parameter is an error, and the connection stays usable */
    r.nrows = 7; /* db_exec empties res first */
    assert_int_equal(db_exec(d, "SELECT id FROM dbt_child WHERE id = $2", p, 1, &r), DB_ERR);
    assert_int_equal(r.nrows, 0);
    assert_null(r.cells);
    dc_assert_err(d, NULL);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_child"), 1);
}

/* Results: rows in order with their column count (also when empty), cells owned
 * by the result until taken, out-of-range cells NULL, change counts, and a result
 * that grows past its first allocation. The same statement with other parameters
 * reuses the cached prepared statement and gives the other rows. */
static void case_result_sets(void **state)
{
    db *d = DBF(state)->d;
    db_result r = DB_RESULT_INIT;
    const char *ids[] = {"a", "b", "c"};
    for (int k = 0; k < 3; k++) {
        db_param p[] = {db_text(ids[k]), db_int(30 - k * 10), db_text("not a number")};
        dc_ok(d, "INSERT INTO dbt_child (id, i, s) VALUES ($1, $2, $3)", p, 3, NULL);
    }
    dc_ok(d, "SELECT id, i FROM dbt_child ORDER BY i", NULL, 0, &r);
    assert_int_equal(r.nrows, 3);
    assert_int_equal(r.ncols, 2);
    assert_string_equal(db_cell(&r, 0, 0), "c");
    assert_string_equal(db_cell(&r, 2, 0), "a");
    assert_int_equal(db_cell_int(&r, 1, 1, -1), 20);
    assert_null(db_cell(&r, 3, 0)); /* out of range */
    assert_null(db_cell(&r, 0, 2));
    char *taken = db_take(&r, 0, 0);
    assert_string_equal(taken, "c");
    assert_null(db_cell(&r, 0, 0)); /* the caller owns it now */
    free(taken);
    db_result_free(&r);
    assert_int_equal(r.nrows, 0);
    assert_null(r.cells);

    dc_ok(d, "SELECT id, s FROM dbt_child WHERE id = 'none'", NULL, 0, &r);
    assert_int_equal(r.nrows, 0);
    assert_int_equal(r.ncols, 2);
    assert_null(db_cell(&r, 0, 0));
    db_result_free(&r);

    dc_ok(d, "SELECT s, n FROM dbt_child WHERE id = 'a'", NULL, 0, &r);
    assert_int_equal(db_cell_int(&r, 0, 0, -7), -7); /* not a number */
    assert_int_equal(db_cell_int(&r, 0, 1, -8), -8); /* NULL */
    db_result_free(&r);

    db_param t[] = {db_bool(true)};
    dc_ok(d, "UPDATE dbt_child SET b = $1", t, 1, &r);
    assert_int_equal(r.changes, 3);
    assert_int_equal(r.nrows, 0);
    db_result_free(&r);
    dc_ok(d, "DELETE FROM dbt_child WHERE id = 'none'", NULL, 0, &r);
    assert_int_equal(r.changes, 0);
    db_result_free(&r);
    dc_ok(d, "SELECT id FROM dbt_child", NULL, 0, NULL); /* rows may be discarded */

    /* 300 rows x 3 columns: the cell array grows several times */
    assert_int_equal(db_begin(d), DB_OK);
    for (int k = 0; k < 300; k++) {
        char id[16];
        snprintf(id, sizeof id, "g%03d", k);
        db_param p[] = {db_text(id), db_int(k)};
        dc_ok(d, "INSERT INTO dbt_child (id, i) VALUES ($1, $2)", p, 2, NULL);
    }
    assert_int_equal(db_commit(d), DB_OK);
    dc_ok(d, "SELECT id, i, b FROM dbt_child WHERE id LIKE 'g%' ORDER BY i", NULL, 0, &r);
    assert_int_equal(r.nrows, 300);
    for (size_t k = 0; k < r.nrows; k++) {
        char id[24];
        snprintf(id, sizeof id, "g%03zu", k);
        assert_string_equal(db_cell(&r, k, 0), id);
        assert_int_equal(db_cell_int(&r, k, 1, -1), (int64_t)k);
        assert_null(db_cell(&r, k, 2));
    }
    db_result_free(&r);
}

/* RETURNING gives the written rows from INSERT, UPDATE and DELETE, and none
 * when ON CONFLICT DO NOTHING wrote nothing; changes counts the same rows. */
static void case_returning(void **state)
{
    db *d = DBF(state)->d;
    db_result r = DB_RESULT_INIT;
    db_param p[] = {db_text("r1"), db_int(5), db_bool(true)};
    dc_ok(d, "INSERT INTO dbt_child (id, i, b) VALUES ($1, $2, $3) RETURNING id, i, b, s", p, 3, &r);
    assert_int_equal(r.nrows, 1);
    assert_int_equal(r.ncols, 4);
    assert_int_equal(r.changes, 1);
    assert_string_equal(db_cell(&r, 0, 0), "r1");
    assert_int_equal(db_cell_int(&r, 0, 1, -1), 5);
    assert_true(db_cell_bool(&r, 0, 2));
    assert_null(db_cell(&r, 0, 3));
    db_result_free(&r);

    db_param q[] = {db_text("r2"), db_int(6), db_bool(false)};
    dc_ok(d, "INSERT INTO dbt_child (id, i, b) VALUES ($1, $2, $3) RETURNING id", q, 3, NULL);
    dc_ok(d, "INSERT INTO dbt_child (id, i) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id", q, 2, &r);
    assert_int_equal(r.nrows, 0);
    assert_int_equal(r.changes, 0);
    db_result_free(&r);

    dc_ok(d, "UPDATE dbt_child SET i = i + 100 RETURNING id, i", NULL, 0, &r);
    assert_int_equal(r.nrows, 2);
    assert_int_equal(r.changes, 2);
    int64_t sum = db_cell_int(&r, 0, 1, 0) + db_cell_int(&r, 1, 1, 0);
    assert_int_equal(sum, 211);
    db_result_free(&r);

    db_param del[] = {db_text("r1")};
    dc_ok(d, "DELETE FROM dbt_child WHERE id = $1 RETURNING id, i", del, 1, &r);
    assert_int_equal(r.nrows, 1);
    assert_int_equal(r.changes, 1);
    assert_string_equal(db_cell(&r, 0, 0), "r1");
    assert_int_equal(db_cell_int(&r, 0, 1, -1), 105);
    db_result_free(&r);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_child"), 1);
}

/* Constraint violations map to their db_rc (the store turns DB_UNIQUE into
 * STORE_CONFLICT and DB_FOREIGN_KEY into STORE_NOT_FOUND); other failures are
 * DB_ERR. A failed statement leaves its result empty, writes nothing, and the
 * connection works on. */
static void case_constraints(void **state)
{
    db *d = DBF(state)->d;
    db_result r = DB_RESULT_INIT;
    dc_add_parent(d, "p1", "one");

    db_param dup_pk[] = {db_text("p1"), db_text("other")};
    assert_int_equal(db_exec(d, "INSERT INTO dbt_parent (id, name) VALUES ($1, $2) RETURNING id", dup_pk, 2, &r),
                     DB_UNIQUE);
    assert_int_equal(r.nrows, 0);
    assert_null(r.cells);
    dc_assert_err(d, "unique");

    db_param dup_name[] = {db_text("p2"), db_text("one")};
    assert_int_equal(db_exec(d, "INSERT INTO dbt_parent (id, name) VALUES ($1, $2)", dup_name, 2, NULL), DB_UNIQUE);
    dc_assert_err(d, "unique");

    db_param orphan[] = {db_text("c1"), db_text("no-such-parent")};
    assert_int_equal(db_exec(d, "INSERT INTO dbt_child (id, parent) VALUES ($1, $2)", orphan, 2, NULL),
                     DB_FOREIGN_KEY);
    dc_assert_err(d, "foreign key");

    dc_add_parent(d, "p3", "three");
    db_param child[] = {db_text("c2"), db_text("p3")};
    dc_ok(d, "INSERT INTO dbt_child (id, parent) VALUES ($1, $2)", child, 2, NULL);
    db_param parent[] = {db_text("p3")};
    assert_int_equal(db_exec(d, "DELETE FROM dbt_parent WHERE id = $1", parent, 1, NULL), DB_FOREIGN_KEY);

    db_param no_name[] = {db_text("p4"), db_null()};
    assert_int_equal(db_exec(d, "INSERT INTO dbt_parent (id, name) VALUES ($1, $2)", no_name, 2, NULL), DB_ERR);
    dc_assert_err(d, "null");

    assert_int_equal(db_exec(d, "SELEKT 1", NULL, 0, NULL), DB_ERR);
    dc_assert_err(d, "syntax");
    assert_int_equal(db_exec(d, "SELECT nope FROM dbt_parent", NULL, 0, NULL), DB_ERR);
    dc_assert_err(d, "nope");

    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_parent"), 2);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_child"), 1);
}

/* BEGIN/COMMIT/ROLLBACK through the backend's table: rollback undoes, commit
 * keeps, another connection sees nothing until the commit, no nesting, no commit
 * or rollback without a transaction, and an error inside leaves a transaction
 * that still rolls back. */
static void case_transactions(void **state)
{
    db_fx *f = DBF(state);
    db *d = f->d;
    assert_false(db_in_transaction(d));
    assert_int_equal(db_begin(d), DB_OK);
    assert_true(db_in_transaction(d));
    dc_add_parent(d, "t1", "rolled back");
    assert_int_equal(db_rollback(d), DB_OK);
    assert_false(db_in_transaction(d));
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_parent"), 0);

    char err[512];
    db *other = db_open(f->url, err, sizeof err);
    assert_non_null(other);
    assert_int_equal(db_begin(d), DB_OK);
    dc_add_parent(d, "t2", "committed");
    assert_int_equal(dc_count(other, "SELECT COUNT(*) FROM dbt_parent"), 0); /* not yet */
    assert_int_equal(db_commit(d), DB_OK);
    assert_false(db_in_transaction(d));
    assert_int_equal(dc_count(other, "SELECT COUNT(*) FROM dbt_parent"), 1);
    db_close(other);

    assert_int_equal(db_begin(d), DB_OK);
    assert_int_equal(db_begin(d), DB_ERR);
    dc_assert_err(d, "already open");
    assert_true(db_in_transaction(d));
    dc_add_parent(d, "t3", "then an error");
    assert_int_equal(db_exec(d, "INSERT INTO dbt_parent (id, name) VALUES ('t2', 'dup')", NULL, 0, NULL), DB_UNIQUE);
    assert_int_equal(db_rollback(d), DB_OK);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_parent"), 1);

    assert_int_equal(db_commit(d), DB_ERR);
    dc_assert_err(d, "no transaction");
    assert_int_equal(db_rollback(d), DB_ERR);
    dc_assert_err(d, "no transaction");
}

/* A COMMIT that fails (here a deferred foreign key, checked only at COMMIT)
 * reports its own error and code, writes nothing, and leaves no transaction
 * open: SQLite keeps the transaction after a failed COMMIT, so without db.c's
 * ROLLBACK the next BEGIN would fail. */
static void case_failed_commit(void **state)
{
    db *d = DBF(state)->d;
    assert_int_equal(db_begin(d), DB_OK);
    dc_add_parent(d, "f1", "in the failed transaction");
    db_param p[] = {db_text("c1"), db_text("no-such-parent")};
    dc_ok(d, "INSERT INTO dbt_child (id, late) VALUES ($1, $2)", p, 2, NULL); /* deferred: accepted for now */
    assert_int_equal(db_commit(d), DB_FOREIGN_KEY);
    dc_assert_err(d, "foreign key");
    assert_false(db_in_transaction(d));
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_parent"), 0);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_child"), 0);

    assert_int_equal(db_begin(d), DB_OK);
    dc_add_parent(d, "f2", "after");
    assert_int_equal(db_commit(d), DB_OK);
    assert_int_equal(dc_count(d, "SELECT COUNT(*) FROM dbt_parent"), 1);
}

/* db_script runs a list of statements; db_exec runs exactly one (a second
 * statement is refused and nothing runs). */
static void case_script(void **state)
{
    db *d = DBF(state)->d;
    assert_int_equal(db_script(d, "CREATE TABLE dbt_script (x INTEGER);"
                                  "INSERT INTO dbt_script (x) VALUES (1);"
                                  "INSERT INTO dbt_script (x) VALUES (2);"),
                     DB_OK);
    assert_int_equal(dc_count(d, "SELECT SUM(x) FROM dbt_script"), 3);
    assert_int_equal(db_script(d, "INSERT INTO dbt_script (x) VALUES (4); INSERT INTO no_such_table VALUES (1);"),
                     DB_ERR);
    dc_assert_err(d, "no_such_table");

    /* SQLite runs a script's statements one by one, so the first INSERT stands;
     * PostgreSQL runs a multi-statement query as one implicit transaction */
    int64_t sum = DBF(state)->kind == DB_PG ? 3 : 7;
    assert_int_equal(dc_count(d, "SELECT SUM(x) FROM dbt_script"), sum);

    assert_int_equal(db_exec(d, "INSERT INTO dbt_script (x) VALUES (8); INSERT INTO dbt_script (x) VALUES (16)",
                             NULL, 0, NULL),
                     DB_ERR);
    dc_assert_err(d, NULL);
    assert_int_equal(dc_count(d, "SELECT SUM(x) FROM dbt_script"), sum);
}

static void case_backend(void **state)
{
    db_fx *f = DBF(state);
    assert_int_equal(db_backend(f->d), f->kind);
    assert_string_equal(db_backend_name(f->d), f->kind == DB_PG ? "postgresql" : "sqlite");
}

#define DB_CASE(name) cmocka_unit_test_setup_teardown(name, db_case_setup, db_case_teardown)

static const struct CMUnitTest db_cases[] = {
    DB_CASE(case_backend),
    DB_CASE(case_params_every_type),
    DB_CASE(case_params_by_number),
    DB_CASE(case_result_sets),
    DB_CASE(case_returning),
    DB_CASE(case_constraints),
    DB_CASE(case_transactions),
    DB_CASE(case_failed_commit),
    DB_CASE(case_script),
};

#endif

/* db (server/store/db.c and the SQLite backend's function table): the shared
 * cases of db_cases.h on an SQLite file, then what only SQLite has: the URL
 * spellings, an in-memory database, and the settings every connection gets
 * (WAL, foreign keys). tests/integration/test_store.c runs the same cases on a
 * real PostgreSQL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_cases.h"

static char g_dir[64];
static char g_file[128];
static db_fx g_sqlite = {.kind = DB_SQLITE};

static void remove_db_files(void)
{
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s%s", g_file, suffixes[i]);
        unlink(p);
    }
}

static int setup_sqlite(void **state)
{
    snprintf(g_dir, sizeof g_dir, "%s/veil-test-db-XXXXXX", "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_file, sizeof g_file, "%s/db.sqlite", g_dir);
    snprintf(g_sqlite.url, sizeof g_sqlite.url, "sqlite:%s", g_file);
    *state = &g_sqlite;
    return 0;
}

static int teardown_sqlite(void **state)
{
    (void)state;
    remove_db_files();
    rmdir(g_dir);
    return 0;
}

static char *pragma(db *d, const char *sql)
{
    db_result r = DB_RESULT_INIT;
    dc_ok(d, sql, NULL, 0, &r);
    char *v = db_take(&r, 0, 0);
    db_result_free(&r);
    return v;
}

/* Every file connection runs in WAL mode with foreign keys on (checked, not assumed). */
static void test_sqlite_settings(void **state)
{
    db_fx *f = *state;
    char err[512];
    db *d = db_open(f->url, err, sizeof err);
    assert_non_null(d);
    char *mode = pragma(d, "PRAGMA journal_mode"), *fk = pragma(d, "PRAGMA foreign_keys");
    assert_string_equal(mode, "wal");
    assert_string_equal(fk, "1");
    free(mode);
    free(fk);
    db_close(d);
}

/* "sqlite:PATH", "sqlite:///abs/path" and a bare path name the same file. */
static void test_sqlite_url_spellings(void **state)
{
    (void)state;
    char url[3][200], err[512];
    snprintf(url[0], sizeof url[0], "sqlite:%s", g_file);
    snprintf(url[1], sizeof url[1], "sqlite://%s", g_file); /* sqlite:// + "/tmp/..." = sqlite:///tmp/... */
    snprintf(url[2], sizeof url[2], "%s", g_file);
    db *w = db_open(url[0], err, sizeof err);
    assert_non_null(w);
    assert_int_equal(db_script(w, "DROP TABLE IF EXISTS dbt_url; CREATE TABLE dbt_url (x TEXT);"
                                  "INSERT INTO dbt_url (x) VALUES ('here');"),
                     DB_OK);
    for (int i = 1; i < 3; i++) {
        db *d = db_open(url[i], err, sizeof err);
        if (!d)
            fail_msg("%s: %s", url[i], err);
        assert_int_equal(db_backend(d), DB_SQLITE);
        char *x = pragma(d, "SELECT x FROM dbt_url");
        assert_string_equal(x, "here");
        free(x);
        db_close(d);
    }
    assert_int_equal(db_script(w, "DROP TABLE dbt_url;"), DB_OK);
    db_close(w);
}

/* An in-memory database works (WAL does not apply there), and each one is its own. */
static void test_sqlite_memory(void **state)
{
    (void)state;
    char err[512];
    db *a = db_open("sqlite::memory:", err, sizeof err), *b = db_open(":memory:", err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(db_script(a, "CREATE TABLE m (x INTEGER); INSERT INTO m VALUES (42);"), DB_OK);
    assert_int_equal(dc_count(a, "SELECT x FROM m"), 42);
    assert_int_equal(db_exec(b, "SELECT x FROM m", NULL, 0, NULL), DB_ERR);
    dc_assert_err(b, "no such table");
    db_close(a);
    db_close(b);
}

/* A URL that names no backend, or a directory that does not exist, is refused
 * with the reason; nothing is created. */
static void test_open_refusals(void **state)
{
    (void)state;
    char err[512] = "";
    assert_null(db_open("mysql://u:pw@localhost/veil", err, sizeof err));
    assert_non_null(strstr(err, "unsupported database URL scheme"));
    assert_null(db_open("", err, sizeof err));
    assert_non_null(strstr(err, "empty"));
    assert_null(db_open("sqlite:", err, sizeof err));
    assert_non_null(strstr(err, "empty path"));
    char url[200];
    snprintf(url, sizeof url, "sqlite:%s/missing/db.sqlite", g_dir);
    assert_null(db_open(url, err, sizeof err));
    assert_non_null(strstr(err, "missing"));
    char dir[160];
    snprintf(dir, sizeof dir, "%s/missing", g_dir);
    assert_int_equal(access(dir, F_OK), -1);
}

/* Two connections on one file (veild's DB workers): a writer waits for another
 * up to the timeout, then fails as timed out, not as a plain error; once the
 * first one commits, the second writes. */
static void test_sqlite_busy_timeout(void **state)
{
    db_fx *f = *state;
    char err[512];
    db *a = db_open(f->url, err, sizeof err), *b = db_open(f->url, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(db_script(a, "CREATE TABLE IF NOT EXISTS dbt_busy (x INTEGER)"), DB_OK);
    assert_int_equal(db_set_timeout(b, 50), DB_OK);
    assert_int_equal(db_begin(a), DB_OK);
    assert_int_equal(db_begin(b), DB_ERR);
    assert_true(db_timed_out(b));
    assert_int_equal(db_exec(b, "INSERT INTO dbt_busy (x) VALUES (1)", NULL, 0, NULL), DB_ERR);
    assert_true(db_timed_out(b));
    assert_int_equal(db_commit(a), DB_OK);
    assert_int_equal(db_exec(b, "INSERT INTO dbt_busy (x) VALUES (1)", NULL, 0, NULL), DB_OK);
    assert_false(db_timed_out(b));
    /* a plain error is no timeout */
    assert_int_equal(db_exec(b, "INSERT INTO no_such_table VALUES (1)", NULL, 0, NULL), DB_ERR);
    assert_false(db_timed_out(b));
    assert_int_equal(db_script(a, "DROP TABLE dbt_busy"), DB_OK);
    db_close(a);
    db_close(b);
}

static const struct CMUnitTest sqlite_only[] = {
    cmocka_unit_test(test_sqlite_settings),
    cmocka_unit_test(test_sqlite_url_spellings),
    cmocka_unit_test(test_sqlite_memory),
    cmocka_unit_test(test_open_refusals),
    cmocka_unit_test(test_sqlite_busy_timeout),
};

int main(void)
{
    int failed = cmocka_run_group_tests_name("db/sqlite", db_cases, setup_sqlite, teardown_sqlite);
    failed += cmocka_run_group_tests_name("db/sqlite-only", sqlite_only, setup_sqlite, teardown_sqlite);
    return failed ? 1 : 0;
}

/* db — the thin SQL layer under the store: one API over SQLite 3 and PostgreSQL
 * (libpq), so the store's logic is written once. Each backend is one const table
 * of functions (db_backend.h) behind this API.
 *
 * SQL uses $1..$n placeholders in both dialects (SQLite binds them by name).
 * Parameters are typed (text, int64, bool, null); results are materialized: each
 * cell is a NUL-terminated text copy (NULL for SQL NULL) owned by the db_result
 * until db_result_free (or until taken with db_take). Prepared statements are
 * cached per connection, keyed by the SQL text. Error text (db_errmsg) never
 * contains the password from the URL, and nothing here ever logs.
 * A db is used by one thread at a time; each thread that needs the database opens
 * its own (veild's DB workers do), and nothing here is shared between two dbs.
 */
#ifndef VEIL_SERVER_DB_H
#define VEIL_SERVER_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct db db;

typedef enum db_kind { DB_SQLITE = 0, DB_PG = 1 } db_kind;

typedef enum db_rc {
    DB_OK = 0,
    DB_UNIQUE = 1,      /* unique or primary key violation */
    DB_FOREIGN_KEY = 2, /* foreign key violation */
    DB_ERR = -1,        /* anything else (db_errmsg says what) */
} db_rc;

typedef enum db_ptype { DBP_NULL = 0, DBP_TEXT, DBP_INT, DBP_BOOL } db_ptype;

typedef struct db_param {
    db_ptype type;
    const char *text; /* DBP_TEXT, borrowed for the call */
    int64_t i;        /* DBP_INT, DBP_BOOL (0/1) */
} db_param;

/* A NULL string becomes SQL NULL. */
static inline db_param db_text(const char *s)
{
    db_param p = {s ? DBP_TEXT : DBP_NULL, s, 0};
    return p;
}
static inline db_param db_int(int64_t v)
{
    db_param p = {DBP_INT, NULL, v};
    return p;
}
static inline db_param db_bool(bool b)
{
    db_param p = {DBP_BOOL, NULL, b ? 1 : 0};
    return p;
}
static inline db_param db_null(void)
{
    db_param p = {DBP_NULL, NULL, 0};
    return p;
}

typedef struct db_result {
    size_t nrows, ncols;
    char **cells;    /* nrows * ncols, row-major; NULL = SQL NULL */
    size_t cap;      /* cells allocated */
    int64_t changes; /* rows inserted/updated/deleted by the statement */
} db_result;

#define DB_RESULT_INIT {0, 0, NULL, 0, 0}

void db_result_free(db_result *r);
/* The cell's text (NULL for SQL NULL or out of range); owned by r. */
const char *db_cell(const db_result *r, size_t row, size_t col);
/* Moves the cell's string to the caller (who frees it); the cell becomes NULL. */
char *db_take(db_result *r, size_t row, size_t col);
/* 't', 'true', '1' (any case) are true; anything else, NULL included, false. */
bool db_cell_bool(const db_result *r, size_t row, size_t col);
/* The cell as an integer, or dflt when NULL or not a number. */
int64_t db_cell_int(const db_result *r, size_t row, size_t col, int64_t dflt);

/* url: "sqlite:PATH", a bare PATH, or "postgresql://..." / "postgres://...".
 * SQLite: WAL, foreign keys on, a busy timeout; the file's directory must exist.
 * NULL on failure with err filled (without any password from the URL). */
db *db_open(const char *url, char *err, size_t errlen);
void db_close(db *d);
db_kind db_backend(const db *d);
const char *db_backend_name(const db *d); /* "sqlite" | "postgresql" */
const char *db_errmsg(const db *d);
/* The last failure was the database not answering in time (db_set_timeout), or
 * busy past it: the same call may succeed later. */
bool db_timed_out(const db *d);

/* How long one statement may take, in ms; 0 (the default) waits as long as it takes.
 * PostgreSQL: the server's statement_timeout on this connection, and the client's
 * own wait for each answer (ms + DB_TIMEOUT_GRACE_MS, so that the server's timeout
 * answers first), past which the connection is shut down (the server rolls back
 * what it held) and made again by the next call, within the same bound. A server
 * or a network that stops answering can hold a caller no longer than that.
 * SQLite: the busy timeout (how long a writer waits for another; 0 keeps its
 * default of 5 s), past which the call fails as timed out. */
#define DB_TIMEOUT_GRACE_MS 1000
db_rc db_set_timeout(db *d, long ms);

/* Runs one statement with n parameters. res (may be NULL) receives the rows and
 * the change count; on failure it is left empty. */
db_rc db_exec(db *d, const char *sql, const db_param *params, size_t n, db_result *res);
/* Runs a list of statements without parameters (migrations); nothing is cached. */
db_rc db_script(db *d, const char *sql);

/* BEGIN (SQLite: BEGIN IMMEDIATE, so a writer never fails to upgrade its lock),
 * COMMIT, ROLLBACK. A failed COMMIT leaves no transaction open. */
db_rc db_begin(db *d);
db_rc db_commit(db *d);
db_rc db_rollback(db *d);
bool db_in_transaction(const db *d);

#endif

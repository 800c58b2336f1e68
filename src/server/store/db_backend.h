/* db_backend — the contract between db.c and a database backend: one const table
 * of functions per backend (db_sqlite.c, db_pg.c), which db.c calls through and
 * nothing else does. A backend owns its connection state (the void *conn its open
 * returns, freed by its close) and sees no other backend; db.c owns the db handle,
 * the URL's secrets and the transaction flag, and never looks inside a conn.
 * Errors go through db_set_err, so every message is redacted in one place.
 */
#ifndef VEIL_SERVER_DB_BACKEND_H
#define VEIL_SERVER_DB_BACKEND_H

#include "server/store/db.h"

typedef struct db_backend_ops {
    db_kind kind;
    const char *name; /* "sqlite" | "postgresql": also the migrations folder */
    /* target: a file path (SQLite) or the whole URL (PostgreSQL). Returns the
     * connection state, or NULL with the error set (having freed what it made). */
    void *(*open)(db *d, const char *target);
    void (*close)(void *conn);
    /* One statement with n parameters; res (may be NULL) arrives empty and is left
     * empty on failure. Constraint violations map to DB_UNIQUE / DB_FOREIGN_KEY. */
    db_rc (*exec)(db *d, void *conn, const char *sql, const db_param *p, size_t n, db_result *res);
    /* A list of statements without parameters, not cached (migrations). */
    db_rc (*script)(db *d, void *conn, const char *sql);
    /* The transaction statements; db.c keeps the open/closed state around them
     * and follows a failed commit with rollback. */
    db_rc (*begin)(db *d, void *conn);
    db_rc (*commit)(db *d, void *conn);
    db_rc (*rollback)(db *d, void *conn);
    /* db_set_timeout: ms > 0, or 0 for no limit */
    db_rc (*set_timeout)(db *d, void *conn, long ms);
} db_backend_ops;

extern const db_backend_ops db_sqlite_ops;
extern const db_backend_ops db_pg_ops;

/* Formats into the db's error text (one line), then replaces every occurrence of
 * the URL's password by "***". */
void db_set_err(db *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The error just set is a timeout (db_timed_out); every call starts without one. */
void db_mark_timed_out(db *d);
/* Appends a row of r->ncols NULL cells; returns it, or NULL when out of memory. */
char **db_result_add_row(db_result *r);

#endif

/* db_int — what db.c shares with its two backends (db_sqlite.c, db_pg.c).
 * Not for the store or anyone else: they use db.h.
 */
#ifndef VEIL_SERVER_DB_INT_H
#define VEIL_SERVER_DB_INT_H

#include "server/store/db.h"

struct db {
    db_kind kind;
    bool in_tx;
    char err[512];
    char *secret[2]; /* the URL's password, as written and percent-decoded: redacted from err */
    void *impl;      /* the backend's connection state */
};

/* Formats into d->err, then replaces every occurrence of the URL's password by "***". */
void db_set_err(db *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a row of r->ncols NULL cells; returns it, or NULL when out of memory. */
char **db_result_add_row(db_result *r);

int db_sqlite_open(db *d, const char *path);
void db_sqlite_close(db *d);
db_rc db_sqlite_exec(db *d, const char *sql, const db_param *p, size_t n, db_result *res);
db_rc db_sqlite_script(db *d, const char *sql);

int db_pg_open(db *d, const char *url);
void db_pg_close(db *d);
db_rc db_pg_exec(db *d, const char *sql, const db_param *p, size_t n, db_result *res);
db_rc db_pg_script(db *d, const char *sql);

#endif

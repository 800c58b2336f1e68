/* store_int — what the store's files share: store.c (open, migrations,
 * transactions, time) and one store_<entity>.c per group of tables. The handle,
 * error reporting, statements with the savepoint rule, timestamps; st_ is their
 * prefix. For those files only: everyone else uses store.h. Nothing here logs.
 */
#ifndef VEIL_SERVER_STORE_INT_H
#define VEIL_SERVER_STORE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "server/store/db.h"
#include "server/store/store.h"

#define NP(a) (sizeof(a) / sizeof((a)[0]))

struct store {
    db *d;
    bool user_tx;   /* store_begin is open */
    bool timed_out; /* err is the database not answering in time */
    char err[512];
};

/* Sets the error text (for store_last_error) and returns STORE_ERR. */
store_rc st_fail(store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies the db's error; a unique violation is STORE_CONFLICT, a foreign key
 * violation STORE_NOT_FOUND (the row it points to does not exist), else STORE_ERR. */
store_rc st_db_fail(store *s, db_rc rc);
/* One statement, as it is (a read, or a write inside st_tx_open). */
store_rc st_run(store *s, const char *sql, const db_param *p, size_t n, db_result *res);

/* Every operation that writes more than one statement runs between these: a
 * transaction, or a savepoint inside a caller's store_begin, so a failed
 * operation never poisons the caller's transaction (PostgreSQL aborts the whole
 * transaction on any error otherwise). st_tx_close commits (or releases) when
 * rc is STORE_OK, else rolls back; it returns rc, or STORE_ERR when the commit
 * fails. s->err keeps the first error. */
store_rc st_tx_open(store *s);
store_rc st_tx_close(store *s, store_rc rc);
/* One write statement: atomic on its own, in a savepoint inside a caller's transaction. */
store_rc st_write(store *s, const char *sql, const db_param *p, size_t n, db_result *res);
/* st_write for an UPDATE/DELETE; STORE_NOT_FOUND when it touched no row. */
store_rc st_write_row(store *s, const char *sql, const db_param *p, size_t n);
/* Reads the boolean that sql selects for the row with that id; STORE_NOT_FOUND without the row. */
store_rc st_read_flag(store *s, const char *sql, const char *id, bool *flag);

/* A timestamp strictly after every one this process handed out before, on any
 * connection (veild's workers each have one). */
void st_stamp(store *s, char out[32]);
/* The store's timestamp seconds ago. */
void st_ts_ago(long seconds, char out[32]);

#define NEED(x)                                                                                    \
    do {                                                                                           \
        if (!(x))                                                                                  \
            return st_fail(s, "%s: %s is required", __func__, #x);                                 \
    } while (0)

/* ---- rows: one column table per row type ----
 * The table names each column's SQL expression, how its text is read, and the
 * field of the row struct it fills. The same table builds the SELECT (or
 * RETURNING) list, fills rows from results, and frees what a row owns, so a
 * column cannot be selected without being read or read without being freed. */

typedef enum st_kind {
    ST_TEXT, /* char *, NULL for SQL NULL; the row owns it */
    ST_BOOL, /* bool: 't', 'true', '1' (any case) are true, NULL is false */
    ST_LONG, /* long, -1 for SQL NULL */
    ST_JSON, /* json_t *, NULL for SQL NULL or invalid JSON; the row owns a reference */
} st_kind;

typedef struct st_col {
    const char *sql; /* the expression in the select list */
    st_kind kind;
    size_t offset; /* of the field in the row struct */
} st_col;

typedef struct st_cols {
    const struct st_cols *base; /* columns that come first (a join extends a row type), or NULL */
    const st_col *col;
    size_t n;
} st_cols;

/* The field's C type must be the kind's: a wrong pairing fails to compile (negative array size). */
#define ST_FIELD(type, field, ctype)                                                               \
    (offsetof(type, field) + 0 * sizeof(char[_Generic(((type *)0)->field, ctype: 1, default: -1)]))
/* clang-format off */
#define ST_TEXT_COL(type, field, sql) {sql, ST_TEXT, ST_FIELD(type, field, char *)}
#define ST_BOOL_COL(type, field, sql) {sql, ST_BOOL, ST_FIELD(type, field, bool)}
#define ST_LONG_COL(type, field, sql) {sql, ST_LONG, ST_FIELD(type, field, long)}
#define ST_JSON_COL(type, field, sql) {sql, ST_JSON, ST_FIELD(type, field, json_t *)}
#define ST_COLS(base, cols) {base, cols, NP(cols)}
/* clang-format on */

#define ST_SQL_MAX 1024 /* the longest statement the store builds, with room to spare */

/* sql = head, t's columns (", "-separated, its base's first), tail. STORE_ERR when it does not fit. */
store_rc st_sql(store *s, char sql[ST_SQL_MAX], const char *head, const st_cols *t, const char *tail);
/* Fills the row at dst from result row i, t's columns in order; strings move out of r. */
void st_fill(db_result *r, size_t i, const st_cols *t, void *dst);
/* Frees what the row at dst owns by t (strings, JSON references) and clears those fields. */
void st_clear(const st_cols *t, void *dst);
/* "SELECT <t's columns> <from>" into dst from the first row; STORE_NOT_FOUND without one. */
store_rc st_select_one(store *s, const st_cols *t, const char *from, const db_param *p, size_t n, void *dst);
/* "SELECT <t's columns> <from>": *rows = a new array of *count rows of elem bytes (NULL when
 * none); the caller frees each row with st_clear (the type's *_list_free) and the array. */
store_rc st_select_list(store *s, const st_cols *t, const char *from, const db_param *p, size_t n, size_t elem,
                        void **rows, size_t *count);

#endif

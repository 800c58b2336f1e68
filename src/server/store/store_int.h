/* store_int — what the store's files share: store.c (open, migrations,
 * transactions, time) and one store_<entity>.c per group of tables. The handle,
 * error reporting, statements with the savepoint rule, timestamps; st_ is their
 * prefix. For those files only: everyone else uses store.h. Nothing here logs.
 */
#ifndef VEIL_SERVER_STORE_INT_H
#define VEIL_SERVER_STORE_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "server/store/db.h"
#include "server/store/store.h"

#define NP(a) (sizeof(a) / sizeof((a)[0]))

struct store {
    db *d;
    bool user_tx; /* store_begin is open */
    int64_t last_us; /* the last timestamp handed out: the store's timestamps strictly increase */
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

/* A timestamp strictly after every one this store handed out before. */
void st_stamp(store *s, char out[32]);
/* The store's timestamp seconds ago. */
void st_ts_ago(long seconds, char out[32]);

#define NEED(x)                                                                                    \
    do {                                                                                           \
        if (!(x))                                                                                  \
            return st_fail(s, "%s: %s is required", __func__, #x);                                 \
    } while (0)

/* ptr = n zeroed rows (NULL when n == 0); rc = STORE_ERR when out of memory. */
#define ALLOC_ROWS(s, rc, ptr, n)                                                                  \
    do {                                                                                           \
        (ptr) = NULL;                                                                              \
        if ((n) && !((ptr) = calloc((n), sizeof *(ptr))))                                          \
            (rc) = st_fail((s), "out of memory");                                                  \
    } while (0)

#endif

/* store — the store's core (store.h): open and close, schema migrations, the
 * caller's transactions, time and ids, and the statement and row helpers that
 * every store_<entity>.c uses (store_int.h). The SQL in all of them is shared by
 * both dialects: $n placeholders, TRUE/FALSE literals, ON CONFLICT, RETURNING.
 * Only the migrations (migrations/<backend>/) and the migration lock differ.
 * The store owns its db handle; nothing here logs.
 */
#include "server/store/store_int.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "server/store/db_migrations.h"

/* one 64-bit key for PostgreSQL's advisory lock: two veilds starting at once migrate in turn */
#define PG_MIGRATION_LOCK 0x7665696c6d6967LL /* "veilmig" */

/* ---- errors, statements, transactions ---- */

store_rc st_fail(store *s, const char *fmt, ...)
{
    s->timed_out = false;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return STORE_ERR;
}

/* A unique violation is a conflict; a foreign key violation means the row it
 * points to does not exist. */
store_rc st_db_fail(store *s, db_rc rc)
{
    snprintf(s->err, sizeof s->err, "%s", db_errmsg(s->d));
    s->timed_out = db_timed_out(s->d);
    return rc == DB_UNIQUE ? STORE_CONFLICT : rc == DB_FOREIGN_KEY ? STORE_NOT_FOUND : STORE_ERR;
}

store_rc st_run(store *s, const char *sql, const db_param *p, size_t n, db_result *res)
{
    db_rc rc = db_exec(s->d, sql, p, n, res);
    return rc == DB_OK ? STORE_OK : st_db_fail(s, rc);
}

store_rc st_tx_open(store *s)
{
    db_rc rc = s->user_tx ? db_exec(s->d, "SAVEPOINT veil_op", NULL, 0, NULL) : db_begin(s->d);
    if (rc != DB_OK) {
        st_db_fail(s, rc);
        return STORE_ERR;
    }
    return STORE_OK;
}

/* Commits (or releases the savepoint) when rc is STORE_OK, else rolls back; returns
 * rc, or STORE_ERR when the commit itself fails. s->err keeps the first error. */
store_rc st_tx_close(store *s, store_rc rc)
{
    if (rc == STORE_OK) {
        db_rc c = s->user_tx ? db_exec(s->d, "RELEASE SAVEPOINT veil_op", NULL, 0, NULL) : db_commit(s->d);
        if (c == DB_OK)
            return STORE_OK;
        st_db_fail(s, c);
        if (!s->user_tx)
            return STORE_ERR; /* db_commit has rolled back */
        rc = STORE_ERR;
    }
    if (s->user_tx) {
        db_exec(s->d, "ROLLBACK TO SAVEPOINT veil_op", NULL, 0, NULL);
        db_exec(s->d, "RELEASE SAVEPOINT veil_op", NULL, 0, NULL);
    } else {
        db_rollback(s->d);
    }
    return rc;
}

/* One write statement: atomic on its own, but inside a caller's transaction it
 * gets a savepoint so that its failure leaves the transaction usable. */
store_rc st_write(store *s, const char *sql, const db_param *p, size_t n, db_result *res)
{
    if (!s->user_tx)
        return st_run(s, sql, p, n, res);
    store_rc rc = st_tx_open(s);
    if (rc != STORE_OK)
        return rc;
    return st_tx_close(s, st_run(s, sql, p, n, res));
}

/* Runs an UPDATE/DELETE; STORE_NOT_FOUND when it touched no row. */
store_rc st_write_row(store *s, const char *sql, const db_param *p, size_t n)
{
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_write(s, sql, p, n, &r);
    if (rc == STORE_OK && r.changes == 0)
        rc = STORE_NOT_FOUND;
    db_result_free(&r);
    return rc;
}

/* Reads the boolean that sql selects for the row with that id; STORE_NOT_FOUND without the row. */
store_rc st_read_flag(store *s, const char *sql, const char *id, bool *flag)
{
    db_param p[] = {db_text(id)};
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_run(s, sql, p, NP(p), &r);
    if (rc == STORE_OK && r.nrows == 0)
        rc = STORE_NOT_FOUND;
    if (rc == STORE_OK)
        *flag = db_cell_bool(&r, 0, 0);
    db_result_free(&r);
    return rc;
}

/* ---- rows ---- */

/* Appends t's column list to buf at *len; -1 when it does not fit. */
static int cols_list(const st_cols *t, char *buf, size_t cap, size_t *len)
{
    if (t->base && cols_list(t->base, buf, cap, len) < 0)
        return -1;
    for (size_t i = 0; i < t->n; i++) {
        int k = snprintf(buf + *len, cap - *len, "%s%s", *len ? ", " : "", t->col[i].sql);
        if (k < 0 || (size_t)k >= cap - *len)
            return -1;
        *len += (size_t)k;
    }
    return 0;
}

/* sql = head, t's column list, sep, tail */
static store_rc build_sql(store *s, char sql[ST_SQL_MAX], const char *head, const st_cols *t, const char *sep,
                          const char *tail)
{
    char list[ST_SQL_MAX];
    size_t len = 0;
    list[0] = '\0';
    int k = -1;
    if (cols_list(t, list, sizeof list, &len) == 0)
        k = snprintf(sql, ST_SQL_MAX, "%s%s%s%s", head, list, sep, tail);
    if (k < 0 || k >= ST_SQL_MAX)
        return st_fail(s, "statement longer than %d bytes", ST_SQL_MAX);
    return STORE_OK;
}

store_rc st_sql(store *s, char sql[ST_SQL_MAX], const char *head, const st_cols *t, const char *tail)
{
    return build_sql(s, sql, head, t, "", tail);
}

/* Fills t's fields from result row i, starting at column *col. */
static void fill_from(db_result *r, size_t i, const st_cols *t, char *dst, size_t *col)
{
    if (t->base)
        fill_from(r, i, t->base, dst, col);
    for (size_t k = 0; k < t->n; k++, (*col)++) {
        void *field = dst + t->col[k].offset;
        switch (t->col[k].kind) {
        case ST_TEXT:
            *(char **)field = db_take(r, i, *col);
            break;
        case ST_BOOL:
            *(bool *)field = db_cell_bool(r, i, *col);
            break;
        case ST_LONG:
            *(long *)field = (long)db_cell_int(r, i, *col, -1);
            break;
        case ST_JSON: {
            const char *v = db_cell(r, i, *col);
            *(json_t **)field = v ? json_loads(v, JSON_DECODE_ANY, NULL) : NULL;
            break;
        }
        }
    }
}

void st_fill(db_result *r, size_t i, const st_cols *t, void *dst)
{
    size_t col = 0;
    fill_from(r, i, t, dst, &col);
}

void st_clear(const st_cols *t, void *dst)
{
    for (; t; t = t->base) {
        for (size_t k = 0; k < t->n; k++) {
            void *field = (char *)dst + t->col[k].offset;
            if (t->col[k].kind == ST_TEXT) {
                free(*(char **)field);
                *(char **)field = NULL;
            } else if (t->col[k].kind == ST_JSON) {
                json_decref(*(json_t **)field);
                *(json_t **)field = NULL;
            }
        }
    }
}

static store_rc select_rows(store *s, const st_cols *t, const char *from, const db_param *p, size_t n, db_result *r)
{
    char sql[ST_SQL_MAX];
    store_rc rc = build_sql(s, sql, "SELECT ", t, " ", from);
    return rc == STORE_OK ? st_run(s, sql, p, n, r) : rc;
}

store_rc st_select_one(store *s, const st_cols *t, const char *from, const db_param *p, size_t n, void *dst)
{
    db_result r = DB_RESULT_INIT;
    store_rc rc = select_rows(s, t, from, p, n, &r);
    if (rc == STORE_OK && r.nrows == 0)
        rc = STORE_NOT_FOUND;
    if (rc == STORE_OK)
        st_fill(&r, 0, t, dst);
    db_result_free(&r);
    return rc;
}

store_rc st_select_list(store *s, const st_cols *t, const char *from, const db_param *p, size_t n, size_t elem,
                        void **rows, size_t *count)
{
    *rows = NULL;
    *count = 0;
    db_result r = DB_RESULT_INIT;
    store_rc rc = select_rows(s, t, from, p, n, &r);
    if (rc == STORE_OK && r.nrows && !(*rows = calloc(r.nrows, elem)))
        rc = st_fail(s, "out of memory");
    if (rc == STORE_OK) {
        for (size_t i = 0; i < r.nrows; i++)
            st_fill(&r, i, t, (char *)*rows + i * elem);
        *count = r.nrows;
    }
    db_result_free(&r);
    return rc;
}

/* ---- time and ids ---- */

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void format_ts(int64_t us, char out[32])
{
    time_t sec = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm); /* 19 chars until year 9999 */
    snprintf(out + n, 32 - n, ".%06u", (unsigned)(us % 1000000));
}

void store_now(char out[32]) { format_ts(now_us(), out); }

void st_ts_ago(long seconds, char out[32]) { format_ts(now_us() - (int64_t)seconds * 1000000, out); }

/* The last timestamp this process handed out. Process-wide, not per store: veild's
 * DB workers each have a connection, and two requests that one client makes one
 * after the other may land on two of them. */
static _Atomic int64_t g_last_us;

/* A timestamp strictly after every one this process handed out before, so that
 * "newest first" is well defined and the assistant message follows the user's. */
void st_stamp(store *s, char out[32])
{
    (void)s;
    int64_t now = now_us(), last = atomic_load(&g_last_us), us;
    do
        us = now > last ? now : last + 1;
    while (!atomic_compare_exchange_weak(&g_last_us, &last, us));
    format_ts(us, out);
}

void store_uuid(char out[37])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof b) != 1)
        abort(); /* no randomness: an id that may collide is worse than stopping */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
             b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* ---- open, migrations ---- */

const char *store_backend(const store *s) { return db_backend_name(s->d); }
const char *store_last_error(const store *s) { return s->err; }

static store_rc apply_migrations(store *s)
{
    const char *backend = store_backend(s);
    if (db_begin(s->d) != DB_OK)
        return st_db_fail(s, DB_ERR);
    store_rc rc = STORE_OK;
    db_result r = DB_RESULT_INIT;
    if (db_backend(s->d) == DB_PG) {
        db_param lock[] = {db_int(PG_MIGRATION_LOCK)};
        if ((rc = st_run(s, "SELECT pg_advisory_xact_lock($1)", lock, NP(lock), NULL)) != STORE_OK)
            goto out;
    }
    if (db_script(s->d, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version INTEGER NOT NULL PRIMARY KEY, applied_at TEXT NOT NULL)") != DB_OK) {
        rc = st_db_fail(s, DB_ERR);
        goto out;
    }
    if ((rc = st_run(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, 0, &r)) != STORE_OK)
        goto out;
    int current = (int)db_cell_int(&r, 0, 0, 0);
    /* apply this backend's migrations above the current version, lowest first */
    for (;;) {
        const db_migration *next = NULL;
        for (size_t i = 0; i < db_migrations_count; i++) {
            const db_migration *m = &db_migrations[i];
            if (strcmp(m->backend, backend) != 0 || m->version <= current)
                continue;
            if (next && m->version == next->version) {
                rc = st_fail(s, "two migrations with version %d", m->version);
                goto out;
            }
            if (!next || m->version < next->version)
                next = m;
        }
        if (!next)
            break;
        if (db_script(s->d, next->sql) != DB_OK) {
            rc = st_fail(s, "migration %s/%s: %s", backend, next->name, db_errmsg(s->d));
            goto out;
        }
        char now[32];
        st_stamp(s, now);
        db_param p[] = {db_int(next->version), db_text(now)};
        if ((rc = st_run(s, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", p, NP(p), NULL)) !=
            STORE_OK)
            goto out;
        current = next->version;
    }
out:
    db_result_free(&r);
    if (rc == STORE_OK) {
        if (db_commit(s->d) != DB_OK)
            rc = st_db_fail(s, DB_ERR);
    } else {
        db_rollback(s->d);
    }
    return rc == STORE_OK ? STORE_OK : STORE_ERR;
}

static store *open_store(const char *url, bool migrate, char *err, size_t errlen)
{
    char local[256];
    if (!err || errlen == 0) {
        err = local;
        errlen = sizeof local;
    }
    err[0] = '\0';
    db *d = db_open(url, err, errlen);
    if (!d)
        return NULL;
    store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        db_close(d);
        return NULL;
    }
    s->d = d;
    if (migrate && apply_migrations(s) != STORE_OK) {
        snprintf(err, errlen, "%s", s->err);
        store_close(s);
        return NULL;
    }
    return s;
}

store *store_open(const char *url, char *err, size_t errlen) { return open_store(url, true, err, errlen); }

store *store_connect(const char *url, char *err, size_t errlen) { return open_store(url, false, err, errlen); }

store_rc store_set_timeout(store *s, long ms)
{
    db_rc rc = db_set_timeout(s->d, ms);
    return rc == DB_OK ? STORE_OK : st_db_fail(s, rc);
}

bool store_timed_out(const store *s) { return s->timed_out; }

void store_close(store *s)
{
    if (!s)
        return;
    if (s->user_tx)
        db_rollback(s->d);
    db_close(s->d);
    free(s);
}

int store_schema_version(store *s)
{
    db_result r = DB_RESULT_INIT;
    if (st_run(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, 0, &r) != STORE_OK)
        return -1;
    int v = (int)db_cell_int(&r, 0, 0, -1);
    db_result_free(&r);
    return v;
}

store_rc store_ping(store *s)
{
    db_result r = DB_RESULT_INIT;
    store_rc rc = st_run(s, "SELECT 1", NULL, 0, &r);
    if (rc == STORE_OK && (r.nrows != 1 || db_cell_int(&r, 0, 0, 0) != 1))
        rc = st_fail(s, "SELECT 1 returned no row");
    db_result_free(&r);
    return rc;
}

store_rc store_begin(store *s)
{
    if (s->user_tx)
        return st_fail(s, "store_begin: a transaction is already open (nesting is not supported)");
    if (db_begin(s->d) != DB_OK)
        return st_db_fail(s, DB_ERR);
    s->user_tx = true;
    return STORE_OK;
}

store_rc store_commit(store *s)
{
    if (!s->user_tx)
        return st_fail(s, "store_commit: no transaction is open");
    s->user_tx = false;
    db_rc rc = db_commit(s->d);
    return rc == DB_OK ? STORE_OK : st_db_fail(s, rc);
}

bool store_in_transaction(const store *s) { return s->user_tx; }

store_rc store_rollback(store *s)
{
    if (!s->user_tx)
        return st_fail(s, "store_rollback: no transaction is open");
    s->user_tx = false;
    return db_rollback(s->d) == DB_OK ? STORE_OK : st_db_fail(s, DB_ERR);
}

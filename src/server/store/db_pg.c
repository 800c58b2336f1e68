/* db_pg — the PostgreSQL backend of db.h over libpq, as the table db_pg_ops
 * (db_backend.h). Owns its connection state (pgc: the PGconn and the statement
 * cache), freed by pg_close. Statements are prepared once per connection (named
 * "veil_N") and cached by their SQL text; parameters travel as text with their
 * types left for the server to infer from the SQL. A connection found broken
 * outside a transaction is reset once (the cache is dropped with it). Server
 * notices are discarded: the store never logs.
 */
#include "server/store/db_backend.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_CONNECT_TIMEOUT "10" /* seconds; the URL's connect_timeout wins */
#define PG_MAX_PARAMS 32

typedef struct pg_stmt {
    char *sql;
    char name[24];
} pg_stmt;

typedef struct pgc {
    PGconn *c;
    pg_stmt *cache;
    size_t n, cap;
    unsigned long next_id;
} pgc;

static void quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg;
}

static void forget_cache(pgc *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->cache[i].sql);
    p->n = 0;
}

static void pg_close(void *conn)
{
    pgc *p = conn;
    forget_cache(p);
    free(p->cache);
    if (p->c)
        PQfinish(p->c);
    free(p);
}

static void *pg_open(db *d, const char *url)
{
    pgc *p = calloc(1, sizeof *p);
    if (!p) {
        db_set_err(d, "out of memory");
        return NULL;
    }
    /* the URL comes last, so its own settings override these defaults */
    const char *const kw[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const val[] = {PG_CONNECT_TIMEOUT, "veild", url, NULL};
    p->c = PQconnectdbParams(kw, val, 1);
    if (!p->c) {
        db_set_err(d, "out of memory");
        goto fail;
    }
    if (PQstatus(p->c) != CONNECTION_OK) {
        db_set_err(d, "postgresql: %s", PQerrorMessage(p->c));
        goto fail;
    }
    PQsetNoticeProcessor(p->c, quiet, NULL);
    if (PQsetClientEncoding(p->c, "UTF8") != 0) {
        db_set_err(d, "postgresql: cannot set client encoding UTF8");
        goto fail;
    }
    return p;
fail:
    pg_close(p);
    return NULL;
}

static int ensure_connected(db *d, pgc *p)
{
    if (PQstatus(p->c) == CONNECTION_OK)
        return 0;
    if (db_in_transaction(d)) {
        db_set_err(d, "postgresql: connection lost inside a transaction");
        return -1;
    }
    forget_cache(p);
    PQreset(p->c);
    if (PQstatus(p->c) != CONNECTION_OK) {
        db_set_err(d, "postgresql: %s", PQerrorMessage(p->c));
        return -1;
    }
    PQsetNoticeProcessor(p->c, quiet, NULL);
    return 0;
}

static db_rc result_error(db *d, pgc *p, const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    /* the primary message only: DETAIL would quote row values ("Key (slug)=(...)") */
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    db_set_err(d, "postgresql: %s", msg ? msg : PQerrorMessage(p->c));
    if (state && strcmp(state, "23505") == 0)
        return DB_UNIQUE;
    if (state && strcmp(state, "23503") == 0)
        return DB_FOREIGN_KEY;
    return DB_ERR;
}

static const char *prepare(db *d, pgc *p, const char *sql)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->cache[i].sql, sql) == 0)
            return p->cache[i].name;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        pg_stmt *nc = realloc(p->cache, cap * sizeof *nc);
        if (!nc) {
            db_set_err(d, "out of memory");
            return NULL;
        }
        p->cache = nc;
        p->cap = cap;
    }
    pg_stmt *e = &p->cache[p->n];
    snprintf(e->name, sizeof e->name, "veil_%lu", ++p->next_id);
    e->sql = strdup(sql);
    if (!e->sql) {
        db_set_err(d, "out of memory");
        return NULL;
    }
    PGresult *r = PQprepare(p->c, e->name, sql, 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        result_error(d, p, r);
        PQclear(r);
        free(e->sql);
        return NULL;
    }
    PQclear(r);
    p->n++;
    return e->name;
}

static db_rc collect(db *d, const PGresult *r, db_result *res)
{
    res->ncols = (size_t)PQnfields(r);
    int nrows = PQntuples(r);
    for (int i = 0; i < nrows; i++) {
        char **row = db_result_add_row(res);
        if (!row)
            goto oom;
        for (size_t c = 0; c < res->ncols; c++) {
            if (PQgetisnull(r, i, (int)c))
                continue;
            row[c] = strdup(PQgetvalue(r, i, (int)c));
            if (!row[c])
                goto oom;
        }
    }
    return DB_OK;
oom:
    db_set_err(d, "out of memory");
    return DB_ERR;
}

static bool is_read_only(const char *sql) { return strncmp(sql, "SELECT ", 7) == 0; }

static db_rc exec_once(db *d, pgc *p, const char *sql, const db_param *params, size_t n, db_result *res)
{
    if (ensure_connected(d, p) < 0)
        return DB_ERR;
    const char *name = prepare(d, p, sql);
    if (!name)
        return DB_ERR;

    const char *values[PG_MAX_PARAMS];
    char nums[PG_MAX_PARAMS][24];
    for (size_t i = 0; i < n; i++) {
        switch (params[i].type) {
        case DBP_TEXT:
            values[i] = params[i].text;
            break;
        case DBP_INT:
            snprintf(nums[i], sizeof nums[i], "%lld", (long long)params[i].i);
            values[i] = nums[i];
            break;
        case DBP_BOOL:
            values[i] = params[i].i ? "true" : "false";
            break;
        default:
            values[i] = NULL;
            break;
        }
    }
    PGresult *r = PQexecPrepared(p->c, name, (int)n, n ? values : NULL, NULL, NULL, 0);
    db_rc rc = DB_OK;
    switch (PQresultStatus(r)) {
    case PGRES_TUPLES_OK:
        if (res)
            rc = collect(d, r, res);
        /* fall through */
    case PGRES_COMMAND_OK:
        if (res && rc == DB_OK)
            res->changes = strtoll(PQcmdTuples(r)[0] ? PQcmdTuples(r) : "0", NULL, 10);
        break;
    default:
        rc = result_error(d, p, r);
        break;
    }
    PQclear(r);
    if (rc != DB_OK && res)
        db_result_free(res);
    return rc;
}

static db_rc pg_exec(db *d, void *conn, const char *sql, const db_param *params, size_t n, db_result *res)
{
    pgc *p = conn;
    if (n > PG_MAX_PARAMS) {
        db_set_err(d, "postgresql: too many parameters");
        return DB_ERR;
    }
    db_rc rc = exec_once(d, p, sql, params, n, res);
    /* The connection was found dead (a server restart, an idle timeout): a query
     * that writes nothing is safe to run again on a new connection. A write is
     * not (it may have committed before the connection dropped): it fails, and
     * the next call reconnects. */
    if (rc == DB_ERR && PQstatus(p->c) == CONNECTION_BAD && !db_in_transaction(d) && is_read_only(sql))
        rc = exec_once(d, p, sql, params, n, res);
    return rc;
}

static db_rc pg_script(db *d, void *conn, const char *sql)
{
    pgc *p = conn;
    if (ensure_connected(d, p) < 0)
        return DB_ERR;
    PGresult *r = PQexec(p->c, sql);
    ExecStatusType st = PQresultStatus(r);
    db_rc rc = DB_OK;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = result_error(d, p, r);
    PQclear(r);
    return rc;
}

static db_rc pg_begin(db *d, void *conn) { return pg_exec(d, conn, "BEGIN", NULL, 0, NULL); }
static db_rc pg_commit(db *d, void *conn) { return pg_exec(d, conn, "COMMIT", NULL, 0, NULL); }
static db_rc pg_rollback(db *d, void *conn) { return pg_exec(d, conn, "ROLLBACK", NULL, 0, NULL); }

const db_backend_ops db_pg_ops = {
    .kind = DB_PG,
    .name = "postgresql",
    .open = pg_open,
    .close = pg_close,
    .exec = pg_exec,
    .script = pg_script,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
};

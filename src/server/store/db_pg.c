/* db_pg — the PostgreSQL backend of db.h over libpq, as the table db_pg_ops
 * (db_backend.h). Owns its connection state (pgc: the PGconn and the statement
 * cache), freed by pg_close. Statements are prepared once per connection (named
 * "veil_N") and cached by their SQL text; parameters travel as text with their
 * types left for the server to infer from the SQL. A connection found broken
 * outside a transaction is reset once (the cache is dropped with it). Server
 * notices are discarded: the store never logs.
 *
 * Every exchange after the first connect is libpq's asynchronous one (the socket
 * non-blocking, waits in poll), so that a timeout (db_set_timeout) bounds each
 * wait: a server or a network that stops answering (a frozen proxy, a lost route)
 * costs the caller the timeout and its connection, never more. The first connect
 * keeps libpq's blocking call and its connect_timeout: it runs once, at start.
 */
#include "server/store/db_backend.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define PG_CONNECT_TIMEOUT "10" /* seconds; the URL's connect_timeout wins */
#define PG_MAX_PARAMS 32
#define SQLSTATE_QUERY_CANCELED "57014" /* statement_timeout fired on the server */

typedef struct pg_stmt {
    char *sql;
    char name[24];
} pg_stmt;

typedef struct pgc {
    PGconn *c;
    pg_stmt *cache;
    size_t n, cap;
    unsigned long next_id;
    long timeout_ms; /* db_set_timeout; 0: wait as long as it takes */
    bool dropped;    /* shut down after a timeout: made again by the next call */
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

/* ---- bounded waits ---- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline of one call (its reconnect, prepare and statement together), 0 for none. */
static int64_t deadline_of(const pgc *p)
{
    return p->timeout_ms > 0 ? mono_ms() + p->timeout_ms + DB_TIMEOUT_GRACE_MS : 0;
}

/* 1 when the socket is ready, 0 when the deadline passed first, -1 on an error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int ms = -1;
        if (deadline) {
            int64_t left = deadline - mono_ms();
            if (left <= 0)
                return 0;
            ms = left > INT_MAX ? INT_MAX : (int)left;
        }
        struct pollfd pfd = {.fd = fd, .events = events};
        int n = poll(&pfd, 1, ms);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* No answer in time: the connection is shut down now, so that the server (once it
 * hears of it) rolls back whatever it held for us, and the next call connects
 * again. The PGconn stays, with its parameters, for PQresetStart. */
static db_rc timed_out(db *d, pgc *p, const char *what)
{
    if (p->c && PQsocket(p->c) >= 0)
        shutdown(PQsocket(p->c), SHUT_RDWR);
    p->dropped = true;
    forget_cache(p);
    db_set_err(d, "postgresql: no answer within %ld ms (%s); the connection is dropped",
               p->timeout_ms + DB_TIMEOUT_GRACE_MS, what);
    db_mark_timed_out(d);
    return DB_ERR;
}

/* Sends what libpq holds, then collects the answer: the first error of a script,
 * else its last result. NULL without a result (the reason is PQerrorMessage), with
 * *late set when the deadline passed. */
static PGresult *await_result(pgc *p, int64_t deadline, bool *late)
{
    int fd = PQsocket(p->c);
    *late = false;
    for (;;) { /* libpq's rule for a non-blocking send: read while waiting to write */
        int f = PQflush(p->c);
        if (f == 0)
            break;
        int w = f < 0 ? -1 : wait_fd(fd, POLLIN | POLLOUT, deadline);
        *late = w == 0;
        if (w <= 0 || !PQconsumeInput(p->c))
            return NULL;
    }
    PGresult *keep = NULL;
    for (;;) {
        while (PQisBusy(p->c)) {
            int w = wait_fd(fd, POLLIN, deadline);
            *late = w == 0;
            if (w <= 0 || !PQconsumeInput(p->c)) {
                PQclear(keep);
                return NULL;
            }
        }
        PGresult *r = PQgetResult(p->c);
        if (!r)
            return keep;
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(r);
        } else {
            PQclear(keep);
            keep = r;
        }
    }
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
    if (state && strcmp(state, SQLSTATE_QUERY_CANCELED) == 0)
        db_mark_timed_out(d);
    return DB_ERR;
}

/* A statement list without parameters, its answer awaited until deadline. */
static db_rc run_script(db *d, pgc *p, const char *sql, int64_t deadline)
{
    if (!PQsendQuery(p->c, sql))
        return result_error(d, p, NULL);
    bool late;
    PGresult *r = await_result(p, deadline, &late);
    if (late)
        return timed_out(d, p, "script");
    ExecStatusType st = PQresultStatus(r);
    db_rc rc = r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? DB_OK : result_error(d, p, r);
    PQclear(r);
    return rc;
}

/* ---- connections ---- */

/* What every connection gets once it is up: the non-blocking socket our waits
 * need, silence, and the server's own statement_timeout. */
static db_rc session_setup(db *d, pgc *p, int64_t deadline)
{
    PQsetNoticeProcessor(p->c, quiet, NULL);
    if (PQsetnonblocking(p->c, 1) != 0) {
        db_set_err(d, "postgresql: cannot make the connection non-blocking");
        return DB_ERR;
    }
    if (p->timeout_ms <= 0)
        return DB_OK;
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %ld", p->timeout_ms);
    return run_script(d, p, sql, deadline);
}

static void *pg_open(db *d, const char *url)
{
    pgc *p = calloc(1, sizeof *p);
    if (!p) {
        db_set_err(d, "out of memory");
        return NULL;
    }
    /* the URL comes last, so its own settings override these defaults; the encoding
     * is a connection parameter so that a reset connection keeps it */
    const char *const kw[] = {"connect_timeout", "application_name", "client_encoding", "dbname", NULL};
    const char *const val[] = {PG_CONNECT_TIMEOUT, "veild", "UTF8", url, NULL};
    p->c = PQconnectdbParams(kw, val, 1);
    if (!p->c) {
        db_set_err(d, "out of memory");
        goto fail;
    }
    if (PQstatus(p->c) != CONNECTION_OK) {
        db_set_err(d, "postgresql: %s", PQerrorMessage(p->c));
        goto fail;
    }
    if (session_setup(d, p, 0) != DB_OK)
        goto fail;
    return p;
fail:
    pg_close(p);
    return NULL;
}

/* A new connection with the old one's parameters, each step within the deadline. */
static int reconnect(db *d, pgc *p, int64_t deadline)
{
    forget_cache(p);
    if (!PQresetStart(p->c)) {
        db_set_err(d, "postgresql: %s", PQerrorMessage(p->c));
        return -1;
    }
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED) {
            db_set_err(d, "postgresql: %s", PQerrorMessage(p->c));
            return -1;
        }
        int w = wait_fd(PQsocket(p->c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
        if (w == 0) {
            timed_out(d, p, "connect");
            return -1;
        }
        if (w < 0) {
            db_set_err(d, "postgresql: connect: %s", strerror(errno));
            return -1;
        }
        st = PQresetPoll(p->c);
    }
    p->dropped = false;
    return session_setup(d, p, deadline) == DB_OK ? 0 : -1;
}

static int ensure_connected(db *d, pgc *p, int64_t deadline)
{
    if (!p->dropped && PQstatus(p->c) == CONNECTION_OK)
        return 0;
    if (db_in_transaction(d)) {
        db_set_err(d, "postgresql: connection lost inside a transaction");
        return -1;
    }
    return reconnect(d, p, deadline);
}

/* ---- statements ---- */

static const char *prepare(db *d, pgc *p, const char *sql, int64_t deadline)
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
    if (!PQsendPrepare(p->c, e->name, sql, 0, NULL)) {
        result_error(d, p, NULL);
        return NULL;
    }
    bool late;
    PGresult *r = await_result(p, deadline, &late);
    if (late) {
        timed_out(d, p, "prepare");
        return NULL;
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        result_error(d, p, r);
        PQclear(r);
        return NULL;
    }
    PQclear(r);
    if (!(e->sql = strdup(sql))) {
        db_set_err(d, "out of memory");
        return NULL; /* the server keeps an unused statement until the connection ends */
    }
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

static db_rc exec_once(db *d, pgc *p, const char *sql, const db_param *params, size_t n, db_result *res,
                       int64_t deadline)
{
    if (ensure_connected(d, p, deadline) < 0)
        return DB_ERR;
    const char *name = prepare(d, p, sql, deadline);
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
    if (!PQsendQueryPrepared(p->c, name, (int)n, n ? values : NULL, NULL, NULL, 0))
        return result_error(d, p, NULL);
    bool late;
    PGresult *r = await_result(p, deadline, &late);
    if (late)
        return timed_out(d, p, "statement");
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
    int64_t deadline = deadline_of(p);
    db_rc rc = exec_once(d, p, sql, params, n, res, deadline);
    /* The connection was found dead (a server restart, an idle timeout): a query
     * that writes nothing is safe to run again on a new connection. A write is
     * not (it may have committed before the connection dropped): it fails, and
     * the next call reconnects. A timeout is no dead connection: it stands. */
    if (rc == DB_ERR && !db_timed_out(d) && PQstatus(p->c) == CONNECTION_BAD && !db_in_transaction(d) &&
        is_read_only(sql))
        rc = exec_once(d, p, sql, params, n, res, deadline);
    return rc;
}

static db_rc pg_script(db *d, void *conn, const char *sql)
{
    pgc *p = conn;
    int64_t deadline = deadline_of(p);
    if (ensure_connected(d, p, deadline) < 0)
        return DB_ERR;
    return run_script(d, p, sql, deadline);
}

static db_rc pg_begin(db *d, void *conn) { return pg_exec(d, conn, "BEGIN", NULL, 0, NULL); }
static db_rc pg_commit(db *d, void *conn) { return pg_exec(d, conn, "COMMIT", NULL, 0, NULL); }
static db_rc pg_rollback(db *d, void *conn) { return pg_exec(d, conn, "ROLLBACK", NULL, 0, NULL); }

static db_rc pg_set_timeout(db *d, void *conn, long ms)
{
    pgc *p = conn;
    p->timeout_ms = ms;
    if (p->dropped || PQstatus(p->c) != CONNECTION_OK)
        return DB_OK; /* the next connection gets it */
    char sql[64];
    snprintf(sql, sizeof sql, "SET statement_timeout = %ld", ms);
    return run_script(d, p, sql, deadline_of(p));
}

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
    .set_timeout = pg_set_timeout,
};

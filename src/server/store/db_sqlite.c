/* db_sqlite — the SQLite 3 backend of db.h, as the table db_sqlite_ops
 * (db_backend.h): a file in WAL mode, foreign keys on, a busy timeout, statements
 * prepared once and cached by their SQL text. Owns its connection state (sq: the
 * handle and the statement cache), freed by sq_close.
 * Placeholders $1..$n are bound by name: SQLite numbers parameters by first
 * appearance, so "$2 ... $1" would otherwise bind the wrong values.
 */
#include "server/store/db_backend.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SQLITE_BUSY_TIMEOUT_MS 5000 /* wait this long for another writer before SQLITE_BUSY (db_set_timeout) */

typedef struct cached_stmt {
    char *sql;
    sqlite3_stmt *st;
} cached_stmt;

typedef struct sq {
    sqlite3 *h;
    cached_stmt *cache;
    size_t n, cap;
} sq;

static db_rc map_rc(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return DB_UNIQUE;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return DB_FOREIGN_KEY;
    default:
        return DB_ERR;
    }
}

/* The directory part of path must exist: we never create it, we say so. */
static int check_parent_dir(db *d, const char *path)
{
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0)
        return 0;
    const char *slash = strrchr(path, '/');
    if (!slash)
        return 0; /* the current directory */
    size_t len = slash == path ? 1 : (size_t)(slash - path);
    char dir[PATH_MAX];
    if (len >= sizeof dir) {
        db_set_err(d, "sqlite: path too long");
        return -1;
    }
    memcpy(dir, path, len);
    dir[len] = '\0';
    struct stat st;
    if (stat(dir, &st) < 0) {
        db_set_err(d, "sqlite: directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        db_set_err(d, "sqlite: %s is not a directory", dir);
        return -1;
    }
    return 0;
}

static db_rc sq_exec(db *d, void *conn, const char *sql, const db_param *p, size_t n, db_result *res);

/* Runs a pragma and returns its first value in out (may be empty). */
static int pragma(db *d, sq *q, const char *sql, char *out, size_t outlen)
{
    db_result r = DB_RESULT_INIT;
    if (sq_exec(d, q, sql, NULL, 0, &r) != DB_OK)
        return -1;
    const char *v = db_cell(&r, 0, 0);
    if (out)
        snprintf(out, outlen, "%s", v ? v : "");
    db_result_free(&r);
    return 0;
}

static void sq_close(void *conn)
{
    sq *q = conn;
    for (size_t i = 0; i < q->n; i++) {
        sqlite3_finalize(q->cache[i].st);
        free(q->cache[i].sql);
    }
    free(q->cache);
    if (q->h)
        sqlite3_close(q->h);
    free(q);
}

/* WAL, foreign keys on (checked: a build without them is refused), synchronous=NORMAL. */
static int configure(db *d, sq *q, const char *path)
{
    char v[32];
    if (pragma(d, q, "PRAGMA journal_mode=WAL", v, sizeof v) < 0)
        return -1;
    if (strcmp(v, "wal") != 0 && strcmp(path, ":memory:") != 0) {
        db_set_err(d, "sqlite: cannot enable WAL (journal_mode=%s)", v);
        return -1;
    }
    if (pragma(d, q, "PRAGMA foreign_keys=ON", NULL, 0) < 0 || pragma(d, q, "PRAGMA foreign_keys", v, sizeof v) < 0)
        return -1;
    if (strcmp(v, "1") != 0) {
        db_set_err(d, "sqlite: foreign keys are not supported by this build");
        return -1;
    }
    /* WAL + NORMAL: durable across application crashes, one fsync per checkpoint */
    return pragma(d, q, "PRAGMA synchronous=NORMAL", NULL, 0);
}

static void *sq_open(db *d, const char *path)
{
    if (!*path) {
        db_set_err(d, "sqlite: empty path");
        return NULL;
    }
    if (check_parent_dir(d, path) < 0)
        return NULL;
    sq *q = calloc(1, sizeof *q);
    if (!q) {
        db_set_err(d, "out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &q->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        db_set_err(d, "sqlite: cannot open %s: %s", path, q->h ? sqlite3_errmsg(q->h) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(q->h, 1);
    sqlite3_busy_timeout(q->h, SQLITE_BUSY_TIMEOUT_MS);
    if (configure(d, q, path) < 0)
        goto fail;
    return q;
fail:
    sq_close(q);
    return NULL;
}

static sqlite3_stmt *prepare(db *d, sq *q, const char *sql)
{
    for (size_t i = 0; i < q->n; i++)
        if (strcmp(q->cache[i].sql, sql) == 0)
            return q->cache[i].st;
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        cached_stmt *nc = realloc(q->cache, cap * sizeof *nc);
        if (!nc) {
            db_set_err(d, "out of memory");
            return NULL;
        }
        q->cache = nc;
        q->cap = cap;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(q->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK || !st) {
        db_set_err(d, "sqlite: %s", rc != SQLITE_OK ? sqlite3_errmsg(q->h) : "empty statement");
        sqlite3_finalize(st);
        return NULL;
    }
    while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';'))
        tail++;
    char *copy = strdup(sql);
    if ((tail && *tail) || !copy) {
        db_set_err(d, "%s", copy ? "sqlite: one statement per call" : "out of memory");
        sqlite3_finalize(st);
        free(copy);
        return NULL;
    }
    q->cache[q->n].sql = copy;
    q->cache[q->n].st = st;
    q->n++;
    return st;
}

static int bind_all(db *d, sqlite3_stmt *st, const db_param *p, size_t n)
{
    int np = sqlite3_bind_parameter_count(st);
    for (int i = 1; i <= np; i++) {
        const char *name = sqlite3_bind_parameter_name(st, i);
        char *end = NULL;
        long k = name && name[0] == '$' ? strtol(name + 1, &end, 10) : 0;
        if (!end || *end || k < 1 || (size_t)k > n) {
            db_set_err(d, "sqlite: placeholder %s has no parameter", name ? name : "?");
            return -1;
        }
        const db_param *v = &p[k - 1];
        int rc;
        switch (v->type) {
        case DBP_TEXT:
            rc = sqlite3_bind_text(st, i, v->text, -1, SQLITE_STATIC); /* lives through the call */
            break;
        case DBP_INT:
        case DBP_BOOL:
            rc = sqlite3_bind_int64(st, i, v->i);
            break;
        default:
            rc = sqlite3_bind_null(st, i);
            break;
        }
        if (rc != SQLITE_OK) {
            db_set_err(d, "sqlite: bind %s: %s", name, sqlite3_errstr(rc));
            return -1;
        }
    }
    return 0;
}

static db_rc sq_exec(db *d, void *conn, const char *sql, const db_param *p, size_t n, db_result *res)
{
    sq *q = conn;
    sqlite3_stmt *st = prepare(d, q, sql);
    if (!st)
        return DB_ERR;
    db_rc out = DB_OK;
    if (bind_all(d, st, p, n) < 0) {
        out = DB_ERR;
        goto done;
    }
    if (res)
        res->ncols = (size_t)sqlite3_column_count(st);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!res)
            continue;
        char **row = db_result_add_row(res);
        if (!row) {
            db_set_err(d, "out of memory");
            out = DB_ERR;
            goto done;
        }
        for (size_t c = 0; c < res->ncols; c++) {
            if (sqlite3_column_type(st, (int)c) == SQLITE_NULL)
                continue;
            const unsigned char *t = sqlite3_column_text(st, (int)c);
            size_t len = (size_t)sqlite3_column_bytes(st, (int)c);
            row[c] = malloc(len + 1);
            if (!t || !row[c]) {
                db_set_err(d, "out of memory");
                out = DB_ERR;
                goto done;
            }
            memcpy(row[c], t, len);
            row[c][len] = '\0';
        }
    }
    if (rc != SQLITE_DONE) {
        db_set_err(d, "sqlite: %s", sqlite3_errmsg(q->h));
        out = map_rc(sqlite3_extended_errcode(q->h));
        if ((rc & 0xff) == SQLITE_BUSY) /* another writer held the lock past the busy timeout */
            db_mark_timed_out(d);
        goto done;
    }
    if (res)
        res->changes = sqlite3_changes64(q->h);
done:
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (out != DB_OK && res)
        db_result_free(res);
    return out;
}

static db_rc sq_script(db *d, void *conn, const char *sql)
{
    sq *q = conn;
    char *msg = NULL;
    int rc = sqlite3_exec(q->h, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        db_set_err(d, "sqlite: %s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        if ((rc & 0xff) == SQLITE_BUSY)
            db_mark_timed_out(d);
        return map_rc(sqlite3_extended_errcode(q->h));
    }
    return DB_OK;
}

/* A local file has no network to wait on: the only wait is for another writer. */
static db_rc sq_set_timeout(db *d, void *conn, long ms)
{
    (void)d;
    sq *q = conn;
    sqlite3_busy_timeout(q->h, ms > 0 ? (int)(ms > INT_MAX ? INT_MAX : ms) : SQLITE_BUSY_TIMEOUT_MS);
    return DB_OK;
}

/* IMMEDIATE: the write lock is taken now, so a writer never fails to upgrade it later */
static db_rc sq_begin(db *d, void *conn) { return sq_exec(d, conn, "BEGIN IMMEDIATE", NULL, 0, NULL); }

static db_rc sq_commit(db *d, void *conn) { return sq_exec(d, conn, "COMMIT", NULL, 0, NULL); }

static db_rc sq_rollback(db *d, void *conn) { return sq_exec(d, conn, "ROLLBACK", NULL, 0, NULL); }

const db_backend_ops db_sqlite_ops = {
    .kind = DB_SQLITE,
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .exec = sq_exec,
    .script = sq_script,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .set_timeout = sq_set_timeout,
};

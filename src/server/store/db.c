/* db — the db handle (db.h): picks a backend from the URL and calls it only
 * through its function table (db_backend.h); owns the URL's password copies
 * (wiped on close), the error text (redacted), the transaction flag, and the
 * result helpers. Knows no backend's internals.
 */
#include "server/store/db_backend.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

struct db {
    const db_backend_ops *ops;
    void *conn; /* the backend's connection state */
    bool in_tx;
    bool timed_out; /* the last failure: the database did not answer in time */
    char err[512];
    char *secret[2]; /* the URL's password, as written and percent-decoded: redacted from err */
};

/* ---- results ---- */

void db_result_free(db_result *r)
{
    if (!r)
        return;
    for (size_t i = 0; r->cells && i < r->nrows * r->ncols; i++)
        free(r->cells[i]);
    free(r->cells);
    memset(r, 0, sizeof *r);
}

char **db_result_add_row(db_result *r)
{
    static char *no_cells[1]; /* a row without columns holds nothing */
    if (r->ncols == 0) {
        r->nrows++;
        return no_cells;
    }
    size_t need = (r->nrows + 1) * r->ncols;
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16 * r->ncols;
        while (cap < need)
            cap *= 2;
        char **nc = realloc(r->cells, cap * sizeof *nc);
        if (!nc)
            return NULL;
        r->cells = nc;
        r->cap = cap;
    }
    char **row = r->cells + r->nrows * r->ncols;
    for (size_t i = 0; i < r->ncols; i++)
        row[i] = NULL;
    r->nrows++;
    return row;
}

const char *db_cell(const db_result *r, size_t row, size_t col)
{
    if (!r || row >= r->nrows || col >= r->ncols || !r->cells)
        return NULL;
    return r->cells[row * r->ncols + col];
}

char *db_take(db_result *r, size_t row, size_t col)
{
    if (!r || row >= r->nrows || col >= r->ncols || !r->cells)
        return NULL;
    char *s = r->cells[row * r->ncols + col];
    r->cells[row * r->ncols + col] = NULL;
    return s;
}

bool db_cell_bool(const db_result *r, size_t row, size_t col)
{
    const char *v = db_cell(r, row, col);
    if (!v)
        return false;
    return strcasecmp(v, "t") == 0 || strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0;
}

int64_t db_cell_int(const db_result *r, size_t row, size_t col, int64_t dflt)
{
    const char *v = db_cell(r, row, col);
    if (!v || !*v)
        return dflt;
    char *end;
    long long x = strtoll(v, &end, 10);
    return *end ? dflt : (int64_t)x;
}

/* ---- errors ---- */

static void redact(char *s, size_t cap, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    if (sl == 0)
        return;
    char out[sizeof ((db *)0)->err];
    size_t o = 0;
    for (const char *p = s; *p && o + 1 < sizeof out;) {
        if (strncmp(p, secret, sl) == 0) {
            for (const char *m = "***"; *m && o + 1 < sizeof out; m++)
                out[o++] = *m;
            p += sl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    snprintf(s, cap, "%s", out);
}

void db_set_err(db *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    /* one line: libpq's messages end with a newline and may span several */
    size_t o = 0;
    for (size_t i = 0; d->err[i]; i++) {
        bool space = d->err[i] == '\n' || d->err[i] == '\r' || d->err[i] == '\t' || d->err[i] == ' ';
        if (!space)
            d->err[o++] = d->err[i];
        else if (o > 0 && d->err[o - 1] != ' ')
            d->err[o++] = ' ';
    }
    while (o > 0 && d->err[o - 1] == ' ')
        o--;
    d->err[o] = '\0';
    for (int i = 0; i < 2; i++)
        redact(d->err, sizeof d->err, d->secret[i]);
}

/* ---- URLs ---- */

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static char *dup_n(const char *s, size_t n)
{
    char *r = malloc(n + 1);
    if (r) {
        memcpy(r, s, n);
        r[n] = '\0';
    }
    return r;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static char *percent_decode(const char *s)
{
    char *r = malloc(strlen(s) + 1), *o = r;
    if (!r)
        return NULL;
    for (const char *p = s; *p; p++) {
        int hi, lo;
        if (*p == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
            *o++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return r;
}

/* The password of a postgresql:// URL: the userinfo's, else a password= query
 * parameter. NULL when there is none. */
static char *url_password(const char *url)
{
    const char *a = strstr(url, "://");
    if (!a)
        return NULL;
    a += 3;
    size_t alen = strcspn(a, "/?#");
    const char *at = NULL;
    for (size_t i = 0; i < alen; i++)
        if (a[i] == '@')
            at = a + i;
    if (at) {
        const char *colon = memchr(a, ':', (size_t)(at - a));
        if (colon && at > colon + 1)
            return dup_n(colon + 1, (size_t)(at - colon - 1));
    }
    const char *q = strchr(url, '?');
    while (q) {
        q++;
        if (has_prefix(q, "password=")) {
            q += strlen("password=");
            return dup_n(q, strcspn(q, "&#"));
        }
        q = strchr(q, '&');
    }
    return NULL;
}

static void wipe_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

db *db_open(const char *url, char *err, size_t errlen)
{
    if (!url || !*url) {
        snprintf(err, errlen, "database URL is empty");
        return NULL;
    }
    db *d = calloc(1, sizeof *d);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const char *target = url;
    if (has_prefix(url, "postgresql://") || has_prefix(url, "postgres://")) {
        d->ops = &db_pg_ops;
        d->secret[0] = url_password(url);
        d->secret[1] = d->secret[0] ? percent_decode(d->secret[0]) : NULL;
    } else {
        if (has_prefix(url, "sqlite:")) {
            target = url + strlen("sqlite:");
            if (has_prefix(target, "///"))
                target += 2; /* sqlite:///abs/path, the SQLAlchemy spelling */
        } else if (strstr(url, "://")) {
            snprintf(err, errlen, "unsupported database URL scheme (use sqlite:PATH or postgresql://)");
            free(d);
            return NULL;
        }
        d->ops = &db_sqlite_ops;
    }
    d->conn = d->ops->open(d, target);
    if (!d->conn) {
        snprintf(err, errlen, "%s", d->err);
        db_close(d);
        return NULL;
    }
    return d;
}

void db_close(db *d)
{
    if (!d)
        return;
    if (d->conn)
        d->ops->close(d->conn);
    wipe_free(d->secret[0]);
    wipe_free(d->secret[1]);
    free(d);
}

db_kind db_backend(const db *d) { return d->ops->kind; }
const char *db_backend_name(const db *d) { return d->ops->name; }
const char *db_errmsg(const db *d) { return d->err; }
bool db_in_transaction(const db *d) { return d->in_tx; }
bool db_timed_out(const db *d) { return d->timed_out; }
void db_mark_timed_out(db *d) { d->timed_out = true; }

db_rc db_set_timeout(db *d, long ms)
{
    d->timed_out = false;
    if (ms < 0) {
        db_set_err(d, "a timeout cannot be negative");
        return DB_ERR;
    }
    return d->ops->set_timeout(d, d->conn, ms);
}

db_rc db_exec(db *d, const char *sql, const db_param *params, size_t n, db_result *res)
{
    if (res)
        memset(res, 0, sizeof *res);
    d->timed_out = false;
    return d->ops->exec(d, d->conn, sql, params, n, res);
}

db_rc db_script(db *d, const char *sql)
{
    d->timed_out = false;
    return d->ops->script(d, d->conn, sql);
}

db_rc db_begin(db *d)
{
    d->timed_out = false;
    if (d->in_tx) {
        db_set_err(d, "a transaction is already open");
        return DB_ERR;
    }
    db_rc rc = d->ops->begin(d, d->conn);
    if (rc == DB_OK)
        d->in_tx = true;
    return rc;
}

db_rc db_commit(db *d)
{
    d->timed_out = false;
    if (!d->in_tx) {
        db_set_err(d, "no transaction is open");
        return DB_ERR;
    }
    db_rc rc = d->ops->commit(d, d->conn);
    if (rc != DB_OK) {
        /* SQLite keeps the transaction after a failed COMMIT (on PostgreSQL it is
         * already over and this ROLLBACK is a no-op); the COMMIT's error stays */
        char saved[sizeof d->err];
        bool saved_timeout = d->timed_out;
        memcpy(saved, d->err, sizeof saved);
        d->ops->rollback(d, d->conn);
        memcpy(d->err, saved, sizeof saved);
        d->timed_out = saved_timeout;
    }
    d->in_tx = false;
    return rc;
}

db_rc db_rollback(db *d)
{
    d->timed_out = false;
    if (!d->in_tx) {
        db_set_err(d, "no transaction is open");
        return DB_ERR;
    }
    db_rc rc = d->ops->rollback(d, d->conn);
    d->in_tx = false;
    return rc;
}

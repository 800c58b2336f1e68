/* server — veild's server object: its subsystems in order, and back. See server.h. */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/addr.h"
#include "common/log.h"
#include "server/server_int.h"

#define LISTEN_BACKLOG 512

static int mkdir_p(const char *dir)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, 0700) < 0 && errno != EEXIST ? -1 : 0;
}

/* Every route file's table in one array; the debug routes only when asked for. */
static route *all_routes(bool debug, size_t *n)
{
    const struct {
        const route *r;
        size_t n;
    } T[] = {
        {ROUTES_APP, N_ROUTES_APP}, {ROUTES_CHAT, N_ROUTES_CHAT}, {ROUTES_STREAM, N_ROUTES_STREAM},
        {ROUTES_USERS, N_ROUTES_USERS},
        {ROUTES_ORGS, N_ROUTES_ORGS}, {ROUTES_CONTEXT, N_ROUTES_CONTEXT},
        {ROUTES_WEBHOOKS, N_ROUTES_WEBHOOKS}, {ROUTES_DEBUG, N_ROUTES_DEBUG},
        {ROUTES_STATIC, N_ROUTES_STATIC},
    };
    size_t total = 0, k = 0;
    for (size_t i = 0; i < sizeof T / sizeof T[0]; i++)
        total += T[i].n;
    route *all = calloc(total, sizeof *all);
    for (size_t i = 0; all && i < sizeof T / sizeof T[0]; i++) {
        if (T[i].r == ROUTES_DEBUG && !debug)
            continue; /* off by default (defect §10.18) */
        memcpy(all + k, T[i].r, T[i].n * sizeof *all);
        k += T[i].n;
    }
    *n = k;
    return all;
}

/* A DB worker's own connection, with the statement timeout. */
static void *open_worker_store(void *ud, unsigned i, char *err, size_t errlen)
{
    server *s = ud;
    char why[512];
    store *db = store_connect(s->cfg.database_url, why, sizeof why);
    if (!db) {
        snprintf(err, errlen, "database: worker %u: %s", i, why);
        return NULL;
    }
    if (store_set_timeout(db, s->cfg.db_timeout_ms) != STORE_OK) {
        snprintf(err, errlen, "database: worker %u: %s", i, store_last_error(db));
        store_close(db);
        return NULL;
    }
    return db;
}

static void close_worker_store(void *ud, void *conn)
{
    (void)ud;
    store_close(conn);
}

/* The store: a sqlite database gets its data directory first; the migrations run
 * here, once, before the loop (on their own connection); then the DB workers
 * connect, one store each. */
static int open_store(server *s, char *err, size_t errlen)
{
    const server_config *cfg = &s->cfg;
    bool sqlite = strncmp(cfg->database_url, "sqlite:", 7) == 0;
    if (sqlite && strstr(cfg->database_url, ":memory:")) {
        snprintf(err, errlen, "database: an in-memory SQLite database cannot be shared by the DB workers");
        return -1;
    }
    if (sqlite && mkdir_p(cfg->data_dir) < 0) {
        snprintf(err, errlen, "cannot create %s: %s", cfg->data_dir, strerror(errno));
        return -1;
    }
    char why[512];
    store *migrated = store_open(cfg->database_url, why, sizeof why);
    if (!migrated) {
        snprintf(err, errlen, "database: %s", why);
        return -1;
    }
    s->db_backend = store_backend(migrated); /* a static name */
    store_close(migrated);
    dbp_config pc = {.workers = (unsigned)cfg->db_workers, .queue_max = (unsigned)cfg->db_queue_max,
                     .open = open_worker_store, .close = close_worker_store, .ud = s};
    return (s->pool = dbp_new(s->base, &pc, err, errlen)) ? 0 : -1;
}

/* The HTTP engine and the limits its requests are held to: per user, and for fresh
 * attestations per user and in total. */
static int open_http(server *s, char *err, size_t errlen)
{
    const server_config *cfg = &s->cfg;
    httpd_limits lim = {
        .max_head = (size_t)cfg->max_head, .max_body = (size_t)cfg->max_body,
        .idle_ms = (unsigned)cfg->idle_seconds * 1000u, .head_ms = (unsigned)cfg->head_seconds * 1000u,
        .body_ms = (unsigned)cfg->body_seconds * 1000u, .max_conns = (unsigned)cfg->max_connections,
        .max_output = (size_t)cfg->sse_max_buffer, .stall_ms = (unsigned)cfg->sse_stall_seconds * 1000u,
    };
    user_limits_config ulc = {
        .max_streams = (unsigned)cfg->user_max_streams, .rate = (double)cfg->user_rate,
        .burst = (double)cfg->user_burst, .max_users = (size_t)cfg->user_table_max,
    };
    /* a fresh attestation is an NSM signature: bounded per user and in total */
    user_limits_config auc = {.max_streams = 1, .rate = (double)cfg->attest_user_rate, .burst = 5,
                              .max_users = (size_t)cfg->user_table_max};
    user_limits_config aac = {.max_streams = 1, .rate = (double)cfg->attest_rate,
                              .burst = 2.0 * (double)cfg->attest_rate, .max_users = 1};
    s->http = httpd_new(s->base, &lim, api_dispatch, s);
    s->limits = ul_new(&ulc);
    s->attest_user = ul_new(&auc);
    s->attest_all = ul_new(&aac);
    if (!s->http || !s->limits || !s->attest_user || !s->attest_all) {
        snprintf(err, errlen, "cannot create the HTTP server");
        return -1;
    }
    return 0;
}

server *server_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen)
{
    char why[512];
    server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->cfg = *cfg;
    LIST_INIT(&s->held_list);
    LIST_INIT(&s->health_waiters);
    if (open_store(s, err, errlen) < 0)
        goto fail;
    if (!(s->auth = auth_new(base, &s->cfg, why, sizeof why))) {
        snprintf(err, errlen, "auth: %s", why);
        goto fail;
    }
    if (!(s->ec = ec_new(base, &s->cfg, why, sizeof why))) {
        snprintf(err, errlen, "enclave: %s", why);
        goto fail;
    }
    if (!(s->rf = refresher_new(base, &s->cfg, s->ec, why, sizeof why))) {
        snprintf(err, errlen, "credentials: %s", why);
        goto fail;
    }
    if (!(s->web = web_assets_load(&s->cfg, why, sizeof why))) {
        snprintf(err, errlen, "%s", why);
        goto fail;
    }
    if (!(s->routes = all_routes(s->cfg.debug_routes, &s->n_routes))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (open_http(s, err, errlen) < 0)
        goto fail;
    return s;
fail:
    server_free(s);
    return NULL;
}

void server_free(server *s)
{
    if (!s)
        return;
    /* requests first: those in a DB job get their answer as the pool stops (the
     * jobs still waiting are cancelled: 503), then the others' close handlers
     * cancel their enclave operations */
    s->closing = true;
    dbp_stop(s->pool);
    server_close_held(s);
    ul_free(s->attest_all);
    ul_free(s->attest_user);
    ul_free(s->limits);
    httpd_free(s->http);
    free((void *)s->routes);
    web_assets_free(s->web);
    refresher_free(s->rf);
    ec_free(s->ec);
    auth_free(s->auth);
    dbp_free(s->pool);
    free(s);
}

int server_listen(server *s, char *bound, size_t n, char *err, size_t errlen)
{
    veil_addr a;
    if (addr_parse(s->cfg.listen, &a, err, errlen) < 0)
        return -1;
    int fd = addr_listen(&a, LISTEN_BACKLOG, err, errlen);
    if (fd < 0)
        return -1;
    if (a.kind == ADDR_TCP && a.port == 0)
        a.port = (uint16_t)addr_local_port(fd);
    if (httpd_accept_on(s->http, fd, err, errlen) < 0)
        return -1;
    addr_format(&a, bound, n);
    return 0;
}

void server_start(server *s)
{
    ec_refresh_key(s->ec);
    refresher_start(s->rf);
}

void server_log_listening(server *s, const char *bound)
{
    log_info(NULL, "event=listening addr=%s mode=%s enclave=%s db=%s auth=%s max_connections=%u", bound,
             ec_mode_name(s->ec), ec_addr(s->ec), s->db_backend,
             s->cfg.clerk_jwks_file[0] ? "jwks-file" : "jwks-url", httpd_max_connections(s->http));
    if (web_assets_count(s->web))
        log_info(NULL, "event=web_page dir=%s files=%zu measurements=%s root=%s", web_assets_dir(s->web),
                 web_assets_count(s->web), s->cfg.web_measurements[0] ? "configured" : "none",
                 s->cfg.web_root[0] ? "custom" : "aws");
    else
        log_warn(NULL, "event=web_page_off detail=\"%s\"",
                 strcmp(s->cfg.web_dir, "none") == 0 ? "VEIL_WEB_DIR=none"
                                                     : "no web/ directory next to veild: set VEIL_WEB_DIR");
}

void server_stop_accepting(server *s)
{
    httpd_stop_accepting(s->http);
}

unsigned server_held(const server *s)
{
    return s->held;
}

static void on_probe_result(void *ud, const ec_health_result *h)
{
    server *s = ud;
    /* a key change was noticed inside the client (restart callback); an enclave
     * that lost its credentials gets them again now */
    if (h->ok && !h->has_credentials)
        refresher_kick(s->rf);
}

void server_probe_enclave(server *s)
{
    if (!ec_public_key(s->ec))
        ec_refresh_key(s->ec);
    ec_health(s->ec, on_probe_result, s);
}

/* On a DB worker: the sweep logs its own outcome (the logger writes one line per call). */
static void sweep_work(void *conn, void *arg)
{
    const long *ttl = arg;
    size_t n = 0;
    if (store_sessions_delete_empty(conn, *ttl, 1000, &n) != STORE_OK)
        log_warn(NULL, "event=store_error op=sessions_delete_empty detail=\"%s\"", store_last_error(conn));
    else if (n)
        log_info(NULL, "event=empty_sessions_deleted count=%zu", n);
}

static void sweep_done(void *arg, dbp_status st)
{
    (void)st;
    free(arg);
}

void server_sweep_empty_sessions(server *s)
{
    long *ttl = malloc(sizeof *ttl);
    if (!ttl)
        return;
    *ttl = s->cfg.empty_session_ttl;
    dbp_rc rc = dbp_submit(s->pool, sweep_work, sweep_done, ttl, true);
    if (rc != DBP_OK) { /* the next tick tries again */
        log_warn(NULL, "event=sweep_skipped reason=%s", rc == DBP_FULL ? "db_queue_full" : "db_unavailable");
        free(ttl);
    }
}

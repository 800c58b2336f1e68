/* routes_app — the app-level routes (spec §4.1): welcome, health, protected.
 *
 * GET /health pings the database on a DB worker, one ping at a time for every
 * caller, and waits for it at most VEIL_HEALTH_DB_WAIT_MS: a database that does not
 * answer by then is "not responding" (503) rather than a health check that hangs
 * with it. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>

#include "server/http/routes_util.h"

struct health_wait {
    api_req *r;
    struct event *timer;
    LIST_ENTRY(health_wait) link;
};

typedef struct ping_job {
    server *srv;
    store_rc rc;
} ping_job;

static void app_root(api_req *r)
{
    char msg[128];
    snprintf(msg, sizeof msg, "Welcome to %s API", r->srv->cfg.project_name);
    ru_reply(r, 200, json_pack("{s:s}", "message", msg));
}

static void health_reply(api_req *r, int status, const char *database)
{
    ru_reply(r, status, json_pack("{s:s, s:s}", "status", status == 200 ? "healthy" : "unhealthy", "database",
                                  database));
}

/* Takes w out of the waiters; the request is the caller's to answer. */
static api_req *health_unwait(struct health_wait *w)
{
    api_req *r = w->r;
    LIST_REMOVE(w, link);
    event_free(w->timer);
    free(w);
    r->on_close = NULL;
    r->state = NULL;
    return r;
}

static void health_close(api_req *r)
{
    health_unwait(r->state);
}

static void health_late(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    api_req *r = health_unwait(arg);
    log_warn(r->rid, "event=health_db_slow wait_ms=%ld", r->srv->cfg.health_db_wait_ms);
    health_reply(r, 503, "not responding");
}

/* On a DB worker. */
static void ping_work(void *conn, void *arg)
{
    ping_job *j = arg;
    j->rc = store_ping(conn);
    if (j->rc != STORE_OK)
        log_warn(NULL, "event=health_db_down detail=\"%s\"", store_last_error(conn));
}

/* Every waiter gets the ping's answer. */
static void ping_done(void *arg, dbp_status st)
{
    ping_job *j = arg;
    server *s = j->srv;
    bool ok = st == DBP_RAN && j->rc == STORE_OK;
    free(j);
    s->ping_in_flight = false;
    while (!LIST_EMPTY(&s->health_waiters))
        health_reply(health_unwait(LIST_FIRST(&s->health_waiters)), ok ? 200 : 503,
                     ok ? "connected" : "disconnected");
}

static void app_health(api_req *r)
{
    server *s = r->srv;
    struct health_wait *w = calloc(1, sizeof *w);
    if (!w || !(w->timer = evtimer_new(s->base, health_late, w))) {
        free(w);
        api_reply_detail(r, 503, "Service busy, please retry");
        return;
    }
    if (!s->ping_in_flight) {
        ping_job *j = calloc(1, sizeof *j);
        if (j)
            j->srv = s;
        dbp_rc rc = j ? dbp_submit(s->pool, ping_work, ping_done, j, true) : DBP_NOMEM;
        if (rc != DBP_OK) {
            free(j);
            event_free(w->timer);
            free(w);
            health_reply(r, 503, rc == DBP_FULL ? "busy" : "unavailable");
            return;
        }
        s->ping_in_flight = true;
    }
    w->r = r;
    LIST_INSERT_HEAD(&s->health_waiters, w, link);
    api_req_hold(r, health_close, w);
    struct timeval tv = {s->cfg.health_db_wait_ms / 1000, (s->cfg.health_db_wait_ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
}

static void app_protected(api_req *r)
{
    ru_reply(r, 200, json_pack("{s:s, s:s}", "message", "You are authenticated", "user_id", r->auth.user_id));
}

const route ROUTES_APP[] = {
    {EVHTTP_REQ_GET, "/", app_root, 0},
    {EVHTTP_REQ_GET, "/health", app_health, 0},
    {EVHTTP_REQ_GET, "/protected", app_protected, ROUTE_AUTH},
};
const size_t N_ROUTES_APP = sizeof ROUTES_APP / sizeof ROUTES_APP[0];

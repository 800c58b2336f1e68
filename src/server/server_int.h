/* server_int — the server object as the route files of this module see it.
 * Only the .c files of src/server include this; other modules use api.h. */
#ifndef VEIL_SERVER_INT_H
#define VEIL_SERVER_INT_H

#include "server/http/api.h"
#include "server/auth.h"
#include "server/db_pool.h"
#include "server/link/enclave_client.h"
#include "server/link/refresher.h"
#include "server/server.h"
#include "server/store/store.h"
#include "server/http/user_limits.h"
#include "server/http/web_assets.h"

struct health_wait;

struct server {
    struct event_base *base;
    httpd *http;
    server_config cfg;
    db_pool *pool;          /* the store, on DB workers: the loop never opens a statement */
    const char *db_backend; /* "sqlite" | "postgresql" */
    bool closing;           /* server_free has begun: jobs that end now start nothing new */
    enclave_client *ec;
    refresher *rf;
    auth_state *auth;
    const route *routes;
    size_t n_routes;
    user_limits *limits; /* per-user streams and request rate */
    user_limits *attest_user, *attest_all; /* fresh attestations: per user, and "*" for all */
    web_assets *web;     /* the web page's files and config.json (routes_static) */
    unsigned held;       /* requests waiting on the loop (streams, auth fetches, DB jobs) */
    LIST_HEAD(, api_req) held_list;
    /* GET /health (routes_app.c): one database ping at a time, and who waits for it */
    bool ping_in_flight;
    LIST_HEAD(, health_wait) health_waiters;
};

/* route tables, one per file */
extern const route ROUTES_APP[];
extern const size_t N_ROUTES_APP;
extern const route ROUTES_CHAT[];
extern const size_t N_ROUTES_CHAT;
extern const route ROUTES_STREAM[];
extern const size_t N_ROUTES_STREAM;
extern const route ROUTES_USERS[];
extern const size_t N_ROUTES_USERS;
extern const route ROUTES_ORGS[];
extern const size_t N_ROUTES_ORGS;
extern const route ROUTES_CONTEXT[];
extern const size_t N_ROUTES_CONTEXT;
extern const route ROUTES_WEBHOOKS[];
extern const size_t N_ROUTES_WEBHOOKS;
extern const route ROUTES_DEBUG[];
extern const size_t N_ROUTES_DEBUG;
extern const route ROUTES_STATIC[];
extern const size_t N_ROUTES_STATIC;

/* The HTTP engine's handler (http.c): routes one request; arg is the server. */
void api_dispatch(httpd_req *hr, void *arg);

/* store failure in a route: logs the store's reason, answers 500 */
void api_store_error(api_req *r, const char *what);

#endif

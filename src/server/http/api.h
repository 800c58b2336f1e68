/* api — veild's HTTP layer: one request's context, routing, and the reply helpers
 * every route uses (the server object that holds them is server.h).
 *
 * Replies follow the original's conventions (spec §4.0): errors are
 * {"detail": "..."}; body validation failures are 422 with a list of
 * {type, loc, msg, input}. A route either replies before it returns or takes
 * ownership of the request (api_req_hold) and replies later from the loop; a
 * client that goes away while a route waits triggers the route's on_close.
 * Raw upstream or enclave error text never reaches a reply (defect §10.23).
 *
 * The store is never used on the loop. A route marked ROUTE_DB runs whole on a
 * DB worker (db_pool.h) with r->db set to that worker's store; a route that mixes
 * loop and store work hands the store part to api_db_job. Off the loop the reply
 * functions record the reply in the request, and the loop sends it when the job
 * ends: only the loop's thread touches a connection (checked where it sends).
 * A job reads the request's own fields, the headers and body copied off the
 * connection, and the read-only settings; nothing else of the server's.
 */
#ifndef VEIL_SERVER_API_H
#define VEIL_SERVER_API_H

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include "auth/jwt.h"
#include "common/buf.h"
#include "common/log.h"
#include "server/http/httpd.h"
#include "server/settings.h"

struct event_base;
struct store;
typedef struct server server;
typedef struct api_req api_req;

typedef void (*route_fn)(api_req *r);

#define ROUTE_AUTH 1u     /* requires a valid bearer token */
#define ROUTE_NO_BODY 2u  /* ignore the body */
#define ROUTE_DB 4u       /* runs on a DB worker (api_db_job without a then): r->db is its store */

/* Methods are named with libevent's enum values (its HTTP server is not used:
 * httpd.h is ours); 0 stands for any other method. */
typedef struct route {
    enum evhttp_cmd_type method;
    const char *pattern; /* "/api/v1/chat/sessions/{}/messages": {} matches one segment */
    route_fn fn;
    unsigned flags;
} route;

struct api_req {
    server *srv;
    httpd_req *hr; /* NULL once the connection is gone */
    enum evhttp_cmd_type method;
    char path[1024];
    struct evkeyvalq query;
    char params[4][256]; /* the {} segments, URL-decoded */
    int n_params;
    jwt_auth auth; /* who is calling: from the verified Clerk token (ROUTE_AUTH) */
    char rid[LOG_RID_LEN + 1];
    struct timespec t0;
    const route *rt;
    /* asynchronous routes */
    bool held, closed, replied, sse_started;
    LIST_ENTRY(api_req) held_link; /* the server's list of held requests */
    void (*on_close)(api_req *r);  /* the client went away while held */
    void (*on_drain)(api_req *r);  /* a congested SSE reply drained (api_sse_congested) */
    void *state;                   /* the route's own state */
    int status;                    /* for the access log */
    vbuf headers;                  /* extra response headers, "Name: value\r\n" lines */
    /* store work (api_db_job): while in_job, the loop leaves the request to the
     * worker, except for the connection's fields (hr, closed), which it alone uses */
    struct store *db;              /* the worker's store while the work runs, else NULL */
    bool in_job;                   /* set and cleared on the loop only */
    void (*job_work)(api_req *r);
    void (*job_then)(api_req *r);
    struct {
        bool set;
        int status;
        char *body;
        size_t len;
        const char *ctype;
    } rec;                         /* the reply recorded off the loop */
    bool in_copied;                /* in_head and in_body hold the request's input */
    vbuf in_head;                  /* the headers, "name\0value\0" pairs */
    vbuf in_body;                  /* the body, moved off the connection */
};

/* ---- replies (each sends exactly one response; the request is then done) ---- */

void api_reply_json(api_req *r, int status, json_t *body); /* steals body */
void api_reply_detail(api_req *r, int status, const char *detail);
void api_reply_empty(api_req *r, int status); /* 204 */
/* Any bytes with their Content-Type (the web page's files); body is borrowed. */
void api_reply_bytes(api_req *r, int status, const char *ctype, const void *body, size_t len);
/* Adds a response header to the reply this request will send. */
void api_add_header(api_req *r, const char *name, const char *value);
/* 422 with one pydantic-style error: type e.g. "missing", loc e.g. {"body","model"}. */
void api_reply_422(api_req *r, const char *type, const char *const *loc, size_t nloc, const char *msg,
                   const json_t *input);

/* ---- request helpers ---- */

/* The parsed JSON body, or NULL (then a 422 has been sent, the route must return). */
json_t *api_body_json(api_req *r);
/* The raw body bytes (not NUL-terminated) and their length. */
const char *api_body_raw(api_req *r, size_t *len);
const char *api_header(api_req *r, const char *name);
const char *api_query(api_req *r, const char *name);

/* ---- store work (never on the loop) ---- */

#define API_DB_ADMIT 1u /* admitted past VEIL_DB_QUEUE_MAX: a started stream's final write */

/* Runs work(r) on a DB worker with r->db set to that worker's store; the replies
 * it makes are recorded, and the loop sends them when the job ends. The request is
 * held meanwhile (a client that goes away only marks r->closed: on_close waits).
 * Then, on the loop, then(r) runs if given, exactly once: after the work, or at
 * once when the job could not be queued (a 503 with Retry-After is then pending,
 * unless an SSE answer has started). In then, a route with r->closed or a pending
 * reply (api_reply_pending) only frees its state; otherwise it goes on (replies,
 * streams, or starts another job). Without then, a work that records no reply is a
 * bug (500). The caller must not touch r after this returns. */
void api_db_job(api_req *r, void (*work)(api_req *r), void (*then)(api_req *r), unsigned flags);
/* A reply was recorded off the loop and is sent after then returns. */
bool api_reply_pending(const api_req *r);

/* ---- asynchronous routes ---- */

/* The route keeps the request and replies later; on_close runs if the client
 * disconnects first (then the route must drop the request without replying). */
void api_req_hold(api_req *r, void (*on_close)(api_req *r), void *state);

/* SSE: starts a 200 text/event-stream reply with the original's headers. */
void api_sse_start(api_req *r);
/* One `data: <json>\n\n` event; json is borrowed. */
void api_sse_event(api_req *r, const char *json, size_t len);
void api_sse_comment(api_req *r, const char *text); /* ": text\n\n" keep-alive */
void api_sse_end(api_req *r);
/* Backpressure: the client reads slower than events come. A route that stops
 * producing while congested is told by on_drain when it may go on; a connection
 * that stays congested too long is closed (on_close runs). */
bool api_sse_congested(const api_req *r);
void api_sse_on_drain(api_req *r, void (*on_drain)(api_req *r));

#endif

/* http — veild's API layer on the httpd engine: routing, CORS, bearer auth, the
 * per-user request rate, replies, SSE, and the store work of routes on the DB
 * workers (api_db_job: the reply recorded there, sent from the loop).
 * Stays whole: one request's life (dispatch, the auth wait, the hold, a DB job,
 * the reply, the close) is one state machine over api_req, and its steps share the
 * static helpers that record, send, log and free a request, which no route may call. */
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include "server/db_pool.h"
#include "server/server_int.h"

#define ECHO_MAX 512       /* bytes of an invalid value a 422 echoes back */
#define DB_RETRY_AFTER "1" /* seconds: a full queue or a slow database passes quickly, or not at all */
#define ECHO_STRING_MAX 128
#define LIT(s) s, sizeof(s) - 1

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000L + (now.tv_nsec - t0->tv_nsec) / 1000000L;
}

static const struct {
    const char *name;
    enum evhttp_cmd_type m;
} METHODS[] = {
    {"GET", EVHTTP_REQ_GET},   {"POST", EVHTTP_REQ_POST},       {"PUT", EVHTTP_REQ_PUT},
    {"DELETE", EVHTTP_REQ_DELETE}, {"OPTIONS", EVHTTP_REQ_OPTIONS}, {"HEAD", EVHTTP_REQ_HEAD},
    {"PATCH", EVHTTP_REQ_PATCH},
};

/* Method names are case-sensitive (RFC 9110 §9.1): "get" is no GET. */
static enum evhttp_cmd_type method_of(const char *name)
{
    for (size_t i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++)
        if (strcmp(name, METHODS[i].name) == 0)
            return METHODS[i].m;
    return 0;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    for (size_t i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++)
        if (METHODS[i].m == m)
            return METHODS[i].name;
    return "OTHER";
}

static void hold_del(api_req *r)
{
    if (!r->held)
        return;
    r->held = false;
    r->srv->held--;
    LIST_REMOVE(r, held_link);
}

static void req_free(api_req *r)
{
    hold_del(r);
    evhttp_clear_headers(&r->query);
    vbuf_free(&r->headers);
    vbuf_free_secure(&r->in_head); /* the bearer token */
    vbuf_free_secure(&r->in_body);
    free(r->rec.body);
    free(r);
}

/* Only the loop's thread touches a connection: a worker that got here would race
 * the loop on memory that is not its own, so this stops the process instead. */
static void on_loop_only(const api_req *r, const char *what)
{
    if (r->srv->pool && !dbp_on_loop(r->srv->pool)) {
        log_error(r->rid, "event=bug detail=\"%s off the event loop\"", what);
        abort();
    }
}

static void access_log(api_req *r)
{
    log_info(r->rid, "event=http method=%s path=%s status=%d ms=%ld", method_name(r->method), r->path,
             r->status, ms_since(&r->t0));
}

/* The connection went away while a route held the request: the route drops its
 * state (on_close), then the request is freed. httpd frees its own half. */
static void on_conn_close(httpd_req *hr, void *arg)
{
    (void)hr;
    api_req *r = arg;
    r->closed = true;
    r->hr = NULL;
    if (r->in_job)
        return; /* a worker has the request: the job's end finishes it (job_end) */
    if (!r->replied)
        r->status = 499;
    access_log(r);
    if (r->on_close)
        r->on_close(r);
    req_free(r);
}

static void on_conn_drain(httpd_req *hr, void *arg)
{
    (void)hr;
    api_req *r = arg;
    if (r->on_drain)
        r->on_drain(r);
}

static void finish(api_req *r)
{
    r->replied = true;
    r->hr = NULL; /* httpd freed it with the response */
    access_log(r);
    if (r->held)
        req_free(r);
    /* else the dispatcher frees it when the route returns */
}

void api_add_header(api_req *r, const char *name, const char *value)
{
    vbuf_printf(&r->headers, "%s: %s\r\n", name, value);
}

/* CORS: an origin listed exactly is reflected with credentials; `*` lets any
 * origin read the answer, but never with credentials (a wildcard that reflected
 * the origin with Allow-Credentials would let every site act as the user). */
static void add_cors(api_req *r)
{
    const char *origin = api_header(r, "Origin");
    if (!origin)
        return;
    const char *list = r->srv->cfg.cors_origins;
    size_t ol = strlen(origin);
    bool star = false;
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' '))
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n == ol && strncmp(p, origin, n) == 0) {
            api_add_header(r, "Access-Control-Allow-Origin", origin);
            api_add_header(r, "Access-Control-Allow-Credentials", "true");
            api_add_header(r, "Vary", "Origin");
            return;
        }
        if (n == 1 && *p == '*')
            star = true;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (star)
        api_add_header(r, "Access-Control-Allow-Origin", "*");
}

/* Off the loop: the first reply is kept for the loop to send (job_end). */
static void record(api_req *r, int status, const char *body, size_t len, const char *ctype)
{
    if (r->rec.set)
        return;
    r->rec.set = true;
    r->rec.status = status;
    r->rec.ctype = ctype;
    r->rec.len = 0;
    if (len && (r->rec.body = malloc(len))) {
        memcpy(r->rec.body, body, len);
        r->rec.len = len;
    } else if (len) {
        r->rec.status = 503; /* no memory for the answer: the client retries */
        r->rec.ctype = NULL;
    }
}

static void send_reply(api_req *r, int status, const char *body, size_t len, const char *ctype)
{
    if (r->in_job) {
        record(r, status, body, len, ctype);
        return;
    }
    on_loop_only(r, "a reply");
    if (r->rec.set)
        return; /* the recorded reply is this request's answer (job_end sends it) */
    r->status = status;
    if (r->closed || r->replied || !r->hr)
        return;
    if (ctype)
        api_add_header(r, "Content-Type", ctype);
    api_add_header(r, "X-Request-Id", r->rid);
    add_cors(r);
    httpd_respond(r->hr, status, vbuf_cstr(&r->headers), body, len);
    finish(r);
}

void api_reply_json(api_req *r, int status, json_t *body)
{
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    send_reply(r, status, s ? s : "", s ? strlen(s) : 0, "application/json");
    free(s);
}

void api_reply_detail(api_req *r, int status, const char *detail)
{
    api_reply_json(r, status, json_pack("{s:s}", "detail", detail));
}

void api_reply_empty(api_req *r, int status)
{
    send_reply(r, status, "", 0, NULL);
}

void api_reply_bytes(api_req *r, int status, const char *ctype, const void *body, size_t len)
{
    send_reply(r, status, body, len, ctype);
}

/* What a 422 echoes of the invalid value: the value itself when small; a long
 * string cut to its first ECHO_STRING_MAX bytes; anything else large as null. A
 * 16 MiB body must not come back as a 16 MiB answer (F0). */
static json_t *echo_of(const json_t *input)
{
    if (!input)
        return json_null();
    if (json_is_string(input) && json_string_length(input) > ECHO_STRING_MAX) {
        const char *s = json_string_value(input);
        size_t n = ECHO_STRING_MAX;
        while (n && ((unsigned char)s[n] & 0xC0) == 0x80) /* not inside a UTF-8 sequence */
            n--;
        char buf[ECHO_STRING_MAX + 4];
        memcpy(buf, s, n);
        memcpy(buf + n, "...", 4);
        return json_string(buf);
    }
    char *dump = json_dumps(input, JSON_COMPACT | JSON_ENCODE_ANY);
    size_t n = dump ? strlen(dump) : 0;
    free(dump);
    return dump && n <= ECHO_MAX ? json_deep_copy(input) : json_null();
}

void api_reply_422(api_req *r, const char *type, const char *const *loc, size_t nloc, const char *msg,
                   const json_t *input)
{
    json_t *l = json_array();
    for (size_t i = 0; i < nloc; i++) {
        /* list indexes are integers in pydantic's loc */
        bool digits = loc[i][0] != '\0' && strspn(loc[i], "0123456789") == strlen(loc[i]);
        json_array_append_new(l, digits ? json_integer(atol(loc[i])) : json_string(loc[i]));
    }
    json_t *e = json_pack("{s:s, s:o, s:s}", "type", type, "loc", l, "msg", msg);
    json_object_set_new(e, "input", echo_of(input));
    api_reply_json(r, 422, json_pack("{s:[o]}", "detail", e));
}

void api_store_error(api_req *r, const char *what)
{
    const char *why = r->db ? store_last_error(r->db) : "no store on this thread";
    if (r->db && store_timed_out(r->db)) { /* a slow or unreachable database: worth a retry */
        log_warn(r->rid, "event=store_timeout op=%s detail=\"%s\"", what, why);
        api_add_header(r, "Retry-After", DB_RETRY_AFTER);
        api_reply_detail(r, 503, "The database did not answer in time, please retry");
        return;
    }
    log_error(r->rid, "event=store_error op=%s detail=\"%s\"", what, why);
    api_reply_detail(r, 500, "Database operation failed");
}

const char *api_body_raw(api_req *r, size_t *len)
{
    if (r->in_copied) {
        *len = r->in_body.len;
        return r->in_body.len ? (const char *)r->in_body.data : "";
    }
    if (!r->hr) {
        *len = 0;
        return "";
    }
    return (const char *)httpd_body(r->hr, len);
}

json_t *api_body_json(api_req *r)
{
    size_t len;
    const char *raw = api_body_raw(r, &len);
    json_error_t jerr;
    json_t *j = json_loadb(raw, len, 0, &jerr);
    if (!j) {
        static const char *const loc[] = {"body"};
        api_reply_422(r, "json_invalid", loc, 1, "JSON decode error", NULL);
        return NULL;
    }
    return j;
}

const char *api_header(api_req *r, const char *name)
{
    if (!r->in_copied)
        return r->hr ? httpd_header(r->hr, name) : NULL;
    const char *p = (const char *)r->in_head.data, *end = p + r->in_head.len;
    while (p && p < end) {
        const char *value = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0)
            return value;
        p = value + strlen(value) + 1;
    }
    return NULL;
}

/* The headers and the body, off the connection, for a worker to read (and for
 * the request to keep if the connection goes away meanwhile). */
static int copy_input(api_req *r)
{
    if (r->in_copied || !r->hr)
        return 0;
    const char *name, *value;
    size_t nl, vl;
    static const char nul = '\0';
    for (size_t i = 0; httpd_header_at(r->hr, i, &name, &nl, &value, &vl); i++)
        if (vbuf_append_secure(&r->in_head, name, nl) < 0 || vbuf_append_secure(&r->in_head, &nul, 1) < 0 ||
            vbuf_append_secure(&r->in_head, value, vl) < 0 || vbuf_append_secure(&r->in_head, &nul, 1) < 0)
            return -1;
    httpd_take_body(r->hr, &r->in_body);
    r->in_copied = true;
    return 0;
}

const char *api_query(api_req *r, const char *name)
{
    return evhttp_find_header(&r->query, name);
}

void api_req_hold(api_req *r, void (*on_close)(api_req *r), void *state)
{
    on_loop_only(r, "a hold");
    if (!r->held) {
        r->held = true;
        r->srv->held++;
        LIST_INSERT_HEAD(&r->srv->held_list, r, held_link);
        httpd_on_close(r->hr, on_conn_close, r);
    }
    r->on_close = on_close;
    r->state = state;
}

void api_sse_start(api_req *r)
{
    on_loop_only(r, "an SSE start");
    if (!r->hr)
        return;
    api_add_header(r, "Content-Type", "text/event-stream");
    api_add_header(r, "Cache-Control", "no-cache");
    api_add_header(r, "Connection", "keep-alive");
    api_add_header(r, "X-Accel-Buffering", "no");
    api_add_header(r, "X-Request-Id", r->rid);
    add_cors(r);
    r->status = 200;
    r->sse_started = true;
    httpd_on_drain(r->hr, on_conn_drain, r);
    httpd_stream_start(r->hr, 200, vbuf_cstr(&r->headers));
}

static void sse_write(api_req *r, const char *prefix, const char *text, size_t len)
{
    on_loop_only(r, "an SSE event");
    if (r->closed || r->replied || !r->hr)
        return;
    vbuf b = VBUF_INIT;
    if (vbuf_append_str(&b, prefix) == 0 && vbuf_append(&b, text, len) == 0 && vbuf_append(&b, "\n\n", 2) == 0)
        httpd_stream_write(r->hr, b.data, b.len);
    vbuf_free(&b);
}

void api_sse_event(api_req *r, const char *json, size_t len)
{
    sse_write(r, "data: ", json, len);
}

void api_sse_comment(api_req *r, const char *text)
{
    sse_write(r, ": ", text, strlen(text));
}

void api_sse_end(api_req *r)
{
    on_loop_only(r, "an SSE end");
    if (r->closed || r->replied || !r->hr)
        return;
    httpd_stream_end(r->hr);
    finish(r);
}

bool api_sse_congested(const api_req *r)
{
    return r->hr && httpd_congested(r->hr);
}

void api_sse_on_drain(api_req *r, void (*on_drain)(api_req *r))
{
    r->on_drain = on_drain;
}

/* ---- store work on the DB workers ---- */

bool api_reply_pending(const api_req *r) { return r->rec.set; }

static void record_detail(api_req *r, int status, const char *detail)
{
    json_t *j = json_pack("{s:s}", "detail", detail);
    char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    record(r, status, s ? s : "", s ? strlen(s) : 0, "application/json");
    free(s);
}

static void send_recorded(api_req *r)
{
    int status = r->rec.status;
    char *body = r->rec.body;
    size_t len = r->rec.len;
    const char *ctype = r->rec.ctype;
    memset(&r->rec, 0, sizeof r->rec);
    send_reply(r, status, body ? body : "", len, ctype); /* finishes (and frees) the held request */
    free(body);
}

/* On the loop, once the job is over (or was never queued): then, and the reply. */
static void job_end(api_req *r)
{
    void (*then)(api_req *) = r->job_then;
    r->job_work = r->job_then = NULL;
    if (r->closed) { /* the client went away meanwhile: the route frees its state */
        if (then)
            then(r);
        if (!r->replied)
            r->status = 499;
        access_log(r);
        req_free(r);
        return;
    }
    if (r->srv->closing && !r->rec.set && !r->sse_started) /* no new work at shutdown */
        record_detail(r, 503, "Service restarting, please retry");
    if (then) {
        bool pending = r->rec.set;
        then(r);
        if (!pending)
            return; /* the route went on with the request (it may be answered and freed) */
    } else if (!r->rec.set) {
        log_error(r->rid, "event=route_bug path=%s detail=\"no reply\"", r->path);
        record_detail(r, 500, "Internal server error");
    }
    send_recorded(r);
}

/* On a worker. */
static void job_run(void *conn, void *arg)
{
    api_req *r = arg;
    r->db = conn;
    log_debug(r->rid, "event=db_job_start path=%s", r->path);
    r->job_work(r);
    if (store_in_transaction(r->db)) { /* the worker's next job must not run inside it */
        log_error(r->rid, "event=route_bug path=%s detail=\"a transaction left open\"", r->path);
        store_rollback(r->db);
    }
    r->db = NULL;
}

static void job_done(void *arg, dbp_status st)
{
    api_req *r = arg;
    r->in_job = false;
    if (st == DBP_CANCELLED && !r->sse_started)
        record_detail(r, 503, "Service restarting, please retry");
    job_end(r);
}

void api_db_job(api_req *r, void (*work)(api_req *r), void (*then)(api_req *r), unsigned flags)
{
    on_loop_only(r, "a job's start");
    r->job_work = work;
    r->job_then = then;
    if (!r->held)
        api_req_hold(r, r->on_close, r->state);
    dbp_rc rc = copy_input(r) < 0 ? DBP_NOMEM : DBP_OK;
    if (rc == DBP_OK) {
        r->in_job = true; /* before the worker can see the request */
        rc = dbp_submit(r->srv->pool, job_run, job_done, r, !(flags & API_DB_ADMIT));
        if (rc == DBP_OK) {
            log_debug(r->rid, "event=db_job_queued path=%s", r->path);
            return;
        }
        r->in_job = false;
    }
    if (!r->sse_started) {
        api_add_header(r, "Retry-After", DB_RETRY_AFTER);
        if (rc == DBP_FULL) {
            log_warn(r->rid, "event=db_queue_full path=%s queued=%u limit=%ld", r->path,
                     dbp_queued(r->srv->pool), r->srv->cfg.db_queue_max);
            record_detail(r, 503, "Too many requests are waiting for the database, please retry");
        } else {
            record_detail(r, 503, rc == DBP_STOPPED ? "Service restarting, please retry" : "Service busy, please retry");
        }
    }
    job_end(r);
}

/* ---- routing ---- */

/* Matches path against pattern; {} captures one non-empty segment, URL-decoded. */
static bool match(const char *pattern, const char *path, api_req *r)
{
    r->n_params = 0;
    while (*pattern && *path) {
        if (pattern[0] == '{' && pattern[1] == '}') {
            size_t n = strcspn(path, "/");
            char seg[256];
            if (n == 0 || n >= sizeof seg || r->n_params >= 4)
                return false;
            memcpy(seg, path, n);
            seg[n] = '\0';
            char *dec = evhttp_uridecode(seg, 0, NULL);
            if (!dec)
                return false;
            snprintf(r->params[r->n_params++], sizeof r->params[0], "%s", dec);
            free(dec);
            pattern += 2;
            path += n;
            continue;
        }
        if (*pattern != *path)
            return false;
        pattern++;
        path++;
    }
    return *pattern == '\0' && *path == '\0';
}

static void run_route(api_req *r)
{
    if (r->rt->flags & ROUTE_DB) {
        api_db_job(r, r->rt->fn, NULL, 0);
        return;
    }
    r->rt->fn(r);
    if (!r->replied && !r->held) {
        log_error(r->rid, "event=route_bug path=%s detail=\"no reply\"", r->path);
        api_reply_detail(r, 500, "Internal server error");
    }
    if (!r->held)
        req_free(r);
}

/* One request of a signed-in user: within that user's rate, or 429. */
static bool within_rate(api_req *r)
{
    unsigned wait = ul_take_request(r->srv->limits, r->auth.user_id);
    if (wait == 0)
        return true;
    char secs[16];
    snprintf(secs, sizeof secs, "%u", wait);
    api_add_header(r, "Retry-After", secs);
    log_info(r->rid, "event=rate_limited retry_after=%u", wait);
    api_reply_detail(r, 429, "Too many requests, please slow down");
    return false;
}

static void on_auth(void *ud, int status, const char *detail, const jwt_auth *who)
{
    api_req *r = ud;
    bool was_held = r->held;
    if (status != 0) {
        api_reply_detail(r, status, detail);
        if (!was_held)
            req_free(r);
        return;
    }
    r->auth = *who;
    if (was_held) {
        /* we held the request only for the key fetch: the route starts fresh */
        hold_del(r);
        httpd_on_close(r->hr, NULL, NULL);
        r->on_close = NULL;
    }
    if (!within_rate(r)) {
        req_free(r);
        return;
    }
    run_route(r);
}

static void on_auth_close(api_req *r)
{
    auth_wait_cancel(r->state);
}

/* A route answers its method, and a GET route HEAD too (httpd sends no body). */
static bool answers(const route *rt, enum evhttp_cmd_type m)
{
    return rt->method == m || (m == EVHTTP_REQ_HEAD && rt->method == EVHTTP_REQ_GET);
}

/* 405 with the methods the path does answer, or 404. */
static void no_route(api_req *r, const char *q)
{
    server *s = r->srv;
    vbuf allow = VBUF_INIT;
    for (size_t i = 0; i < s->n_routes; i++) {
        if (!match(s->routes[i].pattern, r->path, r))
            continue;
        vbuf_printf(&allow, "%s%s", allow.len ? ", " : "", method_name(s->routes[i].method));
        if (s->routes[i].method == EVHTTP_REQ_GET)
            vbuf_printf(&allow, ", HEAD");
    }
    if (allow.len) {
        api_add_header(r, "Allow", vbuf_cstr(&allow));
        vbuf_free(&allow);
        api_reply_detail(r, 405, "Method Not Allowed");
        return;
    }
    /* FastAPI redirects the slash-less form of a route that ends in '/' */
    char alt[1030];
    snprintf(alt, sizeof alt, "%s/", r->path);
    for (size_t i = 0; i < s->n_routes; i++) {
        if (answers(&s->routes[i], r->method) && match(s->routes[i].pattern, alt, r)) {
            char loc[1100];
            snprintf(loc, sizeof loc, "%s%s%s", alt, q ? "?" : "", q ? q : "");
            api_add_header(r, "Location", loc);
            api_reply_empty(r, 307);
            return;
        }
    }
    api_reply_detail(r, 404, "Not Found");
}

void api_dispatch(httpd_req *hr, void *arg)
{
    server *s = arg;
    api_req *r = calloc(1, sizeof *r);
    if (!r) {
        httpd_respond(hr, 503, "Content-Type: application/json\r\n", LIT("{\"detail\":\"Service busy, please retry\"}"));
        return;
    }
    r->srv = s;
    r->hr = hr;
    r->method = method_of(httpd_method(hr));
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    log_new_rid(r->rid);
    TAILQ_INIT(&r->query);
    const char *q = httpd_query(hr);
    snprintf(r->path, sizeof r->path, "%s", httpd_path(hr));
    if (q && evhttp_parse_query_str(q, &r->query) < 0) {
        api_reply_detail(r, 400, "Invalid query string");
        req_free(r);
        return;
    }
    if (r->method == EVHTTP_REQ_OPTIONS) { /* CORS preflight must answer 2xx */
        api_add_header(r, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS");
        api_add_header(r, "Access-Control-Allow-Headers", "Content-Type, Authorization, X-Requested-With");
        api_add_header(r, "Access-Control-Max-Age", "600");
        api_reply_empty(r, 200);
        req_free(r);
        return;
    }
    const route *found = NULL;
    for (size_t i = 0; i < s->n_routes && !found; i++)
        if (answers(&s->routes[i], r->method) && match(s->routes[i].pattern, r->path, r))
            found = &s->routes[i];
    if (!found) {
        no_route(r, q);
        req_free(r);
        return;
    }
    match(found->pattern, r->path, r); /* re-capture the params of the chosen route */
    r->rt = found;
    if (!(found->flags & ROUTE_AUTH)) {
        run_route(r);
        return;
    }
    /* FastAPI HTTPBearer: missing -> 403, wrong scheme -> 403, bad token -> 401 */
    const char *authz = api_header(r, "Authorization");
    if (!authz) {
        api_reply_detail(r, 403, "Not authenticated");
        req_free(r);
        return;
    }
    if (strncasecmp(authz, "Bearer ", 7) != 0 || !authz[7]) {
        api_reply_detail(r, 403, "Invalid authentication credentials");
        req_free(r);
        return;
    }
    auth_wait *w = auth_verify(s->auth, authz + 7, on_auth, r);
    if (w)
        api_req_hold(r, on_auth_close, w);
}

/* ---- shutdown (server.h) ---- */

void server_close_held(server *s)
{
    while (!LIST_EMPTY(&s->held_list)) {
        api_req *r = LIST_FIRST(&s->held_list);
        if (r->in_job) { /* server_free stops the pool first: no job is left */
            log_error(r->rid, "event=bug detail=\"a request still in a job at shutdown\"");
            abort();
        }
        httpd_on_close(r->hr, NULL, NULL);
        if (r->on_close)
            r->on_close(r); /* the route drops its state: enclave ops are cancelled */
        r->on_close = NULL;
        if (r->sse_started) {
            r->status = 200;
            httpd_stream_end(r->hr);
        } else {
            r->status = 503;
            httpd_respond(r->hr, 503, "Content-Type: application/json\r\n",
                          LIT("{\"detail\":\"Service restarting, please retry\"}"));
        }
        r->hr = NULL;
        r->replied = true;
        access_log(r);
        req_free(r);
    }
}

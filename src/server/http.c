/* http — the evhttp server: routing, CORS, bearer auth, replies, SSE. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/addr.h"
#include "server/server_int.h"

#define HTTP_TIMEOUT_SECONDS 600

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000L + (now.tv_nsec - t0->tv_nsec) / 1000000L;
}

static const char *method_name(enum evhttp_cmd_type m)
{
    switch (m) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return "OTHER";
    }
}

static void hold_del(api_req *r)
{
    if (!r->held)
        return;
    r->held = false;
    r->srv->held--;
    if (r->hprev)
        r->hprev->hnext = r->hnext;
    else
        r->srv->held_list = r->hnext;
    if (r->hnext)
        r->hnext->hprev = r->hprev;
    r->hprev = r->hnext = NULL;
}

static void req_free(api_req *r)
{
    hold_del(r);
    evhttp_clear_headers(&r->query);
    free(r);
}

static void access_log(api_req *r)
{
    log_info(r->rid, "event=http method=%s path=%s status=%d ms=%ld", method_name(r->method), r->path,
             r->status, ms_since(&r->t0));
}

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    (void)conn;
    api_req *r = arg;
    /* The client went away while we held the request. libevent detached the
     * unfinished request from the dying connection without freeing it (a reply
     * may still be in progress): it is ours to free. server_close_held keeps
     * shutdown, where libevent frees attached requests itself, off this path. */
    struct evhttp_request *ev = r->ev;
    r->closed = true;
    r->ev = NULL;
    r->status = 499;
    access_log(r);
    if (r->on_close)
        r->on_close(r);
    req_free(r);
    if (ev)
        evhttp_request_free(ev);
}

static void detach_close(api_req *r)
{
    if (r->held && r->ev)
        evhttp_connection_set_closecb(evhttp_request_get_connection(r->ev), NULL, NULL);
}

static void finish(api_req *r)
{
    r->replied = true;
    access_log(r);
    if (!r->held)
        return; /* the dispatcher frees it when the route returns */
    detach_close(r);
    req_free(r);
}

static void add_cors(api_req *r)
{
    const char *origin = evhttp_find_header(evhttp_request_get_input_headers(r->ev), "Origin");
    if (!origin)
        return;
    const char *list = r->srv->cfg.cors_origins;
    size_t ol = strlen(origin);
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        while (n && (*p == ' ')) p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if ((n == ol && strncmp(p, origin, n) == 0) || (n == 1 && *p == '*')) {
            struct evkeyvalq *h = evhttp_request_get_output_headers(r->ev);
            evhttp_add_header(h, "Access-Control-Allow-Origin", origin);
            evhttp_add_header(h, "Access-Control-Allow-Credentials", "true");
            evhttp_add_header(h, "Vary", "Origin");
            return;
        }
        if (!comma)
            break;
        p = comma + 1;
    }
}

static void send_buffer(api_req *r, int status, struct evbuffer *b, const char *ctype)
{
    r->status = status;
    if (r->closed || r->replied) {
        evbuffer_free(b);
        return;
    }
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->ev);
    if (ctype)
        evhttp_add_header(h, "Content-Type", ctype);
    evhttp_add_header(h, "X-Request-Id", r->rid);
    add_cors(r);
    evhttp_send_reply(r->ev, status, NULL, b);
    evbuffer_free(b);
    finish(r);
}

void api_reply_json(api_req *r, int status, json_t *body)
{
    struct evbuffer *b = evbuffer_new();
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (s) {
        evbuffer_add(b, s, strlen(s));
        free(s);
    }
    json_decref(body);
    send_buffer(r, status, b, "application/json");
}

void api_reply_detail(api_req *r, int status, const char *detail)
{
    api_reply_json(r, status, json_pack("{s:s}", "detail", detail));
}

void api_reply_empty(api_req *r, int status)
{
    send_buffer(r, status, evbuffer_new(), NULL);
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
    json_object_set_new(e, "input", input ? json_deep_copy(input) : json_null());
    api_reply_json(r, 422, json_pack("{s:[o]}", "detail", e));
}

void api_store_error(api_req *r, const char *what)
{
    log_error(r->rid, "event=store_error op=%s detail=\"%s\"", what, store_last_error(r->srv->db));
    api_reply_detail(r, 500, "Database operation failed");
}

const char *api_body_raw(api_req *r, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(r->ev);
    *len = evbuffer_get_length(in);
    return *len ? (const char *)evbuffer_pullup(in, -1) : "";
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
    return evhttp_find_header(evhttp_request_get_input_headers(r->ev), name);
}

const char *api_query(api_req *r, const char *name)
{
    return evhttp_find_header(&r->query, name);
}

void api_req_hold(api_req *r, void (*on_close)(api_req *r), void *state)
{
    if (!r->held) {
        r->held = true;
        r->srv->held++;
        r->hnext = r->srv->held_list;
        if (r->hnext)
            r->hnext->hprev = r;
        r->srv->held_list = r;
        evhttp_connection_set_closecb(evhttp_request_get_connection(r->ev), on_conn_close, r);
    }
    r->on_close = on_close;
    r->state = state;
}

void api_sse_start(api_req *r)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(r->ev);
    evhttp_add_header(h, "Content-Type", "text/event-stream");
    evhttp_add_header(h, "Cache-Control", "no-cache");
    evhttp_add_header(h, "Connection", "keep-alive");
    evhttp_add_header(h, "X-Accel-Buffering", "no");
    evhttp_add_header(h, "X-Request-Id", r->rid);
    add_cors(r);
    r->status = 200;
    r->sse_started = true;
    evhttp_send_reply_start(r->ev, 200, "OK");
}

void api_sse_event(api_req *r, const char *json, size_t len)
{
    if (r->closed)
        return;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, "data: ", 6);
    evbuffer_add(b, json, len);
    evbuffer_add(b, "\n\n", 2);
    evhttp_send_reply_chunk(r->ev, b);
    evbuffer_free(b);
}

void api_sse_comment(api_req *r, const char *text)
{
    if (r->closed)
        return;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, ": %s\n\n", text);
    evhttp_send_reply_chunk(r->ev, b);
    evbuffer_free(b);
}

void api_sse_end(api_req *r)
{
    if (r->closed || r->replied)
        return;
    detach_close(r);
    evhttp_send_reply_end(r->ev);
    finish(r);
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
    r->rt->fn(r);
    if (!r->replied && !r->held) {
        log_error(r->rid, "event=route_bug path=%s detail=\"no reply\"", r->path);
        api_reply_detail(r, 500, "Internal server error");
    }
    if (!r->held)
        req_free(r);
}

static void on_auth(void *ud, int status, const char *detail, const auth_ctx *ctx)
{
    api_req *r = ud;
    bool was_held = r->held;
    if (status != 0) {
        api_reply_detail(r, status, detail);
        if (!was_held)
            req_free(r);
        return;
    }
    r->auth = *ctx;
    if (was_held) {
        /* we held the request only for the key fetch: the route starts fresh */
        hold_del(r);
        evhttp_connection_set_closecb(evhttp_request_get_connection(r->ev), NULL, NULL);
        r->on_close = NULL;
    }
    run_route(r);
}

static void on_auth_close(api_req *r)
{
    auth_wait_cancel(r->state);
}

static void dispatch(struct evhttp_request *ev, void *arg)
{
    server *s = arg;
    api_req *r = calloc(1, sizeof *r);
    if (!r) {
        evhttp_send_error(ev, 503, "Service Unavailable");
        return;
    }
    r->srv = s;
    r->ev = ev;
    r->method = evhttp_request_get_command(ev);
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    log_new_rid(r->rid);
    TAILQ_INIT(&r->query);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    snprintf(r->path, sizeof r->path, "%s", path && *path ? path : "/");
    if (q && evhttp_parse_query_str(q, &r->query) < 0) {
        api_reply_detail(r, 400, "Invalid query string");
        req_free(r);
        return;
    }
    if (r->method == EVHTTP_REQ_OPTIONS) { /* CORS preflight must answer 2xx */
        struct evkeyvalq *h = evhttp_request_get_output_headers(ev);
        evhttp_add_header(h, "Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS");
        evhttp_add_header(h, "Access-Control-Allow-Headers", "Content-Type, Authorization, X-Requested-With");
        evhttp_add_header(h, "Access-Control-Max-Age", "600");
        api_reply_empty(r, 200);
        req_free(r);
        return;
    }
    const route *found = NULL;
    bool path_known = false;
    for (size_t i = 0; i < s->n_routes && !found; i++) {
        if (!match(s->routes[i].pattern, r->path, r))
            continue;
        path_known = true;
        if (s->routes[i].method == r->method)
            found = &s->routes[i];
    }
    if (!found) {
        /* FastAPI redirects the slash-less form of a route that ends in '/' */
        char alt[1030];
        snprintf(alt, sizeof alt, "%s/", r->path);
        for (size_t i = 0; i < s->n_routes && !path_known; i++) {
            if (match(s->routes[i].pattern, alt, r)) {
                const char *qs = q ? q : "";
                char loc[1100];
                snprintf(loc, sizeof loc, "%s%s%s", alt, *qs ? "?" : "", qs);
                evhttp_add_header(evhttp_request_get_output_headers(ev), "Location", loc);
                api_reply_empty(r, 307);
                req_free(r);
                return;
            }
        }
        api_reply_detail(r, path_known ? 405 : 404, path_known ? "Method Not Allowed" : "Not Found");
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

/* ---- server ---- */

server *server_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen)
{
    server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base = base;
    s->cfg = *cfg;
    s->http = evhttp_new(base);
    if (!s->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        free(s);
        return NULL;
    }
    evhttp_set_max_body_size(s->http, cfg->max_body);
    evhttp_set_timeout(s->http, HTTP_TIMEOUT_SECONDS);
    evhttp_set_allowed_methods(s->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(s->http, dispatch, s);
    return s;
}

void server_free(server *s)
{
    if (!s)
        return;
    if (s->http)
        evhttp_free(s->http);
    free((void *)s->routes);
    free(s);
}

void server_close_held(server *s)
{
    while (s->held_list) {
        api_req *r = s->held_list;
        detach_close(r);
        if (r->on_close)
            r->on_close(r); /* the route drops its state: enclave ops are cancelled */
        r->on_close = NULL;
        r->status = 503;
        if (r->sse_started) {
            evhttp_send_reply_end(r->ev);
        } else {
            struct evbuffer *b = evbuffer_new();
            evbuffer_add_printf(b, "{\"detail\":\"Service restarting, please retry\"}");
            evhttp_send_reply(r->ev, 503, NULL, b);
            evbuffer_free(b);
        }
        access_log(r);
        req_free(r);
    }
}

struct event_base *server_base(server *s) { return s->base; }
const server_config *server_cfg(server *s) { return &s->cfg; }

int server_listen(server *s, char *bound, size_t n, char *err, size_t errlen)
{
    veil_addr a;
    if (addr_parse(s->cfg.listen, &a, err, errlen) < 0)
        return -1;
    int fd = addr_listen(&a, 512, err, errlen);
    if (fd < 0)
        return -1;
    if (a.kind == ADDR_TCP && a.port == 0)
        a.port = (uint16_t)addr_local_port(fd);
    s->bound = evhttp_accept_socket_with_handle(s->http, fd);
    if (!s->bound) {
        snprintf(err, errlen, "cannot accept on %s", s->cfg.listen);
        return -1;
    }
    addr_format(&a, bound, n);
    return 0;
}

/* load_http — veil-load's HTTP/1.1 client connection (see load_http.h). A
 * connection walks IDLE -> HEAD -> BODY -> IDLE (keep-alive) or DEAD. */
#include "load_http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "net/http1.h"

typedef enum { LS_IDLE, LS_HEAD, LS_BODY, LS_DEAD } lh_state;

struct lh_conn {
    struct bufferevent *bev;
    lh_state st;
    const lh_handler *h;
    void *ud;
    http1_body body;
    uint64_t left;       /* Content-Length bytes still to come */
    http1_chunked dec;
    bool keep_alive;     /* of the response in progress */
    bool connected;
    bool got_bytes;
    int depth;           /* inside our own callbacks: a free is deferred */
    bool freed;
};

const char *lh_strerror(lh_err e)
{
    switch (e) {
    case LH_OK: return "ok";
    case LH_CONNECT: return "cannot connect";
    case LH_CLOSED: return "closed before the response ended";
    case LH_PROTOCOL: return "malformed HTTP response";
    case LH_STOPPED: return "stopped";
    }
    return "?";
}

static void really_free(lh_conn *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
}

void lh_conn_free(lh_conn *c)
{
    if (!c)
        return;
    if (c->depth > 0) { /* our caller still holds c: free on the way out */
        c->freed = true;
        c->st = LS_DEAD;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        return;
    }
    really_free(c);
}

bool lh_reusable(const lh_conn *c) { return c && c->st == LS_IDLE && c->keep_alive && !c->freed; }
bool lh_got_bytes(const lh_conn *c) { return c->got_bytes; }

/* The response ended or failed: the state first, then the callback (which may free c). */
static void finish(lh_conn *c, lh_err err, const char *detail)
{
    const lh_handler *h = c->h;
    void *ud = c->ud;
    c->h = NULL;
    if (err != LH_OK) {
        c->st = LS_DEAD;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    } else {
        c->st = c->keep_alive ? LS_IDLE : LS_DEAD;
        if (c->st == LS_DEAD)
            bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    }
    if (h && h->on_end)
        h->on_end(ud, err, detail);
}

static int body_cb(void *ctx, const uint8_t *data, size_t len)
{
    lh_conn *c = ctx;
    if (c->freed)
        return 1;
    return c->h->on_body ? c->h->on_body(c->ud, data, len) : 0;
}

/* Parses the head once complete. false when nothing more can be done now. */
static bool read_head(lh_conn *c, struct evbuffer *in)
{
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return false;
    size_t look = len < HTTP1_MAX_HEAD_SIZE ? len : HTTP1_MAX_HEAD_SIZE;
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)look);
    http1_response r;
    int n = http1_parse_response(p, look, &r);
    if (n == HTTP1_NEED_MORE && len < HTTP1_MAX_HEAD_SIZE)
        return false;
    if (n < 0) {
        finish(c, LH_PROTOCOL, http1_strerror(n == HTTP1_NEED_MORE ? HTTP1_ERR_HEAD_TOO_LARGE : n));
        return false;
    }
    if (r.status < 200) { /* 100 Continue and friends: the real head follows */
        evbuffer_drain(in, (size_t)n);
        return true;
    }
    size_t cl = 0;
    const char *conn = http1_header_get(&r.headers, "Connection", &cl);
    c->keep_alive = r.minor_version >= 1 && !(conn && cl == 5 && strncasecmp(conn, "close", 5) == 0);
    c->body = r.body;
    c->left = r.content_length;
    if (r.body == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&c->dec);
    if (r.body == HTTP1_BODY_UNTIL_CLOSE)
        c->keep_alive = false;
    int status = r.status;
    evbuffer_drain(in, (size_t)n);
    c->st = LS_BODY;
    if (c->h->on_head && c->h->on_head(c->ud, status) != 0) {
        finish(c, LH_STOPPED, NULL);
        return false;
    }
    if (c->freed)
        return false;
    if (c->body == HTTP1_BODY_NONE || (c->body == HTTP1_BODY_CONTENT_LENGTH && c->left == 0)) {
        finish(c, LH_OK, NULL);
        return false;
    }
    return true;
}

/* Hands over body bytes. false when nothing more can be done now. */
static bool read_body(lh_conn *c, struct evbuffer *in)
{
    size_t len;
    while (!c->freed && c->st == LS_BODY && (len = evbuffer_get_contiguous_space(in)) > 0) {
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)len);
        if (c->body == HTTP1_BODY_CHUNKED) {
            ptrdiff_t used = http1_chunked_feed(&c->dec, p, len, body_cb, c);
            if (c->freed)
                return false;
            if (used < 0) {
                finish(c, used == HTTP1_ERR_CALLBACK ? LH_STOPPED : LH_PROTOCOL, http1_strerror((int)used));
                return false;
            }
            evbuffer_drain(in, (size_t)used);
            if (http1_chunked_done(&c->dec)) {
                finish(c, LH_OK, NULL);
                return false;
            }
            continue;
        }
        size_t take = len;
        if (c->body == HTTP1_BODY_CONTENT_LENGTH && take > c->left)
            take = (size_t)c->left;
        int stop = body_cb(c, p, take);
        if (c->freed)
            return false;
        evbuffer_drain(in, take);
        if (stop) {
            finish(c, LH_STOPPED, NULL);
            return false;
        }
        if (c->body == HTTP1_BODY_CONTENT_LENGTH && (c->left -= take) == 0) {
            finish(c, LH_OK, NULL);
            return false;
        }
    }
    return false;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    lh_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    c->depth++;
    if (evbuffer_get_length(in) > 0)
        c->got_bytes = true;
    bool more = true;
    while (more && !c->freed) {
        if (c->st == LS_HEAD)
            more = read_head(c, in);
        else if (c->st == LS_BODY)
            more = read_body(c, in);
        else
            more = false;
    }
    /* bytes while idle: nothing was asked, so nothing can frame them */
    if (!c->freed && c->st == LS_IDLE && evbuffer_get_length(in) > 0) {
        c->st = LS_DEAD;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    }
    c->depth--;
    if (c->freed && c->depth == 0)
        really_free(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    lh_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        c->connected = true;
        return;
    }
    c->depth++;
    int e = EVUTIL_SOCKET_ERROR();
    if (c->st == LS_HEAD || c->st == LS_BODY) {
        if ((what & BEV_EVENT_EOF) && c->st == LS_BODY && c->body == HTTP1_BODY_UNTIL_CLOSE)
            finish(c, LH_OK, NULL);
        else if (!c->connected)
            finish(c, LH_CONNECT, strerror(e));
        else
            finish(c, LH_CLOSED, (what & BEV_EVENT_EOF) ? "end of file" : strerror(e));
    } else { /* the server closed an idle connection */
        c->st = LS_DEAD;
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    }
    c->depth--;
    if (c->freed && c->depth == 0)
        really_free(c);
}

lh_conn *lh_conn_new(struct event_base *base, const struct sockaddr *sa, socklen_t salen, char *err,
                     size_t errlen)
{
    lh_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (!c->bev) {
        snprintf(err, errlen, "out of memory");
        free(c);
        return NULL;
    }
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    errno = 0;
    if (bufferevent_socket_connect(c->bev, sa, (int)salen) < 0) {
        snprintf(err, errlen, "connect: %s", strerror(errno ? errno : EVUTIL_SOCKET_ERROR()));
        really_free(c);
        return NULL;
    }
    c->st = LS_IDLE;
    c->keep_alive = true;
    return c;
}

int lh_request(lh_conn *c, const char *method, const char *path, const char *host, const char *token,
               const void *body, size_t len, const lh_handler *h, void *ud)
{
    if (!lh_reusable(c))
        return -1;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    int rc = evbuffer_add_printf(out, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, path, host) < 0;
    if (token)
        rc |= evbuffer_add_printf(out, "Authorization: Bearer %s\r\n", token) < 0;
    if (body)
        rc |= evbuffer_add_printf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n", len) < 0;
    rc |= evbuffer_add(out, "\r\n", 2) < 0;
    if (body && len)
        rc |= evbuffer_add(out, body, len) < 0;
    if (rc || bufferevent_enable(c->bev, EV_READ | EV_WRITE) < 0)
        return -1;
    c->h = h;
    c->ud = ud;
    c->st = LS_HEAD;
    c->got_bytes = false;
    return 0;
}

/* httpd — veild's HTTP/1.1 server engine (see httpd.h). A connection walks
 * IDLE -> HEAD -> BODY -> HANDLING -> IDLE (keep-alive) or CLOSING, with one timer
 * for the deadline of the phase it is in and one for congested output.
 * Stays whole (~800 lines): reading, writing, the timers and accepting all drive that
 * one state machine; split, its transitions could no longer be read in order. */
#include "server/http/httpd.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/http1.h"
#include "common/buf.h"
#include "common/log.h"

#define ACCEPT_RETRY_MS 1000u /* a paused listener tries again at least this often */
#define LOG_EVERY_S 10        /* refusals and descriptor shortage: one line per interval */
#define FD_RESERVE 128u       /* descriptors kept for the store, the JWKS fetch, logs */
#define FDS_PER_CONN 2u       /* a client connection, and its enclave or Bedrock link */

typedef enum conn_state { CS_IDLE, CS_HEAD, CS_BODY, CS_HANDLING, CS_CLOSING } conn_state;

static const char *const STATE_NAMES[] = {"idle", "head", "body", "handling", "closing"};

typedef struct hconn hconn;

/* A request held for a whole stream keeps only what it uses: its head in a block of
 * the head's size, the headers it has (not the parser's 100 slots), and a body block
 * of the announced length, so an idle SSE stream costs little more than its bytes. */
struct httpd_req {
    hconn *c;
    char *head;       /* the head bytes; strings are NUL-terminated in place */
    size_t head_len;  /* wiped on free: the head carries the bearer token */
    const char *method, *path, *query; /* into head */
    int minor;        /* HTTP/1.minor */
    http1_body body_kind;
    uint64_t content_length;
    vbuf body;
    http1_chunked chunked;
    uint64_t body_left;
    bool chunked_out; /* a streamed response in chunked coding */
    bool started;     /* a streamed response's head was sent */
    void (*close_cb)(httpd_req *, void *);
    void *close_ud;
    void (*drain_cb)(httpd_req *, void *);
    void *drain_ud;
    size_t n_headers;
    http1_header headers[]; /* into head */
};

struct hconn {
    httpd *h;
    LIST_ENTRY(hconn) link;
    struct bufferevent *bev;
    struct event *phase;  /* the deadline of the current phase */
    struct event *stall;  /* congested output for too long */
    struct event *resume; /* the next pipelined request, or a deferred close, from the loop */
    conn_state st;
    httpd_req *rq;        /* the request in progress (HEAD..HANDLING) */
    bool keep_alive;      /* of the request in progress */
    bool congested;
    char rid[LOG_RID_LEN + 1];
};

typedef struct rate_log {
    time_t last;
    unsigned long suppressed;
} rate_log;

struct httpd {
    struct event_base *base;
    httpd_limits lim;
    unsigned cap;
    httpd_handler handler;
    void *ud;
    struct evconnlistener *listener;
    struct event *accept_retry;
    bool accept_paused;
    LIST_HEAD(, hconn) conns;
    unsigned n_conns;
    rate_log refused_log, fd_log;
};

static void conn_free(hconn *c);
static void process(hconn *c);

/* ---- small helpers ---- */

const char *httpd_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* True when the event is due for a log line now; otherwise counts it. */
static bool log_due(rate_log *l, unsigned long *suppressed)
{
    time_t now = time(NULL);
    if (now - l->last < LOG_EVERY_S) {
        l->suppressed++;
        return false;
    }
    *suppressed = l->suppressed;
    l->suppressed = 0;
    l->last = now;
    return true;
}

static void http_date(char out[40])
{
    static time_t cached;
    static char text[40];
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(text, sizeof text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    memcpy(out, text, sizeof text);
}

static void arm(struct event *ev, unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

static void set_state(hconn *c, conn_state st)
{
    log_debug(c->rid, "event=http_conn_state from=%s to=%s", STATE_NAMES[c->st], STATE_NAMES[st]);
    c->st = st;
}

static size_t pending(const hconn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* ---- the request ---- */

/* A head's bytes are wiped before they go back: it carries the Authorization token. */
static void head_free(char *head, size_t len)
{
    if (head)
        OPENSSL_cleanse(head, len);
    free(head);
}

static void req_free(httpd_req *rq)
{
    head_free(rq->head, rq->head_len);
    vbuf_free_secure(&rq->body); /* bodies carry ciphertext and tokens */
    free(rq);
}

const char *httpd_method(const httpd_req *rq) { return rq->method; }
const char *httpd_path(const httpd_req *rq) { return rq->path; }
const char *httpd_query(const httpd_req *rq) { return rq->query; }
int httpd_minor_version(const httpd_req *rq) { return rq->minor; }

const char *httpd_header(const httpd_req *rq, const char *name)
{
    for (size_t i = 0; i < rq->n_headers; i++) /* names are NUL-terminated in place */
        if (strcasecmp(rq->headers[i].name, name) == 0)
            return rq->headers[i].value;
    return NULL;
}

const uint8_t *httpd_body(const httpd_req *rq, size_t *len)
{
    *len = rq->body.len;
    return rq->body.len ? rq->body.data : (const uint8_t *)"";
}

bool httpd_header_at(const httpd_req *rq, size_t i, const char **name, size_t *name_len, const char **value,
                     size_t *value_len)
{
    if (i >= rq->n_headers)
        return false;
    const http1_header *h = &rq->headers[i];
    *name = h->name;
    *name_len = h->name_len;
    *value = h->value;
    *value_len = h->value_len;
    return true;
}

void httpd_take_body(httpd_req *rq, vbuf *out)
{
    *out = rq->body;
    rq->body = (vbuf)VBUF_INIT;
}

size_t httpd_pending(const httpd_req *rq) { return rq->c ? pending(rq->c) : 0; }
bool httpd_congested(const httpd_req *rq) { return rq->c && rq->c->congested; }

void httpd_on_close(httpd_req *rq, void (*cb)(httpd_req *, void *), void *ud)
{
    rq->close_cb = cb;
    rq->close_ud = ud;
}

void httpd_on_drain(httpd_req *rq, void (*cb)(httpd_req *, void *), void *ud)
{
    rq->drain_cb = cb;
    rq->drain_ud = ud;
}

/* The parser's spans become C strings: each is followed by a byte of the head that
 * is no longer needed (' ', '?', ':', '\r'), which becomes the terminator. */
static void terminate_strings(const http1_request *p)
{
    ((char *)p->method)[p->method_len] = '\0';
    ((char *)p->path)[p->path_len] = '\0';
    if (p->query)
        ((char *)p->query)[p->query_len] = '\0';
    for (size_t i = 0; i < p->headers.n; i++) {
        const http1_header *h = &p->headers.h[i];
        ((char *)h->name)[h->name_len] = '\0';
        ((char *)h->value)[h->value_len] = '\0';
    }
}

/* A comma-separated header list contains token (case-insensitive). */
static bool header_has_token(const httpd_req *rq, const char *name, const char *token)
{
    const char *v = httpd_header(rq, name);
    size_t tl = strlen(token);
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        size_t n = strcspn(v, ",");
        size_t m = n;
        while (m && (v[m - 1] == ' ' || v[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(v, token, tl) == 0)
            return true;
        v += n;
    }
    return false;
}

/* ---- writing ---- */

static void note_output(hconn *c)
{
    if (!c->congested && pending(c) > c->h->lim.max_output) {
        c->congested = true;
        arm(c->stall, c->h->lim.stall_ms);
        log_debug(c->rid, "event=http_congested pending=%zu", pending(c));
    }
}

static void write_head(hconn *c, int minor, int status, const char *extra, long long content_length,
                       bool chunked, bool close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    char date[40];
    http_date(date);
    evbuffer_add_printf(out, "HTTP/1.%d %d %s\r\nDate: %s\r\n", minor ? 1 : 0, status, httpd_reason(status), date);
    if (extra)
        evbuffer_add(out, extra, strlen(extra));
    if (content_length >= 0)
        evbuffer_add_printf(out, "Content-Length: %lld\r\n", content_length);
    if (chunked)
        evbuffer_add(out, "Transfer-Encoding: chunked\r\n", 28);
    if (close)
        evbuffer_add(out, "Connection: close\r\n", 19);
    else if (minor == 0)
        evbuffer_add(out, "Connection: keep-alive\r\n", 24);
    evbuffer_add(out, "\r\n", 2);
}

/* Close once the queued output has been written (never synchronously). */
static void close_after_flush(hconn *c)
{
    set_state(c, CS_CLOSING);
    evtimer_del(c->phase);
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    if (!c->congested) /* a reader that never takes the rest is cut off */
        arm(c->stall, c->h->lim.stall_ms);
    event_active(c->resume, EV_TIMEOUT, 0);
}

/* The response of the request in progress is complete: free the request, then go
 * on with the next one or close. */
static void finish(httpd_req *rq, bool close)
{
    hconn *c = rq->c;
    bool keep = c->keep_alive && !close;
    c->rq = NULL;
    req_free(rq);
    if (!keep) {
        close_after_flush(c);
        return;
    }
    set_state(c, CS_IDLE);
    arm(c->phase, c->h->lim.idle_ms);
    bufferevent_enable(c->bev, EV_READ); /* it may have paused on pipelined input */
    event_active(c->resume, EV_TIMEOUT, 0);
}

/* A HEAD request is answered as its GET would be, without the body (RFC 9110 §9.3.2). */
static bool is_head(const httpd_req *rq)
{
    return strcmp(rq->method, "HEAD") == 0;
}

void httpd_respond(httpd_req *rq, int status, const char *extra_headers, const void *body, size_t len)
{
    hconn *c = rq->c;
    bool no_body = status == 204 || status == 304 || (status >= 100 && status < 200);
    write_head(c, rq->minor, status, extra_headers, no_body ? -1 : (long long)len, false,
               !c->keep_alive);
    if (!no_body && len && !is_head(rq))
        evbuffer_add(bufferevent_get_output(c->bev), body, len);
    note_output(c);
    finish(rq, false);
}

void httpd_stream_start(httpd_req *rq, int status, const char *extra_headers)
{
    hconn *c = rq->c;
    rq->chunked_out = rq->minor >= 1;
    if (!rq->chunked_out)
        c->keep_alive = false; /* HTTP/1.0: the end of the body is the close */
    rq->started = true;
    write_head(c, rq->minor, status, extra_headers, -1, rq->chunked_out, !c->keep_alive);
    note_output(c);
}

void httpd_stream_write(httpd_req *rq, const void *data, size_t len)
{
    if (!rq->started || len == 0 || is_head(rq))
        return;
    struct evbuffer *out = bufferevent_get_output(rq->c->bev);
    if (rq->chunked_out)
        evbuffer_add_printf(out, "%zx\r\n", len);
    evbuffer_add(out, data, len);
    if (rq->chunked_out)
        evbuffer_add(out, "\r\n", 2);
    note_output(rq->c);
}

void httpd_stream_end(httpd_req *rq)
{
    if (rq->chunked_out && !is_head(rq))
        evbuffer_add(bufferevent_get_output(rq->c->bev), "0\r\n\r\n", 5);
    finish(rq, false);
}

/* An answer of the engine's own (malformed or over-limit requests, deadlines): a
 * JSON detail, then the connection closes (the rest of what the client sends is
 * not read, so it cannot be trusted to frame a next request). */
static void refuse(hconn *c, int status, const char *detail)
{
    char body[300], extra[128] = "Content-Type: application/json\r\n";
    int n = snprintf(body, sizeof body, "{\"detail\":\"%s\"}", detail);
    if (status == 405)
        snprintf(extra, sizeof extra, "Content-Type: application/json\r\nAllow: GET, POST, PUT, DELETE, OPTIONS\r\n");
    log_info(c->rid, "event=http_refused status=%d state=%s", status, STATE_NAMES[c->st]);
    int minor = c->rq ? c->rq->minor : 1;
    write_head(c, minor, status, extra, n, false, true);
    evbuffer_add(bufferevent_get_output(c->bev), body, (size_t)n);
    if (c->rq) {
        req_free(c->rq);
        c->rq = NULL;
    }
    close_after_flush(c);
}

/* ---- reading ---- */

static void dispatch(hconn *c)
{
    set_state(c, CS_HANDLING);
    evtimer_del(c->phase);
    c->h->handler(c->rq, c->h->ud); /* may answer, and so free the request, right away */
}

static bool is_connect(const uint8_t *p, size_t n)
{
    return n >= 8 && memcmp(p, "CONNECT ", 8) == 0;
}

/* Reads a request head. Returns true when the state moved on (a request was
 * dispatched, its body is next, or the connection was refused). */
static bool read_head(hconn *c, struct evbuffer *in)
{
    const httpd_limits *lim = &c->h->lim;
    /* empty lines before a request line are allowed (RFC 9112 §2.2) */
    for (;;) {
        size_t n = evbuffer_get_length(in);
        const uint8_t *p = n ? evbuffer_pullup(in, n < 2 ? (ev_ssize_t)n : 2) : NULL;
        if (n && p[0] == '\n')
            evbuffer_drain(in, 1);
        else if (n >= 2 && p[0] == '\r' && p[1] == '\n')
            evbuffer_drain(in, 2);
        else
            break;
    }
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return false;
    if (c->st == CS_IDLE) {
        set_state(c, CS_HEAD);
        arm(c->phase, lim->head_ms); /* from the first byte: a trickle cannot extend it */
    }
    size_t look = len < lim->max_head ? len : lim->max_head;
    const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)look);
    const uint8_t *end = memmem(p, look, "\r\n\r\n", 4);
    if (!end) {
        if (len >= lim->max_head) {
            char d[96];
            snprintf(d, sizeof d, "Request header fields too large (limit %zu bytes)", lim->max_head);
            refuse(c, 431, d);
            return true;
        }
        return false;
    }
    size_t head_len = (size_t)(end - p) + 4;
    char *head = malloc(head_len + 1);
    if (!head) {
        refuse(c, 503, "Service busy, please retry");
        return true;
    }
    memcpy(head, p, head_len);
    head[head_len] = '\0';
    evbuffer_drain(in, head_len);
    http1_request pr; /* the parser's full form lives only here */
    int rc = http1_parse_request(head, head_len, &pr);
    if (rc < 0) {
        bool connect = is_connect((const uint8_t *)head, head_len);
        /* unparsed, its version is unknown: the refusal is HTTP/1.1 (c->rq stays NULL) */
        head_free(head, head_len);
        if (connect)
            refuse(c, 405, "Method Not Allowed");
        else if (rc == HTTP1_ERR_TOO_MANY_HEADERS || rc == HTTP1_ERR_HEAD_TOO_LARGE)
            refuse(c, 431, "Too many request header fields");
        else if (rc == HTTP1_ERR_BAD_VERSION)
            refuse(c, 505, "HTTP version not supported");
        else
            refuse(c, 400, "Malformed request");
        return true;
    }
    httpd_req *rq = calloc(1, sizeof *rq + pr.headers.n * sizeof rq->headers[0]);
    if (!rq) {
        head_free(head, head_len);
        refuse(c, 503, "Service busy, please retry");
        return true;
    }
    rq->c = c;
    rq->head = head;
    rq->head_len = head_len;
    rq->minor = pr.minor_version;
    c->rq = rq;
    terminate_strings(&pr);
    rq->method = pr.method;
    rq->path = pr.path;
    rq->query = pr.query;
    rq->body_kind = pr.body;
    rq->content_length = pr.content_length;
    rq->n_headers = pr.headers.n;
    memcpy(rq->headers, pr.headers.h, pr.headers.n * sizeof rq->headers[0]);
    c->keep_alive = rq->minor >= 1 ? !header_has_token(rq, "Connection", "close")
                                   : header_has_token(rq, "Connection", "keep-alive");
    if (rq->body_kind == HTTP1_BODY_NONE ||
        (rq->body_kind == HTTP1_BODY_CONTENT_LENGTH && rq->content_length == 0)) {
        dispatch(c);
        return true;
    }
    if (rq->body_kind == HTTP1_BODY_CONTENT_LENGTH && rq->content_length > lim->max_body) {
        char d[96];
        snprintf(d, sizeof d, "Request body too large (limit %zu bytes)", lim->max_body);
        refuse(c, 413, d);
        return true;
    }
    rq->body_left = rq->content_length;
    if (rq->body_kind == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&rq->chunked);
    if (rq->minor >= 1 && header_has_token(rq, "Expect", "100-continue"))
        evbuffer_add(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n", 25);
    set_state(c, CS_BODY);
    arm(c->phase, lim->body_ms);
    return true;
}

/* The whole announced body in one block of its size (vbuf growth would double past
 * it, and the block stays for as long as a stream does). */
static int body_block(vbuf *b, size_t n)
{
    if (!(b->data = malloc(n ? n : 1)))
        return -1;
    b->cap = n ? n : 1;
    return 0;
}

/* Reads body bytes. Returns true when the state moved on. */
static bool read_body(hconn *c, struct evbuffer *in)
{
    httpd_req *rq = c->rq;
    size_t max = c->h->lim.max_body;
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return false;
    if (rq->body_kind == HTTP1_BODY_CONTENT_LENGTH) {
        size_t take = len < rq->body_left ? len : (size_t)rq->body_left;
        if (!rq->body.data && body_block(&rq->body, (size_t)rq->content_length) < 0) {
            refuse(c, 503, "Service busy, please retry");
            return true;
        }
        evbuffer_remove(in, rq->body.data + rq->body.len, take);
        rq->body.len += take;
        rq->body_left -= take;
        if (rq->body_left == 0) {
            dispatch(c);
            return true;
        }
        return false;
    }
    while ((len = evbuffer_get_contiguous_space(in)) > 0) {
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)len);
        ptrdiff_t used = http1_chunked_feed_vbuf(&rq->chunked, p, len, &rq->body);
        if (used < 0) {
            refuse(c, 400, "Malformed chunked body");
            return true;
        }
        evbuffer_drain(in, (size_t)used);
        if (rq->body.len > max) {
            char d[96];
            snprintf(d, sizeof d, "Request body too large (limit %zu bytes)", max);
            refuse(c, 413, d);
            return true;
        }
        if (http1_chunked_done(&rq->chunked)) {
            dispatch(c);
            return true;
        }
    }
    return false;
}

/* Runs every complete request in the input, in order, one at a time. */
static void process(hconn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    bool moved = true;
    while (moved) {
        if (c->st == CS_IDLE || c->st == CS_HEAD)
            moved = read_head(c, in);
        else if (c->st == CS_BODY)
            moved = read_body(c, in);
        else
            moved = false;
    }
    if (c->st == CS_HANDLING && evbuffer_get_length(in) > c->h->lim.max_head)
        bufferevent_disable(c->bev, EV_READ); /* pipelined input waits, within a bound */
}

static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    process(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    hconn *c = arg;
    if (c->st == CS_CLOSING) {
        if (pending(c) == 0)
            conn_free(c);
        return;
    }
    if (c->congested && pending(c) <= c->h->lim.max_output / 2) {
        c->congested = false;
        evtimer_del(c->stall);
        if (c->rq && c->rq->drain_cb)
            c->rq->drain_cb(c->rq, c->rq->drain_ud);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    hconn *c = arg;
    if (what & BEV_EVENT_EOF)
        log_debug(c->rid, "event=http_peer_closed state=%s", STATE_NAMES[c->st]);
    else
        log_debug(c->rid, "event=http_conn_error state=%s errno=%d", STATE_NAMES[c->st], EVUTIL_SOCKET_ERROR());
    conn_free(c);
}

static void on_phase(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hconn *c = arg;
    switch (c->st) {
    case CS_IDLE:
        log_debug(c->rid, "event=http_idle_timeout");
        conn_free(c);
        return;
    case CS_HEAD:
        refuse(c, 408, "Request head not received in time");
        return;
    case CS_BODY:
        refuse(c, 408, "Request body not received in time");
        return;
    case CS_HANDLING:
    case CS_CLOSING:
        return;
    }
}

static void on_stall(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hconn *c = arg;
    log_info(c->rid, "event=http_output_stalled pending=%zu state=%s", pending(c), STATE_NAMES[c->st]);
    conn_free(c);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    hconn *c = arg;
    if (c->st == CS_CLOSING) {
        if (pending(c) == 0)
            conn_free(c);
        return;
    }
    process(c);
}

/* ---- connections ---- */

static void resume_accepting(httpd *h)
{
    if (!h->accept_paused || !h->listener)
        return;
    h->accept_paused = false;
    evtimer_del(h->accept_retry);
    evconnlistener_enable(h->listener);
}

static void conn_free(hconn *c)
{
    httpd *h = c->h;
    if (c->rq) {
        httpd_req *rq = c->rq;
        c->rq = NULL;
        if (c->st == CS_HANDLING && rq->close_cb)
            rq->close_cb(rq, rq->close_ud); /* the handler drops its state */
        req_free(rq);
    }
    LIST_REMOVE(c, link);
    h->n_conns--;
    event_free(c->phase);
    event_free(c->stall);
    event_free(c->resume);
    bufferevent_free(c->bev);
    log_debug(c->rid, "event=http_conn_closed conns=%u", h->n_conns);
    free(c);
    resume_accepting(h); /* a descriptor is free again */
}

/* Past the cap: one canned answer, written without any state, and close. */
static void refuse_busy(httpd *h, int fd)
{
#define BUSY_BODY "{\"detail\":\"Too many connections, retry soon\"}"
    static const char MSG[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                              "Retry-After: 1\r\nConnection: close\r\n";
    char buf[256];
    int n = snprintf(buf, sizeof buf, "%sContent-Length: %zu\r\n\r\n%s", MSG, sizeof BUSY_BODY - 1, BUSY_BODY);
    ssize_t w = send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w;
    close(fd);
    unsigned long skipped;
    if (log_due(&h->refused_log, &skipped))
        log_warn(NULL, "event=http_conn_refused reason=too_many_connections conns=%u cap=%u suppressed=%lu",
                 h->n_conns, h->cap, skipped);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    (void)salen;
    httpd *h = arg;
    if (h->n_conns >= h->cap) {
        refuse_busy(h, fd);
        return;
    }
    if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
        int one = 1; /* SSE events are small and must not wait for an ACK */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    hconn *c = calloc(1, sizeof *c);
    struct bufferevent *bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c || !bev) {
        free(c);
        if (bev)
            bufferevent_free(bev);
        else
            close(fd);
        return;
    }
    c->h = h;
    c->bev = bev;
    log_new_rid(c->rid);
    c->phase = evtimer_new(h->base, on_phase, c);
    c->stall = evtimer_new(h->base, on_stall, c);
    c->resume = event_new(h->base, -1, 0, on_resume, c);
    LIST_INSERT_HEAD(&h->conns, c, link);
    h->n_conns++;
    if (!c->phase || !c->stall || !c->resume) {
        conn_free(c);
        return;
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_WRITE, h->lim.max_output / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    arm(c->phase, h->lim.idle_ms);
    log_debug(c->rid, "event=http_conn_accepted conns=%u", h->n_conns);
}

static void on_accept_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    resume_accepting(arg);
}

/* accept() failed. Out of descriptors (or memory), accepting again at once would
 * fail again and spin: pause until a connection closes or a second passes. */
static void on_accept_error(struct evconnlistener *l, void *arg)
{
    httpd *h = arg;
    int e = EVUTIL_SOCKET_ERROR();
    unsigned long skipped;
    if (log_due(&h->fd_log, &skipped))
        log_error(NULL, "event=http_accept_failed errno=%d detail=\"%s\" conns=%u suppressed=%lu", e,
                  strerror(e), h->n_conns, skipped);
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        evconnlistener_disable(l);
        h->accept_paused = true;
        arm(h->accept_retry, ACCEPT_RETRY_MS);
    }
}

/* The cap: the descriptors each connection may need, within the process limit,
 * so that veild never runs out of them in normal operation. An operator's explicit
 * cap wins, with a warning when it goes past that share (accept then pauses on
 * EMFILE instead of spinning). */
static unsigned connection_cap(unsigned configured)
{
    struct rlimit rl;
    unsigned share = 1u << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        rlim_t cur = rl.rlim_cur;
        share = cur > 2 * FD_RESERVE ? (unsigned)((cur - FD_RESERVE) / FDS_PER_CONN) : (unsigned)(cur / 4);
        if (share == 0)
            share = 1;
    }
    if (configured == 0)
        return share;
    if (configured > share)
        log_warn(NULL, "event=http_cap_above_fd_limit max_connections=%u share=%u", configured, share);
    return configured;
}

httpd *httpd_new(struct event_base *base, const httpd_limits *lim, httpd_handler handler, void *ud)
{
    httpd *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->base = base;
    h->lim = *lim;
    if (!h->lim.max_head)
        h->lim.max_head = HTTPD_DEFAULT_MAX_HEAD;
    if (!h->lim.idle_ms)
        h->lim.idle_ms = HTTPD_DEFAULT_IDLE_MS;
    if (!h->lim.head_ms)
        h->lim.head_ms = HTTPD_DEFAULT_HEAD_MS;
    if (!h->lim.body_ms)
        h->lim.body_ms = HTTPD_DEFAULT_BODY_MS;
    if (!h->lim.max_output)
        h->lim.max_output = HTTPD_DEFAULT_MAX_OUTPUT;
    if (!h->lim.stall_ms)
        h->lim.stall_ms = HTTPD_DEFAULT_STALL_MS;
    h->cap = connection_cap(lim->max_conns);
    h->handler = handler;
    h->ud = ud;
    LIST_INIT(&h->conns);
    h->accept_retry = evtimer_new(base, on_accept_retry, h);
    if (!h->accept_retry) {
        free(h);
        return NULL;
    }
    return h;
}

int httpd_accept_on(httpd *h, int fd, char *err, size_t errlen)
{
    h->listener = evconnlistener_new(h->base, on_accept, h, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                     -1, fd);
    if (!h->listener) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    evconnlistener_set_error_cb(h->listener, on_accept_error);
    return 0;
}

void httpd_stop_accepting(httpd *h)
{
    if (h->listener)
        evconnlistener_free(h->listener);
    h->listener = NULL;
    h->accept_paused = false;
    evtimer_del(h->accept_retry);
}

unsigned httpd_connections(const httpd *h) { return h->n_conns; }
unsigned httpd_max_connections(const httpd *h) { return h->cap; }

void httpd_free(httpd *h)
{
    if (!h)
        return;
    httpd_stop_accepting(h);
    /* the answers given at shutdown (503s, the end of a stream) are written once, as
     * far as each socket takes them without waiting: the loop no longer runs */
    hconn *c;
    LIST_FOREACH(c, &h->conns, link) {
        struct evbuffer *out = bufferevent_get_output(c->bev);
        size_t n = evbuffer_get_length(out);
        unsigned char *p = n ? evbuffer_pullup(out, (ssize_t)n) : NULL;
        if (p) {
            ssize_t w = send(bufferevent_getfd(c->bev), p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            (void)w;
        }
    }
    while (!LIST_EMPTY(&h->conns))
        conn_free(LIST_FIRST(&h->conns));
    event_free(h->accept_retry);
    free(h);
}

/* sim_http — the simulators' connection layer (see sim_http.h).
 * Stays whole (~660 lines): one connection's life, accept -> head -> body -> handler ->
 * the next request or the close, read top to bottom in one file.
 */
#include "sim_http.h"

#include <errno.h>
#include <signal.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/log.h"

/* A connection's life, one log line per request (style.md: explicit state enum).
 * Keep-alive goes FINISHING -> READ_HEAD for the next request. */
typedef enum {
    CONN_READ_HEAD = 0, /* waiting for a complete request head */
    CONN_READ_BODY,     /* head parsed, reading Content-Length or chunked body */
    CONN_HANDLING,      /* handed to the program: it writes the response */
    CONN_FINISHING,     /* response complete: next request or close, once flushed */
    CONN_DROPPING,      /* fault: close without any goodbye once flushed */
} conn_state;

struct sim_conn {
    sim_server *srv;
    struct bufferevent *bev;
    struct event *close_ev; /* deferred close: never free under a handler's feet */
    conn_state state;
    char rid[LOG_RID_LEN + 1];
    struct timespec t0;

    vbuf head; /* a private copy of the request head; req points into it */
    http1_request req;
    bool have_req;
    vbuf body;
    http1_chunked chunked;

    int status;
    const char *fault;
    unsigned seq;     /* this request's place on the connection, from 1 */
    bool keep_alive;  /* after this response, wait for the next request */
    bool head_begun;  /* a byte of the current request arrived (restarts t0) */

    void *app;
    void (*app_free)(void *app);
    void (*on_writable)(void *app);

    LIST_ENTRY(sim_conn) link;
};

struct sim_server {
    struct event_base *base;
    struct evconnlistener *listener;
    sim_server_config cfg;
    LIST_HEAD(, sim_conn) conns;
    size_t n_conns;
};

/* ---------------------------------------------------------------- helpers */

int sim_json_escape(vbuf *out, const char *s, size_t n)
{
    static const char HEXD[] = "0123456789abcdef";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\' && ch != 0x7f)
            continue;
        if (vbuf_append(out, s + start, i - start) < 0)
            return -1;
        char esc[7];
        size_t elen = 2;
        esc[0] = '\\';
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = HEXD[ch >> 4];
            esc[5] = HEXD[ch & 15];
            elen = 6;
        }
        if (vbuf_append(out, esc, elen) < 0)
            return -1;
        start = i + 1;
    }
    return vbuf_append(out, s + start, n - start);
}

void sim_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

void sim_format_iso8601(time_t t, char out[21])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    if (strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        out[0] = '\0';
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 424: return "Failed Dependency";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static long ms_since(const struct timespec *t0)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

/* ---------------------------------------------------------------- closing */

static void conn_log(sim_conn *c, const char *outcome)
{
    if (!c->have_req) {
        /* no request ever arrived (TLS failure, idle client, garbage): one debug line */
        if (c->status)
            log_info(c->rid, "event=request method=- path=- status=%d fault=none outcome=%s "
                             "duration_ms=%ld",
                     c->status, outcome, ms_since(&c->t0));
        else if (c->seq > 1) /* a kept-alive connection ends between requests */
            log_info(c->rid, "event=connection_closed outcome=%s requests=%u", outcome, c->seq - 1);
        else
            log_debug(c->rid, "event=connection_closed outcome=%s duration_ms=%ld", outcome,
                      ms_since(&c->t0));
        return;
    }
    int plen = c->req.path_len > 300 ? 300 : (int)c->req.path_len;
    int mlen = c->req.method_len > 16 ? 16 : (int)c->req.method_len;
    log_info(c->rid, "event=request method=%.*s path=%.*s status=%d fault=%s outcome=%s "
                     "duration_ms=%ld conn_seq=%u",
             mlen, c->req.method, plen, c->req.path, c->status,
             c->fault ? c->fault : "none", outcome, ms_since(&c->t0), c->seq);
}

/* Connection: close among the tokens of any Connection header. */
static bool says_close(const http1_headers *hs)
{
    for (size_t i = 0; i < hs->n; i++) {
        const http1_header *h = &hs->h[i];
        if (h->name_len != 10 || strncasecmp(h->name, "connection", 10) != 0)
            continue;
        for (size_t k = 0; k + 5 <= h->value_len; k++) {
            bool starts = k == 0 || h->value[k - 1] == ',' || h->value[k - 1] == ' ';
            bool ends = k + 5 == h->value_len || h->value[k + 5] == ',' || h->value[k + 5] == ' ';
            if (starts && ends && strncasecmp(h->value + k, "close", 5) == 0)
                return true;
        }
    }
    return false;
}

static void conn_free(sim_conn *c, const char *outcome, bool graceful)
{
    sim_server *s = c->srv;
    conn_log(c, outcome);
    if (c->app_free && c->app)
        c->app_free(c->app);
    c->app = NULL;
    if (c->bev) {
        SSL *ssl = s->cfg.ssl_ctx ? bufferevent_openssl_get_ssl(c->bev) : NULL;
        if (ssl && graceful)
            (void)SSL_shutdown(ssl); /* close_notify; the peer's reply is not awaited */
        else if (ssl)
            SSL_set_quiet_shutdown(ssl, 1);
        bufferevent_free(c->bev);
    }
    if (c->close_ev)
        event_free(c->close_ev);
    ERR_clear_error();
    vbuf_free(&c->head);
    vbuf_free_secure(&c->body);
    LIST_REMOVE(c, link);
    s->n_conns--;
    free(c);
}

static void read_head(sim_conn *c, struct evbuffer *in);

/* Keep-alive: the response is out, the connection waits for its next request (and
 * reads one the client already sent). */
static void next_request(sim_conn *c)
{
    conn_log(c, "complete");
    if (c->app_free && c->app)
        c->app_free(c->app);
    c->app = NULL;
    c->app_free = NULL;
    c->on_writable = NULL;
    vbuf_reset(&c->head);
    vbuf_free_secure(&c->body);
    memset(&c->req, 0, sizeof c->req);
    c->have_req = false;
    c->status = 0;
    c->fault = NULL;
    c->keep_alive = false;
    c->head_begun = false;
    c->seq++;
    log_new_rid(c->rid);
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    c->state = CONN_READ_HEAD;
    unsigned ms = c->srv->cfg.keep_alive_ms;
    struct timeval idle = {ms / 1000, (ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &idle, NULL);
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (evbuffer_get_length(in) > 0) {
        c->head_begun = true;
        read_head(c, in);
    }
}

static void close_if_flushed(sim_conn *c)
{
    if (sim_conn_pending(c) != 0)
        return;
    if (c->state == CONN_FINISHING && c->keep_alive)
        next_request(c);
    else if (c->state == CONN_FINISHING)
        conn_free(c, "complete", true);
    else if (c->state == CONN_DROPPING)
        conn_free(c, "dropped", false);
}

static void deferred_close_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    close_if_flushed(arg);
}

static void schedule_close_check(sim_conn *c)
{
    if (sim_conn_pending(c) == 0)
        event_active(c->close_ev, EV_TIMEOUT, 0);
    /* else: the write callback fires when the output drains */
}

/* ---------------------------------------------------------------- public conn API */

const char *sim_conn_rid(const sim_conn *c) { return c->rid; }
struct event_base *sim_conn_base(const sim_conn *c) { return c->srv->base; }
struct evbuffer *sim_conn_output(sim_conn *c) { return bufferevent_get_output(c->bev); }
size_t sim_conn_pending(const sim_conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}
long sim_conn_elapsed_ms(const sim_conn *c) { return ms_since(&c->t0); }
unsigned sim_conn_seq(const sim_conn *c) { return c->seq; }
const char *sim_conn_connection_header(const sim_conn *c)
{
    return c->keep_alive ? "" : "Connection: close\r\n";
}
void sim_conn_set_status(sim_conn *c, int status) { c->status = status; }
void sim_conn_set_fault(sim_conn *c, const char *fault) { c->fault = fault; }

void sim_conn_set_app(sim_conn *c, void *app, void (*app_free)(void *app),
                      void (*on_writable)(void *app))
{
    c->app = app;
    c->app_free = app_free;
    c->on_writable = on_writable;
}

void sim_conn_finish(sim_conn *c)
{
    if (c->state == CONN_FINISHING || c->state == CONN_DROPPING)
        return;
    c->state = CONN_FINISHING;
    schedule_close_check(c);
}

void sim_conn_finish_close(sim_conn *c)
{
    c->keep_alive = false;
    sim_conn_finish(c);
}

void sim_conn_drop(sim_conn *c)
{
    if (c->state == CONN_FINISHING || c->state == CONN_DROPPING)
        return;
    c->state = CONN_DROPPING;
    schedule_close_check(c);
}

void sim_conn_respond(sim_conn *c, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len)
{
    struct evbuffer *out = sim_conn_output(c);
    c->status = status;
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "%s%s\r\n",
                        status, reason_phrase(status), content_type, len,
                        sim_conn_connection_header(c), extra_headers ? extra_headers : "");
    if (len)
        evbuffer_add(out, body, len);
    sim_conn_finish(c);
}

void sim_conn_respond_aws_error(sim_conn *c, int status, const char *type, const char *message)
{
    vbuf body = VBUF_INIT, hdr = VBUF_INIT;
    if (vbuf_append_str(&body, "{\"message\":\"") < 0 ||
        sim_json_escape(&body, message, strlen(message)) < 0 || vbuf_append_str(&body, "\"}") < 0 ||
        vbuf_printf(&hdr, "x-amzn-ErrorType: %s\r\nx-amzn-RequestId: %s\r\n", type, c->rid) < 0 ||
        !vbuf_cstr(&hdr)) {
        vbuf_free(&body);
        vbuf_free(&hdr);
        sim_conn_drop(c); /* out of memory: nothing sensible to say */
        return;
    }
    sim_conn_respond(c, status, "application/json", (const char *)hdr.data, body.data, body.len);
    vbuf_free(&body);
    vbuf_free(&hdr);
}

static void respond_framing_error(sim_conn *c, int status, const char *msg)
{
    if (c->srv->cfg.error_style == SIM_ERRORS_AWS_JSON)
        sim_conn_respond_aws_error(c, status,
                                   status == 413 ? "ValidationException" : "SerializationException",
                                   msg);
    else
        sim_conn_respond(c, status, "text/plain", NULL, msg, strlen(msg));
}

/* ---------------------------------------------------------------- reading */

static void dispatch(sim_conn *c)
{
    c->state = CONN_HANDLING;
    /* HTTP/1.1 persists unless told otherwise; HTTP/1.0 does not (no keep-alive
     * extension here) */
    c->keep_alive = c->srv->cfg.keep_alive_ms > 0 && c->req.minor_version >= 1 &&
                    !says_close(&c->req.headers);
    /* the head timeout is over: a hung stream lasts until the client goes away */
    bufferevent_set_timeouts(c->bev, NULL, NULL);
    c->status = 0;
    c->srv->cfg.on_request(c, &c->req, c->body.data, c->body.len, c->srv->cfg.user);
}

static void read_body(sim_conn *c, struct evbuffer *in)
{
    if (c->req.body == HTTP1_BODY_CONTENT_LENGTH) {
        size_t need = (size_t)c->req.content_length - c->body.len;
        size_t have = evbuffer_get_length(in);
        size_t take = have < need ? have : need;
        if (take) {
            if (vbuf_reserve(&c->body, take) < 0) {
                respond_framing_error(c, 413, "Request body too large.");
                return;
            }
            evbuffer_remove(in, c->body.data + c->body.len, take);
            c->body.len += take;
        }
        if (c->body.len == c->req.content_length)
            dispatch(c);
        return;
    }
    if (c->req.body == HTTP1_BODY_CHUNKED) {
        while (evbuffer_get_length(in) && !http1_chunked_done(&c->chunked)) {
            struct evbuffer_iovec v;
            if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
                break;
            ptrdiff_t r = http1_chunked_feed_vbuf(&c->chunked, v.iov_base, v.iov_len, &c->body);
            if (r < 0) {
                respond_framing_error(c, 400, http1_strerror((int)r));
                return;
            }
            evbuffer_drain(in, (size_t)r);
            if (c->body.len > c->srv->cfg.max_body) {
                respond_framing_error(c, 413, "Request body too large.");
                return;
            }
        }
        if (http1_chunked_done(&c->chunked))
            dispatch(c);
        return;
    }
    dispatch(c);
}

static void read_head(sim_conn *c, struct evbuffer *in)
{
    size_t have = evbuffer_get_length(in);
    size_t look = have < HTTP1_MAX_HEAD_SIZE ? have : HTTP1_MAX_HEAD_SIZE;
    const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)look);
    if (!p)
        return;
    http1_request tmp;
    int r = http1_parse_request(p, look, &tmp);
    if (r == HTTP1_NEED_MORE) {
        if (look >= HTTP1_MAX_HEAD_SIZE)
            respond_framing_error(c, 400, http1_strerror(HTTP1_ERR_HEAD_TOO_LARGE));
        return;
    }
    if (r < 0) {
        respond_framing_error(c, 400, http1_strerror(r));
        return;
    }
    /* keep a private copy, so the parsed views outlive the socket buffer */
    if (vbuf_append(&c->head, p, (size_t)r) < 0) {
        sim_conn_drop(c);
        return;
    }
    evbuffer_drain(in, (size_t)r);
    if (http1_parse_request(c->head.data, c->head.len, &c->req) != r) {
        sim_conn_drop(c);
        return;
    }
    c->have_req = true;
    if (c->req.body == HTTP1_BODY_CONTENT_LENGTH && c->req.content_length > c->srv->cfg.max_body) {
        respond_framing_error(c, 413, "Request body too large.");
        return;
    }
    if (c->req.body == HTTP1_BODY_CHUNKED)
        http1_chunked_init(&c->chunked);
    c->state = CONN_READ_BODY;
    read_body(c, in);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    sim_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    switch (c->state) {
    case CONN_READ_HEAD:
        if (!c->head_begun) {
            c->head_begun = true;
            if (c->seq > 1) /* the wait between requests is not this request's time */
                clock_gettime(CLOCK_MONOTONIC, &c->t0);
        }
        read_head(c, in);
        break;
    case CONN_READ_BODY:
        read_body(c, in);
        break;
    default:
        /* a pipelined next request waits for this response (bounded); without
         * keep-alive anything more is ignored */
        if (!c->keep_alive)
            evbuffer_drain(in, evbuffer_get_length(in));
        else if (evbuffer_get_length(in) > HTTP1_MAX_HEAD_SIZE)
            sim_conn_drop(c);
        break;
    }
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    sim_conn *c = arg;
    if (c->state == CONN_FINISHING || c->state == CONN_DROPPING) {
        close_if_flushed(c);
        return;
    }
    if (c->state == CONN_HANDLING && c->on_writable && c->app)
        c->on_writable(c->app);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    sim_conn *c = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        /* a kept-alive connection's wait ended: a goodbye, as AWS says it */
        bool between = c->state == CONN_READ_HEAD && c->seq > 1 && !c->head_begun;
        conn_free(c, between ? "keep_alive_timeout" : "timeout", between);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if (what & BEV_EVENT_ERROR) {
            unsigned long e = bufferevent_get_openssl_error(c->bev);
            if (e && !c->have_req) {
                char buf[160];
                ERR_error_string_n(e, buf, sizeof buf);
                log_warn(c->rid, "event=tls_error error=\"%s\"", buf);
            }
        }
        conn_free(c, c->state == CONN_FINISHING ? "complete" : "client_gone", false);
    }
}

/* ---------------------------------------------------------------- accepting */

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    sim_server *s = arg;
    sim_conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        return;
    }
    /* each TLS record goes out as written: on a kept-alive connection, where the
     * peer's ACKs are delayed, Nagle would hold the records after the first (40 ms) */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->srv = s;
    c->seq = 1;
    log_new_rid(c->rid);
    clock_gettime(CLOCK_MONOTONIC, &c->t0);
    if (s->cfg.ssl_ctx) {
        SSL *ssl = SSL_new(s->cfg.ssl_ctx);
        if (ssl)
            c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) {
            if (ssl)
                SSL_free(ssl);
        } else {
            /* a client that just closes the TCP connection is an EOF, not an error */
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        }
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    c->close_ev = event_new(s->base, -1, 0, deferred_close_cb, c);
    if (!c->bev || !c->close_ev) {
        if (c->bev)
            bufferevent_free(c->bev);
        else
            close(fd);
        if (c->close_ev)
            event_free(c->close_ev);
        free(c);
        return;
    }
    LIST_INSERT_HEAD(&s->conns, c, link);
    s->n_conns++;
    struct timeval head_timeout = {SIM_HEAD_TIMEOUT_SECONDS, 0};
    bufferevent_set_timeouts(c->bev, &head_timeout, NULL);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    int e = EVUTIL_SOCKET_ERROR();
    /* EMFILE and friends: keep serving the connections we have */
    log_warn(NULL, "event=accept_error error=\"%s\"", evutil_socket_error_to_string(e));
}

sim_server *sim_server_new(struct event_base *base, int listen_fd, const sim_server_config *cfg,
                           char *err, size_t errlen)
{
    sim_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        close(listen_fd);
        return NULL;
    }
    s->base = base;
    s->cfg = *cfg;
    LIST_INIT(&s->conns);
    s->listener = evconnlistener_new(base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE, -1, listen_fd);
    if (!s->listener) {
        snprintf(err, errlen, "evconnlistener_new failed");
        close(listen_fd);
        free(s);
        return NULL;
    }
    evconnlistener_set_error_cb(s->listener, accept_error_cb);
    return s;
}

void sim_server_free(sim_server *s)
{
    if (!s)
        return;
    evconnlistener_free(s->listener);
    while (!LIST_EMPTY(&s->conns))
        conn_free(LIST_FIRST(&s->conns), "shutdown", false);
    free(s);
}

size_t sim_server_conn_count(const sim_server *s) { return s->n_conns; }

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info(NULL, "event=shutdown signal=%d", (int)sig);
    event_base_loopbreak(arg);
}

int sim_run(veil_addr *addr, int backlog, const sim_server_config *cfg, void (*config_log)(void *ud),
            void *ud)
{
    char err[256], abuf[300];
    int rc = 1;
    struct event *sigterm = NULL, *sigint = NULL;
    sim_server *server = NULL;
    struct event_base *base = event_base_new();
    if (!base)
        goto out;
    int fd = addr_listen(addr, backlog, err, sizeof err);
    if (fd < 0) {
        log_error(NULL, "event=listen_failed addr=%s error=\"%s\"", addr_format(addr, abuf, sizeof abuf), err);
        goto out;
    }
    if (addr->kind == ADDR_TCP) {
        int port = addr_local_port(fd);
        if (port > 0)
            addr->port = (uint16_t)port;
    }
    server = sim_server_new(base, fd, cfg, err, sizeof err);
    if (!server) {
        log_error(NULL, "event=listen_failed error=\"%s\"", err);
        goto out;
    }
    sigterm = evsignal_new(base, SIGTERM, on_stop_signal, base);
    sigint = evsignal_new(base, SIGINT, on_stop_signal, base);
    if (!sigterm || !sigint || evsignal_add(sigterm, NULL) < 0 || evsignal_add(sigint, NULL) < 0)
        goto out;
    log_info(NULL, "event=listening addr=%s", addr_format(addr, abuf, sizeof abuf));
    if (config_log)
        config_log(ud);
    event_base_dispatch(base);
    rc = 0;
out:
    sim_server_free(server);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (base)
        event_base_free(base);
    return rc;
}

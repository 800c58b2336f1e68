/* https — the outbound HTTP/1.1 client over TLS and CONNECT (see https.h).
 * Stays whole (~940 lines): one connection state machine, CONNECTING -> CONNECT_SENT
 * -> TLS_HANDSHAKE -> REQUEST_SENT -> BODY -> DONE; every callback drives the same
 * states, and split across files its transitions could no longer be read in order.
 * Keeping idle connections is https_pool.c's; deciding that a response leaves its
 * connection reusable, and the one retry on a fresh connection, stay here with the
 * states they depend on.
 */
#include "net/https.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "net/https_pool_int.h"

#define DEFAULT_CONNECT_MS 10000u
#define DEFAULT_IDLE_MS 60000u

typedef enum conn_state {
    ST_CONNECTING = 0,
    ST_CONNECT_SENT,
    ST_TLS_HANDSHAKE,
    ST_REQUEST_SENT,
    ST_BODY,
    ST_DONE,
} conn_state;

static const char *const STATE_NAMES[] = {
    "connecting", "connect_sent", "tls_handshake", "request_sent", "body", "done",
};

#define SESSION_SLOTS 16 /* hosts whose TLS sessions are kept for resumption */

struct https_ctx {
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    /* the latest session ticket per host:port: a resumed handshake skips the
     * certificate chain (and its verification) that a full one pays for */
    struct {
        char peer[280];
        SSL_SESSION *sess;
    } sessions[SESSION_SLOTS];
    unsigned next_slot;
    unsigned long resumed, full;
};

struct https_conn {
    https_ctx *ctx;
    conn_state st;
    int fd;
    struct event *connect_ev;  /* EV_WRITE: non-blocking connect completion */
    struct event *phase_timer; /* connect-phase deadline, and immediate error delivery */
    struct event *total_timer;
    struct bufferevent *bev;
    SSL *ssl;
    bool tls, via_proxy;
    char host[256];
    uint16_t port;
    unsigned idle_ms;
    vbuf out; /* the request bytes */
    http1_body body_kind;
    uint64_t body_left;
    http1_chunked chunked;
    https_callbacks cb;
    void *ud;
    char rid[LOG_RID_LEN + 1];
    /* deferred failure raised before the loop ran (e.g. connect refused at once) */
    https_err pending_err;
    char pending_detail[160];
    int busy;     /* > 0 while inside one of our event handlers */
    bool finished, cancelled;
    bool paused;          /* the caller cannot take body bytes now (backpressure) */
    struct event *resume; /* feeds bytes that were buffered while paused */
    veil_addr target;     /* what connect() reaches: the proxy, or the host */
    unsigned connect_ms;
    /* keep-alive (https_pool.h) */
    https_pool *pool;     /* NULL: one request per connection */
    char pool_key[HTTPS_POOL_KEY_LEN];
    unsigned long conn_id; /* the pool's name for this connection, in log lines */
    uint64_t born_ms;
    unsigned served;      /* responses completed on this connection before this one */
    bool reused;          /* taken from the pool: the peer may have closed it meanwhile */
    bool retried;         /* already sent again on a fresh connection */
    bool answered;        /* a byte of the response arrived: never send it again */
    bool keep_alive;      /* the response head allows another request after it */
    bool peer_closed;     /* EOF seen (plain HTTP; TLS has SSL_get_shutdown) */
};

/* The TLS peer a session belongs to: the name verified and the port. */
static void peer_name(const https_conn *c, char *out, size_t n)
{
    snprintf(out, n, "%s:%u", c->host, c->port);
}

const char *https_strerror(https_err e)
{
    switch (e) {
    case HTTPS_OK: return "ok";
    case HTTPS_ERR_NOMEM: return "out of memory";
    case HTTPS_ERR_ARG: return "bad request";
    case HTTPS_ERR_CONNECT: return "connect failed";
    case HTTPS_ERR_PROXY: return "proxy refused the tunnel";
    case HTTPS_ERR_TLS: return "TLS failure";
    case HTTPS_ERR_CERT: return "certificate verification failed";
    case HTTPS_ERR_IO: return "connection error";
    case HTTPS_ERR_PROTOCOL: return "malformed HTTP response";
    case HTTPS_ERR_TRUNCATED: return "response truncated";
    case HTTPS_ERR_TIMEOUT_CONNECT: return "connect timed out";
    case HTTPS_ERR_TIMEOUT_IDLE: return "response stalled";
    case HTTPS_ERR_TIMEOUT_TOTAL: return "request deadline exceeded";
    case HTTPS_ERR_ABORTED: return "aborted";
    }
    return "unknown error";
}

static SSL_SESSION **session_slot(https_ctx *ctx, const char *peer, bool create)
{
    for (unsigned i = 0; i < SESSION_SLOTS; i++)
        if (ctx->sessions[i].sess && strcmp(ctx->sessions[i].peer, peer) == 0)
            return &ctx->sessions[i].sess;
    if (!create)
        return NULL;
    unsigned i = ctx->next_slot++ % SESSION_SLOTS; /* round robin: few hosts in practice */
    SSL_SESSION_free(ctx->sessions[i].sess);
    ctx->sessions[i].sess = NULL;
    snprintf(ctx->sessions[i].peer, sizeof ctx->sessions[i].peer, "%s", peer);
    return &ctx->sessions[i].sess;
}

static void peer_name(const https_conn *c, char *out, size_t n);

/* OpenSSL hands every new session (TLS 1.3: each ticket) here; returning 1 keeps it. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    https_conn *c = SSL_get_app_data(ssl);
    if (!c)
        return 0;
    char peer[280];
    peer_name(c, peer, sizeof peer);
    SSL_SESSION **slot = session_slot(c->ctx, peer, true);
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1;
}

void https_ctx_stats(const https_ctx *ctx, unsigned long *resumed, unsigned long *full)
{
    *resumed = ctx->resumed;
    *full = ctx->full;
}

https_ctx *https_ctx_new(struct event_base *base, const char *ca_file, char *err, size_t errlen)
{
    https_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->base = base;
    ctx->ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx->ssl_ctx)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx->ssl_ctx, SSL_VERIFY_PEER, NULL);
    /* a peer that closes without close_notify is an EOF; the HTTP framing
     * (content-length, chunked) decides whether the body was complete */
    SSL_CTX_set_options(ctx->ssl_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx->ssl_ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, on_new_session);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx->ssl_ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx->ssl_ctx);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load CA bundle %s", ca_file ? ca_file : "(system)");
        goto fail_quiet;
    }
    return ctx;
fail:
    snprintf(err, errlen, "TLS context: %s", ERR_reason_error_string(ERR_get_error()));
fail_quiet:
    ERR_clear_error();
    https_ctx_free(ctx);
    return NULL;
}

void https_ctx_free(https_ctx *ctx)
{
    if (!ctx)
        return;
    for (unsigned i = 0; i < SESSION_SLOTS; i++)
        SSL_SESSION_free(ctx->sessions[i].sess);
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

static void set_state(https_conn *c, conn_state st)
{
    log_debug(c->rid, "event=https_state host=%s from=%s to=%s", c->host, STATE_NAMES[c->st],
              STATE_NAMES[st]);
    c->st = st;
}

static void conn_free(https_conn *c)
{
    if (c->ssl)
        SSL_set_app_data(c->ssl, NULL);
    if (c->connect_ev)
        event_free(c->connect_ev);
    if (c->phase_timer)
        event_free(c->phase_timer);
    if (c->resume)
        event_free(c->resume);
    if (c->total_timer)
        event_free(c->total_timer);
    if (c->bev)
        bufferevent_free(c->bev); /* frees the SSL and closes fd (CLOSE_ON_FREE) */
    else if (c->fd >= 0)
        close(c->fd);
    if (c->ssl && !c->bev)
        SSL_free(c->ssl);
    vbuf_free_secure(&c->out); /* kept for a retry, it holds signed headers and the body */
    if (c->pool)
        https_pool_detach(c->pool);
    free(c);
}

/* Every handler brackets its work with enter/leave: a callback may cancel the
 * request or the request may finish, and the memory must outlive the handler. */
static void enter(https_conn *c) { c->busy++; }

static void leave(https_conn *c)
{
    if (--c->busy == 0 && (c->finished || c->cancelled))
        conn_free(c);
}

static bool gone(const https_conn *c) { return c->finished || c->cancelled; }

/* ---- keep-alive: back to the pool, or once more on a fresh connection ---- */

static int conn_open(https_conn *c);

/* The connection can carry another request: the head allowed it, the body's end
 * was read with nothing after it, the request went out whole, the peer has not
 * closed. A cancelled request never gets here: it has unread bytes. */
static bool reusable(const https_conn *c)
{
    return c->pool && c->keep_alive && !c->peer_closed && c->bev &&
           evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
           evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 &&
           (!c->ssl || SSL_get_shutdown(c->ssl) == 0);
}

static void to_pool(https_conn *c)
{
    https_pooled pc = {c->bev, c->ssl, c->conn_id, c->born_ms, c->served + 1};
    if (c->ssl)
        SSL_set_app_data(c->ssl, NULL);
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    c->bev = NULL;
    c->ssl = NULL;
    https_pool_put(c->pool, c->pool_key, &pc, c->rid);
}

/* A pooled connection died before the first byte of its answer: the server closed
 * it while it was idle, or as the request went out. The request goes once more on
 * a fresh connection, and the caller sees nothing of it. Not after a timeout (a
 * slow server may be working on it), never after a byte of the answer. */
static bool retry_fresh(https_conn *c, https_err err, const char *detail)
{
    if (!c->reused || c->retried || c->answered || c->cancelled ||
        (err != HTTPS_ERR_IO && err != HTTPS_ERR_TLS && err != HTTPS_ERR_TRUNCATED))
        return false;
    log_info(c->rid, "event=https_pool_retried conn=%lu host=%s err=\"%s\" detail=\"%s\"", c->conn_id,
             c->host, https_strerror(err), detail ? detail : "");
    c->conn_id = https_pool_note_retry(c->pool);
    if (c->ssl) {
        SSL_set_app_data(c->ssl, NULL);
        SSL_set_quiet_shutdown(c->ssl, 1); /* keeps the session resumable */
        SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    bufferevent_free(c->bev); /* inside its own callback: libevent defers the free */
    c->bev = NULL;
    c->ssl = NULL;
    c->reused = false;
    c->retried = true;
    c->served = 0;
    if (conn_open(c) < 0) {
        c->pending_err = HTTPS_ERR_NOMEM;
        snprintf(c->pending_detail, sizeof c->pending_detail, "cannot open a connection");
        struct timeval now = {0, 0};
        evtimer_add(c->phase_timer, &now);
    }
    return true;
}

static void finish(https_conn *c, https_err err, const char *detail)
{
    if (gone(c))
        return;
    if (err != HTTPS_OK && retry_fresh(c, err, detail))
        return;
    set_state(c, ST_DONE);
    c->finished = true;
    if (err == HTTPS_OK && reusable(c)) {
        to_pool(c); /* before on_done: the caller's next request may take it */
    } else if (err == HTTPS_OK && c->ssl) {
        /* a clean end: mark the TLS shutdown done, else OpenSSL flags the session
         * as bad when the connection is freed and it can no longer be resumed */
        SSL_set_quiet_shutdown(c->ssl, 1);
        SSL_shutdown(c->ssl);
    }
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    if (err != HTTPS_OK)
        log_debug(c->rid, "event=https_fail host=%s err=\"%s\" detail=\"%s\"", c->host,
                  https_strerror(err), detail ? detail : "");
    c->busy++;
    c->cb.on_done(c->ud, err, detail ? detail : https_strerror(err));
    c->busy--;
}

void https_cancel(https_conn *c)
{
    if (!c || c->cancelled)
        return;
    c->cancelled = true;
    if (c->busy == 0)
        conn_free(c);
}

/* ---- response handling ---- */

static int deliver(https_conn *c, const uint8_t *p, size_t n)
{
    if (n == 0 || !c->cb.on_body)
        return 0;
    c->busy++;
    int r = c->cb.on_body(c->ud, p, n);
    c->busy--;
    if (c->cancelled)
        return -1;
    if (r != 0) {
        finish(c, HTTPS_ERR_ABORTED, "aborted by the body callback");
        return -1;
    }
    return 0;
}

static int chunk_cb(void *ud, const uint8_t *data, size_t len)
{
    return deliver(ud, data, len);
}

/* Feeds body bytes from the input buffer; returns -1 when the request ended. */
static int read_body(https_conn *c, struct evbuffer *in)
{
    size_t n;
    while (!gone(c) && !c->paused && (n = evbuffer_get_contiguous_space(in)) > 0) {
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)n);
        if (c->body_kind == HTTP1_BODY_CHUNKED) {
            ptrdiff_t used = http1_chunked_feed(&c->chunked, p, n, chunk_cb, c);
            if (gone(c))
                return -1;
            if (used < 0) {
                finish(c, HTTPS_ERR_PROTOCOL, http1_strerror((int)used));
                return -1;
            }
            evbuffer_drain(in, (size_t)used);
            if (http1_chunked_done(&c->chunked)) {
                finish(c, HTTPS_OK, NULL);
                return -1;
            }
        } else if (c->body_kind == HTTP1_BODY_CONTENT_LENGTH) {
            size_t take = n < c->body_left ? n : (size_t)c->body_left;
            if (deliver(c, p, take) < 0)
                return -1;
            evbuffer_drain(in, take);
            c->body_left -= take;
            if (c->body_left == 0) {
                finish(c, HTTPS_OK, NULL);
                return -1;
            }
        } else { /* until close */
            if (deliver(c, p, n) < 0)
                return -1;
            evbuffer_drain(in, n);
        }
    }
    return 0;
}

/* Connection: close, alone or among other tokens of any Connection header. */
static bool says_close(const http1_headers *hs)
{
    for (size_t i = 0; i < hs->n; i++) {
        const http1_header *h = &hs->h[i];
        if (h->name_len != 10 || strncasecmp(h->name, "connection", 10) != 0)
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma ? comma : end;
            while (p < e && (*p == ' ' || *p == '\t'))
                p++;
            while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            if (e - p == 5 && strncasecmp(p, "close", 5) == 0)
                return true;
            p = comma ? comma + 1 : end;
        }
    }
    return false;
}

static int read_head(https_conn *c, struct evbuffer *in)
{
    for (;;) {
        size_t len = evbuffer_get_length(in);
        if (len == 0)
            return 0;
        size_t want = len < HTTP1_MAX_HEAD_SIZE ? len : HTTP1_MAX_HEAD_SIZE;
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)want);
        http1_response resp;
        int r = http1_parse_response(p, want, &resp);
        if (r == HTTP1_NEED_MORE && want < HTTP1_MAX_HEAD_SIZE)
            return 0;
        if (r < 0) {
            finish(c, HTTPS_ERR_PROTOCOL, http1_strerror(r == HTTP1_NEED_MORE ? HTTP1_ERR_HEAD_TOO_LARGE : r));
            return -1;
        }
        if (resp.status >= 100 && resp.status < 200) { /* interim: skip */
            evbuffer_drain(in, (size_t)r);
            continue;
        }
        c->body_kind = resp.body;
        c->body_left = resp.content_length;
        /* HTTP/1.0 and a body that ends with the connection leave nothing to reuse */
        c->keep_alive = resp.minor_version >= 1 && resp.body != HTTP1_BODY_UNTIL_CLOSE &&
                        !says_close(&resp.headers);
        if (c->cb.on_head) {
            c->busy++;
            int rc = c->cb.on_head(c->ud, &resp);
            c->busy--;
            if (c->cancelled)
                return -1;
            if (rc != 0) {
                finish(c, HTTPS_ERR_ABORTED, "aborted by the head callback");
                return -1;
            }
        }
        evbuffer_drain(in, (size_t)r);
        set_state(c, ST_BODY);
        if (c->body_kind == HTTP1_BODY_NONE ||
            (c->body_kind == HTTP1_BODY_CONTENT_LENGTH && c->body_left == 0)) {
            finish(c, HTTPS_OK, NULL);
            return -1;
        }
        if (c->body_kind == HTTP1_BODY_CHUNKED)
            http1_chunked_init(&c->chunked);
        return read_body(c, in);
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    https_conn *c = arg;
    enter(c);
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->st == ST_REQUEST_SENT && !c->answered && evbuffer_get_length(in) > 0) {
        c->answered = true; /* the answer started: no retry from here on */
        vbuf_free_secure(&c->out);
    }
    if (c->st == ST_REQUEST_SENT)
        read_head(c, in);
    else if (c->st == ST_BODY)
        read_body(c, in);
    else if (!gone(c))
        finish(c, HTTPS_ERR_PROTOCOL, "data before the request was sent");
    leave(c);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    https_conn *c = arg;
    if (c->bev && !c->paused && c->st == ST_BODY)
        on_read(c->bev, c);
}

void https_pause(https_conn *c, bool pause)
{
    if (!c || gone(c) || c->paused == pause)
        return;
    c->paused = pause;
    /* before the request is out, reading belongs to CONNECT and the handshake:
     * send_request applies the pause (a retry's fresh connection too) */
    if (!c->bev || c->st < ST_REQUEST_SENT)
        return;
    if (pause) {
        /* no read, so no idle timeout either: the caller's deadline still runs */
        bufferevent_disable(c->bev, EV_READ);
        return;
    }
    bufferevent_enable(c->bev, EV_READ);
    if (!c->resume)
        c->resume = event_new(c->ctx->base, -1, 0, on_resume, c);
    if (c->resume && evbuffer_get_length(bufferevent_get_input(c->bev)) > 0)
        event_active(c->resume, EV_TIMEOUT, 0); /* bytes read before the pause */
}

/* The end of the stream: complete only if the framing says so. */
static void on_eof(https_conn *c)
{
    if (c->st == ST_BODY && c->body_kind == HTTP1_BODY_UNTIL_CLOSE)
        finish(c, HTTPS_OK, NULL);
    else if (c->st == ST_BODY)
        finish(c, HTTPS_ERR_TRUNCATED, c->body_kind == HTTP1_BODY_CHUNKED
                                           ? "connection closed inside a chunked body"
                                           : "connection closed before content-length bytes");
    else
        finish(c, HTTPS_ERR_TRUNCATED, "connection closed before the response head");
}

static void tls_error(https_conn *c, short what)
{
    char detail[200];
    long vr = c->ssl ? SSL_get_verify_result(c->ssl) : X509_V_OK;
    if (c->st == ST_TLS_HANDSHAKE && vr != X509_V_OK) {
        snprintf(detail, sizeof detail, "%s", X509_verify_cert_error_string(vr));
        finish(c, HTTPS_ERR_CERT, detail);
        return;
    }
    unsigned long e = bufferevent_get_openssl_error(c->bev);
    if (e) {
        ERR_error_string_n(e, detail, sizeof detail);
        while (bufferevent_get_openssl_error(c->bev))
            ;
        finish(c, HTTPS_ERR_TLS, detail);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        on_eof(c);
        return;
    }
    int saved = EVUTIL_SOCKET_ERROR();
    snprintf(detail, sizeof detail, "%s", saved ? strerror(saved) : "connection reset");
    finish(c, c->st == ST_TLS_HANDSHAKE ? HTTPS_ERR_TLS : HTTPS_ERR_IO, detail);
}

static void on_event(struct bufferevent *bev, short what, void *arg);

/* Queues the request. -1 (nothing sent) when out of memory. */
static int send_request(https_conn *c)
{
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    evtimer_del(c->phase_timer);
    struct timeval idle = {c->idle_ms / 1000, (c->idle_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &idle, &idle);
    if (bufferevent_write(c->bev, c->out.data, c->out.len) < 0)
        return -1;
    if (!c->reused) /* else kept for a retry until the answer starts */
        vbuf_free_secure(&c->out); /* it held signed headers */
    bufferevent_enable(c->bev, c->paused ? EV_WRITE : EV_READ | EV_WRITE);
    if (c->paused)
        bufferevent_disable(c->bev, EV_READ);
    set_state(c, ST_REQUEST_SENT);
    return 0;
}

/* A pooled connection: the request goes out at once, no connect, no handshake. */
static void adopt(https_conn *c, const https_pooled *pc)
{
    c->bev = pc->bev;
    c->ssl = pc->ssl;
    c->conn_id = pc->id;
    c->born_ms = pc->born_ms;
    c->served = pc->requests;
    c->reused = true;
    if (c->ssl)
        SSL_set_app_data(c->ssl, c);
    if (send_request(c) < 0) { /* reported from the loop, like every failure */
        c->pending_err = HTTPS_ERR_NOMEM;
        snprintf(c->pending_detail, sizeof c->pending_detail, "cannot queue the request");
        struct timeval now = {0, 0};
        evtimer_add(c->phase_timer, &now);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    https_conn *c = arg;
    enter(c);
    if (gone(c)) {
        leave(c);
        return;
    }
    if (what & BEV_EVENT_CONNECTED) {
        if (c->st == ST_TLS_HANDSHAKE) {
            if (SSL_session_reused(c->ssl))
                c->ctx->resumed++;
            else
                c->ctx->full++;
            if (send_request(c) < 0)
                finish(c, HTTPS_ERR_NOMEM, "cannot queue the request");
        }
    } else if (what & BEV_EVENT_TIMEOUT) {
        finish(c, HTTPS_ERR_TIMEOUT_IDLE, "no data from the server");
    } else if (what & BEV_EVENT_EOF && !c->tls) {
        /* drain anything still buffered first; the connection ends here either way */
        c->peer_closed = true;
        struct evbuffer *in = bufferevent_get_input(c->bev);
        if (evbuffer_get_length(in))
            on_read(c->bev, c);
        if (!gone(c))
            on_eof(c);
    } else if (c->tls) {
        tls_error(c, what);
    } else {
        int saved = EVUTIL_SOCKET_ERROR();
        finish(c, HTTPS_ERR_IO, saved ? strerror(saved) : "connection error");
    }
    leave(c);
}

static int start_tls(https_conn *c)
{
    c->ssl = SSL_new(c->ctx->ssl_ctx);
    if (!c->ssl)
        return -1;
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, c->host, ip) == 1 || inet_pton(AF_INET6, c->host, ip) == 1;
    X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
    if (is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(vp, c->host) != 1)
            return -1;
    } else {
        /* SNI and a strict hostname check (no partial wildcards) */
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (SSL_set_tlsext_host_name(c->ssl, c->host) != 1 || SSL_set1_host(c->ssl, c->host) != 1)
            return -1;
    }
    SSL_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    SSL_set_app_data(c->ssl, c);
    char peer[280];
    peer_name(c, peer, sizeof peer);
    SSL_SESSION **cached = session_slot(c->ctx, peer, false);
    if (cached && *cached)
        SSL_set_session(c->ssl, *cached); /* the server may still insist on a full handshake */
    if (c->bev) { /* the plain bufferevent of the CONNECT phase: keep the fd */
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->bev = bufferevent_openssl_socket_new(c->ctx->base, c->fd, c->ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!c->bev)
        return -1;
    c->fd = -1; /* owned by the bufferevent now */
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1); /* framing decides completeness */
    bufferevent_setcb(c->bev, NULL, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    set_state(c, ST_TLS_HANDSHAKE);
    return 0;
}

static void after_tunnel(https_conn *c)
{
    if (c->tls) {
        if (start_tls(c) < 0)
            finish(c, HTTPS_ERR_TLS, "cannot start TLS");
        return;
    }
    if (c->bev) { /* the CONNECT phase's bufferevent does not own the fd */
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    c->bev = bufferevent_socket_new(c->ctx->base, c->fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!c->bev) {
        finish(c, HTTPS_ERR_NOMEM, "bufferevent");
        return;
    }
    c->fd = -1;
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    if (send_request(c) < 0)
        finish(c, HTTPS_ERR_NOMEM, "cannot queue the request");
}

static void on_connect_reply(struct bufferevent *bev, void *arg)
{
    https_conn *c = arg;
    enter(c);
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    size_t want = len < HTTP1_MAX_CONNECT_HEAD_SIZE ? len : HTTP1_MAX_CONNECT_HEAD_SIZE;
    http1_response resp;
    int r = http1_parse_response(evbuffer_pullup(in, (ev_ssize_t)want), want, &resp);
    if (r == HTTP1_NEED_MORE && want < HTTP1_MAX_CONNECT_HEAD_SIZE)
        goto out;
    if (r < 0) {
        finish(c, HTTPS_ERR_PROXY, "malformed reply to CONNECT");
        goto out;
    }
    if (resp.status != 200) { /* a real 200 status, not a substring (defect §10.5) */
        char detail[120];
        snprintf(detail, sizeof detail, "proxy answered %d %.*s", resp.status,
                 (int)(resp.reason_len > 60 ? 60 : resp.reason_len), resp.reason);
        finish(c, HTTPS_ERR_PROXY, detail);
        goto out;
    }
    if ((size_t)r != len) {
        finish(c, HTTPS_ERR_PROXY, "proxy sent data before the tunnel was used");
        goto out;
    }
    evbuffer_drain(in, (size_t)r);
    /* take the fd back from the plain bufferevent; TLS or plain HTTP runs on it */
    c->fd = bufferevent_getfd(bev);
    bufferevent_disable(bev, EV_READ | EV_WRITE);
    after_tunnel(c);
out:
    leave(c);
}

static void on_plain_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    https_conn *c = arg;
    enter(c);
    if (what & BEV_EVENT_EOF)
        finish(c, HTTPS_ERR_PROXY, "proxy closed the connection during CONNECT");
    else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        finish(c, HTTPS_ERR_PROXY, "proxy connection error during CONNECT");
    leave(c);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    https_conn *c = arg;
    enter(c);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        soerr = errno;
    if (soerr) {
        char detail[400];
        snprintf(detail, sizeof detail, "connect to %s: %s", c->via_proxy ? "proxy" : c->host,
                 strerror(soerr));
        finish(c, HTTPS_ERR_CONNECT, detail);
        goto out;
    }
    if (!c->via_proxy) {
        after_tunnel(c);
        goto out;
    }
    /* plain bufferevent for the CONNECT exchange; it must not close the fd */
    c->bev = bufferevent_socket_new(c->ctx->base, c->fd, BEV_OPT_DEFER_CALLBACKS);
    if (!c->bev) {
        finish(c, HTTPS_ERR_NOMEM, "bufferevent");
        goto out;
    }
    bufferevent_setcb(c->bev, on_connect_reply, NULL, on_plain_event, c);
    char line[600];
    int n = snprintf(line, sizeof line, "CONNECT %s%s%s:%u HTTP/1.1\r\nHost: %s%s%s:%u\r\n\r\n",
                     strchr(c->host, ':') ? "[" : "", c->host, strchr(c->host, ':') ? "]" : "",
                     c->port, strchr(c->host, ':') ? "[" : "", c->host,
                     strchr(c->host, ':') ? "]" : "", c->port);
    bufferevent_write(c->bev, line, (size_t)n);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    set_state(c, ST_CONNECT_SENT);
out:
    leave(c);
}

static void on_phase_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    https_conn *c = arg;
    enter(c);
    if (c->pending_err != HTTPS_OK)
        finish(c, c->pending_err, c->pending_detail);
    else
        finish(c, HTTPS_ERR_TIMEOUT_CONNECT, STATE_NAMES[c->st]);
    leave(c);
}

static void on_total_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    https_conn *c = arg;
    enter(c);
    finish(c, HTTPS_ERR_TIMEOUT_TOTAL, STATE_NAMES[c->st]);
    leave(c);
}

static int header_ok(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

static int build_request(https_conn *c, const https_request *req)
{
    vbuf *o = &c->out;
    bool v6 = strchr(c->host, ':') != NULL;
    bool default_port = c->port == (c->tls ? 443 : 80);
    if (vbuf_printf(o, "%s %s HTTP/1.1\r\nHost: %s%s%s", req->method, req->target, v6 ? "[" : "",
                    c->host, v6 ? "]" : "") < 0)
        return -1;
    if (!default_port && vbuf_printf(o, ":%u", c->port) < 0)
        return -1;
    if (vbuf_append_str(o, "\r\n") < 0)
        return -1;
    if (!req->pool && vbuf_append_str(o, "Connection: close\r\n") < 0)
        return -1;
    for (size_t i = 0; i < req->n_headers; i++) {
        const https_header *h = &req->headers[i];
        if (!header_ok(h->name) || !header_ok(h->value) || strchr(h->name, ':'))
            return -2;
        if (vbuf_printf(o, "%s: %s\r\n", h->name, h->value) < 0)
            return -1;
    }
    bool has_body = req->body_len > 0 || strcmp(req->method, "POST") == 0 ||
                    strcmp(req->method, "PUT") == 0;
    if (has_body && vbuf_printf(o, "Content-Length: %zu\r\n", req->body_len) < 0)
        return -1;
    if (vbuf_append_str(o, "\r\n") < 0 || vbuf_append(o, req->body, req->body_len) < 0)
        return -1;
    return 0;
}

/* Connects to the proxy or the host; the outcome, even an immediate failure, comes
 * back through the loop. -1 only when out of memory. */
static int conn_open(https_conn *c)
{
    char cerr[160];
    set_state(c, ST_CONNECTING);
    c->born_ms = https_pool_now_ms();
    c->fd = addr_connect(&c->target, true, cerr, sizeof cerr);
    if (c->fd < 0) {
        c->pending_err = HTTPS_ERR_CONNECT;
        snprintf(c->pending_detail, sizeof c->pending_detail, "%s", cerr);
        struct timeval now = {0, 0};
        evtimer_add(c->phase_timer, &now);
        return 0;
    }
    if (c->connect_ev)
        event_free(c->connect_ev);
    c->connect_ev = event_new(c->ctx->base, c->fd, EV_WRITE, on_connected, c);
    if (!c->connect_ev)
        return -1;
    event_add(c->connect_ev, NULL);
    struct timeval ctv = {c->connect_ms / 1000, (c->connect_ms % 1000) * 1000};
    evtimer_add(c->phase_timer, &ctv);
    return 0;
}

https_conn *https_start(https_ctx *ctx, const https_request *req, const https_callbacks *cb,
                        void *ud, char *err, size_t errlen)
{
    if (!req->host || !*req->host || strlen(req->host) >= 256 || !header_ok(req->host) ||
        !req->method || !req->target || req->target[0] != '/' || !header_ok(req->target) ||
        !header_ok(req->method) || !cb || !cb->on_done || req->port == 0 ||
        (req->pool && https_pool_ctx(req->pool) != ctx)) {
        snprintf(err, errlen, "bad request description");
        return NULL;
    }
    https_conn *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    c->fd = -1;
    c->tls = req->tls;
    c->via_proxy = req->proxy != NULL;
    snprintf(c->host, sizeof c->host, "%s", req->host);
    c->port = req->port;
    c->cb = *cb;
    c->ud = ud;
    c->idle_ms = req->idle_timeout_ms ? req->idle_timeout_ms : DEFAULT_IDLE_MS;
    c->connect_ms = req->connect_timeout_ms ? req->connect_timeout_ms : DEFAULT_CONNECT_MS;
    snprintf(c->rid, sizeof c->rid, "%s", req->rid ? req->rid : "-");
    if (req->proxy) {
        c->target = *req->proxy;
    } else {
        c->target.kind = ADDR_TCP;
        snprintf(c->target.host, sizeof c->target.host, "%s", c->host);
        c->target.port = c->port;
    }
    int br = build_request(c, req);
    if (br < 0) {
        snprintf(err, errlen, br == -2 ? "bad header" : "out of memory");
        conn_free(c);
        return NULL;
    }
    c->phase_timer = evtimer_new(ctx->base, on_phase_timer, c);
    if (!c->phase_timer)
        goto nomem;
    if (req->total_timeout_ms) {
        c->total_timer = evtimer_new(ctx->base, on_total_timer, c);
        if (!c->total_timer)
            goto nomem;
        struct timeval tv = {req->total_timeout_ms / 1000, (req->total_timeout_ms % 1000) * 1000};
        evtimer_add(c->total_timer, &tv);
    }
    if (req->pool) {
        c->pool = req->pool;
        https_pool_attach(c->pool);
        https_pool_key(c->pool_key, c->tls, c->host, c->port, req->proxy);
        https_pooled pc;
        if (https_pool_take(c->pool, c->pool_key, &pc, c->rid)) {
            adopt(c, &pc);
            return c;
        }
        c->conn_id = pc.id;
    }
    if (conn_open(c) < 0)
        goto nomem;
    return c;
nomem:
    snprintf(err, errlen, "out of memory");
    conn_free(c);
    return NULL;
}

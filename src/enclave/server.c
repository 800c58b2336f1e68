#include "enclave/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "common/secret.h"
#include "enclave/framing.h"
#include "net/evwipe.h"

#define DEFAULT_IDLE_MS 600000u
#define DEFAULT_MAX_OUTPUT (64u << 20)
#define PAUSE_OUTPUT (1u << 20) /* a stream stops reading Bedrock above this much unsent */
#define HUP_POLL_MS 500

typedef struct conn conn;

struct enclave_server {
    struct event_base *base;
    enclave_core *core;
    estate *st; /* the core's: the process's connection cap */
    struct evconnlistener *listener;
    size_t max_request, max_output;
    unsigned idle_ms;
    LIST_HEAD(, conn) conns;
    atomic_uint n_conns; /* read by the accepting thread to choose the least loaded */
};

struct conn {
    enclave_server *srv;
    LIST_ENTRY(conn) link;
    struct bufferevent *bev;
    struct event *resume;   /* runs the next buffered request outside any callback */
    struct event *hup_poll; /* while half-closed with a stream running */
    char rid[LOG_RID_LEN + 1];
    vbuf acc;               /* received bytes not yet consumed */
    jf_scanner scan;
    enclave_req *req;       /* the asynchronous request in progress, if any */
    bool busy;              /* a request is in progress */
    bool read_eof;
    bool closing;           /* close once the output is flushed */
    bool kill;              /* close now, dropping queued output */
    bool paused;            /* the parent reads slower than the answer comes */
    unsigned requests;
};

static void conn_free(conn *c)
{
    enclave_server *s = c->srv;
    if (c->req) {
        enclave_req *r = c->req;
        c->req = NULL;
        enclave_req_cancel(r); /* the parent went away: cancel upstream, free memory */
    }
    LIST_REMOVE(c, link);
    atomic_fetch_sub(&s->n_conns, 1);
    estate_conn_release(s->st);
    if (c->resume)
        event_free(c->resume);
    if (c->hup_poll)
        event_free(c->hup_poll);
    if (c->bev) {
        struct evbuffer *in = bufferevent_get_input(c->bev);
        evbuffer_drain_wiped(in, evbuffer_get_length(in));
        bufferevent_free(c->bev);
    }
    vbuf_free_secure(&c->acc);
    log_info(c->rid, "event=conn_closed requests=%u", c->requests);
    free(c);
}

static size_t pause_at(const conn *c)
{
    return c->srv->max_output / 4 < PAUSE_OUTPUT ? c->srv->max_output / 4 : PAUSE_OUTPUT;
}

/* Called when the output drained to the low watermark: half the pause threshold
 * while streaming (then the request reads Bedrock again), empty while closing. */
static void on_drained(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    size_t pending = evbuffer_get_length(bufferevent_get_output(c->bev));
    if (c->closing && pending == 0) {
        conn_free(c);
        return;
    }
    if (c->paused && pending <= pause_at(c) / 2) {
        c->paused = false;
        enclave_req_pause(c->req, false);
    }
}

/* Stop reading; close after whatever is queued has been written. Never frees
 * synchronously: the resume event or the drain callback does. */
static void close_after_flush(conn *c)
{
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    event_active(c->resume, EV_TIMEOUT, 0);
}

static void send_line(conn *c, const char *json, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) + len > c->srv->max_output) {
        /* the parent stopped reading: cut it off rather than buffer without bound */
        log_warn(c->rid, "event=parent_too_slow pending=%zu", evbuffer_get_length(out));
        c->closing = c->kill = true;
        event_active(c->resume, EV_TIMEOUT, 0);
        return;
    }
    evbuffer_add(out, json, len);
    evbuffer_add(out, "\n", 1);
}

static int sink_emit(void *ud, const char *json, size_t len)
{
    conn *c = ud;
    if (!c->closing)
        send_line(c, json, len);
    /* backpressure: a parent that reads slowly slows the request down, rather than
     * the answer piling up here (the hard cut at max_output stays the last resort) */
    if (!c->closing && c->req && !c->paused &&
        evbuffer_get_length(bufferevent_get_output(c->bev)) > pause_at(c)) {
        c->paused = true;
        enclave_req_pause(c->req, true);
    }
    return 0;
}

typedef enum after_kind { AFTER_NOTHING, AFTER_NEWLINE, AFTER_MORE } after_kind;

/* What follows a request's object: spaces and CRs, then a newline (framed), or
 * another byte (the next request), or nothing yet. */
static after_kind classify_after(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n')
            return AFTER_NEWLINE;
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return AFTER_MORE;
    }
    return AFTER_NOTHING;
}

/* Called when a reply is complete; the request's bytes are consumed, so the
 * buffer starts with what followed its object. The original answers one bare
 * request per connection and closes, and its peers read the reply to EOF;
 * veild frames with a newline and reuses the connection. A newline that was
 * sent but not read yet is still in the socket: look there too. */
static bool request_was_bare(conn *c)
{
    if (classify_after(c->acc.data, c->acc.len) != AFTER_NOTHING)
        return false;
    uint8_t next[64];
    ssize_t n = recv(bufferevent_getfd(c->bev), next, sizeof next, MSG_PEEK | MSG_DONTWAIT);
    return n <= 0 || classify_after(next, (size_t)n) == AFTER_NOTHING;
}

static void sink_done(void *ud)
{
    conn *c = ud;
    c->req = NULL;
    c->busy = false;
    c->paused = false;
    if (c->hup_poll)
        event_del(c->hup_poll);
    if (!c->closing && request_was_bare(c)) {
        close_after_flush(c);
        return;
    }
    /* the next buffered request runs from the loop, not inside this callback */
    event_active(c->resume, EV_TIMEOUT, 0);
}

static const enclave_sink SINK = {sink_emit, sink_done};

static void reply_error(conn *c, int (*fn)(const char *, vbuf *), const char *text)
{
    vbuf out = VBUF_INIT;
    if (fn(text, &out) == 0)
        send_line(c, (const char *)out.data, out.len);
    vbuf_free(&out);
}

static bool only_space(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
    return true;
}

/* Runs every complete request in the buffer, in order, one at a time. */
static void process(conn *c)
{
    enclave_server *s = c->srv;
    while (!c->busy && !c->closing) {
        size_t start = 0, end = 0;
        jf_status st = jf_scan(&c->scan, (const char *)c->acc.data, c->acc.len, &start, &end);
        if (st == JF_NEED_MORE) {
            if (c->acc.len > s->max_request) {
                char msg[96];
                snprintf(msg, sizeof msg, "Request too large (limit %zu bytes)", s->max_request);
                log_warn(c->rid, "event=request_too_large bytes=%zu", c->acc.len);
                reply_error(c, enclave_error_reply, msg);
                close_after_flush(c);
            } else if (c->read_eof) {
                if (!only_space(c->acc.data, c->acc.len))
                    reply_error(c, enclave_invalid_json_reply, "incomplete JSON object at end of input");
                close_after_flush(c);
            }
            return;
        }
        if (st != JF_COMPLETE) {
            reply_error(c, enclave_invalid_json_reply,
                        st == JF_TOO_DEEP ? "nesting too deep" : "expected a JSON object");
            close_after_flush(c);
            return;
        }
        if (end - start > s->max_request) {
            char msg[96];
            snprintf(msg, sizeof msg, "Request too large (limit %zu bytes)", s->max_request);
            reply_error(c, enclave_error_reply, msg);
            close_after_flush(c);
            return;
        }
        json_error_t jerr;
        json_t *req = json_loadb((const char *)c->acc.data + start, end - start, 0, &jerr);
        /* consume the request and wipe it: it carries ciphertext and maybe credentials */
        secure_wipe(c->acc.data, end);
        vbuf_consume(&c->acc, end);
        jf_reset(&c->scan);
        if (!req) {
            reply_error(c, enclave_invalid_json_reply, jerr.text);
            if (request_was_bare(c))
                close_after_flush(c);
            continue;
        }
        char rid[LOG_RID_LEN + 1];
        log_new_rid(rid);
        log_debug(rid, "event=request_received conn=%s bytes=%zu", c->rid, end - start);
        c->requests++;
        c->busy = true;
        enclave_req *r = enclave_handle(s->core, req, &SINK, c, rid);
        json_decref(req);
        if (c->busy)
            c->req = r;
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (c->kill ||
        (c->closing && evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)) {
        conn_free(c);
        return;
    }
    if (c->closing)
        return; /* on_drained frees it */
    process(c);
    /* keep reading while a stream runs: that is how a disconnect is seen */
    if (!c->closing && !c->read_eof && c->acc.len <= c->srv->max_request)
        bufferevent_enable(c->bev, EV_READ);
}

static void on_read(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t n = evbuffer_get_length(in);
    /* secure growth: the buffer holds SET_CREDENTIALS and ciphertext */
    if (vbuf_reserve_secure(&c->acc, n) < 0) {
        conn_free(c);
        return;
    }
    evbuffer_copyout(in, c->acc.data + c->acc.len, n);
    evbuffer_drain_wiped(in, n);
    c->acc.len += n;
    if (c->busy) {
        /* a request is running: hold the next one, but do not read without bound */
        if (c->acc.len > c->srv->max_request)
            bufferevent_disable(bev, EV_READ);
        return;
    }
    process(c);
}

/* Half-close and close look the same to read(); POLLHUP tells them apart. */
static bool peer_gone(conn *c)
{
    struct pollfd p = {bufferevent_getfd(c->bev), POLLOUT, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

static void on_hup_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    if (peer_gone(c)) {
        log_info(c->rid, "event=parent_disconnected during=stream");
        conn_free(c);
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    conn *c = arg;
    if (what & BEV_EVENT_EOF) {
        c->read_eof = true;
        if (c->closing)
            return;
        if (!c->busy)
            process(c); /* an unframed request completes at EOF */
        if (c->closing)
            return;
        if (!c->busy) {
            close_after_flush(c);
            return;
        }
        if (peer_gone(c)) {
            log_info(c->rid, "event=parent_disconnected during=stream");
            conn_free(c);
            return;
        }
        /* half-closed, as a parent may do after its request: keep streaming, watch for HUP */
        struct timeval tv = {0, HUP_POLL_MS * 1000};
        event_add(c->hup_poll, &tv);
        return;
    }
    if (what & BEV_EVENT_TIMEOUT) {
        if (c->busy) { /* streaming: the request has its own deadline */
            bufferevent_enable(c->bev, EV_READ);
            return;
        }
        log_info(c->rid, "event=conn_idle_timeout");
        conn_free(c);
        return;
    }
    conn_free(c); /* error: reset by the parent */
}

void enclave_server_refuse(int fd, unsigned max_connections)
{
    char msg[96];
    vbuf out = VBUF_INIT;
    snprintf(msg, sizeof msg, "Too many connections (limit %u)", max_connections);
    log_warn(NULL, "event=conn_refused reason=too_many_connections limit=%u", max_connections);
    if (enclave_busy_reply(msg, &out) == 0 && vbuf_append(&out, "\n", 1) == 0) {
        /* best effort on a fresh socket: its buffer is empty, a short line fits */
        ssize_t w = send(fd, out.data, out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)w;
    }
    vbuf_free(&out);
    close(fd);
}

void enclave_server_reserve(enclave_server *s) { atomic_fetch_add(&s->n_conns, 1); }
void enclave_server_unreserve(enclave_server *s) { atomic_fetch_sub(&s->n_conns, 1); }

void enclave_server_adopt(enclave_server *s, int fd)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        atomic_fetch_sub(&s->n_conns, 1);
        estate_conn_release(s->st);
        return;
    }
    c->srv = s;
    log_new_rid(c->rid);
    LIST_INSERT_HEAD(&s->conns, c, link); /* counted: conn_free gives both counts back */
    evutil_make_socket_nonblocking(fd);
    c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->resume = event_new(s->base, -1, 0, on_resume, c);
    c->hup_poll = event_new(s->base, -1, EV_PERSIST, on_hup_poll, c);
    if (!c->bev || !c->resume || !c->hup_poll) {
        if (!c->bev)
            close(fd);
        conn_free(c);
        return;
    }
    jf_reset(&c->scan);
    bufferevent_setcb(c->bev, on_read, on_drained, on_event, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, pause_at(c) / 2, 0);
    struct timeval idle = {s->idle_ms / 1000, (s->idle_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, &idle, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    log_info(c->rid, "event=conn_accepted conns=%u", atomic_load(&s->n_conns));
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    enclave_server *s = arg;
    if (!estate_conn_take(s->st)) {
        enclave_server_refuse(fd, estate_max_connections(s->st));
        return;
    }
    enclave_server_reserve(s);
    enclave_server_adopt(s, fd);
}

enclave_server *enclave_server_new(struct event_base *base, enclave_core *core, int listen_fd,
                                   const enclave_server_config *cfg, char *err, size_t errlen)
{
    enclave_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        close(listen_fd);
        return NULL;
    }
    s->base = base;
    s->core = core;
    s->st = enclave_core_state(core);
    atomic_init(&s->n_conns, 0);
    LIST_INIT(&s->conns);
    s->max_request = cfg && cfg->max_request ? cfg->max_request : ENCLAVE_DEFAULT_MAX_REQUEST;
    s->max_output = cfg && cfg->max_pending_output ? cfg->max_pending_output : DEFAULT_MAX_OUTPUT;
    s->idle_ms = cfg && cfg->idle_timeout_ms ? cfg->idle_timeout_ms : DEFAULT_IDLE_MS;
    if (listen_fd < 0)
        return s;
    s->listener = evconnlistener_new(base, on_accept, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                     -1, listen_fd);
    if (!s->listener) {
        snprintf(err, errlen, "cannot listen: %s", strerror(errno));
        close(listen_fd);
        free(s);
        return NULL;
    }
    return s;
}

void enclave_server_stop_accepting(enclave_server *s)
{
    if (s->listener)
        evconnlistener_disable(s->listener);
}

unsigned enclave_server_connections(const enclave_server *s) { return atomic_load(&s->n_conns); }

void enclave_server_free(enclave_server *s)
{
    if (!s)
        return;
    while (!LIST_EMPTY(&s->conns))
        conn_free(LIST_FIRST(&s->conns));
    if (s->listener)
        evconnlistener_free(s->listener);
    free(s);
}

/* proxy_conn — one client connection of veil-proxy, from accept to close: the
 * CONNECT head and its deadline, error statuses (flushed, then the input drained
 * until EOF), the client's bufferevent callbacks and the idle and linger timers.
 * What lies upstream (resolving, connecting, the tunnel) is proxy_upstream.c.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/proxy_int.h"

static const char *const STATE_NAMES[] = {"head", "resolving", "connecting", "tunnel", "closing"};

/* ---- teardown ---- */

/* Frees c. Callers return right after: c is gone. */
void proxy_conn_close(conn *c, const char *reason)
{
    proxy *p = c->p;
    log_info(c->rid,
             "event=closed reason=%s state=%s host=%s port=%u status=%d bytes_up=%llu "
             "bytes_down=%llu duration_ms=%ld",
             reason, STATE_NAMES[c->state], c->host[0] ? c->host : "-", c->port, c->status,
             (unsigned long long)c->bytes_up, (unsigned long long)c->bytes_down,
             proxy_ms_since(&c->t_start));
    proxy_up_drop(c);
    if (c->client)
        bufferevent_free(c->client);
    if (c->timer)
        event_free(c->timer);
    LIST_REMOVE(c, link);
    p->n_conns--;
    free(c);
    proxy_maybe_finish(p);
}

/* ---- error statuses ---- */

typedef struct status_text {
    int status;
    const char *phrase;
    const char *body;
} status_text;

static const status_text STATUSES[] = {
    {400, "Bad Request", "malformed CONNECT request\n"},
    {403, "Forbidden", "destination not allowed\n"},
    {405, "Method Not Allowed", "only CONNECT is supported\n"},
    {502, "Bad Gateway", "could not connect to the destination\n"},
    {503, "Service Unavailable", "too many connections\n"},
    {504, "Gateway Timeout", "timed out\n"},
};

/* The full response for an error status into out; returns its length. */
size_t proxy_format_status(int status, char *out, size_t n)
{
    const status_text *st = &STATUSES[3];
    for (size_t i = 0; i < sizeof STATUSES / sizeof STATUSES[0]; i++)
        if (STATUSES[i].status == status)
            st = &STATUSES[i];
    int len = snprintf(out, n,
                       "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                       "%sConnection: close\r\n\r\n%s",
                       st->status, st->phrase, strlen(st->body),
                       st->status == 405 ? "Allow: CONNECT\r\n" : "", st->body);
    return len < 0 ? 0 : (size_t)len < n ? (size_t)len : n - 1;
}

/* Answers an error status and closes: flush it, shut down our write side, then drain
 * the client's input until its EOF (or the linger deadline), so unread request bytes
 * cannot turn our close into a reset that destroys the response in flight. error (or
 * NULL) is logged as the why. */
void proxy_conn_respond(conn *c, int status, const char *reason, const char *error)
{
    proxy_up_drop(c);
    c->status = status;
    c->reason = reason;
    c->state = CS_CLOSING;
    if (error)
        log_info(c->rid, "event=denied status=%d reason=%s host=%s port=%u error=\"%s\"", status,
                 reason, c->host[0] ? c->host : "-", c->port, error);
    else
        log_info(c->rid, "event=denied status=%d reason=%s host=%s port=%u", status, reason,
                 c->host[0] ? c->host : "-", c->port);
    char resp[256];
    size_t n = proxy_format_status(status, resp, sizeof resp);
    struct evbuffer *in = bufferevent_get_input(c->client);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_write(c->client, resp, n);
    bufferevent_enable(c->client, c->client_eof ? EV_WRITE : EV_READ | EV_WRITE);
    struct timeval tv = proxy_secs(PROXY_LINGER_TIMEOUT_S);
    evtimer_add(c->timer, &tv);
}

/* ---- the CONNECT head ---- */

static void try_parse_head(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->client);
    size_t len = evbuffer_get_length(in);
    if (len > HTTP1_MAX_CONNECT_HEAD_SIZE)
        len = HTTP1_MAX_CONNECT_HEAD_SIZE;
    const unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)len);
    if (!data && len) {
        proxy_conn_respond(c, 502, "out_of_memory", NULL);
        return;
    }
    /* the parser can only move on at a line end (or at the size limit): a head dribbled
     * in byte by byte is not rescanned on every byte */
    size_t seen = c->head_seen;
    c->head_seen = len;
    if (len < HTTP1_MAX_CONNECT_HEAD_SIZE && seen < len && !memchr(data + seen, '\n', len - seen))
        return;
    http1_connect req;
    int rc = http1_parse_connect(data, len, &req);
    if (rc == HTTP1_NEED_MORE)
        return;
    if (rc == HTTP1_ERR_NOT_CONNECT) {
        proxy_conn_respond(c, 405, "not_connect", NULL);
        return;
    }
    if (rc < 0) {
        proxy_conn_respond(c, 400, "bad_request", http1_strerror(rc));
        return;
    }
    evbuffer_drain(in, (size_t)rc); /* what is left is tunnel data, forwarded later */
    proxy_up_open(c, &req);
}

/* ---- client callbacks and timers ---- */

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    switch (c->state) {
    case CS_HEAD:
        try_parse_head(c);
        break;
    case CS_TUNNEL:
        proxy_tunnel_relay(c, bev, c->up, &c->bytes_up, &c->client_paused);
        break;
    case CS_CLOSING: {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        break;
    }
    default:
        break; /* resolving/connecting: pipelined bytes wait, bounded by the watermark */
    }
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    if (c->state == CS_TUNNEL) {
        proxy_now(&c->t_last); /* a slow reader draining its buffer is not idle */
        proxy_tunnel_drained(c, true);
        return;
    }
    if (c->state != CS_CLOSING || evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (c->client_eof) {
        proxy_conn_close(c, c->reason);
        return;
    }
    if (!c->client_shut) {
        shutdown(bufferevent_getfd(bev), SHUT_WR);
        c->client_shut = true;
    }
}

static void client_event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn *c = arg;
    if (c->state == CS_TUNNEL) {
        proxy_tunnel_event(c, true, what);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        proxy_conn_close(c, c->state == CS_CLOSING ? c->reason : "client_error");
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    c->client_eof = true;
    switch (c->state) {
    case CS_HEAD:
        proxy_conn_close(c, "client_eof_in_head");
        return;
    case CS_CLOSING:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            proxy_conn_close(c, c->reason);
        return;
    default:
        /* resolving/connecting: a half-close. Keep going; the EOF is passed upstream
         * after the bytes that came before it. */
        return;
    }
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    switch (c->state) {
    case CS_HEAD:
        proxy_conn_respond(c, 504, "head_timeout", NULL);
        return;
    case CS_RESOLVING:
        proxy_conn_respond(c, 504, "resolve_timeout", NULL);
        return;
    case CS_TUNNEL: {
        long idle_ms = c->p->cfg->idle_timeout_s * 1000L;
        long quiet = proxy_ms_since(&c->t_last);
        if (quiet >= idle_ms) {
            proxy_conn_close(c, "idle_timeout");
            return;
        }
        long left = idle_ms - quiet;
        struct timeval tv = {left / 1000, (left % 1000) * 1000};
        evtimer_add(c->timer, &tv);
        return;
    }
    case CS_CLOSING:
        proxy_conn_close(c, c->reason); /* the linger deadline */
        return;
    default:
        return;
    }
}

/* A connection for an accepted fd: the client bufferevent, the head deadline.
 * NULL (fd closed, logged) when out of memory. */
conn *proxy_conn_new(proxy *p, int fd, const struct sockaddr *sa, const char *rid, const char *peer)
{
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        log_error(rid, "event=accept_failed error=\"out of memory\"");
        return NULL;
    }
    c->p = p;
    c->connect_fd = -1;
    snprintf(c->rid, sizeof c->rid, "%s", rid);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    proxy_now(&c->t_start);
    c->t_last = c->t_start;
    c->state = CS_HEAD;
    if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6))
        proxy_set_nodelay(fd);
    c->client = bufferevent_socket_new(p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(p->base, conn_timer_cb, c);
    if (!c->client || !c->timer) {
        if (c->client)
            bufferevent_free(c->client);
        else
            close(fd);
        if (c->timer)
            event_free(c->timer);
        free(c);
        log_error(rid, "event=accept_failed error=\"out of memory\"");
        return NULL;
    }
    LIST_INSERT_HEAD(&p->conns, c, link);
    p->n_conns++;
    bufferevent_setcb(c->client, client_read_cb, client_write_cb, client_event_cb, c);
    /* bounds what a client can make us buffer before the tunnel exists */
    bufferevent_setwatermark(c->client, EV_READ, 0, PROXY_WATERMARK);
    bufferevent_setwatermark(c->client, EV_WRITE, PROXY_WATERMARK / 2, 0);
    bufferevent_enable(c->client, EV_READ | EV_WRITE);
    /* a client that dribbles a head is bounded by its own deadline, not by the
     * (often longer) upstream connect timeout */
    struct timeval tv = proxy_secs(p->cfg->head_timeout_s);
    evtimer_add(c->timer, &tv);
    return c;
}

#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <linux/vm_sockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/http1.h"
#include "common/log.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

#define ACCEPT_RETRY_MS 100 /* after EMFILE and friends: let a few connections close */
#define STOP_GRACE_S 2      /* at shutdown, wait this long for cancelled DNS lookups */

static const char CONNECT_OK[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

/* A connection's life. One log line per transition that matters (accepted, denied,
 * connected, closed). */
typedef enum conn_state {
    CS_HEAD,       /* reading the CONNECT head */
    CS_RESOLVING,  /* evdns lookup in flight */
    CS_CONNECTING, /* non-blocking TCP connects, one address after another */
    CS_TUNNEL,     /* 200 sent; relaying both ways */
    CS_CLOSING,    /* an error status is flushing; then input is drained until EOF */
} conn_state;

static const char *const STATE_NAMES[] = {"head", "resolving", "connecting", "tunnel", "closing"};

typedef struct proxy proxy;
typedef struct conn conn;

/* An evdns lookup can outlive the connection that started it: after
 * evdns_getaddrinfo_cancel() the callback still runs once (later, with
 * EVUTIL_EAI_CANCEL). So the callback gets this small record, never the conn itself. */
typedef struct dns_lookup {
    proxy *p;
    conn *c; /* NULL once the connection is gone */
    struct evdns_getaddrinfo_request *req;
} dns_lookup;

struct conn {
    proxy *p;
    LIST_ENTRY(conn) link;
    char rid[LOG_RID_LEN + 1];
    char peer[96];
    conn_state state;
    struct bufferevent *client, *up;
    struct event *timer;      /* head deadline, DNS deadline, idle check, linger deadline */
    struct event *connect_ev; /* connect_fd writable, or the connect timeout */
    int connect_fd;
    dns_lookup *dns;
    char host[HTTP1_HOST_BUF]; /* normalised CONNECT host; "" until the head is parsed */
    uint16_t port;
    struct sockaddr_storage addrs[PROXY_MAX_ADDRS];
    socklen_t addr_lens[PROXY_MAX_ADDRS];
    size_t n_addrs, next_addr;
    size_t head_seen; /* bytes of the head already scanned for a line end */
    int last_errno;   /* of the last failed connect attempt (ETIMEDOUT for a timeout) */
    char ip[INET6_ADDRSTRLEN];
    uint64_t bytes_up, bytes_down; /* client->upstream, upstream->client */
    struct timespec t_start, t_last;
    bool client_eof, up_eof;       /* that side's read direction ended */
    bool client_shut, up_shut;     /* we shut down that side's write direction */
    bool client_paused, up_paused; /* reading stopped: the other side's output is full */
    int status;                    /* the status line sent (200 or an error), 0 before */
    const char *reason;            /* why the connection ends */
};

struct proxy {
    const proxy_config *cfg;
    struct event_base *base;
    struct evdns_base *dns;
    struct evconnlistener *listener;
    struct event *sig_term, *sig_int, *accept_retry, *stop_timer;
    LIST_HEAD(, conn) conns;
    long n_conns;
    long dns_pending;
    bool stopping;
};

/* ---- small helpers ---- */

static void now_mono(struct timespec *ts) { clock_gettime(CLOCK_MONOTONIC, ts); }

static long ms_since(const struct timespec *t)
{
    struct timespec n;
    now_mono(&n);
    return (long)(n.tv_sec - t->tv_sec) * 1000L + (n.tv_nsec - t->tv_nsec) / 1000000L;
}

static struct timeval secs(long s)
{
    struct timeval tv = {s, 0};
    return tv;
}

static const char *format_ip(const struct sockaddr *sa, char *out, size_t n)
{
    const void *a = NULL;
    if (sa->sa_family == AF_INET)
        a = &((const struct sockaddr_in *)sa)->sin_addr;
    else if (sa->sa_family == AF_INET6)
        a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (!a || !inet_ntop(sa->sa_family, a, out, (socklen_t)n))
        snprintf(out, n, "?");
    return out;
}

static void format_peer(const struct sockaddr *sa, int salen, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    if (!sa || salen <= 0) {
        snprintf(out, n, "-");
    } else if (sa->sa_family == AF_INET) {
        snprintf(out, n, "tcp:%s:%u", format_ip(sa, ip, sizeof ip),
                 ntohs(((const struct sockaddr_in *)sa)->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        snprintf(out, n, "tcp:[%s]:%u", format_ip(sa, ip, sizeof ip),
                 ntohs(((const struct sockaddr_in6 *)sa)->sin6_port));
    } else if (sa->sa_family == AF_VSOCK) {
        const struct sockaddr_vm *svm = (const struct sockaddr_vm *)sa;
        snprintf(out, n, "vsock:%u:%u", svm->svm_cid, svm->svm_port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, n, "unix");
    } else {
        snprintf(out, n, "family-%d", sa->sa_family);
    }
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* best effort */
}

static void maybe_finish(proxy *p)
{
    if (p->stopping && p->n_conns == 0 && p->dns_pending == 0)
        event_base_loopbreak(p->base);
}

/* ---- connection teardown ---- */

/* Forgets everything on the upstream side: a DNS lookup, a pending connect, the tunnel. */
static void drop_upstream(conn *c)
{
    if (c->dns) {
        dns_lookup *d = c->dns;
        c->dns = NULL;
        d->c = NULL;
        if (d->req)
            evdns_getaddrinfo_cancel(d->req); /* the callback still runs, and frees d */
    }
    if (c->connect_ev) {
        event_free(c->connect_ev);
        c->connect_ev = NULL;
    }
    if (c->connect_fd >= 0) {
        close(c->connect_fd);
        c->connect_fd = -1;
    }
    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
}

/* Frees c. Callers return right after: c is gone. */
static void conn_close(conn *c, const char *reason)
{
    proxy *p = c->p;
    log_info(c->rid,
             "event=closed reason=%s state=%s host=%s port=%u status=%d bytes_up=%llu "
             "bytes_down=%llu duration_ms=%ld",
             reason, STATE_NAMES[c->state], c->host[0] ? c->host : "-", c->port, c->status,
             (unsigned long long)c->bytes_up, (unsigned long long)c->bytes_down,
             ms_since(&c->t_start));
    drop_upstream(c);
    if (c->client)
        bufferevent_free(c->client);
    if (c->timer)
        event_free(c->timer);
    LIST_REMOVE(c, link);
    p->n_conns--;
    free(c);
    maybe_finish(p);
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
static size_t format_status(int status, char *out, size_t n)
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
static void respond(conn *c, int status, const char *reason, const char *error)
{
    drop_upstream(c);
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
    size_t n = format_status(status, resp, sizeof resp);
    struct evbuffer *in = bufferevent_get_input(c->client);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_write(c->client, resp, n);
    bufferevent_enable(c->client, c->client_eof ? EV_WRITE : EV_READ | EV_WRITE);
    struct timeval tv = secs(PROXY_LINGER_TIMEOUT_S);
    evtimer_add(c->timer, &tv);
}

/* ---- tunnel ---- */

static bool tunnel_done(const conn *c)
{
    return c->client_eof && c->up_eof && c->client_shut && c->up_shut;
}

/* Moves what `from` has read into the output of `to`. */
static void relay(conn *c, struct bufferevent *from, struct bufferevent *to, uint64_t *count,
                  bool *paused)
{
    struct evbuffer *in = bufferevent_get_input(from);
    struct evbuffer *out = bufferevent_get_output(to);
    size_t n = evbuffer_get_length(in);
    if (n == 0)
        return;
    evbuffer_add_buffer(out, in);
    *count += n;
    now_mono(&c->t_last);
    if (evbuffer_get_length(out) >= PROXY_WATERMARK) {
        bufferevent_disable(from, EV_READ); /* backpressure: resumed by to's write callback */
        *paused = true;
        log_debug(c->rid, "event=paused side=%s buffered=%zu",
                  from == c->client ? "client" : "upstream", evbuffer_get_length(out));
    }
}

/* x's output drained below the low watermark (or to empty). Resume the side feeding
 * it, and pass a pending EOF on once everything before it was written. Returns false
 * if the connection was closed. */
static bool tunnel_drained(conn *c, bool x_is_client)
{
    struct bufferevent *x = x_is_client ? c->client : c->up;
    struct bufferevent *other = x_is_client ? c->up : c->client;
    bool *other_paused = x_is_client ? &c->up_paused : &c->client_paused;
    bool other_eof = x_is_client ? c->up_eof : c->client_eof;
    bool *x_shut = x_is_client ? &c->client_shut : &c->up_shut;
    size_t left = evbuffer_get_length(bufferevent_get_output(x));
    if (*other_paused && left < PROXY_WATERMARK) {
        *other_paused = false;
        log_debug(c->rid, "event=resumed side=%s buffered=%zu",
                  x_is_client ? "upstream" : "client", left);
        if (!other_eof)
            bufferevent_enable(other, EV_READ);
    }
    if (left == 0 && other_eof && !*x_shut) {
        /* half-close: the other side is done sending, and all it sent is written */
        shutdown(bufferevent_getfd(x), SHUT_WR);
        *x_shut = true;
        if (tunnel_done(c)) {
            conn_close(c, "done");
            return false;
        }
    }
    return true;
}

static void tunnel_event(conn *c, bool x_is_client, short what)
{
    if (what & BEV_EVENT_ERROR) {
        int e = EVUTIL_SOCKET_ERROR();
        log_debug(c->rid, "event=socket_error side=%s error=\"%s\"",
                  x_is_client ? "client" : "upstream", strerror(e));
        conn_close(c, x_is_client ? "client_error" : "upstream_error");
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    if (x_is_client) {
        c->client_eof = true;
        relay(c, c->client, c->up, &c->bytes_up, &c->client_paused);
    } else {
        c->up_eof = true;
        relay(c, c->up, c->client, &c->bytes_down, &c->up_paused);
    }
    /* the other side's output may already be empty: then its write callback will not
     * run again, so pass the EOF on here */
    tunnel_drained(c, !x_is_client);
}

/* ---- bufferevent callbacks ---- */

static void try_parse_head(conn *c);

static void client_read_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    switch (c->state) {
    case CS_HEAD:
        try_parse_head(c);
        break;
    case CS_TUNNEL:
        relay(c, bev, c->up, &c->bytes_up, &c->client_paused);
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
        now_mono(&c->t_last); /* a slow reader draining its buffer is not idle */
        tunnel_drained(c, true);
        return;
    }
    if (c->state != CS_CLOSING || evbuffer_get_length(bufferevent_get_output(bev)) != 0)
        return;
    if (c->client_eof) {
        conn_close(c, c->reason);
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
        tunnel_event(c, true, what);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        conn_close(c, c->state == CS_CLOSING ? c->reason : "client_error");
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    c->client_eof = true;
    switch (c->state) {
    case CS_HEAD:
        conn_close(c, "client_eof_in_head");
        return;
    case CS_CLOSING:
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            conn_close(c, c->reason);
        return;
    default:
        /* resolving/connecting: a half-close. Keep going; the EOF is passed upstream
         * after the bytes that came before it. */
        return;
    }
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    relay(c, bev, c->client, &c->bytes_down, &c->up_paused);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    now_mono(&c->t_last);
    tunnel_drained(c, false);
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    tunnel_event(arg, false, what);
}

/* ---- connecting ---- */

static void on_connected(conn *c, int fd)
{
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr - 1];
    set_nodelay(fd);
    c->up = bufferevent_socket_new(c->p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->up) {
        close(fd);
        respond(c, 502, "out_of_memory", NULL);
        return;
    }
    bufferevent_setcb(c->up, up_read_cb, up_write_cb, up_event_cb, c);
    bufferevent_setwatermark(c->up, EV_WRITE, PROXY_WATERMARK / 2, 0);
    c->state = CS_TUNNEL;
    c->status = 200;
    format_ip(sa, c->ip, sizeof c->ip);
    log_info(c->rid, "event=connected host=%s port=%u ip=%s elapsed_ms=%ld", c->host, c->port,
             c->ip, ms_since(&c->t_start));
    /* the 200 only now, after the upstream connect succeeded */
    bufferevent_write(c->client, CONNECT_OK, sizeof CONNECT_OK - 1);
    /* bytes that came after the head go first (the original dropped them, §10.21) */
    relay(c, c->client, c->up, &c->bytes_up, &c->client_paused);
    bufferevent_enable(c->up, EV_READ | EV_WRITE);
    if (!c->client_eof && !c->client_paused)
        bufferevent_enable(c->client, EV_READ);
    now_mono(&c->t_last);
    struct timeval tv = secs(c->p->cfg->idle_timeout_s);
    evtimer_add(c->timer, &tv);
    if (c->client_eof)
        tunnel_drained(c, false); /* the client half-closed while we were connecting */
}

static void connect_ev_cb(evutil_socket_t fd, short what, void *arg);

/* Tries the remaining addresses in turn until one connect is in progress or done. */
static void try_next_addr(conn *c)
{
    while (c->next_addr < c->n_addrs) {
        size_t i = c->next_addr++;
        const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[i];
        char ip[INET6_ADDRSTRLEN];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->last_errno = errno;
            continue;
        }
        if (connect(fd, sa, c->addr_lens[i]) == 0) {
            on_connected(c, fd);
            return;
        }
        if (errno == EINPROGRESS) {
            c->connect_fd = fd;
            c->connect_ev = event_new(c->p->base, fd, EV_WRITE, connect_ev_cb, c);
            struct timeval tv = secs(c->p->cfg->connect_timeout_s);
            if (c->connect_ev && event_add(c->connect_ev, &tv) == 0)
                return;
            c->last_errno = ENOMEM;
            drop_upstream(c);
            continue;
        }
        c->last_errno = errno;
        log_info(c->rid, "event=connect_failed host=%s port=%u ip=%s error=\"%s\"", c->host,
                 c->port, format_ip(sa, ip, sizeof ip), strerror(errno));
        close(fd);
    }
    if (c->last_errno == ETIMEDOUT)
        respond(c, 504, "connect_timeout", NULL);
    else
        respond(c, 502, "connect_failed", NULL);
}

static void connect_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    conn *c = arg;
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr - 1];
    char ip[INET6_ADDRSTRLEN];
    event_free(c->connect_ev);
    c->connect_ev = NULL;
    c->connect_fd = -1;
    int e = ETIMEDOUT;
    if (!(what & EV_TIMEOUT)) {
        socklen_t len = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
            e = errno;
        if (e == 0) {
            on_connected(c, fd);
            return;
        }
    }
    c->last_errno = e;
    log_info(c->rid, "event=connect_failed host=%s port=%u ip=%s error=\"%s\"", c->host, c->port,
             format_ip(sa, ip, sizeof ip), strerror(e));
    close(fd);
    try_next_addr(c);
}

static void start_connect(conn *c)
{
    c->state = CS_CONNECTING;
    c->next_addr = 0;
    evtimer_del(c->timer); /* each attempt has its own timeout */
    try_next_addr(c);
}

static void add_addr(conn *c, const struct sockaddr *sa, socklen_t len)
{
    for (size_t i = 0; i < c->n_addrs; i++)
        if (c->addr_lens[i] == len && memcmp(&c->addrs[i], sa, len) == 0)
            return;
    if (c->n_addrs >= PROXY_MAX_ADDRS || len > sizeof c->addrs[0])
        return;
    memcpy(&c->addrs[c->n_addrs], sa, len);
    c->addr_lens[c->n_addrs++] = len;
}

/* ---- resolving ---- */

static void dns_done(int result, struct evutil_addrinfo *ai, void *arg)
{
    dns_lookup *d = arg;
    proxy *p = d->p;
    conn *c = d->c;
    p->dns_pending--;
    free(d);
    if (!c) {
        if (ai)
            evutil_freeaddrinfo(ai);
        maybe_finish(p);
        return;
    }
    c->dns = NULL;
    if (result != 0) {
        if (ai)
            evutil_freeaddrinfo(ai);
        respond(c, 502, "resolve_failed", evutil_gai_strerror(result));
        return;
    }
    size_t refused = 0;
    for (struct evutil_addrinfo *a = ai; a; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || !a->ai_addr)
            continue;
        /* h2o's connect ACL: every resolved address is checked, so neither DNS
         * rebinding nor a poisoned answer can point an allowed name at IMDS or loopback */
        const char *why = proxy_allowlist_check_addr(p->cfg->allow, c->host, c->port, a->ai_addr);
        if (why) {
            char ip[INET6_ADDRSTRLEN];
            log_warn(c->rid, "event=address_refused host=%s port=%u ip=%s reason=%s", c->host,
                     c->port, format_ip(a->ai_addr, ip, sizeof ip), why);
            refused++;
            continue;
        }
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        socklen_t len = (socklen_t)a->ai_addrlen;
        if (len > sizeof ss)
            continue;
        memcpy(&ss, a->ai_addr, len);
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons(c->port);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons(c->port);
        add_addr(c, (struct sockaddr *)&ss, len);
    }
    if (ai)
        evutil_freeaddrinfo(ai);
    if (c->n_addrs == 0) {
        if (refused)
            respond(c, 403, "special_address", NULL);
        else
            respond(c, 502, "no_address", NULL);
        return;
    }
    start_connect(c);
}

static void start_resolve(conn *c)
{
    proxy *p = c->p;
    dns_lookup *d = calloc(1, sizeof *d);
    if (!d) {
        respond(c, 502, "out_of_memory", NULL);
        return;
    }
    d->p = p;
    d->c = c;
    c->dns = d;
    c->state = CS_RESOLVING;
    p->dns_pending++;
    struct timeval tv = secs(p->cfg->connect_timeout_s);
    evtimer_add(c->timer, &tv);
    char port[8];
    snprintf(port, sizeof port, "%u", c->port);
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* may call dns_done before returning (hosts file, errors): then it returns NULL,
     * d is already freed and c may have moved on */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(p->dns, c->host, port, &hints, dns_done, d);
    if (req)
        d->req = req;
}

/* ---- the CONNECT head ---- */

static void decide(conn *c, const http1_connect *req)
{
    proxy *p = c->p;
    memcpy(c->host, req->host, sizeof c->host);
    c->port = req->port;
    if (!proxy_allowlist_match(p->cfg->allow, c->host, c->port)) {
        respond(c, 403, "not_allowed", NULL);
        return;
    }
    if (req->host_kind != HTTP1_HOST_NAME) {
        /* an IP literal passes only because that very literal is on the allowlist: the
         * operator named the address, so it is not second-guessed as special */
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        socklen_t len;
        if (req->host_kind == HTTP1_HOST_IPV4) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            sin->sin_family = AF_INET;
            sin->sin_port = htons(c->port);
            len = sizeof *sin;
            if (inet_pton(AF_INET, c->host, &sin->sin_addr) != 1)
                len = 0;
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons(c->port);
            len = sizeof *sin6;
            if (inet_pton(AF_INET6, c->host, &sin6->sin6_addr) != 1)
                len = 0;
        }
        if (len == 0) {
            respond(c, 400, "bad_literal", NULL);
            return;
        }
        add_addr(c, (struct sockaddr *)&ss, len);
        start_connect(c);
        return;
    }
    proxy_pin pins[PROXY_MAX_ADDRS];
    size_t n = proxy_allowlist_pinned(p->cfg->allow, c->host, c->port, pins, PROXY_MAX_ADDRS);
    if (n > 0) { /* --resolve: no DNS for this host:port */
        for (size_t i = 0; i < n && i < PROXY_MAX_ADDRS; i++)
            add_addr(c, (struct sockaddr *)&pins[i].addr, pins[i].addr_len);
        start_connect(c);
        return;
    }
    start_resolve(c);
}

static void try_parse_head(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->client);
    size_t len = evbuffer_get_length(in);
    if (len > HTTP1_MAX_CONNECT_HEAD_SIZE)
        len = HTTP1_MAX_CONNECT_HEAD_SIZE;
    const unsigned char *data = evbuffer_pullup(in, (ev_ssize_t)len);
    if (!data && len) {
        respond(c, 502, "out_of_memory", NULL);
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
        respond(c, 405, "not_connect", NULL);
        return;
    }
    if (rc < 0) {
        respond(c, 400, "bad_request", http1_strerror(rc));
        return;
    }
    evbuffer_drain(in, (size_t)rc); /* what is left is tunnel data, forwarded later */
    decide(c, &req);
}

/* ---- timers ---- */

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn *c = arg;
    switch (c->state) {
    case CS_HEAD:
        respond(c, 504, "head_timeout", NULL);
        return;
    case CS_RESOLVING:
        respond(c, 504, "resolve_timeout", NULL);
        return;
    case CS_TUNNEL: {
        long idle_ms = c->p->cfg->idle_timeout_s * 1000L;
        long quiet = ms_since(&c->t_last);
        if (quiet >= idle_ms) {
            conn_close(c, "idle_timeout");
            return;
        }
        long left = idle_ms - quiet;
        struct timeval tv = {left / 1000, (left % 1000) * 1000};
        evtimer_add(c->timer, &tv);
        return;
    }
    case CS_CLOSING:
        conn_close(c, c->reason); /* the linger deadline */
        return;
    default:
        return;
    }
}

/* ---- accepting ---- */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    proxy *p = arg;
    char rid[LOG_RID_LEN + 1];
    char peer[96];
    log_new_rid(rid);
    format_peer(sa, salen, peer, sizeof peer);
    if (p->n_conns >= p->cfg->max_conns) {
        /* answer and close at once: no state, no buffering for a connection over the limit */
        char resp[256];
        size_t n = format_status(503, resp, sizeof resp);
        ssize_t w = send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        shutdown(fd, SHUT_WR);
        close(fd);
        log_warn(rid, "event=denied status=503 reason=max_conns peer=%s conns=%ld", peer,
                 p->n_conns);
        return;
    }
    conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        log_error(rid, "event=accept_failed error=\"out of memory\"");
        return;
    }
    c->p = p;
    c->connect_fd = -1;
    memcpy(c->rid, rid, sizeof c->rid);
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    now_mono(&c->t_start);
    c->t_last = c->t_start;
    c->state = CS_HEAD;
    if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6))
        set_nodelay(fd);
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
        return;
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
    struct timeval tv = secs(p->cfg->head_timeout_s);
    evtimer_add(c->timer, &tv);
    log_info(c->rid, "event=accepted peer=%s conns=%ld", c->peer, p->n_conns);
}

static void on_accept_error(struct evconnlistener *l, void *arg)
{
    proxy *p = arg;
    int e = EVUTIL_SOCKET_ERROR();
    log_error(NULL, "event=accept_error error=\"%s\"", strerror(e));
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        /* the pending connection stays queued: pause instead of spinning on it */
        evconnlistener_disable(l);
        struct timeval tv = {0, ACCEPT_RETRY_MS * 1000};
        evtimer_add(p->accept_retry, &tv);
    }
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    proxy *p = arg;
    if (p->listener && !p->stopping)
        evconnlistener_enable(p->listener);
}

/* ---- stopping ---- */

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    proxy *p = arg;
    log_warn(NULL, "event=stop_forced dns_pending=%ld", p->dns_pending);
    event_base_loopbreak(p->base);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    proxy *p = arg;
    if (p->stopping)
        return;
    p->stopping = true;
    log_info(NULL, "event=stopping signal=%s conns=%ld", sig == SIGTERM ? "TERM" : "INT",
             p->n_conns);
    if (p->listener) {
        evconnlistener_free(p->listener); /* stop accepting first */
        p->listener = NULL;
    }
    while (!LIST_EMPTY(&p->conns))
        conn_close(LIST_FIRST(&p->conns), "shutdown");
    struct timeval tv = secs(STOP_GRACE_S);
    evtimer_add(p->stop_timer, &tv);
    maybe_finish(p);
}

/* ---- setup ---- */

static struct evdns_base *make_dns(struct event_base *base, const proxy_config *cfg, char *err,
                                   size_t errlen)
{
    struct evdns_base *dns;
    if (cfg->n_dns_servers == 0) {
        dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
                                       EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (dns)
            return dns;
        /* no usable resolv.conf: pins, literals and /etc/hosts still work */
        log_warn(NULL, "event=dns_config_failed file=/etc/resolv.conf");
    }
    dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!dns) {
        SET_ERR("evdns_base_new failed");
        return NULL;
    }
    evdns_base_load_hosts(dns, NULL);
    for (size_t i = 0; i < cfg->n_dns_servers; i++) {
        if (evdns_base_nameserver_ip_add(dns, cfg->dns_servers[i]) != 0) {
            SET_ERR("bad DNS server '%s' (expected IP, IP:PORT or [IPV6]:PORT)",
                    cfg->dns_servers[i]);
            evdns_base_free(dns, 0);
            return NULL;
        }
    }
    return dns;
}

static void log_config(const proxy_config *cfg)
{
    const proxy_allowlist *al = cfg->allow;
    for (size_t i = 0; i < al->n_entries; i++)
        log_info(NULL, "event=allow host=%s port=%u", al->entries[i].host, al->entries[i].port);
    for (size_t i = 0; i < cfg->n_dns_servers; i++)
        log_info(NULL, "event=dns_server addr=%s", cfg->dns_servers[i]);
    for (size_t i = 0; i < al->n_pins; i++) {
        char ip[INET6_ADDRSTRLEN];
        log_info(NULL, "event=pin host=%s port=%u ip=%s", al->pins[i].host, al->pins[i].port,
                 format_ip((const struct sockaddr *)&al->pins[i].addr, ip, sizeof ip));
    }
    log_info(NULL,
             "event=config max_conns=%ld head_timeout_s=%ld connect_timeout_s=%ld "
             "idle_timeout_s=%ld",
             cfg->max_conns, cfg->head_timeout_s, cfg->connect_timeout_s, cfg->idle_timeout_s);
}

int proxy_run(const proxy_config *cfg, char *err, size_t errlen)
{
    int rc = -1;
    proxy px;
    memset(&px, 0, sizeof px);
    LIST_INIT(&px.conns);
    px.cfg = cfg;
    if (!cfg || !cfg->allow || cfg->max_conns < 1 || cfg->head_timeout_s < 1 ||
        cfg->connect_timeout_s < 1 || cfg->idle_timeout_s < 1) {
        SET_ERR("bad proxy configuration");
        return -1;
    }
    /* a peer that vanishes must be an EPIPE, not a dead process */
    signal(SIGPIPE, SIG_IGN);
    int fd = addr_listen(&cfg->listen, SOMAXCONN, err, errlen);
    if (fd < 0)
        return -1;
    px.base = event_base_new();
    if (!px.base) {
        SET_ERR("event_base_new failed");
        close(fd);
        return -1;
    }
    px.dns = make_dns(px.base, cfg, err, errlen);
    if (!px.dns) {
        close(fd);
        goto out;
    }
    px.listener = evconnlistener_new(px.base, on_accept, &px,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    px.sig_term = evsignal_new(px.base, SIGTERM, on_signal, &px);
    px.sig_int = evsignal_new(px.base, SIGINT, on_signal, &px);
    px.accept_retry = evtimer_new(px.base, accept_retry_cb, &px);
    px.stop_timer = evtimer_new(px.base, stop_timer_cb, &px);
    if (!px.listener)
        close(fd);
    if (!px.listener || !px.sig_term || !px.sig_int || !px.accept_retry ||
        !px.stop_timer || evsignal_add(px.sig_term, NULL) < 0 ||
        evsignal_add(px.sig_int, NULL) < 0) {
        SET_ERR("cannot set up the event loop");
        goto out;
    }
    evconnlistener_set_error_cb(px.listener, on_accept_error);
    log_config(cfg);
    veil_addr shown = cfg->listen;
    if (shown.kind == ADDR_TCP) {
        int port = addr_local_port(fd);
        if (port > 0)
            shown.port = (uint16_t)port;
    }
    char text[320];
    log_info(NULL, "event=listening addr=%s", addr_format(&shown, text, sizeof text));
    if (event_base_dispatch(px.base) < 0) {
        SET_ERR("event loop failed");
        goto out;
    }
    log_info(NULL, "event=stopped");
    rc = 0;
out:
    while (!LIST_EMPTY(&px.conns))
        conn_close(LIST_FIRST(&px.conns), "shutdown");
    if (px.listener)
        evconnlistener_free(px.listener);
    if (px.sig_term)
        event_free(px.sig_term);
    if (px.sig_int)
        event_free(px.sig_int);
    if (px.accept_retry)
        event_free(px.accept_retry);
    if (px.stop_timer)
        event_free(px.stop_timer);
    if (px.dns)
        evdns_base_free(px.dns, 0);
    event_base_free(px.base);
    if (cfg->listen.kind == ADDR_UNIX && cfg->listen.path[0] != '@')
        unlink(cfg->listen.path);
    return rc;
}

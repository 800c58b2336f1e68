/* proxy_upstream — the far side of a veil-proxy connection: the decision on the
 * CONNECT target (allowlist, literals, pins), the evdns lookup with every resolved
 * address checked, non-blocking connects one address after another, and the tunnel
 * that relays bytes both ways with backpressure and half-close. Never logs payload.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/proxy_int.h"

static const char CONNECT_OK[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

/* Forgets everything on the upstream side: a DNS lookup, a pending connect, the tunnel. */
void proxy_up_drop(conn *c)
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

/* ---- tunnel ---- */

static bool tunnel_done(const conn *c)
{
    return c->client_eof && c->up_eof && c->client_shut && c->up_shut;
}

/* Moves what `from` has read into the output of `to`. */
void proxy_tunnel_relay(conn *c, struct bufferevent *from, struct bufferevent *to, uint64_t *count,
                  bool *paused)
{
    struct evbuffer *in = bufferevent_get_input(from);
    struct evbuffer *out = bufferevent_get_output(to);
    size_t n = evbuffer_get_length(in);
    if (n == 0)
        return;
    evbuffer_add_buffer(out, in);
    *count += n;
    proxy_now(&c->t_last);
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
bool proxy_tunnel_drained(conn *c, bool x_is_client)
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
            proxy_conn_close(c, "done");
            return false;
        }
    }
    return true;
}

void proxy_tunnel_event(conn *c, bool x_is_client, short what)
{
    if (what & BEV_EVENT_ERROR) {
        int e = EVUTIL_SOCKET_ERROR();
        log_debug(c->rid, "event=socket_error side=%s error=\"%s\"",
                  x_is_client ? "client" : "upstream", strerror(e));
        proxy_conn_close(c, x_is_client ? "client_error" : "upstream_error");
        return;
    }
    if (!(what & BEV_EVENT_EOF))
        return;
    if (x_is_client) {
        c->client_eof = true;
        proxy_tunnel_relay(c, c->client, c->up, &c->bytes_up, &c->client_paused);
    } else {
        c->up_eof = true;
        proxy_tunnel_relay(c, c->up, c->client, &c->bytes_down, &c->up_paused);
    }
    /* the other side's output may already be empty: then its write callback will not
     * run again, so pass the EOF on here */
    proxy_tunnel_drained(c, !x_is_client);
}

static void up_read_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;
    proxy_tunnel_relay(c, bev, c->client, &c->bytes_down, &c->up_paused);
}

static void up_write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn *c = arg;
    proxy_now(&c->t_last);
    proxy_tunnel_drained(c, false);
}

static void up_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    proxy_tunnel_event(arg, false, what);
}

/* ---- connecting ---- */

static void on_connected(conn *c, int fd)
{
    const struct sockaddr *sa = (const struct sockaddr *)&c->addrs[c->next_addr - 1];
    proxy_set_nodelay(fd);
    c->up = bufferevent_socket_new(c->p->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!c->up) {
        close(fd);
        proxy_conn_respond(c, 502, "out_of_memory", NULL);
        return;
    }
    bufferevent_setcb(c->up, up_read_cb, up_write_cb, up_event_cb, c);
    bufferevent_setwatermark(c->up, EV_WRITE, PROXY_WATERMARK / 2, 0);
    c->state = CS_TUNNEL;
    c->status = 200;
    proxy_format_ip(sa, c->ip, sizeof c->ip);
    log_info(c->rid, "event=connected host=%s port=%u ip=%s elapsed_ms=%ld", c->host, c->port,
             c->ip, proxy_ms_since(&c->t_start));
    /* the 200 only now, after the upstream connect succeeded */
    bufferevent_write(c->client, CONNECT_OK, sizeof CONNECT_OK - 1);
    /* bytes that came after the head go first (the original dropped them, §10.21) */
    proxy_tunnel_relay(c, c->client, c->up, &c->bytes_up, &c->client_paused);
    bufferevent_enable(c->up, EV_READ | EV_WRITE);
    if (!c->client_eof && !c->client_paused)
        bufferevent_enable(c->client, EV_READ);
    proxy_now(&c->t_last);
    struct timeval tv = proxy_secs(c->p->cfg->idle_timeout_s);
    evtimer_add(c->timer, &tv);
    if (c->client_eof)
        proxy_tunnel_drained(c, false); /* the client half-closed while we were connecting */
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
            struct timeval tv = proxy_secs(c->p->cfg->connect_timeout_s);
            if (c->connect_ev && event_add(c->connect_ev, &tv) == 0)
                return;
            c->last_errno = ENOMEM;
            proxy_up_drop(c);
            continue;
        }
        c->last_errno = errno;
        log_info(c->rid, "event=connect_failed host=%s port=%u ip=%s error=\"%s\"", c->host,
                 c->port, proxy_format_ip(sa, ip, sizeof ip), strerror(errno));
        close(fd);
    }
    if (c->last_errno == ETIMEDOUT)
        proxy_conn_respond(c, 504, "connect_timeout", NULL);
    else
        proxy_conn_respond(c, 502, "connect_failed", NULL);
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
             proxy_format_ip(sa, ip, sizeof ip), strerror(e));
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
        proxy_maybe_finish(p);
        return;
    }
    c->dns = NULL;
    if (result != 0) {
        if (ai)
            evutil_freeaddrinfo(ai);
        proxy_conn_respond(c, 502, "resolve_failed", evutil_gai_strerror(result));
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
                     c->port, proxy_format_ip(a->ai_addr, ip, sizeof ip), why);
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
            proxy_conn_respond(c, 403, "special_address", NULL);
        else
            proxy_conn_respond(c, 502, "no_address", NULL);
        return;
    }
    start_connect(c);
}

static void start_resolve(conn *c)
{
    proxy *p = c->p;
    dns_lookup *d = calloc(1, sizeof *d);
    if (!d) {
        proxy_conn_respond(c, 502, "out_of_memory", NULL);
        return;
    }
    d->p = p;
    d->c = c;
    c->dns = d;
    c->state = CS_RESOLVING;
    p->dns_pending++;
    struct timeval tv = proxy_secs(p->cfg->connect_timeout_s);
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

/* ---- the decision ---- */

void proxy_up_open(conn *c, const http1_connect *req)
{
    proxy *p = c->p;
    memcpy(c->host, req->host, sizeof c->host);
    c->port = req->port;
    if (!proxy_allowlist_match(p->cfg->allow, c->host, c->port)) {
        proxy_conn_respond(c, 403, "not_allowed", NULL);
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
            proxy_conn_respond(c, 400, "bad_literal", NULL);
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

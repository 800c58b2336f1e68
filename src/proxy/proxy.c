/* proxy — veil-proxy's server: the listener and its connection cap, stopping on a
 * signal, the resolver and the run loop. See proxy.h; a connection's life is
 * proxy_conn.c (client side) and proxy_upstream.c (DNS, connect, tunnel).
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <errno.h>
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
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "proxy/proxy_int.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

#define ACCEPT_RETRY_MS 100 /* after EMFILE and friends: let a few connections close */
#define STOP_GRACE_S 2      /* at shutdown, wait this long for cancelled DNS lookups */

/* ---- small helpers ---- */

const char *proxy_format_ip(const struct sockaddr *sa, char *out, size_t n)
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
        snprintf(out, n, "tcp:%s:%u", proxy_format_ip(sa, ip, sizeof ip),
                 ntohs(((const struct sockaddr_in *)sa)->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        snprintf(out, n, "tcp:[%s]:%u", proxy_format_ip(sa, ip, sizeof ip),
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

void proxy_set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* best effort */
}

void proxy_maybe_finish(proxy *p)
{
    if (p->stopping && p->n_conns == 0 && p->dns_pending == 0)
        event_base_loopbreak(p->base);
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
        size_t n = proxy_format_status(503, resp, sizeof resp);
        ssize_t w = send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        shutdown(fd, SHUT_WR);
        close(fd);
        log_warn(rid, "event=denied status=503 reason=max_conns peer=%s conns=%ld", peer,
                 p->n_conns);
        return;
    }
    conn *c = proxy_conn_new(p, fd, sa, rid, peer);
    if (c)
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
        proxy_conn_close(LIST_FIRST(&p->conns), "shutdown");
    struct timeval tv = proxy_secs(STOP_GRACE_S);
    evtimer_add(p->stop_timer, &tv);
    proxy_maybe_finish(p);
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
                 proxy_format_ip((const struct sockaddr *)&al->pins[i].addr, ip, sizeof ip));
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
        proxy_conn_close(LIST_FIRST(&px.conns), "shutdown");
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

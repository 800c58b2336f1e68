/* proxy_int — what the three files of veil-proxy's server share: the proxy and
 * connection objects and the functions that cross between proxy.c (listener, stop,
 * setup), proxy_conn.c (a client connection) and proxy_upstream.c (DNS, connect,
 * tunnel). Only src/proxy/proxy*.c include it.
 */
#ifndef VEIL_PROXY_PROXY_INT_H
#define VEIL_PROXY_PROXY_INT_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include "common/log.h"
#include "net/http1.h"
#include "proxy/proxy.h"

/* A connection's life. One log line per transition that matters (accepted, denied,
 * connected, closed). */
typedef enum conn_state {
    CS_HEAD,       /* reading the CONNECT head */
    CS_RESOLVING,  /* evdns lookup in flight */
    CS_CONNECTING, /* non-blocking TCP connects, one address after another */
    CS_TUNNEL,     /* 200 sent; relaying both ways */
    CS_CLOSING,    /* an error status is flushing; then input is drained until EOF */
} conn_state;

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

static inline void proxy_now(struct timespec *ts) { clock_gettime(CLOCK_MONOTONIC, ts); }

static inline long proxy_ms_since(const struct timespec *t)
{
    struct timespec n;
    proxy_now(&n);
    return (long)(n.tv_sec - t->tv_sec) * 1000L + (n.tv_nsec - t->tv_nsec) / 1000000L;
}

static inline struct timeval proxy_secs(long s)
{
    struct timeval tv = {s, 0};
    return tv;
}

/* ---- proxy.c ---- */

const char *proxy_format_ip(const struct sockaddr *sa, char *out, size_t n);
void proxy_set_nodelay(int fd);
/* Stopping, and nothing left (connections, DNS lookups): leave the loop. */
void proxy_maybe_finish(proxy *p);

/* ---- proxy_conn.c ---- */

conn *proxy_conn_new(proxy *p, int fd, const struct sockaddr *sa, const char *rid, const char *peer);
/* Frees c. Callers return right after: c is gone. */
void proxy_conn_close(conn *c, const char *reason);
/* The full response for an error status into out; returns its length. */
size_t proxy_format_status(int status, char *out, size_t n);
/* Answers an error status and closes (after a flush and a drain); error (or NULL)
 * is logged as the why. */
void proxy_conn_respond(conn *c, int status, const char *reason, const char *error);

/* ---- proxy_upstream.c ---- */

/* The parsed CONNECT target: refuse, connect (literal, pins) or resolve. */
void proxy_up_open(conn *c, const http1_connect *req);
/* Forgets everything on the upstream side: a DNS lookup, a pending connect, the tunnel. */
void proxy_up_drop(conn *c);
/* Moves what `from` has read into the output of `to` (pauses `from` above the watermark). */
void proxy_tunnel_relay(conn *c, struct bufferevent *from, struct bufferevent *to, uint64_t *count,
                        bool *paused);
/* x's output drained: resume the other side, pass a pending EOF on. false: c was closed. */
bool proxy_tunnel_drained(conn *c, bool x_is_client);
/* An error or EOF on one side of an open tunnel. */
void proxy_tunnel_event(conn *c, bool x_is_client, short what);

#endif

/* https — an event-driven HTTP/1.1 client: TLS (or plain HTTP) directly or
 * through an HTTP CONNECT proxy reached at any veil address (vsock, unix, tcp).
 *
 * One request per connection, unless the request names a pool (https_pool.h): its
 * connection then comes from the pool when one is idle there, and goes back to it
 * after a clean response. A connection walks CONNECTING -> CONNECT_SENT ->
 * TLS_HANDSHAKE -> REQUEST_SENT -> HEAD -> BODY -> DONE (a pooled one starts at
 * REQUEST_SENT), with one debug log line per transition. Body bytes are handed to
 * the caller as they arrive. The caller owns the https_ctx and the request strings
 * (copied at start); the library owns each connection until on_done returns or
 * https_cancel is called. Never logs request or response bodies.
 */
#ifndef VEIL_AWS_HTTPS_H
#define VEIL_AWS_HTTPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/http1.h"
#include "common/addr.h"

struct event_base;

typedef enum https_err {
    HTTPS_OK = 0,
    HTTPS_ERR_NOMEM,
    HTTPS_ERR_ARG,             /* bad request description */
    HTTPS_ERR_CONNECT,         /* TCP/unix/vsock connect to the proxy or host failed */
    HTTPS_ERR_PROXY,           /* the proxy answered CONNECT with a non-200 status */
    HTTPS_ERR_TLS,             /* TLS handshake or record failure */
    HTTPS_ERR_CERT,            /* certificate or hostname verification failed */
    HTTPS_ERR_IO,              /* read/write error or reset */
    HTTPS_ERR_PROTOCOL,        /* malformed response head or body framing */
    HTTPS_ERR_TRUNCATED,       /* the peer closed before the body was complete */
    HTTPS_ERR_TIMEOUT_CONNECT, /* connect + CONNECT + handshake took too long */
    HTTPS_ERR_TIMEOUT_IDLE,    /* no bytes for idle_ms */
    HTTPS_ERR_TIMEOUT_TOTAL,   /* the whole request took too long */
    HTTPS_ERR_ABORTED,         /* a callback asked to stop */
} https_err;

const char *https_strerror(https_err e);

typedef struct https_ctx https_ctx;
typedef struct https_pool https_pool;

/* ca_file NULL: the system trust store. Returns NULL and fills err on failure. */
https_ctx *https_ctx_new(struct event_base *base, const char *ca_file, char *err, size_t errlen);
void https_ctx_free(https_ctx *ctx);
/* Completed TLS handshakes so far: resumed from a kept session, or full. */
void https_ctx_stats(const https_ctx *ctx, unsigned long *resumed, unsigned long *full);

typedef struct https_header {
    const char *name;
    const char *value;
} https_header;

typedef struct https_request {
    bool tls;                /* https (true) or plain http */
    const char *host;        /* name or IP literal: SNI, verification, Host header */
    uint16_t port;
    const veil_addr *proxy;  /* CONNECT through this proxy, or NULL for direct */
    const char *method;
    const char *target;      /* origin-form, already percent-encoded */
    const https_header *headers; /* extra headers, sent in order after Host */
    size_t n_headers;
    const uint8_t *body;
    size_t body_len;
    unsigned connect_timeout_ms; /* 0 = 10 s */
    unsigned idle_timeout_ms;    /* 0 = 60 s */
    unsigned total_timeout_ms;   /* 0 = none */
    const char *rid;             /* request id for log lines, may be NULL */
    /* Keep-alive: NULL sends `Connection: close` and closes after the response. With
     * a pool (of this ctx), a request sent on a pooled connection that turns out dead
     * before the first byte of the answer (write error, EOF, reset, TLS alert) is
     * sent once more on a fresh connection, unseen by the caller; after that byte,
     * never. The request bytes are then kept (and wiped) until that first byte. */
    https_pool *pool;
} https_request;

typedef struct https_callbacks {
    /* The response head (1xx heads are skipped). Return non-zero to abort. */
    int (*on_head)(void *ud, const http1_response *resp);
    /* Decoded body bytes (chunked framing removed). Return non-zero to abort. */
    int (*on_body)(void *ud, const uint8_t *data, size_t len);
    /* Exactly once, unless the request was cancelled. detail is a short text for
     * logs (never a body). The connection is freed after this returns. */
    void (*on_done)(void *ud, https_err err, const char *detail);
} https_callbacks;

typedef struct https_conn https_conn;

/* Starts the request. Every failure, even an immediate one, is reported through
 * on_done from the event loop. NULL only when out of memory or the request is
 * malformed (err filled). */
https_conn *https_start(https_ctx *ctx, const https_request *req, const https_callbacks *cb,
                        void *ud, char *err, size_t errlen);

/* Stops the request and frees it; no callback follows. Safe inside a callback. */
void https_cancel(https_conn *c);

/* Backpressure: while paused, nothing is read from the peer and on_body is not
 * called (bytes already read wait in the buffer); the idle timeout is suspended,
 * the total deadline is not. Safe inside a callback. */
void https_pause(https_conn *c, bool pause);

#endif

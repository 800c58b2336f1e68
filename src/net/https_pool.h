/* https_pool — kept-alive HTTP/1.1 connections of one https_ctx, on that context's
 * event loop: after a response whose body ended cleanly, its connection (the TLS
 * session inside its CONNECT tunnel) waits here, and the next request to the same
 * host and port, through the same proxy, takes it instead of connecting again.
 *
 * One pool per event loop, no global state. The pool owns its idle connections; a
 * request borrows one (https_request.pool) and gives it back or closes it. An idle
 * connection is watched: any byte, EOF or error while idle drops it at once, and it
 * is checked again when taken. Never logs request or response bytes.
 */
#ifndef VEIL_NET_HTTPS_POOL_H
#define VEIL_NET_HTTPS_POOL_H

#include <stddef.h>

#include "net/https.h"

/* AWS front ends close a connection idle for about 60 s; ours close at 30 s, so a
 * request is never written on a connection the server is closing at that moment. */
#define HTTPS_POOL_DEFAULT_MAX_IDLE 8
#define HTTPS_POOL_DEFAULT_IDLE_MS 30000u
#define HTTPS_POOL_DEFAULT_MAX_REQUESTS 1000u
#define HTTPS_POOL_DEFAULT_MAX_AGE_MS 300000u /* a DNS change reaches us within 5 min */

typedef struct https_pool_config {
    unsigned max_idle;        /* idle connections kept at once; 0: no pooling */
    unsigned idle_timeout_ms; /* close one idle this long; 0: the default */
    unsigned max_requests;    /* responses per connection, then close; 0: the default */
    unsigned max_age_ms;      /* no new request on an older connection; 0: the default */
} https_pool_config;

/* Every limit at its default (pooling on). */
https_pool_config https_pool_config_default(void);

typedef struct https_pool https_pool;

/* A pool for requests made with ctx (it must outlive the pool). NULL and err filled
 * on failure. */
https_pool *https_pool_new(https_ctx *ctx, const https_pool_config *cfg, char *err, size_t errlen);
/* Closes every idle connection. Every request that used the pool must have ended
 * or been cancelled first. NULL is a no-op. */
void https_pool_free(https_pool *p);

typedef struct https_pool_stats {
    unsigned idle;          /* connections waiting now */
    unsigned long opened;   /* requests that found no idle connection and opened one */
    unsigned long reused;   /* requests sent on an idle connection */
    unsigned long pooled;   /* connections given back after a clean response */
    unsigned long expired;  /* closed by the idle timeout, max age or max requests */
    unsigned long evicted;  /* the oldest idle one, closed to stay within max_idle */
    unsigned long dropped;  /* found dead or readable while idle, or when taken */
    unsigned long retried;  /* requests sent again on a fresh connection */
} https_pool_stats;

void https_pool_get_stats(const https_pool *p, https_pool_stats *out);

#endif

/* https_pool_int — what https.c and https_pool.c share: a connection between two
 * requests, and the calls that lend and return it. Not for other modules.
 */
#ifndef VEIL_NET_HTTPS_POOL_INT_H
#define VEIL_NET_HTTPS_POOL_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/addr.h"
#include "net/https_pool.h"

struct bufferevent;

#define HTTPS_POOL_KEY_LEN 640 /* "tls|host:port|proxy" */

/* A connection with no request on it. */
typedef struct https_pooled {
    struct bufferevent *bev; /* owns the fd and the SSL (BEV_OPT_CLOSE_ON_FREE) */
    SSL *ssl;                /* NULL for plain HTTP */
    unsigned long id;        /* for log lines: pooled, reused and expired name it */
    uint64_t born_ms;        /* connected at (monotonic) */
    unsigned requests;       /* responses completed on it */
} https_pooled;

/* Where a connection goes: the scheme, the peer and the tunnel. */
void https_pool_key(char out[HTTPS_POOL_KEY_LEN], bool tls, const char *host, uint16_t port,
                    const veil_addr *proxy);

https_ctx *https_pool_ctx(const https_pool *p);

/* The freshest live idle connection for key: true and *out filled (the caller owns
 * it now). False when there is none; out->id is then the id of the connection the
 * caller opens. Dead ones met on the way are closed. */
bool https_pool_take(https_pool *p, const char *key, https_pooled *out, const char *rid);

/* A connection whose response ended cleanly (HTTP/1.1, no Connection: close, the
 * body's end read, nothing unread or unsent). The pool keeps it or closes it (max
 * requests, max age, max idle); either way the caller no longer owns it. */
void https_pool_put(https_pool *p, const char *key, https_pooled *pc, const char *rid);

/* Requests that hold a pool (for the check at https_pool_free), and retries. */
void https_pool_attach(https_pool *p);
void https_pool_detach(https_pool *p);
/* A retry opens a connection of its own: its id. */
unsigned long https_pool_note_retry(https_pool *p);

uint64_t https_pool_now_ms(void);

#endif

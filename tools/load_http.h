/* load_http — veil-load's HTTP/1.1 client connection, as a browser keeps one: one
 * request at a time on a keep-alive connection; the response head parsed by
 * net/http1, the body (Content-Length, chunked, or until close) handed to the
 * caller as it arrives, so an SSE stream is read event by event.
 *
 * One bufferevent per connection on the caller's loop: no thread, nothing blocks.
 * The connection owns its socket and buffers; it never logs (the caller counts
 * what failed). Callbacks may free the connection (lh_conn_free) from inside.
 */
#ifndef VEIL_TOOLS_LOAD_HTTP_H
#define VEIL_TOOLS_LOAD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;

typedef enum lh_err {
    LH_OK = 0,
    LH_CONNECT,  /* no connection: refused, or reset before a byte of the reply */
    LH_CLOSED,   /* the server closed (or reset) before the response ended */
    LH_PROTOCOL, /* not HTTP/1.1 as it should be: a bad head, bad chunking */
    LH_STOPPED,  /* the caller's body callback asked to stop */
} lh_err;

const char *lh_strerror(lh_err e);

typedef struct lh_conn lh_conn;

typedef struct lh_handler {
    /* The final response head (1xx heads are skipped). Non-zero stops (LH_STOPPED). */
    int (*on_head)(void *ud, int status);
    /* Body bytes, decoded, as they arrive. Non-zero stops (LH_STOPPED). */
    int (*on_body)(void *ud, const uint8_t *data, size_t len);
    /* The response ended (LH_OK) or failed; exactly once per request. The
     * connection is then idle (see lh_reusable) or dead. */
    void (*on_end)(void *ud, lh_err err, const char *detail);
} lh_handler;

/* A connection to sa, being made (the request may be sent at once: it waits for
 * the connect). NULL with err filled when even that fails (out of descriptors). */
lh_conn *lh_conn_new(struct event_base *base, const struct sockaddr *sa, socklen_t salen, char *err,
                     size_t errlen);

/* Sends one request on an idle connection: method path, Host, Authorization:
 * Bearer token when token is set, and the body (any bytes, even malformed JSON)
 * as application/json with its Content-Length. 0, or -1 when the connection is not
 * idle or out of memory. */
int lh_request(lh_conn *c, const char *method, const char *path, const char *host, const char *token,
               const void *body, size_t len, const lh_handler *h, void *ud);

/* Idle, keep-alive and not closed by the server: another request may follow. */
bool lh_reusable(const lh_conn *c);
/* A byte of the current response has arrived (a failure before it on a reused
 * connection is the server closing an idle connection: safe to retry). */
bool lh_got_bytes(const lh_conn *c);
/* Closes the socket and frees; no callback follows. */
void lh_conn_free(lh_conn *c);

#endif

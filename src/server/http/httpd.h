/* httpd — veild's HTTP/1.1 server engine: connections, request heads and bodies,
 * keep-alive with pipelined requests answered in order, and complete or streamed
 * (chunked) responses. Routing, JSON and auth live above it (api.h).
 *
 * Every limit a client can push on is explicit (httpd_limits): the head size (431),
 * the body size (413), a deadline for each phase of a request (idle, head, body:
 * 408), the number of open connections (503 past it), and the output a slow reader
 * may leave unsent (the handler is told to slow down, and a connection that stays
 * congested is closed). When the process runs out of descriptors the listener
 * pauses until one is freed, and says so in the log at most once per interval.
 * The engine owns every connection and request: a request is freed once its
 * response is finished or its connection is gone. Never logs headers or bodies.
 */
#ifndef VEIL_SERVER_HTTPD_H
#define VEIL_SERVER_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

struct event_base;

typedef struct httpd_limits {
    size_t max_head;    /* request line + headers + the blank line, bytes (431 past it) */
    size_t max_body;    /* bytes (413 past it) */
    unsigned idle_ms;   /* a connection with no request in progress is closed after this */
    unsigned head_ms;   /* the whole head, from its first byte (408) */
    unsigned body_ms;   /* the whole body, from the end of the head (408) */
    unsigned max_conns; /* open connections; one more gets 503 and is closed */
    size_t max_output;  /* unsent bytes above which a response is congested */
    unsigned stall_ms;  /* a connection congested this long is closed */
} httpd_limits;

/* The defaults documented in the README (VEIL_HTTP_* variables). */
#define HTTPD_DEFAULT_MAX_HEAD (16u * 1024)
#define HTTPD_DEFAULT_IDLE_MS 60000u
#define HTTPD_DEFAULT_HEAD_MS 10000u
#define HTTPD_DEFAULT_BODY_MS 30000u
#define HTTPD_DEFAULT_MAX_OUTPUT (1u << 20)
#define HTTPD_DEFAULT_STALL_MS 30000u

typedef struct httpd httpd;
typedef struct httpd_req httpd_req;

/* Runs for every complete request. The handler answers now or later (httpd_respond,
 * or httpd_stream_*); until then the next pipelined request waits. */
typedef void (*httpd_handler)(httpd_req *rq, void *ud);

httpd *httpd_new(struct event_base *base, const httpd_limits *lim, httpd_handler handler, void *ud);
/* Starts accepting on a listening socket; the engine owns fd from now on. */
int httpd_accept_on(httpd *h, int fd, char *err, size_t errlen);
/* Closes the listener; open connections go on. */
void httpd_stop_accepting(httpd *h);
/* Closes every connection: requests still in progress get their close callback;
 * output already queued is written first, as far as each socket takes it at once. */
void httpd_free(httpd *h);
unsigned httpd_connections(const httpd *h);
/* The connection cap actually in force (the configured one, or the descriptor
 * limit's share when that is lower). */
unsigned httpd_max_connections(const httpd *h);

/* ---- the request (strings are NUL-terminated and live as long as the request) ---- */

const char *httpd_method(const httpd_req *rq);
const char *httpd_path(const httpd_req *rq);  /* the raw path, before any '?' */
const char *httpd_query(const httpd_req *rq); /* after the '?', or NULL */
const char *httpd_header(const httpd_req *rq, const char *name); /* first match, case-insensitive */
const uint8_t *httpd_body(const httpd_req *rq, size_t *len);
int httpd_minor_version(const httpd_req *rq);
/* The i-th header as received (false past the last one); the strings live as
 * long as the request. */
bool httpd_header_at(const httpd_req *rq, size_t i, const char **name, size_t *name_len, const char **value,
                     size_t *value_len);
/* Moves the body to out (the caller's to free, with vbuf_free_secure); the request
 * keeps an empty one. */
void httpd_take_body(httpd_req *rq, vbuf *out);

/* ---- answers ---- */

/* A whole response. extra_headers are ready "Name: value\r\n" lines or NULL. The
 * request is finished (and freed) when this returns. */
void httpd_respond(httpd_req *rq, int status, const char *extra_headers, const void *body, size_t len);
/* A streamed response: chunked on HTTP/1.1, ended by closing on HTTP/1.0. */
void httpd_stream_start(httpd_req *rq, int status, const char *extra_headers);
void httpd_stream_write(httpd_req *rq, const void *data, size_t len);
void httpd_stream_end(httpd_req *rq); /* finished (and freed) when this returns */

/* Output not yet written to the socket, and whether it is above max_output. */
size_t httpd_pending(const httpd_req *rq);
bool httpd_congested(const httpd_req *rq);

/* The connection of a request in progress went away (the client closed it, a write
 * failed, its output stayed congested, or the server is shutting down). The request
 * is freed after cb returns; the handler must not answer it. */
void httpd_on_close(httpd_req *rq, void (*cb)(httpd_req *rq, void *ud), void *ud);
/* A congested request's output drained below half of max_output. */
void httpd_on_drain(httpd_req *rq, void (*cb)(httpd_req *rq, void *ud), void *ud);

/* The reason phrase of a status code ("Not Found"), "Unknown" for others. */
const char *httpd_reason(int status);

#endif

/* sim_http — the connection layer shared by veil-bedrock-sim and veil-imds-sim.
 *
 * Accepts connections (plain, or TLS through a caller's SSL_CTX), reads an HTTP/1.1
 * request (head via http1_parse_request, body by Content-Length or chunked), hands it
 * to the program's handler and writes the response. With keep_alive_ms, a connection
 * then waits that long for its next request, as HTTP/1.1 persistence says, unless the
 * request was HTTP/1.0 or said `Connection: close`; it closes with close_notify when
 * the wait ends, as AWS's front ends do. Without, every response says
 * `Connection: close` and closes. All on one libevent loop, non-blocking.
 * Logs one line per request (rid, method, path, status, fault, outcome, duration, the
 * request's place on its connection); never bodies, header values or credentials.
 * The server owns every connection. A handler hangs its state on the connection
 * (sim_conn_set_app) and gets it freed with the connection, whichever side ends it.
 */
#ifndef VEIL_TOOLS_SIM_HTTP_H
#define VEIL_TOOLS_SIM_HTTP_H

#include <event2/event.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "net/http1.h"
#include "common/addr.h"
#include "common/buf.h"

#define SIM_HEAD_TIMEOUT_SECONDS 30 /* a client must send its request within this */

typedef struct sim_server sim_server;
typedef struct sim_conn sim_conn;

/* req and body stay valid until the connection is freed. */
typedef void (*sim_handler)(sim_conn *c, const http1_request *req, const uint8_t *body,
                            size_t body_len, void *user);

typedef enum {
    SIM_ERRORS_TEXT = 0, /* framing errors answered in text/plain (IMDS style) */
    SIM_ERRORS_AWS_JSON, /* x-amzn-ErrorType + {"message":...} (AWS JSON services) */
} sim_error_style;

typedef struct sim_server_config {
    SSL_CTX *ssl_ctx; /* NULL: plain TCP. Borrowed: must outlive the server */
    size_t max_body;  /* larger bodies are refused with 413 */
    sim_error_style error_style;
    sim_handler on_request;
    void *user;
    unsigned keep_alive_ms; /* wait this long for a next request; 0: one per connection */
} sim_server_config;

/* Starts accepting on listen_fd (already listening; the server takes ownership). */
sim_server *sim_server_new(struct event_base *base, int listen_fd, const sim_server_config *cfg,
                           char *err, size_t errlen);
/* Closes the listener and every connection (their app_free runs). NULL is a no-op. */
void sim_server_free(sim_server *s);
size_t sim_server_conn_count(const sim_server *s);

/* ---- for handlers ---- */

const char *sim_conn_rid(const sim_conn *c);
struct event_base *sim_conn_base(const sim_conn *c);
struct evbuffer *sim_conn_output(sim_conn *c);
size_t sim_conn_pending(const sim_conn *c); /* output bytes not yet handed to the socket */
/* Milliseconds since the request began: the accept for a connection's first, the
 * first byte of its head for the next ones. */
long sim_conn_elapsed_ms(const sim_conn *c);
/* 1 for the first request of a connection, 2 for the next one it carries, ... */
unsigned sim_conn_seq(const sim_conn *c);
/* "Connection: close\r\n" when this response ends the connection, else "" (for a
 * handler that writes its own head). */
const char *sim_conn_connection_header(const sim_conn *c);

/* app is freed with app_free when the connection goes (never earlier). on_writable,
 * if set, runs each time the output buffer drains while the response is not finished:
 * a streaming handler refills there. */
void sim_conn_set_app(sim_conn *c, void *app, void (*app_free)(void *app),
                      void (*on_writable)(void *app));

/* Recorded for the request's log line. fault must be a static string. */
void sim_conn_set_status(sim_conn *c, int status);
void sim_conn_set_fault(sim_conn *c, const char *fault);

/* Writes a complete response (status line, Content-Length, Connection: close unless
 * the connection stays open, the given Content-Type, extra_headers as ready
 * "Name: value\r\n" lines or NULL), then finishes. */
void sim_conn_respond(sim_conn *c, int status, const char *content_type,
                      const char *extra_headers, const void *body, size_t len);
/* An AWS JSON error: x-amzn-ErrorType: type, body {"message": message}. */
void sim_conn_respond_aws_error(sim_conn *c, int status, const char *type, const char *message);

/* Ends the response: once the output is flushed, the next request (keep-alive) or
 * the close (TLS close_notify first). Never frees synchronously, so the caller may
 * keep using its app until it returns. */
void sim_conn_finish(sim_conn *c);
/* Like sim_conn_finish, but the connection closes even if it could stay open. */
void sim_conn_finish_close(sim_conn *c);
/* Fault injection: once the output is flushed, close the TCP connection without
 * close_notify or anything else. */
void sim_conn_drop(sim_conn *c);

/* Appends s[0..n) as JSON string content (no quotes): escapes ", \ and controls. */
int sim_json_escape(vbuf *out, const char *s, size_t n);

/* Lowest-common-denominator helpers both programs need. */
/* Raises RLIMIT_NOFILE to its hard limit (1,000 streams need more than 1,024 fds). */
void sim_raise_nofile(void);

/* The common life of a simulator: listen on addr (a tcp port 0 becomes the real
 * one), log `event=listening addr=...`, call config_log (may be NULL) for the
 * program's own config line, serve until SIGTERM/SIGINT, clean up. Returns the
 * process exit status (0 after a signal, 1 if it could not start). */
int sim_run(veil_addr *addr, int backlog, const sim_server_config *cfg, void (*config_log)(void *ud),
            void *ud);
/* "YYYY-MM-DDTHH:MM:SSZ" of a UTC time into out[21]. */
void sim_format_iso8601(time_t t, char out[21]);

#endif

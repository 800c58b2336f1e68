/* bedrock — Amazon Bedrock runtime Converse and ConverseStream (spec §3) over
 * the https client, signed with SigV4 (service "bedrock").
 *
 * The model id is percent-encoded once on the wire (`:` -> %3A) and twice in the
 * canonical URI. A stream succeeds only when messageStop arrived and the HTTP body
 * ended cleanly: an in-stream exception, an `error` message, a CRC failure or a
 * truncated body is an error for the caller, never a silent end. The caller owns
 * the request strings for the duration of bedrock_*_start only; the request body
 * (plaintext) is wiped after it is handed to TLS (on a pooled connection, once the
 * answer starts: until then https may send it again, see https_request.pool).
 * Nothing of a connection depends on the credentials: each request is signed on its
 * own, so rotated credentials apply to the next request on a kept-alive connection.
 * Never logs message text.
 */
#ifndef VEIL_AWS_BEDROCK_H
#define VEIL_AWS_BEDROCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/https.h"
#include "net/https_pool.h"
#include "aws/sigv4.h"

#define BEDROCK_DEFAULT_MAX_TOKENS 4096
#define BEDROCK_DEFAULT_TEMPERATURE 0.7
#define BEDROCK_MAX_ERROR_BODY (64 * 1024)

typedef struct bedrock_client bedrock_client;

typedef struct bedrock_config {
    const char *region;          /* us-east-1 */
    const char *host;            /* NULL: bedrock-runtime.<region>.amazonaws.com */
    uint16_t port;               /* 0: 443 */
    const veil_addr *proxy;      /* CONNECT proxy, or NULL for direct */
    unsigned connect_timeout_ms; /* 0: https default */
    unsigned idle_timeout_ms;    /* 0: https default */
    unsigned total_timeout_ms;   /* 0: none */
    https_pool *pool;            /* keep-alive connections (of https), or NULL: one per call */
} bedrock_config;

/* https and the pool are borrowed and must outlive the client. */
bedrock_client *bedrock_client_new(https_ctx *https, const bedrock_config *cfg);
void bedrock_client_free(bedrock_client *b);
const char *bedrock_client_host(const bedrock_client *b);

typedef struct bedrock_message {
    const char *role; /* "user" | "assistant" */
    const char *text;
    size_t len;
} bedrock_message;

typedef struct bedrock_request {
    const char *model_id;
    const bedrock_message *messages;
    size_t n_messages;
    const char *system;  /* NULL: no system block */
    int max_tokens;      /* 0: BEDROCK_DEFAULT_MAX_TOKENS */
    double temperature;  /* < 0: omitted */
    const sigv4_credentials *creds;
    const char *rid;
} bedrock_request;

typedef enum bedrock_err {
    BEDROCK_OK = 0,
    BEDROCK_ERR_ARG,       /* bad request, or it could not be signed */
    BEDROCK_ERR_HTTP,      /* non-200 status: http_status, type, message */
    BEDROCK_ERR_EXCEPTION, /* in-stream `exception` message: type, message */
    BEDROCK_ERR_STREAM,    /* in-stream `error` message: type = :error-code */
    BEDROCK_ERR_DECODE,    /* event-stream CRC/length/header failure */
    BEDROCK_ERR_PROTOCOL,  /* unexpected event payload or response shape */
    BEDROCK_ERR_TRUNCATED, /* the stream ended without messageStop / mid-message */
    BEDROCK_ERR_TRANSPORT, /* connect, proxy, TLS, certificate, I/O */
    BEDROCK_ERR_TIMEOUT,   /* connect, idle or total deadline */
} bedrock_err;

typedef struct bedrock_error {
    bedrock_err code;
    int http_status;   /* BEDROCK_ERR_HTTP */
    char type[96];     /* AWS error or exception type, e.g. throttlingException */
    char message[512]; /* AWS message or transport detail: for logs, not for end users */
} bedrock_error;

const char *bedrock_strerror(bedrock_err e);

typedef struct bedrock_callbacks {
    /* A non-empty text delta. Return non-zero to cancel the call (no on_done follows). */
    int (*on_text)(void *ud, const char *text, size_t len);
    /* A reasoning (thinking) delta, when the model sends one. May be NULL. */
    int (*on_reasoning)(void *ud, const char *text, size_t len);
    void (*on_usage)(void *ud, long input_tokens, long output_tokens); /* may be NULL */
    void (*on_stop)(void *ud, const char *stop_reason);                /* may be NULL */
    /* Exactly once unless cancelled: err NULL on success. */
    void (*on_done)(void *ud, const bedrock_error *err);
} bedrock_callbacks;

typedef struct bedrock_call bedrock_call;

/* ConverseStream. NULL only on a malformed request (err filled). */
bedrock_call *bedrock_converse_stream(bedrock_client *b, const bedrock_request *req,
                                      const bedrock_callbacks *cb, void *ud, bedrock_error *err);
/* Converse (non-streaming): the whole answer arrives as one on_text. */
bedrock_call *bedrock_converse(bedrock_client *b, const bedrock_request *req,
                               const bedrock_callbacks *cb, void *ud, bedrock_error *err);
/* Cancels the call (the upstream connection is closed); no callback follows. */
void bedrock_cancel(bedrock_call *call);
/* Backpressure (https_pause): no further callbacks until resumed, except for the
 * events already decoded from bytes in hand. */
void bedrock_pause(bedrock_call *call, bool pause);

/* The converse request body of spec §3.3 (exposed for tests). The caller frees
 * the result with OPENSSL_clear_free-like care: it contains plaintext. */
char *bedrock_request_body(const bedrock_request *req, size_t *len);

#endif

/* enclave — the enclave core: the key pair, the AWS credentials, and the commands
 * of the parent protocol (spec §2.2, §2.3): GET_PUBLIC_KEY, SET_CREDENTIALS,
 * HEALTH, CHAT, CHAT_STREAM, RUN_TESTS, and veil's GET_ATTESTATION.
 *
 * Free of process concerns: no sockets, no signals, no argv. veil-enclave wraps it
 * in a server; veild's mock mode links it in-process. Replies are JSON objects
 * handed to a sink, one per call (a streaming command emits many). The private key
 * and credentials live only in this struct's memory and are wiped on free.
 * Plaintext never reaches a log line, at any level.
 */
#ifndef VEIL_ENCLAVE_H
#define VEIL_ENCLAVE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/addr.h"
#include "common/buf.h"
#include "net/https_pool.h"

struct event_base;

#define ENCLAVE_SYSTEM_PROMPT "You are a helpful AI assistant."

typedef struct enclave_config {
    const char *region;          /* us-east-1 */
    const veil_addr *proxy;      /* CONNECT proxy for Bedrock; NULL = direct */
    const char *bedrock_host;    /* NULL = bedrock-runtime.<region>.amazonaws.com */
    uint16_t bedrock_port;       /* 0 = 443 */
    const char *ca_file;         /* NULL = system trust store */
    unsigned max_streams;        /* 0 = 1024 */
    unsigned stream_timeout_ms;  /* whole CHAT/CHAT_STREAM deadline; 0 = 300 s */
    unsigned connect_timeout_ms; /* Bedrock connect + CONNECT + TLS; 0 = 10 s */
    unsigned idle_timeout_ms;    /* no byte from Bedrock for this long; 0 = 60 s */
    size_t max_request;          /* the server's request limit, reported by HEALTH (0: none known) */
    struct nsm *nsm;             /* attests the transport key (borrowed; NULL: none) */
    bool refuse_legacy;          /* only bound requests (format 3); CHAT and formats 1, 2 refused */
    size_t replay_max;           /* format-3 request ids remembered at once; 0 = 65536 */
    /* kept-alive connections to Bedrock, one pool per core (its event loop); NULL =
     * https_pool_config_default(); max_idle 0 = a new connection per request */
    const https_pool_config *upstream_pool;
} enclave_config;

typedef struct enclave_core enclave_core;

enclave_core *enclave_core_new(struct event_base *base, const enclave_config *cfg, char *err,
                               size_t errlen);
/* Cancels every running request (their sinks get no more calls) and wipes keys. */
void enclave_core_free(enclave_core *core);

/* The transport public key (32 bytes). */
const uint8_t *enclave_public_key(const enclave_core *core);
unsigned enclave_active_streams(const enclave_core *core);

/* Where replies go. emit receives one JSON object (no trailing newline); the
 * bytes are valid only during the call. It returns 0 to go on, or non-zero to
 * cancel the request: it is then freed (its upstream call cancelled) and no sink
 * call follows, not even done. done is called once, after the last emit; the
 * request is freed before it. */
typedef struct enclave_sink {
    int (*emit)(void *ud, const char *json, size_t len);
    void (*done)(void *ud);
} enclave_sink;

typedef struct enclave_req enclave_req;

/* Handles one request object (borrowed). Returns the running request for
 * asynchronous commands (CHAT, CHAT_STREAM) or NULL when the reply was already
 * emitted and done was called. */
enclave_req *enclave_handle(enclave_core *core, json_t *request, const enclave_sink *sink,
                            void *ud, const char *rid);

/* The parent went away: stop the request (the upstream call is cancelled and its
 * memory freed). No sink call follows. Safe inside a sink call (the free then
 * happens when the sink returns). */
void enclave_req_cancel(enclave_req *r);

/* Backpressure: the parent cannot take more events for now. A paused request
 * stops reading from Bedrock (events already decoded may still arrive) until it
 * is resumed; its deadline keeps running. */
void enclave_req_pause(enclave_req *r, bool pause);

/* Ends every running stream with an error event ("Enclave shutting down"). */
void enclave_abort_all(enclave_core *core, const char *why);

/* Replies for requests that never reached enclave_handle. */
int enclave_invalid_json_reply(const char *detail, vbuf *out);
int enclave_error_reply(const char *error, vbuf *out);

/* Makes jansson wipe every block it frees: decrypted text passes through JSON
 * strings. Process-wide; call once at start, before any JSON is made. */
void enclave_secure_json(void);

#endif

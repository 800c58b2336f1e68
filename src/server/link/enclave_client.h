/* enclave_client — veild's side of the enclave protocol (the seed's
 * NitroEnclaveClient and factory), with two transports behind one API:
 *   mock:  the enclave core linked in-process (same code as veil-enclave);
 *   nitro: veil-enclave at ENCLAVE_ADDR (vsock, unix or tcp), connections reused.
 * The enclave's public key is fetched at start and again whenever a call fails
 * in a way that suggests a restart (defect §10.4); the restart callback then
 * lets the credential refresher push credentials at once. Every operation is
 * asynchronous, has a deadline, and can be cancelled. Never logs payloads.
 */
#ifndef VEIL_SERVER_ENCLAVE_CLIENT_H
#define VEIL_SERVER_ENCLAVE_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "aws/imds.h"
#include "enclave/protocol.h"
#include "server/settings.h"

struct event_base;
typedef struct enclave_client enclave_client;
typedef struct ec_op ec_op;

enclave_client *ec_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen);
void ec_free(enclave_client *ec);

const char *ec_mode_name(const enclave_client *ec); /* "mock" | "nitro" */
const char *ec_addr(const enclave_client *ec);      /* nitro: the address in use */
long ec_cid(const enclave_client *ec);              /* nitro over vsock: the CID, else 0 */
/* The enclave transport public key (64 hex), or NULL while unknown. */
const char *ec_public_key(const enclave_client *ec);
/* Called after the key was (re)learned: the enclave is new and has no credentials. */
void ec_on_restart(enclave_client *ec, void (*cb)(void *ud), void *ud);
/* Fetch the key now (start-up and retries); the result lands in ec_public_key. */
void ec_refresh_key(enclave_client *ec);

typedef struct ec_health_result {
    bool ok;
    bool has_credentials;
    char region[64];
    char error[128]; /* short, for logs and the health JSON */
} ec_health_result;

typedef void (*ec_health_cb)(void *ud, const ec_health_result *h);
ec_op *ec_health(enclave_client *ec, ec_health_cb cb, void *ud);

typedef void (*ec_result_cb)(void *ud, bool ok, const char *err);
ec_op *ec_set_credentials(enclave_client *ec, const imds_credentials *c, ec_result_cb cb, void *ud);

typedef struct ec_stream_callbacks {
    /* each event of the stream, parsed (borrowed for the call), the final one too */
    void (*on_event)(void *ud, const proto_event *ev);
    /* once, at the end: ENCLAVE_OK after the final event was delivered; else the
     * enclave's error code or the client's own (ENCLAVE_ERR_UNAVAILABLE, _PROTOCOL,
     * _TIMEOUT), with the enclave's text for logs (never upstream detail) */
    void (*on_end)(void *ud, enclave_err err, const char *err_msg);
} ec_stream_callbacks;

/* request is borrowed (serialised before return). */
ec_op *ec_chat_stream(enclave_client *ec, const json_t *request, const ec_stream_callbacks *cb,
                      void *ud);

/* An attestation of the enclave's transport key (H). err ENCLAVE_OK: doc_b64 is the
 * COSE_Sign1 document in base64, pub_hex the key it binds, nsm_name the enclave's NSM
 * ("nitro" | "simulated"); all borrowed for the call. ENCLAVE_ERR_NO_ATTESTATION: the
 * enclave has no NSM. */
typedef void (*ec_attest_cb)(void *ud, enclave_err err, const char *doc_b64, const char *pub_hex,
                             const char *nsm_name);
/* A fresh document bound to the caller's nonce (1..PROTO_NONCE_MAX bytes). */
ec_op *ec_get_attestation(enclave_client *ec, const uint8_t *nonce, size_t len, ec_attest_cb cb, void *ud);
/* A document for the current key made with a nonce of veild's own, fetched at most
 * every EC_ATTEST_CACHE_S (and again when the key changes): cheap for clients that
 * send no nonce (the original's, monitoring). When cached, cb runs before this
 * returns and the result is NULL. */
#define EC_ATTEST_CACHE_S 300
ec_op *ec_cached_attestation(enclave_client *ec, ec_attest_cb cb, void *ud);

/* No callback follows; a stream's enclave connection is closed, which makes the
 * enclave cancel the upstream request. */
void ec_op_cancel(ec_op *op);

/* Backpressure for a stream whose client reads slower than the answer comes: no
 * on_event until resumed (nitro: the enclave connection is not read, so the
 * enclave pauses in turn; mock: the in-process request stops reading Bedrock).
 * The op's deadline keeps running. Safe inside on_event. */
void ec_op_pause(ec_op *op, bool pause);

/* The largest request the enclave accepts (learned from its HEALTH; the default
 * 8 MiB until then, and in mock mode). */
size_t ec_max_request(const enclave_client *ec);

#endif

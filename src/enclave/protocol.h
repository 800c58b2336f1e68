/* protocol — the enclave protocol (spec §2, and veil's stream formats) as one typed
 * contract, and the chat events of veild's SSE stream (spec §4.3) that mirror it.
 *
 * It names every command, field and event key; one enclave_err enum crosses every
 * boundary as its code string (never as message text parsed back); requests parse
 * into typed structs; every reply and event has one encoder; events parse into one
 * tagged struct on the parent side (veild, veil-load) and the client side (the CLI).
 * No other file spells a protocol string.
 *
 * Pure: no sockets, no event loop, no logging. Parsed structs borrow from the
 * json_t they were parsed from (keep it alive while they are used); encoders write
 * into a caller's vbuf or return a new json_t the caller owns.
 */
#ifndef VEIL_ENCLAVE_PROTOCOL_H
#define VEIL_ENCLAVE_PROTOCOL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "crypto/primitives.h"

struct ep; /* crypto/ep.h: the EncryptedPayload */

/* ---- names ---------------------------------------------------------------------- */

#define PROTO_SOURCE "nitro-enclave-bedrock" /* the original adds it to every plain reply */

typedef enum proto_cmd {
    PROTO_CMD_UNKNOWN = 0,
    PROTO_CMD_GET_PUBLIC_KEY,
    PROTO_CMD_SET_CREDENTIALS,
    PROTO_CMD_HEALTH,
    PROTO_CMD_CHAT,
    PROTO_CMD_RUN_TESTS,
    PROTO_CMD_CHAT_STREAM,
    PROTO_CMD_GET_ATTESTATION, /* veil's: {"nonce": hex} -> an NSM document binding the key */
} proto_cmd;

#define PROTO_N_COMMANDS 7

/* "GET_PUBLIC_KEY"..., in the original's order (its "available_commands"). */
const char *proto_cmd_name(proto_cmd c);
/* Case-insensitive, as the original (`.upper()`); UNKNOWN for anything else. */
proto_cmd proto_cmd_parse(const char *s);

/* Field names of requests and replies. */
#define PF_COMMAND "command"
#define PF_STATUS "status"
#define PF_SOURCE "source"
#define PF_ERROR "error"
#define PF_ERROR_CODE "error_code"
#define PF_AVAILABLE_COMMANDS "available_commands"
#define PF_PUBLIC_KEY "public_key"
#define PF_REGION "region"
#define PF_CREDENTIALS "credentials"
#define PF_ACCESS_KEY_ID "access_key_id"
#define PF_SECRET_ACCESS_KEY "secret_access_key"
#define PF_SESSION_TOKEN "session_token"
#define PF_EXPIRATION "expiration"
#define PF_HAS_CREDENTIALS "has_credentials"
#define PF_MAX_REQUEST "max_request"
#define PF_NONCE "nonce"
#define PF_ATTESTATION "attestation" /* base64 of the COSE_Sign1 document */
#define PF_NSM "nsm"                 /* HEALTH: "nitro" | "simulated" | "none" */
#define PF_WORKERS "workers"         /* HEALTH: the enclave's event loops */
#define PF_WORKER "worker"           /* HEALTH: the one (0-based) that serves this connection */
#define PF_CONNECTIONS "connections" /* HEALTH: the parent's connections, every worker's */
#define PF_MAX_CONNECTIONS "max_connections"
#define PF_ENCRYPTED_MESSAGE "encrypted_message"
#define PF_ENCRYPTED_HISTORY "encrypted_history"
#define PF_HISTORY "history"
#define PF_ROLE "role"
#define PF_CONTENT "content"
#define PF_SYSTEM_PROMPT "system_prompt"
#define PF_CLIENT_PUBLIC_KEY "client_public_key"
#define PF_STORAGE_PUBLIC_KEY "storage_public_key"
#define PF_USER_PUBLIC_KEY "user_public_key"
#define PF_MODEL_ID "model_id"
#define PF_SESSION_ID "session_id"
#define PF_STREAM_FORMAT "stream_format"
#define PF_ENCRYPTED_REQUEST "encrypted_request" /* format 3: the whole request, sealed */
#define PF_MESSAGE "message"                     /* format 3's sealed request: its fields */
#define PF_REQUEST_ID "request_id"
#define PF_ISSUED_AT "issued_at"
#define PF_USER_MESSAGE_ID "user_message_id"           /* veil's: in "stored", for the history tag */
#define PF_ASSISTANT_MESSAGE_ID "assistant_message_id"
#define PF_HISTORY_TAG "history_tag"                   /* veil's: a stored pair's tag (the client's) */
#define PF_ENCLAVE_PUBLIC_KEY "enclave_public_key"     /* REST: /enclave/info's key, a chat's sealed-to key */
#define PF_MODEL_USED "model_used"
/* an EncryptedPayload in a chunk event, an SSE chunk and a stored message alike */
#define PF_ENCRYPTED_CONTENT "encrypted_content"

/* ---- errors: one enum, its code string on the wire --------------------------------- */

typedef enum enclave_err {
    ENCLAVE_OK = 0,
    ENCLAVE_ERR_BAD_REQUEST,         /* the request's own text says why (safe to show) */
    ENCLAVE_ERR_DECRYPT_FAILED,      /* sealed to another key: the enclave restarted */
    ENCLAVE_ERR_NO_CREDENTIALS,
    ENCLAVE_ERR_CREDENTIALS_EXPIRED,
    ENCLAVE_ERR_BUSY,
    ENCLAVE_ERR_INTERNAL,
    ENCLAVE_ERR_EMPTY_ANSWER,
    ENCLAVE_ERR_TIMEOUT,
    ENCLAVE_ERR_SHUTTING_DOWN,
    ENCLAVE_ERR_UPSTREAM_THROTTLED,
    ENCLAVE_ERR_UPSTREAM_REJECTED,
    ENCLAVE_ERR_UPSTREAM_DENIED,
    ENCLAVE_ERR_UPSTREAM_UNAVAILABLE,
    ENCLAVE_ERR_UPSTREAM_EXCEPTION,
    ENCLAVE_ERR_UPSTREAM_CORRUPT,
    ENCLAVE_ERR_UPSTREAM_TRUNCATED,
    ENCLAVE_ERR_UPSTREAM_PROTOCOL,
    ENCLAVE_ERR_UPSTREAM_UNREACHABLE,
    ENCLAVE_ERR_NO_ATTESTATION,      /* the enclave runs without an NSM (--nsm none) */
    ENCLAVE_ERR_BINDING_MISMATCH,    /* format 3: an outer field differs from the sealed one */
    ENCLAVE_ERR_STALE_REQUEST,       /* format 3: issued_at outside the window */
    ENCLAVE_ERR_REPLAYED_REQUEST,    /* format 3: a request_id seen before */
    ENCLAVE_ERR_LEGACY_REFUSED,      /* an unbound request where the policy refuses them */
    /* the parent's own, never sent by an enclave */
    ENCLAVE_ERR_UNAVAILABLE,         /* cannot reach the enclave, or it went away */
    ENCLAVE_ERR_PROTOCOL,            /* the enclave sent something that is not the protocol */
    ENCLAVE_ERR_UNKNOWN,             /* a code this version does not know */
} enclave_err;

/* "bad_request", "decrypt_failed", ... (the wire's error_code). */
const char *enclave_err_name(enclave_err e);
/* The code's enum; ENCLAVE_ERR_UNKNOWN for NULL or an unknown code. */
enclave_err enclave_err_parse(const char *code);
/* The text a chat client is shown for e: fixed, never upstream detail (defect
 * §10.23); for BAD_REQUEST the enclave's own validation text (passed in), which
 * never carries upstream or plaintext content. */
const char *enclave_err_client_message(enclave_err e, const char *enclave_msg);

typedef struct proto_error {
    enclave_err code;
    char message[256]; /* the original's wording: "Missing field: 'x'" */
} proto_error;

/* ---- GET_ATTESTATION ---------------------------------------------------------------- */

#define PROTO_NONCE_MAX 1024 /* bytes, as the NSM takes them */

/* The request's nonce (1..PROTO_NONCE_MAX bytes as hex) into out (PROTO_NONCE_MAX
 * bytes of room): its length, or -1 with err filled. */
long proto_parse_attestation_request(const json_t *req, uint8_t *out, proto_error *err);
json_t *proto_attestation_request(const uint8_t *nonce, size_t len);
/* {"status":"success","command":"GET_ATTESTATION","attestation":b64,"public_key":hex,"nsm":name} */
json_t *proto_attestation_reply(const uint8_t *doc, size_t len, const char *pub_hex, const char *nsm_name);

/* ---- CHAT / CHAT_STREAM requests --------------------------------------------------- */

#define PROTO_MAX_HISTORY 1000
#define PROTO_MODEL_MAX 159

typedef struct proto_turn {
    int role;             /* 0 user, 1 assistant, -1 absent (by position, as the original) */
    const json_t *ep;     /* CHAT_STREAM: the sealed turn (borrowed) */
    const char *text;     /* CHAT: the plaintext turn (borrowed) */
    size_t text_len;
} proto_turn;

typedef struct proto_chat_request {
    bool stream;                  /* CHAT_STREAM, else CHAT */
    int format;                   /* stream format: 1 (default) or 3 (a bound request) */
    char model[PROTO_MODEL_MAX + 1];
    const json_t *message;        /* format 1: the sealed user message (borrowed) */
    const json_t *request;        /* format 3: the sealed request (borrowed) */
    uint8_t reply_pub[X25519_KEY_LEN];   /* client_public_key (stream) or user_public_key (CHAT) */
    uint8_t storage_pub[X25519_KEY_LEN]; /* stream only */
    const char *session_id;       /* only logged; may be NULL */
    const char *system_prompt;    /* CHAT only; NULL = the default */
    proto_turn *history;          /* owned: proto_chat_request_free */
    size_t n_history;
} proto_chat_request;

/* The stream format a request asks for: 1 when absent or null, 1 or 3 when given,
 * -1 for anything else, format 2 included: format 3 replaced it (veild's 422 and the
 * enclave's bad_request both use this). */
int proto_stream_format(const json_t *v);
#define PROTO_STREAM_FORMATS "1 or 3"

/* Format 3's sealed request, opened (the JSON object inside encrypted_request). */
#define PROTO_REQUEST_ID_LEN 16
#define PROTO_ISSUED_WINDOW_S 300 /* issued_at within this of the enclave's clock */
typedef struct proto_bound {
    const char *message;          /* borrowed from the inner JSON */
    size_t message_len;
    proto_turn *history;          /* plain turns: role 0/1 and text (owned) */
    size_t n_history;
    uint8_t client_pub[X25519_KEY_LEN], storage_pub[X25519_KEY_LEN];
    char model[PROTO_MODEL_MAX + 1];
    const char *session_id;       /* borrowed */
    uint8_t request_id[PROTO_REQUEST_ID_LEN];
    long long issued_at;          /* Unix seconds */
} proto_bound;

/* The shape of the opened request (every field present and well formed). 0, or -1
 * with err (BAD_REQUEST). */
int proto_parse_bound_request(const json_t *inner, proto_bound *out, proto_error *err);
void proto_bound_free(proto_bound *b);
/* The outer request's keys, model and session equal the sealed ones. 0, or -1 with
 * err (BINDING_MISMATCH naming the field). */
int proto_check_binding(const proto_chat_request *outer, const proto_bound *inner, proto_error *err);
/* The sealed request's plaintext a format-3 client makes (history: an array of
 * {"role","content"}, borrowed; keys as 64 hex; request_id as 32 hex). */
json_t *proto_bound_request_json(const char *message, const json_t *history, const char *client_pub_hex,
                                 const char *storage_pub_hex, const char *model, const char *session_id,
                                 const char *request_id_hex, long long issued_at);
/* The outer CHAT_STREAM of format 3 (the sealed request borrowed). */
json_t *proto_bound_stream_request(const json_t *sealed, const char *client_pub_hex, const char *storage_pub_hex,
                                   const char *model, const char *session_id);

/* Parses the request's shape (keys are hex of 32 bytes and not low-order points;
 * history entries have a valid role). Decryption is the enclave's business. 0, or
 * -1 with err filled (BAD_REQUEST). */
int proto_parse_chat_request(const json_t *req, bool stream, proto_chat_request *out, proto_error *err);
void proto_chat_request_free(proto_chat_request *r);

/* The format-1 CHAT_STREAM request a parent sends (the keys as 64 hex chars;
 * history is a JSON array of sealed turns, borrowed; sent without stream_format). */
json_t *proto_chat_stream_request(const json_t *message, const json_t *history, const char *client_pub_hex,
                                  const char *storage_pub_hex, const char *model, const char *session_id);

/* SET_CREDENTIALS, written into out (grown securely, wiped by the caller):
 * {"command":"SET_CREDENTIALS","credentials":{...}} plus a newline. expiration may
 * be NULL or "". -1 if a value is not valid UTF-8. */
int proto_write_set_credentials(vbuf *out, const char *akid, const char *secret_key, const char *token,
                                const char *expiration);

/* ---- replies and events of the enclave (encoders) ---------------------------------- */

/* {"status":"error","source":...,"error":msg} (and "error_code"/"command" when set).
 * A msg that is not UTF-8 (an echo of the request cut inside a character) goes out
 * with its non-ASCII bytes as '?': there is always a reply. */
json_t *proto_error_reply(proto_cmd cmd, enclave_err code, const char *msg);
/* A stream's one error event: {"error":msg,"is_final":true,"error_code":code}. */
json_t *proto_stream_error(enclave_err code, const char *msg);
/* The unknown-command reply, with the available commands, as the original (the name
 * as proto_error_reply treats msg). */
json_t *proto_unknown_command_reply(const char *upper_name);

/* Format 1: {"encrypted_content": EP} or {"encrypted_thinking": EP}. */
int proto_write_chunk_v1(vbuf *out, bool thinking, const struct ep *e);
/* Format 3: {"encrypted_content_v3":{"seq":n,"ciphertext":hex,"auth_tag":hex}}
 * (or encrypted_thinking_v3). */
int proto_write_element(vbuf *out, bool thinking, uint64_t seq, const uint8_t *ct, size_t len,
                        const uint8_t tag[GCM_TAG_LEN]);
/* Format 3's first event: {"stream_format":3,"stream_key":{"ephemeral_public_key","hkdf_salt"}}. */
int proto_write_stream_key(vbuf *out, const uint8_t epk[X25519_KEY_LEN], const uint8_t salt[HKDF_SALT_LEN]);

typedef struct proto_final {
    const json_t *stored_user;      /* EP */
    const json_t *stored_assistant; /* EP */
    const char *model_used;
    long input_tokens, output_tokens;
    const char *stop_reason;        /* may be NULL */
    bool has_end;                   /* format 3: the end element */
    uint64_t end_seq;
    uint8_t end_tag[GCM_TAG_LEN];
    uint8_t end_ct[64];             /* the stored messages' hashes, sealed */
    size_t end_ct_len;
} proto_final;

/* CHAT_STREAM's final event (is_final, the stored messages, usage, stream_end). */
json_t *proto_final_event(const proto_final *f);
/* CHAT's success reply (the stored pair as encrypted_response/encrypted_user_message). */
json_t *proto_chat_reply(const proto_final *f);

/* ---- events, parsed (the parent's side) -------------------------------------------- */

typedef enum proto_event_kind {
    PROTO_EV_INVALID = 0,  /* not an event of this protocol */
    PROTO_EV_STREAM_KEY,   /* format 3's key: epk, salt (another format's: INVALID) */
    PROTO_EV_CHUNK,        /* format 1: ep */
    PROTO_EV_THINKING,     /* format 1: ep */
    PROTO_EV_CHUNK_V3,     /* format 3: elem {seq, ciphertext, auth_tag} */
    PROTO_EV_THINKING_V3,
    PROTO_EV_FINAL,        /* final (the stored messages...) */
    PROTO_EV_ERROR,        /* err, err_msg */
} proto_event_kind;

typedef struct proto_event {
    proto_event_kind kind;
    const json_t *ep;        /* CHUNK, THINKING (borrowed) */
    const json_t *elem;      /* CHUNK_V3, THINKING_V3 (borrowed) */
    int format;              /* STREAM_KEY */
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    proto_final final;       /* FINAL */
    const json_t *stream_end; /* FINAL, format 3 (borrowed) */
    enclave_err err;         /* ERROR */
    const char *err_msg;     /* ERROR (borrowed, may be "") */
} proto_event;

/* Classifies one event line of a CHAT_STREAM reply. A final event is recognised
 * first, whatever else it carries (an event with content and is_final ends the
 * stream). PROTO_EV_INVALID for anything malformed. */
proto_event_kind proto_parse_event(const json_t *ev, proto_event *out);

/* ---- veild's SSE events (spec §4.3), from the parsed enclave events ----------------- */

#define PROTO_SSE_SESSION "session"
#define PROTO_SSE_STREAM_KEY "stream_key"
#define PROTO_SSE_CHUNK "encrypted_chunk"
#define PROTO_SSE_THINKING "thinking"
#define PROTO_SSE_CHUNK_V3 "encrypted_chunk_v3"
#define PROTO_SSE_THINKING_V3 "thinking_v3"
#define PROTO_SSE_STORED "stored"
#define PROTO_SSE_DONE "done"
#define PROTO_SSE_ERROR "error"

/* The SSE event veild relays for a non-final enclave event (STREAM_KEY, CHUNK,
 * THINKING, *_V3), or NULL for other kinds. */
json_t *proto_sse_relay(const proto_event *ev);
json_t *proto_sse_session(const char *session_id);
/* "stored" (with format 3's stream_end, and veil's added ids of the two
 * stored messages, for the client's history tag), "done", "error". */
json_t *proto_sse_stored(const char *model_used, long input_tokens, long output_tokens, const json_t *stream_end,
                         const char *user_message_id, const char *assistant_message_id);
json_t *proto_sse_done(void);
json_t *proto_sse_error(const char *message);

/* ---- SSE events, parsed (the client's side) ----------------------------------------- */

typedef enum proto_sse_kind {
    PROTO_SSE_INVALID = 0,
    PROTO_SSE_EV_SESSION,    /* session_id */
    PROTO_SSE_EV_STREAM_KEY, /* format, epk, salt */
    PROTO_SSE_EV_CHUNK,      /* ep */
    PROTO_SSE_EV_THINKING,   /* ep */
    PROTO_SSE_EV_CHUNK_V3,   /* elem (the event itself) */
    PROTO_SSE_EV_THINKING_V3,
    PROTO_SSE_EV_STORED,     /* model_used, tokens, stream_end */
    PROTO_SSE_EV_DONE,
    PROTO_SSE_EV_ERROR,      /* message */
    PROTO_SSE_EV_OTHER,      /* a type this client does not know: ignore it */
} proto_sse_kind;

typedef struct proto_sse_event {
    proto_sse_kind kind;
    const char *session_id;
    const json_t *ep;
    const json_t *elem;
    int format;
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    const char *model_used;
    long input_tokens, output_tokens;
    const json_t *stream_end;
    const char *user_message_id, *assistant_message_id; /* STORED, when veild sends them */
    const char *message;
} proto_sse_event;

proto_sse_kind proto_parse_sse(const json_t *ev, proto_sse_event *out);

#endif

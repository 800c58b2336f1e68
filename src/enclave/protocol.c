/* protocol — the enclave protocol and the SSE chat events (see protocol.h).
 * Stays whole (~700 lines): it is the one place the contract is spelled, its names,
 * parsers and encoders side by side so that each field's reader and writer agree. */
#include "enclave/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/base64.h"
#include "common/hex.h"
#include "crypto/ep.h"

/* ---- commands ---- */

static const char *const CMD_NAMES[PROTO_N_COMMANDS + 1] = {
    NULL, "GET_PUBLIC_KEY", "SET_CREDENTIALS", "HEALTH", "CHAT", "RUN_TESTS", "CHAT_STREAM", "GET_ATTESTATION",
};

const char *proto_cmd_name(proto_cmd c)
{
    return c > PROTO_CMD_UNKNOWN && c <= PROTO_CMD_GET_ATTESTATION ? CMD_NAMES[c] : "UNKNOWN";
}

proto_cmd proto_cmd_parse(const char *s)
{
    for (int c = 1; s && c <= PROTO_N_COMMANDS; c++)
        if (strcasecmp(s, CMD_NAMES[c]) == 0)
            return (proto_cmd)c;
    return PROTO_CMD_UNKNOWN;
}

/* ---- errors ---- */

static const struct {
    const char *code;
    const char *client; /* what a chat client is shown (veild's fixed texts) */
} ERRS[] = {
    [ENCLAVE_OK] = {"ok", ""},
    [ENCLAVE_ERR_BAD_REQUEST] = {"bad_request", "Invalid request"},
    [ENCLAVE_ERR_DECRYPT_FAILED] = {"decrypt_failed", "Could not decrypt the message: the enclave key may have "
                                                      "changed, fetch the enclave key again and retry"},
    [ENCLAVE_ERR_NO_CREDENTIALS] = {"no_credentials", "No AWS credentials"},
    [ENCLAVE_ERR_CREDENTIALS_EXPIRED] = {"credentials_expired", "AWS credentials expired"},
    [ENCLAVE_ERR_BUSY] = {"busy", "Service busy, please retry"},
    [ENCLAVE_ERR_INTERNAL] = {"internal", "Internal error"},
    [ENCLAVE_ERR_EMPTY_ANSWER] = {"empty_answer", "The model returned an empty answer"},
    [ENCLAVE_ERR_TIMEOUT] = {"timeout", "Request timed out"},
    [ENCLAVE_ERR_SHUTTING_DOWN] = {"shutting_down", "Service restarting, please retry"},
    [ENCLAVE_ERR_UPSTREAM_THROTTLED] = {"upstream_throttled", "The model is busy, please retry shortly"},
    [ENCLAVE_ERR_UPSTREAM_REJECTED] = {"upstream_rejected", "The model rejected the request"},
    [ENCLAVE_ERR_UPSTREAM_DENIED] = {"upstream_denied", "The model service refused the enclave's credentials"},
    [ENCLAVE_ERR_UPSTREAM_UNAVAILABLE] = {"upstream_unavailable", "The model service failed, please retry"},
    [ENCLAVE_ERR_UPSTREAM_EXCEPTION] = {"upstream_exception", "The model service failed, please retry"},
    [ENCLAVE_ERR_UPSTREAM_CORRUPT] = {"upstream_corrupt", "The model service failed, please retry"},
    [ENCLAVE_ERR_UPSTREAM_TRUNCATED] = {"upstream_truncated", "The model service failed, please retry"},
    [ENCLAVE_ERR_UPSTREAM_PROTOCOL] = {"upstream_protocol", "The model service failed, please retry"},
    [ENCLAVE_ERR_UPSTREAM_UNREACHABLE] = {"upstream_unreachable", "Cannot reach the model service"},
    [ENCLAVE_ERR_NO_ATTESTATION] = {"attestation_unavailable", "The enclave cannot attest its key"},
    [ENCLAVE_ERR_BINDING_MISMATCH] = {"binding_mismatch", "The request was altered in transit: refused"},
    [ENCLAVE_ERR_STALE_REQUEST] = {"stale_request", "The request is too old (or the clock is off): refused"},
    [ENCLAVE_ERR_REPLAYED_REQUEST] = {"replayed_request", "The request was already used: refused"},
    [ENCLAVE_ERR_LEGACY_REFUSED] = {"legacy_refused", "This service accepts only bound requests (stream format 3)"},
    [ENCLAVE_ERR_UNAVAILABLE] = {"enclave_unavailable", "Service temporarily unavailable"},
    [ENCLAVE_ERR_PROTOCOL] = {"enclave_protocol", "Internal error"},
    [ENCLAVE_ERR_UNKNOWN] = {"unknown", "Internal error"},
};

#define N_ERRS (sizeof ERRS / sizeof ERRS[0])

const char *enclave_err_name(enclave_err e)
{
    return (size_t)e < N_ERRS ? ERRS[e].code : "unknown";
}

enclave_err enclave_err_parse(const char *code)
{
    for (size_t i = 1; code && i < N_ERRS; i++)
        if (strcmp(code, ERRS[i].code) == 0)
            return (enclave_err)i;
    return ENCLAVE_ERR_UNKNOWN;
}

const char *enclave_err_client_message(enclave_err e, const char *enclave_msg)
{
    if (e == ENCLAVE_ERR_BAD_REQUEST && enclave_msg && *enclave_msg)
        return enclave_msg; /* our enclave's own validation text, never upstream text */
    return (size_t)e < N_ERRS && e != ENCLAVE_OK ? ERRS[e].client : "Internal error";
}

/* ---- requests ---- */

long proto_parse_attestation_request(const json_t *req, uint8_t *out, proto_error *err)
{
    const json_t *v = json_object_get(req, PF_NONCE);
    size_t n = json_string_length(v);
    err->code = ENCLAVE_ERR_BAD_REQUEST;
    if (!json_is_string(v)) {
        snprintf(err->message, sizeof err->message, "Missing field: 'nonce'");
        return -1;
    }
    if (n == 0 || n % 2 || n / 2 > PROTO_NONCE_MAX ||
        hex_decode_exact(json_string_value(v), n, out, n / 2) < 0) {
        snprintf(err->message, sizeof err->message, "Invalid field: 'nonce' must be 1 to %d bytes of hex",
                 PROTO_NONCE_MAX);
        return -1;
    }
    err->code = ENCLAVE_OK;
    return (long)(n / 2);
}

json_t *proto_attestation_request(const uint8_t *nonce, size_t len)
{
    char *hex = malloc(2 * len + 1);
    if (!hex)
        return NULL;
    hex_encode(nonce, len, hex);
    json_t *o = json_pack("{s:s, s:s}", PF_COMMAND, proto_cmd_name(PROTO_CMD_GET_ATTESTATION), PF_NONCE, hex);
    free(hex);
    return o;
}

json_t *proto_attestation_reply(const uint8_t *doc, size_t len, const char *pub_hex, const char *nsm_name)
{
    char *b64 = malloc(base64_encoded_len(B64_STD, len) + 1);
    if (!b64)
        return NULL;
    base64_encode(B64_STD, doc, len, b64);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s}", PF_STATUS, "success", PF_COMMAND,
                          proto_cmd_name(PROTO_CMD_GET_ATTESTATION), PF_ATTESTATION, b64, PF_PUBLIC_KEY, pub_hex,
                          PF_NSM, nsm_name);
    free(b64);
    return o;
}

static void set_err(proto_error *err, enclave_err code, const char *what, const char *field)
{
    err->code = code;
    snprintf(err->message, sizeof err->message, "%s%s%s", what, field ? field : "", field ? "'" : "");
}

/* A present, non-null field, or the original's KeyError wording. */
static const json_t *need(const json_t *req, const char *k, proto_error *err)
{
    const json_t *v = json_object_get(req, k);
    if (v && !json_is_null(v))
        return v;
    set_err(err, ENCLAVE_ERR_BAD_REQUEST, "Missing field: '", k);
    return NULL;
}

static int key_field(const json_t *req, const char *k, uint8_t out[X25519_KEY_LEN], proto_error *err)
{
    const json_t *v = need(req, k, err);
    if (!v)
        return -1;
    if (!json_is_string(v) || hex_decode_exact(json_string_value(v), json_string_length(v), out, X25519_KEY_LEN) < 0) {
        err->code = ENCLAVE_ERR_BAD_REQUEST;
        snprintf(err->message, sizeof err->message, "Invalid field: '%s' must be 64 hex characters", k);
        return -1;
    }
    if (!x25519_public_key_ok(out)) { /* every seal to it would fail midway (F0) */
        err->code = ENCLAVE_ERR_BAD_REQUEST;
        snprintf(err->message, sizeof err->message, "Invalid field: '%s' is not a valid X25519 public key (low order)",
                 k);
        return -1;
    }
    return 0;
}

static int parse_role(const json_t *entry, size_t i, int *role, proto_error *err)
{
    const json_t *r = json_object_get(entry, PF_ROLE);
    *role = -1;
    if (!r || json_is_null(r))
        return 0;
    const char *s = json_string_value(r);
    if (s && strcmp(s, "user") == 0)
        *role = 0;
    else if (s && strcmp(s, "assistant") == 0)
        *role = 1;
    else {
        err->code = ENCLAVE_ERR_BAD_REQUEST;
        snprintf(err->message, sizeof err->message, "Invalid role in history entry %zu", i);
        return -1;
    }
    return 0;
}

static int parse_history(const json_t *req, bool stream, proto_chat_request *out, proto_error *err)
{
    const char *name = stream ? PF_ENCRYPTED_HISTORY : PF_HISTORY;
    const json_t *hist = json_object_get(req, name);
    if (!hist || json_is_null(hist))
        return 0;
    if (!json_is_array(hist) || json_array_size(hist) > PROTO_MAX_HISTORY) {
        set_err(err, ENCLAVE_ERR_BAD_REQUEST, "Invalid field: '", name);
        return -1;
    }
    size_t n = json_array_size(hist);
    out->history = n ? calloc(n, sizeof *out->history) : NULL;
    if (n && !out->history) {
        set_err(err, ENCLAVE_ERR_INTERNAL, "Out of memory", NULL);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *entry = json_array_get(hist, i);
        proto_turn *t = &out->history[i];
        if (parse_role(entry, i, &t->role, err) < 0)
            return -1;
        if (stream) {
            t->ep = entry;
        } else {
            const json_t *content = json_object_get(entry, PF_CONTENT);
            if (!json_is_string(content)) {
                err->code = ENCLAVE_ERR_BAD_REQUEST;
                snprintf(err->message, sizeof err->message, "Missing field: 'content' in history entry %zu", i);
                return -1;
            }
            t->text = json_string_value(content);
            t->text_len = json_string_length(content);
        }
        out->n_history = i + 1;
    }
    return 0;
}

int proto_stream_format(const json_t *v)
{
    if (!v || json_is_null(v))
        return 1;
    /* format 2 (one key per stream, unbound) was replaced by format 3 */
    if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 3))
        return -1;
    return (int)json_integer_value(v);
}

/* ---- format 3: the bound request ---- */

static int hex_key(const json_t *o, const char *k, uint8_t out[X25519_KEY_LEN], proto_error *err)
{
    const json_t *v = json_object_get(o, k);
    if (!json_is_string(v) || hex_decode_exact(json_string_value(v), json_string_length(v), out, X25519_KEY_LEN) < 0 ||
        !x25519_public_key_ok(out)) {
        err->code = ENCLAVE_ERR_BAD_REQUEST;
        snprintf(err->message, sizeof err->message, "Invalid sealed field: '%s'", k);
        return -1;
    }
    return 0;
}

int proto_parse_bound_request(const json_t *inner, proto_bound *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    err->code = ENCLAVE_ERR_BAD_REQUEST;
    const json_t *msg = json_object_get(inner, PF_MESSAGE), *model = json_object_get(inner, PF_MODEL_ID),
                 *sid = json_object_get(inner, PF_SESSION_ID), *rid = json_object_get(inner, PF_REQUEST_ID),
                 *at = json_object_get(inner, PF_ISSUED_AT), *hist = json_object_get(inner, PF_HISTORY);
    const char *bad = !json_is_object(inner) ? "the sealed request is not a JSON object"
                      : !json_is_string(msg) ? "Invalid sealed field: 'message'"
                      : !json_is_string(model) || json_string_length(model) == 0 ||
                              json_string_length(model) > PROTO_MODEL_MAX ? "Invalid sealed field: 'model_id'"
                      : !json_is_string(sid) || json_string_length(sid) == 0 ? "Invalid sealed field: 'session_id'"
                      : !json_is_string(rid) || json_string_length(rid) != 2 * PROTO_REQUEST_ID_LEN ||
                              hex_decode_exact(json_string_value(rid), json_string_length(rid), out->request_id,
                                               PROTO_REQUEST_ID_LEN) < 0 ? "Invalid sealed field: 'request_id'"
                      : !json_is_integer(at) ? "Invalid sealed field: 'issued_at'"
                      : !json_is_array(hist) || json_array_size(hist) > PROTO_MAX_HISTORY
                          ? "Invalid sealed field: 'history'"
                          : NULL;
    if (bad) {
        snprintf(err->message, sizeof err->message, "%s", bad);
        return -1;
    }
    if (hex_key(inner, PF_CLIENT_PUBLIC_KEY, out->client_pub, err) < 0 ||
        hex_key(inner, PF_STORAGE_PUBLIC_KEY, out->storage_pub, err) < 0)
        return -1;
    out->message = json_string_value(msg);
    out->message_len = json_string_length(msg);
    snprintf(out->model, sizeof out->model, "%s", json_string_value(model));
    out->session_id = json_string_value(sid);
    out->issued_at = (long long)json_integer_value(at);
    size_t n = json_array_size(hist);
    out->history = n ? calloc(n, sizeof *out->history) : NULL;
    if (n && !out->history) {
        set_err(err, ENCLAVE_ERR_INTERNAL, "Out of memory", NULL);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(hist, i), *c = json_object_get(t, PF_CONTENT);
        proto_turn *turn = &out->history[i];
        if (parse_role(t, i, &turn->role, err) < 0 || turn->role < 0 || !json_is_string(c)) {
            err->code = ENCLAVE_ERR_BAD_REQUEST;
            snprintf(err->message, sizeof err->message, "Invalid sealed history turn %zu", i);
            proto_bound_free(out);
            return -1;
        }
        turn->text = json_string_value(c);
        turn->text_len = json_string_length(c);
        out->n_history = i + 1;
    }
    err->code = ENCLAVE_OK;
    return 0;
}

void proto_bound_free(proto_bound *b)
{
    free(b->history);
    b->history = NULL;
    b->n_history = 0;
}

int proto_check_binding(const proto_chat_request *outer, const proto_bound *inner, proto_error *err)
{
    const char *field = memcmp(outer->reply_pub, inner->client_pub, X25519_KEY_LEN) != 0 ? PF_CLIENT_PUBLIC_KEY
                        : memcmp(outer->storage_pub, inner->storage_pub, X25519_KEY_LEN) != 0 ? PF_STORAGE_PUBLIC_KEY
                        : strcmp(outer->model, inner->model) != 0                         ? PF_MODEL_ID
                        : !outer->session_id || strcmp(outer->session_id, inner->session_id) != 0 ? PF_SESSION_ID
                                                                                                 : NULL;
    if (!field)
        return 0;
    err->code = ENCLAVE_ERR_BINDING_MISMATCH;
    snprintf(err->message, sizeof err->message, "The request's '%s' differs from the sealed one", field);
    return -1;
}

json_t *proto_bound_request_json(const char *message, const json_t *history, const char *client_pub_hex,
                                 const char *storage_pub_hex, const char *model, const char *session_id,
                                 const char *request_id_hex, long long issued_at)
{
    return json_pack("{s:s, s:O, s:s, s:s, s:s, s:s, s:s, s:I}", PF_MESSAGE, message, PF_HISTORY, history,
                     PF_CLIENT_PUBLIC_KEY, client_pub_hex, PF_STORAGE_PUBLIC_KEY, storage_pub_hex, PF_MODEL_ID,
                     model, PF_SESSION_ID, session_id, PF_REQUEST_ID, request_id_hex, PF_ISSUED_AT,
                     (json_int_t)issued_at);
}

json_t *proto_bound_stream_request(const json_t *sealed, const char *client_pub_hex, const char *storage_pub_hex,
                                   const char *model, const char *session_id)
{
    return json_pack("{s:s, s:i, s:O, s:s, s:s, s:s, s:s}", PF_COMMAND, proto_cmd_name(PROTO_CMD_CHAT_STREAM),
                     PF_STREAM_FORMAT, 3, PF_ENCRYPTED_REQUEST, sealed, PF_CLIENT_PUBLIC_KEY, client_pub_hex,
                     PF_STORAGE_PUBLIC_KEY, storage_pub_hex, PF_MODEL_ID, model, PF_SESSION_ID, session_id);
}

int proto_parse_chat_request(const json_t *req, bool stream, proto_chat_request *out, proto_error *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->stream = stream;
    out->format = stream ? proto_stream_format(json_object_get(req, PF_STREAM_FORMAT)) : 1;
    if (out->format < 0) {
        set_err(err, ENCLAVE_ERR_BAD_REQUEST, "Unsupported stream_format (" PROTO_STREAM_FORMATS ")", NULL);
        return -1;
    }
    /* format 3 seals the whole request; the others seal the message alone */
    const json_t *sealed = need(req, out->format == 3 ? PF_ENCRYPTED_REQUEST : PF_ENCRYPTED_MESSAGE, err);
    const json_t *model = sealed ? need(req, PF_MODEL_ID, err) : NULL;
    if (!sealed || !model)
        return -1;
    if (!json_is_string(model) || json_string_length(model) == 0 || json_string_length(model) > PROTO_MODEL_MAX) {
        set_err(err, ENCLAVE_ERR_BAD_REQUEST, stream ? "Invalid field: 'model_id'" : "model_id is required", NULL);
        return -1;
    }
    snprintf(out->model, sizeof out->model, "%s", json_string_value(model));
    if (out->format == 3)
        out->request = sealed;
    else
        out->message = sealed;
    if (stream) {
        if (key_field(req, PF_CLIENT_PUBLIC_KEY, out->reply_pub, err) < 0 ||
            key_field(req, PF_STORAGE_PUBLIC_KEY, out->storage_pub, err) < 0)
            return -1;
        out->session_id = json_string_value(json_object_get(req, PF_SESSION_ID));
        if (out->format == 3) {
            if (!out->session_id) {
                set_err(err, ENCLAVE_ERR_BAD_REQUEST, "Missing field: '", PF_SESSION_ID);
                return -1;
            }
            return 0; /* its history is inside the sealed request */
        }
    } else {
        if (key_field(req, PF_USER_PUBLIC_KEY, out->reply_pub, err) < 0)
            return -1;
        out->system_prompt = json_string_value(json_object_get(req, PF_SYSTEM_PROMPT));
    }
    if (parse_history(req, stream, out, err) < 0) {
        proto_chat_request_free(out);
        return -1;
    }
    return 0;
}

void proto_chat_request_free(proto_chat_request *r)
{
    free(r->history);
    r->history = NULL;
    r->n_history = 0;
}

json_t *proto_chat_stream_request(const json_t *message, const json_t *history, const char *client_pub_hex,
                                  const char *storage_pub_hex, const char *model, const char *session_id)
{
    json_t *req = json_pack("{s:s, s:O, s:O, s:s, s:s, s:s, s:s}", PF_COMMAND, proto_cmd_name(PROTO_CMD_CHAT_STREAM),
                            PF_ENCRYPTED_MESSAGE, message, PF_ENCRYPTED_HISTORY, history, PF_STORAGE_PUBLIC_KEY,
                            storage_pub_hex, PF_CLIENT_PUBLIC_KEY, client_pub_hex, PF_MODEL_ID, model, PF_SESSION_ID,
                            session_id);
    return req;
}

int proto_write_set_credentials(vbuf *out, const char *akid, const char *secret_key, const char *token,
                                const char *expiration)
{
    const char *part[] = {"{\"" PF_COMMAND "\":\"SET_CREDENTIALS\",\"" PF_CREDENTIALS "\":{\"" PF_ACCESS_KEY_ID "\":",
                          ",\"" PF_SECRET_ACCESS_KEY "\":", ",\"" PF_SESSION_TOKEN "\":", ",\"" PF_EXPIRATION "\":"};
    const char *val[] = {akid, secret_key, token, expiration};
    size_t n = expiration && *expiration ? 4 : 3;
    for (size_t i = 0; i < n; i++)
        if (vbuf_append_secure(out, part[i], strlen(part[i])) < 0 || vbuf_append_json_string(out, val[i]) < 0)
            return -1;
    return vbuf_append_secure(out, "}}\n", 3);
}

/* ---- replies and events ---- */

/* msg as a JSON string. A message that echoes the request (jansson's error text
 * quotes up to 20 of its bytes, an unknown command's name is cut to 63) may end
 * inside a UTF-8 character: json_string() refuses that, and the parent would wait
 * for a reply that never comes. Such a message goes out with its non-ASCII bytes
 * as '?' (found by fuzz_enclave_request and fuzz_protocol). */
static json_t *text_json(const char *msg)
{
    json_t *v = json_string(msg);
    if (v || !msg)
        return v;
    char *t = strdup(msg);
    if (!t)
        return NULL;
    for (char *p = t; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(t);
    free(t);
    return v;
}

json_t *proto_error_reply(proto_cmd cmd, enclave_err code, const char *msg)
{
    json_t *o = json_pack("{s:s, s:s, s:o}", PF_STATUS, "error", PF_SOURCE, PROTO_SOURCE, PF_ERROR, text_json(msg));
    if (o && cmd != PROTO_CMD_UNKNOWN)
        json_object_set_new(o, PF_COMMAND, json_string(proto_cmd_name(cmd)));
    if (o && code != ENCLAVE_OK)
        json_object_set_new(o, PF_ERROR_CODE, json_string(enclave_err_name(code)));
    return o;
}

json_t *proto_stream_error(enclave_err code, const char *msg)
{
    return json_pack("{s:s, s:b, s:s}", PF_ERROR, msg, "is_final", 1, PF_ERROR_CODE, enclave_err_name(code));
}

json_t *proto_unknown_command_reply(const char *upper_name)
{
    char msg[128];
    json_t *avail = json_array();
    for (int c = 1; c <= PROTO_N_COMMANDS; c++)
        json_array_append_new(avail, json_string(CMD_NAMES[c]));
    snprintf(msg, sizeof msg, "Unknown command: %s", upper_name); /* the original echoes it upper-cased */
    return json_pack("{s:s, s:o, s:o, s:s}", PF_STATUS, "error", PF_ERROR, text_json(msg), PF_AVAILABLE_COMMANDS,
                     avail, PF_SOURCE, PROTO_SOURCE);
}

#define EV_CONTENT PF_ENCRYPTED_CONTENT
#define EV_THINKING "encrypted_thinking"
#define EV_V3_SUFFIX "_v3"
#define EV_STREAM_KEY "stream_key"
#define EV_EPK "ephemeral_public_key"
#define EV_SALT "hkdf_salt"
#define EV_SEQ "seq"
#define EV_CIPHERTEXT "ciphertext"
#define EV_AUTH_TAG "auth_tag"
#define EV_IS_FINAL "is_final"
#define EV_STORED_USER "stored_user_message"
#define EV_STORED_ASSISTANT "stored_assistant_message"
#define EV_MODEL_USED PF_MODEL_USED
#define EV_INPUT_TOKENS "input_tokens"
#define EV_OUTPUT_TOKENS "output_tokens"
#define EV_STOP_REASON "stop_reason"
#define EV_STREAM_END "stream_end"

int proto_write_chunk_v1(vbuf *out, bool thinking, const struct ep *e)
{
    return vbuf_printf(out, "{\"%s\":", thinking ? EV_THINKING : EV_CONTENT) < 0 || ep_write_json(e, out) < 0 ||
                   vbuf_append(out, "}", 1) < 0
               ? -1
               : 0;
}

int proto_write_element(vbuf *out, bool thinking, uint64_t seq, const uint8_t *ct, size_t len,
                        const uint8_t tag[GCM_TAG_LEN])
{
    return vbuf_printf(out, "{\"%s" EV_V3_SUFFIX "\":{\"" EV_SEQ "\":%llu,\"" EV_CIPHERTEXT "\":\"",
                       thinking ? EV_THINKING : EV_CONTENT, (unsigned long long)seq) < 0 ||
                   vbuf_append_hex(out, ct, len) < 0 || vbuf_append_str(out, "\",\"" EV_AUTH_TAG "\":\"") < 0 ||
                   vbuf_append_hex(out, tag, GCM_TAG_LEN) < 0 || vbuf_append_str(out, "\"}}") < 0
               ? -1
               : 0;
}

int proto_write_stream_key(vbuf *out, const uint8_t epk[X25519_KEY_LEN], const uint8_t salt[HKDF_SALT_LEN])
{
    return vbuf_append_str(out, "{\"" PF_STREAM_FORMAT "\":3,\"" EV_STREAM_KEY "\":{\"" EV_EPK "\":\"") < 0 ||
                   vbuf_append_hex(out, epk, X25519_KEY_LEN) < 0 ||
                   vbuf_append_str(out, "\",\"" EV_SALT "\":\"") < 0 ||
                   vbuf_append_hex(out, salt, HKDF_SALT_LEN) < 0 || vbuf_append_str(out, "\"}}") < 0
               ? -1
               : 0;
}

static json_t *stream_end_json(const proto_final *f)
{
    char tag[2 * GCM_TAG_LEN + 1], ct[2 * sizeof f->end_ct + 1];
    hex_encode(f->end_tag, GCM_TAG_LEN, tag);
    json_t *o = json_pack("{s:I, s:s}", EV_SEQ, (json_int_t)f->end_seq, EV_AUTH_TAG, tag);
    if (o && f->end_ct_len) { /* format 3: the stored messages' hashes */
        hex_encode(f->end_ct, f->end_ct_len, ct);
        json_object_set_new(o, EV_CIPHERTEXT, json_string(ct));
    }
    return o;
}

json_t *proto_final_event(const proto_final *f)
{
    json_t *o = json_pack("{s:b, s:O, s:O, s:s, s:I, s:I, s:s}", EV_IS_FINAL, 1, EV_STORED_USER, f->stored_user,
                          EV_STORED_ASSISTANT, f->stored_assistant, EV_MODEL_USED, f->model_used, EV_INPUT_TOKENS,
                          (json_int_t)f->input_tokens, EV_OUTPUT_TOKENS, (json_int_t)f->output_tokens,
                          EV_STOP_REASON, f->stop_reason ? f->stop_reason : "end_turn");
    if (o && f->has_end)
        json_object_set_new(o, EV_STREAM_END, stream_end_json(f));
    return o;
}

json_t *proto_chat_reply(const proto_final *f)
{
    return json_pack("{s:s, s:s, s:O, s:O, s:s, s:{s:I, s:I}, s:s, s:s}", PF_STATUS, "success", PF_COMMAND,
                     proto_cmd_name(PROTO_CMD_CHAT), "encrypted_response", f->stored_assistant,
                     "encrypted_user_message", f->stored_user, PF_MODEL_ID, f->model_used, "usage",
                     EV_INPUT_TOKENS, (json_int_t)f->input_tokens, EV_OUTPUT_TOKENS, (json_int_t)f->output_tokens,
                     EV_STOP_REASON, f->stop_reason ? f->stop_reason : "end_turn", PF_SOURCE, PROTO_SOURCE);
}

/* ---- events, parsed ---- */

static bool hex_field(const json_t *o, const char *k, uint8_t *out, size_t n)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) && hex_decode_exact(json_string_value(v), json_string_length(v), out, n) == 0;
}

static bool parse_stream_key(const json_t *sk, uint8_t epk[X25519_KEY_LEN], uint8_t salt[HKDF_SALT_LEN])
{
    return json_is_object(sk) && hex_field(sk, EV_EPK, epk, X25519_KEY_LEN) && hex_field(sk, EV_SALT, salt, HKDF_SALT_LEN);
}

static long int_of(const json_t *o, const char *k)
{
    return (long)json_integer_value(json_object_get(o, k));
}

proto_event_kind proto_parse_event(const json_t *ev, proto_event *out)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(ev))
        return out->kind = PROTO_EV_INVALID;
    /* a final event ends the stream whatever else it carries */
    if (json_is_true(json_object_get(ev, EV_IS_FINAL))) {
        const json_t *e = json_object_get(ev, PF_ERROR);
        if (e && !json_is_null(e) && !json_is_false(e)) {
            out->err = enclave_err_parse(json_string_value(json_object_get(ev, PF_ERROR_CODE)));
            out->err_msg = json_is_string(e) ? json_string_value(e) : "";
            return out->kind = PROTO_EV_ERROR;
        }
        proto_final *f = &out->final;
        f->stored_user = json_object_get(ev, EV_STORED_USER);
        f->stored_assistant = json_object_get(ev, EV_STORED_ASSISTANT);
        f->model_used = json_string_value(json_object_get(ev, EV_MODEL_USED));
        f->input_tokens = int_of(ev, EV_INPUT_TOKENS);
        f->output_tokens = int_of(ev, EV_OUTPUT_TOKENS);
        f->stop_reason = json_string_value(json_object_get(ev, EV_STOP_REASON));
        out->stream_end = json_object_get(ev, EV_STREAM_END);
        if (!json_is_object(f->stored_user) || !json_is_object(f->stored_assistant))
            return out->kind = PROTO_EV_INVALID;
        return out->kind = PROTO_EV_FINAL;
    }
    const json_t *e = json_object_get(ev, PF_ERROR);
    if (json_is_string(e)) { /* an error without is_final: the original's parent took it as the end */
        out->err = enclave_err_parse(json_string_value(json_object_get(ev, PF_ERROR_CODE)));
        out->err_msg = json_string_value(e);
        return out->kind = PROTO_EV_ERROR;
    }
    const json_t *v;
    if ((v = json_object_get(ev, EV_STREAM_KEY))) {
        const json_t *fmt = json_object_get(ev, PF_STREAM_FORMAT);
        out->format = json_is_integer(fmt) ? (int)json_integer_value(fmt) : 0;
        if (out->format != 3) /* the only format with a stream key */
            return out->kind = PROTO_EV_INVALID;
        return out->kind = parse_stream_key(v, out->epk, out->salt) ? PROTO_EV_STREAM_KEY : PROTO_EV_INVALID;
    }
    if ((v = json_object_get(ev, EV_CONTENT EV_V3_SUFFIX)) || (v = json_object_get(ev, EV_THINKING EV_V3_SUFFIX))) {
        out->elem = v;
        bool text = v == json_object_get(ev, EV_CONTENT EV_V3_SUFFIX);
        return out->kind = json_is_object(v) ? (text ? PROTO_EV_CHUNK_V3 : PROTO_EV_THINKING_V3) : PROTO_EV_INVALID;
    }
    if ((v = json_object_get(ev, EV_CONTENT)) || (v = json_object_get(ev, EV_THINKING))) {
        out->ep = v;
        bool text = v == json_object_get(ev, EV_CONTENT);
        return out->kind = json_is_object(v) ? (text ? PROTO_EV_CHUNK : PROTO_EV_THINKING) : PROTO_EV_INVALID;
    }
    return out->kind = PROTO_EV_INVALID;
}

/* ---- SSE ---- */

#define SSE_TYPE "type"

json_t *proto_sse_relay(const proto_event *ev)
{
    json_t *o = NULL;
    char epk[2 * X25519_KEY_LEN + 1], salt[2 * HKDF_SALT_LEN + 1];
    switch (ev->kind) {
    case PROTO_EV_STREAM_KEY:
        hex_encode(ev->epk, X25519_KEY_LEN, epk);
        hex_encode(ev->salt, HKDF_SALT_LEN, salt);
        o = json_pack("{s:s, s:i, s:s, s:s}", SSE_TYPE, PROTO_SSE_STREAM_KEY, PF_STREAM_FORMAT, ev->format, EV_EPK,
                      epk, EV_SALT, salt);
        break;
    case PROTO_EV_CHUNK:
    case PROTO_EV_THINKING: /* forwarded as it came: nothing waits for the whole answer */
        o = json_pack("{s:s, s:O}", SSE_TYPE, ev->kind == PROTO_EV_CHUNK ? PROTO_SSE_CHUNK : PROTO_SSE_THINKING,
                      EV_CONTENT, ev->ep);
        break;
    case PROTO_EV_CHUNK_V3:
    case PROTO_EV_THINKING_V3: /* the element's fields go out flat, beside its type */
        o = json_deep_copy(ev->elem);
        if (json_is_object(o))
            json_object_set_new(o, SSE_TYPE,
                                json_string(ev->kind == PROTO_EV_CHUNK_V3 ? PROTO_SSE_CHUNK_V3 : PROTO_SSE_THINKING_V3));
        break;
    default:
        break;
    }
    return o;
}

json_t *proto_sse_session(const char *session_id)
{
    return json_pack("{s:s, s:s}", SSE_TYPE, PROTO_SSE_SESSION, PF_SESSION_ID, session_id);
}

json_t *proto_sse_stored(const char *model_used, long input_tokens, long output_tokens, const json_t *stream_end,
                         const char *user_message_id, const char *assistant_message_id)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:I}", SSE_TYPE, PROTO_SSE_STORED, EV_MODEL_USED, model_used,
                          EV_INPUT_TOKENS, (json_int_t)input_tokens, EV_OUTPUT_TOKENS, (json_int_t)output_tokens);
    if (o && json_is_object(stream_end)) /* format 3: the proof the client saw every chunk */
        json_object_set_new(o, EV_STREAM_END, json_deep_copy(stream_end));
    if (o && user_message_id && assistant_message_id) {
        json_object_set_new(o, PF_USER_MESSAGE_ID, json_string(user_message_id));
        json_object_set_new(o, PF_ASSISTANT_MESSAGE_ID, json_string(assistant_message_id));
    }
    return o;
}

json_t *proto_sse_done(void)
{
    return json_pack("{s:s}", SSE_TYPE, PROTO_SSE_DONE);
}

json_t *proto_sse_error(const char *message)
{
    return json_pack("{s:s, s:s}", SSE_TYPE, PROTO_SSE_ERROR, "message", message);
}

proto_sse_kind proto_parse_sse(const json_t *ev, proto_sse_event *out)
{
    memset(out, 0, sizeof *out);
    const char *type = json_string_value(json_object_get(ev, SSE_TYPE));
    if (!type)
        return out->kind = PROTO_SSE_INVALID;
    if (strcmp(type, PROTO_SSE_SESSION) == 0) {
        out->session_id = json_string_value(json_object_get(ev, PF_SESSION_ID));
        return out->kind = out->session_id ? PROTO_SSE_EV_SESSION : PROTO_SSE_INVALID;
    }
    if (strcmp(type, PROTO_SSE_STREAM_KEY) == 0) {
        const json_t *fmt = json_object_get(ev, PF_STREAM_FORMAT);
        out->format = json_is_integer(fmt) ? (int)json_integer_value(fmt) : 0;
        return out->kind = parse_stream_key(ev, out->epk, out->salt) ? PROTO_SSE_EV_STREAM_KEY : PROTO_SSE_INVALID;
    }
    if (strcmp(type, PROTO_SSE_CHUNK) == 0 || strcmp(type, PROTO_SSE_THINKING) == 0) {
        out->ep = json_object_get(ev, EV_CONTENT);
        if (!json_is_object(out->ep))
            return out->kind = PROTO_SSE_INVALID;
        return out->kind = strcmp(type, PROTO_SSE_CHUNK) == 0 ? PROTO_SSE_EV_CHUNK : PROTO_SSE_EV_THINKING;
    }
    if (strcmp(type, PROTO_SSE_CHUNK_V3) == 0 || strcmp(type, PROTO_SSE_THINKING_V3) == 0) {
        out->elem = ev;
        return out->kind = strcmp(type, PROTO_SSE_CHUNK_V3) == 0 ? PROTO_SSE_EV_CHUNK_V3 : PROTO_SSE_EV_THINKING_V3;
    }
    if (strcmp(type, PROTO_SSE_STORED) == 0) {
        out->model_used = json_string_value(json_object_get(ev, EV_MODEL_USED));
        out->input_tokens = int_of(ev, EV_INPUT_TOKENS);
        out->output_tokens = int_of(ev, EV_OUTPUT_TOKENS);
        out->stream_end = json_object_get(ev, EV_STREAM_END);
        out->user_message_id = json_string_value(json_object_get(ev, PF_USER_MESSAGE_ID));
        out->assistant_message_id = json_string_value(json_object_get(ev, PF_ASSISTANT_MESSAGE_ID));
        return out->kind = PROTO_SSE_EV_STORED;
    }
    if (strcmp(type, PROTO_SSE_DONE) == 0)
        return out->kind = PROTO_SSE_EV_DONE;
    if (strcmp(type, PROTO_SSE_ERROR) == 0) {
        out->message = json_string_value(json_object_get(ev, "message"));
        if (!out->message)
            out->message = "unknown error";
        return out->kind = PROTO_SSE_EV_ERROR;
    }
    return out->kind = PROTO_SSE_EV_OTHER;
}

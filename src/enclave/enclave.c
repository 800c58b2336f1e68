#include "enclave/enclave.h"

#include <ctype.h>
#include <event2/event.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include "aws/bedrock.h"
#include "common/isotime.h"
#include "common/hex.h"
#include "common/log.h"
#include "crypto/ep.h"
#include "crypto/stream_v2.h"
#include "enclave/history.h"
#include "enclave/selftest.h"

#define DEFAULT_MAX_STREAMS 1024u
#define DEFAULT_STREAM_TIMEOUT_MS 300000u
#define MAX_HISTORY 1000

static const char *const COMMANDS[] = {"GET_PUBLIC_KEY", "SET_CREDENTIALS", "HEALTH",
                                       "CHAT", "RUN_TESTS", "CHAT_STREAM"};

struct enclave_core {
    struct event_base *base;
    https_ctx *https;
    bedrock_client *bedrock;
    x25519_key *key; /* the transport private key: memory only, never logged */
    uint8_t pub[32];
    char pub_hex[65];
    char region[64];
    /* credentials: memory only, wiped when replaced */
    bool has_creds;
    char *akid, *secret, *token;
    char expiration[64];
    bool has_expiration;
    time_t expires_at;
    time_t started;
    unsigned active, max_streams;
    unsigned stream_timeout_ms;
    size_t max_request;
    LIST_HEAD(, enclave_req) reqs; /* running CHAT / CHAT_STREAM requests */
};

struct enclave_req {
    enclave_core *core;
    LIST_ENTRY(enclave_req) link;
    enclave_sink sink;
    void *ud;
    char rid[LOG_RID_LEN + 1];
    bool stream; /* CHAT_STREAM, else CHAT */
    bedrock_call *call;
    struct event *deadline;
    uint8_t reply_pub[32];   /* client_public_key (stream) or user_public_key (CHAT) */
    uint8_t storage_pub[32]; /* stream only */
    bool v2;                 /* stream format 2: one key per stream (stream_v2.h) */
    sv2 sv;
    char model[160];
    vbuf user_text;          /* plaintext, wiped */
    vbuf answer;             /* plaintext, wiped */
    long in_tokens, out_tokens;
    char stop_reason[64];
    unsigned chunks;
    struct timespec t0;
    unsigned in_sink;  /* inside a sink call: a cancel is deferred to its return */
    bool cancelled;    /* cancelled from inside a sink call */
    bool paused;       /* the parent asked us to stop reading from Bedrock */
};

/* ---- process-wide JSON hygiene ---- */

static void secure_free(void *p)
{
    if (p) {
        OPENSSL_cleanse(p, malloc_usable_size(p));
        free(p);
    }
}

void enclave_secure_json(void)
{
    json_set_alloc_funcs(malloc, secure_free);
}

/* ---- replies ---- */

/* The only event of a request that never ran: emit, then done unless the sink
 * said stop. */
static void emit_once(const enclave_sink *sink, void *ud, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    int stop = s ? sink->emit(ud, s, strlen(s)) : 0;
    secure_free(s);
    if (!stop)
        sink->done(ud);
}

/* A non-streaming reply: the original adds its "source" to each. */
static void reply_done(const enclave_sink *sink, void *ud, json_t *obj)
{
    if (obj && !json_object_get(obj, "source"))
        json_object_set_new(obj, "source", json_string(ENCLAVE_SOURCE));
    emit_once(sink, ud, obj);
}

static int dump_into(json_t *obj, vbuf *out)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s)
        return -1;
    int rc = vbuf_append_str(out, s);
    free(s);
    return rc;
}

int enclave_invalid_json_reply(const char *detail, vbuf *out)
{
    char msg[300];
    snprintf(msg, sizeof msg, "Invalid JSON: %s", detail);
    return dump_into(json_pack("{s:s, s:s, s:s}", "status", "error", "source", ENCLAVE_SOURCE,
                               "error", msg), out);
}

int enclave_error_reply(const char *error, vbuf *out)
{
    return dump_into(json_pack("{s:s, s:s, s:s}", "status", "error", "source", ENCLAVE_SOURCE,
                               "error", error), out);
}

/* ---- core ---- */

enclave_core *enclave_core_new(struct event_base *base, const enclave_config *cfg, char *err,
                               size_t errlen)
{
    enclave_core *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = base;
    LIST_INIT(&c->reqs);
    snprintf(c->region, sizeof c->region, "%s", cfg->region ? cfg->region : "us-east-1");
    c->max_streams = cfg->max_streams ? cfg->max_streams : DEFAULT_MAX_STREAMS;
    c->stream_timeout_ms = cfg->stream_timeout_ms ? cfg->stream_timeout_ms : DEFAULT_STREAM_TIMEOUT_MS;
    c->started = time(NULL);
    c->max_request = cfg->max_request;
    /* generated at start, held in memory only, never logged or persisted */
    if (!(c->key = x25519_key_generate(c->pub))) {
        snprintf(err, errlen, "key generation failed");
        goto fail;
    }
    hex_encode(c->pub, 32, c->pub_hex);
    if (!(c->https = https_ctx_new(base, cfg->ca_file, err, errlen)))
        goto fail;
    bedrock_config bc = {
        .region = c->region, .host = cfg->bedrock_host, .port = cfg->bedrock_port,
        .proxy = cfg->proxy, .connect_timeout_ms = cfg->connect_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms,
    };
    if (!(c->bedrock = bedrock_client_new(c->https, &bc))) {
        snprintf(err, errlen, "cannot create the Bedrock client (region %s)", c->region);
        goto fail;
    }
    return c;
fail:
    enclave_core_free(c);
    return NULL;
}

static void clear_creds(enclave_core *c)
{
    char **fields[] = {&c->akid, &c->secret, &c->token};
    for (size_t i = 0; i < 3; i++) {
        if (*fields[i]) {
            OPENSSL_cleanse(*fields[i], strlen(*fields[i]));
            free(*fields[i]);
            *fields[i] = NULL;
        }
    }
    c->has_creds = false;
    c->has_expiration = false;
    c->expires_at = 0;
    c->expiration[0] = '\0';
}

static void req_free(enclave_req *r);

void enclave_core_free(enclave_core *c)
{
    if (!c)
        return;
    while (!LIST_EMPTY(&c->reqs))
        enclave_req_cancel(LIST_FIRST(&c->reqs));
    clear_creds(c);
    bedrock_client_free(c->bedrock);
    https_ctx_free(c->https);
    x25519_key_free(c->key);
    free(c);
}

const uint8_t *enclave_public_key(const enclave_core *c) { return c->pub; }
unsigned enclave_active_streams(const enclave_core *c) { return c->active; }

static bool creds_expired(const enclave_core *c)
{
    return c->has_expiration && c->expires_at && time(NULL) >= c->expires_at;
}

/* ---- simple commands ---- */

static json_t *cmd_get_public_key(enclave_core *c)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "status", "success", "command", "GET_PUBLIC_KEY",
                     "public_key", c->pub_hex, "region", c->region);
}

static json_t *cmd_health(enclave_core *c)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:b}", "status", "success",
                          "command", "HEALTH", "enclave", "running", "has_credentials", c->has_creds,
                          "region", c->region, "public_key", c->pub_hex, "uptime_seconds",
                          (json_int_t)(time(NULL) - c->started), "active_streams",
                          (json_int_t)c->active, "max_streams", (json_int_t)c->max_streams,
                          "credentials_expired", creds_expired(c));
    json_object_set_new(o, "credentials_expiration",
                        c->has_expiration ? json_string(c->expiration) : json_null());
    if (c->max_request) /* so the parent can refuse a request too large before sending it */
        json_object_set_new(o, "max_request", json_integer((json_int_t)c->max_request));
    return o;
}

/* "<what> '<field>'": the original's KeyError wording */
static json_t *set_creds_error(const char *what, const char *field)
{
    char msg[128];
    snprintf(msg, sizeof msg, "%s '%s'", what, field);
    return json_pack("{s:s, s:s, s:s}", "status", "error", "command", "SET_CREDENTIALS", "error", msg);
}

static json_t *cmd_set_credentials(enclave_core *c, const json_t *req, const char *rid)
{
    const json_t *cr = json_object_get(req, "credentials");
    static const char *const names[] = {"access_key_id", "secret_access_key", "session_token"};
    if (!json_is_object(cr))
        return set_creds_error("Missing field:", "credentials");
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(cr, names[i]);
        if (!v)
            return set_creds_error("Missing credential field:", names[i]);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 8192)
            return set_creds_error("Invalid credential field:", names[i]);
    }
    const json_t *exp = json_object_get(cr, "expiration");
    time_t expires_at = 0;
    if (exp && !json_is_null(exp)) {
        if (!json_is_string(exp) || json_string_length(exp) >= sizeof c->expiration ||
            (expires_at = time_parse_iso8601(json_string_value(exp))) == (time_t)-1)
            return set_creds_error("Invalid credential field:", "expiration");
    }
    clear_creds(c);
    c->akid = strdup(json_string_value(json_object_get(cr, names[0])));
    c->secret = strdup(json_string_value(json_object_get(cr, names[1])));
    c->token = strdup(json_string_value(json_object_get(cr, names[2])));
    if (!c->akid || !c->secret || !c->token) {
        clear_creds(c);
        return set_creds_error("Out of memory storing", "credentials");
    }
    c->has_creds = true;
    if (expires_at) {
        c->has_expiration = true;
        c->expires_at = expires_at;
        snprintf(c->expiration, sizeof c->expiration, "%s", json_string_value(exp));
    }
    log_info(rid, "event=credentials_set expiration=%s", c->has_expiration ? c->expiration : "none");
    json_t *o = json_pack("{s:s, s:s, s:b}", "status", "success", "command", "SET_CREDENTIALS",
                          "has_credentials", 1);
    json_object_set_new(o, "expiration", c->has_expiration ? json_string(c->expiration) : json_null());
    return o;
}

/* ---- CHAT / CHAT_STREAM ---- */

static void req_free(enclave_req *r)
{
    enclave_core *c = r->core;
    LIST_REMOVE(r, link);
    if (r->call)
        bedrock_cancel(r->call);
    if (r->deadline)
        event_free(r->deadline);
    vbuf_free_secure(&r->user_text);
    vbuf_free_secure(&r->answer);
    sv2_wipe(&r->sv);
    if (c->active)
        c->active--;
    free(r);
}

void enclave_req_cancel(enclave_req *r)
{
    if (!r || r->cancelled)
        return;
    log_info(r->rid, "event=request_cancelled chunks=%u", r->chunks);
    if (r->in_sink) { /* the sink is running: free when it returns (sink_emit) */
        r->cancelled = true;
        return;
    }
    req_free(r);
}

void enclave_req_pause(enclave_req *r, bool pause)
{
    if (!r || r->cancelled || r->paused == pause)
        return;
    r->paused = pause;
    if (pause)
        log_debug(r->rid, "event=request_paused chunks=%u", r->chunks);
    else
        log_debug(r->rid, "event=request_resumed chunks=%u", r->chunks);
    if (r->call)
        bedrock_pause(r->call, pause);
}

/* Hands one event to the sink. Returns false when the sink cancelled the request
 * during the call: it has been freed, and the caller must not touch it again. */
static bool sink_emit(enclave_req *r, const char *json, size_t len)
{
    r->in_sink++;
    if (r->sink.emit(r->ud, json, len) != 0 && !r->cancelled) {
        log_info(r->rid, "event=request_cancelled by=sink chunks=%u", r->chunks);
        r->cancelled = true;
    }
    r->in_sink--;
    if (r->cancelled && r->in_sink == 0) {
        req_free(r);
        return false;
    }
    return true;
}

/* emit_json for a running request: false if the sink cancelled it (freed). */
static bool req_emit_json(enclave_req *r, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s)
        return true;
    bool alive = sink_emit(r, s, strlen(s));
    secure_free(s);
    return alive;
}

/* The end of a request: free it (which cancels an upstream call that is still
 * running), then tell the sink, which may free its own state. */
static void req_finish(enclave_req *r)
{
    enclave_sink sink = r->sink;
    void *ud = r->ud;
    req_free(r);
    sink.done(ud);
}

static long elapsed_ms(const enclave_req *r)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - r->t0.tv_sec) * 1000L + (now.tv_nsec - r->t0.tv_nsec) / 1000000L;
}

/* The one way a request fails: exactly one error event, then done. The request
 * is freed, and req_free cancels an upstream call that is still running: inside a
 * Bedrock callback the cancel is deferred by bedrock.c, so no later callback can
 * reach the freed request (F0: a failure after the call started wrote the next
 * chunk into freed memory). */
static void fail_req(enclave_req *r, const char *code, const char *msg)
{
    log_info(r->rid, "event=request_failed code=%s chunks=%u ms=%ld", code, r->chunks, elapsed_ms(r));
    json_t *o;
    if (r->stream)
        o = json_pack("{s:s, s:b, s:s}", "error", msg, "is_final", 1, "error_code", code);
    else
        o = json_pack("{s:s, s:s, s:s, s:s, s:s}", "status", "error", "command", "CHAT", "error",
                      msg, "error_code", code, "source", ENCLAVE_SOURCE);
    if (req_emit_json(r, o))
        req_finish(r);
}

/* A failure before any request state exists (validation). */
static void fail_early(const enclave_sink *sink, void *ud, bool stream, const char *code,
                       const char *msg, const char *rid)
{
    log_info(rid, "event=request_rejected code=%s", code);
    json_t *o = stream ? json_pack("{s:s, s:b, s:s}", "error", msg, "is_final", 1, "error_code", code)
                       : json_pack("{s:s, s:s, s:s, s:s}", "status", "error", "command", "CHAT",
                                   "error", msg, "error_code", code);
    if (stream) /* the original's stream events carry no "source" */
        emit_once(sink, ud, o);
    else
        reply_done(sink, ud, o);
}

static int seal_into(const uint8_t pub[32], const uint8_t *pt, size_t len, const char *ctx, vbuf *out)
{
    ep e;
    if (ep_seal(pub, pt, len, ctx, &e) != EP_OK)
        return -1;
    int rc = ep_write_json(&e, out);
    ep_clear(&e);
    return rc;
}

/* One sealed event to the client: {"<key>": EP} in format 1, or in format 2
 * {"<key>_v2": {"seq", "ciphertext", "auth_tag"}} sealed with the stream key. */
static int emit_sealed(enclave_req *r, const char *key, sv2_kind kind, const char *text, size_t len)
{
    vbuf line = VBUF_INIT;
    int rc;
    if (r->v2) {
        uint64_t seq = r->sv.seq;
        uint8_t tag[GCM_TAG_LEN], *ct = malloc(len ? len : 1);
        rc = !ct || sv2_seal(&r->sv, kind, (const uint8_t *)text, len, ct, tag) < 0 ||
             vbuf_printf(&line, "{\"%s_v2\":{\"seq\":%llu,\"ciphertext\":\"", key,
                         (unsigned long long)seq) < 0 ||
             vbuf_append_hex(&line, ct, len) < 0 || vbuf_append_str(&line, "\",\"auth_tag\":\"") < 0 ||
             vbuf_append_hex(&line, tag, sizeof tag) < 0 || vbuf_append_str(&line, "\"}}") < 0;
        free(ct);
    } else {
        rc = vbuf_printf(&line, "{\"%s\":", key) < 0 ||
             seal_into(r->reply_pub, (const uint8_t *)text, len, EP_CTX_ENCLAVE_TO_CLIENT, &line) < 0 ||
             vbuf_append(&line, "}", 1) < 0;
    }
    if (rc == 0 && !sink_emit(r, (const char *)line.data, line.len))
        rc = -2;
    else if (rc)
        rc = -1; /* was 1: callers that test < 0 took a failed seal for success (F0) */
    vbuf_free(&line);
    return rc;
}

/* Format 2's first event: the stream's ephemeral public key and salt. */
static int announce_stream_key(enclave_req *r)
{
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    vbuf line = VBUF_INIT;
    int rc = sv2_init_sender(&r->sv, r->reply_pub, epk, salt) < 0 ||
             vbuf_append_str(&line, "{\"stream_format\":2,\"stream_key\":{\"ephemeral_public_key\":\"") < 0 ||
             vbuf_append_hex(&line, epk, sizeof epk) < 0 || vbuf_append_str(&line, "\",\"hkdf_salt\":\"") < 0 ||
             vbuf_append_hex(&line, salt, sizeof salt) < 0 || vbuf_append_str(&line, "\"}}") < 0
                 ? -1
                 : 0;
    if (rc == 0 && !sink_emit(r, (const char *)line.data, line.len))
        rc = -2;
    vbuf_free(&line);
    return rc;
}

static int on_text(void *ud, const char *text, size_t len)
{
    enclave_req *r = ud;
    if (vbuf_append_secure(&r->answer, text, len) < 0) { /* grows per delta: no copies left */
        fail_req(r, "internal", "Internal error");
        return 1;
    }
    if (!r->stream)
        return 0;
    /* one sealed event per non-empty delta: fresh ephemeral key, salt and IV each */
    r->chunks++;
    int rc = emit_sealed(r, "encrypted_content", SV2_TEXT, text, len);
    if (rc == -1)
        fail_req(r, "internal", "Internal error");
    return rc ? 1 : 0;
}

static int on_reasoning(void *ud, const char *text, size_t len)
{
    enclave_req *r = ud;
    /* an extension event: parents that do not know it ignore it */
    int rc = r->stream ? emit_sealed(r, "encrypted_thinking", SV2_THINKING, text, len) : 0;
    if (rc == -1)
        fail_req(r, "internal", "Internal error");
    return rc ? 1 : 0;
}

static void on_usage(void *ud, long in, long out)
{
    enclave_req *r = ud;
    r->in_tokens = in;
    r->out_tokens = out;
}

static void on_stop(void *ud, const char *reason)
{
    enclave_req *r = ud;
    snprintf(r->stop_reason, sizeof r->stop_reason, "%s", reason);
}

static void map_bedrock_error(const bedrock_error *e, const char **code, const char **msg)
{
    bool throttled = strcasecmp(e->type, "throttlingException") == 0 ||
                     strcasecmp(e->type, "ThrottlingException") == 0 ||
                     (e->code == BEDROCK_ERR_HTTP && e->http_status == 429);
    if (throttled) {
        *code = "upstream_throttled";
        *msg = "Bedrock is throttling requests, please retry shortly";
        return;
    }
    switch (e->code) {
    case BEDROCK_ERR_HTTP:
        if (e->http_status == 400) {
            *code = "upstream_rejected";
            *msg = "Bedrock rejected the request";
        } else if (e->http_status == 401 || e->http_status == 403) {
            *code = "upstream_denied";
            *msg = "Bedrock denied the request (check the enclave's AWS credentials)";
        } else {
            *code = "upstream_unavailable";
            *msg = "Bedrock service error";
        }
        return;
    case BEDROCK_ERR_EXCEPTION:
        if (strcasecmp(e->type, "validationException") == 0) {
            *code = "upstream_rejected";
            *msg = "Bedrock rejected the request";
        } else {
            *code = "upstream_exception";
            *msg = "Bedrock stream error";
        }
        return;
    case BEDROCK_ERR_STREAM: *code = "upstream_exception"; *msg = "Bedrock stream error"; return;
    case BEDROCK_ERR_DECODE: *code = "upstream_corrupt"; *msg = "Corrupt response from Bedrock"; return;
    case BEDROCK_ERR_TRUNCATED: *code = "upstream_truncated"; *msg = "Bedrock stream ended early"; return;
    case BEDROCK_ERR_TIMEOUT: *code = "timeout"; *msg = "Bedrock timed out"; return;
    case BEDROCK_ERR_TRANSPORT: *code = "upstream_unreachable"; *msg = "Cannot reach Bedrock"; return;
    case BEDROCK_ERR_PROTOCOL: *code = "upstream_protocol"; *msg = "Unexpected response from Bedrock"; return;
    case BEDROCK_ERR_ARG: *code = "internal"; *msg = "Internal error"; return;
    case BEDROCK_OK: break;
    }
    *code = "internal";
    *msg = "Internal error";
}

static json_t *seal_json(const uint8_t pub[32], const vbuf *pt, const char *ctx)
{
    ep e;
    if (ep_seal(pub, pt->data, pt->len, ctx, &e) != EP_OK)
        return NULL;
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

static void finish_ok(enclave_req *r)
{
    const uint8_t *skey = r->stream ? r->storage_pub : r->reply_pub;
    json_t *su = seal_json(skey, &r->user_text, EP_CTX_USER_STORAGE);
    json_t *sa = seal_json(skey, &r->answer, EP_CTX_ASSISTANT_STORAGE);
    const char *stop = r->stop_reason[0] ? r->stop_reason : "end_turn";
    json_t *o = NULL;
    if (su && sa && r->stream)
        o = json_pack("{s:b, s:O, s:O, s:s, s:I, s:I, s:s}", "is_final", 1, "stored_user_message", su,
                      "stored_assistant_message", sa, "model_used", r->model, "input_tokens",
                      (json_int_t)r->in_tokens, "output_tokens", (json_int_t)r->out_tokens,
                      "stop_reason", stop);
    else if (su && sa)
        o = json_pack("{s:s, s:s, s:O, s:O, s:s, s:{s:I, s:I}, s:s, s:s}", "status", "success",
                      "command", "CHAT", "encrypted_response", sa, "encrypted_user_message", su,
                      "model_id", r->model, "usage", "input_tokens", (json_int_t)r->in_tokens,
                      "output_tokens", (json_int_t)r->out_tokens, "stop_reason", stop, "source",
                      ENCLAVE_SOURCE);
    json_decref(su);
    json_decref(sa);
    if (o && r->v2) { /* the end element proves the client got every chunk */
        uint8_t tag[GCM_TAG_LEN];
        char tag_hex[2 * GCM_TAG_LEN + 1];
        uint64_t seq = r->sv.seq;
        if (sv2_seal(&r->sv, SV2_END, NULL, 0, tag, tag) < 0) {
            json_decref(o);
            o = NULL;
        } else {
            hex_encode(tag, sizeof tag, tag_hex);
            json_object_set_new(o, "stream_end", json_pack("{s:I, s:s}", "seq", (json_int_t)seq, "auth_tag", tag_hex));
        }
    }
    if (!o) {
        fail_req(r, "internal", "Internal error");
        return;
    }
    log_info(r->rid, "event=request_done chunks=%u in_tokens=%ld out_tokens=%ld ms=%ld", r->chunks,
             r->in_tokens, r->out_tokens, elapsed_ms(r));
    if (req_emit_json(r, o))
        req_finish(r);
}

static void on_done(void *ud, const bedrock_error *err)
{
    enclave_req *r = ud;
    r->call = NULL; /* the bedrock call frees itself after this returns */
    if (err) {
        const char *code, *msg;
        map_bedrock_error(err, &code, &msg);
        log_info(r->rid, "event=upstream_error kind=\"%s\" status=%d type=%s", bedrock_strerror(err->code),
                 err->http_status, err->type[0] ? err->type : "-");
        fail_req(r, code, msg);
        return;
    }
    if (r->answer.len == 0) { /* never store an empty answer (defect §10.6) */
        fail_req(r, "empty_answer", "The model returned an empty answer");
        return;
    }
    finish_ok(r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fail_req(arg, "timeout", "Request timed out");
}

/* field helpers: a missing key is reported as the original did: Missing field: 'x' */
static const json_t *need(const json_t *req, const char *k, char *msg, size_t n)
{
    const json_t *v = json_object_get(req, k);
    if (!v || json_is_null(v))
        snprintf(msg, n, "Missing field: '%s'", k);
    return v && !json_is_null(v) ? v : NULL;
}

static int key_field(const json_t *req, const char *k, uint8_t out[32], char *msg, size_t n)
{
    const json_t *v = need(req, k, msg, n);
    if (!v)
        return -1;
    if (!json_is_string(v) ||
        hex_decode_exact(json_string_value(v), json_string_length(v), out, 32) < 0) {
        snprintf(msg, n, "Invalid field: '%s' must be 64 hex characters", k);
        return -1;
    }
    if (!x25519_public_key_ok(out)) { /* every seal to it would fail midway (F0) */
        snprintf(msg, n, "Invalid field: '%s' is not a valid X25519 public key (low order)", k);
        return -1;
    }
    return 0;
}

static bool utf8_ok(const uint8_t *p, size_t n)
{
    json_t *s = json_stringn((const char *)p, n);
    bool ok = s != NULL;
    json_decref(s);
    return ok;
}

/* Decrypts one transport EP into out. Returns NULL or an error message. */
static const char *open_transport(enclave_core *c, const json_t *v, const char *what, vbuf *out,
                                  char *msg, size_t n)
{
    ep e;
    const char *field = NULL;
    ep_err er = ep_from_json(v, &e, &field);
    if (er != EP_OK) {
        snprintf(msg, n, "Invalid %s: %s", what, ep_strerror(er));
        return msg;
    }
    secret pt;
    er = ep_open_key(c->key, &e, EP_CTX_CLIENT_TO_ENCLAVE, &pt);
    ep_clear(&e);
    if (er != EP_OK) {
        snprintf(msg, n, "Could not decrypt %s", what);
        return msg;
    }
    const char *res = NULL;
    if (!utf8_ok(pt.data, pt.len)) {
        snprintf(msg, n, "The %s is not valid UTF-8", what);
        res = msg;
    } else if (vbuf_append_secure(out, pt.data, pt.len) < 0) {
        res = "Out of memory";
    }
    secret_free(&pt);
    return res;
}

static enclave_req *start_chat(enclave_core *c, const json_t *req, bool stream,
                               const enclave_sink *sink, void *ud, const char *rid)
{
    char msg[256] = "";
    const char *code = "bad_request";
    history h;
    history_init(&h);
    enclave_req *r = NULL;

    if (!c->has_creds) {
        fail_early(sink, ud, stream, "no_credentials",
                   stream ? "No AWS credentials" : "No AWS credentials. Parent must send SET_CREDENTIALS first.", rid);
        return NULL;
    }
    if (creds_expired(c)) {
        fail_early(sink, ud, stream, "credentials_expired", "AWS credentials expired", rid);
        return NULL;
    }
    if (c->active >= c->max_streams) {
        fail_early(sink, ud, stream, "busy", "Enclave busy, please retry", rid);
        return NULL;
    }
    r = calloc(1, sizeof *r);
    if (!r) {
        fail_early(sink, ud, stream, "internal", "Internal error", rid);
        return NULL;
    }
    r->core = c;
    r->stream = stream;
    r->sink = *sink;
    r->ud = ud;
    snprintf(r->rid, sizeof r->rid, "%s", rid ? rid : "-");
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    c->active++;
    LIST_INSERT_HEAD(&c->reqs, r, link);

    const json_t *em = need(req, "encrypted_message", msg, sizeof msg);
    const json_t *model = need(req, "model_id", msg, sizeof msg);
    if (!em || !model)
        goto bad;
    if (!json_is_string(model) || json_string_length(model) == 0 ||
        json_string_length(model) >= sizeof r->model) {
        snprintf(msg, sizeof msg, stream ? "Invalid field: 'model_id'" : "model_id is required");
        goto bad;
    }
    snprintf(r->model, sizeof r->model, "%s", json_string_value(model));
    if (stream) {
        if (key_field(req, "client_public_key", r->reply_pub, msg, sizeof msg) < 0 ||
            key_field(req, "storage_public_key", r->storage_pub, msg, sizeof msg) < 0)
            goto bad;
        const json_t *fmt = json_object_get(req, "stream_format");
        if (fmt && !json_is_null(fmt)) {
            if (!json_is_integer(fmt) || (json_integer_value(fmt) != 1 && json_integer_value(fmt) != 2)) {
                snprintf(msg, sizeof msg, "Unsupported stream_format (1 or 2)");
                goto bad;
            }
            r->v2 = json_integer_value(fmt) == 2;
        }
    } else if (key_field(req, "user_public_key", r->reply_pub, msg, sizeof msg) < 0) {
        goto bad;
    }

    /* history: CHAT_STREAM carries EPs (optionally with "role"); CHAT carries plaintext */
    const json_t *hist = json_object_get(req, stream ? "encrypted_history" : "history");
    if (hist && !json_is_null(hist)) {
        if (!json_is_array(hist) || json_array_size(hist) > MAX_HISTORY) {
            snprintf(msg, sizeof msg, "Invalid field: '%s'", stream ? "encrypted_history" : "history");
            goto bad;
        }
        size_t i;
        const json_t *entry;
        json_array_foreach(hist, i, entry) {
            const json_t *role = json_object_get(entry, "role");
            int rl = (int)(i % 2); /* the original's rule: position decides */
            if (role && !json_is_null(role)) {
                if (!json_is_string(role) || (rl = turn_role_parse(json_string_value(role))) < 0) {
                    snprintf(msg, sizeof msg, "Invalid role in history entry %zu", i);
                    goto bad;
                }
            }
            vbuf text = VBUF_INIT;
            char what[48];
            snprintf(what, sizeof what, "history entry %zu", i);
            const char *e = NULL;
            if (stream) {
                e = open_transport(c, entry, what, &text, msg, sizeof msg);
                if (e && strncmp(e, "Could not decrypt", 17) == 0)
                    code = "decrypt_failed";
            } else {
                const json_t *content = json_object_get(entry, "content");
                if (!json_is_string(content)) {
                    snprintf(msg, sizeof msg, "Missing field: 'content' in %s", what);
                    e = msg;
                } else {
                    vbuf_append(&text, json_string_value(content), json_string_length(content));
                }
            }
            if (!e && history_add(&h, (turn_role)rl, (const char *)text.data, text.len) < 0)
                e = "Out of memory";
            vbuf_free_secure(&text);
            if (e) {
                if (e != msg)
                    snprintf(msg, sizeof msg, "%s", e);
                goto bad;
            }
        }
    }
    const char *e = open_transport(c, em, "message", &r->user_text, msg, sizeof msg);
    if (e) {
        if (strncmp(e, "Could not decrypt", 17) == 0)
            code = "decrypt_failed";
        goto bad;
    }
    if (r->user_text.len == 0) {
        snprintf(msg, sizeof msg, "The message is empty");
        goto bad;
    }
    if (history_add(&h, ROLE_USER, (const char *)r->user_text.data, r->user_text.len) < 0) {
        snprintf(msg, sizeof msg, "Out of memory");
        goto bad;
    }
    const char *herr = history_check(&h);
    if (herr) {
        snprintf(msg, sizeof msg, "Invalid history: %s", herr);
        goto bad;
    }
    const json_t *sys = stream ? NULL : json_object_get(req, "system_prompt");
    sigv4_credentials creds = {c->akid, c->secret, c->token};
    bedrock_request br = {
        .model_id = r->model, .messages = h.msgs, .n_messages = h.n,
        .system = json_is_string(sys) ? json_string_value(sys) : ENCLAVE_SYSTEM_PROMPT,
        .max_tokens = BEDROCK_DEFAULT_MAX_TOKENS, .temperature = BEDROCK_DEFAULT_TEMPERATURE,
        .creds = &creds, .rid = r->rid,
    };
    /* format 2 announces its key before anything else, and before Bedrock is asked */
    int ar = r->v2 ? announce_stream_key(r) : 0;
    if (ar == -2) { /* the sink cancelled: r is gone */
        history_free(&h);
        return NULL;
    }
    if (ar < 0) {
        snprintf(msg, sizeof msg, "Internal error");
        code = "internal";
        goto bad;
    }
    static const bedrock_callbacks cb = {on_text, on_reasoning, on_usage, on_stop, on_done};
    bedrock_error berr;
    r->call = stream ? bedrock_converse_stream(c->bedrock, &br, &cb, r, &berr)
                     : bedrock_converse(c->bedrock, &br, &cb, r, &berr);
    history_free(&h); /* the request body was built and wiped inside */
    if (!r->call) {
        log_warn(r->rid, "event=bedrock_start_failed detail=\"%s\"", berr.message);
        fail_req(r, "internal", "Internal error");
        return NULL;
    }
    r->deadline = evtimer_new(c->base, on_deadline, r);
    struct timeval tv = {c->stream_timeout_ms / 1000, (c->stream_timeout_ms % 1000) * 1000};
    if (r->deadline)
        evtimer_add(r->deadline, &tv);
    log_info(r->rid, "event=request_start command=%s model=%s turns=%zu", stream ? "CHAT_STREAM" : "CHAT",
             r->model, json_array_size(hist));
    return r;
bad:
    history_free(&h);
    fail_req(r, code, msg);
    return NULL;
}

static void upper(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++)
        out[i] = (char)toupper((unsigned char)in[i]);
    out[i] = '\0';
}

enclave_req *enclave_handle(enclave_core *c, json_t *request, const enclave_sink *sink, void *ud,
                            const char *rid)
{
    char cmd[64];
    if (!json_is_object(request)) {
        reply_done(sink, ud, json_pack("{s:s, s:s}", "status", "error", "error",
                                       "Invalid JSON: expected an object"));
        return NULL;
    }
    const json_t *jc = json_object_get(request, "command");
    upper(json_is_string(jc) ? json_string_value(jc) : "", cmd, sizeof cmd);
    log_info(rid, "event=command name=%s", cmd[0] ? cmd : "-");

    if (strcmp(cmd, "GET_PUBLIC_KEY") == 0)
        reply_done(sink, ud, cmd_get_public_key(c));
    else if (strcmp(cmd, "HEALTH") == 0)
        reply_done(sink, ud, cmd_health(c));
    else if (strcmp(cmd, "SET_CREDENTIALS") == 0)
        reply_done(sink, ud, cmd_set_credentials(c, request, rid));
    else if (strcmp(cmd, "RUN_TESTS") == 0)
        reply_done(sink, ud, selftest_run());
    else if (strcmp(cmd, "CHAT_STREAM") == 0)
        return start_chat(c, request, true, sink, ud, rid);
    else if (strcmp(cmd, "CHAT") == 0)
        return start_chat(c, request, false, sink, ud, rid);
    else {
        char msg[128];
        json_t *avail = json_array();
        for (size_t i = 0; i < sizeof COMMANDS / sizeof COMMANDS[0]; i++)
            json_array_append_new(avail, json_string(COMMANDS[i]));
        /* the original echoes the upper-cased command */
        snprintf(msg, sizeof msg, "Unknown command: %s", cmd);
        reply_done(sink, ud, json_pack("{s:s, s:s, s:o}", "status", "error", "error", msg,
                                       "available_commands", avail));
    }
    return NULL;
}

void enclave_abort_all(enclave_core *c, const char *why)
{
    while (!LIST_EMPTY(&c->reqs))
        fail_req(LIST_FIRST(&c->reqs), "shutting_down", why);
}

/* enclave — the enclave core (see enclave.h); opening a request's plaintext is
 * request_open.c's, the wire is protocol.c's.
 * Stays whole (~790 lines): the core's state (the key, the credentials, the limits)
 * and a chat request's life (its sink, cancel and pause from inside a sink call, the
 * deadline, the Bedrock call, exactly one final event) are one object's, and every
 * path that ends a request must be read beside the others. */
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

#include "attest/nsm.h"
#include "aws/bedrock.h"
#include "common/isotime.h"
#include "common/hex.h"
#include "common/log.h"
#include "crypto/ep.h"
#include "crypto/stream_v3.h"
#include "enclave/history.h"
#include "enclave/protocol.h"
#include "enclave/replay.h"
#include "enclave/request_open.h"
#include "enclave/selftest.h"

#define DEFAULT_MAX_STREAMS 1024u
#define DEFAULT_STREAM_TIMEOUT_MS 300000u

struct enclave_core {
    struct event_base *base;
    https_ctx *https;
    https_pool *pool; /* NULL: pooling off */
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
    nsm *nsm; /* borrowed: attests pub */
    bool refuse_legacy;
    replay_cache *replay; /* format 3's request ids */
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
    bool v3;                 /* stream format 3: a bound request, an authenticated answer */
    sv3 s3;
    uint8_t request_hash[SV3_HASH_LEN];
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
    if (obj && !json_object_get(obj, PF_SOURCE))
        json_object_set_new(obj, PF_SOURCE, json_string(PROTO_SOURCE));
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
    return dump_into(proto_error_reply(PROTO_CMD_UNKNOWN, ENCLAVE_OK, msg), out);
}

int enclave_error_reply(const char *error, vbuf *out)
{
    return dump_into(proto_error_reply(PROTO_CMD_UNKNOWN, ENCLAVE_OK, error), out);
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
    c->nsm = cfg->nsm;
    c->refuse_legacy = cfg->refuse_legacy;
    if (!(c->replay = replay_new(cfg->replay_max ? cfg->replay_max : 65536, PROTO_ISSUED_WINDOW_S))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* generated at start, held in memory only, never logged or persisted */
    if (!(c->key = x25519_key_generate(c->pub))) {
        snprintf(err, errlen, "key generation failed");
        goto fail;
    }
    hex_encode(c->pub, 32, c->pub_hex);
    if (!(c->https = https_ctx_new(base, cfg->ca_file, err, errlen)))
        goto fail;
    https_pool_config pc = cfg->upstream_pool ? *cfg->upstream_pool : https_pool_config_default();
    if (pc.max_idle && !(c->pool = https_pool_new(c->https, &pc, err, errlen)))
        goto fail;
    bedrock_config bc = {
        .region = c->region, .host = cfg->bedrock_host, .port = cfg->bedrock_port,
        .proxy = cfg->proxy, .connect_timeout_ms = cfg->connect_timeout_ms,
        .idle_timeout_ms = cfg->idle_timeout_ms, .pool = c->pool,
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
    https_pool_free(c->pool); /* after the requests: they hold it */
    https_ctx_free(c->https);
    x25519_key_free(c->key);
    replay_free(c->replay);
    free(c);
}

const uint8_t *enclave_public_key(const enclave_core *c) { return c->pub; }
unsigned enclave_active_streams(const enclave_core *c) { return c->active; }

static bool creds_expired(const enclave_core *c)
{
    return c->has_expiration && c->expires_at && time(NULL) >= c->expires_at;
}

/* ---- simple commands ---- */

static json_t *success(proto_cmd cmd)
{
    return json_pack("{s:s, s:s}", PF_STATUS, "success", PF_COMMAND, proto_cmd_name(cmd));
}

static json_t *cmd_get_public_key(enclave_core *c)
{
    json_t *o = success(PROTO_CMD_GET_PUBLIC_KEY);
    json_object_set_new(o, PF_PUBLIC_KEY, json_string(c->pub_hex));
    json_object_set_new(o, PF_REGION, json_string(c->region));
    return o;
}

static json_t *cmd_health(enclave_core *c)
{
    json_t *o = success(PROTO_CMD_HEALTH);
    json_object_set_new(o, "enclave", json_string("running"));
    json_object_set_new(o, PF_HAS_CREDENTIALS, json_boolean(c->has_creds));
    json_object_set_new(o, PF_REGION, json_string(c->region));
    json_object_set_new(o, PF_PUBLIC_KEY, json_string(c->pub_hex));
    json_object_set_new(o, "uptime_seconds", json_integer((json_int_t)(time(NULL) - c->started)));
    json_object_set_new(o, "active_streams", json_integer((json_int_t)c->active));
    json_object_set_new(o, "max_streams", json_integer((json_int_t)c->max_streams));
    json_object_set_new(o, "credentials_expired", json_boolean(creds_expired(c)));
    json_object_set_new(o, "credentials_expiration",
                        c->has_expiration ? json_string(c->expiration) : json_null());
    if (c->max_request) /* so the parent can refuse a request too large before sending it */
        json_object_set_new(o, PF_MAX_REQUEST, json_integer((json_int_t)c->max_request));
    json_object_set_new(o, PF_NSM, json_string(c->nsm ? nsm_backend_name(c->nsm) : "none"));
    return o;
}

/* The NSM's document binding the transport key to the caller's nonce (and to
 * ATTEST_USER_DATA): what lets a client trust pub without trusting the parent. */
static json_t *cmd_get_attestation(enclave_core *c, const json_t *req, const char *rid)
{
    uint8_t nonce[PROTO_NONCE_MAX];
    proto_error err;
    long n = proto_parse_attestation_request(req, nonce, &err);
    if (n < 0)
        return proto_error_reply(PROTO_CMD_GET_ATTESTATION, err.code, err.message);
    if (!c->nsm)
        return proto_error_reply(PROTO_CMD_GET_ATTESTATION, ENCLAVE_ERR_NO_ATTESTATION,
                                 "This enclave runs without an NSM (--nsm none)");
    uint8_t *doc = NULL;
    size_t len = 0;
    char detail[200];
    nsm_err e = nsm_attest_transport(c->nsm, c->pub, nonce, (size_t)n, &doc, &len, detail, sizeof detail);
    if (e != NSM_OK) {
        log_error(rid, "event=attestation_failed err=\"%s\" detail=\"%s\"", nsm_strerror(e), detail);
        return proto_error_reply(PROTO_CMD_GET_ATTESTATION, ENCLAVE_ERR_NO_ATTESTATION, "The NSM did not attest");
    }
    log_info(rid, "event=attested nsm=%s bytes=%zu", nsm_backend_name(c->nsm), len);
    json_t *o = proto_attestation_reply(doc, len, c->pub_hex, nsm_backend_name(c->nsm));
    free(doc);
    return o;
}

/* "<what> '<field>'": the original's KeyError wording */
static json_t *set_creds_error(const char *what, const char *field)
{
    char msg[128];
    snprintf(msg, sizeof msg, "%s '%s'", what, field);
    json_t *o = proto_error_reply(PROTO_CMD_SET_CREDENTIALS, ENCLAVE_OK, msg);
    json_object_del(o, PF_SOURCE); /* reply_done adds it back last */
    return o;
}

static json_t *cmd_set_credentials(enclave_core *c, const json_t *req, const char *rid)
{
    const json_t *cr = json_object_get(req, PF_CREDENTIALS);
    static const char *const names[] = {PF_ACCESS_KEY_ID, PF_SECRET_ACCESS_KEY, PF_SESSION_TOKEN};
    if (!json_is_object(cr))
        return set_creds_error("Missing field:", PF_CREDENTIALS);
    for (size_t i = 0; i < 3; i++) {
        const json_t *v = json_object_get(cr, names[i]);
        if (!v)
            return set_creds_error("Missing credential field:", names[i]);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 8192)
            return set_creds_error("Invalid credential field:", names[i]);
    }
    const json_t *exp = json_object_get(cr, PF_EXPIRATION);
    time_t expires_at = 0;
    if (exp && !json_is_null(exp)) {
        if (!json_is_string(exp) || json_string_length(exp) >= sizeof c->expiration ||
            (expires_at = time_parse_iso8601(json_string_value(exp))) == (time_t)-1)
            return set_creds_error("Invalid credential field:", PF_EXPIRATION);
    }
    clear_creds(c);
    c->akid = strdup(json_string_value(json_object_get(cr, names[0])));
    c->secret = strdup(json_string_value(json_object_get(cr, names[1])));
    c->token = strdup(json_string_value(json_object_get(cr, names[2])));
    if (!c->akid || !c->secret || !c->token) {
        clear_creds(c);
        return set_creds_error("Out of memory storing", PF_CREDENTIALS);
    }
    c->has_creds = true;
    if (expires_at) {
        c->has_expiration = true;
        c->expires_at = expires_at;
        snprintf(c->expiration, sizeof c->expiration, "%s", json_string_value(exp));
    }
    log_info(rid, "event=credentials_set expiration=%s", c->has_expiration ? c->expiration : "none");
    json_t *o = success(PROTO_CMD_SET_CREDENTIALS);
    json_object_set_new(o, PF_HAS_CREDENTIALS, json_true());
    json_object_set_new(o, PF_EXPIRATION, c->has_expiration ? json_string(c->expiration) : json_null());
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
    sv3_wipe(&r->s3);
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
static void fail_req(enclave_req *r, enclave_err code, const char *msg)
{
    log_info(r->rid, "event=request_failed code=%s chunks=%u ms=%ld", enclave_err_name(code), r->chunks,
             elapsed_ms(r));
    json_t *o = r->stream ? proto_stream_error(code, msg) : proto_error_reply(PROTO_CMD_CHAT, code, msg);
    if (req_emit_json(r, o))
        req_finish(r);
}

/* A failure before any request state exists (validation). */
static void fail_early(const enclave_sink *sink, void *ud, bool stream, enclave_err code, const char *msg,
                       const char *rid)
{
    log_info(rid, "event=request_rejected code=%s", enclave_err_name(code));
    if (stream) /* the original's stream events carry no "source" */
        emit_once(sink, ud, proto_stream_error(code, msg));
    else
        reply_done(sink, ud, proto_error_reply(PROTO_CMD_CHAT, code, msg));
}

/* One sealed event to the client: format 1 seals an EncryptedPayload to the client
 * key per chunk, format 3 seals the next element with the stream key. 0, -1 when
 * the seal failed (the caller fails the request), -2 when the sink cancelled it. */
static int emit_sealed(enclave_req *r, bool thinking, const char *text, size_t len)
{
    vbuf line = VBUF_INIT;
    int rc = -1;
    if (r->v3) {
        uint64_t seq = r->s3.seq;
        uint8_t tag[GCM_TAG_LEN], *ct = malloc(len ? len : 1);
        if (ct && sv3_seal(&r->s3, thinking ? SV3_THINKING : SV3_TEXT, (const uint8_t *)text, len, ct, tag) == 0)
            rc = proto_write_element(&line, thinking, seq, ct, len, tag);
        free(ct);
    } else {
        ep e;
        if (ep_seal(r->reply_pub, (const uint8_t *)text, len, EP_CTX_ENCLAVE_TO_CLIENT, &e) == EP_OK) {
            rc = proto_write_chunk_v1(&line, thinking, &e);
            ep_clear(&e);
        }
    }
    if (rc == 0 && !sink_emit(r, (const char *)line.data, line.len))
        rc = -2;
    vbuf_free(&line);
    return rc;
}

/* Format 3: the first event, the stream key's public half and salt (the key mixes
 * the stream's and the attested key's agreements and the request's hash). */
static int announce_stream_key(enclave_req *r)
{
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    vbuf line = VBUF_INIT;
    int init = sv3_init_sender(&r->s3, r->core->key, r->reply_pub, r->request_hash, epk, salt);
    int rc = init < 0 || proto_write_stream_key(&line, epk, salt) < 0 ? -1 : 0;
    if (rc == 0 && !sink_emit(r, (const char *)line.data, line.len))
        rc = -2;
    vbuf_free(&line);
    return rc;
}

static int on_text(void *ud, const char *text, size_t len)
{
    enclave_req *r = ud;
    if (vbuf_append_secure(&r->answer, text, len) < 0) { /* grows per delta: no copies left */
        fail_req(r, ENCLAVE_ERR_INTERNAL, "Internal error");
        return 1;
    }
    if (!r->stream)
        return 0;
    /* one sealed event per non-empty delta: fresh ephemeral key, salt and IV each */
    r->chunks++;
    int rc = emit_sealed(r, false, text, len);
    if (rc == -1)
        fail_req(r, ENCLAVE_ERR_INTERNAL, "Internal error");
    return rc ? 1 : 0;
}

static int on_reasoning(void *ud, const char *text, size_t len)
{
    enclave_req *r = ud;
    /* an extension event: parents that do not know it ignore it */
    int rc = r->stream ? emit_sealed(r, true, text, len) : 0;
    if (rc == -1)
        fail_req(r, ENCLAVE_ERR_INTERNAL, "Internal error");
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

/* Bedrock's failure as the protocol's code and the enclave's own fixed text. */
static enclave_err map_bedrock_error(const bedrock_error *e, const char **msg)
{
    bool throttled = strcasecmp(e->type, "throttlingException") == 0 ||
                     (e->code == BEDROCK_ERR_HTTP && e->http_status == 429);
    if (throttled) {
        *msg = "Bedrock is throttling requests, please retry shortly";
        return ENCLAVE_ERR_UPSTREAM_THROTTLED;
    }
    switch (e->code) {
    case BEDROCK_ERR_HTTP:
        if (e->http_status == 400) {
            *msg = "Bedrock rejected the request";
            return ENCLAVE_ERR_UPSTREAM_REJECTED;
        }
        if (e->http_status == 401 || e->http_status == 403) {
            *msg = "Bedrock denied the request (check the enclave's AWS credentials)";
            return ENCLAVE_ERR_UPSTREAM_DENIED;
        }
        *msg = "Bedrock service error";
        return ENCLAVE_ERR_UPSTREAM_UNAVAILABLE;
    case BEDROCK_ERR_EXCEPTION:
        if (strcasecmp(e->type, "validationException") == 0) {
            *msg = "Bedrock rejected the request";
            return ENCLAVE_ERR_UPSTREAM_REJECTED;
        }
        *msg = "Bedrock stream error";
        return ENCLAVE_ERR_UPSTREAM_EXCEPTION;
    case BEDROCK_ERR_STREAM: *msg = "Bedrock stream error"; return ENCLAVE_ERR_UPSTREAM_EXCEPTION;
    case BEDROCK_ERR_DECODE: *msg = "Corrupt response from Bedrock"; return ENCLAVE_ERR_UPSTREAM_CORRUPT;
    case BEDROCK_ERR_TRUNCATED: *msg = "Bedrock stream ended early"; return ENCLAVE_ERR_UPSTREAM_TRUNCATED;
    case BEDROCK_ERR_TIMEOUT: *msg = "Bedrock timed out"; return ENCLAVE_ERR_TIMEOUT;
    case BEDROCK_ERR_TRANSPORT: *msg = "Cannot reach Bedrock"; return ENCLAVE_ERR_UPSTREAM_UNREACHABLE;
    case BEDROCK_ERR_PROTOCOL: *msg = "Unexpected response from Bedrock"; return ENCLAVE_ERR_UPSTREAM_PROTOCOL;
    case BEDROCK_ERR_ARG:
    case BEDROCK_OK: break;
    }
    *msg = "Internal error";
    return ENCLAVE_ERR_INTERNAL;
}

/* A stored message, sealed to the storage key; its raw fields' hash into hash (for
 * format 3's end element) when hash is not NULL. */
static json_t *seal_json(const uint8_t pub[32], const vbuf *pt, const char *ctx, uint8_t *hash)
{
    ep e;
    if (ep_seal(pub, pt->data, pt->len, ctx, &e) != EP_OK)
        return NULL;
    if (hash)
        sv3_ep_hash(&e, hash);
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

static void finish_ok(enclave_req *r)
{
    const uint8_t *skey = r->stream ? r->storage_pub : r->reply_pub;
    uint8_t hashes[SV3_END_LEN];
    proto_final f = {
        .stored_user = seal_json(skey, &r->user_text, EP_CTX_USER_STORAGE, r->v3 ? hashes : NULL),
        .stored_assistant = seal_json(skey, &r->answer, EP_CTX_ASSISTANT_STORAGE, r->v3 ? hashes + SV3_HASH_LEN : NULL),
        .model_used = r->model, .input_tokens = r->in_tokens, .output_tokens = r->out_tokens,
        .stop_reason = r->stop_reason[0] ? r->stop_reason : NULL,
    };
    bool ok = f.stored_user && f.stored_assistant;
    if (ok && r->v3) { /* the end element: every chunk came, and the stored messages are these */
        f.has_end = true;
        f.end_seq = r->s3.seq;
        f.end_ct_len = SV3_END_LEN;
        ok = sv3_seal(&r->s3, SV3_END, hashes, SV3_END_LEN, f.end_ct, f.end_tag) == 0;
    }
    json_t *o = !ok ? NULL : r->stream ? proto_final_event(&f) : proto_chat_reply(&f);
    json_decref((json_t *)f.stored_user);
    json_decref((json_t *)f.stored_assistant);
    if (!o) {
        fail_req(r, ENCLAVE_ERR_INTERNAL, "Internal error");
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
        const char *msg;
        enclave_err code = map_bedrock_error(err, &msg);
        log_info(r->rid, "event=upstream_error kind=\"%s\" status=%d type=%s", bedrock_strerror(err->code),
                 err->http_status, err->type[0] ? err->type : "-");
        fail_req(r, code, msg);
        return;
    }
    if (r->answer.len == 0) { /* never store an empty answer (defect §10.6) */
        fail_req(r, ENCLAVE_ERR_EMPTY_ANSWER, "The model returned an empty answer");
        return;
    }
    finish_ok(r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    fail_req(arg, ENCLAVE_ERR_TIMEOUT, "Request timed out");
}

/* Whether the enclave can take a chat now; else the one error, and false. */
static bool can_chat(enclave_core *c, const enclave_sink *sink, void *ud, bool stream, const char *rid)
{
    if (!c->has_creds)
        fail_early(sink, ud, stream, ENCLAVE_ERR_NO_CREDENTIALS,
                   stream ? "No AWS credentials" : "No AWS credentials. Parent must send SET_CREDENTIALS first.", rid);
    else if (creds_expired(c))
        fail_early(sink, ud, stream, ENCLAVE_ERR_CREDENTIALS_EXPIRED, "AWS credentials expired", rid);
    else if (c->active >= c->max_streams)
        fail_early(sink, ud, stream, ENCLAVE_ERR_BUSY, "Enclave busy, please retry", rid);
    else
        return true;
    return false;
}

static enclave_req *req_new(enclave_core *c, bool stream, const enclave_sink *sink, void *ud, const char *rid)
{
    enclave_req *r = calloc(1, sizeof *r);
    if (!r) {
        fail_early(sink, ud, stream, ENCLAVE_ERR_INTERNAL, "Internal error", rid);
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
    return r;
}

/* Asks Bedrock and arms the deadline. The request is failed (freed) on error. */
static bool start_upstream(enclave_req *r, const history *h, const proto_chat_request *pr)
{
    enclave_core *c = r->core;
    sigv4_credentials creds = {c->akid, c->secret, c->token};
    bedrock_request br = {
        .model_id = r->model, .messages = h->msgs, .n_messages = h->n,
        .system = pr->system_prompt ? pr->system_prompt : ENCLAVE_SYSTEM_PROMPT,
        .max_tokens = BEDROCK_DEFAULT_MAX_TOKENS, .temperature = BEDROCK_DEFAULT_TEMPERATURE,
        .creds = &creds, .rid = r->rid,
    };
    static const bedrock_callbacks cb = {on_text, on_reasoning, on_usage, on_stop, on_done};
    bedrock_error berr;
    r->call = r->stream ? bedrock_converse_stream(c->bedrock, &br, &cb, r, &berr)
                        : bedrock_converse(c->bedrock, &br, &cb, r, &berr);
    if (!r->call) {
        log_warn(r->rid, "event=bedrock_start_failed detail=\"%s\"", berr.message);
        fail_req(r, ENCLAVE_ERR_INTERNAL, "Internal error");
        return false;
    }
    r->deadline = evtimer_new(c->base, on_deadline, r);
    struct timeval tv = {c->stream_timeout_ms / 1000, (c->stream_timeout_ms % 1000) * 1000};
    if (r->deadline)
        evtimer_add(r->deadline, &tv);
    return true;
}

static enclave_req *start_chat(enclave_core *c, const json_t *req, bool stream, const enclave_sink *sink,
                               void *ud, const char *rid)
{
    if (!can_chat(c, sink, ud, stream, rid))
        return NULL;
    enclave_req *r = req_new(c, stream, sink, ud, rid);
    if (!r)
        return NULL;
    proto_chat_request pr;
    proto_error err;
    history h;
    history_init(&h);
    if (proto_parse_chat_request(req, stream, &pr, &err) < 0) {
        fail_req(r, err.code, err.message);
        return NULL;
    }
    snprintf(r->model, sizeof r->model, "%s", pr.model);
    memcpy(r->reply_pub, pr.reply_pub, sizeof r->reply_pub);
    memcpy(r->storage_pub, pr.storage_pub, sizeof r->storage_pub);
    r->v3 = pr.format == 3;
    enclave_err e = ENCLAVE_OK;
    if (!r->v3 && c->refuse_legacy) { /* an unbound request: the operator allows none */
        e = err.code = ENCLAVE_ERR_LEGACY_REFUSED;
        snprintf(err.message, sizeof err.message, "Only bound requests (stream format 3) are accepted");
    }
    if (e == ENCLAVE_OK)
        e = request_open(c->key, c->replay, &pr, &h, &r->user_text, r->request_hash, &err);
    size_t turns = h.n ? h.n - 1 : 0;
    /* format 3 announces its key before anything else, and before Bedrock is
     * asked; a refused request gets its one error and nothing before it */
    int ar = e == ENCLAVE_OK && r->v3 ? announce_stream_key(r) : 0;
    if (ar == -1) {
        e = err.code = ENCLAVE_ERR_INTERNAL;
        snprintf(err.message, sizeof err.message, "Internal error");
    }
    bool started = e == ENCLAVE_OK && ar == 0 && start_upstream(r, &h, &pr);
    history_free(&h); /* the request body was built and wiped inside */
    proto_chat_request_free(&pr);
    if (ar == -2) /* the sink cancelled: r is gone */
        return NULL;
    if (e != ENCLAVE_OK) {
        fail_req(r, e, err.message);
        return NULL;
    }
    if (!started)
        return NULL;
    log_info(r->rid, "event=request_start command=%s model=%s turns=%zu", proto_cmd_name(
             stream ? PROTO_CMD_CHAT_STREAM : PROTO_CMD_CHAT), r->model, turns);
    return r;
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
    if (!json_is_object(request)) {
        reply_done(sink, ud, proto_error_reply(PROTO_CMD_UNKNOWN, ENCLAVE_OK, "Invalid JSON: expected an object"));
        return NULL;
    }
    const json_t *jc = json_object_get(request, PF_COMMAND);
    proto_cmd cmd = proto_cmd_parse(json_string_value(jc));
    log_info(rid, "event=command name=%s", cmd != PROTO_CMD_UNKNOWN ? proto_cmd_name(cmd) : "-");
    switch (cmd) {
    case PROTO_CMD_GET_PUBLIC_KEY: reply_done(sink, ud, cmd_get_public_key(c)); break;
    case PROTO_CMD_HEALTH: reply_done(sink, ud, cmd_health(c)); break;
    case PROTO_CMD_SET_CREDENTIALS: reply_done(sink, ud, cmd_set_credentials(c, request, rid)); break;
    case PROTO_CMD_RUN_TESTS: reply_done(sink, ud, selftest_run()); break;
    case PROTO_CMD_GET_ATTESTATION: reply_done(sink, ud, cmd_get_attestation(c, request, rid)); break;
    case PROTO_CMD_CHAT_STREAM: return start_chat(c, request, true, sink, ud, rid);
    case PROTO_CMD_CHAT: return start_chat(c, request, false, sink, ud, rid);
    case PROTO_CMD_UNKNOWN: {
        char name[64];
        upper(json_is_string(jc) ? json_string_value(jc) : "", name, sizeof name);
        reply_done(sink, ud, proto_unknown_command_reply(name));
        break;
    }
    }
    return NULL;
}

void enclave_abort_all(enclave_core *c, const char *why)
{
    while (!LIST_EMPTY(&c->reqs))
        fail_req(LIST_FIRST(&c->reqs), ENCLAVE_ERR_SHUTTING_DOWN, why);
}

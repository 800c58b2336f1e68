#include "aws/bedrock.h"

#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/eventstream.h"
#include "common/buf.h"
#include "common/log.h"

#define MAX_CONVERSE_BODY (16u << 20)

struct bedrock_client {
    https_ctx *https;
    sigv4_signer *signer;
    char region[64];
    char host[256];
    char host_header[300];
    uint16_t port;
    bool has_proxy;
    veil_addr proxy;
    unsigned connect_ms, idle_ms, total_ms;
    https_pool *pool;
};

struct bedrock_call {
    bedrock_client *client;
    https_conn *conn;
    es_decoder *dec;
    bool stream;
    bedrock_callbacks cb;
    void *ud;
    int http_status;
    char err_type[96];
    vbuf body; /* error body, or the whole converse answer */
    bool got_stop;
    bedrock_error err; /* set when the stream itself reported the failure */
    int busy;
    bool cancelled;
    char rid[LOG_RID_LEN + 1];
};

const char *bedrock_strerror(bedrock_err e)
{
    switch (e) {
    case BEDROCK_OK: return "ok";
    case BEDROCK_ERR_ARG: return "bad request";
    case BEDROCK_ERR_HTTP: return "Bedrock returned an HTTP error";
    case BEDROCK_ERR_EXCEPTION: return "Bedrock stream exception";
    case BEDROCK_ERR_STREAM: return "Bedrock stream error";
    case BEDROCK_ERR_DECODE: return "corrupt event stream";
    case BEDROCK_ERR_PROTOCOL: return "unexpected Bedrock response";
    case BEDROCK_ERR_TRUNCATED: return "Bedrock stream truncated";
    case BEDROCK_ERR_TRANSPORT: return "cannot reach Bedrock";
    case BEDROCK_ERR_TIMEOUT: return "Bedrock timed out";
    }
    return "unknown error";
}

static void set_err(bedrock_error *e, bedrock_err code, const char *type, const char *msg)
{
    if (!e)
        return;
    memset(e, 0, sizeof *e);
    e->code = code;
    snprintf(e->type, sizeof e->type, "%s", type ? type : "");
    snprintf(e->message, sizeof e->message, "%s", msg ? msg : bedrock_strerror(code));
}

bedrock_client *bedrock_client_new(https_ctx *https, const bedrock_config *cfg)
{
    if (!cfg->region || !*cfg->region || strlen(cfg->region) >= 64)
        return NULL;
    bedrock_client *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->https = https;
    snprintf(b->region, sizeof b->region, "%s", cfg->region);
    if (cfg->host)
        snprintf(b->host, sizeof b->host, "%s", cfg->host);
    else
        snprintf(b->host, sizeof b->host, "bedrock-runtime.%s.amazonaws.com", cfg->region);
    b->port = cfg->port ? cfg->port : 443;
    if (b->port == 443)
        snprintf(b->host_header, sizeof b->host_header, "%s", b->host);
    else
        snprintf(b->host_header, sizeof b->host_header, "%s:%u", b->host, b->port);
    if (cfg->proxy) {
        b->proxy = *cfg->proxy;
        b->has_proxy = true;
    }
    b->connect_ms = cfg->connect_timeout_ms;
    b->idle_ms = cfg->idle_timeout_ms;
    b->total_ms = cfg->total_timeout_ms;
    b->pool = cfg->pool;
    sigv4_config sc = sigv4_config_bedrock(b->region);
    b->signer = sigv4_signer_new(&sc);
    if (!b->signer) {
        free(b);
        return NULL;
    }
    return b;
}

void bedrock_client_free(bedrock_client *b)
{
    if (!b)
        return;
    sigv4_signer_free(b->signer);
    free(b);
}

const char *bedrock_client_host(const bedrock_client *b) { return b->host; }

char *bedrock_request_body(const bedrock_request *req, size_t *len)
{
    json_t *root = json_object(), *msgs = json_array();
    char *out = NULL;
    if (!root || !msgs)
        goto out;
    json_object_set_new(root, "messages", msgs);
    for (size_t i = 0; i < req->n_messages; i++) {
        const bedrock_message *m = &req->messages[i];
        json_t *text = json_stringn(m->text, m->len);
        if (!text) /* not UTF-8 */
            goto out;
        json_t *msg = json_pack("{s:s, s:[{s:o}]}", "role", m->role, "content", "text", text);
        if (!msg || json_array_append_new(msgs, msg) < 0)
            goto out;
    }
    if (req->system && *req->system)
        json_object_set_new(root, "system", json_pack("[{s:s}]", "text", req->system));
    json_t *inf = json_pack("{s:i}", "maxTokens",
                            req->max_tokens > 0 ? req->max_tokens : BEDROCK_DEFAULT_MAX_TOKENS);
    if (req->temperature >= 0)
        json_object_set_new(inf, "temperature", json_real(req->temperature));
    json_object_set_new(root, "inferenceConfig", inf);
    out = json_dumps(root, JSON_COMPACT);
    if (out)
        *len = strlen(out);
out:
    json_decref(root);
    return out;
}

static void call_free(bedrock_call *c)
{
    es_decoder_free(c->dec);
    vbuf_free_secure(&c->body);
    free(c);
}

void bedrock_cancel(bedrock_call *c)
{
    if (!c || c->cancelled)
        return;
    c->cancelled = true;
    if (c->busy == 0) {
        https_cancel(c->conn);
        call_free(c);
    }
    /* else: the frame that is running returns non-zero to https, whose on_done frees us */
}

void bedrock_pause(bedrock_call *c, bool pause)
{
    if (c && !c->cancelled)
        https_pause(c->conn, pause);
}

/* ---- stream events ---- */

static const char *json_str(const json_t *o, const char *k, size_t *len)
{
    const json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return NULL;
    if (len)
        *len = json_string_length(v);
    return json_string_value(v);
}

static int user_text(bedrock_call *c, int (*fn)(void *, const char *, size_t), const char *t,
                     size_t n)
{
    if (!fn || n == 0)
        return 0;
    c->busy++;
    int r = fn(c->ud, t, n);
    c->busy--;
    if (r != 0 && !c->cancelled)
        bedrock_cancel(c); /* callback asked to stop: same as a cancel */
    return c->cancelled ? -1 : 0;
}

static int on_event(bedrock_call *c, const char *type, size_t tlen, const json_t *p)
{
#define IS(name) (tlen == sizeof(name) - 1 && memcmp(type, name, tlen) == 0)
    if (IS("contentBlockDelta")) {
        const json_t *delta = json_object_get(p, "delta");
        size_t n;
        const char *t;
        if (!json_is_object(delta))
            return -1;
        if ((t = json_str(delta, "text", &n)))
            return user_text(c, c->cb.on_text, t, n);
        const json_t *rc = json_object_get(delta, "reasoningContent");
        if (json_is_object(rc) && (t = json_str(rc, "text", &n)))
            return user_text(c, c->cb.on_reasoning, t, n);
        return 0; /* other delta kinds (tool use, signatures) carry no text */
    }
    if (IS("messageStop")) {
        c->got_stop = true;
        const char *reason = json_str(p, "stopReason", NULL);
        if (c->cb.on_stop)
            c->cb.on_stop(c->ud, reason ? reason : "end_turn");
        return 0;
    }
    if (IS("metadata")) {
        const json_t *u = json_object_get(p, "usage");
        if (json_is_object(u) && c->cb.on_usage)
            c->cb.on_usage(c->ud, (long)json_integer_value(json_object_get(u, "inputTokens")),
                           (long)json_integer_value(json_object_get(u, "outputTokens")));
        return 0;
    }
    return 0; /* messageStart, contentBlockStart/Stop, and future event types */
#undef IS
}

static int on_message(const es_message *m, void *ud)
{
    bedrock_call *c = ud;
    size_t tlen = 0;
    const char *type;
    json_t *p = NULL;
    es_kind kind = es_message_kind(m);
    if (kind == ES_KIND_EXCEPTION || kind == ES_KIND_ERROR) {
        char t[96] = "", msg[512] = "";
        type = es_message_header_str(m, kind == ES_KIND_EXCEPTION ? ":exception-type" : ":error-code", &tlen);
        if (type)
            snprintf(t, sizeof t, "%.*s", (int)(tlen < 95 ? tlen : 95), type);
        if (kind == ES_KIND_EXCEPTION) {
            p = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
            const char *s = json_str(p, "message", NULL);
            if (!s)
                s = json_str(p, "Message", NULL);
            snprintf(msg, sizeof msg, "%s", s ? s : "");
            json_decref(p);
        } else {
            size_t ml;
            const char *s = es_message_header_str(m, ":error-message", &ml);
            if (s)
                snprintf(msg, sizeof msg, "%.*s", (int)(ml < 511 ? ml : 511), s);
        }
        set_err(&c->err, kind == ES_KIND_EXCEPTION ? BEDROCK_ERR_EXCEPTION : BEDROCK_ERR_STREAM, t, msg);
        return 1;
    }
    if (kind != ES_KIND_EVENT) {
        set_err(&c->err, BEDROCK_ERR_PROTOCOL, "", "event-stream message without a known :message-type");
        return 1;
    }
    type = es_message_header_str(m, ":event-type", &tlen);
    p = json_loadb((const char *)m->payload, m->payload_len, 0, NULL);
    if (!type || !json_is_object(p)) {
        json_decref(p);
        set_err(&c->err, BEDROCK_ERR_PROTOCOL, "", "event without :event-type or JSON payload");
        return 1;
    }
    int r = on_event(c, type, tlen, p);
    json_decref(p);
    if (r < 0 && !c->cancelled && c->err.code == BEDROCK_OK)
        set_err(&c->err, BEDROCK_ERR_PROTOCOL, "", "malformed event payload");
    return r < 0 ? 1 : 0;
}

/* ---- https callbacks ---- */

static int on_head(void *ud, const http1_response *resp)
{
    bedrock_call *c = ud;
    c->http_status = resp->status;
    if (resp->status != 200) {
        size_t n;
        const char *t = http1_header_get(&resp->headers, "x-amzn-ErrorType", &n);
        if (t) {
            const char *colon = memchr(t, ':', n); /* "Type:http://..." */
            if (colon)
                n = (size_t)(colon - t);
            snprintf(c->err_type, sizeof c->err_type, "%.*s", (int)(n < 95 ? n : 95), t);
        }
    }
    return 0;
}

static int on_body(void *ud, const uint8_t *data, size_t len)
{
    bedrock_call *c = ud;
    if (c->http_status != 200) {
        size_t room = BEDROCK_MAX_ERROR_BODY - c->body.len;
        return vbuf_append(&c->body, data, len < room ? len : room) < 0;
    }
    if (!c->stream) {
        if (c->body.len + len > MAX_CONVERSE_BODY) {
            set_err(&c->err, BEDROCK_ERR_PROTOCOL, "", "converse response too large");
            return 1;
        }
        return vbuf_append(&c->body, data, len) < 0;
    }
    c->busy++;
    es_err e = es_decoder_feed(c->dec, data, len);
    c->busy--;
    if (c->cancelled)
        return 1;
    if (e == ES_OK)
        return 0;
    if (e != ES_ERR_CALLBACK)
        set_err(&c->err, BEDROCK_ERR_DECODE, "", es_strerror(e));
    return 1;
}

static void http_error(bedrock_call *c, bedrock_error *out)
{
    json_t *j = json_loadb((const char *)c->body.data, c->body.len, 0, NULL);
    const char *msg = json_str(j, "message", NULL);
    if (!msg)
        msg = json_str(j, "Message", NULL);
    char m[512];
    snprintf(m, sizeof m, "%s", msg ? msg : "(no message)");
    json_decref(j);
    set_err(out, BEDROCK_ERR_HTTP, c->err_type, m);
    out->http_status = c->http_status;
}

static void converse_result(bedrock_call *c, bedrock_error *out)
{
    json_t *j = json_loadb((const char *)c->body.data, c->body.len, 0, NULL);
    const json_t *content = json_object_get(json_object_get(json_object_get(j, "output"), "message"), "content");
    if (!json_is_array(content)) {
        set_err(out, BEDROCK_ERR_PROTOCOL, "", "converse response without output.message.content");
        json_decref(j);
        return;
    }
    vbuf text = VBUF_INIT;
    size_t i;
    const json_t *block;
    json_array_foreach(content, i, block) {
        size_t n;
        const char *t = json_str(block, "text", &n);
        if (t)
            vbuf_append(&text, t, n);
    }
    const json_t *u = json_object_get(j, "usage");
    const char *stop = json_str(j, "stopReason", NULL);
    if (user_text(c, c->cb.on_text, (const char *)text.data, text.len) == 0) {
        if (u && c->cb.on_usage)
            c->cb.on_usage(c->ud, (long)json_integer_value(json_object_get(u, "inputTokens")),
                           (long)json_integer_value(json_object_get(u, "outputTokens")));
        if (c->cb.on_stop)
            c->cb.on_stop(c->ud, stop ? stop : "end_turn");
    }
    vbuf_free_secure(&text);
    json_decref(j);
}

static void on_http_done(void *ud, https_err herr, const char *detail)
{
    bedrock_call *c = ud;
    bedrock_error e;
    memset(&e, 0, sizeof e);
    c->busy++;
    if (c->cancelled)
        goto out;
    if (c->err.code != BEDROCK_OK) {
        e = c->err;
    } else if (herr == HTTPS_ERR_TIMEOUT_CONNECT || herr == HTTPS_ERR_TIMEOUT_IDLE ||
               herr == HTTPS_ERR_TIMEOUT_TOTAL) {
        set_err(&e, BEDROCK_ERR_TIMEOUT, "", detail);
    } else if (herr == HTTPS_ERR_TRUNCATED) {
        set_err(&e, BEDROCK_ERR_TRUNCATED, "", detail);
    } else if (herr == HTTPS_ERR_PROTOCOL) {
        set_err(&e, BEDROCK_ERR_PROTOCOL, "", detail);
    } else if (herr != HTTPS_OK) {
        char m[512];
        snprintf(m, sizeof m, "%s: %s", https_strerror(herr), detail);
        set_err(&e, BEDROCK_ERR_TRANSPORT, "", m);
    } else if (c->http_status != 200) {
        http_error(c, &e);
    } else if (c->stream) {
        es_err fe = es_decoder_finish(c->dec);
        if (fe != ES_OK)
            set_err(&e, BEDROCK_ERR_TRUNCATED, "", es_strerror(fe));
        else if (!c->got_stop)
            set_err(&e, BEDROCK_ERR_TRUNCATED, "", "stream ended without messageStop");
    } else {
        converse_result(c, &e);
    }
    if (c->cancelled) /* a callback inside converse_result cancelled */
        goto out;
    if (e.code != BEDROCK_OK)
        log_info(c->rid, "event=bedrock_error kind=\"%s\" status=%d type=%s", bedrock_strerror(e.code),
                 e.http_status, e.type[0] ? e.type : "-");
    c->cb.on_done(c->ud, e.code == BEDROCK_OK ? NULL : &e);
out:
    c->busy--;
    call_free(c); /* https frees the connection after we return */
}

static bedrock_call *start(bedrock_client *b, const bedrock_request *req, bool stream,
                           const bedrock_callbacks *cb, void *ud, bedrock_error *err)
{
    bedrock_call *c = NULL;
    char *body = NULL;
    size_t body_len = 0;
    vbuf path = VBUF_INIT;
    sigv4_signed sig;
    memset(&sig, 0, sizeof sig);
    if (!req->model_id || !*req->model_id || !req->n_messages || !req->creds || !cb || !cb->on_done) {
        set_err(err, BEDROCK_ERR_ARG, "", "model id, messages, credentials and on_done are required");
        return NULL;
    }
    const char *segs[] = {"model", req->model_id, stream ? "converse-stream" : "converse"};
    if (sigv4_build_path(&path, segs, 3) < 0 || !(body = bedrock_request_body(req, &body_len))) {
        set_err(err, BEDROCK_ERR_ARG, "", "cannot build the request (text must be UTF-8)");
        goto fail;
    }
    const char *accept = stream ? "application/vnd.amazon.eventstream" : "application/json";
    sigv4_header sh[] = {
        {"Host", b->host_header}, {"Content-Type", "application/json"}, {"Accept", accept},
    };
    sigv4_request sreq = {"POST", vbuf_cstr(&path), NULL, sh, 3, (const uint8_t *)body, body_len};
    int sr = sigv4_sign_request(b->signer, req->creds, &sreq, time(NULL), &sig);
    if (sr != SIGV4_OK) {
        set_err(err, BEDROCK_ERR_ARG, "", sigv4_strerror(sr));
        goto fail;
    }
    https_header hh[3 + SIGV4_MAX_ADDED_HEADERS];
    size_t nh = 0;
    hh[nh++] = (https_header){"Content-Type", "application/json"};
    hh[nh++] = (https_header){"Accept", accept};
    for (size_t i = 0; i < sig.n_headers; i++)
        hh[nh++] = (https_header){sig.headers[i].name, sig.headers[i].value};

    c = calloc(1, sizeof *c);
    if (!c || (stream && !(c->dec = es_decoder_new(on_message, c)))) {
        set_err(err, BEDROCK_ERR_ARG, "", "out of memory");
        goto fail;
    }
    c->client = b;
    c->stream = stream;
    c->cb = *cb;
    c->ud = ud;
    snprintf(c->rid, sizeof c->rid, "%s", req->rid ? req->rid : "-");
    https_request hr = {
        .tls = true, .host = b->host, .port = b->port, .proxy = b->has_proxy ? &b->proxy : NULL,
        .method = "POST", .target = vbuf_cstr(&path), .headers = hh, .n_headers = nh,
        .body = (const uint8_t *)body, .body_len = body_len,
        .connect_timeout_ms = b->connect_ms, .idle_timeout_ms = b->idle_ms,
        .total_timeout_ms = b->total_ms, .rid = req->rid, .pool = b->pool,
    };
    static const https_callbacks hcb = {on_head, on_body, on_http_done};
    char herr[160];
    c->conn = https_start(b->https, &hr, &hcb, c, herr, sizeof herr);
    if (!c->conn) {
        set_err(err, BEDROCK_ERR_ARG, "", herr);
        goto fail;
    }
    log_debug(req->rid, "event=bedrock_start model=%s stream=%d bytes=%zu", req->model_id, stream, body_len);
    OPENSSL_clear_free(body, body_len);
    sigv4_signed_free(&sig);
    vbuf_free(&path);
    return c;
fail:
    if (c)
        call_free(c);
    if (body)
        OPENSSL_clear_free(body, body_len);
    sigv4_signed_free(&sig);
    vbuf_free(&path);
    return NULL;
}

bedrock_call *bedrock_converse_stream(bedrock_client *b, const bedrock_request *req,
                                      const bedrock_callbacks *cb, void *ud, bedrock_error *err)
{
    return start(b, req, true, cb, ud, err);
}

bedrock_call *bedrock_converse(bedrock_client *b, const bedrock_request *req,
                               const bedrock_callbacks *cb, void *ud, bedrock_error *err)
{
    return start(b, req, false, cb, ud, err);
}

#include "aws/imds.h"

#include <ctype.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/isotime.h"
#include "common/log.h"
#include "common/secret.h"

#define IMDS_MAX_BODY (64 * 1024)

typedef enum step { STEP_TOKEN = 0, STEP_ROLE, STEP_CREDS, STEP_REGION } step;
static const char *const STEP_NAMES[] = {"token", "role", "credentials", "region"};

struct imds_op {
    https_ctx *https;
    char host[256];
    uint16_t port;
    unsigned timeout_ms;
    bool want_region;
    step st;
    https_conn *conn;
    int status;
    vbuf body;
    char token[256];
    imds_credentials creds;
    imds_creds_cb creds_cb;
    imds_region_cb region_cb;
    void *ud;
};

void imds_credentials_clear(imds_credentials *c)
{
    OPENSSL_cleanse(c, sizeof *c);
}

static void op_free(imds_op *op)
{
    vbuf_free_secure(&op->body);
    imds_credentials_clear(&op->creds);
    OPENSSL_cleanse(op->token, sizeof op->token);
    free(op);
}

void imds_cancel(imds_op *op)
{
    if (!op)
        return;
    https_cancel(op->conn);
    op_free(op);
}

static void report(imds_op *op, const char *err)
{
    if (op->want_region)
        op->region_cb(op->ud, err ? NULL : (const char *)vbuf_cstr(&op->body), err);
    else
        op->creds_cb(op->ud, err ? NULL : &op->creds, err);
    op_free(op);
}

static int on_head(void *ud, const http1_response *resp)
{
    ((imds_op *)ud)->status = resp->status;
    return 0;
}

static int on_body(void *ud, const uint8_t *data, size_t len)
{
    imds_op *op = ud;
    if (op->body.len + len > IMDS_MAX_BODY)
        return 1;
    return vbuf_append_secure(&op->body, data, len) < 0; /* it grows; the credentials come in it */
}

static int next_step(imds_op *op);

static void trim(vbuf *b)
{
    while (b->len && isspace(b->data[b->len - 1]))
        b->len--;
}

static int copy_field(const json_t *j, const char *k, char *out, size_t cap)
{
    const json_t *v = json_object_get(j, k);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return -1;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* jansson's lexer copies the text it scans into buffers that it frees
 * unwiped, and veild installs no wiping allocator in nitro mode. jansson's
 * allocator is process-wide, so it wipes every block it frees for the length of
 * this parse only (the programs that fetch credentials run one thread; the
 * allocation function stays the same, so blocks made before or after mix). */
static const char *parse_creds(imds_op *op)
{
    json_malloc_t jmalloc;
    json_free_t jfree;
    json_get_alloc_funcs(&jmalloc, &jfree);
    json_set_alloc_funcs(jmalloc, secret_free_block);
    json_t *j = json_loadb((const char *)op->body.data, op->body.len, 0, NULL);
    const char *err = NULL;
    const json_t *code = json_object_get(j, "Code");
    if (!json_is_object(j))
        err = "IMDS credentials are not a JSON object";
    else if (json_is_string(code) && strcmp(json_string_value(code), "Success") != 0)
        err = "IMDS credentials Code is not Success";
    else if (copy_field(j, "AccessKeyId", op->creds.access_key_id, sizeof op->creds.access_key_id) ||
             copy_field(j, "SecretAccessKey", op->creds.secret_access_key, sizeof op->creds.secret_access_key) ||
             copy_field(j, "Token", op->creds.session_token, sizeof op->creds.session_token))
        err = "IMDS credentials lack AccessKeyId, SecretAccessKey or Token";
    else if (copy_field(j, "Expiration", op->creds.expiration, sizeof op->creds.expiration) == 0 &&
             (op->creds.expires_at = time_parse_iso8601(op->creds.expiration)) == (time_t)-1)
        err = "IMDS credentials have an unparsable Expiration";
    json_decref(j);
    json_set_alloc_funcs(jmalloc, jfree);
    return err;
}

static void on_done(void *ud, https_err herr, const char *detail)
{
    imds_op *op = ud;
    op->conn = NULL;
    char err[300];
    if (herr != HTTPS_OK) {
        snprintf(err, sizeof err, "IMDS %s request failed: %s (%s)", STEP_NAMES[op->st],
                 https_strerror(herr), detail);
        report(op, err);
        return;
    }
    if (op->status != 200) {
        snprintf(err, sizeof err, "IMDS %s request failed: HTTP %d", STEP_NAMES[op->st], op->status);
        report(op, err);
        return;
    }
    trim(&op->body);
    switch (op->st) {
    case STEP_TOKEN:
        if (op->body.len == 0 || op->body.len >= sizeof op->token) {
            report(op, "IMDS returned an empty or oversized token");
            return;
        }
        memcpy(op->token, op->body.data, op->body.len);
        op->token[op->body.len] = '\0';
        op->st = op->want_region ? STEP_REGION : STEP_ROLE;
        break;
    case STEP_ROLE: {
        /* the listing may hold several lines; the first is the instance role */
        size_t n = 0;
        while (n < op->body.len && op->body.data[n] != '\n')
            n++;
        if (n == 0 || n >= sizeof op->creds.role ||
            memchr(op->body.data, '/', n) || memchr(op->body.data, '?', n)) {
            report(op, "IMDS has no usable IAM role attached to this instance");
            return;
        }
        memcpy(op->creds.role, op->body.data, n);
        op->creds.role[n] = '\0';
        op->st = STEP_CREDS;
        break;
    }
    case STEP_CREDS: {
        const char *perr = parse_creds(op);
        report(op, perr);
        return;
    }
    case STEP_REGION:
        if (op->body.len == 0 || op->body.len > 64) {
            report(op, "IMDS returned no region");
            return;
        }
        report(op, NULL);
        return;
    }
    vbuf_free_secure(&op->body);
    if (next_step(op) < 0) {
        snprintf(err, sizeof err, "IMDS %s request could not start", STEP_NAMES[op->st]);
        report(op, err);
    }
}

/* Starts the current step's request; -1 (nothing reported) if it cannot start. */
static int next_step(imds_op *op)
{
    static const https_callbacks cb = {on_head, on_body, on_done};
    char target[256];
    https_header hdr[1];
    char ttl[16];
    https_request req = {
        .tls = false, .host = op->host, .port = op->port, .headers = hdr, .n_headers = 1,
        .connect_timeout_ms = op->timeout_ms, .idle_timeout_ms = op->timeout_ms,
        .total_timeout_ms = op->timeout_ms,
    };
    op->status = 0;
    if (op->st == STEP_TOKEN) {
        snprintf(ttl, sizeof ttl, "%d", IMDS_TOKEN_TTL_SECONDS);
        hdr[0] = (https_header){"X-aws-ec2-metadata-token-ttl-seconds", ttl};
        req.method = "PUT";
        req.target = "/latest/api/token";
    } else {
        hdr[0] = (https_header){"X-aws-ec2-metadata-token", op->token};
        req.method = "GET";
        if (op->st == STEP_ROLE)
            snprintf(target, sizeof target, "/latest/meta-data/iam/security-credentials/");
        else if (op->st == STEP_CREDS)
            snprintf(target, sizeof target, "/latest/meta-data/iam/security-credentials/%s", op->creds.role);
        else
            snprintf(target, sizeof target, "/latest/meta-data/placement/region");
        req.target = target;
    }
    char err[160];
    op->conn = https_start(op->https, &req, &cb, op, err, sizeof err);
    return op->conn ? 0 : -1;
}

static imds_op *op_new(https_ctx *https, const imds_config *cfg, void *ud)
{
    imds_op *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->https = https;
    snprintf(op->host, sizeof op->host, "%s", cfg && cfg->host ? cfg->host : IMDS_DEFAULT_HOST);
    op->port = cfg && cfg->port ? cfg->port : IMDS_DEFAULT_PORT;
    op->timeout_ms = cfg && cfg->timeout_ms ? cfg->timeout_ms : 2000;
    op->ud = ud;
    return op;
}

static imds_op *start_op(https_ctx *https, const imds_config *cfg, bool want_region,
                         imds_creds_cb creds_cb, imds_region_cb region_cb, void *ud)
{
    imds_op *op = op_new(https, cfg, ud);
    if (!op)
        return NULL;
    op->want_region = want_region;
    op->creds_cb = creds_cb;
    op->region_cb = region_cb;
    if (next_step(op) < 0) {
        op_free(op);
        return NULL;
    }
    return op;
}

imds_op *imds_fetch_credentials(https_ctx *https, const imds_config *cfg, imds_creds_cb cb, void *ud)
{
    return start_op(https, cfg, false, cb, NULL, ud);
}

imds_op *imds_fetch_region(https_ctx *https, const imds_config *cfg, imds_region_cb cb, void *ud)
{
    return start_op(https, cfg, true, NULL, cb, ud);
}

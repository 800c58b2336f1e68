/* veil-bedrock-sim — a local stand-in for bedrock-runtime.<region>.amazonaws.com.
 *
 * A TLS server speaking the two Bedrock runtime calls veil uses, ConverseStream and
 * Converse. It checks SigV4 (service "bedrock") against static test credentials and/or
 * credentials minted by veil-imds-sim from a shared seed (tools/sim_creds.h), validates
 * the Converse body like Bedrock does, and answers deterministically (the rule is in
 * tools/bedrock_sim.h and in --help) as a real application/vnd.amazon.eventstream body,
 * one HTTP chunk per event-stream message, with faults injected per request on demand.
 * One libevent loop, non-blocking; HTTP/1.1 keep-alive (--keep-alive-ms) as Bedrock has
 * it. Never logs a body, a prompt, a header value or a credential.
 * Stays whole (~750 lines): a test tool, one program read top to bottom; its shared
 * pieces are already apart (sim_http.c, sim_creds.h, bedrock_sim.h).
 */
#include <event2/buffer.h>
#include <event2/event.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws/eventstream.h"
#include "net/http1.h"
#include "aws/sigv4.h"
#include "bedrock_sim.h"
#include "common/addr.h"
#include "common/config.h"
#include "common/log.h"
#include "common/secret.h"
#include "sim_creds.h"
#include "sim_http.h"

#define PROG "veil-bedrock-sim"
#define EXIT_USAGE 2
#define STREAM_HIGH_WATER (256u * 1024) /* refill the socket buffer only below this */
#define SIM_HEADER "x-veil-sim"
#define MAX_MODEL_ID 512

typedef struct bsim_server {
    const char *region;
    sigv4_credentials statics; /* access_key_id NULL when none configured */
    const char *seed;          /* NULL: no minted credentials accepted */
    bsim_options defaults;
    long keep_alive_ms;
} bsim_server;

typedef enum {
    PH_DELAY = 0,   /* slow-first-byte: nothing written yet */
    PH_RESPOND,     /* a whole (error or /converse) response, after the delay */
    PH_HEAD,        /* stream: the 200 head */
    PH_START,       /* messageStart */
    PH_DELTAS,      /* contentBlockDelta x deltas_to_send, paced by interval-ms */
    PH_END,         /* the ending the fault asks for */
    PH_IDLE,        /* nothing more to write (hang, or finished) */
} job_phase;

typedef struct job {
    sim_conn *c;
    bsim_route route;
    bsim_options o;
    bsim_request r;
    job_phase ph;
    long next_delta, deltas_to_send;
    bool delay_done; /* the timer for the pending pause has fired */
    struct event *timer;
    /* a pending error response (PH_RESPOND with err_status != 0) */
    int err_status;
    const char *err_type;
    const char *err_msg;
    vbuf payload, frame;
} job;

/* Messages of the simulated errors (the throttling one is Bedrock's own wording). */
#define MSG_THROTTLE "Too many requests, please wait before trying again."
#define MSG_INTERNAL "The server encountered an internal error (simulated)."
#define MSG_HTTP_400 "Simulated validation error (veil-bedrock-sim fault=http-400)."
#define MSG_VALIDATION "Simulated validation error (veil-bedrock-sim fault=validation)."
#define MSG_MODEL_ERROR "Simulated model error (veil-bedrock-sim fault=model-error)."
#define MSG_MODEL_STREAM "Simulated model stream error (veil-bedrock-sim fault=model-error)."

/* ------------------------------------------------------------------- helpers */

static void set_error(job *j, int status, const char *type, const char *msg)
{
    j->err_status = status;
    j->err_type = type;
    j->err_msg = msg;
}

static void json_usage(vbuf *b, const job *j, long output_tokens)
{
    unsigned long in = j->r.input_tokens;
    vbuf_printf(b,
                "\"usage\":{\"inputTokens\":%lu,\"outputTokens\":%ld,\"totalTokens\":%lu},"
                "\"metrics\":{\"latencyMs\":%ld}",
                in, output_tokens, in + (unsigned long)output_tokens, sim_conn_elapsed_ms(j->c));
}

/* Frames payload as one event-stream message in one HTTP chunk. */
static int put_chunk(job *j, bool corrupt_crc)
{
    struct evbuffer *out = sim_conn_output(j->c);
    if (corrupt_crc)
        j->frame.data[j->frame.len - 1] ^= 0xFF; /* the message CRC's last byte */
    if (evbuffer_add_printf(out, "%zx\r\n", j->frame.len) < 0 ||
        evbuffer_add(out, j->frame.data, j->frame.len) < 0 || evbuffer_add(out, "\r\n", 2) < 0)
        return -1;
    return 0;
}

static int put_event(job *j, const char *type, bool corrupt_crc)
{
    vbuf_reset(&j->frame);
    if (es_encode_event(&j->frame, type, (const char *)j->payload.data, j->payload.len) != ES_OK)
        return -1;
    return put_chunk(j, corrupt_crc);
}

static int put_exception(job *j)
{
    const char *type = "throttlingException", *msg = MSG_THROTTLE;
    if (j->o.fault == BSIM_FAULT_VALIDATION) {
        type = "validationException";
        msg = MSG_VALIDATION;
    } else if (j->o.fault == BSIM_FAULT_MODEL_ERROR) {
        type = "modelStreamErrorException";
        msg = MSG_MODEL_STREAM;
    }
    vbuf_reset(&j->payload);
    vbuf_reset(&j->frame);
    if (vbuf_printf(&j->payload, "{\"message\":\"%s\"}", msg) < 0 ||
        es_encode_exception(&j->frame, type, (const char *)j->payload.data, j->payload.len) !=
            ES_OK)
        return -1;
    return put_chunk(j, false);
}

static int put_delta(job *j, long i)
{
    vbuf text = VBUF_INIT;
    int rc = -1;
    vbuf_reset(&j->payload);
    if (bsim_delta_text(&j->r, &j->o, i, &text) < 0 ||
        vbuf_append_str(&j->payload, "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"") < 0 ||
        sim_json_escape(&j->payload, (const char *)text.data, text.len) < 0 ||
        vbuf_append_str(&j->payload, "\"},\"p\":\"abc\"}") < 0)
        goto out;
    long corrupt = j->o.chunks > 1 ? 1 : 0;
    rc = put_event(j, "contentBlockDelta", j->o.fault == BSIM_FAULT_BAD_CRC && i == corrupt);
out:
    vbuf_free_secure(&text);
    return rc;
}

static int put_normal_end(job *j)
{
    long out_tokens = j->o.fault == BSIM_FAULT_EMPTY ? 0 : j->o.chunks;
    vbuf_reset(&j->payload);
    if (vbuf_append_str(&j->payload, "{\"contentBlockIndex\":0}") < 0 ||
        put_event(j, "contentBlockStop", false) < 0)
        return -1;
    vbuf_reset(&j->payload);
    if (vbuf_append_str(&j->payload, "{\"stopReason\":\"end_turn\"}") < 0 ||
        put_event(j, "messageStop", false) < 0)
        return -1;
    vbuf_reset(&j->payload);
    vbuf_append_str(&j->payload, "{");
    json_usage(&j->payload, j, out_tokens);
    if (vbuf_append_str(&j->payload, "}") < 0 || put_event(j, "metadata", false) < 0)
        return -1;
    return 0;
}

static void respond_converse(job *j)
{
    vbuf body = VBUF_INIT, text = VBUF_INIT;
    long n = j->o.fault == BSIM_FAULT_EMPTY ? 0 : j->o.chunks;
    for (long i = 0; i < n; i++)
        if (bsim_delta_text(&j->r, &j->o, i, &text) < 0)
            goto oom;
    if (vbuf_append_str(&body, "{\"output\":{\"message\":{\"role\":\"assistant\","
                               "\"content\":[") < 0)
        goto oom;
    if (n > 0 && (vbuf_append_str(&body, "{\"text\":\"") < 0 ||
                  sim_json_escape(&body, (const char *)text.data, text.len) < 0 ||
                  vbuf_append_str(&body, "\"}") < 0))
        goto oom;
    if (vbuf_append_str(&body, "]}},\"stopReason\":\"end_turn\",") < 0)
        goto oom;
    json_usage(&body, j, n);
    if (vbuf_append_str(&body, "}") < 0)
        goto oom;
    char hdr[64];
    snprintf(hdr, sizeof hdr, "x-amzn-RequestId: %s\r\n", sim_conn_rid(j->c));
    sim_conn_respond(j->c, 200, "application/json", hdr, body.data, body.len);
    vbuf_free_secure(&body);
    vbuf_free_secure(&text);
    return;
oom:
    vbuf_free_secure(&body);
    vbuf_free_secure(&text);
    sim_conn_respond_aws_error(j->c, 500, "InternalServerException", "Out of memory.");
}

/* ------------------------------------------------------------------- the job */

static void job_free(void *arg)
{
    job *j = arg;
    if (j->timer)
        event_free(j->timer);
    bsim_request_free(&j->r);
    vbuf_free_secure(&j->payload);
    vbuf_free_secure(&j->frame);
    free(j);
}

static void pump(void *arg);

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    job *j = arg;
    j->delay_done = true;
    pump(j);
}

/* True when the pause has already elapsed; otherwise arms the timer and returns false. */
static bool paused(job *j, long ms)
{
    if (ms <= 0)
        return false;
    if (evtimer_pending(j->timer, NULL))
        return true; /* already waiting (the write callback can run pump meanwhile) */
    if (j->delay_done) {
        j->delay_done = false;
        return false;
    }
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(j->timer, &tv);
    return true;
}

static void fail_stream(job *j)
{
    /* out of memory mid-stream: cut it, the client sees a truncated stream */
    j->ph = PH_IDLE;
    sim_conn_drop(j->c);
}

/* Writes as far as the pacing and the socket allow; resumes from the timer or the
 * write callback. Never blocks. */
static void pump(void *arg)
{
    job *j = arg;
    while (sim_conn_pending(j->c) < STREAM_HIGH_WATER) {
        switch (j->ph) {
        case PH_DELAY:
            if (paused(j, j->o.slow_first_byte_ms))
                return;
            j->ph = j->route == BSIM_ROUTE_STREAM && !j->err_status ? PH_HEAD : PH_RESPOND;
            break;
        case PH_RESPOND:
            j->ph = PH_IDLE;
            if (j->err_status)
                sim_conn_respond_aws_error(j->c, j->err_status, j->err_type, j->err_msg);
            else if (j->o.fault == BSIM_FAULT_DROP)
                sim_conn_drop(j->c);
            else if (j->o.fault != BSIM_FAULT_HANG) /* hang: no answer until the client goes */
                respond_converse(j);
            return;
        case PH_HEAD:
            sim_conn_set_status(j->c, 200);
            if (evbuffer_add_printf(sim_conn_output(j->c),
                                    "HTTP/1.1 200 OK\r\n"
                                    "Content-Type: application/vnd.amazon.eventstream\r\n"
                                    "Transfer-Encoding: chunked\r\n%s"
                                    "x-amzn-RequestId: %s\r\n\r\n",
                                    sim_conn_connection_header(j->c), sim_conn_rid(j->c)) < 0)
                { fail_stream(j); return; }
            j->ph = PH_START;
            break;
        case PH_START:
            vbuf_reset(&j->payload);
            if (vbuf_append_str(&j->payload, "{\"role\":\"assistant\"}") < 0 ||
                put_event(j, "messageStart", false) < 0)
                { fail_stream(j); return; }
            j->ph = j->o.fault == BSIM_FAULT_HANG ? PH_IDLE : PH_DELTAS;
            break;
        case PH_DELTAS:
            if (j->next_delta >= j->deltas_to_send) {
                j->ph = PH_END;
                break;
            }
            if (j->next_delta > 0 && paused(j, j->o.interval_ms))
                return;
            if (put_delta(j, j->next_delta) < 0)
                { fail_stream(j); return; }
            j->next_delta++;
            break;
        case PH_END:
            j->ph = PH_IDLE;
            if (j->o.fault == BSIM_FAULT_DROP) {
                sim_conn_drop(j->c);
                return;
            }
            if (j->o.fault == BSIM_FAULT_THROTTLE || j->o.fault == BSIM_FAULT_VALIDATION ||
                j->o.fault == BSIM_FAULT_MODEL_ERROR) {
                if (put_exception(j) < 0)
                    { fail_stream(j); return; }
            } else if (put_normal_end(j) < 0) {
                { fail_stream(j); return; }
            }
            evbuffer_add(sim_conn_output(j->c), "0\r\n\r\n", 5);
            sim_conn_finish(j->c);
            return;
        case PH_IDLE:
            return;
        }
    }
}

/* ------------------------------------------------------------------- SigV4 */

/* The access key id from "AWS4-HMAC-SHA256 Credential=AKID/...", or NULL. */
static const char *auth_akid(const char *auth, size_t *len)
{
    const char *p = auth ? strstr(auth, "Credential=") : NULL;
    if (!p)
        return NULL;
    p += strlen("Credential=");
    const char *slash = strchr(p, '/');
    if (!slash)
        return NULL;
    *len = (size_t)(slash - p);
    return p;
}

typedef struct auth_fail {
    int status;
    const char *type;
    const char *message;
} auth_fail;

static auth_fail auth_failure(int rc)
{
    switch (rc) {
    case SIGV4_ERR_MISSING_AUTH:
        return (auth_fail){403, "MissingAuthenticationTokenException",
                           "Missing Authentication Token"};
    case SIGV4_ERR_MALFORMED_AUTH:
        return (auth_fail){403, "IncompleteSignatureException",
                           "Authorization header requires 'Credential', 'SignedHeaders' and "
                           "'Signature' parameters, and a valid X-Amz-Date header."};
    case SIGV4_ERR_UNKNOWN_KEY:
    case SIGV4_ERR_TOKEN_MISMATCH:
        return (auth_fail){403, "UnrecognizedClientException",
                           "The security token included in the request is invalid."};
    case SIGV4_ERR_STALE_DATE:
        return (auth_fail){403, "ExpiredTokenException",
                           "The security token included in the request is expired"};
    case SIGV4_ERR_BAD_SCOPE:
        return (auth_fail){403, "InvalidSignatureException",
                           "Credential should be scoped to a valid region and service, and to "
                           "the date of X-Amz-Date."};
    case SIGV4_ERR_SIGNATURE_MISMATCH:
        return (auth_fail){403, "InvalidSignatureException",
                           "The request signature we calculated does not match the signature "
                           "you provided. Check your AWS Secret Access Key and signing method."};
    default:
        return (auth_fail){500, "InternalServerException", "The signature could not be checked."};
    }
}

/* Runs sigv4_verify over the parsed request; 0 when it passes. The header views of
 * http1 are not NUL-terminated, so they are copied once into one block. */
static int check_signature(const bsim_server *s, const http1_request *req, const uint8_t *body,
                           size_t body_len, auth_fail *fail)
{
    sigv4_header *hs = calloc(req->headers.n ? req->headers.n : 1, sizeof *hs);
    vbuf text = VBUF_INIT, path = VBUF_INIT, query = VBUF_INIT;
    sim_creds minted;
    sigv4_credentials known[2];
    size_t n_known = 0;
    int rc = SIGV4_ERR_NOMEM;
    const char *auth = NULL;

    memset(&minted, 0, sizeof minted);
    if (!hs)
        goto out;
    size_t total = 0;
    for (size_t i = 0; i < req->headers.n; i++)
        total += req->headers.h[i].name_len + req->headers.h[i].value_len + 2;
    if (vbuf_reserve(&text, total + 1) < 0 || vbuf_append(&path, req->path, req->path_len) < 0 ||
        !vbuf_cstr(&path) || (req->query && vbuf_append(&query, req->query, req->query_len) < 0) ||
        !vbuf_cstr(&query))
        goto out;
    for (size_t i = 0; i < req->headers.n; i++) {
        const http1_header *h = &req->headers.h[i];
        hs[i].name = (const char *)text.data + text.len;
        vbuf_append(&text, h->name, h->name_len);
        vbuf_append(&text, "", 1);
        hs[i].value = (const char *)text.data + text.len;
        vbuf_append(&text, h->value, h->value_len);
        vbuf_append(&text, "", 1);
        if (strcasecmp(hs[i].name, "authorization") == 0)
            auth = hs[i].value;
    }

    if (s->statics.access_key_id)
        known[n_known++] = s->statics;
    size_t akid_len = 0;
    const char *akid = auth_akid(auth, &akid_len);
    if (s->seed && akid && sim_creds_from_akid(s->seed, akid, akid_len, &minted) == 0)
        known[n_known++] = (sigv4_credentials){minted.access_key_id, minted.secret_access_key,
                                               minted.session_token};

    sigv4_config cfg = sigv4_config_bedrock(s->region);
    sigv4_request r = {"POST", (const char *)path.data,
                       req->query ? (const char *)query.data : NULL, hs, req->headers.n, body,
                       body_len};
    char method[16];
    snprintf(method, sizeof method, "%.*s", (int)(req->method_len < 15 ? req->method_len : 15),
             req->method);
    r.method = method;
    rc = sigv4_verify(&cfg, known, n_known, &r, time(NULL));
out:
    if (rc != SIGV4_OK)
        *fail = auth_failure(rc);
    sim_creds_wipe(&minted);
    vbuf_free_secure(&text);
    vbuf_free(&path);
    vbuf_free(&query);
    free(hs);
    return rc == SIGV4_OK ? 0 : -1;
}

/* ------------------------------------------------------------------- requests */

static void handle_request(sim_conn *c, const http1_request *req, const uint8_t *body,
                           size_t body_len, void *user)
{
    bsim_server *s = user;
    char model[MAX_MODEL_ID], err[512];
    auth_fail af;

    bsim_route route = bsim_match_route(req->method, req->method_len, req->path, req->path_len,
                                        model, sizeof model);
    if (route == BSIM_ROUTE_NONE) {
        sim_conn_respond_aws_error(c, 404, "UnknownOperationException", "Not Found");
        return;
    }
    if (check_signature(s, req, body, body_len, &af) < 0) {
        sim_conn_respond_aws_error(c, af.status, af.type, af.message);
        return;
    }
    if (!bsim_model_known(model)) {
        sim_conn_respond_aws_error(c, 400, "ValidationException",
                                   "The provided model identifier is invalid.");
        return;
    }

    job *j = calloc(1, sizeof *j);
    if (!j || !(j->timer = evtimer_new(sim_conn_base(c), timer_cb, j))) {
        free(j);
        sim_conn_respond_aws_error(c, 500, "InternalServerException", "Out of memory.");
        return;
    }
    j->c = c;
    j->route = route;
    j->o = s->defaults;
    sim_conn_set_app(c, j, job_free, pump);

    size_t hlen = 0;
    const char *hdir = http1_header_get(&req->headers, SIM_HEADER, &hlen);
    if (hdir && bsim_apply_directive(&j->o, hdir, hlen, err, sizeof err) < 0) {
        sim_conn_respond_aws_error(c, 400, "ValidationException", err);
        return;
    }
    if (bsim_parse_converse(body, body_len, &j->o, &j->r, err, sizeof err) < 0) {
        sim_conn_respond_aws_error(c, 400, "ValidationException", err);
        return;
    }
    if (route == BSIM_ROUTE_CONVERSE && bsim_answer_len(&j->r, &j->o) > BSIM_MAX_CONVERSE_ANSWER) {
        sim_conn_respond_aws_error(c, 400, "ValidationException",
                                   "Simulator directive asks for an answer over 64 MiB.");
        return;
    }
    sim_conn_set_fault(c, bsim_fault_name(j->o.fault));
    if (j->o.slow_first_byte_ms > 0 && j->o.fault == BSIM_FAULT_NONE)
        sim_conn_set_fault(c, "slow-first-byte");
    if (j->o.fault == BSIM_FAULT_CLOSE_REUSED) {
        if (sim_conn_seq(c) > 1) { /* the server closing an idle connection as it is used */
            sim_conn_set_status(c, 0);
            sim_conn_finish_close(c);
            return;
        }
        j->o.fault = BSIM_FAULT_NONE;
    }

    /* HTTP-level errors; on /converse the in-stream faults take their HTTP form */
    bool conv = route == BSIM_ROUTE_CONVERSE;
    switch (j->o.fault) {
    case BSIM_FAULT_HTTP_429: set_error(j, 429, "ThrottlingException", MSG_THROTTLE); break;
    case BSIM_FAULT_HTTP_500: set_error(j, 500, "InternalServerException", MSG_INTERNAL); break;
    case BSIM_FAULT_HTTP_400: set_error(j, 400, "ValidationException", MSG_HTTP_400); break;
    case BSIM_FAULT_THROTTLE:
        if (conv)
            set_error(j, 429, "ThrottlingException", MSG_THROTTLE);
        break;
    case BSIM_FAULT_VALIDATION:
        if (conv)
            set_error(j, 400, "ValidationException", MSG_VALIDATION);
        break;
    case BSIM_FAULT_MODEL_ERROR:
        if (conv)
            set_error(j, 424, "ModelErrorException", MSG_MODEL_ERROR);
        break;
    default:
        break;
    }
    long n = j->o.chunks;
    switch (j->o.fault) {
    case BSIM_FAULT_EMPTY: j->deltas_to_send = 0; break;
    case BSIM_FAULT_DROP: j->deltas_to_send = n / 2 > 0 ? n / 2 : 1; break;
    case BSIM_FAULT_THROTTLE:
    case BSIM_FAULT_VALIDATION:
    case BSIM_FAULT_MODEL_ERROR: j->deltas_to_send = n < 2 ? n : 2; break;
    default: j->deltas_to_send = n; break;
    }
    j->ph = PH_DELAY;
    pump(j);
}

/* ------------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: " PROG " --listen tcp:HOST:PORT --cert FILE --key FILE [OPTIONS]\n"
"\n"
"A local stand-in for Amazon Bedrock runtime over TLS: POST /model/{modelId}/converse-stream\n"
"(application/vnd.amazon.eventstream, one HTTP chunk per message) and /model/{modelId}/converse.\n"
"Requests must be SigV4-signed (service \"bedrock\"); the model id must be one of the 11 ids veil\n"
"offers; the Converse body must alternate user/assistant, starting and ending with user.\n"
"\n"
"Options:\n"
"  --listen ADDR              address to listen on, tcp:HOST:PORT (port 0 = any); required\n"
"  --cert FILE                server certificate chain (PEM); required\n"
"  --key FILE                 server private key (PEM); required\n"
"  --region R                 SigV4 region (default: $AWS_REGION, else us-east-1)\n"
"  --access-key-id ID         static credentials accepted   (env VEIL_SIM_ACCESS_KEY_ID)\n"
"  --secret-access-key S                                    (env VEIL_SIM_SECRET_ACCESS_KEY)\n"
"  --session-token T          optional session token        (env VEIL_SIM_SESSION_TOKEN)\n"
"  --credential-seed SEED     also accept credentials veil-imds-sim mints from SEED\n"
"                             (env VEIL_SIM_CREDENTIAL_SEED); at least one credential source\n"
"                             is required\n"
"  --chunks N                 default number of contentBlockDelta events (default 8)\n"
"  --chunk-size BYTES         default padding of deltas 1..N-1 (default 0: none)\n"
"  --interval-ms MS           default pause before each delta after the first (default 0)\n"
"  --fault SPEC               server-wide default directive, e.g. \"fault=drop chunks=4\"\n"
"  --keep-alive-ms MS         after a response, wait MS for the connection's next request\n"
"                             (HTTP/1.1 persistence; HTTP/1.0 and Connection: close end it),\n"
"                             then close with close_notify (default 60000, as AWS; 0: one\n"
"                             request per connection)\n"
"  --help                     this text\n"
"\n"
"Answer rule (deterministic, so tests can rebuild it):\n"
"  delta 0          = \"Echo: \" + the text of the LAST user message (its text blocks joined);\n"
"                     [[sim: ...]] directives are removed from it and, if there were any,\n"
"                     the rest is trimmed of surrounding whitespace; else it is echoed as is\n"
"  delta i (1..N-1) = \" chunk <i>\", right-padded with '.' to chunk-size bytes when larger\n"
"  usage: inputTokens = total bytes of all message texts / 4, outputTokens = N\n"
"  stream: messageStart, contentBlockDelta x N, contentBlockStop, messageStop, metadata\n"
"\n"
"Per-request directives: `[[sim: KEY=VALUE ...]]` in the last user message, or the request\n"
"header `x-veil-sim: KEY=VALUE ...`; they override --fault and the flags (message wins over\n"
"header). A bare token means fault=TOKEN. Unknown keys or values: 400 ValidationException.\n"
"  chunks=N  chunk-size=B  interval-ms=MS  slow-first-byte=MS\n"
"  fault=drop             close TCP after max(1, N/2) deltas, no terminating chunk\n"
"  fault=bad-crc          corrupt the message CRC of the second delta frame (first if N=1)\n"
"  fault=throttle         after min(2, N) deltas an in-stream throttlingException, then end\n"
"  fault=validation       same with validationException\n"
"  fault=model-error      same with modelStreamErrorException\n"
"  fault=http-429|http-500|http-400  HTTP error (ThrottlingException | InternalServerException\n"
"                         | ValidationException), JSON body, no stream\n"
"  fault=slow-first-byte=MS  wait MS before the response head (combines with other faults)\n"
"  fault=empty            no contentBlockDelta at all\n"
"  fault=hang             messageStart, then nothing until the client goes away\n"
"  fault=close-reused     on a kept-alive connection's second or later request: close\n"
"                         (close_notify) before any byte of answer; on a new one: none\n"
"  fault=none             cancel a default fault\n"
"  On /converse: throttle, validation, model-error become HTTP 429/400/424; drop closes\n"
"  without an answer; hang never answers; empty answers with no content; bad-crc is ignored.\n"
"\n"
"Auth failures: 403 with x-amzn-ErrorType InvalidSignatureException, UnrecognizedClientException\n"
"(unknown key or token), ExpiredTokenException (X-Amz-Date more than 15 minutes off),\n"
"IncompleteSignatureException or MissingAuthenticationTokenException.\n"
"Logs: one line per request on stderr; first `event=listening addr=tcp:HOST:PORT`.\n"
".env in the working directory is read if present. SIGTERM/SIGINT: exit 0.\n");
}

static SSL_CTX *make_ssl_ctx(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* 1,000 idle streams, small footprint */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static void log_config(void *ud)
{
    const bsim_server *srv = ud;
    log_info(NULL, "event=config region=%s static_credentials=%s credential_seed=%s chunks=%ld "
                   "chunk_size=%ld interval_ms=%ld fault=%s keep_alive_ms=%ld",
             srv->region, srv->statics.access_key_id ? "yes" : "no", srv->seed ? "yes" : "no",
             srv->defaults.chunks, srv->defaults.chunk_size, srv->defaults.interval_ms,
             bsim_fault_name(srv->defaults.fault), srv->keep_alive_ms);
}

static int parse_opt_long(const char *name, const char *v, long max, long *out)
{
    if (parse_long(v, 0, max, out) < 0) {
        fprintf(stderr, PROG ": --%s: expected an integer in 0..%ld\n", name, max);
        return -1;
    }
    return 0;
}

enum { OPT_LISTEN = 1, OPT_CERT, OPT_KEY, OPT_REGION, OPT_AKID, OPT_SECRET, OPT_TOKEN, OPT_SEED,
       OPT_CHUNKS, OPT_CHUNK_SIZE, OPT_INTERVAL, OPT_FAULT, OPT_KEEP_ALIVE, OPT_HELP };

int main(int argc, char **argv)
{
    static const struct option LONG_OPTS[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"cert", required_argument, NULL, OPT_CERT},
        {"key", required_argument, NULL, OPT_KEY},
        {"region", required_argument, NULL, OPT_REGION},
        {"access-key-id", required_argument, NULL, OPT_AKID},
        {"secret-access-key", required_argument, NULL, OPT_SECRET},
        {"session-token", required_argument, NULL, OPT_TOKEN},
        {"credential-seed", required_argument, NULL, OPT_SEED},
        {"chunks", required_argument, NULL, OPT_CHUNKS},
        {"chunk-size", required_argument, NULL, OPT_CHUNK_SIZE},
        {"interval-ms", required_argument, NULL, OPT_INTERVAL},
        {"fault", required_argument, NULL, OPT_FAULT},
        {"keep-alive-ms", required_argument, NULL, OPT_KEEP_ALIVE},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    char err[512];
    const char *listen = NULL, *cert = NULL, *key = NULL, *fault = NULL;
    const char *region = NULL, *akid = NULL, *secret_key = NULL, *token = NULL, *seed = NULL;
    bsim_server srv = {.defaults = {.chunks = 8}, .keep_alive_ms = 60000};
    int opt;

    log_init(PROG);
    if (config_load_dotenv(".env", err, sizeof err) < 0) {
        fprintf(stderr, PROG ": .env: %s\n", err);
        return EXIT_USAGE;
    }
    while ((opt = getopt_long(argc, argv, "h", LONG_OPTS, NULL)) != -1) {
        switch (opt) {
        case OPT_LISTEN: listen = optarg; break;
        case OPT_CERT: cert = optarg; break;
        case OPT_KEY: key = optarg; break;
        case OPT_REGION: region = optarg; break;
        case OPT_AKID: akid = optarg; break;
        case OPT_SECRET: secret_key = optarg; break;
        case OPT_TOKEN: token = optarg; break;
        case OPT_SEED: seed = optarg; break;
        case OPT_CHUNKS:
            if (parse_opt_long("chunks", optarg, BSIM_MAX_CHUNKS, &srv.defaults.chunks) < 0 ||
                srv.defaults.chunks < 1)
                return EXIT_USAGE;
            break;
        case OPT_CHUNK_SIZE:
            if (parse_opt_long("chunk-size", optarg, BSIM_MAX_CHUNK_SIZE,
                               &srv.defaults.chunk_size) < 0)
                return EXIT_USAGE;
            break;
        case OPT_INTERVAL:
            if (parse_opt_long("interval-ms", optarg, BSIM_MAX_MS, &srv.defaults.interval_ms) < 0)
                return EXIT_USAGE;
            break;
        case OPT_FAULT: fault = optarg; break;
        case OPT_KEEP_ALIVE:
            if (parse_opt_long("keep-alive-ms", optarg, BSIM_MAX_MS, &srv.keep_alive_ms) < 0)
                return EXIT_USAGE;
            break;
        case 'h':
        case OPT_HELP: usage(stdout); return 0;
        default: usage(stderr); return EXIT_USAGE;
        }
    }
    if (optind < argc || !listen || !cert || !key) {
        fprintf(stderr, PROG ": --listen, --cert and --key are required (see --help)\n");
        return EXIT_USAGE;
    }
    if (fault && bsim_apply_directive(&srv.defaults, fault, strlen(fault), err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --fault: %s\n", err);
        return EXIT_USAGE;
    }
    srv.region = region ? region : config_str("AWS_REGION", "us-east-1");
    akid = akid ? akid : config_str("VEIL_SIM_ACCESS_KEY_ID", NULL);
    secret_key = secret_key ? secret_key : config_str("VEIL_SIM_SECRET_ACCESS_KEY", NULL);
    token = token ? token : config_str("VEIL_SIM_SESSION_TOKEN", NULL);
    seed = seed ? seed : config_str("VEIL_SIM_CREDENTIAL_SEED", NULL);
    if (!akid != !secret_key) {
        fprintf(stderr, PROG ": --access-key-id and --secret-access-key go together\n");
        return EXIT_USAGE;
    }
    if (!akid && !seed) {
        fprintf(stderr, PROG ": no credentials to accept: give --access-key-id/--secret-access-key"
                        " and/or --credential-seed\n");
        return EXIT_USAGE;
    }
    srv.statics = (sigv4_credentials){akid, secret_key, token};
    srv.seed = seed;

    veil_addr addr;
    if (addr_parse(listen, &addr, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": --listen: %s\n", err);
        return EXIT_USAGE;
    }
    signal(SIGPIPE, SIG_IGN);
    sim_raise_nofile();

    SSL_CTX *ctx = make_ssl_ctx(cert, key);
    if (!ctx) {
        unsigned long e = ERR_get_error();
        const char *why = e ? ERR_reason_error_string(e) : NULL;
        log_error(NULL, "event=tls_setup_failed error=\"%s\"", why ? why : "?");
        return 1;
    }
    sim_server_config scfg = {ctx, BSIM_MAX_BODY, SIM_ERRORS_AWS_JSON, handle_request, &srv,
                              (unsigned)srv.keep_alive_ms};
    int rc = sim_run(&addr, 4096, &scfg, log_config, &srv);
    SSL_CTX_free(ctx);
    return rc;
}

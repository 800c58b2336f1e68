/* load_through — veil-load's streams through veild, as a real client makes them
 * (its users: load_users.c): POST /chat/encrypted/stream on the user's keep-alive
 * HTTP/1.1 connections, the body sealed as veil's clients seal it (format 1: the
 * message to the enclave key; format 3: the bound request), and every SSE event
 * checked: the session, format 3's stream key, each chunk opened in order and compared
 * with the simulator's answer, the end element, stored, done. A format 1 chunk in a
 * format 3 stream (a downgrade) is a protocol error.
 *
 * Injected faults (--faults) are counted apart: a stream ends "as injected" only with
 * exactly the end its fault must have (the fixed text of the enclave error the
 * simulator's fault causes, or 422 for a malformed body).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "common/hex.h"
#include "common/secret.h"
#include "crypto/ep.h"
#include "enclave/protocol.h"
#include "load_http.h"
#include "load_users.h"

#define API "/api/v1"
#define STREAM_PATH API "/chat/encrypted/stream"
#define MAX_EVENT (1u << 20)     /* SSE bytes without an event's end: a protocol error */
#define MAX_ERROR_BODY 512       /* of a non-200 answer, kept for the error sample */
#define MALFORMED_SHAPES 3
#define DISCONNECT_GRACE_MS 2000 /* before a user who left mid-stream starts another */

/* ---- faults ---- */

static const struct {
    const char *name;
    const char *sim;   /* the simulator's fault directive, or NULL */
    enclave_err err;   /* the enclave's error, whose fixed text veild relays */
} FAULTS[N_FAULTS] = {
    [FAULT_NONE] = {"none", NULL, ENCLAVE_OK},
    [FAULT_DROP] = {"drop", "drop", ENCLAVE_ERR_UPSTREAM_TRUNCATED},
    [FAULT_BAD_CRC] = {"bad-crc", "bad-crc", ENCLAVE_ERR_UPSTREAM_CORRUPT},
    [FAULT_THROTTLE] = {"throttle", "throttle", ENCLAVE_ERR_UPSTREAM_THROTTLED},
    [FAULT_MODEL_ERROR] = {"model-error", "model-error", ENCLAVE_ERR_UPSTREAM_EXCEPTION},
    [FAULT_HTTP_500] = {"http-500", "http-500", ENCLAVE_ERR_UPSTREAM_UNAVAILABLE},
    [FAULT_HTTP_429] = {"http-429", "http-429", ENCLAVE_ERR_UPSTREAM_THROTTLED},
    [FAULT_EMPTY] = {"empty", "empty", ENCLAVE_ERR_EMPTY_ANSWER},
    [FAULT_DISCONNECT] = {"disconnect", NULL, ENCLAVE_OK},
    [FAULT_MALFORMED] = {"malformed", NULL, ENCLAVE_OK},
};

const char *load_fault_name(fault_kind f) { return (unsigned)f < N_FAULTS ? FAULTS[f].name : "?"; }

int load_faults_parse(const char *spec, long pct[N_FAULTS], char *err, size_t errlen)
{
    char buf[512];
    if (snprintf(buf, sizeof buf, "%s", spec) >= (int)sizeof buf) {
        snprintf(err, errlen, "too long");
        return -1;
    }
    long sum = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(t, ':');
        long v;
        if (!colon || parse_long(colon + 1, 0, 100, &v) < 0) {
            snprintf(err, errlen, "'%s' is not KIND:PERCENT", t);
            return -1;
        }
        *colon = '\0';
        int k = -1;
        for (int i = 1; i < N_FAULTS; i++)
            if (strcmp(t, FAULTS[i].name) == 0)
                k = i;
        if (k < 0) {
            snprintf(err, errlen, "unknown fault '%s'", t);
            return -1;
        }
        pct[k] = v;
    }
    for (int i = 1; i < N_FAULTS; i++)
        sum += pct[i];
    if (sum > 100) {
        snprintf(err, errlen, "the percentages add up to %ld (at most 100)", sum);
        return -1;
    }
    return 0;
}

/* Stream i's fault: the percentages over i*37 mod 100 (37 is prime to 100: every
 * hundred consecutive streams get exactly their share, spread out). */
static fault_kind fault_of(const load *L, long i)
{
    long b = (i * 37) % 100, acc = 0;
    for (int k = 1; k < N_FAULTS; k++) {
        acc += L->opt.fault_pct[k];
        if (b < acc)
            return (fault_kind)k;
    }
    return FAULT_NONE;
}

/* ---- a stream ---- */

/* The stream is under way: veild answered (format 1), or the enclave sent the
 * stream key (format 3: it has accepted and opened the request). Until then it
 * counts against --max-connecting, which paces a burst to what the chain takes. */
static void started(stream *s)
{
    if (!s->pending)
        return;
    s->pending = false;
    s->L->connecting--;
    vl_launch_more(s->L);
}

void load_through_release(stream *s)
{
    load *L = s->L;
    if (s->pending) /* the stream's end starts the next: no launch from here */
        L->connecting--;
    s->pending = false;
    if (s->held)
        L->held--;
    if (s->conn) { /* kept only when it is idle: a stream cut mid-response closes it */
        if (s->user)
            lu_keep(L, s->user, s->conn);
        else
            lh_conn_free(s->conn);
        s->conn = NULL;
    }
    if (s->user) { /* a client that left comes back a moment later, as a person would */
        if (s->fault == FAULT_DISCONNECT)
            lu_give_slot_later(L, s->user, DISCONNECT_GRACE_MS);
        else
            lu_give_slot(L, s->user);
        s->user = NULL;
    }
    vbuf_free(&s->sse);
    free(s->error_msg);
    s->error_msg = NULL;
}

static json_t *seal_to(const uint8_t pub[X25519_KEY_LEN], const char *text, const char *ctx, uint8_t *hash)
{
    ep e;
    if (ep_seal(pub, (const uint8_t *)text, strlen(text), ctx, &e) != EP_OK)
        return NULL;
    if (hash)
        sv3_ep_hash(&e, hash);
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

/* The stream route's body, as veil's clients send it (format 1: the web client's;
 * format 3: the bound request). */
static int build_body(stream *s)
{
    load *L = s->L;
    tuser *u = s->user;
    char tpub[2 * X25519_KEY_LEN + 1];
    if (x25519_keygen(s->client_priv, s->client_pub) < 0 || !(s->client_key = x25519_key_new(s->client_priv)))
        return -1;
    hex_encode(s->client_pub, X25519_KEY_LEN, tpub);
    json_t *body = json_pack("{s:s, s:s, s:s}", "model", L->opt.model, "client_transport_public_key", tpub,
                             PF_SESSION_ID, u->session);
    if (!body)
        return -1;
    int bad = 0;
    if (L->opt.stream_format == 3) {
        uint8_t rid[PROTO_REQUEST_ID_LEN];
        char rid_hex[2 * PROTO_REQUEST_ID_LEN + 1];
        json_t *hist = json_array();
        random_bytes(rid, sizeof rid);
        hex_encode(rid, sizeof rid, rid_hex);
        json_t *inner = proto_bound_request_json(s->prompt, hist, tpub, u->pub_hex, L->opt.model, u->session,
                                                 rid_hex, time(NULL));
        char *pt = inner ? json_dumps(inner, JSON_COMPACT) : NULL;
        json_t *sealed = pt ? seal_to(L->enclave_pub, pt, SV3_REQUEST_CONTEXT, s->request_hash) : NULL;
        bad |= !sealed || json_object_set_new(body, PF_ENCRYPTED_REQUEST, sealed) < 0;
        bad |= json_object_set_new(body, PF_STREAM_FORMAT, json_integer(3)) < 0;
        free(pt);
        json_decref(inner);
        json_decref(hist);
    } else {
        json_t *m = seal_to(L->enclave_pub, s->prompt, EP_CTX_CLIENT_TO_ENCLAVE, NULL);
        bad |= !m || json_object_set_new(body, PF_ENCRYPTED_MESSAGE, m) < 0;
        bad |= json_object_set_new(body, PF_ENCRYPTED_HISTORY, json_array()) < 0;
    }
    if (s->fault == FAULT_MALFORMED) { /* three shapes veild must answer 422 */
        switch (s->index % MALFORMED_SHAPES) {
        case 0: json_object_del(body, "model"); break;
        case 1: bad |= json_object_set_new(body, "client_transport_public_key", json_string("zz")) < 0; break;
        default: break; /* cut short below: not JSON */
        }
    }
    s->request = bad ? NULL : json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!s->request)
        return -1;
    s->request_len = strlen(s->request);
    if (s->fault == FAULT_MALFORMED && s->index % MALFORMED_SHAPES == 2)
        s->request_len /= 2;
    return 0;
}

/* A chunk (or thinking) event: opened in the stream's format and checked. 0, or -1
 * when the stream has ended. */
static int on_chunk(stream *s, const proto_sse_event *ev)
{
    load *L = s->L;
    uint8_t *pt = NULL;
    size_t len = 0;
    bool v3 = L->opt.stream_format == 3;
    if (ev->kind == PROTO_SSE_EV_THINKING)
        return 0;
    if (ev->kind == PROTO_SSE_EV_CHUNK) {
        if (v3) { /* a downgrade: the server answered a bound request in format 1 */
            vl_stream_fail(s, &L->errors.protocol, "a format 1 chunk in a format 3 stream", NULL);
            return -1;
        }
        ep e;
        secret sp = {0};
        int rc = ep_from_json(ev->ep, &e, NULL) == EP_OK ? 0 : -1;
        if (rc == 0) {
            rc = ep_open_key(s->client_key, &e, EP_CTX_ENCLAVE_TO_CLIENT, &sp) == EP_OK ? 0 : -1;
            ep_clear(&e);
        }
        if (rc == 0 && (pt = malloc(sp.len ? sp.len : 1)) != NULL) {
            memcpy(pt, sp.data, sp.len);
            len = sp.len;
        }
        secret_free(&sp);
        if (!pt) {
            vl_stream_fail(s, &L->errors.decrypt, "a chunk does not open", NULL);
            return -1;
        }
    } else { /* v3: the element the count expects, or the stream is not what the enclave sent */
        sv3_kind kind = ev->kind == PROTO_SSE_EV_THINKING_V3 ? SV3_THINKING : SV3_TEXT;
        if (!v3 || !s->v3 || sv3_open_json(&s->sv, kind, ev->elem, &pt, &len) < 0) {
            vl_stream_fail(s, &L->errors.decrypt, "a format 3 element does not open in order", NULL);
            return -1;
        }
        if (kind == SV3_THINKING) {
            secure_wipe(pt, len);
            free(pt);
            return 0;
        }
    }
    int rc = vl_check_chunk(s, (const char *)pt, len);
    secure_wipe(pt, len);
    free(pt);
    if (rc < 0) {
        vl_stream_end(s, END_FAILED);
        return -1;
    }
    if (s->fault == FAULT_DISCONNECT && s->chunks >= (L->sim_opts.chunks + 1) / 2) {
        vl_stream_end(s, END_INJECTED); /* closes the connection mid-stream */
        return -1;
    }
    return 0;
}

/* stored: every chunk came, and in format 3 the end element opens at its index. */
static int on_stored(stream *s, const proto_sse_event *ev)
{
    load *L = s->L;
    if (s->fault != FAULT_NONE) {
        vl_stream_fail(s, &L->errors.mismatch, "an injected fault, but the answer was stored",
                       load_fault_name(s->fault));
        return -1;
    }
    if (s->chunks != L->sim_opts.chunks) {
        char d[64];
        snprintf(d, sizeof d, "%ld of %ld chunks", s->chunks, L->sim_opts.chunks);
        vl_stream_fail(s, &L->errors.mismatch, "stored before the whole answer", d);
        return -1;
    }
    if (L->opt.stream_format == 3) {
        uint8_t *pt = NULL;
        size_t n = 0;
        int bad = !s->v3 || !ev->stream_end || sv3_open_json(&s->sv, SV3_END, ev->stream_end, &pt, &n) < 0 ||
                  n != SV3_END_LEN;
        free(pt);
        if (bad) {
            vl_stream_fail(s, &L->errors.decrypt, "the format 3 end element does not open at its index", NULL);
            return -1;
        }
    }
    s->got_stored = true;
    return 0;
}

/* --hold counts a stream once veild holds it (its session event) and, in format 3,
 * the enclave too (the stream key). */
static void hold_now(stream *s)
{
    if (s->L->holding && !s->held) {
        s->held = true;
        s->L->held++;
        vl_launch_more(s->L);
    }
}

/* One SSE event's JSON. 0, or -1 when the stream has ended (s is freed). */
static int on_event(stream *s, const char *data, size_t n)
{
    load *L = s->L;
    json_error_t jerr;
    json_t *j = json_loadb(data, n, 0, &jerr);
    proto_sse_event ev;
    int rc = 0;
    proto_sse_kind k = proto_parse_sse(j, &ev);
    if (k == PROTO_SSE_INVALID) {
        vl_stream_fail(s, &L->errors.protocol, j ? "an SSE event the protocol does not know" : "an SSE event is not JSON",
                       j ? NULL : jerr.text);
        rc = -1;
    } else if (!s->got_session && k != PROTO_SSE_EV_SESSION) {
        vl_stream_fail(s, &L->errors.protocol, "the first event is not session", NULL);
        rc = -1;
    } else if (s->got_done || (s->got_stored && k != PROTO_SSE_EV_DONE && k != PROTO_SSE_EV_OTHER)) {
        vl_stream_fail(s, &L->errors.protocol, "an event after stored", NULL);
        rc = -1;
    } else if (s->error_msg) {
        vl_stream_fail(s, &L->errors.protocol, "an event after error", NULL);
        rc = -1;
    } else {
        switch (k) {
        case PROTO_SSE_EV_SESSION:
            if (s->got_session || strcmp(ev.session_id, s->user->session) != 0) {
                vl_stream_fail(s, &L->errors.mismatch, "the session event names another session", NULL);
                rc = -1;
                break;
            }
            s->got_session = true;
            if (L->opt.stream_format != 3)
                hold_now(s);
            break;
        case PROTO_SSE_EV_STREAM_KEY:
            if (L->opt.stream_format != 3 || ev.format != 3 || s->v3 ||
                sv3_init_receiver(&s->sv, s->client_key, L->enclave_pub, ev.epk, ev.salt, s->request_hash) < 0) {
                vl_stream_fail(s, &L->errors.protocol, "an unexpected or malformed stream_key", NULL);
                rc = -1;
                break;
            }
            s->v3 = true;
            hold_now(s);
            started(s);
            break;
        case PROTO_SSE_EV_CHUNK:
        case PROTO_SSE_EV_THINKING:
        case PROTO_SSE_EV_CHUNK_V3:
        case PROTO_SSE_EV_THINKING_V3: rc = on_chunk(s, &ev); break;
        case PROTO_SSE_EV_STORED: rc = on_stored(s, &ev); break;
        case PROTO_SSE_EV_DONE:
            if (!s->got_stored) {
                vl_stream_fail(s, &L->errors.protocol, "done before stored", NULL);
                rc = -1;
                break;
            }
            s->got_done = true;
            break;
        case PROTO_SSE_EV_ERROR: s->error_msg = strdup(ev.message); break; /* judged at the response's end */
        default: break;
        }
    }
    json_decref(j);
    return rc;
}

/* SSE bytes: whole events (a blank line ends one) go to on_event; `data:` lines
 * carry the JSON, comments (veild's keep-alives) are skipped. */
static int on_sse(stream *s)
{
    for (;;) {
        const uint8_t *p = s->sse.data;
        const uint8_t *end = s->sse.len >= 2 ? memmem(p, s->sse.len, "\n\n", 2) : NULL;
        if (!end) {
            if (s->sse.len > MAX_EVENT) {
                vl_stream_fail(s, &s->L->errors.protocol, "an SSE event too long", NULL);
                return -1;
            }
            return 0;
        }
        size_t ev_len = (size_t)(end - p) + 2;
        const uint8_t *line = p;
        while (line < end) {
            const uint8_t *nl = memchr(line, '\n', (size_t)(end + 1 - line));
            static const char DATA[] = "data:";
            size_t ll = (size_t)(nl - line);
            if (ll >= sizeof DATA - 1 && memcmp(line, DATA, sizeof DATA - 1) == 0) {
                const uint8_t *d = line + sizeof DATA - 1;
                if (d < nl && *d == ' ')
                    d++;
                if (on_event(s, (const char *)d, (size_t)(nl - d)) < 0)
                    return -1;
            }
            line = nl + 1;
        }
        vbuf_consume(&s->sse, ev_len);
    }
}

static int st_on_head(void *ud, int status)
{
    stream *s = ud;
    s->http_status = status;
    s->head_seen = true;
    if (s->L->opt.stream_format != 3 || status != 200)
        started(s);
    return 0;
}

static int st_on_body(void *ud, const uint8_t *p, size_t n)
{
    stream *s = ud;
    if (s->http_status != 200) { /* kept for the error sample, as far as it goes */
        size_t room = s->sse.len < MAX_ERROR_BODY ? MAX_ERROR_BODY - s->sse.len : 0;
        (void)vbuf_append(&s->sse, p, n < room ? n : room);
        return 0;
    }
    if (vbuf_append(&s->sse, p, n) < 0) {
        vl_stream_fail(s, &s->L->errors.other, "out of memory", NULL);
        return 1; /* the connection was freed with the stream: nothing follows */
    }
    return on_sse(s) < 0;
}

static void send_request(stream *s);

/* The response ended: judge the stream by what came. */
static void st_on_end(void *ud, lh_err err, const char *detail)
{
    if (err == LH_STOPPED)
        return; /* never for a live stream: a stream that stops its response has ended (ud is gone) */
    stream *s = ud;
    load *L = s->L;
    if (err != LH_OK) {
        /* a reused connection the server had closed: try once on a new one */
        if (s->reused && !s->retried && !lh_got_bytes(s->conn) && (err == LH_CONNECT || err == LH_CLOSED)) {
            s->retried = true;
            lh_conn_free(s->conn);
            s->conn = NULL;
            started(s);
            send_request(s);
            return;
        }
        vl_stream_fail(s, err == LH_CONNECT ? &L->errors.connect : err == LH_CLOSED ? &L->errors.eof
                                                                                    : &L->errors.protocol,
                       lh_strerror(err), detail);
        return;
    }
    if (s->http_status != 200) {
        if (s->fault == FAULT_MALFORMED && s->http_status == 422) {
            vl_stream_end(s, END_INJECTED);
            return;
        }
        char d[MAX_ERROR_BODY + 16];
        snprintf(d, sizeof d, "%d %.*s", s->http_status, (int)s->sse.len, (const char *)s->sse.data);
        long *c = &L->errors.http;
        if (s->http_status == 429)
            L->errors.http_429++;
        else if (s->http_status == 503)
            L->errors.http_503++;
        vl_stream_fail(s, c, "HTTP status", d);
        return;
    }
    if (s->error_msg) {
        const char *want = FAULTS[s->fault].err != ENCLAVE_OK ? enclave_err_client_message(FAULTS[s->fault].err, NULL)
                                                             : NULL;
        if (want && strcmp(want, s->error_msg) == 0) {
            vl_stream_end(s, END_INJECTED);
            return;
        }
        char d[300];
        snprintf(d, sizeof d, "%s%s%s", s->error_msg, s->fault ? " (injected " : "",
                 s->fault ? load_fault_name(s->fault) : "");
        if (s->fault)
            strncat(d, ")", sizeof d - strlen(d) - 1);
        vl_stream_fail(s, &L->errors.error_event, "error event", d);
        return;
    }
    if (s->fault == FAULT_MALFORMED) {
        vl_stream_fail(s, &L->errors.mismatch, "a malformed body was accepted", NULL);
        return;
    }
    if (!s->got_done) { /* a cut after a whole event: SSE alone cannot tell, the missing done does */
        vl_stream_fail(s, &L->errors.eof, "the response ended before done", NULL);
        return;
    }
    vl_stream_end(s, END_OK);
}

static const lh_handler STREAM_H = {st_on_head, st_on_body, st_on_end};

static void send_request(stream *s)
{
    load *L = s->L;
    char err[128] = "";
    if (!s->conn)
        s->conn = lu_conn(L, s->user, &s->reused, err, sizeof err);
    if (!s->conn) {
        vl_stream_fail(s, &L->errors.connect, "cannot open a connection", err);
        return;
    }
    L->connecting++;
    s->pending = true;
    s->t_start = vl_now_ms();
    if (lh_request(s->conn, "POST", STREAM_PATH, lu_host(L), s->user->token, s->request, s->request_len, &STREAM_H,
                   s) < 0)
        vl_stream_fail(s, &L->errors.other, "cannot send the request", NULL);
}

void load_through_start(stream *s)
{
    load *L = s->L;
    if (!(s->user = lu_take_slot(L))) { /* cannot happen while streams <= users x per-user */
        vl_stream_fail(s, &L->errors.other, "no user has a free stream slot", NULL);
        return;
    }
    s->fault = L->injecting ? fault_of(L, s->index) : FAULT_NONE;
    if (L->counting && s->fault)
        L->injected[s->fault]++;
    const char *sim_fault = L->holding ? "hang" : FAULTS[s->fault].sim ? FAULTS[s->fault].sim : "none";
    snprintf(s->prompt, sizeof s->prompt, "[[sim: chunks=%ld chunk-size=%ld interval-ms=%ld fault=%s]] %s",
             L->sim_opts.chunks, L->sim_opts.chunk_size, L->sim_opts.interval_ms, sim_fault, s->echo);
    if (build_body(s) < 0) { /* sealing is client work: not timed */
        vl_stream_fail(s, &L->errors.other, "cannot build the request", NULL);
        return;
    }
    send_request(s);
}

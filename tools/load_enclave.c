/* load_enclave — veil-load's streams that skip veild: the enclave protocol straight
 * to veil-enclave, as its parent speaks it (CHAT_STREAM per stream, every chunk
 * opened and checked, and the stored messages of the final event), and the
 * project's Bedrock client straight to the simulator (the baseline of the enclave
 * path). One bufferevent per stream on the run's loop.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/hex.h"
#include "common/secret.h"
#include "crypto/ep.h"
#include "enclave/protocol.h"
#include "veil_load.h"

#define CONNECT_RETRY_MS 2  /* the listen backlog is full (EAGAIN): try again shortly */
#define MAX_LINE (1u << 20) /* a reply line longer than this is a protocol error */

/* ---- enclave streams ---- */

static int open_into(const json_t *epj, const uint8_t priv[X25519_KEY_LEN], const char *ctx, secret *pt)
{
    ep e;
    if (ep_from_json(epj, &e, NULL) != EP_OK)
        return -1;
    ep_err r = ep_open(priv, &e, ctx, pt);
    ep_clear(&e);
    return r == EP_OK ? 0 : -1;
}

/* The final event: the stored messages open with the storage key and hold the
 * prompt and the whole answer. */
static void check_final(stream *s, const proto_final *f)
{
    load *L = s->L;
    secret u = {0}, a = {0};
    if (s->chunks != L->sim_opts.chunks) {
        char d[64];
        snprintf(d, sizeof d, "%ld of %ld chunks", s->chunks, L->sim_opts.chunks);
        vl_stream_fail(s, &L->errors.mismatch, "final event early", d);
        return;
    }
    if (open_into(f->stored_user, s->storage_priv, EP_CTX_USER_STORAGE, &u) < 0 ||
        open_into(f->stored_assistant, s->storage_priv, EP_CTX_ASSISTANT_STORAGE, &a) < 0) {
        secret_free(&u);
        vl_stream_fail(s, &L->errors.decrypt, "stored message does not open", NULL);
        return;
    }
    bool same = u.len == strlen(s->prompt) && memcmp(u.data, s->prompt, u.len) == 0 && a.len == s->answer.len &&
                memcmp(a.data, s->answer.data, a.len) == 0;
    secret_free(&u);
    secret_free(&a);
    if (!same) {
        vl_stream_fail(s, &L->errors.mismatch, "stored messages differ from the prompt and the answer", NULL);
        return;
    }
    vl_stream_end(s, END_OK);
}

/* A chunk's text, opened in the stream's format: -1 when it does not open. */
static int open_chunk(stream *s, const proto_event *ev, uint8_t **pt, size_t *len)
{
    if (ev->kind == PROTO_EV_CHUNK_V3)
        return s->v3 && sv3_open_json(&s->sv, SV3_TEXT, ev->elem, pt, len) == 0 ? 0 : -1;
    secret sp;
    ep e;
    if (ep_from_json(ev->ep, &e, NULL) != EP_OK)
        return -1;
    ep_err r = ep_open_key(s->client_key, &e, EP_CTX_ENCLAVE_TO_CLIENT, &sp);
    ep_clear(&e);
    if (r != EP_OK)
        return -1;
    *pt = malloc(sp.len ? sp.len : 1);
    if (*pt)
        memcpy(*pt, sp.data, sp.len);
    *len = sp.len;
    secret_free(&sp);
    return *pt ? 0 : -1;
}

static int ep_hash_of(const json_t *epj, uint8_t out[SV3_HASH_LEN])
{
    ep e;
    if (ep_from_json(epj, &e, NULL) != EP_OK)
        return -1;
    sv3_ep_hash(&e, out);
    ep_clear(&e);
    return 0;
}

/* Format 3: the end element verifies at index N and names the stored messages. */
static int check_end(stream *s, const json_t *stream_end, const proto_final *f)
{
    uint8_t *pt = NULL, want[SV3_END_LEN];
    size_t n = 0;
    int bad = sv3_open_json(&s->sv, SV3_END, stream_end, &pt, &n) < 0 || n != SV3_END_LEN ||
              ep_hash_of(f->stored_user, want) < 0 || ep_hash_of(f->stored_assistant, want + SV3_HASH_LEN) < 0 ||
              memcmp(pt, want, SV3_END_LEN) != 0;
    free(pt);
    return bad ? -1 : 0;
}

/* One reply line. Returns 1 when the stream ended (s is freed). */
static int on_line(stream *s, const char *line, size_t n)
{
    load *L = s->L;
    json_error_t jerr;
    json_t *json = json_loadb(line, n, 0, &jerr);
    proto_event ev;
    int ended = 1;
    switch (proto_parse_event(json, &ev)) {
    case PROTO_EV_INVALID:
        vl_stream_fail(s, &L->errors.protocol, json ? "not an event of the protocol" : "reply is not JSON",
                    json ? NULL : jerr.text);
        break;
    case PROTO_EV_STREAM_KEY: /* format 3: the stream's key, before any chunk */
        if (ev.format != 3 || L->opt.stream_format != 3 ||
            sv3_init_receiver(&s->sv, s->client_key, L->enclave_pub, ev.epk, ev.salt, s->request_hash) < 0) {
            vl_stream_fail(s, &L->errors.protocol, "unexpected or malformed stream_key", NULL);
            break;
        }
        s->v3 = true;
        ended = 0;
        break;
    case PROTO_EV_CHUNK:
    case PROTO_EV_CHUNK_V3: {
        uint8_t *pt = NULL;
        size_t plen = 0;
        if (open_chunk(s, &ev, &pt, &plen) < 0) {
            vl_stream_fail(s, &L->errors.decrypt, ev.kind == PROTO_EV_CHUNK_V3 ? "format 3 chunk does not open in order"
                                                                             : "chunk does not open", NULL);
            break;
        }
        int rc = vl_check_chunk(s, (const char *)pt, plen);
        free(pt);
        if (rc < 0)
            vl_stream_end(s, END_FAILED);
        else
            ended = 0;
        break;
    }
    case PROTO_EV_THINKING:
    case PROTO_EV_THINKING_V3:
        ended = 0;
        break;
    case PROTO_EV_ERROR: {
        char d[200];
        snprintf(d, sizeof d, "%s (%s)", ev.err_msg, enclave_err_name(ev.err));
        vl_stream_fail(s, &L->errors.error_event, "error event", d);
        break;
    }
    case PROTO_EV_FINAL:
        if (L->opt.stream_format == 3 && (!s->v3 || check_end(s, ev.stream_end, &ev.final) < 0))
            vl_stream_fail(s, &L->errors.decrypt, "format 3 end does not verify", NULL);
        else
            check_final(s, &ev.final);
        break;
    }
    json_decref(json);
    return ended;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    stream *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t n;
        char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
        if (!line) {
            if (evbuffer_get_length(in) > MAX_LINE)
                vl_stream_fail(s, &s->L->errors.protocol, "reply line too long", NULL);
            return;
        }
        int ended = on_line(s, line, n);
        free(line);
        if (ended)
            return;
    }
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    stream *s = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    if (what & BEV_EVENT_EOF)
        vl_stream_fail(s, &s->L->errors.eof, "connection closed before the final event", NULL);
    else if (what & BEV_EVENT_ERROR)
        vl_stream_fail(s, s->chunks ? &s->L->errors.eof : &s->L->errors.connect, "socket error",
                    strerror(EVUTIL_SOCKET_ERROR()));
}

static void connect_enclave(evutil_socket_t fd_unused, short what, void *arg)
{
    (void)fd_unused;
    (void)what;
    stream *s = arg;
    load *L = s->L;
    char err[256];
    errno = 0;
    int fd = addr_connect(&L->enclave_addr, true, err, sizeof err);
    if (fd < 0) {
        if (errno == EAGAIN) { /* a unix listener's backlog is full: not an error yet */
            if (!s->retry && !(s->retry = evtimer_new(L->base, connect_enclave, s))) {
                vl_stream_fail(s, &L->errors.other, "out of memory", NULL);
                return;
            }
            struct timeval tv = {0, CONNECT_RETRY_MS * 1000};
            evtimer_add(s->retry, &tv);
            return;
        }
        vl_stream_fail(s, &L->errors.connect, "connect", err);
        return;
    }
    s->bev = bufferevent_socket_new(L->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        close(fd);
        vl_stream_fail(s, &L->errors.other, "out of memory", NULL);
        return;
    }
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    /* the fd may still be connecting (tcp): let the bufferevent wait for it */
    if (bufferevent_socket_connect(s->bev, NULL, 0) < 0 || bufferevent_write(s->bev, s->request, s->request_len) < 0 ||
        bufferevent_write(s->bev, "\n", 1) < 0 || bufferevent_enable(s->bev, EV_READ | EV_WRITE) < 0) {
        vl_stream_fail(s, &L->errors.connect, "cannot start the request", NULL);
        return;
    }
}

static json_t *seal_json(const uint8_t pub[X25519_KEY_LEN], const char *text, const char *ctx)
{
    ep e;
    if (ep_seal(pub, (const uint8_t *)text, strlen(text), ctx, &e) != EP_OK)
        return NULL;
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

/* The CHAT_STREAM request, exactly as veild builds it. */
static int build_request(stream *s)
{
    load *L = s->L;
    char pub[2 * X25519_KEY_LEN + 1], spub[2 * X25519_KEY_LEN + 1];
    if (x25519_keygen(s->client_priv, s->client_pub) < 0 || x25519_keygen(s->storage_priv, s->storage_pub) < 0 ||
        !(s->client_key = x25519_key_new(s->client_priv)))
        return -1;
    hex_encode(s->client_pub, X25519_KEY_LEN, pub);
    hex_encode(s->storage_pub, X25519_KEY_LEN, spub);
    static const char SESSION[] = "00000000-0000-4000-8000-000000000000";
    json_t *hist = json_array(), *req = NULL;
    if (L->opt.stream_format == 3) { /* the whole request, bound and sealed to the enclave key */
        uint8_t rid[PROTO_REQUEST_ID_LEN];
        char rid_hex[2 * PROTO_REQUEST_ID_LEN + 1];
        ep sealed;
        json_t *inner = NULL;
        char *pt = NULL;
        if (random_bytes(rid, sizeof rid) == 0) {
            hex_encode(rid, sizeof rid, rid_hex);
            inner = proto_bound_request_json(s->prompt, hist, pub, spub, L->opt.model, SESSION, rid_hex, time(NULL));
            pt = inner ? json_dumps(inner, JSON_COMPACT) : NULL;
        }
        if (pt && ep_seal(L->enclave_pub, (const uint8_t *)pt, strlen(pt), SV3_REQUEST_CONTEXT, &sealed) == EP_OK) {
            sv3_ep_hash(&sealed, s->request_hash);
            json_t *sj = ep_to_json(&sealed);
            req = sj ? proto_bound_stream_request(sj, pub, spub, L->opt.model, SESSION) : NULL;
            json_decref(sj);
            ep_clear(&sealed);
        }
        free(pt);
        json_decref(inner);
    } else {
        json_t *em = seal_json(L->enclave_pub, s->prompt, EP_CTX_CLIENT_TO_ENCLAVE);
        req = em ? proto_chat_stream_request(em, hist, pub, spub, L->opt.model, SESSION) : NULL;
        json_decref(em);
    }
    json_decref(hist);
    if (!req)
        return -1;
    s->request = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s->request)
        return -1;
    s->request_len = strlen(s->request);
    return 0;
}

void load_enclave_start(stream *s)
{
    if (build_request(s) < 0) { /* sealing is client work: not timed */
        vl_stream_fail(s, &s->L->errors.other, "cannot build the request", NULL);
        return;
    }
    s->t_start = vl_now_ms();
    connect_enclave(-1, 0, s);
}

/* ---- direct streams (the Bedrock client straight to the simulator) ---- */

/* Returning non-zero makes the client cancel the call, with no on_done: the
 * stream ends here, and must not cancel the call a second time. */
static int d_on_text(void *ud, const char *text, size_t len)
{
    stream *s = ud;
    if (vl_check_chunk(s, text, len) == 0)
        return 0;
    s->call = NULL;
    vl_stream_end(s, END_FAILED);
    return 1;
}

static void d_on_done(void *ud, const bedrock_error *e)
{
    stream *s = ud;
    s->call = NULL; /* freed by the client after this returns */
    if (e) {
        vl_stream_fail(s, e->code == BEDROCK_ERR_TRANSPORT ? &s->L->errors.connect : &s->L->errors.error_event,
                    bedrock_strerror(e->code), e->message);
        return;
    }
    if (s->chunks != s->L->sim_opts.chunks) {
        vl_stream_fail(s, &s->L->errors.mismatch, "stream ended early", NULL);
        return;
    }
    vl_stream_end(s, END_OK);
}

static const bedrock_callbacks DIRECT_CB = {d_on_text, NULL, NULL, NULL, d_on_done};

void load_direct_start(stream *s)
{
    load *L = s->L;
    bedrock_message msgs[] = {{"user", s->prompt, strlen(s->prompt)}};
    bedrock_request req = {.model_id = L->opt.model, .messages = msgs, .n_messages = 1,
                           .system = "You are a helpful AI assistant.", .temperature = 0.7,
                           .creds = &L->creds};
    bedrock_error err;
    s->t_start = vl_now_ms();
    s->call = bedrock_converse_stream(L->bedrock, &req, &DIRECT_CB, s, &err);
    if (!s->call)
        vl_stream_fail(s, &L->errors.other, "bedrock request", err.message);
}

/* ---- blocking requests (GET_PUBLIC_KEY, SET_CREDENTIALS) ---- */

static json_t *simple_request(load *L, const char *req, char *err, size_t errlen)
{
    int fd = addr_connect(&L->enclave_addr, false, err, errlen);
    if (fd < 0)
        return NULL;
    struct timeval tv = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    vbuf b = VBUF_INIT;
    json_t *j = NULL;
    /* the newline in the same write: the enclave closes after a request that
     * it finds bare when it replies */
    if (vbuf_append_str(&b, req) < 0 || vbuf_append(&b, "\n", 1) < 0 ||
        write(fd, b.data, b.len) != (ssize_t)b.len) {
        snprintf(err, errlen, "write: %s", strerror(errno));
        goto out;
    }
    vbuf_reset(&b);
    for (;;) {
        char chunk[4096];
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r <= 0) {
            snprintf(err, errlen, "no reply from the enclave");
            goto out;
        }
        if (vbuf_append(&b, chunk, (size_t)r) < 0)
            goto out;
        uint8_t *nl = memchr(b.data, '\n', b.len);
        if (nl) {
            j = json_loadb((const char *)b.data, (size_t)(nl - b.data), 0, NULL);
            if (!j)
                snprintf(err, errlen, "the reply is not JSON");
            goto out;
        }
    }
out:
    vbuf_free_secure(&b);
    close(fd);
    return j;
}

int load_enclave_key(load *L)
{
    char err[256];
    char cmd[64];
    snprintf(cmd, sizeof cmd, "{\"" PF_COMMAND "\":\"%s\"}", proto_cmd_name(PROTO_CMD_GET_PUBLIC_KEY));
    json_t *r = simple_request(L, cmd, err, sizeof err);
    if (!r) {
        fprintf(stderr, "veil-load: GET_PUBLIC_KEY: %s\n", err);
        return -1;
    }
    const json_t *pk = json_object_get(r, PF_PUBLIC_KEY);
    int rc = json_is_string(pk) && hex_decode_exact(json_string_value(pk), json_string_length(pk), L->enclave_pub,
                                                    X25519_KEY_LEN) == 0 ? 0 : -1;
    if (rc < 0)
        fprintf(stderr, "veil-load: GET_PUBLIC_KEY: no public key in the reply\n");
    json_decref(r);
    return rc;
}

int load_enclave_set_credentials(load *L)
{
    char err[256];
    vbuf line = VBUF_INIT;
    if (proto_write_set_credentials(&line, L->creds.access_key_id, L->creds.secret_access_key,
                                    L->creds.session_token, NULL) < 0 || !vbuf_cstr(&line)) {
        vbuf_free_secure(&line);
        return -1;
    }
    line.data[--line.len] = '\0'; /* simple_request adds its own newline */
    json_t *r = simple_request(L, (const char *)line.data, err, sizeof err);
    vbuf_free_secure(&line);
    if (!r) {
        fprintf(stderr, "veil-load: SET_CREDENTIALS: %s\n", err);
        return -1;
    }
    const json_t *st = json_object_get(r, PF_STATUS);
    int rc = json_is_string(st) && strcmp(json_string_value(st), "success") == 0 ? 0 : -1;
    if (rc < 0) {
        const json_t *e = json_object_get(r, PF_ERROR);
        fprintf(stderr, "veil-load: SET_CREDENTIALS refused: %s\n", json_is_string(e) ? json_string_value(e) : "?");
    }
    json_decref(r);
    return rc;
}


int load_direct_setup(load *L)
{
    veil_addr sa;
    char err[256];
    if (addr_parse(L->opt.sim, &sa, err, sizeof err) < 0 || sa.kind != ADDR_TCP) {
        fprintf(stderr, "veil-load: --sim must be tcp:HOST:PORT%s%s\n", err[0] ? ": " : "", err);
        return -1;
    }
    if (!(L->https = https_ctx_new(L->base, L->opt.ca_file, err, sizeof err))) {
        fprintf(stderr, "veil-load: %s\n", err);
        return -1;
    }
    https_pool_config pc = https_pool_config_default();
    if (L->opt.direct_keep_alive && !(L->pool = https_pool_new(L->https, &pc, err, sizeof err))) {
        fprintf(stderr, "veil-load: %s\n", err);
        return -1;
    }
    bedrock_config bc = {.region = "us-east-1", .host = sa.host, .port = sa.port, .proxy = NULL,
                         .connect_timeout_ms = 10000, .pool = L->pool};
    if (!(L->bedrock = bedrock_client_new(L->https, &bc))) {
        fprintf(stderr, "veil-load: cannot create the Bedrock client\n");
        return -1;
    }
    return 0;
}

/* veil-load — a load generator for the enclave protocol (design.md, "Performance model").
 *
 * Plays the parent (veild) against a running veil-enclave: GET_PUBLIC_KEY, then
 * --total CHAT_STREAM requests, --streams of them at once, each sealed to the
 * enclave's key with a fresh client key pair. Every streamed chunk is opened and
 * checked against veil-bedrock-sim's deterministic answer rule (tools/bedrock_sim.h),
 * and so are the two stored messages of the final event. One libevent loop drives
 * every socket; no thread per stream.
 *
 * With --sim it also calls the simulator directly with the project's Bedrock client
 * (no proxy, no enclave) and alternates enclave-path and direct streams one at a
 * time, so the time-to-first-chunk overhead of veil-enclave + veil-proxy comes out
 * as a ratio measured in one run. With --enclave-pid it reads the enclave's CPU
 * time from /proc and reports CPU per chunk and streams per core.
 *
 * Bounded: every phase ends by --time-limit at the latest. Figures only; the exit
 * status is 1 when a stream failed or a check did not hold, 2 on bad usage.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "aws/bedrock.h"
#include "net/https.h"
#include "bedrock_sim.h"
#include "common/addr.h"
#include "common/config.h"
#include "common/buf.h"
#include "common/hex.h"
#include "common/log.h"
#include "crypto/ep.h"
#include "crypto/stream_v3.h"
#include "enclave/protocol.h"

#define DEFAULT_MODEL "us.meta.llama3-1-8b-instruct-v1:0"
#define MAX_STREAMS 20000
#define MAX_TOTAL 10000000L
#define CONNECT_RETRY_MS 2    /* the listen backlog is full (EAGAIN): try again shortly */
#define MAX_LINE (1u << 20)   /* a reply line longer than this is a protocol error */
#define BASELINE_DEFAULT 20
#define FAST_MODEL_CHUNKS_PER_S 50.0 /* a reference pace for "streams per core" */
#define N_ERROR_SAMPLES 5

typedef enum { KIND_ENCLAVE = 0, KIND_DIRECT = 1, N_KINDS } stream_kind;
static const char *const KIND_NAME[N_KINDS] = {"enclave path", "direct to sim"};

/* ---- options ---- */

typedef struct options {
    const char *enclave;      /* unix:PATH | tcp:HOST:PORT | vsock:CID:PORT */
    const char *sim;          /* tcp:HOST:PORT of veil-bedrock-sim, for the direct baseline */
    const char *ca_file;
    const char *akid, *secret_key, *token;
    const char *model;
    const char *kv_file;
    const char *label;
    long streams, total, chunks, chunk_size, interval_ms, baseline, time_limit_s;
    long enclave_pid, proxy_pid;
    long stream_format; /* 1 (EncryptedPayload per chunk) or 3 (a bound request, one key per stream) */
    bool set_credentials;
    bool direct_keep_alive; /* the direct calls reuse their connection, as the enclave's pool does */
} options;

/* ---- stats ---- */

typedef struct kind_stats {
    double *ttfc_ms; /* one per stream that produced a first chunk */
    size_t n_ttfc, cap_ttfc;
    long started, ok, failed, chunks;
    double stream_ms_sum; /* for the mean concurrency */
} kind_stats;

typedef struct error_tally {
    long connect, eof, protocol, decrypt, mismatch, error_event, timeout, other;
    char samples[N_ERROR_SAMPLES][200];
    int n_samples;
} error_tally;

/* ---- one run ---- */

struct stream;

typedef struct load {
    options opt;
    struct event_base *base;
    veil_addr enclave_addr;
    uint8_t enclave_pub[X25519_KEY_LEN];
    https_ctx *https;
    https_pool *pool; /* --direct-keep-alive */
    bedrock_client *bedrock;
    sigv4_credentials creds;
    bsim_options sim_opts; /* what the directive asks the simulator for */
    /* the current phase */
    long to_start, started, running;
    long concurrency;
    bool alternate;        /* baseline: enclave and direct streams in turn */
    stream_kind only_kind; /* load phase */
    bool counting;         /* false during the warm-up */
    bool stopping;
    bool launching; /* launch_more is on the stack: a nested call only returns */
    struct event *deadline;
    kind_stats stats[N_KINDS];
    error_tally errors;
    LIST_HEAD(, stream) live; /* running streams, for the deadline */
} load;

typedef struct stream {
    load *L;
    LIST_ENTRY(stream) link;
    stream_kind kind;
    long index;
    struct bufferevent *bev;
    bedrock_call *call;
    struct event *retry;
    uint8_t client_priv[X25519_KEY_LEN], client_pub[X25519_KEY_LEN];
    uint8_t storage_priv[X25519_KEY_LEN], storage_pub[X25519_KEY_LEN];
    char prompt[160]; /* with the directive */
    char echo[64];    /* what the simulator echoes: the prompt without the directive */
    char *request;    /* the CHAT_STREAM line (enclave streams) */
    size_t request_len;
    long chunks;
    vbuf answer;  /* the concatenated deltas, checked against the stored message */
    vbuf expect;  /* scratch for the expected delta */
    double t_start, t_first;
    x25519_key *client_key; /* client_priv, held: opens every chunk */
    bool v3;                /* the stream_key came: elements open with sv */
    sv3 sv;
    uint8_t request_hash[SV3_HASH_LEN];
} stream;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: veil-load --enclave ADDR [OPTIONS]\n"
            "       veil-load --sim tcp:HOST:PORT --ca-file F --access-key-id ... [OPTIONS]\n\n"
            "A load generator for the enclave protocol. Connects to veil-enclave as its parent\n"
            "would, fetches GET_PUBLIC_KEY, and runs --total CHAT_STREAM requests, --streams at\n"
            "once on one event loop. The prompt carries [[sim: chunks=K interval-ms=I]] for\n"
            "veil-bedrock-sim; every chunk is decrypted and checked against the simulator's\n"
            "answer rule, and so are the stored messages of the final event.\n\n"
            "  --enclave ADDR          veil-enclave's address (unix:PATH, tcp:HOST:PORT, vsock:CID:PORT)\n"
            "  --streams N             concurrent streams (default 10)\n"
            "  --total M               streams in all (default 100; 0: none)\n"
            "  --chunks K              chunks per answer (default 20)\n"
            "  --stream-format 1|3     1: an EncryptedPayload per chunk (default); 3: a bound request,\n"
            "                          one key per stream, every element and the end checked in order\n"
            "  --chunk-size B          pad chunks 1..K-1 to B bytes (default 0: ' chunk <i>')\n"
            "  --interval-ms I         the simulator's pause between chunks (default 0)\n"
            "  --model ID              model id (default " DEFAULT_MODEL ")\n"
            "  --enclave-pid PID       read its CPU time (/proc/PID/stat): CPU per chunk, streams per core\n"
            "  --proxy-pid PID         the same for veil-proxy\n"
            "  --time-limit SEC        every phase ends by then at the latest (default 60)\n"
            "  --set-credentials       first send SET_CREDENTIALS with the credentials below\n\n"
            "Time-to-first-chunk overhead (both measured in this run, one stream at a time):\n"
            "  --sim tcp:HOST:PORT     veil-bedrock-sim, called directly with the Bedrock client\n"
            "                          (HOST must match its certificate: 127.0.0.1 or localhost)\n"
            "  --ca-file F             the CA that signed the simulator's certificate\n"
            "  --access-key-id ID      credentials the simulator accepts (env AWS_ACCESS_KEY_ID,\n"
            "  --secret-access-key S    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)\n"
            "  --session-token T\n"
            "  --baseline N            pairs of (enclave, direct) streams, in turn (default %d)\n"
            "  --direct-keep-alive     the direct calls keep their connection alive between calls\n"
            "                          (compare with an enclave whose upstream pool is on)\n\n"
            "Output:\n"
            "  --label TEXT            a name for this run in the report\n"
            "  --kv FILE               also write every figure as key=value lines to FILE\n"
            "  --help                  this text\n\n"
            "Exit status: 0 when every stream completed and checked, 1 otherwise, 2 on bad usage.\n",
            BASELINE_DEFAULT);
}

/* ---- errors ---- */

static void note_error(load *L, long *counter, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note_error(load *L, long *counter, const char *fmt, ...)
{
    (*counter)++;
    if (L->errors.n_samples < N_ERROR_SAMPLES) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(L->errors.samples[L->errors.n_samples++], sizeof L->errors.samples[0], fmt, ap);
        va_end(ap);
    }
}

static long total_errors(const error_tally *e)
{
    return e->connect + e->eof + e->protocol + e->decrypt + e->mismatch + e->error_event + e->timeout +
           e->other;
}

static int push_ttfc(kind_stats *s, double ms)
{
    if (s->n_ttfc == s->cap_ttfc) {
        size_t cap = s->cap_ttfc ? 2 * s->cap_ttfc : 256;
        double *p = realloc(s->ttfc_ms, cap * sizeof *p);
        if (!p)
            return -1;
        s->ttfc_ms = p;
        s->cap_ttfc = cap;
    }
    s->ttfc_ms[s->n_ttfc++] = ms;
    return 0;
}

/* ---- the scheduler ---- */

static void launch_more(load *L);

static void stream_free(stream *s)
{
    LIST_REMOVE(s, link);
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->call)
        bedrock_cancel(s->call);
    if (s->retry)
        event_free(s->retry);
    free(s->request);
    vbuf_free_secure(&s->answer);
    vbuf_free(&s->expect);
    x25519_key_free(s->client_key);
    sv3_wipe(&s->sv);
    secure_wipe(s->client_priv, sizeof s->client_priv);
    secure_wipe(s->storage_priv, sizeof s->storage_priv);
    free(s);
}

/* Ends a stream: ok or not, its figures go to the stats; then the next starts. */
static void stream_end(stream *s, bool ok)
{
    load *L = s->L;
    if (L->counting) {
        kind_stats *st = &L->stats[s->kind];
        st->stream_ms_sum += now_ms() - s->t_start;
        if (ok)
            st->ok++;
        else
            st->failed++;
    }
    L->running--;
    stream_free(s);
    launch_more(L);
}

static void stream_fail(stream *s, long *counter, const char *what, const char *detail)
{
    note_error(s->L, counter, "%s stream %ld: %s%s%s", KIND_NAME[s->kind], s->index, what,
               detail ? ": " : "", detail ? detail : "");
    stream_end(s, false);
}

/* A chunk arrived: time the first, count, compare with delta i of the answer rule. */
static int check_chunk(stream *s, const char *text, size_t len)
{
    load *L = s->L;
    if (s->chunks == 0) {
        s->t_first = now_ms();
        if (L->counting && push_ttfc(&L->stats[s->kind], s->t_first - s->t_start) < 0)
            return -1;
    }
    bsim_request rq = {.echo = s->echo, .echo_len = strlen(s->echo)};
    vbuf_reset(&s->expect);
    if (s->chunks >= L->sim_opts.chunks || bsim_delta_text(&rq, &L->sim_opts, s->chunks, &s->expect) < 0 ||
        s->expect.len != len || memcmp(s->expect.data, text, len) != 0) {
        note_error(L, &L->errors.mismatch, "%s stream %ld: chunk %ld is not the simulator's delta",
                   KIND_NAME[s->kind], s->index, s->chunks);
        return -1;
    }
    if (vbuf_append(&s->answer, text, len) < 0)
        return -1;
    s->chunks++;
    if (L->counting)
        L->stats[s->kind].chunks++;
    return 0;
}

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
        stream_fail(s, &L->errors.mismatch, "final event early", d);
        return;
    }
    if (open_into(f->stored_user, s->storage_priv, EP_CTX_USER_STORAGE, &u) < 0 ||
        open_into(f->stored_assistant, s->storage_priv, EP_CTX_ASSISTANT_STORAGE, &a) < 0) {
        secret_free(&u);
        stream_fail(s, &L->errors.decrypt, "stored message does not open", NULL);
        return;
    }
    bool same = u.len == strlen(s->prompt) && memcmp(u.data, s->prompt, u.len) == 0 && a.len == s->answer.len &&
                memcmp(a.data, s->answer.data, a.len) == 0;
    secret_free(&u);
    secret_free(&a);
    if (!same) {
        stream_fail(s, &L->errors.mismatch, "stored messages differ from the prompt and the answer", NULL);
        return;
    }
    stream_end(s, true);
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
        stream_fail(s, &L->errors.protocol, json ? "not an event of the protocol" : "reply is not JSON",
                    json ? NULL : jerr.text);
        break;
    case PROTO_EV_STREAM_KEY: /* format 3: the stream's key, before any chunk */
        if (ev.format != 3 || L->opt.stream_format != 3 ||
            sv3_init_receiver(&s->sv, s->client_key, L->enclave_pub, ev.epk, ev.salt, s->request_hash) < 0) {
            stream_fail(s, &L->errors.protocol, "unexpected or malformed stream_key", NULL);
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
            stream_fail(s, &L->errors.decrypt, ev.kind == PROTO_EV_CHUNK_V3 ? "format 3 chunk does not open in order"
                                                                             : "chunk does not open", NULL);
            break;
        }
        int rc = check_chunk(s, (const char *)pt, plen);
        free(pt);
        if (rc < 0)
            stream_end(s, false);
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
        stream_fail(s, &L->errors.error_event, "error event", d);
        break;
    }
    case PROTO_EV_FINAL:
        if (L->opt.stream_format == 3 && (!s->v3 || check_end(s, ev.stream_end, &ev.final) < 0))
            stream_fail(s, &L->errors.decrypt, "format 3 end does not verify", NULL);
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
                stream_fail(s, &s->L->errors.protocol, "reply line too long", NULL);
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
        stream_fail(s, &s->L->errors.eof, "connection closed before the final event", NULL);
    else if (what & BEV_EVENT_ERROR)
        stream_fail(s, s->chunks ? &s->L->errors.eof : &s->L->errors.connect, "socket error",
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
                stream_fail(s, &L->errors.other, "out of memory", NULL);
                return;
            }
            struct timeval tv = {0, CONNECT_RETRY_MS * 1000};
            evtimer_add(s->retry, &tv);
            return;
        }
        stream_fail(s, &L->errors.connect, "connect", err);
        return;
    }
    s->bev = bufferevent_socket_new(L->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!s->bev) {
        close(fd);
        stream_fail(s, &L->errors.other, "out of memory", NULL);
        return;
    }
    bufferevent_setcb(s->bev, on_read, NULL, on_event, s);
    /* the fd may still be connecting (tcp): let the bufferevent wait for it */
    if (bufferevent_socket_connect(s->bev, NULL, 0) < 0 || bufferevent_write(s->bev, s->request, s->request_len) < 0 ||
        bufferevent_write(s->bev, "\n", 1) < 0 || bufferevent_enable(s->bev, EV_READ | EV_WRITE) < 0) {
        stream_fail(s, &L->errors.connect, "cannot start the request", NULL);
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

/* ---- direct streams (the Bedrock client straight to the simulator) ---- */

/* Returning non-zero makes the client cancel the call, with no on_done: the
 * stream ends here, and must not cancel the call a second time. */
static int d_on_text(void *ud, const char *text, size_t len)
{
    stream *s = ud;
    if (check_chunk(s, text, len) == 0)
        return 0;
    s->call = NULL;
    stream_end(s, false);
    return 1;
}

static void d_on_done(void *ud, const bedrock_error *e)
{
    stream *s = ud;
    s->call = NULL; /* freed by the client after this returns */
    if (e) {
        stream_fail(s, e->code == BEDROCK_ERR_TRANSPORT ? &s->L->errors.connect : &s->L->errors.error_event,
                    bedrock_strerror(e->code), e->message);
        return;
    }
    if (s->chunks != s->L->sim_opts.chunks) {
        stream_fail(s, &s->L->errors.mismatch, "stream ended early", NULL);
        return;
    }
    stream_end(s, true);
}

static const bedrock_callbacks DIRECT_CB = {d_on_text, NULL, NULL, NULL, d_on_done};

static void start_direct(stream *s)
{
    load *L = s->L;
    bedrock_message msgs[] = {{"user", s->prompt, strlen(s->prompt)}};
    bedrock_request req = {.model_id = L->opt.model, .messages = msgs, .n_messages = 1,
                           .system = "You are a helpful AI assistant.", .temperature = 0.7,
                           .creds = &L->creds};
    bedrock_error err;
    s->call = bedrock_converse_stream(L->bedrock, &req, &DIRECT_CB, s, &err);
    if (!s->call)
        stream_fail(s, &L->errors.other, "bedrock request", err.message);
}

/* ---- launching ---- */

static void start_one(load *L)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        note_error(L, &L->errors.other, "out of memory");
        L->to_start = 0;
        return;
    }
    s->L = L;
    s->index = L->started++;
    s->kind = L->alternate ? (stream_kind)(s->index % 2) : L->only_kind;
    snprintf(s->echo, sizeof s->echo, "veil-load stream %ld", s->index);
    snprintf(s->prompt, sizeof s->prompt, "[[sim: chunks=%ld chunk-size=%ld interval-ms=%ld fault=none]] %s",
             L->sim_opts.chunks, L->sim_opts.chunk_size, L->sim_opts.interval_ms, s->echo);
    LIST_INSERT_HEAD(&L->live, s, link);
    L->to_start--;
    L->running++;
    if (L->counting)
        L->stats[s->kind].started++;
    if (s->kind == KIND_ENCLAVE) {
        if (build_request(s) < 0) { /* sealing is client work: not timed */
            stream_fail(s, &L->errors.other, "cannot build the request", NULL);
            return;
        }
        s->t_start = now_ms();
        connect_enclave(-1, 0, s);
    } else {
        s->t_start = now_ms();
        start_direct(s);
    }
}

/* loopbreak, not loopexit: a loopexit issued while no loop runs would end the
 * next phase's loop at once. */
static void launch_more(load *L)
{
    /* stream_end calls back here; a stream that fails at start must not recurse */
    if (L->launching)
        return;
    L->launching = true;
    while (!L->stopping && L->to_start > 0 && L->running < L->concurrency)
        start_one(L);
    L->launching = false;
    if (L->running == 0 && (L->to_start == 0 || L->stopping))
        event_base_loopbreak(L->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    load *L = arg;
    L->stopping = true;
    while (!LIST_EMPTY(&L->live))
        stream_fail(LIST_FIRST(&L->live), &L->errors.timeout, "still running at --time-limit", NULL);
    event_base_loopbreak(L->base);
}

/* Runs one phase to its end: total streams, at most concurrency at once. Returns the wall ms. */
static double run_phase(load *L, long total, long concurrency, bool alternate, stream_kind kind, bool counting)
{
    L->to_start = total;
    L->started = 0;
    L->running = 0;
    L->concurrency = concurrency;
    L->alternate = alternate;
    L->only_kind = kind;
    L->counting = counting;
    L->stopping = false;
    struct timeval tl = {L->opt.time_limit_s, 0};
    evtimer_add(L->deadline, &tl);
    double t0 = now_ms();
    launch_more(L);
    if (L->running > 0 || L->to_start > 0)
        event_base_dispatch(L->base);
    evtimer_del(L->deadline);
    return now_ms() - t0;
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

static int fetch_public_key(load *L)
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

static int set_credentials(load *L)
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

/* ---- CPU time of another process ---- */

/* utime + stime of pid, in seconds; -1 if unreadable. */
static double proc_cpu_s(long pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p)
        return -1;
    unsigned long ut = 0, st = 0;
    /* after ')': state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- report ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array; NAN when empty. */
static double pct(const double *v, size_t n, double p)
{
    if (n == 0)
        return NAN;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    return v[k ? k - 1 : 0];
}

static FILE *g_kv;

static void kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void kv(const char *key, const char *fmt, ...)
{
    if (!g_kv)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(g_kv, "%s=", key);
    vfprintf(g_kv, fmt, ap);
    fputc('\n', g_kv);
    va_end(ap);
}

static void sort_ttfc(kind_stats *s)
{
    qsort(s->ttfc_ms, s->n_ttfc, sizeof s->ttfc_ms[0], cmp_double);
}

static void print_ttfc(const char *what, const kind_stats *s, const char *kvp)
{
    double p50 = pct(s->ttfc_ms, s->n_ttfc, 50), p95 = pct(s->ttfc_ms, s->n_ttfc, 95),
           p99 = pct(s->ttfc_ms, s->n_ttfc, 99);
    printf("  %-30s p50 %8.2f ms   p95 %8.2f ms   p99 %8.2f ms   (n=%zu)\n", what, p50, p95, p99, s->n_ttfc);
    char k[96];
    snprintf(k, sizeof k, "%s_ttfc_p50_ms", kvp);
    kv(k, "%.3f", p50);
    snprintf(k, sizeof k, "%s_ttfc_p95_ms", kvp);
    kv(k, "%.3f", p95);
    snprintf(k, sizeof k, "%s_ttfc_p99_ms", kvp);
    kv(k, "%.3f", p99);
}

static void reset_stats(load *L)
{
    for (int k = 0; k < N_KINDS; k++) {
        free(L->stats[k].ttfc_ms);
        memset(&L->stats[k], 0, sizeof L->stats[k]);
    }
}

/* ---- main ---- */

static int parse_opts(int argc, char **argv, options *o)
{
    enum { O_ENCLAVE = 256, O_SIM, O_CA, O_AKID, O_SECRET, O_TOKEN, O_MODEL, O_KV, O_LABEL, O_STREAMS, O_TOTAL,
           O_CHUNKS, O_CHUNK_SIZE, O_INTERVAL, O_BASELINE, O_TIME, O_EPID, O_PPID, O_SETCREDS, O_FORMAT,
           O_KEEPALIVE };
    static const struct option opts[] = {
        {"enclave", required_argument, 0, O_ENCLAVE}, {"sim", required_argument, 0, O_SIM},
        {"ca-file", required_argument, 0, O_CA}, {"access-key-id", required_argument, 0, O_AKID},
        {"secret-access-key", required_argument, 0, O_SECRET}, {"session-token", required_argument, 0, O_TOKEN},
        {"model", required_argument, 0, O_MODEL}, {"kv", required_argument, 0, O_KV},
        {"label", required_argument, 0, O_LABEL}, {"streams", required_argument, 0, O_STREAMS},
        {"total", required_argument, 0, O_TOTAL}, {"chunks", required_argument, 0, O_CHUNKS},
        {"chunk-size", required_argument, 0, O_CHUNK_SIZE}, {"interval-ms", required_argument, 0, O_INTERVAL},
        {"baseline", required_argument, 0, O_BASELINE}, {"time-limit", required_argument, 0, O_TIME},
        {"enclave-pid", required_argument, 0, O_EPID}, {"proxy-pid", required_argument, 0, O_PPID},
        {"set-credentials", no_argument, 0, O_SETCREDS}, {"stream-format", required_argument, 0, O_FORMAT},
        {"direct-keep-alive", no_argument, 0, O_KEEPALIVE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *o = (options){.model = DEFAULT_MODEL, .streams = 10, .total = 100, .chunks = 20, .baseline = -1,
                   .stream_format = 1,
                   .time_limit_s = 60, .akid = getenv("AWS_ACCESS_KEY_ID"),
                   .secret_key = getenv("AWS_SECRET_ACCESS_KEY"), .token = getenv("AWS_SESSION_TOKEN")};
    int c, idx = 0;
    while ((c = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        long *target = NULL, lo = 0, hi = 0;
        switch (c) {
        case O_ENCLAVE: o->enclave = optarg; break;
        case O_SIM: o->sim = optarg; break;
        case O_CA: o->ca_file = optarg; break;
        case O_AKID: o->akid = optarg; break;
        case O_SECRET: o->secret_key = optarg; break;
        case O_TOKEN: o->token = optarg; break;
        case O_MODEL: o->model = optarg; break;
        case O_KV: o->kv_file = optarg; break;
        case O_LABEL: o->label = optarg; break;
        case O_SETCREDS: o->set_credentials = true; break;
        case O_KEEPALIVE: o->direct_keep_alive = true; break;
        case O_STREAMS: target = &o->streams, lo = 1, hi = MAX_STREAMS; break;
        case O_TOTAL: target = &o->total, hi = MAX_TOTAL; break;
        case O_CHUNKS: target = &o->chunks, lo = 1, hi = 100000; break;
        case O_CHUNK_SIZE: target = &o->chunk_size, hi = 65536; break;
        case O_INTERVAL: target = &o->interval_ms, hi = 60000; break;
        case O_BASELINE: target = &o->baseline, hi = 100000; break;
        case O_TIME: target = &o->time_limit_s, lo = 1, hi = 86400; break;
        case O_EPID: target = &o->enclave_pid, lo = 1, hi = 1L << 30; break;
        case O_PPID: target = &o->proxy_pid, lo = 1, hi = 1L << 30; break;
        case O_FORMAT: target = &o->stream_format, lo = 1, hi = 3; break; /* 2: refused below */
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
        if (target && parse_long(optarg, lo, hi, target) < 0) {
            fprintf(stderr, "veil-load: --%s must be a number in [%ld, %ld]\n", opts[idx].name, lo, hi);
            return -1;
        }
    }
    if (o->stream_format == 2) {
        fprintf(stderr, "veil-load: --stream-format must be 1 or 3\n");
        return -1;
    }
    if (optind != argc) {
        fprintf(stderr, "veil-load: unexpected argument '%s' (try --help)\n", argv[optind]);
        return -1;
    }
    if (!o->enclave && !o->sim) {
        fprintf(stderr, "veil-load: give --enclave ADDR, --sim ADDR, or both (try --help)\n");
        return -1;
    }
    if ((o->sim || o->set_credentials) && (!o->akid || !o->secret_key || !o->token)) {
        fprintf(stderr, "veil-load: --sim and --set-credentials need --access-key-id, --secret-access-key "
                        "and --session-token\n");
        return -1;
    }
    if (o->set_credentials && !o->enclave) {
        fprintf(stderr, "veil-load: --set-credentials needs --enclave\n");
        return -1;
    }
    if (o->baseline < 0)
        o->baseline = o->sim ? BASELINE_DEFAULT : 0;
    return 0;
}

static int setup_direct(load *L)
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

int main(int argc, char **argv)
{
    static load L;
    LIST_INIT(&L.live);
    if (parse_opts(argc, argv, &L.opt) < 0)
        return 2;
    log_init("veil-load");
    if (!getenv("VEIL_LOG_LEVEL"))
        log_set_level(LOG_WARN); /* the Bedrock client logs every call at info */
    signal(SIGPIPE, SIG_IGN);
    if (L.opt.kv_file && !(g_kv = fopen(L.opt.kv_file, "w"))) {
        fprintf(stderr, "veil-load: %s: %s\n", L.opt.kv_file, strerror(errno));
        return 2;
    }
    L.creds = (sigv4_credentials){L.opt.akid, L.opt.secret_key, L.opt.token};
    L.sim_opts = (bsim_options){.chunks = L.opt.chunks, .chunk_size = L.opt.chunk_size,
                                .interval_ms = L.opt.interval_ms};
    char err[256];
    if (L.opt.enclave && addr_parse(L.opt.enclave, &L.enclave_addr, err, sizeof err) < 0) {
        fprintf(stderr, "veil-load: --enclave: %s\n", err);
        return 2;
    }
    L.base = event_base_new();
    L.deadline = L.base ? evtimer_new(L.base, on_deadline, &L) : NULL;
    if (!L.deadline) {
        fprintf(stderr, "veil-load: cannot create the event loop\n");
        return 1;
    }
    if (L.opt.sim && setup_direct(&L) < 0)
        return 1;
    if (L.opt.enclave) {
        if (fetch_public_key(&L) < 0)
            return 1;
        if (L.opt.set_credentials) {
            if (set_credentials(&L) < 0)
                return 1;
            printf("veil-load: credentials set on %s\n", L.opt.enclave);
        }
    }
    bool have_enclave = L.opt.enclave != NULL;
    stream_kind main_kind = have_enclave ? KIND_ENCLAVE : KIND_DIRECT;
    int status = 0;

    printf("veil-load%s%s: %ld chunks per answer (chunk-size %ld), %ld ms apart, model %s\n",
           L.opt.label ? " — " : "", L.opt.label ? L.opt.label : "", L.opt.chunks, L.opt.chunk_size,
           L.opt.interval_ms, L.opt.model);
    kv("label", "%s", L.opt.label ? L.opt.label : "");
    kv("chunks_per_stream", "%ld", L.opt.chunks);
    kv("interval_ms", "%ld", L.opt.interval_ms);

    /* 1. the TTFC baseline: enclave and direct in turn, one at a time, after a warm-up pair */
    if (L.opt.sim && L.opt.baseline > 0) {
        run_phase(&L, have_enclave ? 2 : 1, 1, have_enclave, KIND_DIRECT, false);
        reset_stats(&L);
        long n = have_enclave ? 2 * L.opt.baseline : L.opt.baseline;
        run_phase(&L, n, 1, have_enclave, KIND_DIRECT, true);
        kind_stats *e = &L.stats[KIND_ENCLAVE], *d = &L.stats[KIND_DIRECT];
        sort_ttfc(e);
        sort_ttfc(d);
        printf("\nTime to first chunk, one stream at a time, %s%ld streams each\n",
               have_enclave ? "enclave and direct in turn, " : "", L.opt.baseline);
        if (have_enclave)
            print_ttfc("enclave path (enclave+proxy)", e, "baseline_enclave");
        print_ttfc("direct to the simulator", d, "baseline_direct");
        if (have_enclave && e->n_ttfc && d->n_ttfc) {
            double pe = pct(e->ttfc_ms, e->n_ttfc, 50), pd = pct(d->ttfc_ms, d->n_ttfc, 50);
            printf("  %-30s %.2fx p50 (+%.2f ms); p95 %.2fx\n", "TTFC overhead enclave/direct", pe / pd, pe - pd,
                   pct(e->ttfc_ms, e->n_ttfc, 95) / pct(d->ttfc_ms, d->n_ttfc, 95));
            kv("ttfc_overhead_ratio_p50", "%.3f", pe / pd);
            kv("ttfc_overhead_ms_p50", "%.3f", pe - pd);
        }
        if (e->failed || d->failed)
            printf("  failed: %ld enclave, %ld direct\n", e->failed, d->failed);
        reset_stats(&L);
    }

    /* 2. the load phase */
    if (L.opt.total > 0) {
        double cpu_e0 = L.opt.enclave_pid ? proc_cpu_s(L.opt.enclave_pid) : -1;
        double cpu_p0 = L.opt.proxy_pid ? proc_cpu_s(L.opt.proxy_pid) : -1;
        double cpu_s0 = self_cpu_s();
        long tally0 = total_errors(&L.errors);
        double wall = run_phase(&L, L.opt.total, L.opt.streams, false, main_kind, true);
        double cpu_e1 = L.opt.enclave_pid ? proc_cpu_s(L.opt.enclave_pid) : -1;
        double cpu_p1 = L.opt.proxy_pid ? proc_cpu_s(L.opt.proxy_pid) : -1;
        double cpu_self = self_cpu_s() - cpu_s0;
        kind_stats *s = &L.stats[main_kind];
        sort_ttfc(s);
        double wall_s = wall / 1e3;
        double mean_conc = s->stream_ms_sum / wall;
        printf("\nLoad: %ld streams, %ld at once, %s (wall %.2f s)\n", L.opt.total, L.opt.streams,
               KIND_NAME[main_kind], wall_s);
        printf("  %-30s %ld ok, %ld failed, %ld never started\n", "streams", s->ok, s->failed,
               L.opt.total - s->started);
        printf("  %-30s %10.1f streams/s\n", "completed", (double)s->ok / wall_s);
        printf("  %-30s %10.0f chunks/s   (%ld chunks, every one %s)\n", "chunk rate",
               (double)s->chunks / wall_s, s->chunks,
               main_kind == KIND_ENCLAVE ? "decrypted and checked" : "checked");
        printf("  %-30s %10.1f\n", "mean concurrent streams", mean_conc);
        print_ttfc("time to first chunk", s, "load");
        kv("streams", "%ld", L.opt.total);
        kv("concurrency", "%ld", L.opt.streams);
        kv("wall_s", "%.3f", wall_s);
        kv("streams_ok", "%ld", s->ok);
        kv("errors", "%ld", total_errors(&L.errors) - tally0 + (L.opt.total - s->started));
        kv("streams_per_s", "%.2f", (double)s->ok / wall_s);
        kv("chunks_per_s", "%.1f", (double)s->chunks / wall_s);
        kv("mean_concurrency", "%.2f", mean_conc);
        if (cpu_e0 >= 0 && cpu_e1 >= 0 && s->chunks > 0) {
            double cpu = cpu_e1 - cpu_e0;
            double us_chunk = cpu * 1e6 / (double)s->chunks;
            double util = cpu / wall_s;
            printf("  %-30s %10.3f s    (%.0f%% of one core; /proc ticks of %.0f ms)\n", "enclave CPU time", cpu,
                   100 * util, 1e3 / (double)sysconf(_SC_CLK_TCK));
            printf("  %-30s %10.1f µs   (all of its work: TLS, SigV4, request and storage seals)\n",
                   "enclave CPU per chunk", us_chunk);
            double ms_stream = cpu * 1e3 / (double)(s->ok + s->failed);
            printf("  %-30s %10.2f ms\n", "enclave CPU per stream", ms_stream);
            kv("enclave_cpu_ms_per_stream", "%.3f", ms_stream);
            if (util > 0) {
                printf("  %-30s %10.0f   (mean concurrency / enclave cores used, at this pace)\n",
                       "streams per core", mean_conc / util);
                kv("streams_per_core", "%.0f", mean_conc / util);
            }
            printf("  %-30s %10.0f   (at %.0f chunks/s per stream, a fast model)\n", "streams per core @50/s",
                   1e6 / (us_chunk * FAST_MODEL_CHUNKS_PER_S), FAST_MODEL_CHUNKS_PER_S);
            kv("enclave_cpu_s", "%.3f", cpu);
            kv("enclave_cpu_us_per_chunk", "%.1f", us_chunk);
            kv("streams_per_core_at_50cps", "%.0f", 1e6 / (us_chunk * FAST_MODEL_CHUNKS_PER_S));
        } else if (L.opt.enclave_pid) {
            printf("  enclave CPU: /proc/%ld/stat unreadable\n", L.opt.enclave_pid);
        }
        if (cpu_p0 >= 0 && cpu_p1 >= 0 && s->chunks > 0) {
            printf("  %-30s %10.3f s    (%.1f µs per chunk)\n", "proxy CPU time", cpu_p1 - cpu_p0,
                   (cpu_p1 - cpu_p0) * 1e6 / (double)s->chunks);
            kv("proxy_cpu_us_per_chunk", "%.1f", (cpu_p1 - cpu_p0) * 1e6 / (double)s->chunks);
        }
        printf("  %-30s %10.3f s    (this process%s)\n", "veil-load CPU time", cpu_self,
               main_kind == KIND_ENCLAVE ? ": sealing requests, opening every chunk" : ": TLS, SigV4, decoding");
        if (s->failed || s->started < L.opt.total)
            status = 1;
    }

    error_tally *e = &L.errors;
    long nerr = total_errors(e);
    printf("\nErrors: %ld", nerr);
    if (nerr)
        printf(" (connect %ld, closed early %ld, protocol %ld, decrypt %ld, wrong content %ld, error events %ld, "
               "time limit %ld, other %ld)",
               e->connect, e->eof, e->protocol, e->decrypt, e->mismatch, e->error_event, e->timeout, e->other);
    printf("\n");
    for (int i = 0; i < e->n_samples; i++)
        printf("  e.g. %s\n", e->samples[i]);
    if (nerr)
        status = 1;

    reset_stats(&L);
    bedrock_client_free(L.bedrock);
    https_pool_free(L.pool);
    https_ctx_free(L.https);
    event_free(L.deadline);
    event_base_free(L.base);
    if (g_kv)
        fclose(g_kv);
    return status;
}

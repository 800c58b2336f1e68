/* veil-load — a load generator for veil (design.md, "Performance model").
 *
 * Plays the parent (veild) against a running veil-enclave: GET_PUBLIC_KEY, then
 * --total CHAT_STREAM requests, --streams of them at once, each sealed to the
 * enclave's key with a fresh client key pair. Every streamed chunk is opened and
 * checked against veil-bedrock-sim's deterministic answer rule (tools/bedrock_sim.h),
 * and so are the two stored messages of the final event. One libevent loop drives
 * every socket; no thread per stream.
 *
 * With --through it plays the clients of veild instead, over HTTP/1.1 and SSE
 * (load_through.c): users with dev tokens, keys and sessions, streams in format 1 or
 * 3 checked event by event, injected faults counted apart (--faults), a run of
 * --duration seconds, and --hold: N streams kept open and idle, with veild's
 * resident memory and descriptors per held stream.
 *
 * With --sim it also calls the simulator directly with the project's Bedrock client
 * (no proxy, no enclave) and alternates enclave-path and direct streams one at a
 * time, so the time-to-first-chunk overhead of veil-enclave + veil-proxy comes out
 * as a ratio measured in one run; with --through and --enclave, through-veild and
 * enclave streams alternate the same way (what veild adds). --enclave-pid,
 * --proxy-pid and --veild-pid read CPU time from /proc: CPU per chunk.
 *
 * Bounded: every phase ends by --time-limit at the latest. Figures only; the exit
 * status is 1 when a stream failed or a check did not hold, 2 on bad usage.
 */
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/config.h"
#include "common/log.h"
#include "common/secret.h"

#include "veil_load.h"

#define MAX_STREAMS 100000
#define MAX_TOTAL 10000000L
#define BASELINE_DEFAULT 20
#define FAST_MODEL_CHUNKS_PER_S 50.0 /* a reference pace for "streams per core" */
#define PER_USER_DEFAULT 4           /* veild's VEIL_USER_MAX_STREAMS default */
#define MAX_CONNECTING_DEFAULT 256
#define FD_HEADROOM 64               /* descriptors beside the streams' */
#define HOLD_SETTLE_S 10             /* after closing held streams: veild's descriptors go back */

const char *const KIND_NAME[N_KINDS] = {"enclave path", "direct to sim", "through veild"};

double vl_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: veil-load --enclave ADDR [OPTIONS]\n"
            "       veil-load --through URL --dev-key FILE [--enclave ADDR] [OPTIONS]\n"
            "       veil-load --sim tcp:HOST:PORT --ca-file F --access-key-id ... [OPTIONS]\n\n"
            "A load generator for veil. Connects to veil-enclave as its parent would, or to veild\n"
            "as its clients do (--through), and runs --total chat streams, --streams at once on\n"
            "one event loop. The prompt carries [[sim: chunks=K interval-ms=I]] for\n"
            "veil-bedrock-sim; every chunk is decrypted and checked against the simulator's\n"
            "answer rule (and, straight to the enclave, the stored messages of the final event).\n\n"
            "  --enclave ADDR          veil-enclave's address (unix:PATH, tcp:HOST:PORT, vsock:CID:PORT)\n"
            "  --streams N             concurrent streams (default 10)\n"
            "  --total M               streams in all (default 100; 0: none)\n"
            "  --duration SEC          start streams for SEC seconds instead of --total\n"
            "  --chunks K              chunks per answer (default 20)\n"
            "  --stream-format 1|3     1: an EncryptedPayload per chunk (default); 3: a bound request,\n"
            "                          one key per stream, every element and the end checked in order\n"
            "  --chunk-size B          pad chunks 1..K-1 to B bytes (default 0: ' chunk <i>')\n"
            "  --interval-ms I         the simulator's pause between chunks (default 0)\n"
            "  --model ID              model id (default " DEFAULT_MODEL ")\n"
            "  --enclave-pid PID       read its CPU time (/proc/PID/stat): CPU per chunk, streams per core\n"
            "  --proxy-pid PID         the same for veil-proxy\n"
            "  --time-limit SEC        every phase ends by then at the latest (default 60;\n"
            "                          with --duration: SEC + 60)\n"
            "  --set-credentials       first send SET_CREDENTIALS with the credentials below\n\n"
            "Through veild (HTTP/1.1 and SSE, as a client; veild runs with CLERK_JWKS_FILE = the\n"
            "JWKS of --dev-key, as `veil dev-token --jwks-out` writes it):\n"
            "  --through URL           veild's http://HOST:PORT\n"
            "  --dev-key FILE          the RSA key `veil dev-token --key FILE` made; a token per user\n"
            "  --issuer URL            the tokens' iss (default https://veil.dev.local, veild's CLERK_ISSUER)\n"
            "  --streams-per-user K    a user's streams at once, at most veild's VEIL_USER_MAX_STREAMS\n"
            "                          (default %d, its default)\n"
            "  --users U               users (default: streams / K, rounded up); each makes its\n"
            "                          /users/sync, /users/me/keys (an X25519 key pair) and a session\n"
            "  --faults LIST           inject faults in a share of the streams, KIND:PERCENT,...:\n"
            "                          drop, bad-crc, throttle, model-error, http-500, http-429, empty\n"
            "                          (the simulator's: each must end with its fixed error event),\n"
            "                          disconnect (the client leaves mid-stream), malformed (a bad\n"
            "                          body: 422); counted apart from errors\n"
            "  --hold N                open N streams the simulator holds idle ([[sim: fault=hang]]),\n"
            "                          keep them --hold-seconds (default 10), then close them; with\n"
            "                          --veild-pid, veild's RSS and descriptors per held stream. A\n"
            "                          stream is held once veild sent its session event (format 3:\n"
            "                          and the enclave its stream key)\n"
            "  --veild-pid PID         veild's CPU per relayed chunk, RSS and descriptors\n"
            "  --max-connecting N      streams not yet under way, at most (default %d): waiting for\n"
            "                          veild's answer, in format 3 for the enclave's stream key\n\n"
            "Time-to-first-chunk overhead (both measured in this run, one stream at a time):\n"
            "  with --through and --enclave: through veild and straight to the enclave, in turn\n"
            "  --sim tcp:HOST:PORT     veil-bedrock-sim, called directly with the Bedrock client\n"
            "                          (HOST must match its certificate: 127.0.0.1 or localhost)\n"
            "  --ca-file F             the CA that signed the simulator's certificate\n"
            "  --access-key-id ID      credentials the simulator accepts (env AWS_ACCESS_KEY_ID,\n"
            "  --secret-access-key S    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)\n"
            "  --session-token T\n"
            "  --baseline N            pairs of streams, in turn (default %d when there is a pair)\n"
            "  --direct-keep-alive     the direct calls keep their connection alive between calls\n"
            "                          (compare with an enclave whose upstream pool is on)\n\n"
            "Output:\n"
            "  --label TEXT            a name for this run in the report\n"
            "  --kv FILE               also write every figure as key=value lines to FILE\n"
            "  --help                  this text\n\n"
            "veil-load raises its own descriptor limit to the hard limit (one per stream).\n"
            "Exit status: 0 when every stream completed and checked (or ended as its injected fault\n"
            "must), 1 otherwise, 2 on bad usage.\n",
            PER_USER_DEFAULT, MAX_CONNECTING_DEFAULT, BASELINE_DEFAULT);
}

/* ---- errors ---- */

void vl_note_error(load *L, long *counter, const char *fmt, ...)
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
           e->other + e->http;
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

static void stream_free(stream *s)
{
    LIST_REMOVE(s, link);
    if (s->kind == KIND_THROUGH)
        load_through_release(s);
    if (s->bev)
        bufferevent_free(s->bev);
    if (s->call)
        bedrock_cancel(s->call);
    if (s->retry)
        event_free(s->retry);
    if (s->request)
        secure_wipe(s->request, strlen(s->request));
    free(s->request);
    vbuf_free_secure(&s->answer);
    vbuf_free(&s->expect);
    x25519_key_free(s->client_key);
    sv3_wipe(&s->sv);
    secure_wipe(s->client_priv, sizeof s->client_priv);
    secure_wipe(s->storage_priv, sizeof s->storage_priv);
    free(s);
}

/* Ends a stream: its figures go to the stats; then the next starts. */
void vl_stream_end(stream *s, end_kind how)
{
    load *L = s->L;
    if (L->counting) {
        kind_stats *st = &L->stats[s->kind];
        st->stream_ms_sum += vl_now_ms() - s->t_start;
        if (how == END_OK)
            st->ok++;
        else if (how == END_INJECTED)
            st->injected++, L->injected_ok[s->fault]++;
        else
            st->failed++;
    }
    L->running--;
    stream_free(s);
    vl_launch_more(L);
}

void vl_stream_fail(stream *s, long *counter, const char *what, const char *detail)
{
    vl_note_error(s->L, counter, "%s stream %ld: %s%s%s", KIND_NAME[s->kind], s->index, what,
                  detail ? ": " : "", detail ? detail : "");
    vl_stream_end(s, END_FAILED);
}

/* A chunk arrived: time the first, count, compare with delta i of the answer rule. */
int vl_check_chunk(stream *s, const char *text, size_t len)
{
    load *L = s->L;
    if (s->chunks == 0) {
        s->t_first = vl_now_ms();
        if (L->counting && push_ttfc(&L->stats[s->kind], s->t_first - s->t_start) < 0)
            return -1;
    }
    bsim_request rq = {.echo = s->echo, .echo_len = strlen(s->echo)};
    vbuf_reset(&s->expect);
    if (s->chunks >= L->sim_opts.chunks || bsim_delta_text(&rq, &L->sim_opts, s->chunks, &s->expect) < 0 ||
        s->expect.len != len || memcmp(s->expect.data, text, len) != 0) {
        vl_note_error(L, &L->errors.mismatch, "%s stream %ld: chunk %ld is not the simulator's delta",
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

static void start_one(load *L)
{
    stream *s = calloc(1, sizeof *s);
    if (!s) {
        vl_note_error(L, &L->errors.other, "out of memory");
        L->to_start = 0;
        return;
    }
    s->L = L;
    s->index = L->started++;
    s->kind = L->alternate ? L->alt[s->index % 2] : L->only_kind;
    snprintf(s->echo, sizeof s->echo, "veil-load stream %ld", s->index);
    snprintf(s->prompt, sizeof s->prompt, "[[sim: chunks=%ld chunk-size=%ld interval-ms=%ld fault=none]] %s",
             L->sim_opts.chunks, L->sim_opts.chunk_size, L->sim_opts.interval_ms, s->echo);
    LIST_INSERT_HEAD(&L->live, s, link);
    L->to_start--;
    if (++L->running > L->peak_running)
        L->peak_running = L->running;
    if (L->counting)
        L->stats[s->kind].started++;
    if (s->kind == KIND_ENCLAVE)
        load_enclave_start(s);
    else if (s->kind == KIND_THROUGH)
        load_through_start(s);
    else
        load_direct_start(s);
}

/* The phase is over: every stream ended, or (--hold) each is held or failed. */
static bool phase_over(const load *L)
{
    if (L->holding)
        return L->to_start == 0 && L->held + L->stats[KIND_THROUGH].failed >= L->opt.hold;
    return L->running == 0 && (L->to_start == 0 || L->stopping);
}

/* The next stream can start: a through stream needs a free slot of some user (a
 * slot comes back late after a client left mid-stream). */
static bool can_start(const load *L)
{
    stream_kind k = L->alternate ? L->alt[L->started % 2] : L->only_kind;
    return k != KIND_THROUGH || load_through_free_slots(L) > 0;
}

/* loopbreak, not loopexit: a loopexit issued while no loop runs would end the
 * next phase's loop at once. */
void vl_launch_more(load *L)
{
    /* stream ends call back here; a stream that fails at start must not recurse */
    if (L->launching)
        return;
    L->launching = true;
    if (L->launch_until > 0 && vl_now_ms() >= L->launch_until)
        L->to_start = 0;
    while (!L->stopping && L->to_start > 0 && L->running < L->concurrency &&
           L->connecting < L->opt.max_connecting && can_start(L))
        start_one(L);
    L->launching = false;
    if (phase_over(L))
        event_base_loopbreak(L->base);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    load *L = arg;
    L->stopping = true;
    while (!LIST_EMPTY(&L->live))
        vl_stream_fail(LIST_FIRST(&L->live), &L->errors.timeout, "still running at --time-limit", NULL);
    event_base_loopbreak(L->base);
}

/* A --duration run's clock: no stream starts after it (the running ones finish). */
static void on_launch_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    load *L = arg;
    L->to_start = 0;
    if (phase_over(L))
        event_base_loopbreak(L->base);
}

/* Runs one phase to its end: total streams (or --duration), at most concurrency at
 * once. Returns the wall ms. */
static double run_phase(load *L, long total, long concurrency, bool alternate, stream_kind kind, bool counting,
                        long duration_s)
{
    L->to_start = total;
    L->started = 0;
    L->running = 0;
    L->peak_running = 0;
    L->concurrency = concurrency;
    L->alternate = alternate;
    L->only_kind = kind;
    L->counting = counting;
    L->stopping = false;
    struct timeval tl = {L->opt.time_limit_s, 0}, dl = {duration_s, 0};
    evtimer_add(L->deadline, &tl);
    double t0 = vl_now_ms();
    struct event *launch_end = NULL;
    L->launch_until = 0;
    if (duration_s > 0) {
        L->launch_until = t0 + 1e3 * (double)duration_s;
        if ((launch_end = evtimer_new(L->base, on_launch_end, L)))
            evtimer_add(launch_end, &dl);
    }
    vl_launch_more(L);
    if (!phase_over(L))
        event_base_dispatch(L->base);
    evtimer_del(L->deadline);
    if (launch_end)
        event_free(launch_end);
    L->launch_until = 0;
    return vl_now_ms() - t0;
}

static void reset_stats(load *L)
{
    for (int k = 0; k < N_KINDS; k++) {
        free(L->stats[k].ttfc_ms);
        memset(&L->stats[k], 0, sizeof L->stats[k]);
    }
}

/* ---- options ---- */

static int parse_opts(int argc, char **argv, options *o)
{
    enum { O_ENCLAVE = 256, O_SIM, O_CA, O_AKID, O_SECRET, O_TOKEN, O_MODEL, O_KV, O_LABEL, O_STREAMS, O_TOTAL,
           O_CHUNKS, O_CHUNK_SIZE, O_INTERVAL, O_BASELINE, O_TIME, O_EPID, O_PPID, O_SETCREDS, O_FORMAT,
           O_THROUGH, O_DEVKEY, O_ISSUER, O_USERS, O_PER_USER, O_DURATION, O_HOLD, O_HOLD_S, O_VPID,
           O_CONNECTING, O_FAULTS, O_KEEPALIVE };
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
        {"through", required_argument, 0, O_THROUGH}, {"dev-key", required_argument, 0, O_DEVKEY},
        {"issuer", required_argument, 0, O_ISSUER}, {"users", required_argument, 0, O_USERS},
        {"streams-per-user", required_argument, 0, O_PER_USER}, {"duration", required_argument, 0, O_DURATION},
        {"hold", required_argument, 0, O_HOLD}, {"hold-seconds", required_argument, 0, O_HOLD_S},
        {"veild-pid", required_argument, 0, O_VPID}, {"max-connecting", required_argument, 0, O_CONNECTING},
        {"faults", required_argument, 0, O_FAULTS}, {"direct-keep-alive", no_argument, 0, O_KEEPALIVE},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *o = (options){.model = DEFAULT_MODEL, .streams = 10, .total = 100, .chunks = 20, .baseline = -1,
                   .stream_format = 1, .time_limit_s = -1, .akid = getenv("AWS_ACCESS_KEY_ID"),
                   .secret_key = getenv("AWS_SECRET_ACCESS_KEY"), .token = getenv("AWS_SESSION_TOKEN"),
                   .issuer = "https://veil.dev.local", .per_user = PER_USER_DEFAULT, .hold_s = 10,
                   .max_connecting = MAX_CONNECTING_DEFAULT};
    int c, idx = 0;
    char err[160];
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
        case O_THROUGH: o->through = optarg; break;
        case O_DEVKEY: o->dev_key = optarg; break;
        case O_ISSUER: o->issuer = optarg; break;
        case O_FAULTS:
            if (load_faults_parse(optarg, o->fault_pct, err, sizeof err) < 0) {
                fprintf(stderr, "veil-load: --faults: %s\n", err);
                return -1;
            }
            break;
        case O_STREAMS: target = &o->streams, lo = 1, hi = MAX_STREAMS; break;
        case O_TOTAL: target = &o->total, hi = MAX_TOTAL; break;
        case O_CHUNKS: target = &o->chunks, lo = 1, hi = 100000; break;
        case O_CHUNK_SIZE: target = &o->chunk_size, hi = 65536; break;
        case O_INTERVAL: target = &o->interval_ms, hi = 60000; break;
        case O_BASELINE: target = &o->baseline, hi = 100000; break;
        case O_TIME: target = &o->time_limit_s, lo = 1, hi = 86400; break;
        case O_EPID: target = &o->enclave_pid, lo = 1, hi = 1L << 30; break;
        case O_PPID: target = &o->proxy_pid, lo = 1, hi = 1L << 30; break;
        case O_VPID: target = &o->veild_pid, lo = 1, hi = 1L << 30; break;
        case O_FORMAT: target = &o->stream_format, lo = 1, hi = 3; break; /* 2: refused below */
        case O_USERS: target = &o->users, lo = 1, hi = MAX_STREAMS; break;
        case O_PER_USER: target = &o->per_user, lo = 1, hi = MAX_STREAMS; break;
        case O_DURATION: target = &o->duration_s, lo = 1, hi = 86400; break;
        case O_HOLD: target = &o->hold, lo = 1, hi = MAX_STREAMS; break;
        case O_HOLD_S: target = &o->hold_s, hi = 86400; break;
        case O_CONNECTING: target = &o->max_connecting, lo = 1, hi = MAX_STREAMS; break;
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
    if (!o->enclave && !o->sim && !o->through) {
        fprintf(stderr, "veil-load: give --enclave ADDR, --through URL or --sim ADDR (try --help)\n");
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
    bool faults = false;
    for (int k = 1; k < N_FAULTS; k++)
        faults |= o->fault_pct[k] > 0;
    if (!o->through && (o->hold || faults || o->veild_pid || o->users)) {
        fprintf(stderr, "veil-load: --hold, --faults, --users and --veild-pid need --through\n");
        return -1;
    }
    if (o->through && !o->dev_key) {
        fprintf(stderr, "veil-load: --through needs --dev-key (the key of `veil dev-token --key`)\n");
        return -1;
    }
    if (o->duration_s)
        o->total = MAX_TOTAL;
    if (o->time_limit_s < 0)
        o->time_limit_s = o->duration_s ? o->duration_s + 60 : 60;
    if (o->through) {
        long most = o->streams > o->hold ? o->streams : o->hold;
        if (!o->users)
            o->users = (most + o->per_user - 1) / o->per_user;
        if (o->users * o->per_user < most) {
            fprintf(stderr, "veil-load: %ld streams at once need %ld users at %ld streams each (--users, "
                            "--streams-per-user)\n", most, (most + o->per_user - 1) / o->per_user, o->per_user);
            return -1;
        }
    }
    if (o->baseline < 0)
        o->baseline = o->sim || (o->through && o->enclave) ? BASELINE_DEFAULT : 0;
    return 0;
}

/* One descriptor per stream (two with a direct one's TLS), beside a few of ours. */
static void raise_fd_limit(long streams)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)(streams + FD_HEADROOM) > rl.rlim_cur)
        fprintf(stderr, "veil-load: %ld streams at once, but at most %llu descriptors (the hard limit)\n", streams,
                (unsigned long long)rl.rlim_cur);
}

/* ---- the phases ---- */

/* The TTFC pairs: the main path and the next hop in turn, one at a time. */
static void baseline_phase(load *L, stream_kind main_kind, stream_kind ref)
{
    L->alt[0] = main_kind;
    L->alt[1] = ref;
    run_phase(L, 2, 1, true, main_kind, false, 0); /* a warm-up pair */
    reset_stats(L);
    run_phase(L, 2 * L->opt.baseline, 1, true, main_kind, true, 0);
    kind_stats *a = &L->stats[main_kind], *b = &L->stats[ref];
    vl_sort_ttfc(a);
    vl_sort_ttfc(b);
    printf("\nTime to first chunk, one stream at a time, %s and %s in turn, %ld streams each\n",
           KIND_NAME[main_kind], KIND_NAME[ref], L->opt.baseline);
    bool through = main_kind == KIND_THROUGH;
    vl_print_ttfc(through ? "through veild" : "enclave path (enclave+proxy)", a,
                  through ? "baseline_through" : "baseline_enclave");
    vl_print_ttfc(ref == KIND_ENCLAVE ? "straight to the enclave" : "direct to the simulator", b,
                  ref == KIND_ENCLAVE ? "baseline_enclave" : "baseline_direct");
    if (a->n_ttfc && b->n_ttfc) {
        double pa = vl_pct(a->ttfc_ms, a->n_ttfc, 50), pb = vl_pct(b->ttfc_ms, b->n_ttfc, 50);
        double qa = vl_pct(a->ttfc_ms, a->n_ttfc, 99), qb = vl_pct(b->ttfc_ms, b->n_ttfc, 99);
        printf("  %-30s %.2fx p50 (+%.2f ms); p99 %.2fx (+%.2f ms)\n",
               through ? "TTFC veild adds" : "TTFC overhead enclave/direct", pa / pb, pa - pb, qa / qb, qa - qb);
        vl_kv("ttfc_overhead_ratio_p50", "%.3f", pa / pb);
        vl_kv("ttfc_overhead_ms_p50", "%.3f", pa - pb);
        vl_kv("ttfc_overhead_ms_p99", "%.3f", qa - qb);
    }
    if (a->failed || b->failed)
        printf("  failed: %ld and %ld\n", a->failed, b->failed);
    reset_stats(L);
}

static void print_injected(load *L)
{
    long planned = 0, as_expected = 0;
    for (int k = 1; k < N_FAULTS; k++)
        planned += L->injected[k], as_expected += L->injected_ok[k];
    if (!planned)
        return;
    printf("  %-30s %ld, %ld of them ended as they must:", "injected faults", planned, as_expected);
    for (int k = 1; k < N_FAULTS; k++) {
        if (!L->injected[k])
            continue;
        printf(" %s %ld/%ld", load_fault_name((fault_kind)k), L->injected_ok[k], L->injected[k]);
        char key[64];
        snprintf(key, sizeof key, "injected_%s", load_fault_name((fault_kind)k));
        vl_kv(key, "%ld", L->injected[k]);
        snprintf(key, sizeof key, "injected_%s_ok", load_fault_name((fault_kind)k));
        vl_kv(key, "%ld", L->injected_ok[k]);
    }
    printf("\n");
    vl_kv("injected", "%ld", planned);
    vl_kv("injected_ok", "%ld", as_expected);
}

/* CPU of another process over the load phase, per chunk and per stream. */
static void print_cpu(const char *who, const char *kvp, double c0, double c1, const kind_stats *s, double wall_s)
{
    if (c0 < 0 || c1 < 0 || s->chunks == 0) {
        printf("  %s CPU: /proc unreadable\n", who);
        return;
    }
    double cpu = c1 - c0, us_chunk = cpu * 1e6 / (double)s->chunks;
    long streams = s->ok + s->failed + s->injected;
    char k[80];
    printf("  %-30s %10.3f s    (%.0f%% of one core; /proc ticks of %.0f ms)\n", who, cpu, 100 * cpu / wall_s,
           1e3 / (double)sysconf(_SC_CLK_TCK));
    printf("  %-30s %10.1f µs   per stream %.2f ms\n", "  per chunk", us_chunk,
           streams ? cpu * 1e3 / (double)streams : 0.0);
    snprintf(k, sizeof k, "%s_cpu_s", kvp);
    vl_kv(k, "%.3f", cpu);
    snprintf(k, sizeof k, "%s_cpu_us_per_chunk", kvp);
    vl_kv(k, "%.1f", us_chunk);
    snprintf(k, sizeof k, "%s_cpu_ms_per_stream", kvp);
    vl_kv(k, "%.3f", streams ? cpu * 1e3 / (double)streams : 0.0);
}

static int load_phase(load *L, stream_kind main_kind)
{
    const options *o = &L->opt;
    double cpu_e0 = o->enclave_pid ? vl_proc_cpu_s(o->enclave_pid) : -1;
    double cpu_p0 = o->proxy_pid ? vl_proc_cpu_s(o->proxy_pid) : -1;
    double cpu_v0 = o->veild_pid ? vl_proc_cpu_s(o->veild_pid) : -1;
    double cpu_s0 = vl_self_cpu_s();
    long tally0 = total_errors(&L->errors);
    L->injecting = true;
    double wall = run_phase(L, o->total, o->streams, false, main_kind, true, o->duration_s);
    L->injecting = false;
    double cpu_e1 = o->enclave_pid ? vl_proc_cpu_s(o->enclave_pid) : -1;
    double cpu_p1 = o->proxy_pid ? vl_proc_cpu_s(o->proxy_pid) : -1;
    double cpu_v1 = o->veild_pid ? vl_proc_cpu_s(o->veild_pid) : -1;
    double cpu_self = vl_self_cpu_s() - cpu_s0;
    kind_stats *s = &L->stats[main_kind];
    vl_sort_ttfc(s);
    double wall_s = wall / 1e3, mean_conc = s->stream_ms_sum / wall;
    long never = o->duration_s ? 0 : o->total - s->started;
    printf("\nLoad: %ld streams%s, %ld at once, %s (wall %.2f s)\n", s->started, o->duration_s ? " in a timed run" : "",
           o->streams, KIND_NAME[main_kind], wall_s);
    printf("  %-30s %ld ok, %ld failed, %ld never started\n", "streams", s->ok, s->failed, never);
    print_injected(L);
    printf("  %-30s %10.1f streams/s\n", "completed", (double)s->ok / wall_s);
    printf("  %-30s %10.0f chunks/s   (%ld chunks, every one %s)\n", "chunk rate", (double)s->chunks / wall_s,
           s->chunks, main_kind == KIND_DIRECT ? "checked" : "decrypted and checked");
    printf("  %-30s %10.1f   (at most %ld)\n", "mean concurrent streams", mean_conc, L->peak_running);
    vl_print_ttfc("time to first chunk", s, "load");
    vl_kv("streams", "%ld", s->started);
    vl_kv("concurrency", "%ld", o->streams);
    vl_kv("wall_s", "%.3f", wall_s);
    vl_kv("streams_ok", "%ld", s->ok);
    vl_kv("streams_failed", "%ld", s->failed);
    vl_kv("chunks", "%ld", s->chunks);
    vl_kv("errors", "%ld", total_errors(&L->errors) - tally0 + never);
    vl_kv("streams_per_s", "%.2f", (double)s->ok / wall_s);
    vl_kv("chunks_per_s", "%.1f", (double)s->chunks / wall_s);
    vl_kv("mean_concurrency", "%.2f", mean_conc);
    vl_kv("peak_concurrency", "%ld", L->peak_running);
    if (o->enclave_pid && main_kind != KIND_DIRECT) {
        print_cpu("enclave CPU time", "enclave", cpu_e0, cpu_e1, s, wall_s);
        if (cpu_e0 >= 0 && cpu_e1 > cpu_e0 && s->chunks > 0) {
            double util = (cpu_e1 - cpu_e0) / wall_s, us_chunk = (cpu_e1 - cpu_e0) * 1e6 / (double)s->chunks;
            printf("  %-30s %10.0f   (mean concurrency / enclave cores used, at this pace)\n", "streams per core",
                   mean_conc / util);
            printf("  %-30s %10.0f   (at %.0f chunks/s per stream, a fast model)\n", "streams per core @50/s",
                   1e6 / (us_chunk * FAST_MODEL_CHUNKS_PER_S), FAST_MODEL_CHUNKS_PER_S);
            vl_kv("streams_per_core", "%.0f", mean_conc / util);
            vl_kv("streams_per_core_at_50cps", "%.0f", 1e6 / (us_chunk * FAST_MODEL_CHUNKS_PER_S));
        }
    }
    if (o->proxy_pid)
        print_cpu("proxy CPU time", "proxy", cpu_p0, cpu_p1, s, wall_s);
    if (o->veild_pid)
        print_cpu("veild CPU time (relaying)", "veild", cpu_v0, cpu_v1, s, wall_s);
    vl_kv("veil_load_cpu_s", "%.3f", cpu_self);
    printf("  %-30s %10.3f s    (this process: %s)\n", "veil-load CPU time", cpu_self,
           main_kind == KIND_DIRECT ? "TLS, SigV4, decoding" : "sealing requests, opening every chunk");
    return s->failed || never ? 1 : 0;
}

static void hold_figures(const char *when, const char *kvp, long pid, long *rss, long *fds)
{
    *rss = vl_proc_rss_kb(pid);
    *fds = vl_proc_fds(pid);
    printf("  %-30s RSS %8.1f MiB, %6ld descriptors\n", when, (double)*rss / 1024.0, *fds);
    char k[64];
    snprintf(k, sizeof k, "hold_veild_rss_kb_%s", kvp);
    vl_kv(k, "%ld", *rss);
    snprintf(k, sizeof k, "hold_veild_fds_%s", kvp);
    vl_kv(k, "%ld", *fds);
}

static void on_hold_end(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    event_base_loopbreak(arg);
}

/* Runs the loop for ms (streams that fail meanwhile are counted). */
static void run_for(load *L, long ms)
{
    struct event *t = evtimer_new(L->base, on_hold_end, L->base);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!t)
        return;
    evtimer_add(t, &tv);
    event_base_dispatch(L->base);
    event_free(t);
}

/* --hold: N streams the simulator holds idle, opened as fast as veild takes them,
 * kept --hold-seconds, then closed by the client. */
static int hold_phase(load *L)
{
    const options *o = &L->opt;
    long pid = o->veild_pid, rss0 = -1, fds0 = -1, rss1 = -1, fds1 = -1, rss2, fds2, rss3, fds3;
    printf("\nHold: %ld streams through veild, each held idle by the simulator (fault=hang), %ld s\n", o->hold,
           o->hold_s);
    if (pid)
        hold_figures("veild before", "before", pid, &rss0, &fds0);
    double cpu0 = pid ? vl_proc_cpu_s(pid) : -1;
    L->holding = true;
    L->held = 0;
    double ramp = run_phase(L, o->hold, o->hold, false, KIND_THROUGH, true, 0);
    long held = L->held;
    kind_stats *s = &L->stats[KIND_THROUGH];
    printf("  %-30s %ld of %ld (in %.1f s); %ld refused or failed\n", "held at once by veild", held, o->hold,
           ramp / 1e3, s->failed);
    vl_kv("hold_requested", "%ld", o->hold);
    vl_kv("hold_held", "%ld", held);
    vl_kv("hold_failed", "%ld", s->failed);
    vl_kv("hold_ramp_s", "%.2f", ramp / 1e3);
    if (pid) {
        hold_figures("veild holding them", "held", pid, &rss1, &fds1);
        double per = held ? (double)(rss1 - rss0) / (double)held : 0;
        printf("  %-30s %8.2f KiB of RSS, %.2f descriptors\n", "veild per held stream", per,
               held ? (double)(fds1 - fds0) / (double)held : 0.0);
        vl_kv("hold_rss_kb_per_stream", "%.2f", per);
        vl_kv("hold_fds_per_stream", "%.2f", held ? (double)(fds1 - fds0) / (double)held : 0.0);
    }
    double cpu1 = pid ? vl_proc_cpu_s(pid) : -1;
    run_for(L, o->hold_s * 1000);
    long still = L->held;
    printf("  %-30s %ld (%ld ended during the hold)\n", "still held at the end", still, held - still);
    vl_kv("hold_dropped", "%ld", held - still);
    if (pid) {
        double idle = vl_proc_cpu_s(pid) - cpu1;
        hold_figures("veild at the hold's end", "end", pid, &rss2, &fds2);
        printf("  %-30s %8.1f ms per second (heartbeats of %ld streams); ramp: %.1f µs per stream\n",
               "veild CPU while holding", o->hold_s ? idle * 1e3 / (double)o->hold_s : 0.0, still,
               held ? (cpu1 - cpu0) * 1e6 / (double)held : 0.0);
    }
    L->counting = false;
    while (!LIST_EMPTY(&L->live)) /* the client goes away: veild cancels each chat */
        vl_stream_end(LIST_FIRST(&L->live), END_OK);
    L->holding = false;
    if (pid) { /* until veild has closed its side (bounded) */
        for (int i = 0; i < HOLD_SETTLE_S * 10 && vl_proc_fds(pid) > fds0 + FD_HEADROOM; i++)
            run_for(L, 100);
        hold_figures("veild after closing them", "after", pid, &rss3, &fds3);
    }
    return s->failed || held < o->hold || still < held ? 1 : 0;
}

static void print_errors(const error_tally *e)
{
    long nerr = total_errors(e);
    printf("\nErrors: %ld", nerr);
    if (nerr)
        printf(" (connect %ld, truncated %ld, protocol %ld, decrypt %ld, wrong content %ld, error events %ld, "
               "HTTP status %ld [429: %ld, 503: %ld], time limit %ld, other %ld)",
               e->connect, e->eof, e->protocol, e->decrypt, e->mismatch, e->error_event, e->http, e->http_429,
               e->http_503, e->timeout, e->other);
    printf("\n");
    static const char *const NAMES[] = {"connect", "truncated", "protocol", "decrypt", "mismatch", "error_event",
                                        "timeout", "other", "http", "http_429", "http_503"};
    const long V[] = {e->connect, e->eof, e->protocol, e->decrypt, e->mismatch, e->error_event,
                      e->timeout, e->other, e->http, e->http_429, e->http_503};
    for (size_t i = 0; i < sizeof V / sizeof V[0]; i++) {
        char k[40];
        snprintf(k, sizeof k, "errors_%s", NAMES[i]);
        vl_kv(k, "%ld", V[i]);
    }
    vl_kv("errors_total", "%ld", nerr);
    for (int i = 0; i < e->n_samples; i++)
        printf("  e.g. %s\n", e->samples[i]);
}

int main(int argc, char **argv)
{
    static load L;
    LIST_INIT(&L.live);
    if (parse_opts(argc, argv, &L.opt) < 0)
        return 2;
    const options *o = &L.opt;
    log_init("veil-load");
    if (!getenv("VEIL_LOG_LEVEL"))
        log_set_level(LOG_WARN); /* the Bedrock client logs every call at info */
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit(o->streams > o->hold ? o->streams : o->hold);
    if (o->kv_file && vl_kv_open(o->kv_file) < 0) {
        fprintf(stderr, "veil-load: %s: %s\n", o->kv_file, strerror(errno));
        return 2;
    }
    L.creds = (sigv4_credentials){o->akid, o->secret_key, o->token};
    L.sim_opts = (bsim_options){.chunks = o->chunks, .chunk_size = o->chunk_size, .interval_ms = o->interval_ms};
    char err[256];
    if (o->enclave && addr_parse(o->enclave, &L.enclave_addr, err, sizeof err) < 0) {
        fprintf(stderr, "veil-load: --enclave: %s\n", err);
        return 2;
    }
    L.base = event_base_new();
    L.deadline = L.base ? evtimer_new(L.base, on_deadline, &L) : NULL;
    if (!L.deadline) {
        fprintf(stderr, "veil-load: cannot create the event loop\n");
        return 1;
    }
    if (o->sim && load_direct_setup(&L) < 0)
        return 1;
    if (o->enclave) {
        if (load_enclave_key(&L) < 0)
            return 1;
        if (o->set_credentials) {
            if (load_enclave_set_credentials(&L) < 0)
                return 1;
            printf("veil-load: credentials set on %s\n", o->enclave);
        }
    }
    if (o->through && load_through_setup(&L, o->users) < 0)
        return 1;
    stream_kind main_kind = o->through ? KIND_THROUGH : o->enclave ? KIND_ENCLAVE : KIND_DIRECT;
    int ref = o->through && o->enclave ? KIND_ENCLAVE : o->sim && main_kind != KIND_DIRECT ? KIND_DIRECT : -1;
    if (!o->through && o->sim && !o->enclave)
        ref = -1;
    int status = 0;

    printf("veil-load%s%s: %ld chunks per answer (chunk-size %ld), %ld ms apart, model %s, stream format %ld\n",
           o->label ? " — " : "", o->label ? o->label : "", o->chunks, o->chunk_size, o->interval_ms, o->model,
           o->stream_format);
    vl_kv("label", "%s", o->label ? o->label : "");
    vl_kv("chunks_per_stream", "%ld", o->chunks);
    vl_kv("interval_ms", "%ld", o->interval_ms);
    vl_kv("stream_format", "%ld", o->stream_format);

    /* 1. the TTFC baseline: two paths in turn, one at a time, after a warm-up pair */
    if (o->baseline > 0 && ref >= 0)
        baseline_phase(&L, main_kind, (stream_kind)ref);
    else if (o->baseline > 0 && o->sim && !o->enclave && !o->through) { /* the simulator alone */
        run_phase(&L, o->baseline, 1, false, KIND_DIRECT, true, 0);
        vl_sort_ttfc(&L.stats[KIND_DIRECT]);
        printf("\nTime to first chunk, one stream at a time\n");
        vl_print_ttfc("direct to the simulator", &L.stats[KIND_DIRECT], "baseline_direct");
        reset_stats(&L);
    }
    /* 2. the load phase */
    if (o->total > 0)
        status |= load_phase(&L, main_kind);
    /* 3. the held streams */
    if (o->hold > 0) {
        reset_stats(&L);
        status |= hold_phase(&L);
    }
    print_errors(&L.errors);
    if (total_errors(&L.errors))
        status = 1;

    reset_stats(&L);
    load_through_free(&L);
    bedrock_client_free(L.bedrock);
    https_pool_free(L.pool);
    https_ctx_free(L.https);
    event_free(L.deadline);
    event_base_free(L.base);
    vl_kv_close();
    return status;
}

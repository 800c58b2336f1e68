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

#include "veil_load.h"

#define MAX_STREAMS 20000
#define MAX_TOTAL 10000000L
#define BASELINE_DEFAULT 20
#define FAST_MODEL_CHUNKS_PER_S 50.0 /* a reference pace for "streams per core" */

const char *const KIND_NAME[N_KINDS] = {"enclave path", "direct to sim"};

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
            "  --baseline N            pairs of (enclave, direct) streams, in turn (default %d)\n\n"
            "Output:\n"
            "  --label TEXT            a name for this run in the report\n"
            "  --kv FILE               also write every figure as key=value lines to FILE\n"
            "  --help                  this text\n\n"
            "Exit status: 0 when every stream completed and checked, 1 otherwise, 2 on bad usage.\n",
            BASELINE_DEFAULT);
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
void vl_stream_end(stream *s, bool ok)
{
    load *L = s->L;
    if (L->counting) {
        kind_stats *st = &L->stats[s->kind];
        st->stream_ms_sum += vl_now_ms() - s->t_start;
        if (ok)
            st->ok++;
        else
            st->failed++;
    }
    L->running--;
    stream_free(s);
    launch_more(L);
}

void vl_stream_fail(stream *s, long *counter, const char *what, const char *detail)
{
    vl_note_error(s->L, counter, "%s stream %ld: %s%s%s", KIND_NAME[s->kind], s->index, what,
               detail ? ": " : "", detail ? detail : "");
    vl_stream_end(s, false);
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

/* ---- launching ---- */

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
    s->kind = L->alternate ? (stream_kind)(s->index % 2) : L->only_kind;
    snprintf(s->echo, sizeof s->echo, "veil-load stream %ld", s->index);
    snprintf(s->prompt, sizeof s->prompt, "[[sim: chunks=%ld chunk-size=%ld interval-ms=%ld fault=none]] %s",
             L->sim_opts.chunks, L->sim_opts.chunk_size, L->sim_opts.interval_ms, s->echo);
    LIST_INSERT_HEAD(&L->live, s, link);
    L->to_start--;
    L->running++;
    if (L->counting)
        L->stats[s->kind].started++;
    if (s->kind == KIND_ENCLAVE)
        load_enclave_start(s);
    else
        load_direct_start(s);
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
        vl_stream_fail(LIST_FIRST(&L->live), &L->errors.timeout, "still running at --time-limit", NULL);
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
    double t0 = vl_now_ms();
    launch_more(L);
    if (L->running > 0 || L->to_start > 0)
        event_base_dispatch(L->base);
    evtimer_del(L->deadline);
    return vl_now_ms() - t0;
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
           O_CHUNKS, O_CHUNK_SIZE, O_INTERVAL, O_BASELINE, O_TIME, O_EPID, O_PPID, O_SETCREDS, O_FORMAT };
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
        case O_STREAMS: target = &o->streams, lo = 1, hi = MAX_STREAMS; break;
        case O_TOTAL: target = &o->total, hi = MAX_TOTAL; break;
        case O_CHUNKS: target = &o->chunks, lo = 1, hi = 100000; break;
        case O_CHUNK_SIZE: target = &o->chunk_size, hi = 65536; break;
        case O_INTERVAL: target = &o->interval_ms, hi = 60000; break;
        case O_BASELINE: target = &o->baseline, hi = 100000; break;
        case O_TIME: target = &o->time_limit_s, lo = 1, hi = 86400; break;
        case O_EPID: target = &o->enclave_pid, lo = 1, hi = 1L << 30; break;
        case O_PPID: target = &o->proxy_pid, lo = 1, hi = 1L << 30; break;
        case O_FORMAT: target = &o->stream_format, lo = 1, hi = 3; break;
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
    if (L.opt.sim && load_direct_setup(&L) < 0)
        return 1;
    if (L.opt.enclave) {
        if (load_enclave_key(&L) < 0)
            return 1;
        if (L.opt.set_credentials) {
            if (load_enclave_set_credentials(&L) < 0)
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
    https_ctx_free(L.https);
    event_free(L.deadline);
    event_base_free(L.base);
    if (g_kv)
        fclose(g_kv);
    return status;
}

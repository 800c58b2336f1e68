/* veil_load — the parts of veil-load (tools/veil_load.c) its stream kinds share:
 * the options, one run's state and figures, one stream, and the scheduler's calls
 * a stream makes when it ends. Internal to the tool.
 *
 * Stream kinds: the enclave protocol straight to veil-enclave (load_enclave.c),
 * the Bedrock client straight to the simulator (load_enclave.c too), and veild's
 * HTTP API with SSE as a real client speaks it (load_through.c, over load_http.c).
 */
#ifndef VEIL_TOOLS_VEIL_LOAD_H
#define VEIL_TOOLS_VEIL_LOAD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "aws/bedrock.h"
#include "bedrock_sim.h"
#include "common/addr.h"
#include "common/buf.h"
#include "crypto/primitives.h"
#include "crypto/stream_v3.h"
#include "net/https.h"

#define DEFAULT_MODEL "us.meta.llama3-1-8b-instruct-v1:0"
#define N_ERROR_SAMPLES 5

typedef enum { KIND_ENCLAVE = 0, KIND_DIRECT = 1, KIND_THROUGH = 2, N_KINDS } stream_kind;
extern const char *const KIND_NAME[N_KINDS];

/* Faults a --through run injects (--faults), each with the end it must have. */
typedef enum fault_kind {
    FAULT_NONE = 0,
    FAULT_DROP,        /* the simulator cuts the stream: the error upstream_truncated's text */
    FAULT_BAD_CRC,     /* a corrupt frame: upstream_corrupt */
    FAULT_THROTTLE,    /* an in-stream throttlingException: upstream_throttled */
    FAULT_MODEL_ERROR, /* an in-stream modelStreamErrorException: upstream_exception */
    FAULT_HTTP_500,    /* Bedrock answers 500: upstream_unavailable */
    FAULT_HTTP_429,    /* Bedrock answers 429: upstream_throttled */
    FAULT_EMPTY,       /* no content at all: empty_answer */
    FAULT_DISCONNECT,  /* the client goes away mid-stream (nothing to check but veild's health) */
    FAULT_MALFORMED,   /* a malformed body: 422 */
    N_FAULTS
} fault_kind;

/* Outcome of a stream. */
typedef enum { END_FAILED = 0, END_OK, END_INJECTED /* ended as its injected fault must */ } end_kind;

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
    /* --through */
    const char *through; /* veild's URL, http://HOST:PORT */
    const char *dev_key; /* the RSA key of `veil dev-token --key` (veild reads its JWKS) */
    const char *issuer;
    long users, per_user;   /* users; a user's streams at once */
    long duration_s;        /* the load phase starts streams for this long (0: --total) */
    long hold, hold_s;      /* --hold N: N idle streams for hold_s seconds */
    long veild_pid;
    long max_connecting;    /* through streams not yet under way, at most */
    long fault_pct[N_FAULTS];
} options;

typedef struct kind_stats {
    double *ttfc_ms; /* one per stream that produced a first chunk */
    size_t n_ttfc, cap_ttfc;
    long started, ok, failed, injected, chunks;
    double stream_ms_sum; /* for the mean concurrency */
} kind_stats;

typedef struct error_tally {
    long connect, eof, protocol, decrypt, mismatch, error_event, timeout, other;
    long http, http_429, http_503; /* --through: an answer other than 200 (and those two among them) */
    char samples[N_ERROR_SAMPLES][200];
    int n_samples;
} error_tally;

struct stream;
struct through;
struct lh_conn;
struct tuser;

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
    long peak_running; /* the most streams at once in this phase */
    long concurrency;
    bool alternate;        /* baseline: alt[0] and alt[1] streams in turn */
    stream_kind alt[2];
    stream_kind only_kind; /* load phase */
    double launch_until;   /* --duration: no stream starts after this (vl_now_ms); 0: none */
    long connecting;       /* through streams not yet under way (load_through.c) */
    bool holding;          /* --hold: a stream is done once veild holds it */
    bool injecting;        /* the load phase: --faults apply */
    long held;
    bool counting;         /* false during the warm-up */
    bool stopping;
    bool launching; /* launch_more is on the stack: a nested call only returns */
    struct event *deadline;
    kind_stats stats[N_KINDS];
    error_tally errors;
    long injected[N_FAULTS], injected_ok[N_FAULTS];
    LIST_HEAD(, stream) live; /* running streams, for the deadline */
    struct through *T;        /* load_through.c's state */
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
    /* through veild */
    fault_kind fault;
    struct tuser *user;
    struct lh_conn *conn;
    vbuf sse;            /* body bytes not yet a whole event (or an error answer's body) */
    int http_status;
    char *error_msg;     /* the SSE error event's text */
    bool head_seen, pending, got_session, got_stored, got_done, held, reused, retried;
} stream;

/* ---- veil_load.c: the scheduler and the figures ---- */

double vl_now_ms(void);
void vl_note_error(load *L, long *counter, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends a stream (frees it); the next one starts. */
void vl_stream_end(stream *s, end_kind how);
/* Counts the error, keeps a sample, ends the stream. */
void vl_stream_fail(stream *s, long *counter, const char *what, const char *detail);
/* A chunk's text arrived: times the first, compares with the simulator's delta i. 0 or -1 (counted). */
int vl_check_chunk(stream *s, const char *text, size_t len);
/* Starts streams while there is room (a through stream's head arrived). */
void vl_launch_more(load *L);

/* ---- load_report.c: figures ---- */

int vl_kv_open(const char *path);
void vl_kv_close(void);
/* key=value to the --kv file (nothing without one). */
void vl_kv(const char *key, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vl_sort_ttfc(kind_stats *s);
/* Nearest-rank percentile of a sorted array; NAN when empty. */
double vl_pct(const double *v, size_t n, double p);
void vl_print_ttfc(const char *what, const kind_stats *s, const char *kvp);
/* /proc/PID: utime + stime in seconds, VmRSS in KiB, open descriptors; -1 if unreadable. */
double vl_proc_cpu_s(long pid);
long vl_proc_rss_kb(long pid);
long vl_proc_fds(long pid);
double vl_self_cpu_s(void);

/* ---- load_enclave.c: the enclave protocol, and the simulator directly ---- */

/* GET_PUBLIC_KEY into L->enclave_pub; SET_CREDENTIALS with L->creds. 0 or -1 (said on stderr). */
int load_enclave_key(load *L);
int load_enclave_set_credentials(load *L);
/* Starts a CHAT_STREAM to the enclave: the request is sealed first (not timed). */
void load_enclave_start(stream *s);
/* The Bedrock client for the direct streams. 0 or -1 (said on stderr). */
int load_direct_setup(load *L);
void load_direct_start(stream *s);

/* ---- load_through.c and load_users.c: veild over HTTP/1.1 and SSE ---- */

/* Parses a --faults list ("drop:2,disconnect:3"); 0 or -1 with err. */
int load_faults_parse(const char *spec, long pct[N_FAULTS], char *err, size_t errlen);
const char *load_fault_name(fault_kind f);
/* Dev tokens, then each user: /users/sync, /users/me/keys, a session; the enclave
 * key from /enclave/info. users: how many. 0 or -1 (said on stderr). */
int load_through_setup(load *L, long users);
void load_through_start(stream *s);
/* Stream slots free now (a through stream starts only on one). */
long load_through_free_slots(const load *L);
/* Frees what a through stream holds; its connection goes back to its user when it
 * may carry another request (the response ended), its slot to the ring. */
void load_through_release(stream *s);
void load_through_free(load *L);

#endif

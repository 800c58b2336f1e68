/* veil_load — the parts of veil-load (tools/veil_load.c) its stream kinds share:
 * the options, one run's state and figures, one stream, and the scheduler's calls
 * a stream makes when it ends. Internal to the tool.
 *
 * Stream kinds: the enclave protocol straight to veil-enclave (load_enclave.c),
 * the Bedrock client straight to the simulator (load_enclave.c too).
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

typedef enum { KIND_ENCLAVE = 0, KIND_DIRECT = 1, N_KINDS } stream_kind;
extern const char *const KIND_NAME[N_KINDS];

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
} options;

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

struct stream;

typedef struct load {
    options opt;
    struct event_base *base;
    veil_addr enclave_addr;
    uint8_t enclave_pub[X25519_KEY_LEN];
    https_ctx *https;
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

/* ---- veil_load.c: the scheduler and the figures ---- */

double vl_now_ms(void);
void vl_note_error(load *L, long *counter, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Ends a stream (frees it), ok or not; the next one starts. */
void vl_stream_end(stream *s, bool ok);
/* Counts the error, keeps a sample, ends the stream. */
void vl_stream_fail(stream *s, long *counter, const char *what, const char *detail);
/* A chunk's text arrived: times the first, compares with the simulator's delta i. 0 or -1 (counted). */
int vl_check_chunk(stream *s, const char *text, size_t len);

/* ---- load_enclave.c: the enclave protocol, and the simulator directly ---- */

/* GET_PUBLIC_KEY into L->enclave_pub; SET_CREDENTIALS with L->creds. 0 or -1 (said on stderr). */
int load_enclave_key(load *L);
int load_enclave_set_credentials(load *L);
/* Starts a CHAT_STREAM to the enclave: the request is sealed first (not timed). */
void load_enclave_start(stream *s);
/* The Bedrock client for the direct streams. 0 or -1 (said on stderr). */
int load_direct_setup(load *L);
void load_direct_start(stream *s);

#endif

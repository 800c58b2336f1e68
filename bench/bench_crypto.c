/* bench_crypto — what one streamed chunk costs on this machine (design.md,
 * "Performance model").
 *
 * Every chunk of the wire protocol is sealed on its own: a fresh X25519 key pair,
 * X25519, HKDF-SHA512 and AES-256-GCM. Those four are the floor. This program
 * times each of them, then the whole enclave-side work per chunk (ep_seal plus the
 * `{"encrypted_content":...}` line, as the enclave builds it), and prints the ratio
 * of the two: what veil adds beyond the cryptographic floor. Also the client side
 * (ep_open) and the Argon2id key unwrap with the real parameters.
 *
 * Figures only, no pass/fail. Each row is the median of RUNS timed runs after a
 * warm-up run, wall clock (CLOCK_MONOTONIC); min and max show the spread. Other
 * work on the machine shows up as spread; the ratios are measured in one run.
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "crypto/ep.h"
#include "crypto/stream_v3.h"
#include "enclave/protocol.h"
#include "crypto/keywrap.h"
#include "crypto/primitives.h"

#define RUNS 21               /* timed rounds per row; the median is reported */
#define RUN_TARGET_NS 10e6    /* each row runs about this long per round (10 ms) */
#define DELTA_LEN 40          /* a typical streamed text delta, in bytes */
#define ARGON2_RUNS 2         /* t=4, m=128 MiB, p=2 costs about a second */
#define BENCH_PASSCODE "correct horse battery staple"

/* A typical 40-byte delta of model output. */
static const char DELTA[DELTA_LEN + 1] = " the enclave seals every chunk on its own";

/* ---- stream format 2, the baseline ----
 * Format 3 replaced format 2 (issue I) and veil no longer speaks it; the goal for
 * format 3 is "per chunk within 10% of format 2", so format 2's enclave work is kept
 * here, as it was: one agreement per stream (HKDF-SHA512 info
 * "enclave-to-client-stream-v2"), and per chunk AES-256-GCM with IV = 8 zero bytes
 * || be64(seq), AAD = "veil-stream-v2" || be64(seq) || kind, and its JSON line. */
#define V2_CONTEXT "enclave-to-client-stream-v2"
#define V2_LABEL "veil-stream-v2"

typedef struct v2_stream {
    uint8_t key[AES256_KEY_LEN];
    uint64_t seq;
} v2_stream;

static int v2_init_sender(v2_stream *s, const uint8_t client_pub[X25519_KEY_LEN], uint8_t epk[X25519_KEY_LEN],
                          uint8_t salt[HKDF_SALT_LEN])
{
    uint8_t ss[X25519_KEY_LEN];
    x25519_key *eph = x25519_key_generate(epk);
    int rc = eph && random_bytes(salt, HKDF_SALT_LEN) == 0 && x25519_key_shared(eph, client_pub, ss) == 0 &&
                     hkdf_sha512(ss, sizeof ss, salt, HKDF_SALT_LEN, (const uint8_t *)V2_CONTEXT,
                                 sizeof V2_CONTEXT - 1, s->key, sizeof s->key) == 0
                 ? 0
                 : -1;
    x25519_key_free(eph);
    OPENSSL_cleanse(ss, sizeof ss);
    s->seq = 0;
    return rc;
}

static int v2_seal_line(v2_stream *s, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN],
                        vbuf *line)
{
    uint8_t iv[GCM_IV_LEN] = {0}, aad[sizeof V2_LABEL - 1 + 9];
    for (int i = 0; i < 8; i++)
        iv[8 + i] = (uint8_t)(s->seq >> (56 - 8 * i));
    memcpy(aad, V2_LABEL, sizeof V2_LABEL - 1);
    memcpy(aad + sizeof V2_LABEL - 1, iv + 8, 8);
    aad[sizeof aad - 1] = 0; /* text */
    if (aesgcm_encrypt(s->key, iv, aad, sizeof aad, pt, len, ct, tag) < 0)
        return -1;
    int rc = vbuf_printf(line, "{\"encrypted_content_v2\":{\"seq\":%llu,\"ciphertext\":\"",
                         (unsigned long long)s->seq++) < 0 ||
                     vbuf_append_hex(line, ct, len) < 0 || vbuf_append_str(line, "\",\"auth_tag\":\"") < 0 ||
                     vbuf_append_hex(line, tag, GCM_TAG_LEN) < 0 || vbuf_append_str(line, "\"}}") < 0
                 ? -1
                 : 0;
    return rc;
}

typedef struct fixture {
    uint8_t priv[X25519_KEY_LEN], pub[X25519_KEY_LEN];   /* the client's transport key */
    uint8_t epriv[X25519_KEY_LEN], epub[X25519_KEY_LEN]; /* an ephemeral key */
    uint8_t shared[X25519_KEY_LEN];
    uint8_t salt[HKDF_SALT_LEN], iv[GCM_IV_LEN], key[AES256_KEY_LEN];
    ep sealed;    /* DELTA sealed to pub */
    vbuf line;    /* reused output buffer */
    char *json;   /* sealed as JSON text, for the client-side parse */
    size_t json_len;
    EVP_PKEY *peer;         /* pub, parsed once (reference rows only) */
    EVP_PKEY *eph;          /* an ephemeral private key, parsed once (reference rows only) */
    x25519_key *tkey;       /* the client's transport key, held as the client holds it */
    x25519_key *ekey;       /* the latest ephemeral key */
    v2_stream stream;       /* a format 2 stream (the baseline), sender side */
    sv3 stream3;            /* a format 3 stream, sender side */
    x25519_key *enclave;    /* format 3: the attested enclave key */
    uint8_t request_hash[SV3_HASH_LEN];
    volatile unsigned sink; /* keeps results observable */
} fixture;

typedef int (*bench_fn)(fixture *f);

typedef struct result {
    double med_us, min_us, max_us;
} result;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- the operations ---- */

/* an ephemeral key pair, as ep_seal makes it: one scalar multiplication */
static int op_keygen(fixture *f)
{
    x25519_key_free(f->ekey);
    f->ekey = x25519_key_generate(f->epub);
    return f->ekey ? 0 : -1;
}

/* the agreement with a held key: one scalar multiplication */
static int op_shared(fixture *f)
{
    return x25519_key_shared(f->ekey, f->pub, f->shared);
}

static int op_hkdf(fixture *f)
{
    return hkdf_sha512(f->shared, sizeof f->shared, f->salt, sizeof f->salt,
                       (const uint8_t *)EP_CTX_ENCLAVE_TO_CLIENT, strlen(EP_CTX_ENCLAVE_TO_CLIENT),
                       f->key, sizeof f->key);
}

static int op_gcm(fixture *f)
{
    uint8_t ct[DELTA_LEN], tag[GCM_TAG_LEN];
    int rc = aesgcm_encrypt(f->key, f->iv, NULL, 0, (const uint8_t *)DELTA, DELTA_LEN, ct, tag);
    f->sink += tag[0];
    return rc;
}

static int op_seal(fixture *f)
{
    ep e;
    if (ep_seal(f->pub, (const uint8_t *)DELTA, DELTA_LEN, EP_CTX_ENCLAVE_TO_CLIENT, &e) != EP_OK)
        return -1;
    f->sink += e.tag[0];
    ep_clear(&e);
    return 0;
}

static int op_write_json(fixture *f)
{
    vbuf_reset(&f->line);
    return ep_write_json(&f->sealed, &f->line);
}

/* The enclave's per-chunk work, as its emit_sealed does it: seal, then the line. */
static int op_chunk(fixture *f)
{
    ep e;
    vbuf_reset(&f->line);
    if (vbuf_printf(&f->line, "{\"%s\":", "encrypted_content") < 0)
        return -1;
    if (ep_seal(f->pub, (const uint8_t *)DELTA, DELTA_LEN, EP_CTX_ENCLAVE_TO_CLIENT, &e) != EP_OK)
        return -1;
    int rc = ep_write_json(&e, &f->line);
    ep_clear(&e);
    if (rc < 0 || vbuf_append(&f->line, "}", 1) < 0)
        return -1;
    f->sink += f->line.data[f->line.len / 2];
    return 0;
}

/* Stream format 2: the enclave's per-chunk work is a GCM seal and its JSON line. */
static int op_chunk_v2(fixture *f)
{
    uint8_t ct[DELTA_LEN], tag[GCM_TAG_LEN];
    vbuf_reset(&f->line);
    if (v2_seal_line(&f->stream, (const uint8_t *)DELTA, DELTA_LEN, ct, tag, &f->line) < 0)
        return -1;
    f->sink += f->line.data[f->line.len / 2];
    return 0;
}

/* Stream format 3: the same per chunk (the element differs in its labels only). */
static int op_chunk_v3(fixture *f)
{
    uint8_t ct[DELTA_LEN], tag[GCM_TAG_LEN];
    vbuf_reset(&f->line);
    uint64_t seq = f->stream3.seq;
    if (sv3_seal(&f->stream3, SV3_TEXT, (const uint8_t *)DELTA, DELTA_LEN, ct, tag) < 0 ||
        proto_write_element(&f->line, false, seq, ct, sizeof ct, tag) < 0)
        return -1;
    f->sink += f->line.data[f->line.len / 2];
    return 0;
}

/* Per stream: format 2 makes one agreement, format 3 two (the stream key's and the
 * attested key's) and hashes the request. */
static int op_setup_v2(fixture *f)
{
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    v2_stream s;
    int rc = v2_init_sender(&s, f->pub, epk, salt);
    f->sink += epk[0];
    OPENSSL_cleanse(&s, sizeof s);
    return rc;
}

static int op_setup_v3(fixture *f)
{
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    sv3 s;
    sv3_ep_hash(&f->sealed, f->request_hash);
    int rc = sv3_init_sender(&s, f->enclave, f->pub, f->request_hash, epk, salt);
    f->sink += epk[0];
    sv3_wipe(&s);
    return rc;
}

static int op_open(fixture *f)
{
    secret pt;
    if (ep_open_key(f->tkey, &f->sealed, EP_CTX_ENCLAVE_TO_CLIENT, &pt) != EP_OK)
        return -1;
    f->sink += pt.data[0];
    secret_free(&pt);
    return 0;
}

/* The client's per-chunk work: parse the EP's JSON, then open it. */
static int op_client_chunk(fixture *f)
{
    ep e;
    if (ep_parse(f->json, f->json_len, &e, NULL) != EP_OK)
        return -1;
    secret pt;
    ep_err er = ep_open_key(f->tkey, &e, EP_CTX_ENCLAVE_TO_CLIENT, &pt);
    ep_clear(&e);
    if (er != EP_OK)
        return -1;
    f->sink += pt.data[0];
    secret_free(&pt);
    return 0;
}

/* The floor as the brief defines it, through our primitives, in one call. */
static int op_floor(fixture *f)
{
    if (op_keygen(f) < 0 || op_shared(f) < 0 || op_hkdf(f) < 0)
        return -1;
    return op_gcm(f);
}

/* Reference: one X25519 scalar multiplication through OpenSSL, both keys already
 * parsed into EVP_PKEYs. */
static int derive_raw(fixture *f, EVP_PKEY *me)
{
    size_t len = sizeof f->shared;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, me, NULL);
    int ok = ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer_ex(ctx, f->peer, 0) == 1 &&
             EVP_PKEY_derive(ctx, f->shared, &len) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok ? 0 : -1;
}

static int op_mult(fixture *f)
{
    return derive_raw(f, f->eph);
}

/* Reference: a seal that does the two scalar multiplications the protocol needs
 * (the ephemeral public key, then the shared secret) and no more. */
static int op_ideal_seal(fixture *f)
{
    uint8_t epk[X25519_KEY_LEN];
    size_t len = sizeof epk;
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    int rc = k && EVP_PKEY_get_raw_public_key(k, epk, &len) == 1 && derive_raw(f, k) == 0 &&
                     random_bytes(f->salt, sizeof f->salt) == 0 && random_bytes(f->iv, sizeof f->iv) == 0 &&
                     op_hkdf(f) == 0 && op_gcm(f) == 0
                 ? 0
                 : -1;
    EVP_PKEY_free(k);
    f->sink += epk[0];
    return rc;
}

/* ---- timing ---- */

static double time_iters(bench_fn fn, fixture *f, long iters, int *failed)
{
    double t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        if (fn(f) != 0)
            *failed = 1;
    }
    return now_ns() - t0;
}

/* Iterations that make one run last about RUN_TARGET_NS; also a first warm-up. */
static long calibrate(bench_fn fn, fixture *f, int *failed)
{
    long iters = 1;
    double t;
    while ((t = time_iters(fn, f, iters, failed)) < RUN_TARGET_NS / 8 && iters < (1L << 24))
        iters *= 2;
    iters = (long)((double)iters * RUN_TARGET_NS / (t > 1 ? t : 1));
    return iters < 1 ? 1 : iters;
}

/* Times every row in each of RUNS rounds, the rows interleaved within a round, so
 * that a burst of load elsewhere hits all rows alike and the per-round ratios
 * stay meaningful. us[row][run] receives µs per op. */
static int measure_all(const bench_fn *fns, size_t n, fixture *f, double (*us)[RUNS])
{
    int failed = 0;
    long iters[16];
    if (n > 16)
        return -1;
    for (size_t i = 0; i < n; i++) {
        iters[i] = calibrate(fns[i], f, &failed);
        time_iters(fns[i], f, iters[i], &failed); /* warm-up */
    }
    for (int r = 0; r < RUNS; r++)
        for (size_t i = 0; i < n; i++)
            us[i][r] = time_iters(fns[i], f, iters[i], &failed) / 1e3 / (double)iters[i];
    return failed ? -1 : 0;
}

/* For the ratios: the rows of `which` run op by op in turn (a, b, c, a, b, c, ...),
 * each op timed on its own, so that load elsewhere on the machine falls on all of
 * them alike. Only for rows of tens of µs, where a clock read is noise. us[k][r]
 * receives the mean µs per op of row which[k] in round r. */
#define PAIRED_ITERS 40
static int measure_interleaved(const bench_fn *fns, const int *which, size_t n, fixture *f,
                               double (*us)[RUNS])
{
    int failed = 0;
    for (size_t k = 0; k < n; k++)
        time_iters(fns[which[k]], f, PAIRED_ITERS, &failed); /* warm-up */
    for (int r = 0; r < RUNS; r++) {
        for (size_t k = 0; k < n; k++)
            us[k][r] = 0;
        for (int i = 0; i < PAIRED_ITERS; i++) {
            for (size_t k = 0; k < n; k++) {
                double t0 = now_ns();
                if (fns[which[k]](f) != 0)
                    failed = 1;
                us[k][r] += (now_ns() - t0) / 1e3 / PAIRED_ITERS;
            }
        }
    }
    return failed ? -1 : 0;
}

static result summarise(const double *runs)
{
    double s[RUNS];
    memcpy(s, runs, sizeof s);
    qsort(s, RUNS, sizeof s[0], cmp_double);
    return (result){s[RUNS / 2], s[0], s[RUNS - 1]};
}

/* Median over the rounds of a[r] / b[r]. */
static double median_ratio(const double *a, const double *b)
{
    double q[RUNS];
    for (int r = 0; r < RUNS; r++)
        q[r] = a[r] / b[r];
    qsort(q, RUNS, sizeof q[0], cmp_double);
    return q[RUNS / 2];
}

static void print_header(void)
{
    printf("  %-44s %10s %12s %21s\n", "operation", "µs/op", "ops/s", "spread µs (min-max)");
}

static void print_row(const char *name, const result *r)
{
    printf("  %-44s %10.2f %12.0f %10.2f-%-10.2f\n", name, r->med_us, 1e6 / r->med_us, r->min_us,
           r->max_us);
}

static int setup(fixture *f)
{
    memset(f, 0, sizeof *f);
    if (x25519_keygen(f->priv, f->pub) < 0 || !(f->tkey = x25519_key_new(f->priv)) || op_keygen(f) < 0 ||
        op_shared(f) < 0 || random_bytes(f->salt, sizeof f->salt) < 0 ||
        random_bytes(f->iv, sizeof f->iv) < 0 || op_hkdf(f) < 0)
        return -1;
    if (ep_seal(f->pub, (const uint8_t *)DELTA, DELTA_LEN, EP_CTX_ENCLAVE_TO_CLIENT, &f->sealed) != EP_OK)
        return -1;
    uint8_t epk[X25519_KEY_LEN], salt[HKDF_SALT_LEN];
    uint8_t enclave_pub[X25519_KEY_LEN];
    if (v2_init_sender(&f->stream, f->pub, epk, salt) < 0 || !(f->enclave = x25519_key_generate(enclave_pub)) ||
        sv3_init_sender(&f->stream3, f->enclave, f->pub, f->request_hash, epk, salt) < 0)
        return -1;
    vbuf j = VBUF_INIT;
    if (ep_write_json(&f->sealed, &j) < 0 || !vbuf_cstr(&j)) {
        vbuf_free(&j);
        return -1;
    }
    f->json = (char *)j.data; /* now owned by the fixture */
    f->json_len = j.len;
    f->peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, f->pub, sizeof f->pub);
    f->eph = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, f->epriv, sizeof f->epriv);
    return f->peer && f->eph ? 0 : -1;
}

static void teardown(fixture *f)
{
    ep_clear(&f->sealed);
    vbuf_free(&f->line);
    free(f->json);
    EVP_PKEY_free(f->peer);
    EVP_PKEY_free(f->eph);
    x25519_key_free(f->tkey);
    x25519_key_free(f->ekey);
    sv3_wipe(&f->stream3);
    x25519_key_free(f->enclave);
    secure_wipe(f, sizeof *f);
}

/* Argon2id unwrap with the original's parameters: one wrap, then ARGON2_RUNS unwraps. */
static int bench_argon2(void)
{
    uint8_t priv[X25519_KEY_LEN], pub[X25519_KEY_LEN], back[X25519_KEY_LEN];
    kw_blob blob;
    kw_params p = KW_PARAMS_DEFAULT;
    if (x25519_keygen(priv, pub) < 0)
        return -1;
    double t0 = now_ns();
    kw_err e = kw_wrap(priv, BENCH_PASSCODE, &p, &blob);
    double wrap_ms = (now_ns() - t0) / 1e6;
    if (e != KW_OK) {
        fprintf(stderr, "bench_crypto: kw_wrap: %s\n", kw_strerror(e));
        return -1;
    }
    double best = 0, sum = 0;
    for (int i = 0; i < ARGON2_RUNS; i++) {
        t0 = now_ns();
        e = kw_unwrap(&blob, BENCH_PASSCODE, back);
        double ms = (now_ns() - t0) / 1e6;
        if (e != KW_OK || !ct_equal(back, priv, sizeof priv)) {
            fprintf(stderr, "bench_crypto: kw_unwrap: %s\n", kw_strerror(e));
            return -1;
        }
        sum += ms;
        best = (i == 0 || ms < best) ? ms : best;
    }
    secure_wipe(priv, sizeof priv);
    secure_wipe(back, sizeof back);
    printf("\nClient key unwrap: Argon2id v1.3, t=%u, m=%u MiB, p=%u, then AES-256-GCM\n", p.t_cost,
           p.m_cost_kib / 1024, p.parallelism);
    printf("  %-44s %10.1f ms  (best %.1f ms of %d; wrap took %.1f ms)\n", "kw_unwrap (passcode -> private key)",
           sum / ARGON2_RUNS, best, ARGON2_RUNS, wrap_ms);
    return 0;
}

int main(int argc, char **argv)
{
    bool skip_argon2 = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-argon2") == 0) {
            skip_argon2 = true;
        } else if (strcmp(argv[i], "--help") == 0) {
            printf("Usage: bench_crypto [--no-argon2]\n\n"
                   "Prints the per-chunk cost of the wire protocol on this machine: each\n"
                   "primitive, the whole enclave-side chunk (ep_seal + its JSON line), the\n"
                   "ratio to the cryptographic floor, the client's ep_open, and the Argon2id\n"
                   "key unwrap with the real parameters (skipped with --no-argon2).\n");
            return 0;
        } else {
            fprintf(stderr, "bench_crypto: unknown argument '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    fixture f;
    if (setup(&f) < 0) {
        fprintf(stderr, "bench_crypto: setup failed\n");
        return 1;
    }
    enum { KEYGEN, SHARED, HKDF, GCM, SEAL, WRITE_JSON, CHUNK, CHUNK_V2, CHUNK_V3, SETUP_V2, SETUP_V3, OPEN,
           CLIENT_CHUNK, FLOOR, MULT, IDEAL, N_ROWS };
    static const char *const names[N_ROWS] = {
        [KEYGEN] = "x25519_keygen (ephemeral key pair)",
        [SHARED] = "x25519_key_shared (held key)",
        [HKDF] = "hkdf_sha512 (32-byte output)",
        [GCM] = "aesgcm_encrypt (40-byte delta)",
        [SEAL] = "ep_seal (40-byte delta)",
        [WRITE_JSON] = "ep_write_json (that EP)",
        [CHUNK] = "per-chunk enclave work (seal + JSON line)",
        [CHUNK_V2] = "same in stream format 2 (GCM + JSON line)",
        [CHUNK_V3] = "same in stream format 3 (GCM + JSON line)",
        [SETUP_V2] = "per stream, format 2 (1 agreement + HKDF)",
        [SETUP_V3] = "per stream, format 3 (2 agreements + HKDF)",
        [OPEN] = "ep_open_key (client side, held key)",
        [CLIENT_CHUNK] = "per-chunk client work (ep_parse + ep_open_key)",
        [FLOOR] = "floor: keygen+shared+HKDF+GCM in one call",
        [MULT] = "ref: one X25519 scalar mult (OpenSSL)",
        [IDEAL] = "ref: seal with 2 scalar mults (OpenSSL)",
    };
    static const bench_fn fns[N_ROWS] = {
        [KEYGEN] = op_keygen, [SHARED] = op_shared, [HKDF] = op_hkdf, [GCM] = op_gcm,
        [SEAL] = op_seal, [WRITE_JSON] = op_write_json, [CHUNK] = op_chunk, [CHUNK_V2] = op_chunk_v2,
        [CHUNK_V3] = op_chunk_v3, [SETUP_V2] = op_setup_v2, [SETUP_V3] = op_setup_v3,
        [OPEN] = op_open,
        [CLIENT_CHUNK] = op_client_chunk, [FLOOR] = op_floor, [MULT] = op_mult, [IDEAL] = op_ideal_seal,
    };
    static double us[N_ROWS][RUNS];
    result res[N_ROWS];

    printf("bench_crypto: the per-chunk cost of the wire protocol (%d rounds of ~%.0f ms per row after\n"
           "a warm-up, rows interleaved within each round; median and spread; CLOCK_MONOTONIC)\n\n",
           RUNS, RUN_TARGET_NS / 1e6);
    fflush(stdout);
    int rc = 0;
    if (measure_all(fns, N_ROWS, &f, us) < 0) {
        fprintf(stderr, "bench_crypto: an operation failed\n");
        rc = 1;
    }
    print_header();
    for (size_t i = 0; i < N_ROWS; i++) {
        res[i] = summarise(us[i]);
        print_row(names[i], &res[i]);
    }
    double sum_us = res[KEYGEN].med_us + res[SHARED].med_us + res[HKDF].med_us + res[GCM].med_us;
    /* the ratios come from a second, op-by-op interleaved measurement */
    static const int which[] = {CHUNK, FLOOR, IDEAL, MULT};
    enum { P_CHUNK, P_FLOOR, P_IDEAL, P_MULT, N_P };
    static double pus[N_P][RUNS];
    if (measure_interleaved(fns, which, N_P, &f, pus) < 0)
        rc = 1;
    double ratio = median_ratio(pus[P_CHUNK], pus[P_FLOOR]);
    double ratio_ideal = median_ratio(pus[P_CHUNK], pus[P_IDEAL]);
    double mults = median_ratio(pus[P_FLOOR], pus[P_MULT]);
    printf("\nPer chunk (ratios: chunk, floor and references timed op by op in turn, %d rounds\n"
           "of %d; the median of the per-round ratios)\n", RUNS, PAIRED_ITERS);
    result pfloor = summarise(pus[P_FLOOR]), pchunk = summarise(pus[P_CHUNK]);
    printf("  %-44s %10.2f µs  (best round %.2f; sum of the four rows above: %.2f)\n",
           "cryptographic floor (keygen+shared+HKDF+GCM)", pfloor.med_us, pfloor.min_us, sum_us);
    printf("  %-44s %10.2f µs  (best round %.2f)\n", "full per-chunk enclave work", pchunk.med_us,
           pchunk.min_us);
    printf("  %-44s %10.3f   (veil's own overhead: %+.1f%%)\n", "ratio full per-chunk / floor", ratio,
           100.0 * (ratio - 1.0));
    printf("  %-44s %10.1f   (X25519 scalar mults per floor)\n", "floor / one scalar mult", mults);
    printf("  %-44s %10.3f   (against a seal doing only the 2 mults it needs)\n",
           "ratio full per-chunk / 2-mult seal", ratio_ideal);
    printf("  %-44s %10.0f chunks/s per core\n", "enclave sealing bound", 1e6 / pchunk.med_us);
    printf("  (design.md puts the floor at about 81 µs: two X25519 scalar mults per seal. Keys\n"
           "   are held as x25519_key, so OpenSSL derives a public key once per key, not per use.)\n");
    /* format 3 against format 2, op by op in turn: per chunk, and per stream of 100 chunks */
    static const int w3[] = {CHUNK_V2, CHUNK_V3, SETUP_V2, SETUP_V3};
    static double p3[4][RUNS];
    if (measure_interleaved(fns, w3, 4, &f, p3) < 0)
        rc = 1;
    result c2 = summarise(p3[0]), c3 = summarise(p3[1]), s2 = summarise(p3[2]), s3 = summarise(p3[3]);
    printf("\nStream format 3 against format 2 (timed op by op in turn)\n");
    printf("  %-44s %10.3f   (%.2f µs against %.2f µs; goal: within 10%%)\n", "per chunk, format 3 / format 2",
           median_ratio(p3[1], p3[0]), c3.med_us, c2.med_us);
    printf("  %-44s %10.3f   (%.1f µs against %.1f µs per stream)\n", "stream setup, format 3 / format 2",
           median_ratio(p3[3], p3[2]), s3.med_us, s2.med_us);
    printf("  %-44s %10.3f   (setup + 100 chunks)\n", "a 100-chunk answer, format 3 / format 2",
           (s3.med_us + 100 * c3.med_us) / (s2.med_us + 100 * c2.med_us));

    teardown(&f);
    if (!skip_argon2 && bench_argon2() < 0)
        rc = 1;
    return rc;
}

/* The enclave core's failure paths after Bedrock was asked (issue F0): the core runs
 * in-process on this test's loop against veil-proxy + veil-bedrock-sim, and seals are
 * made to fail on purpose (the linker wraps ep_seal, sv3_seal and sv3_init_sender for
 * this program only). Each failure must end the request with exactly one error event
 * and one done, store nothing, cancel the upstream call (the simulator sees the client
 * go away before its answer is complete), and never touch freed memory: this file runs
 * under AddressSanitizer in CI. The same holds when the sink itself stops a request
 * (by its return value or by enclave_req_cancel inside the call), and a paused request
 * delivers nothing until it is resumed.
 * With ENCLAVE_WORKERS=2 (ctest's test_enclave_faults_w2) two cores share one estate,
 * as veil-enclave's workers do (here on one loop): the credentials are set through
 * the first, and the requests go to each in turn. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "common/addr.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "crypto/stream_v3.h"
#include "enclave/protocol.h"
#include "enclave/enclave.h"
#include "harness.h"

#define HOST "bedrock-runtime.us-east-1.amazonaws.com"
#define MODEL "us.meta.llama3-1-8b-instruct-v1:0"
#define AKID "AKIDFAULTTEST"
#define SECRET "fault-test-secret"
#define TOKEN "fault-test-token"

/* ---- seal fault injection (-Wl,--wrap=...) ---- */

ep_err __real_ep_seal(const uint8_t pub[X25519_KEY_LEN], const uint8_t *pt, size_t len, const char *ctx, ep *out);
int __real_sv3_seal(sv3 *s, sv3_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN]);
int __real_sv3_init_sender(sv3 *s, const x25519_key *enclave, const uint8_t client_pub[X25519_KEY_LEN],
                           const uint8_t request_hash[SV3_HASH_LEN], uint8_t epk[X25519_KEY_LEN],
                           uint8_t salt[HKDF_SALT_LEN]);

/* fail the Nth call from now (1-based); 0 = never */
static struct {
    int ep_seal_fail_at, sv3_seal_fail_at, sv3_init_fail_at;
    int ep_seal_calls, sv3_seal_calls, sv3_init_calls;
} F;

static bool trip(int *calls, int at)
{
    return at > 0 && ++*calls == at;
}

ep_err __wrap_ep_seal(const uint8_t pub[X25519_KEY_LEN], const uint8_t *pt, size_t len, const char *ctx, ep *out)
{
    if (trip(&F.ep_seal_calls, F.ep_seal_fail_at))
        return EP_ERR_CRYPTO;
    return __real_ep_seal(pub, pt, len, ctx, out);
}

int __wrap_sv3_seal(sv3 *s, sv3_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN])
{
    if (trip(&F.sv3_seal_calls, F.sv3_seal_fail_at))
        return -1;
    return __real_sv3_seal(s, kind, pt, len, ct, tag);
}

int __wrap_sv3_init_sender(sv3 *s, const x25519_key *enclave, const uint8_t client_pub[X25519_KEY_LEN],
                           const uint8_t request_hash[SV3_HASH_LEN], uint8_t epk[X25519_KEY_LEN],
                           uint8_t salt[HKDF_SALT_LEN])
{
    if (trip(&F.sv3_init_calls, F.sv3_init_fail_at))
        return -1;
    return __real_sv3_init_sender(s, enclave, client_pub, request_hash, epk, salt);
}

/* ---- the stack: simulator and proxy as processes, the core on our loop ---- */

static struct {
    proc sim, proxy;
    char ca[600], cert[600], key[600], proxy_spec[600], host[256];
    uint16_t port;
    veil_addr proxy_addr;
    struct event_base *base;
    estate *st;             /* with two cores: what they share */
    enclave_core *cores[2];
    unsigned n_cores, turn;
    enclave_core *core;     /* the first */
} G;

/* The core the next request goes to: each in turn. */
static enclave_core *next_core(void)
{
    return G.cores[G.turn++ % G.n_cores];
}

/* Every core's running requests. */
static unsigned active_streams(void)
{
    unsigned n = 0;
    for (unsigned i = 0; i < G.n_cores; i++)
        n += enclave_active_streams(G.cores[i]);
    return n;
}

static int setup(void **state)
{
    (void)state;
    char cmd[1024], dir[400], err[256];
    snprintf(dir, sizeof dir, "%s/ca", h_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s %s", h_src("scripts/make-test-ca"), dir, HOST);
    if (system(cmd) != 0)
        return -1;
    snprintf(G.ca, sizeof G.ca, "%s/ca.pem", dir);
    snprintf(G.cert, sizeof G.cert, "%s/server.pem", dir);
    snprintf(G.key, sizeof G.key, "%s/server.key", dir);
    const char *sim_argv[] = {h_bin("veil-bedrock-sim"), "--listen", "tcp:127.0.0.1:0", "--cert", G.cert,
                              "--key", G.key, "--access-key-id", AKID, "--secret-access-key", SECRET,
                              "--session-token", TOKEN, NULL};
    if (proc_start(&G.sim, "bedrock-sim", sim_argv, NULL) < 0 || proc_wait_listening(&G.sim, 10000) < 0)
        return -1;
    G.port = (uint16_t)atoi(strrchr(G.sim.addr, ':') + 1);
    char allow[300], resolve[300];
    snprintf(allow, sizeof allow, "%s:%u", HOST, G.port);
    snprintf(resolve, sizeof resolve, "%s:%u:127.0.0.1", HOST, G.port);
    snprintf(G.proxy_spec, sizeof G.proxy_spec, "unix:%s", h_path("proxy", ".sock"));
    const char *px_argv[] = {h_bin("veil-proxy"), "--listen", G.proxy_spec, "--allow", allow, "--resolve",
                             resolve, NULL};
    if (proc_start(&G.proxy, "proxy", px_argv, NULL) < 0 || proc_wait_listening(&G.proxy, 10000) < 0)
        return -1;
    if (addr_parse(G.proxy_spec, &G.proxy_addr, err, sizeof err) < 0)
        return -1;
    G.base = event_base_new();
    enclave_config cfg = {
        .region = "us-east-1", .proxy = &G.proxy_addr, .bedrock_host = HOST, .bedrock_port = G.port,
        .ca_file = G.ca, .stream_timeout_ms = 20000,
    };
    const char *w = getenv("ENCLAVE_WORKERS");
    G.n_cores = w && strcmp(w, "2") == 0 ? 2 : 1;
    if (G.n_cores == 2) {
        estate_config ec = {.replay_window_s = 300};
        if (!(G.st = estate_new(&ec, err, sizeof err)))
            return -1;
        cfg.shared = G.st;
        cfg.workers = 2;
    }
    for (unsigned i = 0; i < G.n_cores; i++) {
        cfg.worker = i;
        if (!(G.cores[i] = enclave_core_new(G.base, &cfg, err, sizeof err))) {
            fprintf(stderr, "core: %s\n", err);
            return -1;
        }
    }
    G.core = G.cores[0];
    /* one key pair for the process: what the client seals to works on every core */
    if (G.n_cores == 2 && memcmp(enclave_public_key(G.cores[0]), enclave_public_key(G.cores[1]), 32) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (unsigned i = 0; i < G.n_cores; i++)
        enclave_core_free(G.cores[i]);
    estate_free(G.st);
    event_base_free(G.base);
    int ok = 0;
    proc *ps[] = {&G.proxy, &G.sim};
    for (size_t i = 0; i < 2; i++) {
        int st = proc_stop(ps[i], SIGTERM, 15000);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
            ok = -1;
        if (proc_log_contains(ps[i], "AddressSanitizer") || proc_log_contains(ps[i], "runtime error") ||
            proc_log_contains(ps[i], "ThreadSanitizer"))
            ok = -1, proc_dump_log(ps[i]);
    }
    return ok;
}

/* ---- a recording sink ---- */

typedef enum { STOP_NEVER = 0, STOP_BY_RETURN, STOP_BY_CANCEL, PAUSE_AT } sink_action;

typedef struct rec {
    json_t *events; /* every event, parsed */
    int done;
    int events_after_done;
    sink_action action;
    int action_at;  /* 1-based event number */
    enclave_req *req;
    bool stopped;
} rec;

static int rec_emit(void *ud, const char *json, size_t len)
{
    rec *r = ud;
    if (r->done || r->stopped)
        r->events_after_done++;
    json_t *j = json_loadb(json, len, 0, NULL);
    assert_non_null(j);
    json_array_append_new(r->events, j);
    int n = (int)json_array_size(r->events);
    if (n == r->action_at && r->action == STOP_BY_RETURN) {
        r->stopped = true;
        return 1;
    }
    if (n == r->action_at && r->action == STOP_BY_CANCEL) {
        r->stopped = true;
        enclave_req_cancel(r->req); /* from inside the sink call */
    }
    if (n == r->action_at && r->action == PAUSE_AT)
        enclave_req_pause(r->req, true);
    return 0;
}

static void rec_done(void *ud)
{
    rec *r = ud;
    r->done++;
}

static const enclave_sink SINK = {rec_emit, rec_done};

static void set_creds(void)
{
    rec r = {.events = json_array()};
    json_t *req = json_pack("{s:s, s:{s:s, s:s, s:s}}", "command", "SET_CREDENTIALS", "credentials",
                            "access_key_id", AKID, "secret_access_key", SECRET, "session_token", TOKEN);
    assert_null(enclave_handle(G.core, req, &SINK, &r, "creds"));
    json_decref(req);
    assert_int_equal(r.done, 1);
    json_decref(r.events);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int count_sim_requests(void)
{
    FILE *f = fopen(G.sim.log_path, "r");
    char line[2048];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "event=request method=POST"))
            n++;
    if (f)
        fclose(f);
    return n;
}

/* Runs the loop until cond(r) or timeout_ms; returns cond's last value. */
static bool run_until(bool (*cond)(rec *), rec *r, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    while (!cond(r) && now_ms() < end) {
        struct timeval tv = {0, 20000};
        event_base_loopexit(G.base, &tv);
        event_base_dispatch(G.base);
    }
    return cond(r);
}

static bool is_done(rec *r) { return r->done > 0 || r->stopped; }

static int g_sim_before;
static bool sim_logged(rec *r)
{
    (void)r;
    return count_sim_requests() > g_sim_before;
}

static json_t *seal_to(const uint8_t pub[32], const char *text, const char *ctx)
{
    ep e;
    assert_int_equal(__real_ep_seal(pub, (const uint8_t *)text, strlen(text), ctx, &e), EP_OK);
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

/* A CHAT_STREAM for prompt: format 1 (the message sealed alone) or format 3 (the
 * whole request bound and sealed, with a fresh request_id). */
static json_t *stream_request(int format, const char *prompt)
{
    uint8_t cpriv[32], cpub[32], spriv[32], spub[32], rid[16];
    char chex[65], shex[65], rhex[33];
    assert_int_equal(x25519_keygen(cpriv, cpub), 0);
    assert_int_equal(x25519_keygen(spriv, spub), 0);
    assert_int_equal(random_bytes(rid, sizeof rid), 0);
    hex_encode(cpub, 32, chex);
    hex_encode(spub, 32, shex);
    hex_encode(rid, sizeof rid, rhex);
    if (format == 3) {
        json_t *hist = json_array();
        json_t *inner = proto_bound_request_json(prompt, hist, chex, shex, MODEL, "s-1", rhex, (long long)time(NULL));
        char *pt = json_dumps(inner, JSON_COMPACT);
        json_t *sealed = seal_to(enclave_public_key(G.core), pt, SV3_REQUEST_CONTEXT);
        json_t *req = proto_bound_stream_request(sealed, chex, shex, MODEL, "s-1");
        free(pt);
        json_decref(sealed);
        json_decref(inner);
        json_decref(hist);
        return req;
    }
    return json_pack("{s:s, s:o, s:[], s:s, s:s, s:s, s:s}", "command", "CHAT_STREAM", "encrypted_message",
                     seal_to(enclave_public_key(G.core), prompt, EP_CTX_CLIENT_TO_ENCLAVE), "encrypted_history",
                     "storage_public_key", shex, "client_public_key", chex, "model_id", MODEL, "session_id", "s-1");
}

/* Starts a CHAT_STREAM whose answer has `chunks` deltas, one every 20 ms. */
static void start_stream(rec *r, int format, int chunks)
{
    char prompt[128];
    snprintf(prompt, sizeof prompt, "fault test [[sim: chunks=%d interval-ms=20]]", chunks);
    json_t *req = stream_request(format, prompt);
    r->events = json_array();
    g_sim_before = count_sim_requests();
    memset(&F, 0, sizeof F);
    r->req = enclave_handle(next_core(), req, &SINK, r, "fault");
    json_decref(req);
}

static const json_t *last_event(const rec *r)
{
    return json_array_get(r->events, json_array_size(r->events) - 1);
}

static int count_key(const rec *r, const char *key)
{
    int n = 0;
    size_t i;
    json_t *e;
    json_array_foreach(r->events, i, e) if (json_object_get(e, key)) n++;
    return n;
}

/* The request failed with one error event, one done, nothing stored; the loop then
 * ran until the simulator logged the request (its outcome is not "complete": the
 * call was cancelled), and no sink call came after the end. */
static void assert_failed_once(rec *r, const char *code)
{
    assert_true(run_until(is_done, r, 15000));
    assert_int_equal(r->done, 1);
    const json_t *last = last_event(r);
    assert_true(json_is_true(json_object_get(last, "is_final")));
    assert_string_equal(json_string_value(json_object_get(last, "error_code")), code);
    assert_int_equal(count_key(r, "error"), 1);
    assert_int_equal(count_key(r, "stored_user_message"), 0);
    assert_int_equal(count_key(r, "stored_assistant_message"), 0);
    assert_true(run_until(sim_logged, r, 15000));
    assert_int_equal(r->events_after_done, 0);
    assert_int_equal(active_streams(), 0);
}

static void sim_outcome_not_complete(void)
{
    FILE *f = fopen(G.sim.log_path, "r");
    char line[2048], last[2048] = "";
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "event=request method=POST"))
            snprintf(last, sizeof last, "%s", line);
    if (f)
        fclose(f);
    assert_non_null(strstr(last, "outcome="));
    assert_null(strstr(last, "outcome=complete"));
}

/* F0: the reported crash (then in format 2, whose key announcement format 3 keeps). A
 * format-3 stream whose key announcement fails: before, fail_req freed the request
 * while the Bedrock call kept running into it. */
static void test_v3_announce_fails(void **state)
{
    (void)state;
    rec r = {.events = json_array()};
    json_t *req = stream_request(3, "x [[sim: chunks=40 interval-ms=20]]");
    memset(&F, 0, sizeof F);
    F.sv3_init_fail_at = 1;
    g_sim_before = count_sim_requests();
    assert_null(enclave_handle(next_core(), req, &SINK, &r, "fault"));
    json_decref(req);
    assert_int_equal(r.done, 1);
    assert_int_equal(json_array_size(r.events), 1);
    assert_string_equal(json_string_value(json_object_get(last_event(&r), "error_code")), "internal");
    assert_int_equal(active_streams(), 0);
    /* the key is announced before Bedrock is asked: no upstream request at all */
    rec idle = {0};
    run_until(is_done, &idle, 300);
    assert_int_equal(count_sim_requests(), g_sim_before);
    json_decref(r.events);
}

/* F0: a format-1 chunk whose seal fails midway ends the stream with an error event;
 * before, emit_sealed returned 1, on_text tested < 0, and the answer was stored with
 * no chunk delivered. */
static void test_v1_chunk_seal_fails(void **state)
{
    (void)state;
    rec r = {0};
    start_stream(&r, 1, 40);
    F.ep_seal_fail_at = 3; /* chunks 0 and 1 go out, chunk 2 fails */
    assert_failed_once(&r, "internal");
    sim_outcome_not_complete();
    json_decref(r.events);
}

static void test_v1_first_chunk_seal_fails(void **state)
{
    (void)state;
    rec r = {0};
    start_stream(&r, 1, 40);
    F.ep_seal_fail_at = 1;
    assert_failed_once(&r, "internal");
    sim_outcome_not_complete();
    json_decref(r.events);
}

static void test_v3_chunk_seal_fails(void **state)
{
    (void)state;
    rec r = {0};
    start_stream(&r, 3, 40);
    F.sv3_seal_fail_at = 4;
    assert_failed_once(&r, "internal");
    assert_int_equal(count_key(&r, "encrypted_content_v3"), 3);
    sim_outcome_not_complete();
    json_decref(r.events);
}

/* The storage seals at the end fail: an error, and no stored message. */
static void test_storage_seal_fails(void **state)
{
    (void)state;
    rec r = {0};
    start_stream(&r, 1, 3);
    F.ep_seal_fail_at = 4; /* 3 chunks sealed, then the stored user message */
    assert_true(run_until(is_done, &r, 15000));
    assert_int_equal(r.done, 1);
    assert_int_equal(count_key(&r, "encrypted_content"), 3);
    assert_string_equal(json_string_value(json_object_get(last_event(&r), "error_code")), "internal");
    assert_int_equal(count_key(&r, "stored_user_message"), 0);
    assert_int_equal(active_streams(), 0);
    json_decref(r.events);
}

/* The sink stops the request by its return value: no further call, not even done. */
static void test_sink_stops_by_return(void **state)
{
    (void)state;
    rec r = {0};
    r.action = STOP_BY_RETURN;
    r.action_at = 2;
    start_stream(&r, 1, 40);
    assert_true(run_until(is_done, &r, 15000));
    assert_true(run_until(sim_logged, &r, 15000));
    assert_int_equal(r.done, 0);
    assert_int_equal(r.events_after_done, 0);
    assert_int_equal(json_array_size(r.events), 2);
    assert_int_equal(active_streams(), 0);
    sim_outcome_not_complete();
    json_decref(r.events);
}

/* The sink cancels the request from inside its own call (a parent that goes away
 * while an event is being written): the free waits for the call to return. */
static void test_sink_cancels_inside_call(void **state)
{
    (void)state;
    rec r = {0};
    r.action = STOP_BY_CANCEL;
    r.action_at = 3;
    start_stream(&r, 2, 40); /* event 1 is the stream key */
    assert_true(run_until(is_done, &r, 15000));
    assert_true(run_until(sim_logged, &r, 15000));
    assert_int_equal(r.done, 0);
    assert_int_equal(r.events_after_done, 0);
    assert_int_equal(json_array_size(r.events), 3);
    assert_int_equal(active_streams(), 0);
    json_decref(r.events);
}

static bool has_final(rec *r)
{
    return r->done > 0;
}

/* Backpressure: a paused request takes nothing more from Bedrock until resumed,
 * then completes with every chunk. */
static void test_pause_and_resume(void **state)
{
    (void)state;
    rec r = {0};
    r.action = PAUSE_AT;
    r.action_at = 1;
    start_stream(&r, 1, 12);
    rec idle = {0};
    run_until(is_done, &idle, 1500); /* 12 deltas at 20 ms would all have arrived */
    /* the chunks decoded from the bytes in hand when the pause came may still arrive,
     * but not the whole answer */
    size_t seen = json_array_size(r.events);
    assert_true(seen < 12);
    assert_int_equal(r.done, 0);
    enclave_req_pause(r.req, false);
    assert_true(run_until(has_final, &r, 15000));
    assert_int_equal(count_key(&r, "encrypted_content"), 12);
    assert_non_null(json_object_get(last_event(&r), "stored_assistant_message"));
    json_decref(r.events);
}

/* F0: a low-order key in any key field of a chat is refused before anything runs:
 * the one error names the field, and Bedrock is never asked. */
static void test_low_order_keys_refused(void **state)
{
    (void)state;
    static const char *const BAD[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
    };
    static const struct {
        const char *command, *field;
    } FIELDS[] = {{"CHAT_STREAM", "client_public_key"}, {"CHAT_STREAM", "storage_public_key"},
                  {"CHAT", "user_public_key"}};
    uint8_t pub[32], priv[32];
    char good[65];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    hex_encode(pub, 32, good);
    g_sim_before = count_sim_requests();
    for (size_t b = 0; b < 2; b++) {
        for (size_t f = 0; f < 3; f++) {
            for (int fmt = 1; fmt <= 3; fmt += 2) { /* the outer fields of formats 1 and 3 */
                if (fmt == 3 && strcmp(FIELDS[f].command, "CHAT") == 0)
                    continue; /* CHAT has no format 3 */
                rec r = {.events = json_array()};
                json_t *req = stream_request(fmt, "hi");
                json_object_set_new(req, "command", json_string(FIELDS[f].command));
                json_object_set_new(req, "user_public_key", json_string(good));
                json_object_set_new(req, FIELDS[f].field, json_string(BAD[b]));
                memset(&F, 0, sizeof F);
                assert_null(enclave_handle(next_core(), req, &SINK, &r, "lowkey"));
                json_decref(req);
                assert_int_equal(r.done, 1);
                assert_int_equal(json_array_size(r.events), 1);
                const json_t *e = last_event(&r);
                char want[160];
                snprintf(want, sizeof want,
                         "Invalid field: '%s' is not a valid X25519 public key (low order)", FIELDS[f].field);
                assert_string_equal(json_string_value(json_object_get(e, "error")), want);
                assert_string_equal(json_string_value(json_object_get(e, "error_code")), "bad_request");
                json_decref(r.events);
            }
        }
    }
    assert_int_equal(active_streams(), 0);
    rec idle = {0};
    run_until(is_done, &idle, 300);
    assert_int_equal(count_sim_requests(), g_sim_before);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_low_order_keys_refused),
        cmocka_unit_test(test_v3_announce_fails),
        cmocka_unit_test(test_v1_chunk_seal_fails),
        cmocka_unit_test(test_v1_first_chunk_seal_fails),
        cmocka_unit_test(test_v3_chunk_seal_fails),
        cmocka_unit_test(test_storage_seal_fails),
        cmocka_unit_test(test_sink_stops_by_return),
        cmocka_unit_test(test_sink_cancels_inside_call),
        cmocka_unit_test(test_pause_and_resume),
    };
    int rc = setup(NULL);
    if (rc == 0) {
        set_creds();
        rc = cmocka_run_group_tests(tests, NULL, NULL);
    }
    return teardown(NULL) < 0 ? 1 : rc;
}

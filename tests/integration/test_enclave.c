/* veil-enclave end to end: veil-enclave + veil-proxy + veil-bedrock-sim over unix
 * sockets and TLS, driven by a test parent that seals with the crypto core.
 * Every command, both request framings (a bare one closes the connection after
 * its reply, as the original did), split and oversized requests, streaming
 * with decryption and reassembly, the stored messages, every failure mode, 200
 * concurrent streams with HEALTH answering meanwhile, a parent disconnect, kept-alive
 * connections to Bedrock (and without them), and a SIGTERM drain.
 * Stays whole: one suite per program under test, sharing its processes and fixtures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "attest/verify.h"
#include "common/base64.h"
#include "common/hex.h"
#include "crypto/ep.h"
#include "harness.h"

#define HOST "bedrock-runtime.us-east-1.amazonaws.com"
#define MODEL "us.meta.llama3-1-8b-instruct-v1:0"
#define AKID "AKIDENCLAVETEST"
#define SECRET "enclave-test-secret"
#define TOKEN "enclave-test-token"
#define CANARY "CANARY-7d1f0c-plaintext"

static struct {
    proc sim, proxy, enc;
    char enc_addr[600];
    char cert[600], key[600], ca[600];
    char endpoint[300], proxy_addr[600];
    char nsm[600]; /* the simulated NSM: sim:DIR */
    uint8_t enc_pub[32];
} G;

/* ---- a line-buffered connection ---- */

typedef struct lconn {
    int fd;
    char buf[1 << 16];
    size_t len;
} lconn;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void lc_open(lconn *c)
{
    memset(c, 0, sizeof *c);
    c->fd = h_connect(G.enc_addr, 5000);
    assert_true(c->fd >= 0);
}

static void lc_close(lconn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void lc_send(lconn *c, const char *s)
{
    assert_int_equal(h_write_all(c->fd, s, strlen(s)), 0);
}

/* Next line as JSON (caller decrefs), or NULL on EOF/timeout. */
static json_t *lc_next(lconn *c, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            json_t *j = json_loadb(c->buf, n, 0, NULL);
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            assert_non_null(j);
            return j;
        }
        long left = end - now_ms();
        struct pollfd p = {c->fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return NULL;
        assert_true(c->len < sizeof c->buf);
        ssize_t r = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (r <= 0)
            return NULL;
        c->len += (size_t)r;
    }
}

/* The enclave closed the connection: read() returns 0 with nothing unread before
 * it, within timeout_ms (a bound, not a measured duration). This side neither
 * closes nor half-closes first. */
static bool lc_eof(lconn *c, int timeout_ms)
{
    if (c->len)
        return false;
    struct pollfd p = {c->fd, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1)
        return false;
    char b;
    return read(c->fd, &b, 1) == 0;
}

/* Sends one newline-terminated request. The newline goes in the same write:
 * one that came later could find the reply sent and the connection closed, as
 * after a bare request. */
static void lc_send_line(lconn *c, const char *req)
{
    size_t n = strlen(req);
    char *line = malloc(n + 2);
    assert_non_null(line);
    memcpy(line, req, n);
    memcpy(line + n, "\n", 2);
    lc_send(c, line);
    free(line);
}

/* Opens a connection and sends one newline-terminated request on it. */
static void lc_request(lconn *c, const char *req)
{
    lc_open(c);
    lc_send_line(c, req);
}

static json_t *request(const char *req)
{
    lconn c;
    lc_request(&c, req);
    json_t *j = lc_next(&c, 10000);
    lc_close(&c);
    assert_non_null(j);
    return j;
}

static const char *jstr(const json_t *o, const char *k)
{
    const json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- processes ---- */

static int start_enclave(const char *extra1, const char *extra2)
{
    snprintf(G.enc_addr, sizeof G.enc_addr, "unix:%s", h_path("enclave", ".sock"));
    snprintf(G.nsm, sizeof G.nsm, "sim:%s/nsm", h_tmpdir());
    const char *argv[] = {h_bin("veil-enclave"), "--listen", G.enc_addr, "--proxy", G.proxy_addr,
                          "--bedrock-endpoint", G.endpoint, "--ca-file", G.ca, "--max-request", "1048576",
                          "--stream-timeout", "3", "--drain-seconds", "10", "--nsm", G.nsm, extra1, extra2, NULL};
    static const char *const env[] = {"VEIL_LOG_LEVEL=debug", NULL};
    if (proc_start(&G.enc, "enclave", argv, env) < 0 || proc_wait_listening(&G.enc, 10000) < 0)
        return -1;
    json_t *k = request("{\"command\":\"GET_PUBLIC_KEY\"}");
    int rc = hex_decode_exact(jstr(k, "public_key"), 64, G.enc_pub, 32);
    json_decref(k);
    return rc;
}

static void set_creds(const char *expiration)
{
    char req[512];
    snprintf(req, sizeof req,
             "{\"command\":\"SET_CREDENTIALS\",\"credentials\":{\"access_key_id\":\"%s\","
             "\"secret_access_key\":\"%s\",\"session_token\":\"%s\"%s%s%s}}",
             AKID, SECRET, TOKEN, expiration ? ",\"expiration\":\"" : "", expiration ? expiration : "",
             expiration ? "\"" : "");
    json_t *r = request(req);
    assert_string_equal(jstr(r, "status"), "success");
    json_decref(r);
}

static int setup(void **state)
{
    (void)state;
    char cmd[1024], dir[400];
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
    int port = atoi(strrchr(G.sim.addr, ':') + 1);
    snprintf(G.endpoint, sizeof G.endpoint, "%s:%d", HOST, port);
    char allow[300], resolve[300];
    snprintf(allow, sizeof allow, "%s:%d", HOST, port);
    snprintf(resolve, sizeof resolve, "%s:%d:127.0.0.1", HOST, port);
    snprintf(G.proxy_addr, sizeof G.proxy_addr, "unix:%s", h_path("proxy", ".sock"));
    const char *px_argv[] = {h_bin("veil-proxy"), "--listen", G.proxy_addr, "--allow", allow, "--resolve",
                             resolve, NULL};
    if (proc_start(&G.proxy, "proxy", px_argv, NULL) < 0 || proc_wait_listening(&G.proxy, 10000) < 0)
        return -1;
    return start_enclave(NULL, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int ok = 0;
    proc *ps[] = {&G.enc, &G.proxy, &G.sim};
    for (size_t i = 0; i < 3; i++) {
        if (!proc_alive(ps[i]))
            continue;
        int st = proc_stop(ps[i], SIGTERM, 15000);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            fprintf(stderr, "%s did not exit cleanly\n", ps[i]->name);
            ok = -1;
        }
        if (proc_log_contains(ps[i], "AddressSanitizer") || proc_log_contains(ps[i], "runtime error") ||
            proc_log_contains(ps[i], "ThreadSanitizer") ||
            proc_log_contains(ps[i], "LeakSanitizer"))
            ok = -1, proc_dump_log(ps[i]);
    }
    return ok;
}

/* ---- the test parent: build and read CHAT_STREAM ---- */

typedef struct keys {
    uint8_t client_priv[32], client_pub[32], storage_priv[32], storage_pub[32];
} keys;

static void make_keys(keys *k)
{
    assert_int_equal(x25519_keygen(k->client_priv, k->client_pub), 0);
    assert_int_equal(x25519_keygen(k->storage_priv, k->storage_pub), 0);
}

static json_t *seal_json(const uint8_t pub[32], const char *text, const char *ctx)
{
    ep e;
    assert_int_equal(ep_seal(pub, (const uint8_t *)text, strlen(text), ctx, &e), EP_OK);
    json_t *j = ep_to_json(&e);
    ep_clear(&e);
    return j;
}

typedef struct turn {
    const char *role; /* NULL: by position */
    const char *text;
} turn;

static char *stream_request(const keys *k, const char *prompt, const turn *hist, size_t n, const char *model)
{
    char pub[65], spub[65];
    hex_encode(k->client_pub, 32, pub);
    hex_encode(k->storage_pub, 32, spub);
    json_t *h = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *e = seal_json(G.enc_pub, hist[i].text, EP_CTX_CLIENT_TO_ENCLAVE);
        if (hist[i].role)
            json_object_set_new(e, "role", json_string(hist[i].role));
        json_array_append_new(h, e);
    }
    json_t *req = json_pack("{s:s, s:o, s:o, s:s, s:s, s:s, s:s}", "command", "CHAT_STREAM", "encrypted_message",
                            seal_json(G.enc_pub, prompt, EP_CTX_CLIENT_TO_ENCLAVE), "encrypted_history", h,
                            "storage_public_key", spub, "client_public_key", pub, "model_id",
                            model ? model : MODEL, "session_id", "00000000-0000-4000-8000-000000000000");
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return s;
}

static char *open_ep(const json_t *epj, const uint8_t priv[32], const char *ctx)
{
    ep e;
    assert_int_equal(ep_from_json(epj, &e, NULL), EP_OK);
    secret pt;
    ep_err r = ep_open(priv, &e, ctx, &pt);
    ep_clear(&e);
    if (r != EP_OK)
        fail_msg("open failed: %s", ep_strerror(r));
    char *s = malloc(pt.len + 1);
    memcpy(s, pt.data, pt.len);
    s[pt.len] = '\0';
    secret_free(&pt);
    return s;
}

typedef struct result {
    vbuf answer;
    int chunks;
    bool final_ok;
    char error[256];
    char error_code[64];
    json_t *final;
} result;

static void result_free(result *r)
{
    vbuf_free(&r->answer);
    json_decref(r->final);
}

/* Reads one stream to its end: every line is an encrypted chunk, one final, or one error. */
static void read_stream(lconn *c, const keys *k, result *out, int timeout_ms)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        json_t *ev = lc_next(c, timeout_ms);
        if (!ev)
            fail_msg("stream ended without a final event");
        const json_t *ec = json_object_get(ev, "encrypted_content");
        if (ec) {
            char *t = open_ep(ec, k->client_priv, EP_CTX_ENCLAVE_TO_CLIENT);
            assert_true(strlen(t) > 0); /* empty deltas are never sent */
            vbuf_append_str(&out->answer, t);
            free(t);
            out->chunks++;
            json_decref(ev);
            continue;
        }
        assert_true(json_is_true(json_object_get(ev, "is_final")));
        if (json_object_get(ev, "error")) {
            snprintf(out->error, sizeof out->error, "%s", jstr(ev, "error"));
            snprintf(out->error_code, sizeof out->error_code, "%s", jstr(ev, "error_code") ? jstr(ev, "error_code") : "");
            /* a failed stream stores nothing */
            assert_null(json_object_get(ev, "stored_user_message"));
            assert_null(json_object_get(ev, "stored_assistant_message"));
            json_decref(ev);
            return;
        }
        out->final_ok = true;
        out->final = ev;
        return;
    }
}

static void chat(const char *prompt, const turn *hist, size_t n, const char *model, keys *k, result *out)
{
    make_keys(k);
    char *req = stream_request(k, prompt, hist, n, model);
    lconn c;
    lc_request(&c, req);
    free(req);
    read_stream(&c, k, out, 15000);
    lc_close(&c);
}

static void expected(vbuf *out, const char *echo, int n)
{
    vbuf_printf(out, "Echo: %s", echo);
    for (int i = 1; i < n; i++)
        vbuf_printf(out, " chunk %d", i);
}

/* ---- tests ---- */

static void test_commands(void **state)
{
    (void)state;
    json_t *r = request("{\"command\":\"get_public_key\"}"); /* case-insensitive */
    assert_string_equal(jstr(r, "status"), "success");
    assert_string_equal(jstr(r, "command"), "GET_PUBLIC_KEY");
    assert_int_equal(strlen(jstr(r, "public_key")), 64);
    assert_string_equal(jstr(r, "region"), "us-east-1");
    assert_string_equal(jstr(r, "source"), "nitro-enclave-bedrock");
    json_decref(r);

    r = request("{\"command\":\"HEALTH\"}");
    assert_string_equal(jstr(r, "enclave"), "running");
    const char *w = getenv("ENCLAVE_WORKERS"); /* ctest runs this suite with 1 and with 2 */
    if (w)
        assert_int_equal(json_integer_value(json_object_get(r, "workers")), atoi(w));
    assert_true(json_integer_value(json_object_get(r, "worker")) < json_integer_value(json_object_get(r, "workers")));
    assert_true(json_is_boolean(json_object_get(r, "has_credentials")));
    assert_true(json_is_integer(json_object_get(r, "uptime_seconds")));
    assert_true(json_is_integer(json_object_get(r, "active_streams")));
    assert_non_null(json_object_get(r, "credentials_expiration"));
    json_decref(r);

    r = request("{\"command\":\"RUN_TESTS\"}");
    const json_t *sum = json_object_get(r, "summary");
    assert_int_equal(json_integer_value(json_object_get(sum, "total_passed")), 7);
    assert_int_equal(json_integer_value(json_object_get(sum, "total_tests")), 7);
    assert_true(json_is_true(json_object_get(sum, "all_passed")));
    assert_int_equal(json_array_size(json_object_get(json_object_get(r, "results"), "ecdh_tests")), 4);
    json_decref(r);

    r = request("{\"command\":\"FROB\"}");
    assert_string_equal(jstr(r, "status"), "error");
    assert_string_equal(jstr(r, "error"), "Unknown command: FROB");
    /* the original's six, and veil's GET_ATTESTATION */
    assert_int_equal(json_array_size(json_object_get(r, "available_commands")), 7);
    json_decref(r);

    r = request("{\"command\": nope}");
    assert_string_equal(jstr(r, "status"), "error");
    assert_true(strncmp(jstr(r, "error"), "Invalid JSON: ", 14) == 0);
    json_decref(r);

    r = request("{\"command\":\"SET_CREDENTIALS\",\"credentials\":{\"access_key_id\":\"a\",\"secret_access_key\":\"b\"}}");
    assert_string_equal(jstr(r, "error"), "Missing credential field: 'session_token'");
    json_decref(r);

    r = request("{\"command\":\"SET_CREDENTIALS\",\"credentials\":{\"access_key_id\":\"a\",\"secret_access_key\":\"b\","
                "\"session_token\":\"c\",\"expiration\":\"soon\"}}");
    assert_string_equal(jstr(r, "status"), "error");
    json_decref(r);
}

/* Before any credentials: the original's text. */
static void test_no_credentials(void **state)
{
    (void)state;
    keys k;
    result res;
    chat("hi", NULL, 0, NULL, &k, &res);
    assert_string_equal(res.error, "No AWS credentials");
    assert_string_equal(res.error_code, "no_credentials");
    result_free(&res);
    set_creds("2099-01-01T00:00:00Z");
    json_t *r = request("{\"command\":\"HEALTH\"}");
    assert_true(json_is_true(json_object_get(r, "has_credentials")));
    assert_string_equal(jstr(r, "credentials_expiration"), "2099-01-01T00:00:00Z");
    json_decref(r);
}

static void test_stream_and_storage(void **state)
{
    (void)state;
    keys k;
    result res;
    chat("[[sim: chunks=25]] " CANARY, NULL, 0, NULL, &k, &res);
    if (!res.final_ok)
        fail_msg("stream failed: %s", res.error);
    vbuf want = VBUF_INIT;
    expected(&want, CANARY, 25);
    assert_int_equal(res.chunks, 25);
    assert_int_equal(res.answer.len, want.len);
    assert_memory_equal(res.answer.data, want.data, want.len);
    char *u = open_ep(json_object_get(res.final, "stored_user_message"), k.storage_priv, EP_CTX_USER_STORAGE);
    char *a = open_ep(json_object_get(res.final, "stored_assistant_message"), k.storage_priv,
                      EP_CTX_ASSISTANT_STORAGE);
    assert_string_equal(u, "[[sim: chunks=25]] " CANARY);
    assert_string_equal(a, vbuf_cstr(&want));
    /* the storage copies are not readable with the transport key */
    ep e;
    secret pt;
    assert_int_equal(ep_from_json(json_object_get(res.final, "stored_user_message"), &e, NULL), EP_OK);
    assert_int_equal(ep_open(k.client_priv, &e, EP_CTX_USER_STORAGE, &pt), EP_ERR_AUTH);
    ep_clear(&e);
    assert_string_equal(jstr(res.final, "model_used"), MODEL);
    assert_int_equal(json_integer_value(json_object_get(res.final, "output_tokens")), 25);
    assert_true(json_integer_value(json_object_get(res.final, "input_tokens")) > 0);
    free(u);
    free(a);
    vbuf_free(&want);
    result_free(&res);
    /* plaintext never reaches a log line, even at debug level */
    assert_false(proc_log_contains(&G.enc, CANARY));
    assert_false(proc_log_contains(&G.proxy, CANARY));
}

static void test_history_roles(void **state)
{
    (void)state;
    keys k;
    result res;
    /* positional roles (the original's rule) */
    turn h1[] = {{NULL, "first question"}, {NULL, "first answer"}};
    chat("second", h1, 2, NULL, &k, &res);
    assert_true(res.final_ok);
    result_free(&res);
    /* an odd history: the last user turn merges with the new message, not a 400 */
    turn h2[] = {{NULL, "q1"}, {NULL, "a1"}, {NULL, "q2 unanswered"}};
    chat("q3", h2, 3, NULL, &k, &res);
    if (!res.final_ok)
        fail_msg("odd history: %s", res.error);
    vbuf want = VBUF_INIT;
    expected(&want, "q2 unanswered\n\nq3", 8);
    assert_int_equal(res.answer.len, want.len);
    assert_memory_equal(res.answer.data, want.data, want.len);
    vbuf_free(&want);
    result_free(&res);
    /* explicit roles */
    turn h3[] = {{"user", "u"}, {"assistant", "a"}, {"assistant", "a2"}};
    chat("next", h3, 3, NULL, &k, &res);
    assert_true(res.final_ok);
    result_free(&res);
    /* starting with the assistant is refused clearly */
    turn h4[] = {{"assistant", "hello, I am a bot"}};
    chat("hi", h4, 1, NULL, &k, &res);
    assert_false(res.final_ok);
    assert_string_equal(res.error, "Invalid history: history must start with a user message");
    result_free(&res);
    turn h5[] = {{"system", "x"}};
    chat("hi", h5, 1, NULL, &k, &res);
    assert_false(res.final_ok);
    assert_non_null(strstr(res.error, "Invalid role"));
    result_free(&res);
}

static void expect_error(const char *prompt, const char *code)
{
    keys k;
    result res;
    chat(prompt, NULL, 0, NULL, &k, &res);
    if (res.final_ok)
        fail_msg("%s: expected %s, got success", prompt, code);
    if (strcmp(res.error_code, code) != 0)
        fail_msg("%s: got %s (%s), want %s", prompt, res.error_code, res.error, code);
    assert_true(strlen(res.error) > 0 && strlen(res.error) < 120); /* clear and short */
    result_free(&res);
}

static void test_upstream_failures(void **state)
{
    (void)state;
    expect_error("[[sim: fault=http-429]] x", "upstream_throttled");
    expect_error("[[sim: fault=http-500]] x", "upstream_unavailable");
    expect_error("[[sim: fault=http-400]] x", "upstream_rejected");
    expect_error("[[sim: fault=throttle]] x", "upstream_throttled");
    expect_error("[[sim: fault=validation]] x", "upstream_rejected");
    expect_error("[[sim: fault=model-error]] x", "upstream_exception");
    expect_error("[[sim: fault=bad-crc chunks=6]] x", "upstream_corrupt");
    expect_error("[[sim: fault=drop chunks=10]] x", "upstream_truncated");
    expect_error("[[sim: fault=empty]] x", "empty_answer");
    expect_error("[[sim: fault=hang]] x", "timeout"); /* --stream-timeout 3 */
}

static void test_request_failures(void **state)
{
    (void)state;
    keys k;
    make_keys(&k);
    char pub[65];
    hex_encode(k.client_pub, 32, pub);
    /* missing field */
    json_t *r = request("{\"command\":\"CHAT_STREAM\",\"encrypted_message\":{}}");
    assert_string_equal(jstr(r, "error"), "Missing field: 'model_id'");
    assert_true(json_is_true(json_object_get(r, "is_final")));
    json_decref(r);
    /* a malformed EP */
    char req[2048];
    snprintf(req, sizeof req,
             "{\"command\":\"CHAT_STREAM\",\"encrypted_message\":{\"ephemeral_public_key\":\"00\",\"iv\":\"00\","
             "\"ciphertext\":\"00\",\"auth_tag\":\"00\",\"hkdf_salt\":\"00\"},\"storage_public_key\":\"%s\","
             "\"client_public_key\":\"%s\",\"model_id\":\"%s\"}", pub, pub, MODEL);
    r = request(req);
    assert_string_equal(jstr(r, "error_code"), "bad_request");
    assert_non_null(strstr(jstr(r, "error"), "ephemeral_public_key"));
    json_decref(r);
    /* sealed to another key: the enclave cannot open it */
    uint8_t opriv[32], opub[32];
    assert_int_equal(x25519_keygen(opriv, opub), 0);
    json_t *em = seal_json(opub, "not for you", EP_CTX_CLIENT_TO_ENCLAVE);
    json_t *rq = json_pack("{s:s, s:o, s:s, s:s, s:s}", "command", "CHAT_STREAM", "encrypted_message", em,
                           "storage_public_key", pub, "client_public_key", pub, "model_id", MODEL);
    char *s = json_dumps(rq, JSON_COMPACT);
    r = request(s);
    assert_string_equal(jstr(r, "error_code"), "decrypt_failed");
    json_decref(r);
    free(s);
    json_decref(rq);
    /* the wrong context */
    em = seal_json(G.enc_pub, "wrong context", EP_CTX_USER_STORAGE);
    rq = json_pack("{s:s, s:o, s:s, s:s, s:s}", "command", "CHAT_STREAM", "encrypted_message", em,
                   "storage_public_key", pub, "client_public_key", pub, "model_id", MODEL);
    s = json_dumps(rq, JSON_COMPACT);
    r = request(s);
    assert_string_equal(jstr(r, "error_code"), "decrypt_failed");
    json_decref(r);
    free(s);
    json_decref(rq);
    /* a bad client key */
    snprintf(req, sizeof req, "{\"command\":\"CHAT_STREAM\",\"encrypted_message\":{},\"storage_public_key\":\"%s\","
                              "\"client_public_key\":\"xyz\",\"model_id\":\"%s\"}", pub, MODEL);
    r = request(req);
    assert_non_null(strstr(jstr(r, "error"), "client_public_key"));
    json_decref(r);
    /* expired credentials, then valid ones again */
    set_creds("2001-01-01T00:00:00Z");
    expect_error("x", "credentials_expired");
    set_creds("2099-01-01T00:00:00Z");
}

static void test_framing(void **state)
{
    (void)state;
    /* several requests in turn on one framed connection, the middle one not
     * followed by a newline but by the next request */
    lconn c;
    json_t *r;
    lc_open(&c);
    lc_send(&c, "{\"command\":\"GET_PUBLIC_KEY\"}\n{\"command\":\"HEALTH\"}{\"command\":\"RUN_TESTS\"}\n");
    const char *want[] = {"GET_PUBLIC_KEY", "HEALTH", "RUN_TESTS"};
    for (int i = 0; i < 3; i++) {
        r = lc_next(&c, 5000);
        assert_non_null(r);
        assert_string_equal(jstr(r, "command"), want[i]);
        json_decref(r);
    }
    lc_close(&c);

    /* replies that echo the request cut inside a UTF-8 character (an unknown command's
     * name at 63 bytes, jansson's error text at 20): each still gets its reply, so
     * the next request's answer is not taken for theirs (found by fuzzing) */
    lc_open(&c);
    lc_send(&c, "{\"command\":\"" "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
                "\"}\n{\"a\":\"\\u00\xc3\xa9\"}\n{\"command\":\"HEALTH\"}\n");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "error"), "Unknown command: "
                                          "???????????????????????????????????????????????????????????????");
    json_decref(r);
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "status"), "error");
    assert_true(strncmp(jstr(r, "error"), "Invalid JSON: ", 14) == 0);
    json_decref(r);
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "enclave"), "running");
    json_decref(r);
    lc_close(&c);

    /* unframed with a half-close */
    lc_open(&c);
    lc_send(&c, "{\"command\":\"GET_PUBLIC_KEY\"}");
    shutdown(c.fd, SHUT_WR);
    r = lc_next(&c, 5000);
    assert_string_equal(jstr(r, "command"), "GET_PUBLIC_KEY");
    json_decref(r);
    lc_close(&c);

    /* a CHAT_STREAM split into 1-byte writes */
    keys k;
    make_keys(&k);
    char *req = stream_request(&k, "one byte at a time", NULL, 0, NULL);
    lc_open(&c);
    for (size_t i = 0; req[i]; i++)
        assert_int_equal(write(c.fd, req + i, 1), 1);
    free(req);
    result res;
    read_stream(&c, &k, &res, 15000);
    assert_true(res.final_ok);
    result_free(&res);
    assert_true(lc_eof(&c, 5000)); /* it was bare: closed after the final event */
    lc_close(&c);

    /* over the limit (--max-request 1048576): a clear error, then the connection closes */
    lc_open(&c);
    size_t big = 1100000;
    char *blob = malloc(big + 64);
    int n = snprintf(blob, 64, "{\"command\":\"HEALTH\",\"pad\":\"");
    memset(blob + n, 'a', big);
    blob[n + big] = '\0';
    ssize_t w = write(c.fd, blob, strlen(blob)); /* the enclave may stop reading midway */
    (void)w;
    free(blob);
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "status"), "error");
    assert_non_null(strstr(jstr(r, "error"), "Request too large"));
    json_decref(r);
    assert_null(lc_next(&c, 5000)); /* closed */
    lc_close(&c);

    /* not an object */
    r = request("[1,2,3]");
    assert_non_null(strstr(jstr(r, "error"), "Invalid JSON"));
    json_decref(r);
}

/* The original answers a bare request (no newline, no half-close) and closes,
 * and its peers read the reply to EOF: an open connection would leave them
 * waiting for their own timeout. A newline-framed connection stays open. */
static void test_bare_request_closes(void **state)
{
    (void)state;
    lconn c;
    lc_open(&c);
    lc_send(&c, "{\"command\":\"HEALTH\"}");
    json_t *r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "command"), "HEALTH");
    json_decref(r);
    assert_true(lc_eof(&c, 5000));
    lc_close(&c);

    /* bare, with trailing spaces: still bare */
    lc_open(&c);
    lc_send(&c, "{\"command\":\"GET_PUBLIC_KEY\"}  ");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "command"), "GET_PUBLIC_KEY");
    json_decref(r);
    assert_true(lc_eof(&c, 5000));
    lc_close(&c);

    /* a bare request that is not JSON: the error, then the close */
    lc_open(&c);
    lc_send(&c, "{\"command\":HEALTH}");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_non_null(strstr(jstr(r, "error"), "Invalid JSON"));
    json_decref(r);
    assert_true(lc_eof(&c, 5000));
    lc_close(&c);

    /* newline-framed (CRLF too): the connection serves the next request */
    lc_request(&c, "{\"command\":\"HEALTH\"}\r");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "command"), "HEALTH");
    json_decref(r);
    lc_send(&c, "{\"command\":\"GET_PUBLIC_KEY\"}\n");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "command"), "GET_PUBLIC_KEY");
    json_decref(r);

    /* a framed CHAT_STREAM keeps it too; then a bare HEALTH on it closes it */
    keys k;
    make_keys(&k);
    char *req = stream_request(&k, "framed stream", NULL, 0, NULL);
    lc_send_line(&c, req);
    free(req);
    result res;
    read_stream(&c, &k, &res, 15000);
    assert_true(res.final_ok);
    result_free(&res);
    lc_send(&c, "{\"command\":\"HEALTH\"}");
    r = lc_next(&c, 5000);
    assert_non_null(r);
    assert_string_equal(jstr(r, "command"), "HEALTH");
    json_decref(r);
    assert_true(lc_eof(&c, 5000));
    lc_close(&c);

    /* a bare CHAT_STREAM: closed after its final event */
    req = stream_request(&k, "bare stream", NULL, 0, NULL);
    lc_open(&c);
    lc_send(&c, req);
    free(req);
    read_stream(&c, &k, &res, 15000);
    assert_true(res.final_ok);
    result_free(&res);
    assert_true(lc_eof(&c, 5000));
    lc_close(&c);
}

/* Stream formats other than 1 and 3 are refused with one clear error, format 2
 * included: format 3 replaced it (test_format3.py drives format 3 itself). */
static void test_stream_format_refused(void **state)
{
    (void)state;
    static const int formats[] = {2, 4, 0};
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++) {
        keys k;
        make_keys(&k);
        char *req = stream_request(&k, "x", NULL, 0, NULL);
        json_t *rq = json_loads(req, 0, NULL);
        free(req);
        json_object_set_new(rq, "stream_format", json_integer(formats[i]));
        char *s = json_dumps(rq, JSON_COMPACT);
        json_decref(rq);
        json_t *r = request(s);
        free(s);
        assert_string_equal(jstr(r, "error"), "Unsupported stream_format (1 or 3)");
        assert_string_equal(jstr(r, "error_code"), "bad_request");
        json_decref(r);
    }
}
static int health_active_streams(void)
{
    json_t *r = request("{\"command\":\"HEALTH\"}");
    int n = (int)json_integer_value(json_object_get(r, "active_streams"));
    json_decref(r);
    return n;
}

/* The tests from here on need no short deadline, and a busy machine must not make
 * a healthy stream time out: the enclave restarts with a long one. */
static void long_deadline_enclave(void)
{
    assert_int_equal(proc_stop(&G.enc, SIGTERM, 15000) >= 0, 1);
    assert_int_equal(start_enclave("--stream-timeout", "120"), 0);
    set_creds("2099-01-01T00:00:00Z");
}

static void test_concurrent_streams(void **state)
{
    (void)state;
    enum { N = 200 };
    long_deadline_enclave();
    lconn *cs = calloc(N, sizeof *cs);
    keys *ks = calloc(N, sizeof *ks);
    for (int i = 0; i < N; i++) {
        make_keys(&ks[i]);
        char prompt[64];
        snprintf(prompt, sizeof prompt, "[[sim: chunks=10 interval-ms=150]] stream %d", i);
        char *req = stream_request(&ks[i], prompt, NULL, 0, NULL);
        lc_request(&cs[i], req);
        free(req);
    }
    /* HEALTH answers while the streams run */
    int seen = 0;
    for (int tries = 0; tries < 50 && seen < N / 2; tries++) {
        seen = health_active_streams();
        usleep(20000);
    }
    assert_true(seen >= N / 2);
    set_creds("2099-01-01T00:00:00Z"); /* and SET_CREDENTIALS too */
    for (int i = 0; i < N; i++) {
        result res;
        read_stream(&cs[i], &ks[i], &res, 30000);
        if (!res.final_ok)
            fail_msg("stream %d: %s", i, res.error);
        char echo[32];
        snprintf(echo, sizeof echo, "stream %d", i);
        vbuf want = VBUF_INIT;
        expected(&want, echo, 10);
        assert_int_equal(res.answer.len, want.len);
        assert_memory_equal(res.answer.data, want.data, want.len);
        vbuf_free(&want);
        result_free(&res);
        lc_close(&cs[i]);
    }
    free(cs);
    free(ks);
    assert_int_equal(health_active_streams(), 0);
}

static void test_parent_disconnect(void **state)
{
    (void)state;
    keys k;
    make_keys(&k);
    char *req = stream_request(&k, "[[sim: chunks=200 interval-ms=50]] long", NULL, 0, NULL);
    lconn c;
    lc_request(&c, req);
    free(req);
    json_t *first = lc_next(&c, 10000);
    assert_non_null(json_object_get(first, "encrypted_content"));
    json_decref(first);
    assert_int_equal(health_active_streams(), 1);
    lc_close(&c); /* the parent goes away mid-stream */
    int active = 1;
    for (int i = 0; i < 1000 && active; i++) { /* bounded: 20 s */
        usleep(20000);
        active = health_active_streams();
    }
    assert_int_equal(active, 0); /* the request and its upstream call were freed */
    assert_int_equal(proc_wait_log(&G.enc, "event=request_cancelled", 5000), 0);
}

/* Occurrences of needle in a process's log so far. */
static int log_count(const proc *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    assert_non_null(f);
    int n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static void chat_ok(const char *prompt)
{
    keys k;
    result res;
    chat(prompt, NULL, 0, NULL, &k, &res);
    if (!res.final_ok)
        fail_msg("%s: %s", prompt, res.error);
    result_free(&res);
}

static int health_int(const char *field)
{
    json_t *r = request("{\"command\":\"HEALTH\"}");
    int n = (int)json_integer_value(json_object_get(r, field));
    json_decref(r);
    return n;
}

/* K: veil-enclave keeps its Bedrock connections alive. Chats one after the other
 * share one CONNECT tunnel (veil-proxy logs event=connected once per tunnel) per
 * worker: each worker has its own pool, and a chat goes to the worker with the
 * fewest connections (the lowest when even), so with several workers a chat may
 * find the other one's pool; rotated credentials apply on the kept connection
 * (each request is signed on its own); --upstream-pool-max-idle 0 opens a tunnel
 * per chat, as before. */
static void test_upstream_pool(void **state)
{
    (void)state;
    assert_true(proc_stop(&G.enc, SIGTERM, 15000) >= 0);
    assert_int_equal(start_enclave(NULL, NULL), 0);
    set_creds(NULL);
    int workers = health_int("workers");
    assert_true(workers >= 1);
    int t0 = log_count(&G.proxy, "event=connected"), r0 = log_count(&G.enc, "event=https_pool_reused");
    for (int i = 0; i < 3; i++)
        chat_ok("[[sim: chunks=3]] kept");
    int tunnels = log_count(&G.proxy, "event=connected") - t0;
    assert_true(tunnels >= 1 && tunnels <= workers); /* at most one per worker's pool */
    /* every chat that did not open a tunnel reused one (the enclave's log is appended to) */
    assert_int_equal(log_count(&G.enc, "event=https_pool_reused"), r0 + 3 - tunnels);
    /* wrong credentials fail on a kept connection; the right ones work again on it */
    json_t *r = request("{\"command\":\"SET_CREDENTIALS\",\"credentials\":{\"access_key_id\":\"" AKID "\","
                        "\"secret_access_key\":\"not-the-secret\",\"session_token\":\"" TOKEN "\"}}");
    assert_string_equal(jstr(r, "status"), "success");
    json_decref(r);
    expect_error("[[sim: chunks=3]] wrong key", "upstream_denied");
    set_creds(NULL);
    chat_ok("[[sim: chunks=3]] rotated");
    assert_true(log_count(&G.proxy, "event=connected") - t0 <= workers);

    assert_true(proc_stop(&G.enc, SIGTERM, 15000) >= 0);
    assert_int_equal(start_enclave("--upstream-pool-max-idle", "0"), 0);
    set_creds(NULL);
    int t1 = log_count(&G.proxy, "event=connected"), p1 = log_count(&G.enc, "event=https_pool");
    for (int i = 0; i < 3; i++)
        chat_ok("[[sim: chunks=3]] one tunnel each");
    assert_int_equal(log_count(&G.proxy, "event=connected"), t1 + 3);
    assert_int_equal(log_count(&G.enc, "event=https_pool"), p1); /* no pool at all */

    assert_true(proc_stop(&G.enc, SIGTERM, 15000) >= 0);
    assert_int_equal(start_enclave(NULL, NULL), 0);
    set_creds(NULL);
}

/* Last: SIGTERM lets a running stream finish, then the enclave exits 0. */
static void test_sigterm_drain(void **state)
{
    (void)state;
    keys k;
    make_keys(&k);
    char *req = stream_request(&k, "[[sim: chunks=20 interval-ms=50]] drain", NULL, 0, NULL);
    lconn c;
    lc_request(&c, req);
    free(req);
    json_t *first = lc_next(&c, 10000);
    assert_non_null(first);
    json_decref(first);
    kill(G.enc.pid, SIGTERM);
    result res;
    read_stream(&c, &k, &res, 15000);
    assert_true(res.final_ok);
    assert_int_equal(res.chunks, 19); /* the first was read above */
    result_free(&res);
    lc_close(&c);
    int st = proc_stop(&G.enc, SIGTERM, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* H: the enclave's NSM (here the simulator) signs a document that binds its
 * transport key, the caller's nonce and veil's statement; a client verifies it down
 * to the simulator's root (and the pinned AWS root refuses it). */
static void test_attestation(void **state)
{
    (void)state;
    json_t *h = request("{\"command\":\"HEALTH\"}");
    assert_string_equal(jstr(h, "nsm"), "simulated");
    json_decref(h);
    uint8_t nonce[24];
    char nonce_hex[49], req[160], pub_hex[65];
    for (size_t i = 0; i < sizeof nonce; i++)
        nonce[i] = (uint8_t)(0xa0 + i);
    hex_encode(nonce, sizeof nonce, nonce_hex);
    hex_encode(G.enc_pub, 32, pub_hex);
    snprintf(req, sizeof req, "{\"command\":\"GET_ATTESTATION\",\"nonce\":\"%s\"}", nonce_hex);
    json_t *r = request(req);
    assert_string_equal(jstr(r, "status"), "success");
    assert_string_equal(jstr(r, "nsm"), "simulated");
    assert_string_equal(jstr(r, "public_key"), pub_hex);
    const char *b64 = jstr(r, "attestation");
    assert_non_null(b64);
    uint8_t doc[ATTEST_MAX_DOC_LEN];
    long n = base64_decode(B64_STD, b64, strlen(b64), doc, sizeof doc);
    assert_true(n > 0);
    char root[700], err[300];
    snprintf(root, sizeof root, "%s/nsm/root.pem", h_tmpdir());
    uint8_t *der;
    size_t der_len;
    assert_int_equal(attest_root_load(root, &der, &der_len, err, sizeof err), ATTEST_OK);
    attest_options opt = {.root_der = der, .root_der_len = der_len, .nonce = nonce, .nonce_len = sizeof nonce,
                          .public_key = G.enc_pub, .public_key_len = 32,
                          .user_data = (const uint8_t *)ATTEST_USER_DATA, .user_data_len = strlen(ATTEST_USER_DATA)};
    attest_doc d;
    assert_int_equal(attest_verify(doc, (size_t)n, &opt, &d, err, sizeof err), ATTEST_OK);
    /* another nonce is another document: a replayed one fails the binding */
    uint8_t other[24] = {1};
    opt.nonce = other;
    assert_int_equal(attest_verify(doc, (size_t)n, &opt, NULL, err, sizeof err), ATTEST_ERR_NONCE);
    /* the pinned AWS root never trusts the simulator */
    opt.nonce = nonce;
    opt.root_der = NULL;
    opt.root_der_len = 0;
    assert_int_equal(attest_verify(doc, (size_t)n, &opt, NULL, err, sizeof err), ATTEST_ERR_ROOT);
    free(der);
    json_decref(r);
    /* refusals */
    static const char *const BAD[] = {"{\"command\":\"GET_ATTESTATION\"}",
                                      "{\"command\":\"GET_ATTESTATION\",\"nonce\":\"\"}",
                                      "{\"command\":\"GET_ATTESTATION\",\"nonce\":\"abc\"}",
                                      "{\"command\":\"GET_ATTESTATION\",\"nonce\":\"zz\"}"};
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        r = request(BAD[i]);
        assert_string_equal(jstr(r, "status"), "error");
        assert_string_equal(jstr(r, "error_code"), "bad_request");
        json_decref(r);
    }
    char big[2 * 1025 + 80];
    int k = snprintf(big, sizeof big, "{\"command\":\"GET_ATTESTATION\",\"nonce\":\"");
    for (int i = 0; i < 2 * 1025; i++)
        big[k++] = 'a';
    snprintf(big + k, sizeof big - (size_t)k, "\"}");
    r = request(big);
    assert_string_equal(jstr(r, "error"), "Invalid field: 'nonce' must be 1 to 1024 bytes of hex");
    json_decref(r);
}

/* An enclave that cannot reach its NSM refuses to start (here there is no
 * /dev/nsm): a key nobody can verify must not be served by default. */
static void test_refuses_without_nsm(void **state)
{
    (void)state;
    proc p;
    char addr[600];
    snprintf(addr, sizeof addr, "unix:%s", h_path("no-nsm", ".sock"));
    const char *argv[] = {h_bin("veil-enclave"), "--listen", addr, "--proxy", "none", NULL};
    static const char *const env[] = {"ENCLAVE_NSM=dev:/nonexistent/nsm", NULL};
    assert_int_equal(proc_start(&p, "enclave-no-nsm", argv, env), 0);
    int st = -1;
    pid_t r = 0;
    for (int i = 0; i < 500 && (r = waitpid(p.pid, &st, WNOHANG)) == 0; i++) /* bounded: 10 s */
        usleep(20000);
    proc_stop(&p, SIGKILL, 1000); /* forgets it (and kills it if it was still up) */
    assert_true(r > 0); /* it exited by itself */
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 1);
    assert_true(proc_log_contains(&p, "(use --nsm none to run without attestation)"));
    assert_false(proc_log_contains(&p, "event=listening"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_attestation),
        cmocka_unit_test(test_refuses_without_nsm),
        cmocka_unit_test(test_no_credentials),
        cmocka_unit_test(test_stream_and_storage),
        cmocka_unit_test(test_history_roles),
        cmocka_unit_test(test_upstream_failures),
        cmocka_unit_test(test_request_failures),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_bare_request_closes),
        cmocka_unit_test(test_stream_format_refused),
        cmocka_unit_test(test_concurrent_streams),
        cmocka_unit_test(test_parent_disconnect),
        cmocka_unit_test(test_upstream_pool),
        cmocka_unit_test(test_sigterm_drain),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

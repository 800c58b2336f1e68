/* The AWS path end to end over real sockets and real TLS: our Bedrock client ->
 * veil-proxy (CONNECT, allowlist, --resolve) -> veil-bedrock-sim (SigV4 check,
 * event-stream), every fault of the sim as a distinct error, proxy statuses,
 * certificate checks, many concurrent streams, kept-alive connections (one CONNECT
 * tunnel for many calls, a server that closes one, the retry and its limit), and the
 * IMDSv2 client against veil-imds-sim. */
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
#include <unistd.h>

#include "aws/bedrock.h"
#include "aws/imds.h"
#include "common/buf.h"
#include "harness.h"

#define HOST "bedrock-runtime.us-east-1.amazonaws.com"
#define MODEL "us.anthropic.claude-3-5-haiku-20241022-v1:0"
#define AKID "AKIDVEILTEST"
#define SECRET "veil-test-secret-access-key"
#define TOKEN "veil-test-session-token"

static struct {
    proc sim, proxy, imds;
    int sim_port, imds_port;
    char ca[512], proxy_sock[512];
    veil_addr proxy_addr;
    struct event_base *base;
    https_ctx *https;
} G;

static int port_of(const proc *p)
{
    const char *c = strrchr(p->addr, ':');
    return c ? atoi(c + 1) : -1;
}

static int setup(void **state)
{
    (void)state;
    char cmd[1024], dir[400];
    snprintf(dir, sizeof dir, "%s/ca", h_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s %s localhost", h_src("scripts/make-test-ca"), dir, HOST);
    if (system(cmd) != 0)
        return -1;
    snprintf(G.ca, sizeof G.ca, "%s/ca.pem", dir);
    char cert[600], key[600];
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    const char *sim_argv[] = {h_bin("veil-bedrock-sim"), "--listen", "tcp:127.0.0.1:0", "--cert", cert,
                              "--key", key, "--access-key-id", AKID, "--secret-access-key", SECRET,
                              "--session-token", TOKEN, NULL};
    if (proc_start(&G.sim, "bedrock-sim", sim_argv, NULL) < 0 || proc_wait_listening(&G.sim, 10000) < 0)
        return -1;
    G.sim_port = port_of(&G.sim);
    char allow[300], resolve[300], listen[600];
    snprintf(G.proxy_sock, sizeof G.proxy_sock, "%s", h_path("proxy", ".sock"));
    snprintf(listen, sizeof listen, "unix:%s", G.proxy_sock);
    snprintf(allow, sizeof allow, "%s:%d", HOST, G.sim_port);
    snprintf(resolve, sizeof resolve, "%s:%d:127.0.0.1", HOST, G.sim_port);
    char allow2[300], resolve2[300];
    /* a second name that resolves to the sim but is not in its certificate */
    snprintf(allow2, sizeof allow2, "bedrock-runtime.us-west-2.amazonaws.com:%d", G.sim_port);
    snprintf(resolve2, sizeof resolve2, "bedrock-runtime.us-west-2.amazonaws.com:%d:127.0.0.1", G.sim_port);
    const char *px_argv[] = {h_bin("veil-proxy"), "--listen", listen, "--allow", allow, "--resolve", resolve,
                             "--allow", allow2, "--resolve", resolve2, NULL};
    if (proc_start(&G.proxy, "proxy", px_argv, NULL) < 0 || proc_wait_listening(&G.proxy, 10000) < 0)
        return -1;
    const char *imds_argv[] = {h_bin("veil-imds-sim"), "--listen", "tcp:127.0.0.1:0", "--access-key-id",
                               "ASIAIMDSTEST", "--secret-access-key", "imds-secret", "--session-token",
                               "imds-token", "--expiration-seconds", "3600", NULL};
    if (proc_start(&G.imds, "imds-sim", imds_argv, NULL) < 0 || proc_wait_listening(&G.imds, 10000) < 0)
        return -1;
    G.imds_port = port_of(&G.imds);
    char err[256];
    if (addr_parse(listen, &G.proxy_addr, err, sizeof err) < 0)
        return -1;
    G.base = event_base_new();
    G.https = https_ctx_new(G.base, G.ca, err, sizeof err);
    return G.https ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    https_ctx_free(G.https);
    event_base_free(G.base);
    int ok = 0;
    proc *ps[] = {&G.sim, &G.proxy, &G.imds};
    for (size_t i = 0; i < 3; i++) {
        int st = proc_stop(ps[i], SIGTERM, 5000);
        if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0))
            ok = -1;
        if (proc_log_contains(ps[i], "AddressSanitizer") || proc_log_contains(ps[i], "runtime error"))
            ok = -1;
    }
    return ok;
}

/* ---- a call and its outcome ---- */

typedef struct call {
    vbuf text;
    long in_tokens, out_tokens;
    char stop[64];
    bool done;
    bool failed;
    bedrock_error err;
    int n_text;
} call;

static int on_text(void *ud, const char *t, size_t n)
{
    call *c = ud;
    c->n_text++;
    return vbuf_append(&c->text, t, n);
}

static void on_usage(void *ud, long in, long out)
{
    call *c = ud;
    c->in_tokens = in;
    c->out_tokens = out;
}

static void on_stop(void *ud, const char *reason)
{
    call *c = ud;
    snprintf(c->stop, sizeof c->stop, "%s", reason);
}

static int g_pending;

static void on_done(void *ud, const bedrock_error *e)
{
    call *c = ud;
    c->done = true;
    if (e) {
        c->failed = true;
        c->err = *e;
    }
    g_pending--;
}

static const bedrock_callbacks CB = {on_text, NULL, on_usage, on_stop, on_done};

/* Runs the loop until every pending call finished, or timeout_ms passed. */
static void run_loop(int timeout_ms)
{
    for (int waited = 0; g_pending > 0 && waited < timeout_ms; waited += 20) {
        struct timeval slice = {0, 20000};
        event_base_loopexit(G.base, &slice);
        event_base_dispatch(G.base);
    }
}

static bedrock_client *client_pooled(const char *host, bool via_proxy, unsigned idle_ms, https_pool *pool)
{
    bedrock_config cfg = {.region = "us-east-1", .host = host, .port = (uint16_t)G.sim_port,
                          .proxy = via_proxy ? &G.proxy_addr : NULL, .idle_timeout_ms = idle_ms,
                          .connect_timeout_ms = 5000, .pool = pool};
    return bedrock_client_new(G.https, &cfg);
}

static bedrock_client *client(const char *host, bool via_proxy, unsigned idle_ms)
{
    return client_pooled(host, via_proxy, idle_ms, NULL);
}

static const sigv4_credentials CREDS = {AKID, SECRET, TOKEN};

static void start_call(bedrock_client *b, call *c, const char *prompt, bool stream,
                       const sigv4_credentials *creds)
{
    memset(c, 0, sizeof *c);
    bedrock_message msgs[] = {{"user", prompt, strlen(prompt)}};
    bedrock_request req = {.model_id = MODEL, .messages = msgs, .n_messages = 1,
                           .system = "You are a helpful AI assistant.", .temperature = 0.7,
                           .creds = creds ? creds : &CREDS};
    bedrock_error err;
    bedrock_call *bc = stream ? bedrock_converse_stream(b, &req, &CB, c, &err)
                              : bedrock_converse(b, &req, &CB, c, &err);
    assert_non_null(bc);
    g_pending++;
}

static void one(bedrock_client *b, call *c, const char *prompt, bool stream)
{
    start_call(b, c, prompt, stream, NULL);
    run_loop(20000);
    if (!c->done) {
        g_pending = 0;
        fail_msg("no answer within 20 s for: %s", prompt);
    }
}

/* the sim's answer rule */
static void expected_answer(vbuf *out, const char *echo, int n, int chunk_size)
{
    vbuf_printf(out, "Echo: %s", echo);
    for (int i = 1; i < n; i++) {
        char d[64];
        int len = snprintf(d, sizeof d, " chunk %d", i);
        vbuf_append(out, d, (size_t)len);
        for (int k = len; k < chunk_size; k++)
            vbuf_append(out, ".", 1);
    }
}

static void test_stream_through_proxy(void **state)
{
    (void)state;
    bedrock_client *b = client(NULL, true, 0);
    call c;
    one(b, &c, "[[sim: chunks=40 chunk-size=24]] hello there", true);
    assert_false(c.failed);
    vbuf want = VBUF_INIT;
    expected_answer(&want, "hello there", 40, 24);
    assert_int_equal(c.text.len, want.len);
    assert_memory_equal(c.text.data, want.data, want.len);
    assert_int_equal(c.n_text, 40);
    assert_int_equal(c.out_tokens, 40);
    assert_true(c.in_tokens > 0);
    assert_string_equal(c.stop, "end_turn");
    vbuf_free(&want);
    vbuf_free(&c.text);
    bedrock_client_free(b);
}

/* After one full handshake, the next connections to the same host resume the
 * session: no certificate chain to send or verify. */
static void test_tls_resumption(void **state)
{
    (void)state;
    bedrock_client *b = client(NULL, true, 0);
    unsigned long r0, f0, r1, f1;
    call c;
    one(b, &c, "[[sim: chunks=2]] warm", true);
    vbuf_free(&c.text);
    https_ctx_stats(G.https, &r0, &f0);
    for (int i = 0; i < 3; i++) {
        one(b, &c, "[[sim: chunks=2]] again", true);
        assert_false(c.failed);
        vbuf_free(&c.text);
    }
    https_ctx_stats(G.https, &r1, &f1);
    assert_int_equal(r1 - r0, 3);
    assert_int_equal(f1, f0);
    bedrock_client_free(b);
}

static void test_converse_non_stream(void **state)
{
    (void)state;
    bedrock_client *b = client(NULL, true, 0);
    call c;
    one(b, &c, "[[sim: chunks=3]] plain call", false);
    assert_false(c.failed);
    vbuf want = VBUF_INIT;
    expected_answer(&want, "plain call", 3, 0);
    assert_int_equal(c.text.len, want.len);
    assert_memory_equal(c.text.data, want.data, want.len);
    vbuf_free(&want);
    vbuf_free(&c.text);
    bedrock_client_free(b);
}

static void test_direct_mode(void **state)
{
    (void)state;
    bedrock_client *b = client("localhost", false, 0); /* no proxy: straight to the sim */
    call c;
    one(b, &c, "direct", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    bedrock_client_free(b);
}

static void expect_fault(const char *prompt, bedrock_err code, int status, const char *type,
                         unsigned idle_ms)
{
    bedrock_client *b = client(NULL, true, idle_ms);
    call c;
    one(b, &c, prompt, true);
    if (!c.failed)
        fail_msg("%s: expected a failure", prompt);
    if (c.err.code != code)
        fail_msg("%s: got %s (%s), want %s", prompt, bedrock_strerror(c.err.code), c.err.message,
                 bedrock_strerror(code));
    if (status)
        assert_int_equal(c.err.http_status, status);
    if (type)
        assert_string_equal(c.err.type, type);
    vbuf_free(&c.text);
    bedrock_client_free(b);
}

static void test_every_fault(void **state)
{
    (void)state;
    expect_fault("[[sim: fault=drop chunks=10]] x", BEDROCK_ERR_TRUNCATED, 0, NULL, 0);
    expect_fault("[[sim: fault=bad-crc chunks=5]] x", BEDROCK_ERR_DECODE, 0, NULL, 0);
    expect_fault("[[sim: fault=throttle]] x", BEDROCK_ERR_EXCEPTION, 0, "throttlingException", 0);
    expect_fault("[[sim: fault=validation]] x", BEDROCK_ERR_EXCEPTION, 0, "validationException", 0);
    expect_fault("[[sim: fault=model-error]] x", BEDROCK_ERR_EXCEPTION, 0, "modelStreamErrorException", 0);
    expect_fault("[[sim: fault=http-429]] x", BEDROCK_ERR_HTTP, 429, "ThrottlingException", 0);
    expect_fault("[[sim: fault=http-500]] x", BEDROCK_ERR_HTTP, 500, "InternalServerException", 0);
    expect_fault("[[sim: fault=http-400]] x", BEDROCK_ERR_HTTP, 400, "ValidationException", 0);
    expect_fault("[[sim: fault=hang]] x", BEDROCK_ERR_TIMEOUT, 0, NULL, 500);
    /* a slow first byte within the idle deadline is fine */
    bedrock_client *b = client(NULL, true, 3000);
    call c;
    one(b, &c, "[[sim: slow-first-byte=300]] slow", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    /* an empty answer is not an error for the client: the enclave decides */
    one(b, &c, "[[sim: fault=empty]] x", true);
    assert_false(c.failed);
    assert_int_equal(c.text.len, 0);
    bedrock_client_free(b);
}

static void test_bad_credentials(void **state)
{
    (void)state;
    bedrock_client *b = client(NULL, true, 0);
    call c;
    sigv4_credentials wrong = {AKID, "not-the-secret", TOKEN};
    start_call(b, &c, "x", true, &wrong);
    run_loop(10000);
    assert_true(c.failed);
    assert_int_equal(c.err.code, BEDROCK_ERR_HTTP);
    assert_int_equal(c.err.http_status, 403);
    assert_string_equal(c.err.type, "InvalidSignatureException");
    sigv4_credentials unknown = {"AKIDUNKNOWN", SECRET, TOKEN};
    start_call(b, &c, "x", true, &unknown);
    run_loop(10000);
    assert_int_equal(c.err.http_status, 403);
    assert_string_equal(c.err.type, "UnrecognizedClientException");
    bedrock_client_free(b);
}

static void test_proxy_and_tls_refusals(void **state)
{
    (void)state;
    /* a destination the proxy does not allow */
    bedrock_config cfg = {.region = "eu-west-1", .port = (uint16_t)G.sim_port, .proxy = &G.proxy_addr};
    bedrock_client *b = bedrock_client_new(G.https, &cfg);
    call c;
    one(b, &c, "x", true);
    assert_true(c.failed);
    assert_int_equal(c.err.code, BEDROCK_ERR_TRANSPORT);
    assert_non_null(strstr(c.err.message, "403"));
    bedrock_client_free(b);
    /* allowed by the proxy, but the certificate does not name this host */
    b = client("bedrock-runtime.us-west-2.amazonaws.com", true, 0);
    one(b, &c, "x", true);
    assert_true(c.failed);
    assert_int_equal(c.err.code, BEDROCK_ERR_TRANSPORT);
    assert_non_null(strstr(c.err.message, "certificate"));
    bedrock_client_free(b);
    /* a trust store without the test CA */
    char err[200];
    https_ctx *sys = https_ctx_new(G.base, NULL, err, sizeof err);
    bedrock_config cfg2 = {.region = "us-east-1", .port = (uint16_t)G.sim_port, .proxy = &G.proxy_addr};
    b = bedrock_client_new(sys, &cfg2);
    one(b, &c, "x", true);
    assert_true(c.failed);
    assert_non_null(strstr(c.err.message, "certificate"));
    bedrock_client_free(b);
    https_ctx_free(sys);
    /* no proxy listening */
    veil_addr none;
    assert_int_equal(addr_parse("unix:/nonexistent/veil-proxy.sock", &none, err, sizeof err), 0);
    bedrock_config cfg3 = {.region = "us-east-1", .port = (uint16_t)G.sim_port, .proxy = &none};
    b = bedrock_client_new(G.https, &cfg3);
    one(b, &c, "x", true);
    assert_true(c.failed);
    assert_int_equal(c.err.code, BEDROCK_ERR_TRANSPORT);
    assert_non_null(strstr(c.err.message, "connect"));
    bedrock_client_free(b);
}

static void test_many_concurrent_streams(void **state)
{
    (void)state;
    enum { N = 100 };
    bedrock_client *b = client(NULL, true, 0);
    call *cs = calloc(N, sizeof *cs);
    char prompts[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(prompts[i], sizeof prompts[i], "[[sim: chunks=12 interval-ms=5]] stream %d", i);
        start_call(b, &cs[i], prompts[i], true, NULL);
    }
    run_loop(60000);
    for (int i = 0; i < N; i++) {
        assert_true(cs[i].done);
        assert_false(cs[i].failed);
        char echo[32];
        snprintf(echo, sizeof echo, "stream %d", i);
        vbuf want = VBUF_INIT;
        expected_answer(&want, echo, 12, 0);
        assert_int_equal(cs[i].text.len, want.len);
        assert_memory_equal(cs[i].text.data, want.data, want.len);
        vbuf_free(&want);
        vbuf_free(&cs[i].text);
    }
    free(cs);
    bedrock_client_free(b);
}

static int cancel_on_first(void *ud, const char *t, size_t n)
{
    (void)t;
    (void)n;
    call *c = ud;
    c->n_text++;
    return 1; /* stop: the call is cancelled, no on_done follows */
}

static void test_cancel_mid_stream(void **state)
{
    (void)state;
    bedrock_client *b = client(NULL, true, 0);
    static const bedrock_callbacks cb = {cancel_on_first, NULL, NULL, NULL, on_done};
    call c;
    memset(&c, 0, sizeof c);
    const char *p = "[[sim: chunks=50 interval-ms=20]] cancel me";
    bedrock_message msgs[] = {{"user", p, strlen(p)}};
    bedrock_request req = {.model_id = MODEL, .messages = msgs, .n_messages = 1, .temperature = -1,
                           .creds = &CREDS};
    bedrock_error err;
    assert_non_null(bedrock_converse_stream(b, &req, &cb, &c, &err));
    g_pending = 1;
    run_loop(1500); /* nothing completes: on_done never runs after a cancel */
    g_pending = 0;
    assert_int_equal(c.n_text, 1);
    assert_false(c.done);
    bedrock_client_free(b);
}

/* ---- kept-alive connections ---- */

/* Occurrences of needle in a process's log so far. */
static int log_count(const proc *p, const char *needle)
{
    FILE *f = fopen(p->log_path, "r");
    if (!f)
        return -1;
    int n = 0;
    char line[4096];
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

/* veil-proxy logs one event=connected per CONNECT tunnel it opens; the sim logs each
 * request with conn_seq=1 when it came on a new connection. The log line lands just
 * after the event it counts: wait for it, never for a count to stay put. */
static void wait_count(const proc *p, const char *needle, int want)
{
    for (int i = 0; i < 500 && log_count(p, needle) < want; i++)
        usleep(20000);
    assert_int_equal(log_count(p, needle), want);
}

static https_pool *new_pool(unsigned max_idle)
{
    char err[160];
    https_pool_config pc = https_pool_config_default();
    pc.max_idle = max_idle;
    https_pool *pool = https_pool_new(G.https, &pc, err, sizeof err);
    assert_non_null(pool);
    return pool;
}

static https_pool_stats pool_stats(const https_pool *p)
{
    https_pool_stats st;
    https_pool_get_stats(p, &st);
    return st;
}

/* Streams, a Converse call, an HTTP error and a refused signature, one after the
 * other: one CONNECT tunnel and one TLS session carry them all. The credentials are
 * per request (SigV4), so a wrong key on a kept connection fails only that call. */
static void test_pool_one_tunnel_for_many_calls(void **state)
{
    (void)state;
    https_pool *pool = new_pool(8);
    bedrock_client *b = client_pooled(NULL, true, 0, pool);
    int tunnels0 = log_count(&G.proxy, "event=connected");
    call c;
    one(b, &c, "[[sim: chunks=5]] kept alive", true);
    assert_false(c.failed);
    vbuf want = VBUF_INIT;
    expected_answer(&want, "kept alive", 5, 0);
    assert_int_equal(c.text.len, want.len);
    assert_memory_equal(c.text.data, want.data, want.len);
    vbuf_free(&want);
    vbuf_free(&c.text);
    one(b, &c, "[[sim: chunks=3]] plain call", false);
    assert_false(c.failed);
    vbuf_free(&c.text);
    one(b, &c, "[[sim: fault=http-429]] x", true);
    assert_int_equal(c.err.http_status, 429);
    sigv4_credentials wrong = {AKID, "not-the-secret", TOKEN};
    start_call(b, &c, "x", true, &wrong);
    run_loop(10000);
    assert_int_equal(c.err.http_status, 403);
    one(b, &c, "[[sim: chunks=2]] right key again", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    wait_count(&G.proxy, "event=connected", tunnels0 + 1);
    https_pool_stats st = pool_stats(pool);
    assert_int_equal(st.opened, 1);
    assert_int_equal(st.reused, 4);
    assert_int_equal(st.idle, 1);
    bedrock_client_free(b);
    https_pool_free(pool);
}

/* The server takes a request on a kept connection and closes it without answering:
 * the call succeeds on a fresh tunnel, and the caller sees one clean stream. */
static void test_pool_retry_through_proxy(void **state)
{
    (void)state;
    https_pool *pool = new_pool(8);
    bedrock_client *b = client_pooled(NULL, true, 0, pool);
    int tunnels0 = log_count(&G.proxy, "event=connected");
    call c;
    one(b, &c, "[[sim: chunks=2]] first", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    one(b, &c, "[[sim: fault=close-reused chunks=4]] closed under us", true);
    if (c.failed)
        fail_msg("the retry did not hide the closed connection: %s", c.err.message);
    vbuf want = VBUF_INIT;
    expected_answer(&want, "closed under us", 4, 0);
    assert_int_equal(c.text.len, want.len);
    assert_memory_equal(c.text.data, want.data, want.len);
    vbuf_free(&want);
    vbuf_free(&c.text);
    wait_count(&G.proxy, "event=connected", tunnels0 + 2);
    assert_int_equal(pool_stats(pool).retried, 1);
    bedrock_client_free(b);
    https_pool_free(pool);
}

/* Half an answer, then the connection drops: the caller gets the error, and the
 * request is not sent again (the sim saw it once). */
static void test_pool_no_retry_after_half_answer(void **state)
{
    (void)state;
    https_pool *pool = new_pool(8);
    bedrock_client *b = client_pooled(NULL, true, 0, pool);
    call c;
    one(b, &c, "[[sim: chunks=2]] first", true);
    vbuf_free(&c.text);
    int drops0 = log_count(&G.sim, "fault=drop");
    one(b, &c, "[[sim: fault=drop chunks=10]] cut", true);
    assert_true(c.failed);
    assert_int_equal(c.err.code, BEDROCK_ERR_TRUNCATED);
    assert_true(c.n_text > 0); /* the caller saw part of it */
    wait_count(&G.sim, "fault=drop", drops0 + 1); /* a retry comes before on_done: none came */
    assert_int_equal(pool_stats(pool).retried, 0);
    vbuf_free(&c.text);
    bedrock_client_free(b);
    https_pool_free(pool);
}

/* A sim that closes kept connections idle for 200 ms (as AWS does after about 60 s):
 * the pool sees the close_notify while the connection is idle and drops it; the next
 * call connects afresh without an error. */
static void test_pool_server_closes_idle(void **state)
{
    (void)state;
    char cert[600], key[600], dir[400];
    snprintf(dir, sizeof dir, "%s/ca", h_tmpdir());
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    proc sim;
    const char *argv[] = {h_bin("veil-bedrock-sim"), "--listen", "tcp:127.0.0.1:0", "--cert", cert, "--key", key,
                          "--access-key-id", AKID, "--secret-access-key", SECRET, "--session-token", TOKEN,
                          "--keep-alive-ms", "200", NULL};
    assert_int_equal(proc_start(&sim, "bedrock-sim-idle", argv, NULL), 0);
    assert_int_equal(proc_wait_listening(&sim, 10000), 0);
    https_pool *pool = new_pool(8);
    bedrock_config cfg = {.region = "us-east-1", .host = "localhost", .port = (uint16_t)port_of(&sim),
                          .connect_timeout_ms = 5000, .pool = pool};
    bedrock_client *b = bedrock_client_new(G.https, &cfg);
    call c;
    one(b, &c, "[[sim: chunks=2]] then idle", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    assert_int_equal(proc_wait_log(&sim, "outcome=keep_alive_timeout", 10000), 0);
    for (int i = 0; i < 500 && pool_stats(pool).dropped == 0; i++) {
        struct timeval slice = {0, 20000};
        event_base_loopexit(G.base, &slice);
        event_base_dispatch(G.base);
    }
    assert_int_equal(pool_stats(pool).dropped, 1);
    one(b, &c, "[[sim: chunks=2]] after the close", true);
    assert_false(c.failed);
    vbuf_free(&c.text);
    wait_count(&sim, "conn_seq=1", 2);
    assert_int_equal(pool_stats(pool).retried, 0);
    bedrock_client_free(b);
    https_pool_free(pool);
    int st = proc_stop(&sim, SIGTERM, 5000);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- IMDS ---- */

typedef struct imds_out {
    bool done;
    char err[300];
    imds_credentials creds;
    char region[64];
} imds_out;

static void on_creds(void *ud, const imds_credentials *c, const char *err)
{
    imds_out *o = ud;
    o->done = true;
    if (err)
        snprintf(o->err, sizeof o->err, "%s", err);
    else
        o->creds = *c;
    g_pending--;
}

static void on_region(void *ud, const char *region, const char *err)
{
    imds_out *o = ud;
    o->done = true;
    if (err)
        snprintf(o->err, sizeof o->err, "%s", err);
    else
        snprintf(o->region, sizeof o->region, "%s", region);
    g_pending--;
}

static void test_imds(void **state)
{
    (void)state;
    imds_config cfg = {.host = "127.0.0.1", .port = (uint16_t)G.imds_port, .timeout_ms = 2000};
    imds_out o = {0};
    g_pending = 1;
    assert_non_null(imds_fetch_credentials(G.https, &cfg, on_creds, &o));
    run_loop(10000);
    assert_true(o.done);
    assert_string_equal(o.err, "");
    assert_string_equal(o.creds.access_key_id, "ASIAIMDSTEST");
    assert_string_equal(o.creds.secret_access_key, "imds-secret");
    assert_string_equal(o.creds.session_token, "imds-token");
    assert_string_equal(o.creds.role, "veil-enclave-role");
    time_t now = time(NULL);
    assert_true(o.creds.expires_at > now + 3000 && o.creds.expires_at <= now + 3700);

    memset(&o, 0, sizeof o);
    g_pending = 1;
    assert_non_null(imds_fetch_region(G.https, &cfg, on_region, &o));
    run_loop(10000);
    assert_string_equal(o.region, "us-east-1");

    /* nothing listening: a clear connect error, quickly */
    imds_config dead = {.host = "127.0.0.1", .port = 1, .timeout_ms = 1000};
    memset(&o, 0, sizeof o);
    g_pending = 1;
    assert_non_null(imds_fetch_credentials(G.https, &dead, on_creds, &o));
    run_loop(5000);
    assert_true(o.done);
    assert_non_null(strstr(o.err, "IMDS token request failed"));

    /* the HTTP status is checked (defect §10.22): the sim answers 404 for a wrong path;
     * point the client at the Bedrock sim's TLS port to get a protocol failure */
    imds_config wrong = {.host = "127.0.0.1", .port = (uint16_t)G.sim_port, .timeout_ms = 1000};
    memset(&o, 0, sizeof o);
    g_pending = 1;
    assert_non_null(imds_fetch_credentials(G.https, &wrong, on_creds, &o));
    run_loop(5000);
    assert_true(o.done);
    assert_true(strlen(o.err) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_through_proxy),
        cmocka_unit_test(test_tls_resumption),
        cmocka_unit_test(test_converse_non_stream),
        cmocka_unit_test(test_direct_mode),
        cmocka_unit_test(test_every_fault),
        cmocka_unit_test(test_bad_credentials),
        cmocka_unit_test(test_proxy_and_tls_refusals),
        cmocka_unit_test(test_many_concurrent_streams),
        cmocka_unit_test(test_cancel_mid_stream),
        cmocka_unit_test(test_pool_one_tunnel_for_many_calls),
        cmocka_unit_test(test_pool_retry_through_proxy),
        cmocka_unit_test(test_pool_no_retry_after_half_answer),
        cmocka_unit_test(test_pool_server_closes_idle),
        cmocka_unit_test(test_imds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

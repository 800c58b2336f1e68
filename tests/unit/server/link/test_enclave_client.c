/* server/enclave_client: veild's side of the enclave protocol, on a real event loop.
 *
 * Mock mode runs the enclave core in-process. Nitro mode talks to a small peer in
 * this program that listens on a unix socket of the same loop and answers each
 * request line as a test scripts it: key learning and restart detection, stream
 * events split anywhere on the wire, cancel (the enclave sees its connection
 * close), backpressure, a stale pooled connection retried once (and only once),
 * an enclave that starts after veild, and the deadlines. Every wait is bounded and
 * generous; no test measures time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "enclave/server.h"
#include "server/link/enclave_client.h"

#define K1 "1111111111111111111111111111111111111111111111111111111111111111"
#define K2 "2222222222222222222222222222222222222222222222222222222222222222"
#define WAIT_MS 30000u /* generous: a busy machine must not fail a test */

static struct event_base *base;
static enclave_client *ec;
static char sock_path[108];

/* ---- the in-test enclave peer (nitro mode) ---- */

#define MAX_PEER_CONNS 16
#define MAX_REQS 64

typedef struct peer_conn {
    struct bufferevent *bev;
    int id;
    bool closed; /* by the client (EOF) or by the peer */
    bool close_after_write;
} peer_conn;

/* A test's hook sees each request first; true means it answered (or not) itself. */
typedef bool (*peer_hook)(peer_conn *pc, const json_t *req);

static struct {
    int lfd;
    struct event *accept_ev;
    peer_conn *conns[MAX_PEER_CONNS];
    int n_conns;
    int eofs;              /* connections the client closed */
    json_t *reqs[MAX_REQS];
    int req_conn[MAX_REQS]; /* the connection each request came on */
    int n_reqs;
    int key_reqs;          /* GET_PUBLIC_KEY requests */
    char key[65];
    bool has_creds;
    long max_request;      /* 0: not in HEALTH */
    peer_hook hook;
} P;

static void peer_send(peer_conn *pc, const char *text)
{
    bufferevent_write(pc->bev, text, strlen(text));
}

static void peer_close(peer_conn *pc)
{
    if (pc->bev) {
        bufferevent_free(pc->bev);
        pc->bev = NULL;
    }
    pc->closed = true;
}

static void peer_answer(peer_conn *pc, const json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "command"));
    char line[512];
    if (cmd && strcmp(cmd, "GET_PUBLIC_KEY") == 0) {
        snprintf(line, sizeof line,
                 "{\"status\":\"success\",\"command\":\"GET_PUBLIC_KEY\",\"public_key\":\"%s\","
                 "\"region\":\"us-east-1\"}\n",
                 P.key);
    } else if (cmd && strcmp(cmd, "HEALTH") == 0) {
        char mr[48] = "";
        if (P.max_request)
            snprintf(mr, sizeof mr, ",\"max_request\":%ld", P.max_request);
        snprintf(line, sizeof line,
                 "{\"status\":\"success\",\"command\":\"HEALTH\",\"enclave\":\"running\","
                 "\"has_credentials\":%s,\"region\":\"us-east-1\",\"public_key\":\"%s\"%s}\n",
                 P.has_creds ? "true" : "false", P.key, mr);
    } else if (cmd && strcmp(cmd, "SET_CREDENTIALS") == 0) {
        P.has_creds = true;
        snprintf(line, sizeof line,
                 "{\"status\":\"success\",\"command\":\"SET_CREDENTIALS\",\"has_credentials\":true}\n");
    } else {
        snprintf(line, sizeof line, "{\"status\":\"error\",\"error\":\"Unknown command\"}\n");
    }
    peer_send(pc, line);
}

static void on_peer_read(struct bufferevent *bev, void *arg)
{
    peer_conn *pc = arg;
    size_t n;
    char *line;
    while (pc->bev && (line = evbuffer_readln(bufferevent_get_input(bev), &n, EVBUFFER_EOL_LF))) {
        json_error_t jerr;
        json_t *req = json_loadb(line, n, 0, &jerr);
        free(line);
        assert_non_null(req); /* the client sends one JSON object per line */
        assert_true(P.n_reqs < MAX_REQS);
        P.req_conn[P.n_reqs] = pc->id;
        P.reqs[P.n_reqs++] = req;
        const char *cmd = json_string_value(json_object_get(req, "command"));
        if (cmd && strcmp(cmd, "GET_PUBLIC_KEY") == 0)
            P.key_reqs++;
        if (!P.hook || !P.hook(pc, req))
            peer_answer(pc, req);
    }
}

static void on_peer_write(struct bufferevent *bev, void *arg)
{
    peer_conn *pc = arg;
    if (pc->close_after_write && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        peer_close(pc);
}

static void on_peer_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    peer_conn *pc = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        P.eofs++;
        peer_close(pc);
    }
}

static void on_peer_accept(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    (void)arg;
    int cfd = accept(fd, NULL, NULL);
    if (cfd < 0)
        return;
    assert_true(P.n_conns < MAX_PEER_CONNS);
    fd_set_nonblock(cfd, true);
    peer_conn *pc = calloc(1, sizeof *pc);
    assert_non_null(pc);
    pc->id = P.n_conns;
    pc->bev = bufferevent_socket_new(base, cfd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(pc->bev, on_peer_read, on_peer_write, on_peer_event, pc);
    bufferevent_enable(pc->bev, EV_READ | EV_WRITE);
    P.conns[P.n_conns++] = pc;
}

static void peer_listen(void)
{
    veil_addr a;
    char spec[160], err[200];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    P.lfd = addr_listen(&a, 16, err, sizeof err);
    assert_true(P.lfd >= 0);
    fd_set_nonblock(P.lfd, true);
    P.accept_ev = event_new(base, P.lfd, EV_READ | EV_PERSIST, on_peer_accept, NULL);
    event_add(P.accept_ev, NULL);
}

static void peer_free(void)
{
    if (P.accept_ev) {
        event_free(P.accept_ev);
        close(P.lfd);
    }
    for (int i = 0; i < P.n_conns; i++) {
        peer_close(P.conns[i]);
        free(P.conns[i]);
    }
    for (int i = 0; i < P.n_reqs; i++)
        json_decref(P.reqs[i]);
    memset(&P, 0, sizeof P);
    unlink(sock_path);
}

static const char *req_cmd(int i)
{
    return json_string_value(json_object_get(P.reqs[i], "command"));
}

static int reqs_named(const char *cmd)
{
    int n = 0;
    for (int i = 0; i < P.n_reqs; i++)
        if (req_cmd(i) && strcmp(req_cmd(i), cmd) == 0)
            n++;
    return n;
}

/* ---- the loop ---- */

static bool g_expired;

static void on_expire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    g_expired = true;
}

/* Runs the loop until *counter reaches at_least (or WAIT_MS pass: then fails). */
static void wait_for(const int *counter, int at_least)
{
    struct event *t = evtimer_new(base, on_expire, NULL);
    struct timeval tv = {WAIT_MS / 1000, 0};
    g_expired = false;
    evtimer_add(t, &tv);
    while (*counter < at_least && !g_expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    if (*counter < at_least)
        fail_msg("waited %u ms for a count of %d, have %d", WAIT_MS, at_least, *counter);
}

/* Runs whatever is ready now, without waiting. */
static void run_ready(void)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* Returns once every key fetch the client had in flight has been answered and
 * handled: a fetch is refused while one runs, so a new one reaching the peer
 * proves the earlier reply was delivered. */
static void settle_key(void)
{
    int n = P.key_reqs;
    struct event *t = evtimer_new(base, on_expire, NULL);
    struct timeval tv = {WAIT_MS / 1000, 0};
    g_expired = false;
    evtimer_add(t, &tv);
    while (P.key_reqs <= n && !g_expired) {
        ec_refresh_key(ec);
        event_base_loop(base, EVLOOP_ONCE);
    }
    event_free(t);
    if (P.key_reqs <= n)
        fail_msg("no key fetch reached the enclave");
}

/* ---- what the client reported ---- */

static struct {
    int restarts;
    int healths;
    ec_health_result health;
    int results;
    bool result_ok;
    char result_err[200];
    int events;
    json_t *ev; /* every event as received, in order: {"kind", "ciphertext"|"model_used"} */
    int ends;
    enclave_err end_err;
    char end_code[64], end_msg[200]; /* the error's wire name ("" for none), its text */
    bool end_ok; /* on_end with ENCLAVE_OK */
    ec_op *op;   /* the stream, for tests that act inside a callback */
    bool cancel_in_event, pause_in_event;
} R;

static void on_restart(void *ud)
{
    (void)ud;
    R.restarts++;
}

static void on_health(void *ud, const ec_health_result *h)
{
    (void)ud;
    R.healths++;
    R.health = *h;
}

static void on_result(void *ud, bool ok, const char *err)
{
    (void)ud;
    R.results++;
    R.result_ok = ok;
    snprintf(R.result_err, sizeof R.result_err, "%s", err ? err : "");
}

static void on_event(void *ud, const proto_event *ev)
{
    (void)ud;
    R.events++;
    json_t *rec = json_pack("{s:i}", "kind", (int)ev->kind);
    if (ev->kind == PROTO_EV_CHUNK)
        json_object_set(rec, "ciphertext", json_object_get(ev->ep, "ciphertext"));
    if (ev->kind == PROTO_EV_FINAL)
        json_object_set_new(rec, "model_used", json_string(ev->final.model_used));
    json_array_append_new(R.ev, rec);
    if (R.cancel_in_event)
        ec_op_cancel(R.op);
    if (R.pause_in_event && R.events == 1)
        ec_op_pause(R.op, true);
}

static void on_end(void *ud, enclave_err err, const char *msg)
{
    (void)ud;
    R.ends++;
    R.end_ok = err == ENCLAVE_OK;
    R.end_err = err;
    snprintf(R.end_code, sizeof R.end_code, "%s", err == ENCLAVE_OK ? "" : enclave_err_name(err));
    snprintf(R.end_msg, sizeof R.end_msg, "%s", msg ? msg : "");
}

static const ec_stream_callbacks STREAM_CB = {on_event, on_end};

/* ---- fixtures ---- */

static int nitro_setup(void **state)
{
    (void)state;
    static int n;
    snprintf(sock_path, sizeof sock_path, "/tmp/veil-ec-test-%d-%d.sock", (int)getpid(), n++);
    memset(&P, 0, sizeof P);
    memset(&R, 0, sizeof R);
    R.ev = json_array();
    snprintf(P.key, sizeof P.key, "%s", K1);
    base = event_base_new();
    assert_non_null(base);
    peer_listen();
    server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.mode = ENCLAVE_NITRO;
    snprintf(cfg.enclave_addr, sizeof cfg.enclave_addr, "unix:%s", sock_path);
    cfg.stream_timeout = 1; /* seconds: the stream deadline test waits it out */
    char err[200];
    ec = ec_new(base, &cfg, err, sizeof err);
    assert_non_null(ec);
    ec_on_restart(ec, on_restart, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    ec_free(ec);
    ec = NULL;
    run_ready(); /* let the peer see the closes */
    peer_free();
    event_base_free(base);
    json_decref(R.ev);
    return 0;
}

static imds_credentials test_creds(void)
{
    imds_credentials c;
    memset(&c, 0, sizeof c);
    snprintf(c.access_key_id, sizeof c.access_key_id, "AKIDEXAMPLE");
    snprintf(c.secret_access_key, sizeof c.secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
    snprintf(c.session_token, sizeof c.session_token, "tok\"en\\with\nodd bytes");
    snprintf(c.expiration, sizeof c.expiration, "2030-01-01T00:00:00Z");
    return c;
}

/* ---- nitro: keys and restarts ---- */

static void test_nitro_key_learning(void **state)
{
    (void)state;
    assert_string_equal(ec_mode_name(ec), "nitro");
    assert_null(ec_public_key(ec)); /* unknown until asked */
    ec_refresh_key(ec);
    assert_int_equal(R.restarts, 0); /* asynchronous */
    wait_for(&R.restarts, 1);
    assert_string_equal(ec_public_key(ec), K1);
    assert_string_equal(req_cmd(0), "GET_PUBLIC_KEY");

    /* the same key again is no restart, from GET_PUBLIC_KEY or from HEALTH */
    settle_key();
    assert_int_equal(R.restarts, 1);
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 1);
    assert_int_equal(R.restarts, 1);

    /* the enclave restarted with a new key: HEALTH says so, and the callback runs */
    snprintf(P.key, sizeof P.key, "%s", K2);
    ec_health(ec, on_health, NULL);
    wait_for(&R.restarts, 2);
    wait_for(&R.healths, 2);
    assert_string_equal(ec_public_key(ec), K2);
    assert_true(R.health.ok);
    assert_false(R.health.has_credentials);
    assert_string_equal(R.health.region, "us-east-1");

    /* a malformed key is not learned */
    snprintf(P.key, sizeof P.key, "%s", "abcd");
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 3);
    assert_string_equal(ec_public_key(ec), K2);
    assert_int_equal(R.restarts, 2);
}

static void test_nitro_max_request_learned(void **state)
{
    (void)state;
    assert_int_equal(ec_max_request(ec), ENCLAVE_DEFAULT_MAX_REQUEST);
    P.max_request = 4096;
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 1);
    assert_int_equal(ec_max_request(ec), 4096);
    P.max_request = 100; /* below 1 KiB: not believed */
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 2);
    assert_int_equal(ec_max_request(ec), 4096);
}

/* an error object without a code: the generic code, the text as sent, no restart */
static void test_nitro_stream_error_without_code(void **state)
{
    (void)state;
    ec_refresh_key(ec);
    wait_for(&R.restarts, 1);
    json_t *req = json_pack("{s:s}", "command", "CHAT_STREAM");
    assert_non_null(ec_chat_stream(ec, req, &STREAM_CB, NULL));
    json_decref(req);
    wait_for(&R.ends, 1); /* the default peer answers {"status":"error","error":"Unknown command"} */
    assert_int_equal(R.end_err, ENCLAVE_ERR_UNKNOWN);
    assert_string_equal(R.end_code, "unknown");
    assert_string_equal(R.end_msg, "Unknown command");
    assert_int_equal(R.events, 0);
    assert_int_equal(R.restarts, 1);
    assert_int_equal(P.key_reqs, 1);
}

/* A final event as the enclave writes it (the stored pair, the usage). */
#define FINAL_EVENT                                                                               \
    "{\"is_final\":true,\"stored_user_message\":{\"ciphertext\":\"75\"},"                       \
    "\"stored_assistant_message\":{\"ciphertext\":\"61\"},\"model_used\":\"m\","               \
    "\"input_tokens\":3,\"output_tokens\":5}"

/* the peer's stream answer for this test, by the request's "case" */
static bool stream_hook(peer_conn *pc, const json_t *req)
{
    const char *cmd = json_string_value(json_object_get(req, "command"));
    if (!cmd || strcmp(cmd, "CHAT_STREAM") != 0)
        return false;
    const char *c = json_string_value(json_object_get(req, "case"));
    if (strcmp(c, "decrypt_failed") == 0)
        peer_send(pc, "{\"error\":\"Decryption failed\",\"is_final\":true,\"error_code\":\"decrypt_failed\"}\n");
    else if (strcmp(c, "no_credentials") == 0)
        peer_send(pc, "{\"error\":\"No AWS credentials\",\"is_final\":true,\"error_code\":\"no_credentials\"}\n");
    else if (strcmp(c, "three") == 0) /* one write holding every line, an empty line between */
        peer_send(pc, "{\"encrypted_content\":{\"ciphertext\":\"aa\"},\"is_final\":false}\n\n"
                      "{\"encrypted_content\":{\"ciphertext\":\"bb\"},\"is_final\":false}\n"
                      FINAL_EVENT "\n");
    else if (strcmp(c, "split") == 0) { /* lines cut across writes */
        char mid[128];
        snprintf(mid, sizeof mid, "text\":\"aa\"},\"is_final\":false}\n%.14s", FINAL_EVENT);
        peer_send(pc, "{\"encrypted_content\":{\"cipher");
        peer_send(pc, mid);
        peer_send(pc, &FINAL_EVENT[14]);
        peer_send(pc, "\n");
    } else if (strcmp(c, "one") == 0) /* one event, then nothing */
        peer_send(pc, "{\"encrypted_content\":{\"ciphertext\":\"aa\"},\"is_final\":false}\n");
    else if (strcmp(c, "one_then_close") == 0) {
        peer_send(pc, "{\"encrypted_content\":{\"ciphertext\":\"aa\"},\"is_final\":false}\n");
        pc->close_after_write = true;
    } else if (strcmp(c, "bad_json") == 0)
        peer_send(pc, "{\"is_final\": tru\n");
    else if (strcmp(c, "not_an_event") == 0)
        peer_send(pc, "{\"chunk\":\"aa\"}\n");
    else if (strcmp(c, "final_without_messages") == 0)
        peer_send(pc, "{\"is_final\":true,\"model_used\":\"m\"}\n");
    else if (strcmp(c, "silent") == 0)
        ; /* never answers */
    else
        fail_msg("unknown case %s", c);
    return true;
}

static ec_op *stream(const char *c)
{
    json_t *req = json_pack("{s:s, s:s, s:s}", "command", "CHAT_STREAM", "case", c, "model_id", "m");
    ec_op *op = ec_chat_stream(ec, req, &STREAM_CB, NULL);
    json_decref(req); /* borrowed: serialised before the call returned */
    assert_non_null(op);
    R.op = op;
    return op;
}

static void test_nitro_decrypt_failed_relearns_key(void **state)
{
    (void)state;
    P.hook = stream_hook;
    ec_refresh_key(ec);
    wait_for(&R.restarts, 1);
    snprintf(P.key, sizeof P.key, "%s", K2); /* the enclave restarted */
    stream("decrypt_failed");
    wait_for(&R.ends, 1);
    assert_string_equal(R.end_code, "decrypt_failed");
    assert_string_equal(R.end_msg, "Decryption failed");
    assert_int_equal(R.events, 0);
    /* the client asks for the key again, learns K2 and says so */
    wait_for(&R.restarts, 2);
    assert_string_equal(ec_public_key(ec), K2);
    assert_int_equal(P.key_reqs, 2);
}

static void test_nitro_no_credentials_is_a_restart(void **state)
{
    (void)state;
    P.hook = stream_hook;
    ec_refresh_key(ec);
    wait_for(&R.restarts, 1);
    /* same key, but the enclave lost its credentials: the restart callback runs at
     * once (so the refresher pushes them), and the key is asked for again */
    stream("no_credentials");
    wait_for(&R.ends, 1);
    assert_string_equal(R.end_code, "no_credentials");
    assert_int_equal(R.restarts, 2);
    wait_for(&P.key_reqs, 2);
    settle_key();
    assert_int_equal(R.restarts, 2); /* the same key learned again is no second restart */
}

/* ---- nitro: streams ---- */

static void test_nitro_stream_events(void **state)
{
    (void)state;
    P.hook = stream_hook;
    stream("three");
    assert_int_equal(R.events, 0); /* nothing before the loop runs */
    wait_for(&R.ends, 1);
    assert_true(R.end_ok);
    assert_int_equal(R.events, 3); /* the final object is an event too */
    char want[3][128];
    snprintf(want[0], sizeof want[0], "{\"kind\":%d,\"ciphertext\":\"aa\"}", (int)PROTO_EV_CHUNK);
    snprintf(want[1], sizeof want[1], "{\"kind\":%d,\"ciphertext\":\"bb\"}", (int)PROTO_EV_CHUNK);
    snprintf(want[2], sizeof want[2], "{\"kind\":%d,\"model_used\":\"m\"}", (int)PROTO_EV_FINAL);
    for (int i = 0; i < 3; i++) {
        char *got = json_dumps(json_array_get(R.ev, (size_t)i), JSON_COMPACT);
        assert_string_equal(got, want[i]);
        free(got);
    }
    /* the request went on the wire whole */
    assert_string_equal(json_string_value(json_object_get(P.reqs[0], "case")), "three");
    assert_string_equal(json_string_value(json_object_get(P.reqs[0], "model_id")), "m");

    /* a line split across writes, on the pooled connection */
    stream("split");
    wait_for(&R.ends, 2);
    assert_true(R.end_ok);
    assert_int_equal(R.events, 5);
    assert_int_equal(P.n_conns, 1); /* one connection served both */
    assert_int_equal(P.req_conn[1], 0);
}

static void test_nitro_stream_protocol_errors(void **state)
{
    (void)state;
    P.hook = stream_hook;
    stream("bad_json");
    wait_for(&R.ends, 1);
    assert_string_equal(R.end_code, "enclave_protocol");
    assert_string_equal(R.end_msg, "enclave sent invalid JSON");
    wait_for(&P.eofs, 1); /* that connection is not reused */

    /* JSON, but not an event of the protocol; a final event without the stored pair */
    static const char *const NOT_EVENTS[] = {"not_an_event", "final_without_messages"};
    for (int i = 0; i < 2; i++) {
        stream(NOT_EVENTS[i]);
        wait_for(&R.ends, 2 + i);
        assert_int_equal(R.end_err, ENCLAVE_ERR_PROTOCOL);
        assert_string_equal(R.end_msg, "enclave sent an event outside the protocol");
        assert_int_equal(R.events, 0);
    }

    /* the enclave goes away mid-stream: an error, never a silently short answer */
    stream("one_then_close");
    wait_for(&R.ends, 4);
    assert_int_equal(R.events, 1);
    assert_false(R.end_ok);
    assert_string_equal(R.end_code, "enclave_unavailable");
    assert_string_equal(R.end_msg, "enclave closed the connection");
    assert_int_equal(reqs_named("CHAT_STREAM"), 4); /* bytes had come: no retry */
}

static void test_nitro_cancel(void **state)
{
    (void)state;
    P.hook = stream_hook;
    /* from inside on_event */
    R.cancel_in_event = true;
    stream("one");
    wait_for(&R.events, 1);
    wait_for(&P.eofs, 1); /* the enclave sees the close: it cancels its Bedrock call */
    assert_int_equal(R.ends, 0);

    /* from outside a callback */
    R.cancel_in_event = false;
    ec_op *op = stream("one");
    wait_for(&R.events, 2);
    ec_op_cancel(op);
    wait_for(&P.eofs, 2);
    assert_int_equal(R.ends, 0);
    assert_int_equal(P.n_conns, 2); /* a cancelled stream's connection is not pooled */

    /* before a byte came back */
    op = stream("silent");
    int before = P.n_reqs + 1;
    wait_for(&P.n_reqs, before);
    ec_op_cancel(op);
    wait_for(&P.eofs, 3);
    run_ready();
    assert_int_equal(R.ends, 0);
    assert_int_equal(R.events, 2);
}

static void test_nitro_pause_resume(void **state)
{
    (void)state;
    P.hook = stream_hook;
    R.pause_in_event = true;
    stream("three"); /* all three lines arrive in one read */
    wait_for(&R.events, 1);
    run_ready();
    assert_int_equal(R.events, 1); /* paused: the lines already read wait */
    assert_int_equal(R.ends, 0);
    ec_op_pause(R.op, false); /* no new bytes will come: the buffered lines must be delivered */
    wait_for(&R.ends, 1);
    assert_true(R.end_ok);
    assert_int_equal(R.events, 3);
}

/* ---- nitro: pooled connections ---- */

static int close_on_conn = -1; /* the peer closes this connection when a request comes on it */
static bool close_every_request;

static bool stale_hook(peer_conn *pc, const json_t *req)
{
    (void)req;
    if (close_every_request || pc->id == close_on_conn) {
        peer_close(pc);
        return true;
    }
    return false;
}

static void test_nitro_stale_pooled_connection_retried_once(void **state)
{
    (void)state;
    P.hook = stale_hook;
    close_on_conn = -1;
    close_every_request = false;
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 1);
    assert_int_equal(P.n_conns, 1); /* now pooled */

    /* the pooled connection has gone stale (the enclave restarted between requests,
     * unnoticed): the request is sent again on a fresh connection */
    close_on_conn = 0;
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 2);
    assert_true(R.health.ok);
    assert_int_equal(P.n_conns, 2);
    assert_int_equal(P.n_reqs, 3);
    assert_int_equal(P.req_conn[1], 0);
    assert_int_equal(P.req_conn[2], 1);

    /* once only: a fresh connection that fails too is the answer */
    close_every_request = true;
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 3);
    assert_false(R.health.ok);
    assert_string_equal(R.health.error, "enclave unreachable");
    assert_int_equal(P.n_reqs, 5); /* the pooled one, then one fresh one */
    assert_int_equal(P.n_conns, 3);

    /* a fresh connection's failure is never retried */
    ec_set_credentials(ec, &(imds_credentials){.access_key_id = "A", .secret_access_key = "S",
                                               .session_token = "T"},
                       on_result, NULL);
    wait_for(&R.results, 1);
    assert_false(R.result_ok);
    assert_string_equal(R.result_err, "enclave unreachable");
    assert_int_equal(P.n_reqs, 6);
    close_every_request = false;
}

/* ---- nitro: credentials ---- */

static bool refuse_creds_hook(peer_conn *pc, const json_t *req)
{
    (void)req;
    peer_send(pc, "{\"status\":\"error\",\"command\":\"SET_CREDENTIALS\",\"error\":\"internal detail\"}\n");
    return true;
}

static void test_nitro_set_credentials(void **state)
{
    (void)state;
    imds_credentials c = test_creds();
    ec_set_credentials(ec, &c, on_result, NULL);
    wait_for(&R.results, 1);
    assert_true(R.result_ok);
    json_t *cr = json_object_get(P.reqs[0], "credentials");
    assert_string_equal(req_cmd(0), "SET_CREDENTIALS");
    assert_string_equal(json_string_value(json_object_get(cr, "access_key_id")), c.access_key_id);
    assert_string_equal(json_string_value(json_object_get(cr, "secret_access_key")), c.secret_access_key);
    assert_string_equal(json_string_value(json_object_get(cr, "session_token")), c.session_token);
    assert_string_equal(json_string_value(json_object_get(cr, "expiration")), c.expiration);

    /* without an expiration the field is left out */
    c.expiration[0] = '\0';
    ec_set_credentials(ec, &c, on_result, NULL);
    wait_for(&R.results, 2);
    assert_null(json_object_get(json_object_get(P.reqs[1], "credentials"), "expiration"));

    /* a refusal is reported in the client's words, not the enclave's */
    P.hook = refuse_creds_hook;
    ec_set_credentials(ec, &c, on_result, NULL);
    wait_for(&R.results, 3);
    assert_false(R.result_ok);
    assert_string_equal(R.result_err, "enclave refused the credentials");
}

/* ---- nitro: an enclave that is not there yet ---- */

static void test_nitro_enclave_starts_later(void **state)
{
    (void)state;
    /* no listener: veild starts without the enclave and says so */
    event_free(P.accept_ev);
    P.accept_ev = NULL;
    close(P.lfd);
    unlink(sock_path);
    ec_health(ec, on_health, NULL);
    assert_int_equal(R.healths, 0); /* reported from the loop, never from inside the call */
    wait_for(&R.healths, 1);
    assert_false(R.health.ok);
    assert_string_equal(R.health.error, "enclave unreachable");
    ec_refresh_key(ec); /* fails, and is retried on a timer */
    run_ready();
    assert_null(ec_public_key(ec));

    peer_listen(); /* the enclave comes up */
    wait_for(&R.restarts, 1);
    assert_string_equal(ec_public_key(ec), K1);
}

/* ---- nitro: an enclave whose listen backlog is full ---- */

/* A unix socket's connect says EAGAIN while the listener's backlog is full: the
 * enclave is there, only busy (a burst of streams). The client waits and connects
 * again instead of answering "enclave unreachable". */
static void test_nitro_busy_backlog_waits(void **state)
{
    (void)state;
    /* the listener stops accepting, and its backlog fills */
    event_del(P.accept_ev);
    veil_addr a;
    char spec[160], err[200];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    int fillers[64], n = 0;
    for (; n < 64; n++) {
        fillers[n] = addr_connect(&a, true, err, sizeof err);
        if (fillers[n] < 0) {
            assert_int_equal(errno, EAGAIN); /* the backlog is full, not the socket gone */
            break;
        }
    }
    assert_true(n > 0 && n < 64);
    ec_health(ec, on_health, NULL);
    for (int i = 0; i < 5; i++) { /* a few retries' worth of the loop */
        struct timeval tv = {0, 20000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    assert_int_equal(R.healths, 0); /* still waiting, not "unreachable" */
    /* the enclave drains its backlog: the fillers go, the client's connect gets in */
    for (int i = 0; i < n; i++) {
        close(fillers[i]);
        int afd = accept(P.lfd, NULL, NULL);
        assert_true(afd >= 0);
        close(afd);
    }
    event_add(P.accept_ev, NULL);
    wait_for(&R.healths, 1);
    assert_true(R.health.ok);
}

/* ---- nitro: deadlines ---- */

static bool swallow_hook(peer_conn *pc, const json_t *req)
{
    (void)pc;
    (void)req;
    return true; /* reads the request, never answers */
}

static void test_nitro_deadlines(void **state)
{
    (void)state;
    P.hook = stream_hook;
    stream("one"); /* one event, then silence past the stream deadline */
    wait_for(&R.ends, 1);
    assert_int_equal(R.events, 1);
    assert_string_equal(R.end_code, "timeout");
    assert_string_equal(R.end_msg, "Request timed out");
    wait_for(&P.eofs, 1); /* and the enclave is told by the close */

    P.hook = swallow_hook;
    ec_health(ec, on_health, NULL); /* the control deadline (5 s) */
    wait_for(&R.healths, 1);
    assert_false(R.health.ok);
    assert_string_equal(R.health.error, "Request timed out");
}

/* ---- mock mode: the core in-process ---- */

static int mock_setup(void **state)
{
    (void)state;
    memset(&P, 0, sizeof P);
    memset(&R, 0, sizeof R);
    R.ev = json_array();
    base = event_base_new();
    assert_non_null(base);
    server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.mode = ENCLAVE_MOCK;
    cfg.stream_timeout = 120;
    snprintf(cfg.enclave_nsm, sizeof cfg.enclave_nsm, "none"); /* veild's default */
    snprintf(cfg.region, sizeof cfg.region, "eu-west-3");
    char err[200];
    ec = ec_new(base, &cfg, err, sizeof err);
    assert_non_null(ec);
    ec_on_restart(ec, on_restart, NULL);
    snprintf(sock_path, sizeof sock_path, "/tmp/veil-ec-test-%d-mock.sock", (int)getpid());
    return 0;
}

static void test_mock_key_health_credentials(void **state)
{
    (void)state;
    assert_string_equal(ec_mode_name(ec), "mock");
    assert_string_equal(ec_addr(ec), "in-process");
    assert_int_equal(ec_cid(ec), 0);
    ec_refresh_key(ec);
    assert_int_equal(R.restarts, 0);
    wait_for(&R.restarts, 1);
    const char *k = ec_public_key(ec);
    assert_non_null(k);
    assert_int_equal(strlen(k), 64);
    assert_int_equal(strspn(k, "0123456789abcdef"), 64);

    ec_health(ec, on_health, NULL);
    assert_int_equal(R.healths, 0);
    wait_for(&R.healths, 1);
    assert_true(R.health.ok);
    assert_false(R.health.has_credentials);
    assert_string_equal(R.health.region, "eu-west-3");

    imds_credentials c = test_creds();
    ec_set_credentials(ec, &c, on_result, NULL);
    wait_for(&R.results, 1);
    assert_true(R.result_ok);
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 2);
    assert_true(R.health.has_credentials);
    assert_int_equal(R.restarts, 1);
}

static void test_mock_stream_errors(void **state)
{
    (void)state;
    ec_refresh_key(ec);
    wait_for(&R.restarts, 1);
    /* before any credentials: the core's no_credentials, which is a restart to veild */
    json_t *req = json_pack("{s:s}", "command", "CHAT_STREAM");
    assert_non_null(ec_chat_stream(ec, req, &STREAM_CB, NULL));
    wait_for(&R.ends, 1);
    assert_string_equal(R.end_code, "no_credentials");
    assert_string_equal(R.end_msg, "No AWS credentials");
    assert_int_equal(R.restarts, 2);

    imds_credentials c = test_creds();
    ec_set_credentials(ec, &c, on_result, NULL);
    wait_for(&R.results, 1);
    /* a request without its fields: the core's bad_request, no event */
    assert_non_null(ec_chat_stream(ec, req, &STREAM_CB, NULL));
    wait_for(&R.ends, 2);
    assert_string_equal(R.end_code, "bad_request");
    assert_true(strlen(R.end_msg) > 0);
    assert_int_equal(R.events, 0);
    json_decref(req);
}

static void test_mock_cancel_before_start(void **state)
{
    (void)state;
    ec_op *op = ec_health(ec, on_health, NULL);
    assert_non_null(op);
    ec_op_cancel(op); /* before the loop ran it: no callback, nothing leaks */
    ec_op_cancel(NULL);
    json_t *req = json_pack("{s:s}", "command", "CHAT_STREAM");
    op = ec_chat_stream(ec, req, &STREAM_CB, NULL);
    json_decref(req);
    ec_op_cancel(op);
    run_ready();
    assert_int_equal(R.healths, 0);
    assert_int_equal(R.ends, 0);
    /* and the client still works */
    ec_health(ec, on_health, NULL);
    wait_for(&R.healths, 1);
    assert_true(R.health.ok);
}

static void test_free_with_ops_in_flight(void **state)
{
    (void)state;
    /* nitro: a stream the enclave never answers, then the client is freed: no
     * callback runs after ec_free, and the enclave sees the connection close */
    P.hook = swallow_hook;
    json_t *req = json_pack("{s:s}", "command", "CHAT_STREAM");
    ec_chat_stream(ec, req, &STREAM_CB, NULL);
    ec_health(ec, on_health, NULL);
    json_decref(req);
    wait_for(&P.n_reqs, 2);
    ec_free(ec);
    ec = NULL;
    wait_for(&P.eofs, 2);
    assert_int_equal(R.ends, 0);
    assert_int_equal(R.healths, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as veild: a closed peer is an error on the write, not a signal */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nitro_key_learning, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_max_request_learned, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_stream_error_without_code, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_decrypt_failed_relearns_key, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_no_credentials_is_a_restart, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_stream_events, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_stream_protocol_errors, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_cancel, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_pause_resume, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_stale_pooled_connection_retried_once, nitro_setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_nitro_set_credentials, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_enclave_starts_later, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_busy_backlog_waits, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_nitro_deadlines, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_ops_in_flight, nitro_setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_key_health_credentials, mock_setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_stream_errors, mock_setup, teardown),
        cmocka_unit_test_setup_teardown(test_mock_cancel_before_start, mock_setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

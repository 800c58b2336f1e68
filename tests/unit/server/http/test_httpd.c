/* server/http/httpd: veild's HTTP engine on a real loop over loopback. The request as
 * a handler sees it (method, path, query, headers by name case-insensitively and
 * first match first, the body), a head of many headers, and what a request costs
 * while a handler holds it (an idle SSE stream holds its request for its whole life):
 * little more than its own head and body, not the parser's 100 header slots or a
 * doubled body buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/event.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "server/http/httpd.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VEIL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define VEIL_ASAN 1
#endif
#ifdef VEIL_ASAN
#include <sanitizer/allocator_interface.h>
#endif

#define MAX_HELD 256
#define HELD_N 200               /* requests held at once for the cost */
#define PER_REQUEST_OVERHEAD 2560 /* connection, bufferevent, timers, the request struct */

typedef struct fixture {
    struct event_base *base;
    httpd *h;
    int port;
    httpd_req *held[MAX_HELD];
    int n_held;
    int clients[MAX_HELD];
    int n_clients;
} fixture;

/* The handler holds every request: the engine keeps it until it is answered. */
static void hold(httpd_req *rq, void *ud)
{
    fixture *f = ud;
    if (f->n_held < MAX_HELD)
        f->held[f->n_held++] = rq;
}

static size_t allocated(void)
{
#ifdef VEIL_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    veil_addr a;
    char err[128];
    assert_int_equal(addr_parse("tcp:127.0.0.1:0", &a, err, sizeof err), 0);
    int fd = addr_listen(&a, 1024, err, sizeof err);
    assert_true(fd >= 0);
    f->port = addr_local_port(fd);
    f->base = event_base_new();
    httpd_limits lim = {.max_body = 1 << 20, .max_conns = 1000};
    f->h = httpd_new(f->base, &lim, hold, f);
    assert_non_null(f->h);
    assert_int_equal(httpd_accept_on(f->h, fd, err, sizeof err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < f->n_held; i++)
        httpd_respond(f->held[i], 204, NULL, NULL, 0);
    httpd_free(f->h);
    for (int i = 0; i < f->n_clients; i++)
        close(f->clients[i]);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* Connects and sends the whole request (small: the socket buffer takes it). */
static void send_request(fixture *f, const char *req, size_t len)
{
    veil_addr a;
    char err[128], spec[64];
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", f->port);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    int fd = addr_connect(&a, false, err, sizeof err);
    if (fd < 0)
        print_message("connect: %s\n", err);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, req, len), (ssize_t)len);
    assert_true(f->n_clients < MAX_HELD);
    f->clients[f->n_clients++] = fd;
}

/* Runs the loop until n requests are held (bounded by iterations, not time). */
static void run_until_held(fixture *f, int n)
{
    for (int i = 0; i < 100000 && f->n_held < n; i++)
        event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    assert_int_equal(f->n_held, n);
}

static void test_request_as_seen(void **state)
{
    fixture *f = *state;
    static const char REQ[] = "POST /api/v1/chat/encrypted/stream?x=1&y=2 HTTP/1.1\r\nHost: h\r\n"
                              "X-Test: one\r\nContent-Type: application/json\r\nx-test: two\r\n"
                              "Content-Length: 5\r\n\r\nhello";
    send_request(f, REQ, sizeof REQ - 1);
    run_until_held(f, 1);
    httpd_req *rq = f->held[0];
    size_t n;
    assert_string_equal(httpd_method(rq), "POST");
    assert_string_equal(httpd_path(rq), "/api/v1/chat/encrypted/stream");
    assert_string_equal(httpd_query(rq), "x=1&y=2");
    assert_int_equal(httpd_minor_version(rq), 1);
    assert_string_equal(httpd_header(rq, "X-TEST"), "one"); /* the first of two, any case */
    assert_string_equal(httpd_header(rq, "content-type"), "application/json");
    assert_null(httpd_header(rq, "X-Missing"));
    assert_null(httpd_header(rq, "X-Tes"));
    const uint8_t *b = httpd_body(rq, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(b, "hello", 5);
}

static void test_many_headers(void **state)
{
    fixture *f = *state;
    char req[8192];
    int len = snprintf(req, sizeof req, "GET /h HTTP/1.0\r\n");
    for (int i = 0; i < 99; i++)
        len += snprintf(req + len, sizeof req - (size_t)len, "H%d: v%d\r\n", i, i);
    len += snprintf(req + len, sizeof req - (size_t)len, "\r\n");
    send_request(f, req, (size_t)len);
    run_until_held(f, 1);
    assert_string_equal(httpd_header(f->held[0], "h98"), "v98");
    assert_string_equal(httpd_header(f->held[0], "H0"), "v0");
    assert_null(httpd_query(f->held[0]));
    assert_int_equal(httpd_minor_version(f->held[0]), 0);
    size_t n;
    httpd_body(f->held[0], &n);
    assert_int_equal(n, 0);
}

/* The attack it bounds: many idle streams (or slow handlers) each pinning what its
 * request allocated. 200 held requests of a 300-byte head and a 1,000-byte body must
 * cost about those bytes each, plus the connection. */
static void test_held_request_cost(void **state)
{
    fixture *f = *state;
    char body[1000], req[2048];
    memset(body, 'b', sizeof body);
    int hl = snprintf(req, sizeof req,
                      "POST /api/v1/chat/encrypted/stream HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                      "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJKV1QifQ.e30.c2lnbmF0dXJl\r\n"
                      "Content-Type: application/json\r\nAccept: text/event-stream\r\nUser-Agent: veil\r\n"
                      "Content-Length: %zu\r\n\r\n", sizeof body);
    memcpy(req + hl, body, sizeof body);
    size_t len = (size_t)hl + sizeof body;
    /* a few first: one-time allocations (the loop's tables) are not the requests' */
    for (int i = 0; i < 8; i++)
        send_request(f, req, len);
    run_until_held(f, 8);
    size_t before = allocated();
    for (int i = 0; i < HELD_N; i++) {
        send_request(f, req, len);
        event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK); /* accept as they come */
    }
    run_until_held(f, 8 + HELD_N);
    size_t per = (allocated() - before) / HELD_N;
    size_t bound = len + PER_REQUEST_OVERHEAD;
    print_message("a held request: %zu bytes (head %d + body %zu; bound %zu)\n", per, hl, sizeof body, bound);
    assert_true(per <= bound);
    size_t n;
    assert_memory_equal(httpd_body(f->held[8 + HELD_N - 1], &n), body, sizeof body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_as_seen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_request_cost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

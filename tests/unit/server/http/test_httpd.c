/* server/http/httpd: veild's HTTP/1.1 engine on a unix socket of the test's own
 * event loop. What a client sees, byte for byte (the Date header aside): heads
 * and bodies split anywhere, pipelined requests answered in order, chunked bodies
 * in and out, the refusals that close (431, 413, 408, 405, 400), Expect:
 * 100-continue, HTTP/1.0 and HTTP/1.1 keep-alive, the connection cap. Deadlines
 * are set short and waited for with generous bounds; nothing is timed. And what a
 * request costs while a handler holds it (an idle SSE stream holds its request for
 * its whole life): little more than its own head and body, not the parser's 100
 * header slots or a doubled body buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <event2/event.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/buf.h"
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

#define WAIT_MS 30000u /* generous: a busy machine must not fail a test */

static struct event_base *base;
static httpd *srv;
static char sock_path[108];

/* ---- the handler: records each request, answers as the test says ---- */

typedef enum { ANSWER_ECHO, ANSWER_HOLD, ANSWER_STREAM, ANSWER_204, ANSWER_TAKE, ANSWER_KEEP } answer_mode;

#define MAX_SEEN 16
#define MAX_KEPT 256
typedef struct seen {
    char method[16], path[256], query[256], body[4096], host[64];
    char headers[512]; /* "name=value;" for each, in order (httpd_header_at) */
    size_t body_len;
    int minor;
} seen;

static struct {
    answer_mode mode;
    bool hold_first; /* only the first request is held, the rest echoed */
    seen req[MAX_SEEN];
    int n;
    httpd_req *held;
    int closes;      /* close callbacks of held requests */
    httpd_req *kept[MAX_KEPT]; /* ANSWER_KEEP: every request held, none recorded */
    int n_kept;
} H;

static void on_req_close(httpd_req *rq, void *ud)
{
    (void)ud;
    if (rq == H.held)
        H.held = NULL;
    H.closes++;
}

static void echo(httpd_req *rq)
{
    size_t len;
    const uint8_t *b = httpd_body(rq, &len);
    char out[5000];
    int n = snprintf(out, sizeof out, "%s %s%s%s %zu:%.*s", httpd_method(rq), httpd_path(rq),
                     httpd_query(rq) ? "?" : "", httpd_query(rq) ? httpd_query(rq) : "", len, (int)len,
                     (const char *)b);
    httpd_respond(rq, 200, "Content-Type: text/plain\r\n", out, (size_t)n);
}

static void handler(httpd_req *rq, void *ud)
{
    (void)ud;
    if (H.mode == ANSWER_KEEP) {
        assert_true(H.n_kept < MAX_KEPT);
        H.kept[H.n_kept++] = rq;
        return;
    }
    assert_true(H.n < MAX_SEEN);
    seen *s = &H.req[H.n++];
    snprintf(s->method, sizeof s->method, "%s", httpd_method(rq));
    snprintf(s->path, sizeof s->path, "%s", httpd_path(rq));
    snprintf(s->query, sizeof s->query, "%s", httpd_query(rq) ? httpd_query(rq) : "");
    const char *host = httpd_header(rq, "hOsT"); /* names are case-insensitive */
    snprintf(s->host, sizeof s->host, "%s", host ? host : "");
    const uint8_t *b = httpd_body(rq, &s->body_len);
    assert_true(s->body_len < sizeof s->body);
    memcpy(s->body, b, s->body_len);
    s->minor = httpd_minor_version(rq);
    const char *hn, *hv;
    size_t hnl, hvl, used = 0;
    for (size_t i = 0; httpd_header_at(rq, i, &hn, &hnl, &hv, &hvl); i++)
        used += (size_t)snprintf(s->headers + used, sizeof s->headers - used, "%.*s=%.*s;", (int)hnl, hn, (int)hvl,
                                 hv);

    answer_mode m = H.mode;
    if (H.hold_first)
        m = H.n == 1 ? ANSWER_HOLD : ANSWER_ECHO;
    switch (m) {
    case ANSWER_ECHO:
        echo(rq);
        break;
    case ANSWER_HOLD:
        H.held = rq;
        httpd_on_close(rq, on_req_close, NULL);
        break;
    case ANSWER_STREAM:
        httpd_stream_start(rq, 200, "Content-Type: text/event-stream\r\n");
        httpd_stream_write(rq, "hello", 5);
        httpd_stream_write(rq, "", 0); /* nothing: not the end of a chunked body */
        httpd_stream_write(rq, "world!", 6);
        httpd_stream_end(rq);
        break;
    case ANSWER_204:
        httpd_respond(rq, 204, NULL, "ignored", 7);
        break;
    case ANSWER_TAKE: { /* the body moves out: the request has none left, the taker has it all */
        vbuf taken = VBUF_INIT;
        httpd_take_body(rq, &taken);
        size_t left;
        httpd_body(rq, &left);
        char out[128];
        int n = snprintf(out, sizeof out, "took %zu, left %zu: %.*s", taken.len, left, (int)taken.len,
                         (const char *)taken.data);
        vbuf_free_secure(&taken);
        httpd_respond(rq, 200, NULL, out, (size_t)n);
        break;
    }
    case ANSWER_KEEP: /* taken above */
        break;
    }
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

typedef bool (*pred_fn)(const void *arg);

static void wait_until(pred_fn pred, const void *arg, const char *what)
{
    struct event *t = evtimer_new(base, on_expire, NULL);
    struct timeval tv = {WAIT_MS / 1000, 0};
    g_expired = false;
    evtimer_add(t, &tv);
    while (!pred(arg) && !g_expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(t);
    if (!pred(arg))
        fail_msg("waited %u ms for %s", WAIT_MS, what);
}

static void run_ready(void)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* ---- a client on the same loop ---- */

typedef struct client {
    int fd;
    struct event *ev;
    vbuf in;
    bool eof;
    bool broken; /* a write found the server gone */
} client;

static void on_client_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    client *c = arg;
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0) {
        assert_int_equal(vbuf_append(&c->in, buf, (size_t)n), 0);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        c->eof = true; /* a reset counts as the close it is */
        event_del(c->ev);
    }
}

static client *cl_open(void)
{
    client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    veil_addr a;
    char spec[160], err[200];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    c->fd = addr_connect(&a, false, err, sizeof err);
    assert_true(c->fd >= 0);
    fd_set_nonblock(c->fd, true);
    c->ev = event_new(base, c->fd, EV_READ | EV_PERSIST, on_client_read, c);
    event_add(c->ev, NULL);
    return c;
}

static void cl_close(client *c)
{
    if (!c)
        return;
    event_free(c->ev);
    close(c->fd);
    vbuf_free(&c->in);
    free(c);
}

static void cl_sendn(client *c, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(c->fd, b, n);
        if (w < 0 && errno == EAGAIN) {
            event_base_loop(base, EVLOOP_NONBLOCK); /* let the server read */
            continue;
        }
        if (w < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            c->broken = true; /* what it answered before closing is still read */
            return;
        }
        assert_true(w > 0);
        b += w;
        n -= (size_t)w;
    }
}

static void cl_send(client *c, const char *s)
{
    cl_sendn(c, s, strlen(s));
}

/* What the client received, without the Date lines (the only varying bytes). */
static const char *cl_text(client *c)
{
    static char out[65536];
    size_t o = 0;
    const char *p = vbuf_cstr(&c->in);
    while (*p && o + 1 < sizeof out) {
        if (strncmp(p, "Date: ", 6) == 0 && (p == vbuf_cstr(&c->in) || p[-1] == '\n')) {
            const char *e = strstr(p, "\r\n");
            assert_non_null(e);
            p = e + 2;
            continue;
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    return out;
}

typedef struct text_wait {
    client *c;
    const char *text;
} text_wait;

static bool has_text(const void *arg)
{
    const text_wait *w = arg;
    return strstr(cl_text(w->c), w->text) != NULL;
}

static void cl_wait_text(client *c, const char *text)
{
    text_wait w = {c, text};
    wait_until(has_text, &w, text);
}

static bool is_eof(const void *arg)
{
    return ((const client *)arg)->eof;
}

static void cl_wait_eof(client *c)
{
    wait_until(is_eof, c, "the server to close the connection");
}

/* Waits for the close, then checks everything the client received. */
static void cl_expect_all(client *c, const char *want)
{
    cl_wait_eof(c);
    assert_string_equal(cl_text(c), want);
}

static bool count_at_least(const void *arg)
{
    const int *const *p = arg;
    return *p[0] >= *p[1];
}

static void wait_count(const int *counter, int n)
{
    const int *args[2] = {counter, &n};
    wait_until(count_at_least, args, "a count");
}

/* ---- fixtures ---- */

static httpd_limits LIM;

static void start(const httpd_limits *lim)
{
    srv = httpd_new(base, lim, handler, NULL);
    assert_non_null(srv);
    veil_addr a;
    char spec[160], err[200];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    int lfd = addr_listen(&a, 64, err, sizeof err);
    assert_true(lfd >= 0);
    fd_set_nonblock(lfd, true);
    assert_int_equal(httpd_accept_on(srv, lfd, err, sizeof err), 0);
}

static int setup(void **state)
{
    (void)state;
    static int n;
    snprintf(sock_path, sizeof sock_path, "/tmp/veil-httpd-test-%d-%d.sock", (int)getpid(), n++);
    memset(&H, 0, sizeof H);
    base = event_base_new();
    assert_non_null(base);
    /* long deadlines unless a test shortens them: nothing here may fire by accident */
    LIM = (httpd_limits){.max_head = 4096, .max_body = 4000, .idle_ms = 60000, .head_ms = 60000,
                         .body_ms = 60000, .max_conns = 64};
    srv = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    httpd_free(srv);
    run_ready();
    event_base_free(base);
    unlink(sock_path);
    return 0;
}

static char *expect_echo(char *out, size_t cap, const char *body)
{
    snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    return out;
}

/* ---- heads and bodies ---- */

static void test_head_parsing(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    /* empty lines before the request line are allowed (RFC 9112 §2.2) */
    cl_send(c, "\r\n\nGET /api/v1/x?a=1&b=%20 HTTP/1.1\r\nHost: veil.test\r\nX-Other: y\r\n\r\n");
    char want[512];
    cl_wait_text(c, "GET /api/v1/x?a=1&b=%20 0:");
    assert_string_equal(cl_text(c), expect_echo(want, sizeof want, "GET /api/v1/x?a=1&b=%20 0:"));
    assert_int_equal(H.n, 1);
    assert_string_equal(H.req[0].method, "GET");
    assert_string_equal(H.req[0].path, "/api/v1/x");
    assert_string_equal(H.req[0].query, "a=1&b=%20");
    assert_string_equal(H.req[0].host, "veil.test");
    assert_string_equal(H.req[0].headers, "Host=veil.test;X-Other=y;"); /* every header, as received */
    assert_int_equal(H.req[0].minor, 1);
    assert_false(c->eof); /* HTTP/1.1 keeps the connection */
    /* the Date header is there */
    assert_non_null(strstr(vbuf_cstr(&c->in), "\r\nDate: "));
    cl_close(c);
}

static void test_body_split_anywhere(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    const char *req = "POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world";
    for (const char *p = req; *p; p++) { /* one byte per write, the loop turning between */
        cl_sendn(c, p, 1);
        run_ready();
    }
    char want[512];
    cl_wait_text(c, "hello world");
    assert_string_equal(cl_text(c), expect_echo(want, sizeof want, "POST /echo 11:hello world"));
    assert_int_equal(H.n, 1);
    cl_close(c);
}

/* httpd_take_body: the handler owns the body (the API layer hands it to a DB
 * worker); the request keeps none, and freeing it frees nothing twice. */
static void test_take_body(void **state)
{
    (void)state;
    H.mode = ANSWER_TAKE;
    start(&LIM);
    client *c = cl_open();
    cl_send(c, "POST /take HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\nhello world");
    cl_wait_text(c, "hello world");
    assert_non_null(strstr(cl_text(c), "took 11, left 0: hello world"));
    cl_close(c);
}

static void test_chunked_request_body(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    cl_send(c, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    run_ready();
    assert_int_equal(H.n, 0); /* not before the last chunk */
    cl_send(c, "1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n");
    char want[512];
    cl_wait_text(c, "world");
    assert_string_equal(cl_text(c), expect_echo(want, sizeof want, "POST /c 11:hello world"));
    cl_close(c);

    /* a malformed chunk size: 400, and the connection closes */
    c = cl_open();
    cl_send(c, "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n");
    cl_expect_all(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 35\r\n"
                     "Connection: close\r\n\r\n{\"detail\":\"Malformed chunked body\"}");
    assert_int_equal(H.n, 1);
    cl_close(c);
}

/* ---- pipelining ---- */

static void test_pipelining_in_order(void **state)
{
    (void)state;
    start(&LIM);
    H.hold_first = true;
    client *c = cl_open();
    cl_send(c, "GET /one HTTP/1.1\r\nHost: h\r\n\r\n"
               "POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
               "GET /three HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_count(&H.n, 1);
    run_ready();
    assert_int_equal(H.n, 1); /* the next waits for the answer to the first */
    assert_string_equal(cl_text(c), "");
    httpd_respond(H.held, 200, "Content-Type: text/plain\r\n", "first", 5);
    H.held = NULL;
    cl_wait_text(c, "GET /three");
    assert_int_equal(H.n, 3);
    assert_string_equal(cl_text(c),
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nfirst"
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\nPOST /two 3:abc"
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nGET /three 0:");
    cl_close(c);
}

/* ---- streamed responses ---- */

static void test_stream_chunked_on_1_1(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_STREAM;
    client *c = cl_open();
    cl_send(c, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "0\r\n\r\n");
    assert_string_equal(cl_text(c), "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                    "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\nworld!\r\n0\r\n\r\n");
    /* the connection goes on */
    H.mode = ANSWER_ECHO;
    cl_send(c, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "GET /after 0:");
    assert_false(c->eof);
    cl_close(c);
}

static void test_stream_close_delimited_on_1_0(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_STREAM;
    client *c = cl_open();
    /* HTTP/1.0 has no chunked coding: the close ends the body, even with keep-alive asked */
    cl_send(c, "GET /s HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cl_expect_all(c, "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
                     "helloworld!");
    cl_close(c);
}

/* HEAD: the head its GET would have (Content-Length included), no body bytes, and
 * the connection stays framed for the request after it (a body sent anyway would be
 * read as the next response). */
static void test_head_has_no_body(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    cl_send(c, "HEAD /h HTTP/1.1\r\nHost: h\r\n\r\nGET /g HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "GET /g 0:");
    assert_string_equal(cl_text(c), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n"
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\n"
                                    "GET /g 0:");
    /* a streamed answer to HEAD: its head only, and the connection goes on */
    H.mode = ANSWER_STREAM;
    cl_send(c, "HEAD /s HTTP/1.1\r\nHost: h\r\n\r\n");
    run_ready();
    H.mode = ANSWER_ECHO;
    cl_send(c, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "GET /after 0:");
    assert_non_null(strstr(cl_text(c), "GET /g 0:HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                       "Transfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\n"));
    assert_false(c->eof);
    cl_close(c);
}

static void test_no_body_statuses(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_204;
    client *c = cl_open();
    cl_send(c, "DELETE /x HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "204 No Content\r\n\r\n");
    run_ready();
    assert_string_equal(cl_text(c), "HTTP/1.1 204 No Content\r\n\r\n"); /* no length, no body */
    cl_close(c);
}

/* ---- keep-alive rules ---- */

static void test_keep_alive_rules(void **state)
{
    (void)state;
    start(&LIM);
    /* HTTP/1.0 without keep-alive: answered, then closed */
    client *c = cl_open();
    cl_send(c, "GET /a HTTP/1.0\r\n\r\n");
    cl_expect_all(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n"
                     "\r\nGET /a 0:");
    cl_close(c);

    /* HTTP/1.0 with keep-alive: said back, and the connection serves another */
    c = cl_open();
    cl_send(c, "GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    cl_wait_text(c, "GET /a 0:");
    assert_string_equal(cl_text(c), "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n"
                                    "Connection: keep-alive\r\n\r\nGET /a 0:");
    cl_send(c, "GET /b HTTP/1.0\r\n\r\n");
    cl_wait_eof(c);
    assert_non_null(strstr(cl_text(c), "GET /b 0:"));
    cl_close(c);

    /* HTTP/1.1 with close among other tokens: answered with Connection: close, then closed */
    int before = H.n;
    c = cl_open();
    cl_send(c, "GET /c HTTP/1.1\r\nHost: h\r\nConnection: TE, Close\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
    cl_expect_all(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n"
                     "\r\nGET /c 0:");
    assert_int_equal(H.n, before + 1); /* the request after the close was never read */
    cl_close(c);

    /* HTTP/1.1 by default: several requests on one connection */
    c = cl_open();
    for (int i = 0; i < 3; i++) {
        cl_send(c, "GET /k HTTP/1.1\r\nHost: h\r\n\r\n");
        run_ready();
    }
    cl_wait_text(c, "GET /k 0:HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nGET /k 0:"
                    "HTTP/1.1 200 OK");
    assert_false(c->eof);
    cl_close(c);
}

/* ---- Expect: 100-continue ---- */

static void test_expect_100_continue(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    cl_send(c, "PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    cl_wait_text(c, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_int_equal(H.n, 0);
    cl_send(c, "data");
    cl_wait_text(c, "PUT /p 4:data");
    assert_string_equal(cl_text(c), "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                    "Content-Length: 13\r\n\r\nPUT /p 4:data");
    cl_close(c);

    /* not to HTTP/1.0, and not when the body is refused anyway */
    c = cl_open();
    cl_send(c, "PUT /p HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata");
    cl_wait_eof(c);
    assert_null(strstr(cl_text(c), "100 Continue"));
    cl_close(c);
    c = cl_open();
    cl_send(c, "PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4001\r\n\r\n");
    cl_wait_eof(c);
    assert_null(strstr(cl_text(c), "100 Continue"));
    assert_non_null(strstr(cl_text(c), "HTTP/1.1 413 "));
    cl_close(c);
}

/* ---- refusals that close ---- */

static void test_431_head_too_large(void **state)
{
    (void)state;
    LIM.max_head = 1024;
    start(&LIM);
    client *c = cl_open();
    char big[2100];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\nX-Big: ");
    memset(big + strlen(big), 'a', 2000);
    big[sizeof big - 1] = '\0';
    cl_send(c, big); /* never finished: the limit alone answers */
    const char *detail = "{\"detail\":\"Request header fields too large (limit 1024 bytes)\"}";
    char want[512];
    snprintf(want, sizeof want,
             "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
             strlen(detail), detail);
    cl_expect_all(c, want);
    assert_int_equal(H.n, 0);
    cl_close(c);

    /* more header fields than the parser takes, within the size limit */
    LIM.max_head = 64 * 1024;
    httpd_free(srv);
    start(&LIM);
    c = cl_open();
    vbuf req = VBUF_INIT;
    vbuf_printf(&req, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 101; i++)
        vbuf_printf(&req, "X-%d: v\r\n", i);
    vbuf_printf(&req, "\r\n");
    cl_sendn(c, req.data, req.len);
    vbuf_free(&req);
    cl_expect_all(c, "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
                     "Content-Length: 43\r\nConnection: close\r\n\r\n{\"detail\":\"Too many request header fields\"}");
    assert_int_equal(H.n, 0);
    cl_close(c);
}

static void test_413_body_too_large(void **state)
{
    (void)state;
    LIM.max_body = 100;
    start(&LIM);
    const char *detail = "{\"detail\":\"Request body too large (limit 100 bytes)\"}";
    char want[512];
    snprintf(want, sizeof want,
             "HTTP/1.1 413 Content Too Large\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n%s",
             strlen(detail), detail);
    /* a declared length past the limit: refused before a byte of the body */
    client *c = cl_open();
    cl_send(c, "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n");
    cl_expect_all(c, want);
    cl_close(c);

    /* exactly the limit is fine */
    c = cl_open();
    char body[101];
    memset(body, 'x', 100);
    body[100] = '\0';
    cl_send(c, "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n");
    cl_send(c, body);
    cl_wait_text(c, "POST /b 100:");
    cl_close(c);

    /* chunks that add up past it */
    c = cl_open();
    cl_send(c, "POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        cl_send(c, "32\r\n");
        cl_sendn(c, body, 50);
        cl_send(c, "\r\n");
    }
    cl_expect_all(c, want);
    assert_int_equal(H.n, 1); /* only the request within the limit reached the handler */
    cl_close(c);
}

static void test_408_deadlines(void **state)
{
    (void)state;
    LIM.head_ms = 300;
    LIM.body_ms = 300;
    LIM.idle_ms = 300;
    start(&LIM);

    /* a head that never ends */
    client *c = cl_open();
    cl_send(c, "GET / HT");
    cl_expect_all(c, "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: 46\r\n"
                     "Connection: close\r\n\r\n{\"detail\":\"Request head not received in time\"}");
    cl_close(c);

    /* a head trickled a byte at a time, 50 ms apart: its deadline runs from the first
     * byte, so the 408 comes while the trickle goes on (were it renewed by each byte,
     * no 408 would come before the last one) */
    c = cl_open();
    char trickle[160];
    snprintf(trickle, sizeof trickle, "GET / HTTP/1.1\r\nX-Slow: ");
    memset(trickle + strlen(trickle), 'a', 100);
    trickle[sizeof trickle - 1] = '\0';
    size_t sent = 0;
    for (; trickle[sent] && !c->eof && !c->broken; sent++) {
        cl_sendn(c, &trickle[sent], 1);
        struct timeval tv = {0, 50 * 1000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    cl_wait_eof(c);
    assert_true(sent < strlen(trickle));
    assert_non_null(strstr(cl_text(c), "HTTP/1.1 408 Request Timeout\r\n"));
    cl_close(c);

    /* a body that stops short */
    c = cl_open();
    cl_send(c, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc");
    cl_expect_all(c, "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\nContent-Length: 46\r\n"
                     "Connection: close\r\n\r\n{\"detail\":\"Request body not received in time\"}");
    assert_int_equal(H.n, 0);
    cl_close(c);

    /* a connection that sends nothing is closed without an answer; so is one idle after a request */
    c = cl_open();
    cl_expect_all(c, "");
    cl_close(c);
    c = cl_open();
    cl_send(c, "GET /i HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_eof(c);
    char want[512];
    assert_string_equal(cl_text(c), expect_echo(want, sizeof want, "GET /i 0:"));
    cl_close(c);
}

static void test_405_400_505(void **state)
{
    (void)state;
    start(&LIM);
    client *c = cl_open();
    cl_send(c, "CONNECT bedrock-runtime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
               "Host: bedrock-runtime.us-east-1.amazonaws.com:443\r\n\r\n");
    cl_expect_all(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n"
                     "Allow: GET, POST, PUT, DELETE, OPTIONS\r\nContent-Length: 31\r\nConnection: close\r\n\r\n"
                     "{\"detail\":\"Method Not Allowed\"}");
    cl_close(c);

    static const char *const malformed[] = {
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\n folded: value\r\n\r\n",          /* obs-fold */
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", /* smuggling */
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "GET http://elsewhere/ HTTP/1.1\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        c = cl_open();
        cl_send(c, malformed[i]);
        cl_expect_all(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 30\r\n"
                         "Connection: close\r\n\r\n{\"detail\":\"Malformed request\"}");
        cl_close(c);
    }
    c = cl_open();
    cl_send(c, "GET / HTTP/2.0\r\n\r\n");
    cl_wait_eof(c);
    assert_non_null(strstr(cl_text(c), " 505 HTTP Version Not Supported\r\n"));
    cl_close(c);
    assert_int_equal(H.n, 0);
}

/* ---- the handler's side of a connection that goes away ---- */

static void test_close_while_handling(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_HOLD;
    client *c = cl_open();
    cl_send(c, "GET /held HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_count(&H.n, 1);
    assert_non_null(H.held);
    cl_close(c); /* the client goes away while the handler holds the request */
    wait_count(&H.closes, 1);
    assert_null(H.held);
    assert_int_equal(httpd_connections(srv), 0);
}

/* An answer given just before the server is freed (veild's shutdown answers its
 * held requests after the loop stopped) still reaches the client. */
static void test_answer_at_free(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_HOLD;
    client *c = cl_open();
    cl_send(c, "GET /held HTTP/1.1\r\nHost: h\r\n\r\n");
    wait_count(&H.n, 1);
    assert_non_null(H.held);
    httpd_respond(H.held, 503, NULL, "restarting", 10);
    httpd_free(srv); /* no loop turn in between */
    srv = NULL;
    cl_wait_eof(c);
    assert_non_null(strstr(cl_text(c), "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_non_null(strstr(cl_text(c), "\r\n\r\nrestarting"));
    cl_close(c);
}

static bool no_connections(const void *arg)
{
    (void)arg;
    return httpd_connections(srv) == 0;
}

static void test_connection_cap(void **state)
{
    (void)state;
    LIM.max_conns = 1;
    start(&LIM);
    assert_int_equal(httpd_max_connections(srv), 1);
    client *a = cl_open();
    cl_send(a, "GET /first HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(a, "GET /first 0:");
    assert_int_equal(httpd_connections(srv), 1);
    client *b = cl_open();
    cl_expect_all(b, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                     "Connection: close\r\nContent-Length: 45\r\n\r\n"
                     "{\"detail\":\"Too many connections, retry soon\"}");
    cl_close(b);
    /* the first is still served, and once it goes a new one is accepted */
    cl_send(a, "GET /again HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(a, "GET /again 0:");
    cl_close(a);
    wait_until(no_connections, NULL, "the server to see the close");
    client *c = cl_open();
    cl_send(c, "GET /third HTTP/1.1\r\nHost: h\r\n\r\n");
    cl_wait_text(c, "GET /third 0:");
    cl_close(c);
}

/* ---- what a held request costs ---- */

#define HELD_N 200                /* requests held at once */
#define PER_REQUEST_OVERHEAD 2560 /* connection, bufferevent, timers, the request struct */

static size_t allocated(void)
{
#ifdef VEIL_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    return mallinfo2().uordblks;
#endif
}

/* A raw client (no event, no buffer of its own: its costs are not the server's):
 * connects, sends the whole request, lets the server accept. */
static int raw_send(const char *req, size_t len)
{
    veil_addr a;
    char spec[160], err[200];
    snprintf(spec, sizeof spec, "unix:%s", sock_path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    int fd = addr_connect(&a, false, err, sizeof err);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, req, len), (ssize_t)len);
    run_ready();
    return fd;
}

static bool kept_at_least(const void *arg)
{
    return H.n_kept >= *(const int *)arg;
}

static void wait_kept(int n)
{
    wait_until(kept_at_least, &n, "the requests to be held");
}

static void test_headers_by_name(void **state)
{
    (void)state;
    start(&LIM);
    H.mode = ANSWER_KEEP;
    char req[4096];
    int len = snprintf(req, sizeof req, "GET /h HTTP/1.0\r\nX-Test: one\r\nx-test: two\r\n");
    for (int i = 0; i < 97; i++)
        len += snprintf(req + len, sizeof req - (size_t)len, "H%d: v%d\r\n", i, i);
    len += snprintf(req + len, sizeof req - (size_t)len, "\r\n");
    int fd = raw_send(req, (size_t)len);
    wait_kept(1);
    httpd_req *rq = H.kept[0];
    assert_string_equal(httpd_header(rq, "X-TEST"), "one"); /* the first of two, any case */
    assert_string_equal(httpd_header(rq, "h96"), "v96");    /* the 99th header */
    assert_string_equal(httpd_header(rq, "H0"), "v0");
    assert_null(httpd_header(rq, "X-Tes"));
    assert_null(httpd_header(rq, "X-Missing"));
    assert_null(httpd_query(rq));
    assert_int_equal(httpd_minor_version(rq), 0);
    close(fd);
}

/* The attack it bounds: many idle streams (or slow handlers), each pinning what its
 * request allocated. 200 held requests of a 260-byte head and a 1,000-byte body must
 * cost about those bytes each, plus the connection. */
static void test_held_request_cost(void **state)
{
    (void)state;
    LIM.max_conns = 300;
    start(&LIM);
    H.mode = ANSWER_KEEP;
    char body[1000], req[2048];
    memset(body, 'b', sizeof body);
    int hl = snprintf(req, sizeof req,
                      "POST /api/v1/chat/encrypted/stream HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
                      "Authorization: Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsiLCJ0eXAiOiJKV1QifQ.e30.c2lnbmF0dXJl\r\n"
                      "Content-Type: application/json\r\nAccept: text/event-stream\r\nUser-Agent: veil\r\n"
                      "Content-Length: %zu\r\n\r\n", sizeof body);
    memcpy(req + hl, body, sizeof body);
    size_t len = (size_t)hl + sizeof body;
    int fds[8 + HELD_N];
    /* a few first: one-time allocations (the loop's tables) are not the requests' */
    for (int i = 0; i < 8; i++)
        fds[i] = raw_send(req, len);
    wait_kept(8);
    size_t before = allocated();
    for (int i = 8; i < 8 + HELD_N; i++)
        fds[i] = raw_send(req, len);
    wait_kept(8 + HELD_N);
    size_t per = (allocated() - before) / HELD_N;
    size_t bound = len + PER_REQUEST_OVERHEAD;
    print_message("a held request: %zu bytes (head %d + body %zu; bound %zu)\n", per, hl, sizeof body, bound);
    assert_true(per <= bound);
    size_t n;
    assert_memory_equal(httpd_body(H.kept[8 + HELD_N - 1], &n), body, sizeof body);
    assert_int_equal(n, sizeof body);
    for (int i = 0; i < 8 + HELD_N; i++)
        close(fds[i]);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as veild */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_head_parsing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_split_anywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_take_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_chunked_request_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_chunked_on_1_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_close_delimited_on_1_0, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_has_no_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_body_statuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expect_100_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_431_head_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_413_body_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_408_deadlines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_405_400_505, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_while_handling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_answer_at_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_headers_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_request_cost, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* src/net/https_pool.c with src/net/https.c: kept-alive connections, against an
 * in-test HTTP/1.1 server on loopback (plain, and TLS with a certificate made here)
 * that counts the connections it accepts and answers each request as its path says.
 * Reuse; none after Connection: close, HTTP/1.0, a truncated body, trailing bytes, a
 * cancel; the idle timeout, the max age and requests; a server that closes an idle
 * connection; the one retry when a reused connection dies before the answer starts,
 * and none after its first byte; max idle under concurrency; pause; shutdown.
 * No timing assertions: every wait is for an event, with a generous bound.
 * Stays whole: one server, one client harness, the cases share both. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <unistd.h>

#include "common/buf.h"
#include "net/http1.h"
#include "net/https.h"
#include "net/https_pool.h"

#define WAIT_MS 10000 /* bound of every wait; events end them much sooner */

/* ------------------------------------------------------------------ the server */

typedef struct srv_conn {
    struct bufferevent *bev;
    unsigned seq;      /* requests read on this connection */
    bool closing;      /* close once the output is flushed */
    struct event *timer;
    int slow_left;     /* /slow: chunks still to send */
    bool then_close;   /* /idle-close: close a while after the answer */
    LIST_ENTRY(srv_conn) link;
} srv_conn;

static struct {
    struct event_base *base;
    struct evconnlistener *lst;
    SSL_CTX *sctx; /* NULL: plain HTTP */
    X509 *cert;
    EVP_PKEY *key;
    char ca_path[64];
    uint16_t port;
    unsigned accepts, requests, open_conns;
    unsigned conn_close_asked; /* requests that said Connection: close */
    LIST_HEAD(, srv_conn) conns;
    bool tls;
} S;

static void srv_free(srv_conn *sc)
{
    if (sc->bev) {
        SSL *ssl = S.tls ? bufferevent_openssl_get_ssl(sc->bev) : NULL;
        if (ssl)
            SSL_shutdown(ssl); /* close_notify, as a server closing an idle connection says */
        bufferevent_free(sc->bev);
    }
    if (sc->timer)
        event_free(sc->timer);
    LIST_REMOVE(sc, link);
    S.open_conns--;
    free(sc);
    ERR_clear_error();
}

static void srv_close_after_flush(srv_conn *sc)
{
    sc->closing = true;
    if (evbuffer_get_length(bufferevent_get_output(sc->bev)) == 0)
        srv_free(sc);
}

static void srv_write(srv_conn *sc, const char *s) { bufferevent_write(sc->bev, s, strlen(s)); }

static const char OK[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

static void srv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    srv_conn *sc = arg;
    if (sc->then_close) {
        srv_free(sc);
        return;
    }
    if (sc->slow_left > 0) {
        srv_write(sc, "5\r\nchunk\r\n");
        if (--sc->slow_left == 0) {
            srv_write(sc, "0\r\n\r\n");
            return;
        }
    } else { /* /delay */
        srv_write(sc, OK);
        return;
    }
    struct timeval tv = {0, 20000};
    evtimer_add(sc->timer, &tv);
}

static void srv_later(srv_conn *sc, long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(sc->timer, &tv);
}

/* Answers one request as its path says. Returns false when sc was freed. */
static bool srv_answer(srv_conn *sc, const http1_request *rq)
{
    char path[64];
    snprintf(path, sizeof path, "%.*s", (int)(rq->path_len < 63 ? rq->path_len : 63), rq->path);
    bool reused = sc->seq > 1;
    size_t cl;
    const char *conn = http1_header_get(&rq->headers, "Connection", &cl);
    bool client_close = conn && cl == 5 && strncasecmp(conn, "close", 5) == 0;
    if (client_close)
        S.conn_close_asked++;
#define IS(p) (strcmp(path, p) == 0)
    if (IS("/ok") || (!reused && (IS("/close-if-reused") || IS("/half-if-reused") || IS("/head-if-reused")))) {
        srv_write(sc, OK);
    } else if (IS("/chunked")) {
        srv_write(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    } else if (IS("/close")) { /* said, not done: the client must close on its own */
        srv_write(sc, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, close\r\n\r\nhello");
    } else if (IS("/http10")) { /* and the server keeps the connection: the client must not */
        srv_write(sc, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    } else if (IS("/truncated")) {
        srv_write(sc, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
        srv_close_after_flush(sc);
        return false;
    } else if (IS("/extra")) {
        srv_write(sc, OK);
        srv_write(sc, "HTTP/1.1 200 OK\r\n"); /* bytes nobody asked for */
    } else if (IS("/idle-close")) {
        srv_write(sc, OK);
        sc->then_close = true;
        srv_later(sc, 30);
    } else if (IS("/close-if-reused") || IS("/always-close")) {
        srv_free(sc); /* the request arrived; no byte of answer */
        return false;
    } else if (IS("/half-if-reused")) {
        srv_write(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        srv_close_after_flush(sc);
        return false;
    } else if (IS("/head-if-reused")) {
        srv_write(sc, "HTTP/1.1 200 O");
        srv_close_after_flush(sc);
        return false;
    } else if (IS("/slow")) {
        srv_write(sc, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n");
        sc->slow_left = 10;
        srv_later(sc, 20);
    } else if (IS("/delay")) {
        srv_later(sc, 100);
    } else if (!IS("/hang")) {
        srv_write(sc, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
#undef IS
    if (client_close) {
        srv_close_after_flush(sc);
        return false;
    }
    return true;
}

static void srv_read(struct bufferevent *bev, void *arg)
{
    srv_conn *sc = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!sc->closing && evbuffer_get_length(in) > 0) {
        size_t len = evbuffer_get_length(in);
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)len);
        http1_request rq;
        int r = http1_parse_request(p, len, &rq);
        if (r == HTTP1_NEED_MORE)
            return;
        assert_true(r > 0);
        assert_true(rq.body == HTTP1_BODY_NONE); /* the tests send GETs */
        sc->seq++;
        S.requests++;
        bool alive = srv_answer(sc, &rq);
        if (!alive)
            return;
        evbuffer_drain(in, (size_t)r);
    }
}

static void srv_written(struct bufferevent *bev, void *arg)
{
    (void)bev;
    srv_conn *sc = arg;
    if (sc->closing)
        srv_free(sc);
}

static void srv_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        srv_free(arg);
}

static void srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                       void *arg)
{
    (void)l;
    (void)sa;
    (void)salen;
    (void)arg;
    srv_conn *sc = calloc(1, sizeof *sc);
    assert_non_null(sc);
    S.accepts++;
    S.open_conns++;
    sc->bev = S.tls ? bufferevent_openssl_socket_new(S.base, fd, SSL_new(S.sctx), BUFFEREVENT_SSL_ACCEPTING,
                                                     BEV_OPT_CLOSE_ON_FREE)
                    : bufferevent_socket_new(S.base, fd, BEV_OPT_CLOSE_ON_FREE);
    assert_non_null(sc->bev);
    if (S.tls)
        bufferevent_openssl_set_allow_dirty_shutdown(sc->bev, 1);
    sc->timer = evtimer_new(S.base, srv_timer, sc);
    LIST_INSERT_HEAD(&S.conns, sc, link);
    bufferevent_setcb(sc->bev, srv_read, srv_written, srv_event, sc);
    bufferevent_enable(sc->bev, EV_READ | EV_WRITE);
}

/* A self-signed P-256 certificate for 127.0.0.1, written where the client's CA file is. */
static void make_cert(void)
{
    S.key = EVP_EC_gen("P-256");
    S.cert = X509_new();
    assert_non_null(S.key);
    assert_non_null(S.cert);
    X509_set_version(S.cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(S.cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(S.cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(S.cert), 3600);
    X509_NAME *name = X509_get_subject_name(S.cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"veil test", -1, -1, 0);
    X509_set_issuer_name(S.cert, name);
    X509_set_pubkey(S.cert, S.key);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, S.cert, S.cert, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    assert_non_null(san);
    assert_non_null(bc);
    X509_add_ext(S.cert, san, -1);
    X509_add_ext(S.cert, bc, -1);
    X509_EXTENSION_free(san);
    X509_EXTENSION_free(bc);
    assert_true(X509_sign(S.cert, S.key, EVP_sha256()) > 0);
    snprintf(S.ca_path, sizeof S.ca_path, "/tmp/veil-pool-ca-XXXXXX");
    int fd = mkstemp(S.ca_path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_true(PEM_write_X509(f, S.cert) == 1);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    S.base = event_base_new();
    LIST_INIT(&S.conns);
    make_cert();
    S.sctx = SSL_CTX_new(TLS_server_method());
    if (!S.sctx || SSL_CTX_use_certificate(S.sctx, S.cert) != 1 || SSL_CTX_use_PrivateKey(S.sctx, S.key) != 1)
        return -1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    S.lst = evconnlistener_new_bind(S.base, srv_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64,
                                    (struct sockaddr *)&sin, sizeof sin);
    if (!S.lst)
        return -1;
    struct sockaddr_in got;
    socklen_t gl = sizeof got;
    getsockname(evconnlistener_get_fd(S.lst), (struct sockaddr *)&got, &gl);
    S.port = ntohs(got.sin_port);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    while (!LIST_EMPTY(&S.conns))
        srv_free(LIST_FIRST(&S.conns));
    evconnlistener_free(S.lst);
    SSL_CTX_free(S.sctx);
    X509_free(S.cert);
    EVP_PKEY_free(S.key);
    unlink(S.ca_path);
    event_base_free(S.base);
    return 0;
}

/* ------------------------------------------------------------------ the client */

typedef struct req {
    int status;
    vbuf body;
    bool done;
    https_err err;
    int heads;
    https_conn *conn;
    bool cancel_on_body; /* https_cancel at the first body bytes */
    bool pause_on_head;
} req;

static struct {
    https_ctx *ctx;
    https_pool *pool;
} C;

static int on_head(void *ud, const http1_response *resp)
{
    req *r = ud;
    r->heads++;
    r->status = resp->status;
    if (r->pause_on_head)
        https_pause(r->conn, true);
    return 0;
}

static int on_body(void *ud, const uint8_t *d, size_t n)
{
    req *r = ud;
    if (r->cancel_on_body) {
        https_cancel(r->conn);
        r->conn = NULL;
        r->done = true; /* no on_done follows a cancel */
        return 0;
    }
    return vbuf_append(&r->body, d, n);
}

static void on_done(void *ud, https_err err, const char *detail)
{
    (void)detail;
    req *r = ud;
    r->done = true;
    r->err = err;
    r->conn = NULL;
}

static const https_callbacks CB = {on_head, on_body, on_done};

static void start(req *r, const char *path, https_pool *pool)
{
    free(r->body.data);
    bool cancel = r->cancel_on_body, pause = r->pause_on_head;
    memset(r, 0, sizeof *r);
    r->cancel_on_body = cancel;
    r->pause_on_head = pause;
    https_request rq = {.tls = S.tls, .host = "127.0.0.1", .port = S.port, .method = "GET", .target = path,
                        .idle_timeout_ms = 3000, .connect_timeout_ms = 5000, .pool = pool};
    char err[160];
    r->conn = https_start(C.ctx, &rq, &CB, r, err, sizeof err);
    assert_non_null(r->conn);
}

static bool all_done(req *rs, int n)
{
    for (int i = 0; i < n; i++)
        if (!rs[i].done)
            return false;
    return true;
}

static void spin(int ms)
{
    struct timeval slice = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(S.base, &slice);
    event_base_dispatch(S.base);
}

#define WAIT_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int waited_ = 0; !(cond) && waited_ < WAIT_MS; waited_ += 5)                          \
            spin(5);                                                                               \
        if (!(cond))                                                                               \
            fail_msg("gave up waiting for %s", #cond);                                             \
    } while (0)

/* One request to its end; asserts it succeeded with the server's "hello". */
static void get_ok(req *r, const char *path)
{
    start(r, path, C.pool);
    WAIT_UNTIL(r->done);
    if (r->err != HTTPS_OK)
        fail_msg("%s: %s", path, https_strerror(r->err));
    assert_int_equal(r->status, 200);
    assert_int_equal(r->body.len, 5);
    assert_memory_equal(r->body.data, "hello", 5);
}

static https_pool_stats stats(void)
{
    https_pool_stats st;
    https_pool_get_stats(C.pool, &st);
    return st;
}

/* A fresh client and pool per test; the server's counters from zero. */
static void client(bool tls, const https_pool_config *cfg)
{
    char err[200];
    S.tls = tls;
    S.accepts = S.requests = S.conn_close_asked = 0;
    C.ctx = https_ctx_new(S.base, tls ? S.ca_path : NULL, err, sizeof err);
    assert_non_null(C.ctx);
    https_pool_config def = https_pool_config_default();
    C.pool = https_pool_new(C.ctx, cfg ? cfg : &def, err, sizeof err);
    assert_non_null(C.pool);
}

static void client_end(req *rs, int n)
{
    https_pool_free(C.pool);
    https_ctx_free(C.ctx);
    for (int i = 0; i < n; i++)
        vbuf_free(&rs[i].body);
    /* the server sees every pooled connection close */
    WAIT_UNTIL(S.open_conns == 0);
}

/* ------------------------------------------------------------------ the cases */

static void reuse(bool tls)
{
    req r = {0};
    client(tls, NULL);
    get_ok(&r, "/ok");
    get_ok(&r, "/ok");
    start(&r, "/chunked", C.pool); /* a chunked body's end leaves it reusable too */
    WAIT_UNTIL(r.done);
    assert_int_equal(r.err, HTTPS_OK);
    get_ok(&r, "/ok");
    assert_int_equal(S.requests, 4);
    assert_int_equal(S.accepts, 1); /* one TCP connection (and one handshake) for all */
    assert_int_equal(S.conn_close_asked, 0);
    https_pool_stats st = stats();
    assert_int_equal(st.opened, 1);
    assert_int_equal(st.reused, 3);
    assert_int_equal(st.idle, 1);
    client_end(&r, 1);
}
static void test_reuse_plain(void **state) { (void)state; reuse(false); }
static void test_reuse_tls(void **state) { (void)state; reuse(true); }

/* Without a pool: Connection: close on the wire and a connection per request. */
static void test_no_pool_closes(void **state)
{
    (void)state;
    req r = {0};
    client(true, NULL);
    start(&r, "/ok", NULL);
    WAIT_UNTIL(r.done);
    start(&r, "/ok", NULL);
    WAIT_UNTIL(r.done);
    assert_int_equal(r.err, HTTPS_OK);
    assert_int_equal(S.accepts, 2);
    assert_int_equal(S.conn_close_asked, 2);
    client_end(&r, 1);
}

/* Each of these answers leaves its connection unusable; the next request connects. */
static void no_reuse_after(bool tls, const char *path, https_err want)
{
    req r = {0};
    client(tls, NULL);
    start(&r, path, C.pool);
    WAIT_UNTIL(r.done);
    if (r.err != want)
        fail_msg("%s: got %s, want %s", path, https_strerror(r.err), https_strerror(want));
    get_ok(&r, "/ok");
    if (S.accepts != 2)
        fail_msg("%s: %u connections, want 2 (the first was reused)", path, S.accepts);
    assert_int_equal(stats().reused, 0);
    assert_int_equal(stats().pooled, 1); /* the /ok only: the first was never kept */
    client_end(&r, 1);
}

static void test_no_reuse_after_connection_close(void **state)
{
    (void)state;
    no_reuse_after(false, "/close", HTTPS_OK);
    no_reuse_after(true, "/close", HTTPS_OK);
}

static void test_no_reuse_after_http10(void **state)
{
    (void)state;
    no_reuse_after(false, "/http10", HTTPS_OK);
    no_reuse_after(true, "/http10", HTTPS_OK);
}

static void test_no_reuse_after_truncated_body(void **state)
{
    (void)state;
    no_reuse_after(false, "/truncated", HTTPS_ERR_TRUNCATED);
    no_reuse_after(true, "/truncated", HTTPS_ERR_TRUNCATED);
}

static void test_no_reuse_with_unread_bytes(void **state)
{
    (void)state;
    no_reuse_after(false, "/extra", HTTPS_OK);
    no_reuse_after(true, "/extra", HTTPS_OK);
}

/* A cancelled request's connection has unread bytes: closed, never pooled; the same
 * for one paused and then cancelled. */
static void test_no_reuse_after_cancel(void **state)
{
    (void)state;
    req r = {0};
    client(true, NULL);
    r.cancel_on_body = true;
    start(&r, "/slow", C.pool);
    WAIT_UNTIL(r.done);
    r.cancel_on_body = false;
    r.pause_on_head = true;
    start(&r, "/slow", C.pool);
    WAIT_UNTIL(r.heads == 1);
    spin(60); /* chunks arrive and wait while paused */
    assert_false(r.done);
    https_cancel(r.conn);
    r.pause_on_head = false;
    get_ok(&r, "/ok");
    assert_int_equal(S.accepts, 3);
    https_pool_stats st = stats();
    assert_int_equal(st.reused, 0);
    assert_int_equal(st.pooled, 1); /* only the last */
    client_end(&r, 1);
}

/* Backpressure: a paused response resumes, ends cleanly, and its connection is reused. */
static void test_pause_then_reuse(void **state)
{
    (void)state;
    req r = {0};
    client(true, NULL);
    r.pause_on_head = true;
    start(&r, "/slow", C.pool);
    WAIT_UNTIL(r.heads == 1);
    spin(100);
    assert_false(r.done);
    https_pause(r.conn, false);
    WAIT_UNTIL(r.done);
    assert_int_equal(r.err, HTTPS_OK);
    assert_int_equal(r.body.len, 5 + 10 * 5);
    r.pause_on_head = false;
    get_ok(&r, "/ok");
    assert_int_equal(S.accepts, 1);
    client_end(&r, 1);
}

/* A pause asked for while the connection is still being made holds from the moment
 * the request is out (a retry's fresh connection is in the same place); it used to
 * be dropped then, and the answer flowed to a caller that could not take it. */
static void test_pause_before_the_request_is_out(void **state)
{
    (void)state;
    for (int tls = 0; tls < 2; tls++) {
        req r = {0};
        client(tls, NULL);
        start(&r, "/ok", C.pool);
        https_pause(r.conn, true); /* still connecting */
        WAIT_UNTIL(S.requests == 1);
        spin(100); /* the answer is on its way: it must wait */
        assert_int_equal(r.heads, 0);
        assert_false(r.done);
        https_pause(r.conn, false);
        WAIT_UNTIL(r.done);
        assert_int_equal(r.err, HTTPS_OK);
        assert_int_equal(r.body.len, 5);
        client_end(&r, 1);
    }
}

static void test_idle_timeout_closes(void **state)
{
    (void)state;
    req r = {0};
    https_pool_config cfg = https_pool_config_default();
    cfg.idle_timeout_ms = 50;
    client(true, &cfg);
    get_ok(&r, "/ok");
    assert_int_equal(stats().idle, 1);
    WAIT_UNTIL(stats().expired == 1);
    assert_int_equal(stats().idle, 0);
    WAIT_UNTIL(S.open_conns == 0); /* closed, not only forgotten */
    get_ok(&r, "/ok");
    assert_int_equal(S.accepts, 2);
    client_end(&r, 1);
}

static void test_max_age_and_max_requests(void **state)
{
    (void)state;
    req r = {0};
    https_pool_config cfg = https_pool_config_default();
    cfg.max_requests = 2;
    client(false, &cfg);
    for (int i = 0; i < 5; i++)
        get_ok(&r, "/ok");
    assert_int_equal(S.accepts, 3); /* 2 + 2 + 1 */
    client_end(&r, 1);

    cfg = https_pool_config_default();
    cfg.max_age_ms = 60; /* cuts the 30 s idle timeout short */
    client(true, &cfg);
    get_ok(&r, "/ok");
    WAIT_UNTIL(stats().expired == 1);
    get_ok(&r, "/ok");
    assert_int_equal(S.accepts, 2);
    client_end(&r, 1);
}

/* The server closes a connection while it is idle in the pool: the pool sees it go
 * (close_notify or EOF) and the next request connects afresh, without an error. */
static void test_server_closes_idle(void **state)
{
    (void)state;
    for (int tls = 0; tls < 2; tls++) {
        req r = {0};
        client(tls, NULL);
        get_ok(&r, "/idle-close");
        WAIT_UNTIL(stats().dropped == 1);
        assert_int_equal(stats().idle, 0);
        get_ok(&r, "/ok");
        assert_int_equal(S.accepts, 2);
        assert_int_equal(stats().retried, 0);
        client_end(&r, 1);
    }
}

/* The server takes the request on a reused connection and closes it without a byte
 * of answer (it was closing that idle connection as we wrote): the request goes out
 * once more on a fresh connection, and the caller sees one clean answer. */
static void test_retry_when_reused_dies_before_answer(void **state)
{
    (void)state;
    for (int tls = 0; tls < 2; tls++) {
        req r = {0};
        client(tls, NULL);
        get_ok(&r, "/ok");
        get_ok(&r, "/close-if-reused");
        assert_int_equal(r.heads, 1);
        assert_int_equal(S.accepts, 2);
        assert_int_equal(S.requests, 3);
        https_pool_stats st = stats();
        assert_int_equal(st.retried, 1);
        assert_int_equal(st.reused, 1);
        client_end(&r, 1);
    }
}

/* Once, not twice: a server that always closes gets the caller an error. */
static void test_retry_only_once(void **state)
{
    (void)state;
    req r = {0};
    client(true, NULL);
    get_ok(&r, "/ok");
    start(&r, "/always-close", C.pool);
    WAIT_UNTIL(r.done);
    assert_int_equal(r.err, HTTPS_ERR_TRUNCATED);
    assert_int_equal(r.heads, 0);
    assert_int_equal(S.accepts, 2);
    assert_int_equal(S.requests, 3);
    assert_int_equal(stats().retried, 1);
    client_end(&r, 1);
}

/* After the first byte of the answer, never again: the caller gets the error. */
static void test_no_retry_after_first_byte(void **state)
{
    (void)state;
    const char *paths[] = {"/half-if-reused", "/head-if-reused"};
    for (int i = 0; i < 2; i++) {
        req r = {0};
        client(true, NULL);
        get_ok(&r, "/ok");
        start(&r, paths[i], C.pool);
        WAIT_UNTIL(r.done);
        assert_int_equal(r.err, HTTPS_ERR_TRUNCATED);
        assert_int_equal(S.requests, 2); /* not sent again */
        assert_int_equal(S.accepts, 1);
        assert_int_equal(stats().retried, 0);
        client_end(&r, 1);
    }
}

/* A deadline on a reused connection is an error for the caller, not a retry (the
 * server may be working on it). */
static void test_no_retry_after_timeout(void **state)
{
    (void)state;
    req r = {0};
    client(false, NULL);
    get_ok(&r, "/ok");
    https_request rq = {.host = "127.0.0.1", .port = S.port, .method = "GET", .target = "/hang",
                        .idle_timeout_ms = 100, .pool = C.pool};
    char err[160];
    vbuf_free(&r.body);
    memset(&r, 0, sizeof r);
    r.conn = https_start(C.ctx, &rq, &CB, &r, err, sizeof err);
    assert_non_null(r.conn);
    WAIT_UNTIL(r.done);
    assert_int_equal(r.err, HTTPS_ERR_TIMEOUT_IDLE);
    assert_int_equal(S.requests, 2);
    assert_int_equal(stats().retried, 0);
    client_end(&r, 1);
}

/* N requests at once open N connections; when they end, max_idle stay. */
static void test_max_idle_under_concurrency(void **state)
{
    (void)state;
    enum { N = 6 };
    req rs[N];
    memset(rs, 0, sizeof rs);
    https_pool_config cfg = https_pool_config_default();
    cfg.max_idle = 2;
    client(true, &cfg);
    for (int i = 0; i < N; i++)
        start(&rs[i], "/delay", C.pool);
    WAIT_UNTIL(all_done(rs, N));
    for (int i = 0; i < N; i++)
        assert_int_equal(rs[i].err, HTTPS_OK);
    assert_int_equal(S.accepts, N);
    https_pool_stats st = stats();
    assert_int_equal(st.idle, 2);
    assert_int_equal(st.evicted, N - 2);
    WAIT_UNTIL(S.open_conns == 2);
    /* two more at once take the two kept */
    start(&rs[0], "/ok", C.pool);
    start(&rs[1], "/ok", C.pool);
    WAIT_UNTIL(all_done(rs, 2));
    assert_int_equal(S.accepts, N);
    client_end(rs, N);
}

/* A pool serves the context it was made for only. */
static void test_pool_of_another_context(void **state)
{
    (void)state;
    char err[160];
    client(false, NULL);
    https_ctx *other = https_ctx_new(S.base, NULL, err, sizeof err);
    assert_non_null(other);
    https_request rq = {.host = "127.0.0.1", .port = S.port, .method = "GET", .target = "/ok", .pool = C.pool};
    req r = {0};
    assert_null(https_start(other, &rq, &CB, &r, err, sizeof err));
    assert_string_equal(err, "bad request description");
    https_ctx_free(other);
    client_end(&r, 1);
}

/* Freed with connections idle in it: all closed (ASan checks the memory). */
static void test_free_with_idle_connections(void **state)
{
    (void)state;
    enum { N = 3 };
    req rs[N];
    memset(rs, 0, sizeof rs);
    client(true, NULL);
    for (int i = 0; i < N; i++)
        start(&rs[i], "/delay", C.pool);
    WAIT_UNTIL(all_done(rs, N));
    assert_int_equal(stats().idle, N);
    client_end(rs, N); /* waits until the server saw all N close */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuse_plain),
        cmocka_unit_test(test_reuse_tls),
        cmocka_unit_test(test_no_pool_closes),
        cmocka_unit_test(test_no_reuse_after_connection_close),
        cmocka_unit_test(test_no_reuse_after_http10),
        cmocka_unit_test(test_no_reuse_after_truncated_body),
        cmocka_unit_test(test_no_reuse_with_unread_bytes),
        cmocka_unit_test(test_no_reuse_after_cancel),
        cmocka_unit_test(test_pause_then_reuse),
        cmocka_unit_test(test_pause_before_the_request_is_out),
        cmocka_unit_test(test_idle_timeout_closes),
        cmocka_unit_test(test_max_age_and_max_requests),
        cmocka_unit_test(test_server_closes_idle),
        cmocka_unit_test(test_retry_when_reused_dies_before_answer),
        cmocka_unit_test(test_retry_only_once),
        cmocka_unit_test(test_no_retry_after_first_byte),
        cmocka_unit_test(test_no_retry_after_timeout),
        cmocka_unit_test(test_max_idle_under_concurrency),
        cmocka_unit_test(test_pool_of_another_context),
        cmocka_unit_test(test_free_with_idle_connections),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

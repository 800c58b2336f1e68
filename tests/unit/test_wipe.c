/* Secrets leave no copy in freed memory: every block that veil's code, jansson
 * or libevent releases while a test runs is searched for the secret before it
 * is freed.
 *
 * How the frees are seen: this program alone is linked with
 * -Wl,--wrap=free,--wrap=realloc (tests/tests.cmake), so every free and
 * realloc in veil's static libraries goes through __wrap_free/__wrap_realloc
 * below; libevent's and jansson's frees come through their own allocator hooks
 * (event_set_mem_functions, json_set_alloc_funcs). The realloc wrapper always
 * moves the block, as glibc's realloc may, so an unwiped old copy is never
 * hidden by a lucky in-place growth. The detector's own test proves it sees
 * such a copy. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <jansson.h>
#include <malloc.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <unistd.h>

#include "net/https.h"
#include "aws/imds.h"
#include "common/addr.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/secret.h"
#include "enclave/enclave.h"
#include "enclave/history.h"
#include "enclave/server.h"
#include "enclave/state.h"
#include "server/link/enclave_client.h"

/* ---- the detector ---- */

static struct {
    bool armed;
    const char *needle;
    size_t needle_len;
    unsigned blocks;   /* blocks released while armed */
    unsigned hits;     /* ... that still held the needle: veil's code and jansson */
    unsigned ev_hits;  /* ... released by libevent (its buffer chains) */
} W;

void __real_free(void *p);
void *__real_realloc(void *p, size_t n);

static void check_block(const void *p, bool libevent)
{
    if (!W.armed || !p)
        return;
    W.blocks++;
    if (memmem(p, malloc_usable_size((void *)p), W.needle, W.needle_len))
        *(libevent ? &W.ev_hits : &W.hits) += 1;
}

/* realloc that always moves, and checks the block it leaves */
static void *moving_realloc(void *p, size_t n, bool libevent)
{
    if (!p)
        return malloc(n);
    void *q = malloc(n ? n : 1);
    if (!q)
        return NULL;
    size_t old = malloc_usable_size(p);
    memcpy(q, p, old < n ? old : n);
    check_block(p, libevent);
    __real_free(p);
    return q;
}

void __wrap_free(void *p)
{
    check_block(p, false);
    __real_free(p);
}

void *__wrap_realloc(void *p, size_t n)
{
    return moving_realloc(p, n, false);
}

/* jansson's default allocator frees unwiped; this one does too, but looks first */
static void json_checking_free(void *p)
{
    __wrap_free(p);
}

static void *ev_malloc(size_t n)
{
    return malloc(n);
}

static void *ev_realloc(void *p, size_t n)
{
    return moving_realloc(p, n, true);
}

static void ev_free(void *p)
{
    check_block(p, true);
    __real_free(p);
}

static void arm(const char *needle)
{
    W.armed = true;
    W.needle = needle;
    W.needle_len = strlen(needle);
    W.blocks = W.hits = W.ev_hits = 0;
}

static void disarm(void)
{
    W.armed = false;
}

/* ---- buffers ---- */

#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"

/* A secret at the front of a buffer that then doubles 8 times. */
static void grow_with(int (*append)(vbuf *, const void *, size_t), vbuf *b)
{
    assert_int_equal(append(b, SECRET, strlen(SECRET)), 0);
    for (int i = 0; i < 20000; i++)
        assert_int_equal(append(b, "x", 1), 0);
}

/* Calibration: plain growth leaves the secret in the blocks realloc frees, and
 * the detector sees it; so the tests below can fail. */
static void test_detector_sees_realloc_copies(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    arm(SECRET);
    grow_with(vbuf_append, &b);
    vbuf_free_secure(&b);
    disarm();
    assert_true(W.blocks >= 8);
    assert_true(W.hits >= 7); /* every old block; the last was wiped by vbuf_free_secure */
}

static void test_vbuf_secure_growth(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    arm(SECRET);
    grow_with(vbuf_append_secure, &b);
    assert_int_equal(b.len, strlen(SECRET) + 20000);
    assert_memory_equal(b.data, SECRET, strlen(SECRET)); /* the bytes moved intact */
    assert_int_equal(b.data[b.len - 1], 'x');
    assert_int_equal(vbuf_reserve_secure(&b, SIZE_MAX), -1); /* overflow: refused, kept */
    assert_memory_equal(b.data, SECRET, strlen(SECRET));
    vbuf_free_secure(&b);
    disarm();
    assert_true(W.blocks >= 9);
    assert_int_equal(W.hits, 0);
}

/* veil-enclave's workers share the credentials: a set that SET_CREDENTIALS replaced
 * while a stream still signs with it is freed when that stream lets go, and wiped
 * then (the secret, the key id and the token alike). */
static void test_replaced_credentials(void **state)
{
    (void)state;
    char err[128];
    estate_config cfg = {.max_streams = 4, .replay_max = 16, .replay_window_s = 300};
    estate *s = estate_new(&cfg, err, sizeof err);
    assert_non_null(s);
    arm(SECRET);
    assert_int_equal(estate_creds_set(s, "AKIDWIPE", SECRET, "token-wipe", NULL, 0), 0);
    estate_creds *held = estate_creds_get(s);
    assert_int_equal(estate_creds_set(s, "AKIDNEXT", "next-secret", "next-token", NULL, 0), 0);
    unsigned before = W.blocks;
    estate_creds_put(held);
    assert_true(W.blocks >= before + 4); /* the three strings and the set itself */
    estate_free(s);
    disarm();
    assert_int_equal(W.hits, 0);
}

/* Merged history turns grow in place: consecutive user turns are joined. */
static void test_history_merge(void **state)
{
    (void)state;
    history h;
    history_init(&h);
    arm(SECRET);
    for (int i = 0; i < 200; i++)
        assert_int_equal(history_add(&h, ROLE_USER, SECRET, strlen(SECRET)), 0);
    assert_int_equal(h.n, 1);
    assert_memory_equal(h.msgs[0].text, SECRET "\n\n" SECRET, 2 * strlen(SECRET) + 2);
    history_free(&h);
    disarm();
    assert_true(W.blocks >= 5);
    assert_int_equal(W.hits, 0);
}

/* ---- a loop and a unix socket ---- */

static struct {
    struct event_base *base;
    struct event *tick; /* EVLOOP_ONCE never waits longer than this */
    char dir[64];
    char addr[128];
    veil_addr a;
} L;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static void loop_start(void)
{
    L.base = event_base_new();
    assert_non_null(L.base);
    L.tick = event_new(L.base, -1, EV_PERSIST, on_tick, NULL);
    struct timeval tv = {0, 20000};
    event_add(L.tick, &tv);
    snprintf(L.dir, sizeof L.dir, "/tmp/veil-wipe-XXXXXX");
    assert_non_null(mkdtemp(L.dir));
    snprintf(L.addr, sizeof L.addr, "unix:%s/s.sock", L.dir);
    char err[200];
    assert_int_equal(addr_parse(L.addr, &L.a, err, sizeof err), 0);
}

static void loop_stop(void)
{
    event_free(L.tick);
    event_base_free(L.base);
    char path[128];
    snprintf(path, sizeof path, "%s/s.sock", L.dir);
    unlink(path);
    rmdir(L.dir);
}

/* Runs the loop until cond holds (bounded: about 10 s). */
static bool run_until(bool (*cond)(void *), void *arg)
{
    for (int i = 0; i < 500 && !cond(arg); i++)
        event_base_loop(L.base, EVLOOP_ONCE);
    return cond(arg);
}

static bool readable(void *arg)
{
    struct pollfd p = {*(int *)arg, POLLIN, 0};
    return poll(&p, 1, 0) == 1;
}

/* The peer has read everything this socket sent (unix sockets: SIOCOUTQ). */
static bool sent_all(void *arg)
{
    int queued = -1;
    return ioctl(*(int *)arg, SIOCOUTQ, &queued) == 0 && queued == 0;
}

/* ---- the enclave server: SET_CREDENTIALS arriving in pieces ---- */

/* The session token is one 16-byte unit repeated, and the needle two units: any
 * block that held 47 bytes of the token in a row holds the needle. */
#define UNIT "Tok3nSecretUnit/"
#define NEEDLE UNIT UNIT
#define TOKEN_UNITS 250 /* 4000 bytes: more than one 4 KiB read with the rest */

static const char *creds_request(void)
{
    static char req[8192];
    int n = snprintf(req, sizeof req,
                     "{\"command\":\"SET_CREDENTIALS\",\"credentials\":{\"access_key_id\":\"AKIDWIPE\","
                     "\"secret_access_key\":\"" UNIT "\",\"session_token\":\"");
    for (int i = 0; i < TOKEN_UNITS; i++)
        n += snprintf(req + n, sizeof req - (size_t)n, "%s", UNIT);
    snprintf(req + n, sizeof req - (size_t)n, "\",\"expiration\":\"2099-01-01T00:00:00Z\"}}\n");
    return req;
}

static bool no_conns(void *arg)
{
    return enclave_server_connections(arg) == 0;
}

static bool one_conn(void *arg)
{
    return enclave_server_connections(arg) == 1;
}

/* veil-enclave receives the credentials in 97-byte reads: its connection buffer
 * grows from 64 bytes to 4 KiB and every read passes through libevent's
 * chains. Neither may keep a copy once the credentials are in the core. */
static void test_enclave_server(void **state)
{
    (void)state;
    enclave_secure_json(); /* as veil-enclave's main does */
    loop_start();
    char err[200];
    enclave_config cfg = {.region = "us-east-1"};
    enclave_core *core = enclave_core_new(L.base, &cfg, err, sizeof err);
    assert_non_null(core);
    int lfd = addr_listen(&L.a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    enclave_server *srv = enclave_server_new(L.base, core, lfd, NULL, err, sizeof err);
    assert_non_null(srv);

    arm(NEEDLE);
    int fd = addr_connect(&L.a, false, err, sizeof err);
    assert_true(fd >= 0);
    assert_true(run_until(one_conn, srv));
    const char *req = creds_request();
    size_t len = strlen(req);
    for (size_t off = 0; off < len; off += 97) {
        size_t k = len - off < 97 ? len - off : 97;
        assert_int_equal(write(fd, req + off, k), (ssize_t)k);
        assert_true(run_until(sent_all, &fd));
    }
    assert_true(run_until(readable, &fd));
    char reply[1024];
    ssize_t r = read(fd, reply, sizeof reply - 1);
    assert_true(r > 0);
    reply[r] = '\0';
    assert_non_null(strstr(reply, "\"status\":\"success\""));
    assert_non_null(strstr(reply, "\"has_credentials\":true"));
    close(fd);
    assert_true(run_until(no_conns, srv));
    enclave_server_free(srv);
    enclave_core_free(core);
    loop_stop();
    disarm();
    assert_true(W.blocks >= 10);
    assert_int_equal(W.hits, 0);
    assert_int_equal(W.ev_hits, 0);
}

/* ---- veild: SET_CREDENTIALS to veil-enclave (nitro mode) ---- */

static void fill_creds(imds_credentials *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->access_key_id, sizeof c->access_key_id, "AKIDWIPE");
    snprintf(c->secret_access_key, sizeof c->secret_access_key, "%s", UNIT);
    for (int i = 0; i < TOKEN_UNITS; i++)
        memcpy(c->session_token + 16 * i, UNIT, 16);
    snprintf(c->expiration, sizeof c->expiration, "2099-01-01T00:00:00Z");
}

typedef struct pushed {
    bool done, ok;
} pushed;

static void on_pushed(void *ud, bool ok, const char *err)
{
    (void)err;
    pushed *p = ud;
    p->done = true;
    p->ok = ok;
}

static bool push_done(void *arg)
{
    return ((pushed *)arg)->done;
}

/* veild in nitro mode, with jansson's default (unwiping) allocator, pushes
 * credentials to a socket this test plays the enclave on. Once the push is
 * over and veild's client freed, no block veild, jansson or libevent released
 * may hold the token: not the JSON objects, not the dumped string, not the
 * request buffer, not the output chains. */
static void test_veild_set_credentials(void **state)
{
    (void)state;
    json_set_alloc_funcs(malloc, json_checking_free);
    loop_start();
    char err[200];
    int lfd = addr_listen(&L.a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    static server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.mode = ENCLAVE_NITRO;
    snprintf(cfg.enclave_addr, sizeof cfg.enclave_addr, "%s", L.addr);
    cfg.stream_timeout = 30;
    enclave_client *ec = ec_new(L.base, &cfg, err, sizeof err);
    assert_non_null(ec);
    imds_credentials creds;
    fill_creds(&creds);

    arm(NEEDLE);
    pushed p = {false, false};
    assert_non_null(ec_set_credentials(ec, &creds, on_pushed, &p));
    int afd = accept(lfd, NULL, NULL);
    assert_true(afd >= 0);
    static char got[8192];
    size_t got_len = 0;
    while (!memchr(got, '\n', got_len)) {
        assert_true(run_until(readable, &afd));
        ssize_t r = read(afd, got + got_len, sizeof got - 1 - got_len);
        assert_true(r > 0);
        got_len += (size_t)r;
    }
    const char *reply = "{\"status\":\"success\",\"command\":\"SET_CREDENTIALS\",\"has_credentials\":true}\n";
    assert_int_equal(write(afd, reply, strlen(reply)), (ssize_t)strlen(reply));
    assert_true(run_until(push_done, &p));
    assert_true(p.ok);
    ec_free(ec);
    close(afd);
    close(lfd);
    loop_stop();
    disarm();
    assert_true(W.blocks >= 5);
    assert_int_equal(W.hits, 0);
    assert_int_equal(W.ev_hits, 0);

    /* what the enclave received is the request, exactly */
    json_t *j = json_loadb(got, got_len - 1, 0, NULL);
    assert_non_null(j);
    json_t *cr = json_object_get(j, "credentials");
    assert_string_equal(json_string_value(json_object_get(j, "command")), "SET_CREDENTIALS");
    assert_string_equal(json_string_value(json_object_get(cr, "access_key_id")), creds.access_key_id);
    assert_string_equal(json_string_value(json_object_get(cr, "secret_access_key")), creds.secret_access_key);
    assert_string_equal(json_string_value(json_object_get(cr, "session_token")), creds.session_token);
    assert_string_equal(json_string_value(json_object_get(cr, "expiration")), creds.expiration);
    assert_int_equal(json_object_size(cr), 4);
    json_decref(j);
    secure_wipe(got, sizeof got);
    imds_credentials_clear(&creds);
}

/* The same push in mock mode, where veild runs the enclave core in-process
 * and installs the wiping JSON allocator, as veild's main does. */
static void test_veild_set_credentials_mock(void **state)
{
    (void)state;
    enclave_secure_json();
    loop_start();
    char err[200];
    static server_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.mode = ENCLAVE_MOCK;
    snprintf(cfg.region, sizeof cfg.region, "us-east-1");
    cfg.stream_timeout = 30;
    enclave_client *ec = ec_new(L.base, &cfg, err, sizeof err);
    assert_non_null(ec);
    imds_credentials creds;
    fill_creds(&creds);

    arm(NEEDLE);
    pushed p = {false, false};
    assert_non_null(ec_set_credentials(ec, &creds, on_pushed, &p));
    assert_true(run_until(push_done, &p));
    assert_true(p.ok);
    ec_free(ec);
    loop_stop();
    disarm();
    assert_true(W.blocks >= 5);
    assert_int_equal(W.hits, 0);
    assert_int_equal(W.ev_hits, 0);
    imds_credentials_clear(&creds);
}

/* ---- veild: credentials from IMDS ---- */

/* A minimal IMDSv2 on the loop: one request per connection, then close. The
 * body is added by reference to static memory, so this side leaves no chain
 * with the token in it. */
static void imds_drained(struct bufferevent *bev, void *arg)
{
    (void)arg;
    /* reading stops once the reply is queued */
    if (!(bufferevent_get_enabled(bev) & EV_READ) && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        bufferevent_free(bev);
}

static void imds_event(struct bufferevent *bev, short what, void *arg)
{
    (void)what, (void)arg;
    bufferevent_free(bev);
}

static void imds_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    static char creds_json[8192];
    struct evbuffer *in = bufferevent_get_input(bev);
    if (evbuffer_search(in, "\r\n\r\n", 4, NULL).pos < 0)
        return;
    char line[256];
    size_t n = evbuffer_copyout(in, line, sizeof line - 1);
    line[n] = '\0';
    evbuffer_drain(in, evbuffer_get_length(in));
    const char *body = NULL;
    if (strncmp(line, "PUT /latest/api/token ", 22) == 0) {
        body = "TESTIMDSSESSIONTOKEN";
    } else if (strncmp(line, "GET /latest/meta-data/iam/security-credentials/ ", 48) == 0) {
        body = "veil-role";
    } else if (strncmp(line, "GET /latest/meta-data/iam/security-credentials/veil-role ", 57) == 0) {
        int k = snprintf(creds_json, sizeof creds_json,
                         "{\n  \"Code\" : \"Success\",\n  \"Type\" : \"AWS-HMAC\",\n"
                         "  \"AccessKeyId\" : \"AKIDWIPE\",\n  \"SecretAccessKey\" : \"%s\",\n  \"Token\" : \"",
                         UNIT);
        for (int i = 0; i < TOKEN_UNITS; i++)
            k += snprintf(creds_json + k, sizeof creds_json - (size_t)k, "%s", UNIT);
        snprintf(creds_json + k, sizeof creds_json - (size_t)k,
                 "\",\n  \"Expiration\" : \"2099-01-01T00:00:00Z\"\n}");
        body = creds_json;
    }
    struct evbuffer *out = bufferevent_get_output(bev);
    if (!body) {
        evbuffer_add_printf(out, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    } else {
        evbuffer_add_printf(out, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                            strlen(body));
        evbuffer_add_reference(out, body, strlen(body), NULL, NULL);
    }
    bufferevent_disable(bev, EV_READ);
}

static void imds_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)l, (void)sa, (void)len, (void)arg;
    struct bufferevent *bev = bufferevent_socket_new(L.base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(bev, imds_read, imds_drained, imds_event, NULL);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

typedef struct fetched {
    bool done;
    char err[300];
    imds_credentials creds;
} fetched;

static void on_fetched(void *ud, const imds_credentials *c, const char *err)
{
    fetched *f = ud;
    f->done = true;
    if (err)
        snprintf(f->err, sizeof f->err, "%s", err);
    else
        f->creds = *c;
}

static bool fetch_done(void *arg)
{
    return ((fetched *)arg)->done;
}

/* The credentials response passes through imds.c's body buffer and jansson's
 * parser (veild installs no wiping allocator in nitro mode). Neither may keep
 * a copy. libevent's input chains belong to the HTTP client (aws/https.c) and
 * are not checked here. */
static void test_imds_credentials(void **state)
{
    (void)state;
    json_set_alloc_funcs(malloc, json_checking_free);
    loop_start();
    veil_addr a;
    char err[200];
    assert_int_equal(addr_parse("tcp:127.0.0.1:0", &a, err, sizeof err), 0);
    int lfd = addr_listen(&a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    struct evconnlistener *lis = evconnlistener_new(L.base, imds_accept, NULL, LEV_OPT_CLOSE_ON_FREE, -1, lfd);
    assert_non_null(lis);
    https_ctx *https = https_ctx_new(L.base, NULL, err, sizeof err);
    assert_non_null(https);
    imds_config cfg = {.host = "127.0.0.1", .port = (uint16_t)addr_local_port(lfd), .timeout_ms = 5000};

    arm(NEEDLE);
    static fetched f;
    memset(&f, 0, sizeof f);
    assert_non_null(imds_fetch_credentials(https, &cfg, on_fetched, &f));
    assert_true(run_until(fetch_done, &f));
    assert_string_equal(f.err, "");
    assert_string_equal(f.creds.access_key_id, "AKIDWIPE");
    assert_string_equal(f.creds.secret_access_key, UNIT);
    assert_int_equal(strlen(f.creds.session_token), 16 * TOKEN_UNITS);
    assert_string_equal(f.creds.role, "veil-role");
    imds_credentials_clear(&f.creds);
    https_ctx_free(https);
    evconnlistener_free(lis);
    loop_stop();
    disarm();
    assert_true(W.blocks >= 10);
    assert_int_equal(W.hits, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detector_sees_realloc_copies),
        cmocka_unit_test(test_vbuf_secure_growth),
        cmocka_unit_test(test_history_merge),
        cmocka_unit_test(test_replaced_credentials),
        cmocka_unit_test(test_enclave_server),
        cmocka_unit_test(test_veild_set_credentials),
        cmocka_unit_test(test_veild_set_credentials_mock),
        cmocka_unit_test(test_imds_credentials),
    };
    /* before libevent allocates anything */
    event_set_mem_functions(ev_malloc, ev_realloc, ev_free);
    json_set_alloc_funcs(malloc, json_checking_free);
    log_set_level(LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

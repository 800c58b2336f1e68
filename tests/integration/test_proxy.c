/* integration: veil-proxy as a real process on unix and tcp sockets, in front of small
 * upstream TCP servers run by this test (threads): tunnels and byte round trips,
 * pipelined bytes, half-close, every error status, limits, timeouts, the YAML
 * allowlist, 200 concurrent tunnels, backpressure with a large transfer, SIGTERM.
 * Every proxy is stopped with SIGTERM and must exit 0 (under ASan that also means
 * no leak report). Every wait is bounded.
 * Stays whole: one suite per program under test, sharing its processes and fixtures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define WAIT_MS 10000 /* generous: ASan builds on a shared 2-core machine */
#define OK_HEAD "HTTP/1.1 200 Connection Established\r\n\r\n"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* ---- upstream servers ---- */

typedef enum {
    UP_ECHO,             /* echo everything; on EOF shut down the write side */
    UP_REPLY_AFTER_EOF,  /* read until EOF, then answer "got N bytes: DATA" */
} up_mode;

#define UP_MAX_CONNS 1024

typedef struct upstream {
    int lfd;
    int port;
    up_mode mode;
    atomic_int stop;
    atomic_int accepted;
    pthread_t accept_th;
    pthread_mutex_t mu;
    pthread_t conn_th[UP_MAX_CONNS];
    int n_conn_th;
} upstream;

typedef struct up_conn {
    upstream *u;
    int fd;
} up_conn;

/* Waits until fd is ready for ev, checking u->stop every 100 ms. */
static bool up_wait(upstream *u, int fd, short ev)
{
    struct pollfd pfd = {fd, ev, 0};
    while (!atomic_load(&u->stop)) {
        int r = poll(&pfd, 1, 100);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
    return false;
}

static void *up_conn_main(void *arg)
{
    up_conn *uc = arg;
    upstream *u = uc->u;
    int fd = uc->fd;
    free(uc);
    static const size_t BUF = 65536;
    char *buf = malloc(BUF);
    char got[1024];
    size_t total = 0, kept = 0;
    bool eof = false;
    while (buf && up_wait(u, fd, POLLIN)) {
        ssize_t n = read(fd, buf, BUF);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = n == 0;
            break;
        }
        if (u->mode == UP_ECHO) {
            if (h_write_all(fd, buf, (size_t)n) < 0)
                break;
        } else {
            size_t take = (size_t)n < sizeof got - kept ? (size_t)n : sizeof got - kept;
            memcpy(got + kept, buf, take);
            kept += take;
        }
        total += (size_t)n;
    }
    if (eof && u->mode == UP_REPLY_AFTER_EOF) {
        char reply[1200];
        int len = snprintf(reply, sizeof reply, "got %zu bytes: %.*s", total, (int)kept, got);
        if (len > 0)
            h_write_all(fd, reply, (size_t)len < sizeof reply ? (size_t)len : sizeof reply - 1);
    }
    if (eof)
        shutdown(fd, SHUT_WR);
    free(buf);
    close(fd);
    return NULL;
}

static void *up_accept_main(void *arg)
{
    upstream *u = arg;
    while (up_wait(u, u->lfd, POLLIN)) {
        int fd = accept(u->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        up_conn *uc = malloc(sizeof *uc);
        if (!uc)
            abort(); /* no cmocka assertions off the main thread */
        uc->u = u;
        uc->fd = fd;
        pthread_mutex_lock(&u->mu);
        if (u->n_conn_th < UP_MAX_CONNS &&
            pthread_create(&u->conn_th[u->n_conn_th], NULL, up_conn_main, uc) == 0) {
            u->n_conn_th++;
        } else {
            close(fd);
            free(uc);
        }
        pthread_mutex_unlock(&u->mu);
        atomic_fetch_add(&u->accepted, 1);
    }
    return NULL;
}

/* A listening 127.0.0.1 socket on a free port; backlog as given. */
static int listen_local(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, backlog), 0);
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

static upstream *upstream_start(up_mode mode)
{
    upstream *u = calloc(1, sizeof *u);
    assert_non_null(u);
    u->mode = mode;
    u->lfd = listen_local(SOMAXCONN, &u->port);
    pthread_mutex_init(&u->mu, NULL);
    assert_int_equal(pthread_create(&u->accept_th, NULL, up_accept_main, u), 0);
    return u;
}

static void upstream_stop(upstream *u)
{
    atomic_store(&u->stop, 1);
    pthread_join(u->accept_th, NULL);
    pthread_mutex_lock(&u->mu);
    for (int i = 0; i < u->n_conn_th; i++)
        pthread_join(u->conn_th[i], NULL);
    pthread_mutex_unlock(&u->mu);
    pthread_mutex_destroy(&u->mu);
    close(u->lfd);
    free(u);
}

/* A port nothing listens on (bound, then closed). */
static int closed_port(void)
{
    int port;
    int fd = listen_local(1, &port);
    close(fd);
    return port;
}

/* ---- a fake DNS server (UDP), so resolved-address checks are tested for real ---- */

typedef struct dns_record {
    const char *name;
    bool hang;                /* never answer */
    const char *addrs[4];     /* A and AAAA answers, by family */
} dns_record;

static const dns_record DNS_RECORDS[] = {
    /* a name that rebinds to loopback, IMDS and a private address: all refused */
    {"rebind.test", false, {"127.0.0.1", "169.254.169.254", "10.0.0.1", "::ffff:127.0.0.1"}},
    {"imds6.test", false, {"fd00:ec2::254", "fe80::1"}},
    /* one special and one ordinary address: only the ordinary one is tried */
    {"mixed.test", false, {"127.0.0.1", "192.31.196.1"}},
    /* the IANA registries' other blocks that are not globally reachable */
    {"registry.test", false, {"198.18.0.1", "192.0.0.170", "2001::1", "64:ff9b:1::a00:1"}},
    {"registry6.test", false, {"100::1", "2001:db8::1"}},
    {"hang.test", true, {NULL}},
};

typedef struct dns_server {
    int fd;
    int port;
    atomic_int stop;
    atomic_int queries;
    pthread_t th;
} dns_server;

/* qname at q (uncompressed labels) as a lowercase dotted name; returns bytes used or 0 */
static size_t dns_qname(const uint8_t *q, size_t len, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    while (i < len && q[i] != 0) {
        size_t l = q[i++];
        if (l > 63 || i + l > len || o + l + 2 > cap)
            return 0;
        if (o)
            out[o++] = '.';
        for (size_t k = 0; k < l; k++) {
            char c = (char)q[i + k];
            out[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        i += l;
    }
    if (i >= len)
        return 0;
    out[o] = '\0';
    return i + 1;
}

static void *dns_main(void *arg)
{
    dns_server *d = arg;
    uint8_t q[512], r[1024];
    while (!atomic_load(&d->stop)) {
        struct pollfd pfd = {d->fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        struct sockaddr_storage from;
        socklen_t flen = sizeof from;
        ssize_t n = recvfrom(d->fd, q, sizeof q, 0, (struct sockaddr *)&from, &flen);
        if (n < 12)
            continue;
        atomic_fetch_add(&d->queries, 1);
        char name[256];
        size_t qn = dns_qname(q + 12, (size_t)n - 12, name, sizeof name);
        if (!qn || 12 + qn + 4 > (size_t)n)
            continue;
        uint16_t qtype = (uint16_t)(q[12 + qn] << 8 | q[12 + qn + 1]);
        const dns_record *rec = NULL;
        for (size_t i = 0; i < sizeof DNS_RECORDS / sizeof DNS_RECORDS[0]; i++)
            if (strcmp(DNS_RECORDS[i].name, name) == 0)
                rec = &DNS_RECORDS[i];
        if (rec && rec->hang)
            continue;
        size_t qlen = 12 + qn + 4;
        memcpy(r, q, qlen); /* id and question, verbatim (0x20 case included) */
        r[2] = 0x81;        /* QR, RD */
        r[3] = rec ? 0x80 : 0x83; /* RA; NXDOMAIN for unknown names */
        r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
        size_t o = qlen, an = 0;
        for (size_t i = 0; rec && i < 4 && rec->addrs[i]; i++) {
            uint8_t a[16];
            bool v6 = strchr(rec->addrs[i], ':') != NULL;
            if ((qtype == 1 && v6) || (qtype == 28 && !v6) || (qtype != 1 && qtype != 28))
                continue;
            if (inet_pton(v6 ? AF_INET6 : AF_INET, rec->addrs[i], a) != 1)
                abort();
            size_t alen = v6 ? 16 : 4;
            uint8_t rr[12] = {0xc0, 0x0c, 0, (uint8_t)qtype, 0, 1, 0, 0, 0, 60, 0, (uint8_t)alen};
            memcpy(r + o, rr, sizeof rr);
            memcpy(r + o + sizeof rr, a, alen);
            o += sizeof rr + alen;
            an++;
        }
        r[7] = (uint8_t)an;
        sendto(d->fd, r, o, 0, (struct sockaddr *)&from, flen);
    }
    return NULL;
}

static dns_server *dns_start(void)
{
    dns_server *d = calloc(1, sizeof *d);
    assert_non_null(d);
    d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(d->fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(d->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(d->fd, (struct sockaddr *)&sin, &len), 0);
    d->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&d->th, NULL, dns_main, d), 0);
    return d;
}

static void dns_stop(dns_server *d)
{
    atomic_store(&d->stop, 1);
    pthread_join(d->th, NULL);
    close(d->fd);
    free(d);
}

/* ---- the proxy process ---- */

static int g_seq;

/* Starts veil-proxy --listen ADDR plus args (NULL-terminated) and waits for it. */
static void proxy_start_env(proc *p, const char *listen, const char *const *args,
                            const char *const *envp)
{
    const char *argv[40];
    size_t n = 0;
    argv[n++] = h_bin("veil-proxy");
    argv[n++] = "--listen";
    argv[n++] = listen;
    for (size_t i = 0; args && args[i]; i++) {
        assert_true(n < sizeof argv / sizeof argv[0] - 1);
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    char name[32];
    snprintf(name, sizeof name, "veil-proxy-%d", ++g_seq);
    assert_int_equal(proc_start(p, name, argv, envp), 0);
    assert_int_equal(proc_wait_listening(p, WAIT_MS), 0);
}

static void proxy_start(proc *p, const char *listen, const char *const *args)
{
    proxy_start_env(p, listen, args, NULL);
}

static const char *unix_listen(void)
{
    static char buf[600];
    snprintf(buf, sizeof buf, "unix:%s", h_path("px", ".sock"));
    return buf;
}

/* SIGTERM; the proxy must exit 0. */
static void proxy_stop_ok(proc *p)
{
    int st = proc_stop(p, SIGTERM, WAIT_MS);
    if (!(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        proc_dump_log(p);
        fail_msg("veil-proxy did not exit 0 on SIGTERM (status %d)", st);
    }
}

/* Waits for a process to exit by itself; returns its wait status or -1. */
static int wait_exit(proc *p, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    int st = -1;
    pid_t r;
    while ((r = waitpid(p->pid, &st, WNOHANG)) == 0 && now_ms() < end)
        usleep(5000);
    if (r != p->pid)
        st = -1;
    proc_stop(p, SIGKILL, 0); /* frees the harness slot (and kills it if still running) */
    return st;
}

/* Runs veil-proxy with argv (no --listen added) and returns its exit status. */
static int run_to_exit(proc *p, const char *const *args)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = h_bin("veil-proxy");
    for (size_t i = 0; args[i]; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    char name[32];
    snprintf(name, sizeof name, "veil-proxy-%d", ++g_seq);
    assert_int_equal(proc_start(p, name, argv, NULL), 0);
    int st = wait_exit(p, WAIT_MS);
    assert_true(st != -1 && WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* ---- clients ---- */

static bool wait_io(int fd, short ev, long end)
{
    struct pollfd pfd = {fd, ev, 0};
    long left = end - now_ms();
    return left > 0 && poll(&pfd, 1, (int)left) > 0;
}

/* Reads exactly n bytes. */
static void read_exact(int fd, void *buf, size_t n, int timeout_ms)
{
    long end = now_ms() + timeout_ms;
    size_t got = 0;
    while (got < n) {
        if (!wait_io(fd, POLLIN, end))
            fail_msg("timed out after %zu of %zu bytes", got, n);
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            fail_msg("connection ended after %zu of %zu bytes (%s)", got, n,
                     r < 0 ? strerror(errno) : "EOF");
        got += (size_t)r;
    }
}

/* Reads a response head byte by byte (so nothing after it is consumed). */
static void read_head(int fd, char *head, size_t cap)
{
    long end = now_ms() + WAIT_MS;
    size_t n = 0;
    while (n + 1 < cap) {
        if (!wait_io(fd, POLLIN, end))
            fail_msg("timed out reading a response head: '%.*s'", (int)n, head);
        ssize_t r = read(fd, head + n, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
}

/* Asserts the next read is EOF (not a timeout, not data). */
static void expect_eof(int fd)
{
    char c;
    long end = now_ms() + WAIT_MS;
    if (!wait_io(fd, POLLIN, end))
        fail_msg("timed out waiting for EOF");
    ssize_t r = read(fd, &c, 1);
    if (r != 0 && !(r < 0 && errno == ECONNRESET))
        fail_msg("expected EOF, read returned %zd", r);
}

static int proxy_dial(const proc *p)
{
    int fd = h_connect(p->addr, WAIT_MS);
    assert_true(fd >= 0);
    return fd;
}

/* Connects to the proxy and sends CONNECT target (plus extra bytes in the same write). */
static int send_connect(const proc *p, const char *target, const void *extra, size_t extra_len)
{
    int fd = proxy_dial(p);
    char req[1024 + 4096];
    int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
    assert_true(n > 0 && (size_t)n + extra_len <= sizeof req);
    if (extra_len)
        memcpy(req + n, extra, extra_len);
    assert_int_equal(h_write_all(fd, req, (size_t)n + extra_len), 0);
    return fd;
}

/* A tunnel that must open: returns the fd after the exact 200 head. */
static int tunnel_open(const proc *p, const char *target, const void *extra, size_t extra_len)
{
    int fd = send_connect(p, target, extra, extra_len);
    char head[512];
    read_head(fd, head, sizeof head);
    if (strcmp(head, OK_HEAD) != 0) {
        proc_dump_log(p);
        fail_msg("CONNECT %s: got '%s'", target, head);
    }
    return fd;
}

/* Sends raw request bytes and returns the whole response (until the proxy closes). */
static void raw_exchange(const proc *p, const void *req, size_t len, char *resp, size_t cap)
{
    int fd = proxy_dial(p);
    assert_int_equal(h_write_all(fd, req, len), 0);
    long n = h_read_all(fd, resp, cap, WAIT_MS);
    close(fd);
    if (n < 0)
        fail_msg("no complete response (timeout or error)");
}

/* CONNECT target must be answered with status, Connection: close, and then closed. */
static void expect_status(const proc *p, const char *target, int status)
{
    char req[600], resp[2048], want[32];
    snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target);
    raw_exchange(p, req, strlen(req), resp, sizeof resp);
    snprintf(want, sizeof want, "HTTP/1.1 %d ", status);
    if (strncmp(resp, want, strlen(want)) != 0 || !strstr(resp, "\r\nConnection: close\r\n")) {
        proc_dump_log(p);
        fail_msg("CONNECT %s: want %d, got '%s'", target, status, resp);
    }
}

static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
    static char slots[16][300];
    static int next;
    char *s = slots[next++ % 16];
    va_list ap;
    va_start(ap, f);
    vsnprintf(s, sizeof slots[0], f, ap);
    va_end(ap);
    return s;
}

static void round_trip(int fd, const char *msg)
{
    size_t n = strlen(msg);
    char buf[4096];
    assert_true(n < sizeof buf);
    assert_int_equal(h_write_all(fd, msg, n), 0);
    read_exact(fd, buf, n, WAIT_MS);
    assert_memory_equal(buf, msg, n);
}

/* ---- tests ---- */

static void test_tunnel_unix(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          NULL};
    proxy_start(&p, unix_listen(), args);
    assert_true(strncmp(p.addr, "unix:", 5) == 0);
    int fd = tunnel_open(&p, target, NULL, 0);
    round_trip(fd, "ping through the tunnel");
    round_trip(fd, "and back again");
    shutdown(fd, SHUT_WR);
    expect_eof(fd); /* the echo server saw EOF, shut down, and that came back */
    close(fd);
    assert_int_equal(proc_wait_log(&p, "bytes_up=37 bytes_down=37", WAIT_MS), 0);
    assert_true(proc_log_contains(&p, "event=connected host=echo.test"));
    assert_true(proc_log_contains(&p, "ip=127.0.0.1"));
    assert_true(proc_log_contains(&p, "event=closed reason=done"));
    assert_false(proc_log_contains(&p, "ping through")); /* never payload in the log */
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_tunnel_tcp_port_zero(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("127.0.0.1:%d", u->port);
    const char *args[] = {"--allow", target, NULL};
    proxy_start(&p, "tcp:127.0.0.1:0", args);
    /* the real port is logged, not 0 */
    assert_true(strncmp(p.addr, "tcp:127.0.0.1:", 14) == 0);
    assert_true(atoi(p.addr + 14) > 0);
    int fd = tunnel_open(&p, target, NULL, 0); /* an allowlisted IP literal */
    round_trip(fd, "over tcp");
    close(fd);
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_pipelined_bytes(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          NULL};
    proxy_start(&p, unix_listen(), args);
    static const char early[] = "bytes in the same write as the CONNECT head";
    int fd = tunnel_open(&p, target, early, sizeof early - 1);
    char buf[128];
    read_exact(fd, buf, sizeof early - 1, WAIT_MS);
    assert_memory_equal(buf, early, sizeof early - 1);
    round_trip(fd, "then more");
    close(fd);

    /* a head dribbled in one byte at a time, then tunnel bytes */
    fd = proxy_dial(&p);
    char req[256];
    int n = snprintf(req, sizeof req, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nafter", target,
                     target);
    for (int i = 0; i < n; i++) {
        assert_int_equal(h_write_all(fd, req + i, 1), 0);
        usleep(1000);
    }
    char head[512];
    read_head(fd, head, sizeof head);
    assert_string_equal(head, OK_HEAD);
    read_exact(fd, buf, 5, WAIT_MS);
    assert_memory_equal(buf, "after", 5);
    close(fd);
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_half_close(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_REPLY_AFTER_EOF);
    proc p;
    const char *target = fmt("reply.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve",
                          fmt("reply.test:%d:127.0.0.1", u->port), NULL};
    proxy_start(&p, unix_listen(), args);
    char buf[256];

    /* the client shuts down its write side and still gets the upstream's answer */
    int fd = tunnel_open(&p, target, NULL, 0);
    assert_int_equal(h_write_all(fd, "hello", 5), 0);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    long n = h_read_all(fd, buf, sizeof buf, WAIT_MS);
    assert_int_equal(n, (long)strlen("got 5 bytes: hello"));
    assert_string_equal(buf, "got 5 bytes: hello");
    close(fd);

    /* the same with the data and the EOF arriving before the upstream connect is done */
    fd = send_connect(&p, target, "early", 5);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    n = h_read_all(fd, buf, sizeof buf, WAIT_MS);
    assert_true(n > 0);
    assert_string_equal(buf, OK_HEAD "got 5 bytes: early");
    close(fd);
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_403(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *args[] = {"--allow", fmt("echo.test:%d", u->port), "--resolve",
                          fmt("echo.test:%d:127.0.0.1", u->port), NULL};
    proxy_start(&p, unix_listen(), args);
    expect_status(&p, fmt("other.test:%d", u->port), 403);      /* host not listed */
    expect_status(&p, fmt("echo.test:%d", u->port + 1), 403);   /* port not listed */
    expect_status(&p, "echo.test:443", 403);
    expect_status(&p, fmt("127.0.0.1:%d", u->port), 403);       /* literal not listed */
    expect_status(&p, fmt("[::1]:%d", u->port), 403);
    expect_status(&p, fmt("[::ffff:127.0.0.1]:%d", u->port), 403);
    expect_status(&p, "169.254.169.254:80", 403);
    /* case and one trailing dot do not matter */
    int fd = tunnel_open(&p, fmt("ECHO.Test.:%d", u->port), NULL, 0);
    round_trip(fd, "normalised");
    close(fd);
    assert_true(proc_log_contains(&p, "reason=not_allowed"));
    assert_int_equal(atomic_load(&u->accepted), 1); /* denied requests never reached it */
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_loopback_name_needs_pin(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    const char *target = fmt("localhost:%d", u->port);

    /* localhost is allowlisted, but it resolves (via /etc/hosts) to loopback */
    proc p;
    const char *args[] = {"--allow", target, NULL};
    proxy_start(&p, unix_listen(), args);
    expect_status(&p, target, 403);
    assert_int_equal(proc_wait_log(&p, "reason=special_address", WAIT_MS), 0);
    assert_true(proc_log_contains(&p, "event=address_refused host=localhost"));
    assert_true(proc_log_contains(&p, "reason=loopback"));
    proxy_stop_ok(&p);

    /* pinned with --resolve, the same request is allowed */
    proc q;
    const char *args2[] = {"--allow", target, "--resolve",
                           fmt("localhost:%d:127.0.0.1", u->port), NULL};
    proxy_start(&q, unix_listen(), args2);
    int fd = tunnel_open(&q, target, NULL, 0);
    round_trip(fd, "pinned");
    close(fd);
    proxy_stop_ok(&q);
    assert_int_equal(atomic_load(&u->accepted), 1);
    upstream_stop(u);
}

/* Names resolved through DNS: every answer is checked, special ones are refused,
 * and the others are tried in turn. */
static void test_dns_answers_checked(void **state)
{
    (void)state;
    dns_server *d = dns_start();
    proc p;
    const char *args[] = {"--dns-server", fmt("127.0.0.1:%d", d->port),
                          "--allow", "rebind.test:443", "--allow", "imds6.test:443",
                          "--allow", "mixed.test:443", "--allow", "nxdomain.test:443",
                          "--allow", "registry.test:443", "--allow", "registry6.test:443",
                          "--connect-timeout", "1", NULL};
    proxy_start(&p, unix_listen(), args);

    expect_status(&p, "rebind.test:443", 403);
    assert_int_equal(proc_wait_log(&p, "reason=special_address", WAIT_MS), 0);
    assert_true(proc_log_contains(&p, "host=rebind.test port=443 ip=127.0.0.1 reason=loopback"));
    assert_true(proc_log_contains(&p, "ip=169.254.169.254 reason=link-local"));
    assert_true(proc_log_contains(&p, "ip=10.0.0.1 reason=private"));
    assert_true(proc_log_contains(&p, "ip=::ffff:127.0.0.1 reason=loopback"));

    expect_status(&p, "imds6.test:443", 403);
    assert_true(proc_log_contains(&p, "ip=fd00:ec2::254 reason=unique-local"));
    assert_true(proc_log_contains(&p, "ip=fe80::1 reason=link-local"));

    expect_status(&p, "registry.test:443", 403);
    assert_true(proc_log_contains(&p, "ip=198.18.0.1 reason=benchmarking"));
    assert_true(proc_log_contains(&p, "ip=192.0.0.170 reason=ietf-protocol"));
    assert_true(proc_log_contains(&p, "ip=2001::1 reason=teredo"));
    assert_true(proc_log_contains(&p, "ip=64:ff9b:1::a00:1 reason=local-nat64"));
    expect_status(&p, "registry6.test:443", 403);
    assert_true(proc_log_contains(&p, "ip=100::1 reason=discard"));
    assert_true(proc_log_contains(&p, "ip=2001:db8::1 reason=documentation"));

    /* 127.0.0.1 is refused; 192.31.196.1 (AS112, an ordinary global address) is tried:
     * the answer depends on the network (502 or 504 here, where nothing is routed),
     * but the proxy never connects to loopback */
    int fd = send_connect(&p, "mixed.test:443", NULL, 0);
    char head[512];
    read_head(fd, head, sizeof head);
    close(fd);
    assert_true(strncmp(head, "HTTP/1.1 502 ", 13) == 0 ||
                strncmp(head, "HTTP/1.1 504 ", 13) == 0 || strcmp(head, OK_HEAD) == 0);
    assert_true(proc_log_contains(&p, "host=mixed.test port=443 ip=127.0.0.1 reason=loopback"));
    assert_true(proc_wait_log(&p, "host=mixed.test port=443 ip=192.31.196.1", WAIT_MS) == 0);
    assert_false(proc_log_contains(&p, "host=mixed.test port=443 ip=127.0.0.1 elapsed_ms"));

    expect_status(&p, "nxdomain.test:443", 502);
    assert_true(proc_log_contains(&p, "reason=resolve_failed"));
    assert_true(atomic_load(&d->queries) >= 4);
    proxy_stop_ok(&p);
    dns_stop(d);
}

/* A resolver that never answers: 504 after --connect-timeout, and a shutdown while a
 * lookup is in flight still exits 0 (the lookup is cancelled, nothing leaks). */
static void test_dns_timeout_and_cancel(void **state)
{
    (void)state;
    dns_server *d = dns_start();
    proc p;
    const char *args[] = {"--dns-server", fmt("127.0.0.1:%d", d->port), "--allow",
                          "hang.test:443", "--connect-timeout", "1", NULL};
    proxy_start(&p, unix_listen(), args);
    long t0 = now_ms();
    expect_status(&p, "hang.test:443", 504);
    assert_true(now_ms() - t0 >= 900);
    assert_true(proc_log_contains(&p, "reason=resolve_timeout"));

    int a = send_connect(&p, "hang.test:443", NULL, 0);
    int b = send_connect(&p, "hang.test:443", NULL, 0);
    shutdown(b, SHUT_WR); /* a half-close while resolving does not end the request */
    assert_int_equal(proc_wait_log(&p, "conns=2", WAIT_MS), 0);
    proxy_stop_ok(&p);
    expect_eof(a);
    close(a);
    close(b);
    assert_true(proc_log_contains(&p, "state=resolving"));
    dns_stop(d);
}

static void test_400_405(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"--allow", "echo.test:443", NULL};
    proxy_start(&p, unix_listen(), args);
    char resp[2048];

    static const char garbage[] = "garbage\r\n\r\n";
    raw_exchange(&p, garbage, sizeof garbage - 1, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    assert_non_null(strstr(resp, "Connection: close\r\n"));

    static const char get[] = "GET / HTTP/1.1\r\nHost: echo.test\r\n\r\n";
    raw_exchange(&p, get, sizeof get - 1, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
    assert_non_null(strstr(resp, "Allow: CONNECT\r\n"));
    assert_non_null(strstr(resp, "Connection: close\r\n"));

    static const char noport[] = "CONNECT echo.test HTTP/1.1\r\n\r\n";
    raw_exchange(&p, noport, sizeof noport - 1, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);

    static const char badhost[] = "CONNECT a_b.test:443 HTTP/1.1\r\n\r\n";
    raw_exchange(&p, badhost, sizeof badhost - 1, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);

    /* a head that never ends within the limit */
    char big[9000];
    memcpy(big, "CONNECT echo.test:443 HTTP/1.1\r\nX: ", 35);
    memset(big + 35, 'a', sizeof big - 35);
    raw_exchange(&p, big, sizeof big, resp, sizeof resp);
    assert_true(strncmp(resp, "HTTP/1.1 400 ", 13) == 0);

    assert_true(proc_log_contains(&p, "status=405 reason=not_connect"));
    proxy_stop_ok(&p);
}

static void test_502_refused(void **state)
{
    (void)state;
    int port = closed_port();
    proc p;
    const char *target = fmt("gone.test:%d", port);
    const char *args[] = {"--allow", target, "--resolve", fmt("gone.test:%d:127.0.0.1", port),
                          NULL};
    proxy_start(&p, unix_listen(), args);
    expect_status(&p, target, 502);
    assert_true(proc_log_contains(&p, "reason=connect_failed"));
    proxy_stop_ok(&p);
}

static void test_504_timeouts(void **state)
{
    (void)state;
    /* an upstream whose accept queue (backlog 0) is full: SYNs go unanswered */
    int port;
    int lfd = listen_local(0, &port);
    int fillers[8];
    int n_fill = 0;
    bool stuck = false;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    while (!stuck && n_fill < 8) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        fillers[n_fill++] = fd;
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
            continue;
        assert_int_equal(errno, EINPROGRESS);
        stuck = !wait_io(fd, POLLOUT, now_ms() + 300);
    }
    if (!stuck)
        fail_msg("could not fill the accept queue of a backlog-0 listener");

    proc p;
    const char *target = fmt("slow.test:%d", port);
    const char *args[] = {"--allow", target, "--resolve", fmt("slow.test:%d:127.0.0.1", port),
                          "--connect-timeout", "1", NULL};
    proxy_start(&p, unix_listen(), args);
    long t0 = now_ms();
    expect_status(&p, target, 504);
    assert_true(now_ms() - t0 >= 900); /* after the timeout, never before it */
    assert_true(proc_log_contains(&p, "reason=connect_timeout"));
    proxy_stop_ok(&p);
    for (int i = 0; i < n_fill; i++)
        close(fillers[i]);
    close(lfd);
}

/* A client that sends part of a CONNECT head and then nothing is answered 504 and
 * closed at --head-timeout, which is its own deadline: the connect timeout here is
 * far longer than the wait, so a head deadline taken from it would fail the test. */
static void test_head_timeout(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"--allow", "slow.test:443", "--head-timeout", "1", "--connect-timeout",
                          "600", NULL};
    proxy_start(&p, unix_listen(), args);
    assert_true(proc_log_contains(&p, "head_timeout_s=1 connect_timeout_s=600"));
    int fd = proxy_dial(&p);
    assert_int_equal(h_write_all(fd, "CONNECT slow.te", 15), 0);
    char resp[1024];
    long n = h_read_all(fd, resp, sizeof resp, 60000); /* generous: well under 600 s */
    close(fd);
    if (n <= 0) {
        proc_dump_log(&p);
        fail_msg("a partial CONNECT head was not answered and closed at the head deadline");
    }
    assert_true(strncmp(resp, "HTTP/1.1 504 Gateway Timeout\r\n", 30) == 0);
    assert_non_null(strstr(resp, "\r\nConnection: close\r\n"));
    assert_int_equal(proc_wait_log(&p, "event=closed reason=head_timeout state=closing", WAIT_MS),
                     0);
    assert_true(proc_log_contains(&p, "event=denied status=504 reason=head_timeout host=-"));
    proxy_stop_ok(&p);
}

static void test_503_max_conns(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          "--max-conns", "2", NULL};
    proxy_start(&p, unix_listen(), args);
    int a = tunnel_open(&p, target, NULL, 0);
    int b = tunnel_open(&p, target, NULL, 0);
    /* the third is answered at once, before it sends anything */
    int c = proxy_dial(&p);
    char resp[1024];
    assert_true(h_read_all(c, resp, sizeof resp, WAIT_MS) > 0);
    assert_true(strncmp(resp, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    assert_non_null(strstr(resp, "Connection: close\r\n"));
    close(c);
    round_trip(a, "still fine");
    /* once one closes, a new tunnel fits again */
    close(a);
    assert_int_equal(proc_wait_log(&p, "event=closed", WAIT_MS), 0);
    int d = tunnel_open(&p, target, NULL, 0);
    round_trip(d, "after a slot freed");
    round_trip(b, "b too");
    close(b);
    close(d);
    assert_true(proc_log_contains(&p, "reason=max_conns"));
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          "--idle-timeout", "3", NULL};
    proxy_start(&p, unix_listen(), args);

    /* traffic every 300 ms keeps a tunnel open well past the idle timeout (the 2.7 s
     * of slack absorb a loaded machine's scheduling delays) */
    int busy = tunnel_open(&p, target, NULL, 0);
    for (int i = 0; i < 14; i++) {
        round_trip(busy, "keepalive");
        usleep(300000);
    }
    round_trip(busy, "still open");
    close(busy);
    assert_int_equal(proc_wait_log(&p, "event=closed reason=done", WAIT_MS), 0);
    assert_false(proc_log_contains(&p, "reason=idle_timeout"));

    /* a quiet one is closed, and the log says why */
    int quiet = tunnel_open(&p, target, NULL, 0);
    expect_eof(quiet);
    close(quiet);
    assert_int_equal(proc_wait_log(&p, "event=closed reason=idle_timeout state=tunnel", WAIT_MS),
                     0);
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void test_yaml_allowlist(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    const char *path = fmt("%s", h_path("allowlist", ".yaml"));
    write_file(path, fmt("# vsock-proxy allowlist\n"
                         "allowlist:\n"
                         "- {address: flow.test, port: %d}\n"
                         "- address: Block.Test\n"
                         "  port: %d   # block form\n",
                         u->port, u->port));
    proc p;
    const char *args[] = {"--allowlist", path,
                          "--resolve", fmt("flow.test:%d:127.0.0.1", u->port),
                          "--resolve", fmt("block.test:%d:127.0.0.1", u->port), NULL};
    proxy_start(&p, unix_listen(), args);
    int fd = tunnel_open(&p, fmt("flow.test:%d", u->port), NULL, 0);
    round_trip(fd, "flow");
    close(fd);
    fd = tunnel_open(&p, fmt("block.test:%d", u->port), NULL, 0);
    round_trip(fd, "block");
    close(fd);
    expect_status(&p, fmt("other.test:%d", u->port), 403);
    /* the default Bedrock entry is not added when a list is given */
    expect_status(&p, "bedrock-runtime.us-east-1.amazonaws.com:443", 403);
    proxy_stop_ok(&p);

    /* a bad line stops the start, naming the file and the line */
    const char *bad = fmt("%s", h_path("bad", ".yaml"));
    write_file(bad, "allowlist:\n- {address: a.test, port: 1}\n- {address: b.test}\n");
    const char *argv[] = {"--listen", unix_listen(), "--allowlist", bad, NULL};
    proc q;
    assert_int_equal(run_to_exit(&q, argv), 2);
    assert_true(proc_log_contains(&q, fmt("%s:3:", bad)));
    upstream_stop(u);
}

static void test_default_allowlist(void **state)
{
    (void)state;
    /* with no list, only bedrock-runtime.<region>.amazonaws.com:443 is allowed. Pinned
     * to 127.0.0.1:443, the allowed one gets past the allowlist: 502 (nothing listens)
     * or 200, never 403. */
    proc p;
    const char *args[] = {"--region", "us-west-2", "--resolve",
                          "bedrock-runtime.us-west-2.amazonaws.com:443:127.0.0.1", NULL};
    proxy_start(&p, unix_listen(), args);
    expect_status(&p, "bedrock-runtime.us-east-1.amazonaws.com:443", 403);
    expect_status(&p, "bedrock-runtime.us-west-2.amazonaws.com:8443", 403);
    int fd = send_connect(&p, "bedrock-runtime.us-west-2.amazonaws.com:443", NULL, 0);
    char head[512];
    read_head(fd, head, sizeof head);
    close(fd);
    assert_true(strncmp(head, "HTTP/1.1 502 ", 13) == 0 || strcmp(head, OK_HEAD) == 0);
    proxy_stop_ok(&p);

    /* the region comes from AWS_REGION when --region is absent */
    proc q;
    const char *args2[] = {"--resolve", "bedrock-runtime.eu-central-1.amazonaws.com:443:127.0.0.1",
                           NULL};
    const char *env[] = {"AWS_REGION=eu-central-1", NULL};
    proxy_start_env(&q, unix_listen(), args2, env);
    expect_status(&q, "bedrock-runtime.us-east-1.amazonaws.com:443", 403);
    assert_true(proc_log_contains(
        &q, "event=allow host=bedrock-runtime.eu-central-1.amazonaws.com port=443"));
    proxy_stop_ok(&q);
}

#define N_CONCURRENT 200

static void test_many_concurrent_tunnels(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          NULL};
    proxy_start(&p, unix_listen(), args);
    static int fds[N_CONCURRENT];
    /* open them all first, so they are all alive at once */
    for (int i = 0; i < N_CONCURRENT; i++) {
        fds[i] = send_connect(&p, target, NULL, 0);
    }
    for (int i = 0; i < N_CONCURRENT; i++) {
        char head[512];
        read_head(fds[i], head, sizeof head);
        if (strcmp(head, OK_HEAD) != 0)
            fail_msg("tunnel %d: '%s'", i, head);
    }
    char msg[600], buf[600];
    for (int i = 0; i < N_CONCURRENT; i++) {
        int n = snprintf(msg, sizeof msg, "tunnel %d says %0500d", i, i);
        assert_int_equal(h_write_all(fds[i], msg, (size_t)n), 0);
    }
    for (int i = 0; i < N_CONCURRENT; i++) {
        int n = snprintf(msg, sizeof msg, "tunnel %d says %0500d", i, i);
        read_exact(fds[i], buf, (size_t)n, WAIT_MS);
        assert_memory_equal(buf, msg, (size_t)n);
    }
    for (int i = 0; i < N_CONCURRENT; i++)
        close(fds[i]);
    assert_int_equal(atomic_load(&u->accepted), N_CONCURRENT);
    proxy_stop_ok(&p);
    upstream_stop(u);
}

/* pattern byte at stream offset i */
static uint8_t pat(size_t i) { return (uint8_t)(i * 2654435761u >> 13); }

/* A large transfer through an echo upstream. First the client writes without reading:
 * the proxy must stop reading (backpressure) instead of buffering without bound, so the
 * client's writes stall long before everything is sent. Then it reads and writes at
 * once until all came back: nothing lost or reordered. */
static void test_large_transfer_backpressure(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("127.0.0.1:%d", u->port);
    const char *args[] = {"--allow", target, NULL};
    const char *env[] = {"VEIL_LOG_LEVEL=debug", NULL};
    proxy_start_env(&p, "tcp:127.0.0.1:0", args, env);
    int fd = tunnel_open(&p, target, NULL, 0);
    int fl = fcntl(fd, F_GETFL);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    const size_t total = 64u << 20;
    size_t sent = 0, recvd = 0;
    static uint8_t out[65536], in[65536];

    /* phase 1: write only, until the writes have stalled for 500 ms */
    long stalled_since = now_ms();
    while (sent < total && now_ms() - stalled_since < 500) {
        size_t n = total - sent < sizeof out ? total - sent : sizeof out;
        for (size_t i = 0; i < n; i++)
            out[i] = pat(sent + i);
        ssize_t w = write(fd, out, n);
        if (w > 0) {
            sent += (size_t)w;
            stalled_since = now_ms();
        } else {
            assert_true(errno == EAGAIN || errno == EINTR);
            usleep(10000);
        }
    }
    print_message("backpressure: the client could write %zu of %zu bytes without reading\n",
                  sent, total);
    assert_true(sent < total);
    assert_int_equal(proc_wait_log(&p, "event=paused side=upstream", WAIT_MS), 0);

    /* phase 2: both ways at once */
    long end = now_ms() + 120000;
    bool shut = false;
    while (recvd < total) {
        if (now_ms() > end)
            fail_msg("transfer stalled: sent %zu, received %zu", sent, recvd);
        if (sent == total && !shut) {
            shutdown(fd, SHUT_WR);
            shut = true;
        }
        struct pollfd pfd = {fd, (short)(POLLIN | (sent < total ? POLLOUT : 0)), 0};
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        if ((pfd.revents & POLLOUT) && sent < total) {
            size_t n = total - sent < sizeof out ? total - sent : sizeof out;
            for (size_t i = 0; i < n; i++)
                out[i] = pat(sent + i);
            ssize_t w = write(fd, out, n);
            if (w > 0)
                sent += (size_t)w;
            else
                assert_true(errno == EAGAIN || errno == EINTR);
        }
        if (pfd.revents & (POLLIN | POLLHUP)) {
            ssize_t r = read(fd, in, sizeof in);
            if (r == 0)
                fail_msg("EOF after %zu of %zu bytes", recvd, total);
            if (r < 0) {
                assert_true(errno == EAGAIN || errno == EINTR);
                continue;
            }
            for (ssize_t i = 0; i < r; i++)
                if (in[i] != pat(recvd + (size_t)i))
                    fail_msg("byte %zu differs", recvd + (size_t)i);
            recvd += (size_t)r;
        }
    }
    assert_int_equal(fcntl(fd, F_SETFL, fl), 0);
    expect_eof(fd);
    close(fd);
    assert_int_equal(proc_wait_log(&p, fmt("bytes_up=%zu bytes_down=%zu", total, total), WAIT_MS),
                     0);
    assert_true(proc_log_contains(&p, "event=resumed"));
    proxy_stop_ok(&p);
    upstream_stop(u);
}

static void test_sigterm_closes_tunnels(void **state)
{
    (void)state;
    upstream *u = upstream_start(UP_ECHO);
    proc p;
    const char *target = fmt("echo.test:%d", u->port);
    const char *args[] = {"--allow", target, "--resolve", fmt("echo.test:%d:127.0.0.1", u->port),
                          NULL};
    const char *listen = unix_listen();
    char path[600];
    snprintf(path, sizeof path, "%s", listen + 5);
    proxy_start(&p, listen, args);
    int a = tunnel_open(&p, target, NULL, 0);
    int b = tunnel_open(&p, target, NULL, 0);
    round_trip(a, "before the signal");
    int pending = proxy_dial(&p); /* accepted, head not yet sent */
    assert_int_equal(proc_wait_log(&p, "conns=3", WAIT_MS), 0);
    proxy_stop_ok(&p);
    expect_eof(a);
    expect_eof(b);
    expect_eof(pending);
    close(a);
    close(b);
    close(pending);
    assert_true(proc_log_contains(&p, "event=stopping signal=TERM conns=3"));
    assert_true(proc_log_contains(&p, "reason=shutdown"));
    assert_true(proc_log_contains(&p, "event=stopped"));
    assert_int_equal(access(path, F_OK), -1); /* the socket file is removed */
    upstream_stop(u);
}

static void test_cli(void **state)
{
    (void)state;
    proc p;
    const char *help[] = {"--help", NULL};
    assert_int_equal(run_to_exit(&p, help), 0);
    static const char *const FLAGS[] = {"--listen", "--allow", "--allowlist", "--resolve",
                                        "--dns-server", "--region", "--max-conns",
                                        "--head-timeout", "--connect-timeout", "--idle-timeout",
                                        "--help"};
    for (size_t i = 0; i < sizeof FLAGS / sizeof FLAGS[0]; i++)
        if (!proc_log_contains(&p, FLAGS[i]))
            fail_msg("--help does not document %s", FLAGS[i]);

    const char *nolisten[] = {"--allow", "a.test:1", NULL};
    assert_int_equal(run_to_exit(&p, nolisten), 2);
    const char *badflag[] = {"--listen", "unix:/nonexistent/x", "--bogus", NULL};
    assert_int_equal(run_to_exit(&p, badflag), 2);
    const char *badallow[] = {"--listen", "unix:/nonexistent/x", "--allow", "a.test", NULL};
    assert_int_equal(run_to_exit(&p, badallow), 2);
    const char *badpin[] = {"--listen", "unix:/nonexistent/x", "--resolve", "a.test:1:nope", NULL};
    assert_int_equal(run_to_exit(&p, badpin), 2);
    const char *badnum[] = {"--listen", "unix:/nonexistent/x", "--max-conns", "0", NULL};
    assert_int_equal(run_to_exit(&p, badnum), 2);
    const char *cantbind[] = {"--listen", "unix:/nonexistent/dir/x.sock", NULL};
    assert_int_equal(run_to_exit(&p, cantbind), 1);
    const char *baddns[] = {"--listen", unix_listen(), "--dns-server", "not-an-ip", NULL};
    assert_int_equal(run_to_exit(&p, baddns), 1);
    assert_true(proc_log_contains(&p, "bad DNS server"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tunnel_unix),
        cmocka_unit_test(test_tunnel_tcp_port_zero),
        cmocka_unit_test(test_pipelined_bytes),
        cmocka_unit_test(test_half_close),
        cmocka_unit_test(test_403),
        cmocka_unit_test(test_loopback_name_needs_pin),
        cmocka_unit_test(test_dns_answers_checked),
        cmocka_unit_test(test_dns_timeout_and_cancel),
        cmocka_unit_test(test_400_405),
        cmocka_unit_test(test_502_refused),
        cmocka_unit_test(test_504_timeouts),
        cmocka_unit_test(test_head_timeout),
        cmocka_unit_test(test_503_max_conns),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_yaml_allowlist),
        cmocka_unit_test(test_default_allowlist),
        cmocka_unit_test(test_many_concurrent_tunnels),
        cmocka_unit_test(test_large_transfer_backpressure),
        cmocka_unit_test(test_sigterm_closes_tunnels),
        cmocka_unit_test(test_cli),
    };
    h_tmpdir();
    return cmocka_run_group_tests(tests, NULL, NULL);
}

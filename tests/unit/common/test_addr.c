/* common/addr: the one address syntax (vsock, unix, tcp) and real sockets on each. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"

static void test_addr_parse(void **state)
{
    (void)state;
    veil_addr a;
    char err[128], out[160];
    assert_int_equal(addr_parse("vsock:16:5000", &a, err, sizeof err), 0);
    assert_int_equal(a.kind, ADDR_VSOCK);
    assert_int_equal(a.cid, 16);
    assert_int_equal(a.vport, 5000);
    assert_int_equal(addr_parse("vsock:ANY:5000", &a, err, sizeof err), 0);
    assert_int_equal(a.cid, VSOCK_CID_ANY);
    assert_string_equal(addr_format(&a, out, sizeof out), "vsock:ANY:5000");
    assert_int_equal(addr_parse("vsock:3:8443", &a, err, sizeof err), 0);
    assert_int_equal(a.cid, VSOCK_CID_PARENT);
    assert_int_equal(addr_parse("unix:/tmp/x.sock", &a, err, sizeof err), 0);
    assert_int_equal(a.kind, ADDR_UNIX);
    assert_string_equal(a.path, "/tmp/x.sock");
    assert_int_equal(addr_parse("tcp:127.0.0.1:8000", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 8000);
    assert_int_equal(addr_parse("tcp:[::1]:443", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "::1");
    assert_string_equal(addr_format(&a, out, sizeof out), "tcp:[::1]:443");
    assert_int_equal(addr_parse("tcp:bedrock-runtime.us-east-1.amazonaws.com:443", &a, err, sizeof err), 0);

    const char *bad[] = {
        "", "tcp:", "tcp:host", "tcp::80", "tcp:host:65536", "tcp:host:-1", "tcp:host:8x",
        "tcp:::1:80", "tcp:[::1]80", "vsock:3", "vsock:x:1", "vsock:3:", "vsock:3:1:2",
        "vsock::5000", "unix:", "udp:1.2.3.4:5", "5000", "unix:@",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(addr_parse(bad[i], &a, err, sizeof err), -1);
        assert_true(strlen(err) > 0);
    }
    char longpath[200] = "unix:/";
    memset(longpath + 6, 'a', 150);
    longpath[156] = '\0';
    assert_int_equal(addr_parse(longpath, &a, err, sizeof err), -1);
}

static void echo_roundtrip(const veil_addr *listen_a, const veil_addr *connect_a)
{
    char err[128] = "";
    int lfd = addr_listen(listen_a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    int cfd = addr_connect(connect_a, false, err, sizeof err);
    assert_true(cfd >= 0);
    struct pollfd p = {lfd, POLLIN, 0};
    assert_int_equal(poll(&p, 1, 5000), 1);
    int sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    assert_int_equal(write(cfd, "ping", 4), 4);
    char buf[8];
    assert_int_equal(read(sfd, buf, sizeof buf), 4);
    assert_memory_equal(buf, "ping", 4);
    close(sfd);
    close(cfd);
    close(lfd);
}

static void test_addr_sockets(void **state)
{
    (void)state;
    char err[128], path[64], spec[80];
    veil_addr a, c;
    /* tcp on a random port */
    assert_int_equal(addr_parse("tcp:127.0.0.1:0", &a, err, sizeof err), 0);
    int lfd = addr_listen(&a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    int port = addr_local_port(lfd);
    assert_true(port > 0);
    close(lfd);
    snprintf(spec, sizeof spec, "tcp:127.0.0.1:%d", port);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    echo_roundtrip(&a, &a);

    /* unix, including replacing a stale socket file */
    snprintf(path, sizeof path, "/tmp/veil-test-%d.sock", (int)getpid());
    snprintf(spec, sizeof spec, "unix:%s", path);
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    echo_roundtrip(&a, &a);
    echo_roundtrip(&a, &a); /* the file from the first round is stale now */
    /* a live listener is never replaced */
    lfd = addr_listen(&a, 8, err, sizeof err);
    assert_true(lfd >= 0);
    assert_int_equal(addr_listen(&a, 8, err, sizeof err), -1);
    close(lfd);
    unlink(path);

    /* abstract namespace */
    snprintf(spec, sizeof spec, "unix:@veil-test-%d", (int)getpid());
    assert_int_equal(addr_parse(spec, &a, err, sizeof err), 0);
    echo_roundtrip(&a, &a);

    /* connect failures are reported, not fatal */
    assert_int_equal(addr_parse("unix:/nonexistent/veil.sock", &c, err, sizeof err), 0);
    assert_int_equal(addr_connect(&c, false, err, sizeof err), -1);
    assert_non_null(strstr(err, "connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_addr_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

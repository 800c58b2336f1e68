/* common: hex, buffers and cursors, addresses and sockets, .env config (logging: test_log.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/addr.h"
#include "common/base64.h"
#include "common/buf.h"
#include "common/config.h"
#include "common/hex.h"

static void test_hex(void **state)
{
    (void)state;
    uint8_t b[4] = {0x00, 0xab, 0xCD, 0xff}, out[4];
    char s[9];
    hex_encode(b, 4, s);
    assert_string_equal(s, "00abcdff");
    assert_int_equal(hex_decode_exact("00ABcdFF", 8, out, 4), 0);
    assert_memory_equal(out, b, 4);
    assert_int_equal(hex_decode_exact("00abcd", 6, out, 4), -1);  /* short */
    assert_int_equal(hex_decode_exact("00abcdff0", 9, out, 4), -1);
    assert_int_equal(hex_decode("0ab", 3, out, 4), -1);  /* odd */
    assert_int_equal(hex_decode("0a b", 4, out, 4), -1); /* whitespace */
    assert_int_equal(hex_decode("0x0a", 4, out, 4), -1);
    assert_int_equal(hex_decode("0a0b0c0d0e", 10, out, 4), -1); /* too long for out */
    assert_int_equal(hex_decode("", 0, out, 4), 0);
}

/* RFC 4648 §10 vectors, both spellings, and each refusal */
static void test_base64(void **state)
{
    (void)state;
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    static const char *const url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    char enc[32];
    uint8_t dec[32];
    for (size_t i = 0; i < 7; i++) {
        size_t n = strlen(plain[i]);
        base64_encode(B64_STD, (const uint8_t *)plain[i], n, enc);
        assert_string_equal(enc, std[i]);
        assert_int_equal(base64_encoded_len(B64_STD, n), strlen(std[i]));
        base64_encode(B64_URL, (const uint8_t *)plain[i], n, enc);
        assert_string_equal(enc, url[i]);
        assert_int_equal(base64_encoded_len(B64_URL, n), strlen(url[i]));
        if (n) { /* the standard form has no empty encoding */
            assert_int_equal(base64_decode(B64_STD, std[i], strlen(std[i]), dec, sizeof dec), (long)n);
            assert_memory_equal(dec, plain[i], n);
        }
        assert_int_equal(base64_decode(B64_URL, url[i], strlen(url[i]), dec, sizeof dec), (long)n);
        assert_memory_equal(dec, plain[i], n);
    }
    uint8_t bytes[3] = {0xfb, 0xff, 0xfe};
    base64_encode(B64_STD, bytes, 3, enc);
    assert_string_equal(enc, "+//+");
    base64_encode(B64_URL, bytes, 3, enc);
    assert_string_equal(enc, "-__-");
    const char *bad_std[] = {"Zg=", "Zg", "Zm9v YmFy", "Zh==", "-__-", "Zg==Zg=="};
    for (size_t i = 0; i < sizeof bad_std / sizeof bad_std[0]; i++)
        assert_int_equal(base64_decode(B64_STD, bad_std[i], strlen(bad_std[i]), dec, sizeof dec), -1);
    const char *bad_url[] = {"Zg==", "Z", "Zh", "+//+", "Zm9 v"};
    for (size_t i = 0; i < sizeof bad_url / sizeof bad_url[0]; i++)
        assert_int_equal(base64_decode(B64_URL, bad_url[i], strlen(bad_url[i]), dec, sizeof dec), -1);
    assert_int_equal(base64_decode(B64_URL, "Zm9vYmFy", 8, dec, 5), -1); /* too small */
}

static void test_vbuf_cursor(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(vbuf_printf(&b, "%d,", i), 0);
    assert_true(strncmp(vbuf_cstr(&b), "0,1,2,", 6) == 0);
    size_t len = b.len;
    vbuf_consume(&b, 2);
    assert_int_equal(b.len, len - 2);
    assert_true(strncmp(vbuf_cstr(&b), "1,2,", 4) == 0);
    vbuf_free_secure(&b);

    uint8_t data[] = {1, 0, 2, 0, 0, 0, 3, 9};
    cursor c = cursor_make(data, sizeof data);
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    const uint8_t *span;
    assert_true(cursor_read_u8(&c, &u8) && u8 == 1);
    assert_true(cursor_read_be16(&c, &u16) && u16 == 2);
    assert_true(cursor_read_be32(&c, &u32) && u32 == 3);
    assert_false(cursor_read_be16(&c, &u16)); /* only 1 byte left */
    assert_false(cursor_read_span(&c, 2, &span));
    assert_true(cursor_read_span(&c, 1, &span) && *span == 9);
    assert_int_equal(c.left, 0);
}

/* The escaper that builds SET_CREDENTIALS without jansson: what it writes must
 * parse back (with jansson) to exactly the input, and it must refuse what
 * jansson would refuse to encode, appending nothing. */
static void test_json_string(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", "quote\" back\\slash",
        "ctl\n\r\t\b\f\x01\x1f end", "del\x7f", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
        "</script>\u2028",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        vbuf b = VBUF_INIT;
        assert_int_equal(vbuf_append_str(&b, "x"), 0);
        assert_int_equal(vbuf_append_json_string(&b, ok[i]), 0);
        json_error_t jerr;
        json_t *j = json_loadb((const char *)b.data + 1, b.len - 1, JSON_DECODE_ANY, &jerr);
        assert_non_null(j);
        assert_true(json_is_string(j));
        assert_string_equal(json_string_value(j), ok[i]);
        json_decref(j);
        vbuf_free_secure(&b);
    }
    vbuf b = VBUF_INIT;
    assert_int_equal(vbuf_append_json_string(&b, "a\"b\\c\n\x01"), 0);
    assert_int_equal(b.len, strlen("\"a\\\"b\\\\c\\n\\u0001\""));
    assert_memory_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\"", b.len);

    /* not UTF-8: truncated, stray continuation, overlong, surrogate, beyond U+10FFFF */
    static const char *const bad[] = {"\xc3", "x\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                      "\xf5\x80\x80\x80", "ok\xe2\x82"};
    size_t len = b.len;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(vbuf_append_json_string(&b, bad[i]), -1);
        assert_int_equal(b.len, len);
        json_t *j = json_string(bad[i]); /* jansson agrees */
        assert_null(j);
    }
    vbuf_free_secure(&b);
}

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

static void test_dotenv(void **state)
{
    (void)state;
    char path[] = "/tmp/veil-env-XXXXXX", err[128];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# comment\n\nVEIL_T_A=plain\nexport VEIL_T_B = \"quoted value\"\n"
                       "VEIL_T_C='single # not a comment'\nVEIL_T_D=x # trailing\nVEIL_T_E=preset\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("VEIL_T_E", "from-env", 1);
    assert_int_equal(config_load_dotenv(path, err, sizeof err), 0);
    assert_string_equal(config_str("VEIL_T_A", NULL), "plain");
    assert_string_equal(config_str("VEIL_T_B", NULL), "quoted value");
    assert_string_equal(config_str("VEIL_T_C", NULL), "single # not a comment");
    assert_string_equal(config_str("VEIL_T_D", NULL), "x");
    assert_string_equal(config_str("VEIL_T_E", NULL), "from-env"); /* env wins */
    assert_string_equal(config_str("VEIL_T_UNSET", "def"), "def");

    long v;
    setenv("VEIL_T_N", "2700", 1);
    assert_int_equal(config_long("VEIL_T_N", 5, 1, 100000, &v, err, sizeof err), 0);
    assert_int_equal(v, 2700);
    setenv("VEIL_T_N", "27x", 1);
    assert_int_equal(config_long("VEIL_T_N", 5, 1, 100000, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "VEIL_T_N"));
    bool bv;
    setenv("VEIL_T_B2", "Yes", 1);
    assert_int_equal(config_bool("VEIL_T_B2", false, &bv, err, sizeof err), 0);
    assert_true(bv);
    setenv("VEIL_T_B2", "maybe", 1);
    assert_int_equal(config_bool("VEIL_T_B2", false, &bv, err, sizeof err), -1);

    /* malformed line */
    FILE *f = fopen(path, "w");
    fputs("GOOD=1\nthis line is wrong\n", f);
    fclose(f);
    assert_int_equal(config_load_dotenv(path, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    unlink(path);
    assert_int_equal(config_load_dotenv("/nonexistent/.env", err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_vbuf_cursor),
        cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_addr_parse),
        cmocka_unit_test(test_addr_sockets),
        cmocka_unit_test(test_dotenv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The CLI's cookie jar (src/cli/cookies.c): what a load balancer's Set-Cookie leaves
 * for the next call (an ALB's stickiness cookie), and what a hostile server cannot
 * make the client send: a second header line, another cookie smuggled in a value,
 * an unbounded header. The CLI is a program, not a library: its pure module is
 * compiled in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cli/cookies.c"

static int set(cookie_jar *j, const char *v)
{
    return cookie_jar_set(j, v, strlen(v));
}

static const char *header(const cookie_jar *j)
{
    static char out[COOKIE_HEADER_MAX];
    cookie_jar_header(j, out, sizeof out);
    return out;
}

static void test_alb_cookies(void **state)
{
    (void)state;
    cookie_jar j = {0};
    assert_int_equal(cookie_jar_header(&j, (char[8]){0}, 8), 0);
    /* what an ALB with duration-based stickiness sends */
    assert_int_equal(set(&j, "AWSALB=Gv1x7m0Mq8s+T/Wk9a==; Expires=Tue, 12 Dec 2026 03:04:05 GMT; Path=/"), 0);
    assert_int_equal(set(&j, "AWSALBCORS=Gv1x7m0Mq8s+T/Wk9a==; Expires=Tue, 12 Dec 2026 03:04:05 GMT; Path=/; "
                             "SameSite=None; Secure"), 0);
    assert_string_equal(header(&j), "AWSALB=Gv1x7m0Mq8s+T/Wk9a==; AWSALBCORS=Gv1x7m0Mq8s+T/Wk9a==");
    /* the next response renews it: replaced, not added */
    assert_int_equal(set(&j, "AWSALB=second; Path=/"), 0);
    assert_string_equal(header(&j), "AWSALB=second; AWSALBCORS=Gv1x7m0Mq8s+T/Wk9a==");
    /* spaces around, a quoted value, an empty one */
    assert_int_equal(set(&j, "  q = \"quoted\"  ;Path=/"), 0);
    assert_int_equal(set(&j, "e="), 0);
    assert_string_equal(header(&j), "AWSALB=second; AWSALBCORS=Gv1x7m0Mq8s+T/Wk9a==; q=\"quoted\"; e=");
    /* Max-Age=0 (or less) removes; a positive or malformed one does not */
    assert_int_equal(set(&j, "q=x; Max-Age=0"), 0);
    assert_int_equal(set(&j, "e=; max-age=-1"), 0);
    assert_string_equal(header(&j), "AWSALB=second; AWSALBCORS=Gv1x7m0Mq8s+T/Wk9a==");
    assert_int_equal(set(&j, "AWSALB=third; Max-Age=604800"), 0);
    assert_int_equal(set(&j, "AWSALBCORS=kept; Max-Age=soon"), 0);
    assert_string_equal(header(&j), "AWSALB=third; AWSALBCORS=kept");
    assert_int_equal(set(&j, "absent=x; Max-Age=0"), 0); /* removing what is not there: nothing */
    assert_int_equal(j.n, 2);
    cookie_jar_clear(&j);
    assert_int_equal(j.n, 0);
    assert_string_equal(header(&j), "");
}

static void test_hostile_cookies(void **state)
{
    (void)state;
    cookie_jar j = {0};
    static const char *const BAD[] = {
        "",                              /* nothing */
        "novalue",                       /* no '=' */
        "=x",                            /* no name */
        "a b=x",                         /* a space in the name */
        "a=b c",                         /* a space in the value */
        "a=b,c=d",                       /* a comma: a second cookie in one */
        "a=x\r\nX-Injected: 1",          /* a line break: a header of its own */
        "a=x\\y",                        /* a backslash */
        "a=\x01",                        /* a control character */
        "a=caf\xC3\xA9",                 /* not ASCII */
        "n\xC3\xA9=x",
    };
    for (size_t i = 0; i < sizeof BAD / sizeof BAD[0]; i++) {
        if (set(&j, BAD[i]) != -1)
            fail_msg("accepted %s", BAD[i]);
    }
    assert_int_equal(j.n, 0);
    /* a NUL inside the value's length is not text either */
    assert_int_equal(cookie_jar_set(&j, "a=b\0c", 5), -1);
    /* the bounds: a name, a value, the number of cookies, the header's length */
    char big[COOKIE_VALUE_MAX + 16];
    snprintf(big, sizeof big, "a=%0*d", COOKIE_VALUE_MAX + 1, 0);
    assert_int_equal(set(&j, big), -1);
    snprintf(big, sizeof big, "%0*d=x", COOKIE_NAME_MAX + 1, 0);
    assert_int_equal(set(&j, big), -1);
    for (int i = 0; i < COOKIE_MAX; i++) {
        char c[32];
        snprintf(c, sizeof c, "c%d=%d", i, i);
        assert_int_equal(set(&j, c), 0);
    }
    assert_int_equal(set(&j, "one=more"), -1);
    assert_int_equal(set(&j, "c0=replaced"), 0); /* a full jar still renews what it holds */
    assert_int_equal(j.n, COOKIE_MAX);
    cookie_jar_clear(&j);
    for (int i = 0; i < 3; i++) { /* 3 x 1,027 bytes fit; a fourth would pass 4 KiB */
        snprintf(big, sizeof big, "v%d=%0*d", i, COOKIE_VALUE_MAX, 0);
        assert_int_equal(set(&j, big), 0);
    }
    snprintf(big, sizeof big, "v3=%0*d", COOKIE_VALUE_MAX, 0);
    assert_int_equal(set(&j, big), -1);
    char out[COOKIE_HEADER_MAX];
    size_t n = cookie_jar_header(&j, out, sizeof out);
    assert_int_equal(n, strlen(out));
    assert_true(n < COOKIE_HEADER_MAX);
    assert_null(strpbrk(out, "\r\n"));
    cookie_jar_clear(&j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alb_cookies),
        cmocka_unit_test(test_hostile_cookies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* enclave/framing: JSON objects found in a byte stream split anywhere. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "enclave/framing.h"

/* Feeds s growing one byte at a time; returns the end offset of the first object. */
static jf_status scan_growing(const char *s, size_t *start, size_t *end)
{
    jf_scanner sc;
    jf_reset(&sc);
    size_t n = strlen(s);
    for (size_t i = 1; i <= n; i++) {
        jf_status st = jf_scan(&sc, s, i, start, end);
        if (st != JF_NEED_MORE)
            return st;
    }
    return JF_NEED_MORE;
}

static void test_framing_objects(void **state)
{
    (void)state;
    size_t s, e;
    const char *cases[][2] = {
        {"{\"command\":\"HEALTH\"}", "{\"command\":\"HEALTH\"}"},
        {"  \n{\"a\":{\"b\":[1,{\"c\":2}]}}\n{\"next\":1}", "{\"a\":{\"b\":[1,{\"c\":2}]}}"},
        {"{\"s\":\"}{][\"}", "{\"s\":\"}{][\"}"},
        {"{\"s\":\"esc \\\" } still\"}x", "{\"s\":\"esc \\\" } still\"}"},
        {"{\"s\":\"bs \\\\\"}", "{\"s\":\"bs \\\\\"}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(scan_growing(cases[i][0], &s, &e), JF_COMPLETE);
        assert_int_equal(e - s, strlen(cases[i][1]));
        assert_memory_equal(cases[i][0] + s, cases[i][1], e - s);
    }
    assert_int_equal(scan_growing("{\"unterminated\": \"}", &s, &e), JF_NEED_MORE);
    assert_int_equal(scan_growing("[1,2]", &s, &e), JF_NOT_OBJECT);
    assert_int_equal(scan_growing("  x{}", &s, &e), JF_NOT_OBJECT);
    char deep[2 * JF_MAX_DEPTH + 8];
    memset(deep, '[', sizeof deep - 1);
    deep[0] = '{';
    deep[sizeof deep - 1] = '\0';
    assert_int_equal(scan_growing(deep, &s, &e), JF_TOO_DEEP);
}

static void test_framing_every_split(void **state)
{
    (void)state;
    const char *msg = "{\"command\":\"CHAT_STREAM\",\"x\":\"a\\\"}b\",\"h\":[{},{}]}\n";
    size_t n = strlen(msg), want = n - 1;
    for (size_t cut = 0; cut <= n; cut++) {
        jf_scanner sc;
        jf_reset(&sc);
        size_t s = 0, e = 0;
        jf_status st = jf_scan(&sc, msg, cut, &s, &e);
        if (cut < want)
            assert_int_equal(st, JF_NEED_MORE);
        if (st == JF_NEED_MORE)
            st = jf_scan(&sc, msg, n, &s, &e);
        assert_int_equal(st, JF_COMPLETE);
        assert_int_equal(s, 0);
        assert_int_equal(e, want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_framing_objects),
        cmocka_unit_test(test_framing_every_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* common/buf: growable buffers, bounded cursors, and the JSON string escaper. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "common/buf.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vbuf_cursor),
        cmocka_unit_test(test_json_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

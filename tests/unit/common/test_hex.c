/* common/hex: strict hex, both directions (no odd lengths, whitespace or 0x). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

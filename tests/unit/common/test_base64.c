/* common/base64: the RFC 4648 vectors in both alphabets, and each refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/base64.h"

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

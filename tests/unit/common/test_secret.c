/* common/secret: key material and plaintext are wiped before their memory is
 * released. This program alone is linked with -Wl,--wrap=free (tests/tests.cmake):
 * every free of a block the test watches checks, before the real free, that no
 * byte of the block is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"

static const void *g_watch; /* the block whose free is checked */
static size_t g_watch_len;
static int g_frees_seen, g_dirty;

void __real_free(void *p);
void __wrap_free(void *p);
void __wrap_free(void *p)
{
    if (p && p == g_watch) {
        g_frees_seen++;
        for (size_t i = 0; i < g_watch_len; i++)
            if (((const uint8_t *)p)[i] != 0)
                g_dirty++;
        g_watch = NULL;
    }
    __real_free(p);
}

static void watch(const void *p, size_t len)
{
    g_watch = p;
    g_watch_len = len;
    g_frees_seen = 0;
    g_dirty = 0;
}

static void test_secret_free_wipes(void **state)
{
    (void)state;
    secret s;
    assert_int_equal(secret_alloc(&s, 64), 0);
    assert_non_null(s.data);
    assert_int_equal(s.len, 64);
    memset(s.data, 0xA5, 64);
    watch(s.data, 64);
    secret_free(&s);
    assert_int_equal(g_frees_seen, 1);
    assert_int_equal(g_dirty, 0);
    assert_null(s.data);
    assert_int_equal(s.len, 0);
    secret_free(&s); /* twice is harmless */

    /* an empty secret is still a real allocation, wiped and freed like the others */
    assert_int_equal(secret_alloc(&s, 0), 0);
    assert_non_null(s.data);
    assert_int_equal(s.len, 0);
    s.data[0] = 0x5A;
    watch(s.data, 1);
    secret_free(&s);
    assert_int_equal(g_frees_seen, 1);
    assert_int_equal(g_dirty, 0);
}

/* jansson frees without a size: the whole usable block is wiped, not just what
 * was asked for */
static void test_free_block_wipes_the_whole_block(void **state)
{
    (void)state;
    uint8_t *p = malloc(100);
    assert_non_null(p);
    size_t usable = malloc_usable_size(p);
    assert_true(usable >= 100);
    memset(p, 0xC3, usable);
    watch(p, usable);
    secret_free_block(p);
    assert_int_equal(g_frees_seen, 1);
    assert_int_equal(g_dirty, 0);
    secret_free_block(NULL);
}

static void test_secure_wipe(void **state)
{
    (void)state;
    uint8_t key[32];
    memset(key, 0xFF, sizeof key);
    secure_wipe(key, 16);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(key[i], 0);
    for (size_t i = 16; i < 32; i++) /* exactly the bytes asked for */
        assert_int_equal(key[i], 0xFF);
    secure_wipe(NULL, 10);
    secure_wipe(key, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_free_wipes),
        cmocka_unit_test(test_free_block_wipes_the_whole_block),
        cmocka_unit_test(test_secure_wipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

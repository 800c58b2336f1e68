/* src/crypto/history_tag.c: the chain key and the tag, against vectors computed
 * independently (Python's hashlib/hmac and pyca's HKDF, from the formula in
 * history_tag.h), and the properties the client relies on: another key, session,
 * order or byte gives another tag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/hex.h"
#include "crypto/history_tag.h"

static uint8_t UCT[] = "user text", ACT[] = "assistant text";

static ep mk(uint8_t a, uint8_t b, uint8_t c, uint8_t *ct, size_t n, uint8_t d)
{
    ep e;
    memset(&e, 0, sizeof e);
    memset(e.epk, a, sizeof e.epk);
    memset(e.salt, b, sizeof e.salt);
    memset(e.iv, c, sizeof e.iv);
    e.ct = ct;
    e.ct_len = n;
    memset(e.tag, d, sizeof e.tag);
    return e;
}

static void hex_is(const uint8_t *b, const char *want)
{
    char h[65];
    hex_encode(b, 32, h);
    assert_string_equal(h, want);
}

static void test_vectors(void **state)
{
    (void)state;
    uint8_t priv[32], key[32], t1[32], t2[32];
    for (int i = 0; i < 32; i++)
        priv[i] = (uint8_t)i;
    assert_int_equal(history_tag_key(priv, key), 0);
    hex_is(key, "1e1bf7bbe5ebf067e2c6eb4d9e8d133399793709670935ddca755b2b4f1e6940");
    ep u = mk(0x11, 0x22, 0x33, UCT, 9, 0x44), a = mk(0x55, 0x66, 0x77, ACT, 14, 0x88);
    assert_int_equal(history_tag(key, "s-1", NULL, &u, &a, t1), 0);
    hex_is(t1, "c4954b14e9f6a329950935d48a23d6ab56f555b7e6d1cfdf9866f9cf66756669");
    /* chained: the next tag covers the previous one (here with the pair swapped) */
    assert_int_equal(history_tag(key, "s-1", t1, &a, &u, t2), 0);
    hex_is(t2, "6202e20d0e585c53775034979f5ab0fde910d2f46ab5afc2a515dc52180d4117");
}

static void test_everything_counts(void **state)
{
    (void)state;
    uint8_t priv[32] = {7}, key[32], k2[32], base[32], t[32], prev[32] = {0};
    ep u = mk(1, 2, 3, UCT, 9, 4), a = mk(5, 6, 7, ACT, 14, 8);
    assert_int_equal(history_tag_key(priv, key), 0);
    assert_int_equal(history_tag(key, "s", NULL, &u, &a, base), 0);
    assert_int_equal(history_tag(key, "s", prev, &u, &a, t), 0); /* NULL is 32 zero bytes */
    assert_memory_equal(t, base, 32);
    priv[0] ^= 1;
    assert_int_equal(history_tag_key(priv, k2), 0);
    assert_int_equal(history_tag(k2, "s", NULL, &u, &a, t), 0); /* another storage key */
    assert_memory_not_equal(t, base, 32);
    assert_int_equal(history_tag(key, "s2", NULL, &u, &a, t), 0); /* another session */
    assert_memory_not_equal(t, base, 32);
    assert_int_equal(history_tag(key, "s", NULL, &a, &u, t), 0); /* the pair swapped */
    assert_memory_not_equal(t, base, 32);
    prev[5] = 1;
    assert_int_equal(history_tag(key, "s", prev, &u, &a, t), 0); /* another predecessor */
    assert_memory_not_equal(t, base, 32);
    a.ct[0] ^= 1;
    assert_int_equal(history_tag(key, "s", NULL, &u, &a, t), 0); /* one byte of the answer */
    a.ct[0] ^= 1;
    assert_memory_not_equal(t, base, 32);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_vectors), cmocka_unit_test(test_everything_counts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

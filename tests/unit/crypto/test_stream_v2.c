/* Stream format 2: round trips, and a dropped, reordered, relabelled or cut-off
 * element is always detected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "crypto/stream_v2.h"

typedef struct elem {
    sv2_kind kind;
    uint8_t ct[64], tag[GCM_TAG_LEN];
    size_t len;
} elem;

static const char *const MSGS[] = {"Hello", ", ", "world", "!", "(thinking)"};

/* The enclave's side: 4 text chunks, 1 thinking chunk, the end. */
static void make_stream(sv2 *rx, x25519_key **client, elem e[6])
{
    uint8_t cpub[32], epk[32], salt[32];
    sv2 tx;
    *client = x25519_key_generate(cpub);
    assert_non_null(*client);
    assert_int_equal(sv2_init_sender(&tx, cpub, epk, salt), 0);
    for (int i = 0; i < 5; i++) {
        e[i].kind = i == 4 ? SV2_THINKING : SV2_TEXT;
        e[i].len = strlen(MSGS[i]);
        assert_int_equal(sv2_seal(&tx, e[i].kind, (const uint8_t *)MSGS[i], e[i].len, e[i].ct, e[i].tag), 0);
    }
    e[5].kind = SV2_END;
    e[5].len = 0;
    assert_int_equal(sv2_seal(&tx, SV2_END, NULL, 0, e[5].ct, e[5].tag), 0);
    assert_int_equal(tx.seq, 6);
    sv2_wipe(&tx);
    assert_int_equal(sv2_init_receiver(rx, *client, epk, salt), 0);
}

static void test_round_trip(void **state)
{
    (void)state;
    sv2 rx;
    x25519_key *client;
    elem e[6];
    make_stream(&rx, &client, e);
    uint8_t pt[64];
    for (int i = 0; i < 6; i++) {
        assert_int_equal(sv2_open(&rx, e[i].kind, e[i].ct, e[i].len, e[i].tag, pt), 0);
        if (i < 5)
            assert_memory_equal(pt, MSGS[i], e[i].len);
    }
    assert_int_equal(rx.seq, 6);
    sv2_wipe(&rx);
    x25519_key_free(client);
}

static void test_drop_reorder_relabel_cut(void **state)
{
    (void)state;
    sv2 rx;
    x25519_key *client;
    elem e[6];
    uint8_t pt[64];
    make_stream(&rx, &client, e);
    /* a dropped chunk: element 1 arrives first */
    assert_int_equal(sv2_open(&rx, e[1].kind, e[1].ct, e[1].len, e[1].tag, pt), -1);
    assert_int_equal(rx.seq, 0); /* a failure does not advance */
    assert_int_equal(sv2_open(&rx, e[0].kind, e[0].ct, e[0].len, e[0].tag, pt), 0);
    /* reordered: 2 before 1 */
    assert_int_equal(sv2_open(&rx, e[2].kind, e[2].ct, e[2].len, e[2].tag, pt), -1);
    /* relabelled: a text chunk claimed as thinking, or as the end */
    assert_int_equal(sv2_open(&rx, SV2_THINKING, e[1].ct, e[1].len, e[1].tag, pt), -1);
    assert_int_equal(sv2_open(&rx, SV2_END, e[1].ct, e[1].len, e[1].tag, pt), -1);
    /* a flipped bit */
    e[1].ct[0] ^= 1;
    assert_int_equal(sv2_open(&rx, e[1].kind, e[1].ct, e[1].len, e[1].tag, pt), -1);
    e[1].ct[0] ^= 1;
    for (int i = 1; i < 5; i++)
        assert_int_equal(sv2_open(&rx, e[i].kind, e[i].ct, e[i].len, e[i].tag, pt), 0);
    /* a stream cut after element 3 has no valid end at index 4 */
    sv2 cut = rx;
    cut.seq = 4;
    assert_int_equal(sv2_open(&cut, SV2_END, e[5].ct, 0, e[5].tag, pt), -1);
    assert_int_equal(sv2_open(&rx, SV2_END, e[5].ct, 0, e[5].tag, pt), 0);
    sv2_wipe(&rx);
    x25519_key_free(client);
}

static void test_other_key(void **state)
{
    (void)state;
    sv2 rx, other;
    x25519_key *client;
    elem e[6];
    uint8_t pt[64], pub[32], epk[32], salt[32];
    make_stream(&rx, &client, e);
    x25519_key *stranger = x25519_key_generate(pub);
    assert_int_equal(sv2_init_sender(&other, pub, epk, salt), 0); /* any epk/salt */
    assert_int_equal(sv2_init_receiver(&other, stranger, epk, salt), 0);
    assert_int_equal(sv2_open(&other, e[0].kind, e[0].ct, e[0].len, e[0].tag, pt), -1);
    sv2_wipe(&rx);
    sv2_wipe(&other);
    x25519_key_free(client);
    x25519_key_free(stranger);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_drop_reorder_relabel_cut),
        cmocka_unit_test(test_other_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

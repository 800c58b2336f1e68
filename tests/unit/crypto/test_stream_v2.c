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

/* The enclave's side: 4 text chunks, 1 thinking chunk, the end. epk and salt are
 * what goes to the client in the clear (the stream_key event). */
static void make_stream_wire(sv2 *rx, x25519_key **client, elem e[6], uint8_t epk[32], uint8_t salt[32])
{
    uint8_t cpub[32];
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

static void make_stream(sv2 *rx, x25519_key **client, elem e[6])
{
    uint8_t epk[32], salt[32];
    make_stream_wire(rx, client, e, epk, salt);
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

/* Every element of a stream fails to open with receiver r (which must not advance). */
static void assert_none_opens(sv2 *r, const elem e[6], const char *who)
{
    uint8_t pt[64];
    for (int i = 0; i < 6; i++) {
        r->seq = (uint64_t)i; /* even told the right index */
        if (sv2_open(r, e[i].kind, e[i].ct, e[i].len, e[i].tag, pt) != -1)
            fail_msg("%s opened element %d", who, i);
        assert_int_equal(r->seq, (uint64_t)i);
    }
}

/* Whoever sees the stream on the wire has its epk and salt (and the client's public
 * key), but not the client's private key: deriving with a key of its own, it opens
 * nothing. Nor does another client's key, nor the client's own key with another
 * stream's epk or salt. The real client with the same wire values opens every
 * element, so the refusals are about the key, not about bad inputs. */
static void test_other_key(void **state)
{
    (void)state;
    sv2 rx, r;
    x25519_key *client;
    elem e[6];
    uint8_t epk[32], salt[32], pt[64];
    make_stream_wire(&rx, &client, e, epk, salt);

    /* an eavesdropper: the real epk and salt, its own private key */
    uint8_t own_pub[32];
    x25519_key *eavesdropper = x25519_key_generate(own_pub);
    assert_non_null(eavesdropper);
    assert_int_equal(sv2_init_receiver(&r, eavesdropper, epk, salt), 0);
    assert_memory_not_equal(r.key, rx.key, sizeof r.key);
    assert_none_opens(&r, e, "a key of its own with the stream's epk and salt");
    sv2_wipe(&r);

    /* another client's key (a second request's transport key) */
    sv2 rx2;
    x25519_key *client2;
    elem e2[6];
    uint8_t epk2[32], salt2[32];
    make_stream_wire(&rx2, &client2, e2, epk2, salt2);
    assert_int_equal(sv2_init_receiver(&r, client2, epk, salt), 0);
    assert_none_opens(&r, e, "another client's key");
    sv2_wipe(&r);

    /* the client's own key, but another stream's epk or salt */
    assert_int_equal(sv2_init_receiver(&r, client, epk2, salt), 0);
    assert_none_opens(&r, e, "another stream's epk");
    sv2_wipe(&r);
    assert_int_equal(sv2_init_receiver(&r, client, epk, salt2), 0);
    assert_none_opens(&r, e, "another stream's salt");
    sv2_wipe(&r);

    /* the control: the real client, the same wire values, opens every element */
    assert_int_equal(sv2_init_receiver(&r, client, epk, salt), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(sv2_open(&r, e[i].kind, e[i].ct, e[i].len, e[i].tag, pt), 0);
    assert_int_equal(r.seq, 6);

    sv2_wipe(&r);
    sv2_wipe(&rx);
    sv2_wipe(&rx2);
    x25519_key_free(client);
    x25519_key_free(client2);
    x25519_key_free(eavesdropper);
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

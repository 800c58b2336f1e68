/* src/cli/chain.c: a session's history chain as `veil history` and `chat --session`
 * check it. A session of tagged exchanges verifies; each thing a hostile server can
 * do to the stored list gets its own verdict: an altered message (forged, and the
 * chain goes on after it), a removed exchange (the next one fails), a removed LAST
 * exchange (only the local record tells: record_missing), two exchanges swapped
 * (reordered, naming where each belongs), a tag stripped, a tag from another
 * session or made with another key, a lone tagged answer. Exchanges without a tag
 * (the original's clients) are untagged and the chain continues past them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "cli/chain.c"

#define SID "5f0e3d4b-2c1a-4e6f-8a7b-9c0d1e2f3a4b"
#define MAXM 16

typedef struct session {
    uint8_t key[32];
    ep eps[MAXM];
    chain_msg m[MAXM];
    size_t n;
    uint8_t tags[MAXM][HISTORY_TAG_LEN]; /* the tag of each exchange as the client made it */
} session;

/* n exchanges, each tagged (untagged[i]: left without one), chained as the client chains. */
static void make(session *s, size_t pairs, const bool *untagged)
{
    uint8_t pub[32], priv[32];
    memset(s, 0, sizeof *s);
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(history_tag_key(priv, s->key), 0);
    const uint8_t *prev = NULL;
    for (size_t i = 0; i < pairs; i++) {
        for (int k = 0; k < 2; k++) {
            size_t j = 2 * i + (size_t)k;
            char text[32];
            snprintf(text, sizeof text, "%s %zu", k ? "answer" : "question", i);
            assert_int_equal(ep_seal(pub, (const uint8_t *)text, strlen(text),
                                     k ? EP_CTX_ASSISTANT_STORAGE : EP_CTX_USER_STORAGE, &s->eps[j]), EP_OK);
            s->m[j].assistant = k == 1;
        }
        if (untagged && untagged[i])
            continue;
        assert_int_equal(history_tag(s->key, SID, prev, &s->eps[2 * i], &s->eps[2 * i + 1], s->tags[i]), 0);
        memcpy(s->m[2 * i + 1].tag, s->tags[i], HISTORY_TAG_LEN);
        s->m[2 * i + 1].has_tag = true;
        prev = s->tags[i];
    }
    s->n = 2 * pairs;
    for (size_t j = 0; j < s->n; j++)
        s->m[j].content = &s->eps[j];
}

static void drop(session *s)
{
    for (size_t j = 0; j < MAXM; j++)
        ep_clear(&s->eps[j]);
}

/* The list with messages [from, from+count) removed. */
static void remove_msgs(session *s, size_t from, size_t count)
{
    memmove(&s->m[from], &s->m[from + count], (s->n - from - count) * sizeof s->m[0]);
    s->n -= count;
}

static void swap_exchanges(session *s, size_t a, size_t b)
{
    chain_msg t[2];
    memcpy(t, &s->m[2 * a], sizeof t);
    memcpy(&s->m[2 * a], &s->m[2 * b], sizeof t);
    memcpy(&s->m[2 * b], t, sizeof t);
}

static void check(session *s, const uint8_t *recorded, const chain_status *want, size_t n_want, chain_report *r)
{
    assert_int_equal(chain_check(s->key, SID, s->m, s->n, recorded, r), 0);
    assert_int_equal(r->n, n_want);
    for (size_t i = 0; i < n_want; i++) {
        if (r->entries[i].status != want[i])
            fail_msg("entry %zu: %s, want %s", i, chain_status_name(r->entries[i].status), chain_status_name(want[i]));
    }
}

static void test_intact(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 4, NULL);
    const chain_status want[] = {CHAIN_VERIFIED, CHAIN_VERIFIED, CHAIN_VERIFIED, CHAIN_VERIFIED};
    check(&s, s.tags[3], want, 4, &r);
    assert_false(chain_broken(&r));
    assert_int_equal(r.verified, 4);
    assert_true(r.has_last);
    assert_memory_equal(r.last, s.tags[3], HISTORY_TAG_LEN); /* the next exchange chains here */
    assert_int_equal(r.entries[2].exchange, 3);
    chain_report_free(&r);
    /* a record of an earlier tag (another machine went on since) is no alarm */
    check(&s, s.tags[1], want, 4, &r);
    assert_false(r.record_missing);
    chain_report_free(&r);
    drop(&s);
}

/* The server replaces a stored answer with one it sealed to the storage key. */
static void test_altered_message(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 3, NULL);
    ep forged;
    uint8_t pub[32], priv[32];
    assert_int_equal(x25519_keygen(priv, pub), 0);
    assert_int_equal(ep_seal(pub, (const uint8_t *)"forged", 6, EP_CTX_ASSISTANT_STORAGE, &forged), EP_OK);
    s.m[3].content = &forged;
    const chain_status want[] = {CHAIN_VERIFIED, CHAIN_FORGED, CHAIN_VERIFIED};
    check(&s, NULL, want, 3, &r);
    assert_true(chain_broken(&r));
    assert_int_equal(r.forged, 1);
    chain_report_free(&r);
    /* the user's side altered instead */
    s.m[3].content = &s.eps[3];
    s.m[2].content = &forged;
    check(&s, NULL, want, 3, &r);
    chain_report_free(&r);
    ep_clear(&forged);
    drop(&s);
}

static void test_removed_exchange(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 4, NULL);
    remove_msgs(&s, 2, 2); /* exchange 2 */
    const chain_status want[] = {CHAIN_VERIFIED, CHAIN_FORGED, CHAIN_VERIFIED};
    check(&s, s.tags[3], want, 3, &r);
    assert_false(r.record_missing);
    chain_report_free(&r);
    drop(&s);
}

/* The last exchange removed: the chain itself still holds; the record tells. */
static void test_removed_last_exchange(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 3, NULL);
    remove_msgs(&s, 4, 2);
    const chain_status want[] = {CHAIN_VERIFIED, CHAIN_VERIFIED};
    check(&s, NULL, want, 2, &r);
    assert_false(chain_broken(&r));
    chain_report_free(&r);
    check(&s, s.tags[2], want, 2, &r);
    assert_true(r.record_missing);
    assert_true(chain_broken(&r));
    chain_report_free(&r);
    /* the whole session emptied */
    remove_msgs(&s, 0, 4);
    check(&s, s.tags[2], want, 0, &r);
    assert_true(r.record_missing);
    assert_false(r.has_last);
    chain_report_free(&r);
    drop(&s);
}

static void test_reordered(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 4, NULL);
    swap_exchanges(&s, 1, 2); /* shown: 1, 3, 2, 4 */
    const chain_status want[] = {CHAIN_VERIFIED, CHAIN_REORDERED, CHAIN_REORDERED, CHAIN_REORDERED};
    check(&s, s.tags[3], want, 4, &r);
    assert_int_equal(r.entries[1].after, 3); /* the real exchange 3 follows 2, shown third */
    assert_int_equal(r.entries[2].after, 1);
    assert_int_equal(r.entries[3].after, 2); /* the real 4 follows the real 3, shown second */
    assert_int_equal(r.reordered, 3);
    assert_false(r.record_missing);
    chain_report_free(&r);
    /* the first exchange moved to the end: its tag places it first */
    drop(&s);
    make(&s, 3, NULL);
    chain_msg first[2];
    memcpy(first, &s.m[0], sizeof first);
    remove_msgs(&s, 0, 2);
    memcpy(&s.m[s.n], first, sizeof first);
    s.n += 2;
    const chain_status want2[] = {CHAIN_REORDERED, CHAIN_VERIFIED, CHAIN_REORDERED};
    check(&s, NULL, want2, 3, &r);
    assert_int_equal(r.entries[0].after, 3);
    assert_int_equal(r.entries[2].after, 0);
    chain_report_free(&r);
    drop(&s);
}

/* Exchanges of the original's clients carry no tag: unverified, and the chain goes
 * on from the last tag (the first tagged exchange chains from none). */
static void test_untagged_between(void **state)
{
    (void)state;
    session s;
    chain_report r;
    const bool untagged[] = {true, false, true, false};
    make(&s, 4, untagged);
    const chain_status want[] = {CHAIN_UNTAGGED, CHAIN_VERIFIED, CHAIN_UNTAGGED, CHAIN_VERIFIED};
    check(&s, s.tags[3], want, 4, &r);
    assert_false(chain_broken(&r));
    assert_int_equal(r.untagged, 2);
    chain_report_free(&r);
    /* stripping a tag: that exchange is unverified, the next one no longer fits */
    drop(&s);
    make(&s, 3, NULL);
    s.m[3].has_tag = false;
    const chain_status want2[] = {CHAIN_VERIFIED, CHAIN_UNTAGGED, CHAIN_FORGED};
    check(&s, NULL, want2, 3, &r);
    chain_report_free(&r);
    drop(&s);
}

static void test_foreign_tags_and_lone_messages(void **state)
{
    (void)state;
    session s;
    chain_report r;
    make(&s, 2, NULL);
    /* a tag made for another session, with the right key and messages: the chain goes
     * on from the stored tag, so the next exchange no longer fits either */
    assert_int_equal(history_tag(s.key, "another-session", NULL, &s.eps[0], &s.eps[1], s.m[1].tag), 0);
    const chain_status want[] = {CHAIN_FORGED, CHAIN_FORGED};
    check(&s, NULL, want, 2, &r);
    chain_report_free(&r);
    /* checked with another key: nothing fits */
    memcpy(s.m[1].tag, s.tags[0], HISTORY_TAG_LEN);
    s.key[0] ^= 1;
    const chain_status none[] = {CHAIN_FORGED, CHAIN_FORGED};
    check(&s, NULL, none, 2, &r);
    chain_report_free(&r);
    s.key[0] ^= 1;
    /* a question without its answer, and a tagged answer without its question */
    drop(&s);
    make(&s, 3, NULL);
    remove_msgs(&s, 2, 1); /* exchange 2's question */
    s.n--;                 /* exchange 3's answer */
    const chain_status want2[] = {CHAIN_VERIFIED, CHAIN_FORGED, CHAIN_UNPAIRED};
    check(&s, NULL, want2, 3, &r);
    assert_int_equal(r.entries[1].n_msgs, 1);
    assert_int_equal(r.entries[1].exchange, 0);
    assert_int_equal(r.entries[2].first, 3);
    chain_report_free(&r);
    drop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intact),
        cmocka_unit_test(test_altered_message),
        cmocka_unit_test(test_removed_exchange),
        cmocka_unit_test(test_removed_last_exchange),
        cmocka_unit_test(test_reordered),
        cmocka_unit_test(test_untagged_between),
        cmocka_unit_test(test_foreign_tags_and_lone_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* src/enclave/replay.c: a format-3 request id is used once while its request could
 * still pass the freshness check; a full table refuses (busy) rather than forgets,
 * and ids past their window make room again; threads sharing the table (veil-enclave's
 * workers) never both get an id as new. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "enclave/replay.h"

static void id_of(unsigned n, uint8_t id[REPLAY_ID_LEN])
{
    memset(id, 0, REPLAY_ID_LEN);
    for (int i = 0; i < 4; i++) /* spread over the hashed bytes, and the last ones */
        id[i] = id[REPLAY_ID_LEN - 1 - i] = (uint8_t)(n >> (8 * i));
}

static void test_once_within_the_window(void **state)
{
    (void)state;
    replay_cache *c = replay_new(8, 300);
    uint8_t a[REPLAY_ID_LEN], b[REPLAY_ID_LEN];
    id_of(1, a);
    id_of(2, b);
    assert_int_equal(replay_check_and_record(c, a, 1000, 1000), REPLAY_NEW);
    assert_int_equal(replay_check_and_record(c, a, 1000, 1010), REPLAY_SEEN);
    assert_int_equal(replay_check_and_record(c, a, 1000, 1300), REPLAY_SEEN); /* the last second of its window */
    assert_int_equal(replay_check_and_record(c, b, 1000, 1010), REPLAY_NEW);
    assert_int_equal(replay_count(c), 2);
    replay_free(c);
}

static void test_full_refuses_then_frees(void **state)
{
    (void)state;
    replay_cache *c = replay_new(4, 300);
    uint8_t id[REPLAY_ID_LEN];
    for (unsigned i = 0; i < 4; i++) {
        id_of(i + 10, id);
        assert_int_equal(replay_check_and_record(c, id, 1000, 1000), REPLAY_NEW);
    }
    id_of(99, id);
    assert_int_equal(replay_check_and_record(c, id, 1000, 1000), REPLAY_FULL); /* never forget one in its window */
    id_of(10, id);
    assert_int_equal(replay_check_and_record(c, id, 1000, 1100), REPLAY_SEEN);
    /* once the window passed, the old ids make room */
    id_of(99, id);
    assert_int_equal(replay_check_and_record(c, id, 1301, 1301), REPLAY_NEW);
    assert_int_equal(replay_count(c), 1);
    replay_free(c);
}

/* Ids that collide in the table's home slots are still told apart. */
static void test_collisions(void **state)
{
    (void)state;
    replay_cache *c = replay_new(64, 300);
    uint8_t id[REPLAY_ID_LEN];
    for (unsigned i = 0; i < 64; i++) {
        memset(id, 0, sizeof id);
        id[15] = (uint8_t)i; /* the hashed first bytes are equal: one home slot for all */
        assert_int_equal(replay_check_and_record(c, id, 500, 500), REPLAY_NEW);
    }
    for (unsigned i = 0; i < 64; i++) {
        memset(id, 0, sizeof id);
        id[15] = (uint8_t)i;
        assert_int_equal(replay_check_and_record(c, id, 500, 501), REPLAY_SEEN);
    }
    replay_free(c);
}

/* ---- workers sharing the table ---- */

#define RACE_IDS 4000
#define RACERS 4

typedef struct racer {
    replay_cache *c;
    pthread_barrier_t *start;
    unsigned news;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    uint8_t id[REPLAY_ID_LEN];
    pthread_barrier_wait(r->start);
    for (unsigned i = 0; i < RACE_IDS; i++) {
        id_of(i, id);
        if (replay_check_and_record(r->c, id, 1000, 1000) == REPLAY_NEW)
            r->news++;
    }
    return NULL;
}

/* The attack: one sealed request sent at once on connections served by different
 * workers. Every id is recorded as new exactly once, whichever thread came first. */
static void test_workers_race_for_each_id(void **state)
{
    (void)state;
    replay_cache *c = replay_new(RACE_IDS, 300);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    racer rs[RACERS];
    pthread_t t[RACERS];
    for (int i = 0; i < RACERS; i++) {
        rs[i] = (racer){c, &start, 0};
        assert_int_equal(pthread_create(&t[i], NULL, race, &rs[i]), 0);
    }
    unsigned news = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        news += rs[i].news;
    }
    assert_int_equal(news, RACE_IDS);
    assert_int_equal(replay_count(c), RACE_IDS);
    pthread_barrier_destroy(&start);
    replay_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_once_within_the_window),
        cmocka_unit_test(test_full_refuses_then_frees),
        cmocka_unit_test(test_collisions),
        cmocka_unit_test(test_workers_race_for_each_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* src/enclave/state.c: what veil-enclave's workers share. A request keeps the
 * credentials it took however often SET_CREDENTIALS replaces them; the stream limit
 * holds when threads take slots at once; the key pair is made once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "enclave/state.h"

static estate *make(unsigned max_streams)
{
    char err[128];
    estate_config cfg = {.max_streams = max_streams, .replay_max = 16, .replay_window_s = 300,
                         .max_connections = 3};
    estate *s = estate_new(&cfg, err, sizeof err);
    assert_non_null(s);
    return s;
}

static void test_key_pair(void **state)
{
    (void)state;
    estate *a = make(0), *b = make(0);
    assert_int_equal(strlen(estate_public_key_hex(a)), 64);
    assert_memory_not_equal(estate_public_key(a), estate_public_key(b), 32);
    assert_non_null(estate_key(a));
    assert_non_null(estate_replay(a));
    assert_int_equal(estate_max_streams(a), ESTATE_DEFAULT_MAX_STREAMS);
    assert_int_equal(estate_max_connections(a), 3);
    for (int i = 0; i < 3; i++)
        assert_true(estate_conn_take(a));
    assert_false(estate_conn_take(a)); /* the fourth connection */
    assert_int_equal(estate_conns(a), 3);
    estate_conn_release(a);
    assert_true(estate_conn_take(a));
    estate_free(a);
    estate_free(b);
}

/* A stream that started signs with the set it took: a replacement meanwhile changes
 * what the next request gets, never what a running one holds. */
static void test_a_holder_keeps_its_credentials(void **state)
{
    (void)state;
    estate *s = make(0);
    assert_null(estate_creds_get(s));
    assert_int_equal(estate_creds_set(s, "AKID1", "secret1", "token1", NULL, 0), 0);
    estate_creds *held = estate_creds_get(s);
    assert_non_null(held);
    assert_null(estate_creds_expiration(held));
    assert_int_equal(estate_creds_set(s, "AKID2", "secret2", "token2", "2099-01-01T00:00:00Z", 4070908800), 0);
    sigv4_credentials old = estate_creds_sigv4(held);
    assert_string_equal(old.access_key_id, "AKID1");
    assert_string_equal(old.secret_access_key, "secret1");
    assert_string_equal(old.session_token, "token1");
    estate_creds *now = estate_creds_get(s);
    assert_string_equal(estate_creds_sigv4(now).access_key_id, "AKID2");
    assert_string_equal(estate_creds_expiration(now), "2099-01-01T00:00:00Z");
    assert_false(estate_creds_expired(now, 4070908799));
    assert_true(estate_creds_expired(now, 4070908800));
    estate_creds_put(held); /* the last holder of set 1: wiped and freed (ASan: no leak, no use after) */
    estate_creds_put(now);
    estate_free(s); /* drops set 2 */
}

/* A holder may outlive the state's own reference: freeing the state leaves it valid. */
static void test_holder_outlives_replacement_and_state(void **state)
{
    (void)state;
    estate *s = make(0);
    assert_int_equal(estate_creds_set(s, "A", "B", "C", NULL, 0), 0);
    estate_creds *held = estate_creds_get(s);
    estate_free(s);
    assert_string_equal(estate_creds_sigv4(held).session_token, "C");
    estate_creds_put(held);
}

#define TAKERS 4
#define MAX_STREAMS 1000

typedef struct taker {
    estate *s;
    pthread_barrier_t *start;
    unsigned got;
} taker;

static void *take_all(void *arg)
{
    taker *t = arg;
    pthread_barrier_wait(t->start);
    for (int i = 0; i < MAX_STREAMS; i++)
        if (estate_stream_take(t->s))
            t->got++;
    return NULL;
}

/* Workers taking slots at once never pass the limit together. */
static void test_stream_limit_across_threads(void **state)
{
    (void)state;
    estate *s = make(MAX_STREAMS);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, TAKERS);
    taker ts[TAKERS];
    pthread_t th[TAKERS];
    for (int i = 0; i < TAKERS; i++) {
        ts[i] = (taker){s, &start, 0};
        assert_int_equal(pthread_create(&th[i], NULL, take_all, &ts[i]), 0);
    }
    unsigned got = 0;
    for (int i = 0; i < TAKERS; i++) {
        pthread_join(th[i], NULL);
        got += ts[i].got;
    }
    assert_int_equal(got, MAX_STREAMS);
    assert_int_equal(estate_streams(s), MAX_STREAMS);
    assert_false(estate_stream_take(s));
    estate_stream_release(s);
    assert_int_equal(estate_streams(s), MAX_STREAMS - 1);
    assert_true(estate_stream_take(s));
    pthread_barrier_destroy(&start);
    estate_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_pair),
        cmocka_unit_test(test_a_holder_keeps_its_credentials),
        cmocka_unit_test(test_holder_outlives_replacement_and_state),
        cmocka_unit_test(test_stream_limit_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

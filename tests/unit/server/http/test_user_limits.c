/* server/http/user_limits: the per-user request bucket (burst, refill, the
 * Retry-After it answers), the per-user stream count, and the table's bound with
 * its eviction of users who hold nothing.
 *
 * The module reads CLOCK_MONOTONIC; this program alone is linked with
 * -Wl,--wrap=clock_gettime (tests/tests.cmake), so the tests move its clock by
 * hand and never wait or measure time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <time.h>

#include "server/http/user_limits.h"

/* ---- the test's clock ---- */

static double g_now = 1000.0; /* monotonic seconds, as the module sees them */

int __real_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts);
int __wrap_clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (clk != CLOCK_MONOTONIC)
        return __real_clock_gettime(clk, ts);
    ts->tv_sec = (time_t)g_now;
    ts->tv_nsec = (long)((g_now - (double)ts->tv_sec) * 1e9);
    return 0;
}

static void advance(double s)
{
    g_now += s;
}

static user_limits *make(unsigned max_streams, double rate, double burst, size_t max_users)
{
    user_limits_config cfg = {.max_streams = max_streams, .rate = rate, .burst = burst,
                              .max_users = max_users};
    user_limits *ul = ul_new(&cfg);
    assert_non_null(ul);
    return ul;
}

/* ---- the request bucket ---- */

static void test_burst_then_refused(void **state)
{
    (void)state;
    user_limits *ul = make(2, 1.0, 3.0, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(ul_take_request(ul, "user_a"), 0);
    /* the bucket is empty: one token comes after 1 s at 1 request/s */
    assert_int_equal(ul_take_request(ul, "user_a"), 1);
    assert_int_equal(ul_take_request(ul, "user_a"), 1); /* a refusal takes nothing */
    /* another user has a bucket of their own */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ul_take_request(ul, "user_b"), 0);
    assert_int_equal(ul_take_request(ul, "user_b"), 1);
    ul_free(ul);
}

static void test_refill_at_rate_up_to_burst(void **state)
{
    (void)state;
    user_limits *ul = make(2, 2.0, 4.0, 100);
    for (int i = 0; i < 4; i++)
        assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 1);
    advance(0.5); /* 2/s: one token */
    assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 1);
    advance(1.0); /* two tokens */
    assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 1);
    advance(3600.0); /* an idle hour fills the bucket to burst, not beyond */
    for (int i = 0; i < 4; i++)
        assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 1);
    ul_free(ul);
}

/* Retry-After is the whole seconds until a token is there, rounded up, never 0. */
static void test_retry_after(void **state)
{
    (void)state;
    static const struct {
        double rate, burst, after; /* after: seconds waited once the bucket is empty */
        unsigned want;
    } C[] = {
        {1.0, 1.0, 0.0, 1},   {0.5, 1.0, 0.0, 2},   {0.3, 1.0, 0.0, 4}, /* 3.33 s -> 4 */
        {10.0, 1.0, 0.0, 1},  /* 0.1 s -> 1, never 0 */
        {0.1, 1.0, 0.0, 10},  {0.1, 1.0, 2.5, 8},   /* 7.5 s left -> 8 */
        {0.25, 2.0, 3.0, 1},  /* 1 s left */
    };
    for (size_t i = 0; i < sizeof C / sizeof C[0]; i++) {
        user_limits *ul = make(1, C[i].rate, C[i].burst, 10);
        for (int k = 0; k < (int)C[i].burst; k++)
            assert_int_equal(ul_take_request(ul, "u"), 0);
        advance(C[i].after);
        unsigned got = ul_take_request(ul, "u");
        if (got != C[i].want)
            fail_msg("case %zu: rate %.2f after %.1f s: Retry-After %u, want %u", i, C[i].rate,
                     C[i].after, got, C[i].want);
        ul_free(ul);
    }
}

static void test_rate_zero_is_no_limit(void **state)
{
    (void)state;
    user_limits *ul = make(1, 0.0, 0.0, 1);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(ul_take_request(ul, "u"), 0);
    /* and takes no table entry: the one slot is still free for a stream */
    assert_true(ul_stream_acquire(ul, "v"));
    ul_stream_release(ul, "v");
    ul_free(ul);
}

/* ---- streams ---- */

static void test_streams_acquire_release(void **state)
{
    (void)state;
    user_limits *ul = make(2, 1.0, 5.0, 100);
    assert_int_equal(ul_streams(ul, "u"), 0);
    assert_true(ul_stream_acquire(ul, "u"));
    assert_true(ul_stream_acquire(ul, "u"));
    assert_int_equal(ul_streams(ul, "u"), 2);
    assert_false(ul_stream_acquire(ul, "u")); /* at max_streams */
    assert_int_equal(ul_streams(ul, "u"), 2);
    assert_true(ul_stream_acquire(ul, "other")); /* per user */
    ul_stream_release(ul, "u");
    assert_int_equal(ul_streams(ul, "u"), 1);
    assert_true(ul_stream_acquire(ul, "u"));
    assert_false(ul_stream_acquire(ul, "u"));
    ul_stream_release(ul, "u");
    ul_stream_release(ul, "u");
    assert_int_equal(ul_streams(ul, "u"), 0);
    /* a release without an acquire never goes below zero nor creates a user */
    ul_stream_release(ul, "u");
    ul_stream_release(ul, "nobody");
    assert_int_equal(ul_streams(ul, "u"), 0);
    assert_int_equal(ul_streams(ul, "nobody"), 0);
    assert_true(ul_stream_acquire(ul, "u"));
    assert_true(ul_stream_acquire(ul, "u"));
    assert_false(ul_stream_acquire(ul, "u"));
    /* streams and the request bucket are independent */
    for (int i = 0; i < 5; i++)
        assert_int_equal(ul_take_request(ul, "u"), 0);
    assert_int_equal(ul_take_request(ul, "u"), 1);
    assert_int_equal(ul_streams(ul, "u"), 2);
    ul_free(ul);
}

/* ---- the table bound ---- */

static void test_table_bound_and_eviction(void **state)
{
    (void)state;
    user_limits *ul = make(1, 1.0, 1.0, 2);
    assert_true(ul_stream_acquire(ul, "a"));     /* a holds a stream */
    assert_int_equal(ul_take_request(ul, "b"), 0); /* b's bucket is empty */
    assert_int_equal(ul_take_request(ul, "b"), 1);

    /* full: a holds a stream, b an unfilled bucket; neither may be dropped */
    assert_false(ul_stream_acquire(ul, "c"));
    assert_int_equal(ul_streams(ul, "c"), 0);
    assert_int_equal(ul_take_request(ul, "b"), 1); /* b's state survived the attempt */

    /* once b's bucket is full again b holds nothing: c takes its place */
    advance(1.0);
    assert_true(ul_stream_acquire(ul, "c"));
    assert_int_equal(ul_streams(ul, "a"), 1); /* a, with its stream, stayed */
    assert_false(ul_stream_acquire(ul, "a"));

    /* the table is full of users with streams: a newcomer gets no stream, and no
     * bucket either (the documented fallback: not limited rather than refused) */
    assert_false(ul_stream_acquire(ul, "d"));
    assert_int_equal(ul_take_request(ul, "d"), 0);
    assert_int_equal(ul_take_request(ul, "d"), 0);

    /* a stream released makes its user evictable once the bucket is full */
    ul_stream_release(ul, "a");
    assert_true(ul_stream_acquire(ul, "d"));
    assert_int_equal(ul_streams(ul, "a"), 0);
    ul_free(ul);
}

/* Many users passing through: the table stays at its bound, and whoever holds
 * nothing makes room. */
static void test_many_users_bounded(void **state)
{
    (void)state;
    user_limits *ul = make(1, 10.0, 2.0, 64);
    char name[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof name, "user_%d", i);
        assert_int_equal(ul_take_request(ul, name), 0);
        advance(0.2); /* 2 tokens at 10/s: every bucket is full again */
    }
    /* 64 users each holding a stream fill the table */
    for (int i = 0; i < 64; i++) {
        snprintf(name, sizeof name, "streamer_%d", i);
        assert_true(ul_stream_acquire(ul, name));
    }
    assert_false(ul_stream_acquire(ul, "one_too_many"));
    ul_free(ul);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refused),
        cmocka_unit_test(test_refill_at_rate_up_to_burst),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_rate_zero_is_no_limit),
        cmocka_unit_test(test_streams_acquire_release),
        cmocka_unit_test(test_table_bound_and_eviction),
        cmocka_unit_test(test_many_users_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

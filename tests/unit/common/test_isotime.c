/* common/isotime: the RFC 3339 UTC times AWS writes (IMDS, SET_CREDENTIALS): the
 * forms it accepts and everything else refused with -1, never guessed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "common/isotime.h"

static void test_accepted_forms(void **state)
{
    (void)state;
    assert_int_equal(time_parse_iso8601("1970-01-01T00:00:10Z"), 10);
    assert_int_equal(time_parse_iso8601("2026-02-01T08:00:00Z"), 1769932800);
    assert_int_equal(time_parse_iso8601("2026-02-01T08:00:00.123Z"), 1769932800);
    assert_int_equal(time_parse_iso8601("2026-02-01T08:00:00.123456789Z"), 1769932800);
    assert_int_equal(time_parse_iso8601("2026-02-01T08:00:00+00:00"), 1769932800);
    assert_int_equal(time_parse_iso8601("2024-02-29T23:59:59Z"), 1709251199); /* leap day */
    assert_int_equal(time_parse_iso8601("2000-02-29T00:00:00Z"), 951782400);  /* 400-year leap day */
    assert_int_equal(time_parse_iso8601("2026-12-31T23:59:59Z"), 1798761599);
    assert_int_equal(time_parse_iso8601("2038-01-19T03:14:08Z"), (time_t)2147483648LL);
}

static void test_refused_forms(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-02-01 08:00:00Z",      /* space, not T */
        "2026-02-01T08:00:00+02:00", /* only UTC */
        "2026-02-01T08:00:00-00:00",
        "2026-02-01T08:00:00+0000",
        "2026-02-01T08:00:00",       /* no zone */
        "2026-02-01T08:00:00z",
        "2026-02-01T08:00:00Z ",     /* trailing bytes */
        "2026-02-01T08:00:00ZZ",
        "2026-02-01T08:00:00.Z",     /* a dot without digits */
        "2026-02-01T08:00:00.12aZ",
        "2026-2-01T08:00:00Z",       /* every field at its full width */
        "2026-02-1T08:00:00Z",
        "2026-02-01T8:00:00Z",
        "2026-02-01T08:0:00Z",
        "2026-02-01T08:00:0Z",
        "2026-13-01T08:00:00Z",      /* each field in range */
        "2026-00-01T08:00:00Z",
        "2026-02-00T08:00:00Z",
        "2026-02-32T08:00:00Z",
        "2026-02-29T08:00:00Z",      /* days that month has not (no rolling into March) */
        "2026-02-31T08:00:00Z",
        "2026-04-31T08:00:00Z",
        "1900-02-29T08:00:00Z",      /* not a leap year: divisible by 100 */
        "+026-02-01T08:00:00Z",      /* a sign or a space inside a field */
        "2026-+2-01T08:00:00Z",
        "2026-02- 1T08:00:00Z",
        "2026-02-01T08:00:00",
        "2026-02-01T24:00:00Z",
        "2026-02-01T08:60:00Z",
        "2026-02-01T08:00:61Z",
        "2026-02-01",
        "T08:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (time_parse_iso8601(bad[i]) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(time_parse_iso8601(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted_forms),
        cmocka_unit_test(test_refused_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

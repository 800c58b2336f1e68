/* enclave/selftest: RUN_TESTS runs the cross-platform vectors (spec §1.6) against
 * the enclave's crypto core: every one passes, the reply has the original's shape,
 * and the embedded vectors are the shared fixture's, in its order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "enclave/selftest.h"

static void check_results(const json_t *results, const json_t *fixture)
{
    assert_int_equal(json_array_size(results), json_array_size(fixture));
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r) {
        assert_int_equal(json_object_size(r), 2);
        assert_string_equal(json_string_value(json_object_get(r, "description")),
                            json_string_value(json_object_get(json_array_get(fixture, i), "description")));
        assert_true(json_is_true(json_object_get(r, "passed")));
    }
}

static void test_run_tests_reply(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *fx = json_load_file(VEIL_FIXTURES "/crypto_test_vectors.json", 0, &jerr);
    assert_non_null(fx);
    json_t *o = selftest_run();
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "success");
    assert_string_equal(json_string_value(json_object_get(o, "command")), "RUN_TESTS");
    json_t *res = json_object_get(o, "results");
    assert_int_equal(json_object_size(res), 2);
    check_results(json_object_get(res, "ecdh_tests"), json_object_get(fx, "ecdh_derivation"));
    check_results(json_object_get(res, "aes_gcm_tests"), json_object_get(fx, "aes_gcm"));

    json_t *want = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:b}", "ecdh_passed", 4, "ecdh_total", 4,
                             "aes_gcm_passed", 3, "aes_gcm_total", 3, "total_passed", 7, "total_tests", 7,
                             "all_passed", 1);
    assert_true(json_equal(json_object_get(o, "summary"), want));
    json_decref(want);
    json_decref(o);
    json_decref(fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_tests_reply),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

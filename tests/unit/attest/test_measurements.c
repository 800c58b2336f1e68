/* attest/measurements: nitro-cli measurements files, good and malformed, from
 * tests/fixtures/attestation/measurements/ (cases.txt says what each must give). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/measurements.h"
#include "common/hex.h"

#define DIR VEIL_FIXTURES "/attestation/measurements/"

/* Every fixture file parses or fails as cases.txt says, with that reason. */
static void test_fixture_cases(void **state)
{
    (void)state;
    FILE *f = fopen(DIR "cases.txt", "r");
    assert_non_null(f);
    char line[512];
    int n_ok = 0, n_bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        line[strcspn(line, "\n")] = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        *tab = '\0';
        const char *want = tab + 1;
        char path[600], err[256] = "";
        snprintf(path, sizeof path, DIR "%s", line);
        attest_pcr pcrs[ATTEST_MAX_PCRS];
        size_t n = 99;
        int rc = attest_measurements_load(path, pcrs, &n, err, sizeof err);
        if (strcmp(want, "OK") == 0) {
            if (rc != 0)
                fail_msg("%s: %s", line, err);
            assert_true(n >= 3);
            n_ok++;
        } else {
            if (rc != -1 || !strstr(err, want))
                fail_msg("%s: rc %d, \"%s\" (wanted \"%s\")", line, rc, err, want);
            assert_int_equal(n, 0);
            n_bad++;
        }
    }
    fclose(f);
    assert_int_equal(n_ok, 2);
    assert_true(n_bad >= 16);
}

/* The values: PCR0..2 of opensecret-sdk.cbor, in index order; upper-case hex and PCR8
 * from describe-eif. */
static void test_values(void **state)
{
    (void)state;
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n;
    char err[256], hex[97];
    assert_int_equal(attest_measurements_load(DIR "opensecret-sdk.json", pcrs, &n, err, sizeof err), 0);
    assert_int_equal(n, 3);
    const char *want[3] = {
        "dce041872408e890aafd7c0185cdfc4f6802c1073816c7e32f6d5b4784511da4aadf06e3f3fb3c26d3b036ac2d0726d0",
        "3b4a7e1b5f13c5a1000b3ed32ef8995ee13e9876329f9bc72650b918329ef9cf4e2e4d1e1e37375dab0ba56ba0974d03",
        "162e6b6aaf2c16ac824ed456b2ed65fef805b0741ffc8507d4ceaab99917413c0e2118fa3c9a1792b1d227ab19dd3d27",
    };
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(pcrs[i].index, i);
        assert_int_equal(pcrs[i].len, 48);
        hex_encode(pcrs[i].value, 48, hex);
        assert_string_equal(hex, want[i]);
    }
    assert_int_equal(attest_measurements_load(DIR "ok_describe_eif.json", pcrs, &n, err, sizeof err), 0);
    assert_int_equal(n, 4);
    hex_encode(pcrs[0].value, 48, hex);
    assert_string_equal(hex, want[0]);
    assert_int_equal(pcrs[3].index, 8);
}

static void test_limits_and_files(void **state)
{
    (void)state;
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n;
    char err[256];
    assert_int_equal(attest_measurements_load(DIR "no-such-file.json", pcrs, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot open"));
    /* over the size bound: refused before parsing */
    size_t big = ATTEST_MEASUREMENTS_MAX_FILE + 1;
    char *s = malloc(big);
    assert_non_null(s);
    memset(s, ' ', big);
    assert_int_equal(attest_measurements_parse(s, big, pcrs, &n, err, sizeof err), -1);
    assert_non_null(strstr(err, "over"));
    free(s);
    /* NUL bytes in the text are not JSON */
    assert_int_equal(attest_measurements_parse("{\"Measurements\"\0:{}}", 19, pcrs, &n, err, sizeof err),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_cases),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_limits_and_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* common/config: the .env loader (the environment wins) and typed variables with their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"

static void test_dotenv(void **state)
{
    (void)state;
    char path[] = "/tmp/veil-env-XXXXXX", err[128];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "# comment\n\nVEIL_T_A=plain\nexport VEIL_T_B = \"quoted value\"\n"
                       "VEIL_T_C='single # not a comment'\nVEIL_T_D=x # trailing\nVEIL_T_E=preset\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    setenv("VEIL_T_E", "from-env", 1);
    assert_int_equal(config_load_dotenv(path, err, sizeof err), 0);
    assert_string_equal(config_str("VEIL_T_A", NULL), "plain");
    assert_string_equal(config_str("VEIL_T_B", NULL), "quoted value");
    assert_string_equal(config_str("VEIL_T_C", NULL), "single # not a comment");
    assert_string_equal(config_str("VEIL_T_D", NULL), "x");
    assert_string_equal(config_str("VEIL_T_E", NULL), "from-env"); /* env wins */
    assert_string_equal(config_str("VEIL_T_UNSET", "def"), "def");

    long v;
    setenv("VEIL_T_N", "2700", 1);
    assert_int_equal(config_long("VEIL_T_N", 5, 1, 100000, &v, err, sizeof err), 0);
    assert_int_equal(v, 2700);
    setenv("VEIL_T_N", "27x", 1);
    assert_int_equal(config_long("VEIL_T_N", 5, 1, 100000, &v, err, sizeof err), -1);
    assert_non_null(strstr(err, "VEIL_T_N"));
    bool bv;
    setenv("VEIL_T_B2", "Yes", 1);
    assert_int_equal(config_bool("VEIL_T_B2", false, &bv, err, sizeof err), 0);
    assert_true(bv);
    setenv("VEIL_T_B2", "maybe", 1);
    assert_int_equal(config_bool("VEIL_T_B2", false, &bv, err, sizeof err), -1);

    /* malformed line */
    FILE *f = fopen(path, "w");
    fputs("GOOD=1\nthis line is wrong\n", f);
    fclose(f);
    assert_int_equal(config_load_dotenv(path, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    unlink(path);
    assert_int_equal(config_load_dotenv("/nonexistent/.env", err, sizeof err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dotenv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* enclave/history: the conversation checked and repaired before Bedrock sees it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "enclave/history.h"

static void test_history_alternation(void **state)
{
    (void)state;
    history h;
    history_init(&h);
    /* an odd history (user, assistant, user) plus the new user message: the two
     * user turns merge instead of making Bedrock reject the request */
    assert_int_equal(history_add(&h, ROLE_USER, "hi", 2), 0);
    assert_int_equal(history_add(&h, ROLE_ASSISTANT, "hello", 5), 0);
    assert_int_equal(history_add(&h, ROLE_USER, "one", 3), 0);
    assert_int_equal(history_add(&h, ROLE_USER, "two", 3), 0);
    assert_int_equal(h.n, 3);
    assert_null(history_check(&h));
    assert_string_equal(h.msgs[0].role, "user");
    assert_string_equal(h.msgs[1].role, "assistant");
    assert_string_equal(h.msgs[2].role, "user");
    assert_int_equal(h.msgs[2].len, strlen("one\n\ntwo"));
    assert_memory_equal(h.msgs[2].text, "one\n\ntwo", h.msgs[2].len);
    history_free(&h);

    history_init(&h);
    assert_int_equal(history_add(&h, ROLE_ASSISTANT, "greeting", 8), 0);
    assert_int_equal(history_add(&h, ROLE_USER, "q", 1), 0);
    assert_string_equal(history_check(&h), "history must start with a user message");
    history_free(&h);

    history_init(&h);
    assert_string_equal(history_check(&h), "no messages");
    assert_int_equal(history_add(&h, ROLE_USER, "q", 1), 0);
    assert_int_equal(history_add(&h, ROLE_ASSISTANT, "a", 1), 0);
    assert_string_equal(history_check(&h), "the last message must be from the user");
    history_free(&h);

    assert_int_equal(turn_role_parse("user"), ROLE_USER);
    assert_int_equal(turn_role_parse("assistant"), ROLE_ASSISTANT);
    assert_int_equal(turn_role_parse("system"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_history_alternation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

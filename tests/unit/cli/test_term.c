/* The CLI's terminal filter (src/cli/term.c): what a hostile server or model
 * could send to take over the user's terminal, and the text that must survive.
 * The CLI is a program, not a library, so its one pure module is compiled in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "cli/term.c"

typedef struct tcase {
    const char *what, *in, *want;
} tcase;

static const tcase CASES[] = {
    {"plain text", "hello, world", "hello, world"},
    {"newline and tab pass", "a\tb\nc\n", "a\tb\nc\n"},
    {"UTF-8 passes", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x92", "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x92"},
    {"CSI colour removed whole", "\x1b[31mred\x1b[0m", "red"},
    {"CSI cursor moves and erase", "a\x1b[2J\x1b[1;1H\x1b[Kb", "ab"},
    {"CSI with private marker", "\x1b[?1049hx", "x"},
    {"OSC title with BEL", "\x1b]0;owned\x07text", "text"},
    {"OSC 52 clipboard with ST", "\x1b]52;c;Y3VybCBldmlsfHNo\x1b\\after", "after"},
    {"OSC 8 hyperlink", "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", "click"},
    {"DCS", "\x1bPq#0;2;0;0;0\x1b\\ok", "ok"},
    {"APC, PM, SOS", "\x1b_x\x1b\\\x1b^y\x1b\\\x1bXz\x1b\\ok", "ok"},
    {"unterminated OSC hides only its line", "\x1b]0;title\nnext", "\nnext"},
    {"two-byte ESC sequences", "\x1b" "c\x1b" "7a\x1b" "8b\x1b=", "ab"},
    {"ESC with intermediates", "\x1b(0abc\x1b(B", "abc"},
    {"lone ESC at the end", "text\x1b", "text"},
    {"ESC ESC [", "\x1b\x1b[1mx", "x"},
    {"C0 controls dropped", "a\rb\bc\x07" "d\x01" "e\x0c" "f\x7f" "g", "abcdefg"},
    {"C1 CSI as UTF-8", "a\xC2\x9B" "31mb", "ab"},
    {"C1 OSC as UTF-8", "\xC2\x9D" "0;t\xC2\x9Cz", "z"},
    {"C1 NEL as UTF-8", "a\xC2\x85" "b", "ab"},
    {"raw 8-bit CSI", "a\x9b" "31mb", "a31mb"},
    {"raw 0x80-0x9F dropped", "x\x80\x85\x9b\x9fy", "xy"},
    {"overlong ESC", "a\xC0\x9b[1mb", "a\xEF\xBF\xBD[1mb"},
    {"invalid lead bytes", "a\xFF\xC1z", "a\xEF\xBF\xBD\xEF\xBF\xBDz"},
    {"surrogate", "a\xED\xA0\x80z", "a\xEF\xBF\xBD\xEF\xBF\xBDz"},
    {"above U+10FFFF", "a\xF4\x90\x80\x80z", "a\xEF\xBF\xBDz"},
    {"truncated character then ESC", "a\xE2\x82\x1b[0mb", "a\xEF\xBF\xBD" "b"},
    {"truncated at the end", "a\xE2\x82", "a\xEF\xBF\xBD"},
    {"malformed CSI falls back to text", "\x1b[12\n3", "\n3"},
};

static char *filter_all(const char *in)
{
    char *s = term_safe(in, strlen(in));
    assert_non_null(s);
    return s;
}

static void test_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char *got = filter_all(CASES[i].in);
        if (strcmp(got, CASES[i].want) != 0)
            fail_msg("%s: got \"%s\"", CASES[i].what, got);
        free(got);
    }
}

/* A streamed answer arrives in chunks cut anywhere: every split point of every
 * case gives the same output as the whole text. */
static void test_every_split(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        const char *in = CASES[i].in;
        size_t n = strlen(in);
        for (size_t cut = 0; cut <= n; cut++) {
            term_filter f;
            vbuf out = VBUF_INIT;
            term_filter_init(&f);
            assert_int_equal(term_filter_feed(&f, in, cut, &out), 0);
            assert_int_equal(term_filter_feed(&f, in + cut, n - cut, &out), 0);
            assert_int_equal(term_filter_finish(&f, &out), 0);
            const char *got = vbuf_cstr(&out);
            if (strcmp(got ? got : "", CASES[i].want) != 0)
                fail_msg("%s split at %zu: got \"%s\"", CASES[i].what, cut, got ? got : "");
            vbuf_free(&out);
        }
    }
}

/* Whatever comes in, no byte that starts a sequence or moves the cursor comes out,
 * and the output is valid UTF-8. */
static void test_random_input(void **state)
{
    (void)state;
    srand(7);
    uint8_t in[512];
    for (int round = 0; round < 2000; round++) {
        for (size_t i = 0; i < sizeof in; i++)
            in[i] = (uint8_t)(rand() % 4 ? rand() : "\x1b\x9b\x9d\xc2\x07[]\\"[rand() % 8]);
        char *s = term_safe(in, sizeof in);
        assert_non_null(s);
        for (const uint8_t *p = (const uint8_t *)s; *p; p++) {
            assert_true(*p >= 0x20 || *p == '\n' || *p == '\t');
            assert_true(*p != 0x7F);
            if (*p == 0xC2)
                assert_false(p[1] >= 0x80 && p[1] <= 0x9F); /* no C1 */
        }
        json_t *j = json_string(s); /* jansson refuses invalid UTF-8 */
        assert_non_null(j);
        json_decref(j);
        free(s);
    }
}

static void test_fprintf(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(term_fprintf(f, "name: %s\n", "\x1b]0;x\x07ok\x1b[2K"), 0);
    fclose(f);
    assert_string_equal(buf, "name: ok\n");
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_random_input),
        cmocka_unit_test(test_fprintf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* common/log: one event, one line, and every %s value escaped so that no value can
 * end the line or forge a field (issue F0); other conversions exactly as printf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "common/log.h"

/* ---- capturing lines ---- */

static int g_pipe[2];
static char g_line[8192];

static void capture_begin(void)
{
    assert_int_equal(pipe(g_pipe), 0);
    log_init("veil-test");
    log_set_level(LOG_DEBUG);
    log_set_fd(g_pipe[1]);
}

/* Everything written since capture_begin, NUL-terminated, in g_line. */
static const char *capture_end(void)
{
    log_set_fd(2);
    close(g_pipe[1]);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof g_line - 1 && (r = read(g_pipe[0], g_line + n, sizeof g_line - 1 - n)) > 0)
        n += (size_t)r;
    close(g_pipe[0]);
    g_line[n] = '\0';
    return g_line;
}

/* The fields of a line logged with no request id: what follows "rid=- ", without
 * the newline. Asserts it is exactly one line. */
static const char *fields(const char *line)
{
    const char *nl = strchr(line, '\n');
    assert_non_null(nl);
    assert_int_equal(nl[1], '\0');
    const char *f = strstr(line, " rid=- ");
    assert_non_null(f);
    g_line[nl - g_line] = '\0';
    return f + 7;
}

/* ---- a logfmt reader: what a log pipeline would make of the line ---- */

#define MAX_FIELDS 16

typedef struct field {
    char key[64];
    char val[4096];
    size_t val_len;
    bool quoted;
} field;

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

/* Splits a line into key=value fields; values may be quoted with \" \\ \n \r \t \xNN.
 * Returns the number of fields, or -1 if the line is not well formed. */
static int parse_logfmt(const char *s, field *out, int max)
{
    int n = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s)
            break;
        if (n == max)
            return -1;
        field *f = &out[n++];
        memset(f, 0, sizeof *f);
        size_t k = 0;
        while (*s && *s != '=' && *s != ' ' && *s != '"' && k < sizeof f->key - 1)
            f->key[k++] = *s++;
        if (*s++ != '=' || k == 0)
            return -1;
        if (*s != '"') {
            while (*s && *s != ' ') {
                if (*s == '=' || *s == '"' || *s == '\\' || f->val_len >= sizeof f->val)
                    return -1;
                f->val[f->val_len++] = *s++;
            }
            continue;
        }
        f->quoted = true;
        s++;
        for (;;) {
            if (!*s || f->val_len >= sizeof f->val)
                return -1; /* an unterminated quote */
            char c = *s++;
            if (c == '"')
                break;
            if (c != '\\') {
                f->val[f->val_len++] = c;
                continue;
            }
            c = *s++;
            switch (c) {
            case '"': case '\\': f->val[f->val_len++] = c; break;
            case 'n': f->val[f->val_len++] = '\n'; break;
            case 'r': f->val[f->val_len++] = '\r'; break;
            case 't': f->val[f->val_len++] = '\t'; break;
            case 'x': {
                int hi = hexval(s[0]), lo = hi < 0 ? -1 : hexval(s[1]);
                if (lo < 0)
                    return -1;
                f->val[f->val_len++] = (char)(hi << 4 | lo);
                s += 2;
                break;
            }
            default:
                return -1;
            }
        }
        if (*s && *s != ' ')
            return -1;
    }
    return n;
}

static const field *find(const field *f, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(f[i].key, key) == 0)
            return &f[i];
    return NULL;
}

/* ---- tests ---- */

static void test_prefix_level_rid(void **state)
{
    (void)state;
    char rid[LOG_RID_LEN + 1];
    log_new_rid(rid);
    assert_int_equal(strlen(rid), LOG_RID_LEN);
    capture_begin();
    log_set_level(LOG_INFO);
    log_debug(rid, "event=hidden");
    log_info(rid, "event=shown n=%d", 7);
    const char *line = capture_end();
    assert_null(strstr(line, "hidden"));
    assert_non_null(strstr(line, " level=info prog=veil-test rid="));
    assert_non_null(strstr(line, rid));
    assert_non_null(strstr(line, " event=shown n=7\n"));
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1);
    log_level lv;
    assert_int_equal(log_level_parse("WARN", &lv), 0);
    assert_int_equal(lv, LOG_WARN);
    assert_int_equal(log_level_parse("verbose", &lv), -1);
}

/* The attack of issue F0: a signed webhook whose type holds a newline and a forged
 * event. The logger replaced the newline by a space, which still produced a line
 * with `event=admin_login user=root` as fields of their own. */
static void test_newline_cannot_forge_a_field(void **state)
{
    (void)state;
    static const char TYPE[] = "x\nevent=admin_login user=root";
    capture_begin();
    log_info(NULL, "event=webhook type=%s result=%s", TYPE, "ignored");
    const char *f = fields(capture_end());
    assert_string_equal(f, "event=webhook type=\"x\\nevent=admin_login user=root\" result=ignored");
    field fs[MAX_FIELDS];
    int n = parse_logfmt(f, fs, MAX_FIELDS);
    assert_int_equal(n, 3);
    assert_string_equal(fs[0].key, "event");
    assert_string_equal(fs[0].val, "webhook");
    assert_string_equal(fs[1].key, "type");
    assert_memory_equal(fs[1].val, TYPE, sizeof TYPE);
    assert_string_equal(fs[2].key, "result");
    assert_null(find(fs, n, "user"));
    assert_null(strstr(f, " event=admin_login"));

    /* the same with a CR, and inside a value the format quotes itself */
    capture_begin();
    log_info(NULL, "event=store_error detail=\"%s\"", "boom\r\nts=0 level=error event=admin_login");
    f = fields(capture_end());
    n = parse_logfmt(f, fs, MAX_FIELDS);
    assert_int_equal(n, 2);
    assert_string_equal(fs[1].key, "detail");
    assert_string_equal(fs[1].val, "boom\r\nts=0 level=error event=admin_login");
}

static void test_quotes_backslashes_controls(void **state)
{
    (void)state;
    capture_begin();
    log_info(NULL, "a=%s b=%s c=%s d=%s e=%s", "say \"hi\"", "back\\slash", "k=v", "tab\there",
             "\x01\x1f\x7f\xff");
    const char *f = fields(capture_end());
    assert_string_equal(f, "a=\"say \\\"hi\\\"\" b=\"back\\\\slash\" c=\"k=v\" d=\"tab\\there\" "
                           "e=\"\\x01\\x1f\\x7f\\xff\"");
    field fs[MAX_FIELDS];
    assert_int_equal(parse_logfmt(f, fs, MAX_FIELDS), 5);
    assert_string_equal(fs[0].val, "say \"hi\"");
    assert_string_equal(fs[1].val, "back\\slash");
    assert_string_equal(fs[4].val, "\x01\x1f\x7f\xff");

    /* every byte value comes back out of the line unchanged */
    char every[256];
    for (int i = 1; i < 256; i++)
        every[i - 1] = (char)i;
    every[255] = '\0';
    capture_begin();
    log_info(NULL, "all=%s end=1", every);
    f = fields(capture_end());
    for (const char *q = f; *q; q++)
        assert_true(*q >= 0x20 && *q < 0x7f);
    assert_int_equal(parse_logfmt(f, fs, MAX_FIELDS), 2);
    assert_int_equal(fs[0].val_len, 255);
    assert_memory_equal(fs[0].val, every, 255);

    /* a plain value is written as it is, an empty one too */
    capture_begin();
    log_info(NULL, "host=%s port=%u path=%s empty=%s", "bedrock-runtime.us-east-1.amazonaws.com",
             443u, "/api/v1/chat/stream", "");
    f = fields(capture_end());
    assert_string_equal(f, "host=bedrock-runtime.us-east-1.amazonaws.com port=443 "
                           "path=/api/v1/chat/stream empty=");
}

/* `detail=\"%s\"` (many call sites): the format's quotes are the value's quotes */
static void test_format_quotes_not_doubled(void **state)
{
    (void)state;
    capture_begin();
    log_info(NULL, "event=x detail=\"%s\" op=%s err=\"%s\"", "no such table: \"users\"", "put",
             "plain");
    const char *f = fields(capture_end());
    assert_string_equal(f, "event=x detail=\"no such table: \\\"users\\\"\" op=put err=\"plain\"");
    field fs[MAX_FIELDS];
    assert_int_equal(parse_logfmt(f, fs, MAX_FIELDS), 4);
    assert_string_equal(fs[1].val, "no such table: \"users\"");
    /* a quote on one side only is not the format's quoting */
    capture_begin();
    log_info(NULL, "a=\"%s b=%s\"", "x y", "z");
    f = fields(capture_end());
    assert_string_equal(f, "a=\"\"x y\" b=z\"");
}

/* Every non-%s conversion of the tree's call sites, with flags, widths and
 * precisions, exactly as snprintf formats it. */
#define SAME_AS_PRINTF(...)                                                              \
    do {                                                                                 \
        char want_[1024];                                                                \
        snprintf(want_, sizeof want_, __VA_ARGS__);                                      \
        capture_begin();                                                                 \
        log_info(NULL, __VA_ARGS__);                                                     \
        assert_string_equal(fields(capture_end()), want_);                              \
    } while (0)

static void test_numbers_as_printf(void **state)
{
    (void)state;
    int x = 42;
    SAME_AS_PRINTF("d=%d neg=%d w=%5d l=%-5d| z=%05d plus=%+d sp=% d", -7, -2147483647 - 1, 42,
                   42, 42, 42, 42);
    SAME_AS_PRINTF("ld=%ld lld=%lld u=%u lu=%lu llu=%llu", -1234567890123L, -9223372036854775807LL,
                   4294967295u, 18446744073709551615UL, 18446744073709551615ULL);
    SAME_AS_PRINTF("zu=%zu zd=%zd x=%x X=%X alt=%#x pad=%08x o=%o", (size_t)123456789,
                   (ssize_t)-5, 0xbeefu, 0xbeefu, 255u, 0xabu, 8u);
    SAME_AS_PRINTF("hh=%hhu h=%hd j=%jd t=%td", (unsigned char)250, (short)-300, (intmax_t)-9,
                   (ptrdiff_t)-3);
    SAME_AS_PRINTF("p=%p c=%c f=%f g=%.3g e=%10.2e pct=%% ms=%.1f", (void *)&x, 'Q', 3.25, 0.000123456,
                   12345.678, 2.0 / 3.0);
    SAME_AS_PRINTF("star=%*d left=%-*d| prec=%.*d", 6, 7, 4, 3, 5, 9);
    /* %s with a width or a precision: printf's bytes, then escaped only if needed */
    SAME_AS_PRINTF("s=%.3s t=%.*s", "abcdef", 2, "xyz");
    capture_begin();
    log_info(NULL, "w=%6s l=%-4s|", "ab", "c");
    assert_string_equal(fields(capture_end()), "w=\"    ab\" l=\"c   \"|");
}

/* A control byte that is not in a %s value (here a %c) still never reaches the line. */
static void test_safety_pass(void **state)
{
    (void)state;
    capture_begin();
    log_info(NULL, "c=%c d=%c", '\n', '\x1b');
    assert_string_equal(fields(capture_end()), "c=? d=?");
}

/* A conversion the logger does not format (a wide string): the line stops there and
 * says so, rather than reading the arguments after it with the wrong types. */
static void test_unsupported_conversion(void **state)
{
    (void)state;
    capture_begin();
    log_info(NULL, "a=%d w=%ls b=%d", 1, L"wide", 2);
    assert_string_equal(fields(capture_end()), "a=1 w= log_format_error=1");
}

static void test_long_values_truncated_cleanly(void **state)
{
    (void)state;
    /* 4 KB with something to escape every few bytes */
    static char big[4097];
    for (size_t i = 0; i < sizeof big - 1; i++)
        big[i] = "ab\"c\\d\ne\x01"[i % 9];
    big[sizeof big - 1] = '\0';
    field fs[MAX_FIELDS];

    /* one value is capped at LOG_VALUE_MAX: the fields after it survive */
    for (int quoted_by_format = 0; quoted_by_format < 2; quoted_by_format++) {
        capture_begin();
        if (quoted_by_format)
            log_info(NULL, "event=big detail=\"%s\" status=%d", big, 500);
        else
            log_info(NULL, "event=big detail=%s status=%d", big, 500);
        const char *line = capture_end();
        assert_true(strlen(line) <= LOG_LINE_MAX);
        const char *f = fields(line);
        int n = parse_logfmt(f, fs, MAX_FIELDS);
        assert_int_equal(n, 3);
        assert_string_equal(fs[1].key, "detail");
        assert_true(fs[1].quoted);
        assert_true(fs[1].val_len > 100);
        /* a clean prefix of the value, then the mark */
        assert_true(fs[1].val_len > 3);
        assert_memory_equal(fs[1].val + fs[1].val_len - 3, "...", 3);
        assert_memory_equal(fs[1].val, big, fs[1].val_len - 3);
        const char *d = strstr(f, "detail=");
        const char *st = strstr(f, "\" status=500");
        assert_non_null(st);
        /* the format's own quotes are not part of the value's budget */
        assert_true((size_t)(st + 1 - (d + 7)) <= LOG_VALUE_MAX + (quoted_by_format ? 2u : 0u));
        assert_string_equal(fs[2].key, "status");
        assert_string_equal(fs[2].val, "500");
    }

    /* three of them: the line is capped at LOG_LINE_MAX, and it still parses: every
     * quote is closed, no escape is cut in half */
    capture_begin();
    log_info(NULL, "a=%s b=\"%s\" c=%s d=%d", big, big, big, 1);
    const char *line = capture_end();
    assert_true(strlen(line) <= LOG_LINE_MAX);
    assert_true(strlen(line) > LOG_LINE_MAX - 16);
    const char *f = fields(line);
    int n = parse_logfmt(f, fs, MAX_FIELDS);
    assert_true(n >= 2);
    for (int i = 0; i < n; i++) {
        assert_true(fs[i].val_len >= 3);
        assert_memory_equal(fs[i].val + fs[i].val_len - 3, "...", 3);
        assert_memory_equal(fs[i].val, big, fs[i].val_len - 3);
    }

    /* a plain 4 KB value (nothing to quote) is cut too, without quotes */
    static char plain[4097];
    memset(plain, 'a', sizeof plain - 1);
    capture_begin();
    log_info(NULL, "v=%s end=%d", plain, 1);
    f = fields(capture_end());
    n = parse_logfmt(f, fs, MAX_FIELDS);
    assert_int_equal(n, 2);
    assert_false(fs[0].quoted);
    assert_int_equal(fs[0].val_len, LOG_VALUE_MAX);
    assert_memory_equal(fs[0].val + LOG_VALUE_MAX - 3, "...", 3);
}

static void *log_as_worker_one(void *arg)
{
    (void)arg;
    log_set_worker(1);
    log_info(NULL, "event=from_worker");
    return NULL;
}

/* A worker's lines name it; the index is the calling thread's, so another thread's
 * lines (here the test's own) carry none. */
static void test_worker_index_per_thread(void **state)
{
    (void)state;
    capture_begin();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, log_as_worker_one, NULL), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    log_info(NULL, "event=from_main");
    const char *out = capture_end();
    assert_non_null(strstr(out, " prog=veil-test worker=1 rid=- event=from_worker\n"));
    assert_non_null(strstr(out, " prog=veil-test rid=- event=from_main\n"));
    log_set_worker(0);
    capture_begin();
    log_info(NULL, "event=w0");
    log_set_worker(-1);
    log_info(NULL, "event=none");
    out = capture_end();
    assert_non_null(strstr(out, " worker=0 rid=- event=w0\n"));
    assert_non_null(strstr(out, " prog=veil-test rid=- event=none\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_level_rid),
        cmocka_unit_test(test_newline_cannot_forge_a_field),
        cmocka_unit_test(test_quotes_backslashes_controls),
        cmocka_unit_test(test_format_quotes_not_doubled),
        cmocka_unit_test(test_numbers_as_printf),
        cmocka_unit_test(test_safety_pass),
        cmocka_unit_test(test_unsupported_conversion),
        cmocka_unit_test(test_long_values_truncated_cleanly),
        cmocka_unit_test(test_worker_index_per_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

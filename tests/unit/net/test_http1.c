/* Unit tests for net/http1: response/request/CONNECT heads and the chunked decoder.
 * Stays whole: tests mirror the tree, one file per module under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/http1.h"
#include "common/buf.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

typedef struct err_case {
    const char *in;
    int want;
} err_case;

static bool span_is(const char *p, size_t n, const char *lit)
{
    return p && strlen(lit) == n && memcmp(p, lit, n) == 0;
}

#define assert_span(p, n, lit)                                                                     \
    do {                                                                                           \
        if (!span_is((p), (n), (lit)))                                                             \
            fail_msg("expected \"%s\", got \"%.*s\"", (lit), (int)(n), (p) ? (p) : "(null)");     \
    } while (0)

/* ---------------------------------------------------------------- responses */

static void test_response_200_content_length(void **state)
{
    (void)state;
    const char msg[] = "HTTP/1.1 200 OK\r\n"
                       "Content-Type:   application/json  \r\n"
                       "x-amzn-RequestId: abc-123\r\n"
                       "Content-Length: 2\r\n"
                       "\r\n"
                       "{}";
    http1_response r;
    int n = http1_parse_response(msg, sizeof msg - 1, &r);
    assert_int_equal(n, (int)(sizeof msg - 1 - 2));
    assert_memory_equal(msg + n, "{}", 2);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.minor_version, 1);
    assert_span(r.reason, r.reason_len, "OK");
    assert_int_equal(r.headers.n, 3);
    assert_int_equal(r.body, HTTP1_BODY_CONTENT_LENGTH);
    assert_int_equal(r.content_length, 2);

    size_t vlen = 0;
    const char *v = http1_header_get(&r.headers, "content-type", &vlen);
    assert_span(v, vlen, "application/json"); /* OWS trimmed both sides */
    v = http1_header_get(&r.headers, "X-AMZN-REQUESTID", &vlen);
    assert_span(v, vlen, "abc-123");
    assert_null(http1_header_get(&r.headers, "content-typ", NULL));
    assert_null(http1_header_get(&r.headers, "transfer-encoding", NULL));
    /* outputs point into the input buffer */
    assert_true(v >= msg && v < msg + sizeof msg);
}

static void test_response_chunked(void **state)
{
    (void)state;
    const char msg[] = "HTTP/1.1 200 OK\r\n"
                       "Transfer-Encoding: Chunked\r\n"
                       "Content-Type: application/vnd.amazon.eventstream\r\n"
                       "\r\n"
                       "3\r\nabc\r\n0\r\n\r\n";
    http1_response r;
    int n = http1_parse_response(msg, sizeof msg - 1, &r);
    assert_true(n > 0);
    assert_int_equal(r.body, HTTP1_BODY_CHUNKED);

    http1_chunked dec;
    vbuf out = VBUF_INIT;
    http1_chunked_init(&dec);
    ptrdiff_t used = http1_chunked_feed_vbuf(&dec, msg + n, sizeof msg - 1 - (size_t)n, &out);
    assert_int_equal(used, (ptrdiff_t)(sizeof msg - 1 - (size_t)n));
    assert_true(http1_chunked_done(&dec));
    assert_int_equal(out.len, 3);
    assert_memory_equal(out.data, "abc", 3);
    vbuf_free(&out);
}

static void test_response_close_delimited(void **state)
{
    (void)state;
    const char msg[] = "HTTP/1.0 200 Fine\r\nServer: x\r\n\r\nbody until close";
    http1_response r;
    int n = http1_parse_response(msg, sizeof msg - 1, &r);
    assert_int_equal(n, (int)strlen("HTTP/1.0 200 Fine\r\nServer: x\r\n\r\n"));
    assert_int_equal(r.minor_version, 0);
    assert_int_equal(r.body, HTTP1_BODY_UNTIL_CLOSE);
}

static void test_response_403_with_body(void **state)
{
    (void)state;
    const char msg[] = "HTTP/1.1 403 Forbidden\r\n"
                       "content-length: 26\r\n"
                       "x-amzn-errortype: AccessDeniedException\r\n"
                       "\r\n"
                       "{\"message\":\"not allowed\"}\n";
    http1_response r;
    int n = http1_parse_response(msg, sizeof msg - 1, &r);
    assert_true(n > 0);
    assert_int_equal(r.status, 403);
    assert_span(r.reason, r.reason_len, "Forbidden");
    assert_int_equal(r.body, HTTP1_BODY_CONTENT_LENGTH);
    assert_int_equal(r.content_length, 26);
    assert_int_equal(sizeof msg - 1 - (size_t)n, 26);
}

static void test_response_status_is_parsed_not_searched(void **state)
{
    (void)state;
    /* the original tested the status line for the substring "200" (defect §10.5) */
    const char msg[] = "HTTP/1.1 500 Error 200\r\nContent-Length: 0\r\n\r\n";
    http1_response r;
    assert_true(http1_parse_response(msg, sizeof msg - 1, &r) > 0);
    assert_int_equal(r.status, 500);
    assert_span(r.reason, r.reason_len, "Error 200");

    const char empty_reason[] = "HTTP/1.1 200 \r\n\r\n";
    assert_true(http1_parse_response(empty_reason, sizeof empty_reason - 1, &r) > 0);
    assert_int_equal(r.reason_len, 0);
}

static void test_response_no_body_statuses(void **state)
{
    (void)state;
    const struct {
        const char *in;
        int status;
    } cases[] = {
        {"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n", 204},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n", 304},
        {"HTTP/1.1 100 Continue\r\n\r\n", 100},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        http1_response r;
        assert_int_equal(http1_parse_response(cases[i].in, strlen(cases[i].in), &r),
                         (int)strlen(cases[i].in));
        assert_int_equal(r.status, cases[i].status);
        assert_int_equal(r.body, HTTP1_BODY_NONE);
        assert_int_equal(r.content_length, 0);
    }
}

static void test_response_need_more_at_every_prefix(void **state)
{
    (void)state;
    const char *heads[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nA: b\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 403 Forbidden\r\n\r\n",
    };
    for (size_t k = 0; k < ARRAY_LEN(heads); k++) {
        size_t len = strlen(heads[k]);
        http1_response r;
        for (size_t i = 0; i < len; i++) {
            int rc = http1_parse_response(heads[k], i, &r);
            if (rc != HTTP1_NEED_MORE)
                fail_msg("head %zu prefix %zu: %d (%s)", k, i, rc, http1_strerror(rc));
        }
        assert_int_equal(http1_parse_response(heads[k], len, &r), (int)len);
    }
    http1_response r;
    assert_int_equal(http1_parse_response(NULL, 0, &r), HTTP1_NEED_MORE);
    assert_int_equal(http1_parse_response("x", 1, NULL), HTTP1_ERR_INVALID_ARG);
}

static void check_response_errors(const err_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        http1_response r;
        int rc = http1_parse_response(cases[i].in, strlen(cases[i].in), &r);
        if (rc != cases[i].want)
            fail_msg("case %zu \"%s\": got %d (%s), want %d (%s)", i, cases[i].in, rc,
                     http1_strerror(rc), cases[i].want, http1_strerror(cases[i].want));
    }
}

static void test_response_errors(void **state)
{
    (void)state;
    static const err_case cases[] = {
        {"HTTP/1.1 20 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 2000 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 200OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 200\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 2x0 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 099 Low\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 600 High\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1  200 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 200 O\x01K\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"ICY 200 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"http/1.1 200 OK\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"\r\n\r\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/1.1 200 OK\n\n", HTTP1_ERR_BAD_STATUS_LINE},
        {"HTTP/2.0 200 OK\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"HTTP/2 200 OK\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"HTTP/1.10 200 OK\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"HTTP/1.x 200 OK\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"HTTP/1.1 200 OK\r\nA: b\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA: b\r\n\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nName : x\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\n: empty-name\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA: b\x7f\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA(b: c\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", HTTP1_ERR_OBS_FOLD},
        {"HTTP/1.1 200 OK\r\nA: b\r\n\tc\r\n\r\n", HTTP1_ERR_OBS_FOLD},
        {"HTTP/1.1 200 OK\r\n A: b\r\n\r\n", HTTP1_ERR_OBS_FOLD},
        {"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 1234567890123456789\r\n\r\n",
         HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n",
         HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
         HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
         HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
         HTTP1_ERR_BAD_FRAMING},
    };
    check_response_errors(cases, ARRAY_LEN(cases));
}

static void test_response_framing_accepted(void **state)
{
    (void)state;
    http1_response r;
    const char agree[] = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 007\r\n\r\n";
    assert_true(http1_parse_response(agree, sizeof agree - 1, &r) > 0);
    assert_int_equal(r.content_length, 7);
    const char list[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: , CHUNKED ,\r\n\r\n";
    assert_true(http1_parse_response(list, sizeof list - 1, &r) > 0);
    assert_int_equal(r.body, HTTP1_BODY_CHUNKED);
    const char big[] = "HTTP/1.1 200 OK\r\nContent-Length: 123456789012345678\r\n\r\n";
    assert_true(http1_parse_response(big, sizeof big - 1, &r) > 0);
    assert_int_equal(r.content_length, 123456789012345678ULL);
}

/* A response head of exactly `size` bytes, padded in one header. */
static char *make_head(const char *start_line, size_t size)
{
    const char *pad_name = "X-Pad: ";
    size_t fixed = strlen(start_line) + strlen(pad_name) + 2 + 2;
    assert_true(size > fixed);
    char *h = malloc(size + 1);
    assert_non_null(h);
    size_t o = 0;
    memcpy(h + o, start_line, strlen(start_line));
    o += strlen(start_line);
    memcpy(h + o, pad_name, strlen(pad_name));
    o += strlen(pad_name);
    memset(h + o, 'a', size - fixed);
    o += size - fixed;
    memcpy(h + o, "\r\n\r\n", 4);
    o += 4;
    h[o] = '\0';
    assert_int_equal(o, size);
    return h;
}

static void test_response_head_limit(void **state)
{
    (void)state;
    http1_response r;
    char *h = make_head("HTTP/1.1 200 OK\r\n", HTTP1_MAX_HEAD_SIZE);
    assert_int_equal(http1_parse_response(h, HTTP1_MAX_HEAD_SIZE, &r), HTTP1_MAX_HEAD_SIZE);
    free(h);
    h = make_head("HTTP/1.1 200 OK\r\n", HTTP1_MAX_HEAD_SIZE + 1);
    assert_int_equal(http1_parse_response(h, HTTP1_MAX_HEAD_SIZE + 1, &r),
                     HTTP1_ERR_HEAD_TOO_LARGE);
    /* no terminator yet, and none can arrive within the limit */
    assert_int_equal(http1_parse_response(h, HTTP1_MAX_HEAD_SIZE, &r), HTTP1_ERR_HEAD_TOO_LARGE);
    assert_int_equal(http1_parse_response(h, HTTP1_MAX_HEAD_SIZE - 1, &r), HTTP1_NEED_MORE);
    free(h);
}

static void test_response_header_count_limit(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    http1_response r;
    assert_int_equal(vbuf_append_str(&b, "HTTP/1.1 200 OK\r\n"), 0);
    for (int i = 0; i < HTTP1_MAX_HEADERS; i++)
        assert_int_equal(vbuf_printf(&b, "H%d: v\r\n", i), 0);
    size_t at_limit = b.len;
    assert_int_equal(vbuf_append_str(&b, "\r\n"), 0);
    assert_int_equal(http1_parse_response(b.data, b.len, &r), (int)b.len);
    assert_int_equal(r.headers.n, HTTP1_MAX_HEADERS);
    b.len = at_limit;
    assert_int_equal(vbuf_append_str(&b, "One-Too-Many: v\r\n\r\n"), 0);
    assert_int_equal(http1_parse_response(b.data, b.len, &r), HTTP1_ERR_TOO_MANY_HEADERS);
    vbuf_free(&b);
}

/* ---------------------------------------------------------------- chunked */

typedef struct sink {
    vbuf out;
    int calls;
    int fail_after; /* callback fails on this call number, 0 = never */
} sink;

static int sink_cb(void *ctx, const uint8_t *data, size_t len)
{
    sink *s = ctx;
    s->calls++;
    if (s->fail_after && s->calls >= s->fail_after)
        return -1;
    return vbuf_append(&s->out, data, len);
}

static const char chunked_body[] = "5;name=value\r\n"
                                   "hello\r\n"
                                   "6 ; ext=\"q;uoted\" ;flag\r\n"
                                   " world\r\n"
                                   "01\r\n"
                                   "!\r\n"
                                   "0;last=1\r\n"
                                   "X-Trailer: yes\r\n"
                                   "X-Checksum:   abc  \r\n"
                                   "\r\n";
#define CHUNKED_TEXT "hello world!"

static void test_chunked_whole(void **state)
{
    (void)state;
    http1_chunked dec;
    sink s = {VBUF_INIT, 0, 0};
    http1_chunked_init(&dec);
    assert_false(http1_chunked_done(&dec));
    /* bytes of the next message after the body are not consumed */
    const char with_next[] = "3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
    ptrdiff_t n = http1_chunked_feed(&dec, with_next, sizeof with_next - 1, sink_cb, &s);
    assert_int_equal(n, (ptrdiff_t)strlen("3\r\nabc\r\n0\r\n\r\n"));
    assert_true(http1_chunked_done(&dec));
    assert_int_equal(http1_chunked_feed(&dec, "x", 1, sink_cb, &s), 0);
    assert_int_equal(s.out.len, 3);
    vbuf_free(&s.out);
}

static void test_chunked_every_split(void **state)
{
    (void)state;
    const size_t len = sizeof chunked_body - 1;
    for (size_t split = 0; split <= len; split++) {
        http1_chunked dec;
        vbuf out = VBUF_INIT;
        http1_chunked_init(&dec);
        assert_int_equal(http1_chunked_feed_vbuf(&dec, chunked_body, split, &out),
                         (ptrdiff_t)split);
        assert_int_equal(http1_chunked_done(&dec), split == len);
        assert_int_equal(http1_chunked_feed_vbuf(&dec, chunked_body + split, len - split, &out),
                         (ptrdiff_t)(len - split));
        assert_true(http1_chunked_done(&dec));
        assert_int_equal(out.len, strlen(CHUNKED_TEXT));
        assert_memory_equal(out.data, CHUNKED_TEXT, out.len);
        vbuf_free(&out);
    }
}

static void test_chunked_byte_at_a_time(void **state)
{
    (void)state;
    const size_t len = sizeof chunked_body - 1;
    http1_chunked dec;
    vbuf out = VBUF_INIT;
    http1_chunked_init(&dec);
    for (size_t i = 0; i < len; i++) {
        assert_false(http1_chunked_done(&dec)); /* every proper prefix is truncated */
        assert_int_equal(http1_chunked_feed_vbuf(&dec, chunked_body + i, 1, &out), 1);
    }
    assert_true(http1_chunked_done(&dec));
    assert_int_equal(out.len, strlen(CHUNKED_TEXT));
    assert_memory_equal(out.data, CHUNKED_TEXT, out.len);
    vbuf_free(&out);
}

static void test_chunked_data_streams_before_chunk_ends(void **state)
{
    (void)state;
    http1_chunked dec;
    sink s = {VBUF_INIT, 0, 0};
    http1_chunked_init(&dec);
    const char part1[] = "a\r\nhel";
    assert_int_equal(http1_chunked_feed(&dec, part1, sizeof part1 - 1, sink_cb, &s),
                     (ptrdiff_t)(sizeof part1 - 1));
    assert_int_equal(s.out.len, 3); /* delivered without waiting for the 10-byte chunk */
    assert_memory_equal(s.out.data, "hel", 3);
    const char part2[] = "lo worl";
    assert_int_equal(http1_chunked_feed(&dec, part2, sizeof part2 - 1, sink_cb, &s),
                     (ptrdiff_t)(sizeof part2 - 1));
    assert_int_equal(s.out.len, 10);
    assert_false(http1_chunked_done(&dec));
    vbuf_free(&s.out);
}

static void test_chunked_truncated_not_done(void **state)
{
    (void)state;
    const size_t len = sizeof chunked_body - 1;
    for (size_t cut = 0; cut < len; cut++) {
        http1_chunked dec;
        http1_chunked_init(&dec);
        assert_int_equal(http1_chunked_feed(&dec, chunked_body, cut, NULL, NULL), (ptrdiff_t)cut);
        assert_false(http1_chunked_done(&dec));
    }
}

static int chunked_run(const char *in, size_t len)
{
    http1_chunked dec;
    http1_chunked_init(&dec);
    ptrdiff_t n = http1_chunked_feed(&dec, in, len, NULL, NULL);
    return n < 0 ? (int)n : http1_chunked_done(&dec) ? 1 : 0;
}

static void test_chunked_errors(void **state)
{
    (void)state;
    static const err_case cases[] = {
        {"\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {";ext\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"g\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"-5\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"0x5\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"5 \r\nhello\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"5\nhello\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"5\rhello\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"00000000000000001\r\n", HTTP1_ERR_BAD_CHUNK_SIZE},
        {"1000001\r\n", HTTP1_ERR_CHUNK_TOO_LARGE},
        {"FFFFFFFFFFFFFFFFFFFFFFFF\r\n", HTTP1_ERR_CHUNK_TOO_LARGE},
        {"5;a\x01\r\nhello\r\n", HTTP1_ERR_BAD_CHUNK_EXT},
        {"5;a\nhello\r\n", HTTP1_ERR_BAD_CHUNK_EXT},
        {"5\r\nhelloX\r\n", HTTP1_ERR_BAD_CHUNK_CRLF},
        {"5\r\nhello\rX", HTTP1_ERR_BAD_CHUNK_CRLF},
        {"5\r\nhello\n", HTTP1_ERR_BAD_CHUNK_CRLF},
        {"5\r\nhello world\r\n", HTTP1_ERR_BAD_CHUNK_CRLF},
        {"0\r\nBad Name: x\r\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\nNoColon\r\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\n: v\r\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\nA: b\r\n c\r\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\nA: b\x01\r\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\nA: b\n\r\n", HTTP1_ERR_BAD_TRAILER},
        {"0\r\n\rX", HTTP1_ERR_BAD_TRAILER},
        {"0\r\n\n", HTTP1_ERR_BAD_TRAILER},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int rc = chunked_run(cases[i].in, strlen(cases[i].in));
        if (rc != cases[i].want)
            fail_msg("case %zu: got %d (%s), want %d (%s)", i, rc, http1_strerror(rc),
                     cases[i].want, http1_strerror(cases[i].want));
    }
    /* exactly the limit is fine (the chunk is just not there yet) */
    assert_int_equal(chunked_run("1000000\r\n", 9), 0);
    assert_int_equal(chunked_run("0000000000000001\r\nx\r\n0\r\n\r\n", 26), 1);
}

static void test_chunked_bounds(void **state)
{
    (void)state;
    vbuf b = VBUF_INIT;
    /* an extension that never ends */
    assert_int_equal(vbuf_append_str(&b, "5;"), 0);
    for (int i = 0; i < HTTP1_MAX_CHUNK_LINE; i++)
        assert_int_equal(vbuf_append_str(&b, "x"), 0);
    assert_int_equal(chunked_run((const char *)b.data, b.len), HTTP1_ERR_BAD_CHUNK_EXT);

    /* trailers: too many bytes, and too many fields */
    vbuf_reset(&b);
    assert_int_equal(vbuf_append_str(&b, "0\r\nBig: "), 0);
    for (int i = 0; i < HTTP1_MAX_TRAILER_SIZE; i++)
        assert_int_equal(vbuf_append_str(&b, "v"), 0);
    assert_int_equal(chunked_run((const char *)b.data, b.len), HTTP1_ERR_BAD_TRAILER);
    vbuf_reset(&b);
    assert_int_equal(vbuf_append_str(&b, "0\r\n"), 0);
    for (int i = 0; i <= HTTP1_MAX_HEADERS; i++)
        assert_int_equal(vbuf_printf(&b, "T%d: v\r\n", i), 0);
    assert_int_equal(vbuf_append_str(&b, "\r\n"), 0);
    assert_int_equal(chunked_run((const char *)b.data, b.len), HTTP1_ERR_BAD_TRAILER);
    vbuf_free(&b);
}

static void test_chunked_errors_are_sticky(void **state)
{
    (void)state;
    http1_chunked dec;
    http1_chunked_init(&dec);
    assert_int_equal(http1_chunked_feed(&dec, "z", 1, NULL, NULL), HTTP1_ERR_BAD_CHUNK_SIZE);
    assert_int_equal(http1_chunked_feed(&dec, "0\r\n\r\n", 5, NULL, NULL),
                     HTTP1_ERR_BAD_CHUNK_SIZE);
    assert_false(http1_chunked_done(&dec));

    /* a callback that refuses data stops the decoder */
    sink s = {VBUF_INIT, 0, 1};
    http1_chunked_init(&dec);
    assert_int_equal(http1_chunked_feed(&dec, "3\r\nabc\r\n0\r\n\r\n", 13, sink_cb, &s),
                     HTTP1_ERR_CALLBACK);
    assert_false(http1_chunked_done(&dec));
    assert_int_equal(http1_chunked_feed(&dec, NULL, 1, NULL, NULL), HTTP1_ERR_INVALID_ARG);
    vbuf_free(&s.out);
}

/* ---------------------------------------------------------------- CONNECT */

static void test_connect_names(void **state)
{
    (void)state;
    const char msg[] = "CONNECT bedrock-runtime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
                       "Host: bedrock-runtime.us-east-1.amazonaws.com:443\r\n"
                       "\r\n";
    http1_connect c;
    assert_int_equal(http1_parse_connect(msg, sizeof msg - 1, &c), (int)(sizeof msg - 1));
    assert_string_equal(c.host, "bedrock-runtime.us-east-1.amazonaws.com");
    assert_int_equal(c.host_kind, HTTP1_HOST_NAME);
    assert_int_equal(c.port, 443);
    assert_int_equal(c.minor_version, 1);
    assert_span(c.authority, c.authority_len, "bedrock-runtime.us-east-1.amazonaws.com:443");
    assert_int_equal(c.headers.n, 1);

    const char upper[] = "CONNECT STS.AmazonAWS.com.:8443 HTTP/1.0\r\n\r\n";
    assert_int_equal(http1_parse_connect(upper, sizeof upper - 1, &c), (int)(sizeof upper - 1));
    assert_string_equal(c.host, "sts.amazonaws.com");
    assert_int_equal(c.port, 8443);
    assert_int_equal(c.minor_version, 0);

    const char ports[] = "CONNECT a:1 HTTP/1.1\r\n\r\n";
    assert_true(http1_parse_connect(ports, sizeof ports - 1, &c) > 0);
    assert_int_equal(c.port, 1);
    const char maxport[] = "CONNECT a-b.c9:65535 HTTP/1.1\r\n\r\n";
    assert_true(http1_parse_connect(maxport, sizeof maxport - 1, &c) > 0);
    assert_int_equal(c.port, 65535);
}

static void test_connect_ip_literals(void **state)
{
    (void)state;
    const struct {
        const char *line;
        http1_host_kind kind;
        const char *host;
        uint16_t port;
    } cases[] = {
        {"CONNECT 10.0.0.1:8443 HTTP/1.1\r\n\r\n", HTTP1_HOST_IPV4, "10.0.0.1", 8443},
        {"CONNECT 255.255.255.255:1 HTTP/1.1\r\n\r\n", HTTP1_HOST_IPV4, "255.255.255.255", 1},
        {"CONNECT [::1]:443 HTTP/1.1\r\n\r\n", HTTP1_HOST_IPV6, "::1", 443},
        {"CONNECT [2001:DB8:0:0::1]:443 HTTP/1.1\r\n\r\n", HTTP1_HOST_IPV6, "2001:db8::1", 443},
        {"CONNECT [::ffff:1.2.3.4]:80 HTTP/1.1\r\n\r\n", HTTP1_HOST_IPV6, "::ffff:1.2.3.4", 80},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        http1_connect c;
        int rc = http1_parse_connect(cases[i].line, strlen(cases[i].line), &c);
        if (rc != (int)strlen(cases[i].line))
            fail_msg("case %zu: %d (%s)", i, rc, http1_strerror(rc));
        assert_int_equal(c.host_kind, cases[i].kind);
        assert_string_equal(c.host, cases[i].host);
        assert_int_equal(c.port, cases[i].port);
    }
}

static void check_connect_errors(const err_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        http1_connect c;
        int rc = http1_parse_connect(cases[i].in, strlen(cases[i].in), &c);
        if (rc != cases[i].want)
            fail_msg("case %zu \"%s\": got %d (%s), want %d (%s)", i, cases[i].in, rc,
                     http1_strerror(rc), cases[i].want, http1_strerror(cases[i].want));
    }
}

static void test_connect_errors(void **state)
{
    (void)state;
    static const err_case cases[] = {
        /* port */
        {"CONNECT example.com HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com: HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT [::1] HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:0 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:65536 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:443a HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:+443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:-1 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:0x1bb HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:443:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        {"CONNECT example.com:000443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_PORT},
        /* host */
        {"CONNECT :443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT ::1:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT [::1:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT [::1]x443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT [zz::1]:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT []:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT [10.0.0.1]:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT exa_mple.com:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT example.com..:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT 1.2.3:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT 0x7f000001:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT 010.0.0.1:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT 256.0.0.1:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        {"CONNECT a.0x10:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_AUTHORITY},
        /* method, line, version */
        {"GET / HTTP/1.1\r\n\r\n", HTTP1_ERR_NOT_CONNECT},
        {"connect a:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_NOT_CONNECT},
        {"POST a:443 HTTP/1.1\r\n", HTTP1_ERR_NOT_CONNECT}, /* known before the head ends */
        {"CON\x01NECT a:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"CONNECT  a:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"CONNECT a:443\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"CONNECT a:443 HTTP/1.1\n\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"CONNECT a:443 HTTP/2.0\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"CONNECT a:443 HTTP/1.1 \r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"CONNECT a:443 HTTP/1.1\r\nBad Header\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"CONNECT a:443 HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HTTP1_ERR_OBS_FOLD},
    };
    check_connect_errors(cases, ARRAY_LEN(cases));
}

static void test_connect_pipelined_bytes_kept(void **state)
{
    (void)state;
    /* a client may send its TLS ClientHello right behind the head (defect §10.21) */
    const char head[] = "CONNECT sts.amazonaws.com:443 HTTP/1.1\r\nHost: sts.amazonaws.com\r\n\r\n";
    const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    char buf[sizeof head + sizeof tls];
    memcpy(buf, head, sizeof head - 1);
    memcpy(buf + sizeof head - 1, tls, sizeof tls - 1);
    size_t len = sizeof head - 1 + sizeof tls - 1;
    http1_connect c;
    int n = http1_parse_connect(buf, len, &c);
    assert_int_equal(n, (int)(sizeof head - 1));
    assert_int_equal(len - (size_t)n, sizeof tls - 1);
    assert_memory_equal(buf + n, tls, sizeof tls - 1);

    for (size_t i = 0; i < sizeof head - 1; i++)
        assert_int_equal(http1_parse_connect(head, i, &c), HTTP1_NEED_MORE);
}

static void test_connect_head_limit(void **state)
{
    (void)state;
    http1_connect c;
    char *h = make_head("CONNECT a.b:443 HTTP/1.1\r\n", HTTP1_MAX_CONNECT_HEAD_SIZE);
    assert_int_equal(http1_parse_connect(h, HTTP1_MAX_CONNECT_HEAD_SIZE, &c),
                     HTTP1_MAX_CONNECT_HEAD_SIZE);
    free(h);
    h = make_head("CONNECT a.b:443 HTTP/1.1\r\n", HTTP1_MAX_CONNECT_HEAD_SIZE + 1);
    assert_int_equal(http1_parse_connect(h, HTTP1_MAX_CONNECT_HEAD_SIZE + 1, &c),
                     HTTP1_ERR_HEAD_TOO_LARGE);
    free(h);
    /* a request line that never ends */
    char *line = malloc(HTTP1_MAX_CONNECT_HEAD_SIZE * 2);
    assert_non_null(line);
    memcpy(line, "CONNECT ", 8);
    memset(line + 8, 'a', HTTP1_MAX_CONNECT_HEAD_SIZE * 2 - 8);
    assert_int_equal(http1_parse_connect(line, HTTP1_MAX_CONNECT_HEAD_SIZE * 2, &c),
                     HTTP1_ERR_HEAD_TOO_LARGE);
    free(line);
}

/* ---------------------------------------------------------------- host normalisation */

static void test_normalize_host(void **state)
{
    (void)state;
    char out[HTTP1_HOST_BUF];
    const struct {
        const char *in;
        const char *want; /* NULL: rejected */
    } cases[] = {
        {"Bedrock-Runtime.US-EAST-1.AmazonAWS.com", "bedrock-runtime.us-east-1.amazonaws.com"},
        {"example.com.", "example.com"},
        {"localhost", "localhost"},
        {"a1-b2.c3", "a1-b2.c3"},
        {"1.2.3.4", "1.2.3.4"},
        {"example.com..", NULL},
        {"", NULL},
        {".", NULL},
        {"..", NULL},
        {".example.com", NULL},
        {"a..b", NULL},
        {"-a.com", NULL},
        {"a-.com", NULL},
        {"a_b.com", NULL},
        {"a b", NULL},
        {"a:443", NULL},
        {"[::1]", NULL},
        {"caf\xc3\xa9.com", NULL},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        int rc = http1_normalize_host(cases[i].in, out, sizeof out);
        if (cases[i].want) {
            if (rc != HTTP1_OK)
                fail_msg("case %zu \"%s\": %d", i, cases[i].in, rc);
            assert_string_equal(out, cases[i].want);
        } else if (rc != HTTP1_ERR_BAD_AUTHORITY) {
            fail_msg("case %zu \"%s\": accepted as \"%s\"", i, cases[i].in, out);
        }
    }

    /* lengths: 253 is the longest name, one trailing dot may follow; labels <= 63 */
    char name[300];
    size_t o = 0;
    for (int l = 0; l < 4; l++) { /* 63+1+63+1+63+1+61 = 253 */
        size_t ll = l < 3 ? 63 : 61;
        memset(name + o, 'a' + l, ll);
        o += ll;
        if (l < 3)
            name[o++] = '.';
    }
    name[o] = '\0';
    assert_int_equal(o, 253);
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_OK);
    assert_string_equal(out, name);
    assert_int_equal(http1_normalize_host(name, out, 253), HTTP1_ERR_INVALID_ARG);
    name[o] = '.';
    name[o + 1] = '\0';
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_OK);
    name[o] = 'x';
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_ERR_BAD_AUTHORITY);
    memset(name, 'a', 64);
    name[64] = '\0';
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_ERR_BAD_AUTHORITY);
    name[63] = '\0';
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_OK);
    memset(name, 'a', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    assert_int_equal(http1_normalize_host(name, out, sizeof out), HTTP1_ERR_BAD_AUTHORITY);
    assert_int_equal(http1_normalize_host(NULL, out, sizeof out), HTTP1_ERR_INVALID_ARG);
}

/* ---------------------------------------------------------------- requests */

static void test_request_without_body(void **state)
{
    (void)state;
    const char msg[] = "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\n"
                       "Host: 169.254.169.254\r\n"
                       "X-aws-ec2-metadata-token: AQAEAAAA==\r\n"
                       "\r\n";
    http1_request r;
    assert_int_equal(http1_parse_request(msg, sizeof msg - 1, &r), (int)(sizeof msg - 1));
    assert_span(r.method, r.method_len, "GET");
    assert_span(r.target, r.target_len, "/latest/meta-data/iam/security-credentials/");
    assert_span(r.path, r.path_len, "/latest/meta-data/iam/security-credentials/");
    assert_null(r.query);
    assert_int_equal(r.query_len, 0);
    assert_int_equal(r.minor_version, 1);
    assert_int_equal(r.body, HTTP1_BODY_NONE);
    size_t vlen;
    const char *v = http1_header_get(&r.headers, "x-aws-ec2-metadata-token", &vlen);
    assert_span(v, vlen, "AQAEAAAA==");

    const char empty_q[] = "GET /path? HTTP/1.0\r\n\r\n";
    assert_true(http1_parse_request(empty_q, sizeof empty_q - 1, &r) > 0);
    assert_span(r.path, r.path_len, "/path");
    assert_non_null(r.query);
    assert_int_equal(r.query_len, 0);
    assert_int_equal(r.minor_version, 0);
}

static void test_request_with_body(void **state)
{
    (void)state;
    const char msg[] = "POST /model/anthropic.claude-3-haiku/converse-stream?a=1&b=%2F HTTP/1.1\r\n"
                       "Host: bedrock-runtime.us-east-1.amazonaws.com\r\n"
                       "Content-Length: 13\r\n"
                       "\r\n"
                       "{\"a\":\"hello\"}";
    http1_request r;
    int n = http1_parse_request(msg, sizeof msg - 1, &r);
    assert_true(n > 0);
    assert_span(r.method, r.method_len, "POST");
    assert_span(r.path, r.path_len, "/model/anthropic.claude-3-haiku/converse-stream");
    assert_span(r.query, r.query_len, "a=1&b=%2F");
    assert_int_equal(r.body, HTTP1_BODY_CONTENT_LENGTH);
    assert_int_equal(r.content_length, 13);
    assert_int_equal(sizeof msg - 1 - (size_t)n, 13);

    const char chunked[] = "PUT /latest/api/token HTTP/1.1\r\n"
                           "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"
                           "Transfer-Encoding: chunked\r\n"
                           "\r\n"
                           "0\r\n\r\n";
    n = http1_parse_request(chunked, sizeof chunked - 1, &r);
    assert_int_equal(sizeof chunked - 1 - (size_t)n, 5);
    assert_int_equal(r.body, HTTP1_BODY_CHUNKED);

    for (size_t i = 0; i < (size_t)n; i++)
        assert_int_equal(http1_parse_request(chunked, i, &r), HTTP1_NEED_MORE);
}

static void test_request_errors(void **state)
{
    (void)state;
    static const err_case cases[] = {
        {"GET http://a/ HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_TARGET},
        {"GET * HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_TARGET},
        {"CONNECT a:443 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_TARGET},
        {"GET  / HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"GET /\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"G(T / HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"GET /a\x7f HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"GET / HTTP/1.1\n\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"\r\nGET / HTTP/1.1\r\n\r\n", HTTP1_ERR_BAD_REQUEST_LINE},
        {"GET / HTTP/1.1 x\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"GET / HTTP/3\r\n\r\n", HTTP1_ERR_BAD_VERSION},
        {"GET / HTTP/1.1\r\nA : b\r\n\r\n", HTTP1_ERR_BAD_HEADER},
        {"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", HTTP1_ERR_OBS_FOLD},
        {"POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
         HTTP1_ERR_BAD_CONTENT_LENGTH},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", HTTP1_ERR_UNSUPPORTED_TE},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
         HTTP1_ERR_BAD_FRAMING},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        http1_request r;
        int rc = http1_parse_request(cases[i].in, strlen(cases[i].in), &r);
        if (rc != cases[i].want)
            fail_msg("case %zu \"%s\": got %d (%s), want %d (%s)", i, cases[i].in, rc,
                     http1_strerror(rc), cases[i].want, http1_strerror(cases[i].want));
    }
    http1_request r;
    char *h = make_head("GET / HTTP/1.1\r\n", HTTP1_MAX_HEAD_SIZE + 1);
    assert_int_equal(http1_parse_request(h, HTTP1_MAX_HEAD_SIZE + 1, &r),
                     HTTP1_ERR_HEAD_TOO_LARGE);
    free(h);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = HTTP1_ERR_BAD_PORT; e <= HTTP1_OK; e++) {
        const char *s = http1_strerror(e);
        assert_non_null(s);
        assert_true(strcmp(s, "unknown http1 error") != 0);
        for (int f = e + 1; f <= HTTP1_ERR_INVALID_ARG; f++)
            assert_string_not_equal(s, http1_strerror(f));
    }
    assert_string_equal(http1_strerror(-1000), "unknown http1 error");
    assert_string_equal(http1_strerror(42), "ok");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_response_200_content_length),
        cmocka_unit_test(test_response_chunked),
        cmocka_unit_test(test_response_close_delimited),
        cmocka_unit_test(test_response_403_with_body),
        cmocka_unit_test(test_response_status_is_parsed_not_searched),
        cmocka_unit_test(test_response_no_body_statuses),
        cmocka_unit_test(test_response_need_more_at_every_prefix),
        cmocka_unit_test(test_response_errors),
        cmocka_unit_test(test_response_framing_accepted),
        cmocka_unit_test(test_response_head_limit),
        cmocka_unit_test(test_response_header_count_limit),
        cmocka_unit_test(test_chunked_whole),
        cmocka_unit_test(test_chunked_every_split),
        cmocka_unit_test(test_chunked_byte_at_a_time),
        cmocka_unit_test(test_chunked_data_streams_before_chunk_ends),
        cmocka_unit_test(test_chunked_truncated_not_done),
        cmocka_unit_test(test_chunked_errors),
        cmocka_unit_test(test_chunked_bounds),
        cmocka_unit_test(test_chunked_errors_are_sticky),
        cmocka_unit_test(test_connect_names),
        cmocka_unit_test(test_connect_ip_literals),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_connect_pipelined_bytes_kept),
        cmocka_unit_test(test_connect_head_limit),
        cmocka_unit_test(test_normalize_host),
        cmocka_unit_test(test_request_without_body),
        cmocka_unit_test(test_request_with_body),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

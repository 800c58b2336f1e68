/* libFuzzer target for aws/http1: response, request and CONNECT heads, the chunked
 * decoder and host normalisation.
 *
 * The first input byte picks the mode (style.md, aws-c-http's fuzz_*_correct/_random):
 *   even: the rest is fed to every parser as is (random input);
 *   odd:  a structurally valid message (template picked by the second byte) is mutated
 *         by the remaining bytes, 3 at a time: op, position, value.
 * Every input is copied into an exactly-sized heap buffer so ASan sees any over-read.
 * Besides "no crash", it checks the parsers' contracts and traps when one breaks.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/http1.h"
#include "common/buf.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_MUTATED_LEN (HTTP1_MAX_HEAD_SIZE + 1024)
#define BYTEWISE_LIMIT 4096 /* feed the chunked decoder 1 byte at a time below this size */

typedef enum kind { K_RESPONSE, K_REQUEST, K_CONNECT, K_CHUNKED } kind;

static const struct {
    kind k;
    const char *msg;
} templates[] = {
    {K_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 "Content-Length: 2\r\n\r\n{}"},
    {K_RESPONSE, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-amzn-requestid: 1\r\n\r\n"
                 "5;a=b\r\nhello\r\n6\r\n world\r\n0\r\nX-T: v\r\n\r\n"},
    {K_RESPONSE, "HTTP/1.1 403 Forbidden\r\ncontent-length: 4\r\n\r\nnope"},
    {K_RESPONSE, "HTTP/1.0 200 OK\r\nServer: sim\r\n\r\nclose-delimited"},
    {K_CONNECT, "CONNECT bedrock-runtime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
                "Host: x\r\n\r\n\x16\x03\x01"},
    {K_CONNECT, "CONNECT [2001:db8::1]:8443 HTTP/1.0\r\n\r\n"},
    {K_CONNECT, "CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n"},
    {K_REQUEST, "POST /model/m/converse-stream?a=b HTTP/1.1\r\nHost: h\r\n"
                "Content-Length: 2\r\n\r\n{}"},
    {K_REQUEST, "PUT /latest/api/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                "3\r\nabc\r\n0\r\n\r\n"},
    {K_CHUNKED, "a\r\n0123456789\r\n1;x=\"y\"\r\n!\r\n0\r\n\r\n"},
};

static void check_headers(const http1_headers *hs, const uint8_t *buf, int rc)
{
    CHECK(hs->n <= HTTP1_MAX_HEADERS);
    for (size_t i = 0; i < hs->n; i++) {
        const http1_header *h = &hs->h[i];
        CHECK(h->name_len > 0);
        CHECK((const uint8_t *)h->name >= buf);
        CHECK((const uint8_t *)h->value + h->value_len <= buf + rc);
    }
    CHECK(http1_header_get(hs, "host", NULL) == http1_header_get(hs, "HOST", NULL));
}

/* A successful parse is stable: the head alone gives the same result, one byte less
 * gives "need more" (every complete line was already valid). */
typedef int (*head_parser)(const void *, size_t, void *);

static void check_head_rc(head_parser parse, void *out, const uint8_t *buf, size_t len, int rc,
                          size_t limit)
{
    if (rc == HTTP1_NEED_MORE) {
        CHECK(len < limit);
        return;
    }
    if (rc <= 0) {
        CHECK(rc < HTTP1_NEED_MORE && rc >= HTTP1_ERR_BAD_PORT);
        return;
    }
    CHECK((size_t)rc <= len && (size_t)rc <= limit);
    CHECK(rc >= 4 && memcmp(buf + rc - 4, "\r\n\r\n", 4) == 0);
    CHECK(parse(buf, (size_t)rc - 1, out) == HTTP1_NEED_MORE);
    CHECK(parse(buf, (size_t)rc, out) == rc);
}

static int parse_response(const void *b, size_t n, void *out)
{
    return http1_parse_response(b, n, out);
}
static int parse_request(const void *b, size_t n, void *out)
{
    return http1_parse_request(b, n, out);
}
static int parse_connect(const void *b, size_t n, void *out)
{
    return http1_parse_connect(b, n, out);
}

static void fuzz_heads(const uint8_t *buf, size_t len)
{
    static http1_response resp;
    static http1_request req;
    static http1_connect con;

    int rc = http1_parse_response(buf, len, &resp);
    if (rc > 0) {
        check_headers(&resp.headers, buf, rc);
        CHECK(resp.status >= 100 && resp.status <= 599);
        CHECK(resp.body != HTTP1_BODY_CONTENT_LENGTH || resp.content_length <= INT64_MAX);
    }
    check_head_rc(parse_response, &resp, buf, len, rc, HTTP1_MAX_HEAD_SIZE);

    rc = http1_parse_request(buf, len, &req);
    if (rc > 0) {
        check_headers(&req.headers, buf, rc);
        CHECK(req.target_len > 0 && req.target[0] == '/');
        CHECK(req.path_len + (req.query ? req.query_len + 1 : 0) == req.target_len);
        CHECK(req.body != HTTP1_BODY_UNTIL_CLOSE);
    }
    check_head_rc(parse_request, &req, buf, len, rc, HTTP1_MAX_HEAD_SIZE);

    rc = http1_parse_connect(buf, len, &con);
    if (rc > 0) {
        check_headers(&con.headers, buf, rc);
        CHECK(con.port != 0 && con.host[0] != '\0');
        if (con.host_kind == HTTP1_HOST_NAME) {
            char again[HTTP1_HOST_BUF];
            CHECK(http1_normalize_host(con.host, again, sizeof again) == HTTP1_OK);
            CHECK(strcmp(again, con.host) == 0);
        }
    }
    check_head_rc(parse_connect, &con, buf, len, rc, HTTP1_MAX_CONNECT_HEAD_SIZE);
}

typedef struct chunked_run {
    ptrdiff_t rc; /* error, or total bytes consumed */
    bool done;
    vbuf out;
} chunked_run;

/* Feeds buf in pieces of at most step bytes (step 0: split once at split). */
static void run_chunked(const uint8_t *buf, size_t len, size_t split, size_t step,
                        chunked_run *r)
{
    http1_chunked dec;
    http1_chunked_init(&dec);
    size_t off = 0;
    r->rc = 0;
    while (off < len) {
        size_t n = step ? (len - off < step ? len - off : step) : (off < split ? split : len - off);
        ptrdiff_t k = http1_chunked_feed_vbuf(&dec, buf + off, n, &r->out);
        if (k < 0) {
            r->rc = k;
            break;
        }
        CHECK((size_t)k <= n);
        CHECK((size_t)k == n || http1_chunked_done(&dec));
        off += (size_t)k;
        r->rc = (ptrdiff_t)off;
        if (http1_chunked_done(&dec))
            break;
    }
    r->done = http1_chunked_done(&dec);
    CHECK(!(r->done && r->rc < 0));
}

static void fuzz_chunked(const uint8_t *buf, size_t len, size_t split)
{
    chunked_run whole = {0, false, VBUF_INIT}, halves = {0, false, VBUF_INIT},
                bytes = {0, false, VBUF_INIT};
    run_chunked(buf, len, 0, 0, &whole);
    run_chunked(buf, len, len ? split % (len + 1) : 0, 0, &halves);
    /* split anywhere: same verdict, same bytes out (up to the error for failures) */
    CHECK(whole.rc == halves.rc && whole.done == halves.done);
    if (whole.rc >= 0)
        CHECK(whole.out.len == halves.out.len &&
              (whole.out.len == 0 || memcmp(whole.out.data, halves.out.data, whole.out.len) == 0));
    if (len <= BYTEWISE_LIMIT) {
        run_chunked(buf, len, 0, 1, &bytes);
        CHECK(whole.rc == bytes.rc && whole.done == bytes.done);
        if (whole.rc >= 0)
            CHECK(whole.out.len == bytes.out.len &&
                  (whole.out.len == 0 ||
                   memcmp(whole.out.data, bytes.out.data, whole.out.len) == 0));
    }
    vbuf_free(&whole.out);
    vbuf_free(&halves.out);
    vbuf_free(&bytes.out);
}

static void fuzz_host(const uint8_t *buf, size_t len)
{
    char in[HTTP1_HOST_BUF + 8];
    char out[HTTP1_HOST_BUF], again[HTTP1_HOST_BUF];
    size_t n = len < sizeof in - 1 ? len : sizeof in - 1;
    memcpy(in, buf, n);
    in[n] = '\0';
    if (http1_normalize_host(in, out, sizeof out) != HTTP1_OK)
        return;
    size_t olen = strlen(out);
    CHECK(olen > 0 && olen <= HTTP1_MAX_HOST_LEN && out[olen - 1] != '.');
    for (size_t i = 0; i < olen; i++)
        CHECK((out[i] >= 'a' && out[i] <= 'z') || (out[i] >= '0' && out[i] <= '9') ||
              out[i] == '-' || out[i] == '.');
    CHECK(http1_normalize_host(out, again, sizeof again) == HTTP1_OK);
    CHECK(strcmp(out, again) == 0);
}

static void fuzz_all(const uint8_t *buf, size_t len, size_t split)
{
    fuzz_heads(buf, len);
    fuzz_chunked(buf, len, split);
    fuzz_host(buf, len);
    /* the body of a parsed head goes to the chunked decoder too */
    static http1_response resp;
    int rc = http1_parse_response(buf, len, &resp);
    if (rc > 0 && resp.body == HTTP1_BODY_CHUNKED)
        fuzz_chunked(buf + rc, len - (size_t)rc, split);
}

/* Applies (op, pos, value) triples: overwrite, insert, delete, or insert CRLF. */
static size_t mutate(uint8_t *m, size_t len, const uint8_t *ops, size_t nops)
{
    for (size_t i = 0; i + 3 <= nops; i += 3) {
        uint8_t op = ops[i] & 3;
        size_t pos = len ? ((size_t)ops[i + 1] * 257 + ops[i + 2]) % (len + 1) : 0;
        uint8_t val = ops[i + 2];
        if (op == 0 && pos < len) {
            m[pos] = val;
        } else if (op == 1 && len < MAX_MUTATED_LEN) {
            memmove(m + pos + 1, m + pos, len - pos);
            m[pos] = val;
            len++;
        } else if (op == 2 && pos < len) {
            memmove(m + pos, m + pos + 1, len - pos - 1);
            len--;
        } else if (op == 3 && len + 2 <= MAX_MUTATED_LEN) {
            memmove(m + pos + 2, m + pos, len - pos);
            m[pos] = '\r';
            m[pos + 1] = '\n';
            len += 2;
        }
    }
    return len;
}

/* An unmutated template must be accepted by its own parser. */
static void check_template(kind k, const uint8_t *m, size_t len)
{
    static http1_response resp;
    static http1_request req;
    static http1_connect con;
    http1_chunked dec;
    switch (k) {
    case K_RESPONSE:
        CHECK(http1_parse_response(m, len, &resp) > 0);
        break;
    case K_REQUEST:
        CHECK(http1_parse_request(m, len, &req) > 0);
        break;
    case K_CONNECT:
        CHECK(http1_parse_connect(m, len, &con) > 0);
        break;
    case K_CHUNKED:
        http1_chunked_init(&dec);
        CHECK(http1_chunked_feed(&dec, m, len, NULL, NULL) == (ptrdiff_t)len);
        CHECK(http1_chunked_done(&dec));
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t split = size > 1 ? data[size - 1] * 31u + size : 0;
    if ((data[0] & 1) == 0) {
        uint8_t *buf = malloc(size - 1 ? size - 1 : 1);
        if (!buf)
            return 0;
        if (size > 1)
            memcpy(buf, data + 1, size - 1);
        fuzz_all(buf, size - 1, split);
        free(buf);
        return 0;
    }
    size_t t = size > 1 ? data[1] % (sizeof templates / sizeof templates[0]) : 0;
    const uint8_t *ops = size > 2 ? data + 2 : data;
    size_t nops = size > 2 ? size - 2 : 0;
    uint8_t *work = malloc(MAX_MUTATED_LEN);
    if (!work)
        return 0;
    size_t len = strlen(templates[t].msg);
    memcpy(work, templates[t].msg, len);
    if (nops < 3)
        check_template(templates[t].k, work, len);
    len = mutate(work, len, ops, nops);
    uint8_t *buf = malloc(len ? len : 1); /* exactly sized, for ASan */
    if (buf) {
        memcpy(buf, work, len);
        fuzz_all(buf, len, split);
        free(buf);
    }
    free(work);
    return 0;
}

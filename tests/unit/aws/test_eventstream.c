/* Unit tests for the event-stream codec: published aws-c-event-stream vectors,
 * round trips of every header type, every split point, every corruption.
 * Stays whole: tests mirror the tree, one file per module under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cmocka.h>

#include "aws/eventstream.h"
#include "common/buf.h"

/* ---- helpers ---- */

typedef struct collector {
    vbuf reencoded; /* every delivered message, re-encoded: must equal the input */
    size_t count;
    size_t stop_at;  /* return non-zero on this message (1-based); 0 = never */
    es_kind kinds[16];
} collector;

static int collect_cb(const es_message *msg, void *user)
{
    collector *c = user;
    if (c->count < 16)
        c->kinds[c->count] = es_message_kind(msg);
    c->count++;
    assert_int_equal(es_encode(&c->reencoded, msg->headers, msg->header_count, msg->payload,
                               msg->payload_len),
                     ES_OK);
    return c->stop_at && c->count == c->stop_at ? 1 : 0;
}

static void collector_free(collector *c)
{
    vbuf_free(&c->reencoded);
    memset(c, 0, sizeof *c);
}

/* Feeds the slices cut at the given split points, then finishes. */
static es_err decode_split(const uint8_t *p, size_t n, const size_t *cuts, size_t ncuts,
                           collector *c)
{
    es_decoder *dec = es_decoder_new(collect_cb, c);
    assert_non_null(dec);
    size_t at = 0;
    es_err err = ES_OK;
    for (size_t i = 0; i <= ncuts && err == ES_OK; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        err = es_decoder_feed(dec, p + at, end - at);
        at = end;
    }
    if (err == ES_OK)
        err = es_decoder_finish(dec);
    es_decoder_free(dec);
    return err;
}

static es_err decode_all(const uint8_t *p, size_t n, collector *c)
{
    return decode_split(p, n, NULL, 0, c);
}

static void fix_prelude_crc(uint8_t *m)
{
    put_be32(m + 8, (uint32_t)crc32(0L, m, 8));
}

static void fix_message_crc(uint8_t *m, size_t total)
{
    put_be32(m + total - 4, (uint32_t)crc32(0L, m, (uInt)(total - 4)));
}

/* A raw message around an arbitrary (possibly malformed) header block, with correct
 * lengths and CRCs, so that the header parser is what has to catch it. */
static void build_raw(vbuf *out, const uint8_t *block, size_t hlen, const char *payload)
{
    size_t plen = strlen(payload);
    size_t total = 16 + hlen + plen;
    uint8_t pre[12];
    put_be32(pre, (uint32_t)total);
    put_be32(pre + 4, (uint32_t)hlen);
    fix_prelude_crc(pre);
    vbuf_reset(out);
    assert_int_equal(vbuf_append(out, pre, 12), 0);
    assert_int_equal(vbuf_append(out, block, hlen), 0);
    assert_int_equal(vbuf_append(out, payload, plen), 0);
    assert_int_equal(vbuf_append(out, "\0\0\0\0", 4), 0);
    fix_message_crc(out->data, total);
}

static void make_prelude(uint8_t pre[12], uint32_t total, uint32_t hlen)
{
    put_be32(pre, total);
    put_be32(pre + 4, hlen);
    fix_prelude_crc(pre);
}

static const uint8_t TEST_UUID[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
                                      0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
static const uint8_t TEST_BYTES[5] = {0x00, 0xff, 0x10, 0x80, 0x7f};

static size_t all_type_headers(es_header h[10])
{
    h[0] = es_header_bool("t", true);
    h[1] = es_header_bool("f", false);
    h[2] = es_header_byte("byte", -5);
    h[3] = es_header_int16("i16", -12345);
    h[4] = es_header_int32("i32", INT32_MIN);
    h[5] = es_header_int64("i64", INT64_MIN + 7);
    h[6] = es_header_bytes("bin", TEST_BYTES, sizeof TEST_BYTES);
    h[7] = es_header_string("str", "héllo wörld");
    h[8] = es_header_timestamp("ts", 1700000000123LL);
    h[9] = es_header_uuid("id", TEST_UUID);
    return 10;
}

/* A Bedrock-like stream: events, an in-stream exception, an error, all header types. */
static void build_stream(vbuf *s, size_t *bounds, size_t *nbounds)
{
    es_header h[10];
    size_t n = all_type_headers(h);
    size_t k = 0;
    vbuf_reset(s);
    assert_int_equal(es_encode_event(s, "messageStart", "{\"role\":\"assistant\"}", 20), ES_OK);
    bounds[k++] = s->len;
    const char *d = "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hi\"}}";
    assert_int_equal(es_encode_event(s, "contentBlockDelta", d, strlen(d)), ES_OK);
    bounds[k++] = s->len;
    assert_int_equal(es_encode(s, h, n, (const uint8_t *)"payload", 7), ES_OK);
    bounds[k++] = s->len;
    assert_int_equal(es_encode(s, NULL, 0, NULL, 0), ES_OK); /* empty message */
    bounds[k++] = s->len;
    const char *x = "{\"message\":\"Too many requests\"}";
    assert_int_equal(es_encode_exception(s, "throttlingException", x, strlen(x)), ES_OK);
    bounds[k++] = s->len;
    assert_int_equal(es_encode_error(s, "InternalFailure", "boom"), ES_OK);
    bounds[k++] = s->len;
    *nbounds = k;
}

/* ---- published vectors (aws-c-event-stream tests/message_*_test.c) ---- */

typedef struct vector_result {
    size_t count;
    size_t header_count;
    char name[32];
    es_header_type type;
    int32_t i32;
    char str[32];
    char payload[32];
} vector_result;

static int vector_cb(const es_message *msg, void *user)
{
    vector_result *r = user;
    r->count++;
    r->header_count = msg->header_count;
    assert_true(msg->payload_len < sizeof r->payload);
    memcpy(r->payload, msg->payload, msg->payload_len);
    if (msg->header_count) {
        const es_header *h = &msg->headers[0];
        assert_true(h->name_len < sizeof r->name);
        memcpy(r->name, h->name, h->name_len);
        r->type = h->type;
        if (h->type == ES_HEADER_INT32)
            r->i32 = h->v.i32;
        if (h->type == ES_HEADER_STRING) {
            assert_true(h->v.bytes.len < sizeof r->str);
            memcpy(r->str, h->v.bytes.data, h->v.bytes.len);
        }
    }
    return 0;
}

static void decode_vector(const uint8_t *v, size_t n, vector_result *r)
{
    memset(r, 0, sizeof *r);
    es_decoder *dec = es_decoder_new(vector_cb, r);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, v, n), ES_OK);
    assert_int_equal(es_decoder_finish(dec), ES_OK);
    es_decoder_free(dec);
    assert_int_equal(r->count, 1);
}

static void assert_encodes_to(const es_header *h, size_t nh, const char *payload,
                              const uint8_t *v, size_t n)
{
    vbuf out = VBUF_INIT;
    assert_int_equal(es_encode(&out, h, nh, (const uint8_t *)payload, strlen(payload)), ES_OK);
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, v, n);
    vbuf_free(&out);
}

static void test_aws_vectors(void **state)
{
    (void)state;
    static const uint8_t empty[] = {0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00,
                                    0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff};
    static const uint8_t no_headers[] = {0x00, 0x00, 0x00, 0x1D, 0x00, 0x00, 0x00, 0x00,
                                         0xfd, 0x52, 0x8c, 0x5a, 0x7b, 0x27, 0x66, 0x6f,
                                         0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27,
                                         0x7d, 0xc3, 0x65, 0x39, 0x36};
    static const uint8_t content_type[] = {
        0x00, 0x00, 0x00, 0x3D, 0x00, 0x00, 0x00, 0x20, 0x07, 0xFD, 0x83, 0x96, 0x0C, 'c',
        'o',  'n',  't',  'e',  'n',  't',  '-',  't',  'y',  'p',  'e',  0x07, 0x00, 0x10,
        'a',  'p',  'p',  'l',  'i',  'c',  'a',  't',  'i',  'o',  'n',  '/',  'j',  's',
        'o',  'n',  0x7b, 0x27, 0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27,
        0x7d, 0x8D, 0x9C, 0x08, 0xB1};
    static const uint8_t int32_hdr[] = {0x00, 0x00, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x0e,
                                        0x5d, 0x4a, 0xdb, 0x8d, 0x08, 'e',  'v',  'e',
                                        'n',  't',  '-',  'i',  'd',  0x04, 0x00, 0x00,
                                        0x00, 0x20, 0x2a, 0x4f, 0xb0, 0xea};
    static const uint8_t bool_hdr[] = {0x00, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x0a, 0xaf,
                                       0xa7, 0xb9, 0x54, 0x08, 'e',  'v',  'e',  'n',  't',
                                       '-',  'i',  'd',  0x00, 0x6a, 0x44, 0x14, 0xad};
    vector_result r;

    decode_vector(empty, sizeof empty, &r);
    assert_int_equal(r.header_count, 0);
    assert_string_equal(r.payload, "");
    assert_encodes_to(NULL, 0, "", empty, sizeof empty);

    decode_vector(no_headers, sizeof no_headers, &r);
    assert_int_equal(r.header_count, 0);
    assert_string_equal(r.payload, "{'foo':'bar'}");
    assert_encodes_to(NULL, 0, "{'foo':'bar'}", no_headers, sizeof no_headers);

    decode_vector(content_type, sizeof content_type, &r);
    assert_int_equal(r.header_count, 1);
    assert_string_equal(r.name, "content-type");
    assert_int_equal(r.type, ES_HEADER_STRING);
    assert_string_equal(r.str, "application/json");
    assert_string_equal(r.payload, "{'foo':'bar'}");
    es_header ct = es_header_string("content-type", "application/json");
    assert_encodes_to(&ct, 1, "{'foo':'bar'}", content_type, sizeof content_type);

    decode_vector(int32_hdr, sizeof int32_hdr, &r);
    assert_int_equal(r.header_count, 1);
    assert_string_equal(r.name, "event-id");
    assert_int_equal(r.type, ES_HEADER_INT32);
    assert_int_equal(r.i32, 0x20);
    es_header ih = es_header_int32("event-id", 0x20);
    assert_encodes_to(&ih, 1, "", int32_hdr, sizeof int32_hdr);

    decode_vector(bool_hdr, sizeof bool_hdr, &r);
    assert_int_equal(r.header_count, 1);
    assert_string_equal(r.name, "event-id");
    assert_int_equal(r.type, ES_HEADER_BOOL_TRUE);
    es_header bh = es_header_bool("event-id", true);
    assert_encodes_to(&bh, 1, "", bool_hdr, sizeof bool_hdr);
}

/* ---- round trips ---- */

static int all_types_cb(const es_message *msg, void *user)
{
    size_t *count = user;
    (*count)++;
    assert_int_equal(msg->header_count, 10);
    const es_header *h = msg->headers;
    assert_int_equal(h[0].type, ES_HEADER_BOOL_TRUE);
    assert_true(h[0].v.b);
    assert_int_equal(h[1].type, ES_HEADER_BOOL_FALSE);
    assert_false(h[1].v.b);
    assert_int_equal(h[2].type, ES_HEADER_BYTE);
    assert_int_equal(h[2].v.i8, -5);
    assert_int_equal(h[3].type, ES_HEADER_INT16);
    assert_int_equal(h[3].v.i16, -12345);
    assert_int_equal(h[4].type, ES_HEADER_INT32);
    assert_true(h[4].v.i32 == INT32_MIN);
    assert_int_equal(h[5].type, ES_HEADER_INT64);
    assert_true(h[5].v.i64 == INT64_MIN + 7);
    assert_int_equal(h[6].type, ES_HEADER_BYTES);
    assert_int_equal(h[6].v.bytes.len, sizeof TEST_BYTES);
    assert_memory_equal(h[6].v.bytes.data, TEST_BYTES, sizeof TEST_BYTES);
    assert_int_equal(h[7].type, ES_HEADER_STRING);
    size_t len = 0;
    const char *s = es_message_header_str(msg, "str", &len);
    assert_non_null(s);
    assert_int_equal(len, strlen("héllo wörld"));
    assert_memory_equal(s, "héllo wörld", len);
    assert_int_equal(h[8].type, ES_HEADER_TIMESTAMP);
    assert_true(h[8].v.timestamp_ms == 1700000000123LL);
    assert_int_equal(h[9].type, ES_HEADER_UUID);
    assert_memory_equal(h[9].v.uuid, TEST_UUID, 16);
    assert_int_equal(h[9].name_len, 2);
    assert_memory_equal(h[9].name, "id", 2);
    assert_int_equal(msg->payload_len, 7);
    assert_memory_equal(msg->payload, "payload", 7);
    /* wrong type or absent: NULL */
    assert_null(es_message_header_str(msg, "i32", &len));
    assert_null(es_message_header_str(msg, "nope", NULL));
    assert_non_null(es_message_header(msg, "ts"));
    assert_null(es_message_header(msg, "TS")); /* case-sensitive */
    assert_int_equal(es_message_kind(msg), ES_KIND_UNKNOWN);
    return 0;
}

static void test_roundtrip_all_types(void **state)
{
    (void)state;
    es_header h[10];
    size_t n = all_type_headers(h);
    vbuf m = VBUF_INIT;
    assert_int_equal(es_encode(&m, h, n, (const uint8_t *)"payload", 7), ES_OK);
    size_t count = 0;
    es_decoder *dec = es_decoder_new(all_types_cb, &count);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, m.data, m.len), ES_OK);
    assert_int_equal(es_decoder_finish(dec), ES_OK);
    assert_int_equal(count, 1);
    es_decoder_free(dec);

    /* the bool value comes from the type alone when encoding */
    es_header odd = es_header_bool("b", false);
    odd.type = ES_HEADER_BOOL_TRUE;
    collector c = {0};
    vbuf_reset(&m);
    assert_int_equal(es_encode(&m, &odd, 1, NULL, 0), ES_OK);
    assert_int_equal(m.data[12 + 1 + 1], ES_HEADER_BOOL_TRUE);
    assert_int_equal(decode_all(m.data, m.len, &c), ES_OK);
    collector_free(&c);
    vbuf_free(&m);
}

static void test_roundtrip_empty_and_big_payload(void **state)
{
    (void)state;
    vbuf m = VBUF_INIT;
    collector c = {0};

    /* empty payload with headers */
    assert_int_equal(es_encode_event(&m, "messageStop", NULL, 0), ES_OK);
    assert_int_equal(decode_all(m.data, m.len, &c), ES_OK);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.kinds[0], ES_KIND_EVENT);
    assert_int_equal(c.reencoded.len, m.len);
    assert_memory_equal(c.reencoded.data, m.data, m.len);
    collector_free(&c);

    /* 1 MiB payload with every header type, fed in 4 KiB slices */
    size_t big = 1u << 20;
    uint8_t *p = malloc(big);
    assert_non_null(p);
    for (size_t i = 0; i < big; i++)
        p[i] = (uint8_t)(i * 31 + 7);
    es_header h[10];
    size_t nh = all_type_headers(h);
    vbuf_reset(&m);
    assert_int_equal(es_encode(&m, h, nh, p, big), ES_OK);
    size_t cuts[300];
    size_t nc = 0;
    for (size_t at = 4096; at < m.len && nc < 300; at += 4096)
        cuts[nc++] = at;
    assert_int_equal(decode_split(m.data, m.len, cuts, nc, &c), ES_OK);
    assert_int_equal(c.count, 1);
    assert_int_equal(c.reencoded.len, m.len);
    assert_memory_equal(c.reencoded.data, m.data, m.len);
    collector_free(&c);
    free(p);

    /* exactly ES_MAX_MESSAGE_LEN is accepted; one byte more is refused by the encoder */
    size_t maxp = ES_MAX_MESSAGE_LEN - ES_MIN_MESSAGE_LEN;
    p = calloc(1, maxp + 1);
    assert_non_null(p);
    vbuf_reset(&m);
    assert_int_equal(es_encode(&m, NULL, 0, p, maxp), ES_OK);
    assert_int_equal(m.len, ES_MAX_MESSAGE_LEN);
    assert_int_equal(decode_all(m.data, m.len, &c), ES_OK);
    assert_int_equal(c.count, 1);
    collector_free(&c);
    size_t before = m.len;
    assert_int_equal(es_encode(&m, NULL, 0, p, maxp + 1), ES_ERR_MESSAGE_TOO_LONG);
    assert_int_equal(m.len, before);
    free(p);
    vbuf_free(&m);
}

/* ---- splits ---- */

static void test_split_every_position(void **state)
{
    (void)state;
    vbuf s = VBUF_INIT;
    size_t bounds[8], nb;
    build_stream(&s, bounds, &nb);

    for (size_t i = 0; i <= s.len; i++) {
        collector c = {0};
        size_t cut = i;
        assert_int_equal(decode_split(s.data, s.len, &cut, 1, &c), ES_OK);
        assert_int_equal(c.count, nb);
        assert_int_equal(c.reencoded.len, s.len);
        assert_memory_equal(c.reencoded.data, s.data, s.len);
        assert_int_equal(c.kinds[0], ES_KIND_EVENT);
        assert_int_equal(c.kinds[4], ES_KIND_EXCEPTION);
        assert_int_equal(c.kinds[5], ES_KIND_ERROR);
        collector_free(&c);
    }

    /* one byte at a time */
    size_t *cuts = malloc(s.len * sizeof *cuts);
    assert_non_null(cuts);
    for (size_t i = 0; i < s.len; i++)
        cuts[i] = i + 1;
    collector c = {0};
    assert_int_equal(decode_split(s.data, s.len, cuts, s.len - 1, &c), ES_OK);
    assert_int_equal(c.count, nb);
    assert_int_equal(c.reencoded.len, s.len);
    assert_memory_equal(c.reencoded.data, s.data, s.len);
    collector_free(&c);
    free(cuts);
    vbuf_free(&s);
}

static void test_split_three_ways(void **state)
{
    (void)state;
    vbuf s = VBUF_INIT;
    assert_int_equal(es_encode_event(&s, "contentBlockStop", "{\"contentBlockIndex\":0}", 23),
                     ES_OK);
    assert_int_equal(es_encode_exception(&s, "validationException", "{\"message\":\"x\"}", 15),
                     ES_OK);
    for (size_t i = 0; i <= s.len; i++) {
        for (size_t j = i; j <= s.len; j++) {
            collector c = {0};
            size_t cuts[2] = {i, j};
            assert_int_equal(decode_split(s.data, s.len, cuts, 2, &c), ES_OK);
            assert_int_equal(c.count, 2);
            assert_int_equal(c.reencoded.len, s.len);
            assert_memory_equal(c.reencoded.data, s.data, s.len);
            collector_free(&c);
        }
    }
    vbuf_free(&s);
}

/* ---- corruption ---- */

static void test_prelude_bit_flips(void **state)
{
    (void)state;
    vbuf m = VBUF_INIT;
    assert_int_equal(es_encode_event(&m, "messageStart", "{\"role\":\"assistant\"}", 20), ES_OK);
    uint8_t *copy = malloc(m.len);
    assert_non_null(copy);
    for (size_t byte = 0; byte < ES_PRELUDE_LEN; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, m.data, m.len);
            copy[byte] ^= (uint8_t)(1u << bit);
            collector c = {0};
            es_decoder *dec = es_decoder_new(collect_cb, &c);
            assert_non_null(dec);
            /* fails on the prelude alone, before any length is trusted */
            assert_int_equal(es_decoder_feed(dec, copy, ES_PRELUDE_LEN), ES_ERR_PRELUDE_CRC);
            assert_int_equal(es_decoder_feed(dec, copy + ES_PRELUDE_LEN,
                                             m.len - ES_PRELUDE_LEN),
                             ES_ERR_PRELUDE_CRC);
            assert_int_equal(es_decoder_finish(dec), ES_ERR_PRELUDE_CRC);
            assert_int_equal(c.count, 0);
            es_decoder_free(dec);
            assert_int_equal(decode_all(copy, m.len, &c), ES_ERR_PRELUDE_CRC);
            assert_int_equal(c.count, 0);
            collector_free(&c);
        }
    }
    free(copy);
    vbuf_free(&m);
}

static void test_message_bit_flips(void **state)
{
    (void)state;
    vbuf m = VBUF_INIT;
    const char *x = "{\"message\":\"slow down\"}";
    assert_int_equal(es_encode_exception(&m, "throttlingException", x, strlen(x)), ES_OK);
    uint8_t *copy = malloc(m.len);
    assert_non_null(copy);
    /* headers, payload and the message CRC itself */
    for (size_t byte = ES_PRELUDE_LEN; byte < m.len; byte++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, m.data, m.len);
            copy[byte] ^= (uint8_t)(1u << bit);
            collector c = {0};
            assert_int_equal(decode_all(copy, m.len, &c), ES_ERR_MESSAGE_CRC);
            assert_int_equal(c.count, 0);
            collector_free(&c);
        }
    }
    free(copy);
    vbuf_free(&m);
}

static void expect_prelude_error(uint32_t total, uint32_t hlen, es_err want)
{
    uint8_t pre[12];
    make_prelude(pre, total, hlen);
    collector c = {0};
    es_decoder *dec = es_decoder_new(collect_cb, &c);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, pre, sizeof pre), want);
    assert_int_equal(es_decoder_error(dec), want);
    assert_int_equal(c.count, 0);
    es_decoder_free(dec);
}

static void test_length_limits(void **state)
{
    (void)state;
    for (uint32_t t = 0; t < ES_MIN_MESSAGE_LEN; t++)
        expect_prelude_error(t, 0, ES_ERR_MESSAGE_TOO_SHORT);
    expect_prelude_error(ES_MAX_MESSAGE_LEN + 1, 0, ES_ERR_MESSAGE_TOO_LONG);
    expect_prelude_error(UINT32_MAX, 0, ES_ERR_MESSAGE_TOO_LONG);
    expect_prelude_error(32, 17, ES_ERR_HEADERS_LEN);
    expect_prelude_error(16, 1, ES_ERR_HEADERS_LEN);
    expect_prelude_error(32, UINT32_MAX, ES_ERR_HEADERS_LEN);
    expect_prelude_error(1000000, ES_MAX_HEADERS_LEN + 1, ES_ERR_HEADERS_LEN);

    /* the limits themselves are accepted: the decoder waits for the body */
    expect_prelude_error(ES_MAX_MESSAGE_LEN, 0, ES_OK);
    expect_prelude_error(32, 16, ES_OK);
    expect_prelude_error(1000000, ES_MAX_HEADERS_LEN, ES_OK);
    expect_prelude_error(16, 0, ES_OK);
}

static void expect_header_error(const uint8_t *block, size_t hlen, const char *payload,
                                es_err want)
{
    vbuf m = VBUF_INIT;
    collector c = {0};
    build_raw(&m, block, hlen, payload);
    assert_int_equal(decode_all(m.data, m.len, &c), want);
    assert_int_equal(c.count, want == ES_OK ? 1 : 0);
    collector_free(&c);
    vbuf_free(&m);
}

static void test_header_errors(void **state)
{
    (void)state;
    /* each message is re-CRC'd, so the header parser is what has to catch it */
    static const uint8_t name0[] = {0x00, ES_HEADER_BOOL_TRUE};
    static const uint8_t name_over[] = {0x05, 'a', 'b'};
    static const uint8_t type10[] = {0x01, 'a', 10};
    static const uint8_t type255[] = {0x01, 'a', 0xff};
    static const uint8_t str_over[] = {0x01, 'a', ES_HEADER_STRING, 0x00, 0x05, 'x', 'y'};
    static const uint8_t str_into_payload[] = {0x01, 'a', ES_HEADER_STRING, 0x00, 0x04, 'x',
                                               'y'};
    static const uint8_t bytes_over[] = {0x01, 'a', ES_HEADER_BYTES, 0xff, 0xff, 'x'};
    static const uint8_t no_type[] = {0x01, 'a'};
    static const uint8_t int32_short[] = {0x01, 'a', ES_HEADER_INT32, 0x00, 0x00};
    static const uint8_t int64_short[] = {0x01, 'a', ES_HEADER_INT64, 1, 2, 3, 4, 5, 6, 7};
    static const uint8_t uuid_short[] = {0x01, 'a', ES_HEADER_UUID, 1, 2, 3};
    static const uint8_t strlen_short[] = {0x01, 'a', ES_HEADER_STRING, 0x00};
    static const uint8_t trailing[] = {0x01, 'a', ES_HEADER_BOOL_TRUE, 0x00};
    static const uint8_t ok[] = {0x01, 'a', ES_HEADER_STRING, 0x00, 0x00, 0x01, 'b',
                                 ES_HEADER_BYTES, 0x00, 0x00};

    expect_header_error(name0, sizeof name0, "", ES_ERR_HEADER_NAME_LEN);
    expect_header_error(name_over, sizeof name_over, "", ES_ERR_HEADER_NAME_LEN);
    expect_header_error(trailing, sizeof trailing, "", ES_ERR_HEADER_NAME_LEN);
    expect_header_error(type10, sizeof type10, "", ES_ERR_HEADER_TYPE);
    expect_header_error(type255, sizeof type255, "", ES_ERR_HEADER_TYPE);
    expect_header_error(str_over, sizeof str_over, "", ES_ERR_HEADER_VALUE_LEN);
    /* the string would fit if it could read into the payload: it must not */
    expect_header_error(str_into_payload, sizeof str_into_payload, "zzzz",
                        ES_ERR_HEADER_VALUE_LEN);
    expect_header_error(bytes_over, sizeof bytes_over, "", ES_ERR_HEADER_VALUE_LEN);
    expect_header_error(no_type, sizeof no_type, "", ES_ERR_HEADER_TRUNCATED);
    expect_header_error(int32_short, sizeof int32_short, "", ES_ERR_HEADER_TRUNCATED);
    expect_header_error(int64_short, sizeof int64_short, "", ES_ERR_HEADER_TRUNCATED);
    expect_header_error(uuid_short, sizeof uuid_short, "", ES_ERR_HEADER_TRUNCATED);
    expect_header_error(strlen_short, sizeof strlen_short, "x", ES_ERR_HEADER_TRUNCATED);
    /* empty string and empty byte-array values are fine */
    expect_header_error(ok, sizeof ok, "p", ES_OK);
}

static void test_truncation(void **state)
{
    (void)state;
    vbuf s = VBUF_INIT;
    size_t bounds[8], nb;
    build_stream(&s, bounds, &nb);
    for (size_t k = 0; k < s.len; k++) {
        size_t complete = 0;
        bool at_boundary = k == 0;
        for (size_t b = 0; b < nb; b++) {
            if (bounds[b] <= k)
                complete++;
            if (bounds[b] == k)
                at_boundary = true;
        }
        collector c = {0};
        assert_int_equal(decode_all(s.data, k, &c), at_boundary ? ES_OK : ES_ERR_TRUNCATED);
        assert_int_equal(c.count, complete);
        collector_free(&c);
    }
    vbuf_free(&s);
}

static void test_error_is_sticky(void **state)
{
    (void)state;
    vbuf good = VBUF_INIT;
    assert_int_equal(es_encode_event(&good, "messageStop", "{\"stopReason\":\"end_turn\"}", 25),
                     ES_OK);
    collector c = {0};
    es_decoder *dec = es_decoder_new(collect_cb, &c);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, good.data, good.len), ES_OK);
    assert_int_equal(c.count, 1);

    uint8_t *bad = malloc(good.len);
    assert_non_null(bad);
    memcpy(bad, good.data, good.len);
    bad[good.len - 1] ^= 0x01;
    assert_int_equal(es_decoder_feed(dec, bad, good.len), ES_ERR_MESSAGE_CRC);
    /* a valid message afterwards is refused, and nothing more is delivered */
    assert_int_equal(es_decoder_feed(dec, good.data, good.len), ES_ERR_MESSAGE_CRC);
    assert_int_equal(es_decoder_feed(dec, NULL, 0), ES_ERR_MESSAGE_CRC);
    assert_int_equal(es_decoder_finish(dec), ES_ERR_MESSAGE_CRC);
    assert_int_equal(es_decoder_error(dec), ES_ERR_MESSAGE_CRC);
    assert_int_equal(c.count, 1);
    es_decoder_free(dec);

    /* truncation at finish is sticky too */
    dec = es_decoder_new(collect_cb, &c);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, good.data, 3), ES_OK);
    assert_int_equal(es_decoder_finish(dec), ES_ERR_TRUNCATED);
    assert_int_equal(es_decoder_feed(dec, good.data + 3, good.len - 3), ES_ERR_TRUNCATED);
    assert_int_equal(c.count, 1);
    es_decoder_free(dec);

    es_decoder_free(NULL);
    free(bad);
    collector_free(&c);
    vbuf_free(&good);
}

static void test_callback_stops(void **state)
{
    (void)state;
    vbuf s = VBUF_INIT;
    size_t bounds[8], nb;
    build_stream(&s, bounds, &nb);
    collector c = {0};
    c.stop_at = 2;
    es_decoder *dec = es_decoder_new(collect_cb, &c);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, s.data, s.len), ES_ERR_CALLBACK);
    assert_int_equal(c.count, 2);
    assert_int_equal(es_decoder_feed(dec, s.data, s.len), ES_ERR_CALLBACK);
    assert_int_equal(es_decoder_finish(dec), ES_ERR_CALLBACK);
    assert_int_equal(c.count, 2);
    es_decoder_free(dec);
    collector_free(&c);
    vbuf_free(&s);
}

/* ---- classification ---- */

typedef struct kind_seen {
    size_t count;
    es_kind kind[8];
    char type[8][40];
    char extra[8][40];
    char payload[8][64];
} kind_seen;

static void copy_str(char *dst, size_t cap, const char *p, size_t n)
{
    assert_true(n < cap);
    memcpy(dst, p, n);
    dst[n] = '\0';
}

static int kind_cb(const es_message *msg, void *user)
{
    kind_seen *k = user;
    size_t i = k->count++;
    size_t n = 0;
    const char *s = NULL;
    k->kind[i] = es_message_kind(msg);
    switch (k->kind[i]) {
    case ES_KIND_EVENT: s = es_message_header_str(msg, ":event-type", &n); break;
    case ES_KIND_EXCEPTION: s = es_message_header_str(msg, ":exception-type", &n); break;
    case ES_KIND_ERROR:
        s = es_message_header_str(msg, ":error-code", &n);
        assert_non_null(s);
        copy_str(k->type[i], sizeof k->type[i], s, n);
        s = es_message_header_str(msg, ":error-message", &n);
        assert_non_null(s);
        copy_str(k->extra[i], sizeof k->extra[i], s, n);
        s = NULL;
        break;
    case ES_KIND_UNKNOWN: break;
    }
    if (s)
        copy_str(k->type[i], sizeof k->type[i], s, n);
    if (k->kind[i] != ES_KIND_ERROR) {
        s = es_message_header_str(msg, ":content-type", &n);
        if (s)
            copy_str(k->extra[i], sizeof k->extra[i], s, n);
    }
    copy_str(k->payload[i], sizeof k->payload[i], (const char *)msg->payload,
             msg->payload_len);
    return 0;
}

static void test_classification(void **state)
{
    (void)state;
    vbuf s = VBUF_INIT;
    const char *d = "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hello\"}}";
    const char *x = "{\"message\":\"Rate exceeded\"}";
    assert_int_equal(es_encode_event(&s, "contentBlockDelta", d, strlen(d)), ES_OK);
    assert_int_equal(es_encode_exception(&s, "throttlingException", x, strlen(x)), ES_OK);
    assert_int_equal(es_encode_error(&s, "InternalError", "it broke"), ES_OK);
    es_header unknown[2] = {es_header_string(":message-type", "Event"), /* case matters */
                            es_header_string(":event-type", "x")};
    assert_int_equal(es_encode(&s, unknown, 2, NULL, 0), ES_OK);
    es_header wrong_type = es_header_int32(":message-type", 1);
    assert_int_equal(es_encode(&s, &wrong_type, 1, NULL, 0), ES_OK);
    assert_int_equal(es_encode(&s, NULL, 0, (const uint8_t *)"{}", 2), ES_OK);

    kind_seen k;
    memset(&k, 0, sizeof k);
    es_decoder *dec = es_decoder_new(kind_cb, &k);
    assert_non_null(dec);
    assert_int_equal(es_decoder_feed(dec, s.data, s.len), ES_OK);
    assert_int_equal(es_decoder_finish(dec), ES_OK);
    es_decoder_free(dec);

    assert_int_equal(k.count, 6);
    assert_int_equal(k.kind[0], ES_KIND_EVENT);
    assert_string_equal(k.type[0], "contentBlockDelta");
    assert_string_equal(k.extra[0], "application/json");
    assert_string_equal(k.payload[0], d);
    assert_int_equal(k.kind[1], ES_KIND_EXCEPTION);
    assert_string_equal(k.type[1], "throttlingException");
    assert_string_equal(k.extra[1], "application/json");
    assert_string_equal(k.payload[1], x);
    assert_int_equal(k.kind[2], ES_KIND_ERROR);
    assert_string_equal(k.type[2], "InternalError");
    assert_string_equal(k.extra[2], "it broke");
    assert_string_equal(k.payload[2], "");
    assert_int_equal(k.kind[3], ES_KIND_UNKNOWN);
    assert_int_equal(k.kind[4], ES_KIND_UNKNOWN);
    assert_int_equal(k.kind[5], ES_KIND_UNKNOWN);
    assert_string_equal(k.payload[5], "{}");
    vbuf_free(&s);
}

/* ---- encoder refusals ---- */

static void test_encoder_refuses(void **state)
{
    (void)state;
    vbuf out = VBUF_INIT;
    assert_int_equal(vbuf_append_str(&out, "keep"), 0);
    char name[300];
    memset(name, 'n', sizeof name);
    name[ES_MAX_HEADER_NAME_LEN] = '\0';
    static uint8_t big[ES_MAX_HEADER_VALUE_LEN + 1];

    es_header h = es_header_string("", "v");
    assert_int_equal(es_encode(&out, &h, 1, NULL, 0), ES_ERR_HEADER_NAME_LEN);
    h = es_header_string(name, "v"); /* 255: fine */
    assert_int_equal(es_encode(&out, &h, 1, NULL, 0), ES_OK);
    name[ES_MAX_HEADER_NAME_LEN] = 'n';
    name[ES_MAX_HEADER_NAME_LEN + 1] = '\0';
    vbuf_reset(&out);
    assert_int_equal(vbuf_append_str(&out, "keep"), 0);
    h = es_header_string(name, "v"); /* 256 */
    assert_int_equal(es_encode(&out, &h, 1, NULL, 0), ES_ERR_HEADER_NAME_LEN);
    h = es_header_bytes("b", big, sizeof big);
    assert_int_equal(es_encode(&out, &h, 1, NULL, 0), ES_ERR_HEADER_VALUE_LEN);
    h = es_header_int32("i", 1);
    h.type = (es_header_type)10;
    assert_int_equal(es_encode(&out, &h, 1, NULL, 0), ES_ERR_HEADER_TYPE);
    assert_int_equal(es_encode(&out, NULL, 1, NULL, 0), ES_ERR_INVALID_ARG);
    assert_int_equal(es_encode(&out, NULL, 0, NULL, 1), ES_ERR_INVALID_ARG);
    assert_int_equal(es_encode_event(&out, NULL, "{}", 2), ES_ERR_INVALID_ARG);
    /* a payload length that cannot fit is refused before a byte is read */
    assert_int_equal(es_encode(&out, NULL, 0, big, ES_MAX_MESSAGE_LEN), ES_ERR_MESSAGE_TOO_LONG);
    assert_int_equal(es_encode(&out, NULL, 0, big, SIZE_MAX), ES_ERR_MESSAGE_TOO_LONG);
    assert_int_equal(out.len, 4);
    assert_memory_equal(out.data, "keep", 4);

    /* header block exactly ES_MAX_HEADERS_LEN: encoded and decoded; one more: refused */
    es_header two[2] = {es_header_bytes("a", big, ES_MAX_HEADER_VALUE_LEN),
                        es_header_bytes("b", big, 0)};
    size_t first = 1 + 1 + 1 + 2 + ES_MAX_HEADER_VALUE_LEN;
    two[1].v.bytes.len = ES_MAX_HEADERS_LEN - first - 5;
    vbuf_reset(&out);
    assert_int_equal(es_encode(&out, two, 2, (const uint8_t *)"p", 1), ES_OK);
    assert_int_equal(get_be32(out.data + 4), ES_MAX_HEADERS_LEN);
    collector c = {0};
    assert_int_equal(decode_all(out.data, out.len, &c), ES_OK);
    assert_int_equal(c.count, 1);
    assert_memory_equal(c.reencoded.data, out.data, out.len);
    collector_free(&c);
    two[1].v.bytes.len++;
    vbuf_reset(&out);
    assert_int_equal(es_encode(&out, two, 2, NULL, 0), ES_ERR_HEADERS_LEN);
    assert_int_equal(out.len, 0);
    vbuf_free(&out);
}

static void test_strerror(void **state)
{
    (void)state;
    for (int e = ES_OK; e <= ES_ERR_INVALID_ARG; e++) {
        const char *s = es_strerror((es_err)e);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
        assert_string_not_equal(s, es_strerror((es_err)999));
        for (int f = ES_OK; f < e; f++)
            assert_string_not_equal(s, es_strerror((es_err)f));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aws_vectors),
        cmocka_unit_test(test_roundtrip_all_types),
        cmocka_unit_test(test_roundtrip_empty_and_big_payload),
        cmocka_unit_test(test_split_every_position),
        cmocka_unit_test(test_split_three_ways),
        cmocka_unit_test(test_prelude_bit_flips),
        cmocka_unit_test(test_message_bit_flips),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_error_is_sticky),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_classification),
        cmocka_unit_test(test_encoder_refuses),
        cmocka_unit_test(test_strerror),
    };
    return cmocka_run_group_tests_name("eventstream", tests, NULL, NULL);
}

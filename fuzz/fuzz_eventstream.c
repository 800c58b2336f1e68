/* libFuzzer target for the event-stream decoder (src/aws/eventstream.c).
 *
 * First input byte picks the mode:
 *   even: random bytes, decoded whole and one byte at a time (the two must agree);
 *   odd:  a valid message built from the input, checked to round-trip, then one byte
 *         mutated (must fail the CRC), then mutated again with both CRCs repaired so
 *         the length and header checks are what is exercised.
 * Always: whatever is delivered re-encodes to exactly the bytes it came from.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "aws/eventstream.h"
#include "common/buf.h"

#define CHECK(c)                                                                           \
    do {                                                                                   \
        if (!(c))                                                                          \
            abort();                                                                       \
    } while (0)

#define FUZZ_MAX_HEADERS 8

typedef struct result {
    es_err err;
    size_t count;
    vbuf reencoded;
} result;

static int reencode_cb(const es_message *msg, void *user)
{
    result *r = user;
    r->count++;
    (void)es_message_kind(msg);
    (void)es_message_header_str(msg, ":event-type", NULL);
    CHECK(es_encode(&r->reencoded, msg->headers, msg->header_count, msg->payload,
                    msg->payload_len) == ES_OK);
    return 0;
}

static void decode(const uint8_t *p, size_t n, size_t step, result *r)
{
    memset(r, 0, sizeof *r);
    es_decoder *dec = es_decoder_new(reencode_cb, r);
    CHECK(dec != NULL);
    es_err err = ES_OK;
    for (size_t at = 0; at < n && err == ES_OK; at += step) {
        size_t take = n - at < step ? n - at : step;
        err = es_decoder_feed(dec, p + at, take);
    }
    if (err == ES_OK)
        err = es_decoder_finish(dec);
    CHECK(es_decoder_error(dec) == err);
    r->err = err;
    es_decoder_free(dec);
}

/* Decodes whole and byte by byte; both must agree, and what was delivered must be
 * the exact prefix of the input it came from. */
static es_err decode_checked(const uint8_t *p, size_t n, size_t *count)
{
    result whole, bytes;
    decode(p, n, n ? n : 1, &whole);
    decode(p, n, 1, &bytes);
    CHECK(whole.err == bytes.err);
    CHECK(whole.count == bytes.count);
    CHECK(whole.reencoded.len == bytes.reencoded.len);
    CHECK(whole.reencoded.len <= n);
    if (whole.reencoded.len) {
        CHECK(memcmp(whole.reencoded.data, bytes.reencoded.data, whole.reencoded.len) == 0);
        CHECK(memcmp(whole.reencoded.data, p, whole.reencoded.len) == 0);
    }
    if (whole.err == ES_OK)
        CHECK(whole.reencoded.len == n);
    vbuf_free(&whole.reencoded);
    vbuf_free(&bytes.reencoded);
    if (count)
        *count = whole.count;
    return whole.err;
}

static uint8_t take_u8(cursor *c)
{
    uint8_t v = 0;
    (void)cursor_read_u8(c, &v);
    return v;
}

/* Takes up to n bytes; returns how many were available. */
static size_t take_span(cursor *c, size_t n, const uint8_t **out)
{
    if (n > c->left)
        n = c->left;
    (void)cursor_read_span(c, n, out);
    return n;
}

static void fuzz_correct(const uint8_t *data, size_t size)
{
    static const uint8_t zero[ES_UUID_LEN];
    cursor c = cursor_make(data, size);
    uint16_t pos = (uint16_t)(take_u8(&c) << 8 | take_u8(&c));
    uint8_t flip = take_u8(&c);
    size_t nh = take_u8(&c) % (FUZZ_MAX_HEADERS + 1);
    es_header h[FUZZ_MAX_HEADERS];
    vbuf m = VBUF_INIT;

    for (size_t i = 0; i < nh; i++) {
        const uint8_t *name, *val;
        uint8_t type = take_u8(&c) % 10;
        size_t name_len = take_span(&c, 1 + take_u8(&c) % 16, &name);
        if (name_len == 0) {
            name = (const uint8_t *)"x";
            name_len = 1;
        }
        memset(&h[i], 0, sizeof h[i]);
        h[i].name = (const char *)name;
        h[i].name_len = name_len;
        h[i].type = (es_header_type)type;
        switch (h[i].type) {
        case ES_HEADER_BOOL_TRUE:
        case ES_HEADER_BOOL_FALSE: break;
        case ES_HEADER_BYTE: h[i].v.i8 = (int8_t)take_u8(&c); break;
        case ES_HEADER_INT16: h[i].v.i16 = (int16_t)(take_u8(&c) << 8 | take_u8(&c)); break;
        case ES_HEADER_INT32: h[i].v.i32 = (int32_t)((uint32_t)take_u8(&c) << 24); break;
        case ES_HEADER_INT64: h[i].v.i64 = -(int64_t)take_u8(&c); break;
        case ES_HEADER_TIMESTAMP: h[i].v.timestamp_ms = (int64_t)take_u8(&c) << 40; break;
        case ES_HEADER_UUID:
            if (take_span(&c, ES_UUID_LEN, &val) == ES_UUID_LEN)
                memcpy(h[i].v.uuid, val, ES_UUID_LEN);
            else
                memcpy(h[i].v.uuid, zero, ES_UUID_LEN);
            break;
        case ES_HEADER_BYTES:
        case ES_HEADER_STRING:
            h[i].v.bytes.len = take_span(&c, take_u8(&c) % 32, &val);
            h[i].v.bytes.data = val;
            break;
        }
    }
    CHECK(es_encode(&m, h, nh, c.p, c.left) == ES_OK);

    /* the valid message round-trips exactly */
    size_t count = 0;
    CHECK(decode_checked(m.data, m.len, &count) == ES_OK);
    CHECK(count == 1);

    /* one mutated byte: CRC32 catches every single-byte change */
    size_t at = pos % m.len;
    if (flip) {
        m.data[at] ^= flip;
        es_err want = at < ES_PRELUDE_LEN ? ES_ERR_PRELUDE_CRC : ES_ERR_MESSAGE_CRC;
        CHECK(decode_checked(m.data, m.len, &count) == want);
        CHECK(count == 0);

        /* repair both CRCs: now the limits and the header parser must hold */
        size_t total = m.len;
        put_be32(m.data + 8, (uint32_t)crc32(0L, m.data, 8));
        put_be32(m.data + total - 4, (uint32_t)crc32(0L, m.data, (uInt)(total - 4)));
        (void)decode_checked(m.data, m.len, NULL);
    }
    vbuf_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        fuzz_correct(data + 1, size - 1);
    else
        (void)decode_checked(data + 1, size - 1, NULL);
    return 0;
}

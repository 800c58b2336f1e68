/* eventstream — the event-stream codec (see eventstream.h). Stays whole (~620
 * lines): the decoder's state machine and the encoder are the two halves of one wire
 * format and share its header table, type sizes and CRC.
 */
#include "aws/eventstream.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define ES_HDR_MSG_TYPE ":message-type"
#define ES_HDR_EVENT_TYPE ":event-type"
#define ES_HDR_EXCEPTION_TYPE ":exception-type"
#define ES_HDR_CONTENT_TYPE ":content-type"
#define ES_HDR_ERROR_CODE ":error-code"
#define ES_HDR_ERROR_MESSAGE ":error-message"
#define ES_CONTENT_JSON "application/json"

/* After a message, buffers larger than these are released rather than kept, so one
 * big message does not pin memory for the rest of a long stream. */
#define ES_KEEP_MSG_CAP (64u * 1024)
#define ES_KEEP_HDR_CAP 64
#define ES_HDR_INITIAL_CAP 8

typedef enum es_state {
    ES_STATE_PRELUDE, /* collecting the 12 prelude bytes */
    ES_STATE_MESSAGE, /* prelude verified; collecting up to total_len */
    ES_STATE_FAILED,  /* sticky; refuses all input */
} es_state;

struct es_decoder {
    es_state state;
    es_err err;
    es_message_cb cb;
    void *user;
    uint8_t prelude[ES_PRELUDE_LEN];
    size_t prelude_len;
    uint32_t total_len;   /* trusted only in ES_STATE_MESSAGE */
    uint32_t headers_len; /* idem */
    vbuf msg;             /* the current message, never longer than total_len */
    es_header *hdrs;      /* parsed headers of the current message */
    size_t hdr_cap;
};

const char *es_strerror(es_err err)
{
    switch (err) {
    case ES_OK: return "ok";
    case ES_ERR_PRELUDE_CRC: return "event-stream prelude checksum mismatch";
    case ES_ERR_MESSAGE_CRC: return "event-stream message checksum mismatch";
    case ES_ERR_MESSAGE_TOO_SHORT: return "event-stream message shorter than 16 bytes";
    case ES_ERR_MESSAGE_TOO_LONG: return "event-stream message longer than 16 MiB";
    case ES_ERR_HEADERS_LEN: return "event-stream headers length out of range";
    case ES_ERR_HEADER_NAME_LEN: return "event-stream header name length invalid";
    case ES_ERR_HEADER_TYPE: return "event-stream header has an unknown value type";
    case ES_ERR_HEADER_VALUE_LEN: return "event-stream header value length overruns headers";
    case ES_ERR_HEADER_TRUNCATED: return "event-stream header truncated";
    case ES_ERR_TRUNCATED: return "event-stream truncated inside a message";
    case ES_ERR_NOMEM: return "out of memory";
    case ES_ERR_CALLBACK: return "event-stream message rejected by the consumer";
    case ES_ERR_INVALID_ARG: return "invalid argument";
    }
    return "unknown event-stream error";
}

static uint32_t es_crc32(const uint8_t *p, size_t n)
{
    /* n <= ES_MAX_MESSAGE_LEN everywhere we call this, so it fits uInt */
    return (uint32_t)crc32(0L, p, (uInt)n);
}

/* ---- header constructors ---- */

static es_header header_named(const char *name, es_header_type type)
{
    es_header h;
    memset(&h, 0, sizeof h);
    h.name = name;
    h.name_len = name ? strlen(name) : 0;
    h.type = type;
    return h;
}

es_header es_header_string_n(const char *name, const char *value, size_t len)
{
    es_header h = header_named(name, ES_HEADER_STRING);
    h.v.bytes.data = (const uint8_t *)value;
    h.v.bytes.len = len;
    return h;
}

es_header es_header_string(const char *name, const char *value)
{
    return es_header_string_n(name, value, value ? strlen(value) : 0);
}

es_header es_header_bytes(const char *name, const uint8_t *value, size_t len)
{
    es_header h = header_named(name, ES_HEADER_BYTES);
    h.v.bytes.data = value;
    h.v.bytes.len = len;
    return h;
}

es_header es_header_bool(const char *name, bool value)
{
    es_header h = header_named(name, value ? ES_HEADER_BOOL_TRUE : ES_HEADER_BOOL_FALSE);
    h.v.b = value;
    return h;
}

es_header es_header_byte(const char *name, int8_t value)
{
    es_header h = header_named(name, ES_HEADER_BYTE);
    h.v.i8 = value;
    return h;
}

es_header es_header_int16(const char *name, int16_t value)
{
    es_header h = header_named(name, ES_HEADER_INT16);
    h.v.i16 = value;
    return h;
}

es_header es_header_int32(const char *name, int32_t value)
{
    es_header h = header_named(name, ES_HEADER_INT32);
    h.v.i32 = value;
    return h;
}

es_header es_header_int64(const char *name, int64_t value)
{
    es_header h = header_named(name, ES_HEADER_INT64);
    h.v.i64 = value;
    return h;
}

es_header es_header_timestamp(const char *name, int64_t ms)
{
    es_header h = header_named(name, ES_HEADER_TIMESTAMP);
    h.v.timestamp_ms = ms;
    return h;
}

es_header es_header_uuid(const char *name, const uint8_t uuid[ES_UUID_LEN])
{
    es_header h = header_named(name, ES_HEADER_UUID);
    memcpy(h.v.uuid, uuid, ES_UUID_LEN);
    return h;
}

/* ---- message accessors ---- */

const es_header *es_message_header(const es_message *msg, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < msg->header_count; i++) {
        const es_header *h = &msg->headers[i];
        if (h->name_len == n && memcmp(h->name, name, n) == 0)
            return h;
    }
    return NULL;
}

const char *es_message_header_str(const es_message *msg, const char *name, size_t *len)
{
    const es_header *h = es_message_header(msg, name);
    if (!h || h->type != ES_HEADER_STRING)
        return NULL;
    if (len)
        *len = h->v.bytes.len;
    return (const char *)h->v.bytes.data;
}

static bool span_equals(const char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

es_kind es_message_kind(const es_message *msg)
{
    size_t n;
    const char *t = es_message_header_str(msg, ES_HDR_MSG_TYPE, &n);
    if (!t)
        return ES_KIND_UNKNOWN;
    if (span_equals(t, n, "event"))
        return ES_KIND_EVENT;
    if (span_equals(t, n, "exception"))
        return ES_KIND_EXCEPTION;
    if (span_equals(t, n, "error"))
        return ES_KIND_ERROR;
    return ES_KIND_UNKNOWN;
}

/* ---- decoder ---- */

es_decoder *es_decoder_new(es_message_cb cb, void *user)
{
    es_decoder *dec = calloc(1, sizeof *dec);
    if (!dec)
        return NULL;
    dec->state = ES_STATE_PRELUDE;
    dec->err = ES_OK;
    dec->cb = cb;
    dec->user = user;
    return dec;
}

void es_decoder_free(es_decoder *dec)
{
    if (!dec)
        return;
    vbuf_free(&dec->msg);
    free(dec->hdrs);
    free(dec);
}

es_err es_decoder_error(const es_decoder *dec)
{
    return dec->err;
}

static es_err decoder_fail(es_decoder *dec, es_err err)
{
    dec->state = ES_STATE_FAILED;
    dec->err = err;
    return err;
}

/* Integrity before lengths: the CRC first, then the limits (aws-c-event-stream order). */
static es_err check_prelude(es_decoder *dec)
{
    const uint8_t *p = dec->prelude;
    if (es_crc32(p, 8) != get_be32(p + 8))
        return ES_ERR_PRELUDE_CRC;
    uint32_t total = get_be32(p);
    uint32_t hlen = get_be32(p + 4);
    if (total < ES_MIN_MESSAGE_LEN)
        return ES_ERR_MESSAGE_TOO_SHORT;
    if (total > ES_MAX_MESSAGE_LEN)
        return ES_ERR_MESSAGE_TOO_LONG;
    if (hlen > total - ES_MIN_MESSAGE_LEN || hlen > ES_MAX_HEADERS_LEN)
        return ES_ERR_HEADERS_LEN;
    dec->total_len = total;
    dec->headers_len = hlen;
    return ES_OK;
}

static es_err push_header(es_decoder *dec, size_t n, const es_header *h)
{
    if (n == dec->hdr_cap) {
        /* bounded: ES_MAX_HEADERS_LEN / 3 (the smallest header) entries at most */
        size_t cap = dec->hdr_cap ? dec->hdr_cap * 2 : ES_HDR_INITIAL_CAP;
        es_header *p = realloc(dec->hdrs, cap * sizeof *p);
        if (!p)
            return ES_ERR_NOMEM;
        dec->hdrs = p;
        dec->hdr_cap = cap;
    }
    dec->hdrs[n] = *h;
    return ES_OK;
}

/* Strict: every header must fit the block exactly; the first bad byte is an error. */
static es_err parse_headers(es_decoder *dec, const uint8_t *block, size_t block_len,
                            size_t *count)
{
    cursor c = cursor_make(block, block_len);
    size_t n = 0;
    es_err err = ES_OK;

    while (c.left > 0) {
        es_header h;
        uint8_t name_len, type;
        const uint8_t *name;
        memset(&h, 0, sizeof h);

        if (!cursor_read_u8(&c, &name_len) || name_len == 0 ||
            !cursor_read_span(&c, name_len, &name)) {
            err = ES_ERR_HEADER_NAME_LEN;
            goto out;
        }
        if (!cursor_read_u8(&c, &type)) {
            err = ES_ERR_HEADER_TRUNCATED;
            goto out;
        }
        h.name = (const char *)name;
        h.name_len = name_len;
        h.type = (es_header_type)type;

        bool ok = true;
        uint8_t u8 = 0;
        uint16_t u16 = 0;
        uint32_t u32 = 0;
        uint64_t u64 = 0;
        const uint8_t *span = NULL;
        switch (type) {
        case ES_HEADER_BOOL_TRUE: h.v.b = true; break;
        case ES_HEADER_BOOL_FALSE: h.v.b = false; break;
        case ES_HEADER_BYTE:
            ok = cursor_read_u8(&c, &u8);
            h.v.i8 = (int8_t)u8;
            break;
        case ES_HEADER_INT16:
            ok = cursor_read_be16(&c, &u16);
            h.v.i16 = (int16_t)u16;
            break;
        case ES_HEADER_INT32:
            ok = cursor_read_be32(&c, &u32);
            h.v.i32 = (int32_t)u32;
            break;
        case ES_HEADER_INT64:
            ok = cursor_read_be64(&c, &u64);
            h.v.i64 = (int64_t)u64;
            break;
        case ES_HEADER_TIMESTAMP:
            ok = cursor_read_be64(&c, &u64);
            h.v.timestamp_ms = (int64_t)u64;
            break;
        case ES_HEADER_UUID:
            ok = cursor_read_span(&c, ES_UUID_LEN, &span);
            if (ok)
                memcpy(h.v.uuid, span, ES_UUID_LEN);
            break;
        case ES_HEADER_BYTES:
        case ES_HEADER_STRING:
            if (!cursor_read_be16(&c, &u16)) {
                err = ES_ERR_HEADER_TRUNCATED;
                goto out;
            }
            if (!cursor_read_span(&c, u16, &span)) {
                err = ES_ERR_HEADER_VALUE_LEN;
                goto out;
            }
            h.v.bytes.data = span;
            h.v.bytes.len = u16;
            break;
        default:
            err = ES_ERR_HEADER_TYPE;
            goto out;
        }
        if (!ok) {
            err = ES_ERR_HEADER_TRUNCATED;
            goto out;
        }
        err = push_header(dec, n, &h);
        if (err != ES_OK)
            goto out;
        n++;
    }
    *count = n;
out:
    return err;
}

/* The whole message is buffered: verify the message CRC, parse, then deliver. */
static es_err deliver(es_decoder *dec)
{
    const uint8_t *m = dec->msg.data;
    size_t total = dec->msg.len;
    size_t hlen = dec->headers_len;
    size_t count = 0;
    es_err err;

    if (es_crc32(m, total - ES_TRAILER_LEN) != get_be32(m + total - ES_TRAILER_LEN))
        return ES_ERR_MESSAGE_CRC;
    err = parse_headers(dec, m + ES_PRELUDE_LEN, hlen, &count);
    if (err != ES_OK)
        return err;

    es_message msg = {
        .headers = dec->hdrs,
        .header_count = count,
        .payload = m + ES_PRELUDE_LEN + hlen,
        .payload_len = total - ES_MIN_MESSAGE_LEN - hlen,
    };
    if (dec->cb && dec->cb(&msg, dec->user) != 0)
        return ES_ERR_CALLBACK;
    return ES_OK;
}

static void next_message(es_decoder *dec)
{
    dec->state = ES_STATE_PRELUDE;
    dec->prelude_len = 0;
    dec->total_len = dec->headers_len = 0;
    if (dec->msg.cap > ES_KEEP_MSG_CAP)
        vbuf_free(&dec->msg);
    else
        vbuf_reset(&dec->msg);
    if (dec->hdr_cap > ES_KEEP_HDR_CAP) {
        free(dec->hdrs);
        dec->hdrs = NULL;
        dec->hdr_cap = 0;
    }
}

es_err es_decoder_feed(es_decoder *dec, const uint8_t *data, size_t len)
{
    es_err err;

    if (dec->state == ES_STATE_FAILED)
        return dec->err;
    if (!data && len > 0)
        return decoder_fail(dec, ES_ERR_INVALID_ARG);

    while (len > 0) {
        if (dec->state == ES_STATE_PRELUDE) {
            size_t take = ES_PRELUDE_LEN - dec->prelude_len;
            if (take > len)
                take = len;
            memcpy(dec->prelude + dec->prelude_len, data, take);
            dec->prelude_len += take;
            data += take;
            len -= take;
            if (dec->prelude_len < ES_PRELUDE_LEN)
                break;
            err = check_prelude(dec);
            if (err != ES_OK)
                return decoder_fail(dec, err);
            /* only now is total_len trusted enough to size a buffer by */
            vbuf_reset(&dec->msg);
            if (vbuf_reserve(&dec->msg, dec->total_len) < 0)
                return decoder_fail(dec, ES_ERR_NOMEM);
            (void)vbuf_append(&dec->msg, dec->prelude, ES_PRELUDE_LEN); /* reserved */
            dec->state = ES_STATE_MESSAGE;
            continue;
        }

        /* ES_STATE_MESSAGE */
        size_t take = dec->total_len - dec->msg.len;
        if (take > len)
            take = len;
        (void)vbuf_append(&dec->msg, data, take); /* within the reservation */
        data += take;
        len -= take;
        if (dec->msg.len < dec->total_len)
            break;
        err = deliver(dec);
        if (err != ES_OK)
            return decoder_fail(dec, err);
        next_message(dec);
    }
    return ES_OK;
}

es_err es_decoder_finish(es_decoder *dec)
{
    if (dec->state == ES_STATE_FAILED)
        return dec->err;
    if (dec->state == ES_STATE_MESSAGE || dec->prelude_len > 0)
        return decoder_fail(dec, ES_ERR_TRUNCATED);
    return ES_OK;
}

/* ---- encoder ---- */

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

/* Wire size of one header, or 0 with *err set. */
static size_t header_wire_size(const es_header *h, es_err *err)
{
    if (h->name_len == 0 || h->name_len > ES_MAX_HEADER_NAME_LEN) {
        *err = ES_ERR_HEADER_NAME_LEN;
        return 0;
    }
    if (!h->name) {
        *err = ES_ERR_INVALID_ARG;
        return 0;
    }
    size_t base = 1 + h->name_len + 1;
    switch (h->type) {
    case ES_HEADER_BOOL_TRUE:
    case ES_HEADER_BOOL_FALSE: return base;
    case ES_HEADER_BYTE: return base + 1;
    case ES_HEADER_INT16: return base + 2;
    case ES_HEADER_INT32: return base + 4;
    case ES_HEADER_INT64:
    case ES_HEADER_TIMESTAMP: return base + 8;
    case ES_HEADER_UUID: return base + ES_UUID_LEN;
    case ES_HEADER_BYTES:
    case ES_HEADER_STRING:
        if (h->v.bytes.len > ES_MAX_HEADER_VALUE_LEN) {
            *err = ES_ERR_HEADER_VALUE_LEN;
            return 0;
        }
        if (!h->v.bytes.data && h->v.bytes.len > 0) {
            *err = ES_ERR_INVALID_ARG;
            return 0;
        }
        return base + 2 + h->v.bytes.len;
    }
    *err = ES_ERR_HEADER_TYPE;
    return 0;
}

static uint8_t *write_header(uint8_t *p, const es_header *h)
{
    *p++ = (uint8_t)h->name_len;
    memcpy(p, h->name, h->name_len);
    p += h->name_len;
    *p++ = (uint8_t)h->type;
    switch (h->type) {
    case ES_HEADER_BOOL_TRUE:
    case ES_HEADER_BOOL_FALSE: break;
    case ES_HEADER_BYTE: *p++ = (uint8_t)h->v.i8; break;
    case ES_HEADER_INT16:
        put_be16(p, (uint16_t)h->v.i16);
        p += 2;
        break;
    case ES_HEADER_INT32:
        put_be32(p, (uint32_t)h->v.i32);
        p += 4;
        break;
    case ES_HEADER_INT64:
        put_be64(p, (uint64_t)h->v.i64);
        p += 8;
        break;
    case ES_HEADER_TIMESTAMP:
        put_be64(p, (uint64_t)h->v.timestamp_ms);
        p += 8;
        break;
    case ES_HEADER_UUID:
        memcpy(p, h->v.uuid, ES_UUID_LEN);
        p += ES_UUID_LEN;
        break;
    case ES_HEADER_BYTES:
    case ES_HEADER_STRING:
        put_be16(p, (uint16_t)h->v.bytes.len);
        p += 2;
        if (h->v.bytes.len)
            memcpy(p, h->v.bytes.data, h->v.bytes.len);
        p += h->v.bytes.len;
        break;
    }
    return p;
}

es_err es_encode(vbuf *out, const es_header *headers, size_t n, const uint8_t *payload,
                 size_t len)
{
    es_err err = ES_OK;
    size_t hlen = 0;

    if ((!headers && n > 0) || (!payload && len > 0))
        return ES_ERR_INVALID_ARG;
    /* size everything first, so a failure appends nothing */
    for (size_t i = 0; i < n; i++) {
        size_t sz = header_wire_size(&headers[i], &err);
        if (sz == 0)
            return err;
        hlen += sz;
        if (hlen > ES_MAX_HEADERS_LEN)
            return ES_ERR_HEADERS_LEN;
    }
    if (len > ES_MAX_MESSAGE_LEN - ES_MIN_MESSAGE_LEN - hlen)
        return ES_ERR_MESSAGE_TOO_LONG;
    size_t total = ES_MIN_MESSAGE_LEN + hlen + len;
    if (vbuf_reserve(out, total) < 0)
        return ES_ERR_NOMEM;

    uint8_t *start = out->data + out->len;
    uint8_t *p = start;
    put_be32(p, (uint32_t)total);
    put_be32(p + 4, (uint32_t)hlen);
    put_be32(p + 8, es_crc32(p, 8));
    p += ES_PRELUDE_LEN;
    for (size_t i = 0; i < n; i++)
        p = write_header(p, &headers[i]);
    if (len)
        memcpy(p, payload, len);
    p += len;
    put_be32(p, es_crc32(start, total - ES_TRAILER_LEN));
    out->len += total;
    return ES_OK;
}

es_err es_encode_event(vbuf *out, const char *event_type, const char *json_payload, size_t len)
{
    es_header h[3] = {
        es_header_string(ES_HDR_EVENT_TYPE, event_type),
        es_header_string(ES_HDR_CONTENT_TYPE, ES_CONTENT_JSON),
        es_header_string(ES_HDR_MSG_TYPE, "event"),
    };
    if (!event_type)
        return ES_ERR_INVALID_ARG;
    return es_encode(out, h, 3, (const uint8_t *)json_payload, len);
}

es_err es_encode_exception(vbuf *out, const char *exception_type, const char *json_payload,
                           size_t len)
{
    es_header h[3] = {
        es_header_string(ES_HDR_EXCEPTION_TYPE, exception_type),
        es_header_string(ES_HDR_CONTENT_TYPE, ES_CONTENT_JSON),
        es_header_string(ES_HDR_MSG_TYPE, "exception"),
    };
    if (!exception_type)
        return ES_ERR_INVALID_ARG;
    return es_encode(out, h, 3, (const uint8_t *)json_payload, len);
}

es_err es_encode_error(vbuf *out, const char *error_code, const char *error_message)
{
    es_header h[3] = {
        es_header_string(ES_HDR_ERROR_CODE, error_code),
        es_header_string(ES_HDR_ERROR_MESSAGE, error_message),
        es_header_string(ES_HDR_MSG_TYPE, "error"),
    };
    if (!error_code || !error_message)
        return ES_ERR_INVALID_ARG;
    return es_encode(out, h, 3, NULL, 0);
}

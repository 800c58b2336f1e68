/* eventstream — the AWS event-stream codec (application/vnd.amazon.eventstream).
 *
 * es_decoder is a streaming state machine: feed it any byte slices; it checks the
 * prelude CRC before it trusts a length, then the limits, the message CRC and every
 * header, and only then hands the caller one verified message. The decoder owns its
 * buffers (one message at most); the views it passes to the callback point into them
 * and are valid only during the callback. The encoder appends to a caller-owned vbuf.
 */
#ifndef VEIL_EVENTSTREAM_H
#define VEIL_EVENTSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define ES_PRELUDE_LEN 12 /* total_len u32 | headers_len u32 | prelude_crc u32 */
#define ES_TRAILER_LEN 4  /* message_crc u32 */
#define ES_MIN_MESSAGE_LEN (ES_PRELUDE_LEN + ES_TRAILER_LEN)
#define ES_MAX_MESSAGE_LEN (16u * 1024 * 1024) /* the AWS limit (aws-c-event-stream) */
#define ES_MAX_HEADERS_LEN (128u * 1024)       /* the AWS limit on the header block */
#define ES_MAX_HEADER_NAME_LEN 255             /* name_len is one byte */
#define ES_MAX_HEADER_VALUE_LEN 65535          /* byte-array/string len is u16 */
#define ES_UUID_LEN 16

typedef enum es_err {
    ES_OK = 0,
    ES_ERR_PRELUDE_CRC,       /* prelude CRC mismatch: lengths untrusted */
    ES_ERR_MESSAGE_CRC,       /* message CRC mismatch */
    ES_ERR_MESSAGE_TOO_SHORT, /* total_len < 16 */
    ES_ERR_MESSAGE_TOO_LONG,  /* total_len > ES_MAX_MESSAGE_LEN */
    ES_ERR_HEADERS_LEN,       /* headers_len > total_len - 16 or > ES_MAX_HEADERS_LEN */
    ES_ERR_HEADER_NAME_LEN,   /* name_len 0, or the name overruns the header block */
    ES_ERR_HEADER_TYPE,       /* unknown header value type */
    ES_ERR_HEADER_VALUE_LEN,  /* byte-array/string length overruns the header block */
    ES_ERR_HEADER_TRUNCATED,  /* header block ends inside a type byte or fixed value */
    ES_ERR_TRUNCATED,         /* end of stream inside a message */
    ES_ERR_NOMEM,
    ES_ERR_CALLBACK,          /* the message callback returned non-zero */
    ES_ERR_INVALID_ARG,       /* encoder: NULL pointer with a non-zero length */
} es_err;

const char *es_strerror(es_err err);

typedef enum es_header_type {
    ES_HEADER_BOOL_TRUE = 0, /* no value bytes */
    ES_HEADER_BOOL_FALSE = 1,
    ES_HEADER_BYTE = 2,
    ES_HEADER_INT16 = 3,
    ES_HEADER_INT32 = 4,
    ES_HEADER_INT64 = 5,
    ES_HEADER_BYTES = 6,     /* u16be len + bytes */
    ES_HEADER_STRING = 7,    /* u16be len + bytes (not NUL-terminated, not checked UTF-8) */
    ES_HEADER_TIMESTAMP = 8, /* int64be, milliseconds since the epoch */
    ES_HEADER_UUID = 9,      /* 16 bytes */
} es_header_type;

/* One header. Decoded: name and bytes point into the decoder's buffer. Encoded:
 * they point at caller memory. For the encoder, BOOL_TRUE/BOOL_FALSE come from
 * type alone (v.b is ignored). */
typedef struct es_header {
    const char *name; /* not NUL-terminated */
    size_t name_len;
    es_header_type type;
    union {
        bool b;
        int8_t i8;
        int16_t i16;
        int32_t i32;
        int64_t i64;
        int64_t timestamp_ms;
        uint8_t uuid[ES_UUID_LEN];
        struct {
            const uint8_t *data;
            size_t len;
        } bytes; /* ES_HEADER_BYTES and ES_HEADER_STRING */
    } v;
} es_header;

/* Constructors for the encoder; names and values are borrowed, not copied. */
es_header es_header_string(const char *name, const char *value); /* strlen(value) */
es_header es_header_string_n(const char *name, const char *value, size_t len);
es_header es_header_bytes(const char *name, const uint8_t *value, size_t len);
es_header es_header_bool(const char *name, bool value);
es_header es_header_byte(const char *name, int8_t value);
es_header es_header_int16(const char *name, int16_t value);
es_header es_header_int32(const char *name, int32_t value);
es_header es_header_int64(const char *name, int64_t value);
es_header es_header_timestamp(const char *name, int64_t ms);
es_header es_header_uuid(const char *name, const uint8_t uuid[ES_UUID_LEN]);

/* A verified message as the callback sees it; everything is valid only during
 * the callback. */
typedef struct es_message {
    const es_header *headers;
    size_t header_count;
    const uint8_t *payload;
    size_t payload_len;
} es_message;

/* The first header called name (exact, case-sensitive), or NULL. */
const es_header *es_message_header(const es_message *msg, const char *name);
/* The value of the first header called name if it is a string, else NULL. The
 * result is NOT NUL-terminated: use *len (which may be NULL if unwanted). */
const char *es_message_header_str(const es_message *msg, const char *name, size_t *len);

typedef enum es_kind {
    ES_KIND_UNKNOWN = 0, /* :message-type absent, not a string or not recognised */
    ES_KIND_EVENT,       /* :event-type names the event */
    ES_KIND_EXCEPTION,   /* :exception-type names it; payload {"message":...} */
    ES_KIND_ERROR,       /* :error-code and :error-message */
} es_kind;

/* Classifies by :message-type. The caller must act on EXCEPTION, ERROR and UNKNOWN
 * (the original ignored in-stream exceptions and truncated answers silently). */
es_kind es_message_kind(const es_message *msg);

/* ---- decoder ---- */

/* Return 0 to continue; non-zero stops decoding with ES_ERR_CALLBACK. The callback
 * must not feed, finish or free the decoder that called it. */
typedef int (*es_message_cb)(const es_message *msg, void *user);

typedef struct es_decoder es_decoder;

es_decoder *es_decoder_new(es_message_cb cb, void *user); /* NULL on ENOMEM */
void es_decoder_free(es_decoder *dec);                    /* NULL is a no-op */

/* Consumes all len bytes, calling cb once per complete verified message, in order.
 * Input may be split at any byte. Returns ES_OK, or the error that put the decoder
 * into its error state; once failed, every later call returns that same error and
 * consumes nothing. */
es_err es_decoder_feed(es_decoder *dec, const uint8_t *data, size_t len);

/* Call at end of stream: ES_ERR_TRUNCATED if a partial message is buffered (a cut
 * stream is an error, never a silent end), the sticky error if one occurred, else
 * ES_OK. */
es_err es_decoder_finish(es_decoder *dec);

/* The sticky error, or ES_OK. */
es_err es_decoder_error(const es_decoder *dec);

/* ---- encoder ---- */

/* Appends one complete framed message with both CRCs. On error nothing is appended.
 * payload may be NULL when len is 0. */
es_err es_encode(vbuf *out, const es_header *headers, size_t n, const uint8_t *payload,
                 size_t len);

/* :event-type, :content-type application/json, :message-type event. */
es_err es_encode_event(vbuf *out, const char *event_type, const char *json_payload, size_t len);
/* :exception-type, :content-type application/json, :message-type exception. */
es_err es_encode_exception(vbuf *out, const char *exception_type, const char *json_payload,
                           size_t len);
/* :error-code, :error-message, :message-type error; empty payload. */
es_err es_encode_error(vbuf *out, const char *error_code, const char *error_message);

#endif

/* http1_chunked — the streaming chunked-body decoder (RFC 9112 §7.1): a byte-at-a-time
 * state machine that accepts input split anywhere, keeps no input, bounds the size
 * line, the extensions and the trailers, and hands data to the caller as it arrives.
 */
#include <stdint.h>
#include <string.h>

#include "common/hex.h"
#include "net/http1.h"
#include "net/http1_int.h"

#define CHUNK_SIZE_MAX_DIGITS 16 /* leading zeros beyond this are not a size, they are an attack */

enum chunked_state {
    CH_SIZE,          /* hex digits of the chunk size */
    CH_SIZE_WS,       /* BWS after the size, only before a ';' */
    CH_EXT,           /* chunk extensions: checked, bounded, ignored */
    CH_SIZE_LF,
    CH_DATA,
    CH_DATA_CR,
    CH_DATA_LF,
    CH_TRAILER_START, /* start of a trailer field, or the CR of the final CRLF */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_FINAL_LF,
    CH_DONE,
};

void http1_chunked_init(http1_chunked *dec)
{
    if (dec)
        memset(dec, 0, sizeof *dec);
}

bool http1_chunked_done(const http1_chunked *dec)
{
    return dec && dec->err == 0 && dec->state == CH_DONE;
}

/* One byte of the chunk-size line. */
static int chunked_size_byte(http1_chunked *dec, unsigned char c)
{
    if (++dec->line_len > HTTP1_MAX_CHUNK_LINE)
        return dec->state == CH_EXT ? HTTP1_ERR_BAD_CHUNK_EXT : HTTP1_ERR_BAD_CHUNK_SIZE;
    switch (dec->state) {
    case CH_SIZE: {
        int d = hex_digit_value(c);
        if (d >= 0) {
            if (++dec->size_digits > CHUNK_SIZE_MAX_DIGITS)
                return HTTP1_ERR_BAD_CHUNK_SIZE;
            /* remaining <= HTTP1_MAX_CHUNK_SIZE here, so this cannot overflow */
            dec->remaining = dec->remaining * 16 + (uint64_t)d;
            if (dec->remaining > HTTP1_MAX_CHUNK_SIZE)
                return HTTP1_ERR_CHUNK_TOO_LARGE;
            return HTTP1_OK;
        }
        if (dec->size_digits == 0)
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        if (c == '\r')
            dec->state = CH_SIZE_LF;
        else if (c == ';')
            dec->state = CH_EXT;
        else if (http1i_is_ows(c))
            dec->state = CH_SIZE_WS;
        else
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        return HTTP1_OK;
    }
    case CH_SIZE_WS:
        if (c == ';')
            dec->state = CH_EXT;
        else if (!http1i_is_ows(c))
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        return HTTP1_OK;
    case CH_EXT:
        /* CR cannot occur inside an extension (not even quoted), so it ends the line */
        if (c == '\r')
            dec->state = CH_SIZE_LF;
        else if (!http1i_is_field_char(c))
            return HTTP1_ERR_BAD_CHUNK_EXT;
        return HTTP1_OK;
    default: /* CH_SIZE_LF */
        if (c != '\n')
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        dec->state = dec->remaining ? CH_DATA : CH_TRAILER_START;
        return HTTP1_OK;
    }
}

/* One byte of the trailer section (after the last chunk). */
static int chunked_trailer_byte(http1_chunked *dec, unsigned char c)
{
    if (++dec->trailer_len > HTTP1_MAX_TRAILER_SIZE)
        return HTTP1_ERR_BAD_TRAILER;
    switch (dec->state) {
    case CH_TRAILER_START:
        if (c == '\r') {
            dec->state = CH_FINAL_LF;
        } else if (http1i_is_tchar(c)) {
            if (++dec->trailer_count > HTTP1_MAX_HEADERS)
                return HTTP1_ERR_BAD_TRAILER;
            dec->state = CH_TRAILER_NAME;
        } else {
            return HTTP1_ERR_BAD_TRAILER; /* including obs-fold */
        }
        return HTTP1_OK;
    case CH_TRAILER_NAME:
        if (c == ':')
            dec->state = CH_TRAILER_VALUE;
        else if (!http1i_is_tchar(c))
            return HTTP1_ERR_BAD_TRAILER;
        return HTTP1_OK;
    case CH_TRAILER_VALUE:
        if (c == '\r')
            dec->state = CH_TRAILER_LF;
        else if (!http1i_is_field_char(c))
            return HTTP1_ERR_BAD_TRAILER;
        return HTTP1_OK;
    case CH_TRAILER_LF:
        if (c != '\n')
            return HTTP1_ERR_BAD_TRAILER;
        dec->state = CH_TRAILER_START;
        return HTTP1_OK;
    default: /* CH_FINAL_LF */
        if (c != '\n')
            return HTTP1_ERR_BAD_TRAILER;
        dec->state = CH_DONE;
        return HTTP1_OK;
    }
}

ptrdiff_t http1_chunked_feed(http1_chunked *dec, const void *in, size_t len, http1_data_cb cb,
                             void *ctx)
{
    if (!dec || (!in && len))
        return HTTP1_ERR_INVALID_ARG;
    if (dec->err)
        return dec->err;
    if (len > (size_t)PTRDIFF_MAX)
        len = (size_t)PTRDIFF_MAX; /* the return value must be able to say how much we took */
    cursor c = cursor_make(in, len);
    int rc = HTTP1_OK;
    while (c.left && dec->state != CH_DONE) {
        if (dec->state == CH_DATA) {
            /* hand data over as it arrives: never wait for the whole chunk */
            size_t n = dec->remaining < c.left ? (size_t)dec->remaining : c.left;
            const uint8_t *p;
            if (!cursor_read_span(&c, n, &p)) {
                rc = HTTP1_ERR_INVALID_ARG;
                goto out;
            }
            dec->remaining -= n;
            if (dec->remaining == 0)
                dec->state = CH_DATA_CR;
            if (cb && cb(ctx, p, n) != 0) {
                rc = HTTP1_ERR_CALLBACK;
                goto out;
            }
            continue;
        }
        uint8_t b;
        if (!cursor_read_u8(&c, &b)) {
            rc = HTTP1_ERR_INVALID_ARG;
            goto out;
        }
        switch (dec->state) {
        case CH_SIZE:
        case CH_SIZE_WS:
        case CH_EXT:
        case CH_SIZE_LF:
            rc = chunked_size_byte(dec, b);
            break;
        case CH_DATA_CR:
            if (b != '\r')
                rc = HTTP1_ERR_BAD_CHUNK_CRLF;
            dec->state = CH_DATA_LF;
            break;
        case CH_DATA_LF:
            if (b != '\n')
                rc = HTTP1_ERR_BAD_CHUNK_CRLF;
            dec->state = CH_SIZE;
            dec->remaining = 0;
            dec->line_len = 0;
            dec->size_digits = 0;
            break;
        default:
            rc = chunked_trailer_byte(dec, b);
            break;
        }
        if (rc != HTTP1_OK)
            goto out;
    }
out:
    if (rc != HTTP1_OK) {
        dec->err = rc;
        return rc;
    }
    return (ptrdiff_t)(len - c.left);
}

static int append_to_vbuf(void *ctx, const uint8_t *data, size_t len)
{
    return vbuf_append(ctx, data, len);
}

ptrdiff_t http1_chunked_feed_vbuf(http1_chunked *dec, const void *in, size_t len, vbuf *out)
{
    if (!out)
        return HTTP1_ERR_INVALID_ARG;
    return http1_chunked_feed(dec, in, len, append_to_vbuf, out);
}

/* http1 — pure HTTP/1.1 parsers: response heads (outbound client), CONNECT request
 * heads (veil-proxy), request heads (the Bedrock/IMDS simulators) and a streaming
 * chunked-body decoder. No sockets, no allocation, no logging.
 * Every pointer a parser writes into its output struct points into the caller's
 * input buffer, so the output is valid only while that buffer is alive and unchanged.
 * The chunked decoder keeps no input: data is handed to the caller's callback as it arrives.
 * Three files: http1.c (response and request heads), http1_connect.c (CONNECT heads),
 * http1_chunked.c (the chunked decoder).
 */
#ifndef VEIL_HTTP1_H
#define VEIL_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Protocol limits. */
#define HTTP1_MAX_HEAD_SIZE (64 * 1024)        /* response and request heads, CRLF CRLF included */
#define HTTP1_MAX_CONNECT_HEAD_SIZE (8 * 1024) /* a CONNECT head is a few short lines */
#define HTTP1_MAX_HEADERS 100
#define HTTP1_MAX_CHUNK_SIZE (16u * 1024 * 1024) /* per chunk; Bedrock chunks are small */
#define HTTP1_MAX_CHUNK_LINE 4096  /* chunk-size line: size digits plus extensions */
#define HTTP1_MAX_TRAILER_SIZE 8192 /* all trailer lines together */
#define HTTP1_MAX_HOST_LEN 253      /* DNS name, without the trailing dot */
#define HTTP1_HOST_BUF (HTTP1_MAX_HOST_LEN + 1)

/* Return values. Parsers return the bytes consumed (> 0), HTTP1_NEED_MORE, or one
 * of the negative errors below. HTTP1_OK is returned only where noted. */
enum http1_status {
    HTTP1_OK = 0,
    HTTP1_ERR_INVALID_ARG = -1,    /* NULL pointer, or an output buffer too small */
    HTTP1_NEED_MORE = -2,          /* the head is incomplete: read more, call again */
    HTTP1_ERR_BAD_STATUS_LINE = -3,
    HTTP1_ERR_BAD_REQUEST_LINE = -4,
    HTTP1_ERR_BAD_VERSION = -5,
    HTTP1_ERR_BAD_TARGET = -6,     /* request-target is not origin-form */
    HTTP1_ERR_BAD_HEADER = -7,     /* bad name, bad value byte, missing colon, bare LF */
    HTTP1_ERR_OBS_FOLD = -8,       /* line folding (obsolete, a smuggling vector) */
    HTTP1_ERR_HEAD_TOO_LARGE = -9,
    HTTP1_ERR_TOO_MANY_HEADERS = -10,
    HTTP1_ERR_BAD_CONTENT_LENGTH = -11, /* not decimal, too large, or duplicates disagree */
    HTTP1_ERR_UNSUPPORTED_TE = -12,     /* any transfer coding other than one final "chunked" */
    HTTP1_ERR_BAD_FRAMING = -13,        /* both Content-Length and Transfer-Encoding */
    HTTP1_ERR_BAD_CHUNK_SIZE = -14,
    HTTP1_ERR_CHUNK_TOO_LARGE = -15,
    HTTP1_ERR_BAD_CHUNK_EXT = -16,
    HTTP1_ERR_BAD_CHUNK_CRLF = -17,     /* chunk data not followed by CRLF */
    HTTP1_ERR_BAD_TRAILER = -18,
    HTTP1_ERR_CALLBACK = -19,           /* the data callback asked to stop */
    HTTP1_ERR_NOT_CONNECT = -20,        /* a valid method, but not CONNECT (405) */
    HTTP1_ERR_BAD_AUTHORITY = -21,      /* CONNECT host is empty, malformed or not allowed */
    HTTP1_ERR_BAD_PORT = -22,           /* CONNECT port missing, not decimal, or 0/>65535 */
};

/* A short, fixed English description of any value above (never NULL). */
const char *http1_strerror(int err);

/* One header line. name and value point into the parsed buffer and are NOT
 * NUL-terminated; value has its surrounding whitespace trimmed. */
typedef struct http1_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
} http1_header;

typedef struct http1_headers {
    http1_header h[HTTP1_MAX_HEADERS];
    size_t n;
} http1_headers;

/* Case-insensitive lookup of the first header named name. Returns its value (not
 * NUL-terminated, length in *value_len if value_len is non-NULL) or NULL. */
const char *http1_header_get(const http1_headers *hs, const char *name, size_t *value_len);

typedef enum http1_body {
    HTTP1_BODY_NONE = 0,       /* no body (204/304/1xx, or a request without framing) */
    HTTP1_BODY_CONTENT_LENGTH, /* exactly content_length bytes follow */
    HTTP1_BODY_CHUNKED,        /* decode with http1_chunked_* */
    HTTP1_BODY_UNTIL_CLOSE,    /* responses only: the body ends when the peer closes */
} http1_body;

typedef struct http1_response {
    int minor_version; /* HTTP/1.x */
    int status;        /* 100..599 */
    const char *reason;
    size_t reason_len;
    http1_headers headers;
    http1_body body;
    uint64_t content_length; /* meaningful for HTTP1_BODY_CONTENT_LENGTH */
} http1_response;

/* Parses a response head: `HTTP/1.x SP 3DIGIT SP reason CRLF`, header lines, CRLF.
 * Returns the head length (> 0; the body starts at buf + that), HTTP1_NEED_MORE,
 * or an error. Heads over HTTP1_MAX_HEAD_SIZE are refused. A 1xx head is returned
 * like any other (body NONE): the caller skips it and parses the next head. */
int http1_parse_response(const void *buf, size_t len, http1_response *resp);

typedef struct http1_request {
    int minor_version;
    const char *method; /* a token, case-sensitive */
    size_t method_len;
    const char *target; /* raw origin-form target, e.g. "/model/x/invoke?a=b" */
    size_t target_len;
    const char *path; /* target up to the first '?' */
    size_t path_len;
    const char *query; /* after the '?', NULL when there is no '?' */
    size_t query_len;
    http1_headers headers;
    http1_body body;         /* NONE, CONTENT_LENGTH or CHUNKED */
    uint64_t content_length; /* meaningful for HTTP1_BODY_CONTENT_LENGTH */
} http1_request;

/* Parses a request head in origin-form (`METHOD SP /path[?query] SP HTTP/1.x`).
 * Same return convention and limits as http1_parse_response. No percent-decoding:
 * the target is kept raw. */
int http1_parse_request(const void *buf, size_t len, http1_request *req);

typedef enum http1_host_kind {
    HTTP1_HOST_NAME = 0,
    HTTP1_HOST_IPV4,
    HTTP1_HOST_IPV6,
} http1_host_kind;

typedef struct http1_connect {
    int minor_version;
    const char *authority; /* raw `host:port` from the request line */
    size_t authority_len;
    http1_host_kind host_kind;
    /* Normalised host, NUL-terminated: a lowercase name without its trailing dot,
     * a dotted-quad IPv4 literal, or an IPv6 literal in canonical form without brackets. */
    char host[HTTP1_HOST_BUF];
    uint16_t port; /* 1..65535 */
    http1_headers headers;
} http1_connect;

/* Parses `CONNECT host:port HTTP/1.x` plus headers (head <= HTTP1_MAX_CONNECT_HEAD_SIZE).
 * Returns the head length: bytes after it are tunnel data the caller must forward
 * (the original dropped them, defect §10.21). HTTP1_ERR_NOT_CONNECT means a well-formed
 * request line with another method (answer 405); other errors mean 400.
 * A name whose last label looks numeric (`1.2.3`, `0x7f000001`) must be a strict
 * dotted quad, so a resolver's inet_aton cannot reinterpret it. */
int http1_parse_connect(const void *buf, size_t len, http1_connect *req);

/* Normalises a DNS name: lowercase, ONE trailing dot stripped, then 1..253 chars of
 * labels of 1..63 [a-z0-9-] not starting or ending with '-'. Writes a NUL-terminated
 * result to out. Returns HTTP1_OK, HTTP1_ERR_BAD_AUTHORITY, or HTTP1_ERR_INVALID_ARG
 * (outlen too small). IP literals are the CONNECT parser's business, not this one's. */
int http1_normalize_host(const char *in, char *out, size_t outlen);

/* Streaming chunked-body decoder (RFC 9112 §7.1). Accepts input split at any byte;
 * chunk data is passed to the callback as soon as it arrives. Chunk extensions and
 * trailers are checked and bounded, then ignored. The struct is plain state the
 * caller may keep anywhere; treat its fields as private. */
typedef struct http1_chunked {
    int state;
    int err;              /* sticky error, 0 while healthy */
    uint64_t remaining;   /* bytes of data left in the current chunk, or the size being read */
    size_t line_len;      /* bytes of the current size line */
    size_t size_digits;
    size_t trailer_len;   /* bytes of trailers so far */
    size_t trailer_count;
} http1_chunked;

/* Receives decoded body bytes. Return 0 to continue, non-zero to stop the decoder
 * with HTTP1_ERR_CALLBACK. */
typedef int (*http1_data_cb)(void *ctx, const uint8_t *data, size_t len);

void http1_chunked_init(http1_chunked *dec);

/* Consumes input until it is exhausted or the body ends. Returns the bytes consumed
 * (< len only once the body has ended: the rest belongs to the next message) or an
 * error; errors are sticky. */
ptrdiff_t http1_chunked_feed(http1_chunked *dec, const void *in, size_t len, http1_data_cb cb,
                             void *ctx);

/* Same, appending the decoded data to out. HTTP1_ERR_CALLBACK if out cannot grow. */
ptrdiff_t http1_chunked_feed_vbuf(http1_chunked *dec, const void *in, size_t len, vbuf *out);

/* True once the last chunk, the trailers and the final CRLF were consumed. A body
 * that ends before that (peer closed) is truncated. */
bool http1_chunked_done(const http1_chunked *dec);

#endif

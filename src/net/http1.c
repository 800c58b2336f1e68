/* http1 — the HTTP/1.1 head parsers: the bounded head cursor, header fields, body
 * framing, response and request heads (see http1.h). CONNECT heads are
 * http1_connect.c; the chunked body decoder is http1_chunked.c.
 */
#include "net/http1.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "common/config.h"
#include "net/http1_int.h"

#define CRLF_LEN 2
#define HTTP_VERSION_LEN 8        /* "HTTP/1.x" */
#define HTTP_VERSION_PREFIX "HTTP/1."
#define STATUS_CODE_DIGITS 3
#define STATUS_MIN 100
#define STATUS_MAX 599
#define STATUS_NO_CONTENT 204
#define STATUS_NOT_MODIFIED 304
#define CONTENT_LENGTH_MAX_DIGITS 18 /* < LONG_MAX on LP64, so parse_long cannot overflow */

const char *http1_strerror(int err)
{
    if (err > 0)
        return "ok";
    switch ((enum http1_status)err) {
    case HTTP1_OK: return "ok";
    case HTTP1_ERR_INVALID_ARG: return "invalid argument";
    case HTTP1_NEED_MORE: return "incomplete message, need more input";
    case HTTP1_ERR_BAD_STATUS_LINE: return "malformed status line";
    case HTTP1_ERR_BAD_REQUEST_LINE: return "malformed request line";
    case HTTP1_ERR_BAD_VERSION: return "unsupported HTTP version";
    case HTTP1_ERR_BAD_TARGET: return "request target is not origin-form";
    case HTTP1_ERR_BAD_HEADER: return "malformed header line";
    case HTTP1_ERR_OBS_FOLD: return "obsolete header line folding";
    case HTTP1_ERR_HEAD_TOO_LARGE: return "message head too large";
    case HTTP1_ERR_TOO_MANY_HEADERS: return "too many header fields";
    case HTTP1_ERR_BAD_CONTENT_LENGTH: return "invalid or conflicting Content-Length";
    case HTTP1_ERR_UNSUPPORTED_TE: return "unsupported Transfer-Encoding";
    case HTTP1_ERR_BAD_FRAMING: return "both Content-Length and Transfer-Encoding";
    case HTTP1_ERR_BAD_CHUNK_SIZE: return "malformed chunk size";
    case HTTP1_ERR_CHUNK_TOO_LARGE: return "chunk too large";
    case HTTP1_ERR_BAD_CHUNK_EXT: return "malformed or oversized chunk extension";
    case HTTP1_ERR_BAD_CHUNK_CRLF: return "chunk data not followed by CRLF";
    case HTTP1_ERR_BAD_TRAILER: return "malformed or oversized trailer";
    case HTTP1_ERR_CALLBACK: return "body consumer failed";
    case HTTP1_ERR_NOT_CONNECT: return "method is not CONNECT";
    case HTTP1_ERR_BAD_AUTHORITY: return "invalid CONNECT host";
    case HTTP1_ERR_BAD_PORT: return "invalid CONNECT port";
    }
    return "unknown http1 error";
}

/* ---- what only this file uses ---- */

static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

/* s[0..n) equals the NUL-terminated lit, ignoring ASCII case. */
static bool span_ieq(const char *s, size_t n, const char *lit)
{
    if (strlen(lit) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (http1i_lower((unsigned char)s[i]) != http1i_lower((unsigned char)lit[i]))
            return false;
    return true;
}

/* ---- the head: a bounded cursor over the bytes that may still belong to it ---- */

static http1i_head head_make(const void *buf, size_t len, size_t limit)
{
    http1i_head h;
    h.start = buf;
    h.c = cursor_make(buf, len < limit ? len : limit);
    h.at_limit = len >= limit;
    return h;
}

/* Takes the next line without its CRLF. A bare LF is bad_line_err. */
static int head_line(http1i_head *h, const char **line, size_t *line_len, int bad_line_err)
{
    const uint8_t *nl = h->c.left ? memchr(h->c.p, '\n', h->c.left) : NULL;
    if (!nl)
        return h->at_limit ? HTTP1_ERR_HEAD_TOO_LARGE : HTTP1_NEED_MORE;
    size_t n = (size_t)(nl - h->c.p) + 1;
    const uint8_t *p;
    if (!cursor_read_span(&h->c, n, &p))
        return bad_line_err;
    if (n < CRLF_LEN || p[n - 2] != '\r')
        return bad_line_err;
    *line = (const char *)p;
    *line_len = n - CRLF_LEN;
    return HTTP1_OK;
}

/* `name: OWS value OWS`; the name is a token glued to the colon (RFC 9112 §5.1). */
static int parse_header_line(const char *s, size_t n, http1_headers *hs)
{
    if (http1i_is_ows((unsigned char)s[0]))
        return HTTP1_ERR_OBS_FOLD;
    size_t i = 0;
    while (i < n && http1i_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ':')
        return HTTP1_ERR_BAD_HEADER;
    size_t name_len = i++;
    while (i < n && http1i_is_ows((unsigned char)s[i]))
        i++;
    size_t end = n;
    while (end > i && http1i_is_ows((unsigned char)s[end - 1]))
        end--;
    for (size_t k = i; k < end; k++)
        if (!http1i_is_field_char((unsigned char)s[k]))
            return HTTP1_ERR_BAD_HEADER;
    if (hs->n == HTTP1_MAX_HEADERS)
        return HTTP1_ERR_TOO_MANY_HEADERS;
    http1_header *h = &hs->h[hs->n++];
    h->name = s;
    h->name_len = name_len;
    h->value = s + i;
    h->value_len = end - i;
    return HTTP1_OK;
}

/* Header lines up to and including the empty line. */
int http1i_parse_headers(http1i_head *h, http1_headers *hs)
{
    for (;;) {
        const char *line;
        size_t n;
        int rc = head_line(h, &line, &n, HTTP1_ERR_BAD_HEADER);
        if (rc != HTTP1_OK)
            return rc;
        if (n == 0)
            return HTTP1_OK;
        rc = parse_header_line(line, n, hs);
        if (rc != HTTP1_OK)
            return rc;
    }
}

const char *http1_header_get(const http1_headers *hs, const char *name, size_t *value_len)
{
    if (!hs || !name)
        return NULL;
    for (size_t i = 0; i < hs->n && i < HTTP1_MAX_HEADERS; i++) {
        const http1_header *h = &hs->h[i];
        if (!span_ieq(h->name, h->name_len, name))
            continue;
        if (value_len)
            *value_len = h->value_len;
        return h->value;
    }
    return NULL;
}

/* ---- body framing (RFC 9112 §6) ---- */

/* 1*DIGIT of at most max_digits, in [min, max]: no sign, no list, no whitespace.
 * max_digits keeps the value below LONG_MAX, so parse_long cannot overflow. */
int http1i_parse_digits(const char *s, size_t n, size_t max_digits, long min, long max, long *out)
{
    char tmp[CONTENT_LENGTH_MAX_DIGITS + 1];
    if (n == 0 || n > max_digits || max_digits >= sizeof tmp)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!http1i_is_digit((unsigned char)s[i]))
            return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return parse_long(tmp, min, max, out);
}

/* OWS is already trimmed. */
static int parse_content_length(const char *s, size_t n, uint64_t *out)
{
    long v;
    if (http1i_parse_digits(s, n, CONTENT_LENGTH_MAX_DIGITS, 0, LONG_MAX, &v) < 0)
        return HTTP1_ERR_BAD_CONTENT_LENGTH;
    *out = (uint64_t)v;
    return HTTP1_OK;
}

/* Every listed coding must be "chunked", and only once: we decode nothing else, and
 * a coding we would pass through unread would desynchronise the framing. */
static int parse_transfer_encoding(const char *s, size_t n, bool *chunked)
{
    size_t i = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && s[i] != ',')
            i++;
        size_t end = i++;
        while (start < end && http1i_is_ows((unsigned char)s[start]))
            start++;
        while (end > start && http1i_is_ows((unsigned char)s[end - 1]))
            end--;
        if (start == end)
            continue; /* empty list element, allowed by the list rule */
        if (*chunked || !span_ieq(s + start, end - start, "chunked"))
            return HTTP1_ERR_UNSUPPORTED_TE;
        *chunked = true;
    }
    return HTTP1_OK;
}

/* NONE when neither header is present; the caller decides what that means. */
static int body_framing(const http1_headers *hs, http1_body *body, uint64_t *content_length)
{
    bool have_cl = false, have_te = false, chunked = false;
    uint64_t cl = 0;
    for (size_t i = 0; i < hs->n; i++) {
        const http1_header *h = &hs->h[i];
        if (span_ieq(h->name, h->name_len, "content-length")) {
            uint64_t v;
            int rc = parse_content_length(h->value, h->value_len, &v);
            if (rc != HTTP1_OK)
                return rc;
            if (have_cl && v != cl)
                return HTTP1_ERR_BAD_CONTENT_LENGTH;
            have_cl = true;
            cl = v;
        } else if (span_ieq(h->name, h->name_len, "transfer-encoding")) {
            int rc = parse_transfer_encoding(h->value, h->value_len, &chunked);
            if (rc != HTTP1_OK)
                return rc;
            have_te = true;
        }
    }
    /* both present is the classic request-smuggling shape: refuse it */
    if (have_te && have_cl)
        return HTTP1_ERR_BAD_FRAMING;
    if (have_te && !chunked)
        return HTTP1_ERR_UNSUPPORTED_TE;
    *body = have_te ? HTTP1_BODY_CHUNKED : have_cl ? HTTP1_BODY_CONTENT_LENGTH : HTTP1_BODY_NONE;
    *content_length = have_cl ? cl : 0;
    return HTTP1_OK;
}

/* ---- start lines ---- */

int http1i_parse_version(const char *s, size_t n, int *minor)
{
    const size_t prefix = sizeof HTTP_VERSION_PREFIX - 1;
    if (n != HTTP_VERSION_LEN || memcmp(s, HTTP_VERSION_PREFIX, prefix) != 0 ||
        !http1i_is_digit((unsigned char)s[prefix]))
        return HTTP1_ERR_BAD_VERSION;
    *minor = s[prefix] - '0';
    return HTTP1_OK;
}

/* HTTP-version SP 3DIGIT SP reason-phrase (possibly empty, but the SP is required). */
static int parse_status_line(const char *s, size_t n, http1_response *resp)
{
    static const char http_prefix[] = "HTTP/";
    if (n < sizeof http_prefix - 1 || memcmp(s, http_prefix, sizeof http_prefix - 1) != 0)
        return HTTP1_ERR_BAD_STATUS_LINE;
    const char *sp = memchr(s, ' ', n);
    if (!sp)
        return HTTP1_ERR_BAD_STATUS_LINE;
    int rc = http1i_parse_version(s, (size_t)(sp - s), &resp->minor_version);
    if (rc != HTTP1_OK)
        return rc;
    size_t i = (size_t)(sp - s) + 1;
    if (n - i < STATUS_CODE_DIGITS + 1 || s[i + STATUS_CODE_DIGITS] != ' ')
        return HTTP1_ERR_BAD_STATUS_LINE;
    int code = 0;
    for (size_t k = 0; k < STATUS_CODE_DIGITS; k++) {
        if (!http1i_is_digit((unsigned char)s[i + k]))
            return HTTP1_ERR_BAD_STATUS_LINE;
        code = code * 10 + (s[i + k] - '0');
    }
    if (code < STATUS_MIN || code > STATUS_MAX)
        return HTTP1_ERR_BAD_STATUS_LINE;
    i += STATUS_CODE_DIGITS + 1;
    for (size_t k = i; k < n; k++)
        if (!http1i_is_field_char((unsigned char)s[k]))
            return HTTP1_ERR_BAD_STATUS_LINE;
    resp->status = code;
    resp->reason = s + i;
    resp->reason_len = n - i;
    return HTTP1_OK;
}

/* method SP request-target SP HTTP-version, single spaces (RFC 9112 §3). */
static int split_request_line(const char *s, size_t n, http1i_request_line *rl)
{
    size_t i = 0;
    while (i < n && http1i_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ' ')
        return HTTP1_ERR_BAD_REQUEST_LINE;
    rl->method = s;
    rl->method_len = i++;
    size_t t = i;
    while (i < n && is_target_char((unsigned char)s[i]))
        i++;
    if (i == t || i == n || s[i] != ' ')
        return HTTP1_ERR_BAD_REQUEST_LINE;
    rl->target = s + t;
    rl->target_len = i - t;
    rl->version = s + i + 1;
    rl->version_len = n - i - 1;
    return HTTP1_OK;
}

int http1_parse_response(const void *buf, size_t len, http1_response *resp)
{
    if (!resp || (!buf && len))
        return HTTP1_ERR_INVALID_ARG;
    memset(resp, 0, sizeof *resp);
    http1i_head h = head_make(buf, len, HTTP1_MAX_HEAD_SIZE);
    const char *line;
    size_t n;
    int rc = head_line(&h, &line, &n, HTTP1_ERR_BAD_STATUS_LINE);
    if (rc != HTTP1_OK)
        return rc;
    rc = parse_status_line(line, n, resp);
    if (rc != HTTP1_OK)
        return rc;
    rc = http1i_parse_headers(&h, &resp->headers);
    if (rc != HTTP1_OK)
        return rc;
    rc = body_framing(&resp->headers, &resp->body, &resp->content_length);
    if (rc != HTTP1_OK)
        return rc;
    /* RFC 9112 §6.3: these never have content, whatever the headers say */
    if (resp->status < 200 || resp->status == STATUS_NO_CONTENT ||
        resp->status == STATUS_NOT_MODIFIED) {
        resp->body = HTTP1_BODY_NONE;
        resp->content_length = 0;
    } else if (resp->body == HTTP1_BODY_NONE) {
        resp->body = HTTP1_BODY_UNTIL_CLOSE;
    }
    return (int)http1i_head_consumed(&h);
}

/* The start of a request head: the first line, read and split. */
int http1i_start_request(const void *buf, size_t len, size_t max_head, http1i_head *h, http1i_request_line *rl)
{
    *h = head_make(buf, len, max_head);
    const char *line;
    size_t n;
    int rc = head_line(h, &line, &n, HTTP1_ERR_BAD_REQUEST_LINE);
    if (rc != HTTP1_OK)
        return rc;
    return split_request_line(line, n, rl);
}

int http1_parse_request(const void *buf, size_t len, http1_request *req)
{
    if (!req || (!buf && len))
        return HTTP1_ERR_INVALID_ARG;
    memset(req, 0, sizeof *req);
    http1i_head h;
    http1i_request_line rl;
    int rc = http1i_start_request(buf, len, HTTP1_MAX_HEAD_SIZE, &h, &rl);
    if (rc != HTTP1_OK)
        return rc;
    if (rl.target[0] != '/')
        return HTTP1_ERR_BAD_TARGET;
    rc = http1i_parse_version(rl.version, rl.version_len, &req->minor_version);
    if (rc != HTTP1_OK)
        return rc;
    req->method = rl.method;
    req->method_len = rl.method_len;
    req->target = rl.target;
    req->target_len = rl.target_len;
    const char *q = memchr(rl.target, '?', rl.target_len);
    req->path = rl.target;
    req->path_len = q ? (size_t)(q - rl.target) : rl.target_len;
    if (q) {
        req->query = q + 1;
        req->query_len = rl.target_len - req->path_len - 1;
    }
    rc = http1i_parse_headers(&h, &req->headers);
    if (rc != HTTP1_OK)
        return rc;
    rc = body_framing(&req->headers, &req->body, &req->content_length);
    if (rc != HTTP1_OK)
        return rc;
    return (int)http1i_head_consumed(&h);
}

/* http1 — pure HTTP/1.1 head parsers and a streaming chunked decoder (see http1.h). */
#include "net/http1.h"

#include <arpa/inet.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "common/config.h"
#include "common/hex.h"

#define CRLF_LEN 2
#define HTTP_VERSION_LEN 8        /* "HTTP/1.x" */
#define HTTP_VERSION_PREFIX "HTTP/1."
#define STATUS_CODE_DIGITS 3
#define STATUS_MIN 100
#define STATUS_MAX 599
#define STATUS_NO_CONTENT 204
#define STATUS_NOT_MODIFIED 304
#define CONTENT_LENGTH_MAX_DIGITS 18 /* < LONG_MAX on LP64, so parse_long cannot overflow */
#define PORT_MIN 1
#define PORT_MAX 65535
#define PORT_MAX_DIGITS 5
#define DNS_LABEL_MAX 63
#define CHUNK_SIZE_MAX_DIGITS 16 /* leading zeros beyond this are not a size, they are an attack */
#define METHOD_CONNECT "CONNECT"

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

/* ---- character classes (RFC 9110 §5.6.2, §5.5) ---- */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return is_alpha(c) || is_digit(c) || (c != '\0' && strchr(extra, c) != NULL);
}

static bool is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* field-vchar / SP / HTAB / obs-text: everything but CTLs and DEL */
static bool is_field_char(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_target_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f;
}

static unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* s[0..n) equals the NUL-terminated lit, ignoring ASCII case. */
static bool span_ieq(const char *s, size_t n, const char *lit)
{
    if (strlen(lit) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (ascii_lower((unsigned char)s[i]) != ascii_lower((unsigned char)lit[i]))
            return false;
    return true;
}

/* ---- the head: a bounded cursor over the bytes that may still belong to it ---- */

typedef struct head {
    const uint8_t *start;
    cursor c;       /* unread part of buf[0 .. min(len, limit)) */
    bool at_limit;  /* len >= limit: no terminator can arrive inside the limit any more */
} head;

static head head_make(const void *buf, size_t len, size_t limit)
{
    head h;
    h.start = buf;
    h.c = cursor_make(buf, len < limit ? len : limit);
    h.at_limit = len >= limit;
    return h;
}

static size_t head_consumed(const head *h)
{
    return (size_t)(h->c.p - h->start);
}

/* Takes the next line without its CRLF. A bare LF is bad_line_err. */
static int head_line(head *h, const char **line, size_t *line_len, int bad_line_err)
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
    if (is_ows((unsigned char)s[0]))
        return HTTP1_ERR_OBS_FOLD;
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i == n || s[i] != ':')
        return HTTP1_ERR_BAD_HEADER;
    size_t name_len = i++;
    while (i < n && is_ows((unsigned char)s[i]))
        i++;
    size_t end = n;
    while (end > i && is_ows((unsigned char)s[end - 1]))
        end--;
    for (size_t k = i; k < end; k++)
        if (!is_field_char((unsigned char)s[k]))
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
static int parse_headers(head *h, http1_headers *hs)
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
static int parse_digits(const char *s, size_t n, size_t max_digits, long min, long max, long *out)
{
    char tmp[CONTENT_LENGTH_MAX_DIGITS + 1];
    if (n == 0 || n > max_digits || max_digits >= sizeof tmp)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!is_digit((unsigned char)s[i]))
            return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return parse_long(tmp, min, max, out);
}

/* OWS is already trimmed. */
static int parse_content_length(const char *s, size_t n, uint64_t *out)
{
    long v;
    if (parse_digits(s, n, CONTENT_LENGTH_MAX_DIGITS, 0, LONG_MAX, &v) < 0)
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
        while (start < end && is_ows((unsigned char)s[start]))
            start++;
        while (end > start && is_ows((unsigned char)s[end - 1]))
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

static int parse_version(const char *s, size_t n, int *minor)
{
    const size_t prefix = sizeof HTTP_VERSION_PREFIX - 1;
    if (n != HTTP_VERSION_LEN || memcmp(s, HTTP_VERSION_PREFIX, prefix) != 0 ||
        !is_digit((unsigned char)s[prefix]))
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
    int rc = parse_version(s, (size_t)(sp - s), &resp->minor_version);
    if (rc != HTTP1_OK)
        return rc;
    size_t i = (size_t)(sp - s) + 1;
    if (n - i < STATUS_CODE_DIGITS + 1 || s[i + STATUS_CODE_DIGITS] != ' ')
        return HTTP1_ERR_BAD_STATUS_LINE;
    int code = 0;
    for (size_t k = 0; k < STATUS_CODE_DIGITS; k++) {
        if (!is_digit((unsigned char)s[i + k]))
            return HTTP1_ERR_BAD_STATUS_LINE;
        code = code * 10 + (s[i + k] - '0');
    }
    if (code < STATUS_MIN || code > STATUS_MAX)
        return HTTP1_ERR_BAD_STATUS_LINE;
    i += STATUS_CODE_DIGITS + 1;
    for (size_t k = i; k < n; k++)
        if (!is_field_char((unsigned char)s[k]))
            return HTTP1_ERR_BAD_STATUS_LINE;
    resp->status = code;
    resp->reason = s + i;
    resp->reason_len = n - i;
    return HTTP1_OK;
}

typedef struct request_line {
    const char *method;
    size_t method_len;
    const char *target;
    size_t target_len;
    const char *version;
    size_t version_len;
} request_line;

/* method SP request-target SP HTTP-version, single spaces (RFC 9112 §3). */
static int split_request_line(const char *s, size_t n, request_line *rl)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
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
    head h = head_make(buf, len, HTTP1_MAX_HEAD_SIZE);
    const char *line;
    size_t n;
    int rc = head_line(&h, &line, &n, HTTP1_ERR_BAD_STATUS_LINE);
    if (rc != HTTP1_OK)
        return rc;
    rc = parse_status_line(line, n, resp);
    if (rc != HTTP1_OK)
        return rc;
    rc = parse_headers(&h, &resp->headers);
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
    return (int)head_consumed(&h);
}

/* The start of a request head: the first line, read and split. */
static int start_request(const void *buf, size_t len, size_t max_head, head *h, request_line *rl)
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
    head h;
    request_line rl;
    int rc = start_request(buf, len, HTTP1_MAX_HEAD_SIZE, &h, &rl);
    if (rc != HTTP1_OK)
        return rc;
    if (rl.target[0] != '/')
        return HTTP1_ERR_BAD_TARGET;
    rc = parse_version(rl.version, rl.version_len, &req->minor_version);
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
    rc = parse_headers(&h, &req->headers);
    if (rc != HTTP1_OK)
        return rc;
    rc = body_framing(&req->headers, &req->body, &req->content_length);
    if (rc != HTTP1_OK)
        return rc;
    return (int)head_consumed(&h);
}

/* ---- CONNECT ---- */

static int normalize_host_span(const char *in, size_t n, char *out, size_t outlen)
{
    if (outlen == 0)
        return HTTP1_ERR_INVALID_ARG;
    out[0] = '\0';
    if (n && in[n - 1] == '.')
        n--; /* ONE trailing dot: "a.com." is the same name, "a.com.." is not a name */
    if (n == 0 || n > HTTP1_MAX_HOST_LEN)
        return HTTP1_ERR_BAD_AUTHORITY;
    if (outlen < n + 1)
        return HTTP1_ERR_INVALID_ARG;
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = ascii_lower((unsigned char)in[i]);
        if (c == '.') {
            if (label == 0 || out[i - 1] == '-')
                goto bad;
            label = 0;
        } else if (is_alpha(c) || is_digit(c) || (c == '-' && label > 0)) {
            if (++label > DNS_LABEL_MAX)
                goto bad;
        } else {
            goto bad;
        }
        out[i] = (char)c;
    }
    if (label == 0 || out[n - 1] == '-')
        goto bad;
    out[n] = '\0';
    return HTTP1_OK;
bad:
    out[0] = '\0';
    return HTTP1_ERR_BAD_AUTHORITY;
}

int http1_normalize_host(const char *in, char *out, size_t outlen)
{
    if (!in || !out)
        return HTTP1_ERR_INVALID_ARG;
    /* one byte more than a name with its trailing dot is already too long */
    size_t n = strnlen(in, HTTP1_MAX_HOST_LEN + 2);
    if (n > HTTP1_MAX_HOST_LEN + 1) {
        if (outlen)
            out[0] = '\0';
        return HTTP1_ERR_BAD_AUTHORITY;
    }
    return normalize_host_span(in, n, out, outlen);
}

/* WHATWG's "ends in a number": such a name is an IPv4 address to inet_aton, which
 * reads "1.2.3", "0x7f000001" or "010.0.0.1" its own way. */
static bool ends_in_number(const char *host)
{
    const char *dot = strrchr(host, '.');
    const char *last = dot ? dot + 1 : host;
    size_t i = 0;
    if (last[0] == '0' && last[1] == 'x') {
        for (i = 2; last[i]; i++)
            if (hex_digit_value((unsigned char)last[i]) < 0)
                return false;
        return true;
    }
    for (; last[i]; i++)
        if (!is_digit((unsigned char)last[i]))
            return false;
    return i > 0;
}

static int parse_connect_host(const char *s, size_t n, http1_connect *req)
{
    if (n && s[0] == '[') {
        char tmp[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        if (n < 2 || s[n - 1] != ']' || n - 2 >= sizeof tmp)
            return HTTP1_ERR_BAD_AUTHORITY;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        if (inet_pton(AF_INET6, tmp, &a6) != 1 ||
            !inet_ntop(AF_INET6, &a6, req->host, sizeof req->host))
            return HTTP1_ERR_BAD_AUTHORITY;
        req->host_kind = HTTP1_HOST_IPV6;
        return HTTP1_OK;
    }
    int rc = normalize_host_span(s, n, req->host, sizeof req->host);
    if (rc != HTTP1_OK)
        return HTTP1_ERR_BAD_AUTHORITY;
    if (!ends_in_number(req->host)) {
        req->host_kind = HTTP1_HOST_NAME;
        return HTTP1_OK;
    }
    /* only the canonical dotted quad: no octal, hex, short forms or leading zeros */
    struct in_addr a4;
    char canon[INET_ADDRSTRLEN];
    if (inet_pton(AF_INET, req->host, &a4) != 1 || !inet_ntop(AF_INET, &a4, canon, sizeof canon) ||
        strcmp(canon, req->host) != 0) {
        req->host[0] = '\0';
        return HTTP1_ERR_BAD_AUTHORITY;
    }
    req->host_kind = HTTP1_HOST_IPV4;
    return HTTP1_OK;
}

static int parse_port(const char *s, size_t n, uint16_t *port)
{
    long v;
    if (parse_digits(s, n, PORT_MAX_DIGITS, PORT_MIN, PORT_MAX, &v) < 0)
        return HTTP1_ERR_BAD_PORT;
    *port = (uint16_t)v;
    return HTTP1_OK;
}

/* authority-form: host ":" port, host being a name, a dotted quad or "[" IPv6 "]". */
static int parse_authority(const char *s, size_t n, http1_connect *req)
{
    const char *colon;
    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb)
            return HTTP1_ERR_BAD_AUTHORITY;
        colon = rb + 1 < s + n ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return HTTP1_ERR_BAD_AUTHORITY;
    } else {
        colon = memchr(s, ':', n);
    }
    size_t host_len = colon ? (size_t)(colon - s) : n;
    int rc = parse_connect_host(s, host_len, req);
    if (rc != HTTP1_OK)
        return rc;
    if (!colon)
        return HTTP1_ERR_BAD_PORT; /* a CONNECT target always names its port */
    return parse_port(colon + 1, n - host_len - 1, &req->port);
}

int http1_parse_connect(const void *buf, size_t len, http1_connect *req)
{
    if (!req || (!buf && len))
        return HTTP1_ERR_INVALID_ARG;
    memset(req, 0, sizeof *req);
    head h;
    request_line rl;
    int rc = start_request(buf, len, HTTP1_MAX_CONNECT_HEAD_SIZE, &h, &rl);
    if (rc != HTTP1_OK)
        return rc;
    /* methods are case-sensitive (RFC 9110 §9.1) */
    if (rl.method_len != sizeof METHOD_CONNECT - 1 ||
        memcmp(rl.method, METHOD_CONNECT, rl.method_len) != 0)
        return HTTP1_ERR_NOT_CONNECT;
    rc = parse_version(rl.version, rl.version_len, &req->minor_version);
    if (rc != HTTP1_OK)
        return rc;
    req->authority = rl.target;
    req->authority_len = rl.target_len;
    rc = parse_authority(rl.target, rl.target_len, req);
    if (rc != HTTP1_OK)
        return rc;
    rc = parse_headers(&h, &req->headers);
    if (rc != HTTP1_OK)
        return rc;
    /* bytes after the head are the client's first tunnel bytes: not ours to drop */
    return (int)head_consumed(&h);
}

/* ---- chunked body decoder ---- */

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
        else if (is_ows(c))
            dec->state = CH_SIZE_WS;
        else
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        return HTTP1_OK;
    }
    case CH_SIZE_WS:
        if (c == ';')
            dec->state = CH_EXT;
        else if (!is_ows(c))
            return HTTP1_ERR_BAD_CHUNK_SIZE;
        return HTTP1_OK;
    case CH_EXT:
        /* CR cannot occur inside an extension (not even quoted), so it ends the line */
        if (c == '\r')
            dec->state = CH_SIZE_LF;
        else if (!is_field_char(c))
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
        } else if (is_tchar(c)) {
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
        else if (!is_tchar(c))
            return HTTP1_ERR_BAD_TRAILER;
        return HTTP1_OK;
    case CH_TRAILER_VALUE:
        if (c == '\r')
            dec->state = CH_TRAILER_LF;
        else if (!is_field_char(c))
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

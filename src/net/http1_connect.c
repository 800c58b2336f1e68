/* http1_connect — CONNECT request heads (veil-proxy): authority-form only, host
 * names normalised (lower case, one trailing dot dropped, DNS label rules), IPv4
 * only as the canonical dotted quad, IPv6 in brackets, the port always named.
 */
#include <arpa/inet.h>
#include <string.h>

#include "common/hex.h"
#include "net/http1.h"
#include "net/http1_int.h"

#define PORT_MIN 1
#define PORT_MAX 65535
#define PORT_MAX_DIGITS 5
#define DNS_LABEL_MAX 63
#define METHOD_CONNECT "CONNECT"

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
        unsigned char c = http1i_lower((unsigned char)in[i]);
        if (c == '.') {
            if (label == 0 || out[i - 1] == '-')
                goto bad;
            label = 0;
        } else if (http1i_is_alpha(c) || http1i_is_digit(c) || (c == '-' && label > 0)) {
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
        if (!http1i_is_digit((unsigned char)last[i]))
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
    if (http1i_parse_digits(s, n, PORT_MAX_DIGITS, PORT_MIN, PORT_MAX, &v) < 0)
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
    http1i_head h;
    http1i_request_line rl;
    int rc = http1i_start_request(buf, len, HTTP1_MAX_CONNECT_HEAD_SIZE, &h, &rl);
    if (rc != HTTP1_OK)
        return rc;
    /* methods are case-sensitive (RFC 9110 §9.1) */
    if (rl.method_len != sizeof METHOD_CONNECT - 1 ||
        memcmp(rl.method, METHOD_CONNECT, rl.method_len) != 0)
        return HTTP1_ERR_NOT_CONNECT;
    rc = http1i_parse_version(rl.version, rl.version_len, &req->minor_version);
    if (rc != HTTP1_OK)
        return rc;
    req->authority = rl.target;
    req->authority_len = rl.target_len;
    rc = parse_authority(rl.target, rl.target_len, req);
    if (rc != HTTP1_OK)
        return rc;
    rc = http1i_parse_headers(&h, &req->headers);
    if (rc != HTTP1_OK)
        return rc;
    /* bytes after the head are the client's first tunnel bytes: not ours to drop */
    return (int)http1i_head_consumed(&h);
}

/* sigv4_canon — SigV4's canonical request: URI and query encoding, the header
 * selection and normalisation, the payload hash. Pure functions over caller buffers
 * (no keys here); the signer (sigv4.c) and the verifier (sigv4_verify.c) share them.
 */
#include <stdlib.h>
#include <string.h>

#include "aws/sigv4.h"
#include "aws/sigv4_int.h"
#include "common/hex.h"

/* ---- small string helpers ---------------------------------------------------- */

static int put(vbuf *b, const void *p, size_t n)
{
    return vbuf_append(b, p, n) == 0 ? SIGV4_OK : SIGV4_ERR_NOMEM;
}

static int puts_(vbuf *b, const char *s)
{
    return put(b, s, strlen(s));
}

static unsigned char ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c - 'A' + 'a') : c;
}

static int put_lower(vbuf *b, const char *s)
{
    size_t n = strlen(s);
    if (vbuf_reserve(b, n) < 0)
        return SIGV4_ERR_NOMEM;
    for (size_t i = 0; i < n; i++)
        b->data[b->len++] = ascii_lower((unsigned char)s[i]);
    return SIGV4_OK;
}

/* Locale-independent case-insensitive comparison of s[0..n) with a C string. */
static bool ieq_n(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++)
        if (ascii_lower((unsigned char)s[i]) != ascii_lower((unsigned char)lit[i]))
            return false;
    return i == n && lit[i] == '\0';
}

bool sigv4i_ieq(const char *a, const char *b)
{
    return ieq_n(a, strlen(a), b);
}

static int icmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = ascii_lower((unsigned char)*a), y = ascii_lower((unsigned char)*b);
        if (x != y || !x)
            return (int)x - (int)y;
    }
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 7230 tchar: what a header name may contain. */
bool sigv4i_is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* ---- URI encoding ------------------------------------------------------------- */

int sigv4_uri_encode_segment(vbuf *out, const char *s, size_t n)
{
    static const char HEX[] = "0123456789ABCDEF";
    if (!out || (!s && n))
        return SIGV4_ERR_INVALID_ARG;
    if (n > SIZE_MAX / 3 || vbuf_reserve(out, 3 * n) < 0)
        return SIGV4_ERR_NOMEM;
    char *w = (char *)out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = HEX[c >> 4];
            *w++ = HEX[c & 0x0f];
        }
    }
    out->len = (size_t)(w - (char *)out->data);
    return SIGV4_OK;
}

int sigv4_build_path(vbuf *out, const char *const *segments, size_t n)
{
    if (!out || (!segments && n))
        return SIGV4_ERR_INVALID_ARG;
    vbuf_reset(out);
    if (n == 0) {
        int rc = puts_(out, "/");
        return rc != SIGV4_OK ? rc : sigv4i_finish(out);
    }
    for (size_t i = 0; i < n; i++) {
        const char *seg = segments[i];
        /* "", "." and ".." would be rewritten by path normalisation (or walk
         * up the tree): a model id can never legitimately be one of them */
        if (!seg || !*seg || strcmp(seg, ".") == 0 || strcmp(seg, "..") == 0)
            return SIGV4_ERR_INVALID_ARG;
        int rc = puts_(out, "/");
        if (rc == SIGV4_OK)
            rc = sigv4_uri_encode_segment(out, seg, strlen(seg));
        if (rc != SIGV4_OK)
            return rc;
    }
    return sigv4i_finish(out);
}

static int append_segment(vbuf *out, const sigv4_config *cfg, sigv4_span seg)
{
    /* the wire path is already encoded once; encoding it again is what AWS
     * (all services but S3) hashes: "%3A" on the wire is "%253A" here */
    if (cfg->double_uri_encode)
        return sigv4_uri_encode_segment(out, seg.p, seg.n);
    return put(out, seg.p, seg.n);
}

int sigv4_canonical_uri(const sigv4_config *cfg, const char *path, vbuf *out)
{
    int rc = SIGV4_OK;
    sigv4_span *segs = NULL;
    size_t nseg = 0, cap = 1;

    if (!cfg || !out)
        return SIGV4_ERR_INVALID_ARG;
    if (!path || !*path)
        path = "/";
    if (path[0] != '/')
        return SIGV4_ERR_INVALID_ARG;
    if (!cfg->normalize_path) {
        /* keep every slash, encode what lies between them */
        for (const char *p = path; *p && rc == SIGV4_OK;) {
            if (*p == '/') {
                rc = put(out, "/", 1);
                p++;
                continue;
            }
            size_t n = strcspn(p, "/");
            rc = append_segment(out, cfg, (sigv4_span){p, n});
            p += n;
        }
        return rc != SIGV4_OK ? rc : sigv4i_finish(out);
    }

    /* botocore's remove_dot_segments: drop empty and "." segments, ".." pops,
     * keep a trailing slash only if something is left before it */
    for (const char *p = path; *p; p++)
        cap += *p == '/';
    segs = calloc(cap, sizeof *segs);
    if (!segs)
        return SIGV4_ERR_NOMEM;
    for (const char *p = path; *p;) {
        if (*p == '/') {
            p++;
            continue;
        }
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            if (nseg)
                nseg--;
        } else if (!(n == 1 && p[0] == '.')) {
            segs[nseg++] = (sigv4_span){p, n};
        }
        p += n;
    }
    rc = put(out, "/", 1);
    for (size_t i = 0; i < nseg && rc == SIGV4_OK; i++) {
        if (i)
            rc = put(out, "/", 1);
        if (rc == SIGV4_OK)
            rc = append_segment(out, cfg, segs[i]);
    }
    if (rc == SIGV4_OK && nseg && path[strlen(path) - 1] == '/')
        rc = put(out, "/", 1);
    free(segs);
    return rc != SIGV4_OK ? rc : sigv4i_finish(out);
}

/* ---- canonical query ----------------------------------------------------------- */

typedef struct qparam {
    char *name; /* encoded, NUL-terminated */
    char *value;
} qparam;

/* Percent-decodes s[0..n) into tmp, then encodes it once into a new string. A '%'
 * not followed by two hex digits is taken literally (and so becomes %25). */
static int decode_encode(const char *s, size_t n, vbuf *tmp, char **res)
{
    vbuf enc = VBUF_INIT;
    int rc;

    vbuf_reset(tmp);
    if (vbuf_reserve(tmp, n) < 0)
        return SIGV4_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_digit_value((unsigned char)s[i + 1])) >= 0 &&
            (lo = hex_digit_value((unsigned char)s[i + 2])) >= 0) {
            tmp->data[tmp->len++] = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else {
            tmp->data[tmp->len++] = (uint8_t)s[i];
        }
    }
    rc = sigv4_uri_encode_segment(&enc, (const char *)tmp->data, tmp->len);
    if (rc == SIGV4_OK)
        rc = sigv4i_finish(&enc);
    if (rc != SIGV4_OK) {
        vbuf_free(&enc);
        return rc;
    }
    *res = (char *)enc.data;
    return SIGV4_OK;
}

static int qparam_cmp(const void *a, const void *b)
{
    const qparam *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

int sigv4_canonical_query(const char *query, vbuf *out)
{
    qparam *params = NULL;
    size_t n = 0, cap = 1;
    vbuf tmp = VBUF_INIT;
    int rc = SIGV4_OK;

    if (!out)
        return SIGV4_ERR_INVALID_ARG;
    if (!query || !*query)
        return sigv4i_finish(out);
    for (const char *p = query; *p; p++)
        cap += *p == '&';
    params = calloc(cap, sizeof *params);
    if (!params)
        return SIGV4_ERR_NOMEM;

    for (const char *p = query; *p && rc == SIGV4_OK;) {
        size_t len = strcspn(p, "&");
        if (len) {
            const char *eq = memchr(p, '=', len);
            size_t nlen = eq ? (size_t)(eq - p) : len;
            const char *v = eq ? eq + 1 : p + len;
            size_t vlen = eq ? len - nlen - 1 : 0;
            rc = decode_encode(p, nlen, &tmp, &params[n].name);
            if (rc == SIGV4_OK)
                rc = decode_encode(v, vlen, &tmp, &params[n].value);
            n++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    if (rc == SIGV4_OK) {
        qsort(params, n, sizeof *params, qparam_cmp);
        for (size_t i = 0; i < n && rc == SIGV4_OK; i++) {
            if (i)
                rc = put(out, "&", 1);
            if (rc == SIGV4_OK)
                rc = puts_(out, params[i].name);
            if (rc == SIGV4_OK)
                rc = put(out, "=", 1);
            if (rc == SIGV4_OK)
                rc = puts_(out, params[i].value);
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(params[i].name);
        free(params[i].value);
    }
    free(params);
    vbuf_free(&tmp);
    return rc != SIGV4_OK ? rc : sigv4i_finish(out);
}

/* ---- canonical headers and request ------------------------------------------- */

/* Headers never signed: hop-by-hop ones a proxy may drop or rewrite, and ones
 * HTTP stacks add or change after signing (Content-Length is added after the
 * Authorization header, original §3.2). */
static bool header_is_unsigned(const char *name)
{
    static const char *const SKIP[] = {
        "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
        "content-length", "user-agent", "expect", "authorization", "x-amzn-trace-id",
    };
    for (size_t i = 0; i < sizeof SKIP / sizeof SKIP[0]; i++)
        if (sigv4i_ieq(name, SKIP[i]))
            return true;
    return strlen(name) >= 6 && ieq_n(name, 6, "proxy-");
}

/* Is name one of the ';'-separated entries of list[0..len)? */
bool sigv4i_in_list(const char *list, size_t len, const char *name)
{
    for (size_t i = 0; i < len;) {
        const char *semi = memchr(list + i, ';', len - i);
        size_t n = semi ? (size_t)(semi - (list + i)) : len - i;
        if (ieq_n(list + i, n, name))
            return true;
        i += n + 1;
    }
    return false;
}

static size_t list_count(const char *list, size_t len)
{
    size_t n = len ? 1 : 0;
    for (size_t i = 0; i < len; i++)
        n += list[i] == ';';
    return n;
}

static bool header_name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!sigv4i_is_tchar((unsigned char)*s))
            return false;
    return true;
}

bool sigv4i_header_value_ok(const char *s)
{
    return s && !strpbrk(s, "\r\n");
}

typedef struct hentry {
    const char *name;
    const char *value;
    size_t idx; /* arrival order: duplicate values are joined in this order */
} hentry;

static int hentry_cmp(const void *a, const void *b)
{
    const hentry *x = a, *y = b;
    int c = icmp(x->name, y->name);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Trimmed, with runs of spaces/tabs inside collapsed to one space. */
static int put_header_value(vbuf *out, const char *v)
{
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    while (n && (*v == ' ' || *v == '\t')) {
        v++;
        n--;
    }
    if (vbuf_reserve(out, n) < 0)
        return SIGV4_ERR_NOMEM;
    bool in_space = false;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            in_space = true;
            continue;
        }
        if (in_space)
            out->data[out->len++] = ' ';
        in_space = false;
        out->data[out->len++] = (uint8_t)v[i];
    }
    return SIGV4_OK;
}

int sigv4i_build_creq(const sigv4_config *cfg, const sigv4_request *req, const char *only,
                      size_t only_len, const char *payload_hex, vbuf *creq, vbuf *signed_list)
{
    hentry *ents = NULL;
    size_t n = 0, distinct = 0;
    vbuf names = VBUF_INIT;
    int rc;

    if (!req->method || !*req->method || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (const char *m = req->method; *m; m++)
        if (!sigv4i_is_tchar((unsigned char)*m))
            return SIGV4_ERR_INVALID_ARG;
    rc = puts_(creq, req->method);
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = sigv4_canonical_uri(cfg, req->path, creq);
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = sigv4_canonical_query(req->query, creq);
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc != SIGV4_OK)
        return rc;

    ents = calloc(req->n_headers ? req->n_headers : 1, sizeof *ents);
    if (!ents)
        return SIGV4_ERR_NOMEM;
    for (size_t i = 0; i < req->n_headers; i++) {
        const sigv4_header *h = &req->headers[i];
        if (!header_name_ok(h->name) || !sigv4i_header_value_ok(h->value)) {
            rc = SIGV4_ERR_INVALID_ARG;
            goto out;
        }
        bool take = only ? sigv4i_in_list(only, only_len, h->name) : !header_is_unsigned(h->name);
        if (take)
            ents[n++] = (hentry){h->name, h->value, i};
    }
    qsort(ents, n, sizeof *ents, hentry_cmp);

    for (size_t i = 0; i < n && rc == SIGV4_OK;) {
        size_t j = i;
        if (distinct++)
            rc = put(&names, ";", 1);
        if (rc == SIGV4_OK)
            rc = put_lower(&names, ents[i].name);
        if (rc == SIGV4_OK)
            rc = put_lower(creq, ents[i].name);
        if (rc == SIGV4_OK)
            rc = put(creq, ":", 1);
        for (; rc == SIGV4_OK && j < n && icmp(ents[j].name, ents[i].name) == 0; j++) {
            if (j > i)
                rc = put(creq, ",", 1);
            if (rc == SIGV4_OK)
                rc = put_header_value(creq, ents[j].value);
        }
        if (rc == SIGV4_OK)
            rc = put(creq, "\n", 1);
        i = j;
    }
    if (rc == SIGV4_OK && only && distinct != list_count(only, only_len))
        rc = SIGV4I_ERR_SIGNED_HEADER_ABSENT;
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = put(creq, names.data ? (const char *)names.data : "", names.len);
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = puts_(creq, payload_hex);
    if (rc == SIGV4_OK)
        rc = sigv4i_finish(creq);
    if (rc == SIGV4_OK && signed_list) {
        rc = put(signed_list, names.data ? (const char *)names.data : "", names.len);
        if (rc == SIGV4_OK)
            rc = sigv4i_finish(signed_list);
    }
out:
    vbuf_free(&names);
    free(ents);
    return rc;
}

size_t sigv4i_count_header(const sigv4_request *req, const char *name, const char **value)
{
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i].name && sigv4i_ieq(req->headers[i].name, name)) {
            if (value && !n)
                *value = req->headers[i].value;
            n++;
        }
    }
    return n;
}

int sigv4_payload_hash(const uint8_t *body, size_t len, char out[SIGV4_HEX_LEN + 1])
{
    uint8_t md[SIGV4_KEY_LEN];
    if (!out || (!body && len))
        return SIGV4_ERR_INVALID_ARG;
    int rc = sigv4i_sha256(body, len, md);
    if (rc == SIGV4_OK)
        hex_encode(md, sizeof md, out);
    return rc;
}

int sigv4_canonical_request(const sigv4_config *cfg, const sigv4_request *req, vbuf *creq,
                            vbuf *signed_headers)
{
    char payload[SIGV4_HEX_LEN + 1];
    if (!cfg || !req || !creq)
        return SIGV4_ERR_INVALID_ARG;
    int rc = sigv4_payload_hash(req->body, req->body_len, payload);
    if (rc != SIGV4_OK)
        return rc;
    return sigv4i_build_creq(cfg, req, NULL, 0, payload, creq, signed_headers);
}

#include "aws/sigv4.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"
#include "common/secret.h"

/* ---- OpenSSL handles --------------------------------------------------------
 * Fetched once per process and never freed: they are immutable, shared by every
 * thread, and fetching per call costs a lock and a provider lookup. */
static EVP_MD *g_sha256;
static EVP_MAC *g_hmac;
static pthread_once_t g_fetch_once = PTHREAD_ONCE_INIT;
static char g_digest_name[] = "SHA256";

static void fetch_algorithms(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static bool crypto_ready(void)
{
    return pthread_once(&g_fetch_once, fetch_algorithms) == 0 && g_sha256 && g_hmac;
}

static int sha256(const void *p, size_t n, uint8_t out[SIGV4_KEY_LEN])
{
    unsigned int len = 0;
    if (!crypto_ready())
        return SIGV4_ERR_CRYPTO;
    if (EVP_Digest(n ? p : "", n, out, &len, g_sha256, NULL) != 1 || len != SIGV4_KEY_LEN)
        return SIGV4_ERR_CRYPTO;
    return SIGV4_OK;
}

static int hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t n,
                       uint8_t out[SIGV4_KEY_LEN])
{
    int rc = SIGV4_ERR_CRYPTO;
    size_t out_len = 0;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, g_digest_name, 0),
        OSSL_PARAM_construct_end(),
    };

    if (!crypto_ready())
        return SIGV4_ERR_CRYPTO;
    ctx = EVP_MAC_CTX_new(g_hmac);
    if (!ctx)
        goto out;
    if (EVP_MAC_init(ctx, key, key_len, params) != 1 ||
        EVP_MAC_update(ctx, n ? msg : (const void *)"", n) != 1 ||
        EVP_MAC_final(ctx, out, &out_len, SIGV4_KEY_LEN) != 1 || out_len != SIGV4_KEY_LEN)
        goto out;
    rc = SIGV4_OK;
out:
    EVP_MAC_CTX_free(ctx); /* the HMAC provider cleanses its key schedule */
    if (rc != SIGV4_OK)
        secure_wipe(out, SIGV4_KEY_LEN);
    return rc;
}

const char *sigv4_strerror(int err)
{
    switch (err) {
    case SIGV4_OK: return "ok";
    case SIGV4_ERR_INVALID_ARG: return "invalid argument";
    case SIGV4_ERR_NOMEM: return "out of memory";
    case SIGV4_ERR_CRYPTO: return "cryptographic operation failed";
    case SIGV4_ERR_ALREADY_SIGNED: return "request already carries signing headers";
    case SIGV4_ERR_NO_HOST: return "request has no Host header";
    case SIGV4_ERR_MISSING_AUTH: return "missing Authorization header";
    case SIGV4_ERR_MALFORMED_AUTH: return "malformed Authorization or X-Amz-Date header";
    case SIGV4_ERR_UNKNOWN_KEY: return "unknown access key id";
    case SIGV4_ERR_BAD_SCOPE: return "credential scope does not match";
    case SIGV4_ERR_STALE_DATE: return "X-Amz-Date is outside the allowed window";
    case SIGV4_ERR_TOKEN_MISMATCH: return "security token missing or does not match";
    case SIGV4_ERR_SIGNATURE_MISMATCH: return "signature does not match";
    }
    return "unknown sigv4 error";
}

/* ---- small string helpers ---------------------------------------------------- */

static int finish(vbuf *b)
{
    return vbuf_cstr(b) ? SIGV4_OK : SIGV4_ERR_NOMEM;
}

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

static bool ieq(const char *a, const char *b)
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

static bool eq_n(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static bool is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* RFC 7230 tchar: what a header name may contain. */
static bool is_tchar(unsigned char c)
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
        return rc != SIGV4_OK ? rc : finish(out);
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
    return finish(out);
}

typedef struct span {
    const char *p;
    size_t n;
} span;

static int append_segment(vbuf *out, const sigv4_config *cfg, span seg)
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
    span *segs = NULL;
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
            rc = append_segment(out, cfg, (span){p, n});
            p += n;
        }
        return rc != SIGV4_OK ? rc : finish(out);
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
            segs[nseg++] = (span){p, n};
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
    return rc != SIGV4_OK ? rc : finish(out);
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
        rc = finish(&enc);
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
        return finish(out);
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
    return rc != SIGV4_OK ? rc : finish(out);
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
        if (ieq(name, SKIP[i]))
            return true;
    return strlen(name) >= 6 && ieq_n(name, 6, "proxy-");
}

/* Is name one of the ';'-separated entries of list[0..len)? */
static bool in_list(const char *list, size_t len, const char *name)
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
        if (!is_tchar((unsigned char)*s))
            return false;
    return true;
}

static bool header_value_ok(const char *s)
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

/* Internal: a signed header named in `only` is absent from the request. */
#define ERR_SIGNED_HEADER_ABSENT (-100)

/* The canonical request. With only == NULL every header not in the skip list is
 * signed (the signer); otherwise exactly the headers named in only[0..only_len)
 * (the verifier, which must accept what the client chose to sign). */
static int build_creq(const sigv4_config *cfg, const sigv4_request *req, const char *only,
                      size_t only_len, const char *payload_hex, vbuf *creq, vbuf *signed_list)
{
    hentry *ents = NULL;
    size_t n = 0, distinct = 0;
    vbuf names = VBUF_INIT;
    int rc;

    if (!req->method || !*req->method || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (const char *m = req->method; *m; m++)
        if (!is_tchar((unsigned char)*m))
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
        if (!header_name_ok(h->name) || !header_value_ok(h->value)) {
            rc = SIGV4_ERR_INVALID_ARG;
            goto out;
        }
        bool take = only ? in_list(only, only_len, h->name) : !header_is_unsigned(h->name);
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
        rc = ERR_SIGNED_HEADER_ABSENT;
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = put(creq, names.data ? (const char *)names.data : "", names.len);
    if (rc == SIGV4_OK)
        rc = put(creq, "\n", 1);
    if (rc == SIGV4_OK)
        rc = puts_(creq, payload_hex);
    if (rc == SIGV4_OK)
        rc = finish(creq);
    if (rc == SIGV4_OK && signed_list) {
        rc = put(signed_list, names.data ? (const char *)names.data : "", names.len);
        if (rc == SIGV4_OK)
            rc = finish(signed_list);
    }
out:
    vbuf_free(&names);
    free(ents);
    return rc;
}

int sigv4_payload_hash(const uint8_t *body, size_t len, char out[SIGV4_HEX_LEN + 1])
{
    uint8_t md[SIGV4_KEY_LEN];
    if (!out || (!body && len))
        return SIGV4_ERR_INVALID_ARG;
    int rc = sha256(body, len, md);
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
    return build_creq(cfg, req, NULL, 0, payload, creq, signed_headers);
}

/* ---- string to sign and key ---------------------------------------------------- */

static bool scope_part_ok(const char *s)
{
    return s && *s && !strpbrk(s, "/\r\n");
}

int sigv4_scope(const char *date8, const char *region, const char *service, vbuf *out)
{
    if (!out || !date8 || strlen(date8) < 8 || !scope_part_ok(region) ||
        !scope_part_ok(service))
        return SIGV4_ERR_INVALID_ARG;
    if (vbuf_printf(out, "%.8s/%s/%s/" SIGV4_TERMINATOR, date8, region, service) < 0)
        return SIGV4_ERR_NOMEM;
    return finish(out);
}

int sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                         size_t creq_len, vbuf *out)
{
    uint8_t md[SIGV4_KEY_LEN];
    char hex[SIGV4_HEX_LEN + 1];
    if (!amz_date || !scope || !out || (!creq && creq_len))
        return SIGV4_ERR_INVALID_ARG;
    int rc = sha256(creq, creq_len, md);
    if (rc != SIGV4_OK)
        return rc;
    hex_encode(md, sizeof md, hex);
    if (vbuf_printf(out, SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, hex) < 0)
        return SIGV4_ERR_NOMEM;
    return finish(out);
}

int sigv4_derive_signing_key(const char *secret_access_key, const char *date8,
                             const char *region, const char *service,
                             uint8_t key[SIGV4_KEY_LEN])
{
    secret k0 = {NULL, 0};
    uint8_t a[SIGV4_KEY_LEN], b[SIGV4_KEY_LEN];
    int rc;

    if (!secret_access_key || !key || !date8 || strlen(date8) < 8 || !scope_part_ok(region) ||
        !scope_part_ok(service))
        return SIGV4_ERR_INVALID_ARG;
    size_t slen = strlen(secret_access_key);
    if (slen > SIZE_MAX - 4 || secret_alloc(&k0, 4 + slen) < 0)
        return SIGV4_ERR_NOMEM;
    memcpy(k0.data, "AWS4", 4);
    memcpy(k0.data + 4, secret_access_key, slen);

    rc = hmac_sha256(k0.data, k0.len, date8, 8, a);
    if (rc == SIGV4_OK)
        rc = hmac_sha256(a, sizeof a, region, strlen(region), b);
    if (rc == SIGV4_OK)
        rc = hmac_sha256(b, sizeof b, service, strlen(service), a);
    if (rc == SIGV4_OK)
        rc = hmac_sha256(a, sizeof a, SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), key);

    secure_wipe(a, sizeof a);
    secure_wipe(b, sizeof b);
    secret_free(&k0);
    if (rc != SIGV4_OK)
        secure_wipe(key, SIGV4_KEY_LEN);
    return rc;
}

static int sign_raw(const uint8_t key[SIGV4_KEY_LEN], const char *sts, size_t len,
                    uint8_t mac[SIGV4_KEY_LEN])
{
    if (!key || (!sts && len))
        return SIGV4_ERR_INVALID_ARG;
    return hmac_sha256(key, SIGV4_KEY_LEN, sts, len, mac);
}

int sigv4_sign_string(const uint8_t key[SIGV4_KEY_LEN], const char *sts, size_t len,
                      char out[SIGV4_HEX_LEN + 1])
{
    uint8_t mac[SIGV4_KEY_LEN];
    if (!out)
        return SIGV4_ERR_INVALID_ARG;
    int rc = sign_raw(key, sts, len, mac);
    if (rc == SIGV4_OK)
        hex_encode(mac, sizeof mac, out);
    secure_wipe(mac, sizeof mac);
    return rc;
}

int sigv4_format_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1])
{
    struct tm tm;
    if (!out || !gmtime_r(&t, &tm))
        return SIGV4_ERR_INVALID_ARG;
    if (strftime(out, SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_AMZ_DATE_LEN)
        return SIGV4_ERR_INVALID_ARG;
    return SIGV4_OK;
}

/* Strict YYYYMMDDTHHMMSSZ; rejects impossible dates by formatting back. */
static bool parse_amz_date(const char *s, time_t *t)
{
    struct tm tm;
    char back[SIGV4_AMZ_DATE_LEN + 1];
    int v[6];
    static const int at[6] = {0, 4, 6, 9, 11, 13}, len[6] = {4, 2, 2, 2, 2, 2};

    if (strlen(s) != SIGV4_AMZ_DATE_LEN || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (int i = 0; i < 6; i++) {
        v[i] = 0;
        for (int k = 0; k < len[i]; k++) {
            char c = s[at[i] + k];
            if (c < '0' || c > '9')
                return false;
            v[i] = v[i] * 10 + (c - '0');
        }
    }
    memset(&tm, 0, sizeof tm);
    tm.tm_year = v[0] - 1900;
    tm.tm_mon = v[1] - 1;
    tm.tm_mday = v[2];
    tm.tm_hour = v[3];
    tm.tm_min = v[4];
    tm.tm_sec = v[5];
    *t = timegm(&tm);
    return sigv4_format_amz_date(*t, back) == SIGV4_OK && strcmp(back, s) == 0;
}

/* ---- signed output ------------------------------------------------------------- */

static void wipe_str(char *s)
{
    if (s) {
        secure_wipe(s, strlen(s));
        free(s);
    }
}

void sigv4_signed_free(sigv4_signed *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_headers && i < SIGV4_MAX_ADDED_HEADERS; i++) {
        wipe_str(s->headers[i].value); /* may hold the session token */
        s->headers[i].value = NULL;
    }
    s->n_headers = 0;
}

const char *sigv4_signed_get(const sigv4_signed *s, const char *name)
{
    if (!s || !name)
        return NULL;
    for (size_t i = 0; i < s->n_headers; i++)
        if (ieq(s->headers[i].name, name))
            return s->headers[i].value;
    return NULL;
}

static int add_out(sigv4_signed *out, const char *name, char *owned)
{
    if (!owned)
        return SIGV4_ERR_NOMEM;
    out->headers[out->n_headers].name = name;
    out->headers[out->n_headers].value = owned;
    out->n_headers++;
    return SIGV4_OK;
}

/* ---- signer ---------------------------------------------------------------------- */

struct sigv4_signer {
    char *region;
    char *service;
    sigv4_config cfg; /* region/service point at the copies above */
    bool have_key;
    char key_date[9];
    char *akid;
    secret secret_copy; /* only to notice a credential change */
    uint8_t key[SIGV4_KEY_LEN];
    unsigned long derivations;
};

sigv4_signer *sigv4_signer_new(const sigv4_config *cfg)
{
    if (!cfg || !scope_part_ok(cfg->region) || !scope_part_ok(cfg->service))
        return NULL;
    sigv4_signer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->region = strdup(cfg->region);
    s->service = strdup(cfg->service);
    if (!s->region || !s->service) {
        sigv4_signer_free(s);
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.region = s->region;
    s->cfg.service = s->service;
    return s;
}

static void drop_key(sigv4_signer *s)
{
    secure_wipe(s->key, sizeof s->key);
    s->have_key = false;
    free(s->akid);
    s->akid = NULL;
    secret_free(&s->secret_copy);
}

void sigv4_signer_free(sigv4_signer *s)
{
    if (!s)
        return;
    drop_key(s);
    free(s->region);
    free(s->service);
    free(s);
}

unsigned long sigv4_signer_derivations(const sigv4_signer *s)
{
    return s ? s->derivations : 0;
}

static bool same_secret(const secret *a, const char *b)
{
    size_t n = strlen(b);
    return a->data && a->len == n && CRYPTO_memcmp(a->data, b, n) == 0;
}

/* Derives the signing key unless the cached one is for this day and credentials. */
static int ensure_key(sigv4_signer *s, const sigv4_credentials *c, const char *date8)
{
    if (s->have_key && memcmp(s->key_date, date8, 8) == 0 &&
        strcmp(s->akid, c->access_key_id) == 0 && same_secret(&s->secret_copy, c->secret_access_key))
        return SIGV4_OK;

    drop_key(s);
    size_t slen = strlen(c->secret_access_key);
    s->akid = strdup(c->access_key_id);
    if (!s->akid || secret_alloc(&s->secret_copy, slen) < 0) {
        drop_key(s);
        return SIGV4_ERR_NOMEM;
    }
    memcpy(s->secret_copy.data, c->secret_access_key, slen);
    int rc = sigv4_derive_signing_key(c->secret_access_key, date8, s->region, s->service, s->key);
    if (rc != SIGV4_OK) {
        drop_key(s);
        return rc;
    }
    memcpy(s->key_date, date8, 8);
    s->key_date[8] = '\0';
    s->have_key = true;
    s->derivations++;
    return SIGV4_OK;
}

static size_t count_header(const sigv4_request *req, const char *name, const char **value)
{
    size_t n = 0;
    for (size_t i = 0; i < req->n_headers; i++) {
        if (req->headers[i].name && ieq(req->headers[i].name, name)) {
            if (value && !n)
                *value = req->headers[i].value;
            n++;
        }
    }
    return n;
}

static bool creds_ok(const sigv4_credentials *c)
{
    return c && c->access_key_id && *c->access_key_id && !strpbrk(c->access_key_id, "/, \r\n") &&
           c->secret_access_key && *c->secret_access_key &&
           (!c->session_token || header_value_ok(c->session_token));
}

int sigv4_sign_request(sigv4_signer *s, const sigv4_credentials *creds, const sigv4_request *req,
                       time_t now, sigv4_signed *out)
{
    char payload[SIGV4_HEX_LEN + 1];
    sigv4_header *hdrs = NULL;
    vbuf creq = VBUF_INIT, names = VBUF_INIT, scope = VBUF_INIT, sts = VBUF_INIT,
         auth = VBUF_INIT;
    int rc;

    if (!out)
        return SIGV4_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!s || !req || !creds_ok(creds) || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!req->headers[i].name)
            return SIGV4_ERR_INVALID_ARG;

    bool token = creds->session_token && *creds->session_token;
    /* the signer owns these; a request that has them was signed already (a retry
     * must rebuild its headers), and signing twice yields duplicate headers */
    if (count_header(req, "authorization", NULL) || count_header(req, "x-amz-date", NULL) ||
        count_header(req, "x-amz-security-token", NULL) ||
        (s->cfg.add_content_sha256 && count_header(req, "x-amz-content-sha256", NULL)))
        return SIGV4_ERR_ALREADY_SIGNED;
    size_t n_host = count_header(req, "host", NULL);
    if (n_host != 1)
        return n_host ? SIGV4_ERR_INVALID_ARG : SIGV4_ERR_NO_HOST;

    rc = sigv4_format_amz_date(now, out->amz_date);
    if (rc == SIGV4_OK)
        rc = sigv4_payload_hash(req->body, req->body_len, payload);
    if (rc != SIGV4_OK)
        return rc;

    hdrs = calloc(req->n_headers + 3, sizeof *hdrs);
    if (!hdrs)
        return SIGV4_ERR_NOMEM;
    size_t nh = req->n_headers;
    if (nh)
        memcpy(hdrs, req->headers, nh * sizeof *hdrs);
    hdrs[nh++] = (sigv4_header){"X-Amz-Date", out->amz_date};
    if (token)
        hdrs[nh++] = (sigv4_header){"X-Amz-Security-Token", creds->session_token};
    if (s->cfg.add_content_sha256)
        hdrs[nh++] = (sigv4_header){"x-amz-content-sha256", payload};
    sigv4_request full = *req;
    full.headers = hdrs;
    full.n_headers = nh;

    rc = build_creq(&s->cfg, &full, NULL, 0, payload, &creq, &names);
    if (rc == SIGV4_OK)
        rc = sigv4_scope(out->amz_date, s->region, s->service, &scope);
    if (rc == SIGV4_OK)
        rc = sigv4_string_to_sign(out->amz_date, (const char *)scope.data, (const char *)creq.data,
                                  creq.len, &sts);
    if (rc == SIGV4_OK)
        rc = ensure_key(s, creds, out->amz_date);
    if (rc == SIGV4_OK)
        rc = sigv4_sign_string(s->key, (const char *)sts.data, sts.len, out->signature);
    if (rc != SIGV4_OK)
        goto out;
    if (vbuf_printf(&auth, SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                    creds->access_key_id, (const char *)scope.data, (const char *)names.data,
                    out->signature) < 0 ||
        !vbuf_cstr(&auth)) {
        rc = SIGV4_ERR_NOMEM;
        goto out;
    }

    rc = add_out(out, "X-Amz-Date", strdup(out->amz_date));
    if (rc == SIGV4_OK && token)
        rc = add_out(out, "X-Amz-Security-Token", strdup(creds->session_token));
    if (rc == SIGV4_OK && s->cfg.add_content_sha256)
        rc = add_out(out, "x-amz-content-sha256", strdup(payload));
    if (rc == SIGV4_OK) {
        rc = add_out(out, "Authorization", (char *)auth.data);
        auth = (vbuf)VBUF_INIT; /* ownership moved to out */
    }
out:
    free(hdrs);
    vbuf_free_secure(&creq); /* holds the session token */
    vbuf_free_secure(&sts);
    vbuf_free(&names);
    vbuf_free(&scope);
    vbuf_free(&auth);
    if (rc != SIGV4_OK)
        sigv4_signed_free(out);
    return rc;
}

/* ---- verification ----------------------------------------------------------------- */

typedef struct parsed_auth {
    span akid, date, region, service, terminator;
    span signed_headers;
    uint8_t signature[SIGV4_KEY_LEN];
} parsed_auth;

/* "a;b;c": non-empty lower-case tokens in strictly ascending order. */
static bool signed_list_ok(span l)
{
    span prev = {NULL, 0};
    if (!l.n)
        return false;
    for (size_t i = 0; i <= l.n;) {
        const char *semi = memchr(l.p + i, ';', l.n - i);
        size_t n = semi ? (size_t)(semi - (l.p + i)) : l.n - i;
        if (!n)
            return false;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)l.p[i + k];
            if (!is_tchar(c) || (c >= 'A' && c <= 'Z'))
                return false;
        }
        if (prev.p) {
            size_t m = prev.n < n ? prev.n : n;
            int c = memcmp(prev.p, l.p + i, m);
            if (c > 0 || (c == 0 && prev.n >= n))
                return false;
        }
        prev = (span){l.p + i, n};
        i += n + 1;
        if (!semi)
            break;
    }
    return true;
}

static bool parse_credential(span v, parsed_auth *a)
{
    span *parts[5] = {&a->akid, &a->date, &a->region, &a->service, &a->terminator};
    size_t i = 0;
    for (int k = 0; k < 5; k++) {
        const char *slash = k < 4 ? memchr(v.p + i, '/', v.n - i) : NULL;
        size_t n = k < 4 ? (slash ? (size_t)(slash - (v.p + i)) : 0) : v.n - i;
        if ((k < 4 && !slash) || !n || memchr(v.p + i, '/', n))
            return false;
        *parts[k] = (span){v.p + i, n};
        i += n + 1;
    }
    return true;
}

/* AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
 *     SignedHeaders=a;b;c, Signature=<64 hex>  (components in any order, once each) */
static bool parse_auth(const char *v, parsed_auth *a)
{
    bool have_cred = false, have_sh = false, have_sig = false;
    size_t alg = strlen(SIGV4_ALGORITHM);

    memset(a, 0, sizeof *a);
    if (strncmp(v, SIGV4_ALGORITHM, alg) != 0 || v[alg] != ' ')
        return false;
    const char *p = v + alg;
    while (*p) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        const char *eq = memchr(p, '=', m);
        if (!eq)
            return false;
        span key = {p, (size_t)(eq - p)};
        span val = {eq + 1, m - key.n - 1};
        if (eq_n(key.p, key.n, "Credential") && !have_cred) {
            if (!parse_credential(val, a))
                return false;
            have_cred = true;
        } else if (eq_n(key.p, key.n, "SignedHeaders") && !have_sh) {
            if (!signed_list_ok(val))
                return false;
            a->signed_headers = val;
            have_sh = true;
        } else if (eq_n(key.p, key.n, "Signature") && !have_sig) {
            if (hex_decode_exact(val.p, val.n, a->signature, sizeof a->signature) < 0)
                return false;
            have_sig = true;
        } else {
            return false;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (!*p)
                return false; /* trailing comma */
        }
    }
    return have_cred && have_sh && have_sig;
}

static bool span_eq_str(span s, const char *lit)
{
    return lit && eq_n(s.p, s.n, lit);
}

static int verify_checked(const sigv4_config *cfg, const sigv4_credentials *known,
                          size_t n_known, const sigv4_request *req, time_t now)
{
    const char *auth_value = NULL, *date_value = NULL, *token_value = NULL, *sha_value = NULL;
    const sigv4_credentials *cred = NULL;
    parsed_auth a;
    time_t t;
    char payload[SIGV4_HEX_LEN + 1];
    uint8_t key[SIGV4_KEY_LEN], mac[SIGV4_KEY_LEN];
    vbuf creq = VBUF_INIT, scope = VBUF_INIT, sts = VBUF_INIT;
    int rc;

    size_t n_auth = count_header(req, "authorization", &auth_value);
    if (n_auth == 0)
        return SIGV4_ERR_MISSING_AUTH;
    if (n_auth > 1 || !auth_value || !parse_auth(auth_value, &a))
        return SIGV4_ERR_MALFORMED_AUTH;

    for (size_t i = 0; i < n_known && !cred; i++)
        if (known[i].access_key_id && span_eq_str(a.akid, known[i].access_key_id))
            cred = &known[i];
    if (!cred || !cred->secret_access_key)
        return SIGV4_ERR_UNKNOWN_KEY;

    if (count_header(req, "x-amz-date", &date_value) != 1 || !date_value ||
        !parse_amz_date(date_value, &t))
        return SIGV4_ERR_MALFORMED_AUTH;
    if (a.date.n != 8 || memcmp(a.date.p, date_value, 8) != 0 ||
        !span_eq_str(a.region, cfg->region) || !span_eq_str(a.service, cfg->service) ||
        !span_eq_str(a.terminator, SIGV4_TERMINATOR))
        return SIGV4_ERR_BAD_SCOPE;
    if (!in_list(a.signed_headers.p, a.signed_headers.n, "host") ||
        !in_list(a.signed_headers.p, a.signed_headers.n, "x-amz-date"))
        return SIGV4_ERR_MALFORMED_AUTH;
    double skew = difftime(t, now); /* no time_t overflow on a hostile clock */
    if (skew > SIGV4_MAX_SKEW_SECONDS || skew < -SIGV4_MAX_SKEW_SECONDS)
        return SIGV4_ERR_STALE_DATE;

    size_t n_token = count_header(req, "x-amz-security-token", &token_value);
    bool want_token = cred->session_token && *cred->session_token;
    if (want_token) {
        size_t want = strlen(cred->session_token);
        if (n_token != 1 || !token_value || strlen(token_value) != want ||
            CRYPTO_memcmp(token_value, cred->session_token, want) != 0 ||
            !in_list(a.signed_headers.p, a.signed_headers.n, "x-amz-security-token"))
            return SIGV4_ERR_TOKEN_MISMATCH;
    } else if (n_token) {
        return SIGV4_ERR_TOKEN_MISMATCH;
    }

    rc = sigv4_payload_hash(req->body, req->body_len, payload);
    if (rc != SIGV4_OK)
        return rc;
    /* a client that sends x-amz-content-sha256 claims the body hash: hold it to it */
    if (count_header(req, "x-amz-content-sha256", &sha_value) &&
        (!sha_value || strcmp(sha_value, payload) != 0))
        return SIGV4_ERR_SIGNATURE_MISMATCH;

    rc = build_creq(cfg, req, a.signed_headers.p, a.signed_headers.n, payload, &creq, NULL);
    if (rc == ERR_SIGNED_HEADER_ABSENT) {
        rc = SIGV4_ERR_SIGNATURE_MISMATCH;
        goto out;
    }
    if (rc == SIGV4_OK)
        rc = sigv4_scope(date_value, cfg->region, cfg->service, &scope);
    if (rc == SIGV4_OK)
        rc = sigv4_string_to_sign(date_value, (const char *)scope.data, (const char *)creq.data,
                                  creq.len, &sts);
    if (rc == SIGV4_OK)
        rc = sigv4_derive_signing_key(cred->secret_access_key, date_value, cfg->region,
                                      cfg->service, key);
    if (rc == SIGV4_OK)
        rc = sign_raw(key, (const char *)sts.data, sts.len, mac);
    if (rc == SIGV4_OK && CRYPTO_memcmp(mac, a.signature, sizeof mac) != 0)
        rc = SIGV4_ERR_SIGNATURE_MISMATCH;
out:
    secure_wipe(key, sizeof key);
    secure_wipe(mac, sizeof mac);
    vbuf_free_secure(&creq);
    vbuf_free_secure(&sts);
    vbuf_free(&scope);
    return rc;
}

int sigv4_verify(const sigv4_config *cfg, const sigv4_credentials *known, size_t n_known,
                 const sigv4_request *req, time_t now)
{
    if (!cfg || !scope_part_ok(cfg->region) || !scope_part_ok(cfg->service) ||
        (!known && n_known) || !req || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!req->headers[i].name || !req->headers[i].value)
            return SIGV4_ERR_INVALID_ARG;
    return verify_checked(cfg, known, n_known, req, now);
}

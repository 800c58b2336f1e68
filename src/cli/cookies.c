/* cookies — a load balancer's cookies for one run (see cookies.h). */
#include "cli/cookies.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

typedef struct span {
    const char *p;
    size_t n;
} span;

static span trim(const char *p, size_t n)
{
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return (span){p, n};
}

/* RFC 6265 4.1.1: a cookie-name is an RFC 7230 token */
static bool name_ok(span s)
{
    if (s.n == 0 || s.n > COOKIE_NAME_MAX)
        return false;
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (!alnum && !strchr("!#$%&'*+-.^_`|~", c))
            return false;
    }
    return true;
}

/* cookie-octets, optionally in double quotes: no control, space, comma, semicolon or
 * backslash, so a value can never end the header line or add a cookie of its own */
static bool value_ok(span s)
{
    if (s.n > COOKIE_VALUE_MAX)
        return false;
    if (s.n >= 2 && s.p[0] == '"' && s.p[s.n - 1] == '"')
        s = (span){s.p + 1, s.n - 2};
    for (size_t i = 0; i < s.n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (!(c == 0x21 || (c >= 0x23 && c <= 0x2B) || (c >= 0x2D && c <= 0x3A) || (c >= 0x3C && c <= 0x5B) ||
              (c >= 0x5D && c <= 0x7E)))
            return false;
    }
    return true;
}

/* A Max-Age attribute of zero or less among the attributes after the first ';'
 * (RFC 6265 5.2.2: one that does not start with a digit or '-' is ignored). */
static bool removes(const char *p, size_t n)
{
    while (n) {
        const char *semi = memchr(p, ';', n);
        size_t len = semi ? (size_t)(semi - p) : n;
        span a = trim(p, len);
        if (a.n > 8 && strncasecmp(a.p, "Max-Age=", 8) == 0) {
            span v = {a.p + 8, a.n - 8};
            size_t i = v.p[0] == '-';
            bool valid = i < v.n, zero = true;
            for (; valid && i < v.n; i++) {
                valid = v.p[i] >= '0' && v.p[i] <= '9';
                zero = zero && v.p[i] == '0';
            }
            if (valid && (v.p[0] == '-' || zero))
                return true;
        }
        p += len + (semi != NULL);
        n -= len + (semi != NULL);
    }
    return false;
}

/* The header's length (without its NUL) were cookie `skip` left out and one of
 * extra bytes (name=value) added. */
static size_t header_len(const cookie_jar *j, size_t skip, size_t extra)
{
    size_t total = 0, count = 0;
    for (size_t i = 0; i < j->n; i++) {
        if (i == skip)
            continue;
        total += strlen(j->c[i].name) + 1 + strlen(j->c[i].value);
        count++;
    }
    if (extra) {
        total += extra;
        count++;
    }
    return total + (count ? 2 * (count - 1) : 0);
}

int cookie_jar_set(cookie_jar *j, const char *v, size_t len)
{
    const char *semi = memchr(v, ';', len);
    size_t first = semi ? (size_t)(semi - v) : len;
    const char *eq = memchr(v, '=', first);
    if (!eq)
        return -1;
    span name = trim(v, (size_t)(eq - v));
    span value = trim(eq + 1, first - (size_t)(eq + 1 - v));
    if (!name_ok(name) || !value_ok(value))
        return -1;
    size_t at = j->n;
    for (size_t i = 0; i < j->n; i++)
        if (strlen(j->c[i].name) == name.n && memcmp(j->c[i].name, name.p, name.n) == 0)
            at = i;
    if (removes(v + first, len - first)) {
        if (at < j->n) {
            memmove(&j->c[at], &j->c[at + 1], (j->n - at - 1) * sizeof j->c[0]);
            j->n--;
            OPENSSL_cleanse(&j->c[j->n], sizeof j->c[0]);
        }
        return 0;
    }
    if ((at == j->n && j->n == COOKIE_MAX) || header_len(j, at, name.n + 1 + value.n) >= COOKIE_HEADER_MAX)
        return -1;
    memcpy(j->c[at].name, name.p, name.n);
    j->c[at].name[name.n] = '\0';
    OPENSSL_cleanse(j->c[at].value, sizeof j->c[at].value);
    memcpy(j->c[at].value, value.p, value.n);
    if (at == j->n)
        j->n++;
    return 0;
}

size_t cookie_jar_header(const cookie_jar *j, char *out, size_t n)
{
    size_t len = 0;
    if (n)
        out[0] = '\0';
    for (size_t i = 0; i < j->n; i++) {
        size_t a = strlen(j->c[i].name), b = strlen(j->c[i].value), sep = i ? 2 : 0;
        if (len + sep + a + 1 + b >= n) /* kept within COOKIE_HEADER_MAX when set */
            break;
        memcpy(out + len, "; ", sep);
        memcpy(out + len + sep, j->c[i].name, a);
        out[len + sep + a] = '=';
        memcpy(out + len + sep + a + 1, j->c[i].value, b);
        len += sep + a + 1 + b;
        out[len] = '\0';
    }
    return len;
}

void cookie_jar_clear(cookie_jar *j)
{
    OPENSSL_cleanse(j, sizeof *j);
}

/* allowlist_yaml — the AWS vsock-proxy allowlist file format, the YAML subset it
 * uses (allowlist: a list of {address, port} items, block or flow form, comments),
 * parsed line by line into proxy_allowlist_add. Anything else is an error naming
 * the file and line; no YAML library (see allowlist.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "proxy/allowlist.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

#define PORT_MAX 65535UL

typedef struct yaml_item {
    bool open;          /* a block-form item whose keys are still arriving */
    size_t line;        /* where the item started */
    size_t key_col;     /* column of its keys */
    bool have_addr, have_port;
    char addr[HTTP1_HOST_BUF + 2];
    unsigned long port;
} yaml_item;

typedef struct yaml_ctx {
    proxy_allowlist *al;
    const char *name;
    size_t line;
    size_t added;
    char *err;
    size_t errlen;
} yaml_ctx;

#define YAML_ERR(y, ...)                                                                   \
    do {                                                                                   \
        int n_ = snprintf((y)->err, (y)->errlen, "%s:%zu: ", (y)->name, (y)->line);      \
        if (n_ >= 0 && (size_t)n_ < (y)->errlen)                                           \
            snprintf((y)->err + n_, (y)->errlen - (size_t)n_, __VA_ARGS__);                \
    } while (0)

static bool is_blank(char c) { return c == ' ' || c == '\t'; }

static void trim(const char **s, size_t *n)
{
    while (*n && is_blank(**s)) {
        (*s)++;
        (*n)--;
    }
    while (*n && is_blank((*s)[*n - 1]))
        (*n)--;
}

/* Length of the line without its comment: a '#' at the start or after a blank, outside
 * quotes, starts a comment (YAML). -1 on an unterminated quote. */
static ptrdiff_t strip_comment(const char *s, size_t n)
{
    char quote = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (quote) {
            if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'') {
            quote = c;
        } else if (c == '#' && (i == 0 || is_blank(s[i - 1]))) {
            return (ptrdiff_t)i;
        }
    }
    return quote ? -1 : (ptrdiff_t)n;
}

/* A scalar value: plain, or wholly inside one pair of quotes (no escapes). */
static int yaml_scalar(yaml_ctx *y, const char *v, size_t n, bool allow_quotes, const char **out,
                       size_t *outlen)
{
    trim(&v, &n);
    if (n == 0) {
        YAML_ERR(y, "missing value");
        return -1;
    }
    if (v[0] == '"' || v[0] == '\'') {
        if (!allow_quotes || n < 2 || v[n - 1] != v[0] || memchr(v + 1, v[0], n - 2) ||
            (v[0] == '"' && memchr(v + 1, '\\', n - 2))) {
            YAML_ERR(y, "bad quoted value");
            return -1;
        }
        v++;
        n -= 2;
    }
    *out = v;
    *outlen = n;
    return 0;
}

/* One `key: value` pair (address or port) into item. */
static int yaml_pair(yaml_ctx *y, yaml_item *it, const char *s, size_t n)
{
    trim(&s, &n);
    const char *colon = memchr(s, ':', n);
    if (!colon || (colon + 1 < s + n && !is_blank(colon[1]))) {
        YAML_ERR(y, "expected 'address: HOST' or 'port: PORT'");
        return -1;
    }
    size_t klen = (size_t)(colon - s);
    const char *v;
    size_t vlen;
    if (klen == 7 && memcmp(s, "address", 7) == 0) {
        if (it->have_addr) {
            YAML_ERR(y, "duplicate key 'address'");
            return -1;
        }
        if (yaml_scalar(y, colon + 1, n - klen - 1, true, &v, &vlen) < 0)
            return -1;
        if (vlen == 0 || vlen >= sizeof it->addr) {
            YAML_ERR(y, "bad address length");
            return -1;
        }
        memcpy(it->addr, v, vlen);
        it->addr[vlen] = '\0';
        it->have_addr = true;
        return 0;
    }
    if (klen == 4 && memcmp(s, "port", 4) == 0) {
        if (it->have_port) {
            YAML_ERR(y, "duplicate key 'port'");
            return -1;
        }
        if (yaml_scalar(y, colon + 1, n - klen - 1, false, &v, &vlen) < 0)
            return -1;
        char pbuf[8];
        long p;
        if (vlen >= sizeof pbuf) {
            YAML_ERR(y, "port must be 1..65535");
            return -1;
        }
        memcpy(pbuf, v, vlen);
        pbuf[vlen] = '\0';
        if (parse_long(pbuf, 1, (long)PORT_MAX, &p) < 0) {
            YAML_ERR(y, "port must be 1..65535");
            return -1;
        }
        it->port = (unsigned long)p;
        it->have_port = true;
        return 0;
    }
    YAML_ERR(y, "unknown key '%.*s' (expected address or port)", (int)(klen < 40 ? klen : 40), s);
    return -1;
}

/* Adds a complete item; y->line must point at the item's line for messages. */
static int yaml_finish(yaml_ctx *y, yaml_item *it)
{
    if (!it->have_addr || !it->have_port) {
        YAML_ERR(y, "entry needs both address and port");
        return -1;
    }
    char e[200];
    if (proxy_allowlist_add(y->al, it->addr, it->port, e, sizeof e) < 0) {
        YAML_ERR(y, "%s", e);
        return -1;
    }
    y->added++;
    memset(it, 0, sizeof *it);
    return 0;
}

static int yaml_close_open_item(yaml_ctx *y, yaml_item *it)
{
    if (!it->open)
        return 0;
    size_t cur = y->line;
    y->line = it->line;
    int rc = yaml_finish(y, it);
    y->line = cur;
    return rc;
}

/* `{address: HOST, port: PORT}` */
static int yaml_flow(yaml_ctx *y, const char *s, size_t n)
{
    if (n < 2 || s[n - 1] != '}') {
        YAML_ERR(y, "expected '{address: HOST, port: PORT}'");
        return -1;
    }
    yaml_item it;
    memset(&it, 0, sizeof it);
    const char *p = s + 1, *end = s + n - 1;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        const char *part = p;
        size_t plen = (size_t)(stop - p);
        trim(&part, &plen);
        if (plen == 0 && !comma && (it.have_addr || it.have_port))
            break; /* a trailing comma before '}' is fine in YAML */
        if (yaml_pair(y, &it, part, plen) < 0)
            return -1;
        p = stop + 1;
    }
    return yaml_finish(y, &it);
}

int proxy_allowlist_load_yaml(proxy_allowlist *al, const char *name, const char *text, size_t len,
                              char *err, size_t errlen)
{
    yaml_ctx y = {al, name ? name : "allowlist", 0, 0, err, errlen};
    yaml_item it;
    memset(&it, 0, sizeof it);
    bool seen_key = false;
    size_t pos = 0;
    if (!text && len) {
        SET_ERR("no text");
        return -1;
    }
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        y.line++;
        if (n && line[n - 1] == '\r')
            n--;
        if (memchr(line, '\0', n) || memchr(line, '\r', n)) {
            YAML_ERR(&y, "control character in line");
            return -1;
        }
        ptrdiff_t cut = strip_comment(line, n);
        if (cut < 0) {
            YAML_ERR(&y, "unterminated quote");
            return -1;
        }
        n = (size_t)cut;
        while (n && is_blank(line[n - 1]))
            n--;
        size_t indent = 0;
        while (indent < n && line[indent] == ' ')
            indent++;
        if (indent == n)
            continue; /* blank or comment-only */
        if (line[indent] == '\t') {
            YAML_ERR(&y, "tab in indentation");
            return -1;
        }
        const char *s = line + indent;
        size_t m = n - indent;
        if (!seen_key) {
            if (indent != 0 || m != 10 || memcmp(s, "allowlist:", 10) != 0) {
                YAML_ERR(&y, "expected 'allowlist:'");
                return -1;
            }
            seen_key = true;
            continue;
        }
        if (s[0] == '-' && (m == 1 || is_blank(s[1]))) {
            if (yaml_close_open_item(&y, &it) < 0)
                return -1;
            const char *r = s + 1;
            size_t rn = m - 1;
            while (rn && r[0] == ' ') {
                r++;
                rn--;
            }
            if (rn == 0 || r[0] == '\t') {
                YAML_ERR(&y, "expected '- {address: HOST, port: PORT}' or '- address: HOST'");
                return -1;
            }
            if (r[0] == '{') {
                if (yaml_flow(&y, r, rn) < 0)
                    return -1;
                continue;
            }
            it.open = true;
            it.line = y.line;
            it.key_col = (size_t)(r - line);
            if (yaml_pair(&y, &it, r, rn) < 0)
                return -1;
            continue;
        }
        if (it.open && indent == it.key_col) {
            if (yaml_pair(&y, &it, s, m) < 0)
                return -1;
            continue;
        }
        YAML_ERR(&y, "expected '- {address: HOST, port: PORT}' or '- address: HOST'");
        return -1;
    }
    if (yaml_close_open_item(&y, &it) < 0)
        return -1;
    if (!seen_key) {
        SET_ERR("%s: no 'allowlist:' key", y.name);
        return -1;
    }
    if (y.added == 0) {
        SET_ERR("%s: the allowlist has no entries", y.name);
        return -1;
    }
    return 0;
}

int proxy_allowlist_load_file(proxy_allowlist *al, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        SET_ERR("%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    char *text = malloc(PROXY_ALLOWLIST_MAX_FILE + 1);
    if (!text) {
        SET_ERR("out of memory");
        goto out;
    }
    size_t n = fread(text, 1, PROXY_ALLOWLIST_MAX_FILE + 1, f);
    if (ferror(f)) {
        SET_ERR("%s: read error", path);
        goto out;
    }
    if (n > PROXY_ALLOWLIST_MAX_FILE) {
        SET_ERR("%s: larger than %d bytes", path, PROXY_ALLOWLIST_MAX_FILE);
        goto out;
    }
    rc = proxy_allowlist_load_yaml(al, path, text, n, err, errlen);
out:
    free(text);
    fclose(f);
    return rc;
}

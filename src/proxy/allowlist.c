/* allowlist — entries, --resolve pins, matching and special addresses (see allowlist.h);
 * the allowlist file format is allowlist_yaml.c. */
#include "proxy/allowlist.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config.h"

#define SET_ERR(...) snprintf(err, errlen, __VA_ARGS__)

#define PORT_MAX 65535UL

void proxy_allowlist_init(proxy_allowlist *al) { memset(al, 0, sizeof *al); }

void proxy_allowlist_free(proxy_allowlist *al)
{
    if (!al)
        return;
    free(al->entries);
    free(al->pins);
    memset(al, 0, sizeof *al);
}

/* Grows *arr (elements of size sz) so that one more fits. */
static int grow(void **arr, size_t *cap, size_t n, size_t sz, size_t max)
{
    if (n < *cap)
        return 0;
    if (n >= max)
        return -1;
    size_t ncap = *cap ? *cap * 2 : 8;
    if (ncap > max)
        ncap = max;
    void *p = realloc(*arr, ncap * sz);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* Normalises host and port exactly as a CONNECT request would be: the allowlist is
 * built by the same parser that reads the requests it is matched against, so the two
 * can never disagree on case, trailing dots or IP literal spelling. */
static int normalize(const char *host, size_t hlen, unsigned long port, char out[HTTP1_HOST_BUF],
                     http1_host_kind *kind, char *err, size_t errlen)
{
    if (hlen == 0 || hlen > HTTP1_MAX_HOST_LEN + 2) {
        SET_ERR("host must be 1..%d characters", HTTP1_MAX_HOST_LEN);
        return -1;
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c <= 0x20 || c >= 0x7f || c == '/' || c == '@') {
            SET_ERR("host '%.*s' contains a character not allowed in a host", (int)hlen, host);
            return -1;
        }
    }
    if (port < 1 || port > PORT_MAX) {
        SET_ERR("port must be 1..65535");
        return -1;
    }
    bool bracket = host[0] != '[' && memchr(host, ':', hlen) != NULL;
    char line[HTTP1_HOST_BUF + 64];
    int n = snprintf(line, sizeof line, "CONNECT %s%.*s%s:%lu HTTP/1.1\r\n\r\n", bracket ? "[" : "",
                     (int)hlen, host, bracket ? "]" : "", port);
    if (n < 0 || (size_t)n >= sizeof line) {
        SET_ERR("host too long");
        return -1;
    }
    http1_connect req;
    int rc = http1_parse_connect(line, (size_t)n, &req);
    if (rc < 0) {
        SET_ERR("bad host '%.*s': %s", (int)hlen, host, http1_strerror(rc));
        return -1;
    }
    if (rc != n || req.port != port) {
        SET_ERR("bad host '%.*s'", (int)hlen, host);
        return -1;
    }
    memcpy(out, req.host, HTTP1_HOST_BUF);
    if (kind)
        *kind = req.host_kind;
    return 0;
}

int proxy_allowlist_add(proxy_allowlist *al, const char *host, unsigned long port, char *err,
                        size_t errlen)
{
    proxy_allow_entry e;
    memset(&e, 0, sizeof e);
    if (!host) {
        SET_ERR("host missing");
        return -1;
    }
    if (normalize(host, strlen(host), port, e.host, NULL, err, errlen) < 0)
        return -1;
    e.port = (uint16_t)port;
    if (proxy_allowlist_match(al, e.host, e.port))
        return 0;
    if (grow((void **)&al->entries, &al->cap_entries, al->n_entries, sizeof e,
             PROXY_ALLOWLIST_MAX_ENTRIES) < 0) {
        SET_ERR("too many allowlist entries (at most %d)", PROXY_ALLOWLIST_MAX_ENTRIES);
        return -1;
    }
    al->entries[al->n_entries++] = e;
    return 0;
}

/* Splits `HOST:PORT` / `[V6]:PORT` at the port colon. host_len excludes the colon. */
static int split_host_port(const char *s, size_t n, size_t *host_len, unsigned long *port)
{
    const char *colon;
    if (n && s[0] == '[') {
        const char *rb = memchr(s, ']', n);
        if (!rb || rb + 1 >= s + n || rb[1] != ':')
            return -1;
        colon = rb + 1;
    } else {
        colon = memchr(s, ':', n);
        if (!colon)
            return -1;
    }
    size_t plen = n - (size_t)(colon - s) - 1;
    char pbuf[8];
    if (plen == 0 || plen >= sizeof pbuf)
        return -1;
    memcpy(pbuf, colon + 1, plen);
    pbuf[plen] = '\0';
    long v;
    if (parse_long(pbuf, 1, (long)PORT_MAX, &v) < 0)
        return -1;
    *host_len = (size_t)(colon - s);
    *port = (unsigned long)v;
    return 0;
}

int proxy_allowlist_add_spec(proxy_allowlist *al, const char *spec, char *err, size_t errlen)
{
    size_t hlen;
    unsigned long port;
    if (!spec || split_host_port(spec, strlen(spec), &hlen, &port) < 0) {
        SET_ERR("expected HOST:PORT (port 1..65535), got '%s'", spec ? spec : "");
        return -1;
    }
    char host[HTTP1_HOST_BUF + 2];
    if (hlen >= sizeof host) {
        SET_ERR("host too long in '%s'", spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    return proxy_allowlist_add(al, host, port, err, errlen);
}

int proxy_allowlist_add_default(proxy_allowlist *al, const char *region, char *err, size_t errlen)
{
    char host[HTTP1_HOST_BUF];
    if (!region || !*region) {
        SET_ERR("region missing");
        return -1;
    }
    int n = snprintf(host, sizeof host, "bedrock-runtime.%s.amazonaws.com", region);
    if (n < 0 || (size_t)n >= sizeof host) {
        SET_ERR("region too long");
        return -1;
    }
    if (proxy_allowlist_add(al, host, PROXY_BEDROCK_PORT, err, errlen) < 0) {
        SET_ERR("bad region '%s'", region);
        return -1;
    }
    return 0;
}

/* ---- pins ---- */

static int parse_ip(const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss,
                    socklen_t *len)
{
    char tmp[INET6_ADDRSTRLEN + 2];
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        s++;
        n -= 2;
    }
    if (n == 0 || n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, tmp, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        *len = sizeof *sin;
        return 0;
    }
    if (inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        *len = sizeof *sin6;
        return 0;
    }
    return -1;
}

int proxy_allowlist_add_pin(proxy_allowlist *al, const char *spec, char *err, size_t errlen)
{
    if (!spec) {
        SET_ERR("--resolve: missing value");
        return -1;
    }
    const char *c1 = strchr(spec, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || c2[1] == '\0' || spec[0] == '[' || spec[0] == '+' || spec[0] == '-' ||
        spec[0] == '*') {
        SET_ERR("--resolve: expected HOST:PORT:ADDR[,ADDR...] with HOST a name, got '%s'", spec);
        return -1;
    }
    char host[HTTP1_HOST_BUF + 2];
    size_t hlen = (size_t)(c1 - spec);
    if (hlen == 0 || hlen >= sizeof host) {
        SET_ERR("--resolve: bad host in '%s'", spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    char pbuf[8];
    size_t plen = (size_t)(c2 - c1 - 1);
    long port;
    if (plen == 0 || plen >= sizeof pbuf) {
        SET_ERR("--resolve: port must be 1..65535 in '%s'", spec);
        return -1;
    }
    memcpy(pbuf, c1 + 1, plen);
    pbuf[plen] = '\0';
    if (parse_long(pbuf, 1, (long)PORT_MAX, &port) < 0) {
        SET_ERR("--resolve: port must be 1..65535 in '%s'", spec);
        return -1;
    }
    proxy_pin pin;
    memset(&pin, 0, sizeof pin);
    http1_host_kind kind;
    char e[200];
    if (normalize(host, hlen, (unsigned long)port, pin.host, &kind, e, sizeof e) < 0) {
        SET_ERR("--resolve: %s", e);
        return -1;
    }
    if (kind != HTTP1_HOST_NAME) {
        SET_ERR("--resolve: HOST must be a name, not an IP literal, in '%s'", spec);
        return -1;
    }
    pin.port = (uint16_t)port;
    /* validate every address first, so a bad list adds nothing */
    for (int pass = 0; pass < 2; pass++) {
        const char *a = c2 + 1;
        for (;;) {
            const char *comma = strchr(a, ',');
            size_t alen = comma ? (size_t)(comma - a) : strlen(a);
            if (parse_ip(a, alen, pin.port, &pin.addr, &pin.addr_len) < 0) {
                SET_ERR("--resolve: bad address '%.*s' (expected a dotted quad or [IPv6])",
                        (int)(alen < 64 ? alen : 64), a);
                return -1;
            }
            if (pass == 1) {
                if (grow((void **)&al->pins, &al->cap_pins, al->n_pins, sizeof pin,
                         PROXY_ALLOWLIST_MAX_PINS) < 0) {
                    SET_ERR("--resolve: too many pinned addresses (at most %d)",
                            PROXY_ALLOWLIST_MAX_PINS);
                    return -1;
                }
                al->pins[al->n_pins++] = pin;
            }
            if (!comma)
                break;
            a = comma + 1;
        }
    }
    return 0;
}

/* ---- matching ---- */

/* host without one trailing dot; false if that leaves it empty or too long */
static bool host_key(const char *host, const char **h, size_t *n)
{
    if (!host)
        return false;
    size_t len = strnlen(host, HTTP1_HOST_BUF + 1);
    if (len && host[len - 1] == '.')
        len--;
    if (len == 0 || len > HTTP1_MAX_HOST_LEN)
        return false;
    *h = host;
    *n = len;
    return true;
}

static bool host_eq(const char *stored, const char *h, size_t n)
{
    return strlen(stored) == n && strncasecmp(stored, h, n) == 0;
}

bool proxy_allowlist_match(const proxy_allowlist *al, const char *host, uint16_t port)
{
    const char *h;
    size_t n;
    if (!al || !host_key(host, &h, &n))
        return false;
    for (size_t i = 0; i < al->n_entries; i++)
        if (al->entries[i].port == port && host_eq(al->entries[i].host, h, n))
            return true;
    return false;
}

size_t proxy_allowlist_pinned(const proxy_allowlist *al, const char *host, uint16_t port,
                              proxy_pin *out, size_t max)
{
    const char *h;
    size_t n, count = 0;
    if (!al || !host_key(host, &h, &n))
        return 0;
    for (size_t i = 0; i < al->n_pins; i++) {
        if (al->pins[i].port != port || !host_eq(al->pins[i].host, h, n))
            continue;
        if (out && count < max)
            out[count] = al->pins[i];
        count++;
    }
    return count;
}

/* ---- special addresses ---- */

/* One block of an IANA special-purpose registry; the first block that matches wins. */
typedef struct v4_block {
    uint32_t net;
    unsigned len;
    const char *why;
} v4_block;

typedef struct v6_block {
    uint8_t net[16];
    unsigned len;
    const char *why;
} v6_block;

#define V4(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

/* The IPv4 Special-Purpose Address Registry's blocks that are not globally reachable,
 * plus multicast, broadcast and the deprecated 6to4 relay anycast. The globally
 * reachable anycast services (AS112, AMT) stay ordinary. */
static const v4_block V4_SPECIAL[] = {
    {V4(0, 0, 0, 0), 32, "unspecified"},
    {V4(0, 0, 0, 0), 8, "this-network"},
    {V4(10, 0, 0, 0), 8, "private"},          /* RFC 1918 */
    {V4(100, 64, 0, 0), 10, "shared"},        /* carrier-grade NAT */
    {V4(127, 0, 0, 0), 8, "loopback"},
    {V4(169, 254, 0, 0), 16, "link-local"},   /* EC2 IMDS lives at 169.254.169.254 */
    {V4(172, 16, 0, 0), 12, "private"},
    {V4(192, 0, 0, 0), 24, "ietf-protocol"},  /* DS-Lite, NAT64 discovery, ... */
    {V4(192, 0, 2, 0), 24, "documentation"},  /* TEST-NET-1 */
    {V4(192, 88, 99, 0), 24, "6to4-relay"},   /* deprecated (RFC 7526) */
    {V4(192, 168, 0, 0), 16, "private"},
    {V4(198, 18, 0, 0), 15, "benchmarking"},  /* RFC 2544 */
    {V4(198, 51, 100, 0), 24, "documentation"},
    {V4(203, 0, 113, 0), 24, "documentation"},
    {V4(224, 0, 0, 0), 4, "multicast"},
    {V4(255, 255, 255, 255), 32, "broadcast"},
    {V4(240, 0, 0, 0), 4, "reserved"},
};

/* The IPv6 registry's blocks (after the forms that carry an IPv4 address, which are
 * judged by that address). Whatever lies outside 2000::/3 and is not listed here is
 * unassigned or reserved by the IETF (100::/64 discard, 5f00::/16 SRv6, ...). */
static const v6_block V6_SPECIAL[] = {
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "local-nat64"}, /* 64:ff9b:1::/48, RFC 8215 */
    {{0x01, 0x00}, 64, "discard"},                              /* 100::/64 */
    {{0x20, 0x01, 0x00, 0x00}, 32, "teredo"},                   /* 2001::/32: tunnels to IPv4 */
    {{0x20, 0x01, 0x00, 0x02, 0x00, 0x00}, 48, "benchmarking"}, /* 2001:2::/48 */
    {{0x20, 0x01}, 23, "ietf-protocol"},                        /* 2001::/23 */
    {{0x20, 0x01, 0x0d, 0xb8}, 32, "documentation"},            /* 2001:db8::/32 */
    {{0x3f, 0xff}, 20, "documentation"},                        /* 3fff::/20, RFC 9637 */
    {{0xfe, 0x80}, 10, "link-local"},
    {{0xfe, 0xc0}, 10, "site-local"},                           /* deprecated */
    {{0xfc}, 7, "unique-local"}, /* includes fd00:ec2::254 (IMDS over IPv6) */
    {{0xff}, 8, "multicast"},
};

static const char *special_v4(uint32_t a)
{
    for (size_t i = 0; i < sizeof V4_SPECIAL / sizeof V4_SPECIAL[0]; i++) {
        const v4_block *b = &V4_SPECIAL[i];
        uint32_t mask = b->len == 0 ? 0 : 0xffffffffu << (32 - b->len);
        if ((a & mask) == b->net)
            return b->why;
    }
    return NULL;
}

static bool v6_in(const uint8_t a[16], const v6_block *b)
{
    size_t whole = b->len / 8;
    unsigned rest = b->len % 8;
    if (memcmp(a, b->net, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (b->net[whole] & mask);
}

static uint32_t be32_at(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *special_v6(const uint8_t b[16])
{
    static const uint8_t zero[12] = {0};
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return special_v4(be32_at(b + 12));
    if (memcmp(b, zero, 12) == 0) {
        uint32_t v4 = be32_at(b + 12);
        if (v4 == 0)
            return "unspecified";
        if (v4 == 1)
            return "loopback";
        const char *r = special_v4(v4); /* IPv4-compatible, deprecated (RFC 4291) */
        return r ? r : "reserved";
    }
    if (b[0] == 0x20 && b[1] == 0x02)
        return special_v4(be32_at(b + 2)); /* 6to4 carries the IPv4 address */
    for (size_t i = 0; i < sizeof V6_SPECIAL / sizeof V6_SPECIAL[0]; i++)
        if (v6_in(b, &V6_SPECIAL[i]))
            return V6_SPECIAL[i].why;
    if ((b[0] & 0xe0) != 0x20)
        return "reserved"; /* outside 2000::/3, the only global unicast space */
    return NULL;
}

const char *proxy_allowlist_special(const struct sockaddr *sa)
{
    if (!sa)
        return "unsupported-family";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        return special_v4(ntohl(sin->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        return special_v6(sin6->sin6_addr.s6_addr);
    }
    return "unsupported-family";
}

static bool same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return false;
}

const char *proxy_allowlist_check_addr(const proxy_allowlist *al, const char *host, uint16_t port,
                                       const struct sockaddr *sa)
{
    if (!sa)
        return "unsupported-family";
    const char *h;
    size_t n;
    if (al && host_key(host, &h, &n)) {
        for (size_t i = 0; i < al->n_pins; i++) {
            const proxy_pin *p = &al->pins[i];
            if (p->port == port && host_eq(p->host, h, n) &&
                same_ip((const struct sockaddr *)&p->addr, sa))
                return NULL;
        }
    }
    return proxy_allowlist_special(sa);
}

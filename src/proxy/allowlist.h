/* allowlist — what veil-proxy may connect to: HOST:PORT entries, the AWS vsock-proxy
 * YAML allowlist format, curl-style `--resolve HOST:PORT:IP` pins, and the
 * classification of special addresses (loopback, IMDS, private, ...) that a name must
 * never resolve to unless it was pinned there. Deny by default.
 * Pure: no sockets, no DNS, no logging. The proxy_allowlist owns its arrays;
 * proxy_allowlist_free releases them. Hosts are stored normalised (lowercase, one
 * trailing dot stripped, IP literals in canonical form), exactly as
 * http1_parse_connect() normalises a CONNECT target, so matching is a plain compare.
 */
#ifndef VEIL_PROXY_ALLOWLIST_H
#define VEIL_PROXY_ALLOWLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/http1.h"

#define PROXY_ALLOWLIST_MAX_ENTRIES 4096
#define PROXY_ALLOWLIST_MAX_PINS 4096
#define PROXY_ALLOWLIST_MAX_FILE (1024 * 1024) /* an allowlist file is a few lines */
#define PROXY_BEDROCK_PORT 443

typedef struct proxy_allow_entry {
    char host[HTTP1_HOST_BUF]; /* normalised name or canonical IP literal (no brackets) */
    uint16_t port;             /* exact: the original allowed any port (defect §10.21) */
} proxy_allow_entry;

/* One `--resolve` address. Several pins for one HOST:PORT are tried in order. */
typedef struct proxy_pin {
    char host[HTTP1_HOST_BUF]; /* normalised name */
    uint16_t port;
    struct sockaddr_storage addr; /* AF_INET or AF_INET6, sin_port = port */
    socklen_t addr_len;
} proxy_pin;

typedef struct proxy_allowlist {
    proxy_allow_entry *entries;
    size_t n_entries, cap_entries;
    proxy_pin *pins;
    size_t n_pins, cap_pins;
} proxy_allowlist;

void proxy_allowlist_init(proxy_allowlist *al);
void proxy_allowlist_free(proxy_allowlist *al);

/* Adds host:port (host: a DNS name, a dotted quad, or an IPv6 literal with or without
 * brackets). Duplicates are ignored. Returns 0, or -1 with err filled. */
int proxy_allowlist_add(proxy_allowlist *al, const char *host, unsigned long port, char *err,
                        size_t errlen);
/* Adds `HOST:PORT` or `[V6]:PORT` (the --allow syntax). */
int proxy_allowlist_add_spec(proxy_allowlist *al, const char *spec, char *err, size_t errlen);
/* Adds the default entry bedrock-runtime.<region>.amazonaws.com:443. */
int proxy_allowlist_add_default(proxy_allowlist *al, const char *region, char *err,
                                size_t errlen);

/* Loads the AWS vsock-proxy YAML subset:
 *
 *   allowlist:
 *   - {address: HOST, port: PORT}
 *   - address: HOST
 *     port: PORT
 *
 * Comments (#) and blank lines are allowed; values may be quoted. Anything else is an
 * error naming the line: "NAME:LINE: what was expected". An allowlist with no entries
 * is an error too. name is used only in messages. */
int proxy_allowlist_load_yaml(proxy_allowlist *al, const char *name, const char *text,
                              size_t len, char *err, size_t errlen);
/* Reads path (at most PROXY_ALLOWLIST_MAX_FILE bytes) and loads it as above. */
int proxy_allowlist_load_file(proxy_allowlist *al, const char *path, char *err, size_t errlen);

/* Adds curl's `HOST:PORT:ADDR[,ADDR...]`, ADDR a dotted quad or [IPv6]. The pinned
 * addresses replace DNS for that HOST:PORT and are allowed even when special. */
int proxy_allowlist_add_pin(proxy_allowlist *al, const char *spec, char *err, size_t errlen);

/* True if host:port is on the allowlist. host is compared case-insensitively with
 * one trailing dot ignored. */
bool proxy_allowlist_match(const proxy_allowlist *al, const char *host, uint16_t port);

/* Copies up to max pinned addresses of host:port into out (in --resolve order) and
 * returns how many there are in total (0: not pinned, resolve with DNS). */
size_t proxy_allowlist_pinned(const proxy_allowlist *al, const char *host, uint16_t port,
                              proxy_pin *out, size_t max);

/* Classifies an address by the IANA IPv4 and IPv6 special-purpose registries: NULL
 * for an ordinary global unicast address, else a short reason ("loopback",
 * "link-local", "private", "shared", "this-network", "unspecified", "multicast",
 * "broadcast", "reserved", "ietf-protocol", "documentation", "benchmarking",
 * "6to4-relay", "unique-local", "site-local", "local-nat64", "discard", "teredo").
 * IPv4-mapped, IPv4-compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) forms are
 * judged by the IPv4 address they carry; IPv6 outside 2000::/3 is never ordinary.
 * Families other than AF_INET/AF_INET6 are "unsupported-family". */
const char *proxy_allowlist_special(const struct sockaddr *sa);

/* The resolved-address check (h2o's connect ACL): NULL if the proxy may connect to sa
 * for the allowlisted name host:port, else the reason it may not. An address pinned
 * for host:port is always allowed; any other special address is refused. */
const char *proxy_allowlist_check_addr(const proxy_allowlist *al, const char *host,
                                       uint16_t port, const struct sockaddr *sa);

#endif

/* proxy — veil-proxy's server: an HTTP CONNECT proxy on one libevent loop.
 *
 * The enclave has no network of its own: it dials the parent (vsock:ANY:8443 in
 * production; unix: or tcp: locally), sends `CONNECT host:port HTTP/1.1`, and then
 * speaks TLS end to end through the tunnel. The proxy checks the allowlist (host:port,
 * then every resolved address), connects, answers `200 Connection Established` only once
 * the upstream TCP connect succeeded, and relays bytes both ways with backpressure,
 * half-close and an idle timeout. DNS goes through evdns: nothing blocks the loop.
 * The proxy only ever sees ciphertext and never logs payload bytes.
 * The caller owns the config and the allowlist, which must outlive proxy_run().
 * Three files: proxy.c (listener, stop, setup), proxy_conn.c (a client connection),
 * proxy_upstream.c (the CONNECT decision, DNS, connect, the tunnel).
 */
#ifndef VEIL_PROXY_PROXY_H
#define VEIL_PROXY_PROXY_H

#include <stddef.h>

#include "common/addr.h"
#include "proxy/allowlist.h"

#define PROXY_DEFAULT_MAX_CONNS 1024
#define PROXY_DEFAULT_CONNECT_TIMEOUT_S 10
#define PROXY_DEFAULT_IDLE_TIMEOUT_S 300
#define PROXY_DEFAULT_HEAD_TIMEOUT_S 10 /* the whole CONNECT head must arrive within this */
#define PROXY_LINGER_TIMEOUT_S 2     /* after an error status: flush it, then drain input */
#define PROXY_WATERMARK (256 * 1024) /* stop reading a side while the other's output is above */
#define PROXY_MAX_ADDRS 16           /* resolved addresses tried per request */

typedef struct proxy_config {
    veil_addr listen;
    const proxy_allowlist *allow;
    long max_conns;          /* open client connections; more are answered 503 */
    long head_timeout_s;     /* from accept until the whole CONNECT head is in */
    long connect_timeout_s;  /* DNS, and each TCP connect attempt */
    long idle_timeout_s;     /* a tunnel with no bytes either way for this long is closed */
    /* Nameservers ("IP" or "IP:PORT", "[V6]:PORT") used instead of /etc/resolv.conf;
     * none: /etc/resolv.conf. /etc/hosts is consulted either way. */
    const char *const *dns_servers;
    size_t n_dns_servers;
} proxy_config;

/* Runs the proxy until SIGTERM or SIGINT: binds cfg->listen, logs
 * `event=listening addr=ADDR`, serves, then stops accepting, closes every tunnel and
 * returns 0. Returns -1 with err filled if it cannot start. */
int proxy_run(const proxy_config *cfg, char *err, size_t errlen);

#endif

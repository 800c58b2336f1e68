/* cookies — what the CLI keeps of a load balancer's cookies for one run: the
 * name=value of each Set-Cookie the server sends, sent back on the calls that
 * follow, so a load balancer with sticky sessions (an ALB's AWSALB) keeps the run
 * on one instance, and so on one enclave. veild sets none and reads none: the
 * bearer token is the only credential.
 *
 * In memory only (never written to a file), bounded, wiped when cleared. A cookie
 * that is not plain name=value text is ignored, never sent back; attributes other
 * than Max-Age (a removal) are ignored: the jar lives for one run, for one server.
 */
#ifndef VEIL_CLI_COOKIES_H
#define VEIL_CLI_COOKIES_H

#include <stddef.h>

#define COOKIE_MAX 8            /* cookies kept; more are ignored */
#define COOKIE_NAME_MAX 64
#define COOKIE_VALUE_MAX 1024
#define COOKIE_HEADER_MAX 4096  /* the Cookie header, at most (veild's whole head is 16 KiB) */

typedef struct cookie_jar {
    struct {
        char name[COOKIE_NAME_MAX + 1];
        char value[COOKIE_VALUE_MAX + 1];
    } c[COOKIE_MAX];
    size_t n;
} cookie_jar;

/* One Set-Cookie header value (len bytes, not NUL-terminated): stores its name=value,
 * replacing a cookie of that name; Max-Age=0 (or less) removes it. 0 when stored or
 * removed, -1 when ignored (malformed, too long, or the jar or header would overflow). */
int cookie_jar_set(cookie_jar *j, const char *v, size_t len);

/* "a=b; c=d" into out (n bytes, NUL-terminated); its length, 0 when the jar is empty. */
size_t cookie_jar_header(const cookie_jar *j, char *out, size_t n);

/* Forgets and wipes every cookie. */
void cookie_jar_clear(cookie_jar *j);

#endif

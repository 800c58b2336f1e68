/* sigv4_int — what the three parts of SigV4 share (sigv4.c the signer and its
 * hashes, sigv4_canon.c the canonical request, sigv4_verify.c the verifier).
 * Only src/aws/sigv4*.c include it.
 */
#ifndef VEIL_AWS_SIGV4_INT_H
#define VEIL_AWS_SIGV4_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/sigv4.h"
#include "common/buf.h"

/* A view of part of a caller's string (not NUL-terminated). */
typedef struct sigv4_span {
    const char *p;
    size_t n;
} sigv4_span;

static inline int sigv4i_finish(vbuf *b)
{
    return vbuf_cstr(b) ? SIGV4_OK : SIGV4_ERR_NOMEM;
}

/* ---- sigv4.c: the process's OpenSSL handles; SIGV4_OK or SIGV4_ERR_CRYPTO ---- */

int sigv4i_sha256(const void *p, size_t n, uint8_t out[SIGV4_KEY_LEN]);
/* out is wiped on failure. */
int sigv4i_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t n,
                       uint8_t out[SIGV4_KEY_LEN]);
/* A region or service: non-empty, no '/', CR or LF. */
bool sigv4i_scope_part_ok(const char *s);

/* ---- sigv4_canon.c ---- */

/* Locale-independent, ASCII case-insensitive equality. */
bool sigv4i_ieq(const char *a, const char *b);
/* RFC 7230 tchar: what a header name (and a method) may contain. */
bool sigv4i_is_tchar(unsigned char c);
/* No CR or LF (a value that would split the header block). */
bool sigv4i_header_value_ok(const char *s);
/* Is name one of the ';'-separated entries of list[0..len)? (case-insensitive) */
bool sigv4i_in_list(const char *list, size_t len, const char *name);
/* How many headers of req are named name; *value (if not NULL) gets the first. */
size_t sigv4i_count_header(const sigv4_request *req, const char *name, const char **value);

/* A signed header named in `only` is absent from the request (the verifier's case). */
#define SIGV4I_ERR_SIGNED_HEADER_ABSENT (-100)

/* The canonical request. With only == NULL every header not in the skip list is
 * signed (the signer); otherwise exactly the headers named in only[0..only_len)
 * (the verifier, which must accept what the client chose to sign). signed_list
 * (may be NULL) gets the SignedHeaders value. */
int sigv4i_build_creq(const sigv4_config *cfg, const sigv4_request *req, const char *only,
                      size_t only_len, const char *payload_hex, vbuf *creq, vbuf *signed_list);

#endif

/* sigv4 — AWS Signature Version 4: canonicalise, sign, and verify HTTP requests.
 *
 * The canonicaliser and the string-to-sign builder are pure functions over caller
 * buffers. A sigv4_signer owns copies of its config and of the credentials it last
 * derived a signing key for; it caches that key per (date, region, service, secret)
 * and wipes every key, HMAC intermediate and secret copy it drops. The caller owns
 * every request it passes in; sigv4_signed owns its header values until
 * sigv4_signed_free(). A signer is not thread-safe. Nothing here ever logs.
 * Three files: sigv4_canon.c canonicalises, sigv4.c signs, sigv4_verify.c verifies.
 */
#ifndef VEIL_AWS_SIGV4_H
#define VEIL_AWS_SIGV4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/buf.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR "aws4_request"
#define SIGV4_KEY_LEN 32           /* HMAC-SHA256 output */
#define SIGV4_HEX_LEN 64           /* hex SHA-256 / signature, without the NUL */
#define SIGV4_AMZ_DATE_LEN 16      /* YYYYMMDDTHHMMSSZ */
#define SIGV4_MAX_SKEW_SECONDS 900 /* AWS accepts x-amz-date within 15 minutes */
#define SIGV4_MAX_ADDED_HEADERS 4

typedef enum sigv4_err {
    SIGV4_OK = 0,
    SIGV4_ERR_INVALID_ARG = -1,       /* NULL field, bad header name/value, bad path */
    SIGV4_ERR_NOMEM = -2,
    SIGV4_ERR_CRYPTO = -3,            /* an OpenSSL call failed */
    SIGV4_ERR_ALREADY_SIGNED = -4,    /* request carries a header the signer owns */
    SIGV4_ERR_NO_HOST = -5,           /* no Host header to sign */
    SIGV4_ERR_MISSING_AUTH = -6,      /* verify: no Authorization header */
    SIGV4_ERR_MALFORMED_AUTH = -7,    /* verify: Authorization/x-amz-date unparsable */
    SIGV4_ERR_UNKNOWN_KEY = -8,       /* verify: access key id not known */
    SIGV4_ERR_BAD_SCOPE = -9,         /* verify: date/region/service/terminator */
    SIGV4_ERR_STALE_DATE = -10,       /* verify: x-amz-date more than 15 min off */
    SIGV4_ERR_TOKEN_MISMATCH = -11,   /* verify: session token missing/wrong/unsigned */
    SIGV4_ERR_SIGNATURE_MISMATCH = -12,
} sigv4_err;

const char *sigv4_strerror(int err);

/* Explicit signing choices (style.md): nothing here is inferred from the service. */
typedef struct sigv4_config {
    const char *region;       /* "us-east-1" */
    const char *service;      /* signing name: "bedrock", not "bedrock-runtime" */
    bool double_uri_encode;   /* URI-encode the wire path again (all but S3) */
    bool normalize_path;      /* drop "." / ".." segments and empty segments */
    bool add_content_sha256;  /* add and sign x-amz-content-sha256 (S3-style) */
} sigv4_config;

/* Bedrock runtime: service "bedrock", both path flags on, no content-sha256 header. */
static inline sigv4_config sigv4_config_bedrock(const char *region)
{
    sigv4_config c = {region, "bedrock", true, true, false};
    return c;
}

typedef struct sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL or "" when the credentials are long-term */
} sigv4_credentials;

typedef struct sigv4_header {
    const char *name;  /* any case; no ':', spaces or control characters */
    const char *value; /* no CR or LF */
} sigv4_header;

typedef struct sigv4_request {
    const char *method;        /* "POST" */
    const char *path;          /* as sent on the wire (already percent-encoded), no '?' */
    const char *query;         /* after the '?', or NULL / "" */
    const sigv4_header *headers;
    size_t n_headers;
    const uint8_t *body;       /* may be NULL when body_len is 0 */
    size_t body_len;
} sigv4_request;

/* Headers to add to the request, in wire order: X-Amz-Date, X-Amz-Security-Token,
 * x-amz-content-sha256, Authorization (the ones that apply). Names are static. */
typedef struct sigv4_signed {
    struct {
        const char *name;
        char *value; /* owned */
    } headers[SIGV4_MAX_ADDED_HEADERS];
    size_t n_headers;
    char amz_date[SIGV4_AMZ_DATE_LEN + 1];
    char signature[SIGV4_HEX_LEN + 1];
} sigv4_signed;

void sigv4_signed_free(sigv4_signed *s);
/* The value of an added header by name (case-insensitive), or NULL. */
const char *sigv4_signed_get(const sigv4_signed *s, const char *name);

/* ---- pure building blocks (no secrets, no state) ---- */

/* Appends s[0..n) with every byte outside A-Za-z0-9-._~ as %XX (upper case).
 * '/' is encoded too: this is for one path segment or one query name/value. */
int sigv4_uri_encode_segment(vbuf *out, const char *s, size_t n);

/* Builds a wire path "/seg0/seg1/..." from raw segments, each encoded once:
 * {"model", "us.anthropic.claude-3-5-haiku-20241022-v1:0", "converse-stream"}
 * -> "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream".
 * out is reset first and NUL-terminated (vbuf_cstr). */
int sigv4_build_path(vbuf *out, const char *const *segments, size_t n);

/* Canonical URI of a wire path: optional normalisation, then (double_uri_encode)
 * every segment encoded again, so "%3A" becomes "%253A". Appends to out. */
int sigv4_canonical_uri(const sigv4_config *cfg, const char *path, vbuf *out);

/* Canonical query: each name and value percent-decoded, encoded once, sorted by
 * name then value, joined with '&'. '+' is a literal plus, not a space. */
int sigv4_canonical_query(const char *query, vbuf *out);

/* Hex SHA-256 of the body (the payload hash), NUL-terminated. */
int sigv4_payload_hash(const uint8_t *body, size_t len, char out[SIGV4_HEX_LEN + 1]);

/* The canonical request of req as given (x-amz-date etc. must already be among
 * the headers): every header except the hop-by-hop / proxy-rewritten ones,
 * content-length, user-agent and expect is signed. signed_headers (may be NULL)
 * receives "a;b;c". Both vbufs are appended to and NUL-terminated. */
int sigv4_canonical_request(const sigv4_config *cfg, const sigv4_request *req,
                            vbuf *creq, vbuf *signed_headers);

/* "<yyyymmdd>/<region>/<service>/aws4_request"; date8 is the first 8 chars used. */
int sigv4_scope(const char *date8, const char *region, const char *service, vbuf *out);

/* "AWS4-HMAC-SHA256\n<amz_date>\n<scope>\n<hex sha256(creq)>", appended to out. */
int sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                         size_t creq_len, vbuf *out);

/* HMAC chain "AWS4"+secret -> date8 -> region -> service -> "aws4_request". */
int sigv4_derive_signing_key(const char *secret_access_key, const char *date8,
                             const char *region, const char *service,
                             uint8_t key[SIGV4_KEY_LEN]);

/* Hex HMAC-SHA256(key, sts): the signature. */
int sigv4_sign_string(const uint8_t key[SIGV4_KEY_LEN], const char *sts, size_t len,
                      char out[SIGV4_HEX_LEN + 1]);

/* YYYYMMDDTHHMMSSZ of a UTC time. */
int sigv4_format_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1]);

/* ---- the signer ---- */

typedef struct sigv4_signer sigv4_signer;

sigv4_signer *sigv4_signer_new(const sigv4_config *cfg); /* copies cfg; NULL on error */
void sigv4_signer_free(sigv4_signer *s);                 /* wipes the cached key */

/* Signs req at time now with creds and fills out (which the caller frees with
 * sigv4_signed_free, also on error). Refuses (SIGV4_ERR_ALREADY_SIGNED) a request
 * that already has Authorization, X-Amz-Date, X-Amz-Security-Token or (when
 * configured) x-amz-content-sha256. The signing key is derived only when the
 * date, the access key id or the secret differ from the cached ones. */
int sigv4_sign_request(sigv4_signer *s, const sigv4_credentials *creds,
                       const sigv4_request *req, time_t now, sigv4_signed *out);

/* Test hook: how many times this signer has derived a signing key. */
unsigned long sigv4_signer_derivations(const sigv4_signer *s);

/* ---- verification (the Bedrock simulator's side) ---- */

/* Checks a received request: Authorization present and well-formed, access key
 * among known[0..n_known), scope = (x-amz-date's day, cfg region, cfg service),
 * host and x-amz-date signed, x-amz-date within SIGV4_MAX_SKEW_SECONDS of now,
 * the session token equal to the known one (and signed) when it has one, then the
 * signature recomputed over the signed headers and compared in constant time.
 * Returns SIGV4_OK or the first failing check's code. */
int sigv4_verify(const sigv4_config *cfg, const sigv4_credentials *known, size_t n_known,
                 const sigv4_request *req, time_t now);

#endif

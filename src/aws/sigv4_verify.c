/* sigv4_verify — checks a signed request the way AWS does: parses Authorization,
 * finds the key id among the known credentials, checks the scope, the date window,
 * the session token and the body hash, then recomputes the signature over exactly
 * the headers the client signed and compares in constant time. veil-bedrock-sim's
 * side; nothing here logs.
 */
#include <openssl/crypto.h>
#include <string.h>

#include "aws/sigv4.h"
#include "aws/sigv4_int.h"
#include "common/hex.h"
#include "common/secret.h"

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

static bool eq_n(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

typedef struct parsed_auth {
    sigv4_span akid, date, region, service, terminator;
    sigv4_span signed_headers;
    uint8_t signature[SIGV4_KEY_LEN];
} parsed_auth;

/* "a;b;c": non-empty lower-case tokens in strictly ascending order. */
static bool signed_list_ok(sigv4_span l)
{
    sigv4_span prev = {NULL, 0};
    if (!l.n)
        return false;
    for (size_t i = 0; i <= l.n;) {
        const char *semi = memchr(l.p + i, ';', l.n - i);
        size_t n = semi ? (size_t)(semi - (l.p + i)) : l.n - i;
        if (!n)
            return false;
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)l.p[i + k];
            if (!sigv4i_is_tchar(c) || (c >= 'A' && c <= 'Z'))
                return false;
        }
        if (prev.p) {
            size_t m = prev.n < n ? prev.n : n;
            int c = memcmp(prev.p, l.p + i, m);
            if (c > 0 || (c == 0 && prev.n >= n))
                return false;
        }
        prev = (sigv4_span){l.p + i, n};
        i += n + 1;
        if (!semi)
            break;
    }
    return true;
}

static bool parse_credential(sigv4_span v, parsed_auth *a)
{
    sigv4_span *parts[5] = {&a->akid, &a->date, &a->region, &a->service, &a->terminator};
    size_t i = 0;
    for (int k = 0; k < 5; k++) {
        const char *slash = k < 4 ? memchr(v.p + i, '/', v.n - i) : NULL;
        size_t n = k < 4 ? (slash ? (size_t)(slash - (v.p + i)) : 0) : v.n - i;
        if ((k < 4 && !slash) || !n || memchr(v.p + i, '/', n))
            return false;
        *parts[k] = (sigv4_span){v.p + i, n};
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
        sigv4_span key = {p, (size_t)(eq - p)};
        sigv4_span val = {eq + 1, m - key.n - 1};
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

static bool span_eq_str(sigv4_span s, const char *lit)
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

    size_t n_auth = sigv4i_count_header(req, "authorization", &auth_value);
    if (n_auth == 0)
        return SIGV4_ERR_MISSING_AUTH;
    if (n_auth > 1 || !auth_value || !parse_auth(auth_value, &a))
        return SIGV4_ERR_MALFORMED_AUTH;

    for (size_t i = 0; i < n_known && !cred; i++)
        if (known[i].access_key_id && span_eq_str(a.akid, known[i].access_key_id))
            cred = &known[i];
    if (!cred || !cred->secret_access_key)
        return SIGV4_ERR_UNKNOWN_KEY;

    if (sigv4i_count_header(req, "x-amz-date", &date_value) != 1 || !date_value ||
        !parse_amz_date(date_value, &t))
        return SIGV4_ERR_MALFORMED_AUTH;
    if (a.date.n != 8 || memcmp(a.date.p, date_value, 8) != 0 ||
        !span_eq_str(a.region, cfg->region) || !span_eq_str(a.service, cfg->service) ||
        !span_eq_str(a.terminator, SIGV4_TERMINATOR))
        return SIGV4_ERR_BAD_SCOPE;
    if (!sigv4i_in_list(a.signed_headers.p, a.signed_headers.n, "host") ||
        !sigv4i_in_list(a.signed_headers.p, a.signed_headers.n, "x-amz-date"))
        return SIGV4_ERR_MALFORMED_AUTH;
    double skew = difftime(t, now); /* no time_t overflow on a hostile clock */
    if (skew > SIGV4_MAX_SKEW_SECONDS || skew < -SIGV4_MAX_SKEW_SECONDS)
        return SIGV4_ERR_STALE_DATE;

    size_t n_token = sigv4i_count_header(req, "x-amz-security-token", &token_value);
    bool want_token = cred->session_token && *cred->session_token;
    if (want_token) {
        size_t want = strlen(cred->session_token);
        if (n_token != 1 || !token_value || strlen(token_value) != want ||
            CRYPTO_memcmp(token_value, cred->session_token, want) != 0 ||
            !sigv4i_in_list(a.signed_headers.p, a.signed_headers.n, "x-amz-security-token"))
            return SIGV4_ERR_TOKEN_MISMATCH;
    } else if (n_token) {
        return SIGV4_ERR_TOKEN_MISMATCH;
    }

    rc = sigv4_payload_hash(req->body, req->body_len, payload);
    if (rc != SIGV4_OK)
        return rc;
    /* a client that sends x-amz-content-sha256 claims the body hash: hold it to it */
    if (sigv4i_count_header(req, "x-amz-content-sha256", &sha_value) &&
        (!sha_value || strcmp(sha_value, payload) != 0))
        return SIGV4_ERR_SIGNATURE_MISMATCH;

    rc = sigv4i_build_creq(cfg, req, a.signed_headers.p, a.signed_headers.n, payload, &creq, NULL);
    if (rc == SIGV4I_ERR_SIGNED_HEADER_ABSENT) {
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
        rc = sigv4i_hmac_sha256(key, sizeof key, sts.data, sts.len, mac);
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
    if (!cfg || !sigv4i_scope_part_ok(cfg->region) || !sigv4i_scope_part_ok(cfg->service) ||
        (!known && n_known) || !req || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!req->headers[i].name || !req->headers[i].value)
            return SIGV4_ERR_INVALID_ARG;
    return verify_checked(cfg, known, n_known, req, now);
}

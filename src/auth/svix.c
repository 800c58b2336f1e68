/* svix — Clerk webhook signatures. See svix.h. */
#include "auth/svix.h"

#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/base64.h"

#define SVIX_MAX_KEY 256    /* decoded key bytes; Svix keys are 24 or 32 */
#define SVIX_MAX_ID 256     /* svix-id: msg_<27 chars> in practice */
#define SVIX_MAC_B64_LEN 44 /* base64 of 32 bytes, padded */

const char *svix_strerror(svix_err e)
{
    switch (e) {
    case SVIX_OK: return "ok";
    case SVIX_ERR_MISSING_HEADERS: return "svix-id, svix-timestamp or svix-signature missing";
    case SVIX_ERR_BAD_SECRET: return "webhook secret is not whsec_<base64>";
    case SVIX_ERR_BAD_TIMESTAMP: return "svix-timestamp is not a number of seconds";
    case SVIX_ERR_TIMESTAMP_TOO_OLD: return "svix-timestamp too old";
    case SVIX_ERR_TIMESTAMP_TOO_NEW: return "svix-timestamp too new";
    case SVIX_ERR_NO_SIGNATURE: return "no v1 signature";
    case SVIX_ERR_SIGNATURE: return "no signature matches";
    case SVIX_ERR_NOMEM: return "out of memory";
    }
    return "unknown error";
}

const char *svix_detail(svix_err e)
{
    switch (e) {
    case SVIX_OK: return "OK";
    case SVIX_ERR_MISSING_HEADERS: return "Missing svix headers for webhook verification";
    case SVIX_ERR_BAD_SECRET:
    case SVIX_ERR_NOMEM: return "Internal server error";
    default: return "Invalid webhook signature";
    }
}

int svix_http_status(svix_err e)
{
    switch (e) {
    case SVIX_OK: return 200;
    case SVIX_ERR_MISSING_HEADERS: return 400;
    case SVIX_ERR_BAD_SECRET:
    case SVIX_ERR_NOMEM: return 500;
    default: return 401;
    }
}

svix_err svix_key_parse(const char *whsec, secret *key)
{
    key->data = NULL;
    key->len = 0;
    if (!whsec)
        return SVIX_ERR_BAD_SECRET;
    size_t pl = strlen(SVIX_SECRET_PREFIX);
    if (strncmp(whsec, SVIX_SECRET_PREFIX, pl) == 0)
        whsec += pl;
    uint8_t raw[SVIX_MAX_KEY];
    long n = base64_decode(B64_STD, whsec, strlen(whsec), raw, sizeof raw);
    svix_err rc = SVIX_ERR_BAD_SECRET;
    if (n > 0) {
        rc = SVIX_ERR_NOMEM;
        if (secret_alloc(key, (size_t)n) == 0) {
            memcpy(key->data, raw, (size_t)n);
            rc = SVIX_OK;
        }
    }
    secure_wipe(raw, sizeof raw);
    return rc;
}

/* base64(HMAC-SHA256(key, id "." ts "." body)), SVIX_MAC_B64_LEN chars + NUL. */
static int mac_b64(const secret *key, const char *id, const char *ts, const void *body,
                   size_t body_len, char out[SVIX_MAC_B64_LEN + 1])
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned mac_len = 0;
    int rc = -1;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    size_t outl = 0;
    if (ctx && EVP_MAC_init(ctx, key->data, key->len, params) == 1 &&
        EVP_MAC_update(ctx, (const uint8_t *)id, strlen(id)) == 1 &&
        EVP_MAC_update(ctx, (const uint8_t *)".", 1) == 1 &&
        EVP_MAC_update(ctx, (const uint8_t *)ts, strlen(ts)) == 1 &&
        EVP_MAC_update(ctx, (const uint8_t *)".", 1) == 1 &&
        (body_len == 0 || EVP_MAC_update(ctx, body, body_len) == 1) &&
        EVP_MAC_final(ctx, mac, &outl, sizeof mac) == 1 && outl == 32) {
        mac_len = (unsigned)outl;
        base64_encode(B64_STD, mac, mac_len, out);
        rc = 0;
    }
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    OPENSSL_cleanse(mac, sizeof mac);
    ERR_clear_error();
    return rc;
}

/* Strict decimal seconds: digits only, at most 18 of them. */
static bool parse_ts(const char *s, int64_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

svix_err svix_verify(const secret *key, const char *msg_id, const char *timestamp,
                     const char *signature_header, const void *body, size_t body_len, time_t now)
{
    if (!msg_id || !msg_id[0] || !timestamp || !timestamp[0] || !signature_header ||
        !signature_header[0])
        return SVIX_ERR_MISSING_HEADERS;
    if (!key || !key->data || key->len == 0)
        return SVIX_ERR_BAD_SECRET;
    int64_t ts;
    if (!parse_ts(timestamp, &ts))
        return SVIX_ERR_BAD_TIMESTAMP;
    if (ts < (int64_t)now - SVIX_TOLERANCE_S)
        return SVIX_ERR_TIMESTAMP_TOO_OLD;
    if (ts > (int64_t)now + SVIX_TOLERANCE_S)
        return SVIX_ERR_TIMESTAMP_TOO_NEW;
    size_t hlen = strlen(signature_header);
    if (hlen > SVIX_MAX_SIGNATURE_HEADER || strlen(msg_id) > SVIX_MAX_ID)
        return SVIX_ERR_NO_SIGNATURE;
    char expected[SVIX_MAC_B64_LEN + 1];
    if (mac_b64(key, msg_id, timestamp, body, body_len, expected) < 0)
        return SVIX_ERR_NOMEM;
    bool any_v1 = false, match = false;
    const char *p = signature_header, *end = p + hlen;
    while (p < end) {
        const char *sp = memchr(p, ' ', (size_t)(end - p));
        size_t n = sp ? (size_t)(sp - p) : (size_t)(end - p);
        if (n > 3 && memcmp(p, "v1,", 3) == 0) {
            any_v1 = true;
            /* every v1 entry is compared, match or not: the time spent does not say which */
            if (n - 3 == SVIX_MAC_B64_LEN && CRYPTO_memcmp(p + 3, expected, SVIX_MAC_B64_LEN) == 0)
                match = true;
        }
        p += n + 1;
    }
    OPENSSL_cleanse(expected, sizeof expected);
    if (match)
        return SVIX_OK;
    return any_v1 ? SVIX_ERR_SIGNATURE : SVIX_ERR_NO_SIGNATURE;
}

int svix_sign(const secret *key, const char *msg_id, const char *timestamp, const void *body,
              size_t body_len, char out[SVIX_SIGNATURE_LEN + 1])
{
    if (!key || !key->data || !key->len || !msg_id || !timestamp)
        return -1;
    memcpy(out, "v1,", 3);
    return mac_b64(key, msg_id, timestamp, body, body_len, out + 3);
}

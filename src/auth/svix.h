/* svix — Clerk webhook verification (Svix signatures, spec §4.7).
 *
 * Signed content is "{svix-id}.{svix-timestamp}.{raw body}", HMAC-SHA256 with the
 * key decoded from the `whsec_<base64>` secret. The svix-signature header holds
 * space-separated "v1,<base64>" entries; any one match passes (constant time), other
 * versions are ignored. The timestamp must be within SVIX_TOLERANCE_S of now.
 * There is no unverified mode (defect §10.19): without a secret the caller must
 * refuse webhooks. The key lives in a secret (wiped on free); nothing here logs.
 */
#ifndef VEIL_SERVER_SVIX_H
#define VEIL_SERVER_SVIX_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/secret.h"

#define SVIX_TOLERANCE_S 300                 /* ±5 minutes */
#define SVIX_MAX_SIGNATURE_HEADER 8192       /* longer headers are refused */
#define SVIX_SIGNATURE_LEN 47                /* "v1," + base64 of 32 bytes */
#define SVIX_SECRET_PREFIX "whsec_"

typedef enum svix_err {
    SVIX_OK = 0,
    SVIX_ERR_MISSING_HEADERS,   /* a header absent or empty -> 400 */
    SVIX_ERR_BAD_SECRET,        /* the configured secret is not whsec_<base64> (config error) */
    SVIX_ERR_BAD_TIMESTAMP,     /* svix-timestamp is not a decimal number of seconds */
    SVIX_ERR_TIMESTAMP_TOO_OLD, /* more than 5 minutes before now */
    SVIX_ERR_TIMESTAMP_TOO_NEW, /* more than 5 minutes after now */
    SVIX_ERR_NO_SIGNATURE,      /* no v1 entry in svix-signature (or it is too long) */
    SVIX_ERR_SIGNATURE,         /* no v1 entry matches */
    SVIX_ERR_NOMEM,
} svix_err;

const char *svix_strerror(svix_err e); /* precise, for logs */
/* The original's detail text: "Missing svix headers for webhook verification" (400)
 * or "Invalid webhook signature" (401; 500 "Internal server error" for the config
 * and memory errors). */
const char *svix_detail(svix_err e);
int svix_http_status(svix_err e);

/* Decodes the signing key from "whsec_<base64>" (the prefix is optional, as in the
 * Svix libraries; the base64 is strict: standard alphabet, padded). On SVIX_OK key
 * is the caller's (secret_free). */
svix_err svix_key_parse(const char *whsec, secret *key);

/* Verifies one delivery. Header values may be NULL (missing). now is the wall
 * clock in seconds (passed in for tests). */
svix_err svix_verify(const secret *key, const char *msg_id, const char *timestamp,
                     const char *signature_header, const void *body, size_t body_len, time_t now);

/* Writes "v1,<base64>" (SVIX_SIGNATURE_LEN chars + NUL) for a delivery: the
 * sending side, for tests and local tools. 0 or -1. */
int svix_sign(const secret *key, const char *msg_id, const char *timestamp, const void *body,
              size_t body_len, char out[SVIX_SIGNATURE_LEN + 1]);

#endif

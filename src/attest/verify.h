/* verify — checks an AWS Nitro attestation document for a client.
 *
 * attest_verify() decodes the document (document.h), checks that cabundle[0] is the
 * trusted root (the AWS Nitro root G1 embedded here, or one the caller gives, e.g. the
 * simulator's), verifies the X.509 path leaf <- cabundle[n-1] <- ... <- root at the check
 * time with OpenSSL, the COSE signature with the leaf's P-384 key, the timestamp's age,
 * then the caller's policy: nonce, public key, user data, PCRs. Each failure has its
 * own attest_err and a reason in the caller's err buffer.
 * Memory: the caller owns the document bytes, the options (and what they point to) and
 * the attest_doc it receives; nothing here keeps a pointer after returning, except the
 * JSON object (the caller's, json_decref) and the root DER (the caller's, free).
 * Nothing here logs. Reasons name checks, fields, PCR indices and certificate subjects,
 * never the values of nonce, public_key or user_data.
 */
#ifndef VEIL_ATTEST_VERIFY_H
#define VEIL_ATTEST_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "attest/document.h"

/* SHA-256 of the embedded root's DER; checked before each use. */
#define ATTEST_AWS_ROOT_SHA256 "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

/* ---- veil's binding: what the enclave asks its NSM to sign ------------------------ */

#define ATTEST_USER_DATA "veil-transport-v1" /* user_data: the statement, versioned */
#define ATTEST_PUBLIC_KEY_LEN 32             /* public_key: the enclave's X25519 transport key */
#define ATTEST_NONCE_MIN 1                   /* nonce: the caller's, 1..1024 bytes */
#define ATTEST_NONCE_MAX ATTEST_MAX_FIELD_LEN
/* Every module_id the simulated NSM (nsm.h) signs ends with this, so no one mistakes
 * its documents for a real enclave's: "sim-<hostname>-veil-simulated-nsm". */
#define ATTEST_SIM_MODULE_ID_SUFFIX "-veil-simulated-nsm"

/* ---- policy -------------------------------------------------------------------- */

#define ATTEST_DEFAULT_MAX_AGE_S 300   /* a document older than this (at the check time) is stale */
#define ATTEST_MAX_AGE_LIMIT_S (366L * 24 * 3600) /* the largest max_age_s accepted */
#define ATTEST_MAX_AGE_UNLIMITED (-1L) /* max_age_s: do not check the age (archived documents) */
#define ATTEST_MAX_FUTURE_S 60         /* clock skew allowed for a timestamp after the check time */

typedef enum attest_time_mode {
    ATTEST_AT_NOW = 0, /* the system clock */
    ATTEST_AT_DOC,     /* the document's own timestamp (an archived document; age is then 0) */
    ATTEST_AT_TIME,    /* at_unix */
} attest_time_mode;

/* A zeroed attest_options is the default policy: the pinned AWS root, checked now,
 * ATTEST_DEFAULT_MAX_AGE_S, and no expectation on nonce, key, user data or PCRs. An
 * expectation left NULL (or n_pcrs 0) is not checked; one that is set must be in the
 * document with exactly these bytes. */
typedef struct attest_options {
    const uint8_t *root_der;   /* NULL: the pinned AWS Nitro root G1 */
    size_t root_der_len;
    attest_time_mode at;
    int64_t at_unix;           /* ATTEST_AT_TIME: seconds since the epoch */
    long max_age_s;            /* 0: ATTEST_DEFAULT_MAX_AGE_S; ATTEST_MAX_AGE_UNLIMITED: no check */
    const uint8_t *nonce;
    size_t nonce_len;
    const uint8_t *public_key;
    size_t public_key_len;
    const uint8_t *user_data;
    size_t user_data_len;
    const attest_pcr *pcrs;    /* e.g. PCR0, PCR1, PCR2 from attest_measurements_* */
    size_t n_pcrs;
} attest_options;

/* Verifies doc (len bytes) under opt (NULL: the default policy). ATTEST_OK fills out
 * (which may be NULL), including the chain's subjects and the check time. Any other
 * result zeroes out and puts the reason in err (errlen bytes, may be NULL/0). */
attest_err attest_verify(const uint8_t *doc, size_t len, const attest_options *opt, attest_doc *out,
                         char *err, size_t errlen);

/* ---- roots ----------------------------------------------------------------------- */

/* The embedded AWS Nitro root G1 (DER, static storage). 0, or -1 when its SHA-256 is
 * not ATTEST_AWS_ROOT_SHA256 (then nothing may be trusted). */
int attest_pinned_root(const uint8_t **der, size_t *len);

/* Reads one certificate from a PEM or DER file (at most 64 KiB; a PEM file must hold
 * exactly one certificate) and returns its DER in a malloc'd buffer the caller frees.
 * ATTEST_ERR_TRUST_ROOT (with err) when the file is unreadable or not one certificate. */
attest_err attest_root_load(const char *path, uint8_t **der, size_t *der_len, char *err,
                            size_t errlen);

/* ---- output helpers ----------------------------------------------------------------- */

/* The decoded document as a JSON object (new reference, the caller's): module_id,
 * simulated (module_id names the veil simulator), timestamp (ms), time (ISO 8601 UTC),
 * digest, pcrs {"0": hex, ...}, public_key / user_data / nonce (hex or null),
 * user_data_text (when it is printable ASCII), and after attest_verify: chain (subjects,
 * root first), leaf_not_before / leaf_not_after / checked_at (ISO 8601). NULL on ENOMEM. */
json_t *attest_doc_to_json(const attest_doc *d);

/* Parses "N=HEX" (a --pcr flag): N in 0..31, HEX 64, 96 or 128 hex digits.
 * 0, or -1 with err. */
int attest_pcr_parse(const char *s, attest_pcr *out, char *err, size_t errlen);

#endif

/* document — the AWS Nitro attestation document format, its one decoder and encoder.
 *
 * A document is a COSE_Sign1 (RFC 9052) array [protected, unprotected, payload,
 * signature], optionally under tag 18, signed ES384; its payload is a CBOR map
 * (module_id, digest, timestamp, pcrs, certificate, cabundle, public_key, user_data,
 * nonce). This header names the fields, their limits and every way a document can
 * fail (attest_err, shared with verify.h). Decoding is structural only: no
 * certificate is parsed and no signature checked (that is verify.h). The decoder
 * reads caller-owned bytes and fills a fixed-size attest_doc the caller owns; the
 * encoder (the simulator's and the tests') writes into a caller-owned vbuf.
 * Nothing here logs; error texts name fields and indices, never their contents.
 */
#ifndef VEIL_ATTEST_DOCUMENT_H
#define VEIL_ATTEST_DOCUMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "common/buf.h"

/* ---- the format's facts ------------------------------------------------------- */

#define ATTEST_MAX_DOC_LEN (16 * 1024) /* checked before any parsing (NSM responses are <= 12 KiB) */
#define ATTEST_COSE_TAG 18             /* COSE_Sign1; optional, real NSMs send it untagged */
#define ATTEST_COSE_ALG_LABEL 1        /* protected header key "alg" */
#define ATTEST_COSE_ALG_ES384 (-35)    /* ECDSA P-384 with SHA-384 */
#define ATTEST_ES384_SIG_LEN 96        /* r || s, 48 bytes each */
#define ATTEST_DIGEST "SHA384"         /* the only digest a document may name */

#define ATTEST_FIELD_MODULE_ID "module_id"
#define ATTEST_FIELD_DIGEST "digest"
#define ATTEST_FIELD_TIMESTAMP "timestamp"
#define ATTEST_FIELD_PCRS "pcrs"
#define ATTEST_FIELD_CERTIFICATE "certificate"
#define ATTEST_FIELD_CABUNDLE "cabundle"
#define ATTEST_FIELD_PUBLIC_KEY "public_key"
#define ATTEST_FIELD_USER_DATA "user_data"
#define ATTEST_FIELD_NONCE "nonce"

/* Limits. AWS's prose says 512 bytes for user_data and nonce; real NSMs carry 1024. */
#define ATTEST_MAX_FIELD_LEN 1024    /* public_key 1..1024, user_data and nonce 0..1024 */
#define ATTEST_MAX_CERT_LEN 1024     /* certificate and each cabundle entry: 1..1024 bytes */
#define ATTEST_MAX_CABUNDLE 8        /* real documents carry 4 (root + 3 intermediates) */
#define ATTEST_MAX_PCRS 32           /* PCR indices 0..31; a document has 1..32 of them */
#define ATTEST_MAX_PCR_LEN 64        /* a PCR is 32, 48 or 64 bytes */
#define ATTEST_MODULE_ID_MAX 128     /* printable ASCII; real ids are ~40 characters */
#define ATTEST_SUBJECT_MAX 256       /* a certificate subject, RFC 2253, truncated */

/* ---- errors ------------------------------------------------------------------------ */

/* Every way a document can fail, decoding (document.h) or verifying (verify.h). Each
 * has a fixed description (attest_strerror) and a short check name (attest_check_name)
 * that the CLI prints as `veil attest verify: CHECK: reason`. */
typedef enum attest_err {
    ATTEST_OK = 0,
    ATTEST_ERR_ARG,          /* usage: a bad argument or option (not the document's fault) */
    ATTEST_ERR_NOMEM,        /* memory */
    ATTEST_ERR_TOO_LARGE,    /* size: empty, or over ATTEST_MAX_DOC_LEN */
    ATTEST_ERR_COSE,         /* cose: not a COSE_Sign1 (CBOR malformed, indefinite, trailing
                                bytes, wrong shape, another tag, an unprotected header) */
    ATTEST_ERR_ALG,          /* alg: the protected header is not exactly {1: -35} (ES384) */
    ATTEST_ERR_PAYLOAD,      /* payload: not one well-formed CBOR map (malformed, trailing bytes,
                                a non-text, unknown or duplicate key) */
    ATTEST_ERR_FIELD,        /* field: a field missing, of the wrong type, or out of its limits */
    ATTEST_ERR_TRUST_ROOT,   /* trust-root: the trusted root given (or embedded) is unusable */
    ATTEST_ERR_ROOT,         /* root: cabundle[0] is not the trusted root */
    ATTEST_ERR_CERT,         /* certificate: a certificate is not one DER X.509 certificate */
    ATTEST_ERR_CHAIN,        /* chain: the path leaf <- cabundle[n-1] <- ... <- root does not
                                verify (signature, issuer, CA flag, path length, key usage) */
    ATTEST_ERR_EXPIRED,      /* validity: a certificate is expired or not yet valid at the check time */
    ATTEST_ERR_LEAF_KEY,     /* leaf-key: the leaf's key is not an EC P-384 key */
    ATTEST_ERR_SIGNATURE,    /* signature: the COSE signature does not verify with the leaf's key */
    ATTEST_ERR_STALE,        /* freshness: the timestamp is older than max_age, or in the future */
    ATTEST_ERR_NONCE,        /* nonce: absent, or not the expected nonce */
    ATTEST_ERR_PUBLIC_KEY,   /* public-key: absent, or not the expected key */
    ATTEST_ERR_USER_DATA,    /* user-data: absent, or not the expected statement */
    ATTEST_ERR_PCR,          /* pcr: an expected PCR is absent or differs */
} attest_err;

const char *attest_strerror(attest_err e);   /* fixed English text, never NULL */
const char *attest_check_name(attest_err e); /* "cose", "chain", "pcr", ...; "ok" for ATTEST_OK */

/* ---- the decoded document ------------------------------------------------------ */

typedef struct attest_pcr {
    unsigned index;                  /* 0..31 */
    size_t len;                      /* 32, 48 or 64 */
    uint8_t value[ATTEST_MAX_PCR_LEN];
} attest_pcr;

/* Fixed size (about 8 KiB), no heap: copy it, keep it, drop it. Byte fields are copies. */
typedef struct attest_doc {
    char module_id[ATTEST_MODULE_ID_MAX + 1];
    char digest[sizeof ATTEST_DIGEST];
    uint64_t timestamp_ms;           /* milliseconds since the epoch, > 0 */
    uint32_t pcr_present;            /* bit i set: pcr[i] is in the document */
    size_t pcr_len[ATTEST_MAX_PCRS];
    uint8_t pcr[ATTEST_MAX_PCRS][ATTEST_MAX_PCR_LEN];
    bool has_public_key, has_user_data, has_nonce; /* false: absent or null */
    size_t public_key_len, user_data_len, nonce_len;
    uint8_t public_key[ATTEST_MAX_FIELD_LEN];
    uint8_t user_data[ATTEST_MAX_FIELD_LEN];
    uint8_t nonce[ATTEST_MAX_FIELD_LEN];
    size_t n_cabundle;               /* 1..ATTEST_MAX_CABUNDLE */
    /* Filled by attest_verify only (0 / empty after attest_doc_parse): the verified
     * chain's subjects, root first, leaf last (n_cabundle + 1 of them), the leaf's
     * validity and the time the document was checked at (unix seconds). */
    size_t n_chain;
    char chain_subject[ATTEST_MAX_CABUNDLE + 1][ATTEST_SUBJECT_MAX];
    int64_t leaf_not_before, leaf_not_after, checked_at;
} attest_doc;

/* Where the signed parts and the certificates lie: spans into the caller's document
 * bytes, valid while those bytes are. */
typedef struct attest_span {
    const uint8_t *p;
    size_t n;
} attest_span;

typedef struct attest_parts {
    attest_span protected_hdr; /* the protected bstr's contents */
    attest_span payload;       /* the payload bstr's contents */
    attest_span signature;
    attest_span certificate;
    attest_span cabundle[ATTEST_MAX_CABUNDLE];
    size_t n_cabundle;
} attest_parts;

/* Decodes a document, structure and fields only: COSE_Sign1 shape, alg = ES384, an
 * empty unprotected map, a 96-byte signature, the payload's fields within their
 * limits, no trailing bytes, definite lengths and shortest heads throughout. A PCR map
 * is checked for well-formed entries only (what the PCRs must be is policy).
 * out and parts may be NULL. On failure out is zeroed and err says which check, in
 * words that name fields, never their values. This alone proves nothing about who
 * made the document: see attest_verify. */
attest_err attest_doc_parse(const uint8_t *doc, size_t len, attest_doc *out, attest_parts *parts,
                            char *err, size_t errlen);

/* ---- the encoder (the simulator's, and the tests') ----------------------------- */

/* What goes into a payload. It writes what it is given, in a real NSM's field order,
 * and checks no limit: tests use it to build documents a verifier must refuse.
 * A NULL public_key, user_data or nonce is written as null. */
typedef struct attest_doc_fields {
    const char *module_id;
    const char *digest;              /* NULL: ATTEST_DIGEST */
    uint64_t timestamp_ms;
    const attest_pcr *pcrs;
    size_t n_pcrs;
    const uint8_t *certificate;
    size_t certificate_len;
    const uint8_t *const *cabundle;  /* root first */
    const size_t *cabundle_len;
    size_t n_cabundle;
    const uint8_t *public_key;
    size_t public_key_len;
    const uint8_t *user_data;
    size_t user_data_len;
    const uint8_t *nonce;
    size_t nonce_len;
} attest_doc_fields;

/* The payload map into out (appended). 0, or -1 when memory runs out. */
int attest_doc_encode_payload(const attest_doc_fields *f, vbuf *out);

/* An untagged COSE_Sign1 over payload, protected {1: -35}, unprotected {}, signed with
 * key (an EC P-384 private key) as a real NSM signs. Appends to out. 0 or -1. */
int attest_cose_sign(const uint8_t *payload, size_t payload_len, EVP_PKEY *key, vbuf *out);

/* Both: the document a real NSM would return for f, signed with key. 0 or -1. */
int attest_doc_sign(const attest_doc_fields *f, EVP_PKEY *key, vbuf *out);

/* True when sig (r || s, 96 bytes) is key's ES384 signature over the Sig_structure
 * ["Signature1", protected, h'', payload]. key must be an EC P-384 public key. */
bool attest_cose_verify(const attest_span *protected_hdr, const attest_span *payload,
                        const attest_span *sig, EVP_PKEY *key);

#endif

/* document — decoding and encoding attestation documents. See document.h.
 * Stays whole (~610 lines): the decoder, the encoder (the simulator's) and the
 * COSE_Sign1 signature are the sides of one document format and share its field
 * table, its limits and its error names. */
#include "attest/document.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>

#include "attest/cbor.h"
#include "attest/internal.h"

#define SIG_CONTEXT "Signature1" /* the COSE_Sign1 Sig_structure's context string */
#define ES384_COORD_LEN 48
#define MAX_TIMESTAMP_MS 253402300799999ull /* 9999-12-31T23:59:59.999Z */

/* the protected header a real NSM sends, and the only one we accept: {1: -35} */
static const uint8_t PROTECTED_ES384[] = {0xa1, 0x01, 0x38, 0x22};

const char *attest_strerror(attest_err e)
{
    switch (e) {
    case ATTEST_OK: return "ok";
    case ATTEST_ERR_ARG: return "invalid argument or option";
    case ATTEST_ERR_NOMEM: return "out of memory";
    case ATTEST_ERR_TOO_LARGE: return "the document is empty or too large";
    case ATTEST_ERR_COSE: return "not a COSE_Sign1 structure";
    case ATTEST_ERR_ALG: return "the protected header does not say ES384";
    case ATTEST_ERR_PAYLOAD: return "the payload is not a well-formed attestation map";
    case ATTEST_ERR_FIELD: return "a document field is missing, of the wrong type or out of range";
    case ATTEST_ERR_TRUST_ROOT: return "the trusted root certificate is unusable";
    case ATTEST_ERR_ROOT: return "the document's root (cabundle[0]) is not the trusted root";
    case ATTEST_ERR_CERT: return "a certificate in the document does not parse";
    case ATTEST_ERR_CHAIN: return "the certificate chain does not verify";
    case ATTEST_ERR_EXPIRED: return "a certificate is not valid at the check time";
    case ATTEST_ERR_LEAF_KEY: return "the signing certificate's key is not EC P-384";
    case ATTEST_ERR_SIGNATURE: return "the document's signature does not verify";
    case ATTEST_ERR_STALE: return "the document's timestamp is outside the allowed age";
    case ATTEST_ERR_NONCE: return "the nonce is not the expected one";
    case ATTEST_ERR_PUBLIC_KEY: return "the public key is not the expected one";
    case ATTEST_ERR_USER_DATA: return "the user data is not the expected statement";
    case ATTEST_ERR_PCR: return "a PCR is not the expected measurement";
    }
    return "unknown error";
}

const char *attest_check_name(attest_err e)
{
    switch (e) {
    case ATTEST_OK: return "ok";
    case ATTEST_ERR_ARG: return "usage";
    case ATTEST_ERR_NOMEM: return "memory";
    case ATTEST_ERR_TOO_LARGE: return "size";
    case ATTEST_ERR_COSE: return "cose";
    case ATTEST_ERR_ALG: return "alg";
    case ATTEST_ERR_PAYLOAD: return "payload";
    case ATTEST_ERR_FIELD: return "field";
    case ATTEST_ERR_TRUST_ROOT: return "trust-root";
    case ATTEST_ERR_ROOT: return "root";
    case ATTEST_ERR_CERT: return "certificate";
    case ATTEST_ERR_CHAIN: return "chain";
    case ATTEST_ERR_EXPIRED: return "validity";
    case ATTEST_ERR_LEAF_KEY: return "leaf-key";
    case ATTEST_ERR_SIGNATURE: return "signature";
    case ATTEST_ERR_STALE: return "freshness";
    case ATTEST_ERR_NONCE: return "nonce";
    case ATTEST_ERR_PUBLIC_KEY: return "public-key";
    case ATTEST_ERR_USER_DATA: return "user-data";
    case ATTEST_ERR_PCR: return "pcr";
    }
    return "unknown";
}

attest_err attest_fail(attest_err e, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return e;
}

/* ---- the COSE_Sign1 envelope ------------------------------------------------------- */

enum { READ_OK = 0, READ_MALFORMED = -1, READ_WRONG_TYPE = -2 };

static int read_bstr(cursor *c, attest_span *out)
{
    acbor_head h;
    if (!acbor_read_head(c, &h))
        return READ_MALFORMED;
    if (h.major != ACBOR_BYTES)
        return READ_WRONG_TYPE;
    return acbor_read_span(c, &h, &out->p, &out->n) ? READ_OK : READ_MALFORMED;
}

static attest_err envelope_bstr(cursor *c, attest_span *out, const char *what, char *err,
                                size_t errlen)
{
    int r = read_bstr(c, out);
    if (r == READ_MALFORMED)
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "%s: truncated or malformed CBOR", what);
    if (r == READ_WRONG_TYPE)
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "%s is not a byte string", what);
    return ATTEST_OK;
}

static attest_err parse_envelope(const uint8_t *doc, size_t len, attest_parts *pp, char *err,
                                 size_t errlen)
{
    cursor c = cursor_make(doc, len);
    acbor_head h;
    if (!acbor_read_head(&c, &h))
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "not well-formed CBOR");
    if (h.major == ACBOR_TAG) {
        if (h.arg != ATTEST_COSE_TAG)
            return attest_fail(ATTEST_ERR_COSE, err, errlen, "tag %llu is not COSE_Sign1 (18)",
                               (unsigned long long)h.arg);
        if (!acbor_read_head(&c, &h))
            return attest_fail(ATTEST_ERR_COSE, err, errlen, "truncated after the tag");
    }
    if (h.major != ACBOR_ARRAY || h.arg != 4)
        return attest_fail(ATTEST_ERR_COSE, err, errlen,
                           "not a 4-element array [protected, unprotected, payload, signature]");
    attest_err e = envelope_bstr(&c, &pp->protected_hdr, "the protected header", err, errlen);
    if (e != ATTEST_OK)
        return e;
    if (!acbor_read_head(&c, &h))
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "the unprotected header: malformed CBOR");
    if (h.major != ACBOR_MAP)
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "the unprotected header is not a map");
    /* unsigned, so nothing in it could be trusted; a real NSM sends {} */
    if (h.arg != 0)
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "the unprotected header is not empty");
    if ((e = envelope_bstr(&c, &pp->payload, "the payload", err, errlen)) != ATTEST_OK)
        return e;
    if ((e = envelope_bstr(&c, &pp->signature, "the signature", err, errlen)) != ATTEST_OK)
        return e;
    if (c.left)
        return attest_fail(ATTEST_ERR_COSE, err, errlen, "%zu bytes after the COSE_Sign1 array",
                           c.left);
    return ATTEST_OK;
}

/* Exactly {1: -35}: any other label is a header we do not understand (crit included). */
static attest_err parse_protected(const attest_span *ph, char *err, size_t errlen)
{
    cursor c = cursor_make(ph->p, ph->n);
    acbor_head h;
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_MAP)
        return attest_fail(ATTEST_ERR_ALG, err, errlen, "the protected header is not a CBOR map");
    if (h.arg != 1)
        return attest_fail(ATTEST_ERR_ALG, err, errlen,
                           "the protected header has %llu entries, expected only alg",
                           (unsigned long long)h.arg);
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_UINT || h.arg != ATTEST_COSE_ALG_LABEL)
        return attest_fail(ATTEST_ERR_ALG, err, errlen, "the protected header has no alg (label 1)");
    if (!acbor_read_head(&c, &h) || h.major != ACBOR_NINT ||
        h.arg != (uint64_t)(-1 - ATTEST_COSE_ALG_ES384))
        return attest_fail(ATTEST_ERR_ALG, err, errlen, "alg is not ES384 (-35)");
    if (c.left)
        return attest_fail(ATTEST_ERR_ALG, err, errlen, "bytes after the protected header map");
    return ATTEST_OK;
}

/* ---- the payload map -------------------------------------------------------------------- */

enum field_id {
    F_MODULE_ID,
    F_DIGEST,
    F_TIMESTAMP,
    F_PCRS,
    F_CERTIFICATE,
    F_CABUNDLE,
    F_PUBLIC_KEY,
    F_USER_DATA,
    F_NONCE,
    F_COUNT
};

static const char *const FIELD_NAMES[F_COUNT] = {
    ATTEST_FIELD_MODULE_ID, ATTEST_FIELD_DIGEST,   ATTEST_FIELD_TIMESTAMP,
    ATTEST_FIELD_PCRS,      ATTEST_FIELD_CERTIFICATE, ATTEST_FIELD_CABUNDLE,
    ATTEST_FIELD_PUBLIC_KEY, ATTEST_FIELD_USER_DATA, ATTEST_FIELD_NONCE,
};

#define REQUIRED_FIELDS                                                                          \
    (1u << F_MODULE_ID | 1u << F_DIGEST | 1u << F_TIMESTAMP | 1u << F_PCRS |                      \
     1u << F_CERTIFICATE | 1u << F_CABUNDLE)

static int field_lookup(const uint8_t *p, size_t n)
{
    for (int i = 0; i < F_COUNT; i++)
        if (strlen(FIELD_NAMES[i]) == n && memcmp(FIELD_NAMES[i], p, n) == 0)
            return i;
    return -1;
}

typedef struct pctx {
    cursor c;
    attest_doc *d;
    attest_parts *pp;
    char *err;
    size_t errlen;
} pctx;

static attest_err value_head(pctx *x, acbor_head *h, const char *what)
{
    if (!acbor_read_head(&x->c, h))
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "%s: truncated or malformed CBOR",
                           what);
    return ATTEST_OK;
}

static bool is_null(const acbor_head *h)
{
    return h->major == ACBOR_SIMPLE && !h->is_float && h->arg == ACBOR_SIMPLE_NULL;
}

/* A byte string of min..max bytes, whose head has been read. */
static attest_err value_bytes(pctx *x, const acbor_head *h, const char *what, size_t min,
                              size_t max, attest_span *out)
{
    if (h->major != ACBOR_BYTES)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "%s is not a byte string", what);
    if (!acbor_read_span(&x->c, h, &out->p, &out->n))
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "%s: truncated", what);
    if (out->n < min || out->n > max)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "%s is %zu bytes, outside %zu..%zu",
                           what, out->n, min, max);
    return ATTEST_OK;
}

static attest_err parse_module_id(pctx *x)
{
    acbor_head h;
    const uint8_t *p;
    size_t n;
    attest_err e = value_head(x, &h, ATTEST_FIELD_MODULE_ID);
    if (e != ATTEST_OK)
        return e;
    if (h.major != ACBOR_TEXT)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "module_id is not a text string");
    if (!acbor_read_span(&x->c, &h, &p, &n))
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "module_id: truncated");
    if (n == 0 || n > ATTEST_MODULE_ID_MAX)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "module_id is %zu bytes, outside 1..%d",
                           n, ATTEST_MODULE_ID_MAX);
    /* printed by the CLI and logged by the enclave: printable ASCII only */
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen,
                               "module_id has a byte that is not printable ASCII");
    memcpy(x->d->module_id, p, n);
    x->d->module_id[n] = '\0';
    return ATTEST_OK;
}

static attest_err parse_digest(pctx *x)
{
    acbor_head h;
    const uint8_t *p;
    size_t n;
    attest_err e = value_head(x, &h, ATTEST_FIELD_DIGEST);
    if (e != ATTEST_OK)
        return e;
    if (h.major != ACBOR_TEXT)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "digest is not a text string");
    if (!acbor_read_span(&x->c, &h, &p, &n))
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "digest: truncated");
    if (n != strlen(ATTEST_DIGEST) || memcmp(p, ATTEST_DIGEST, n) != 0)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "digest is not \"" ATTEST_DIGEST "\"");
    memcpy(x->d->digest, ATTEST_DIGEST, sizeof ATTEST_DIGEST);
    return ATTEST_OK;
}

static attest_err parse_timestamp(pctx *x)
{
    acbor_head h;
    attest_err e = value_head(x, &h, ATTEST_FIELD_TIMESTAMP);
    if (e != ATTEST_OK)
        return e;
    if (h.major != ACBOR_UINT)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "timestamp is not an unsigned integer");
    if (h.arg == 0 || h.arg > MAX_TIMESTAMP_MS)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen,
                           "timestamp is 0 or after the year 9999");
    x->d->timestamp_ms = h.arg;
    return ATTEST_OK;
}

static attest_err parse_pcrs(pctx *x)
{
    acbor_head h;
    attest_err e = value_head(x, &h, ATTEST_FIELD_PCRS);
    if (e != ATTEST_OK)
        return e;
    if (h.major != ACBOR_MAP)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "pcrs is not a map");
    if (h.arg < 1 || h.arg > ATTEST_MAX_PCRS)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "pcrs has %llu entries, outside 1..%d",
                           (unsigned long long)h.arg, ATTEST_MAX_PCRS);
    for (uint64_t i = 0; i < h.arg; i++) {
        acbor_head k, v;
        attest_span val;
        if ((e = value_head(x, &k, "a pcrs index")) != ATTEST_OK)
            return e;
        if (k.major != ACBOR_UINT || k.arg >= ATTEST_MAX_PCRS)
            return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen,
                               "a pcrs key is not an index 0..%d", ATTEST_MAX_PCRS - 1);
        unsigned idx = (unsigned)k.arg;
        if (x->d->pcr_present & 1u << idx)
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "PCR%u appears twice", idx);
        if ((e = value_head(x, &v, "a PCR value")) != ATTEST_OK)
            return e;
        if ((e = value_bytes(x, &v, "a PCR value", 32, ATTEST_MAX_PCR_LEN, &val)) != ATTEST_OK)
            return e;
        if (val.n != 32 && val.n != 48 && val.n != 64)
            return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen,
                               "PCR%u is %zu bytes, not 32, 48 or 64", idx, val.n);
        x->d->pcr_present |= 1u << idx;
        x->d->pcr_len[idx] = val.n;
        memcpy(x->d->pcr[idx], val.p, val.n);
    }
    return ATTEST_OK;
}

static attest_err parse_certificate(pctx *x)
{
    acbor_head h;
    attest_err e = value_head(x, &h, ATTEST_FIELD_CERTIFICATE);
    if (e != ATTEST_OK)
        return e;
    return value_bytes(x, &h, ATTEST_FIELD_CERTIFICATE, 1, ATTEST_MAX_CERT_LEN, &x->pp->certificate);
}

static attest_err parse_cabundle(pctx *x)
{
    acbor_head h;
    attest_err e = value_head(x, &h, ATTEST_FIELD_CABUNDLE);
    if (e != ATTEST_OK)
        return e;
    if (h.major != ACBOR_ARRAY)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "cabundle is not an array");
    if (h.arg < 1 || h.arg > ATTEST_MAX_CABUNDLE)
        return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen,
                           "cabundle has %llu certificates, outside 1..%d",
                           (unsigned long long)h.arg, ATTEST_MAX_CABUNDLE);
    for (size_t i = 0; i < h.arg; i++) {
        acbor_head v;
        char what[32];
        snprintf(what, sizeof what, "cabundle[%zu]", i);
        if ((e = value_head(x, &v, what)) != ATTEST_OK)
            return e;
        e = value_bytes(x, &v, what, 1, ATTEST_MAX_CERT_LEN, &x->pp->cabundle[i]);
        if (e != ATTEST_OK)
            return e;
    }
    x->pp->n_cabundle = (size_t)h.arg;
    x->d->n_cabundle = (size_t)h.arg;
    return ATTEST_OK;
}

/* public_key (1..1024), user_data and nonce (0..1024): bytes, or null for absent */
static attest_err parse_optional(pctx *x, const char *name, size_t min, bool *has, size_t *len,
                                 uint8_t *dst)
{
    acbor_head h;
    attest_span s;
    attest_err e = value_head(x, &h, name);
    if (e != ATTEST_OK)
        return e;
    if (is_null(&h))
        return ATTEST_OK;
    if ((e = value_bytes(x, &h, name, min, ATTEST_MAX_FIELD_LEN, &s)) != ATTEST_OK)
        return e;
    *has = true;
    *len = s.n;
    if (s.n)
        memcpy(dst, s.p, s.n);
    return ATTEST_OK;
}

static attest_err parse_value(pctx *x, int id)
{
    attest_doc *d = x->d;
    switch (id) {
    case F_MODULE_ID: return parse_module_id(x);
    case F_DIGEST: return parse_digest(x);
    case F_TIMESTAMP: return parse_timestamp(x);
    case F_PCRS: return parse_pcrs(x);
    case F_CERTIFICATE: return parse_certificate(x);
    case F_CABUNDLE: return parse_cabundle(x);
    case F_PUBLIC_KEY:
        return parse_optional(x, ATTEST_FIELD_PUBLIC_KEY, 1, &d->has_public_key, &d->public_key_len,
                              d->public_key);
    case F_USER_DATA:
        return parse_optional(x, ATTEST_FIELD_USER_DATA, 0, &d->has_user_data, &d->user_data_len,
                              d->user_data);
    default:
        return parse_optional(x, ATTEST_FIELD_NONCE, 0, &d->has_nonce, &d->nonce_len, d->nonce);
    }
}

static attest_err parse_payload(pctx *x)
{
    acbor_head h;
    if (!acbor_read_head(&x->c, &h))
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "not well-formed CBOR");
    if (h.major != ACBOR_MAP)
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "not a CBOR map");
    unsigned seen = 0;
    /* every key is known and appears once, so the loop ends within F_COUNT + 1 rounds */
    for (uint64_t i = 0; i < h.arg; i++) {
        acbor_head k;
        const uint8_t *p;
        size_t n;
        if (!acbor_read_head(&x->c, &k))
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "a key: malformed CBOR");
        if (k.major != ACBOR_TEXT)
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "a key is not a text string");
        if (!acbor_read_span(&x->c, &k, &p, &n))
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "a key: truncated");
        int id = field_lookup(p, n);
        if (id < 0)
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "an unknown key");
        if (seen & 1u << id)
            return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "%s appears twice",
                               FIELD_NAMES[id]);
        seen |= 1u << id;
        attest_err e = parse_value(x, id);
        if (e != ATTEST_OK)
            return e;
    }
    if (x->c.left)
        return attest_fail(ATTEST_ERR_PAYLOAD, x->err, x->errlen, "%zu bytes after the payload map",
                           x->c.left);
    for (int i = 0; i < F_COUNT; i++)
        if ((REQUIRED_FIELDS & 1u << i) && !(seen & 1u << i))
            return attest_fail(ATTEST_ERR_FIELD, x->err, x->errlen, "%s is missing", FIELD_NAMES[i]);
    return ATTEST_OK;
}

attest_err attest_doc_parse(const uint8_t *doc, size_t len, attest_doc *out, attest_parts *parts,
                            char *err, size_t errlen)
{
    attest_doc local_doc;
    attest_parts local_parts;
    attest_doc *d = out ? out : &local_doc;
    attest_parts *pp = parts ? parts : &local_parts;
    memset(d, 0, sizeof *d);
    memset(pp, 0, sizeof *pp);
    if (err && errlen)
        err[0] = '\0';
    pctx x = {cursor_make(NULL, 0), d, pp, err, errlen};
    attest_err e;
    if (!doc || len == 0 || len > ATTEST_MAX_DOC_LEN) {
        e = attest_fail(ATTEST_ERR_TOO_LARGE, err, errlen, "the document is %zu bytes, outside 1..%d",
                        doc ? len : 0, ATTEST_MAX_DOC_LEN);
        goto out;
    }
    if ((e = parse_envelope(doc, len, pp, err, errlen)) != ATTEST_OK)
        goto out;
    if ((e = parse_protected(&pp->protected_hdr, err, errlen)) != ATTEST_OK)
        goto out;
    if (pp->signature.n != ATTEST_ES384_SIG_LEN) {
        e = attest_fail(ATTEST_ERR_SIGNATURE, err, errlen,
                        "the signature is %zu bytes, ES384 signatures are %d", pp->signature.n,
                        ATTEST_ES384_SIG_LEN);
        goto out;
    }
    x.c = cursor_make(pp->payload.p, pp->payload.n);
    e = parse_payload(&x);
out:
    if (e != ATTEST_OK) {
        memset(d, 0, sizeof *d);
        memset(pp, 0, sizeof *pp);
    }
    return e;
}

/* ---- encoding ------------------------------------------------------------------------ */

int attest_doc_encode_payload(const attest_doc_fields *f, vbuf *out)
{
    const char *digest = f->digest ? f->digest : ATTEST_DIGEST;
    int r = 0;
    r |= acbor_put_head(out, ACBOR_MAP, 9);
    r |= acbor_put_text(out, ATTEST_FIELD_MODULE_ID, strlen(ATTEST_FIELD_MODULE_ID));
    r |= acbor_put_text(out, f->module_id, strlen(f->module_id));
    r |= acbor_put_text(out, ATTEST_FIELD_DIGEST, strlen(ATTEST_FIELD_DIGEST));
    r |= acbor_put_text(out, digest, strlen(digest));
    r |= acbor_put_text(out, ATTEST_FIELD_TIMESTAMP, strlen(ATTEST_FIELD_TIMESTAMP));
    r |= acbor_put_head(out, ACBOR_UINT, f->timestamp_ms);
    r |= acbor_put_text(out, ATTEST_FIELD_PCRS, strlen(ATTEST_FIELD_PCRS));
    r |= acbor_put_head(out, ACBOR_MAP, f->n_pcrs);
    for (size_t i = 0; i < f->n_pcrs; i++) {
        r |= acbor_put_head(out, ACBOR_UINT, f->pcrs[i].index);
        r |= acbor_put_bytes(out, f->pcrs[i].value, f->pcrs[i].len);
    }
    r |= acbor_put_text(out, ATTEST_FIELD_CERTIFICATE, strlen(ATTEST_FIELD_CERTIFICATE));
    r |= acbor_put_bytes(out, f->certificate, f->certificate_len);
    r |= acbor_put_text(out, ATTEST_FIELD_CABUNDLE, strlen(ATTEST_FIELD_CABUNDLE));
    r |= acbor_put_head(out, ACBOR_ARRAY, f->n_cabundle);
    for (size_t i = 0; i < f->n_cabundle; i++)
        r |= acbor_put_bytes(out, f->cabundle[i], f->cabundle_len[i]);
    r |= acbor_put_text(out, ATTEST_FIELD_PUBLIC_KEY, strlen(ATTEST_FIELD_PUBLIC_KEY));
    r |= acbor_put_bytes_or_null(out, f->public_key, f->public_key_len);
    r |= acbor_put_text(out, ATTEST_FIELD_USER_DATA, strlen(ATTEST_FIELD_USER_DATA));
    r |= acbor_put_bytes_or_null(out, f->user_data, f->user_data_len);
    r |= acbor_put_text(out, ATTEST_FIELD_NONCE, strlen(ATTEST_FIELD_NONCE));
    r |= acbor_put_bytes_or_null(out, f->nonce, f->nonce_len);
    return r ? -1 : 0;
}

/* Sig_structure = ["Signature1", body_protected, external_aad = h'', payload] */
static int sig_structure(const uint8_t *prot, size_t prot_len, const uint8_t *payload,
                         size_t payload_len, vbuf *out)
{
    int r = 0;
    r |= acbor_put_head(out, ACBOR_ARRAY, 4);
    r |= acbor_put_text(out, SIG_CONTEXT, strlen(SIG_CONTEXT));
    r |= acbor_put_bytes(out, prot, prot_len);
    r |= acbor_put_bytes(out, NULL, 0);
    r |= acbor_put_bytes(out, payload, payload_len);
    return r ? -1 : 0;
}

int attest_cose_sign(const uint8_t *payload, size_t payload_len, EVP_PKEY *key, vbuf *out)
{
    vbuf tbs = VBUF_INIT;
    EVP_MD_CTX *md = NULL;
    uint8_t *der = NULL;
    ECDSA_SIG *sig = NULL;
    uint8_t rs[ATTEST_ES384_SIG_LEN];
    int rc = -1;
    if (sig_structure(PROTECTED_ES384, sizeof PROTECTED_ES384, payload, payload_len, &tbs) != 0)
        goto out;
    size_t der_len = 0;
    if (!(md = EVP_MD_CTX_new()) || EVP_DigestSignInit(md, NULL, EVP_sha384(), NULL, key) != 1 ||
        EVP_DigestSign(md, NULL, &der_len, tbs.data, tbs.len) != 1 || !(der = malloc(der_len)) ||
        EVP_DigestSign(md, der, &der_len, tbs.data, tbs.len) != 1)
        goto out;
    const uint8_t *q = der;
    if (!(sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len)))
        goto out;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, rs, ES384_COORD_LEN) != ES384_COORD_LEN ||
        BN_bn2binpad(s, rs + ES384_COORD_LEN, ES384_COORD_LEN) != ES384_COORD_LEN)
        goto out;
    if (acbor_put_head(out, ACBOR_ARRAY, 4) || acbor_put_bytes(out, PROTECTED_ES384, sizeof PROTECTED_ES384) ||
        acbor_put_head(out, ACBOR_MAP, 0) || acbor_put_bytes(out, payload, payload_len) ||
        acbor_put_bytes(out, rs, sizeof rs))
        goto out;
    rc = 0;
out:
    ECDSA_SIG_free(sig);
    free(der);
    EVP_MD_CTX_free(md);
    vbuf_free(&tbs);
    return rc;
}

int attest_doc_sign(const attest_doc_fields *f, EVP_PKEY *key, vbuf *out)
{
    vbuf payload = VBUF_INIT;
    int rc = -1;
    if (attest_doc_encode_payload(f, &payload) == 0)
        rc = attest_cose_sign(payload.data, payload.len, key, out);
    vbuf_free(&payload);
    return rc;
}

bool attest_cose_verify(const attest_span *protected_hdr, const attest_span *payload,
                        const attest_span *sig, EVP_PKEY *key)
{
    vbuf tbs = VBUF_INIT;
    EVP_MD_CTX *md = NULL;
    ECDSA_SIG *es = NULL;
    BIGNUM *r = NULL, *s = NULL;
    uint8_t *der = NULL;
    bool ok = false;
    if (sig->n != ATTEST_ES384_SIG_LEN)
        goto out;
    if (sig_structure(protected_hdr->p, protected_hdr->n, payload->p, payload->n, &tbs) != 0)
        goto out;
    /* COSE carries r || s; OpenSSL verifies a DER ECDSA-Sig-Value */
    r = BN_bin2bn(sig->p, ES384_COORD_LEN, NULL);
    s = BN_bin2bn(sig->p + ES384_COORD_LEN, ES384_COORD_LEN, NULL);
    if (!r || !s || !(es = ECDSA_SIG_new()) || ECDSA_SIG_set0(es, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by es now */
    int der_len = i2d_ECDSA_SIG(es, &der);
    if (der_len <= 0)
        goto out;
    if (!(md = EVP_MD_CTX_new()) || EVP_DigestVerifyInit(md, NULL, EVP_sha384(), NULL, key) != 1)
        goto out;
    ok = EVP_DigestVerify(md, der, (size_t)der_len, tbs.data, tbs.len) == 1;
out:
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    vbuf_free(&tbs);
    return ok;
}

/* verify — the chain, the signature and the policy. See verify.h. */
#include "attest/verify.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/internal.h"
#include "common/hex.h"

#define ROOT_FILE_MAX (64 * 1024)
#define P384_GROUP "secp384r1"

/* ---- certificates ------------------------------------------------------------------ */

/* One DER certificate that fills the span exactly (no trailing bytes). */
static X509 *cert_from_span(const uint8_t *p, size_t n)
{
    const uint8_t *q = p;
    if (n > LONG_MAX)
        return NULL;
    X509 *x = d2i_X509(NULL, &q, (long)n);
    if (x && q != p + n) {
        X509_free(x);
        x = NULL;
    }
    return x;
}

static void subject_of(X509 *x, char *out, size_t cap)
{
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    /* RFC 2253 escapes control and non-ASCII bytes: the text is printable */
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(b, out, (int)cap - 1);
        out[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static void iso8601(int64_t unix_s, char out[32])
{
    struct tm tm;
    time_t t = (time_t)unix_s;
    if (!gmtime_r(&t, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "%lld", (long long)unix_s);
}

typedef struct chain_ctx {
    X509 *root, *leaf;
    STACK_OF(X509) *untrusted; /* cabundle[1..], in document order */
    X509_STORE *store;
    X509_STORE_CTX *ctx;
} chain_ctx;

static void chain_free(chain_ctx *c)
{
    X509_STORE_CTX_free(c->ctx);
    X509_STORE_free(c->store);
    sk_X509_pop_free(c->untrusted, X509_free);
    X509_free(c->leaf);
    X509_free(c->root);
}

/* Why X509_verify_cert said no, as the most specific attest_err. */
static attest_err chain_failure(chain_ctx *c, int64_t at, char *err, size_t errlen)
{
    int code = X509_STORE_CTX_get_error(c->ctx);
    int depth = X509_STORE_CTX_get_error_depth(c->ctx);
    X509 *x = X509_STORE_CTX_get_current_cert(c->ctx);
    char subj[ATTEST_SUBJECT_MAX] = "?";
    if (x)
        subject_of(x, subj, sizeof subj);
    if ((code == X509_V_ERR_CERT_HAS_EXPIRED || code == X509_V_ERR_CERT_NOT_YET_VALID) && x) {
        char nb[32], na[32], when[32];
        iso8601(asn1_time_unix(X509_get0_notBefore(x)), nb);
        iso8601(asn1_time_unix(X509_get0_notAfter(x)), na);
        iso8601(at, when);
        return attest_fail(ATTEST_ERR_EXPIRED, err, errlen,
                           "certificate at depth %d (%s) is valid %s to %s, checked at %s", depth,
                           subj, nb, na, when);
    }
    return attest_fail(ATTEST_ERR_CHAIN, err, errlen, "certificate at depth %d (%s): %s", depth, subj,
                       X509_verify_cert_error_string(code));
}

/* The path OpenSSL built must be exactly [leaf, cabundle[n-1], ..., cabundle[1], root]:
 * no certificate of the bundle skipped, none out of order. */
static bool chain_is_bundle(chain_ctx *c, size_t n_cabundle)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(c->ctx);
    if (!chain || (size_t)sk_X509_num(chain) != n_cabundle + 1)
        return false;
    if (X509_cmp(sk_X509_value(chain, 0), c->leaf) != 0 ||
        X509_cmp(sk_X509_value(chain, (int)n_cabundle), c->root) != 0)
        return false;
    for (size_t i = 1; i < n_cabundle; i++)
        if (X509_cmp(sk_X509_value(chain, (int)i),
                     sk_X509_value(c->untrusted, (int)(n_cabundle - 1 - i))) != 0)
            return false;
    return true;
}

static attest_err leaf_checks(X509 *leaf, char *err, size_t errlen)
{
    EVP_PKEY *k = X509_get0_pubkey(leaf);
    char group[32] = "";
    size_t glen = 0;
    if (!k || !EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) != 1 ||
        strcmp(group, P384_GROUP) != 0)
        return attest_fail(ATTEST_ERR_LEAF_KEY, err, errlen,
                           "the signing certificate's key is not EC P-384");
    if (X509_check_ca(leaf) != 0)
        return attest_fail(ATTEST_ERR_CHAIN, err, errlen, "the signing certificate is a CA");
    if ((X509_get_extension_flags(leaf) & EXFLAG_KUSAGE) &&
        !(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE))
        return attest_fail(ATTEST_ERR_CHAIN, err, errlen,
                           "the signing certificate's key usage lacks digitalSignature");
    return ATTEST_OK;
}

static attest_err verify_chain(chain_ctx *c, const attest_parts *pp, const uint8_t *root_der,
                               size_t root_len, int64_t at, attest_doc *d, char *err, size_t errlen)
{
    if (!(c->root = cert_from_span(root_der, root_len)))
        return attest_fail(ATTEST_ERR_TRUST_ROOT, err, errlen,
                           "the trusted root is not a DER certificate");
    /* byte for byte: the pinned root, not a certificate that merely shares its name */
    if (pp->cabundle[0].n != root_len || CRYPTO_memcmp(pp->cabundle[0].p, root_der, root_len) != 0)
        return attest_fail(ATTEST_ERR_ROOT, err, errlen,
                           "cabundle[0] is not the trusted root certificate");
    if (!(c->leaf = cert_from_span(pp->certificate.p, pp->certificate.n)))
        return attest_fail(ATTEST_ERR_CERT, err, errlen, "certificate is not one DER X.509 certificate");
    if (!(c->untrusted = sk_X509_new_null()))
        return ATTEST_ERR_NOMEM;
    for (size_t i = 1; i < pp->n_cabundle; i++) {
        X509 *x = cert_from_span(pp->cabundle[i].p, pp->cabundle[i].n);
        if (!x)
            return attest_fail(ATTEST_ERR_CERT, err, errlen,
                               "cabundle[%zu] is not one DER X.509 certificate", i);
        if (!sk_X509_push(c->untrusted, x)) {
            X509_free(x);
            return ATTEST_ERR_NOMEM;
        }
    }
    if (!(c->store = X509_STORE_new()) || X509_STORE_add_cert(c->store, c->root) != 1 ||
        !(c->ctx = X509_STORE_CTX_new()) ||
        X509_STORE_CTX_init(c->ctx, c->store, c->leaf, c->untrusted) != 1)
        return ATTEST_ERR_NOMEM;
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(c->ctx);
    X509_VERIFY_PARAM_set_time(param, (time_t)at);
    X509_VERIFY_PARAM_set_depth(param, ATTEST_MAX_CABUNDLE);
    if (X509_verify_cert(c->ctx) != 1)
        return chain_failure(c, at, err, errlen);
    if (!chain_is_bundle(c, pp->n_cabundle))
        return attest_fail(ATTEST_ERR_CHAIN, err, errlen,
                           "cabundle is not the signing certificate's path to the root, in order");
    attest_err e = leaf_checks(c->leaf, err, errlen);
    if (e != ATTEST_OK)
        return e;
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(c->ctx);
    d->n_chain = pp->n_cabundle + 1;
    for (size_t i = 0; i < d->n_chain; i++) /* root first */
        subject_of(sk_X509_value(chain, (int)(d->n_chain - 1 - i)), d->chain_subject[i],
                   ATTEST_SUBJECT_MAX);
    d->leaf_not_before = asn1_time_unix(X509_get0_notBefore(c->leaf));
    d->leaf_not_after = asn1_time_unix(X509_get0_notAfter(c->leaf));
    return ATTEST_OK;
}

/* ---- policy -------------------------------------------------------------------------- */

static attest_err check_options(const attest_options *o, char *err, size_t errlen)
{
    if (o->root_der && o->root_der_len == 0)
        return attest_fail(ATTEST_ERR_ARG, err, errlen, "the trusted root is empty");
    if (o->at != ATTEST_AT_NOW && o->at != ATTEST_AT_DOC && o->at != ATTEST_AT_TIME)
        return attest_fail(ATTEST_ERR_ARG, err, errlen, "unknown check-time mode");
    if (o->at == ATTEST_AT_TIME && (o->at_unix <= 0 || o->at_unix > 253402300799LL))
        return attest_fail(ATTEST_ERR_ARG, err, errlen, "the check time is out of range");
    if (o->max_age_s != ATTEST_MAX_AGE_UNLIMITED &&
        (o->max_age_s < 0 || o->max_age_s > ATTEST_MAX_AGE_LIMIT_S))
        return attest_fail(ATTEST_ERR_ARG, err, errlen, "max age must be 0..%ld s",
                           ATTEST_MAX_AGE_LIMIT_S);
    if ((o->nonce && o->nonce_len > ATTEST_MAX_FIELD_LEN) ||
        (o->user_data && o->user_data_len > ATTEST_MAX_FIELD_LEN) ||
        (o->public_key && (o->public_key_len < 1 || o->public_key_len > ATTEST_MAX_FIELD_LEN)))
        return attest_fail(ATTEST_ERR_ARG, err, errlen,
                           "an expected nonce, public key or user data is longer than a document holds");
    if (o->n_pcrs && !o->pcrs)
        return attest_fail(ATTEST_ERR_ARG, err, errlen, "n_pcrs without pcrs");
    for (size_t i = 0; i < o->n_pcrs; i++) {
        const attest_pcr *p = &o->pcrs[i];
        if (p->index >= ATTEST_MAX_PCRS || (p->len != 32 && p->len != 48 && p->len != 64))
            return attest_fail(ATTEST_ERR_ARG, err, errlen,
                               "expected PCR #%zu: index 0..31 and 32, 48 or 64 bytes", i);
    }
    return ATTEST_OK;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static attest_err check_freshness(const attest_doc *d, int64_t at_ms, long max_age_s, char *err,
                                  size_t errlen)
{
    int64_t ts = (int64_t)d->timestamp_ms; /* <= year 9999: no overflow below */
    if (ts > at_ms + (int64_t)ATTEST_MAX_FUTURE_S * 1000)
        return attest_fail(ATTEST_ERR_STALE, err, errlen,
                           "the timestamp is %lld s after the check time (at most %d s of skew)",
                           (long long)((ts - at_ms) / 1000), ATTEST_MAX_FUTURE_S);
    if (max_age_s == ATTEST_MAX_AGE_UNLIMITED)
        return ATTEST_OK;
    if (max_age_s == 0)
        max_age_s = ATTEST_DEFAULT_MAX_AGE_S;
    if (at_ms - ts > (int64_t)max_age_s * 1000)
        return attest_fail(ATTEST_ERR_STALE, err, errlen,
                           "the document is %lld s old at the check time (at most %ld s)",
                           (long long)((at_ms - ts) / 1000), max_age_s);
    return ATTEST_OK;
}

static attest_err check_bytes(bool has, const uint8_t *v, size_t n, const uint8_t *want,
                              size_t want_n, attest_err e, const char *name, char *err,
                              size_t errlen)
{
    if (!want)
        return ATTEST_OK;
    if (!has)
        return attest_fail(e, err, errlen, "the document has no %s", name);
    if (n != want_n || (n && CRYPTO_memcmp(v, want, n) != 0))
        return attest_fail(e, err, errlen, "%s differs from the expected value", name);
    return ATTEST_OK;
}

static attest_err check_binding(const attest_doc *d, const attest_options *o, char *err,
                                size_t errlen)
{
    attest_err e;
    if ((e = check_bytes(d->has_nonce, d->nonce, d->nonce_len, o->nonce, o->nonce_len,
                         ATTEST_ERR_NONCE, ATTEST_FIELD_NONCE, err, errlen)) != ATTEST_OK)
        return e;
    if ((e = check_bytes(d->has_public_key, d->public_key, d->public_key_len, o->public_key,
                         o->public_key_len, ATTEST_ERR_PUBLIC_KEY, ATTEST_FIELD_PUBLIC_KEY, err,
                         errlen)) != ATTEST_OK)
        return e;
    if ((e = check_bytes(d->has_user_data, d->user_data, d->user_data_len, o->user_data,
                         o->user_data_len, ATTEST_ERR_USER_DATA, ATTEST_FIELD_USER_DATA, err,
                         errlen)) != ATTEST_OK)
        return e;
    for (size_t i = 0; i < o->n_pcrs; i++) {
        const attest_pcr *p = &o->pcrs[i];
        if (!(d->pcr_present & 1u << p->index))
            return attest_fail(ATTEST_ERR_PCR, err, errlen, "PCR%u is not in the document", p->index);
        if (d->pcr_len[p->index] != p->len ||
            CRYPTO_memcmp(d->pcr[p->index], p->value, p->len) != 0)
            return attest_fail(ATTEST_ERR_PCR, err, errlen, "PCR%u differs from the expected value",
                               p->index);
    }
    return ATTEST_OK;
}

attest_err attest_verify(const uint8_t *doc, size_t len, const attest_options *opt, attest_doc *out,
                         char *err, size_t errlen)
{
    static const attest_options defaults;
    const attest_options *o = opt ? opt : &defaults;
    attest_doc *d = malloc(sizeof *d); /* ~8 KiB: not on the caller's stack */
    attest_parts pp;
    chain_ctx c = {0};
    attest_err e;
    if (err && errlen)
        err[0] = '\0';
    if (!d) {
        e = ATTEST_ERR_NOMEM;
        goto out;
    }
    if ((e = check_options(o, err, errlen)) != ATTEST_OK)
        goto out;
    if ((e = attest_doc_parse(doc, len, d, &pp, err, errlen)) != ATTEST_OK)
        goto out;
    const uint8_t *root = o->root_der;
    size_t root_len = o->root_der_len;
    if (!root && attest_pinned_root(&root, &root_len) != 0) {
        e = attest_fail(ATTEST_ERR_TRUST_ROOT, err, errlen,
                        "the embedded AWS root does not match its SHA-256");
        goto out;
    }
    int64_t at_ms = o->at == ATTEST_AT_NOW    ? now_ms()
                    : o->at == ATTEST_AT_DOC ? (int64_t)d->timestamp_ms
                                             : o->at_unix * 1000;
    d->checked_at = at_ms / 1000;
    if ((e = verify_chain(&c, &pp, root, root_len, d->checked_at, d, err, errlen)) != ATTEST_OK)
        goto out;
    if (!attest_cose_verify(&pp.protected_hdr, &pp.payload, &pp.signature, X509_get0_pubkey(c.leaf))) {
        e = attest_fail(ATTEST_ERR_SIGNATURE, err, errlen,
                        "the COSE_Sign1 signature does not verify with the signing certificate's key");
        goto out;
    }
    if ((e = check_freshness(d, at_ms, o->max_age_s, err, errlen)) != ATTEST_OK)
        goto out;
    e = check_binding(d, o, err, errlen);
out:
    chain_free(&c);
    ERR_clear_error(); /* OpenSSL's queue holds nothing the caller needs: err says it */
    if (out) {
        if (e == ATTEST_OK)
            memcpy(out, d, sizeof *out);
        else
            memset(out, 0, sizeof *out);
    }
    free(d);
    if (e == ATTEST_ERR_NOMEM && err && errlen && !err[0])
        attest_fail(e, err, errlen, "out of memory");
    return e;
}

/* ---- roots ---------------------------------------------------------------------------- */

attest_err attest_root_load(const char *path, uint8_t **der, size_t *der_len, char *err,
                            size_t errlen)
{
    attest_err e = ATTEST_ERR_TRUST_ROOT;
    uint8_t *buf = NULL;
    X509 *x = NULL, *extra = NULL;
    BIO *bio = NULL;
    *der = NULL;
    *der_len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        attest_fail(e, err, errlen, "cannot open the root file: %s", strerror(errno));
        goto out;
    }
    if (!(buf = malloc(ROOT_FILE_MAX + 1))) {
        e = ATTEST_ERR_NOMEM;
        goto out;
    }
    size_t n = fread(buf, 1, ROOT_FILE_MAX + 1, f);
    if (ferror(f) || n == 0 || n > ROOT_FILE_MAX) {
        attest_fail(e, err, errlen, "the root file is unreadable, empty or over %d bytes",
                    ROOT_FILE_MAX);
        goto out;
    }
    static const char PEM_BEGIN[] = "-----BEGIN";
    if (n >= sizeof PEM_BEGIN - 1 && memmem(buf, n, PEM_BEGIN, sizeof PEM_BEGIN - 1)) {
        if (!(bio = BIO_new_mem_buf(buf, (int)n)) || !(x = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
            attest_fail(e, err, errlen, "the root file holds no PEM certificate");
            goto out;
        }
        if ((extra = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
            attest_fail(e, err, errlen, "the root file holds more than one certificate");
            goto out;
        }
    } else if (!(x = cert_from_span(buf, n))) {
        attest_fail(e, err, errlen, "the root file is neither PEM nor one DER certificate");
        goto out;
    }
    uint8_t *enc = NULL;
    int len = i2d_X509(x, &enc);
    if (len <= 0) {
        e = ATTEST_ERR_NOMEM;
        goto out;
    }
    *der = malloc((size_t)len);
    if (*der) {
        memcpy(*der, enc, (size_t)len);
        *der_len = (size_t)len;
        e = ATTEST_OK;
    } else {
        e = ATTEST_ERR_NOMEM;
    }
    OPENSSL_free(enc);
out:
    if (f)
        fclose(f);
    BIO_free(bio);
    X509_free(x);
    X509_free(extra);
    free(buf);
    ERR_clear_error();
    return e;
}

/* ---- output helpers ------------------------------------------------------------------- */

static json_t *hex_or_null(bool has, const uint8_t *p, size_t n)
{
    if (!has)
        return json_null();
    char *h = malloc(2 * n + 1);
    if (!h)
        return NULL;
    hex_encode(p, n, h);
    json_t *s = json_string(h);
    free(h);
    return s;
}

static bool printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] > 0x7e)
            return false;
    return true;
}

static int set_new(json_t *o, const char *k, json_t *v)
{
    return v ? json_object_set_new(o, k, v) : -1;
}

static int set_time(json_t *o, const char *k, int64_t t)
{
    char buf[32];
    iso8601(t, buf);
    return set_new(o, k, json_string(buf));
}

json_t *attest_doc_to_json(const attest_doc *d)
{
    json_t *o = json_object(), *pcrs = json_object();
    int r = 0;
    if (!o || !pcrs) {
        json_decref(o);
        json_decref(pcrs);
        return NULL;
    }
    size_t mlen = strlen(d->module_id), slen = strlen(ATTEST_SIM_MODULE_ID_SUFFIX);
    bool simulated = mlen >= slen && strcmp(d->module_id + mlen - slen, ATTEST_SIM_MODULE_ID_SUFFIX) == 0;
    r |= set_new(o, "module_id", json_string(d->module_id));
    r |= set_new(o, "simulated", json_boolean(simulated));
    r |= set_new(o, "timestamp", json_integer((json_int_t)d->timestamp_ms));
    r |= set_time(o, "time", (int64_t)(d->timestamp_ms / 1000));
    r |= set_new(o, "digest", json_string(d->digest));
    r |= set_new(o, "pcrs", pcrs);
    for (unsigned i = 0; i < ATTEST_MAX_PCRS; i++) {
        if (!(d->pcr_present & 1u << i))
            continue;
        char k[4];
        snprintf(k, sizeof k, "%u", i);
        r |= set_new(pcrs, k, hex_or_null(true, d->pcr[i], d->pcr_len[i]));
    }
    r |= set_new(o, "public_key", hex_or_null(d->has_public_key, d->public_key, d->public_key_len));
    r |= set_new(o, "user_data", hex_or_null(d->has_user_data, d->user_data, d->user_data_len));
    if (d->has_user_data && printable(d->user_data, d->user_data_len))
        r |= set_new(o, "user_data_text", json_stringn((const char *)d->user_data, d->user_data_len));
    r |= set_new(o, "nonce", hex_or_null(d->has_nonce, d->nonce, d->nonce_len));
    if (d->n_chain) {
        json_t *chain = json_array();
        r |= set_new(o, "chain", chain);
        for (size_t i = 0; chain && i < d->n_chain; i++)
            r |= json_array_append_new(chain, json_string(d->chain_subject[i]));
        r |= set_time(o, "leaf_not_before", d->leaf_not_before);
        r |= set_time(o, "leaf_not_after", d->leaf_not_after);
        r |= set_time(o, "checked_at", d->checked_at);
    }
    if (r) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int attest_pcr_parse(const char *s, attest_pcr *out, char *err, size_t errlen)
{
    const char *eq = s ? strchr(s, '=') : NULL;
    memset(out, 0, sizeof *out);
    if (!eq || eq == s || eq - s > 2) {
        attest_fail(ATTEST_ERR_ARG, err, errlen, "a PCR is written N=HEX");
        return -1;
    }
    unsigned idx = 0;
    for (const char *p = s; p < eq; p++) {
        if (*p < '0' || *p > '9') {
            attest_fail(ATTEST_ERR_ARG, err, errlen, "a PCR index is a number 0..31");
            return -1;
        }
        idx = idx * 10 + (unsigned)(*p - '0');
    }
    size_t hl = strlen(eq + 1);
    if (idx >= ATTEST_MAX_PCRS || (hl != 64 && hl != 96 && hl != 128) ||
        hex_decode_exact(eq + 1, hl, out->value, hl / 2) != 0) {
        attest_fail(ATTEST_ERR_ARG, err, errlen,
                    "a PCR is N=HEX with N 0..31 and 64, 96 or 128 hex digits");
        return -1;
    }
    out->index = idx;
    out->len = hl / 2;
    return 0;
}

/* attest/verify + attest/document: two real AWS Nitro documents verify at their own time
 * with the pinned root and fail now; every single-byte change fails; documents signed by
 * another chain (a forged root of the same name, a forged intermediate under the real
 * root's bytes, the real chain with another signing key, a reordered bundle) fail with
 * the root, chain or signature error; each policy mismatch has its own error; the
 * structure rules (shape, alg, limits, duplicate and unknown keys, trailing bytes,
 * indefinite and overlong heads). Fixtures: tests/fixtures/attestation/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "attest/measurements.h"
#include "attest/verify.h"
#include "common/hex.h"

#define FIX VEIL_FIXTURES "/attestation/"
#define OPENSECRET FIX "opensecret-sdk.cbor"
#define TINFOIL FIX "tinfoil.cbor"
#define OPENSECRET_TS_S 1730141656 /* its timestamp, in seconds */

typedef struct blob {
    uint8_t *p;
    size_t n;
} blob;

static blob load(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    blob b = {malloc(64 * 1024), 0};
    assert_non_null(b.p);
    b.n = fread(b.p, 1, 64 * 1024, f);
    fclose(f);
    assert_true(b.n > 0);
    return b;
}

static attest_doc *new_doc(void)
{
    attest_doc *d = calloc(1, sizeof *d);
    assert_non_null(d);
    return d;
}

static attest_err verify_opt(const blob *b, const attest_options *o, char *err)
{
    return attest_verify(b->p, b->n, o, NULL, err, 256);
}

static attest_err verify_at_doc(const blob *b, char *err)
{
    attest_options o = {.at = ATTEST_AT_DOC};
    return verify_opt(b, &o, err);
}

/* ---- an independent CBOR writer for hand-made inputs ---------------------------------- */

static void put_head(uint8_t **w, uint8_t major, uint64_t v)
{
    uint8_t *p = *w;
    if (v < 24) {
        *p++ = (uint8_t)(major << 5 | v);
    } else if (v < 0x100) {
        *p++ = (uint8_t)(major << 5 | 24);
        *p++ = (uint8_t)v;
    } else if (v < 0x10000) {
        *p++ = (uint8_t)(major << 5 | 25);
        *p++ = (uint8_t)(v >> 8);
        *p++ = (uint8_t)v;
    } else {
        *p++ = (uint8_t)(major << 5 | 26);
        for (int i = 3; i >= 0; i--)
            *p++ = (uint8_t)(v >> (8 * i));
    }
    *w = p;
}

static void put_raw(uint8_t **w, const void *p, size_t n)
{
    memcpy(*w, p, n);
    *w += n;
}

static void put_bstr(uint8_t **w, const uint8_t *p, size_t n)
{
    put_head(w, 2, n);
    put_raw(w, p, n);
}

/* A COSE_Sign1 from parts; unprot is the raw unprotected header ("\xa0" normally). */
static blob cose(int tag, const uint8_t *prot, size_t prot_n, const char *unprot, size_t unprot_n,
                 const uint8_t *payload, size_t payload_n, const uint8_t *sig, size_t sig_n)
{
    blob b = {malloc(payload_n + prot_n + sig_n + unprot_n + 64), 0};
    assert_non_null(b.p);
    uint8_t *w = b.p;
    if (tag >= 0)
        put_head(&w, 6, (uint64_t)tag);
    put_head(&w, 4, 4);
    put_bstr(&w, prot, prot_n);
    put_raw(&w, unprot, unprot_n);
    put_bstr(&w, payload, payload_n);
    put_bstr(&w, sig, sig_n);
    b.n = (size_t)(w - b.p);
    return b;
}

static const uint8_t PROT_ES384[] = {0xa1, 0x01, 0x38, 0x22};

/* ---- an independent certificate factory (OpenSSL) ---------------------------------------- */

static EVP_PKEY *key_on(const char *curve)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
    assert_non_null(k);
    return k;
}

static void ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX c;
    X509V3_set_ctx_nodb(&c);
    X509V3_set_ctx(&c, issuer ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &c, nid, value);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
    X509_EXTENSION_free(e);
}

/* subject NULL: CN=cn; issuer NULL: self-signed. Valid from nb to na (unix seconds). */
static bool mk_no_aki; /* leave out the authority key id (OpenSSL then matches by name only) */

static X509 *mk_cert(EVP_PKEY *key, const X509_NAME *subject, const char *cn, X509 *issuer,
                     EVP_PKEY *issuer_key, time_t nb, time_t na, const char *bc, const char *ku)
{
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long)(nb & 0xffffff) + 7);
    X509_NAME *n = subject ? X509_NAME_dup(subject) : X509_NAME_new();
    if (!subject)
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    ASN1_TIME_set(X509_getm_notBefore(x), nb);
    ASN1_TIME_set(X509_getm_notAfter(x), na);
    X509_set_pubkey(x, key);
    ext(x, issuer, NID_basic_constraints, bc);
    ext(x, issuer, NID_key_usage, ku);
    ext(x, issuer, NID_subject_key_identifier, "hash");
    if (issuer && !mk_no_aki)
        ext(x, issuer, NID_authority_key_identifier, "keyid:always");
    assert_true(X509_sign(x, issuer ? issuer_key : key, EVP_sha384()) > 0);
    return x;
}

static blob der_of(X509 *x)
{
    blob b = {NULL, 0};
    int n = i2d_X509(x, &b.p);
    assert_true(n > 0);
    b.n = (size_t)n;
    return b;
}

static void blob_free_ossl(blob *b)
{
    OPENSSL_free(b->p);
}

/* ---- a real document's fields, to re-sign with other keys and chains --------------------- */

typedef struct real {
    blob raw;
    attest_doc *d;
    attest_parts pp;
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    const uint8_t *bundle[ATTEST_MAX_CABUNDLE];
    size_t bundle_len[ATTEST_MAX_CABUNDLE];
    attest_doc_fields f;
} real;

static void real_load(real *r, const char *path)
{
    char err[256];
    memset(r, 0, sizeof *r);
    r->raw = load(path);
    r->d = new_doc();
    assert_int_equal(attest_doc_parse(r->raw.p, r->raw.n, r->d, &r->pp, err, sizeof err), ATTEST_OK);
    size_t n = 0;
    for (unsigned i = 0; i < ATTEST_MAX_PCRS; i++)
        if (r->d->pcr_present & 1u << i) {
            r->pcrs[n].index = i;
            r->pcrs[n].len = r->d->pcr_len[i];
            memcpy(r->pcrs[n].value, r->d->pcr[i], r->d->pcr_len[i]);
            n++;
        }
    for (size_t i = 0; i < r->pp.n_cabundle; i++) {
        r->bundle[i] = r->pp.cabundle[i].p;
        r->bundle_len[i] = r->pp.cabundle[i].n;
    }
    r->f = (attest_doc_fields){
        .module_id = r->d->module_id,
        .timestamp_ms = r->d->timestamp_ms,
        .pcrs = r->pcrs,
        .n_pcrs = n,
        .certificate = r->pp.certificate.p,
        .certificate_len = r->pp.certificate.n,
        .cabundle = r->bundle,
        .cabundle_len = r->bundle_len,
        .n_cabundle = r->pp.n_cabundle,
        .public_key = r->d->has_public_key ? r->d->public_key : NULL,
        .public_key_len = r->d->public_key_len,
        .user_data = r->d->has_user_data ? r->d->user_data : NULL,
        .user_data_len = r->d->user_data_len,
        .nonce = r->d->has_nonce ? r->d->nonce : NULL,
        .nonce_len = r->d->nonce_len,
    };
}

static void real_free(real *r)
{
    free(r->raw.p);
    free(r->d);
}

static blob sign_fields(const attest_doc_fields *f, EVP_PKEY *k)
{
    vbuf out = VBUF_INIT;
    assert_int_equal(attest_doc_sign(f, k, &out), 0);
    return (blob){out.data, out.len};
}

/* ---- the pinned root -------------------------------------------------------------------- */

static void test_pinned_root_is_the_fixture(void **state)
{
    (void)state;
    const uint8_t *der;
    size_t len;
    assert_int_equal(attest_pinned_root(&der, &len), 0);
    uint8_t *file_der;
    size_t file_len;
    char err[256];
    assert_int_equal(attest_root_load(FIX "aws_nitro_root_g1.pem", &file_der, &file_len, err, sizeof err),
                     ATTEST_OK);
    assert_int_equal(file_len, len);
    assert_memory_equal(file_der, der, len);
    uint8_t h[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    SHA256(der, len, h);
    hex_encode(h, sizeof h, hex);
    assert_string_equal(hex, "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
    free(file_der);
}

/* ---- the real documents ----------------------------------------------------------------- */

static void check_fields_expected(const attest_doc *d, json_t *x)
{
    char hex[2 * ATTEST_MAX_FIELD_LEN + 1];
    assert_string_equal(d->module_id, json_string_value(json_object_get(x, "module_id")));
    assert_int_equal(d->timestamp_ms, json_integer_value(json_object_get(x, "timestamp_ms")));
    assert_string_equal(d->digest, json_string_value(json_object_get(x, "digest")));
    size_t pcr_count = (size_t)json_integer_value(json_object_get(x, "pcr_count"));
    assert_int_equal(d->pcr_present, (1u << pcr_count) - 1);
    uint32_t nonzero = 0;
    for (unsigned i = 0; i < pcr_count; i++) {
        assert_int_equal(d->pcr_len[i], json_integer_value(json_object_get(x, "pcr_len")));
        for (size_t j = 0; j < d->pcr_len[i]; j++)
            if (d->pcr[i][j])
                nonzero |= 1u << i;
    }
    uint32_t want_nonzero = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(x, "nonzero_pcrs"), i, v)
        want_nonzero |= 1u << json_integer_value(v);
    assert_int_equal(nonzero, want_nonzero);
    hex_encode(d->pcr[0], 8, hex);
    assert_string_equal(hex, json_string_value(json_object_get(x, "pcr0_prefix")));
    struct {
        const char *name;
        bool has;
        const uint8_t *p;
        size_t n;
    } opt[] = {
        {"public_key", d->has_public_key, d->public_key, d->public_key_len},
        {"user_data", d->has_user_data, d->user_data, d->user_data_len},
        {"nonce", d->has_nonce, d->nonce, d->nonce_len},
    };
    for (size_t k = 0; k < 3; k++) {
        json_t *want = json_object_get(x, opt[k].name);
        assert_int_equal(opt[k].has, !json_is_null(want));
        if (opt[k].has) {
            hex_encode(opt[k].p, opt[k].n, hex);
            assert_string_equal(hex, json_string_value(want));
        }
    }
    assert_int_equal(d->n_cabundle, json_integer_value(json_object_get(x, "cabundle")));
    assert_int_equal(d->n_chain, d->n_cabundle + 1);
    assert_string_equal(d->chain_subject[0], json_string_value(json_object_get(x, "root_subject")));
    assert_non_null(strstr(d->chain_subject[d->n_chain - 1], d->module_id));
    assert_int_equal(d->leaf_not_before, json_integer_value(json_object_get(x, "leaf_not_before")));
    assert_int_equal(d->leaf_not_after, json_integer_value(json_object_get(x, "leaf_not_after")));
    assert_int_equal(d->checked_at, (int64_t)(d->timestamp_ms / 1000));
}

/* `--at doc`: each real document verifies at its own time with the embedded AWS root,
 * and decodes to the fields the vectors' README lists. */
static void test_real_documents_verify_at_their_time(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *exp = json_load_file(FIX "expected.json", 0, &jerr);
    assert_non_null(exp);
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(exp, "documents"), i, x) {
        char path[512], err[256];
        snprintf(path, sizeof path, FIX "%s", json_string_value(json_object_get(x, "file")));
        blob b = load(path);
        attest_doc *d = new_doc();
        attest_options o = {.at = ATTEST_AT_DOC};
        attest_err e = attest_verify(b.p, b.n, &o, d, err, sizeof err);
        if (e != ATTEST_OK)
            fail_msg("%s: %s: %s", path, attest_check_name(e), err);
        check_fields_expected(d, x);
        free(d);
        free(b.p);
    }
    assert_int_equal(i, 2);
    json_decref(exp);
}

/* Checked now, the three-hour leaves (and the intermediates) have long expired. */
static void test_real_documents_fail_now(void **state)
{
    (void)state;
    const char *files[] = {OPENSECRET, TINFOIL};
    for (size_t i = 0; i < 2; i++) {
        blob b = load(files[i]);
        attest_doc *d = new_doc();
        char err[256];
        d->timestamp_ms = 1; /* must be zeroed on failure */
        assert_int_equal(attest_verify(b.p, b.n, NULL, d, err, sizeof err), ATTEST_ERR_EXPIRED);
        assert_non_null(strstr(err, "checked at"));
        assert_int_equal(d->timestamp_ms, 0);
        assert_string_equal(attest_check_name(ATTEST_ERR_EXPIRED), "validity");
        free(d);
        free(b.p);
    }
}

/* At the leaf's notAfter (age not checked) the leaf itself is refused, and one second
 * before its notBefore too; the second before notAfter passes, and at notBefore only
 * the timestamp (then in the future) is refused. */
static void test_leaf_validity_edges(void **state)
{
    (void)state;
    blob b = load(OPENSECRET);
    char err[256];
    attest_options o = {.at = ATTEST_AT_TIME, .max_age_s = ATTEST_MAX_AGE_UNLIMITED};
    o.at_unix = 1730152098 - 1; /* the last second before notAfter */
    assert_int_equal(verify_opt(&b, &o, err), ATTEST_OK);
    o.at_unix = 1730152098;
    assert_int_equal(verify_opt(&b, &o, err), ATTEST_ERR_EXPIRED);
    assert_non_null(strstr(err, "depth 0"));
    o.at_unix = 1730141295; /* notBefore: the chain passes, the timestamp is 6 minutes ahead */
    assert_int_equal(verify_opt(&b, &o, err), ATTEST_ERR_STALE);
    assert_non_null(strstr(err, "after the check time"));
    o.at_unix = 1730141295 - 1;
    assert_int_equal(verify_opt(&b, &o, err), ATTEST_ERR_EXPIRED);
    assert_non_null(strstr(err, "depth 0"));
    free(b.p);
}

/* The encoder writes a real NSM's bytes: the real documents' fields re-encode to
 * exactly their payloads. */
static void test_encoder_reproduces_real_payloads(void **state)
{
    (void)state;
    const char *files[] = {OPENSECRET, TINFOIL};
    for (size_t i = 0; i < 2; i++) {
        real r;
        real_load(&r, files[i]);
        vbuf out = VBUF_INIT;
        assert_int_equal(attest_doc_encode_payload(&r.f, &out), 0);
        assert_int_equal(out.len, r.pp.payload.n);
        assert_memory_equal(out.data, r.pp.payload.p, out.len);
        vbuf_free(&out);
        real_free(&r);
    }
}

/* ---- every single-byte change ---------------------------------------------------------- */

enum region { R_ENVELOPE, R_PROTECTED, R_SIGNATURE, R_PAYLOAD, R_ROOT, R_CERT };

static enum region region_of(const attest_parts *pp, const uint8_t *base, size_t off)
{
    const uint8_t *p = base + off;
#define IN(s) (p >= (s).p && p < (s).p + (s).n)
    if (IN(pp->protected_hdr))
        return R_PROTECTED;
    if (IN(pp->signature))
        return R_SIGNATURE;
    if (IN(pp->cabundle[0]))
        return R_ROOT;
    if (IN(pp->certificate))
        return R_CERT;
    for (size_t i = 1; i < pp->n_cabundle; i++)
        if (IN(pp->cabundle[i]))
            return R_CERT;
    if (IN(pp->payload))
        return R_PAYLOAD;
    return R_ENVELOPE;
#undef IN
}

/* Attack: any edit of a genuine document, one byte at a time, in every position: the
 * protected header (alg), the signature, each certificate (root, intermediates, leaf),
 * the rest of the payload and the envelope. Each must fail, with the check that owns
 * that region. */
static void test_every_byte_change_fails(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    blob b = {malloc(r.raw.n), r.raw.n};
    assert_non_null(b.p);
    memcpy(b.p, r.raw.p, b.n);
    attest_options o = {.at = ATTEST_AT_DOC};
    size_t counts[6] = {0};
    char err[256];
    for (size_t off = 0; off < b.n; off++) {
        enum region reg = region_of(&r.pp, r.raw.p, off);
        b.p[off] ^= 0x01;
        attest_err e = attest_verify(b.p, b.n, &o, NULL, err, sizeof err);
        b.p[off] ^= 0x01;
        bool ok;
        switch (reg) {
        case R_PROTECTED: ok = e == ATTEST_ERR_ALG; break;
        case R_SIGNATURE: ok = e == ATTEST_ERR_SIGNATURE; break;
        case R_ROOT: ok = e == ATTEST_ERR_ROOT; break;
        /* caught by the X.509 checks (DER or a certificate's signature), before the COSE
         * signature is even looked at */
        case R_CERT: ok = e == ATTEST_ERR_CERT || e == ATTEST_ERR_CHAIN; break;
        /* a changed timestamp moves the check time, so validity may fail first */
        case R_PAYLOAD:
            ok = e == ATTEST_ERR_PAYLOAD || e == ATTEST_ERR_FIELD || e == ATTEST_ERR_SIGNATURE ||
                 e == ATTEST_ERR_EXPIRED;
            break;
        default: ok = e != ATTEST_OK; break;
        }
        if (!ok)
            fail_msg("byte %zu (region %d) changed: %s: %s", off, (int)reg, attest_check_name(e), err);
        counts[reg]++;
    }
    /* every region was exercised */
    for (int i = 0; i < 6; i++)
        assert_true(counts[i] > 0);
    assert_int_equal(counts[R_SIGNATURE], 96);
    assert_int_equal(counts[R_PROTECTED], 4);
    /* the original still verifies: the loop restored every byte */
    assert_int_equal(attest_verify(b.p, b.n, &o, NULL, err, sizeof err), ATTEST_OK);
    free(b.p);
    real_free(&r);
}

/* ---- documents signed by someone else ------------------------------------------------------ */

/* Attack: a self-made root that copies the AWS root's name (and a chain under it)
 * signs a document with the real fields. Only the pinned root's bytes are trusted. */
static void test_forged_root_with_the_same_name(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    const uint8_t *aws_der;
    size_t aws_len;
    assert_int_equal(attest_pinned_root(&aws_der, &aws_len), 0);
    const uint8_t *q = aws_der;
    X509 *aws = d2i_X509(NULL, &q, (long)aws_len);
    assert_non_null(aws);
    time_t t = OPENSECRET_TS_S;
    EVP_PKEY *rk = key_on("P-384"), *lk = key_on("P-384");
    X509 *root = mk_cert(rk, X509_get_subject_name(aws), NULL, NULL, NULL, t - 86400, t + 86400,
                         "critical,CA:TRUE", "critical,keyCertSign");
    X509 *leaf = mk_cert(lk, NULL, "i-forged-enc0", root, rk, t - 3600, t + 3600, "critical,CA:FALSE",
                         "critical,digitalSignature");
    blob rd = der_of(root), ld = der_of(leaf);
    const uint8_t *bundle[1] = {rd.p};
    size_t bundle_len[1] = {rd.n};
    r.f.cabundle = bundle;
    r.f.cabundle_len = bundle_len;
    r.f.n_cabundle = 1;
    r.f.certificate = ld.p;
    r.f.certificate_len = ld.n;
    blob forged = sign_fields(&r.f, lk);
    char err[256];
    assert_int_equal(verify_at_doc(&forged, err), ATTEST_ERR_ROOT);
    assert_string_equal(err, "cabundle[0] is not the trusted root certificate");
    /* the same document passes with the forger's root: the refusal above was the root */
    attest_options o = {.at = ATTEST_AT_DOC, .root_der = rd.p, .root_der_len = rd.n};
    assert_int_equal(verify_opt(&forged, &o, err), ATTEST_OK);
    free(forged.p);
    blob_free_ossl(&rd);
    blob_free_ossl(&ld);
    X509_free(root);
    X509_free(leaf);
    X509_free(aws);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(lk);
    real_free(&r);
}

/* Attack: cabundle[0] is the genuine AWS root, byte for byte, but the intermediate
 * that claims to be issued by it was signed by another key: with the forger's key id
 * (no issuer found) and with no key id (the name matches, the signature does not). */
static void test_forged_intermediate_under_the_real_root(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    const uint8_t *aws_der;
    size_t aws_len;
    assert_int_equal(attest_pinned_root(&aws_der, &aws_len), 0);
    const uint8_t *q = aws_der;
    X509 *aws = d2i_X509(NULL, &q, (long)aws_len);
    assert_non_null(aws);
    time_t t = OPENSECRET_TS_S;
    EVP_PKEY *fake_root_key = key_on("P-384"), *ik = key_on("P-384"), *lk = key_on("P-384");
    /* a look-alike of the AWS root (its name), whose key signs the intermediate */
    X509 *lookalike = mk_cert(fake_root_key, X509_get_subject_name(aws), NULL, NULL, NULL, t - 86400,
                              t + 86400, "critical,CA:TRUE", "critical,keyCertSign");
    const char *want[2] = {"unable to get local issuer certificate", "certificate signature failure"};
    for (int no_aki = 0; no_aki <= 1; no_aki++) {
        mk_no_aki = no_aki;
        X509 *inter = mk_cert(ik, NULL, "forged intermediate", lookalike, fake_root_key, t - 86400,
                              t + 86400, "critical,CA:TRUE,pathlen:0", "critical,keyCertSign");
        mk_no_aki = false;
        X509 *leaf = mk_cert(lk, NULL, "i-forged-enc0", inter, ik, t - 3600, t + 3600,
                             "critical,CA:FALSE", "critical,digitalSignature");
        blob idr = der_of(inter), ld = der_of(leaf);
        const uint8_t *bundle[2] = {aws_der, idr.p};
        size_t bundle_len[2] = {aws_len, idr.n};
        r.f.cabundle = bundle;
        r.f.cabundle_len = bundle_len;
        r.f.n_cabundle = 2;
        r.f.certificate = ld.p;
        r.f.certificate_len = ld.n;
        blob forged = sign_fields(&r.f, lk);
        char err[256];
        assert_int_equal(verify_at_doc(&forged, err), ATTEST_ERR_CHAIN);
        if (!strstr(err, want[no_aki]))
            fail_msg("no_aki=%d: %s", no_aki, err);
        /* the same chain under the look-alike's own bytes passes: the refusal was the key */
        blob lr = der_of(lookalike);
        bundle[0] = lr.p;
        bundle_len[0] = lr.n;
        blob other = sign_fields(&r.f, lk);
        attest_options o = {.at = ATTEST_AT_DOC, .root_der = lr.p, .root_der_len = lr.n};
        assert_int_equal(verify_opt(&other, &o, err), ATTEST_OK);
        free(other.p);
        blob_free_ossl(&lr);
        free(forged.p);
        blob_free_ossl(&idr);
        blob_free_ossl(&ld);
        X509_free(inter);
        X509_free(leaf);
    }
    X509_free(lookalike);
    X509_free(aws);
    EVP_PKEY_free(fake_root_key);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(lk);
    real_free(&r);
}

/* Attack: the genuine AWS chain, copied from a real document, around a payload with the
 * attacker's own nonce and key, signed by the attacker: the COSE signature refuses. */
static void test_real_chain_other_signer(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    uint8_t my_nonce[16], my_key[32];
    memset(my_nonce, 0x42, sizeof my_nonce);
    memset(my_key, 0x24, sizeof my_key);
    r.f.nonce = my_nonce;
    r.f.nonce_len = sizeof my_nonce;
    r.f.public_key = my_key;
    r.f.public_key_len = sizeof my_key;
    EVP_PKEY *k = key_on("P-384");
    blob forged = sign_fields(&r.f, k);
    char err[256];
    assert_int_equal(verify_at_doc(&forged, err), ATTEST_ERR_SIGNATURE);
    assert_string_equal(attest_check_name(ATTEST_ERR_SIGNATURE), "signature");
    free(forged.p);
    EVP_PKEY_free(k);
    real_free(&r);
}

/* The bundle must be the leaf's path in order, nothing more: the real certificates
 * reordered, or with an unrelated CA added, are refused even though OpenSSL could
 * build a path from them. (The payload changed, so these are re-signed by another key:
 * the chain check comes first.) */
static void test_bundle_order_and_extras(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    EVP_PKEY *k = key_on("P-384");
    char err[256];
    const uint8_t *b2[ATTEST_MAX_CABUNDLE];
    size_t l2[ATTEST_MAX_CABUNDLE];
    memcpy(b2, r.bundle, sizeof b2);
    memcpy(l2, r.bundle_len, sizeof l2);
    /* swap cabundle[1] and cabundle[3] */
    b2[1] = r.bundle[3], l2[1] = r.bundle_len[3];
    b2[3] = r.bundle[1], l2[3] = r.bundle_len[1];
    r.f.cabundle = b2;
    r.f.cabundle_len = l2;
    blob swapped = sign_fields(&r.f, k);
    assert_int_equal(verify_at_doc(&swapped, err), ATTEST_ERR_CHAIN);
    assert_string_equal(err, "cabundle is not the signing certificate's path to the root, in order");
    /* an unrelated CA appended */
    time_t t = OPENSECRET_TS_S;
    X509 *other = mk_cert(k, NULL, "unrelated CA", NULL, NULL, t - 86400, t + 86400, "critical,CA:TRUE",
                          "critical,keyCertSign");
    blob od = der_of(other);
    memcpy(b2, r.bundle, sizeof b2);
    memcpy(l2, r.bundle_len, sizeof l2);
    b2[4] = od.p, l2[4] = od.n;
    r.f.n_cabundle = 5;
    blob extra = sign_fields(&r.f, k);
    assert_int_equal(verify_at_doc(&extra, err), ATTEST_ERR_CHAIN);
    /* the leaf's issuer (cabundle[3]) left out: no path */
    r.f.n_cabundle = 3;
    blob shortb = sign_fields(&r.f, k);
    assert_int_equal(verify_at_doc(&shortb, err), ATTEST_ERR_CHAIN);
    free(swapped.p);
    free(extra.p);
    free(shortb.p);
    blob_free_ossl(&od);
    X509_free(other);
    EVP_PKEY_free(k);
    real_free(&r);
}

/* A chain of the caller's own root whose leaf is P-256, or a CA, or not for signatures. */
static void test_leaf_rules(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    time_t t = OPENSECRET_TS_S;
    EVP_PKEY *rk = key_on("P-384"), *p256 = key_on("P-256"), *lk = key_on("P-384");
    X509 *root = mk_cert(rk, NULL, "test root", NULL, NULL, t - 86400, t + 86400, "critical,CA:TRUE",
                         "critical,keyCertSign");
    blob rd = der_of(root);
    attest_options o = {.at = ATTEST_AT_DOC, .root_der = rd.p, .root_der_len = rd.n};
    struct {
        EVP_PKEY *key;
        const char *bc, *ku;
        attest_err want;
    } cases[] = {
        {lk, "critical,CA:FALSE", "critical,digitalSignature", ATTEST_OK},
        {p256, "critical,CA:FALSE", "critical,digitalSignature", ATTEST_ERR_LEAF_KEY},
        {lk, "critical,CA:TRUE", "critical,digitalSignature,keyCertSign", ATTEST_ERR_CHAIN},
        {lk, "critical,CA:FALSE", "critical,keyEncipherment", ATTEST_ERR_CHAIN},
    };
    const uint8_t *bundle[1] = {rd.p};
    size_t bundle_len[1] = {rd.n};
    r.f.cabundle = bundle;
    r.f.cabundle_len = bundle_len;
    r.f.n_cabundle = 1;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        X509 *leaf = mk_cert(cases[i].key, NULL, "leaf", root, rk, t - 3600, t + 3600, cases[i].bc,
                             cases[i].ku);
        blob ld = der_of(leaf);
        r.f.certificate = ld.p;
        r.f.certificate_len = ld.n;
        /* the P-256 leaf cannot sign ES384: sign with the P-384 key, the key check comes first */
        blob doc = sign_fields(&r.f, cases[i].key == p256 ? lk : cases[i].key);
        char err[256];
        attest_err e = verify_opt(&doc, &o, err);
        if (e != cases[i].want)
            fail_msg("case %zu: %s: %s", i, attest_check_name(e), err);
        free(doc.p);
        blob_free_ossl(&ld);
        X509_free(leaf);
    }
    blob_free_ossl(&rd);
    X509_free(root);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(lk);
    real_free(&r);
}

/* ---- the policy ---------------------------------------------------------------------------- */

/* Each binding mismatch has its own error, and a matching expectation passes. */
static void test_binding_mismatches(void **state)
{
    (void)state;
    blob os = load(OPENSECRET), tf = load(TINFOIL);
    attest_doc *d = new_doc();
    char err[256];
    attest_options base = {.at = ATTEST_AT_DOC};
    assert_int_equal(attest_verify(os.p, os.n, &base, d, err, sizeof err), ATTEST_OK);
    uint8_t nonce[ATTEST_MAX_FIELD_LEN], pk[ATTEST_MAX_FIELD_LEN];
    memcpy(nonce, d->nonce, d->nonce_len);
    memcpy(pk, d->public_key, d->public_key_len);

    attest_options o = base;
    o.nonce = nonce, o.nonce_len = d->nonce_len;
    o.public_key = pk, o.public_key_len = d->public_key_len;
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_OK);

    /* a replayed document: another nonce */
    nonce[d->nonce_len - 1] ^= 1;
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_ERR_NONCE);
    assert_string_equal(err, "nonce differs from the expected value");
    nonce[d->nonce_len - 1] ^= 1;
    o.nonce_len = d->nonce_len - 1; /* a prefix is not the nonce */
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_ERR_NONCE);
    o.nonce_len = d->nonce_len;
    /* a document without a nonce */
    assert_int_equal(verify_opt(&tf, &o, err), ATTEST_ERR_NONCE);
    assert_string_equal(err, "the document has no nonce");

    /* another enclave's key */
    pk[0] ^= 0x80;
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_ERR_PUBLIC_KEY);
    assert_string_equal(err, "public_key differs from the expected value");
    pk[0] ^= 0x80;
    attest_options o2 = base;
    o2.public_key = pk, o2.public_key_len = 32;
    assert_int_equal(verify_opt(&tf, &o2, err), ATTEST_ERR_PUBLIC_KEY);
    assert_string_equal(err, "the document has no public_key");

    /* veil's statement is absent from both real documents */
    o.user_data = (const uint8_t *)ATTEST_USER_DATA;
    o.user_data_len = strlen(ATTEST_USER_DATA);
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_ERR_USER_DATA);
    assert_string_equal(err, "the document has no user_data");

    free(d);
    free(os.p);
    free(tf.p);
}

/* Expected PCRs from nitro-cli's measurements file: equal passes, one changed bit, a
 * missing index or another length fails with ATTEST_ERR_PCR. */
static void test_pcr_expectations(void **state)
{
    (void)state;
    blob os = load(OPENSECRET);
    attest_pcr pcrs[ATTEST_MAX_PCRS];
    size_t n;
    char err[256];
    assert_int_equal(attest_measurements_load(FIX "measurements/opensecret-sdk.json", pcrs, &n, err,
                                              sizeof err), 0);
    assert_int_equal(n, 3);
    attest_options o = {.at = ATTEST_AT_DOC, .pcrs = pcrs, .n_pcrs = n};
    assert_int_equal(verify_opt(&os, &o, err), ATTEST_OK);
    for (size_t i = 0; i < n; i++) {
        pcrs[i].value[47] ^= 1;
        assert_int_equal(verify_opt(&os, &o, err), ATTEST_ERR_PCR);
        char want[64];
        snprintf(want, sizeof want, "PCR%u differs from the expected value", pcrs[i].index);
        assert_string_equal(err, want);
        pcrs[i].value[47] ^= 1;
    }
    attest_pcr extra[1] = {{.index = 16, .len = 48}};
    attest_options o2 = {.at = ATTEST_AT_DOC, .pcrs = extra, .n_pcrs = 1};
    assert_int_equal(verify_opt(&os, &o2, err), ATTEST_ERR_PCR);
    assert_string_equal(err, "PCR16 is not in the document");
    /* PCR5 is 48 zero bytes; 32 zero bytes is another value */
    attest_pcr shorter[1] = {{.index = 5, .len = 32}};
    o2.pcrs = shorter;
    assert_int_equal(verify_opt(&os, &o2, err), ATTEST_ERR_PCR);
    shorter[0].len = 48;
    assert_int_equal(verify_opt(&os, &o2, err), ATTEST_OK);
    free(os.p);
}

/* Freshness: a document older than max age (default 300 s) or more than 60 s in the
 * future of the check time is stale; inside those bounds it passes. */
static void test_freshness(void **state)
{
    (void)state;
    blob b = load(OPENSECRET);
    char err[256];
    attest_options o = {.at = ATTEST_AT_TIME};
    struct {
        int64_t at;
        long max_age;
        attest_err want;
    } cases[] = {
        {OPENSECRET_TS_S + 299, 0, ATTEST_OK},
        {OPENSECRET_TS_S + 301, 0, ATTEST_ERR_STALE}, /* a replayed old document */
        {OPENSECRET_TS_S + 600, 1000, ATTEST_OK},
        {OPENSECRET_TS_S + 600, 500, ATTEST_ERR_STALE},
        {OPENSECRET_TS_S + 3600, ATTEST_MAX_AGE_UNLIMITED, ATTEST_OK},
        {OPENSECRET_TS_S - 59, 0, ATTEST_OK},
        {OPENSECRET_TS_S - 62, 0, ATTEST_ERR_STALE}, /* from the future */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        o.at_unix = cases[i].at;
        o.max_age_s = cases[i].max_age;
        attest_err e = verify_opt(&b, &o, err);
        if (e != cases[i].want)
            fail_msg("case %zu: %s: %s", i, attest_check_name(e), err);
    }
    assert_string_equal(attest_check_name(ATTEST_ERR_STALE), "freshness");
    free(b.p);
}

static void test_bad_options(void **state)
{
    (void)state;
    blob b = load(OPENSECRET);
    char err[256];
    attest_pcr bad_index[1] = {{.index = 32, .len = 48}}, bad_len[1] = {{.index = 0, .len = 47}};
    attest_options cases[] = {
        {.at = ATTEST_AT_DOC, .pcrs = bad_index, .n_pcrs = 1},
        {.at = ATTEST_AT_DOC, .pcrs = bad_len, .n_pcrs = 1},
        {.at = ATTEST_AT_DOC, .n_pcrs = 1},
        {.at = ATTEST_AT_DOC, .max_age_s = -5},
        {.at = ATTEST_AT_DOC, .max_age_s = ATTEST_MAX_AGE_LIMIT_S + 1},
        {.at = ATTEST_AT_TIME, .at_unix = 0},
        {.at = (attest_time_mode)7},
        {.at = ATTEST_AT_DOC, .root_der = (const uint8_t *)"x", .root_der_len = 0},
        {.at = ATTEST_AT_DOC, .nonce = (const uint8_t *)"x", .nonce_len = ATTEST_MAX_FIELD_LEN + 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(verify_opt(&b, &cases[i], err), ATTEST_ERR_ARG);
    /* a root that is not a certificate */
    attest_options o = {.at = ATTEST_AT_DOC, .root_der = (const uint8_t *)"not DER", .root_der_len = 7};
    assert_int_equal(verify_opt(&b, &o, err), ATTEST_ERR_TRUST_ROOT);
    free(b.p);
}

/* ---- structure ---------------------------------------------------------------------------------- */

/* The real document's envelope, rebuilt with one rule broken at a time. */
static void test_envelope_rules(void **state)
{
    (void)state;
    real r;
    real_load(&r, OPENSECRET);
    const attest_span *pl = &r.pp.payload, *sg = &r.pp.signature;
    char err[256];
    attest_doc *d = new_doc();
    struct {
        const char *what;
        blob doc;
        attest_err want;
    } cases[] = {
        {"rebuilt as is", cose(-1, PROT_ES384, 4, "\xa0", 1, pl->p, pl->n, sg->p, sg->n), ATTEST_OK},
        {"tagged 18", cose(18, PROT_ES384, 4, "\xa0", 1, pl->p, pl->n, sg->p, sg->n), ATTEST_OK},
        {"tagged 98 (COSE_Sign)", cose(98, PROT_ES384, 4, "\xa0", 1, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_COSE},
        {"unprotected kid", cose(-1, PROT_ES384, 4, "\xa1\x04\x41\x01", 4, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_COSE},
        {"unprotected not a map", cose(-1, PROT_ES384, 4, "\x40", 1, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_COSE},
        {"ES256", cose(-1, (const uint8_t *)"\xa1\x01\x26", 3, "\xa0", 1, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_ALG},
        {"alg as text", cose(-1, (const uint8_t *)"\xa1\x01\x65" "ES384", 8, "\xa0", 1, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_ALG},
        {"alg + crit", cose(-1, (const uint8_t *)"\xa2\x01\x38\x22\x02\x81\x01", 7, "\xa0", 1, pl->p, pl->n,
                            sg->p, sg->n), ATTEST_ERR_ALG},
        {"empty protected", cose(-1, (const uint8_t *)"", 0, "\xa0", 1, pl->p, pl->n, sg->p, sg->n),
         ATTEST_ERR_ALG},
        {"signature 95 bytes", cose(-1, PROT_ES384, 4, "\xa0", 1, pl->p, pl->n, sg->p, 95),
         ATTEST_ERR_SIGNATURE},
        {"signature as DER length 104", cose(-1, PROT_ES384, 4, "\xa0", 1, pl->p, pl->n, r.raw.p, 104),
         ATTEST_ERR_SIGNATURE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        attest_err e = attest_verify(cases[i].doc.p, cases[i].doc.n, &(attest_options){.at = ATTEST_AT_DOC},
                                     NULL, err, sizeof err);
        if (e != cases[i].want)
            fail_msg("%s: %s: %s", cases[i].what, attest_check_name(e), err);
        free(cases[i].doc.p);
    }

    /* bytes-level edits of the original */
    blob b = {malloc(r.raw.n + 16), 0};
    assert_non_null(b.p);
    memcpy(b.p, r.raw.p, r.raw.n);
    b.n = r.raw.n + 1;
    b.p[r.raw.n] = 0x00; /* trailing byte */
    assert_int_equal(attest_doc_parse(b.p, b.n, d, NULL, err, sizeof err), ATTEST_ERR_COSE);
    assert_string_equal(err, "1 bytes after the COSE_Sign1 array");
    assert_int_equal(attest_doc_parse(b.p, r.raw.n - 1, d, NULL, err, sizeof err), ATTEST_ERR_COSE);
    b.p[0] = 0x9f; /* indefinite-length array */
    assert_int_equal(attest_doc_parse(b.p, r.raw.n, d, NULL, err, sizeof err), ATTEST_ERR_COSE);
    assert_int_equal(attest_doc_parse(b.p, 0, d, NULL, err, sizeof err), ATTEST_ERR_TOO_LARGE);
    free(b.p);

    /* an overlong head: the payload's length in 4 bytes instead of 2 */
    blob ov = {malloc(r.raw.n + 2), 0};
    assert_non_null(ov.p);
    size_t poff = (size_t)(r.pp.payload.p - r.raw.p); /* the payload head is 3 bytes before */
    assert_int_equal(r.raw.p[poff - 3], 0x59);
    memcpy(ov.p, r.raw.p, poff - 3);
    uint8_t *w = ov.p + poff - 3;
    *w++ = 0x5a, *w++ = 0, *w++ = 0, *w++ = (uint8_t)(pl->n >> 8), *w++ = (uint8_t)pl->n;
    memcpy(w, r.raw.p + poff, r.raw.n - poff);
    ov.n = r.raw.n + 2;
    assert_int_equal(attest_doc_parse(ov.p, ov.n, d, NULL, err, sizeof err), ATTEST_ERR_COSE);
    free(ov.p);

    /* over the size bound, before any parsing */
    uint8_t *big = calloc(1, ATTEST_MAX_DOC_LEN + 1);
    assert_non_null(big);
    assert_int_equal(attest_verify(big, ATTEST_MAX_DOC_LEN + 1, NULL, NULL, err, sizeof err),
                     ATTEST_ERR_TOO_LARGE);
    assert_string_equal(attest_check_name(ATTEST_ERR_TOO_LARGE), "size");
    free(big);
    free(d);
    real_free(&r);
}

typedef void (*mutate_fn)(attest_doc_fields *f, vbuf *extra, uint8_t *scratch);

static uint8_t zeros[2048];
static attest_pcr pcr_scratch[40];

static void m_none(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)f, (void)x, (void)s; }
static void m_module_empty(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->module_id = ""; }
static void m_module_ctrl(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->module_id = "i-0\nforged"; }
static void m_module_long(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x;
    memset(s, 'a', ATTEST_MODULE_ID_MAX + 1);
    s[ATTEST_MODULE_ID_MAX + 1] = 0;
    f->module_id = (const char *)s;
}
static void m_digest(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->digest = "SHA256"; }
static void m_timestamp0(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->timestamp_ms = 0; }
static void m_no_pcrs(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->n_pcrs = 0; }
static void m_pcr_33(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    for (unsigned i = 0; i < 33; i++)
        pcr_scratch[i] = (attest_pcr){.index = i % 32, .len = 48};
    f->pcrs = pcr_scratch;
    f->n_pcrs = 33;
}
static void m_pcr_index32(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    pcr_scratch[0] = (attest_pcr){.index = 32, .len = 48};
    f->pcrs = pcr_scratch;
    f->n_pcrs = 1;
}
static void m_pcr_47(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    pcr_scratch[0] = (attest_pcr){.index = 0, .len = 47};
    f->pcrs = pcr_scratch;
    f->n_pcrs = 1;
}
static void m_pcr_dup(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    pcr_scratch[0] = (attest_pcr){.index = 3, .len = 48};
    pcr_scratch[1] = (attest_pcr){.index = 3, .len = 48};
    f->pcrs = pcr_scratch;
    f->n_pcrs = 2;
}
static void m_pcr_32_and_64(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    pcr_scratch[0] = (attest_pcr){.index = 0, .len = 32};
    pcr_scratch[1] = (attest_pcr){.index = 31, .len = 64};
    f->pcrs = pcr_scratch;
    f->n_pcrs = 2;
}
static void m_cert_empty(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->certificate_len = 0; }
static void m_cert_1025(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->certificate = zeros, f->certificate_len = 1025; }
static void m_bundle_empty(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->n_cabundle = 0; }
static void m_bundle_9(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    static const uint8_t *b[9];
    static size_t l[9];
    for (int i = 0; i < 9; i++)
        b[i] = zeros, l[i] = 100;
    f->cabundle = b, f->cabundle_len = l, f->n_cabundle = 9;
}
static void m_pk_empty(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->public_key = zeros, f->public_key_len = 0; }
static void m_pk_1025(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->public_key = zeros, f->public_key_len = 1025; }
static void m_nonce_1025(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)x, (void)s; f->nonce = zeros, f->nonce_len = 1025; }
static void m_fields_1024(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    f->nonce = zeros, f->nonce_len = 1024;
    f->user_data = zeros, f->user_data_len = 1024;
    f->public_key = zeros, f->public_key_len = 1024;
}
static void m_empty_nonce_ud(attest_doc_fields *f, vbuf *x, uint8_t *s)
{
    (void)x, (void)s;
    f->nonce = zeros, f->nonce_len = 0;
    f->user_data = zeros, f->user_data_len = 0;
}
/* extra entries appended to the 9-entry map (its head is bumped to match) */
static void m_dup_nonce(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)f, (void)s; vbuf_append(x, "\x65nonce\xf6", 7); }
static void m_unknown_key(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)f, (void)s; vbuf_append(x, "\x65nonse\xf6", 7); }
static void m_int_key(attest_doc_fields *f, vbuf *x, uint8_t *s) { (void)f, (void)s; vbuf_append(x, "\x01\xf6", 2); }

#define TRAILING ((mutate_fn)1) /* marker: one byte after the map */

/* Payloads made by the encoder from the real fields with one rule broken, signed by a
 * test key: the structural checks refuse them whatever the signature says. */
static void test_payload_rules(void **state)
{
    (void)state;
    struct {
        const char *what;
        mutate_fn m;
        attest_err want;
    } cases[] = {
        {"as is", m_none, ATTEST_OK},
        {"module_id empty", m_module_empty, ATTEST_ERR_FIELD},
        {"module_id with a newline", m_module_ctrl, ATTEST_ERR_FIELD},
        {"module_id too long", m_module_long, ATTEST_ERR_FIELD},
        {"digest SHA256", m_digest, ATTEST_ERR_FIELD},
        {"timestamp 0", m_timestamp0, ATTEST_ERR_FIELD},
        {"pcrs empty", m_no_pcrs, ATTEST_ERR_FIELD},
        {"33 pcrs", m_pcr_33, ATTEST_ERR_FIELD},
        {"PCR32", m_pcr_index32, ATTEST_ERR_FIELD},
        {"a 47-byte PCR", m_pcr_47, ATTEST_ERR_FIELD},
        {"PCR3 twice", m_pcr_dup, ATTEST_ERR_PAYLOAD},
        {"32- and 64-byte PCRs", m_pcr_32_and_64, ATTEST_OK},
        {"certificate empty", m_cert_empty, ATTEST_ERR_FIELD},
        {"certificate 1025 bytes", m_cert_1025, ATTEST_ERR_FIELD},
        {"cabundle empty", m_bundle_empty, ATTEST_ERR_FIELD},
        {"cabundle of 9", m_bundle_9, ATTEST_ERR_FIELD},
        {"public_key empty", m_pk_empty, ATTEST_ERR_FIELD},
        {"public_key 1025 bytes", m_pk_1025, ATTEST_ERR_FIELD},
        {"nonce 1025 bytes", m_nonce_1025, ATTEST_ERR_FIELD},
        {"fields of 1024 bytes", m_fields_1024, ATTEST_OK},
        {"empty nonce and user_data", m_empty_nonce_ud, ATTEST_OK},
        {"nonce twice", m_dup_nonce, ATTEST_ERR_PAYLOAD},
        {"an unknown key", m_unknown_key, ATTEST_ERR_PAYLOAD},
        {"an integer key", m_int_key, ATTEST_ERR_PAYLOAD},
        {"a trailing byte", TRAILING, ATTEST_ERR_PAYLOAD},
    };
    real r;
    real_load(&r, OPENSECRET);
    EVP_PKEY *k = key_on("P-384");
    attest_doc *d = new_doc();
    uint8_t scratch[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        attest_doc_fields f = r.f;
        vbuf extra = VBUF_INIT, payload = VBUF_INIT, doc = VBUF_INIT;
        if (cases[i].m != TRAILING)
            cases[i].m(&f, &extra, scratch);
        assert_int_equal(attest_doc_encode_payload(&f, &payload), 0);
        if (cases[i].m == TRAILING) {
            vbuf_append(&payload, "\x00", 1);
        } else if (extra.len) {
            assert_int_equal(payload.data[0], 0xa9);
            payload.data[0] = 0xaa;
            vbuf_append(&payload, extra.data, extra.len);
        }
        assert_int_equal(attest_cose_sign(payload.data, payload.len, k, &doc), 0);
        char err[256];
        attest_err e = attest_doc_parse(doc.data, doc.len, d, NULL, err, sizeof err);
        if (e != cases[i].want)
            fail_msg("%s: %s: %s", cases[i].what, attest_check_name(e), err);
        vbuf_free(&extra);
        vbuf_free(&payload);
        vbuf_free(&doc);
    }
    /* a missing required field: drop module_id from the map */
    vbuf payload = VBUF_INIT, doc = VBUF_INIT;
    assert_int_equal(attest_doc_encode_payload(&r.f, &payload), 0);
    size_t mlen = strlen(r.d->module_id);
    assert_true(mlen >= 24 && mlen < 256); /* its text head is 2 bytes */
    size_t skip = 1 + 10 + 2 + mlen; /* the map head, "module_id" and its value */
    payload.data[skip - 1] = 0xa8;      /* a new head for the 8 entries left */
    assert_int_equal(attest_cose_sign(payload.data + skip - 1, payload.len - skip + 1, k, &doc), 0);
    char err[256];
    assert_int_equal(attest_doc_parse(doc.data, doc.len, d, NULL, err, sizeof err), ATTEST_ERR_FIELD);
    assert_string_equal(err, "module_id is missing");
    vbuf_free(&payload);
    vbuf_free(&doc);
    free(d);
    EVP_PKEY_free(k);
    real_free(&r);
}

/* ---- helpers for the CLI --------------------------------------------------------------------- */

static void test_json_output(void **state)
{
    (void)state;
    blob b = load(OPENSECRET);
    attest_doc *d = new_doc();
    char err[256];
    attest_options o = {.at = ATTEST_AT_DOC};
    assert_int_equal(attest_verify(b.p, b.n, &o, d, err, sizeof err), ATTEST_OK);
    json_t *j = attest_doc_to_json(d);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "module_id")),
                        "i-06c79bf817127030a-enc0192d3d4945e0432");
    assert_true(json_is_false(json_object_get(j, "simulated")));
    assert_int_equal(json_integer_value(json_object_get(j, "timestamp")), 1730141656206);
    assert_string_equal(json_string_value(json_object_get(j, "time")), "2024-10-28T18:54:16Z");
    assert_int_equal(json_object_size(json_object_get(j, "pcrs")), 16);
    assert_int_equal(strlen(json_string_value(json_object_get(json_object_get(j, "pcrs"), "0"))), 96);
    assert_string_equal(json_string_value(json_object_get(j, "public_key")),
                        "f58ab2958d71f7df2bcf475d881cd880b8c467dc054a81209e0474e0e4aee50f");
    assert_true(json_is_null(json_object_get(j, "user_data")));
    assert_null(json_object_get(j, "user_data_text"));
    assert_int_equal(json_array_size(json_object_get(j, "chain")), 5);
    assert_string_equal(json_string_value(json_object_get(j, "leaf_not_after")), "2024-10-28T21:48:18Z");
    assert_string_equal(json_string_value(json_object_get(j, "checked_at")), "2024-10-28T18:54:16Z");
    json_decref(j);
    free(d);
    free(b.p);
}

static void test_pcr_argument(void **state)
{
    (void)state;
    attest_pcr p;
    char err[256], arg[256];
    char hex96[97];
    memset(hex96, 'a', 96);
    hex96[96] = 0;
    snprintf(arg, sizeof arg, "2=%s", hex96);
    assert_int_equal(attest_pcr_parse(arg, &p, err, sizeof err), 0);
    assert_int_equal(p.index, 2);
    assert_int_equal(p.len, 48);
    assert_int_equal(p.value[47], 0xaa);
    snprintf(arg, sizeof arg, "31=%.64s", hex96);
    assert_int_equal(attest_pcr_parse(arg, &p, err, sizeof err), 0);
    assert_int_equal(p.len, 32);
    const char *bad[] = {"32=", "=aa", "x=aa", "2", "2=abc", "002=aa", "-1=aa"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(attest_pcr_parse(bad[i], &p, err, sizeof err), -1);
    snprintf(arg, sizeof arg, "32=%s", hex96);
    assert_int_equal(attest_pcr_parse(arg, &p, err, sizeof err), -1);
    snprintf(arg, sizeof arg, "1=%.95sg", hex96);
    assert_int_equal(attest_pcr_parse(arg, &p, err, sizeof err), -1);
}

static void test_root_files(void **state)
{
    (void)state;
    char dir[] = "/tmp/veil-attest-rootXXXXXX", path[512], err[256];
    assert_non_null(mkdtemp(dir));
    uint8_t *der;
    size_t len;
    const uint8_t *pinned;
    size_t pinned_len;
    assert_int_equal(attest_pinned_root(&pinned, &pinned_len), 0);
    /* DER */
    snprintf(path, sizeof path, "%s/root.der", dir);
    FILE *f = fopen(path, "wb");
    fwrite(pinned, 1, pinned_len, f);
    fclose(f);
    assert_int_equal(attest_root_load(path, &der, &len, err, sizeof err), ATTEST_OK);
    assert_int_equal(len, pinned_len);
    free(der);
    /* two PEM certificates */
    blob pem = load(FIX "aws_nitro_root_g1.pem");
    snprintf(path, sizeof path, "%s/two.pem", dir);
    f = fopen(path, "wb");
    fwrite(pem.p, 1, pem.n, f);
    fputc('\n', f); /* the fixture has no final newline */
    fwrite(pem.p, 1, pem.n, f);
    fclose(f);
    assert_int_equal(attest_root_load(path, &der, &len, err, sizeof err), ATTEST_ERR_TRUST_ROOT);
    assert_string_equal(err, "the root file holds more than one certificate");
    assert_null(der);
    unlink(path);
    /* garbage, and nothing */
    snprintf(path, sizeof path, "%s/junk", dir);
    f = fopen(path, "wb");
    fputs("hello", f);
    fclose(f);
    assert_int_equal(attest_root_load(path, &der, &len, err, sizeof err), ATTEST_ERR_TRUST_ROOT);
    unlink(path);
    assert_int_equal(attest_root_load(path, &der, &len, err, sizeof err), ATTEST_ERR_TRUST_ROOT);
    snprintf(path, sizeof path, "%s/root.der", dir);
    unlink(path);
    rmdir(dir);
    free(pem.p);
}

/* Every error has a distinct check name and a description. */
static void test_error_names(void **state)
{
    (void)state;
    for (int a = ATTEST_OK; a <= ATTEST_ERR_PCR; a++) {
        assert_string_not_equal(attest_check_name((attest_err)a), "unknown");
        assert_string_not_equal(attest_strerror((attest_err)a), "unknown error");
        for (int b = a + 1; b <= ATTEST_ERR_PCR; b++)
            assert_string_not_equal(attest_check_name((attest_err)a), attest_check_name((attest_err)b));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pinned_root_is_the_fixture),
        cmocka_unit_test(test_real_documents_verify_at_their_time),
        cmocka_unit_test(test_real_documents_fail_now),
        cmocka_unit_test(test_leaf_validity_edges),
        cmocka_unit_test(test_encoder_reproduces_real_payloads),
        cmocka_unit_test(test_every_byte_change_fails),
        cmocka_unit_test(test_forged_root_with_the_same_name),
        cmocka_unit_test(test_forged_intermediate_under_the_real_root),
        cmocka_unit_test(test_real_chain_other_signer),
        cmocka_unit_test(test_bundle_order_and_extras),
        cmocka_unit_test(test_leaf_rules),
        cmocka_unit_test(test_binding_mismatches),
        cmocka_unit_test(test_pcr_expectations),
        cmocka_unit_test(test_freshness),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_envelope_rules),
        cmocka_unit_test(test_payload_rules),
        cmocka_unit_test(test_json_output),
        cmocka_unit_test(test_pcr_argument),
        cmocka_unit_test(test_root_files),
        cmocka_unit_test(test_error_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

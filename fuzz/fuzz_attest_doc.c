/* libFuzzer target for attest/document (the attestation document decoder: COSE_Sign1
 * envelope, protected header, payload map and fields; no certificate is parsed and no
 * signature checked) and the NSM response decoders of attest/nsm.
 *
 * The first input byte picks the mode (style.md, aws-c-http's fuzz_*_correct/_random):
 *   0: the rest is a document, as is (random input);
 *   1: a valid document (made at start-up with a throwaway key, every field filled) is
 *      mutated by the rest, 3 bytes at a time: op, position, value;
 *   2: the rest is an NSM response, fed to both response decoders.
 * Contracts checked (trap on violation), besides "no crash":
 *   - a decoded document keeps every limit: module_id 1..128 printable ASCII, digest
 *     SHA384, timestamp > 0, 1..32 PCRs of 32/48/64 bytes, 1..8 cabundle entries and a
 *     certificate of 1..1024 bytes lying inside the input, a 96-byte signature,
 *     public_key 1..1024, user_data and nonce 0..1024;
 *   - a failure zeroes the output and names a known check;
 *   - the unmutated document decodes;
 *   - a decoded NSM response spans 1+ bytes inside the input.
 * Every input is copied into an exactly-sized heap buffer so ASan sees any over-read.
 *
 * Built and run by `make fuzz` (fuzz/fuzz.cmake).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "attest/document.h"
#include "attest/nsm.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

#define MAX_MUTATED_LEN (ATTEST_MAX_DOC_LEN + 64)

static uint8_t *valid;
static size_t valid_len;
static attest_doc *doc;

static void init(void)
{
    if (valid)
        return;
    doc = malloc(sizeof *doc);
    CHECK(doc);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    CHECK(k);
    static uint8_t cert[300], root[200], inter[250], pk[32], ud[17], nonce[24];
    memset(cert, 0x30, sizeof cert);
    memset(root, 0x31, sizeof root);
    memset(inter, 0x32, sizeof inter);
    memset(pk, 0x11, sizeof pk);
    memcpy(ud, "veil-transport-v1", sizeof ud);
    memset(nonce, 0x22, sizeof nonce);
    attest_pcr pcrs[4] = {{0, 48, {1}}, {1, 48, {2}}, {2, 32, {3}}, {31, 64, {4}}};
    const uint8_t *bundle[2] = {root, inter};
    const size_t bundle_len[2] = {sizeof root, sizeof inter};
    attest_doc_fields f = {
        .module_id = "i-0123456789abcdef0-enc0123456789abcdef",
        .timestamp_ms = 1730141656206ull,
        .pcrs = pcrs,
        .n_pcrs = 4,
        .certificate = cert,
        .certificate_len = sizeof cert,
        .cabundle = bundle,
        .cabundle_len = bundle_len,
        .n_cabundle = 2,
        .public_key = pk,
        .public_key_len = sizeof pk,
        .user_data = ud,
        .user_data_len = sizeof ud,
        .nonce = nonce,
        .nonce_len = sizeof nonce,
    };
    vbuf out = VBUF_INIT;
    CHECK(attest_doc_sign(&f, k, &out) == 0);
    valid = out.data;
    valid_len = out.len;
    EVP_PKEY_free(k);
}

static bool inside(const attest_span *s, const uint8_t *p, size_t n)
{
    return s->p >= p && s->n <= n && s->p + s->n <= p + n;
}

static attest_err check_parse(const uint8_t *p, size_t n)
{
    attest_parts pp;
    memset(doc, 0xa5, sizeof *doc);
    attest_err e = attest_doc_parse(p, n, doc, &pp, NULL, 0);
    CHECK(strcmp(attest_check_name(e), "unknown") != 0);
    if (e != ATTEST_OK) {
        CHECK(doc->timestamp_ms == 0 && doc->module_id[0] == '\0' && doc->pcr_present == 0);
        CHECK(pp.payload.p == NULL && pp.n_cabundle == 0);
        return e;
    }
    size_t ml = strlen(doc->module_id);
    CHECK(ml >= 1 && ml <= ATTEST_MODULE_ID_MAX);
    for (size_t i = 0; i < ml; i++)
        CHECK(doc->module_id[i] >= 0x20 && doc->module_id[i] <= 0x7e);
    CHECK(strcmp(doc->digest, ATTEST_DIGEST) == 0);
    CHECK(doc->timestamp_ms > 0);
    CHECK(doc->pcr_present != 0);
    for (unsigned i = 0; i < ATTEST_MAX_PCRS; i++)
        if (doc->pcr_present & 1u << i)
            CHECK(doc->pcr_len[i] == 32 || doc->pcr_len[i] == 48 || doc->pcr_len[i] == 64);
    CHECK(doc->n_cabundle >= 1 && doc->n_cabundle <= ATTEST_MAX_CABUNDLE && doc->n_cabundle == pp.n_cabundle);
    CHECK(doc->n_chain == 0);
    CHECK(inside(&pp.protected_hdr, p, n) && inside(&pp.payload, p, n) && inside(&pp.signature, p, n));
    CHECK(pp.signature.n == ATTEST_ES384_SIG_LEN);
    CHECK(inside(&pp.certificate, p, n) && pp.certificate.n >= 1 && pp.certificate.n <= ATTEST_MAX_CERT_LEN);
    for (size_t i = 0; i < pp.n_cabundle; i++)
        CHECK(inside(&pp.cabundle[i], p, n) && pp.cabundle[i].n >= 1 &&
              pp.cabundle[i].n <= ATTEST_MAX_CERT_LEN);
    CHECK(!doc->has_public_key || (doc->public_key_len >= 1 && doc->public_key_len <= ATTEST_MAX_FIELD_LEN));
    CHECK(!doc->has_user_data || doc->user_data_len <= ATTEST_MAX_FIELD_LEN);
    CHECK(!doc->has_nonce || doc->nonce_len <= ATTEST_MAX_FIELD_LEN);
    return e;
}

static void fuzz_random(const uint8_t *data, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    CHECK(p);
    memcpy(p, data, len);
    check_parse(p, len);
    free(p);
}

static void fuzz_mutated(const uint8_t *data, size_t len)
{
    uint8_t *buf = malloc(MAX_MUTATED_LEN);
    CHECK(buf);
    memcpy(buf, valid, valid_len);
    size_t n = valid_len;
    for (size_t i = 0; i + 2 < len; i += 3) {
        uint8_t op = data[i], v = data[i + 2];
        size_t pos = n ? (data[i + 1] * 257u + op) % n : 0;
        switch (op % 4) {
        case 0: /* overwrite */
            if (n)
                buf[pos] = v;
            break;
        case 1: /* insert */
            if (n < MAX_MUTATED_LEN) {
                memmove(buf + pos + 1, buf + pos, n - pos);
                buf[pos] = v;
                n++;
            }
            break;
        case 2: /* delete */
            if (n) {
                memmove(buf + pos, buf + pos + 1, n - pos - 1);
                n--;
            }
            break;
        default: /* flip one bit */
            if (n)
                buf[pos] ^= (uint8_t)(1u << (v % 8));
            break;
        }
    }
    uint8_t *p = malloc(n ? n : 1); /* exactly sized */
    CHECK(p);
    memcpy(p, buf, n);
    free(buf);
    attest_err e = check_parse(p, n);
    if (n == valid_len && memcmp(p, valid, n) == 0)
        CHECK(e == ATTEST_OK);
    free(p);
}

static void fuzz_nsm_response(const uint8_t *data, size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    CHECK(p);
    memcpy(p, data, len);
    attest_span s = {0};
    char err[128];
    if (nsm_decode_attestation(p, len, &s, err, sizeof err) == NSM_OK)
        CHECK(inside(&s, p, len) && s.n >= 1 && s.n <= ATTEST_MAX_DOC_LEN);
    if (nsm_decode_get_random(p, len, &s, err, sizeof err) == NSM_OK)
        CHECK(inside(&s, p, len) && s.n >= 1);
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    init();
    if (len == 0)
        return 0;
    switch (data[0] % 3) {
    case 0: fuzz_random(data + 1, len - 1); break;
    case 1: fuzz_mutated(data + 1, len - 1); break;
    default: fuzz_nsm_response(data + 1, len - 1); break;
    }
    return 0;
}

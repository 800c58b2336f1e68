/* trust — the attestation check before a seal. See trust.h. */
#include "cli/trust.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "attest/verify.h"
#include "cli/cli.h"
#include "cli/term.h"
#include "cli/userkeys.h"
#include "common/base64.h"
#include "common/hex.h"
#include "enclave/protocol.h"

#define INFO_PATH "/api/v1/chat/enclave/info"

int cli_trust_load(cli_trust *t, const char *verb, bool verify, char *err, size_t errlen)
{
    cli_config cfg;
    memset(t, 0, sizeof *t);
    t->verb = verb;
    t->verify = verify;
    if (!verify) {
        fprintf(stderr, "veil %s: warning: --no-attestation: the enclave's key is not verified, so the server "
                        "could hand you a key of its own and read this conversation\n", verb);
        return 0;
    }
    int rc = cli_config_load(&cfg, err, errlen);
    if (rc == 0) {
        memcpy(t->pcrs, cfg.pcrs, sizeof t->pcrs);
        t->n_pcrs = cfg.n_pcrs;
        memcpy(t->root_der, cfg.root_der, cfg.root_der_len);
        t->root_der_len = cfg.root_der_len;
    }
    OPENSSL_cleanse(&cfg, sizeof cfg);
    return rc;
}

/* The original's flow, for --no-attestation: the key as the server gives it. */
static int unverified_key(vclient *c, uint8_t pub[32], char *err, size_t errlen)
{
    int status;
    json_t *r = NULL;
    char buf[CLI_ERR_MAX];
    if (vclient_call(c, "GET", INFO_PATH, NULL, &status, &r, err, errlen) < 0)
        return -1;
    const char *pk = json_string_value(json_object_get(r, PF_ENCLAVE_PUBLIC_KEY));
    int rc = -1;
    if (status != 200)
        snprintf(err, errlen, "enclave key: %s", api_detail(r, status, buf, sizeof buf));
    else if (!pk || hex_decode_exact(pk, strlen(pk), pub, 32) < 0)
        snprintf(err, errlen, "the server sent a malformed enclave key");
    else
        rc = 0;
    json_decref(r);
    return rc;
}

static void note_root(cli_trust *t)
{
    if (!t->root_der_len || t->root_noted)
        return;
    char name[512];
    cli_trust_root_name(t->root_der, t->root_der_len, name, sizeof name);
    term_fprintf(stderr, "veil %s: note: verifying the enclave against %s from `veil login --attestation-root`, "
                         "not the pinned AWS Nitro root: a simulated NSM, not a Nitro Enclave\n",
                 t->verb, name);
    t->root_noted = true;
}

/* attest_verify with veil's policy: this nonce, this key, veil's statement, the stored
 * PCRs. nonce NULL (a 409's offered document, never sealed to): any nonce, any age. */
static int verify_doc(cli_trust *t, const char *b64, const uint8_t nonce[CLI_ATTEST_NONCE_LEN],
                      const uint8_t pub[32], char *err, size_t errlen)
{
    size_t n = strlen(b64);
    uint8_t *doc = malloc(n ? n : 1); /* base64 never decodes to more than its length */
    if (!doc) {
        snprintf(err, errlen, "attestation: memory: out of memory");
        return -1;
    }
    long len = base64_decode(B64_STD, b64, n, doc, n);
    int rc = -1;
    if (len <= 0) {
        snprintf(err, errlen, "attestation: encoding: the server's attestation is not base64");
        goto out;
    }
    attest_options opt = {
        .root_der = t->root_der_len ? t->root_der : NULL, .root_der_len = t->root_der_len,
        .at = ATTEST_AT_NOW, .max_age_s = nonce ? ATTEST_DEFAULT_MAX_AGE_S : ATTEST_MAX_AGE_UNLIMITED,
        .nonce = nonce, .nonce_len = nonce ? CLI_ATTEST_NONCE_LEN : 0, .public_key = pub, .public_key_len = 32,
        .user_data = (const uint8_t *)ATTEST_USER_DATA, .user_data_len = strlen(ATTEST_USER_DATA),
        .pcrs = t->pcrs, .n_pcrs = t->n_pcrs,
    };
    char why[512];
    note_root(t);
    attest_err e = attest_verify(doc, (size_t)len, &opt, NULL, why, sizeof why);
    if (e != ATTEST_OK)
        snprintf(err, errlen, "attestation: %s: %s", attest_check_name(e), why);
    else
        rc = 0;
out:
    free(doc);
    return rc;
}

int cli_trust_enclave_key(cli_trust *t, vclient *c, uint8_t pub[32], char *err, size_t errlen)
{
    if (!t->verify)
        return unverified_key(c, pub, err, errlen);
    if (!t->n_pcrs) { /* asked here, not at start: a server that is down is named first */
        snprintf(err, errlen, "no enclave measurements stored, so the enclave cannot be verified: run `veil login "
                              "--measurements FILE` with the measurements the operator published (the JSON "
                              "`nitro-cli build-enclave` prints), or pass --no-attestation to chat unverified");
        return -1;
    }
    uint8_t nonce[CLI_ATTEST_NONCE_LEN], cand[32];
    char nonce_hex[2 * CLI_ATTEST_NONCE_LEN + 1], path[sizeof INFO_PATH + sizeof nonce_hex + 8];
    char buf[CLI_ERR_MAX];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
        snprintf(err, errlen, "attestation: nonce: no randomness for a nonce");
        return -1;
    }
    hex_encode(nonce, sizeof nonce, nonce_hex);
    snprintf(path, sizeof path, "%s?nonce=%s", INFO_PATH, nonce_hex);
    int status;
    json_t *r = NULL;
    if (vclient_call(c, "GET", path, NULL, &status, &r, err, errlen) < 0)
        return -1;
    const char *pk = json_string_value(json_object_get(r, PF_ENCLAVE_PUBLIC_KEY));
    const char *doc = json_string_value(json_object_get(r, PF_ATTESTATION));
    int rc = -1;
    if (status != 200)
        snprintf(err, errlen, "attestation: unavailable: %s", api_detail(r, status, buf, sizeof buf));
    else if (!pk || hex_decode_exact(pk, strlen(pk), cand, 32) < 0)
        snprintf(err, errlen, "the server sent a malformed enclave key");
    else if (!doc)
        snprintf(err, errlen, "attestation: missing: the server sent the enclave key without an attestation "
                              "document (an enclave without an NSM?)");
    else if (verify_doc(t, doc, nonce, cand, err, errlen) == 0) {
        memcpy(pub, cand, 32);
        rc = 0;
    }
    json_decref(r);
    return rc;
}

int cli_trust_check_offered(cli_trust *t, const json_t *body, char *err, size_t errlen)
{
    const char *pk = json_string_value(json_object_get(body, PF_ENCLAVE_PUBLIC_KEY));
    const json_t *doc = json_object_get(body, PF_ATTESTATION);
    uint8_t pub[32];
    if (!pk || hex_decode_exact(pk, strlen(pk), pub, 32) < 0) {
        snprintf(err, errlen, "the server answered 409 without a well-formed enclave key");
        return -1;
    }
    if (!t->verify)
        return 0;
    if (!json_is_string(doc)) {
        snprintf(err, errlen, "attestation: missing: the server offered another enclave key without an attestation "
                              "document (an enclave without an NSM?)");
        return -1;
    }
    return verify_doc(t, json_string_value(doc), NULL, pub, err, errlen);
}

void cli_trust_root_name(const uint8_t *der, size_t len, char *out, size_t n)
{
    uint8_t md[32];
    char fp[65], subject[256] = "?";
    const uint8_t *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    BIO *bio = BIO_new(BIO_s_mem());
    if (x && bio && X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        int got = BIO_read(bio, subject, sizeof subject - 1);
        subject[got > 0 ? got : 0] = '\0';
    }
    BIO_free(bio);
    X509_free(x);
    if (EVP_Digest(der, len, md, NULL, EVP_sha256(), NULL) == 1)
        hex_encode(md, sizeof md, fp);
    else
        snprintf(fp, sizeof fp, "?");
    snprintf(out, n, "a custom root (%s, SHA-256 %s)", subject, fp);
}

void cli_trust_describe(FILE *out, const cli_config *cfg)
{
    char name[512];
    if (cfg->root_der_len) {
        cli_trust_root_name(cfg->root_der, cfg->root_der_len, name, sizeof name);
        term_fprintf(out, "attestation root: %s, for a simulated NSM only\n", name);
    } else {
        fprintf(out, "attestation root: AWS Nitro root G1 (pinned)\n");
    }
    if (!cfg->n_pcrs) {
        fprintf(out, "measurements: none (chat and ask refuse until `veil login --measurements FILE`)\n");
        return;
    }
    fprintf(out, "measurements:");
    for (size_t i = 0; i < cfg->n_pcrs; i++) {
        char h[2 * ATTEST_MAX_PCR_LEN + 1];
        hex_encode(cfg->pcrs[i].value, cfg->pcrs[i].len, h);
        fprintf(out, "%s PCR%u %s", i ? "," : "", cfg->pcrs[i].index, h);
    }
    fprintf(out, "\n");
}

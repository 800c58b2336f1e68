/* sigv4 — the signer: the OpenSSL handles, the scope and string to sign, the
 * signing key (derived, cached per day and credentials, wiped), and the signed
 * headers. The canonical request is sigv4_canon.c's; verification is sigv4_verify.c.
 */
#include "aws/sigv4.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "aws/sigv4_int.h"
#include "common/hex.h"
#include "common/secret.h"

/* ---- OpenSSL handles --------------------------------------------------------
 * Fetched once per process and never freed: they are immutable, shared by every
 * thread, and fetching per call costs a lock and a provider lookup. */
static EVP_MD *g_sha256;
static EVP_MAC *g_hmac;
static pthread_once_t g_fetch_once = PTHREAD_ONCE_INIT;
static char g_digest_name[] = "SHA256";

static void fetch_algorithms(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    g_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

static bool crypto_ready(void)
{
    return pthread_once(&g_fetch_once, fetch_algorithms) == 0 && g_sha256 && g_hmac;
}

int sigv4i_sha256(const void *p, size_t n, uint8_t out[SIGV4_KEY_LEN])
{
    unsigned int len = 0;
    if (!crypto_ready())
        return SIGV4_ERR_CRYPTO;
    if (EVP_Digest(n ? p : "", n, out, &len, g_sha256, NULL) != 1 || len != SIGV4_KEY_LEN)
        return SIGV4_ERR_CRYPTO;
    return SIGV4_OK;
}

int sigv4i_hmac_sha256(const uint8_t *key, size_t key_len, const void *msg, size_t n,
                       uint8_t out[SIGV4_KEY_LEN])
{
    int rc = SIGV4_ERR_CRYPTO;
    size_t out_len = 0;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, g_digest_name, 0),
        OSSL_PARAM_construct_end(),
    };

    if (!crypto_ready())
        return SIGV4_ERR_CRYPTO;
    ctx = EVP_MAC_CTX_new(g_hmac);
    if (!ctx)
        goto out;
    if (EVP_MAC_init(ctx, key, key_len, params) != 1 ||
        EVP_MAC_update(ctx, n ? msg : (const void *)"", n) != 1 ||
        EVP_MAC_final(ctx, out, &out_len, SIGV4_KEY_LEN) != 1 || out_len != SIGV4_KEY_LEN)
        goto out;
    rc = SIGV4_OK;
out:
    EVP_MAC_CTX_free(ctx); /* the HMAC provider cleanses its key schedule */
    if (rc != SIGV4_OK)
        secure_wipe(out, SIGV4_KEY_LEN);
    return rc;
}

const char *sigv4_strerror(int err)
{
    switch (err) {
    case SIGV4_OK: return "ok";
    case SIGV4_ERR_INVALID_ARG: return "invalid argument";
    case SIGV4_ERR_NOMEM: return "out of memory";
    case SIGV4_ERR_CRYPTO: return "cryptographic operation failed";
    case SIGV4_ERR_ALREADY_SIGNED: return "request already carries signing headers";
    case SIGV4_ERR_NO_HOST: return "request has no Host header";
    case SIGV4_ERR_MISSING_AUTH: return "missing Authorization header";
    case SIGV4_ERR_MALFORMED_AUTH: return "malformed Authorization or X-Amz-Date header";
    case SIGV4_ERR_UNKNOWN_KEY: return "unknown access key id";
    case SIGV4_ERR_BAD_SCOPE: return "credential scope does not match";
    case SIGV4_ERR_STALE_DATE: return "X-Amz-Date is outside the allowed window";
    case SIGV4_ERR_TOKEN_MISMATCH: return "security token missing or does not match";
    case SIGV4_ERR_SIGNATURE_MISMATCH: return "signature does not match";
    }
    return "unknown sigv4 error";
}

/* ---- string to sign and key ---------------------------------------------------- */

bool sigv4i_scope_part_ok(const char *s)
{
    return s && *s && !strpbrk(s, "/\r\n");
}

int sigv4_scope(const char *date8, const char *region, const char *service, vbuf *out)
{
    if (!out || !date8 || strlen(date8) < 8 || !sigv4i_scope_part_ok(region) ||
        !sigv4i_scope_part_ok(service))
        return SIGV4_ERR_INVALID_ARG;
    if (vbuf_printf(out, "%.8s/%s/%s/" SIGV4_TERMINATOR, date8, region, service) < 0)
        return SIGV4_ERR_NOMEM;
    return sigv4i_finish(out);
}

int sigv4_string_to_sign(const char *amz_date, const char *scope, const char *creq,
                         size_t creq_len, vbuf *out)
{
    uint8_t md[SIGV4_KEY_LEN];
    char hex[SIGV4_HEX_LEN + 1];
    if (!amz_date || !scope || !out || (!creq && creq_len))
        return SIGV4_ERR_INVALID_ARG;
    int rc = sigv4i_sha256(creq, creq_len, md);
    if (rc != SIGV4_OK)
        return rc;
    hex_encode(md, sizeof md, hex);
    if (vbuf_printf(out, SIGV4_ALGORITHM "\n%s\n%s\n%s", amz_date, scope, hex) < 0)
        return SIGV4_ERR_NOMEM;
    return sigv4i_finish(out);
}

int sigv4_derive_signing_key(const char *secret_access_key, const char *date8,
                             const char *region, const char *service,
                             uint8_t key[SIGV4_KEY_LEN])
{
    secret k0 = {NULL, 0};
    uint8_t a[SIGV4_KEY_LEN], b[SIGV4_KEY_LEN];
    int rc;

    if (!secret_access_key || !key || !date8 || strlen(date8) < 8 || !sigv4i_scope_part_ok(region) ||
        !sigv4i_scope_part_ok(service))
        return SIGV4_ERR_INVALID_ARG;
    size_t slen = strlen(secret_access_key);
    if (slen > SIZE_MAX - 4 || secret_alloc(&k0, 4 + slen) < 0)
        return SIGV4_ERR_NOMEM;
    memcpy(k0.data, "AWS4", 4);
    memcpy(k0.data + 4, secret_access_key, slen);

    rc = sigv4i_hmac_sha256(k0.data, k0.len, date8, 8, a);
    if (rc == SIGV4_OK)
        rc = sigv4i_hmac_sha256(a, sizeof a, region, strlen(region), b);
    if (rc == SIGV4_OK)
        rc = sigv4i_hmac_sha256(b, sizeof b, service, strlen(service), a);
    if (rc == SIGV4_OK)
        rc = sigv4i_hmac_sha256(a, sizeof a, SIGV4_TERMINATOR, strlen(SIGV4_TERMINATOR), key);

    secure_wipe(a, sizeof a);
    secure_wipe(b, sizeof b);
    secret_free(&k0);
    if (rc != SIGV4_OK)
        secure_wipe(key, SIGV4_KEY_LEN);
    return rc;
}

static int sign_raw(const uint8_t key[SIGV4_KEY_LEN], const char *sts, size_t len,
                    uint8_t mac[SIGV4_KEY_LEN])
{
    if (!key || (!sts && len))
        return SIGV4_ERR_INVALID_ARG;
    return sigv4i_hmac_sha256(key, SIGV4_KEY_LEN, sts, len, mac);
}

int sigv4_sign_string(const uint8_t key[SIGV4_KEY_LEN], const char *sts, size_t len,
                      char out[SIGV4_HEX_LEN + 1])
{
    uint8_t mac[SIGV4_KEY_LEN];
    if (!out)
        return SIGV4_ERR_INVALID_ARG;
    int rc = sign_raw(key, sts, len, mac);
    if (rc == SIGV4_OK)
        hex_encode(mac, sizeof mac, out);
    secure_wipe(mac, sizeof mac);
    return rc;
}

int sigv4_format_amz_date(time_t t, char out[SIGV4_AMZ_DATE_LEN + 1])
{
    struct tm tm;
    if (!out || !gmtime_r(&t, &tm))
        return SIGV4_ERR_INVALID_ARG;
    if (strftime(out, SIGV4_AMZ_DATE_LEN + 1, "%Y%m%dT%H%M%SZ", &tm) != SIGV4_AMZ_DATE_LEN)
        return SIGV4_ERR_INVALID_ARG;
    return SIGV4_OK;
}

/* ---- signed output ------------------------------------------------------------- */

static void wipe_str(char *s)
{
    if (s) {
        secure_wipe(s, strlen(s));
        free(s);
    }
}

void sigv4_signed_free(sigv4_signed *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_headers && i < SIGV4_MAX_ADDED_HEADERS; i++) {
        wipe_str(s->headers[i].value); /* may hold the session token */
        s->headers[i].value = NULL;
    }
    s->n_headers = 0;
}

const char *sigv4_signed_get(const sigv4_signed *s, const char *name)
{
    if (!s || !name)
        return NULL;
    for (size_t i = 0; i < s->n_headers; i++)
        if (sigv4i_ieq(s->headers[i].name, name))
            return s->headers[i].value;
    return NULL;
}

static int add_out(sigv4_signed *out, const char *name, char *owned)
{
    if (!owned)
        return SIGV4_ERR_NOMEM;
    out->headers[out->n_headers].name = name;
    out->headers[out->n_headers].value = owned;
    out->n_headers++;
    return SIGV4_OK;
}

/* ---- signer ---------------------------------------------------------------------- */

struct sigv4_signer {
    char *region;
    char *service;
    sigv4_config cfg; /* region/service point at the copies above */
    bool have_key;
    char key_date[9];
    char *akid;
    secret secret_copy; /* only to notice a credential change */
    uint8_t key[SIGV4_KEY_LEN];
    unsigned long derivations;
};

sigv4_signer *sigv4_signer_new(const sigv4_config *cfg)
{
    if (!cfg || !sigv4i_scope_part_ok(cfg->region) || !sigv4i_scope_part_ok(cfg->service))
        return NULL;
    sigv4_signer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->region = strdup(cfg->region);
    s->service = strdup(cfg->service);
    if (!s->region || !s->service) {
        sigv4_signer_free(s);
        return NULL;
    }
    s->cfg = *cfg;
    s->cfg.region = s->region;
    s->cfg.service = s->service;
    return s;
}

static void drop_key(sigv4_signer *s)
{
    secure_wipe(s->key, sizeof s->key);
    s->have_key = false;
    free(s->akid);
    s->akid = NULL;
    secret_free(&s->secret_copy);
}

void sigv4_signer_free(sigv4_signer *s)
{
    if (!s)
        return;
    drop_key(s);
    free(s->region);
    free(s->service);
    free(s);
}

unsigned long sigv4_signer_derivations(const sigv4_signer *s)
{
    return s ? s->derivations : 0;
}

static bool same_secret(const secret *a, const char *b)
{
    size_t n = strlen(b);
    return a->data && a->len == n && CRYPTO_memcmp(a->data, b, n) == 0;
}

/* Derives the signing key unless the cached one is for this day and credentials. */
static int ensure_key(sigv4_signer *s, const sigv4_credentials *c, const char *date8)
{
    if (s->have_key && memcmp(s->key_date, date8, 8) == 0 &&
        strcmp(s->akid, c->access_key_id) == 0 && same_secret(&s->secret_copy, c->secret_access_key))
        return SIGV4_OK;

    drop_key(s);
    size_t slen = strlen(c->secret_access_key);
    s->akid = strdup(c->access_key_id);
    if (!s->akid || secret_alloc(&s->secret_copy, slen) < 0) {
        drop_key(s);
        return SIGV4_ERR_NOMEM;
    }
    memcpy(s->secret_copy.data, c->secret_access_key, slen);
    int rc = sigv4_derive_signing_key(c->secret_access_key, date8, s->region, s->service, s->key);
    if (rc != SIGV4_OK) {
        drop_key(s);
        return rc;
    }
    memcpy(s->key_date, date8, 8);
    s->key_date[8] = '\0';
    s->have_key = true;
    s->derivations++;
    return SIGV4_OK;
}

static bool creds_ok(const sigv4_credentials *c)
{
    return c && c->access_key_id && *c->access_key_id && !strpbrk(c->access_key_id, "/, \r\n") &&
           c->secret_access_key && *c->secret_access_key &&
           (!c->session_token || sigv4i_header_value_ok(c->session_token));
}

int sigv4_sign_request(sigv4_signer *s, const sigv4_credentials *creds, const sigv4_request *req,
                       time_t now, sigv4_signed *out)
{
    char payload[SIGV4_HEX_LEN + 1];
    sigv4_header *hdrs = NULL;
    vbuf creq = VBUF_INIT, names = VBUF_INIT, scope = VBUF_INIT, sts = VBUF_INIT,
         auth = VBUF_INIT;
    int rc;

    if (!out)
        return SIGV4_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (!s || !req || !creds_ok(creds) || (req->n_headers && !req->headers))
        return SIGV4_ERR_INVALID_ARG;
    for (size_t i = 0; i < req->n_headers; i++)
        if (!req->headers[i].name)
            return SIGV4_ERR_INVALID_ARG;

    bool token = creds->session_token && *creds->session_token;
    /* the signer owns these; a request that has them was signed already (a retry
     * must rebuild its headers), and signing twice yields duplicate headers */
    if (sigv4i_count_header(req, "authorization", NULL) || sigv4i_count_header(req, "x-amz-date", NULL) ||
        sigv4i_count_header(req, "x-amz-security-token", NULL) ||
        (s->cfg.add_content_sha256 && sigv4i_count_header(req, "x-amz-content-sha256", NULL)))
        return SIGV4_ERR_ALREADY_SIGNED;
    size_t n_host = sigv4i_count_header(req, "host", NULL);
    if (n_host != 1)
        return n_host ? SIGV4_ERR_INVALID_ARG : SIGV4_ERR_NO_HOST;

    rc = sigv4_format_amz_date(now, out->amz_date);
    if (rc == SIGV4_OK)
        rc = sigv4_payload_hash(req->body, req->body_len, payload);
    if (rc != SIGV4_OK)
        return rc;

    hdrs = calloc(req->n_headers + 3, sizeof *hdrs);
    if (!hdrs)
        return SIGV4_ERR_NOMEM;
    size_t nh = req->n_headers;
    if (nh)
        memcpy(hdrs, req->headers, nh * sizeof *hdrs);
    hdrs[nh++] = (sigv4_header){"X-Amz-Date", out->amz_date};
    if (token)
        hdrs[nh++] = (sigv4_header){"X-Amz-Security-Token", creds->session_token};
    if (s->cfg.add_content_sha256)
        hdrs[nh++] = (sigv4_header){"x-amz-content-sha256", payload};
    sigv4_request full = *req;
    full.headers = hdrs;
    full.n_headers = nh;

    rc = sigv4i_build_creq(&s->cfg, &full, NULL, 0, payload, &creq, &names);
    if (rc == SIGV4_OK)
        rc = sigv4_scope(out->amz_date, s->region, s->service, &scope);
    if (rc == SIGV4_OK)
        rc = sigv4_string_to_sign(out->amz_date, (const char *)scope.data, (const char *)creq.data,
                                  creq.len, &sts);
    if (rc == SIGV4_OK)
        rc = ensure_key(s, creds, out->amz_date);
    if (rc == SIGV4_OK)
        rc = sigv4_sign_string(s->key, (const char *)sts.data, sts.len, out->signature);
    if (rc != SIGV4_OK)
        goto out;
    if (vbuf_printf(&auth, SIGV4_ALGORITHM " Credential=%s/%s, SignedHeaders=%s, Signature=%s",
                    creds->access_key_id, (const char *)scope.data, (const char *)names.data,
                    out->signature) < 0 ||
        !vbuf_cstr(&auth)) {
        rc = SIGV4_ERR_NOMEM;
        goto out;
    }

    rc = add_out(out, "X-Amz-Date", strdup(out->amz_date));
    if (rc == SIGV4_OK && token)
        rc = add_out(out, "X-Amz-Security-Token", strdup(creds->session_token));
    if (rc == SIGV4_OK && s->cfg.add_content_sha256)
        rc = add_out(out, "x-amz-content-sha256", strdup(payload));
    if (rc == SIGV4_OK) {
        rc = add_out(out, "Authorization", (char *)auth.data);
        auth = (vbuf)VBUF_INIT; /* ownership moved to out */
    }
out:
    free(hdrs);
    vbuf_free_secure(&creq); /* holds the session token */
    vbuf_free_secure(&sts);
    vbuf_free(&names);
    vbuf_free(&scope);
    vbuf_free(&auth);
    if (rc != SIGV4_OK)
        sigv4_signed_free(out);
    return rc;
}

#include "crypto/primitives.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* fetched once per process: the fetch is a locked provider lookup */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static EVP_KDF *g_hkdf;
static EVP_CIPHER *g_gcm;

static void fetch_algorithms(void)
{
    g_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    g_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
}

static int ensure_fetched(void)
{
    pthread_once(&g_once, fetch_algorithms);
    return g_hkdf && g_gcm ? 0 : -1;
}

int random_bytes(uint8_t *out, size_t n)
{
    return RAND_priv_bytes(out, (int)n) == 1 ? 0 : -1;
}

int ct_equal(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}

struct x25519_key {
    EVP_PKEY *pk;
};

static x25519_key *wrap(EVP_PKEY *pk)
{
    x25519_key *k = pk ? malloc(sizeof *k) : NULL;
    if (!k) {
        EVP_PKEY_free(pk);
        return NULL;
    }
    k->pk = pk;
    return k;
}

x25519_key *x25519_key_new(const uint8_t priv[X25519_KEY_LEN])
{
    return wrap(EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, X25519_KEY_LEN));
}

static int public_of(const x25519_key *k, uint8_t pub[X25519_KEY_LEN])
{
    size_t len = X25519_KEY_LEN;
    return EVP_PKEY_get_raw_public_key(k->pk, pub, &len) == 1 && len == X25519_KEY_LEN ? 0 : -1;
}

x25519_key *x25519_key_generate(uint8_t pub[X25519_KEY_LEN])
{
    x25519_key *k = wrap(EVP_PKEY_Q_keygen(NULL, NULL, "X25519"));
    if (k && public_of(k, pub) < 0) {
        x25519_key_free(k);
        return NULL;
    }
    return k;
}

void x25519_key_free(x25519_key *k)
{
    if (!k)
        return;
    EVP_PKEY_free(k->pk);
    free(k);
}

int x25519_key_shared(const x25519_key *k, const uint8_t peer[X25519_KEY_LEN], uint8_t out[X25519_KEY_LEN])
{
    int rc = -1;
    EVP_PKEY *them = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer, X25519_KEY_LEN);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pk, NULL);
    size_t len = X25519_KEY_LEN;
    if (!them || !ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer_ex(ctx, them, 0) != 1)
        goto out;
    if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != X25519_KEY_LEN) {
        rc = -2; /* OpenSSL refuses an all-zero result */
        goto out;
    }
    uint8_t acc = 0;
    for (size_t i = 0; i < X25519_KEY_LEN; i++)
        acc |= out[i];
    rc = acc ? 0 : -2; /* reject a low-order peer key, as every original side did */
out:
    if (rc != 0)
        OPENSSL_cleanse(out, X25519_KEY_LEN);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(them);
    return rc;
}

bool x25519_public_key_ok(const uint8_t pub[X25519_KEY_LEN])
{
    /* the small-order encodings, as libsodium lists them (has_small_order) */
    static const uint8_t SMALL[7][X25519_KEY_LEN] = {
        {0},
        {1},
        {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a,
         0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
        {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef, 0x5b,
         0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
        {0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
        {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
        {0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
    };
    for (size_t j = 0; j < 7; j++) {
        uint8_t diff = (uint8_t)((pub[31] & 0x7f) ^ SMALL[j][31]);
        for (size_t i = 0; i < X25519_KEY_LEN - 1; i++)
            diff |= pub[i] ^ SMALL[j][i];
        if (diff == 0)
            return false;
    }
    return true;
}

int x25519_public(const uint8_t priv[X25519_KEY_LEN], uint8_t pub[X25519_KEY_LEN])
{
    x25519_key *k = x25519_key_new(priv);
    int rc = k ? public_of(k, pub) : -1;
    x25519_key_free(k);
    return rc;
}

int x25519_keygen(uint8_t priv[X25519_KEY_LEN], uint8_t pub[X25519_KEY_LEN])
{
    /* 32 random bytes as the original clients do; clamping happens in the scalar mult */
    if (random_bytes(priv, X25519_KEY_LEN) < 0 || x25519_public(priv, pub) < 0) {
        OPENSSL_cleanse(priv, X25519_KEY_LEN);
        return -1;
    }
    return 0;
}

int x25519_shared(const uint8_t priv[X25519_KEY_LEN], const uint8_t peer[X25519_KEY_LEN],
                  uint8_t out[X25519_KEY_LEN])
{
    x25519_key *k = x25519_key_new(priv);
    int rc = k ? x25519_key_shared(k, peer, out) : -1;
    x25519_key_free(k);
    return rc;
}

int hkdf_sha512(const uint8_t *ikm, size_t ikm_len, const uint8_t *salt, size_t salt_len,
                const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    if (ensure_fetched() < 0)
        return -1;
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(g_hkdf);
    if (!kctx)
        return -1;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA512", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len),
        OSSL_PARAM_construct_end(),
    };
    int rc = EVP_KDF_derive(kctx, out, out_len, params) == 1 ? 0 : -1;
    EVP_KDF_CTX_free(kctx);
    return rc;
}

static EVP_CIPHER_CTX *gcm_ctx(const uint8_t *key, const uint8_t *iv, int enc)
{
    if (ensure_fetched() < 0)
        return NULL;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    size_t ivlen = GCM_IV_LEN;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_size_t(OSSL_CIPHER_PARAM_AEAD_IVLEN, &ivlen),
        OSSL_PARAM_construct_end(),
    };
    if (!ctx || EVP_CipherInit_ex2(ctx, g_gcm, NULL, NULL, enc, params) != 1 ||
        EVP_CipherInit_ex2(ctx, NULL, key, iv, enc, NULL) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* EVP update lengths are int: process in slices so any size_t length works */
static int gcm_update(EVP_CIPHER_CTX *ctx, uint8_t *out, const uint8_t *in, size_t len)
{
    const size_t slice = 1u << 30;
    while (len) {
        int n = (int)(len < slice ? len : slice), outl = 0;
        if (EVP_CipherUpdate(ctx, out, &outl, in, n) != 1 || outl != n)
            return -1;
        in += n;
        if (out)
            out += n;
        len -= (size_t)n;
    }
    return 0;
}

int aesgcm_encrypt(const uint8_t key[AES256_KEY_LEN], const uint8_t iv[GCM_IV_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *pt, size_t len,
                   uint8_t *ct, uint8_t tag[GCM_TAG_LEN])
{
    EVP_CIPHER_CTX *ctx = gcm_ctx(key, iv, 1);
    int outl = 0, rc = -1;
    if (!ctx)
        return -1;
    if (aad_len) {
        if (EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len) != 1)
            goto out;
    }
    if (gcm_update(ctx, ct, pt, len) < 0 || EVP_CipherFinal_ex(ctx, ct + len, &outl) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, GCM_TAG_LEN, tag) != 1)
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int aesgcm_decrypt(const uint8_t key[AES256_KEY_LEN], const uint8_t iv[GCM_IV_LEN],
                   const uint8_t *aad, size_t aad_len, const uint8_t *ct, size_t len,
                   const uint8_t tag[GCM_TAG_LEN], uint8_t *pt)
{
    EVP_CIPHER_CTX *ctx = gcm_ctx(key, iv, 0);
    int outl = 0, rc = -1;
    if (!ctx)
        return -1;
    if (aad_len && EVP_CipherUpdate(ctx, NULL, &outl, aad, (int)aad_len) != 1)
        goto out;
    if (gcm_update(ctx, pt, ct, len) < 0 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, GCM_TAG_LEN, (void *)tag) != 1 ||
        EVP_CipherFinal_ex(ctx, pt + len, &outl) != 1)
        goto out;
    rc = 0;
out:
    if (rc != 0 && len)
        OPENSSL_cleanse(pt, len);
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

#include "crypto/history_tag.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "common/buf.h"
#include "crypto/primitives.h"
#include "crypto/stream_v3.h"

#define LABEL_LEN (sizeof HISTORY_TAG_LABEL - 1)

int history_tag_key(const uint8_t storage_priv[32], uint8_t key[32])
{
    static const uint8_t NO_SALT[64]; /* RFC 5869: no salt is HashLen zero bytes */
    return hkdf_sha512(storage_priv, 32, NO_SALT, sizeof NO_SALT, (const uint8_t *)HISTORY_TAG_LABEL, LABEL_LEN,
                       key, 32) == 0
               ? 0
               : -1;
}

int history_tag(const uint8_t key[32], const char *session_id, const uint8_t *prev, const ep *user_msg,
                const ep *assistant_msg, uint8_t out[HISTORY_TAG_LEN])
{
    static const uint8_t ZERO[HISTORY_TAG_LEN];
    uint8_t len_be[4], hu[SV3_HASH_LEN], ha[SV3_HASH_LEN];
    size_t sl = strlen(session_id);
    put_be32(len_be, (uint32_t)sl);
    sv3_ep_hash(user_msg, hu);
    sv3_ep_hash(assistant_msg, ha);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end()};
    size_t n = 0;
    int rc = ctx && EVP_MAC_init(ctx, key, 32, params) == 1 &&
                     EVP_MAC_update(ctx, (const uint8_t *)HISTORY_TAG_LABEL, LABEL_LEN) == 1 &&
                     EVP_MAC_update(ctx, len_be, sizeof len_be) == 1 &&
                     EVP_MAC_update(ctx, (const uint8_t *)session_id, sl) == 1 &&
                     EVP_MAC_update(ctx, prev ? prev : ZERO, HISTORY_TAG_LEN) == 1 &&
                     EVP_MAC_update(ctx, hu, sizeof hu) == 1 && EVP_MAC_update(ctx, ha, sizeof ha) == 1 &&
                     EVP_MAC_final(ctx, out, &n, HISTORY_TAG_LEN) == 1 && n == HISTORY_TAG_LEN
                 ? 0
                 : -1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

#include "crypto/stream_v3.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"

#define LABEL_LEN (sizeof SV3_LABEL - 1)
#define AAD_LEN (LABEL_LEN + 8 + 1)

void sv3_ep_hash(const ep *e, uint8_t out[SV3_HASH_LEN])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned n = SV3_HASH_LEN;
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 || EVP_DigestUpdate(c, e->epk, sizeof e->epk) != 1 ||
        EVP_DigestUpdate(c, e->salt, sizeof e->salt) != 1 || EVP_DigestUpdate(c, e->iv, sizeof e->iv) != 1 ||
        EVP_DigestUpdate(c, e->ct ? e->ct : (const uint8_t *)"", e->ct_len) != 1 ||
        EVP_DigestUpdate(c, e->tag, sizeof e->tag) != 1 || EVP_DigestFinal_ex(c, out, &n) != 1)
        memset(out, 0, SV3_HASH_LEN); /* no digest: nothing will match it */
    EVP_MD_CTX_free(c);
}

/* K from the two agreements (the stream's and the attested key's) and the request. */
static int derive(sv3 *s, const uint8_t ss1[X25519_KEY_LEN], const uint8_t ss2[X25519_KEY_LEN],
                  const uint8_t salt[HKDF_SALT_LEN], const uint8_t request_hash[SV3_HASH_LEN])
{
    uint8_t ikm[2 * X25519_KEY_LEN], info[LABEL_LEN + SV3_HASH_LEN];
    memcpy(ikm, ss1, X25519_KEY_LEN);
    memcpy(ikm + X25519_KEY_LEN, ss2, X25519_KEY_LEN);
    memcpy(info, SV3_LABEL, LABEL_LEN);
    memcpy(info + LABEL_LEN, request_hash, SV3_HASH_LEN);
    int rc = hkdf_sha512(ikm, sizeof ikm, salt, HKDF_SALT_LEN, info, sizeof info, s->key, sizeof s->key);
    OPENSSL_cleanse(ikm, sizeof ikm);
    s->seq = 0;
    return rc == 0 ? 0 : -1;
}

int sv3_init_sender(sv3 *s, const x25519_key *enclave, const uint8_t client_pub[X25519_KEY_LEN],
                    const uint8_t request_hash[SV3_HASH_LEN], uint8_t epk[X25519_KEY_LEN],
                    uint8_t salt[HKDF_SALT_LEN])
{
    uint8_t ss1[X25519_KEY_LEN], ss2[X25519_KEY_LEN];
    x25519_key *eph = x25519_key_generate(epk);
    int rc = eph && random_bytes(salt, HKDF_SALT_LEN) == 0 && x25519_key_shared(eph, client_pub, ss1) == 0 &&
                     x25519_key_shared(enclave, client_pub, ss2) == 0
                 ? derive(s, ss1, ss2, salt, request_hash)
                 : -1;
    x25519_key_free(eph); /* one agreement per stream; the stream key goes now */
    OPENSSL_cleanse(ss1, sizeof ss1);
    OPENSSL_cleanse(ss2, sizeof ss2);
    return rc;
}

int sv3_init_receiver(sv3 *s, const x25519_key *client, const uint8_t enclave_pub[X25519_KEY_LEN],
                      const uint8_t epk[X25519_KEY_LEN], const uint8_t salt[HKDF_SALT_LEN],
                      const uint8_t request_hash[SV3_HASH_LEN])
{
    uint8_t ss1[X25519_KEY_LEN], ss2[X25519_KEY_LEN];
    int rc = x25519_key_shared(client, epk, ss1) == 0 && x25519_key_shared(client, enclave_pub, ss2) == 0
                 ? derive(s, ss1, ss2, salt, request_hash)
                 : -1;
    OPENSSL_cleanse(ss1, sizeof ss1);
    OPENSSL_cleanse(ss2, sizeof ss2);
    return rc;
}

/* IV = 8 zero bytes || be64(seq); AAD = label || be64(seq) || kind */
static void iv_aad(uint64_t seq, sv3_kind kind, uint8_t iv[GCM_IV_LEN], uint8_t aad[AAD_LEN])
{
    memset(iv, 0, GCM_IV_LEN);
    put_be32(iv + 8, (uint32_t)(seq >> 32));
    put_be32(iv + 12, (uint32_t)seq);
    memcpy(aad, SV3_LABEL, LABEL_LEN);
    memcpy(aad + LABEL_LEN, iv + 8, 8);
    aad[LABEL_LEN + 8] = (uint8_t)kind;
}

int sv3_seal(sv3 *s, sv3_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN])
{
    uint8_t iv[GCM_IV_LEN], aad[AAD_LEN];
    if (s->seq == UINT64_MAX)
        return -1;
    iv_aad(s->seq, kind, iv, aad);
    if (aesgcm_encrypt(s->key, iv, aad, sizeof aad, pt, len, ct, tag) < 0)
        return -1;
    s->seq++;
    return 0;
}

int sv3_open(sv3 *s, sv3_kind kind, const uint8_t *ct, size_t len, const uint8_t tag[GCM_TAG_LEN], uint8_t *pt)
{
    uint8_t iv[GCM_IV_LEN], aad[AAD_LEN];
    if (s->seq == UINT64_MAX)
        return -1;
    iv_aad(s->seq, kind, iv, aad);
    if (aesgcm_decrypt(s->key, iv, aad, sizeof aad, ct, len, tag, pt) < 0)
        return -1;
    s->seq++;
    return 0;
}

int sv3_open_json(sv3 *s, sv3_kind kind, const json_t *elem, uint8_t **pt, size_t *len)
{
    const json_t *q = json_object_get(elem, "seq"), *c = json_object_get(elem, "ciphertext"),
                 *t = json_object_get(elem, "auth_tag");
    uint8_t tag[GCM_TAG_LEN];
    *pt = NULL;
    if (!json_is_integer(q) || (uint64_t)json_integer_value(q) != s->seq || !json_is_string(c) ||
        !json_is_string(t) || !hex_is_valid(json_string_value(c), json_string_length(c)) ||
        hex_decode_exact(json_string_value(t), json_string_length(t), tag, sizeof tag) < 0)
        return -1;
    size_t n = json_string_length(c) / 2;
    uint8_t *ct = malloc(n + 1), *out = malloc(n + 1);
    int rc = -1;
    if (ct && out && hex_decode(json_string_value(c), json_string_length(c), ct, n) == (long)n &&
        sv3_open(s, kind, ct, n, tag, out) == 0) {
        *pt = out;
        *len = n;
        out = NULL;
        rc = 0;
    }
    free(ct);
    free(out);
    return rc;
}

void sv3_wipe(sv3 *s)
{
    OPENSSL_cleanse(s, sizeof *s);
}

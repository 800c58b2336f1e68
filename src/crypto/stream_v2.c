#include "crypto/stream_v2.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/hex.h"

#define LABEL_LEN (sizeof SV2_AAD_LABEL - 1)
#define AAD_LEN (LABEL_LEN + 8 + 1)

static int derive(sv2 *s, const x25519_key *k, const uint8_t peer[X25519_KEY_LEN],
                  const uint8_t salt[HKDF_SALT_LEN])
{
    uint8_t ss[X25519_KEY_LEN];
    int rc = x25519_key_shared(k, peer, ss) == 0 &&
                     hkdf_sha512(ss, sizeof ss, salt, HKDF_SALT_LEN, (const uint8_t *)SV2_CONTEXT,
                                 sizeof SV2_CONTEXT - 1, s->key, sizeof s->key) == 0
                 ? 0
                 : -1;
    OPENSSL_cleanse(ss, sizeof ss);
    s->seq = 0;
    return rc;
}

int sv2_init_sender(sv2 *s, const uint8_t client_pub[X25519_KEY_LEN], uint8_t epk[X25519_KEY_LEN],
                    uint8_t salt[HKDF_SALT_LEN])
{
    x25519_key *eph = x25519_key_generate(epk);
    int rc = eph && random_bytes(salt, HKDF_SALT_LEN) == 0 ? derive(s, eph, client_pub, salt) : -1;
    x25519_key_free(eph); /* one agreement per stream; the ephemeral key goes now */
    return rc;
}

int sv2_init_receiver(sv2 *s, const x25519_key *client, const uint8_t epk[X25519_KEY_LEN],
                      const uint8_t salt[HKDF_SALT_LEN])
{
    return derive(s, client, epk, salt);
}

/* IV = 8 zero bytes || be64(seq); AAD = label || be64(seq) || kind */
static void iv_aad(uint64_t seq, sv2_kind kind, uint8_t iv[GCM_IV_LEN], uint8_t aad[AAD_LEN])
{
    memset(iv, 0, GCM_IV_LEN);
    put_be32(iv + 8, (uint32_t)(seq >> 32));
    put_be32(iv + 12, (uint32_t)seq);
    memcpy(aad, SV2_AAD_LABEL, LABEL_LEN);
    memcpy(aad + LABEL_LEN, iv + 8, 8);
    aad[LABEL_LEN + 8] = (uint8_t)kind;
}

int sv2_seal(sv2 *s, sv2_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN])
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

int sv2_open(sv2 *s, sv2_kind kind, const uint8_t *ct, size_t len, const uint8_t tag[GCM_TAG_LEN],
             uint8_t *pt)
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

int sv2_open_json(sv2 *s, sv2_kind kind, const json_t *elem, uint8_t **pt, size_t *len)
{
    const json_t *c = json_object_get(elem, "ciphertext"), *t = json_object_get(elem, "auth_tag");
    uint8_t tag[GCM_TAG_LEN];
    *pt = NULL;
    if (!json_is_string(c) || !json_is_string(t) || !hex_is_valid(json_string_value(c), json_string_length(c)) ||
        hex_decode_exact(json_string_value(t), json_string_length(t), tag, sizeof tag) < 0)
        return -1;
    size_t n = json_string_length(c) / 2;
    uint8_t *ct = malloc(n + 1), *out = malloc(n + 1);
    int rc = -1;
    if (ct && out && hex_decode(json_string_value(c), json_string_length(c), ct, n) == (long)n &&
        sv2_open(s, kind, ct, n, tag, out) == 0) {
        *pt = out;
        *len = n;
        out = NULL;
        rc = 0;
    }
    free(ct);
    free(out);
    return rc;
}

void sv2_wipe(sv2 *s)
{
    OPENSSL_cleanse(s, sizeof *s);
}

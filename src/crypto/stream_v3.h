/* stream_v3 — stream format 3: a bound request and an authenticated, bound answer
 * (design.md "Trust model"; shared/reference/stream-format-3.md pins the wire).
 *
 * The client seals its whole request to the attested enclave key S under the
 * context SV3_REQUEST_CONTEXT; request_hash is SHA-256 over that envelope's raw
 * fields (sv3_ep_hash). The enclave makes a stream key e per answer and derives
 *   K = HKDF-SHA512(ikm = X25519(e, C) || X25519(S, C), salt, info = "veil-stream-v3" || request_hash)
 * so only the holder of S can derive K, and K belongs to this one request. Element i
 * is AES-256-GCM under K with IV = 8 zero bytes || be64(i) and AAD = "veil-stream-v3"
 * || be64(i) || kind; the last element (kind END) carries the hashes of the stored
 * messages. The receiver counts for itself: a dropped, reordered, substituted or
 * forged element fails to open. The state holds K and is wiped by sv3_wipe.
 */
#ifndef VEIL_CRYPTO_STREAM_V3_H
#define VEIL_CRYPTO_STREAM_V3_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/ep.h"
#include "crypto/primitives.h"

#define SV3_REQUEST_CONTEXT "client-to-enclave-request-v3" /* HKDF info of the sealed request */
#define SV3_LABEL "veil-stream-v3"                          /* HKDF info prefix and AAD label */
#define SV3_HASH_LEN 32
#define SV3_END_LEN (2 * SV3_HASH_LEN) /* the end element: SHA-256(user EP) || SHA-256(assistant EP) */

typedef enum sv3_kind { SV3_TEXT = 0, SV3_END = 1, SV3_THINKING = 2 } sv3_kind;

typedef struct sv3 {
    uint8_t key[AES256_KEY_LEN];
    uint64_t seq; /* the index of the next element */
} sv3;

/* SHA-256 over an EncryptedPayload's raw fields in this order: ephemeral_public_key
 * || hkdf_salt || iv || ciphertext || auth_tag. */
void sv3_ep_hash(const ep *e, uint8_t out[SV3_HASH_LEN]);

/* The enclave's side: a fresh stream key e (its public half into epk) and salt. */
int sv3_init_sender(sv3 *s, const x25519_key *enclave, const uint8_t client_pub[X25519_KEY_LEN],
                    const uint8_t request_hash[SV3_HASH_LEN], uint8_t epk[X25519_KEY_LEN],
                    uint8_t salt[HKDF_SALT_LEN]);
/* The client's side: its private key c, the attested enclave key S, and the values
 * of the stream_key event. */
int sv3_init_receiver(sv3 *s, const x25519_key *client, const uint8_t enclave_pub[X25519_KEY_LEN],
                      const uint8_t epk[X25519_KEY_LEN], const uint8_t salt[HKDF_SALT_LEN],
                      const uint8_t request_hash[SV3_HASH_LEN]);

/* Seals the next element (ct has room for len bytes); 0 or -1. */
int sv3_seal(sv3 *s, sv3_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN]);
/* Opens the element the receiver expects next; -1 (and the count stays) when it is
 * not exactly that element. */
int sv3_open(sv3 *s, sv3_kind kind, const uint8_t *ct, size_t len, const uint8_t tag[GCM_TAG_LEN], uint8_t *pt);
/* The same for an element as it travels, {"seq", "ciphertext": hex, "auth_tag": hex}:
 * seq must be the expected index. *pt is malloc'd (the caller wipes and frees it). */
int sv3_open_json(sv3 *s, sv3_kind kind, const json_t *elem, uint8_t **pt, size_t *len);

void sv3_wipe(sv3 *s);

#endif

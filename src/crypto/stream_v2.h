/* stream_v2 — stream format 2: one key agreement per stream, then AES-256-GCM per
 * chunk (design.md, "Performance model").
 *
 * The enclave makes an ephemeral X25519 key per stream; with the client's
 * per-request public key it derives K = HKDF-SHA512(shared, salt,
 * "enclave-to-client-stream-v2", 32). Chunk i is sealed with IV = 8 zero bytes ||
 * be64(i) and AAD = "veil-stream-v2" || be64(i) || kind, so the client, counting
 * for itself, detects any dropped, reordered or substituted chunk. The last
 * element, an empty seal of kind END at index N, proves the stream was not cut.
 * Format 1 (one EncryptedPayload per chunk) stays the default for compatibility.
 * The stream state holds K and is wiped by sv2_wipe.
 */
#ifndef VEIL_CRYPTO_STREAM_V2_H
#define VEIL_CRYPTO_STREAM_V2_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/primitives.h"

#define SV2_CONTEXT "enclave-to-client-stream-v2"
#define SV2_AAD_LABEL "veil-stream-v2"

typedef enum sv2_kind { SV2_TEXT = 0, SV2_END = 1, SV2_THINKING = 2 } sv2_kind;

typedef struct sv2 {
    uint8_t key[AES256_KEY_LEN];
    uint64_t seq; /* the index of the next element */
} sv2;

/* The enclave's side: fills epk and salt, which go to the client in the clear. */
int sv2_init_sender(sv2 *s, const uint8_t client_pub[X25519_KEY_LEN], uint8_t epk[X25519_KEY_LEN],
                    uint8_t salt[HKDF_SALT_LEN]);
/* The client's side, with the private key whose public half it sent. */
int sv2_init_receiver(sv2 *s, const x25519_key *client, const uint8_t epk[X25519_KEY_LEN],
                      const uint8_t salt[HKDF_SALT_LEN]);

/* Seals the next element (ct has room for len bytes); 0 or -1. */
int sv2_seal(sv2 *s, sv2_kind kind, const uint8_t *pt, size_t len, uint8_t *ct, uint8_t tag[GCM_TAG_LEN]);
/* Opens the element the receiver expects next; -1 (and the count stays) when it
 * is not exactly that element. */
int sv2_open(sv2 *s, sv2_kind kind, const uint8_t *ct, size_t len, const uint8_t tag[GCM_TAG_LEN],
             uint8_t *pt);

/* The same for an element as it travels, {"ciphertext": hex, "auth_tag": hex}:
 * *pt is malloc'd (the caller wipes and frees it). -1 when malformed or not the
 * expected element. */
int sv2_open_json(sv2 *s, sv2_kind kind, const json_t *elem, uint8_t **pt, size_t *len);

void sv2_wipe(sv2 *s);

#endif

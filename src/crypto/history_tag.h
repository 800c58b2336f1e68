/* history_tag — a client's tag over each stored exchange of a session, chained, with
 * a key only the client holds (derived from the storage private key: the user's, or
 * the organization's in an org context). The server stores the tags beside the
 * messages and cannot make one: a forged, dropped or reordered message breaks the
 * chain when the client checks it (veil history).
 *
 *   K   = HKDF-SHA512(ikm = storage private key (32 bytes), salt = none,
 *                     info = "veil-history-v1", 32 bytes)
 *   tag = HMAC-SHA256(K, "veil-history-v1" || be32(len(session_id)) || session_id
 *                        || previous tag (32 zero bytes for the first)
 *                        || SHA-256(user EP raw) || SHA-256(assistant EP raw))
 * where "EP raw" is the envelope's decoded fields in the order of sv3_ep_hash. A tag
 * travels as 64 lower-case hex digits.
 */
#ifndef VEIL_CRYPTO_HISTORY_TAG_H
#define VEIL_CRYPTO_HISTORY_TAG_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/ep.h"

#define HISTORY_TAG_LABEL "veil-history-v1"
#define HISTORY_TAG_LEN 32

/* The chain's key from the storage private key; wipe it after use. 0 or -1. */
int history_tag_key(const uint8_t storage_priv[32], uint8_t key[32]);

/* The tag of one exchange, chained to prev (NULL: the first of the session). 0 or -1. */
int history_tag(const uint8_t key[32], const char *session_id, const uint8_t *prev, const ep *user_msg,
                const ep *assistant_msg, uint8_t out[HISTORY_TAG_LEN]);

#endif

/* request_open — a chat request opened inside the enclave: its plaintext turns
 * into the conversation sent to Bedrock. Format 1 and CHAT: the history turns
 * (sealed one by one to the enclave key for a stream, plain for CHAT), then the
 * sealed message. Format 3: the one envelope sealed to the attested key under its
 * own context, then, in the order the wire fixes, its shape, the binding of the
 * outer fields, issued_at within the window, and request_id once (recorded only
 * after the others passed, so a broken copy cannot burn an honest request's id).
 * Plaintext lives only in wiped buffers; nothing here logs.
 */
#ifndef VEIL_ENCLAVE_REQUEST_OPEN_H
#define VEIL_ENCLAVE_REQUEST_OPEN_H

#include <stdint.h>

#include "common/buf.h"
#include "crypto/primitives.h"
#include "crypto/stream_v3.h"
#include "enclave/history.h"
#include "enclave/protocol.h"
#include "enclave/replay.h"

/* Fills h (the history, then the user message last) and user_text (the message,
 * grown securely); for format 3 also request_hash (the sealed request's, whatever
 * else fails after decryption). ENCLAVE_OK, or the code with err's message:
 * BAD_REQUEST (malformed envelope, text or shape), DECRYPT_FAILED (sealed to another
 * key: the client's enclave key is stale), BINDING_MISMATCH, STALE_REQUEST,
 * REPLAYED_REQUEST, BUSY (the replay table is full), INTERNAL (memory). */
enclave_err request_open(const x25519_key *key, replay_cache *replay, const proto_chat_request *pr, history *h,
                         vbuf *user_text, uint8_t request_hash[SV3_HASH_LEN], proto_error *err);

#endif

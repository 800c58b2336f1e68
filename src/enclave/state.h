/* state — what every worker (event loop, thread) of one veil-enclave shares: the
 * transport key pair, the AWS credentials SET_CREDENTIALS stores, the format-3
 * replay table, and the counts of running chats and of parent connections. Every
 * function may be called from any thread.
 *
 * The key pair is made here and read-only afterwards. Credentials are an immutable
 * set swapped under a lock: a holder takes a reference (estate_creds_get), so a
 * chat keeps the set it signed with however often it is replaced, and a set is
 * wiped and freed when its last holder lets go. The counts are atomic and never
 * pass their limits. The replay table locks itself (replay.h). Never logs.
 */
#ifndef VEIL_ENCLAVE_STATE_H
#define VEIL_ENCLAVE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "aws/sigv4.h"
#include "crypto/primitives.h"
#include "enclave/replay.h"

#define ESTATE_DEFAULT_MAX_STREAMS 1024u
#define ESTATE_DEFAULT_REPLAY_MAX 65536u
#define ESTATE_DEFAULT_MAX_CONNECTIONS 4096u
#define ESTATE_EXPIRATION_MAX 64 /* bytes of a credentials' expiration text, NUL included */

typedef struct estate estate;
typedef struct estate_creds estate_creds;

typedef struct estate_config {
    unsigned max_streams;     /* running chats at once; 0: ESTATE_DEFAULT_MAX_STREAMS */
    size_t replay_max;        /* request ids kept at once; 0: ESTATE_DEFAULT_REPLAY_MAX */
    long replay_window_s;     /* how long an id is kept */
    unsigned max_connections; /* parent connections at once; 0: ESTATE_DEFAULT_MAX_CONNECTIONS */
} estate_config;

/* NULL on failure (err says why). */
estate *estate_new(const estate_config *cfg, char *err, size_t errlen);
/* After every core that uses it; drops the current credentials (wiped once the last
 * holder lets go) and the key. */
void estate_free(estate *s);

const x25519_key *estate_key(const estate *s);
const uint8_t *estate_public_key(const estate *s);    /* 32 bytes */
const char *estate_public_key_hex(const estate *s);   /* 64 hex chars */
replay_cache *estate_replay(estate *s);

/* Replaces the credentials (copied; expiration: NULL or shorter than
 * ESTATE_EXPIRATION_MAX, with expires_at; 0 = none).
 * -1 when out of memory: the previous set stays. */
int estate_creds_set(estate *s, const char *akid, const char *secret, const char *token,
                     const char *expiration, time_t expires_at);
/* The current set with a reference for the caller (estate_creds_put), or NULL. */
estate_creds *estate_creds_get(estate *s);
void estate_creds_put(estate_creds *c);
/* Borrowed from c: valid while the reference is held. */
sigv4_credentials estate_creds_sigv4(const estate_creds *c);
const char *estate_creds_expiration(const estate_creds *c); /* NULL: none given */
bool estate_creds_expired(const estate_creds *c, time_t now);

/* A chat slot: true and counted, or false when max_streams run already. */
bool estate_stream_take(estate *s);
void estate_stream_release(estate *s);
unsigned estate_streams(const estate *s);
unsigned estate_max_streams(const estate *s);

/* A parent connection: true and counted, or false when max_connections are open. */
bool estate_conn_take(estate *s);
void estate_conn_release(estate *s);
unsigned estate_conns(const estate *s);
unsigned estate_max_connections(const estate *s);

#endif

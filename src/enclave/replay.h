/* replay — the request ids of format-3 requests, each usable once. An id is kept
 * until its request could no longer pass the freshness check (issued_at + window),
 * in a table of bounded size: when every slot holds an id still inside its window,
 * a new request is refused as busy rather than an old id forgotten, so a replay is
 * never let through. No I/O; the caller passes the clock. One table serves every
 * worker thread of veil-enclave (a replay sent to another worker is still seen):
 * each call takes the table's lock.
 */
#ifndef VEIL_ENCLAVE_REPLAY_H
#define VEIL_ENCLAVE_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define REPLAY_ID_LEN 16

typedef struct replay_cache replay_cache;

typedef enum replay_rc {
    REPLAY_NEW = 0, /* first use: recorded */
    REPLAY_SEEN,    /* used before, within its window */
    REPLAY_FULL,    /* no room: the caller answers busy */
} replay_rc;

/* max ids at once (rounded up to a power of two internally); window in seconds. */
replay_cache *replay_new(size_t max, long window_s);
void replay_free(replay_cache *c);
replay_rc replay_check_and_record(replay_cache *c, const uint8_t id[REPLAY_ID_LEN], long long issued_at, time_t now);
size_t replay_count(replay_cache *c);

#endif

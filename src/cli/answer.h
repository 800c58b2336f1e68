/* answer — a stream format 3 answer as the CLI receives it (design.md "Trust
 * model"; shared/reference/stream-format-3.md): the SSE events of one bound
 * request, checked in order against the attested enclave key and the request's hash.
 *
 * It owns the stream's state (the key K, the next index) and the verdict. It never
 * accepts another format: format-1 chunks, another format's stream key (event types
 * it does not know are ignored, and cannot stand in for an element), an element
 * before the stream key, a second key, an element that does not open at its index, a missing
 * or bad end, all fail the answer with a reason. Text reaches the caller only once
 * its element has opened. Pure: no I/O; K is wiped by answer_wipe.
 */
#ifndef VEIL_CLI_ANSWER_H
#define VEIL_CLI_ANSWER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"
#include "crypto/ep.h"
#include "crypto/primitives.h"
#include "crypto/stream_v3.h"


typedef enum answer_state {
    ANSWER_WAIT_KEY = 0, /* before the stream key (the session event may come first) */
    ANSWER_STREAMING,    /* elements */
    ANSWER_STORED,       /* the end element opened; waiting for done */
    ANSWER_DONE,         /* done: answer_check_stored is next */
    ANSWER_FAILED,       /* the answer could not be verified: reason in error */
    ANSWER_SERVER_ERROR, /* the server sent its error event: its text in error */
} answer_state;

typedef struct answer {
    answer_state state;
    sv3 sv;
    const x25519_key *transport;  /* this request's key (borrowed) */
    uint8_t enclave_pub[X25519_KEY_LEN]; /* the attested key */
    uint8_t request_hash[SV3_HASH_LEN];
    char session_id[CLI_ID_MAX];      /* the session the request names */
    uint8_t end[SV3_END_LEN];            /* the end element: the stored messages' hashes */
    char user_id[CLI_ID_MAX], assistant_id[CLI_ID_MAX];
    char model[160];
    long in_tokens, out_tokens;
    unsigned text_elements;              /* text elements opened (and handed over) */
    char error[512];
} answer;

/* Text of an element that opened, in order (thinking is opened but not handed over). */
typedef void (*answer_text_fn)(void *ud, const uint8_t *text, size_t len);

void answer_init(answer *a, const x25519_key *transport, const uint8_t enclave_pub[X25519_KEY_LEN],
                 const uint8_t request_hash[SV3_HASH_LEN], const char *session_id);

/* One SSE event. 0: go on; 1: stop reading (the state is FAILED or SERVER_ERROR). */
int answer_feed(answer *a, const json_t *event, answer_text_fn on_text, void *ud);

/* After the stream closed: 0 when it ended properly (done after a verified end),
 * else -1 and the state FAILED (unless it already failed or carried an error). */
int answer_finish(answer *a);

/* The two stored messages the server returns for the ids of the stored event: 0 when
 * their hashes are the end element's, else -1 (FAILED). */
int answer_check_stored(answer *a, const ep *user_msg, const ep *assistant_msg);

void answer_wipe(answer *a);

#endif

/* bedrock_sim — the pure part of veil-bedrock-sim: routes, the Converse request check,
 * fault directives and the deterministic answer. No sockets, no logging.
 *
 * Answer rule (tests rebuild the expected text from it):
 *   delta 0          = "Echo: " + the text of the LAST user message (its text blocks
 *                      concatenated); if that text holds [[sim: ...]] directives they are
 *                      removed and the remainder is trimmed of surrounding whitespace,
 *                      otherwise it is echoed byte for byte;
 *   delta i (1..N-1) = " chunk <i>", right-padded with '.' to chunk-size bytes when
 *                      chunk-size is larger than that text.
 *   inputTokens = (bytes of every text of every message, as sent) / 4; outputTokens = N.
 *
 * Directives: `[[sim: KEY=VALUE ...]]` in the last user message, the `x-veil-sim` request
 * header (`KEY=VALUE ...`) or the server's --fault; later sources override earlier ones
 * (server < header < message). Keys: chunks, chunk-size, interval-ms, slow-first-byte,
 * fault (drop | bad-crc | throttle | validation | model-error | http-429 | http-500 |
 * http-400 | empty | hang | close-reused | slow-first-byte=MS | none). A bare token means
 * fault=TOKEN.
 * bsim_request owns its echo text and wipes it on free (it is a user's prompt).
 */
#ifndef VEIL_TOOLS_BEDROCK_SIM_H
#define VEIL_TOOLS_BEDROCK_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define BSIM_MAX_CHUNKS 1000000L
#define BSIM_MAX_CHUNK_SIZE (1L << 20)
#define BSIM_MAX_MS 600000L                     /* ten minutes of any delay */
#define BSIM_MAX_CONVERSE_ANSWER (64u << 20)    /* non-stream answers are built in memory */
#define BSIM_MAX_BODY (16u << 20)               /* request bodies */

typedef enum {
    BSIM_FAULT_NONE = 0,
    BSIM_FAULT_DROP,        /* close TCP after max(1, N/2) deltas, no terminating chunk */
    BSIM_FAULT_BAD_CRC,     /* corrupt the message CRC of delta 1 (delta 0 when N = 1) */
    BSIM_FAULT_THROTTLE,    /* after min(2, N) deltas: in-stream throttlingException */
    BSIM_FAULT_VALIDATION,  /* after min(2, N) deltas: in-stream validationException */
    BSIM_FAULT_MODEL_ERROR, /* after min(2, N) deltas: in-stream modelStreamErrorException */
    BSIM_FAULT_HTTP_429,    /* HTTP 429 ThrottlingException, no stream */
    BSIM_FAULT_HTTP_500,    /* HTTP 500 InternalServerException */
    BSIM_FAULT_HTTP_400,    /* HTTP 400 ValidationException */
    BSIM_FAULT_EMPTY,       /* no contentBlockDelta at all */
    BSIM_FAULT_HANG,        /* messageStart, then nothing until the client goes away */
    BSIM_FAULT_CLOSE_REUSED, /* on a kept-alive connection's 2nd+ request: close (close_notify)
                                without a byte of answer, the race a pooled client meets;
                                on a new connection: none */
} bsim_fault;

typedef struct bsim_options {
    long chunks;             /* N: number of contentBlockDelta events */
    long chunk_size;         /* pad deltas 1..N-1 to this many bytes (0: no padding) */
    long interval_ms;        /* pause before each delta after the first */
    long slow_first_byte_ms; /* pause before the response head */
    bsim_fault fault;
} bsim_options;

const char *bsim_fault_name(bsim_fault f); /* "none", "drop", ... (static) */

/* Applies "KEY=VALUE ..." (whitespace-separated) to o. On error returns -1 and writes
 * a message naming the offending token to err; o may then be partly updated. */
int bsim_apply_directive(bsim_options *o, const char *s, size_t n, char *err, size_t errlen);

typedef enum { BSIM_ROUTE_NONE = 0, BSIM_ROUTE_STREAM, BSIM_ROUTE_CONVERSE } bsim_route;

/* Matches POST /model/{id}/converse-stream and /model/{id}/converse; the id is
 * percent-decoded into model (NUL-terminated). NONE for anything else. */
bsim_route bsim_match_route(const char *method, size_t method_len, const char *path,
                            size_t path_len, char *model, size_t model_cap);

/* One of the 11 model ids of spec §3.5. */
bool bsim_model_known(const char *model);

typedef struct bsim_request {
    char *echo;       /* the last user text, directives stripped; owned, wiped on free */
    size_t echo_len;
    unsigned long input_tokens;
} bsim_request;

/* Parses and validates a Converse body, then applies the directives of its last user
 * message to o. Returns 0, or -1 with a ValidationException message in err. */
int bsim_parse_converse(const uint8_t *body, size_t len, bsim_options *o, bsim_request *out,
                        char *err, size_t errlen);
void bsim_request_free(bsim_request *r);

/* Appends delta i's text (see the rule above) to out. 0 or -1. */
int bsim_delta_text(const bsim_request *r, const bsim_options *o, long i, vbuf *out);

/* Bytes the whole answer takes (for the non-stream size limit). */
uint64_t bsim_answer_len(const bsim_request *r, const bsim_options *o);

#endif

/* history — turns decrypted history turns plus the new user message into the
 * strictly alternating user/assistant sequence Bedrock accepts.
 *
 * Roles are explicit ("user"/"assistant") or, when absent, by position as in the
 * original (even = user, odd = assistant). Consecutive turns of one role are
 * merged (joined by a blank line), so an odd history no longer produces two user
 * turns in a row (defect §10.7). A history that starts with an assistant turn is
 * rejected. The output owns secure copies of the texts; history_free wipes them.
 */
#ifndef VEIL_ENCLAVE_HISTORY_H
#define VEIL_ENCLAVE_HISTORY_H

#include <stddef.h>

#include "aws/bedrock.h"
#include "common/buf.h"

typedef enum turn_role { ROLE_USER = 0, ROLE_ASSISTANT = 1 } turn_role;

typedef struct history {
    bedrock_message *msgs; /* points into texts */
    vbuf *texts;
    size_t n, cap;
} history;

void history_init(history *h);
/* Appends one turn (merging with the previous one of the same role). 0 or -1 (ENOMEM). */
int history_add(history *h, turn_role role, const char *text, size_t len);
/* Checks the finished sequence: non-empty, starts and ends with user, alternating.
 * Returns NULL when valid, else a short reason. */
const char *history_check(const history *h);
void history_free(history *h);

/* "user" -> ROLE_USER, "assistant" -> ROLE_ASSISTANT; -1 otherwise. */
int turn_role_parse(const char *s);

#endif

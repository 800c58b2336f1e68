/* stored — a session as the server stores it, seen from the CLI: its creation, its
 * messages (GET /chat/sessions/{id}/messages) parsed for the history chain and for
 * the answer's end check, and the history tag the client puts on an exchange.
 *
 * Everything here is the server's word until chain.h or answer.h has checked it.
 * Bounded: at most stored_max_messages() messages ($VEIL_HISTORY_MAX_MESSAGES,
 * default CHAIN_DEFAULT_MAX_MESSAGES); ids must be cli_id_ok before they enter a
 * path. The parsed envelopes are owned here; nothing is decrypted here.
 */
#ifndef VEIL_CLI_STORED_H
#define VEIL_CLI_STORED_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "cli/chain.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "crypto/ep.h"

typedef struct stored_msgs {
    json_t *resp;      /* the server's answer: ids and roles point into it */
    size_t n;
    ep *eps;           /* owned */
    chain_msg *msgs;   /* content points into eps */
    const char **ids, **roles;
} stored_msgs;

/* $VEIL_HISTORY_MAX_MESSAGES, else CHAIN_DEFAULT_MAX_MESSAGES. */
size_t stored_max_messages(void);

int stored_fetch(vclient *c, const char *session_id, stored_msgs *out, char *err, size_t errlen);
/* The index of the message with this id, or -1. */
long stored_find(const stored_msgs *s, const char *id);
void stored_free(stored_msgs *s);

/* POST /chat/sessions: a new session in the caller's context; its id into id. */
int stored_create_session(vclient *c, char id[CLI_ID_MAX], char *err, size_t errlen);
/* DELETE /chat/sessions/{id}, best effort (a session this client made and never used). */
void stored_delete_session(vclient *c, const char *id);
/* PUT .../messages/{assistant_id}/history-tag. 0, or -1 with err. */
int stored_put_tag(vclient *c, const char *session_id, const char *assistant_id, const uint8_t tag[HISTORY_TAG_LEN],
                   char *err, size_t errlen);

#endif

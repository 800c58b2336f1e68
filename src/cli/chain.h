/* chain — the history chain of one session as the client checks it: each stored
 * exchange (a user message and the assistant's answer after it) carries the
 * client's tag (crypto/history_tag.h), chained to the tag of the exchange before it.
 *
 * It owns the verdict on every exchange: verified, untagged (an older or another
 * client's exchange: not verified, and the chain continues from the last tag),
 * forged (the tag fits no predecessor: the exchange was altered, or one before it
 * was removed) or reordered (the tag fits another place), and whether the last tag
 * this machine recorded for the session is still there (a dropped LAST exchange).
 * Pure: no I/O; the server's list is only read.
 */
#ifndef VEIL_CLI_CHAIN_H
#define VEIL_CLI_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/ep.h"
#include "crypto/history_tag.h"

/* The longest session the client checks (and loads): the check is quadratic in the
 * exchanges it cannot place, so a hostile server must not choose the count. */
#define CHAIN_DEFAULT_MAX_MESSAGES 4000

typedef struct chain_msg {
    bool assistant;          /* else a user message (or any other role) */
    const ep *content;       /* the stored envelope (borrowed) */
    bool has_tag;            /* an assistant message's history_tag */
    uint8_t tag[HISTORY_TAG_LEN];
} chain_msg;

typedef enum chain_status {
    CHAIN_VERIFIED = 0, /* the tag holds, chained to the tag shown before it */
    CHAIN_UNTAGGED,     /* a pair without a tag: not verified */
    CHAIN_UNPAIRED,     /* a message outside a user+assistant pair: not verified */
    CHAIN_FORGED,       /* the tag fits no predecessor */
    CHAIN_REORDERED,    /* the tag fits after another exchange (or first) */
} chain_status;

typedef struct chain_entry {
    size_t first;         /* the index of its first message in the list */
    size_t n_msgs;        /* 2 for a pair, 1 for an unpaired message */
    size_t exchange;      /* 1-based number among the pairs; 0 for an unpaired message */
    chain_status status;
    size_t after;         /* REORDERED: the exchange its tag follows (0: it is the first) */
} chain_entry;

typedef struct chain_report {
    chain_entry *entries; /* in the list's order */
    size_t n;
    size_t verified, untagged, unpaired, forged, reordered;
    bool record_missing;  /* the recorded last tag is none of the stored tags */
    bool has_last;        /* the tag a new exchange chains to (the last stored one) */
    uint8_t last[HISTORY_TAG_LEN];
} chain_report;

/* Checks the list with the chain's key (history_tag_key). recorded: the last tag
 * this machine made for the session, or NULL. 0, or -1 (out of memory). */
int chain_check(const uint8_t key[32], const char *session_id, const chain_msg *msgs, size_t n,
                const uint8_t *recorded, chain_report *out);
/* Forged, reordered or a missing recorded tag: what the client must not pass off
 * as the session's history. */
bool chain_broken(const chain_report *r);
void chain_report_free(chain_report *r);

/* "verified", "untagged", "unpaired", "forged", "reordered" */
const char *chain_status_name(chain_status s);

#endif

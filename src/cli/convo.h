/* convo — one conversation with the enclave in stream format 3, as chat and ask hold
 * it (design.md "Trust model"): the attested enclave key, the storage key (derived here
 * from the private key the client opened, the user's or the org's; never the server's
 * word) and the history chain's key, the session and its last tag, the plain turns. One
 * bound request per prompt (convo_send): the whole request sealed once to the attested
 * key, the answer checked element by element (answer.h) and against the stored messages
 * read back, the exchange tagged (crypto/history_tag.h), stored and recorded (tagrec.h).
 * A stored session is read back with its chain checked (convo_history_load).
 *
 * It owns the keys and the plaintext turns and wipes them (convo_free); it prints the
 * answer live through the terminal filter when asked to, and nothing else.
 */
#ifndef VEIL_CLI_CONVO_H
#define VEIL_CLI_CONVO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/answer.h"
#include "cli/chain.h"
#include "cli/cli.h"
#include "cli/client.h"
#include "cli/stored.h"
#include "cli/term.h"
#include "cli/trust.h"
#include "common/buf.h"
#include "common/secret.h"
#include "crypto/history_tag.h"

typedef struct convo_turn {
    char role[16];
    vbuf text; /* plaintext, wiped */
} convo_turn;

typedef struct convo {
    vclient *c;
    cli_trust *trust; /* what the enclave's key must prove before anything is sealed to it */
    char model[160];
    char session_id[CLI_ID_MAX];
    uint8_t enclave_pub[32];
    bool have_key;
    /* The storage key: the user's own, or the organization's in an org context. The
     * public half is derived here from the private key the client opened itself,
     * never taken from the server; the chain's key comes from the private half. */
    uint8_t storage_priv[32];
    char storage_pub[65];
    uint8_t tag_key[32];
    bool has_last; /* the session's last tag: the next exchange chains to it */
    uint8_t last_tag[HISTORY_TAG_LEN];
    convo_turn *turns;
    size_t n, cap;
    bool live; /* print chunks as they arrive */
    FILE *out;
} convo;

typedef struct convo_reply {
    vbuf answer;    /* the opened text, wiped */
    answer ans;
    bool shown;     /* some of it reached the terminal */
    term_filter tf; /* the live answer, made safe for the terminal */
    char warning[CLI_ERR_MAX]; /* a verified answer whose tag could not be kept */
    convo *cv;
} convo_reply;

typedef struct convo_history {
    stored_msgs s;
    chain_report rep;
    secret *texts; /* each message, opened with the storage key */
} convo_history;

/* The conversation's client, attestation policy and model; nothing fetched yet. */
void convo_init(convo *cv, vclient *c, cli_trust *trust, const char *model);
/* The enclave's key, attested (trust.h): before the first seal and after a restart. */
int convo_attest(convo *cv, char *err, size_t errlen);
/* The storage key pair and the chain's key, from the user's private key (the cache or
 * the passcode) and, in an org context, the org key opened from the membership copy. */
int convo_open_storage(convo *cv, const char *pfile, char *err, size_t errlen);
/* Fetches a session, checks its chain (with this machine's record) and opens its
 * messages with the storage key. */
int convo_history_load(convo *cv, const char *session, convo_history *h, char *err, size_t errlen);
void convo_history_free(convo_history *h);
/* "2 forged, 1 out of order, the last exchange missing" */
void convo_describe_breaks(const chain_report *r, char *out, size_t n);
/* --session: the stored history joins the conversation, only if its chain holds. */
int convo_load_session(convo *cv, const char *session, char *err, size_t errlen);
/* One prompt as a bound request (a new chat's session made first), its calls on one
 * kept-alive connection; on success the pair joins the conversation and rp holds the
 * verified answer. An instance whose enclave has another key (behind a load balancer)
 * answers 409: its offer is checked (trust.h), the enclave that takes the retry is
 * attested afresh, and the request resealed once. -1 with err otherwise (an answer
 * that failed a check: "the answer could not be verified: ..."). */
int convo_send(convo *cv, const char *prompt, convo_reply *rp, char *err, size_t errlen);
void convo_free(convo *cv);

#endif

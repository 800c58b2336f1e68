/* chain — a session's history chain, checked (see chain.h). */
#include "cli/chain.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[] = {
    [CHAIN_VERIFIED] = "verified", [CHAIN_UNTAGGED] = "untagged", [CHAIN_UNPAIRED] = "unpaired",
    [CHAIN_FORGED] = "forged",     [CHAIN_REORDERED] = "reordered",
};

const char *chain_status_name(chain_status s)
{
    return (size_t)s < sizeof NAMES / sizeof NAMES[0] ? NAMES[s] : "?";
}

/* 1 when the pair's stored tag is the one chained to prev (NULL: the first), 0 when
 * not, -1 when the MAC cannot be computed. */
static int tag_fits(const uint8_t key[32], const char *sid, const uint8_t *prev, const chain_msg *user,
                    const chain_msg *assistant)
{
    uint8_t t[HISTORY_TAG_LEN];
    if (history_tag(key, sid, prev, user->content, assistant->content, t) < 0)
        return -1;
    return CRYPTO_memcmp(t, assistant->tag, sizeof t) == 0;
}

/* Where a tag that does not follow the one shown before it belongs: first (after 0),
 * or after another exchange of the list. 1 with *after, 0 when nowhere, -1 on error. */
static int find_place(const uint8_t key[32], const char *sid, const chain_msg *msgs, const chain_report *r,
                      const chain_entry *e, const uint8_t *shown_prev, size_t *after)
{
    int fit = 0;
    if (shown_prev && (fit = tag_fits(key, sid, NULL, &msgs[e->first], &msgs[e->first + 1])) != 0) {
        *after = 0;
        return fit;
    }
    for (size_t k = 0; k < r->n; k++) {
        const chain_entry *o = &r->entries[k];
        const chain_msg *oa = &msgs[o->first + 1];
        if (o == e || o->n_msgs != 2 || !oa->has_tag || (shown_prev && memcmp(oa->tag, shown_prev, HISTORY_TAG_LEN) == 0))
            continue;
        if ((fit = tag_fits(key, sid, oa->tag, &msgs[e->first], &msgs[e->first + 1])) != 0) {
            *after = o->exchange;
            return fit;
        }
    }
    return 0;
}

/* Pairs each user message with the assistant's answer right after it. */
static void pair_up(const chain_msg *msgs, size_t n, chain_report *r)
{
    size_t pairs = 0;
    for (size_t i = 0; i < n;) {
        chain_entry *e = &r->entries[r->n++];
        e->first = i;
        if (!msgs[i].assistant && i + 1 < n && msgs[i + 1].assistant) {
            e->n_msgs = 2;
            e->exchange = ++pairs;
            i += 2;
        } else {
            e->n_msgs = 1;
            i++;
        }
    }
}

static void count(chain_report *r, chain_status s)
{
    switch (s) {
    case CHAIN_VERIFIED: r->verified++; break;
    case CHAIN_UNTAGGED: r->untagged++; break;
    case CHAIN_UNPAIRED: r->unpaired++; break;
    case CHAIN_FORGED: r->forged++; break;
    case CHAIN_REORDERED: r->reordered++; break;
    }
}

int chain_check(const uint8_t key[32], const char *session_id, const chain_msg *msgs, size_t n,
                const uint8_t *recorded, chain_report *out)
{
    memset(out, 0, sizeof *out);
    if (!(out->entries = calloc(n ? n : 1, sizeof *out->entries)))
        return -1;
    pair_up(msgs, n, out);
    const uint8_t *prev = NULL; /* the stored tag of the last tagged exchange shown */
    bool record_seen = false;
    for (size_t i = 0; i < out->n; i++) {
        chain_entry *e = &out->entries[i];
        const chain_msg *last = &msgs[e->first + e->n_msgs - 1];
        if (!last->assistant || !last->has_tag) {
            e->status = e->n_msgs == 2 ? CHAIN_UNTAGGED : CHAIN_UNPAIRED;
        } else if (e->n_msgs == 1) {
            e->status = CHAIN_FORGED; /* the client tags whole exchanges only: its partner is gone */
        } else {
            int fit = tag_fits(key, session_id, prev, &msgs[e->first], last);
            if (fit == 0) {
                int place = find_place(key, session_id, msgs, out, e, prev, &e->after);
                fit = place < 0 ? -1 : place ? 2 : 0;
            }
            if (fit < 0) {
                chain_report_free(out);
                return -1;
            }
            e->status = fit == 1 ? CHAIN_VERIFIED : fit == 2 ? CHAIN_REORDERED : CHAIN_FORGED;
        }
        if (last->assistant && last->has_tag) {
            /* the chain goes on from what is stored, so one altered exchange is one report */
            prev = last->tag;
            if (recorded && memcmp(recorded, last->tag, HISTORY_TAG_LEN) == 0)
                record_seen = true;
        }
        count(out, e->status);
    }
    out->record_missing = recorded && !record_seen;
    if ((out->has_last = prev != NULL))
        memcpy(out->last, prev, HISTORY_TAG_LEN);
    return 0;
}

bool chain_broken(const chain_report *r)
{
    return r->forged || r->reordered || r->record_missing;
}

void chain_report_free(chain_report *r)
{
    free(r->entries);
    memset(r, 0, sizeof *r);
}

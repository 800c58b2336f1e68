/* tagrec — the CLI's local record of the last history tag it made per session,
 * beside the config (history_tags, mode 0600): the server can drop a session's LAST
 * exchange without breaking the chain, but not without losing the tag recorded here.
 *
 * One line per session, `SESSION_ID TAG_HEX`, the most recently tagged last; at most
 * TAGREC_MAX_SESSIONS lines (the oldest go first). Read only if it is a regular file
 * of the user's with no group or other bits, opened without following links; written
 * as a new file (O_EXCL | O_NOFOLLOW) renamed over the old one, under a lock file,
 * so two clients at once do not lose each other's update. Tags are not secrets.
 */
#ifndef VEIL_CLI_TAGREC_H
#define VEIL_CLI_TAGREC_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/history_tag.h"

#define TAGREC_MAX_SESSIONS 10000

/* The record's path: history_tags next to the config file. */
const char *tagrec_path(char *out, size_t n);

/* The session's recorded tag: 0 with tag; 1 when none is recorded; -1 with err when
 * the record is unsafe or malformed. */
int tagrec_get(const char *session_id, uint8_t tag[HISTORY_TAG_LEN], char *err, size_t errlen);
/* Records tag as the session's last. 0, or -1 with err. */
int tagrec_put(const char *session_id, const uint8_t tag[HISTORY_TAG_LEN], char *err, size_t errlen);

#endif

/* user_limits — what one signed-in user may hold of veild at a time: concurrent
 * chat streams (each one holds an enclave slot and burns Bedrock quota), and a
 * request rate (a token bucket: `rate` requests per second, bursts of `burst`).
 *
 * Keyed by the verified user id. The table is bounded: entries of users with no
 * stream and a full bucket are dropped when room is needed, so its size follows
 * the users active in the last few seconds, never the users ever seen.
 */
#ifndef VEIL_SERVER_USER_LIMITS_H
#define VEIL_SERVER_USER_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct user_limits user_limits;

typedef struct user_limits_config {
    unsigned max_streams; /* concurrent streams per user */
    double rate;          /* requests per second per user (0: no rate limit) */
    double burst;         /* bucket size */
    size_t max_users;     /* table bound */
} user_limits_config;

user_limits *ul_new(const user_limits_config *cfg);
void ul_free(user_limits *ul);

/* Takes one request token. Returns 0 when allowed, else the whole seconds after
 * which a token will be there (for Retry-After). */
unsigned ul_take_request(user_limits *ul, const char *user);

/* One more stream for user: false when the user is at max_streams (or the table is
 * full of users with streams). Every true is paired with one ul_stream_release. */
bool ul_stream_acquire(user_limits *ul, const char *user);
void ul_stream_release(user_limits *ul, const char *user);
unsigned ul_streams(const user_limits *ul, const char *user);

#endif

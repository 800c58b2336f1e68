/* auth — bearer-token authentication for routes: Clerk RS256 JWTs verified
 * against a JWKS (a local file or the issuer's URL, cached), yielding the
 * caller's jwt_auth. Failures carry the original's status and detail text. Never logs a
 * token.
 */
#ifndef VEIL_SERVER_AUTH_H
#define VEIL_SERVER_AUTH_H

#include "auth/jwt.h"
#include "server/settings.h"

struct event_base;

typedef struct auth_state auth_state;
typedef struct auth_wait auth_wait;

/* status 0 on success (who is the caller, valid during the call only), else 401/503
 * with the detail text (who is NULL). */
typedef void (*auth_cb)(void *ud, int status, const char *detail, const jwt_auth *who);

auth_state *auth_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen);
void auth_free(auth_state *a);

/* Verifies token. Calls cb synchronously when it can (returns NULL), else later
 * from the loop (returns a handle that auth_wait_cancel drops). */
auth_wait *auth_verify(auth_state *a, const char *token, auth_cb cb, void *ud);
void auth_wait_cancel(auth_wait *w);

#endif

/* load_users — veil-load's users of veild (--through): a dev token each (signed by
 * src/auth's jwt_sign_rs256 with the key `veil dev-token --key` made, whose JWKS
 * veild reads), then /users/sync, an X25519 key pair on /users/me/keys and a session,
 * and the enclave key from /enclave/info. Each user keeps its idle keep-alive
 * connections and has --streams-per-user slots in one ring of free slots: a stream
 * takes the oldest, so no user ever runs more streams at once than veild allows
 * (VEIL_USER_MAX_STREAMS). Internal to veil-load; owns the users and their tokens.
 */
#ifndef VEIL_TOOLS_LOAD_USERS_H
#define VEIL_TOOLS_LOAD_USERS_H

#include <stdbool.h>
#include <sys/socket.h>

#include "veil_load.h"

typedef struct tuser {
    long index;
    char *token;
    char session[64];
    uint8_t pub[X25519_KEY_LEN]; /* the user's key pair's public half: veild's storage key */
    char pub_hex[2 * X25519_KEY_LEN + 1];
    struct lh_conn **idle; /* keep-alive connections, at most per_user */
    int n_idle;
    /* setup */
    int step;
    vbuf body;
    int status;
} tuser;

/* A connection for u: one of its idle ones, else a new one (NULL with err). */
struct lh_conn *lu_conn(load *L, tuser *u, bool *reused, char *err, size_t errlen);
/* c goes back to u's idle ones when it may carry another request; else closed. */
void lu_keep(load *L, tuser *u, struct lh_conn *c);
/* The user of the oldest free slot, or NULL; the slot goes back with lu_give_slot. */
tuser *lu_take_slot(load *L);
void lu_give_slot(load *L, tuser *u);
/* The same after ms: veild counts a stream whose client left until it has seen the
 * close, so a client that starts its next chat at that instant gets 429. */
void lu_give_slot_later(load *L, tuser *u, long ms);
/* The Host header of the requests. */
const char *lu_host(const load *L);

#endif

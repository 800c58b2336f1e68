/* server — veild's server object. server_new builds its subsystems in order: the
 * store (the migrations, then the DB workers' pool: db_pool.h), auth (the JWKS
 * cache), the enclave client, the credential refresher, the route table, then the
 * HTTP engine; server_free stops the pool (its jobs' requests get their answers),
 * ends the requests still held and frees them in reverse (redis's initServer).
 * The server owns all of them; the caller owns the event base, the process setup,
 * signals and timers. Nothing here runs a statement on the loop's thread.
 */
#ifndef VEIL_SERVER_SERVER_H
#define VEIL_SERVER_SERVER_H

#include <stddef.h>

#include "server/settings.h"

struct event_base;
typedef struct server server;

/* NULL + err ("database: ...", "auth: ...", "enclave: ...", "credentials: ...") on a
 * subsystem that cannot start; what was built is freed. cfg is copied. */
server *server_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen);
/* Shutdown, after the loop stopped: ends every held request (server_close_held),
 * then frees the subsystems in reverse order of server_new. */
void server_free(server *s);

/* Binds the listen address; fills the bound address text (with the real port). */
int server_listen(server *s, char *bound, size_t n, char *err, size_t errlen);
/* Starts the background work: the enclave key fetch (the enclave may be down: health
 * says so and the client keeps retrying, §10.14) and the credential pushes. */
void server_start(server *s);
/* The one start-up line, "event=listening addr=... mode=... enclave=... db=... auth=...". */
void server_log_listening(server *s, const char *bound);

/* Shutdown: no new connections; open ones finish what they hold. */
void server_stop_accepting(server *s);
/* Shutdown: ends every held request (their on_close runs; an SSE reply is ended,
 * others get 503) so that freeing the HTTP server finds none in flight. */
void server_close_held(server *s);
/* Requests waiting on the loop (streams, auth fetches): what a drain waits for. */
unsigned server_held(const server *s);

/* Timer work. nitro: notice an enclave restart (a new key) and give an enclave that
 * lost its credentials new ones. */
void server_probe_enclave(server *s);
/* Queues the deletion of sessions that a failed first message left empty for
 * longer than VEIL_EMPTY_SESSION_TTL_SECONDS (at most 1000 a call) on a DB worker;
 * skipped (and logged) when the queue is full. */
void server_sweep_empty_sessions(server *s);

#endif

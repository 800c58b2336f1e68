/* workers — veil-enclave's event loops: one per thread (a vCPU each), each with its
 * own enclave core (Bedrock client, upstream pool, requests) and server (its
 * connections), over one shared estate (key pair, credentials, replay table, stream
 * and connection counts).
 *
 * One acceptor, on the caller's (control) loop, accepts every parent connection and
 * hands its descriptor through a pipe to the worker with the fewest connections
 * (ties: the lowest index, so that a parent that connects one at a time keeps
 * reusing one worker's kept-alive Bedrock connections). One acceptor rather than a
 * listener per worker with SO_REUSEPORT, because vsock, the enclave's transport,
 * has no SO_REUSEPORT; the hand-off costs one pipe write per connection, not per
 * request. Owns the threads, loops, cores and servers; borrows the control loop.
 */
#ifndef VEIL_ENCLAVE_WORKERS_H
#define VEIL_ENCLAVE_WORKERS_H

#include <stddef.h>
#include <time.h>

#include "enclave/enclave.h"
#include "enclave/server.h"

#define ENCLAVE_MAX_WORKERS 256

typedef struct enclave_workers enclave_workers;

typedef struct enclave_workers_config {
    unsigned workers;                    /* 1 .. ENCLAVE_MAX_WORKERS */
    const enclave_config *core;          /* every worker's core; its limits are the process's */
    const enclave_server_config *server; /* every worker's server (NULL: defaults) */
} enclave_workers_config;

/* Builds the shared state and every worker (nothing runs yet); the acceptor takes
 * listen_fd (closed on failure too). */
enclave_workers *enclave_workers_new(struct event_base *control, int listen_fd, const enclave_workers_config *cfg,
                                     char *err, size_t errlen);
/* Starts the worker threads and the acceptor. -1 if a thread could not start. */
int enclave_workers_start(enclave_workers *w, char *err, size_t errlen);
/* SIGTERM: stop accepting; every worker lets its streams run until they end or
 * until deadline, then ends the rest with an error event and stops its loop. When
 * the last worker stopped, the control loop exits. */
void enclave_workers_drain(enclave_workers *w, time_t deadline);
/* A second signal: every worker's loop stops at once (the control loop exits when
 * they have). */
void enclave_workers_stop(enclave_workers *w);
/* Every worker's running chats. */
unsigned enclave_workers_active_streams(const enclave_workers *w);
/* Waits for the threads, then closes every connection and frees it all. */
void enclave_workers_free(enclave_workers *w);

#endif

/* server — the veil-enclave socket server: accepts parent connections on any
 * veil address and runs the enclave protocol over each.
 *
 * Framing: each request is one JSON object, either unframed (the original's form,
 * parsed as soon as it is complete, or at EOF / half-close) or followed by a
 * newline. After a bare request (nothing follows its object) the connection is
 * closed once the reply or the stream's last event is written, as the original
 * did; a newline-framed connection may carry many requests in turn. Replies and
 * stream events are one JSON object per line. Requests above max_request bytes
 * get an error reply and the connection is closed. Many connections and streams
 * run at once on one event loop. Owns its connections; borrows the core and the
 * loop. A server accepts on its own listener, or (veil-enclave's workers) serves
 * connections another thread accepted and hands it; either way each connection is
 * counted against the process's cap (the core's estate), and one past it gets an
 * error line (busy) and is closed.
 */
#ifndef VEIL_ENCLAVE_SERVER_H
#define VEIL_ENCLAVE_SERVER_H

#include <stddef.h>

#include "enclave/enclave.h"

#define ENCLAVE_DEFAULT_MAX_REQUEST (8u << 20) /* 8 MiB */

typedef struct enclave_server enclave_server;

typedef struct enclave_server_config {
    size_t max_request;           /* 0: ENCLAVE_DEFAULT_MAX_REQUEST */
    unsigned idle_timeout_ms;     /* a connection with no request in progress; 0: 600 s */
    size_t max_pending_output;    /* a parent this far behind is cut off; 0: 64 MiB */
} enclave_server_config;

/* Takes ownership of listen_fd; -1: no listener (connections come by
 * enclave_server_adopt). */
enclave_server *enclave_server_new(struct event_base *base, enclave_core *core, int listen_fd,
                                   const enclave_server_config *cfg, char *err, size_t errlen);
void enclave_server_stop_accepting(enclave_server *s);
/* Its connections, and those announced by enclave_server_reserve and not adopted
 * yet. Any thread may ask. */
unsigned enclave_server_connections(const enclave_server *s);
/* From the accepting thread: a connection is on its way to s (counted from now, so
 * the next choice of a server sees it). The caller took its place under the
 * estate's cap (estate_conn_take). */
void enclave_server_reserve(enclave_server *s);
/* From the same thread: the reserved connection will not come after all. */
void enclave_server_unreserve(enclave_server *s);
/* On s's thread: serves fd, which enclave_server_reserve announced. On failure fd
 * is closed and both counts given back. */
void enclave_server_adopt(enclave_server *s, int fd);
/* Refuses an accepted fd past the cap: one busy error line, then close. */
void enclave_server_refuse(int fd, unsigned max_connections);
/* Closes every connection (cancelling their requests) and the listener. */
void enclave_server_free(enclave_server *s);

#endif

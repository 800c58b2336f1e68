/* addr — the one address syntax of every veil program, and its sockets.
 *
 *   vsock:CID:PORT   CID is a number or ANY (listen); the parent is always CID 3
 *   unix:PATH        a filesystem socket; unix:@NAME is the abstract namespace
 *   tcp:HOST:PORT    HOST is a name, an IPv4 literal or [IPv6]; PORT 0 = any (listen)
 *
 * Network helpers take a caller-owned error buffer (redis anet style) and never
 * log. Returned descriptors are close-on-exec; the caller owns and closes them.
 */
#ifndef VEIL_ADDR_H
#define VEIL_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VSOCK_CID_ANY 0xFFFFFFFFu /* VMADDR_CID_ANY */
#define VSOCK_CID_PARENT 3u       /* the parent instance is always CID 3 */

typedef enum { ADDR_TCP = 1, ADDR_UNIX, ADDR_VSOCK } addr_kind;

typedef struct veil_addr {
    addr_kind kind;
    char host[256];  /* ADDR_TCP, without brackets */
    uint16_t port;   /* ADDR_TCP */
    char path[108];  /* ADDR_UNIX; a leading '@' means abstract */
    uint32_t cid;    /* ADDR_VSOCK */
    uint32_t vport;  /* ADDR_VSOCK */
} veil_addr;

int addr_parse(const char *s, veil_addr *a, char *err, size_t errlen);
/* The canonical text form; returns out. */
const char *addr_format(const veil_addr *a, char *out, size_t n);

/* Binds and listens; the socket is non-blocking. A stale unix socket file is
 * replaced only when nothing is listening on it. Returns fd or -1. */
int addr_listen(const veil_addr *a, int backlog, char *err, size_t errlen);

/* Connects, trying every resolved address in turn. nonblock: the returned fd is
 * non-blocking and the connect may still be in progress (check SO_ERROR when it
 * becomes writable). Returns fd or -1. */
int addr_connect(const veil_addr *a, bool nonblock, char *err, size_t errlen);

/* The local TCP port of a bound socket (for tcp:HOST:0), or -1. */
int addr_local_port(int fd);

int fd_set_nonblock(int fd, bool on);

#endif

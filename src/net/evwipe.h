/* evwipe — libevent's buffers without secrets left in freed memory.
 *
 * Bytes a peer sends (a bearer token in a request head, credentials, ciphertext)
 * sit in libevent's evbuffer chains, which libevent frees, copies on pullup and
 * reallocates without wiping. evwipe_install() gives libevent allocators that wipe
 * every block before it goes back (the whole usable size); a program calls it once,
 * first thing, before it makes any libevent object. evbuffer_drain_wiped() wipes
 * the bytes it drains where they lie, for programs or buffers that do without.
 */
#ifndef VEIL_NET_EVWIPE_H
#define VEIL_NET_EVWIPE_H

#include <stddef.h>

struct evbuffer;

/* libevent's malloc, realloc and free, wiping what they release. Call before any
 * other libevent call of the process (libevent's rule for event_set_mem_functions). */
void evwipe_install(void);

/* Drains n bytes from in after wiping them in place. */
void evbuffer_drain_wiped(struct evbuffer *in, size_t n);

#endif

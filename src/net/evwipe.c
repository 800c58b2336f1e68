/* evwipe — see evwipe.h. */
#include "net/evwipe.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "common/secret.h"

/* realloc that leaves no copy behind: a new block, the old one wiped and freed. */
static void *wiping_realloc(void *p, size_t n)
{
    if (!p)
        return malloc(n);
    if (n == 0) {
        secret_free_block(p);
        return NULL;
    }
    size_t old = malloc_usable_size(p);
    if (n <= old)
        return p; /* shrinking in place: nothing is copied or released */
    void *q = malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, old);
    secret_free_block(p);
    return q;
}

void evwipe_install(void)
{
    event_set_mem_functions(malloc, wiping_realloc, secret_free_block);
}

void evbuffer_drain_wiped(struct evbuffer *in, size_t n)
{
    while (n > 0) {
        struct evbuffer_iovec v[16];
        int k = evbuffer_peek(in, (ev_ssize_t)n, NULL, v, 16);
        size_t done = 0;
        for (int i = 0; i < k && i < 16 && done < n; i++) {
            size_t len = v[i].iov_len < n - done ? v[i].iov_len : n - done;
            secure_wipe(v[i].iov_base, len);
            done += len;
        }
        if (done == 0)
            return;
        evbuffer_drain(in, done);
        n -= done;
    }
}

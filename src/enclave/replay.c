#include "enclave/replay.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    uint8_t id[REPLAY_ID_LEN];
    long long expires; /* 0: empty */
} slot;

struct replay_cache {
    pthread_mutex_t lock; /* the workers share the table */
    slot *s;
    size_t cap, n, max;
    long window;
};

replay_cache *replay_new(size_t max, long window_s)
{
    replay_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->max = max;
    c->window = window_s;
    c->cap = 16;
    while (c->cap < 2 * max) /* at most half full: probes stay short */
        c->cap <<= 1;
    c->s = calloc(c->cap, sizeof *c->s);
    if (!c->s || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->s);
        free(c);
        return NULL;
    }
    return c;
}

void replay_free(replay_cache *c)
{
    if (c) {
        pthread_mutex_destroy(&c->lock);
        free(c->s);
        free(c);
    }
}

size_t replay_count(replay_cache *c)
{
    pthread_mutex_lock(&c->lock);
    size_t n = c->n;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* Ids are random 16 bytes: their first bytes are a good enough hash. */
static size_t home(const replay_cache *c, const uint8_t id[REPLAY_ID_LEN])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return (size_t)(h & (c->cap - 1));
}

static void put(replay_cache *c, const uint8_t id[REPLAY_ID_LEN], long long expires)
{
    size_t i = home(c, id);
    while (c->s[i].expires)
        i = (i + 1) & (c->cap - 1);
    memcpy(c->s[i].id, id, REPLAY_ID_LEN);
    c->s[i].expires = expires;
    c->n++;
}

/* Drops every id past its window (linear probing: rebuild rather than delete). */
static void prune(replay_cache *c, time_t now)
{
    slot *old = c->s;
    slot *fresh = calloc(c->cap, sizeof *fresh);
    if (!fresh)
        return;
    c->s = fresh;
    c->n = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (old[i].expires && old[i].expires >= (long long)now)
            put(c, old[i].id, old[i].expires);
    free(old);
}

/* The check and the record are one step under the lock: two workers given the same
 * id at once must not both find it new. */
static replay_rc check_and_record(replay_cache *c, const uint8_t id[REPLAY_ID_LEN], long long issued_at, time_t now)
{
    for (size_t i = home(c, id); c->s[i].expires; i = (i + 1) & (c->cap - 1))
        if (memcmp(c->s[i].id, id, REPLAY_ID_LEN) == 0 && c->s[i].expires >= (long long)now)
            return REPLAY_SEEN;
    if (c->n >= c->max)
        prune(c, now);
    if (c->n >= c->max)
        return REPLAY_FULL;
    put(c, id, issued_at + c->window);
    return REPLAY_NEW;
}

replay_rc replay_check_and_record(replay_cache *c, const uint8_t id[REPLAY_ID_LEN], long long issued_at, time_t now)
{
    pthread_mutex_lock(&c->lock);
    replay_rc rc = check_and_record(c, id, issued_at, now);
    pthread_mutex_unlock(&c->lock);
    return rc;
}

#include "server/http/user_limits.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BUCKETS 16384u /* power of two */

typedef struct entry {
    struct entry *next;
    unsigned streams;
    double tokens;
    double last_s; /* monotonic seconds of the last refill */
    char user[];
} entry;

struct user_limits {
    user_limits_config cfg;
    entry *b[BUCKETS];
    size_t n;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

user_limits *ul_new(const user_limits_config *cfg)
{
    user_limits *ul = calloc(1, sizeof *ul);
    if (ul)
        ul->cfg = *cfg;
    return ul;
}

void ul_free(user_limits *ul)
{
    if (!ul)
        return;
    for (size_t i = 0; i < BUCKETS; i++) {
        for (entry *e = ul->b[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(ul);
}

static void refill(const user_limits *ul, entry *e, double now)
{
    e->tokens += (now - e->last_s) * ul->cfg.rate;
    if (e->tokens > ul->cfg.burst)
        e->tokens = ul->cfg.burst;
    e->last_s = now;
}

/* Drops every entry that holds nothing: no stream, and a full bucket. */
static void sweep(user_limits *ul, double now)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        for (entry **pp = &ul->b[i]; *pp;) {
            entry *e = *pp;
            refill(ul, e, now);
            if (e->streams == 0 && e->tokens >= ul->cfg.burst) {
                *pp = e->next;
                free(e);
                ul->n--;
            } else {
                pp = &e->next;
            }
        }
    }
}

static entry *find(const user_limits *ul, const char *user)
{
    for (entry *e = ul->b[hash(user) & (BUCKETS - 1)]; e; e = e->next)
        if (strcmp(e->user, user) == 0)
            return e;
    return NULL;
}

static entry *get(user_limits *ul, const char *user, double now)
{
    entry *e = find(ul, user);
    if (e)
        return e;
    if (ul->n >= ul->cfg.max_users)
        sweep(ul, now);
    if (ul->n >= ul->cfg.max_users)
        return NULL;
    size_t len = strlen(user);
    e = calloc(1, sizeof *e + len + 1);
    if (!e)
        return NULL;
    memcpy(e->user, user, len + 1);
    e->tokens = ul->cfg.burst;
    e->last_s = now;
    uint32_t i = hash(user) & (BUCKETS - 1);
    e->next = ul->b[i];
    ul->b[i] = e;
    ul->n++;
    return e;
}

unsigned ul_take_request(user_limits *ul, const char *user)
{
    if (ul->cfg.rate <= 0)
        return 0;
    double now = now_s();
    entry *e = get(ul, user, now);
    if (!e)
        return 0; /* the table is full of active users: no bucket, no limit */
    refill(ul, e, now);
    if (e->tokens >= 1.0) {
        e->tokens -= 1.0;
        return 0;
    }
    double wait = (1.0 - e->tokens) / ul->cfg.rate;
    unsigned secs = (unsigned)wait;
    if ((double)secs < wait)
        secs++;
    return secs ? secs : 1;
}

bool ul_stream_acquire(user_limits *ul, const char *user)
{
    entry *e = get(ul, user, now_s());
    if (!e || e->streams >= ul->cfg.max_streams)
        return false;
    e->streams++;
    return true;
}

void ul_stream_release(user_limits *ul, const char *user)
{
    entry *e = find(ul, user);
    if (e && e->streams)
        e->streams--;
}

unsigned ul_streams(const user_limits *ul, const char *user)
{
    const entry *e = find(ul, user);
    return e ? e->streams : 0;
}

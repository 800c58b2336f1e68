#include "enclave/state.h"

#include <openssl/crypto.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hex.h"

struct estate_creds {
    atomic_uint refs;
    char *akid, *secret, *token;
    char expiration[ESTATE_EXPIRATION_MAX]; /* "": none given */
    time_t expires_at;   /* 0: none */
};

struct estate {
    x25519_key *key; /* the transport private key: memory only */
    uint8_t pub[32];
    char pub_hex[65];
    replay_cache *replay;
    pthread_mutex_t creds_lock; /* guards the pointer only: a set never changes */
    estate_creds *creds;
    atomic_uint streams, conns;
    unsigned max_streams, max_connections;
};

static void wipe_str(char *p)
{
    if (p) {
        OPENSSL_cleanse(p, strlen(p));
        free(p);
    }
}

static void creds_free(estate_creds *c)
{
    wipe_str(c->akid);
    wipe_str(c->secret);
    wipe_str(c->token);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

estate *estate_new(const estate_config *cfg, char *err, size_t errlen)
{
    estate *s = calloc(1, sizeof *s);
    if (!s || pthread_mutex_init(&s->creds_lock, NULL) != 0) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->max_streams = cfg->max_streams ? cfg->max_streams : ESTATE_DEFAULT_MAX_STREAMS;
    s->max_connections = cfg->max_connections ? cfg->max_connections : ESTATE_DEFAULT_MAX_CONNECTIONS;
    atomic_init(&s->streams, 0);
    atomic_init(&s->conns, 0);
    size_t replay_max = cfg->replay_max ? cfg->replay_max : ESTATE_DEFAULT_REPLAY_MAX;
    if (!(s->replay = replay_new(replay_max, cfg->replay_window_s))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    /* generated at start, held in memory only, never logged or persisted */
    if (!(s->key = x25519_key_generate(s->pub))) {
        snprintf(err, errlen, "key generation failed");
        goto fail;
    }
    hex_encode(s->pub, 32, s->pub_hex);
    return s;
fail:
    estate_free(s);
    return NULL;
}

void estate_free(estate *s)
{
    if (!s)
        return;
    estate_creds_put(s->creds);
    x25519_key_free(s->key);
    replay_free(s->replay);
    pthread_mutex_destroy(&s->creds_lock);
    free(s);
}

const x25519_key *estate_key(const estate *s) { return s->key; }
const uint8_t *estate_public_key(const estate *s) { return s->pub; }
const char *estate_public_key_hex(const estate *s) { return s->pub_hex; }
replay_cache *estate_replay(estate *s) { return s->replay; }

int estate_creds_set(estate *s, const char *akid, const char *secret, const char *token,
                     const char *expiration, time_t expires_at)
{
    estate_creds *c = calloc(1, sizeof *c);
    if (!c)
        return -1;
    atomic_init(&c->refs, 1); /* the state's own reference */
    c->akid = strdup(akid);
    c->secret = strdup(secret);
    c->token = strdup(token);
    if (!c->akid || !c->secret || !c->token) {
        creds_free(c);
        return -1;
    }
    if (expiration && expires_at) {
        snprintf(c->expiration, sizeof c->expiration, "%s", expiration);
        c->expires_at = expires_at;
    }
    pthread_mutex_lock(&s->creds_lock);
    estate_creds *old = s->creds;
    s->creds = c;
    pthread_mutex_unlock(&s->creds_lock);
    estate_creds_put(old); /* wiped now, or when the last chat that signed with it ends */
    return 0;
}

estate_creds *estate_creds_get(estate *s)
{
    pthread_mutex_lock(&s->creds_lock);
    estate_creds *c = s->creds;
    if (c) /* under the lock: the set cannot be released between the load and the ref */
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&s->creds_lock);
    return c;
}

void estate_creds_put(estate_creds *c)
{
    if (c && atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
        creds_free(c);
}

sigv4_credentials estate_creds_sigv4(const estate_creds *c)
{
    return (sigv4_credentials){c->akid, c->secret, c->token};
}

const char *estate_creds_expiration(const estate_creds *c) { return c->expiration[0] ? c->expiration : NULL; }

bool estate_creds_expired(const estate_creds *c, time_t now) { return c->expires_at && now >= c->expires_at; }

/* One more, unless max are taken: a compare-and-swap, so that two workers taking
 * the last slot at once cannot both get it. */
static bool take(atomic_uint *n, unsigned max)
{
    unsigned v = atomic_load_explicit(n, memory_order_relaxed);
    do {
        if (v >= max)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(n, &v, v + 1, memory_order_relaxed, memory_order_relaxed));
    return true;
}

bool estate_stream_take(estate *s) { return take(&s->streams, s->max_streams); }
void estate_stream_release(estate *s) { atomic_fetch_sub_explicit(&s->streams, 1, memory_order_relaxed); }

unsigned estate_streams(const estate *s) { return atomic_load_explicit(&s->streams, memory_order_relaxed); }
unsigned estate_max_streams(const estate *s) { return s->max_streams; }

bool estate_conn_take(estate *s) { return take(&s->conns, s->max_connections); }
void estate_conn_release(estate *s) { atomic_fetch_sub_explicit(&s->conns, 1, memory_order_relaxed); }
unsigned estate_conns(const estate *s) { return atomic_load_explicit(&s->conns, memory_order_relaxed); }
unsigned estate_max_connections(const estate *s) { return s->max_connections; }

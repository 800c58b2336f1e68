/* jwks_cache — veild's cache of the issuer's signing keys, served from a local file
 * or from a URL fetched on the event loop (auth/jwks.h parses them).
 *
 * Fixes defect §10.20: keys are fresh for a TTL; refreshes that fail keep the last
 * keys usable for at most stale_max after the last successful fetch, and then
 * lookups fail (503) instead of trusting rotated-out keys forever. An unknown kid
 * triggers a refetch (one fetch in flight at a time, rate-limited).
 * Memory: a key handed to a callback is borrowed for the duration of the callback
 * (EVP_PKEY_up_ref to keep it). The caller owns the cache and every pending
 * jwks_wait until its callback ran or it was cancelled. Never logs tokens; fetch
 * bodies are bounded (JWKS_MAX_BODY).
 */
#ifndef VEIL_SERVER_JWKS_CACHE_H
#define VEIL_SERVER_JWKS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/jwks.h"
#include "auth/jwt.h"

struct event_base;

/* ---- the cache ---------------------------------------------------------------------- */

typedef struct jwks_cache_config {
    const char *file;     /* CLERK_JWKS_FILE: re-read whenever it changes; wins over url */
    const char *url;      /* http(s)://host[:port]/path, e.g. CLERK_ISSUER/.well-known/jwks.json */
    const char *ca_file;  /* trust anchors for an https url; NULL: the system store */
    /* Windows, in milliseconds; 0 selects the default. */
    unsigned ttl_ms;             /* keys are fresh this long after a fetch (1 h) */
    unsigned unknown_kid_min_ms; /* an unknown kid refetches at most this often (30 s) */
    unsigned retry_ms;           /* after a failed fetch, the next try waits this long (5 s) */
    unsigned stale_max_ms;       /* keys stay usable this long after the last good fetch (6 h) */
    unsigned timeout_ms;         /* a fetch's deadline (10 s) */
} jwks_cache_config;

#define JWKS_DEFAULT_TTL_MS (3600u * 1000u)
#define JWKS_DEFAULT_UNKNOWN_KID_MIN_MS (30u * 1000u)
#define JWKS_DEFAULT_RETRY_MS (5u * 1000u)
#define JWKS_DEFAULT_STALE_MAX_MS (6u * 3600u * 1000u)
#define JWKS_DEFAULT_TIMEOUT_MS (10u * 1000u)

/* Fills url (capacity n) with issuer + "/.well-known/jwks.json" (one '/' between). */
int jwks_default_url(const char *issuer, char *url, size_t n);

typedef struct jwks_cache jwks_cache;

/* base is needed for a url (may be NULL for a file). The config's strings are copied.
 * NULL + err on a bad config (no source, bad url, CA file unreadable). */
jwks_cache *jwks_cache_new(struct event_base *base, const jwks_cache_config *cfg, char *err,
                           size_t errlen);
/* Pending waits are dropped without a callback; an in-flight fetch is cancelled.
 * Never call it from inside a jwks callback. */
void jwks_cache_free(jwks_cache *c);
/* Starts a fetch now unless one is in flight or the keys are fresh (warm-up at start;
 * a file source is read at once). */
void jwks_cache_prefetch(jwks_cache *c);

typedef struct jwks_stats {
    size_t n_keys;
    bool usable;        /* lookups can succeed now (keys present and within stale_max) */
    bool fresh;         /* within ttl */
    bool fetching;
    unsigned long fetches, failures, waiting;
} jwks_stats;
void jwks_cache_stats(jwks_cache *c, jwks_stats *st);

typedef enum jwks_status {
    JWKS_FOUND = 0,
    JWKS_UNKNOWN_KID, /* keys are usable but none has this kid -> 401 Invalid token headers */
    JWKS_UNAVAILABLE, /* no usable keys -> 503 Authentication service unavailable */
} jwks_status;

typedef struct jwks_wait jwks_wait;

/* key is borrowed (NULL unless JWKS_FOUND). */
typedef void (*jwks_key_cb)(void *ud, jwks_status st, EVP_PKEY *key);

/* Finds the key for kid. When the answer is known now (a cached, usable key; or an
 * unknown kid / no keys with no fetch allowed yet) cb runs before this returns and
 * the result is NULL. Otherwise the lookup waits for the fetch in flight and the
 * returned handle can be cancelled (jwks_wait_cancel; no callback follows). Each
 * lookup gets exactly one callback unless cancelled; the handle is dead once its
 * callback started. Callbacks may start new lookups or cancel other waits. */
jwks_wait *jwks_lookup(jwks_cache *c, const char *kid, jwks_key_cb cb, void *ud);
void jwks_wait_cancel(jwks_wait *w);

/* The whole bearer check: parse the token, find its key (waiting for a fetch when
 * needed), verify with cfg at the wall-clock time of the answer. err maps to the
 * response with jwt_http_status/jwt_detail (UNKNOWN_KID -> 401, UNAVAILABLE -> 503).
 * auth is valid during the callback only (copy it). Same sync/async rules and
 * cancellation as jwks_lookup. cfg must outlive the wait. */
typedef void (*jwks_verify_cb)(void *ud, jwt_err err, const jwt_auth *auth);
jwks_wait *jwks_verify(jwks_cache *c, const char *token, size_t len, const jwt_config *cfg,
                       jwks_verify_cb cb, void *ud);

#endif

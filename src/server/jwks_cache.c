/* jwks_cache — veild's cache of the issuer's signing keys. See jwks_cache.h. */
#include "server/jwks_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"
#include "net/https.h"

#define URL_HOST_MAX 256
#define URL_TARGET_MAX 1024

/* ---- the cache --------------------------------------------------------------------- */

TAILQ_HEAD(jwks_wait_list, jwks_wait);

struct jwks_wait {
    jwks_cache *c;
    struct jwks_wait_list *list; /* the cache's waiters or resolving; NULL once unlinked */
    TAILQ_ENTRY(jwks_wait) link;
    char kid[JWKS_KID_MAX + 1];
    jwks_key_cb cb;
    void *ud;
    /* jwks_verify */
    jwt_token *tok;
    const jwt_config *cfg;
    jwks_verify_cb vcb;
};

struct jwks_cache {
    struct event_base *base;
    https_ctx *https;
    char *file;
    bool tls;
    char host[URL_HOST_MAX];
    uint16_t port;
    char target[URL_TARGET_MAX];
    unsigned ttl_ms, unknown_kid_min_ms, retry_ms, stale_max_ms, timeout_ms;

    jwks_set *keys;
    int64_t last_ok_ms;       /* monotonic time of the last good fetch */
    int64_t last_attempt_ms;  /* start of the most recent fetch */
    bool attempted;
    /* file source: what the last good read saw */
    struct stat file_st;
    bool file_seen;

    https_conn *conn;         /* the fetch in flight, or NULL */
    int http_status;
    vbuf body;
    bool body_too_large;

    struct jwks_wait_list waiters;   /* waiting for the fetch in flight */
    struct jwks_wait_list resolving; /* moved off waiters while their callbacks run */
    unsigned long fetches, failures, n_waiting;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int jwks_default_url(const char *issuer, char *url, size_t n)
{
    if (!issuer || !issuer[0])
        return -1;
    size_t il = strlen(issuer);
    while (il && issuer[il - 1] == '/')
        il--;
    int w = snprintf(url, n, "%.*s/.well-known/jwks.json", (int)il, issuer);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* http(s)://host[:port][/path][?query]; no userinfo, no fragment. */
static int parse_url(jwks_cache *c, const char *url, char *err, size_t errlen)
{
    const char *p;
    if (strncasecmp(url, "https://", 8) == 0) {
        c->tls = true;
        p = url + 8;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        c->tls = false;
        p = url + 7;
    } else {
        snprintf(err, errlen, "JWKS URL must start with https:// or http://");
        return -1;
    }
    size_t alen = strcspn(p, "/?#");
    const char *rest = p + alen;
    if (alen == 0 || memchr(p, '@', alen) || strchr(rest, '#') ||
        strpbrk(url, " \t\r\n\"<>\\^`{|}")) {
        snprintf(err, errlen, "JWKS URL has a bad authority or characters");
        return -1;
    }
    const char *host = p, *hend, *port = NULL;
    if (*p == '[') {
        hend = memchr(p, ']', alen);
        if (!hend) {
            snprintf(err, errlen, "JWKS URL has a bad IPv6 literal");
            return -1;
        }
        host = p + 1;
        if (hend + 1 < rest) {
            if (hend[1] != ':') {
                snprintf(err, errlen, "JWKS URL has a bad authority");
                return -1;
            }
            port = hend + 2;
        }
    } else {
        hend = memchr(p, ':', alen);
        if (hend)
            port = hend + 1;
        else
            hend = rest;
    }
    size_t hlen = (size_t)(hend - host);
    if (hlen == 0 || hlen >= sizeof c->host) {
        snprintf(err, errlen, "JWKS URL has a bad host");
        return -1;
    }
    memcpy(c->host, host, hlen);
    c->host[hlen] = '\0';
    c->port = c->tls ? 443 : 80;
    if (port) {
        unsigned v = 0;
        const char *q = port;
        for (; q < rest; q++) {
            if (*q < '0' || *q > '9' || v > 65535)
                break;
            v = v * 10 + (unsigned)(*q - '0');
        }
        if (q != rest || q == port || v == 0 || v > 65535) {
            snprintf(err, errlen, "JWKS URL has a bad port");
            return -1;
        }
        c->port = (uint16_t)v;
    }
    int w = snprintf(c->target, sizeof c->target, "%s%s", *rest == '/' ? "" : "/", rest);
    if (w < 0 || (size_t)w >= sizeof c->target) {
        snprintf(err, errlen, "JWKS URL too long");
        return -1;
    }
    return 0;
}

jwks_cache *jwks_cache_new(struct event_base *base, const jwks_cache_config *cfg, char *err,
                           size_t errlen)
{
    bool has_file = cfg && cfg->file && cfg->file[0], has_url = cfg && cfg->url && cfg->url[0];
    if (!has_file && !has_url) {
        snprintf(err, errlen, "no JWKS source: set CLERK_JWKS_FILE or CLERK_ISSUER/CLERK_JWKS_URL");
        return NULL;
    }
    if (!has_file && !base) {
        snprintf(err, errlen, "a JWKS URL needs an event loop");
        return NULL;
    }
    jwks_cache *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->base = base;
    TAILQ_INIT(&c->waiters);
    TAILQ_INIT(&c->resolving);
    c->ttl_ms = cfg->ttl_ms ? cfg->ttl_ms : JWKS_DEFAULT_TTL_MS;
    c->unknown_kid_min_ms = cfg->unknown_kid_min_ms ? cfg->unknown_kid_min_ms
                                                    : JWKS_DEFAULT_UNKNOWN_KID_MIN_MS;
    c->retry_ms = cfg->retry_ms ? cfg->retry_ms : JWKS_DEFAULT_RETRY_MS;
    c->stale_max_ms = cfg->stale_max_ms ? cfg->stale_max_ms : JWKS_DEFAULT_STALE_MAX_MS;
    c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : JWKS_DEFAULT_TIMEOUT_MS;
    if (c->stale_max_ms < c->ttl_ms) /* a stale window shorter than freshness makes no sense */
        c->stale_max_ms = c->ttl_ms;
    if (has_file) {
        if (!(c->file = strdup(cfg->file))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        return c;
    }
    if (parse_url(c, cfg->url, err, errlen) < 0)
        goto fail;
    if (!(c->https = https_ctx_new(base, cfg->ca_file, err, errlen)))
        goto fail;
    return c;
fail:
    jwks_cache_free(c);
    return NULL;
}

static void free_wait_list(struct jwks_wait_list *l)
{
    jwks_wait *w;
    while ((w = TAILQ_FIRST(l))) {
        TAILQ_REMOVE(l, w, link);
        jwt_token_free(w->tok);
        free(w);
    }
}

void jwks_cache_free(jwks_cache *c)
{
    if (!c)
        return;
    if (c->conn)
        https_cancel(c->conn);
    free_wait_list(&c->waiters);
    free_wait_list(&c->resolving);
    jwks_set_free(c->keys);
    vbuf_free(&c->body);
    https_ctx_free(c->https);
    free(c->file);
    free(c);
}

static bool keys_usable(const jwks_cache *c, int64_t now)
{
    if (!c->keys)
        return false;
    return c->file || now - c->last_ok_ms < (int64_t)c->stale_max_ms;
}

static bool keys_fresh(const jwks_cache *c, int64_t now)
{
    return c->keys && (c->file || now - c->last_ok_ms < (int64_t)c->ttl_ms);
}

static void install_keys(jwks_cache *c, jwks_set *s, int64_t now)
{
    jwks_set_free(c->keys);
    c->keys = s;
    c->last_ok_ms = now;
}

/* ---- file source ---- */

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/* Re-reads the file when it changed. A file that is missing or does not parse makes
 * the cache unusable (fail closed) until it is fixed; the next lookup tries again. */
static void file_refresh(jwks_cache *c)
{
    struct stat st;
    if (stat(c->file, &st) < 0) {
        if (c->keys)
            log_warn(NULL, "event=jwks_file_error file=%s error=\"%s\"", c->file, strerror(errno));
        jwks_set_free(c->keys);
        c->keys = NULL;
        c->file_seen = false;
        return;
    }
    if (c->file_seen && same_file(&st, &c->file_st))
        return;
    c->fetches++;
    vbuf b = VBUF_INIT;
    char err[200] = "";
    jwks_set *s = NULL;
    int fd = open(c->file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, sizeof err, "%s", strerror(errno));
    } else {
        for (;;) {
            if (vbuf_reserve(&b, 65536) < 0) {
                snprintf(err, sizeof err, "out of memory");
                break;
            }
            ssize_t n = read(fd, b.data + b.len, 65536);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                snprintf(err, sizeof err, "%s", strerror(errno));
                break;
            }
            if (n == 0)
                break;
            b.len += (size_t)n;
            if (b.len > JWKS_MAX_BODY) {
                snprintf(err, sizeof err, "file larger than %d bytes", JWKS_MAX_BODY);
                break;
            }
        }
        close(fd);
    }
    if (!err[0])
        jwks_parse((const char *)b.data, b.len, &s, err, sizeof err);
    vbuf_free(&b);
    jwks_set_free(c->keys);
    c->keys = NULL;
    c->file_seen = false;
    if (!s) {
        c->failures++;
        log_warn(NULL, "event=jwks_file_error file=%s error=\"%s\"", c->file, err);
        return;
    }
    install_keys(c, s, mono_ms());
    c->file_st = st;
    c->file_seen = true;
    log_info(NULL, "event=jwks_loaded source=file keys=%zu skipped=%zu", jwks_set_count(s),
             jwks_set_skipped(s));
}

/* ---- url source ---- */

static void resolve_waiters(jwks_cache *c);

static int on_head(void *ud, const http1_response *resp)
{
    jwks_cache *c = ud;
    c->http_status = resp->status;
    if (resp->status != 200)
        return 1;
    if (resp->body == HTTP1_BODY_CONTENT_LENGTH && resp->content_length > JWKS_MAX_BODY) {
        c->body_too_large = true;
        return 1;
    }
    return 0;
}

static int on_body(void *ud, const uint8_t *data, size_t len)
{
    jwks_cache *c = ud;
    if (c->body.len + len > JWKS_MAX_BODY) {
        c->body_too_large = true;
        return 1;
    }
    return vbuf_append(&c->body, data, len) < 0 ? 1 : 0;
}

static void on_done(void *ud, https_err herr, const char *detail)
{
    jwks_cache *c = ud;
    c->conn = NULL;
    int64_t now = mono_ms();
    char err[256] = "";
    jwks_set *s = NULL;
    if (c->body_too_large)
        snprintf(err, sizeof err, "body larger than %d bytes", JWKS_MAX_BODY);
    else if (c->http_status != 200 && c->http_status != 0)
        snprintf(err, sizeof err, "HTTP %d", c->http_status);
    else if (herr != HTTPS_OK)
        snprintf(err, sizeof err, "%s (%s)", https_strerror(herr), detail ? detail : "");
    else
        jwks_parse((const char *)c->body.data, c->body.len, &s, err, sizeof err);
    vbuf_free(&c->body);
    if (s) {
        install_keys(c, s, now);
        log_info(NULL, "event=jwks_loaded source=url host=%s keys=%zu skipped=%zu ms=%lld", c->host,
                 jwks_set_count(s), jwks_set_skipped(s), (long long)(now - c->last_attempt_ms));
    } else {
        c->failures++;
        log_warn(NULL, "event=jwks_fetch_failed host=%s error=\"%s\" have_keys=%d usable=%d",
                 c->host, err, c->keys != NULL, keys_usable(c, now));
    }
    resolve_waiters(c);
}

/* Starts a fetch; -1 when it cannot even start (counted as a failed attempt). */
static int start_fetch(jwks_cache *c, int64_t now)
{
    static const https_callbacks cb = {on_head, on_body, on_done};
    static const https_header hdrs[] = {{"Accept", "application/json"},
                                        {"User-Agent", "veild-jwks"}};
    https_request req = {
        .tls = c->tls, .host = c->host, .port = c->port, .proxy = NULL, .method = "GET",
        .target = c->target, .headers = hdrs, .n_headers = 2,
        .connect_timeout_ms = c->timeout_ms, .idle_timeout_ms = c->timeout_ms,
        .total_timeout_ms = c->timeout_ms,
    };
    c->attempted = true;
    c->last_attempt_ms = now;
    c->fetches++;
    c->http_status = 0;
    c->body_too_large = false;
    vbuf_reset(&c->body);
    char err[160];
    c->conn = https_start(c->https, &req, &cb, c, err, sizeof err);
    if (!c->conn) {
        c->failures++;
        log_warn(NULL, "event=jwks_fetch_failed host=%s error=\"%s\"", c->host, err);
        return -1;
    }
    log_debug(NULL, "event=jwks_fetch host=%s", c->host);
    return 0;
}

void jwks_cache_prefetch(jwks_cache *c)
{
    if (!c)
        return;
    if (c->file) {
        file_refresh(c);
        return;
    }
    int64_t now = mono_ms();
    if (!c->conn && !keys_fresh(c, now))
        start_fetch(c, now);
}

void jwks_cache_stats(jwks_cache *c, jwks_stats *st)
{
    memset(st, 0, sizeof *st);
    if (c->file)
        file_refresh(c);
    int64_t now = mono_ms();
    st->n_keys = jwks_set_count(c->keys);
    st->usable = keys_usable(c, now);
    st->fresh = keys_fresh(c, now);
    st->fetching = c->conn != NULL;
    st->fetches = c->fetches;
    st->failures = c->failures;
    st->waiting = c->n_waiting;
}

/* ---- waits ---- */

static void unlink_wait(jwks_wait *w)
{
    if (w->list) {
        TAILQ_REMOVE(w->list, w, link);
        w->list = NULL;
        w->c->n_waiting--;
    }
}

void jwks_wait_cancel(jwks_wait *w)
{
    if (!w)
        return;
    unlink_wait(w);
    jwt_token_free(w->tok);
    free(w);
}

static jwks_status classify(jwks_cache *c, const char *kid, EVP_PKEY **key)
{
    *key = NULL;
    if (!keys_usable(c, mono_ms()))
        return JWKS_UNAVAILABLE;
    *key = jwks_set_find(c->keys, kid);
    return *key ? JWKS_FOUND : JWKS_UNKNOWN_KID;
}

/* Answers one wait (already unlinked) and frees it. */
static void answer(jwks_wait *w, jwks_status st, EVP_PKEY *key)
{
    if (!w->vcb) {
        jwks_key_cb cb = w->cb;
        void *ud = w->ud;
        free(w);
        /* hold a reference: a nested lookup may replace the set while cb runs */
        if (key && EVP_PKEY_up_ref(key) != 1) {
            key = NULL;
            st = JWKS_UNAVAILABLE;
        }
        cb(ud, st, key);
        EVP_PKEY_free(key);
        return;
    }
    jwt_auth auth;
    jwt_err e = st == JWKS_UNAVAILABLE ? JWT_ERR_UNAVAILABLE
              : st == JWKS_UNKNOWN_KID ? JWT_ERR_UNKNOWN_KID
                                       : jwt_verify_parsed(w->tok, key, w->cfg, time(NULL), &auth);
    if (e != JWT_OK)
        memset(&auth, 0, sizeof auth);
    jwks_verify_cb vcb = w->vcb;
    void *ud = w->ud;
    jwt_token_free(w->tok);
    free(w);
    vcb(ud, e, &auth);
}

static void resolve_waiters(jwks_cache *c)
{
    /* move the batch off waiters first: callbacks may queue new waits (on c->waiters,
     * for the next fetch) or cancel others of this batch (unlinked from resolving) */
    jwks_wait *w;
    TAILQ_FOREACH(w, &c->waiters, link)
        w->list = &c->resolving;
    TAILQ_CONCAT(&c->resolving, &c->waiters, link);
    while ((w = TAILQ_FIRST(&c->resolving))) {
        unlink_wait(w);
        EVP_PKEY *key;
        jwks_status st = classify(c, w->kid, &key);
        answer(w, st, key);
    }
}

/* Decides now, or queues w behind a fetch. Returns w if queued, else NULL (answered). */
static jwks_wait *dispatch(jwks_cache *c, jwks_wait *w)
{
    EVP_PKEY *key = NULL;
    if (c->file) {
        file_refresh(c);
        jwks_status st = classify(c, w->kid, &key);
        answer(w, st, key);
        return NULL;
    }
    int64_t now = mono_ms();
    bool usable = keys_usable(c, now);
    if (usable && (key = jwks_set_find(c->keys, w->kid))) {
        /* serve the cached key; refresh in the background once it is no longer fresh */
        if (!c->conn && !keys_fresh(c, now) && now - c->last_attempt_ms >= (int64_t)c->retry_ms)
            start_fetch(c, now);
        answer(w, JWKS_FOUND, key);
        return NULL;
    }
    bool wait = c->conn != NULL;
    if (!wait) {
        /* an unknown kid may mean a rotation: refetch, but not on every forged token */
        unsigned gap = usable ? c->unknown_kid_min_ms : c->retry_ms;
        if (!c->attempted || now - c->last_attempt_ms >= (int64_t)gap)
            wait = start_fetch(c, now) == 0;
    }
    if (!wait) {
        answer(w, usable ? JWKS_UNKNOWN_KID : JWKS_UNAVAILABLE, NULL);
        return NULL;
    }
    w->c = c;
    w->list = &c->waiters;
    TAILQ_INSERT_HEAD(&c->waiters, w, link);
    c->n_waiting++;
    return w;
}

static jwks_wait *new_wait(const char *kid)
{
    jwks_wait *w = calloc(1, sizeof *w);
    if (w && kid && strlen(kid) <= JWKS_KID_MAX)
        memcpy(w->kid, kid, strlen(kid) + 1);
    return w;
}

jwks_wait *jwks_lookup(jwks_cache *c, const char *kid, jwks_key_cb cb, void *ud)
{
    jwks_wait *w = new_wait(kid);
    if (!w) {
        cb(ud, JWKS_UNAVAILABLE, NULL);
        return NULL;
    }
    w->cb = cb;
    w->ud = ud;
    return dispatch(c, w);
}

jwks_wait *jwks_verify(jwks_cache *c, const char *token, size_t len, const jwt_config *cfg,
                       jwks_verify_cb cb, void *ud)
{
    jwt_auth none;
    memset(&none, 0, sizeof none);
    jwt_token *tok = NULL;
    jwt_err e = jwt_parse(token, len, &tok);
    if (e != JWT_OK) {
        cb(ud, e, &none);
        return NULL;
    }
    jwks_wait *w = new_wait(jwt_token_kid(tok));
    if (!w) {
        jwt_token_free(tok);
        cb(ud, JWT_ERR_NOMEM, &none);
        return NULL;
    }
    w->tok = tok;
    w->cfg = cfg;
    w->vcb = cb;
    w->ud = ud;
    return dispatch(c, w);
}

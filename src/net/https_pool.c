/* https_pool — idle connections between requests (see https_pool.h). The request
 * side of reuse (when a response leaves its connection reusable, the retry on a
 * fresh connection) lives in https.c; this file only keeps, watches and closes.
 */
#include "net/https_pool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include "common/log.h"
#include "net/https_pool_int.h"

typedef struct idle_conn {
    https_pool *pool;
    https_pooled pc;
    char key[HTTPS_POOL_KEY_LEN];
    TAILQ_ENTRY(idle_conn) link;
} idle_conn;

struct https_pool {
    https_ctx *ctx;
    https_pool_config cfg;
    TAILQ_HEAD(idle_conn_list, idle_conn) idle; /* the most recently pooled first */
    unsigned n_idle;
    unsigned attached; /* requests that hold the pool */
    unsigned long next_id;
    https_pool_stats stats;
};

https_pool_config https_pool_config_default(void)
{
    return (https_pool_config){HTTPS_POOL_DEFAULT_MAX_IDLE, HTTPS_POOL_DEFAULT_IDLE_MS,
                               HTTPS_POOL_DEFAULT_MAX_REQUESTS, HTTPS_POOL_DEFAULT_MAX_AGE_MS};
}

uint64_t https_pool_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

https_pool *https_pool_new(https_ctx *ctx, const https_pool_config *cfg, char *err, size_t errlen)
{
    https_pool *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->ctx = ctx;
    p->cfg = *cfg;
    if (!p->cfg.idle_timeout_ms)
        p->cfg.idle_timeout_ms = HTTPS_POOL_DEFAULT_IDLE_MS;
    if (!p->cfg.max_requests)
        p->cfg.max_requests = HTTPS_POOL_DEFAULT_MAX_REQUESTS;
    if (!p->cfg.max_age_ms)
        p->cfg.max_age_ms = HTTPS_POOL_DEFAULT_MAX_AGE_MS;
    TAILQ_INIT(&p->idle);
    log_info(NULL, "event=https_pool max_idle=%u idle_timeout_ms=%u max_requests=%u max_age_ms=%u",
             p->cfg.max_idle, p->cfg.idle_timeout_ms, p->cfg.max_requests, p->cfg.max_age_ms);
    return p;
}

https_ctx *https_pool_ctx(const https_pool *p) { return p->ctx; }

void https_pool_key(char out[HTTPS_POOL_KEY_LEN], bool tls, const char *host, uint16_t port,
                    const veil_addr *proxy)
{
    char via[300] = "direct";
    if (proxy)
        addr_format(proxy, via, sizeof via);
    snprintf(out, HTTPS_POOL_KEY_LEN, "%s|%s:%u|%s", tls ? "https" : "http", host, port, via);
}

/* Closes a connection that carries no request. A clean close says close_notify; a
 * dead one is only marked shut down. Either way its TLS session stays resumable
 * (OpenSSL spoils the session of a connection freed without a shutdown). */
static void close_conn(https_pooled *pc, bool clean)
{
    if (pc->ssl) {
        SSL_set_app_data(pc->ssl, NULL);
        if (!clean)
            SSL_set_quiet_shutdown(pc->ssl, 1);
        (void)SSL_shutdown(pc->ssl);
        ERR_clear_error();
    }
    if (pc->bev)
        bufferevent_free(pc->bev);
    memset(pc, 0, sizeof *pc);
}

static void unlink_idle(idle_conn *ic)
{
    TAILQ_REMOVE(&ic->pool->idle, ic, link);
    ic->pool->n_idle--;
}

static void discard(idle_conn *ic, bool clean)
{
    unlink_idle(ic);
    close_conn(&ic->pc, clean);
    free(ic);
}

static void drop_dead(idle_conn *ic, const char *rid, const char *why)
{
    https_pool *p = ic->pool;
    p->stats.dropped++;
    log_info(rid, "event=https_pool_dropped conn=%lu reason=%s requests=%u idle=%u", ic->pc.id, why,
             ic->pc.requests, p->n_idle - 1);
    discard(ic, false);
}

static void expire(idle_conn *ic, const char *why)
{
    https_pool *p = ic->pool;
    p->stats.expired++;
    log_debug(NULL, "event=https_pool_expired conn=%lu reason=%s requests=%u idle=%u", ic->pc.id, why,
              ic->pc.requests, p->n_idle - 1);
    discard(ic, true);
}

/* ---- watching an idle connection ---- */

/* Application bytes while no request is out: nothing the peer may send. */
static void on_idle_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    drop_dead(arg, NULL, "unexpected_bytes");
}

static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    idle_conn *ic = arg;
    if (what & BEV_EVENT_TIMEOUT) {
        uint64_t age = https_pool_now_ms() - ic->pc.born_ms;
        expire(ic, age >= ic->pool->cfg.max_age_ms ? "max_age" : "idle_timeout");
        return;
    }
    while (bufferevent_get_openssl_error(bev)) /* a TLS alert: dead all the same */
        ;
    drop_dead(ic, NULL, what & BEV_EVENT_EOF ? "peer_closed" : "error");
}

/* The idle timeout, cut short by the max age. */
static struct timeval idle_deadline(const https_pool *p, const https_pooled *pc)
{
    uint64_t age = https_pool_now_ms() - pc->born_ms, ms = p->cfg.idle_timeout_ms;
    uint64_t left = age < p->cfg.max_age_ms ? p->cfg.max_age_ms - age : 1;
    if (left < ms)
        ms = left ? left : 1;
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
}

/* Still usable: nothing buffered, no close_notify, and the socket has neither EOF
 * nor bytes we have not seen (a TLS record that arrived while the loop was busy). */
static const char *check_alive(const https_pool *p, const https_pooled *pc)
{
    if (https_pool_now_ms() - pc->born_ms >= p->cfg.max_age_ms)
        return "max_age";
    if (evbuffer_get_length(bufferevent_get_input(pc->bev)) > 0 || (pc->ssl && SSL_pending(pc->ssl) > 0))
        return "unexpected_bytes";
    if (pc->ssl && (SSL_get_shutdown(pc->ssl) & SSL_RECEIVED_SHUTDOWN))
        return "peer_closed";
    char b;
    ssize_t n = recv(bufferevent_getfd(pc->bev), &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0)
        return "peer_closed";
    if (n > 0)
        return "unexpected_bytes";
    if (errno != EAGAIN && errno != EWOULDBLOCK)
        return "error";
    return NULL;
}

/* ---- lending and returning ---- */

bool https_pool_take(https_pool *p, const char *key, https_pooled *out, const char *rid)
{
    idle_conn *ic, *next;
    for (ic = TAILQ_FIRST(&p->idle); ic; ic = next) {
        next = TAILQ_NEXT(ic, link);
        if (strcmp(ic->key, key) != 0)
            continue;
        const char *dead = check_alive(p, &ic->pc);
        if (dead && strcmp(dead, "max_age") == 0) {
            expire(ic, dead);
            continue;
        }
        if (dead) {
            drop_dead(ic, rid, dead);
            continue;
        }
        unlink_idle(ic);
        *out = ic->pc;
        free(ic);
        bufferevent_setcb(out->bev, NULL, NULL, NULL, NULL);
        bufferevent_set_timeouts(out->bev, NULL, NULL);
        p->stats.reused++;
        log_debug(rid, "event=https_pool_reused conn=%lu requests=%u age_ms=%llu idle=%u", out->id,
                  out->requests, (unsigned long long)(https_pool_now_ms() - out->born_ms), p->n_idle);
        return true;
    }
    memset(out, 0, sizeof *out);
    out->id = ++p->next_id;
    p->stats.opened++;
    return false;
}

void https_pool_put(https_pool *p, const char *key, https_pooled *pc, const char *rid)
{
    uint64_t age = https_pool_now_ms() - pc->born_ms;
    const char *why = pc->requests >= p->cfg.max_requests ? "max_requests"
                      : age >= p->cfg.max_age_ms           ? "max_age"
                      : p->cfg.max_idle == 0               ? "pool_off"
                                                           : NULL;
    if (why) {
        p->stats.expired++;
        log_debug(rid, "event=https_pool_expired conn=%lu reason=%s requests=%u idle=%u", pc->id, why,
                  pc->requests, p->n_idle);
        close_conn(pc, true);
        return;
    }
    idle_conn *ic = calloc(1, sizeof *ic);
    if (!ic) {
        close_conn(pc, true);
        return;
    }
    if (p->n_idle >= p->cfg.max_idle) { /* the oldest goes: it is the likeliest to expire unused */
        idle_conn *old = TAILQ_LAST(&p->idle, idle_conn_list);
        p->stats.evicted++;
        log_debug(rid, "event=https_pool_evicted conn=%lu reason=max_idle requests=%u", old->pc.id,
                  old->pc.requests);
        discard(old, true);
    }
    ic->pool = p;
    ic->pc = *pc;
    memset(pc, 0, sizeof *pc);
    snprintf(ic->key, sizeof ic->key, "%s", key);
    TAILQ_INSERT_HEAD(&p->idle, ic, link);
    p->n_idle++;
    p->stats.pooled++;
    struct timeval tv = idle_deadline(p, &ic->pc);
    bufferevent_setcb(ic->pc.bev, on_idle_read, NULL, on_idle_event, ic);
    bufferevent_set_timeouts(ic->pc.bev, &tv, NULL);
    bufferevent_disable(ic->pc.bev, EV_WRITE);
    bufferevent_enable(ic->pc.bev, EV_READ);
    log_debug(rid, "event=https_pool_pooled conn=%lu requests=%u idle=%u", ic->pc.id, ic->pc.requests,
              p->n_idle);
}

void https_pool_attach(https_pool *p) { p->attached++; }
void https_pool_detach(https_pool *p) { p->attached--; }
unsigned long https_pool_note_retry(https_pool *p)
{
    p->stats.retried++;
    return ++p->next_id;
}

void https_pool_get_stats(const https_pool *p, https_pool_stats *out)
{
    *out = p->stats;
    out->idle = p->n_idle;
}

void https_pool_free(https_pool *p)
{
    if (!p)
        return;
    if (p->attached) /* a caller bug: those requests would return to freed memory */
        log_error(NULL, "event=https_pool_freed_in_use requests=%u", p->attached);
    while (!TAILQ_EMPTY(&p->idle))
        discard(TAILQ_FIRST(&p->idle), true);
    log_debug(NULL, "event=https_pool_closed opened=%lu reused=%lu retried=%lu dropped=%lu", p->stats.opened,
              p->stats.reused, p->stats.retried, p->stats.dropped);
    free(p);
}

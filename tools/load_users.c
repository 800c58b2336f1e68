/* load_users — veil-load's users of veild (see load_users.h). */
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <sys/queue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "auth/jwks.h"
#include "auth/jwt.h"
#include "common/hex.h"
#include "common/secret.h"
#include "load_http.h"
#include "load_users.h"

#define API "/api/v1"
#define SETUP_AT_ONCE 32 /* users being set up at once */
#define TOKEN_TTL_MIN_S 3600

/* A slot that goes back to the ring later (a client that left mid-stream). */
typedef struct late_slot {
    TAILQ_ENTRY(late_slot) link;
    load *L;
    tuser *u;
    struct event *ev;
} late_slot;

typedef struct through {
    struct sockaddr_storage sa;
    socklen_t salen;
    char host[300];          /* the Host header */
    EVP_PKEY *key;
    char kid[JWKS_THUMBPRINT_LEN + 1];
    char run[17];            /* user ids are veil-load-<run>-<i>: a fresh set each run */
    tuser *users;
    long n_users;
    long *ring;              /* free stream slots, as user indices: a FIFO */
    long ring_cap, ring_head, ring_len;
    long setup_next, setup_running, setup_done;
    bool setup_failed;
    bool have_key;
    TAILQ_HEAD(, late_slot) late; /* oldest first */
} through;

static int parse_url(through *T, const char *url, char *err, size_t errlen)
{
    static const char HTTP[] = "http://";
    if (strncmp(url, HTTP, sizeof HTTP - 1) != 0) {
        snprintf(err, errlen, "--through must be http://HOST:PORT (veild on this machine)");
        return -1;
    }
    const char *hp = url + sizeof HTTP - 1;
    size_t n = strcspn(hp, "/");
    if (n == 0 || n >= sizeof T->host || (hp[n] && strcmp(hp + n, "/") != 0)) {
        snprintf(err, errlen, "--through must be http://HOST:PORT with no path");
        return -1;
    }
    memcpy(T->host, hp, n);
    T->host[n] = '\0';
    char host[300], *port = strrchr(T->host, ':');
    if (!port || port == T->host) {
        snprintf(err, errlen, "--through needs a port");
        return -1;
    }
    snprintf(host, sizeof host, "%.*s", (int)(port - T->host), T->host);
    if (host[0] == '[') { /* [IPv6] */
        memmove(host, host + 1, strlen(host));
        host[strcspn(host, "]")] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int rc = getaddrinfo(host, port + 1, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "%.200s: %s", T->host, gai_strerror(rc));
        return -1;
    }
    memcpy(&T->sa, ai->ai_addr, ai->ai_addrlen);
    T->salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

static EVP_PKEY *read_dev_key(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    if (!k || !EVP_PKEY_is_a(k, "RSA")) {
        snprintf(err, errlen, "%s is not the RSA key `veil dev-token --key` makes", path);
        EVP_PKEY_free(k);
        return NULL;
    }
    return k;
}

/* A token shaped as `veil dev-token --sub SUB` mints it, signed by the same code. */
static char *mint_token(through *T, const char *issuer, const char *sub, long ttl)
{
    long long now = (long long)time(NULL);
    json_t *c = json_pack("{s:s, s:s, s:I, s:I, s:I, s:i}", "sub", sub, "iss", issuer, "iat", (json_int_t)now,
                          "nbf", (json_int_t)now, "exp", (json_int_t)(now + ttl), "v", 2);
    char *claims = c ? json_dumps(c, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(c);
    char header[128], *token = NULL;
    snprintf(header, sizeof header, "{\"alg\":\"RS256\",\"kid\":\"%s\",\"typ\":\"JWT\"}", T->kid);
    if (claims && jwt_sign_rs256(T->key, header, claims, &token) != JWT_OK)
        token = NULL;
    free(claims);
    return token;
}

/* ---- setup: sync, keys, a session per user; the enclave key ---- */

enum { STEP_SYNC, STEP_KEYS, STEP_SESSION, STEP_INFO, STEP_DONE };
static const char *const STEP_NAME[] = {"POST /users/sync", "POST /users/me/keys", "POST /chat/sessions",
                                        "GET /chat/enclave/info"};

static void setup_next(load *L);
static void setup_send(load *L, tuser *u);

struct lh_conn *lu_conn(load *L, tuser *u, bool *reused, char *err, size_t errlen)
{
    through *T = L->T;
    *reused = false;
    while (u->n_idle > 0) {
        struct lh_conn *c = u->idle[--u->n_idle];
        if (lh_reusable(c)) {
            *reused = true;
            return c;
        }
        lh_conn_free(c);
    }
    return lh_conn_new(L->base, (struct sockaddr *)&T->sa, T->salen, err, errlen);
}

void lu_keep(load *L, tuser *u, struct lh_conn *c)
{
    if (lh_reusable(c) && u->n_idle < L->opt.per_user)
        u->idle[u->n_idle++] = c;
    else
        lh_conn_free(c);
}

typedef struct setup_req {
    load *L;
    tuser *u;
    struct lh_conn *c;
} setup_req;

static int setup_on_head(void *ud, int status)
{
    ((setup_req *)ud)->u->status = status;
    return 0;
}

static int setup_on_body(void *ud, const uint8_t *p, size_t n)
{
    setup_req *q = ud;
    return q->u->body.len + n > 65536 || vbuf_append(&q->u->body, p, n) < 0;
}

/* One step's answer: its figures, then the next step. */
static int setup_result(load *L, tuser *u)
{
    json_t *j = json_loadb((const char *)u->body.data, u->body.len, 0, NULL);
    int rc = -1;
    if (u->status < 200 || u->status > 299)
        goto out;
    if (u->step == STEP_SESSION) {
        const char *id = json_string_value(json_object_get(j, "id"));
        if (!id || strlen(id) >= sizeof u->session)
            goto out;
        snprintf(u->session, sizeof u->session, "%s", id);
    } else if (u->step == STEP_INFO) {
        const char *k = json_string_value(json_object_get(j, "enclave_public_key"));
        uint8_t pub[X25519_KEY_LEN];
        if (!k || hex_decode_exact(k, strlen(k), pub, sizeof pub) < 0)
            goto out;
        if (L->opt.enclave && memcmp(pub, L->enclave_pub, sizeof pub) != 0) {
            fprintf(stderr, "veil-load: veild serves another enclave key than --enclave's\n");
            goto out;
        }
        memcpy(L->enclave_pub, pub, sizeof pub);
        L->T->have_key = true;
    }
    rc = 0;
out:
    if (rc < 0)
        fprintf(stderr, "veil-load: user %ld: %s answered %d: %.*s\n", u->index, STEP_NAME[u->step], u->status,
                (int)(u->body.len > 300 ? 300 : u->body.len), (const char *)u->body.data);
    json_decref(j);
    return rc;
}

static void setup_on_end(void *ud, lh_err err, const char *detail)
{
    setup_req *q = ud;
    load *L = q->L;
    tuser *u = q->u;
    struct lh_conn *c = q->c;
    free(q);
    if (err != LH_OK) {
        fprintf(stderr, "veil-load: user %ld: %s: %s%s%s\n", u->index, STEP_NAME[u->step], lh_strerror(err),
                detail ? ": " : "", detail ? detail : "");
        lh_conn_free(c);
        L->T->setup_failed = true;
    } else {
        lu_keep(L, u, c);
        if (setup_result(L, u) < 0)
            L->T->setup_failed = true;
    }
    vbuf_free(&u->body);
    if (!L->T->setup_failed) {
        u->step = (u->step == STEP_SESSION && u->index != 0) ? STEP_DONE : u->step + 1;
        if (u->step != STEP_DONE) {
            setup_send(L, u);
            return;
        }
        L->T->setup_done++;
    }
    L->T->setup_running--;
    setup_next(L);
}

static const lh_handler SETUP_H = {setup_on_head, setup_on_body, setup_on_end};

static void setup_send(load *L, tuser *u)
{
    static const char KEYS[] = "{\"public_key\":\"%s\",\"encrypted_private_key\":\"%s\",\"iv\":\"%s\","
                               "\"tag\":\"%s\",\"salt\":\"%s\",\"recovery_encrypted_private_key\":\"%s\","
                               "\"recovery_iv\":\"%s\",\"recovery_tag\":\"%s\",\"recovery_salt\":\"%s\"}";
    char body[1024] = "";
    const char *method = "POST", *path = NULL;
    switch (u->step) {
    case STEP_SYNC: path = API "/users/sync"; break;
    case STEP_KEYS: { /* the wrapped private key is opaque to veild: random bytes of the web client's sizes */
        uint8_t r[32 + 16 + 16 + 32];
        char h[4][65];
        random_bytes(r, sizeof r);
        hex_encode(r, 32, h[0]);
        hex_encode(r + 32, 16, h[1]);
        hex_encode(r + 48, 16, h[2]);
        hex_encode(r + 64, 32, h[3]);
        snprintf(body, sizeof body, KEYS, u->pub_hex, h[0], h[1], h[2], h[3], h[0], h[1], h[2], h[3]);
        path = API "/users/me/keys";
        break;
    }
    case STEP_SESSION:
        snprintf(body, sizeof body, "{\"name\":\"veil-load %ld\"}", u->index);
        path = API "/chat/sessions";
        break;
    default:
        method = "GET";
        path = API "/chat/enclave/info";
        break;
    }
    setup_req *q = calloc(1, sizeof *q);
    bool reused;
    char err[128] = "out of memory";
    if (q)
        q->c = lu_conn(L, u, &reused, err, sizeof err);
    if (!q || !q->c || lh_request(q->c, method, path, L->T->host, u->token, body[0] ? body : NULL, strlen(body),
                                  &SETUP_H, q) < 0) {
        fprintf(stderr, "veil-load: user %ld: cannot send %s: %s\n", u->index, STEP_NAME[u->step], err);
        if (q)
            lh_conn_free(q->c);
        free(q);
        L->T->setup_failed = true;
        L->T->setup_running--;
        setup_next(L);
        return;
    }
    q->L = L;
    q->u = u;
}

static void setup_next(load *L)
{
    through *T = L->T;
    while (!T->setup_failed && T->setup_running < SETUP_AT_ONCE && T->setup_next < T->n_users) {
        T->setup_running++;
        setup_send(L, &T->users[T->setup_next++]);
    }
    if (T->setup_running == 0)
        event_base_loopbreak(L->base);
}

int load_through_setup(load *L, long n_users)
{
    char err[256];
    through *T = calloc(1, sizeof *T);
    if (!T)
        return -1;
    L->T = T;
    TAILQ_INIT(&T->late);
    err[0] = '\0';
    if (parse_url(T, L->opt.through, err, sizeof err) < 0 || !(T->key = read_dev_key(L->opt.dev_key, err, sizeof err)) ||
        jwks_rsa_thumbprint(T->key, T->kid) < 0) {
        fprintf(stderr, "veil-load: %s\n", T->key ? "cannot compute the dev key's id" : err);
        return -1;
    }
    uint8_t run[8];
    random_bytes(run, sizeof run);
    hex_encode(run, sizeof run, T->run);
    T->n_users = n_users;
    T->ring_cap = n_users * L->opt.per_user;
    if (!(T->users = calloc((size_t)n_users, sizeof *T->users)) ||
        !(T->ring = calloc((size_t)T->ring_cap, sizeof *T->ring)))
        return -1;
    long ttl = L->opt.time_limit_s * 4 + L->opt.duration_s + L->opt.hold_s + 600;
    if (ttl < TOKEN_TTL_MIN_S)
        ttl = TOKEN_TTL_MIN_S;
    double t0 = vl_now_ms();
    for (long i = 0; i < n_users; i++) {
        tuser *u = &T->users[i];
        char sub[64];
        uint8_t priv[X25519_KEY_LEN];
        snprintf(sub, sizeof sub, "veil-load-%s-%ld", T->run, i);
        u->index = i;
        u->token = mint_token(T, L->opt.issuer, sub, ttl);
        u->idle = calloc((size_t)L->opt.per_user, sizeof *u->idle);
        if (!u->token || !u->idle || x25519_keygen(priv, u->pub) < 0) {
            fprintf(stderr, "veil-load: cannot make user %ld's token or keys\n", i);
            return -1;
        }
        secure_wipe(priv, sizeof priv); /* veild stores and relays; nothing here opens the stored copies */
        hex_encode(u->pub, sizeof u->pub, u->pub_hex);
    }
    /* slot k of the ring is user k % n: a user's slots are spread, so the first
     * streams of a run already use every user */
    for (long k = 0; k < T->ring_cap; k++)
        T->ring[k] = k % n_users;
    T->ring_len = T->ring_cap;
    double t1 = vl_now_ms();
    setup_next(L);
    event_base_dispatch(L->base);
    if (T->setup_failed || T->setup_done != n_users || !T->have_key) {
        fprintf(stderr, "veil-load: setting up the users through %s failed\n", L->opt.through);
        return -1;
    }
    printf("veil-load: %ld users through %s (tokens %.0f ms, sync + keys + session %.0f ms)\n", n_users,
           L->opt.through, t1 - t0, vl_now_ms() - t1);
    return 0;
}

void load_through_free(load *L)
{
    through *T = L->T;
    if (!T)
        return;
    for (long i = 0; i < T->n_users; i++) {
        tuser *u = &T->users[i];
        while (u->n_idle > 0)
            lh_conn_free(u->idle[--u->n_idle]);
        free(u->idle);
        if (u->token)
            secure_wipe(u->token, strlen(u->token));
        free(u->token);
        vbuf_free(&u->body);
    }
    while (!TAILQ_EMPTY(&T->late)) {
        late_slot *ls = TAILQ_FIRST(&T->late);
        TAILQ_REMOVE(&T->late, ls, link);
        event_free(ls->ev);
        free(ls);
    }
    free(T->users);
    free(T->ring);
    EVP_PKEY_free(T->key);
    free(T);
    L->T = NULL;
}

static void late_return(late_slot *ls)
{
    through *T = ls->L->T;
    TAILQ_REMOVE(&T->late, ls, link);
    event_free(ls->ev);
    lu_give_slot(ls->L, ls->u);
    free(ls);
}

static void on_late(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    late_slot *ls = arg;
    load *L = ls->L;
    late_return(ls);
    vl_launch_more(L);
}

void lu_give_slot_later(load *L, tuser *u, long ms)
{
    late_slot *ls = calloc(1, sizeof *ls);
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!ls || !(ls->ev = evtimer_new(L->base, on_late, ls))) {
        free(ls);
        lu_give_slot(L, u);
        return;
    }
    ls->L = L;
    ls->u = u;
    TAILQ_INSERT_TAIL(&L->T->late, ls, link);
    evtimer_add(ls->ev, &tv);
}

tuser *lu_take_slot(load *L)
{
    through *T = L->T;
    if (T->ring_len == 0)
        return NULL;
    tuser *u = &T->users[T->ring[T->ring_head]];
    T->ring_head = (T->ring_head + 1) % T->ring_cap;
    T->ring_len--;
    return u;
}

void lu_give_slot(load *L, tuser *u)
{
    through *T = L->T;
    T->ring[(T->ring_head + T->ring_len) % T->ring_cap] = u->index;
    T->ring_len++;
}

const char *lu_host(const load *L) { return L->T->host; }

long load_through_free_slots(const load *L) { return L->T ? L->T->ring_len : 0; }

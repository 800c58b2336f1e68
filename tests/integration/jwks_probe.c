/* jwks_probe — a test-only driver for the JWKS cache on a real event loop
 * (tests/integration/test_jwks.py). Reads one command per line on stdin and answers
 * with one line per result on stdout:
 *   lookup KID        -> "lookup KID found|unknown|unavailable sync|async"
 *   multi N KID       -> N lookups at once, N answer lines
 *   cancel KID        -> a lookup cancelled at once if it had to wait: "cancelled" or
 *                        its synchronous answer
 *   pair KID          -> two lookups that must wait; the first answered prints "pair KID
 *                        STATUS async", cancels its sibling ("pair sibling cancelled")
 *                        and looks KID up again from inside its callback (one "lookup" line)
 *   verify TOKEN      -> "verify ok sub=.. org=.. role=.. slug=.. perms=N sync|async" or
 *                        "verify err status=S code=C detail=TEXT sync|async"
 *   stats             -> "stats keys=N usable=B fresh=B fetching=B fetches=N failures=N waiting=N"
 *   quit
 * Options: --url URL | --file FILE, --issuer ISS, --azp ORIGIN, --ttl-ms, --unknown-kid-ms,
 * --retry-ms, --stale-ms, --timeout-ms, --leeway S.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/buf.h"
#include "common/config.h"
#include "common/log.h"
#include "server/jwks_cache.h"
#include "auth/jwt.h"

static struct event_base *base;
static jwks_cache *cache;
static jwt_config jcfg;
static const char *azp_list[1];
static bool in_call;
static vbuf line_buf = VBUF_INIT;

typedef struct req {
    char kid[JWKS_KID_MAX + 1];
} req;

static const char *status_name(jwks_status st)
{
    return st == JWKS_FOUND ? "found" : st == JWKS_UNKNOWN_KID ? "unknown" : "unavailable";
}

static void on_key(void *ud, jwks_status st, EVP_PKEY *key)
{
    req *r = ud;
    if ((st == JWKS_FOUND) != (key != NULL))
        printf("error key/status mismatch\n");
    printf("lookup %s %s %s\n", r->kid, status_name(st), in_call ? "sync" : "async");
    fflush(stdout);
    free(r);
}

static void on_verify(void *ud, jwt_err e, const jwt_auth *a)
{
    (void)ud;
    if (e == JWT_OK)
        printf("verify ok sub=%s org=%s role=%s slug=%s perms=%zu %s\n", a->user_id, a->org_id,
               a->org_role, a->org_slug, a->n_permissions, in_call ? "sync" : "async");
    else
        printf("verify err status=%d code=%d detail=%s %s\n", jwt_http_status(e), (int)e,
               jwt_detail(e), in_call ? "sync" : "async");
    fflush(stdout);
}

/* "pair": the two waits of one batch; the first callback cancels the other */
static struct {
    char kid[JWKS_KID_MAX + 1];
    jwks_wait *w[2];
} pair_st;

static void lookup(const char *kid, bool cancel);

static void on_pair(void *ud, jwks_status st, EVP_PKEY *key)
{
    (void)key;
    int i = ud == &pair_st.w[1];
    pair_st.w[i] = NULL;
    printf("pair %s %s %s\n", pair_st.kid, status_name(st), in_call ? "sync" : "async");
    jwks_wait *sibling = pair_st.w[!i];
    if (sibling) {
        pair_st.w[!i] = NULL;
        jwks_wait_cancel(sibling);
        printf("pair sibling cancelled\n");
    }
    fflush(stdout);
    lookup(pair_st.kid, false);
}

static void pair(const char *kid)
{
    snprintf(pair_st.kid, sizeof pair_st.kid, "%s", kid);
    in_call = true;
    pair_st.w[0] = jwks_lookup(cache, kid, on_pair, &pair_st.w[0]);
    pair_st.w[1] = jwks_lookup(cache, kid, on_pair, &pair_st.w[1]);
    in_call = false;
}

static void lookup(const char *kid, bool cancel)
{
    req *r = calloc(1, sizeof *r);
    if (!r) {
        printf("error nomem\n");
        return;
    }
    snprintf(r->kid, sizeof r->kid, "%s", kid);
    in_call = true;
    jwks_wait *w = jwks_lookup(cache, kid, on_key, r);
    in_call = false;
    if (w && cancel) {
        jwks_wait_cancel(w);
        free(r);
        printf("cancelled\n");
    }
}

static void command(char *line)
{
    char *arg = strchr(line, ' ');
    if (arg)
        *arg++ = '\0';
    if (strcmp(line, "lookup") == 0 && arg) {
        lookup(arg, false);
    } else if (strcmp(line, "cancel") == 0 && arg) {
        lookup(arg, true);
    } else if (strcmp(line, "pair") == 0 && arg) {
        pair(arg);
    } else if (strcmp(line, "multi") == 0 && arg) {
        char *kid = strchr(arg, ' ');
        long n;
        if (!kid) {
            printf("error usage\n");
        } else {
            *kid++ = '\0';
            if (parse_long(arg, 1, 1000, &n) < 0)
                printf("error usage\n");
            else
                for (long i = 0; i < n; i++)
                    lookup(kid, false);
        }
    } else if (strcmp(line, "verify") == 0 && arg) {
        in_call = true;
        jwks_verify(cache, arg, strlen(arg), &jcfg, on_verify, NULL);
        in_call = false;
    } else if (strcmp(line, "stats") == 0) {
        jwks_stats st;
        jwks_cache_stats(cache, &st);
        printf("stats keys=%zu usable=%d fresh=%d fetching=%d fetches=%lu failures=%lu waiting=%lu\n",
               st.n_keys, st.usable, st.fresh, st.fetching, st.fetches, st.failures, st.waiting);
    } else if (strcmp(line, "quit") == 0) {
        event_base_loopexit(base, NULL);
    } else {
        printf("error unknown command\n");
    }
    fflush(stdout);
}

static void on_stdin(evutil_socket_t fd, short what, void *ud)
{
    (void)what, (void)ud;
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) {
        event_base_loopexit(base, NULL);
        return;
    }
    vbuf_append(&line_buf, buf, (size_t)n);
    for (;;) {
        uint8_t *nl = memchr(line_buf.data, '\n', line_buf.len);
        if (!nl)
            break;
        *nl = '\0';
        command((char *)line_buf.data);
        vbuf_consume(&line_buf, (size_t)(nl - line_buf.data) + 1);
    }
}

static unsigned ms_arg(const char *s)
{
    long v;
    if (parse_long(s, 1, 86400000L, &v) < 0) {
        fprintf(stderr, "jwks_probe: bad number %s\n", s);
        exit(2);
    }
    return (unsigned)v;
}

int main(int argc, char **argv)
{
    log_init("jwks_probe");
    static const struct option opts[] = {
        {"url", required_argument, 0, 'u'},        {"file", required_argument, 0, 'f'},
        {"issuer", required_argument, 0, 'i'},     {"azp", required_argument, 0, 'a'},
        {"ttl-ms", required_argument, 0, 't'},     {"unknown-kid-ms", required_argument, 0, 'k'},
        {"retry-ms", required_argument, 0, 'r'},   {"stale-ms", required_argument, 0, 's'},
        {"timeout-ms", required_argument, 0, 'o'}, {"leeway", required_argument, 0, 'l'},
        {0, 0, 0, 0},
    };
    jwks_cache_config cfg = {0};
    jcfg.issuer = "https://veil.dev.local";
    jcfg.leeway_s = JWT_DEFAULT_LEEWAY_S;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': cfg.url = optarg; break;
        case 'f': cfg.file = optarg; break;
        case 'i': jcfg.issuer = optarg; break;
        case 'a':
            azp_list[0] = optarg;
            jcfg.azp = azp_list;
            jcfg.n_azp = 1;
            break;
        case 't': cfg.ttl_ms = ms_arg(optarg); break;
        case 'k': cfg.unknown_kid_min_ms = ms_arg(optarg); break;
        case 'r': cfg.retry_ms = ms_arg(optarg); break;
        case 's': cfg.stale_max_ms = ms_arg(optarg); break;
        case 'o': cfg.timeout_ms = ms_arg(optarg); break;
        case 'l': jcfg.leeway_s = (long)ms_arg(optarg); break;
        default: return 2;
        }
    }
    char err[256];
    base = event_base_new();
    if (!base || jwt_config_check(&jcfg, err, sizeof err) < 0 ||
        !(cache = jwks_cache_new(base, &cfg, err, sizeof err))) {
        fprintf(stderr, "jwks_probe: %s\n", base ? err : "no event base");
        return 1;
    }
    struct event *ev = event_new(base, STDIN_FILENO, EV_READ | EV_PERSIST, on_stdin, NULL);
    event_add(ev, NULL);
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    event_free(ev);
    jwks_cache_free(cache);
    event_base_free(base);
    vbuf_free(&line_buf);
    return 0;
}

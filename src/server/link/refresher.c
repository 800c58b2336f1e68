#include "server/link/refresher.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/https.h"
#include "aws/imds.h"
#include "common/config.h"
#include "common/isotime.h"
#include "common/log.h"

#define EXPIRY_MARGIN_SECONDS 300 /* refresh when the credentials expire within 5 minutes */
#define BACKOFF_MIN_MS 1000u
#define BACKOFF_MAX_MS 60000u

typedef enum rf_state { RF_IDLE = 0, RF_FETCHING, RF_PUSHING } rf_state;

struct refresher {
    struct event_base *base;
    enclave_client *ec;
    https_ctx *https;
    imds_config imds;
    char imds_host[256];
    bool from_env;
    long interval_s;
    rf_state st;
    bool again;            /* a kick arrived while busy */
    bool repush;           /* the enclave restarted while a push was on the wire */
    imds_credentials creds;
    time_t lifetime;       /* expiry minus fetch time, for the current credentials */
    bool pushed;
    time_t last_push;
    unsigned long pushes;
    unsigned backoff_ms;
    struct event *timer;   /* the next attempt or check */
    imds_op *fetch;
    ec_op *push;
};

/* The next push: after the refresh interval, or before expiry, whichever comes
 * first. The margin is five minutes, or a quarter of their lifetime for
 * short-lived credentials (so a 15-minute credential is not refreshed constantly). */
static time_t margin_of(const refresher *rf)
{
    time_t quarter = rf->lifetime / 4;
    return quarter < EXPIRY_MARGIN_SECONDS ? quarter : EXPIRY_MARGIN_SECONDS;
}

static unsigned next_refresh_ms(const refresher *rf)
{
    time_t now = time(NULL);
    time_t next = rf->last_push + rf->interval_s;
    if (rf->creds.expires_at && rf->creds.expires_at - margin_of(rf) < next)
        next = rf->creds.expires_at - margin_of(rf);
    long ms = ((long)(next - now)) * 1000L;
    return ms < 1000 ? 1000u : ms > 86400000L ? 86400000u : (unsigned)ms;
}

static void schedule(refresher *rf, unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(rf->timer, &tv);
}

static void attempt(refresher *rf);

static void failed(refresher *rf, const char *why)
{
    rf->st = RF_IDLE;
    log_warn(NULL, "event=credentials_push_failed source=%s retry_ms=%u reason=\"%s\"",
             refresher_source(rf), rf->backoff_ms, why);
    schedule(rf, rf->backoff_ms);
    rf->backoff_ms = rf->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : rf->backoff_ms * 2;
}

static void on_pushed(void *ud, bool ok, const char *err)
{
    refresher *rf = ud;
    rf->push = NULL;
    if (!ok) {
        rf->pushed = false; /* the enclave does not hold them: the same ones go again */
        rf->repush = false;
        failed(rf, err ? err : "enclave refused");
        return;
    }
    rf->st = RF_IDLE;
    /* a yes from the enclave that restarted meanwhile does not count for the new one */
    rf->pushed = !rf->repush;
    rf->repush = false;
    rf->pushes++;
    rf->last_push = time(NULL);
    rf->backoff_ms = BACKOFF_MIN_MS;
    log_info(NULL, "event=credentials_pushed source=%s expiration=%s count=%lu", refresher_source(rf),
             rf->creds.expiration[0] ? rf->creds.expiration : "none", rf->pushes);
    if (rf->again) {
        rf->again = false;
        attempt(rf);
        return;
    }
    schedule(rf, next_refresh_ms(rf));
}

static void push(refresher *rf)
{
    rf->st = RF_PUSHING;
    rf->push = ec_set_credentials(rf->ec, &rf->creds, on_pushed, rf);
    if (!rf->push)
        failed(rf, "cannot start the push");
}

static void on_fetched(void *ud, const imds_credentials *c, const char *err)
{
    refresher *rf = ud;
    rf->fetch = NULL;
    if (err) {
        failed(rf, err);
        return;
    }
    time_t now = time(NULL);
    bool same = c->expires_at && c->expires_at == rf->creds.expires_at &&
                strcmp(c->access_key_id, rf->creds.access_key_id) == 0;
    if (same && rf->pushed && c->expires_at - margin_of(rf) <= now) {
        /* due to expire, and IMDS has not rotated yet: the enclave already holds
         * these; ask again soon */
        rf->st = RF_IDLE;
        schedule(rf, c->expires_at - now > 2 ? 1000u : 250u);
        return;
    }
    /* the same ones far from expiry: the interval's push sends them again, as the
     * original's loop did (EC2 rotates on its own schedule: waiting for it here
     * would ask IMDS every second for hours) */
    if (!same)
        rf->lifetime = c->expires_at ? c->expires_at - now : 0;
    imds_credentials_clear(&rf->creds);
    rf->creds = *c;
    push(rf);
}

static void attempt(refresher *rf)
{
    if (rf->st != RF_IDLE) {
        rf->again = true;
        return;
    }
    evtimer_del(rf->timer);
    if (rf->from_env) {
        push(rf);
        return;
    }
    rf->st = RF_FETCHING;
    rf->fetch = imds_fetch_credentials(rf->https, &rf->imds, on_fetched, rf);
    if (!rf->fetch)
        failed(rf, "cannot start the IMDS request");
}

/* A scheduled refresh, or a retry after a failure. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    attempt(arg);
}

static void on_restart(void *ud)
{
    refresher *rf = ud;
    log_info(NULL, "event=enclave_restart_detected action=push_credentials");
    rf->pushed = false;
    if (rf->st == RF_PUSHING)
        rf->repush = true;
    attempt(rf);
}

refresher *refresher_new(struct event_base *base, const server_config *cfg, enclave_client *ec,
                         char *err, size_t errlen)
{
    refresher *rf = calloc(1, sizeof *rf);
    if (!rf) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rf->base = base;
    rf->ec = ec;
    rf->interval_s = cfg->refresh_seconds;
    rf->backoff_ms = BACKOFF_MIN_MS;
    rf->timer = evtimer_new(base, on_timer, rf);
    const char *akid = config_str("AWS_ACCESS_KEY_ID", NULL);
    const char *secret = config_str("AWS_SECRET_ACCESS_KEY", NULL);
    if (akid && secret) {
        /* the standard AWS variables win over IMDS, as in the AWS SDKs */
        rf->from_env = true;
        const char *token = config_str("AWS_SESSION_TOKEN", "");
        const char *exp = config_str("AWS_CREDENTIAL_EXPIRATION", "");
        if (strlen(akid) >= sizeof rf->creds.access_key_id ||
            strlen(secret) >= sizeof rf->creds.secret_access_key ||
            strlen(token) >= sizeof rf->creds.session_token || strlen(exp) >= sizeof rf->creds.expiration) {
            snprintf(err, errlen, "AWS credential variables are too long");
            goto fail;
        }
        snprintf(rf->creds.access_key_id, sizeof rf->creds.access_key_id, "%s", akid);
        snprintf(rf->creds.secret_access_key, sizeof rf->creds.secret_access_key, "%s", secret);
        snprintf(rf->creds.session_token, sizeof rf->creds.session_token, "%s", token);
        snprintf(rf->creds.expiration, sizeof rf->creds.expiration, "%s", exp);
        if (exp[0] && (rf->creds.expires_at = time_parse_iso8601(exp)) == (time_t)-1) {
            snprintf(err, errlen, "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 UTC time");
            goto fail;
        }
        rf->lifetime = rf->creds.expires_at ? rf->creds.expires_at - time(NULL) : 0;
        if (!token[0]) {
            /* the enclave protocol requires a session token (spec §2.2) */
            snprintf(err, errlen, "AWS_SESSION_TOKEN must be set with AWS_ACCESS_KEY_ID");
            goto fail;
        }
    } else {
        const char *ep = cfg->imds_endpoint;
        const char *colon = strrchr(ep, ':');
        long port;
        if (!colon || (size_t)(colon - ep) >= sizeof rf->imds_host || parse_long(colon + 1, 1, 65535, &port) < 0) {
            snprintf(err, errlen, "VEIL_IMDS_ENDPOINT must be HOST:PORT");
            goto fail;
        }
        memcpy(rf->imds_host, ep, (size_t)(colon - ep));
        rf->imds.host = rf->imds_host;
        rf->imds.port = (uint16_t)port;
        rf->https = https_ctx_new(base, NULL, err, errlen);
        if (!rf->https)
            goto fail;
    }
    ec_on_restart(ec, on_restart, rf);
    return rf;
fail:
    refresher_free(rf);
    return NULL;
}

void refresher_start(refresher *rf)
{
    attempt(rf);
}

void refresher_kick(refresher *rf)
{
    attempt(rf);
}

void refresher_free(refresher *rf)
{
    if (!rf)
        return;
    if (rf->fetch)
        imds_cancel(rf->fetch);
    if (rf->push)
        ec_op_cancel(rf->push);
    if (rf->timer)
        event_free(rf->timer);
    https_ctx_free(rf->https);
    imds_credentials_clear(&rf->creds);
    free(rf);
}

bool refresher_pushed(const refresher *rf) { return rf->pushed; }
time_t refresher_expiration(const refresher *rf) { return rf->creds.expires_at; }
const char *refresher_source(const refresher *rf) { return rf->from_env ? "env" : "imds"; }
unsigned long refresher_push_count(const refresher *rf) { return rf->pushes; }

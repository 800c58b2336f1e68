/* auth — route-facing glue over jwt (RS256 verification) and jwks (the key cache). */
#include "server/auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/jwks_cache.h"
#include "auth/jwt.h"

#define MAX_AZP 16

struct auth_state {
    jwks_cache *jwks;
    jwt_config cfg;
    char issuer[512];
    char audience[256];
    char azp_buf[1024];
    const char *azp[MAX_AZP];
};

struct auth_wait {
    jwks_wait *w;
    auth_cb cb;
    void *ud;
    bool in_call; /* jwks answered while auth_verify was still running */
    jwt_err e;
    jwt_auth ja;
};

auth_state *auth_new(struct event_base *base, const server_config *cfg, char *err, size_t errlen)
{
    auth_state *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(a->issuer, sizeof a->issuer, "%s", cfg->clerk_issuer);
    snprintf(a->audience, sizeof a->audience, "%s", cfg->clerk_audience);
    snprintf(a->azp_buf, sizeof a->azp_buf, "%s", cfg->clerk_azp);
    a->cfg.issuer = a->issuer;
    a->cfg.audience = a->audience[0] ? a->audience : NULL;
    a->cfg.leeway_s = cfg->jwt_leeway;
    for (char *save = NULL, *tok = strtok_r(a->azp_buf, ",", &save); tok && a->cfg.n_azp < MAX_AZP;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok)
            a->azp[a->cfg.n_azp++] = tok;
    }
    a->cfg.azp = a->azp;
    if (jwt_config_check(&a->cfg, err, errlen) < 0)
        goto fail;
    char url[600] = "";
    if (cfg->clerk_jwks_url[0])
        snprintf(url, sizeof url, "%s", cfg->clerk_jwks_url);
    else if (jwks_default_url(cfg->clerk_issuer, url, sizeof url) < 0) {
        snprintf(err, errlen, "CLERK_ISSUER is not a usable URL");
        goto fail;
    }
    jwks_cache_config jc = {
        .file = cfg->clerk_jwks_file[0] ? cfg->clerk_jwks_file : NULL,
        .url = cfg->clerk_jwks_file[0] ? NULL : url,
        .ca_file = cfg->ca_file[0] ? cfg->ca_file : NULL,
    };
    a->jwks = jwks_cache_new(base, &jc, err, errlen);
    if (!a->jwks)
        goto fail;
    jwks_cache_prefetch(a->jwks);
    return a;
fail:
    auth_free(a);
    return NULL;
}

void auth_free(auth_state *a)
{
    if (!a)
        return;
    jwks_cache_free(a->jwks);
    free(a);
}

static void deliver(auth_cb cb, void *ud, jwt_err e, const jwt_auth *ja)
{
    if (e != JWT_OK) {
        cb(ud, jwt_http_status(e), jwt_detail(e), NULL);
        return;
    }
    cb(ud, 0, NULL, ja);
}

static void on_verified(void *ud, jwt_err e, const jwt_auth *ja)
{
    auth_wait *w = ud;
    if (w->in_call) { /* answered synchronously: auth_verify delivers */
        w->e = e;
        if (ja)
            w->ja = *ja;
        return;
    }
    auth_cb cb = w->cb;
    void *cud = w->ud;
    free(w);
    deliver(cb, cud, e, ja);
}

auth_wait *auth_verify(auth_state *a, const char *token, auth_cb cb, void *ud)
{
    auth_wait *w = calloc(1, sizeof *w);
    if (!w) {
        cb(ud, 503, "Authentication service unavailable", NULL);
        return NULL;
    }
    w->cb = cb;
    w->ud = ud;
    w->e = JWT_ERR_MALFORMED;
    w->in_call = true;
    w->w = jwks_verify(a->jwks, token, strlen(token), &a->cfg, on_verified, w);
    w->in_call = false;
    if (w->w)
        return w; /* waiting for a key fetch */
    jwt_err e = w->e;
    jwt_auth *ja = &w->ja;
    deliver(cb, ud, e, ja);
    free(w);
    return NULL;
}

void auth_wait_cancel(auth_wait *w)
{
    if (!w)
        return;
    jwks_wait_cancel(w->w);
    free(w);
}

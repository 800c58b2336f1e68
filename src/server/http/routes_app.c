/* routes_app — the app-level routes (spec §4.1): welcome, health, protected. */
#include <stdio.h>

#include "server/http/routes_util.h"

static void app_root(api_req *r)
{
    char msg[128];
    snprintf(msg, sizeof msg, "Welcome to %s API", r->srv->cfg.project_name);
    ru_reply(r, 200, json_pack("{s:s}", "message", msg));
}

static void app_health(api_req *r)
{
    if (store_ping(r->srv->db) == STORE_OK) {
        ru_reply(r, 200, json_pack("{s:s, s:s}", "status", "healthy", "database", "connected"));
        return;
    }
    log_warn(r->rid, "event=health_db_down detail=\"%s\"", store_last_error(r->srv->db));
    ru_reply(r, 503, json_pack("{s:s, s:s}", "status", "unhealthy", "database", "disconnected"));
}

static void app_protected(api_req *r)
{
    ru_reply(r, 200, json_pack("{s:s, s:s}", "message", "You are authenticated", "user_id", r->auth.user_id));
}

const route ROUTES_APP[] = {
    {EVHTTP_REQ_GET, "/", app_root, 0},
    {EVHTTP_REQ_GET, "/health", app_health, 0},
    {EVHTTP_REQ_GET, "/protected", app_protected, ROUTE_AUTH},
};
const size_t N_ROUTES_APP = sizeof ROUTES_APP / sizeof ROUTES_APP[0];

/* routes_context — /api/v1/context/ (spec §4.6): the caller's context document,
 * the org's in org context (writing it takes the JWT admin role), else the
 * user's. Full replace; the store keys the row ctx_<owner_type>_<owner_id>. */
#include "server/http/routes_util.h"

#define P "/api/v1/context"

static void owner_of(const jwt_auth *a, const char **type, const char **id)
{
    bool org = jwt_auth_is_org(a);
    *type = org ? "org" : "user";
    *id = org ? a->org_id : a->user_id;
}

static void get_context(api_req *r)
{
    const char *type, *id;
    owner_of(&r->auth, &type, &id);
    ru_context_get(r, type, id, true);
}

static void put_context(api_req *r)
{
    const char *type, *id;
    owner_of(&r->auth, &type, &id);
    if (jwt_auth_is_org(&r->auth) && !jwt_auth_is_org_admin(&r->auth)) {
        api_reply_detail(r, 403, "Only organization admins can update org context");
        return;
    }
    ru_context_put(r, type, id, true);
}

const route ROUTES_CONTEXT[] = {
    {EVHTTP_REQ_GET, P "/", get_context, ROUTE_AUTH | ROUTE_DB},
    {EVHTTP_REQ_PUT, P "/", put_context, ROUTE_AUTH | ROUTE_DB},
};
const size_t N_ROUTES_CONTEXT = sizeof ROUTES_CONTEXT / sizeof ROUTES_CONTEXT[0];

/* routes_static — the web chat page under /app/ (its files, and config.json: what
 * the page verifies the enclave against), the API description at /openapi.json
 * and its reader at /docs. No token: these are the same for everyone and hold no
 * secret. Every answer carries a strict Content-Security-Policy (scripts and styles
 * from this origin only, no inline script, no other origin to connect to, no
 * framing), a strong ETag (If-None-Match answers 304) and Cache-Control: no-cache,
 * so a browser revalidates each use and never runs the page's code from before an
 * upgrade. Files come from web_assets (read at start), never from a request's path.
 */
#include <stdio.h>
#include <string.h>

#include "server/server_int.h"

/* 'wasm-unsafe-eval' lets the vendored Argon2id compile its WebAssembly; nothing
 * else may be evaluated. connect-src 'self': the page talks to this server only. */
#define WEB_CSP                                                                                          \
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " \
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* If-None-Match names this ETag (or is "*"): RFC 9110 §13.1.2's weak comparison. */
static bool not_modified(api_req *r, const char *etag)
{
    const char *h = api_header(r, "If-None-Match");
    if (!h)
        return false;
    size_t el = strlen(etag);
    for (const char *p = h; *p;) {
        p += strspn(p, " \t,");
        if (!*p)
            break;
        if (*p == '*')
            return true;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        size_t n = strcspn(p, ",");
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n == el && strncmp(p, etag, el) == 0)
            return true;
        p += strcspn(p, ",");
    }
    return false;
}

static void serve(api_req *r, const char *name)
{
    const web_file *f = web_assets_find(r->srv->web, name);
    if (!f) {
        api_reply_detail(r, 404, web_assets_count(r->srv->web) ? "Not Found"
                                                               : "The web page is not served here (see VEIL_WEB_DIR)");
        return;
    }
    api_add_header(r, "Content-Security-Policy", WEB_CSP);
    api_add_header(r, "X-Content-Type-Options", "nosniff");
    api_add_header(r, "Referrer-Policy", "no-referrer");
    api_add_header(r, "X-Frame-Options", "DENY");
    api_add_header(r, "Cross-Origin-Opener-Policy", "same-origin");
    api_add_header(r, "Cross-Origin-Resource-Policy", "same-origin");
    api_add_header(r, "Cache-Control", "no-cache");
    api_add_header(r, "ETag", f->etag);
    if (not_modified(r, f->etag)) {
        api_reply_empty(r, 304);
        return;
    }
    api_reply_bytes(r, 200, f->type, f->data, f->len);
}

static void app_index(api_req *r)
{
    serve(r, "index.html");
}

static void app_file(api_req *r)
{
    serve(r, r->params[0]); /* one segment, decoded: a name the set knows, or 404 */
}

static void app_vendor_file(api_req *r)
{
    char name[300];
    snprintf(name, sizeof name, "vendor/%s", r->params[0]);
    serve(r, name);
}

static void openapi(api_req *r)
{
    serve(r, "openapi.json");
}

static void docs(api_req *r)
{
    serve(r, "docs.html");
}

const route ROUTES_STATIC[] = {
    {EVHTTP_REQ_GET, "/app/", app_index, ROUTE_NO_BODY},
    {EVHTTP_REQ_GET, "/app/{}", app_file, ROUTE_NO_BODY},
    {EVHTTP_REQ_GET, "/app/vendor/{}", app_vendor_file, ROUTE_NO_BODY},
    {EVHTTP_REQ_GET, "/openapi.json", openapi, ROUTE_NO_BODY},
    {EVHTTP_REQ_GET, "/docs", docs, ROUTE_NO_BODY},
};
const size_t N_ROUTES_STATIC = sizeof ROUTES_STATIC / sizeof ROUTES_STATIC[0];

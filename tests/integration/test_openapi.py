#!/usr/bin/python3
"""Integration: the API description cannot drift from veild's routes.

- web/openapi.json (OpenAPI 3.1) names exactly the routes of veild's route table
  (every ROUTES_* in src/server/http/*.c, read from the source), with the same
  methods, and marks exactly the ROUTE_AUTH ones as needing a token;
- every $ref resolves, every path parameter is declared;
- a live veild (debug routes on) answers every documented route: a token route
  without a token gets 403 `Not authenticated` (it exists and is guarded), an open
  one anything but 404 `Not Found` or 405; a path or method it does not document
  gets 404 or 405;
- /openapi.json is that file, /docs is an HTML page under the page's CSP that loads
  nothing from another origin.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, ISSUER, SRC, Checks, Proc, TempDir, call, dev_token  # noqa: E402

C = Checks()
ROUTE_RE = re.compile(r'\{EVHTTP_REQ_(\w+),\s*(P\s+)?"([^"]*)",\s*\w+,\s*([^}]*)\}')


def route_table():
    """{(METHOD, pattern): needs_token} from every ROUTES_* table in the source."""
    routes = {}
    for path in sorted(glob.glob(os.path.join(SRC, "src/server/http/*.c"))):
        src = open(path).read()
        m = re.search(r'#define P "([^"]*)"', src)
        prefix = m.group(1) if m else ""
        for table in re.findall(r"const route ROUTES_\w+\[\] = \{(.*?)\n\};", src, re.S):
            for method, uses_p, pattern, flags in ROUTE_RE.findall(table):
                routes[(method, (prefix if uses_p else "") + pattern)] = "ROUTE_AUTH" in flags
    return routes


def documented(doc):
    ops = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            ops[(method.upper(), re.sub(r"\{[^}]+\}", "{}", path))] = (path, op)
    return ops


def refs(node, out):
    if isinstance(node, dict):
        if "$ref" in node:
            out.append(node["$ref"])
        for v in node.values():
            refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)
    return out


def static_checks(doc, routes, ops):
    C.ok(doc.get("openapi", "").startswith("3.1"), "the document is OpenAPI 3.1")
    C.ok(len(routes) >= 45, f"the route table was read from the source ({len(routes)} routes)")
    missing = sorted(set(routes) - set(ops))
    extra = sorted(set(ops) - set(routes))
    C.ok(not missing, f"every route of the table is documented; missing: {missing}")
    C.ok(not extra, f"every documented route is in the table; not served: {extra}")
    for key, needs_token in routes.items():
        if key in ops:
            _, op = ops[key]
            C.eq(bool(op.get("security")), needs_token, f"{key}: documented as needing a token exactly when it does")
    schemas = doc["components"]["schemas"]
    bad = [r for r in refs(doc, []) if not r.startswith("#/components/schemas/") or r.split("/")[-1] not in schemas]
    C.ok(not bad, f"every $ref resolves: {bad}")
    for (method, _), (path, op) in ops.items():
        names = re.findall(r"\{([^}]+)\}", path)
        declared = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
        C.eq(sorted(declared), sorted(names), f"{method} {path}: its path parameters are declared")
        C.ok(op.get("responses"), f"{method} {path}: has responses")


def probe(url, ops):
    for (method, _), (path, op) in sorted(ops.items()):
        concrete = re.sub(r"\{[^}]+\}", "x1", path).replace("/app/x1", "/app/index.html").replace(
            "/app/vendor/x1", "/app/vendor/LICENSE")
        body = {} if method in ("POST", "PUT") else None
        st, r, _ = call(url, method, concrete, body=body)
        if op.get("security"):
            C.eq((st, r), (403, {"detail": "Not authenticated"}), f"{method} {concrete}: guarded by a token")
        else:
            not_found = st == 404 and r == {"detail": "Not Found"}
            C.ok(not not_found and st != 405, f"{method} {concrete}: served without a token ({st} {r})")
    # undocumented: nothing answers there
    for method, path in [("GET", "/api/v1/chat/nothing"), ("PATCH", "/api/v1/chat/sessions"), ("GET", "/docs/x"),
                         ("POST", "/openapi.json"), ("GET", "/app/vendor/a/b")]:
        st, _, _ = call(url, method, path, body={} if method != "GET" else None)
        C.ok(st in (404, 405), f"{method} {path}: not a route ({st})")


def served(url, doc):
    st, r, resp = call(url, "GET", "/openapi.json")
    C.eq((st, r), (200, doc), "/openapi.json serves web/openapi.json")
    C.eq(resp.getheader("Content-Type"), "application/json", "/openapi.json is JSON")
    st, r, resp = call(url, "GET", "/docs")
    html = r.decode() if isinstance(r, bytes) else str(r)
    C.eq(st, 200, "/docs answers")
    C.ok(resp.getheader("Content-Type", "").startswith("text/html"), "/docs is HTML")
    C.ok("script-src 'self'" in (resp.getheader("Content-Security-Policy") or ""), "/docs has the page's CSP")
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    C.ok(srcs and all(s.startswith("/") and not s.startswith("//") for s in srcs),
         f"/docs loads nothing from another origin: {srcs}")
    st, js, _ = call(url, "GET", "/app/docs.js")
    C.ok(st == 200 and b"/openapi.json" in js and b"http" not in js, "docs.js reads /openapi.json and no other origin")


def main():
    doc = json.load(open(os.path.join(SRC, "web/openapi.json")))
    routes = route_table()
    ops = documented(doc)
    static_checks(doc, routes, ops)
    with TempDir() as tmp:
        dev_token(tmp, "bootstrap")
        veild = Proc("veild", [os.path.join(BIN, "veild")], {
            "ENCLAVE_MODE": "mock", "VEIL_LISTEN": "tcp:127.0.0.1:0", "VEIL_DATA_DIR": os.path.join(tmp, "data"),
            "CLERK_ISSUER": ISSUER, "CLERK_JWKS_FILE": os.path.join(tmp, "jwks.json"), "VEIL_DEBUG_ROUTES": "true",
            "VEIL_IMDS_ENDPOINT": "127.0.0.1:9",
            "CLERK_WEBHOOK_SECRET": "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldC0zMi1ieXRlcy4uLi4="}, tmp,
            drop_env=("CLERK_", "DATABASE_", "ENCLAVE_", "VEIL_WEB_"))
        try:
            veild.wait_listening()
            url = f"http://127.0.0.1:{veild.port}"
            probe(url, ops)
            served(url, doc)
        finally:
            C.eq(veild.stop(), 0, "veild exits cleanly")
            C.ok(veild.sanitizer_clean(), "veild: no sanitizer report")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

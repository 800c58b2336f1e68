#!/usr/bin/python3
"""Integration: veild's non-chat routes (spec §4.1, §4.4-§4.8) on a real veild.

veild runs with ENCLAVE_MODE=mock on 127.0.0.1 port 0 (the port is read from its
`event=listening` line), tokens come from `veil dev-token` (a custom-role token is
re-signed here with the same key via pyca/cryptography), webhooks are signed here
with the stdlib's HMAC (the Svix scheme, written independently of veil's C code).
The whole suite runs twice: on SQLite, then on a throwaway PostgreSQL server this
script starts itself (initdb as `nobody` when run as root) and always stops.
Effects that have no API (audit rows) are read from the database directly.
Every veild is stopped with SIGTERM and its log checked for sanitizer reports.
Prints `N passed, M failed`; exits non-zero on any failure.
Stays whole: one suite run once per backend, sharing its veilds, tokens and database.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import pwd
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import Checks, Postgres, Proc, TempDir, free_port  # noqa: E402

BIN = os.environ["VEIL_BIN"]
SRC = os.environ.get("VEIL_SRC", "")
ISSUER = "https://veil.dev.local"
H64 = "0123456789abcdef" * 4
H32 = "fedcba9876543210" * 2
P = "/api/v1"

C = Checks()


# --------------------------------------------------------------------------- processes

class Veild(Proc):
    """One veild (mock mode, no enclave calls needed), its port from its log."""

    def __init__(self, workdir, env_extra, name):
        env = {"ENCLAVE_MODE": "mock", "VEIL_LISTEN": "tcp:127.0.0.1:0", "CLERK_ISSUER": ISSUER,
               "VEIL_IMDS_ENDPOINT": "127.0.0.1:9", "VEIL_LOG_LEVEL": "info"}
        env.update(env_extra)
        super().__init__(name, [os.path.join(BIN, "veild")], env, workdir, cwd=workdir,
                         drop_env=("CLERK_", "DATABASE_", "VEIL_DEBUG", "ENCLAVE_"))
        self.wait_listening(30)

    def stop(self):
        """SIGTERM, wait, then the sanitizer check; returns the reports found."""
        super().stop()
        return self.sanitizer_reports()


class Response:
    def __init__(self, status, body, headers):
        self.status = status
        self.raw = body
        self.headers = headers
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.status} {self.raw[:300]!r}>"


def request(port, method, path, token=None, body=None, headers=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    out = Response(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    conn.close()
    return out


# --------------------------------------------------------------------------- tokens and signatures

class Tokens:
    def __init__(self, workdir):
        self.key = os.path.join(workdir, "jwt.key")
        self.jwks = os.path.join(workdir, "jwks.json")
        subprocess.run([os.path.join(BIN, "veil"), "dev-token", "--sub", "bootstrap", "--key", self.key,
                        "--jwks-out", self.jwks], check=True, stdout=subprocess.DEVNULL)
        self.cache = {}

    def __call__(self, sub, org=None, role=None, slug=None):
        k = (sub, org, role, slug)
        if k not in self.cache:
            args = [os.path.join(BIN, "veil"), "dev-token", "--sub", sub, "--key", self.key]
            if org:
                args += ["--org", org, "--role", role or "member"]
            if slug:
                args += ["--slug", slug]
            self.cache[k] = subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
        return self.cache[k]

    def with_org_role(self, sub, org, rol):
        """A dev-token whose o.rol is replaced (Clerk custom roles), re-signed with the same key."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
        tok = self(sub, org, "member")
        h, p, _ = tok.split(".")
        claims = json.loads(b64d(p))
        claims["o"]["rol"] = rol
        body = h + "." + b64e(json.dumps(claims, separators=(",", ":")).encode())
        with open(self.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        sig = key.sign(body.encode(), padding.PKCS1v15(), hashes.SHA256())
        return body + "." + b64e(sig)


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class Svix:
    def __init__(self):
        self.key = os.urandom(24)
        self.secret = "whsec_" + base64.b64encode(self.key).decode()
        self.n = 0

    def headers(self, body, ts=None, key=None, msg_id=None):
        """A fresh delivery, or (msg_id given) Svix's retry of an earlier one: same id, new time."""
        self.n += 1
        msg_id = msg_id or f"msg_test_{self.n}"
        ts = str(int(time.time()) if ts is None else ts)
        mac = hmac.new(key or self.key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        return {"svix-id": msg_id, "svix-timestamp": ts,
                "svix-signature": "v1," + base64.b64encode(mac).decode()}


# --------------------------------------------------------------------------- PostgreSQL

def lit(v):
    return "NULL" if v is None else "'" + str(v).replace("'", "''") + "'"


class Db:
    """Read-only look at the store, for effects the API does not show."""

    def __init__(self, sqlite_path=None, pg=None):
        self.sqlite_path, self.pg = sqlite_path, pg

    def rows(self, sql, *args):
        if self.pg:
            parts = sql.split("?")
            sql = parts[0] + "".join(lit(a) + p for a, p in zip(args, parts[1:]))
            return self.pg.query(sql)
        con = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(None if c is None else str(c) for c in r) for r in con.execute(sql, args)]
        finally:
            con.close()

    def execute(self, sql, *args):
        if self.pg:
            self.rows(sql, *args)
            return
        con = sqlite3.connect(self.sqlite_path, timeout=10)
        try:
            with con:
                con.execute(sql, args)
        finally:
            con.close()

    def audit(self, event_type, **where):
        sql = "SELECT actor_user_id, target_user_id, org_id, event_data FROM audit_logs WHERE event_type = ?"
        args = [event_type]
        for k, v in where.items():
            sql += f" AND {k} = ?"
            args.append(v)
        return [(a, t, o, json.loads(d) if d else None) for a, t, o, d in self.rows(sql, *args)]


# --------------------------------------------------------------------------- test harness

class Ctx:
    def __init__(self, port, tok, svix, db, plain_port, backend):
        self.port, self.tok, self.svix, self.db, self.plain_port, self.backend = \
            port, tok, svix, db, plain_port, backend

    def req(self, method, path, token=None, body=None, **kw):
        return request(self.port, method, path, token, body, **kw)

    def hook(self, payload, headers=None, raw=None, port=None):
        body = raw if raw is not None else json.dumps(payload).encode()
        h = self.svix.headers(body) if headers is None else headers
        return request(port or self.port, "POST", P + "/webhooks/clerk", raw=body, headers=h)


def expect(resp, status, detail=None, what=""):
    C.eq(resp.status, status, f"{what}: expected {status}, got {resp!r}")
    if detail is not None:
        C.eq(resp.json, {"detail": detail}, f"{what}: expected detail {detail!r}, got {resp!r}")
    return resp.json


def user_keys(upper=False):
    k = {"public_key": H64, "encrypted_private_key": "abcd" * 30, "iv": H32, "tag": H32[::-1], "salt": H64[::-1],
         "recovery_encrypted_private_key": "ef01" * 30, "recovery_iv": H32[::-1], "recovery_tag": H32,
         "recovery_salt": H64}
    return {n: v.upper() for n, v in k.items()} if upper else k


def ep(seed="a"):
    return {"ephemeral_public_key": (seed * 64)[:64], "iv": (seed * 32)[:32], "ciphertext": seed * 40,
            "auth_tag": ("b" * 32), "hkdf_salt": ("c" * 64)}


def org_keys():
    return {"org_public_key": "9" * 64, "admin_encrypted_private_key": "8" * 80, "admin_iv": "7" * 32,
            "admin_tag": "6" * 32, "admin_salt": "5" * 64, "admin_member_encrypted_key": ep("d")}


def setup_user(c, uid, keys=True):
    t = c.tok(uid)
    expect(c.req("POST", P + "/users/sync", t), 200, what=f"sync {uid}")
    if keys:
        expect(c.req("POST", P + "/users/me/keys", t, user_keys()), 201, what=f"keys {uid}")
    return t


def setup_org(c, org, admin, members=(), keyless=(), with_keys=True):
    """org with admin (keys), members (keys) and keyless members; returns membership ids by user."""
    ta = c.tok(admin, org, "admin")
    setup_user(c, admin)
    expect(c.req("POST", P + "/organizations/sync", ta, {"org_id": org, "name": f"Org {org}"}), 200)
    for u in list(members) + list(keyless):
        setup_user(c, u, keys=u in members)
        expect(c.req("POST", P + "/organizations/sync", c.tok(u, org, "member"), {"org_id": org, "name": f"Org {org}"}),
               200)
    if with_keys:
        expect(c.req("POST", f"{P}/organizations/{org}/keys", ta, org_keys()), 201, what="org keys")
    return ta


# --------------------------------------------------------------------------- §4.1 app routes

def test_app_routes(c):
    C.eq(c.req("GET", "/").json, {"message": "Welcome to Isol8 Chat API"})
    expect(c.req("GET", "/health"), 200)
    C.eq(c.req("GET", "/health").json, {"status": "healthy", "database": "connected"})
    expect(c.req("GET", "/protected"), 403, "Not authenticated")
    expect(c.req("GET", "/protected", headers={"Authorization": "Basic dXNlcjpwdw=="}), 403,
           "Invalid authentication credentials")
    r = c.req("GET", "/protected", "not.a.token")
    C.eq(r.status, 401, r)
    r = c.req("GET", "/protected", c.tok("user_app"))
    C.ok(r.status == 200 and r.json == {"message": "You are authenticated", "user_id": "user_app"}, r)


def test_every_auth_route_needs_a_token(c):
    routes = [("POST", "/users/sync"), ("GET", "/users/me/encryption-status"), ("POST", "/users/me/keys"),
              ("GET", "/users/me/keys"), ("GET", "/users/me/keys/recovery"), ("DELETE", "/users/me/keys"),
              ("PUT", "/users/me/keys"),
              ("GET", "/users/u1/public-key"), ("GET", "/users/me/memberships"),
              ("POST", "/organizations/sync"), ("GET", "/organizations/current"), ("GET", "/organizations/"),
              ("GET", "/organizations/context"), ("PUT", "/organizations/context"),
              ("GET", "/organizations/o/encryption-status"), ("POST", "/organizations/o/keys"),
              ("GET", "/organizations/o/pending-distributions"), ("POST", "/organizations/o/distribute-key"),
              ("POST", "/organizations/o/distribute-keys-bulk"), ("GET", "/organizations/o/membership"),
              ("POST", "/organizations/o/revoke-key/u"), ("GET", "/organizations/o/admin-recovery-key"),
              ("GET", "/organizations/o/members"), ("GET", "/context/"), ("PUT", "/context/"),
              ("GET", "/debug/encryption/report")]
    for m, path in routes:
        expect(c.req(m, P + path, body={} if m in ("POST", "PUT") else None), 403, "Not authenticated",
               what=f"{m} {path}")


# --------------------------------------------------------------------------- §4.4 users

def test_user_sync_and_status(c):
    t = c.tok("user_s1")
    C.eq(c.req("GET", P + "/users/me/encryption-status", t).json,
         {"has_encryption_keys": False, "public_key": None, "encryption_created_at": None})
    C.eq(c.req("POST", P + "/users/sync", t).json, {"status": "created", "user_id": "user_s1"})
    C.eq(c.req("POST", P + "/users/sync", t).json, {"status": "exists", "user_id": "user_s1"})
    st = c.req("GET", P + "/users/me/encryption-status", t).json
    C.eq(st, {"has_encryption_keys": False, "public_key": None, "encryption_created_at": None}, st)


def test_user_keys_lifecycle(c):
    t = c.tok("user_k1")
    expect(c.req("POST", P + "/users/me/keys", t, user_keys()), 400, "User user_k1 not found")
    expect(c.req("GET", P + "/users/me/keys", t), 400, "User user_k1 not found")
    expect(c.req("GET", P + "/users/me/keys/recovery", t), 400, "User user_k1 not found")
    expect(c.req("DELETE", P + "/users/me/keys", t), 204)  # no user: a no-op
    setup_user(c, "user_k1", keys=False)
    expect(c.req("GET", P + "/users/me/keys", t), 404, "User has no encryption keys")
    expect(c.req("DELETE", P + "/users/me/keys", t), 204)  # no keys: a no-op
    r = c.req("POST", P + "/users/me/keys", t, user_keys(upper=True))
    C.ok(r.status == 201 and r.json == {"status": "created", "public_key": H64}, r)
    expect(c.req("POST", P + "/users/me/keys", t, user_keys()), 409, "User already has encryption keys")
    st = c.req("GET", P + "/users/me/encryption-status", t).json
    C.ok(st["has_encryption_keys"] is True and st["public_key"] == H64, st)
    C.ok(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", st["encryption_created_at"]), st)
    k = user_keys()
    got = c.req("GET", P + "/users/me/keys", t).json
    C.eq(got, {"public_key": H64, "encrypted_private_key": k["encrypted_private_key"], "iv": k["iv"],
               "tag": k["tag"], "salt": k["salt"], "recovery_encrypted_private_key": None, "recovery_iv": None,
               "recovery_tag": None, "recovery_salt": None}, got)
    rec = c.req("GET", P + "/users/me/keys/recovery", t).json
    C.eq(rec, {"public_key": H64, "encrypted_private_key": k["recovery_encrypted_private_key"],
               "iv": k["recovery_iv"], "tag": k["recovery_tag"], "salt": k["recovery_salt"],
               "recovery_encrypted_private_key": None, "recovery_iv": None, "recovery_tag": None,
               "recovery_salt": None}, rec)
    # another user reads the public key
    other = setup_user(c, "user_k2", keys=False)
    C.eq(c.req("GET", P + "/users/user_k1/public-key", other).json, {"user_id": "user_k1", "public_key": H64})
    expect(c.req("GET", P + "/users/user_k2/public-key", t), 404, "User has no public key")
    expect(c.req("GET", P + "/users/nobody_here/public-key", t), 404, "User has no public key")
    # delete, then create again (a passcode change)
    expect(c.req("DELETE", P + "/users/me/keys", t), 204)
    expect(c.req("GET", P + "/users/me/keys", t), 404, "User has no encryption keys")
    expect(c.req("GET", P + "/users/user_k1/public-key", other), 404, "User has no public key")
    C.ok(c.req("GET", P + "/users/me/encryption-status", t).json["has_encryption_keys"] is False)
    expect(c.req("POST", P + "/users/me/keys", t, user_keys()), 201)
    C.eq(len(c.db.audit("user_keys_created", actor_user_id="user_k1")), 2)
    C.eq(len(c.db.audit("recovery_keys_fetched", actor_user_id="user_k1")), 1)
    C.eq(len(c.db.audit("user_keys_deleted", actor_user_id="user_k1")), 1)


def test_user_keys_validation(c):
    t = setup_user(c, "user_v1", keys=False)

    def bad(body, typ, loc):
        r = c.req("POST", P + "/users/me/keys", t, body)
        C.eq(r.status, 422, r)
        e = r.json["detail"][0]
        C.ok(e["type"] == typ and e["loc"] == loc, (typ, loc, r))

    k = user_keys()
    bad({n: v for n, v in k.items() if n != "iv"}, "missing", ["body", "iv"])
    bad({**k, "public_key": H64[:-2]}, "string_too_short", ["body", "public_key"])
    bad({**k, "salt": H64 + "00"}, "string_too_long", ["body", "salt"])
    bad({**k, "tag": "zz" + H32[2:]}, "value_error", ["body", "tag"])
    bad({**k, "iv": H32[:14] + "  " + H32[16:]}, "value_error", ["body", "iv"])  # whitespace (defect §10.25)
    bad({**k, "encrypted_private_key": ""}, "string_too_short", ["body", "encrypted_private_key"])
    bad({**k, "recovery_salt": 7}, "string_type", ["body", "recovery_salt"])
    bad([1, 2], "model_attributes_type", ["body"])
    # F0: an all-zero (or other low-order) key was accepted with 201, and every later
    # chat of that user ended in "Internal error"
    for low in ("00" * 32, "01" + "00" * 31, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"):
        bad({**k, "public_key": low}, "value_error", ["body", "public_key"])
    r = c.req("POST", P + "/users/me/keys", t, raw=b"{not json")
    C.ok(r.status == 422 and r.json["detail"][0]["type"] == "json_invalid", r)
    C.ok(c.req("GET", P + "/users/me/encryption-status", t).json["has_encryption_keys"] is False)


def test_user_keys_replace(c):
    """PUT /users/me/keys: both wrapped copies replaced in one transaction (a passcode
    change or a recovery), never a different key pair, never a DELETE+POST window."""
    t = c.tok("user_r1")
    expect(c.req("PUT", P + "/users/me/keys", t, user_keys()), 400, "User user_r1 not found")
    setup_user(c, "user_r1", keys=False)
    expect(c.req("PUT", P + "/users/me/keys", t, user_keys()), 404, "User has no encryption keys")
    C.ok(c.req("GET", P + "/users/me/encryption-status", t).json["has_encryption_keys"] is False)
    expect(c.req("POST", P + "/users/me/keys", t, user_keys()), 201)
    created_at = c.req("GET", P + "/users/me/encryption-status", t).json["encryption_created_at"]
    new = {**user_keys(), "encrypted_private_key": "1234" * 30, "iv": "2" * 32, "tag": "3" * 32, "salt": "4" * 64,
           "recovery_encrypted_private_key": "5678" * 30, "recovery_iv": "6" * 32, "recovery_tag": "7" * 32,
           "recovery_salt": "8" * 64}
    # the attack: a different key pair would make every stored conversation unreadable
    other = {**new, "public_key": "9" * 64}
    expect(c.req("PUT", P + "/users/me/keys", t, other), 409, "Public key does not match the stored key")
    C.eq(c.req("GET", P + "/users/me/keys", t).json["encrypted_private_key"], user_keys()["encrypted_private_key"])
    # validation is POST's: a malformed body changes nothing
    r = c.req("PUT", P + "/users/me/keys", t, {n: v for n, v in new.items() if n != "recovery_salt"})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "recovery_salt"], r)
    r = c.req("PUT", P + "/users/me/keys", t, {**new, "iv": "zz" * 16})
    C.ok(r.status == 422 and r.json["detail"][0]["type"] == "value_error", r)
    C.eq(c.req("GET", P + "/users/me/keys", t).json["iv"], H32)
    # the replace: upper-case hex is stored lower-case, the creation time stays
    r = c.req("PUT", P + "/users/me/keys", t, {n: v.upper() for n, v in new.items()})
    C.ok(r.status == 200 and r.json == {"status": "replaced", "public_key": H64}, r)
    got = c.req("GET", P + "/users/me/keys", t).json
    C.eq(got, {"public_key": H64, "encrypted_private_key": new["encrypted_private_key"], "iv": new["iv"],
               "tag": new["tag"], "salt": new["salt"], "recovery_encrypted_private_key": None,
               "recovery_iv": None, "recovery_tag": None, "recovery_salt": None}, got)
    rec = c.req("GET", P + "/users/me/keys/recovery", t).json
    C.eq((rec["encrypted_private_key"], rec["iv"], rec["tag"], rec["salt"]),
         (new["recovery_encrypted_private_key"], new["recovery_iv"], new["recovery_tag"], new["recovery_salt"]), rec)
    st = c.req("GET", P + "/users/me/encryption-status", t).json
    C.ok(st["has_encryption_keys"] is True and st["encryption_created_at"] == created_at, st)
    C.eq(c.db.audit("user_keys_recovered", actor_user_id="user_r1"), [("user_r1", "user_r1", None, None)])
    C.eq(c.db.audit("user_keys_deleted", actor_user_id="user_r1"), [])
    # after a DELETE there is nothing to replace
    expect(c.req("DELETE", P + "/users/me/keys", t), 204)
    expect(c.req("PUT", P + "/users/me/keys", t, new), 404, "User has no encryption keys")
    C.eq(len(c.db.audit("user_keys_recovered", actor_user_id="user_r1")), 1)


def test_user_memberships(c):
    setup_org(c, "org_m1", "user_m_admin", members=["user_m_member"])
    t = c.tok("user_m_member")
    ms = c.req("GET", P + "/users/me/memberships", t).json["memberships"]
    C.eq(len(ms), 1, ms)
    m = ms[0]
    C.eq(set(m), {"id", "org_id", "org_name", "role", "has_org_key", "key_distributed_at", "joined_at"}, m)
    C.ok(m["id"] == "mem_user_m_member_org_m1" and m["org_id"] == "org_m1" and m["org_name"] == "Org org_m1")
    C.ok(m["role"] == "org:member" and m["has_org_key"] is False and m["key_distributed_at"] is None)
    ma = c.req("GET", P + "/users/me/memberships", c.tok("user_m_admin")).json["memberships"]
    C.ok(ma[0]["role"] == "org:admin" and ma[0]["has_org_key"] is True and ma[0]["key_distributed_at"], ma)
    C.eq(c.req("GET", P + "/users/me/memberships", c.tok("user_m_nobody")).json, {"memberships": []})


# --------------------------------------------------------------------------- §4.5 organizations

def test_org_sync(c):
    setup_user(c, "user_o1", keys=False)
    ta = c.tok("user_o1", "org_o1", "admin", slug="slug-o1")
    body = {"org_id": "org_o1", "name": "First", "slug": "slug-o1"}
    C.eq(c.req("POST", P + "/organizations/sync", ta, body).json, {"status": "created", "org_id": "org_o1"})
    C.eq(c.req("POST", P + "/organizations/sync", ta, {**body, "name": "Renamed"}).json,
         {"status": "updated", "org_id": "org_o1"})
    expect(c.req("POST", P + "/organizations/sync", ta, {**body, "org_id": "org_other"}), 403,
           "Cannot sync org you're not a member of")
    # personal context: only with a stored membership
    tp = c.tok("user_o1")
    C.eq(c.req("POST", P + "/organizations/sync", tp, body).json["status"], "updated")
    expect(c.req("POST", P + "/organizations/sync", c.tok("user_o2"), body), 403, "Not a member of this organization")
    # the role stays as stored when the token carries none
    C.eq(c.req("GET", f"{P}/organizations/org_o1/membership", tp).json["role"], "org:admin")
    # the JWT role is applied when present
    c.req("POST", P + "/users/sync", c.tok("user_o3"))
    tm = c.tok("user_o3", "org_o1", "member")
    C.eq(c.req("POST", P + "/organizations/sync", tm, body).status, 200)
    C.eq(c.req("GET", f"{P}/organizations/org_o1/membership", tm).json["role"], "org:member")
    # defect §10.12: a custom Clerk role is a member, not a 500
    tc = c.tok.with_org_role("user_o4", "org_o1", "billing_manager")
    r = c.req("POST", P + "/organizations/sync", tc, body)
    C.ok(r.status == 200 and r.json == {"status": "updated", "org_id": "org_o1"}, r)
    C.eq(c.req("GET", f"{P}/organizations/org_o1/membership", tc).json["role"], "org:member")
    # validation
    r = c.req("POST", P + "/organizations/sync", ta, {"org_id": "org_o1"})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "name"], r)
    r = c.req("POST", P + "/organizations/sync", ta, {**body, "slug": 5})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "slug"], r)
    C.eq(c.req("POST", P + "/organizations/sync", ta, {**body, "slug": None}).status, 200)
    # listing (the slug survived a null slug)
    orgs = c.req("GET", P + "/organizations/", ta).json["organizations"]
    C.eq(orgs, [{"id": "org_o1", "name": "First", "slug": "slug-o1", "role": "org:admin"}], orgs)
    r = c.req("GET", P + "/organizations", ta)
    C.ok(r.status == 307 and r.headers["location"] == P + "/organizations/", r)


def test_org_sync_by_a_member_does_not_rename(c):
    """Attack: the web client calls /organizations/sync for every member, with a name
    and slug the member chooses. A member's sync may create a missing org (and still
    answers 200) but never renames or re-slugs an existing one; an admin's does."""
    setup_user(c, "user_sa", keys=False)
    setup_user(c, "user_sb", keys=False)
    name = lambda: c.db.rows("SELECT name, slug FROM organizations WHERE id = ?", "org_s5")
    sync = lambda t, body: c.req("POST", P + "/organizations/sync", t, {"org_id": "org_s5", **body})
    tm = c.tok("user_sb", "org_s5", "member")
    C.eq(sync(tm, {"name": "Made by a member", "slug": "s5"}).json, {"status": "created", "org_id": "org_s5"})
    C.eq(name(), [("Made by a member", "s5")])
    ta = c.tok("user_sa", "org_s5", "admin")
    C.eq(sync(ta, {"name": "Five", "slug": "five"}).json, {"status": "updated", "org_id": "org_s5"})
    C.eq(name(), [("Five", "five")])
    for t in (tm, c.tok("user_sb")):  # in the org's context, and personal (stored role member)
        r = sync(t, {"name": "Pwned", "slug": "pwned"})
        C.ok(r.status == 200 and r.json == {"status": "updated", "org_id": "org_s5"}, r)
        C.eq(name(), [("Five", "five")])
    # personal context: the stored admin role renames
    C.eq(sync(c.tok("user_sa"), {"name": "Five Inc"}).status, 200)
    C.eq(name(), [("Five Inc", "five")])
    # a demoted admin's token (member in this org's context) does not, whatever the DB said
    C.eq(sync(c.tok("user_sa", "org_s5", "member"), {"name": "Old admin"}).status, 200)
    C.eq(name(), [("Five Inc", "five")])


def test_org_current(c):
    setup_org(c, "org_c1", "user_c1", with_keys=False)
    C.eq(c.req("GET", P + "/organizations/current", c.tok("user_c1")).json, {
    "org_id": None, "org_name": None, "org_slug": None, "org_role": None, "is_personal_context": True,
    "is_org_admin": False})
    C.eq(c.req("GET", P + "/organizations/current", c.tok("user_c1", "org_c1", "admin", "c-one")).json, {
    "org_id": "org_c1", "org_name": "Org org_c1", "org_slug": "c-one", "org_role": "org:admin",
    "is_personal_context": False, "is_org_admin": True})
    cur = c.req("GET", P + "/organizations/current", c.tok("user_c2", "org_unknown", "member")).json
    C.ok(cur["org_name"] is None and cur["org_role"] == "org:member" and cur["is_org_admin"] is False, cur)


def test_org_context(c):
    setup_org(c, "org_x1", "user_x_admin", members=["user_x_member"], with_keys=False)
    ta, tm = c.tok("user_x_admin", "org_x1", "admin"), c.tok("user_x_member", "org_x1", "member")
    expect(c.req("GET", P + "/organizations/context", c.tok("user_x_admin")), 403,
           "This action requires an active organization context")
    C.eq(c.req("GET", P + "/organizations/context", tm).json, {"context_data": None})
    expect(c.req("PUT", P + "/organizations/context", tm, {"context_data": {"a": 1}}), 403,
           "This action requires organization admin privileges")
    expect(c.req("PUT", P + "/organizations/context", c.tok("user_x_admin"), {"context_data": {"a": 1}}), 403,
           "This action requires organization admin privileges")
    doc = {"tone": "formal", "n": [1, 2, {"x": None}]}
    C.eq(c.req("PUT", P + "/organizations/context", ta, {"context_data": doc}).json, {"context_data": doc})
    C.eq(c.req("GET", P + "/organizations/context", tm).json, {"context_data": doc})
    r = c.req("PUT", P + "/organizations/context", ta, {"context_data": [1]})
    C.ok(r.status == 422 and r.json["detail"][0]["type"] == "dict_type", r)
    rows = c.db.rows("SELECT id FROM context_stores WHERE owner_type = ? AND owner_id = ?", "org", "org_x1")
    C.eq(rows, [("ctx_org_org_x1",)], rows)


def test_org_keys(c):
    setup_org(c, "org_k1", "user_ka", members=["user_kb"], with_keys=False)
    ta, tb = c.tok("user_ka", "org_k1", "admin"), c.tok("user_kb", "org_k1", "member")
    # the org's key state is for its members only; unknown orgs look the same (no existence oracle)
    for org, t in (("org_k1", c.tok("user_kz")), ("org_k1", c.tok("user_kz", "org_k1", "admin")), ("org_nope", ta)):
        expect(c.req("GET", f"{P}/organizations/{org}/encryption-status", t), 403, "Not a member of this organization")
    C.eq(c.req("GET", P + "/organizations/org_k1/encryption-status", tb).json, {
    "has_encryption_keys": False, "org_public_key": None, "encryption_created_at": None,
    "encryption_created_by": None})
    expect(c.req("POST", P + "/organizations/org_k1/keys", tb, org_keys()), 403,
           "User user_kb is not an admin of org org_k1")
    expect(c.req("POST", P + "/organizations/org_k1/keys", c.tok("user_kz"), org_keys()), 404,
           "User user_kz is not a member of org org_k1")
    bad = org_keys()
    bad["admin_member_encrypted_key"] = {**ep(), "iv": "00"}
    r = c.req("POST", P + "/organizations/org_k1/keys", ta, bad)
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "admin_member_encrypted_key", "iv"], r)
    r = c.req("POST", P + "/organizations/org_k1/keys", ta, {**org_keys(), "admin_salt": "5" * 63})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "admin_salt"], r)
    # F0: a low-order org key would make every org chat end in "Internal error"
    for low in ("00" * 32, "01" + "00" * 31):
        r = c.req("POST", P + "/organizations/org_k1/keys", ta, {**org_keys(), "org_public_key": low})
        C.ok(r.status == 422 and r.json["detail"][0]["type"] == "value_error" and \
          r.json["detail"][0]["loc"] == ["body", "org_public_key"], r)
    up = org_keys()
    up["org_public_key"] = "A" * 64
    r = c.req("POST", P + "/organizations/org_k1/keys", ta, up)
    C.ok(r.status == 201 and r.json == {"status": "created", "org_public_key": "a" * 64}, r)
    expect(c.req("POST", P + "/organizations/org_k1/keys", ta, org_keys()), 409,
           "Organization org_k1 already has encryption keys")
    st = c.req("GET", P + "/organizations/org_k1/encryption-status", tb).json
    C.ok(st["has_encryption_keys"] and st["org_public_key"] == "a" * 64 and st["encryption_created_by"] == "user_ka")
    # the admin's own copy was stored with the keys
    m = c.req("GET", P + "/organizations/org_k1/membership", ta).json
    C.eq(set(m), {"id", "org_id", "org_name", "role", "has_org_key", "key_distributed_at", "joined_at",
                  "created_at", "encrypted_org_key"}, m)
    C.ok(m["has_org_key"] and m["encrypted_org_key"] == ep("d") and m["org_name"] is None, m)
    mb = c.req("GET", P + "/organizations/org_k1/membership", tb).json
    C.ok(mb["has_org_key"] is False and mb["encrypted_org_key"] is None, mb)
    expect(c.req("GET", P + "/organizations/org_k1/membership", c.tok("user_kz")), 404,
           "Not a member of this organization")
    # admin recovery key
    C.eq(c.req("GET", P + "/organizations/org_k1/admin-recovery-key", ta).json, {
    "org_public_key": "a" * 64, "admin_encrypted_private_key": "8" * 80, "iv": "7" * 32, "tag": "6" * 32,
    "salt": "5" * 64})
    expect(c.req("GET", P + "/organizations/org_k1/admin-recovery-key", tb), 403,
           "User user_kb is not an admin of org org_k1")
    C.eq(len(c.db.audit("org_keys_created", org_id="org_k1", actor_user_id="user_ka")), 1)


def test_org_keys_missing(c):
    setup_org(c, "org_n1", "user_na", with_keys=False)
    ta = c.tok("user_na", "org_n1", "admin")
    expect(c.req("GET", P + "/organizations/org_n1/admin-recovery-key", ta), 404,
           "Organization org_n1 has no encryption keys")
    expect(c.req("GET", P + "/organizations/org_n1/pending-distributions", ta), 404,
           "Organization org_n1 has no encryption keys")
    expect(c.req("POST", P + "/organizations/org_n1/distribute-key", ta,
                 {"membership_id": "mem_user_na_org_n1", "encrypted_org_key": ep()}), 404,
           "Organization org_n1 has no encryption keys")


def test_org_distribution(c):
    setup_org(c, "org_d1", "user_da", members=["user_db", "user_dc"], keyless=["user_dd"])
    setup_org(c, "org_d2", "user_dx", members=["user_dy"])
    ta, tb = c.tok("user_da", "org_d1", "admin"), c.tok("user_db", "org_d1", "member")
    pend = c.req("GET", P + "/organizations/org_d1/pending-distributions", ta).json
    ready = sorted(pend["ready_for_distribution"], key=lambda x: x["user_id"])
    C.eq([x["user_id"] for x in ready], ["user_db", "user_dc"], pend)
    C.eq(set(ready[0]), {"membership_id", "user_id", "user_public_key", "role", "joined_at"}, ready[0])
    C.ok(ready[0]["user_public_key"] == H64 and ready[0]["membership_id"] == "mem_user_db_org_d1")
    C.eq([x["user_id"] for x in pend["needs_personal_setup"]], ["user_dd"], pend)
    C.eq(set(pend["needs_personal_setup"][0]), {"membership_id", "user_id", "role", "joined_at"})
    C.ok(pend["org_id"] == "org_d1" and pend["ready_count"] == 2 and pend["needs_setup_count"] == 1, pend)
    expect(c.req("GET", P + "/organizations/org_d1/pending-distributions", tb), 403,
           "User user_db is not an admin of org org_d1")
    # single distribution
    url = P + "/organizations/org_d1/distribute-key"
    dist = lambda mid, e=None: c.req("POST", url, ta, {"membership_id": mid, "encrypted_org_key": e or ep("e")})
    expect(dist("mem_user_dd_org_d1"), 400, "Member has not set up personal encryption keys")
    expect(dist("mem_nope"), 404, "Membership not found")
    expect(dist("mem_user_dy_org_d2"), 400, "Membership does not belong to this organization")
    C.eq(dist("mem_user_db_org_d1").json, {"status": "distributed", "membership_id": "mem_user_db_org_d1"})
    expect(dist("mem_user_db_org_d1"), 400, "Member already has org key")
    expect(c.req("POST", url, tb, {"membership_id": "mem_user_dc_org_d1", "encrypted_org_key": ep()}), 403,
           "User user_db is not an admin of org org_d1")
    r = c.req("POST", url, ta, {"membership_id": "mem_user_dc_org_d1", "encrypted_org_key": {**ep(), "ciphertext": "a"}})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "encrypted_org_key", "ciphertext"], r)
    mb = c.req("GET", P + "/organizations/org_d1/membership", tb).json
    C.ok(mb["has_org_key"] and mb["encrypted_org_key"] == ep("e") and mb["key_distributed_at"], mb)
    C.eq(len(c.db.audit("org_key_distributed", org_id="org_d1", target_user_id="user_db")), 1)
    # bulk: per-item results, one commit
    bulk = P + "/organizations/org_d1/distribute-keys-bulk"
    r = c.req("POST", bulk, ta, {"distributions": []})
    C.ok(r.status == 422 and r.json["detail"][0]["type"] == "too_short", r)
    r = c.req("POST", bulk, ta, {"distributions": [{"membership_id": "x", "encrypted_org_key": {**ep(), "iv": "zz"}}]})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == \
      ["body", "distributions", 0, "encrypted_org_key", "iv"], r)
    r = c.req("POST", bulk, ta, {"distributions": [{"encrypted_org_key": ep()}]})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "distributions", 0, "membership_id"], r)
    items = [{"membership_id": m, "encrypted_org_key": ep("f")} for m in
             ("mem_user_dc_org_d1", "mem_user_db_org_d1", "mem_user_dd_org_d1", "mem_none", "mem_user_dy_org_d2")]
    res = c.req("POST", bulk, ta, {"distributions": items}).json
    C.ok(res["org_id"] == "org_d1" and res["success_count"] == 1 and res["failure_count"] == 4, res)
    C.eq(res["results"], [
    {"membership_id": "mem_user_dc_org_d1", "user_id": "user_dc", "success": True, "error": None},
    {"membership_id": "mem_user_db_org_d1", "user_id": "user_db", "success": False,
     "error": "Member already has org key"},
    {"membership_id": "mem_user_dd_org_d1", "user_id": "user_dd", "success": False,
     "error": "Member has not set up personal encryption keys"},
    {"membership_id": "mem_none", "user_id": None, "success": False, "error": "Membership not found"},
    {"membership_id": "mem_user_dy_org_d2", "user_id": None, "success": False,
     "error": "Membership does not belong to this organization"}], res)
    mc = c.req("GET", P + "/organizations/org_d1/membership", c.tok("user_dc", "org_d1", "member")).json
    C.ok(mc["has_org_key"] and mc["encrypted_org_key"] == ep("f"), mc)
    # members list
    mem = c.req("GET", P + "/organizations/org_d1/members", ta).json
    C.ok(mem["org_id"] == "org_d1" and mem["total_count"] == 4, mem)
    by = {m["user_id"]: m for m in mem["members"]}
    C.eq(set(by["user_dd"]), {"membership_id", "user_id", "role", "has_personal_keys", "has_org_key",
                              "key_distributed_at", "joined_at"})
    C.ok(by["user_dd"]["has_personal_keys"] is False and by["user_dc"]["has_org_key"] is True)
    C.ok(by["user_da"]["role"] == "org:admin" and by["user_db"]["role"] == "org:member")
    expect(c.req("GET", P + "/organizations/org_d1/members", tb), 403, "Admin access required")
    expect(c.req("GET", P + "/organizations/org_d1/members", c.tok("user_dx")), 404, "Not a member of this organization")
    # another org's admin has no power here
    tx = c.tok("user_dx", "org_d2", "admin")
    expect(c.req("GET", P + "/organizations/org_d1/pending-distributions", tx), 404,
           "User user_dx is not a member of org org_d1")
    # the JWT's admin role does not replace the stored one on /{org_id}/ routes
    fake = c.tok("user_db", "org_d1", "admin")
    expect(c.req("GET", P + "/organizations/org_d1/admin-recovery-key", fake), 403,
           "User user_db is not an admin of org org_d1")


def test_encrypted_payload_422_is_the_same_at_every_depth(c):
    """One set of EncryptedPayload rules (validate.c over crypto/ep.h's field table):
    a bad payload at body.encrypted_org_key and at body.distributions[0].encrypted_org_key
    gets the same 422 (type, message, input), only the location differs; nothing is written."""
    ta = setup_org(c, "org_ev", "user_ev", members=["user_ew"])
    one = P + "/organizations/org_ev/distribute-key"
    bulk = P + "/organizations/org_ev/distribute-keys-bulk"
    mid = "mem_user_ew_org_ev"
    cases = [
        (lambda e: {k: v for k, v in e.items() if k != "hkdf_salt"}, ["hkdf_salt"], "missing", "Field required"),
        (lambda e: {**e, "iv": 16}, ["iv"], "string_type", "Input should be a valid string"),
        (lambda e: {**e, "ephemeral_public_key": "ab" * 31}, ["ephemeral_public_key"], "string_too_short",
         "String should have at least 64 characters"),
        (lambda e: {**e, "auth_tag": "ab" * 17}, ["auth_tag"], "string_too_long",
         "String should have at most 32 characters"),
        (lambda e: {**e, "ciphertext": "a"}, ["ciphertext"], "string_too_short",
         "String should have at least 2 characters"),
        (lambda e: {**e, "ciphertext": "zz"}, ["ciphertext"], "value_error", "Value error, Invalid hex string"),
        (lambda e: [e], [], "model_attributes_type",
         "Input should be a valid dictionary or object to extract fields from"),
    ]
    for make, sub, typ, msg in cases:
        bad = make(ep("e"))
        r1 = c.req("POST", one, ta, {"membership_id": mid, "encrypted_org_key": bad})
        r2 = c.req("POST", bulk, ta, {"distributions": [{"membership_id": mid, "encrypted_org_key": bad}]})
        for r, loc in ((r1, ["body", "encrypted_org_key"] + sub),
                       (r2, ["body", "distributions", 0, "encrypted_org_key"] + sub)):
            assert r.status == 422, (typ, r)
            d = r.json["detail"][0]
            assert (d["type"], d["msg"], d["loc"]) == (typ, msg, loc), (typ, r)
        assert {k: v for k, v in r1.json["detail"][0].items() if k != "loc"} == \
            {k: v for k, v in r2.json["detail"][0].items() if k != "loc"}, (typ, r1, r2)
    # missing altogether, and an empty membership id, at both depths
    r1 = c.req("POST", one, ta, {"membership_id": mid})
    r2 = c.req("POST", bulk, ta, {"distributions": [{"membership_id": mid}]})
    assert r1.json["detail"][0]["loc"] == ["body", "encrypted_org_key"] and \
        r2.json["detail"][0]["loc"] == ["body", "distributions", 0, "encrypted_org_key"], (r1, r2)
    assert r1.json["detail"][0]["type"] == r2.json["detail"][0]["type"] == "missing", (r1, r2)
    r1 = c.req("POST", one, ta, {"membership_id": "", "encrypted_org_key": ep()})
    r2 = c.req("POST", bulk, ta, {"distributions": [{"membership_id": "", "encrypted_org_key": ep()}]})
    for r in (r1, r2):
        d = r.json["detail"][0]
        assert r.status == 422 and (d["type"], d["msg"]) == \
            ("string_too_short", "String should have at least 1 character"), r
    mb = c.req("GET", P + "/organizations/org_ev/membership", c.tok("user_ew", "org_ev", "member")).json
    assert mb["has_org_key"] is False, mb


def test_org_admin_routes_follow_a_jwt_demotion(c):
    """Attack: an admin demoted in Clerk keeps using the admin routes until the
    membership webhook lands (or forever, if it failed). A token in that org's
    context whose role is member is refused although the DB still says admin."""
    ta = setup_org(c, "org_j1", "user_ja", members=["user_jb"])
    demoted = c.tok("user_ja", "org_j1", "member")
    C.eq(c.req("GET", P + "/organizations/org_j1/membership", demoted).json["role"], "org:admin")
    give = {"membership_id": "mem_user_jb_org_j1", "encrypted_org_key": ep()}
    o = P + "/organizations/org_j1/"
    for method, path, body in [("POST", "keys", org_keys()), ("GET", "pending-distributions", None),
                               ("POST", "distribute-key", give), ("POST", "distribute-keys-bulk",
                                                                  {"distributions": [give]}),
                               ("POST", "revoke-key/user_ja", None), ("GET", "admin-recovery-key", None)]:
        expect(c.req(method, o + path, demoted, body), 403, "User user_ja is not an admin of org org_j1",
               what=path)
    expect(c.req("GET", o + "members", demoted), 403, "Admin access required")
    expect(c.req("PUT", P + "/organizations/context", demoted, {"context_data": {"a": 1}}), 403,
           "This action requires organization admin privileges")
    C.ok(c.req("GET", o + "membership", c.tok("user_jb", "org_j1", "member")).json["has_org_key"] is False)
    C.ok(c.req("GET", o + "membership", demoted).json["has_org_key"] is True)
    # personal context, or another org's context: the DB role decides, as before
    for t in (c.tok("user_ja"), c.tok("user_ja", "org_j_other", "member"), ta):
        C.eq(c.req("GET", o + "admin-recovery-key", t).status, 200)
        C.eq(c.req("GET", o + "members", t).json["total_count"], 2)
    C.eq(c.req("POST", o + "distribute-key", c.tok("user_ja"), give).status, 200)


def test_org_revoke(c):
    setup_org(c, "org_r1", "user_ra", members=["user_rb", "user_rc"])
    ta = c.tok("user_ra", "org_r1", "admin")
    c.req("POST", P + "/organizations/org_r1/distribute-key", ta,
          {"membership_id": "mem_user_rb_org_r1", "encrypted_org_key": ep()})
    tb = c.tok("user_rb", "org_r1", "member")
    expect(c.req("POST", P + "/organizations/org_r1/revoke-key/user_rc", tb), 403,
           "User user_rb is not an admin of org org_r1")
    expect(c.req("POST", P + "/organizations/org_r1/revoke-key/user_nobody", ta), 404,
           "User user_nobody is not a member of org org_r1")
    expect(c.req("POST", P + "/organizations/org_r1/revoke-key/user_rb?reason=left%20team", ta), 204)
    m = c.req("GET", P + "/organizations/org_r1/membership", tb).json
    C.ok(m["has_org_key"] is False and m["encrypted_org_key"] is None and m["key_distributed_at"] is None, m)
    expect(c.req("POST", P + "/organizations/org_r1/revoke-key/user_rb", ta), 204)  # no key: no-op
    expect(c.req("POST", P + "/organizations/org_r1/revoke-key/user_rc", ta), 204)  # never had one
    rows = c.db.audit("org_key_revoked", org_id="org_r1")
    C.eq(rows, [("user_ra", "user_rb", "org_r1", {"reason": "left team"})], rows)
    # redistribution after revocation works
    C.eq(c.req("POST", P + "/organizations/org_r1/distribute-key", ta,
               {"membership_id": "mem_user_rb_org_r1", "encrypted_org_key": ep()}).status, 200)


# --------------------------------------------------------------------------- §4.6 context

def test_context_router(c):
    setup_org(c, "org_y1", "user_ya", members=["user_yb"], with_keys=False)
    tp = c.tok("user_yb")
    C.eq(c.req("GET", P + "/context/", tp).json, {"owner_type": "user", "context_data": None})
    doc = {"name": "Bee", "prefs": {"lang": "fr"}}
    C.eq(c.req("PUT", P + "/context/", tp, {"context_data": doc}).json, {"owner_type": "user", "context_data": doc})
    C.eq(c.req("PUT", P + "/context/", tp, {"context_data": {"only": 1}}).json["context_data"], {"only": 1})
    C.eq(c.req("GET", P + "/context/", tp).json, {"owner_type": "user", "context_data": {"only": 1}})
    tm, ta = c.tok("user_yb", "org_y1", "member"), c.tok("user_ya", "org_y1", "admin")
    C.eq(c.req("GET", P + "/context/", tm).json, {"owner_type": "org", "context_data": None})
    expect(c.req("PUT", P + "/context/", tm, {"context_data": {"x": 1}}), 403,
           "Only organization admins can update org context")
    C.eq(c.req("PUT", P + "/context/", ta, {"context_data": {"x": 1}}).json,
         {"owner_type": "org", "context_data": {"x": 1}})
    C.eq(c.req("GET", P + "/context/", tm).json, {"owner_type": "org", "context_data": {"x": 1}})
    r = c.req("PUT", P + "/context/", tp, {"context_data": "str"})
    C.ok(r.status == 422 and r.json["detail"][0]["loc"] == ["body", "context_data"], r)
    r = c.req("PUT", P + "/context/", tp, {})
    C.ok(r.status == 422 and r.json["detail"][0]["type"] == "missing", r)
    r = c.req("GET", P + "/context", tp)
    C.ok(r.status == 307 and r.headers["location"] == P + "/context/", r)
    ids = sorted(x[0] for x in c.db.rows("SELECT id FROM context_stores WHERE owner_id IN (?, ?)", "user_yb", "org_y1"))
    C.eq(ids, ["ctx_org_org_y1", "ctx_user_user_yb"], ids)


# --------------------------------------------------------------------------- §4.7 webhooks

def test_webhook_verification(c):
    body = json.dumps({"type": "user.created", "data": {"id": "user_wv_1"}}).encode()
    h = c.svix.headers(body)
    for missing in ("svix-id", "svix-timestamp", "svix-signature"):
        hh = {k: v for k, v in h.items() if k != missing}
        expect(c.hook(None, hh, body), 400, "Missing svix headers for webhook verification", what=missing)
    expect(c.hook(None, c.svix.headers(body, key=b"wrong-key-wrong-key"), body), 401, "Invalid webhook signature")
    expect(c.hook(None, h, body + b" "), 401, "Invalid webhook signature")  # body changed after signing
    expect(c.hook(None, c.svix.headers(body, ts=int(time.time()) - 600), body), 401, "Invalid webhook signature")
    expect(c.hook(None, c.svix.headers(body, ts=int(time.time()) + 600), body), 401, "Invalid webhook signature")
    C.eq(c.db.rows("SELECT id FROM users WHERE id = ?", "user_wv_1"), [])
    # no secret configured: refused, nothing processed (defect §10.19)
    expect(c.hook(None, c.svix.headers(body), body, port=c.plain_port), 503, "Webhook verification not configured")
    expect(c.hook(None, {}, body, port=c.plain_port), 503, "Webhook verification not configured")
    C.eq(c.db.rows("SELECT id FROM users WHERE id = ?", "user_wv_1"), [])
    # signed garbage is the sender's fault: 400, not 500
    for raw in (b"{not json", b"[1,2]", b""):
        r = c.hook(None, raw=raw)
        C.eq(r.status, 400, (raw, r))
    C.eq(c.hook({"type": "user.created", "data": {"id": "user_wv_1"}}).json,
         {"status": "processed", "event": "user.created"})
    C.eq(c.db.rows("SELECT id FROM users WHERE id = ?", "user_wv_1"), [("user_wv_1",)])


def test_webhook_users_and_orgs(c):
    C.eq(c.hook({"type": "session.created", "data": {}}).json, {"status": "ignored", "event": "session.created"})
    C.eq(c.hook({"type": "user.updated", "data": {"id": "user_wu"}}).json["status"], "processed")
    C.eq(c.hook({"type": "user.created", "data": {"id": "user_wu"}}).json["status"], "processed")
    C.eq(c.req("POST", P + "/users/sync", c.tok("user_wu")).json["status"], "exists")
    r = c.hook({"type": "user.created", "data": {}}).json
    C.ok(r["status"] == "error" and r["event"] == "user.created" and r["error"], r)
    C.eq(c.hook({"type": "organization.created", "data": {"id": "org_w1", "slug": "w-one"}}).json,
         {"status": "processed", "event": "organization.created"})
    C.eq(c.db.rows("SELECT name, slug FROM organizations WHERE id = ?", "org_w1"), [("Unknown Organization", "w-one")])
    C.eq(c.hook({"type": "organization.updated", "data": {"id": "org_w1", "name": "Dub"}}).json["status"], "processed")
    C.eq(c.db.rows("SELECT name FROM organizations WHERE id = ?", "org_w1"), [("Dub",)])
    # user.deleted: keys audit with a NULL actor, the user and memberships gone
    setup_user(c, "user_wd")
    C.eq(c.hook({"type": "user.deleted", "data": {"id": "user_wd"}}).json["status"], "processed")
    C.eq(c.db.rows("SELECT id FROM users WHERE id = ?", "user_wd"), [])
    C.eq(c.db.audit("user_keys_deleted", target_user_id="user_wd"),
         [(None, "user_wd", None, {"reason": "user_deleted_from_clerk"})])
    C.eq(c.hook({"type": "user.deleted", "data": {"id": "user_wd"}}).json["status"], "processed")


def membership_event(kind, mid, user, org, role="org:member", org_name="Hooked"):
    return {"type": f"organizationMembership.{kind}",
            "data": {"id": mid, "role": role, "public_user_data": {"user_id": user},
                     "organization": {"id": org, "name": org_name, "slug": None}}}


def test_webhook_memberships(c):
    # created: org and user rows appear, member_joined audited
    ev = membership_event("created", "orgmem_w1", "user_wm1", "org_wm")
    C.eq(c.hook(ev).json, {"status": "processed", "event": "organizationMembership.created"})
    tm = c.tok("user_wm1", "org_wm", "member")
    m = c.req("GET", P + "/organizations/org_wm/membership", tm).json
    C.ok(m["id"] == "orgmem_w1" and m["role"] == "org:member", m)
    C.eq(c.db.rows("SELECT name FROM organizations WHERE id = ?", "org_wm"), [("Hooked",)])
    C.eq(c.db.audit("member_joined", org_id="org_wm"), [(None, "user_wm1", "org_wm", {"role": "org:member"})])
    # updated to admin: role change audited with a NULL actor and committed (defect §10.10)
    ev = membership_event("updated", "orgmem_w1", "user_wm1", "org_wm", role="org:admin")
    C.eq(c.hook(ev).json["status"], "processed")
    C.eq(c.req("GET", P + "/organizations/org_wm/membership", tm).json["role"], "org:admin")
    C.eq(c.db.audit("member_role_changed", org_id="org_wm"),
         [(None, "user_wm1", "org_wm", {"old_role": "org:member", "new_role": "org:admin"})])
    C.eq(c.hook(ev).json["status"], "processed")  # same role again: no second audit row
    C.eq(len(c.db.audit("member_role_changed", org_id="org_wm")), 1)
    # custom role -> member
    C.eq(c.hook(membership_event("updated", "orgmem_w1", "user_wm1", "org_wm", role="org:custom")).json[
      "status"], "processed")
    C.eq(c.req("GET", P + "/organizations/org_wm/membership", tm).json["role"], "org:member")
    # missing fields -> error, still 200
    bad = membership_event("created", "orgmem_w2", "user_wm2", "org_wm")
    del bad["data"]["public_user_data"]
    r = c.hook(bad)
    C.ok(r.status == 200 and r.json["status"] == "error" and r.json["error"], r)
    # deleted: revokes the org key (NULL actor, committed), member_left, row gone
    ta = setup_org(c, "org_wk", "user_wka", members=["user_wkb"])
    c.req("POST", P + "/organizations/org_wk/distribute-key", ta,
          {"membership_id": "mem_user_wkb_org_wk", "encrypted_org_key": ep()})
    # Clerk's id is unknown here (the row came from /sync): found by (user, org)
    ev = membership_event("deleted", "orgmem_clerk_wkb", "user_wkb", "org_wk")
    C.eq(c.hook(ev).json, {"status": "processed", "event": "organizationMembership.deleted"})
    expect(c.req("GET", P + "/organizations/org_wk/membership", c.tok("user_wkb", "org_wk", "member")), 404,
           "Not a member of this organization")
    C.eq(c.db.audit("org_key_revoked", org_id="org_wk"),
         [(None, "user_wkb", "org_wk", {"reason": "membership_deleted_from_clerk"})])
    C.eq(c.db.audit("member_left", org_id="org_wk"),
         [(None, "user_wkb", "org_wk", {"reason": "removed_via_clerk_webhook"})])
    C.eq(c.hook(ev).json["status"], "processed")  # already gone
    # by Clerk's id
    C.eq(c.hook(membership_event("deleted", "orgmem_w1", "x", "y")).json["status"], "processed")
    expect(c.req("GET", P + "/organizations/org_wm/membership", tm), 404, "Not a member of this organization")


def test_webhook_duplicates_are_dropped(c):
    """Attack: a captured delivery replayed while its signature is fresh (or Svix
    re-sending one it thinks was lost) must not apply twice: here, a member removed
    and then added back by a later event would be removed again by the replay."""
    add = json.dumps(membership_event("created", "orgmem_wr1", "user_wr1", "org_wr")).encode()
    readd = json.dumps(membership_event("created", "orgmem_wr2", "user_wr1", "org_wr")).encode()
    remove = json.dumps(membership_event("deleted", "orgmem_wr1", "user_wr1", "org_wr")).encode()
    t = c.tok("user_wr1", "org_wr", "member")
    h_add = c.svix.headers(add)
    C.eq(c.hook(None, h_add, add).json["status"], "processed")
    h_remove = c.svix.headers(remove)
    C.eq(c.hook(None, h_remove, remove).json["status"], "processed")
    expect(c.req("GET", P + "/organizations/org_wr/membership", t), 404, "Not a member of this organization")
    C.eq(c.hook(None, c.svix.headers(readd), readd).json["status"], "processed")
    # the same signed bytes again, then Svix's re-send (same svix-id, new timestamp)
    for h in (h_remove, c.svix.headers(remove, msg_id=h_remove["svix-id"])):
        C.eq(c.hook(None, h, remove).json, {"status": "duplicate", "event": "organizationMembership.deleted"})
    C.eq(c.req("GET", P + "/organizations/org_wr/membership", t).json["id"], "orgmem_wr2")
    C.eq(len(c.db.audit("member_left", org_id="org_wr")), 1)
    C.eq(c.hook(None, c.svix.headers(add, msg_id=h_add["svix-id"]), add).json,
         {"status": "duplicate", "event": "organizationMembership.created"})
    C.eq(len(c.db.audit("member_joined", org_id="org_wr")), 2)
    # the ids are kept in the database, where veilds sharing it all see them
    C.eq(c.db.rows("SELECT COUNT(*) FROM webhook_deliveries WHERE id IN (?, ?)", h_add["svix-id"],
                   h_remove["svix-id"]), [("2",)])


def test_webhook_dedup_window_is_bounded(c):
    """CLERK_WEBHOOK_DEDUP_SECONDS below twice the signature tolerance would let a
    replay of fresh signed bytes through; veild refuses to start with it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "DATABASE_", "VEIL_", "ENCLAVE_"))}
    for bad in ("599", "2592001", "1d"):
        env.update({"CLERK_ISSUER": ISSUER, "CLERK_WEBHOOK_DEDUP_SECONDS": bad})
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([os.path.join(BIN, "veild")], env=env, capture_output=True, text=True, timeout=30,
                               cwd=d)
        C.ok(r.returncode == 2 and \
          "CLERK_WEBHOOK_DEDUP_SECONDS must be an integer in [600, 2592000]" in r.stderr, (bad, r))


def test_startup_failure_names_the_subsystem(c):
    """server_new builds the store, auth, the enclave client and the credential
    refresher in order: the one that cannot start is named, veild exits 1, and what
    was built before it is freed (no leak report under ASan)."""
    env0 = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "DATABASE_", "VEIL_", "ENCLAVE_",
                                                                         "AWS_", "BEDROCK_", "PROXY_"))}
    env0.update({"CLERK_ISSUER": ISSUER, "CLERK_JWKS_FILE": c.tok.jwks, "VEIL_LISTEN": "tcp:127.0.0.1:0"})
    with tempfile.TemporaryDirectory() as d:
        blocker = os.path.join(d, "file")
        open(blocker, "w").close()
        cases = [
            ({"VEIL_DATA_DIR": os.path.join(blocker, "data")},
             f"veild: cannot create {os.path.join(blocker, 'data')}: Not a directory"),
            ({"DATABASE_URL": "sqlite:" + os.path.join(d, "missing", "veil.db")}, "veild: database: "),
            ({"CLERK_JWKS_FILE": "", "CLERK_JWKS_URL": "ftp://keys.example/jwks.json"},
             "veild: auth: JWKS URL must start with https:// or http://"),
            ({"BEDROCK_ENDPOINT": "no-port"}, "veild: enclave: BEDROCK_ENDPOINT must be HOST:PORT"),
            ({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret",
              "AWS_CREDENTIAL_EXPIRATION": "tomorrow"},
             "veild: credentials: AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 UTC time"),
        ]
        for extra, want in cases:
            env = {**env0, "VEIL_DATA_DIR": os.path.join(d, "data"), **extra}
            r = subprocess.run([os.path.join(BIN, "veild")], env=env, capture_output=True, text=True, timeout=60,
                               cwd=d)
            assert r.returncode == 1 and want in r.stderr, (extra, r.returncode, r.stderr[-2000:])
            assert "event=listening" not in r.stderr, (extra, r.stderr[-2000:])
            assert not any(m in r.stderr for m in ("Sanitizer", "runtime error:")), (extra, r.stderr[-2000:])


class FailingWrites:
    """Inside the database, every `op` (INSERT|UPDATE|DELETE) on `table` fails while the
    block runs (a trigger, written by the test and not by veild): a store failure in
    the middle of a webhook handler, after some of its writes succeeded."""

    def __init__(self, c, table, op):
        self.c, self.table, self.op = c, table, op

    def __enter__(self):
        if self.c.backend == "postgresql":
            self.c.db.execute("CREATE OR REPLACE FUNCTION veil_test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$BEGIN RAISE EXCEPTION 'injected failure'; END$$; "
                              f"CREATE TRIGGER veil_test_fail BEFORE {self.op} ON {self.table} "
                              "FOR EACH ROW EXECUTE FUNCTION veil_test_fail()")
        else:
            self.c.db.execute(f"CREATE TRIGGER veil_test_fail BEFORE {self.op} ON {self.table} "
                              "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")

    def __exit__(self, *exc):
        on = f" ON {self.table}" if self.c.backend == "postgresql" else ""
        self.c.db.execute("DROP TRIGGER veil_test_fail" + on)


def test_webhook_store_failure_is_retried(c):
    """A store failure answers 500 (Svix retries) with the handler's writes rolled back,
    never 200: a demoted admin would otherwise keep admin rights (issue F)."""
    ev = membership_event("created", "orgmem_wf1", "user_wf1", "org_wf", role="org:admin")
    C.eq(c.hook(ev).json["status"], "processed")
    tf = c.tok("user_wf1", "org_wf", "member")
    demote = json.dumps(membership_event("updated", "orgmem_wf1", "user_wf1", "org_wf")).encode()
    first = c.svix.headers(demote)
    # the role is written, then the audit row fails: the whole event is undone
    with FailingWrites(c, "audit_logs", "INSERT"):
        expect(c.hook(None, first, demote), 500, "Database operation failed")
    C.eq(c.req("GET", P + "/organizations/org_wf/membership", tf).json["role"], "org:admin")
    C.eq(c.db.audit("member_role_changed", org_id="org_wf"), [])
    # Svix's retry (same svix-id) is processed, not taken for a duplicate
    retry = c.svix.headers(demote, msg_id=first["svix-id"])
    C.eq(c.hook(None, retry, demote).json, {"status": "processed", "event": "organizationMembership.updated"})
    C.eq(c.req("GET", P + "/organizations/org_wf/membership", tf).json["role"], "org:member")
    C.eq(len(c.db.audit("member_role_changed", org_id="org_wf")), 1)
    # a removal whose delete fails keeps nothing of its key revocation, then lands on retry
    ta = setup_org(c, "org_wg", "user_wga", members=["user_wgb"])
    expect(c.req("POST", P + "/organizations/org_wg/distribute-key", ta,
                 {"membership_id": "mem_user_wgb_org_wg", "encrypted_org_key": ep()}), 200)
    tb = c.tok("user_wgb", "org_wg", "member")
    remove = json.dumps(membership_event("deleted", "orgmem_clerk_wgb", "user_wgb", "org_wg")).encode()
    first = c.svix.headers(remove)
    with FailingWrites(c, "organization_memberships", "DELETE"):
        expect(c.hook(None, first, remove), 500, "Database operation failed")
    m = c.req("GET", P + "/organizations/org_wg/membership", tb).json
    C.ok(m["has_org_key"] is True and m["encrypted_org_key"] == ep(), m)
    C.ok(c.db.audit("org_key_revoked", org_id="org_wg") == [] and c.db.audit("member_left", org_id="org_wg") == [])
    retry = c.svix.headers(remove, msg_id=first["svix-id"])
    C.eq(c.hook(None, retry, remove).json["status"], "processed")
    expect(c.req("GET", P + "/organizations/org_wg/membership", tb), 404, "Not a member of this organization")
    C.eq(len(c.db.audit("member_left", org_id="org_wg")), 1)


def test_webhook_org_deleted_keeps_audit(c):
    ta = setup_org(c, "org_wz", "user_wza", members=["user_wzb"])
    c.req("POST", P + "/organizations/org_wz/distribute-key", ta,
          {"membership_id": "mem_user_wzb_org_wz", "encrypted_org_key": ep()})
    before = len(c.db.rows("SELECT id FROM audit_logs WHERE org_id = ?", "org_wz"))
    C.ok(before >= 2)
    C.eq(c.hook({"type": "organization.deleted", "data": {"id": "org_wz"}}).json,
         {"status": "processed", "event": "organization.deleted"})
    expect(c.req("GET", P + "/organizations/org_wz/encryption-status", ta), 403, "Not a member of this organization")
    C.eq(c.req("GET", P + "/users/me/memberships", c.tok("user_wzb")).json, {"memberships": []})
    after = c.db.rows("SELECT event_type FROM audit_logs WHERE org_id = ?", "org_wz")
    C.eq(len(after), before + 1, after)  # defect §10.11: the trail survives
    C.eq(c.db.audit("org_keys_rotated", org_id="org_wz"),
         [(None, None, "org_wz", {"reason": "organization_deleted_from_clerk"})])
    # an org without keys leaves no rotation row
    setup_org(c, "org_wy", "user_wya", with_keys=False)
    C.eq(c.hook({"type": "organization.deleted", "data": {"id": "org_wy"}}).json["status"], "processed")
    C.eq(c.db.audit("org_keys_rotated", org_id="org_wy"), [])


def test_webhook_type_cannot_forge_a_log_line(c):
    # issue F0: a signed webhook's type with a newline once wrote `event=admin_login
    # user=root` into veild's log as fields of their own; now it stays one quoted value
    forged = "x\nevent=admin_login user=root"
    C.eq(c.hook({"type": forged, "data": {}}).json, {"status": "ignored", "event": forged})
    C.ok(c.veild.wait_log("user=root", 10), c.veild.text()[-2000:])
    text = c.veild.text()
    forged_lines = [ln for ln in text.splitlines()
                    if " event=admin_login" in ln or ln.startswith("event=admin_login")]
    C.eq(forged_lines, [], forged_lines)
    C.ok('event=webhook type="x\\nevent=admin_login user=root" result=ignored' in text)


# --------------------------------------------------------------------------- §4.8 debug

def test_debug_report(c):
    setup_org(c, "org_g1", "user_ga", members=["user_gb"])
    ra = c.req("GET", P + "/debug/encryption/report", c.tok("user_ga")).json
    for key in ("user", "enclave", "encryption_contexts", "encryption_algorithm", "key_exchange", "organizations",
                "sample_messages", "verification_steps", "online_tools"):
        C.ok(key in ra, key)
    u = ra["user"]
    C.ok(u["user_id"] == "user_ga" and u["public_key_hex"] == H64 and u["has_encryption_keys"] is True)
    C.ok(u["has_recovery_keys"] is True and u["key_salt_hex"] == H64[::-1])
    C.eq(u["key_derivation"], {"algorithm": "Argon2id", "time_cost": 4, "memory_cost_kb": 131072,
                               "parallelism": 2, "output_length": 32})
    C.ok(re.fullmatch(r"[0-9a-f]{64}", ra["enclave"]["transport_public_key_hex"] or ""), ra["enclave"])
    C.eq(ra["encryption_contexts"], {
    "client_to_enclave": "client-to-enclave-transport", "enclave_to_client": "enclave-to-client-transport",
    "user_message_storage": "user-message-storage", "assistant_message_storage": "assistant-message-storage",
    "org_key_distribution": "org-key-distribution"})
    C.eq(ra["encryption_algorithm"], {"cipher": "AES-256-GCM", "key_length": 32, "iv_length": 16,
                                      "tag_length": 16})
    C.eq(ra["key_exchange"], {"algorithm": "X25519 ECDH", "kdf": "HKDF-SHA512", "kdf_salt_length": 32,
                              "derived_key_length": 32})
    C.eq(ra["sample_messages"], [])
    oa = ra["organizations"][0]
    C.ok(oa["org_id"] == "org_g1" and oa["org_public_key_hex"] == "9" * 64 and oa["has_encryption_keys"])
    C.ok(oa["admin_encrypted_private_key_hex"] == "8" * 80 and oa["admin_key_salt_hex"] == "5" * 64)
    C.ok(oa["membership"]["role"] == "org:admin" and oa["membership"]["has_org_key"] is True)
    C.eq(oa["membership"]["encrypted_org_key_ciphertext_hex"], ep("d")["ciphertext"])
    # defect §10.18: a member never sees the org's wrapped private key
    ob = c.req("GET", P + "/debug/encryption/report", c.tok("user_gb")).json["organizations"][0]
    C.ok(not any(k.startswith("admin_") for k in ob), ob)
    C.ok(ob["org_public_key_hex"] == "9" * 64 and ob["membership"]["role"] == "org:member")
    # nor does a JWT admin whose stored role is member
    oc = c.req("GET", P + "/debug/encryption/report", c.tok("user_gb", "org_g1", "admin")).json["organizations"][0]
    C.ok(not any(k.startswith("admin_") for k in oc), oc)
    expect(c.req("GET", P + "/debug/encryption/report", c.tok("user_g_unknown")), 404, "User not found")
    # sample messages: the two newest of a session, long ciphertext cut at 100 hex chars
    c.db.execute("INSERT INTO sessions (id, user_id, org_id, name, created_at, updated_at) VALUES (?, ?, NULL, ?, ?, ?)",
                 "sess_g1", "user_ga", "New Chat", "2026-01-01T00:00:00.000000", "2026-01-01T00:00:03.000000")
    for i, ct in enumerate(("aa" * 10, "bb" * 10, "cc" * 150)):
        c.db.execute("INSERT INTO messages (id, session_id, role, ephemeral_public_key, iv, ciphertext, auth_tag, "
                     "hkdf_salt, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", f"msg_g{i}", "sess_g1",
                     ("user", "assistant")[i % 2], H64, H32, ct, H32, H64, f"2026-01-01T00:00:0{i}.000000")
    sm = c.req("GET", P + "/debug/encryption/report", c.tok("user_ga")).json["sample_messages"]
    C.eq([m["message_id"] for m in sm], ["msg_g2", "msg_g1"], sm)
    C.ok(sm[0]["ciphertext_hex"] == "c" * 100 + "..." and sm[1]["ciphertext_hex"] == "bb" * 10, sm)
    C.ok(sm[0]["session_id"] == "sess_g1" and sm[0]["role"] == "user" and sm[0]["iv_hex"] == H32, sm)
    # off unless VEIL_DEBUG_ROUTES is set
    r = request(c.plain_port, "GET", P + "/debug/encryption/report", c.tok("user_ga"))
    expect(r, 404, "Not Found")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_")]


# --------------------------------------------------------------------------- runner

def health_when_database_is_down(c, pg):
    """The database goes away: /health says so (503)."""
    pg.stop()
    r = request(c.port, "GET", "/health")
    C.ok(r.status == 503 and r.json == {"status": "unhealthy", "database": "disconnected"}, r)


def run_backend(name, workdir, db_url, db, tok, svix, pg=None):
    print(f"== {name}", flush=True)
    base = {"CLERK_JWKS_FILE": tok.jwks, "VEIL_DATA_DIR": workdir, "DATABASE_URL": db_url}
    main = plain = None
    reports = []
    try:
        main = Veild(workdir, {**base, "CLERK_WEBHOOK_SECRET": svix.secret, "VEIL_DEBUG_ROUTES": "true"},
                     f"veild-{name}")
        plain = Veild(workdir, base, f"veild-{name}-plain")
        c = Ctx(main.port, tok, svix, db, plain.port, name)
        c.veild = main
        for t in TESTS:
            C.run(f"{name}: {t.__name__}", t, c)
        if pg:
            C.run(f"{name}: health_when_database_is_down", health_when_database_is_down, c, pg)
    finally:
        for v in (main, plain):
            if v:
                reports += v.stop()
                reports += [l for l in v.text().splitlines() if "event=route_bug" in l]
    C.ok(not reports, f"{name}: sanitizer reports or route bugs in veild's log:\n" + "\n".join(reports[:20]))


def main():
    with TempDir() as top:
        tok = Tokens(top)
        svix = Svix()
        # SQLite
        d = os.path.join(top, "sqlite")
        os.mkdir(d)
        path = os.path.join(d, "veil.db")
        C.run("sqlite", run_backend, "sqlite", d, f"sqlite:{path}", Db(sqlite_path=path), tok, svix)
        # PostgreSQL
        pg = Postgres()
        if C.ok(pg.bindir, "postgresql: initdb not found (install postgresql)"):
            d = os.path.join(top, "pg")
            os.mkdir(d)
            try:
                pg.start()
                C.run("postgresql", run_backend, "postgresql", d, pg.url, Db(pg=pg), tok, svix, pg)
            except subprocess.CalledProcessError as e:
                C.ok(False, f"postgresql: could not start the server: {e}\n{e.stderr!r}")
            finally:
                pg.stop()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""`veil dev-token` end to end, and the JWKS URL cache against a real local HTTP server.

dev-token: the key is created 0600 (parent directory too), the JWKS it writes has the
RFC 7638 thumbprint as kid, the token verifies with an independent RS256 implementation
(pyca/cryptography) and with veil's own verifier (jwks_probe --file), and its claims
have Clerk's v2 shape.

Cache (jwks_probe --url, windows shortened to fractions of a second): the first lookup
waits for the fetch, later ones are answered at once; an unknown kid refetches (one
fetch for many waiters, rate-limited), so a rotated-in key is found and a rotated-out
key is refused; when the server is down, cached keys stay usable only within the stale
window and then lookups answer 503; non-200 and oversized bodies are failures; a
cancelled wait gets no callback, also when a callback of the same batch cancels it.
"""
import base64
import hashlib
import http.server
import json
import os
import stat
import subprocess
import sys
import threading
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import Checks, TempDir  # noqa: E402

BIN = os.environ["VEIL_BIN"]
VEIL = os.path.join(BIN, "veil")
PROBE = os.path.join(BIN, "jwks_probe")
STALE_MS = 4000

C = Checks()


def b64u_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64u_int(s):
    return int.from_bytes(b64u_dec(s), "big")


def thumbprint(jwk):
    canon = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"),
                       sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def devtoken(args, check_rc=True):
    r = subprocess.run([VEIL, "dev-token"] + args, capture_output=True, text=True, timeout=60)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"veil dev-token {args} failed: {r.stderr}")
    return r


def py_verify(token, jwk):
    """RS256 with pyca/cryptography: an implementation independent of veil's."""
    h, p, s = token.split(".")
    pub = rsa.RSAPublicNumbers(b64u_int(jwk["e"]), b64u_int(jwk["n"])).public_key()
    try:
        pub.verify(b64u_dec(s), f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


class Probe:
    """jwks_probe on a pipe: one command, one (or n) answer lines."""

    def __init__(self, args):
        self.p = subprocess.Popen([PROBE] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.expect_line("ready")

    def expect_line(self, prefix):
        line = self.readline()
        if not line.startswith(prefix):
            raise RuntimeError(f"probe said {line!r}, expected {prefix!r}")
        return line

    def readline(self):
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("probe exited")
        return line.strip()

    def cmd(self, line, n=1):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = [self.readline() for _ in range(n)]
        return out[0] if n == 1 else out

    def stats(self):
        parts = self.cmd("stats").split()[1:]
        return {k: int(v) for k, v in (x.split("=") for x in parts)}

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
            self.p.wait(timeout=10)
        except Exception:
            self.p.kill()
            self.p.wait()
        return self.p.returncode


# ---- a JWKS server we control ---------------------------------------------------------

class State:
    def __init__(self):
        self.body = b'{"keys": []}'
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        self.lock = threading.Lock()


def make_handler(st):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            with st.lock:
                st.requests += 1
                body, status, delay = st.body, st.status, st.delay
            if delay:
                time.sleep(delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # the client gave up on an oversized body: expected
                pass

        def log_message(self, *a):
            pass

    return H


class Server:
    def __init__(self, st, port=0):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), make_handler(st))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.t = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def jwks_doc(*jwk_sets):
    keys = []
    for s in jwk_sets:
        keys.extend(s["keys"])
    return json.dumps({"keys": keys}).encode()


# ---- dev-token ----------------------------------------------------------------------------

def test_devtoken(tmp):
    key = os.path.join(tmp, "run", "sub", "dev-jwt.key")
    jwks_path = os.path.join(tmp, "jwks.json")
    r = devtoken(["--sub", "user_2abc", "--org", "org_9", "--role", "admin", "--slug", "acme",
                  "--azp", "http://localhost:3000", "--key", key, "--jwks-out", jwks_path])
    token = r.stdout.strip()
    C.ok(r.stdout.count("\n") == 1 and token.count(".") == 2, "dev-token prints one token line")
    st = os.stat(key)
    C.ok(stat.S_IMODE(st.st_mode) == 0o600, f"key mode is 0600 (got {oct(st.st_mode)})")
    C.ok(stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode) == 0o700, "key dir created 0700")
    with open(key) as f:
        C.ok(f.read().startswith("-----BEGIN PRIVATE KEY-----"), "key is a PEM private key")
    with open(jwks_path) as f:
        jwks = json.load(f)
    C.ok(len(jwks["keys"]) == 1, "JWKS has one key")
    jwk = jwks["keys"][0]
    C.ok(jwk["kty"] == "RSA" and jwk["use"] == "sig" and jwk["alg"] == "RS256", "JWK members")
    C.ok(b64u_int(jwk["n"]).bit_length() == 2048, "2048-bit modulus")
    C.ok(jwk["kid"] == thumbprint(jwk), "kid is the RFC 7638 thumbprint")
    h, p, _ = token.split(".")
    header, claims = json.loads(b64u_dec(h)), json.loads(b64u_dec(p))
    C.ok(header == {"alg": "RS256", "kid": jwk["kid"], "typ": "JWT"}, f"header {header}")
    C.ok(py_verify(token, jwk), "token verifies with pyca/cryptography")
    C.ok(claims["sub"] == "user_2abc" and claims["iss"] == "https://veil.dev.local",
          f"sub/iss {claims}")
    C.ok(claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"], "times")
    C.ok(abs(claims["iat"] - time.time()) < 60, "iat is now")
    C.ok(claims["azp"] == "http://localhost:3000", "azp")
    C.ok(claims["o"] == {"id": "org_9", "rol": "admin", "slg": "acme"}, f"o claim {claims['o']}")

    # the same key on the next run; a personal token has no o claim
    r2 = devtoken(["--sub", "user_2abc", "--key", key, "--ttl", "60"])
    t2 = r2.stdout.strip()
    h2, p2, _ = t2.split(".")
    c2 = json.loads(b64u_dec(p2))
    C.ok(json.loads(b64u_dec(h2))["kid"] == jwk["kid"], "existing key reused")
    C.ok("o" not in c2 and "azp" not in c2 and c2["exp"] - c2["iat"] == 60, "personal claims")
    C.ok(py_verify(t2, jwk), "second token verifies")

    # veil's own verifier, through the file-backed cache
    pr = Probe(["--file", jwks_path, "--azp", "http://localhost:3000"])
    out = pr.cmd("verify " + token)
    C.ok(out == "verify ok sub=user_2abc org=org_9 role=org:admin slug=acme perms=0 sync",
          f"probe verify: {out}")
    out = pr.cmd("verify " + t2)  # no azp while a list is configured
    C.ok(out.startswith("verify err status=401") and "Invalid claims" in out, f"azp: {out}")
    expired = devtoken(["--sub", "u", "--key", key, "--ttl", "60",
                        "--now", str(int(time.time()) - 600)]).stdout.strip()
    out = pr.cmd("verify " + expired)
    C.ok("detail=Token expired" in out, f"expired: {out}")
    other = devtoken(["--sub", "u", "--key", key, "--issuer", "https://evil.example",
                      "--azp", "http://localhost:3000"]).stdout.strip()
    out = pr.cmd("verify " + other)
    C.ok("detail=Invalid claims" in out, f"issuer: {out}")
    out = pr.cmd("verify " + token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB"))
    C.ok("status=401" in out and "Could not validate credentials" in out, f"bad sig: {out}")
    C.ok(pr.close() == 0, "probe exits cleanly")

    # errors: usage (2) and failures (1), one line each
    r = devtoken(["--org", "o"], check_rc=False)
    C.ok(r.returncode == 2 and r.stderr.count("\n") == 1 and "--sub" in r.stderr, "missing --sub")
    r = devtoken(["--sub", "u", "--org", "o", "--role", "owner", "--key", key], check_rc=False)
    C.ok(r.returncode == 2, "bad role")
    r = devtoken(["--sub", "u", "--ttl", "0", "--key", key], check_rc=False)
    C.ok(r.returncode == 2, "bad ttl")
    bad = os.path.join(tmp, "garbage.key")
    with open(bad, "w") as f:
        f.write("not a key\n")
    r = devtoken(["--sub", "u", "--key", bad], check_rc=False)
    C.ok(r.returncode == 1 and r.stderr.startswith("veil dev-token: "), f"bad key: {r.stderr}")
    r = devtoken(["--help"], check_rc=False)
    C.ok(r.returncode == 0 and "--jwks-out" in r.stdout, "--help")


# ---- the URL cache --------------------------------------------------------------------------

def wait_until(pred, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_url_cache(tmp):
    keys = {}
    for name in ("a", "b"):
        path = os.path.join(tmp, f"{name}.jwks")
        tok = devtoken(["--sub", f"user_{name}", "--key", os.path.join(tmp, f"{name}.key"),
                        "--jwks-out", path]).stdout.strip()
        with open(path) as f:
            keys[name] = (json.load(f), tok)
    kid_a = keys["a"][0]["keys"][0]["kid"]
    kid_b = keys["b"][0]["keys"][0]["kid"]

    st = State()
    st.body = jwks_doc(keys["a"][0])
    srv = Server(st)
    url = f"http://127.0.0.1:{srv.port}/.well-known/jwks.json"
    # fresh 1.5 s, unknown-kid refetch at most every 0.8 s, retry after failures 0.2 s,
    # keys usable up to 4 s after the last good fetch
    pr = Probe(["--url", url, "--ttl-ms", "1500", "--unknown-kid-ms", "800", "--retry-ms", "200",
                "--stale-ms", str(STALE_MS), "--timeout-ms", "2000"])

    # first lookup waits for the fetch; the next is answered from the cache
    C.ok(pr.cmd(f"lookup {kid_a}") == f"lookup {kid_a} found async", "first lookup fetches")
    C.ok(pr.cmd(f"lookup {kid_a}") == f"lookup {kid_a} found sync", "cached lookup is sync")
    out = pr.cmd("verify " + keys["a"][1])
    C.ok(out == "verify ok sub=user_a org= role= slug= perms=0 sync", f"verify a: {out}")
    C.ok(st.requests == 1, f"one fetch so far ({st.requests})")

    # unknown kid right after a fetch: no refetch (rate limit), answered at once
    C.ok(pr.cmd(f"lookup {kid_b}") == f"lookup {kid_b} unknown sync", "unknown kid, rate-limited")
    C.ok(st.requests == 1, "no fetch for a rate-limited unknown kid")
    out = pr.cmd("verify " + keys["b"][1])
    C.ok("status=401" in out and "detail=Invalid token headers" in out, f"unknown kid: {out}")

    # rotation in: after the refetch gap, an unknown kid refetches and finds the new key;
    # many lookups meanwhile share one fetch and each get one answer
    st.body = jwks_doc(keys["a"][0], keys["b"][0])
    st.delay = 0.3
    time.sleep(0.9)
    before = st.requests
    answers = pr.cmd(f"multi 5 {kid_b}", n=5)
    C.ok(answers == [f"lookup {kid_b} found async"] * 5, f"five waiters answered: {answers}")
    C.ok(st.requests == before + 1, f"one fetch for five waiters ({st.requests - before})")
    st.delay = 0
    out = pr.cmd("verify " + keys["b"][1])
    C.ok(out == "verify ok sub=user_b org= role= slug= perms=0 sync", f"verify b: {out}")

    # rotation out: a has been removed; an unknown kid (after the gap) refetches
    st.body = jwks_doc(keys["b"][0])
    time.sleep(0.9)
    C.ok(pr.cmd("lookup kid-nobody-has") == "lookup kid-nobody-has unknown async",
          "unknown kid refetches")
    C.ok(pr.cmd(f"lookup {kid_a}") == f"lookup {kid_a} unknown sync", "rotated-out key refused")
    t_good = time.time()  # the last good fetch

    # the server goes away: cached keys stay usable within the stale window only
    srv.stop()
    time.sleep(1.7)  # past the 1.5 s ttl: the lookup is served and a refresh starts
    C.ok(pr.cmd(f"lookup {kid_b}") == f"lookup {kid_b} found sync", "stale key served")
    C.ok(wait_until(lambda: pr.stats()["fetching"] == 0), "background refresh finished")
    s = pr.stats()
    C.ok(s["failures"] >= 1 and s["usable"] == 1 and s["fresh"] == 0, f"refresh failed: {s}")
    # unknown kids while stale and down: a refetch is tried and fails -> unknown (keys usable)
    time.sleep(0.9)
    out = pr.cmd("lookup kid-x")
    C.ok(out in ("lookup kid-x unknown async", "lookup kid-x unknown sync"), f"down: {out}")
    rest = STALE_MS / 1000 - (time.time() - t_good)
    time.sleep(max(rest, 0) + 0.3)
    C.ok(pr.cmd(f"lookup {kid_b}") in (f"lookup {kid_b} unavailable async",
                                        f"lookup {kid_b} unavailable sync"),
          "past the stale window: unavailable")
    time.sleep(0.25)
    out = pr.cmd("verify " + keys["b"][1])
    C.ok("status=503" in out and "detail=Authentication service unavailable" in out,
          f"verify 503: {out}")
    C.ok(pr.stats()["usable"] == 0, "not usable")

    # back up (same port): the next lookup after the retry gap fetches and recovers
    srv = Server(st, srv.port)
    time.sleep(0.25)
    C.ok(pr.cmd(f"lookup {kid_b}") == f"lookup {kid_b} found async", "recovered")
    C.ok(pr.stats()["usable"] == 1, "usable again")

    # a non-200 answer and an oversized body are failed fetches; keys are kept
    st.status = 500
    time.sleep(0.9)
    pr.cmd("lookup kid-y")
    C.ok(wait_until(lambda: pr.stats()["fetching"] == 0), "500 fetch done")
    st.status = 200
    st.body = b'{"keys": [' + b" " * (1024 * 1024) + b"]}"
    time.sleep(0.9)
    f0 = pr.stats()["failures"]
    pr.cmd("lookup kid-z")
    C.ok(pr.stats()["failures"] == f0 + 1, "oversized body is a failure")
    C.ok(pr.cmd(f"lookup {kid_b}") == f"lookup {kid_b} found sync", "keys kept after failures")

    # a cancelled wait gets no callback
    st.body = jwks_doc(keys["b"][0])
    st.delay = 0.4
    time.sleep(0.9)
    C.ok(pr.cmd("cancel kid-c") == "cancelled", "cancel while waiting")
    C.ok(pr.stats()["waiting"] == 0, "nothing waiting after cancel")
    time.sleep(0.6)  # the fetch completes; the cancelled wait must stay silent
    C.ok(pr.cmd("stats").startswith("stats "), "no stray callback line after cancel")

    # a callback that cancels another wait of its batch and looks up again: the sibling
    # stays silent and the new lookup gets exactly one answer (use after free under ASan
    # if a cancelled wait stayed on the list being resolved)
    time.sleep(0.9)
    out = pr.cmd("pair kid-d", n=3)
    C.ok(out == ["pair kid-d unknown async", "pair sibling cancelled",
                  "lookup kid-d unknown sync"], f"pair: {out}")
    C.ok(pr.stats()["waiting"] == 0, "nothing waiting after the pair")
    st.delay = 0

    C.ok(pr.close() == 0, "probe exits cleanly")
    srv.stop()


def main():
    for exe in (VEIL, PROBE):
        if not C.ok(os.access(exe, os.X_OK), f"missing {exe}"):
            return C.finish()
    with TempDir() as tmp:
        C.run("veil dev-token", test_devtoken, tmp)
        C.run("the JWKS URL cache", test_url_cache, tmp)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

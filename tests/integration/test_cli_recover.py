#!/usr/bin/python3
"""`veil keys recover` never loses the key pair. The client used to DELETE the keys
and then POST new ones: when the POST failed (a 5xx, the network, veild
restarting) the key pair, and with it every stored conversation, was gone, and
the new recovery code had never been shown. Now it caches the key, shows the new
code first, and replaces both wrapped copies with one PUT.

A real veild (mock mode) on SQLite, then on a throwaway PostgreSQL, behind a
small HTTP proxy in this script that forwards everything except, when told to,
the upload (`PUT /api/v1/users/me/keys`): it answers 503, or kills veild before
forwarding it. After a failed recover the server's keys are byte for byte the
same and the old passcode and the old recovery code still work; after a
successful one the new passcode and the new code work and the old ones do not.
The proxy also checks that the client never sends DELETE.
Prints `N passed, M failed`.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, ISSUER, Checks, HttpRelay, Postgres, Proc, TempDir, call, dev_token  # noqa: E402

C = Checks()
KEYS = "/api/v1/users/me/keys"
CODE = re.compile(r"\d{4}-\d{4}-\d{4}-\d{4}-\d{4}")


class Proxy(HttpRelay):
    """Forwards to veild; mode "503" or "kill" intercepts the upload."""

    def __init__(self):
        self.target = None  # (port, Proc)
        self.mode = "pass"
        self.seen = []
        super().__init__()

    def request(self, h, raw):
        self.seen.append((h.command, h.path))
        self.port = self.target[0]
        upload = h.command == "PUT" and h.path == KEYS
        if upload and self.mode == "503":
            return 503, b'{"detail":"Service Unavailable"}', "application/json"
        if upload and self.mode == "kill":
            self.target[1].p.kill()  # veild dies between the fetch and the upload
            self.target[1].p.wait()
            return HttpRelay.DROP
        return None


def start_veild(tmp, name, db_url):
    env = {"ENCLAVE_MODE": "mock", "VEIL_LISTEN": "tcp:127.0.0.1:0", "VEIL_DATA_DIR": os.path.join(tmp, "data"),
           "CLERK_ISSUER": ISSUER, "CLERK_JWKS_FILE": os.path.join(tmp, "jwks.json"),
           "VEIL_IMDS_ENDPOINT": "127.0.0.1:9", "DATABASE_URL": db_url}
    p = Proc(name, [os.path.join(BIN, "veild")], env, tmp, drop_env=("CLERK_", "DATABASE_", "ENCLAVE_"))
    p.wait_listening(30)
    return p


def veil(cfg, args, env=None):
    e = dict(os.environ, VEIL_CONFIG=cfg)
    e.update(env or {})
    return subprocess.run([os.path.join(BIN, "veil")] + args, env=e, capture_output=True, timeout=300)


def server_keys(url, tok):
    st, main, _ = call(url, "GET", KEYS, tok)
    st2, rec, _ = call(url, "GET", KEYS + "/recovery", tok)
    return (st, main), (st2, rec)


def recover(cfg, code, passcode):
    return veil(cfg, ["keys", "recover"], {"VEIL_RECOVERY_CODE": code, "VEIL_PASSCODE": passcode})


def unlocks(cfg, passcode):
    return veil(cfg, ["keys", "unlock", "--no-cache"], {"VEIL_PASSCODE": passcode}).returncode == 0


NOTHING_CHANGED = ("Nothing changed on the server: your old passcode and old recovery code still work, and the "
                   "new code above is not in effect. Run `veil keys recover` again to retry.\n")


def check_failed_recover(what, r, cfg, url, tok, before, old_pass, old_code, bad_pass):
    """After an upload that failed: the new code was shown, nothing changed, the old secrets work."""
    out = r.stdout.decode()
    shown = CODE.findall(out)
    C.eq(r.returncode, 1, f"{what}: recover fails ({r.stderr!r})")
    C.ok(len(shown) == 1 and shown[0] != old_code, f"{what}: the new recovery code was shown before the upload: {out!r}")
    C.ok("It takes effect once the upload succeeds; until then your old passcode and old recovery code still work.\n"
         in out, f"{what}: says when the new code takes effect: {out!r}")
    C.eq(server_keys(url, tok), before, f"{what}: the server's keys are unchanged, both copies")
    cache = os.path.join(os.path.dirname(cfg), "private_key")
    C.ok(os.path.exists(cache) and os.stat(cache).st_mode & 0o777 == 0o600, f"{what}: the key is cached here")
    C.eq(veil(cfg, ["keys", "lock"]).returncode, 0, f"{what}: lock")
    C.ok(unlocks(cfg, old_pass), f"{what}: the old passcode still unlocks")
    C.ok(not unlocks(cfg, bad_pass), f"{what}: the passcode of the failed recover does not")
    r2 = recover(cfg, shown[0] if shown else "0" * 20, "unused-pass")
    C.ok(r2.returncode == 1 and "wrong passcode or recovery code" in r2.stderr.decode(),
         f"{what}: the code shown by the failed recover does not work: {r2.stderr!r}")
    return r.stderr.decode()


def run_backend(name, tmp, db_url, proxy):
    procs = []
    killed = set()
    try:
        veild = start_veild(tmp, f"veild-{name}", db_url)
        procs.append(veild)
        proxy.target = (veild.port, veild)
        url = f"http://127.0.0.1:{veild.port}"
        tok = dev_token(tmp, f"user_rec_{name}")
        cfg = os.path.join(tmp, name, "config.json")
        r = subprocess.run([os.path.join(BIN, "veil"), "login", "--server", proxy.url, "--token", "-"], input=tok.encode(),
                           env=dict(os.environ, VEIL_CONFIG=cfg), capture_output=True, timeout=60)
        C.eq(r.returncode, 0, f"{name}: login ({r.stderr!r})")
        r = veil(cfg, ["keys", "init"], {"VEIL_PASSCODE": "old-passcode"})
        C.eq(r.returncode, 0, f"{name}: keys init ({r.stderr!r})")
        old_code = CODE.search(r.stdout.decode()).group(0)
        before = server_keys(url, tok)
        C.eq(before[0][0], 200, f"{name}: keys stored")

        # 1. the upload answers 503
        proxy.mode = "503"
        r = recover(cfg, old_code, "new-pass-503")
        err = check_failed_recover(f"{name} 503", r, cfg, url, tok, before, "old-passcode", old_code, "new-pass-503")
        C.eq(err, "veil keys: the upload failed: Service Unavailable (HTTP 503). " + NOTHING_CHANGED,
             f"{name} 503: the message")

        # 2. veild dies between the fetch and the upload; it comes back on the same database
        proxy.mode = "kill"
        r = recover(cfg, old_code, "new-pass-kill")
        killed.add(veild.name)
        veild = start_veild(tmp, f"veild-{name}-2", db_url)
        procs.append(veild)
        proxy.target = (veild.port, veild)
        url = f"http://127.0.0.1:{veild.port}"
        err = check_failed_recover(f"{name} kill", r, cfg, url, tok, before, "old-passcode", old_code, "new-pass-kill")
        C.ok(err.startswith("veil keys: the upload failed: ") and err.endswith(NOTHING_CHANGED),
             f"{name} kill: the message: {err!r}")

        # 3. the upload succeeds: the same pair under the new passcode and the new code
        proxy.mode = "pass"
        r = recover(cfg, old_code, "new-passcode")
        C.eq(r.returncode, 0, f"{name}: recover ({r.stderr!r})")
        out = r.stdout.decode()
        new_code = CODE.findall(out)
        C.ok(len(new_code) == 1 and new_code[0] != old_code, f"{name}: one new recovery code shown: {out!r}")
        C.ok(out.endswith("Uploaded: the same key pair, now under the new passcode and the new recovery code; "
                          "the old ones no longer work.\n"), f"{name}: success message: {out!r}")
        after = server_keys(url, tok)
        C.eq(after[0][1]["public_key"], before[0][1]["public_key"], f"{name}: the same key pair")
        C.ok(after[0][1]["encrypted_private_key"] != before[0][1]["encrypted_private_key"] and
             after[1][1]["encrypted_private_key"] != before[1][1]["encrypted_private_key"],
             f"{name}: both wrapped copies replaced")
        veil(cfg, ["keys", "lock"])
        C.ok(unlocks(cfg, "new-passcode"), f"{name}: the new passcode unlocks")
        C.ok(not unlocks(cfg, "old-passcode"), f"{name}: the old passcode no longer does")
        r = recover(cfg, old_code, "another-passcode")
        C.ok(r.returncode == 1 and "wrong passcode or recovery code" in r.stderr.decode(),
             f"{name}: the old code no longer recovers: {r.stderr!r}")
        r = recover(cfg, new_code[0], "third-passcode")
        C.eq(r.returncode, 0, f"{name}: the new code recovers ({r.stderr!r})")
        veil(cfg, ["keys", "lock"])
        C.ok(unlocks(cfg, "third-passcode"), f"{name}: and its passcode unlocks")
        C.ok(("DELETE", KEYS) not in proxy.seen and ("PUT", KEYS) in proxy.seen,
             f"{name}: the client replaced with PUT and never sent DELETE: {sorted(set(proxy.seen))}")
    finally:
        for p in procs:
            code = p.stop()
            if p.name not in killed:
                C.eq(code, 0, f"{p.name} exits cleanly")
            C.ok(p.sanitizer_clean(), f"{p.name}: no sanitizer report")


def main():
    with TempDir() as tmp:
        dev_token(tmp, "bootstrap")  # the signing key and the JWKS veild reads
        proxy = Proxy()
        try:
            d = os.path.join(tmp, "sqlite")
            os.makedirs(d)
            run_backend("sqlite", tmp, f"sqlite:{os.path.join(d, 'veil.db')}", proxy)
            pg = Postgres()
            if not pg.bindir:
                C.ok(False, "postgresql: initdb not found (install postgresql)")
            else:
                try:
                    pg.start()
                    proxy.seen.clear()
                    run_backend("postgresql", tmp, pg.url, proxy)
                finally:
                    pg.stop()
        finally:
            proxy.stop()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

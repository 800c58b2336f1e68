#!/usr/bin/python3
"""The `veil` client against a hostile server. The server here is a small fake
(Python's http.server on 127.0.0.1) that answers as veild would, except for the
one thing each check makes hostile:
- terminal escape sequences and C1 controls in the model's answer, the model
  name, session names, history and error details (they must never reach the
  terminal);
- Argon2 parameters in the wrapped-key blob that would make the client allocate
  4 GiB (refused before any key derivation);
- plain http:// to another machine (refused: the bearer token would travel in clear);
- symlinks and loose modes planted at the config's temp file and the key cache;
- an enclave key without an attestation document (the original's /enclave/info): refused
  before anything is sealed. The other checks here are about the terminal, so their asks
  opt out of attestation (--no-attestation; test_cli_attest has the attestation attacks).
Prints `N passed, M failed`.
"""
import json
import os
import re
import resource
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, Checks, TempDir, ep_hash, keypair, seal, sv3_seal, sv3_sender  # noqa: E402

C = Checks()
P = "/api/v1"
BAD = "\x1b]0;pwned\x07\x1b[2J\x1b[31m\u009b31m\u009d8;;x\u009c\r"  # title, clear, colour, C1 CSI/OSC, CR


class Fake:
    """routes: {(method, path): fn(handler, body) -> (status, json or bytes, content type)}"""

    def __init__(self):
        self.routes = {}
        self.seen = []
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def handle_one(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                fake.seen.append((self.command, self.path))
                fn = (fake.routes.get((self.command, self.path)) or  # a route with its query, else without
                      fake.routes.get((self.command, self.path.split("?")[0])))
                status, payload, ctype = fn(self, body) if fn else (404, {"detail": "Not Found"}, None)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype or "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def on(self, method, path, status, payload=None, ctype=None):
        self.routes[(method, path)] = lambda h, b: (status, payload, ctype)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def veil(cfg_dir, args, env=None, stdin=None, limit_memory=False):
    e = dict(os.environ, VEIL_CONFIG=os.path.join(cfg_dir, "config.json"))
    e.update(env or {})
    pre = None
    if limit_memory:  # a client that obeyed the server would need 4 GiB: fail fast instead of swapping
        pre = lambda: resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # noqa: E731
    return subprocess.run([os.path.join(BIN, "veil")] + args, env=e, input=stdin, capture_output=True,
                          timeout=120, preexec_fn=pre)


def asan_build():
    with open(os.path.join(BIN, "veil"), "rb") as f:
        return b"AddressSanitizer" in f.read()


def no_controls(what, data):
    """No ESC, no C0 except \\n and \\t, no DEL, no C1 (raw or UTF-8) in what reached the terminal."""
    bad = [b for b in data if (b < 0x20 and b not in (0x0A, 0x09)) or b == 0x7F]
    c1 = re.search(rb"\xc2[\x80-\x9f]", data)
    text = data.decode("utf-8", "strict")  # also: valid UTF-8
    return C.ok(not bad and not c1 and text is not None, f"{what}: no control sequence reaches the terminal: {data!r}")


def config(tmp, name, server, key_hex=None):
    d = os.path.join(tmp, name)
    os.makedirs(d, mode=0o700)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump({"server": server, "token": "tok"}, f)
    if key_hex:
        fd = os.open(os.path.join(d, "private_key"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, (key_hex + "\n").encode())
        os.close(fd)
    return d


def check_terminal_output(tmp, fake):
    """The attack: a hostile server or a prompt-injected model answers with escape
    sequences (retitle, clear the screen, OSC 52 clipboard, fake prompts)."""
    enc_priv, enc_pub = keypair()
    user_priv, user_pub = keypair()
    from cryptography.hazmat.primitives import serialization
    user_hex = user_priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                       serialization.NoEncryption()).hex()
    d = config(tmp, "term", fake.url, key_hex=user_hex)
    fake.on("GET", P + "/chat/enclave/info", 200, {"enclave_public_key": enc_pub})
    fake.on("GET", P + "/users/me/encryption-status", 200,
            {"has_encryption_keys": True, "public_key": user_pub, "encryption_created_at": None})

    fake.on("GET", P + "/organizations/current", 200, {"org_id": None})
    fake.on("POST", P + "/chat/sessions", 200, {"id": "s-1", "name": "New Chat"})

    def stream(h, body):
        """The enclave's part too (this fake holds the enclave key): a genuine format 3
        answer whose text and model name carry escape sequences."""
        tp, rh = body["client_transport_public_key"], ep_hash(body["encrypted_request"])
        k, sk = sv3_sender(enc_priv, tp, rh)
        su = seal(user_pub, "hi", "user-message-storage")
        sa = seal(user_pub, "Hello world", "assistant-message-storage")
        fake.on("GET", P + "/chat/sessions/s-1/messages", 200, {"messages": [
            dict(id="m-u", role="user", encrypted_content=su), dict(id="m-a", role="assistant", encrypted_content=sa)]})
        texts = ["Hello " + BAD + "world", "\x1b", "]52;c;ZXZpbA==\x07 end\u00e9"]
        evs = [{"type": "session", "session_id": "s-1"}, dict(type="stream_key", stream_format=3, **sk)]
        evs += [dict(type="encrypted_chunk_v3", **sv3_seal(k, i, 0, t)) for i, t in enumerate(texts)]
        evs += [{"type": "stored", "model_used": "model" + BAD, "input_tokens": 1, "output_tokens": 2,
                 "stream_end": sv3_seal(k, 3, 1, ep_hash(su) + ep_hash(sa)), "user_message_id": "m-u",
                 "assistant_message_id": "m-a"}, {"type": "done"}]
        return 200, "".join(f"data: {json.dumps(e)}\n\n" for e in evs).encode(), "text/event-stream"
    fake.routes[("POST", P + "/chat/encrypted/stream")] = stream
    fake.on("PUT", P + "/chat/sessions/s-1/messages/m-a/history-tag", 200, {"status": "tagged"})

    # the attack: an unattested key (the original's shape), with measurements stored
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["measurements"] = {"HashAlgorithm": "Sha384 { ... }", "PCR0": "00" * 48, "PCR1": "11" * 48, "PCR2": "22" * 48}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    fake.seen.clear()
    r = veil(d, ["ask", "hi"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, "veil ask: attestation: missing: the server sent the enclave key without an attestation document (an "
             "enclave without an NSM?)\n"), "ask: an unattested enclave key is refused")
    C.ok(("POST", P + "/chat/encrypted/stream") not in fake.seen and ("POST", P + "/chat/sessions") not in fake.seen,
         f"ask: nothing sent to the unattested key {fake.seen}")
    C.ok(any(p.startswith(P + "/chat/enclave/info?nonce=") for _, p in fake.seen), "ask: it asked with a nonce")

    r = veil(d, ["ask", "--no-attestation", "hi"])
    C.eq(r.returncode, 0, f"ask against the fake server: {r.stderr!r}")
    no_controls("ask: the streamed answer", r.stdout)
    # an escape sequence split across two chunks is removed whole, and UTF-8 survives
    C.eq(r.stdout.decode(), "Hello world end\u00e9\n[model · 1 in · 2 out · session s-1]\n",
         "ask: the answer, the model name and the session id, filtered")
    r = veil(d, ["ask", "--no-attestation", "--json", "hi"])
    j = json.loads(r.stdout)
    C.eq(j["answer"], "Hello " + BAD + "world\x1b]52;c;ZXZpbA==\x07 end\u00e9", "ask --json: the exact text, escaped")
    C.ok(all(b < 0x7F for b in r.stdout), f"ask --json: ASCII-only JSON: {r.stdout!r}")

    fake.on("GET", P + "/chat/sessions?limit=100", 200,
            {"sessions": [{"id": "s-1", "name": "name" + BAD, "updated_at": "2026-01-01T00:00:00"}]})
    r = veil(d, ["sessions"])
    no_controls("sessions: the session names", r.stdout)
    C.eq(r.stdout.decode(), "s-1  2026-01-01T00:00:00  name\n", "sessions: the names, filtered")

    fake.on("GET", P + "/chat/sessions/s-2/messages", 200, {"messages": [
        {"role": "user", "encrypted_content": seal(user_pub, "q" + BAD, "user-message-storage")},
        {"role": "assistant", "encrypted_content": seal(user_pub, "a" + BAD, "assistant-message-storage")},
        {"role": "user" + BAD, "encrypted_content": seal(user_pub, "b", "user-message-storage")}]})
    r = veil(d, ["history", "s-2"])
    no_controls("history: stored messages and roles", r.stdout)
    C.eq(r.stdout.decode(), "[exchange 1: unverified: no history tag (an older or another client's exchange)]\n"
                            "user: q\n\nassistant: a\n\n"
                            "[message 3: unverified: not part of a complete exchange]\nuser: b\n\n",
         "history: filtered, the untagged messages marked")

    # the server names a session with escape sequences (or a path) for the new chat: refused
    for bad_id in ("s-1" + BAD, "../users/me"):
        fake.on("POST", P + "/chat/sessions", 200, {"id": bad_id, "name": "New Chat"})
        r = veil(d, ["ask", "--no-attestation", "hi"])
        C.eq((r.returncode, r.stderr.decode().splitlines()[-1]),
             (1, "veil ask: the server returned a malformed session id"), f"a session id {bad_id!r} is refused")
        no_controls("the refused session id", r.stderr)

    fake.on("GET", P + "/chat/models", 400, {"detail": "no models" + BAD + "\nveil: fake prompt"})
    r = veil(d, ["models"])
    no_controls("an error detail", r.stderr)
    C.eq(r.stderr.decode(), "veil models: no models  veil: fake prompt (HTTP 400)\n",
         "an error detail: one line, filtered")


def wrapped(secret, priv_bytes, kdf=None):
    """A key wrapped the web client's way (Argon2id t=4 m=128 MiB p=2, AES-256-GCM)."""
    import argon2.low_level as a2
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    salt, iv = os.urandom(32), os.urandom(16)
    k = a2.hash_secret_raw(secret.encode(), salt, time_cost=4, memory_cost=131072, parallelism=2, hash_len=32,
                           type=a2.Type.ID, version=19)
    sealed = AESGCM(k).encrypt(iv, priv_bytes, None)
    blob = {"encrypted_private_key": sealed[:-16].hex(), "iv": iv.hex(), "tag": sealed[-16:].hex(), "salt": salt.hex()}
    if kdf:
        blob["kdf"] = kdf
    return blob


def check_kdf_allowlist(tmp, fake):
    """The attack: the server puts Argon2 parameters in the wrapped-key blob that make
    the client allocate 4 GiB (or run for hours) on every unlock."""
    from cryptography.hazmat.primitives import serialization
    priv, pub = keypair()
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    d = config(tmp, "kdf", fake.url)
    env = {"VEIL_PASSCODE": "the-passcode", "VEIL_RECOVERY_CODE": "1234-5678-9012-3456-7890"}
    limit = not asan_build()  # ASan reserves terabytes of address space: no RLIMIT_AS there
    default = {"algorithm": "argon2id", "version": 19, "time_cost": 4, "memory_cost": 131072, "parallelism": 2}
    accepted = "this client accepts only argon2id version=19 time_cost=4 memory_cost=131072 KiB parallelism=2"
    hostile = [
        ({**default, "memory_cost": 4194304},
         "algorithm=argon2id version=19 time_cost=4 memory_cost=4194304 KiB parallelism=2"),
        ({**default, "time_cost": 4000}, "algorithm=argon2id version=19 time_cost=4000 memory_cost=131072 KiB parallelism=2"),
        ({**default, "parallelism": 1}, "algorithm=argon2id version=19 time_cost=4 memory_cost=131072 KiB parallelism=1"),
        ({**default, "algorithm": "argon2i"}, "algorithm=argon2i version=19 time_cost=4 memory_cost=131072 KiB parallelism=2"),
        ({**default, "version": 16}, "algorithm=argon2id version=16 time_cost=4 memory_cost=131072 KiB parallelism=2"),
        ({"algorithm": "argon2id", "memory_cost": 4194304}, "algorithm=argon2id version=- time_cost=- memory_cost=4194304 KiB parallelism=-"),
    ]
    for kdf, named in hostile:
        blob = dict(wrapped("the-passcode", raw), public_key=pub, kdf=kdf)
        fake.on("GET", P + "/users/me/keys", 200, blob)
        fake.on("GET", P + "/users/me/keys/recovery", 200, blob)
        for action in ("unlock", "recover"):
            r = veil(d, ["keys", action, "--no-cache"] if action == "unlock" else ["keys", action], env,
                     limit_memory=limit)
            C.eq((r.returncode, r.stderr.decode()),
                 (1, f"veil keys: refusing the server's key-derivation parameters ({named}): {accepted}\n"),
                 f"keys {action} with kdf {kdf}")
    C.ok(not os.path.exists(os.path.join(d, "private_key")), "nothing was cached")
    # the allowed parameters, given explicitly or left out (the original's blob), still unlock
    for kdf in (default, None):
        fake.on("GET", P + "/users/me/keys", 200, dict(wrapped("the-passcode", raw, kdf), public_key=pub))
        r = veil(d, ["keys", "unlock", "--no-cache"], env, limit_memory=limit)
        C.eq((r.returncode, r.stdout.decode()), (0, "Passcode correct: the key unwraps and matches the account.\n"),
             f"keys unlock with kdf {kdf}: {r.stderr!r}")


def check_plain_http(tmp, fake):
    """The attack: a config or a typo sends the bearer token and the wrapped keys over
    plain http across the network, readable and changeable by anyone on the path."""
    d = os.path.join(tmp, "http")
    os.makedirs(d, mode=0o700)
    hint = " (is veild running? `make run` starts the local stack)"
    for url in ("http://example.com", "http://example.com:8000/api", "http://10.0.0.1:8000", "http://127.0.0.1.nip.io",
                "HTTP://192.0.2.7", "http://[2001:db8::1]:8000", "http://[::ffff:127.0.0.1]:80"):
        r = veil(d, ["login", "--server", url, "--token", "t"])
        C.eq((r.returncode, r.stderr.decode()),
             (1, f"veil login: refusing {url}: plain http:// is allowed only to this machine "
                 "(localhost, 127.0.0.0/8, ::1); use https://\n"), f"login --server {url}")
    C.ok(not os.path.exists(os.path.join(d, "config.json")), "no config was written")
    r = veil(d, ["models"], {"VEIL_SERVER": "http://example.com", "VEIL_TOKEN": "t"})
    C.eq((r.returncode, r.stderr.decode()),
         (1, "veil models: refusing http://example.com: plain http:// is allowed only to this machine "
             "(localhost, 127.0.0.0/8, ::1); use https://\n"), "VEIL_SERVER=http://example.com")
    r = veil(d, ["login", "--server", "http://127.0.0.1@example.com", "--token", "t"])
    C.eq((r.returncode, r.stderr.decode()), (1, "veil login: server URL must not contain a user name\n"),
         "a user name hiding the real host")
    # loopback over http and anything over https are let through to the connection
    for url in ("http://127.0.0.1:1", "http://127.3.4.5:1", "http://[::1]:1", "https://127.0.0.1:1"):
        r = veil(d, ["login", "--server", url, "--token", "t"])
        C.eq((r.returncode, r.stderr.decode()),
             (1, f"veil login: cannot reach the veil server at {url}: connection refused{hint}\n"), f"login {url}")
    fake.on("GET", "/protected", 200, {"message": "You are authenticated", "user_id": "user_h"})
    fake.on("POST", P + "/users/sync", 200, {"status": "created", "user_id": "user_h"})
    r = veil(d, ["login", "--server", fake.url, "--token", "t"])
    C.eq(r.returncode, 0, f"login over http to 127.0.0.1: {r.stderr!r}")


def check_file_safety(tmp, fake):
    """The attack: another local user (or a compromised tool) plants a symbolic link
    where the CLI writes its token or reads/writes the unlocked private key, or the
    key cache has a mode that lets others read it."""
    from cryptography.hazmat.primitives import serialization
    priv, pub = keypair()
    raw = priv.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    fake.on("GET", "/protected", 200, {"message": "You are authenticated", "user_id": "user_f"})
    fake.on("POST", P + "/users/sync", 200, {"status": "exists", "user_id": "user_f"})
    fake.on("GET", P + "/users/me/keys", 200, dict(wrapped("file-passcode", raw), public_key=pub))
    fake.on("GET", P + "/users/me/encryption-status", 200,
            {"has_encryption_keys": True, "public_key": pub, "encryption_created_at": None})
    fake.on("GET", P + "/organizations/current", 200, {"org_id": None})
    fake.on("GET", P + "/chat/sessions/s-f/messages", 200, {"messages": [
        {"role": "user", "encrypted_content": seal(pub, "file question", "user-message-storage")}]})
    remedy = "remove it with `veil keys lock`, then `veil keys unlock` again"

    # the config's temp file: a planted link is refused, and what it points to is untouched
    d = os.path.join(tmp, "files")
    os.makedirs(d, mode=0o700)
    target = os.path.join(tmp, "elsewhere")
    with open(target, "w") as f:
        f.write("original\n")
    tmpfile = os.path.join(d, "config.json.tmp")
    os.symlink(target, tmpfile)
    r = veil(d, ["login", "--server", fake.url, "--token", "secret-token"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil login: refusing to write {tmpfile}: it is a symbolic link; remove it\n"), "login: a link at the temp file")
    C.eq(open(target).read(), "original\n", "login: the link's target is untouched")
    C.ok(not os.path.exists(os.path.join(d, "config.json")), "login: no config written")
    os.unlink(tmpfile)
    os.symlink(os.path.join(tmp, "does-not-exist"), tmpfile)  # dangling: open(O_CREAT) would create the target
    r = veil(d, ["login", "--server", fake.url, "--token", "secret-token"])
    C.eq(r.returncode, 1, "login: a dangling link at the temp file is refused")
    C.ok(not os.path.exists(os.path.join(tmp, "does-not-exist")), "login: the dangling link is not followed")
    os.unlink(tmpfile)
    with open(tmpfile, "w") as f:  # a stale temp file of our own (a crash) does not block login
        f.write("stale")
    r = veil(d, ["login", "--server", fake.url, "--token", "secret-token"])
    C.eq(r.returncode, 0, f"login over a stale temp file: {r.stderr!r}")
    C.eq(os.stat(os.path.join(d, "config.json")).st_mode & 0o777, 0o600, "login: config 0600")

    # the key cache: a planted link is neither read nor written through
    cache = os.path.join(d, "private_key")
    keyfile = os.path.join(tmp, "some-key")
    fd = os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, (raw.hex() + "\n").encode())
    os.close(fd)
    os.symlink(keyfile, cache)
    r = veil(d, ["history", "s-f"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil history: refusing the key cache {cache}: it is a symbolic link ({remedy})\n"), "history: a link at the cache")
    r = veil(d, ["keys", "unlock"], {"VEIL_PASSCODE": "file-passcode"})
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil keys: refusing to write the key cache {cache}: it is a symbolic link ({remedy})\n"),
         "unlock: a link at the cache")
    C.eq(open(keyfile).read(), raw.hex() + "\n", "unlock: the link's target is untouched")
    r = veil(d, ["keys", "lock"])
    C.ok(r.returncode == 0 and not os.path.lexists(cache) and os.path.exists(keyfile), "lock removes the link only")

    # the key cache with group/other bits, or not ours: refused
    r = veil(d, ["keys", "unlock"], {"VEIL_PASSCODE": "file-passcode"})
    C.eq(r.returncode, 0, f"unlock: {r.stderr!r}")
    C.eq(os.stat(cache).st_mode & 0o777, 0o600, "unlock: the cache is 0600")
    r = veil(d, ["history", "s-f"])
    C.ok(r.returncode == 0 and "file question" in r.stdout.decode(), f"history with the cache: {r.stderr!r}")
    os.chmod(cache, 0o644)
    r = veil(d, ["history", "s-f"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil history: refusing the key cache {cache}: mode 0644 lets others read it; it must be 0600 "
             f"({remedy})\n"), "history: a 0644 cache")
    os.chmod(cache, 0o640)
    r = veil(d, ["history", "s-f"])
    C.ok(r.returncode == 1 and "mode 0640 lets others read it" in r.stderr.decode(), "history: a 0640 cache")
    os.chmod(cache, 0o600)
    if os.geteuid() == 0:
        os.chown(cache, 65534, 65534)
        r = veil(d, ["history", "s-f"])
        C.eq((r.returncode, r.stderr.decode()),
             (1, f"veil history: refusing the key cache {cache}: owned by uid 65534, not by you ({remedy})\n"),
             "history: a cache owned by someone else")
    os.unlink(cache)
    # a key cached for another account (the cache sits next to the config, whichever account it names)
    other, _ = keypair()
    fd = os.open(cache, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, (other.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption()).hex() + "\n").encode())
    os.close(fd)
    r = veil(d, ["history", "s-f"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil history: the key cached in {cache} is not this account's: run `veil keys lock`, then "
             "`veil keys unlock`\n"), "history: another account's cached key")
    r = veil(d, ["keys", "status"])
    C.eq(r.stdout.decode().splitlines()[2],  # then the attestation lines
         "unlocked here: no (the cached key is not this account's: run `veil keys lock`)", "keys status: another account's key")
    os.unlink(cache)
    os.mkfifo(cache, 0o600)
    r = veil(d, ["history", "s-f"])
    C.eq((r.returncode, r.stderr.decode()),
         (1, f"veil history: refusing the key cache {cache}: not a regular file ({remedy})\n"), "history: a FIFO cache")
    os.unlink(cache)


def main():
    with TempDir() as tmp:
        fake = Fake()
        try:
            check_terminal_output(tmp, fake)
            check_kdf_allowlist(tmp, fake)
            check_plain_http(tmp, fake)
            check_file_safety(tmp, fake)
        finally:
            fake.stop()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

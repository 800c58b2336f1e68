#!/usr/bin/python3
"""Integration: the web chat page in a real browser (Debian's headless Chromium over
WebDriver) against the full local stack in nitro mode with the simulated NSM (its
root and this veil-enclave's PCRs configured for the page, as `make run` does).

- veild serves the page: CSP, ETag and 304, Cache-Control; config.json carries the
  operator's measurements and root; the vendored Argon2id matches SHA256SUMS and the
  page's Subresource Integrity hash; no file outside the set is reachable;
- a person: signs in with the link's token (it leaves the address bar), creates keys
  (the recovery code shown once and confirmed before upload), sees the attestation
  verified (the PCRs, the root), chats twice in one session (Enter sends, Shift+Enter
  a new line; the answer streams in), reloads and unlocks, reads the history back
  (every exchange's tag verified), a wrong passcode is refused, recovers with the
  code (the same key pair, a new passcode); stop cancels a stream and nothing is
  stored; a session is deleted; a phone-width layout; every control labelled;
- what the server holds: ciphertext only (no prompt in the database or the logs), and
  history tags an independent implementation (Python, from history_tag.h) verifies;
  the page marks tampered history: untagged, forged, reordered, missing;
- keys move: a key made in the page unlocks in the veil CLI, a key made by the CLI
  unlocks in the page and chats;
- attacks: a server that substitutes the enclave key in /enclave/info is refused
  (public-key) and nothing reaches the stream route; a stream cut mid-way is an error
  and nothing is stored; the page's verifier agrees with the real AWS documents;
- another enclave key (many instances): after an enclave restart the page's chat,
  sealed to the old key, is answered 409; the page checks the offered document,
  attests the new key afresh and resends once (the badge shows the new key); a 409
  offering a key its document does not bind is refused (public-key), nothing resent;
- API failures reach the person as clear text (a bad token: 401's message).
Screenshots of the main states go to <build>/web-screenshots/. Skips (exit 77) only
when chromium or chromedriver is not installed.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import base64
import hashlib
import hmac
import http.client
import http.server
import json
import os
import re
import socketserver
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webdriver  # noqa: E402
from veiltest import (BIN, SRC, Checks, Stack, TempDir, call, dev_token, ep_hash, expected_answer,  # noqa: E402
                      free_port, keypair, run)

C = Checks()
SHOTS = os.path.join(os.path.abspath(BIN), "web-screenshots")
P1, P2 = "web-passcode-one", "web-passcode-two"
SECRET_WORD = "zanzibar-plaintext-marker"
LAST_ANSWER = "const a = [...document.querySelectorAll('[data-test=assistant-message]')];" \
              "return a.length ? a[a.length - 1].dataset.state || null : null;"


def shot(b, name):
    os.makedirs(SHOTS, exist_ok=True)
    try:
        b.screenshot(os.path.join(SHOTS, f"{name}.png"))
    except Exception as e:  # a screenshot is for review; the checks decide
        print(f"note: screenshot {name}: {e}")


# ---- a hostile HTTP proxy in front of veild ------------------------------------------

class HostileProxy:
    """Forwards every request to veild. lie_key: /enclave/info answers another enclave
    key (the attestation document still names the real one). cut_after: the chat stream
    is cut (both connections closed) after that many element events. Counts the stream
    requests that reached it."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.lie_key = False
        self.offer = None  # a 409 body the chat stream is answered with
        self.cut_after = None
        self.streams = 0
        self.attacker_pub = keypair()[1]
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                if self.path.startswith("/api/v1/chat/encrypted/stream"):
                    proxy.streams += 1
                    if proxy.offer is not None:
                        data = json.dumps(proxy.offer).encode()
                        self.send_response(409)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                up = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                up.request(self.command, self.path, body=body, headers=headers)
                r = up.getresponse()
                sse = (r.getheader("Content-Type") or "").startswith("text/event-stream")
                data = b"" if sse else r.read()
                if proxy.lie_key and self.path.startswith("/api/v1/chat/enclave/info") and r.status == 200:
                    j = json.loads(data)
                    j["enclave_public_key"] = proxy.attacker_pub
                    data = json.dumps(j).encode()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                if not sse:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not sse:
                    self.wfile.write(data)
                    up.close()
                    return
                elements, buf = 0, b""
                while True:
                    chunk = r.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    buf += chunk
                    elements = buf.count(b'"encrypted_chunk_v3"') + buf.count(b'"thinking_v3"')
                    if proxy.cut_after is not None and elements >= proxy.cut_after:
                        break  # the cut: veild sees its client go, the browser an early end
                up.close()

            do_GET = do_POST = do_PUT = do_DELETE = forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---- an independent history-tag check (src/crypto/history_tag.h) -----------------------

def argon2_unwrap(secret, blob):
    import argon2.low_level as a2
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key = a2.hash_secret_raw(secret.encode(), bytes.fromhex(blob["salt"]), time_cost=4, memory_cost=131072,
                             parallelism=2, hash_len=32, type=a2.Type.ID, version=19)
    return AESGCM(key).decrypt(bytes.fromhex(blob["iv"]),
                               bytes.fromhex(blob["encrypted_private_key"]) + bytes.fromhex(blob["tag"]), None)


def py_history_tags(priv, session_id, messages):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    k = HKDF(algorithm=hashes.SHA512(), length=32, salt=None, info=b"veil-history-v1").derive(priv)
    prev, tags = b"\0" * 32, []
    sid = session_id.encode()
    for u, a in zip(messages[0::2], messages[1::2]):
        msg = (b"veil-history-v1" + len(sid).to_bytes(4, "big") + sid + prev + ep_hash(u["encrypted_content"])
               + ep_hash(a["encrypted_content"]))
        prev = hmac.new(k, msg, hashlib.sha256).digest()
        tags.append(prev.hex())
    return tags


# ---- page helpers ------------------------------------------------------------------------

def error_text(b):
    return b.js("const e = document.getElementById('error');"
                "return e.hidden ? '' : document.getElementById('error-text').textContent;")


class PageError(Exception):
    pass


def wait_screen(b, name, timeout=90):
    """Waits for a screen, failing fast (with the page's error) if an error shows instead."""
    def cond():
        if b.visible(f"#screen-{name}"):
            return True
        err = error_text(b)
        if err:
            raise PageError(f"the page shows an error instead of the {name} screen: {err}")
        return False
    return b.wait_for(cond, timeout, f"the {name} screen")


def chat(b, text, timeout=60):
    """Types text and Enter; returns (state, answer text, error) of the new answer."""
    before = len(b.find_all("[data-test=assistant-message]"))
    b.type("[data-test=message-input]", text + webdriver.ENTER)
    b.wait_for(lambda: len(b.find_all("[data-test=assistant-message]")) > before, 20, "the answer to start")
    state = b.wait_for(lambda: b.js(LAST_ANSWER) not in (None, "streaming") and b.js(LAST_ANSWER), timeout,
                       "the answer to end")
    return state, b.texts("[data-test=assistant-message] .text")[-1], error_text(b)


def marks(b):
    return b.js("return [...document.querySelectorAll('[data-test=history-mark]')].map(e => e.dataset.mark);")


def open_session(b, index=0):
    b.wait_for(lambda: len(b.find_all("[data-test=session-item]")) > index, 20, "the session list")
    b.cmd("POST", f"/element/{b.find_all('[data-test=session-item]')[index]}/click", {})
    b.wait_for(lambda: b.visible("#busy") is False and len(b.find_all("#messages li")) > 0, 30, "the session to open")


def unlock(b, passcode, remember=False):
    wait_screen(b, "unlock")
    b.type("#unlock-passcode", passcode)
    if remember:
        b.click("#unlock-remember")
    b.click("[data-test=unlock]")


def cli(tmp, name, args, env=None):
    e = {"VEIL_CONFIG": os.path.join(tmp, f"{name}.json")}
    e.update(env or {})
    return run([os.path.join(BIN, "veil")] + args, env=e, check=False)


def cli_login(tmp, name, url, token):
    r = run([os.path.join(BIN, "veil"), "login", "--server", url, "--token", "-"],
            env={"VEIL_CONFIG": os.path.join(tmp, f"{name}.json")}, input=token.encode(), check=False)
    C.eq(r.returncode, 0, f"cli login {name}: {r.stderr.decode()}")


# ---- the checks ----------------------------------------------------------------------------

def check_serving(url, tmp):
    st, body, r = call(url, "GET", "/app/")
    C.eq(st, 200, "/app/ serves the page")
    csp = r.getheader("Content-Security-Policy") or ""
    C.ok("script-src 'self' 'wasm-unsafe-eval'" in csp and "default-src 'none'" in csp and "'unsafe-inline'" not in csp
         and "frame-ancestors 'none'" in csp, f"a strict CSP without inline script: {csp}")
    C.eq(r.getheader("Cache-Control"), "no-cache", "the page's files are revalidated at each use")
    etag = r.getheader("ETag")
    C.ok(etag and re.fullmatch(r'"[0-9a-f]{32}"', etag), f"a strong ETag: {etag}")
    html = body.decode() if isinstance(body, bytes) else ""
    C.ok(html and not re.search(r"<script(?![^>]*\bsrc=)", html) and not re.search(r"\son[a-z]+\s*=", html)
         and "style=" not in html, "no inline script, handler or style in index.html")
    st, _, r2 = call(url, "GET", "/app/", headers={"If-None-Match": etag})
    C.eq(st, 304, "If-None-Match with the ETag: 304")
    C.eq(r2.getheader("ETag"), etag, "the 304 names the ETag")
    st, _, _ = call(url, "GET", "/app/", headers={"If-None-Match": '"0123"'})
    C.eq(st, 200, "another ETag: the page again")
    st, _, r3 = call(url, "GET", "/app")
    C.eq((st, r3.getheader("Location")), (307, "/app/"), "/app redirects to /app/")
    for path in ["/app/..%2F..%2FREADME.md", "/app/%2e%2e%2fCMakeLists.txt", "/app/.gitignore", "/app/vendor/README.md",
                 "/app/vendor/..%2Findex.html.bak", "/app/nothing.js"]:
        st, r, _ = call(url, "GET", path)
        C.eq((st, r), (404, {"detail": "Not Found"}), f"{path}: not a file of the page")
    # the vendored Argon2id: the bytes SHA256SUMS names, and the SRI hash index.html carries
    sums = open(os.path.join(SRC, "web/vendor/SHA256SUMS")).read().split("\n")
    for line in filter(None, sums):
        digest, name = line.split()
        st, data, _ = call(url, "GET", f"/app/vendor/{name}")
        C.eq(hashlib.sha256(data if isinstance(data, bytes) else json.dumps(data).encode()).hexdigest(), digest,
             f"vendor/{name} matches SHA256SUMS")
    st, lib, _ = call(url, "GET", "/app/vendor/hash-wasm-argon2.umd.min.js")
    sri = "sha384-" + base64.b64encode(hashlib.sha384(lib).digest()).decode()
    C.ok(f'integrity="{sri}"' in html, "index.html loads the vendored Argon2id with its SRI hash")
    st, lic, _ = call(url, "GET", "/app/vendor/LICENSE")
    C.ok(st == 200 and b"MIT License" in lic, "the vendored library's license is served with it")
    # config.json: the operator's measurements and root, and where they came from
    st, cfg, _ = call(url, "GET", "/app/config.json")
    meas = json.load(open(os.path.join(tmp, "measurements.json")))["Measurements"]
    a = cfg["attestation"] if st == 200 else {}
    C.eq(a.get("measurements", {}).get("pcrs"), {str(i): meas[f"PCR{i}"] for i in range(3)},
         "config.json carries the operator's PCR0-2")
    C.eq(a.get("measurements", {}).get("source"), "VEIL_WEB_MEASUREMENTS", "and says where they came from")
    root = a.get("root", {})
    der = run(["openssl", "x509", "-in", os.path.join(tmp, "nsm", "root.pem"), "-outform", "DER"]).stdout
    C.eq((root.get("source"), root.get("sha256")), ("VEIL_WEB_ATTESTATION_ROOT", hashlib.sha256(der).hexdigest()),
         "config.json carries the configured root and its SHA-256")
    C.ok("simulated NSM root" in root.get("subject", ""), f"and its subject: {root.get('subject')}")


def check_real_documents(b):
    """The page's verifier on the two real AWS documents: every check holds at the
    document's own time up to what veil's enclave states (user_data), a flipped
    signature byte fails `signature`, and now the leaf is expired (`validity`)."""
    exp = json.load(open(os.path.join(SRC, "tests/fixtures/attestation/expected.json")))["documents"][0]
    doc = open(os.path.join(SRC, "tests/fixtures/attestation", exp["file"]), "rb").read()
    script = """
      const [docB64, pub, nonce, ts, flip, done] = arguments;
      Promise.all([import('/app/attest.js'), import('/app/aws-root.js'), import('/app/crypto.js')]).then(async ([A, R, C]) => {
        const doc = Uint8Array.from(atob(docB64), (c) => c.charCodeAt(0));
        if (flip >= 0) doc[doc.length - flip] ^= 1;
        const der = A.pemToDer(R.AWS_ROOT_PEM);
        try {
          await A.verifyDocument(doc, {rootDer: der, nonce: C.unhex(nonce), publicKey: C.unhex(pub),
            userData: 'veil-transport-v1', pcrs: {}, maxAge: 300, maxFuture: 60, now: ts});
          done('ok');
        } catch (e) { done(e.check || String(e)); }
      });"""
    b64 = base64.b64encode(doc).decode()
    at = exp["timestamp_ms"] + 1000
    C.eq(b.js_async(script, b64, exp["public_key"], exp["nonce"], at, -1), "user-data",
         "a real AWS document passes root, chain, validity, signature, age, nonce and key in the page")
    C.eq(b.js_async(script, b64, exp["public_key"], exp["nonce"], at, 5), "signature",
         "a flipped signature byte fails on signature")
    C.eq(b.js_async(script, b64, exp["public_key"], exp["nonce"], int(time.time() * 1000), -1), "validity",
         "the same document now: its leaf certificate has expired")
    C.eq(b.js_async(script, b64, exp["public_key"], "00" * 16, at, -1), "nonce", "another nonce fails on nonce")


def check_labels(b):
    unlabelled = b.js("""return [...document.querySelectorAll('input, textarea, select, button')].filter(e =>
        !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim()).map(e => e.id || e.outerHTML.slice(0, 60));""")
    C.eq(unlabelled, [], "every control has a label or a name")
    tests = b.js("return [...new Set([...document.querySelectorAll('[data-test]')].map(e => e.dataset.test))];")
    for t in ["message-input", "send", "stop", "attestation-badge", "error"]:
        C.ok(t in tests, f"data-test={t} is on the page")


def main():
    why = webdriver.available()
    if why:
        print(f"SKIP: test_web needs Debian's chromium and chromium-driver: {why}")
        return 77
    with TempDir() as tmp:
        stack = Stack(tmp)
        b = None
        proxy = None
        try:
            stack.start_enclave()
            meas = os.path.join(tmp, "measurements.json")
            with open(meas, "wb") as f:
                f.write(run([os.path.join(BIN, "veil"), "attest", "sim-measurements",
                             os.path.join(BIN, "veil-enclave")]).stdout)
            stack.start_veild("nitro", extra={"VEIL_WEB_MEASUREMENTS": meas,
                                              "VEIL_WEB_ATTESTATION_ROOT": os.path.join(tmp, "nsm", "root.pem")})
            url = stack.url
            check_serving(url, tmp)
            b = webdriver.Browser(tmp, free_port())
            flows(b, stack, tmp, url)
            proxy = HostileProxy(stack.veild.port)
            attacks(b, stack, tmp, proxy)
            other_key(b, stack, tmp, proxy)
        except Exception as e:
            import traceback
            traceback.print_exc()
            C.ok(False, f"the browser test ran to its end: {e!r}")
            if b:
                shot(b, "zz-failure")
        finally:
            if b:
                b.stop()
            if proxy:
                proxy.stop()
            codes = stack.stop()
            logs = stack.all_logs()
            C.ok(SECRET_WORD not in logs, "no prompt or answer text in any log")
            C.ok(not any(m in logs for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")),
                 "no sanitizer report in any log")
            C.ok(all(c == 0 for c in codes.values()), f"every process exits cleanly: {codes}")
    return C.finish()


def flows(b, stack, tmp, url):
    tok = dev_token(tmp, "user_web")
    # a bad token: 401's text, on the sign-in screen
    b.go(f"{url}/app/#token=not-a-token")
    b.wait_for(lambda: error_text(b), 30, "the sign-in error")
    C.eq(error_text(b), "Your session token is invalid or expired: sign in again.", "a bad token: a clear message")
    C.ok(b.visible("#screen-signin"), "and the sign-in screen")
    shot(b, "00-signin-error")
    check_labels(b)
    check_real_documents(b)

    # sign in with make run's link, create keys
    b.go(f"{url}/app/#token={tok}")
    wait_screen(b, "create")
    C.ok("token" not in b.url(), f"the token leaves the address bar: {b.url()}")
    shot(b, "01-create-keys")
    b.type("#create-passcode", P1)
    b.type("#create-repeat", P1)
    b.click("[data-test=create-keys]")
    wait_screen(b, "code")
    code = b.text("[data-test=recovery-code]")
    C.ok(re.fullmatch(r"\d{4}(-\d{4}){4}", code) is not None, f"the recovery code is shown: {code}")
    st, _, _ = call(url, "GET", "/api/v1/users/me/keys", tok)
    C.eq(st, 404, "nothing is uploaded before the code is confirmed saved")
    shot(b, "02-recovery-code")
    b.click("[data-test=continue]")
    C.ok(b.visible("#screen-code") and "saved" in error_text(b), "continue without confirming: asked to confirm")
    b.click("[data-test=recovery-saved]")
    b.click("[data-test=continue]")
    wait_screen(b, "chat")
    st, keys, _ = call(url, "GET", "/api/v1/users/me/keys", tok)
    C.eq(st, 200, "confirmed: the wrapped keys are uploaded")
    # the page's key unlocks in the CLI
    cli_login(tmp, "a", url, tok)
    r = cli(tmp, "a", ["keys", "unlock", "--no-cache"], {"VEIL_PASSCODE": P1})
    C.eq(r.returncode, 0, f"a key made in the page unlocks in the CLI: {r.stderr.decode()}")

    # the attestation, verified in the page
    state = b.wait_for(lambda: b.js("return document.querySelector('[data-test=attestation-badge]').dataset.state")
                       not in ("none",) and b.js("return document.querySelector('[data-test=attestation-badge]').dataset.state"),
                       30, "the attestation")
    C.eq(state, "simulated", "the badge: verified, and says the NSM is simulated")
    b.click("[data-test=attestation-badge]")
    details = b.text("#attest-panel")
    pcrs = json.load(open(os.path.join(tmp, "measurements.json")))["Measurements"]
    C.ok(all(pcrs[f"PCR{i}"] in details for i in range(3)) and "PCR0, PCR1, PCR2 matched" in details,
         "the details show the PCRs that matched")
    C.ok("VEIL_WEB_MEASUREMENTS" in details and "VEIL_WEB_ATTESTATION_ROOT" in details and "simulated NSM root" in details,
         "and where the measurements and the root came from")
    shot(b, "03-attested")
    b.click("[data-test=attestation-badge]")

    # chat twice in one session: Enter sends, Shift+Enter is a new line
    state, text, err = chat(b, f"[[sim: chunks=3]] first {SECRET_WORD}")
    C.eq((state, text, err), ("done", expected_answer(f"first {SECRET_WORD}", 3), ""), "the first answer streams in")
    b.type("[data-test=message-input]", "[[sim: chunks=2]] two" + webdriver.SHIFT + webdriver.ENTER + webdriver.RELEASE
           + "lines")
    C.eq(b.js("return document.querySelector('[data-test=message-input]').value"), "[[sim: chunks=2]] two\nlines",
         "Shift+Enter: a new line, nothing sent")
    b.type("[data-test=message-input]", webdriver.ENTER, clear=False)
    b.wait_for(lambda: len(b.find_all("[data-test=assistant-message]")) == 2 and b.js(LAST_ANSWER) == "done", 60,
               "the second answer")
    C.eq(b.texts("[data-test=assistant-message] .text")[-1], expected_answer("two\nlines", 2),
         "the second answer, in the same session")
    C.eq(len(b.find_all("[data-test=session-item]")), 1, "one session in the list")
    shot(b, "04-chat")
    st, sl, _ = call(url, "GET", "/api/v1/chat/sessions", tok)
    sid = sl["sessions"][0]["id"]
    C.eq(sl["sessions"][0]["name"], "New Chat", "the session's name says nothing of the conversation")
    st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)
    m = msgs["messages"]
    C.eq([x["role"] for x in m], ["user", "assistant", "user", "assistant"], "two exchanges stored")
    priv = argon2_unwrap(P1, keys)
    C.eq([x.get("history_tag") for x in m[1::2]], py_history_tags(priv, sid, m),
         "the page's history tags verify with an independent implementation")
    db = open(os.path.join(tmp, "data", "veil.db"), "rb").read()
    for extra in ("veil.db-wal",):
        p = os.path.join(tmp, "data", extra)
        if os.path.exists(p):
            db += open(p, "rb").read()
    C.ok(SECRET_WORD.encode() not in db, "the database holds no plaintext")

    # reload: the tab stays signed in, the key is not kept; unlock and read the history
    b.go(f"{url}/app/")
    unlock(b, P1)
    wait_screen(b, "chat")
    open_session(b)
    C.eq(b.texts("[data-test=user-message] .text"), [f"[[sim: chunks=3]] first {SECRET_WORD}", "[[sim: chunks=2]] two\nlines"],
         "the history, decrypted in the page")
    C.eq(b.texts("[data-test=assistant-message] .text"), [expected_answer(f"first {SECRET_WORD}", 3),
                                                          expected_answer("two\nlines", 2)], "both answers")
    C.eq(marks(b), ["verified", "verified"], "every exchange's tag verified")
    shot(b, "05-history")
    model = b.js("const s = document.querySelector('[data-test=model-select]'); s.selectedIndex = s.options.length - 1;"
                 "s.dispatchEvent(new Event('change')); return s.value;")
    state, text, _ = chat(b, "[[sim: chunks=2]] third")
    C.eq((state, text), ("done", expected_answer("third", 2)), "a past session goes on, its history sent along")
    st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)
    C.eq(msgs["messages"][-1]["model_used"], model, "the model picked in the page answers")

    # lock; a wrong passcode; recover with the code
    b.click("[data-test=lock]")
    wait_screen(b, "unlock")
    C.eq(b.find_all("#messages li"), [], "lock clears the conversation")
    unlock(b, "not-the-passcode")
    b.wait_for(lambda: error_text(b), 60, "the wrong passcode's error")
    C.eq(error_text(b), "Wrong passcode.", "a wrong passcode is refused, clearly")
    C.ok(b.visible("#screen-unlock"), "and the page stays locked")
    shot(b, "06-wrong-passcode")
    b.click("[data-test=recover-link]")
    wait_screen(b, "recover")
    b.type("#recover-code", code)
    b.type("#recover-passcode", P2)
    b.type("#recover-repeat", P2)
    b.click("[data-test=recover]")
    wait_screen(b, "code")
    code2 = b.text("[data-test=recovery-code]")
    C.ok(re.fullmatch(r"\d{4}(-\d{4}){4}", code2) and code2 != code, "recovery shows a new recovery code")
    b.click("[data-test=recovery-saved]")
    b.click("[data-test=continue]")
    wait_screen(b, "chat")
    st, keys2, _ = call(url, "GET", "/api/v1/users/me/keys", tok)
    C.eq(keys2["public_key"], keys["public_key"], "recovery keeps the key pair")
    C.eq(cli(tmp, "a", ["keys", "unlock", "--no-cache"], {"VEIL_PASSCODE": P1}).returncode, 1,
         "the old passcode no longer unlocks (CLI)")
    C.eq(cli(tmp, "a", ["keys", "unlock", "--no-cache"], {"VEIL_PASSCODE": P2}).returncode, 0,
         "the new one does (CLI)")
    open_session(b)
    C.eq(len(b.find_all("[data-test=assistant-message]")), 3, "the history still reads after recovery")

    # remember on this device: a reload unlocks from IndexedDB; lock forgets it
    b.click("[data-test=lock]")
    unlock(b, P2, remember=True)
    wait_screen(b, "chat")
    b.go(f"{url}/app/")
    wait_screen(b, "chat", 30)
    C.ok(True, "a remembered key unlocks after a reload")
    extractable = b.js_async("""const done = arguments[0];
        const rq = indexedDB.open('veil-keys'); rq.onsuccess = () => { const t = rq.result.transaction('unlocked');
        const g = t.objectStore('unlocked').getAll(); g.onsuccess = () => done(g.result.map(v => [v.key.extractable,
        v.historyKey.extractable, v.key.type])); };""")
    C.eq(extractable, [[False, False, "private"]], "the remembered keys are non-extractable CryptoKeys")
    b.click("[data-test=lock]")
    wait_screen(b, "unlock")
    b.go(f"{url}/app/")
    wait_screen(b, "unlock", 30)
    C.ok(True, "after lock, a reload asks for the passcode again")
    unlock(b, P2)
    wait_screen(b, "chat")

    tampered_history(b, tmp, sid)
    stop_and_delete(b, stack, url, tok)

    # phone width
    b.resize(390, 844)
    state, text, _ = chat(b, "[[sim: chunks=2]] on a phone")
    C.eq((state, text), ("done", expected_answer("on a phone", 2)), "a chat at phone width")
    overflow = b.js("return document.documentElement.scrollWidth - window.innerWidth;")
    C.ok(overflow <= 0, f"no horizontal scrolling at phone width ({overflow} px)")
    C.ok(b.visible("[data-test=message-input]") and b.visible("[data-test=send]"), "the composer fits on a phone")
    shot(b, "08-phone")
    b.resize(1200, 900)

    # a key made by the CLI unlocks in the page
    tok_b = dev_token(tmp, "user_cli_made")
    cli_login(tmp, "b", url, tok_b)
    r = cli(tmp, "b", ["keys", "init"], {"VEIL_PASSCODE": "cli-made-passcode"})
    C.eq(r.returncode, 0, f"the CLI makes keys: {r.stderr.decode()}")
    b.click("[data-test=sign-out]")
    b.go(f"{url}/app/#token={tok_b}")
    unlock(b, "cli-made-passcode")
    wait_screen(b, "chat")
    state, text, _ = chat(b, "[[sim: chunks=2]] from the cli's key")
    C.eq((state, text), ("done", expected_answer("from the cli's key", 2)), "a key made by the CLI unlocks and chats in the page")
    r = cli(tmp, "b", ["sessions"])
    C.ok(r.returncode == 0 and len([x for x in r.stdout.decode().splitlines() if x.strip()]) >= 1,
         f"and the CLI lists the page's session: {r.stdout.decode()[:200]}")


def db_exec(tmp, sql, args=()):
    con = sqlite3.connect(os.path.join(tmp, "data", "veil.db"), timeout=30)
    try:
        rows = con.execute(sql, args).fetchall()
        con.commit()
        return rows
    finally:
        con.close()


def tampered_history(b, tmp, sid):
    """The server changes the stored history; the page marks each change."""
    rows = db_exec(tmp, "SELECT id, role, created_at, history_tag FROM messages WHERE session_id = ? ORDER BY created_at",
                   (sid,))
    C.eq(len(rows), 6, "three exchanges to tamper with")
    (u1, a1), (u2, a2), (u3, a3) = [(rows[i], rows[i + 1]) for i in (0, 2, 4)]

    def reopen():
        b.click("[data-test=new-chat]")
        open_session(b)
        return marks(b)

    db_exec(tmp, "UPDATE messages SET history_tag = NULL WHERE id = ?", (a3[0],))
    C.eq(reopen(), ["verified", "verified", "untagged"], "a tag removed: untagged")
    db_exec(tmp, "UPDATE messages SET history_tag = ? WHERE id = ?", (os.urandom(32).hex(), a3[0]))
    C.eq(reopen(), ["verified", "verified", "forged"], "a tag replaced: forged")
    db_exec(tmp, "UPDATE messages SET history_tag = ? WHERE id = ?", (a3[3], a3[0]))
    C.eq(reopen(), ["verified", "verified", "verified"], "restored: verified")
    # exchange 2 after exchange 3
    for (mid, _, created, _), new in [(u2, "9999-01-01T00:00:01"), (a2, "9999-01-01T00:00:02")]:
        db_exec(tmp, "UPDATE messages SET created_at = ? WHERE id = ?", (new, mid))
    C.eq(reopen(), ["verified", "reordered", "reordered"], "two exchanges swapped: reordered")
    shot(b, "07-tampered-history")
    for row in (u2, a2):
        db_exec(tmp, "UPDATE messages SET created_at = ? WHERE id = ?", (row[2], row[0]))
    db_exec(tmp, "DELETE FROM messages WHERE id IN (?, ?)", (u1[0], a1[0]))
    C.eq(reopen(), ["missing", "verified"], "the first exchange removed: the next one says one is missing")


def stop_and_delete(b, stack, url, tok):
    st, sl, _ = call(url, "GET", "/api/v1/chat/sessions", tok)
    sid = sl["sessions"][0]["id"]
    count = len(call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)[1]["messages"])
    gone = stack.veild.text().count("event=stream_client_gone")
    b.type("[data-test=message-input]", "[[sim: chunks=60 interval-ms=100]] stop me" + webdriver.ENTER)
    b.wait_for(lambda: b.visible("[data-test=stop]") and b.texts("[data-test=assistant-message] .text")[-1], 30,
               "the answer to start")
    b.click("[data-test=stop]")
    b.wait_for(lambda: b.js(LAST_ANSWER) == "failed", 30, "the stop")
    C.eq(error_text(b), "Stopped: nothing was stored.", "stop cancels the stream")
    C.ok(stack.veild.wait_log("event=stream_client_gone", 30, gone + 1), "veild cancels the enclave request")
    C.eq(len(call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)[1]["messages"]), count,
         "a stopped chat stores nothing")
    C.ok(b.visible("[data-test=send]") and not b.visible("[data-test=stop]"), "the send button is back")
    # delete a session: a second click confirms
    n = len(b.find_all("[data-test=session-item]"))
    b.click("[data-test=delete-session]")
    C.eq(len(b.find_all("[data-test=session-item]")), n, "one click on delete only asks")
    b.click("[data-test=delete-session]")
    b.wait_for(lambda: len(b.find_all("[data-test=session-item]")) == n - 1, 30, "the deletion")
    C.eq(call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)[0], 404, "the session is deleted on the server")


def attacks(b, stack, tmp, proxy):
    tok = dev_token(tmp, "user_web_victim")
    # keys made in the page, through the proxy (honest for now)
    b.click("[data-test=sign-out]")
    b.go(f"{proxy.url}/app/#token={tok}")
    wait_screen(b, "create")
    b.type("#create-passcode", P1)
    b.type("#create-repeat", P1)
    b.click("[data-test=create-keys]")
    wait_screen(b, "code")
    b.click("[data-test=recovery-saved]")
    b.click("[data-test=continue]")
    wait_screen(b, "chat")
    b.wait_for(lambda: b.js("return document.querySelector('[data-test=attestation-badge]').dataset.state") != "none",
               30, "the attestation")
    # a stream cut mid-way: an error, nothing stored
    state, _, _ = chat(b, "[[sim: chunks=1]] a stored first exchange")
    C.eq(state, "done", "through the proxy, a chat works")
    st, sl, _ = call(proxy.url, "GET", "/api/v1/chat/sessions", tok)
    sid = sl["sessions"][0]["id"]
    gone = stack.veild.text().count("event=stream_client_gone")
    proxy.cut_after = 2
    state, text, err = chat(b, "[[sim: chunks=40 interval-ms=50]] cut me off")
    proxy.cut_after = None
    C.eq((state, err), ("failed", "The answer was cut off before it ended: nothing was stored. Retry."),
         f"a stream cut mid-way is an error ({text!r})")
    C.ok(stack.veild.wait_log("event=stream_client_gone", 30, gone + 1), "veild cancels the cut stream's enclave request")
    C.eq(len(call(stack.url, "GET", f"/api/v1/chat/sessions/{sid}/messages", tok)[1]["messages"]), 2,
         "the cut stream stored nothing")
    shot(b, "09-stream-cut")
    # a server that lies about the enclave key: refused before anything is sealed
    proxy.lie_key = True
    streams = proxy.streams
    b.go(f"{proxy.url}/app/")
    unlock(b, P1)
    # (the refusal may show before the chat screen does: wait for the refusal itself)
    b.wait_for(lambda: b.js("return document.querySelector('[data-test=attestation-badge]').dataset.state") == "refused",
               30, "the refusal")
    C.ok("(public-key)" in error_text(b) and "Nothing was sent" in error_text(b),
         f"a substituted enclave key is refused, naming the check: {error_text(b)}")
    b.click("#error-close")
    b.type("[data-test=message-input]", "[[sim: chunks=2]] do not send me" + webdriver.ENTER)
    b.wait_for(lambda: "(public-key)" in error_text(b), 30, "the refusal again")
    C.eq(proxy.streams, streams, "nothing reached the stream route")
    C.eq(b.js("return document.querySelector('[data-test=message-input]').value"), "[[sim: chunks=2]] do not send me",
         "the message stays in the composer")
    b.click("[data-test=attestation-badge]")
    C.ok("public-key" in b.text("#attest-panel"), "the badge's panel says why")
    shot(b, "10-key-substituted")
    proxy.lie_key = False


def badge_key(b):
    b.click("[data-test=attestation-badge]")
    text = b.text("#attest-panel")
    b.click("[data-test=attestation-badge]")
    m = re.search(r"[0-9a-f]{64}", text.split("Enclave key", 1)[-1])
    return m.group(0) if m else None


def other_key(b, stack, tmp, proxy):
    """The 409 a chat sealed to another enclave key gets (as from another instance
    behind a load balancer, or here a restarted enclave): verified and resent once."""
    tok = dev_token(tmp, "user_web_victim")
    if b.visible("#error"):
        b.click("#error-close")
    if b.visible("#attest-panel"):
        b.click("[data-test=attestation-badge]")
    state, _, err = chat(b, "[[sim: chunks=1]] before the new key")
    C.eq((state, err), ("done", ""), "through the honest proxy, a chat works (the key attested again)")
    old = call(stack.url, "GET", "/api/v1/chat/enclave/info", tok)[1]["enclave_public_key"]
    C.eq(badge_key(b), old, "the badge shows the attested key")
    stack.start_enclave()  # a new key pair; veild learns it, the page still holds the old one
    fresh = lambda: (lambda i, h: i.get("enclave_public_key") not in (None, old) and h.get("has_credentials"))(  # noqa: E731
        call(stack.url, "GET", "/api/v1/chat/enclave/info", tok)[1],
        call(stack.url, "GET", "/api/v1/chat/enclave/health", tok)[1])
    C.ok(b.wait_for(fresh, 60, "veild to know the new enclave"), "veild knows the new key")
    new = call(stack.url, "GET", "/api/v1/chat/enclave/info", tok)[1]["enclave_public_key"]
    refused = stack.veild.text().count("reason=other_enclave_key")
    streams = proxy.streams
    state, text, err = chat(b, "[[sim: chunks=2]] after the new key")
    C.eq((state, text, err), ("done", expected_answer("after the new key", 2), ""),
         "sealed to the old key: 409, the new key verified, resent once, answered")
    C.eq(stack.veild.text().count("reason=other_enclave_key"), refused + 1, "veild answered the first send 409")
    C.eq(proxy.streams, streams + 2, "two sends: the refused one and the retry")
    C.eq(badge_key(b), new, "the badge shows the new key")
    shot(b, "11-other-key-resent")
    # attack: a 409 offering the attacker's key with the enclave's (cached) document
    genuine = call(stack.url, "GET", "/api/v1/chat/enclave/info", tok)[1]
    proxy.offer = {"detail": "The request was sealed to another enclave key; verify this instance's attestation "
                             "and retry", "enclave_public_key": proxy.attacker_pub, "attestation": genuine["attestation"]}
    streams = proxy.streams
    state, _, err = chat(b, "[[sim: chunks=2]] never resent")
    proxy.offer = None
    C.ok(state == "failed" and "(public-key)" in err and "Nothing was sent" in err,
         f"a 409 offering a key its document does not bind: refused on public-key ({err})")
    C.eq(proxy.streams, streams + 1, "nothing resent after that 409")
    C.eq(b.js("return document.querySelector('[data-test=message-input]').value"), "[[sim: chunks=2]] never resent",
         "the message stays in the composer")
    shot(b, "12-offer-refused")


if __name__ == "__main__":
    sys.exit(main())

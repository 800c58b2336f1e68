#!/usr/bin/python3
"""The seed's success criteria, end to end on the full local stack (real processes:
veil-bedrock-sim, veil-imds-sim, veil-proxy, veil-enclave, veild), plus the SSE
stream of veild in both modes with every enclave failure.

  1. the chat suite passes with ENCLAVE_MODE=mock
  2. veild connects to the enclave (nitro mode over a unix socket)
  3. /chat/enclave/info equals the enclave's own GET_PUBLIC_KEY
  4. CHAT_STREAM chunks only the client can decrypt; no plaintext in the DB or any log
  5. credentials refresh automatically (short-lived IMDS credentials)
  6. the health endpoint reports up, down and back (and a restarted enclave's new key
     and credentials are picked up)
  7. the original routes answer with their methods and statuses
  8. rollback: one client session works across nitro -> mock -> nitro

VEIL_E2E_SCOPE=enclave (ctest's test_e2e_w2, with ENCLAVE_WORKERS=2) runs only what
reaches veil-enclave: 2, 3, 4, 5, 6 (the mock mode, PostgreSQL, the routes table and
the rollback are veild's alone and run once, in test_e2e).
"""
import glob
import json
import os
import socket
import sys
import time

from cryptography.exceptions import InvalidTag

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (Checks, Postgres, Stack, TempDir, call, dev_token, expected_answer, keypair,  # noqa: E402
                      ep_hash, open_ep, seal, sse, sv3_key, sv3_open, sv3_request, wait_for)

MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
ENCLAVE_ONLY = os.environ.get("VEIL_E2E_SCOPE") == "enclave"
STREAM = "/api/v1/chat/encrypted/stream"
CANARY = "CANARY-e2e-4b9f6a1c"
C = Checks()


def setup_user(url, token):
    call(url, "POST", "/api/v1/users/sync", token)
    priv, pub = keypair()
    body = {"public_key": pub, "encrypted_private_key": "ab" * 32, "iv": "11" * 16, "tag": "22" * 16,
            "salt": "33" * 32, "recovery_encrypted_private_key": "cd" * 32, "recovery_iv": "44" * 16,
            "recovery_tag": "55" * 16, "recovery_salt": "66" * 32}
    st, r, _ = call(url, "POST", "/api/v1/users/me/keys", token, body)
    C.eq(st, 201, f"key upload {r}")
    return priv


def enclave_key(url, token):
    st, r, _ = call(url, "GET", "/api/v1/chat/enclave/info", token)
    C.eq(st, 200, "enclave info")
    return r["enclave_public_key"] if st == 200 else None


def chat(url, token, prompt, session=None, history=None, key=None, fmt=None):
    tpriv, tpub = keypair()
    key = key or enclave_key(url, token)
    hist = [dict(seal(key, t, "client-to-enclave-transport"), role=r) for r, t in (history or [])]
    body = {"session_id": session, "model": MODEL, "encrypted_message": seal(key, prompt, "client-to-enclave-transport"),
            "encrypted_history": hist, "client_transport_public_key": tpub}
    if fmt:
        body["stream_format"] = fmt
    st, events = sse(url, STREAM, token, body)
    return st, events, tpriv


def answer_of(events, tpriv):
    return "".join(open_ep(tpriv, e["encrypted_content"], "enclave-to-client-transport").decode()
                   for e in events if e.get("type") == "encrypted_chunk")


def tpub_of(priv):
    from cryptography.hazmat.primitives import serialization
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def count_sessions(url, token):
    st, r, _ = call(url, "GET", "/api/v1/chat/sessions?limit=100", token)
    return r["total"] if st == 200 else -1


def count_messages(url, token, session):
    st, r, _ = call(url, "GET", f"/api/v1/chat/sessions/{session}/messages", token)
    return len(r["messages"]) if st == 200 else -1


def stream_suite(stack, token, upriv, mode):
    url = stack.url
    # success: the original's event order and shapes
    st, ev, tpriv = chat(url, token, "[[sim: chunks=12]] hello " + mode)
    C.eq(st, 200, f"{mode}: stream status")
    types = [e["type"] for e in ev]
    C.ok(types[0] == "session" and types[-2:] == ["stored", "done"] and types.count("encrypted_chunk") == 12,
         f"{mode}: event order {types}")
    C.eq(answer_of(ev, tpriv), expected_answer("hello " + mode, 12), f"{mode}: reassembled answer")
    stored = [e for e in ev if e["type"] == "stored"][0]
    C.eq(stored["model_used"], MODEL, f"{mode}: model_used")
    C.eq(stored["output_tokens"], 12, f"{mode}: output tokens")
    sid = ev[0]["session_id"]
    st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
    C.eq([m["role"] for m in msgs["messages"]], ["user", "assistant"], f"{mode}: stored roles")
    C.eq(open_ep(upriv, msgs["messages"][0]["encrypted_content"], "user-message-storage").decode(),
         "[[sim: chunks=12]] hello " + mode, f"{mode}: stored user message")
    C.eq(open_ep(upriv, msgs["messages"][1]["encrypted_content"], "assistant-message-storage").decode(),
         expected_answer("hello " + mode, 12), f"{mode}: stored assistant message")
    # continue the session with history
    st, ev, tpriv = chat(url, token, "again", session=sid,
                         history=[("user", "[[sim: chunks=12]] hello " + mode), ("assistant", "whatever")])
    C.ok(st == 200 and ev[-1]["type"] == "done", f"{mode}: second turn")
    st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
    C.eq(len(msgs["messages"]), 4, f"{mode}: four messages after two turns")

    # stream format 3 in this mode: the bound request; every element opens in order, and
    # the end element names the stored messages (test_format3 and test_cli_bound attack it)
    key = enclave_key(url, token)
    st, sess, _ = call(url, "POST", "/api/v1/chat/sessions", token, {"name": "bound"})
    tpriv, tpub = keypair()
    upub = tpub_of(upriv)
    ep, rh = sv3_request(key, "[[sim: chunks=9]] format three " + mode, [], tpub, upub, MODEL, sess["id"])
    st, ev = sse(url, STREAM, token, {"stream_format": 3, "encrypted_request": ep, "model": MODEL,
                                       "client_transport_public_key": tpub, "session_id": sess["id"]})
    types = [e["type"] for e in ev] if st == 200 else [st]
    C.eq(types, ["session", "stream_key"] + ["encrypted_chunk_v3"] * 9 + ["stored", "done"],
         f"{mode}: format 3 events")
    if len(ev) == 13:
        k = sv3_key(tpriv, key, ev[1], rh)
        chunks = ev[2:11]
        text = "".join(sv3_open(k, i, 0, c["ciphertext"], c["auth_tag"]).decode() for i, c in enumerate(chunks))
        C.eq(text, expected_answer("format three " + mode, 9), f"{mode}: format 3 answer")
        end = ev[11]["stream_end"]
        msgs = call(url, "GET", f"/api/v1/chat/sessions/{sess['id']}/messages", token)[1]["messages"]
        C.eq(sv3_open(k, 9, 1, end["ciphertext"], end["auth_tag"]),
             ep_hash(msgs[0]["encrypted_content"]) + ep_hash(msgs[1]["encrypted_content"]),
             f"{mode}: format 3 end names the stored messages")
        # a reordered stream does not open: GCM refuses the tag
        C.raises(InvalidTag, f"{mode}: format 3 reorder detected",
                 sv3_open, k, 0, 0, chunks[1]["ciphertext"], chunks[1]["auth_tag"])
    # format 2 was replaced by format 3: refused, as any unknown format
    st, r, _ = chat(url, token, "[[sim: chunks=2]] format two", fmt=2)
    C.eq((st, [(d["loc"], d["msg"]) for d in r["detail"]] if st == 422 else r),
         (422, [(["body", "stream_format"], "Input should be 1 or 3")]), f"{mode}: stream_format 2 is a 422")
    st, r, _ = call(url, "POST", STREAM, token, {"model": MODEL, "stream_format": 3,
                                                 "encrypted_message": seal(tpub_of(tpriv), "x", "t"),
                                                 "client_transport_public_key": tpub_of(tpriv)})
    C.eq(st, 422, f"{mode}: stream_format 3 is a 422")

    # every enclave failure: one error event, no done, nothing stored
    faults = {"fault=http-429": "busy", "fault=http-500": "failed", "fault=http-400": "rejected",
              "fault=throttle": "busy", "fault=validation": "rejected", "fault=model-error": "failed",
              "fault=bad-crc chunks=6": "failed", "fault=drop chunks=10": "failed",
              "fault=empty": "empty answer", "fault=hang": "timed out"}
    for directive, words in faults.items():
        before = count_sessions(url, token)
        st, ev, _ = chat(url, token, f"[[sim: {directive}]] boom")
        types = [e["type"] for e in ev]
        C.ok(st == 200 and types[-1] == "error" and "done" not in types and "stored" not in types,
             f"{mode}: {directive}: events {types}")
        msg = ev[-1].get("message", "")
        C.ok(words in msg, f"{mode}: {directive}: message {msg!r} should mention {words!r}")
        C.ok("HTTP" not in msg and "Exception" not in msg and "[[" not in msg,
             f"{mode}: {directive}: no raw upstream text in {msg!r}")
        # the new chat's row exists from its first event (the client may retry in it),
        # and holds nothing: messages are stored only when a stream completes
        C.eq(count_sessions(url, token), before + 1, f"{mode}: {directive}: the announced session is listed")
        C.eq(count_messages(url, token, ev[0].get("session_id")), 0, f"{mode}: {directive}: nothing stored")
    # a failure inside an existing session adds no message
    st, ev, _ = chat(url, token, "[[sim: fault=drop]] x", session=sid)
    st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
    C.eq(len(msgs["messages"]), 4, f"{mode}: failed turn stores nothing")
    # a transport message sealed to the wrong key
    other_priv, other_pub = keypair()
    st, ev, _ = chat(url, token, "not for the enclave", key=other_pub)
    C.ok(ev[-1]["type"] == "error" and "decrypt" in ev[-1]["message"], f"{mode}: wrong key -> {ev[-1]}")
    # checks before any SSE byte
    st, r, _ = call(url, "POST", STREAM, token, {"model": MODEL})
    C.eq(st, 422, f"{mode}: 422 without encrypted_message")
    st, r, _ = call(url, "POST", STREAM, token, {"model": "gpt-4", "encrypted_message": seal(other_pub, "x", "t"),
                                                 "client_transport_public_key": other_pub})
    C.ok(st == 400 and "model" in r["detail"], f"{mode}: 400 unknown model {r}")
    st, r, _ = call(url, "POST", STREAM, token, {"model": MODEL, "session_id": "no-such-session",
                                                 "encrypted_message": seal(other_pub, "x", "t"),
                                                 "client_transport_public_key": other_pub})
    C.eq(st, 404, f"{mode}: 404 foreign session")


def client_disconnect(stack, token, mode):
    """The client goes away mid-stream: the enclave request is cancelled, nothing stored."""
    import http.client
    url = stack.url
    key = enclave_key(url, token)
    tpriv, tpub = keypair()
    before = count_sessions(url, token)
    body = {"model": MODEL, "encrypted_message": seal(key, "[[sim: chunks=100 interval-ms=50]] slow", "client-to-enclave-transport"),
            "client_transport_public_key": tpub}
    c = http.client.HTTPConnection(url.split("//")[1], timeout=10)
    c.request("POST", STREAM, body=json.dumps(body), headers={"Authorization": f"Bearer {token}",
                                                              "Content-Type": "application/json"})
    r = c.getresponse()
    got = b""
    while got.count(b"encrypted_chunk") < 2:
        got += r.read1(4096)
    session = json.loads(got.split(b"\n\n", 1)[0][len(b"data: "):])["session_id"]
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    log = stack.enclave if mode == "nitro" else stack.veild
    C.ok(log.wait_log("event=request_cancelled", 10), f"{mode}: upstream request cancelled on disconnect")
    C.ok(stack.veild.wait_log("event=stream_client_gone", 10), f"{mode}: veild saw the client leave")
    time.sleep(0.3)
    C.eq(count_sessions(url, token), before + 1, f"{mode}: the announced session stays after a disconnect")
    C.eq(count_messages(url, token, session), 0, f"{mode}: nothing stored after a disconnect")


def raw_enclave(addr, cmd):
    s = socket.socket(socket.AF_UNIX)
    s.connect(addr.split(":", 1)[1])
    s.sendall(json.dumps({"command": cmd}).encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        data += s.recv(65536)
    s.close()
    return json.loads(data)


ROUTES = [  # (method, path, needs auth): every route of the original (spec §4)
    ("GET", "/", False), ("GET", "/health", False), ("GET", "/protected", True),
    ("GET", "/api/v1/chat/models", False), ("GET", "/api/v1/chat/enclave/info", True),
    ("GET", "/api/v1/chat/enclave/health", True), ("GET", "/api/v1/chat/sessions", True),
    ("POST", "/api/v1/chat/sessions", True), ("DELETE", "/api/v1/chat/sessions", True),
    ("GET", "/api/v1/chat/sessions/x/messages", True), ("DELETE", "/api/v1/chat/sessions/x", True),
    ("POST", "/api/v1/chat/encrypted/stream", True), ("GET", "/api/v1/chat/encryption-status", True),
    ("POST", "/api/v1/users/sync", True), ("GET", "/api/v1/users/me/encryption-status", True),
    ("POST", "/api/v1/users/me/keys", True), ("GET", "/api/v1/users/me/keys", True),
    ("GET", "/api/v1/users/me/keys/recovery", True), ("DELETE", "/api/v1/users/me/keys", True),
    ("GET", "/api/v1/users/u/public-key", True), ("GET", "/api/v1/users/me/memberships", True),
    ("POST", "/api/v1/organizations/sync", True), ("GET", "/api/v1/organizations/current", True),
    ("GET", "/api/v1/organizations/", True), ("GET", "/api/v1/organizations/context", True),
    ("PUT", "/api/v1/organizations/context", True), ("GET", "/api/v1/organizations/o/encryption-status", True),
    ("POST", "/api/v1/organizations/o/keys", True), ("GET", "/api/v1/organizations/o/pending-distributions", True),
    ("POST", "/api/v1/organizations/o/distribute-key", True),
    ("POST", "/api/v1/organizations/o/distribute-keys-bulk", True),
    ("GET", "/api/v1/organizations/o/membership", True), ("POST", "/api/v1/organizations/o/revoke-key/u", True),
    ("GET", "/api/v1/organizations/o/admin-recovery-key", True), ("GET", "/api/v1/organizations/o/members", True),
    ("GET", "/api/v1/context/", True), ("PUT", "/api/v1/context/", True),
]


def routes_table(stack, token):
    for method, path, auth in ROUTES:
        st, r, _ = call(stack.url, method, path)
        if auth:
            C.eq(st, 403, f"route {method} {path} without a token")
            C.eq(r, {"detail": "Not authenticated"}, f"route {method} {path} 403 body")
            st, r, _ = call(stack.url, method, path, "not-a-jwt")
            C.eq(st, 401, f"route {method} {path} with a bad token")
        else:
            C.ok(st in (200, 503), f"route {method} {path} -> {st}")
        body = {} if method in ("POST", "PUT") else None
        st, r, _ = call(stack.url, method, path, token, body)
        C.ok(st not in (404, 405, 500) or (st == 404 and isinstance(r, dict) and r.get("detail") != "Not Found"),
             f"route {method} {path} exists (got {st} {r})")
    st, r, _ = call(stack.url, "GET", "/api/v1/context", token)
    C.eq(st, 307, "slash-less /api/v1/context redirects")
    st, r, _ = call(stack.url, "GET", "/api/v1/debug/encryption/report", token)
    C.eq(st, 404, "debug report is off by default")
    st, r, _ = call(stack.url, "POST", "/api/v1/webhooks/clerk", None, {"type": "user.created"})
    C.eq(st, 400, "webhook without svix headers")


def no_plaintext(stack, tmp):
    blobs = []
    for f in glob.glob(os.path.join(tmp, "data", "*")):
        with open(f, "rb") as fh:
            blobs.append(fh.read())
    C.ok(blobs and not any(CANARY.encode() in b for b in blobs), "no canary in the database files")
    for name, p in stack.procs.items():
        C.ok(CANARY not in p.text(), f"no canary in the {name} log")


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            token = dev_token(tmp, "user_e2e")
            stack.start_enclave()
            if not ENCLAVE_ONLY:
                # 1. mock mode
                stack.start_veild("mock")
                upriv = setup_user(stack.url, token)
                st, h, _ = call(stack.url, "GET", "/api/v1/chat/enclave/health", token)
                C.ok(st == 200 and h["mode"] == "mock", f"1: mock health {h}")
                stream_suite(stack, token, upriv, "mock")
                client_disconnect(stack, token, "mock")

            # 2. nitro: veild reaches the enclave over the unix socket and pushes credentials
            stack.start_veild("nitro")
            h = wait_for(lambda: (lambda s: s[1] if s[0] == 200 and s[1].get("has_credentials") else None)(
                call(stack.url, "GET", "/api/v1/chat/enclave/health", token)))
            C.ok(h and h["status"] == "healthy" and h["mode"] == "nitro", f"2: nitro health {h}")
            if ENCLAVE_ONLY:
                upriv = setup_user(stack.url, token)
            # 3. the key through veild is the enclave's own
            own = raw_enclave(stack.enclave_addr, "GET_PUBLIC_KEY")["public_key"]
            C.eq(enclave_key(stack.url, token), own, "3: /enclave/info equals the enclave's key")
            if os.environ.get("ENCLAVE_WORKERS"):  # ctest sets it: the run is the one it names
                C.eq(raw_enclave(stack.enclave_addr, "HEALTH")["workers"], int(os.environ["ENCLAVE_WORKERS"]),
                     "3: the enclave runs the workers ENCLAVE_WORKERS names")
            stream_suite(stack, token, upriv, "nitro")
            client_disconnect(stack, token, "nitro")

            # 4. only the client decrypts the chunks; no plaintext anywhere on the server side
            st, ev, tpriv = chat(stack.url, token, f"[[sim: chunks=5]] {CANARY}")
            C.ok(CANARY in answer_of(ev, tpriv), "4: the client reads the answer")
            chunk = [e for e in ev if e["type"] == "encrypted_chunk"][0]["encrypted_content"]
            for who, k in (("a stranger", keypair()[0]), ("the storage key", upriv)):
                C.raises(InvalidTag, f"4: {who} cannot decrypt a chunk", open_ep, k, chunk,
                         "enclave-to-client-transport")
            no_plaintext(stack, tmp)

            # 6. health: up, down, back; the restarted enclave's key and credentials
            old_key = own
            stack.enclave.stop(sig=9)
            st = wait_for(lambda: call(stack.url, "GET", "/api/v1/chat/enclave/health", token)[0] == 503)
            st, h, _ = call(stack.url, "GET", "/api/v1/chat/enclave/health", token)
            C.ok(st == 503 and h["status"] == "unhealthy", f"6: down -> {st} {h}")
            st, ev, _ = chat(stack.url, token, "while down", key=old_key)
            C.ok(ev[-1]["type"] == "error" and "unavailable" in ev[-1]["message"], f"6: chat while down {ev[-1:]}")
            stack.start_enclave()
            h = wait_for(lambda: (lambda s: s[1] if s[0] == 200 and s[1].get("has_credentials") else None)(
                call(stack.url, "GET", "/api/v1/chat/enclave/health", token)))
            C.ok(h is not None, "6: back up, with credentials pushed again")
            new_key = wait_for(lambda: enclave_key(stack.url, token) != old_key and enclave_key(stack.url, token))
            C.eq(new_key, raw_enclave(stack.enclave_addr, "GET_PUBLIC_KEY")["public_key"], "6: new key learned")
            st, ev, tpriv = chat(stack.url, token, "[[sim: chunks=3]] after restart")
            C.eq(answer_of(ev, tpriv), expected_answer("after restart", 3), "6: chat after restart")

            if not ENCLAVE_ONLY:  # veild alone: once, in test_e2e
                # the stream on PostgreSQL too (the routes test covers the other routes there)
                pg = Postgres()
                try:
                    pg.start()
                    stack.start_veild("nitro", db_url=pg.url)
                    wait_for(lambda: call(stack.url, "GET", "/api/v1/chat/enclave/health", token)[1].get("has_credentials"))
                    pg_token = dev_token(tmp, "user_pg")
                    stream_suite(stack, pg_token, setup_user(stack.url, pg_token), "nitro+postgresql")
                finally:
                    pg.stop()
                stack.start_veild("nitro")

                # 7. routes (as another user: the table calls destructive routes too)
                routes_table(stack, dev_token(tmp, "user_routes"))

                # 8. rollback: one session across nitro -> mock -> nitro
                st, ev, _ = chat(stack.url, token, "[[sim: chunks=2]] turn one")
                sid = ev[0]["session_id"]
                for mode in ("mock", "nitro"):
                    stack.start_veild(mode)
                    if mode == "nitro":
                        wait_for(lambda: call(stack.url, "GET", "/api/v1/chat/enclave/health", token)[1].get("has_credentials"))
                    st, ev, tpriv = chat(stack.url, token, f"[[sim: chunks=2]] turn in {mode}", session=sid)
                    C.eq(answer_of(ev, tpriv), expected_answer(f"turn in {mode}", 2), f"8: rollback to {mode}")
                st, msgs, _ = call(stack.url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
                texts = [open_ep(upriv, m["encrypted_content"],
                                 "user-message-storage" if m["role"] == "user" else "assistant-message-storage").decode()
                         for m in msgs["messages"]]
                C.eq(len(texts), 6, "8: the session holds all three turns")
        finally:
            codes = stack.stop()
            for name, code in codes.items():
                if code != -9:  # the enclave killed on purpose in step 6
                    C.ok(code == 0, f"{name} exited cleanly ({code})")
            for name, p in stack.procs.items():
                C.ok(p.sanitizer_clean(), f"{name}: no sanitizer report")

        # 5. credential refresh with short-lived credentials, on a fresh stack
        stack = Stack(os.path.join(tmp, "refresh") if os.makedirs(os.path.join(tmp, "refresh")) is None else tmp,
                      imds_expiration=12)
        try:
            token = dev_token(stack.tmp, "user_refresh")
            stack.start_enclave()
            stack.start_veild("nitro", extra={"ENCLAVE_CREDENTIAL_REFRESH_SECONDS": "600"})
            upriv = setup_user(stack.url, token)
            expirations = set()
            end = time.time() + 20
            while time.time() < end:
                h = raw_enclave(stack.enclave_addr, "HEALTH")
                if h["has_credentials"]:
                    C.ok(not h["credentials_expired"], "5: the enclave never holds expired credentials")
                    expirations.add(h["credentials_expiration"])
                time.sleep(0.5)
            C.ok(len(expirations) >= 2, f"5: credentials were refreshed ({sorted(expirations)})")
            C.ok(stack.veild.text().count("event=credentials_pushed") >= 2, "5: veild pushed more than once")
            st, ev, tpriv = chat(stack.url, token, "[[sim: chunks=2]] fresh credentials")
            C.eq(answer_of(ev, tpriv), expected_answer("fresh credentials", 2), "5: chat with refreshed credentials")
        finally:
            for name, code in stack.stop().items():
                C.ok(code == 0, f"refresh stack: {name} exited cleanly ({code})")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

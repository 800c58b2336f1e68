#!/usr/bin/python3
"""Integration: stream format 3, the bound request and the authenticated answer
(issue I), with an independent implementation of the format in Python
(veiltest.sv3_*: pyca/cryptography, written from the wire description).

Against veil-enclave directly, as a hostile parent would speak to it:
- an honest bound request: the Python client derives the stream key, opens every
  element in order, checks the end element against the stored messages' hashes and
  opens the stored messages: the two implementations agree;
- key substitution in every outer field (client key, storage key, model, session):
  binding_mismatch, and exactly one event, the error;
- a replayed request: replayed_request; a broken copy sent first does not burn the
  honest request's id; a stale or future issued_at: stale_request;
- the sealed request cannot be opened as a legacy message (a distinct context);
- --legacy-requests refuse: formats 1 and CHAT get legacy_refused, format 3 works.
Through veild: format 3 over HTTP and SSE (an existing session, the stream key,
encrypted_chunk_v3, stored with stream_end and the message ids), the history tag
stored once and returned with the messages, and each malformed body's 422.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (Checks, Stack, TempDir, call, dev_token, ep_hash, expected_answer, keypair,  # noqa: E402
                      open_ep, seal, sse, sv3_key, sv3_open, sv3_request, wait_for)

MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
C = Checks()


def enclave_lines(addr, request, timeout=20):
    """Sends one newline-framed request; returns every event until the final one."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(addr.split(":", 1)[1])
    s.sendall(json.dumps(request).encode() + b"\n")
    buf, events = b"", []
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            ev = json.loads(line)
            events.append(ev)
            if ev.get("is_final") or ev.get("status"):
                s.close()
                return events
        data = s.recv(65536)
        if not data:
            s.close()
            return events
        buf += data


def enclave_key(addr):
    """The enclave's key, once veild (which pushes credentials) has given it its credentials."""
    for _ in range(300):
        h = enclave_lines(addr, {"command": "HEALTH"})[0]
        if h.get("has_credentials"):
            return h["public_key"]
        time.sleep(0.05)
    raise RuntimeError("the enclave never got its credentials from veild")


class Party:
    """A client's keys for one request."""

    def __init__(self):
        self.cpriv, self.cpub = keypair()
        self.spriv, self.spub = keypair()


def bound(addr, epub, p, prompt, history=(), model=MODEL, session="s-1", outer=None, **kw):
    ep, rh = sv3_request(epub, prompt, history, p.cpub, p.spub, model, session, **kw)
    req = {"command": "CHAT_STREAM", "stream_format": 3, "encrypted_request": ep, "client_public_key": p.cpub,
           "storage_public_key": p.spub, "model_id": model, "session_id": session}
    req.update(outer or {})
    return req, rh


def read_v3(events, p, epub, rh):
    """The answer of a format-3 stream, checked element by element; raises on any flaw."""
    first = events[0]
    assert first.get("stream_format") == 3 and "stream_key" in first, f"first event {first}"
    k = sv3_key(p.cpriv, epub, first["stream_key"], rh)
    text, seq = "", 0
    for ev in events[1:-1]:
        el = ev.get("encrypted_content_v3") or ev.get("encrypted_thinking_v3")
        assert el and el["seq"] == seq, f"element {seq}: {ev}"
        pt = sv3_open(k, seq, 0 if "encrypted_content_v3" in ev else 2, el["ciphertext"], el["auth_tag"])
        if "encrypted_content_v3" in ev:
            text += pt.decode()
        seq += 1
    final = events[-1]
    end = final["stream_end"]
    assert end["seq"] == seq, f"end at {end['seq']}, want {seq}"
    hashes = sv3_open(k, seq, 1, end["ciphertext"], end["auth_tag"])
    su, sa = final["stored_user_message"], final["stored_assistant_message"]
    assert hashes == ep_hash(su) + ep_hash(sa), "the end element does not name the stored messages"
    stored_user = open_ep(p.spriv, su, "user-message-storage").decode()
    stored_answer = open_ep(p.spriv, sa, "assistant-message-storage").decode()
    return text, stored_user, stored_answer


def one_error(events, code, what):
    C.eq(len(events), 1, f"{what}: exactly one event, nothing before it")
    ev = events[-1] if events else {}
    C.ok(ev.get("is_final") is True and ev.get("error_code") == code, f"{what}: {code} ({ev})")


def against_enclave(stack):
    addr = stack.enclave_addr
    epub = enclave_key(addr)
    # an honest bound request: both implementations agree
    p = Party()
    req, rh = bound(addr, epub, p, "[[sim: chunks=5]] bound hello", history=[("user", "hi"), ("assistant", "yo")])
    events = enclave_lines(addr, req)
    try:
        text, su, sa = read_v3(events, p, epub, rh)
        C.eq(text, expected_answer("bound hello", 5), "format 3: the answer, opened by the Python client")
        C.eq((su, sa), ("[[sim: chunks=5]] bound hello", text), "format 3: the stored pair opens with the storage key")
    except Exception as e:
        C.ok(False, f"format 3: the Python client could not read the answer: {e!r} {events[:2]}")
    # key substitution in every outer field: the parent redirects the answer or the storage
    attacker = Party()
    for field, value in [("client_public_key", attacker.cpub), ("storage_public_key", attacker.spub),
                         ("model_id", "us.meta.llama3-2-3b-instruct-v1:0"), ("session_id", "another-session")]:
        p = Party()
        req, _ = bound(addr, epub, p, "[[sim: chunks=2]] redirect me", outer={field: value})
        events = enclave_lines(addr, req)
        one_error(events, "binding_mismatch", f"a substituted {field}")
        C.ok(field in events[-1].get("error", ""), f"the binding error names {field}")
    # replay: the parent sends the same request again
    p = Party()
    req, rh = bound(addr, epub, p, "[[sim: chunks=2]] once")
    first = enclave_lines(addr, req)
    C.ok(first[-1].get("stream_end") is not None, "the first use of a request is served")
    one_error(enclave_lines(addr, req), "replayed_request", "the same request again")
    # a broken copy first does not burn the honest request's id
    p = Party()
    req, rh = bound(addr, epub, p, "[[sim: chunks=2]] not burnt")
    broken = dict(req, client_public_key=attacker.cpub)
    one_error(enclave_lines(addr, broken), "binding_mismatch", "a broken copy")
    ev = enclave_lines(addr, req)
    C.ok(ev[-1].get("stream_end") is not None, "the honest request still goes through after a broken copy")
    # stale and future issued_at
    for delta, what in [(-400, "stale"), (400, "future")]:
        p = Party()
        req, _ = bound(addr, epub, p, "[[sim: chunks=2]] old", issued_at=int(time.time()) + delta)
        one_error(enclave_lines(addr, req), "stale_request", f"a {what} issued_at")
    # a sealed request cannot pass as a legacy message (a distinct context)
    p = Party()
    req, _ = bound(addr, epub, p, "[[sim: chunks=2]] as legacy")
    legacy = {"command": "CHAT_STREAM", "encrypted_message": req["encrypted_request"], "encrypted_history": [],
              "client_public_key": attacker.cpub, "storage_public_key": attacker.spub, "model_id": MODEL,
              "session_id": "s"}
    one_error(enclave_lines(addr, legacy), "decrypt_failed", "the sealed request replayed as a format-1 message")
    # malformed sealed requests: shape errors
    p = Party()
    ep = seal(epub, json.dumps({"message": "x"}), "client-to-enclave-request-v3")
    req = {"command": "CHAT_STREAM", "stream_format": 3, "encrypted_request": ep, "client_public_key": p.cpub,
           "storage_public_key": p.spub, "model_id": MODEL, "session_id": "s"}
    one_error(enclave_lines(addr, req), "bad_request", "a sealed request without its fields")
    # the legacy policy
    stack.start_enclave(["--legacy-requests", "refuse"])
    addr = stack.enclave_addr
    epub = enclave_key(addr)
    p = Party()
    msg = seal(epub, "hello", "client-to-enclave-transport")
    one_error(enclave_lines(addr, {"command": "CHAT_STREAM", "encrypted_message": msg, "encrypted_history": [],
                                   "client_public_key": p.cpub, "storage_public_key": p.spub, "model_id": MODEL,
                                   "session_id": "s"}), "legacy_refused", "refuse: a format-1 request")
    r = enclave_lines(addr, {"command": "CHAT", "encrypted_message": msg, "user_public_key": p.cpub,
                             "model_id": MODEL})
    C.ok(r[-1].get("error_code") == "legacy_refused", f"refuse: CHAT is refused too ({r[-1]})")
    req, rh = bound(addr, epub, p, "[[sim: chunks=3]] bound only")
    try:
        text, _, _ = read_v3(enclave_lines(addr, req), p, epub, rh)
        C.eq(text, expected_answer("bound only", 3), "refuse: a bound request is served")
    except Exception as e:
        C.ok(False, f"refuse: a bound request: {e!r}")
    stack.start_enclave()
    enclave_key(stack.enclave_addr)  # veild noticed the restart: the new enclave has credentials


def setup_user(url, token):
    call(url, "POST", "/api/v1/users/sync", token)
    priv, pub = keypair()
    body = {"public_key": pub, "encrypted_private_key": "ab" * 32, "iv": "11" * 16, "tag": "22" * 16,
            "salt": "33" * 32, "recovery_encrypted_private_key": "cd" * 32, "recovery_iv": "44" * 16,
            "recovery_tag": "55" * 16, "recovery_salt": "66" * 32}
    call(url, "POST", "/api/v1/users/me/keys", token, body)
    return priv, pub


def through_veild(stack, token):
    url = stack.url
    upriv, upub = setup_user(url, token)
    # the key veild serves is the running enclave's (it learns a restarted one's on its probe)
    want = enclave_key(stack.enclave_addr)
    epub = wait_for(lambda: (lambda r: r[1].get("enclave_public_key") if r[0] == 200 and
                             r[1].get("enclave_public_key") == want else None)(
        call(url, "GET", "/api/v1/chat/enclave/info", token)))
    C.ok(epub == want, "veild serves the running enclave's key")
    st, sess, _ = call(url, "POST", "/api/v1/chat/sessions", token, {"name": "bound"})
    sid = sess["id"]
    tpriv, tpub = keypair()
    ep, rh = sv3_request(epub, "[[sim: chunks=4]] over http", [], tpub, upub, MODEL, sid)
    body = {"stream_format": 3, "encrypted_request": ep, "client_transport_public_key": tpub, "model": MODEL,
            "session_id": sid}
    st, ev = sse(url, "/api/v1/chat/encrypted/stream", token, body)
    types = [e["type"] for e in ev] if st == 200 else []
    C.eq(types, ["session", "stream_key", "encrypted_chunk_v3", "encrypted_chunk_v3", "encrypted_chunk_v3",
                 "encrypted_chunk_v3", "stored", "done"], "veild relays format 3's events")
    if st == 200 and len(ev) == 8:
        k = sv3_key(tpriv, epub, ev[1], rh)
        text = "".join(sv3_open(k, i, 0, e["ciphertext"], e["auth_tag"]).decode() for i, e in enumerate(ev[2:6]))
        C.eq(text, expected_answer("over http", 4), "the SSE elements open in order")
        stored = ev[6]
        st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
        m = msgs["messages"]
        C.ok(stored.get("user_message_id") == m[0]["id"] and stored.get("assistant_message_id") == m[1]["id"],
             "stored names the two stored messages")
        end = sv3_open(k, 4, 1, stored["stream_end"]["ciphertext"], stored["stream_end"]["auth_tag"])
        C.ok(end == ep_hash(m[0]["encrypted_content"]) + ep_hash(m[1]["encrypted_content"]),
             "the end element authenticates the stored messages the server returns")
        # the history tag: kept once, returned with the messages
        tag = os.urandom(32).hex()
        path = f"/api/v1/chat/sessions/{sid}/messages/{m[1]['id']}/history-tag"
        st, r, _ = call(url, "PUT", path, token, {"history_tag": tag.upper()})
        C.eq((st, r), (200, {"status": "tagged"}), "a history tag is stored")
        st, r, _ = call(url, "PUT", path, token, {"history_tag": tag})
        C.eq((st, r), (409, {"detail": "The message has its history tag already"}), "and only once")
        st, r, _ = call(url, "PUT", f"/api/v1/chat/sessions/{sid}/messages/{m[0]['id']}/history-tag", token,
                        {"history_tag": tag})
        C.eq(st, 404, "a user message carries no tag")
        st, r, _ = call(url, "PUT", path.replace(sid, "no-such-session"), token, {"history_tag": tag})
        C.eq(st, 404, "another session's message cannot be tagged")
        st, r, _ = call(url, "PUT", path, token, {"history_tag": "xyz"})
        C.eq(st, 422, "a malformed tag gets 422")
        st, msgs, _ = call(url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
        C.eq([x.get("history_tag") for x in msgs["messages"]], [None, tag], "the tag comes back with the messages")
    # format 3's body rules
    for change, what in [({"session_id": None}, "no session"), ({"encrypted_request": None}, "no sealed request"),
                         ({"encrypted_message": ep}, "a legacy message beside it"),
                         ({"encrypted_history": [ep]}, "per-turn envelopes beside it"),
                         ({"stream_format": 4}, "an unknown format")]:
        b = dict(body)
        b.update(change)
        b = {k: v for k, v in b.items() if v is not None}
        st, r, _ = call(url, "POST", "/api/v1/chat/encrypted/stream", token, b)
        C.eq(st, 422, f"format 3 body: {what} gets 422")
    # a replay through veild is refused by the enclave, with the fixed text
    st, ev = sse(url, "/api/v1/chat/encrypted/stream", token, body)
    C.ok(st == 200 and ev[-1] == {"type": "error", "message": "The request was already used: refused"},
         f"the same sealed request again is refused ({ev[-1:] if st == 200 else st})")


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            token = dev_token(tmp, "user_f3")
            stack.start_enclave()
            stack.start_veild("nitro")  # it pushes the enclave's credentials, again after a restart
            C.run("enclave", against_enclave, stack)
            C.run("veild", through_veild, stack, token)
        finally:
            codes = stack.stop()
            logs = stack.all_logs()
            C.ok(not any(m in logs for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")),
                 "no sanitizer report in any log")
            C.ok(all(c == 0 for c in codes.values()), f"every process exits cleanly: {codes}")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

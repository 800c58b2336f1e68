#!/usr/bin/python3
"""Integration: the chat stream route under pressure and with the original web
client's habits (issues F0 and F), on the full local stack (veild, the enclave,
the proxy, the Bedrock simulator), written as clients behave.

- Low-order transport keys are refused with 422 before anything starts (F0).
- One user holds at most VEIL_USER_MAX_STREAMS streams (429 + Retry-After); other
  users are not affected; a slot frees when a stream ends.
- A conversation larger than the enclave accepts gets 413 with a clear message, the
  limit learned from the enclave itself (nitro) or its default (mock).
- The original client's flows: a failed first message is retried in the announced
  session; the session is listed as soon as it is announced; a cancelled first
  stream is retried the same way; sessions left empty are swept after their TTL.
- An enclave event that carries content and is_final ends the stream (it hung).
- Backpressure: a client that never reads is cut off after VEIL_SSE_STALL_SECONDS
  with veild's memory bounded and nothing stored; a slow reader gets every chunk.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (Checks, FakeEnclave, Stack, TempDir, call, dev_token, expected_answer, keypair,  # noqa: E402
                      open_ep, seal, sse, wait_for)

MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
with open(os.path.join(os.environ.get("VEIL_BIN", "build"), "veild"), "rb") as _f:
    SANITIZED = b"__asan_init" in _f.read()
STREAM = "/api/v1/chat/encrypted/stream"
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
    return r["enclave_public_key"] if st == 200 else None


def body_for(url, token, prompt, session=None, history=(), tpub=None):
    key = enclave_key(url, token)
    if tpub is None:
        tpub = keypair()[1]
    return {"session_id": session, "model": MODEL, "client_transport_public_key": tpub,
            "encrypted_message": seal(key, prompt, "client-to-enclave-transport"),
            "encrypted_history": [seal(key, t, "client-to-enclave-transport") for t in history]}


def chat(url, token, prompt, session=None, history=()):
    tpriv, tpub = keypair()
    st, ev = sse(url, STREAM, token, body_for(url, token, prompt, session, history, tpub))
    return st, ev, tpriv


def messages(url, token, session):
    st, r, _ = call(url, "GET", f"/api/v1/chat/sessions/{session}/messages", token)
    return r["messages"] if st == 200 else None


def session_ids(url, token):
    st, r, _ = call(url, "GET", "/api/v1/chat/sessions?limit=100", token)
    return [s["id"] for s in r["sessions"]] if st == 200 else None


class OpenStream:
    """A stream whose first events are read and which then stays open (or closes)."""

    def __init__(self, url, token, body, rcvbuf=None):
        host, port = url.split("//", 1)[1].split(":")
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(30)
        self.s.connect((host, int(port)))
        data = json.dumps(body).encode()
        self.s.sendall(b"POST " + STREAM.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                       token.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " +
                       str(len(data)).encode() + b"\r\n\r\n" + data)
        self.buf = b""

    def read_until(self, needle, timeout=30):
        self.s.settimeout(timeout)
        while needle not in self.buf:
            b = self.s.recv(65536)
            if not b:
                break
            self.buf += b
        return needle in self.buf

    def head_status(self):
        self.read_until(b"\r\n\r\n")
        try:
            return int(self.buf.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None

    def session_id(self):
        self.read_until(b'"type":"session"')
        i = self.buf.index(b'"session_id":"') + 14
        return self.buf[i:i + 36].decode()

    def close(self):
        self.s.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- the checks --------------------------------------------------------------------

def low_order_keys(url, token):
    for name, key in [("all zero", "00" * 32), ("01 then zeros", "01" + "00" * 31),
                      ("order 8", "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]:
        b = body_for(url, token, "hi", tpub=key)
        before = session_ids(url, token)
        st, r, _ = call(url, "POST", STREAM, token, b)
        C.eq(st, 422, f"low-order transport key ({name}) gets 422")
        d = (r or {}).get("detail", [{}])[0]
        C.ok(d.get("type") == "value_error" and d.get("loc") == ["body", "client_transport_public_key"] and
             "low-order" in d.get("msg", ""), f"422 names the field and the reason: {d}")
        C.eq(session_ids(url, token), before, f"({name}) nothing was created")


def user_streams(stack, token, other):
    """VEIL_USER_MAX_STREAMS=2: a third concurrent stream of one user is refused."""
    url = stack.url
    held = [OpenStream(url, token, body_for(url, token, "[[sim: fault=hang]] hold")) for _ in range(2)]
    for h in held:
        C.eq(h.head_status(), 200, "streams within the per-user limit start")
        h.session_id()
    st, r, resp = call(url, "POST", STREAM, token, body_for(url, token, "third"))
    C.eq(st, 429, "a third concurrent stream of one user gets 429")
    C.eq(r, {"detail": "Too many chats in progress (at most 2 at a time), retry when one ends"}, "429 detail")
    C.eq(resp.getheader("Retry-After"), "5", "429 carries Retry-After")
    st, ev, _ = chat(url, other, "[[sim: chunks=2]] other user")
    C.ok(st == 200 and ev[-1]["type"] == "done", "another user still chats meanwhile")
    held[0].close()
    C.ok(stack.veild.wait_log("event=stream_client_gone", 15), "veild saw the held stream's client leave")
    st, ev, _ = wait_for(lambda: (lambda x: x if x[0] == 200 else None)(chat(url, token, "[[sim: chunks=2]] again")),
                         15) or (0, [], None)
    C.ok(st == 200 and ev and ev[-1]["type"] == "done", "once a stream ends, the user may start another")
    held[1].close()


def mock_stream_cap(stack, token, other):
    """VEIL_MOCK_MAX_STREAMS=3: the in-process core runs at most three streams, all
    users together; a fourth ends with the busy error and frees nothing it held."""
    url = stack.url
    held = [OpenStream(url, t, body_for(url, t, "[[sim: fault=hang]] hold")) for t in (token, token, other)]
    for h in held:
        C.eq(h.head_status(), 200, "streams within the core's cap start")
        h.session_id()
    st, ev, _ = chat(url, other, "[[sim: chunks=2]] a fourth")
    C.eq(st, 200, "the fourth stream's SSE starts (the session is announced)")
    C.eq(ev[-1:], [{"type": "error", "message": "Service busy, please retry"}],
         "past VEIL_MOCK_MAX_STREAMS a chat ends with the core's busy error")
    C.ok(not any(e.get("type") in ("content", "stored", "done") for e in ev), f"nothing answered or stored: {ev}")
    gone = stack.veild.text().count("event=stream_client_gone")
    held[2].close()
    C.ok(stack.veild.wait_log("event=stream_client_gone", 15, count=gone + 1), "veild saw a held stream's client leave")
    st, ev, _ = wait_for(lambda: (lambda x: x if x[0] == 200 and x[1][-1]["type"] == "done" else None)(
        chat(url, other, "[[sim: chunks=2]] again")), 15) or (0, [], None)
    C.ok(st == 200 and ev and ev[-1]["type"] == "done", "once a stream ends, the core takes another")
    for h in held[:2]:
        h.close()


def too_large(stack, token, limit):
    """A conversation over the enclave's request limit: 413 before anything starts."""
    url = stack.url
    key = enclave_key(url, token)
    piece = "h" * 60000
    n = limit // (2 * len(piece)) + 2
    b = body_for(url, token, "big")
    b["encrypted_history"] = [seal(key, piece, "client-to-enclave-transport") for _ in range(n)]
    before = session_ids(url, token)
    st, r, _ = call(url, "POST", STREAM, token, b)
    C.eq(st, 413, f"a conversation over {limit} bytes gets 413")
    detail = (r or {}).get("detail", "")
    C.ok(detail.startswith("Request too large: the conversation is") and f"at most {limit}" in detail,
         f"413 says why and the limit: {detail!r}")
    C.eq(session_ids(url, token), before, "413: no session was created")


def original_client_flows(stack, token):
    url = stack.url
    # 1. the first message of a new chat fails; the client retries in the announced session
    st, ev, _ = chat(url, token, "[[sim: fault=throttle]] first try")
    sid = ev[0].get("session_id") if ev else None
    C.ok(st == 200 and ev[-1] == {"type": "error", "message": "The model is busy, please retry shortly"},
         f"flow 1: the first message fails as the model is busy: {ev[-1:]}")
    C.ok(sid in (session_ids(url, token) or []), "flow 1: the announced session is listed")
    C.eq(messages(url, token, sid), [], "flow 1: and holds no message")
    st, ev, tpriv = chat(url, token, "[[sim: chunks=3]] second try", session=sid)
    C.ok(st == 200 and ev[0] == {"type": "session", "session_id": sid} and ev[-1]["type"] == "done",
         f"flow 1: the retry in the announced session succeeds: {[e['type'] for e in ev]}")
    C.eq(len(messages(url, token, sid) or []), 2, "flow 1: the retry stored its two messages there")
    # 2. on the session event the client refreshes its sidebar: the new chat is there
    s = OpenStream(url, token, body_for(url, token, "[[sim: chunks=40 interval-ms=50]] slow"))
    sid2 = s.session_id()
    C.ok(sid2 in (session_ids(url, token) or []), "flow 2: the sidebar lists the new chat while it streams")
    C.ok(s.read_until(b'"type":"done"', 30), "flow 2: the stream completes")
    s.close()
    C.eq(len(messages(url, token, sid2) or []), 2, "flow 2: its messages are stored")
    # 3. the first stream is cancelled (the user stops it); the retry goes to the same session
    s = OpenStream(url, token, body_for(url, token, "[[sim: chunks=100 interval-ms=50]] stop me"))
    sid3 = s.session_id()
    s.close()
    C.ok(stack.veild.wait_log("event=stream_client_gone", 15, count=2), "flow 3: veild saw the cancel")
    st, ev, _ = chat(url, token, "[[sim: chunks=2]] after the stop", session=sid3)
    C.ok(st == 200 and ev[-1]["type"] == "done", f"flow 3: the retry after a cancel succeeds ({st})")
    C.eq(len(messages(url, token, sid3) or []), 2, "flow 3: only the completed exchange is stored")


def empty_session_sweep(stack, token):
    """VEIL_EMPTY_SESSION_TTL_SECONDS=2: a session a failed first message left empty goes."""
    url = stack.url
    st, ev, _ = chat(url, token, "[[sim: fault=http-500]] fails")
    empty = ev[0]["session_id"]
    st, ev, _ = chat(url, token, "[[sim: chunks=2]] works")
    full = ev[0]["session_id"]
    gone = wait_for(lambda: empty not in (session_ids(url, token) or [empty]), 30)
    C.ok(gone, "an empty session is swept after its TTL")
    C.ok(full in (session_ids(url, token) or []), "a session with messages stays")


def final_with_content(tmp, stack, token):
    """An enclave whose final event also carries content: veild ends the stream (it
    used to relay the content, drop the final, and hang on heartbeats)."""
    upub_holder = {}

    def on_stream(req):
        chunk = seal(req["client_public_key"], "last words", "enclave-to-client-transport")
        su = seal(req["storage_public_key"], "q", "user-message-storage")
        sa = seal(req["storage_public_key"], "last words", "assistant-message-storage")
        upub_holder["seen"] = True
        return [{"encrypted_content": chunk, "is_final": True, "stored_user_message": su,
                 "stored_assistant_message": sa, "model_used": MODEL, "input_tokens": 1, "output_tokens": 2}]

    path = os.path.join(tmp, "fake-enclave.sock")
    fake = FakeEnclave(path, on_stream)
    try:
        stack.start_veild("nitro", extra={"ENCLAVE_ADDR": "unix:" + path}, name="veild-fake")
        key = wait_for(lambda: enclave_key(stack.url, token), 15)
        C.eq(key, fake.pub, "veild uses the fake enclave's key")
        tpriv, tpub = keypair()
        b = {"model": MODEL, "client_transport_public_key": tpub,
             "encrypted_message": seal(fake.pub, "q", "client-to-enclave-transport")}
        st, ev = sse(stack.url, STREAM, token, b, timeout=20)
        types = [e["type"] for e in ev] if st == 200 else []
        C.eq(types, ["session", "stored", "done"], "a final event with content ends the stream")
    except Exception as e:  # a read timeout here is the hang this test is about
        C.ok(False, f"final with content: {e!r}")
    finally:
        fake.stop()


def backpressure(stack, token, mode):
    url = stack.url
    # a client that never reads: paused, then cut off; memory stays bounded
    base = rss_kb(stack.veild.p.pid)
    body = body_for(url, token, "[[sim: chunks=3000 chunk-size=4000]] flood")
    s = OpenStream(url, token, body, rcvbuf=4096)
    C.eq(s.head_status(), 200, f"{mode}: the flood stream starts")
    C.ok(stack.veild.wait_log("event=http_output_stalled", 60), f"{mode}: veild cuts off a client that never reads")
    C.ok(stack.veild.wait_log("event=stream_client_gone", 20), f"{mode}: and cancels its stream")
    m = re.findall(r"event=http_output_stalled pending=(\d+)", stack.veild.text())
    C.ok(m and int(m[-1]) < 2 * 65536 + 16384,
         f"{mode}: veild held at most about VEIL_SSE_MAX_BUFFER for the client ({m[-1:]} bytes)")
    grown = rss_kb(stack.veild.p.pid) - base
    if not SANITIZED:  # ASan's quarantine keeps freed memory resident: RSS says nothing there
        C.ok(grown < 16 * 1024, f"{mode}: veild's memory stayed bounded for a 12 MB answer (+{grown} KB)")
    C.ok("event=stream_paused" in stack.veild.text(), f"{mode}: the stream was paused, not buffered")
    s.close()
    # a slow reader gets everything
    tpriv, tpub = keypair()
    body = body_for(url, token, "[[sim: chunks=300 chunk-size=4000]] slow reader", tpub=tpub)
    s = OpenStream(url, token, body, rcvbuf=8192)
    s.s.settimeout(60)
    while b'"type":"done"' not in s.buf and b'"type":"error"' not in s.buf:
        b = s.s.recv(8192)
        if not b:
            break
        s.buf += b
        time.sleep(0.002)
    s.close()
    head, _, raw = s.buf.partition(b"\r\n\r\n")
    text = ""
    ok = True
    for line in raw.split(b"\n"):
        if line.startswith(b"data: "):
            ev = json.loads(line[6:])
            if ev["type"] == "encrypted_chunk":
                text += open_ep(tpriv, ev["encrypted_content"], "enclave-to-client-transport").decode()
            if ev["type"] == "error":
                ok = False
    C.ok(ok and text == expected_answer("slow reader", 300, 4000), f"{mode}: a slow reader gets every chunk, in order")


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            token = dev_token(tmp, "user_sl_a")
            other = dev_token(tmp, "user_sl_b")
            stack.start_enclave(["--max-request", "1048576"])
            limits = {"VEIL_USER_MAX_STREAMS": "2", "VEIL_SSE_MAX_BUFFER": "65536", "VEIL_SSE_STALL_SECONDS": "3",
                      "VEIL_MAX_BODY": str(16 << 20), "ENCLAVE_INFERENCE_TIMEOUT": "60",
                      "VEIL_MOCK_MAX_STREAMS": "3"}
            stack.start_veild("mock", extra=limits)
            setup_user(stack.url, token)
            setup_user(stack.url, other)
            for name, fn in [("low-order keys", lambda: low_order_keys(stack.url, token)),
                             ("user streams", lambda: user_streams(stack, token, other)),
                             ("mock stream cap", lambda: mock_stream_cap(stack, token, other)),
                             ("too large (mock)", lambda: too_large(stack, token, 8 << 20)),
                             ("original client flows", lambda: original_client_flows(stack, token)),
                             ("backpressure (mock)", lambda: backpressure(stack, token, "mock"))]:
                C.run(name, fn)
            # nitro: the enclave says its limit in HEALTH; veild learns it
            stack.start_veild("nitro", extra=dict(limits, VEIL_EMPTY_SESSION_TTL_SECONDS="2"), name="veild-nitro")
            C.ok(stack.veild.wait_log("event=credentials_pushed", 15), "nitro veild is up")
            C.ok(stack.veild.wait_log("event=enclave_limit_learned max_request=1048576", 15),
                 "veild learns the enclave's request limit from its HEALTH")
            for name, fn in [("too large (nitro)", lambda: too_large(stack, token, 1 << 20)),
                             ("empty session sweep", lambda: empty_session_sweep(stack, token)),
                             ("backpressure (nitro)", lambda: backpressure(stack, token, "nitro")),
                             ("final with content", lambda: final_with_content(tmp, stack, token))]:
                C.run(name, fn)
        finally:
            codes = stack.stop()
            logs = stack.all_logs()
            C.ok(not any(m in logs for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")),
                 "no sanitizer report in any log")
            C.ok(all(c == 0 for c in codes.values()), f"every process exits cleanly: {codes}")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

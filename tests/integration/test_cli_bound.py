#!/usr/bin/python3
"""The `veil` client's bound requests (stream format 3) and history tags on the full
stack (nitro mode, the simulated NSM; the client logged in with the simulator's root
and measurements), with a hostile HTTP proxy between the client and veild and, for
the stored history, direct edits of veild's SQLite database.

What works: ask and chat send one sealed request (the proxy sees stream_format 3, an
encrypted_request and no legacy fields, and the session made first); every answer
opens; each exchange's history tag is stored and equals an independent computation
(pyca/cryptography, from crypto/history_tag.h's formula) chained over the session;
this machine's record (history_tags, 0600) holds the last one; `veil history` marks
nothing; an exchange made by the original's client (format 1, no tag) is marked
unverified and the chain goes on past it.

Each attack names what it stops and the exact refusal; nothing forged reaches stdout
and no refused answer gets a history tag:
- the proxy puts its own transport key (or another model) beside the sealed request, or
  replays an earlier sealed request: the enclave refuses (binding, replay);
- the proxy alters an element's ciphertext; inserts a format-1 chunk sealed to the
  client's transport key; replaces the stream key with its own (and reseals);
- truncation: the last chunk, the stored event or the done event dropped;
- a downgrade: the proxy answers in format 1 (or 2) itself, sealed to the client's key;
- the stored messages read back after the stream are not the ones the end names;
- in the database: a stored answer replaced by one sealed to the user's storage key
  (forged), an exchange removed (the chain breaks), the LAST exchange removed (only the
  record tells), two exchanges swapped (out of order): `veil history` reports each and
  exits 1, and `chat --session` / `ask --session` refuse to continue on such a history;
- links planted at the record and its temp file, a record others may write: refused,
  never followed;
- in an organization, the server substitutes the org's public key (the storage key it
  sends beside the sealed one): the enclave refuses the request, nothing is stored.
Prints `N passed, M failed`.
"""
import hashlib
import hmac
import json
import os
import sqlite3
import subprocess
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (BIN, Checks, HttpRelay, Stack, TempDir, call, dev_token, ep_hash, expected_answer, keypair,  # noqa: E402
                      seal, sse, sv3_seal, sv3_sender)

C = Checks()
STREAM = "/api/v1/chat/encrypted/stream"
MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
UNVERIFIED = "the answer could not be verified: "
NOT_AUTHENTIC = "; the text shown above is not an authentic answer"


def events_of(raw):
    out = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


class Proxy(HttpRelay):
    """Between the CLI and veild. request: None or fn(body) -> the body veild gets for
    the stream route; stream: None (relay) or fn(events, body) -> events,
    applied to veild's whole answer; own: fn(body) -> events, answered without veild.
    messages: None or fn(json) -> json for GET .../messages. seen: (method, path, body)."""

    def __init__(self, port):
        self.stream = self.own = self.messages = self.request_fn = None
        self.seen = []
        super().__init__(port)

    def request(self, h, raw):
        body = json.loads(raw) if raw else None
        self.seen.append((h.command, h.path, body))
        if h.command == "POST" and h.path == STREAM and self.own:
            return 200, "".join(f"data: {json.dumps(e)}\n\n" for e in self.own(body)).encode(), "text/event-stream"
        return None

    def forward(self, h, raw):
        if h.command == "POST" and h.path == STREAM and self.request_fn:
            return json.dumps(self.request_fn(json.loads(raw) if raw else None)).encode()
        return raw

    def answer(self, h, raw, status, data, ctype):
        body = json.loads(raw) if raw else None
        if h.command == "POST" and h.path == STREAM and status == 200 and self.stream:
            evs = self.stream(events_of(data), body)
            data = "".join(f"data: {json.dumps(e)}\n\n" for e in evs).encode()
        elif h.command == "GET" and h.path.endswith("/messages") and status == 200 and self.messages:
            data = json.dumps(self.messages(json.loads(data))).encode()
        return status, data, ctype

    def reset(self):
        self.stream = self.own = self.messages = self.request_fn = None
        self.seen = []

    def bodies(self, method, suffix):
        return [b for m, p, b in self.seen if m == method and p.endswith(suffix)]

    def tags_put(self):
        return [p for m, p, _ in self.seen if m == "PUT" and p.endswith("/history-tag")]


def veil(cfg, args, env=None, stdin=None):
    e = dict(os.environ, VEIL_CONFIG=cfg)
    e.update(env or {})
    return subprocess.run([os.path.join(BIN, "veil")] + args, env=e, input=stdin, capture_output=True, timeout=300)


def err(r):
    return r.stderr.decode(errors="replace")


def last_line(r):
    lines = err(r).splitlines()
    return lines[-1] if lines else ""


def history_key(priv_hex):
    """crypto/history_tag.h, independently: K = HKDF-SHA512(storage private key, no
    salt, "veil-history-v1", 32)."""
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=None, info=b"veil-history-v1").derive(bytes.fromhex(priv_hex))


def history_tag(key, sid, prev, user_ep, assistant_ep):
    msg = (b"veil-history-v1" + len(sid).to_bytes(4, "big") + sid.encode() + (prev or b"\0" * 32) +
           ep_hash(user_ep) + ep_hash(assistant_ep))
    return hmac.new(key, msg, hashlib.sha256).digest()


def marks(r):
    """The lines `veil history` adds about the chain."""
    return [ln for ln in r.stdout.decode().splitlines() if ln.startswith(("[exchange ", "[message ", "[MISSING"))]


def messages(stack, token, sid):
    st, r, _ = call(stack.url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
    return r["messages"] if st == 200 else []


# ---- the attacks on the answer --------------------------------------------------------

def flip(hex_s):
    return ("0" if hex_s[0] != "0" else "1") + hex_s[1:]


def alter_element(events, body):
    for e in events:
        if e["type"] == "encrypted_chunk_v3" and e["seq"] == 1:
            e["ciphertext"] = flip(e["ciphertext"])
    return events


def insert_format1(events, body):
    forged = seal(body["client_transport_public_key"], " FORGED TEXT", "enclave-to-client-transport")
    i = next(i for i, e in enumerate(events) if e["type"] == "encrypted_chunk_v3") + 1
    return events[:i] + [{"type": "encrypted_chunk", "encrypted_content": forged}] + events[i:]


def forge_stream_key(events, body):
    """The server's own stream key, every text element resealed under the K it can
    derive (with a key of its own where the enclave's belongs)."""
    mine, _ = keypair()
    k, sk = sv3_sender(mine, body["client_transport_public_key"], ep_hash(body["encrypted_request"]))
    out = []
    for e in events:
        if e["type"] == "stream_key":
            e = dict(type="stream_key", stream_format=3, **sk)
        elif e["type"] == "encrypted_chunk_v3":
            e = dict(type="encrypted_chunk_v3", **sv3_seal(k, e["seq"], 0, f"FORGED {e['seq']}"))
        out.append(e)
    return out


def drop_last_chunk(events, body):
    last = max(i for i, e in enumerate(events) if e["type"] == "encrypted_chunk_v3")
    return events[:last] + events[last + 1:]


def drop_type(kind):
    return lambda events, body: [e for e in events if e["type"] != kind]


def own_format1(body):
    """A downgrade: the server answers by itself in format 1, sealed to the client's key."""
    tp = body["client_transport_public_key"]
    return [{"type": "session", "session_id": body["session_id"]},
            {"type": "encrypted_chunk", "encrypted_content": seal(tp, "FORGED ANSWER", "enclave-to-client-transport")},
            {"type": "stored", "model_used": MODEL, "input_tokens": 1, "output_tokens": 1}, {"type": "done"}]


def own_format2(body):
    """The same in format 2: a stream key of its own, an element and an end it made."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    e, epub = keypair()
    salt = os.urandom(32)
    k = HKDF(algorithm=hashes.SHA512(), length=32, salt=salt, info=b"enclave-to-client-stream-v2").derive(
        e.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(body["client_transport_public_key"]))))
    enc = Cipher(algorithms.AES(k), modes.GCM(b"\0" * 16)).encryptor()
    enc.authenticate_additional_data(b"veil-stream-v2" + b"\0" * 8 + b"\0")
    ct = enc.update(b"FORGED ANSWER") + enc.finalize()
    return [{"type": "session", "session_id": body["session_id"]},
            {"type": "stream_key", "stream_format": 2, "ephemeral_public_key": epub, "hkdf_salt": salt.hex()},
            {"type": "encrypted_chunk_v2", "seq": 0, "ciphertext": ct.hex(), "auth_tag": enc.tag.hex()},
            {"type": "done"}]


def check_answer_attacks(proxy, cfg):
    n = 4  # chunks=4: elements 0..3, the end at 4
    cases = [
        ("an altered element", dict(stream=alter_element),
         UNVERIFIED + "element 1 does not verify (forged, dropped, reordered or altered in transit)" + NOT_AUTHENTIC,
         expected_answer("attack", 1)),
        ("a format-1 chunk inserted", dict(stream=insert_format1),
         UNVERIFIED + "the server sent a stream format 1 chunk, not the format 3 this client asked for" + NOT_AUTHENTIC,
         expected_answer("attack", 1)),
        ("a forged stream key", dict(stream=forge_stream_key),
         UNVERIFIED + "element 0 does not verify (forged, dropped, reordered or altered in transit)", ""),
        ("the last chunk dropped", dict(stream=drop_last_chunk),
         UNVERIFIED + f"the end element does not verify at index {n - 1} (an element was dropped, or the end forged)"
         + NOT_AUTHENTIC, expected_answer("attack", n - 1)),
        ("the stored event dropped", dict(stream=drop_type("stored")),
         UNVERIFIED + "the stream ended before the answer's end element (it may be cut off)" + NOT_AUTHENTIC,
         expected_answer("attack", n)),
        ("the done event dropped", dict(stream=drop_type("done")),
         UNVERIFIED + "the stream ended before its done event (it may be cut off)" + NOT_AUTHENTIC,
         expected_answer("attack", n)),
        ("a downgrade to format 1", dict(own=own_format1),
         UNVERIFIED + "the server sent a stream format 1 chunk, not the format 3 this client asked for", ""),
        ("a downgrade to format 2", dict(own=own_format2),
         UNVERIFIED + "the server answered in stream format 2, not the format 3 this client asked for", ""),
        ("other stored messages read back", dict(messages=None),
         UNVERIFIED + "the stored messages are not the ones the enclave stored for this answer" + NOT_AUTHENTIC,
         expected_answer("attack", n)),
    ]
    for what, modes_, line, shown in cases:
        proxy.reset()
        proxy.stream, proxy.own = modes_.get("stream"), modes_.get("own")
        if "messages" in modes_:
            def swap_answer(j):  # the last answer replaced by one sealed to the same storage key
                m = j["messages"][-1]
                m["encrypted_content"] = seal(STORAGE_PUB[0], "FORGED ANSWER", "assistant-message-storage")
                return j
            proxy.messages = swap_answer
        r = veil(cfg, ["ask", "--model", MODEL, f"[[sim: chunks={n}]] attack"])
        out = r.stdout.decode(errors="replace")
        C.eq((r.returncode, last_line(r)), (1, "veil ask: " + line), f"{what}: refused")
        C.ok("FORGED" not in out, f"{what}: nothing forged on stdout: {out!r}")
        C.eq(out, shown + "\n" if shown else "", f"{what}: only elements that verified were shown")
        C.eq(proxy.tags_put(), [], f"{what}: no history tag for a refused answer")
        # the same refusal as one line in chat, which then goes on
        if what == "an altered element":
            r = veil(cfg, ["chat"], stdin=b"[[sim: chunks=4]] attack\n\n")
            C.ok(r.returncode == 1 and f"veil chat: {line}\n" in err(r), f"chat: {what}: {err(r)!r}")
    proxy.reset()


def check_request_attacks(proxy, cfg):
    """The server redirects the answer (its own transport key beside the sealed one),
    changes the model, or replays an earlier sealed request: the enclave refuses each."""
    proxy.reset()
    r = veil(cfg, ["ask", "[[sim: chunks=2]] recorded"])
    C.eq(r.returncode, 0, f"a request to replay later: {err(r)}")
    recorded = proxy.bodies("POST", STREAM)[0]
    _, own_pub = keypair()
    for what, fn, line in (
            ("its own transport key", lambda b: dict(b, client_transport_public_key=own_pub),
             "The request was altered in transit: refused"),
            ("another model", lambda b: dict(b, model=MODEL),
             "The request was altered in transit: refused"),
            ("an earlier request replayed", lambda b: recorded, "The request was already used: refused")):
        proxy.reset()
        proxy.request_fn = fn
        # in the recorded request's session, so the replay is the enclave's to refuse
        r = veil(cfg, ["ask", "--session", recorded["session_id"], "[[sim: chunks=2]] redirect me"])
        C.eq((r.returncode, last_line(r), r.stdout), (1, "veil ask: " + line, b""),
             f"the server sends {what}: the enclave refuses it")
        C.eq(proxy.tags_put(), [], f"{what}: no history tag")
    proxy.reset()


def check_request_shape(proxy, cfg, stack, token, priv_hex):
    """What went out: one sealed request, its session made first; what came back: a
    tagged exchange whose tag an independent implementation computes too."""
    proxy.reset()
    r = veil(cfg, ["ask", "--json", "[[sim: chunks=3]] bound one"])
    C.eq(r.returncode, 0, f"ask: {err(r)}")
    j = json.loads(r.stdout) if r.returncode == 0 else {}
    sid = j.get("session_id", "")
    C.eq(j.get("answer"), expected_answer("bound one", 3), "ask: the verified answer")
    order = [(m, p) for m, p, _ in proxy.seen if m in ("POST", "PUT")]
    C.eq(order, [("POST", "/api/v1/chat/sessions"), ("POST", STREAM),
                 ("PUT", f"/api/v1/chat/sessions/{sid}/messages/{messages(stack, token, sid)[1]['id']}/history-tag")],
         "the session first, then the stream, then the tag")
    body = proxy.bodies("POST", STREAM)[0]
    C.eq(sorted(body), ["client_transport_public_key", "enclave_public_key", "encrypted_request", "model", "session_id",
                        "stream_format"],
         "the body: format 3's fields only (no encrypted_message, no encrypted_history)")
    C.eq(body["enclave_public_key"], call(stack.url, "GET", "/api/v1/chat/enclave/info", token)[1]["enclave_public_key"],
         "the body names the attested key it was sealed to (another instance answers 409)")
    C.eq((body["stream_format"], body["session_id"]), (3, sid), "stream_format 3, the session named")
    # two more exchanges in the session, one with chat --session
    r = veil(cfg, ["ask", "--session", sid, "[[sim: chunks=2]] bound two"])
    C.eq(r.returncode, 0, f"ask --session: {err(r)}")
    r = veil(cfg, ["chat", "--session", sid], stdin=b"[[sim: chunks=2]] bound three\n\n")
    C.ok(r.returncode == 0 and expected_answer("bound three", 2) in r.stdout.decode(), f"chat --session: {err(r)}")
    body = json.dumps(proxy.bodies("POST", STREAM)[-1])
    C.ok("bound one" not in body and "bound two" not in body and "bound three" not in body,
         "the history and the message travel only inside the sealed request")
    msgs = messages(stack, token, sid)
    C.eq(len(msgs), 6, "three stored exchanges")
    key, prev, ok = history_key(priv_hex), None, True
    for i in range(0, 6, 2):
        want = history_tag(key, sid, prev, msgs[i]["encrypted_content"], msgs[i + 1]["encrypted_content"])
        ok = ok and msgs[i + 1].get("history_tag") == want.hex() and "history_tag" not in msgs[i]
        prev = want
    C.ok(ok, "each stored tag is the independent computation, chained over the session")
    rec = os.path.join(os.path.dirname(cfg), "history_tags")
    C.eq(os.stat(rec).st_mode & 0o777, 0o600, "the local record is 0600")
    C.ok(f"{sid} {prev.hex()}\n" in open(rec).read(), "the record holds the session's last tag")
    r = veil(cfg, ["history", sid])
    C.eq((r.returncode, err(r)), (0, ""), "history: the chain verifies, nothing said")
    C.ok(not marks(r) and "assistant: " + expected_answer("bound three", 2) in r.stdout.decode(),
         f"history: no marks: {r.stdout!r}")
    r = veil(cfg, ["history", "--json", sid])
    turns = json.loads(r.stdout)
    C.eq([(t["exchange"], t["status"]) for t in turns], [(1, "verified")] * 2 + [(2, "verified")] * 2 +
         [(3, "verified")] * 2, "history --json: every message verified, numbered by exchange")
    return sid


def check_legacy_exchange(stack, cfg, token, upub):
    """The original's client (format 1, no tag) in a veil session: unverified, and the
    chain goes on from the last tag."""
    r = veil(cfg, ["ask", "--json", "[[sim: chunks=2]] mixed one"])
    sid = json.loads(r.stdout)["session_id"]
    epub = call(stack.url, "GET", "/api/v1/chat/enclave/info", token)[1]["enclave_public_key"]
    tpriv, tpub = keypair()
    st, ev = sse(stack.url, STREAM, token, {"session_id": sid, "model": MODEL, "client_transport_public_key": tpub,
                                            "encrypted_message": seal(epub, "[[sim: chunks=2]] legacy",
                                                                      "client-to-enclave-transport"),
                                            "encrypted_history": []})
    C.ok(st == 200 and ev[-1]["type"] == "done", "the original's format 1 still works (--legacy-requests allow)")
    r = veil(cfg, ["ask", "--session", sid, "[[sim: chunks=2]] mixed three"])
    C.eq(r.returncode, 0, f"ask --session over an untagged exchange: {err(r)}")
    r = veil(cfg, ["history", sid])
    C.eq(r.returncode, 0, f"history with an untagged exchange: {err(r)}")
    C.ok("[exchange 2: unverified: no history tag (an older or another client's exchange)]\nuser: [[sim: chunks=2]] "
         "legacy" in r.stdout.decode(), f"history: the original client's exchange marked unverified: {r.stdout!r}")
    C.eq(len(marks(r)), 1, "history: only that exchange is marked")
    C.eq(err(r), "veil history: note: 1 exchange(s) and 0 message(s) without a history tag are not verified\n",
         "history: the note on stderr")


def db(stack):
    c = sqlite3.connect(os.path.join(stack.tmp, "data", "veil.db"), timeout=30)
    return c


def new_session(cfg, n=3):
    r = veil(cfg, ["ask", "--json", "[[sim: chunks=2]] ex 1"])
    sid = json.loads(r.stdout)["session_id"]
    for i in range(2, n + 1):
        r = veil(cfg, ["ask", "--session", sid, f"[[sim: chunks=2]] ex {i}"])
        C.eq(r.returncode, 0, f"exchange {i}: {err(r)}")
    return sid


def rows(c, sid):
    return c.execute("SELECT id, role, created_at FROM messages WHERE session_id = ? ORDER BY created_at, id",
                     (sid,)).fetchall()


def refuses_to_continue(proxy, cfg, sid, breaks):
    proxy.reset()
    want = f"the stored history of session {sid} does not verify ({breaks}): see `veil history {sid}`"
    r = veil(cfg, ["ask", "--session", sid, "go on"])
    C.eq((r.returncode, last_line(r)), (1, "veil ask: " + want), f"ask --session refuses ({breaks})")
    r = veil(cfg, ["chat", "--session", sid], stdin=b"go on\n\n")
    C.eq((r.returncode, last_line(r)), (1, "veil chat: " + want), f"chat --session refuses ({breaks})")
    C.eq(proxy.bodies("POST", STREAM), [], f"nothing sent on a broken history ({breaks})")


def check_history_attacks(proxy, cfg, stack, token):
    fail_line = "veil history: the stored history does not verify: {} (marked in the output)"
    # a stored answer replaced with one sealed to the user's own storage key
    sid = new_session(cfg)
    with db(stack) as c:
        mid = rows(c, sid)[3][0]
        f = seal(STORAGE_PUB[0], "FORGED ANSWER", "assistant-message-storage")
        c.execute("UPDATE messages SET ephemeral_public_key=?, iv=?, ciphertext=?, auth_tag=?, hkdf_salt=? WHERE id=?",
                  (f["ephemeral_public_key"], f["iv"], f["ciphertext"], f["auth_tag"], f["hkdf_salt"], mid))
    r = veil(cfg, ["history", sid])
    out = r.stdout.decode()
    C.eq((r.returncode, err(r)), (1, fail_line.format("1 forged, 0 out of order") + "\n"), "a forged answer: reported")
    C.ok("[exchange 2: NOT AUTHENTIC: it does not match its history tag (it was altered, or an exchange before it "
         "was removed)]\nuser: [[sim: chunks=2]] ex 2\n\nassistant: FORGED ANSWER" in out,
         f"a forged answer: marked where it is: {out!r}")
    C.eq(out.count("NOT AUTHENTIC"), 1, "a forged answer: only that exchange (the chain goes on after it)")
    refuses_to_continue(proxy, cfg, sid, "1 forged, 0 out of order")

    # an exchange removed from the middle
    sid = new_session(cfg, 4)
    with db(stack) as c:
        for mid, _, _ in rows(c, sid)[2:4]:
            c.execute("DELETE FROM messages WHERE id = ?", (mid,))
    r = veil(cfg, ["history", sid])
    out = r.stdout.decode()
    C.eq((r.returncode, err(r)), (1, fail_line.format("1 forged, 0 out of order") + "\n"), "a removed exchange: reported")
    C.ok("[exchange 2: NOT AUTHENTIC: it does not match its history tag (it was altered, or an exchange before it "
         "was removed)]\nuser: [[sim: chunks=2]] ex 3" in out, f"a removed exchange: the next one marked: {out!r}")

    # the LAST exchange removed: only this machine's record tells
    sid = new_session(cfg)
    with db(stack) as c:
        for mid, _, _ in rows(c, sid)[4:6]:
            c.execute("DELETE FROM messages WHERE id = ?", (mid,))
    r = veil(cfg, ["history", sid])
    out = r.stdout.decode()
    C.eq((r.returncode, err(r)), (1, fail_line.format("0 forged, 0 out of order, the last exchange missing") + "\n"),
         "the last exchange removed: reported")
    C.ok(out.endswith("[MISSING: the last exchange this machine tagged in this session is not on the server: it was "
                      "removed]\n") and "ex 2" in out, f"the last exchange removed: marked at the end: {out!r}")
    refuses_to_continue(proxy, cfg, sid, "0 forged, 0 out of order, the last exchange missing")

    # two exchanges swapped (their times exchanged)
    sid = new_session(cfg, 4)
    with db(stack) as c:
        m = rows(c, sid)
        for a, b in ((2, 4), (3, 5)):
            c.execute("UPDATE messages SET created_at = ? WHERE id = ?", (m[b][2], m[a][0]))
            c.execute("UPDATE messages SET created_at = ? WHERE id = ?", (m[a][2], m[b][0]))
    r = veil(cfg, ["history", sid])
    out = r.stdout.decode()
    C.eq((r.returncode, err(r)), (1, fail_line.format("0 forged, 3 out of order") + "\n"), "two swapped: reported")
    C.ok("[exchange 2: OUT OF ORDER: its history tag places it right after exchange 3]\nuser: [[sim: chunks=2]] ex 3"
         in out and "[exchange 3: OUT OF ORDER: its history tag places it right after exchange 1]\nuser: "
         "[[sim: chunks=2]] ex 2" in out, f"two swapped: where each belongs: {out!r}")
    refuses_to_continue(proxy, cfg, sid, "0 forged, 3 out of order")

    # the same swap served by the proxy on GET messages, the database intact
    sid = new_session(cfg, 3)
    proxy.reset()
    proxy.messages = lambda j: dict(j, messages=j["messages"][2:4] + j["messages"][0:2] + j["messages"][4:])
    r = veil(cfg, ["history", "--json", sid])
    turns = json.loads(r.stdout) if r.stdout else []
    C.eq((r.returncode, [t["status"] for t in turns[::2]]), (1, ["reordered", "reordered", "reordered"]),
         f"a reordering server: every exchange out of place: {err(r)!r}")
    proxy.reset()
    r = veil(cfg, ["history", sid])
    C.eq(r.returncode, 0, "the same session, served honestly, verifies")


def check_org(stack, tmp, meas):
    """An org member's chat stores to the org key, whose public half the client derives
    from the org private key it opened; a server that substitutes the org's public key
    (the storage key it puts beside the sealed request) is refused by the enclave."""
    clients = {}
    for who, role in (("admin", "admin"), ("member", "member")):
        tok = dev_token(tmp, f"user_org_{who}", org="org_bound", role=role)
        st, _, _ = call(stack.url, "POST", "/api/v1/organizations/sync", tok, {"org_id": "org_bound", "name": "B"})
        C.eq(st, 200, f"org sync ({who})")
        cfg = os.path.join(tmp, who, "config.json")
        r = veil(cfg, ["login", "--server", stack.url, "--token", "-", "--measurements", meas,
                       "--attestation-root", os.path.join(tmp, "nsm", "root.pem")], stdin=tok.encode())
        pc = {"VEIL_PASSCODE": f"{who}-passcode", "VEIL_ORG_PASSCODE": "org-passcode"}
        C.eq(veil(cfg, ["keys", "init"], pc).returncode, 0, f"keys init ({who})")
        C.eq(veil(cfg, ["keys", "unlock"], pc).returncode, 0, f"keys unlock ({who})")
        clients[who] = (cfg, tok, pc)
    acfg, _, apc = clients["admin"]
    C.eq(veil(acfg, ["org", "keys-init"], apc).returncode, 0, "org keys-init")
    C.eq(veil(acfg, ["org", "distribute"], apc).returncode, 0, "org distribute")
    mcfg, mtok, _ = clients["member"]
    r = veil(mcfg, ["ask", "--json", "[[sim: chunks=2]] org bound"])
    C.eq(r.returncode, 0, f"the member's bound ask in the org: {err(r)}")
    sid = json.loads(r.stdout)["session_id"] if r.returncode == 0 else ""
    r = veil(mcfg, ["history", sid])
    C.ok(r.returncode == 0 and not marks(r) and "org bound" in r.stdout.decode(),
         f"the org session's chain verifies with the org key: {err(r)!r}")
    msgs = messages(stack, mtok, sid)
    C.ok(len(msgs) == 2 and msgs[1].get("history_tag"), "the org exchange is stored and tagged")
    # the attack: the server puts its own key where the org's public key belongs
    attacker, attacker_pub = keypair()
    with db(stack) as c:
        c.execute("UPDATE organizations SET org_public_key = ? WHERE id = 'org_bound'", (attacker_pub,))
    r = veil(mcfg, ["ask", "--json", "[[sim: chunks=2]] org secret"])
    C.eq((r.returncode, last_line(r)), (1, "veil ask: The request was altered in transit: refused"),
         "a substituted org public key: the enclave refuses the request (binding_mismatch)")
    st, ss, _ = call(stack.url, "GET", "/api/v1/chat/sessions?limit=100", mtok)
    stored = [m for x in ss["sessions"] for m in messages(stack, mtok, x["id"])]
    C.eq(len(stored), 2, "nothing was stored under the substituted key")


def check_record_safety(cfg, tmp):
    """The attack: another local user plants a link where the client keeps its record of
    last tags (to make it write elsewhere, or read a record that hides a removed
    exchange), or the record is left writable by others."""
    d = os.path.dirname(cfg)
    rec = os.path.join(d, "history_tags")
    sid = new_session(cfg, 1)
    remedy = "(move it away to start a new record)"
    saved = rec + ".saved"
    os.rename(rec, saved)
    target = os.path.join(tmp, "elsewhere")
    open(target, "w").write("original\n")
    os.symlink(target, rec)
    r = veil(cfg, ["history", sid])
    C.eq((r.returncode, err(r)), (1, f"veil history: refusing the history record {rec}: it is a symbolic link {remedy}\n"),
         "a link at the record: history refuses")
    r = veil(cfg, ["ask", "--session", sid, "[[sim: chunks=2]] through a link"])
    C.eq((r.returncode, last_line(r)), (1, f"veil ask: refusing the history record {rec}: it is a symbolic link {remedy}"),
         "a link at the record: ask --session refuses")
    r = veil(cfg, ["ask", "[[sim: chunks=2]] new chat"])
    C.eq((r.returncode, last_line(r)), (0, f"veil ask: warning: the history tag was not recorded here (refusing the "
                                           f"history record {rec}: it is a symbolic link {remedy})"),
         "a link at the record: a verified answer, the record not written through the link")
    C.eq(open(target).read(), "original\n", "the link's target is untouched")
    os.unlink(rec)
    os.symlink(target, rec + ".tmp")
    r = veil(cfg, ["ask", "[[sim: chunks=2]] new chat"])
    C.eq((r.returncode, last_line(r)), (0, f"veil ask: warning: the history tag was not recorded here (refusing to "
                                           f"write {rec}.tmp: it is a symbolic link; remove it)"),
         "a link at the record's temp file: not followed")
    C.eq(open(target).read(), "original\n", "the temp link's target is untouched")
    os.unlink(rec + ".tmp")
    os.rename(saved, rec)
    os.chmod(rec, 0o620)
    r = veil(cfg, ["history", sid])
    C.eq((r.returncode, err(r)), (1, f"veil history: refusing the history record {rec}: mode 0620; it must be 0600 "
                                     f"{remedy}\n"), "a record others may change is refused")
    os.chmod(rec, 0o600)
    r = veil(cfg, ["history", sid])
    C.eq(r.returncode, 0, f"the record back in place: {err(r)}")


STORAGE_PUB = [None]


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        proxy = None
        try:
            stack.start_enclave()
            stack.start_veild("nitro", extra={"VEIL_ATTEST_USER_RATE": "1000"})
            proxy = Proxy(stack.veild.port)
            meas = os.path.join(tmp, "measurements.json")
            r = veil(os.path.join(tmp, "none.json"), ["attest", "sim-measurements", os.path.join(BIN, "veil-enclave")])
            open(meas, "wb").write(r.stdout)
            token = dev_token(tmp, "user_bound")
            cfg = os.path.join(tmp, "cli", "config.json")
            r = veil(cfg, ["login", "--server", proxy.url, "--token", "-", "--measurements", meas,
                           "--attestation-root", os.path.join(tmp, "nsm", "root.pem")], stdin=token.encode())
            C.eq(r.returncode, 0, f"login: {err(r)}")
            pc = {"VEIL_PASSCODE": "bound-passcode"}
            C.eq(veil(cfg, ["keys", "init"], pc).returncode, 0, "keys init")
            C.eq(veil(cfg, ["keys", "unlock"], pc).returncode, 0, "keys unlock")
            priv_hex = open(os.path.join(tmp, "cli", "private_key")).read().strip()
            STORAGE_PUB[0] = call(stack.url, "GET", "/api/v1/users/me/encryption-status", token)[1]["public_key"]
            for name, fn in [("shape", lambda: check_request_shape(proxy, cfg, stack, token, priv_hex)),
                             ("legacy", lambda: check_legacy_exchange(stack, cfg, token, STORAGE_PUB[0])),
                             ("answer", lambda: check_answer_attacks(proxy, cfg)),
                             ("request", lambda: check_request_attacks(proxy, cfg)),
                             ("history", lambda: check_history_attacks(proxy, cfg, stack, token)),
                             ("record", lambda: check_record_safety(cfg, tmp)),
                             ("org", lambda: check_org(stack, tmp, meas))]:
                try:
                    fn()
                except Exception as e:
                    import traceback
                    traceback.print_exc()
                    C.ok(False, f"{name}: {e!r}")
        finally:
            if proxy:
                proxy.stop()
            for name, code in stack.stop().items():
                C.ok(code == 0, f"{name} exited cleanly ({code})")
            for name, p in stack.procs.items():
                C.ok(p.sanitizer_clean(), f"{name}: no sanitizer report")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

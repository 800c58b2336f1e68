#!/usr/bin/python3
"""Many instances (issue K): two full veil instances on one PostgreSQL behind a load
balancer without stickiness.

Each instance is what an EC2 host runs: veild (nitro mode) with its own veil-enclave
(its own key pair), veil-proxy, Bedrock simulator and IMDS simulator. The enclaves
share the simulated NSM's directory, so both attest under one root, as real enclaves
all chain to AWS's. Both veilds start at the same moment on one fresh database (the
migrations race), and a round-robin TCP proxy (veiltest.RoundRobinProxy) sends each
new connection to the next instance.

- Each veild pushes credentials to its own enclave, from its own IMDS, and again on
  its refresh interval (each enclave logs credentials_set at least twice).
- `veil chat` through the proxy: the exchanges alternate between the instances, so
  the client is answered 409 by the instance whose enclave it did not attest; it
  verifies the offered document, attests that enclave afresh (a new nonce, on the
  same kept-alive connection) and retries once: every turn is answered, both
  instances stored messages. The session's history reads the same, complete, from
  either instance, and `veil history` verifies every tag through the proxy.
- The route: a chat naming the other instance's key gets 409 with this instance's
  key and a document that binds it (verified here with `veil attest verify`), and
  nothing starts (no session row, no stream); the right key streams; a malformed key
  is 422; a request without the field (the original's clients) still works; one
  sealed to the other enclave without the field gets the original's error event,
  saying the enclave key may have changed.
- Per-user stream limits are per instance (VEIL_USER_MAX_STREAMS=1): a second chat
  on the same instance is 429, on the other it runs.
- Behind a load balancer with sticky sessions (an ALB's cookie, played by an HTTP
  proxy here that routes each request on its own), the CLI sends the cookie back:
  a whole run stays on one instance, with no 409.
- Attacks, by a hostile instance (an HTTP proxy in front of one veild) that answers
  the chat with 409: a key its document does not bind (refused on `public-key`), a
  key without a document (`missing`), a genuine key of the other instance but a
  substituted key in the fresh attestation (`public-key`), and a 409 again on the
  retry (one line, fail closed). In each, nothing more reaches the stream route.
Waits are on events (log lines, answers) with generous bounds; nothing is timed.
Prints `N passed, M failed`.
"""
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (BIN, Checks, HttpRelay, Postgres, Proc, RoundRobinProxy, SseStream, Stack, TempDir,  # noqa: E402
                      call, dev_token, expected_answer, keypair, run, seal, sse)

C = Checks()
INFO = "/api/v1/chat/enclave/info"
STREAM = "/api/v1/chat/encrypted/stream"
MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
OTHER_KEY = "The request was sealed to another enclave key; verify this instance's attestation and retry"
DECRYPT_FAILED = ("Could not decrypt the message: the enclave key may have changed, fetch the enclave key again "
                  "and retry")
WAIT_S = 90


def veil(cfg, args, stdin=None, env=None):
    e = dict(os.environ, VEIL_CONFIG=cfg)
    e.update(env or {})
    return subprocess.run([os.path.join(BIN, "veil")] + args, env=e, input=stdin, capture_output=True, timeout=300)


def err(r):
    return r.stderr.decode(errors="replace")


def last_line(r):
    lines = err(r).splitlines()
    return lines[-1] if lines else ""


# ---- two instances ---------------------------------------------------------------------

class Instance:
    """One host's worth: the simulators, veil-proxy and veil-enclave (a Stack), and a
    veild started by start_veilds together with the other instance's."""

    def __init__(self, tmp, name, nsm_dir):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.stack = Stack(self.dir)
        self.stack.start_enclave(nsm_dir=nsm_dir)
        self.veild = None
        self.url = None

    def veild_proc(self, db_url, jwks):
        env = self.stack.veild_env("nitro", db_url, {
            "CLERK_JWKS_FILE": jwks,  # one identity provider for every instance
            "ENCLAVE_CREDENTIAL_REFRESH_SECONDS": "10",  # the refresh, seen within the test
            "VEIL_ATTEST_USER_RATE": "1000",  # one user attests many times here
            "VEIL_USER_MAX_STREAMS": "1"})
        self.veild = Proc(f"veild-{self.name}", [os.path.join(BIN, "veild")], env, self.dir)
        self.stack.procs[self.veild.name] = self.veild  # stopped with the stack
        return self.veild

    def up(self):
        self.veild.wait_listening(60)
        self.url = f"http://127.0.0.1:{self.veild.port}"

    def key(self, token):
        st, j, _ = call(self.url, "GET", INFO, token)
        return j["enclave_public_key"] if st == 200 else None

    def refused_409s(self):
        return self.veild.text().count("event=stream_refused reason=other_enclave_key")

    def stored(self):
        return self.veild.text().count("event=stream_stored")


def start_instances(tmp, pg, out):
    """Appends each instance to out as it is made (so the caller stops what started)."""
    nsm = os.path.join(tmp, "nsm")
    for name in ("a", "b"):
        out.append(Instance(tmp, name, nsm))
    a, b = out
    jwks = os.path.join(a.dir, "jwks.json")
    # started back to back, before either is up: they migrate one fresh database at once
    for i in (a, b):
        i.veild_proc(pg.url, jwks)
    for i in (a, b):
        i.up()
    return a, b


def check_start(a, b, pg, token):
    for i in (a, b):
        st, body, _ = call(i.url, "GET", "/health")
        C.eq((st, body and body.get("database")), (200, "connected"), f"{i.name}: up on the shared database")
    rows = pg.query("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version ORDER BY version")
    C.ok(rows and all(n == "1" for _, n in rows), f"every migration applied exactly once by the two: {rows}")
    ka, kb = a.key(token), b.key(token)
    C.ok(ka and kb and ka != kb, "each instance's enclave has its own key")


def check_credentials(a, b):
    """Each veild fetched from its own IMDS and pushed to its own enclave, then again."""
    for i in (a, b):
        C.ok(i.stack.enclave.wait_log("event=credentials_set", WAIT_S, 2),
             f"{i.name}: its enclave got SET_CREDENTIALS, then a refresh")
        C.ok(i.stack.imds.wait_log("event=credentials_issued", WAIT_S, 1), f"{i.name}: from its own IMDS")
        C.ok(i.veild.wait_log("event=credentials_pushed", WAIT_S, 2), f"{i.name}: its veild pushed them, twice")


# ---- the route --------------------------------------------------------------------------

def format1(key, prompt, extra=None):
    tpriv, tpub = keypair()
    body = {"model": MODEL, "client_transport_public_key": tpub, "encrypted_history": [],
            "encrypted_message": seal(key, prompt, "client-to-enclave-transport")}
    body.update(extra or {})
    return body


def verify_offered(tmp, body, root, meas):
    """The 409's document binds the key it names, under the shared root and PCRs."""
    path = os.path.join(tmp, "offered.json")
    with open(path, "w") as f:
        json.dump({"enclave_public_key": body["enclave_public_key"], "attestation": body["attestation"]}, f)
    r = run([os.path.join(BIN, "veil"), "attest", "verify", path, "--root", root, "--public-key",
             body["enclave_public_key"], "--user-data", b"veil-transport-v1".hex(), "--measurements", meas],
            check=False)
    return r.returncode == 0, r.stderr.decode()


def check_route(tmp, a, b, pg, token, root, meas):
    ka, kb = a.key(token), b.key(token)
    sessions = lambda: pg.query("SELECT COUNT(*) FROM sessions")[0][0]  # noqa: E731
    before = sessions()

    # sealed to A's key, sent to B: 409 with B's key and a document binding it; nothing starts
    refused = b.refused_409s()
    starts = b.veild.text().count("event=stream_start")
    st, body = sse(b.url, STREAM, token, format1(ka, "never opened", {"enclave_public_key": ka}))
    C.eq(st, 409, "a chat sealed to another instance's key: 409")
    C.eq(sorted(body) if isinstance(body, dict) else body, ["attestation", "detail", "enclave_public_key"],
         f"the 409's members: {body}")
    C.eq((body or {}).get("detail"), OTHER_KEY, "the 409's detail")
    C.eq((body or {}).get("enclave_public_key"), kb, "the 409 names this instance's key")
    ok, why = verify_offered(tmp, body, root, meas)
    C.ok(ok, f"its attestation binds that key under the root and measurements: {why}")
    C.eq(b.refused_409s(), refused + 1, "B logged the refusal")
    C.eq(sessions(), before, "the 409 created no session row")
    C.eq(b.veild.text().count("event=stream_start"), starts, "no stream started")
    # upper-case hex of the right key is the right key
    st, ev = sse(b.url, STREAM, token, format1(kb, "[[sim: chunks=2]] right key",
                                                {"enclave_public_key": kb.upper()}))
    C.ok(st == 200 and ev[-1] == {"type": "done"}, f"sealed to this instance's key (upper-case hex): streams {ev}")
    # a malformed key is a 422, never a 409
    st, body = sse(a.url, STREAM, token, format1(ka, "x", {"enclave_public_key": ka[:32]}))
    C.ok(st == 422 and body["detail"][0]["loc"] == ["body", "enclave_public_key"], f"a short key: 422 {body}")
    # the original's clients send no such field: unchanged
    for i, k in ((a, ka), (b, kb)):
        st, ev = sse(i.url, STREAM, token, format1(k, f"[[sim: chunks=2]] original {i.name}"))
        C.ok(st == 200 and [e["type"] for e in ev][0] == "session" and ev[-1] == {"type": "done"},
             f"{i.name}: a request without the field streams as before {ev}")
    # ... and one sealed to the other enclave gets the original's error event, saying why
    st, ev = sse(b.url, STREAM, token, format1(ka, "sealed to A, sent to B"))
    C.eq((st, [e.get("type") for e in ev]), (200, ["session", "error"]), "without the field: the enclave refuses")
    C.eq(ev[-1].get("message") if ev else None, DECRYPT_FAILED, "its message says the key may have changed")


def check_limits_per_instance(a, b, token):
    """VEIL_USER_MAX_STREAMS=1 on each: the user's second chat is 429 on the same
    instance and runs on the other (the limit is per instance: N instances, N x)."""
    held = SseStream(a.url, token, "[[sim: chunks=30 interval-ms=200]] held")
    try:
        C.eq(held.status, 200, "a held chat on A")
        C.eq(held.next().get("type"), "session", "it started")
        st, body = sse(a.url, STREAM, token, format1(a.key(token), "[[sim: chunks=1]] second on A"))
        C.eq(st, 429, f"a second chat on A: 429 {body}")
        st, ev = sse(b.url, STREAM, token, format1(b.key(token), "[[sim: chunks=1]] second on B"))
        C.ok(st == 200 and ev[-1] == {"type": "done"}, f"the same user's chat on B runs meanwhile {ev}")
    finally:
        held.close()
    C.ok(a.veild.wait_log("event=stream_client_gone", WAIT_S), "A let the held chat go")


# ---- the CLI through the load balancer -------------------------------------------------

def login(tmp, name, url, token, root, meas, init=True):
    cfg = os.path.join(tmp, name, "config.json")
    r = veil(cfg, ["login", "--server", url, "--token", "-", "--measurements", meas, "--attestation-root", root],
             stdin=token.encode())
    C.eq(r.returncode, 0, f"{name}: login {err(r)}")
    pc = {"VEIL_PASSCODE": "instances-passcode"}
    if init:
        C.eq(veil(cfg, ["keys", "init"], env=pc).returncode, 0, f"{name}: keys init")
    C.eq(veil(cfg, ["keys", "unlock"], env=pc).returncode, 0, f"{name}: keys unlock")
    return cfg


class StickyLB(HttpRelay):
    """An HTTP load balancer as an ALB with duration-based stickiness behaves: each
    request without its cookie goes to the next instance (per request, not per
    connection), every answer sets AWSALB (and AWSALBCORS) naming the instance that
    served it, and a request that sends it back goes there. routed: (instance index,
    whether the request carried the cookie), per request."""

    def __init__(self, ports):
        self.ports = ports
        self.turn = 0
        self.routed = []
        super().__init__()

    def upstream(self, h):
        m = re.search(r"(?:^|;\s*)AWSALB=t(\d)(?:;|$)", h.headers.get("Cookie") or "")
        if m and int(m.group(1)) < len(self.ports):
            i = int(m.group(1))
        else:
            i, self.turn = self.turn % len(self.ports), self.turn + 1
        self.routed.append((i, m is not None))
        h.instance = i
        return self.ports[i]

    def headers(self, h):
        i = h.instance
        return [("Set-Cookie", f"AWSALB=t{i}; Expires=Tue, 12 Dec 2034 03:04:05 GMT; Path=/"),
                ("Set-Cookie", f"AWSALBCORS=t{i}; Expires=Tue, 12 Dec 2034 03:04:05 GMT; Path=/; SameSite=None; "
                               "Secure")]


def check_sticky(tmp, a, b, token, root, meas):
    """Behind a load balancer with sticky sessions (the normal setup) the CLI sends the
    balancer's cookie back, so a whole run stays on one instance: no 409, no second
    attestation. A new run may land on the other instance, and is sticky there."""
    lb = StickyLB([a.veild.port, b.veild.port])
    try:
        cfg = login(tmp, "sticky", lb.url, token, root, meas, init=False)
        for run_no in range(2):
            refused = a.refused_409s() + b.refused_409s()
            lb.routed = []
            r = veil(cfg, ["chat"], stdin=b"[[sim: chunks=2]] sticky one\n[[sim: chunks=2]] sticky two\n\n")
            C.ok(r.returncode == 0 and expected_answer("sticky two", 2) in r.stdout.decode(),
                 f"run {run_no + 1}: a chat through the sticky balancer {err(r)!r}")
            first = lb.routed[0][0] if lb.routed else None
            C.ok(len(lb.routed) > 5 and lb.routed[0][1] is False and
                 all(r == (first, True) for r in lb.routed[1:]),
                 f"run {run_no + 1}: after the first answer every request carried the cookie, to one instance "
                 f"{lb.routed}")
            C.eq(a.refused_409s() + b.refused_409s(), refused, f"run {run_no + 1}: no 409")
    finally:
        lb.stop()


def check_cli_chat(tmp, a, b, lb, cfg, token):
    refused = a.refused_409s() + b.refused_409s()
    stored = (a.stored(), b.stored())
    turns = [f"[[sim: chunks=2]] turn {n}" for n in range(1, 5)]
    r = veil(cfg, ["chat"], stdin=("\n".join(turns) + "\n\n").encode())
    out = r.stdout.decode()
    C.eq(r.returncode, 0, f"chat through the round-robin proxy exits 0: {err(r)!r}")
    C.ok(all(expected_answer(t.split("]] ")[1], 2) in out for t in turns), f"every turn is answered: {out!r}")
    C.ok("veil chat: " not in err(r).replace("veil chat: note:", ""), f"no error line: {err(r)!r}")
    n409 = a.refused_409s() + b.refused_409s() - refused
    C.ok(n409 >= 1, f"the client met the 409 ({n409} times) and went on")
    C.ok(a.stored() > stored[0] and b.stored() > stored[1], "both instances stored some of its exchanges")
    C.ok(set(lb.picked) == {0, 1}, "the proxy used both instances")
    m = re.search(r"session (\S+)\n", err(r))
    sid = m.group(1) if m else None
    C.ok(sid is not None, "chat names its session")
    if not sid:
        return
    # the history is the same, and complete, read from either instance
    views = []
    for i in (a, b):
        st, j, _ = call(i.url, "GET", f"/api/v1/chat/sessions/{sid}/messages", token)
        views.append(j.get("messages") if st == 200 else None)
    C.ok(views[0] is not None and len(views[0]) == 8, f"8 messages stored: {views[0] and len(views[0])}")
    C.eq(views[0], views[1], "A and B read the same history")
    C.eq([m["role"] for m in views[0] or []], ["user", "assistant"] * 4, "in order")
    C.ok(all(m.get("history_tag") for m in views[0] or [] if m["role"] == "assistant"), "every exchange tagged")
    for n in range(2):  # two runs: one connection each, so one through each instance
        r = veil(cfg, ["history", sid])
        text = r.stdout.decode()
        C.ok(r.returncode == 0 and all(t in text for t in turns) and "[exchange" not in text,
             f"veil history through the proxy (run {n + 1}): complete, every tag verified {err(r)!r}")


# ---- the hostile instance ----------------------------------------------------------------

class Hostile(HttpRelay):
    """A hostile instance: an HTTP relay in front of one veild. offer: what it answers
    the chat with, a 409 body (None: relay); offer_again: 409 the retry too;
    swap_info: the fresh /enclave/info after the 409 names another key (its document
    unchanged). seen: every (method, path). Kept-alive, as veild: the client pins its
    exchange."""

    def __init__(self, port):
        self.reset()
        super().__init__(port)

    def reset(self, offer=None, offer_again=False, swap_info=None):
        self.offer, self.offer_again, self.swap_info, self.seen = offer, offer_again, swap_info, []

    def request(self, h, raw):
        self.seen.append((h.command, h.path))
        if h.command == "POST" and h.path == STREAM and self.offer is not None and \
                (self.streams() == 1 or self.offer_again):
            return 409, json.dumps(self.offer).encode(), "application/json"
        return None

    def answer(self, h, raw, status, data, ctype):
        if self.swap_info and h.path.startswith(INFO + "?nonce=") and self.streams() >= 1 and status == 200:
            j = json.loads(data)
            j["enclave_public_key"] = self.swap_info
            data = json.dumps(j).encode()
        return status, data, ctype

    def streams(self):
        return sum(1 for m, p in self.seen if m == "POST" and p == STREAM)

    def fresh_infos_after_409(self):
        first = next((k for k, s in enumerate(self.seen) if s == ("POST", STREAM)), len(self.seen))
        return [p for m, p in self.seen[first:] if p.startswith(INFO)]


def check_hostile(tmp, a, b, token, root, meas):
    """Each attack names what it stops; the client must refuse with its line, and
    nothing more may reach the stream route than the one the 409 answered."""
    hostile = Hostile(a.veild.port)
    try:
        cfg = os.path.join(tmp, "hostile", "config.json")
        r = veil(cfg, ["login", "--server", hostile.url, "--token", "-", "--measurements", meas,
                       "--attestation-root", root], stdin=token.encode())
        C.eq(r.returncode, 0, f"login through the hostile instance {err(r)}")
        pc = {"VEIL_PASSCODE": "instances-passcode"}  # the user's keys exist: unlock here
        C.eq(veil(cfg, ["keys", "unlock"], env=pc).returncode, 0, "keys unlock")
        r = veil(cfg, ["ask", "[[sim: chunks=2]] honest"])
        C.ok(r.returncode == 0 and r.stdout.decode().startswith(expected_answer("honest", 2)),
             f"relayed honestly, an ask works {err(r)!r}")
        genuine = call(a.url, "GET", INFO, token)[1]  # A's key with its (cached) document
        other = call(b.url, "GET", INFO, token)[1]    # B's, genuine too
        attacker = keypair()[1]

        # attack: the 409 offers the attacker's key with a genuine document of another
        # key (it would read everything sealed to it)
        hostile.reset({"detail": OTHER_KEY, "enclave_public_key": attacker, "attestation": genuine["attestation"]})
        r = veil(cfg, ["ask", "secret"])
        C.ok(r.returncode == 1 and last_line(r).startswith("veil ask: attestation: public-key: "),
             f"a 409 offering a key its document does not bind: refused on public-key {err(r)!r}")
        C.eq(hostile.streams(), 1, "offered key: nothing sent after the 409")
        C.eq(hostile.fresh_infos_after_409(), [], "offered key: not even asked for (refused at once)")

        # attack: the 409 offers a key with no document
        hostile.reset({"detail": OTHER_KEY, "enclave_public_key": attacker, "attestation": None})
        r = veil(cfg, ["ask", "secret"])
        C.eq(last_line(r), "veil ask: attestation: missing: the server offered another enclave key without an "
                           "attestation document (an enclave without an NSM?)", "a 409 without a document: missing")
        C.eq((r.returncode, hostile.streams()), (1, 1), "no document: nothing sent after the 409")

        # attack: a genuine offer (B's key and document), then a substituted key in the
        # fresh attestation: the fresh check decides, and refuses
        hostile.reset({"detail": OTHER_KEY, **other}, swap_info=attacker)
        r = veil(cfg, ["ask", "secret"])
        C.ok(r.returncode == 1 and last_line(r).startswith("veil ask: attestation: public-key: "),
             f"a substituted key in the fresh attestation: refused on public-key {err(r)!r}")
        C.eq(hostile.streams(), 1, "substituted fresh key: nothing sent after the 409")
        C.eq(len(hostile.fresh_infos_after_409()), 1, "the client asked for a fresh attestation once")

        # a 409 on the retry too: once is the limit, then one line
        hostile.reset({"detail": OTHER_KEY, **other}, offer_again=True)
        r = veil(cfg, ["ask", "secret"])
        C.eq((r.returncode, last_line(r)), (1, "veil ask: the enclave key changed again during the retry (another "
                                               "instance answered it): nothing was sealed to an unverified key; send "
                                               "again"), "a second 409: fail closed with one line")
        C.eq(hostile.streams(), 2, "a second 409: exactly one retry")
        infos = hostile.fresh_infos_after_409()
        C.ok(len(infos) == 1 and re.fullmatch(INFO + r"\?nonce=[0-9a-f]{64}", infos[0]) is not None,
             f"the retry was sealed only after a fresh attestation with a nonce: {infos}")
    finally:
        hostile.stop()


def main():
    pg = Postgres()
    with TempDir() as tmp:
        instances, lb = [], None
        try:
            pg.start()
            a, b = start_instances(tmp, pg, instances)
            token = dev_token(a.dir, "user_many")
            C.eq(call(a.url, "POST", "/api/v1/users/sync", token)[0], 200, "user sync")
            root = os.path.join(tmp, "nsm", "root.pem")
            meas = os.path.join(tmp, "measurements.json")
            with open(meas, "wb") as f:
                f.write(run([os.path.join(BIN, "veil"), "attest", "sim-measurements",
                             os.path.join(BIN, "veil-enclave")]).stdout)
            lb = RoundRobinProxy([a.veild.port, b.veild.port])
            lb_url = f"http://127.0.0.1:{lb.port}"
            C.run("two instances on one database", check_start, a, b, pg, token)
            cfg = login(tmp, "cli", lb_url, token, root, meas)
            C.run("each instance refreshes its own enclave", check_credentials, a, b)
            C.run("veil chat through both instances", check_cli_chat, tmp, a, b, lb, cfg, token)
            C.run("the 409 and the original's requests", check_route, tmp, a, b, pg, token, root, meas)
            C.run("per-user limits are per instance", check_limits_per_instance, a, b, token)
            C.run("a load balancer with sticky sessions", check_sticky, tmp, a, b, token, root, meas)
            C.run("a hostile instance's 409", check_hostile, tmp, a, b, token, root, meas)
        finally:
            if lb:
                lb.stop()
            for i in instances:
                for name, code in i.stack.stop().items():
                    C.ok(code == 0, f"{i.name}: {name} exited cleanly ({code})")
                for name, p in i.stack.procs.items():
                    C.ok(p.sanitizer_clean(), f"{i.name}: {name}: no sanitizer report")
            pg.stop()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

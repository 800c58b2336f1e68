#!/usr/bin/python3
"""Integration: veil-enclave with one event loop per vCPU (--workers; issue K), against
the real program (veil-bedrock-sim -> veil-proxy -> veil-enclave over unix sockets).
Which worker serves a connection is read from HEALTH ("worker"); two connections
held open at once go to different workers (the acceptor picks the one with fewest).

- a format-3 request replayed on a connection served by the other worker is refused
  replayed_request (one replay table for the process), and of the same request sent
  on both workers at once exactly one is served;
- credentials set on one worker's connection are used by streams on every worker; a
  rotation reaches every worker, and a stream that started keeps the credentials it
  signed with;
- --max-streams holds across workers: the stream past it, on either worker, is busy;
- SIGTERM: the streams on both workers finish, every worker stops, the process exits
  0; with a short --drain-seconds both workers end their streams shutting_down;
- --max-connections (ENCLAVE_MAX_CONNECTIONS) across workers: the connection past it
  gets the busy line "Too many connections (limit N)" and is closed; a freed place is
  taken again;
- --replay-max (ENCLAVE_REPLAY_MAX): when every id is in its window a new bound
  request is busy, and a replay is still refused (never forgotten);
- veil-load (the bench's load) against two workers: its streams spread over both, every
  one checked; with --open-every (one chunk in N opened) every chunk is still counted;
- --workers and the two limits in --help, bad values refused, ENCLAVE_WORKERS and the
  default (the online CPUs).
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (BIN, SEED, Checks, Stack, TempDir, expected_answer, keypair, open_ep, seal,  # noqa: E402
                      sv3_request, wait_for)

MODEL = "us.meta.llama3-1-8b-instruct-v1:0"
C = Checks()


def sim_creds(gen=1):
    """The credentials veil-imds-sim mints from SEED (tools/sim_creds.h): the simulator accepts them."""
    akid = "ASIAVEILSIM%09d" % gen
    mac = lambda label: hmac.new(SEED.encode(), (label + akid).encode(), hashlib.sha256).digest()  # noqa: E731
    return {"access_key_id": akid, "secret_access_key": base64.b64encode(mac("secret:")).decode()[:40],
            "session_token": mac("token:").hex()}


class Conn:
    """A newline-framed connection to the enclave, kept open."""

    def __init__(self, addr, timeout=20):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        self.s.connect(addr.split(":", 1)[1])
        self.buf = b""

    def send(self, obj):
        self.s.sendall(json.dumps(obj).encode() + b"\n")

    def line(self):
        """The next line as JSON, or None at EOF."""
        while b"\n" not in self.buf:
            data = self.s.recv(65536)
            if not data:
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, obj):
        self.send(obj)
        return self.line()

    def events(self):
        """Every event of a stream up to its final one."""
        out = []
        while True:
            ev = self.line()
            if ev is None:
                return out
            out.append(ev)
            if ev.get("is_final") or ev.get("status"):
                return out

    def eof(self):
        try:
            return self.line() is None
        except (ConnectionResetError, socket.timeout):
            return False

    def close(self):
        self.s.close()


def health(c):
    return c.ask({"command": "HEALTH"})


def on_each_worker(addr, n=2):
    """n open connections, one on each worker (checked with HEALTH); extra tries are closed."""
    got, spare = {}, []
    for _ in range(8 * n):
        c = Conn(addr)
        w = health(c)["worker"]
        if w in got:
            spare.append(c)
        else:
            got[w] = c
        if len(got) == n:
            break
    for c in spare:
        c.close()
    assert len(got) == n, f"connections reached workers {sorted(got)} only"
    return [got[i] for i in sorted(got)]


def set_creds(c, creds):
    r = c.ask({"command": "SET_CREDENTIALS", "credentials": creds})
    C.eq(r.get("status"), "success", f"SET_CREDENTIALS ({r})")


class Chat:
    """A format-1 CHAT_STREAM: its keys, and its answer opened chunk by chunk."""

    def __init__(self, epub, prompt):
        self.cpriv, self.cpub = keypair()
        self.spriv, self.spub = keypair()
        self.req = {"command": "CHAT_STREAM", "encrypted_message": seal(epub, prompt, "client-to-enclave-transport"),
                    "encrypted_history": [], "storage_public_key": self.spub, "client_public_key": self.cpub,
                    "model_id": MODEL, "session_id": "s-1"}

    def text(self, events):
        return "".join(open_ep(self.cpriv, e["encrypted_content"], "enclave-to-client-transport").decode()
                       for e in events if "encrypted_content" in e)


def stream(c, epub, prompt):
    """Sends a stream on c; returns (chat, events to the end)."""
    ch = Chat(epub, prompt)
    c.send(ch.req)
    return ch, c.events()


def bound(epub, prompt, request_id=None):
    cpriv, cpub = keypair()
    spriv, spub = keypair()
    ep, _ = sv3_request(epub, prompt, [], cpub, spub, MODEL, "s-1", request_id=request_id)
    return {"command": "CHAT_STREAM", "stream_format": 3, "encrypted_request": ep, "client_public_key": cpub,
            "storage_public_key": spub, "model_id": MODEL, "session_id": "s-1"}


def served(events):
    return bool(events) and events[-1].get("stream_end") is not None


def one_error(events, code, what):
    C.eq(len(events), 1, f"{what}: exactly one event")
    ev = events[-1] if events else {}
    C.ok(ev.get("is_final") is True and ev.get("error_code") == code, f"{what}: {code} ({ev})")
    return ev


def start(stack, *extra):
    stack.start_enclave(("--workers", "2") + extra)
    c = Conn(stack.enclave_addr)
    h = health(c)
    c.close()
    C.eq(h["workers"], 2, f"the enclave runs 2 workers ({' '.join(extra)})")
    return h["public_key"]


# ---- the tests ----------------------------------------------------------------------

def replay_across_workers(stack):
    epub = start(stack)
    a, b = on_each_worker(stack.enclave_addr)
    set_creds(a, sim_creds())
    # the attack: the parent replays a bound request on a connection the other worker serves
    req = bound(epub, "[[sim: chunks=2]] once")
    a.send(req)
    C.ok(served(a.events()), "format 3 on worker 0: served")
    one_error(stream_on(b, req), "replayed_request", "the same request on worker 1")
    req = bound(epub, "[[sim: chunks=2]] once more")
    b.send(req)
    C.ok(served(b.events()), "format 3 on worker 1: served")
    one_error(stream_on(a, req), "replayed_request", "the same request back on worker 0")
    # both at once: one table, one winner
    req = bound(epub, "[[sim: chunks=2]] raced")
    a.send(req)
    b.send(req)
    outcomes = [a.events(), b.events()]
    C.eq(sum(served(e) for e in outcomes), 1, "the same request on both workers at once: served once")
    C.eq(sum(len(e) == 1 and e[0].get("error_code") == "replayed_request" for e in outcomes), 1,
         "... and refused replayed_request once")
    a.close()
    b.close()


def stream_on(c, req):
    c.send(req)
    return c.events()


def credentials_across_workers(stack):
    epub = start(stack)
    a, b = on_each_worker(stack.enclave_addr)
    C.eq(health(b)["has_credentials"], False, "a fresh enclave has no credentials")
    set_creds(a, sim_creds(1))  # on worker 0
    C.eq(health(b)["has_credentials"], True, "worker 1 sees the credentials set on worker 0")
    for name, c in (("worker 0", a), ("worker 1", b)):
        ch, ev = stream(c, epub, f"[[sim: chunks=3]] creds {name}")
        C.ok(ev and ev[-1].get("stored_user_message") is not None, f"a stream on {name} signs with them ({ev[-1:]})")
        C.eq(ch.text(ev), expected_answer(f"creds {name}", 3), f"{name}: the answer")
    # a running stream keeps the set it signed with; a rotation reaches every worker's next stream
    long_chat = Chat(epub, "[[sim: chunks=20 interval-ms=50]] started before the rotation")
    a.send(long_chat.req)
    first = a.line()
    C.ok(first and "encrypted_content" in first, "the long stream is under way on worker 0")
    wrong = dict(sim_creds(1), secret_access_key="not-the-secret-" + "x" * 25)
    set_creds(b, wrong)  # on worker 1, while worker 0 streams
    rest = a.events()
    C.ok(rest and rest[-1].get("stored_user_message") is not None,
         f"the running stream on worker 0 ends well with the credentials it signed with ({rest[-1:]})")
    C.eq(long_chat.text([first] + rest), expected_answer("started before the rotation", 20),
         "... every chunk of it")
    for name, c in (("worker 0", a), ("worker 1", b)):
        _, ev = stream(c, epub, f"[[sim: chunks=2]] rotated {name}")
        one_error(ev, "upstream_denied", f"after the rotation on worker 1, a stream on {name}")
    set_creds(b, sim_creds(2))
    _, ev = stream(a, epub, "[[sim: chunks=2]] good again")
    C.ok(ev and ev[-1].get("stored_user_message") is not None, "worker 0 signs with the set worker 1 got")
    a.close()
    b.close()


def stream_cap_across_workers(stack):
    epub = start(stack, "--max-streams", "2", "--stream-timeout", "60")
    a, b = on_each_worker(stack.enclave_addr)
    set_creds(a, sim_creds())
    for i, c in enumerate((a, b)):  # 20 s each: they run until this test closes them
        c.send(Chat(epub, "[[sim: chunks=400 interval-ms=50]] holding a slot").req)
        first = c.line()
        C.ok(first and "encrypted_content" in first, f"a stream runs on worker {i}")
    third = on_each_worker(stack.enclave_addr)
    C.eq(health(third[0])["active_streams"], 2, "HEALTH counts both workers' streams")
    for i, c in enumerate(third):
        _, ev = stream(c, epub, "[[sim: chunks=2]] one too many")
        e = one_error(ev, "busy", f"a third stream, on worker {i}, past --max-streams 2")
        C.eq(e.get("error"), "Enclave busy, please retry", "the busy text")
    a.close()  # the parent goes away: both streams are cancelled and give their slots back
    b.close()
    C.ok(wait_for(lambda: health(third[0])["active_streams"] == 0, 20), "the two slots are given back")
    _, ev = stream(third[1], epub, "[[sim: chunks=2]] a slot again")
    C.ok(ev and ev[-1].get("stored_user_message") is not None, "then a stream is served again")
    for c in third:
        c.close()


def drain_on_both_workers(stack):
    epub = start(stack, "--drain-seconds", "20", "--stream-timeout", "30")
    a, b = on_each_worker(stack.enclave_addr)
    set_creds(a, sim_creds())
    chats = []
    for i, c in enumerate((a, b)):
        ch = Chat(epub, f"[[sim: chunks=20 interval-ms=50]] drain {i}")
        c.send(ch.req)
        first = c.line()
        C.ok(first and "encrypted_content" in first, f"a stream runs on worker {i}")
        chats.append((ch, c, first))
    stack.enclave.p.send_signal(15)
    for i, (ch, c, first) in enumerate(chats):
        rest = c.events()
        C.ok(rest and rest[-1].get("stored_user_message") is not None, f"SIGTERM: the stream on worker {i} finishes")
        C.eq(ch.text([first] + rest), expected_answer(f"drain {i}", 20), f"... with every chunk (worker {i})")
    code = stack.enclave.p.wait(20)
    C.eq(code, 0, "then the enclave exits 0")
    log = stack.enclave.text()
    for i in (0, 1):
        C.ok(f"worker={i} rid=- event=draining" in log and f"worker={i} rid=- event=worker_stopped" in log,
             f"worker {i} drained and stopped")
    # past the drain time the streams of both workers end with the shutdown error
    epub = start(stack, "--drain-seconds", "1", "--stream-timeout", "60")
    a, b = on_each_worker(stack.enclave_addr)
    set_creds(a, sim_creds())
    for c in (a, b):
        c.send(Chat(epub, "[[sim: chunks=400 interval-ms=50]] too long to drain").req)
        C.ok("encrypted_content" in (c.line() or {}), "a long stream runs")
    stack.enclave.p.send_signal(15)
    for i, c in enumerate((a, b)):
        ev = c.events()
        C.ok(ev and ev[-1].get("error_code") == "shutting_down", f"worker {i}'s stream ends shutting_down ({ev[-1:]})")
    C.eq(stack.enclave.p.wait(20), 0, "the enclave exits 0 after the drain time")


def connection_cap(stack):
    start(stack, "--max-connections", "3")
    held = [Conn(stack.enclave_addr)]
    # start()'s own connection is given back once its worker sees the close (bounded: 10 s)
    C.ok(wait_for(lambda: health(held[0])["connections"] == 1, 10), "one connection open")
    held += [Conn(stack.enclave_addr) for _ in range(2)]
    workers = sorted(health(c)["worker"] for c in held)
    C.eq(workers, [0, 0, 1], "three connections, spread over both workers")
    h = health(held[1])
    C.eq((h["connections"], h["max_connections"]), (3, 3), "HEALTH counts both workers' connections")
    extra = Conn(stack.enclave_addr)
    r = extra.line()
    C.ok(r is not None and r.get("status") == "error" and r.get("error_code") == "busy" and
         r.get("error") == "Too many connections (limit 3)", f"the fourth connection: the busy line ({r})")
    C.ok(extra.eof(), "... then it is closed")
    extra.close()
    C.ok("event=conn_refused reason=too_many_connections limit=3" in stack.enclave.text(), "the refusal is logged")
    held.pop().close()
    again = None
    for _ in range(100):  # the worker gives the place back once it sees the close (bounded: 10 s)
        c = Conn(stack.enclave_addr)
        try:
            r = health(c)
        except (BrokenPipeError, ConnectionResetError):  # refused (the busy line) before our request
            r = None
        if r and r.get("command") == "HEALTH":
            again = c
            break
        c.close()
        time.sleep(0.1)
    C.ok(again is not None, "a freed place is taken by the next connection")
    for c in held + ([again] if again else []):
        c.close()


def replay_table_limit(stack):
    epub = start(stack, "--replay-max", "2")
    a, b = on_each_worker(stack.enclave_addr)
    set_creds(a, sim_creds())
    first = bound(epub, "[[sim: chunks=2]] id one")
    C.ok(served(stream_on(a, first)), "bound request 1 served")
    C.ok(served(stream_on(b, bound(epub, "[[sim: chunks=2]] id two"))), "bound request 2 served (the other worker)")
    e = one_error(stream_on(a, bound(epub, "[[sim: chunks=2]] id three")), "busy",
                  "a third id while both are in their window, --replay-max 2")
    C.eq(e.get("error"), "Enclave busy, please retry", "the busy text")
    one_error(stream_on(b, first), "replayed_request", "a full table still refuses a replay")
    a.close()
    b.close()


def load_generator(stack):
    start(stack)
    kv = os.path.join(stack.tmp, "load.kv")
    creds = sim_creds()
    argv = [os.path.join(BIN, "veil-load"), "--enclave", stack.enclave_addr, "--set-credentials",
            "--access-key-id", creds["access_key_id"], "--secret-access-key", creds["secret_access_key"],
            "--session-token", creds["session_token"], "--streams", "8", "--total", "24", "--chunks", "20",
            "--open-every", "4", "--time-limit", "60", "--kv", kv]
    r = subprocess.run(argv, capture_output=True, timeout=120)
    C.eq(r.returncode, 0, f"veil-load against 2 workers ({r.stdout.decode()[-400:]})")
    fig = dict(line.strip().split("=", 1) for line in open(kv)) if os.path.exists(kv) else {}
    C.eq((fig.get("streams_ok"), fig.get("chunks"), fig.get("errors"), fig.get("open_every")), ("24", "480", "0", "4"),
         "every stream ok and every chunk counted, one in 4 opened")
    accepted = [ln for ln in stack.enclave.text().splitlines() if "event=conn_accepted" in ln]
    C.ok(all(any(f" worker={i} " in ln for ln in accepted) for i in (0, 1)),
         "the streams' connections went to both workers")
    r = subprocess.run([os.path.join(BIN, "veil-load"), "--enclave", stack.enclave_addr, "--open-every", "0"],
                       capture_output=True, timeout=10)
    C.ok(r.returncode == 2 and b"--open-every must be a number in [1, 1000000]" in r.stderr, "--open-every 0 refused")


def options(stack):
    out = subprocess.run([os.path.join(BIN, "veil-enclave"), "--help"], capture_output=True, timeout=10).stdout.decode()
    for flag, env in (("--workers", "ENCLAVE_WORKERS"), ("--max-connections", "ENCLAVE_MAX_CONNECTIONS"),
                      ("--replay-max", "ENCLAVE_REPLAY_MAX")):
        C.ok(flag in out and env in out, f"--help names {flag} and {env}")
    for argv, want in ((["--workers", "0"], "--workers must be a number in [1, 256]"),
                       (["--max-connections", "0"], "--max-connections must be a number in [1, 1000000]"),
                       (["--replay-max", "x"], "--replay-max must be a number in [1, 4194304]")):
        r = subprocess.run([os.path.join(BIN, "veil-enclave")] + argv, capture_output=True, timeout=10)
        C.ok(r.returncode == 2 and want in r.stderr.decode(), f"{' '.join(argv)}: {r.stderr.decode().strip()}")
    env = dict(os.environ, ENCLAVE_WORKERS="0")
    r = subprocess.run([os.path.join(BIN, "veil-enclave")], capture_output=True, timeout=10, env=env)
    C.ok(r.returncode == 2 and "ENCLAVE_WORKERS" in r.stderr.decode(),
         f"ENCLAVE_WORKERS=0 refused: {r.stderr.decode().strip()}")
    # the default: one worker per online CPU; ENCLAVE_WORKERS sets it
    os.environ.pop("ENCLAVE_WORKERS", None)
    stack.start_enclave()
    c = Conn(stack.enclave_addr)
    C.eq(health(c)["workers"], min(os.sysconf("SC_NPROCESSORS_ONLN"), 256), "by default, a worker per online CPU")
    c.close()
    os.environ["ENCLAVE_WORKERS"] = "3"
    stack.start_enclave()
    c = Conn(stack.enclave_addr)
    C.eq(health(c)["workers"], 3, "ENCLAVE_WORKERS=3")
    c.close()
    os.environ.pop("ENCLAVE_WORKERS")


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            for t in (replay_across_workers, credentials_across_workers, stream_cap_across_workers,
                      drain_on_both_workers, connection_cap, replay_table_limit, load_generator, options):
                C.run(t.__name__, t, stack)  # one test's failure does not hide the others''
        finally:
            codes = stack.stop()
            for name, p in stack.procs.items():
                C.ok(p.sanitizer_clean(), f"{name}: no sanitizer report")
                if name.startswith("enclave"):
                    C.ok(codes.get(name) in (0, None), f"{name} exited cleanly ({codes.get(name)})")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

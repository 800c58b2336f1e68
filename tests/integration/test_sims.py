#!/usr/bin/python3
"""Integration: veil-bedrock-sim and veil-imds-sim, the real programs on real sockets.

Everything the sims are checked against is written here independently of veil's C code:
a SigV4 signer (hashlib/hmac), an AWS event-stream frame decoder (binascii.crc32 over
the prelude and the message), a raw HTTP/1.1 client over TLS (ssl, SNI "localhost",
verified against a throwaway CA from scripts/make-test-ca). The sims are started on
127.0.0.1 port 0, their port read from the `event=listening` line, and always stopped;
after SIGTERM each log is checked for sanitizer reports.
Stays whole: one suite for the two sims, sharing the independent checkers above.
"""
import asyncio
import binascii
import concurrent.futures
import datetime
import hashlib
import hmac
import http.client
import json
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import Checks, Proc, TempDir  # noqa: E402

BIN = os.environ["VEIL_BIN"]
SRC = os.environ["VEIL_SRC"]
REGION = "us-east-1"
AKID = "AKIAVEILTESTSTATIC01"
SECRET = "veil/test+static/secret/key/0123456789ab"
TOKEN = "static-session-token-for-tests"
SEED = "veil-test-credential-seed"
MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"

C = Checks()


# --------------------------------------------------------------------------- processes

class Sim(Proc):
    """One sim process: started with stderr in a log file, port learned from its log."""

    def __init__(self, name, args, workdir):
        super().__init__(f"{name}-{time.monotonic_ns()}", [os.path.join(BIN, name)] + args, None, workdir,
                         cwd=workdir)
        self.prog = name
        self.wait_listening(30)

    def stop(self):
        """SIGTERM; returns a list of problems (exit status, sanitizer reports)."""
        problems = []
        code = super().stop(timeout=20)
        if code != 0:
            problems.append(f"{self.prog}: exit status {code}")
        if self.sanitizer_reports():
            problems.append(f"{self.prog}: a sanitizer report in its log:\n{self.text()[-6000:]}")
        return problems


# --------------------------------------------------------------------------- SigV4 (independent)

def _hmac(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(method, host, wire_path, body, akid, secret, token=None, when=None, extra=None,
         accept="application/vnd.amazon.eventstream", region=REGION):
    """botocore-style SigV4 for service "bedrock". The canonical URI encodes every wire
    segment once more: "%3A" on the wire is "%253A" in the canonical request."""
    t = when or datetime.datetime.now(datetime.timezone.utc)
    amz = t.strftime("%Y%m%dT%H%M%SZ")
    day = amz[:8]
    headers = {"host": host, "content-type": "application/json", "accept": accept,
               "x-amz-date": amz}
    if token:
        headers["x-amz-security-token"] = token
    headers.update(extra or {})
    canon_uri = "/".join(urllib.parse.quote(seg, safe="-_.~") for seg in wire_path.split("/"))
    names = sorted(h.lower() for h in headers)
    lower = {k.lower(): v for k, v in headers.items()}
    canon_headers = "".join(f"{n}:{' '.join(lower[n].split())}\n" for n in names)
    signed = ";".join(names)
    creq = "\n".join([method, canon_uri, "", canon_headers, signed,
                      hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/bedrock/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret).encode(), day)
    for part in (region, "bedrock", "aws4_request"):
        key = _hmac(key, part)
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={akid}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    return headers


# --------------------------------------------------------------------------- event stream (independent)

def decode_frames(data):
    """Splits an event-stream byte string into messages; each is a dict with the
    headers, the payload and both CRC verdicts."""
    out = []
    off = 0
    while off < len(data):
        if len(data) - off < 16:
            raise ValueError("truncated prelude")
        total, hlen, pcrc = struct.unpack(">III", data[off:off + 12])
        frame = data[off:off + total]
        if len(frame) != total:
            raise ValueError("truncated message")
        prelude_ok = binascii.crc32(frame[:8]) == pcrc
        msg_ok = binascii.crc32(frame[:-4]) == struct.unpack(">I", frame[-4:])[0]
        hdrs = {}
        p = 12
        while p < 12 + hlen:
            nlen = frame[p]
            name = frame[p + 1:p + 1 + nlen].decode()
            p += 1 + nlen
            typ = frame[p]
            p += 1
            if typ != 7:
                raise ValueError(f"unexpected header type {typ}")
            vlen = struct.unpack(">H", frame[p:p + 2])[0]
            hdrs[name] = frame[p + 2:p + 2 + vlen].decode()
            p += 2 + vlen
        payload = frame[12 + hlen:-4]
        out.append({"headers": hdrs, "payload": payload, "prelude_ok": prelude_ok,
                    "crc_ok": msg_ok})
        off += total
    return out


# --------------------------------------------------------------------------- raw HTTP/1.1 client

class Response:
    def __init__(self, raw, timed_out, ragged, t_first):
        self.raw = raw
        self.timed_out = timed_out
        self.ragged = ragged
        self.t_first = t_first
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep:
            self.status = None
            self.headers = {}
            self.body = b""
            self.chunks = []
            self.terminated = False
            return
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunks = []
        self.terminated = False
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            p = 0
            while True:
                nl = rest.find(b"\r\n", p)
                if nl < 0:
                    break
                size = int(rest[p:nl], 16)
                if size == 0:
                    self.terminated = rest[nl + 2:nl + 4] == b"\r\n"
                    break
                if len(rest) < nl + 2 + size + 2:
                    break
                self.chunks.append(rest[nl + 2:nl + 2 + size])
                p = nl + 2 + size + 2
            self.body = b"".join(self.chunks)
        else:
            self.body = rest[:int(self.headers.get("content-length", len(rest)))]

    def json(self):
        return json.loads(self.body)

    def frames(self):
        """One event-stream message per HTTP chunk, as Bedrock sends them."""
        msgs = []
        for c in self.chunks:
            fs = decode_frames(c)
            if len(fs) != 1:
                raise ValueError("a chunk held %d messages" % len(fs))
            msgs.append(fs[0])
        return msgs


def tls_context(ca):
    return ssl.create_default_context(cafile=ca)


def http_exchange(port, method, path, headers, body, ctx=None, read_timeout=20.0,
                  send_raw=b""):
    raw_sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    s = ctx.wrap_socket(raw_sock, server_hostname="localhost") if ctx else raw_sock
    try:
        s.settimeout(read_timeout)
        lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
        if not any(k.lower() == "connection" for k in headers):
            lines.append("Connection: close")  # this client reads to EOF (the sim keeps alive)
        if body:
            lines.append(f"Content-Length: {len(body)}")
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body + send_raw)
        data = b""
        timed_out = ragged = False
        t_first = None
        t0 = time.monotonic()
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                timed_out = True
                break
            except (ssl.SSLEOFError, ConnectionResetError):
                ragged = True
                break
            if not chunk:
                break
            if t_first is None:
                t_first = time.monotonic() - t0
            data += chunk
        return Response(data, timed_out, ragged, t_first)
    finally:
        s.close()


def read_one(s, timeout=20.0):
    """One response off a kept-alive socket, by its framing: (Response, EOF seen after it)."""
    s.settimeout(timeout)
    data = b""
    while True:
        r = Response(data, False, False, None)
        if r.status is not None:
            if r.headers.get("transfer-encoding", "").lower() == "chunked" and r.terminated:
                break
            cl = r.headers.get("content-length")
            if cl is not None and len(data.partition(b"\r\n\r\n")[2]) >= int(cl):
                break
        c = s.recv(65536)
        if not c:
            return Response(data, False, False, None), True
        data += c
    return r, False


def send_signed(s, port, text, extra_headers=(), version="1.1"):
    body = converse_body(text)
    p = wire_path()
    h = sign("POST", f"localhost:{port}", p, body, AKID, SECRET, TOKEN)
    s.sendall((f"POST {p} HTTP/{version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
               + "".join(f"{k}: {v}\r\n" for k, v in extra_headers)
               + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)


def at_eof(s, timeout=10.0):
    """True when the peer closed (close_notify or FIN) with nothing more sent."""
    s.settimeout(timeout)
    try:
        return s.recv(65536) == b""
    except (ssl.SSLEOFError, ConnectionResetError):
        return True


def converse_body(*texts, extra=None):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": [{"text": t}]}
            for i, t in enumerate(texts)]
    body = {"messages": msgs, "system": [{"text": "You are a helpful AI assistant."}],
            "inferenceConfig": {"maxTokens": 4096, "temperature": 0.7}}
    body.update(extra or {})
    return json.dumps(body).encode()


def wire_path(model=MODEL, op="converse-stream"):
    return f"/model/{urllib.parse.quote(model, safe='')}/{op}"


def expected_deltas(echo, n, chunk_size=0):
    out = ["Echo: " + echo]
    for i in range(1, n):
        t = f" chunk {i}"
        out.append(t + "." * (chunk_size - len(t)) if chunk_size > len(t) else t)
    return out


# --------------------------------------------------------------------------- the tests

class T:
    def __init__(self, tmp):
        self.tmp = tmp
        self.ca = os.path.join(tmp, "ca", "ca.pem")
        self.ctx = None  # made once the CA exists
        self.sims = []

    # ---- harness

    def start(self, name, args):
        s = Sim(name, args, self.tmp)
        self.sims.append(s)
        return s

    def stop(self, sim):
        self.sims.remove(sim)
        problems = sim.stop()
        for p in problems:
            C.ok(False, f"{sim.prog} shutdown: {p}")
        C.ok(not problems, f"{sim.prog} exits 0 on SIGTERM, no sanitizer report")

    def check(self, name, fn):
        print(f"--   {name}", flush=True)
        C.run(name, fn)

    def stream(self, port, text_or_body, akid=AKID, secret=SECRET, token=TOKEN, path=None,
               extra=None, read_timeout=20.0, when=None, op="converse-stream"):
        body = text_or_body if isinstance(text_or_body, bytes) else converse_body(text_or_body)
        p = path or wire_path(op=op)
        accept = "application/json" if op == "converse" else "application/vnd.amazon.eventstream"
        h = sign("POST", f"localhost:{port}", p, body, akid, secret, token, when=when,
                 extra=extra, accept=accept)
        return http_exchange(port, "POST", p, h, body, self.ctx, read_timeout)

    # ---- bedrock: happy paths

    def bedrock_basic(self, port):
        def stream_ok():
            r = self.stream(port, "Hello there, simulator")
            C.eq(r.status, 200, (r.status, r.body))
            C.eq(r.headers["content-type"], "application/vnd.amazon.eventstream")
            C.eq(r.headers["transfer-encoding"].lower(), "chunked")
            C.ok(r.terminated and not r.ragged)
            fs = r.frames()
            C.ok(all(f["prelude_ok"] and f["crc_ok"] for f in fs))
            kinds = [f["headers"][":event-type"] for f in fs]
            C.eq(kinds, ["messageStart"] + ["contentBlockDelta"] * 8 + [
            "contentBlockStop", "messageStop", "metadata"], kinds)
            for f in fs:
                C.eq(f["headers"][":message-type"], "event")
                C.eq(f["headers"][":content-type"], "application/json")
            C.eq(json.loads(fs[0]["payload"]), {"role": "assistant"})
            deltas = [json.loads(f["payload"]) for f in fs[1:9]]
            C.ok(all(d["contentBlockIndex"] == 0 and d["p"] == "abc" for d in deltas))
            C.eq([d["delta"]["text"] for d in deltas], expected_deltas(
            "Hello there, simulator", 8))
            C.eq(json.loads(fs[9]["payload"]), {"contentBlockIndex": 0})
            C.eq(json.loads(fs[10]["payload"]), {"stopReason": "end_turn"})
            meta = json.loads(fs[11]["payload"])
            text_bytes = len("Hello there, simulator".encode())
            C.eq(meta["usage"], {"inputTokens": text_bytes // 4, "outputTokens": 8,
                                 "totalTokens": text_bytes // 4 + 8}, meta)
            C.ok(isinstance(meta["metrics"]["latencyMs"], int))
        self.check("stream: 8 deltas, CRCs, echo rule, usage", stream_ok)

        def history_and_directive():
            body = converse_body("first question", "first answer",
                                 "  héllo \"wörld\"\n [[sim: chunks=3 chunk-size=20]]  ")
            r = self.stream(port, body)
            C.eq(r.status, 200, (r.status, r.body))
            fs = r.frames()
            deltas = [json.loads(f["payload"])["delta"]["text"] for f in fs
                      if f["headers"][":event-type"] == "contentBlockDelta"]
            C.eq(deltas, expected_deltas("héllo \"wörld\"", 3, 20), deltas)
            C.eq(len(deltas[1].encode()), 20)
            texts = ["first question", "first answer",
                     "  héllo \"wörld\"\n [[sim: chunks=3 chunk-size=20]]  "]
            ib = sum(len(t.encode()) for t in texts) // 4
            meta = json.loads(fs[-1]["payload"])
            C.ok(meta["usage"]["inputTokens"] == ib and meta["usage"]["outputTokens"] == 3)
        self.check("stream: history, directive stripped, padding, unicode", history_and_directive)

        def header_directive():
            r = self.stream(port, "via header", extra={"x-veil-sim": "chunks=2"})
            fs = r.frames()
            C.eq(sum(f["headers"][":event-type"] == "contentBlockDelta" for f in fs), 2)
        self.check("stream: x-veil-sim header directive", header_directive)

        def raw_colon():
            p = f"/model/{MODEL}/converse-stream"  # the original's literal ':' on the wire
            r = self.stream(port, "raw colon", path=p)
            C.ok(r.status == 200 and r.terminated, (r.status, r.body))
        self.check("stream: literal ':' in the wire path also verifies", raw_colon)

        def converse():
            r = self.stream(port, "non stream [[sim: chunks=4]]", op="converse")
            C.eq(r.status, 200, (r.status, r.body))
            j = r.json()
            C.eq(j["output"]["message"]["role"], "assistant")
            text = "".join(c["text"] for c in j["output"]["message"]["content"])
            C.eq(text, "".join(expected_deltas("non stream", 4)), text)
            C.eq(j["stopReason"], "end_turn")
            n = len("non stream [[sim: chunks=4]]") // 4
            C.eq(j["usage"], {"inputTokens": n, "outputTokens": 4, "totalTokens": n + 4})
        self.check("converse (non-stream): full answer and usage", converse)

    # ---- bedrock: refusals

    def bedrock_refusals(self, port):
        def aws_error(r, status, etype, msg_part=None):
            C.eq(r.status, status, (r.status, r.body))
            C.eq(r.headers.get("x-amzn-errortype"), etype, r.headers)
            m = r.json()["message"]
            if msg_part:
                C.ok(msg_part in m, m)

        self.check("bad signature -> 403 InvalidSignatureException", lambda: aws_error(
            self.stream(port, "x", secret=SECRET + "x"), 403, "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."))

        def tampered_body():
            body = converse_body("original")
            p = wire_path()
            h = sign("POST", f"localhost:{port}", p, body, AKID, SECRET, TOKEN)
            r = http_exchange(port, "POST", p, h, converse_body("tampered"), self.ctx)
            aws_error(r, 403, "InvalidSignatureException")
        self.check("tampered body -> 403 InvalidSignatureException", tampered_body)

        self.check("unknown key -> 403 UnrecognizedClientException", lambda: aws_error(
            self.stream(port, "x", akid="AKIAUNKNOWNKEY000000"), 403,
            "UnrecognizedClientException", "The security token included in the request is invalid."))
        self.check("wrong session token -> 403 UnrecognizedClientException", lambda: aws_error(
            self.stream(port, "x", token="not-the-token"), 403, "UnrecognizedClientException"))
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        self.check("stale x-amz-date -> 403 ExpiredTokenException", lambda: aws_error(
            self.stream(port, "x", when=old), 403, "ExpiredTokenException", "expired"))

        def missing_auth():
            body = converse_body("x")
            r = http_exchange(port, "POST", wire_path(), {"Host": "localhost",
                              "Content-Type": "application/json"}, body, self.ctx)
            C.ok(r.status == 403 and "x-amzn-errortype" in r.headers, (r.status, r.headers))
        self.check("no Authorization -> 403", missing_auth)

        self.check("odd history -> 400 ValidationException", lambda: aws_error(
            self.stream(port, converse_body("q1", "a1", "q2", "a2")), 400, "ValidationException",
            "must end with a user message"))
        self.check("two user turns -> 400 ValidationException", lambda: aws_error(
            self.stream(port, json.dumps({"messages": [
                {"role": "user", "content": [{"text": "a"}]},
                {"role": "user", "content": [{"text": "b"}]}]}).encode()),
            400, "ValidationException", "alternate"))
        self.check("assistant first -> 400", lambda: aws_error(
            self.stream(port, json.dumps({"messages": [
                {"role": "assistant", "content": [{"text": "a"}]}]}).encode()),
            400, "ValidationException", "start with a user message"))
        self.check("empty messages -> 400", lambda: aws_error(
            self.stream(port, b'{"messages":[]}'), 400, "ValidationException"))
        self.check("empty content -> 400", lambda: aws_error(
            self.stream(port, b'{"messages":[{"role":"user","content":[]}]}'), 400,
            "ValidationException"))
        self.check("modelId in body -> 400", lambda: aws_error(
            self.stream(port, converse_body("x", extra={"modelId": MODEL})), 400,
            "ValidationException", "modelId"))
        self.check("not JSON -> 400", lambda: aws_error(
            self.stream(port, b"{nope"), 400, "ValidationException"))
        self.check("unknown model -> 400 ValidationException", lambda: aws_error(
            self.stream(port, "x", path=wire_path(model="us.example.no-such-model-v1:0")), 400,
            "ValidationException", "The provided model identifier is invalid."))
        self.check("unknown directive -> 400 naming it", lambda: aws_error(
            self.stream(port, "x [[sim: colour=blue]]"), 400, "ValidationException",
            "colour=blue"))
        self.check("bad directive value -> 400", lambda: aws_error(
            self.stream(port, "x [[sim: fault=explode]]"), 400, "ValidationException",
            "fault=explode"))
        self.check("unterminated directive -> 400", lambda: aws_error(
            self.stream(port, "x [[sim: chunks=2"), 400, "ValidationException", "Unterminated"))

        def unknown_route():
            body = b"{}"
            for path in ("/model/x/invoke", "/nope", wire_path(op="converse-streamz")):
                h = sign("POST", f"localhost:{port}", path, body, AKID, SECRET, TOKEN)
                r = http_exchange(port, "POST", path, h, body, self.ctx)
                C.ok(r.status == 404 and r.headers.get("x-amzn-errortype"), (path, r.status))
                r.json()
            r = http_exchange(port, "GET", wire_path(), {"Host": "localhost"}, b"", self.ctx)
            C.eq(r.status, 404, r.status)
        self.check("unknown routes and methods -> 404 AWS JSON", unknown_route)

        def chunked_request():
            # the request body itself sent with Transfer-Encoding: chunked
            body = converse_body("chunked upload")
            p = wire_path()
            h = sign("POST", f"localhost:{port}", p, body, AKID, SECRET, TOKEN)
            h["Transfer-Encoding"] = "chunked"
            parts = [body[i:i + 7] for i in range(0, len(body), 7)]
            enc = b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in parts) + b"0\r\n\r\n"
            r = http_exchange(port, "POST", p, h, b"", self.ctx, send_raw=enc)
            C.ok(r.status == 200 and r.terminated, (r.status, r.body))
            texts = [json.loads(f["payload"])["delta"]["text"] for f in r.frames()
                     if f["headers"][":event-type"] == "contentBlockDelta"]
            C.eq(texts[0], "Echo: chunked upload", texts)
        self.check("chunked request body decoded and verified", chunked_request)

        def garbage():
            r = http_exchange(port, "BAD REQUEST", "LINE", {}, b"", self.ctx)
            C.eq(r.status, 400, r.status)
        self.check("malformed request line -> 400", garbage)

    # ---- bedrock: faults

    def bedrock_faults(self, port):
        def kinds(r):
            return [f["headers"].get(":event-type") or f["headers"].get(":exception-type")
                    for f in r.frames()]

        def drop():
            r = self.stream(port, "drop me [[sim: fault=drop chunks=8]]")
            C.ok(r.status == 200 and not r.terminated, (r.status, r.raw[-40:]))
            ks = kinds(r)
            C.eq(ks, ["messageStart"] + ["contentBlockDelta"] * 4, ks)
        self.check("fault=drop: half the deltas, no terminating chunk", drop)

        def bad_crc():
            r = self.stream(port, "crc [[sim: fault=bad-crc]]")
            C.ok(r.status == 200 and r.terminated)
            fs = r.frames()
            bad = [i for i, f in enumerate(fs) if not f["crc_ok"]]
            C.eq(bad, [2], bad)  # messageStart, delta 0, delta 1 <- this one
            C.eq(fs[2]["headers"][":event-type"], "contentBlockDelta")
            C.ok(all(f["prelude_ok"] for f in fs))
        self.check("fault=bad-crc: the second delta frame fails its CRC", bad_crc)

        for fault, etype, msg in (
                ("throttle", "throttlingException",
                 "Too many requests, please wait before trying again."),
                ("validation", "validationException", None),
                ("model-error", "modelStreamErrorException", None)):
            def in_stream(fault=fault, etype=etype, msg=msg):
                r = self.stream(port, f"x [[sim: fault={fault}]]")
                C.ok(r.status == 200 and r.terminated, (r.status, r.terminated))
                fs = r.frames()
                C.eq([f["headers"].get(":event-type") for f in fs[:3]], [
                "messageStart", "contentBlockDelta", "contentBlockDelta"])
                C.eq(len(fs), 4, len(fs))
                ex = fs[3]
                C.ok(ex["crc_ok"])
                C.eq(ex["headers"][":message-type"], "exception")
                C.eq(ex["headers"][":exception-type"], etype, ex["headers"])
                m = json.loads(ex["payload"])["message"]
                C.ok(m and (msg is None or m == msg), m)
            self.check(f"fault={fault}: in-stream {etype}, stream ends properly", in_stream)

        for fault, status, etype in (("http-429", 429, "ThrottlingException"),
                                     ("http-500", 500, "InternalServerException"),
                                     ("http-400", 400, "ValidationException")):
            def http_err(fault=fault, status=status, etype=etype):
                r = self.stream(port, f"x [[sim: fault={fault}]]")
                C.eq(r.status, status, r.status)
                C.eq(r.headers.get("x-amzn-errortype"), etype, r.headers)
                C.ok("transfer-encoding" not in r.headers)
                C.ok(r.json()["message"])
            self.check(f"fault={fault}: HTTP {status} {etype}", http_err)

        def slow():
            base = self.stream(port, "quick")
            r = self.stream(port, "slow [[sim: fault=slow-first-byte=800]]")
            C.ok(r.status == 200 and r.terminated)
            C.ok(r.t_first >= 0.75, r.t_first)
            C.ok(base.t_first < r.t_first, (base.t_first, r.t_first))
            r2 = self.stream(port, "slow", extra={"x-veil-sim": "slow-first-byte=400 fault=http-429"})
            C.ok(r2.status == 429 and r2.t_first >= 0.35, (r2.status, r2.t_first))
        self.check("fault=slow-first-byte: the head is delayed", slow)

        def empty():
            r = self.stream(port, "x [[sim: fault=empty]]")
            C.ok(r.status == 200 and r.terminated)
            C.eq(kinds(r), ["messageStart", "contentBlockStop", "messageStop", "metadata"])
            C.eq(json.loads(r.frames()[-1]["payload"])["usage"]["outputTokens"], 0)
        self.check("fault=empty: no contentBlockDelta", empty)

        def hang():
            r = self.stream(port, "x [[sim: fault=hang]]", read_timeout=1.5)
            C.ok(r.timed_out and r.status == 200 and not r.terminated)
            C.eq(kinds(r), ["messageStart"], kinds(r))
        self.check("fault=hang: messageStart, then silence", hang)

        def paced():
            t0 = time.monotonic()
            r = self.stream(port, "x [[sim: chunks=5 interval-ms=100]]")
            dt = time.monotonic() - t0
            C.ok(r.terminated and dt >= 0.38, dt)
        self.check("interval-ms paces the deltas", paced)

    # ---- bedrock: concurrency

    def bedrock_concurrency(self, port):
        def fifty():
            def one(i):
                r = self.stream(port, f"stream {i} [[sim: chunks=8 interval-ms=60]]")
                fs = r.frames()
                texts = [json.loads(f["payload"])["delta"]["text"] for f in fs
                         if f["headers"][":event-type"] == "contentBlockDelta"]
                return r.status == 200 and r.terminated and texts == expected_deltas(
                    f"stream {i}", 8)
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(50) as ex:
                results = list(ex.map(one, range(50)))
            dt = time.monotonic() - t0
            C.ok(all(results), results.count(False))
            # (no bound on dt: tests keep timing out; bench/ measures speed)
            print(f"     50 streams in {dt:.1f} s (each paced over >= 420 ms)")
        self.check("50 concurrent streams (threads), interleaved", fifty)

        def thousand():
            async def one(i):
                body = converse_body(f"async {i} [[sim: chunks=4 interval-ms=200]]")
                p = wire_path()
                h = sign("POST", f"localhost:{port}", p, body, AKID, SECRET, TOKEN)
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=self.ctx, server_hostname="localhost")
                try:
                    req = (f"POST {p} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                           + f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                    writer.write(req)
                    await writer.drain()
                    data = b""
                    while True:
                        try:
                            c = await reader.read(65536)
                        except (ssl.SSLError, ConnectionResetError):
                            break
                        if not c:
                            break
                        data += c
                    r = Response(data, False, False, None)
                    texts = [json.loads(f["payload"])["delta"]["text"] for f in r.frames()
                             if f["headers"][":event-type"] == "contentBlockDelta"]
                    return r.status == 200 and r.terminated and texts == expected_deltas(
                        f"async {i}", 4)
                finally:
                    writer.close()
                    try:
                        await writer.wait_closed()
                    except (ssl.SSLError, OSError):
                        pass

            async def run_all():
                sem = asyncio.Semaphore(1000)

                async def guarded(i):
                    async with sem:
                        try:
                            return await one(i)
                        except Exception as e:  # noqa: BLE001
                            return repr(e)
                return await asyncio.gather(*(guarded(i) for i in range(1000)))
            t0 = time.monotonic()
            results = asyncio.run(run_all())
            dt = time.monotonic() - t0
            bad = [r for r in results if r is not True]
            C.ok(not bad, (len(bad), bad[:3]))
            print(f"     1000 streams in {dt:.1f} s")
        self.check("1000 concurrent streams (asyncio) on one loop", thousand)

        def client_disconnects():
            # clients that vanish mid-stream (before the head, mid-deltas, mid-hang)
            for text in ("gone [[sim: chunks=50 interval-ms=20]]", "gone [[sim: fault=hang]]",
                         "gone [[sim: fault=slow-first-byte=300]]"):
                for _ in range(5):
                    body = converse_body(text)
                    p = wire_path()
                    h = sign("POST", f"localhost:{port}", p, body, AKID, SECRET, TOKEN)
                    s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                             server_hostname="localhost")
                    req = (f"POST {p} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
                           + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
                    s.sendall(req)
                    time.sleep(0.05)
                    s.close()
            # half a request, then gone; a TCP connect without TLS, then gone
            s = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                     server_hostname="localhost")
            s.sendall(b"POST /model/x/converse-stream HTTP/1.1\r\nHost: l")
            s.close()
            socket.create_connection(("127.0.0.1", port)).close()
            time.sleep(0.5)
            r = self.stream(port, "still alive")
            C.ok(r.status == 200 and r.terminated)
        self.check("client disconnects at every stage; the sim keeps serving", client_disconnects)

    def bedrock_keep_alive(self, port, cert, key):
        def connect(p=port):
            return self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", p), timeout=20),
                                        server_hostname="localhost")

        def persistent():
            s = connect()
            try:
                send_signed(s, port, "first on the connection [[sim: chunks=3]]")
                r, eof = read_one(s)
                C.ok(r.status == 200 and r.terminated and not eof, f"first answer whole, connection open: {r.status} eof={eof}")
                C.ok("connection" not in r.headers, f"no Connection: close on a kept connection: {r.headers}")
                send_signed(s, port, "x [[sim: chunks=2]]", extra_headers=[("X-Junk", "1")])
                r, eof = read_one(s)
                C.ok(r.status == 200 and r.terminated and not eof)
                # an error answer keeps the connection too (AWS's do)
                send_signed(s, port, "x [[sim: fault=http-429]]")
                r, eof = read_one(s)
                C.ok(r.status == 429 and not eof and "connection" not in r.headers,
                     f"an error answer keeps the connection: {r.status} {r.headers}")
                send_signed(s, port, "last [[sim: chunks=2]]", extra_headers=[("Connection", "close")])
                r, eof = read_one(s)
                C.ok(r.status == 200 and r.terminated, f"the last answer whole: {r.status}")
                C.ok(r.headers.get("connection") == "close", f"Connection: close answered: {r.headers}")
                C.ok(at_eof(s), "the sim kept a connection the client closed with Connection: close")
            finally:
                s.close()
        self.check("bedrock: HTTP/1.1 keep-alive (streams and errors on one connection), "
                   "Connection: close honoured", persistent)

        def http10():
            s = connect()
            try:
                send_signed(s, port, "old client [[sim: chunks=2]]", version="1.0")
                r, eof = read_one(s)
                C.ok(r.status == 200 and r.headers.get("connection") == "close", f"HTTP/1.0 answered with close: {r.headers}")
                C.ok(at_eof(s))
            finally:
                s.close()
        self.check("bedrock: an HTTP/1.0 request gets Connection: close and the close", http10)

        def close_reused():
            s = connect()
            try:  # on a new connection the fault does nothing
                send_signed(s, port, "fresh [[sim: fault=close-reused chunks=2]]")
                r, eof = read_one(s)
                C.ok(r.status == 200 and r.terminated and not eof)
                send_signed(s, port, "second [[sim: fault=close-reused chunks=2]]")
                r, eof = read_one(s)
                C.ok(eof and r.raw == b"", f"closed without a byte: eof={eof} {r.raw[:80]!r}")
            finally:
                s.close()
        self.check("bedrock: fault=close-reused closes a kept-alive connection's second request "
                   "without a byte, answers on a new one", close_reused)

        def idle_close():
            sim = self.start("veil-bedrock-sim", [
                "--listen", "tcp:127.0.0.1:0", "--cert", cert, "--key", key,
                "--access-key-id", AKID, "--secret-access-key", SECRET, "--session-token", TOKEN,
                "--keep-alive-ms", "200"])
            s = connect(sim.port)
            try:
                send_signed(s, sim.port, "then idle [[sim: chunks=2]]")
                r, eof = read_one(s)
                C.ok(r.status == 200 and not eof)
                s.settimeout(10)
                C.ok(s.recv(65536) == b"", "no close_notify")  # a clean TLS close, not a reset
                sim.wait_log("outcome=keep_alive_timeout", 10)
            finally:
                s.close()
                self.stop(sim)
            off = self.start("veil-bedrock-sim", [
                "--listen", "tcp:127.0.0.1:0", "--cert", cert, "--key", key,
                "--access-key-id", AKID, "--secret-access-key", SECRET, "--session-token", TOKEN,
                "--keep-alive-ms", "0"])
            s = connect(off.port)
            try:
                send_signed(s, off.port, "one per connection [[sim: chunks=2]]")
                r, _ = read_one(s)
                C.ok(r.headers.get("connection") == "close" and at_eof(s), f"--keep-alive-ms 0 closes: {r.headers}")
            finally:
                s.close()
                self.stop(off)
        self.check("bedrock: --keep-alive-ms closes an idle connection with close_notify; "
                   "0 answers Connection: close", idle_close)

    # ---- imds

    def imds_get(self, port, path, token=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        h = dict(headers or {})
        if token:
            h["X-aws-ec2-metadata-token"] = token
        c.request("GET", path, headers=h)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    def imds_token(self, port, ttl="21600", headers=None):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        h = dict(headers or {})
        if ttl is not None:
            h["X-aws-ec2-metadata-token-ttl-seconds"] = ttl
        c.request("PUT", "/latest/api/token", headers=h)
        r = c.getresponse()
        body = r.read().decode()
        c.close()
        return r.status, body

    def imds_creds(self, port, token, role="veil-enclave-role"):
        st, body = self.imds_get(port, f"/latest/meta-data/iam/security-credentials/{role}", token)
        C.eq(st, 200, (st, body))
        return json.loads(body)

    def imds(self, port):
        def flow():
            st, tok = self.imds_token(port)
            C.ok(st == 200 and len(tok) >= 40, (st, tok))
            st, role = self.imds_get(port, "/latest/meta-data/iam/security-credentials/", tok)
            C.eq((st, role), (200, "veil-enclave-role"), (st, role))
            j = self.imds_creds(port, tok, role)
            C.ok(j["Code"] == "Success" and j["Type"] == "AWS-HMAC")
            C.ok(re.fullmatch(r"ASIAVEILSIM\d{9}", j["AccessKeyId"]), j["AccessKeyId"])
            C.ok(len(j["SecretAccessKey"]) == 40 and len(j["Token"]) == 64)
            exp = datetime.datetime.strptime(j["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
            upd = datetime.datetime.strptime(j["LastUpdated"], "%Y-%m-%dT%H:%M:%SZ")
            C.eq((exp - upd).total_seconds(), 6, (exp, upd))
            C.eq(self.imds_get(port, "/latest/meta-data/placement/region", tok), (200, REGION))
            C.eq(self.imds_get(port, "/latest/meta-data/placement/availability-zone",
                               tok), (200, REGION + "a"))
            st, _ = self.imds_get(port, "/latest/meta-data/iam/security-credentials/other", tok)
            C.eq(st, 404, st)
            st, _ = self.imds_get(port, "/latest/meta-data/nothing-here", tok)
            C.eq(st, 404, st)
        self.check("imds: token, role, credentials, region, AZ, 404s", flow)

        def refusals():
            C.eq(self.imds_get(port, "/latest/meta-data/placement/region")[0], 401)
            C.eq(self.imds_get(port, "/latest/meta-data/placement/region", "A" * 56)[0], 401)
            for ttl in (None, "0", "21601", "abc", "-5", ""):
                C.eq(self.imds_token(port, ttl)[0], 400, ttl)
            C.eq(self.imds_token(port, "1")[0], 200)
            _, tok = self.imds_token(port)
            st, _ = self.imds_get(port, "/latest/meta-data/placement/region", tok,
                                  {"X-Forwarded-For": "203.0.113.7"})
            C.eq(st, 403, st)
            C.eq(self.imds_token(port, headers={"X-Forwarded-For": "203.0.113.7"})[0], 403)
        self.check("imds: 401 without/with a bad token, 400 bad TTL, 403 X-Forwarded-For",
                   refusals)

        def token_expiry():
            st, tok = self.imds_token(port, "1")
            C.eq(self.imds_get(port, "/latest/meta-data/placement/region", tok)[0], 200)
            time.sleep(2.2)
            C.eq(self.imds_get(port, "/latest/meta-data/placement/region", tok)[0], 401)
        self.check("imds: a token dies after its TTL", token_expiry)

    def imds_rotation(self, port):
        def rotation():
            _, tok = self.imds_token(port)
            first = self.imds_creds(port, tok)
            again = self.imds_creds(port, tok)
            C.eq(again["AccessKeyId"], first["AccessKeyId"], "rotated too early")
            t0 = time.monotonic()
            while time.monotonic() - t0 < 15:
                j = self.imds_creds(port, tok)
                if j["AccessKeyId"] != first["AccessKeyId"]:
                    break
                time.sleep(0.25)
            else:
                return C.ok(False, "no new AccessKeyId within 15 s")
            dt = time.monotonic() - t0
            # lifetime 6 s, margin min(300, 6/5) = 1 s: the new set comes at about 5 s
            C.ok(j["SecretAccessKey"] != first["SecretAccessKey"] and j["Token"] != first["Token"])
            n1 = int(first["AccessKeyId"][11:])
            C.eq(int(j["AccessKeyId"][11:]), n1 + 1)
            print(f"     rotated after {dt:.1f} s")
            return j
        self.check("imds: credentials rotate near expiry (generation + 1)", rotation)

    def cross(self, imds_port, bedrock_port):
        def accepted():
            _, tok = self.imds_token(imds_port)
            j = self.imds_creds(imds_port, tok)
            r = self.stream(bedrock_port, "minted", akid=j["AccessKeyId"],
                            secret=j["SecretAccessKey"], token=j["Token"])
            C.ok(r.status == 200 and r.terminated, (r.status, r.body))
            r = self.stream(bedrock_port, "minted again", akid=j["AccessKeyId"],
                            secret=j["SecretAccessKey"], token=j["Token"], op="converse")
            C.eq(r.status, 200, (r.status, r.body))
        self.check("imds-minted credentials accepted by the bedrock sim (same seed)", accepted)

        def refused():
            _, tok = self.imds_token(imds_port)
            j = self.imds_creds(imds_port, tok)
            r = self.stream(bedrock_port, "x", akid="ASIAVEILSIM000000777",
                            secret="made-up-secret-made-up-secret-made-up-00", token="f" * 64)
            C.ok(r.status == 403 and r.headers["x-amzn-errortype"] == "UnrecognizedClientException",
                 (r.status, r.headers))
            r = self.stream(bedrock_port, "x", akid="ASIAVEILSIM000000777",
                            secret="made-up-secret-made-up-secret-made-up-00")
            C.eq(r.status, 403, r.status)
            r = self.stream(bedrock_port, "x", akid=j["AccessKeyId"], secret="x" * 40,
                            token=j["Token"])
            C.ok(r.status == 403 and r.headers["x-amzn-errortype"] == "InvalidSignatureException")
            r = self.stream(bedrock_port, "x", akid="ASIAMADEUP0000000001",
                            secret=j["SecretAccessKey"], token=j["Token"])
            C.ok(r.status == 403 and r.headers["x-amzn-errortype"] == "UnrecognizedClientException")
        self.check("made-up credentials refused by the bedrock sim", refused)

    def cli(self):
        def helps():
            for name, flags in (
                    ("veil-bedrock-sim", ["--listen", "--cert", "--key", "--region",
                                          "--access-key-id", "--secret-access-key",
                                          "--session-token", "--credential-seed", "--chunks",
                                          "--chunk-size", "--interval-ms", "--fault", "--help"]),
                    ("veil-imds-sim", ["--listen", "--role", "--region", "--expiration-seconds",
                                       "--credential-seed", "--access-key-id",
                                       "--secret-access-key", "--session-token", "--help"])):
                r = subprocess.run([os.path.join(BIN, name), "--help"], capture_output=True,
                                   text=True, timeout=10)
                C.eq(r.returncode, 0, (name, r.returncode))
                missing = [f for f in flags if f not in r.stdout]
                C.ok(not missing, (name, missing))
                r = subprocess.run([os.path.join(BIN, name), "--bogus"], capture_output=True,
                                   timeout=10)
                C.ok(r.returncode != 0)
        self.check("--help documents every flag; unknown flags refused", helps)

        def static_imds():
            s = self.start("veil-imds-sim", ["--listen", "tcp:127.0.0.1:0", "--access-key-id",
                                             AKID, "--secret-access-key", SECRET,
                                             "--session-token", TOKEN, "--role", "r1",
                                             "--region", "us-west-2"])
            try:
                _, tok = self.imds_token(s.port)
                C.eq(self.imds_get(s.port, "/latest/meta-data/iam/security-credentials/",
                                   tok), (200, "r1"))
                j = self.imds_creds(s.port, tok, "r1")
                C.eq((j["AccessKeyId"], j["SecretAccessKey"], j["Token"]), (AKID, SECRET, TOKEN))
                C.eq(self.imds_get(s.port, "/latest/meta-data/placement/availability-zone",
                                   tok), (200, "us-west-2a"))
            finally:
                self.stop(s)
        self.check("imds: static credentials, --role, --region", static_imds)

    def bedrock_defaults(self, cert, key):
        def defaults():
            s = self.start("veil-bedrock-sim", [
                "--listen", "tcp:127.0.0.1:0", "--cert", cert, "--key", key,
                "--access-key-id", AKID, "--secret-access-key", SECRET,  # no session token
                "--chunks", "3", "--chunk-size", "12", "--interval-ms", "30",
                "--fault", "fault=drop"])
            hung = None
            try:
                r = self.stream(s.port, "defaults", token=None)
                C.ok(r.status == 200 and not r.terminated, (r.status, r.body))
                r = self.stream(s.port, "defaults [[sim: fault=none]]", token=None)
                C.ok(r.status == 200 and r.terminated)
                texts = [json.loads(f["payload"])["delta"]["text"] for f in r.frames()
                         if f["headers"][":event-type"] == "contentBlockDelta"]
                C.eq(texts, expected_deltas("defaults", 3, 12), texts)
                r = self.stream(s.port, "x [[sim: fault=none]]")  # a token it does not expect
                C.eq(r.status, 403, r.status)
                # SIGTERM with a stream still hanging: the sim frees it and exits 0
                body = converse_body("hold [[sim: fault=hang]]")
                p = wire_path()
                h = sign("POST", f"localhost:{s.port}", p, body, AKID, SECRET)
                hung = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", s.port)),
                                            server_hostname="localhost")
                hung.sendall((f"POST {p} HTTP/1.1\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in h.items()) +
                    f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
                hung.settimeout(10)
                C.ok(hung.recv(65536).startswith(b"HTTP/1.1 200"))
            finally:
                self.stop(s)
                if hung:
                    hung.close()
        self.check("bedrock: --chunks/--chunk-size/--interval-ms/--fault defaults, "
                   "long-term keys, SIGTERM mid-stream", defaults)


def main():
    with TempDir() as tmp:
        t = T(tmp)
        try:
            subprocess.run([os.path.join(SRC, "scripts", "make-test-ca"), os.path.join(tmp, "ca"),
                            "bedrock-runtime.us-east-1.amazonaws.com", "localhost"], check=True)
            t.ctx = tls_context(t.ca)
            cert = os.path.join(tmp, "ca", "server.pem")
            key = os.path.join(tmp, "ca", "server.key")
            imds = t.start("veil-imds-sim", ["--listen", "tcp:127.0.0.1:0", "--credential-seed",
                                             SEED, "--expiration-seconds", "6"])
            bedrock = t.start("veil-bedrock-sim", [
                "--listen", "tcp:127.0.0.1:0", "--cert", cert, "--key", key, "--region", REGION,
                "--access-key-id", AKID, "--secret-access-key", SECRET, "--session-token", TOKEN,
                "--credential-seed", SEED])
            t.bedrock_basic(bedrock.port)
            t.bedrock_refusals(bedrock.port)
            t.bedrock_faults(bedrock.port)
            t.bedrock_concurrency(bedrock.port)
            t.bedrock_keep_alive(bedrock.port, cert, key)
            t.imds(imds.port)
            t.imds_rotation(imds.port)
            t.cross(imds.port, bedrock.port)
            t.cli()
            t.bedrock_defaults(cert, key)

            def log_hygiene():
                text = bedrock.text() + imds.text()
                for secret in (SECRET, TOKEN, SEED, "Hello there, simulator", "héllo"):
                    C.ok(secret not in text, f"{secret!r} in a log")
                lines = [ln for ln in bedrock.text().splitlines() if "event=request" in ln]
                C.ok(lines and all(re.search(r"rid=[0-9a-f]{16} ", ln) for ln in lines))
                C.ok(all(re.search(r"method=\S+ path=\S+ status=\d+ fault=\S+ outcome=\S+ "
                                   r"duration_ms=\d+", ln) for ln in lines), lines[:3])
            t.check("logs: one line per request with rid/method/path/status/fault/duration, "
                    "no secrets or prompts", log_hygiene)
            t.stop(bedrock)
            t.stop(imds)
        except Exception as e:  # noqa: BLE001
            C.ok(False, f"harness: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            for s in list(t.sims):
                s.kill()
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

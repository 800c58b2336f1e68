#!/usr/bin/python3
"""Integration: `veil-load --through`, the load generator as veild's clients, on the
whole local stack (veild in nitro mode -> veil-enclave -> veil-proxy -> the Bedrock
simulator over TLS), with the counts it reports (--kv) checked:

- formats 1 and 3: every stream ok, every chunk verified (streams x chunks), no error;
- injected faults (the simulator's drop, a client that leaves mid-stream, malformed
  bodies): each counted apart and ending as it must, none counted as an error;
- behind a hostile proxy between veil-load and veild (the attack: a server or network
  that forges, drops or cuts the answer), each stream fails with its specific kind:
  a flipped ciphertext byte (format 3 and format 1) -> decrypt; a dropped format-3
  element -> decrypt (the next one does not open at its index); a stream ended
  cleanly after two chunks, without stored and done -> truncated; a format-1 chunk
  in a format-3 stream (a downgrade) -> protocol;
- usage: --through without --dev-key is refused (exit 2).
No timing assertions. Prints `N passed, M failed`; exits non-zero on any failure.
"""
import http.client
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, ISSUER, Checks, Stack, TempDir, dev_token, keypair, seal  # noqa: E402

C = Checks()
STREAM = "/api/v1/chat/encrypted/stream"


def load(tmp, url, name, *args, timeout=120):
    """Runs veil-load --through; returns (exit status, the kv figures as ints where they are)."""
    kv = os.path.join(tmp, f"{name}.kv")
    argv = [os.path.join(BIN, "veil-load"), "--through", url, "--dev-key", os.path.join(tmp, "jwt.key"),
            "--issuer", ISSUER, "--kv", kv, "--time-limit", "60", *args]
    r = subprocess.run(argv, capture_output=True, timeout=timeout)
    figures = {}
    if os.path.exists(kv):
        for line in open(kv):
            k, _, v = line.strip().partition("=")
            try:
                figures[k] = int(v)
            except ValueError:
                figures[k] = v
    if r.returncode not in (0, 1):
        print(r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace"))
    return r.returncode, figures, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


class HostileProxy:
    """Between veil-load and veild. Relays every request; a stream's SSE events pass
    through mode: "pass"; "flip" (a hex digit of the 2nd chunk's ciphertext changed);
    "drop" (the 2nd chunk left out); "cut" (after 2 chunks the response ends cleanly,
    with its last chunk of chunked coding: no stored, no done); "downgrade" (the 2nd
    format-3 element replaced by a format-1 chunk sealed to the client's key)."""

    def __init__(self, port):
        self.mode = "pass"
        self.streams = 0
        px = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def relay(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                c.request(self.command, self.path, body=body, headers=hdrs)
                r = c.getresponse()
                if self.path == STREAM and r.status == 200:
                    px.streams += 1
                    try:
                        self.stream(r, json.loads(body))
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # veil-load leaves at the first flaw it finds
                else:
                    data = r.read()
                    self.send_response(r.status)
                    self.send_header("Content-Type", r.getheader("Content-Type") or "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                c.close()

            def chunk(self, data):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def stream(self, r, req):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                buf, chunks = b"", 0
                while True:
                    data = r.read1(65536)
                    if not data:
                        break
                    buf += data
                    while b"\n\n" in buf:
                        ev, buf = buf.split(b"\n\n", 1)
                        if not ev.startswith(b"data: "):
                            self.chunk(ev + b"\n\n")
                            continue
                        j = json.loads(ev[6:])
                        if j.get("type") in ("encrypted_chunk", "encrypted_chunk_v3"):
                            chunks += 1
                            if chunks == 2:
                                if px.mode == "drop":
                                    continue
                                if px.mode == "flip":
                                    ct = j["encrypted_content"]["ciphertext"] if "encrypted_content" in j \
                                        else j["ciphertext"]
                                    flipped = ("1" if ct[0] != "1" else "2") + ct[1:]
                                    if "encrypted_content" in j:
                                        j["encrypted_content"]["ciphertext"] = flipped
                                    else:
                                        j["ciphertext"] = flipped
                                if px.mode == "downgrade":
                                    j = {"type": "encrypted_chunk", "encrypted_content":
                                         seal(req["client_transport_public_key"], " chunk 1",
                                              "enclave-to-client-transport")}
                            if px.mode == "cut" and chunks > 2:
                                self.wfile.write(b"0\r\n\r\n")
                                return
                        self.chunk(b"data: " + json.dumps(j).encode() + b"\n\n")
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_POST = do_PUT = do_DELETE = relay

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def honest(tmp, url):
    for fmt in ("1", "3"):
        rc, f, out = load(tmp, url, f"honest{fmt}", "--streams", "4", "--total", "12", "--chunks", "5",
                          "--stream-format", fmt)
        C.eq(rc, 0, f"format {fmt}: veil-load exits 0 ({out[-400:]})")
        C.eq((f.get("streams_ok"), f.get("chunks"), f.get("errors_total")), (12, 60, 0),
             f"format {fmt}: 12 streams ok, 60 chunks verified, no error")
        C.eq(f.get("stream_format"), int(fmt), f"format {fmt}: the run says its format")


def faults(tmp, url):
    # streams 0..19: fault_of spreads the percentages over i*37 mod 100
    want = {"drop": 0, "disconnect": 0, "malformed": 0}
    for i in range(20):
        b = (i * 37) % 100
        k = "drop" if b < 20 else "disconnect" if b < 40 else "malformed" if b < 60 else None
        if k:
            want[k] += 1
    rc, f, out = load(tmp, url, "faults", "--streams", "4", "--total", "20", "--chunks", "6", "--stream-format", "3",
                      "--faults", "drop:20,disconnect:20,malformed:20")
    C.eq(rc, 0, f"injected faults that end as they must are not errors ({out[-400:]})")
    for k, n in want.items():
        C.eq((f.get(f"injected_{k}"), f.get(f"injected_{k}_ok")), (n, n), f"{k}: {n} injected, each as it must end")
    C.eq(f.get("errors_total"), 0, "faults: no error besides the injected ones")
    C.eq(f.get("streams_ok"), 20 - sum(want.values()), "faults: the other streams complete")


def hostile(tmp, stack):
    px = HostileProxy(stack.veild.port)
    try:
        for mode, fmt, kind in [("flip", "3", "errors_decrypt"), ("flip", "1", "errors_decrypt"),
                                ("drop", "3", "errors_decrypt"), ("cut", "3", "errors_truncated"),
                                ("cut", "1", "errors_truncated"), ("downgrade", "3", "errors_protocol")]:
            px.mode = mode
            before = px.streams
            rc, f, out = load(tmp, px.url, f"{mode}{fmt}", "--streams", "2", "--total", "3", "--chunks", "5",
                              "--stream-format", fmt)
            C.ok(px.streams - before == 3, f"{mode} format {fmt}: the streams went through the proxy")
            C.eq(rc, 1, f"{mode} format {fmt}: veil-load exits 1")
            C.eq((f.get(kind), f.get("errors_total"), f.get("streams_ok")), (3, 3, 0),
                 f"{mode} format {fmt}: every stream fails as {kind[7:]}, and only so ({out[-300:]})")
        px.mode = "pass"
        rc, f, _ = load(tmp, px.url, "pass", "--streams", "2", "--total", "3", "--chunks", "5", "--stream-format", "3")
        C.eq((rc, f.get("streams_ok"), f.get("errors_total")), (0, 3, 0), "the same proxy relaying honestly: all ok")
    finally:
        px.stop()


def usage(tmp, url):
    r = subprocess.run([os.path.join(BIN, "veil-load"), "--through", url], capture_output=True, timeout=30)
    C.eq(r.returncode, 2, "--through without --dev-key: usage error")
    C.ok(b"--dev-key" in r.stderr, "and the message names --dev-key")
    r = subprocess.run([os.path.join(BIN, "veil-load"), "--through", url, "--dev-key", os.path.join(tmp, "jwt.key"),
                        "--streams", "9", "--users", "2"], capture_output=True, timeout=30)
    C.eq(r.returncode, 2, "more streams than users x --streams-per-user: usage error (veild would answer 429)")


def main():
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            dev_token(tmp, "user_load")  # the key veil-load signs with; veild reads its JWKS
            stack.start_enclave()
            stack.start_veild("nitro")
            for name, fn in [("honest", lambda: honest(tmp, stack.url)), ("faults", lambda: faults(tmp, stack.url)),
                             ("hostile", lambda: hostile(tmp, stack)), ("usage", lambda: usage(tmp, stack.url))]:
                try:
                    fn()
                except Exception as e:
                    import traceback
                    traceback.print_exc()
                    C.ok(False, f"{name}: {e!r}")
        finally:
            codes = stack.stop()
            logs = stack.all_logs()
            C.ok(not any(m in logs for m in ("AddressSanitizer", "runtime error:", "LeakSanitizer")),
                 "no sanitizer report in any log")
            C.ok(all(c == 0 for c in codes.values()), f"every process exits cleanly: {codes}")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

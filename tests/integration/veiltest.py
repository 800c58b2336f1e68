"""Shared helpers for veil's Python integration tests: start and always stop the
real programs, the local stack, the EncryptedPayload (an independent
implementation on pyca/cryptography), an SSE client, dev tokens, and a tiny
check counter that prints the closing `N passed, M failed` line.
"""
import http.client
import json
import pwd
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

BIN = os.environ.get("VEIL_BIN", "build")
SRC = os.environ.get("VEIL_SRC", ".")
HOST = "bedrock-runtime.us-east-1.amazonaws.com"
ISSUER = "https://veil.dev.local"
SEED = "veil-test-credential-seed"
RAW = serialization.Encoding.Raw


# ---- checks -------------------------------------------------------------------

class Checks:
    """The one pass/fail harness of the Python tests. A check that fails prints
    `FAIL: what` and the test goes on; run() runs a group of checks and counts an
    exception inside it as one more failure (with its traceback); finish() prints
    the closing `N passed, M failed` line and gives the exit status (failing when
    nothing passed). A check without `what` is named by its file and line, as an
    assert's traceback would."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    @staticmethod
    def _where(depth):
        f = sys._getframe(depth)
        return f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno}"

    def ok(self, cond, what=None):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {self._where(2) if what is None else what}", flush=True)
        return cond

    def eq(self, got, want, what=None):
        what = self._where(2) if what is None else what
        return self.ok(got == want, f"{what}: got {got!r}, want {want!r}")

    def raises(self, error, what, fn, *args):
        """Passes only when fn(*args) raises error: that it opened, or failed for any
        other reason (a wrong field, bad hex, a bug in the test), is a failure."""
        try:
            fn(*args)
        except error:
            return self.ok(True, what)
        except Exception as e:  # noqa: BLE001 - not the refusal this check is about
            return self.ok(False, f"{what}: {type(e).__name__}: {e} (not {error.__name__})")
        return self.ok(False, f"{what}: no {error.__name__}, it went through")

    def run(self, what, fn, *args):
        """Runs fn(*args); returns its result, or None after an exception (a failure)."""
        try:
            out = fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the test goes on
            self.failed += 1
            print(f"FAIL: {what}: {type(e).__name__}: {e}\n{traceback.format_exc()}", flush=True)
            return None
        self.passed += 1  # it ran to its end
        return out

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        return 1 if self.failed or not self.passed else 0


# ---- processes ------------------------------------------------------------------

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "LeakSanitizer", "runtime error:")


class Proc:
    """A real program with stderr in a log file; `event=listening addr=...` tells
    when it is ready (and, for tcp, its port). Always stopped by its test."""

    def __init__(self, name, argv, env=None, tmp=None, cwd=None, drop_env=(), preexec=None):
        self.name = name
        self.log_path = os.path.join(tmp, f"{name}.log")
        self.log = open(self.log_path, "ab")
        e = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_env))}
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        e.update(env or {})
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=self.log, env=e, cwd=cwd,
                                  start_new_session=True, preexec_fn=preexec)
        self.addr = None
        self.port = None

    def wait_listening(self, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            m = re.search(r"event=listening addr=(\S+)", self.text())
            if m:
                self.addr = m.group(1)
                if self.addr.startswith("tcp:"):
                    self.port = int(self.addr.rsplit(":", 1)[1])
                return self.addr
            if self.p.poll() is not None:
                break
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"{self.name} did not start:\n{self.text()[-3000:]}")

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, needle, timeout=10, count=1):
        end = time.time() + timeout
        while time.time() < end:
            if self.text().count(needle) >= count:
                return True
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Sends sig, waits, then kills; returns the exit status (negative: a signal)."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        if not self.log.closed:
            self.log.close()
        return self.p.returncode

    def kill(self):
        return self.stop(signal.SIGKILL, 5)

    def sanitizer_reports(self):
        return [line for line in self.text().splitlines() if any(m in line for m in SANITIZER_MARKS)]

    def sanitizer_clean(self):
        return not self.sanitizer_reports()


def run(argv, env=None, input=None, check=True):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(argv, env=e, input=input, capture_output=True, timeout=120)
    if check and r.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode()}")
    return r


def dev_token(tmp, sub, org=None, role=None, ttl=3600):
    argv = [os.path.join(BIN, "veil"), "dev-token", "--sub", sub, "--key", os.path.join(tmp, "jwt.key"),
            "--jwks-out", os.path.join(tmp, "jwks.json"), "--issuer", ISSUER, "--ttl", str(ttl)]
    if org:
        argv += ["--org", org, "--role", role or "member"]
    return run(argv).stdout.decode().strip()


# ---- the stack ------------------------------------------------------------------

class Stack:
    """bedrock-sim + imds-sim (seeded credentials) + proxy + enclave + veild."""

    def __init__(self, tmp, imds_expiration=3600):
        self.tmp = tmp
        self.procs = {}
        ca = os.path.join(tmp, "ca")
        run([os.path.join(SRC, "scripts/make-test-ca"), ca, HOST, "localhost"])
        self.ca = os.path.join(ca, "ca.pem")
        self.sim = self.start("bedrock-sim", [os.path.join(BIN, "veil-bedrock-sim"), "--listen", "tcp:127.0.0.1:0",
                              "--cert", os.path.join(ca, "server.pem"), "--key", os.path.join(ca, "server.key"),
                              "--credential-seed", SEED])
        self.imds = self.start("imds-sim", [os.path.join(BIN, "veil-imds-sim"), "--listen", "tcp:127.0.0.1:0",
                               "--credential-seed", SEED, "--expiration-seconds", str(imds_expiration)])
        self.endpoint = f"{HOST}:{self.sim.port}"
        self.proxy_addr = "unix:" + os.path.join(tmp, "proxy.sock")
        self.proxy = self.start("proxy", [os.path.join(BIN, "veil-proxy"), "--listen", self.proxy_addr,
                                "--allow", self.endpoint, "--resolve", f"{self.endpoint}:127.0.0.1"])
        self.enclave_addr = "unix:" + os.path.join(tmp, "enclave.sock")
        self.enclave = None
        self.veild = None
        dev_token(tmp, "bootstrap")  # creates the key and the JWKS file

    def start(self, name, argv, env=None):
        # each start gets its own name and log: a restart must not read the old log
        n = sum(1 for k in self.procs if k == name or k.startswith(name + "-"))
        if n:
            name = f"{name}-{n + 1}"
        p = Proc(name, argv, env, self.tmp)
        self.procs[name] = p
        p.wait_listening()
        return p

    def start_enclave(self, extra=()):
        if self.enclave:
            self.enclave.stop()
        self.enclave = self.start("enclave", [os.path.join(BIN, "veil-enclave"), "--listen", self.enclave_addr,
                                  "--proxy", self.proxy_addr, "--bedrock-endpoint", self.endpoint,
                                  "--ca-file", self.ca, "--stream-timeout", "4",
                                  "--nsm", "sim:" + os.path.join(self.tmp, "nsm"), *extra],
                                  env={"VEIL_LOG_LEVEL": "debug"})
        return self.enclave

    def veild_env(self, mode, db_url=None, extra=None):
        env = {
            "ENCLAVE_MODE": mode, "VEIL_LISTEN": "tcp:127.0.0.1:0",
            "VEIL_DATA_DIR": os.path.join(self.tmp, "data"), "CLERK_ISSUER": ISSUER,
            "CLERK_JWKS_FILE": os.path.join(self.tmp, "jwks.json"),
            "VEIL_IMDS_ENDPOINT": f"127.0.0.1:{self.imds.port}", "VEIL_ENCLAVE_PROBE_SECONDS": "1",
            "ENCLAVE_INFERENCE_TIMEOUT": "6", "VEIL_LOG_LEVEL": "debug",
            "CLERK_WEBHOOK_SECRET": "whsec_" + "dGVzdC13ZWJob29rLXNlY3JldC0zMi1ieXRlcy4uLi4=",
            # tests drive one user much faster than a person: the rate limit has its own test
            "VEIL_USER_RATE": "0",
        }
        if mode == "nitro":
            env["ENCLAVE_ADDR"] = self.enclave_addr
        else:  # the in-process core reaches the sim through the same proxy
            env.update({"PROXY_ADDR": self.proxy_addr, "BEDROCK_ENDPOINT": self.endpoint, "VEIL_CA_FILE": self.ca})
        if db_url:
            env["DATABASE_URL"] = db_url
        env.update(extra or {})
        return env

    def start_veild(self, mode, db_url=None, extra=None, name="veild"):
        if self.veild:
            self.veild.stop()
        self.veild = self.start(name, [os.path.join(BIN, "veild")], self.veild_env(mode, db_url, extra))
        self.url = f"http://127.0.0.1:{self.veild.port}"
        # credentials reach the enclave (or the in-process core) shortly after start;
        # tests that chat right away wait for them (a nitro enclave may be down: bounded)
        self.veild.wait_log("event=credentials_pushed", 10)
        return self.veild

    def stop(self):
        codes = {}
        for name in reversed(list(self.procs)):
            codes[name] = self.procs[name].stop()
        return codes

    def all_logs(self):
        return "".join(p.text() for p in self.procs.values())


# ---- the envelope (independent implementation) -----------------------------------

def keypair():
    k = X25519PrivateKey.generate()
    return k, k.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex()


def _key(priv, pub, salt, ctx):
    ss = priv.exchange(pub)
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=salt, info=ctx.encode()).derive(ss)


def seal(pub_hex, pt, ctx):
    if isinstance(pt, str):
        pt = pt.encode()
    eph = X25519PrivateKey.generate()
    salt, iv = os.urandom(32), os.urandom(16)
    key = _key(eph, X25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)), salt, ctx)
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    ct = enc.update(pt) + enc.finalize()
    return {"ephemeral_public_key": eph.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex(),
            "iv": iv.hex(), "ciphertext": ct.hex(), "auth_tag": enc.tag.hex(), "hkdf_salt": salt.hex()}


# ---- stream format 3, written from its wire description (shared/reference/stream-format-3.md) ----

SV3_LABEL = b"veil-stream-v3"
SV3_REQUEST_CONTEXT = "client-to-enclave-request-v3"


def ep_raw(ep):
    """An EncryptedPayload's raw fields in the order the format hashes them."""
    return b"".join(bytes.fromhex(ep[k]) for k in ("ephemeral_public_key", "hkdf_salt", "iv", "ciphertext",
                                                     "auth_tag"))


def ep_hash(ep):
    h = hashes.Hash(hashes.SHA256())
    h.update(ep_raw(ep))
    return h.finalize()


def sv3_request(enclave_pub_hex, message, history, client_pub_hex, storage_pub_hex, model, session_id,
                request_id=None, issued_at=None):
    """The sealed request of format 3 and its request_hash; history: [(role, text)]."""
    inner = {"message": message, "history": [{"role": r, "content": t} for r, t in history],
             "client_public_key": client_pub_hex, "storage_public_key": storage_pub_hex, "model_id": model,
             "session_id": session_id, "request_id": request_id or os.urandom(16).hex(),
             "issued_at": int(time.time()) if issued_at is None else issued_at}
    ep = seal(enclave_pub_hex, json.dumps(inner), SV3_REQUEST_CONTEXT)
    return ep, ep_hash(ep)


def sv3_key(client_priv, enclave_pub_hex, stream_key, request_hash):
    """K = HKDF-SHA512(X25519(c, E) || X25519(c, S), salt, "veil-stream-v3" || request_hash)."""
    e = X25519PublicKey.from_public_bytes(bytes.fromhex(stream_key["ephemeral_public_key"]))
    s = X25519PublicKey.from_public_bytes(bytes.fromhex(enclave_pub_hex))
    ikm = client_priv.exchange(e) + client_priv.exchange(s)
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=bytes.fromhex(stream_key["hkdf_salt"]),
                info=SV3_LABEL + request_hash).derive(ikm)


def sv3_open(key, seq, kind, ct_hex, tag_hex):
    """Element seq of kind (0 text, 1 end, 2 thinking); raises InvalidTag if it is not exactly that."""
    n = seq.to_bytes(8, "big")
    dec = Cipher(algorithms.AES(key), modes.GCM(b"\0" * 8 + n, bytes.fromhex(tag_hex))).decryptor()
    dec.authenticate_additional_data(SV3_LABEL + n + bytes([kind]))
    return dec.update(bytes.fromhex(ct_hex)) + dec.finalize()


def sv3_sender(enclave_priv, client_pub_hex, request_hash):
    """The enclave's side of format 3 (for a test that plays the enclave, or a forger):
    a fresh stream key e and salt; returns (K, the stream_key event's fields). A forger
    without the enclave's private key passes a key of its own as enclave_priv."""
    e = X25519PrivateKey.generate()
    salt = os.urandom(32)
    c = X25519PublicKey.from_public_bytes(bytes.fromhex(client_pub_hex))
    k = HKDF(algorithm=hashes.SHA512(), length=32, salt=salt,
             info=SV3_LABEL + request_hash).derive(e.exchange(c) + enclave_priv.exchange(c))
    return k, {"ephemeral_public_key": e.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex(),
               "hkdf_salt": salt.hex()}


def sv3_seal(key, seq, kind, pt):
    """Element seq of kind as {"seq", "ciphertext", "auth_tag"}."""
    if isinstance(pt, str):
        pt = pt.encode()
    n = seq.to_bytes(8, "big")
    enc = Cipher(algorithms.AES(key), modes.GCM(b"\0" * 8 + n)).encryptor()
    enc.authenticate_additional_data(SV3_LABEL + n + bytes([kind]))
    ct = enc.update(pt) + enc.finalize()
    return {"seq": seq, "ciphertext": ct.hex(), "auth_tag": enc.tag.hex()}


def open_ep(priv, ep, ctx):
    key = _key(priv, X25519PublicKey.from_public_bytes(bytes.fromhex(ep["ephemeral_public_key"])),
               bytes.fromhex(ep["hkdf_salt"]), ctx)
    dec = Cipher(algorithms.AES(key), modes.GCM(bytes.fromhex(ep["iv"]), bytes.fromhex(ep["auth_tag"]))).decryptor()
    return dec.update(bytes.fromhex(ep["ciphertext"])) + dec.finalize()


# ---- HTTP -------------------------------------------------------------------------

def wait_for(fn, timeout=20):
    """fn's first true value within timeout seconds (polled), else its last value."""
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


def call(url, method, path, token=None, body=None, headers=None, timeout=30):
    host = url.split("//", 1)[1]
    c = http.client.HTTPConnection(host, timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    c.request(method, path, body=data, headers=h)
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return r.status, parsed, r


def sse(url, path, token, body, timeout=30):
    """POST and read the SSE stream to its end; returns (status, events or error body)."""
    host = url.split("//", 1)[1]
    c = http.client.HTTPConnection(host, timeout=timeout)
    c.request("POST", path, body=json.dumps(body),
              headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raw = r.read()
        c.close()
        return r.status, json.loads(raw) if raw else None
    events, buf = [], b""
    while True:
        chunk = r.read1(65536) if hasattr(r, "read1") else r.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            ev, buf = buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    events.append(json.loads(line[6:]))
    c.close()
    return 200, events


class SseStream:
    """A chat stream (format 1) read one SSE event at a time, keep-alive comments
    skipped: for tests that act between two events. tpriv opens the chunks."""

    def __init__(self, url, token, prompt, model="us.meta.llama3-1-8b-instruct-v1:0", timeout=60):
        st, info, _ = call(url, "GET", "/api/v1/chat/enclave/info", token)
        key = info["enclave_public_key"]
        self.tpriv, tpub = keypair()
        body = {"model": model, "client_transport_public_key": tpub,
                "encrypted_message": seal(key, prompt, "client-to-enclave-transport"), "encrypted_history": []}
        self.c = http.client.HTTPConnection(url.split("//", 1)[1], timeout=timeout)
        self.c.request("POST", "/api/v1/chat/encrypted/stream", body=json.dumps(body),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        self.r = self.c.getresponse()
        self.status = self.r.status
        self.buf = b""

    def next(self):
        """The next event, or None at the end of the stream."""
        while True:
            while b"\n\n" not in self.buf:
                chunk = self.r.read1(65536)
                if not chunk:
                    return None
                self.buf += chunk
            ev, self.buf = self.buf.split(b"\n\n", 1)
            for line in ev.split(b"\n"):
                if line.startswith(b"data: "):
                    return json.loads(line[6:])

    def close(self):
        self.c.close()


def expected_answer(echo, n, chunk_size=0):
    s = "Echo: " + echo
    for i in range(1, n):
        d = f" chunk {i}"
        s += d + "." * max(0, chunk_size - len(d))
    return s


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="veil-it-")
        return self.path

    def __exit__(self, *exc):
        if not os.environ.get("VEIL_KEEP_TMP"):
            shutil.rmtree(self.path, ignore_errors=True)


# ---- PostgreSQL -------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway cluster: initdb (as nobody when root), 127.0.0.1 on a free port."""

    def __init__(self):
        self.dir = None
        self.bindir = None
        for v in range(20, 9, -1):
            d = f"/usr/lib/postgresql/{v}/bin"
            if os.access(os.path.join(d, "initdb"), os.X_OK):
                self.bindir = d
                break
        if not self.bindir and shutil.which("initdb"):
            self.bindir = os.path.dirname(os.path.realpath(shutil.which("initdb")))

    def as_user(self, args):
        return (["runuser", "-u", "nobody", "--"] + args) if os.geteuid() == 0 else args

    def start(self):
        self.user = "nobody" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.dir = tempfile.mkdtemp(prefix="veil-routes-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.dir, "data")
        self.port = free_port()
        b = self.bindir
        run = lambda a: subprocess.run(self.as_user(a), check=True, capture_output=True, timeout=120)
        run([f"{b}/initdb", "-D", data, "-U", self.user, "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync"])
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off")
        run([f"{b}/pg_ctl", "-D", data, "-o", opts, "-l", os.path.join(self.dir, "pg.log"), "-w", "start"])
        run([f"{b}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "veiltest"])
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/veiltest"

    def stop(self):
        if not self.dir:
            return
        subprocess.run(self.as_user([f"{self.bindir}/pg_ctl", "-D", os.path.join(self.dir, "data"), "stop",
                                     "-m", "immediate"]), capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def query(self, sql):
        out = subprocess.run([f"{self.bindir}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                              "-d", "veiltest", "-X", "-A", "-t", "-F", "\x1f", "-P", "null=\\N", "-c", sql],
                             check=True, capture_output=True, text=True, timeout=30).stdout
        return [tuple(None if c == "\\N" else c for c in line.split("\x1f"))
                for line in out.splitlines() if line]


# ---- a TCP relay the test controls (a frozen or slow database) ------------------------

class TcpProxy:
    """Relays TCP connections from 127.0.0.1:<port> to 127.0.0.1:<target>, one thread
    per direction. freeze() stops forwarding both ways (the bytes wait, connections
    stay open, new ones are accepted and wait too); thaw() lets everything through.
    delay_ms holds every piece that arrives for that long before forwarding it (order
    kept, pieces in flight together: a link's latency, not a queue). Always stopped
    by its user."""

    def __init__(self, target_port, delay_ms=0):
        import threading
        self.target = target_port
        self.delay = delay_ms / 1000.0
        self.flowing = threading.Event()
        self.flowing.set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self):
        self.flowing.clear()

    def thaw(self):
        self.flowing.set()

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        import queue
        import threading
        q = queue.Queue()

        def writer():
            while True:
                item = q.get()
                if item is None:
                    break
                at, data = item
                self.flowing.wait()
                left = at - time.monotonic()
                if left > 0:
                    time.sleep(left)
                self.flowing.wait()
                try:
                    dst.sendall(data)
                except OSError:
                    break
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

        w = threading.Thread(target=writer, daemon=True)
        w.start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            q.put((time.monotonic() + self.delay, data))
        q.put(None)

    def stop(self):
        self.stopping = True
        self.flowing.set()
        try:
            self.sock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.close()
                except OSError:
                    pass


# ---- a scripted enclave (a hostile or broken one, for veild's nitro mode) -------------

class FakeEnclave:
    """Speaks the enclave protocol on a unix socket, newline-framed, one thread per
    connection: GET_PUBLIC_KEY, HEALTH and SET_CREDENTIALS as a healthy enclave
    answers them, and CHAT_STREAM with whatever events on_stream(request) returns
    (a list of dicts, each sent as one line). Always stopped by its test."""

    def __init__(self, path, on_stream):
        import threading
        self.path = path
        self.on_stream = on_stream
        self.priv, self.pub = keypair()
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(64)
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        for ev in self._answer(json.loads(line)):
                            c.sendall(json.dumps(ev).encode() + b"\n")
        except OSError:
            return
        finally:
            c.close()

    def _answer(self, req):
        cmd = req.get("command")
        self.requests.append(cmd)
        if cmd == "GET_PUBLIC_KEY":
            return [{"status": "success", "command": cmd, "public_key": self.pub, "region": "us-east-1"}]
        if cmd == "HEALTH":
            return [{"status": "success", "command": cmd, "enclave": "running", "has_credentials": True,
                     "region": "us-east-1", "public_key": self.pub}]
        if cmd == "SET_CREDENTIALS":
            return [{"status": "success", "command": cmd, "has_credentials": True, "expiration": None}]
        if cmd == "CHAT_STREAM":
            return self.on_stream(req)
        return [{"status": "error", "error": f"Unknown command: {cmd}"}]

    def stop(self):
        self.stopping = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

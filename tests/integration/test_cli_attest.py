#!/usr/bin/python3
"""Attestation in the `veil` client.

`veil attest verify` on the two real Nitro documents of tests/fixtures/attestation: both
verify at their own time (--at doc) and print the fields expected.json names, in every
spelling (raw CBOR, base64, wrapped base64, hex, veild's /enclave/info JSON); checked now
both fail on `validity`; a flipped signature byte fails on `signature`, another nonce on
`nonce`, another PCR on `pcr`. `veil attest sim-measurements` against an independent
computation of the simulator's formula.

Then the full stack in nitro mode with the simulated NSM, the client logged in with the
simulator's root and measurements, behind a small HTTP proxy in this script that plays
the hostile server. Each attack names what it stops and the exact refusal, and the proxy
checks that nothing reached the stream route:
- the server substitutes its own enclave key (it could then read everything): `public-key`;
- the server sends the key without a document (the original's shape): `missing`;
- the server replays a document made earlier for another nonce: `nonce`;
- the enclave runs other code than the published measurements: `pcr`;
- the enclave restarts and the server substitutes the NEW key: the re-fetch after
  "the enclave key may have changed" is verified too;
- no measurements stored: a refusal that says how to fix it, nothing sent;
- a login to another server does not inherit the measurements; `--attestation-root aws`
  puts the pinned root back (and the simulated enclave is then refused on `root`).
And what works: an attested ask and chat, a chat that follows an enclave restart,
--no-attestation (warned about), a simulated document verified offline with --root
(noted on stderr) and refused without it (`root`).
Prints `N passed, M failed`.
"""
import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import (BIN, SRC, Checks, HttpRelay, Stack, TempDir, call, dev_token, expected_answer,  # noqa: E402
                      keypair, wait_for)

C = Checks()
FIX = os.path.join(os.environ.get("VEIL_FIXTURES", os.path.join(SRC, "tests", "fixtures")), "attestation")
INFO = "/api/v1/chat/enclave/info"
STREAM = "/api/v1/chat/encrypted/stream"
USER_DATA = b"veil-transport-v1"
SIM_SUFFIX = "-veil-simulated-nsm"
WAIT_S = 60


def veil(cfg, args, env=None, stdin=None):
    e = dict(os.environ, VEIL_CONFIG=cfg)
    e.update(env or {})
    return subprocess.run([os.path.join(BIN, "veil")] + args, env=e, input=stdin, capture_output=True, timeout=300)


def verify(args, stdin=None):
    return subprocess.run([os.path.join(BIN, "veil"), "attest", "verify"] + args, input=stdin,
                          capture_output=True, timeout=120)


def err(r):
    return r.stderr.decode(errors="replace")


def one_line(r, prefix):
    """stderr is exactly one line, `prefix...`."""
    s = err(r)
    return s.startswith(prefix) and s.endswith("\n") and s.count("\n") == 1


def last_line(r):
    lines = err(r).splitlines()
    return lines[-1] if lines else ""


# ---- offline: the real vectors ----------------------------------------------------

def check_vectors(tmp):
    expected = json.load(open(os.path.join(FIX, "expected.json")))["documents"]
    for d in expected:
        name = d["file"]
        path = os.path.join(FIX, name)
        raw = open(path, "rb").read()
        r = verify([path, "--at", "doc"])
        C.eq((r.returncode, err(r)), (0, ""), f"{name}: verifies at its own time")
        j = json.loads(r.stdout)
        for k in ("module_id", "digest", "public_key", "user_data", "nonce"):
            C.eq(j[k], d[k], f"{name}: {k}")
        C.eq(j["timestamp"], d["timestamp_ms"], f"{name}: timestamp")
        C.eq(j["simulated"], False, f"{name}: not simulated")
        C.eq(len(j["pcrs"]), d["pcr_count"], f"{name}: PCR count")
        C.eq({len(v) // 2 for v in j["pcrs"].values()}, {d["pcr_len"]}, f"{name}: PCR length")
        C.ok(j["pcrs"]["0"].startswith(d["pcr0_prefix"]), f"{name}: PCR0")
        C.eq(sorted(int(k) for k, v in j["pcrs"].items() if v.strip("0")), d["nonzero_pcrs"], f"{name}: non-zero PCRs")
        C.eq(len(j["chain"]), d["cabundle"] + 1, f"{name}: the chain, root to leaf")
        C.eq(j["chain"][0], d["root_subject"], f"{name}: the chain starts at the AWS root")
        C.eq(j["leaf_not_before"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(d["leaf_not_before"])),
             f"{name}: the leaf's validity")
        good = r.stdout

        # checked now, the three-hour leaf expired long ago
        r = verify([path])
        C.ok(r.returncode == 1 and one_line(r, "veil attest verify: validity: ") and not r.stdout,
             f"{name}: fails now on validity: {err(r)!r}")

        # every spelling of the same document
        b64 = base64.b64encode(raw)
        for how, data in (("base64", b64), ("base64 wrapped at 76", base64.encodebytes(raw)),
                          ("hex", raw.hex().encode() + b"\n"), ("raw CBOR", raw),
                          ("base64url", base64.urlsafe_b64encode(raw).rstrip(b"=")),
                          ("/enclave/info JSON", json.dumps({"enclave_public_key": "00",
                                                              "attestation": b64.decode()}).encode())):
            r = verify(["-", "--at", "doc"], stdin=data)
            C.eq((r.returncode, r.stdout), (0, good), f"{name}: {how} on stdin")
        f = os.path.join(tmp, name + ".b64")
        open(f, "wb").write(b64)
        C.eq(verify([f, "--at", "doc"]).stdout, good, f"{name}: base64 in a file")

        # attack: a forged document keeps AWS's chain but not its signature
        bad = bytearray(raw)
        bad[-10] ^= 0x01  # the signature is the COSE array's last element: its last 96 bytes
        r = verify(["-", "--at", "doc"], stdin=bytes(bad))
        C.ok(r.returncode == 1 and one_line(r, "veil attest verify: signature: "),
             f"{name}: a flipped signature byte: {err(r)!r}")

        # attack: a document recorded for another client's nonce is replayed
        r = verify([path, "--at", "doc", "--nonce", "ab" * 32])
        C.ok(r.returncode == 1 and one_line(r, "veil attest verify: nonce: "), f"{name}: another nonce: {err(r)!r}")

    # the expectations that hold pass; a changed PCR does not
    os_doc = os.path.join(FIX, "opensecret-sdk.cbor")
    d = expected[0]
    meas = os.path.join(FIX, "measurements", "opensecret-sdk.json")
    r = verify([os_doc, "--at", "doc", "--nonce", d["nonce"], "--public-key", d["public_key"], "--measurements", meas])
    C.eq((r.returncode, err(r)), (0, ""), "opensecret: its nonce, key and PCR0-2 hold")
    r = verify([os_doc, "--at", "doc", "--expect-pcr", "0=" + "00" * 48])
    C.ok(r.returncode == 1 and one_line(r, "veil attest verify: pcr: "), f"opensecret: another PCR0: {err(r)!r}")
    r = verify([os_doc, "--at", "doc", "--public-key", "00" * 32])
    C.ok(r.returncode == 1 and one_line(r, "veil attest verify: public-key: "), f"opensecret: another key: {err(r)!r}")
    r = verify(["-"], stdin=b"not a document at all!")
    C.eq((r.returncode, err(r)), (1, "veil attest verify: input: the input is neither CBOR, base64 nor hex\n"),
         "text that is no document")
    r = verify([os_doc, "--at", "yesterday"])
    C.eq((r.returncode, err(r)), (2, "veil attest verify: --at is now, doc or unix seconds\n"), "a bad --at")
    # at a given time inside the leaf's validity, with the age unchecked, it passes
    r = verify([os_doc, "--at", str(d["leaf_not_before"] + 600), "--max-age", "none"])
    C.eq(r.returncode, 0, f"opensecret: --at T inside the leaf's validity: {err(r)!r}")


def check_sim_measurements(tmp):
    """The simulator's formula, computed here independently: m = SHA-384(binary),
    PCRn = SHA-384(48 zero bytes || m || n)."""
    binary = os.path.join(BIN, "veil-enclave")
    r = subprocess.run([os.path.join(BIN, "veil"), "attest", "sim-measurements", binary], capture_output=True,
                       timeout=120)
    C.eq(r.returncode, 0, f"sim-measurements: {err(r)}")
    j = json.loads(r.stdout)
    m = hashlib.sha384(open(binary, "rb").read()).digest()
    want = {f"PCR{n}": hashlib.sha384(b"\0" * 48 + m + bytes([n])).hexdigest() for n in range(3)}
    C.eq({k: v for k, v in j["Measurements"].items() if k != "HashAlgorithm"}, want,
         "sim-measurements: PCR0-2 are the simulator's formula over the binary")
    C.ok(j["Measurements"]["HashAlgorithm"].startswith("Sha384"), "sim-measurements: nitro-cli's HashAlgorithm")
    C.ok("simulated" in j.get("Simulated", "").lower(), "sim-measurements: says it is the simulator's")
    path = os.path.join(tmp, "measurements.json")
    open(path, "wb").write(r.stdout)
    return path, want


# ---- the hostile server -------------------------------------------------------------

class Proxy(HttpRelay):
    """Between the CLI and veild. mode: "pass"; "swap" (enclave_public_key in
    /enclave/info becomes a key of the proxy's own); "strip" (the same, and no
    attestation); "replay" (/enclave/info answered with an answer recorded earlier).
    seen: every (method, path); recorded: the last /enclave/info?nonce= answer passed."""

    def __init__(self, port):
        self.mode = "pass"
        self.seen = []
        self.recorded = None
        self.own_priv, self.own_pub = keypair()
        super().__init__(port)

    def request(self, h, raw):
        self.seen.append((h.command, h.path))
        if h.command == "GET" and h.path.startswith(INFO) and self.mode == "replay" and self.recorded:
            return 200, self.recorded, "application/json"
        return None

    def answer(self, h, raw, status, data, ctype):
        if h.command == "GET" and h.path.startswith(INFO) and status == 200:
            if self.mode == "pass" and "?nonce=" in h.path:
                self.recorded = data
            if self.mode in ("swap", "strip"):
                j = json.loads(data)
                j["enclave_public_key"] = self.own_pub
                if self.mode == "strip":
                    j["attestation"] = None
                data = json.dumps(j).encode()
        return status, data, ctype

    def streams(self):
        return sum(1 for m, p in self.seen if m == "POST" and p == STREAM)

    def infos(self):
        return [p for m, p in self.seen if m == "GET" and p.startswith(INFO)]


class Chat:
    """`veil chat` driven line by line; stdout and stderr read as they come."""

    def __init__(self, cfg):
        self.p = subprocess.Popen([os.path.join(BIN, "veil"), "chat"], env=dict(os.environ, VEIL_CONFIG=cfg),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = b"", b""
        threading.Thread(target=self._read, args=("out",), daemon=True).start()
        threading.Thread(target=self._read, args=("err",), daemon=True).start()

    def _read(self, which):
        f = self.p.stdout if which == "out" else self.p.stderr
        while True:
            b = f.read1(65536)
            if not b:
                return
            setattr(self, which, getattr(self, which) + b)

    def say(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def wait(self, which, needle, count=1, timeout=WAIT_S):
        end = time.time() + timeout
        while time.time() < end:
            if getattr(self, which).decode(errors="replace").count(needle) >= count:
                return True
            if self.p.poll() is not None:
                time.sleep(0.2)
                return getattr(self, which).decode(errors="replace").count(needle) >= count
            time.sleep(0.05)
        return False

    def end(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        try:
            return self.p.wait(120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


def restart_enclave(stack, token):
    """A new enclave (a new key, the same simulated NSM); back once veild knows its key
    and has pushed it credentials."""
    old = call(stack.url, "GET", INFO, token)[1]["enclave_public_key"]
    stack.start_enclave()
    ok = wait_for(lambda: (lambda s: s[0] == 200 and s[1].get("has_credentials"))(
        call(stack.url, "GET", "/api/v1/chat/enclave/health", token)) and
        call(stack.url, "GET", INFO, token)[1].get("enclave_public_key") not in (None, old), WAIT_S)
    C.ok(ok, "the restarted enclave is known to veild, with credentials")


def check_stack(tmp, meas, pcrs):
    stack = Stack(tmp)
    proxy = None
    try:
        stack.start_enclave()
        # one user here asks for many fresh documents in a short time: the rate has its own test
        stack.start_veild("nitro", extra={"VEIL_ATTEST_USER_RATE": "1000"})
        root = os.path.join(tmp, "nsm", "root.pem")
        C.ok(os.path.exists(root), "the simulated NSM wrote its root")
        proxy = Proxy(stack.veild.port)
        token = dev_token(tmp, "user_att")
        cfg = os.path.join(tmp, "att", "config.json")
        pc = {"VEIL_PASSCODE": "attest-passcode"}

        r = veil(cfg, ["login", "--server", proxy.url, "--token", "-", "--measurements", meas,
                       "--attestation-root", root], stdin=token.encode())
        C.eq(r.returncode, 0, f"login with the simulator's root and measurements: {err(r)}")
        out = r.stdout.decode()
        C.ok("attestation root: a custom root (CN=veil simulated NSM root" in out and
             f"measurements: PCR0 {pcrs['PCR0']}, PCR1 {pcrs['PCR1']}, PCR2 {pcrs['PCR2']}\n" in out,
             f"login shows the root and PCRs it will verify: {out!r}")
        C.ok(one_line(r, "veil login: warning: chat and ask will trust a custom root (CN=veil simulated NSM root"),
             f"login warns about the custom root: {err(r)!r}")
        stored = json.load(open(cfg))
        C.ok(stored["attestation_root"].startswith("-----BEGIN CERTIFICATE-----") and
             stored["measurements"]["PCR0"] == pcrs["PCR0"], "the config holds the values, not paths")
        C.eq(veil(cfg, ["keys", "init"], pc).returncode, 0, "keys init")
        # a chat needs the storage key (for the bound request and the history tag): kept unlocked here
        C.eq(veil(cfg, ["keys", "unlock"], pc).returncode, 0, "keys unlock")
        r = veil(cfg, ["keys", "status"])
        C.ok(r.stdout.decode().endswith(f"measurements: PCR0 {pcrs['PCR0']}, PCR1 {pcrs['PCR1']}, "
                                        f"PCR2 {pcrs['PCR2']}\n"), f"keys status shows the PCRs: {r.stdout!r}")
        note = "veil ask: note: verifying the enclave against a custom root (CN=veil simulated NSM root"

        # an attested ask works; the client sent a fresh 32-byte nonce first
        r = veil(cfg, ["ask", "[[sim: chunks=3]] attested"])
        C.ok(r.returncode == 0 and r.stdout.decode().startswith(expected_answer("attested", 3)),
             f"an attested ask: {r.stdout!r} {err(r)!r}")
        C.ok(one_line(r, note), f"ask says it verifies against the custom root: {err(r)!r}")
        infos = proxy.infos()
        C.ok(len(infos) == 1 and re.fullmatch(INFO + r"\?nonce=[0-9a-f]{64}", infos[0]) is not None,
             f"one /enclave/info with a 32-byte nonce: {infos}")
        C.ok(proxy.seen.index(("GET", infos[0])) < proxy.seen.index(("POST", STREAM)), "attested before the seal")
        nonce = infos[0].split("=", 1)[1]
        recorded = json.loads(proxy.recorded)

        # that document, offline: valid under the simulator's root, refused under AWS's
        doc = os.path.join(tmp, "sim-doc.json")
        open(doc, "wb").write(proxy.recorded)
        r = verify([doc, "--root", root, "--nonce", nonce, "--public-key", recorded["enclave_public_key"],
                    "--user-data", USER_DATA.hex(), "--measurements", meas])
        C.eq(r.returncode, 0, f"the simulated document verifies with --root: {err(r)}")
        C.eq(err(r), f"veil attest verify: note: trusting the root in {root} instead of the pinned AWS Nitro root G1 "
                     "(only for veil's simulated NSM)\n", "--root is said on stderr")
        j = json.loads(r.stdout) if r.returncode == 0 else {}
        C.ok(j.get("simulated") is True and j.get("module_id", "").endswith(SIM_SUFFIX) and
             j.get("nonce") == nonce and j.get("user_data_text") == USER_DATA.decode(),
             f"its fields: simulated, the nonce, veil's statement: {j}")
        r = verify([doc])
        C.ok(r.returncode == 1 and one_line(r, "veil attest verify: root: "),
             f"without --root the simulated document fails on root: {err(r)!r}")

        # chat works the same way
        r = veil(cfg, ["chat"], stdin=b"[[sim: chunks=2]] attested chat\n\n")
        C.ok(r.returncode == 0 and expected_answer("attested chat", 2) in r.stdout.decode(),
             f"an attested chat: {r.stdout!r} {err(r)!r}")

        # attack: the server hands out a key of its own (it could read everything sealed to it)
        for verb, args, stdin in (("ask", ["ask", "secret"], None), ("chat", ["chat"], b"secret\n\n")):
            for mode, check in (("swap", "public-key"), ("strip", "missing")):
                proxy.mode, proxy.seen = mode, []
                r = veil(cfg, args, stdin=stdin)
                C.ok(r.returncode == 1 and last_line(r).startswith(f"veil {verb}: attestation: {check}: "),
                     f"{verb}, {mode}: a substituted key is refused on {check}: {err(r)!r}")
                C.eq(proxy.streams(), 0, f"{verb}, {mode}: nothing was sent to the stream route")
                C.ok("veil chat ·" not in err(r), f"{verb}, {mode}: no banner")
        r = veil(cfg, ["ask", "secret"])
        C.eq(last_line(r), "veil ask: attestation: missing: the server sent the enclave key without an attestation "
                           "document (an enclave without an NSM?)", "strip: the message")

        # attack: a document recorded earlier (another nonce) is replayed
        proxy.mode, proxy.seen = "replay", []
        r = veil(cfg, ["ask", "secret"])
        C.ok(r.returncode == 1 and last_line(r).startswith("veil ask: attestation: nonce: "),
             f"a replayed document is refused on nonce: {err(r)!r}")
        C.eq(proxy.streams(), 0, "replay: nothing was sent to the stream route")

        # attack: the enclave runs other code than the operator published
        proxy.mode = "pass"
        bad = json.load(open(meas))
        bad["Measurements"]["PCR0"] = "%096x" % (int(pcrs["PCR0"], 16) ^ 1)
        bad_path = os.path.join(tmp, "measurements-other.json")
        json.dump(bad, open(bad_path, "w"))
        r = veil(cfg, ["login", "--measurements", bad_path])  # the same server: the token is kept
        C.eq(r.returncode, 0, f"login again with other measurements: {err(r)}")
        proxy.seen = []
        r = veil(cfg, ["ask", "secret"])
        C.ok(r.returncode == 1 and last_line(r).startswith("veil ask: attestation: pcr: PCR0"),
             f"other measurements are refused on pcr: {err(r)!r}")
        C.eq(proxy.streams(), 0, "pcr: nothing was sent to the stream route")
        C.eq(veil(cfg, ["login", "--measurements", meas]).returncode, 0, "login with the right measurements again")

        # the enclave restarts: the client learns the new key and verifies it before resealing
        chat = Chat(cfg)
        chat.say("[[sim: chunks=2]] before restart")
        C.ok(chat.wait("out", expected_answer("before restart", 2)), f"chat: first answer {chat.err!r}")
        restart_enclave(stack, token)
        proxy.seen = []
        chat.say("[[sim: chunks=2]] after restart")
        C.ok(chat.wait("out", expected_answer("after restart", 2)), f"chat: the answer after a restart {chat.err!r}")
        C.eq((proxy.streams(), len(proxy.infos())), (2, 1),
             "restart: the stale seal was refused, the new key attested once, then resealed")
        # attack: after the next restart the server substitutes the new key
        restart_enclave(stack, token)
        proxy.mode, proxy.seen = "swap", []
        chat.say("[[sim: chunks=2]] never sealed")
        C.ok(chat.wait("err", "veil chat: attestation: public-key: "), f"chat: a substituted new key {chat.err!r}")
        C.eq(proxy.streams(), 1, "restart + swap: only the stale seal went out, nothing to the substituted key")
        proxy.mode = "pass"
        chat.say("[[sim: chunks=2]] verified again")
        C.ok(chat.wait("out", expected_answer("verified again", 2)),
             f"chat: goes on once the key verifies {chat.err!r}")
        C.eq(chat.end(), 0, "chat exits 0 (its last turn succeeded)")

        # no measurements stored: a refusal that says how to fix it, nothing sent
        bare = os.path.join(tmp, "bare", "config.json")
        os.makedirs(os.path.dirname(bare))
        j = json.load(open(cfg))
        del j["measurements"], j["attestation_root"]
        json.dump(j, open(bare, "w"))
        os.chmod(bare, 0o600)
        proxy.seen = []
        msg = ("no enclave measurements stored, so the enclave cannot be verified: run `veil login --measurements "
               "FILE` with the measurements the operator published (the JSON `nitro-cli build-enclave` prints), or "
               "pass --no-attestation to chat unverified\n")
        r = veil(bare, ["ask", "secret"])
        C.eq((r.returncode, err(r)), (1, "veil ask: " + msg), "no measurements: ask refuses, saying how to fix it")
        C.eq(proxy.seen, [], "no measurements: nothing sent")
        r = veil(bare, ["chat"], pc, stdin=b"secret\n\n")
        C.eq((r.returncode, err(r)), (1, "veil chat: " + msg), "no measurements: chat refuses before its banner")
        C.eq(proxy.streams(), 0, "no measurements: nothing sent to the stream route")
        r = veil(bare, ["keys", "status"])
        C.ok(r.stdout.decode().endswith("attestation root: AWS Nitro root G1 (pinned)\nmeasurements: none (chat and "
                                        "ask refuse until `veil login --measurements FILE`)\n"),
             f"keys status: nothing to verify: {r.stdout!r}")

        # what login keeps: the same server keeps the policy (`aws` resets the root only);
        # another server starts afresh, so no server inherits another's measurements
        other = os.path.join(tmp, "other", "config.json")
        os.makedirs(os.path.dirname(other))
        with open(cfg, "rb") as src, open(other, "wb") as dst:
            dst.write(src.read())
        os.chmod(other, 0o600)
        r = veil(other, ["login", "--attestation-root", "aws"])
        C.ok(r.returncode == 0 and "attestation root: AWS Nitro root G1 (pinned)\nmeasurements: PCR0 "
             f"{pcrs['PCR0']}" in r.stdout.decode() and not err(r),
             f"login --attestation-root aws: the pinned root, the PCRs kept, no warning: {r.stdout!r} {err(r)!r}")
        r = veil(other, ["ask", "secret"])
        C.ok(r.returncode == 1 and one_line(r, "veil ask: attestation: root: "),
             f"the simulated enclave under the pinned root: refused on root: {err(r)!r}")
        r = veil(other, ["login", "--server", stack.url, "--token", "-"], stdin=token.encode())
        C.ok(r.returncode == 0 and r.stdout.decode().endswith("measurements: none (chat and ask refuse until "
                                                              "`veil login --measurements FILE`)\n"),
             f"login to another server drops the measurements: {r.stdout!r}")

        # the explicit opt-out works, and says what it gives up, on every run
        warn = ("veil ask: warning: --no-attestation: the enclave's key is not verified, so the server could hand "
                "you a key of its own and read this conversation\n")
        for i in range(2):
            r = veil(bare, ["ask", "--no-attestation", "[[sim: chunks=2]] unverified"], pc)
            C.ok(r.returncode == 0 and r.stdout.decode().startswith(expected_answer("unverified", 2)),
                 f"--no-attestation chats: {r.stdout!r}")
            C.eq(err(r), warn, f"--no-attestation warns (run {i + 1})")
    finally:
        if proxy:
            proxy.stop()
        for name, code in stack.stop().items():
            C.ok(code == 0, f"{name} exited cleanly ({code})")
        for name, p in stack.procs.items():
            C.ok(p.sanitizer_clean(), f"{name}: no sanitizer report")


def main():
    with TempDir() as tmp:
        check_vectors(tmp)
        meas, pcrs = check_sim_measurements(tmp)
        check_stack(tmp, meas, pcrs)
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Integration: the enclave's attestation through veild (issue H), checked by an
independent verifier (nitro_attest.py: CBOR, COSE_Sign1 ES384 and the X.509 chain on
pyca/cryptography, no veil C code).

- The verifier itself: the two real Nitro documents verify at their own time with
  the AWS root, and a flipped signature byte fails.
- GET /enclave/info?nonce=HEX (nitro mode, the simulated NSM): the document binds
  that nonce, the enclave's key (the one the route returns), veil-transport-v1 and
  the simulator's PCRs of the running veil-enclave; the pinned AWS root refuses it.
- Without a nonce: a document at most 5 minutes old, the same one until the enclave
  restarts; after a restart the new key comes with a new document.
- A malformed nonce gets 422; fresh documents are bounded per user and in total
  (429 + Retry-After).
- Mock mode without an NSM answers "attestation": null (the original's shape), and
  503 to a client that asks for a fresh document; with ENCLAVE_NSM=sim:DIR it attests.
Prints `N passed, M failed`; exits non-zero on any failure.
"""
import base64
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nitro_attest  # noqa: E402
from veiltest import BIN, Checks, Stack, TempDir, call, dev_token  # noqa: E402

C = Checks()
FIX = os.environ.get("VEIL_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "fixtures"))
INFO = "/api/v1/chat/enclave/info"


def verifier_self_check():
    root = nitro_attest.load_root(os.path.join(FIX, "attestation", "aws_nitro_root_g1.pem"))
    for name in ("opensecret-sdk.cbor", "tinfoil.cbor"):
        doc = open(os.path.join(FIX, "attestation", name), "rb").read()
        _, _, _, p = nitro_attest.decode(doc)
        at = datetime.datetime.fromtimestamp(p["timestamp"] / 1000, datetime.timezone.utc)
        try:
            nitro_attest.verify(doc, root, at=at)
            C.ok(True, f"the independent verifier accepts the real document {name} at its own time")
        except nitro_attest.AttestationError as e:
            C.ok(False, f"{name}: {e}")
        bad = bytearray(doc)
        bad[-5] ^= 1  # inside the signature
        try:
            nitro_attest.verify(bytes(bad), root, at=at)
            C.ok(False, f"{name}: a flipped signature byte verified")
        except nitro_attest.AttestationError as e:
            C.eq(e.check, "signature", f"{name}: a flipped signature byte fails the signature check")


def check_doc(doc_b64, root, nonce, key_hex, what):
    doc = base64.b64decode(doc_b64)
    pcrs = nitro_attest.sim_pcrs(os.path.join(BIN, "veil-enclave"))
    try:
        p = nitro_attest.verify(doc, root, nonce=nonce, public_key=bytes.fromhex(key_hex),
                                user_data=b"veil-transport-v1", pcrs=pcrs)
        C.ok(p["module_id"].endswith("-veil-simulated-nsm"), f"{what}: the module id says simulated")
        return p
    except nitro_attest.AttestationError as e:
        C.ok(False, f"{what}: {e}")
        return None


def nitro_routes(stack, token, other, third):
    url = stack.url
    root = nitro_attest.load_root(os.path.join(stack.tmp, "nsm", "root.pem"))
    nonce = os.urandom(32)
    st, r, _ = call(url, "GET", f"{INFO}?nonce={nonce.hex()}", token)
    C.eq(st, 200, "info with a nonce")
    key = r["enclave_public_key"]
    p = check_doc(r["attestation"], root, nonce, key, "a fresh document")
    C.ok(p is not None, "the fresh document binds the nonce, the key, veil-transport-v1 and the PCRs")
    # the pinned AWS root never trusts the simulator
    aws = nitro_attest.load_root(os.path.join(FIX, "attestation", "aws_nitro_root_g1.pem"))
    try:
        nitro_attest.verify(base64.b64decode(r["attestation"]), aws)
        C.ok(False, "the AWS root accepted a simulated document")
    except nitro_attest.AttestationError as e:
        C.eq(e.check, "root", "the AWS root refuses a simulated document")
    # another nonce is another document (a replay of this one fails the nonce check)
    st, r2, _ = call(url, "GET", f"{INFO}?nonce={os.urandom(8).hex()}", token)
    try:
        nitro_attest.verify(base64.b64decode(r2["attestation"]), root, nonce=nonce)
        C.ok(False, "a document for another nonce passed as this one")
    except nitro_attest.AttestationError as e:
        C.eq(e.check, "nonce", "a document made for another nonce fails the nonce check")
    # without a nonce: cached, then renewed with the key
    st, a, _ = call(url, "GET", INFO, token)
    st2, b, _ = call(url, "GET", INFO, token)
    C.ok(st == st2 == 200 and a["attestation"] == b["attestation"], "without a nonce the document is cached")
    check_doc(a["attestation"], root, None, a["enclave_public_key"], "the cached document")
    # bad nonces
    for bad in ("abc", "zz", "a" * 2050, ""):
        st, r, _ = call(url, "GET", f"{INFO}?nonce={bad}", token)
        C.eq(st, 422, f"nonce {bad[:8]!r}... gets 422")
    # bounded: VEIL_ATTEST_USER_RATE=1 (bursts of 5), VEIL_ATTEST_RATE=2 (bursts of 4)
    got = [call(url, "GET", f"{INFO}?nonce={os.urandom(4).hex()}", other) for _ in range(6)]
    statuses = [g[0] for g in got]
    C.ok(429 in statuses, f"fresh attestations are bounded ({statuses})")
    limited = [g for g in got if g[0] == 429]
    if limited:
        C.eq(limited[0][1], {"detail": "Too many attestation requests, please retry shortly"}, "429 detail")
        C.ok((limited[0][2].getheader("Retry-After") or "").isdigit(), "429 carries Retry-After")
    st, _, _ = call(url, "GET", INFO, third)
    C.eq(st, 200, "the cached document is not rate-limited")
    # a restart: a new key, and a new document with it
    stack.start_enclave()
    ok = False
    for _ in range(100):
        st, n, _ = call(url, "GET", INFO, third)
        if st == 200 and n["enclave_public_key"] != a["enclave_public_key"]:
            ok = True
            break
        import time
        time.sleep(0.1)
    C.ok(ok, "after an enclave restart /enclave/info gives the new key")
    if ok:
        p = check_doc(n["attestation"], root, None, n["enclave_public_key"], "after a restart")
        C.ok(p is not None and n["attestation"] != a["attestation"], "the new key comes with a new document")


def mock_routes(stack, token):
    stack.start_veild("mock", name="veild-mock")
    st, r, _ = call(stack.url, "GET", INFO, token)
    C.ok(st == 200 and r.get("attestation", "missing") is None and len(r["enclave_public_key"]) == 64,
         f"mock without an NSM: the original's shape, attestation null ({st}, {r})")
    st, r, _ = call(stack.url, "GET", f"{INFO}?nonce=0011", token)
    C.eq((st, r), (503, {"detail": "The enclave cannot attest its key (no NSM)"}),
         "mock without an NSM: a client that asks for a fresh document is told it cannot have one")
    nsm_dir = os.path.join(stack.tmp, "mock-nsm")
    stack.start_veild("mock", extra={"ENCLAVE_NSM": "sim:" + nsm_dir}, name="veild-mock-nsm")
    nonce = os.urandom(16)
    st, r, _ = call(stack.url, "GET", f"{INFO}?nonce={nonce.hex()}", token)
    root = nitro_attest.load_root(os.path.join(nsm_dir, "root.pem"))
    doc = base64.b64decode(r["attestation"]) if st == 200 else b""
    try:
        p = nitro_attest.verify(doc, root, nonce=nonce, public_key=bytes.fromhex(r["enclave_public_key"]),
                                user_data=b"veil-transport-v1")
        C.ok(p["module_id"].endswith("-veil-simulated-nsm"), "mock with ENCLAVE_NSM=sim: a simulated document")
    except Exception as e:
        C.ok(False, f"mock with ENCLAVE_NSM=sim: {e!r}")


def main():
    verifier_self_check()
    with TempDir() as tmp:
        stack = Stack(tmp)
        try:
            token = dev_token(tmp, "user_att_a")
            other = dev_token(tmp, "user_att_b")
            third = dev_token(tmp, "user_att_c")
            stack.start_enclave()
            stack.start_veild("nitro", extra={"VEIL_ATTEST_USER_RATE": "1", "VEIL_ATTEST_RATE": "2"})
            for name, fn in [("nitro", lambda: nitro_routes(stack, token, other, third)),
                             ("mock", lambda: mock_routes(stack, token))]:
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

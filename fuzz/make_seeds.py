#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every libFuzzer target into fuzz/seeds/<target>/.

Each target reads its first byte as a mode (see the target's header comment); a seed
starts with that byte, then carries a real input of that mode: the enclave protocol's
requests and events as veil's encoders write them (field names from
src/enclave/protocol.h), EncryptedPayloads made of the shared crypto vectors' values,
the two real Nitro attestation documents, the SigV4 suite's requests, Bedrock's
event-stream frames, HTTP/1 heads, allowlists, JWTs and a JWKS.

    python3 fuzz/make_seeds.py        # from the repository's root; rewrites fuzz/seeds/

Deterministic except the JWT seeds (a fresh RSA key signs them each run: the fuzz
target has its own key, so only their shape matters). Needs python3-cryptography.
"""
import base64
import json
import os
import shutil
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def js(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- values from the shared vectors ----------------------------------------------------

VEC = json.load(open(os.path.join(ROOT, "tests", "fixtures", "crypto_test_vectors.json")))
ECDH = VEC["ecdh_derivation"][0]
GCM = VEC["aes_gcm"]
PUB = ECDH["public_key_hex"]                   # a valid X25519 public key (RFC 7748)
PUB2 = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"  # RFC 7748's Bob
LOW_ORDER = "00" * 32                          # refused: a low-order point
SALT = ECDH["salt_hex"]


def ep(i=0):
    g = GCM[i % len(GCM)]
    return {"ephemeral_public_key": PUB if i % 2 == 0 else PUB2, "iv": g["iv_hex"], "ciphertext": g["ciphertext_hex"],
            "auth_tag": g["auth_tag_hex"], "hkdf_salt": SALT}


MODEL = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
SESSION = "9b2f6c1e-3d4a-4c6b-8f0e-2a1b3c4d5e6f"
REQ_ID = "00112233445566778899aabbccddeeff"


def bound_inner(history=()):
    return {"message": "What is a Nitro Enclave?", "history": list(history), "client_public_key": PUB,
            "storage_public_key": PUB2, "model_id": MODEL, "session_id": SESSION, "request_id": REQ_ID,
            "issued_at": 1733356800}


REQUESTS = {
    "health": {"command": "HEALTH"},
    "get-public-key": {"command": "GET_PUBLIC_KEY"},
    "get-attestation": {"command": "GET_ATTESTATION", "nonce": "63633662393565662d613064372d343737642d3930"},
    "run-tests": {"command": "run_tests"},
    "set-credentials": {"command": "SET_CREDENTIALS", "credentials": {
        "access_key_id": "ASIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "session_token": "IQoJb3JpZ2luX2VjEXAMPLE", "expiration": "2026-12-05T12:00:00Z"}},
    "chat-stream-format1": {"command": "CHAT_STREAM", "encrypted_message": ep(0),
                            "encrypted_history": [dict(ep(1), role="user"), dict(ep(2), role="assistant")],
                            "storage_public_key": PUB2, "client_public_key": PUB, "model_id": MODEL,
                            "session_id": SESSION},
    "chat-stream-format3": {"command": "CHAT_STREAM", "stream_format": 3, "encrypted_request": ep(1),
                            "client_public_key": PUB, "storage_public_key": PUB2, "model_id": MODEL,
                            "session_id": SESSION},
    "chat-stream-format2": {"command": "CHAT_STREAM", "stream_format": 2, "encrypted_message": ep(0),
                            "client_public_key": PUB, "storage_public_key": PUB2, "model_id": MODEL},
    "chat-stream-low-order": {"command": "CHAT_STREAM", "encrypted_message": ep(0), "client_public_key": LOW_ORDER,
                              "storage_public_key": PUB2, "model_id": MODEL},
    "chat": {"command": "CHAT", "encrypted_message": ep(2), "user_public_key": PUB, "model_id": MODEL,
             "system_prompt": "Be brief.", "history": [{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello."}]},
    "unknown-command": {"command": "LIST_MODELS"},
}

EVENTS = {
    "chunk": {"encrypted_content": ep(0)},
    "thinking": {"encrypted_thinking": ep(1)},
    "stream-key": {"stream_format": 3, "stream_key": {"ephemeral_public_key": PUB, "hkdf_salt": SALT}},
    "chunk-v3": {"encrypted_content_v3": {"seq": 1, "ciphertext": GCM[0]["ciphertext_hex"],
                                          "auth_tag": GCM[0]["auth_tag_hex"]}},
    "thinking-v3": {"encrypted_thinking_v3": {"seq": 0, "ciphertext": "00", "auth_tag": GCM[1]["auth_tag_hex"]}},
    "final": {"is_final": True, "stored_user_message": ep(0), "stored_assistant_message": ep(1),
              "model_used": MODEL, "input_tokens": 12, "output_tokens": 40, "stop_reason": "end_turn"},
    "final-v3": {"is_final": True, "stored_user_message": ep(0), "stored_assistant_message": ep(1),
                 "model_used": MODEL, "input_tokens": 12, "output_tokens": 40, "stop_reason": "max_tokens",
                 "stream_end": {"seq": 7, "auth_tag": GCM[0]["auth_tag_hex"], "ciphertext": "ab" * 64}},
    "error": {"error": "Model temporarily unavailable", "is_final": True, "error_code": "upstream_throttled"},
    "error-not-final": {"error": "Missing field: 'model_id'", "error_code": "bad_request"},
}

SSE = {
    "session": {"type": "session", "session_id": SESSION},
    "stream-key": {"type": "stream_key", "stream_format": 3, "ephemeral_public_key": PUB, "hkdf_salt": SALT},
    "chunk": {"type": "encrypted_chunk", "encrypted_content": ep(0)},
    "thinking": {"type": "thinking", "encrypted_content": ep(1)},
    "chunk-v3": {"type": "encrypted_chunk_v3", "seq": 2, "ciphertext": "00ff", "auth_tag": GCM[0]["auth_tag_hex"]},
    "stored": {"type": "stored", "model_used": MODEL, "input_tokens": 12, "output_tokens": 40,
               "stream_end": {"seq": 3, "auth_tag": GCM[1]["auth_tag_hex"]},
               "user_message_id": "m1", "assistant_message_id": "m2"},
    "done": {"type": "done"},
    "error": {"type": "error", "message": "Service temporarily unavailable"},
}


def protocol_seeds():
    t = "fuzz_protocol"
    stream = ["chat-stream-format1", "chat-stream-format3", "chat-stream-format2", "chat-stream-low-order"]
    for name in stream:
        write(t, "0-" + name, b"0" + js(REQUESTS[name]))
    write(t, "1-chat", b"1" + js(REQUESTS["chat"]))
    for name, ev in EVENTS.items():
        write(t, "2-" + name, b"2" + js(ev))
    for name, ev in SSE.items():
        write(t, "3-" + name, b"3" + js(ev))
    write(t, "4-bound", b"4" + js(bound_inner()))
    write(t, "4-bound-history", b"4" + js(bound_inner([{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": "Hello."}])))
    for name in ("health", "get-attestation", "chat-stream-format3", "chat", "unknown-command", "set-credentials"):
        write(t, "5-" + name, b"5" + js(REQUESTS[name]))


def enclave_request_seeds():
    t = "fuzz_enclave_request"
    for i, (name, req) in enumerate(REQUESTS.items()):
        body = js(req) + b"\n"
        write(t, name, bytes([(len(body) // 2 + i) % 256]) + body)  # the first byte: where the input splits
    write(t, "pipelined", b"\x07" + js(REQUESTS["health"]) + b"\n" + js(REQUESTS["get-public-key"]) + b"\n")
    write(t, "ep", b"\x20" + js(ep(0)))
    write(t, "not-an-object", b"\x02[1,2]\n")
    write(t, "too-deep", b"\x10" + b'{"a":' * 40 + b"1" + b"}" * 40)
    write(t, "bad-escape", b"\x05" + b'{"a":"\\u00\xc3\xa9"}\n')  # the cut-character reply (fixed in protocol.c)


# ---- JWT --------------------------------------------------------------------------------

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


ISS = "https://clerk.example.com"
CLAIMS = [
    {"sub": "user_2abc", "iss": ISS, "iat": 1699999990, "nbf": 1699999990, "exp": 1700000060},
    {"sub": "user_2abc", "iss": ISS, "exp": 1700000600, "azp": "http://localhost:3000", "v": 2,
     "o": {"id": "org_2x", "rol": "admin", "slg": "acme", "per": "org:sys_memberships:manage,org:sys_profile:read"}},
    {"sub": "u", "iss": ISS, "exp": 1700000600, "aud": ["api", "x"], "azp": "http://localhost:3000"},
    {"sub": "u", "iss": ISS, "exp": 1700000600.5, "aud": "api", "o": {"id": "org_3", "rol": "member", "per": ""}},
]
HEADERS = [
    {"alg": "RS256", "kid": "ins_2abc", "typ": "JWT"},
    {"alg": "RS256", "kid": "k1"},
    {"alg": "none", "kid": "k1"},
    {"alg": "HS256", "kid": "k1", "typ": "JWT"},
    {"alg": "RS256", "kid": "k1", "jku": "https://evil.example/jwks.json"},
]


def jwt_seeds():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    t = "fuzz_jwt"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()

    def sign(header, claims):
        si = b64u(js(header)) + b"." + b64u(js(claims))
        return si + b"." + b64u(key.sign(si, padding.PKCS1v15(), hashes.SHA256()))

    def uint(n):
        return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big")).decode()

    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "ins_2abc", "n": uint(nums.n), "e": uint(nums.e)}
    write(t, "0-token", b"0" + sign(HEADERS[0], CLAIMS[1]))
    write(t, "0-token-alg-none", b"0" + b64u(js(HEADERS[2])) + b"." + b64u(js(CLAIMS[0])) + b".")
    write(t, "0-bearer", b"0Bearer " + sign(HEADERS[0], CLAIMS[0]))
    write(t, "0-jwks", b"0" + js({"keys": [jwk]}))
    write(t, "0-jwk", b"0" + js(jwk))
    write(t, "0-b64url", b"0" + b64u(b"\xff\xfe\x00veil"))
    for i in range(4):  # mode 1: template i, then (op, position, value) triples
        write(t, "1-template-%d" % i, b"1" + bytes([i]) + bytes([0, 7 * i + 3, ord("A"), 3, 200, 1]))
    for i, c in enumerate(CLAIMS):
        write(t, "2-claims-%d" % i, b"2" + js(c))
    for i, h in enumerate(HEADERS):
        write(t, "3-header-%d" % i, b"3" + js(h))


# ---- attestation documents and NSM responses --------------------------------------------

def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    if n < 65536:
        return bytes([major << 5 | 25]) + struct.pack(">H", n)
    return bytes([major << 5 | 26]) + struct.pack(">I", n)


def cbor_text(s):
    b = s.encode()
    return cbor_head(3, len(b)) + b


def cbor_bytes(b):
    return cbor_head(2, len(b)) + b


def attest_seeds():
    t = "fuzz_attest_doc"
    docs = {}
    for name in ("opensecret-sdk", "tinfoil"):
        with open(os.path.join(ROOT, "tests", "fixtures", "attestation", name + ".cbor"), "rb") as f:
            docs[name] = f.read()
        write(t, "0-" + name, b"0" + docs[name])  # mode 0: a real document as is
    write(t, "1-unmutated", b"1")                  # mode 1: the target's own document
    write(t, "1-mutated", b"1" + bytes([0, 3, 0x5a, 1, 40, 0x18, 2, 90, 0, 3, 17, 4]))
    # mode 2: what the NSM answers (its CBOR: {variant: {field: bytes}} or {"Error": code})
    att = cbor_head(5, 1) + cbor_text("Attestation") + cbor_head(5, 1) + cbor_text("document")
    write(t, "2-attestation", b"2" + att + cbor_bytes(docs["tinfoil"]))
    write(t, "2-get-random", b"2" + cbor_head(5, 1) + cbor_text("GetRandom") + cbor_head(5, 1) + cbor_text("random") +
          cbor_bytes(bytes(range(32))))
    write(t, "2-error", b"2" + cbor_head(5, 1) + cbor_text("Error") + cbor_text("InvalidArgument"))


# ---- event-stream -----------------------------------------------------------------------

def es_string_header(name, value):
    n, v = name.encode(), value.encode()
    return bytes([len(n)]) + n + b"\x07" + struct.pack(">H", len(v)) + v


def es_frame(headers, payload):
    h = b"".join(es_string_header(k, v) for k, v in headers)
    total = 12 + len(h) + len(payload) + 4
    prelude = struct.pack(">II", total, len(h))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + h + payload
    return msg + struct.pack(">I", zlib.crc32(msg))


def es_event(kind, payload):
    return es_frame([(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
                    payload.encode())


def eventstream_seeds():
    t = "fuzz_eventstream"
    # a whole Bedrock ConverseStream answer, as the simulator (and Bedrock) frames it
    stream = [es_event("messageStart", '{"role":"assistant","p":"abcd"}'),
              es_event("contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":"Hello"},"p":"abc"}'),
              es_event("contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":" world"},"p":"ab"}'),
              es_event("contentBlockStop", '{"contentBlockIndex":0}'),
              es_event("messageStop", '{"stopReason":"end_turn"}'),
              es_event("metadata", '{"usage":{"inputTokens":12,"outputTokens":2,"totalTokens":14},'
                                   '"metrics":{"latencyMs":310}}')]
    write(t, "0-converse-stream", b"0" + b"".join(stream))
    write(t, "0-delta", b"0" + stream[1])
    write(t, "0-exception", b"0" + es_frame([(":exception-type", "throttlingException"),
                                             (":content-type", "application/json"), (":message-type", "exception")],
                                            b'{"message":"Too many requests, please wait before trying again."}'))
    write(t, "0-error", b"0" + es_frame([(":error-code", "InternalFailure"), (":error-message", "boom"),
                                         (":message-type", "error")], b""))
    write(t, "0-cut", b"0" + b"".join(stream)[:150])
    # mode 1 (odd): pos(2) flip(1) nh(1), then per header type, name length, name, value
    def hdr(name, value):
        return bytes([7, len(name) - 1]) + name.encode() + bytes([len(value)]) + value.encode()
    body = (bytes([0, 0, 0, 3]) + hdr(":event-type", "contentBlockDelta") + hdr(":content-type", "application/json") +
            hdr(":message-type", "event") + b'{"contentBlockIndex":0,"delta":{"text":"Hi"}}')
    write(t, "1-valid", b"1" + body)
    write(t, "1-flipped", b"1" + bytes([0, 40, 0x10]) + body[3:])
    types = (bytes([0, 0]) + b"a" + bytes([1, 0]) + b"b" + bytes([2, 0]) + b"c\x7f" + bytes([3, 0]) + b"d\x01\x02" +
             bytes([4, 0]) + b"e\x09" + bytes([5, 0]) + b"f\x07" + bytes([8, 0]) + b"g\x01" + bytes([9, 0]) + b"h" +
             bytes(range(16)))  # bool true, false, byte, int16, int32, int64, timestamp, uuid: one char names
    write(t, "1-all-types", b"1" + bytes([0, 90, 1, 8]) + types + b"payload")


# ---- HTTP/1 -----------------------------------------------------------------------------

HTTP = {
    "bedrock-stream-head": b"HTTP/1.1 200 OK\r\nDate: Thu, 05 Dec 2024 12:00:00 GMT\r\n"
                           b"Content-Type: application/vnd.amazon.eventstream\r\nTransfer-Encoding: chunked\r\n"
                           b"Connection: keep-alive\r\nx-amzn-RequestId: 1a2b3c4d-0000-1111-2222-333344445555\r\n\r\n"
                           b"1f\r\n" + b"e" * 31 + b"\r\n0\r\n\r\n",
    "bedrock-403": b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 58\r\n"
                   b"x-amzn-ErrorType: UnrecognizedClientException:http://internal.amazon.com/coral/\r\n\r\n"
                   b'{"message":"The security token included in the request is invalid."}',
    "imds-token": b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                  b"X-aws-ec2-metadata-token-ttl-seconds: 21600\r\nContent-Length: 0\r\n\r\n",
    "imds-creds": b"GET /latest/meta-data/iam/security-credentials/veil-role HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                  b"X-aws-ec2-metadata-token: AQAEAFakeToken==\r\n\r\n",
    "connect": b"CONNECT bedrock-runtime.us-east-1.amazonaws.com:443 HTTP/1.1\r\n"
               b"Host: bedrock-runtime.us-east-1.amazonaws.com:443\r\n\r\n",
    "connect-v6": b"CONNECT [::ffff:127.0.0.1]:443 HTTP/1.1\r\n\r\n",
    "connect-200": b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x7a",
    "veild-chat": b"POST /chat/stream?x=1 HTTP/1.1\r\nHost: localhost:8000\r\n"
                  b"Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n"
                  b"Content-Length: 17\r\nExpect: 100-continue\r\n\r\n{\"message\":\"hi\"}",
    "chunked-request": b"POST /users/me/keys HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"4;ext=1\r\nabcd\r\n0\r\nTrailer: x\r\n\r\n",
    "chunked-body": b"5\r\nhello\r\nA\r\n0123456789\r\n0\r\n\r\n",
    "http10": b"HTTP/1.0 502 Bad Gateway\r\nServer: veil-proxy\r\n\r\n",
    "smuggle": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "host": b"Bedrock-Runtime.US-East-1.amazonaws.com.",
}


def http1_seeds():
    t = "fuzz_http1"
    for name, msg in HTTP.items():
        write(t, "0-" + name, b"0" + msg)
    for i in range(10):  # mode 1: template i, then (op, position, value) triples
        write(t, "1-template-%d" % i, b"1" + bytes([i]) + bytes([0, 0, 20, 3, 0, 9, 2, 1, 7]))


# ---- SigV4 ------------------------------------------------------------------------------

def sigv4_seeds():
    t = "fuzz_sigv4"
    base = os.path.join(ROOT, "tests", "fixtures", "sigv4")
    cases = ["bedrock-converse-stream", "get-vanilla-query-order-key-case", "get-utf8", "get-slashes",
             "get-vanilla-with-session-token", "post-header-key-sort", "get-relative-relative", "get-space",
             "get-vanilla-query-unreserved", "post-vanilla"]
    for c in cases:
        d = os.path.join(base, c)
        req = open(os.path.join(d, "request.txt"), "rb").read()
        auth = open(os.path.join(d, "authorization.txt"), "rb").read().strip()
        line = req.split(b"\n", 1)[0]
        target = line.split(b" ")[1] if line.count(b" ") >= 2 else b"/"
        path, _, query = target.partition(b"?")
        body = req.split(b"\n\n", 1)[1] if b"\n\n" in req else b""
        date = b"20150830T123600Z"
        for h in req.split(b"\n"):
            if h.lower().startswith(b"x-amz-date:"):
                date = h.split(b":", 1)[1].strip()
        write(t, "0-" + c, b"0" + auth + b"\n" + date + b"\n" + path + b"\n" + query + b"\n" + body)
    write(t, "1-unmutated", b"1")
    write(t, "1-mutated", b"1" + bytes([0, 30, ord("x"), 1, 60, ord(","), 2, 100, 0]))


# ---- the proxy's allowlist --------------------------------------------------------------

def allowlist_seeds():
    t = "fuzz_proxy_allowlist"
    write(t, "0-deploy", b"0" + open(os.path.join(ROOT, "deploy", "allowlist.yaml"), "rb").read())
    write(t, "0-block", b"0allowlist:\n  - address: bedrock-runtime.eu-west-1.amazonaws.com\n    port: 443\n"
                        b"  - address: '[2001:db8::1]'\n    port: 8443 # comment\n")
    write(t, "0-flow", b'0allowlist:\n- {address: "10.0.0.1", port: 443}\n- {port: 80, address: example.com.}\n')
    write(t, "0-spec", b"0bedrock-runtime.us-east-1.amazonaws.com:443")
    write(t, "0-spec-v6", b"0[::1]:8443")
    write(t, "0-pin", b"0bedrock-runtime.us-east-1.amazonaws.com:443:10.0.1.5,[fd00::5]")
    write(t, "0-special-v4", b"0" + bytes([169, 254, 169, 254]) + bytes(12))
    write(t, "0-special-v6", b"0" + bytes([0xfe, 0x80]) + bytes(13) + b"\x01")
    # mode 1: (form, port hi, port lo, host length, host bytes) records
    write(t, "1-two", b"1" + bytes([1, 1, 187, 9]) + bytes(range(10)) + bytes([4, 0x20, 0xfb, 2, 5, 6, 7]))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    protocol_seeds()
    enclave_request_seeds()
    jwt_seeds()
    attest_seeds()
    eventstream_seeds()
    http1_seeds()
    sigv4_seeds()
    allowlist_seeds()
    n = sum(len(files) for _, _, files in os.walk(OUT))
    print("%d seeds in %s" % (n, os.path.relpath(OUT, os.getcwd())), file=sys.stderr)


if __name__ == "__main__":
    main()

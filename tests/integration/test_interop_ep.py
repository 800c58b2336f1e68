#!/usr/bin/python3
"""Interop: the veil CLI against an independent implementation of the envelope.

The reference side is written here with pyca/cryptography (Debian's
python3-cryptography), the library the original enclave used. Both directions:
Python seals -> `veil open`, and `veil seal` -> Python opens, for every context.
"""
import json
import os
import subprocess
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import Checks  # noqa: E402

VEIL = os.path.join(os.environ["VEIL_BIN"], "veil")
CONTEXTS = ["client-to-enclave-transport", "enclave-to-client-transport",
            "user-message-storage", "assistant-message-storage", "org-key-distribution"]
RAW = serialization.Encoding.Raw

C = Checks()


def derive(priv, pub, salt, ctx):
    ss = priv.exchange(pub)
    return HKDF(algorithm=hashes.SHA512(), length=32, salt=salt, info=ctx.encode()).derive(ss)


def py_seal(pub_hex, pt, ctx):
    eph = X25519PrivateKey.generate()
    salt, iv = os.urandom(32), os.urandom(16)
    key = derive(eph, X25519PublicKey.from_public_bytes(bytes.fromhex(pub_hex)), salt, ctx)
    enc = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    ct = enc.update(pt) + enc.finalize()
    epk = eph.public_key().public_bytes(RAW, serialization.PublicFormat.Raw)
    return {"ephemeral_public_key": epk.hex(), "iv": iv.hex(), "ciphertext": ct.hex(),
            "auth_tag": enc.tag.hex(), "hkdf_salt": salt.hex()}


def py_open(priv, ep, ctx):
    key = derive(priv, X25519PublicKey.from_public_bytes(bytes.fromhex(ep["ephemeral_public_key"])),
                 bytes.fromhex(ep["hkdf_salt"]), ctx)
    dec = Cipher(algorithms.AES(key), modes.GCM(bytes.fromhex(ep["iv"]),
                                               bytes.fromhex(ep["auth_tag"]))).decryptor()
    return dec.update(bytes.fromhex(ep["ciphertext"])) + dec.finalize()


def run(args, data):
    return subprocess.run([VEIL] + args, input=data, capture_output=True, check=True).stdout


def main():
    # a Python-made key pair, opened by veil
    py_priv = X25519PrivateKey.generate()
    py_priv_hex = py_priv.private_bytes(RAW, serialization.PrivateFormat.Raw,
                                        serialization.NoEncryption()).hex()
    py_pub_hex = py_priv.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex()
    # a veil-made key pair, opened by Python
    kp = json.loads(run(["keygen"], b""))
    v_priv = X25519PrivateKey.from_private_bytes(bytes.fromhex(kp["private_key"]))
    C.ok(v_priv.public_key().public_bytes(RAW, serialization.PublicFormat.Raw).hex() == kp["public_key"],
         "veil keygen public key does not match its private key")
    for ctx in CONTEXTS:
        for msg in [b"hello from python", "\u00e9t\u00e9 \u2713".encode(), os.urandom(3000)]:
            ep = py_seal(py_pub_hex, msg, ctx)
            out = run(["open", "--key", py_priv_hex, "--context", ctx], json.dumps(ep).encode())
            C.ok(out == msg, f"python->veil {ctx}")
            ep2 = json.loads(run(["seal", "--to", kp["public_key"], "--context", ctx], msg))
            C.ok(py_open(v_priv, ep2, ctx) == msg, f"veil->python {ctx}")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

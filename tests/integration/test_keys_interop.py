#!/usr/bin/python3
"""Key material interop: keys made by `veil keys init` open with an independent
implementation of the web client's scheme (Argon2id via argon2-cffi, AES-256-GCM
with a 16-byte IV via pyca/cryptography), and keys made that way unlock, recover
and chat-decrypt with the veil CLI. This is the browser <-> CLI contract of
spec §1.4, checked through a real veild.
"""
import os
import re
import sys

import argon2.low_level as a2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from veiltest import BIN, ISSUER, Checks, Proc, TempDir, call, dev_token, run  # noqa: E402

C = Checks()
RAW = serialization.Encoding.Raw


def kdf(secret, salt):
    """The web client's deriveKeyFromPasscode: Argon2id v1.3, t=4, m=128 MiB, p=2, 32 bytes."""
    return a2.hash_secret_raw(secret.encode(), salt, time_cost=4, memory_cost=131072, parallelism=2,
                              hash_len=32, type=a2.Type.ID, version=19)


def unwrap(secret, blob):
    key = kdf(secret, bytes.fromhex(blob["salt"]))
    ct = bytes.fromhex(blob["encrypted_private_key"]) + bytes.fromhex(blob["tag"])
    return AESGCM(key).decrypt(bytes.fromhex(blob["iv"]), ct, None)


def wrap(secret, priv):
    salt, iv = os.urandom(32), os.urandom(16)
    sealed = AESGCM(kdf(secret, salt)).encrypt(iv, priv, None)
    return sealed[:-16].hex(), iv.hex(), sealed[-16:].hex(), salt.hex()


def pub_of(priv_bytes):
    return X25519PrivateKey.from_private_bytes(priv_bytes).public_key().public_bytes(
        RAW, serialization.PublicFormat.Raw).hex()


def veil(tmp, args, env=None):
    e = {"VEIL_CONFIG": os.path.join(tmp, "cli.json")}
    e.update(env or {})
    return run([os.path.join(BIN, "veil")] + args, env=e, check=False)


def main():
    with TempDir() as tmp:
        dev_token(tmp, "bootstrap")
        veild = Proc("veild", [os.path.join(BIN, "veild")], {
            "ENCLAVE_MODE": "mock", "VEIL_LISTEN": "tcp:127.0.0.1:0", "VEIL_DATA_DIR": os.path.join(tmp, "data"),
            "CLERK_ISSUER": ISSUER, "CLERK_JWKS_FILE": os.path.join(tmp, "jwks.json"),
            "VEIL_IMDS_ENDPOINT": "127.0.0.1:9"}, tmp, drop_env=("CLERK_", "DATABASE_", "ENCLAVE_"))
        try:
            veild.wait_listening()
            url = f"http://127.0.0.1:{veild.port}"

            # 1. CLI-made keys open with the web client's scheme
            t1 = dev_token(tmp, "user_cli")
            r = run([os.path.join(BIN, "veil"), "login", "--server", url, "--token", "-"],
                    env={"VEIL_CONFIG": os.path.join(tmp, "cli.json")}, input=t1.encode(), check=False)
            C.eq(r.returncode, 0, f"login: {r.stderr.decode()}")
            r = veil(tmp, ["keys", "init"], {"VEIL_PASSCODE": "cli-passcode-1"})
            C.eq(r.returncode, 0, f"keys init: {r.stderr.decode()}")
            m = re.search(r"(\d{4}-\d{4}-\d{4}-\d{4}-\d{4})", r.stdout.decode())
            C.ok(m is not None, "keys init prints the recovery code")
            st, keys, _ = call(url, "GET", "/api/v1/users/me/keys", t1)
            priv = unwrap("cli-passcode-1", keys)
            C.eq(pub_of(priv), keys["public_key"], "the passcode copy opens with Argon2id + AES-GCM")
            st, rec, _ = call(url, "GET", "/api/v1/users/me/keys/recovery", t1)
            C.eq(unwrap(m.group(1).replace("-", ""), rec), priv, "the recovery copy opens with the code's digits")
            C.raises(InvalidTag, "a wrong passcode is refused", unwrap, "wrong-passcode", keys)

            # 2. keys made the web client's way unlock and recover in the CLI
            t2 = dev_token(tmp, "user_web")
            call(url, "POST", "/api/v1/users/sync", t2)
            wpriv = X25519PrivateKey.generate().private_bytes(RAW, serialization.PrivateFormat.Raw,
                                                              serialization.NoEncryption())
            code = "".join(str(b % 10) for b in os.urandom(20))  # the digits; the CLI strips dashes
            ct, iv, tag, salt = wrap("web-passcode-2", wpriv)
            rct, riv, rtag, rsalt = wrap(code, wpriv)
            st, body, _ = call(url, "POST", "/api/v1/users/me/keys", t2, {
                "public_key": pub_of(wpriv), "encrypted_private_key": ct, "iv": iv, "tag": tag, "salt": salt,
                "recovery_encrypted_private_key": rct, "recovery_iv": riv, "recovery_tag": rtag,
                "recovery_salt": rsalt})
            C.eq(st, 201, f"web-made keys stored {body}")
            env2 = {"VEIL_CONFIG": os.path.join(tmp, "cli2.json")}
            r = run([os.path.join(BIN, "veil"), "login", "--server", url, "--token", "-"], env=env2,
                    input=t2.encode(), check=False)
            env2["VEIL_PASSCODE"] = "web-passcode-2"
            r = run([os.path.join(BIN, "veil"), "keys", "unlock", "--no-cache"], env=env2, check=False)
            C.eq(r.returncode, 0, f"the CLI unlocks web-made keys: {r.stderr.decode()}")
            env2["VEIL_PASSCODE"] = "web-passcode-x"
            r = run([os.path.join(BIN, "veil"), "keys", "unlock", "--no-cache"], env=env2, check=False)
            C.eq(r.returncode, 1, "the CLI refuses a wrong passcode")
            dashed = "-".join(code[i:i + 4] for i in range(0, 20, 4))
            env2.update({"VEIL_RECOVERY_CODE": dashed, "VEIL_PASSCODE": "new-passcode-3"})
            r = run([os.path.join(BIN, "veil"), "keys", "recover"], env=env2, check=False)
            C.eq(r.returncode, 0, f"the CLI recovers web-made keys: {r.stderr.decode()}")
            st, keys2, _ = call(url, "GET", "/api/v1/users/me/keys", t2)
            C.eq(keys2["public_key"], pub_of(wpriv), "recovery keeps the key pair")
            C.eq(unwrap("new-passcode-3", keys2), wpriv, "the new passcode copy opens the web client's way")
        finally:
            code = veild.stop()
            C.eq(code, 0, "veild exits cleanly")
            C.ok(veild.sanitizer_clean(), "veild: no sanitizer report")
    return C.finish()


if __name__ == "__main__":
    sys.exit(main())

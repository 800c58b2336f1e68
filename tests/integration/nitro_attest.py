"""An independent verifier of AWS Nitro attestation documents for veil's Python tests,
written from the public formats (RFC 8949 CBOR, RFC 9052 COSE_Sign1, the Nitro
document's fields) on pyca/cryptography, without any of veil's C code.

verify(doc, root_der, at, nonce=None, public_key=None, user_data=None, pcrs=None)
returns the decoded payload (a dict) or raises AttestationError(check, reason).
"""
import datetime
import hashlib
import struct

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

AWS_ROOT_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


class AttestationError(Exception):
    def __init__(self, check, reason):
        super().__init__(f"{check}: {reason}")
        self.check = check


# ---- CBOR (the subset attestation documents use) --------------------------------

def _cbor(b, i):
    ib = b[i]
    major, info = ib >> 5, ib & 31
    i += 1
    if major == 7:
        if info in (20, 21, 22):
            return {20: False, 21: True, 22: None}[info], i
        raise AttestationError("cose", f"unsupported CBOR simple value 0x{ib:02x}")
    if info < 24:
        val = info
    elif info in (24, 25, 26, 27):
        n = 1 << (info - 24)
        val = int.from_bytes(b[i:i + n], "big")
        i += n
    else:
        raise AttestationError("cose", f"unsupported CBOR item 0x{ib:02x}")
    if major == 0:
        return val, i
    if major == 1:
        return -1 - val, i
    if major in (2, 3):
        s = b[i:i + val]
        if len(s) != val:
            raise AttestationError("cose", "truncated CBOR string")
        return (bytes(s) if major == 2 else s.decode()), i + val
    if major == 4:
        out = []
        for _ in range(val):
            v, i = _cbor(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = {}
        for _ in range(val):
            k, i = _cbor(b, i)
            v, i = _cbor(b, i)
            out[k] = v
        return out, i
    if major == 6:
        return _cbor(b, i)  # a tag: the tagged item (COSE_Sign1 is tag 18)
    raise AttestationError("cose", f"unsupported CBOR major type {major}")


def cbor_decode(b):
    v, i = _cbor(b, 0)
    if i != len(b):
        raise AttestationError("cose", "trailing bytes")
    return v


def _head(major, n):
    if n < 24:
        return bytes([(major << 5) | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < (1 << (8 * size)):
            return bytes([(major << 5) | info]) + n.to_bytes(size, "big")


def _bstr(b):
    return _head(2, len(b)) + b


# ---- the document -------------------------------------------------------------------

def decode(doc):
    cose = cbor_decode(doc)
    if not isinstance(cose, list) or len(cose) != 4:
        raise AttestationError("cose", "not a COSE_Sign1 array")
    protected, _unprotected, payload, sig = cose
    if cbor_decode(protected).get(1) != -35:
        raise AttestationError("alg", "not ES384")
    return protected, payload, sig, cbor_decode(payload)


def verify(doc, root_der=None, at=None, nonce=None, public_key=None, user_data=None, pcrs=None, max_age=300):
    protected, payload, sig, p = decode(doc)
    for k in ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle"):
        if k not in p:
            raise AttestationError("payload", f"missing {k}")
    if p["digest"] != "SHA384":
        raise AttestationError("field", "digest")
    when = at or datetime.datetime.now(datetime.timezone.utc)
    root = x509.load_der_x509_certificate(root_der) if root_der else None
    if root is None:
        raise AttestationError("trust-root", "no root given")
    if p["cabundle"][0] != root.public_bytes(serialization_der()):
        raise AttestationError("root", "cabundle[0] is not the trusted root")
    leaf = x509.load_der_x509_certificate(p["certificate"])
    inter = [x509.load_der_x509_certificate(c) for c in p["cabundle"][1:]]
    verify_chain([root] + inter + [leaf], when)
    # COSE: ["Signature1", protected, h'', payload], ES384 over it with the leaf key
    to_sign = _head(4, 4) + _head(3, 10) + b"Signature1" + _bstr(protected) + _bstr(b"") + _bstr(payload)
    if len(sig) != 96:
        raise AttestationError("signature", "not 96 bytes")
    der = encode_dss_signature(int.from_bytes(sig[:48], "big"), int.from_bytes(sig[48:], "big"))
    try:
        leaf.public_key().verify(der, to_sign, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise AttestationError("signature", "the COSE signature does not verify")
    age = when.timestamp() - p["timestamp"] / 1000.0
    if max_age is not None and (age > max_age or age < -60):
        raise AttestationError("freshness", f"{age:.0f} s old")
    for name, want in (("nonce", nonce), ("public_key", public_key), ("user_data", user_data)):
        if want is not None and p.get(name) != want:
            raise AttestationError(name.replace("_", "-"), f"{name} differs")
    for idx, want in (pcrs or {}).items():
        if p["pcrs"].get(idx) != want:
            raise AttestationError("pcr", f"PCR{idx} differs")
    return p


def verify_chain(chain, when):
    """root, intermediates..., leaf: each signed by the one before (ECDSA), within its
    validity at `when`, every issuer a CA within its path length; a P-384 leaf. (pyca's
    own verifier applies the web PKI's extension rules, which Nitro chains do not meet.)"""
    naive = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)  # as older pyca gives validity
    for depth, cert in enumerate(chain):
        if not (cert.not_valid_before <= naive <= cert.not_valid_after):
            raise AttestationError("validity", f"certificate {depth} is not valid at {when.isoformat()}")
    for i in range(1, len(chain)):
        issuer, cert = chain[i - 1], chain[i]
        if cert.issuer != issuer.subject:
            raise AttestationError("chain", f"certificate {i} is not issued by certificate {i - 1}")
        try:
            bc = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            raise AttestationError("chain", f"certificate {i - 1} is not a CA")
        if not bc.ca or (bc.path_length is not None and bc.path_length < len(chain) - i - 1):
            raise AttestationError("chain", f"certificate {i - 1} may not issue this path")
        try:
            issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                       ec.ECDSA(cert.signature_hash_algorithm))
        except InvalidSignature:
            raise AttestationError("chain", f"certificate {i} has a bad signature")
    key = chain[-1].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AttestationError("leaf-key", "the leaf is not a P-384 key")


def serialization_der():
    from cryptography.hazmat.primitives import serialization
    return serialization.Encoding.DER


def load_root(path):
    data = open(path, "rb").read()
    cert = x509.load_pem_x509_certificate(data) if b"BEGIN" in data else x509.load_der_x509_certificate(data)
    return cert.public_bytes(serialization_der())


def sim_pcrs(binary):
    """The simulated NSM's PCR0-2 for a binary (src/attest/nsm.h: m = SHA-384(file),
    PCRn = SHA-384(48 zero bytes || m || n))."""
    m = hashlib.sha384(open(binary, "rb").read()).digest()
    return {n: hashlib.sha384(b"\0" * 48 + m + struct.pack("B", n)).digest() for n in range(3)}

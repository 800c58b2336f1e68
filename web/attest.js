// attest — verifies an AWS Nitro attestation document in the page before anything is
// sealed to the enclave (README, "Trust"): the COSE_Sign1 (ES384) envelope, the X.509
// chain from cabundle[0] (= the pinned root) through cabundle[1..] to the document's
// certificate (ECDSA P-384 signatures in WebCrypto, validity now, CA constraints), the
// document's signature with that certificate's key, its age, the caller's nonce, the
// key the page will seal to, veil's statement (user_data) and the operator's PCRs.
// Each failure names its check (root, chain, validity, signature, freshness, nonce,
// public-key, user-data, pcr, format), as the CLI does. Pure: no network, no DOM.

import { equalBytes, hex, sha256 } from './crypto.js';

const subtle = globalThis.crypto.subtle;
export const MAX_DOC = 16 * 1024; // as src/attest: NSM documents are at most 12 KiB
export const SIM_SUFFIX = '-veil-simulated-nsm';

export class AttestationError extends Error {
  constructor(check, reason) {
    super(`${check}: ${reason}`);
    this.check = check;
    this.reason = reason;
  }
}

const fail = (check, reason) => { throw new AttestationError(check, reason); };

// ---- CBOR (RFC 8949), the strict subset documents use --------------------------------

// Definite lengths only, shortest heads, no duplicate map keys, bounded depth; byte
// strings become Uint8Array, maps become Map (their keys are integers or text).
export function cborDecode(bytes) {
  let i = 0;
  const td = new TextDecoder('utf-8', { fatal: true });
  const need = (n) => { if (i + n > bytes.length) fail('format', 'truncated CBOR'); };
  function head() {
    need(1);
    const ib = bytes[i++];
    const major = ib >> 5;
    const info = ib & 31;
    let val;
    if (info < 24) val = info;
    else if (info <= 27) {
      const n = 1 << (info - 24);
      need(n);
      val = 0;
      for (let k = 0; k < n; k++) val = val * 256 + bytes[i++];
      if (val > Number.MAX_SAFE_INTEGER) fail('format', 'a CBOR integer beyond 2^53');
      const min = [24, 256, 65536, 4294967296][info - 24];
      if (val < min && major !== 7) fail('format', 'a CBOR head that is not the shortest');
    } else fail('format', `an indefinite or reserved CBOR item (0x${ib.toString(16)})`);
    return { major, info, val };
  }
  function item(depth) {
    if (depth > 16) fail('format', 'CBOR nested too deeply');
    const { major, info, val } = head();
    switch (major) {
      case 0: return val;
      case 1: return -1 - val;
      case 2: need(val); i += val; return bytes.slice(i - val, i);
      case 3: need(val); i += val; try { return td.decode(bytes.subarray(i - val, i)); } catch (e) { return fail('format', 'CBOR text is not UTF-8'); }
      case 4: { const a = []; for (let k = 0; k < val; k++) a.push(item(depth + 1)); return a; }
      case 5: {
        const m = new Map();
        for (let k = 0; k < val; k++) {
          const key = item(depth + 1);
          if (typeof key !== 'number' && typeof key !== 'string') fail('format', 'a CBOR map key that is not an integer or text');
          if (m.has(key)) fail('format', `a duplicate CBOR map key ${key}`);
          m.set(key, item(depth + 1));
        }
        return m;
      }
      case 6: if (depth > 0 || val !== 18) fail('format', `CBOR tag ${val} where none is allowed`); return item(depth + 1);
      default:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        return fail('format', `CBOR simple value ${info}`);
    }
  }
  const v = item(0);
  if (i !== bytes.length) fail('format', 'trailing bytes after the document');
  return v;
}

function cborHead(major, n) {
  if (n < 24) return [(major << 5) | n];
  if (n < 256) return [(major << 5) | 24, n];
  if (n < 65536) return [(major << 5) | 25, n >> 8, n & 255];
  return [(major << 5) | 26, (n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function cborBytes(b) {
  const h = cborHead(2, b.length);
  const out = new Uint8Array(h.length + b.length);
  out.set(h, 0);
  out.set(b, h.length);
  return out;
}

// Sig_structure = ["Signature1", protected, h'', payload] (RFC 9052 §4.4).
function sigStructure(protectedBytes, payload) {
  const parts = [Uint8Array.from(cborHead(4, 4)), Uint8Array.from([0x6a]), new TextEncoder().encode('Signature1'),
    cborBytes(protectedBytes), cborBytes(new Uint8Array(0)), cborBytes(payload)];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// ---- DER and X.509 ---------------------------------------------------------------------

// One TLV at off: {tag, start (of the value), end, next (= end)}.
function der(bytes, off) {
  if (off + 2 > bytes.length) fail('chain', 'truncated DER');
  const tag = bytes[off];
  let len = bytes[off + 1];
  let p = off + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 3 || p + n > bytes.length) fail('chain', 'a DER length out of range');
    len = 0;
    for (let k = 0; k < n; k++) len = len * 256 + bytes[p++];
  }
  if (p + len > bytes.length) fail('chain', 'truncated DER');
  return { tag, start: p, end: p + len, hdr: off };
}

function children(bytes, node) {
  const out = [];
  for (let p = node.start; p < node.end;) {
    const c = der(bytes, p);
    out.push(c);
    p = c.end;
  }
  return out;
}

const OID = {
  ECDSA_SHA384: '2a8648ce3d040303',
  BASIC_CONSTRAINTS: '551d13',
  KEY_USAGE: '551d0f',
  EXT_KEY_USAGE: '551d25',
  SUBJECT_KEY_ID: '551d0e',
  AUTHORITY_KEY_ID: '551d23',
};

function parseTime(bytes, node) {
  const s = new TextDecoder().decode(bytes.subarray(node.start, node.end));
  let m;
  if (node.tag === 0x17 && (m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    const y = Number(m[1]);
    return Date.UTC(y < 50 ? 2000 + y : 1900 + y, m[2] - 1, m[3], m[4], m[5], m[6]);
  }
  if (node.tag === 0x18 && (m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(s))) {
    return Date.UTC(Number(m[1]), m[2] - 1, m[3], m[4], m[5], m[6]);
  }
  return fail('chain', `a certificate time that is not UTCTime or GeneralizedTime in UTC (${s})`);
}

// Just what the checks need: the signed part, the signature, names as DER bytes,
// validity, the key, and the extensions that constrain a CA.
export function parseCert(bytes, what) {
  try {
    const top = der(bytes, 0);
    if (top.tag !== 0x30 || top.end !== bytes.length) fail('chain', 'not one DER SEQUENCE');
    const [tbs, alg, sig] = children(bytes, top);
    const t = children(bytes, tbs);
    let k = t[0].tag === 0xa0 ? 1 : 0;
    const sigAlgInner = t[k + 1];
    const issuer = t[k + 2];
    const validity = children(bytes, t[k + 3]);
    const subject = t[k + 4];
    const spki = t[k + 5];
    const algOid = hex(bytes.subarray(children(bytes, alg)[0].start, children(bytes, alg)[0].end));
    if (algOid !== OID.ECDSA_SHA384 || !equalBytes(bytes.subarray(alg.hdr, alg.end), bytes.subarray(sigAlgInner.hdr, sigAlgInner.end))) {
      fail('chain', `${what} is not signed with ecdsa-with-SHA384`);
    }
    if (sig.tag !== 0x03 || bytes[sig.start] !== 0) fail('chain', `${what}: a malformed signature`);
    const cert = {
      tbs: bytes.slice(tbs.hdr, tbs.end),
      sig: bytes.slice(sig.start + 1, sig.end),
      issuer: bytes.slice(issuer.hdr, issuer.end),
      subject: bytes.slice(subject.hdr, subject.end),
      spki: bytes.slice(spki.hdr, spki.end),
      notBefore: parseTime(bytes, validity[0]),
      notAfter: parseTime(bytes, validity[1]),
      ca: false, pathLen: null, keyUsage: null, subjectText: nameText(bytes, subject),
    };
    for (const ext of t.slice(k + 6)) {
      if (ext.tag !== 0xa3) continue;
      for (const e of children(bytes, children(bytes, ext)[0])) {
        const f = children(bytes, e);
        const oid = hex(bytes.subarray(f[0].start, f[0].end));
        const critical = f.length === 3 && f[1].tag === 0x01 && bytes[f[1].start] !== 0;
        const val = f[f.length - 1];
        if (oid === OID.BASIC_CONSTRAINTS) {
          const bc = children(bytes, der(bytes, val.start));
          for (const c of bc) {
            if (c.tag === 0x01) cert.ca = bytes[c.start] !== 0;
            if (c.tag === 0x02) cert.pathLen = bytes[c.start];
          }
        } else if (oid === OID.KEY_USAGE) {
          const bs = der(bytes, val.start);
          cert.keyUsage = bytes[bs.start + 1] || 0; // the first byte of named bits
        } else if (critical && oid !== OID.EXT_KEY_USAGE && oid !== OID.SUBJECT_KEY_ID && oid !== OID.AUTHORITY_KEY_ID) {
          fail('chain', `${what} has a critical extension this verifier does not know (${oid})`);
        }
      }
    }
    return cert;
  } catch (e) {
    if (e instanceof AttestationError) throw e;
    return fail('chain', `${what} is not a well-formed certificate`);
  }
}

// "CN=..., O=..." for display only (comparisons use the DER bytes).
function nameText(bytes, name) {
  const short = { '550403': 'CN', '55040a': 'O', '55040b': 'OU', '550406': 'C', '550407': 'L', '550408': 'ST' };
  const parts = [];
  try {
    for (const rdn of children(bytes, name)) {
      for (const atv of children(bytes, rdn)) {
        const [oid, v] = children(bytes, atv);
        const o = hex(bytes.subarray(oid.start, oid.end));
        parts.push(`${short[o] || o}=${new TextDecoder().decode(bytes.subarray(v.start, v.end))}`);
      }
    }
  } catch (e) { /* display only */ }
  return parts.join(', ');
}

// A DER ECDSA signature (SEQUENCE of two INTEGERs) as WebCrypto's r || s, 48 bytes each.
function rawSignature(sigDer) {
  const seq = der(sigDer, 0);
  const [r, s] = children(sigDer, seq);
  const out = new Uint8Array(96);
  for (const [n, off] of [[r, 0], [s, 48]]) {
    let v = sigDer.subarray(n.start, n.end);
    while (v.length > 48 && v[0] === 0) v = v.subarray(1);
    if (v.length > 48) fail('chain', 'an ECDSA signature integer longer than P-384 allows');
    out.set(v, off + 48 - v.length);
  }
  return out;
}

async function p384Key(spki, what) {
  try {
    return await subtle.importKey('spki', spki, { name: 'ECDSA', namedCurve: 'P-384' }, false, ['verify']);
  } catch (e) {
    return fail('chain', `${what} does not hold a P-384 key`);
  }
}

async function es384Verify(key, sig, data) {
  return subtle.verify({ name: 'ECDSA', hash: 'SHA-384' }, key, sig, data);
}

// ---- roots -------------------------------------------------------------------------------

export function pemToDer(pem) {
  const m = /-----BEGIN CERTIFICATE-----([\s\S]+?)-----END CERTIFICATE-----/.exec(pem || '');
  if (!m) fail('root', 'the configured root is not a PEM certificate');
  const bin = atob(m[1].replace(/\s+/g, ''));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// ---- the document ------------------------------------------------------------------------

function bytesField(p, name, check) {
  const v = p.get(name);
  if (v === undefined || v === null) fail(check, `the document has no ${name}`);
  if (!(v instanceof Uint8Array)) fail('format', `${name} is not a byte string`);
  return v;
}

// expect.nonce for a document that answers no nonce of the page's: the one a 409
// offers with another instance's key. Never sealed to: the page attests that key afresh.
export const ANY_NONCE = Symbol('any nonce');

// Verifies doc (bytes) for a fresh nonce and the key the page is about to seal to.
// expect: {rootDer, nonce, publicKey, userData (string), pcrs: {index: hex}, maxAge (s),
// maxFuture (s), now (ms)}. Returns what was verified, for the badge.
export async function verifyDocument(doc, expect) {
  if (!(doc instanceof Uint8Array) || doc.length === 0 || doc.length > MAX_DOC) fail('format', `a document of ${doc ? doc.length : 0} bytes`);
  const cose = cborDecode(doc);
  if (!Array.isArray(cose) || cose.length !== 4) fail('format', 'not a COSE_Sign1 array');
  const [prot, , payloadBytes, signature] = cose;
  if (!(prot instanceof Uint8Array) || !(payloadBytes instanceof Uint8Array) || !(signature instanceof Uint8Array)) {
    fail('format', 'a COSE_Sign1 field that is not a byte string');
  }
  const ph = cborDecode(prot);
  if (!(ph instanceof Map) || ph.get(1) !== -35) fail('format', 'the document is not signed with ES384');
  const p = cborDecode(payloadBytes);
  if (!(p instanceof Map)) fail('format', 'the payload is not a map');
  for (const k of ['module_id', 'digest', 'timestamp', 'pcrs', 'certificate', 'cabundle']) {
    if (!p.has(k)) fail('format', `the payload has no ${k}`);
  }
  if (p.get('digest') !== 'SHA384') fail('format', 'the digest is not SHA384');
  const bundle = p.get('cabundle');
  if (!Array.isArray(bundle) || bundle.length < 1 || !bundle.every((c) => c instanceof Uint8Array)) fail('format', 'a malformed cabundle');

  // root: cabundle[0] is the pinned root, byte for byte
  if (!equalBytes(bundle[0], expect.rootDer)) fail('root', 'cabundle[0] is not the trusted root certificate');
  const chain = [...bundle.map((c, i) => parseCert(c, i === 0 ? 'the root' : `cabundle[${i}]`)),
    parseCert(bytesField(p, 'certificate', 'format'), 'the document certificate')];

  // validity, now
  const now = expect.now;
  chain.forEach((c, i) => {
    if (now < c.notBefore || now > c.notAfter) {
      fail('validity', `certificate ${i} (${c.subjectText}) is not valid now (${new Date(c.notBefore).toISOString()} to ${new Date(c.notAfter).toISOString()})`);
    }
  });
  // chain: each certificate issued and signed by the one before, a CA allowed this path
  for (let i = 1; i < chain.length; i++) {
    const issuer = chain[i - 1];
    const cert = chain[i];
    if (!equalBytes(cert.issuer, issuer.subject)) fail('chain', `certificate ${i} is not issued by certificate ${i - 1}`);
    if (!issuer.ca) fail('chain', `certificate ${i - 1} (${issuer.subjectText}) is not a CA`);
    if (issuer.keyUsage !== null && !(issuer.keyUsage & 0x04)) fail('chain', `certificate ${i - 1} may not sign certificates`);
    const below = chain.length - i - 1; // CA certificates under this issuer
    if (issuer.pathLen !== null && issuer.pathLen < below) fail('chain', `certificate ${i - 1}'s path length does not allow this chain`);
    const key = await p384Key(issuer.spki, `certificate ${i - 1}`);
    if (!await es384Verify(key, rawSignature(cert.sig), cert.tbs)) fail('chain', `certificate ${i} has a bad signature`);
  }
  // signature: the document, with the certificate's key
  if (signature.length !== 96) fail('signature', 'an ES384 signature is 96 bytes');
  const leafKey = await p384Key(chain[chain.length - 1].spki, 'the document certificate');
  if (!await es384Verify(leafKey, signature, sigStructure(prot, payloadBytes))) fail('signature', 'the COSE signature does not verify');
  // freshness
  const ts = p.get('timestamp');
  if (typeof ts !== 'number') fail('format', 'the timestamp is not an integer');
  const age = (now - ts) / 1000;
  if (age > expect.maxAge) fail('freshness', `the document is ${Math.round(age)} s old (at most ${expect.maxAge} s)`);
  if (age < -expect.maxFuture) fail('freshness', `the document is dated ${Math.round(-age)} s in the future`);
  // the binding: this nonce, this key, veil's statement
  if (expect.nonce !== ANY_NONCE && !equalBytes(bytesField(p, 'nonce', 'nonce'), expect.nonce)) {
    fail('nonce', 'the document answers another nonce (a replayed document)');
  }
  if (!equalBytes(bytesField(p, 'public_key', 'public-key'), expect.publicKey)) {
    fail('public-key', 'the document attests another key than the one the server gave (a substituted enclave key)');
  }
  if (!equalBytes(bytesField(p, 'user_data', 'user-data'), new TextEncoder().encode(expect.userData))) {
    fail('user-data', `the document does not state ${expect.userData}`);
  }
  // pcr: the operator's measurements
  const pcrs = p.get('pcrs');
  if (!(pcrs instanceof Map)) fail('format', 'the PCRs are not a map');
  const matched = [];
  for (const [idx, want] of Object.entries(expect.pcrs)) {
    const got = pcrs.get(Number(idx));
    if (!(got instanceof Uint8Array) || hex(got) !== want.toLowerCase()) {
      fail('pcr', `PCR${idx} is ${got instanceof Uint8Array ? hex(got).slice(0, 16) + '...' : 'missing'}, the operator published ${want.slice(0, 16)}...`);
    }
    matched.push({ index: Number(idx), value: want.toLowerCase() });
  }
  const moduleId = p.get('module_id');
  return {
    moduleId,
    simulated: typeof moduleId === 'string' && moduleId.endsWith(SIM_SUFFIX),
    timestamp: ts,
    checkedAt: now,
    pcrs: matched,
    chain: chain.map((c) => c.subjectText),
    rootSha256: hex(await sha256(expect.rootDer)),
  };
}

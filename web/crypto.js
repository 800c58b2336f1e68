// crypto — veil's cryptography in the page: WebCrypto for X25519, HKDF-SHA512,
// AES-256-GCM (16-byte IVs), SHA-256 and HMAC; the vendored hash-wasm for Argon2id.
// The formats are the CLI's and the original web client's, byte for byte (README,
// "The crypto envelope"; src/crypto/ep.h, keywrap.h, stream_v3.h, history_tag.h), so
// one user's keys and messages work in all three. Private keys become non-extractable
// CryptoKeys as soon as they are unwrapped; raw copies are zeroed after use.

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

export const CTX = {
  REQUEST_V3: 'client-to-enclave-request-v3',
  USER_STORAGE: 'user-message-storage',
  ASSISTANT_STORAGE: 'assistant-message-storage',
};
export const SV3_LABEL = 'veil-stream-v3';
export const SV3_TEXT = 0;
export const SV3_END = 1;
export const SV3_THINKING = 2;
export const HISTORY_LABEL = 'veil-history-v1';
// Argon2id v1.3 as veil and the original write it; any other parameters are refused
// before any derivation (a hostile server could otherwise ask for gigabytes).
export const KDF = { algorithm: 'argon2id', version: 19, time_cost: 4, memory_cost: 131072, parallelism: 2 };
export const MIN_PASSCODE = 6;

export class CryptoError extends Error {}

// ---- bytes -------------------------------------------------------------------------

export function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

// Strict: hex digits only, even length, and exactly len bytes when len is given.
export function unhex(s, len) {
  if (typeof s !== 'string' || s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s) ||
      (len !== undefined && s.length !== 2 * len)) {
    throw new CryptoError(`malformed hex${len !== undefined ? ` (want ${len} bytes)` : ''}`);
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

export function equalBytes(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export function be64(i) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(i));
  return out;
}

function be32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest('SHA-256', bytes));
}

export function wipe(...arrays) {
  for (const a of arrays) if (a) a.fill(0);
}

// ---- X25519 ------------------------------------------------------------------------

const PKCS8_X25519 = unhex('302e020100300506032b656e04220420');
const BASEPOINT = (() => { const b = new Uint8Array(32); b[0] = 9; return b; })();

async function publicKey(raw) {
  return subtle.importKey('raw', raw, { name: 'X25519' }, false, []);
}

// X25519(priv, pub): refuses an all-zero result (a low-order point), as every veil side does.
async function agree(priv, pubRaw) {
  const ss = new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: await publicKey(pubRaw) }, priv, 256));
  if (ss.every((b) => b === 0)) throw new CryptoError('a low-order X25519 public key');
  return ss;
}

// A raw 32-byte private key as a non-extractable CryptoKey and its public key
// (X25519(priv, 9): a non-extractable key still computes it).
export async function importPrivate(raw) {
  const pkcs8 = concat(PKCS8_X25519, raw);
  try {
    const key = await subtle.importKey('pkcs8', pkcs8, { name: 'X25519' }, false, ['deriveBits']);
    const pub = new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: await publicKey(BASEPOINT) }, key, 256));
    return { key, pub };
  } finally {
    wipe(pkcs8);
  }
}

// A fresh key pair whose private half never leaves WebCrypto (the per-request transport key).
export async function ephemeral() {
  const kp = await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
  return { key: kp.privateKey, pub: new Uint8Array(await subtle.exportKey('raw', kp.publicKey)) };
}

// ---- HKDF-SHA512 and AES-256-GCM ---------------------------------------------------

async function hkdfBits(ikm, salt, info, bits = 256) {
  const base = await subtle.importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-512', salt, info }, base, bits));
}

async function aesKey(ikm, salt, info) {
  const raw = await hkdfBits(ikm, salt, info);
  try {
    return await subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt', 'decrypt']);
  } finally {
    wipe(raw);
  }
}

async function gcmSeal(key, iv, pt, aad) {
  const p = { name: 'AES-GCM', iv, tagLength: 128 };
  if (aad) p.additionalData = aad;
  const out = new Uint8Array(await subtle.encrypt(p, key, pt));
  return { ct: out.slice(0, out.length - 16), tag: out.slice(out.length - 16) };
}

async function gcmOpen(key, iv, ct, tag, aad) {
  const p = { name: 'AES-GCM', iv, tagLength: 128 };
  if (aad) p.additionalData = aad;
  try {
    return new Uint8Array(await subtle.decrypt(p, key, concat(ct, tag)));
  } catch (e) {
    throw new CryptoError('authentication failed');
  }
}

// ---- the EncryptedPayload ----------------------------------------------------------

// Seals pt (bytes or a string) to a recipient's raw X25519 public key under a context.
export async function epSeal(recipientPub, pt, context) {
  const eph = await ephemeral();
  const ss = await agree(eph.key, recipientPub);
  const salt = randomBytes(32);
  const iv = randomBytes(16);
  const key = await aesKey(ss, salt, utf8.encode(context));
  wipe(ss);
  const { ct, tag } = await gcmSeal(key, iv, typeof pt === 'string' ? utf8.encode(pt) : pt);
  return { ephemeral_public_key: hex(eph.pub), iv: hex(iv), ciphertext: hex(ct), auth_tag: hex(tag), hkdf_salt: hex(salt) };
}

export async function epOpen(priv, ep, context) {
  const ss = await agree(priv, unhex(ep.ephemeral_public_key, 32));
  const key = await aesKey(ss, unhex(ep.hkdf_salt, 32), utf8.encode(context));
  wipe(ss);
  return gcmOpen(key, unhex(ep.iv, 16), unhex(ep.ciphertext), unhex(ep.auth_tag, 16));
}

// The raw bytes format 3 and the history tag hash: epk || salt || iv || ciphertext || tag.
export function epRaw(ep) {
  return concat(unhex(ep.ephemeral_public_key, 32), unhex(ep.hkdf_salt, 32), unhex(ep.iv, 16),
    unhex(ep.ciphertext), unhex(ep.auth_tag, 16));
}

export async function epHash(ep) {
  return sha256(epRaw(ep));
}

// ---- stream format 3 ---------------------------------------------------------------

// The receiver's state: K = HKDF-SHA512(X25519(c, E) || X25519(c, S), salt,
// "veil-stream-v3" || request_hash); it counts elements itself, so a dropped,
// reordered, relabelled or forged element fails to open.
export async function sv3Receiver(clientPriv, enclavePub, streamKey, requestHash) {
  const a = await agree(clientPriv, unhex(streamKey.ephemeral_public_key, 32));
  const b = await agree(clientPriv, enclavePub);
  const ikm = concat(a, b);
  wipe(a, b);
  const key = await aesKey(ikm, unhex(streamKey.hkdf_salt, 32), concat(utf8.encode(SV3_LABEL), requestHash));
  wipe(ikm);
  return { key, seq: 0 };
}

// Opens the element the receiver expects next (its seq must be that index).
export async function sv3Open(st, kind, elem) {
  if (elem.seq !== st.seq) throw new CryptoError(`element ${elem.seq} arrived where ${st.seq} was due`);
  const n = be64(st.seq);
  const iv = concat(new Uint8Array(8), n);
  const aad = concat(utf8.encode(SV3_LABEL), n, Uint8Array.of(kind));
  const pt = await gcmOpen(st.key, iv, unhex(elem.ciphertext), unhex(elem.auth_tag, 16), aad);
  st.seq++;
  return pt;
}

// ---- the history tag ---------------------------------------------------------------

// K = HKDF-SHA512(storage private key, no salt, "veil-history-v1"), as an HMAC key.
export async function historyKey(storagePrivRaw) {
  const raw = await hkdfBits(storagePrivRaw, new Uint8Array(0), utf8.encode(HISTORY_LABEL));
  try {
    return await subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
  } finally {
    wipe(raw);
  }
}

// HMAC-SHA256(K, label || be32(len(session)) || session || prev (32 zero bytes first)
// || SHA-256(user EP raw) || SHA-256(assistant EP raw)).
export async function historyTag(key, sessionId, prev, userEp, assistantEp) {
  const sid = utf8.encode(sessionId);
  const msg = concat(utf8.encode(HISTORY_LABEL), be32(sid.length), sid, prev || new Uint8Array(32),
    await epHash(userEp), await epHash(assistantEp));
  return new Uint8Array(await subtle.sign('HMAC', key, msg));
}

// ---- the wrapped private key (spec §1.4) --------------------------------------------

function argon2() {
  const hw = globalThis.hashwasm;
  if (!hw || typeof hw.argon2id !== 'function') throw new CryptoError('the Argon2id library did not load');
  return hw.argon2id;
}

async function derive(secret, salt) {
  const password = utf8.encode(secret);
  try {
    return await argon2()({ password, salt, iterations: KDF.time_cost, memorySize: KDF.memory_cost,
      parallelism: KDF.parallelism, hashLength: 32, outputType: 'binary' });
  } finally {
    wipe(password);
  }
}

// Refuses a blob whose kdf is not veil's (absent means the original's defaults, the same).
export function checkKdf(blob) {
  const k = blob.kdf;
  if (k === undefined || k === null) return;
  for (const [name, want] of Object.entries(KDF)) {
    if (k[name] !== want) {
      throw new CryptoError(`the server sent key-derivation parameters veil does not use (${name}=${JSON.stringify(k[name])}); refused`);
    }
  }
}

// {encrypted_private_key, iv, tag, salt} of a 32-byte private key under a secret.
export async function wrapKey(privRaw, secret) {
  const salt = randomBytes(32);
  const iv = randomBytes(16);
  const k = await derive(secret, salt);
  try {
    const key = await subtle.importKey('raw', k, 'AES-GCM', false, ['encrypt']);
    const { ct, tag } = await gcmSeal(key, iv, privRaw);
    return { encrypted_private_key: hex(ct), iv: hex(iv), tag: hex(tag), salt: hex(salt) };
  } finally {
    wipe(k);
  }
}

// The raw private key (the caller wipes it); CryptoError 'authentication failed' for a
// wrong secret or a tampered blob.
export async function unwrapKey(blob, secret) {
  checkKdf(blob);
  const salt = unhex(blob.salt, 32);
  const k = await derive(secret, salt);
  try {
    const key = await subtle.importKey('raw', k, 'AES-GCM', false, ['decrypt']);
    const priv = await gcmOpen(key, unhex(blob.iv, 16), unhex(blob.encrypted_private_key), unhex(blob.tag, 16));
    if (priv.length !== 32) { wipe(priv); throw new CryptoError('the wrapped key is not 32 bytes'); }
    return priv;
  } finally {
    wipe(k);
  }
}

// 20 uniform decimal digits: rejection sampling, no modulo bias (defect §10.26).
export function recoveryCode() {
  let digits = '';
  while (digits.length < 20) {
    for (const b of randomBytes(32)) if (b < 250 && digits.length < 20) digits += String(b % 10);
  }
  return digits;
}

export function formatRecovery(digits) {
  return digits.match(/.{4}/g).join('-');
}

// Drops dashes and spaces; exactly 20 digits or null.
export function normalizeRecovery(code) {
  const d = String(code).replace(/[-\s]/g, '');
  return /^[0-9]{20}$/.test(d) ? d : null;
}

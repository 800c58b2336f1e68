// client — what the page does for a person, without any DOM: the account's keys
// (create, unlock, recover, lock), the enclave's attestation, the chat in stream
// format 3 (a request sealed to the attested key and bound to this session, an answer
// only that enclave could key, every element counted, the end checked against the
// stored messages), the history tags, and past sessions with their chain checked.
// The server sees ciphertext only; session names are never a message's text.

import { ApiError } from './api.js';
import { ANY_NONCE, AttestationError, pemToDer, verifyDocument } from './attest.js';
import { AWS_ROOT_NAME, AWS_ROOT_PEM, AWS_ROOT_SHA256 } from './aws-root.js';
import * as C from './crypto.js';
import * as keystore from './keystore.js';

const utf8 = new TextEncoder();
const DECRYPT_FAILED = 'Could not decrypt the message';

export class ChatError extends Error {
  constructor(message, stored = false) {
    super(message);
    this.stored = stored;
  }
}

export class Client {
  constructor(api) {
    this.api = api;
    this.config = null;
    this.userId = null;
    this.publicKey = null; // hex, the account's (from the server, checked against the key)
    this.priv = null;      // non-extractable CryptoKey
    this.histKey = null;   // non-extractable HMAC CryptoKey
    this.enclave = null;   // {pub: Uint8Array, info}
    this.lastTags = new Map(); // session id -> the last tag of its chain (Uint8Array)
  }

  // ---- configuration and sign-in ----

  async loadConfig() {
    this.config = await this.api.get('/app/config.json');
    return this.config;
  }

  // The root the page verifies against and where it came from.
  async root() {
    const r = this.config.attestation.root;
    if (r.source === 'built-in') {
      const der = pemToDer(AWS_ROOT_PEM);
      if (C.hex(await C.sha256(der)) !== AWS_ROOT_SHA256) throw new AttestationError('root', 'the page\'s copy of the AWS root is damaged');
      return { der, label: `${AWS_ROOT_NAME} (built into the page)`, custom: false };
    }
    const der = pemToDer(r.pem);
    if (C.hex(await C.sha256(der)) !== r.sha256) throw new AttestationError('root', 'the configured root does not match its own SHA-256');
    return { der, label: `${r.subject} (the operator's ${r.source}, ${r.file}; SHA-256 ${r.sha256.slice(0, 16)}...)`, custom: true };
  }

  measurements() {
    const m = this.config.attestation.measurements;
    return m ? { pcrs: m.pcrs, label: `the operator's ${m.source} (${m.file})` } : null;
  }

  // Signs in with a token: the account row, and whether it has keys.
  async signIn(token) {
    this.api.token = token;
    const sync = await this.api.post('/users/sync');
    this.userId = sync.user_id;
    const st = await this.api.get('/users/me/encryption-status');
    this.publicKey = st.public_key || null;
    const ctx = await this.api.get('/chat/encryption-status');
    return { userId: this.userId, hasKeys: !!st.has_encryption_keys, context: ctx.context };
  }

  signOut() {
    this.forgetKeys();
    this.api.token = null;
    this.userId = null;
  }

  get unlocked() {
    return !!this.priv;
  }

  // ---- keys ----

  async adopt(privRaw, remember) {
    const { key, pub } = await C.importPrivate(privRaw);
    if (this.publicKey && C.hex(pub) !== this.publicKey) throw new ChatError('The key does not match your account\'s public key.');
    this.histKey = await C.historyKey(privRaw);
    this.priv = key;
    this.publicKey = C.hex(pub);
    if (remember) await keystore.save(this.userId, { publicKey: this.publicKey, key: this.priv, historyKey: this.histKey });
    else await keystore.forget(this.userId);
  }

  // Step 1 of creating keys: a key pair wrapped under the passcode and a new recovery
  // code. Nothing is uploaded until the person confirms they saved the code (step 2).
  async prepareKeys(passcode) {
    if (passcode.length < C.MIN_PASSCODE) throw new ChatError(`A passcode has at least ${C.MIN_PASSCODE} characters.`);
    const priv = C.randomBytes(32);
    const digits = C.recoveryCode();
    try {
      const { pub } = await C.importPrivate(priv);
      const main = await C.wrapKey(priv, passcode);
      const rec = await C.wrapKey(priv, digits);
      const body = { public_key: C.hex(pub), ...main };
      for (const [k, v] of Object.entries(rec)) body[`recovery_${k}`] = v;
      const raw = priv.slice();
      return { recovery: C.formatRecovery(digits), body, raw };
    } finally {
      C.wipe(priv);
    }
  }

  async commitKeys(prepared, remember) {
    try {
      await this.api.post('/users/me/keys', prepared.body);
      this.publicKey = prepared.body.public_key;
      await this.adopt(prepared.raw, remember);
    } finally {
      C.wipe(prepared.raw);
    }
  }

  async unlock(passcode, remember) {
    const blob = await this.api.get('/users/me/keys');
    let priv;
    try {
      priv = await C.unwrapKey(blob, passcode);
    } catch (e) {
      if (e instanceof C.CryptoError && e.message === 'authentication failed') throw new ChatError('Wrong passcode.');
      throw e;
    }
    try {
      this.publicKey = blob.public_key;
      await this.adopt(priv, remember);
    } finally {
      C.wipe(priv);
    }
  }

  async unlockRemembered() {
    const e = await keystore.load(this.userId);
    if (!e || e.publicKey !== this.publicKey) return false;
    this.priv = e.key;
    this.histKey = e.historyKey;
    return true;
  }

  // Step 1 of recovery: the key from the recovery copy, re-wrapped under a new passcode
  // and a new code (shown before anything changes on the server); step 2 replaces both
  // wrapped copies with one PUT (the same key pair: every past message stays readable).
  async prepareRecovery(code, newPasscode) {
    const digits = C.normalizeRecovery(code);
    if (!digits) throw new ChatError('A recovery code is 20 digits (dashes and spaces are ignored).');
    if (newPasscode.length < C.MIN_PASSCODE) throw new ChatError(`A passcode has at least ${C.MIN_PASSCODE} characters.`);
    const blob = await this.api.get('/users/me/keys/recovery');
    let priv;
    try {
      priv = await C.unwrapKey(blob, digits);
    } catch (e) {
      if (e instanceof C.CryptoError && e.message === 'authentication failed') throw new ChatError('Wrong recovery code.');
      throw e;
    }
    try {
      const { pub } = await C.importPrivate(priv);
      if (C.hex(pub) !== blob.public_key) throw new ChatError('The recovered key does not match your account\'s public key.');
      const newDigits = C.recoveryCode();
      const main = await C.wrapKey(priv, newPasscode);
      const rec = await C.wrapKey(priv, newDigits);
      const body = { public_key: blob.public_key, ...main };
      for (const [k, v] of Object.entries(rec)) body[`recovery_${k}`] = v;
      return { recovery: C.formatRecovery(newDigits), body, raw: priv.slice() };
    } finally {
      C.wipe(priv);
    }
  }

  async commitRecovery(prepared, remember) {
    try {
      await this.api.put('/users/me/keys', prepared.body);
      await this.adopt(prepared.raw, remember);
    } finally {
      C.wipe(prepared.raw);
    }
  }

  forgetKeys() {
    this.priv = null;
    this.histKey = null;
    this.enclave = null;
    this.lastTags.clear();
  }

  async lock() {
    const id = this.userId;
    this.forgetKeys();
    if (id) await keystore.forget(id);
  }

  // ---- the enclave ----

  // A fresh attestation of the enclave's key, verified here, before the first seal
  // (and again when the enclave's key changed). AttestationError names the check.
  async attest() {
    const meas = this.measurements();
    if (!meas) {
      throw new AttestationError('measurements', 'the operator published no enclave measurements (VEIL_WEB_MEASUREMENTS), so the page cannot tell what runs in the enclave');
    }
    const root = await this.root();
    const nonce = C.randomBytes(32);
    const info = await this.api.get(`/chat/enclave/info?nonce=${C.hex(nonce)}`);
    if (!info || typeof info.enclave_public_key !== 'string') throw new AttestationError('format', 'the server sent no enclave key');
    if (!info.attestation) throw new AttestationError('missing', 'the server sent the enclave key without an attestation document');
    const { pub, verified } = await this.verifyKey(info, nonce, root, meas, this.config.attestation.max_age_seconds);
    this.enclave = { pub, info: { ...verified, root: root.label, customRoot: root.custom, measurements: meas.label } };
    return this.enclave.info;
  }

  // The key info names, if its document binds it under the page's policy: this root,
  // this nonce (or ANY_NONCE), veil's statement, the operator's PCRs, maxAge seconds.
  async verifyKey(info, nonce, root, meas, maxAge) {
    let doc;
    try {
      doc = Uint8Array.from(atob(info.attestation), (c) => c.charCodeAt(0));
    } catch (e) {
      throw new AttestationError('format', 'the attestation is not base64');
    }
    let pub;
    try {
      pub = C.unhex(info.enclave_public_key, 32);
    } catch (e) {
      throw new AttestationError('format', 'the enclave key is not 32 bytes of hex');
    }
    const a = this.config.attestation;
    const verified = await verifyDocument(doc, {
      rootDer: root.der, nonce, publicKey: pub, userData: a.user_data, pcrs: meas.pcrs,
      maxAge, maxFuture: a.max_future_seconds, now: Date.now(),
    });
    return { pub, verified };
  }

  // A 409 from the chat route: another instance (behind a load balancer) whose
  // enclave has another key, with a document made earlier for that instance. Checked
  // like any (but the nonce and the age, which only a fresh attestation proves): an
  // offer its document does not bind is a lying server, and the page stops there.
  // The key is never sealed to from here: attest() runs next.
  async checkOffered(body) {
    const meas = this.measurements();
    if (!meas) throw new AttestationError('measurements', 'the operator published no enclave measurements');
    if (!body || typeof body.enclave_public_key !== 'string') throw new AttestationError('format', 'the server sent no enclave key');
    if (!body.attestation) throw new AttestationError('missing', 'the server offered another enclave key without an attestation document');
    await this.verifyKey(body, ANY_NONCE, await this.root(), meas, Infinity);
  }

  // ---- sessions ----

  async sessions() {
    const r = await this.api.get('/chat/sessions?limit=100');
    return r.sessions;
  }

  async deleteSession(id) {
    await this.api.del(`/chat/sessions/${encodeURIComponent(id)}`);
    this.lastTags.delete(id);
  }

  async openMessage(m) {
    const ctx = m.role === 'user' ? C.CTX.USER_STORAGE : C.CTX.ASSISTANT_STORAGE;
    return new TextDecoder('utf-8', { fatal: true }).decode(await C.epOpen(this.priv, m.encrypted_content, ctx));
  }

  // A past session, decrypted here, with each exchange's place in the tag chain:
  // verified, untagged (a client that does not tag), reordered (its tag chains to
  // another exchange), missing (a message without its pair, or the chain resumes after
  // a gap: an exchange before it was removed), forged (does not open with the key, or
  // its tag verifies against nothing here).
  async openSession(id) {
    const r = await this.api.get(`/chat/sessions/${encodeURIComponent(id)}/messages`);
    const msgs = r.messages;
    const items = [];
    for (const m of msgs) {
      let text = null;
      try { text = await this.openMessage(m); } catch (e) { text = null; }
      items.push({ id: m.id, role: m.role, text, ep: m.encrypted_content, tag: m.history_tag || null, mark: null });
    }
    // exchanges: a user message followed by an assistant message
    const ex = [];
    for (let i = 0; i < items.length; i++) {
      const u = items[i];
      const a = items[i + 1];
      if (u.role === 'user' && a && a.role === 'assistant') {
        ex.push({ u, a });
        i++;
      } else {
        u.mark = 'missing';
      }
    }
    const tags = ex.map((e) => (e.a.tag ? C.unhex(e.a.tag, 32) : null));
    const computed = async (e, prev) => C.historyTag(this.histKey, id, prev, e.u.ep, e.a.ep);
    let prev = null;
    const results = [];
    for (let k = 0; k < ex.length; k++) {
      const e = ex[k];
      let mark;
      if (e.u.text === null || e.a.text === null) mark = 'forged';
      else if (!tags[k]) mark = 'untagged';
      else if (C.equalBytes(await computed(e, prev), tags[k])) mark = 'verified';
      else {
        mark = 'forged';
        for (const other of [null, ...tags.filter((t, j) => t && j !== k)]) {
          if (!C.equalBytes(other, prev) && C.equalBytes(await computed(e, other), tags[k])) { mark = 'reordered'; break; }
        }
      }
      results.push(mark);
      if (tags[k]) prev = tags[k];
    }
    // a tag that verifies nothing here but that the next exchange chains to was made
    // by this client: the exchange before it is what is gone
    for (let k = 0; k < ex.length - 1; k++) {
      if (results[k] === 'forged' && ex[k].u.text !== null && ex[k].a.text !== null && results[k + 1] === 'verified') results[k] = 'missing';
    }
    ex.forEach((e, k) => { e.u.mark = results[k]; e.a.mark = results[k]; });
    this.lastTags.set(id, prev);
    const history = ex.filter((e, k) => results[k] !== 'forged').flatMap((e) => [
      { role: 'user', content: e.u.text }, { role: 'assistant', content: e.a.text }]);
    return { items, history };
  }

  // ---- chat ----

  // Sends message in sessionId (null: a new session, created first, named "New Chat":
  // a session's name is plaintext on the server). history: [{role, content}] of the
  // session. on.text(delta), on.thinking(delta), on.session(id) report progress;
  // on.attested(info) a new enclave key, verified before the retry.
  // Resolves to {sessionId, text, model, tagged}; ChatError otherwise (nothing stored
  // unless err.stored).
  async send({ sessionId, history, message, model, signal, on }) {
    if (!this.priv) throw new ChatError('Unlock your keys first.');
    if (!this.enclave) await this.attest();
    if (!sessionId) {
      const s = await this.api.post('/chat/sessions', { name: 'New Chat' });
      sessionId = s.id;
      this.lastTags.set(sessionId, null);
    }
    if (on.session) on.session(sessionId);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.sendOnce({ sessionId, history, message, model, signal, on });
      } catch (e) {
        // another instance's enclave (a load balancer), or a restarted one: verify the
        // key that takes the retry with a fresh nonce, then reseal once
        const other = e instanceof ApiError && e.status === 409 && e.body && typeof e.body.enclave_public_key === 'string';
        if (other) await this.checkOffered(e.body);
        if (other && attempt > 0) {
          throw new ChatError('The enclave key changed again during the retry (another instance answered it): nothing was sent to an unverified key. Send again.');
        }
        if (attempt === 0 && (other || (e instanceof ChatError && e.message.startsWith(DECRYPT_FAILED) && !e.partial))) {
          this.enclave = null;
          const info = await this.attest();
          if (on.attested) on.attested(info);
          continue;
        }
        throw e;
      }
    }
  }

  async sendOnce({ sessionId, history, message, model, signal, on }) {
    const enclavePub = this.enclave.pub;
    const t = await C.ephemeral();
    const inner = {
      message, history, client_public_key: C.hex(t.pub), storage_public_key: this.publicKey, model_id: model,
      session_id: sessionId, request_id: C.hex(C.randomBytes(16)), issued_at: Math.floor(Date.now() / 1000),
    };
    const sealed = await C.epSeal(enclavePub, utf8.encode(JSON.stringify(inner)), C.CTX.REQUEST_V3);
    const requestHash = await C.epHash(sealed);
    const body = {
      stream_format: 3, encrypted_request: sealed, client_transport_public_key: C.hex(t.pub), model, session_id: sessionId,
      enclave_public_key: C.hex(enclavePub), // an instance whose enclave has another key answers 409 at once
    };
    let st = null;
    let stored = null;
    let done = false;
    let failed = null;
    let text = '';
    const dec = new TextDecoder();
    const tdec = new TextDecoder();
    const refuse = (why) => { throw new ChatError(`${why}: the answer was refused.`); };
    const onEvent = async (ev) => {
      if (done || failed) refuse('The server sent events after the end');
      switch (ev.type) {
        case 'session':
          if (ev.session_id !== sessionId) refuse('The server named another session');
          break;
        case 'stream_key':
          if (st || ev.stream_format !== 3) refuse('The server did not answer in stream format 3');
          st = await C.sv3Receiver(t.key, enclavePub, ev, requestHash);
          break;
        case 'encrypted_chunk_v3':
        case 'thinking_v3': {
          if (!st || stored) refuse('An element arrived outside the stream');
          const thinking = ev.type === 'thinking_v3';
          let pt;
          try { pt = await C.sv3Open(st, thinking ? C.SV3_THINKING : C.SV3_TEXT, ev); } catch (e) {
            refuse(`Element ${st.seq} of the answer does not authenticate (${e.message})`);
          }
          if (thinking) { if (on.thinking) on.thinking(tdec.decode(pt, { stream: true })); } else {
            const s = dec.decode(pt, { stream: true });
            text += s;
            if (on.text) on.text(s);
          }
          break;
        }
        case 'stored': {
          if (!st || !ev.stream_end) refuse('The answer ended without its end element');
          let hashes;
          try { hashes = await C.sv3Open(st, C.SV3_END, ev.stream_end); } catch (e) {
            refuse('The answer\'s end element does not authenticate (a chunk was dropped or the end forged)');
          }
          if (hashes.length !== 64) refuse('The end element is malformed');
          stored = { ev, hashes };
          break;
        }
        case 'done':
          if (!stored) refuse('The stream ended without storing the answer');
          done = true;
          break;
        case 'error':
          failed = typeof ev.message === 'string' ? ev.message : 'The chat failed.';
          break;
        case 'encrypted_chunk': case 'thinking': case 'encrypted_chunk_v2': case 'thinking_v2':
          refuse('The server answered in an unbound stream format');
          break;
        default:
          break; // a later version's event: nothing to do
      }
    };
    try {
      await this.api.stream(body, onEvent, signal);
    } catch (e) {
      if (e.name === 'AbortError') throw new ChatError('Stopped: nothing was stored.');
      if (e instanceof ApiError || e instanceof ChatError) { e.partial = text.length > 0; throw e; }
      throw e;
    }
    if (failed) { const e = new ChatError(failed); e.partial = text.length > 0; throw e; }
    if (!done) throw new ChatError(stored ? 'The connection broke after the answer was stored; reopen the session to read it.'
      : 'The answer was cut off before it ended: nothing was stored. Retry.', !!stored);
    // the stored messages are exactly what the enclave sealed
    const { ev, hashes } = stored;
    const msgs = (await this.api.get(`/chat/sessions/${encodeURIComponent(sessionId)}/messages`)).messages;
    const um = msgs.find((m) => m.id === ev.user_message_id);
    const am = msgs.find((m) => m.id === ev.assistant_message_id);
    if (!um || !am || !C.equalBytes(await C.epHash(um.encrypted_content), hashes.slice(0, 32)) ||
        !C.equalBytes(await C.epHash(am.encrypted_content), hashes.slice(32))) {
      throw new ChatError('The server stored something other than what the enclave sealed: refused.', true);
    }
    // chain this exchange to the session's history with a key only this account holds
    const prev = this.lastTags.has(sessionId) ? this.lastTags.get(sessionId) : null;
    const tag = await C.historyTag(this.histKey, sessionId, prev, um.encrypted_content, am.encrypted_content);
    let tagged = true;
    try {
      await this.api.put(`/chat/sessions/${encodeURIComponent(sessionId)}/messages/${encodeURIComponent(am.id)}/history-tag`,
        { history_tag: C.hex(tag) });
      this.lastTags.set(sessionId, tag);
    } catch (e) {
      tagged = false;
    }
    return { sessionId, text, model: ev.model_used, tagged };
  }
}

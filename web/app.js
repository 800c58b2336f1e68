// app — the page's screens and controls on top of client.js: sign in, create keys
// (the recovery code shown once, confirmed saved before anything is uploaded),
// unlock, recover, lock; the session list; the conversation with the answer shown as
// its chunks are decrypted; the attestation badge. Text from the server or the model
// is only ever set as textContent, never parsed as HTML.

import { Api, ApiError } from './api.js';
import { AttestationError } from './attest.js';
import { ChatError, Client } from './client.js';

const $ = (id) => document.getElementById(id);
const api = new Api();
const client = new Client(api);
const TOKEN_KEY = 'veil-token';
const MODEL_KEY = 'veil-model';
const SCREENS = ['loading', 'signin', 'create', 'code', 'unlock', 'recover', 'chat'];
const MARKS = {
  verified: ['ok', 'history verified'],
  untagged: ['', 'not tagged (written by a client that does not tag its history)'],
  reordered: ['bad', 'out of order: this exchange was moved'],
  missing: ['bad', 'an exchange is missing here (removed from the history), or this one was altered'],
  forged: ['bad', 'forged: this does not verify with your key'],
};

const state = {
  sessionId: null,   // the open session (null: a new chat)
  history: [],       // its decrypted turns, sent along (sealed) with each message
  controller: null,  // the running stream's AbortController
  pending: null,     // keys prepared, waiting for the recovery code to be confirmed
};

// ---- small helpers ----

function show(name) {
  for (const s of SCREENS) $(`screen-${s}`).hidden = s !== name;
  $('account-tools').hidden = name !== 'chat';
  $('badge').hidden = name !== 'chat';
  if (name !== 'chat') $('attest-panel').hidden = true;
  const focus = { signin: 'token-input', create: 'create-passcode', unlock: 'unlock-passcode', recover: 'recover-code',
    chat: 'message-input', code: 'code-saved' }[name];
  if (focus) $(focus).focus();
}

function showError(err) {
  let text = err && err.message ? err.message : String(err);
  if (err instanceof AttestationError) {
    text = `The enclave could not be verified (${err.check}): ${err.reason}. Nothing was sent.`;
  } else if (!(err instanceof ApiError || err instanceof ChatError || err instanceof Error)) {
    text = String(err);
  }
  $('error-text').textContent = text;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

// Runs fn with the controls of form disabled and a status line; errors are shown.
async function busy(message, fn, form) {
  clearError();
  const controls = form ? [...form.querySelectorAll('button, input, textarea')] : [];
  controls.forEach((c) => { c.disabled = true; });
  $('busy').textContent = message;
  $('busy').hidden = false;
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    $('busy').hidden = true;
    controls.forEach((c) => { c.disabled = false; });
  }
}

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- the attestation badge ----

function setBadge(kind, label) {
  const b = $('badge');
  b.dataset.state = kind;
  b.textContent = label;
}

function showAttestation(info) {
  setBadge(info.simulated ? 'simulated' : 'ok', info.simulated ? 'Enclave verified (simulated NSM)' : 'Enclave verified');
  $('attest-summary').textContent = info.simulated
    ? 'Verified against a SIMULATED Nitro Security Module: for local development only, not a real enclave.'
    : 'Verified: an AWS Nitro Enclave running the code the operator published holds the key your messages are sealed to.';
  const dl = $('attest-details');
  dl.replaceChildren();
  const row = (k, v) => { dl.append(el('dt', {}, k), el('dd', {}, v)); };
  row('Module', info.moduleId);
  row('Root', info.root);
  row('Root SHA-256', info.rootSha256);
  row('Chain', info.chain.join(' → '));
  row('Measurements', `${info.pcrs.map((p) => `PCR${p.index}`).join(', ')} matched, from ${info.measurements}`);
  for (const p of info.pcrs) row(`PCR${p.index}`, p.value);
  row('Document time', new Date(info.timestamp).toISOString());
  row('Checked at', new Date(info.checkedAt).toISOString());
  row('Enclave key', client.enclave ? [...client.enclave.pub].map((b) => b.toString(16).padStart(2, '0')).join('') : '');
}

function attestationFailed(e) {
  setBadge('refused', 'Enclave refused');
  $('attest-summary').textContent = e instanceof AttestationError
    ? `Refused (${e.check}): ${e.reason}. The page sends nothing to an enclave it cannot verify.`
    : `Could not check the enclave: ${e.message}`;
  $('attest-details').replaceChildren();
}

async function attest() {
  try {
    showAttestation(await client.attest());
    return true;
  } catch (e) {
    attestationFailed(e);
    showError(e);
    return false;
  }
}

// ---- screens and flows ----

async function afterSignIn(token) {
  const who = await client.signIn(token);
  sessionStorage.setItem(TOKEN_KEY, token);
  if (who.context === 'organization') {
    throw new ChatError('This token is in an organization context; the page chats in your personal context only for now (use the veil CLI for organization chats).');
  }
  if (!who.hasKeys) return show('create');
  if (await client.unlockRemembered()) return enterChat();
  return show('unlock');
}

async function enterChat() {
  show('chat');
  setBadge('none', 'Enclave not verified yet');
  await Promise.all([refreshSessions(), attest()]);
}

function newChat() {
  if (state.controller) return;
  state.sessionId = null;
  state.history = [];
  $('messages').replaceChildren();
  markCurrent();
  $('message-input').focus();
}

async function refreshSessions() {
  let list;
  try {
    list = await client.sessions();
  } catch (e) {
    showError(e);
    return;
  }
  const ul = $('session-list');
  ul.replaceChildren();
  for (const s of list) {
    const li = el('li');
    const open = el('button', { type: 'button', class: 'open', 'data-test': 'session-item', 'data-session': s.id });
    open.append(document.createTextNode(s.name || 'New Chat'),
      el('small', {}, (s.updated_at || s.created_at || '').replace('T', ' ').slice(0, 16)));
    open.addEventListener('click', () => openSession(s.id));
    const del = el('button', { type: 'button', class: 'delete', 'data-test': 'delete-session',
      'aria-label': `Delete the chat from ${(s.created_at || '').slice(0, 16)}` }, 'Delete');
    del.addEventListener('click', () => deleteSession(s.id, del));
    li.append(open, del);
    ul.append(li);
  }
  markCurrent();
}

function markCurrent() {
  for (const b of document.querySelectorAll('#session-list .open')) {
    b.setAttribute('aria-current', b.dataset.session === state.sessionId ? 'true' : 'false');
  }
}

function addMessage(role, text, mark) {
  const li = el('li', { class: `msg ${role}`, 'data-test': `${role}-message` });
  const body = el('span', { class: 'text' }, text === null ? '(this message does not open with your key)' : text);
  li.append(body);
  if (mark) {
    const [cls, label] = MARKS[mark];
    li.append(el('span', { class: `mark ${cls}`, 'data-test': 'history-mark', 'data-mark': mark }, label));
  }
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

async function openSession(id) {
  if (state.controller) return;
  await busy('Opening the chat (decrypting it here)…', async () => {
    const { items, history } = await client.openSession(id);
    state.sessionId = id;
    state.history = history;
    $('messages').replaceChildren();
    items.forEach((m, i) => {
      // one mark per exchange, on its answer (or on a message left without its pair)
      const last = m.role === 'assistant' || !items[i + 1] || items[i + 1].role !== 'assistant';
      addMessage(m.role, m.text, last ? m.mark : null);
    });
    markCurrent();
  });
}

async function deleteSession(id, button) {
  if (!button.classList.contains('confirm')) { // a second click confirms
    button.classList.add('confirm');
    button.textContent = 'Delete?';
    setTimeout(() => { button.classList.remove('confirm'); button.textContent = 'Delete'; }, 5000);
    return;
  }
  await busy('Deleting the chat…', async () => {
    await client.deleteSession(id);
    if (state.sessionId === id) newChat();
    await refreshSessions();
  });
}

async function send() {
  const input = $('message-input');
  const message = input.value;
  if (!message.trim() || state.controller) return;
  clearError();
  if (!client.enclave && !(await attest())) return;
  input.value = '';
  addMessage('user', message);
  const answer = addMessage('assistant', '');
  answer.dataset.state = 'streaming';
  const text = answer.querySelector('.text');
  let thinking = null;
  state.controller = new AbortController();
  $('send').hidden = true;
  $('stop').hidden = false;
  try {
    const r = await client.send({
      sessionId: state.sessionId, history: state.history, message, model: $('model').value,
      signal: state.controller.signal,
      on: {
        session: (id) => { state.sessionId = id; },
        attested: (info) => showAttestation(info),
        text: (s) => { text.textContent += s; answer.scrollIntoView({ block: 'end' }); },
        thinking: (s) => {
          if (!thinking) { thinking = el('span', { class: 'thinking' }); answer.prepend(thinking); }
          thinking.textContent += s;
        },
      },
    });
    state.history = state.history.concat([{ role: 'user', content: message }, { role: 'assistant', content: r.text }]);
    answer.dataset.state = 'done';
    if (!r.tagged) showError('The answer was stored, but its history tag could not be saved.');
    await refreshSessions();
  } catch (e) {
    answer.dataset.state = 'failed';
    if (!text.textContent) text.textContent = '(no answer)';
    // nothing stored (a refused key included): the message stays, to send again
    if ((e instanceof ChatError && !e.stored) || e instanceof AttestationError) input.value = input.value || message;
    if (e instanceof AttestationError) attestationFailed(e);
    showError(e);
  } finally {
    state.controller = null;
    $('send').hidden = false;
    $('stop').hidden = true;
    input.focus();
  }
}

async function loadModels() {
  const models = await api.get('/chat/models');
  const sel = $('model');
  sel.replaceChildren(...models.map((m) => el('option', { value: m.id }, m.name)));
  const saved = localStorage.getItem(MODEL_KEY);
  if (saved && models.some((m) => m.id === saved)) sel.value = saved;
}

function confirmCode(prepared, note, commit) {
  state.pending = { prepared, commit };
  $('recovery-code').textContent = prepared.recovery;
  $('code-note').textContent = note;
  $('code-saved').checked = false;
  show('code');
}

// ---- wiring ----

function wire() {
  $('error-close').addEventListener('click', clearError);
  $('badge').addEventListener('click', () => {
    const p = $('attest-panel');
    p.hidden = !p.hidden;
    $('badge').setAttribute('aria-expanded', String(!p.hidden));
  });
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    busy('Signing in…', () => afterSignIn(token), ev.target);
  });
  $('create-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = $('create-passcode').value;
    if (p !== $('create-repeat').value) return showError('The passcodes differ.');
    const remember = $('create-remember').checked;
    return busy('Creating your keys (Argon2id, a few seconds)…', async () => {
      const prepared = await client.prepareKeys(p);
      $('create-passcode').value = '';
      $('create-repeat').value = '';
      confirmCode(prepared, 'Your keys are uploaded once you continue.', () => client.commitKeys(prepared, remember));
    }, ev.target);
  });
  $('code-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!$('code-saved').checked) return showError('Confirm that you saved the recovery code.');
    const { commit } = state.pending;
    return busy('Saving your keys…', async () => {
      await commit();
      state.pending = null;
      $('recovery-code').textContent = '';
      await enterChat();
    }, ev.target);
  });
  $('unlock-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = $('unlock-passcode').value;
    const remember = $('unlock-remember').checked;
    busy('Unlocking (Argon2id, a few seconds)…', async () => {
      await client.unlock(p, remember);
      $('unlock-passcode').value = '';
      await enterChat();
    }, ev.target);
  });
  $('to-recover').addEventListener('click', () => { clearError(); show('recover'); });
  $('to-unlock').addEventListener('click', () => { clearError(); show('unlock'); });
  $('recover-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const p = $('recover-passcode').value;
    if (p !== $('recover-repeat').value) return showError('The passcodes differ.');
    return busy('Recovering your key (Argon2id, a few seconds)…', async () => {
      const prepared = await client.prepareRecovery($('recover-code').value, p);
      for (const id of ['recover-code', 'recover-passcode', 'recover-repeat']) $(id).value = '';
      confirmCode(prepared, 'Nothing changes on the server until you continue: then your new passcode and this new code replace the old ones.',
        () => client.commitRecovery(prepared, false));
    }, ev.target);
  });
  $('lock').addEventListener('click', async () => {
    if (state.controller) state.controller.abort();
    await client.lock();
    newChat();
    show('unlock');
  });
  $('signout').addEventListener('click', async () => {
    if (state.controller) state.controller.abort();
    sessionStorage.removeItem(TOKEN_KEY);
    client.signOut();
    newChat();
    show('signin');
  });
  $('new-chat').addEventListener('click', newChat);
  $('model').addEventListener('change', () => localStorage.setItem(MODEL_KEY, $('model').value));
  $('composer').addEventListener('submit', (ev) => { ev.preventDefault(); send(); });
  $('message-input').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      send();
    }
  });
  $('stop').addEventListener('click', () => { if (state.controller) state.controller.abort(); });
}

// A token in the URL fragment (make run's link) is taken, then removed from the
// address bar and history; the tab keeps it in sessionStorage (a reload stays signed in).
function tokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(window.location.hash);
  if (!m) return null;
  history.replaceState(null, '', window.location.pathname + window.location.search);
  return decodeURIComponent(m[1]);
}

// A new link opened in this tab (only the fragment changes, so the page stays): sign
// in with its token.
function onHashChange() {
  const token = tokenFromFragment();
  if (!token || state.controller) return;
  client.signOut();
  newChat();
  show('loading');
  busy('Signing in…', () => afterSignIn(token).then(() => true)).then((ok) => { if (!ok) show('signin'); });
}

async function start() {
  wire();
  window.addEventListener('hashchange', onHashChange);
  const fragment = tokenFromFragment();
  try {
    await client.loadConfig();
    await loadModels();
  } catch (e) {
    showError(e);
    return;
  }
  const token = fragment || sessionStorage.getItem(TOKEN_KEY);
  if (!token) return show('signin');
  show('loading');
  const ok = await busy('Signing in…', () => afterSignIn(token).then(() => true));
  if (!ok) {
    sessionStorage.removeItem(TOKEN_KEY);
    show('signin');
  }
  return undefined;
}

start();

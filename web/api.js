// api — veild's HTTP API as the page uses it: JSON calls with the bearer token, a
// clear message for every failure the API can return, and the chat stream's SSE
// events read from a fetch body (so a stop aborts the request, and veild cancels the
// enclave's work). Never logs a token, a key or a message. Same-origin cookies go
// along: veild reads none (the token is the only credential), but a load balancer's
// stickiness cookie keeps the page on one instance, and so on one enclave.

export class ApiError extends Error {
  constructor(status, message, detail, body = null) {
    super(message);
    this.status = status;
    this.detail = detail;
    this.body = body; // the parsed JSON answer (the chat's 409 names another enclave key)
  }
}

const PREFIX = '/api/v1';

// The text a person is shown for a failed call: the server's own detail where it has
// one (always a fixed text, never upstream detail), else what the status means.
export function errorText(status, body, headers) {
  const detail = body && body.detail;
  if (status === 422 && Array.isArray(detail) && detail[0]) {
    const d = detail[0];
    return `The server refused the request (${(d.loc || []).join('.')}): ${d.msg}`;
  }
  const text = typeof detail === 'string' ? detail : '';
  const retry = headers && headers.get('Retry-After');
  switch (status) {
    case 401: return 'Your session token is invalid or expired: sign in again.';
    case 403: return text === 'Not authenticated' || text === 'Invalid authentication credentials'
      ? 'You are not signed in: sign in again.' : (text || 'Not allowed.');
    case 404: return text || 'Not found.';
    case 408: return 'The request took too long to send: retry.';
    case 413: return text || 'The request is too large: start a new chat or send less.';
    case 429: return `${text || 'Too many requests'}${retry ? ` (retry in ${retry} s)` : ''}.`;
    case 500: return text ? `Server error: ${text}.` : 'Server error.';
    case 502: case 503: case 504: return text || 'The service is unavailable: retry shortly.';
    default: return text || `The server answered ${status}.`;
  }
}

export class Api {
  constructor(base = '') {
    this.base = base;
    this.token = null;
  }

  headers(json) {
    const h = {};
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  async call(method, path, body, opts = {}) {
    let r;
    try {
      r = await fetch(this.base + (path.startsWith('/app/') ? path : PREFIX + path), {
        method, headers: this.headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store', credentials: 'same-origin', signal: opts.signal,
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Cannot reach the veil server: check your connection, then retry.');
    }
    const text = await r.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (e) { parsed = null; }
    if (!r.ok) throw new ApiError(r.status, errorText(r.status, parsed, r.headers), parsed && parsed.detail);
    if (text && parsed === null) throw new ApiError(r.status, 'The server sent something that is not JSON.');
    return parsed;
  }

  get(path, opts) { return this.call('GET', path, undefined, opts); }
  post(path, body) { return this.call('POST', path, body === undefined ? {} : body); }
  put(path, body) { return this.call('PUT', path, body); }
  del(path) { return this.call('DELETE', path); }

  // POST the chat and call onEvent(event) for each SSE event, in order, awaiting each
  // (decryption keeps pace with the stream). Resolves when the stream ends.
  async stream(body, onEvent, signal) {
    let r;
    try {
      r = await fetch(`${this.base}${PREFIX}/chat/encrypted/stream`, {
        method: 'POST', headers: { ...this.headers(true), Accept: 'text/event-stream' },
        body: JSON.stringify(body), cache: 'no-store', credentials: 'same-origin', signal,
      });
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      throw new ApiError(0, 'Cannot reach the veil server: check your connection, then retry.');
    }
    if (!r.ok) {
      let parsed = null;
      try { parsed = await r.json(); } catch (e) { parsed = null; }
      throw new ApiError(r.status, errorText(r.status, parsed, r.headers), parsed && parsed.detail, parsed);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ended = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) { ended = true; break; }
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of block.split('\n')) {
            if (!line.startsWith('data: ')) continue; // ": keep-alive" comments
            let ev;
            try { ev = JSON.parse(line.slice(6)); } catch (e) { throw new ApiError(200, 'The server sent a malformed event.'); }
            await onEvent(ev);
          }
        }
      }
    } catch (e) {
      if (e.name === 'AbortError' || e instanceof ApiError) throw e;
      if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
      if (e.name === 'TypeError') throw new ApiError(0, 'The connection broke while the answer was streaming.');
      throw e;
    } finally {
      // refused or failed mid-stream: close the request, so veild cancels the enclave's work
      if (!ended) reader.cancel().catch(() => {});
      else reader.releaseLock();
    }
  }
}

// docs — renders /openapi.json as a readable page (served at /docs; nothing from
// another origin). Text from the document is set as textContent only.

const el = (tag, attrs = {}, text) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

let components = {};

function refName(ref) {
  return ref.split('/').pop();
}

// A short type text: "string (64 hex)", "EncryptedPayload", "array of Session", ...
function typeText(s) {
  if (!s) return 'any';
  if (s.$ref) return refName(s.$ref);
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.anyOf) return s.anyOf.map(typeText).join(' | ');
  if (s.oneOf) return 'one of the events below';
  if (s.allOf) return s.allOf.map(typeText).join(' & ');
  if (s.type === 'array') return `array of ${typeText(s.items)}`;
  if (s.type === 'string' && s.pattern) {
    const m = /^\^\[0-9a-fA-F\]\{(\d+)\}\$$/.exec(s.pattern);
    return m ? `hex (${m[1] / 2} bytes)` : `string (${s.pattern})`;
  }
  return s.type || 'object';
}

function fields(s) {
  if (s && s.$ref) return el('a', { class: 'type', href: `#schema-${refName(s.$ref)}` }, refName(s.$ref));
  if (!s || s.type !== 'object' || !s.properties) {
    const span = el('span', { class: 'type' }, typeText(s));
    if (s && s.oneOf) {
      const ul = el('ul', { class: 'fields' });
      for (const v of s.oneOf) {
        const li = el('li');
        li.append(el('span', {}, `${v.description || ''}: `), fields(v.allOf ? v.allOf[v.allOf.length - 1] : v));
        ul.append(li);
      }
      const d = el('div');
      d.append(span, ul);
      return d;
    }
    return span;
  }
  const ul = el('ul', { class: 'fields' });
  const req = new Set(s.required || []);
  for (const [name, p] of Object.entries(s.properties)) {
    const li = el('li');
    li.append(el('code', {}, name), ' ', p.$ref ? fields(p) : el('span', { class: 'type' }, typeText(p)),
      el('span', { class: 'type' }, req.has(name) ? '' : ' (optional)'));
    if (p.description) li.append(el('span', {}, ` — ${p.description}`));
    if (p.type === 'object' && p.properties) li.append(fields(p));
    ul.append(li);
  }
  return ul;
}

function content(c) {
  if (!c) return null;
  const d = el('div');
  for (const [type, v] of Object.entries(c)) {
    d.append(el('div', { class: 'type' }, type), fields(v.schema));
  }
  return d;
}

function render(doc) {
  components = doc.components.schemas;
  document.getElementById('intro').textContent = doc.info.description;
  const toc = document.getElementById('toc');
  const ops = document.getElementById('ops');
  const byTag = new Map();
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = (op.tags || ['other'])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push({ path, method, op });
    }
  }
  for (const [tag, list] of byTag) {
    ops.append(el('h2', { id: `tag-${tag}` }, tag));
    for (const { path, method, op } of list) {
      const id = `${method}-${path}`.replace(/[^a-zA-Z0-9]+/g, '-');
      const sec = el('section', { class: 'op', id });
      const h = el('h3');
      const auth = op.security && op.security.length;
      h.append(el('span', { class: `method ${method}` }, method), el('span', { class: 'path' }, path),
        el('span', { class: auth ? 'auth' : 'open' }, auth ? 'token' : 'no token'), el('span', { class: 'summary' }, op.summary));
      sec.append(h);
      if (op.description) sec.append(el('p', {}, op.description));
      if (op.parameters) {
        const dl = el('dl');
        for (const p of op.parameters) dl.append(el('dt', {}, `${p.name} (${p.in})`), el('dd', {}, `${typeText(p.schema)}${p.description ? ` — ${p.description}` : ''}`));
        sec.append(dl);
      }
      if (op.requestBody) {
        sec.append(el('h4', {}, 'Request body'));
        sec.append(content(op.requestBody.content));
      }
      const dl = el('dl');
      for (const [code, r] of Object.entries(op.responses)) {
        const dd = el('dd');
        dd.append(el('span', {}, r.description));
        const c = content(r.content);
        if (c) dd.append(c);
        dl.append(el('dt', {}, code), dd);
      }
      sec.append(el('h4', {}, 'Responses'), dl);
      ops.append(sec);
      const a = el('a', { href: `#${id}` }, `${method.toUpperCase()} ${path}`);
      toc.append(a);
    }
  }
  const list = document.getElementById('schema-list');
  for (const [name, s] of Object.entries(components)) {
    const sec = el('section', { class: 'op', id: `schema-${name}` });
    sec.append(el('h3', {}, name));
    if (s.description) sec.append(el('p', {}, s.description));
    sec.append(fields(s));
    list.append(sec);
  }
}

fetch('/openapi.json', { cache: 'no-store' })
  .then((r) => { if (!r.ok) throw new Error(`/openapi.json answered ${r.status}`); return r.json(); })
  .then(render)
  .catch((e) => { document.getElementById('intro').textContent = `Cannot load the API description: ${e.message}`; });

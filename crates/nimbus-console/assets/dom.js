// DOM helpers. Everything the console shows is built from nodes and `textContent`: API data
// (event payloads, log lines, KV values) is attacker-controlled and never parsed as HTML.

/**
 * Creates an element. `attrs` keys: `class`, `text` (textContent), `on*` (event listeners,
 * e.g. `onclick`), `dataset` (object), anything else becomes an attribute (skipped when
 * null/false; `true` sets it empty). Children are nodes or strings (text nodes).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'text') el.textContent = String(value);
    else if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Appends nodes or strings (flattening arrays, skipping null). */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replaces the children of `parent`. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, children);
}

/** A labelled form field: `<label for=id>text</label>` + the control. */
export function field(label, control) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return h('div', { class: 'field' }, h('label', { for: control.id, text: label }), control);
}

/** A table with a header row; `rows` are arrays of cells (nodes or strings). */
export function table(caption, headers, rows) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      h('caption', { text: caption }),
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))),
    ),
  );
}

/** An alert box with the API's message (role=alert: announced at once). */
export function errorBox(err) {
  const box = h('div', { class: 'error', role: 'alert' }, h('strong', { text: `Error${err.status ? ` ${err.status}` : ''}: ` }), err.message || String(err));
  if (err.hint) box.append(h('div', { class: 'hint', text: err.hint }));
  return box;
}

/** Seconds since the epoch → local date and time. */
export function fromSecs(s) {
  return s ? new Date(s * 1000).toLocaleString() : '—';
}

/** Milliseconds since the epoch → local date and time. */
export function fromMs(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

/** A duration in milliseconds, readable. */
export function ms(value) {
  if (value === null || value === undefined) return '—';
  if (value >= 1000) return `${(value / 1000).toFixed(2)} s`;
  return `${value < 10 ? value.toFixed(2) : value.toFixed(0)} ms`;
}

/** Bytes, readable. */
export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A link to a console route (a real `<a href="#/...">`, so keyboards and middle clicks work). */
export function link(route, text) {
  return h('a', { href: `#${route}`, text });
}

/** A page heading, focusable so route changes move focus to it (screen readers hear the page). */
export function heading(text) {
  return h('h1', { tabindex: '-1', id: 'page-title', text });
}

/** Says something to screen readers (and shows it in the status bar). */
export function announce(text) {
  document.getElementById('status').textContent = text;
}

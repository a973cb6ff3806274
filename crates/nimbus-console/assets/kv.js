// The KV bucket browser: list an app's keys by prefix, read a value, write and delete keys.
// Actor state lives in the app's `actors` bucket and workflow journals in `workflows`; both are
// readable here and read-only (the API refuses writes to them).
import { allows, getJSON, qs, request, seg, servingManifest } from './api.js';
import { announce, errorBox, field, h, heading, replace } from './dom.js';

const RESERVED = ['actors', 'workflows'];

/** Buckets the serving revision's manifest grants (`kv = [...]`), plus the platform's own. */
async function knownBuckets(app) {
  const found = new Set(RESERVED);
  const manifest = await servingManifest(app);
  for (const m of (manifest || '').matchAll(/\bkv\s*=\s*\[([^\]]*)\]/g)) {
    for (const b of m[1].matchAll(/"([^"]+)"/g)) found.add(b[1]);
  }
  return [...found].sort();
}

/** Decodes a value as UTF-8 text, or describes it as bytes. */
function showValue(buf) {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    const hex = [...new Uint8Array(buf.slice(0, 256))].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    return `(${buf.byteLength} bytes, not UTF-8) ${hex}${buf.byteLength > 256 ? ' …' : ''}`;
  }
}

/** `#/kv?bucket=&prefix=`: keys and values of a bucket. */
export async function render(view, { app, query }) {
  const buckets = await knownBuckets(app);
  const bucket = h('input', { id: 'kv-bucket', type: 'text', list: 'kv-buckets', value: query.get('bucket') || buckets.find((b) => !RESERVED.includes(b)) || 'actors', required: true });
  const prefix = h('input', { id: 'kv-prefix', type: 'text', value: query.get('prefix') || '' });
  const form = h('form', { class: 'toolbar', id: 'kv-form' },
    field('Bucket', bucket), h('datalist', { id: 'kv-buckets' }, buckets.map((b) => h('option', { value: b }))),
    field('Key prefix', prefix), h('button', { type: 'submit', text: 'List keys' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/kv${qs({ bucket: bucket.value.trim(), prefix: prefix.value })}`;
  });
  const keys = h('ul', { class: 'keys', id: 'kv-keys', 'aria-label': 'Keys' });
  const value = h('section', { id: 'kv-value', 'aria-live': 'polite' });
  const problem = h('div');
  const name = bucket.value.trim();
  const base = `/v1/apps/${seg(app)}/kv/${seg(name)}/keys`;
  const writable = allows('data-write') && !RESERVED.includes(name);

  const open = async (key) => {
    try {
      const resp = await request('GET', `${base}/${seg(key)}`);
      const text = showValue(await resp.arrayBuffer());
      replace(value, h('h2', { text: `${name} / ${key}` }),
        h('p', { class: 'meta', text: `Revision ${resp.headers.get('x-nimbus-kv-revision') || '?'}` }),
        h('pre', { class: 'value', text }),
        writable ? h('button', {
          type: 'button', class: 'danger', text: `Delete ${key}`,
          onclick: async () => {
            try {
              await request('DELETE', `${base}/${seg(key)}`);
              announce(`Deleted ${key}.`);
              location.hash = `#/kv${qs({ bucket: name, prefix: prefix.value, t: Date.now() })}`;
            } catch (e) { value.append(errorBox(e)); }
          },
        }) : null);
    } catch (e) {
      replace(value, errorBox(e));
    }
  };

  let cursor = null;
  const more = h('button', { type: 'button', hidden: true, text: 'More keys' });
  const list = async () => {
    const page = await getJSON(`${base}${qs({ prefix: prefix.value, cursor, limit: 200 })}`);
    page.keys.forEach((k) => keys.append(h('li', {}, h('button', { type: 'button', class: 'link', text: k, onclick: () => open(k) }))));
    cursor = page.cursor ?? null;
    more.hidden = !cursor;
    if (!keys.childElementCount) keys.append(h('li', { text: 'No keys.' }));
  };
  more.addEventListener('click', () => list().catch((e) => replace(problem, errorBox(e))));

  replace(view, heading(`KV of ${app}`), form,
    RESERVED.includes(name)
      ? h('p', { class: 'hint', text: name === 'actors' ? 'Actor state: one key per actor, written only by the actors themselves (read-only here).' : 'Workflow journals (read-only here; see Workflows for the runs).' })
      : null,
    writable ? writeForm(base, name, prefix) : null,
    problem, h('div', { class: 'split' }, h('section', { 'aria-label': `Keys of ${name}` }, keys, more), value));
  await list();
}

function writeForm(base, bucket, prefix) {
  const key = h('input', { id: 'kv-key', type: 'text', required: true });
  const val = h('textarea', { id: 'kv-new-value', rows: '3' });
  const result = h('div', { role: 'status', 'aria-live': 'polite' });
  const form = h('form', { class: 'toolbar', id: 'kv-write' }, field('Key', key), field('Value', val), h('button', { type: 'submit', text: 'Set key' }), result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await (await request('PUT', `${base}/${seg(key.value)}`, { body: val.value, contentType: 'application/octet-stream' })).json();
      announce(`Set ${key.value} (revision ${r.revision}).`);
      location.hash = `#/kv${qs({ bucket, prefix: prefix.value, t: Date.now() })}`;
    } catch (e) {
      replace(result, errorBox(e));
    }
  });
  return form;
}

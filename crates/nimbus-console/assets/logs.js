// Logs: the newest records of the log store, then new ones as they are written (the API's
// `follow` NDJSON stream), filtered by app, component, trace id and level.
import { qs, request } from './api.js';
import { errorBox, field, h, heading, replace } from './dom.js';

const MAX_LINES = 1000;
const LEVELS = { info: 0, warn: 1, error: 2 };

/** `#/logs?component=&trace=&level=`: the filters and the tail. */
export async function render(view, { app, query }) {
  const appInput = h('input', { id: 'log-app', type: 'text', value: query.has('app') ? query.get('app') : app });
  const component = h('input', { id: 'log-component', type: 'text', value: query.get('component') || '' });
  const trace = h('input', { id: 'log-trace', type: 'text', value: query.get('trace') || '', spellcheck: 'false', autocomplete: 'off' });
  const level = h('select', { id: 'log-level' }, [['info', 'info and above'], ['warn', 'warn and above'], ['error', 'error only']].map(([v, t]) => h('option', { value: v, text: t })));
  level.value = query.get('level') || 'info';
  const toggle = h('button', { type: 'button', id: 'log-toggle', 'aria-pressed': 'false', text: 'Follow' });
  const count = h('p', { class: 'meta', id: 'log-count', role: 'status', 'aria-live': 'polite' });
  const lines = h('ol', { class: 'log', id: 'log-lines', 'aria-label': 'Log records, oldest first' });
  const problem = h('div');
  const form = h('form', { class: 'toolbar', id: 'log-filters' },
    field('App', appInput), field('Component', component), field('Trace id', trace), field('Level', level),
    h('button', { type: 'submit', text: 'Apply filters' }), toggle);
  replace(view, heading('Logs'), form, count, problem, lines);

  let controller = null;
  let shown = 0;
  const stop = () => {
    controller?.abort();
    controller = null;
    toggle.textContent = 'Follow';
    toggle.setAttribute('aria-pressed', 'false');
  };
  const start = () => {
    stop();
    replace(lines);
    replace(problem);
    shown = 0;
    controller = new AbortController();
    toggle.textContent = 'Stop following';
    toggle.setAttribute('aria-pressed', 'true');
    const params = { app: appInput.value.trim(), component: component.value.trim(), trace: trace.value.trim().toLowerCase(), limit: 200, follow: 'true' };
    const minLevel = LEVELS[level.value] ?? 0;
    follow(`/v1/logs${qs(params)}`, controller.signal, (record) => {
      if ((LEVELS[record.level] ?? 0) < minLevel) return;
      lines.append(line(record));
      shown += 1;
      while (lines.childElementCount > MAX_LINES) lines.firstElementChild.remove();
      count.textContent = `Following: ${shown} record(s).`;
      lines.lastElementChild.scrollIntoView({ block: 'nearest' });
    }).then(() => {
      count.textContent = `${shown} record(s); the stream ended.`;
      stop();
    }, (e) => {
      if (e.name === 'AbortError') return;
      replace(problem, errorBox(e));
      stop();
    });
    count.textContent = 'Following: 0 record(s).';
  };
  form.addEventListener('submit', (ev) => { ev.preventDefault(); start(); });
  toggle.addEventListener('click', () => (controller ? stop() : start()));
  start();
  return stop;
}

/** Reads an NDJSON response line by line until it ends or `signal` aborts. */
async function follow(path, signal, onRecord) {
  const resp = await request('GET', path, { signal });
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffered += value;
    let nl;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const text = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (text) onRecord(JSON.parse(text));
    }
  }
}

function line(r) {
  const time = new Date(r.time_unix_nano / 1e6);
  return h('li', { class: `level-${r.level}`, dataset: { level: r.level, component: r.component } },
    h('time', { datetime: time.toISOString(), text: time.toLocaleTimeString() }), ' ',
    h('span', { class: 'level', text: r.level.toUpperCase() }), ' ',
    h('span', { class: 'component', text: r.app ? `${r.app}/${r.component}` : r.component }), ' ',
    r.trace_id ? h('a', { href: `#/traces/${r.trace_id}`, class: 'trace', text: r.trace_id.slice(0, 8), title: `trace ${r.trace_id}` }) : null, ' ',
    h('span', { class: 'message', text: r.message }));
}

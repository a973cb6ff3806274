// The trace explorer: search the trace store (route, status, slow, errors, trace id) and show
// one trace as a waterfall of its spans (functions, services, bus deliveries, KV, actor calls).
import { getJSON, qs, seg } from './api.js';
import { field, h, heading, link, ms, replace, table } from './dom.js';
import { bar } from './plot.js';

/** `#/traces?route=&status=&slow_ms=&errors=1&limit=`: the search form and its results. */
export async function renderSearch(view, { query }) {
  const route = h('input', { id: 'trace-route', type: 'text', placeholder: '/kitchen/...', value: query.get('route') || '' });
  const status = h('select', { id: 'trace-status' }, [['', 'any'], ['2', '2xx'], ['3', '3xx'], ['4', '4xx'], ['5', '5xx']].map(([v, t]) => h('option', { value: v, text: t })));
  status.value = query.get('status') || '';
  const slow = h('input', { id: 'trace-slow', type: 'number', min: '0', step: '1', inputmode: 'numeric', value: query.get('slow_ms') || '' });
  const errors = h('input', { id: 'trace-errors', type: 'checkbox', checked: query.get('errors') === '1' });
  const limit = h('input', { id: 'trace-limit', type: 'number', min: '1', max: '1000', value: query.get('limit') || '50' });
  const id = h('input', { id: 'trace-id', type: 'text', placeholder: '32 hex digits', autocomplete: 'off', spellcheck: 'false' });

  const search = h('form', { class: 'toolbar', id: 'trace-search', role: 'search' },
    field('Route', route), field('Status', status), field('Slower than (ms)', slow),
    h('div', { class: 'field checkbox' }, errors, h('label', { for: errors.id, text: 'Only with errors' })),
    field('How many', limit),
    h('button', { type: 'submit', text: 'Search' }));
  search.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/traces${qs({ route: route.value.trim(), status: status.value, slow_ms: slow.value, errors: errors.checked ? '1' : '', limit: limit.value })}`;
  });
  const open = h('form', { class: 'toolbar', id: 'trace-open' }, field('Trace id', id), h('button', { type: 'submit', text: 'Open trace' }));
  open.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (id.value.trim()) location.hash = `#/traces/${encodeURIComponent(id.value.trim().toLowerCase())}`;
  });
  const results = h('div', { id: 'trace-results', 'aria-live': 'polite' });
  replace(view, heading('Traces'), search, open, results);

  const list = await getJSON(`/v1/traces${qs({ route: query.get('route'), slow_ms: query.get('slow_ms'), errors: query.get('errors') === '1' ? 'true' : '', limit: query.get('limit') || 50 })}`);
  const wanted = query.get('status');
  const traces = list.traces.filter((t) => !wanted || String(t.status_code ?? '').startsWith(wanted));
  replace(results, traces.length === 0
    ? h('p', { text: 'No stored trace matches.' })
    : table(`${traces.length} trace(s), newest first`, ['Trace', 'Name', 'Route', 'Component', 'Status', 'Duration', 'Spans', 'Started'], traces.map((t) => [
      link(`/traces/${t.trace_id}`, t.trace_id.slice(0, 12)),
      t.name,
      t.route || '—',
      t.component || '—',
      h('span', { class: t.error ? 'bad' : '', text: `${t.status_code ?? '—'}${t.error ? ' (error)' : ''}` }),
      ms(t.duration_ns / 1e6),
      String(t.spans),
      new Date(t.start_unix_nano / 1e6).toLocaleString(),
    ])));
}

/** Orders spans depth first under their parents; spans whose parent is elsewhere are roots. */
function tree(spans) {
  const ids = new Set(spans.map((s) => s.span_id));
  const children = new Map();
  for (const s of spans) {
    const parent = s.parent_span_id && ids.has(s.parent_span_id) ? s.parent_span_id : '';
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(s);
  }
  const out = [];
  const walk = (parent, depth) => {
    for (const s of (children.get(parent) || []).sort((a, b) => a.start_unix_nano - b.start_unix_nano)) {
      out.push({ span: s, depth });
      walk(s.span_id, depth + 1);
    }
  };
  walk('', 0);
  return out;
}

/** What a span was: the component, service, topic, bucket or actor its attributes name. */
function what(span) {
  const a = span.attributes || {};
  const keys = ['nimbus.component', 'nimbus.service', 'messaging.destination.name', 'nimbus.kv.bucket', 'nimbus.actor.type', 'http.route'];
  return keys.filter((k) => a[k] !== undefined).map((k) => `${k.split('.').pop()}=${a[k]}`).join(' ');
}

/** `#/traces/ID`: the waterfall. */
export async function renderTrace(view, { id }) {
  const detail = await getJSON(`/v1/traces/${seg(id)}`);
  const spans = detail.spans;
  const start = Math.min(...spans.map((s) => s.start_unix_nano));
  const end = Math.max(...spans.map((s) => s.end_unix_nano));
  const total = Math.max(1, end - start);
  const rows = tree(spans).map(({ span, depth }) => {
    const dur = span.end_unix_nano - span.start_unix_nano;
    const error = span.status === 'error';
    const attrs = Object.entries(span.attributes || {}).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]);
    return h('li', { class: `span depth-${Math.min(depth, 8)}${error ? ' error' : ''}`, dataset: { kind: span.kind, depth: String(depth) } },
      h('details', {},
        h('summary', {},
          h('span', { class: 'span-name' }, h('span', { class: 'indent', 'aria-hidden': 'true', text: '· '.repeat(depth) }), span.name,
            h('span', { class: 'span-what', text: ` ${span.kind}${what(span) ? ` · ${what(span)}` : ''}` })),
          bar((span.start_unix_nano - start) / total, dur / total, error),
          h('span', { class: 'span-dur', text: `${ms(dur / 1e6)}${error ? ' ✗' : ''}` })),
        span.status_message ? h('p', { class: 'bad', text: span.status_message }) : null,
        table(`Attributes of ${span.name}`, ['Attribute', 'Value'], [['span id', span.span_id], ['status', span.status], ...attrs])));
  });
  replace(view,
    heading(`Trace ${detail.trace_id.slice(0, 12)}…`),
    h('p', { class: 'meta' }, h('code', { text: detail.trace_id }), ` · ${spans.length} span(s) · ${ms(total / 1e6)} · `, link('/traces', 'back to the search'), ' · ', link(`/logs?trace=${detail.trace_id}`, 'its logs')),
    h('ol', { class: 'waterfall', id: 'waterfall', 'aria-label': 'Spans by start time, children under their parent' }, rows));
}

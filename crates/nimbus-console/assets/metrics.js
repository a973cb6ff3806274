// Live plots per component from `GET /v1/metrics/series`: request rate, latency percentiles,
// error rate, cold vs warm starts, admission queue depth, instances and memory. Polls while the
// page is open; the time range picker sets `range_s`.
import { getJSON, qs } from './api.js';
import { announce, bytes, errorBox, field, h, heading, replace } from './dom.js';
import { linePlot } from './plot.js';

// The API keeps an hour of history (range_s at most 3600).
const RANGES = [['1 minute', 60], ['5 minutes', 300], ['15 minutes', 900], ['1 hour', 3600]];
const POLL_MS = 5000;

const num = (digits) => (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(digits));
const pct = (v) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
const msFmt = (v) => `${num(1)(v)} ms`;

/** Which plots a component gets: key, title, the point fields drawn, how values read, counts. */
const PLOTS = [
  ['rps', 'Request rate (req/s)', [['req/s', 'rps']], num(2), false],
  ['latency', 'Latency', [['p50', 'p50_ms'], ['p95', 'p95_ms'], ['p99', 'p99_ms']], msFmt, false],
  ['errors', 'Error rate', [['errors', 'error_rate']], pct, false],
  ['starts', 'Cold vs warm starts (per step)', [['cold', 'cold'], ['warm', 'warm']], num(0), true],
  ['queue', 'Admission queue depth', [['queued', 'queue_depth']], num(0), true],
  ['instances', 'Instances', [['instances', 'instances']], num(0), true],
  ['memory', 'Memory', [['memory', 'memory_bytes']], bytes, true],
];

/** `#/metrics`: the plots of the current app, every component or one. */
export async function render(view, { app, query }) {
  const range = h('select', { id: 'range' }, RANGES.map(([label, s]) => h('option', { value: String(s), text: label })));
  range.value = query.get('range_s') || '300';
  const component = h('select', { id: 'component' }, h('option', { value: '', text: 'every component' }));
  // Not a live region: it changes every few seconds. New components and errors are announced.
  const updated = h('p', { class: 'meta', id: 'metrics-updated' });
  const plots = h('div', { id: 'plots' });
  replace(view,
    heading(`Metrics of ${app}`),
    h('form', { class: 'toolbar', onsubmit: (ev) => ev.preventDefault() },
      field('Time range', range), field('Component', component)),
    updated,
    plots);

  let timer = null;
  let stopped = false;
  let controller = null;
  const known = new Set();
  const poll = async () => {
    controller = new AbortController();
    try {
      const data = await getJSON(`/v1/metrics/series${qs({ app, component: component.value, range_s: range.value })}`, { signal: controller.signal });
      for (const s of data.series) {
        if (!known.has(s.component)) {
          known.add(s.component);
          component.append(h('option', { value: s.component, text: s.component }));
          announce(`Metrics: plots for component ${s.component}.`);
        }
      }
      drawAll(plots, data, Number(range.value));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} · one point per ${data.step_s} s · ${summary(data)}`;
    } catch (e) {
      if (e.name === 'AbortError') return;
      replace(plots, errorBox(e));
      updated.textContent = '';
      announce(`Metrics: ${e.message}`);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  const restart = () => { clearTimeout(timer); controller?.abort(); poll(); };
  range.addEventListener('change', restart);
  component.addEventListener('change', restart);
  await poll();
  return () => { stopped = true; clearTimeout(timer); controller?.abort(); };
}

function summary(data) {
  if (!data.series.length) return 'no requests in this range';
  return data.series.map((s) => {
    const last = s.points[s.points.length - 1];
    return `${s.component}: ${last ? `${num(2)(last.rps)} req/s` : 'no data'}`;
  }).join('; ');
}

function drawAll(container, data, rangeS) {
  const now = Date.now();
  const newest = Math.max(now, ...data.series.flatMap((s) => s.points.map((p) => p.t)));
  const window = [newest - rangeS * 1000, newest];
  if (!data.series.length) {
    replace(container, h('p', { text: 'No data in this range yet: plots appear once the app serves requests.' }));
    return;
  }
  replace(container, data.series.map((s) => h('section', { class: 'component', dataset: { component: s.component }, 'aria-label': `Component ${s.component}` },
    h('h2', { text: s.component }),
    h('div', { class: 'plots' }, PLOTS.map(([key, title, fields, format, integer]) => linePlot({
      key,
      title,
      window,
      format,
      integer,
      series: fields.map(([name, f]) => ({ name, points: s.points.map((p) => [p.t, p[f] ?? null]) })),
    }))))));
}

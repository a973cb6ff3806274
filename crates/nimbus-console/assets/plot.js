// Hand-written SVG line plots (no charting library): a figure per metric with one polyline per
// series, a few grid lines and a legend holding the latest values. The figure carries
// `data-plot`, `data-points` (samples with a value) and `data-latest` (newest value of the first
// series) so tests and scripts can read what is drawn.
import { h } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
// The drawing's own units; it scales uniformly (text keeps its shape) to the card's width.
const W = 400;
const H = 170;
const PAD = { left: 48, right: 8, top: 8, bottom: 20 };

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/**
 * A "nice" upper bound for the y axis; for counts, an even whole number so that the middle grid
 * line is whole too.
 */
function niceMax(max, integer) {
  if (integer) {
    if (!(max > 2)) return 2;
    const p = 10 ** Math.floor(Math.log10(max));
    for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= max && Number.isInteger((m * p) / 2)) return m * p;
    return 10 * p;
  }
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** Splits points into runs without nulls (a null is a gap in the line). */
function runs(points) {
  const out = [];
  let cur = [];
  for (const p of points) {
    if (p[1] === null || p[1] === undefined || Number.isNaN(p[1])) {
      if (cur.length) out.push(cur);
      cur = [];
    } else cur.push(p);
  }
  if (cur.length) out.push(cur);
  return out;
}

const clock = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });

// Series colours (`s0`… in console.css); series beyond them reuse them in turn.
const COLOURS = 6;

/**
 * A line plot.
 * @param {object} o
 * @param {string} o.key      machine name (`data-plot`)
 * @param {string} o.title    heading
 * @param {Array<{name: string, points: Array<[number, number|null]>}>} o.series  t in ms
 * @param {[number, number]} o.window  [from, to] in ms
 * @param {(v: number) => string} o.format  value → text
 * @param {boolean} o.integer  values are counts (whole grid values)
 * @param {(t: number) => string} o.tick  a time on the x axis → text (default: the time of day)
 */
export function linePlot({ key, title, series, window: [from, to], format = (v) => v.toFixed(2), integer = false, tick = clock }) {
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v !== undefined);
  const top = niceMax(Math.max(0, ...values), integer);
  const span = Math.max(1, to - from);
  const x = (t) => PAD.left + ((t - from) / span) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);

  const latestOf = (s) => [...s.points].reverse().find((p) => p[1] !== null && p[1] !== undefined);
  const summary = series.map((s) => {
    const last = latestOf(s);
    return `${s.name} ${last ? format(last[1]) : 'no data'}`;
  }).join(', ');

  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${summary}`, class: 'plot' });
  root.append(svg('title', {}, `${title}: ${summary}`));
  for (const frac of [0, 0.5, 1]) {
    const v = top * frac;
    root.append(svg('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
    root.append(svg('text', { x: PAD.left - 4, y: y(v) + 4, 'text-anchor': 'end', class: 'tick' }, format(v)));
  }
  root.append(svg('text', { x: PAD.left, y: H - 4, class: 'tick' }, tick(from)));
  root.append(svg('text', { x: W - PAD.right, y: H - 4, 'text-anchor': 'end', class: 'tick' }, tick(to)));
  series.forEach((s, i) => {
    for (const run of runs(s.points)) {
      const pts = run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
      if (run.length === 1) root.append(svg('circle', { cx: x(run[0][0]), cy: y(run[0][1]), r: 2.5, class: `line s${i % COLOURS}` }));
      else root.append(svg('polyline', { points: pts, class: `line s${i % COLOURS}` }));
    }
  });

  const first = series[0] ? latestOf(series[0]) : undefined;
  const legend = h('ul', { class: 'legend' }, series.map((s, i) => {
    const last = latestOf(s);
    return h('li', { class: `s${i % COLOURS}` }, h('span', { class: 'swatch', 'aria-hidden': 'true' }), `${s.name}: ${last ? format(last[1]) : '—'}`);
  }));
  return h('figure', {
    class: 'plot-card',
    dataset: { plot: key, points: String(values.length), latest: first ? String(first[1]) : '' },
  }, h('figcaption', { text: title }), root, legend);
}

/**
 * A horizontal bar from `offset` to `offset + width` (fractions of the whole), for waterfalls and
 * timelines; decorative (the row's text says the same).
 */
export function bar(offset, width, error) {
  const root = svg('svg');
  root.setAttribute('viewBox', '0 0 1000 10');
  root.setAttribute('preserveAspectRatio', 'none');
  root.setAttribute('class', 'bar');
  root.setAttribute('aria-hidden', 'true');
  const rect = svg('rect');
  rect.setAttribute('x', String(Math.min(999, offset * 1000)));
  rect.setAttribute('width', String(Math.max(2, width * 1000)));
  rect.setAttribute('y', '0');
  rect.setAttribute('height', '10');
  rect.setAttribute('class', error ? 'bad' : 'good');
  root.append(rect);
  return root;
}

// Cost: the node's metered usage and what it costs by its price book (`GET /v1/cost`, as of the
// last flush): a plot per UTC day of one measure, one series per app; a table of the range by app
// or by app and component with its totals, downloadable as CSV; where each budget stands this
// month (`GET /v1/budgets`). Polled while the page is open. App and component names come from
// deployed manifests: they are only ever textContent.
import { getJSON, qs, request, session } from './api.js';
import { announce, bytes, errorBox, field, h, heading, replace, table } from './dom.js';
import { bar, linePlot } from './plot.js';

// Usage reaches the API at each flush (`--meter-flush`, 10 s by default).
const POLL_MS = 10000;
const DAY_MS = 86400000;

/** `0`, `9.73`, `0.000395`: `digits` significant digits, at most 8 decimals. */
export function decimal(v, digits = 3) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 10 ** digits) return v.toFixed(0);
  return v.toFixed(Math.min(8, Math.max(0, digits - 1 - Math.floor(Math.log10(a)))));
}

/** An amount of money: cents from 1 up, significant digits below (prices are tiny). */
export function money(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  if (v === 0) return '0.00';
  return Math.abs(v) >= 1 ? v.toFixed(2) : decimal(v);
}

/** `decimal` without trailing zeros, for axes and legends (`0.0005`, not `0.000500`). */
const short = (v) => {
  const s = decimal(v);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
};
const count = (v) => Math.round(v).toLocaleString();

/** What the plot can show: key, label, a row's value, how it reads, whether it counts. */
const MEASURES = [
  ['cost', 'cost', (r) => r.cost.total, short, false],
  ['invocations', 'invocations', (r) => r.usage.invocations, count, true],
  ['cpu', 'CPU seconds', (r) => r.usage.cpu_seconds, short, false],
  ['memory', 'GiB-seconds', (r) => r.usage.memory_gib_seconds, short, false],
  ['egress', 'egress bytes', (r) => r.usage.egress_bytes, bytes, true],
];
const GROUPS = [['app', 'by app', 'app'], ['component', 'by app and component', 'app,component']];

const isDay = (s) => /^\d{4}-\d{2}-\d{2}$/.test(s || '');
const dayMs = (day) => Date.parse(`${day}T00:00:00Z`);
const dayOf = (t) => new Date(t).toISOString().slice(0, 10);

/** `#/cost?from=&to=&app=&measure=&by=`: plot, table and budgets, polled. */
export async function render(view, { query }) {
  // The API's days are UTC; so is its default range (this month to date).
  const today = dayOf(Date.now());
  const from = h('input', { id: 'cost-from', type: 'date', value: isDay(query.get('from')) ? query.get('from') : `${today.slice(0, 8)}01` });
  const to = h('input', { id: 'cost-to', type: 'date', value: isDay(query.get('to')) ? query.get('to') : today });
  const appSel = h('select', { id: 'cost-app' }, h('option', { value: '', text: 'every app' }),
    session.apps.map((a) => h('option', { value: a.name, text: a.name })));
  const wanted = query.get('app') || '';
  if (wanted && !session.apps.some((a) => a.name === wanted)) appSel.append(h('option', { value: wanted, text: wanted }));
  appSel.value = wanted;
  const measure = h('select', { id: 'cost-measure' }, MEASURES.map(([v, t]) => h('option', { value: v, text: t })));
  measure.value = MEASURES.some(([v]) => v === query.get('measure')) ? query.get('measure') : 'cost';
  const group = h('select', { id: 'cost-by' }, GROUPS.map(([v, t]) => h('option', { value: v, text: t })));
  group.value = GROUPS.some(([v]) => v === query.get('by')) ? query.get('by') : 'app';

  // Not a live region: it changes at every poll.
  const updated = h('p', { class: 'meta', id: 'cost-updated' });
  const plot = h('div', { id: 'cost-plot' });
  const tableTitle = h('h2', { id: 'cost-table-title' });
  const rows = h('div', { id: 'cost-rows' });
  const csvResult = h('div', { id: 'cost-csv-result', role: 'status', 'aria-live': 'polite' });
  const csv = h('button', { type: 'button', id: 'cost-csv', class: 'secondary', text: 'Download CSV' });
  const results = h('div', { id: 'cost-results' },
    h('section', { 'aria-labelledby': 'cost-plot-title' }, h('h2', { id: 'cost-plot-title', text: 'Per day' }), plot),
    h('section', { 'aria-labelledby': 'cost-table-title' }, tableTitle, h('div', { class: 'actions' }, csv), csvResult, rows));
  const budgets = h('section', { id: 'budgets', 'aria-labelledby': 'budgets-title' });
  const off = h('div', { id: 'cost-off' });
  replace(view,
    heading('Cost'),
    h('p', { class: 'meta', text: 'Usage of every invocation, costed with the node\'s price book (--cost-config). Days are UTC; usage is as of the server\'s last flush (every --meter-flush, 10 s by default).' }),
    h('form', { class: 'toolbar', id: 'cost-filters', onsubmit: (ev) => ev.preventDefault() },
      field('From', from), field('To', to), field('App', appSel), field('Plot', measure), field('Table', group)),
    updated,
    off,
    results,
    budgets);

  const by = () => GROUPS.find(([v]) => v === group.value)[2];
  const params = () => ({ from: from.value, to: to.value, app: appSel.value });
  // The choices go into the address (to bookmark or share) without re-rendering the page.
  const address = () => history.replaceState(null, '', `#/cost${qs({
    ...params(), measure: measure.value === 'cost' ? '' : measure.value, by: group.value === 'app' ? '' : group.value,
  })}`);
  let timer = null;
  let stopped = false;
  let controller = null;
  let shown = null;
  let daily = null;
  const drawPlot = () => { if (daily) replace(plot, costPlot(daily, measure.value)); };
  const poll = async () => {
    controller = new AbortController();
    const { signal } = controller;
    // The budgets' own refusal (e.g. a token that may read only some apps) is shown in their
    // section; the report's, in its place.
    const budgetList = getJSON('/v1/budgets', { signal }).then((b) => b.budgets, (e) => {
      if (e.name === 'AbortError') throw e;
      return e;
    });
    try {
      const [perDay, report, list] = await Promise.all([
        getJSON(`/v1/cost${qs({ ...params(), by: 'day,app' })}`, { signal }),
        getJSON(`/v1/cost${qs({ ...params(), by: by() })}`, { signal }),
        budgetList,
      ]);
      const key = JSON.stringify([perDay, report, list instanceof Error ? [list.status, list.message] : list]);
      if (key !== shown) {
        shown = key;
        replace(off);
        results.hidden = false;
        daily = perDay;
        drawPlot();
        tableTitle.textContent = `From ${report.from} to ${report.to}, ${GROUPS.find(([v]) => v === group.value)[1]}`;
        replace(rows, costTable(report));
        drawBudgets(budgets, list);
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} · ${report.from} to ${report.to} · ${money(report.total.cost.total)} ${report.currency} in all`;
      updated.dataset.rows = String(report.rows.length);
    } catch (e) {
      budgetList.catch(() => {});
      if (e.name === 'AbortError') return;
      shown = null;
      daily = null;
      updated.textContent = '';
      if (e.status === 404) {
        // Metering is off (`--no-metering`), or this API has no cost reports: nothing will come.
        replace(off, unavailable(e));
        results.hidden = true;
        replace(budgets);
        announce(`Cost: ${e.message}`);
        return;
      }
      replace(plot);
      replace(rows, errorBox(e));
      replace(budgets);
      announce(`Cost: ${e.message}`);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  const restart = () => {
    address();
    clearTimeout(timer);
    controller?.abort();
    shown = null;
    poll();
  };
  for (const control of [from, to, appSel, group]) control.addEventListener('change', restart);
  measure.addEventListener('change', () => { address(); drawPlot(); });
  csv.addEventListener('click', () => downloadCsv({ ...params(), by: by() }, csvResult));
  await poll();
  return () => { stopped = true; clearTimeout(timer); controller?.abort(); };
}

/** The notice shown instead of the report when the API has none (a 404). */
function unavailable(e) {
  return h('div', { class: 'notice' },
    h('p', {}, h('strong', { text: 'No cost reports here: ' }), e.message),
    h('p', { class: 'hint', text: 'A server meters usage unless it was started with --no-metering; `nimbus cost` reads the same reports.' }));
}

/** The plot of `measure` per day of `report` (grouped by day and app), one series per app. */
function costPlot(report, measure) {
  const [key, label, value, format, integer] = MEASURES.find(([k]) => k === measure) || MEASURES[0];
  const start = dayMs(report.from);
  const end = dayMs(report.to);
  const days = [];
  for (let t = start; t <= end; t += DAY_MS) days.push(t);
  // Every day of the range is a point: a day without usage is a zero, not a gap.
  const apps = new Map();
  for (const r of report.rows) {
    if (!apps.has(r.app)) apps.set(r.app, new Map());
    apps.get(r.app).set(dayMs(r.day), value(r));
  }
  const title = `${label[0].toUpperCase()}${label.slice(1)} per day${key === 'cost' ? ` (${report.currency})` : ''}`;
  if (!apps.size) return h('p', { id: 'cost-plot-none', text: 'No usage in this range yet: the plot appears once apps serve requests (and the server has flushed).' });
  const figure = linePlot({
    key: `cost-${key}`,
    title,
    window: [start, end],
    format,
    integer,
    tick: dayOf,
    series: [...apps].map(([app, byDay]) => ({ name: app || '(no app)', points: days.map((t) => [t, byDay.get(t) ?? 0]) })),
  });
  figure.classList.add('wide');
  return figure;
}

/** The report's rows, with its total in the footer. */
function costTable(report) {
  if (!report.rows.length) return h('p', { id: 'cost-none', text: 'No usage in this range.' });
  const dims = report.by.filter((d) => d === 'app' || d === 'component');
  const names = { app: 'App', component: 'Component' };
  // KV storage is reported by newer servers only.
  const stored = report.total.usage.stored_gib_months !== undefined;
  const numbers = (r) => [
    count(r.usage.invocations),
    decimal(r.usage.cpu_seconds),
    decimal(r.usage.wall_seconds),
    decimal(r.usage.memory_gib_seconds),
    decimal(r.usage.instance_seconds),
    bytes(r.usage.egress_bytes),
    count(r.usage.events_published),
    count(r.usage.kv_operations),
    stored ? decimal(r.usage.stored_gib_months) : null,
    money(r.cost.total),
  ].filter((c) => c !== null);
  const wrap = table(`Usage and cost from ${report.from} to ${report.to} (UTC), in ${report.currency}; totals last`,
    [...dims.map((d) => names[d]), 'Invocations', 'CPU s', 'Wall s', 'GiB-s', 'Instance s', 'Egress', 'Events', 'KV ops', stored ? 'KV GiB-months' : null, `Cost (${report.currency})`].filter(Boolean),
    report.rows.map((r) => [...dims.map((d) => r[d] || '—'), ...numbers(r)]));
  const t = wrap.querySelector('table');
  t.id = 'cost-table';
  t.classList.add('numbers');
  wrap.querySelectorAll('tbody tr').forEach((tr, i) => {
    const r = report.rows[i];
    tr.dataset.app = r.app ?? '';
    if (r.component !== undefined) tr.dataset.component = r.component ?? '';
    tr.dataset.invocations = String(r.usage.invocations);
    tr.dataset.cost = String(r.cost.total);
  });
  t.append(h('tfoot', {}, h('tr', { id: 'cost-total', dataset: { invocations: String(report.total.usage.invocations), cost: String(report.total.cost.total) } },
    h('th', { scope: 'row', colspan: String(dims.length), text: 'Total' }),
    numbers(report.total).map((c) => h('td', { text: c })))));
  return wrap;
}

/** Fetches the report as CSV (with the token: a plain link would not send it) and saves it. */
async function downloadCsv(params, result) {
  replace(result);
  try {
    const resp = await request('GET', `/v1/cost${qs({ ...params, format: 'csv' })}`);
    const url = URL.createObjectURL(await resp.blob());
    const name = `nimbus-cost-${params.from || 'month'}-to-${params.to || 'today'}-by-${params.by.replace(',', '-')}${params.app ? `-${params.app}` : ''}.csv`;
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    // Give the browser time to start the download before the blob goes.
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    replace(result, h('p', { class: 'ok', dataset: { file: name }, text: `Downloaded ${name}.` }));
    announce(`Downloaded ${name}.`);
  } catch (e) {
    replace(result, errorBox(e));
    announce(`Cost CSV: ${e.message}`);
  }
}

/** Where each budget stands this month: `list` is the API's budgets or its refusal. */
function drawBudgets(section, list) {
  const title = h('h2', { id: 'budgets-title', text: 'Budgets this month' });
  if (list instanceof Error) {
    replace(section, title, errorBox(list));
    return;
  }
  if (!list.length) {
    replace(section, title, h('p', { id: 'budgets-none', text: 'No budgets: the server\'s cost configuration (--cost-config) sets none.' }));
    return;
  }
  const throttled = list.filter((b) => b.throttled);
  const wrap = table('Budgets of the cost configuration, as of the last flush', ['Budget', 'Month', 'Spent / monthly', 'Used', 'Thresholds reached', 'Throttled', 'Apps'], list.map((b) => [
    b.budget,
    b.month,
    `${money(b.spent)} / ${money(b.monthly)} ${b.currency}`,
    h('span', { class: 'used' }, bar(0, Math.min(1, Math.max(0, b.percent / 100)), b.percent >= 100), h('span', { text: `${decimal(b.percent)} %` })),
    b.reached.length ? b.reached.map((p) => `${p} %`).join(', ') : 'none',
    b.throttled
      ? h('span', { class: 'badge throttled', title: 'The hard limit is reached: new requests to its apps get 429 until the month ends or the budget is raised', text: 'throttled' })
      : 'no',
    b.apps.length ? b.apps.join(', ') : '—',
  ]));
  const t = wrap.querySelector('table');
  t.id = 'budgets-table';
  t.classList.add('numbers');
  wrap.querySelectorAll('tbody tr').forEach((tr, i) => {
    tr.dataset.budget = list[i].budget;
    tr.dataset.percent = String(list[i].percent);
    tr.dataset.throttled = String(list[i].throttled);
  });
  replace(section, title,
    throttled.length
      ? h('p', { class: 'bad', id: 'budgets-throttled', text: `Throttled: ${throttled.map((b) => b.budget).join(', ')}. New requests to their apps get 429 until the month ends or the budget is raised.` })
      : null,
    wrap);
}

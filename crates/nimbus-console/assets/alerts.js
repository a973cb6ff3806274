// Alerts: the node's anomalies, forecasts and broken objectives (`GET /v1/alerts`, polled), one
// alert with its ranked suspects, their evidence, example traces and log lines, and the app's
// deploys before it; silences (`/v1/silences`), created from an alert and ended here. Alert text
// (summaries, component names, log lines) comes from apps' data: it is only ever textContent.
import { allows, getJSON, qs, sendJSON, seg, session } from './api.js';
import { announce, errorBox, field, fromMs, h, heading, link, replace, table } from './dom.js';

const POLL_MS = 5000;
const STATES = [['firing', 'firing'], ['resolved', 'resolved'], ['all', 'firing and resolved']];
const DURATIONS = [['15 minutes', 900], ['1 hour', 3600], ['2 hours', 7200], ['4 hours', 14400], ['1 day', 86400], ['7 days', 604800]];

/** A console link to `prefix/ID` (the id through seg()); plain text when it cannot be named. */
function linkTo(prefix, id, text) {
  try {
    return link(`${prefix}/${seg(id)}`, text);
  } catch {
    return h('span', { text });
  }
}

/** `90 s`, `12 min`, `5.2 h`, `3.1 d`. */
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

const round = (v) => (v === 0 ? '0' : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));

/** A value of `signal` in its unit (as the API's summaries write it). */
export function valueOf(signal, v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  switch (signal) {
    case 'latency_p95':
    case 'slo_latency':
      return `${round(v)} ms`;
    case 'error_rate':
    case 'cold_start_rate':
      return `${round(v * 100)} %`;
    case 'slo_availability':
      return `${round(v)} %`;
    case 'throughput':
      return `${round(v)} req/s`;
    case 'memory':
    case 'disk':
      return `${round(v)} MiB`;
    case 'queue_depth':
    case 'consumer_lag':
    case 'dead_letters':
      return v.toFixed(0);
    default:
      return round(v);
  }
}

/** What an alert's value was judged against, by kind. */
const AGAINST = { anomaly: 'baseline', forecast: 'limit', slo: 'objective' };

function stateBadge(a) {
  return h('span', { class: 'badges' },
    h('span', { class: `badge state-${a.state}`, text: a.state }),
    a.silenced ? h('span', { class: 'badge silenced', title: 'A silence matched it when it fired: recorded, not notified', text: 'silenced' }) : null);
}

const severityBadge = (a) => h('span', { class: `badge severity-${a.severity}`, text: a.severity });

/** `#/alerts?state=&app=`: the alerts, newest first, polled while the page is open. */
export async function renderList(view, { query }) {
  const state = h('select', { id: 'alert-state' }, STATES.map(([v, t]) => h('option', { value: v, text: t })));
  state.value = STATES.some(([v]) => v === query.get('state')) ? query.get('state') : 'firing';
  const appSel = h('select', { id: 'alert-app' }, h('option', { value: '', text: 'every app' }),
    session.apps.map((a) => h('option', { value: a.name, text: a.name })));
  const wanted = query.get('app') || '';
  if (wanted && !session.apps.some((a) => a.name === wanted)) appSel.append(h('option', { value: wanted, text: wanted }));
  appSel.value = wanted;
  // Not a live region: it changes every few seconds. New firing alerts are announced.
  const updated = h('p', { class: 'meta', id: 'alerts-updated' });
  const results = h('div', { id: 'alert-results' });
  const silences = h('section', { id: 'silences', 'aria-labelledby': 'silences-title' });
  replace(view,
    heading('Alerts'),
    h('form', { class: 'toolbar', id: 'alert-filters', onsubmit: (ev) => ev.preventDefault() },
      field('State', state), field('App', appSel)),
    updated,
    results,
    silences);

  let timer = null;
  let stopped = false;
  let controller = null;
  let shown = null;
  let known = null;
  const poll = async () => {
    controller = new AbortController();
    try {
      const { alerts } = await getJSON(`/v1/alerts${qs({ state: state.value, app: appSel.value, limit: 200 })}`, { signal: controller.signal });
      const key = JSON.stringify(alerts.map((a) => [a.id, a.state, a.silenced, a.summary, a.suspects[0]?.component]));
      if (key !== shown) {
        shown = key;
        drawList(results, alerts, state.value);
      }
      const firing = alerts.filter((a) => a.state === 'firing');
      if (known) {
        const fresh = firing.filter((a) => !known.has(a.id));
        if (fresh.length) announce(`${fresh.length} new firing alert(s): ${fresh[0].summary}`);
      }
      known = new Set(alerts.map((a) => a.id));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()} · ${alerts.length} alert(s) · ${firing.length} firing`;
      updated.dataset.count = String(alerts.length);
    } catch (e) {
      if (e.name === 'AbortError') return;
      shown = null;
      replace(results, errorBox(e));
      updated.textContent = '';
      announce(`Alerts: ${e.message}`);
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  };
  const restart = () => {
    // The filters go into the address (to bookmark or share) without re-rendering the page.
    history.replaceState(null, '', `#/alerts${qs({ state: state.value === 'firing' ? '' : state.value, app: appSel.value })}`);
    clearTimeout(timer);
    controller?.abort();
    shown = null;
    known = null;
    poll();
  };
  state.addEventListener('change', restart);
  appSel.addEventListener('change', restart);
  await Promise.all([poll(), showSilences(silences)]);
  return () => { stopped = true; clearTimeout(timer); controller?.abort(); };
}

/** The alerts table; keyboard focus on a row's link survives a redraw. */
function drawList(container, alerts, state) {
  const focused = container.contains(document.activeElement) ? document.activeElement.closest('tr')?.dataset.alert : null;
  if (alerts.length === 0) {
    replace(container, h('p', { id: 'alerts-none', text: state === 'all' ? 'No alerts.' : `No ${state} alerts.` }));
    return;
  }
  const wrap = table(`${alerts.length} alert(s), newest first; open one for its suspects`,
    ['State', 'Severity', 'Kind', 'App/component', 'Signal', 'Summary', 'Started', 'First suspect'],
    alerts.map((a) => [
      stateBadge(a),
      severityBadge(a),
      a.kind,
      `${a.app}/${a.component}`,
      h('code', { text: a.signal }),
      linkTo('/alerts', a.id, a.summary),
      fromMs(a.started_at),
      a.suspects.length ? `${a.suspects[0].component} (${a.suspects[0].score.toFixed(2)})` : '—',
    ]));
  wrap.querySelector('table').id = 'alerts-table';
  wrap.querySelectorAll('tbody tr').forEach((tr, i) => {
    tr.dataset.alert = alerts[i].id;
    tr.dataset.state = alerts[i].state;
  });
  replace(container, wrap);
  if (focused) {
    const again = [...wrap.querySelectorAll('tbody tr')].find((tr) => tr.dataset.alert === focused);
    again?.querySelector('a')?.focus();
  }
}

/** `#/alerts/ID`: one alert, its suspects and deploys, a form to silence it, the silences. */
export async function renderAlert(view, { id }) {
  const a = await getJSON(`/v1/alerts/${seg(id)}`);
  const silences = h('section', { id: 'silences', 'aria-labelledby': 'silences-title' });
  const against = AGAINST[a.kind] || 'baseline';
  const facts = [
    ['State', stateBadge(a)],
    ['Severity', severityBadge(a)],
    ['Kind', a.kind],
    ['App/component', `${a.app}/${a.component}`],
    ['Signal', h('code', { text: a.signal })],
    [`Value vs ${against}`, h('span', { id: 'alert-value', text: `${valueOf(a.signal, a.value)} (${against} ${valueOf(a.signal, a.baseline)})` })],
    ['Score', a.kind === 'anomaly' ? `${a.score.toFixed(1)} robust deviations off` : a.kind === 'forecast' ? `${(a.score * 100).toFixed(0)} % of the limit` : a.signal === 'slo_availability' ? `budget burning ${a.score.toFixed(1)}× too fast` : a.score.toFixed(2)],
    a.lead_time_s !== null && a.lead_time_s !== undefined
      ? [a.kind === 'forecast' ? 'Lead time (the limit is reached in)' : 'The error budget lasts', h('span', { id: 'alert-lead', text: duration(a.lead_time_s) })]
      : null,
    ['Started', fromMs(a.started_at)],
    ['Detected', fromMs(a.detected_at)],
    a.resolved_at ? ['Resolved', fromMs(a.resolved_at)] : null,
    ['Id', h('code', { text: a.id })],
  ].filter(Boolean);
  replace(view,
    heading(`Alert: ${a.signal.replace(/_/g, ' ')} of ${a.app}/${a.component}`),
    h('p', { class: 'meta' }, link('/alerts', 'all alerts'), ' · ',
      h('a', { href: `#/logs${qs({ app: a.app, component: a.component })}`, text: `logs of ${a.component}` })),
    h('p', { class: 'lead', id: 'alert-summary', text: a.summary }),
    h('dl', { class: 'facts', id: 'alert-facts' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)])),
    h('section', { 'aria-labelledby': 'suspects-title' },
      h('h2', { id: 'suspects-title', text: 'Suspects, most likely first' }),
      suspectsOf(a)),
    h('section', { 'aria-labelledby': 'changes-title' },
      h('h2', { id: 'changes-title', text: 'Deploys in the 15 minutes before it began' }),
      changesOf(a)),
    silenceForm(a, () => showSilences(silences)),
    silences);
  await showSilences(silences);
}

function suspectsOf(a) {
  if (!a.suspects.length) {
    return h('p', { id: 'suspects-none', text: a.kind === 'anomaly' ? 'No suspect: no trace through it was found.' : 'Forecasts and objectives are judged without suspects.' });
  }
  return h('ol', { class: 'suspects', id: 'suspects' }, a.suspects.map((s) => h('li', { dataset: { suspect: s.component } },
    h('h3', {}, h('span', { class: 'suspect-name', text: s.component }), h('span', { class: 'meta', text: ` · score ${s.score.toFixed(2)}` })),
    s.evidence.length ? h('ul', { class: 'evidence' }, s.evidence.map((e) => h('li', { text: e }))) : null,
    s.traces.length ? h('p', { class: 'traces' }, 'Example traces: ', s.traces.map((t, i) => [i ? ', ' : '', linkTo('/traces', t, t.slice(0, 12))])) : null,
    s.logs?.length ? [
      h('p', { class: 'meta', text: `Log lines of those traces (${s.logs.length}):` }),
      h('ol', { class: 'log', 'aria-label': `Log lines of ${s.component}` }, s.logs.map((l) => h('li', { text: l }))),
    ] : null)));
}

function changesOf(a) {
  const changes = a.changes || [];
  if (!changes.length) return h('p', { id: 'changes-none', text: 'None: no deploy changed the app\'s serving revision just before.' });
  const short = (r) => (r ? r.slice(0, 14) : '—');
  const wrap = table('Deploys of the app, with the components they changed', ['When', 'From', 'To', 'Components changed'], changes.map((c) => [
    fromMs(c.at),
    c.from ? h('code', { text: short(c.from), title: c.from }) : '—',
    h('code', { text: short(c.to), title: c.to }),
    c.components.length ? c.components.join(', ') : 'none',
  ]));
  wrap.querySelector('table').id = 'changes-table';
  return wrap;
}

/** "Silence this": the alert's app, component and signal (clear one to silence more), how long, why. */
function silenceForm(a, reload) {
  const canWrite = allows('traffic');
  const component = h('input', { id: 'silence-component', type: 'text', value: a.component, spellcheck: 'false' });
  const signal = h('input', { id: 'silence-signal', type: 'text', value: a.signal, spellcheck: 'false' });
  const length = h('select', { id: 'silence-duration' }, DURATIONS.map(([t, s]) => h('option', { value: String(s), text: t })));
  length.value = '3600';
  const comment = h('input', { id: 'silence-comment', type: 'text', maxlength: '1000', placeholder: 'why, e.g. a load test' });
  const result = h('div', { id: 'silence-result', role: 'status', 'aria-live': 'polite', tabindex: '-1' });
  const form = h('form', { id: 'silence-form', 'aria-labelledby': 'silence-title' },
    h('fieldset', { disabled: !canWrite },
      h('legend', { id: 'silence-title', text: `Silence this (alerts of ${a.app} matching it are recorded, not notified)` }),
      canWrite ? null : h('p', { class: 'hint', text: 'Your token cannot silence alerts (it lacks the `traffic` scope on the app); the API would refuse it.' }),
      h('div', { class: 'grid' },
        field('App', h('input', { id: 'silence-app', type: 'text', value: a.app, readonly: true })),
        field('Component (empty: every component)', component),
        field('Signal (empty: every signal)', signal),
        field('For', length),
        field('Comment', comment)),
      h('div', { class: 'actions' }, h('button', { type: 'submit', id: 'silence-submit', text: 'Silence this' }))),
    result);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    replace(result);
    const body = {
      component: component.value.trim() || null,
      signal: signal.value.trim() || null,
      duration_s: Number(length.value),
      comment: comment.value.trim(),
    };
    try {
      const s = await sendJSON('POST', `/v1/apps/${seg(a.app)}/silences`, body);
      replace(result, h('p', { class: 'ok', dataset: { silence: s.id }, text: `Silenced until ${fromMs(s.ends_at)} (silence ${s.id}).` }));
      announce(`Silenced until ${fromMs(s.ends_at)}.`);
      comment.value = '';
      await reload();
    } catch (e) {
      replace(result, errorBox(e));
      announce(`The API refused it: ${e.message}`);
    }
  });
  return form;
}

/** The silences that have not ended, each with "End" (needs `traffic` on its app). */
async function showSilences(section) {
  const result = h('div', { id: 'silences-result', role: 'status', 'aria-live': 'polite', tabindex: '-1' });
  const title = h('h2', { id: 'silences-title', text: 'Active silences' });
  let silences;
  try {
    ({ silences } = await getJSON('/v1/silences'));
  } catch (e) {
    replace(section, title, errorBox(e));
    return;
  }
  const canWrite = allows('traffic');
  const end = (s) => h('button', {
    type: 'button', class: 'danger', disabled: !canWrite, dataset: { end: s.id },
    'aria-label': `End silence ${s.id} of ${s.app}`, text: 'End',
    onclick: async () => {
      replace(result);
      try {
        await sendJSON('DELETE', `/v1/apps/${seg(s.app)}/silences/${seg(s.id)}`);
        announce(`Ended silence ${s.id}.`);
        await showSilences(section);
        const done = section.querySelector('#silences-result');
        replace(done, h('p', { class: 'ok', dataset: { ended: s.id }, text: `Ended silence ${s.id}.` }));
        done.focus();
      } catch (e) {
        replace(result, errorBox(e));
        announce(`The API refused it: ${e.message}`);
      }
    },
  });
  let body;
  if (!silences.length) {
    body = h('p', { id: 'silences-none', text: 'None: every alert is notified.' });
  } else {
    body = table('Silences that have not ended; matching alerts are recorded, not notified', ['App', 'Component', 'Signal', 'Comment', 'By', 'Created', 'Ends', 'Action'], silences.map((s) => [
      s.app, s.component || 'every component', s.signal || 'every signal', s.comment || '—', s.created_by, fromMs(s.created_at), fromMs(s.ends_at), end(s),
    ]));
    body.querySelector('table').id = 'silences-table';
    body.querySelectorAll('tbody tr').forEach((tr, i) => { tr.dataset.silence = silences[i].id; });
  }
  replace(section, title, canWrite ? null : h('p', { class: 'hint', text: 'Ending a silence needs the `traffic` scope on its app, which your token lacks.' }), body, result);
}

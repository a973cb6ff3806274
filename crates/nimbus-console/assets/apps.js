// Apps → revisions → traffic split (editable, checked like the API checks it), rollback and the
// deploy history (revisions, plus the audit trail for tokens that may read it).
import { allows, getJSON, qs, sendJSON, seg, session } from './api.js';
import { announce, errorBox, field, fromMs, fromSecs, h, heading, link, replace, table } from './dom.js';

/** `#/apps`: every app the token may see. */
export async function renderList(view) {
  const list = session.apps = await getJSON('/v1/apps');
  replace(view, heading('Apps'),
    list.length === 0
      ? h('p', { text: 'No apps yet: deploy one with `nimbus deploy`.' })
      : table('Apps the token may see', ['App', 'Hosts', 'Revisions', 'Traffic', 'Updated'], list.map((a) => [
        link(`/apps/${encodeURIComponent(a.name)}`, a.name),
        a.hosts.length ? a.hosts.join(', ') : 'every host',
        String(a.revisions),
        trafficText(a.traffic),
        fromSecs(a.updated_at),
      ])));
}

function trafficText(traffic) {
  if (!traffic.targets.length) return '—';
  return traffic.targets.map((t) => `${short(t.revision)} ${t.percent}%`).join(', ');
}

const short = (id) => (id.length > 14 ? id.slice(0, 14) : id);

/**
 * The traffic a form describes, checked as the API checks it (the API checks again and its
 * answer is what counts): whole percents 0–100 adding up to 100, at least one revision.
 */
export function trafficFrom(inputs, tags) {
  const targets = [];
  let sum = 0;
  for (const input of inputs) {
    const text = input.value.trim() || '0';
    if (!/^\d+$/.test(text) || Number(text) > 100) {
      return { error: `revision ${input.dataset.revision} gets \`${text}\`: use a whole percent from 0 to 100` };
    }
    const percent = Number(text);
    sum += percent;
    if (percent > 0) targets.push({ revision: input.dataset.revision, percent });
  }
  if (sum !== 100) return { error: `percentages add up to ${sum}, not 100` };
  return { traffic: { targets, tags } };
}

/** `#/apps/NAME`: revisions, the traffic editor, rollback and history. */
export async function renderApp(view, { app, notice }) {
  if (session.local) {
    replace(view, heading(`App ${app}`), h('p', {
      text: '`nimbus up` serves the app directory as it is: revisions, traffic splits and rollbacks exist on `nimbus server`. Metrics, traces, logs, topics, KV and workflows of this app are in the menu.',
    }));
    return;
  }
  const base = `/v1/apps/${seg(app)}`;
  const [info, revisions] = await Promise.all([getJSON(base), getJSON(`${base}/revisions`)]);
  const result = h('div', { id: 'traffic-result', role: 'status', 'aria-live': 'polite' }, notice ? h('p', { class: 'ok', text: notice }) : null);
  const history = h('section', { 'aria-labelledby': 'history-title' }, h('h2', { id: 'history-title', text: 'Deploy history' }));
  replace(view,
    heading(`App ${app}`),
    h('p', { class: 'meta', text: `Hosts: ${info.hosts.length ? info.hosts.join(', ') : 'every host'} · created ${fromSecs(info.created_at)} · updated ${fromSecs(info.updated_at)}` }),
    h('section', { 'aria-labelledby': 'revisions-title' },
      h('h2', { id: 'revisions-title', text: 'Revisions' }),
      revisionsTable(revisions)),
    trafficForm(app, revisions, info.traffic, result, (done) => renderApp(view, { app, notice: done })),
    result,
    history);
  if (notice) {
    // The form was rebuilt: keep keyboard focus near what was just done.
    result.setAttribute('tabindex', '-1');
    result.focus();
  }
  await renderHistory(history, app, revisions);
}

function revisionsTable(revisions) {
  return table('Revisions, newest first', ['Revision', 'Version', 'Deployed', 'Traffic', 'Tags', 'Loaded', 'Components'], revisions.map((r) => [
    h('code', { text: short(r.id), title: r.id }),
    r.version || '—',
    fromSecs(r.created_at),
    h('span', { class: 'percent', dataset: { revision: r.id }, text: `${r.percent}%` }),
    r.tags.join(', ') || '—',
    r.loaded ? 'yes' : 'no',
    r.artifacts.map((a) => a.component).join(', '),
  ]));
}

/** The traffic editor; a fieldset disabled (not hidden) when the token lacks `traffic`. */
function trafficForm(app, revisions, traffic, result, reload) {
  const canWrite = allows('traffic');
  const inputs = revisions.map((r) => h('input', {
    type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric',
    value: String(traffic.targets.find((t) => t.revision === r.id)?.percent || 0),
    dataset: { revision: r.id },
    id: `pct-${r.id}`,
  }));
  const total = h('output', { id: 'traffic-total' });
  const sumUp = () => { total.textContent = `Total: ${inputs.reduce((s, i) => s + (Number(i.value) || 0), 0)}%`; };
  inputs.forEach((i) => i.addEventListener('input', sumUp));
  sumUp();

  const send = async (what, call) => {
    replace(result);
    try {
      const after = await call();
      announce(`${what}.`);
      // Re-read the app (revisions' percents, loaded state) and say what was done there.
      await reload(`${what}: ${trafficText(after)}`);
    } catch (e) {
      replace(result, errorBox(e));
      announce(`The API refused it: ${e.message}`);
    }
  };
  const form = h('form', { id: 'traffic-form', 'aria-labelledby': 'traffic-title' });
  const fieldset = h('fieldset', { disabled: !canWrite },
    h('legend', { id: 'traffic-title', text: 'Traffic split' }),
    canWrite ? null : h('p', { class: 'hint', text: 'Your token cannot change traffic (it lacks the `traffic` scope); the API would refuse it.' }),
    h('div', { class: 'grid' }, revisions.map((r, i) => field(`Percent to ${short(r.id)}${r.version ? ` (${r.version})` : ''}`, inputs[i]))),
    total,
    h('div', { class: 'actions' },
      h('button', { type: 'submit', id: 'save-traffic', text: 'Save traffic split' }),
      h('button', {
        type: 'button', id: 'rollback', text: 'Roll back (restore the previous split)',
        onclick: () => send('Rolled back', () => sendJSON('POST', `/v1/apps/${seg(app)}/rollback`, {})),
      })),
    h('div', { class: 'actions' }, revisions.map((r) => h('button', {
      type: 'button', class: 'secondary', text: `All traffic to ${short(r.id)}`,
      onclick: () => send(`All traffic to ${short(r.id)}`, () => sendJSON('POST', `/v1/apps/${seg(app)}/rollback`, { to: r.id })),
    }))));
  form.append(fieldset);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const { error, traffic: next } = trafficFrom(inputs, traffic.tags);
    if (error) {
      replace(result, errorBox({ message: error }));
      return;
    }
    send('Traffic saved', () => sendJSON('PUT', `/v1/apps/${seg(app)}/traffic`, next));
  });
  return form;
}

/** Deploys (from the revisions) and, for tokens that may read it, the audit trail of the app. */
async function renderHistory(section, app, revisions) {
  const deploys = [...revisions].sort((a, b) => b.created_at - a.created_at);
  section.append(table('Revisions by deploy time', ['Deployed', 'Revision', 'Version'], deploys.map((r) => [
    fromSecs(r.created_at), h('code', { text: short(r.id), title: r.id }), r.version || '—',
  ])));
  if (!allows('admin')) {
    section.append(h('p', { class: 'hint', text: 'Who changed what (the audit trail) is for admin tokens.' }));
    return;
  }
  try {
    const events = await auditOf(app);
    section.append(table('Audit trail of the app (newest first)', ['When', 'Who', 'Action', 'Request', 'Outcome'], events.map((e) => [
      fromMs(e.at_ms), e.user || e.principal, e.action, e.request || '—', e.outcome + (e.reason ? ` (${e.reason})` : ''),
    ])));
  } catch (e) {
    section.append(errorBox(e));
  }
}

/** The newest 50 audit events about `app` (the trail is read oldest first, page by page). */
async function auditOf(app) {
  const found = [];
  let after = 0;
  for (let page = 0; page < 20; page += 1) {
    const p = await getJSON(`/v1/audit${qs({ after, limit: 1000 })}`);
    for (const { record } of p.records) {
      if (record.kind === 'event' && record.resource === `app:${app}`) found.push(record);
    }
    if (p.next_after === null || p.next_after === undefined) break;
    after = p.next_after;
  }
  return found.reverse().slice(0, 50);
}

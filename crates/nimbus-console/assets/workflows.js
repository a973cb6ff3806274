// Workflow runs of an app (`/v1/apps/APP/workflows/NAME`) and one run with its timeline.
import { getJSON, qs, seg, servingManifest } from './api.js';
import { field, fromMs, h, heading, link, ms, replace, table } from './dom.js';
import { bar } from './plot.js';

/** Workflow names from the serving revision's `[[trigger.workflow]]` entries (best effort). */
async function knownWorkflows(app) {
  const manifest = await servingManifest(app);
  if (!manifest) return [];
  return [...manifest.matchAll(/\[\[trigger\.workflow\]\][^[]*?\bname\s*=\s*"([^"]+)"/g)].map((m) => m[1]);
}

const STATUSES = ['', 'unfinished', 'running', 'waiting', 'compensating', 'completed', 'failed', 'cancelled'];

/** `#/workflows?name=&status=`: the runs of a workflow, newest first. */
export async function renderList(view, { app, query }) {
  const names = await knownWorkflows(app);
  const nameInput = h('input', { id: 'wf-name', type: 'text', list: 'wf-names', value: query.get('name') || names[0] || '', required: true });
  const status = h('select', { id: 'wf-status' }, STATUSES.map((s) => h('option', { value: s, text: s || 'any' })));
  status.value = query.get('status') || '';
  const form = h('form', { class: 'toolbar', id: 'wf-form' },
    field('Workflow', nameInput), h('datalist', { id: 'wf-names' }, names.map((n) => h('option', { value: n }))),
    field('Status', status), h('button', { type: 'submit', text: 'List runs' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/workflows${qs({ name: nameInput.value.trim(), status: status.value })}`;
  });
  const results = h('div', { id: 'wf-runs' });
  replace(view, heading(`Workflows of ${app}`), form, results);
  const name = nameInput.value.trim();
  if (!name) {
    replace(results, h('p', { text: 'Name a workflow (its `[[trigger.workflow]]` name) to list its runs.' }));
    return;
  }
  const { runs } = await getJSON(`/v1/apps/${seg(app)}/workflows/${seg(name)}${qs({ status: status.value })}`);
  replace(results, runs.length === 0 ? h('p', { text: 'No runs.' }) : table(`Runs of ${name}, newest first`, ['Run', 'Status', 'Revision', 'Started', 'Updated', 'Error'], runs.map((r) => [
    link(`/workflows/${encodeURIComponent(name)}/${encodeURIComponent(r.run)}`, r.run),
    h('span', { class: `status-${r.status}`, text: r.status }),
    h('code', { text: (r.revision || '').slice(0, 14) }),
    fromMs(r.created_ms),
    fromMs(r.updated_ms),
    r.error || '—',
  ])));
}

/** `#/workflows/NAME/RUN`: the run, its timeline and signals. */
export async function renderRun(view, { app, name, run }) {
  const r = await getJSON(`/v1/apps/${seg(app)}/workflows/${seg(name)}/runs/${seg(run)}`);
  const timeline = r.timeline || [];
  const t0 = Math.min(r.created_ms, ...timeline.map((e) => e.started_ms));
  const t1 = Math.max(r.updated_ms, ...timeline.map((e) => e.finished_ms || e.started_ms));
  const total = Math.max(1, t1 - t0);
  replace(view,
    heading(`Run ${run}`),
    h('p', { class: 'meta' }, `Workflow ${name} · `, h('span', { class: `status-${r.status}`, text: r.status }), ` · started ${fromMs(r.created_ms)} · updated ${fromMs(r.updated_ms)} · `, link(`/workflows${qs({ name })}`, 'all runs')),
    r.error ? h('p', { class: 'bad', text: r.error }) : null,
    r.output !== undefined ? h('section', {}, h('h2', { text: 'Output' }), h('pre', { text: typeof r.output === 'string' ? r.output : JSON.stringify(r.output, null, 2) })) : null,
    h('h2', { text: 'Timeline' }),
    timeline.length === 0 ? h('p', { text: 'No steps yet.' }) : h('ol', { class: 'timeline', id: 'wf-timeline' }, timeline.map((e) => {
      const width = e.finished_ms ? (e.finished_ms - e.started_ms) / total : 0;
      const outcome = typeof e.outcome === 'string' ? e.outcome : JSON.stringify(e.outcome);
      return h('li', { dataset: { kind: e.kind } },
        h('span', { class: 'pos', text: `#${e.pos}` }), ' ',
        h('strong', { text: `${e.kind}${e.name ? ` ${e.name}` : ''}` }), ' ',
        h('span', { class: 'meta', text: `at +${ms(e.started_ms - t0)}${e.duration_ms !== undefined ? `, took ${ms(e.duration_ms)}` : ''}${e.retries ? `, ${e.retries} retr${e.retries > 1 ? 'ies' : 'y'}` : ''}` }),
        bar((e.started_ms - t0) / total, width, e.outcome === 'failed' || (typeof e.outcome === 'object' && e.outcome !== null && 'err' in e.outcome)),
        h('div', { class: 'outcome', text: outcome }));
    })),
    (r.signals || []).length ? h('section', {}, h('h2', { text: 'Signals' }), table('Signals sent to the run', ['Seq', 'Name', 'Sent', 'Bytes'], r.signals.map((s) => [String(s.seq), s.name, fromMs(s.sent_ms), String(s.bytes)]))) : null);
}

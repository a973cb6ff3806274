// Topics: read an app's topic or its dead-letter topic (`TOPIC.dlq`) page by page, and replay
// the dead letters to the topic they came from.
import { allows, getJSON, qs, request, seg, servingManifest } from './api.js';
import { announce, errorBox, field, h, heading, replace, table } from './dom.js';

const PAGE = 50;

/**
 * The topics the serving revision's manifest names (`topic = "..."` of its triggers), each with
 * its dead-letter topic. Best effort: under `nimbus up` or without access the list is empty and
 * any name can be typed.
 */
async function knownTopics(app) {
  const manifest = await servingManifest(app);
  if (!manifest) return [];
  const names = [...manifest.matchAll(/^\s*topic\s*=\s*"([^"]+)"/gm)].map((m) => m[1]);
  return [...new Set(names.flatMap((n) => (n.endsWith('.dlq') ? [n] : [n, `${n}.dlq`])))].sort();
}

/** `#/topics?topic=NAME`: the events of a topic. */
export async function render(view, { app, query }) {
  const topics = await knownTopics(app);
  const topic = query.get('topic') || topics[0] || '';
  const input = h('input', { id: 'topic-name', type: 'text', list: 'topic-names', value: topic, required: true, spellcheck: 'false' });
  const form = h('form', { class: 'toolbar', id: 'topic-form' },
    field('Topic', input),
    h('datalist', { id: 'topic-names' }, topics.map((t) => h('option', { value: t }))),
    h('button', { type: 'submit', text: 'Read' }));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    location.hash = `#/topics${qs({ topic: input.value.trim() })}`;
  });
  const body = h('div', { id: 'topic-events' });
  replace(view, heading(`Topics of ${app}`), form,
    topics.length ? h('p', { class: 'meta' }, 'Topics of its triggers: ', topics.map((t, i) => [i ? ', ' : '', h('a', { href: `#/topics${qs({ topic: t })}`, text: t })])) : null,
    body);
  if (topic) await showTopic(body, app, topic);
}

async function showTopic(container, app, topic) {
  const base = `/v1/apps/${seg(app)}/topics/${seg(topic)}`;
  const dlq = topic.endsWith('.dlq');
  const rows = h('tbody');
  const more = h('button', { type: 'button', id: 'topic-more', text: 'Read newer events' });
  const result = h('div', { id: 'replay-result', role: 'status', 'aria-live': 'polite' });
  let next = 1;
  let count = 0;
  const counter = h('p', { class: 'meta', id: 'topic-count' });
  const load = async () => {
    try {
      const page = await getJSON(`${base}/events${qs({ from: next, limit: PAGE })}`);
      page.events.forEach((e) => rows.append(eventRow(e)));
      count += page.events.length;
      next = page.next;
      counter.textContent = `${count} event(s) read; the next read starts at position ${next}.`;
      counter.dataset.count = String(count);
    } catch (e) {
      replace(result, errorBox(e));
    }
  };
  more.addEventListener('click', load);
  const replay = dlq ? h('button', {
    type: 'button', id: 'replay', disabled: !allows('data-write'),
    text: `Replay dead letters to ${topic.slice(0, -4)}`,
    onclick: async () => {
      replace(result);
      try {
        const r = await (await request('POST', `${base}/replay`)).json();
        replace(result, h('p', { class: 'ok', dataset: { replayed: String(r.replayed) }, text: `Replayed ${r.replayed} dead letter(s) to ${topic.slice(0, -4)}.` }));
        announce(`Replayed ${r.replayed} dead letter(s).`);
      } catch (e) {
        replace(result, errorBox(e));
      }
    },
  }) : null;
  const groups = h('div', { id: 'topic-groups' });
  replace(container,
    h('h2', { text: dlq ? `Dead letters of ${topic.slice(0, -4)}` : `Topic ${topic}` }),
    dlq ? null : h('p', {}, h('a', { href: `#/topics${qs({ topic: `${topic}.dlq` })}`, text: `Its dead letters (${topic}.dlq)` })),
    groups,
    h('div', { class: 'actions' }, more, replay),
    dlq && !allows('data-write') ? h('p', { class: 'hint', text: 'Replaying needs the `data-write` scope, which your token lacks.' }) : null,
    result, counter,
    h('div', { class: 'table-wrap' }, h('table', { id: 'events-table' },
      h('caption', { text: `Events of ${topic}, oldest first` }),
      h('thead', {}, h('tr', {}, ['Seq', 'Id', 'Type', 'Source', 'Time', 'Extensions', 'Data'].map((t) => h('th', { scope: 'col', text: t })))),
      rows)));
  await Promise.all([load(), showGroups(groups, base)]);
}

/** The consumer groups of a topic: how far each has acknowledged, and its backlog. */
async function showGroups(container, base) {
  try {
    const { groups } = await getJSON(`${base}/groups`);
    replace(container, groups.length
      ? table('Consumer groups: acknowledged position and backlog (events not acknowledged yet)', ['Group', 'Acknowledged up to', 'Backlog'],
        groups.map((g) => [g.group, String(g.acked), h('span', { dataset: { lag: String(g.lag) }, text: String(g.lag) })]))
      : h('p', { class: 'meta', text: 'No consumer group reads this topic.' }));
  } catch (e) {
    replace(container, errorBox(e));
  }
}

const CORE = new Set(['id', 'type', 'source', 'time', 'specversion', 'data', 'data_base64', 'datacontenttype', 'subject', 'dataschema']);

function eventRow({ seq, event }) {
  const ext = Object.entries(event).filter(([k]) => !CORE.has(k)).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  let data = event.data !== undefined ? event.data : event.data_base64 !== undefined ? `(base64) ${event.data_base64}` : '';
  if (typeof data !== 'string') data = JSON.stringify(data, null, 2);
  return h('tr', { dataset: { seq: String(seq) } },
    h('td', { text: String(seq) }),
    h('td', { text: event.id }),
    h('td', { text: event.type }),
    h('td', { text: event.source }),
    h('td', { text: event.time ? new Date(event.time).toLocaleString() : '—' }),
    h('td', {}, ext.length ? h('ul', { class: 'plain' }, ext.map((e) => h('li', { text: e }))) : '—'),
    h('td', {}, h('pre', { text: data })));
}


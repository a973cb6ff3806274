// The console's shell: login, the navigation, the app picker and a hash router
// (`#/apps/shop`, `#/traces?route=/x`) that renders one page module at a time. Each page's
// `render(view, params)` may return a cleanup function (stopping its polling) that runs when
// the route changes.
import { ApiError, allows, currentApp, login, logout, session, setApp, token } from './api.js';
import { announce, errorBox, h, replace } from './dom.js';
import * as apps from './apps.js';
import * as metrics from './metrics.js';
import * as traces from './traces.js';
import * as logs from './logs.js';
import * as alerts from './alerts.js';
import * as cost from './cost.js';
import * as topics from './topics.js';
import * as kv from './kv.js';
import * as workflows from './workflows.js';

/** Route patterns → page renderers; `:name` captures a segment. */
const ROUTES = [
  ['/apps', apps.renderList],
  ['/apps/:app', apps.renderApp],
  ['/metrics', metrics.render],
  ['/traces', traces.renderSearch],
  ['/traces/:id', traces.renderTrace],
  ['/logs', logs.render],
  ['/alerts', alerts.renderList],
  ['/alerts/:id', alerts.renderAlert],
  ['/cost', cost.render],
  ['/topics', topics.render],
  ['/kv', kv.render],
  ['/workflows', workflows.renderList],
  ['/workflows/:name/:run', workflows.renderRun],
];

const $ = (id) => document.getElementById(id);
let cleanup = null;

/** Parses `#/a/b?x=1` into a path and params. */
function parseHash() {
  const raw = location.hash.startsWith('#/') ? location.hash.slice(1) : '/apps';
  const [path, query = ''] = raw.split('?');
  return { path, query: new URLSearchParams(query) };
}

/** A decoded path segment, or null when it is not valid percent-encoding (`%E0%A4%A`). */
function decode(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

function match(path) {
  const parts = path.split('/').filter(Boolean).map(decode);
  if (parts.includes(null)) return null;
  for (const [pattern, render] of ROUTES) {
    const want = pattern.split('/').filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(':') ? ((params[w.slice(1)] = parts[i]), true) : w === parts[i]))) {
      return { render, params };
    }
  }
  return null;
}

/** Renders the page of the current hash. */
async function route() {
  if (!session.apps.length && !session.whoami && !session.local) return;
  if (!location.hash.startsWith('#/')) return; // e.g. the skip link's #main
  if (cleanup) { cleanup(); cleanup = null; }
  const { path, query } = parseHash();
  const view = $('view');
  for (const a of document.querySelectorAll('#nav a')) {
    const current = path === a.getAttribute('href').slice(1) || path.startsWith(`${a.getAttribute('href').slice(1)}/`);
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const found = match(path);
  if (!found) {
    replace(view, h('h1', { text: 'Not found' }), h('p', { text: `The console has no page ${path}.` }));
    return;
  }
  // Each page renders into its own element: a page still loading when the user has moved on
  // writes into a detached element instead of over the newer page.
  const page = h('div', { class: 'page' }, h('p', { class: 'loading', text: 'Loading…' }));
  replace(view, page);
  try {
    const result = await found.render(page, { ...found.params, query, app: found.params.app || currentApp() });
    if (typeof result === 'function') {
      if (page.isConnected) cleanup = result;
      else result();
    }
  } catch (e) {
    if (e.name === 'AbortError') return;
    replace(page, errorBox(e));
    if (e instanceof ApiError && e.status === 401) showLogin(e);
  }
  if (!page.isConnected) return;
  const title = $('page-title');
  if (title) {
    document.title = `${title.textContent} · Nimbus console`;
    title.focus({ preventScroll: true });
  }
}

/** Fills the header: who is logged in, the app picker. */
function showSession() {
  $('login').hidden = true;
  $('nav').hidden = false;
  $('session').hidden = false;
  const who = session.local
    ? 'local token (nimbus up)'
    : session.whoami.token
      ? `${session.whoami.token.name || session.whoami.token.id} · ${session.whoami.token.role}`
      : 'no token (--dev)';
  $('who').textContent = who;
  $('who').dataset.role = session.local ? 'local' : session.whoami.token?.role || 'dev';
  const picker = $('app-picker');
  replace(picker, session.apps.map((a) => h('option', { value: a.name, text: a.name })));
  picker.value = currentApp();
  picker.disabled = session.apps.length < 2;
  document.body.dataset.canWrite = String(allows('traffic'));
}

function showLogin(err) {
  if (cleanup) { cleanup(); cleanup = null; }
  $('login').hidden = false;
  $('nav').hidden = true;
  $('session').hidden = true;
  replace($('view'));
  replace($('login-error'), err ? errorBox(err) : null);
  $('token').focus();
}

async function start() {
  try {
    await login();
  } catch (e) {
    showLogin(e);
    return false;
  }
  showSession();
  announce(`Logged in${session.local ? ' to nimbus up' : ''}; ${session.apps.length} app(s).`);
  if (!location.hash.startsWith('#/')) location.hash = '#/apps';
  else route();
  return true;
}

function init() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    token.set($('token').value.trim());
    $('token').value = '';
    if (!(await start())) token.clear();
  });
  $('logout').addEventListener('click', () => {
    logout();
    announce('Logged out.');
    showLogin();
  });
  $('app-picker').addEventListener('change', (ev) => {
    setApp(ev.target.value);
    announce(`App ${ev.target.value}.`);
    route();
  });
  window.addEventListener('hashchange', route);
  // Without a stored token there is nothing to try (a --dev server takes an empty token).
  if (token.get()) start(); else showLogin();
}

init();

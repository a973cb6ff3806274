// The control API client: the console's only source of data. The token lives in
// sessionStorage (gone when the tab closes) and is sent as `Authorization: Bearer`; no cookie
// is ever set, so other sites cannot make the browser call the API for them (no CSRF).

const TOKEN_KEY = 'nimbus.console.token';

/** An error the API answered with (its `ErrorBody`), or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, message, hint, code) {
    super(message);
    this.status = status;
    this.hint = hint;
    this.code = code;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY) || '',
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/**
 * Encodes one path segment: a `/` inside it is escaped, so a KV key `a/b` stays one segment. A
 * segment that is `.` or `..` is refused: the browser would resolve it (even escaped as `%2e`)
 * and send the request to another endpoint, e.g. a stored key `../../../../bank` turning
 * "delete this key" into `DELETE /v1/apps/bank`.
 */
export function seg(s) {
  const text = String(s);
  if (text === '.' || text === '..') {
    throw new ApiError(0, `\`${text}\` cannot be named in a URL; use the CLI (nimbus kv, nimbus events) for it`);
  }
  return encodeURIComponent(text);
}

/** A query string from an object, skipping empty values. */
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '' && v !== false) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Sends a request; resolves to the Response if it is a success, else throws an ApiError. */
export async function request(method, path, { json, body, contentType, signal } = {}) {
  const headers = {};
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (body !== undefined) {
    headers['Content-Type'] = contentType || 'application/octet-stream';
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body, signal, credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `the API cannot be reached (${e.message})`);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp;
}

async function errorOf(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON (e.g. an empty 404) */ }
  if (body && typeof body.error === 'string') return new ApiError(resp.status, body.error, body.hint, body.code);
  return new ApiError(resp.status, `${resp.status} ${resp.statusText || 'error'}`);
}

/** GET a JSON document. */
export async function getJSON(path, opts) {
  return (await request('GET', path, opts)).json();
}

/** Sends JSON, answers JSON (or null for 204). */
export async function sendJSON(method, path, json) {
  const resp = await request(method, path, { json });
  return resp.status === 204 ? null : resp.json();
}

// Who is logged in: `/v1/whoami` of `nimbus server`; under `nimbus up` (no whoami, one local
// token that may do everything for its one app) `local` is true.
export const session = { whoami: null, local: false, apps: [] };

const ROLE_SCOPES = {
  admin: ['read', 'deploy', 'traffic', 'data-read', 'data-write', 'secrets', 'admin'],
  deployer: ['read', 'deploy', 'traffic', 'data-read', 'data-write', 'secrets'],
  viewer: ['read', 'data-read'],
};

/**
 * Whether the token seems to allow `scope` (a hint to hide or disable controls; the API's
 * answer is what counts — policies may refuse more).
 */
export function allows(scope) {
  if (session.local) return true;
  const w = session.whoami;
  if (!w) return false;
  if (!w.token) return w.dev;
  const t = w.token;
  return (ROLE_SCOPES[t.role] || []).includes(scope) && (!t.scopes || t.scopes.length === 0 || t.scopes.includes(scope));
}

/** Logs in with the stored token: fills `session`, throws the API's refusal. */
export async function login() {
  session.whoami = null;
  session.apps = await getJSON('/v1/apps');
  // The local API of `nimbus up` lists its one app with no stored revisions (and has no
  // /v1/whoami: its one token may do everything there); a server lists only apps that have
  // revisions.
  session.local = session.apps.length === 1 && session.apps[0].revisions === 0;
  if (!session.local) session.whoami = await getJSON('/v1/whoami');
  return session;
}

/** Forgets the token. */
export function logout() {
  token.clear();
  session.whoami = null;
  session.local = false;
  session.apps = [];
}

const APP_KEY = 'nimbus.console.app';

/** The app the data pages (metrics, topics, KV, workflows) look at. */
export function currentApp() {
  const names = session.apps.map((a) => a.name);
  const chosen = sessionStorage.getItem(APP_KEY);
  return names.includes(chosen) ? chosen : names[0] || '';
}

/** Chooses the app the data pages look at. */
export function setApp(name) {
  sessionStorage.setItem(APP_KEY, name);
}

/**
 * The manifest text (TOML) of the revision of `app` with the most traffic, or null (under
 * `nimbus up`, without access, or with nothing served). For suggestions only: pages let any name
 * be typed.
 */
export async function servingManifest(app) {
  if (session.local) return null;
  try {
    const info = await getJSON(`/v1/apps/${seg(app)}`);
    const top = [...info.traffic.targets].sort((a, b) => b.percent - a.percent)[0];
    if (!top) return null;
    return (await getJSON(`/v1/apps/${seg(app)}/revisions/${seg(top.revision)}`)).manifest;
  } catch {
    return null;
  }
}

// Browser test of the web console, run by tests/console.rs against a `nimbus server` it
// prepared (app `APP` with two revisions, a slow request, dead letters, an admin and a viewer
// token; component `flaky` on /kitchen/env and /kitchen/panic, which this script makes raise an
// alert while the other steps run; usage flushed every second, and a budget of `APP` so small
// that all its thresholds are reached). Drives Debian's Chromium through playwright-core; every step must hold or the script
// exits 1 naming it. Screenshots go to SCREENSHOT_DIR.
import { chromium } from 'playwright-core';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const env = process.env;
for (const name of ['CONSOLE_URL', 'API_URL', 'GATEWAY_URL', 'ADMIN_TOKEN', 'VIEWER_TOKEN', 'APP', 'SCREENSHOT_DIR']) {
  if (!env[name]) throw new Error(`${name} is not set (tests/console.rs sets it)`);
}
const { CONSOLE_URL, API_URL, GATEWAY_URL, ADMIN_TOKEN, VIEWER_TOKEN, APP, SCREENSHOT_DIR } = env;
const T0 = Date.now();

// Problems the page reports: console errors and uncaught exceptions. A 403 is expected (and
// required) only while the viewer tries to change traffic.
const problems = [];
const external = [];
let expect403 = false;
let seen403 = 0;

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
  } catch (e) {
    console.error(`✗ ${name}: ${e.stack || e}`);
    throw e;
  }
  console.log(`✓ ${name} (${Date.now() - t} ms)`);
}

async function api(method, p, token, json) {
  const resp = await fetch(`${API_URL}${p}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(json ? { 'Content-Type': 'application/json' } : {}) },
    body: json ? JSON.stringify(json) : undefined,
  });
  return { status: resp.status, body: await resp.json().catch(() => null) };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function newPage(browser, viewport) {
  const context = await browser.newContext({ viewport });
  // Works offline: anything not to this machine is recorded and refused.
  await context.route((url) => !['127.0.0.1', 'localhost'].includes(url.hostname), (route) => {
    external.push(route.request().url());
    return route.abort();
  });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    if (expect403 && msg.text().includes('403')) { seen403 += 1; return; }
    problems.push(`console error: ${msg.text()} (${msg.location().url})`);
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.stack || err}`));
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: false });
}

/** Goes to a console route and waits for its heading. */
async function go(page, route, title) {
  await page.evaluate((r) => { location.hash = r; }, route);
  await page.locator('#page-title', { hasText: title }).waitFor({ timeout: 10000 });
}

const browser = await chromium.launch({
  executablePath: env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // playwright gives every launch a fresh temporary profile (--user-data-dir).
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
let exitCode = 1;
try {
  if (env.MODE === 'up') await upSteps(await newPage(browser, { width: 1280, height: 800 }));
  else await serverSteps();
  await step('no console errors, nothing fetched from elsewhere', async () => {
    assert(problems.length === 0, `the page reported:\n${problems.join('\n')}`);
    assert(external.length === 0, `requests left this machine: ${external.join(', ')}`);
  });
  exitCode = 0;
} catch {
  exitCode = 1;
} finally {
  await browser.close();
}
console.log(`browser steps took ${Date.now() - T0} ms`);
process.exit(exitCode);

/** Under `nimbus up`: the local token, the one app, the data pages. */
async function upSteps(page) {
  await step('up: log in with the local token', async () => {
    await page.goto(CONSOLE_URL);
    await page.fill('#token', ADMIN_TOKEN);
    await page.press('#token', 'Enter');
    await page.locator('#who[data-role="local"]').waitFor({ timeout: 10000 });
    await page.getByRole('link', { name: APP, exact: true }).click();
    await page.locator('#page-title', { hasText: `App ${APP}` }).waitFor();
  });
  await step('up: a request shows in logs, traces and metrics', async () => {
    await go(page, '#/logs', 'Logs');
    await page.locator('#log-count', { hasText: 'Following' }).waitFor();
    await sleep(300);
    const lines = page.locator('#log-lines li', { hasText: 'hello on stdout' });
    const before = await lines.count();
    assert((await fetch(`${GATEWAY_URL}/kitchen/log`)).status === 200, 'GET /kitchen/log');
    const deadline = Date.now() + 15000;
    while ((await lines.count()) <= before) {
      assert(Date.now() < deadline, 'no new log line arrived');
      await sleep(100);
    }
    await shot(page, 'up-logs');
    await go(page, '#/traces', 'Traces');
    await page.locator('#trace-results a[href^="#/traces/"]').first().waitFor({ timeout: 10000 });
    await go(page, '#/metrics', 'Metrics');
    await page.locator('figure[data-plot="rps"]').first().waitFor({ timeout: 15000 });
    await shot(page, 'up-metrics');
    await go(page, '#/alerts', 'Alerts');
    await page.locator('#alerts-updated[data-count]').waitFor({ timeout: 10000 });
    await page.locator('#silences-title').waitFor();
  });
}

/**
 * Makes the server raise an alert on component `flaky` (its metrics are judged once a second):
 * steady successful requests until its series has enough points for the detectors' warm-up (20
 * points of at least 5 requests), then only failing ones until the API lists the `error_rate`
 * anomaly (3 abnormal points in a row open it). Each phase is bounded in time. Resolves to the
 * counts of both, or to the error that stopped it.
 */
async function loadThenFail() {
  const hit = async (p, want) => {
    const resp = await fetch(`${GATEWAY_URL}${p}`);
    await resp.arrayBuffer();
    if (resp.status !== want) throw new Error(`GET ${p}: ${resp.status}, not ${want}`);
  };
  /** Requests `p` (three at a time) for at least `min` ms, until `done()` or `max` ms. */
  const phase = async (p, want, min, max, done) => {
    const t0 = Date.now();
    let n = 0;
    let checked = t0;
    for (;;) {
      await Promise.all([hit(p, want), hit(p, want), hit(p, want)]);
      n += 3;
      const now = Date.now();
      if (now - t0 >= max) return n;
      if (now - t0 >= min && now - checked >= 1000) {
        checked = now;
        if (await done()) return n;
      }
      await sleep(100);
    }
  };
  const warm = async () => {
    const { body } = await api('GET', `/v1/metrics/series?app=${APP}&component=flaky&range_s=120`, ADMIN_TOKEN);
    const points = body?.series?.find((x) => x.component === 'flaky')?.points || [];
    return points.filter((pt) => pt.requests >= 5 && pt.errors === 0).length >= 23;
  };
  const raised = async () => {
    const { body } = await api('GET', `/v1/alerts?app=${APP}`, ADMIN_TOKEN);
    return (body?.alerts || []).some((a) => a.component === 'flaky' && a.signal === 'error_rate');
  };
  try {
    const ok = await phase('/kitchen/env?name=HOME', 200, 22000, 45000, warm);
    const failed = await phase('/kitchen/panic', 500, 3000, 20000, raised);
    return { ok, failed };
  } catch (e) {
    return e;
  }
}

/** Against `nimbus server`: every page, an admin and a viewer. */
async function serverSteps() {
  const page = await newPage(browser, { width: 1280, height: 800 });
  let revisions = [];
  let alert = null;
  // Runs while the steps before the alerts' take their time.
  const alertTraffic = loadThenFail();

  await step('keyboard: tab to the token field, type it, submit with Enter', async () => {
    await page.goto(CONSOLE_URL);
    await page.locator('#token').waitFor({ state: 'visible' });
    let focused = '';
    for (let i = 0; i < 10 && focused !== 'token'; i += 1) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement?.id || '');
    }
    assert(focused === 'token', `Tab never reached the token field (at "${focused}")`);
    await page.keyboard.type(ADMIN_TOKEN);
    await page.keyboard.press('Enter');
    await page.locator('#who[data-role="admin"]').waitFor({ timeout: 10000 });
    assert(await page.evaluate(() => sessionStorage.getItem('nimbus.console.token')) === ADMIN_TOKEN, 'the token is in sessionStorage');
    assert((await page.context().cookies()).length === 0, 'no cookies are set');
  });

  await step('apps: the app and its two revisions', async () => {
    await page.locator('#page-title', { hasText: 'Apps' }).waitFor();
    await shot(page, 'apps');
    await page.getByRole('link', { name: APP, exact: true }).click();
    await page.locator('#page-title', { hasText: `App ${APP}` }).waitFor();
    revisions = await page.locator('input[data-revision]').evaluateAll((els) => els.map((e) => e.dataset.revision));
    assert(revisions.length === 2, `two revisions, saw ${revisions.length}`);
    await shot(page, 'app');
  });

  await step('traffic: a split that does not add up is refused, a good one is saved', async () => {
    const [newer, older] = revisions;
    await page.fill(`input[data-revision="${older}"]`, '50');
    await page.fill(`input[data-revision="${newer}"]`, '20');
    await page.click('#save-traffic');
    await page.locator('#traffic-result .error', { hasText: 'add up to 70, not 100' }).waitFor();
    await page.fill(`input[data-revision="${older}"]`, '30');
    await page.fill(`input[data-revision="${newer}"]`, '70');
    await page.click('#save-traffic');
    await page.locator('#traffic-result .ok').waitFor({ timeout: 10000 });
    const { body } = await api('GET', `/v1/apps/${APP}/traffic`, ADMIN_TOKEN);
    const got = Object.fromEntries(body.targets.map((t) => [t.revision, t.percent]));
    assert(got[older] === 30 && got[newer] === 70, `the API has the new split: ${JSON.stringify(body)}`);
    await page.locator(`.percent[data-revision="${older}"]`, { hasText: '30%' }).waitFor();
  });

  await step('metrics: the request-rate plot follows generated traffic', async () => {
    await go(page, '#/metrics', 'Metrics');
    // The kitchen's plot, as it was before the burst (a few earlier requests: under 1 req/s).
    const rps = page.locator('section[data-component="kitchen"] figure[data-plot="rps"]');
    await rps.waitFor({ timeout: 15000 });
    const before = Number(await rps.getAttribute('data-latest')) || 0;
    const deadline = Date.now() + 30000;
    let latest = before;
    while (Date.now() < deadline) {
      await Promise.all(Array.from({ length: 10 }, () => fetch(`${GATEWAY_URL}/kitchen/echo`).then((r) => r.text())));
      latest = Number(await rps.getAttribute('data-latest')) || 0;
      if (latest > before && latest >= 2) break;
      await sleep(200);
    }
    assert(latest > before && latest >= 2, `the request-rate plot follows the burst (${before} → ${latest} req/s)`);
    console.log(`  request rate ${before} → ${latest} req/s`);
    await shot(page, 'metrics');
  });

  await step('traces: search slow requests, open the waterfall', async () => {
    await go(page, '#/traces?slow_ms=300', 'Traces');
    const first = page.locator('#trace-results a[href^="#/traces/"]').first();
    await first.waitFor({ timeout: 10000 });
    await shot(page, 'traces');
    await first.click();
    await page.locator('#page-title', { hasText: /^Trace [0-9a-f]{12}/ }).waitFor();
    await page.locator('#waterfall > li').first().waitFor();
    const spans = await page.locator('#waterfall > li').count();
    assert(spans >= 1, `the waterfall has spans (${spans})`);
    const names = await page.locator('#waterfall .span-name').allTextContents();
    assert(names.some((n) => n.includes('kitchen') || n.includes('GET')), `spans name the request: ${names.join(' | ')}`);
    await page.locator('#waterfall summary').first().click();
    await page.locator('#waterfall details[open] table').first().waitFor();
    await shot(page, 'trace');
  });

  await step('logs: a new line arrives while following', async () => {
    await go(page, '#/logs', 'Logs');
    await page.locator('#log-count', { hasText: 'Following' }).waitFor();
    await sleep(300);
    const lines = page.locator('#log-lines li', { hasText: 'hello on stdout' });
    const before = await lines.count();
    const resp = await fetch(`${GATEWAY_URL}/kitchen/log`);
    assert(resp.status === 200, `GET /kitchen/log: ${resp.status}`);
    const deadline = Date.now() + 15000;
    while ((await lines.count()) <= before) {
      assert(Date.now() < deadline, 'no new log line arrived');
      await sleep(100);
    }
    await shot(page, 'logs');
  });

  await step('topics: the consumer group of a topic with its backlog', async () => {
    await go(page, '#/topics?topic=orders', 'Topics');
    const lag = page.locator('#topic-groups [data-lag]');
    await lag.first().waitFor({ timeout: 10000 });
    assert(Number.isInteger(Number(await lag.first().getAttribute('data-lag'))), 'a backlog is shown');
  });

  await step('topics: dead letters are shown as text and replayed', async () => {
    await go(page, '#/topics?topic=orders.dlq', 'Topics');
    const rows = page.locator('#events-table tbody tr');
    await rows.first().waitFor({ timeout: 10000 });
    assert((await rows.count()) >= 2, 'two dead letters');
    assert((await page.locator('#events-table img').count()) === 0, 'an event payload is not HTML');
    assert((await page.locator('#events-table pre', { hasText: '<img src=x' }).count()) >= 1, 'the payload is shown as text');
    await shot(page, 'topics');
    await page.click('#replay');
    const result = page.locator('#replay-result [data-replayed]');
    await result.waitFor({ timeout: 10000 });
    const replayed = Number(await result.getAttribute('data-replayed'));
    assert(replayed >= 2, `replayed ${replayed} dead letters`);
  });

  await step('kv: the bucket a workflow wrote, a value', async () => {
    await go(page, '#/kv', 'KV');
    assert(await page.inputValue('#kv-bucket') === 'effects', 'the manifest\'s bucket is proposed');
    const key = page.locator('#kv-keys button').first();
    await key.waitFor({ timeout: 10000 });
    await key.click();
    await page.locator('#kv-value pre.value').waitFor();
    await shot(page, 'kv');
  });

  await step('kv: a key that looks like a path names only itself', async () => {
    // A key planted by anyone who may write the app's data: if the console put it in the URL as
    // path segments, the browser would resolve `..` and "delete this key" would delete the app.
    const planted = '../../../../' + APP;
    const put = await fetch(`${API_URL}/v1/apps/${APP}/kv/effects/keys/${encodeURIComponent(planted)}`, {
      method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/octet-stream' }, body: 'bait',
    });
    assert(put.ok, `planting the key: ${put.status}`);
    await go(page, `#/kv?bucket=effects&prefix=${encodeURIComponent('../')}`, 'KV');
    const key = page.locator('#kv-keys button', { hasText: planted });
    await key.waitFor({ timeout: 10000 });
    await key.click();
    assert((await page.locator('#kv-value pre.value').textContent()) === 'bait', 'the key\'s own value is shown');
    await page.locator('#kv-value button.danger').click();
    // The page lists the bucket again without the key (so no navigation is still to come).
    await page.locator('#kv-keys button', { hasText: planted }).waitFor({ state: 'detached', timeout: 10000 });
    await page.locator('#kv-keys').waitFor();
    const gone = Date.now() + 10000;
    while ((await api('GET', `/v1/apps/${APP}/kv/effects/keys/${encodeURIComponent(planted)}`, ADMIN_TOKEN)).status !== 404) {
      assert(Date.now() < gone, 'the key was deleted');
      await sleep(100);
    }
    assert((await api('GET', `/v1/apps/${APP}`, ADMIN_TOKEN)).status === 200, 'the app is still there');
  });

  await step('workflows: the run and its timeline', async () => {
    await go(page, '#/workflows', 'Workflows');
    const run = page.locator('#wf-runs a[href^="#/workflows/order/"]').first();
    await run.waitFor({ timeout: 10000 });
    await shot(page, 'workflows');
    await run.click();
    await page.locator('#page-title', { hasText: 'Run ' }).waitFor();
    const steps = await page.locator('#wf-timeline > li').count();
    assert(steps >= 3, `the timeline has the saga's steps (${steps})`);
    await shot(page, 'workflow-run');
  });

  await step('alerts: the server\'s alert is listed, its detail shows the suspects', async () => {
    const traffic = await alertTraffic;
    assert(!(traffic instanceof Error), `loading flaky: ${traffic.stack || traffic}`);
    // The API first (the load above stops once it lists the alert).
    const deadline = Date.now() + 10000;
    for (;;) {
      const { status, body } = await api('GET', `/v1/alerts?app=${APP}`, ADMIN_TOKEN);
      assert(status === 200, `GET /v1/alerts: ${status}`);
      alert = body.alerts.find((a) => a.component === 'flaky' && a.signal === 'error_rate');
      if (alert) break;
      assert(Date.now() < deadline, `no error_rate alert of flaky after ${traffic.ok} good and ${traffic.failed} failing requests: ${JSON.stringify(body)}`);
      await sleep(500);
    }
    console.log(`  after ${traffic.ok} good and ${traffic.failed} failing requests, ${alert.id}: ${alert.summary}; suspects ${alert.suspects.map((s) => s.component).join(', ')}`);
    assert(alert.state === 'firing' && alert.suspects.length >= 1, `a firing alert with suspects: ${JSON.stringify(alert)}`);

    await go(page, '#/alerts', 'Alerts');
    const row = page.locator(`#alerts-table tbody tr[data-alert="${alert.id}"]`);
    await row.waitFor({ timeout: 10000 });
    const text = await row.textContent();
    for (const want of ['firing', alert.severity, 'anomaly', `${APP}/flaky`, 'error_rate', alert.summary, alert.suspects[0].component]) {
      assert(text.includes(want), `the row shows "${want}": ${text}`);
    }
    await shot(page, 'alerts');
    // The filter: resolved alerts do not include it, all do (without leaving the page).
    await page.selectOption('#alert-state', 'resolved');
    await row.waitFor({ state: 'detached', timeout: 10000 });
    assert(await page.evaluate(() => location.hash) === '#/alerts?state=resolved', 'the filter is in the address');
    await page.selectOption('#alert-state', 'all');
    await row.waitFor({ timeout: 10000 });

    // Open it with the keyboard.
    await row.locator('a').focus();
    await page.keyboard.press('Enter');
    await page.locator('#page-title', { hasText: 'Alert: error rate of' }).waitFor({ timeout: 10000 });
    assert((await page.textContent('#alert-summary')) === alert.summary, 'the summary');
    assert((await page.textContent('#alert-value')).includes('%'), 'value vs baseline as percentages');
    const suspects = page.locator('#suspects > li');
    await suspects.first().waitFor();
    const names = await suspects.evaluateAll((els) => els.map((e) => e.dataset.suspect));
    assert(JSON.stringify(names) === JSON.stringify(alert.suspects.map((s) => s.component)), `the suspects in rank order: ${names}`);
    const first = alert.suspects[0];
    const evidence = await suspects.first().locator('.evidence li').allTextContents();
    assert(JSON.stringify(evidence) === JSON.stringify(first.evidence), `the first suspect's evidence: ${evidence.join(' | ')}`);
    const logs = await suspects.first().locator('ol.log li').allTextContents();
    assert(JSON.stringify(logs) === JSON.stringify(first.logs || []), `its log lines, as text: ${logs.join(' | ')}`);
    assert((await page.locator('#suspects img, #suspects script').count()) === 0, 'no markup from app data');
    await shot(page, 'alert');
    if (first.traces.length) {
      await suspects.first().locator(`a[href="#/traces/${first.traces[0]}"]`).click();
      await page.locator('#waterfall > li').first().waitFor({ timeout: 10000 });
      await page.goBack();
      await page.locator('#suspects > li').first().waitFor({ timeout: 10000 });
    }
  });

  await step('alerts: a silence made from the alert is in the API, and ending it removes it', async () => {
    const comment = 'console test <b>load</b>';
    await page.fill('#silence-comment', comment);
    await page.selectOption('#silence-duration', '900');
    await page.click('#silence-submit');
    const made = page.locator('#silence-result [data-silence]');
    await made.waitFor({ timeout: 10000 });
    const id = await made.getAttribute('data-silence');
    const { body } = await api('GET', '/v1/silences', ADMIN_TOKEN);
    const stored = body.silences.find((x) => x.id === id);
    assert(stored && stored.app === APP && stored.component === 'flaky' && stored.signal === 'error_rate' && stored.comment === comment,
      `the API has the silence: ${JSON.stringify(body)}`);
    assert(stored.ends_at - stored.created_at === 900000, `it lasts 15 minutes: ${JSON.stringify(stored)}`);
    const row = page.locator(`#silences-table tbody tr[data-silence="${id}"]`);
    await row.waitFor();
    assert((await row.textContent()).includes(comment) && (await page.locator('#silences-table b').count()) === 0, 'the comment as text');
    await shot(page, 'alert-silenced');
    await row.locator(`button[data-end="${id}"]`).click();
    await page.locator(`#silences-result [data-ended="${id}"]`).waitFor({ timeout: 10000 });
    await row.waitFor({ state: 'detached' });
    const after = await api('GET', '/v1/silences', ADMIN_TOKEN);
    assert(!after.body.silences.some((x) => x.id === id), `the silence ended: ${JSON.stringify(after.body)}`);
  });

  await step('cost: the app\'s usage per day and in a table, its CSV and its budget', async () => {
    // The API first: usage reaches it at each flush (every second here).
    const deadline = Date.now() + 10000;
    for (;;) {
      const { status, body } = await api('GET', '/v1/cost', ADMIN_TOKEN);
      assert(status === 200, `GET /v1/cost: ${status}`);
      if (body.rows.some((r) => r.app === APP && r.usage.invocations > 0)) break;
      assert(Date.now() < deadline, `no usage of ${APP}: ${JSON.stringify(body)}`);
      await sleep(250);
    }
    await go(page, '#/cost', 'Cost');
    const row = page.locator(`#cost-table tbody tr[data-app="${APP}"]`);
    await row.waitFor({ timeout: 15000 });
    const invocations = Number(await row.getAttribute('data-invocations'));
    assert(invocations > 0 && (await row.textContent()).includes(APP), `the table shows ${APP} with invocations: ${await row.textContent()}`);
    const plot = page.locator('figure[data-plot="cost-cost"]');
    await plot.waitFor();
    assert(Number(await plot.getAttribute('data-points')) >= 1 && (await plot.locator('polyline, circle').count()) >= 1, 'the cost per day is drawn');
    assert((await plot.locator('.legend li').allTextContents()).some((t) => t.startsWith(`${APP}:`)), 'one series per app');
    const budget = page.locator(`#budgets-table tbody tr[data-budget="app ${APP}"]`);
    await budget.waitFor({ timeout: 10000 });
    const budgetText = await budget.textContent();
    assert(budgetText.includes('50 %, 100 %') && await budget.getAttribute('data-throttled') === 'false', `the budget's thresholds are reached, not throttled: ${budgetText}`);
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, 'cost.png'), fullPage: true });
    await page.selectOption('#cost-measure', 'invocations');
    await page.locator('figure[data-plot="cost-invocations"]').waitFor();

    // By component, and that table as CSV (fetched with the token, saved as a file).
    await page.selectOption('#cost-by', 'component');
    await page.locator(`#cost-table tbody tr[data-app="${APP}"][data-component="flaky"]`).waitFor({ timeout: 10000 });
    const hash = await page.evaluate(() => location.hash);
    assert(hash.startsWith('#/cost?') && hash.includes('by=component'), `the grouping is in the address: ${hash}`);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#cost-csv')]);
    const csv = await readFile(await download.path(), 'utf8');
    const lines = csv.trim().split('\r\n');
    assert(lines[0].startsWith('app,component,invocations,') && lines.some((l) => l.startsWith(`${APP},flaky,`)), `the CSV by app and component: ${csv.slice(0, 300)}`);
    await page.locator('#cost-csv-result [data-file]').waitFor();
  });

  await step('phone width (390x844): no horizontal scrolling', async () => {
    const phone = await newPage(browser, { width: 390, height: 844 });
    await phone.goto(CONSOLE_URL);
    await phone.fill('#token', ADMIN_TOKEN);
    await phone.click('button[type="submit"]');
    await phone.locator('#page-title', { hasText: 'Apps' }).waitFor();
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert(width <= 390, `the page is ${width}px wide at 390px`);
    await shot(phone, 'phone-apps');
    await phone.evaluate((a) => { location.hash = `#/apps/${a}`; }, APP);
    await phone.locator('#traffic-form').waitFor();
    await shot(phone, 'phone-app');
    await phone.evaluate(() => { location.hash = '#/metrics'; });
    await phone.locator('figure[data-plot="rps"]').first().waitFor({ timeout: 10000 });
    const metricsWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert(metricsWidth <= 390, `the metrics page is ${metricsWidth}px wide at 390px`);
    await shot(phone, 'phone-metrics');
    await phone.evaluate(() => { location.hash = '#/cost'; });
    await phone.locator('#cost-table').waitFor({ timeout: 10000 });
    const costWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert(costWidth <= 390, `the cost page is ${costWidth}px wide at 390px`);
    await shot(phone, 'phone-cost');
    await phone.evaluate((id) => { location.hash = `#/alerts/${id}`; }, alert.id);
    await phone.locator('#suspects > li').first().waitFor({ timeout: 10000 });
    const alertWidth = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert(alertWidth <= 390, `the alert page is ${alertWidth}px wide at 390px`);
    await shot(phone, 'phone-alert');
    await phone.context().close();
  });

  await step('viewer: write controls disabled, and the API refusal is shown when forced', async () => {
    const viewer = await newPage(browser, { width: 1280, height: 800 });
    await viewer.goto(`${CONSOLE_URL}#/apps/${APP}`);
    await viewer.fill('#token', VIEWER_TOKEN);
    await viewer.press('#token', 'Enter');
    await viewer.locator('#who[data-role="viewer"]').waitFor();
    await viewer.locator('#traffic-form').waitFor();
    assert(await viewer.evaluate(() => document.querySelector('#traffic-form fieldset').disabled), 'the traffic editor is disabled for a viewer');
    assert(await viewer.locator('#save-traffic').isDisabled(), 'save is disabled');
    const before = (await api('GET', `/v1/apps/${APP}/traffic`, ADMIN_TOKEN)).body;
    // What the API answers this token (the UI must show exactly that).
    const refused = await api('PUT', `/v1/apps/${APP}/traffic`, VIEWER_TOKEN, { targets: [{ revision: revisions[0], percent: 100 }], tags: {} });
    assert(refused.status === 403, `the API refuses a viewer (${refused.status})`);
    // A stale or wrong client-side view must not matter: enable the form and send.
    await viewer.evaluate(() => { document.querySelector('#traffic-form fieldset').disabled = false; });
    await viewer.fill(`input[data-revision="${revisions[0]}"]`, '100');
    await viewer.fill(`input[data-revision="${revisions[1]}"]`, '0');
    expect403 = true;
    await viewer.click('#save-traffic');
    await viewer.locator('#traffic-result .error', { hasText: refused.body.error }).waitFor({ timeout: 10000 });
    await viewer.locator('#traffic-result .error', { hasText: '403' }).waitFor();
    expect403 = false;
    const after = (await api('GET', `/v1/apps/${APP}/traffic`, ADMIN_TOKEN)).body;
    assert(JSON.stringify(after) === JSON.stringify(before), `traffic unchanged: ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
    await shot(viewer, 'viewer-refused');

    // Silencing needs `traffic` on the app too: disabled, and refused when forced.
    await viewer.evaluate((id) => { location.hash = `#/alerts/${id}`; }, alert.id);
    await viewer.locator('#silence-form').waitFor({ timeout: 10000 });
    assert(await viewer.evaluate(() => document.querySelector('#silence-form fieldset').disabled), 'the silence form is disabled for a viewer');
    const no = await api('POST', `/v1/apps/${APP}/silences`, VIEWER_TOKEN, { duration_s: 60, comment: 'viewer' });
    assert(no.status === 403, `the API refuses a viewer's silence (${no.status})`);
    await viewer.evaluate(() => { document.querySelector('#silence-form fieldset').disabled = false; });
    await viewer.fill('#silence-comment', 'viewer');
    expect403 = true;
    await viewer.click('#silence-submit');
    await viewer.locator('#silence-result .error', { hasText: no.body.error }).waitFor({ timeout: 10000 });
    await viewer.locator('#silence-result .error', { hasText: '403' }).waitFor();
    expect403 = false;
    const silences = (await api('GET', '/v1/silences', ADMIN_TOKEN)).body.silences;
    assert(silences.length === 0, `no silence was made: ${JSON.stringify(silences)}`);
    await viewer.context().close();
  });
}

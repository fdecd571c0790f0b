import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SqliteStore } from '@apm-sidecar/collector';
import { MetricKind, encodeSeries } from '@apm-sidecar/proto';
import { connect } from '@apm-sidecar/shim';
import { parseAccessKey } from '@apm-sidecar/proto/upstream';
import { chromium } from 'playwright-core';
import { runCleanups } from '../helpers/cleanups';
import { createKey, createToken, getJson, startCollector } from '../helpers/collector';
import { startSidecar, tempDir, waitFor } from '../helpers/procs';

// The collector's web page in a real browser (Debian's chromium, driven by playwright-core):
// empty states, a live agent with its charts, a stalled one, a greyed disconnected one, API errors.

// What the callbacks passed to the page see (this package compiles without the DOM library).
declare const document: { querySelector(sel: string): { getAttribute(name: string): string | null } | null };
declare const sessionStorage: { getItem(key: string): string | null };
declare function getComputedStyle(e: unknown): { opacity: string };

const CHROMIUM = '/usr/bin/chromium';
// As the machine docs say: headless, no sandbox as root, and no background connections (the network is closed).
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const FAST = ['--set', 'flush_ms=50', '--set', 'metric_interval_ms=200', '--set', 'tcp_connection_timeout=1000'];
const WAIT = { timeout: 30_000 };
const AGENT = 'page-agent';
const ROW = `tr[data-agent-id="${AGENT}"]`;
const HIST = 'figure[data-metric="page.latency_ms"]';

test('the collector page: asks for the read token, then agents and charts live, a stalled agent marked, a killed one greyed, API errors shown', {
  timeout: 180_000,
}, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip('chromium not installed: browser test skipped (apt-get install chromium)');
    return;
  }
  const tmp = tempDir('apm-page-');
  // Screenshots go where APM_ARTIFACTS_DIR says (`make test`: test/artifacts/, git-ignored), else stay in the test's temporary directory.
  const ARTIFACTS = process.env.APM_ARTIFACTS_DIR ?? join(tmp.dir, 'artifacts');
  // Undone last-in first-out, whatever fails.
  const cleanups: (() => unknown)[] = [];
  try {
    const data = join(tmp.dir, 'collector');
    const key = await createKey(data, 'page');
    const token = await createToken(data);
    const collector = await startCollector(data, ['--set', 'stall_after_ms=1500']);
    cleanups.push(() => collector.kill('SIGTERM'));

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    cleanups.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
    const base = `http://127.0.0.1:${collector.httpPort}`;
    await page.goto(`${base}/?refresh=300`);

    // A token is configured: the page asks for it; a wrong one is refused and asked for again.
    await page.waitForSelector('#token-form:not([hidden])', WAIT);
    await page.fill('#token-input', `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`);
    await page.click('#token-form button[type="submit"]');
    await page.getByText('did not accept this token').waitFor(WAIT);
    assert.ok(await page.locator('#token-form').isVisible());
    await page.fill('#token-input', token);
    await page.click('#token-form button[type="submit"]');
    await page.waitForSelector('#token-form[hidden]', { state: 'attached', ...WAIT });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('apm-collector-token')), token, 'kept for the session');
    // A reload keeps the token: no second prompt.
    await page.reload();
    // Nothing yet: both empty states say so.
    await page.getByText('No agents yet').waitFor(WAIT);
    await page.getByText('No metric points in the last 10 min').waitFor(WAIT);
    assert.ok(await page.locator('#token-form').isHidden(), 'no second prompt after a reload');

    const sc = await startSidecar(
      join(tmp.dir, 'sc'),
      ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(collector.port), ...FAST, '--set', `agent_id=${AGENT}`],
      { APM_SIDECAR_ACCESS_KEY: key },
    );
    cleanups.push(() => sc.kill('SIGKILL'));
    const apm = connect({ app: 'checkout', socket: sc.socket, flushMs: 50 });
    cleanups.push(() => apm.close());
    const lat = apm.histogram('page.latency_ms', { route: '/pay' });
    const orders = apm.counter('page.orders', { region: 'eu' });
    const queue = apm.gauge('page.queue_depth');
    let i = 0;
    const recorder = setInterval(() => {
      i += 1;
      // A spread with a tail, so p50, p95 and p99 are three distinct lines.
      for (let k = 0; k < 20; k++) lat.record(20 + ((i * 7 + k * 13) % 40) + (k === 0 ? 150 : k === 1 ? 60 : 0));
      orders.add(1 + (i % 3));
      queue.set(5 + (i % 10));
    }, 50);
    cleanups.push(() => clearInterval(recorder));

    // Live: the row, then a histogram chart with three quantile lines of at least two points each.
    await page.waitForSelector(`${ROW}[data-state="live"]`, WAIT);
    // Then a couple of seconds of intervals (10 points of 200 ms), so the chart has a shape.
    await page.waitForFunction(
      (sel) =>
        ['p50', 'p95', 'p99'].every((q) => (document.querySelector(`${sel} svg path[data-quantile="${q}"]`)?.getAttribute('d') ?? '').split('L').length > 10),
      HIST,
      WAIT,
    );
    await page.waitForSelector('figure[data-metric="page.orders"][data-kind="counter"] svg path.line', WAIT);
    await page.waitForSelector('figure[data-metric="page.queue_depth"][data-kind="gauge"] svg path.line', WAIT);
    const row = page.locator(ROW);
    // The app cell shows what the API says (the app's name arrives with the sidecar's AgentInfo; '–' when none).
    await waitFor('the app cell to match /api/agents', async () => {
      const api = (await getJson<any[]>(collector.httpPort, '/api/agents', { token })).body.find((a) => a.agentId === AGENT);
      return (await row.locator('td.agent-app').textContent()) === (api?.app || '–');
    });
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual([cells[0], cells[1], cells[4], cells[6]], [AGENT, parseAccessKey(key).projectId, 'live', 'yes'], 'agent, its project, state, license');
    assert.equal(await row.evaluate((r) => getComputedStyle(r).opacity), '1');
    const legend = await page.locator(`${HIST} svg .legend text`).allTextContents();
    assert.deepEqual(legend, ['p50', 'p95', 'p99']);
    assert.ok((await page.locator(`${HIST} svg .tick-labels text`).count()) >= 4, 'the axes are labelled');
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page-live.png'), fullPage: true });

    // Stalled: the app stops sending, the connection stays up.
    clearInterval(recorder);
    await apm.close();
    await page.waitForSelector(`${ROW}[data-state="stalled"].agent-stalled`, WAIT);
    assert.equal(await row.locator('.badge').textContent(), 'stalled');
    assert.ok(await row.locator('.badge').isVisible());
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page-stalled.png'), fullPage: true });

    // Killed: the collector sees the connection close; the row stays, greyed.
    await sc.kill('SIGKILL');
    await page.waitForSelector(`${ROW}[data-state="disconnected"]`, WAIT);
    const greyed = await row.evaluate((r) => ({ opacity: Number(getComputedStyle(r).opacity), cls: r.classList.contains('agent-disconnected') }));
    assert.ok(greyed.cls, 'the row has the agent-disconnected class');
    assert.ok(greyed.opacity < 1, `the row is greyed (opacity ${greyed.opacity})`);
    assert.equal(await page.locator(`${HIST} svg path[data-quantile="p99"]`).count(), 1, 'its data stays charted');
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page.png'), fullPage: true });

    // The collector goes away: the page says so, keeps what it showed, and keeps trying.
    await collector.kill('SIGTERM');
    await page.waitForSelector('#error:not([hidden])', WAIT);
    assert.match((await page.locator('#error').textContent()) ?? '', /cannot reach the collector/);
    assert.equal(await page.locator(ROW).count(), 1);
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page-offline.png'), fullPage: true });

    assert.deepEqual(
      pageErrors.filter((e) => !/Failed to load resource|ERR_CONNECTION_REFUSED/.test(e)),
      [],
      'no script errors on the page',
    );
  } finally {
    await runCleanups(cleanups);
    tmp.cleanup();
  }
});

test('the same agent id in two projects: two rows, each showing its project, and two series named by project', { timeout: 120_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip('chromium not installed: browser test skipped (apt-get install chromium)');
    return;
  }
  const tmp = tempDir('apm-page2-');
  const cleanups: (() => unknown)[] = [];
  try {
    const data = join(tmp.dir, 'collector');
    const projects = [parseAccessKey(await createKey(data, 'alpha')).projectId, parseAccessKey(await createKey(data, 'beta')).projectId];
    const collector = await startCollector(data);
    cleanups.push(() => collector.kill('SIGTERM'));
    // Written by another process on the same database, as two real sessions would store them.
    const side = SqliteStore.open(data);
    const now = Date.now();
    const orders = { key: encodeSeries(MetricKind.Counter, 'twin.orders', {}).toString('latin1'), kind: MetricKind.Counter, name: 'twin.orders', tags: {} };
    projects.forEach((projectId, i) => {
      side.agentConnected(projectId, { agentId: 'twin', host: `host-${i}`, version: '1', apps: ['shop'] }, now);
      for (let k = 0; k < 3; k++) {
        const v = (i + 1) * 10;
        side.storeMetrics(
          { projectId, agentId: 'twin' },
          [
            {
              packId: `p${k}`,
              intervalStart: now - 30_000 + k * 10_000,
              intervalMs: 10_000,
              points: [{ series: orders, count: 1, sum: v, min: v, max: v, last: Number.NaN, sketch: null }],
            },
          ],
          now,
        );
      }
    });
    side.close();

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    cleanups.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`http://127.0.0.1:${collector.httpPort}/?refresh=300`);
    await page.waitForSelector('tr[data-agent-id="twin"] + tr[data-agent-id="twin"]', WAIT);
    const rows = await page.locator('tr[data-agent-id="twin"]').evaluateAll((trs) =>
      trs.map((tr) => {
        const r = tr as unknown as { dataset: { project: string }; cells: ArrayLike<{ textContent: string | null }> };
        return [r.dataset.project, r.cells[0]?.textContent, r.cells[1]?.textContent, r.cells[3]?.textContent];
      }),
    );
    assert.deepEqual(rows.sort(), [
      [projects[0], 'twin', projects[0], 'host-0'],
      [projects[1], 'twin', projects[1], 'host-1'],
    ]);
    const chart = 'figure[data-metric="twin.orders"]';
    // Flat lines have no height: wait for them attached, not visible.
    await page.waitForSelector(`${chart} svg path.line`, { ...WAIT, state: 'attached' });
    const legend = (await page.locator(`${chart} svg .legend text`).allTextContents()).sort();
    assert.deepEqual(legend, [`twin (${projects[0]})`, `twin (${projects[1]})`]);
    // ?project= narrows the page to one project.
    await page.goto(`http://127.0.0.1:${collector.httpPort}/?refresh=300&project=${projects[1]}`);
    await page.waitForSelector(`tr[data-agent-id="twin"][data-project="${projects[1]}"]`, WAIT);
    await page.waitForSelector(`${chart} svg path.line`, { ...WAIT, state: 'attached' });
    assert.equal(await page.locator('tr[data-agent-id="twin"]').count(), 1);
    assert.equal(await page.locator(`${chart} svg path.line`).count(), 1);
  } finally {
    await runCleanups(cleanups);
    tmp.cleanup();
  }
});

test('transactions with their waterfall and the other parts of their trace, events, snapshots, registrations, a series picker and units', {
  timeout: 150_000,
}, async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip('chromium not installed: browser test skipped (apt-get install chromium)');
    return;
  }
  const tmp = tempDir('apm-page3-');
  const ARTIFACTS = process.env.APM_ARTIFACTS_DIR ?? join(tmp.dir, 'artifacts');
  const cleanups: (() => unknown)[] = [];
  try {
    const data = join(tmp.dir, 'collector');
    const key = await createKey(data, 'views');
    const collector = await startCollector(data);
    cleanups.push(() => collector.kill('SIGTERM'));
    // Two agents, one app each: the front calls the back, so one trace has a part on each.
    const shims = [];
    for (const [agent, app] of [
      ['front', 'web'],
      ['back', 'payments'],
    ] as const) {
      const sc = await startSidecar(
        join(tmp.dir, agent),
        ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(collector.port), ...FAST, '--set', `agent_id=${agent}`],
        { APM_SIDECAR_ACCESS_KEY: key },
      );
      cleanups.push(() => sc.kill('SIGKILL'));
      const apm = connect({ app, socket: sc.socket, flushMs: 50 });
      cleanups.push(() => apm.close());
      await waitFor(`the ${app} shim to be active`, () => apm.state === 'active');
      shims.push(apm);
    }
    const [web, payments] = shims as [ReturnType<typeof connect>, ReturnType<typeof connect>];
    const front = web.startTransaction('GET /checkout');
    front.step('http', 'POST http://payments/pay', 12);
    const back = payments.startTransaction('POST /pay', front.outgoingHeaders());
    back.step('sql', 'INSERT INTO payments VALUES (?)', 4);
    back.end();
    front.end();
    web.event({ type: 'deploy', message: 'web 1.2.3 rolled out' });
    web.snapshot({ pool: { size: 10, busy: 3 } }, 'db-pool');
    web.registerBusinessTransaction('Checkout');
    for (let i = 0; i < 12; i++) web.counter('many.series', { shard: String(i).padStart(2, '0') }).add(i + 1);
    web.histogram('views.latency_ms').record(42);
    assert.equal(await web.flush(), true);
    assert.equal(await payments.flush(), true);

    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    cleanups.push(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    await page.goto(`http://127.0.0.1:${collector.httpPort}/?refresh=300`);

    // The transactions table, then one transaction's waterfall: its own bar and one per step.
    await page.waitForSelector('#traces tr.trace + tr.trace', WAIT);
    await page.getByRole('button', { name: 'GET /checkout' }).click();
    await page.waitForSelector(`#trace-detail:not([hidden])[data-txid="${front.txid}"]`, WAIT);
    assert.equal(await page.locator('#trace-waterfall svg g.step').count(), 2, 'the transaction and its one step');
    assert.match((await page.locator('#trace-waterfall svg').textContent()) ?? '', /http: POST http:\/\/payments\/pay/);
    // The other part of the same trace, recorded by the other agent, one click away.
    await page.waitForSelector('#trace-parts li + li', WAIT);
    assert.match((await page.locator('#trace-parts').textContent()) ?? '', /back \(.*\) · payments · POST \/pay/);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page-transaction.png'), fullPage: true });
    await page.locator('#trace-parts button', { hasText: 'POST /pay' }).click();
    await page.waitForSelector(`#trace-detail[data-txid="${back.txid}"]`, WAIT);
    assert.match((await page.locator('#trace-waterfall svg').textContent()) ?? '', /sql: INSERT INTO payments/);
    assert.equal(await page.locator('#traces tr.selected').count(), 1, 'the shown transaction is marked in the table');

    // Events, snapshots and registrations.
    await page.waitForSelector('#events td:text("web 1.2.3 rolled out")', WAIT);
    await page.waitForSelector('#snapshots td:text("db-pool")', WAIT);
    assert.match((await page.locator('#snapshots code').first().textContent()) ?? '', /"busy":3/);
    await page.waitForSelector('#registrations td:text("Checkout")', WAIT);

    // Every series reachable: 12 series, 8 drawn by default, a ninth one click away.
    const many = 'figure[data-metric="many.series"]';
    await page.waitForSelector(`${many} .series-picker summary`, WAIT);
    assert.equal(await page.locator(`${many} .series-picker summary`).textContent(), '12 series, 8 drawn: choose');
    assert.equal(await page.locator(`${many} svg path.line`).count(), 8);
    await page.locator(`${many} .series-picker summary`).click();
    await page.locator(`${many} .series-choice`, { hasText: 'shard=11' }).locator('input').check();
    await waitFor('nine lines after picking a ninth series', async () => (await page.locator(`${many} svg path.line`).count()) === 9);
    // The choice survives the next refreshes (the status line's time changes with each).
    const before = await page.locator('#status-text').textContent();
    await waitFor('two more refreshes', async () => (await page.locator('#status-text').textContent()) !== before);
    assert.equal(await page.locator(`${many} svg path.line`).count(), 9, 'the pick is kept across refreshes');
    // Units from the metric's name; every series carries its app.
    assert.equal(await page.locator('figure[data-metric="views.latency_ms"] .metric-unit').textContent(), 'in ms');
    assert.match((await page.locator(`${many} .series-choice`).first().textContent()) ?? '', /app=web/);
    await page.screenshot({ path: join(ARTIFACTS, 'collector-page-activity.png'), fullPage: true });
    assert.deepEqual(pageErrors, [], 'no script errors on the page');
  } finally {
    await runCleanups(cleanups);
    tmp.cleanup();
  }
});

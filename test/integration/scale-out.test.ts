/**
 * Several collectors on one PostgreSQL behave as one (issue 12, DESIGN §11), with real processes:
 * a sidecar failing over between two collectors while the active one is killed at random moments
 * (every acked value stored exactly once), one license pool across collectors, the agents of a
 * dead collector marked disconnected by the other, and each collector's API showing the whole fleet.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type TestContext, after, test } from 'node:test';
import { chromium } from 'playwright-core';
import { type CollectorProc, getJson, runCollector } from '../helpers/collector';
import { byLevel, seed } from '../helpers/figures';
import { type LoadApp, type Tally, addTallies, collectorSums, judge, startLoadApp, tallyOf } from '../helpers/ledger';
import { PostgresStore } from '@apm-sidecar/collector/dist/store/pg/index';
import { migratedStore, portFreeOn, startPgCollector, storeKey } from '../helpers/pg-collectors';
import { postgresFor } from '../helpers/postgres';
import { Prng } from '../helpers/prng';
import { type Proc, type SidecarProc, sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

const HOSTS = ['127.0.0.1', '127.0.0.2'];
const CHROMIUM = '/usr/bin/chromium';
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
/** Heartbeats fast, so a dead collector is noticed within a second. */
const FLEET = ['--set', 'collector_heartbeat_ms=200', '--set', 'collector_dead_after_ms=1000', '--set', 'rollup_grace_ms=3600000'];
const SIDECAR = [
  '--transport',
  'tcp',
  '--set',
  'flush_ms=50',
  '--set',
  'metric_interval_ms=200',
  '--set',
  'tcp_connection_timeout=1000',
  '--set',
  'reconnect_schedule=200',
  '--set',
  'standby_after_ms=3600000',
  '--set',
  'retention_ms=3600000',
];

const procs: Proc[] = [];
const tmp = tempDir('apm-scale-');
after(async () => {
  for (const p of procs.reverse()) await p.kill('SIGKILL');
  tmp.cleanup();
});
function track<T extends Proc>(p: T): T {
  procs.push(p);
  return p;
}

interface AgentRow {
  agentId: string;
  state: string;
  licensed: boolean;
}

async function agents(c: CollectorProc, token?: string): Promise<AgentRow[]> {
  const r = await getJson<AgentRow[]>(c.httpPort, '/api/agents', { address: c.httpHost, ...(token !== undefined && { token }) });
  assert.equal(r.status, 200);
  return r.body;
}

async function sidecarOn(name: string, key: string, hosts: string[], port: number): Promise<SidecarProc> {
  return track(
    await startSidecar(`${tmp.dir}/${name}`, [...SIDECAR, '--server-host', hosts.join(','), '--server-port', String(port), '--set', `agent_id=${name}`], {
      APM_SIDECAR_ACCESS_KEY: key,
    }),
  );
}

/** The collector holding the agent's session: the one with a TCP session open. */
async function active(cs: CollectorProc[]): Promise<number> {
  return waitFor(
    'a collector to hold the session',
    async () => {
      for (let i = 0; i < cs.length; i++) {
        const c = cs[i] as CollectorProc;
        if (!c.alive) continue;
        const r = await getJson<{ sessions: { tcp: number } }>(c.httpPort, '/api/stats', c.httpHost).catch(() => null);
        if (r?.body.sessions.tcp === 1) return i + 1;
      }
      return null;
    },
    30000,
    50,
  ).then((n) => n - 1);
}

test('a sidecar fails over between two collectors on one PostgreSQL while the active one is killed -9 at random moments: the app’s totals equal the store’s exactly', async (t) => {
  const pg = await postgresFor(t);
  if (pg === null) return;
  const s = seed();
  console.log(`# seed ${s}`);
  const rng = new Prng(s);
  const store = await migratedStore(pg, 'failover');
  const key = await storeKey(store, 'failover');
  const port = await portFreeOn(HOSTS);
  const cs = await Promise.all(HOSTS.map(async (h) => track(await startPgCollector(store, h, port, FLEET))));
  const sc = await sidecarOn('failover', key, HOSTS, port);
  const series = ['failover.a0', 'failover.a1', 'failover.b0'];
  const apps: LoadApp[] = [
    track(startLoadApp(sc.socket, 'fo-a', series.slice(0, 2), { TICK_MS: 20, FLUSH_EVERY: 5 })),
    track(startLoadApp(sc.socket, 'fo-b', series.slice(2), { TICK_MS: 20, FLUSH_EVERY: 5 })),
  ];
  const kills = byLevel(10, 30, 100);
  const moved: string[] = [];
  for (let i = 0; i < kills; i++) {
    const from = await active(cs);
    await sleep(rng.int(100, 600));
    await (cs[from] as CollectorProc).kill('SIGKILL');
    const to = await active(cs);
    moved.push(`${from}→${to}`);
    assert.notEqual(to, from);
    // The killed one comes back on its address and port, ready for the next failover.
    cs[from] = track(await startPgCollector(store, HOSTS[from] as string, port, FLEET));
  }
  const tallies: Tally[] = [];
  for (const a of apps) {
    await a.kill('SIGTERM');
    tallies.push(tallyOf(a));
  }
  const tally = addTallies(...tallies);
  const reader = cs[0] as CollectorProc;
  await waitFor(
    'the store to hold every acked value',
    async () => {
      const sums = await collectorSums(reader, series);
      return series.every((n) => (sums[n] ?? 0) >= (tally.acked[n] ?? 0));
    },
    30000,
    100,
  );
  await sleep(600);
  // Read through both collectors: one store, so the same totals.
  const [viaA, viaB] = [await collectorSums(cs[0] as CollectorProc, series), await collectorSums(cs[1] as CollectorProc, series)];
  assert.deepEqual(viaA, viaB, 'both collectors read the same store');
  const v = judge(tally, viaA);
  console.log(`# ${kills} kills, moves ${moved.join(' ')}; totals ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.lost, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  assert.equal(v.duplicated, 0, `seed ${s}: ${JSON.stringify(v.perSeries)}`);
  // The apps ended with SIGTERM (flushed and acked): what they recorded is exactly what is stored.
  for (const n of series) assert.equal(viaA[n], tally.recorded[n], `${n}: recorded ${tally.recorded[n]}, stored ${viaA[n]}`);
});

test('--licenses 2 is the store’s: three agents over two collectors, exactly two licensed; the third takes a license once one is released', async (t) => {
  const pg = await postgresFor(t);
  if (pg === null) return;
  const store = await migratedStore(pg, 'licenses');
  const key = await storeKey(store, 'licenses');
  const port = await portFreeOn(HOSTS);
  const release = ['--set', 'license_release_ms=1500'];
  // The pool's size is set by one collector; the other has no --licenses and uses the store's.
  const a = track(await startPgCollector(store, HOSTS[0] as string, port, [...FLEET, ...release, '--licenses', '2']));
  const b = track(await startPgCollector(store, HOSTS[1] as string, port, [...FLEET, ...release]));
  const one = await sidecarOn('lic-1', key, [HOSTS[0] as string], port);
  await sidecarOn('lic-2', key, [HOSTS[1] as string], port);
  const licensed = async (c: CollectorProc) =>
    (await agents(c))
      .filter((r) => r.licensed)
      .map((r) => r.agentId)
      .sort();
  await waitFor('two agents licensed', async () => (await licensed(b)).length === 2, 20000);
  await sidecarOn('lic-3', key, [HOSTS[1] as string], port);
  // The third is refused (and retries every 200 ms) for as long as the two hold their licenses.
  await waitFor('the third agent listed', async () => (await agents(a)).some((r) => r.agentId === 'lic-3'), 20000);
  for (let i = 0; i < 10; i++) {
    assert.deepEqual(await licensed(a), ['lic-1', 'lic-2']);
    assert.deepEqual(await licensed(b), ['lic-1', 'lic-2']);
    await sleep(100);
  }
  await one.kill('SIGTERM');
  await waitFor('the third agent licensed after lic-1’s license is released', async () => (await licensed(a)).includes('lic-3'), 20000);
  assert.deepEqual(await licensed(a), ['lic-2', 'lic-3']);
  assert.deepEqual(await licensed(b), ['lic-2', 'lic-3']);
});

/**
 * B's web page, in a real browser, with a read token created through the shared store: B is
 * reached as 127.0.0.2, which protected mode does not answer without a token.
 */
async function pageOfBListsAgentOfA(t: TestContext, token: string, b: CollectorProc): Promise<void> {
  if (!existsSync(CHROMIUM)) {
    t.diagnostic('chromium not installed: the page of collector B was checked through its API only');
    return;
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`http://${b.httpHost}:${b.httpPort}/?refresh=300`);
    await page.waitForSelector('#token-form:not([hidden])', { timeout: 30_000 });
    await page.fill('#token-input', token);
    await page.click('#token-form button[type="submit"]');
    const row = page.locator('tr[data-agent-id="on-a"]');
    await row.waitFor({ timeout: 30_000 });
    await page.getByText('1 in all: 1 live').waitFor({ timeout: 30_000 });
    await page.screenshot({ path: join(process.env.APM_ARTIFACTS_DIR ?? tmp.dir, 'collector-page-fleet.png'), fullPage: true });
  } finally {
    await browser.close();
  }
}

test('the API and the page of collector B list the agents connected to A, and marks them disconnected within collector_dead_after_ms once A is killed -9', async (t) => {
  const pg = await postgresFor(t);
  if (pg === null) return;
  const store = await migratedStore(pg, 'fleet');
  const key = await storeKey(store, 'fleet');
  const port = await portFreeOn(HOSTS);
  const a = track(await startPgCollector(store, HOSTS[0] as string, port, FLEET));
  const b = track(await startPgCollector(store, HOSTS[1] as string, port, FLEET));
  // A read token made through the store, so B (reached as 127.0.0.2, not a name protected mode answers) serves its API and page.
  const made = await runCollector(['tokens', 'create', '--store', store.url], { env: store.env });
  assert.equal(made.code, 0, made.stderr);
  const token = (made.stdout.trim().split('\n').at(-1) as string).trim();
  await sidecarOn('on-a', key, [HOSTS[0] as string], port);
  const seenByB = await waitFor(
    'B to list the agent of A as live',
    async () => (await agents(b, token)).find((r) => r.agentId === 'on-a' && r.state === 'live' && r.licensed),
    20000,
  );
  assert.equal(seenByB.licensed, true);
  await pageOfBListsAgentOfA(t, token, b);
  const killedAt = Date.now();
  await a.kill('SIGKILL');
  // A's last heartbeat as the store holds it: B may reap A only collector_dead_after_ms after it.
  // (Under load a beat can be late, so it may be older than one heartbeat_ms before the kill.)
  process.env.PGPASSWORD = store.env.PGPASSWORD;
  const reader = await PostgresStore.open(store.url, { poolSize: 1 });
  let lastBeat: number;
  try {
    const rowOfA = (await reader.listCollectors()).find((c) => c.agentsAddress === `${HOSTS[0]}:${port}`);
    assert.ok(rowOfA !== undefined, 'A is still registered right after the kill');
    lastBeat = rowOfA.heartbeatAt;
  } finally {
    await reader.close();
  }
  await waitFor(
    'B to mark the agent of the dead collector disconnected',
    async () => (await agents(b, token)).find((r) => r.agentId === 'on-a')?.state === 'disconnected',
    10000,
  );
  const seenAt = Date.now();
  console.log(
    `# marked disconnected by B ${seenAt - killedAt} ms after A was killed, ${seenAt - lastBeat} ms after its last heartbeat (dead after 1000 ms, heartbeat 200 ms)`,
  );
  assert.ok(seenAt - lastBeat >= 1000, `not before A's heartbeat is overdue (${seenAt - lastBeat} ms after it)`);
});

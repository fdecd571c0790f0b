/**
 * Disconnected behaviour (DESIGN §6, seed 001 "Agent Behavior When Disconnected
 * from the Controller"), one test per statement, on real processes and sockets
 * with every duration scaled down: "one minute" is 150–600 ms here.
 *
 * The collector is made unreachable either by killing it (SIGKILL, restarted on
 * the same port and data directory) or, where one sidecar must lose it while
 * others keep it, by a Gate in front of it that closes its listening socket.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type MetricPoint, type Series, encodeActiveStack, encodeMetrics, encodeTrace, parseCorrelation } from '@apm-sidecar/proto';
import { type ApmClient, connect } from '@apm-sidecar/shim';
import Database from 'better-sqlite3';
import { cleanupsAfterEach } from '../helpers/cleanups';
import { type CollectorProc, createKey, getJson, startCollector } from '../helpers/collector';
import { Gate, RawIpcClient, RecordingCollector, sidecarStatus } from '../helpers/outage';
import { type SidecarProc, runCli, sleep, startSidecar, tempDir, waitFor } from '../helpers/procs';

type Json = Record<string, any>;

/** The scaled timeline: a "minute" of the seed is 150–600 ms, three minutes of retention are 2 s. */
const SCALED: Record<string, string | number> = {
  flush_ms: 50,
  metric_interval_ms: 200,
  tcp_connection_timeout: 300,
  retention_ms: 2000,
  event_replay_window_ms: 1000,
  standby_after_ms: 600,
  reconnect_schedule: '7x150,600',
};

function sets(o: Record<string, string | number>): string[] {
  return Object.entries(o).flatMap(([k, v]) => ['--set', `${k}=${v}`]);
}

const tmp = tempDir('apm-disc-');
after(() => tmp.cleanup());

const cleanups = cleanupsAfterEach();

function dir(name: string): string {
  return join(tmp.dir, name);
}

async function tcpSidecar(name: string, port: number, key: string, over: Record<string, string | number> = {}, restart = false): Promise<SidecarProc> {
  const sc = await startSidecar(
    dir(name),
    ['--transport', 'tcp', '--server-host', '127.0.0.1', '--server-port', String(port), ...sets({ ...SCALED, agent_id: name, ...over })],
    { APM_SIDECAR_ACCESS_KEY: key },
  );
  if (!restart) cleanups.push(() => sc.kill('SIGKILL'));
  return sc;
}

function shim(sc: SidecarProc, app: string): ApmClient {
  const apm = connect({ app, socket: sc.socket, flushMs: 50, reconnectMinMs: 20, reconnectMaxMs: 200 });
  cleanups.push(() => apm.close());
  return apm;
}

async function gate(c: CollectorProc): Promise<Gate> {
  const g = new Gate(c.port);
  await g.open();
  cleanups.push(() => g.cut());
  return g;
}

const status = (sc: SidecarProc): Promise<Json> => sidecarStatus(sc.socket);

async function waitState(sc: SidecarProc, state: string | ((s: string) => boolean), timeoutMs = 10000): Promise<Json> {
  const ok = typeof state === 'string' ? (s: string) => s === state : state;
  return waitFor(
    `sidecar ${sc.socket} to be ${typeof state === 'string' ? state : 'in the expected state'}`,
    async () => {
      const s = await status(sc);
      return ok(s.state) ? s : null;
    },
    timeoutMs,
  );
}

async function api(c: CollectorProc, path: string): Promise<Json> {
  const r = await getJson(c.httpPort, path);
  assert.equal(r.status, 200, path);
  return r.body;
}

async function metric(c: CollectorProc, agent: string, name: string): Promise<{ count: number; sum: number; points: Json[] }> {
  const pts = (await api(c, `/api/metrics?agent=${encodeURIComponent(agent)}&name=${encodeURIComponent(name)}&limit=10000`)) as unknown as Json[];
  return { count: pts.reduce((a, p) => a + p.count, 0), sum: pts.reduce((a, p) => a + p.sum, 0), points: pts };
}

function untilSum(c: CollectorProc, agent: string, name: string, sum: number, timeoutMs = 10000): Promise<unknown> {
  return waitFor(`${agent} ${name} to sum to ${sum} in the collector`, async () => (await metric(c, agent, name)).sum === sum, timeoutMs);
}

/** The collector's database, read-only, for what the API does not show. */
function collectorDb(c: CollectorProc): Database.Database {
  const db = new Database(join(c.dataDir, 'collector.db'), { readonly: true, fileMustExist: true });
  cleanups.push(() => db.close());
  return db;
}

const stateLines = (sc: SidecarProc) => sc.lines.filter((l) => l.event === 'state');
const timeOf = (l: Json) => Date.parse(l.time as string);

describe('disconnected from the collector (seed 001, DESIGN §6)', () => {
  let collector: CollectorProc;
  let key: string;
  before(async () => {
    const data = dir('collector');
    key = await createKey(data, 'disconnected');
    collector = await startCollector(data);
  });
  after(async () => {
    await collector.kill('SIGTERM');
  });

  test('unreachable for standby_after_ms: standby — no transaction is detected, metrics are still recorded and retained', async () => {
    const g = await gate(collector);
    const sc = await tcpSidecar('standby', g.port, key, { mute_after_attempts: 0 });
    const apm = shim(sc, 'standby');
    await waitState(sc, 'active');
    await waitFor('the shim to be active', () => apm.state === 'active');
    const control = apm.startTransaction('GET /while-active');
    assert.equal(control.detected, true, 'detected while active');
    control.end();

    await g.cut();
    const s = await waitState(sc, 'standby');
    const lines = stateLines(sc);
    const lossAt = lines.findIndex((l) => l.from === 'active' && l.to === 'reconnecting');
    assert.ok(lossAt >= 0, 'the loss is a state change active → reconnecting');
    const loss = lines[lossAt] as Json;
    const standby = lines[lossAt + 1] as Json;
    assert.deepEqual([standby.from, standby.to], ['reconnecting', 'standby']);
    assert.ok(timeOf(standby) - timeOf(loss) >= 600 - 2, `standby ${timeOf(standby) - timeOf(loss)} ms after the loss, not before standby_after_ms`);
    assert.match(s.stateCause, /standby_after_ms/);
    const cli = await runCli(['status', '--json', '--socket', sc.socket]);
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(JSON.parse(cli.stdout).state, 'standby', '`apm-sidecar status` says standby');
    await waitFor('the shim to be told standby', () => apm.state === 'standby');

    const tx = apm.startTransaction('GET /in-standby');
    assert.equal(tx.detected, false, 'no transaction detected in standby');
    tx.step('sql', 'SELECT 1', 1);
    tx.end();

    const n = apm.counter('standby.n');
    for (let i = 0; i < 5; i++) {
      n.add(1);
      assert.equal(await apm.flush(), true, 'metrics recorded in standby are committed by the sidecar');
      await sleep(100);
    }
    const s2 = await waitFor('the standby metrics to be retained as packs', async () => {
      const x = await status(sc);
      return x.retention.packs >= 2 && x.retention.rows > s.retention.rows ? x : null;
    });
    assert.equal(s2.state, 'standby');
    assert.ok(s2.counters.received.metrics >= s.counters.received.metrics + 5, 'the sidecar received them');
    assert.equal(s2.counters.received.traces, s.counters.received.traces, 'no trace was produced in standby');
    assert.equal(s2.counters.sent.metrics, s.counters.sent.metrics, 'nothing was sent while away');
  });

  test('back within the window: the retained metrics and registrations are posted, and only the events and snapshots of the last event_replay_window_ms', async () => {
    const agent = 'window';
    const g = await gate(collector);
    // retention_ms well past the outage: on a loaded machine the outage below can outlast the
    // scaled 2 s retention, and then the first retained points would be (rightly) purged.
    const sc = await tcpSidecar(agent, g.port, key, { mute_after_attempts: 0, reconnect_schedule: '150', retention_ms: 60000 });
    const apm = shim(sc, 'window');
    await waitState(sc, 'active');
    const n = apm.counter('window.n');
    n.add(10);
    apm.event({ type: 'note', message: 'window: before the outage' });
    assert.equal(await apm.flush(), true);
    await untilSum(collector, agent, 'window.n', 10);
    await waitFor(
      'the event sent while active to be stored',
      async () => ((await api(collector, `/api/events?agent=${agent}`)) as unknown as Json[]).length === 1,
    );
    const stats0 = await api(collector, '/api/stats');

    await g.cut();
    await waitState(sc, 'standby');
    for (let i = 0; i < 4; i++) {
      n.add(5);
      assert.equal(await apm.flush(), true);
      await sleep(60);
    }
    apm.registerBusinessTransaction('GET /registered-while-away');
    apm.event({ type: 'note', message: 'window: old' });
    apm.snapshot({ at: 'old' }, 'window-old');
    assert.equal(await apm.flush(), true);
    const oldAt = Date.now();
    await waitFor('the old event and snapshot in the ring', async () => (await status(sc)).eventRing.size === 2);
    // Older than event_replay_window_ms (1000) by a margin when the collector comes back.
    await waitFor('the old items to be past the window', () => Date.now() - oldAt > 1500, 5000);
    n.add(5);
    apm.event({ type: 'note', message: 'window: recent' });
    apm.snapshot({ at: 'recent' }, 'window-recent');
    assert.equal(await apm.flush(), true);
    await waitFor('the recent event in the ring', async () => (await status(sc)).counters.received.events === 3);

    await g.open();
    await waitState(sc, 'active');
    await untilSum(collector, agent, 'window.n', 35);
    await waitFor('the registration, the recent event and snapshot to be stored', async () => {
      const st = await api(collector, '/api/stats');
      return st.received.btRegistrations === stats0.received.btRegistrations + 1 &&
        st.received.events === stats0.received.events + 1 &&
        st.received.snapshots === stats0.received.snapshots + 1
        ? st
        : null;
    });
    const events = ((await api(collector, `/api/events?agent=${agent}`)) as unknown as Json[]).map((e) => e.message).sort();
    assert.deepEqual(
      events,
      ['window: before the outage', 'window: recent'],
      'the old event is not posted (the ring is replayed oldest first, so it would have come before the recent one)',
    );
    const db = collectorDb(collector);
    const snaps = db.prepare('SELECT kind FROM snapshots WHERE agent_id = ?').all(agent) as { kind: string }[];
    assert.deepEqual(
      snaps.map((r) => r.kind),
      ['window-recent'],
    );
    const bts = db.prepare('SELECT name FROM bt_registrations WHERE agent_id = ?').all(agent) as { name: string }[];
    assert.deepEqual(
      bts.map((r) => r.name),
      ['GET /registered-while-away'],
    );
    const s = await status(sc);
    assert.equal(s.counters.dropped.event_window, 2, 'the old event and snapshot were dropped and counted');
    assert.equal(s.eventRing.size, 0);
    await waitFor('the retention to be empty', async () => (await status(sc)).retention.rows === 0);
  });

  test('on return, registrations are posted first, then metrics, then events and snapshots', async () => {
    const rec = new RecordingCollector();
    await rec.open();
    cleanups.push(() => rec.cut());
    const sc = await tcpSidecar('order', rec.port, rec.key, {
      mute_after_attempts: 0,
      reconnect_schedule: '150',
      event_replay_window_ms: 10000,
      retention_ms: 60000,
    });
    const apm = shim(sc, 'order');
    await waitState(sc, 'active');
    await rec.cut();
    await waitState(sc, (s) => s !== 'active');
    // Recorded interleaved, so the arrival order cannot simply be the recording order.
    apm.event({ type: 'note', message: 'order: event 1' });
    apm.counter('order.n').add(1);
    apm.registerBusinessTransaction('GET /order-1');
    assert.equal(await apm.flush(), true);
    await sleep(250);
    apm.snapshot({ n: 1 }, 'order-snapshot');
    apm.counter('order.n').add(2);
    apm.registerBusinessTransaction('GET /order-2');
    apm.event({ type: 'note', message: 'order: event 2' });
    assert.equal(await apm.flush(), true);
    // Every interval closed: the metrics wait as packs, not in the aggregator.
    await waitFor('the metric intervals to be sealed', async () => {
      const s = await status(sc);
      return (
        s.aggregation.openIntervals === 0 &&
        s.retention.frames === 0 &&
        s.retention.packs >= 2 &&
        s.counters.received.events === 2 &&
        s.counters.received.snapshots === 1
      );
    });
    const mark = rec.received.length;

    await rec.open();
    await waitState(sc, 'active');
    const got = await waitFor('everything to arrive', () => {
      const r = rec.received.slice(mark);
      const metricsIn = r.filter((x) => x.kind === 'metrics' && x.names?.includes('order.n')).length;
      return r.filter((x) => x.kind === 'btRegistration').length === 2 &&
        r.filter((x) => x.kind === 'event' || x.kind === 'snapshot').length === 3 &&
        metricsIn >= 2
        ? r
        : null;
    });
    await sleep(100);
    const seq = rec.received.slice(mark).map((x) => `${x.frame}:${x.kind}:${x.label}`);
    const rank: Record<string, number> = { btRegistration: 0, metrics: 1, event: 2, snapshot: 2 };
    const ranks = got.map((x) => rank[x.kind] ?? 3);
    for (let i = 1; i < ranks.length; i++) {
      assert.ok((ranks[i] as number) >= (ranks[i - 1] as number), `registrations, then metrics, then events: arrival order was\n  ${seq.join('\n  ')}`);
    }
    assert.deepEqual(
      got.filter((x) => x.kind === 'event' || x.kind === 'snapshot').map((x) => x.label),
      ['order: event 1', 'order-snapshot', 'order: event 2'],
      'events and snapshots oldest first',
    );
  });

  test('three failed attempts: muted — outgoing calls carry notxdetect=true, the downstream app detects nothing and passes the flag on; metrics survive', async () => {
    const g = await gate(collector);
    const front = await tcpSidecar('muted-front', g.port, key, { standby_after_ms: 150 });
    const back = await tcpSidecar('muted-back', collector.port, key);
    const apmFront = shim(front, 'front');
    const apmBack = shim(back, 'back');
    await waitState(front, 'active');
    await waitState(back, 'active');
    await waitFor('both shims active', () => apmFront.state === 'active' && apmBack.state === 'active');
    const connectsBefore = front.logs('connecting upstream').length;

    await g.cut();
    await waitState(front, 'muted');
    const mutedLine = stateLines(front).find((l) => l.to === 'muted') as Json;
    assert.match(mutedLine.cause as string, /^3 failed attempts/);
    const attemptsBeforeMuted = front.logs('connecting upstream').filter((l) => timeOf(l) <= timeOf(mutedLine)).length - connectsBefore;
    assert.equal(attemptsBeforeMuted, 3, 'muted after the third failed attempt');
    const sinceLoss = stateLines(front).map((l) => `${l.from} → ${l.to}`);
    assert.deepEqual(sinceLoss.slice(sinceLoss.lastIndexOf('reconnecting → standby') - 1), [
      'active → reconnecting',
      'reconnecting → standby',
      'standby → muted',
    ]);
    await waitFor('the front shim to be muted', () => apmFront.state === 'muted');

    // The interceptors still run but are unproductive.
    const tx = apmFront.startTransaction('GET /front');
    assert.equal(tx.detected, false);
    const outgoing = tx.outgoingHeaders();
    assert.equal(parseCorrelation(outgoing['apm-correlation']).get('notxdetect'), 'true', 'exit calls carry notxdetect=true');
    tx.step('http', 'GET /back', 1);
    tx.end();
    apmFront.event({ type: 'note', message: 'muted: not produced' });
    apmFront.snapshot({ x: 1 }, 'muted');
    assert.equal(apmFront.stats().dropped.muted, 2, 'events and snapshots are dropped as muted');
    const m = apmFront.counter('muted.n');
    for (let i = 0; i < 3; i++) {
      m.add(4);
      assert.equal(await apmFront.flush(), true, 'metrics are still recorded and committed while muted');
      await sleep(80);
    }

    // The downstream tier, on a healthy sidecar, receives the call.
    const down = apmBack.startTransaction('GET /back', outgoing);
    assert.equal(down.detected, false, 'a request carrying notxdetect=true is not detected');
    assert.equal(parseCorrelation(down.outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true', 'and the flag is passed on');
    down.end();
    const unflagged = apmBack.startTransaction('GET /back-unflagged');
    assert.equal(unflagged.detected, true, 'the downstream app itself is active');
    unflagged.end();
    await waitFor('the unflagged trace to be stored', async () =>
      ((await api(collector, '/api/traces?agent=muted-back')) as unknown as Json[]).some((t) => t.name === 'GET /back-unflagged'),
    );
    const backTraces = ((await api(collector, '/api/traces?agent=muted-back')) as unknown as Json[]).map((t) => t.name);
    assert.deepEqual(backTraces, ['GET /back-unflagged']);

    // The attempts go on; on return the metrics recorded while muted arrive and detection is re-enabled.
    await g.open();
    await waitState(front, 'active');
    await waitFor('the front shim to be active again', () => apmFront.state === 'active');
    await untilSum(collector, 'muted-front', 'muted.n', 12);
    const again = apmFront.startTransaction('GET /front');
    assert.equal(again.detected, true, 'interceptors re-enabled');
    assert.equal(parseCorrelation(again.outgoingHeaders()['apm-correlation']).get('notxdetect'), undefined, 'downstream correlation re-enabled');
    again.end();
    await waitFor('the trace after the return', async () => ((await api(collector, '/api/traces?agent=muted-front')) as unknown as Json[]).length >= 1);
    await waitFor('its duration metric', async () => (await metric(collector, 'muted-front', 'apm.transaction.duration')).count >= 1);
    assert.equal(((await api(collector, '/api/traces?agent=muted-front')) as unknown as Json[]).length, 1, 'nothing of the muted transaction was sent');
    assert.equal((await metric(collector, 'muted-front', 'apm.transaction.duration')).count, 1, 'the muted transaction recorded no duration');
    assert.equal(((await api(collector, '/api/events?agent=muted-front')) as unknown as Json[]).length, 0);
  });

  test('only the last retention_ms of metrics are kept: older points are purged and counted, the rest reach the collector', async () => {
    const agent = 'retention';
    const g = await gate(collector);
    const sc = await tcpSidecar(agent, g.port, key);
    const apm = shim(sc, agent);
    await waitState(sc, 'active');
    await g.cut();
    await waitState(sc, (s) => s !== 'active');
    // Four series recorded once each: exactly four aggregated points.
    for (let i = 0; i < 4; i++) apm.counter('retention.early', { i }).add(1);
    assert.equal(await apm.flush(), true);
    const s = await waitFor(
      'the early points to be purged past retention_ms',
      async () => {
        const x = await status(sc);
        return x.counters.dropped.expired === 4 ? x : null;
      },
      15000,
    );
    assert.equal(s.retention.rows, 0, 'nothing of them is left in the retention database');
    assert.ok(sc.logs(/older than retention_ms/).length >= 1, 'the purge is logged');
    const late = apm.counter('retention.late');
    for (let i = 0; i < 3; i++) {
      late.add(7);
      assert.equal(await apm.flush(), true);
      await sleep(60);
    }
    await g.open();
    await waitState(sc, 'active');
    await untilSum(collector, agent, 'retention.late', 21);
    await waitFor('the retention to be empty', async () => (await status(sc)).retention.rows === 0);
    assert.deepEqual((await metric(collector, agent, 'retention.early')).points, [], 'no purged point reaches the collector');
    assert.equal((await status(sc)).counters.dropped.expired, 4);
  });

  test('reconnect attempts follow the schedule: seven at the "one minute" delay, then at the "five minute" delay, and go on while muted', async () => {
    const data = dir('schedule-collector');
    const k = await createKey(data, 'schedule');
    let c = await startCollector(data);
    cleanups.push(() => c.kill('SIGKILL'));
    const port = c.port;
    const sc = await tcpSidecar('schedule', port, k, { standby_after_ms: 150 });
    await waitState(sc, 'active');
    const mark = sc.lines.length;
    await c.kill('SIGKILL');
    const scheduled = await waitFor(
      'nine scheduled attempts',
      () => {
        const l = sc.lines.slice(mark).filter((x) => x.event === 'reconnect-scheduled');
        return l.length >= 9 ? l : null;
      },
      15000,
    );
    const planned = scheduled.slice(0, 9).map((l) => l.delayMs as number);
    assert.deepEqual(planned, [150, 150, 150, 150, 150, 150, 150, 600, 600]);
    assert.deepEqual(
      scheduled.slice(0, 9).map((l) => l.attempt),
      [1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    // Each attempt waits at least its planned delay after the failure that scheduled it.
    const after = sc.lines.slice(mark);
    const connects = after.filter((l) => l.msg === 'connecting upstream');
    for (let i = 0; i < 8; i++) {
      const sched = scheduled[i] as Json;
      const attempt = connects.find((l) => timeOf(l) >= timeOf(sched) && after.indexOf(l) > after.indexOf(sched)) as Json;
      assert.ok(attempt, `attempt ${i + 1} was made`);
      assert.ok(
        timeOf(attempt) - timeOf(sched) >= (planned[i] as number) - 1,
        `attempt ${i + 1}: ${timeOf(attempt) - timeOf(sched)} ms after it was scheduled, planned ${planned[i]}`,
      );
    }
    for (let i = 1; i < 8; i++) {
      const gap = timeOf(connects[i] as Json) - timeOf(connects[i - 1] as Json);
      assert.ok(gap >= (planned[i] as number) - 1, `gap between attempts ${i} and ${i + 1}: ${gap} ms, planned ${planned[i]}`);
    }
    const muted = stateLines(sc).find((l) => l.to === 'muted') as Json;
    assert.ok(muted, 'muted after three failed attempts');
    assert.ok(connects.filter((l) => timeOf(l) > timeOf(muted)).length >= 5, 'the attempts go on while muted');

    c = await startCollector(data, ['--port', String(port)]);
    const s = await waitState(sc, 'active', 10000);
    assert.equal(s.upstream.lastError, null);
    assert.equal(s.upstream.attempts, 0, 'the schedule starts over after a successful connection');
  });

  test('reaching the collector is not enough: without a license the sidecar stays muted and keeps its data; it resumes once it gets its configuration and a license', async () => {
    const data = dir('license-collector');
    const k = await createKey(data, 'license');
    const c = await startCollector(data, ['--licenses', '1', '--set', 'license_release_ms=300']);
    cleanups.push(() => c.kill('SIGKILL'));
    const g = new Gate(c.port);
    await g.open();
    cleanups.push(() => g.cut());
    const first = await tcpSidecar('lic-first', g.port, k, { standby_after_ms: 150, retention_ms: 60000 });
    const apm = shim(first, 'lic');
    await waitState(first, 'active');
    await g.cut();
    // Registered while the link is down but before muted: retained like the metrics.
    apm.registerBusinessTransaction('GET /lic-during-outage');
    assert.equal(await apm.flush(), true);
    await waitState(first, 'muted');
    await waitFor('the shim to be muted', () => apm.state === 'muted');
    // Muted: interceptors are unproductive, nothing new is registered.
    apm.registerBusinessTransaction('GET /lic-while-muted');
    assert.equal(apm.stats().dropped.muted, 1);
    const n = apm.counter('lic.n');
    for (let i = 0; i < 3; i++) {
      n.add(2);
      assert.equal(await apm.flush(), true);
      await sleep(60);
    }

    // Another agent takes the license the first one held (freed after license_release_ms).
    const second = await tcpSidecar('lic-second', c.port, k, { reconnect_schedule: '150' });
    await waitState(second, 'active');

    await g.open();
    const refused = await waitFor('the first agent to reach the collector and be refused a license', async () => {
      const s = await status(first);
      return s.upstream.lastError?.code === 'ERR_NO_LICENSE' ? s : null;
    });
    assert.equal(refused.state, 'muted', 'connected and configured but not licensed: still muted');
    assert.match(refused.upstream.lastError.message, /no license/);
    assert.equal(apm.state, 'muted');
    const tx = apm.startTransaction('GET /lic');
    assert.equal(tx.detected, false);
    assert.equal(parseCorrelation(tx.outgoingHeaders()['apm-correlation']).get('notxdetect'), 'true');
    tx.end();
    assert.equal((await metric(c, 'lic-first', 'lic.n')).count, 0, 'nothing is posted without a license');
    assert.ok(refused.retention.frames + refused.retention.packs >= 1, 'the metrics stay retained');
    assert.equal(refused.retention.btUnsent, 1, 'and so does the registration');

    // The second goes; its license is freed after license_release_ms and the first's next attempt takes it.
    await second.kill('SIGKILL');
    await waitState(first, 'active', 15000);
    await waitFor('the shim to be reactivated', () => apm.state === 'active');
    await untilSum(c, 'lic-first', 'lic.n', 6);
    const again = apm.startTransaction('GET /lic');
    assert.equal(again.detected, true, 'business transactions are monitored again');
    assert.equal(parseCorrelation(again.outgoingHeaders()['apm-correlation']).get('notxdetect'), undefined, 'downstream correlation re-enabled');
    again.end();
    apm.registerBusinessTransaction('GET /lic-after-return');
    assert.equal(await apm.flush(), true);
    await waitFor('the trace after the return', async () => ((await api(c, '/api/traces?agent=lic-first')) as unknown as Json[]).length === 1);
    const db = collectorDb(c);
    await waitFor(
      'both registrations stored',
      () => (db.prepare('SELECT count(*) AS n FROM bt_registrations WHERE agent_id = ?').get('lic-first') as { n: number }).n === 2,
    );
    const s = await status(first);
    assert.equal(s.upstream.lastError, null);
    assert.equal(s.upstream.configVersion, 1, 'the configuration was downloaded');
    const agents = (await api(c, '/api/agents')) as unknown as Json[];
    assert.equal(agents.find((a) => a.agentId === 'lic-first')?.licensed, true);
  });

  test('kill -9 of the sidecar during an outage, then a restart: the retained metrics reach the collector exactly once', async () => {
    const agent = 'kill9';
    const over = { retention_ms: 60000 };
    const g = await gate(collector);
    let sc = await tcpSidecar(agent, g.port, key, over, true);
    cleanups.push(() => sc.kill('SIGKILL'));
    const apm = shim(sc, agent);
    await waitState(sc, 'active');
    const n = apm.counter('kill9.n');
    const h = apm.histogram('kill9.lat');
    let total = 0;
    let hcount = 0;
    let hsum = 0;
    const record = async (v: number) => {
      n.add(v);
      h.record(v);
      total += v;
      hcount++;
      hsum += v;
      assert.equal(await apm.flush(), true);
    };
    await record(1);
    await untilSum(collector, agent, 'kill9.n', 1);

    // Outage: packs and open intervals pile up in the retention.
    await g.cut();
    await waitState(sc, (s) => s !== 'active');
    for (let v = 2; v <= 5; v++) {
      await record(v);
      await sleep(120);
    }
    await waitFor('packs retained', async () => (await status(sc)).retention.packs >= 2);
    // The collector comes back but its acks are lost: it stores the packs, the sidecar keeps them.
    const dupsBefore = (await api(collector, '/api/stats')).duplicatePacks as number;
    await g.open('no-acks');
    await waitState(sc, 'active');
    await untilSum(collector, agent, 'kill9.n', total);
    const unacked = await status(sc);
    assert.ok(unacked.upstream.inFlightFrames >= 1, 'frames are stored by the collector but not acked to the sidecar');
    assert.ok(unacked.retention.packs >= 1, 'so their packs stay retained');
    await record(6);
    await record(7);
    // kill -9 right after the shim's frames are committed: the last interval is still raw frames.
    await sc.kill('SIGKILL');
    await g.cut();

    sc = await tcpSidecar(agent, g.port, key, over, true);
    const opened = sc.logs('retention opened')[0] as Json;
    assert.ok(opened.packs >= 1, `retained packs reloaded (${opened.packs})`);
    assert.ok(opened.frames >= 1, `retained raw frames reloaded (${opened.frames})`);
    await waitFor('the shim to reconnect to the new sidecar', async () => (await status(sc)).shims.length === 1);
    await record(8);
    await record(9);
    await g.open();
    await waitState(sc, 'active');
    await waitFor('everything sent and acked', async () => {
      const s = await status(sc);
      return s.retention.rows === 0 && s.upstream.inFlightFrames === 0 && s.queues.queue1.depth === 0 && s.aggregation.openIntervals === 0;
    });
    await untilSum(collector, agent, 'kill9.n', total);
    assert.equal(total, 45);
    const lat = await metric(collector, agent, 'kill9.lat');
    assert.deepEqual([lat.count, lat.sum], [hcount, hsum], 'the histogram too, exactly once');
    const stats = await api(collector, '/api/stats');
    assert.ok((stats.duplicatePacks as number) > dupsBefore, 'packs were resent after the restart and recognised');

    const db = collectorDb(collector);
    const doubled = db
      .prepare('SELECT series_key, interval_start, count(*) AS n FROM metric_points WHERE agent_id = ? GROUP BY series_key, interval_start HAVING n > 1')
      .all(agent);
    assert.deepEqual(doubled, [], 'one row per point identity (agent, series, interval)');
    const rows = db.prepare("SELECT sum(count) AS count, sum(sum) AS sum FROM metric_points WHERE agent_id = ? AND name = 'kill9.n'").get(agent) as Json;
    assert.deepEqual([rows.count, rows.sum], [9, total]);
    const rollup = db.prepare("SELECT sum(sum) AS sum FROM metric_rollups WHERE agent_id = ? AND name = 'kill9.n'").get(agent) as Json;
    assert.equal(rollup.sum, total, 'the per-minute rollups count every point once');
  });

  test('the collector drops points of a minute whose rollup is complete, counts them and acks them: the sidecar does not retry', async () => {
    // A minute that has not ended yet must stay so for the whole test.
    const left = 60_000 - (Date.now() % 60_000);
    if (left < 8000) await sleep(left + 50);
    const data = dir('late-collector');
    const k = await createKey(data, 'late');
    let c = await startCollector(data, ['--set', 'rollup_grace_ms=0']);
    cleanups.push(() => c.kill('SIGKILL'));
    const port = c.port;
    const sc = await tcpSidecar('late', port, k, { retention_ms: 120000, mute_after_attempts: 0, reconnect_schedule: '150' });
    await waitState(sc, 'active');
    await c.kill('SIGKILL');
    await waitState(sc, (s) => s !== 'active');

    // An old frame (the previous minute, already over) and a current one, retained during the outage.
    const raw = new RawIpcClient(sc.socket, 'late-raw-instance', 'late');
    cleanups.push(() => raw.close());
    await raw.ready;
    const point = (name: string, v: number): MetricPoint => ({
      series: { key: '', kind: 0, name, tags: {} } as Series,
      count: 1,
      sum: v,
      min: v,
      max: v,
      last: Number.NaN,
      sketch: null,
    });
    const previousMinute = Math.floor(Date.now() / 60_000) * 60_000 - 5000;
    raw.send(encodeMetrics({ seq: 1, ts: previousMinute, windowMs: 50, points: [point('late.old', 3)] }));
    raw.send(encodeMetrics({ seq: 2, ts: Date.now(), windowMs: 50, points: [point('late.fresh', 2)] }));
    await waitFor('both frames acked by the sidecar', () => raw.ackedSeq === 2);
    await waitFor('both retained as packs', async () => (await status(sc)).retention.packs === 2);

    c = await startCollector(data, ['--port', String(port), '--set', 'rollup_grace_ms=0']);
    await waitState(sc, 'active');
    await untilSum(c, 'late', 'late.fresh', 2);
    const st = await waitFor('the late point to be counted', async () => {
      const x = await api(c, '/api/stats');
      return x.droppedLate === 1 ? x : null;
    });
    assert.equal(st.duplicatePacks, 0);
    assert.deepEqual((await metric(c, 'late', 'late.old')).points, [], 'the late point is not stored');
    const s = await waitFor('the sidecar to forget both packs', async () => {
      const x = await status(sc);
      return x.retention.packs === 0 && x.upstream.inFlightFrames === 0 ? x : null;
    });
    assert.equal(s.counters.sent.metrics, 2, 'both counted as delivered');
    // Settled: no resend, no reconnect loop. The collector's half (the late pack acked, the session
    // never ended) is proved on a fake clock in collector-timeline.test.ts; here a marker sent after
    // the settle travels the same session: anything resent or reconnected before it would show.
    const sessions = s.upstream.sessions as number;
    const connects = sc.logs('connecting upstream').length;
    raw.send(encodeMetrics({ seq: 3, ts: Date.now(), windowMs: 50, points: [point('late.marker', 1)] }));
    await waitFor('the marker frame acked by the sidecar', () => raw.ackedSeq === 3);
    await untilSum(c, 'late', 'late.marker', 1);
    const s2 = await status(sc);
    assert.equal(s2.state, 'active');
    assert.equal(s2.upstream.sessions, sessions);
    assert.equal(sc.logs('connecting upstream').length, connects);
    const st2 = await api(c, '/api/stats');
    assert.equal(st2.droppedLate, 1);
    assert.equal(st2.duplicatePacks, 0, 'the late pack was not sent again');
  });

  test('a corrupt retention database is quarantined with one error line; the sidecar starts and works', async () => {
    const name = 'corrupt';
    const data = `${dir(name)}.data`;
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, 'retention.db'), randomBytes(8192));
    const sc = await startSidecar(dir(name), sets({ flush_ms: 50, metric_interval_ms: 200 }));
    cleanups.push(() => sc.kill('SIGKILL'));
    const aside = readdirSync(data).filter((f) => f.startsWith('retention.db.corrupt-'));
    assert.equal(aside.length, 1, `quarantined: ${readdirSync(data).join(', ')}`);
    const errors = sc.lines.filter((l) => (l.level as number) >= 50);
    assert.equal(errors.length, 1, 'one error log line');
    assert.match(errors[0]?.msg as string, /moved aside/);
    const apm = shim(sc, name);
    apm.counter('corrupt.n').add(3);
    assert.equal(await apm.flush(), true, 'frames are committed to the new retention database');
    await waitFor('the pack to be sent', () => sc.packs('metrics').some((p) => (p.points as Json[]).some((x) => x.name === 'corrupt.n' && x.sum === 3)));
    const s = await status(sc);
    assert.equal(s.state, 'active');
    assert.equal(s.retention.path, join(data, 'retention.db'));
    assert.equal(s.counters.retentionErrors, 0);
  });

  test('a retention database path that cannot be opened (a directory) is quarantined too: the sidecar never crash-loops', async () => {
    const name = 'unopenable';
    const data = `${dir(name)}.data`;
    mkdirSync(join(data, 'retention.db'), { recursive: true });
    writeFileSync(join(data, 'retention.db', 'x'), 'not a database');
    const sc = await startSidecar(dir(name), sets({ flush_ms: 50, metric_interval_ms: 200 }));
    cleanups.push(() => sc.kill('SIGKILL'));
    assert.ok(statSync(join(data, 'retention.db')).isFile(), 'a fresh database file in its place');
    assert.equal(readdirSync(data).filter((f) => f.startsWith('retention.db.corrupt-')).length, 1);
    assert.equal(sc.lines.filter((l) => (l.level as number) >= 50).length, 1, 'one error log line');
    const apm = shim(sc, name);
    apm.counter('unopenable.n').add(5);
    assert.equal(await apm.flush(), true);
    await waitFor('the pack to be sent', () => sc.packs('metrics').some((p) => (p.points as Json[]).some((x) => x.name === 'unopenable.n' && x.sum === 5)));
    assert.equal(sc.alive, true);
    assert.ok(existsSync(join(data, 'retention.db')));
  });

  test('entering standby drops what waits in queue2 (counted as standby); traces and active stacks arriving in standby are dropped', async () => {
    const agent = 'queue2';
    const g = await gate(collector);
    const sc = await tcpSidecar(agent, g.port, key, { standby_after_ms: 1500, mute_after_attempts: 0, reconnect_schedule: '150' });
    const apm = shim(sc, agent);
    await waitState(sc, 'active');
    await g.cut();
    await waitState(sc, 'reconnecting');
    assert.equal(apm.state, 'active', 'reconnecting is not yet standby: the shim still detects');
    for (let i = 0; i < 5; i++) apm.startTransaction(`GET /queued-${i}`).end();
    apm.counter('queue2.n').add(1);
    assert.equal(await apm.flush(), true, 'acked after the traces were read (same socket, in order)');
    const queued = await status(sc);
    assert.equal(queued.state, 'reconnecting');
    assert.equal(queued.queues.queue2.depth, 5, 'traces wait in queue2 while reconnecting');

    const s = await waitState(sc, 'standby');
    assert.equal(s.queues.queue2.depth, 0);
    assert.equal(s.counters.dropped.standby, 5, 'queue2 dropped on entering standby, counted');
    assert.equal(s.queues.queue2.dropped, 5);

    // A client that has not seen the state change yet still sends traces: the sidecar drops them.
    const raw = new RawIpcClient(sc.socket, 'queue2-raw-instance', agent);
    cleanups.push(() => raw.close());
    await raw.ready;
    const trace = (name: string) =>
      encodeTrace({
        txid: 'a1',
        traceId: '0af7651916cd43dd8448eb211c80319c',
        spanId: 'b7ad6b7169203331',
        name,
        startTime: Date.now(),
        durationMs: 1,
        steps: [],
      });
    raw.send(trace('GET /raw-1'));
    raw.send(trace('GET /raw-2'));
    raw.send(encodeActiveStack({ txid: 'a1', name: 'GET /raw-1', ts: Date.now(), elapsedMs: 5, frames: ['at x (x.js:1:1)'] }));
    raw.send(encodeMetrics({ seq: 1, ts: Date.now(), windowMs: 50, points: [] }));
    await waitFor('the raw frames to be read', () => raw.ackedSeq === 1);
    const s2 = await status(sc);
    assert.equal(s2.counters.received.traces, 7);
    assert.equal(s2.counters.received.activeStacks, 1);
    assert.equal(s2.counters.dropped.standby, 8, 'two traces and an active stack more');
    assert.equal(s2.queues.queue2.depth, 0);

    await g.open();
    await waitState(sc, 'active');
    await untilSum(collector, agent, 'queue2.n', 1);
    const after = apm.startTransaction('GET /after-return');
    assert.equal(after.detected, true);
    after.end();
    await waitFor('the trace after the return', async () => ((await api(collector, `/api/traces?agent=${agent}`)) as unknown as Json[]).length === 1);
    const names = ((await api(collector, `/api/traces?agent=${agent}`)) as unknown as Json[]).map((t) => t.name);
    assert.deepEqual(names, ['GET /after-return'], 'none of the dropped traces was sent');
  });
});

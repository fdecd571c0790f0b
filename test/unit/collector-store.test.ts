import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MetricKind, type MetricKindCode, type MetricPoint, type Series, Sketch, encodeSeries } from '@apm-sidecar/proto';
import {
  type TextItem,
  type UpMetricPack,
  decodeMetricBatch,
  encodeMetricBatch,
  formatAccessKey,
  keyFingerprint,
  parseAccessKey,
} from '@apm-sidecar/proto/upstream';
import {
  MIGRATIONS,
  SCHEMA_VERSION,
  SqliteStore,
  StoreCorruptError,
  StoreDurabilityError,
  assertSynchronous,
  projectSlug,
  sessionWrites,
} from '@apm-sidecar/collector';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-store-');

function series(kind: MetricKindCode, name: string, tags: Record<string, string> = {}): Series {
  return { key: encodeSeries(kind, name, tags).toString('latin1'), kind, name, tags };
}

function point(s: Series, values: number[]): MetricPoint {
  const sk = s.kind === MetricKind.Histogram ? new Sketch() : null;
  let sum = 0;
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (const v of values) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
    sk?.add(v);
  }
  return { series: s, count: values.length, sum, min, max, last: s.kind === MetricKind.Gauge ? (values.at(-1) as number) : Number.NaN, sketch: sk };
}

/** Through the real upstream codec, as the agent server will hand packs over. */
function wire(packs: UpMetricPack[]): UpMetricPack[] {
  return decodeMetricBatch(encodeMetricBatch(packs));
}

function pack(packId: string, intervalStart: number, points: MetricPoint[]): UpMetricPack {
  return { packId, intervalStart, intervalMs: 10_000, points };
}

function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An agent identity: agent_id in project `projectId` ('p' unless given). */
const ag = (agentId: string, projectId = 'p') => ({ projectId, agentId });
const info = (agentId: string, apps = ['checkout', 'billing']) => ({ agentId, host: `${agentId}.local`, version: '0.1.0', apps });
const T0 = 1_700_000_000_000;

describe('SqliteStore: files and durability', () => {
  it('creates the data directory 0700 and the database 0600 (and its -wal/-shm files)', () => {
    const dir = join(tempDir(), 'nested', 'data');
    const store = SqliteStore.open(dir);
    try {
      store.createKey('modes'); // a write, so the WAL exists
      assert.equal(statSync(dir).mode & 0o777, 0o700);
      assert.equal(statSync(join(dir, 'collector.db')).mode & 0o777, 0o600);
      for (const f of ['collector.db-wal', 'collector.db-shm']) assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
    } finally {
      store.close();
    }
  });

  it('re-tightens a database file that was made group/world readable', () => {
    const dir = tempDir();
    SqliteStore.open(dir).close();
    chmodSync(join(dir, 'collector.db'), 0o644);
    const store = SqliteStore.open(dir);
    store.close();
    assert.equal(statSync(join(dir, 'collector.db')).mode & 0o777, 0o600);
  });

  it('runs in WAL mode with synchronous set explicitly to FULL', () => {
    const store = SqliteStore.open(tempDir());
    try {
      assert.equal(store.pragma('journal_mode'), 'wal');
      assert.equal(store.pragma('synchronous'), 2);
      assert.ok((store.pragma('busy_timeout') as number) > 0);
    } finally {
      store.close();
    }
  });

  it('session writes run at synchronous NORMAL and leave FULL behind, also when they throw', () => {
    const db = new Database(join(tempDir(), 'x.db'));
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
      const session = sessionWrites(db);
      assert.equal(
        session(() => db.pragma('synchronous', { simple: true })),
        1,
      );
      assert.equal(db.pragma('synchronous', { simple: true }), 2);
      assert.throws(() =>
        session(() => {
          throw new Error('write failed');
        }),
      );
      assert.equal(db.pragma('synchronous', { simple: true }), 2);
    } finally {
      db.close();
    }
  });

  it('an agent connecting, its state and license writes leave the store at synchronous FULL for data', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const info = { agentId: 'a', host: 'h', version: 'v', apps: ['app'] };
      assert.equal(store.connectAgent('p', info, 1000, 'c1', 300_000).license.granted, true);
      store.setAgentState({ projectId: 'p', agentId: 'a' }, 'disconnected', { at: 2000, reason: 'test' }, 'c1');
      store.releaseLicenses(400_000, 300_000);
      assert.equal(store.pragma('synchronous'), 2);
    } finally {
      store.close();
    }
  });

  it('assertSynchronous throws ERR_STORE_DURABILITY when synchronous is NORMAL', () => {
    const db = new Database(join(tempDir(), 'x.db'));
    try {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      assert.throws(
        () => assertSynchronous(db),
        (err: unknown) => err instanceof StoreDurabilityError && err.code === 'ERR_STORE_DURABILITY' && /NORMAL/.test(err.message) && /FULL/.test(err.message),
      );
      db.pragma('synchronous = FULL');
      assertSynchronous(db);
    } finally {
      db.close();
    }
  });

  it('refuses a file that is not a database with ERR_STORE_CORRUPT and leaves it untouched', () => {
    const dir = tempDir();
    const file = join(dir, 'collector.db');
    const junk = Buffer.from("this is not a database, it is somebody's notes\n".repeat(200));
    writeFileSync(file, junk);
    assert.throws(
      () => SqliteStore.open(dir),
      (err: unknown) =>
        err instanceof StoreCorruptError && err.code === 'ERR_STORE_CORRUPT' && err.message.includes(file) && /not an SQLite database/.test(err.message),
    );
    assert.deepEqual(readFileSync(file), junk);
  });

  it('refuses a damaged SQLite file (valid header, garbage pages) with ERR_STORE_CORRUPT', () => {
    const dir = tempDir();
    const file = join(dir, 'collector.db');
    const b = Buffer.alloc(8192, 0xab);
    Buffer.from('SQLite format 3\0', 'latin1').copy(b);
    writeFileSync(file, b);
    assert.throws(
      () => SqliteStore.open(dir),
      (err: unknown) => err instanceof StoreCorruptError && err.code === 'ERR_STORE_CORRUPT',
    );
    assert.deepEqual(readFileSync(file), b);
  });

  it("refuses another program's SQLite database instead of adding tables to it", () => {
    const dir = tempDir();
    const db = new Database(join(dir, 'collector.db'));
    db.exec('CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)');
    db.close();
    assert.throws(
      () => SqliteStore.open(dir),
      (err: unknown) => err instanceof StoreCorruptError && /invoices/.test(err.message),
    );
  });

  it('close is safe to call twice', () => {
    const store = SqliteStore.open(tempDir());
    store.close();
    store.close();
    assert.equal(store.isOpen, false);
  });
});

describe('SqliteStore: metrics are stored exactly once per pack and merged per identity', () => {
  const lat = series(MetricKind.Histogram, 'http.server.duration', { route: '/pay' });
  const orders = series(MetricKind.Counter, 'orders.created', { region: 'eu' });
  const pool = series(MetricKind.Gauge, 'pool.size');

  it('stores the same pack twice only once (and counts the duplicate)', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const p = wire([pack('agent-a:1', T0, [point(orders, [1, 1, 1]), point(lat, [10, 20, 30])])]);
      assert.deepEqual(store.storeMetrics(ag('agent-a'), p, T0 + 1), { stored: 2, duplicatePacks: 0, late: 0 });
      assert.deepEqual(store.storeMetrics(ag('agent-a'), p, T0 + 2), { stored: 0, duplicatePacks: 1, late: 0 });
      // Resent together with itself in one batch: still once.
      assert.deepEqual(store.storeMetrics(ag('agent-a'), [...p, ...p], T0 + 3), { stored: 0, duplicatePacks: 2, late: 0 });
      const rows = store.queryMetrics({ agent: 'agent-a', name: 'orders.created' });
      assert.equal(rows.length, 1);
      assert.equal(rows[0]?.count, 3);
      assert.equal(rows[0]?.sum, 3);
      // The same pack id from another agent is another pack.
      assert.equal(store.storeMetrics(ag('agent-b'), p, T0 + 4).stored, 2);
    } finally {
      store.close();
    }
  });

  it('remembers stored packs across a restart', () => {
    const dir = tempDir();
    const p = wire([pack('agent-a:7', T0, [point(orders, [5])])]);
    let store = SqliteStore.open(dir);
    store.storeMetrics(ag('agent-a'), p, T0);
    store.close();
    store = SqliteStore.open(dir);
    try {
      assert.equal(store.storeMetrics(ag('agent-a'), p, T0 + 1).duplicatePacks, 1);
      assert.equal(store.queryMetrics({ name: 'orders.created' })[0]?.sum, 5);
    } finally {
      store.close();
    }
  });

  it('merges two different packs for the same identity: count, sum, min, max, and the latest gauge value', () => {
    const store = SqliteStore.open(tempDir());
    try {
      store.storeMetrics(ag('agent-a'), wire([pack('p1', T0, [point(orders, [1, 2]), point(pool, [4, 8]), point(lat, [5, 50])])]), T0 + 1000);
      store.storeMetrics(ag('agent-a'), wire([pack('p2', T0, [point(orders, [3]), point(pool, [6]), point(lat, [1, 500])])]), T0 + 2000);
      // Another interval and another series stay apart.
      store.storeMetrics(ag('agent-a'), wire([pack('p3', T0 + 10_000, [point(orders, [100])])]), T0 + 3000);
      const rows = store.queryMetrics({ agent: 'agent-a', from: T0, to: T0 + 10_000 });
      assert.equal(rows.length, 3);
      const by = new Map(rows.map((r) => [r.name, r]));
      const c = by.get('orders.created');
      assert.deepEqual(
        { count: c?.count, sum: c?.sum, min: c?.min, max: c?.max, p50: c?.p50, kind: c?.kind, tags: c?.tags, ts: c?.ts },
        {
          count: 3,
          sum: 6,
          min: 1,
          max: 3,
          p50: null,
          kind: 'counter',
          tags: { region: 'eu' },
          ts: T0,
        },
      );
      assert.equal('value' in (c as object), false);
      const g = by.get('pool.size');
      assert.deepEqual(
        { count: g?.count, min: g?.min, max: g?.max, value: g?.value, p99: g?.p99, kind: g?.kind },
        { count: 3, min: 4, max: 8, value: 6, p99: null, kind: 'gauge' },
      );
      const h = by.get('http.server.duration');
      assert.deepEqual({ count: h?.count, sum: h?.sum, min: h?.min, max: h?.max, kind: h?.kind }, { count: 4, sum: 556, min: 1, max: 500, kind: 'histogram' });
      assert.ok(h?.p50 !== null && h?.p99 !== null);
      assert.equal(store.queryMetrics({ agent: 'agent-a', name: 'orders.created' }).length, 2);
    } finally {
      store.close();
    }
  });

  it('a gauge keeps the value received last, even when an older pack arrives later in the same interval', () => {
    const store = SqliteStore.open(tempDir());
    try {
      store.storeMetrics(ag('a'), wire([pack('x2', T0, [point(pool, [9])])]), T0 + 5000);
      store.storeMetrics(ag('a'), wire([pack('x1', T0, [point(pool, [1])])]), T0 + 6000);
      assert.equal(store.queryMetrics({ name: 'pool.size' })[0]?.value, 1);
    } finally {
      store.close();
    }
  });

  it('quantiles stay within 1% of the exact ones after merging many packs', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const rnd = prng(42);
      const all: number[] = [];
      for (let i = 0; i < 12; i++) {
        const values = Array.from({ length: 2000 }, () => Math.exp(2 + 1.5 * Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd())));
        all.push(...values);
        store.storeMetrics(ag('a'), wire([pack(`q${i}`, T0, [point(lat, values)])]), T0 + i);
        if (i % 3 === 0) store.storeMetrics(ag('a'), wire([pack(`q${i}`, T0, [point(lat, values)])]), T0 + i); // resent: ignored
      }
      const sorted = Float64Array.from(all).sort();
      const exact = (q: number) => sorted[Math.floor(q * (sorted.length - 1))] as number;
      const [row] = store.queryMetrics({ name: 'http.server.duration' });
      assert.equal(row?.count, all.length);
      for (const [q, got] of [
        [0.5, row?.p50],
        [0.95, row?.p95],
        [0.99, row?.p99],
      ] as [number, number][]) {
        const e = exact(q);
        assert.ok(Math.abs(got - e) / e <= 0.01, `p${q * 100}: stored ${got}, exact ${e}`);
      }
    } finally {
      store.close();
    }
  });

  it('a batch that fails half-way stores nothing and can be sent again', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const good = wire([pack('ok', T0, [point(orders, [1])])])[0] as UpMetricPack;
      const bad = { packId: 'bad', intervalStart: T0, intervalMs: 10_000, points: [null] } as unknown as UpMetricPack;
      assert.throws(() => store.storeMetrics(ag('a'), [good, bad], T0));
      assert.equal(store.queryMetrics({}).length, 0);
      assert.deepEqual(store.storeMetrics(ag('a'), [good], T0), { stored: 1, duplicatePacks: 0, late: 0 });
    } finally {
      store.close();
    }
  });

  it('queryMetrics filters by agent, name and [from, to), and returns the most recent `limit` points oldest first', () => {
    const store = SqliteStore.open(tempDir());
    try {
      for (let i = 0; i < 10; i++) store.storeMetrics(ag('a'), wire([pack(`a${i}`, T0 + i * 10_000, [point(orders, [i])])]), T0);
      store.storeMetrics(ag('b'), wire([pack('b0', T0, [point(orders, [1])])]), T0);
      assert.equal(store.queryMetrics({}).length, 11);
      assert.equal(store.queryMetrics({ agent: 'b' }).length, 1);
      assert.equal(store.queryMetrics({ name: 'nope' }).length, 0);
      const range = store.queryMetrics({ agent: 'a', from: T0 + 20_000, to: T0 + 50_000 });
      assert.deepEqual(
        range.map((r) => r.ts),
        [T0 + 20_000, T0 + 30_000, T0 + 40_000],
      );
      const last3 = store.queryMetrics({ agent: 'a', limit: 3 });
      assert.deepEqual(
        last3.map((r) => r.sum),
        [7, 8, 9],
      );
      assert.equal(last3[0]?.agentId, 'a');
    } finally {
      store.close();
    }
  });
});

describe('SqliteStore: text items', () => {
  const origin = { app: 'checkout', instanceId: 'i-1', pid: 42 };
  const items: TextItem[] = [
    { kind: 'trace', origin, trace: { txid: 't1', traceId: 'tr1', spanId: 's1', name: 'POST /pay', startTime: T0, durationMs: 12, steps: [], error: 'boom' } },
    { kind: 'event', origin, event: { ts: T0, type: 'deploy', message: 'v42' } },
    { kind: 'snapshot', origin, snapshot: { ts: T0, kind: 'heap', data: { used: 1 } } },
    { kind: 'activeStack', origin, stack: { txid: 't2', name: 'GET /', ts: T0, elapsedMs: 3, frames: ['a', 'b'] } },
    { kind: 'btRegistration', origin, name: 'POST /pay', ts: T0 },
    { kind: 'btRegistration', origin, name: 'POST /pay', ts: T0 + 1 },
  ];

  it('de-duplicates business-transaction registrations per agent, across batches', () => {
    const store = SqliteStore.open(tempDir());
    try {
      assert.deepEqual(store.storeText(ag('a'), items), { traces: 1, activeStacks: 1, events: 1, snapshots: 1, btRegistrations: 1, btDuplicates: 1 });
      const again = store.storeText(ag('a'), [
        { kind: 'btRegistration', origin, name: 'POST /pay', ts: T0 + 5 },
        { kind: 'btRegistration', origin, name: 'GET /cart', ts: T0 + 5 },
      ]);
      assert.equal(again.btRegistrations, 1);
      assert.equal(again.btDuplicates, 1);
      store.storeText(ag('b'), [{ kind: 'btRegistration', origin, name: 'POST /pay', ts: T0 }]);
      assert.deepEqual(
        store.listBtRegistrations({ agent: 'a' }).map((r) => [r.name, r.firstSeenAt]),
        [
          ['GET /cart', T0 + 5],
          ['POST /pay', T0],
        ],
      );
      assert.equal(store.listBtRegistrations().length, 3);
    } finally {
      store.close();
    }
  });

  it('lists recent traces and events, newest first, limited', () => {
    const store = SqliteStore.open(tempDir());
    try {
      store.storeText(ag('a'), items);
      for (let i = 0; i < 5; i++) store.storeText(ag('b'), [{ kind: 'event', origin, event: { ts: T0 + i, type: 'tick', message: `m${i}` } }]);
      const [t] = store.listTraces({ agent: 'a' });
      assert.deepEqual(
        { txid: t?.txid, traceId: t?.traceId, name: t?.name, error: t?.error, app: t?.app },
        { txid: 't1', traceId: 'tr1', name: 'POST /pay', error: 'boom', app: 'checkout' },
      );
      assert.deepEqual(
        store.listEvents({ agent: 'b', limit: 2 }).map((e) => e.message),
        ['m4', 'm3'],
      );
      assert.equal(store.listEvents().length, 6);
      assert.equal(store.counts().snapshots, 1);
      assert.equal(store.counts().active_stacks, 1);
    } finally {
      store.close();
    }
  });
});

describe('SqliteStore: agents', () => {
  it('keeps an agent identity and first-seen time across reconnects; app is its first app', () => {
    const store = SqliteStore.open(tempDir(), { seenPersistMs: 1000 });
    try {
      store.agentConnected('proj-1', info('pod-1'), T0);
      store.agentLicensed(ag('pod-1', 'proj-1'), true);
      store.agentSeen(ag('pod-1', 'proj-1'), T0 + 500); // throttled: kept in memory, still listed
      let [a] = store.listAgents();
      assert.deepEqual(
        { agentId: a?.agentId, projectId: a?.projectId, app: a?.app, host: a?.host, state: a?.state, lastSeenAt: a?.lastSeenAt, licensed: a?.licensed },
        { agentId: 'pod-1', projectId: 'proj-1', app: 'checkout', host: 'pod-1.local', state: 'live', lastSeenAt: T0 + 500, licensed: true },
      );
      store.setAgentState(ag('pod-1', 'proj-1'), 'stalled', { at: T0 + 600, reason: 'test' });
      store.setAgentState(ag('pod-1', 'proj-1'), 'disconnected', { at: T0 + 700, reason: 'test' });
      assert.equal(store.listAgents()[0]?.state, 'disconnected');
      assert.equal(store.listAgents()[0]?.stateSince, T0 + 700);
      store.agentConnected('proj-1', info('pod-1', ['checkout']), T0 + 9000);
      [a] = store.listAgents();
      assert.equal(store.listAgents().length, 1);
      assert.equal(a?.state, 'live');
      assert.equal(a?.firstSeenAt, T0);
      assert.equal(a?.lastSeenAt, T0 + 9000);
      assert.deepEqual(store.agentsByState(), { live: 1, stalled: 0, disconnected: 0 });
    } finally {
      store.close();
    }
  });

  it('setAgentState is the one writer of state: it returns each change (from → to), and null for no change or an unknown agent', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const a = ag('pod-3');
      assert.equal(store.setAgentState(a, 'live', { at: T0, reason: 'test' }), null, 'unknown agent');
      assert.deepEqual(store.agentConnected('p', info('pod-3'), T0), { from: 'disconnected', to: 'live' });
      assert.equal(store.agentConnected('p', info('pod-3'), T0 + 1), null, 'already live');
      assert.deepEqual(store.setAgentState(a, 'stalled', { at: T0 + 100, reason: 'test' }), { from: 'live', to: 'stalled' });
      assert.equal(store.setAgentState(a, 'stalled', { at: T0 + 200, reason: 'test' }), null);
      assert.equal(store.listAgents()[0]?.stateSince, T0 + 100, 'no change keeps the time the state began');
      // New info (the set of apps changed) leaves the state as it is.
      store.agentInfo('p', info('pod-3', ['cart']), T0 + 300);
      assert.deepEqual(
        store.listAgents().map((r) => [r.state, r.stateSince, r.app, r.lastSeenAt]),
        [['stalled', T0 + 100, 'cart', T0 + 300]],
      );
    } finally {
      store.close();
    }
  });

  it('writes throttled last-seen times on close; resetSessions marks everyone disconnected, and licenses stay until license_release_ms later', () => {
    const dir = tempDir();
    let store = SqliteStore.open(dir, { seenPersistMs: 60_000 });
    store.agentConnected('p', info('pod-2'), T0);
    store.agentLicensed(ag('pod-2'), true);
    store.agentSeen(ag('pod-2'), T0 + 1234);
    store.close();
    store = SqliteStore.open(dir);
    try {
      assert.equal(store.listAgents()[0]?.lastSeenAt, T0 + 1234);
      assert.equal(store.resetSessions(T0 + 5000), 1);
      const [a] = store.listAgents();
      assert.equal(a?.state, 'disconnected');
      assert.equal(a?.licensed, true, 'a restart does not hand the seat to another agent');
      assert.equal(a?.stateSince, T0 + 5000);
      assert.equal(store.resetSessions(T0 + 6000), 0);
      assert.deepEqual(store.releaseLicenses(T0 + 5000 + 299_999, 300_000), []);
      assert.deepEqual(store.releaseLicenses(T0 + 5000 + 300_000, 300_000), [ag('pod-2')]);
      assert.equal(store.listAgents()[0]?.licensed, false);
    } finally {
      store.close();
    }
  });
});

describe('SqliteStore: access keys', () => {
  it('creates keys that parse, whose secret the store returns, and lists them without the secret', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const k = store.createKey('My Shop (EU)!');
      assert.match(k.projectId, /^my-shop-eu-[0-9a-f]{6}$/);
      assert.equal(k.secret.length, 32);
      assert.equal(k.created, true);
      const parsed = parseAccessKey(formatAccessKey(k));
      assert.equal(parsed.projectId, k.projectId);
      assert.deepEqual(
        store.projectKeys(k.projectId).map((r) => [r.secret, r.revokedAt]),
        [[k.secret, null]],
      );
      assert.deepEqual(store.projectKeys('unknown-000000'), []);
      const other = store.createKey('Other');
      assert.notEqual(other.projectId, k.projectId);
      const list = store.listKeys();
      assert.deepEqual(
        list.map((r) => Object.keys(r).sort()),
        [
          ['createdAt', 'fingerprint', 'name', 'projectId', 'revokedAt'],
          ['createdAt', 'fingerprint', 'name', 'projectId', 'revokedAt'],
        ],
      );
      const row = list.find((r) => r.projectId === k.projectId);
      assert.equal(row?.fingerprint, keyFingerprint(k.secret));
      assert.equal(row?.name, 'My Shop (EU)!');
      assert.equal(row?.revokedAt, null);
      const text = JSON.stringify(list);
      assert.ok(!text.includes(k.secret.toString('base64url')) && !text.includes(k.secret.toString('hex')));
    } finally {
      store.close();
    }
  });

  it('a second key for an existing project (named, or by id) is a rotation: the project keeps both keys until one is revoked', () => {
    const store = SqliteStore.open(tempDir());
    try {
      const k1 = store.createKey('Shop');
      const k2 = store.createKey('  Shop ');
      const k3 = store.createKey(k1.projectId);
      assert.deepEqual([k2.projectId, k3.projectId, k2.created, k3.created], [k1.projectId, k1.projectId, false, false]);
      assert.equal(new Set([k1, k2, k3].map((k) => k.secret.toString('hex'))).size, 3, 'every key has its own secret');
      assert.deepEqual(
        store.projectKeys(k1.projectId).map((r) => r.secret),
        [k1.secret, k2.secret, k3.secret],
      );
      assert.deepEqual(store.revokedKeyIds(), []);
      const fp = keyFingerprint(k2.secret);
      const r = store.revokeKey(fp.toUpperCase(), T0);
      assert.deepEqual(r, { projectId: k1.projectId, fingerprint: fp, alreadyRevokedAt: null });
      const keys = store.projectKeys(k1.projectId);
      assert.deepEqual(
        keys.map((x) => x.revokedAt),
        [null, T0, null],
      );
      assert.deepEqual(store.revokedKeyIds(), [keys[1]?.id]);
      assert.equal(store.listKeys().find((x) => x.fingerprint === fp)?.revokedAt, T0);
      assert.equal(store.revokeKey(fp, T0 + 5).alreadyRevokedAt, T0, 'revoking twice keeps the first time');
      assert.equal(store.projectKeys(k1.projectId)[1]?.revokedAt, T0);
      assert.throws(
        () => store.revokeKey('000000000000'),
        (err: unknown) => (err as { code?: string }).code === 'ERR_KEY_NOT_FOUND',
      );
    } finally {
      store.close();
    }
  });

  it('slugs project names into valid project ids and rejects empty names', () => {
    assert.equal(projectSlug('Crème Brûlée Service'), 'creme-brulee-service');
    assert.equal(projectSlug('!!!'), 'project');
    assert.ok(projectSlug('x'.repeat(300)).length <= 56);
    const store = SqliteStore.open(tempDir());
    try {
      assert.throws(
        () => store.createKey('   '),
        (err: unknown) => (err as { code?: string }).code === 'ERR_PROJECT_NAME',
      );
      assert.throws(
        () => store.createKey('a\nb'),
        (err: unknown) => (err as { code?: string }).code === 'ERR_PROJECT_NAME',
      );
      assert.match(store.createKey('—').projectId, /^project-[0-9a-f]{6}$/);
    } finally {
      store.close();
    }
  });
});

describe('schema migrations', () => {
  it('a database written by schema 2 opens with its points intact after the key reorder', () => {
    const dir = mkdtempSync(join(tmpdir(), 'apm-mig-'));
    try {
      const db = new Database(join(dir, 'collector.db'));
      for (const m of MIGRATIONS.slice(0, 2)) db.exec(m);
      db.pragma('user_version = 2');
      const ins = db.prepare(
        'INSERT INTO metric_points (agent_id, series_key, name, tags_json, kind, interval_start, interval_ms, count, sum, min, max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      );
      ins.run('a1', Buffer.from([0, 1, 120]), 'old.metric', '{}', 0, 60_000, 10_000, 3, 6, 1, 3);
      ins.run('a1', Buffer.from([0, 1, 120]), 'old.metric', '{}', 0, 70_000, 10_000, 1, 4, 4, 4);
      db.close();
      const store = SqliteStore.open(dir);
      try {
        assert.equal(store.pragma('user_version'), SCHEMA_VERSION);
        const rows = store.queryMetrics({ name: 'old.metric' });
        assert.deepEqual(
          rows.map((r) => [r.ts, r.count, r.sum]),
          [
            [60_000, 3, 6],
            [70_000, 1, 4],
          ],
        );
      } finally {
        store.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

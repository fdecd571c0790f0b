import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Pool } from 'pg';
import { MetricKind, type MetricKindCode, type MetricPoint, type Series, Sketch, encodeSeries } from '@apm-sidecar/proto';
import { type TextItem, type UpMetricPack, decodeMetricBatch, encodeMetricBatch } from '@apm-sidecar/proto/upstream';
import { type MetricQuery, SqliteStore, type TraceRow } from '@apm-sidecar/collector';
import { PgMetricStore } from '@apm-sidecar/collector/dist/store/pg/metrics';
import { PgPruner } from '@apm-sidecar/collector/dist/store/pg/prune';
import { PgQueries } from '@apm-sidecar/collector/dist/store/pg/queries';
import { migrate } from '@apm-sidecar/collector/dist/store/pg/schema';
import { PgTextStore } from '@apm-sidecar/collector/dist/store/pg/text-items';
import { type PgServer, postgresMissing, startPostgres } from '../helpers/postgres';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

/**
 * The data half of the PostgreSQL store (collector/src/store/pg: metrics, text items, queries,
 * prune) against a real throwaway server, and against the SQLite store fed the same input:
 * both must answer every query with the same rows.
 */

const tempDir = tempDirsRemovedAfter('apm-pgdata-');
const GRACE = 120_000;
/** A minute boundary: intervals start here and after, `NOW` is inside the minute after. */
const T0 = Date.UTC(2026, 0, 5, 10, 0, 0);
const NOW = T0 + 70_000;

function series(kind: MetricKindCode, name: string, tags: Record<string, string> = {}): Series {
  return { key: encodeSeries(kind, name, tags).toString('latin1'), kind, name, tags };
}

/** Values are small multiples of 1/4, so sums are exact whatever order they are added in. */
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

/** Through the real upstream codec, as the agent server hands packs over. */
function wire(packs: UpMetricPack[]): UpMetricPack[] {
  return decodeMetricBatch(encodeMetricBatch(packs));
}

function pack(packId: string, intervalStart: number, points: MetricPoint[], intervalMs = 10_000): UpMetricPack {
  return { packId, intervalStart, intervalMs, points };
}

const LAT = series(MetricKind.Histogram, 'http.server.duration', { route: '/pay' });
const LAT2 = series(MetricKind.Histogram, 'http.server.duration', { route: '/cart' });
const REQ = series(MetricKind.Counter, 'http.server.requests', { route: '/pay', status: '200' });
const POOL = series(MetricKind.Gauge, 'pool.in_use');
const ODD = series(MetricKind.Counter, 'odd "name" \\ é', { 'k"\\': 'v\u00e9' });

const A = { projectId: 'shop', agentId: 'web-1' };
const B = { projectId: 'shop', agentId: 'web-2' };
/** The same agent_id in another project: another agent. */
const C = { projectId: 'blog', agentId: 'web-1' };

let server: PgServer | null = null;
let dbCount = 0;
const pools: Pool[] = [];

/** A pool on database `db` (the password given apart: a connection string's would override it). */
function poolOf(db: string, max: number): Pool {
  if (server === null) throw new Error('no server');
  const pool = new Pool({ host: server.host, port: server.port, user: server.user, password: server.password, database: db, max });
  // An idle client of a pool still open when the server stops reports it here, not as a crash.
  pool.on('error', () => {});
  pools.push(pool);
  return pool;
}

/** A new database with the store's schema (the migrations `apm-collector migrate` applies). */
async function freshDatabase(): Promise<string> {
  if (server === null) throw new Error('no server');
  const db = `pgdata_${++dbCount}`;
  await server.createDatabase(db);
  const c = await poolOf(db, 1).connect();
  try {
    await migrate(c, db);
  } finally {
    c.release();
  }
  return db;
}

async function freshPool(max = 4): Promise<Pool> {
  return poolOf(await freshDatabase(), max);
}

/** Two pools on one new database: two collectors sharing it. */
async function twoCollectors(max = 4): Promise<[Pool, Pool]> {
  const db = await freshDatabase();
  return [poolOf(db, max), poolOf(db, max)];
}

function sqlite(): SqliteStore {
  return SqliteStore.open(tempDir(), { rollupGraceMs: GRACE });
}

/** Every metric query the API can make, points and rollups. */
const METRIC_QUERIES: MetricQuery[] = [
  {},
  { rollup: true },
  { project: 'shop' },
  { project: 'blog', rollup: true },
  { agent: 'web-1' },
  { agent: 'web-2', project: 'shop' },
  { name: 'http.server.duration' },
  { name: 'http.server.duration', rollup: true },
  { from: T0 + 10_000 },
  { to: T0 + 20_000 },
  { from: T0 + 10_000, to: T0 + 60_000, rollup: true },
  { limit: 3 },
  { limit: 2, rollup: true },
  { limit: 0 },
  { limit: 1e9 },
  { name: 'nothing' },
];

/** A mixed sequence of batches: merges within a batch and across batches, duplicates, late packs, three agents. */
function batches(): { agent: typeof A; packs: UpMetricPack[]; now: number }[] {
  return [
    {
      agent: A,
      now: NOW,
      packs: wire([
        pack('a1', T0, [point(LAT, [1, 2, 3.5, 40]), point(REQ, [1, 1, 1]), point(POOL, [3, 7]), point(ODD, [1])]),
        pack('a2', T0 + 10_000, [point(LAT, [5, 6.25]), point(REQ, [1]), point(POOL, [9]), point(LAT2, [100, 200])]),
        // the same id again in one batch: a duplicate
        pack('a2', T0 + 10_000, [point(LAT, [1000])]),
        // one interval row merged twice within the batch
        pack('a3', T0 + 10_000, [point(LAT, [7.5]), point(POOL, [2])]),
      ]),
    },
    {
      agent: A,
      now: NOW + 1000,
      packs: wire([
        pack('a1', T0, [point(LAT, [999])]), // duplicate of an earlier batch
        pack('a4', T0 + 20_000, [point(LAT, [0.25, 0.5]), point(POOL, [4]), point(REQ, [1, 1])]),
        pack('a5', T0 + 10_000, [point(LAT, [8]), point(LAT2, [50])]), // merges into stored rows
        pack('old', T0 - 5 * 60_000, [point(LAT, [1]), point(REQ, [1])]), // a final minute: late
      ]),
    },
    { agent: B, now: NOW, packs: wire([pack('a1', T0, [point(LAT, [10, 20]), point(POOL, [1])]), pack('b2', T0 + 60_000, [point(REQ, [1])])]) },
    { agent: C, now: NOW, packs: wire([pack('a1', T0, [point(LAT, [30]), point(REQ, [1, 1, 1, 1])])]) },
    // an empty pack and an empty batch
    { agent: C, now: NOW, packs: wire([pack('c2', T0 + 10_000, [])]) },
    { agent: C, now: NOW, packs: [] },
  ];
}

describe('PostgreSQL store, data half', { skip: postgresMissing() }, () => {
  before(async () => {
    server = await startPostgres();
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await server?.stop();
  });

  it('stores what SQLite stores: the same results per batch and the same rows for every metric query', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const q = new PgQueries(pool);
    const lite = sqlite();
    try {
      for (const b of batches()) {
        const want = await lite.storeMetrics(b.agent, b.packs, b.now);
        assert.deepEqual(await pg.storeMetrics(b.agent, b.packs, b.now), want, `batch of ${b.agent.agentId}`);
      }
      for (const mq of METRIC_QUERIES) assert.deepStrictEqual(await q.queryMetrics(mq), await lite.queryMetrics(mq), JSON.stringify(mq));
      // The data is what was sent: the merged histogram row holds every value once.
      const rows = await q.queryMetrics({ agent: 'web-1', project: 'shop', name: 'http.server.duration', from: T0 + 10_000, to: T0 + 10_001 });
      const row = rows.find((r) => r.tags.route === '/pay');
      assert.equal(row?.count, 4, 'a2 (2 values), a3 (1), a5 (1); not the duplicate a2');
      const c = await q.counts();
      assert.deepEqual(
        { metric_packs: c.metric_packs, metric_points: c.metric_points },
        { metric_packs: (await lite.counts()).metric_packs, metric_points: (await lite.counts()).metric_points },
      );
    } finally {
      lite.close();
    }
  });

  it('counts a pack once when two collectors (two pools) store it, one after the other and at the same time', async () => {
    const [pool1, other] = await twoCollectors();
    const s1 = new PgMetricStore(pool1, GRACE);
    const s2 = new PgMetricStore(other, GRACE);
    const first = wire([pack('p1', T0, [point(LAT, [1, 2]), point(REQ, [1])])]);
    assert.deepEqual(await s1.storeMetrics(A, first, NOW), { stored: 2, duplicatePacks: 0, late: 0 });
    assert.deepEqual(await s2.storeMetrics(A, first, NOW), { stored: 0, duplicatePacks: 1, late: 0 });

    // 40 packs, each stored by both collectors at once, in batches that overlap differently.
    const packs = Array.from({ length: 40 }, (_, i) => pack(`c${i}`, T0 + (i % 6) * 10_000, [point(LAT, [i + 1]), point(REQ, [1]), point(POOL, [i])]));
    const results = await Promise.all([
      ...Array.from({ length: 8 }, (_, k) => s1.storeMetrics(A, wire(packs.slice(k * 5, k * 5 + 5)), NOW)),
      ...Array.from({ length: 10 }, (_, k) => s2.storeMetrics(A, wire(packs.slice(k * 4, k * 4 + 4)), NOW)),
    ]);
    const stored = results.reduce((n, r) => n + r.stored, 0);
    const dups = results.reduce((n, r) => n + r.duplicatePacks, 0);
    assert.equal(stored, 40 * 3, 'every point stored once');
    assert.equal(dups, 40, 'every pack refused once');

    // The stored rows are those of storing each pack once, in one SQLite store.
    const lite = sqlite();
    try {
      await lite.storeMetrics(A, first, NOW);
      await lite.storeMetrics(A, wire(packs), NOW);
      const q = new PgQueries(other);
      const strip = (rows: Awaited<ReturnType<PgQueries['queryMetrics']>>) => rows.map((r) => ({ ...r, value: r.kind === 'gauge' ? 'any' : r.value }));
      for (const mq of [{}, { rollup: true }] as MetricQuery[]) {
        // A gauge's last value is whichever pack was stored last, which differs between the two; the rest is equal.
        assert.deepStrictEqual(strip(await q.queryMetrics(mq)), strip(await lite.queryMetrics(mq)), JSON.stringify(mq));
      }
      const rollup = (await q.queryMetrics({ rollup: true, name: 'http.server.duration' }))[0];
      // Every value in the minute's sketch once: no writer overwrote another's merge.
      assert.equal(rollup?.count, 2 + 40);
      assert.equal(rollup?.p99, (await lite.queryMetrics({ rollup: true, name: 'http.server.duration' }))[0]?.p99);
    } finally {
      lite.close();
    }
  });

  it('merges histogram sketches exactly when two collectors store different packs of the same rows at once', async () => {
    const [pool1, pool2] = await twoCollectors(8);
    const stores = [new PgMetricStore(pool1, GRACE), new PgMetricStore(pool2, GRACE)];
    // 60 packs of one minute, every one touching the same rollup row and a few interval rows.
    const packs = Array.from({ length: 60 }, (_, i) => pack(`h${i}`, T0 + (i % 3) * 10_000, [point(LAT, [i + 1, 2 * (i + 1)])]));
    await Promise.all(packs.map((p, i) => (stores[i % 2] as PgMetricStore).storeMetrics(A, wire([p]), NOW)));
    const lite = sqlite();
    try {
      await lite.storeMetrics(A, wire(packs), NOW);
      const q = new PgQueries(pool2);
      for (const mq of [{}, { rollup: true }] as MetricQuery[])
        assert.deepStrictEqual(await q.queryMetrics(mq), await lite.queryMetrics(mq), JSON.stringify(mq));
    } finally {
      lite.close();
    }
  });

  it('stores a batch holding more series than its series cache keeps: a series seen again in the batch is still one row', async () => {
    const pool = await freshPool();
    // A cache of 2: the batch's third series fills it; LAT comes again after that, in a pack of the same interval.
    const pg = new PgMetricStore(pool, GRACE, 2);
    const q = new PgQueries(pool);
    const packs = wire([pack('s1', T0, [point(LAT, [1]), point(LAT2, [2])]), pack('s2', T0, [point(REQ, [1]), point(LAT, [3]), point(POOL, [4])])]);
    const lite = sqlite();
    try {
      assert.deepEqual(await pg.storeMetrics(A, packs, NOW), await lite.storeMetrics(A, packs, NOW));
      // And the next batch, with the cache full from the first.
      const more = wire([pack('s3', T0, [point(LAT, [5]), point(ODD, [1]), point(LAT2, [6])])]);
      assert.deepEqual(await pg.storeMetrics(A, more, NOW), await lite.storeMetrics(A, more, NOW));
      for (const mq of [{}, { rollup: true }] as MetricQuery[])
        assert.deepStrictEqual(await q.queryMetrics(mq), await lite.queryMetrics(mq), JSON.stringify(mq));
    } finally {
      lite.close();
    }
  });

  it('stores large batches as SQLite does: a replay of many intervals, resent in part with new packs among the resent ones', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const q = new PgQueries(pool);
    const lite = sqlite();
    const kinds = [MetricKind.Histogram, MetricKind.Counter, MetricKind.Gauge] as const;
    const all = Array.from({ length: 300 }, (_, i) => series(kinds[i % 3] as MetricKindCode, `m${i % 7}`, { i: String(i) }));
    // 18 packs over three minutes of 10 s intervals, 300 series each, values as multiples of 1/4.
    const packs = Array.from({ length: 18 }, (_, k) =>
      pack(
        `r${k}`,
        T0 + k * 10_000,
        all.map((s, i) => point(s, [((i + k) % 13) / 4, ((i * k) % 29) / 4 + 1])),
      ),
    );
    // Before the first minute is final (its end + GRACE).
    const now = T0 + 175_000;
    try {
      // Half the packs first, then all of them with every other pack new: duplicates and new packs in one batch, merging into stored rows.
      const first = wire(packs.filter((_, k) => k % 2 === 0));
      assert.deepEqual(await pg.storeMetrics(A, first, now), await lite.storeMetrics(A, first, now));
      const again = wire(packs);
      const want = await lite.storeMetrics(A, again, now);
      assert.deepEqual(await pg.storeMetrics(A, again, now), want);
      assert.deepEqual(want, { stored: 9 * 300, duplicatePacks: 9, late: 0 });
      for (const mq of [{}, { rollup: true }, { name: 'm3' }] as MetricQuery[])
        assert.deepStrictEqual(await q.queryMetrics(mq), await lite.queryMetrics(mq), JSON.stringify(mq));
    } finally {
      lite.close();
    }
  });

  it('drops and counts the points of a final minute, once: a resend of that pack is a duplicate', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const q = new PgQueries(pool);
    const minuteEnd = T0 + 60_000;
    const p = wire([pack('late', T0 + 50_000, [point(LAT, [1]), point(REQ, [1, 1])])]);
    // One ms before the minute is final: stored.
    assert.deepEqual(await pg.storeMetrics(A, wire([pack('in-time', T0, [point(REQ, [1])])]), minuteEnd + GRACE - 1), {
      stored: 1,
      duplicatePacks: 0,
      late: 0,
    });
    assert.deepEqual(await pg.storeMetrics(A, p, minuteEnd + GRACE), { stored: 0, duplicatePacks: 0, late: 2 });
    assert.deepEqual(await pg.storeMetrics(A, p, minuteEnd + GRACE + 5), { stored: 0, duplicatePacks: 1, late: 0 });
    assert.equal((await q.queryMetrics({ name: 'http.server.duration' })).length, 0);
    assert.equal((await q.counts()).metric_packs, 2);
  });

  it('stores text items as SQLite does: registrations once per agent, every list filter answered alike', async () => {
    const pool = await freshPool();
    const pg = new PgTextStore(pool);
    const q = new PgQueries(pool);
    const lite = sqlite();
    const origin = (app: string) => ({ app, instanceId: `${app}-1`, pid: 7 });
    const trace = (i: number, traceId: string, name: string, error?: string): TextItem => ({
      kind: 'trace',
      origin: origin('shop'),
      trace: {
        txid: `tx${i}`,
        traceId,
        spanId: `s${i}`,
        name,
        startTime: T0 + i * 1.5,
        durationMs: i / 4,
        steps: [{ type: 'sql', text: 'SELECT "x"\\', durationMs: 1, offsetMs: 0 }],
        ...(error !== undefined && { error }),
      },
    });
    const items = (agentNo: number): TextItem[] => [
      trace(agentNo * 10 + 1, 'T1', '/pay'),
      trace(agentNo * 10 + 2, 'T2', '/cart', 'boom'),
      trace(agentNo * 10 + 3, 'T1', '/pay\u0000x'),
      { kind: 'activeStack', origin: origin('shop'), stack: { txid: 'tx', name: '/pay', ts: T0 + 5, elapsedMs: 12.5, frames: ['a', 'b'] } },
      { kind: 'event', origin: origin('shop'), event: { ts: T0 + 6, type: 'deploy', message: `v${agentNo}`, attributes: { ok: true } } },
      { kind: 'event', origin: origin('api'), event: { ts: T0 + 7, type: 'restart', message: 'm' } },
      { kind: 'snapshot', origin: origin('shop'), snapshot: { ts: T0 + 8, kind: 'heap', data: { used: agentNo, nested: [1, 'two'] } } },
      { kind: 'snapshot', origin: origin('shop'), snapshot: { ts: T0 + 9, kind: 'threads', data: null } },
      { kind: 'btRegistration', origin: origin('shop'), name: '/pay', ts: T0 },
      { kind: 'btRegistration', origin: origin('shop'), name: '/cart', ts: T0 + 1 },
      { kind: 'btRegistration', origin: origin('api'), name: '/pay', ts: T0 + 2 }, // again in one batch
    ];
    try {
      for (const [agent, n] of [
        [A, 1],
        [B, 2],
        [C, 3],
        [A, 4], // registrations again: duplicates
      ] as const) {
        const batch = items(n);
        const want = await lite.storeText(agent, batch);
        assert.deepEqual(await pg.storeText(agent, batch), want, `${agent.projectId}/${agent.agentId} batch ${n}`);
      }
      assert.deepEqual(await pg.storeText(A, []), { traces: 0, activeStacks: 0, events: 0, snapshots: 0, btRegistrations: 0, btDuplicates: 0 });

      const lists = [
        {},
        { project: 'shop' },
        { project: 'blog' },
        { agent: 'web-1' },
        { agent: 'web-1', project: 'shop' },
        { limit: 2 },
        { limit: 0 },
        { agent: 'nobody' },
      ];
      const traceLists = [...lists, { traceId: 'T1' }, { traceId: 'T2', agent: 'web-2' }, { name: '/pay' }, { name: '/cart', limit: 1 }, { traceId: 'none' }];
      // U+0000 cannot be stored in a PostgreSQL text column: it is U+FFFD there (the JSON body keeps it), the one difference.
      const nul = (rows: TraceRow[]): TraceRow[] => rows.map((r) => ({ ...r, name: r.name.replaceAll('\u0000', '\ufffd') }));
      for (const l of traceLists) assert.deepStrictEqual(await q.listTraces(l), nul(await lite.listTraces(l)), `traces ${JSON.stringify(l)}`);
      for (const l of lists) {
        assert.deepStrictEqual(await q.listEvents(l), await lite.listEvents(l), `events ${JSON.stringify(l)}`);
        assert.deepStrictEqual(await q.listSnapshots(l), await lite.listSnapshots(l), `snapshots ${JSON.stringify(l)}`);
        assert.deepStrictEqual(await q.listBtRegistrations(l), await lite.listBtRegistrations(l), `registrations ${JSON.stringify(l)}`);
      }
      const counts = await q.counts();
      const liteCounts = await lite.counts();
      for (const t of ['traces', 'active_stacks', 'events', 'snapshots', 'bt_registrations']) assert.equal(counts[t], liteCounts[t], t);
      assert.equal(counts.bt_registrations, 6, 'two names for each of three agents');
    } finally {
      lite.close();
    }
  });

  it('keeps a metric name holding U+0000 (as U+FFFD) instead of failing the batch on every resend', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const s = series(MetricKind.Counter, 'bad\u0000name', { t: 'x\u0000' });
    assert.deepEqual(await pg.storeMetrics(A, wire([pack('nul\u0000id', T0, [point(s, [1])])]), NOW), { stored: 1, duplicatePacks: 0, late: 0 });
    assert.deepEqual(await pg.storeMetrics(A, wire([pack('nul\u0000id', T0, [point(s, [1])])]), NOW), { stored: 0, duplicatePacks: 1, late: 0 });
    const rows = await new PgQueries(pool).queryMetrics({});
    assert.equal(rows[0]?.name, 'bad\ufffdname');
    assert.deepEqual(rows[0]?.tags, { t: 'x\u0000' });
  });

  it('orders rows by the bytes of their text keys, as SQLite does, in a database whose collation is not C', async () => {
    if (server === null) throw new Error('no server');
    const admin = poolOf('postgres', 1);
    // ICU's root collation sorts a < A < b < B; bytes sort A < B < a < b.
    await admin.query("CREATE DATABASE pgdata_icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'");
    const pool = poolOf('pgdata_icu', 2);
    const c = await pool.connect();
    try {
      await migrate(c, 'pgdata_icu');
    } finally {
      c.release();
    }
    const pg = new PgMetricStore(pool, GRACE);
    const text = new PgTextStore(pool);
    const q = new PgQueries(pool);
    const lite = sqlite();
    try {
      for (const agentId of ['b', 'A', 'a', 'B']) {
        const agent = { projectId: agentId === 'A' ? 'Q' : 'q', agentId };
        const ps = wire([
          pack('x', T0, [
            point(series(MetricKind.Counter, 'b'), [1]),
            point(series(MetricKind.Counter, 'B'), [1]),
            point(series(MetricKind.Counter, 'a'), [1]),
          ]),
        ]);
        await lite.storeMetrics(agent, ps, NOW);
        await pg.storeMetrics(agent, ps, NOW);
        const regs: TextItem[] = ['b', 'A', 'a', 'B'].map((name) => ({ kind: 'btRegistration', origin: { app: 'x', instanceId: 'i', pid: 1 }, name, ts: T0 }));
        await lite.storeText(agent, regs);
        await text.storeText(agent, regs);
      }
      for (const mq of [{}, { rollup: true }, { limit: 5 }] as MetricQuery[])
        assert.deepStrictEqual(await q.queryMetrics(mq), await lite.queryMetrics(mq), JSON.stringify(mq));
      assert.deepStrictEqual(await q.listBtRegistrations({}), await lite.listBtRegistrations({}));
      assert.deepEqual(
        (await q.listBtRegistrations({ agent: 'a' })).map((r) => r.name),
        ['A', 'B', 'a', 'b'],
      );
    } finally {
      lite.close();
    }
  });

  it('prunes rows older than a time in batches of at most n, table by table, and leaves the newer ones', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const text = new PgTextStore(pool);
    const q = new PgQueries(pool);
    const OLD = T0 - 86_400_000;
    // Old rows: 12 points (12 interval rows, 2 rollups), 12 packs, 5 traces, 2 events, 2 snapshots, 1 stack.
    for (let i = 0; i < 12; i++) await pg.storeMetrics(A, wire([pack(`old${i}`, OLD + i * 10_000, [point(REQ, [1])])]), OLD + 1000);
    const old = (ts: number): TextItem[] => [
      ...Array.from(
        { length: 5 },
        (_, i): TextItem => ({
          kind: 'trace',
          origin: { app: 'a', instanceId: 'i', pid: 1 },
          trace: { txid: `o${i}`, traceId: 'T', spanId: 's', name: 'n', startTime: ts + i, durationMs: 1, steps: [] },
        }),
      ),
      { kind: 'event', origin: { app: 'a', instanceId: 'i', pid: 1 }, event: { ts, type: 't', message: 'm' } },
      { kind: 'event', origin: { app: 'a', instanceId: 'i', pid: 1 }, event: { ts: ts + 1, type: 't', message: 'm' } },
      { kind: 'snapshot', origin: { app: 'a', instanceId: 'i', pid: 1 }, snapshot: { ts, kind: 'k', data: 1 } },
      { kind: 'snapshot', origin: { app: 'a', instanceId: 'i', pid: 1 }, snapshot: { ts: ts + 1, kind: 'k', data: 2 } },
      { kind: 'activeStack', origin: { app: 'a', instanceId: 'i', pid: 1 }, stack: { txid: 'x', name: 'n', ts, elapsedMs: 1, frames: [] } },
      { kind: 'btRegistration', origin: { app: 'a', instanceId: 'i', pid: 1 }, name: `bt${ts}`, ts },
    ];
    await text.storeText(A, old(OLD));
    // New rows: kept.
    await pg.storeMetrics(A, wire([pack('new', T0, [point(REQ, [1]), point(LAT, [1])])]), NOW);
    await text.storeText(A, old(T0));
    const before = await q.counts();
    const oldRows = 12 + 2 + 12 + 5 + 2 + 2 + 1;

    const cutoff = T0 - 1000;
    const deleted: number[] = [];
    for (;;) {
      const n = await new PgPruner(pool).prune(cutoff, 7);
      assert.ok(n <= 7, `a batch of ${n}`);
      deleted.push(n);
      if (n === 0) break;
    }
    assert.equal(
      deleted.reduce((a, b) => a + b, 0),
      oldRows,
    );
    assert.ok(deleted.length >= Math.ceil(oldRows / 7), 'several batches');
    const afterCounts = await q.counts();
    assert.deepEqual(afterCounts, {
      ...before,
      metric_packs: before.metric_packs - 12,
      metric_points: before.metric_points - 12,
      traces: 5,
      events: 2,
      snapshots: 2,
      active_stacks: 1,
      bt_registrations: 2,
    });
    assert.equal((await q.queryMetrics({ rollup: true })).length, 2, 'the new minute rollups only');
    assert.ok((await q.listTraces({})).every((t) => t.startTime >= T0));
  });

  it('prunes without waiting on a row a writer holds: the held row is skipped and goes in a later batch', async () => {
    const pool = await freshPool();
    const pg = new PgMetricStore(pool, GRACE);
    const OLD = T0 - 86_400_000;
    await pg.storeMetrics(A, wire([pack('o1', OLD, [point(REQ, [1])]), pack('o2', OLD + 10_000, [point(REQ, [1])])]), OLD + 1000);
    const holder = await pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM metric_points WHERE interval_start = $1 FOR UPDATE', [OLD]);
      const pruning = new PgPruner(pool).prune(T0, 1000);
      let timer: NodeJS.Timeout | undefined;
      const waited = await Promise.race([pruning.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), 5000)))]);
      clearTimeout(timer);
      await holder.query('COMMIT');
      assert.equal(waited, false, 'the prune waited for the writer');
      // Everything old but the held row: a point, both packs (2), the rollup (one minute).
      assert.equal(await pruning, 1 + 2 + 1);
    } finally {
      holder.release();
    }
    assert.equal(await new PgPruner(pool).prune(T0, 1000), 1);
  });
});

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MalformedMessageError, MetricKind, type MetricKindCode, type MetricPoint, type Series, Sketch, encodeSeries } from '@apm-sidecar/proto';
import { type UpMetricPack, decodeMetricBatch, encodeMetricBatch } from '@apm-sidecar/proto/upstream';
import { SqliteStore } from '@apm-sidecar/collector';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-metric-batch-');

/** A whole minute, epoch ms. */
const M = 1_700_000_040_000;
const ag = { projectId: 'p', agentId: 'a' };

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
    min = Math.min(min, v);
    max = Math.max(max, v);
    sk?.add(v);
  }
  return { series: s, count: values.length, sum, min, max, last: s.kind === MetricKind.Gauge ? (values.at(-1) as number) : Number.NaN, sketch: sk };
}

/** Through the real upstream codec, as the agent server hands packs over. */
function wire(packs: UpMetricPack[]): UpMetricPack[] {
  return decodeMetricBatch(encodeMetricBatch(packs));
}

/** Every column of both metric tables, in a fixed order. */
function tables(dir: string): unknown {
  const db = new Database(join(dir, 'collector.db'), { readonly: true });
  try {
    return ['metric_points', 'metric_rollups'].map((t) => db.prepare(`SELECT * FROM ${t} ORDER BY agent_id, project_id, interval_start, series_key`).all());
  } finally {
    db.close();
  }
}

describe('SqliteStore: the points of one batch that share a row are merged before they are written', () => {
  const lat = series(MetricKind.Histogram, 'http.server.duration', { route: '/pay' });
  const orders = series(MetricKind.Counter, 'orders.created');
  const pool = series(MetricKind.Gauge, 'pool.size');
  const empty = series(MetricKind.Histogram, 'idle.duration');
  /** Two packs for one interval, one for the next interval of the same minute, one for the next minute, a resend, an empty histogram. */
  const packs = (): UpMetricPack[] =>
    wire([
      { packId: 'p1', intervalStart: M, intervalMs: 10_000, points: [point(lat, [5, 50, 500]), point(orders, [1, 1]), point(pool, [4, 5])] },
      { packId: 'p2', intervalStart: M, intervalMs: 10_000, points: [point(lat, [-1, 0, 7]), point(orders, [1]), point(pool, [7]), point(empty, [])] },
      { packId: 'p3', intervalStart: M + 10_000, intervalMs: 10_000, points: [point(lat, [9000]), point(orders, [1, 1, 1]), point(pool, [9])] },
      { packId: 'p4', intervalStart: M + 60_000, intervalMs: 10_000, points: [point(lat, [3]), point(empty, [])] },
      { packId: 'p1', intervalStart: M, intervalMs: 10_000, points: [point(lat, [1e6]), point(orders, [100])] },
    ]);

  it('one batch stores the same rows, to the byte, as its packs sent one at a time', () => {
    const now = M + 30_000;
    const batched = tempDir();
    const single = tempDir();
    const a = SqliteStore.open(batched);
    const b = SqliteStore.open(single);
    try {
      assert.deepEqual(a.storeMetrics(ag, packs(), now), { stored: 12, duplicatePacks: 1, late: 0 });
      const one = packs().map((p) => b.storeMetrics(ag, [p], now));
      assert.deepEqual(
        one.reduce((s, r) => ({ stored: s.stored + r.stored, duplicatePacks: s.duplicatePacks + r.duplicatePacks, late: s.late + r.late })),
        { stored: 12, duplicatePacks: 1, late: 0 },
      );
      assert.deepEqual(a.queryMetrics({}), b.queryMetrics({}));
      assert.deepEqual(a.queryMetrics({ rollup: true }), b.queryMetrics({ rollup: true }));
    } finally {
      a.close();
      b.close();
    }
    assert.deepEqual(tables(batched), tables(single));
    const [points, rollups] = tables(batched) as Record<string, unknown>[][];
    // p1 + p2 in one interval row, p3 in the next; all three in the first minute's row.
    const gauge = (rows: Record<string, unknown>[] | undefined, start: number) => rows?.find((r) => r.name === 'pool.size' && r.interval_start === start)?.last;
    assert.equal(gauge(points, M), 7, 'the gauge value that came last in the batch');
    assert.equal(gauge(rollups, M), 9);
    const h = rollups?.find((r) => r.name === 'http.server.duration' && r.interval_start === M);
    assert.deepEqual([h?.count, h?.sum, h?.min, h?.max], [7, 5 + 50 + 500 - 1 + 0 + 7 + 9000, -1, 9000]);
  });

  it('a merge into a row whose stored sketch is damaged fails the whole batch, which is not remembered, and goes through once the row is repaired', () => {
    const dir = tempDir();
    const store = SqliteStore.open(dir);
    const raw = new Database(join(dir, 'collector.db'));
    try {
      const first = wire([{ packId: 'x1', intervalStart: M, intervalMs: 10_000, points: [point(lat, [1, 2, 3])] }]);
      const second = wire([
        { packId: 'x2', intervalStart: M + 20_000, intervalMs: 10_000, points: [point(orders, [1])] },
        { packId: 'x3', intervalStart: M + 10_000, intervalMs: 10_000, points: [point(lat, [4])] },
      ]);
      store.storeMetrics(ag, first, M + 1000);
      const good = (raw.prepare('SELECT sketch FROM metric_rollups').get() as { sketch: Buffer }).sketch;
      raw.prepare('UPDATE metric_rollups SET sketch = ?').run(Buffer.from([0, 200, 1]));
      assert.throws(() => store.storeMetrics(ag, second, M + 2000), MalformedMessageError);
      assert.equal(store.queryMetrics({ name: 'orders.created' }).length, 0, 'nothing of the failed batch is stored');
      raw.prepare('UPDATE metric_rollups SET sketch = ?').run(good);
      assert.deepEqual(store.storeMetrics(ag, second, M + 3000), { stored: 2, duplicatePacks: 0, late: 0 });
      assert.equal(store.queryMetrics({ name: 'http.server.duration', rollup: true })[0]?.count, 4);
    } finally {
      raw.close();
      store.close();
    }
  });
});

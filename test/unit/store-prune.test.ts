import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MetricKind, type MetricPoint, type Series, encodeSeries } from '@apm-sidecar/proto';
import type { TextItem, UpMetricPack } from '@apm-sidecar/proto/upstream';
import { SqliteStore } from '@apm-sidecar/collector';
import { PRUNED_TABLES, SqlitePruner } from '@apm-sidecar/collector/dist/store/prune';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-prune-');
const DAY = 86_400_000;
const NOW = 1_800_000_000_000;
const OLD = NOW - 20 * DAY;
const BEFORE = NOW - 15 * DAY;
const agent = { projectId: 'p', agentId: 'a' };
const origin = { app: 'shop', instanceId: 'i1', pid: 1 };

function counter(name: string, i: number): MetricPoint {
  const series: Series = {
    key: encodeSeries(MetricKind.Counter, name, { i: String(i) }).toString('latin1'),
    kind: MetricKind.Counter,
    name,
    tags: { i: String(i) },
  };
  return { series, count: 1, sum: 1, min: 1, max: 1, last: Number.NaN, sketch: null };
}

/** `n` packs of `points` points each, from `at`, stored as received at `at` (so none is late). */
async function storeMetrics(store: SqliteStore, tag: string, at: number, n: number, points: number): Promise<void> {
  for (let p = 0; p < n; p++) {
    const start = at + p * 60_000;
    const pack: UpMetricPack = {
      packId: `${tag}-${p}`,
      intervalStart: start,
      intervalMs: 10_000,
      points: Array.from({ length: points }, (_, i) => counter('req', i)),
    };
    await store.storeMetrics(agent, [pack], start);
  }
}

function textItems(at: number, n: number): TextItem[] {
  const items: TextItem[] = [];
  for (let i = 0; i < n; i++) {
    const ts = at + i;
    items.push(
      {
        kind: 'trace',
        origin,
        trace: { txid: `t${i}`, traceId: '0'.repeat(32), spanId: '0'.repeat(16), name: 'GET /', startTime: ts, durationMs: 1, steps: [] },
      },
      { kind: 'event', origin, event: { ts, type: 'log', message: 'm' } },
      { kind: 'snapshot', origin, snapshot: { ts, kind: 'heap', data: {} } },
      { kind: 'activeStack', origin, stack: { txid: `s${i}`, name: 'GET /', ts, elapsedMs: 5, frames: [] } },
    );
  }
  return items;
}

function counts(db: Database.Database): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of [...PRUNED_TABLES, 'bt_registrations']) out[t] = (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
  return out;
}

/** A store with old rows (20 days back) and new ones (now) in every table the pruner covers. */
async function filledStore(): Promise<{ store: SqliteStore; db: Database.Database }> {
  const store = await SqliteStore.open(tempDir());
  await storeMetrics(store, 'old', OLD, 6, 5);
  await storeMetrics(store, 'new', NOW, 4, 5);
  await store.storeText(agent, [...textItems(OLD, 3), { kind: 'btRegistration', origin, name: 'GET /', ts: OLD }]);
  await store.storeText(agent, textItems(NOW, 2));
  return { store, db: new Database(store.path) };
}

describe('SqlitePruner: deleting stored rows by age', () => {
  it('deletes only the rows older than `before`, from every data table, and keeps registrations', async () => {
    const { store, db } = await filledStore();
    try {
      const full = counts(db);
      // old: 6 packs x 5 points (each pack its own minute), 3 of each text kind; new: 4 x 5 and 2.
      assert.deepEqual(full, {
        metric_points: 50,
        metric_rollups: 50,
        metric_packs: 10,
        traces: 5,
        events: 5,
        snapshots: 5,
        active_stacks: 5,
        bt_registrations: 1,
      });
      const pruner = new SqlitePruner(db);
      const n = pruner.prune(BEFORE, 1_000_000);
      assert.equal(n, 30 + 30 + 6 + 4 * 3);
      assert.deepEqual(counts(db), {
        metric_points: 20,
        metric_rollups: 20,
        metric_packs: 4,
        traces: 2,
        events: 2,
        snapshots: 2,
        active_stacks: 2,
        bt_registrations: 1,
      });
      assert.equal(pruner.prune(BEFORE, 1_000_000), 0);
      // What is left is what the API shows for now.
      const left = await store.queryMetrics({ from: 0, to: NOW + DAY });
      assert.equal(left.length, 20);
      assert.ok(left.every((r) => r.ts >= NOW));
    } finally {
      db.close();
      await store.close();
    }
  });

  it('deletes at most maxRows per call, over all tables together, until nothing older is left', async () => {
    const { store, db } = await filledStore();
    try {
      const pruner = new SqlitePruner(db);
      const batches: number[] = [];
      for (;;) {
        const n = pruner.prune(BEFORE, 7);
        assert.ok(n <= 7, `batch of ${n}`);
        batches.push(n);
        if (n < 7) break;
      }
      assert.equal(
        batches.reduce((a, b) => a + b, 0),
        78,
      );
      assert.deepEqual(batches.slice(0, -1), Array(11).fill(7));
      assert.equal(batches.at(-1), 1);
      assert.equal(counts(db).metric_points, 20);
      assert.equal(counts(db).traces, 2);
      assert.equal(pruner.prune(BEFORE, 0), 0);
    } finally {
      db.close();
      await store.close();
    }
  });

  it('a pack still inside the retention is remembered after pruning: its resend is skipped', async () => {
    const { store, db } = await filledStore();
    try {
      new SqlitePruner(db).prune(BEFORE, 1_000_000);
      const resend: UpMetricPack = { packId: 'new-0', intervalStart: NOW, intervalMs: 10_000, points: [counter('req', 0)] };
      const r = await store.storeMetrics(agent, [resend], NOW + 1000);
      assert.equal(r.duplicatePacks, 1);
      assert.equal(r.stored, 0);
    } finally {
      db.close();
      await store.close();
    }
  });

  it('finds the old rows of every table through an index on its time column, not a table scan', async () => {
    const { store, db } = await filledStore();
    try {
      const times: Record<string, string> = {
        metric_points: 'interval_start',
        metric_rollups: 'interval_start',
        metric_packs: 'received_at',
        traces: 'start_time',
        events: 'ts',
        snapshots: 'ts',
        active_stacks: 'ts',
      };
      assert.deepEqual(Object.keys(times).sort(), [...PRUNED_TABLES].sort());
      for (const [t, col] of Object.entries(times)) {
        const plan = db
          .prepare(`EXPLAIN QUERY PLAN SELECT 1 FROM ${t} WHERE ${col} < ? ORDER BY ${col} LIMIT ?`)
          .all(BEFORE, 10)
          .map((r) => (r as { detail: string }).detail)
          .join('; ');
        assert.match(plan, new RegExp(`USING (COVERING )?INDEX \\w+ \\(${col}<\\?\\)`), `${t}: ${plan}`);
      }
    } finally {
      db.close();
      await store.close();
    }
  });
});

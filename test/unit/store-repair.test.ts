// A damaged page in a database file, repaired from the rows that are still intact: the sidecar
// salvages its quarantined retention's table rows into the fresh file; the collector rebuilds
// collector.db from its tables when a write fails with SQLITE_CORRUPT. In process, on real files.
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { MetricKind, type MetricPoint, type Series, encodeSeries } from '@apm-sidecar/proto';
import { type RebuildResult, SqliteStore } from '@apm-sidecar/collector';
import type { Logger } from '@apm-sidecar/sidecar/dist/logger';
import { RetentionStore } from '@apm-sidecar/sidecar/dist/retention/store';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-repair-');
const closers: (() => void)[] = [];
after(() => {
  for (const c of closers) c();
});

/** XOR 64 bytes of the root page of every index of the database at `path` (after a checkpoint). */
function damageIndexes(path: string, tables = '%'): number {
  const db = new Database(path);
  db.pragma('wal_checkpoint(TRUNCATE)');
  const pageSize = db.pragma('page_size', { simple: true }) as number;
  const roots = (db.prepare("SELECT rootpage FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE ?").all(tables) as { rootpage: number }[]).map(
    (r) => r.rootpage,
  );
  db.close();
  const fd = openSync(path, 'r+');
  try {
    for (const root of roots) {
      const b = Buffer.alloc(64);
      const at = (root - 1) * pageSize + 12;
      readSync(fd, b, 0, 64, at);
      for (let i = 0; i < 64; i++) b[i] = (b[i] as number) ^ 0xff;
      writeSync(fd, b, 0, 64, at);
    }
  } finally {
    closeSync(fd);
  }
  return roots.length;
}

function commit(add: (done: (err: Error | null) => void) => void): Promise<void> {
  return new Promise((resolve, reject) => add((err) => (err === null ? resolve() : reject(err))));
}

describe('a retention file with damaged index pages', () => {
  test('is quarantined, and every row of its tables is salvaged into the fresh file', async () => {
    const dir = tempDir();
    const warnings: string[] = [];
    const noop = (): void => {};
    const log = { error: noop, warn: (_: unknown, msg: string) => warnings.push(msg), info: noop, debug: noop } as unknown as Logger;
    const first = RetentionStore.open(dir, 'NORMAL', log);
    for (let seq = 1; seq <= 40; seq++) {
      await commit((done) => first.addFrame({ instanceId: 'i1', seq, intervalStart: 1000 * (seq % 4), payload: Buffer.from([seq]) }, done));
    }
    const folded = Array.from({ length: 10 }, (_, i) => ({ instanceId: 'i1', seq: 4 * (i + 1) }));
    first.sealInterval([{ packId: 'p0', intervalStart: 0, intervalMs: 1000, points: 10, body: Buffer.from('pack-0') }], folded);
    await commit((done) => first.addBt({ name: 'GET /x', ts: 1, app: 'a', instanceId: 'i1', pid: 1 }, 41, done));
    first.close();
    assert.ok(damageIndexes(join(dir, 'retention.db')) >= 5);

    const second = RetentionStore.open(dir, 'NORMAL', log);
    closers.push(() => second.close());
    assert.equal(readdirSync(dir).filter((f) => /^retention\.db\.corrupt-[^-]+.*Z$/.test(f)).length, 1, 'quarantined');
    assert.equal(second.loadFrames().length, 30, 'the frames of intervals 1000, 2000, 3000');
    assert.deepEqual(
      second.loadPacks().map((p) => [p.packId, p.body.toString()]),
      [['p0', 'pack-0']],
    );
    assert.deepEqual(second.loadSeqs(), [{ instanceId: 'i1', seq: 41 }]);
    assert.deepEqual(
      second.loadBt().map((b) => b.name),
      ['GET /x'],
    );
    assert.ok(
      warnings.some((w) => /^salvaged 33 rows from the quarantined retention$/.test(w)),
      warnings.join('\n'),
    );
  });
});

describe('collector.db with damaged index pages', () => {
  const s: Series = { key: encodeSeries(MetricKind.Counter, 'repair.n', {}).toString('latin1'), kind: MetricKind.Counter, name: 'repair.n', tags: {} };
  const pt = (v: number): MetricPoint => ({ series: s, count: 1, sum: v, min: v, max: v, last: Number.NaN, sketch: null });
  const agent = { projectId: 'p', agentId: 'a1' };

  test('a write that fails with SQLITE_CORRUPT is refused, then the file is rebuilt from its tables and the next write is stored', async () => {
    const dir = tempDir();
    const now = Date.now();
    const start = now - (now % 10_000);
    const first = SqliteStore.open(dir);
    // Enough packs for the indexes to span pages: a damaged interior page is met by every insert.
    for (let i = 0; i < 500; i++) first.storeMetrics(agent, [{ packId: `k${i}`, intervalStart: start, intervalMs: 10_000, points: [pt(i + 1)] }], now);
    first.close();
    assert.ok(damageIndexes(join(dir, 'collector.db'), 'metric%') >= 3);

    const store = SqliteStore.open(dir);
    closers.push(() => store.close());
    const repaired = new Promise<RebuildResult | Error>((resolve) => {
      store.onRepair = resolve;
    });
    assert.throws(
      () => store.storeMetrics(agent, [{ packId: 'k-new', intervalStart: start, intervalMs: 10_000, points: [pt(100)] }], now),
      (err: Error & { code?: string }) => err.code?.startsWith('SQLITE_CORRUPT') === true,
    );
    const r = await repaired;
    assert.ok(!(r instanceof Error), String(r));
    assert.equal(r.error, null, 'every table read to its end');
    assert.equal(r.rows.metric_packs, 500);
    assert.deepEqual(store.storeMetrics(agent, [{ packId: 'k-new', intervalStart: start, intervalMs: 10_000, points: [pt(100)] }], now), {
      stored: 1,
      duplicatePacks: 0,
      late: 0,
    });
    const sum = store.queryMetrics({ agent: 'a1', name: 'repair.n' }).reduce((a, row) => a + row.sum, 0);
    assert.equal(sum, (500 * 501) / 2 + 100, 'what was stored before, once, and the new point');
    assert.equal(store.pragma('quick_check'), 'ok');
    assert.equal(readdirSync(dir).filter((f) => /^collector\.db\.corrupt-[^-]+.*Z$/.test(f)).length, 1, 'the damaged file kept beside it');
  });
});

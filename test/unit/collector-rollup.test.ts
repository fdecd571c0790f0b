import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MetricKind, encodeSeries } from '@apm-sidecar/proto';
import type { UpMetricPack } from '@apm-sidecar/proto/upstream';
import { ROLLUP_MS, SqliteStore, isMinuteFinal, minuteOf } from '@apm-sidecar/collector';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-rollup-');

/** A whole minute, epoch ms. */
const M = 1_700_000_040_000;
const GRACE = 120_000;

describe('rollup finality (a minute is final rollup_grace_ms after it ends)', () => {
  it('minuteOf gives the start of the minute holding a time', () => {
    assert.equal(M % ROLLUP_MS, 0);
    assert.equal(minuteOf(M), M);
    assert.equal(minuteOf(M + 59_999), M);
    assert.equal(minuteOf(M + 60_000), M + 60_000);
    assert.equal(minuteOf(M - 1), M - 60_000);
  });

  it('is not final until exactly grace after the minute ends, then final for every start inside it', () => {
    const finalAt = M + ROLLUP_MS + GRACE;
    for (const start of [M, M + 10_000, M + 59_999]) {
      assert.equal(isMinuteFinal(start, finalAt - 1, GRACE), false, `start +${start - M} ms, 1 ms before`);
      assert.equal(isMinuteFinal(start, finalAt, GRACE), true, `start +${start - M} ms, at the moment`);
      assert.equal(isMinuteFinal(start, finalAt + 3_600_000, GRACE), true, `start +${start - M} ms, an hour later`);
    }
    // The next minute is not final yet.
    assert.equal(isMinuteFinal(M + ROLLUP_MS, finalAt, GRACE), false);
  });

  it('with no grace a minute is final as it ends', () => {
    assert.equal(isMinuteFinal(M + 30_000, M + ROLLUP_MS - 1, 0), false);
    assert.equal(isMinuteFinal(M + 30_000, M + ROLLUP_MS, 0), true);
  });

  it('the store drops the points of a pack for a final minute, counts them as late, and remembers the pack (a resend is a duplicate)', () => {
    const dir = tempDir();
    const store = SqliteStore.open(dir, { rollupGraceMs: 1000 });
    try {
      const kind = MetricKind.Counter;
      const s = { key: encodeSeries(kind, 'orders', {}).toString('latin1'), kind, name: 'orders', tags: {} };
      const pt = { series: s, count: 2, sum: 2, min: 1, max: 1, last: Number.NaN, sketch: null };
      const pack = (packId: string): UpMetricPack => ({ packId, intervalStart: M + 10_000, intervalMs: 10_000, points: [pt, pt] });
      const ag = { projectId: 'p', agentId: 'a' };
      // 1 ms before final: stored in the interval and in its minute.
      assert.deepEqual(store.storeMetrics(ag, [pack('a:1')], M + ROLLUP_MS + 999), { stored: 2, duplicatePacks: 0, late: 0 });
      // Final: dropped and counted; nothing of it reaches the points or the rollup.
      assert.deepEqual(store.storeMetrics(ag, [pack('a:2')], M + ROLLUP_MS + 1000), { stored: 0, duplicatePacks: 0, late: 2 });
      assert.deepEqual(store.storeMetrics(ag, [pack('a:2')], M + ROLLUP_MS + 2000), { stored: 0, duplicatePacks: 1, late: 0 });
      assert.deepEqual(
        store.queryMetrics({ name: 'orders' }).map((r) => r.sum),
        [4],
      );
      assert.deepEqual(
        store.queryMetrics({ name: 'orders', rollup: true }).map((r) => [r.ts, r.intervalMs, r.sum]),
        [[M, ROLLUP_MS, 4]],
      );
    } finally {
      store.close();
    }
  });
});

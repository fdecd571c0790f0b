import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { MetricKind, encodeSeries } from '@apm-sidecar/proto';
import { SqliteStore } from '@apm-sidecar/collector';
import { SqlitePruner } from '@apm-sidecar/collector/dist/store/prune';
import { type PruneRun, errorText, startPruner } from '@apm-sidecar/collector/dist/store-pruner';
import { FakeClock, fileLogger } from '../helpers/fake-clock';
import { tempDirsRemovedAfter } from '../helpers/temp-dirs';

const tempDir = tempDirsRemovedAfter('apm-pruner-');
const DAY = 86_400_000;
const INTERVAL = 60_000;

/** Let promises and setImmediate callbacks run until `done()` or the turns are used up. */
async function until(done: () => boolean, turns = 200): Promise<void> {
  for (let i = 0; i < turns && !done(); i++) await new Promise((r) => setImmediate(r));
}

interface Call {
  before: number;
  maxRows: number;
}

/** A store whose prune answers from a script: a number of rows, or an error; rows left run out to 0. */
function scriptedStore(script: (number | Error)[]) {
  const calls: Call[] = [];
  return {
    calls,
    async prune(before: number, maxRows: number): Promise<number> {
      calls.push({ before, maxRows });
      const next = script.shift() ?? 0;
      if (next instanceof Error) throw next;
      return next;
    },
  };
}

describe('startPruner: pruning on a schedule, in batches', () => {
  it('every interval, deletes in batches older than the retention until a batch is short', async () => {
    const clock = new FakeClock();
    const store = scriptedStore([100, 100, 100, 42, 100, 3]);
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 100, clock, log, onPruned: (r) => runs.push(r) });
    try {
      clock.advance(INTERVAL - 1);
      await until(() => false, 5);
      assert.equal(store.calls.length, 0, 'nothing before the first interval');
      const t1 = clock.now() + 1;
      clock.advance(1);
      await until(() => runs.length === 1);
      assert.deepEqual(
        store.calls.map((c) => c.maxRows),
        [100, 100, 100, 100],
      );
      assert.ok(store.calls.every((c) => c.before === t1 - 15 * DAY));
      assert.equal(runs[0]?.rows, 342);
      assert.equal(runs[0]?.batches, 4);
      // The next run one interval after this one ended.
      clock.advance(INTERVAL);
      await until(() => runs.length === 2);
      assert.equal(runs[1]?.rows, 103);
      assert.equal(store.calls.length, 6);
      assert.deepEqual({ ...p.counts }, { runs: 2, rows: 445, errors: 0 });
    } finally {
      await p.stop();
      cleanup();
    }
  });

  it('yields to the event loop between batches, so other work runs while a long backlog is pruned', async () => {
    const clock = new FakeClock();
    const fired: boolean[] = [];
    let calls = 0;
    const store = {
      async prune(): Promise<number> {
        const k = calls++;
        // Work that arrived during batch k (an agent's write) must run before batch k + 1.
        if (k > 0) assert.equal(fired[k - 1], true, `batch ${k} started before the event loop turned`);
        fired[k] = false;
        setImmediate(() => {
          fired[k] = true;
        });
        return k < 5 ? 10 : 0;
      },
    };
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 1, intervalMs: INTERVAL, batchRows: 10, clock, log, onPruned: (r) => runs.push(r) });
    try {
      clock.advance(INTERVAL);
      await until(() => runs.length === 1);
      assert.equal(runs[0]?.error, undefined);
      assert.equal(runs[0]?.batches, 6);
    } finally {
      await p.stop();
      cleanup();
    }
  });

  it('rests as long as a batch took before the next, so a backlog takes at most half of the store', async () => {
    const clock = new FakeClock();
    const starts: number[] = [];
    const store = {
      async prune(): Promise<number> {
        starts.push(clock.now());
        clock.advance(40); // this batch held the store for 40 ms
        return starts.length < 4 ? 10 : 2;
      },
    };
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    // An idle event loop: one rest per batch.
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log, onPruned: (r) => runs.push(r), busy: () => 0 });
    try {
      clock.advance(INTERVAL);
      await until(() => starts.length === 1);
      await until(() => false, 5);
      assert.equal(starts.length, 1, 'no second batch before the rest is over');
      for (let i = 2; i <= 4; i++) {
        clock.advance(39);
        await until(() => false, 5);
        assert.equal(starts.length, i - 1);
        clock.advance(1);
        await until(() => starts.length === i);
      }
      await until(() => runs.length === 1);
      const t0 = starts[0] as number;
      assert.deepEqual(
        starts.map((t) => t - t0),
        [0, 80, 160, 240],
      );
      assert.equal(runs[0]?.rows, 32);
    } finally {
      await p.stop();
      cleanup();
    }
  });

  it('rests longer while the event loop is busy with other work, up to 10 times the batch', async () => {
    const clock = new FakeClock();
    const t0 = clock.now() + INTERVAL;
    const starts: number[] = [];
    const store = {
      async prune(): Promise<number> {
        starts.push(clock.now());
        clock.advance(40);
        return starts.length < 3 ? 10 : 2;
      },
    };
    // Busy (ingest) until t0 + 160, then idle for a while, then busy for good.
    const busy = () => (clock.now() < t0 + 160 ? 0.9 : clock.now() < t0 + 240 ? 0.1 : 1);
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log, onPruned: (r) => runs.push(r), busy });
    try {
      clock.advance(INTERVAL);
      // A millisecond at a time, letting the pruner's continuations run in between.
      for (let i = 0; i < 2000 && runs.length === 0; i++) {
        await until(() => false, 2);
        clock.advance(1);
      }
      assert.equal(runs.length, 1);
      // Batch 1 at 0 (40 ms); rests 40 + 40 + 40 while busy; batch 2 at 160 (40 ms); rests 40 and,
      // busy for good, up to 400 in all; batch 3 at 600.
      assert.deepEqual(
        starts.map((t) => t - t0),
        [0, 160, 600],
      );
    } finally {
      await p.stop();
      cleanup();
    }
  });

  it('stop() during a rest ends it at once', async () => {
    const clock = new FakeClock();
    let calls = 0;
    const store = {
      async prune(): Promise<number> {
        calls++;
        clock.advance(1000);
        return 10;
      },
    };
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log });
    try {
      clock.advance(INTERVAL);
      await until(() => calls === 1);
      await p.stop(); // the rest's timer would need the clock to move: stop must not wait for it
      assert.equal(calls, 1);
      assert.equal(clock.pending, 0);
    } finally {
      cleanup();
    }
  });

  it('never runs twice at once, however slow a batch is', async () => {
    const clock = new FakeClock();
    let release: (n: number) => void = () => {};
    let inFlight = 0;
    let maxInFlight = 0;
    let calls = 0;
    const store = {
      prune(): Promise<number> {
        calls++;
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        return new Promise<number>((resolve) => {
          release = (n) => {
            inFlight--;
            resolve(n);
          };
        });
      },
    };
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log, onPruned: (r) => runs.push(r) });
    try {
      clock.advance(INTERVAL);
      await until(() => calls === 1);
      for (let i = 0; i < 10; i++) {
        clock.advance(INTERVAL);
        await until(() => false, 3);
      }
      assert.equal(calls, 1, 'no second run while the first one waits');
      assert.equal(clock.pending, 0, 'no timer while a run is under way');
      release(3);
      await until(() => runs.length === 1);
      assert.equal(clock.pending, 1);
      assert.equal(maxInFlight, 1);
    } finally {
      const stopping = p.stop();
      release(0);
      await stopping;
      cleanup();
    }
  });

  it('counts and logs a failing store once, without its password, keeps going and logs the recovery', async () => {
    const clock = new FakeClock();
    const boom = Object.assign(new Error('connect to postgres://apm:s3cret-pw@db:5432/apm failed'), { code: 'ECONNREFUSED' });
    const store = scriptedStore([boom, boom, 5]);
    const runs: PruneRun[] = [];
    const { log, lines, cleanup } = fileLogger();
    const counts = { runs: 0, rows: 0, errors: 0 };
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log, counts, onPruned: (r) => runs.push(r) });
    try {
      for (let i = 1; i <= 3; i++) {
        clock.advance(INTERVAL);
        await until(() => runs.length === i);
      }
      assert.match(runs[0]?.error ?? '', /ECONNREFUSED/);
      assert.equal(runs[2]?.rows, 5);
      assert.deepEqual({ ...p.counts }, { runs: 3, rows: 5, errors: 2 });
      assert.deepEqual(counts, { runs: 3, rows: 5, errors: 2 }, 'counted into the object given (the collector passes its stats.pruned)');
      const text = lines().map((l) => JSON.stringify(l));
      assert.ok(!text.join('\n').includes('s3cret-pw'), 'the password is not logged');
      assert.equal(text.filter((l) => l.includes('pruning old data failed')).length, 1, 'logged once while failing');
      assert.equal(text.filter((l) => l.includes('pruning old data works again')).length, 1);
    } finally {
      await p.stop();
      cleanup();
    }
  });

  it('errorText keeps the code and message and hides a URL password', () => {
    assert.equal(
      errorText(Object.assign(new Error('no route to postgres://u:p%40ss@h/db'), { code: 'EHOSTUNREACH' })),
      'EHOSTUNREACH: no route to postgres://u:[redacted]@h/db',
    );
    assert.equal(errorText('plain'), 'plain');
  });

  it('stop() ends the schedule after the batch under way; safe to call twice', async () => {
    const clock = new FakeClock();
    const store = scriptedStore(Array(1000).fill(10));
    const { log, cleanup } = fileLogger();
    const p = startPruner({ store, retentionDays: 15, intervalMs: INTERVAL, batchRows: 10, clock, log });
    try {
      clock.advance(INTERVAL);
      await until(() => store.calls.length >= 3);
      await p.stop();
      const n = store.calls.length;
      await until(() => false, 10);
      clock.advance(10 * INTERVAL);
      await until(() => false, 10);
      assert.equal(store.calls.length, n, 'no batch after stop');
      assert.ok(n < 1000);
      assert.equal(clock.pending, 0);
      await p.stop();
    } finally {
      cleanup();
    }
  });

  it('prunes a real SQLite store to the retention in batches (SqlitePruner behind the contract)', async () => {
    const clock = new FakeClock(1_800_000_000_000);
    const dir = tempDir();
    const store = await SqliteStore.open(dir);
    const db = new Database(store.path);
    const agent = { projectId: 'p', agentId: 'a' };
    const name = 'req';
    const series = { key: encodeSeries(MetricKind.Counter, name, {}).toString('latin1'), kind: MetricKind.Counter, name, tags: {} };
    // One pack a minute over the last 20 days' first 50 minutes, and 5 today.
    const starts = [
      ...Array.from({ length: 50 }, (_, i) => clock.now() - 20 * DAY + i * 60_000),
      ...Array.from({ length: 5 }, (_, i) => clock.now() - i * 60_000),
    ];
    for (const [i, start] of starts.entries()) {
      const pt = { series, count: 1, sum: 1, min: 1, max: 1, last: Number.NaN, sketch: null };
      await store.storeMetrics(agent, [{ packId: `k${i}`, intervalStart: start, intervalMs: 60_000, points: [pt] }], start);
    }
    const pruner = new SqlitePruner(db);
    const runs: PruneRun[] = [];
    const { log, cleanup } = fileLogger();
    const p = startPruner({
      store: { prune: async (before, max) => pruner.prune(before, max) },
      retentionDays: 15,
      intervalMs: INTERVAL,
      batchRows: 16,
      clock,
      log,
      onPruned: (r) => runs.push(r),
    });
    try {
      clock.advance(INTERVAL);
      await until(() => runs.length === 1);
      // 50 old points, rollups and packs: 150 rows in batches of 16.
      assert.equal(runs[0]?.rows, 150);
      assert.equal(runs[0]?.batches, 10);
      const count = (t: string) => (db.prepare(`SELECT count(*) AS n FROM ${t}`).get() as { n: number }).n;
      assert.deepEqual([count('metric_points'), count('metric_rollups'), count('metric_packs')], [5, 5, 5]);
    } finally {
      await p.stop();
      db.close();
      await store.close();
      cleanup();
    }
  });
});

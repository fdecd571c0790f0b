import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { Logger } from '@apm-sidecar/sidecar/dist/logger';
import { lowWater, spaceVerdict } from '@apm-sidecar/sidecar/dist/retention/space';
import { RetentionStore, type StorageCondition, isPassingStorageError } from '@apm-sidecar/sidecar/dist/retention/store';

const roots: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'apm-space-'));
  roots.push(d);
  return d;
}
after(() => {
  for (const d of roots) rmSync(d, { recursive: true, force: true });
});

const noop = () => {};
const log = { error: noop, warn: noop, info: noop, debug: noop } as unknown as Logger;

const usage = (usedBytes: number, freelistBytes = 0) => ({ usedBytes, fileBytes: usedBytes + freelistBytes, freelistBytes });

describe('retention space bounds (pure)', () => {
  const limits = { maxBytes: 1000, minFreeBytes: 500 };

  test('within both bounds: nothing to drop', () => {
    assert.deepEqual(spaceVerdict(usage(1000), 500, limits), { excessBytes: 0, reason: null });
  });

  test('rows over retention_max_bytes: the excess, reason max_bytes', () => {
    assert.deepEqual(spaceVerdict(usage(1300), 10_000, limits), { excessBytes: 300, reason: 'max_bytes' });
  });

  test('free space below retention_min_free_bytes: the deficit, counting the database’s own free pages as free', () => {
    assert.deepEqual(spaceVerdict(usage(100), 200, limits), { excessBytes: 300, reason: 'min_free' });
    assert.deepEqual(spaceVerdict(usage(100, 300), 200, limits), { excessBytes: 0, reason: null }, 'pages SQLite reuses are room');
  });

  test('the larger shortfall decides; an unknown filesystem leaves max_bytes alone', () => {
    assert.deepEqual(spaceVerdict(usage(1100), 0, limits), { excessBytes: 500, reason: 'min_free' });
    assert.deepEqual(spaceVerdict(usage(1100), null, limits), { excessBytes: 100, reason: 'max_bytes' });
  });

  test('the low-water mark is a tenth inside both bounds', () => {
    assert.deepEqual(lowWater({ maxBytes: 1000, minFreeBytes: 500 }), { maxBytes: 900, minFreeBytes: 550 });
  });
});

describe('RetentionStore on failing storage', () => {
  /** Make every insert into frames fail, from a second connection (a real SQLite error raised by SQLite itself). */
  function breakFrames(path: string, on: boolean): void {
    const db = new Database(path);
    if (on) db.exec("CREATE TRIGGER IF NOT EXISTS fail_frames BEFORE INSERT ON frames BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    else db.exec('DROP TRIGGER IF EXISTS fail_frames');
    db.close();
  }

  const pack = (packId: string, intervalStart: number, points: number, bytes = 100) => ({
    packId,
    intervalStart,
    intervalMs: 1000,
    points,
    body: Buffer.alloc(bytes, 7),
  });

  test('a failed commit fails every callback, keeps the maintenance writes for the next commit, and flips the condition once each way', () => {
    const dir = tempDir();
    const store = RetentionStore.open(dir, 'NORMAL', log);
    const flips: boolean[] = [];
    let errors = 0;
    store.onCondition = (c: StorageCondition) => flips.push(c.failing);
    store.onError = () => errors++;
    breakFrames(store.path, true);
    const results: (string | null)[] = [];
    store.sealInterval([pack('p1', 1000, 5)], []);
    store.addFrame({ instanceId: 'i', seq: 1, intervalStart: 2000, payload: Buffer.from('x') }, (err: Error | null) =>
      results.push(err === null ? null : err.message),
    );
    store.addFrame({ instanceId: 'i', seq: 2, intervalStart: 2000, payload: Buffer.from('y') }, (err: Error | null) =>
      results.push(err === null ? null : err.message),
    );
    store.commit();
    assert.deepEqual([...results], ['injected failure', 'injected failure']);
    assert.equal(store.retrying, 1, 'the seal waits for the next commit');
    assert.equal(store.loadPacks().length, 0, 'nothing of the failed transaction is written');
    store.addFrame({ instanceId: 'i', seq: 3, intervalStart: 2000, payload: Buffer.from('z') }, (err: Error | null) =>
      results.push(err === null ? null : err.message),
    );
    store.commit();
    assert.deepEqual(flips, [true], 'one flip to failing, however many failures');
    assert.equal(errors, 2);
    assert.equal(store.retrying, 1, 'the seal failed again with it and still waits');
    assert.equal(store.condition.failing, true);

    breakFrames(store.path, false);
    store.addFrame({ instanceId: 'i', seq: 4, intervalStart: 2000, payload: Buffer.from('w') }, (err: Error | null) =>
      results.push(err === null ? null : err.message),
    );
    store.commit();
    assert.equal(results.at(-1), null);
    assert.deepEqual(flips, [true, false], 'one flip back when a commit succeeds');
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['p1'],
      'the kept seal went in with it',
    );
    assert.deepEqual(
      store.loadFrames().map((f) => f.seq),
      [4],
      'only the committed frame exists',
    );
    store.close();
  });

  test('probe() ends a failing condition once the storage takes writes again, without any frame', () => {
    const dir = tempDir();
    const store = RetentionStore.open(dir, 'NORMAL', log);
    const flips: boolean[] = [];
    store.onCondition = (c) => flips.push(c.failing);
    breakFrames(store.path, true);
    store.addFrame({ instanceId: 'i', seq: 1, intervalStart: 0, payload: Buffer.from('x') }, noop);
    store.commit();
    breakFrames(store.path, false);
    store.probe();
    store.commit();
    assert.deepEqual(flips, [true, false]);
    store.close();
  });

  test('dropOldest frees at least the asked bytes from the oldest packs and returns their points; frames stay', () => {
    const dir = tempDir();
    const store = RetentionStore.open(dir, 'NORMAL', log);
    store.addFrame({ instanceId: 'i', seq: 1, intervalStart: 9000, payload: Buffer.alloc(50) }, noop);
    store.sealInterval([pack('c', 3000, 3), pack('a', 1000, 1), pack('b', 2000, 2)], []);
    const r = store.dropOldest(150);
    assert.deepEqual(r, { packIds: ['a', 'b'], points: 3, bytes: 200 });
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['c'],
    );
    assert.equal(store.loadFrames().length, 1);
    const u = store.usage();
    assert.ok(u !== null && u.usedBytes > 0 && u.fileBytes >= u.usedBytes);
    store.close();
  });

  test('dropOldest passes over the packs being sent: they may still be delivered, so they are neither deleted nor counted', () => {
    const dir = tempDir();
    const store = RetentionStore.open(dir, 'NORMAL', log);
    store.sealInterval([pack('c', 3000, 3), pack('a', 1000, 1), pack('b', 2000, 2)], []);
    const r = store.dropOldest(150, (id) => id === 'a');
    assert.deepEqual(r, { packIds: ['b', 'c'], points: 5, bytes: 200 });
    assert.deepEqual(
      store.loadPacks().map((p) => p.packId),
      ['a'],
    );
    store.close();
  });

  test('only passing failures (full, I/O, busy) are told apart from a file that is not a database', () => {
    assert.equal(isPassingStorageError({ code: 'SQLITE_FULL' }), true);
    assert.equal(isPassingStorageError({ code: 'SQLITE_IOERR_WRITE' }), true);
    assert.equal(isPassingStorageError({ code: 'ENOSPC' }), true);
    assert.equal(isPassingStorageError({ code: 'SQLITE_NOTADB' }), false);
    assert.equal(isPassingStorageError({ code: 'SQLITE_CORRUPT' }), false);
    assert.equal(isPassingStorageError(new Error('no code')), false);
  });
});
